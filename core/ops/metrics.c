/* metrics.c - Prometheus text exposition of router, ledger and process
 * state, plus registered contributors (see metrics.h). */
#include "build_config.h"
#include "ops/metrics.h"
#include "ledger/ledger.h"
#include "engine/router.h"
#include "engine/router_ops.h"
#include "util/util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct sb_metrics_out {
    char *buf;
    size_t len, cap;
};

typedef struct contributor {
    char *name;
    sb_metrics_fn fn;
    void *ud;
} contributor;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static contributor *g_contrib;
static size_t g_n;

int sb_metrics_register(const char *name, sb_metrics_fn fn, void *ud)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++)
        if (strcmp(g_contrib[i].name, name) == 0) {
            pthread_mutex_unlock(&g_mu);
            return -1;
        }
    g_contrib = sb_xrealloc(g_contrib, (g_n + 1) * sizeof *g_contrib);
    g_contrib[g_n++] = (contributor){sb_strdup(name), fn, ud};
    pthread_mutex_unlock(&g_mu);
    return 0;
}

void sb_metrics_unregister(const char *name)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++)
        if (strcmp(g_contrib[i].name, name) == 0) {
            free(g_contrib[i].name);
            g_contrib[i] = g_contrib[--g_n];
            break;
        }
    if (g_n == 0) {
        free(g_contrib);
        g_contrib = NULL;
    }
    pthread_mutex_unlock(&g_mu);
}

void sb_metrics_printf(sb_metrics_out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = o->cap - o->len;
        int n = vsnprintf(o->buf + o->len, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            o->len += (size_t)n;
            return;
        }
        o->cap = (o->cap + (size_t)n + 1) * 2;
        o->buf = sb_xrealloc(o->buf, o->cap);
    }
}

void sb_metrics_label(sb_metrics_out *o, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\')
            sb_metrics_printf(o, "\\\\");
        else if (*v == '"')
            sb_metrics_printf(o, "\\\"");
        else if (*v == '\n')
            sb_metrics_printf(o, "\\n");
        else
            sb_metrics_printf(o, "%c", *v);
    }
}

static void family(sb_metrics_out *o, const char *name, const char *type, const char *help)
{
    sb_metrics_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"} v */
static void sample1(sb_metrics_out *o, const char *name, const char *label, const char *value, long long v)
{
    sb_metrics_printf(o, "%s{%s=\"", name, label);
    sb_metrics_label(o, value);
    sb_metrics_printf(o, "\"} %lld\n", v);
}

static long long jint(json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

typedef struct counter_def {
    const char *key, *name, *type, *help;
} counter_def;

static const counter_def route_defs[] = {
    {"in", "syncbridge_route_events_in_total", "counter", "Events admitted to the route (one per event and route)."},
    {"done", "syncbridge_route_events_done_total", "counter", "Entries that completed every step."},
    {"dead", "syncbridge_route_events_dead_lettered_total", "counter", "Entries moved to the dead-letter store."},
    {"retried", "syncbridge_route_retries_total", "counter", "Step attempts that were scheduled for retry."},
    {"waits", "syncbridge_route_waits_total", "counter",
     "Step answers that said not done yet (WAIT): a DAG run, workflow or job being polled."},
    {"progress_bytes", "syncbridge_route_progress_bytes_total", "counter",
     "Bytes of long work (a copy) that steps reported done with sb_batch_progress()."},
    {"circuit_opens", "syncbridge_route_circuit_opens_total", "counter",
     "Times a step's circuit opened: a whole batch failed, and the step went to one probe batch at a time."},
    {"duplicates", "syncbridge_route_duplicates_total", "counter",
     "Events refused because (event id, route) was already in the ledger."},
    {"inflight", "syncbridge_route_inflight_events", "gauge", "Entries admitted and not yet settled."},
    {"inflight_bytes", "syncbridge_route_inflight_bytes", "gauge", "Payload bytes of the entries in flight."},
};

static const counter_def source_defs[] = {
    {"emitted", "syncbridge_source_events_emitted_total", "counter", "Events emitted by the source."},
    {"unrouted", "syncbridge_source_events_unrouted_total", "counter", "Events that matched no route."},
    {"restarts", "syncbridge_source_restarts_total", "counter", "Times the source was restarted after an error."},
};

/* Histogram bounds in seconds: from a fast sink to a Dataproc job. */
static const double latency_le[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};

/* A per-step gauge from the stats' array `key` (numbers or booleans). */
static void step_gauge(sb_metrics_out *o, json_t *routes, const char *key, const char *metric, const char *help)
{
    const char *name;
    json_t *v;
    family(o, metric, "gauge", help);
    json_object_foreach(routes, name, v)
    {
        json_t *q = json_object_get(v, key), *x;
        size_t i;
        json_array_foreach(q, i, x)
        {
            sb_metrics_printf(o, "%s{route=\"", metric);
            sb_metrics_label(o, name);
            sb_metrics_printf(o, "\",step=\"%zu\"} %lld\n", i,
                              json_is_boolean(x) ? (long long)json_is_true(x) : (long long)json_integer_value(x));
        }
    }
}

/* Run lag bounds in seconds: a Composer or Dataproc copy takes minutes to
 * hours after the on-prem finish. */
static const double lag_le[] = {60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400};

static void route_table_labels(sb_metrics_out *o, const char *metric, const char *route, const char *table)
{
    sb_metrics_printf(o, "%s{route=\"", metric);
    sb_metrics_label(o, route);
    sb_metrics_printf(o, "\",table=\"");
    sb_metrics_label(o, table);
    sb_metrics_printf(o, "\"");
}

/* Per route and table: the lag histogram, the runs pending and the age of
 * the oldest (engine/freshness.c; docs/operations.md has the alerts). */
static void render_freshness(sb_metrics_out *o, sb_router *r)
{
    const char *route, *table;
    sb_freshness *f;
    const sb_hist *h;
    size_t pending;
    int64_t oldest, now = sb_now_us();
    family(o, "syncbridge_run_lag_seconds", "histogram",
           "Time from a run's on-prem finish (its finished_at) to the end of its route here; on the GCP side, "
           "to the step that completes the gcp registry row.");
    for (size_t i = 0; (f = sb_router_route_freshness(r, i, &route)) != NULL; i++)
        for (size_t t = 0; sb_freshness_table(f, t, &table, &h, &pending, &oldest) == 0; t++) {
            uint64_t prev = 0;
            for (size_t b = 0; b < sizeof lag_le / sizeof lag_le[0]; b++) {
                uint64_t c = sb_hist_count_le(h, (int64_t)(lag_le[b] * 1e6));
                if (c < prev)
                    c = prev;
                prev = c;
                route_table_labels(o, "syncbridge_run_lag_seconds_bucket", route, table);
                sb_metrics_printf(o, ",le=\"%g\"} %llu\n", lag_le[b], (unsigned long long)c);
            }
            uint64_t count = atomic_load(&h->count);
            if (count < prev)
                count = prev;
            route_table_labels(o, "syncbridge_run_lag_seconds_bucket", route, table);
            sb_metrics_printf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)count);
            route_table_labels(o, "syncbridge_run_lag_seconds_sum", route, table);
            sb_metrics_printf(o, "} %.3f\n", (double)atomic_load(&h->sum) / 1e6);
            route_table_labels(o, "syncbridge_run_lag_seconds_count", route, table);
            sb_metrics_printf(o, "} %llu\n", (unsigned long long)count);
        }
    family(o, "syncbridge_run_pending", "gauge", "Runs admitted to the route and not yet settled, per table.");
    for (size_t i = 0; (f = sb_router_route_freshness(r, i, &route)) != NULL; i++)
        for (size_t t = 0; sb_freshness_table(f, t, &table, &h, &pending, &oldest) == 0; t++) {
            route_table_labels(o, "syncbridge_run_pending", route, table);
            sb_metrics_printf(o, "} %zu\n", pending);
        }
    family(o, "syncbridge_run_oldest_pending_seconds", "gauge",
           "Age (now - finished_at) of the oldest run of the table still in flight on the route; 0 when none.");
    for (size_t i = 0; (f = sb_router_route_freshness(r, i, &route)) != NULL; i++)
        for (size_t t = 0; sb_freshness_table(f, t, &table, &h, &pending, &oldest) == 0; t++) {
            route_table_labels(o, "syncbridge_run_oldest_pending_seconds", route, table);
            sb_metrics_printf(o, "} %.3f\n", pending && now > oldest ? (double)(now - oldest) / 1e6 : 0.0);
        }
}

static void render_router(sb_metrics_out *o, sb_router *r)
{
    json_t *st = sb_router_stats(r);
    json_t *routes = json_object_get(st, "routes"), *sources = json_object_get(st, "sources"), *v;
    const char *name;
    for (size_t d = 0; d < sizeof route_defs / sizeof route_defs[0]; d++) {
        family(o, route_defs[d].name, route_defs[d].type, route_defs[d].help);
        json_object_foreach(routes, name, v) sample1(o, route_defs[d].name, "route", name, jint(v, route_defs[d].key));
    }
    family(o, "syncbridge_step_queue_depth", "gauge", "Entries queued at a step, waiting for a worker.");
    json_object_foreach(routes, name, v)
    {
        json_t *q = json_object_get(v, "queued"), *x;
        size_t i;
        json_array_foreach(q, i, x)
        {
            sb_metrics_printf(o, "syncbridge_step_queue_depth{route=\"");
            sb_metrics_label(o, name);
            sb_metrics_printf(o, "\",step=\"%zu\"} %lld\n", i, (long long)json_integer_value(x));
        }
    }
    step_gauge(o, routes, "held", "syncbridge_step_held_events",
               "Entries held at a step while its circuit is open or its instance paused by a Retry-After.");
    step_gauge(o, routes, "circuit_open", "syncbridge_step_circuit_open",
               "1 while a step's circuit is open (its calls fail whole; one probe batch at a time).");
    for (size_t d = 0; d < sizeof source_defs / sizeof source_defs[0]; d++) {
        family(o, source_defs[d].name, source_defs[d].type, source_defs[d].help);
        json_object_foreach(sources, name, v)
            sample1(o, source_defs[d].name, "source", name, jint(v, source_defs[d].key));
    }
    json_decref(st);

    family(o, "syncbridge_route_latency_seconds", "histogram",
           "Time from admission to settlement (done or dead-lettered) of an entry.");
    const sb_hist *h;
    for (size_t i = 0; (h = sb_router_route_latency(r, i, &name)) != NULL; i++) {
        /* One snapshot read per value; keep the series monotonic even if
         * values are added while we read. */
        uint64_t prev = 0;
        for (size_t b = 0; b < sizeof latency_le / sizeof latency_le[0]; b++) {
            uint64_t c = sb_hist_count_le(h, (int64_t)(latency_le[b] * 1e6));
            if (c < prev)
                c = prev;
            prev = c;
            sb_metrics_printf(o, "syncbridge_route_latency_seconds_bucket{route=\"");
            sb_metrics_label(o, name);
            sb_metrics_printf(o, "\",le=\"%g\"} %llu\n", latency_le[b], (unsigned long long)c);
        }
        uint64_t count = atomic_load(&h->count);
        if (count < prev)
            count = prev;
        sb_metrics_printf(o, "syncbridge_route_latency_seconds_bucket{route=\"");
        sb_metrics_label(o, name);
        sb_metrics_printf(o, "\",le=\"+Inf\"} %llu\n", (unsigned long long)count);
        sb_metrics_printf(o, "syncbridge_route_latency_seconds_sum{route=\"");
        sb_metrics_label(o, name);
        sb_metrics_printf(o, "\"} %.6f\n", (double)atomic_load(&h->sum) / 1e6);
        sb_metrics_printf(o, "syncbridge_route_latency_seconds_count{route=\"");
        sb_metrics_label(o, name);
        sb_metrics_printf(o, "\"} %llu\n", (unsigned long long)count);
    }

    render_freshness(o, r);

    sb_router_health hl;
    sb_router_health_get(r, sb_mono_us(), &hl);
    family(o, "syncbridge_step_oldest_batch_seconds", "gauge",
           "Longest time any step worker has been holding its current batch (0 = all idle).");
    sb_metrics_printf(o, "syncbridge_step_oldest_batch_seconds %.3f\n", (double)hl.oldest_busy_us / 1e6);
    family(o, "syncbridge_sources_running", "gauge", "Source threads currently running.");
    sb_metrics_printf(o, "syncbridge_sources_running %d\n", hl.sources_alive);
}

static long long file_size(const char *dir, const char *name)
{
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

static void render_ledger(sb_metrics_out *o, sb_ledger *l, const char *state_dir)
{
    int64_t pending = 0, done = 0, dead = 0;
    if (l && sb_ledger_counts(l, &pending, &done, &dead) == 0) {
        family(o, "syncbridge_ledger_entries", "gauge", "Ledger entries by state.");
        sb_metrics_printf(o, "syncbridge_ledger_entries{state=\"pending\"} %lld\n", (long long)pending);
        sb_metrics_printf(o, "syncbridge_ledger_entries{state=\"done\"} %lld\n", (long long)done);
        sb_metrics_printf(o, "syncbridge_ledger_entries{state=\"dead\"} %lld\n", (long long)dead);
    }
    if (state_dir) {
        family(o, "syncbridge_ledger_file_bytes", "gauge", "Size of the ledger's SQLite files (db and write-ahead log).");
        sb_metrics_printf(o, "syncbridge_ledger_file_bytes{file=\"db\"} %lld\n", file_size(state_dir, "ledger.db"));
        sb_metrics_printf(o, "syncbridge_ledger_file_bytes{file=\"wal\"} %lld\n", file_size(state_dir, "ledger.db-wal"));
    }
}

/* Process start as epoch seconds: field 22 of /proc/self/stat is the start
 * in clock ticks after boot; now minus (CLOCK_BOOTTIME - that) is the
 * start on the wall clock. (Not /proc/stat's btime: the unit's
 * ProcSubset=pid hides it.) */
static double process_start_time(void)
{
    char buf[4096];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    unsigned long long ticks = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                     &ticks) != 1)
        return 0;
    struct timespec boot, wall;
    clock_gettime(CLOCK_BOOTTIME, &boot);
    clock_gettime(CLOCK_REALTIME, &wall);
    double since_start = (double)boot.tv_sec + (double)boot.tv_nsec / 1e9 - (double)ticks / (double)sysconf(_SC_CLK_TCK);
    return (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 - since_start;
}

static void render_process(sb_metrics_out *o)
{
    long long rss = 0, vsz = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        long long pages_v = 0, pages_r = 0;
        if (fscanf(f, "%lld %lld", &pages_v, &pages_r) == 2) {
            vsz = pages_v * sysconf(_SC_PAGESIZE);
            rss = pages_r * sysconf(_SC_PAGESIZE);
        }
        fclose(f);
    }
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              (double)ru.ru_stime.tv_usec / 1e6;
    long long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory stream's own fd */
    }
    struct rlimit rl;
    long long maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long long)rl.rlim_cur : 0;

    family(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    sb_metrics_printf(o, "process_cpu_seconds_total %.3f\n", cpu);
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    sb_metrics_printf(o, "process_resident_memory_bytes %lld\n", rss);
    family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    sb_metrics_printf(o, "process_virtual_memory_bytes %lld\n", vsz);
    family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    sb_metrics_printf(o, "process_open_fds %lld\n", fds);
    family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    sb_metrics_printf(o, "process_max_fds %lld\n", maxfds);
    family(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    sb_metrics_printf(o, "process_start_time_seconds %.2f\n", process_start_time());
}

char *sb_metrics_render(sb_router *router, sb_ledger *ledger, const char *state_dir, size_t *len)
{
    sb_metrics_out o = {sb_xmalloc(16384), 0, 16384};
    o.buf[0] = '\0';
    family(&o, "syncbridge_build_info", "gauge", "Always 1; the version as a label.");
    sb_metrics_printf(&o, "syncbridge_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    if (router)
        render_router(&o, router);
    render_ledger(&o, ledger, state_dir);
    render_process(&o);
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++)
        g_contrib[i].fn(&o, g_contrib[i].ud);
    pthread_mutex_unlock(&g_mu);
    if (len)
        *len = o.len;
    return o.buf;
}
