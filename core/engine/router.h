/*
 * router.h - the pipeline: sources -> ledger -> routes -> ordered steps.
 *
 * sb_router_new() builds every instance named by the config (options
 * validated against each plugin's table, create() called) and compiles the
 * routes; nothing runs yet, so `syncbridge check` uses it too.
 * sb_router_start() starts sinks and actions, then the step workers,
 * resumes the ledger's pending entries, and finally starts the sources.
 *
 * The path of an event: a source calls sb_source_emit(); the router
 * matches each event against the routes of that source, reserves room in
 * each route's in-flight budget (blocking: backpressure), commits the
 * entries and the source checkpoint to the ledger, and queues each entry
 * at its route's first step. A step's workers take batches (up to
 * batch_max) and call process() on every member of the step (in parallel
 * when the step is a fan-out); OK moves the entry on, RETRY schedules it
 * with exponential backoff and full jitter (at least Retry-After), FAIL or
 * an exhausted budget dead-letters it, FATAL restarts the instance and
 * retries without charging the budget. Each change is written to the
 * ledger, so after a crash the entry resumes at its first unfinished step.
 *
 * Ownership: the router owns its instances and entries; the config,
 * registry and ledger are borrowed and MUST outlive it.
 * Threading: new/start/stop/free and tick from the control thread.
 */
#ifndef SB_ROUTER_H
#define SB_ROUTER_H

#include <stdint.h>
#include <jansson.h>

#include "config/config.h"
#include "ledger/ledger.h"
#include "engine/loader.h"

typedef struct sb_router sb_router;

sb_router *sb_router_new(const sb_config *cfg, sb_registry *reg, sb_ledger *ledger, int once, char *errstr,
                         size_t errstr_size);
int sb_router_start(sb_router *r, char *errstr, size_t errstr_size);

/* Periodic housekeeping (control thread, about once a second): DLQ
 * replays requested from the CLI, ledger pruning. */
void sb_router_tick(sb_router *r);

/* --once: non-zero when every source has returned and every entry
 * (including resumed ones and scheduled retries) has settled. */
int sb_router_finished(sb_router *r);

/* Stop sources, let the steps drain what is queued for up to timeout_ms,
 * then stop workers and instances. Returns 0 if drained, -1 if the timeout
 * hit (entries left stay pending in the ledger and resume next start). */
int sb_router_stop(sb_router *r, int64_t timeout_ms);
/* NULL-safe. After a stop that timed out, in-flight plugin calls may still
 * run; the caller should exit the process instead of freeing. */
void sb_router_free(sb_router *r);

/* `dlq drop` with a config: hand one dropped event and the state `member`
 * kept for it to the instance's abandon() (if it has one), outside any
 * router, so that remote work still open (an abort that failed when the
 * event was dead-lettered) is cancelled. The batch has no ledger entry:
 * states saved and progress reported are not recorded. `state` is
 * borrowed. Main thread, with no other call into the instance. */
void sb_step_abandon_offline(sb_instance *ins, sb_event *ev, json_t *state);

/* Print the resolved routes (for `syncbridge check`). */
void sb_router_describe(const sb_router *r, FILE *out);

/* --once: non-zero if some source ended with an error. */
int sb_router_sources_failed(const sb_router *r);

/* Counters for metrics and tests: JSON object
 * {"routes":{name:{"in","settled","done","dead","retried","duplicates",
 *  "inflight","inflight_bytes","latency_us":{"p50","p99","max","count"}}},
 *  "sources":{name:{"emitted","unrouted","restarts"}}}. Caller decrefs. */
json_t *sb_router_stats(sb_router *r);

#endif
