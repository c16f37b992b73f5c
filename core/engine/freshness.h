/*
 * freshness.h - how far each table's runs lag behind their on-prem finish,
 * per route: a histogram of (settled done - the run's `finished_at`) and the
 * runs still in flight, whose oldest finish makes the "oldest pending" gauge.
 *
 * An entry is tracked when its event has a `finished_at` time (Run
 * Replicator runs: filewatch, kafka/pubsub_pull commands); its table is the
 * event's `schema`.`table` (or `table`, or "_unknown"). At most
 * SB_FRESH_MAX_TABLES tables per route get series of their own; runs of
 * later tables count under "_other", so a flood of table names cannot
 * blow up /metrics.
 *
 * Ownership: the route owns its tracker. Threading: every call takes the
 * tracker's mutex; callable from any thread.
 */
#ifndef SB_FRESHNESS_H
#define SB_FRESHNESS_H

#include <stddef.h>
#include <stdint.h>
#include <syncbridge/event.h>
#include "util/histogram.h"

#define SB_FRESH_MAX_TABLES 1000

typedef struct sb_freshness sb_freshness;

sb_freshness *sb_freshness_new(void);
void sb_freshness_free(sb_freshness *f);

/* An entry was admitted (or resumed) with event ev. Returns the table
 * slot to keep in the entry (>= 0), or -1 when ev carries no readable
 * finished_at (then *finished_us is untouched). */
int sb_freshness_track(sb_freshness *f, int64_t entry_id, const sb_event *ev, int64_t *finished_us);

/* The entry tracked in `slot` settled: done (observe now - finished) or
 * dead-lettered (no longer pending, no lag). */
void sb_freshness_settle(sb_freshness *f, int slot, int64_t entry_id, int64_t finished_us, int done,
                         int64_t now_us);

/* Forget an entry without settling it (the router is freed with entries
 * still in flight). */
void sb_freshness_forget(sb_freshness *f, int slot, int64_t entry_id, int64_t finished_us);

/* One table's view, for /metrics. Returns 0 while i < number of tables,
 * filling *name (owned by the tracker, valid while it lives), *lag (the
 * histogram, lock-free), *pending and *oldest_finished_us (0 when none). */
int sb_freshness_table(sb_freshness *f, size_t i, const char **name, const sb_hist **lag, size_t *pending,
                       int64_t *oldest_finished_us);

#endif
