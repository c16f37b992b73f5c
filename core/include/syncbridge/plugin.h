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
 * A stateless plugin MAY leave create and destroy NULL: self is then its
 * config struct (config_size bytes, see sb_instance_config), or NULL.
 *
 * Results a step can give an event (sb_batch_set_result):
 *   OK     done; the fields it added go on to later steps.
 *   RETRY  transient failure; the core backs off and calls again, charged to
 *          the step's retry budget (attempts and time).
 *   WAIT   not done yet, nothing failed: "look again after N ms" (a DAG run
 *          or a workflow still running, a BigQuery job not complete). The
 *          core calls again after the delay, charged to the step's wait
 *          budget (its `timeout`), never to the retry budget. No worker
 *          thread is held while an event waits.
 *   FAIL   permanent; the event goes to the dead-letter store.
 *   FATAL  the instance is broken; the core restarts it.
 * With any of them, a step MAY set the event's step state
 * (sb_batch_set_state): a small JSON object that the core records in the
 * run ledger together with the result and hands back on the next call for
 * that event and step, also after a restart. That is where a DAG run id, an
 * operation name, a job id or an upload session lives, so that a poll, a
 * retry or a resumed event continues the work instead of starting it again.
 *
 * Migrating a plugin from ABI 1.x to 2.0 (the core refuses 1.x plugins,
 * naming both versions):
 *   - rebuild against this SDK; SB_PLUGIN_ABI fills the new header fields;
 *   - sb_option_def gained `choices`, ranges (`min`, `max`, SB_OPT_F_RANGE)
 *     and `offset` (SB_OPT_F_BIND, into a config struct of `config_size`
 *     bytes that sb_instance_config() returns): let the core validate and
 *     drop the plugin's own checks;
 *   - polling that used RETRY becomes WAIT with the poll's handle in the
 *     step state (RETRY still works, but a long wait would run out of
 *     retry budget);
 *   - long process() calls check sb_batch_stopping() and report progress
 *     with sb_batch_progress();
 *   - create and destroy MAY now be NULL, and worker_init / worker_fini
 *     give each worker thread its own connection.
 *
 * Later minors only add: 2.1 sb_source_dead_letter(); 2.2 the shared body
 * decoder sb_decode_body() (syncbridge/decode.h), the option type
 * SB_OPT_JSON_TEMPLATE (syncbridge/options.h) and the descriptor members
 * preflight and registry_rows (read only when struct_size holds them); 2.3
 * sb_event_append_json(); 2.4 sb_event_get_value() and sb_event_get_json();
 * 2.5 sb_event_add_string() (syncbridge/event.h). A plugin built against a
 * newer minor than the core's is refused, since it may call them.
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
 *   - worker_init() and worker_fini() are called on the worker thread that
 *     then uses (or used) that worker state: init before that thread's
 *     first process() for the instance, fini when the thread ends or the
 *     instance is restarted. One worker state is never used by two threads.
 *   - abandon() is called from a step's worker thread while no other call
 *     into that instance is in progress (the core holds the instance
 *     exclusively, even with SB_PLUGIN_CONCURRENT): it MAY block to clean
 *     up remote work, but only for a bounded time, since the instance's
 *     other events wait meanwhile.
 *   - cancel() is called from the control thread, concurrently with
 *     process(), when the daemon stops (SIGTERM): it MUST only make
 *     in-progress work return soon (abort transfers, wake waits).
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
#define SB_ABI_MAJOR 2
#define SB_ABI_MINOR 5

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
    SB_RESULT_FATAL,     /* the instance is broken; the core restarts it and
                            retries the event without charging its budget */
    SB_RESULT_WAIT       /* not done yet: call again after the delay given with
                            sb_batch_wait(), charged to the wait budget */
} sb_result;

/* Descriptor flags. */
#define SB_PLUGIN_CONCURRENT 0x1u /* process() is safe to call concurrently */

typedef struct sb_instance sb_instance;     /* core-owned, one per configured instance */
typedef struct sb_batch sb_batch;           /* core-owned, valid during process() only */
typedef struct sb_source_ctx sb_source_ctx; /* core-owned, valid during run() only */
typedef struct sb_preflight sb_preflight;   /* core-owned, valid during preflight() only */

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

    /* MAY be NULL (stateless plugin: self is then the config struct that
     * sb_instance_config() returns, or NULL). Build the instance state
     * from its validated options (sb_instance_config() or sb_opt_*()).
     * Store the state in *self. On failure return -1 and write a message for
     * a human into errstr. MUST NOT start threads or perform network I/O:
     * `syncbridge check` calls create() and destroy(). */
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

    /* MUST if create is set, else NULL. Free the state. Called once, also
     * after a failed start(). */
    void (*destroy)(void *self);

    /* ---- since ABI 2.0 ---- */

    /* MAY be 0. The size of the plugin's config struct: the core allocates
     * it zeroed, stores every option declared with SB_OPT_F_BIND at its
     * offset before create(), and keeps it for the instance's life
     * (sb_instance_config()). */
    size_t config_size;

    /* MAY be NULL (sinks and actions). Per-worker state, e.g. one database
     * connection per worker thread: *worker is then handed to process()
     * through sb_batch_worker(). -1 + errstr on failure: the batch is
     * retried (RETRY) and init is tried again on the next batch. */
    int (*worker_init)(void *self, void **worker, char *errstr, size_t errstr_size);
    /* Free a worker state. `self` is the instance's current one, which
     * after a restart (FATAL) is not the one that made the state, and is
     * NULL when the restart failed: free the worker state only, and do not
     * rely on self. */
    void (*worker_fini)(void *self, void *worker);

    /* MAY be NULL. The daemon is stopping: make the process() calls in
     * progress return soon (see the threading contract). Never called
     * while the instance is being destroyed or created. */
    void (*cancel)(void *self);

    /* MAY be NULL (sinks and actions). The core gives up on these events at
     * this step: their step_timeout ran out, their retry budget is spent, or
     * another member of a fan-out step answered FAIL for them (cores of
     * syncbridge 0.x before December 2026 skipped this call then), and
     * they are dead-lettered next. Not called after the plugin's own
     * FAIL answer: clean up before answering it. Each event's step state is
     * readable with sb_batch_state(), so the plugin can cancel the remote
     * work it started (a Dataproc operation, a multipart upload). Results
     * set here are ignored. `dlq drop` calls it once more for a dead event
     * whose state at that step is set, in case the first cleanup failed:
     * from the CLI's main thread, on an instance created but never started,
     * with a batch in no ledger (states saved are not recorded). So it MUST
     * tolerate work already cancelled or finished. */
    void (*abandon)(void *self, sb_batch *batch);

    /* ---- since ABI 2.2 (the loader reads these only from a descriptor
     * whose struct_size holds them: a 2.0/2.1 plugin has neither) ---- */

    /* MAY be NULL. `syncbridge preflight`: check, read-only, that the live
     * services this instance needs are there and let it in (credentials,
     * the resource exists, the permissions are held), and report each
     * check with sb_preflight_ok() or sb_preflight_fail(). Called on the
     * control thread after create() and without start(): the instance
     * never processes events in that process. MUST NOT change anything
     * remote (no publish, no insert, no trigger); MAY block on the network,
     * bounded by the plugin's own timeouts. */
    void (*preflight)(void *self, sb_preflight *pf);

    /* MAY be NULL. `syncbridge reconcile`: the registry rows this instance
     * writes whose timestamp is at or after since_us, or whose timestamp is
     * NULL (a pending row), as a JSON array of objects
     * {"id": integer, "source": "onprem"|"gcp", "timestamp": string|null}.
     * Store the new reference in *rows (the core owns it then). An instance
     * that writes no registry stores NULL and returns 0. -1 + errstr when
     * the rows could not be read. Called like preflight(): control thread,
     * after create(), without start(); read-only. */
    int (*registry_rows)(void *self, int64_t since_us, json_t **rows, char *errstr, size_t errstr_size);
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

/* The plugin's config struct (config_size bytes, SB_OPT_F_BIND options
 * filled in), or NULL when config_size is 0. Owned by the core, read-only,
 * valid for the instance's life. Since ABI 2.0. */
const void *sb_instance_config(const sb_instance *ins);

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

/* Put an input that can never become a routable event (a message body
 * that does not decode) straight into the dead-letter store with `reason`,
 * as an entry of every route the source feeds, so that `syncbridge dlq`
 * shows it and the source MAY acknowledge it upstream. `ev` carries what
 * is known (the raw body, where it came from); its id MUST be as stable as
 * an emitted event's, so that a redelivery is a duplicate. Takes ownership
 * of ev. Blocks until durable (after the batches emitted before it).
 * 0, or -1 if stopping or the ledger failed: then do not acknowledge.
 * Since ABI 2.1. */
int sb_source_dead_letter(sb_source_ctx *ctx, sb_event *ev, const char *reason);

/* The last checkpoint committed for this source instance, or NULL. Owned by
 * the core; read it when no asynchronous batch is outstanding (at the start
 * of run(), or after sb_source_flush()), and not after the next emit. */
const char *sb_source_checkpoint(sb_source_ctx *ctx);

/* Non-zero once the core wants run() to return. */
int sb_source_stopping(sb_source_ctx *ctx);

/* Sleep up to `ms` milliseconds, waking early when stopping. Returns
 * non-zero if stopping. */
int sb_source_wait(sb_source_ctx *ctx, int ms);

/* ---- preflight (since ABI 2.2) ------------------------------------------- */

/* Report one check of preflight(): `what` names it ("topic
 * projects/p/topics/t exists"), printed as one line. A failure's `fix`
 * (printf format) says what is wrong and how to fix it ("not found:
 * create it with `gcloud pubsub topics create t`"). Any failure makes
 * `syncbridge preflight` exit non-zero. Strings are copied. */
void sb_preflight_ok(sb_preflight *pf, const char *what);
void sb_preflight_fail(sb_preflight *pf, const char *what, const char *fix, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

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

/* ---- since ABI 2.0 ---- */

/* Set event i's result to WAIT: call process() again for it after `ms`
 * milliseconds (at least 1). `status` (printf format, MAY be NULL) says
 * what it waits for ("DAG run r1 is running") and is shown by `runs show`.
 * The wait is charged to the step's `timeout`; when it runs out, abandon()
 * is called and the event is dead-lettered (so too when a RETRY spends the
 * retry budget). */
void sb_batch_wait(sb_batch *b, size_t i, int64_t ms, const char *status, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Event i's step state as this step last set it (on an earlier call, or
 * before a restart), or NULL. Borrowed: valid until process() returns or
 * the state is replaced. */
const json_t *sb_batch_state(const sb_batch *b, size_t i);

/* Replace event i's step state with `state` (a JSON object; the reference
 * is stolen; NULL clears it). Recorded in the run ledger with event i's
 * result (RETRY, WAIT, FAIL or FATAL; OK ends the step and its state) and
 * handed back by sb_batch_state() on the next call. Keep it small (ids, offsets): it is written on every result. */
void sb_batch_set_state(sb_batch *b, size_t i, json_t *state);

/* Write event i's current step state to the run ledger now, before the
 * result: for a handle that must survive a crash during the rest of this
 * call (an operation name as soon as the create call returned, the upload
 * session before the data goes out). Blocks until durable. 0, or -1 if the
 * ledger could not write it (the plugin SHOULD then give RETRY). */
int sb_batch_save_state(sb_batch *b, size_t i);

/* Non-zero once the daemon is stopping: a long process() SHOULD save its
 * state and return (RETRY or WAIT) for what is not done. */
int sb_batch_stopping(const sb_batch *b);

/* Progress of long work on event i (a copy): bytes or units done out of
 * total (0 = unknown). Thread-safe; MAY be called from any thread while
 * process() runs. Progress keeps the watchdog fed (a step that reports
 * progress is busy, not stalled) and is shown by `runs show` and /metrics. */
void sb_batch_progress(sb_batch *b, size_t i, uint64_t done, uint64_t total);

/* The worker state worker_init() made for the calling worker thread, or
 * NULL when the plugin has no worker_init. */
void *sb_batch_worker(const sb_batch *b);

#ifdef __cplusplus
}
#endif
#endif
