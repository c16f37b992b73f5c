/* router_queue.c - what both halves of the router hand entries through:
 * a route's in-flight budget, the entries themselves, the step queues and
 * the retry heap with its timer thread. The source half (router_source.c)
 * and the step half (router_step.c) both call this and never each other. */
#include "build_config.h"
#include "engine/router_internal.h"
#include "util/util.h"

#include <stdlib.h>
#include <time.h>

/* ---- route budget (backpressure) ------------------------------------------ */

int sb_route_reserve(route_rt *rt, int64_t n, int64_t bytes, int wait)
{
    sb_router *r = rt->router;
    pthread_mutex_lock(&rt->mu);
    /* An empty route always admits, so a batch larger than the budget
     * cannot deadlock. */
    while (wait && rt->inflight > 0 &&
           (rt->inflight + n > rt->max_inflight || rt->inflight_bytes + bytes > rt->max_bytes)) {
        if (atomic_load(&r->stopping)) {
            pthread_mutex_unlock(&rt->mu);
            return -1;
        }
        struct timespec ts;
        sb_deadline_in(CLOCK_REALTIME, 100000, &ts); /* re-check `stopping` at least this often */
        pthread_cond_timedwait(&rt->cv_space, &rt->mu, &ts);
    }
    rt->inflight += n;
    rt->inflight_bytes += bytes;
    pthread_mutex_unlock(&rt->mu);
    return 0;
}

void sb_route_release(route_rt *rt, int64_t n, int64_t bytes)
{
    pthread_mutex_lock(&rt->mu);
    rt->inflight -= n;
    rt->inflight_bytes -= bytes;
    pthread_cond_broadcast(&rt->cv_space);
    pthread_mutex_unlock(&rt->mu);
}

/* ---- entries ------------------------------------------------------------ */

void sb_entry_track(entry *e)
{
    e->fresh_slot = e->route->freshness ? sb_freshness_track(e->route->freshness, e->id, e->ev, &e->finished_us) : -1;
}

void sb_entry_free(entry *e)
{
    if (!e)
        return;
    if (e->fresh_slot >= 0)
        sb_freshness_forget(e->route->freshness, e->fresh_slot, e->id, e->finished_us);
    sb_event_free(e->ev);
    json_decref(e->states);
    free(e);
}

void sb_entry_settle(entry *e, int done)
{
    route_rt *rt = e->route;
    int64_t bytes = (int64_t)e->bytes;
    sb_entry_count_settled(e, done, sb_mono_us());
    sb_entry_free(e);
    sb_route_release(rt, 1, bytes);
}

void sb_entry_count_settled(entry *e, int done, int64_t now_mono)
{
    route_rt *rt = e->route;
    if (done)
        atomic_fetch_add(&rt->n_done, 1);
    else
        atomic_fetch_add(&rt->n_dead, 1);
    sb_hist_add(&rt->latency, now_mono - e->admitted_mono);
    if (e->fresh_slot >= 0) {
        sb_freshness_settle(rt->freshness, e->fresh_slot, e->id, e->finished_us, done, sb_now_us());
        e->fresh_slot = -1;
    }
}

void sb_step_push_list(step_rt *s, entry *head, entry *tail, size_t n)
{
    if (!n)
        return;
    tail->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = head;
    else
        s->head = head;
    s->tail = tail;
    s->queued += n;
    /* more than a batch: wake another worker for the rest */
    if (n > (size_t)s->batch_max)
        pthread_cond_broadcast(&s->cv);
    else
        pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sb_step_push(step_rt *s, entry *e)
{
    sb_step_push_list(s, e, e, 1);
}

/* ---- retry heap (min-heap on due_mono) ------------------------------------ */

static void heap_push(sb_router *r, entry *e)
{
    if (r->heap_n == r->heap_cap) {
        r->heap_cap = r->heap_cap ? r->heap_cap * 2 : 64;
        r->heap = sb_xrealloc(r->heap, r->heap_cap * sizeof *r->heap);
    }
    size_t i = r->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (r->heap[p]->due_mono <= e->due_mono)
            break;
        r->heap[i] = r->heap[p];
        i = p;
    }
    r->heap[i] = e;
}

static entry *heap_pop(sb_router *r)
{
    entry *top = r->heap[0], *last = r->heap[--r->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->heap_n)
            break;
        if (c + 1 < r->heap_n && r->heap[c + 1]->due_mono < r->heap[c]->due_mono)
            c++;
        if (last->due_mono <= r->heap[c]->due_mono)
            break;
        r->heap[i] = r->heap[c];
        i = c;
    }
    if (r->heap_n)
        r->heap[i] = last;
    return top;
}

void sb_retry_schedule(sb_router *r, entry *e)
{
    pthread_mutex_lock(&r->tmu);
    heap_push(r, e);
    pthread_cond_signal(&r->tcv);
    pthread_mutex_unlock(&r->tmu);
}

void sb_retry_schedule_list(sb_router *r, entry *head)
{
    if (!head)
        return;
    pthread_mutex_lock(&r->tmu);
    for (entry *e = head, *next; e; e = next) {
        next = e->next;
        heap_push(r, e);
    }
    pthread_cond_signal(&r->tcv);
    pthread_mutex_unlock(&r->tmu);
}

/* How far ahead the retry timer gathers what is due, and how much at once. */
#define RETRY_GATHER_US 10000
#define RETRY_GATHER_MAX 4096

/* Push a list of entries to their steps, each run of one step's entries
 * as one list. */
static void push_runs(entry *e)
{
    while (e) {
        step_rt *s = &e->route->steps[e->step];
        entry *tail = e;
        size_t n = 1;
        while (tail->next && &tail->next->route->steps[tail->next->step] == s) {
            tail = tail->next;
            n++;
        }
        entry *next = tail->next;
        sb_step_push_list(s, e, tail, n);
        e = next;
    }
}

void *sb_retry_timer(void *arg)
{
    sb_router *r = arg;
    pthread_setname_np(pthread_self(), "sb-retry");
    pthread_mutex_lock(&r->tmu);
    while (!atomic_load(&r->workers_stop)) {
        int64_t now = sb_mono_us();
        if (r->heap_n && r->heap[0]->due_mono <= now) {
            /* What is due goes back at once, in due order, a step's run of
             * entries as one list: a worker then takes a batch's retries
             * as one batch again, not the first of them alone. Entries of
             * one batch are due a microsecond apart (router_step.c), so a
             * few milliseconds early is taken too. */
            entry *head = NULL, **link = &head;
            size_t n = 0;
            while (r->heap_n && r->heap[0]->due_mono <= now + RETRY_GATHER_US && n < RETRY_GATHER_MAX) {
                entry *e = heap_pop(r);
                *link = e;
                link = &e->next;
                n++;
            }
            *link = NULL;
            pthread_mutex_unlock(&r->tmu);
            atomic_fetch_add(&r->work, (int64_t)n);
            push_runs(head);
            pthread_mutex_lock(&r->tmu);
            continue;
        }
        int64_t wait_us = r->heap_n ? r->heap[0]->due_mono - now : 1000000;
        if (wait_us > 1000000)
            wait_us = 1000000;
        struct timespec ts;
        sb_deadline_in(CLOCK_REALTIME, wait_us, &ts);
        pthread_cond_timedwait(&r->tcv, &r->tmu, &ts);
    }
    pthread_mutex_unlock(&r->tmu);
    return NULL;
}
