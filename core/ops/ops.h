/*
 * ops.h - what the daemon does for its operators around the router's
 * lifecycle: the admin endpoint (admin.h), systemd notifications
 * (sdnotify.h: READY, RELOADING, STOPPING, STATUS) and the watchdog.
 *
 * The daemon calls these at its lifecycle points, and nothing else:
 *   sb_ops_start         after the router started (sources running)
 *   sb_ops_tick          every main-loop iteration
 *   sb_ops_reload_begin  before the running router is stopped for a reload
 *   sb_ops_reload_end    once the new (or, if rejected, the old) router runs
 *   sb_ops_stopping      on SIGTERM/SIGINT or --once end, before draining
 *   sb_ops_free          at exit
 *
 * Watchdog (when systemd sets WATCHDOG_USEC, i.e. WatchdogSec= in the
 * unit): WATCHDOG=1 is sent only from the main loop, so a stuck main loop
 * stops the pings; and only while no step worker has held its current
 * batch longer than WatchdogSec/2, so a stalled plugin call (a hung
 * network call, a deadlock) stops them too. systemd then kills the
 * service and restarts it (Restart=on-failure); the ledger resumes the
 * entry at its step. An idle router (no batch held) always pings. During a
 * drain (reload or stop) the main thread blocks for up to
 * shutdown_timeout, so the watchdog is extended by that much for the
 * drain (WATCHDOG_USEC=) and restored after a reload.
 *
 * Threading: control thread only.
 */
#ifndef SB_OPS_H
#define SB_OPS_H

#include <stdint.h>

#include "config/config.h"
#include "ledger/ledger.h"
#include "engine/router.h"

typedef struct sb_ops sb_ops;

/* Never fails: an admin endpoint that cannot bind is logged as an error
 * and the daemon runs without it (the unit's health checks will notice). */
sb_ops *sb_ops_start(const sb_config *cfg, sb_ledger *ledger, sb_router *r);
void sb_ops_tick(sb_ops *o, sb_router *r);
void sb_ops_reload_begin(sb_ops *o, int64_t shutdown_timeout_ms);
void sb_ops_reload_end(sb_ops *o, sb_router *r);
void sb_ops_stopping(sb_ops *o, int64_t shutdown_timeout_ms);
void sb_ops_free(sb_ops *o); /* NULL-safe */

#endif
