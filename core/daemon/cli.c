/* cli.c - check, plugins, runs and dlq commands. */
#include "build_config.h"
#include "daemon/cli.h"
#include "config/config.h"
#include "daemon/daemon.h"
#include "engine/loader.h"
#include "log/log_internal.h"
#include "config/options_internal.h"
#include "engine/router.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sb_cli_check(const sb_cli_opts *o)
{
    char err[2048];
    sb_config *cfg = sb_config_load(o->config_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "syncbridge: %s\n", err);
        return SB_EXIT_CONFIG;
    }
    sb_registry *reg = sb_registry_new(cfg->plugin_dirs, cfg->n_plugin_dirs);
    sb_registry_allow_insecure(reg, cfg->allow_insecure_plugins);
    /* once=1: instances are created but never started; no ledger needed */
    sb_router *r = sb_router_new(cfg, reg, NULL, 1, err, sizeof err);
    int rc = SB_EXIT_OK;
    if (!r) {
        fprintf(stderr, "syncbridge: %s\n", err);
        rc = SB_EXIT_CONFIG;
    } else {
        printf("configuration %s is valid: %zu instances, %zu routes\n", o->config_path, cfg->n_instances,
               cfg->n_routes);
        sb_router_describe(r, stdout);
    }
    sb_router_free(r);
    sb_registry_free(reg);
    sb_config_free(cfg);
    return rc;
}

static void print_load_error(const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "syncbridge: %s\n", msg);
}

int sb_cli_plugins(const sb_cli_opts *o, const char *name)
{
    char err[2048];
    char **dirs = NULL;
    size_t n_dirs = 0;
    sb_config *cfg = NULL;
    if (o->config_path) {
        cfg = sb_config_load(o->config_path, err, sizeof err);
        if (!cfg) { /* its plugin_path matters: do not fall back silently */
            fprintf(stderr, "syncbridge: %s\n", err);
            return SB_EXIT_CONFIG;
        }
        dirs = cfg->plugin_dirs;
        n_dirs = cfg->n_plugin_dirs;
    }
    sb_registry *reg = sb_registry_new(dirs, n_dirs);
    sb_registry_allow_insecure(reg, cfg && cfg->allow_insecure_plugins);
    int rc = SB_EXIT_OK;
    if (name) {
        const sb_plugin *p = strchr(name, '/') ? sb_registry_load_file(reg, name, err, sizeof err)
                                               : sb_registry_get(reg, name, 0, NULL, err, sizeof err);
        if (!p) {
            fprintf(stderr, "syncbridge: %s\n", err);
            rc = SB_EXIT_CONFIG;
        } else {
            sb_options_print_doc(stdout, p);
        }
    } else {
        sb_registry_load_all(reg, print_load_error, NULL);
        for (size_t i = 0; i < sb_registry_count(reg); i++) {
            const char *path;
            const sb_plugin *p = sb_registry_at(reg, i, &path);
            printf("%-14s %-7s %-8s %s\n", p->name, sb_plugin_kind_name(p->kind), p->version, p->description);
        }
    }
    sb_registry_free(reg);
    sb_config_free(cfg);
    return rc;
}

/* The state directory: --state-dir, else the config's (malloc'd). */
static char *state_dir_of(const sb_cli_opts *o)
{
    char err[2048];
    if (o->state_dir)
        return sb_strdup(o->state_dir);
    sb_config *cfg = sb_config_load(o->config_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "syncbridge: %s (or give --state-dir)\n", err);
        return NULL;
    }
    char *dir = sb_strdup(cfg->state_dir);
    sb_config_free(cfg);
    return dir;
}

int sb_cli_ledger(const sb_cli_opts *o, int argc, char **argv)
{
    char err[2048];
    int check = argc == 1 && strcmp(argv[0], "check") == 0;
    if (!check && !(argc == 1 && strcmp(argv[0], "recover") == 0)) {
        fprintf(stderr, "syncbridge: usage: syncbridge ledger check | ledger recover\n");
        return SB_EXIT_USAGE;
    }
    char *dir = state_dir_of(o);
    if (!dir)
        return SB_EXIT_FAILURE;
    int rc;
    if (check) {
        rc = sb_ledger_check(dir, stdout, err, sizeof err);
        if (rc < 0)
            fprintf(stderr, "syncbridge: %s\n", err);
        rc = rc == 0 ? SB_EXIT_OK : SB_EXIT_FAILURE;
    } else if (sb_ledger_lock(dir, err, sizeof err) < 0) { /* the daemon must be stopped */
        fprintf(stderr, "syncbridge: %s\n", err);
        rc = SB_EXIT_FAILURE;
    } else {
        rc = sb_ledger_recover(dir, stdout, err, sizeof err) == 0 ? SB_EXIT_OK : SB_EXIT_FAILURE;
        if (rc != SB_EXIT_OK)
            fprintf(stderr, "syncbridge: ledger recover: %s\n", err);
    }
    free(dir);
    return rc;
}

static sb_ledger *open_ledger(const sb_cli_opts *o)
{
    char err[2048];
    char *dir = state_dir_of(o);
    if (!dir)
        return NULL;
    sb_ledger_opts lo = {.fsync = SB_FSYNC_PROCESS, .commit_interval_ms = 1, .retention_ms = 0, .beside_daemon = 1};
    sb_ledger *l = sb_ledger_open(dir, &lo, err, sizeof err);
    if (!l)
        fprintf(stderr, "syncbridge: run ledger in %s: %s\n", dir, err);
    free(dir);
    return l;
}

/* Copy at most `width` characters of UTF-8 `s` into dst, cut on a
 * character boundary (a cut value ends with "~"), padded with spaces to
 * `width` columns. Columns count characters, not bytes, so a multi-byte
 * name neither splits a character nor shifts the columns after it. */
static void fit_column(char *dst, size_t dstsz, const char *s, size_t width)
{
    size_t used = 0, chars = 0, i = 0, len = s ? strlen(s) : 0;
    while (i < len && chars < width) {
        size_t n = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xf0)
            n = 4;
        else if (c >= 0xe0)
            n = 3;
        else if (c >= 0xc0)
            n = 2;
        if (i + n > len)
            break;
        /* the last column of a value that does not fit takes the cut mark */
        if (chars == width - 1 && i + n < len)
            break;
        if (used + n + 1 > dstsz)
            break;
        memcpy(dst + used, s + i, n);
        used += n;
        i += n;
        chars++;
    }
    if (i < len && used + 2 <= dstsz) {
        dst[used++] = '~';
        chars++;
    }
    while (chars < width && used + 2 <= dstsz) {
        dst[used++] = ' ';
        chars++;
    }
    dst[used] = '\0';
}

static void fmt_time(int64_t us, char *buf, size_t n)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void print_entries(json_t *arr)
{
    printf("%-8s %-8s %-14s %-5s %-4s %-20s %-36s %s\n", "ID", "STATE", "ROUTE", "STEP", "TRY", "RECEIVED", "RUN",
           "ERROR");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        json_t *f = json_object_get(e, "fields");
        const char *schema = json_string_value(json_object_get(f, "schema"));
        const char *table = json_string_value(json_object_get(f, "table"));
        const char *status = json_string_value(json_object_get(f, "status"));
        char *run, ts[32], run_col[36 * 4 + 1], route_col[14 * 4 + 1];
        if (schema && table)
            run = sb_asprintf("%s.%s%s%s", schema, table, status ? " " : "", status ? status : "");
        else
            run = sb_strdup(json_string_value(json_object_get(e, "event_id")));
        fit_column(run_col, sizeof run_col, run, 36);
        fit_column(route_col, sizeof route_col, json_string_value(json_object_get(e, "route")), 14);
        free(run);
        fmt_time(json_integer_value(json_object_get(e, "received_us")), ts, sizeof ts);
        const char *error = json_string_value(json_object_get(e, "error"));
        const char *state = json_string_value(json_object_get(e, "state")); /* the ledger's view names it */
        printf("%-8lld %-8s %s %-5lld %-4lld %-20s %s %s\n",
               (long long)json_integer_value(json_object_get(e, "entry_id")), state ? state : "?", route_col,
               (long long)json_integer_value(json_object_get(e, "next_step")) + 1,
               (long long)json_integer_value(json_object_get(e, "attempts")), ts, run_col, error ? error : "");
    }
}

static int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    if (s)
        puts(s);
    free(s);
    return SB_EXIT_OK;
}

static int list_entries(sb_ledger *l, const sb_cli_opts *o, const sb_ledger_filter *f)
{
    char err[1024];
    json_t *arr = sb_ledger_list(l, f, err, sizeof err);
    if (!arr) {
        fprintf(stderr, "syncbridge: %s\n", err);
        return SB_EXIT_FAILURE;
    }
    if (o->json)
        print_json(arr);
    else
        print_entries(arr);
    json_decref(arr);
    return SB_EXIT_OK;
}

static int parse_id(const char *s, int64_t *id)
{
    char *end;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || *end || v <= 0) {
        fprintf(stderr, "syncbridge: \"%s\" is not a ledger entry id (a positive integer from `syncbridge runs`)\n",
                s ? s : "");
        return -1;
    }
    *id = v;
    return 0;
}

int sb_cli_runs(const sb_cli_opts *o, int argc, char **argv)
{
    sb_ledger *l = open_ledger(o);
    if (!l)
        return SB_EXIT_FAILURE;
    int rc = SB_EXIT_OK;
    char err[1024];
    if (argc == 0 || strcmp(argv[0], "list") == 0) {
        rc = list_entries(l, o, &o->filter);
    } else if (strcmp(argv[0], "show") == 0 && argc == 2) {
        int64_t id;
        json_t *e = NULL;
        if (parse_id(argv[1], &id) != 0)
            rc = SB_EXIT_USAGE;
        else if (!(e = sb_ledger_show(l, id, err, sizeof err))) {
            fprintf(stderr, "syncbridge: %s\n", err);
            rc = SB_EXIT_FAILURE;
        } else {
            print_json(e);
        }
        json_decref(e);
    } else {
        fprintf(stderr, "syncbridge: usage: syncbridge runs [list] [filters] | runs show ID\n");
        rc = SB_EXIT_USAGE;
    }
    sb_ledger_close(l);
    return rc;
}

int sb_cli_dlq(const sb_cli_opts *o, int argc, char **argv)
{
    const char *verb = argc ? argv[0] : "list";
    int replay = strcmp(verb, "replay") == 0, drop = strcmp(verb, "drop") == 0;
    if (!replay && !drop && strcmp(verb, "list") != 0) {
        fprintf(stderr, "syncbridge: usage: syncbridge dlq list | dlq replay ID|--all | dlq drop ID|--all\n");
        return SB_EXIT_USAGE;
    }
    int64_t id = 0;
    if ((replay || drop) && !o->all && (argc != 2 || parse_id(argv[1], &id) != 0)) {
        if (argc != 2)
            fprintf(stderr, "syncbridge: dlq %s needs an entry id or --all\n", verb);
        return SB_EXIT_USAGE;
    }
    sb_ledger *l = open_ledger(o);
    if (!l)
        return SB_EXIT_FAILURE;
    int rc = SB_EXIT_OK;
    char err[1024];
    if (!replay && !drop) {
        sb_ledger_filter f = o->filter;
        f.state = SB_ENTRY_DEAD;
        rc = list_entries(l, o, &f);
    } else {
        if (drop)
            sb_cli_dlq_cancel(o, l, id);
        int n = replay ? sb_ledger_dlq_replay(l, id, o->filter.route, err, sizeof err)
                       : sb_ledger_dlq_drop(l, id, o->filter.route, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "syncbridge: %s\n", err);
            rc = SB_EXIT_FAILURE;
        } else {
            printf("%s %d dead-lettered entr%s%s\n", replay ? "replaying" : "dropped", n, n == 1 ? "y" : "ies",
                   replay ? " (a running daemon picks them up within seconds)" : "");
        }
    }
    sb_ledger_close(l);
    return rc;
}
