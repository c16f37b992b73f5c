/*
 * histogram.h - a lock-free latency histogram (microseconds) with about
 * 12% bucket precision, for p50/p99 in stats and benchmarks.
 * Threading: sb_hist_add from any thread; reads are approximate snapshots.
 */
#ifndef SB_HISTOGRAM_H
#define SB_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#define SB_HIST_BUCKETS 328

typedef struct sb_hist {
    _Atomic uint64_t b[SB_HIST_BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t max;
    _Atomic uint64_t sum;   /* of every value added, for Prometheus _sum */
} sb_hist;

void sb_hist_add(sb_hist *h, int64_t us);
/* q in [0,1]; returns an upper bound of the bucket holding the quantile. */
int64_t sb_hist_quantile(const sb_hist *h, double q);
/* Number of values <= le_us, counted from whole buckets: a bucket is
 * included when its upper bound is <= le_us, so the result never counts a
 * value above le_us (it may miss some just below it, by the bucket
 * precision). Non-decreasing in le_us: usable as a cumulative
 * Prometheus _bucket{le=...}. */
uint64_t sb_hist_count_le(const sb_hist *h, int64_t le_us);

#endif
