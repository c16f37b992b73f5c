/* daemon.c - run loop: start, signals, reload, drain. */
#include "build_config.h"
#include "daemon/daemon.h"
#include "config/config.h"
#include "ledger/ledger.h"
#include "engine/loader.h"
#include "ops/ops.h"
#include "log/log_internal.h"
#include "engine/router.h"
#include "util/util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct pipeline {
    sb_config *cfg;
    sb_registry *reg;
    sb_router *router;
} pipeline;

void sb_daemon_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void apply_log(const sb_config *cfg, const sb_run_opts *o)
{
    int level = o->log_level >= 0 ? o->log_level : cfg->log_level;
    sb_log_setup((sb_log_level)level, sb_log_target_parse(cfg->log_target)); /* stderr: journal auto-detected */
}

/* Load config, plugins and instances; nothing is started. */
static int pipeline_build(pipeline *p, const sb_run_opts *o, sb_ledger *ledger, char *err, size_t errsz)
{
    memset(p, 0, sizeof *p);
    p->cfg = sb_config_load(o->config_path, err, errsz);
    if (!p->cfg)
        return -1;
    if (o->state_dir) {
        free(p->cfg->state_dir);
        p->cfg->state_dir = sb_strdup(o->state_dir);
    }
    p->reg = sb_registry_new(p->cfg->plugin_dirs, p->cfg->n_plugin_dirs);
    sb_registry_allow_insecure(p->reg, p->cfg->allow_insecure_plugins);
    p->router = sb_router_new(p->cfg, p->reg, ledger, o->once, err, errsz);
    return p->router ? 0 : -1;
}

static void pipeline_free(pipeline *p)
{
    sb_router_free(p->router);
    sb_registry_free(p->reg); /* after the router: instances call into plugin code */
    sb_config_free(p->cfg);
    memset(p, 0, sizeof *p);
}

static void log_summary(sb_router *r, const char *when)
{
    json_t *st = sb_router_stats(r);
    json_t *routes = json_object_get(st, "routes"), *v;
    const char *name;
    json_object_foreach(routes, name, v)
    {
        json_t *lat = json_object_get(v, "latency_us");
        sb_log(NULL, SB_LOG_INFO, "%s: route %s: %lld in, %lld done, %lld dead-lettered, %lld retried, %lld duplicates, "
               "%lld in flight, latency p50 %lldus p99 %lldus", when, name,
               (long long)json_integer_value(json_object_get(v, "in")),
               (long long)json_integer_value(json_object_get(v, "done")),
               (long long)json_integer_value(json_object_get(v, "dead")),
               (long long)json_integer_value(json_object_get(v, "retried")),
               (long long)json_integer_value(json_object_get(v, "duplicates")),
               (long long)json_integer_value(json_object_get(v, "inflight")),
               (long long)json_integer_value(json_object_get(lat, "p50")),
               (long long)json_integer_value(json_object_get(lat, "p99")));
    }
    json_decref(st);
}

static int64_t total_dead(sb_router *r)
{
    json_t *st = sb_router_stats(r);
    json_t *routes = json_object_get(st, "routes"), *v;
    const char *name;
    int64_t dead = 0;
    json_object_foreach(routes, name, v) dead += json_integer_value(json_object_get(v, "dead"));
    json_decref(st);
    return dead;
}

/* SIGHUP: build the new pipeline completely before touching the running
 * one; any error keeps the running one. */
static void reload(pipeline *cur, const sb_run_opts *o, sb_ledger *ledger)
{
    char err[2048];
    pipeline next;
    sb_log(NULL, SB_LOG_INFO, "reloading configuration from %s", o->config_path);
    if (pipeline_build(&next, o, ledger, err, sizeof err) != 0) {
        sb_log(NULL, SB_LOG_ERROR, "reload rejected, the running configuration stays: %s", err);
        pipeline_free(&next);
        return;
    }
    if (strcmp(next.cfg->state_dir, cur->cfg->state_dir) != 0)
        sb_log(NULL, SB_LOG_WARN, "state_dir changed to %s; it takes effect at the next restart, %s stays in use",
               next.cfg->state_dir, cur->cfg->state_dir);
    if (sb_router_stop(cur->router, cur->cfg->shutdown_timeout_ms) != 0) {
        sb_log(NULL, SB_LOG_ERROR, "reload: the running pipeline did not drain in time; exiting so that systemd "
               "restarts with the new configuration (pending entries resume from the ledger)");
        exit(SB_EXIT_FAILURE);
    }
    pipeline_free(cur);
    *cur = next;
    apply_log(cur->cfg, o);
    if (sb_router_start(cur->router, err, sizeof err) != 0) {
        sb_log(NULL, SB_LOG_ERROR, "reload: starting the new pipeline failed: %s", err);
        exit(SB_EXIT_FAILURE);
    }
    sb_log(NULL, SB_LOG_INFO, "configuration reloaded");
}

int sb_daemon_run(const sb_run_opts *o)
{
    char err[2048];
    pipeline p;
    sb_config *probe = sb_config_load(o->config_path, err, sizeof err);
    if (!probe) {
        sb_log(NULL, SB_LOG_ERROR, "%s", err);
        return SB_EXIT_CONFIG;
    }
    apply_log(probe, o);
    sb_ledger_opts lo = {.fsync = probe->fsync,
                         .commit_interval_ms = probe->commit_interval_ms,
                         .retention_ms = probe->retention_ms,
                         .quick_check = probe->ledger_check_at_start,
                         .drop_settled_payload = probe->keep_payload_until_settled};
    const char *state_dir = o->state_dir ? o->state_dir : probe->state_dir;
    /* before the ledger: a second daemon must not even resume it */
    if (sb_ledger_lock(state_dir, err, sizeof err) < 0) {
        sb_log(NULL, SB_LOG_ERROR, "%s", err);
        sb_config_free(probe);
        return SB_EXIT_FAILURE;
    }
    sb_ledger *ledger = sb_ledger_open(state_dir, &lo, err, sizeof err);
    if (!ledger) {
        sb_log(NULL, SB_LOG_ERROR, "run ledger: %s", err);
        sb_config_free(probe);
        return SB_EXIT_FAILURE;
    }
    sb_config_free(probe);

    if (pipeline_build(&p, o, ledger, err, sizeof err) != 0) {
        sb_log(NULL, SB_LOG_ERROR, "%s", err);
        pipeline_free(&p);
        sb_ledger_close(ledger);
        return SB_EXIT_CONFIG;
    }
    if (sb_router_start(p.router, err, sizeof err) != 0) {
        sb_log(NULL, SB_LOG_ERROR, "start failed: %s", err);
        sb_router_stop(p.router, 0);
        pipeline_free(&p);
        sb_ledger_close(ledger);
        return SB_EXIT_FAILURE;
    }
    sb_log(NULL, SB_LOG_INFO, "syncbridge %s started (%s%s)", PACKAGE_VERSION, o->config_path,
           o->once ? ", --once" : "");
    sb_ops *ops = sb_ops_start(p.cfg, ledger, p.router); /* admin endpoint, READY=1, watchdog */

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int rc = SB_EXIT_OK;
    int64_t last_summary = sb_mono_us();
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = o->once ? 20 * 1000000 : 200 * 1000000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            sb_log(NULL, SB_LOG_INFO, "%s received: stopping sources and draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) {
            sb_ops_reload_begin(ops, p.cfg->shutdown_timeout_ms);
            reload(&p, o, ledger);
            sb_ops_reload_end(ops, p.router);
            continue;
        }
        sb_router_tick(p.router);
        sb_ops_tick(ops, p.router);
        if (o->once && sb_router_finished(p.router))
            break;
        if (sb_mono_us() - last_summary > 60 * 1000000LL) {
            last_summary = sb_mono_us();
            log_summary(p.router, "summary");
        }
    }
    sb_ops_stopping(ops, p.cfg->shutdown_timeout_ms); /* STOPPING=1; admin stops before the router */
    int drained = sb_router_stop(p.router, p.cfg->shutdown_timeout_ms) == 0;
    sb_ops_free(ops);
    log_summary(p.router, o->once ? "finished" : "stopped");
    if (o->once && sb_router_sources_failed(p.router))
        rc = SB_EXIT_FAILURE;
    else if (o->once && total_dead(p.router) > 0)
        rc = SB_EXIT_DEAD;
    if (!drained) {
        /* Plugin calls may still be running: do not free under them. The
         * ledger holds what was not finished. */
        sb_ledger_sync(ledger);
        return rc;
    }
    pipeline_free(&p);
    sb_ledger_close(ledger);
    return rc;
}
