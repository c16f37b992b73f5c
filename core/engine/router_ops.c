/* router_ops.c - operations views of the router (see router_ops.h) and the
 * busy-slot marks the step workers set around each batch. */
#include "build_config.h"
#include "engine/router_ops.h"
#include "engine/router_internal.h"
#include "util/util.h"

#include <stdio.h>
#include <string.h>

int sb_step_busy_begin(step_rt *s)
{
    int64_t now = sb_mono_us();
    if (now == 0)
        now = 1; /* 0 means a free slot */
    for (int i = 0; i < SB_STEP_BUSY_SLOTS; i++) {
        int64_t expect = 0;
        if (atomic_compare_exchange_strong(&s->busy_since[i], &expect, now))
            return i;
    }
    return -1;
}

void sb_step_busy_end(step_rt *s, int slot)
{
    if (slot >= 0)
        atomic_store(&s->busy_since[slot], 0);
}

void sb_router_health_get(sb_router *r, int64_t now, sb_router_health *h)
{
    memset(h, 0, sizeof *h);
    h->sources_total = (int)r->n_sources;
    h->sources_alive = atomic_load(&r->sources_alive);
    h->work = atomic_load(&r->work);
    for (size_t i = 0; i < r->n_routes; i++) {
        route_rt *rt = &r->routes[i];
        for (size_t s = 0; s < rt->n_steps; s++) {
            for (int k = 0; k < SB_STEP_BUSY_SLOTS; k++) {
                int64_t since = atomic_load(&rt->steps[s].busy_since[k]);
                if (!since)
                    continue;
                h->busy_workers++;
                int64_t held = now > since ? now - since : 0;
                if (held >= h->oldest_busy_us) {
                    h->oldest_busy_us = held ? held : 1;
                    snprintf(h->oldest_route, sizeof h->oldest_route, "%s", rt->conf->name);
                    h->oldest_step = (int)s;
                }
            }
        }
    }
}

const sb_hist *sb_router_route_latency(sb_router *r, size_t i, const char **name)
{
    if (i >= r->n_routes)
        return NULL;
    if (name)
        *name = r->routes[i].conf->name;
    return &r->routes[i].latency;
}

sb_freshness *sb_router_route_freshness(sb_router *r, size_t i, const char **name)
{
    if (i >= r->n_routes)
        return NULL;
    *name = r->routes[i].conf->name;
    return r->routes[i].freshness;
}
