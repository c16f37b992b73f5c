/*
 * metrics.h - the Prometheus text exposition (format 0.0.4) served by the
 * admin endpoint's /metrics, and the hook other layers use to add lines.
 *
 * sb_metrics_render() writes, in order: build info; per route counters,
 * gauges and the latency histogram, per step queue depth and per source
 * counters (from the router, when one is attached); ledger entries by
 * state and file sizes (when a ledger is given); process metrics
 * (resident memory, CPU seconds, open fds, start time, from /proc); then
 * the text of every registered contributor.
 *
 * Contributors (e.g. the Google access layer: HTTP requests by plugin and
 * status, token refreshes) register a callback once with
 * sb_metrics_register(); it is called on every scrape, from the admin
 * server's thread, and MUST write complete families (# HELP, # TYPE, then
 * samples) with sb_metrics_printf()/sb_metrics_label(), quickly and
 * without blocking. A family name MUST NOT be written by two contributors.
 *
 * Threading: register/unregister/render are safe from any thread; a
 * callback runs with the registry lock held, so sb_metrics_unregister()
 * returns only once no call of that callback is running (its `ud` may then
 * be freed), and a callback MUST NOT call register/unregister.
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stddef.h>

struct sb_router;
struct sb_ledger;

/* An output buffer (opaque to contributors). */
typedef struct sb_metrics_out sb_metrics_out;

typedef void (*sb_metrics_fn)(sb_metrics_out *out, void *ud);

/* Add a contributor under a unique name. 0, or -1 if the name is taken. */
int sb_metrics_register(const char *name, sb_metrics_fn fn, void *ud);
/* Remove it (no-op if absent). */
void sb_metrics_unregister(const char *name);

void sb_metrics_printf(sb_metrics_out *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a label value escaped per the exposition format (\\ \" \n),
 * without the surrounding quotes. */
void sb_metrics_label(sb_metrics_out *out, const char *value);

/* The whole exposition as a malloc'd string (caller frees); router and
 * ledger MAY be NULL (their sections are then left out); state_dir is
 * where ledger.db lives (MAY be NULL). */
char *sb_metrics_render(struct sb_router *router, struct sb_ledger *ledger, const char *state_dir, size_t *len);

#endif
