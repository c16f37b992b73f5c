/* router.c - build the pipeline from config, start, stop, describe, stats. */
#include "build_config.h"
#include "log/log_internal.h"
#include "engine/router_internal.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *section_of(sb_plugin_kind k)
{
    return k == SB_KIND_SOURCE ? "sources" : k == SB_KIND_SINK ? "sinks" : "actions";
}

static inst_rt *inst_by_name(sb_router *r, const char *name)
{
    for (size_t i = 0; i < r->n_insts; i++)
        if (strcmp(r->insts[i].ins->name, name) == 0)
            return &r->insts[i];
    return NULL;
}

static int build_instances(sb_router *r, char *errstr, size_t errstr_size)
{
    const sb_config *c = r->cfg;
    r->insts = sb_xcalloc(c->n_instances, sizeof *r->insts);
    for (size_t i = 0; i < c->n_instances; i++) {
        const sb_instance_conf *ic = &c->instances[i];
        char *where = sb_asprintf("%s: %s.%s", ic->file, section_of(ic->kind), ic->name);
        char err[1024];
        const sb_plugin *p = sb_registry_get(r->reg, ic->plugin, ic->kind, where, err, sizeof err);
        if (!p) {
            free(where);
            return sb_err(errstr, errstr_size, "%s", err);
        }
        sb_options *opts = sb_options_parse(p->options, ic->options, where, err, sizeof err);
        free(where);
        if (!opts)
            return sb_err(errstr, errstr_size, "%s", err);
        inst_rt *in = &r->insts[r->n_insts++];
        in->conf = ic;
        in->ins = sb_instance_new(ic->name, p, opts, r->once, c->state_dir);
        pthread_rwlock_init(&in->lock, NULL);
        pthread_mutex_init(&in->life_mu, NULL);
        if (sb_instance_create(in->ins, err, sizeof err) != 0)
            return sb_err(errstr, errstr_size, "%s: %s.%s: %s", ic->file, section_of(ic->kind), ic->name, err);
    }
    return 0;
}

static int build_routes(sb_router *r, char *errstr, size_t errstr_size)
{
    const sb_config *c = r->cfg;
    r->routes = sb_xcalloc(c->n_routes, sizeof *r->routes);
    for (size_t i = 0; i < c->n_routes; i++) {
        const sb_route_conf *rc = &c->routes[i];
        route_rt *rt = &r->routes[r->n_routes++];
        rt->router = r;
        rt->conf = rc;
        rt->max_inflight = rc->max_inflight > 0 ? rc->max_inflight : c->max_inflight;
        rt->max_bytes = rc->max_inflight_bytes > 0 ? rc->max_inflight_bytes : c->max_inflight_bytes;
        pthread_mutex_init(&rt->mu, NULL);
        pthread_cond_init(&rt->cv_space, NULL);
        rt->freshness = sb_freshness_new();
        if (rc->match) {
            char *where = sb_asprintf("%s: routes.%s.match", rc->file, rc->name);
            rt->match = sb_match_compile(rc->match, where, errstr, errstr_size);
            free(where);
            if (!rt->match)
                return -1;
        }
        rt->n_steps = rc->n_steps;
        rt->steps = sb_xcalloc(rc->n_steps, sizeof *rt->steps);
        for (size_t s = 0; s < rc->n_steps; s++) {
            step_rt *st = &rt->steps[s];
            st->route = rt;
            st->index = (int)s;
            if (rc->steps[s].n > SB_MAX_FANOUT)
                return sb_err(errstr, errstr_size, "%s: routes.%s.steps[%zu]: at most %d instances in one step",
                              rc->file, rc->name, s, SB_MAX_FANOUT);
            st->n = rc->steps[s].n;
            st->members = sb_xcalloc(st->n, sizeof *st->members);
            for (size_t m = 0; m < st->n; m++) {
                inst_rt *in = inst_by_name(r, rc->steps[s].instances[m]);
                if (!in)
                    return sb_err(errstr, errstr_size, "%s: routes.%s.steps[%zu]: unknown instance \"%s\"", rc->file,
                                  rc->name, s, rc->steps[s].instances[m]);
                in->used = 1;
                st->members[m] = in;
                if (in->conf->workers > st->workers)
                    st->workers = in->conf->workers;
                if (in->conf->batch_max > st->batch_max)
                    st->batch_max = in->conf->batch_max;
            }
            st->retry = st->members[0]->conf->retry;
            st->timeout_ms = st->members[0]->conf->step_timeout_ms;
            if (st->workers < 1)
                st->workers = 1;
            if (st->batch_max < 1)
                st->batch_max = 1;
            pthread_mutex_init(&st->mu, NULL);
            pthread_cond_init(&st->cv, NULL);
        }
    }
    /* sources: each with the routes that read from it */
    r->sources = sb_xcalloc(c->n_instances, sizeof *r->sources);
    for (size_t i = 0; i < r->n_insts; i++) {
        inst_rt *in = &r->insts[i];
        if (in->conf->kind != SB_KIND_SOURCE)
            continue;
        source_rt *src = &r->sources[r->n_sources];
        src->router = r;
        pthread_mutex_init(&src->amu, NULL);
        pthread_cond_init(&src->acv, NULL);
        src->inst = in;
        src->routes = sb_xcalloc(r->n_routes ? r->n_routes : 1, sizeof *src->routes);
        for (size_t j = 0; j < r->n_routes; j++)
            for (size_t k = 0; k < r->routes[j].conf->n_sources; k++)
                if (strcmp(r->routes[j].conf->sources[k], in->ins->name) == 0)
                    src->routes[src->n_routes++] = &r->routes[j];
        if (!src->n_routes) {
            sb_log(in->ins, SB_LOG_WARN, "source is used by no route; it will not run");
            free(src->routes);
            pthread_mutex_destroy(&src->amu);
            pthread_cond_destroy(&src->acv);
            memset(src, 0, sizeof *src);
            continue;
        }
        in->used = 1;
        r->n_sources++;
    }
    for (size_t i = 0; i < r->n_insts; i++)
        if (!r->insts[i].used && r->insts[i].conf->kind != SB_KIND_SOURCE)
            sb_log(r->insts[i].ins, SB_LOG_WARN, "instance is used by no route");
    r->ctxs = sb_xcalloc(r->n_sources ? r->n_sources : 1, sizeof *r->ctxs);
    for (size_t i = 0; i < r->n_sources; i++)
        r->ctxs[i].src = &r->sources[i];
    return 0;
}

sb_router *sb_router_new(const sb_config *cfg, sb_registry *reg, sb_ledger *ledger, int once, char *errstr,
                         size_t errstr_size)
{
    sb_router *r = sb_xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->reg = reg;
    r->ledger = ledger;
    r->once = once;
    pthread_mutex_init(&r->stop_mu, NULL);
    pthread_cond_init(&r->stop_cv, NULL);
    pthread_mutex_init(&r->tmu, NULL);
    pthread_cond_init(&r->tcv, NULL);
    if (build_instances(r, errstr, errstr_size) != 0 || build_routes(r, errstr, errstr_size) != 0) {
        sb_router_free(r);
        return NULL;
    }
    return r;
}

static int ignore_pending(const sb_ledger_pending *p, void *ud)
{
    (void)p;
    (void)ud;
    return 0;
}

int sb_router_start(sb_router *r, char *errstr, size_t errstr_size)
{
    if (!r->ledger)
        return sb_err(errstr, errstr_size, "no run ledger");
    /* sinks and actions first, so that sources never emit into a dead step */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < r->n_insts; i++) {
            inst_rt *in = &r->insts[i];
            int is_source = in->conf->kind == SB_KIND_SOURCE;
            if (!in->used || is_source != (pass == 1))
                continue;
            if (sb_instance_start(in->ins, errstr, errstr_size) != 0)
                return -1;
        }
    for (size_t i = 0; i < r->n_sources; i++) {
        int failed = 0;
        r->sources[i].checkpoint =
            sb_ledger_checkpoint(r->ledger, r->sources[i].inst->ins->name, &failed, errstr, errstr_size);
        if (failed)
            return -1; /* starting from the default position would skip or replay input */
    }

    for (size_t i = 0; i < r->n_routes; i++)
        for (size_t s = 0; s < r->routes[i].n_steps; s++) {
            step_rt *st = &r->routes[i].steps[s];
            st->threads = sb_xcalloc((size_t)st->workers, sizeof *st->threads);
            for (int w = 0; w < st->workers; w++) {
                if (pthread_create(&st->threads[w], NULL, sb_step_worker, st) != 0)
                    return sb_err(errstr, errstr_size, "cannot start worker threads");
                st->n_threads++;
            }
        }
    r->workers_spawned = 1;
    /* Entries replayed from the DLQ while we were down are pending anyway:
     * the resume scan queues them, so clear their flag first. */
    while (sb_ledger_take_requeued(r->ledger, 4096, ignore_pending, NULL) > 0)
        ;
    if (pthread_create(&r->timer, NULL, sb_retry_timer, r) != 0)
        return sb_err(errstr, errstr_size, "cannot start the retry timer thread");
    r->timer_spawned = 1;
    if (pthread_create(&r->resume_thread, NULL, sb_resume_thread, r) != 0)
        return sb_err(errstr, errstr_size, "cannot start the resume thread");
    r->resume_spawned = 1;
    return 0;
}

void sb_router_tick(sb_router *r)
{
    if (!atomic_load(&r->resume_done) || atomic_load(&r->stopping))
        return;
    int replayed = sb_ledger_take_requeued(r->ledger, 256, sb_router_take_requeued_cb, r);
    if (replayed > 0) /* per-entry detail is logged at debug */
        sb_log(NULL, SB_LOG_INFO, "replaying %d dead-lettered entries requeued from the CLI", replayed);
    int64_t now = sb_mono_us();
    if (now - r->last_prune_mono > 60 * 1000000LL) {
        r->last_prune_mono = now;
        int n = sb_ledger_prune(r->ledger, sb_now_us());
        if (n > 0)
            sb_log(NULL, SB_LOG_INFO, "pruned %d settled ledger entries past retention", n);
    }
}

int sb_router_finished(sb_router *r)
{
    if (!atomic_load(&r->resume_done) || atomic_load(&r->sources_alive) > 0)
        return 0;
    for (size_t i = 0; i < r->n_routes; i++) {
        pthread_mutex_lock(&r->routes[i].mu);
        int64_t n = r->routes[i].inflight;
        pthread_mutex_unlock(&r->routes[i].mu);
        if (n)
            return 0;
    }
    return 1;
}

int sb_router_sources_failed(const sb_router *r)
{
    int failed = 0;
    for (size_t i = 0; i < r->n_sources; i++)
        failed |= r->sources[i].failed;
    return failed;
}

int sb_router_stop(sb_router *r, int64_t timeout_ms)
{
    pthread_mutex_lock(&r->stop_mu);
    atomic_store(&r->stopping, 1);
    pthread_cond_broadcast(&r->stop_cv);
    pthread_mutex_unlock(&r->stop_mu);
    for (size_t i = 0; i < r->n_routes; i++) {
        pthread_mutex_lock(&r->routes[i].mu);
        pthread_cond_broadcast(&r->routes[i].cv_space);
        pthread_mutex_unlock(&r->routes[i].mu);
    }
    for (size_t i = 0; i < r->n_sources; i++)
        sb_instance_stop(r->sources[i].inst->ins); /* wakes a blocked run() */
    if (r->resume_spawned) {
        pthread_join(r->resume_thread, NULL);
        r->resume_spawned = 0;
    }
    for (size_t i = 0; i < r->n_sources; i++) {
        source_rt *src = &r->sources[i];
        if (src->spawned) {
            pthread_join(src->thread, NULL);
            src->spawned = 0;
        }
        if (src->adm_spawned) { /* commits what the source queued, then exits */
            pthread_mutex_lock(&src->amu);
            src->adm_stop = 1;
            pthread_cond_broadcast(&src->acv);
            pthread_mutex_unlock(&src->amu);
            pthread_join(src->adm_thread, NULL);
            src->adm_spawned = 0;
        }
    }

    /* Long work in progress (a copy) returns soon and resumes after the
     * restart from its step state, instead of holding up the drain. */
    for (size_t i = 0; i < r->n_insts; i++) {
        inst_rt *in = &r->insts[i];
        if (in->ins->plugin->kind == SB_KIND_SOURCE || !in->ins->plugin->cancel)
            continue;
        pthread_mutex_lock(&in->life_mu); /* not during a restart's destroy/create */
        if (in->ins->created)
            in->ins->plugin->cancel(in->ins->self);
        pthread_mutex_unlock(&in->life_mu);
    }
    int64_t deadline = sb_mono_us() + timeout_ms * 1000;
    while (atomic_load(&r->work) > 0 && sb_mono_us() < deadline)
        usleep(10000);
    int drained = atomic_load(&r->work) == 0;
    if (!drained) {
        sb_log(NULL, SB_LOG_WARN, "shutdown timeout: %lld entries still in steps stay pending in the ledger",
               (long long)atomic_load(&r->work));
        return -1;
    }
    atomic_store(&r->workers_stop, 1);
    for (size_t i = 0; i < r->n_routes; i++)
        for (size_t s = 0; s < r->routes[i].n_steps; s++) {
            step_rt *st = &r->routes[i].steps[s];
            pthread_mutex_lock(&st->mu);
            pthread_cond_broadcast(&st->cv);
            pthread_mutex_unlock(&st->mu);
            for (int w = 0; w < st->n_threads; w++)
                pthread_join(st->threads[w], NULL);
            st->n_threads = 0;
        }
    if (r->timer_spawned) {
        pthread_mutex_lock(&r->tmu);
        pthread_cond_broadcast(&r->tcv);
        pthread_mutex_unlock(&r->tmu);
        pthread_join(r->timer, NULL);
        r->timer_spawned = 0;
    }
    for (size_t i = 0; i < r->n_insts; i++)
        sb_instance_stop(r->insts[i].ins);
    return 0;
}

static void free_list(entry *e)
{
    while (e) {
        entry *next = e->next;
        sb_entry_free(e);
        e = next;
    }
}

/* What is left is pending in the ledger: the next start resumes it. */
static void free_queue(step_rt *st)
{
    free_list(st->head);
    free_list(st->held_head);
    st->head = st->tail = st->held_head = st->held_tail = NULL;
}

void sb_router_free(sb_router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_routes; i++) {
        route_rt *rt = &r->routes[i];
        for (size_t s = 0; s < rt->n_steps; s++) {
            free_queue(&rt->steps[s]);
            free(rt->steps[s].members);
            free(rt->steps[s].threads);
            pthread_mutex_destroy(&rt->steps[s].mu);
            pthread_cond_destroy(&rt->steps[s].cv);
        }
        free(rt->steps);
        sb_match_free(rt->match);
        pthread_mutex_destroy(&rt->mu);
        pthread_cond_destroy(&rt->cv_space);
    }
    for (size_t i = 0; i < r->heap_n; i++)
        sb_entry_free(r->heap[i]);
    free(r->heap);
    for (size_t i = 0; i < r->n_routes; i++) /* after every entry that may point into them */
        sb_freshness_free(r->routes[i].freshness);
    for (size_t i = 0; i < r->n_sources; i++) {
        free(r->sources[i].routes);
        free(r->sources[i].checkpoint);
        pthread_mutex_destroy(&r->sources[i].amu);
        pthread_cond_destroy(&r->sources[i].acv);
    }
    for (size_t i = 0; i < r->n_insts; i++) {
        sb_instance_free(r->insts[i].ins);
        pthread_rwlock_destroy(&r->insts[i].lock);
        pthread_mutex_destroy(&r->insts[i].life_mu);
    }
    free(r->insts);
    free(r->routes);
    free(r->sources);
    free(r->ctxs);
    pthread_mutex_destroy(&r->stop_mu);
    pthread_cond_destroy(&r->stop_cv);
    pthread_mutex_destroy(&r->tmu);
    pthread_cond_destroy(&r->tcv);
    free(r);
}

void sb_router_describe(const sb_router *r, FILE *out)
{
    for (size_t i = 0; i < r->n_routes; i++) {
        const route_rt *rt = &r->routes[i];
        const sb_route_conf *rc = rt->conf;
        fprintf(out, "route %s (%s)\n  sources:", rc->name, rc->file);
        for (size_t k = 0; k < rc->n_sources; k++)
            fprintf(out, " %s", rc->sources[k]);
        char *m = rc->match ? json_dumps(rc->match, JSON_COMPACT) : NULL;
        fprintf(out, "\n  match:   %s\n  budget:  %lld events, %lld bytes in flight\n", m ? m : "(every event)",
                (long long)rt->max_inflight, (long long)rt->max_bytes);
        free(m);
        for (size_t s = 0; s < rt->n_steps; s++) {
            const step_rt *st = &rt->steps[s];
            fprintf(out, "  step %zu:%s", s + 1, st->n > 1 ? " in parallel:" : "");
            for (size_t k = 0; k < st->n; k++)
                fprintf(out, " %s (%s %s)", st->members[k]->ins->name,
                        sb_plugin_kind_name(st->members[k]->ins->plugin->kind), st->members[k]->ins->plugin->name);
            fprintf(out, "  [batch_max %d, workers %d, max_attempts %d]\n", st->batch_max, st->workers,
                    st->retry.max_attempts);
        }
    }
}

json_t *sb_router_stats(sb_router *r)
{
    json_t *routes = json_object(), *sources = json_object();
    for (size_t i = 0; i < r->n_routes; i++) {
        route_rt *rt = &r->routes[i];
        pthread_mutex_lock(&rt->mu);
        json_int_t inflight = rt->inflight, bytes = rt->inflight_bytes;
        pthread_mutex_unlock(&rt->mu);
        json_t *queues = json_array(), *held = json_array(), *open = json_array();
        for (size_t s = 0; s < rt->n_steps; s++) {
            pthread_mutex_lock(&rt->steps[s].mu);
            json_array_append_new(queues, json_integer((json_int_t)rt->steps[s].queued));
            json_array_append_new(held, json_integer((json_int_t)rt->steps[s].held));
            json_array_append_new(open, json_boolean(rt->steps[s].open));
            pthread_mutex_unlock(&rt->steps[s].mu);
        }
        json_object_set_new(
            routes, rt->conf->name,
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:{s:I,s:I,s:I,s:I}}", "in",
                      (json_int_t)rt->n_in, "circuit_opens", (json_int_t)rt->n_circuit_opens,
                      "settled", (json_int_t)(rt->n_done + rt->n_dead), "done", (json_int_t)rt->n_done, "dead",
                      (json_int_t)rt->n_dead, "retried", (json_int_t)rt->n_retried, "waits", (json_int_t)rt->n_waits,
                      "progress_bytes", (json_int_t)rt->n_progress_bytes, "duplicates",
                      (json_int_t)rt->n_dup, "inflight", inflight, "inflight_bytes", bytes, "queued", queues, "held", held,
                      "circuit_open", open,
                      "latency_us", "p50", (json_int_t)sb_hist_quantile(&rt->latency, 0.50), "p99",
                      (json_int_t)sb_hist_quantile(&rt->latency, 0.99), "max", (json_int_t)rt->latency.max, "count",
                      (json_int_t)rt->latency.count));
    }
    for (size_t i = 0; i < r->n_sources; i++) {
        source_rt *s = &r->sources[i];
        json_object_set_new(sources, s->inst->ins->name,
                            json_pack("{s:I,s:I,s:I}", "emitted", (json_int_t)s->emitted, "unrouted",
                                      (json_int_t)s->unrouted, "restarts", (json_int_t)s->restarts));
    }
    return json_pack("{s:o,s:o}", "routes", routes, "sources", sources);
}
