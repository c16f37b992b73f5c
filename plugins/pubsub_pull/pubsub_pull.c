/*
 * pubsub_pull - source: consume a Pub/Sub subscription over REST
 * (subscriptions.pull, acknowledge and modifyAckDeadline, as
 * tests/fake/contracts/gcp/pubsub-v1.discovery.json describes them).
 *
 * Threads, all started by run() and joined before it returns:
 *   pullers (parallel_pulls)  each keeps one pull of up to max_messages in
 *                             flight while the outstanding messages and
 *                             bytes are under their bounds;
 *   lease keeper              extends the lease (modifyAckDeadline) of every
 *                             outstanding message each third of ack_deadline;
 *   run() itself              decodes, emits and acknowledges.
 * A message is outstanding from the pull that delivered it until it is
 * acknowledged or handed back (a modifyAckDeadline of 0).
 *
 * Delivery. Messages are emitted with sb_source_emit_async() and
 * acknowledged only once sb_source_await() says their batch is committed to
 * the run ledger. The event id is the `event_id` attribute (set by the
 * on-prem pubsub sink), else the id_attribute attribute, else
 * "pubsub:<messageId>", so a redelivery, or a second publish of one
 * on-prem event, is a ledger duplicate and never a second event. A crash
 * before the ack redelivers the message: at-least-once upstream, once in
 * the ledger.
 *
 * Backpressure. A full route blocks the emit; the batch then keeps its
 * messages outstanding, the bounds stop the pullers, and the lease keeper
 * keeps the leases alive meanwhile.
 *
 * A body the shared decoder refuses (syncbridge/decode.h) is put into
 * the dead-letter store with the reason and the raw body (base64), then
 * acknowledged: it never blocks the subscription.
 */
#include <syncbridge/syncbridge.h>
#include <syncbridge/buf.h>
#include <syncbridge/gcp.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#define MAX_INFLIGHT 2      /* batches emitted and not yet known committed */
#define ACK_CHUNK 1000      /* ack ids per acknowledge/modifyAckDeadline request */
#define PS_MAX_PULL 1000    /* Pub/Sub's maxMessages ceiling per pull */

typedef struct pmsg {
    char *ack_id;
    char *message_id;
    char *publish_time;
    json_t *attrs;   /* object, owned; NULL when the message has none */
    char *data;      /* decoded body */
    size_t len;
    int delivery_attempt; /* 0 = not reported */
    struct pmsg *qnext;           /* pulled, not yet taken by run() */
    struct pmsg *hprev, *hnext;   /* outstanding (leases kept) */
} pmsg;

typedef struct mbatch {
    pmsg **m;
    size_t n;
} mbatch;

typedef struct pp_conf {
    const char *subscription;
    const char *project;
    int format; /* sb_decode_format */
    const char *id_attribute;
    const char *script;
    int64_t max_messages;
    int64_t parallel_pulls;
    int64_t batch;
    int64_t max_outstanding_messages;
    int64_t max_outstanding_bytes;
    int64_t ack_deadline_ms;
    int64_t pull_timeout_ms;
    int create_subscription;
    const char *topic;
    const char *dead_letter_topic;
    int64_t max_delivery_attempts;
    int64_t min_backoff_ms;
    int64_t max_backoff_ms;
} pp_conf;

typedef struct pp {
    sb_instance *ins;
    const pp_conf *c;
    sb_gcp_client *gc;
    char *sub;       /* projects/P/subscriptions/S */
    char *topic;     /* create_subscription: projects/P/topics/T */
    char *dl_topic;  /* ... its dead-letter topic, or NULL */
    char *url_pull, *url_ack, *url_modack;

    /* run() only */
    sb_source_ctx *ctx;
    pthread_t *pullers;
    size_t npullers;
    pthread_t leaser;
    int leaser_up;
    mbatch inflight[MAX_INFLIGHT];
    size_t first, ninflight;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* queue grew, outstanding shrank, stopping */
    pmsg *qhead, *qtail;
    size_t qlen;
    pmsg *held;         /* outstanding messages */
    int64_t out_n;      /* outstanding messages, plus pulls' reservations */
    int64_t out_b;
    atomic_int stop;    /* stop(): wake and end run() */
    atomic_int halt;    /* run() is ending: threads return */

    uint64_t n_events, n_dead, n_acked;
} pp;

static const sb_option_def options[] = {
    {SB_OPT("subscription", SB_OPT_STRING, NULL, 1,
            "Subscription to pull from: projects/PROJECT/subscriptions/SUB, or SUB together with project."),
     SB_OPT_BIND(pp_conf, subscription)},
    {SB_OPT("project", SB_OPT_STRING, NULL, 0, "Project of a subscription or topic given by its short name."),
     SB_OPT_BIND(pp_conf, project)},
    {SB_OPT("format", SB_OPT_STRING, "\"auto\"", 0,
            "Message data: \"command\" (the Run Replicator command that ran), \"json\" (an object of fields), "
            "\"raw\" (UTF-8 text as the field body) or \"auto\" (json when it starts with '{', else command)."),
     SB_OPT_CHOICES(sb_decode_formats), SB_OPT_BIND(pp_conf, format)},
    {SB_OPT("id_attribute", SB_OPT_STRING, NULL, 0,
            "Attribute holding the event id when the message has no event_id attribute (else pubsub:<messageId>)."),
     SB_OPT_BIND(pp_conf, id_attribute)},
    {SB_OPT("script", SB_OPT_STRING, "\"run_replicator.sh\"", 0, "The script whose invocations are runs (command format)."),
     SB_OPT_BIND(pp_conf, script)},
    {SB_OPT("max_messages", SB_OPT_INT, "500", 0, "maxMessages of one pull (Pub/Sub's limit is 1000)."),
     SB_OPT_RANGE_BIND(1, PS_MAX_PULL, pp_conf, max_messages)},
    {SB_OPT("parallel_pulls", SB_OPT_INT, "2", 0, "Pull requests kept in flight at once."),
     SB_OPT_RANGE_BIND(1, 32, pp_conf, parallel_pulls)},
    {SB_OPT("batch", SB_OPT_INT, "1000", 0, "Most events handed to the core per ledger commit."),
     SB_OPT_RANGE_BIND(1, 100000, pp_conf, batch)},
    {SB_OPT("max_outstanding_messages", SB_OPT_INT, "5000", 0,
            "Most messages pulled and not yet acknowledged; pulling pauses above it (flow control)."),
     SB_OPT_RANGE_BIND(1, 1000000, pp_conf, max_outstanding_messages)},
    {SB_OPT("max_outstanding_bytes", SB_OPT_SIZE, "\"100MB\"", 0,
            "Most message data pulled and not yet acknowledged; pulling pauses above it."),
     SB_OPT_RANGE_BIND(1024, INT64_C(1) << 40, pp_conf, max_outstanding_bytes)},
    {SB_OPT("ack_deadline", SB_OPT_DURATION, "\"60s\"", 0,
            "Lease asked for with modifyAckDeadline, renewed each third of it while a message waits for the ledger."),
     SB_OPT_RANGE_BIND(10000, 600000, pp_conf, ack_deadline_ms)},
    {SB_OPT("pull_timeout", SB_OPT_DURATION, "\"15s\"", 0,
            "Longest one pull request may take (Pub/Sub holds an empty pull open for a while); also bounds a stop."),
     SB_OPT_RANGE_BIND(1000, 600000, pp_conf, pull_timeout_ms)},
    {SB_OPT("create_subscription", SB_OPT_BOOL, "false", 0,
            "Create the subscription at start when it is missing (needs topic)."),
     SB_OPT_BIND(pp_conf, create_subscription)},
    {SB_OPT("topic", SB_OPT_STRING, NULL, 0, "create_subscription: the topic, projects/P/topics/T or T with project."),
     SB_OPT_BIND(pp_conf, topic)},
    {SB_OPT("dead_letter_topic", SB_OPT_STRING, NULL, 0,
            "create_subscription: Pub/Sub's own dead-letter topic for messages never acknowledged."),
     SB_OPT_BIND(pp_conf, dead_letter_topic)},
    {SB_OPT("max_delivery_attempts", SB_OPT_INT, "10", 0, "create_subscription: with dead_letter_topic (5 to 100)."),
     SB_OPT_RANGE_BIND(5, 100, pp_conf, max_delivery_attempts)},
    {SB_OPT("min_backoff", SB_OPT_DURATION, "\"10s\"", 0, "create_subscription: the retry policy's minimum backoff."),
     SB_OPT_RANGE_BIND(0, 600000, pp_conf, min_backoff_ms)},
    {SB_OPT("max_backoff", SB_OPT_DURATION, "\"600s\"", 0, "create_subscription: the retry policy's maximum backoff."),
     SB_OPT_RANGE_BIND(0, 600000, pp_conf, max_backoff_ms)},
    SB_GCP_OPTION_DEFS,
    {0}};

/* ---- names and config ---------------------------------------------------- */

static int valid_segment(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '"' || c == '\\' || c == ':')
            return 0;
    }
    return 1;
}

/* "projects/P/<kind>/N" from a full name or a short one with project. */
static char *resource(const char *opt, const char *name, const char *project, const char *kind, char *err,
                      size_t errsz)
{
    char *full;
    if (strncmp(name, "projects/", 9) == 0)
        full = sb_asprintf("%s", name);
    else if (!project || !*project) {
        sb_err(err, errsz, "option %s: \"%s\" is a short name, so option project is required (or give "
                           "projects/PROJECT/%s/%s)", opt, name, kind, name);
        return NULL;
    } else
        full = sb_asprintf("projects/%s/%s/%s", project, kind, name);
    const char *p = full + 9, *slash = strchr(p, '/');
    size_t kl = strlen(kind);
    if (!slash || !valid_segment(p, (size_t)(slash - p)) || strncmp(slash + 1, kind, kl) != 0 ||
        slash[1 + kl] != '/' || !valid_segment(slash + 2 + kl, strlen(slash + 2 + kl))) {
        sb_err(err, errsz, "option %s: \"%s\" is not projects/PROJECT/%s/NAME", opt, full, kind);
        free(full);
        return NULL;
    }
    return full;
}

static void pp_destroy(void *self)
{
    pp *p = self;
    if (!p)
        return;
    sb_gcp_client_destroy(p->gc);
    free(p->sub);
    free(p->topic);
    free(p->dl_topic);
    free(p->url_pull);
    free(p->url_ack);
    free(p->url_modack);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static int pp_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    pp *p = calloc(1, sizeof *p);
    if (!p)
        return sb_err(errstr, errstr_size, "out of memory");
    p->ins = ins;
    p->c = sb_instance_config(ins);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    const pp_conf *c = p->c;
    if (!(p->sub = resource("subscription", c->subscription, c->project, "subscriptions", errstr, errstr_size)))
        goto fail;
    if (c->create_subscription) {
        if (!c->topic) {
            sb_err(errstr, errstr_size, "option topic: required with create_subscription");
            goto fail;
        }
        if (!(p->topic = resource("topic", c->topic, c->project, "topics", errstr, errstr_size)))
            goto fail;
        if (c->dead_letter_topic &&
            !(p->dl_topic = resource("dead_letter_topic", c->dead_letter_topic, c->project, "topics", errstr,
                                     errstr_size)))
            goto fail;
        if (c->min_backoff_ms > c->max_backoff_ms) {
            sb_err(errstr, errstr_size, "option min_backoff: larger than max_backoff");
            goto fail;
        }
    } else if (c->topic || c->dead_letter_topic) {
        sb_err(errstr, errstr_size, "options topic, dead_letter_topic: only used with create_subscription");
        goto fail;
    }
    if (c->max_messages > c->max_outstanding_messages) {
        sb_err(errstr, errstr_size, "option max_messages (%" PRId64 ") exceeds max_outstanding_messages (%" PRId64 ")",
               c->max_messages, c->max_outstanding_messages);
        goto fail;
    }
    p->url_pull = sb_asprintf("/v1/%s:pull", p->sub);
    p->url_ack = sb_asprintf("/v1/%s:acknowledge", p->sub);
    p->url_modack = sb_asprintf("/v1/%s:modifyAckDeadline", p->sub);
    if (!(p->gc = sb_gcp_client_from_instance(ins, "pubsub", errstr, errstr_size)))
        goto fail;
    *self = p;
    return 0;
fail:
    pp_destroy(p);
    return -1;
}

/* ---- messages ------------------------------------------------------------ */

static void pmsg_free(pmsg *m)
{
    if (!m)
        return;
    free(m->ack_id);
    free(m->message_id);
    free(m->publish_time);
    json_decref(m->attrs);
    free(m->data);
    free(m);
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Base64 (either alphabet, padding optional) to a new buffer; NULL if it is not base64. */
static char *b64decode(const char *s, size_t n, size_t *out_len)
{
    char *out = malloc(n / 4 * 3 + 4);
    if (!out)
        return NULL;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=')
            break;
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static char *dup_str(const json_t *v)
{
    const char *s = json_string_value(v);
    return s ? sb_asprintf("%s", s) : NULL;
}

/* One receivedMessages element to a pmsg; NULL (logged) when it is not one. */
static pmsg *parse_received(pp *p, json_t *rm)
{
    json_t *msg = json_object_get(rm, "message");
    const char *ack = json_string_value(json_object_get(rm, "ackId"));
    const char *mid = json_string_value(json_object_get(msg, "messageId"));
    if (!ack || !mid) {
        sb_log(p->ins, SB_LOG_WARN, "pull answer holds a message without ackId or messageId; ignored");
        return NULL;
    }
    pmsg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->ack_id = dup_str(json_object_get(rm, "ackId"));
    m->message_id = dup_str(json_object_get(msg, "messageId"));
    m->publish_time = dup_str(json_object_get(msg, "publishTime"));
    json_t *a = json_object_get(msg, "attributes");
    if (json_is_object(a) && json_object_size(a))
        m->attrs = json_incref(a);
    m->delivery_attempt = (int)json_integer_value(json_object_get(rm, "deliveryAttempt"));
    const char *d = json_string_value(json_object_get(msg, "data"));
    m->data = d ? b64decode(d, strlen(d), &m->len) : calloc(1, 1);
    if (!m->data) {
        /* the service never sends this: keep the message, it fails decoding with the reason */
        sb_log(p->ins, SB_LOG_WARN, "message %s: data is not base64", mid);
        m->data = calloc(1, 1);
        m->len = 0;
    }
    return m;
}

/* ---- requests on ack ids --------------------------------------------------- */

/* acknowledge (secs < 0) or modifyAckDeadline(secs) for ids[0..n). 0 or -1 (logged). */
static int ack_ids(pp *p, char **ids, size_t n, int secs)
{
    int rc = 0;
    for (size_t start = 0; start < n; start += ACK_CHUNK) {
        size_t end = start + ACK_CHUNK < n ? start + ACK_CHUNK : n;
        sb_strbuf b = {0};
        sb_strbuf_add(&b, "{\"ackIds\":[", 11);
        for (size_t i = start; i < end; i++) {
            if (i > start)
                sb_strbuf_add(&b, ",", 1);
            sb_json_append_string(&b.p, &b.len, &b.cap, ids[i], strlen(ids[i]));
        }
        sb_strbuf_add(&b, "]", 1);
        if (secs >= 0)
            sb_strbuf_printf(&b, ",\"ackDeadlineSeconds\":%d", secs);
        sb_strbuf_add(&b, "}", 1);
        static const char *const headers[] = {"Content-Type: application/json", NULL};
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = secs < 0 ? p->url_ack : p->url_modack, .headers = headers,
                              .body = b.p, .body_len = b.len, .idempotent = 1};
        sb_gcp_response resp;
        char err[1024] = "";
        sb_gcp_result r = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        if (r != SB_GCP_OK) {
            sb_log(p->ins, SB_LOG_WARN, "%s of %zu messages on %s failed (%s); %s",
                   secs < 0 ? "acknowledge" : secs == 0 ? "release" : "lease extension", end - start, p->sub,
                   resp.error_line ? resp.error_line : err,
                   secs < 0 ? "they will be redelivered and recognised as duplicates" : "Pub/Sub may redeliver them");
            rc = -1;
        }
        sb_gcp_response_clear(&resp);
        free(b.p);
    }
    return rc;
}

/* Take messages out of the outstanding set (lock held). */
static void unhold_locked(pp *p, pmsg *m)
{
    if (m->hprev)
        m->hprev->hnext = m->hnext;
    else
        p->held = m->hnext;
    if (m->hnext)
        m->hnext->hprev = m->hprev;
    m->hprev = m->hnext = NULL;
    p->out_n--;
    p->out_b -= (int64_t)m->len;
}

/* Acknowledge (secs < 0) or release (secs == 0) messages, then forget them. */
static void finish_msgs(pp *p, pmsg **ms, size_t n, int secs)
{
    if (!n)
        return;
    char **ids = calloc(n, sizeof *ids);
    if (ids) {
        for (size_t i = 0; i < n; i++)
            ids[i] = ms[i]->ack_id;
        if (ack_ids(p, ids, n, secs) == 0 && secs < 0)
            p->n_acked += n;
        free(ids);
    }
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        unhold_locked(p, ms[i]);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        pmsg_free(ms[i]);
}

/* ---- threads --------------------------------------------------------------- */

static int halted(pp *p)
{
    return atomic_load(&p->halt) || atomic_load(&p->stop);
}

static void timed_wait_locked(pp *p, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

static void *puller(void *arg)
{
    pp *p = arg;
    const pp_conf *c = p->c;
    int64_t backoff = 0;
    pthread_mutex_lock(&p->mu);
    while (!halted(p)) {
        if (backoff) {
            timed_wait_locked(p, backoff);
            if (halted(p))
                break;
        }
        /* flow control: pull only what fits under the bounds */
        if (p->out_n >= c->max_outstanding_messages || p->out_b >= c->max_outstanding_bytes) {
            timed_wait_locked(p, 1000);
            continue;
        }
        int64_t want = c->max_outstanding_messages - p->out_n;
        if (want > c->max_messages)
            want = c->max_messages;
        p->out_n += want; /* reserved while the pull is in flight */
        pthread_mutex_unlock(&p->mu);

        char body[64];
        int bl = snprintf(body, sizeof body, "{\"maxMessages\":%" PRId64 "}", want);
        static const char *const headers[] = {"Content-Type: application/json", NULL};
        /* A pull is not idempotent (it leases messages), and a retry inside
         * the layer would hold this thread past a stop: the loop retries. */
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = p->url_pull, .headers = headers, .body = body,
                              .body_len = (size_t)bl, .idempotent = 0, .max_attempts = 1,
                              .deadline_ms = c->pull_timeout_ms};
        sb_gcp_response resp;
        char err[1024] = "";
        sb_gcp_result r = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        pmsg *head = NULL, *tail = NULL;
        size_t got = 0;
        int64_t bytes = 0;
        if (r == SB_GCP_OK) {
            backoff = 0;
            json_t *root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
            json_t *rms = json_object_get(root, "receivedMessages");
            size_t i;
            json_t *rm;
            json_array_foreach(rms, i, rm)
            {
                pmsg *m = parse_received(p, rm);
                if (!m)
                    continue;
                if (tail)
                    tail->qnext = m;
                else
                    head = m;
                tail = m;
                got++;
                bytes += (int64_t)m->len;
            }
            json_decref(root);
        } else {
            sb_gcp_outcome o = sb_gcp_classify(r, &resp, err, 0);
            backoff = backoff ? backoff * 2 : 200;
            if (backoff > 10000)
                backoff = 10000;
            if (o.cause == SB_GCP_CAUSE_NOT_FOUND)
                sb_log(p->ins, SB_LOG_ERROR, "subscription %s not found (%s); retrying%s", p->sub, o.reason,
                       c->create_subscription ? "" : " (create it, or set create_subscription)");
            else if (o.cause == SB_GCP_CAUSE_AUTH)
                sb_log(p->ins, SB_LOG_ERROR, "pull from %s not authorised (%s); retrying: check the credentials and "
                       "roles/pubsub.subscriber on the subscription", p->sub, o.reason);
            else if (!halted(p))
                sb_log(p->ins, SB_LOG_WARN, "pull from %s failed (%s); retrying", p->sub, o.reason);
        }
        sb_gcp_response_clear(&resp);
        pthread_mutex_lock(&p->mu);
        p->out_n -= want - (int64_t)got;
        p->out_b += bytes;
        for (pmsg *m = head; m; m = m->qnext) {
            m->hnext = p->held;
            if (p->held)
                p->held->hprev = m;
            p->held = m;
        }
        if (head) {
            if (p->qtail)
                p->qtail->qnext = head;
            else
                p->qhead = head;
            p->qtail = tail;
            p->qlen += got;
            pthread_cond_broadcast(&p->cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every third of the ack deadline, extend the lease of every outstanding
 * message: those queued here, waiting in a blocked emit, or waiting for
 * their ledger commit. The condition variable is also broadcast on every
 * pull and acknowledge, so the keeper waits for its due time, not for the
 * first wake-up (else each pull sent a modifyAckDeadline of everything). */
static void *lease_keeper(void *arg)
{
    pp *p = arg;
    int secs = (int)(p->c->ack_deadline_ms / 1000);
    pthread_mutex_lock(&p->mu);
    while (!halted(p)) {
        int64_t due = mono_ms() + p->c->ack_deadline_ms / 3, left;
        while (!halted(p) && (left = due - mono_ms()) > 0)
            timed_wait_locked(p, left);
        if (halted(p))
            break;
        size_t n = 0;
        for (pmsg *m = p->held; m; m = m->hnext)
            n++;
        if (!n)
            continue;
        char **ids = calloc(n, sizeof *ids);
        size_t k = 0;
        for (pmsg *m = p->held; ids && m; m = m->hnext)
            ids[k++] = sb_asprintf("%s", m->ack_id);
        pthread_mutex_unlock(&p->mu);
        if (ids) {
            if (ack_ids(p, ids, k, secs) == 0)
                sb_log(p->ins, SB_LOG_DEBUG, "extended the lease of %zu outstanding messages by %d s", k, secs);
            for (size_t i = 0; i < k; i++)
                free(ids[i]);
            free(ids);
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- events ---------------------------------------------------------------- */

static const char *attr(const pmsg *m, const char *key)
{
    return key ? json_string_value(json_object_get(m->attrs, key)) : NULL;
}

static char *event_id_of(pp *p, const pmsg *m)
{
    const char *a = attr(m, "event_id");
    if (!a || !*a)
        a = attr(m, p->c->id_attribute);
    return a && *a ? sb_asprintf("%s", a) : sb_asprintf("pubsub:%s", m->message_id);
}

/* The message's attributes and publishTime as fields. Attributes replace
 * what the body gave (they are what the publisher stated about the run):
 * run_id as an integer when it is one, the others as strings. */
static int add_message_fields(sb_event *ev, const pmsg *m)
{
    const char *k;
    json_t *v;
    json_object_foreach(m->attrs, k, v)
    {
        const char *s = json_string_value(v);
        if (!s)
            continue;
        char *end;
        errno = 0;
        long long id = strcmp(k, "run_id") == 0 ? strtoll(s, &end, 10) : 0;
        if (strcmp(k, "run_id") == 0 && *s && !*end && errno == 0) {
            if (sb_event_set_int(ev, k, id) != 0)
                return -1;
        } else if (sb_event_set_string(ev, k, s) != 0) {
            return -1;
        }
    }
    if (sb_event_set_string(ev, "pubsub_message_id", m->message_id) != 0)
        return -1;
    if (m->publish_time) {
        if (sb_event_set_string(ev, "publish_time", m->publish_time) != 0)
            return -1;
        /* the on-prem finish time, when the publisher did not state it */
        if (!sb_event_get_string(ev, "finished_at") && sb_event_set_string(ev, "finished_at", m->publish_time) != 0)
            return -1;
    }
    if (m->delivery_attempt > 0 && sb_event_set_int(ev, "delivery_attempt", m->delivery_attempt) != 0)
        return -1;
    return 0;
}

/* A message that will never decode, as a dead letter: what it was, and its
 * data as base64 so nothing of it is lost. */
static int dead_letter(pp *p, const pmsg *m, const char *id, const char *reason)
{
    sb_event *ev = sb_event_new(id);
    char *b64 = sb_gcp_base64(m->data, m->len, 0);
    int rc = -1;
    if (ev && b64 && sb_event_set_string(ev, "body_base64", b64) == 0 &&
        sb_event_set_string(ev, "decode_error", reason) == 0 && add_message_fields(ev, m) == 0) {
        char *why = sb_asprintf("message %s of %s cannot be decoded: %s", m->message_id, p->sub, reason);
        rc = sb_source_dead_letter(p->ctx, ev, why);
        free(why);
        ev = NULL;
    }
    sb_event_free(ev);
    free(b64);
    if (rc == 0)
        p->n_dead++;
    return rc;
}

/* ---- run ------------------------------------------------------------------- */

static int settle_inflight(pp *p, size_t keep)
{
    if (p->ninflight <= keep)
        return 0;
    int rc = sb_source_await(p->ctx, keep);
    if (rc != 0)
        keep = 0;
    while (p->ninflight > keep) {
        mbatch *b = &p->inflight[p->first];
        /* refused: handed back, so Pub/Sub redelivers them soon */
        finish_msgs(p, b->m, b->n, rc == 0 ? -1 : 0);
        b->n = 0;
        p->first = (p->first + 1) % MAX_INFLIGHT;
        p->ninflight--;
    }
    return rc;
}

/* Take up to `batch` queued messages, waiting up to 200 ms for the first. */
static size_t take(pp *p, pmsg **out)
{
    pthread_mutex_lock(&p->mu);
    if (!p->qhead && !halted(p))
        timed_wait_locked(p, 200);
    size_t n = 0;
    while (p->qhead && n < (size_t)p->c->batch) {
        pmsg *m = p->qhead;
        p->qhead = m->qnext;
        m->qnext = NULL;
        out[n++] = m;
    }
    if (!p->qhead)
        p->qtail = NULL;
    p->qlen -= n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* Decode and emit one batch; it joins the batches in flight. -1 if the core
 * refused it (its messages are then handed back). */
static int emit_batch(pp *p, pmsg **ms, size_t n)
{
    sb_event **evs = calloc(n, sizeof *evs);
    if (!evs) {
        finish_msgs(p, ms, n, 0);
        return -1;
    }
    size_t ne = 0;
    sb_decode_opts o = {.size = sizeof o, .format = (sb_decode_format)p->c->format, .script_name = p->c->script};
    for (size_t i = 0; i < n; i++) {
        pmsg *m = ms[i];
        char *id = event_id_of(p, m);
        char err[512];
        sb_event *ev = NULL;
        o.identity_extra = id; /* the on-prem event: run_id as its publisher computed it */
        int rc = sb_decode_body(&o, id, m->data, m->len, &ev, err, sizeof err);
        if (rc == 0 && add_message_fields(ev, m) != 0)
            rc = SB_DECODE_NOMEM, snprintf(err, sizeof err, "out of memory");
        if (rc == 0) {
            evs[ne++] = ev;
        } else if (rc == SB_DECODE_INVALID) {
            /* emitted batches first, so the dead letter keeps their order */
            if (dead_letter(p, m, id, err) != 0) {
                free(id);
                goto refuse;
            }
        } else {
            sb_event_free(ev);
            sb_log(p->ins, SB_LOG_ERROR, "message %s: %s; its batch is handed back", m->message_id, err);
            free(id);
            goto refuse;
        }
        free(id);
    }
    if (settle_inflight(p, MAX_INFLIGHT - 1) != 0)
        goto refuse;
    if (sb_source_emit_async(p->ctx, evs, ne, NULL) != 0) {
        ne = 0;
        free(evs);
        finish_msgs(p, ms, n, 0);
        return -1;
    }
    free(evs);
    p->n_events += ne;
    mbatch *b = &p->inflight[(p->first + p->ninflight) % MAX_INFLIGHT];
    memcpy(b->m, ms, n * sizeof *ms);
    b->n = n;
    p->ninflight++;
    return 0;
refuse:
    for (size_t i = 0; i < ne; i++)
        sb_event_free(evs[i]);
    free(evs);
    finish_msgs(p, ms, n, 0);
    return -1;
}

/* create_subscription: make it unless it exists. 0, or -1 (logged). */
static int ensure_subscription(pp *p)
{
    char *url = sb_asprintf("/v1/%s", p->sub);
    sb_gcp_request get = {.size = sizeof(sb_gcp_request), .method = "GET", .url = url, .idempotent = 1};
    sb_gcp_response resp;
    char err[1024] = "";
    sb_gcp_result r = sb_gcp_request_send(p->gc, &get, &resp, err, sizeof err);
    int rc = 0;
    if (r == SB_GCP_HTTP_ERROR && resp.status == 404) {
        sb_gcp_response_clear(&resp);
        json_t *b = json_pack("{s:s, s:I}", "topic", p->topic, "ackDeadlineSeconds",
                              (json_int_t)(p->c->ack_deadline_ms / 1000));
        char mn[32], mx[32];
        snprintf(mn, sizeof mn, "%" PRId64 "s", p->c->min_backoff_ms / 1000);
        snprintf(mx, sizeof mx, "%" PRId64 "s", p->c->max_backoff_ms / 1000);
        json_object_set_new(b, "retryPolicy", json_pack("{s:s, s:s}", "minimumBackoff", mn, "maximumBackoff", mx));
        if (p->dl_topic)
            json_object_set_new(b, "deadLetterPolicy", json_pack("{s:s, s:I}", "deadLetterTopic", p->dl_topic,
                                                                 "maxDeliveryAttempts",
                                                                 (json_int_t)p->c->max_delivery_attempts));
        char *body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        static const char *const headers[] = {"Content-Type: application/json", NULL};
        sb_gcp_request put = {.size = sizeof(sb_gcp_request), .method = "PUT", .url = url, .headers = headers, .body = body,
                              .body_len = body ? strlen(body) : 0, .idempotent = 1};
        r = sb_gcp_request_send(p->gc, &put, &resp, err, sizeof err);
        free(body);
        if (r == SB_GCP_OK)
            sb_log(p->ins, SB_LOG_INFO, "created subscription %s on %s", p->sub, p->topic);
        else if (!(r == SB_GCP_HTTP_ERROR && resp.status == 409)) {
            sb_log(p->ins, SB_LOG_ERROR, "cannot create subscription %s on %s: %s", p->sub, p->topic,
                   resp.error_line ? resp.error_line : err);
            rc = -1;
        }
    } else if (r != SB_GCP_OK) {
        sb_log(p->ins, SB_LOG_ERROR, "cannot read subscription %s: %s", p->sub, resp.error_line ? resp.error_line : err);
        rc = -1;
    }
    sb_gcp_response_clear(&resp);
    free(url);
    return rc;
}

static void stop_threads(pp *p)
{
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->halt, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->npullers; i++)
        pthread_join(p->pullers[i], NULL);
    if (p->leaser_up)
        pthread_join(p->leaser, NULL);
    free(p->pullers);
    p->pullers = NULL;
    p->npullers = 0;
    p->leaser_up = 0;
}

static int pp_run(void *self, sb_source_ctx *ctx)
{
    pp *p = self;
    const pp_conf *c = p->c;
    p->ctx = ctx;
    atomic_store(&p->halt, 0);
    if (c->create_subscription && ensure_subscription(p) != 0) {
        p->ctx = NULL;
        return -1;
    }
    pmsg **buf = calloc((size_t)c->batch, sizeof *buf);
    int ok = buf != NULL;
    for (size_t i = 0; i < MAX_INFLIGHT; i++)
        ok &= (p->inflight[i].m = calloc((size_t)c->batch, sizeof(pmsg *))) != NULL;
    p->pullers = calloc((size_t)c->parallel_pulls, sizeof *p->pullers);
    int rc = 0;
    if (!ok || !p->pullers) {
        rc = -1;
        goto out;
    }
    for (; p->npullers < (size_t)c->parallel_pulls; p->npullers++)
        if (pthread_create(&p->pullers[p->npullers], NULL, puller, p) != 0) {
            rc = -1;
            goto out;
        }
    if (pthread_create(&p->leaser, NULL, lease_keeper, p) != 0) {
        rc = -1;
        goto out;
    }
    p->leaser_up = 1;
    sb_log(p->ins, SB_LOG_INFO, "pulling from %s (%" PRId64 " pulls of up to %" PRId64 " messages)", p->sub,
           c->parallel_pulls, c->max_messages);
    while (!atomic_load(&p->stop) && !sb_source_stopping(ctx)) {
        size_t n = take(p, buf);
        if (n == 0) {
            settle_inflight(p, 0); /* idle: acknowledge what is committed */
            continue;
        }
        if (emit_batch(p, buf, n) != 0) {
            rc = sb_source_stopping(ctx) || atomic_load(&p->stop) ? 0 : -1;
            break;
        }
    }
out:
    settle_inflight(p, 0);
    stop_threads(p);
    /* what was pulled and not emitted goes back at once */
    size_t n;
    while ((n = take(p, buf)) > 0)
        finish_msgs(p, buf, n, 0);
    for (size_t i = 0; i < MAX_INFLIGHT; i++) {
        free(p->inflight[i].m);
        p->inflight[i].m = NULL;
    }
    p->first = p->ninflight = 0;
    free(buf);
    p->ctx = NULL;
    sb_log(p->ins, SB_LOG_INFO, "stopped pulling %s: %" PRIu64 " events, %" PRIu64 " dead-lettered, %" PRIu64
           " messages acknowledged", p->sub, p->n_events, p->n_dead, p->n_acked);
    return rc;
}

static int pp_start(void *self, char *errstr, size_t errstr_size)
{
    pp *p = self;
    (void)errstr;
    (void)errstr_size;
    atomic_store(&p->stop, 0);
    return 0;
}

static void pp_stop(void *self)
{
    pp *p = self;
    atomic_store(&p->stop, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Read-only: the token, then the subscription and the right to consume it;
 * with create_subscription (the subscription may not exist yet, and the
 * daemon makes it at start) the topic and the right to attach to it. */
static void pp_preflight(void *self, sb_preflight *pf)
{
    pp *p = self;
    if (sb_gcp_preflight_token(p->gc, pf) != 0)
        return;
    if (p->c->create_subscription && p->topic) {
        char *url = sb_asprintf("/v1/%s", p->topic), *what = sb_asprintf("topic %s exists", p->topic);
        char *fix = sb_asprintf("create it (gcloud pubsub topics create %s), or fix the topic option", p->topic);
        char *may = sb_asprintf("may attach subscription %s to topic %s (testIamPermissions; created at start when "
                                "missing)",
                                p->sub, p->topic);
        static const char *const tperms[] = {"pubsub.topics.attachSubscription", NULL};
        sb_gcp_preflight_resource(p->gc, pf, url, what, fix, "roles/pubsub.viewer", tperms, may,
                                  "roles/pubsub.editor on the topic");
        free(url);
        free(what);
        free(fix);
        free(may);
        return;
    }
    char *url = sb_asprintf("/v1/%s", p->sub), *what = sb_asprintf("subscription %s exists", p->sub);
    char *fix = sb_asprintf("create it (gcloud pubsub subscriptions create %s --topic TOPIC), or set "
                            "create_subscription with topic",
                            p->sub);
    char *may = sb_asprintf("may consume %s (testIamPermissions)", p->sub);
    static const char *const perms[] = {"pubsub.subscriptions.consume", NULL};
    sb_gcp_preflight_resource(p->gc, pf, url, what, fix, "roles/pubsub.viewer", perms, may,
                              "roles/pubsub.subscriber on the subscription");
    free(url);
    free(what);
    free(fix);
    free(may);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "pubsub_pull",
    .kind = SB_KIND_SOURCE,
    .version = "1.0",
    .description = "Pull a Google Cloud Pub/Sub subscription (REST); acknowledge after the ledger commit",
    .options = options,
    .config_size = sizeof(pp_conf),
    .create = pp_create,
    .start = pp_start,
    .run = pp_run,
    .stop = pp_stop,
    .destroy = pp_destroy,
    .preflight = pp_preflight,
};
