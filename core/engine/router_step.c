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
    int64_t *retry_after_ms;
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

static void batch_init(sb_batch *b, size_t n)
{
    b->n = n;
    b->evs = sb_xcalloc(n, sizeof *b->evs);
    b->attempts = sb_xcalloc(n, sizeof *b->attempts);
    b->res = sb_xcalloc(n, sizeof *b->res);
    b->reason = sb_xcalloc(n, sizeof *b->reason);
    b->retry_after_ms = sb_xcalloc(n, sizeof *b->retry_after_ms);
}

static void batch_fini(sb_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->reason[i]);
    free(b->evs);
    free(b->attempts);
    free(b->res);
    free(b->reason);
    free(b->retry_after_ms);
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
    sb_instance_stop(ins);
    if (ins->created)
        ins->plugin->destroy(ins->self);
    ins->created = 0;
    ins->self = NULL;
    if (sb_instance_create(ins, err, sizeof err) != 0 || sb_instance_start(ins, err, sizeof err) != 0) {
        sb_log(ins, SB_LOG_ERROR, "restart after a fatal error failed: %s", err);
        in->broken = 1;
        return;
    }
    sb_log(ins, SB_LOG_INFO, "restarted after a fatal error");
    in->broken = 0;
}

typedef struct member_call {
    inst_rt *in;
    sb_batch batch;
    size_t *idx; /* batch position -> entry index */
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
    int failed;       /* some member FAILed: dead-letter */
    int retry;        /* some member wants RETRY or FATAL */
    int charged;      /* a RETRY (not only FATAL): counts against the budget */
    int64_t retry_after_ms;
    char *added;      /* single-member step done: the fields it added (JSON text, owned), recorded with the step */
    char reason[512];
} outcome;

static void note_reason(outcome *o, const char *member, const char *what, const char *reason)
{
    if (o->reason[0])
        return;
    snprintf(o->reason, sizeof o->reason, "%s: %s%s%s", member, what, reason ? ": " : "", reason ? reason : "");
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
    int64_t released, released_bytes;
    sb_ledger_step *done; /* room for the whole batch */
    size_t n_done;
} handoff;

static void settle_into(handoff *h, entry *e, int done)
{
    h->released++;
    h->released_bytes += (int64_t)e->bytes;
    sb_entry_count_settled(e, done);
    sb_entry_free(e);
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
    e->members_done = 0;
    if ((size_t)e->step >= rt->n_steps) {
        settle_into(h, e, 1);
        return;
    }
    e->next = NULL;
    if (h->tail)
        h->tail->next = e;
    else
        h->head = e;
    h->tail = e;
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

static void settle_attempt(sb_router *r, step_rt *s, entry *e, outcome *o, handoff *h)
{
    if (e->members_done == ((s->n == 64) ? ~0ull : ((1ull << s->n) - 1))) {
        advance(s, e, o, h);
        return;
    }
    if (o->failed) {
        dead_letter(r, e, o->reason, h);
        return;
    }
    if (o->charged)
        e->attempts++;
    int64_t now = sb_now_us();
    if (o->charged && (e->attempts >= s->retry.max_attempts || now - e->first_attempt_us >= s->retry.max_time_ms * 1000)) {
        char why[700];
        snprintf(why, sizeof why, "retry budget exhausted after %d attempts over %llds: %s", e->attempts,
                 (long long)((now - e->first_attempt_us) / 1000000), o->reason);
        dead_letter(r, e, why, h);
        return;
    }
    int64_t delay = o->charged ? backoff_ms(&s->retry, e->attempts) : s->retry.initial_ms;
    if (o->retry_after_ms > delay)
        delay = o->retry_after_ms;
    atomic_fetch_add(&e->route->n_retried, 1);
    sb_ledger_retry(r->ledger, e->id, e->step, e->attempts, now + delay * 1000, o->reason);
    if (sb_log_enabled(SB_LOG_DEBUG))
        sb_log(NULL, SB_LOG_DEBUG, "route %s: event %s step %d retry in %lldms (%s)", e->route->conf->name, e->ev->id,
               e->step + 1, (long long)delay, o->reason);
    e->due_mono = sb_mono_us() + delay * 1000;
    sb_retry_schedule(r, e);
}

/* Record member m's result for entry e; fan-out members worked on a copy
 * whose added fields are merged into the entry's event. A fan-out member's
 * completion is recorded at once (a retry of the step skips it); a single
 * member's goes to the ledger with its step's (advance). */
static void take_result(sb_router *r, step_rt *s, size_t m, entry *e, sb_event *seen, sb_result res,
                        const char *reason, int64_t retry_after, outcome *o)
{
    const char *name = s->members[m]->ins->name;
    switch (res) {
    case SB_RESULT_OK: {
        json_t *added = sb_event_take_added(seen);
        sb_strbuf txt = {0};
        char *added_txt = added && sb_json_dump(&txt, added) == 0 ? txt.p : NULL;
        if (!added_txt)
            free(txt.p);
        if (added && !added_txt) /* out of memory: the member's work is done all the same, not redone */
            sb_log(s->members[m]->ins, SB_LOG_ERROR,
                   "event %s: the fields this step added could not be serialised for the run ledger; "
                   "if the event is resumed after a restart, later steps will not see them",
                   e->ev->id);
        if (seen != e->ev && added)
            sb_event_merge_fields(e->ev, added);
        json_decref(added);
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
    case SB_RESULT_FAIL:
        o->failed = 1;
        note_reason(o, name, "failed", reason);
        break;
    case SB_RESULT_UNSET:
    default:
        o->failed = 1;
        note_reason(o, name, "failed", "the plugin set no result for this event");
        break;
    }
    sb_event_discard_added(seen);
}

static void run_step(sb_router *r, step_rt *s, entry **es, size_t n)
{
    int64_t now = sb_now_us();
    for (size_t i = 0; i < n; i++)
        if (!es[i]->first_attempt_us)
            es[i]->first_attempt_us = now;

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
        for (size_t j = 0; j < k; j++) {
            entry *e = es[mc->idx[j]];
            mc->batch.evs[j] = s->n == 1 ? e->ev : sb_event_clone(e->ev);
            mc->batch.attempts[j] = e->attempts + 1;
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

    outcome *outs = sb_xcalloc(n, sizeof *outs);
    for (size_t m = 0; m < ncalls; m++) {
        member_call *mc = &calls[m];
        for (size_t j = 0; j < mc->batch.n; j++) {
            entry *e = es[mc->idx[j]];
            take_result(r, s, m, e, mc->batch.evs[j], mc->batch.res[j], mc->batch.reason[j],
                        mc->batch.retry_after_ms[j], &outs[mc->idx[j]]);
            if (s->n > 1)
                sb_event_free(mc->batch.evs[j]);
        }
        batch_fini(&mc->batch);
        free(mc->idx);
    }
    handoff h = {.done = sb_xcalloc(n, sizeof *h.done)};
    for (size_t i = 0; i < n; i++)
        settle_attempt(r, s, es[i], &outs[i], &h);
    /* Before the entries move on, so that the next step's results are
     * queued after these. */
    sb_ledger_steps_done(r->ledger, h.done, h.n_done);
    for (size_t i = 0; i < n; i++)
        free(outs[i].added);
    free(outs);
    free(h.done);
    if (h.n) {
        atomic_fetch_add(&r->work, (int64_t)h.n);
        sb_step_push_list(&s->route->steps[s->index + 1], h.head, h.tail, h.n);
    }
    if (h.released)
        sb_route_release(s->route, h.released, h.released_bytes);
}

void *sb_step_worker(void *arg)
{
    step_rt *s = arg;
    sb_router *r = s->route->router;
    entry **batch = sb_xcalloc((size_t)s->batch_max, sizeof *batch);
    char name[32]; /* the kernel keeps 15 characters */
    snprintf(name, sizeof name, "sb-step%d-%s", s->index + 1, s->route->conf->name);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head && !atomic_load(&r->workers_stop))
            pthread_cond_wait(&s->cv, &s->mu);
        if (atomic_load(&r->workers_stop)) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        size_t n = 0;
        while (s->head && n < (size_t)s->batch_max) {
            entry *e = s->head;
            s->head = e->next;
            batch[n++] = e;
        }
        if (!s->head)
            s->tail = NULL;
        s->queued -= n;
        pthread_mutex_unlock(&s->mu);

        int busy = sb_step_busy_begin(s);
        run_step(r, s, batch, n);
        sb_step_busy_end(s, busy);
        atomic_fetch_sub(&r->work, (int64_t)n);
    }
    free(batch);
    return NULL;
}
