/* ledger.c - the run ledger: SQLite (WAL) with one group-committing writer
 * thread. This file opens and closes it; ledger_internal.h lists the others. */
#include "build_config.h"
#include "ledger/ledger_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <syncbridge/log.h>

/* The writer's statements (writer.c runs them as l->ws[W_...]), prepared
 * once on its connection when the ledger opens. */
static const char *const wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    /* W_INSERT, W_PAYLOAD, W_MEMBER and the _ROWS forms: see rows_sql[] */
    [W_FIND] = "SELECT id FROM entries WHERE event_id = ?1 AND route = ?2",
    [W_CHECKPOINT] = "INSERT INTO checkpoints(source, value, updated_us) VALUES(?1, ?2, ?3)"
                     " ON CONFLICT(source) DO UPDATE SET value = excluded.value, updated_us = excluded.updated_us",
    /* Step ?2 of the entries whose ids are in the JSON array ?1. One
     * statement for a batch: each execution opens cursors on the table and
     * on every index it may change, which cost about as much as the update
     * of one entry. */
    [W_STEPS] = "UPDATE entries SET next_step = ?2 + 1, attempts = 0, first_attempt_us = 0, next_retry_us = 0,"
                " updated_us = ?3 WHERE id IN (SELECT value FROM json_each(?1))",
    /* The _RANGE forms: the entries ?1 to ?4, when a run's ids are
     * consecutive (a batch accepted together, the usual case). SQLite
     * walks the range in order instead of parsing the array and seeking
     * each id: 1,450 fewer instructions per event (docs/benchmarks.md). */
    [W_STEPS_RANGE] = "UPDATE entries SET next_step = ?2 + 1, attempts = 0, first_attempt_us = 0,"
                      " next_retry_us = 0, updated_us = ?3 WHERE id BETWEEN ?1 AND ?4",
    /* Done and dead are reached from pending only (dlq replay is the way
     * back), so every entry a state change matches leaves the pending count. */
    [W_ENTRY_DONE] = "UPDATE entries SET state = 1, next_retry_us = 0, updated_us = ?2 WHERE id = ?1 AND state = 0"
                     " AND NOT " ENTRY_SETTLED_BY_RANGE("entries"),
    /* the common end of a run: the route's last step is done, and so is the entry */
    [W_LAST_STEPS] = "UPDATE entries SET next_step = ?2 + 1, attempts = 0, first_attempt_us = 0, next_retry_us = 0,"
                     " state = 1, updated_us = ?3 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 0"
                     " AND NOT " ENTRY_SETTLED_BY_RANGE("entries"),
    [W_LAST_STEPS_RANGE] = "UPDATE entries SET next_step = ?2 + 1, attempts = 0, first_attempt_us = 0,"
                           " next_retry_us = 0, state = 1, updated_us = ?3 WHERE id BETWEEN ?1 AND ?4 AND state = 0"
                           " AND NOT " ENTRY_SETTLED_BY_RANGE("entries"),
    /* A retry at a step other than the recorded one starts that step's clock. */
    [W_RETRY] = "UPDATE entries SET first_attempt_us = CASE WHEN first_attempt_us = 0 OR next_step <> ?2"
                " THEN ?5 ELSE first_attempt_us END, next_step = ?2, attempts = ?3, next_retry_us = ?4,"
                " error = ?6, updated_us = ?5 WHERE id = ?1",
    [W_DEAD] = "UPDATE entries SET state = 2, next_step = ?2, next_retry_us = 0, error = ?3, updated_us = ?4"
               " WHERE id = ?1 AND state = 0 AND NOT " ENTRY_SETTLED_BY_RANGE("entries"),
    [W_COUNTS_ADD] = "UPDATE counts SET entries = entries + ?2 WHERE state = ?1",
    /* A step's state: the first write starts the row, later ones replace the
     * state and keep started_us. */
    [W_STATE] = "INSERT INTO step_states(entry_id, step, member, state, started_us, updated_us)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(entry_id, step, member)"
                " DO UPDATE SET state = excluded.state, updated_us = excluded.updated_us",
    /* Progress of long work: the row is started if the step kept no state
     * yet (its state stays NULL, which resume skips), the state is kept. */
    [W_PROGRESS] = "INSERT INTO step_states(entry_id, step, member, progress, started_us, updated_us)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(entry_id, step, member)"
                   " DO UPDATE SET progress = excluded.progress, updated_us = excluded.updated_us",
    /* keep_payload: until_settled, after W_LAST_STEPS or W_ENTRY_DONE with
     * the same ids (a range after W_LAST_STEPS_RANGE or W_ENTRY_DONE): the
     * payload rows of those entries, once every entry a row holds is done.
     * An entry that was dead already keeps its payload (dlq replay needs
     * it), and so do the others of its row, an entry still pending too. */
    [W_DROP_PAYLOADS] = "DELETE FROM payloads WHERE id IN (SELECT " PAYLOAD_ROW_OF("value")
                        " FROM json_each(?1)) AND " PAYLOAD_ROW_SETTLED,
    [W_DROP_PAYLOADS_RANGE] = "DELETE FROM payloads WHERE id BETWEEN coalesce(" PAYLOAD_ROW_OF("?1")
                              ", ?1) AND ?4 AND " PAYLOAD_ROW_SETTLED,
    /* The entries ?1 to ?4 (a run of consecutive ids whose route's last
     * step ?2 completed at ?3) settled as one range (ledger_internal.h),
     * unless some of them are settled already: by a range (it would
     * overlap), or done or dead in their own rows (the partial index
     * entries_not_pending finds them), or an end is missing. Then it
     * inserts nothing, and the writer falls back to W_LAST_STEPS_RANGE,
     * which settles the pending ones only: a step reported twice moves
     * no count twice. When it inserts, the writer counts ?4 - ?1 + 1
     * entries done: none between the ends is missing, since only settled
     * entries are ever deleted (pruning, dlq drop), and the router reports
     * steps of pending ones. Counting the rows instead cost 1 % of the
     * daemon's instructions. */
    [W_SETTLE_RANGE] = "INSERT INTO settled(first, last, next_step, updated_us) SELECT ?1, ?4, ?2 + 1, ?3"
                       " WHERE " SETTLED_LAST_OF("?4") " < ?1 AND (SELECT state FROM entries WHERE id = ?1) = 0"
                       " AND (SELECT state FROM entries WHERE id = ?4) = 0"
                       " AND NOT EXISTS (SELECT 1 FROM entries WHERE id BETWEEN ?1 AND ?4 AND state <> 0)",
    /* keep_payload: until_settled, after W_SETTLE_RANGE settled ?1 to ?4:
     * their payload rows; a row holding only entries of the range goes
     * without a look at each entry. */
    [W_DROP_SETTLED_PAYLOADS] = "DELETE FROM payloads WHERE id BETWEEN coalesce(" PAYLOAD_ROW_OF("?1")
                                ", ?1) AND ?4 AND (id >= ?1 AND id + span - 1 <= ?4 OR " PAYLOAD_ROW_SETTLED ")",
    /* The payloads of ?3 entries accepted together, as one row (writer.c,
     * payload_row_add). */
    [W_PAYLOAD_GROUP] = "INSERT INTO payloads(id, payload, span, fields_only) VALUES(?1, ?2, ?3, ?4)",
};

/* The INSERTs: the head, then the row `rows` times, its parameters
 * numbered on from the row before (writer.c binds them row by row:
 * bind_entry(), bind_member()). The _ROWS forms write ROWS_PER_INSERT rows
 * with one statement.
 * A duplicate (event_id, route) stops an entries INSERT with
 * SQLITE_CONSTRAINT_UNIQUE: ON CONFLICT DO NOTHING cost every insert more
 * than the rare failure costs a duplicate. OR FAIL keeps the rows the
 * statement wrote before the duplicate (sqlite3_changes() counts them),
 * where the default, ABORT, undoes them: to be able to, SQLite copied
 * every page a many-row statement changed into a statement journal first,
 * about 700 instructions per event (docs/benchmarks.md). Any other error
 * rolls the writer's whole transaction back, so the payload INSERT is
 * OR FAIL too. */
#define ENTRY_INSERT                                                                                               \
    "INSERT OR FAIL INTO entries(event_id, route, source, received_us, state, next_step, attempts,"               \
    " first_attempt_us, next_retry_us, updated_us, accepted_us) VALUES"
#define ENTRY_ROW "(?, ?, ?, ?, 0, 0, 0, 0, 0, ?, ?)"
/* W_INSERT_ROWS_SHARED: rows of one route and source, which are bound
 * once (?1 route, ?2 source, ?3 the time) instead of in each row: binding
 * them row by row was about 4 % of the daemon's instructions. Row r's
 * event id and received time are ?(4 + 2r) and ?(5 + 2r). */
#define ENTRY_ROW_SHARED "(?%d, ?1, ?2, ?%d, 0, 0, 0, 0, 0, ?3, ?3)"
#define PAYLOAD_INSERT "INSERT OR FAIL INTO payloads(id, payload, fields_only) VALUES"
#define PAYLOAD_ROW "(?, ?, ?)"
#define MEMBER_INSERT "INSERT OR IGNORE INTO members(entry_id, step, instance, attempts, completed_us, added) VALUES"
#define MEMBER_ROW "(?, ?, ?, ?, ?, ?)"
static const struct {
    const char *head, *row;
    int rows;
} rows_sql[W_COUNT] = {
    [W_INSERT] = {ENTRY_INSERT, ENTRY_ROW, 1},
    [W_INSERT_ROWS] = {ENTRY_INSERT, ENTRY_ROW, ROWS_PER_INSERT},
    [W_PAYLOAD] = {PAYLOAD_INSERT, PAYLOAD_ROW, 1},
    [W_MEMBER] = {MEMBER_INSERT, MEMBER_ROW, 1},
    [W_MEMBER_ROWS] = {MEMBER_INSERT, MEMBER_ROW, ROWS_PER_INSERT},
};

/* Prepare the writer's statement `i` on its connection. */
static int prepare_writer_statement(sb_ledger *l, int i)
{
    if (wsql[i])
        return sqlite3_prepare_v3(l->wdb, wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->ws[i], NULL);
    sb_strbuf q = {0};
    if (i == W_INSERT_ROWS_SHARED) {
        sb_strbuf_add(&q, ENTRY_INSERT, strlen(ENTRY_INSERT));
        for (int r = 0; r < ROWS_PER_INSERT; r++)
            sb_strbuf_printf(&q, r ? "," ENTRY_ROW_SHARED : ENTRY_ROW_SHARED, 4 + 2 * r, 5 + 2 * r);
    } else if (rows_sql[i].head) {
        sb_strbuf_add(&q, rows_sql[i].head, strlen(rows_sql[i].head));
        for (int r = 0; r < rows_sql[i].rows; r++) {
            if (r)
                sb_strbuf_add(&q, ",", 1);
            sb_strbuf_add(&q, rows_sql[i].row, strlen(rows_sql[i].row));
        }
    } else {
        return SQLITE_MISUSE; /* a statement listed in the enum with no SQL */
    }
    int rc = sqlite3_prepare_v3(l->wdb, q.p, (int)q.len, SQLITE_PREPARE_PERSISTENT, &l->ws[i], NULL);
    free(q.p);
    return rc;
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
    sb_ledger__opbuf_free(&l->in);
    sb_ledger__opbuf_free(&l->cur);
    sb_ledger__opbuf_free(&l->held);
    free(l->ids.p);
    free(l->group.p);
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

/* PRAGMA quick_check: the b-tree structure of every page, without
 * comparing indexes to their tables (integrity_check does that, for
 * `syncbridge ledger check`). It reads the whole file once; docs/operations.md
 * gives its cost on a large ledger. */
static int quick_check(sb_ledger *l, char *msg, size_t msgsz)
{
    int64_t t0 = sb_mono_us();
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->wdb, "PRAGMA quick_check(5)", -1, &st, NULL);
    sb_strbuf problems = {0};
    int ok = 0, rows = 0;
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 0);
        if (line && rows == 0 && strcmp(line, "ok") == 0)
            ok = 1;
        else if (line) {
            if (problems.len)
                sb_strbuf_add(&problems, "; ", 2);
            sb_strbuf_add(&problems, line, strlen(line));
        }
        rows++;
    }
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        rc = SQLITE_OK;
    if (rc != SQLITE_OK || !ok) {
        snprintf(msg, msgsz,
                 "the file is damaged (PRAGMA quick_check: %s): refusing to use it; `syncbridge ledger recover` "
                 "copies what is readable into a new ledger (docs/operations.md, \"The run ledger\")",
                 rc != SQLITE_OK ? sqlite3_errmsg(l->wdb) : problems.p ? problems.p : "not ok");
        sqlite3_finalize(st);
        free(problems.p);
        return -1;
    }
    sqlite3_finalize(st);
    free(problems.p);
    int pages = sb_ledger__pragma_int(l->wdb, "PRAGMA page_count");
    int page_size = sb_ledger__pragma_int(l->wdb, "PRAGMA page_size");
    sb_log(NULL, SB_LOG_INFO, "ledger %s: quick_check ok, %.1f MB in %lld ms", l->path,
           pages > 0 && page_size > 0 ? (double)pages * page_size / 1e6 : 0.0,
           (long long)((sb_mono_us() - t0) / 1000));
    return 0;
}

/* The ledger's statements use the JSON1 functions (json_each,
 * json_group_object): built in from SQLite 3.38, a compile-time option
 * before, which configure cannot see. Without them the first prepare would
 * fail with "no such table: json_each"; say what is missing instead. The
 * probe runs on a database in memory, so that a damaged or unreadable
 * ledger is not taken for a missing JSON1. */
static int check_json1(char *msg, size_t msgsz)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT value FROM json_each('[1]')", -1, &st, NULL);
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        snprintf(msg, msgsz,
                 "SQLite %s lacks the JSON1 functions the ledger needs (%s): use a build with them (3.38 or "
                 "newer, or built with SQLITE_ENABLE_JSON1, as Debian's and RHEL's are)",
                 sqlite3_libversion(), db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
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
    char *db_path = sb_asprintf("%s/ledger.db", state_dir);
    if (sb_ledger__check_file(state_dir, db_path, msg, sizeof msg) != 0) {
        sb_err(errstr, errstr_size, "ledger: %s", msg);
        free(db_path);
        return NULL;
    }
    sb_ledger *l = sb_xcalloc(1, sizeof *l);
    l->path = db_path;
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

    if (check_json1(msg, sizeof msg) != 0)
        goto fail;
    l->wdb = sb_ledger__open_conn(l->path, msg, sizeof msg);
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
             " PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY;",
             opts->fsync == SB_FSYNC_POWER ? "FULL" : "NORMAL");
    if (sb_ledger__exec_sql_patient(l->wdb, pragmas, msg, sizeof msg) != 0)
        goto fail;
    if (opts->quick_check && quick_check(l, msg, sizeof msg) != 0)
        goto fail;
    if (sb_ledger__setup_schema(l->wdb, msg, sizeof msg) != 0)
        goto fail;
    sb_ledger__mark(state_dir);
    int page_size = sb_ledger__pragma_int(l->wdb, "PRAGMA page_size");
    if (page_size <= 0) {
        snprintf(msg, sizeof msg, "cannot read the page size: %s", sqlite3_errmsg(l->wdb));
        goto fail;
    }
    l->ck_soft_frames = CKPT_SOFT_BYTES / page_size;
    l->ck_hard_frames = CKPT_HARD_BYTES / page_size;
    l->cdb = sb_ledger__open_conn(l->path, msg, sizeof msg);
    if (!l->cdb || sb_ledger__exec_sql(l->cdb, opts->fsync == SB_FSYNC_POWER ? "PRAGMA synchronous = FULL"
                                                                   : "PRAGMA synchronous = NORMAL",
                            msg, sizeof msg) != 0)
        goto fail;
    if (pthread_create(&l->ckpt, NULL, sb_ledger__checkpointer_main, l) != 0) {
        snprintf(msg, sizeof msg, "cannot start the checkpoint thread");
        goto fail;
    }
    l->ck_running = 1;
    sqlite3_wal_hook(l->wdb, sb_ledger__wal_hook, l); /* replaces SQLite's automatic checkpoint */
    for (int i = 0; i < W_COUNT; i++) {
        if (prepare_writer_statement(l, i) != SQLITE_OK) {
            snprintf(msg, sizeof msg, "prepare: %s", sqlite3_errmsg(l->wdb));
            goto fail;
        }
    }
    if (pthread_create(&l->writer, NULL, sb_ledger__writer_main, l) != 0) {
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
    if (!l->opts.beside_daemon)
        sb_ledger__exec_sql(l->wdb, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, 0);
    free_ledger(l);
}
