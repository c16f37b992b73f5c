/* test_bigquery.c - the bigquery sink's process() in the real core against
 * the Google APIs fake (gfake): rows typed from the schema, a job polled
 * with WAIT and step state, a re-run that changes nothing, errors that
 * fail only their event. */
#define _GNU_SOURCE
#include "harness.h"
#include "gcp_testlib.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static tl_proc fake;

static void setup(void)
{
    dir = tl_tmpdir();
    tl_make_rsa(dir, "sa");
    fake = tl_fake_start(dir, 0);
    tl_reset(&fake);
    ck_assert_int_eq(tl_ctl(&fake, 0, "POST", "/_fake/bigquery/table",
                            "{\"project\":\"p\",\"dataset\":\"reg\",\"table\":\"runs\",\"fields\":["
                            "{\"name\":\"id\",\"type\":\"INTEGER\",\"mode\":\"REQUIRED\"},"
                            "{\"name\":\"command\",\"type\":\"STRING\"},"
                            "{\"name\":\"timestamp\",\"type\":\"DATETIME\"},"
                            "{\"name\":\"source\",\"type\":\"STRING\",\"mode\":\"REQUIRED\"}]}",
                            NULL),
                     200);
}

static void teardown(void)
{
    tl_stop(&fake);
    tl_rmrf(dir);
    free(dir);
}

/* The sink's config with `extra` members appended. */
static char *conf(const char *mode, const char *rows, const char *extra)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"plugin\": \"bigquery\", \"project\": \"p\", \"dataset\": \"reg\", \"table\": \"runs\","
                 " \"auth\": \"static\", \"token\": \"fake-static-token\", \"endpoint\": \"http://127.0.0.1:%d\","
                 " \"mode\": \"%s\", \"key\": [\"id\", \"source\"], \"rows\": %s,"
                 " \"retry\": {\"initial\": \"10ms\", \"max_delay\": \"50ms\", \"max_attempts\": 5}%s%s}",
                 fake.port, mode, rows, extra ? ", " : "", extra ? extra : "") < 0)
        ck_abort();
    return s;
}

static const char REGISTRY[] =
    "{\"onprem.id\": \"${run_id}\", \"onprem.command\": \"${command}\", \"onprem.timestamp\": \"${finished_at}\","
    " \"onprem.source\": \"onprem\", \"gcp.id\": \"${run_id}\", \"gcp.command\": \"${command}\","
    " \"gcp.source\": \"gcp\"}";

static char *table_dump(void)
{
    char *out = NULL;
    ck_assert_int_eq(tl_ctl(&fake, 0, "GET", "/_fake/bigquery/table?project=p&dataset=reg&table=runs", NULL, &out),
                     200);
    return out;
}

START_TEST(merge_polls_a_slow_job_then_a_rerun_changes_nothing)
{
    /* every job stays incomplete for two polls: the events WAIT with the job in their state */
    tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"bq_slow_queries\": 2}", NULL);
    char *c = conf("merge", REGISTRY, "\"poll_interval\": \"20ms\", \"query_timeout\": 0, \"time_zone\": \"+02:00\"");
    sbh *h = sbh_new("sinks", c);
    sbh_event(h, "e1", "{\"run_id\": 11, \"command\": \"sh run_replicator.sh a b\", "
                       "\"finished_at\": \"2026-12-05T06:00:00Z\"}");
    sbh_event(h, "e2", "{\"run_id\": 12, \"command\": \"sh run_replicator.sh a c\", "
                       "\"finished_at\": \"2026-12-05 07:30:00.5\"}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    ck_assert_str_eq(sbh_state(h, "e2"), "done");
    ck_assert_msg(json_string_value(json_object_get(sbh_added(h, "e1"), "bigquery_job_id")) != NULL, "job id added");
    ck_assert_int_ge(tl_count(&fake, "/queries/job_", NULL, 0), 2);
    char *rows = table_dump();
    json_t *r = json_loads(rows, 0, NULL);
    ck_assert_int_eq(json_array_size(r), 4);
    /* an instant with a zone in the configured zone; a civil time as written */
    ck_assert_msg(strstr(rows, "\"2026-12-05T08:00:00\""), "%s", rows);
    ck_assert_msg(strstr(rows, "\"2026-12-05T07:30:00.500000\""), "%s", rows);
    json_decref(r);
    free(rows);
    sbh_free(h);

    /* the same events in a fresh ledger: the MERGE finds every row */
    tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"bq_slow_queries\": 0}", NULL);
    h = sbh_new("sinks", c);
    sbh_event(h, "e1", "{\"run_id\": 11, \"command\": \"x\", \"finished_at\": \"2026-12-05T06:00:00Z\"}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    rows = table_dump();
    r = json_loads(rows, 0, NULL);
    ck_assert_int_eq(json_array_size(r), 4);
    json_decref(r);
    free(rows);
    sbh_free(h);
    free(c);
}
END_TEST

START_TEST(update_sets_the_gcp_row_and_retries_a_missing_one)
{
    char *c = conf("merge", REGISTRY, NULL);
    sbh *h = sbh_new("sinks", c);
    sbh_event(h, "e1", "{\"run_id\": 21, \"command\": \"c\", \"finished_at\": \"2026-12-05T06:00:00Z\"}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    sbh_free(h);
    free(c);

    c = conf("update", "{\"id\": \"${run_id}\", \"source\": \"gcp\", \"timestamp\": \"${done_at}\"}", NULL);
    h = sbh_new("sinks", c);
    sbh_event(h, "u1", "{\"run_id\": 21, \"done_at\": \"2026-12-05T09:00:00Z\"}");
    sbh_event(h, "u2", "{\"run_id\": 99, \"done_at\": \"2026-12-05T09:00:00Z\"}"); /* no such run */
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "u1"), "done");
    ck_assert_str_eq(sbh_state(h, "u2"), "dead"); /* retried until the budget ran out */
    ck_assert_msg(strstr(sbh_error(h, "u2"), "matched 0 of 1 rows"), "%s", sbh_error(h, "u2"));
    char *rows = table_dump();
    ck_assert_msg(strstr(rows, "\"2026-12-05T09:00:00\""), "%s", rows);
    free(rows);
    sbh_free(h);
    free(c);
}
END_TEST

START_TEST(schema_mismatch_and_bad_values_fail_with_the_reason)
{
    char *c = conf("merge", "{\"id\": \"${run_id}\", \"source\": \"x\", \"nope\": \"1\"}", NULL);
    sbh *h = sbh_new("sinks", c);
    sbh_event(h, "e1", "{\"run_id\": 1}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    ck_assert_msg(strstr(sbh_error(h, "e1"), "has no column \"nope\""), "%s", sbh_error(h, "e1"));
    sbh_free(h);
    free(c);

    c = conf("merge", REGISTRY, NULL);
    h = sbh_new("sinks", c);
    sbh_event(h, "good", "{\"run_id\": 31, \"command\": \"c\", \"finished_at\": \"2026-12-05T06:00:00Z\"}");
    sbh_event(h, "bad", "{\"run_id\": 32, \"command\": \"c\", \"finished_at\": \"yesterday\"}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "good"), "done");
    ck_assert_str_eq(sbh_state(h, "bad"), "dead");
    ck_assert_msg(strstr(sbh_error(h, "bad"), "column timestamp (DATETIME)"), "%s", sbh_error(h, "bad"));
    sbh_free(h);
    free(c);
}
END_TEST

Suite *sbh_suite(void)
{
    Suite *s = suite_create("bigquery");
    TCase *tc = tcase_create("fake");
    tcase_set_timeout(tc, 120);
    if (tl_have_fake()) {
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, merge_polls_a_slow_job_then_a_rerun_changes_nothing);
        tcase_add_test(tc, update_sets_the_gcp_row_and_retries_a_missing_one);
        tcase_add_test(tc, schema_mismatch_and_bad_values_fail_with_the_reason);
    }
    suite_add_tcase(s, tc);
    return s;
}
