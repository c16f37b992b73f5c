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

/* Load (once) and return the plugin NAME. `kind` 0 = any; else a plugin of
 * another kind is an error mentioning `used_as` (e.g. "sinks.out"). */
const sb_plugin *sb_registry_get(sb_registry *r, const char *name, sb_plugin_kind kind, const char *used_as,
                                 char *errstr, size_t errstr_size);

/* Load one file with every check above (for tests and `plugins FILE`). */
const sb_plugin *sb_registry_load_file(sb_registry *r, const char *path, char *errstr, size_t errstr_size);

/* Load every *.so in the search path; errors are reported through cb
 * (path, message) and loading continues. Returns the count loaded. */
size_t sb_registry_load_all(sb_registry *r, void (*on_error)(const char *msg, void *ud), void *ud);

/* Iterate loaded plugins in name order. */
size_t sb_registry_count(const sb_registry *r);
const sb_plugin *sb_registry_at(const sb_registry *r, size_t i, const char **path);

const char *sb_plugin_kind_name(sb_plugin_kind k);

#endif
