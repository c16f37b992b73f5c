/*
 * syncbridge/metrics.h - a plugin's own Prometheus metrics, served by the
 * admin endpoint's /metrics beside the core's. Since ABI 2.0.
 *
 * A plugin asks for one series per instance and metric:
 *
 *     self->opened = sb_metric_new(ins, SB_METRIC_COUNTER, "filewatch_opens_total",
 *                                  "Opens and reopens of followed files.");
 *     ...
 *     sb_metric_add(self->opened, 1);     (any thread, lock-free)
 *     ...
 *     sb_metric_free(self->opened);       (in destroy())
 *
 * and /metrics then shows
 *
 *     # HELP syncbridge_filewatch_opens_total Opens and reopens of followed files.
 *     # TYPE syncbridge_filewatch_opens_total counter
 *     syncbridge_filewatch_opens_total{instance="logs"} 12
 *
 * Every instance of the family is one line under one HELP/TYPE header.
 * Name the family after the plugin ("<plugin>_<what>", counters ending in
 * "_total", per Prometheus' naming rules) so two plugins never share one.
 *
 * Ownership: sb_metric_new() returns a series the caller owns and frees
 * with sb_metric_free(); the family (name, type, help) lives as long as
 * the process, so a series created again after a reload continues under
 * the same header.
 *
 * Threading: sb_metric_add()/sb_metric_set() are atomic and MAY be called
 * from any thread at any rate. sb_metric_new()/sb_metric_free() take a
 * lock and MAY be called from any thread, but not while another thread
 * uses the same series.
 */
#ifndef SYNCBRIDGE_METRICS_H
#define SYNCBRIDGE_METRICS_H

#include <stdint.h>
#include <syncbridge/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sb_metric_type {
    SB_METRIC_COUNTER = 1, /* only goes up (sb_metric_add) */
    SB_METRIC_GAUGE = 2    /* a level that goes up and down (sb_metric_set, or add) */
} sb_metric_type;

typedef struct sb_metric sb_metric;

/* A series of family "syncbridge_<name>" with the label instance="<the
 * instance's name>" (empty when `ins` is NULL), starting at 0. `name` is [a-z_][a-z0-9_]*; `help` is
 * one line. The first call for a family fixes its type and help; a later
 * call with another type, an invalid name, or a second series for the same
 * instance returns NULL and logs why on the instance. sb_metric_add() and
 * sb_metric_set() accept NULL, so a plugin MAY ignore that failure. */
sb_metric *sb_metric_new(const sb_instance *ins, sb_metric_type type, const char *name, const char *help);

/* Add `n` to the series (counter or gauge). NULL-safe. */
void sb_metric_add(sb_metric *m, uint64_t n);

/* Set a gauge to `value` (a counter is set too: use it only to publish a
 * total the plugin already keeps). NULL-safe. */
void sb_metric_set(sb_metric *m, int64_t value);

/* Remove the series from /metrics and free it. NULL-safe. */
void sb_metric_free(sb_metric *m);

#ifdef __cplusplus
}
#endif
#endif
