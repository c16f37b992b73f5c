/*
 * router_internal.h - the router's runtime structures, shared by
 * router.c (build, start, stop, stats), router_queue.c (route budget,
 * entries, step queues, retry heap), router_source.c (source threads and
 * admission), router_step.c (step workers, results, retries) and
 * router_circuit.c (a step's circuit and the instances' Retry-After pauses).
 *
 * Locking: each route's budget is guarded by route->mu; each step queue and
 * circuit by step->mu; the retry heap by router->tmu; an instance's plugin calls by
 * inst->lock (read lock for SB_PLUGIN_CONCURRENT plugins, else write
 * lock). No thread holds two of these at once.
 */
#ifndef SB_ROUTER_INTERNAL_H
#define SB_ROUTER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "events/event_internal.h"
#include "util/histogram.h"
#include "engine/freshness.h"
#include "engine/instance.h"
#include "events/match.h"
#include "engine/router.h"

#define SB_MAX_FANOUT 64
#define SB_STEP_BUSY_SLOTS 64 /* workers beyond this are not watched */

typedef struct route_rt route_rt;

/* One (event, route) in flight, owned by whichever queue or worker holds it. */
typedef struct entry {
    struct entry *next;
    route_rt *route;
    int64_t id;             /* ledger entry id */
    sb_event *ev;
    size_t bytes;           /* payload size, charged to the route budget */
    int step;               /* current step */
    int attempts;           /* charged attempts made at this step */
    int64_t first_attempt_us; /* of this step (its step_timeout counts from here) */
    int64_t retry_since_us; /* first charged retry since the last WAIT (the retry time budget) */
    json_t *states;         /* member name -> step state (plugin ABI 2), NULL if none; owned */
    int64_t due_mono;       /* when a scheduled retry is due */
    int64_t admitted_mono;  /* for the latency histogram */
    uint64_t members_done;  /* fan-out members done at this step (bit i = member i) */
    int fresh_slot;         /* the route's freshness table of the run, or -1 (sb_entry_track) */
    int64_t finished_us;    /* the run's on-prem finish, when fresh_slot >= 0 */
} entry;

typedef struct inst_rt {
    sb_instance *ins;
    const sb_instance_conf *conf;
    pthread_rwlock_t lock;
    /* Held while self is destroyed and made again (restart_instance) and
     * while cancel() runs on it, which does not take `lock`: cancel() must
     * reach a process() holding `lock`, and must never see a freed self. */
    pthread_mutex_t life_mu;
    int used;               /* referenced by a route */
    _Atomic int broken;     /* restart after FATAL failed; retried later (read unlocked) */
    int64_t last_restart_mono;
    _Atomic uint64_t restarts;
    _Atomic unsigned generation; /* bumped by each restart: worker states made before are stale */
    _Atomic int64_t pause_until_mono; /* Retry-After: no batch goes to this instance before then */
} inst_rt;

typedef struct step_rt {
    route_rt *route;
    int index;
    size_t n;               /* members */
    inst_rt **members;
    int batch_max;
    int workers;
    sb_retry_policy retry;  /* the first member's policy applies to the step */
    int64_t timeout_ms;     /* the first member's step_timeout: the whole step, waits included */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    entry *head, *tail;
    size_t queued;
    /* The circuit, guarded by mu. While the step fails as a whole its
     * entries wait in `held` (outside router->work, so that a shutdown
     * does not wait for them) and one probe batch at a time goes out at
     * the retry pace; one that does not fail closes it. Entries also wait
     * there while a member instance is paused by a Retry-After. */
    int open;
    int probing;            /* a probe batch is out */
    int failures;           /* failed batches since it opened: the backoff's exponent */
    int charged;            /* the last failure was a RETRY (not only FATAL): time budgets apply */
    int64_t probe_due_mono; /* no probe before this */
    int64_t opened_mono;
    entry *held_head, *held_tail;
    size_t held;
    char open_reason[512];  /* the failure that opened it or failed the last probe */
    pthread_t *threads;
    int n_threads;
    /* When each worker holding a batch took it (monotonic us; 0 = free
     * slot), for readiness and the watchdog: see router_ops.c. */
    _Atomic int64_t busy_since[SB_STEP_BUSY_SLOTS];
} step_rt;

struct route_rt {
    sb_router *router;
    const sb_route_conf *conf;
    sb_match *match;
    step_rt *steps;
    size_t n_steps;
    pthread_mutex_t mu;
    pthread_cond_t cv_space;
    int64_t inflight, inflight_bytes;
    int64_t max_inflight, max_bytes;
    _Atomic uint64_t n_in, n_done, n_dead, n_retried, n_dup, n_waits, n_progress_bytes, n_circuit_opens;
    sb_hist latency;
    sb_freshness *freshness; /* run lag per table (engine/freshness.c) */
};

/* A batch matched, serialised and reserved, waiting for its ledger commit. */
typedef struct prepared prepared;

typedef struct source_rt {
    sb_router *router;
    inst_rt *inst;
    route_rt **routes;
    size_t n_routes;
    pthread_t thread;
    int spawned;
    int failed;             /* --once: run() ended in error */
    char *checkpoint;       /* last committed, owned */
    /* admission pipeline for sb_source_emit_async(): guarded by amu */
    pthread_mutex_t amu;
    pthread_cond_t acv;
    prepared *qhead, *qtail;
    size_t qlen;
    size_t uncommitted;     /* batches queued or being committed */
    int adm_failed;         /* a batch failed to commit; later ones are refused */
    int adm_stop;
    pthread_t adm_thread;
    int adm_spawned;
    _Atomic uint64_t emitted, unrouted, restarts;
} source_rt;

struct sb_source_ctx {
    source_rt *src;
};

struct sb_router {
    const sb_config *cfg;
    sb_registry *reg;
    sb_ledger *ledger;
    int once;
    inst_rt *insts;
    size_t n_insts;
    route_rt *routes;
    size_t n_routes;
    source_rt *sources;
    size_t n_sources;
    sb_source_ctx *ctxs;

    _Atomic int stopping;      /* sources must stop, admission refuses */
    _Atomic int workers_stop;  /* step workers and timer exit */
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;

    _Atomic int64_t work;      /* entries queued or in a worker: 0 = drained */
    _Atomic int sources_alive;
    _Atomic int resume_done;
    pthread_t resume_thread;
    int resume_spawned;

    pthread_mutex_t tmu;       /* retry heap */
    pthread_cond_t tcv;
    entry **heap;
    size_t heap_n, heap_cap;
    pthread_t timer;
    int timer_spawned;
    int workers_spawned;

    int64_t last_prune_mono;
};

/* router_queue.c: shared by both halves below, which never call each
 * other. The route budget (backpressure): reserve blocks while the route
 * is full if `wait` (-1 when stopping), release wakes blocked sources. */
int sb_route_reserve(route_rt *rt, int64_t n, int64_t bytes, int wait);
void sb_route_release(route_rt *rt, int64_t n, int64_t bytes);
/* Start tracking a new entry's run for freshness (its event must be set). */
void sb_entry_track(entry *e);
void sb_entry_free(entry *e);
/* Count a settled entry in its route's stats (no budget change); its
 * latency ends at now_mono (sb_mono_us(), read once per batch). */
void sb_entry_count_settled(entry *e, int done, int64_t now_mono);
/* Count it, free it and release its share of the route budget. */
void sb_entry_settle(entry *e, int done);
void sb_step_push(step_rt *s, entry *e);
void sb_step_push_list(step_rt *s, entry *head, entry *tail, size_t n);
/* Queue an entry for its step again at e->due_mono, or up to 10 ms
 * before, with what else is due then (the sb-retry thread). */
void sb_retry_schedule(sb_router *r, entry *e);
/* The same for a list of entries linked by next, under one lock. */
void sb_retry_schedule_list(sb_router *r, entry *head);
void *sb_retry_timer(void *arg);

/* router_step.c */
void *sb_step_worker(void *arg);

/* router_circuit.c, called by the step workers (router_step.c).
 *
 * sb_circuit_take: wait for the next batch of step s and take up to
 * batch_max entries into `batch` (*n; counted in router->work). *probe is
 * set when the batch is the probe of an open circuit. Entries whose
 * step_timeout or retry time ran out while they were held are handed back
 * in *expired (a list, possibly with *n == 0) for the caller to dead-letter;
 * they are not counted in router->work. Returns -1 when workers stop. */
int sb_circuit_take(step_rt *s, entry **batch, size_t *n, int *probe, entry **expired);
/* A batch came back. `failed`: some member answered every event it was
 * given with RETRY or FATAL. A failed batch opens the circuit (a failed
 * probe backs it off further) and the result is the delay in ms to the
 * next probe; a batch that did not fail closes the circuit, releases what
 * it held, and the result is 0. `probe` ends the probe in flight.
 * `charged`: some event answered RETRY (FATAL alone is not charged, so
 * held entries then expire by step_timeout only). */
int64_t sb_circuit_result(step_rt *s, int probe, int failed, int charged, const char *reason);
/* Entries of a failed batch (a list in order) wait for the next probe,
 * ahead of those held already; queued at once if the circuit closed. */
void sb_circuit_hold(step_rt *s, entry *head, entry *tail, size_t n);
/* Retry-After: no batch goes to the instance for `ms` milliseconds. */
void sb_instance_pause(inst_rt *in, int64_t ms);

/* router_ops.c: a worker marks the batch it holds (returns a slot, or -1
 * if all are taken) and unmarks it when run_step returns. */
int sb_step_busy_begin(step_rt *s);
void sb_step_busy_end(step_rt *s, int slot);

/* router_source.c */
void *sb_source_thread(void *arg);
void *sb_admission_thread(void *arg);
void *sb_resume_thread(void *arg);
/* Queue an entry from a ledger view (resume or DLQ replay). 0 queued, -1 skipped. */
int sb_router_requeue(sb_router *r, const sb_ledger_pending *p, int wait);
/* sb_ledger_take_requeued callback: queue a DLQ replay. */
int sb_router_take_requeued_cb(const sb_ledger_pending *p, void *ud);

#endif
