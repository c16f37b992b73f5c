/*
 * dataproc - action: run an event's work on Dataproc, exactly once per
 * event, and wait for the outcome.
 *
 * mode "workflow" (default): workflowTemplates.instantiateInline with a
 * managed cluster. Dataproc creates the cluster (with a Hive metastore
 * attached: a Dataproc Metastore service, or hive.metastore.uris), runs
 * the jobs in order and deletes the cluster, also when a job fails.
 * mode "submit": jobs.submit of one job to an existing cluster.
 *
 * One workflow per event. Each event gets a key, a hash of its id
 * ("0123456789abcdef"; "...-replay1" after a dlq replay). The workflow carries it as the label
 * syncbridge-run (Dataproc puts a template's labels on its cluster and
 * jobs) and as its requestId ("sb-KEY"), which prevents a *concurrent*
 * second instance only. So before instantiating, the plugin lists the
 * jobs with that label: if the workflow already ran its jobs (a crash
 * lost the operation name, and the workflow ended before the restart),
 * their states settle the event and nothing is started. If the cluster is
 * still there, instantiateInline with the same requestId returns the
 * running operation. The operation name is written to the step state as
 * soon as the call returns (sb_batch_save_state), and later calls poll it
 * (WAIT). In submit mode the job id itself is "sb-KEY", so a 409 means
 * "already submitted": poll it.
 *
 * A failed workflow is dead-lettered with the operation's error; the step
 * state remembers it, so a `dlq replay` starts exactly one new workflow
 * with the next generation. On step timeout or a spent retry budget (abandon), the
 * operation is cancelled (operations.cancel), which makes Dataproc cancel
 * the jobs and delete the cluster; if the cancel is refused, the cluster is
 * deleted directly.
 *
 * Templates: cluster_config, jobs and labels are JSON templates
 * (SB_OPT_JSON_TEMPLATE): their strings may hold ${field} or
 * ${field:-default} (event fields, plus event_id and dataproc_key), a value
 * that is exactly "${field}" takes the field's JSON value, and the core
 * checks them when the config is loaded and renders them per event. The
 * spelling $${field}, which these options needed when they were plain
 * objects, still means the field.
 *
 * Retries: process() sends every request with no_wait, so it never sleeps
 * between attempts; a 429/5xx or a lost answer is a RETRY (with the
 * server's Retry-After) that the core schedules, and the step state and
 * requestId make the next call continue the same workflow. abandon() has no
 * next call, so its cancel and delete requests retry in place, at most
 * ABANDON_ATTEMPTS times within ABANDON_DEADLINE_MS: the core calls it on a
 * step worker with the instance held, so the bound keeps the instance's
 * other events from waiting long, and a cluster that still could not be
 * deleted is named in an error with the gcloud command that deletes it.
 *
 * Fields on success: dataproc_operation, dataproc_cluster, dataproc_jobs and
 * gcp_finished_at (the workflow's endTime, else the latest job state time,
 * else now), the name every copy step gives the GCP execution's end.
 *
 * Threading: read-only state after create(), a thread-safe gcp client:
 * SB_PLUGIN_CONCURRENT.
 */
#include <syncbridge/syncbridge.h>
#include <syncbridge/gcp.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MODE_WORKFLOW, MODE_SUBMIT };
static const char *const modes[] = {[MODE_WORKFLOW] = "workflow", [MODE_SUBMIT] = "submit", NULL};

#define LABEL "syncbridge-run"

typedef struct dataproc_conf {
    const char *project;
    const char *region;
    int mode;
    const char *cluster_name;
    const sb_json_template *cluster_config;
    const char *metastore_service;
    const char *metastore_uris;
    const sb_json_template *jobs;
    const char *driver_uri;
    const sb_json_template *labels;
    int64_t poll_interval;
} dataproc_conf;

static const sb_option_def options[] = {
    {SB_OPT("project", SB_OPT_STRING, NULL, 1, "Project that runs the clusters and jobs."),
     SB_OPT_BIND(dataproc_conf, project)},
    {SB_OPT("region", SB_OPT_STRING, NULL, 1, "Dataproc region, e.g. us-central1."), SB_OPT_BIND(dataproc_conf, region)},
    {SB_OPT("mode", SB_OPT_STRING, "\"workflow\"", 0,
            "\"workflow\": an inline workflow on an ephemeral cluster that Dataproc deletes; \"submit\": one job on the "
            "existing cluster cluster_name."),
     SB_OPT_CHOICES(modes), SB_OPT_BIND(dataproc_conf, mode)},
    {SB_OPT("cluster_name", SB_OPT_STRING, "\"sb-replicator\"", 0,
            "workflow: the managed cluster's name prefix (Dataproc appends a suffix); submit: the cluster to run on."),
     SB_OPT_BIND(dataproc_conf, cluster_name)},
    {SB_OPT("cluster_config", SB_OPT_JSON_TEMPLATE,
            "{\"softwareConfig\": {\"imageVersion\": \"2.2-debian12\"},"
            " \"masterConfig\": {\"numInstances\": 1, \"machineTypeUri\": \"n2-standard-4\"},"
            " \"workerConfig\": {\"numInstances\": 2, \"machineTypeUri\": \"n2-standard-4\"}}",
            0,
            "The managed cluster's ClusterConfig (Dataproc v1 JSON): image version, machine types, "
            "gceClusterConfig.serviceAccount and subnetworkUri, ...; strings are templates over the event's fields (${field})."),
     SB_OPT_BIND(dataproc_conf, cluster_config)},
    {SB_OPT("metastore_service", SB_OPT_STRING, NULL, 0,
            "Dataproc Metastore service projects/P/locations/L/services/S to attach (metastoreConfig)."),
     SB_OPT_BIND(dataproc_conf, metastore_service)},
    {SB_OPT("metastore_uris", SB_OPT_STRING, NULL, 0,
            "A self-managed Hive metastore, thrift://host:9083, set as the property hive:hive.metastore.uris."),
     SB_OPT_BIND(dataproc_conf, metastore_uris)},
    {SB_OPT("jobs", SB_OPT_JSON_TEMPLATE, NULL, 0,
            "The workflow's jobs, step id -> OrderedJob without stepId (any job type; prerequisiteStepIds "
            "allowed), in order; strings are templates over the event's fields (${field}). submit: exactly one. Default: one pysparkJob running "
            "driver_uri with the event's command."),
     SB_OPT_BIND(dataproc_conf, jobs)},
    {SB_OPT("driver_uri", SB_OPT_STRING, NULL, 0,
            "gs:// URI of the driver that runs the Run Replicator command on the cluster (the default job: "
            "args --command COMMAND --event-id ID)."),
     SB_OPT_BIND(dataproc_conf, driver_uri)},
    {SB_OPT("labels", SB_OPT_JSON_TEMPLATE, NULL, 0,
            "Extra labels for the workflow's cluster and jobs, name -> template over the event's fields (${field}) "
            "(syncbridge-run is always set)."),
     SB_OPT_BIND(dataproc_conf, labels)},
    {SB_OPT("poll_interval", SB_OPT_DURATION, "\"30s\"", 0, "How often a running workflow or job is looked at."),
     SB_OPT_RANGE_BIND(10, 3600000, dataproc_conf, poll_interval)},
    SB_GCP_OPTION_DEFS,
    {0}};

typedef struct dataproc {
    sb_instance *ins;
    const dataproc_conf *c;
    sb_gcp_client *gc;
    char *parent;  /* /v1/projects/P/regions/R */
} dataproc;

static void dp_destroy(void *self)
{
    dataproc *p = self;
    if (!p)
        return;
    sb_gcp_client_destroy(p->gc);
    free(p->parent);
    free(p);
}

static int segment_ok(const char *s)
{
    return s && *s && strcspn(s, "/?#% \t\"\\") == strlen(s);
}

static int dp_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    dataproc *p = calloc(1, sizeof *p);
    if (!p)
        return sb_err(errstr, errstr_size, "out of memory");
    p->ins = ins;
    p->c = sb_instance_config(ins);
    const dataproc_conf *c = p->c;
    const json_t *cluster_config = sb_json_template_source(c->cluster_config);
    const json_t *jobs = sb_json_template_source(c->jobs);
    int rc = 0;
    if (!segment_ok(c->project) || !segment_ok(c->region))
        rc = sb_err(errstr, errstr_size, "options project and region must be plain names (got \"%s\", \"%s\")", c->project,
                    c->region);
    else if (c->metastore_service && c->metastore_uris)
        rc = sb_err(errstr, errstr_size, "options metastore_service and metastore_uris: give one of them, not both");
    else if (c->mode == MODE_WORKFLOW && !c->metastore_service && !c->metastore_uris &&
             !json_object_get(cluster_config, "metastoreConfig") &&
             !json_object_get(json_object_get(json_object_get(cluster_config, "softwareConfig"), "properties"),
                              "hive:hive.metastore.uris"))
        rc = sb_err(errstr, errstr_size,
                    "no Hive metastore for the cluster: set metastore_service (Dataproc Metastore) or metastore_uris "
                    "(thrift://host:9083)");
    else if (c->mode == MODE_WORKFLOW &&
             (!c->cluster_name || strlen(c->cluster_name) > 40 || !islower((unsigned char)c->cluster_name[0]) ||
              strspn(c->cluster_name, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(c->cluster_name)))
        rc = sb_err(errstr, errstr_size,
                    "option cluster_name: \"%s\" must be at most 40 lowercase letters, digits or hyphens, starting "
                    "with a letter", c->cluster_name ? c->cluster_name : "");
    else if (!c->jobs && !c->driver_uri)
        rc = sb_err(errstr, errstr_size, "give option jobs, or driver_uri for the default Run Replicator job");
    if (rc == 0 && cluster_config && !json_is_object(cluster_config))
        rc = sb_err(errstr, errstr_size, "option cluster_config: not an object (a ClusterConfig)");
    if (rc == 0 && c->labels && !json_is_object(sb_json_template_source(c->labels)))
        rc = sb_err(errstr, errstr_size, "option labels: not an object of name -> value");
    if (rc == 0 && jobs) {
        const char *step;
        json_t *job;
        if (!json_is_object(jobs))
            rc = sb_err(errstr, errstr_size, "option jobs: not an object of step id -> OrderedJob");
        else
            json_object_foreach((json_t *)jobs, step, job)
            {
                if (!json_is_object(job)) {
                    rc = sb_err(errstr, errstr_size, "option jobs: step \"%s\" is not an object (an OrderedJob)", step);
                    break;
                }
            }
        if (rc == 0 && json_object_size(jobs) == 0)
            rc = sb_err(errstr, errstr_size, "option jobs: no job");
        if (rc == 0 && c->mode == MODE_SUBMIT && json_object_size(jobs) != 1)
            rc = sb_err(errstr, errstr_size, "option jobs: mode submit runs exactly one job (%zu given)",
                        json_object_size(jobs));
    }
    if (rc == 0) {
        p->parent = sb_asprintf("/v1/projects/%s/regions/%s", c->project, c->region);
        p->gc = sb_gcp_client_from_instance(ins, "dataproc", errstr, errstr_size);
        if (!p->gc)
            rc = -1;
    }
    if (rc != 0) {
        dp_destroy(p);
        return -1;
    }
    *self = p;
    return 0;
}

/* ---- requests ------------------------------------------------------------------ */

typedef struct ev_ctx {
    dataproc *p;
    sb_batch *b;
    size_t i;
    sb_event *ev;
    char key[64];   /* hash of the event id [-replayN] */
    int gen;
} ev_ctx;

/* Who sends a request: process() never sleeps between attempts (a retry is
 * the core's to schedule, from the RETRY and Retry-After it is given);
 * abandon() has no later call to hand a retry to, so it retries in place
 * within a small bound (ABANDON_*), holding up the instance meanwhile. */
enum { IN_PROCESS, IN_ABANDON };
#define ABANDON_ATTEMPTS 4
#define ABANDON_DEADLINE_MS 20000

static sb_gcp_result call(dataproc *p, int who, const char *method, const char *url, json_t *body, int idempotent,
                          sb_gcp_response *resp, char *gerr, size_t gerrsz)
{
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = method, .url = url, .headers = headers,
                          .body = text, .body_len = text ? strlen(text) : 0, .idempotent = idempotent};
    if (who == IN_PROCESS) {
        req.no_wait = 1;
    } else {
        req.max_attempts = ABANDON_ATTEMPTS;
        req.deadline_ms = ABANDON_DEADLINE_MS;
    }
    sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, resp, gerr, gerrsz);
    free(text);
    return rc;
}

static json_t *body_json(const sb_gcp_response *resp)
{
    return json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
}

static void not_ok(ev_ctx *x, sb_gcp_outcome o, const char *what)
{
    const char *hint = o.cause == SB_GCP_CAUSE_AUTH
                           ? " (the service account needs roles/dataproc.editor on the project and "
                             "roles/iam.serviceAccountUser on the cluster's service account)"
                           : "";
    sb_log(x->p->ins, o.result == SB_RESULT_FAIL ? SB_LOG_WARN : SB_LOG_ERROR, "event %s: %s: %s%s%s",
           sb_event_id(x->ev), what, o.reason, hint, o.result == SB_RESULT_FAIL ? "" : "; retrying");
    sb_batch_set_result(x->b, x->i, o.result, "%s: %s%s", what, o.reason, hint);
    if (o.result == SB_RESULT_RETRY && o.retry_after_ms > 0)
        sb_batch_set_retry_after(x->b, x->i, o.retry_after_ms);
}

static void set_state(ev_ctx *x, const char *operation, const char *cluster, const char *job, int failed)
{
    json_t *s = json_pack("{s:i, s:s, s:b}", "gen", x->gen, "key", x->key, "failed", failed);
    if (operation)
        json_object_set_new(s, "operation", json_string(operation));
    if (cluster)
        json_object_set_new(s, "cluster", json_string(cluster));
    if (job)
        json_object_set_new(s, "job", json_string(job));
    sb_batch_set_state(x->b, x->i, s);
}

/* What the templates see: the event's fields, with event_id and
 * dataproc_key. NULL when out of memory. */
static sb_event *template_event(ev_ctx *x)
{
    json_t *f = json_deep_copy(sb_event_fields(x->ev));
    if (!f || json_object_set_new(f, "event_id", json_string(sb_event_id(x->ev))) != 0 ||
        json_object_set_new(f, "dataproc_key", json_string(x->key)) != 0) {
        json_decref(f);
        return NULL;
    }
    return sb_event_new_with_fields(sb_event_id(x->ev), f);
}

/* A JSON template option rendered for the event; NULL with err naming the
 * option and the path inside it. */
static json_t *render(const char *option, const sb_json_template *t, sb_event *tev, char *err, size_t errsz)
{
    char msg[512];
    json_t *v = sb_json_template_render(t, tev, msg, sizeof msg);
    if (!v)
        sb_err(err, errsz, "option %s: %s", option, msg);
    return v;
}

static json_t *labels_for(ev_ctx *x, sb_event *tev, char *err, size_t errsz)
{
    json_t *l = x->p->c->labels ? render("labels", x->p->c->labels, tev, err, errsz) : json_object();
    if (l)
        json_object_set_new(l, LABEL, json_string(x->key));
    return l;
}

/* step id -> OrderedJob for the event: the jobs option, or the default job
 * that runs the event's command with driver_uri. */
static json_t *jobs_for(ev_ctx *x, sb_event *tev, char *err, size_t errsz)
{
    if (x->p->c->jobs)
        return render("jobs", x->p->c->jobs, tev, err, errsz);
    const char *cmd = sb_event_get_string(tev, "command");
    if (!cmd) {
        sb_err(err, errsz, "the event has no string field \"command\" (the default job runs it; or set option jobs)");
        return NULL;
    }
    return json_pack("{s:{s:{s:s, s:[s,s,s,s]}}}", "run-replicator", "pysparkJob", "mainPythonFileUri",
                     x->p->c->driver_uri, "args", "--command", cmd, "--event-id", sb_event_id(tev));
}

/* ---- workflow mode ---------------------------------------------------------------- */

/* gcp_finished_at: the time Dataproc gave (RFC 3339), else now in UTC. */
static void add_finished_at(sb_event *ev, const char *when)
{
    char buf[32];
    if (!when || !*when) {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
        when = buf;
    }
    sb_event_add(ev, "gcp_finished_at", json_string(when));
}

/* dataproc_jobs from the workflow graph or a job list. */
static json_t *jobs_of_graph(json_t *md)
{
    json_t *out = json_array(), *n;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(md, "graph"), "nodes"), i, n)
    {
        json_t *j = json_pack("{s:O?, s:O?, s:O?}", "step_id", json_object_get(n, "stepId"), "job_id",
                              json_object_get(n, "jobId"), "state", json_object_get(n, "state"));
        if (json_object_get(n, "error"))
            json_object_set(j, "error", json_object_get(n, "error"));
        json_array_append_new(out, j);
    }
    return out;
}

/* Settle from an operation: done -> OK or FAIL, else WAIT. */
static void settle_op(ev_ctx *x, json_t *op)
{
    const char *name = json_string_value(json_object_get(op, "name"));
    json_t *md = json_object_get(op, "metadata");
    const char *cluster = json_string_value(json_object_get(md, "clusterName"));
    if (!json_is_true(json_object_get(op, "done"))) {
        set_state(x, name, cluster, NULL, 0);
        const char *st = json_string_value(json_object_get(md, "state"));
        sb_batch_wait(x->b, x->i, x->p->c->poll_interval, "workflow %s is %s (cluster %s)", name ? name : "?",
                      st ? st : "running", cluster ? cluster : "not yet made");
        return;
    }
    json_t *error = json_object_get(op, "error");
    if (error) {
        set_state(x, name, cluster, NULL, 1);
        const char *msg = json_string_value(json_object_get(error, "message"));
        sb_log(x->p->ins, SB_LOG_WARN, "event %s: workflow %s failed: %s", sb_event_id(x->ev), name ? name : "?",
               msg ? msg : "(no message)");
        sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "Dataproc workflow %s failed (code %lld): %s", name ? name : "?",
                            (long long)json_integer_value(json_object_get(error, "code")), msg ? msg : "(no message)");
        return;
    }
    sb_event_add(x->ev, "dataproc_operation", name ? json_string(name) : json_null());
    sb_event_add(x->ev, "dataproc_cluster", cluster ? json_string(cluster) : json_null());
    sb_event_add(x->ev, "dataproc_jobs", jobs_of_graph(md));
    add_finished_at(x->ev, json_string_value(json_object_get(md, "endTime")));
    sb_batch_set_result(x->b, x->i, SB_RESULT_OK, NULL);
}

static void poll_op(ev_ctx *x, const char *name)
{
    char *url = sb_asprintf("/v1/%s", name);
    sb_gcp_response resp;
    char gerr[1024] = "";
    sb_gcp_result rc = call(x->p, IN_PROCESS, "GET", url, NULL, 1, &resp, gerr, sizeof gerr);
    free(url);
    sb_gcp_outcome o = sb_gcp_classify(rc, &resp, gerr, 0);
    if (o.result != SB_RESULT_OK) {
        json_t *keep = json_deep_copy(sb_batch_state(x->b, x->i));
        sb_batch_set_state(x->b, x->i, keep);
        char what[512];
        snprintf(what, sizeof what, "reading workflow operation %s", name);
        not_ok(x, o, what);
    } else {
        json_t *op = body_json(&resp);
        settle_op(x, op);
        json_decref(op);
    }
    sb_gcp_response_clear(&resp);
}

/* List a collection filtered on our label. Returns the array (new ref), or
 * NULL with the event settled (RETRY/FAIL). */
static json_t *list_labelled(ev_ctx *x, const char *what, const char *member)
{
    char *url = sb_asprintf("%s/%s?filter=labels.%s%%20%%3D%%20%s&pageSize=100", x->p->parent, what, LABEL, x->key);
    sb_gcp_response resp;
    char gerr[1024] = "";
    sb_gcp_result rc = call(x->p, IN_PROCESS, "GET", url, NULL, 1, &resp, gerr, sizeof gerr);
    free(url);
    sb_gcp_outcome o = sb_gcp_classify(rc, &resp, gerr, 0);
    json_t *out = NULL;
    if (o.result != SB_RESULT_OK) {
        char w[256];
        snprintf(w, sizeof w, "looking for an earlier workflow of this event (%s list)", what);
        not_ok(x, o, w);
    } else {
        json_t *j = body_json(&resp);
        out = json_object_get(j, member);
        out = out ? json_incref(out) : json_array();
        json_decref(j);
    }
    sb_gcp_response_clear(&resp);
    return out;
}

/* The workflow already ran its jobs and its cluster is gone: settle from
 * the jobs. */
static void settle_from_jobs(ev_ctx *x, json_t *jobs)
{
    json_t *out = json_array(), *j;
    size_t i;
    const char *bad = NULL, *bad_details = NULL, *active = NULL, *last = NULL;
    json_array_foreach(jobs, i, j)
    {
        const char *id = json_string_value(json_object_get(json_object_get(j, "reference"), "jobId"));
        json_t *status = json_object_get(j, "status");
        const char *st = json_string_value(json_object_get(status, "state"));
        const char *at = json_string_value(json_object_get(status, "stateStartTime"));
        json_array_append_new(out, json_pack("{s:s?, s:s?}", "job_id", id, "state", st));
        if (at && (!last || strcmp(at, last) > 0)) /* RFC 3339 UTC compares as text */
            last = at;
        if (st && (strcmp(st, "ERROR") == 0 || strcmp(st, "CANCELLED") == 0) && !bad)
            bad = id, bad_details = json_string_value(json_object_get(status, "details"));
        if (st && strcmp(st, "DONE") != 0 && strcmp(st, "ERROR") != 0 && strcmp(st, "CANCELLED") != 0)
            active = id;
    }
    if (active) { /* its cluster is being deleted, or not yet listed: look again */
        set_state(x, NULL, NULL, NULL, 0);
        sb_batch_wait(x->b, x->i, x->p->c->poll_interval, "an earlier workflow of this event (job %s) is still running",
                      active);
    } else if (bad) {
        set_state(x, NULL, NULL, NULL, 1);
        sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "Dataproc workflow (label %s=%s) failed: job %s: %s", LABEL,
                            x->key, bad, bad_details ? bad_details : "failed");
    } else {
        sb_log(x->p->ins, SB_LOG_INFO, "event %s: its workflow (label %s=%s) already ran; not starting another",
               sb_event_id(x->ev), LABEL, x->key);
        sb_event_add(x->ev, "dataproc_operation", json_null());
        sb_event_add(x->ev, "dataproc_cluster", json_null());
        sb_event_add(x->ev, "dataproc_jobs", out);
        add_finished_at(x->ev, last);
        out = NULL;
        sb_batch_set_result(x->b, x->i, SB_RESULT_OK, NULL);
    }
    json_decref(out);
}

static json_t *workflow_body(ev_ctx *x, char *err, size_t errsz)
{
    dataproc *p = x->p;
    sb_event *tev = template_event(x);
    if (!tev) {
        sb_err(err, errsz, "out of memory");
        return NULL;
    }
    json_t *cfg = p->c->cluster_config ? render("cluster_config", p->c->cluster_config, tev, err, errsz) : json_object();
    json_t *labels = cfg ? labels_for(x, tev, err, errsz) : NULL;
    json_t *byid = labels ? jobs_for(x, tev, err, errsz) : NULL;
    json_t *jobs = byid ? json_array() : NULL;
    const char *step;
    json_t *job;
    if (jobs)
        json_object_foreach(byid, step, job)
        {
            json_object_set_new(job, "stepId", json_string(step));
            json_array_append(jobs, job);
        }
    json_decref(byid);
    sb_event_free(tev);
    if (!jobs) {
        json_decref(cfg);
        json_decref(labels);
        return NULL;
    }
    if (p->c->metastore_service)
        json_object_set_new(cfg, "metastoreConfig", json_pack("{s:s}", "dataprocMetastoreService", p->c->metastore_service));
    if (p->c->metastore_uris) {
        json_t *sw = json_object_get(cfg, "softwareConfig");
        if (!json_is_object(sw))
            json_object_set_new(cfg, "softwareConfig", sw = json_object());
        json_t *props = json_object_get(sw, "properties");
        if (!json_is_object(props))
            json_object_set_new(sw, "properties", props = json_object());
        json_object_set_new(props, "hive:hive.metastore.uris", json_string(p->c->metastore_uris));
    }
    return json_pack("{s:o, s:o, s:{s:{s:s, s:o, s:O}}}", "jobs", jobs, "labels", labels, "placement", "managedCluster",
                     "clusterName", p->c->cluster_name, "config", cfg, "labels", labels);
}

static void instantiate(ev_ctx *x)
{
    dataproc *p = x->p;
    /* An earlier attempt may have started it and lost the answer. */
    json_t *jobs = list_labelled(x, "jobs", "jobs");
    if (!jobs)
        return;
    json_t *clusters = json_array_size(jobs) ? list_labelled(x, "clusters", "clusters") : json_array();
    if (!clusters) {
        json_decref(jobs);
        return;
    }
    int ran = json_array_size(jobs) > 0 && json_array_size(clusters) == 0;
    json_decref(clusters);
    if (ran) {
        settle_from_jobs(x, jobs);
        json_decref(jobs);
        return;
    }
    json_decref(jobs);
    char err[512];
    json_t *body = workflow_body(x, err, sizeof err);
    if (!body) {
        sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "%s", err);
        return;
    }
    set_state(x, NULL, NULL, NULL, 0);
    char *url = sb_asprintf("%s/workflowTemplates:instantiateInline?requestId=sb-%s", p->parent, x->key);
    sb_gcp_response resp;
    char gerr[1024] = "";
    /* requestId makes a repeat while the workflow runs return the same operation */
    sb_gcp_result rc = call(p, IN_PROCESS, "POST", url, body, 1, &resp, gerr, sizeof gerr);
    free(url);
    json_decref(body);
    sb_gcp_outcome o = sb_gcp_classify(rc, &resp, gerr, 0);
    if (o.result != SB_RESULT_OK) {
        not_ok(x, o, "instantiating the workflow");
    } else {
        json_t *op = body_json(&resp);
        const char *name = json_string_value(json_object_get(op, "name"));
        if (!name) {
            sb_batch_set_result(x->b, x->i, SB_RESULT_RETRY, "instantiateInline answered without an operation name");
        } else {
            set_state(x, name, NULL, NULL, 0);
            if (sb_batch_save_state(x->b, x->i) != 0)
                sb_log(p->ins, SB_LOG_WARN, "event %s: could not record operation %s at once; the requestId and the "
                                            "label still find it", sb_event_id(x->ev), name);
            sb_log(p->ins, SB_LOG_INFO, "event %s: workflow %s started", sb_event_id(x->ev), name);
            settle_op(x, op);
        }
        json_decref(op);
    }
    sb_gcp_response_clear(&resp);
}

/* ---- submit mode -------------------------------------------------------------------- */

static void settle_job(ev_ctx *x, json_t *job)
{
    const char *id = json_string_value(json_object_get(json_object_get(job, "reference"), "jobId"));
    json_t *status = json_object_get(job, "status");
    const char *st = json_string_value(json_object_get(status, "state"));
    if (!st)
        st = "STATE_UNSPECIFIED";
    if (strcmp(st, "DONE") == 0) {
        sb_event_add(x->ev, "dataproc_operation", json_null());
        sb_event_add(x->ev, "dataproc_cluster", json_string(x->p->c->cluster_name));
        sb_event_add(x->ev, "dataproc_jobs", json_pack("[{s:s?, s:s}]", "job_id", id, "state", st));
        add_finished_at(x->ev, json_string_value(json_object_get(status, "stateStartTime")));
        sb_batch_set_result(x->b, x->i, SB_RESULT_OK, NULL);
    } else if (strcmp(st, "ERROR") == 0 || strcmp(st, "CANCELLED") == 0) {
        set_state(x, NULL, NULL, id, 1);
        const char *d = json_string_value(json_object_get(status, "details"));
        sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "Dataproc job %s on %s ended %s: %s", id ? id : "?",
                            x->p->c->cluster_name, st, d ? d : "(no details)");
    } else {
        set_state(x, NULL, NULL, id, 0);
        sb_batch_wait(x->b, x->i, x->p->c->poll_interval, "job %s on %s is %s", id ? id : "?", x->p->c->cluster_name, st);
    }
}

static void submit(ev_ctx *x, const char *known)
{
    dataproc *p = x->p;
    char *job_id = sb_asprintf("sb-%s", x->key);
    sb_gcp_response resp;
    char gerr[1024] = "", err[512];
    sb_gcp_result rc;
    sb_gcp_outcome o;
    if (!known) {
        sb_event *tev = template_event(x);
        json_t *byid = tev ? jobs_for(x, tev, err, sizeof err) : NULL;
        const char *step = NULL;
        json_t *job = NULL;
        json_object_foreach(byid, step, job)
            break;
        job = json_incref(job);
        json_decref(byid);
        json_t *labels = job ? labels_for(x, tev, err, sizeof err) : NULL;
        if (!tev)
            sb_err(err, sizeof err, "out of memory");
        sb_event_free(tev);
        if (!labels) {
            json_decref(job);
            sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "%s", err);
            free(job_id);
            return;
        }
        json_object_del(job, "prerequisiteStepIds");
        json_object_set_new(job, "reference", json_pack("{s:s, s:s}", "projectId", p->c->project, "jobId", job_id));
        json_object_set_new(job, "placement", json_pack("{s:s}", "clusterName", p->c->cluster_name));
        json_object_set_new(job, "labels", labels);
        json_t *body = json_pack("{s:o, s:s+}", "job", job, "requestId", "sb-", x->key); /* "s+": two strings joined */
        set_state(x, NULL, NULL, job_id, 0);
        char *url = sb_asprintf("%s/jobs:submit", p->parent);
        rc = call(p, IN_PROCESS, "POST", url, body, 1, &resp, gerr, sizeof gerr);
        free(url);
        json_decref(body);
        o = sb_gcp_classify(rc, &resp, gerr, SB_GCP_409_OK);
        if (o.result == SB_RESULT_OK && resp.status != 409) {
            json_t *j = body_json(&resp);
            settle_job(x, j);
            json_decref(j);
            sb_gcp_response_clear(&resp);
            free(job_id);
            return;
        }
        if (o.result != SB_RESULT_OK) {
            not_ok(x, o, "submitting the job");
            sb_gcp_response_clear(&resp);
            free(job_id);
            return;
        }
        sb_gcp_response_clear(&resp); /* 409: it exists; look at it */
    }
    char *url = sb_asprintf("%s/jobs/%s", p->parent, known ? known : job_id);
    rc = call(p, IN_PROCESS, "GET", url, NULL, 1, &resp, gerr, sizeof gerr);
    free(url);
    o = sb_gcp_classify(rc, &resp, gerr, 0);
    if (o.result != SB_RESULT_OK) {
        set_state(x, NULL, NULL, known ? known : job_id, 0);
        not_ok(x, o, "reading the job");
    } else {
        json_t *j = body_json(&resp);
        settle_job(x, j);
        json_decref(j);
    }
    sb_gcp_response_clear(&resp);
    free(job_id);
}

/* ---- per event ------------------------------------------------------------------------ */

static void one(dataproc *p, sb_batch *b, size_t i)
{
    ev_ctx x = {.p = p, .b = b, .i = i, .ev = sb_batch_event(b, i)};
    const json_t *st = sb_batch_state(b, i);
    int failed = json_is_true(json_object_get(st, "failed"));
    x.gen = (int)json_integer_value(json_object_get(st, "gen"));
    if (st && failed) {
        x.gen++; /* replayed from the dead-letter store: one new attempt */
        sb_log(p->ins, SB_LOG_INFO, "event %s: replayed after a failed run; starting attempt %d", sb_event_id(x.ev),
               x.gen);
    }
    unsigned long long h = (unsigned long long)sb_run_id(sb_event_id(x.ev));
    if (x.gen > 0) /* a replay says so in its label, requestId and job id */
        snprintf(x.key, sizeof x.key, "%016llx-replay%d", h, x.gen);
    else
        snprintf(x.key, sizeof x.key, "%016llx", h);
    if (failed) {
        if (p->c->mode == MODE_SUBMIT)
            submit(&x, NULL);
        else
            instantiate(&x);
        return;
    }
    const char *op = json_string_value(json_object_get(st, "operation"));
    const char *job = json_string_value(json_object_get(st, "job"));
    if (p->c->mode == MODE_SUBMIT) {
        char *j = job ? sb_asprintf("%s", job) : NULL;
        submit(&x, j);
        free(j);
    } else if (op) {
        char *o = sb_asprintf("%s", op);
        poll_op(&x, o);
        free(o);
    } else {
        instantiate(&x);
    }
}

static void dp_process(void *self, sb_batch *b)
{
    size_t n = sb_batch_count(b);
    for (size_t i = 0; i < n; i++)
        one(self, b, i);
}

/* Delete the clusters that carry an event's key: given up before the
 * operation name was known, a workflow may still have started. */
static void delete_labelled_clusters(dataproc *p, const char *eid, const char *key)
{
    char *url = sb_asprintf("%s/clusters?filter=labels.%s%%20%%3D%%20%s&pageSize=100", p->parent, LABEL, key);
    sb_gcp_response resp;
    char gerr[1024] = "";
    sb_gcp_result rc = call(p, IN_ABANDON, "GET", url, NULL, 1, &resp, gerr, sizeof gerr);
    free(url);
    if (rc != SB_GCP_OK) {
        sb_log(p->ins, SB_LOG_ERROR, "event %s given up: cannot list clusters labelled %s=%s (%s); check for one by "
                                     "hand: gcloud dataproc clusters list --region %s --filter labels.%s=%s",
               eid, LABEL, key, resp.error_line ? resp.error_line : gerr, p->c->region, LABEL, key);
        sb_gcp_response_clear(&resp);
        return;
    }
    json_t *j = body_json(&resp), *c;
    sb_gcp_response_clear(&resp);
    size_t i;
    json_array_foreach(json_object_get(j, "clusters"), i, c)
    {
        const char *name = json_string_value(json_object_get(c, "clusterName"));
        if (!name)
            continue;
        url = sb_asprintf("%s/clusters/%s", p->parent, name);
        rc = call(p, IN_ABANDON, "DELETE", url, NULL, 1, &resp, gerr, sizeof gerr);
        free(url);
        sb_log(p->ins, rc == SB_GCP_OK ? SB_LOG_WARN : SB_LOG_ERROR, "event %s given up: %s cluster %s%s%s", eid,
               rc == SB_GCP_OK ? "deleted" : "could not delete", name, rc == SB_GCP_OK ? "" : ": ",
               rc == SB_GCP_OK ? "" : (resp.error_line ? resp.error_line : gerr));
        sb_gcp_response_clear(&resp);
    }
    json_decref(j);
}

/* Given up (step timeout, retry budget spent): leave no cluster behind. */
static void dp_abandon(void *self, sb_batch *b)
{
    dataproc *p = self;
    for (size_t i = 0, n = sb_batch_count(b); i < n; i++) {
        const json_t *st = sb_batch_state(b, i);
        const char *eid = sb_event_id(sb_batch_event(b, i));
        if (json_is_true(json_object_get(st, "failed")))
            continue;
        const char *op = json_string_value(json_object_get(st, "operation"));
        const char *cluster = json_string_value(json_object_get(st, "cluster"));
        const char *job = json_string_value(json_object_get(st, "job"));
        sb_gcp_response resp;
        char gerr[1024] = "";
        char *url = op ? sb_asprintf("/v1/%s:cancel", op)
                       : job ? sb_asprintf("%s/jobs/%s:cancel", p->parent, job) : NULL;
        if (!url) {
            const char *key = json_string_value(json_object_get(st, "key"));
            if (key && p->c->mode == MODE_WORKFLOW)
                delete_labelled_clusters(p, eid, key);
            continue;
        }
        json_t *empty = json_object();
        sb_gcp_result rc = call(p, IN_ABANDON, "POST", url, empty, 1, &resp, gerr, sizeof gerr);
        json_decref(empty);
        free(url);
        if (rc == SB_GCP_OK) {
            sb_log(p->ins, SB_LOG_WARN, "event %s given up: cancelled %s %s%s", eid, op ? "workflow" : "job",
                   op ? op : job, op ? " (Dataproc deletes its cluster)" : "");
            sb_gcp_response_clear(&resp);
            continue;
        }
        sb_log(p->ins, SB_LOG_ERROR, "event %s given up: cancelling %s failed: %s", eid, op ? op : job,
               resp.error_line ? resp.error_line : gerr);
        sb_gcp_response_clear(&resp);
        if (op && cluster) {
            url = sb_asprintf("%s/clusters/%s?requestId=sb-del-%016llx", p->parent, cluster,
                              (unsigned long long)sb_run_id(cluster));
            rc = call(p, IN_ABANDON, "DELETE", url, NULL, 1, &resp, gerr, sizeof gerr);
            free(url);
            if (rc == SB_GCP_OK || resp.status == 404)
                sb_log(p->ins, SB_LOG_WARN, "event %s: deleted cluster %s of the abandoned workflow", eid, cluster);
            else
                sb_log(p->ins, SB_LOG_ERROR, "event %s: cluster %s of the abandoned workflow %s could not be deleted (%s); "
                                             "delete it by hand: gcloud dataproc clusters delete %s --region %s",
                       eid, cluster, op, resp.error_line ? resp.error_line : gerr, cluster, p->c->region);
            sb_gcp_response_clear(&resp);
        }
    }
}

/* The bucket of a gs:// driver: it exists and the objects can be read
 * (with this instance's credentials; the clusters' account needs the same). */
static void preflight_bucket(dataproc *p, sb_preflight *pf, const char *uri)
{
    const char *b = uri + 5, *slash = strchr(b, '/');
    size_t n = slash ? (size_t)(slash - b) : strlen(b);
    if (n == 0 || n > 222)
        return;
    char err[1024];
    sb_gcp_client *gs = sb_gcp_client_from_instance(p->ins, "storage", err, sizeof err);
    if (!gs) {
        sb_preflight_fail(pf, "a Cloud Storage client for driver_uri", "%s", err);
        return;
    }
    char *url = sb_asprintf("/storage/v1/b/%.*s", (int)n, b);
    char *what = sb_asprintf("bucket gs://%.*s of driver_uri exists", (int)n, b);
    char *may = sb_asprintf("may read gs://%.*s (testIamPermissions)", (int)n, b);
    static const char *const perms[] = {"storage.objects.get", NULL};
    sb_gcp_preflight_resource(gs, pf, url, what, "create it, or fix driver_uri", "roles/storage.objectViewer on it",
                              perms, may, "roles/storage.objectViewer on the bucket (and the clusters' service account too)");
    free(url);
    free(what);
    free(may);
    sb_gcp_client_destroy(gs);
}

/* Read-only: the token, the region reachable (clusters.list), in submit
 * mode the cluster, and the driver's bucket. */
static void dp_preflight(void *self, sb_preflight *pf)
{
    dataproc *p = self;
    if (sb_gcp_preflight_token(p->gc, pf) != 0)
        return;
    char *url = sb_asprintf("%s/clusters?pageSize=1", p->parent);
    char *what = sb_asprintf("Dataproc region %s of project %s is reachable (clusters.list)", p->c->region,
                             p->c->project);
    int rc = sb_gcp_preflight_get(p->gc, pf, url, what, "check options project and region (gcloud dataproc regions)",
                                  "roles/dataproc.editor on the project", NULL);
    free(url);
    free(what);
    if (rc == 0 && p->c->mode == MODE_SUBMIT) {
        url = sb_asprintf("%s/clusters/%s", p->parent, p->c->cluster_name);
        what = sb_asprintf("cluster %s exists (mode submit)", p->c->cluster_name);
        sb_gcp_preflight_get(p->gc, pf, url, what, "create it, or fix cluster_name", "roles/dataproc.editor", NULL);
        free(url);
        free(what);
    }
    if (p->c->driver_uri && strncmp(p->c->driver_uri, "gs://", 5) == 0)
        preflight_bucket(p, pf, p->c->driver_uri);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "dataproc",
    .kind = SB_KIND_ACTION,
    .version = "1.0",
    .description = "Run one Dataproc workflow (ephemeral cluster with a Hive metastore) or job per event and wait for it",
    .flags = SB_PLUGIN_CONCURRENT,
    .options = options,
    .config_size = sizeof(dataproc_conf),
    .create = dp_create,
    .process = dp_process,
    .destroy = dp_destroy,
    .abandon = dp_abandon,
    .preflight = dp_preflight,
};
