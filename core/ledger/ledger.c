/* ledger.c - the run ledger: SQLite (WAL) with one group-committing writer thread. */
#include "build_config.h"
#include "ledger/ledger.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <syncbridge/log.h>

#define SCHEMA_VERSION 3
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

typedef enum op_kind {
    OP_ACCEPT,
    OP_MEMBER,
    OP_STEP,
    OP_ENTRY_DONE,
    OP_RETRY,
    OP_DEAD,
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
    W_PAYLOAD,
    W_FIND,
    W_CHECKPOINT,
    W_MEMBER,
    W_STEPS,
    W_ENTRY_DONE,
    W_LAST_STEPS,
    W_RETRY,
    W_DEAD,
    W_COUNTS_ADD,
    W_COUNT
};

static const char *const wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    /* A duplicate (event_id, route) fails with SQLITE_CONSTRAINT_UNIQUE,
     * which undoes only this statement: SQLite checks the constraint
     * before it writes anything. ON CONFLICT DO NOTHING cost every insert
     * more than the rare failure costs a duplicate. */
    [W_INSERT] = "INSERT INTO entries(event_id, route, source, received_us, state, next_step,"
                 " attempts, first_attempt_us, next_retry_us, updated_us, accepted_us)"
                 " VALUES(?1, ?2, ?3, ?4, 0, 0, 0, 0, 0, ?5, ?5)",
    [W_PAYLOAD] = "INSERT INTO payloads(id, payload) VALUES(?1, ?2)",
    [W_FIND] = "SELECT id FROM entries WHERE event_id = ?1 AND route = ?2",
    [W_CHECKPOINT] = "INSERT INTO checkpoints(source, value, updated_us) VALUES(?1, ?2, ?3)"
                     " ON CONFLICT(source) DO UPDATE SET value = excluded.value, updated_us = excluded.updated_us",
    [W_MEMBER] = "INSERT OR IGNORE INTO members(entry_id, step, instance, attempts, completed_us, added)"
                 " VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    /* Step ?2 of the entries whose ids are in the JSON array ?1. One
     * statement for a batch: each execution opens cursors on the table and
     * on every index it may change, which cost about as much as the update
     * of one entry. */
    [W_STEPS] = "UPDATE entries SET next_step = ?2 + 1, attempts = 0, first_attempt_us = 0, next_retry_us = 0,"
                " updated_us = ?3 WHERE id IN (SELECT value FROM json_each(?1))",
    /* Done and dead are reached from pending only (dlq replay is the way
     * back), so every entry a state change matches leaves the pending count. */
    [W_ENTRY_DONE] = "UPDATE entries SET state = 1, next_retry_us = 0, updated_us = ?2 WHERE id = ?1 AND state = 0",
    /* the common end of a run: the route's last step is done, and so is the entry */
    [W_LAST_STEPS] = "UPDATE entries SET next_step = ?2 + 1, attempts = 0, first_attempt_us = 0, next_retry_us = 0,"
                     " state = 1, updated_us = ?3 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 0",
    /* A retry at a step other than the recorded one starts that step's clock. */
    [W_RETRY] = "UPDATE entries SET first_attempt_us = CASE WHEN first_attempt_us = 0 OR next_step <> ?2"
                " THEN ?5 ELSE first_attempt_us END, next_step = ?2, attempts = ?3, next_retry_us = ?4,"
                " error = ?6, updated_us = ?5 WHERE id = ?1",
    [W_DEAD] = "UPDATE entries SET state = 2, next_step = ?2, next_retry_us = 0, error = ?3, updated_us = ?4"
               " WHERE id = ?1 AND state = 0",
    [W_COUNTS_ADD] = "UPDATE counts SET entries = entries + ?2 WHERE state = ?1",
};

/* The columns of an entry that every version has, in two runs: version 1
 * had the payload between them. */
#define ENTRY_IDENTITY_COLUMNS                                                                                     \
    " id INTEGER PRIMARY KEY,"                                                                                      \
    " event_id TEXT NOT NULL,"                                                                                      \
    " route TEXT NOT NULL,"                                                                                         \
    " source TEXT NOT NULL,"
#define ENTRY_PROGRESS_COLUMNS                                                                                     \
    " received_us INTEGER NOT NULL DEFAULT 0,"                                                                      \
    " state INTEGER NOT NULL DEFAULT 0,"                                                                            \
    " next_step INTEGER NOT NULL DEFAULT 0,"                                                                        \
    " attempts INTEGER NOT NULL DEFAULT 0,"                                                                         \
    " first_attempt_us INTEGER NOT NULL DEFAULT 0,"                                                                 \
    " next_retry_us INTEGER NOT NULL DEFAULT 0,"                                                                    \
    " updated_us INTEGER NOT NULL DEFAULT 0,"                                                                       \
    " error TEXT,"                                                                                                  \
    " requeued INTEGER NOT NULL DEFAULT 0,"

/* Version 1 as it was created; migrate_v2 changes it. */
static const char *const schema_v1 =
    "CREATE TABLE IF NOT EXISTS entries(" ENTRY_IDENTITY_COLUMNS
    " payload TEXT NOT NULL," ENTRY_PROGRESS_COLUMNS
    " UNIQUE(event_id, route));"
    "CREATE TABLE IF NOT EXISTS members("
    " entry_id INTEGER NOT NULL,"
    " step INTEGER NOT NULL,"
    " instance TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " completed_us INTEGER NOT NULL DEFAULT 0,"
    " added TEXT,"
    " PRIMARY KEY(entry_id, step, instance)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS checkpoints("
    " source TEXT PRIMARY KEY,"
    " value TEXT,"
    " updated_us INTEGER NOT NULL DEFAULT 0);"
    /* Partial indexes: most rows are settled, so the hot paths (resume,
     * requeue pickup) only index the few rows they look for. No route index:
     * it cost ~25% of accept throughput, and listings scan newest-first by id
     * and stop at their limit. */
    "CREATE INDEX IF NOT EXISTS entries_pending ON entries(id) WHERE state = 0;"
    "CREATE INDEX IF NOT EXISTS entries_settled ON entries(updated_us) WHERE state <> 0;"
    "CREATE INDEX IF NOT EXISTS entries_dead ON entries(id) WHERE state = 2;"
    "CREATE INDEX IF NOT EXISTS entries_requeued ON entries(id) WHERE requeued = 1;";

/* Version 2: no index on updated_us. Keeping it cost every settled entry an
 * index insert, about a tenth of the writer's time. Retention pruning walks
 * the entries by id instead, which is accept order, and stops at the first
 * one accepted after the cutoff (accepted_us; 0 for entries from version 1,
 * which the walk therefore always looks at). The counts by state, which the
 * index answered for done and dead entries, are kept in `counts` by the
 * writer: one update per transaction, and reading them costs nothing
 * however large the ledger. */
static const char *const migrate_v2 =
    "ALTER TABLE entries ADD COLUMN accepted_us INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE counts(state INTEGER PRIMARY KEY, entries INTEGER NOT NULL);"
    "INSERT INTO counts(state, entries) VALUES"
    " (0, (SELECT count(*) FROM entries WHERE state = 0)),"
    " (1, (SELECT count(*) FROM entries WHERE state = 1)),"
    " (2, (SELECT count(*) FROM entries WHERE state = 2));"
    "DROP INDEX entries_settled;";

/* Version 3: the payload in a table of its own, written once. Inline, it
 * made an entry's row about ten times longer, and each page of rows was
 * written to the WAL twice: at accept, and again when the step's UPDATE
 * changed a few integers in each row. Now that UPDATE rewrites pages of
 * short rows only. The entries table is rebuilt (CREATE, copy, DROP,
 * RENAME, as SQLite documents for a change ALTER TABLE cannot make:
 * DROP COLUMN needs SQLite 3.35, RHEL 9 has 3.34). */
static const char *const migrate_v3 =
    "CREATE TABLE payloads(id INTEGER PRIMARY KEY, payload TEXT NOT NULL);"
    "INSERT INTO payloads(id, payload) SELECT id, payload FROM entries;"
    "CREATE TABLE entries_v3(" ENTRY_IDENTITY_COLUMNS ENTRY_PROGRESS_COLUMNS
    " accepted_us INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE(event_id, route));"
    "INSERT INTO entries_v3(id, event_id, route, source, received_us, state, next_step, attempts,"
    " first_attempt_us, next_retry_us, updated_us, error, requeued, accepted_us)"
    " SELECT id, event_id, route, source, received_us, state, next_step, attempts,"
    " first_attempt_us, next_retry_us, updated_us, error, requeued, accepted_us FROM entries;"
    "DROP TABLE entries;"
    "ALTER TABLE entries_v3 RENAME TO entries;"
    "CREATE INDEX entries_pending ON entries(id) WHERE state = 0;"
    "CREATE INDEX entries_dead ON entries(id) WHERE state = 2;"
    "CREATE INDEX entries_requeued ON entries(id) WHERE requeued = 1;";

/* What readers select from: each entry with its payload. Both are written
 * in one transaction; the outer join still shows an entry whose payload
 * went missing (a payload of NULL fails its resume with an error) instead
 * of hiding it. */
#define ENTRY_ROWS "entries LEFT JOIN payloads USING (id)"

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
    int stopping;
    int writer_idle;
    int writer_gathering;
    pthread_t writer;
    /* Entries moved into (+) or out of (-) each state by the writer's open
     * transaction; added to `counts` when it commits. */
    int64_t moved[3];
    sb_strbuf ids; /* the writer's JSON array of entry ids for W_STEPS */

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

/* ---- connections ------------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errsz)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sb_err(err, errsz, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static sqlite3 *open_conn(const char *path, char *err, size_t errsz)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sb_err(err, errsz, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(db, 1);
    return db;
}

static sqlite3 *reader_get(sb_ledger *l, char *err, size_t errsz)
{
    sqlite3 *db = NULL;
    pthread_mutex_lock(&l->rmu);
    if (l->nrfree)
        db = l->rfree[--l->nrfree];
    pthread_mutex_unlock(&l->rmu);
    if (!db)
        db = open_conn(l->path, err, errsz);
    return db;
}

static void reader_put(sb_ledger *l, sqlite3 *db)
{
    pthread_mutex_lock(&l->rmu);
    if (l->nrfree == l->rcap) {
        l->rcap = l->rcap ? l->rcap * 2 : 4;
        l->rfree = sb_xrealloc(l->rfree, l->rcap * sizeof *l->rfree);
    }
    l->rfree[l->nrfree++] = db;
    pthread_mutex_unlock(&l->rmu);
}

/* The integer a pragma returns, -1 if it returns none. */
static int pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int schema_version(sqlite3 *db, char *err, size_t errsz)
{
    int version = pragma_int(db, "PRAGMA user_version");
    if (version < 0)
        return sb_err(err, errsz, "cannot read schema version: %s", sqlite3_errmsg(db));
    if (version > SCHEMA_VERSION)
        return sb_err(err, errsz, "ledger schema version %d is newer than this syncbridge supports (%d)", version,
                      SCHEMA_VERSION);
    return version;
}

static int setup_schema(sqlite3 *db, char *err, size_t errsz)
{
    char msg[256];
    int version = schema_version(db, err, errsz);
    if (version < 0 || version == SCHEMA_VERSION)
        return version < 0 ? -1 : 0;
    /* A new file (version 0) is created at version 1 and migrated like an
     * old one, so every ledger has the same schema. The version is read
     * again inside the transaction: another process (the daemon and the
     * CLI) may have migrated the file meanwhile. */
    if (exec_sql(db, "BEGIN IMMEDIATE", msg, sizeof msg) != 0)
        return sb_err(err, errsz, "cannot create or migrate the schema: %s", msg);
    version = schema_version(db, msg, sizeof msg);
    int rc = version < 0 ? -1 : 0;
    if (rc == 0 && version < 1)
        rc = exec_sql(db, schema_v1, msg, sizeof msg);
    if (rc == 0 && version < 2)
        rc = exec_sql(db, migrate_v2, msg, sizeof msg);
    if (rc == 0 && version < 3)
        rc = exec_sql(db, migrate_v3, msg, sizeof msg);
    if (rc == 0 && version < SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        rc = exec_sql(db, sql, msg, sizeof msg);
    }
    if (rc == 0)
        rc = exec_sql(db, "COMMIT", msg, sizeof msg);
    if (rc != 0) {
        exec_sql(db, "ROLLBACK", NULL, 0);
        return sb_err(err, errsz, "cannot create or migrate the schema (version %d): %s", version, msg);
    }
    return 0;
}

/* ---- queue ------------------------------------------------------------- */

static size_t arena_put(struct opbuf *b, const char *s, size_t len)
{
    if (!s)
        return NO_STR;
    if (b->alen + len + 1 > b->acap) {
        size_t cap = b->acap ? b->acap : 65536;
        while (cap < b->alen + len + 1)
            cap *= 2;
        b->arena = sb_xrealloc(b->arena, cap);
        b->acap = cap;
    }
    size_t off = b->alen;
    memcpy(b->arena + off, s, len);
    b->arena[off + len] = '\0';
    b->alen += len + 1;
    return off;
}

static const char *arena_str(const struct opbuf *b, size_t off)
{
    return off == NO_STR ? NULL : b->arena + off;
}

static void opbuf_free(struct opbuf *b)
{
    free(b->ops);
    free(b->arena);
}

/* Append op with copies of its strings to the queue (l->mu held). */
static void push_op(sb_ledger *l, struct op *op, const char *s1, const char *s2)
{
    struct opbuf *b = &l->in;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 4096;
        b->ops = sb_xrealloc(b->ops, b->cap * sizeof *b->ops);
    }
    op->s1 = arena_put(b, s1, s1 ? strlen(s1) : 0);
    op->s2 = arena_put(b, s2, s2 ? strlen(s2) : 0);
    b->ops[b->n++] = *op;
    if (op->w)
        b->waiters++;
}

/* Async callers wait while the queue is full (l->mu held). */
static void wait_space(sb_ledger *l)
{
    while (l->in.n >= QUEUE_SOFT_MAX && !l->stopping)
        pthread_cond_wait(&l->space, &l->mu);
}

/* Tell the writer about what was just queued (l->mu held): an idle writer
 * always, a gathering one when a caller waits or the group is full. */
static void wake_writer(sb_ledger *l, int waiting)
{
    if (l->writer_idle || (l->writer_gathering && (waiting || l->in.n >= GATHER_MAX)))
        pthread_cond_signal(&l->work);
}

/* Queue op (strings copied); with a waiter, block until the writer has
 * processed it. */
static void enqueue(sb_ledger *l, struct op *op, const char *s1, const char *s2)
{
    pthread_mutex_lock(&l->mu);
    if (!op->w)
        wait_space(l);
    push_op(l, op, s1, s2);
    wake_writer(l, op->w != NULL);
    if (op->w)
        while (!op->w->done)
            pthread_cond_wait(&l->done_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

static int run_call(sb_ledger *l, call_fn fn, void *ctx, char *err, size_t errsz)
{
    struct op op = {.kind = OP_CALL};
    struct waiter w = {.fn = fn, .ctx = ctx};
    op.w = &w;
    enqueue(l, &op, NULL, NULL);
    if (w.rc < 0)
        sb_err(err, errsz, "%s", w.err);
    return w.rc;
}

/* ---- writer ------------------------------------------------------------ */

static int wstep(sb_ledger *l, int which, char *err, size_t errsz)
{
    sqlite3_stmt *st = l->ws[which];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* A write transaction of the writer: tx_commit adds the entries it moved
 * between states to `counts` in the same transaction. */
static int tx_begin(sb_ledger *l, char *err, size_t errsz)
{
    memset(l->moved, 0, sizeof l->moved);
    return wstep(l, W_BEGIN, err, errsz);
}

static int tx_commit(sb_ledger *l, char *err, size_t errsz)
{
    for (int state = 0; state < 3; state++) {
        if (!l->moved[state])
            continue;
        sqlite3_stmt *st = l->ws[W_COUNTS_ADD];
        sqlite3_bind_int(st, 1, state);
        sqlite3_bind_int64(st, 2, l->moved[state]);
        if (wstep(l, W_COUNTS_ADD, err, errsz) != 0)
            return -1;
    }
    return wstep(l, W_COMMIT, err, errsz);
}

/* Run the bound state change `which` (its WHERE matches pending entries
 * only) and count the entries it matched as moved to `state`. */
static int settle_step(sb_ledger *l, int which, int state, char *err, size_t errsz)
{
    if (wstep(l, which, err, errsz) != 0)
        return -1;
    int n = sqlite3_changes(l->wdb);
    l->moved[SB_ENTRY_PENDING] -= n;
    l->moved[state] += n;
    return 0;
}

static int apply_accept(sb_ledger *l, struct waiter *w, int64_t now, char *err, size_t errsz)
{
    sqlite3_stmt *ins = l->ws[W_INSERT];
    for (size_t i = 0; i < w->n; i++) {
        sb_ledger_new *e = &w->entries[i];
        const char *src = e->source ? e->source : (w->source ? w->source : "");
        bind_text(ins, 1, e->event_id);
        bind_text(ins, 2, e->route);
        bind_text(ins, 3, src);
        sqlite3_bind_int64(ins, 4, e->received_us);
        sqlite3_bind_int64(ins, 5, now);
        int rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (rc != SQLITE_DONE && rc != SQLITE_CONSTRAINT_UNIQUE)
            return sb_err(err, errsz, "insert %s: %s", e->event_id, sqlite3_errmsg(l->wdb));
        if (rc == SQLITE_DONE) {
            e->entry_id = sqlite3_last_insert_rowid(l->wdb);
            e->duplicate = 0;
            sqlite3_stmt *pl = l->ws[W_PAYLOAD];
            sqlite3_bind_int64(pl, 1, e->entry_id);
            bind_text(pl, 2, e->payload);
            if (wstep(l, W_PAYLOAD, err, errsz) != 0)
                return -1;
            l->moved[SB_ENTRY_PENDING]++;
            continue;
        }
        sqlite3_stmt *find = l->ws[W_FIND];
        bind_text(find, 1, e->event_id);
        bind_text(find, 2, e->route);
        rc = sqlite3_step(find);
        e->entry_id = rc == SQLITE_ROW ? sqlite3_column_int64(find, 0) : 0;
        sqlite3_reset(find);
        if (rc != SQLITE_ROW)
            return sb_err(err, errsz, "lookup %s: %s", e->event_id, sqlite3_errmsg(l->wdb));
        e->duplicate = 1;
    }
    if (w->checkpoint) {
        sqlite3_stmt *st = l->ws[W_CHECKPOINT];
        bind_text(st, 1, w->source ? w->source : "");
        bind_text(st, 2, w->checkpoint);
        sqlite3_bind_int64(st, 3, now);
        if (wstep(l, W_CHECKPOINT, err, errsz) != 0)
            return -1;
    }
    return 0;
}

/* The member record of an OP_MEMBER, or of an OP_STEP with s2 set: s1
 * instance, s2 added. */
static int apply_member(sb_ledger *l, const struct opbuf *b, const struct op *op, char *err, size_t errsz)
{
    sqlite3_stmt *st = l->ws[W_MEMBER];
    sqlite3_bind_int64(st, 1, op->entry_id);
    sqlite3_bind_int(st, 2, op->step);
    bind_text(st, 3, arena_str(b, op->s1));
    sqlite3_bind_int(st, 4, op->attempts);
    sqlite3_bind_int64(st, 5, op->t1);
    bind_text(st, 6, arena_str(b, op->s2));
    return wstep(l, W_MEMBER, err, errsz);
}

/* OP_STEP ops [from, to) that one statement can apply: the same step, time
 * and `last`, as sb_ledger_steps_done() queues a batch. Returns `to` of
 * the run that starts at from. */
static size_t steps_run(const struct opbuf *b, size_t from, size_t to)
{
    const struct op *first = &b->ops[from];
    size_t i = from + 1;
    while (i < to && b->ops[i].kind == OP_STEP && b->ops[i].step == first->step && b->ops[i].last == first->last &&
           b->ops[i].t1 == first->t1)
        i++;
    return i;
}

/* Append sep and the decimal id (a rowid SQLite assigned: positive) to the
 * writer's id list; snprintf took a visible share of the writer's time. */
static void ids_add(sb_strbuf *ids, char sep, int64_t id)
{
    char buf[24], *p = buf + sizeof buf;
    uint64_t v = (uint64_t)id;
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    *--p = sep;
    sb_strbuf_add(ids, p, (size_t)(buf + sizeof buf - p));
}

static int apply_steps(sb_ledger *l, const struct opbuf *b, size_t from, size_t to, char *err, size_t errsz)
{
    l->ids.len = 0;
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (op->s2 != NO_STR && apply_member(l, b, op, err, errsz) != 0)
            return -1;
        ids_add(&l->ids, i == from ? '[' : ',', op->entry_id);
    }
    sb_strbuf_add(&l->ids, "]", 1);
    const struct op *first = &b->ops[from];
    int which = first->last ? W_LAST_STEPS : W_STEPS;
    sqlite3_stmt *st = l->ws[which];
    sqlite3_bind_text(st, 1, l->ids.p, (int)l->ids.len, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, first->step);
    sqlite3_bind_int64(st, 3, first->t1);
    return first->last ? settle_step(l, which, SB_ENTRY_DONE, err, errsz) : wstep(l, which, err, errsz);
}

static int apply_op(sb_ledger *l, const struct opbuf *b, const struct op *op, int64_t now, char *err, size_t errsz)
{
    sqlite3_stmt *st;
    switch (op->kind) {
    case OP_ACCEPT:
        return apply_accept(l, op->w, now, err, errsz);
    case OP_MEMBER:
        return apply_member(l, b, op, err, errsz);
    case OP_ENTRY_DONE:
        st = l->ws[W_ENTRY_DONE];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int64(st, 2, op->t1);
        return settle_step(l, W_ENTRY_DONE, SB_ENTRY_DONE, err, errsz);
    case OP_RETRY:
        st = l->ws[W_RETRY];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int(st, 2, op->step);
        sqlite3_bind_int(st, 3, op->attempts);
        sqlite3_bind_int64(st, 4, op->t2);
        sqlite3_bind_int64(st, 5, op->t1);
        bind_text(st, 6, arena_str(b, op->s1));
        return wstep(l, W_RETRY, err, errsz);
    case OP_DEAD:
        st = l->ws[W_DEAD];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int(st, 2, op->step);
        bind_text(st, 3, arena_str(b, op->s1));
        sqlite3_bind_int64(st, 4, op->t1);
        return settle_step(l, W_DEAD, SB_ENTRY_DEAD, err, errsz);
    case OP_STEP: /* applied in runs by apply_group() */
    case OP_SYNC:
    case OP_CALL:
        return 0;
    }
    return 0;
}

static void rollback(sb_ledger *l)
{
    if (!sqlite3_get_autocommit(l->wdb))
        wstep(l, W_ROLLBACK, NULL, 0);
}

/* Apply ops [from, to) in one transaction; with_accepts = 0 skips accepts. */
static int apply_group(sb_ledger *l, const struct opbuf *b, size_t from, size_t to, int with_accepts, char *err,
                       size_t errsz)
{
    int64_t now = sb_now_us();
    if (tx_begin(l, err, errsz) != 0)
        return -1;
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (!with_accepts && op->kind == OP_ACCEPT)
            continue;
        int rc;
        if (op->kind == OP_STEP) {
            size_t end = steps_run(b, i, to);
            rc = apply_steps(l, b, i, end, err, errsz);
            i = end - 1;
        } else {
            rc = apply_op(l, b, op, now, err, errsz);
        }
        if (rc != 0) {
            rollback(l);
            return -1;
        }
    }
    if (tx_commit(l, err, errsz) != 0) {
        rollback(l);
        return -1;
    }
    return 0;
}

static void commit_group(sb_ledger *l, const struct opbuf *b, size_t from, size_t to)
{
    char err[200];
    if (apply_group(l, b, from, to, 1, err, sizeof err) == 0)
        return;
    size_t async = 0;
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (op->kind == OP_ACCEPT) {
            op->w->rc = -1;
            snprintf(op->w->err, sizeof op->w->err, "ledger commit failed: %s", err);
        } else if (op->kind != OP_SYNC) {
            async++;
        }
    }
    if (!async)
        return;
    /* The accepts are refused (their callers will not acknowledge); the state
     * changes concern entries committed earlier, so give them a second try
     * alone (also when the group held nothing else: the failure may have
     * been transient, e.g. BUSY from another process). */
    if (apply_group(l, b, from, to, 0, err, sizeof err) == 0)
        return;
    sb_log(NULL, SB_LOG_ERROR, "ledger: %zu state change(s) not recorded: %s", async, err);
}

static void do_call(sb_ledger *l, struct waiter *w)
{
    if (tx_begin(l, w->err, sizeof w->err) != 0) {
        w->rc = -1;
        return;
    }
    w->rc = w->fn(l, w->ctx, w->err, sizeof w->err);
    if (w->rc < 0) {
        rollback(l);
    } else if (tx_commit(l, w->err, sizeof w->err) != 0) {
        rollback(l);
        w->rc = -1;
    }
}

static void process(sb_ledger *l, const struct opbuf *b)
{
    size_t i = 0;
    while (i < b->n) {
        if (b->ops[i].kind == OP_CALL) {
            do_call(l, b->ops[i].w);
            i++;
            continue;
        }
        size_t j = i;
        while (j < b->n && b->ops[j].kind != OP_CALL)
            j++;
        commit_group(l, b, i, j);
        i = j;
    }
}

/* ---- checkpoints ---------------------------------------------------------
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses its
 * threshold, on the writer thread: copying the WAL back into the database,
 * and its fsyncs, took a fifth of the writer's time under load. A thread
 * of its own does it instead, woken by the WAL hook, with PASSIVE
 * checkpoints that never block the writer. Under sustained load it may not
 * copy every frame before the next commit (only then can the WAL restart
 * from its beginning), so past CKPT_HARD_BYTES of WAL the writer
 * checkpoints inline as SQLite would have: the WAL stays bounded either
 * way. Past CKPT_SOFT_BYTES every commit wakes the checkpointer (a wake
 * while it runs is one more run, not a queue). Waking it only once per
 * 4 MB of growth saved half its CPU under load, but then it never caught
 * up with the writer, the WAL reached CKPT_HARD_BYTES every few seconds
 * even at 1,000 events/s, and the writer's inline checkpoint (with its
 * fsyncs) put 80-100 ms into the latency run's p99. The hook counts
 * frames; the sizes are bytes converted to the file's page size. */
#define CKPT_SOFT_BYTES (16 << 20) /* wake the checkpointer */
#define CKPT_HARD_BYTES (64 << 20) /* the writer checkpoints itself (journal_size_limit) */

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sb_ledger *l = arg;
    if (frames >= l->ck_hard_frames) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= l->ck_soft_frames) {
        pthread_mutex_lock(&l->ckmu);
        l->ck_wanted = 1;
        pthread_cond_signal(&l->ckcv);
        pthread_mutex_unlock(&l->ckmu);
    }
    return SQLITE_OK;
}

static void *checkpointer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sb-ckpt");
    sb_ledger *l = arg;
    pthread_mutex_lock(&l->ckmu);
    for (;;) {
        while (!l->ck_wanted && !l->ck_stopping)
            pthread_cond_wait(&l->ckcv, &l->ckmu);
        if (l->ck_stopping)
            break;
        l->ck_wanted = 0;
        pthread_mutex_unlock(&l->ckmu);
        int rc = sqlite3_wal_checkpoint_v2(l->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) /* busy: another one is at it */
            sb_log(NULL, SB_LOG_WARN, "ledger: checkpoint: %s", sqlite3_errmsg(l->cdb));
        pthread_mutex_lock(&l->ckmu);
    }
    pthread_mutex_unlock(&l->ckmu);
    return NULL;
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sb-ledger");
    sb_ledger *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (l->in.n == 0 && !l->stopping) {
            l->writer_idle = 1;
            pthread_cond_wait(&l->work, &l->mu);
            l->writer_idle = 0;
        }
        if (l->in.n == 0)
            break;
        /* Only async ops queued: nobody is blocked, so wait a little for
         * more to share the commit. A blocked caller ends the wait. */
        if (!l->stopping && l->in.waiters == 0 && l->in.n < GATHER_MAX && l->opts.commit_interval_ms > 0) {
            struct timespec dl;
            sb_deadline_in(CLOCK_MONOTONIC, l->opts.commit_interval_ms * 1000, &dl); /* `work` uses this clock */
            l->writer_gathering = 1;
            while (!l->stopping && l->in.waiters == 0 && l->in.n < GATHER_MAX)
                if (pthread_cond_timedwait(&l->work, &l->mu, &dl) == ETIMEDOUT)
                    break;
            l->writer_gathering = 0;
        }
        struct opbuf t = l->cur;
        l->cur = l->in;
        l->in = t;
        pthread_cond_broadcast(&l->space);
        pthread_mutex_unlock(&l->mu);

        process(l, &l->cur);

        pthread_mutex_lock(&l->mu);
        if (l->cur.waiters) { /* usually none: step results do not wait */
            for (size_t i = 0; i < l->cur.n; i++)
                if (l->cur.ops[i].w)
                    l->cur.ops[i].w->done = 1;
            pthread_cond_broadcast(&l->done_cv);
        }
        l->cur.n = l->cur.alen = l->cur.waiters = 0;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- open / close ------------------------------------------------------ */

/* SQLite's memory statistics take a global mutex around each of its
 * allocations: a tenth of the ledger's CPU time per event (bench_ledger,
 * 4.9 -> 4.3 us). Nothing here reads them
 * (no soft heap limit). They can be switched off only before SQLite
 * initialises, which the process's first ledger open does; should
 * something else have initialised SQLite first, the call fails and only
 * the speed-up is lost. */
static pthread_once_t sqlite_config_once = PTHREAD_ONCE_INIT;

static void sqlite_config(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static void stop_checkpointer(sb_ledger *l)
{
    if (!l->ck_running)
        return;
    pthread_mutex_lock(&l->ckmu);
    l->ck_stopping = 1;
    pthread_cond_signal(&l->ckcv);
    pthread_mutex_unlock(&l->ckmu);
    pthread_join(l->ckpt, NULL);
    l->ck_running = 0;
}

static void free_ledger(sb_ledger *l)
{
    for (int i = 0; i < W_COUNT; i++)
        sqlite3_finalize(l->ws[i]);
    if (l->wdb)
        sqlite3_close(l->wdb);
    for (size_t i = 0; i < l->nrfree; i++)
        sqlite3_close(l->rfree[i]);
    free(l->rfree);
    opbuf_free(&l->in);
    opbuf_free(&l->cur);
    free(l->ids.p);
    if (l->cdb)
        sqlite3_close(l->cdb);
    pthread_mutex_destroy(&l->ckmu);
    pthread_cond_destroy(&l->ckcv);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->rmu);
    pthread_cond_destroy(&l->work);
    pthread_cond_destroy(&l->done_cv);
    pthread_cond_destroy(&l->space);
    free(l->path);
    free(l);
}

sb_ledger *sb_ledger_open(const char *state_dir, const sb_ledger_opts *opts, char *errstr, size_t errstr_size)
{
    char msg[512];
    if (!state_dir || !opts) {
        sb_err(errstr, errstr_size, "ledger: state_dir and options are required");
        return NULL;
    }
    if (sb_mkdir_p(state_dir, 0750, msg, sizeof msg) != 0) {
        sb_err(errstr, errstr_size, "ledger: %s", msg);
        return NULL;
    }
    pthread_once(&sqlite_config_once, sqlite_config);
    sb_ledger *l = sb_xcalloc(1, sizeof *l);
    l->path = sb_asprintf("%s/ledger.db", state_dir);
    l->opts = *opts;
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->rmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&l->done_cv, NULL);
    pthread_cond_init(&l->space, NULL);
    pthread_mutex_init(&l->ckmu, NULL);
    pthread_cond_init(&l->ckcv, NULL);

    l->wdb = open_conn(l->path, msg, sizeof msg);
    if (!l->wdb)
        goto fail;
    /* NORMAL in WAL mode: commits reach the OS at once (surviving a process
     * kill) and are fsynced at checkpoints; FULL fsyncs every commit.
     * Checkpoints run on their own thread ("checkpoints" above).
     * Pages stay at SQLite's 4 KiB. 16 KiB pages cut the writer's CPU per
     * event by a fifth under load (fewer WAL frames, each written with
     * system calls of its own), but every commit writes each page it
     * touches whole: at 1,000 single-run commits a second (filewatch) the
     * daemon wrote 122 KB per event against 34 KB with 4 KiB pages. The
     * quiet, low-rate case is the common one. */
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s;"
             " PRAGMA journal_size_limit = 67108864;"
             " PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;",
             opts->fsync == SB_FSYNC_POWER ? "FULL" : "NORMAL");
    if (exec_sql(l->wdb, pragmas, msg, sizeof msg) != 0 || setup_schema(l->wdb, msg, sizeof msg) != 0)
        goto fail;
    int page_size = pragma_int(l->wdb, "PRAGMA page_size");
    if (page_size <= 0) {
        snprintf(msg, sizeof msg, "cannot read the page size: %s", sqlite3_errmsg(l->wdb));
        goto fail;
    }
    l->ck_soft_frames = CKPT_SOFT_BYTES / page_size;
    l->ck_hard_frames = CKPT_HARD_BYTES / page_size;
    l->cdb = open_conn(l->path, msg, sizeof msg);
    if (!l->cdb || exec_sql(l->cdb, opts->fsync == SB_FSYNC_POWER ? "PRAGMA synchronous = FULL"
                                                                   : "PRAGMA synchronous = NORMAL",
                            msg, sizeof msg) != 0)
        goto fail;
    if (pthread_create(&l->ckpt, NULL, checkpointer_main, l) != 0) {
        snprintf(msg, sizeof msg, "cannot start the checkpoint thread");
        goto fail;
    }
    l->ck_running = 1;
    sqlite3_wal_hook(l->wdb, wal_hook, l); /* replaces SQLite's automatic checkpoint */
    for (int i = 0; i < W_COUNT; i++) {
        if (sqlite3_prepare_v3(l->wdb, wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->ws[i], NULL) != SQLITE_OK) {
            snprintf(msg, sizeof msg, "prepare: %s", sqlite3_errmsg(l->wdb));
            goto fail;
        }
    }
    if (pthread_create(&l->writer, NULL, writer_main, l) != 0) {
        snprintf(msg, sizeof msg, "cannot start writer thread");
        goto fail;
    }
    return l;
fail:
    sb_err(errstr, errstr_size, "ledger %s: %s", l->path, msg);
    stop_checkpointer(l);
    free_ledger(l);
    return NULL;
}

void sb_ledger_close(sb_ledger *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_signal(&l->work);
    pthread_cond_broadcast(&l->space);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->writer, NULL);
    stop_checkpointer(l);
    for (size_t i = 0; i < l->nrfree; i++)
        sqlite3_close(l->rfree[i]);
    l->nrfree = 0;
    exec_sql(l->wdb, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, 0);
    free_ledger(l);
}

/* ---- writes ------------------------------------------------------------ */

int sb_ledger_accept(sb_ledger *l, const char *source, const char *checkpoint, sb_ledger_new *entries, size_t n,
                     char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++)
        if (!entries[i].event_id || !entries[i].route || !entries[i].payload)
            return sb_err(errstr, errstr_size, "ledger accept: entry %zu lacks event_id, route or payload", i);
    if (n == 0 && !checkpoint)
        return 0;
    struct waiter w = {.source = source, .checkpoint = checkpoint, .entries = entries, .n = n};
    struct op op = {.kind = OP_ACCEPT, .w = &w};
    enqueue(l, &op, NULL, NULL);
    if (w.rc < 0)
        return sb_err(errstr, errstr_size, "%s", w.err);
    return 0;
}

void sb_ledger_member_done(sb_ledger *l, int64_t entry_id, int step, const char *instance, int attempts,
                           const char *added_json)
{
    struct op op = {.kind = OP_MEMBER, .entry_id = entry_id, .step = step, .attempts = attempts,
                    .t1 = sb_now_us()};
    enqueue(l, &op, instance ? instance : "", added_json);
}

void sb_ledger_steps_done(sb_ledger *l, const sb_ledger_step *steps, size_t n)
{
    if (n == 0)
        return;
    int64_t now = sb_now_us();
    pthread_mutex_lock(&l->mu);
    wait_space(l);
    for (size_t i = 0; i < n; i++) {
        const sb_ledger_step *s = &steps[i];
        struct op op = {.kind = OP_STEP, .entry_id = s->entry_id, .step = s->step, .last = s->last,
                        .attempts = s->attempts, .t1 = now};
        /* A single member that added nothing needs no record: resume
         * merges no fields from it and next_step says it is done. */
        const char *added = s->member ? s->added_json : NULL;
        push_op(l, &op, added ? s->member : NULL, added);
    }
    wake_writer(l, 0);
    pthread_mutex_unlock(&l->mu);
}

void sb_ledger_entry_done(sb_ledger *l, int64_t entry_id)
{
    struct op op = {.kind = OP_ENTRY_DONE, .entry_id = entry_id, .t1 = sb_now_us()};
    enqueue(l, &op, NULL, NULL);
}

void sb_ledger_retry(sb_ledger *l, int64_t entry_id, int step, int attempts, int64_t next_retry_us,
                     const char *reason)
{
    struct op op = {.kind = OP_RETRY, .entry_id = entry_id, .step = step, .attempts = attempts,
                    .t1 = sb_now_us(), .t2 = next_retry_us};
    enqueue(l, &op, reason, NULL);
}

void sb_ledger_dead(sb_ledger *l, int64_t entry_id, int step, const char *reason)
{
    struct op op = {.kind = OP_DEAD, .entry_id = entry_id, .step = step, .t1 = sb_now_us()};
    enqueue(l, &op, reason, NULL);
}

void sb_ledger_sync(sb_ledger *l)
{
    struct waiter w = {0};
    struct op op = {.kind = OP_SYNC, .w = &w};
    enqueue(l, &op, NULL, NULL);
}

/* ---- reads ------------------------------------------------------------- */

char *sb_ledger_checkpoint(sb_ledger *l, const char *source, int *failed, char *errstr, size_t errstr_size)
{
    int dummy;
    failed = failed ? failed : &dummy;
    *failed = 1;
    sqlite3 *db = reader_get(l, errstr, errstr_size);
    if (!db)
        return NULL;
    char *val = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT value FROM checkpoints WHERE source = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        bind_text(st, 1, source ? source : "");
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            val = sb_strdup((const char *)sqlite3_column_text(st, 0));
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        *failed = 0;
    else
        sb_err(errstr, errstr_size, "reading the checkpoint of %s: %s", source ? source : "", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    reader_put(l, db);
    return val;
}

#define PENDING_COLS "id, event_id, route, source, payload, next_step, attempts, first_attempt_us, next_retry_us"

/* Build the resume view of the current row of st (PENDING_COLS) and call cb. */
static int emit_pending(sqlite3 *db, sqlite3_stmt *st, sqlite3_stmt *mem,
                        int (*cb)(const sb_ledger_pending *p, void *ud), void *ud)
{
    sb_ledger_pending p = {
        .entry_id = sqlite3_column_int64(st, 0),
        .event_id = (const char *)sqlite3_column_text(st, 1),
        .route = (const char *)sqlite3_column_text(st, 2),
        .source = (const char *)sqlite3_column_text(st, 3),
        .payload = (const char *)sqlite3_column_text(st, 4),
        .next_step = sqlite3_column_int(st, 5),
        .attempts = sqlite3_column_int(st, 6),
        .first_attempt_us = sqlite3_column_int64(st, 7),
        .next_retry_us = sqlite3_column_int64(st, 8),
    };
    json_t *added = json_object(), *done = json_array();
    sqlite3_bind_int64(mem, 1, p.entry_id);
    sqlite3_bind_int(mem, 2, p.next_step);
    int rc;
    while ((rc = sqlite3_step(mem)) == SQLITE_ROW) {
        int step = sqlite3_column_int(mem, 0);
        if (step == p.next_step) {
            json_array_append_new(done, json_string((const char *)sqlite3_column_text(mem, 1)));
            continue;
        }
        const char *a = (const char *)sqlite3_column_text(mem, 2);
        json_t *obj = a ? json_loads(a, 0, NULL) : NULL;
        if (json_is_object(obj))
            json_object_update(added, obj);
        json_decref(obj);
    }
    sqlite3_reset(mem);
    char *added_s = json_dumps(added, JSON_COMPACT);
    char *done_s = json_dumps(done, JSON_COMPACT);
    json_decref(added);
    json_decref(done);
    p.added_json = added_s;
    p.members_done = done_s;
    int stop = rc == SQLITE_DONE ? cb(&p, ud) : -1;
    if (rc != SQLITE_DONE)
        sb_log(NULL, SB_LOG_ERROR, "ledger: reading members of entry %lld: %s", (long long)p.entry_id,
               sqlite3_errmsg(db));
    free(added_s);
    free(done_s);
    return stop;
}

static const char *const members_sql =
    "SELECT step, instance, added FROM members WHERE entry_id = ?1 AND step <= ?2"
    " ORDER BY step, completed_us, instance";

int sb_ledger_foreach_pending(sb_ledger *l, const char *route, int64_t after_id, size_t limit,
                              int (*cb)(const sb_ledger_pending *p, void *ud), void *ud)
{
    sqlite3 *db = reader_get(l, NULL, 0);
    if (!db)
        return -1;
    sqlite3_stmt *st = NULL, *mem = NULL;
    int count = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT " PENDING_COLS " FROM " ENTRY_ROWS " WHERE state = 0 AND id > ?1"
                           " AND (?2 IS NULL OR route = ?2) ORDER BY id LIMIT ?3",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, members_sql, -1, &mem, NULL) != SQLITE_OK) {
        sb_log(NULL, SB_LOG_ERROR, "ledger: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(st, 1, after_id);
    bind_text(st, 2, route);
    sqlite3_bind_int64(st, 3, limit ? (sqlite3_int64)limit : -1);
    count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int stop = emit_pending(db, st, mem, cb, ud);
        if (stop < 0) {
            count = -1;
            break;
        }
        count++;
        if (stop)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sb_log(NULL, SB_LOG_ERROR, "ledger: reading pending entries: %s", sqlite3_errmsg(db));
        count = -1;
    }
out:
    sqlite3_finalize(st);
    sqlite3_finalize(mem);
    reader_put(l, db);
    return count;
}

struct id_list {
    int64_t *ids;
    size_t n;
};

static int clear_requeued(sb_ledger *l, void *ctx, char *err, size_t errsz)
{
    struct id_list *ids = ctx;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(l->wdb, "UPDATE entries SET requeued = 0 WHERE id = ?1 AND requeued = 1", -1, &st,
                           NULL) != SQLITE_OK)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    size_t kept = 0;
    for (size_t i = 0; i < ids->n; i++) {
        sqlite3_bind_int64(st, 1, ids->ids[i]);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
            sqlite3_finalize(st);
            return -1;
        }
        /* Another taker (e.g. a second process) may have cleared it first. */
        if (sqlite3_changes(l->wdb) > 0)
            ids->ids[kept++] = ids->ids[i];
    }
    ids->n = kept;
    sqlite3_finalize(st);
    return 0;
}

int sb_ledger_take_requeued(sb_ledger *l, size_t limit, int (*cb)(const sb_ledger_pending *p, void *ud), void *ud)
{
    struct id_list ids = {0};
    char err[256];
    sqlite3 *db = reader_get(l, err, sizeof err);
    if (!db) {
        sb_log(NULL, SB_LOG_ERROR, "ledger: taking requeued entries: %s", err);
        return -1;
    }
    sqlite3_stmt *st = NULL, *mem = NULL;
    int count = -1;
    if (sqlite3_prepare_v2(db, "SELECT id FROM entries WHERE requeued = 1 ORDER BY id LIMIT ?1", -1, &st, NULL) !=
        SQLITE_OK)
        goto out;
    sqlite3_bind_int64(st, 1, limit ? (sqlite3_int64)limit : -1);
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ids.n == cap) {
            cap = cap ? cap * 2 : 64;
            ids.ids = sb_xrealloc(ids.ids, cap * sizeof *ids.ids);
        }
        ids.ids[ids.n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (ids.n == 0) {
        count = 0;
        goto out;
    }
    /* Prepare before the flags are cleared: past that point every taken
     * entry must be handed out, or it would sit pending until a restart. */
    if (sqlite3_prepare_v2(db, "SELECT " PENDING_COLS " FROM " ENTRY_ROWS " WHERE id = ?1", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, members_sql, -1, &mem, NULL) != SQLITE_OK)
        goto out;
    if (run_call(l, clear_requeued, &ids, err, sizeof err) < 0) {
        sb_log(NULL, SB_LOG_ERROR, "ledger: taking requeued entries: %s", err);
        goto out_quiet;
    }
    count = 0;
    for (size_t i = 0; i < ids.n; i++) {
        sqlite3_bind_int64(st, 1, ids.ids[i]);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (emit_pending(db, st, mem, cb, ud) < 0)
                sb_log(NULL, SB_LOG_ERROR, "ledger: replayed entry %lld could not be handed out; it resumes at the "
                       "next start", (long long)ids.ids[i]);
            count++;
        } else if (rc != SQLITE_DONE) { /* DONE: dropped meanwhile */
            sb_log(NULL, SB_LOG_ERROR, "ledger: reading replayed entry %lld: %s; it resumes at the next start",
                   (long long)ids.ids[i], sqlite3_errmsg(db));
        }
        sqlite3_reset(st);
    }
out:
    if (count < 0)
        sb_log(NULL, SB_LOG_ERROR, "ledger: taking requeued entries failed: %s", sqlite3_errmsg(db));
out_quiet:
    sqlite3_finalize(st);
    sqlite3_finalize(mem);
    reader_put(l, db);
    free(ids.ids);
    return count;
}

static json_t *col_json_text(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? json_string(s) : json_null();
}

#define LIST_COLS                                                                                                   \
    "id, event_id, route, source, state, next_step, attempts, received_us, updated_us, error, payload,"            \
    " first_attempt_us, next_retry_us, requeued"

static json_t *row_to_json(sqlite3_stmt *st)
{
    json_t *fields = NULL;
    const char *payload = (const char *)sqlite3_column_text(st, 10);
    json_t *doc = payload ? json_loads(payload, 0, NULL) : NULL;
    if (doc && json_object_get(doc, "fields"))
        fields = json_incref(json_object_get(doc, "fields"));
    json_decref(doc);
    json_t *o = json_object();
    json_object_set_new(o, "entry_id", json_integer(sqlite3_column_int64(st, 0)));
    json_object_set_new(o, "event_id", col_json_text(st, 1));
    json_object_set_new(o, "route", col_json_text(st, 2));
    json_object_set_new(o, "source", col_json_text(st, 3));
    static const char *const states[] = {"pending", "done", "dead"};
    int state = sqlite3_column_int(st, 4);
    json_object_set_new(o, "state", json_string(state >= 0 && state <= 2 ? states[state] : "unknown"));
    json_object_set_new(o, "next_step", json_integer(sqlite3_column_int(st, 5)));
    json_object_set_new(o, "attempts", json_integer(sqlite3_column_int(st, 6)));
    json_object_set_new(o, "received_us", json_integer(sqlite3_column_int64(st, 7)));
    json_object_set_new(o, "updated_us", json_integer(sqlite3_column_int64(st, 8)));
    json_object_set_new(o, "error", col_json_text(st, 9));
    json_object_set_new(o, "fields", fields ? fields : json_null());
    json_object_set_new(o, "first_attempt_us", json_integer(sqlite3_column_int64(st, 11)));
    json_object_set_new(o, "next_retry_us", json_integer(sqlite3_column_int64(st, 12)));
    json_object_set_new(o, "requeued", json_boolean(sqlite3_column_int(st, 13)));
    return o;
}

json_t *sb_ledger_list(sb_ledger *l, const sb_ledger_filter *f, char *errstr, size_t errstr_size)
{
    sb_ledger_filter none = {.state = -1};
    if (!f)
        f = &none;
    char *path = NULL;
    if (f->field_eq_name) {
        if (strpbrk(f->field_eq_name, "\"\\"))
            return sb_err(errstr, errstr_size, "bad field name"), NULL;
        path = sb_asprintf("$.fields.\"%s\"", f->field_eq_name);
    }
    sqlite3 *db = reader_get(l, errstr, errstr_size);
    if (!db) {
        free(path);
        return NULL;
    }
    json_t *out = NULL;
    sqlite3_stmt *st = NULL;
    /* The state goes into the text, not a parameter: only a literal
     * "state = 2" lets SQLite walk the partial index of dead entries (and
     * of pending ones) instead of every entry, which `dlq list` did. */
    char state_cond[32] = "?3 < 0";
    if (f->state >= 0)
        snprintf(state_cond, sizeof state_cond, "state = %d", f->state);
    char sql[1024]; /* about 520 bytes */
    snprintf(sql, sizeof sql,
             "SELECT " LIST_COLS " FROM " ENTRY_ROWS " WHERE"
             " (?1 IS NULL OR route = ?1) AND (?2 IS NULL OR source = ?2) AND %s"
             " AND (?4 IS NULL OR CAST(json_extract(payload, ?4) AS TEXT) = ?5)"
             " AND (?6 = 0 OR received_us >= ?6) AND (?7 = 0 OR received_us < ?7)"
             " ORDER BY id DESC LIMIT ?8",
             state_cond);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sb_err(errstr, errstr_size, "ledger list: %s", sqlite3_errmsg(db));
        goto out;
    }
    bind_text(st, 1, f->route);
    bind_text(st, 2, f->source);
    sqlite3_bind_int(st, 3, f->state);
    bind_text(st, 4, path);
    bind_text(st, 5, f->field_eq_value ? f->field_eq_value : "");
    sqlite3_bind_int64(st, 6, f->since_us);
    sqlite3_bind_int64(st, 7, f->until_us);
    sqlite3_bind_int64(st, 8, f->limit ? (sqlite3_int64)f->limit : 100);
    out = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(out, row_to_json(st));
    if (rc != SQLITE_DONE) {
        sb_err(errstr, errstr_size, "ledger list: %s", sqlite3_errmsg(db));
        json_decref(out);
        out = NULL;
    }
out:
    sqlite3_finalize(st);
    reader_put(l, db);
    free(path);
    return out;
}

/* A step below next_step without member records: its only member completed
 * it and added no fields, which leaves no record (see OP_STEP). */
static json_t *unrecorded_step(int step)
{
    return json_pack("{s:i, s:n, s:n, s:n, s:n}", "step", step, "instance", "attempts", "completed_us", "added");
}

json_t *sb_ledger_show(sb_ledger *l, int64_t entry_id, char *errstr, size_t errstr_size)
{
    sqlite3 *db = reader_get(l, errstr, errstr_size);
    if (!db)
        return NULL;
    json_t *o = NULL;
    sqlite3_stmt *st = NULL, *mem = NULL;
    if (sqlite3_prepare_v2(db, "SELECT " LIST_COLS " FROM " ENTRY_ROWS " WHERE id = ?1", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT step, instance, attempts, completed_us, added FROM members WHERE entry_id = ?1"
                           " ORDER BY step, completed_us, instance",
                           -1, &mem, NULL) != SQLITE_OK) {
        sb_err(errstr, errstr_size, "ledger show: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(st, 1, entry_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            sb_err(errstr, errstr_size, "no ledger entry %lld", (long long)entry_id);
        else
            sb_err(errstr, errstr_size, "ledger show: %s", sqlite3_errmsg(db));
        goto out;
    }
    o = row_to_json(st);
    int next_step = sqlite3_column_int(st, 5);
    json_t *steps = json_array();
    int unlisted = 0; /* the first step not listed yet */
    sqlite3_bind_int64(mem, 1, entry_id);
    while ((rc = sqlite3_step(mem)) == SQLITE_ROW) {
        int step = sqlite3_column_int(mem, 0);
        for (; unlisted < step && unlisted < next_step; unlisted++)
            json_array_append_new(steps, unrecorded_step(unlisted));
        if (unlisted <= step)
            unlisted = step + 1;
        json_t *s = json_object();
        json_object_set_new(s, "step", json_integer(step));
        json_object_set_new(s, "instance", col_json_text(mem, 1));
        json_object_set_new(s, "attempts", json_integer(sqlite3_column_int(mem, 2)));
        json_object_set_new(s, "completed_us", json_integer(sqlite3_column_int64(mem, 3)));
        const char *a = (const char *)sqlite3_column_text(mem, 4);
        json_t *added = a ? json_loads(a, 0, NULL) : NULL;
        json_object_set_new(s, "added", added ? added : json_null());
        json_array_append_new(steps, s);
    }
    for (; unlisted < next_step; unlisted++)
        json_array_append_new(steps, unrecorded_step(unlisted));
    json_object_set_new(o, "steps", steps);
    if (rc != SQLITE_DONE) {
        sb_err(errstr, errstr_size, "ledger show: %s", sqlite3_errmsg(db));
        json_decref(o);
        o = NULL;
    }
out:
    sqlite3_finalize(st);
    sqlite3_finalize(mem);
    reader_put(l, db);
    return o;
}

int sb_ledger_counts(sb_ledger *l, int64_t *pending, int64_t *done, int64_t *dead)
{
    sqlite3 *db = reader_get(l, NULL, 0);
    if (!db)
        return -1;
    int64_t v[3] = {0, 0, 0};
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT state, entries FROM counts", -1, &st, NULL);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int state = sqlite3_column_int(st, 0);
            if (state >= 0 && state < 3)
                v[state] = sqlite3_column_int64(st, 1);
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        sb_log(NULL, SB_LOG_ERROR, "ledger counts: %s", sqlite3_errmsg(db));
    reader_put(l, db);
    if (rc != SQLITE_DONE)
        return -1;
    if (pending)
        *pending = v[SB_ENTRY_PENDING];
    if (done)
        *done = v[SB_ENTRY_DONE];
    if (dead)
        *dead = v[SB_ENTRY_DEAD];
    return 0;
}

/* ---- writer-side maintenance (run via run_call) ------------------------ */

/* Settled entries to delete, collected before deleting. */
struct del_list {
    int64_t *ids;
    int *states;
    size_t n, cap;
};

static void del_add(struct del_list *d, int64_t id, int state)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->ids = sb_xrealloc(d->ids, d->cap * sizeof *d->ids);
        d->states = sb_xrealloc(d->states, d->cap * sizeof *d->states);
    }
    d->ids[d->n] = id;
    d->states[d->n++] = state;
}

/* Delete the listed entries with their payloads and member records (writer). */
static int delete_entries(sb_ledger *l, struct del_list *d, char *err, size_t errsz)
{
    static const char *const sql[] = {"DELETE FROM members WHERE entry_id = ?1", "DELETE FROM payloads WHERE id = ?1",
                                      "DELETE FROM entries WHERE id = ?1"};
    enum { NSQL = sizeof sql / sizeof sql[0] };
    sqlite3_stmt *st[NSQL] = {0};
    int rc = 0;
    for (size_t k = 0; k < NSQL && rc == 0; k++)
        if (sqlite3_prepare_v2(l->wdb, sql[k], -1, &st[k], NULL) != SQLITE_OK)
            rc = -1;
    for (size_t i = 0; i < d->n && rc == 0; i++) {
        for (size_t k = 0; k < NSQL && rc == 0; k++) {
            sqlite3_bind_int64(st[k], 1, d->ids[i]);
            if (sqlite3_step(st[k]) != SQLITE_DONE)
                rc = -1;
            sqlite3_reset(st[k]);
        }
        l->moved[d->states[i]]--;
    }
    if (rc != 0)
        sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    for (size_t k = 0; k < NSQL; k++)
        sqlite3_finalize(st[k]);
    return rc;
}

struct prune_ctx {
    int64_t cutoff; /* settled before this: pruned */
    int64_t after;  /* the walk is past this id */
    int deleted;
    int finished;
};

/* One transaction of the prune walk: entries in id order, which is the
 * order they were accepted in, deleting the settled ones last updated
 * before the cutoff. The walk ends at the first entry accepted at or after
 * the cutoff: every later one was updated after it too. Pending entries
 * and recently settled ones on the way are looked at again by each prune. */
static int prune_fn(sb_ledger *l, void *ctx, char *err, size_t errsz)
{
    struct prune_ctx *c = ctx;
    struct del_list d = {0};
    sqlite3_stmt *sel = NULL;
    if (sqlite3_prepare_v2(l->wdb,
                           "SELECT id, state, updated_us, accepted_us FROM entries WHERE id > ?1"
                           " ORDER BY id LIMIT ?2",
                           -1, &sel, NULL) != SQLITE_OK)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_bind_int64(sel, 1, c->after);
    sqlite3_bind_int64(sel, 2, PRUNE_SCAN);
    int rc, seen = 0;
    c->finished = 1;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
        if (sqlite3_column_int64(sel, 3) >= c->cutoff)
            break;
        c->after = sqlite3_column_int64(sel, 0);
        int state = sqlite3_column_int(sel, 1);
        if (state != SB_ENTRY_PENDING && sqlite3_column_int64(sel, 2) < c->cutoff)
            del_add(&d, c->after, state);
        if (++seen == PRUNE_SCAN || d.n == PRUNE_CHUNK) {
            c->finished = 0;
            break;
        }
    }
    int ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    if (!ok)
        sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_finalize(sel);
    if (ok && delete_entries(l, &d, err, errsz) == 0)
        c->deleted = (int)d.n;
    else
        ok = 0;
    free(d.ids);
    free(d.states);
    return ok ? 0 : -1;
}

int sb_ledger_prune(sb_ledger *l, int64_t now_us)
{
    char err[256];
    struct prune_ctx c = {.cutoff = now_us - l->opts.retention_ms * 1000};
    int total = 0;
    /* In chunks, so queued state changes are committed in between. */
    do {
        if (run_call(l, prune_fn, &c, err, sizeof err) < 0) {
            sb_log(NULL, SB_LOG_ERROR, "ledger prune: %s", err);
            return -1;
        }
        total += c.deleted;
    } while (!c.finished);
    return total;
}

struct drop_ctx {
    int64_t entry_id;
    const char *route;
    int deleted;
};

static int drop_fn(sb_ledger *l, void *ctx, char *err, size_t errsz)
{
    struct drop_ctx *c = ctx;
    struct del_list d = {0};
    sqlite3_stmt *sel = NULL;
    if (sqlite3_prepare_v2(l->wdb,
                           "SELECT id FROM entries WHERE state = 2 AND (?1 = 0 OR id = ?1)"
                           " AND (?2 IS NULL OR route = ?2)",
                           -1, &sel, NULL) != SQLITE_OK)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_bind_int64(sel, 1, c->entry_id);
    bind_text(sel, 2, c->route);
    int rc;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW)
        del_add(&d, sqlite3_column_int64(sel, 0), SB_ENTRY_DEAD);
    if (rc != SQLITE_DONE)
        sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_finalize(sel);
    if (rc == SQLITE_DONE && delete_entries(l, &d, err, errsz) == 0)
        c->deleted = (int)d.n;
    else
        rc = -1;
    free(d.ids);
    free(d.states);
    return rc == SQLITE_DONE ? 0 : -1;
}

int sb_ledger_dlq_drop(sb_ledger *l, int64_t entry_id, const char *route, char *errstr, size_t errstr_size)
{
    struct drop_ctx c = {.entry_id = entry_id, .route = route};
    if (run_call(l, drop_fn, &c, errstr, errstr_size) < 0)
        return -1;
    return c.deleted;
}

struct replay_ctx {
    int64_t entry_id;
    const char *route;
    int changed;
};

static int replay_fn(sb_ledger *l, void *ctx, char *err, size_t errsz)
{
    struct replay_ctx *c = ctx;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(l->wdb,
                           "UPDATE entries SET state = 0, attempts = 0, first_attempt_us = 0, next_retry_us = 0,"
                           " requeued = 1, updated_us = ?3 WHERE state = 2 AND (?1 = 0 OR id = ?1)"
                           " AND (?2 IS NULL OR route = ?2)",
                           -1, &st, NULL) != SQLITE_OK)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_bind_int64(st, 1, c->entry_id);
    bind_text(st, 2, c->route);
    sqlite3_bind_int64(st, 3, sb_now_us());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    c->changed = sqlite3_changes(l->wdb);
    l->moved[SB_ENTRY_DEAD] -= c->changed;
    l->moved[SB_ENTRY_PENDING] += c->changed;
    return 0;
}

int sb_ledger_dlq_replay(sb_ledger *l, int64_t entry_id, const char *route, char *errstr, size_t errstr_size)
{
    struct replay_ctx c = {.entry_id = entry_id, .route = route};
    if (run_call(l, replay_fn, &c, errstr, errstr_size) < 0)
        return -1;
    return c.changed;
}
