/*
 * testsink - a scriptable sink for the core's tests (not installed).
 * It records every call it receives in a file, one line per event:
 *   "<instance> <event_id> <attempt> <result>"
 * and returns results as its options direct, so tests can drive every
 * path of the router: retries, dead letters, fatal restarts, fan-out,
 * fields handed to later steps and backpressure.
 */
#include <syncbridge/syncbridge.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct tsink {
    sb_instance *ins;
    const char *record;
    const char *result;
    int64_t fail_first;
    int64_t retry_after;
    int64_t delay_ms;
    const char *add_field;
    const sb_template *add_value;
    const char *expect_field;
    int64_t fatal_once_at;
    int64_t calls;
    pthread_mutex_t mu;
} tsink;

static const sb_option_def options[] = {
    {"record", SB_OPT_STRING, NULL, 0, "Append one line per event handled to this file."},
    {"result", SB_OPT_STRING, "\"ok\"", 0, "ok, retry, fail, fatal or unset."},
    {"fail_first", SB_OPT_INT, "0", 0, "Answer RETRY to the first N attempts of each event."},
    {"retry_after", SB_OPT_DURATION, "0", 0, "Retry-After to report with RETRY."},
    {"delay", SB_OPT_DURATION, "0", 0, "Sleep this long per batch."},
    {"add_field", SB_OPT_STRING, NULL, 0, "Add this field to each event..."},
    {"add_value", SB_OPT_TEMPLATE, "\"added-by-${event_id:-x}\"", 0, "...with this value."},
    {"expect_field", SB_OPT_STRING, NULL, 0, "FAIL events that lack this field."},
    {"fatal_once_at", SB_OPT_INT, "0", 0, "Report FATAL for the whole batch on the Nth call (once)."},
    {NULL, 0, NULL, 0, NULL}};

static int ts_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    tsink *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    t->ins = ins;
    t->record = sb_opt_string(ins, "record");
    t->result = sb_opt_string(ins, "result");
    t->fail_first = sb_opt_int(ins, "fail_first");
    t->retry_after = sb_opt_duration_ms(ins, "retry_after");
    t->delay_ms = sb_opt_duration_ms(ins, "delay");
    t->add_field = sb_opt_string(ins, "add_field");
    t->add_value = sb_opt_template(ins, "add_value");
    t->expect_field = sb_opt_string(ins, "expect_field");
    t->fatal_once_at = sb_opt_int(ins, "fatal_once_at");
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

static sb_result parse_result(const char *s)
{
    if (strcmp(s, "retry") == 0)
        return SB_RESULT_RETRY;
    if (strcmp(s, "fail") == 0)
        return SB_RESULT_FAIL;
    if (strcmp(s, "fatal") == 0)
        return SB_RESULT_FATAL;
    if (strcmp(s, "unset") == 0)
        return SB_RESULT_UNSET;
    return SB_RESULT_OK;
}

static const char *result_name(sb_result r)
{
    static const char *const names[] = {"unset", "ok", "retry", "fail", "fatal"};
    return names[r];
}

/* The fatal-once counter survives restarts through a marker file. */
static int take_fatal(tsink *t)
{
    if (!t->fatal_once_at || !t->record)
        return 0;
    char marker[4096];
    snprintf(marker, sizeof marker, "%s.%s.fatal", t->record, sb_instance_name(t->ins));
    if (access(marker, F_OK) == 0)
        return 0;
    if (++t->calls < t->fatal_once_at)
        return 0;
    FILE *m = fopen(marker, "w");
    if (m)
        fclose(m);
    return 1;
}

static void ts_process(void *self, sb_batch *b)
{
    tsink *t = self;
    if (t->delay_ms)
        usleep((useconds_t)(t->delay_ms * 1000));
    pthread_mutex_lock(&t->mu);
    int fatal = take_fatal(t);
    FILE *rec = t->record ? fopen(t->record, "a") : NULL;
    for (size_t i = 0; i < sb_batch_count(b); i++) {
        sb_event *ev = sb_batch_event(b, i);
        sb_result r = parse_result(t->result);
        const char *why = NULL;
        if (fatal) {
            r = SB_RESULT_FATAL;
            why = "scripted fatal";
        } else if (t->expect_field && !json_object_get(sb_event_fields(ev), t->expect_field)) {
            r = SB_RESULT_FAIL;
            why = "expected field missing";
        } else if (sb_batch_attempt(b, i) <= t->fail_first) {
            r = SB_RESULT_RETRY;
            why = "scripted transient failure";
        }
        if (r == SB_RESULT_OK && t->add_field) {
            char err[256];
            char *v = sb_template_render(t->add_value, ev, err, sizeof err);
            sb_event_add(ev, t->add_field, json_string(v ? v : err));
            free(v);
        }
        if (r != SB_RESULT_UNSET)
            sb_batch_set_result(b, i, r, "%s", why ? why : result_name(r));
        if (r == SB_RESULT_RETRY && t->retry_after)
            sb_batch_set_retry_after(b, i, t->retry_after);
        if (rec)
            fprintf(rec, "%s %s %d %s\n", sb_instance_name(t->ins), sb_event_id(ev), sb_batch_attempt(b, i),
                    result_name(r));
    }
    if (rec) {
        fflush(rec);
        fsync(fileno(rec));
        fclose(rec);
    }
    pthread_mutex_unlock(&t->mu);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "testsink",
    .kind = SB_KIND_SINK,
    .version = "test",
    .description = "Scriptable sink for tests",
    .options = options,
    .create = ts_create,
    .process = ts_process,
    .destroy = ts_destroy,
};
