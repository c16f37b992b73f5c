/*
 * test_admin.c - the admin endpoint in-process: a real router (testsrc ->
 * testsink) and ledger behind libmicrohttpd on an ephemeral port; checks
 * /healthz, /readyz (ready, detached router, stalled step), /api/runs
 * filters and errors, and /metrics against an exact parser of the text
 * exposition format 0.0.4 (plus `promtool check metrics` when installed),
 * including histogram invariants and a registered contributor.
 */
#include "build_config.h"
#include "ops/admin.h"
#include "config/config.h"
#include "ledger/ledger.h"
#include "engine/loader.h"
#include "ops/metrics.h"
#include "engine/router.h"
#include "testutil.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <syncbridge/metrics.h>

static char err[4096];

typedef struct env {
    char *dir;
    sb_config *cfg;
    sb_registry *reg;
    sb_ledger *ledger;
    sb_router *router;
    sb_admin *admin;
} env;

static void env_start(env *e, const char *cfg_tpl, int64_t stuck_us)
{
    memset(e, 0, sizeof *e);
    e->dir = tu_mkdtemp();
    size_t dl = strlen(e->dir);
    char *text = sb_xmalloc(strlen(cfg_tpl) * (dl + 1) + 1), *o = text;
    for (const char *p = cfg_tpl; *p;)
        if (strncmp(p, "@D@", 3) == 0) {
            memcpy(o, e->dir, dl);
            o += dl;
            p += 3;
        } else {
            *o++ = *p++;
        }
    *o = '\0';
    char *path = tu_write(e->dir, "syncbridge.json", text);
    e->cfg = sb_config_load(path, err, sizeof err);
    ck_assert_msg(e->cfg != NULL, "config: %s", err);
    sb_ledger_opts lo = {.fsync = SB_FSYNC_PROCESS, .commit_interval_ms = 2, .retention_ms = 86400000};
    e->ledger = sb_ledger_open(e->cfg->state_dir, &lo, err, sizeof err);
    ck_assert_msg(e->ledger != NULL, "ledger: %s", err);
    e->reg = sb_registry_new(e->cfg->plugin_dirs, e->cfg->n_plugin_dirs);
    e->router = sb_router_new(e->cfg, e->reg, e->ledger, 0, err, sizeof err);
    ck_assert_msg(e->router != NULL, "router: %s", err);
    ck_assert_msg(sb_router_start(e->router, err, sizeof err) == 0, "start: %s", err);
    sb_admin_opts ao = {.bind = "127.0.0.1", .port = 0, .ledger = e->ledger, .state_dir = e->cfg->state_dir,
                        .stuck_after_us = stuck_us};
    e->admin = sb_admin_start(&ao, err, sizeof err);
    ck_assert_msg(e->admin != NULL, "admin: %s", err);
    ck_assert_int_gt(sb_admin_port(e->admin), 0);
    sb_admin_set_router(e->admin, e->router);
    free(text);
    free(path);
}

static void env_stop(env *e)
{
    sb_admin_set_router(e->admin, NULL);
    sb_admin_stop(e->admin);
    sb_router_stop(e->router, 30000);
    sb_router_free(e->router);
    sb_registry_free(e->reg);
    sb_ledger_close(e->ledger);
    sb_config_free(e->cfg);
    tu_rmrf(e->dir);
    free(e->dir);
}

/* GET path; returns the status, *body is malloc'd (after the headers). */
static int http_get(env *e, const char *method, const char *path, char **body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sb_admin_port(e->admin))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", method, path);
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    close(fd);
    int status = 0;
    ck_assert_int_eq(sscanf(buf, "HTTP/1.1 %d", &status), 1);
    char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
    free(buf);
    return status;
}

/* ---- an exact parser of the Prometheus text format 0.0.4 ---------------- */

typedef struct family {
    char name[128], type[16];
    int has_help, samples;
} family;

static int valid_metric_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

static int valid_value(const char *s)
{
    if (strcmp(s, "+Inf") == 0 || strcmp(s, "-Inf") == 0 || strcmp(s, "NaN") == 0)
        return 1;
    char *end;
    strtod(s, &end);
    return end != s && *end == '\0';
}

/* Parse one sample line into name, the value of label `want` (if any) and
 * value; fails the test on any syntax error. */
static void parse_sample(const char *line, char *name, size_t namesz, const char *want, char *wantv, size_t wantsz,
                         double *value)
{
    const char *p = line;
    size_t n = strcspn(p, "{ ");
    ck_assert_msg(valid_metric_name(p, n), "bad metric name: %s", line);
    ck_assert(n < namesz);
    memcpy(name, p, n);
    name[n] = '\0';
    p += n;
    if (wantv)
        wantv[0] = '\0';
    if (*p == '{') {
        p++;
        while (*p != '}') {
            size_t ln = strcspn(p, "=");
            ck_assert_msg(valid_metric_name(p, ln) && p[ln] == '=' && p[ln + 1] == '"', "bad label: %s", line);
            int is_want = want && strlen(want) == ln && strncmp(p, want, ln) == 0;
            p += ln + 2;
            size_t o = 0;
            while (*p != '"') {
                ck_assert_msg(*p && *p != '\n', "unterminated label value: %s", line);
                if (*p == '\\') {
                    p++;
                    ck_assert_msg(*p == '\\' || *p == '"' || *p == 'n', "bad escape: %s", line);
                }
                if (is_want && wantv && o + 1 < wantsz)
                    wantv[o++] = *p;
                p++;
            }
            if (is_want && wantv)
                wantv[o] = '\0';
            p++;
            if (*p == ',')
                p++;
            else
                ck_assert_msg(*p == '}', "expected , or }: %s", line);
        }
        p++;
    }
    ck_assert_msg(*p == ' ', "expected a space before the value: %s", line);
    p++;
    char val[64];
    size_t vn = strcspn(p, " ");
    ck_assert(vn < sizeof val);
    memcpy(val, p, vn);
    val[vn] = '\0';
    ck_assert_msg(valid_value(val), "bad value: %s", line);
    if (p[vn] == ' ') { /* optional timestamp */
        char *end;
        strtoll(p + vn + 1, &end, 10);
        ck_assert_msg(*end == '\0', "bad timestamp: %s", line);
    }
    *value = strcmp(val, "+Inf") == 0 ? INFINITY : strtod(val, NULL);
}

/* Validate the whole exposition; returns the number of families. */
static int check_exposition(const char *text)
{
    family fams[256];
    int nf = 0, cur = -1;
    double last_bucket = -1, inf_bucket = -1;
    char hist_series[256] = "";
    ck_assert_msg(text[0] && text[strlen(text) - 1] == '\n', "exposition must end with a newline");
    char *copy = strdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            char kw[16], name[128], rest[512];
            rest[0] = '\0';
            int k = sscanf(line, "# %15s %127s %511[^\n]", kw, name, rest);
            if (k < 2 || (strcmp(kw, "HELP") != 0 && strcmp(kw, "TYPE") != 0))
                continue; /* a plain comment */
            int f = -1;
            for (int i = 0; i < nf; i++)
                if (strcmp(fams[i].name, name) == 0)
                    f = i;
            if (f < 0) {
                ck_assert(nf < 256);
                f = nf++;
                memset(&fams[f], 0, sizeof fams[f]);
                snprintf(fams[f].name, sizeof fams[f].name, "%s", name);
            } else {
                ck_assert_msg(f == cur, "family %s is not contiguous", name);
            }
            ck_assert_msg(fams[f].samples == 0, "%s %s after its samples", kw, name);
            if (strcmp(kw, "TYPE") == 0) {
                ck_assert_msg(!fams[f].type[0], "two TYPE lines for %s", name);
                ck_assert_msg(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 ||
                                  strcmp(rest, "histogram") == 0 || strcmp(rest, "summary") == 0 ||
                                  strcmp(rest, "untyped") == 0,
                              "bad type %s", rest);
                snprintf(fams[f].type, sizeof fams[f].type, "%.15s", rest);
            } else {
                ck_assert_msg(!fams[f].has_help, "two HELP lines for %s", name);
                fams[f].has_help = 1;
            }
            cur = f;
            continue;
        }
        char name[128], le[64];
        double v;
        parse_sample(line, name, sizeof name, "le", le, sizeof le, &v);
        ck_assert_msg(cur >= 0, "sample before any TYPE: %s", line);
        family *fm = &fams[cur];
        size_t bl = strlen(fm->name);
        if (strcmp(fm->type, "histogram") == 0) {
            ck_assert_msg(strncmp(name, fm->name, bl) == 0 &&
                              (strcmp(name + bl, "_bucket") == 0 || strcmp(name + bl, "_sum") == 0 ||
                               strcmp(name + bl, "_count") == 0),
                          "sample %s does not belong to histogram %s", name, fm->name);
            /* the series key: the line up to the le label */
            char series[256];
            snprintf(series, sizeof series, "%.*s", (int)(strstr(line, "le=") ? strstr(line, "le=") - line : 0), line);
            if (strcmp(name + bl, "_bucket") == 0) {
                ck_assert_msg(le[0], "bucket without le: %s", line);
                if (strcmp(series, hist_series) != 0) {
                    snprintf(hist_series, sizeof hist_series, "%s", series);
                    last_bucket = -1;
                }
                ck_assert_msg(v >= last_bucket, "buckets not cumulative: %s", line);
                last_bucket = v;
                if (strcmp(le, "+Inf") == 0)
                    inf_bucket = v;
            } else if (strcmp(name + bl, "_count") == 0) {
                ck_assert_msg(v == inf_bucket, "_count %g != +Inf bucket %g: %s", v, inf_bucket, line);
            }
        } else {
            ck_assert_msg(strcmp(name, fm->name) == 0, "sample %s inside family %s", name, fm->name);
            if (strcmp(fm->type, "counter") == 0)
                ck_assert_msg(v >= 0, "negative counter: %s", line);
        }
        fm->samples++;
    }
    for (int i = 0; i < nf; i++)
        ck_assert_msg(fams[i].type[0] && fams[i].has_help, "%s lacks HELP or TYPE", fams[i].name);
    free(copy);
    return nf;
}

static void promtool_check(env *e, const char *text)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        return;
    char *path = tu_write(e->dir, "metrics.txt", text);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s.out' 2>&1", path, path);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "%s.out", path);
    char *out = tu_slurp(cmd);
    ck_assert_msg(rc == 0, "promtool check metrics: %s", out ? out : "");
    free(out);
    free(path);
}

static void contributor(sb_metrics_out *out, void *ud)
{
    sb_metrics_printf(out, "# HELP sb_test_http_requests_total Test contributor.\n"
                           "# TYPE sb_test_http_requests_total counter\n");
    sb_metrics_printf(out, "sb_test_http_requests_total{plugin=\"");
    sb_metrics_label(out, (const char *)ud);
    sb_metrics_printf(out, "\",code=\"200\"} 7\n");
}

static const char *cfg_ok = "{\"state_dir\": \"@D@/state\","
                            " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 20, \"batch\": 5}},"
                            " \"sinks\": {\"out\": {\"plugin\": \"testsink\"}},"
                            " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"out\"]}}}";

static void wait_done(env *e, long long want)
{
    for (int i = 0; i < 3000; i++) {
        json_t *st = sb_router_stats(e->router);
        long long done = (long long)json_integer_value(json_object_get(
            json_object_get(json_object_get(st, "routes"), "r"), "done"));
        json_decref(st);
        if (done >= want)
            break;
        usleep(10000);
    }
    sb_ledger_sync(e->ledger);
}

START_TEST(health_readiness_and_errors)
{
    env e;
    env_start(&e, cfg_ok, 0);
    wait_done(&e, 20);
    char *body;
    ck_assert_int_eq(http_get(&e, "GET", "/healthz", &body), 200);
    ck_assert_str_eq(body, "ok\n");
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/readyz", &body), 200);
    ck_assert_msg(strstr(body, "\"ready\":true"), "%s", body);
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/nope", &body), 404);
    free(body);
    ck_assert_int_eq(http_get(&e, "POST", "/metrics", &body), 405);
    free(body);
    /* detached (as during a reload): not ready, with a reason */
    sb_admin_set_router(e.admin, NULL);
    ck_assert_int_eq(http_get(&e, "GET", "/readyz", &body), 503);
    ck_assert_msg(strstr(body, "\"ready\":false") && strstr(body, "no configuration loaded"), "%s", body);
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/metrics", &body), 200); /* still serves process and ledger */
    ck_assert_msg(strstr(body, "process_open_fds") && !strstr(body, "syncbridge_route_events_in_total{"), "%s", body);
    free(body);
    env_stop(&e);
}
END_TEST

START_TEST(readiness_reports_a_stalled_step)
{
    env e;
    env_start(&e,
              "{\"state_dir\": \"@D@/state\","
              " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 2, \"batch\": 2}},"
              " \"sinks\": {\"slow\": {\"plugin\": \"testsink\", \"delay\": \"2s\"}},"
              " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"slow\"]}}}",
              300000);
    usleep(800000);
    char *body;
    ck_assert_int_eq(http_get(&e, "GET", "/readyz", &body), 503);
    ck_assert_msg(strstr(body, "route r step 0") && strstr(body, "held its batch"), "%s", body);
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/metrics", &body), 200);
    ck_assert_msg(strstr(body, "syncbridge_step_oldest_batch_seconds 0.") ||
                      strstr(body, "syncbridge_step_oldest_batch_seconds 1."),
                  "%s", body);
    free(body);
    wait_done(&e, 2);
    /* The worker counts the events done a moment before it lets go of the
     * batch: on a loaded machine readiness may lag by that moment. */
    int code = 0;
    for (int i = 0; i < 100 && (code = http_get(&e, "GET", "/readyz", &body)) != 200; i++) {
        free(body);
        usleep(20000);
    }
    ck_assert_int_eq(code, 200);
    free(body);
    env_stop(&e);
}
END_TEST

START_TEST(runs_are_filtered)
{
    env e;
    env_start(&e, cfg_ok, 0);
    wait_done(&e, 20);
    char *body;
    json_error_t je;
    ck_assert_int_eq(http_get(&e, "GET", "/api/runs", &body), 200);
    json_t *a = json_loads(body, 0, &je);
    ck_assert_msg(json_is_array(a) && json_array_size(a) == 20, "%s", body);
    json_decref(a);
    free(body);

    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?table=odd_table&status=done&route=r&limit=100", &body), 200);
    a = json_loads(body, 0, &je);
    ck_assert_int_eq(json_array_size(a), 10);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(v, "fields"), "table")), "odd_table");
        ck_assert_str_eq(json_string_value(json_object_get(v, "state")), "done");
    }
    json_decref(a);
    free(body);

    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?limit=3", &body), 200);
    a = json_loads(body, 0, &je);
    ck_assert_int_eq(json_array_size(a), 3);
    json_decref(a);
    free(body);

    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?status=dead", &body), 200);
    ck_assert_str_eq(body, "[]\n");
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?route=other", &body), 200);
    ck_assert_str_eq(body, "[]\n");
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?since=4000000000", &body), 200);
    ck_assert_str_eq(body, "[]\n");
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?since=1", &body), 200);
    a = json_loads(body, 0, &je);
    ck_assert_int_eq(json_array_size(a), 20);
    json_decref(a);
    free(body);

    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?status=weird", &body), 400);
    ck_assert_msg(strstr(body, "status must be"), "%s", body);
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?limit=0", &body), 400);
    free(body);
    ck_assert_int_eq(http_get(&e, "GET", "/api/runs?since=yesterday", &body), 400);
    free(body);
    env_stop(&e);
}
END_TEST

START_TEST(metrics_are_valid_exposition)
{
    env e;
    env_start(&e, cfg_ok, 0);
    wait_done(&e, 20);
    ck_assert_int_eq(sb_metrics_register("test", contributor, "we\"ird\\name"), 0);
    ck_assert_int_eq(sb_metrics_register("test", contributor, NULL), -1);
    /* the plugins' API (syncbridge/metrics.h) */
    sb_metric *c1 = sb_metric_new(NULL, SB_METRIC_COUNTER, "test_things_total", "Things.");
    ck_assert_ptr_nonnull(c1);
    ck_assert_ptr_null(sb_metric_new(NULL, SB_METRIC_COUNTER, "test_things_total", "Things.")); /* same instance */
    ck_assert_ptr_null(sb_metric_new(NULL, SB_METRIC_GAUGE, "test_things_total", "Things."));   /* other type */
    ck_assert_ptr_null(sb_metric_new(NULL, SB_METRIC_GAUGE, "Bad-Name", "x"));
    ck_assert_ptr_null(sb_metric_new(NULL, SB_METRIC_GAUGE, "test_level", "two\nlines"));
    sb_metric *g = sb_metric_new(NULL, SB_METRIC_GAUGE, "test_level", "A level.");
    sb_metric_add(c1, 3);
    sb_metric_add(c1, 4);
    sb_metric_set(g, -5);
    sb_metric_add(NULL, 1); /* NULL-safe, so a plugin may ignore a refusal */
    char *body;
    ck_assert_int_eq(http_get(&e, "GET", "/metrics", &body), 200);
    int nf = check_exposition(body);
    ck_assert_int_ge(nf, 20);
    promtool_check(&e, body);
    static const char *const want[] = {
        "syncbridge_route_events_in_total{route=\"r\"} 20\n",
        "syncbridge_route_events_done_total{route=\"r\"} 20\n",
        "syncbridge_route_events_dead_lettered_total{route=\"r\"} 0\n",
        "syncbridge_route_retries_total{route=\"r\"} 0\n",
        "syncbridge_route_waits_total{route=\"r\"} 0\n",
        "syncbridge_route_progress_bytes_total{route=\"r\"} 0\n",
        "syncbridge_route_duplicates_total{route=\"r\"} 0\n",
        "syncbridge_route_inflight_events{route=\"r\"} 0\n",
        "syncbridge_route_inflight_bytes{route=\"r\"} 0\n",
        "syncbridge_step_queue_depth{route=\"r\",step=\"0\"} 0\n",
        "syncbridge_source_events_emitted_total{source=\"src\"} 20\n",
        "syncbridge_source_events_unrouted_total{source=\"src\"} 0\n",
        "syncbridge_source_restarts_total{source=\"src\"} 0\n",
        "syncbridge_route_latency_seconds_bucket{route=\"r\",le=\"+Inf\"} 20\n",
        "syncbridge_route_latency_seconds_count{route=\"r\"} 20\n",
        "syncbridge_route_latency_seconds_sum{route=\"r\"} ",
        "syncbridge_ledger_entries{state=\"done\"} 20\n",
        "syncbridge_ledger_entries{state=\"pending\"} 0\n",
        "syncbridge_ledger_file_bytes{file=\"db\"} ",
        "# TYPE process_cpu_seconds_total counter\n",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "sb_test_http_requests_total{plugin=\"we\\\"ird\\\\name\",code=\"200\"} 7\n",
        "# HELP syncbridge_test_things_total Things.\n# TYPE syncbridge_test_things_total counter\n"
        "syncbridge_test_things_total{instance=\"\"} 7\n",
        "# TYPE syncbridge_test_level gauge\nsyncbridge_test_level{instance=\"\"} -5\n",
        NULL};
    for (int i = 0; want[i]; i++)
        ck_assert_msg(strstr(body, want[i]), "missing %s in:\n%s", want[i], body);
    /* process_start_time_seconds is in the past and recent */
    double start = strtod(strstr(body, "\nprocess_start_time_seconds ") + 28, NULL);
    ck_assert_msg(start > (double)time(NULL) - 3600 && start <= (double)time(NULL) + 1, "start %f", start);
    free(body);
    sb_metrics_unregister("test");
    sb_metric_free(c1);
    sb_metric_free(g);
    ck_assert_int_eq(http_get(&e, "GET", "/metrics", &body), 200);
    ck_assert_ptr_null(strstr(body, "sb_test_http_requests_total"));
    ck_assert_ptr_null(strstr(body, "syncbridge_test_things_total")); /* no series: no header either */
    free(body);
    env_stop(&e);
}
END_TEST

START_TEST(parser_rejects_bad_exposition)
{
    /* the parser itself must catch what it claims to: run it in a child
     * (a failed assertion ends the test), expect failure */
    static const char *const bad[] = {
        "m 1\n",                                                     /* no TYPE */
        "# HELP m x\n# TYPE m counter\nm{a=\"b} 1\n",               /* unterminated */
        "# HELP m x\n# TYPE m counter\nm 1x\n",                      /* value */
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 4\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 5\n",
        "# HELP m x\n# TYPE m counter\nm 1\n# HELP m2 x\n# TYPE m2 gauge\nm2 1\n# TYPE m counter\n",
        NULL};
    for (int i = 0; bad[i]; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            close(2);
            check_exposition(bad[i]);
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "accepted bad exposition %d", i);
    }
    ck_assert_int_eq(check_exposition("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                      "h_bucket{le=\"+Inf\"} 4\nh_sum 1.5\nh_count 4\n"),
                     1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("admin");
    TCase *tc = tcase_create("admin");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, parser_rejects_bad_exposition);
    tcase_add_test(tc, health_readiness_and_errors);
    tcase_add_test(tc, readiness_reports_a_stalled_step);
    tcase_add_test(tc, runs_are_filtered);
    tcase_add_test(tc, metrics_are_valid_exposition);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
