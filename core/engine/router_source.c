/* router_source.c - source threads, admission into the ledger and routes,
 * and resumption of pending entries after a restart. */
#include "build_config.h"
#include "log/log_internal.h"
#include "engine/router_internal.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- source API --------------------------------------------------------- */

int sb_source_stopping(sb_source_ctx *ctx) { return atomic_load(&ctx->src->router->stopping); }
const char *sb_source_checkpoint(sb_source_ctx *ctx) { return ctx->src->checkpoint; }

int sb_source_wait(sb_source_ctx *ctx, int ms)
{
    sb_router *r = ctx->src->router;
    struct timespec ts;
    sb_deadline_in(CLOCK_REALTIME, (int64_t)ms * 1000, &ts);
    pthread_mutex_lock(&r->stop_mu);
    while (!atomic_load(&r->stopping))
        if (pthread_cond_timedwait(&r->stop_cv, &r->stop_mu, &ts) != 0)
            break;
    pthread_mutex_unlock(&r->stop_mu);
    return atomic_load(&r->stopping);
}

typedef struct pair {
    size_t ev;        /* event index */
    route_rt *route;
} pair;

struct prepared {
    prepared *next;
    sb_event **events;     /* owned; NULL once handed to an entry */
    size_t n;
    pair *pairs;
    size_t np;
    char **payloads;       /* per event, in one of `blocks`; NULL = matched no route */
    size_t *plen;          /* their lengths: the bytes charged to route budgets */
    /* The payloads, a batch's in one buffer (one per batch merged in): an
     * allocation and a free per event were a visible share of the source's
     * and the admission thread's time. Owned. */
    char **blocks;
    size_t nblocks;
    sb_ledger_new *news;
    int64_t *res_n, *res_b;/* reservations per route of the source */
    char *checkpoint;
    int64_t admitted_mono;
};

static void free_events(sb_event **events, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_event_free(events[i]);
}

static void prepared_free(prepared *p)
{
    free_events(p->events, p->n);
    for (size_t i = 0; i < p->nblocks; i++)
        free(p->blocks[i]);
    free(p->blocks);
    free(p->events);
    free(p->payloads);
    free(p->plen);
    free(p->pairs);
    free(p->news);
    free(p->res_n);
    free(p->res_b);
    free(p->checkpoint);
    free(p);
}

static void release_reservations(source_rt *src, prepared *p)
{
    for (size_t j = 0; j < src->n_routes; j++)
        if (p->res_n[j])
            sb_route_release(src->routes[j], p->res_n[j], p->res_b[j]);
}

/* The fields of each event that matched a route, all in one buffer (sized
 * from their hints up front, as growing it copies them again; it still
 * grows when a hint falls short), a NUL after each: the ledger keeps them
 * as they are and the rest of the payload in the entry's row
 * (sb_ledger_new.fields_only). -1 if one cannot be written as JSON. */
static int serialise(source_rt *src, prepared *p)
{
    size_t *at = sb_xmalloc((p->n ? p->n : 1) * sizeof *at); /* each payload's offset; SIZE_MAX: none */
    for (size_t i = 0; i < p->n; i++)
        at[i] = SIZE_MAX;
    sb_strbuf b = {0};
    for (size_t k = 0; k < p->np; k++) {
        size_t i = p->pairs[k].ev;
        if (at[i] == SIZE_MAX) {
            at[i] = 0;
            b.cap += sb_event_fields_size_hint(p->events[i]) + 1;
        }
    }
    b.p = sb_xmalloc(b.cap ? b.cap : 1);
    b.p[0] = '\0';
    p->blocks = sb_xmalloc(sizeof *p->blocks);
    int rc = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (at[i] == SIZE_MAX)
            continue;
        at[i] = b.len;
        if (sb_event_append_fields(p->events[i], &b) != 0) {
            sb_log(src->inst->ins, SB_LOG_ERROR, "event %s cannot be serialised; batch refused", p->events[i]->id);
            rc = -1;
            break;
        }
        p->plen[i] = b.len - at[i];
        sb_strbuf_add(&b, "", 1); /* the NUL that ends it */
    }
    for (size_t i = 0; rc == 0 && i < p->n; i++)
        if (at[i] != SIZE_MAX)
            p->payloads[i] = b.p + at[i];
    p->blocks[p->nblocks++] = b.p; /* freed with p */
    free(at);
    return rc;
}

/* On the source's thread: match, serialise, reserve route budget (blocking:
 * backpressure). Takes the events; NULL if stopping or on failure. */
static prepared *prepare(source_rt *src, sb_event **events, size_t n, const char *checkpoint)
{
    sb_router *r = src->router;
    prepared *p = sb_xcalloc(1, sizeof *p);
    size_t nr = src->n_routes ? src->n_routes : 1;
    p->n = n;
    p->events = sb_xmalloc((n ? n : 1) * sizeof *p->events);
    memcpy(p->events, events, n * sizeof *events);
    p->pairs = sb_xcalloc((n ? n : 1) * nr, sizeof *p->pairs);
    p->payloads = sb_xcalloc(n ? n : 1, sizeof *p->payloads);
    p->plen = sb_xcalloc(n ? n : 1, sizeof *p->plen);
    p->res_n = sb_xcalloc(nr, sizeof *p->res_n);
    p->res_b = sb_xcalloc(nr, sizeof *p->res_b);
    p->checkpoint = sb_strdup(checkpoint);
    p->admitted_mono = sb_mono_us();
    if (atomic_load(&r->stopping))
        goto fail;

    int64_t now = sb_now_us();
    for (size_t i = 0; i < n; i++) {
        sb_event *ev = p->events[i];
        sb_event_set_source(ev, src->inst->ins->name);
        if (!ev->received_us)
            ev->received_us = now;
    }
    /* Route by route, so that each route's entries of a batch get
     * consecutive ledger ids: the ledger then writes them 32 rows of one
     * route to a statement and settles them as one range (ledger.h), where
     * a source feeding two routes used to interleave their ids. Each
     * route's entries stay in event order. */
    for (size_t j = 0; j < src->n_routes; j++)
        for (size_t i = 0; i < n; i++)
            if (!src->routes[j]->match || sb_match_eval(src->routes[j]->match, p->events[i]))
                p->pairs[p->np++] = (pair){.ev = i, .route = src->routes[j]};
    atomic_fetch_add(&src->emitted, n);

    if (serialise(src, p) != 0)
        goto fail;
    p->news = sb_xcalloc(p->np ? p->np : 1, sizeof *p->news);
    for (size_t k = 0; k < p->np; k++) {
        size_t i = p->pairs[k].ev;
        p->news[k] = (sb_ledger_new){.event_id = p->events[i]->id,
                                     .route = p->pairs[k].route->conf->name,
                                     .source = src->inst->ins->name,
                                     .payload = p->payloads[i],
                                     .payload_len = p->plen[i],
                                     .fields_only = 1,
                                     .received_us = p->events[i]->received_us};
        for (size_t j = 0; j < src->n_routes; j++)
            if (src->routes[j] == p->pairs[k].route) {
                p->res_n[j]++;
                p->res_b[j] += (int64_t)p->plen[i];
            }
    }
    size_t reserved = 0;
    for (; reserved < src->n_routes; reserved++)
        if (p->res_n[reserved] &&
            sb_route_reserve(src->routes[reserved], p->res_n[reserved], p->res_b[reserved], 1) != 0)
            break;
    if (reserved < src->n_routes) {
        for (size_t j = 0; j < reserved; j++)
            if (p->res_n[j])
                sb_route_release(src->routes[j], p->res_n[j], p->res_b[j]);
        goto fail;
    }
    return p;
fail:
    prepared_free(p);
    return NULL;
}

/* Commit a prepared batch to the ledger, then hand each new entry to its
 * route's first step. Frees p. */
static int commit_and_route(source_rt *src, prepared *p)
{
    sb_router *r = src->router;
    char err[1024];
    if (sb_ledger_accept(r->ledger, src->inst->ins->name, p->checkpoint, p->news, p->np, err, sizeof err) != 0) {
        sb_log(src->inst->ins, SB_LOG_ERROR, "run ledger refused %zu events: %s", p->n, err);
        release_reservations(src, p);
        prepared_free(p);
        return -1;
    }
    if (p->checkpoint) {
        pthread_mutex_lock(&src->amu);
        free(src->checkpoint);
        src->checkpoint = p->checkpoint;
        p->checkpoint = NULL;
        pthread_mutex_unlock(&src->amu);
    }
    /* the last accepted entry of an event takes the event, earlier ones a
     * copy; entries go to each route's first step as one list per route */
    entry **heads = sb_xcalloc(src->n_routes ? src->n_routes : 1, 2 * sizeof *heads);
    size_t *counts = sb_xcalloc(src->n_routes ? src->n_routes : 1, sizeof *counts);
    size_t *last = sb_xcalloc(p->n ? p->n : 1, sizeof *last); /* pair index + 1 */
    for (size_t k = 0; k < p->np; k++)
        if (!p->news[k].duplicate)
            last[p->pairs[k].ev] = k + 1;
    for (size_t k = 0; k < p->np; k++) {
        route_rt *rt = p->pairs[k].route;
        size_t i = p->pairs[k].ev;
        size_t bytes = p->plen[i];
        atomic_fetch_add(&rt->n_in, 1);
        if (p->news[k].duplicate) {
            atomic_fetch_add(&rt->n_dup, 1);
            sb_route_release(rt, 1, (int64_t)bytes);
            continue;
        }
        entry *e = sb_xcalloc(1, sizeof *e);
        e->route = rt;
        e->id = p->news[k].entry_id;
        e->bytes = bytes;
        e->admitted_mono = p->admitted_mono;
        if (last[i] == k + 1) {
            e->ev = p->events[i];
            p->events[i] = NULL;
        } else {
            e->ev = sb_event_clone(p->events[i]);
        }
        sb_entry_track(e);
        size_t j = 0;
        while (src->routes[j] != rt)
            j++;
        if (heads[2 * j + 1])
            heads[2 * j + 1]->next = e;
        else
            heads[2 * j] = e;
        heads[2 * j + 1] = e;
        counts[j]++;
    }
    for (size_t j = 0; j < src->n_routes; j++)
        if (counts[j]) {
            atomic_fetch_add(&r->work, (int64_t)counts[j]);
            sb_step_push_list(&src->routes[j]->steps[0], heads[2 * j], heads[2 * j + 1], counts[j]);
        }
    free(heads);
    free(counts);
    free(last);
    for (size_t i = 0; i < p->n; i++) {
        if (p->payloads[i])
            continue; /* serialised = matched at least one route */
        atomic_fetch_add(&src->unrouted, 1);
        if (sb_log_enabled(SB_LOG_DEBUG))
            sb_log(src->inst->ins, SB_LOG_DEBUG, "event %s matched no route", p->events[i]->id);
    }
    prepared_free(p);
    return 0;
}

int sb_source_await(sb_source_ctx *ctx, size_t max_uncommitted)
{
    source_rt *src = ctx->src;
    pthread_mutex_lock(&src->amu);
    while (src->uncommitted > max_uncommitted)
        pthread_cond_wait(&src->acv, &src->amu);
    int rc = src->adm_failed ? -1 : 0;
    pthread_mutex_unlock(&src->amu);
    return rc;
}

int sb_source_flush(sb_source_ctx *ctx) { return sb_source_await(ctx, 0); }

int sb_source_emit(sb_source_ctx *ctx, sb_event **events, size_t n, const char *checkpoint)
{
    if (sb_source_flush(ctx) != 0) { /* keep call order with async batches */
        free_events(events, n);
        return -1;
    }
    prepared *p = prepare(ctx->src, events, n, checkpoint);
    return p ? commit_and_route(ctx->src, p) : -1;
}

int sb_source_dead_letter(sb_source_ctx *ctx, sb_event *ev, const char *reason)
{
    source_rt *src = ctx->src;
    sb_router *r = src->router;
    if (sb_source_flush(ctx) != 0 || atomic_load(&r->stopping) || !reason || !*reason) {
        sb_event_free(ev);
        return -1;
    }
    sb_event_set_source(ev, src->inst->ins->name);
    if (!ev->received_us)
        ev->received_us = sb_now_us();
    char *payload = sb_event_to_payload(ev, NULL);
    size_t nr = src->n_routes;
    sb_ledger_new *news = sb_xcalloc(nr ? nr : 1, sizeof *news);
    for (size_t j = 0; j < nr; j++)
        news[j] = (sb_ledger_new){.event_id = ev->id, .route = src->routes[j]->conf->name,
                                  .source = src->inst->ins->name, .payload = payload,
                                  .received_us = ev->received_us, .dead_reason = reason};
    char err[1024];
    int rc = -1;
    if (!payload)
        sb_log(src->inst->ins, SB_LOG_ERROR, "event %s cannot be serialised; not dead-lettered", ev->id);
    else if (sb_ledger_accept(r->ledger, src->inst->ins->name, NULL, news, nr, err, sizeof err) != 0)
        sb_log(src->inst->ins, SB_LOG_ERROR, "run ledger refused dead letter %s: %s", ev->id, err);
    else
        rc = 0;
    for (size_t j = 0; rc == 0 && j < nr; j++) {
        atomic_fetch_add(&src->routes[j]->n_in, 1);
        if (news[j].duplicate) {
            atomic_fetch_add(&src->routes[j]->n_dup, 1);
            continue;
        }
        atomic_fetch_add(&src->routes[j]->n_dead, 1);
        sb_log(src->inst->ins, SB_LOG_WARN, "event %s dead-lettered on route %s: %s", ev->id,
               src->routes[j]->conf->name, reason);
    }
    free(news);
    free(payload);
    sb_event_free(ev);
    return rc;
}

int sb_source_emit_async(sb_source_ctx *ctx, sb_event **events, size_t n, const char *checkpoint)
{
    source_rt *src = ctx->src;
    pthread_mutex_lock(&src->amu);
    int failed = src->adm_failed;
    pthread_mutex_unlock(&src->amu);
    if (failed) {
        free_events(events, n);
        return -1;
    }
    prepared *p = prepare(src, events, n, checkpoint);
    if (!p)
        return -1;
    pthread_mutex_lock(&src->amu);
    while (src->qlen >= 2)
        pthread_cond_wait(&src->acv, &src->amu);
    if (src->qtail)
        src->qtail->next = p;
    else
        src->qhead = p;
    src->qtail = p;
    src->qlen++;
    src->uncommitted++;
    pthread_cond_broadcast(&src->acv);
    pthread_mutex_unlock(&src->amu);
    return 0;
}

/* Append q's batch to p's (q's events after p's) and free q: the admission
 * thread commits batches that queued up behind a commit in one ledger
 * transaction. */
static void prepared_merge(source_rt *src, prepared *p, prepared *q)
{
    size_t n = p->n + q->n, np = p->np + q->np;
    p->events = sb_xrealloc(p->events, (n ? n : 1) * sizeof *p->events);
    p->payloads = sb_xrealloc(p->payloads, (n ? n : 1) * sizeof *p->payloads);
    p->plen = sb_xrealloc(p->plen, (n ? n : 1) * sizeof *p->plen);
    p->pairs = sb_xrealloc(p->pairs, (np ? np : 1) * sizeof *p->pairs);
    p->news = sb_xrealloc(p->news, (np ? np : 1) * sizeof *p->news);
    memcpy(p->events + p->n, q->events, q->n * sizeof *q->events);
    memcpy(p->payloads + p->n, q->payloads, q->n * sizeof *q->payloads);
    memcpy(p->plen + p->n, q->plen, q->n * sizeof *q->plen);
    memcpy(p->news + p->np, q->news, q->np * sizeof *q->news);
    for (size_t k = 0; k < q->np; k++)
        p->pairs[p->np + k] = (pair){.ev = q->pairs[k].ev + p->n, .route = q->pairs[k].route};
    for (size_t j = 0; j < src->n_routes; j++) {
        p->res_n[j] += q->res_n[j];
        p->res_b[j] += q->res_b[j];
    }
    if (q->checkpoint) {
        free(p->checkpoint);
        p->checkpoint = q->checkpoint;
        q->checkpoint = NULL;
    }
    size_t nb = p->nblocks + q->nblocks;
    p->blocks = sb_xrealloc(p->blocks, (nb ? nb : 1) * sizeof *p->blocks);
    memcpy(p->blocks + p->nblocks, q->blocks, q->nblocks * sizeof *q->blocks);
    p->nblocks += q->nblocks;
    q->nblocks = 0;
    p->n = n;
    p->np = np;
    q->n = 0; /* its events and payloads are p's now */
    prepared_free(q);
}

/* Commits the batches sb_source_emit_async() queued, in order: all that
 * wait when it looks, in one transaction, so that a source which keeps
 * several batches in flight (sb_source_await) gets them committed
 * together while the ledger is busy. After a failure it refuses
 * (releases) everything queued behind it, so that no later checkpoint can
 * be committed past lost events. */
void *sb_admission_thread(void *arg)
{
    source_rt *src = arg;
    char name[32]; /* the kernel keeps 15 characters */
    snprintf(name, sizeof name, "sb-adm-%s", src->inst->ins->name);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);
    pthread_mutex_lock(&src->amu);
    for (;;) {
        while (!src->qhead && !src->adm_stop)
            pthread_cond_wait(&src->acv, &src->amu);
        if (!src->qhead)
            break;
        prepared *p = src->qhead;
        size_t taken = src->qlen;
        src->qhead = src->qtail = NULL;
        src->qlen = 0;
        int failed = src->adm_failed;
        pthread_cond_broadcast(&src->acv);
        pthread_mutex_unlock(&src->amu);
        for (prepared *q = p->next, *next; q; q = next) {
            next = q->next;
            prepared_merge(src, p, q);
        }
        p->next = NULL;
        int rc = -1;
        if (failed) {
            release_reservations(src, p);
            prepared_free(p);
        } else {
            rc = commit_and_route(src, p);
        }
        pthread_mutex_lock(&src->amu);
        if (rc != 0)
            src->adm_failed = 1;
        src->uncommitted -= taken;
        pthread_cond_broadcast(&src->acv);
    }
    pthread_mutex_unlock(&src->amu);
    return NULL;
}

/* ---- source threads --------------------------------------------------------- */

void *sb_source_thread(void *arg)
{
    sb_source_ctx *ctx = arg;
    source_rt *src = ctx->src;
    sb_router *r = src->router;
    sb_instance *ins = src->inst->ins;
    int64_t backoff_ms = 1000;
    char name[32]; /* the kernel keeps 15 characters */
    snprintf(name, sizeof name, "sb-src-%s", ins->name);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);
    while (!atomic_load(&r->stopping)) {
        int rc = ins->plugin->run(ins->self, ctx);
        /* whatever run() queued is committed (or refused) before it runs again */
        if (sb_source_flush(ctx) != 0) {
            rc = -1;
            pthread_mutex_lock(&src->amu);
            src->adm_failed = 0;
            pthread_mutex_unlock(&src->amu);
        }
        if (atomic_load(&r->stopping))
            break;
        if (rc == 0) {
            sb_log(ins, r->once ? SB_LOG_DEBUG : SB_LOG_INFO, "source finished its input");
            break;
        }
        if (r->once) {
            sb_log(ins, SB_LOG_ERROR, "source failed");
            src->failed = 1;
            break;
        }
        atomic_fetch_add(&src->restarts, 1);
        sb_log(ins, SB_LOG_ERROR, "source failed; running it again in %llds", (long long)(backoff_ms / 1000));
        if (sb_source_wait(ctx, (int)backoff_ms))
            break;
        if (backoff_ms < 30000)
            backoff_ms *= 2;
    }
    atomic_fetch_sub(&r->sources_alive, 1);
    return NULL;
}

/* ---- resume ----------------------------------------------------------------- */

static route_rt *route_by_name(sb_router *r, const char *name)
{
    for (size_t i = 0; i < r->n_routes; i++)
        if (strcmp(r->routes[i].conf->name, name) == 0)
            return &r->routes[i];
    return NULL;
}

int sb_router_requeue(sb_router *r, const sb_ledger_pending *p, int wait)
{
    route_rt *rt = route_by_name(r, p->route);
    if (!rt) {
        sb_log(NULL, SB_LOG_WARN, "ledger entry %lld is pending on route \"%s\", which is no longer configured; "
               "it stays pending", (long long)p->entry_id, p->route);
        return -1;
    }
    char err[512];
    sb_event *ev = sb_event_from_payload(p->payload, err, sizeof err);
    if (!ev) {
        sb_log(NULL, SB_LOG_ERROR, "ledger entry %lld cannot be resumed: %s", (long long)p->entry_id, err);
        return -1;
    }
    if (p->added_json) {
        json_t *added = json_loads(p->added_json, JSON_ALLOW_NUL, NULL); /* a step may add "\u0000" */
        sb_event_merge_fields(ev, added);
        json_decref(added);
    }
    entry *e = sb_xcalloc(1, sizeof *e);
    e->fresh_slot = -1;
    e->route = rt;
    e->id = p->entry_id;
    e->ev = ev;
    e->bytes = strlen(p->payload);
    e->step = p->next_step;
    e->attempts = p->attempts;
    e->first_attempt_us = p->first_attempt_us;
    /* not persisted: the retry budget's time counts from the resume, since
     * a WAIT before the restart may have started it afresh (attempts are kept) */
    e->retry_since_us = sb_now_us();
    if (p->states_json) {
        e->states = json_loads(p->states_json, 0, NULL);
        if (!json_is_object(e->states)) {
            sb_log(NULL, SB_LOG_ERROR, "ledger entry %lld: its step state cannot be read; the step starts without it",
                   (long long)p->entry_id);
            json_decref(e->states);
            e->states = NULL;
        }
    }
    e->admitted_mono = sb_mono_us();
    if ((size_t)e->step >= rt->n_steps) {
        /* The route lost steps since; what it has now is done. */
        sb_ledger_entry_done(r->ledger, e->id);
        sb_entry_free(e);
        return 0;
    }
    step_rt *s = &rt->steps[e->step];
    json_t *done = p->members_done ? json_loads(p->members_done, 0, NULL) : NULL;
    size_t di;
    json_t *dv;
    json_array_foreach(done, di, dv)
    {
        for (size_t m = 0; m < s->n; m++)
            if (json_is_string(dv) && strcmp(json_string_value(dv), s->members[m]->ins->name) == 0)
                e->members_done |= 1ull << m;
    }
    json_decref(done);
    if (sb_route_reserve(rt, 1, (int64_t)e->bytes, wait) != 0) {
        sb_entry_free(e);
        return -1;
    }
    sb_entry_track(e);
    int64_t now = sb_now_us();
    if (p->next_retry_us > now) {
        e->due_mono = sb_mono_us() + (p->next_retry_us - now);
        sb_retry_schedule(r, e);
    } else {
        atomic_fetch_add(&r->work, 1);
        sb_step_push(s, e);
    }
    return 0;
}

/* A page of pending entries copied out of the ledger callback, so that no
 * ledger lock is held while we wait for route budget. */
typedef struct page {
    sb_ledger_pending *items;
    char **strs;
    size_t n, cap, nstr;
    int64_t last_id;
} page;

static const char *keep(page *pg, const char *s)
{
    if (!s)
        return NULL;
    pg->strs = sb_xrealloc(pg->strs, (pg->nstr + 1) * sizeof *pg->strs);
    return pg->strs[pg->nstr++] = sb_strdup(s);
}

static int collect(const sb_ledger_pending *p, void *ud)
{
    page *pg = ud;
    if (pg->n == pg->cap) {
        pg->cap = pg->cap ? pg->cap * 2 : 256;
        pg->items = sb_xrealloc(pg->items, pg->cap * sizeof *pg->items);
    }
    sb_ledger_pending c = *p;
    c.event_id = keep(pg, p->event_id);
    c.route = keep(pg, p->route);
    c.source = keep(pg, p->source);
    c.payload = keep(pg, p->payload);
    c.added_json = keep(pg, p->added_json);
    c.members_done = keep(pg, p->members_done);
    c.states_json = keep(pg, p->states_json);
    pg->items[pg->n++] = c;
    pg->last_id = p->entry_id;
    return 0;
}

static void page_clear(page *pg)
{
    for (size_t i = 0; i < pg->nstr; i++)
        free(pg->strs[i]);
    pg->nstr = 0;
    pg->n = 0;
}

/* Resume every entry pending at start-up, then start the sources: new
 * events get higher ledger ids, and sources only start once the scan is
 * complete, so nothing is queued twice. */
void *sb_resume_thread(void *arg)
{
    sb_router *r = arg;
    page pg = {0};
    int64_t after = 0;
    size_t resumed = 0;
    for (;;) {
        page_clear(&pg);
        int got = sb_ledger_foreach_pending(r->ledger, NULL, after, 512, collect, &pg);
        if (got <= 0)
            break;
        after = pg.last_id;
        for (size_t i = 0; i < pg.n && !atomic_load(&r->stopping); i++)
            if (sb_router_requeue(r, &pg.items[i], 1) == 0)
                resumed++;
        if (atomic_load(&r->stopping) || got < 512)
            break;
    }
    page_clear(&pg);
    free(pg.items);
    free(pg.strs);
    if (resumed)
        sb_log(NULL, SB_LOG_INFO, "resumed %zu pending entries from the run ledger", resumed);

    for (size_t i = 0; i < r->n_sources && !atomic_load(&r->stopping); i++) {
        source_rt *src = &r->sources[i];
        if (pthread_create(&src->adm_thread, NULL, sb_admission_thread, src) != 0) {
            sb_log(src->inst->ins, SB_LOG_ERROR, "cannot start the admission thread");
            src->failed = 1;
            continue;
        }
        src->adm_spawned = 1;
        atomic_fetch_add(&r->sources_alive, 1);
        if (pthread_create(&src->thread, NULL, sb_source_thread, &r->ctxs[i]) != 0) {
            atomic_fetch_sub(&r->sources_alive, 1);
            sb_log(src->inst->ins, SB_LOG_ERROR, "cannot start the source thread");
            src->failed = 1;
            continue;
        }
        src->spawned = 1;
    }
    atomic_store(&r->resume_done, 1);
    return NULL;
}

int sb_router_take_requeued_cb(const sb_ledger_pending *p, void *ud)
{
    sb_router *r = ud;
    if (sb_router_requeue(r, p, 0) == 0)
        sb_log(NULL, SB_LOG_DEBUG, "replaying ledger entry %lld (event %s) on route %s", (long long)p->entry_id,
               p->event_id, p->route);
    return 0;
}
