/*
 * router_ops.h - read-only views of a running router for operations: the
 * admin endpoint's /metrics and /readyz, and the systemd watchdog.
 *
 * These complement sb_router_stats() (counters as JSON) with what JSON
 * does not carry well: the latency histogram's buckets and whether step
 * workers are making progress.
 *
 * Threading: callable from any thread while the router exists (between
 * sb_router_new and sb_router_free); values are approximate snapshots.
 */
#ifndef SB_ROUTER_OPS_H
#define SB_ROUTER_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "util/histogram.h"
#include "engine/router.h"
#include "engine/freshness.h"

typedef struct sb_router_health {
    int sources_total;
    int sources_alive;          /* source threads currently running */
    int64_t work;               /* entries queued at a step or held by a worker */
    int64_t busy_workers;       /* workers holding a batch now */
    int64_t oldest_busy_us;     /* longest any worker has held its current batch; 0 = none */
    char oldest_route[128];     /* where that batch is ("" when none) */
    int oldest_step;
} sb_router_health;

void sb_router_health_get(sb_router *r, int64_t now_mono_us, sb_router_health *h);

/* Routes by index, for the per-route latency histogram (time from
 * admission to settlement). NULL when i >= number of routes. The histogram
 * lives as long as the router. */
const sb_hist *sb_router_route_latency(sb_router *r, size_t i, const char **name);

/* Routes by index, for the run freshness per table (engine/freshness.h):
 * NULL when i >= number of routes. Lives as long as the router. */
sb_freshness *sb_router_route_freshness(sb_router *r, size_t i, const char **name);

#endif
