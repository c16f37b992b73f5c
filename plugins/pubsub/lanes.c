/* lanes.c - a Pub/Sub ordering key's messages kept in order across
 * batches and retries (lanes.h). */
#include "lanes.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_BUCKETS 256

typedef struct lane {
    struct lane *next; /* in its bucket */
    char *key;
    char **ids; /* owed, oldest first; owned */
    size_t n, cap;
    unsigned holds; /* batches held back since the head last moved */
} lane;

struct ps_lanes {
    pthread_mutex_t mu;
    lane *buckets[N_BUCKETS];
    _Atomic size_t count; /* lanes: read without the lock to skip the lookups when 0 */
};

ps_lanes *ps_lanes_new(void)
{
    ps_lanes *l = calloc(1, sizeof *l);
    if (l)
        pthread_mutex_init(&l->mu, NULL);
    return l;
}

static void lane_free(lane *ln)
{
    for (size_t i = 0; i < ln->n; i++)
        free(ln->ids[i]);
    free(ln->ids);
    free(ln->key);
    free(ln);
}

void ps_lanes_free(ps_lanes *l)
{
    if (!l)
        return;
    for (size_t b = 0; b < N_BUCKETS; b++)
        for (lane *ln = l->buckets[b], *next; ln; ln = next) {
            next = ln->next;
            lane_free(ln);
        }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

size_t ps_lanes_count(ps_lanes *l)
{
    return atomic_load(&l->count);
}

static size_t bucket_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % N_BUCKETS;
}

/* The key's lane, or NULL; *link is where it hangs (for removal). */
static lane *find(ps_lanes *l, const char *key, lane ***link)
{
    lane **at = &l->buckets[bucket_of(key)];
    while (*at && strcmp((*at)->key, key) != 0)
        at = &(*at)->next;
    if (link)
        *link = at;
    return *at;
}

static void drop_if_empty(ps_lanes *l, lane **link)
{
    lane *ln = *link;
    if (ln->n)
        return;
    *link = ln->next;
    lane_free(ln);
    atomic_fetch_sub(&l->count, 1);
}

#define NOT_OWED SIZE_MAX

/* Where id is in the lane, or NOT_OWED. Lanes are short: a key's events
 * that wait behind one retry. */
static size_t position(const lane *ln, const char *id)
{
    for (size_t i = 0; ln && i < ln->n; i++)
        if (strcmp(ln->ids[i], id) == 0)
            return i;
    return NOT_OWED;
}

typedef struct placed {
    size_t pos, k, idx;
} placed;

static int placed_cmp(const void *a, const void *b)
{
    const placed *x = a, *y = b;
    if (x->pos != y->pos)
        return x->pos < y->pos ? -1 : 1;
    return (x->k > y->k) - (x->k < y->k);
}

#define WAIT_FIRST_MS 50
#define WAIT_MAX_MS 2000

size_t ps_lanes_admit(ps_lanes *l, const char *key, const char *const *ids, size_t *idx, size_t n,
                      int64_t *wait_ms)
{
    *wait_ms = WAIT_FIRST_MS;
    if (!atomic_load(&l->count) || !n)
        return n;
    pthread_mutex_lock(&l->mu);
    lane *ln = find(l, key, NULL);
    if (!ln) {
        pthread_mutex_unlock(&l->mu);
        return n;
    }
    placed *pl = malloc(n * sizeof *pl);
    if (!pl) { /* out of memory: hold the whole key back, which keeps its order */
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    for (size_t k = 0; k < n; k++)
        pl[k] = (placed){position(ln, ids[idx[k]]), k, idx[k]};
    qsort(pl, n, sizeof *pl, placed_cmp);
    size_t go = 0;
    while (go < n && pl[go].pos == go) /* the head and what follows it */
        go++;
    if (go == ln->n) /* the lane is used up: the key's newer events may follow */
        while (go < n && pl[go].pos == NOT_OWED)
            go++;
    for (size_t k = 0; k < n; k++)
        idx[k] = pl[k].idx;
    free(pl);
    if (go < n) {
        unsigned shift = ln->holds < 6 ? ln->holds : 6;
        *wait_ms = (int64_t)WAIT_FIRST_MS << shift;
        if (*wait_ms > WAIT_MAX_MS)
            *wait_ms = WAIT_MAX_MS;
        ln->holds++;
    }
    pthread_mutex_unlock(&l->mu);
    return go;
}

static int append(lane *ln, const char *id)
{
    if (ln->n == ln->cap) {
        size_t cap = ln->cap ? 2 * ln->cap : 8;
        char **grown = realloc(ln->ids, cap * sizeof *grown);
        if (!grown)
            return -1;
        ln->ids = grown;
        ln->cap = cap;
    }
    if (!(ln->ids[ln->n] = strdup(id)))
        return -1;
    ln->n++;
    return 0;
}

/* Something left the lane: its next batch is looked at soon again. */
static void remove_at(lane *ln, size_t i)
{
    ln->holds = 0;
    free(ln->ids[i]);
    memmove(ln->ids + i, ln->ids + i + 1, (ln->n - i - 1) * sizeof *ln->ids);
    ln->n--;
}

int ps_lanes_settle(ps_lanes *l, const char *key, const char *const *ids, const size_t *idx, size_t n,
                    const unsigned char *owed)
{
    int any_owed = 0;
    for (size_t k = 0; k < n && !any_owed; k++)
        any_owed = owed[idx[k]];
    if (!any_owed && !atomic_load(&l->count))
        return 0;
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    lane **link;
    lane *ln = find(l, key, &link);
    if (!ln && any_owed) {
        ln = calloc(1, sizeof *ln);
        if (!ln || !(ln->key = strdup(key))) {
            free(ln);
            pthread_mutex_unlock(&l->mu);
            return -1;
        }
        *link = ln;
        atomic_fetch_add(&l->count, 1);
    }
    for (size_t k = 0; ln && k < n; k++) {
        size_t at = position(ln, ids[idx[k]]);
        if (!owed[idx[k]] && at != NOT_OWED)
            remove_at(ln, at);
        else if (owed[idx[k]] && at == NOT_OWED && append(ln, ids[idx[k]]) != 0)
            rc = -1;
    }
    if (ln)
        drop_if_empty(l, link);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void ps_lanes_forget(ps_lanes *l, const char *key, const char *id)
{
    if (!atomic_load(&l->count))
        return;
    pthread_mutex_lock(&l->mu);
    lane **link;
    lane *ln = find(l, key, &link);
    size_t at = position(ln, id);
    if (at != NOT_OWED) {
        remove_at(ln, at);
        drop_if_empty(l, link);
    }
    pthread_mutex_unlock(&l->mu);
}
