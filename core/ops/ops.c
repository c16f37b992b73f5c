/* ops.c - admin endpoint lifecycle, systemd notifications and the
 * watchdog policy (see ops.h). */
#include "build_config.h"
#include "ops/ops.h"
#include "ops/admin.h"
#include "log/log_internal.h"
#include "engine/router_ops.h"
#include "ops/sdnotify.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATUS_EVERY_US (10 * 1000000LL)

struct sb_ops {
    sb_admin *admin;
    int64_t wd_usec;        /* 0 = no watchdog */
    int64_t last_ping;
    int withholding;        /* pings withheld because a step stalled */
    int64_t last_status;
};

static void send_status(sb_router *r)
{
    json_t *st = sb_router_stats(r);
    json_t *routes = json_object_get(st, "routes"), *v;
    const char *name;
    long long in = 0, done = 0, dead = 0, inflight = 0;
    json_object_foreach(routes, name, v)
    {
        in += (long long)json_integer_value(json_object_get(v, "in"));
        done += (long long)json_integer_value(json_object_get(v, "done"));
        dead += (long long)json_integer_value(json_object_get(v, "dead"));
        inflight += (long long)json_integer_value(json_object_get(v, "inflight"));
    }
    sb_router_health h;
    sb_router_health_get(r, sb_mono_us(), &h);
    sb_notifyf("STATUS=%zu routes, %d/%d sources running: %lld in, %lld done, %lld dead-lettered, %lld in flight",
               json_object_size(routes), h.sources_alive, h.sources_total, in, done, dead, inflight);
    json_decref(st);
}

sb_ops *sb_ops_start(const sb_config *cfg, sb_ledger *ledger, sb_router *r)
{
    sb_ops *o = sb_xcalloc(1, sizeof *o);
    o->wd_usec = sb_notify_watchdog_usec();
    if (cfg->admin_enabled) {
        char err[1024];
        sb_admin_opts ao = {.bind = cfg->admin_bind,
                            .port = cfg->admin_port,
                            .ledger = ledger,
                            .state_dir = cfg->state_dir,
                            /* readiness fails a little before the watchdog would fire */
                            .stuck_after_us = o->wd_usec ? o->wd_usec / 2 : 0};
        o->admin = sb_admin_start(&ao, err, sizeof err);
        if (o->admin)
            sb_log(NULL, SB_LOG_INFO, "admin endpoint on http://%s:%d/ (/metrics /healthz /readyz /api/runs)",
                   cfg->admin_bind, sb_admin_port(o->admin));
        else
            sb_log(NULL, SB_LOG_ERROR, "%s; running without it", err);
        sb_admin_set_router(o->admin, r);
    }
    if (sb_notify("READY=1") < 0)
        sb_log(NULL, SB_LOG_WARN, "systemd notification to $NOTIFY_SOCKET failed: %s", strerror(errno));
    if (o->wd_usec) {
        sb_log(NULL, SB_LOG_INFO, "systemd watchdog every %lld ms", (long long)(o->wd_usec / 1000));
        sb_notify("WATCHDOG=1");
        o->last_ping = sb_mono_us();
    }
    send_status(r);
    o->last_status = sb_mono_us();
    return o;
}

void sb_ops_tick(sb_ops *o, sb_router *r)
{
    int64_t now = sb_mono_us();
    if (o->wd_usec && now - o->last_ping >= o->wd_usec / 4) {
        sb_router_health h;
        sb_router_health_get(r, now, &h);
        if (h.oldest_busy_us > o->wd_usec / 2) {
            if (!o->withholding)
                sb_log(NULL, SB_LOG_ERROR,
                       "watchdog: route %s step %d has held a batch for %lld ms (more than half of WatchdogSec); "
                       "withholding keep-alive pings so that systemd restarts the daemon unless it completes",
                       h.oldest_route, h.oldest_step, (long long)(h.oldest_busy_us / 1000));
            if (!o->withholding)
                sb_notifyf("STATUS=stalled: route %s step %d has held a batch for %lld s", h.oldest_route,
                           h.oldest_step, (long long)(h.oldest_busy_us / 1000000));
            o->withholding = 1;
        } else {
            if (o->withholding)
                sb_log(NULL, SB_LOG_WARN, "watchdog: the stalled step completed; keep-alive pings resume");
            o->withholding = 0;
            sb_notify("WATCHDOG=1");
            o->last_ping = now;
        }
    }
    if (!o->withholding && now - o->last_status >= STATUS_EVERY_US) {
        send_status(r);
        o->last_status = now;
    }
}

/* The drain blocks the main loop: give the watchdog that much more time. */
static void extend_watchdog(sb_ops *o, int64_t drain_ms)
{
    if (o->wd_usec)
        sb_notifyf("WATCHDOG=1\nWATCHDOG_USEC=%lld", (long long)(o->wd_usec + drain_ms * 1000));
}

void sb_ops_reload_begin(sb_ops *o, int64_t shutdown_timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* MONOTONIC_USEC is required by Type=notify-reload (systemd 253) and ignored otherwise */
    sb_notifyf("RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading configuration",
               (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000);
    extend_watchdog(o, shutdown_timeout_ms);
    sb_admin_set_router(o->admin, NULL);
}

void sb_ops_reload_end(sb_ops *o, sb_router *r)
{
    sb_admin_set_router(o->admin, r);
    if (o->wd_usec)
        sb_notifyf("READY=1\nWATCHDOG=1\nWATCHDOG_USEC=%lld", (long long)o->wd_usec);
    else
        sb_notify("READY=1");
    o->last_ping = sb_mono_us();
    send_status(r);
    o->last_status = sb_mono_us();
}

void sb_ops_stopping(sb_ops *o, int64_t shutdown_timeout_ms)
{
    sb_notify("STOPPING=1\nSTATUS=stopping sources and draining");
    extend_watchdog(o, shutdown_timeout_ms);
    /* the admin server stops before the router: no request sees a router stopping */
    sb_admin_stop(o->admin);
    o->admin = NULL;
}

void sb_ops_free(sb_ops *o)
{
    if (!o)
        return;
    sb_admin_stop(o->admin);
    free(o);
}
