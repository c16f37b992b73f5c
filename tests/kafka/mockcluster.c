/*
 * mockcluster - a librdkafka mock cluster for tests, driven over stdin.
 *
 *   mockcluster [-b BROKERS] [-t TOPIC:PARTITIONS]...
 *
 * Starts a mock cluster (librdkafka's rdkafka_mock: the real protocol on
 * TCP ports) with BROKERS brokers (default 3), creates the topics, prints
 * `BOOTSTRAP=<servers>` and then reads commands, one per line, until stdin
 * closes (then it exits and the cluster is gone):
 *
 *   P TOPIC PARTITION PAYLOAD   produce PAYLOAD (rest of the line; PARTITION -1 = partitioner)
 *   SYNC                        wait for every produced message, answer "OK <n delivered> <n failed>"
 *   COMMITTED GROUP TOPIC       answer "COMMITTED <partition> <offset>" per partition, then "END"
 *                               (offset -1001 = nothing committed)
 *   DOWN ID / UP ID             take broker ID down / bring it back; answer "OK"
 *
 * Keep topics small: the mock cluster drops the oldest data once a
 * partition holds more than about 5 MiB.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int delivered, failed;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err) {
        failed++;
        fprintf(stderr, "mockcluster: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        delivered++;
    }
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "mockcluster: %s: %s\n", what, why);
    exit(1);
}

static void committed(const char *bootstraps, const char *group, const char *topic)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof err) ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof err))
        die("conf", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        die("consumer", err);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    if (e || md->topic_cnt != 1) {
        printf("ERROR %s\n", rd_kafka_err2str(e));
    } else {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++)
            rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id);
        e = rd_kafka_committed(rk, l, 5000);
        if (e)
            printf("ERROR %s\n", rd_kafka_err2str(e));
        else
            for (int i = 0; i < l->cnt; i++)
                printf("COMMITTED %" PRId32 " %" PRId64 "\n", l->elems[i].partition, l->elems[i].offset);
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    printf("END\n");
}

int main(int argc, char **argv)
{
    const char *brokers = "3";
    char err[512];
    int opt;
    char *topics[64];
    int ntopics = 0;
    while ((opt = getopt(argc, argv, "b:t:")) != -1) {
        if (opt == 'b')
            brokers = optarg;
        else if (opt == 't' && ntopics < 64)
            topics[ntopics++] = optarg;
        else {
            fprintf(stderr, "usage: mockcluster [-b BROKERS] [-t TOPIC:PARTITIONS]...\n");
            return 2;
        }
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", brokers, err, sizeof err) ||
        rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err))
        die("conf", err);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        die("producer", err);
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(rk);
    if (!mc)
        die("mock cluster", "not created");
    for (int i = 0; i < ntopics; i++) {
        char *colon = strrchr(topics[i], ':');
        int parts = colon ? atoi(colon + 1) : 1;
        if (colon)
            *colon = '\0';
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, topics[i], parts, 1);
        if (e)
            die(topics[i], rd_kafka_err2str(e));
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    printf("BOOTSTRAP=%s\n", bootstraps);
    fflush(stdout);

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        if (strncmp(line, "P ", 2) == 0) {
            char *topic = line + 2, *sp = strchr(topic, ' ');
            if (!sp)
                continue;
            *sp = '\0';
            char *rest;
            long part = strtol(sp + 1, &rest, 10);
            const char *payload = *rest == ' ' ? rest + 1 : rest;
            rd_kafka_resp_err_t e;
            while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION((int32_t)part),
                                          RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
                                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
                   RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 100);
            if (e)
                fprintf(stderr, "mockcluster: produce: %s\n", rd_kafka_err2str(e));
            rd_kafka_poll(rk, 0);
        } else if (strcmp(line, "SYNC") == 0) {
            rd_kafka_flush(rk, 30000);
            printf("OK %d %d\n", delivered, failed);
        } else if (strncmp(line, "COMMITTED ", 10) == 0) {
            char group[256], topic[256];
            if (sscanf(line + 10, "%255s %255s", group, topic) == 2)
                committed(bootstraps, group, topic);
            else
                printf("ERROR usage\nEND\n");
        } else if (strncmp(line, "DOWN ", 5) == 0 || strncmp(line, "UP ", 3) == 0) {
            int up = line[0] == 'U';
            int32_t id = atoi(line + (up ? 3 : 5));
            rd_kafka_resp_err_t e = up ? rd_kafka_mock_broker_set_up(mc, id) : rd_kafka_mock_broker_set_down(mc, id);
            if (e)
                printf("ERROR %s\n", rd_kafka_err2str(e));
            else
                printf("OK\n");
        } else if (len > 0) {
            printf("ERROR unknown command\n");
        }
        fflush(stdout);
    }
    free(line);
    rd_kafka_flush(rk, 5000);
    rd_kafka_destroy(rk);
    return 0;
}
