/*
 * kafka - source: a librdkafka high-level consumer in a consumer group.
 *
 * Each message becomes one event with id "kafka:<topic>:<partition>:<offset>",
 * so a redelivery maps to the same id and the ledger accepts it as a
 * duplicate without routing it twice.
 *
 * Offsets: enable.auto.commit=true with enable.auto.offset.store=false. An
 * offset is STORED (rd_kafka_offsets_store) only once its batch, handed
 * over with sb_source_emit_async(), has been confirmed by sb_source_await(),
 * i.e. once the events are durable in the run ledger. Up to MAX_INFLIGHT
 * batches are in flight while the next is parsed, so reading overlaps
 * committing, and batches that queue up share a ledger commit. Stored
 * offsets are committed by librdkafka every commit_interval, and
 * synchronously by us on a partition revoke (before the partitions go) and
 * on shutdown (rd_kafka_consumer_close). Delivery is therefore
 * at-least-once: a crash between the ledger commit and the offset commit
 * redelivers messages that the ledger recognises as duplicates.
 *
 * A message that cannot be parsed is logged with topic/partition/offset and
 * the reason, counted, and its offset stored with the batch: it will never
 * parse, and must not block its partition. A message whose event cannot be
 * built for lack of memory is another matter: it would parse later, so its
 * batch is refused like a failed emit (nothing from it on is stored, and
 * run() fails and is run again from the stored offsets).
 *
 * Threads: create/start/stop/destroy on the control thread; run() and the
 * librdkafka callbacks it serves (rebalance) on the source thread; the
 * error and log callbacks on librdkafka's own threads (they only log and
 * set an atomic flag).
 */
#include <syncbridge/syncbridge.h>

#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <inttypes.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


/* the shared decoder's formats, in its order (raw left out) */
enum kafka_format { FMT_AUTO = SB_DECODE_AUTO, FMT_JSON = SB_DECODE_JSON, FMT_COMMAND = SB_DECODE_COMMAND };

/* Batches emitted and not yet known durable. With one, the source waited
 * for each commit before emitting the next batch, and the ledger waited
 * while the source matched and serialised it; with two neither waits
 * unless the other falls a whole batch behind. */
#define MAX_INFLIGHT 2

typedef struct msg_batch {
    rd_kafka_message_t **msgs; /* `batch` slots */
    size_t n;
} msg_batch;

typedef struct kafka_src {
    sb_instance *ins;
    rd_kafka_conf_t *conf; /* validated template; each run() creates its consumer from a dup */
    enum kafka_format format;
    const char *id_field;
    size_t batch;
    int poll_ms;

    /* valid during run() only (source thread) */
    rd_kafka_t *rk;
    sb_source_ctx *ctx;
    rd_kafka_message_t **pending; /* polled, not yet emitted */
    size_t npending;
    /* emitted with sb_source_emit_async, not yet known durable: a FIFO of
     * ninflight batches from inflight[first] on, oldest first */
    msg_batch inflight[MAX_INFLIGHT];
    size_t first, ninflight;

    atomic_int stop;  /* set by stop(): wake run() */
    atomic_int fatal; /* set by the error callback on a fatal error */
    atomic_int_fast64_t last_err_log_ms;
    atomic_int last_err;

    int emit_failed; /* the core refused a batch: store nothing more, run() returns -1 */

    /* counters (source thread), logged on exit */
    uint64_t n_events, n_bad;
} kafka_src;

static const char *const formats[] = {[FMT_AUTO] = "auto", [FMT_JSON] = "json", [FMT_COMMAND] = "command", NULL};
static const char *const resets[] = {"earliest", "latest", NULL};

/* The options the core checks and fills in (ABI 2 table). */
typedef struct kafka_conf {
    int format; /* enum kafka_format */
    int64_t batch;
    int64_t poll_ms;
    int64_t commit_ms;
    int reset;  /* index into resets[] */
} kafka_conf;

static const sb_option_def options[] = {
    {SB_OPT("brokers", SB_OPT_STRING, NULL, 1, "Bootstrap servers, \"host:port,host:port\" (bootstrap.servers).")},
    {SB_OPT("topics", SB_OPT_STRING_LIST, NULL, 1,
     "Topics to subscribe to; a name starting with \"^\" is a regular expression, as in librdkafka.")},
    {SB_OPT("group_id", SB_OPT_STRING, NULL, 1, "Consumer group (group.id); instances sharing it split the partitions.")},
    {SB_OPT("format", SB_OPT_STRING, "\"auto\"", 0,
            "\"json\": the message is a JSON object whose members are the fields. \"command\": the message is the "
            "Run Replicator command that ran. \"auto\": JSON when it starts with '{', else a command."),
     SB_OPT_CHOICES(formats), SB_OPT_BIND(kafka_conf, format)},
    {SB_OPT("id_field", SB_OPT_STRING, NULL, 0,
     "JSON messages: take the event id from this field when present (else kafka:<topic>:<partition>:<offset>).")},
    {SB_OPT("properties", SB_OPT_OBJECT, NULL, 0,
     "librdkafka properties passed through as strings (security.protocol, sasl.*, ssl.*, session.timeout.ms...). "
     "Use ${env:NAME} or ${file:/path} for secrets. Offset handling properties are owned by the plugin.")},
    {SB_OPT("batch", SB_OPT_INT, "500", 0, "Maximum messages handed to the core per commit."),
     SB_OPT_RANGE_BIND(1, 100000, kafka_conf, batch)},
    {SB_OPT("poll_timeout", SB_OPT_DURATION, "\"100ms\"", 0,
            "How long one poll waits for a message; also bounds how long a stop waits."),
     SB_OPT_RANGE_BIND(1, 1000, kafka_conf, poll_ms)},
    {SB_OPT("commit_interval", SB_OPT_DURATION, "\"5s\"", 0,
            "How often stored offsets are committed to the group (auto.commit.interval.ms). Revokes and shutdown "
            "commit at once."),
     SB_OPT_RANGE_BIND(1, 86400000, kafka_conf, commit_ms)},
    {SB_OPT("auto_offset_reset", SB_OPT_STRING, "\"earliest\"", 0,
            "Where a partition without a committed offset starts."),
     SB_OPT_CHOICES(resets), SB_OPT_BIND(kafka_conf, reset)},
    {0}};

/* Properties the plugin sets itself: overriding them would break the
 * at-least-once contract or the options above. */
static const char *const owned_properties[] = {
    "enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers", "metadata.broker.list",
    "auto.commit.interval.ms", "auto.offset.reset", NULL};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size)
{
    char err[512];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "librdkafka property \"%s\": %s", name, err);
        return -1;
    }
    return 0;
}

/* librdkafka's internal log lines, with the instance prefix. Called from
 * librdkafka threads; sb_log is thread-safe. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kafka_src *k = rd_kafka_opaque(rk);
    sb_log_level l = level <= 3 ? SB_LOG_ERROR : level == 4 ? SB_LOG_WARN : level <= 6 ? SB_LOG_INFO : SB_LOG_DEBUG;
    sb_log(k ? k->ins : NULL, l, "librdkafka %s: %s", fac, buf);
}

/* Errors are usually transient (broker down, auth failing while a secret
 * rotates): librdkafka keeps retrying by itself. Repeats of one error are
 * logged at most every 10 s so a long outage does not flood the log. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_src *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        sb_log(k->ins, SB_LOG_ERROR, "fatal consumer error: %s: %s", rd_kafka_err2str(orig), why);
        atomic_store(&k->fatal, 1);
        return;
    }
    int64_t now = now_ms();
    int64_t last = atomic_load(&k->last_err_log_ms);
    int same = atomic_exchange(&k->last_err, err) == err;
    if (same && now - last < 10000) {
        sb_log(k->ins, SB_LOG_DEBUG, "kafka error: %s: %s", rd_kafka_err2str(err), reason);
        return;
    }
    atomic_store(&k->last_err_log_ms, now);
    sb_log(k->ins, SB_LOG_WARN, "kafka error (retrying): %s: %s", rd_kafka_err2str(err), reason);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque);

static int kf_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    /* the core checked choices and ranges (a poll of at most 1s: stop() relies on it) */
    const kafka_conf *c = sb_instance_config(ins);
    enum kafka_format fmt = (enum kafka_format)c->format;
    int64_t batch = c->batch, commit_ms = c->commit_ms, poll_ms = c->poll_ms;
    const char *reset = resets[c->reset];
    if (sb_opt_list_count(ins, "topics") == 0) {
        snprintf(errstr, errstr_size, "topics must name at least one topic");
        return -1;
    }

    kafka_src *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    k->ins = ins;
    k->format = fmt;
    k->id_field = sb_opt_string(ins, "id_field");
    k->batch = (size_t)batch;
    k->poll_ms = (int)poll_ms;
    k->conf = rd_kafka_conf_new();

    /* User properties first, so that the ones the plugin owns win; any
     * unknown name or bad value is reported here, at `syncbridge check`. */
    const json_t *props = sb_opt_object(ins, "properties");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)props, key, val)
    {
        for (const char *const *o = owned_properties; *o; o++) {
            if (strcmp(key, *o) == 0) {
                snprintf(errstr, errstr_size,
                         "librdkafka property \"%s\" is set by the plugin (use its options instead)", key);
                goto fail;
            }
        }
        char num[64];
        const char *s;
        if (json_is_string(val))
            s = json_string_value(val);
        else if (json_is_integer(val))
            s = (snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(val)), num);
        else if (json_is_boolean(val))
            s = json_is_true(val) ? "true" : "false";
        else {
            snprintf(errstr, errstr_size, "librdkafka property \"%s\": value must be a string", key);
            goto fail;
        }
        if (conf_set(k->conf, key, s, errstr, errstr_size) != 0)
            goto fail;
    }

    char ms[32];
    snprintf(ms, sizeof ms, "%" PRId64, commit_ms);
    if (conf_set(k->conf, "bootstrap.servers", sb_opt_string(ins, "brokers"), errstr, errstr_size) != 0 ||
        conf_set(k->conf, "group.id", sb_opt_string(ins, "group_id"), errstr, errstr_size) != 0 ||
        conf_set(k->conf, "enable.auto.commit", "true", errstr, errstr_size) != 0 ||
        conf_set(k->conf, "enable.auto.offset.store", "false", errstr, errstr_size) != 0 ||
        conf_set(k->conf, "auto.commit.interval.ms", ms, errstr, errstr_size) != 0 ||
        conf_set(k->conf, "auto.offset.reset", reset, errstr, errstr_size) != 0)
        goto fail;
    if (!json_object_get(props, "client.id")) {
        char cid[256];
        snprintf(cid, sizeof cid, "syncbridge-%s", sb_instance_name(ins));
        if (conf_set(k->conf, "client.id", cid, errstr, errstr_size) != 0)
            goto fail;
    }
    rd_kafka_conf_set_log_cb(k->conf, log_cb);
    rd_kafka_conf_set_error_cb(k->conf, error_cb);
    rd_kafka_conf_set_rebalance_cb(k->conf, rebalance_cb);
    rd_kafka_conf_set_opaque(k->conf, k);
    *self = k;
    return 0;
fail:
    rd_kafka_conf_destroy(k->conf);
    free(k);
    return -1;
}

static void kf_destroy(void *self)
{
    kafka_src *k = self;
    if (!k)
        return;
    if (k->conf)
        rd_kafka_conf_destroy(k->conf);
    free(k);
}

static void kf_stop(void *self)
{
    kafka_src *k = self;
    /* run() polls with a timeout of at most 1s and checks this flag (and
     * sb_source_stopping) between polls. The handle is not touched here:
     * run() owns it and may be destroying it right now. */
    atomic_store(&k->stop, 1);
}

static int stopping(kafka_src *k)
{
    return atomic_load(&k->stop) || (k->ctx && sb_source_stopping(k->ctx));
}

/* ---- messages to events -------------------------------------------------- */

static void msg_id(const rd_kafka_message_t *m, char *buf, size_t size)
{
    snprintf(buf, size, "kafka:%s:%" PRId32 ":%" PRId64, rd_kafka_topic_name(m->rkt), m->partition, m->offset);
}

static int add_kafka_fields(sb_event *ev, const rd_kafka_message_t *m)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    if (sb_event_set_string(ev, "kafka_topic", rd_kafka_topic_name(m->rkt)) != 0 ||
        sb_event_set_int(ev, "kafka_partition", m->partition) != 0 ||
        sb_event_set_int(ev, "kafka_offset", m->offset) != 0)
        return -1;
    if (tstype != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0 && sb_event_set_int(ev, "kafka_timestamp", ts) != 0)
        return -1;
    return 0;
}

/* What became of one message. */
typedef enum msg_result {
    MSG_EVENT,      /* the event is built */
    MSG_UNPARSABLE, /* it never will be: skipped, its offset stored with the batch */
    MSG_NO_MEMORY   /* it could not be built now: the batch is refused and read again */
} msg_result;

static msg_result no_memory(char *err, size_t errsz)
{
    snprintf(err, errsz, "out of memory");
    return MSG_NO_MEMORY;
}

/* The event for one message in *out, or the reason in err. */
static msg_result message_event(kafka_src *k, const rd_kafka_message_t *m, sb_event **out, char *err,
                                size_t errsz)
{
    char id[512];
    msg_id(m, id, sizeof id);
    /* the message's own id tells this execution of the run apart */
    sb_decode_opts o = {.size = sizeof o, .format = (sb_decode_format)k->format, .id_field = k->id_field, .identity_extra = id};
    int rc = sb_decode_body(&o, id, m->payload, m->len, out, err, errsz);
    msg_result r = rc == 0 ? MSG_EVENT : rc == SB_DECODE_INVALID ? MSG_UNPARSABLE : MSG_NO_MEMORY;
    if (r == MSG_EVENT && add_kafka_fields(*out, m) != 0) {
        sb_event_free(*out);
        *out = NULL;
        r = no_memory(err, errsz);
    }
    return r;
}

/* ---- emit and store ------------------------------------------------------ */

static void free_msgs(rd_kafka_message_t **msgs, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        rd_kafka_message_destroy(msgs[i]);
    *n = 0;
}

static void free_pending(kafka_src *k)
{
    free_msgs(k->pending, &k->npending);
}

/* Store next-offsets for every message of a batch the ledger committed (the
 * highest per partition). */
static void store_msgs(kafka_src *k, rd_kafka_message_t **msgs, size_t nmsgs)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)nmsgs);
    for (size_t i = 0; i < nmsgs; i++) {
        const rd_kafka_message_t *m = msgs[i];
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(list, rd_kafka_topic_name(m->rkt), m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(list, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(k->rk, list);
    if (err) {
        /* A partition revoked meanwhile: its new owner reads the messages
         * again and the ledger drops them as duplicates. */
        for (int i = 0; i < list->cnt; i++)
            if (list->elems[i].err)
                sb_log(k->ins, SB_LOG_DEBUG, "offset %" PRId64 " of %s[%" PRId32 "] not stored: %s",
                       list->elems[i].offset, list->elems[i].topic, list->elems[i].partition,
                       rd_kafka_err2str(list->elems[i].err));
    }
    rd_kafka_topic_partition_list_destroy(list);
}

/* Store the offsets of the oldest batches in flight once the ledger has
 * committed them, until at most `keep` are left in flight. Returns 0, or
 * -1 if the core refused one (stopping, ledger failure): then nothing more
 * is stored, and the messages are read again by whoever owns the partition
 * next. */
static int settle_inflight(kafka_src *k, size_t keep)
{
    if (k->ninflight <= keep)
        return 0;
    int rc = sb_source_await(k->ctx, keep);
    if (rc != 0) {
        k->emit_failed = 1;
        keep = 0;
    }
    while (k->ninflight > keep) {
        msg_batch *b = &k->inflight[k->first];
        if (rc == 0)
            store_msgs(k, b->msgs, b->n);
        free_msgs(b->msgs, &b->n);
        k->first = (k->first + 1) % MAX_INFLIGHT;
        k->ninflight--;
    }
    return rc;
}

/* Hand the pending messages to the core. They are emitted asynchronously
 * and join the batches in flight: their offsets are stored by
 * settle_inflight() once the ledger has committed them, at the latest when
 * MAX_INFLIGHT later batches have been parsed (earlier when the source
 * goes idle, on a revoke and at shutdown). A batch whose messages were all
 * unparsable is emitted empty, so that its offsets are stored in order
 * with the others. Returns 0, or -1 if the core refused a batch: then
 * nothing more is stored. */
static int flush_pending(kafka_src *k)
{
    if (k->npending == 0)
        return 0;
    if (k->emit_failed) {
        /* Storing a later offset would skip the refused messages. */
        free_pending(k);
        return -1;
    }
    sb_event **evs = calloc(k->npending, sizeof *evs);
    if (!evs) {
        /* as a refused emit: storing a later offset would skip these */
        sb_log(k->ins, SB_LOG_ERROR, "out of memory for a batch of %zu messages; they will be read again",
               k->npending);
        k->emit_failed = 1;
        free_pending(k);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < k->npending; i++) {
        const rd_kafka_message_t *m = k->pending[i];
        char err[512];
        sb_event *ev;
        msg_result r = message_event(k, m, &ev, err, sizeof err);
        if (r == MSG_EVENT) {
            evs[n++] = ev;
        } else if (r == MSG_UNPARSABLE) {
            k->n_bad++;
            sb_log(k->ins, SB_LOG_ERROR,
                   "message %s[%" PRId32 "] at offset %" PRId64 " skipped (%" PRIu64 " so far): %s",
                   rd_kafka_topic_name(m->rkt), m->partition, m->offset, k->n_bad, err);
        } else {
            /* as a refused emit: storing this batch's offsets, or any
             * later one, would skip a message that is fine */
            sb_log(k->ins, SB_LOG_ERROR,
                   "message %s[%" PRId32 "] at offset %" PRId64 ": %s; its batch of %zu messages will be read again",
                   rd_kafka_topic_name(m->rkt), m->partition, m->offset, err, k->npending);
            for (size_t j = 0; j < n; j++)
                sb_event_free(evs[j]);
            free(evs);
            k->emit_failed = 1;
            free_pending(k);
            return -1;
        }
    }
    /* make room in the FIFO */
    int rc = settle_inflight(k, MAX_INFLIGHT - 1);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++)
            sb_event_free(evs[i]);
    } else {
        rc = sb_source_emit_async(k->ctx, evs, n, NULL);
    }
    free(evs);
    if (rc == 0) {
        k->n_events += n;
        /* unparsable messages too: their offsets are stored with the batch */
        msg_batch *b = &k->inflight[(k->first + k->ninflight) % MAX_INFLIGHT];
        rd_kafka_message_t **t = b->msgs;
        b->msgs = k->pending;
        b->n = k->npending;
        k->ninflight++;
        k->pending = t;
        k->npending = 0;
    } else {
        k->emit_failed = 1;
        free_pending(k);
    }
    return rc;
}

/* ---- rebalance ------------------------------------------------------------- */

/* Called from rd_kafka_consumer_poll() or rd_kafka_consumer_close() on the
 * source thread. On a revoke, first hand over what was polled (its offsets
 * are then stored), then commit the stored offsets synchronously, so the
 * next owner of the partitions starts exactly after the last durable
 * event; only then give the partitions up. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    kafka_src *k = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    char list[512];
    size_t off = 0;
    list[0] = '\0';
    for (int i = 0; i < parts->cnt && off < sizeof list - 1; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s[%" PRId32 "]", i ? " " : "",
                                parts->elems[i].topic, parts->elems[i].partition);

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        sb_log(k->ins, SB_LOG_INFO, "assigned %d partition(s) (%s): %s", parts->cnt,
               cooperative ? "cooperative" : "eager", list);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        int lost = rd_kafka_assignment_lost(rk);
        sb_log(k->ins, SB_LOG_INFO, "%s %d partition(s): %s", lost ? "lost" : "revoked", parts->cnt, list);
        if (!lost) {
            if (!stopping(k))
                flush_pending(k);
            else
                free_pending(k);
            settle_inflight(k, 0);
            rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
            if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
                sb_log(k->ins, SB_LOG_WARN, "commit on revoke failed: %s", rd_kafka_err2str(cerr));
        } else {
            /* Lost (session timed out): another member may own them already;
             * a commit would fail. What was polled is read again there. */
            free_pending(k);
            settle_inflight(k, 0);
        }
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, NULL);
    } else {
        sb_log(k->ins, SB_LOG_ERROR, "rebalance failed: %s", rd_kafka_err2str(err));
        free_pending(k);
        settle_inflight(k, 0);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        sb_log(k->ins, SB_LOG_ERROR, "rebalance: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (rerr) {
        sb_log(k->ins, SB_LOG_ERROR, "rebalance: %s", rd_kafka_err2str(rerr));
    }
}

/* ---- run ------------------------------------------------------------------- */

static rd_kafka_t *open_consumer(kafka_src *k)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(k->conf);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sb_log(k->ins, SB_LOG_ERROR, "cannot create the consumer: %s", err);
        return NULL;
    }
    /* Route the main queue (rebalance, errors) to the consumer queue so
     * rd_kafka_consumer_poll() serves everything. */
    rd_kafka_poll_set_consumer(rk);
    size_t nt = sb_opt_list_count(k->ins, "topics");
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new((int)nt);
    for (size_t i = 0; i < nt; i++)
        rd_kafka_topic_partition_list_add(topics, sb_opt_list_item(k->ins, "topics", i), RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        sb_log(k->ins, SB_LOG_ERROR, "cannot subscribe: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* A message carrying a consumer error rather than data. */
static void consumer_error(kafka_src *k, const rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    if (m->rkt)
        sb_log(k->ins, SB_LOG_WARN, "consumer error on %s[%" PRId32 "]: %s: %s", rd_kafka_topic_name(m->rkt),
               m->partition, rd_kafka_err2str(m->err), rd_kafka_message_errstr(m));
    else
        sb_log(k->ins, SB_LOG_WARN, "consumer error: %s: %s", rd_kafka_err2str(m->err), rd_kafka_message_errstr(m));
}

/* The message arrays of run(): pending and one per batch in flight. */
static void free_buffers(kafka_src *k)
{
    free(k->pending);
    k->pending = NULL;
    for (size_t i = 0; i < MAX_INFLIGHT; i++) {
        free(k->inflight[i].msgs);
        k->inflight[i].msgs = NULL;
    }
    k->first = k->ninflight = 0;
}

static int alloc_buffers(kafka_src *k)
{
    int ok = (k->pending = calloc(k->batch, sizeof *k->pending)) != NULL;
    for (size_t i = 0; i < MAX_INFLIGHT; i++)
        ok &= (k->inflight[i].msgs = calloc(k->batch, sizeof *k->inflight[i].msgs)) != NULL;
    if (!ok)
        free_buffers(k);
    return ok ? 0 : -1;
}

static int kf_run(void *self, sb_source_ctx *ctx)
{
    kafka_src *k = self;
    k->ctx = ctx;
    if (alloc_buffers(k) != 0) {
        k->ctx = NULL;
        return -1;
    }
    atomic_store(&k->fatal, 0);
    k->emit_failed = 0;
    k->rk = open_consumer(k);
    if (!k->rk) {
        free_buffers(k);
        k->ctx = NULL;
        return -1;
    }
    int rc = 0;
    while (!stopping(k)) {
        if (atomic_load(&k->fatal)) {
            rc = -1;
            break;
        }
        /* Wait for the first message, then take what is already there. */
        int waited = k->npending == 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, waited ? k->poll_ms : 0);
        if (m && m->err) {
            consumer_error(k, m);
            rd_kafka_message_destroy(m);
            m = NULL;
        } else if (m) {
            k->pending[k->npending++] = m;
        }
        if (k->npending && (!m || k->npending == k->batch))
            flush_pending(k);
        /* Idle for a whole poll: nothing to overlap with, so store what is
         * committed. (A poll without wait comes up empty between fetches
         * under load too, and waiting for every commit there cost the
         * pipeline its depth.) */
        if (!m && waited)
            settle_inflight(k, 0);
        /* also set by a flush in the rebalance callback */
        if (k->emit_failed) {
            rc = stopping(k) ? 0 : -1;
            break;
        }
    }
    /* Whatever was polled and not emitted is read again later: its offset
     * was never stored. The close commits the stored offsets (and runs the
     * revoke callback, which commits synchronously). */
    free_pending(k);
    settle_inflight(k, 0);
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(k->rk);
    if (e)
        sb_log(k->ins, SB_LOG_WARN, "consumer close: %s", rd_kafka_err2str(e));
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    free_buffers(k);
    k->ctx = NULL;
    sb_log(k->ins, SB_LOG_INFO, "consumer closed: %" PRIu64 " events accepted, %" PRIu64 " unparsable messages",
           k->n_events, k->n_bad);
    return rc;
}

static int kf_start(void *self, char *errstr, size_t errstr_size)
{
    kafka_src *k = self;
    (void)errstr;
    (void)errstr_size;
    atomic_store(&k->stop, 0);
    return 0;
}

/* ---- preflight ------------------------------------------------------------- */

/* How long preflight waits for the brokers' answer, a TLS and SASL
 * handshake included. */
#define PREFLIGHT_TIMEOUT_MS 5000

/* The opaque of preflight's handle, in place of the source's own. */
typedef struct kf_probe {
    kafka_src *k;
    char error[512]; /* what librdkafka last reported: a refused connection, a TLS or SASL failure */
} kf_probe;

static void probe_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kf_probe *p = rd_kafka_opaque(rk);
    (void)level; /* the failure is in preflight's own line; this is for -l debug */
    sb_log(p->k->ins, SB_LOG_DEBUG, "librdkafka %s: %s", fac, buf);
}

/* Served by rd_kafka_poll() on the preflight thread. "All brokers down"
 * says less than the error before it, so it does not replace one. */
static void probe_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kf_probe *p = opaque;
    (void)rk;
    if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || !p->error[0])
        snprintf(p->error, sizeof p->error, "%s", reason);
}

/* A client that only asks for metadata: the source's properties without
 * group.id, so it has no group to join and no offsets to commit. */
static rd_kafka_t *probe_new(kafka_src *k, kf_probe *p, char *err, size_t errsz)
{
    const char *group_props[] = {"group.id"};
    rd_kafka_conf_t *conf = rd_kafka_conf_dup_filter(k->conf, 1, group_props);
    rd_kafka_conf_set_log_cb(conf, probe_log_cb);
    rd_kafka_conf_set_error_cb(conf, probe_error_cb);
    rd_kafka_conf_set_rebalance_cb(conf, NULL);
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz);
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

/* " (last error: ...)" when librdkafka reported one, else "". */
static const char *probe_detail(rd_kafka_t *rk, kf_probe *p, char *buf, size_t size)
{
    rd_kafka_poll(rk, 0);
    if (!p->error[0])
        return "";
    snprintf(buf, size, " (last error: %s)", p->error);
    return buf;
}

static const rd_kafka_metadata_topic_t *md_topic(const rd_kafka_metadata_t *md, const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, name) == 0)
            return &md->topics[i];
    return NULL;
}

/* The ok or FAIL line of a topic. NULL: not in the brokers' list of all
 * topics, which leaves out the topics a client may not describe. Asking
 * for it by name would tell the two apart, but a broker that predates
 * allow.auto.create.topics (Metadata v4) creates a topic asked for. */
static void report_topic(sb_preflight *pf, const char *topic, const rd_kafka_metadata_topic_t *t,
                         const char *group)
{
    char *what = sb_asprintf("topic %s exists", topic);
    if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        sb_preflight_fail(pf, what, "not found: create it (kafka-topics.sh --create --topic %s) or fix topics; "
                          "if it exists, grant this client's principal Describe and Read on it", topic);
    } else if (t->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
        sb_preflight_fail(pf, what, "%s: grant this client's principal Describe and Read on topic %s and Read "
                          "on group %s", rd_kafka_err2str(t->err), topic, group);
    } else if (t->err) {
        sb_preflight_fail(pf, what, "%s", rd_kafka_err2str(t->err));
    } else {
        char bad[256];
        size_t off = 0, nbad = 0;
        rd_kafka_resp_err_t why = RD_KAFKA_RESP_ERR_NO_ERROR;
        bad[0] = '\0';
        for (int i = 0; i < t->partition_cnt; i++) {
            const rd_kafka_metadata_partition_t *pt = &t->partitions[i];
            if (!pt->err && pt->leader >= 0)
                continue;
            if (!why)
                why = pt->err ? pt->err : RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE;
            if (off < sizeof bad - 1)
                off += (size_t)snprintf(bad + off, sizeof bad - off, "%s%" PRId32, nbad ? ", " : "", pt->id);
            nbad++;
        }
        free(what);
        what = sb_asprintf("topic %s exists (%d partition%s)", t->topic, t->partition_cnt,
                           t->partition_cnt == 1 ? "" : "s");
        if (t->partition_cnt == 0)
            sb_preflight_fail(pf, what, "it has no partitions: check the brokers' logs for the topic");
        else if (nbad)
            sb_preflight_fail(pf, what, "partition%s %s without a leader (%s): check the brokers that host %s",
                              nbad == 1 ? "" : "s", bad, rd_kafka_err2str(why), nbad == 1 ? "it" : "them");
        else
            sb_preflight_ok(pf, what);
    }
    free(what);
}

/* A "^regex" subscription: the topics it matches now, matched as
 * librdkafka matches them where the system has POSIX regexes (extended). */
static void report_pattern(sb_preflight *pf, const rd_kafka_metadata_t *md, const char *pattern)
{
    regex_t re;
    char *what = sb_asprintf("topics matching %s exist", pattern);
    int rc = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &re, msg, sizeof msg);
        sb_preflight_fail(pf, what, "not a valid regular expression (%s): fix topics", msg);
        free(what);
        return;
    }
    int n = 0, parts = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (md->topics[i].err || regexec(&re, md->topics[i].topic, 0, NULL, 0) != 0)
            continue;
        n++;
        parts += md->topics[i].partition_cnt;
    }
    regfree(&re);
    if (n == 0) {
        sb_preflight_fail(pf, what, "no topic this client may see matches: create one, fix topics, or grant "
                          "this client's principal Describe on them");
    } else {
        free(what);
        what = sb_asprintf("topics matching %s exist (%d topic%s, %d partitions)", pattern, n, n == 1 ? "" : "s",
                           parts);
        sb_preflight_ok(pf, what);
    }
    free(what);
}

/* `syncbridge preflight`: the brokers answer a metadata request for all
 * topics, and each topic is among them. Read-only, and bounded by
 * PREFLIGHT_TIMEOUT_MS: one request, from a client of its own with no
 * group.id (create() opened nothing), which never subscribes, fetches or
 * commits, and is destroyed without a consumer close. */
static void kf_preflight(void *self, sb_preflight *pf)
{
    kafka_src *k = self;
    const char *brokers = sb_opt_string(k->ins, "brokers"), *group = sb_opt_string(k->ins, "group_id");
    char err[1024], detail[600];
    kf_probe p = {.k = k};
    char *what = sb_asprintf("brokers %s answer", brokers);
    rd_kafka_t *rk = probe_new(k, &p, err, sizeof err);
    if (!rk) {
        sb_preflight_fail(pf, what, "cannot create a client: %s", err);
        free(what);
        return;
    }
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, PREFLIGHT_TIMEOUT_MS);
    if (e) {
        sb_preflight_fail(pf, what,
                          "no metadata within %d s: %s%s; check brokers, that this host reaches them (network, "
                          "firewall), and the TLS/SASL properties (security.protocol, ssl.*, sasl.*)",
                          PREFLIGHT_TIMEOUT_MS / 1000, rd_kafka_err2str(e),
                          probe_detail(rk, &p, detail, sizeof detail));
        free(what);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        return;
    }
    free(what);
    what = sb_asprintf("brokers %s answer (%d broker%s)", brokers, md->broker_cnt, md->broker_cnt == 1 ? "" : "s");
    sb_preflight_ok(pf, what);
    free(what);
    size_t nt = sb_opt_list_count(k->ins, "topics");
    for (size_t i = 0; i < nt; i++) {
        const char *topic = sb_opt_list_item(k->ins, "topics", i);
        if (topic[0] == '^')
            report_pattern(pf, md, topic);
        else
            report_topic(pf, topic, md_topic(md, topic), group);
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "kafka",
    .kind = SB_KIND_SOURCE,
    .version = "1.0",
    .description = "Consume Kafka topics in a consumer group (offsets stored after the ledger commit)",
    .options = options,
    .config_size = sizeof(kafka_conf),
    .create = kf_create,
    .start = kf_start,
    .run = kf_run,
    .stop = kf_stop,
    .destroy = kf_destroy,
    .preflight = kf_preflight,
};
