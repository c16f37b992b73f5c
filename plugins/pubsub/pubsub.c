/*
 * pubsub - sink: publish each event as a Pub/Sub message over REST
 * (POST v1/{+topic}:publish, as tests/fake/contracts/gcp/pubsub-v1.discovery.json
 * describes it).
 *
 * Batching. The core hands process() up to batch_max events: whatever
 * queued up while the previous call was publishing. So under load a batch
 * fills by itself, and an idle sink publishes at once; there is no linger
 * here because waiting inside process() would only hold a worker thread
 * while the queue behind it fills anyway. The batch is split into publish
 * requests within Pub/Sub's limits: at most max_messages messages, at most
 * max_bytes of request body, and one ordering key per request.
 *
 * Requests in flight. When a batch makes several requests (one per
 * ordering key, or split by the limits), up to max_inflight of them go at
 * once through the Google layer's curl multi, each with its own body
 * buffer; a key's requests are chained, so each goes only after the one
 * before it was published. A batch of one request is sent directly on the
 * calling thread (sb_gcp_request_send), as before.
 *
 * Messages. data is the event's `command` (default: the command line
 * that ran, which is what Run Replicator's own consumers read), the event
 * fields as JSON, or a template. Attributes:
 * event_id always, run_id/schema/table/host when present, then the
 * `attributes` templates. An event whose message cannot be published
 * (data over 10 MB, too many or too large attributes, a missing field) is
 * FAILed on its own with the reason; its neighbours are published.
 *
 * Results: as every Google plugin sets them (sb_gcp_settle(), the table in
 * syncbridge/gcp.h), with a 404 retried since the topic may be created
 * later; 2xx adds the messageId as pubsub_message_id. A 400 for a request of
 * several messages first re-sends them message by message (a 400 publishes
 * nothing), so only the offending event fails.
 *
 * Publish is not idempotent: requests are sent with idempotent = 0, so the
 * access layer only re-sends when the request surely never left. When a
 * response is lost after the server took the request, the core's RETRY
 * publishes again: at-least-once, consumers de-duplicate on the event_id
 * attribute.
 *
 * Retries never sleep in process(): requests are sent with no_wait, so a
 * 503, a 429 or a connect failure comes back at once as RETRY with its
 * Retry-After and the core's scheduler does the waiting. The only retry
 * made here is the free one: a fresh token after a 401. A token endpoint
 * that refuses is backed off in the access layer, shared by all workers.
 *
 * Stopping: publish requests are not cancelled (no cancel(), no
 * sb_batch_stopping() watch). They are short and not idempotent: cut in
 * the middle, one that had reached Pub/Sub would be published again after
 * the restart. The core's drain lets them finish, each bounded by the
 * `timeout` option, and nothing waits between retries any more.
 *
 * Ordering: messages sharing an ordering key go out in event order within
 * a batch, and once a request for a key fails, the key's later messages in
 * the batch are held back (RETRY) rather than overtaking it. Across
 * batches the core does not order events (a batch's retries come back
 * together, but new batches go on meanwhile, and another batch's retries
 * have their own time), so the key's lane (lanes.h) holds its later
 * messages back (WAIT) until the retried ones are published, failed for
 * good or given up on (abandon()). With workers > 1 two batches of one
 * key can be in flight at once, so routes that need strict per-key order
 * keep workers at 1.
 *
 * Threading: the state is read-only after create() but for the spare
 * buffers (a list under a mutex, taken and given back once per call, each
 * set with its own multi, so a multi is used by one call at a time), and
 * the gcp client is thread-safe, so process() may run concurrently
 * (SB_PLUGIN_CONCURRENT).
 *
 * Cost (issue 19): a message is written as text straight into one buffer
 * per batch, the event's JSON (body "json") copied from the source's text
 * rather than built and dumped, base64 and the attributes included, and
 * the answer's message ids read in place; the buffers are kept from call
 * to call. docs/benchmarks.md has the before and after.
 */
#include <syncbridge/syncbridge.h>
#include <syncbridge/gcp.h>

#include "lanes.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PS_MAX_DATA 10000000          /* message data, decoded */
#define PS_MAX_REQUEST 10000000       /* max_bytes ceiling */
#define PS_MAX_MESSAGES 1000
#define PS_MAX_ATTRS 100
#define PS_MAX_ATTR_KEY 256
#define PS_MAX_ATTR_VALUE 1024
#define PS_MAX_ORDERING_KEY 1024
#define PS_MAX_INFLIGHT 32

static const char BODY_HEAD[] = "{\"messages\":[";
static const char BODY_TAIL[] = "]}";
#define BODY_OVERHEAD (sizeof BODY_HEAD - 1 + sizeof BODY_TAIL - 1)

typedef enum { BODY_COMMAND, BODY_JSON, BODY_TEMPLATE } body_mode;

typedef struct pubsub {
    sb_instance *ins;
    sb_gcp_client *gc;
    char *topic;    /* projects/P/topics/T */
    char *url;      /* /v1/projects/P/topics/T:publish */
    body_mode body;
    const sb_template *tpl;
    const sb_template *okey;
    size_t max_messages;
    size_t max_bytes;
    size_t max_inflight;
    unsigned std_replaced; /* bit i: the attributes option replaces standard_attrs[i] */
    int eid_replaced;      /* ... and event_id */
    size_t nattr_tpl;      /* templates in the attributes option */
    pthread_mutex_t lock;  /* guards spare */
    struct bufs *spare;    /* buffers of finished process() calls, for the next ones */
    ps_lanes *lanes;       /* with ordering_key: each key's order across batches (lanes.h) */
} pubsub;

/* One event's prepared message: its JSON object lies in the call's arena
 * (one buffer for the whole batch, no allocation per message). */
typedef struct msg {
    size_t off, len; /* the message object, compact, in call.arena */
    char *okey;      /* ordering key; NULL for none */
} msg;

static const char *okey_of(const msg *m)
{
    return m->okey ? m->okey : "";
}

static const char *const standard_attrs[] = {"run_id", "schema", "table", "host"};

/* The options the core validates and fills in (ABI 2 table). */
typedef struct pubsub_conf {
    const char *topic;
    const char *project;
    int body; /* body_mode, index into bodies[] */
    int64_t max_messages;
    int64_t max_bytes;
    int64_t max_inflight;
} pubsub_conf;

static const char *const bodies[] = {[BODY_COMMAND] = "command", [BODY_JSON] = "json", [BODY_TEMPLATE] = "template",
                                     NULL};

static const sb_option_def options[] = {
    {SB_OPT("topic", SB_OPT_STRING, NULL, 1,
            "Topic to publish to: projects/PROJECT/topics/TOPIC, or TOPIC together with project."),
     SB_OPT_BIND(pubsub_conf, topic)},
    {SB_OPT("project", SB_OPT_STRING, NULL, 0, "Project of a topic given by its short name."),
     SB_OPT_BIND(pubsub_conf, project)},
    {SB_OPT("body", SB_OPT_STRING, "\"command\"", 0,
            "Message data: \"command\" (the event's command field as is; events without one fail), \"json\" (the "
            "event fields as a JSON object) or \"template\" (the template option)."),
     SB_OPT_CHOICES(bodies), SB_OPT_BIND(pubsub_conf, body)},
    {SB_OPT("template", SB_OPT_TEMPLATE, NULL, 0, "Message data for body \"template\", e.g. \"${schema}.${table} ${status}\".")},
    {SB_OPT("attributes", SB_OPT_TEMPLATE_MAP, NULL, 0,
     "Extra message attributes, name -> template rendered per event, added to event_id, run_id, schema, table "
     "and host (those present).")},
    {SB_OPT("ordering_key", SB_OPT_TEMPLATE, NULL, 0,
     "Ordering key per event, e.g. \"${schema}.${table}\" (the subscription needs message ordering enabled).")},
    {SB_OPT("max_messages", SB_OPT_INT, "1000", 0, "Messages per publish request (Pub/Sub's limit is 1000)."),
     SB_OPT_RANGE_BIND(1, PS_MAX_MESSAGES, pubsub_conf, max_messages)},
    {SB_OPT("max_bytes", SB_OPT_SIZE, "\"9MB\"", 0,
            "Largest publish request body (messages as base64 JSON; Pub/Sub's limit is 10000000 bytes)."),
     SB_OPT_RANGE_BIND(1024, PS_MAX_REQUEST, pubsub_conf, max_bytes)},
    {SB_OPT("max_inflight", SB_OPT_INT, "4", 0,
            "Publish requests in flight at once from one worker, when a batch makes several (one per ordering "
            "key, or split by max_messages/max_bytes); an ordering key's own requests still go one after another."),
     SB_OPT_RANGE_BIND(1, PS_MAX_INFLIGHT, pubsub_conf, max_inflight)},
    SB_GCP_OPTION_DEFS,
    {0}};

/* A resource id segment: non-empty, no '/', nothing a URL would reinterpret. */
static int valid_segment(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

static int valid_topic_name(const char *t)
{
    if (strncmp(t, "projects/", 9) != 0)
        return 0;
    const char *p = t + 9, *slash = strchr(p, '/');
    if (!slash || !valid_segment(p, (size_t)(slash - p)) || strncmp(slash, "/topics/", 8) != 0)
        return 0;
    const char *id = slash + 8;
    return valid_segment(id, strlen(id));
}

static void spare_free(pubsub *p);

static void ps_destroy(void *self)
{
    pubsub *p = self;
    if (!p)
        return;
    spare_free(p);
    ps_lanes_free(p->lanes);
    pthread_mutex_destroy(&p->lock);
    sb_gcp_client_destroy(p->gc);
    free(p->topic);
    free(p->url);
    free(p);
}

static int configure(pubsub *p, sb_instance *ins, char *errstr, size_t errstr_size)
{
    const pubsub_conf *c = sb_instance_config(ins);
    const char *topic = c->topic;
    const char *project = c->project;
    if (strncmp(topic, "projects/", 9) == 0) {
        if (!valid_topic_name(topic))
            return sb_err(errstr, errstr_size, "option topic: \"%s\" is not projects/PROJECT/topics/TOPIC", topic);
        if (project && *project)
            return sb_err(errstr, errstr_size, "option project: not used when topic is a full name (%s); drop one of them",
                        topic);
        p->topic = sb_asprintf("%s", topic);
    } else {
        if (!project || !*project)
            return sb_err(errstr, errstr_size,
                        "option topic: \"%s\" is a short name, so option project is required (or give "
                        "projects/PROJECT/topics/%s)", topic, topic);
        p->topic = sb_asprintf("projects/%s/topics/%s", project, topic);
        if (p->topic && !valid_topic_name(p->topic))
            return sb_err(errstr, errstr_size, "options topic/project: \"%s\" is not a valid topic name", p->topic);
    }
    p->url = sb_asprintf("/v1/%s:publish", p->topic);

    p->body = (body_mode)c->body;
    p->tpl = sb_opt_template(ins, "template");
    if (p->body == BODY_TEMPLATE && !p->tpl)
        return sb_err(errstr, errstr_size, "option template: required with body \"template\"");
    if (p->body != BODY_TEMPLATE && p->tpl)
        return sb_err(errstr, errstr_size, "option template: only used with body \"template\" (body is \"%s\")",
                    bodies[p->body]);
    p->okey = sb_opt_template(ins, "ordering_key");
    if (p->okey && !(p->lanes = ps_lanes_new()))
        return sb_err(errstr, errstr_size, "out of memory");
    p->max_messages = (size_t)c->max_messages;
    p->max_bytes = (size_t)c->max_bytes;
    p->max_inflight = (size_t)c->max_inflight;

    size_t na = sb_opt_template_map_count(ins, "attributes");
    p->nattr_tpl = na;
    if (na > PS_MAX_ATTRS)
        return sb_err(errstr, errstr_size, "option attributes: %zu attributes, Pub/Sub allows %d per message", na,
                    PS_MAX_ATTRS);
    for (size_t i = 0; i < na; i++) {
        const char *key = NULL;
        sb_opt_template_map_item(ins, "attributes", i, &key);
        if (!*key || strlen(key) > PS_MAX_ATTR_KEY)
            return sb_err(errstr, errstr_size, "option attributes: the name \"%.40s\" must be 1 to %d bytes", key,
                        PS_MAX_ATTR_KEY);
        for (size_t k = 0; k < sizeof standard_attrs / sizeof *standard_attrs; k++)
            if (strcmp(key, standard_attrs[k]) == 0)
                p->std_replaced |= 1u << k;
        if (strcmp(key, "event_id") == 0)
            p->eid_replaced = 1;
    }

    p->gc = sb_gcp_client_from_instance(ins, "pubsub", errstr, errstr_size);
    return p->gc ? 0 : -1;
}

/* The core calls destroy() only for a created instance, so a failed
 * create() frees what it built itself. */
static int ps_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    pubsub *p = calloc(1, sizeof *p);
    if (!p)
        return sb_err(errstr, errstr_size, "out of memory");
    p->ins = ins;
    pthread_mutex_init(&p->lock, NULL);
    if (configure(p, ins, errstr, errstr_size) != 0) {
        ps_destroy(p);
        return -1;
    }
    *self = p;
    return 0;
}

/* "12.6 MB" (decimal, as Pub/Sub states its limits). */
static const char *human(size_t bytes, char *buf, size_t size)
{
    if (bytes >= 1000000)
        snprintf(buf, size, "%.1f MB", (double)bytes / 1e6);
    else if (bytes >= 1000)
        snprintf(buf, size, "%.1f kB", (double)bytes / 1e3);
    else
        snprintf(buf, size, "%zu bytes", bytes);
    return buf;
}

/* A field as attribute text: strings as is (the event's), integers in
 * decimal (written to num). NULL if absent or of another type. */
static const char *field_text(const sb_event *ev, const char *key, char num[24])
{
    const char *s = sb_event_get_string(ev, key);
    if (s)
        return s;
    const int64_t none = INT64_MIN;
    int64_t v = sb_event_get_int(ev, key, none);
    if (v == none)
        return NULL;
    snprintf(num, 24, "%lld", (long long)v);
    return num;
}

/* The message being written: {"data":...,"attributes":{...},...}. */
typedef struct text {
    char *p;
    size_t len, cap, nattrs;
} text;

/* A process() call's buffers, kept for the next call (one set per worker
 * in use): a batch's messages and request then cost no allocation once
 * the buffers have grown to size. */
typedef struct bufs {
    text arena, scratch, body;
    /* per event of the batch: the call's msgs, its slots and order, a
     * publish answer's ids (cap_n entries each), and the requests with
     * their queue (2 * cap_n: at most one per event, and one per event
     * again when a refused request is re-sent message by message) */
    msg *msgs;
    struct slot *slots;
    size_t *order;
    const char **eids;    /* the events' ids, for the lanes */
    int64_t *hold_ms;     /* > 0: held back by its key's lane, to look again after this long */
    unsigned char *owed;  /* 1: the event is to be retried (RETRY or WAIT), for the lanes */
    const char **ids;
    size_t *lens;
    struct chunk *chunks;
    size_t *queue;
    size_t cap_n;
    /* requests in flight together: one multi and a body per flight,
     * made by the first batch that needs them */
    sb_gcp_multi *multi;
    text *bodies;
    struct bufs *next;
} bufs;

/* ptr grown to n elements of `size` bytes: 0, or -1 if memory ran out
 * (ptr kept). Uses a local `void *grown`. */
#define GROW(ptr, n, size) ((grown = realloc((ptr), (n) * (size))) != NULL ? ((ptr) = grown, 0) : -1)

/* Make room for a batch of n events; -1 if memory ran out. */
static int bufs_fit(bufs *bf, size_t n, size_t slot_size, size_t chunk_size)
{
    if (n <= bf->cap_n)
        return 0;
    void *grown;
    if (GROW(bf->msgs, n, sizeof *bf->msgs) || GROW(bf->slots, n, slot_size) ||
        GROW(bf->order, n, sizeof *bf->order) || GROW(bf->ids, n, sizeof *bf->ids) ||
        GROW(bf->eids, n, sizeof *bf->eids) || GROW(bf->owed, n, sizeof *bf->owed) ||
        GROW(bf->hold_ms, n, sizeof *bf->hold_ms) ||
        GROW(bf->lens, n, sizeof *bf->lens) || GROW(bf->chunks, 2 * n, chunk_size) ||
        GROW(bf->queue, 2 * n, sizeof *bf->queue))
        return -1;
    bf->cap_n = n;
    return 0;
}

#define SPARE_KEEP_MAX (4u << 20) /* a buffer grown larger than this (a rare big batch) is not kept */

static bufs *spare_take(pubsub *p)
{
    pthread_mutex_lock(&p->lock);
    bufs *bf = p->spare;
    if (bf)
        p->spare = bf->next;
    pthread_mutex_unlock(&p->lock);
    if (!bf && !(bf = calloc(1, sizeof *bf)))
        abort(); /* as the core does when memory runs out */
    return bf;
}

static void spare_trim(text *t)
{
    if (t->cap > SPARE_KEEP_MAX) {
        free(t->p);
        *t = (text){0};
    }
    t->len = 0;
}

static void spare_give(pubsub *p, bufs *bf)
{
    spare_trim(&bf->arena);
    spare_trim(&bf->scratch);
    spare_trim(&bf->body);
    for (size_t i = 0; bf->bodies && i < p->max_inflight; i++)
        spare_trim(&bf->bodies[i]);
    pthread_mutex_lock(&p->lock);
    bf->next = p->spare;
    p->spare = bf;
    pthread_mutex_unlock(&p->lock);
}

static void spare_free(pubsub *p)
{
    for (bufs *bf = p->spare, *next; bf; bf = next) {
        next = bf->next;
        free(bf->arena.p);
        free(bf->scratch.p);
        free(bf->body.p);
        free(bf->msgs);
        free(bf->slots);
        free(bf->order);
        free(bf->eids);
        free(bf->owed);
        free(bf->hold_ms);
        free(bf->ids);
        free(bf->lens);
        free(bf->chunks);
        free(bf->queue);
        sb_gcp_multi_destroy(bf->multi); /* before the client, which ps_destroy() frees next */
        for (size_t i = 0; bf->bodies && i < p->max_inflight; i++)
            free(bf->bodies[i].p);
        free(bf->bodies);
        free(bf);
    }
    p->spare = NULL;
}

/* Room for n more bytes and the NUL. */
static void reserve(text *t, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        while (t->len + n + 1 > t->cap)
            t->cap = t->cap ? t->cap * 2 : 512;
        char *p = realloc(t->p, t->cap);
        if (!p)
            abort(); /* as the core does when memory runs out */
        t->p = p;
    }
}

static void put(text *t, const char *s, size_t n)
{
    reserve(t, n);
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static const char b64_abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/* Every 12 bits' two base64 characters, so that three bytes take two
 * lookups instead of four: the data's base64 was a tenth of the sink's CPU. */
static char b64_pairs[4096][2];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_pairs_init(void)
{
    for (unsigned v = 0; v < 4096; v++) {
        b64_pairs[v][0] = b64_abc[v >> 6];
        b64_pairs[v][1] = b64_abc[v & 63];
    }
}

/* Append base64 of s[0..n) (standard alphabet, padded, as
 * sb_gcp_base64(s, n, 0)) straight into the message text. */
static void put_base64(text *t, const unsigned char *s, size_t n)
{
    pthread_once(&b64_once, b64_pairs_init);
    size_t out = (n + 2) / 3 * 4;
    reserve(t, out);
    char *o = t->p + t->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3, o += 4) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        memcpy(o, b64_pairs[v >> 12], 2);
        memcpy(o + 2, b64_pairs[v & 4095], 2);
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *o++ = b64_abc[v >> 18];
        *o++ = b64_abc[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64_abc[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    t->len += out;
    t->p[t->len] = '\0';
}

/* s[0..n) as a JSON string. Printable ASCII without quote or backslash
 * (ids, names, numbers: nearly every attribute) is written as is, which is
 * what sb_json_append_string() would write, without its UTF-8 decoding;
 * anything else goes through it. */
static int put_value(text *t, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\')
            return sb_json_append_string(&t->p, &t->len, &t->cap, s, n);
    }
    reserve(t, n + 2);
    t->p[t->len] = '"';
    memcpy(t->p + t->len + 1, s, n);
    t->len += n + 2;
    t->p[t->len - 1] = '"';
    t->p[t->len] = '\0';
    return 0;
}

/* The separator and the quoted name of one of our attributes (ASCII,
 * nothing to escape), without the colon. */
static void put_plain_key(text *t, const char *key)
{
    if (t->nattrs)
        put(t, ",", 1);
    put(t, "\"", 1), put(t, key, strlen(key)), put(t, "\"", 1);
}

/* Write attribute `key` = `value` after checking the limits. plain: the
 * key is one of ours (ASCII, nothing to escape), written as is. */
static int put_attr(text *t, const char *key, int plain, const char *value, const char *eid, char *err, size_t errsz)
{
    size_t vl = strlen(value);
    int rc = 0;
    if (vl > PS_MAX_ATTR_VALUE) {
        rc = sb_err(err, errsz, "attribute \"%s\" of event %s is %zu bytes, over Pub/Sub's %d-byte limit for a value", key,
                  eid, vl, PS_MAX_ATTR_VALUE);
    } else {
        size_t mark = t->len;
        if (plain)
            put_plain_key(t, key);
        else if (t->nattrs)
            put(t, ",", 1);
        if ((!plain && sb_json_append_string(&t->p, &t->len, &t->cap, key, strlen(key)) != 0) ||
            (put(t, ":", 1), put_value(t, value, vl)) != 0) {
            t->len = mark;
            t->p[mark] = '\0';
            rc = sb_err(err, errsz, "attribute \"%s\" of event %s is not valid UTF-8", key, eid);
        } else {
            t->nattrs++;
        }
    }
    return rc;
}

/* An integer as JSON writes it (no sign on zero): its decimal text is the
 * attribute's value as is. */
static int integer_text(const char *s, size_t n)
{
    size_t i = s[0] == '-';
    if (n <= i || n > 20 || (n == 2 && s[0] == '-' && s[1] == '0'))
        return 0;
    if (n == 20 && memcmp(s, "-9223372036854775808", 20) == 0)
        return 0; /* sb_event_get_int()'s "absent": the old path wrote no attribute */
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Standard attribute `key` from the event's field of that name when it is
 * a string or an integer (absent, or another type: no attribute). Where
 * the source's JSON text needs nothing done (a string without escapes
 * within the value limit, an integer) it is copied as is, as
 * sb_event_get_json() gives it; else the value is read and written by
 * put_attr(). */
static int put_field_attr(text *t, const sb_event *ev, const char *key, const char *eid, char *err, size_t errsz)
{
    const char *raw = NULL;
    size_t n = 0;
    int found = sb_event_get_json(ev, key, &raw, &n);
    if (found == 0) /* absent: looking again through the accessors would only cost a second search */
        return 0;
    int str = found == 1 && n >= 2 && raw[0] == '"' && n - 2 <= PS_MAX_ATTR_VALUE && !memchr(raw, '\\', n);
    if (str || (found == 1 && integer_text(raw, n))) {
        put_plain_key(t, key);
        put(t, str ? ":" : ":\"", str ? 1 : 2);
        put(t, raw, n);
        if (!str)
            put(t, "\"", 1);
        t->nattrs++;
        return 0;
    }
    char num[24];
    const char *v = field_text(ev, key, num);
    return v ? put_attr(t, key, 1, v, eid, err, errsz) : 0;
}

/* prepare() could not build a message for lack of memory: the event is
 * retried, not failed. */
#define PREPARE_NO_MEMORY (-2)

static int no_memory(char *err, size_t errsz)
{
    sb_err(err, errsz, "out of memory");
    return PREPARE_NO_MEMORY;
}

/* The message data for an event, length in *len: the event's own string,
 * its fields' JSON text written into `scratch` (reused from event to
 * event), or one made for it and also left in *owned for the caller to
 * free. NULL with the reason; *rc is set to PREPARE_NO_MEMORY when memory
 * ran out (left alone when the event can never be published). */
static const char *make_data(pubsub *p, sb_event *ev, text *scratch, size_t *len, char **owned, int *rc, char *err,
                             size_t errsz)
{
    char *data = NULL;
    *owned = NULL;
    switch (p->body) {
    case BODY_COMMAND: {
        const char *c = sb_event_get_string(ev, "command");
        if (!c) {
            sb_err(err, errsz, "event %s has no string field \"command\" to publish (body \"command\"); set body to "
                             "\"json\" or \"template\" to publish other events", sb_event_id(ev));
            return NULL;
        }
        *len = strlen(c);
        return c;
    }
    case BODY_JSON:
        /* the source's text when the event has one: no tree built, none dumped */
        scratch->len = 0;
        if (sb_event_append_json(ev, &scratch->p, &scratch->len, &scratch->cap) != 0) {
            *rc = no_memory(err, errsz);
            return NULL;
        }
        *len = scratch->len;
        return scratch->p;
    case BODY_TEMPLATE: {
        char terr[256];
        data = sb_template_render(p->tpl, ev, terr, sizeof terr);
        if (!data) {
            sb_err(err, errsz, "message template: %s", terr);
            return NULL;
        }
        break;
    }
    }
    if (!data) {
        *rc = no_memory(err, errsz);
        return NULL;
    }
    *len = strlen(data);
    *owned = data;
    return data;
}

/* Build event i's message at the end of `arena` (m->off, m->len,
 * m->okey), or return -1 with the reason it can never be published
 * (PREPARE_NO_MEMORY: not now), the arena then as it was. Written as text
 * straight into the batch's one buffer, base64 included: jansson values
 * built and dumped, or a buffer allocated, per event cost more than the
 * rest of the sink together. */
static int prepare(pubsub *p, sb_event *ev, msg *m, text *arena, text *scratch, char *err, size_t errsz)
{
    const char *eid = sb_event_id(ev);
    char hb[32], hb2[32], hb3[32];
    size_t dlen = 0;
    char *owned;
    int rc = 0;
    const char *data = make_data(p, ev, scratch, &dlen, &owned, &rc, err, errsz);
    if (!data)
        return rc ? rc : -1;
    if (dlen > PS_MAX_DATA) {
        free(owned);
        return sb_err(err, errsz, "message for event %s is %s, over Pub/Sub's 10 MB limit", eid,
                    human(dlen, hb, sizeof hb));
    }
    text *t = arena;
    size_t mark = t->len;
    t->nattrs = 0;
    put(t, "{", 1);
    if (dlen > 0) {
        put(t, "\"data\":\"", 8);
        put_base64(t, (const unsigned char *)data, dlen); /* base64: nothing to escape */
        put(t, "\",", 2);
    }
    free(owned);
    put(t, "\"attributes\":{", 14);
    if (!p->eid_replaced)
        rc = put_attr(t, "event_id", 1, eid, eid, err, errsz);
    for (size_t i = 0; rc == 0 && i < sizeof standard_attrs / sizeof *standard_attrs; i++)
        if (!(p->std_replaced & (1u << i)))
            rc = put_field_attr(t, ev, standard_attrs[i], eid, err, errsz);
    size_t na = p->nattr_tpl;
    for (size_t i = 0; rc == 0 && i < na; i++) {
        const char *key = NULL;
        const sb_template *tp = sb_opt_template_map_item(p->ins, "attributes", i, &key);
        char terr[256];
        char *v = sb_template_render(tp, ev, terr, sizeof terr);
        rc = v ? put_attr(t, key, 0, v, eid, err, errsz) : sb_err(err, errsz, "attribute \"%s\": %s", key, terr);
        free(v);
    }
    put(t, "}", 1);
    if (rc == 0 && t->nattrs > PS_MAX_ATTRS)
        rc = sb_err(err, errsz, "message for event %s has %zu attributes, over Pub/Sub's limit of %d", eid, t->nattrs,
                  PS_MAX_ATTRS);
    char *okey = NULL;
    if (rc == 0 && p->okey) {
        char terr[256];
        okey = sb_template_render(p->okey, ev, terr, sizeof terr);
        if (!okey)
            rc = sb_err(err, errsz, "ordering_key: %s", terr);
        else if (strlen(okey) > PS_MAX_ORDERING_KEY)
            rc = sb_err(err, errsz, "ordering key of event %s is %zu bytes, over Pub/Sub's %d-byte limit", eid,
                      strlen(okey), PS_MAX_ORDERING_KEY);
        else if (*okey && (put(t, ",\"orderingKey\":", 15),
                           sb_json_append_string(&t->p, &t->len, &t->cap, okey, strlen(okey))) != 0)
            rc = sb_err(err, errsz, "ordering key of event %s is not valid UTF-8", eid);
    }
    put(t, "}", 1);
    if (rc == 0) {
        m->off = mark;
        m->len = t->len - mark;
        if (okey && *okey) /* an empty key is no key */
            m->okey = okey, okey = NULL;
        if (m->len + BODY_OVERHEAD > p->max_bytes)
            rc = sb_err(err, errsz,
                      "message for event %s is %s as base64 JSON (data %s), over the %s request limit (max_bytes; "
                      "Pub/Sub's REST limit is 10 MB)", eid, human(m->len, hb, sizeof hb),
                      human(dlen, hb2, sizeof hb2), human(p->max_bytes, hb3, sizeof hb3));
    }
    if (rc != 0) {
        t->len = mark;
        t->p[mark] = '\0';
    }
    free(okey);
    return rc;
}

typedef struct call {
    pubsub *p;
    sb_batch *b;
    msg *msgs;
    size_t *order;       /* the batch's prepared messages, sorted by ordering key */
    unsigned char *owed; /* per event: 1 once it is to be retried */
    int published;       /* some request of the batch was published */
    struct fleet *fleet; /* the requests in flight, during publish_all() */
    bufs *bf;
    text arena;   /* every prepared message, one after another */
    text scratch; /* one event's data while it is base64'd */
    text body;    /* the request being sent, reused */
} call;

static void settle(call *c, const size_t *idx, size_t n, sb_result r, int64_t after_ms, const char *reason)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = idx[k];
        if (r == SB_RESULT_OK)
            sb_batch_set_result(c->b, i, r, NULL);
        else
            sb_batch_set_result(c->b, i, r, "%s", reason);
        if (r == SB_RESULT_RETRY && after_ms > 0)
            sb_batch_set_retry_after(c->b, i, after_ms);
        c->owed[i] = r == SB_RESULT_RETRY;
    }
}

/* The ids of an answer {"messageIds":["a","b",...]} read in place: ids[k]
 * and lens[k] for k < n. 0 when there are exactly n, all plain strings
 * (no escapes); else -1, and the caller reads the answer with jansson.
 * b is NUL-terminated (sb_gcp_response). */
static int scan_ids(const char *b, size_t len, size_t n, const char **ids, size_t *lens)
{
    static const char key[] = "\"messageIds\"";
    const char *e = b + len, *q = b ? strstr(b, key) : NULL;
    if (!q)
        return -1;
    q += sizeof key - 1;
    while (q < e && strchr(" \t\r\n:", *q))
        q++;
    if (q >= e || *q++ != '[')
        return -1;
    size_t k = 0;
    for (;;) {
        while (q < e && strchr(" \t\r\n", *q))
            q++;
        if (q < e && *q == ']' && k == 0)
            break;
        if (q >= e || *q != '"' || k == n)
            return -1;
        const char *s = ++q;
        while (q < e && *q != '"' && *q != '\\')
            q++;
        if (q >= e || *q != '"')
            return -1;
        ids[k] = s;
        lens[k++] = (size_t)(q - s);
        q++;
        while (q < e && strchr(" \t\r\n", *q))
            q++;
        if (q < e && *q == ',')
            q++;
        else if (q < e && *q == ']')
            break;
        else
            return -1;
    }
    return k == n ? 0 : -1;
}

/* Record the message ids of a 2xx answer and settle the events OK. */
static void published(call *c, const size_t *idx, size_t n, const sb_gcp_response *resp)
{
    const char **ids_in = c->bf->ids; /* n <= the batch's size */
    size_t *lens = c->bf->lens;
    int plain = scan_ids(resp->body, resp->body_len, n, ids_in, lens) == 0;
    for (size_t k = 0; plain && k < n; k++)
        sb_event_add_string(sb_batch_event(c->b, idx[k]), "pubsub_message_id", ids_in[k], lens[k]);
    c->published = 1;
    if (plain) {
        settle(c, idx, n, SB_RESULT_OK, 0, NULL);
        return;
    }
    json_t *root = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    json_t *ids = json_object_get(root, "messageIds");
    if (json_array_size(ids) != n)
        sb_log(c->p->ins, SB_LOG_WARN,
               "publish to %s succeeded but the answer holds %zu message ids for %zu messages; their events are "
               "done without pubsub_message_id", c->p->topic, json_array_size(ids), n);
    for (size_t k = 0; k < n; k++) {
        const char *id = json_array_size(ids) == n ? json_string_value(json_array_get(ids, k)) : NULL;
        if (id)
            sb_event_add(sb_batch_event(c->b, idx[k]), "pubsub_message_id", json_string(id));
    }
    json_decref(root);
    settle(c, idx, n, SB_RESULT_OK, 0, NULL);
}

/* RETRY messages that must not overtake an earlier one of their ordering
 * key that has to be retried. */
static void hold_back(call *c, const size_t *idx, size_t n)
{
    if (!n)
        return;
    char *why = sb_asprintf("held back: an earlier message with ordering key \"%s\" was not published",
                            okey_of(&c->msgs[idx[0]]));
    settle(c, idx, n, SB_RESULT_RETRY, 0, why);
    free(why);
}

/* The request body for the messages idx[0..n) into t: body_len bytes. */
static void build_body(call *c, text *t, const size_t *idx, size_t n, size_t body_len)
{
    t->len = 0;
    reserve(t, body_len);
    put(t, BODY_HEAD, sizeof BODY_HEAD - 1);
    for (size_t k = 0; k < n; k++) {
        if (k)
            put(t, ",", 1);
        put(t, c->arena.p + c->msgs[idx[k]].off, c->msgs[idx[k]].len);
    }
    put(t, BODY_TAIL, sizeof BODY_TAIL - 1);
}

static const char *const publish_headers[] = {"Content-Type: application/json", NULL};

/* The publish request for body t. */
static sb_gcp_request publish_request(const pubsub *p, const text *t)
{
    return (sb_gcp_request){.size = sizeof(sb_gcp_request), .method = "POST", .url = p->url,
                            .headers = publish_headers, .body = t->p, .body_len = t->len, .idempotent = 0,
                            .no_wait = 1};
}

/* answered(): the request was refused whole (400) and is to be re-sent
 * message by message. */
#define PUBLISH_SPLIT 1

/* Settle the events of a publish of idx[0..n) (body_len bytes) from its
 * answer. Returns 0 when they were published or failed for good, -1 when
 * they are to be retried (so the ordering key's later messages are held
 * back), PUBLISH_SPLIT for a 400 to a request of several messages (their
 * events are not settled: the caller re-sends them one by one). */
static int answered(call *c, const size_t *idx, size_t n, size_t body_len, sb_gcp_result rc,
                    const sb_gcp_response *resp, const char *err)
{
    pubsub *p = c->p;
    int ret = 0;
    long st = resp->status;
    const char *line = resp->error_line ? resp->error_line : err;
    if (rc == SB_GCP_OK) {
        sb_log(p->ins, SB_LOG_DEBUG, "published %zu messages (%zu bytes, ordering key \"%s\") to %s", n, body_len,
               okey_of(&c->msgs[idx[0]]), p->topic);
        published(c, idx, n, resp);
    } else if (rc == SB_GCP_HTTP_ERROR && st == 400 && n > 1) {
        /* A publish request is all or nothing, so nothing went out: find
         * the message Pub/Sub refused by sending them one at a time. */
        sb_log(p->ins, SB_LOG_WARN, "publish of %zu messages to %s refused (%s); re-sending them one by one", n,
               p->topic, line);
        return PUBLISH_SPLIT;
    } else {
        /* the events' results, Retry-After included, as every Google plugin sets them */
        sb_gcp_outcome o = sb_gcp_settle(c->b, idx, n, rc, resp, err, SB_GCP_404_RETRY);
        for (size_t k = 0; k < n; k++)
            c->owed[idx[k]] = o.result == SB_RESULT_RETRY;
        if (o.cause == SB_GCP_CAUSE_NOT_FOUND)
            sb_log(p->ins, SB_LOG_ERROR, "topic %s not found (%s); retrying, it may not be created yet", p->topic, line);
        else if (rc == SB_GCP_AUTH_ERROR) /* no token: the access layer logs when that starts and ends */
            sb_log(p->ins, SB_LOG_DEBUG, "publish to %s: no token: %s", p->topic, err);
        else if (o.cause == SB_GCP_CAUSE_AUTH)
            sb_log(p->ins, SB_LOG_ERROR,
                   "publish to %s not authorised (%s); retrying: check the credentials and that the service account "
                   "has roles/pubsub.publisher on the topic", p->topic, line);
        else if (o.result == SB_RESULT_FAIL)
            sb_log(p->ins, SB_LOG_WARN, "publish to %s refused: %s", p->topic, line);
        else
            sb_log(p->ins, SB_LOG_WARN, "publish of %zu messages to %s failed, will retry: %s", n, p->topic, err);
        ret = o.result == SB_RESULT_RETRY ? -1 : 0;
    }
    return ret;
}

/* One publish request of a batch: the messages order[start, start + n),
 * body_len bytes of body, and the next request of its ordering key. */
#define NO_CHUNK ((size_t)-1)
typedef struct chunk {
    size_t start, n, body_len;
    size_t next; /* NO_CHUNK: none, or the messages have no ordering key */
} chunk;

/* Cut one ordering key's messages (in event order) into requests within
 * the count and size limits, appended to c->chunks; a keyed group's are
 * chained, so that they go one after another. */
static void cut_group(call *c, size_t first, size_t n, size_t *n_chunks)
{
    pubsub *p = c->p;
    const size_t *idx = c->order + first;
    chunk *ch = c->bf->chunks;
    int keyed = c->msgs[idx[0]].okey != NULL;
    size_t start = 0;
    while (start < n) {
        size_t len = BODY_OVERHEAD + c->msgs[idx[start]].len, end = start + 1;
        while (end < n && end - start < p->max_messages && len + 1 + c->msgs[idx[end]].len <= p->max_bytes) {
            len += 1 + c->msgs[idx[end]].len;
            end++;
        }
        if (keyed && start > 0)
            ch[*n_chunks - 1].next = *n_chunks;
        ch[(*n_chunks)++] = (chunk){first + start, end - start, len, NO_CHUNK};
        start = end;
    }
}

/* Hold back the requests chained after request k (its key's later ones). */
static void hold_back_after(call *c, size_t k)
{
    const chunk *ch = c->bf->chunks;
    for (size_t h = ch[k].next; h != NO_CHUNK; h = ch[h].next)
        hold_back(c, c->order + ch[h].start, ch[h].n);
}

/* The batch's requests, sent one at a time from this thread or up to
 * max_inflight at once through the multi. The queue holds the requests
 * ready to go: at first every one without a predecessor of its key; a
 * request's successor joins it once the request is published, and a
 * refused request's messages join it one by one (split()). */
typedef struct flight {
    call *c;
    text *body;
    size_t chunk; /* NO_CHUNK: the flight is free */
} flight;

typedef struct fleet {
    call *c;
    flight f[PS_MAX_INFLIGHT];
    size_t head, tail; /* c->bf->queue[head, tail) */
    size_t n_chunks;   /* in c->bf->chunks, which has room for 2 per event */
} fleet;

static void launch(fleet *fl, sb_gcp_multi *m);

/* Request k was refused whole (400): its messages become requests of one,
 * chained in its place for a key (the key's later requests after them), or
 * all queued at once without one. Each message is split at most once, so
 * the chunks stay within 2 per event. */
static void split(fleet *fl, size_t k)
{
    call *c = fl->c;
    chunk *ch = c->bf->chunks, was = ch[k];
    int keyed = c->msgs[c->order[was.start]].okey != NULL;
    for (size_t j = 0; j < was.n; j++) {
        size_t s = fl->n_chunks++;
        ch[s] = (chunk){was.start + j, 1, BODY_OVERHEAD + c->msgs[c->order[was.start + j]].len, NO_CHUNK};
        if (keyed)
            ch[s].next = j + 1 < was.n ? s + 1 : was.next;
        if (!keyed || j == 0)
            c->bf->queue[fl->tail++] = s;
    }
}

/* Request k was answered: settle its events and queue what comes next. */
static void request_done(fleet *fl, size_t k, sb_gcp_result rc, const sb_gcp_response *resp, const char *err)
{
    call *c = fl->c;
    const chunk *ch = &c->bf->chunks[k];
    int r = answered(c, c->order + ch->start, ch->n, ch->body_len, rc, resp, err);
    if (r == PUBLISH_SPLIT)
        split(fl, k);
    else if (r == 0 && ch->next != NO_CHUNK)
        c->bf->queue[fl->tail++] = ch->next;
    else if (r != 0)
        hold_back_after(c, k);
}

/* The queued requests one after another on this thread (a batch of one
 * request, or max_inflight 1). */
static void send_in_turn(fleet *fl)
{
    call *c = fl->c;
    while (fl->head < fl->tail) {
        size_t k = c->bf->queue[fl->head++];
        const chunk *ch = &c->bf->chunks[k];
        build_body(c, &c->body, c->order + ch->start, ch->n, ch->body_len);
        sb_gcp_request req = publish_request(c->p, &c->body);
        sb_gcp_response resp;
        char err[1024] = "";
        sb_gcp_result rc = sb_gcp_request_send(c->p->gc, &req, &resp, err, sizeof err);
        request_done(fl, k, rc, &resp, err);
        sb_gcp_response_clear(&resp);
    }
}

static void landed(sb_gcp_multi *m, void *opaque, sb_gcp_result rc, sb_gcp_response *resp, const char *err)
{
    flight *f = opaque;
    fleet *fl = f->c->fleet;
    request_done(fl, f->chunk, rc, resp, err);
    f->chunk = NO_CHUNK;
    launch(fl, m);
}

/* Start queued requests while flights are free. */
static void launch(fleet *fl, sb_gcp_multi *m)
{
    call *c = fl->c;
    size_t i = 0;
    while (fl->head < fl->tail) {
        while (i < c->p->max_inflight && fl->f[i].chunk != NO_CHUNK)
            i++;
        if (i == c->p->max_inflight)
            return;
        flight *f = &fl->f[i];
        size_t k = c->bf->queue[fl->head++];
        const chunk *ch = &c->bf->chunks[k];
        build_body(c, f->body, c->order + ch->start, ch->n, ch->body_len);
        sb_gcp_request req = publish_request(c->p, f->body);
        char err[256];
        f->chunk = k;
        if (sb_gcp_multi_add(m, &req, landed, f, err, sizeof err) != 0) {
            f->chunk = NO_CHUNK; /* not expected: the request is the one send_in_turn() sends; the flight takes the next */
            settle(c, c->order + ch->start, ch->n, SB_RESULT_RETRY, 0, err);
            hold_back_after(c, k);
        }
    }
}

/* Publish the batch's requests, up to max_inflight at once. */
static void publish_all(call *c, size_t n_chunks)
{
    pubsub *p = c->p;
    bufs *bf = c->bf;
    if (n_chunks > 1 && p->max_inflight > 1 && !bf->multi) {
        char err[256];
        bf->multi = sb_gcp_multi_new(p->gc, (int)p->max_inflight, err, sizeof err);
        bf->bodies = bf->multi ? calloc(p->max_inflight, sizeof *bf->bodies) : NULL;
        if (!bf->bodies) {
            sb_log(p->ins, SB_LOG_WARN, "publish requests go one at a time: %s", bf->multi ? "out of memory" : err);
            sb_gcp_multi_destroy(bf->multi);
            bf->multi = NULL;
        }
    }
    fleet fl = {.c = c, .n_chunks = n_chunks};
    /* ready at first: every request that is not a successor of another */
    for (size_t k = 0; k < n_chunks; k++)
        bf->queue[k] = 0;
    for (size_t k = 0; k < n_chunks; k++)
        if (bf->chunks[k].next != NO_CHUNK)
            bf->queue[bf->chunks[k].next] = 1;
    for (size_t k = 0; k < n_chunks; k++)
        if (!bf->queue[k])
            bf->queue[fl.tail++] = k; /* tail <= k: overwrites only marks already read */
    if (n_chunks == 1 || !bf->multi) {
        send_in_turn(&fl);
        return;
    }
    c->fleet = &fl;
    for (size_t i = 0; i < p->max_inflight; i++)
        fl.f[i] = (flight){c, &bf->bodies[i], NO_CHUNK};
    launch(&fl, bf->multi);
    sb_gcp_multi_run(bf->multi, NULL); /* not cancelled: see "Stopping" above */
    c->fleet = NULL;
}

/* A prepared message's place: sorted by ordering key, then event order. */
typedef struct slot {
    const char *okey;
    size_t i;
} slot;

static int slot_cmp(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    int c = strcmp(x->okey, y->okey);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* The end of the group of messages with the ordering key of slots[first]
 * (without ordering keys, all are one group). */
static size_t group_end(const call *c, const slot *slots, size_t first, size_t ready)
{
    size_t end = c->p->okey ? first + 1 : ready;
    while (end < ready && strcmp(slots[end].okey, slots[first].okey) == 0)
        end++;
    return end;
}

/* Messages held back by their key's lane (lanes.h), once the batch's
 * requests are answered. They WAIT: they are not failing, so the retry
 * budget is not charged, and the step_timeout bounds the wait. But when
 * requests went out and none was published, Pub/Sub is failing: they are
 * answered RETRY like the rest, so that the core sees the whole batch fail
 * and opens the step's circuit instead of polling an outage. */
static void settle_held(call *c, size_t n, size_t n_chunks)
{
    int failing = n_chunks && !c->published;
    for (size_t i = 0; i < n; i++) {
        if (!c->bf->hold_ms[i])
            continue;
        const char *okey = okey_of(&c->msgs[i]);
        if (failing)
            sb_batch_set_result(c->b, i, SB_RESULT_RETRY,
                                "held back: an earlier message with ordering key \"%s\" was not published", okey);
        else
            sb_batch_wait(c->b, i, c->bf->hold_ms[i],
                          "held back: an earlier message with ordering key \"%s\" is to be published first", okey);
        c->owed[i] = 1;
    }
}

/* Event ev leaves its ordering key's lane, if it is in one. */
static void forget(pubsub *p, sb_event *ev)
{
    if (!p->lanes || !ps_lanes_count(p->lanes))
        return;
    char terr[64];
    char *okey = sb_template_render(p->okey, ev, terr, sizeof terr);
    if (okey && *okey)
        ps_lanes_forget(p->lanes, okey, sb_event_id(ev));
    free(okey);
}

/* The core gave up on these events (retry budget, step_timeout, a fan-out
 * sibling's FAIL): they leave their key's lane, so that its later messages
 * go on. */
static void ps_abandon(void *self, sb_batch *b)
{
    for (size_t i = 0; i < sb_batch_count(b); i++)
        forget(self, sb_batch_event(b, i));
}

static void ps_process(void *self, sb_batch *b)
{
    pubsub *p = self;
    size_t n = sb_batch_count(b);
    call c = {.p = p, .b = b, .bf = spare_take(p)};
    if (bufs_fit(c.bf, n ? n : 1, sizeof(slot), sizeof(chunk)) != 0) {
        for (size_t i = 0; i < n; i++)
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "out of memory");
        spare_give(p, c.bf);
        return;
    }
    c.msgs = c.bf->msgs;
    memset(c.msgs, 0, n * sizeof *c.msgs);
    c.owed = c.bf->owed;
    memset(c.owed, 0, n);
    memset(c.bf->hold_ms, 0, n * sizeof *c.bf->hold_ms);
    slot *slots = c.bf->slots;
    size_t *order = c.bf->order;
    c.arena = c.bf->arena;
    c.scratch = c.bf->scratch;
    c.body = c.bf->body;
    /* Prepare every message; the ones that can never be published fail
     * now, on their own. */
    size_t ready = 0;
    for (size_t i = 0; i < n; i++) {
        char err[512];
        int rc = prepare(p, sb_batch_event(b, i), &c.msgs[i], &c.arena, &c.scratch, err, sizeof err);
        if (rc != 0) {
            sb_log(p->ins, SB_LOG_WARN, "%s", err);
            sb_batch_set_result(b, i, rc == PREPARE_NO_MEMORY ? SB_RESULT_RETRY : SB_RESULT_FAIL, "%s", err);
            if (rc != PREPARE_NO_MEMORY) /* failed for good: it must not hold its key back */
                forget(p, sb_batch_event(b, i));
            continue;
        }
        slots[ready++] = (slot){okey_of(&c.msgs[i]), i};
    }
    /* Each key's messages one after another, in event order (without
     * ordering keys they are all one group, already in order). */
    if (p->okey)
        qsort(slots, ready, sizeof *slots, slot_cmp);
    for (size_t k = 0; k < ready; k++)
        order[k] = slots[k].i;
    c.order = order;
    const char **eids = c.bf->eids;
    for (size_t i = 0; p->lanes && i < n; i++)
        eids[i] = sb_event_id(sb_batch_event(b, i));
    size_t n_chunks = 0;
    for (size_t first = 0, end; first < ready; first = end) {
        end = group_end(&c, slots, first, ready);
        size_t go = end - first;
        if (p->lanes && c.msgs[order[first]].okey) {
            int64_t wait_ms;
            go = ps_lanes_admit(p->lanes, c.msgs[order[first]].okey, eids, order + first, end - first, &wait_ms);
            for (size_t k = first + go; k < end; k++)
                c.bf->hold_ms[order[k]] = wait_ms;
        }
        if (go)
            cut_group(&c, first, go, &n_chunks);
    }
    if (n_chunks)
        publish_all(&c, n_chunks);
    if (p->lanes)
        settle_held(&c, n, n_chunks);
    /* what was published or failed for good leaves its key's lane, what is
     * to be retried stays in it or joins it */
    for (size_t first = 0, end; p->lanes && first < ready; first = end) {
        end = group_end(&c, slots, first, ready);
        const char *okey = c.msgs[order[first]].okey;
        if (okey && ps_lanes_settle(p->lanes, okey, eids, order + first, end - first, c.owed) != 0)
            sb_log(p->ins, SB_LOG_WARN, "out of memory: the order of ordering key \"%s\" may not be kept", okey);
    }
    for (size_t i = 0; i < n; i++)
        free(c.msgs[i].okey);
    c.bf->arena = c.arena;
    c.bf->scratch = c.scratch;
    c.bf->body = c.body;
    spare_give(p, c.bf);
}

/* Read-only: the token, the topic, and the right to publish to it. */
static void ps_preflight(void *self, sb_preflight *pf)
{
    pubsub *p = self;
    if (sb_gcp_preflight_token(p->gc, pf) != 0)
        return;
    static const char *const perms[] = {"pubsub.topics.publish", NULL};
    char *url = sb_asprintf("/v1/%s", p->topic), *what = sb_asprintf("topic %s exists", p->topic);
    char *fix = sb_asprintf("create it (gcloud pubsub topics create %s) or fix topic/project", p->topic);
    char *may = sb_asprintf("may publish to %s (testIamPermissions)", p->topic);
    sb_gcp_preflight_resource(p->gc, pf, url, what, fix, "roles/pubsub.viewer", perms, may,
                              "roles/pubsub.publisher on the topic");
    free(url);
    free(what);
    free(fix);
    free(may);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "pubsub",
    .kind = SB_KIND_SINK,
    .version = "1.0",
    .description = "Publish events to a Google Cloud Pub/Sub topic (REST), batched within Pub/Sub's limits",
    .flags = SB_PLUGIN_CONCURRENT,
    .options = options,
    .config_size = sizeof(pubsub_conf),
    .create = ps_create,
    .process = ps_process,
    .abandon = ps_abandon,
    .destroy = ps_destroy,
    .preflight = ps_preflight,
};
