/* histogram.c - log-linear buckets: 8 sub-buckets per power of two. */
#include "build_config.h"
#include "util/histogram.h"

static int bucket_of(uint64_t v)
{
    if (v < 8)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int mant = (int)((v >> (e - 3)) & 7);
    int idx = (e - 2) * 8 + mant;
    return idx < SB_HIST_BUCKETS ? idx : SB_HIST_BUCKETS - 1;
}

static uint64_t bucket_upper(int idx)
{
    if (idx < 8)
        return (uint64_t)idx;
    int e = idx / 8 + 2, mant = idx % 8;
    return ((uint64_t)(9 + mant) << (e - 3)) - 1;
}

void sb_hist_add(sb_hist *h, int64_t us)
{
    uint64_t v = us < 0 ? 0 : (uint64_t)us;
    atomic_fetch_add_explicit(&h->b[bucket_of(v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak(&h->max, &m, v))
        ;
}

int64_t sb_hist_quantile(const sb_hist *h, double q)
{
    uint64_t total = atomic_load(&h->count);
    if (!total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total)
        want = total - 1;
    uint64_t seen = 0;
    for (int i = 0; i < SB_HIST_BUCKETS; i++) {
        seen += atomic_load_explicit(&h->b[i], memory_order_relaxed);
        if (seen > want) {
            uint64_t up = bucket_upper(i), mx = atomic_load(&h->max);
            return (int64_t)(up < mx ? up : mx);
        }
    }
    return (int64_t)atomic_load(&h->max);
}

uint64_t sb_hist_count_le(const sb_hist *h, int64_t le_us)
{
    if (le_us < 0)
        return 0;
    uint64_t n = 0;
    for (int i = 0; i < SB_HIST_BUCKETS && bucket_upper(i) <= (uint64_t)le_us; i++)
        n += atomic_load_explicit(&h->b[i], memory_order_relaxed);
    return n;
}
