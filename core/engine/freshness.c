/* freshness.c - per-table lag from a run's on-prem finish to the end of
 * its route, and the runs still pending (see freshness.h). */
#include "build_config.h"
#include "engine/freshness.h"
#include "util/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct pend {
    int64_t finished_us;
    int64_t id;
    int settled;  /* removed, its place kept until the next compaction */
} pend;

/* The pending runs of a table, sorted by (finished_us, id). Runs settle
 * mostly oldest first, so removal only marks the entry and moves `head`
 * past the settled ones; the array is compacted when the marks outnumber
 * the live entries. (Shifting the array at every settle cost O(pending)
 * each: 15 % of a worker's CPU with 50,000 runs queued.) */
typedef struct table {
    char *name;
    sb_hist lag;
    pend *p;      /* p[head] is the oldest pending run, if live > 0 */
    size_t head, n, cap;
    size_t live;  /* entries in [head, n) not settled */
} table;

struct sb_freshness {
    pthread_mutex_t mu;
    table **t;
    size_t n;
    int *idx;     /* open addressing over t by name hash; -1 = empty */
    size_t idx_cap;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

sb_freshness *sb_freshness_new(void)
{
    sb_freshness *f = sb_xcalloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->idx_cap = 4096; /* > 2 * (SB_FRESH_MAX_TABLES + 1): never resized */
    f->idx = sb_xmalloc(f->idx_cap * sizeof *f->idx);
    for (size_t i = 0; i < f->idx_cap; i++)
        f->idx[i] = -1;
    return f;
}

void sb_freshness_free(sb_freshness *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->t[i]->name);
        free(f->t[i]->p);
        free(f->t[i]);
    }
    free(f->t);
    free(f->idx);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* The slot of table `name`, made if new (or "_other" past the cap). Locked. */
static int slot_of(sb_freshness *f, const char *name)
{
    if (f->n >= SB_FRESH_MAX_TABLES && strcmp(name, "_other") != 0) {
        size_t h = hash(name) & (f->idx_cap - 1);
        while (f->idx[h] >= 0) {
            if (strcmp(f->t[f->idx[h]]->name, name) == 0)
                return f->idx[h];
            h = (h + 1) & (f->idx_cap - 1);
        }
        return slot_of(f, "_other");
    }
    size_t h = hash(name) & (f->idx_cap - 1);
    while (f->idx[h] >= 0) {
        if (strcmp(f->t[f->idx[h]]->name, name) == 0)
            return f->idx[h];
        h = (h + 1) & (f->idx_cap - 1);
    }
    table *t = sb_xcalloc(1, sizeof *t);
    t->name = sb_strdup(name);
    f->t = sb_xrealloc(f->t, (f->n + 1) * sizeof *f->t);
    f->t[f->n] = t;
    f->idx[h] = (int)f->n;
    return (int)f->n++;
}

static int pend_cmp(int64_t fa, int64_t ia, int64_t fb, int64_t ib)
{
    return fa < fb ? -1 : fa > fb ? 1 : ia < ib ? -1 : ia > ib ? 1 : 0;
}

/* First index from head whose (finished, id) is >= the key. */
static size_t lower_bound(const table *t, int64_t fin, int64_t id)
{
    size_t lo = t->head, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pend_cmp(t->p[mid].finished_us, t->p[mid].id, fin, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Drop the settled entries. Locked. */
static void compact(table *t)
{
    size_t k = 0;
    for (size_t i = t->head; i < t->n; i++)
        if (!t->p[i].settled)
            t->p[k++] = t->p[i];
    t->head = 0;
    t->n = k;
}

int sb_freshness_track(sb_freshness *f, int64_t entry_id, const sb_event *ev, int64_t *finished_us)
{
    int64_t fin;
    if (sb_parse_iso8601_us(sb_event_get_string(ev, "finished_at"), &fin) != 0)
        return -1;
    const char *schema = sb_event_get_string(ev, "schema"), *tab = sb_event_get_string(ev, "table");
    char name[256];
    if (tab && schema)
        snprintf(name, sizeof name, "%s.%s", schema, tab);
    else
        snprintf(name, sizeof name, "%s", tab ? tab : "_unknown");
    pthread_mutex_lock(&f->mu);
    int slot = slot_of(f, name);
    table *t = f->t[slot];
    if (t->n == t->cap && t->live < t->n / 2)
        compact(t);
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->p = sb_xrealloc(t->p, t->cap * sizeof *t->p);
    }
    size_t at = lower_bound(t, fin, entry_id); /* the end, unless runs come out of order */
    memmove(&t->p[at + 1], &t->p[at], (t->n - at) * sizeof *t->p);
    t->p[at] = (pend){fin, entry_id, 0};
    t->n++;
    t->live++;
    pthread_mutex_unlock(&f->mu);
    *finished_us = fin;
    return slot;
}

/* Locked. */
static void remove_pending(table *t, int64_t id, int64_t fin)
{
    size_t at = lower_bound(t, fin, id);
    while (at < t->n && t->p[at].id == id && t->p[at].finished_us == fin && t->p[at].settled)
        at++; /* the same run tracked again after it was forgotten */
    if (at >= t->n || t->p[at].id != id || t->p[at].finished_us != fin)
        return;
    t->p[at].settled = 1;
    t->live--;
    while (t->head < t->n && t->p[t->head].settled)
        t->head++;
    if (t->live == 0)
        t->head = t->n = 0;
    else if (t->n - t->head > 2 * t->live + 64)
        compact(t);
}

void sb_freshness_settle(sb_freshness *f, int slot, int64_t entry_id, int64_t finished_us, int done, int64_t now_us)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&f->mu);
    table *t = (size_t)slot < f->n ? f->t[slot] : NULL;
    if (t)
        remove_pending(t, entry_id, finished_us);
    pthread_mutex_unlock(&f->mu);
    if (t && done) /* a clock behind the on-prem one would give a negative lag */
        sb_hist_add(&t->lag, now_us > finished_us ? now_us - finished_us : 0);
}

void sb_freshness_forget(sb_freshness *f, int slot, int64_t entry_id, int64_t finished_us)
{
    sb_freshness_settle(f, slot, entry_id, finished_us, 0, 0);
}

int sb_freshness_table(sb_freshness *f, size_t i, const char **name, const sb_hist **lag, size_t *pending,
                       int64_t *oldest_finished_us)
{
    pthread_mutex_lock(&f->mu);
    int rc = -1;
    if (i < f->n) {
        table *t = f->t[i];
        *name = t->name;
        *lag = &t->lag;
        *pending = t->live;
        *oldest_finished_us = t->live ? t->p[t->head].finished_us : 0;
        rc = 0;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}
