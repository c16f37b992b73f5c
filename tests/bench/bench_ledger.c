/*
 * bench_ledger.c - ledger throughput: one thread accepts events in batches
 * of 256 while a worker thread records the accepted events' completion (a
 * 1-step route with one member) in batches of up to 256, as the daemon's
 * step workers do.
 * Two sinks: one that adds a field to each event (as pubsub adds its
 * message id) and one that adds none (discard, the kafka -> discard path).
 * Prints events/s and the process's CPU time per event for both fsync
 * policies; CPU time varies less than events/s on a shared machine. Not a
 * test: `make bench-ledger`.
 */
#include "build_config.h"
#include "ledger/ledger.h"
#include "util/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define BATCH 256

/* The fields of a Run Replicator result as the kafka benchmark sends them
 * (about 300 bytes): the payload's size decides how many pages the ledger
 * writes per event. */
#define FIELDS                                                                                                  \
    "{\"schema\":\"edw_prod\",\"table\":\"orders_7\",\"status\":\"succeeded\",\"run_date\":\"2026-11-23\","       \
    "\"command\":\"sh /etl/run_replicator.sh edw_prod orders_7 order_dt 20261123 2\",\"td_count\":5120331,"      \
    "\"hive_count\":5120331,\"host\":\"hdp-edge-01\",\"started_at\":\"2026-11-23T02:00:00Z\","                  \
    "\"finished_at\":\"2026-11-23T02:14:09Z\",\"seq\":%zu,\"sent_ns\":0,\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}"

struct handoff {
    const char *added; /* what the sink adds to each event, NULL = nothing */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t *ids;
    size_t head, tail, cap;
    int finished;
    sb_ledger *l;
};

static void *worker(void *arg)
{
    struct handoff *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (h->head == h->tail && !h->finished)
            pthread_cond_wait(&h->cv, &h->mu);
        if (h->head == h->tail)
            break;
        size_t from = h->head, to = h->tail;
        pthread_mutex_unlock(&h->mu);
        sb_ledger_step done[BATCH];
        size_t n = 0;
        for (size_t i = from; i < to; i++) {
            done[n++] = (sb_ledger_step){.entry_id = h->ids[i], .step = 0, .last = 1, .member = "sink",
                                         .attempts = 1, .added_json = h->added};
            if (n == BATCH || i + 1 == to) {
                sb_ledger_steps_done(h->l, done, n);
                n = 0;
            }
        }
        pthread_mutex_lock(&h->mu);
        h->head = to;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int run(const char *dir, sb_fsync_policy policy, const char *added, size_t n_events)
{
    char err[256];
    sb_ledger_opts o = {.fsync = policy, .commit_interval_ms = 5, .retention_ms = 3600000};
    sb_ledger *l = sb_ledger_open(dir, &o, err, sizeof err);
    if (!l) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    struct handoff h = {.added = added, .ids = sb_xcalloc(n_events, sizeof(int64_t)), .cap = n_events, .l = l};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t th;
    pthread_create(&th, NULL, worker, &h);

    static char ids[BATCH][32], payloads[BATCH][512];
    sb_ledger_new batch[BATCH];
    int64_t t0 = sb_mono_us();
    double cpu0 = cpu_seconds();
    for (size_t done = 0; done < n_events;) {
        size_t n = n_events - done < BATCH ? n_events - done : BATCH;
        for (size_t i = 0; i < n; i++) {
            snprintf(ids[i], sizeof ids[i], "ev-%zu", done + i);
            snprintf(payloads[i], sizeof payloads[i],
                     "{\"id\":\"ev-%zu\",\"source\":\"bench\",\"received_us\":%zu,\"fields\":" FIELDS "}",
                     done + i, done + i, done + i);
            batch[i] = (sb_ledger_new){.event_id = ids[i], .route = "r1", .source = "bench",
                                       .payload = payloads[i], .received_us = (int64_t)(done + i)};
        }
        char cp[32];
        snprintf(cp, sizeof cp, "%zu", done + n);
        if (sb_ledger_accept(l, "bench", cp, batch, n, err, sizeof err) != 0) {
            fprintf(stderr, "accept: %s\n", err);
            return -1;
        }
        pthread_mutex_lock(&h.mu);
        for (size_t i = 0; i < n; i++)
            h.ids[h.tail++] = batch[i].entry_id;
        pthread_cond_signal(&h.cv);
        pthread_mutex_unlock(&h.mu);
        done += n;
    }
    pthread_mutex_lock(&h.mu);
    h.finished = 1;
    pthread_cond_signal(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(th, NULL);
    sb_ledger_sync(l);
    int64_t t1 = sb_mono_us();
    double cpu = cpu_seconds() - cpu0;

    int64_t pending = -1, ndone = -1, dead = -1;
    sb_ledger_counts(l, &pending, &ndone, &dead);
    sb_ledger_close(l);
    double secs = (double)(t1 - t0) / 1e6;
    printf("fsync=%-7s sink adds %-8s events=%zu  %.2fs  %.0f events/s  cpu %.2f us/event  (done=%lld pending=%lld)\n",
           policy == SB_FSYNC_POWER ? "power" : "process", added ? "a field" : "nothing", n_events, secs,
           (double)n_events / secs, cpu * 1e6 / (double)n_events, (long long)ndone, (long long)pending);
    free(h.ids);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);
    return (size_t)ndone == n_events ? 0 : -1;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 500000;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    int rc = 0;
    for (int k = 0; k < 4; k++) {
        sb_fsync_policy policy = k < 2 ? SB_FSYNC_PROCESS : SB_FSYNC_POWER;
        const char *added = k % 2 ? "{\"row\":1}" : NULL;
        char *tmpl = sb_asprintf("%s/bench_ledger.XXXXXX", base);
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            return 1;
        }
        if (run(tmpl, policy, added, n) != 0)
            rc = 1;
        char *cmd = sb_asprintf("rm -rf '%s'", tmpl);
        if (system(cmd) != 0)
            rc = 1;
        free(cmd);
        free(tmpl);
    }
    return rc;
}
