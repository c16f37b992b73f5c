/* reconcile.c - `syncbridge reconcile`: the on-prem runs (the run ledger
 * and the registry's onprem rows) against the gcp rows in BigQuery and the
 * rows in Cloud SQL, read through the plugins' registry_rows(). Lists the
 * runs that never reached GCP, gcp rows pending too long, runs with some
 * row missing, and rows with no on-prem run; --republish sends the missing
 * ones through their route again. */
#include "build_config.h"
#include "daemon/cli.h"
#include "daemon/cli_instances.h"
#include "daemon/daemon.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_SINCE_MS (7LL * 86400 * 1000)
#define DEFAULT_PENDING_AFTER_MS (6LL * 3600 * 1000)

/* runs: "<run id>" -> {"id", "ledger": {...}, "<store>": {"onprem": ts|null, "gcp": ts|null}} */
static json_t *rec_of(json_t *runs, json_int_t id)
{
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)id);
    json_t *r = json_object_get(runs, key);
    if (!r) {
        r = json_pack("{s:I}", "id", id);
        json_object_set_new(runs, key, r);
    }
    return r;
}

static int run_id_of(json_t *fields, json_int_t *out)
{
    json_t *v = json_object_get(fields, "run_id");
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    char *end = NULL;
    long long n = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end)
        return -1;
    *out = n;
    return 0;
}

/* Rows of every instance that keeps a registry; -1 when one could not be read. */
static int read_registries(sb_cli_instances *c, int64_t since_us, json_t *runs, json_t *stores)
{
    int rc = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->ins[i])
            continue;
        sb_registry_rows_fn fn = sb_plugin_registry_rows(c->ins[i]->plugin);
        if (!fn)
            continue;
        json_t *rows = NULL;
        char err[1024] = "";
        if (fn(c->ins[i]->self, since_us, &rows, err, sizeof err) != 0) {
            fprintf(stderr, "syncbridge: reconcile: %s (%s): %s\n", c->ins[i]->name, c->ins[i]->plugin->name, err);
            rc = -1;
            continue;
        }
        if (!rows)
            continue;
        const char *store = c->ins[i]->plugin->name;
        json_object_set_new(stores, store, json_true());
        size_t k;
        json_t *row;
        json_array_foreach(rows, k, row)
        {
            const char *src = json_string_value(json_object_get(row, "source"));
            json_t *ts = json_object_get(row, "timestamp");
            int64_t us;
            if (!src || (strcmp(src, "onprem") != 0 && strcmp(src, "gcp") != 0))
                continue;
            /* a row settled before the window belongs to an older run */
            if (json_is_string(ts) && sb_parse_iso8601_us(json_string_value(ts), &us) == 0 && us < since_us &&
                strcmp(store, "bigquery") != 0)
                continue;
            json_t *r = rec_of(runs, json_integer_value(json_object_get(row, "id")));
            json_t *s = json_object_get(r, store);
            if (!s) {
                s = json_object();
                json_object_set_new(r, store, s);
            }
            json_object_set(s, src, ts ? ts : json_null());
        }
        json_decref(rows);
    }
    return rc;
}

/* The runs the ledger holds (received since since_us), newest entry per run. */
static int read_ledger(sb_ledger *l, int64_t since_us, json_t *runs)
{
    char err[1024];
    sb_ledger_filter f = {.state = -1, .since_us = since_us, .limit = (size_t)1 << 30};
    json_t *arr = sb_ledger_list(l, &f, err, sizeof err);
    if (!arr) {
        fprintf(stderr, "syncbridge: reconcile: run ledger: %s\n", err);
        return -1;
    }
    size_t i, unknown = 0;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        json_t *fields = json_object_get(e, "fields");
        json_int_t id;
        if (!json_is_object(fields)) {
            unknown++; /* its payload was dropped when it settled */
            continue;
        }
        if (run_id_of(fields, &id) != 0)
            continue;
        json_t *r = rec_of(runs, id);
        if (json_object_get(r, "ledger"))
            continue; /* newest first: keep the newest entry */
        json_t *led = json_pack("{s:O, s:O, s:O, s:O}", "entry_id", json_object_get(e, "entry_id"), "route",
                                json_object_get(e, "route"), "state", json_object_get(e, "state"), "event_id",
                                json_object_get(e, "event_id"));
        const char *keys[] = {"schema", "table", "command", "finished_at", "status"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (json_object_get(fields, keys[k]))
                json_object_set(led, keys[k], json_object_get(fields, keys[k]));
        json_object_set_new(r, "ledger", led);
    }
    json_decref(arr);
    if (unknown) {
        fprintf(stderr,
                "syncbridge: reconcile: %zu ledger entr%s in the window keep no payload (ledger.keep_payload: "
                "until_settled), so their runs cannot be compared; reconcile needs keep_payload: always\n",
                unknown, unknown == 1 ? "y" : "ies");
        return -1;
    }
    return 0;
}

/* The on-prem finish of a run: its onprem registry row, else the ledger's finished_at; 0 when unknown. */
static int64_t finished_of(json_t *r)
{
    int64_t us;
    const char *s = json_string_value(json_object_get(json_object_get(r, "bigquery"), "onprem"));
    if (s && sb_parse_iso8601_us(s, &us) == 0)
        return us;
    s = json_string_value(json_object_get(json_object_get(r, "cloudsql"), "onprem"));
    if (s && sb_parse_iso8601_us(s, &us) == 0)
        return us;
    s = json_string_value(json_object_get(json_object_get(r, "ledger"), "finished_at"));
    if (s && sb_parse_iso8601_us(s, &us) == 0)
        return us;
    return 0;
}

static json_t *keys_of(json_t *obj)
{
    json_t *a = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) json_array_append_new(a, json_string(k));
    return a;
}

static int has_row(json_t *r, const char *store, const char *source)
{
    return json_object_get(json_object_get(r, store), source) != NULL;
}

/* The step of the entry's route that publishes (its first step with a
 * pubsub member), else 0: the whole route again. */
static int publish_step(const sb_config *cfg, const char *route)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const sb_route_conf *rc = &cfg->routes[i];
        if (strcmp(rc->name, route) != 0)
            continue;
        for (size_t s = 0; s < rc->n_steps; s++)
            for (size_t m = 0; m < rc->steps[s].n; m++)
                for (size_t k = 0; k < cfg->n_instances; k++)
                    if (strcmp(cfg->instances[k].name, rc->steps[s].instances[m]) == 0 &&
                        strcmp(cfg->instances[k].plugin, "pubsub") == 0)
                        return (int)s;
    }
    return 0;
}

static void item_add(json_t *list, json_t *r, const char *why, json_t *missing)
{
    json_t *it = json_pack("{s:O, s:s}", "run_id", json_object_get(r, "id"), "why", why);
    json_t *led = json_object_get(r, "ledger");
    if (led)
        json_object_set(it, "ledger", led);
    const char *stores[] = {"bigquery", "cloudsql"};
    for (size_t i = 0; i < 2; i++)
        if (json_object_get(r, stores[i]))
            json_object_set(it, stores[i], json_object_get(r, stores[i]));
    if (missing)
        json_object_set_new(it, "missing", missing);
    int64_t fin = finished_of(r);
    if (fin) {
        char ts[32];
        time_t t = (time_t)(fin / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(it, "onprem_finished_at", json_string(ts));
    }
    json_array_append_new(list, it);
}

static void print_items(const char *title, json_t *list)
{
    printf("%s: %zu\n", title, json_array_size(list));
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
    {
        json_t *led = json_object_get(it, "ledger");
        const char *schema = json_string_value(json_object_get(led, "schema"));
        const char *table = json_string_value(json_object_get(led, "table"));
        printf("  run %lld", (long long)json_integer_value(json_object_get(it, "run_id")));
        if (schema && table)
            printf(" %s.%s", schema, table);
        if (json_object_get(it, "onprem_finished_at"))
            printf(" finished %s", json_string_value(json_object_get(it, "onprem_finished_at")));
        if (led)
            printf(" (ledger entry %lld, %s, route %s)", (long long)json_integer_value(json_object_get(led, "entry_id")),
                   json_string_value(json_object_get(led, "state")), json_string_value(json_object_get(led, "route")));
        printf(": %s", json_string_value(json_object_get(it, "why")));
        json_t *m = json_object_get(it, "missing"), *x;
        size_t k;
        if (json_array_size(m)) {
            printf(" (missing:");
            json_array_foreach(m, k, x) printf(" %s", json_string_value(x));
            printf(")");
        }
        if (json_object_get(it, "republished"))
            printf(" -> %s", json_string_value(json_object_get(it, "republished")));
        printf("\n");
    }
}

/* NULL with *broken set when a ledger is there but does not open. */
static sb_ledger *open_existing_ledger(const char *dir, int *broken)
{
    char *path = sb_asprintf("%s/ledger.db", dir);
    struct stat st;
    int exists = stat(path, &st) == 0;
    free(path);
    if (!exists)
        return NULL;
    char err[1024];
    sb_ledger_opts lo = {.fsync = SB_FSYNC_PROCESS, .commit_interval_ms = 1, .retention_ms = 0, .beside_daemon = 1};
    sb_ledger *l = sb_ledger_open(dir, &lo, err, sizeof err);
    if (!l) {
        fprintf(stderr, "syncbridge: reconcile: run ledger in %s: %s\n", dir, err);
        *broken = 1;
    }
    return l;
}

int sb_cli_reconcile(const sb_cli_opts *o)
{
    char err[2048];
    int64_t now = sb_now_us();
    int64_t since_us = o->filter.since_us ? o->filter.since_us : now - DEFAULT_SINCE_MS * 1000;
    int64_t after_us = (o->pending_after_ms > 0 ? o->pending_after_ms : DEFAULT_PENDING_AFTER_MS) * 1000;
    sb_cli_instances *c = sb_cli_instances_open(o->config_path, err, sizeof err);
    if (!c) {
        fprintf(stderr, "syncbridge: %s\n", err);
        return SB_EXIT_CONFIG;
    }
    for (size_t i = 0; i < c->n; i++)
        if (!c->ins[i] && c->errors[i]) {
            fprintf(stderr, "syncbridge: %s\n", c->errors[i]);
            sb_cli_instances_free(c);
            return SB_EXIT_CONFIG;
        }
    json_t *runs = json_object(), *stores = json_object();
    int failed = read_registries(c, since_us, runs, stores) != 0;
    int broken = 0;
    sb_ledger *l = open_existing_ledger(o->state_dir ? o->state_dir : c->cfg->state_dir, &broken);
    if (broken)
        failed = 1;
    if (l && read_ledger(l, since_us, runs) != 0)
        failed = 1;
    int have_bq = json_object_get(stores, "bigquery") != NULL, have_sql = json_object_get(stores, "cloudsql") != NULL;

    json_t *missing = json_array(), *pending = json_array(), *incomplete = json_array(), *orphans = json_array();
    const char *key;
    json_t *r;
    size_t checked = 0;
    json_object_foreach(runs, key, r)
    {
        int in_ledger = json_object_get(r, "ledger") != NULL;
        int onprem = in_ledger || has_row(r, "bigquery", "onprem") || has_row(r, "cloudsql", "onprem");
        if (!onprem) {
            item_add(orphans, r, "registry rows with no on-prem run (no onprem row, not in the ledger)", NULL);
            continue;
        }
        checked++;
        if (!have_bq && !have_sql)
            continue;
        int reached = have_bq ? json_object_get(r, "bigquery") != NULL : json_object_get(r, "cloudsql") != NULL;
        if (!reached) {
            item_add(missing, r, "never reached GCP: no registry row", NULL);
            continue;
        }
        json_t *lack = json_array();
        if (have_bq && !has_row(r, "bigquery", "onprem"))
            json_array_append_new(lack, json_string("bigquery onprem row"));
        if (have_bq && !has_row(r, "bigquery", "gcp"))
            json_array_append_new(lack, json_string("bigquery gcp row"));
        json_t *gcp_ts = json_object_get(json_object_get(r, "bigquery"), "gcp");
        int bq_done = gcp_ts && !json_is_null(gcp_ts);
        if (have_sql && !has_row(r, "cloudsql", "gcp") && (bq_done || !have_bq))
            json_array_append_new(lack, json_string("cloudsql gcp row"));
        if (json_array_size(lack)) {
            item_add(incomplete, r, "some registry rows are missing", lack);
            continue;
        }
        json_decref(lack);
        int64_t fin = finished_of(r);
        if (have_bq && json_is_null(gcp_ts) && fin && now - fin > after_us)
            item_add(pending, r, "the gcp row is still pending", NULL);
    }

    json_t *republished = json_array();
    if (o->republish) {
        size_t i;
        json_t *it;
        json_array_foreach(missing, i, it)
        {
            json_t *led = json_object_get(it, "ledger");
            const char *state = json_string_value(json_object_get(led, "state"));
            if (!led || !l) {
                json_object_set_new(it, "republished", json_string("not in this node's ledger: republish it from "
                                                                   "the node that ran it"));
                continue;
            }
            if (state && strcmp(state, "pending") == 0) {
                json_object_set_new(it, "republished", json_string("still pending in the ledger: on its way"));
                continue;
            }
            int64_t eid = json_integer_value(json_object_get(led, "entry_id"));
            int step = publish_step(c->cfg, json_string_value(json_object_get(led, "route")));
            int n = sb_ledger_republish(l, eid, step, err, sizeof err);
            if (n < 0) {
                fprintf(stderr, "syncbridge: reconcile: republish entry %lld: %s\n", (long long)eid, err);
                failed = 1;
                json_object_set_new(it, "republished", json_string("failed"));
            } else if (n == 0) {
                json_object_set_new(it, "republished", json_string("not requeued: the entry is pending or gone"));
            } else {
                char *msg = sb_asprintf("requeued at step %d of route %s", step + 1,
                                        json_string_value(json_object_get(led, "route")));
                json_object_set_new(it, "republished", json_string(msg));
                free(msg);
                json_array_append_new(republished, json_integer(eid));
            }
        }
    }

    char since_s[32];
    time_t st = (time_t)(since_us / 1000000);
    struct tm tm;
    gmtime_r(&st, &tm);
    strftime(since_s, sizeof since_s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (o->json) {
        json_t *out = json_pack("{s:s, s:I, s:o, s:b, s:I, s:O, s:O, s:O, s:O, s:O}", "since", since_s,
                                "pending_after_s", (json_int_t)(after_us / 1000000), "registries", keys_of(stores),
                                "ledger", l != NULL, "runs", (json_int_t)checked, "missing", missing, "pending",
                                pending, "incomplete", incomplete, "orphans", orphans, "republished", republished);
        char *s = json_dumps(out, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
        json_decref(out);
    } else {
        printf("reconcile since %s: %zu on-prem runs (%s%s%s), registries:%s%s%s\n", since_s, checked,
               l ? "ledger" : "no ledger here", have_bq ? ", bigquery onprem rows" : "",
               have_sql ? ", cloudsql" : "", have_bq ? " bigquery" : "", have_sql ? " cloudsql" : "",
               !have_bq && !have_sql ? " none configured (nothing to compare with)" : "");
        print_items("never reached GCP", missing);
        print_items("gcp row pending too long", pending);
        print_items("rows missing", incomplete);
        print_items("rows with no on-prem run", orphans);
        if (o->republish)
            printf("republished: %zu (a running daemon picks them up within seconds)\n", json_array_size(republished));
    }
    int found = json_array_size(missing) || json_array_size(pending) || json_array_size(incomplete) ||
                json_array_size(orphans);
    json_decref(missing);
    json_decref(pending);
    json_decref(incomplete);
    json_decref(orphans);
    json_decref(republished);
    json_decref(runs);
    json_decref(stores);
    sb_ledger_close(l);
    sb_cli_instances_free(c);
    return failed ? SB_EXIT_FAILURE : found ? SB_EXIT_DISCREPANCY : SB_EXIT_OK;
}
