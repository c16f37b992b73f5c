/* harness.c - one plugin in process inside the real core (harness.h). */
#include "build_config.h"
#include "harness.h"
#include "config/config.h"
#include "engine/loader.h"
#include "engine/router.h"
#include "events/event_internal.h"
#include "ledger/ledger.h"
#include "testutil.h"
#include "util/util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fed {
    char *event_id;
    int64_t entry_id;
    json_t *shown; /* sb_ledger_show after the last run */
} fed;

struct sbh {
    char *dir;
    sb_config *cfg;
    sb_registry *reg;
    sb_ledger *ledger;
    fed *events;
    size_t n, cap;
};

static char err[4096];

sbh *sbh_new(const char *section, const char *instance_json)
{
    sbh *h = sb_xcalloc(1, sizeof *h);
    h->dir = tu_mkdtemp();
    char *inst = tu_with_dir(instance_json, h->dir);
    char *cfg = sb_asprintf("{\"state_dir\": \"%s/state\", \"log\": {\"level\": \"warn\"},"
                            " \"sources\": {\"harness\": {\"plugin\": \"testsrc\", \"count\": 0}},"
                            " \"%s\": {\"under_test\": %s},"
                            " \"routes\": {\"r\": {\"sources\": [\"harness\"], \"steps\": [\"under_test\"]}}}",
                            h->dir, section, inst);
    char *path = tu_write(h->dir, "syncbridge.json", cfg);
    h->cfg = sb_config_load(path, err, sizeof err);
    ck_assert_msg(h->cfg != NULL, "harness config: %s", err);
    sb_ledger_opts lo = {.fsync = SB_FSYNC_PROCESS, .commit_interval_ms = 2, .retention_ms = 86400000};
    h->ledger = sb_ledger_open(h->cfg->state_dir, &lo, err, sizeof err);
    ck_assert_msg(h->ledger != NULL, "harness ledger: %s", err);
    h->reg = sb_registry_new(h->cfg->plugin_dirs, h->cfg->n_plugin_dirs);
    sb_registry_allow_insecure(h->reg, h->cfg->allow_insecure_plugins);
    free(path);
    free(cfg);
    free(inst);
    return h;
}

sbh *sbh_new_merged(const char *section, const char *base_json, const char *extra)
{
    json_t *o = json_loads(base_json, 0, NULL);
    ck_assert_msg(o != NULL, "bad base options %s", base_json);
    if (extra) {
        char *x = sb_asprintf("{%s}", extra);
        json_t *e = json_loads(x, 0, NULL);
        ck_assert_msg(e != NULL, "bad extra options %s", extra);
        json_object_update(o, e);
        json_decref(e);
        free(x);
    }
    char *text = json_dumps(o, 0);
    json_decref(o);
    sbh *h = sbh_new(section, text);
    free(text);
    return h;
}

void sbh_event(sbh *h, const char *event_id, const char *fields_json)
{
    json_error_t je;
    json_t *fields = json_loads(fields_json, 0, &je);
    ck_assert_msg(json_is_object(fields), "sbh_event(%s): not a JSON object: %s", event_id, je.text);
    sb_event *ev = sb_event_new_with_fields(event_id, fields);
    ck_assert_ptr_nonnull(ev);
    sb_event_set_source(ev, "harness");
    sb_event_set_received_us(ev, sb_now_us());
    char *payload = sb_event_to_payload(ev, NULL);
    sb_ledger_new n = {.event_id = event_id, .route = "r", .source = "harness", .payload = payload,
                       .received_us = sb_event_received_us(ev)};
    ck_assert_msg(sb_ledger_accept(h->ledger, "harness", NULL, &n, 1, err, sizeof err) == 0, "%s", err);
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->events = sb_xrealloc(h->events, h->cap * sizeof *h->events);
    }
    h->events[h->n++] = (fed){.event_id = sb_strdup(event_id), .entry_id = n.entry_id};
    free(payload);
    sb_event_free(ev);
}

void sbh_run(sbh *h)
{
    sb_router *r = sb_router_new(h->cfg, h->reg, h->ledger, 1, err, sizeof err);
    ck_assert_msg(r != NULL, "harness router: %s", err);
    ck_assert_msg(sb_router_start(r, err, sizeof err) == 0, "harness start: %s", err);
    int64_t deadline = sb_mono_us() + 60 * 1000000LL;
    while (!sb_router_finished(r) && sb_mono_us() < deadline)
        usleep(2000);
    ck_assert_msg(sb_router_finished(r), "the plugin did not settle every event in 60 s");
    ck_assert_int_eq(sb_router_stop(r, 10000), 0);
    sb_router_free(r);
    sb_ledger_sync(h->ledger);
    for (size_t i = 0; i < h->n; i++) {
        json_decref(h->events[i].shown);
        h->events[i].shown = sb_ledger_show(h->ledger, h->events[i].entry_id, err, sizeof err);
        ck_assert_msg(h->events[i].shown != NULL, "%s", err);
    }
}

static json_t *shown(sbh *h, const char *event_id)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->events[i].event_id, event_id) == 0) {
            ck_assert_msg(h->events[i].shown != NULL, "event %s: call sbh_run() first", event_id);
            return h->events[i].shown;
        }
    ck_abort_msg("no event %s was fed to the harness", event_id);
    return NULL;
}

const char *sbh_state(sbh *h, const char *event_id)
{
    return json_string_value(json_object_get(shown(h, event_id), "state"));
}

const char *sbh_error(sbh *h, const char *event_id)
{
    return json_string_value(json_object_get(shown(h, event_id), "error"));
}

json_t *sbh_added(sbh *h, const char *event_id)
{
    json_t *steps = json_object_get(shown(h, event_id), "steps");
    json_t *added = json_object_get(json_array_get(steps, 0), "added");
    if (!json_is_object(added)) { /* none recorded: keep an empty object to hand out */
        added = json_object();
        json_object_set_new(shown(h, event_id), "harness_no_fields", added);
    }
    return added;
}

json_t *sbh_step_state(sbh *h, const char *event_id)
{
    json_t *states = json_object_get(shown(h, event_id), "step_states");
    size_t i;
    json_t *s;
    json_array_foreach(states, i, s)
    {
        if (json_integer_value(json_object_get(s, "step")) == 0 && !json_is_null(json_object_get(s, "state")))
            return json_object_get(s, "state");
    }
    return NULL;
}

json_t *sbh_step_progress(sbh *h, const char *event_id)
{
    json_t *states = json_object_get(shown(h, event_id), "step_states");
    size_t i;
    json_t *s;
    json_array_foreach(states, i, s)
    {
        if (json_integer_value(json_object_get(s, "step")) == 0 && !json_is_null(json_object_get(s, "progress")))
            return json_object_get(s, "progress");
    }
    return NULL;
}

const char *sbh_dir(const sbh *h) { return h->dir; }
char *sbh_path(const sbh *h, const char *name) { return sb_asprintf("%s/%s", h->dir, name); }

void sbh_free(sbh *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->events[i].event_id);
        json_decref(h->events[i].shown);
    }
    free(h->events);
    sb_registry_free(h->reg);
    sb_ledger_close(h->ledger);
    sb_config_free(h->cfg);
    tu_rmrf(h->dir);
    free(h->dir);
    free(h);
}
