/* event_blocks.c - event memory given back for reuse (event_blocks.h). */
#include "build_config.h"
#include "events/event_blocks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define BLOCKS_POOLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLOCKS_POOLED 0
#endif
#endif
#ifndef BLOCKS_POOLED
#define BLOCKS_POOLED 1
#endif

/* Sizes are rounded up to this, so that a block fits the next event of
 * about the same size. */
#define BLOCK_ROUND 256
/* Bigger blocks go to malloc and free: events that size are rare, and the
 * pool's memory stays bounded (BLOCK_MAX * POOL_MAX, 4 MiB). */
#define BLOCK_MAX 2048
#define POOL_MAX 2048
/* A thread's gifts move to the pool this many at a time: one lock per
 * that many events. */
#define BLOCKS_MOVED 64

/* A block while it is given back: its first bytes. */
typedef struct spare {
    struct spare *next;
    uint32_t cap;
} spare;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static spare *pool;            /* under pool_mu */
static _Atomic size_t npool;   /* written under pool_mu; read without it to skip an empty pool */

static _Thread_local spare *given, *given_last; /* this thread's gifts, not yet in the pool */
static _Thread_local size_t ngiven;
static _Thread_local spare *taken;              /* taken from the pool, not yet used */
static _Thread_local int has_exit_hook;

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;

static void free_list(spare *s)
{
    while (s) {
        spare *next = s->next;
        free(s);
        s = next;
    }
}

/* This thread's gifts into the pool, or to free() what the pool has no room for. */
static void move_given(void)
{
    if (!given)
        return;
    pthread_mutex_lock(&pool_mu);
    size_t n = atomic_load_explicit(&npool, memory_order_relaxed);
    int room = n + ngiven <= POOL_MAX;
    if (room) {
        given_last->next = pool;
        pool = given;
        atomic_store_explicit(&npool, n + ngiven, memory_order_relaxed);
    }
    pthread_mutex_unlock(&pool_mu);
    if (!room)
        free_list(given);
    given = given_last = NULL;
    ngiven = 0;
}

/* A thread that exits: what it holds goes back (the key's value is only a
 * marker that the thread has lists). */
static void thread_exits(void *marker)
{
    (void)marker;
    move_given();
    free_list(taken);
    taken = NULL;
    has_exit_hook = 0; /* a later destructor's gift sets the key again */
}

static void make_key(void) { pthread_key_create(&exit_key, thread_exits); }

static void hook_thread_exit(void)
{
    if (has_exit_hook)
        return;
    pthread_once(&key_once, make_key);
    pthread_setspecific(exit_key, &has_exit_hook);
    has_exit_hook = 1;
}

void *sb_event_block_take(size_t need, uint32_t *cap)
{
    *cap = 0;
    if (!BLOCKS_POOLED || need > BLOCK_MAX)
        return malloc(need);
    size_t want = (need + BLOCK_ROUND - 1) / BLOCK_ROUND * BLOCK_ROUND;
    if (!taken && atomic_load_explicit(&npool, memory_order_relaxed)) {
        hook_thread_exit();
        pthread_mutex_lock(&pool_mu);
        taken = pool;
        pool = NULL;
        atomic_store_explicit(&npool, 0, memory_order_relaxed);
        pthread_mutex_unlock(&pool_mu);
    }
    while (taken) {
        spare *s = taken;
        taken = s->next;
        if (s->cap >= want) {
            *cap = s->cap;
            return s;
        }
        free(s); /* too small for this one: events of about one size are the rule */
    }
    void *block = malloc(want);
    if (block)
        *cap = (uint32_t)want;
    return block;
}

void sb_event_block_give(void *block, uint32_t cap)
{
    spare *s = block;
    hook_thread_exit();
    s->cap = cap;
    s->next = given;
    if (!given)
        given_last = s;
    given = s;
    if (++ngiven >= BLOCKS_MOVED)
        move_given();
}
