/*
 * test_router.c - the router end to end in-process, with the real config
 * loader, plugin loader and ledger: ordering, fields handed on, fan-out,
 * match, templates, retries, dead letters, fatal restarts, backpressure,
 * resume at the first unfinished step.
 */
#include "build_config.h"
#include "config/config.h"
#include "events/event_internal.h"
#include "ledger/ledger.h"
#include "engine/loader.h"
#include "engine/router.h"
#include "testutil.h"
#include "util/util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct harness {
    char *dir;
    char *record;
    sb_config *cfg;
    sb_registry *reg;
    sb_ledger *ledger;
    sb_router *router;
    json_t *stats;
    int64_t max_inflight_seen;
} harness;

static char err[4096];

/* Write the config (@D@ = scratch dir), build everything, but do not start. */
static void h_build_fsync(harness *h, const char *config_tpl, sb_fsync_policy fsync)
{
    memset(h, 0, sizeof *h);
    h->dir = tu_mkdtemp();
    h->record = sb_asprintf("%s/record.txt", h->dir);
    char *text = tu_with_dir(config_tpl, h->dir);
    char *path = tu_write(h->dir, "syncbridge.json", text);
    h->cfg = sb_config_load(path, err, sizeof err);
    ck_assert_msg(h->cfg != NULL, "config: %s", err);
    sb_ledger_opts lo = {.fsync = fsync, .commit_interval_ms = 2, .retention_ms = 86400000};
    h->ledger = sb_ledger_open(h->cfg->state_dir, &lo, err, sizeof err);
    ck_assert_msg(h->ledger != NULL, "ledger: %s", err);
    h->reg = sb_registry_new(h->cfg->plugin_dirs, h->cfg->n_plugin_dirs);
    free(text);
    free(path);
}

static void h_build(harness *h, const char *config_tpl) { h_build_fsync(h, config_tpl, SB_FSYNC_PROCESS); }

/* Start, run until every event settled (--once semantics), stop. */
static void h_run(harness *h)
{
    h->router = sb_router_new(h->cfg, h->reg, h->ledger, 1, err, sizeof err);
    ck_assert_msg(h->router != NULL, "router: %s", err);
    ck_assert_msg(sb_router_start(h->router, err, sizeof err) == 0, "start: %s", err);
    int64_t deadline = sb_mono_us() + 60 * 1000000LL;
    while (!sb_router_finished(h->router) && sb_mono_us() < deadline) {
        json_t *st = sb_router_stats(h->router);
        json_t *routes = json_object_get(st, "routes"), *v;
        const char *k;
        json_object_foreach(routes, k, v)
        {
            int64_t inflight = json_integer_value(json_object_get(v, "inflight"));
            if (inflight > h->max_inflight_seen)
                h->max_inflight_seen = inflight;
        }
        json_decref(st);
        usleep(2000);
    }
    ck_assert_msg(sb_router_finished(h->router), "router did not finish in 60 s");
    ck_assert_int_eq(sb_router_stop(h->router, 10000), 0);
    h->stats = sb_router_stats(h->router);
    sb_ledger_sync(h->ledger);
}

static void h_free(harness *h)
{
    sb_router_free(h->router);
    sb_registry_free(h->reg);
    sb_ledger_close(h->ledger);
    sb_config_free(h->cfg);
    json_decref(h->stats);
    tu_rmrf(h->dir);
    free(h->dir);
    free(h->record);
}

static int64_t stat_of(harness *h, const char *route, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(json_object_get(h->stats, "routes"), route), key));
}

static int64_t count_state(harness *h, int state)
{
    int64_t p = 0, d = 0, x = 0;
    ck_assert_int_eq(sb_ledger_counts(h->ledger, &p, &d, &x), 0);
    return state == SB_ENTRY_PENDING ? p : state == SB_ENTRY_DONE ? d : x;
}

START_TEST(steps_run_in_order_and_hand_fields_on)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 50, \"batch\": 7}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"add_field\": \"from_a\","
                "                    \"add_value\": \"${table}-${n}\"},"
                "             \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"expect_field\": \"from_a\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\", \"b\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 50);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 0);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-"), 50);
    ck_assert_int_eq(tu_count_lines(h.record, "b ev-"), 50);
    ck_assert_int_eq(tu_count_lines(h.record, " fail"), 0);
    /* each event: a's line comes before b's */
    char *rec = tu_slurp(h.record);
    char *a = strstr(rec, "a ev-17 "), *b = strstr(rec, "b ev-17 ");
    ck_assert(a && b && a < b);
    free(rec);
    /* the added field is recorded in the ledger with the step */
    json_t *list = sb_ledger_list(h.ledger, &(sb_ledger_filter){.state = -1, .limit = 1}, err, sizeof err);
    ck_assert_ptr_nonnull(list);
    json_t *one = sb_ledger_show(h.ledger, json_integer_value(json_object_get(json_array_get(list, 0), "entry_id")),
                                 err, sizeof err);
    ck_assert_msg(one != NULL, "%s", err);
    char *dump = json_dumps(one, 0);
    ck_assert_msg(strstr(dump, "\"from_a\": \"odd_table-49\"") || strstr(dump, "\"from_a\": \"even_table-"), "%s", dump);
    ck_assert_msg(strstr(dump, "_table-"), "template not rendered: %s", dump);
    free(dump);
    json_decref(one);
    json_decref(list);
    h_free(&h);
}
END_TEST

START_TEST(fan_out_runs_every_member_then_the_next_step)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 40, \"batch\": 10}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"add_field\": \"fa\"},"
                "             \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"add_field\": \"fb\"},"
                "             \"c\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"expect_field\": \"fb\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [[\"a\", \"b\"], \"c\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 40);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-"), 40);
    ck_assert_int_eq(tu_count_lines(h.record, "b ev-"), 40);
    ck_assert_int_eq(tu_count_lines(h.record, "c ev-"), 40);
    ck_assert_int_eq(tu_count_lines(h.record, " fail"), 0);
    h_free(&h);
}
END_TEST

START_TEST(match_selects_events)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 30, \"batch\": 4}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"],"
                "   \"match\": {\"all\": [{\"field\": \"status\", \"equals\": \"failed\"},"
                "                         {\"field\": \"table\", \"glob\": \"even_*\"}]}}}}");
    h_run(&h);
    /* n % 3 == 0 -> failed; n even -> even_table: n in {0,6,12,18,24} */
    ck_assert_int_eq(stat_of(&h, "r", "done"), 5);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-"), 5);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-12 "), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_object_get(h.stats, "sources"), "src"), "unrouted")),
                     25);
    h_free(&h);
}
END_TEST

START_TEST(retries_then_succeeds)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 20, \"batch\": 5}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"fail_first\": 2,"
                "                    \"retry\": {\"initial\": \"5ms\", \"max_delay\": \"20ms\"}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 20);
    ck_assert_int_eq(stat_of(&h, "r", "retried"), 40);
    ck_assert_int_eq(tu_count_lines(h.record, " 1 retry"), 20);
    ck_assert_int_eq(tu_count_lines(h.record, " 2 retry"), 20);
    ck_assert_int_eq(tu_count_lines(h.record, " 3 ok"), 20);
    ck_assert_int_eq(count_state(&h, SB_ENTRY_DONE), 20);
    h_free(&h);
}
END_TEST

START_TEST(retry_after_is_honoured)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 3, \"batch\": 3}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"fail_first\": 1,"
                "                    \"retry_after\": \"400ms\", \"retry\": {\"initial\": \"1ms\", \"max_delay\": \"2ms\"}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    int64_t t0 = sb_mono_us();
    h_run(&h);
    ck_assert_int_ge(sb_mono_us() - t0, 400000);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 3);
    h_free(&h);
}
END_TEST

START_TEST(permanent_failure_is_dead_lettered)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 10, \"batch\": 10}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"result\": \"fail\"},"
                "             \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\", \"b\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 10);
    ck_assert_int_eq(tu_count_lines(h.record, "b ev-"), 0); /* never reached */
    ck_assert_int_eq(count_state(&h, SB_ENTRY_DEAD), 10);
    json_t *dead = sb_ledger_list(h.ledger, &(sb_ledger_filter){.state = SB_ENTRY_DEAD}, err, sizeof err);
    ck_assert_int_eq(json_array_size(dead), 10);
    const char *why = json_string_value(json_object_get(json_array_get(dead, 0), "error"));
    ck_assert_msg(why && strstr(why, "a: failed: fail"), "%s", why ? why : "(null)");
    /* replay puts them back as pending at the failed step */
    ck_assert_int_eq(sb_ledger_dlq_replay(h.ledger, 0, NULL, err, sizeof err), 10);
    ck_assert_int_eq(count_state(&h, SB_ENTRY_PENDING), 10);
    json_decref(dead);
    h_free(&h);
}
END_TEST

START_TEST(exhausted_retry_budget_is_dead_lettered)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 4, \"batch\": 4}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"result\": \"retry\","
                "                    \"abandons\": \"@D@/abandons.txt\","
                "                    \"retry\": {\"max_attempts\": 3, \"initial\": \"1ms\", \"max_delay\": \"5ms\"}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 4);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-"), 12); /* 3 attempts each */
    json_t *dead = sb_ledger_list(h.ledger, &(sb_ledger_filter){.state = SB_ENTRY_DEAD}, err, sizeof err);
    const char *why = json_string_value(json_object_get(json_array_get(dead, 0), "error"));
    ck_assert_msg(why && strstr(why, "retry budget exhausted after 3 attempts"), "%s", why ? why : "(null)");
    json_decref(dead);
    /* the core gave up: the plugin is told, to cancel what it started */
    char path[1100];
    snprintf(path, sizeof path, "%s/abandons.txt", h.dir);
    ck_assert_int_eq(tu_count_lines(path, " abandon"), 4);
    h_free(&h);
}
END_TEST

/* A fan-out member's FAIL dead-letters the event: the members that did not
 * fail it and are not done are told (abandon), to drop what they started
 * or waited on; the one that failed it is not. */
START_TEST(a_fan_out_fail_abandons_the_other_members)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 3, \"batch\": 3}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"result\": \"fail\","
                "                    \"abandons\": \"@D@/abandons.txt\"},"
                "             \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"wait_polls\": 1000,"
                "                    \"abandons\": \"@D@/abandons.txt\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [[\"a\", \"b\"]]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 3);
    char path[1100];
    snprintf(path, sizeof path, "%s/abandons.txt", h.dir);
    ck_assert_int_eq(tu_count_lines(path, "b ev-"), 3);
    ck_assert_int_eq(tu_count_lines(path, "a ev-"), 0);
    h_free(&h);
}
END_TEST

START_TEST(unset_result_is_a_failure_not_a_silent_drop)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 3, \"batch\": 3}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"result\": \"unset\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 3);
    json_t *dead = sb_ledger_list(h.ledger, &(sb_ledger_filter){.state = SB_ENTRY_DEAD}, err, sizeof err);
    const char *why = json_string_value(json_object_get(json_array_get(dead, 0), "error"));
    ck_assert_msg(why && strstr(why, "set no result"), "%s", why ? why : "(null)");
    json_decref(dead);
    h_free(&h);
}
END_TEST

START_TEST(fatal_restarts_instance_without_charging)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 20, \"batch\": 5}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"fatal_once_at\": 1,"
                "                    \"batch_max\": 5, \"retry\": {\"max_attempts\": 1, \"initial\": \"5ms\"}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    /* max_attempts 1: had FATAL been charged, those events would be dead */
    ck_assert_int_eq(stat_of(&h, "r", "done"), 20);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 0);
    ck_assert_int_eq(tu_count_lines(h.record, " fatal"), 5);
    h_free(&h);
}
END_TEST

START_TEST(backpressure_bounds_inflight)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\", \"limits\": {\"max_inflight\": 8},"
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 120, \"batch\": 4}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"delay\": \"5ms\","
                "                    \"batch_max\": 2}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 120);
    ck_assert_msg(h.max_inflight_seen <= 8, "in flight reached %lld, limit 8", (long long)h.max_inflight_seen);
    ck_assert_int_ge(h.max_inflight_seen, 4); /* the limit was actually approached */
    h_free(&h);
}
END_TEST

/* A source feeding two routes: each route's entries of a batch get
 * consecutive ledger ids (which lets the ledger settle each as a range). */
START_TEST(each_route_of_a_batch_gets_consecutive_ids)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 64, \"batch\": 64}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\"}},"
                " \"routes\": {\"one\": {\"sources\": [\"src\"], \"steps\": [\"a\"]},"
                "            \"two\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "one", "done"), 64);
    ck_assert_int_eq(stat_of(&h, "two", "done"), 64);
    static const char *const routes[] = {"one", "two"};
    for (int k = 0; k < 2; k++) {
        sb_ledger_filter f = {.route = routes[k], .state = -1, .limit = 100};
        json_t *list = sb_ledger_list(h.ledger, &f, err, sizeof err);
        ck_assert_msg(list != NULL, "list: %s", err);
        ck_assert_int_eq(json_array_size(list), 64);
        /* newest first: ids count down by one, events in their order */
        for (size_t i = 1; i < 64; i++) {
            json_t *a = json_array_get(list, i - 1), *b = json_array_get(list, i);
            ck_assert_int_eq(json_integer_value(json_object_get(a, "entry_id")),
                             json_integer_value(json_object_get(b, "entry_id")) + 1);
            ck_assert_str_eq(json_string_value(json_object_get(a, "state")), "done");
        }
        char want[16];
        snprintf(want, sizeof want, "ev-%d", 63);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "event_id")), want);
        json_decref(list);
    }
    h_free(&h);
}
END_TEST

START_TEST(duplicates_are_not_routed_twice)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 10, \"batch\": 5}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    /* Drop the source checkpoint's effect by a second source with the same ids */
    sb_router_free(h.router);
    h.router = NULL;
    json_decref(h.stats);
    sb_ledger_new again = {.event_id = "ev-3", .route = "r", .source = "src", .payload = "{}", .received_us = 1};
    ck_assert_int_eq(sb_ledger_accept(h.ledger, "other", NULL, &again, 1, err, sizeof err), 0);
    ck_assert_int_eq(again.duplicate, 1);
    h_run(&h);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-3 "), 1);
    h_free(&h);
}
END_TEST

/* A source that keeps batches in flight: the batches that queue up behind
 * a commit (slow here: fsync on every commit) are committed together, each
 * event reaches each of its routes once, and the checkpoint ends at the
 * last batch's. */
START_TEST(async_batches_in_flight_commit_in_order)
{
    harness h;
    h_build_fsync(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 2000, \"batch\": 3,"
                "                          \"in_flight\": 4}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\"},"
                "           \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record_b.txt\"}},"
                " \"routes\": {\"all\": {\"sources\": [\"src\"], \"steps\": [\"a\"]},"
                "            \"odd\": {\"sources\": [\"src\"], \"match\": {\"field\": \"table\", \"equals\": \"odd_table\"},"
                "                     \"steps\": [\"b\"]}}}",
                  SB_FSYNC_POWER);
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "all", "done"), 2000);
    ck_assert_int_eq(stat_of(&h, "odd", "done"), 1000);
    ck_assert_int_eq(count_state(&h, SB_ENTRY_DONE), 3000);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-"), 2000);
    char *record_b = sb_asprintf("%s/record_b.txt", h.dir);
    ck_assert_int_eq(tu_count_lines(record_b, "b ev-"), 1000);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-1999 "), 1);
    ck_assert_int_eq(tu_count_lines(record_b, "b ev-1999 "), 1);
    ck_assert_int_eq(tu_count_lines(record_b, "b ev-1998 "), 0);
    free(record_b);
    int failed = 0;
    char *cp = sb_ledger_checkpoint(h.ledger, "src", &failed, err, sizeof err);
    ck_assert_msg(cp != NULL, "checkpoint: %s", err);
    ck_assert_str_eq(cp, "2000");
    free(cp);
    h_free(&h);
}
END_TEST

/* A ledger entry that finished step 1 before a crash resumes at step 2,
 * with the field step 1 added. */
START_TEST(resume_starts_at_first_unfinished_step)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 0}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\"},"
                "             \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"expect_field\": \"from_a\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\", \"b\"]}}}");
    sb_event *ev = sb_event_new("crashed-1");
    sb_event_set_source(ev, "src");
    sb_event_set_string(ev, "table", "t");
    char *payload = sb_event_to_payload(ev, NULL);
    sb_ledger_new n = {.event_id = "crashed-1", .route = "r", .source = "src", .payload = payload, .received_us = 1};
    ck_assert_int_eq(sb_ledger_accept(h.ledger, "src", NULL, &n, 1, err, sizeof err), 0);
    sb_ledger_step a = {.entry_id = n.entry_id, .step = 0, .member = "a", .attempts = 1,
                        .added_json = "{\"from_a\": \"yes\", \"nul\": \"a\\u0000b\"}"}; /* a NUL: still read */
    sb_ledger_steps_done(h.ledger, &a, 1);
    sb_ledger_sync(h.ledger);
    h_run(&h);
    ck_assert_int_eq(tu_count_lines(h.record, "a crashed-1"), 0);
    ck_assert_int_eq(tu_count_lines(h.record, "b crashed-1 1 ok"), 1);
    ck_assert_int_eq(count_state(&h, SB_ENTRY_DONE), 1);
    free(payload);
    sb_event_free(ev);
    h_free(&h);
}
END_TEST

/* ABI 2: a step that WAITs with state is polled until done, its waits are
 * not charged to the retry budget (max_attempts 1), and its one side effect
 * (the trigger) happens once per event. */
START_TEST(waits_with_state_until_done)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 6, \"batch\": 3}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"wait_polls\": 3,"
                "                    \"wait_ms\": \"5ms\", \"retry\": {\"max_attempts\": 1}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 6);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 0);
    ck_assert_int_eq(tu_count_lines(h.record, " trigger"), 6);
    ck_assert_int_eq(tu_count_lines(h.record, " wait 1"), 6);
    ck_assert_int_eq(tu_count_lines(h.record, " wait 3"), 6);
    ck_assert_int_eq(tu_count_lines(h.record, " wait 4"), 6); /* the poll that finds it done */
    ck_assert_int_eq(tu_count_lines(h.record, " ok"), 6);
    ck_assert_int_eq(stat_of(&h, "r", "waits"), 6 * 4);
    h_free(&h);
}
END_TEST

/* The wait is bounded by step_timeout: then the event is dead-lettered,
 * saying why. */
START_TEST(step_timeout_ends_a_wait)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 2, \"batch\": 2}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"wait_polls\": 100000,"
                "                    \"wait_ms\": \"20ms\", \"step_timeout\": \"300ms\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 2);
    ck_assert_int_eq(tu_count_lines(h.record, " trigger"), 2);
    json_t *dead = sb_ledger_list(h.ledger, &(sb_ledger_filter){.state = SB_ENTRY_DEAD}, err, sizeof err);
    ck_assert_msg(json_array_size(dead) == 2, "%s", err);
    const char *why = json_string_value(json_object_get(json_array_get(dead, 0), "error"));
    ck_assert_msg(why && strstr(why, "step_timeout reached") && strstr(why, "waiting"), "%s", why ? why : "(none)");
    json_decref(dead);
    h_free(&h);
}
END_TEST

/* After a restart the step gets its state back: no second trigger. */
START_TEST(resumed_wait_gets_its_state_back)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 0}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"wait_polls\": 3,"
                "                    \"wait_ms\": \"5ms\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    sb_event *ev = sb_event_new("waited-1");
    sb_event_set_source(ev, "src");
    char *payload = sb_event_to_payload(ev, NULL);
    sb_ledger_new n = {.event_id = "waited-1", .route = "r", .source = "src", .payload = payload, .received_us = 1};
    ck_assert_int_eq(sb_ledger_accept(h.ledger, "src", NULL, &n, 1, err, sizeof err), 0);
    /* as a daemon killed after its second poll left it */
    ck_assert_int_eq(sb_ledger_step_state(h.ledger, n.entry_id, 0, "a", "{\"run\": \"waited-1\", \"polls\": 2}", 1,
                                          err, sizeof err), 0);
    sb_ledger_retry(h.ledger, n.entry_id, 0, 0, sb_now_us(), "a: waiting: poll 2");
    sb_ledger_sync(h.ledger);
    h_run(&h);
    ck_assert_int_eq(tu_count_lines(h.record, " trigger"), 0);
    ck_assert_int_eq(tu_count_lines(h.record, "a waited-1 1 wait 3"), 1);
    ck_assert_int_eq(tu_count_lines(h.record, " ok"), 1);
    ck_assert_int_eq(count_state(&h, SB_ENTRY_DONE), 1);
    free(payload);
    sb_event_free(ev);
    h_free(&h);
}
END_TEST

/* ABI 2 option tables: the core refuses a value outside an option's choices
 * or range, naming the file, the JSON path and what is allowed. */
START_TEST(option_choices_and_ranges_are_enforced)
{
    static const struct {
        const char *sink;
        const char *want[3];
    } cases[] = {
        {"{\"plugin\": \"testsink\", \"result\": \"okk\"}",
         {"sinks.a.result: \"okk\" is not one of the allowed values", "\"unset\", \"ok\", \"retry\"",
          "did you mean \"ok\"?"}},
        {"{\"plugin\": \"testsink\", \"fail_first\": -1}", {"sinks.a.fail_first: -1 is outside the allowed range 0 to 1000"}},
        {"{\"plugin\": \"testsink\", \"wait_ms\": \"2h\"}", {"sinks.a.wait_ms: 2h is outside the allowed range 1ms to 1h"}},
        /* a substituted value is never echoed (it may be a secret) */
        {"{\"plugin\": \"testsink\", \"result\": \"${env:SB_TEST_CHOICE}\"}",
         {"sinks.a.result: the value substituted for \"${env:SB_TEST_CHOICE}\" (not shown) is not one of the allowed",
          "\"unset\", \"ok\", \"retry\""}},
    };
    setenv("SB_TEST_CHOICE", "okk-s3cr3t", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        harness h;
        char *cfg = sb_asprintf("{\"state_dir\": \"@D@/state\","
                                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 0}},"
                                " \"sinks\": {\"a\": %s},"
                                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}",
                                cases[i].sink);
        h_build(&h, cfg);
        free(cfg);
        ck_assert_ptr_null(sb_router_new(h.cfg, h.reg, h.ledger, 1, err, sizeof err));
        ck_assert_msg(strstr(err, "syncbridge.json: "), "no file in: %s", err);
        for (size_t k = 0; k < 3 && cases[i].want[k]; k++)
            ck_assert_msg(strstr(err, cases[i].want[k]), "\"%s\" lacks \"%s\"", err, cases[i].want[k]);
        ck_assert_msg(!strstr(err, "s3cr3t"), "a substituted value is echoed: %s", err);
        h_free(&h);
    }
}
END_TEST

START_TEST(check_command_prints_routes_and_rejects_bad_config)
{
    char *dir = tu_mkdtemp();
    char *good = tu_write(dir, "good.json",
                          "{\"state_dir\": \"/tmp/x\", \"sources\": {\"src\": {\"plugin\": \"testsrc\"}},"
                          " \"sinks\": {\"a\": {\"plugin\": \"discard\"}, \"b\": {\"plugin\": \"discard\"}},"
                          " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [[\"a\", \"b\"]]}}}");
    char *bad = tu_write(dir, "bad.json",
                         "{\"sources\": {\"src\": {\"plugin\": \"testsrc\", \"cuont\": 5}},"
                         " \"sinks\": {\"a\": {\"plugin\": \"discard\"}},"
                         " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    char *out = NULL;
    const char *a1[] = {"check", "-c", good, NULL};
    ck_assert_int_eq(tu_run_syncbridge(&out, a1), 0);
    ck_assert_msg(strstr(out, "route r") && strstr(out, "in parallel") && strstr(out, "a (sink discard)"), "%s", out);
    free(out);
    const char *a2[] = {"check", "-c", bad, NULL};
    ck_assert_int_eq(tu_run_syncbridge(&out, a2), 3);
    ck_assert_msg(strstr(out, "bad.json") && strstr(out, "sources.src.cuont"), "%s", out);
    free(out);
    free(good);
    free(bad);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- retries as a fleet (the step's circuit) ---- */

typedef struct call_line {
    long long ms;
    int n;
    char result[16];
} call_line;

/* testsink's `calls` file (in the harness's directory): one line per
 * process() call. */
static size_t read_calls(const harness *h, call_line *out, size_t max)
{
    char *path = sb_asprintf("%s/calls.txt", h->dir);
    FILE *f = fopen(path, "r");
    free(path);
    size_t k = 0;
    if (!f)
        return 0;
    while (k < max && fscanf(f, "%lld %d %15s", &out[k].ms, &out[k].n, out[k].result) == 3)
        k++;
    fclose(f);
    return k;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* A far side that is down for 1.5 s while 600 events wait: one probe batch
 * at a time goes out at the retry pace (each event on its own timer sent a
 * call per event, hundreds), only the probes' events are charged an
 * attempt, and after the outage the held events go in full batches. */
START_TEST(an_outage_is_probed_not_stormed)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 600, \"batch\": 50}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"calls\": \"@D@/calls.txt\","
                "                    \"outage\": \"1500ms\", \"batch_max\": 100,"
                "                    \"retry\": {\"initial\": \"100ms\", \"max_delay\": \"400ms\", \"max_attempts\": 100}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 600);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 0);
    static call_line calls[2000];
    size_t n = read_calls(&h, calls, 2000);
    int failed = 0, ok_sizes[2000], n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(calls[i].result, "retry") == 0)
            failed++;
        else
            ok_sizes[n_ok++] = calls[i].n;
    }
    /* 1.5 s at a pace of 50-100, 100-200, then 200-400 ms: about 7 */
    ck_assert_msg(failed >= 2 && failed <= 15, "%d calls during the outage", failed);
    ck_assert_int_ge(stat_of(&h, "r", "circuit_opens"), 1);
    qsort(ok_sizes, (size_t)n_ok, sizeof *ok_sizes, cmp_int);
    ck_assert_msg(n_ok > 0 && ok_sizes[n_ok / 2] >= 80, "median batch after the outage: %d of 100 (%d calls)",
                  n_ok ? ok_sizes[n_ok / 2] : 0, n_ok);
    /* each event done once; those never in a probe at their first attempt */
    ck_assert_int_eq(tu_count_lines(h.record, " ok"), 600);
    ck_assert_int_ge(tu_count_lines(h.record, " 1 ok"), 400);
    h_free(&h);
}
END_TEST

/* A batch's retries share one delay and keep their order: the events a
 * call answered RETRY come back together, in one later call per failed
 * call, in the order they had. (Each on a timer of its own, they came back
 * scattered over many calls.) */
START_TEST(a_batchs_retries_come_back_together_in_order)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 90, \"batch\": 90}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"calls\": \"@D@/calls.txt\","
                "                    \"fail_every\": 3, \"batch_max\": 100,"
                "                    \"retry\": {\"initial\": \"300ms\", \"max_delay\": \"300ms\"}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 90);
    ck_assert_int_eq(stat_of(&h, "r", "retried"), 30);
    static call_line calls[200];
    size_t n_calls = read_calls(&h, calls, 200);
    /* the record's lines, one per event, in call order */
    static char ids[200][64];
    static int attempt[200];
    size_t n_lines = 0;
    FILE *f = fopen(h.record, "r");
    ck_assert_ptr_nonnull(f);
    char inst[64], res[16];
    while (n_lines < 200 && fscanf(f, "%63s %63s %d %15s", inst, ids[n_lines], &attempt[n_lines], res) == 4)
        n_lines++;
    fclose(f);
    ck_assert_int_eq(n_lines, 120);
    /* the calls of first attempts (which failed some events), and the
     * calls that retried those */
    size_t line = 0, first_tries = 0, retrying = 0;
    for (size_t c = 0; c < n_calls; c++) {
        int retried = 0;
        for (int k = 0; k < calls[c].n; k++, line++)
            retried |= attempt[line] == 2;
        first_tries += !retried;
        retrying += retried;
    }
    ck_assert_int_eq(line, n_lines);
    ck_assert_msg(retrying <= first_tries, "%zu calls retried the events of %zu calls", retrying, first_tries);
    /* in their order: the retried ids in the record as the failed ones */
    size_t next_failed = 0;
    for (size_t i = 0; i < n_lines; i++) {
        if (attempt[i] != 2)
            continue;
        while (next_failed < n_lines && !(attempt[next_failed] == 1 && strcmp(ids[next_failed], ids[i]) == 0))
            next_failed++;
        ck_assert_msg(next_failed < n_lines, "%s came back out of order", ids[i]);
    }
    h_free(&h);
}
END_TEST

/* A Retry-After pauses the instance: no call at all before it ends, not
 * only none for the events it was given with (events that came later went
 * out at once). */
START_TEST(retry_after_pauses_the_instance)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 40, \"batch\": 10}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"calls\": \"@D@/calls.txt\","
                "                    \"fail_first\": 1, \"retry_after\": \"500ms\", \"batch_max\": 10,"
                "                    \"retry\": {\"initial\": \"1ms\", \"max_delay\": \"2ms\"}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 40);
    call_line calls[200];
    size_t n = read_calls(&h, calls, 200);
    ck_assert_int_ge(n, 2);
    for (size_t i = 0; i + 1 < n; i++)
        if (strcmp(calls[i].result, "retry") == 0)
            ck_assert_msg(calls[i + 1].ms - calls[i].ms >= 450, "call %zu came %lld ms after a Retry-After of 500 ms",
                          i + 1, calls[i + 1].ms - calls[i].ms);
    h_free(&h);
}
END_TEST

/* While the step fails, events that wait without being sent are charged no
 * attempt, but the time budget holds: they are dead-lettered when it runs
 * out, saying why. */
START_TEST(held_events_keep_the_time_budget)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 300, \"batch\": 50}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"result\": \"retry\","
                "                    \"batch_max\": 10,"
                "                    \"retry\": {\"initial\": \"100ms\", \"max_delay\": \"100ms\", \"max_time\": \"400ms\","
                "                              \"max_attempts\": 1000}}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "dead"), 300);
    ck_assert_int_eq(count_state(&h, SB_ENTRY_DEAD), 300);
    /* about 5 probes of 10 events in 400 ms: far fewer calls than events */
    ck_assert_int_le(tu_count_lines(h.record, "a ev-"), 150);
    json_t *dead = sb_ledger_list(h.ledger, &(sb_ledger_filter){.state = SB_ENTRY_DEAD, .limit = 1000}, err, sizeof err);
    int held = 0;
    size_t i;
    json_t *d;
    json_array_foreach(dead, i, d)
    {
        const char *why = json_string_value(json_object_get(d, "error"));
        held += why && strstr(why, "retry budget exhausted after 0 attempts") &&
                strstr(why, "held while the step was failing: a: retry: retry");
    }
    ck_assert_int_ge(held, 100);
    json_decref(dead);
    h_free(&h);
}
END_TEST

/* In a fan-out the member that is down opens the circuit on its own: the
 * other member's successes do not close it, and it runs once per event. */
START_TEST(a_failing_fan_out_member_opens_the_circuit)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 300, \"batch\": 30}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\","
                "                    \"retry\": {\"initial\": \"100ms\", \"max_delay\": \"400ms\", \"max_attempts\": 100}},"
                "             \"b\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"calls\": \"@D@/calls.txt\","
                "                    \"outage\": \"1200ms\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [[\"a\", \"b\"]]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 300);
    ck_assert_int_eq(tu_count_lines(h.record, "a ev-"), 300);
    ck_assert_int_eq(tu_count_lines(h.record, " ok"), 600);
    call_line calls[2000];
    size_t n = read_calls(&h, calls, 2000);
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += strcmp(calls[i].result, "retry") == 0;
    ck_assert_msg(failed >= 2 && failed <= 15, "%d calls to b during its outage", failed);
    h_free(&h);
}
END_TEST

/* WAIT is not a failure: polls never open the circuit. */
START_TEST(waits_do_not_open_the_circuit)
{
    harness h;
    h_build(&h, "{\"state_dir\": \"@D@/state\","
                " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 20, \"batch\": 5}},"
                " \"sinks\": {\"a\": {\"plugin\": \"testsink\", \"record\": \"@D@/record.txt\", \"wait_polls\": 3,"
                "                    \"wait_ms\": \"5ms\"}},"
                " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"a\"]}}}");
    h_run(&h);
    ck_assert_int_eq(stat_of(&h, "r", "done"), 20);
    ck_assert_int_eq(stat_of(&h, "r", "circuit_opens"), 0);
    ck_assert_int_eq(stat_of(&h, "r", "retried"), 0);
    h_free(&h);
}
END_TEST


int main(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("router");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, steps_run_in_order_and_hand_fields_on);
    tcase_add_test(tc, fan_out_runs_every_member_then_the_next_step);
    tcase_add_test(tc, match_selects_events);
    tcase_add_test(tc, retries_then_succeeds);
    tcase_add_test(tc, retry_after_is_honoured);
    tcase_add_test(tc, permanent_failure_is_dead_lettered);
    tcase_add_test(tc, exhausted_retry_budget_is_dead_lettered);
    tcase_add_test(tc, unset_result_is_a_failure_not_a_silent_drop);
    tcase_add_test(tc, fatal_restarts_instance_without_charging);
    tcase_add_test(tc, backpressure_bounds_inflight);
    tcase_add_test(tc, duplicates_are_not_routed_twice);
    tcase_add_test(tc, each_route_of_a_batch_gets_consecutive_ids);
    tcase_add_test(tc, async_batches_in_flight_commit_in_order);
    tcase_add_test(tc, resume_starts_at_first_unfinished_step);
    tcase_add_test(tc, waits_with_state_until_done);
    tcase_add_test(tc, step_timeout_ends_a_wait);
    tcase_add_test(tc, resumed_wait_gets_its_state_back);
    tcase_add_test(tc, option_choices_and_ranges_are_enforced);
    tcase_add_test(tc, check_command_prints_routes_and_rejects_bad_config);
    tcase_add_test(tc, an_outage_is_probed_not_stormed);
    tcase_add_test(tc, a_batchs_retries_come_back_together_in_order);
    tcase_add_test(tc, retry_after_pauses_the_instance);
    tcase_add_test(tc, held_events_keep_the_time_budget);
    tcase_add_test(tc, waits_do_not_open_the_circuit);
    tcase_add_test(tc, a_failing_fan_out_member_opens_the_circuit);
    tcase_add_test(tc, a_fan_out_fail_abandons_the_other_members);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
