/*
 * testsink - a scriptable sink for the core's tests (not installed).
 * It records every call it receives in a file, one line per event:
 *   "<instance> <event_id> <attempt> <result>"
 * and returns results as its options direct, so tests can drive every
 * path of the router: retries, dead letters, fatal restarts, fan-out,
 * fields handed to later steps, backpressure, and (ABI 2) waiting with step
 * state: with wait_polls N, the first call "triggers" (records a line
 * "... trigger"), keeps {"run", "polls"} as its step state and WAITs; the
 * next N calls poll ("... wait K"), and the last one is OK.
 * For the router's circuit: `outage` answers RETRY to everything for a
 * while after the first call (a far side that is down), and `calls` logs
 * one line per process() call: "<monotonic ms> <events> <first result>".
 * Its options are bound to its config struct (ABI 2 option table).
 */
#include <syncbridge/syncbridge.h>

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The options, filled in by the core (SB_OPT_F_BIND). */
typedef struct tsink_conf {
    const char *record;
    int result; /* index into results[] */
    int64_t fail_first;
    int64_t fail_every;
    int64_t retry_after;
    int64_t delay_ms;
    int64_t progress_parts;
    const char *add_field;
    const sb_template *add_value;
    const char *expect_field;
    int64_t fatal_once_at;
    int64_t wait_polls;
    int64_t wait_ms;
    int64_t outage_ms;
    const char *calls;
    const char *abandons;
} tsink_conf;

typedef struct tsink {
    sb_instance *ins;
    const tsink_conf *c;
    int64_t calls;
    int64_t first_call_ms; /* monotonic; 0 before the first call */
    pthread_mutex_t mu;
} tsink;

/* In sb_result order, so that an index is the result. */
static const char *const results[] = {"unset", "ok", "retry", "fail", "fatal", "wait", NULL};

static const sb_option_def options[] = {
    {SB_OPT("record", SB_OPT_STRING, NULL, 0, "Append one line per event handled to this file."),
     SB_OPT_BIND(tsink_conf, record)},
    {SB_OPT("result", SB_OPT_STRING, "\"ok\"", 0, "The result to give."), SB_OPT_CHOICES(results),
     SB_OPT_BIND(tsink_conf, result)},
    {SB_OPT("fail_first", SB_OPT_INT, "0", 0, "Answer RETRY to the first N attempts of each event."),
     SB_OPT_RANGE_BIND(0, 1000, tsink_conf, fail_first)},
    {SB_OPT("fail_every", SB_OPT_INT, "0", 0,
            "Answer RETRY to the first attempt of every Nth event of a call (its 1st, N+1th, ...)."),
     SB_OPT_RANGE_BIND(0, 1000, tsink_conf, fail_every)},
    {SB_OPT("retry_after", SB_OPT_DURATION, "0", 0, "Retry-After to report with RETRY."),
     SB_OPT_BIND(tsink_conf, retry_after)},
    {SB_OPT("delay", SB_OPT_DURATION, "0", 0, "Sleep this long per batch."), SB_OPT_BIND(tsink_conf, delay_ms)},
    {SB_OPT("progress_parts", SB_OPT_INT, "0", 0,
            "Sleep the delay in this many parts, reporting 1000 units of progress per event after each."),
     SB_OPT_RANGE_BIND(0, 1000, tsink_conf, progress_parts)},
    {SB_OPT("add_field", SB_OPT_STRING, NULL, 0, "Add this field to each event..."),
     SB_OPT_BIND(tsink_conf, add_field)},
    {SB_OPT("add_value", SB_OPT_TEMPLATE, "\"added-by-${event_id:-x}\"", 0, "...with this value."),
     SB_OPT_BIND(tsink_conf, add_value)},
    {SB_OPT("expect_field", SB_OPT_STRING, NULL, 0, "FAIL events that lack this field."),
     SB_OPT_BIND(tsink_conf, expect_field)},
    {SB_OPT("fatal_once_at", SB_OPT_INT, "0", 0, "Report FATAL for the whole batch on the Nth call (once)."),
     SB_OPT_BIND(tsink_conf, fatal_once_at)},
    {SB_OPT("wait_polls", SB_OPT_INT, "0", 0, "Trigger, then WAIT this many polls before OK."),
     SB_OPT_RANGE_BIND(0, 1000000, tsink_conf, wait_polls)},
    {SB_OPT("wait_ms", SB_OPT_DURATION, "\"50ms\"", 0, "How long each WAIT asks to wait."),
     SB_OPT_RANGE_BIND(1, 3600000, tsink_conf, wait_ms)},
    {SB_OPT("outage", SB_OPT_DURATION, "0", 0, "Answer RETRY to every event for this long after the first call."),
     SB_OPT_BIND(tsink_conf, outage_ms)},
    {SB_OPT("calls", SB_OPT_STRING, NULL, 0, "Append one line per process() call to this file."),
     SB_OPT_BIND(tsink_conf, calls)},
    {SB_OPT("abandons", SB_OPT_STRING, NULL, 0, "Append one line per event given to abandon() to this file."),
     SB_OPT_BIND(tsink_conf, abandons)},
    {0}};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ts_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    tsink *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    t->ins = ins;
    t->c = sb_instance_config(ins);
    pthread_mutex_init(&t->mu, NULL);
    *self = t;
    return 0;
}

static void ts_destroy(void *self)
{
    tsink *t = self;
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static const char *result_name(sb_result r) { return results[r]; }

/* The fatal-once counter survives restarts through a marker file. */
static int take_fatal(tsink *t)
{
    if (!t->c->fatal_once_at || !t->c->record)
        return 0;
    char marker[4096];
    snprintf(marker, sizeof marker, "%s.%s.fatal", t->c->record, sb_instance_name(t->ins));
    if (access(marker, F_OK) == 0)
        return 0;
    if (++t->calls < t->c->fatal_once_at)
        return 0;
    FILE *m = fopen(marker, "w");
    if (m)
        fclose(m);
    return 1;
}

/* wait_polls: trigger once (the side effect a crash must not repeat), then
 * poll through WAIT with the poll count in the step state. Returns the
 * result to give, or SB_RESULT_UNSET to go on with the scripted one. */
static sb_result wait_script(tsink *t, sb_batch *b, size_t i, FILE *rec)
{
    const sb_event *ev = sb_batch_event(b, i);
    const json_t *st = sb_batch_state(b, i);
    if (!st) {
        if (rec) {
            fprintf(rec, "%s %s %d trigger\n", sb_instance_name(t->ins), sb_event_id(ev), sb_batch_attempt(b, i));
            fflush(rec);
            fsync(fileno(rec));
        }
        sb_batch_set_state(b, i, json_pack("{s:s, s:I}", "run", sb_event_id(ev), "polls", (json_int_t)0));
        if (sb_batch_save_state(b, i) != 0)
            return SB_RESULT_RETRY;
        sb_batch_wait(b, i, t->c->wait_ms, "run %s triggered", sb_event_id(ev));
        return SB_RESULT_WAIT;
    }
    json_int_t polls = json_integer_value(json_object_get(st, "polls")) + 1;
    if (rec)
        fprintf(rec, "%s %s %d wait %lld\n", sb_instance_name(t->ins), sb_event_id(ev), sb_batch_attempt(b, i),
                (long long)polls);
    if (polls > t->c->wait_polls)
        return SB_RESULT_UNSET;
    sb_batch_set_state(b, i, json_pack("{s:O, s:I}", "run", json_object_get(st, "run"), "polls", polls));
    sb_batch_wait(b, i, t->c->wait_ms, "run %s: poll %lld", json_string_value(json_object_get(st, "run")),
                  (long long)polls);
    return SB_RESULT_WAIT;
}

static void ts_process(void *self, sb_batch *b)
{
    tsink *t = self;
    const tsink_conf *c = t->c;
    if (c->progress_parts > 0) {
        uint64_t total = (uint64_t)c->progress_parts * 1000;
        for (int64_t k = 1; k <= c->progress_parts; k++) {
            usleep((useconds_t)(c->delay_ms * 1000 / c->progress_parts));
            for (size_t i = 0; i < sb_batch_count(b); i++)
                sb_batch_progress(b, i, (uint64_t)k * 1000, total);
        }
    } else if (c->delay_ms) {
        usleep((useconds_t)(c->delay_ms * 1000));
    }
    pthread_mutex_lock(&t->mu);
    int64_t now = mono_ms();
    if (!t->first_call_ms)
        t->first_call_ms = now;
    int down = c->outage_ms && now - t->first_call_ms < c->outage_ms;
    sb_result first = SB_RESULT_UNSET;
    int fatal = take_fatal(t);
    FILE *rec = c->record ? fopen(c->record, "a") : NULL;
    for (size_t i = 0; i < sb_batch_count(b); i++) {
        sb_event *ev = sb_batch_event(b, i);
        if (c->wait_polls && !fatal && wait_script(t, b, i, rec) != SB_RESULT_UNSET) {
            if (i == 0)
                first = SB_RESULT_WAIT;
            continue;
        }
        sb_result r = (sb_result)c->result;
        const char *why = NULL;
        if (fatal) {
            r = SB_RESULT_FATAL;
            why = "scripted fatal";
        } else if (c->expect_field && !json_object_get(sb_event_fields(ev), c->expect_field)) {
            r = SB_RESULT_FAIL;
            why = "expected field missing";
        } else if (sb_batch_attempt(b, i) <= c->fail_first ||
                   (c->fail_every && sb_batch_attempt(b, i) == 1 && i % (size_t)c->fail_every == 0)) {
            r = SB_RESULT_RETRY;
            why = "scripted transient failure";
        } else if (down) {
            r = SB_RESULT_RETRY;
            why = "scripted outage";
        }
        if (i == 0)
            first = r;
        if (r == SB_RESULT_OK && c->add_field) {
            char err[256];
            char *v = sb_template_render(c->add_value, ev, err, sizeof err);
            sb_event_add(ev, c->add_field, json_string(v ? v : err));
            free(v);
        }
        if (r == SB_RESULT_WAIT)
            sb_batch_wait(b, i, c->wait_ms, "scripted wait");
        else if (r != SB_RESULT_UNSET)
            sb_batch_set_result(b, i, r, "%s", why ? why : result_name(r));
        if (r == SB_RESULT_RETRY && c->retry_after)
            sb_batch_set_retry_after(b, i, c->retry_after);
        if (rec)
            fprintf(rec, "%s %s %d %s\n", sb_instance_name(t->ins), sb_event_id(ev), sb_batch_attempt(b, i),
                    result_name(r));
    }
    if (rec) {
        fflush(rec);
        fsync(fileno(rec));
        fclose(rec);
    }
    FILE *calls = c->calls ? fopen(c->calls, "a") : NULL;
    if (calls) {
        fprintf(calls, "%lld %zu %s\n", (long long)now, sb_batch_count(b), result_name(first));
        fclose(calls);
    }
    pthread_mutex_unlock(&t->mu);
}

static void ts_abandon(void *self, sb_batch *b)
{
    tsink *t = self;
    FILE *f = t->c->abandons ? fopen(t->c->abandons, "a") : NULL;
    if (!f)
        return;
    for (size_t i = 0; i < sb_batch_count(b); i++)
        fprintf(f, "%s %s abandon\n", sb_instance_name(t->ins), sb_event_id(sb_batch_event(b, i)));
    fclose(f);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "testsink",
    .kind = SB_KIND_SINK,
    .version = "test",
    .description = "Scriptable sink for tests",
    .options = options,
    .config_size = sizeof(tsink_conf),
    .create = ts_create,
    .process = ts_process,
    .destroy = ts_destroy,
    .abandon = ts_abandon,
};
