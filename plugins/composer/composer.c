/*
 * composer - action: trigger one Airflow DAG run per event in a Cloud
 * Composer environment (or any Airflow reached with Google access tokens)
 * and, with wait "finished", wait for its end.
 *
 * Where Airflow is. `airflow_uri` as given, else config.airflowUri of the
 * environment (Composer v1 environments.get), fetched once, kept, and
 * fetched again after Airflow answers 404 or 401 (the web server moved or
 * the environment was re-created). `api: auto` reads the Airflow major
 * version from the environment's softwareConfig.imageVersion
 * ("composer-2.9.7-airflow-2.10.2"): Airflow 2 speaks /api/v1, Airflow 3
 * /api/v2, whose trigger body needs logical_date (null unless a template
 * gives one).
 *
 * One run per event. The run id is the `dag_run_id` template, or one made
 * from the event id ("sb_" + the id's safe characters + a hash of all of
 * it), so a redelivered event, a retried request and a restarted daemon all
 * name the same run; Airflow refuses a second run with that id (409), which
 * is taken as "already triggered" once a GET finds the run. The id goes into
 * the step state before the trigger is sent. When a failed run's event is
 * replayed from the dead-letter store, the step state says the last run
 * failed, and exactly one new run is triggered with the suffix
 * "__replayN".
 *
 * Waiting. queued/running answer WAIT (poll_interval), success OK, failed
 * FAIL with the state and the run's URL. The core's step_timeout bounds the
 * wait; a run given up on is left running in Airflow, with a log line. Fields: dag_run_id, dag_run_url, dag_run_state, dag_run_end_date, and on success
 * gcp_finished_at (the run's end_date, or now when Airflow gave none).
 *
 * Threading: the state is read-only after create() except the Airflow
 * location cache, which a mutex guards; the gcp client is thread-safe, so
 * process() may run concurrently (SB_PLUGIN_CONCURRENT).
 */
#include <syncbridge/syncbridge.h>
#include <syncbridge/gcp.h>

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUN_ID_MAX 250 /* Airflow's dag_run.run_id column */
#define DAG_CHECK_MS 60000

enum { API_AUTO, API_V1, API_V2 };
enum { WAIT_NONE, WAIT_FINISHED };

static const char *const apis[] = {[API_AUTO] = "auto", [API_V1] = "airflow2", [API_V2] = "airflow3", NULL};
static const char *const waits[] = {[WAIT_NONE] = "none", [WAIT_FINISHED] = "finished", NULL};

typedef struct composer_conf {
    const char *environment;
    const char *airflow_uri;
    const char *dag;
    int api;
    int wait;
    int64_t poll_interval;
    const sb_template *dag_run_id;
    const sb_template *logical_date;
    const sb_template *note;
    const sb_json_template *conf;
} composer_conf;

static const sb_option_def options[] = {
    {SB_OPT("environment", SB_OPT_STRING, NULL, 0,
            "Composer environment projects/PROJECT/locations/LOCATION/environments/NAME: its config.airflowUri is "
            "the Airflow to call, and with api auto its imageVersion picks the REST API."),
     SB_OPT_BIND(composer_conf, environment)},
    {SB_OPT("airflow_uri", SB_OPT_STRING, NULL, 0,
            "Airflow web server URL, instead of (or overriding) the environment's config.airflowUri."),
     SB_OPT_BIND(composer_conf, airflow_uri)},
    {SB_OPT("dag", SB_OPT_STRING, NULL, 1, "The DAG to trigger (its dag_id)."), SB_OPT_BIND(composer_conf, dag)},
    {SB_OPT("api", SB_OPT_STRING, "\"auto\"", 0,
            "Airflow REST API: \"airflow2\" (/api/v1, Composer 2), \"airflow3\" (/api/v2, Composer 3) or \"auto\" "
            "(from the environment's imageVersion)."),
     SB_OPT_CHOICES(apis), SB_OPT_BIND(composer_conf, api)},
    {SB_OPT("wait", SB_OPT_STRING, "\"finished\"", 0,
            "\"finished\": wait for the run to end (failed = dead letter); \"none\": done once triggered."),
     SB_OPT_CHOICES(waits), SB_OPT_BIND(composer_conf, wait)},
    {SB_OPT("poll_interval", SB_OPT_DURATION, "\"30s\"", 0, "How often a waiting run is looked at."),
     SB_OPT_RANGE_BIND(10, 3600000, composer_conf, poll_interval)},
    {SB_OPT("dag_run_id", SB_OPT_TEMPLATE, NULL, 0,
            "Run id template (also sees ${event_id}); it must name one run per event and match Airflow's "
            "^[A-Za-z0-9_.~:+-]+$. Default: sb_<the event id's safe characters>_<hash of the event id>."),
     SB_OPT_BIND(composer_conf, dag_run_id)},
    {SB_OPT("conf", SB_OPT_JSON_TEMPLATE, NULL, 0,
            "The run's conf, a JSON object whose strings are templates over the event's fields (and ${event_id}); "
            "a value that is exactly \"${field}\" keeps the field's JSON type. Default: {\"command\": "
            "the event's command, \"event_id\", \"run\": {the parsed run's fields}}."),
     SB_OPT_BIND(composer_conf, conf)},
    {SB_OPT("logical_date", SB_OPT_TEMPLATE, NULL, 0,
            "The run's logical_date (RFC 3339) as a template; default none (Airflow 2: now; Airflow 3: null). "
            "Airflow refuses two runs of a DAG with one logical date."),
     SB_OPT_BIND(composer_conf, logical_date)},
    {SB_OPT("note", SB_OPT_TEMPLATE, NULL, 0, "The run's note, a template."), SB_OPT_BIND(composer_conf, note)},
    SB_GCP_OPTION_DEFS,
    {0}};

typedef struct composer {
    sb_instance *ins;
    const composer_conf *c;
    sb_gcp_client *gc;
    pthread_mutex_t mu;
    char *uri;          /* Airflow base URL, no trailing slash; NULL = look it up */
    int api;            /* API_V1 / API_V2 once known */
    int64_t dag_ok_us;  /* the DAG was found unpaused at this time */
} composer;

static void cp_destroy(void *self)
{
    composer *p = self;
    if (!p)
        return;
    sb_gcp_client_destroy(p->gc);
    pthread_mutex_destroy(&p->mu);
    free(p->uri);
    free(p);
}

static int valid_env_name(const char *s)
{
    const char *seg[] = {"projects/", "/locations/", "/environments/"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(seg[k]);
        if (strncmp(s, seg[k], l) != 0)
            return 0;
        s += l;
        size_t n = strcspn(s, "/?#% \t");
        if (n == 0 || (k < 2 && s[n] != '/') || (k == 2 && s[n] != '\0'))
            return 0;
        s += n;
    }
    return 1;
}

static int cp_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    composer *p = calloc(1, sizeof *p);
    if (!p)
        return sb_err(errstr, errstr_size, "out of memory");
    p->ins = ins;
    p->c = sb_instance_config(ins);
    pthread_mutex_init(&p->mu, NULL);
    const composer_conf *c = p->c;
    int rc = 0;
    if (!c->environment && !c->airflow_uri)
        rc = sb_err(errstr, errstr_size, "give option environment (projects/P/locations/L/environments/E) or airflow_uri");
    else if (c->environment && !valid_env_name(c->environment))
        rc = sb_err(errstr, errstr_size, "option environment: \"%s\" is not projects/PROJECT/locations/LOCATION/environments/NAME",
                    c->environment);
    else if (c->airflow_uri && strncmp(c->airflow_uri, "http://", 7) != 0 && strncmp(c->airflow_uri, "https://", 8) != 0)
        rc = sb_err(errstr, errstr_size, "option airflow_uri: \"%s\" is not an http(s) URL", c->airflow_uri);
    else if (c->api == API_AUTO && !c->environment)
        rc = sb_err(errstr, errstr_size,
                    "option api: \"auto\" reads the Airflow version from the environment, and none is given; set api to "
                    "\"airflow2\" or \"airflow3\"");
    else if (strspn(c->dag, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != strlen(c->dag) || !*c->dag)
        rc = sb_err(errstr, errstr_size, "option dag: \"%s\" is not a DAG id (letters, digits, _ . -)", c->dag);
    else if (c->conf && !json_is_object(sb_json_template_source(c->conf)))
        rc = sb_err(errstr, errstr_size, "option conf: not a JSON object (Airflow's conf is one)");
    if (rc == 0 && c->airflow_uri && strncmp(c->airflow_uri, "http://", 7) == 0 &&
        strncmp(c->airflow_uri + 7, "127.0.0.1", 9) != 0 && strncmp(c->airflow_uri + 7, "localhost", 9) != 0 &&
        strncmp(c->airflow_uri + 7, "[::1]", 5) != 0)
        sb_log(ins, SB_LOG_WARN, "option airflow_uri: %s is plain HTTP: the Google access token goes out unencrypted; "
               "use https:// (or a loopback address, e.g. through a tunnel)", c->airflow_uri);
    if (rc == 0) {
        p->api = c->api;
        if (c->airflow_uri) {
            p->uri = sb_asprintf("%s", c->airflow_uri);
            size_t l = strlen(p->uri);
            while (l > 0 && p->uri[l - 1] == '/')
                p->uri[--l] = '\0';
        }
        p->gc = sb_gcp_client_from_instance(ins, "composer", errstr, errstr_size);
        if (!p->gc)
            rc = -1;
    }
    if (rc != 0) {
        cp_destroy(p);
        return -1;
    }
    *self = p;
    return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static char *url_escape(const char *s)
{
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "", 0);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~')
            sb_strbuf_add(&b, (const char *)&ch, 1);
        else
            sb_strbuf_printf(&b, "%%%02X", ch);
    }
    return b.p;
}

static int valid_run_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > RUN_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(isalnum(ch) || strchr("_.~:+-", ch)))
            return 0;
    }
    return 1;
}

/* A copy of the event that also has the field event_id, for templates. */
static sb_event *with_event_id(sb_event *ev)
{
    json_t *f = json_deep_copy(sb_event_fields(ev));
    if (!f)
        return NULL;
    json_object_set_new(f, "event_id", json_string(sb_event_id(ev)));
    return sb_event_new_with_fields(sb_event_id(ev), f);
}

/* The run id of generation 0: the template, or sb_<safe chars>_<hash>. */
static char *base_run_id(composer *p, sb_event *tev, char *err, size_t errsz)
{
    if (p->c->dag_run_id) {
        char terr[256];
        char *s = sb_template_render(p->c->dag_run_id, tev, terr, sizeof terr);
        if (!s)
            sb_err(err, errsz, "dag_run_id: %s", terr);
        return s;
    }
    const char *id = sb_event_id(tev);
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "sb_", 3);
    size_t n = 0;
    for (const char *s = id; *s && n < 160; s++, n++) {
        unsigned char ch = (unsigned char)*s;
        char o = (char)(isalnum(ch) || strchr("_.~+-", ch) ? ch : '_');
        sb_strbuf_add(&b, &o, 1);
    }
    sb_strbuf_printf(&b, "_%016llx", (unsigned long long)sb_run_id(id));
    return b.p;
}

static char *run_id_of(composer *p, sb_event *tev, int gen, char *err, size_t errsz)
{
    char *base = base_run_id(p, tev, err, errsz);
    if (!base)
        return NULL;
    char *id = gen > 0 ? sb_asprintf("%s__replay%d", base, gen) : base;
    if (gen > 0)
        free(base);
    if (!valid_run_id(id)) {
        sb_err(err, errsz, "dag_run_id \"%.300s\" is not a valid Airflow run id (1 to %d of A-Z a-z 0-9 _ . ~ : + -)", id,
               RUN_ID_MAX);
        free(id);
        return NULL;
    }
    return id;
}

/* The default conf: the Run Replicator command the event carries, and the parsed run. */
static const char *const run_fields[] = {"script", "schema", "table", "inc_key", "inc_val", "inc_date", "offset_days",
                                         "full_refresh", "run_id", "host", "status", NULL};

static json_t *make_conf(composer *p, sb_event *tev, char *err, size_t errsz)
{
    if (p->c->conf) {
        char terr[512];
        json_t *conf = sb_json_template_render(p->c->conf, tev, terr, sizeof terr);
        if (!conf)
            sb_err(err, errsz, "option conf: %s", terr);
        return conf;
    }
    json_t *conf = json_object();
    json_t *f = sb_event_fields(tev);
    json_t *cmd = json_object_get(f, "command");
    if (cmd)
        json_object_set(conf, "command", cmd);
    json_object_set_new(conf, "event_id", json_string(sb_event_id(tev)));
    json_t *run = json_object();
    for (size_t i = 0; run_fields[i]; i++) {
        json_t *v = json_object_get(f, run_fields[i]);
        if (v)
            json_object_set(run, run_fields[i], v);
    }
    json_object_set_new(conf, "run", run);
    return conf;
}

/* ---- where Airflow is ----------------------------------------------------- */

/* Look the environment up: airflowUri and the API from imageVersion. */
static sb_gcp_outcome lookup_env(composer *p, char *err, size_t errsz)
{
    char *url = sb_asprintf("/v1/%s", p->c->environment);
    /* no_wait: a retry is the core's to schedule, not a sleep inside process() */
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = url, .idempotent = 1, .no_wait = 1};
    sb_gcp_response resp;
    char gerr[1024] = "";
    sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, gerr, sizeof gerr);
    free(url);
    sb_gcp_outcome o = sb_gcp_classify(rc, &resp, gerr, SB_GCP_404_RETRY);
    if (o.result != SB_RESULT_OK) {
        if (o.cause == SB_GCP_CAUSE_NOT_FOUND)
            sb_err(err, errsz, "Composer environment %s not found (%s); check option environment", p->c->environment,
                   o.reason);
        else if (o.cause == SB_GCP_CAUSE_AUTH)
            sb_err(err, errsz, "reading Composer environment %s not authorised (%s): the service account needs "
                               "roles/composer.user", p->c->environment, o.reason);
        else
            sb_err(err, errsz, "reading Composer environment %s: %s", p->c->environment, o.reason);
        o.reason = NULL;
        sb_gcp_response_clear(&resp);
        return o;
    }
    json_t *env = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
    json_t *cfg = json_object_get(env, "config");
    const char *state = json_string_value(json_object_get(env, "state"));
    const char *auri = json_string_value(json_object_get(cfg, "airflowUri"));
    const char *image = json_string_value(json_object_get(json_object_get(cfg, "softwareConfig"), "imageVersion"));
    int api = p->c->api;
    if (api == API_AUTO && image) {
        const char *a = strstr(image, "airflow-");
        int major = a ? atoi(a + 8) : 0;
        api = major >= 3 ? API_V2 : major == 2 ? API_V1 : API_AUTO;
    }
    o.reason = NULL;
    if (!p->c->airflow_uri && !auri) {
        o.result = SB_RESULT_RETRY;
        sb_err(err, errsz, "Composer environment %s has no Airflow web server yet (state %s); waiting for it",
               p->c->environment, state ? state : "unknown");
    } else if (api == API_AUTO) {
        o.result = SB_RESULT_FAIL;
        sb_err(err, errsz, "Composer environment %s: cannot tell the Airflow version from imageVersion \"%s\"; set "
                           "option api", p->c->environment, image ? image : "(none)");
    } else {
        pthread_mutex_lock(&p->mu);
        if (!p->c->airflow_uri) {
            free(p->uri);
            p->uri = sb_asprintf("%s", auri);
            size_t l = strlen(p->uri);
            while (l > 0 && p->uri[l - 1] == '/')
                p->uri[--l] = '\0';
        }
        p->api = api;
        pthread_mutex_unlock(&p->mu);
        sb_log(p->ins, SB_LOG_INFO, "Composer environment %s: Airflow at %s (%s, image %s)", p->c->environment,
               p->c->airflow_uri ? p->c->airflow_uri : auri, apis[api], image ? image : "?");
    }
    json_decref(env);
    sb_gcp_response_clear(&resp);
    return o;
}

/* The Airflow base URL and API version, looking the environment up when
 * needed. NULL with the outcome in *o when it is not known. */
static char *airflow(composer *p, int *api, sb_gcp_outcome *o, char *err, size_t errsz)
{
    for (int round = 0; round < 2; round++) {
        pthread_mutex_lock(&p->mu);
        char *u = p->uri && p->api != API_AUTO ? sb_asprintf("%s", p->uri) : NULL;
        *api = p->api;
        pthread_mutex_unlock(&p->mu);
        if (u)
            return u;
        if (round)
            break;
        *o = lookup_env(p, err, errsz);
        if (o->result != SB_RESULT_OK)
            return NULL;
    }
    /* forgotten again by another thread meanwhile: look next time */
    *o = (sb_gcp_outcome){.result = SB_RESULT_RETRY, .cause = SB_GCP_CAUSE_TRANSIENT};
    sb_err(err, errsz, "the Airflow address of %s was just invalidated; looking it up again", p->c->environment);
    return NULL;
}

/* Forget the Airflow location (a 404 or 401 from it): look again next time. */
static void forget_airflow(composer *p)
{
    if (!p->c->environment)
        return;
    pthread_mutex_lock(&p->mu);
    if (!p->c->airflow_uri) {
        free(p->uri);
        p->uri = NULL;
    }
    p->api = p->c->api;
    p->dag_ok_us = 0;
    pthread_mutex_unlock(&p->mu);
}

static const char *api_path(int api)
{
    return api == API_V2 ? "api/v2" : "api/v1";
}

static char *run_url(const char *base, int api, const char *dag, const char *run_id)
{
    char *d = url_escape(dag), *r = url_escape(run_id);
    char *u = api == API_V2 ? sb_asprintf("%s/dags/%s/runs/%s", base, d, r)
                            : sb_asprintf("%s/dags/%s/grid?dag_run_id=%s", base, d, r);
    free(d);
    free(r);
    return u;
}

/* One Airflow call. */
static sb_gcp_result af_call(composer *p, const char *method, const char *url, const char *body, sb_gcp_response *resp,
                             char *gerr, size_t gerrsz)
{
    static const char *const headers[] = {"Content-Type: application/json", "Accept: application/json", NULL};
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = method, .url = url, .headers = headers,
                          .body = body, .body_len = body ? strlen(body) : 0, .idempotent = 1, .no_wait = 1};
    return sb_gcp_request_send(p->gc, &req, resp, gerr, gerrsz);
}

/* Say why an Airflow answer is not OK, with what to do about it. */
static void explain(composer *p, sb_gcp_outcome o, long status, const char *what, char *err, size_t errsz)
{
    if (o.cause == SB_GCP_CAUSE_AUTH)
        sb_err(err, errsz, "%s not authorised (%s): the service account needs roles/composer.user and an Airflow role "
                           "that may trigger and read DAG runs (User or Op) in the environment", what, o.reason);
    else if (status == 404)
        sb_err(err, errsz, "%s: DAG %s not found (%s): check option dag, that the DAG file is in the environment's "
                           "dags folder and parses without import errors, and that Airflow is where it was looked for",
               what, p->c->dag, o.reason);
    else
        sb_err(err, errsz, "%s: %s", what, o.reason);
}

/* The DAG exists and is not paused (checked at most once a minute). */
static int dag_ready(composer *p, const char *base, int api, sb_gcp_outcome *o, char *err, size_t errsz)
{
    pthread_mutex_lock(&p->mu);
    int64_t ok = p->dag_ok_us;
    pthread_mutex_unlock(&p->mu);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (ok && now - ok < DAG_CHECK_MS * 1000LL)
        return 0;
    char *dag = url_escape(p->c->dag);
    char *url = sb_asprintf("%s/%s/dags/%s", base, api_path(api), dag);
    free(dag);
    sb_gcp_response resp;
    char gerr[1024] = "";
    sb_gcp_result rc = af_call(p, "GET", url, NULL, &resp, gerr, sizeof gerr);
    free(url);
    *o = sb_gcp_classify(rc, &resp, gerr, SB_GCP_404_RETRY);
    int ret = -1;
    if (o->result != SB_RESULT_OK) {
        explain(p, *o, resp.status, "reading the DAG", err, errsz);
        if (resp.status == 404 || resp.status == 401)
            forget_airflow(p);
    } else {
        json_t *d = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        if (json_is_true(json_object_get(d, "is_paused"))) {
            o->result = SB_RESULT_RETRY;
            sb_err(err, errsz, "DAG %s is paused, so its runs would wait forever: unpause it in the Airflow UI or with "
                               "`gcloud composer environments run ENV --location LOC dags unpause -- %s`",
                   p->c->dag, p->c->dag);
        } else {
            pthread_mutex_lock(&p->mu);
            p->dag_ok_us = now;
            pthread_mutex_unlock(&p->mu);
            ret = 0;
        }
        json_decref(d);
    }
    o->reason = NULL;
    sb_gcp_response_clear(&resp);
    return ret;
}

/* ---- one event ------------------------------------------------------------ */

typedef struct ev_ctx {
    composer *p;
    sb_batch *b;
    size_t i;
    sb_event *ev;
} ev_ctx;

static void set_state(ev_ctx *x, const char *run_id, int gen, int triggered, int failed)
{
    sb_batch_set_state(x->b, x->i, json_pack("{s:s, s:i, s:b, s:b}", "dag_run_id", run_id, "gen", gen, "triggered",
                                             triggered, "failed", failed));
}

static void retry(ev_ctx *x, sb_gcp_outcome o, const char *err)
{
    sb_log(x->p->ins, o.result == SB_RESULT_FAIL ? SB_LOG_WARN : SB_LOG_ERROR, "event %s: %s%s", sb_event_id(x->ev),
           err, o.result == SB_RESULT_FAIL ? "" : "; retrying");
    sb_batch_set_result(x->b, x->i, o.result, "%s", err);
    if (o.result == SB_RESULT_RETRY && o.retry_after_ms > 0)
        sb_batch_set_retry_after(x->b, x->i, o.retry_after_ms);
}

/* Now as RFC 3339 UTC: the finish time of a run Airflow gave no end_date. */
static json_t *utc_now(void)
{
    char buf[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static void add_fields(ev_ctx *x, const char *run_id, const char *url, const char *state, json_t *end)
{
    sb_event_add(x->ev, "dag_run_id", json_string(run_id));
    sb_event_add(x->ev, "dag_run_url", json_string(url));
    sb_event_add(x->ev, "dag_run_state", json_string(state));
    sb_event_add(x->ev, "dag_run_end_date", end && json_is_string(end) ? json_incref(end) : json_null());
    /* the GCP execution's finish time under the name every copy step gives
     * it, so one registry step serves Composer and Dataproc routes alike */
    if (strcmp(state, "success") == 0)
        sb_event_add(x->ev, "gcp_finished_at", end && json_is_string(end) ? json_incref(end) : utc_now());
}

/* Look at the run and settle the event from its state. */
static void poll_run(ev_ctx *x, const char *base, int api, const char *run_id, int gen)
{
    composer *p = x->p;
    char *dag = url_escape(p->c->dag), *rid = url_escape(run_id);
    char *url = sb_asprintf("%s/%s/dags/%s/dagRuns/%s", base, api_path(api), dag, rid);
    free(dag);
    free(rid);
    sb_gcp_response resp;
    char gerr[1024] = "", err[1536];
    sb_gcp_result rc = af_call(p, "GET", url, NULL, &resp, gerr, sizeof gerr);
    free(url);
    sb_gcp_outcome o = sb_gcp_classify(rc, &resp, gerr, SB_GCP_404_RETRY);
    char *web = run_url(base, api, p->c->dag, run_id);
    set_state(x, run_id, gen, 1, 0);
    if (o.result != SB_RESULT_OK) {
        if (resp.status == 404 || resp.status == 401)
            forget_airflow(p);
        char what[512];
        snprintf(what, sizeof what, "reading DAG run %s of %s", run_id, p->c->dag);
        /* no such run: Airflow 2's problem title, Airflow 3's detail text */
        if (resp.status == 404 && resp.body &&
            (strstr(resp.body, "DAGRun not found") || strstr(resp.body, "The DagRun with dag_id")))
            sb_err(err, sizeof err, "%s: no such run (%s); if the trigger was refused with 409, another run of the DAG "
                                    "holds the same logical_date: make the logical_date template unique per event",
                   what, o.reason);
        else
            explain(p, o, resp.status, what, err, sizeof err);
        set_state(x, run_id, gen, 0, 0); /* trigger again next time */
        retry(x, o, err);
    } else {
        json_t *r = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        const char *state = json_string_value(json_object_get(r, "state"));
        if (!state)
            state = "unknown";
        if (strcmp(state, "success") == 0) {
            add_fields(x, run_id, web, state, json_object_get(r, "end_date"));
            sb_batch_set_result(x->b, x->i, SB_RESULT_OK, NULL);
        } else if (strcmp(state, "failed") == 0) {
            set_state(x, run_id, gen, 1, 1);
            sb_log(p->ins, SB_LOG_WARN, "event %s: DAG run %s of %s failed: %s", sb_event_id(x->ev), run_id, p->c->dag,
                   web);
            sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "DAG run %s of %s ended in state failed: %s", run_id,
                                p->c->dag, web);
        } else if (p->c->wait == WAIT_NONE) {
            add_fields(x, run_id, web, state, NULL);
            sb_batch_set_result(x->b, x->i, SB_RESULT_OK, NULL);
        } else {
            sb_batch_wait(x->b, x->i, p->c->poll_interval, "DAG run %s of %s is %s: %s", run_id, p->c->dag, state, web);
        }
        json_decref(r);
    }
    free(web);
    sb_gcp_response_clear(&resp);
}

/* Trigger the run (a 409 for our own id means it exists), then settle. */
static void trigger(ev_ctx *x, sb_event *tev, const char *base, int api, const char *run_id, int gen)
{
    composer *p = x->p;
    char err[1536], gerr[1024] = "";
    sb_gcp_outcome o = {0};
    if (dag_ready(p, base, api, &o, err, sizeof err) != 0) {
        retry(x, o, err);
        return;
    }
    json_t *conf = make_conf(p, tev, err, sizeof err);
    if (!conf) {
        sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "%s", err);
        return;
    }
    json_t *body = json_pack("{s:s, s:o}", "dag_run_id", run_id, "conf", conf);
    const sb_template *tpls[] = {p->c->logical_date, p->c->note};
    const char *names[] = {"logical_date", "note"};
    for (int k = 0; k < 2; k++) {
        if (!tpls[k])
            continue;
        char terr[256];
        char *v = sb_template_render(tpls[k], tev, terr, sizeof terr);
        if (!v) {
            json_decref(body);
            sb_batch_set_result(x->b, x->i, SB_RESULT_FAIL, "%s: %s", names[k], terr);
            return;
        }
        json_object_set_new(body, names[k], json_string(v));
        free(v);
    }
    if (api == API_V2 && !json_object_get(body, "logical_date"))
        json_object_set_new(body, "logical_date", json_null()); /* required by Airflow 3, null allowed */
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *dag = url_escape(p->c->dag);
    char *url = sb_asprintf("%s/%s/dags/%s/dagRuns", base, api_path(api), dag);
    free(dag);
    sb_gcp_response resp;
    sb_gcp_result rc = af_call(p, "POST", url, text, &resp, gerr, sizeof gerr);
    free(url);
    free(text);
    o = sb_gcp_classify(rc, &resp, gerr, SB_GCP_404_RETRY | SB_GCP_409_OK);
    if (o.result != SB_RESULT_OK) {
        if (resp.status == 404 || resp.status == 401)
            forget_airflow(p);
        set_state(x, run_id, gen, 0, 0);
        char what[512];
        snprintf(what, sizeof what, "triggering DAG run %s of %s", run_id, p->c->dag);
        explain(p, o, resp.status, what, err, sizeof err);
        retry(x, o, err);
    } else {
        if (resp.status == 409)
            sb_log(p->ins, SB_LOG_INFO, "event %s: DAG run %s of %s already exists; following it", sb_event_id(x->ev),
                   run_id, p->c->dag);
        else
            sb_log(p->ins, SB_LOG_DEBUG, "event %s: triggered DAG run %s of %s", sb_event_id(x->ev), run_id, p->c->dag);
        /* A 409 may also be another run with our logical_date: the GET
         * tells, as a 404 for our id (retried, with the reason logged). */
        poll_run(x, base, api, run_id, gen);
    }
    sb_gcp_response_clear(&resp);
}

static void one(composer *p, sb_batch *b, size_t i)
{
    ev_ctx x = {p, b, i, sb_batch_event(b, i)};
    char err[1536];
    sb_gcp_outcome o = {0};
    int api;
    char *base = airflow(p, &api, &o, err, sizeof err);
    if (!base) {
        retry(&x, o, err);
        return;
    }
    const json_t *st = sb_batch_state(b, i);
    const char *prev = json_string_value(json_object_get(st, "dag_run_id"));
    int gen = (int)json_integer_value(json_object_get(st, "gen"));
    if (prev && json_is_true(json_object_get(st, "triggered")) && !json_is_true(json_object_get(st, "failed"))) {
        char *id = sb_asprintf("%s", prev);
        poll_run(&x, base, api, id, gen);
        free(id);
        free(base);
        return;
    }
    if (prev && json_is_true(json_object_get(st, "failed")))
        gen++; /* replayed from the dead-letter store: one new run */
    sb_event *tev = with_event_id(x.ev);
    char *run_id = tev ? run_id_of(p, tev, gen, err, sizeof err) : NULL;
    if (!tev)
        sb_batch_set_result(b, i, SB_RESULT_RETRY, "out of memory");
    else if (!run_id)
        sb_batch_set_result(b, i, SB_RESULT_FAIL, "%s", err);
    else {
        if (gen > 0)
            sb_log(p->ins, SB_LOG_INFO, "event %s: replayed after a failed run; triggering %s", sb_event_id(x.ev), run_id);
        trigger(&x, tev, base, api, run_id, gen);
    }
    free(run_id);
    sb_event_free(tev);
    free(base);
}

/* Given up (step timeout, retry budget spent): say what is left running. A DAG run
 * is the team's own work, so it is not stopped from here. */
static void cp_abandon(void *self, sb_batch *b)
{
    composer *p = self;
    for (size_t i = 0, n = sb_batch_count(b); i < n; i++) {
        const json_t *st = sb_batch_state(b, i);
        const char *id = json_string_value(json_object_get(st, "dag_run_id"));
        if (id && json_is_true(json_object_get(st, "triggered")) && !json_is_true(json_object_get(st, "failed")))
            sb_log(p->ins, SB_LOG_WARN,
                   "event %s given up while DAG run %s of %s had not ended; the run goes on in Airflow (mark it "
                   "failed there to stop it)", sb_event_id(sb_batch_event(b, i)), id, p->c->dag);
    }
}

static void cp_process(void *self, sb_batch *b)
{
    size_t n = sb_batch_count(b);
    for (size_t i = 0; i < n; i++)
        one(self, b, i);
}

/* Read-only: the token, the environment RUNNING, the DAG there and
 * unpaused. */
static void cp_preflight(void *self, sb_preflight *pf)
{
    composer *p = self;
    if (sb_gcp_preflight_token(p->gc, pf) != 0)
        return;
    if (p->c->environment) {
        char *url = sb_asprintf("/v1/%s", p->c->environment);
        char *what = sb_asprintf("Composer environment %s exists", p->c->environment);
        json_t *env = NULL;
        int rc = sb_gcp_preflight_get(p->gc, pf, url, what, "check option environment (gcloud composer environments "
                                      "list --locations LOCATION)", "roles/composer.user on the project", &env);
        free(url);
        free(what);
        if (rc != 0)
            return;
        const char *state = json_string_value(json_object_get(env, "state"));
        what = sb_asprintf("Composer environment %s is RUNNING", p->c->environment);
        if (state && strcmp(state, "RUNNING") == 0)
            sb_preflight_ok(pf, what);
        else
            sb_preflight_fail(pf, what, "it is %s; DAG runs cannot start until it is RUNNING (wait for the "
                              "operation in progress, or repair the environment)", state ? state : "in no state");
        free(what);
        int running = state && strcmp(state, "RUNNING") == 0;
        json_decref(env); /* state pointed into it */
        if (!running)
            return;
    }
    int api = 0;
    char err[1024] = "";
    sb_gcp_outcome o;
    char *base = airflow(p, &api, &o, err, sizeof err);
    if (!base) {
        sb_preflight_fail(pf, "the Airflow web server is known", "%s", err);
        return;
    }
    char *what = sb_asprintf("DAG %s exists and is unpaused (%s/%s)", p->c->dag, base, api_path(api));
    if (dag_ready(p, base, api, &o, err, sizeof err) == 0)
        sb_preflight_ok(pf, what);
    else
        sb_preflight_fail(pf, what, "%s", err);
    free(what);
    free(base);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "composer",
    .kind = SB_KIND_ACTION,
    .version = "1.0",
    .description = "Trigger one Airflow DAG run per event in Cloud Composer (Airflow 2 or 3) and wait for its end",
    .flags = SB_PLUGIN_CONCURRENT,
    .options = options,
    .config_size = sizeof(composer_conf),
    .create = cp_create,
    .process = cp_process,
    .destroy = cp_destroy,
    .abandon = cp_abandon,
    .preflight = cp_preflight,
};
