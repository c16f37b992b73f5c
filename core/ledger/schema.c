/* schema.c - the ledger's schema (PRAGMA user_version) and its migrations. */
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

/* Version 4: the state a step's member keeps for an entry between its calls
 * (plugin ABI 2: a DAG run id, an operation name, an upload session). A
 * table of its own: few entries have one, so the hot path (accept, step
 * done) never touches it; rows of finished steps stay until the entry is
 * pruned. A row per member, so that fan-out members never overwrite each
 * other's. */
static const char *const migrate_v4 =
    "CREATE TABLE step_states("
    " entry_id INTEGER NOT NULL,"
    " step INTEGER NOT NULL,"
    " member TEXT NOT NULL,"
    " state TEXT,"
    " started_us INTEGER NOT NULL DEFAULT 0,"
    " updated_us INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(entry_id, step, member)) WITHOUT ROWID;";

/* Version 5: the progress of long work (a copy) beside the step's state,
 * so that `runs show` tells a busy step from a stalled one. A column of its
 * own: the state is the plugin's, the progress the core's. */
static const char *const migrate_v5 = "ALTER TABLE step_states ADD COLUMN progress TEXT;";

/* Version 6: no index of pending entries. It cost every event an index
 * insert at accept and a delete at settle, about 0.7 us of the writer's
 * 4.5-5 us per event (docs/benchmarks.md), and only the resume at start
 * and `runs --state pending` read it. Both walk the entries by id instead:
 * the resume pages through them once, from the oldest (0.17 s for
 * 3 million entries in the page cache), and a listing newest first stops
 * at the pending count (queries.c). */
static const char *const migrate_v6 = "DROP INDEX IF EXISTS entries_pending;";

/* Version 7: a payload row may hold the payloads of several entries, one
 * per line: `span` entries with consecutive ids from its id on (the
 * writer fills a row with entries accepted together; writer.c,
 * payload_row_add). A row per entry cost the writer an insert per event,
 * about a sixth of its CPU (docs/benchmarks.md). The rows of earlier versions hold one payload
 * each, which span 1 says. */
static const char *const migrate_v7 = "ALTER TABLE payloads ADD COLUMN span INTEGER NOT NULL DEFAULT 1;";

/* Version 8: settled ranges (ledger_internal.h): the writer settles the
 * entries of a batch with one row instead of an UPDATE of each entry's
 * row, which cost about 3,800 instructions per event, a sixth of the
 * daemon's (docs/benchmarks.md). entries_not_pending lets a range's INSERT
 * check that none of its entries is done or dead in its own row with one
 * lookup. It holds the rows that say so: dead letters, and entries settled
 * row by row (runs under SETTLE_RANGE_MIN, which is light load, where its
 * index insert does not matter; the fallback), and those settled
 * before version 8 until they are pruned. entries_now shows each entry as it is now, for
 * `sqlite3 ledger.db` and the tests; the daemon's reads join the same way
 * (queries.c). A later migration that rebuilds `entries` (CREATE, copy,
 * DROP, RENAME) must drop the view first: SQLite 3.26 on refuses to
 * rename under a view that names the table. */
static const char *const migrate_v8 =
    "CREATE INDEX entries_not_pending ON entries(id) WHERE state <> 0;"
    "CREATE TABLE settled("
    " first INTEGER PRIMARY KEY,"
    " last INTEGER NOT NULL CHECK(last >= first),"
    " next_step INTEGER NOT NULL,"
    " updated_us INTEGER NOT NULL);"
    "CREATE VIEW entries_now AS SELECT entries.id AS id, event_id, route, source, received_us,"
    " " NOW_STATE " AS state, " NOW_NEXT_STEP " AS next_step, " NOW_RETRY_COLUMN("attempts") " AS attempts,"
    " " NOW_RETRY_COLUMN("first_attempt_us") " AS first_attempt_us,"
    " " NOW_RETRY_COLUMN("next_retry_us") " AS next_retry_us, " NOW_UPDATED_US " AS updated_us,"
    " error, requeued, accepted_us FROM " ENTRIES_NOW ";";

/* Version 9: a payload row may hold the events' fields alone
 * (fields_only; ledger_internal.h): the rest of a payload repeated the
 * entry's own event_id, source and received_us, about 70 of the 270 bytes
 * of a typical event, which the WAL and then the database file each wrote
 * (docs/benchmarks.md). Rows written before hold whole payloads. */
static const char *const migrate_v9 = "ALTER TABLE payloads ADD COLUMN fields_only INTEGER NOT NULL DEFAULT 0;";

static int schema_version(sqlite3 *db, char *err, size_t errsz)
{
    int version = sb_ledger__pragma_int(db, "PRAGMA user_version");
    if (version < 0)
        return sb_err(err, errsz, "cannot read schema version: %s", sqlite3_errmsg(db));
    if (version > SCHEMA_VERSION)
        return sb_err(err, errsz, "ledger schema version %d is newer than this syncbridge supports (%d)", version,
                      SCHEMA_VERSION);
    return version;
}

int sb_ledger__setup_schema(sqlite3 *db, char *err, size_t errsz)
{
    char msg[256];
    int version = schema_version(db, err, errsz);
    if (version < 0 || version == SCHEMA_VERSION)
        return version < 0 ? -1 : 0;
    /* A new file (version 0) is created at version 1 and migrated like an
     * old one, so every ledger has the same schema. The version is read
     * again inside the transaction: another process (the daemon and the
     * CLI) may have migrated the file meanwhile. */
    if (sb_ledger__exec_sql(db, "BEGIN IMMEDIATE", msg, sizeof msg) != 0)
        return sb_err(err, errsz, "cannot create or migrate the schema: %s", msg);
    version = schema_version(db, msg, sizeof msg);
    int rc = version < 0 ? -1 : 0;
    if (rc == 0 && version < 1)
        rc = sb_ledger__exec_sql(db, schema_v1, msg, sizeof msg);
    if (rc == 0 && version < 2)
        rc = sb_ledger__exec_sql(db, migrate_v2, msg, sizeof msg);
    if (rc == 0 && version < 3)
        rc = sb_ledger__exec_sql(db, migrate_v3, msg, sizeof msg);
    if (rc == 0 && version < 4)
        rc = sb_ledger__exec_sql(db, migrate_v4, msg, sizeof msg);
    if (rc == 0 && version < 5)
        rc = sb_ledger__exec_sql(db, migrate_v5, msg, sizeof msg);
    if (rc == 0 && version < 6)
        rc = sb_ledger__exec_sql(db, migrate_v6, msg, sizeof msg);
    if (rc == 0 && version < 7)
        rc = sb_ledger__exec_sql(db, migrate_v7, msg, sizeof msg);
    if (rc == 0 && version < 8)
        rc = sb_ledger__exec_sql(db, migrate_v8, msg, sizeof msg);
    if (rc == 0 && version < 9)
        rc = sb_ledger__exec_sql(db, migrate_v9, msg, sizeof msg);
    if (rc == 0 && version < SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        rc = sb_ledger__exec_sql(db, sql, msg, sizeof msg);
    }
    if (rc == 0)
        rc = sb_ledger__exec_sql(db, "COMMIT", msg, sizeof msg);
    if (rc != 0) {
        sb_ledger__exec_sql(db, "ROLLBACK", NULL, 0);
        return sb_err(err, errsz, "cannot create or migrate the schema (version %d): %s", version, msg);
    }
    return 0;
}
