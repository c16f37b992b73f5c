/* router_circuit.c - retries as a fleet: a step's circuit and the
 * instances' Retry-After pauses.
 *
 * When every event of a batch fails (RETRY or FATAL from a member for all
 * it was given), the far side is down, not one event bad: retrying each
 * event on its own timer would send a request per event. So the step's
 * circuit opens: its entries wait in `held`, one probe batch at a time goes
 * out at the retry pace (exponential, capped, with jitter), and the first
 * batch that does not fail closes the circuit and releases the held entries
 * into the queue, where workers take them in full batches. A Retry-After
 * pauses the instance: no step sends it a batch before then. */
#include "build_config.h"
#include "engine/router_internal.h"
#include "log/log_internal.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The longest pause one answer can ask for. A plugin's value is not bounded
 * by the SDK (the Google layer stops at a day), and held events must still
 * meet their deadlines: after an hour one probe asks again. */
#define PAUSE_MAX_MS 3600000LL

void sb_instance_pause(inst_rt *in, int64_t ms)
{
    if (ms <= 0)
        return;
    if (ms > PAUSE_MAX_MS)
        ms = PAUSE_MAX_MS;
    int64_t until = sb_mono_us() + ms * 1000, cur = atomic_load(&in->pause_until_mono);
    while (cur < until && !atomic_compare_exchange_weak(&in->pause_until_mono, &cur, until))
        ;
}

/* The latest pause of the step's members (0 if none). */
static int64_t paused_until(const step_rt *s)
{
    int64_t until = 0;
    for (size_t m = 0; m < s->n; m++) {
        int64_t p = atomic_load(&s->members[m]->pause_until_mono);
        if (p > until)
            until = p;
    }
    return until;
}

/* The delay before the next probe after `failures` failed batches: the
 * step's retry policy with "equal jitter", in [cap/2, cap], so that the
 * pace has a floor (full jitter, right for spreading single events, could
 * send probes back to back). */
static int64_t probe_delay_ms(const sb_retry_policy *p, int failures)
{
    double d = (double)p->initial_ms * pow(p->multiplier > 1.0 ? p->multiplier : 1.0, failures > 0 ? failures - 1 : 0);
    if (d > (double)p->max_delay_ms)
        d = (double)p->max_delay_ms;
    int64_t cap = (int64_t)d;
    return cap / 2 + (int64_t)sb_rand_below((uint64_t)(cap - cap / 2) + 1);
}

/* Queued entries go behind the held ones and leave router->work. Their
 * clocks start: the time budgets count the wait behind a failing step. */
static void queue_to_held(step_rt *s)
{
    if (!s->head)
        return;
    int64_t now = sb_now_us();
    for (entry *e = s->head; e; e = e->next) {
        if (!e->first_attempt_us)
            e->first_attempt_us = now;
        if (!e->retry_since_us)
            e->retry_since_us = e->first_attempt_us;
    }
    if (s->held_tail)
        s->held_tail->next = s->head;
    else
        s->held_head = s->head;
    s->held_tail = s->tail;
    s->held += s->queued;
    atomic_fetch_sub(&s->route->router->work, (int64_t)s->queued);
    s->head = s->tail = NULL;
    s->queued = 0;
}

/* Held entries go back to the head of the queue, in order. */
static void held_to_queue(step_rt *s)
{
    if (!s->held_head)
        return;
    s->held_tail->next = s->head;
    if (!s->head)
        s->tail = s->held_tail;
    s->head = s->held_head;
    s->queued += s->held;
    atomic_fetch_add(&s->route->router->work, (int64_t)s->held);
    s->held_head = s->held_tail = NULL;
    s->held = 0;
    pthread_cond_broadcast(&s->cv);
}

/* Detach the held entries whose step_timeout or retry time ran out. */
static entry *take_expired(step_rt *s)
{
    int64_t now = sb_now_us();
    entry *out = NULL, **link = &out, *prev = NULL;
    for (entry *e = s->held_head, *next; e; e = next) {
        next = e->next;
        if (now - e->first_attempt_us < s->timeout_ms * 1000 &&
            (!s->charged || now - e->retry_since_us < s->retry.max_time_ms * 1000)) {
            prev = e;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            s->held_head = next;
        if (s->held_tail == e)
            s->held_tail = prev;
        s->held--;
        e->next = NULL;
        *link = e;
        link = &e->next;
    }
    return out;
}

static void wait_us(step_rt *s, int64_t us)
{
    if (us > 1000000)
        us = 1000000;
    struct timespec ts;
    sb_deadline_in(CLOCK_REALTIME, us > 0 ? us : 1, &ts);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

int sb_circuit_take(step_rt *s, entry **batch, size_t *n, int *probe, entry **expired)
{
    sb_router *r = s->route->router;
    *n = 0;
    *probe = 0;
    *expired = NULL;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (atomic_load(&r->workers_stop)) {
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
        int64_t now = sb_mono_us(), until = paused_until(s);
        int stopping = atomic_load(&r->stopping);
        if (!s->open && until <= now) {
            /* Closed and not paused. What waited stays held once stopping:
             * it is pending in the ledger, and a drain must not wait for it. */
            if (!stopping)
                held_to_queue(s);
            if (s->head)
                break;
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        queue_to_held(s);
        if (!s->open) { /* paused by a Retry-After only */
            /* what waits still meets its deadline (step_timeout, max_time) */
            if ((*expired = take_expired(s)))
                break;
            wait_us(s, until - now);
            continue;
        }
        if (s->probing || !s->held || stopping) {
            /* The probe out will broadcast when it is back, a push signals */
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        int64_t due = s->probe_due_mono > until ? s->probe_due_mono : until;
        if (now < due) {
            if ((*expired = take_expired(s)))
                break;
            wait_us(s, due - now);
            continue;
        }
        *expired = take_expired(s);
        if (!s->held) {
            if (*expired)
                break;
            continue;
        }
        while (s->held_head && *n < (size_t)s->batch_max) {
            entry *e = s->held_head;
            s->held_head = e->next;
            batch[(*n)++] = e;
        }
        if (!s->held_head)
            s->held_tail = NULL;
        s->held -= *n;
        atomic_fetch_add(&r->work, (int64_t)*n);
        s->probing = 1;
        *probe = 1;
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (s->head) {
        while (s->head && *n < (size_t)s->batch_max) {
            entry *e = s->head;
            s->head = e->next;
            batch[(*n)++] = e;
        }
        if (!s->head)
            s->tail = NULL;
        s->queued -= *n;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int64_t sb_circuit_result(step_rt *s, int probe, int failed, int charged, const char *reason)
{
    char msg[900] = "";
    sb_log_level level = SB_LOG_DEBUG;
    int64_t delay = 0, now = sb_mono_us();
    pthread_mutex_lock(&s->mu);
    if (probe)
        s->probing = 0;
    if (failed) {
        int opening = !s->open;
        if (opening || probe) {
            s->failures++;
            delay = probe_delay_ms(&s->retry, s->failures);
            s->probe_due_mono = now + delay * 1000;
        } else {
            delay = s->probe_due_mono > now ? (s->probe_due_mono - now) / 1000 : 0;
        }
        snprintf(s->open_reason, sizeof s->open_reason, "%s", reason ? reason : "");
        s->charged = charged;
        if (opening) {
            s->open = 1;
            s->opened_mono = now;
            atomic_fetch_add(&s->route->n_circuit_opens, 1);
            level = SB_LOG_WARN;
            snprintf(msg, sizeof msg,
                     "route %s step %d: a whole batch failed (%s); holding the step's events and sending one batch "
                     "at a time, the next in %lld ms",
                     s->route->conf->name, s->index + 1, s->open_reason, (long long)delay);
        } else if (probe) {
            snprintf(msg, sizeof msg, "route %s step %d: probe %d failed (%s); %zu events held, next probe in %lld ms",
                     s->route->conf->name, s->index + 1, s->failures - 1, s->open_reason, s->held, (long long)delay);
        }
    } else if (s->open) {
        level = SB_LOG_INFO;
        snprintf(msg, sizeof msg,
                 "route %s step %d: a batch went through after %.1f s and %d failed batches; releasing %zu held events",
                 s->route->conf->name, s->index + 1, (double)(now - s->opened_mono) / 1e6, s->failures, s->held);
        s->open = 0;
        s->failures = 0;
        s->open_reason[0] = '\0';
        if (!atomic_load(&s->route->router->stopping))
            held_to_queue(s);
    }
    /* Waiting workers look again: at a new probe time, or at the queue. */
    if (probe || msg[0])
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (msg[0] && (level != SB_LOG_DEBUG || sb_log_enabled(SB_LOG_DEBUG)))
        sb_log(s->members[0]->ins, level, "%s", msg);
    return delay;
}

void sb_circuit_hold(step_rt *s, entry *head, entry *tail, size_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->open) {
        tail->next = s->held_head;
        if (!s->held_head)
            s->held_tail = tail;
        s->held_head = head;
        s->held += n;
    } else {
        /* Another batch went through meanwhile: they go again at once. */
        tail->next = s->head;
        if (!s->head)
            s->tail = tail;
        s->head = head;
        s->queued += n;
        atomic_fetch_add(&s->route->router->work, (int64_t)n);
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}
