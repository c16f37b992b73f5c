/* router_step.c - step workers: batches into process(), results, retries. */
#include "build_config.h"
#include "events/json_text.h"
#include "log/log_internal.h"
#include "engine/router_internal.h"
#include "util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sb_batch {
    size_t n;
    sb_event **evs;
    int *attempts;
    sb_result *res;
    char **reason;
    int64_t *retry_after_ms; /* RETRY: Retry-After; WAIT: the delay */
    json_t **state;          /* the member's step state per event, owned by the batch */
    unsigned char *state_set;/* set during this call: the entry takes it */
    unsigned char *state_dirty; /* set and not yet written by sb_batch_save_state: record it */
    uint64_t *progress;      /* bytes done as last reported, for the progress counter */
    int64_t *progress_saved_us; /* when the progress was last queued for the ledger (runs show) */
    entry **ents;            /* the entries, for sb_batch_save_state() */
    sb_router *router;
    step_rt *step;
    const char *member;      /* the instance name: the key of its step state */
    int busy_slot;           /* the worker's watchdog slot, -1 if none */
    void *worker;            /* worker_init()'s state for this thread */
};

size_t sb_batch_count(const sb_batch *b) { return b->n; }
sb_event *sb_batch_event(sb_batch *b, size_t i) { return i < b->n ? b->evs[i] : NULL; }
int sb_batch_attempt(const sb_batch *b, size_t i) { return i < b->n ? b->attempts[i] : 0; }

void sb_batch_set_result(sb_batch *b, size_t i, sb_result r, const char *reason, ...)
{
    if (i >= b->n)
        return;
    b->res[i] = r;
    free(b->reason[i]);
    b->reason[i] = NULL;
    if (reason) {
        va_list ap;
        va_start(ap, reason);
        if (vasprintf(&b->reason[i], reason, ap) < 0)
            b->reason[i] = NULL;
        va_end(ap);
    }
}

void sb_batch_set_retry_after(sb_batch *b, size_t i, int64_t ms)
{
    if (i < b->n)
        b->retry_after_ms[i] = ms;
}

void sb_batch_wait(sb_batch *b, size_t i, int64_t ms, const char *status, ...)
{
    if (i >= b->n)
        return;
    b->res[i] = SB_RESULT_WAIT;
    b->retry_after_ms[i] = ms > 0 ? ms : 1;
    free(b->reason[i]);
    b->reason[i] = NULL;
    if (status) {
        va_list ap;
        va_start(ap, status);
        if (vasprintf(&b->reason[i], status, ap) < 0)
            b->reason[i] = NULL;
        va_end(ap);
    }
}

const json_t *sb_batch_state(const sb_batch *b, size_t i) { return i < b->n ? b->state[i] : NULL; }

void sb_batch_set_state(sb_batch *b, size_t i, json_t *state)
{
    if (i >= b->n) {
        json_decref(state);
        return;
    }
    json_decref(b->state[i]);
    b->state[i] = state;
    b->state_set[i] = 1;
    b->state_dirty[i] = 1;
}

/* The state as JSON text for the ledger (NULL for none); aborts on OOM like
 * the other sb_x* helpers, since a state that cannot be recorded would
 * repeat a side effect after a restart. */
static char *state_text(const json_t *state)
{
    if (!state)
        return NULL;
    sb_strbuf txt = {0};
    if (sb_json_dump(&txt, state) != 0) {
        free(txt.p);
        return NULL;
    }
    return txt.p;
}

int sb_batch_save_state(sb_batch *b, size_t i)
{
    if (i >= b->n)
        return -1;
    if (!b->router)
        return 0; /* an offline abandon(): the entry is being dropped */
    char err[256];
    char *txt = state_text(b->state[i]);
    int rc = sb_ledger_step_state(b->router->ledger, b->ents[i]->id, b->ents[i]->step, b->member, txt, 1, err,
                                  sizeof err);
    free(txt);
    if (rc != 0)
        sb_log(NULL, SB_LOG_ERROR, "event %s: the step state could not be saved: %s", b->ents[i]->ev->id, err);
    else
        b->state_dirty[i] = 0; /* recorded; a later change sets it again */
    return rc;
}

int sb_batch_stopping(const sb_batch *b) { return b->router && atomic_load(&b->router->stopping); }

/* At most one progress record a second per event: a copy reports each
 * part it sends, and the ledger is there to answer `runs show`, not to
 * follow every byte. The first and the last report are always recorded. */
#define PROGRESS_RECORD_US 1000000

void sb_batch_progress(sb_batch *b, size_t i, uint64_t done, uint64_t total)
{
    if (i >= b->n)
        return;
    int64_t now = sb_mono_us();
    /* a worker that reports progress is busy, not stalled: restart its clock */
    if (b->busy_slot >= 0)
        atomic_store(&b->step->busy_since[b->busy_slot], now);
    if (!b->step)
        return; /* an offline abandon(): nothing to show it in */
    uint64_t prev = __atomic_exchange_n(&b->progress[i], done, __ATOMIC_RELAXED);
    if (done > prev)
        atomic_fetch_add(&b->step->route->n_progress_bytes, done - prev);
    if (!b->ents || !b->ents[i])
        return;
    /* the report that first reaches the total is always recorded, once */
    int finishing = total > 0 && done >= total && prev < total;
    int64_t saved = __atomic_load_n(&b->progress_saved_us[i], __ATOMIC_RELAXED);
    if (finishing) {
        __atomic_store_n(&b->progress_saved_us[i], now, __ATOMIC_RELAXED);
    } else if ((saved != 0 && now - saved < PROGRESS_RECORD_US) ||
               /* one thread records when several report at once */
               !__atomic_compare_exchange_n(&b->progress_saved_us[i], &saved, now, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
        return;
    }
    /* the latest value, not this caller's: another thread may have reported more since */
    uint64_t latest = __atomic_load_n(&b->progress[i], __ATOMIC_RELAXED);
    sb_ledger_step_progress(b->router->ledger, b->ents[i]->id, b->ents[i]->step, b->member, latest, total);
}

void *sb_batch_worker(const sb_batch *b) { return b->worker; }

static void batch_init(sb_batch *b, size_t n)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    b->busy_slot = -1;
    b->evs = sb_xcalloc(n, sizeof *b->evs);
    b->attempts = sb_xcalloc(n, sizeof *b->attempts);
    b->res = sb_xcalloc(n, sizeof *b->res);
    b->reason = sb_xcalloc(n, sizeof *b->reason);
    b->retry_after_ms = sb_xcalloc(n, sizeof *b->retry_after_ms);
    b->state = sb_xcalloc(n, sizeof *b->state);
    b->state_set = sb_xcalloc(n, sizeof *b->state_set);
    b->state_dirty = sb_xcalloc(n, sizeof *b->state_dirty);
    b->progress = sb_xcalloc(n, sizeof *b->progress);
    b->progress_saved_us = sb_xcalloc(n, sizeof *b->progress_saved_us);
    b->ents = sb_xcalloc(n, sizeof *b->ents);
}

static void batch_fini(sb_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->reason[i]);
        json_decref(b->state[i]);
    }
    free(b->evs);
    free(b->attempts);
    free(b->res);
    free(b->reason);
    free(b->retry_after_ms);
    free(b->state);
    free(b->state_set);
    free(b->state_dirty);
    free(b->progress);
    free(b->progress_saved_us);
    free(b->ents);
}

/* ---- calling a member ------------------------------------------------------ */

/* After FATAL: stop, destroy, create and start the instance again. Called
 * with the instance's write lock held, so no process() runs meanwhile. */
static void restart_instance(inst_rt *in)
{
    sb_instance *ins = in->ins;
    char err[1024];
    in->last_restart_mono = sb_mono_us();
    atomic_fetch_add(&in->restarts, 1);
    atomic_fetch_add(&in->generation, 1);
    sb_instance_stop(ins);
    pthread_mutex_lock(&in->life_mu);
    if (ins->created && ins->plugin->destroy)
        ins->plugin->destroy(ins->self);
    ins->created = 0;
    ins->self = NULL;
    int failed = sb_instance_create(ins, err, sizeof err) != 0 || sb_instance_start(ins, err, sizeof err) != 0;
    pthread_mutex_unlock(&in->life_mu);
    if (failed) {
        sb_log(ins, SB_LOG_ERROR, "restart after a fatal error failed: %s", err);
        in->broken = 1;
        return;
    }
    sb_log(ins, SB_LOG_INFO, "restarted after a fatal error");
    in->broken = 0;
}

/* A step worker's per-member worker state (plugin worker_init). */
typedef struct worker_slot {
    void *state;
    unsigned generation; /* of the instance it was made for */
    int made;
} worker_slot;

/* worker_fini() for a slot; the instance's current self is passed: after a
 * restart it is not the one init saw, and after a failed restart it is
 * NULL (plugin.h: fini frees the worker state only). */
static void worker_slot_fini(inst_rt *in, worker_slot *w)
{
    if (!w->made)
        return;
    in->ins->plugin->worker_fini(in->ins->self, w->state);
    w->made = 0;
    w->state = NULL;
}

/* The worker state for this member, made on first use and again after the
 * instance was restarted. 0, or -1 with errstr. Called with the instance's
 * lock held (read or write), so self is stable. */
static int worker_slot_get(inst_rt *in, worker_slot *w, char *errstr, size_t errstr_size)
{
    const sb_plugin *p = in->ins->plugin;
    if (!p->worker_init)
        return 0;
    unsigned gen = atomic_load(&in->generation);
    if (w->made && w->generation != gen)
        worker_slot_fini(in, w);
    if (w->made)
        return 0;
    char msg[512] = "";
    void *st = NULL;
    if (p->worker_init(in->ins->self, &st, msg, sizeof msg) != 0)
        return sb_err(errstr, errstr_size, "worker init failed: %s", msg[0] ? msg : "no reason given");
    w->state = st;
    w->generation = gen;
    w->made = 1;
    return 0;
}

typedef struct member_call {
    inst_rt *in;
    sb_batch batch;
    size_t *idx; /* batch position -> entry index */
    worker_slot *worker;
} member_call;

static void call_member(member_call *mc)
{
    inst_rt *in = mc->in;
    int concurrent = (in->ins->plugin->flags & SB_PLUGIN_CONCURRENT) != 0;
    if (in->broken) {
        pthread_rwlock_wrlock(&in->lock);
        if (in->broken && sb_mono_us() - in->last_restart_mono >= 1000000)
            restart_instance(in);
        pthread_rwlock_unlock(&in->lock);
    }
    if (in->broken) {
        for (size_t i = 0; i < mc->batch.n; i++)
            sb_batch_set_result(&mc->batch, i, SB_RESULT_FATAL, "instance %s is broken and could not be restarted",
                                in->ins->name);
        return;
    }
    if (concurrent)
        pthread_rwlock_rdlock(&in->lock);
    else
        pthread_rwlock_wrlock(&in->lock);
    if (in->broken) { /* another worker's restart failed meanwhile: self is gone */
        pthread_rwlock_unlock(&in->lock);
        for (size_t i = 0; i < mc->batch.n; i++)
            sb_batch_set_result(&mc->batch, i, SB_RESULT_FATAL, "instance %s is broken and could not be restarted",
                                in->ins->name);
        return;
    }
    char err[600];
    if (worker_slot_get(in, mc->worker, err, sizeof err) != 0) {
        pthread_rwlock_unlock(&in->lock);
        sb_log(in->ins, SB_LOG_WARN, "%s", err);
        for (size_t i = 0; i < mc->batch.n; i++)
            sb_batch_set_result(&mc->batch, i, SB_RESULT_RETRY, "%s", err);
        return;
    }
    mc->batch.worker = mc->worker->state;
    in->ins->plugin->process(in->ins->self, &mc->batch);
    pthread_rwlock_unlock(&in->lock);

    int fatal = 0;
    for (size_t i = 0; i < mc->batch.n; i++)
        fatal |= mc->batch.res[i] == SB_RESULT_FATAL;
    if (fatal) {
        pthread_rwlock_wrlock(&in->lock);
        sb_log(in->ins, SB_LOG_ERROR, "fatal error reported; restarting the instance");
        restart_instance(in);
        pthread_rwlock_unlock(&in->lock);
    }
}

static void *call_member_thread(void *arg)
{
    call_member(arg);
    return NULL;
}

/* ---- outcome of one attempt ------------------------------------------------- */

typedef struct outcome {
    uint64_t failed_members; /* members that FAILed it (bit m: member m): dead-letter */
    int retry;        /* some member wants RETRY or FATAL */
    int charged;      /* a RETRY (not only FATAL): counts against the budget */
    int wait;         /* some member WAITs (and none of the above) */
    int64_t wait_ms;  /* the soonest look again a waiting member asked for */
    int64_t retry_after_ms;
    char *added;      /* single-member step done: the fields it added (JSON text, owned), recorded with the step */
    char *reason;     /* the first member's that was not OK (owned), NULL if none: a batch's outcomes are
                       * allocated together, and a buffer in each made that a page-faulting calloc */
    int timer;        /* settle_attempt() left the entry for a timer: TIMER_WAIT or TIMER_RETRY */
} outcome;

#define TIMER_WAIT 1
#define TIMER_RETRY 2

#define OUTCOME_REASON_MAX 511

static void note_reason(outcome *o, const char *member, const char *what, const char *reason)
{
    if (o->reason)
        return;
    o->reason = sb_asprintf("%s: %s%s%s", member, what, reason ? ": " : "", reason ? reason : "");
    if (o->reason && strlen(o->reason) > OUTCOME_REASON_MAX) /* what the ledger and the log carry per attempt */
        o->reason[OUTCOME_REASON_MAX] = '\0';
}

static const char *reason_of(const outcome *o)
{
    return o->reason ? o->reason : "";
}

static int64_t backoff_ms(const sb_retry_policy *p, int attempts)
{
    double d = (double)p->initial_ms * pow(p->multiplier > 1.0 ? p->multiplier : 1.0, attempts > 0 ? attempts - 1 : 0);
    if (d > (double)p->max_delay_ms)
        d = (double)p->max_delay_ms;
    int64_t cap = (int64_t)d;
    return cap > 0 ? (int64_t)sb_rand_below((uint64_t)cap + 1) : 0; /* full jitter */
}

/* What one batch hands on: entries for the next step, budget to give
 * back and the steps completed for the ledger, applied once per batch
 * rather than once per entry (each would wake a thread or take the
 * ledger's lock). All entries of a batch belong to one route and step. */
typedef struct handoff {
    entry *head, *tail;
    size_t n;
    int hold;              /* the batch failed whole: retries wait for the circuit's probe */
    int64_t hold_delay_ms; /* until then, as far as known */
    entry *hhead, *htail;  /* held: to sb_circuit_hold() */
    size_t hn;
    int64_t released, released_bytes;
    int64_t now_mono;     /* when the batch came back: the settled entries' latency ends here */
    int most_attempts;      /* the most attempts among the charged retries given a timer */
    int64_t retry_delay_ms; /* the delay they all wait: one draw of the backoff for most_attempts */
    entry *thead, *ttail;   /* given a timer: to sb_retry_schedule_list(), in the batch's order */
    int64_t timed_from_mono; /* their delays count from here: after the batch is settled */
    size_t n_to_time;       /* marked by settle_attempt() for a timer */
    int64_t n_timed;        /* of those given one: each is due a microsecond after the one before */
    sb_ledger_step *done; /* room for the whole batch */
    size_t n_done;
} handoff;

static void settle_into(handoff *h, entry *e, int done)
{
    h->released++;
    h->released_bytes += (int64_t)e->bytes;
    sb_entry_count_settled(e, done, h->now_mono);
    sb_entry_free(e);
}

/* Append e to the list head..tail (one of the handoff's). */
static void append_entry(entry **head, entry **tail, entry *e)
{
    e->next = NULL;
    if (*tail)
        (*tail)->next = e;
    else
        *head = e;
    *tail = e;
}

/* Entry e of the batch waits delay_ms: it joins the batch's timed list.
 * Entries that wait alike are due a microsecond apart, in the batch's
 * order, and go to the retry heap together after the batch
 * (sb_retry_schedule_list()): the retry timer hands them back together and
 * in that order (an ordering key's messages, above all, come back as they
 * went). */
static void time_entry(handoff *h, entry *e, int64_t delay_ms)
{
    e->due_mono = h->timed_from_mono + delay_ms * 1000 + h->n_timed++;
    append_entry(&h->thead, &h->ttail, e);
}

static void advance(step_rt *s, entry *e, const outcome *o, handoff *h)
{
    route_rt *rt = e->route;
    h->done[h->n_done++] = (sb_ledger_step){.entry_id = e->id,
                                            .step = e->step,
                                            .last = (size_t)e->step + 1 >= rt->n_steps,
                                            .member = s->n == 1 ? s->members[0]->ins->name : NULL,
                                            .attempts = e->attempts + 1,
                                            .added_json = o->added};
    e->step++;
    e->attempts = 0;
    e->first_attempt_us = 0;
    e->retry_since_us = 0;
    e->members_done = 0;
    json_decref(e->states); /* a step's state ends with the step */
    e->states = NULL;
    if ((size_t)e->step >= rt->n_steps) {
        settle_into(h, e, 1);
        return;
    }
    append_entry(&h->head, &h->tail, e);
    h->n++;
}

static void dead_letter(sb_router *r, entry *e, const char *reason, handoff *h)
{
    route_rt *rt = e->route;
    step_rt *s = &rt->steps[e->step];
    sb_log(s->members[0]->ins, SB_LOG_WARN, "route %s: event %s dead-lettered at step %d: %s", rt->conf->name,
           e->ev->id, e->step + 1, reason);
    sb_ledger_dead(r->ledger, e->id, e->step, reason);
    settle_into(h, e, 0);
}

/* The core gives up on e at step s (its step_timeout ran out, its retry
 * budget is spent, or another member of a fan-out FAILed it): members that
 * are not done and have abandon() get the event with its state, so that
 * they can cancel what they started (or stop waiting for it, as the pubsub
 * sink's ordering-key lanes do). Their results are ignored. The members in
 * `failed` get no abandon(): a plugin that answered FAIL knows and cleans
 * up itself. */
static void abandon_entry(sb_router *r, step_rt *s, entry *e, uint64_t failed)
{
    for (size_t m = 0; m < s->n; m++) {
        inst_rt *in = s->members[m];
        if (((e->members_done | failed) & (1ull << m)) || !in->ins->plugin->abandon || atomic_load(&in->broken))
            continue;
        sb_batch b;
        batch_init(&b, 1);
        b.evs[0] = e->ev;
        b.attempts[0] = e->attempts + 1;
        b.ents[0] = e;
        b.router = r;
        b.step = s;
        b.member = in->ins->name;
        b.state[0] = json_incref(json_object_get(e->states, b.member));
        pthread_rwlock_wrlock(&in->lock);
        in->ins->plugin->abandon(in->ins->self, &b);
        pthread_rwlock_unlock(&in->lock);
        sb_event_discard_added(e->ev);
        batch_fini(&b);
    }
}

void sb_step_abandon_offline(sb_instance *ins, sb_event *ev, json_t *state)
{
    if (!ins->plugin->abandon)
        return;
    sb_batch b;
    batch_init(&b, 1);
    b.evs[0] = ev;
    b.attempts[0] = 1;
    b.member = ins->name;
    b.state[0] = json_incref(state);
    ins->plugin->abandon(ins->self, &b);
    batch_fini(&b);
}

/* WAIT: look again after the delay the members asked for. A WAIT shows the
 * far side is healthy, so the retry budget starts afresh; the wait is
 * bounded by the step_timeout instead (checked by settle_attempt). */
static void schedule_wait(sb_router *r, step_rt *s, entry *e, const outcome *o, int64_t now, handoff *h)
{
    e->attempts = 0;
    e->retry_since_us = now;
    int64_t delay = o->wait_ms > 0 ? o->wait_ms : 1;
    int64_t left_ms = (e->first_attempt_us + s->timeout_ms * 1000 - now) / 1000;
    if (delay > left_ms)
        delay = left_ms > 0 ? left_ms : 1; /* the last look comes when the step_timeout runs out */
    atomic_fetch_add(&e->route->n_waits, 1);
    sb_ledger_retry(r->ledger, e->id, e->step, 0, now + delay * 1000, reason_of(o));
    if (sb_log_enabled(SB_LOG_DEBUG))
        sb_log(NULL, SB_LOG_DEBUG, "route %s: event %s step %d looks again in %lldms (%s)", e->route->conf->name,
               e->ev->id, e->step + 1, (long long)delay, reason_of(o));
    time_entry(h, e, delay);
}

/* RETRY on a timer: the batch's charged retries wait one delay
 * (h->retry_delay_ms). Drawn per event, the jitter scattered a partly
 * failed batch into events coming back one at a time, each a request of
 * its own, and a Pub/Sub ordering key then published one message per
 * retry (its lane lets only its head go). Spreading the load is the
 * circuit's job when the far side is down, and the jitter's across
 * batches. FATAL alone waits `initial`; a Retry-After, at least that. */
static void schedule_retry(sb_router *r, step_rt *s, entry *e, const outcome *o, int64_t now, handoff *h)
{
    int64_t delay = o->charged ? h->retry_delay_ms : s->retry.initial_ms;
    if (o->retry_after_ms > delay)
        delay = o->retry_after_ms;
    sb_ledger_retry(r->ledger, e->id, e->step, e->attempts, now + delay * 1000, reason_of(o));
    if (sb_log_enabled(SB_LOG_DEBUG))
        sb_log(NULL, SB_LOG_DEBUG, "route %s: event %s step %d retry in %lldms (%s)", e->route->conf->name, e->ev->id,
               e->step + 1, (long long)delay, reason_of(o));
    time_entry(h, e, delay);
}

/* Settle what a batch's results left for a timer (settle_attempt() marked
 * them), after the others: the retries' one delay is drawn for the
 * entries that are retried, not for those dead-lettered meanwhile. */
static void schedule_timers(sb_router *r, step_rt *s, entry **es, const outcome *outs, size_t n, handoff *h)
{
    if (!h->n_to_time) /* the usual batch: no pass over it */
        return;
    h->retry_delay_ms = h->most_attempts ? backoff_ms(&s->retry, h->most_attempts) : 0;
    int64_t now = sb_now_us();
    h->timed_from_mono = sb_mono_us();
    for (size_t i = 0; i < n; i++) {
        if (outs[i].timer == TIMER_WAIT)
            schedule_wait(r, s, es[i], &outs[i], now, h);
        else if (outs[i].timer == TIMER_RETRY)
            schedule_retry(r, s, es[i], &outs[i], now, h);
    }
    sb_retry_schedule_list(r, h->thead);
}

static void settle_attempt(sb_router *r, step_rt *s, entry *e, outcome *o, handoff *h)
{
    if (e->members_done == ((s->n == 64) ? ~0ull : ((1ull << s->n) - 1))) {
        advance(s, e, o, h);
        return;
    }
    if (o->failed_members) {
        if (s->n > 1) /* a fan-out: the members that did not fail it may have work to drop */
            abandon_entry(r, s, e, o->failed_members);
        dead_letter(r, e, reason_of(o), h);
        return;
    }
    int64_t now = sb_now_us();
    if (now - e->first_attempt_us >= s->timeout_ms * 1000) {
        char why[700];
        snprintf(why, sizeof why, "step_timeout reached after %llds: %s",
                 (long long)((now - e->first_attempt_us) / 1000000), reason_of(o));
        abandon_entry(r, s, e, 0);
        dead_letter(r, e, why, h);
        return;
    }
    if (!o->retry) {
        o->timer = TIMER_WAIT;
        h->n_to_time++;
        return;
    }
    if (o->charged)
        e->attempts++;
    if (o->charged && (e->attempts >= s->retry.max_attempts || now - e->retry_since_us >= s->retry.max_time_ms * 1000)) {
        char why[700];
        snprintf(why, sizeof why, "retry budget exhausted after %d attempts over %llds: %s", e->attempts,
                 (long long)((now - e->retry_since_us) / 1000000), reason_of(o));
        abandon_entry(r, s, e, 0); /* the core gives up: remote work left open would be orphaned */
        dead_letter(r, e, why, h);
        return;
    }
    atomic_fetch_add(&e->route->n_retried, 1);
    if (h->hold) {
        /* The step is failing, not this event: it waits with the others
         * for the circuit's probe instead of a timer of its own. */
        sb_ledger_retry(r->ledger, e->id, e->step, e->attempts, now + h->hold_delay_ms * 1000, reason_of(o));
        if (sb_log_enabled(SB_LOG_DEBUG))
            sb_log(NULL, SB_LOG_DEBUG, "route %s: event %s step %d held for the step's next probe in %lldms (%s)",
                   e->route->conf->name, e->ev->id, e->step + 1, (long long)h->hold_delay_ms, reason_of(o));
        append_entry(&h->hhead, &h->htail, e);
        h->hn++;
        return;
    }
    o->timer = TIMER_RETRY;
    h->n_to_time++;
    if (o->charged && e->attempts > h->most_attempts)
        h->most_attempts = e->attempts;
}

/* Record member m's result for entry e; fan-out members worked on a copy
 * whose added fields are merged into the entry's event. A fan-out member's
 * completion is recorded at once (a retry of the step skips it); a single
 * member's goes to the ledger with its step's (advance). */
static void take_result(sb_router *r, step_rt *s, size_t m, entry *e, sb_event *seen, sb_result res,
                        const char *reason, int64_t retry_after, json_t *state, int state_set, int state_dirty,
                        outcome *o)
{
    const char *name = s->members[m]->ins->name;
    /* The state goes to the ledger before the result it comes with, so a
     * restart after the result was recorded also finds the state. OK ends
     * the step, and what it kept with it. */
    if (state_dirty && res != SB_RESULT_OK) {
        char *txt = state_text(state);
        sb_ledger_step_state(r->ledger, e->id, e->step, name, txt, 0, NULL, 0);
        free(txt);
    }
    if (state_set && res != SB_RESULT_OK) {
        if (!e->states)
            e->states = json_object();
        if (state)
            json_object_set(e->states, name, state);
        else
            json_object_del(e->states, name);
    }
    switch (res) {
    case SB_RESULT_OK: {
        char *added_txt = sb_event_take_added(seen);
        if (seen != e->ev && added_txt) { /* a fan-out member's copy: its fields join the entry's event */
            json_t *added = json_loads(added_txt, JSON_ALLOW_NUL, NULL);
            if (added)
                sb_event_merge_fields(e->ev, added);
            else /* out of memory: the member's work is done all the same, not redone */
                sb_log(s->members[m]->ins, SB_LOG_ERROR,
                       "event %s: the fields this step added could not be merged; later steps will not see them",
                       e->ev->id);
            json_decref(added);
        }
        if (s->n == 1) {
            o->added = added_txt;
        } else {
            sb_ledger_member_done(r->ledger, e->id, e->step, name, e->attempts + 1, added_txt);
            free(added_txt);
        }
        e->members_done |= 1ull << m;
        return;
    }
    case SB_RESULT_RETRY:
        o->retry = o->charged = 1;
        if (retry_after > o->retry_after_ms)
            o->retry_after_ms = retry_after;
        note_reason(o, name, "retry", reason);
        break;
    case SB_RESULT_FATAL:
        o->retry = 1;
        note_reason(o, name, "instance failed", reason);
        break;
    case SB_RESULT_WAIT:
        o->wait = 1;
        if (!o->wait_ms || retry_after < o->wait_ms)
            o->wait_ms = retry_after;
        note_reason(o, name, "waiting", reason);
        break;
    case SB_RESULT_FAIL:
        o->failed_members |= 1ull << m;
        note_reason(o, name, "failed", reason);
        break;
    case SB_RESULT_UNSET:
    default:
        o->failed_members |= 1ull << m;
        note_reason(o, name, "failed", "the plugin set no result for this event");
        break;
    }
    sb_event_discard_added(seen);
}

/* Whether member call mc failed as a whole (RETRY or FATAL for every event
 * it was given), and its Retry-After pause, taken before its results are. */
static int member_failed_whole(member_call *mc, int64_t *retry_after)
{
    size_t bad = 0;
    for (size_t j = 0; j < mc->batch.n; j++) {
        sb_result res = mc->batch.res[j];
        if (res == SB_RESULT_RETRY || res == SB_RESULT_FATAL)
            bad++;
        if (res == SB_RESULT_RETRY && mc->batch.retry_after_ms[j] > *retry_after)
            *retry_after = mc->batch.retry_after_ms[j];
    }
    return mc->batch.n > 0 && bad == mc->batch.n;
}

/* A worker's buffers for its batches' outcomes and ledger records, kept
 * from batch to batch: made per batch, the outcomes of 1,000 events were
 * a 70 kB allocation whose free made glibc consolidate its small chunks
 * every time. */
typedef struct step_scratch {
    outcome *outs;
    sb_ledger_step *done;
} step_scratch;

static void run_step(sb_router *r, step_rt *s, entry **es, size_t n, worker_slot *slots, step_scratch *scratch,
                     int busy_slot, int probe)
{
    int64_t now = sb_now_us();
    for (size_t i = 0; i < n; i++) {
        if (!es[i]->first_attempt_us)
            es[i]->first_attempt_us = now;
        if (!es[i]->retry_since_us)
            es[i]->retry_since_us = es[i]->first_attempt_us;
    }

    member_call calls[SB_MAX_FANOUT];
    size_t ncalls = s->n;
    for (size_t m = 0; m < ncalls; m++) {
        member_call *mc = &calls[m];
        mc->in = s->members[m];
        size_t k = 0;
        mc->idx = sb_xcalloc(n, sizeof *mc->idx);
        for (size_t i = 0; i < n; i++)
            if (!(es[i]->members_done & (1ull << m)))
                mc->idx[k++] = i;
        batch_init(&mc->batch, k);
        mc->worker = &slots[m];
        mc->batch.router = r;
        mc->batch.step = s;
        mc->batch.member = mc->in->ins->name;
        mc->batch.busy_slot = busy_slot;
        for (size_t j = 0; j < k; j++) {
            entry *e = es[mc->idx[j]];
            mc->batch.evs[j] = s->n == 1 ? e->ev : sb_event_clone(e->ev);
            mc->batch.attempts[j] = e->attempts + 1;
            mc->batch.ents[j] = e;
            mc->batch.state[j] = json_incref(json_object_get(e->states, mc->batch.member));
        }
    }
    if (ncalls == 1) {
        if (calls[0].batch.n)
            call_member(&calls[0]);
    } else {
        pthread_t th[SB_MAX_FANOUT];
        int spawned[SB_MAX_FANOUT] = {0};
        for (size_t m = 1; m < ncalls; m++)
            if (calls[m].batch.n)
                spawned[m] = pthread_create(&th[m], NULL, call_member_thread, &calls[m]) == 0;
        for (size_t m = 0; m < ncalls; m++)
            if (calls[m].batch.n && m > 0 && !spawned[m])
                call_member(&calls[m]); /* could not spawn: run it here */
        if (calls[0].batch.n)
            call_member(&calls[0]);
        for (size_t m = 1; m < ncalls; m++)
            if (spawned[m])
                pthread_join(th[m], NULL);
    }

    outcome *outs = scratch->outs;
    memset(outs, 0, n * sizeof *outs);
    int failed = 0;
    int64_t retry_after = 0;
    for (size_t m = 0; m < ncalls; m++) {
        member_call *mc = &calls[m];
        int64_t member_ra = 0;
        failed |= member_failed_whole(mc, &member_ra);
        sb_instance_pause(mc->in, member_ra); /* Retry-After holds the whole instance back */
        if (member_ra > retry_after)
            retry_after = member_ra;
        for (size_t j = 0; j < mc->batch.n; j++) {
            entry *e = es[mc->idx[j]];
            take_result(r, s, m, e, mc->batch.evs[j], mc->batch.res[j], mc->batch.reason[j],
                        mc->batch.retry_after_ms[j], mc->batch.state[j], mc->batch.state_set[j],
                        mc->batch.state_dirty[j], &outs[mc->idx[j]]);
            if (s->n > 1)
                sb_event_free(mc->batch.evs[j]);
        }
        batch_fini(&mc->batch);
        free(mc->idx);
    }
    const char *why = NULL;
    int charged = 0;
    for (size_t i = 0; i < n && failed; i++) {
        if (outs[i].retry && !why)
            why = reason_of(&outs[i]);
        charged |= outs[i].charged;
    }
    handoff h = {.done = scratch->done, .hold = failed, .now_mono = sb_mono_us()};
    /* A batch that failed whole opens the step's circuit; one that did not
     * closes it. */
    h.hold_delay_ms = sb_circuit_result(s, probe, failed, charged, why);
    if (h.hold_delay_ms < retry_after)
        h.hold_delay_ms = retry_after;
    for (size_t i = 0; i < n; i++)
        settle_attempt(r, s, es[i], &outs[i], &h);
    schedule_timers(r, s, es, outs, n, &h);
    /* Before the entries move on, so that the next step's results are
     * queued after these. */
    sb_ledger_steps_done(r->ledger, h.done, h.n_done);
    sb_circuit_hold(s, h.hhead, h.htail, h.hn);
    for (size_t i = 0; i < n; i++) {
        free(outs[i].added);
        free(outs[i].reason);
    }
    if (h.n) {
        atomic_fetch_add(&r->work, (int64_t)h.n);
        sb_step_push_list(&s->route->steps[s->index + 1], h.head, h.tail, h.n);
    }
    if (h.released)
        sb_route_release(s->route, h.released, h.released_bytes);
}

/* Held entries whose time ran out while their step was failing: the same
 * budgets as after an attempt of their own (settle_attempt). */
static void expire_held(sb_router *r, step_rt *s, entry *list)
{
    char last[512];
    pthread_mutex_lock(&s->mu);
    snprintf(last, sizeof last, "%s", s->open_reason[0] ? s->open_reason : "the step was failing");
    pthread_mutex_unlock(&s->mu);
    handoff h = {.now_mono = sb_mono_us()};
    int64_t now = sb_now_us();
    while (list) {
        entry *e = list;
        list = e->next;
        char why[800];
        if (now - e->first_attempt_us >= s->timeout_ms * 1000) {
            snprintf(why, sizeof why, "step_timeout reached after %llds, held while the step was failing: %s",
                     (long long)((now - e->first_attempt_us) / 1000000), last);
            abandon_entry(r, s, e, 0);
        } else {
            snprintf(why, sizeof why,
                     "retry budget exhausted after %d attempts over %llds, held while the step was failing: %s",
                     e->attempts, (long long)((now - e->retry_since_us) / 1000000), last);
            abandon_entry(r, s, e, 0);
        }
        dead_letter(r, e, why, &h);
    }
    if (h.released)
        sb_route_release(s->route, h.released, h.released_bytes);
}

void *sb_step_worker(void *arg)
{
    step_rt *s = arg;
    sb_router *r = s->route->router;
    entry **batch = sb_xcalloc((size_t)s->batch_max, sizeof *batch);
    worker_slot *slots = sb_xcalloc(s->n, sizeof *slots);
    step_scratch scratch = {sb_xcalloc((size_t)s->batch_max, sizeof *scratch.outs),
                            sb_xcalloc((size_t)s->batch_max, sizeof *scratch.done)};
    char name[32]; /* the kernel keeps 15 characters */
    snprintf(name, sizeof name, "sb-step%d-%s", s->index + 1, s->route->conf->name);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        size_t n = 0;
        int probe = 0;
        entry *expired = NULL;
        if (sb_circuit_take(s, batch, &n, &probe, &expired) != 0)
            break;
        if (expired)
            expire_held(r, s, expired);
        if (!n)
            continue;
        int busy = sb_step_busy_begin(s);
        run_step(r, s, batch, n, slots, &scratch, busy, probe);
        sb_step_busy_end(s, busy);
        atomic_fetch_sub(&r->work, (int64_t)n);
    }
    for (size_t m = 0; m < s->n; m++) {
        if (!slots[m].made)
            continue;
        pthread_rwlock_wrlock(&s->members[m]->lock);
        worker_slot_fini(s->members[m], &slots[m]);
        pthread_rwlock_unlock(&s->members[m]->lock);
    }
    free(slots);
    free(scratch.outs);
    free(scratch.done);
    free(batch);
    return NULL;
}
