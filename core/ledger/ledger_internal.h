/*
 * ledger_internal.h - what the files of the run ledger share: its tuning
 * constants, the writer's op queue, the writer's prepared statements and
 * the sb_ledger struct. Not for use outside core/ledger/.
 *
 *   ledger.c       open and close
 *   db.c           connections, SQL, the reader pool
 *   schema.c       the schema and its migrations
 *   writer.c       the writer and checkpointer threads, the write calls
 *   queries.c      the read calls
 *   maintenance.c  pruning and the dead-letter commands
 *   statedir.c     the daemon's lock and the ledger's marker file
 *   repair.c       `ledger check` and `ledger recover`
 *   walbuf.c       the VFS the connections open the file with
 *
 * Calls go one way: repair.c -> ledger.c -> maintenance.c, queries.c ->
 * writer.c -> schema.c -> statedir.c, db.c -> walbuf.c (a file calls only
 * files after it here).
 */
#ifndef SB_LEDGER_INTERNAL_H
#define SB_LEDGER_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger/ledger.h"
#include "util/util.h"

#define SCHEMA_VERSION 9
#define BUSY_TIMEOUT_MS 10000
/* Above this many queued ops the writer stops gathering and commits. */
#define GATHER_MAX 4096
/* Async callers wait for the writer beyond this many queued ops, so a
 * stalled disk shows up as back-pressure instead of unbounded memory. */
#define QUEUE_SOFT_MAX (1u << 20)
#define PRUNE_CHUNK 5000
/* Entries a prune transaction looks at, at most (most may be kept). */
#define PRUNE_SCAN (4 * PRUNE_CHUNK)
#define NO_STR ((size_t)-1)
/* Rows the writer inserts with one statement where it has that many
 * (W_*_ROWS): each execution of a statement opens cursors and runs its
 * program's set-up, which cost about as much as the row itself. 32 rows
 * took the writer from 3.8-4.0 to 2.6-3.0 us of CPU per event (file_in ->
 * pubsub, docs/benchmarks.md); 64 gained next to nothing more. */
#define ROWS_PER_INSERT 32
/* A payload row (writer.c, payload_row_add) takes the payloads of entries
 * accepted together, a line each, until the next one would take it past
 * this many bytes: two 4 KiB overflow pages and the least that SQLite
 * keeps of a row in its table's page, the size it stores with the least
 * waste. Rows of 32 payloads whatever their size wasted up to a third of
 * their pages (docs/benchmarks.md). Reading one entry's payload reads its
 * whole row, so rows stay this small; a longer payload has a row of its
 * own. */
#define PAYLOAD_ROW_TARGET (2 * (4096 - 4) + 486)
/* ... and holds at most this many entries: until_settled drops a row only
 * once each entry it holds is done, which a row of tiny payloads would
 * make a check of thousands of entries. */
#define PAYLOAD_ROW_SPAN_MAX (4 * ROWS_PER_INSERT)
/* The fewest consecutive entries settled as one range (writer.c,
 * apply_steps): fewer are updated row by row. Batches that small come
 * with light load, where the update's CPU does not matter, and a range for
 * every few entries would grow `settled` nearly as fast as `entries`. */
#define SETTLE_RANGE_MIN 16
/* WAL sizes for the checkpointer (why these: "checkpoints" in writer.c). */
#define CKPT_SOFT_BYTES (16 << 20) /* wake the checkpointer */
#define CKPT_HARD_BYTES (64 << 20) /* the writer checkpoints itself (journal_size_limit) */
/* Retries of held state changes (see `held`): the first after this, then doubling up to the max. */
#define HELD_RETRY_MIN_MS 100
#define HELD_RETRY_MAX_MS 5000

typedef enum op_kind {
    OP_ACCEPT,
    OP_MEMBER,
    OP_STEP,
    OP_ENTRY_DONE,
    OP_RETRY,
    OP_DEAD,
    OP_STATE,
    OP_PROGRESS,
    OP_SYNC,
    OP_CALL /* a function run by the writer in its own transaction */
} op_kind;

struct waiter;
typedef int (*call_fn)(sb_ledger *l, void *ctx, char *err, size_t errsz);

struct waiter {
    int done;
    int rc;
    char err[256];
    const char *source, *checkpoint;
    sb_ledger_new *entries;
    size_t n;
    call_fn fn;
    void *ctx;
};

struct op {
    op_kind kind;
    int step;
    int attempts;
    int last; /* OP_STEP: the entry is done too */
    int64_t entry_id;
    int64_t t1, t2;
    size_t s1, s2; /* offsets into the buffer's arena, NO_STR = NULL */
    struct waiter *w;
};

/* Ops and their strings; the writer swaps a whole buffer out, so steady
 * state enqueueing does not allocate. */
struct opbuf {
    struct op *ops;
    size_t n, cap;
    char *arena;
    size_t alen, acap;
    size_t waiters;
};

enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_INSERT,
    W_INSERT_ROWS,
    W_INSERT_ROWS_SHARED,
    W_PAYLOAD,
    W_PAYLOAD_GROUP,
    W_FIND,
    W_CHECKPOINT,
    W_MEMBER,
    W_MEMBER_ROWS,
    W_STEPS,
    W_STEPS_RANGE,
    W_ENTRY_DONE,
    W_LAST_STEPS,
    W_LAST_STEPS_RANGE,
    W_RETRY,
    W_DEAD,
    W_COUNTS_ADD,
    W_STATE,
    W_PROGRESS,
    W_DROP_PAYLOADS,
    W_DROP_PAYLOADS_RANGE,
    W_SETTLE_RANGE,
    W_DROP_SETTLED_PAYLOADS,
    W_COUNT
};


/* Settled ranges (schema 8): a row of `settled` says that the entries
 * `first` to `last` are done, without a write to each entry's row: the
 * route's last step of each of them completed (next_step, at updated_us).
 * Rewriting every entry's row on settling was about 3,800 instructions
 * per event, a sixth of the daemon's (docs/benchmarks.md). An entry's row
 * still says pending (state 0) then; a row that says done or dead is what
 * it says (entries settled before schema 8, or row by row). Ranges never overlap, hold
 * no entry whose row says done or dead, and never reach past the largest
 * entry id (ids are reused above it: maintenance.c cuts them when entries
 * are deleted).
 * SETTLED_RANGE_OF(e): the first id of the range that would cover entry
 * e (the last one starting at or before it). ENTRY_SETTLED_BY_RANGE(t):
 * the entry of row alias t is done by a range. */
#define SETTLED_RANGE_OF(entry) "(SELECT first FROM settled WHERE first <= " entry " ORDER BY first DESC LIMIT 1)"
/* The last id of that range, 0 if there is none. */
#define SETTLED_LAST_OF(entry)                                                                                      \
    "coalesce((SELECT last FROM settled WHERE first <= " entry " ORDER BY first DESC LIMIT 1), 0)"
#define ENTRY_SETTLED_BY_RANGE(t) "(" t ".state = 0 AND " SETTLED_LAST_OF(t ".id") " >= " t ".id)"
/* Conditions on a row of settled (as PAYLOAD_ROW_UNUSED and
 * PAYLOAD_ROW_CUT below): none of its entries is left; an UPDATE that
 * cuts the rows matching `where` back to their last entry left. */
#define SETTLED_RANGE_EMPTY "NOT EXISTS (SELECT 1 FROM entries e WHERE e.id BETWEEN settled.first AND settled.last)"
#define SETTLED_RANGE_CUT(where)                                                                                    \
    "UPDATE settled SET last = (SELECT max(e.id) FROM entries e WHERE e.id BETWEEN settled.first AND"             \
    " settled.last) WHERE " where
/* The entries with what a range settled in them: FROM ENTRIES_NOW and
 * the columns below instead of entries' own (queries.c, the entries_now
 * view of schema.c). `s` is the entry's range, NULL if none settled it. */
#define ENTRIES_NOW                                                                                                 \
    "entries LEFT JOIN settled s ON entries.state = 0 AND s.first = " SETTLED_RANGE_OF("entries.id")             \
    " AND s.last >= entries.id"
#define NOW_STATE "CASE WHEN s.first IS NULL THEN entries.state ELSE 1 END"
#define NOW_NEXT_STEP "coalesce(s.next_step, entries.next_step)"
#define NOW_UPDATED_US "coalesce(s.updated_us, entries.updated_us)"
/* a range settles as W_LAST_STEPS did: no attempts, no retry */
#define NOW_RETRY_COLUMN(c) "CASE WHEN s.first IS NULL THEN entries." c " ELSE 0 END"

/* Payload rows (schema 7): a row holds the payloads of `span` entries
 * with consecutive ids, from entry `id` on, one per line (JSON Lines),
 * written with them in one transaction; a row of span 1 holds one payload
 * whole, newlines and all. A row with fields_only (schema 9) holds only
 * what each payload has under "fields": the rest of it is the entry's own
 * event_id, source and received_us, which ENTRY_PAYLOAD puts back.
 * PAYLOAD_ROW_OF(e): the id of the row that would hold entry e's payload
 * (the last one starting at or before it).
 * ENTRY_PAYLOAD: entry `entries.id`'s payload, NULL when it has none (an
 * entry is never hidden for that: a payload of NULL fails its resume with
 * an error). sb_payload_line() is registered on every connection (db.c). */
#define PAYLOAD_ROW_OF(entry) "(SELECT id FROM payloads WHERE id <= " entry " ORDER BY id DESC LIMIT 1)"
/* A condition on a row of payloads: it holds entry `entry`'s payload. */
#define PAYLOAD_ROW_HOLDING(entry) "id = " PAYLOAD_ROW_OF(entry) " AND " entry " < id + span"
#define ENTRY_PAYLOAD                                                                                               \
    "(SELECT CASE WHEN fields_only THEN '{\"id\":' || json_quote(entries.event_id) || ',\"source\":'"                \
    " || json_quote(entries.source) || ',\"received_us\":' || entries.received_us || ',\"fields\":'"                  \
    " || sb_payload_line(payload, span, entries.id - id) || '}'"                                                    \
    " ELSE sb_payload_line(payload, span, entries.id - id) END"                                                      \
    " FROM payloads WHERE id <= entries.id ORDER BY id DESC LIMIT 1)"
/* Conditions on a row of payloads (in a DELETE FROM payloads): none of
 * the entries it holds is left; none is left that is not done. */
#define PAYLOAD_ROW_UNUSED                                                                                          \
    "NOT EXISTS (SELECT 1 FROM entries e WHERE e.id BETWEEN payloads.id AND payloads.id + payloads.span - 1)"
#define PAYLOAD_ROW_SETTLED                                                                                         \
    "NOT EXISTS (SELECT 1 FROM entries e WHERE e.id BETWEEN payloads.id AND payloads.id + payloads.span - 1"    \
    " AND e.state <> 1 AND NOT " ENTRY_SETTLED_BY_RANGE("e") ")"
/* Entry ids are reused above the largest one left (entries has no
 * AUTOINCREMENT): a row must never span ids past its last entry, or a new
 * entry given such an id would read an old payload, and a new row starting
 * there would collide with the old one. So when a row's last entry is
 * deleted, the row is deleted too or cut back to its last entry left:
 * PAYLOAD_ROW_CUT is an UPDATE of the rows that match `where`. A row cut
 * to one entry keeps only its first line: a row of span 1 is read whole
 * (sb_payload_line), which the lines after it would have made several
 * payloads in one. */
#define PAYLOAD_ROW_LEFT                                                                                            \
    "((SELECT max(e.id) FROM entries e WHERE e.id BETWEEN payloads.id AND payloads.id + payloads.span - 1)"       \
    " - id + 1)"
#define PAYLOAD_ROW_CUT(where)                                                                                      \
    "UPDATE payloads SET span = coalesce(" PAYLOAD_ROW_LEFT ", span),"                                              \
    " payload = CASE WHEN span > 1 AND " PAYLOAD_ROW_LEFT " = 1"                                                    \
    " THEN substr(payload, 1, instr(payload, char(10)) - 1) ELSE payload END WHERE " where                        \
    " AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.id = payloads.id + payloads.span - 1)"

struct sb_ledger {
    char *path;
    sb_ledger_opts opts;

    sqlite3 *wdb;
    sqlite3_stmt *ws[W_COUNT];

    pthread_mutex_t mu;
    pthread_cond_t work;    /* writer: something to do */
    pthread_cond_t done_cv; /* callers: a group was committed */
    pthread_cond_t space;   /* async callers: queue drained */
    struct opbuf in, cur;
    /* State changes a commit could not record (disk full, I/O error): the
     * writer's alone. They are retried, in order and before anything
     * queued after them, until they are written; meanwhile accepts are
     * refused, so that a restart re-delivers only what was in flight. */
    struct opbuf held;
    int64_t held_since_us, held_retry_ms;
    char held_err[200];
    int stopping;
    int writer_idle;
    int writer_gathering;
    pthread_t writer;
    /* Entries moved into (+) or out of (-) each state by the writer's open
     * transaction; added to `counts` when it commits. */
    int64_t moved[3];
    sb_strbuf ids; /* the writer's JSON array of entry ids for W_STEPS and the like (apply_steps) */
    /* The writer's payload row of entries accepted together, not yet
     * inserted (W_PAYLOAD_GROUP; writer.c, payload_row_add): the payloads
     * of `group_span` entries from `group_first` on, each fields_only or
     * none. Written before each accept op ends. */
    sb_strbuf group;
    int64_t group_first;
    int group_span, group_fields_only;

    pthread_mutex_t rmu;
    sqlite3 **rfree;
    size_t nrfree, rcap;

    /* the checkpointer (see "checkpoints") */
    pthread_mutex_t ckmu;
    pthread_cond_t ckcv;
    int ck_wanted, ck_stopping, ck_running;
    int ck_soft_frames, ck_hard_frames; /* CKPT_*_BYTES in this file's pages */
    pthread_t ckpt;
    sqlite3 *cdb;
};

/* ---- statedir.c: the files around ledger.db ---- */
/* 0, or -1 with errstr for a ledger.db that must not be opened as new. */
int sb_ledger__check_file(const char *state_dir, const char *db_path, char *errstr, size_t errstr_size);
/* Record that a ledger exists in state_dir (once; best effort). */
void sb_ledger__mark(const char *state_dir);

/* ---- db.c: SQLite connections: opening one, running SQL, the pool of readers ---- */
int sb_ledger__exec_sql(sqlite3 *db, const char *sql, char *err, size_t errsz);
/* The same, tried again for up to BUSY_TIMEOUT_MS while SQLite answers
 * "database is locked" at once, without its busy handler: it does so to
 * one of two connections that both read the file and then both want to
 * write it, as the daemon and a CLI command opening a new ledger do when
 * both switch it to WAL. */
int sb_ledger__exec_sql_patient(sqlite3 *db, const char *sql, char *err, size_t errsz);
sqlite3 *sb_ledger__open_conn(const char *path, char *err, size_t errsz);
int sb_ledger__pragma_int(sqlite3 *db, const char *sql);
sqlite3 *sb_ledger__reader_get(sb_ledger *l, char *err, size_t errsz);
void sb_ledger__reader_put(sb_ledger *l, sqlite3 *db);

/* ---- walbuf.c: SQLite's default VFS, with a WAL's writes gathered ---- */
#define SB_LEDGER_VFS "syncbridge-walbuf"
/* Register SB_LEDGER_VFS (once, whoever calls first); SQLITE_OK if it is. */
int sb_ledger__register_vfs(void);

/* ---- schema.c: the schema (user_version) and its migrations ---- */
int sb_ledger__setup_schema(sqlite3 *db, char *err, size_t errsz);

/* ---- writer.c: the writer thread: the queue of ops, group commit, the WAL checkpointer, and the write calls ---- */
void sb_ledger__bind_text(sqlite3_stmt *st, int i, const char *s);
void *sb_ledger__checkpointer_main(void *arg);
void sb_ledger__opbuf_free(struct opbuf *b);
int sb_ledger__run_call(sb_ledger *l, call_fn fn, void *ctx, char *err, size_t errsz);
int sb_ledger__wal_hook(void *arg, sqlite3 *db, const char *name, int frames);
void *sb_ledger__writer_main(void *arg);

#endif
