/*
 * syncbridge/plugin.h - the plugin ABI: what a shared-object plugin exports
 * and the calls the core makes into it.
 *
 * A plugin is a shared object that exports exactly one symbol,
 * SB_PLUGIN_SYMBOL ("syncbridge_plugin"), a const sb_plugin descriptor.
 * The loader reads abi_major, abi_minor and struct_size first and refuses
 * the file (naming it, with expected and found values) on any mismatch
 * before it reads any other member.
 *
 * Lifecycle, all driven by the core:
 *   create(ins) -> start(self) -> [run | process ...] -> stop(self) -> destroy(self)
 *
 * Threading contract:
 *   - create, start, stop, destroy are called from the core's control
 *     thread, never concurrently with each other for one instance. The one
 *     exception: after process() reports SB_RESULT_FATAL, a worker thread
 *     restarts the instance (stop, destroy, create, start) while no other
 *     call into that instance is in progress.
 *   - A source's run() is called once on a thread of its own and MUST
 *     return soon after sb_source_stopping() becomes true.
 *   - A sink's or action's process() is called from a worker thread. Unless
 *     the descriptor sets SB_PLUGIN_CONCURRENT, the core never calls
 *     process() concurrently for one instance; with the flag it MAY.
 *   - stop() on a source is called from the control thread while run() is
 *     still executing on its own thread; it MAY be used to wake run().
 *
 * Ownership: the core owns sb_instance, every sb_event handed to process()
 * and every sb_batch. The plugin owns its own state (the `self` pointer it
 * returned from create) and frees it in destroy().
 */
#ifndef SYNCBRIDGE_PLUGIN_H
#define SYNCBRIDGE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <syncbridge/event.h>
#include <syncbridge/log.h>
#include <syncbridge/options.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bump SB_ABI_MAJOR on any incompatible change (member removed, reordered,
 * semantics changed). Bump SB_ABI_MINOR when members are appended; the core
 * accepts plugins built against an older or equal minor. */
#define SB_ABI_MAJOR 1
#define SB_ABI_MINOR 3 /* 1.1 added SB_OPT_TEMPLATE_MAP, 1.2 sb_json_append_string(), 1.3 sb_source_await() */

/* The one symbol a plugin exports. */
#define SB_PLUGIN_SYMBOL "syncbridge_plugin"

typedef enum sb_plugin_kind {
    SB_KIND_SOURCE = 1, /* produces events */
    SB_KIND_SINK = 2,   /* writes events somewhere */
    SB_KIND_ACTION = 3  /* causes a side effect for an event (trigger, copy) */
} sb_plugin_kind;

/* Per-event outcome of process(). */
typedef enum sb_result {
    SB_RESULT_UNSET = 0, /* plugin did not say; the core treats it as FAIL */
    SB_RESULT_OK,        /* done; fields added with sb_event_add() are kept */
    SB_RESULT_RETRY,     /* transient; the core backs off and retries */
    SB_RESULT_FAIL,      /* permanent; the event goes to the dead-letter store */
    SB_RESULT_FATAL      /* the instance is broken; the core restarts it and
                            retries the event without charging its budget */
} sb_result;

/* Descriptor flags. */
#define SB_PLUGIN_CONCURRENT 0x1u /* process() is safe to call concurrently */

typedef struct sb_instance sb_instance;     /* core-owned, one per configured instance */
typedef struct sb_batch sb_batch;           /* core-owned, valid during process() only */
typedef struct sb_source_ctx sb_source_ctx; /* core-owned, valid during run() only */

typedef struct sb_plugin {
    /* Checked by the loader before anything else. Fill with SB_PLUGIN_ABI. */
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size;

    const char *name;        /* MUST: unique plugin name, [a-z0-9_]+ */
    sb_plugin_kind kind;     /* MUST */
    const char *version;     /* MUST: the plugin's own version string */
    const char *description; /* MUST: one line, shown by `syncbridge plugins` */
    uint32_t flags;          /* MAY: SB_PLUGIN_* */

    /* MAY be NULL (no options). Terminated by an entry whose name is NULL.
     * The core parses and validates every option before create(). */
    const sb_option_def *options;

    /* MUST. Build the instance state from its validated options (read them
     * with sb_opt_*()). Store the state in *self. On failure return -1 and
     * write a message for a human into errstr. MUST NOT start threads or
     * perform network I/O: `syncbridge check` calls create() and destroy(). */
    int (*create)(sb_instance *ins, void **self, char *errstr, size_t errstr_size);

    /* MAY be NULL. Acquire resources (connections, threads). -1 + errstr on failure. */
    int (*start)(void *self, char *errstr, size_t errstr_size);

    /* Source only, MUST for sources. Produce events with sb_source_emit()
     * until sb_source_stopping() is true or (in --once mode) the input is
     * exhausted. Return 0 on a normal end, -1 on failure (the core logs it
     * and restarts run() with backoff unless stopping). */
    int (*run)(void *self, sb_source_ctx *ctx);

    /* Sink/action only, MUST for them. Handle every event in the batch and
     * set each one's result with sb_batch_set_result(). An event left
     * unset is treated as FAIL. MUST NOT keep pointers to the batch or its
     * events after returning. */
    void (*process)(void *self, sb_batch *batch);

    /* MAY be NULL. Release what start() acquired; wake a blocked run(). */
    void (*stop)(void *self);

    /* MUST. Free the state. Called once, also after a failed start(). */
    void (*destroy)(void *self);
} sb_plugin;

#define SB_PLUGIN_ABI \
    .abi_major = SB_ABI_MAJOR, .abi_minor = SB_ABI_MINOR, .struct_size = (uint32_t)sizeof(sb_plugin)

/* ---- instance ------------------------------------------------------------ */

/* The configured instance name (e.g. "rr_logs"). Valid for the instance's life. */
const char *sb_instance_name(const sb_instance *ins);

/* Non-zero when the daemon runs with --once: sources MUST return from run()
 * once their input is exhausted instead of waiting for more. */
int sb_instance_once(const sb_instance *ins);

/* The daemon's state directory (for plugin-private files). */
const char *sb_instance_state_dir(const sb_instance *ins);

/* ---- sources ------------------------------------------------------------- */

/* Hand events to the core. Takes ownership of all n events (also on error).
 * Blocks until the events and `checkpoint` (MAY be NULL) are durably in the
 * run ledger and admitted to their routes; a full route blocks here
 * (backpressure). Only after 0 is returned MAY the source acknowledge its
 * input upstream (commit an offset, ack a message). Returns -1 if the core
 * is stopping or the ledger failed; the events were then not accepted and
 * MUST NOT be acknowledged upstream. Events whose id the ledger already
 * holds are accepted again as duplicates and not routed twice. */
int sb_source_emit(sb_source_ctx *ctx, sb_event **events, size_t n, const char *checkpoint);

/* Like sb_source_emit(), but returns once the batch is matched, serialised
 * and queued for the ledger (at most two batches wait; a third blocks), so
 * that reading the next batch overlaps committing this one. Batches are
 * committed in call order, each atomically with its checkpoint. For sources
 * whose position lives entirely in the checkpoint (files), and for sources
 * that acknowledge upstream: those MUST first learn from sb_source_flush()
 * or sb_source_await() that the batch is committed. Returns -1 if
 * stopping or if an earlier batch failed to commit: run() should then
 * return -1; it is run again from the last committed checkpoint. Takes
 * ownership of the events in every case. */
int sb_source_emit_async(sb_source_ctx *ctx, sb_event **events, size_t n, const char *checkpoint);

/* Wait until every batch handed to sb_source_emit_async() is committed and
 * routed. 0, or -1 if one of them failed. */
int sb_source_flush(sb_source_ctx *ctx);

/* Wait until at most max_uncommitted of the batches handed to
 * sb_source_emit_async() are not yet committed. Batches commit in call
 * order, so on 0 every batch but the last max_uncommitted is durable and
 * MAY be acknowledged upstream: a source can keep a few batches in flight
 * (the core commits those that queue up in one transaction) and still
 * acknowledge in order. -1 if one of them failed; which earlier ones
 * committed is then unknown, so acknowledge none. sb_source_flush(ctx) is
 * sb_source_await(ctx, 0). Since ABI 1.3. */
int sb_source_await(sb_source_ctx *ctx, size_t max_uncommitted);

/* The last checkpoint committed for this source instance, or NULL. Owned by
 * the core; read it when no asynchronous batch is outstanding (at the start
 * of run(), or after sb_source_flush()), and not after the next emit. */
const char *sb_source_checkpoint(sb_source_ctx *ctx);

/* Non-zero once the core wants run() to return. */
int sb_source_stopping(sb_source_ctx *ctx);

/* Sleep up to `ms` milliseconds, waking early when stopping. Returns
 * non-zero if stopping. */
int sb_source_wait(sb_source_ctx *ctx, int ms);

/* ---- batches (sinks and actions) ----------------------------------------- */

size_t sb_batch_count(const sb_batch *b);

/* Borrowed; valid until process() returns. The plugin MAY add fields with
 * sb_event_add(); they are kept only if the result is OK. */
sb_event *sb_batch_event(sb_batch *b, size_t i);

/* 1 on the first attempt of this step for this event, 2 on the first retry... */
int sb_batch_attempt(const sb_batch *b, size_t i);

/* Set event i's result. `reason` (printf format, MAY be NULL) is recorded
 * in the ledger for RETRY/FAIL/FATAL and shown by `syncbridge runs`. */
void sb_batch_set_result(sb_batch *b, size_t i, sb_result r, const char *reason, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* With RETRY: the server asked for at least this delay (Retry-After). */
void sb_batch_set_retry_after(sb_batch *b, size_t i, int64_t ms);

#ifdef __cplusplus
}
#endif
#endif
