/* loader.c - dlopen plugins and check them before trusting them. */
#include "build_config.h"
#include "engine/loader.h"
#include "config/options_internal.h"
#include "util/util.h"

#include <limits.h>
#include <syncbridge/log.h>

#include <dirent.h>
#include <stddef.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SB_DEFAULT_PLUGIN_DIR
#define SB_DEFAULT_PLUGIN_DIR "/usr/lib/syncbridge"
#endif

typedef struct loaded {
    char *path;
    void *dl;
    const sb_plugin *desc;
} loaded;

struct sb_registry {
    char **dirs;
    size_t n_dirs;
    int allow_insecure;
    loaded *items;
    size_t n, cap;
};

const char *sb_plugin_kind_name(sb_plugin_kind k)
{
    switch (k) {
    case SB_KIND_SOURCE: return "source";
    case SB_KIND_SINK: return "sink";
    case SB_KIND_ACTION: return "action";
    }
    return "unknown kind";
}

static void add_dir(sb_registry *r, const char *d)
{
    if (!d || !*d)
        return;
    for (size_t i = 0; i < r->n_dirs; i++)
        if (strcmp(r->dirs[i], d) == 0)
            return;
    r->dirs = sb_xrealloc(r->dirs, (r->n_dirs + 1) * sizeof *r->dirs);
    r->dirs[r->n_dirs++] = sb_strdup(d);
}

sb_registry *sb_registry_new(char *const *dirs, size_t n_dirs)
{
    sb_registry *r = sb_xcalloc(1, sizeof *r);
    for (size_t i = 0; i < n_dirs; i++)
        add_dir(r, dirs[i]);
    const char *env = getenv("SYNCBRIDGE_PLUGIN_PATH");
    if (env) {
        char *copy = sb_strdup(env), *save = NULL;
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save))
            add_dir(r, d);
        free(copy);
    } else {
        /* the variable replaces the built-in directory, so that a build
         * tree's plugins never meet an installed copy of themselves */
        add_dir(r, SB_DEFAULT_PLUGIN_DIR);
    }
    return r;
}

void sb_registry_allow_insecure(sb_registry *r, int allow) { r->allow_insecure = allow; }

void sb_registry_free(sb_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        if (r->items[i].dl)
            dlclose(r->items[i].dl);
        free(r->items[i].path);
    }
    for (size_t i = 0; i < r->n_dirs; i++)
        free(r->dirs[i]);
    free(r->dirs);
    free(r->items);
    free(r);
}

size_t sb_plugin_size_for_minor(uint32_t minor)
{
    /* 2.0 and 2.1 end at abandon(); 2.2 appended preflight and registry_rows */
    return minor < 2 ? offsetof(sb_plugin, preflight) : sizeof(sb_plugin);
}

/* A member appended after 2.0 exists only when the descriptor is long
 * enough to hold it: an older plugin's symbol ends before it. */
#define HAS_MEMBER(p, m) ((size_t)(p)->struct_size >= offsetof(sb_plugin, m) + sizeof((p)->m))

sb_preflight_fn sb_plugin_preflight(const sb_plugin *p) { return HAS_MEMBER(p, preflight) ? p->preflight : NULL; }

sb_registry_rows_fn sb_plugin_registry_rows(const sb_plugin *p)
{
    return HAS_MEMBER(p, registry_rows) ? p->registry_rows : NULL;
}

static int valid_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

static int check_options(const sb_plugin *p, const char *path, char *errstr, size_t errstr_size)
{
    if (!p->options)
        return 0;
    for (size_t i = 0; p->options[i].name; i++) {
        const sb_option_def *o = &p->options[i];
        if (!valid_name(o->name))
            return sb_err(errstr, errstr_size, "%s: option #%zu has an invalid name \"%s\"", path, i + 1, o->name);
        if (o->type < SB_OPT_STRING || o->type > SB_OPT_JSON_TEMPLATE)
            return sb_err(errstr, errstr_size, "%s: option \"%s\" has an unknown type %d", path, o->name, (int)o->type);
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->options[j].name, o->name) == 0)
                return sb_err(errstr, errstr_size, "%s: option \"%s\" is declared twice", path, o->name);
    }
    return 0;
}

/* Everything after the ABI header: is the descriptor usable? */
static int check_descriptor(const sb_plugin *p, const char *path, char *errstr, size_t errstr_size)
{
    if (!valid_name(p->name))
        return sb_err(errstr, errstr_size, "%s: descriptor has an invalid name (want [a-z0-9_]+)", path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t nlen = strlen(p->name);
    if (strncmp(base, p->name, nlen) != 0 || strcmp(base + nlen, ".so") != 0)
        return sb_err(errstr, errstr_size, "%s: declares plugin name \"%s\" but the file must then be named %s.so", path,
                      p->name, p->name);
    if (p->kind != SB_KIND_SOURCE && p->kind != SB_KIND_SINK && p->kind != SB_KIND_ACTION)
        return sb_err(errstr, errstr_size, "%s: descriptor has an unknown kind %d", path, (int)p->kind);
    if (!p->create != !p->destroy)
        return sb_err(errstr, errstr_size, "%s: descriptor sets only one of create() and destroy() (both, or neither "
                      "for a stateless plugin)", path);
    if (!p->worker_init != !p->worker_fini)
        return sb_err(errstr, errstr_size, "%s: descriptor sets only one of worker_init() and worker_fini()", path);
    if (p->kind == SB_KIND_SOURCE && (p->worker_init || p->abandon))
        return sb_err(errstr, errstr_size, "%s: worker_init() and abandon() are for sinks and actions, not sources", path);
    if (p->kind == SB_KIND_SOURCE && !p->run)
        return sb_err(errstr, errstr_size, "%s: a source plugin must provide run()", path);
    if (p->kind != SB_KIND_SOURCE && !p->process)
        return sb_err(errstr, errstr_size, "%s: a %s plugin must provide process()", path, sb_plugin_kind_name(p->kind));
    if (check_options(p, path, errstr, errstr_size) != 0)
        return -1;
    char msg[512];
    if (sb_options_check_table(p->options, p->config_size, msg, sizeof msg) != 0)
        return sb_err(errstr, errstr_size, "%s: %s", path, msg);
    return 0;
}

static const loaded *find_loaded(const sb_registry *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i].desc->name, name) == 0)
            return &r->items[i];
    return NULL;
}

/* Could someone other than root or the daemon's user have changed the file
 * at `real` (symlinks resolved) or its directory? Refused with the reason,
 * or a warning with allow_insecure. */
static int check_trust(const sb_registry *r, const char *path, const char *real, char *errstr, size_t errstr_size)
{
    char why[160], *dir = sb_strdup(real);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    struct stat st;
    int rc = 0;
    const char *what = NULL;
    if (stat(real, &st) != 0)
        rc = sb_err(errstr, errstr_size, "%s: %s", path, strerror(errno));
    else if (sb_untrusted_owner_or_mode(&st, why, sizeof why))
        what = real;
    else if (stat(slash ? dir : ".", &st) != 0)
        rc = sb_err(errstr, errstr_size, "%s: its directory: %s", path, strerror(errno));
    else if (sb_untrusted_owner_or_mode(&st, why, sizeof why))
        what = slash ? dir : ".";
    if (what && r->allow_insecure)
        sb_log(NULL, SB_LOG_WARN, "plugin %s: %s is %s; loaded because allow_insecure_plugins is set", path, what,
               why);
    else if (what)
        rc = sb_err(errstr, errstr_size,
                    "plugin %s refused: %s is %s, so another user could put code into the daemon; fix the owner or "
                    "mode (chown root, chmod go-w), or set allow_insecure_plugins",
                    path, what, why);
    free(dir);
    return rc;
}

const sb_plugin *sb_registry_load_file(sb_registry *r, const char *path, char *errstr, size_t errstr_size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        sb_err(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i].path, path) == 0)
            return r->items[i].desc;
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        sb_err(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (check_trust(r, path, real, errstr, errstr_size) != 0)
        return NULL;

    void *dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *e = dlerror();
        sb_err(errstr, errstr_size, "%s: not a loadable shared object: %s", path, e ? e : "unknown error");
        return NULL;
    }
    dlerror();
    const sb_plugin *p = dlsym(dl, SB_PLUGIN_SYMBOL);
    if (!p) {
        sb_err(errstr, errstr_size, "%s: does not export the symbol \"%s\": not a syncbridge plugin", path,
               SB_PLUGIN_SYMBOL);
        dlclose(dl);
        return NULL;
    }
    /* The ABI header comes first; nothing else is read before it matches. */
    if (p->abi_major != SB_ABI_MAJOR || p->abi_minor > SB_ABI_MINOR) {
        sb_err(errstr, errstr_size,
               "%s: built for plugin ABI %u.%u, this syncbridge provides ABI %u.%u; rebuild the plugin against "
               "the syncbridge %s SDK%s",
               path, p->abi_major, p->abi_minor, SB_ABI_MAJOR, SB_ABI_MINOR, PACKAGE_VERSION,
               p->abi_major < SB_ABI_MAJOR ? " (README: \"Migrating a plugin to ABI 2\")" : "");
        dlclose(dl);
        return NULL;
    }
    if (p->struct_size != sb_plugin_size_for_minor(p->abi_minor)) {
        sb_err(errstr, errstr_size,
               "%s: descriptor size %u does not match ABI %u.%u (expected %zu); rebuild the plugin against the "
               "syncbridge %s SDK",
               path, p->struct_size, p->abi_major, p->abi_minor, sb_plugin_size_for_minor(p->abi_minor),
               PACKAGE_VERSION);
        dlclose(dl);
        return NULL;
    }
    if (check_descriptor(p, path, errstr, errstr_size) != 0) {
        dlclose(dl);
        return NULL;
    }
    const loaded *dup = find_loaded(r, p->name);
    if (dup) {
        sb_err(errstr, errstr_size, "plugin name \"%s\" is provided twice: %s and %s; remove one", p->name, dup->path,
               path);
        dlclose(dl);
        return NULL;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->items = sb_xrealloc(r->items, r->cap * sizeof *r->items);
    }
    r->items[r->n++] = (loaded){.path = sb_strdup(path), .dl = dl, .desc = p};
    return p;
}

/* The file found for a name, symlinks resolved, must lie inside the
 * directory it was found in (resolved too). */
static int confine(const sb_registry *r, const char *path, char *errstr, size_t errstr_size)
{
    char real[PATH_MAX], rdir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    char *dir = slash ? sb_asprintf("%.*s", (int)(slash - path), path) : sb_strdup(".");
    int rc = 0;
    (void)r;
    if (!realpath(path, real) || !realpath(*dir ? dir : "/", rdir)) {
        rc = sb_err(errstr, errstr_size, "%s: %s", path, strerror(errno));
    } else {
        size_t n = strlen(rdir);
        if (strncmp(real, rdir, n) != 0 || (real[n] != '/' && strcmp(rdir, "/") != 0))
            rc = sb_err(errstr, errstr_size, "plugin %s refused: it resolves to %s, outside its directory %s", path,
                        real, rdir);
    }
    free(dir);
    return rc;
}

const sb_plugin *sb_registry_get(sb_registry *r, const char *name, sb_plugin_kind kind, const char *used_as,
                                 char *errstr, size_t errstr_size)
{
    /* before any path is built from it: "../x" or "/tmp/x" is never a name */
    if (!valid_name(name)) {
        sb_err(errstr, errstr_size, "%s: \"%s\" is not a plugin name (want [a-z0-9_]+: plugins are found by name "
               "in plugin_path, never by path)", used_as ? used_as : "plugin", name ? name : "");
        return NULL;
    }
    const loaded *l = find_loaded(r, name);
    const sb_plugin *p = l ? l->desc : NULL;
    if (!p) {
        char *found = NULL;
        size_t searched_len = 0;
        char searched[2048] = "";
        for (size_t i = 0; i < r->n_dirs; i++) {
            char *path = sb_asprintf("%s/%s.so", r->dirs[i], name);
            if (access(path, F_OK) == 0) {
                if (found) {
                    sb_err(errstr, errstr_size, "plugin \"%s\" is provided twice: %s and %s; remove one", name, found,
                           path);
                    free(found);
                    free(path);
                    return NULL;
                }
                found = path;
            } else {
                int w = snprintf(searched + searched_len, sizeof searched - searched_len, "%s%s",
                                 searched_len ? ", " : "", path);
                if (w > 0 && (size_t)w < sizeof searched - searched_len)
                    searched_len += (size_t)w;
                free(path);
            }
        }
        if (!found) {
            sb_err(errstr, errstr_size, "%s: plugin \"%s\" not found (searched %s)", used_as ? used_as : name, name,
                   searched);
            return NULL;
        }
        if (confine(r, found, errstr, errstr_size) != 0) {
            free(found);
            return NULL;
        }
        p = sb_registry_load_file(r, found, errstr, errstr_size);
        free(found);
        if (!p)
            return NULL;
    }
    if (kind && p->kind != kind) {
        sb_err(errstr, errstr_size, "%s: plugin \"%s\" is a %s, it cannot be used as a %s", used_as ? used_as : name,
               name, sb_plugin_kind_name(p->kind), sb_plugin_kind_name(kind));
        return NULL;
    }
    return p;
}

static int cmp_loaded(const void *a, const void *b)
{
    return strcmp(((const loaded *)a)->desc->name, ((const loaded *)b)->desc->name);
}

size_t sb_registry_load_all(sb_registry *r, void (*on_error)(const char *msg, void *ud), void *ud)
{
    for (size_t i = 0; i < r->n_dirs; i++) {
        DIR *d = opendir(r->dirs[i]);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            size_t len = strlen(de->d_name);
            if (len < 4 || strcmp(de->d_name + len - 3, ".so") != 0)
                continue;
            char *path = sb_asprintf("%s/%s", r->dirs[i], de->d_name);
            char err[1024];
            if (!sb_registry_load_file(r, path, err, sizeof err) && on_error)
                on_error(err, ud);
            free(path);
        }
        closedir(d);
    }
    qsort(r->items, r->n, sizeof *r->items, cmp_loaded);
    return r->n;
}

size_t sb_registry_count(const sb_registry *r) { return r->n; }

const sb_plugin *sb_registry_at(const sb_registry *r, size_t i, const char **path)
{
    if (i >= r->n)
        return NULL;
    if (path)
        *path = r->items[i].path;
    return r->items[i].desc;
}
