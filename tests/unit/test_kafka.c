/* test_kafka.c - the kafka source's message handling on real librdkafka
 * messages, produced to and consumed from an in-process mock cluster
 * (rdkafka_mock): what becomes an event, what is skipped as unparsable
 * with its real reason, and that running out of memory refuses the batch
 * instead (jansson's allocator is swapped for one that can fail). The
 * plugin is compiled in whole so its static functions can be called
 * directly; the consumer group, offsets and rebalances are covered end to
 * end by tests/scripts/test_kafka.py. */
#include "../../plugins/kafka/kafka.c"

#include <librdkafka/rdkafka_mock.h>

#include <check.h>

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "expected \"%s\" in \"%s\"", (sub), (s))

static rd_kafka_t *producer;
static char bootstraps[256];

/* While set, every jansson allocation fails. */
static int fail_allocs;

static void *maybe_malloc(size_t n)
{
    return fail_allocs ? NULL : malloc(n);
}

static void cluster_up(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "conf: %s\n", err);
        abort();
    }
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!producer) {
        fprintf(stderr, "producer: %s\n", err);
        abort();
    }
    snprintf(bootstraps, sizeof bootstraps, "%s",
             rd_kafka_mock_cluster_bootstraps(rd_kafka_handle_mock_cluster(producer)));
}

static void cluster_down(void)
{
    rd_kafka_destroy(producer);
    producer = NULL;
}

/* Messages read back from one partition, in offset order. */
typedef struct polled {
    rd_kafka_t *consumer;
    rd_kafka_message_t *m[16];
    size_t n;
} polled;

/* Produce `n` payloads to a new topic and consume them back. */
/* lens NULL: the payloads are C strings */
static polled produce_and_poll_n(const char *topic, const char *const *payloads, const size_t *lens, size_t n)
{
    ck_assert_uint_le(n, 16);
    ck_assert_int_eq(rd_kafka_mock_topic_create(rd_kafka_handle_mock_cluster(producer), topic, 1, 1), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                           RD_KAFKA_V_VALUE((void *)payloads[i], lens ? lens[i] : strlen(payloads[i])),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                         0);
    ck_assert_int_eq(rd_kafka_flush(producer, 10000), 0);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof err), RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "test", err, sizeof err), RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err), RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, sizeof err),
                     RD_KAFKA_CONF_OK);
    polled p = {0};
    p.consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    ck_assert_msg(p.consumer != NULL, "%s", err);
    rd_kafka_poll_set_consumer(p.consumer);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(p.consumer, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    for (int waited = 0; p.n < n && waited < 150; waited++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p.consumer, 100);
        if (m && m->err)
            rd_kafka_message_destroy(m);
        else if (m)
            p.m[p.n++] = m;
    }
    ck_assert_uint_eq(p.n, n);
    return p;
}

static polled produce_and_poll(const char *topic, const char *const *payloads, size_t n)
{
    return produce_and_poll_n(topic, payloads, NULL, n);
}

static void polled_free(polled *p)
{
    for (size_t i = 0; i < p->n; i++)
        rd_kafka_message_destroy(p->m[i]);
    rd_kafka_consumer_close(p->consumer);
    rd_kafka_destroy(p->consumer);
}

static kafka_src source(enum kafka_format format)
{
    kafka_src k;
    memset(&k, 0, sizeof k);
    k.format = format;
    k.batch = 16;
    return k;
}

START_TEST(test_events_and_unparsable_messages)
{
    static const char *const payloads[] = {
        "{\"schema\": \"edw\", \"table\": \"t1\"}",
        "sh /etl/run_replicator.sh edw_prod orders_daily order_date 20261123 2",
        "{this is not json",
        "sh /etl/run_replicator.sh \"groupon;rm -rf /\" tbl",
        /* not UTF-8: the reason is the text, not memory */
        "sh /etl/caf\xe9/run_replicator.sh edw t",
    };
    polled p = produce_and_poll("events", payloads, 5);
    kafka_src k = source(FMT_AUTO);
    char err[512];

    sb_event *ev;
    ck_assert_int_eq(message_event(&k, p.m[0], &ev, err, sizeof err), MSG_EVENT);
    ck_assert_str_eq(sb_event_id(ev), "kafka:events:0:0");
    ck_assert_str_eq(sb_event_get_string(ev, "table"), "t1");
    ck_assert_int_eq(sb_event_get_int(ev, "kafka_offset", -1), 0);
    sb_event_free(ev);

    ck_assert_int_eq(message_event(&k, p.m[1], &ev, err, sizeof err), MSG_EVENT);
    ck_assert_str_eq(sb_event_get_string(ev, "inc_val"), "20261123"); /* as written */
    ck_assert_str_eq(sb_event_get_string(ev, "inc_date"), "2026-11-23");
    ck_assert_int_eq(sb_event_get_int(ev, "offset_days", -1), 2);
    ck_assert_int_ge(sb_event_get_int(ev, "run_id", -1), 0);
    sb_event_free(ev);

    ck_assert_int_eq(message_event(&k, p.m[2], &ev, err, sizeof err), MSG_UNPARSABLE);
    ASSERT_HAS(err, "column");
    ck_assert_int_eq(message_event(&k, p.m[3], &ev, err, sizeof err), MSG_UNPARSABLE);
    ASSERT_HAS(err, "is not a valid identifier");
    err[0] = '\0';
    ck_assert_int_eq(message_event(&k, p.m[4], &ev, err, sizeof err), MSG_UNPARSABLE);
    ASSERT_HAS(err, "command is not valid UTF-8 text (byte 0xe9 at column 12)");
    polled_free(&p);
}
END_TEST

/* jansson would accept this text (it skips a NUL after a number); the
 * event refuses it, and as the text's fault: skipped, not retried forever. */
START_TEST(test_nul_byte_is_unparsable_not_out_of_memory)
{
    static const char *const payloads[] = {"{\"a\":1\0}"};
    static const size_t lens[] = {8};
    polled p = produce_and_poll_n("nul", payloads, lens, 1);
    kafka_src k = source(FMT_JSON);
    char err[512];
    sb_event *ev;
    ck_assert_int_eq(message_event(&k, p.m[0], &ev, err, sizeof err), MSG_UNPARSABLE);
    ASSERT_HAS(err, "NUL byte at offset 6");
    polled_free(&p);
}
END_TEST

START_TEST(test_allocation_failure_refuses_the_batch)
{
    static const char *const payloads[] = {
        "{\"schema\": \"edw\", \"table\": \"t1\"}",
        "sh /etl/run_replicator.sh edw_prod orders_daily",
        "{this is not json",
    };
    polled p = produce_and_poll("oom", payloads, 3);
    kafka_src k = source(FMT_AUTO);
    char err[512];
    sb_event *ev;

    /* Both would parse: out of memory is not unparsable. A JSON message
     * becomes an event without jansson (its text is checked and kept, and
     * the kafka fields are appended to it); a command builds its fields
     * with jansson. */
    fail_allocs = 1;
    ck_assert_int_eq(message_event(&k, p.m[0], &ev, err, sizeof err), MSG_EVENT);
    sb_event_free(ev);
    ck_assert_int_eq(message_event(&k, p.m[1], &ev, err, sizeof err), MSG_NO_MEMORY);
    ck_assert_ptr_null(ev);
    ck_assert_str_eq(err, "out of memory");
    fail_allocs = 0;
    ck_assert_int_eq(message_event(&k, p.m[2], &ev, err, sizeof err), MSG_UNPARSABLE);

    /* A batch holding such a message is refused like a failed emit: nothing
     * becomes the batch in flight (whose offsets would be stored), nothing
     * is counted as skipped, and run() is to fail and read it again. */
    rd_kafka_message_t *pending[16];
    k.pending = pending;
    for (size_t i = 0; i < p.n; i++)
        k.pending[k.npending++] = p.m[i];
    p.n = 0; /* owned by the source now */
    fail_allocs = 1;
    int rc = flush_pending(&k);
    fail_allocs = 0;
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(k.emit_failed, 1);
    ck_assert_uint_eq(k.ninflight, 0);
    ck_assert_uint_eq(k.npending, 0);
    ck_assert_uint_eq(k.n_bad, 0);
    ck_assert_uint_eq(k.n_events, 0);
    polled_free(&p);
}
END_TEST

int main(void)
{
    json_set_alloc_funcs(maybe_malloc, free);
    cluster_up();
    Suite *s = suite_create("kafka");
    TCase *tc = tcase_create("messages");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_events_and_unparsable_messages);
    tcase_add_test(tc, test_nul_byte_is_unparsable_not_out_of_memory);
    tcase_add_test(tc, test_allocation_failure_refuses_the_batch);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    /* one mock cluster for all tests: no fork */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    cluster_down();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
