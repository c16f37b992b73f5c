/*
 * testsrc - a source for the core's tests (not installed): emits `count`
 * events "<prefix>-<n>" with fields {n, table, status} in batches, with a
 * checkpoint "<n>" so that a restart continues where the ledger says.
 * With in_flight > 0 it emits asynchronously and keeps that many batches
 * uncommitted (sb_source_await), as the kafka source does.
 */
#include <syncbridge/syncbridge.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct tsrc {
    sb_instance *ins;
    int64_t count, batch;
    const char *prefix;
    int64_t rate;
    int64_t in_flight;
} tsrc;

static const sb_option_def options[] = {
    {SB_OPT("count", SB_OPT_INT, "100", 0, "Events to emit.")},
    {SB_OPT("batch", SB_OPT_INT, "10", 0, "Events per emit.")},
    {SB_OPT("prefix", SB_OPT_STRING, "\"ev\"", 0, "Event id prefix.")},
    {SB_OPT("rate", SB_OPT_INT, "0", 0, "Events per second (0 = as fast as the core admits them).")},
    {SB_OPT("in_flight", SB_OPT_INT, "0", 0, "Batches left uncommitted with sb_source_emit_async (0 = sb_source_emit).")},
    {0}};

static int tc_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    tsrc *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    t->ins = ins;
    t->count = sb_opt_int(ins, "count");
    t->batch = sb_opt_int(ins, "batch");
    t->prefix = sb_opt_string(ins, "prefix");
    t->rate = sb_opt_int(ins, "rate");
    t->in_flight = sb_opt_int(ins, "in_flight");
    *self = t;
    return 0;
}

static void tc_destroy(void *self) { free(self); }

static int tc_run(void *self, sb_source_ctx *ctx)
{
    tsrc *t = self;
    const char *cp = sb_source_checkpoint(ctx);
    int64_t next = cp ? atoll(cp) : 0, first = next;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (next < t->count && !sb_source_stopping(ctx)) {
        sb_event *evs[1024];
        size_t n = 0;
        for (; n < (size_t)t->batch && n < 1024 && next < t->count; n++, next++) {
            char id[128];
            snprintf(id, sizeof id, "%s-%lld", t->prefix, (long long)next);
            evs[n] = sb_event_new(id);
            sb_event_set_int(evs[n], "n", next);
            sb_event_set_string(evs[n], "table", next % 2 ? "odd_table" : "even_table");
            sb_event_set_string(evs[n], "status", next % 3 ? "succeeded" : "failed");
        }
        if (t->rate > 0) {
            /* pace: event k is due at t0 + k/rate */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double due = (double)(next - first) / (double)t->rate;
            double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
            if (due > el)
                usleep((useconds_t)((due - el) * 1e6));
        }
        char cpbuf[32];
        snprintf(cpbuf, sizeof cpbuf, "%lld", (long long)next);
        int rc = t->in_flight > 0 ? sb_source_emit_async(ctx, evs, n, cpbuf) : sb_source_emit(ctx, evs, n, cpbuf);
        if (rc == 0 && t->in_flight > 0)
            rc = sb_source_await(ctx, (size_t)t->in_flight);
        if (rc != 0)
            return sb_source_stopping(ctx) ? 0 : -1;
    }
    if (sb_source_flush(ctx) != 0)
        return sb_source_stopping(ctx) ? 0 : -1;
    if (!sb_instance_once(t->ins))
        while (!sb_source_wait(ctx, 1000))
            ;
    return 0;
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "testsrc",
    .kind = SB_KIND_SOURCE,
    .version = "test",
    .description = "Counting source for tests",
    .options = options,
    .create = tc_create,
    .run = tc_run,
    .destroy = tc_destroy,
};
