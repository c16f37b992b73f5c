/* test_composer.c - the composer action in process (harness.h) against the
 * fake's Composer environments and Airflow 2/3 REST APIs. */
#include "harness.h"
#include "gcp_testlib.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define ENV "projects/p/locations/us-central1/environments/env1"
#define CMD "sh /opt/cerebro/run_replicator.sh edw orders"
#define FIELDS "{\"command\": \"" CMD "\", \"schema\": \"edw\", \"table\": \"orders\", \"run_id\": 42}"

static char *dir;
static tl_proc fake;

static void suite_setup(void)
{
    dir = tl_tmpdir();
    tl_make_rsa(dir, "sa");
    fake = tl_fake_start(dir, 0);
}

static void suite_teardown(void)
{
    tl_stop(&fake);
    tl_rmrf(dir);
}

static void ctl(const char *method, const char *path, const char *body)
{
    tl_ctl_ok(&fake, method, path, body);
}

/* A fresh fake with one RUNNING environment of `image` and DAG rr_copy. */
static void setup_fake(const char *image, double auto_seconds, int paused)
{
    tl_reset_direct(&fake);
    char b[512];
    snprintf(b, sizeof b, "{\"composer_image_version\": \"%s\", \"airflow_auto_seconds\": %g}", image, auto_seconds);
    ctl("POST", "/_fake/config", b);
    ctl("POST", "/_fake/composer/environments", "{\"name\": \"" ENV "\", \"state\": \"RUNNING\"}");
    snprintf(b, sizeof b, "{\"dag_id\": \"rr_copy\", \"is_paused\": %s}", paused ? "true" : "false");
    ctl("POST", "/_fake/airflow/dags", b);
}

/* The instance under test; `extra` (members of a JSON object) adds or replaces options. */
static sbh *composer(const char *extra)
{
    char j[2048];
    snprintf(j, sizeof j,
             "{\"plugin\": \"composer\", \"environment\": \"" ENV "\", \"dag\": \"rr_copy\", \"auth\": \"static\","
             " \"token\": \"fake-static-token\", \"endpoint\": \"http://127.0.0.1:%d\", \"poll_interval\": \"50ms\","
             " \"retry\": {\"initial\": \"10ms\", \"max_delay\": \"50ms\", \"max_attempts\": 4},"
             " \"step_timeout\": \"20s\"}",
             fake.port);
    return sbh_new_merged("actions", j, extra);
}

static json_t *airflow_state(void)
{
    return tl_ctl_json(&fake, "/_fake/airflow/state");
}

static const char *added(sbh *h, const char *eid, const char *key)
{
    return json_string_value(json_object_get(sbh_added(h, eid), key));
}

START_TEST(airflow2_trigger_and_wait_to_success)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0.2, 0);
    sbh *h = composer(NULL);
    sbh_event(h, "kafka:rr:0:17", FIELDS);
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "kafka:rr:0:17"), "done") == 0, "%s", sbh_error(h, "kafka:rr:0:17"));
    const char *id = added(h, "kafka:rr:0:17", "dag_run_id");
    ck_assert_ptr_nonnull(id);
    ck_assert_msg(strncmp(id, "sb_kafka_rr_0_17_", 17) == 0, "%s", id);
    ck_assert_str_eq(added(h, "kafka:rr:0:17", "dag_run_state"), "success");
    ck_assert_ptr_nonnull(added(h, "kafka:rr:0:17", "dag_run_end_date"));
    /* the registry steps after it read the end under the common name */
    ck_assert_str_eq(added(h, "kafka:rr:0:17", "gcp_finished_at"), added(h, "kafka:rr:0:17", "dag_run_end_date"));
    ck_assert_ptr_nonnull(strstr(added(h, "kafka:rr:0:17", "dag_run_url"), "/airflow/dags/rr_copy/grid?dag_run_id=sb_"));
    json_t *st = airflow_state();
    json_t *runs = json_object_get(st, "runs");
    ck_assert_int_eq(json_array_size(runs), 1);
    json_t *conf = json_object_get(json_array_get(runs, 0), "conf");
    ck_assert_str_eq(json_string_value(json_object_get(conf, "command")), CMD);
    ck_assert_str_eq(json_string_value(json_object_get(conf, "event_id")), "kafka:rr:0:17");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(conf, "run"), "table")), "orders");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(conf, "run"), "run_id")), 42);
    json_decref(st);
    /* the trigger went to /api/v1 */
    ck_assert_int_eq(tl_count(&fake, "^/airflow/api/v1/dags/rr_copy/dagRuns$", NULL, 0), 1);
    sbh_free(h);
}
END_TEST

START_TEST(airflow3_body_has_logical_date_and_v2_url)
{
    setup_fake("composer-3-airflow-3.0.1-build.2", 0.2, 0);
    sbh *h = composer("\"conf\": {\"cmd\": \"${command}\", \"eid\": \"${event_id}\", \"src\": {\"run_id\": \"${run_id}\","
                      " \"tables\": [\"${schema}.${table}\"]}}, \"note\": \"${schema}.${table}\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    ck_assert_ptr_nonnull(strstr(added(h, "e1", "dag_run_url"), "/airflow/dags/rr_copy/runs/sb_e1_"));
    ck_assert_int_eq(tl_count(&fake, "^/airflow/api/v2/dags/rr_copy/dagRuns$", NULL, 0), 1);
    ck_assert_int_eq(tl_count(&fake, "^/airflow/api/v1/", NULL, 0), 0);
    json_t *st = airflow_state();
    json_t *run = json_array_get(json_object_get(st, "runs"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(run, "conf"), "cmd")), CMD);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(run, "conf"), "eid")), "e1");
    /* a JSON template: nested values, and "${run_id}" alone keeps its type */
    json_t *src = json_object_get(json_object_get(run, "conf"), "src");
    ck_assert_int_eq(json_integer_value(json_object_get(src, "run_id")), 42);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(src, "tables"), 0)), "edw.orders");
    ck_assert_str_eq(json_string_value(json_object_get(run, "note")), "edw.orders");
    ck_assert(json_is_null(json_object_get(run, "logical_date")));
    json_decref(st);
    sbh_free(h);
}
END_TEST

/* A run that exists already (409 for our own id) is followed, not doubled. */
START_TEST(conflict_on_own_id_polls_the_existing_run)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0.2, 0);
    sbh *h = composer("\"dag_run_id\": \"rr_${table}\", \"api\": \"airflow2\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h); /* triggers rr_orders */
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    sbh_event(h, "e2", FIELDS); /* another event naming the same run: 409 */
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "e2"), "done") == 0, "%s", sbh_error(h, "e2"));
    ck_assert_str_eq(added(h, "e2", "dag_run_id"), "rr_orders");
    ck_assert_int_eq(tl_count(&fake, "^/airflow/api/v1/dags/rr_copy/dagRuns$", NULL, 0), 2);
    json_t *st = airflow_state();
    ck_assert_int_eq(json_array_size(json_object_get(st, "runs")), 1);
    json_decref(st);
    sbh_free(h);
}
END_TEST

START_TEST(failed_run_fails_with_state_and_url)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0, 0); /* runs move only when told */
    sbh *h = composer("\"dag_run_id\": \"rr_${table}\", \"wait\": \"none\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h); /* wait none: done once triggered, still queued */
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    ck_assert_str_eq(added(h, "e1", "dag_run_state"), "queued");
    sbh_free(h);
    ctl("POST", "/_fake/airflow/advance", "{\"dag_id\": \"rr_copy\", \"dag_run_id\": \"rr_orders\", \"state\": \"failed\"}");
    h = composer("\"dag_run_id\": \"rr_${table}\"");
    sbh_event(h, "e2", FIELDS); /* the same run seen by a waiting step: failed */
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e2"), "dead");
    const char *e = sbh_error(h, "e2");
    ck_assert_msg(e && strstr(e, "rr_orders") && strstr(e, "failed") && strstr(e, "/airflow/dags/rr_copy/grid?dag_run_id=rr_orders"),
                  "%s", e ? e : "(none)");
    json_t *ss = sbh_step_state(h, "e2");
    ck_assert_ptr_nonnull(ss);
    ck_assert(json_is_true(json_object_get(ss, "failed")));
    sbh_free(h);
}
END_TEST

START_TEST(paused_dag_is_retried_with_how_to_fix)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0.2, 1);
    sbh *h = composer(NULL);
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead"); /* after the retry budget */
    const char *e = sbh_error(h, "e1");
    ck_assert_msg(e && strstr(e, "paused") && strstr(e, "unpause"), "%s", e ? e : "(none)");
    json_t *st = airflow_state();
    ck_assert_int_eq(json_array_size(json_object_get(st, "runs")), 0); /* nothing triggered */
    json_decref(st);
    sbh_free(h);
}
END_TEST

START_TEST(missing_dag_and_environment_name_the_fix)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0.2, 0);
    sbh *h = composer("\"dag\": \"nope\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    const char *e = sbh_error(h, "e1");
    ck_assert_msg(e && strstr(e, "DAG nope not found") && strstr(e, "dags folder"), "%s", e ? e : "(none)");
    sbh_free(h);
    h = composer("\"environment\": \"projects/p/locations/us-central1/environments/other\"");
    sbh_event(h, "e2", FIELDS);
    sbh_run(h);
    e = sbh_error(h, "e2");
    ck_assert_msg(e && strstr(e, "environments/other not found"), "%s", e ? e : "(none)");
    sbh_free(h);
}
END_TEST

START_TEST(unauthorised_names_the_roles)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0.2, 0);
    sbh *h = composer("\"token\": \"not-a-token\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    const char *e = sbh_error(h, "e1");
    ck_assert_msg(e && strstr(e, "roles/composer.user"), "%s", e ? e : "(none)");
    sbh_free(h);
}
END_TEST

START_TEST(step_timeout_bounds_the_wait)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0, 0); /* the run stays queued */
    sbh *h = composer("\"step_timeout\": \"1s\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    const char *e = sbh_error(h, "e1");
    ck_assert_msg(e && strstr(e, "step_timeout") && strstr(e, "is queued"), "%s", e ? e : "(none)");
    json_t *st = airflow_state();
    ck_assert_int_eq(json_array_size(json_object_get(st, "runs")), 1);
    json_decref(st);
    sbh_free(h);
}
END_TEST

static void *move_airflow(void *arg)
{
    (void)arg;
    /* once the plugin has been turned away at the old address */
    for (int i = 0; i < 1500 && tl_count(&fake, "^/old/", NULL, 0) == 0; i++)
        usleep(20000);
    ctl("POST", "/_fake/composer/environments", "{\"name\": \"" ENV "\", \"state\": \"RUNNING\", \"airflow_uri\": null}");
    return NULL;
}

/* Airflow answers 404 at the kept address: the environment is read again. */
START_TEST(airflow_uri_is_looked_up_again_after_404)
{
    setup_fake("composer-2.9.7-airflow-2.10.2", 0.1, 0);
    char b[512];
    snprintf(b, sizeof b, "{\"name\": \"" ENV "\", \"state\": \"RUNNING\", \"airflow_uri\": \"http://127.0.0.1:%d/old\"}",
             fake.port);
    ctl("POST", "/_fake/composer/environments", b);
    pthread_t t;
    pthread_create(&t, NULL, move_airflow, NULL);
    sbh *h = composer("\"retry\": {\"initial\": \"20ms\", \"max_delay\": \"50ms\", \"max_attempts\": 200}");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    pthread_join(t, NULL);
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    ck_assert_ptr_nonnull(strstr(added(h, "e1", "dag_run_url"), "/airflow/dags/"));
    ck_assert_int_ge(tl_count(&fake, "/environments/env1$", NULL, 0), 2);
    ck_assert_int_ge(tl_count(&fake, "^/old/", NULL, 0), 1);
    sbh_free(h);
}
END_TEST

Suite *sbh_suite(void)
{
    Suite *s = suite_create("composer");
    TCase *tc = tcase_create("composer");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, airflow2_trigger_and_wait_to_success);
    tcase_add_test(tc, airflow3_body_has_logical_date_and_v2_url);
    tcase_add_test(tc, conflict_on_own_id_polls_the_existing_run);
    tcase_add_test(tc, failed_run_fails_with_state_and_url);
    tcase_add_test(tc, paused_dag_is_retried_with_how_to_fix);
    tcase_add_test(tc, missing_dag_and_environment_name_the_fix);
    tcase_add_test(tc, unauthorised_names_the_roles);
    tcase_add_test(tc, step_timeout_bounds_the_wait);
    tcase_add_test(tc, airflow_uri_is_looked_up_again_after_404);
    suite_add_tcase(s, tc);
    return s;
}
