/* test_dataproc.c - the dataproc action in process (harness.h) against the
 * fake's Dataproc: inline workflows on ephemeral clusters, one per event,
 * and no cluster left behind. */
#include "harness.h"
#include "gcp_testlib.h"

#include <syncbridge/event.h>

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "sh /opt/cerebro/run_replicator.sh edw orders"
#define FIELDS "{\"command\": \"" CMD "\", \"schema\": \"edw\", \"table\": \"orders\"}"
#define METASTORE "projects/p/locations/us-central1/services/hms"

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

static void setup_fake(double cluster_s, double job_s)
{
    tl_reset_direct(&fake);
    char b[256];
    snprintf(b, sizeof b, "{\"require_auth\": true, \"dataproc_cluster_seconds\": %g, \"dataproc_job_seconds\": %g}",
             cluster_s, job_s);
    ctl("POST", "/_fake/config", b);
}

static sbh *dataproc(const char *extra)
{
    char j[2048];
    snprintf(j, sizeof j,
             "{\"plugin\": \"dataproc\", \"project\": \"p\", \"region\": \"us-central1\", \"auth\": \"static\","
             " \"token\": \"fake-static-token\", \"endpoint\": \"http://127.0.0.1:%d\", \"poll_interval\": \"50ms\","
             " \"metastore_service\": \"" METASTORE "\", \"driver_uri\": \"gs://b/rr_driver.py\","
             " \"retry\": {\"initial\": \"10ms\", \"max_delay\": \"50ms\", \"max_attempts\": 4},"
             " \"step_timeout\": \"30s\"}",
             fake.port);
    return sbh_new_merged("actions", j, extra);
}

static json_t *dp_state(void)
{
    return tl_ctl_json(&fake, "/_fake/dataproc/state");
}

/* The body of the last logged request whose path matches rx, parsed. */
static json_t *last_body(const char *rx)
{
    char path[512], *out = NULL;
    snprintf(path, sizeof path, "/_fake/requests?path_regex=%s", rx);
    ck_assert_int_eq(tl_ctl(&fake, 0, "GET", path, NULL, &out), 200);
    json_t *log = json_loads(out, 0, NULL);
    free(out);
    size_t n = json_array_size(log);
    ck_assert_uint_gt(n, 0);
    json_t *b = json_loads(json_string_value(json_object_get(json_array_get(log, n - 1), "body")), 0, NULL);
    json_decref(log);
    ck_assert_ptr_nonnull(b);
    return b;
}

static size_t count(const char *member)
{
    json_t *s = dp_state();
    size_t n = json_array_size(json_object_get(s, member));
    json_decref(s);
    return n;
}

/* Wait (up to 10 s) until the fake holds no cluster. */
static void no_cluster_left(void)
{
    for (int i = 0; i < 500 && count("clusters") > 0; i++)
        usleep(20000);
    ck_assert_int_eq(count("clusters"), 0);
}

START_TEST(workflow_runs_the_command_on_an_ephemeral_cluster)
{
    setup_fake(0.1, 0.1);
    /* ${field}, and the spelling of the time these options were plain objects */
    sbh *h = dataproc("\"labels\": {\"table\": \"${table}\", \"team\": \"$${schema}\"}");
    sbh_event(h, "kafka:rr:0:5", FIELDS);
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "kafka:rr:0:5"), "done") == 0, "%s", sbh_error(h, "kafka:rr:0:5"));
    json_t *a = sbh_added(h, "kafka:rr:0:5");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(a, "dataproc_operation")), "/operations/"));
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(a, "dataproc_cluster")), "sb-replicator-"));
    json_t *j0 = json_array_get(json_object_get(a, "dataproc_jobs"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j0, "step_id")), "run-replicator");
    ck_assert_str_eq(json_string_value(json_object_get(j0, "state")), "COMPLETED");
    /* the workflow's end, under the name the registry steps after it read */
    const char *fin = json_string_value(json_object_get(a, "gcp_finished_at"));
    ck_assert_ptr_nonnull(fin);
    ck_assert_msg(strlen(fin) >= 20 && fin[10] == 'T' && fin[strlen(fin) - 1] == 'Z', "%s", fin);
    /* the request: metastore, label, requestId, the command as the driver's argument */
    json_t *req = last_body("workflowTemplates:instantiateInline$");
    json_t *mc = json_object_get(json_object_get(req, "placement"), "managedCluster");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(mc, "config"), "metastoreConfig"),
                                                       "dataprocMetastoreService")),
                     METASTORE);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(json_object_get(req, "labels"), "syncbridge-run")));
    json_decref(req);
    json_t *s = dp_state();
    ck_assert_int_eq(json_array_size(json_object_get(s, "operations")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(s, "clusters")), 0);
    json_t *job = json_array_get(json_object_get(s, "jobs"), 0);
    json_t *args = json_object_get(json_object_get(job, "pysparkJob"), "args");
    ck_assert_str_eq(json_string_value(json_array_get(args, 1)), CMD);
    ck_assert_str_eq(json_string_value(json_array_get(args, 3)), "kafka:rr:0:5");
    ck_assert_ptr_nonnull(json_string_value(json_object_get(json_object_get(job, "labels"), "syncbridge-run")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(job, "labels"), "table")), "orders");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(job, "labels"), "team")), "edw");
    json_t *op = json_array_get(json_object_get(s, "operations"), 0);
    ck_assert_ptr_null(json_object_get(op, "error"));
    json_decref(s);
    sbh_free(h);
}
END_TEST

/* The operation name was lost (a crash before the ledger recorded it) and
 * the workflow ended meanwhile: its labelled jobs settle the event, and no
 * second workflow starts. */
START_TEST(lost_operation_is_found_by_its_label)
{
    setup_fake(0.1, 0.1);
    sbh *h = dataproc(NULL);
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    sbh_free(h);
    h = dataproc(NULL); /* a new ledger: the event comes again, with no state */
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    ck_assert_int_eq(tl_count(&fake, "workflowTemplates:instantiateInline$", NULL, 0), 1);
    ck_assert_int_eq(count("operations"), 1);
    json_t *j0 = json_array_get(json_object_get(sbh_added(h, "e1"), "dataproc_jobs"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j0, "state")), "DONE");
    ck_assert_ptr_nonnull(json_string_value(json_object_get(sbh_added(h, "e1"), "gcp_finished_at")));
    sbh_free(h);
}
END_TEST

static volatile int failer_stop;

/* Fail every job that runs. */
static void *failer(void *arg)
{
    (void)arg;
    while (!failer_stop) {
        json_t *s = dp_state();
        json_t *j;
        size_t i;
        json_array_foreach(json_object_get(s, "jobs"), i, j)
        {
            const char *st = json_string_value(json_object_get(json_object_get(j, "status"), "state"));
            if (st && (strcmp(st, "PENDING") == 0 || strcmp(st, "RUNNING") == 0)) {
                char b[512];
                snprintf(b, sizeof b, "{\"job\": \"%s\", \"state\": \"ERROR\", \"details\": \"Teradata said no\"}",
                         json_string_value(json_object_get(json_object_get(j, "reference"), "jobId")));
                tl_ctl(&fake, 0, "POST", "/_fake/dataproc/advance", b, NULL);
            }
        }
        json_decref(s);
        usleep(20000);
    }
    return NULL;
}

START_TEST(failed_job_fails_the_event_and_leaves_no_cluster)
{
    setup_fake(0.1, 0); /* jobs end only when told */
    failer_stop = 0;
    pthread_t t;
    pthread_create(&t, NULL, failer, NULL);
    sbh *h = dataproc(NULL);
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    failer_stop = 1;
    pthread_join(t, NULL);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    const char *e = sbh_error(h, "e1");
    ck_assert_msg(e && strstr(e, "Teradata said no") && strstr(e, "/operations/"), "%s", e ? e : "(none)");
    ck_assert(json_is_true(json_object_get(sbh_step_state(h, "e1"), "failed")));
    no_cluster_left();
    sbh_free(h);
}
END_TEST

START_TEST(step_timeout_cancels_the_workflow_and_its_cluster)
{
    setup_fake(0.1, 0); /* the job never ends by itself */
    sbh *h = dataproc("\"step_timeout\": \"1500ms\"");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    ck_assert_int_eq(tl_count(&fake, "/operations/[^/]+:cancel$", NULL, 0), 1);
    no_cluster_left();
    json_t *s = dp_state();
    json_t *op = json_array_get(json_object_get(s, "operations"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(op, "error"), "code")), 1);
    json_decref(s);
    sbh_free(h);
}
END_TEST

START_TEST(submit_mode_runs_one_job_per_event)
{
    setup_fake(0.1, 0.1);
    char *out = NULL;
    /* the existing cluster, made through the API */
    sbh *h = dataproc("\"mode\": \"submit\", \"cluster_name\": \"etl\"");
    ck_assert_int_eq(tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"require_auth\": false}", &out), 200);
    free(out);
    out = NULL;
    ck_assert_int_eq(tl_ctl(&fake, 0, "POST", "/v1/projects/p/regions/us-central1/clusters",
                            "{\"clusterName\": \"etl\", \"config\": {}}", &out),
                     200);
    free(out);
    for (int i = 0; i < 200; i++) {
        out = NULL;
        tl_ctl(&fake, 0, "GET", "/v1/projects/p/regions/us-central1/clusters/etl", NULL, &out);
        int running = out && strstr(out, "\"RUNNING\"");
        free(out);
        if (running)
            break;
        usleep(20000);
    }
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    /* requestId is "sb-" and the event's key, nothing more */
    json_t *req = last_body("jobs:submit$");
    char want[32];
    snprintf(want, sizeof want, "sb-%016llx", (unsigned long long)sb_run_id("e1"));
    ck_assert_str_eq(json_string_value(json_object_get(req, "requestId")), want);
    json_decref(req);
    sbh_free(h);
    h = dataproc("\"mode\": \"submit\", \"cluster_name\": \"etl\"");
    sbh_event(h, "e1", FIELDS); /* again, with no state: 409 for its job id, followed */
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    ck_assert_int_eq(count("jobs"), 1);
    sbh_free(h);
}
END_TEST

/* Every answer to instantiateInline is lost after Dataproc took the call:
 * the requestId keeps it one workflow, and when the step gives up without
 * ever learning the operation, the clusters with its label are deleted. */
START_TEST(lost_answers_make_one_workflow_and_giving_up_deletes_its_cluster)
{
    setup_fake(0.1, 0); /* the job never ends by itself */
    tl_fault(&fake, "{\"path_regex\": \"workflowTemplates:instantiateInline\", \"kind\": \"truncate\", \"count\": 100000}");
    sbh *h = dataproc("\"step_timeout\": \"2s\", \"max_attempts\": 2,"
                      " \"retry\": {\"initial\": \"100ms\", \"max_delay\": \"200ms\", \"max_attempts\": 1000}");
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    ck_assert_int_ge(tl_count(&fake, "workflowTemplates:instantiateInline$", NULL, 0), 2);
    no_cluster_left();
    json_t *s = dp_state(), *op;
    size_t i, workflows = 0;
    json_array_foreach(json_object_get(s, "operations"), i, op)
    {
        const char *t = json_string_value(json_object_get(json_object_get(op, "metadata"), "@type"));
        workflows += t && strstr(t, "WorkflowMetadata") != NULL;
    }
    json_decref(s);
    ck_assert_int_eq(workflows, 1); /* the requestId, however often the answer was lost */
    sbh_free(h);
}
END_TEST

/* A 503 is the core's to retry: process() sends with no_wait, so the
 * client's own backoff never sleeps inside it. That backoff is set to 30 s
 * (full jitter, doubling): had the client retried in place, the two
 * retries would almost surely (99.7%) take longer than the 3 s allowed. */
START_TEST(server_errors_are_retried_by_the_core_not_in_process)
{
    setup_fake(0.1, 0.1);
    tl_fault(&fake, "{\"path_regex\": \"workflowTemplates:instantiateInline\", \"kind\": \"status\", \"status\": 503,"
                    " \"count\": 2}");
    sbh *h = dataproc("\"max_attempts\": 6, \"retry_initial\": \"30s\", \"retry_max_delay\": \"60s\"");
    sbh_event(h, "e1", FIELDS);
    double t0 = tl_now();
    sbh_run(h);
    double took = tl_now() - t0;
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    ck_assert_int_eq(tl_count(&fake, "workflowTemplates:instantiateInline$", NULL, 0), 3);
    ck_assert_msg(took < 3.0, "took %.1fs: a retry slept in process()", took);
    ck_assert_int_eq(count("operations"), 1);
    sbh_free(h);
}
END_TEST

/* The window that remains (README): an earlier attempt's instantiateInline
 * reached Dataproc, its answer was lost with the daemon, and that workflow
 * ended without creating any job (its cluster never came up). No job and
 * no cluster carry the label, and the requestId, which per the discovery
 * document only prevents *concurrent* instances (the fake does the same),
 * no longer blocks: a second workflow starts. No job ran twice. */
START_TEST(a_workflow_that_ended_without_jobs_is_started_again)
{
    setup_fake(0, 0); /* the first workflow's cluster stays CREATING until cancelled */
    char key[32], path[256], body[1024], *out = NULL;
    snprintf(key, sizeof key, "%016llx", (unsigned long long)sb_run_id("e1"));
    snprintf(path, sizeof path, "/v1/projects/p/regions/us-central1/workflowTemplates:instantiateInline?requestId=sb-%s",
             key);
    snprintf(body, sizeof body,
             "{\"labels\": {\"syncbridge-run\": \"%s\"}, \"jobs\": [{\"stepId\": \"run-replicator\","
             " \"pysparkJob\": {\"mainPythonFileUri\": \"gs://b/rr_driver.py\"}}], \"placement\": {\"managedCluster\":"
             " {\"clusterName\": \"sb-replicator\", \"config\": {}}}}",
             key);
    ck_assert_int_eq(tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"require_auth\": false}", NULL), 200);
    ck_assert_int_eq(tl_ctl(&fake, 0, "POST", path, body, &out), 200);
    json_t *op = json_loads(out, 0, NULL);
    free(out);
    out = NULL;
    snprintf(path, sizeof path, "/v1/%s:cancel", json_string_value(json_object_get(op, "name")));
    json_decref(op);
    ck_assert_int_eq(tl_ctl(&fake, 0, "POST", path, "{}", &out), 200);
    free(out);
    ctl("POST", "/_fake/config", "{\"require_auth\": true, \"dataproc_cluster_seconds\": 0.1, \"dataproc_job_seconds\": 0.1}");
    no_cluster_left();
    ck_assert_int_eq(count("jobs"), 0);
    sbh *h = dataproc(NULL); /* the event again, with no state: the crash lost the operation name */
    sbh_event(h, "e1", FIELDS);
    sbh_run(h);
    ck_assert_msg(strcmp(sbh_state(h, "e1"), "done") == 0, "%s", sbh_error(h, "e1"));
    ck_assert_int_eq(tl_count(&fake, "workflowTemplates:instantiateInline", NULL, 0), 2);
    ck_assert_int_eq(count("jobs"), 1);
    no_cluster_left();
    sbh_free(h);
}
END_TEST

Suite *sbh_suite(void)
{
    Suite *s = suite_create("dataproc");
    TCase *tc = tcase_create("dataproc");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, workflow_runs_the_command_on_an_ephemeral_cluster);
    tcase_add_test(tc, lost_operation_is_found_by_its_label);
    tcase_add_test(tc, failed_job_fails_the_event_and_leaves_no_cluster);
    tcase_add_test(tc, step_timeout_cancels_the_workflow_and_its_cluster);
    tcase_add_test(tc, submit_mode_runs_one_job_per_event);
    tcase_add_test(tc, lost_answers_make_one_workflow_and_giving_up_deletes_its_cluster);
    tcase_add_test(tc, server_errors_are_retried_by_the_core_not_in_process);
    tcase_add_test(tc, a_workflow_that_ended_without_jobs_is_started_again);
    suite_add_tcase(s, tc);
    return s;
}
