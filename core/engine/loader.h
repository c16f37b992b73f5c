/*
 * loader.h - find, dlopen and check plugin shared objects.
 *
 * A plugin named NAME lives in <dir>/NAME.so for one dir of the search
 * path: config "plugin_path", then $SYNCBRIDGE_PLUGIN_PATH (colon-separated)
 * if set, else the compiled-in default. The loader checks, in this order and before it
 * reads anything else of the descriptor: the file exists, it is a loadable
 * shared object, it exports SB_PLUGIN_SYMBOL, the ABI major/minor and the
 * struct size match; then that the descriptor is well formed (name equal to
 * the file name, kind, mandatory ops, option table). Each failure is an
 * error naming the file. The same name found in two directories is an
 * error naming both files, so a stale copy never shadows silently.
 *
 * Plugins are code run in the daemon (as root during `check`), so they are
 * loaded only from where they should come:
 *  - a name is [a-z0-9_]+, checked before any path is built from it (a
 *    config cannot name "../../tmp/evil");
 *  - the file, symlinks resolved (realpath), must lie inside the search
 *    directory it was found in;
 *  - neither that directory nor the file may be writable by group or
 *    others, or owned by a user other than root and the daemon's own:
 *    such a plugin is refused with the reason, unless
 *    sb_registry_allow_insecure() was called (config
 *    "allow_insecure_plugins"), which loads it with a warning.
 * Checked before dlopen(), so a refused file's constructors never run.
 * (Checks and dlopen() are two steps: confinement holds as long as the
 * directories are not writable by others, which is what is checked.)
 *
 * Ownership: the registry owns every loaded plugin and dlclose()s them in
 * sb_registry_free(); descriptors stay valid until then.
 * Threading: control thread only.
 */
#ifndef SB_LOADER_H
#define SB_LOADER_H

#include <stddef.h>
#include <syncbridge/plugin.h>

typedef struct sb_registry sb_registry;

/* dirs are copied. */
sb_registry *sb_registry_new(char *const *dirs, size_t n_dirs);
void sb_registry_free(sb_registry *r);
/* Load plugins that fail the ownership/mode check, with a warning. */
void sb_registry_allow_insecure(sb_registry *r, int allow);

/* Load (once) and return the plugin NAME. `kind` 0 = any; else a plugin of
 * another kind is an error mentioning `used_as` (e.g. "sinks.out"). */
const sb_plugin *sb_registry_get(sb_registry *r, const char *name, sb_plugin_kind kind, const char *used_as,
                                 char *errstr, size_t errstr_size);

/* Load one file with every check above but confinement (for tests and
 * `plugins FILE`, where the operator names the file). */
const sb_plugin *sb_registry_load_file(sb_registry *r, const char *path, char *errstr, size_t errstr_size);

/* Load every *.so in the search path; errors are reported through cb
 * (path, message) and loading continues. Returns the count loaded. */
size_t sb_registry_load_all(sb_registry *r, void (*on_error)(const char *msg, void *ud), void *ud);

/* Iterate loaded plugins in name order. */
size_t sb_registry_count(const sb_registry *r);
const sb_plugin *sb_registry_at(const sb_registry *r, size_t i, const char **path);

const char *sb_plugin_kind_name(sb_plugin_kind k);

/* The descriptor size a plugin of ABI 2.<minor> has: the loader refuses
 * any other. */
size_t sb_plugin_size_for_minor(uint32_t minor);

/* Members appended since 2.0, read only when the plugin's descriptor holds
 * them (NULL for an older plugin, or when the plugin leaves them NULL).
 * Always use these instead of p->preflight / p->registry_rows. */
typedef void (*sb_preflight_fn)(void *self, sb_preflight *pf);
typedef int (*sb_registry_rows_fn)(void *self, int64_t since_us, json_t **rows, char *errstr, size_t errstr_size);
sb_preflight_fn sb_plugin_preflight(const sb_plugin *p);
sb_registry_rows_fn sb_plugin_registry_rows(const sb_plugin *p);

#endif
