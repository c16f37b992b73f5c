/* config.c - load the main config and conf.d drop-ins into an sb_config. */
#include "build_config.h"
#include "config/config.h"
#include "config/confval.h"
#include "log/log_internal.h"
#include "events/match.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef SB_DEFAULT_STATE_DIR
#define SB_DEFAULT_STATE_DIR "/var/lib/syncbridge"
#endif
#ifndef SB_DEFAULT_PLUGIN_DIR
#define SB_DEFAULT_PLUGIN_DIR "/usr/lib/syncbridge"
#endif

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- loader state and messages ----------------------------------------------- */

/* An instance or route as found in a file, before it is parsed. */
typedef struct entry {
    const char *name;    /* borrowed from the file's JSON */
    const char *section; /* "sources", "sinks", "actions" or "routes" */
    const char *file;    /* borrowed from loader.files */
    json_t *value;       /* borrowed */
} entry;

typedef struct loader {
    sb_config *c;
    char *errstr;
    size_t errstr_size;
    size_t n_files;
    char **files;
    json_t **roots;
    size_t n_inst, n_routes;
    entry *inst, *routes;
} loader;

static int fail(loader *L, const char *file, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "<file>: <path>: <problem>" */
static int fail(loader *L, const char *file, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && *path)
        return sb_err(L->errstr, L->errstr_size, "%s: %s: %s", file, path, msg);
    return sb_err(L->errstr, L->errstr_size, "%s: %s", file, msg);
}

static int fail_type(loader *L, const char *file, const char *path, const char *expected, const json_t *v)
{
    char msg[512];
    sb_config_expected(msg, sizeof msg, expected, v);
    return fail(L, file, path, "%s", msg);
}

static int check_keys(loader *L, const char *file, const char *path, const json_t *obj,
                      const char *const *allowed, size_t n)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        size_t i = 0;
        while (i < n && strcmp(allowed[i], key) != 0)
            i++;
        if (i < n)
            continue;
        char *sub = path && *path ? sb_asprintf("%s.%s", path, key) : sb_strdup(key);
        const char *close = sb_closest_name(key, allowed, n);
        if (close)
            fail(L, file, sub, "unknown key (did you mean \"%s\"?)", close);
        else
            fail(L, file, sub, "unknown key");
        free(sub);
        return -1;
    }
    return 0;
}

/* Rebuild a scratch JSON path for messages; the caller frees *buf once. */
static const char *subpath(char **buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const char *subpath(char **buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(*buf);
    if (vasprintf(buf, fmt, ap) < 0) {
        fputs("syncbridge: out of memory\n", stderr);
        abort();
    }
    va_end(ap);
    return *buf;
}

/* ---- typed values --------------------------------------------------------- */

static int get_string(loader *L, const char *file, const char *path, const json_t *v, char **out)
{
    if (!json_is_string(v))
        return fail_type(L, file, path, "a string", v);
    char msg[512];
    char *s = sb_config_subst(json_string_value(v), 0, msg, sizeof msg);
    if (!s)
        return fail(L, file, path, "%s", msg);
    free(*out);
    *out = s;
    return 0;
}

static int get_int(loader *L, const char *file, const char *path, const json_t *v, int64_t min, int64_t max,
                   int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char expected[96];
        if (max == INT64_MAX)
            snprintf(expected, sizeof expected, "an integer >= %lld", (long long)min);
        else
            snprintf(expected, sizeof expected, "an integer from %lld to %lld", (long long)min, (long long)max);
        return fail_type(L, file, path, expected, v);
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_int32(loader *L, const char *file, const char *path, const json_t *v, int64_t min, int64_t max,
                     int *out)
{
    int64_t n;
    if (get_int(L, file, path, v, min, max, &n) != 0)
        return -1;
    *out = (int)n;
    return 0;
}

/* Durations and sizes: as plugin options read them (confval.h). */
static int get_scaled(loader *L, const char *file, const char *path, const json_t *v, int is_size, int64_t *out)
{
    char msg[1024];
    if (sb_config_scaled(v, is_size ? SB_SCALED_SIZE : SB_SCALED_DURATION, out, msg, sizeof msg) != 0)
        return fail(L, file, path, "%s", msg);
    return 0;
}

static int get_bool(loader *L, const char *file, const char *path, const json_t *v, int *out)
{
    if (!json_is_boolean(v))
        return fail_type(L, file, path, "true or false", v);
    *out = json_is_true(v);
    return 0;
}

/* A string that must be one of `names`; returns its index in *out. */
static int get_enum(loader *L, const char *file, const char *path, const json_t *v, const char *const *names,
                    size_t n, int *out)
{
    char *s = NULL;
    if (get_string(L, file, path, v, &s) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            free(s);
            return 0;
        }
    }
    free(s);
    char expected[256] = "one of";
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(expected);
        snprintf(expected + len, sizeof expected - len, "%s \"%s\"", i ? "," : "", names[i]);
    }
    return fail_type(L, file, path, expected, v);
}

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- core keys of the main file ------------------------------------------- */

static int parse_plugin_path(loader *L, const char *file, const json_t *v)
{
    sb_config *c = L->c;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v))
        return fail_type(L, file, "plugin_path", "a directory or a list of directories", v);
    c->plugin_dirs = sb_xcalloc(n + 1, sizeof *c->plugin_dirs);
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_is_array(v) ? json_array_get(v, i) : v;
        char *path = json_is_array(v) ? sb_asprintf("plugin_path[%zu]", i) : sb_strdup("plugin_path");
        int rc = get_string(L, file, path, item, &c->plugin_dirs[i]);
        free(path);
        if (rc != 0)
            return -1;
        c->n_plugin_dirs++;
    }
    return 0;
}

static int parse_log(loader *L, const char *file, const json_t *v)
{
    static const char *const keys[] = {"level", "target"};
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    static const char *const targets[] = {"stderr", "syslog", "journal"};
    if (!json_is_object(v))
        return fail_type(L, file, "log", "an object", v);
    if (check_keys(L, file, "log", v, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    const json_t *x;
    int idx;
    if ((x = json_object_get(v, "level"))) {
        if (get_enum(L, file, "log.level", x, levels, ARRAY_LEN(levels), &idx) != 0)
            return -1;
        L->c->log_level = sb_log_level_parse(levels[idx]);
    }
    if ((x = json_object_get(v, "target"))) {
        if (get_enum(L, file, "log.target", x, targets, ARRAY_LEN(targets), &idx) != 0)
            return -1;
        free(L->c->log_target);
        L->c->log_target = sb_strdup(targets[idx]);
    }
    return 0;
}

static int parse_ledger(loader *L, const char *file, const json_t *v)
{
    static const char *const keys[] = {"fsync", "retention", "commit_interval", "check_at_start", "keep_payload"};
    static const char *const fsyncs[] = {"process", "power"};
    static const char *const keeps[] = {"always", "until_settled"};
    if (!json_is_object(v))
        return fail_type(L, file, "ledger", "an object", v);
    if (check_keys(L, file, "ledger", v, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    const json_t *x;
    int idx;
    if ((x = json_object_get(v, "fsync"))) {
        if (get_enum(L, file, "ledger.fsync", x, fsyncs, ARRAY_LEN(fsyncs), &idx) != 0)
            return -1;
        L->c->fsync = idx == 0 ? SB_FSYNC_PROCESS : SB_FSYNC_POWER;
    }
    if ((x = json_object_get(v, "retention")) && get_scaled(L, file, "ledger.retention", x, 0, &L->c->retention_ms))
        return -1;
    if ((x = json_object_get(v, "commit_interval")) &&
        get_scaled(L, file, "ledger.commit_interval", x, 0, &L->c->commit_interval_ms))
        return -1;
    if ((x = json_object_get(v, "check_at_start")) &&
        get_bool(L, file, "ledger.check_at_start", x, &L->c->ledger_check_at_start))
        return -1;
    if ((x = json_object_get(v, "keep_payload"))) {
        if (get_enum(L, file, "ledger.keep_payload", x, keeps, ARRAY_LEN(keeps), &idx) != 0)
            return -1;
        L->c->keep_payload_until_settled = idx == 1;
    }
    return 0;
}

static int parse_limits(loader *L, const char *file, const json_t *v)
{
    static const char *const keys[] = {"max_inflight", "max_inflight_bytes"};
    if (!json_is_object(v))
        return fail_type(L, file, "limits", "an object", v);
    if (check_keys(L, file, "limits", v, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    const json_t *x;
    if ((x = json_object_get(v, "max_inflight")) &&
        get_int(L, file, "limits.max_inflight", x, 1, INT64_MAX, &L->c->max_inflight))
        return -1;
    if ((x = json_object_get(v, "max_inflight_bytes")) &&
        get_scaled(L, file, "limits.max_inflight_bytes", x, 1, &L->c->max_inflight_bytes))
        return -1;
    return 0;
}

static int parse_admin(loader *L, const char *file, const json_t *v)
{
    static const char *const keys[] = {"enabled", "bind", "port"};
    if (!json_is_object(v))
        return fail_type(L, file, "admin", "an object", v);
    if (check_keys(L, file, "admin", v, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    const json_t *x;
    if ((x = json_object_get(v, "enabled")) && get_bool(L, file, "admin.enabled", x, &L->c->admin_enabled))
        return -1;
    if ((x = json_object_get(v, "bind")) && get_string(L, file, "admin.bind", x, &L->c->admin_bind))
        return -1;
    if ((x = json_object_get(v, "port")) && get_int32(L, file, "admin.port", x, 1, 65535, &L->c->admin_port))
        return -1;
    return 0;
}

static const char *const sections[] = {"sources", "sinks", "actions", "routes"};

static int parse_core(loader *L, const char *file, const json_t *root)
{
    static const char *const keys[] = {"state_dir", "plugin_path", "allow_insecure_plugins", "conf_d", "log",
                                       "shutdown_timeout", "ledger", "limits", "admin", "sources", "sinks",
                                       "actions", "routes"};
    sb_config *c = L->c;
    if (check_keys(L, file, "", root, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    const json_t *x;
    if ((x = json_object_get(root, "state_dir")) && get_string(L, file, "state_dir", x, &c->state_dir))
        return -1;
    if ((x = json_object_get(root, "plugin_path")) && parse_plugin_path(L, file, x))
        return -1;
    if ((x = json_object_get(root, "allow_insecure_plugins")) &&
        get_bool(L, file, "allow_insecure_plugins", x, &c->allow_insecure_plugins))
        return -1;
    if ((x = json_object_get(root, "conf_d")) && get_string(L, file, "conf_d", x, &c->conf_d))
        return -1;
    if ((x = json_object_get(root, "log")) && parse_log(L, file, x))
        return -1;
    if ((x = json_object_get(root, "shutdown_timeout")) &&
        get_scaled(L, file, "shutdown_timeout", x, 0, &c->shutdown_timeout_ms))
        return -1;
    if ((x = json_object_get(root, "ledger")) && parse_ledger(L, file, x))
        return -1;
    if ((x = json_object_get(root, "limits")) && parse_limits(L, file, x))
        return -1;
    if ((x = json_object_get(root, "admin")) && parse_admin(L, file, x))
        return -1;
    return 0;
}

/* ---- files -------------------------------------------------------------- */

static json_t *load_json(loader *L, const char *file)
{
    char msg[512];
    size_t len;
    char *text = sb_read_file(file, &len, msg, sizeof msg);
    if (!text) {
        sb_err(L->errstr, L->errstr_size, "cannot read config file %s", msg);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) {
        sb_err(L->errstr, L->errstr_size, "%s:%d:%d: syntax error: %s", file, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        sb_err(L->errstr, L->errstr_size, "%s: expected a JSON object at the top level", file);
        return NULL;
    }
    L->files = sb_xrealloc(L->files, (L->n_files + 1) * sizeof *L->files);
    L->roots = sb_xrealloc(L->roots, (L->n_files + 1) * sizeof *L->roots);
    L->files[L->n_files] = sb_strdup(file);
    L->roots[L->n_files] = root;
    L->n_files++;
    return root;
}

static const entry *find_entry(const entry *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            return &list[i];
    return NULL;
}

/* Instances share one namespace across sections; routes have their own. */
static int collect_section(loader *L, const char *file, const char *section, const json_t *v)
{
    if (!json_is_object(v))
        return fail_type(L, file, section, "an object of named entries", v);
    int is_route = strcmp(section, "routes") == 0;
    entry **list = is_route ? &L->routes : &L->inst;
    size_t *n = is_route ? &L->n_routes : &L->n_inst;
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)v, name, value) {
        const entry *prev = find_entry(*list, *n, name);
        if (prev)
            return sb_err(L->errstr, L->errstr_size, "%s \"%s\" is defined twice: %s (%s.%s) and %s (%s.%s)",
                          is_route ? "route" : "instance", name, prev->file, prev->section, name, file, section,
                          name);
        *list = sb_xrealloc(*list, (*n + 1) * sizeof **list);
        (*list)[*n] = (entry){.name = name, .section = section, .file = file, .value = value};
        (*n)++;
    }
    return 0;
}

static int collect_sections(loader *L, const char *file, const json_t *root)
{
    for (size_t i = 0; i < ARRAY_LEN(sections); i++) {
        const json_t *v = json_object_get(root, sections[i]);
        if (v && collect_section(L, file, sections[i], v) != 0)
            return -1;
    }
    return 0;
}

static int dropin_filter(const struct dirent *d)
{
    size_t len = strlen(d->d_name);
    return d->d_name[0] != '.' && len > 5 && strcmp(d->d_name + len - 5, ".json") == 0;
}

static int dropin_order(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* A drop-in adds instances and routes; the daemon's own settings stay in
 * the main file so that one place says how the daemon runs. */
static int check_dropin_keys(loader *L, const char *file, const json_t *root)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        size_t k = 0;
        while (k < ARRAY_LEN(sections) && strcmp(sections[k], key) != 0)
            k++;
        if (k == ARRAY_LEN(sections))
            return fail(L, file, key, "not allowed in a drop-in (only sources, sinks, actions and routes)");
    }
    return 0;
}

static int load_dropins(loader *L)
{
    struct dirent **names = NULL;
    int n = scandir(L->c->conf_d, &names, dropin_filter, dropin_order);
    if (n < 0) {
        if (errno == ENOENT)
            return 0;
        return fail(L, L->c->main_file, "conf_d", "cannot read directory \"%s\": %s", L->c->conf_d,
                    strerror(errno));
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char *path = sb_asprintf("%s/%s", L->c->conf_d, names[i]->d_name);
        struct stat st;
        if (rc == 0 && stat(path, &st) != 0) {
            /* a dangling or looping symlink, most often: a drop-in the
             * operator meant to load is never skipped without a word */
            rc = sb_err(L->errstr, L->errstr_size, "cannot read drop-in %s: %s%s", path, strerror(errno),
                        errno == ENOENT || errno == ELOOP ? " (a dangling or looping symlink?)" : "");
        } else if (rc == 0 && S_ISREG(st.st_mode)) {
            const json_t *root = load_json(L, path);
            if (!root || check_dropin_keys(L, path, root) != 0 ||
                collect_sections(L, L->files[L->n_files - 1], root) != 0)
                rc = -1;
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* ---- instances and routes ----------------------------------------------------- */

static sb_plugin_kind section_kind(const char *section)
{
    if (strcmp(section, "sources") == 0)
        return SB_KIND_SOURCE;
    return strcmp(section, "sinks") == 0 ? SB_KIND_SINK : SB_KIND_ACTION;
}

static int parse_retry(loader *L, const char *file, const char *path, const json_t *v, sb_retry_policy *r)
{
    static const char *const keys[] = {"max_attempts", "max_time", "initial", "max_delay", "multiplier"};
    if (!json_is_object(v))
        return fail_type(L, file, path, "an object", v);
    if (check_keys(L, file, path, v, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    const json_t *x;
    char *sub = NULL;
    int rc = 0;
    if (rc == 0 && (x = json_object_get(v, "max_attempts"))) {
        subpath(&sub, "%s.max_attempts", path);
        rc = get_int32(L, file, sub, x, 1, 1000000, &r->max_attempts);
    }
    if (rc == 0 && (x = json_object_get(v, "max_time"))) {
        subpath(&sub, "%s.max_time", path);
        rc = get_scaled(L, file, sub, x, 0, &r->max_time_ms);
    }
    if (rc == 0 && (x = json_object_get(v, "initial"))) {
        subpath(&sub, "%s.initial", path);
        rc = get_scaled(L, file, sub, x, 0, &r->initial_ms);
    }
    if (rc == 0 && (x = json_object_get(v, "max_delay"))) {
        subpath(&sub, "%s.max_delay", path);
        rc = get_scaled(L, file, sub, x, 0, &r->max_delay_ms);
    }
    if (rc == 0 && (x = json_object_get(v, "multiplier"))) {
        subpath(&sub, "%s.multiplier", path);
        if (!json_is_number(x) || json_number_value(x) < 1.0)
            rc = fail_type(L, file, sub, "a number >= 1.0", x);
        else
            r->multiplier = json_number_value(x);
    }
    free(sub);
    return rc;
}

static int parse_instance(loader *L, const entry *e, sb_instance_conf *ic)
{
    char *path = sb_asprintf("%s.%s", e->section, e->name);
    char *sub = NULL;
    int rc = -1;
    ic->name = sb_strdup(e->name);
    ic->file = sb_strdup(e->file);
    ic->kind = section_kind(e->section);
    ic->workers = 1;
    ic->batch_max = 500;
    ic->retry = (sb_retry_policy){.max_attempts = 10, .max_time_ms = 3600000, .initial_ms = 500,
                                  .max_delay_ms = 300000, .multiplier = 2.0};
    ic->step_timeout_ms = 6 * 3600000LL;
    ic->options = json_object();
    if (!valid_name(e->name)) {
        fail(L, e->file, path, "invalid name \"%s\" (use letters, digits, \"_\", \".\" and \"-\")", e->name);
        goto out;
    }
    if (!json_is_object(e->value)) {
        fail_type(L, e->file, path, "an object with at least a \"plugin\" key", e->value);
        goto out;
    }
    const json_t *plugin = json_object_get(e->value, "plugin");
    if (!plugin) {
        fail(L, e->file, path, "missing required key \"plugin\"");
        goto out;
    }
    sub = sb_asprintf("%s.plugin", path);
    if (get_string(L, e->file, sub, plugin, &ic->plugin) != 0)
        goto out;
    const char *key;
    json_t *v;
    json_object_foreach(e->value, key, v) {
        free(sub);
        sub = sb_asprintf("%s.%s", path, key);
        if (strcmp(key, "plugin") == 0)
            continue;
        if (ic->kind == SB_KIND_SOURCE) {
            json_object_set_new(ic->options, key, json_deep_copy(v));
        } else if (strcmp(key, "workers") == 0) {
            if (get_int32(L, e->file, sub, v, 1, 1024, &ic->workers) != 0)
                goto out;
        } else if (strcmp(key, "batch_max") == 0) {
            if (get_int32(L, e->file, sub, v, 1, 1000000, &ic->batch_max) != 0)
                goto out;
        } else if (strcmp(key, "retry") == 0) {
            if (parse_retry(L, e->file, sub, v, &ic->retry) != 0)
                goto out;
        } else if (strcmp(key, "step_timeout") == 0) {
            if (get_scaled(L, e->file, sub, v, 0, &ic->step_timeout_ms) != 0)
                goto out;
            if (ic->step_timeout_ms <= 0) {
                fail(L, e->file, sub, "must be more than 0 (how long the step may take, waits included)");
                goto out;
            }
        } else {
            json_object_set_new(ic->options, key, json_deep_copy(v));
        }
    }
    rc = 0;
out:
    free(sub);
    free(path);
    return rc;
}

/* Resolve an instance name used by a route; `want_source` picks which
 * kinds are acceptable. */
static int route_ref(loader *L, const char *file, const char *path, const json_t *v, int want_source, char **out)
{
    const sb_config *c = L->c;
    if (get_string(L, file, path, v, out) != 0)
        return -1;
    const sb_instance_conf *ic = sb_config_instance(c, *out);
    if (!ic) {
        const char **names = sb_xcalloc(c->n_instances + 1, sizeof *names);
        for (size_t i = 0; i < c->n_instances; i++)
            names[i] = c->instances[i].name;
        const char *close = sb_closest_name(*out, names, c->n_instances);
        if (close)
            fail(L, file, path, "unknown instance \"%s\" (did you mean \"%s\"?)", *out, close);
        else
            fail(L, file, path, "unknown instance \"%s\"", *out);
        free(names);
        return -1;
    }
    if (want_source && ic->kind != SB_KIND_SOURCE)
        return fail(L, file, path, "\"%s\" is %s, sources must be source instances", *out,
                    ic->kind == SB_KIND_SINK ? "a sink" : "an action");
    if (!want_source && ic->kind == SB_KIND_SOURCE)
        return fail(L, file, path, "\"%s\" is a source, steps must be sinks or actions", *out);
    return 0;
}

/* The route parsers share one scratch path (`sub`) freed by parse_route(). */
static int parse_route_sources(loader *L, const char *file, const char *path, const json_t *v, sb_route_conf *rc,
                               char **sub)
{
    if (!v)
        return fail(L, file, path, "missing required key \"sources\"");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail_type(L, file, subpath(sub, "%s.sources", path), "a non-empty list of source names", v);
    rc->sources = sb_xcalloc(json_array_size(v), sizeof *rc->sources);
    for (size_t i = 0; i < json_array_size(v); i++) {
        rc->n_sources++;
        if (route_ref(L, file, subpath(sub, "%s.sources[%zu]", path, i), json_array_get(v, i), 1,
                      &rc->sources[i]) != 0)
            return -1;
    }
    return 0;
}

static int parse_route_steps(loader *L, const char *file, const char *path, const json_t *v, sb_route_conf *rc,
                             char **sub)
{
    if (!v)
        return fail(L, file, path, "missing required key \"steps\"");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail_type(L, file, subpath(sub, "%s.steps", path), "a non-empty list of steps", v);
    rc->steps = sb_xcalloc(json_array_size(v), sizeof *rc->steps);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *item = json_array_get(v, i);
        sb_step_conf *st = &rc->steps[i];
        rc->n_steps++;
        subpath(sub, "%s.steps[%zu]", path, i);
        if (json_is_string(item)) {
            st->instances = sb_xcalloc(1, sizeof *st->instances);
            st->n = 1;
            if (route_ref(L, file, *sub, item, 0, &st->instances[0]) != 0)
                return -1;
            continue;
        }
        if (!json_is_array(item) || json_array_size(item) == 0)
            return fail_type(L, file, *sub, "an instance name or a non-empty list of names", item);
        st->instances = sb_xcalloc(json_array_size(item), sizeof *st->instances);
        for (size_t j = 0; j < json_array_size(item); j++) {
            st->n++;
            if (route_ref(L, file, subpath(sub, "%s.steps[%zu][%zu]", path, i, j), json_array_get(item, j), 0,
                          &st->instances[j]) != 0)
                return -1;
        }
    }
    return 0;
}

static int parse_route_body(loader *L, const entry *e, const char *path, sb_route_conf *rc, char **sub)
{
    static const char *const keys[] = {"sources", "match", "steps", "max_inflight", "max_inflight_bytes"};
    if (!valid_name(e->name))
        return fail(L, e->file, path, "invalid name \"%s\" (use letters, digits, \"_\", \".\" and \"-\")", e->name);
    if (!json_is_object(e->value))
        return fail_type(L, e->file, path, "an object with \"sources\" and \"steps\"", e->value);
    if (check_keys(L, e->file, path, e->value, keys, ARRAY_LEN(keys)) != 0)
        return -1;
    if (parse_route_sources(L, e->file, path, json_object_get(e->value, "sources"), rc, sub) != 0)
        return -1;
    if (parse_route_steps(L, e->file, path, json_object_get(e->value, "steps"), rc, sub) != 0)
        return -1;
    const json_t *x;
    if ((x = json_object_get(e->value, "match"))) {
        subpath(sub, "%s.match", path);
        if (!json_is_object(x))
            return fail_type(L, e->file, *sub, "a condition object", x);
        char msg[1024];
        sb_match *m = sb_match_compile(x, *sub, msg, sizeof msg);
        if (!m)
            return sb_err(L->errstr, L->errstr_size, "%s: %s", e->file, msg);
        sb_match_free(m);
        rc->match = json_deep_copy(x);
    }
    if ((x = json_object_get(e->value, "max_inflight")) &&
        get_int(L, e->file, subpath(sub, "%s.max_inflight", path), x, 1, INT64_MAX, &rc->max_inflight) != 0)
        return -1;
    if ((x = json_object_get(e->value, "max_inflight_bytes")) &&
        get_scaled(L, e->file, subpath(sub, "%s.max_inflight_bytes", path), x, 1, &rc->max_inflight_bytes) != 0)
        return -1;
    return 0;
}

static int parse_route(loader *L, const entry *e, sb_route_conf *rc)
{
    rc->name = sb_strdup(e->name);
    rc->file = sb_strdup(e->file);
    rc->max_inflight = L->c->max_inflight;
    rc->max_inflight_bytes = L->c->max_inflight_bytes;
    char *path = sb_asprintf("routes.%s", e->name), *sub = NULL;
    int ret = parse_route_body(L, e, path, rc, &sub);
    free(sub);
    free(path);
    return ret;
}

/* ---- entry points ----------------------------------------------------------- */

static void set_defaults(sb_config *c, const char *main_file)
{
    c->main_file = sb_strdup(main_file);
    c->state_dir = sb_strdup(SB_DEFAULT_STATE_DIR);
    c->log_level = SB_LOG_INFO;
    c->log_target = sb_strdup("stderr");
    c->shutdown_timeout_ms = 30000;
    c->fsync = SB_FSYNC_PROCESS;
    c->retention_ms = 7LL * 86400000;
    c->commit_interval_ms = 5;
    c->ledger_check_at_start = 1;
    c->max_inflight = 10000;
    c->max_inflight_bytes = 64LL * 1024 * 1024;
    c->admin_bind = sb_strdup("127.0.0.1");
    c->admin_port = 8686;
}

/* conf_d relative to the main file's directory; plugin dirs end with the default. */
static void finish_paths(sb_config *c)
{
    const char *slash = strrchr(c->main_file, '/');
    int dir_len = slash ? (int)(slash - c->main_file) : 0;
    if (!c->conf_d) {
        c->conf_d = slash ? sb_asprintf("%.*s/conf.d", dir_len, c->main_file) : sb_strdup("conf.d");
    } else if (c->conf_d[0] != '/' && slash) {
        char *abs = sb_asprintf("%.*s/%s", dir_len, c->main_file, c->conf_d);
        free(c->conf_d);
        c->conf_d = abs;
    }
    if (!c->plugin_dirs)
        c->plugin_dirs = sb_xcalloc(1, sizeof *c->plugin_dirs);
    c->plugin_dirs[c->n_plugin_dirs++] = sb_strdup(SB_DEFAULT_PLUGIN_DIR);
}

static void loader_free(loader *L)
{
    for (size_t i = 0; i < L->n_files; i++) {
        free(L->files[i]);
        json_decref(L->roots[i]);
    }
    free(L->files);
    free(L->roots);
    free(L->inst);
    free(L->routes);
}

sb_config *sb_config_load(const char *main_file, char *errstr, size_t errstr_size)
{
    sb_config *c = sb_xcalloc(1, sizeof *c);
    loader L = {.c = c, .errstr = errstr, .errstr_size = errstr_size};
    set_defaults(c, main_file);
    int rc = -1;
    const json_t *root = load_json(&L, main_file);
    if (!root || parse_core(&L, main_file, root) != 0)
        goto out;
    finish_paths(c);
    if (collect_sections(&L, L.files[0], root) != 0 || load_dropins(&L) != 0)
        goto out;
    c->instances = sb_xcalloc(L.n_inst, sizeof *c->instances);
    for (size_t i = 0; i < L.n_inst; i++) {
        c->n_instances++;
        if (parse_instance(&L, &L.inst[i], &c->instances[i]) != 0)
            goto out;
    }
    c->routes = sb_xcalloc(L.n_routes, sizeof *c->routes);
    for (size_t i = 0; i < L.n_routes; i++) {
        c->n_routes++;
        if (parse_route(&L, &L.routes[i], &c->routes[i]) != 0)
            goto out;
    }
    rc = 0;
out:
    loader_free(&L);
    if (rc != 0) {
        sb_config_free(c);
        return NULL;
    }
    return c;
}

void sb_config_free(sb_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_instances; i++) {
        sb_instance_conf *ic = &c->instances[i];
        free(ic->name);
        free(ic->plugin);
        free(ic->file);
        json_decref(ic->options);
    }
    free(c->instances);
    for (size_t i = 0; i < c->n_routes; i++) {
        sb_route_conf *r = &c->routes[i];
        free(r->name);
        free(r->file);
        for (size_t j = 0; j < r->n_sources; j++)
            free(r->sources[j]);
        free(r->sources);
        json_decref(r->match);
        for (size_t j = 0; j < r->n_steps; j++) {
            for (size_t k = 0; k < r->steps[j].n; k++)
                free(r->steps[j].instances[k]);
            free(r->steps[j].instances);
        }
        free(r->steps);
    }
    free(c->routes);
    for (size_t i = 0; i < c->n_plugin_dirs; i++)
        free(c->plugin_dirs[i]);
    free(c->plugin_dirs);
    free(c->main_file);
    free(c->conf_d);
    free(c->state_dir);
    free(c->log_target);
    free(c->admin_bind);
    free(c);
}

const sb_instance_conf *sb_config_instance(const sb_config *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->n_instances; i++)
        if (strcmp(c->instances[i].name, name) == 0)
            return &c->instances[i];
    return NULL;
}
