/* event_blocks.c - event memory given back for reuse (event_blocks.h). */
#include "build_config.h"
#include "events/event_blocks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* Under AddressSanitizer a block given back is marked unaddressable but
 * for its list header, as freed memory is, so that a use after the event
 * was freed is reported until the block is taken again; and a block
 * taken is addressable only up to the size asked for. */
#if defined(__SANITIZE_ADDRESS__)
#define BLOCKS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLOCKS_ASAN 1
#endif
#endif
#ifdef BLOCKS_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Sizes are rounded up to this, so that a block fits the next event of
 * about the same size. */
#define BLOCK_ROUND 256
/* Bigger blocks go to malloc and free: events that size are rare, and the
 * memory kept stays bounded: the pool's BLOCK_MAX * POOL_MAX (4 MiB), and
 * up to 2 * BLOCKS_MOVED blocks in each thread's own lists. */
#define BLOCK_MAX 2048
#define POOL_MAX 2048
/* Blocks move between a thread's lists and the pool this many at a time:
 * one lock per that many events. */
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
        UNPOISON(s, s->cap);
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

/* A thread that exits: its gifts go to the pool, what it had taken to
 * free() (the key's value is only a marker that the thread has lists). */
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

/* Up to BLOCKS_MOVED blocks from the head of the pool into `taken`. */
static void take_from_pool(void)
{
    hook_thread_exit();
    pthread_mutex_lock(&pool_mu);
    spare *last = pool;
    size_t n = 1;
    for (; last && last->next && n < BLOCKS_MOVED; n++)
        last = last->next;
    if (last) {
        taken = pool;
        pool = last->next;
        last->next = NULL;
        atomic_store_explicit(&npool, atomic_load_explicit(&npool, memory_order_relaxed) - n,
                              memory_order_relaxed);
    }
    pthread_mutex_unlock(&pool_mu);
}

void *sb_event_block_take(size_t need, uint32_t *cap)
{
    *cap = 0;
    if (need > BLOCK_MAX)
        return malloc(need);
    size_t want = (need + BLOCK_ROUND - 1) / BLOCK_ROUND * BLOCK_ROUND;
    if (!taken && atomic_load_explicit(&npool, memory_order_relaxed))
        take_from_pool();
    while (taken) {
        spare *s = taken;
        taken = s->next;
        if (s->cap >= want) {
            UNPOISON(s, s->cap);
            POISON((char *)s + need, s->cap - need);
            *cap = s->cap;
            return s;
        }
        /* too small for this one: freed, so that the pool follows the
         * events' size when it changes (about one size is the rule) */
        UNPOISON(s, s->cap);
        free(s);
    }
    char *block = malloc(want);
    if (block) {
        POISON(block + need, want - need);
        *cap = (uint32_t)want;
    }
    return block;
}

void sb_event_block_give(void *block, uint32_t cap)
{
    spare *s = block;
#ifdef BLOCKS_ASAN
    /* given back twice (an event freed twice): a block taken is
     * addressable past its header (need >= an event), one given is not */
    if (__asan_address_is_poisoned((char *)s + sizeof *s)) {
        fprintf(stderr, "event_blocks: block %p given back twice (an event freed twice)\n", block);
        abort();
    }
#endif
    hook_thread_exit();
    UNPOISON(s, cap); /* what take left unaddressable past the size asked for */
    s->cap = cap;
    s->next = given;
    POISON((char *)s + sizeof *s, cap - sizeof *s);
    if (!given)
        given_last = s;
    given = s;
    if (++ngiven >= BLOCKS_MOVED)
        move_given();
}
