/*
 * admin.h - the HTTP admin endpoint (libmicrohttpd), off by default.
 *
 *   GET /healthz   200 "ok" while the process runs (liveness).
 *   GET /readyz    200 {"ready":true} when a configuration is loaded (a
 *                  router is attached), every source is running, the
 *                  ledger is writable, and no step worker has held a batch
 *                  longer than the stuck deadline; else 503
 *                  {"ready":false,"reasons":[...]}.
 *   GET /metrics   Prometheus text format 0.0.4 (see metrics.h).
 *   GET /api/runs  the ledger's entries as a JSON array, newest first
 *                  (sb_ledger_list), filtered by the query parameters
 *                  table, status (pending|done|dead), route, source,
 *                  since (epoch seconds) and limit (1..10000, default 100).
 *
 * The server runs its own thread. It borrows the ledger and the router:
 * the daemon attaches the router with sb_admin_set_router() after starting
 * it and detaches it (NULL) before stopping it, so a request never sees a
 * router being torn down; set_router waits for requests using the old one.
 *
 * Threading: start/stop/set_router from the control thread.
 */
#ifndef SB_ADMIN_H
#define SB_ADMIN_H

#include <stddef.h>
#include <stdint.h>

struct sb_router;
struct sb_ledger;

typedef struct sb_admin sb_admin;

typedef struct sb_admin_opts {
    const char *bind;         /* IPv4/IPv6 literal or host name; NULL = 127.0.0.1 */
    int port;                 /* 0 = any free port (tests) */
    struct sb_ledger *ledger; /* borrowed, MUST outlive the server; MAY be NULL */
    const char *state_dir;    /* where ledger.db lives (copied) */
    int64_t stuck_after_us;   /* /readyz deadline for a batch held by a worker; 0 = 5 minutes */
} sb_admin_opts;

/* Bind and start serving; NULL with errstr (e.g. "127.0.0.1:8686:
 * Address already in use", or that admin support was not built). */
sb_admin *sb_admin_start(const sb_admin_opts *opts, char *errstr, size_t errstr_size);
/* The port actually bound (useful with port 0). */
int sb_admin_port(const sb_admin *a);
/* Attach (or detach with NULL) the router the endpoints report on. */
void sb_admin_set_router(sb_admin *a, struct sb_router *r);
/* Stop serving, wait for running requests, free. NULL-safe. */
void sb_admin_stop(sb_admin *a);

#endif
