/*
 * bench_sqlite_floor.c - SQLite's floor for the run ledger's work per event
 * (issue 19): the rows the ledger must write for an event it accepts and
 * settles, done the cheapest way SQLite allows (prepared statements bound
 * once, a minimal schema, no other thread, no queue), so that the ledger's
 * own CPU per event (bench_ledger, bench_core) can be read against it.
 *
 * Per event, as the ledger must: insert its identity (event_id, route),
 * unique, which is what de-duplication needs; insert its payload; mark it
 * settled. Variants:
 *   one-tx      everything in one transaction: SQLite's absolute floor
 *   groups      a commit every 1024 events (the ledger's group size under
 *               load) in WAL mode with synchronous=NORMAL, as the ledger
 *               runs: the floor for the durability the ledger promises
 *   groups+drop as groups, and the payload deleted when the event settles
 *               (ledger.keep_payload: until_settled)
 *   batch-payload  as groups, with one payload row per group (the payloads
 *               of a group concatenated) instead of one per event
 *   rows32      as groups, with entries and payloads inserted 32 rows to a
 *               statement and a group settled by one UPDATE over its range
 *               of ids, as the ledger wrote them before schema 7
 *   rows32+line as rows32, with the payloads of each 32 entries in one row,
 *               a line each, as the ledger wrote them in schema 7
 *   rows32+range as rows32+line, with a group settled by one row of a
 *               table of settled ranges instead of the UPDATE, as the ledger
 *               does since schema 8
 *   ids+groups  not what the ledger does: the floor of a ledger whose only
 *               row per event is its identity in the UNIQUE index (a
 *               WITHOUT ROWID table, 32 rows to a statement), with a group's
 *               payloads and state in one row of its own, settled by one
 *               UPDATE of that row (docs/benchmarks.md: what it would take)
 * Prints CPU µs per event (user + system of this process) and the file's
 * bytes per event after a checkpoint. Links SQLite only. Not a test: part
 * of `make bench`.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#define GROUP 1024

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "bench_sqlite_floor: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(db, sql);
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(db, sql);
    return st;
}

static void step(sqlite3 *db, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die(db, sqlite3_sql(st));
    sqlite3_reset(st);
}

static long long file_size(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

enum { DROP = 1, BATCH_PAYLOAD = 2, ROWS = 4, LINES = 8, RANGE = 16 };
#define ROWS_PER_STATEMENT 32

/* "INSERT INTO <head> VALUES" and ROWS_PER_STATEMENT copies of `row`. */
static sqlite3_stmt *prep_rows(sqlite3 *db, const char *head, const char *row)
{
    char sql[4096];
    size_t len = (size_t)snprintf(sql, sizeof sql, "INSERT INTO %s VALUES", head);
    for (int r = 0; r < ROWS_PER_STATEMENT; r++)
        len += (size_t)snprintf(sql + len, sizeof sql - len, "%s%s", r ? "," : "", row);
    return prep(db, sql);
}

/* The id and the payload (bench_core.py's line as the ledger stores it,
 * about 250 bytes) of event seq; their lengths. */
static void make_event(size_t seq, char id[32], int *idlen, char payload[512], int *plen)
{
    *idlen = snprintf(id, 32, "run-%08zu", seq);
    *plen = snprintf(payload, 512,
                     "{\"id\":\"%s\",\"source\":\"in\",\"received_us\":%zu,\"fields\":{\"event_id\":\"%s\","
                     "\"schema\":\"edw_prod\",\"table\":\"orders_%zu\",\"inc_key\":\"order_dt\","
                     "\"inc_val\":\"2026-11-23\",\"status\":\"succeeded\",\"td_count\":5120331,"
                     "\"hive_count\":5120331,\"host\":\"hdp-edge-01\"}}",
                     id, 1700000000000000 + seq, id, seq % 97);
}

/* rows32: a group's accepts ROWS_PER_STATEMENT rows to a statement (the
 * rest one by one), then its settle as one UPDATE over its ids. lines: the
 * payloads of a statement's rows as one row, a line each. range: the
 * settle as one row of `settled` (st[8]) instead of the UPDATE. */
static void group_rows(sqlite3 *db, sqlite3_stmt *const st[9], size_t at, size_t k, int lines, int range)
{
    static char joined[ROWS_PER_STATEMENT * 512];
    sqlite3_stmt *ins_rows = st[0], *pl_rows = st[1], *ins = st[2], *pl = st[3], *upd = st[4];
    static char ids[ROWS_PER_STATEMENT][32], payloads[ROWS_PER_STATEMENT][512];
    int idlen[ROWS_PER_STATEMENT], plen[ROWS_PER_STATEMENT];
    int64_t first = 0;
    size_t i = 0;
    for (; i + ROWS_PER_STATEMENT <= k; i += ROWS_PER_STATEMENT) {
        for (int r = 0; r < ROWS_PER_STATEMENT; r++) {
            make_event(at + i + (size_t)r, ids[r], &idlen[r], payloads[r], &plen[r]);
            sqlite3_bind_text(ins_rows, 2 * r + 1, ids[r], idlen[r], SQLITE_STATIC);
            sqlite3_bind_text(ins_rows, 2 * r + 2, "r", 1, SQLITE_STATIC);
        }
        step(db, ins_rows);
        int64_t last = sqlite3_last_insert_rowid(db);
        if (!first)
            first = last - (ROWS_PER_STATEMENT - 1);
        if (lines) {
            size_t len = 0;
            for (int r = 0; r < ROWS_PER_STATEMENT; r++) {
                memcpy(joined + len, payloads[r], (size_t)plen[r]);
                len += (size_t)plen[r];
                joined[len++] = '\n';
            }
            sqlite3_bind_int64(st[7], 1, last - (ROWS_PER_STATEMENT - 1));
            sqlite3_bind_text(st[7], 2, joined, (int)len - 1, SQLITE_STATIC);
            step(db, st[7]);
            continue;
        }
        for (int r = 0; r < ROWS_PER_STATEMENT; r++) {
            sqlite3_bind_int64(pl_rows, 2 * r + 1, last - (ROWS_PER_STATEMENT - 1) + r);
            sqlite3_bind_text(pl_rows, 2 * r + 2, payloads[r], plen[r], SQLITE_STATIC);
        }
        step(db, pl_rows);
    }
    for (; i < k; i++) {
        make_event(at + i, ids[0], &idlen[0], payloads[0], &plen[0]);
        sqlite3_bind_text(ins, 1, ids[0], idlen[0], SQLITE_STATIC);
        step(db, ins);
        int64_t id = sqlite3_last_insert_rowid(db);
        if (!first)
            first = id;
        sqlite3_bind_int64(pl, 1, id);
        sqlite3_bind_text(pl, 2, payloads[0], plen[0], SQLITE_STATIC);
        step(db, pl);
    }
    step(db, st[5]);                     /* commit the accepts */
    step(db, st[6]);                     /* begin the settle */
    sqlite3_stmt *settle = range ? st[8] : upd;
    sqlite3_bind_int64(settle, 1, first);
    sqlite3_bind_int64(settle, 2, first + (int64_t)k - 1);
    step(db, settle);
}

/* A new database `name` in dir, in WAL mode with the ledger's settings;
 * its path and its WAL's in path and wal. */
static sqlite3 *open_fresh(const char *dir, const char *name, char path[4096], char wal[4200])
{
    snprintf(path, 4096, "%s/floor-%s.db", dir, name);
    snprintf(wal, 4200, "%s-wal", path);
    unlink(path);
    unlink(wal);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(db, "open");
    exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8192;");
    return db;
}

/* Checkpoint and close db, print the variant's line, remove its files. */
static void report(sqlite3 *db, const char *name, size_t n, double cpu, const char *path, const char *wal)
{
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
    printf("sqlite floor %-12s events=%zu  cpu %.2f us/event  %.0f bytes/event on disk\n", name, n,
           cpu * 1e6 / (double)n, (double)file_size(path) / (double)n);
    unlink(path);
    unlink(wal);
}

/* group: events per commit (0: one transaction); how: DROP deletes the
 * payload at settle, BATCH_PAYLOAD writes one payload row per group. */
static void run(const char *dir, const char *name, size_t n, size_t group, int how)
{
    int drop = how & DROP;
    char path[4096], wal[4200];
    sqlite3 *db = open_fresh(dir, name, path, wal);
    exec(db, "CREATE TABLE payloads(id INTEGER PRIMARY KEY, payload TEXT NOT NULL, span INTEGER NOT NULL DEFAULT 1);");
    exec(db, "CREATE TABLE entries(id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, route TEXT NOT NULL,"
             " state INTEGER NOT NULL DEFAULT 0, UNIQUE(event_id, route));");
    sqlite3_stmt *ins = prep(db, "INSERT INTO entries(event_id, route) VALUES(?1, ?2)");
    char *blob = malloc(512 * (group ? group : n));
    size_t blen = 0;
    sqlite3_stmt *pl = prep(db, "INSERT INTO payloads(id, payload) VALUES(?1, ?2)");
    sqlite3_stmt *done = prep(db, "UPDATE entries SET state = 1 WHERE id = ?1");
    sqlite3_stmt *del = prep(db, "DELETE FROM payloads WHERE id = ?1");
    sqlite3_stmt *begin = prep(db, "BEGIN"), *commit = prep(db, "COMMIT");
    sqlite3_bind_text(ins, 2, "r", 1, SQLITE_STATIC);
    char id[32], payload[512];
    int64_t *rowids = malloc((group ? group : n) * sizeof *rowids);
    sqlite3_stmt *rows[9] = {NULL};
    if (how & ROWS) {
        exec(db, "CREATE TABLE settled(first INTEGER PRIMARY KEY, last INTEGER NOT NULL);");
        rows[8] = prep(db, "INSERT INTO settled(first, last) VALUES(?1, ?2)");
        rows[0] = prep_rows(db, "entries(event_id, route)", "(?, ?)");
        rows[1] = prep_rows(db, "payloads(id, payload)", "(?, ?)");
        rows[2] = ins;
        rows[3] = pl;
        rows[4] = prep(db, "UPDATE entries SET state = 1 WHERE id BETWEEN ?1 AND ?2");
        rows[5] = commit;
        rows[6] = begin;
        rows[7] = prep(db, "INSERT INTO payloads(id, payload, span) VALUES(?1, ?2, 32)");
    }
    double cpu0 = cpu_seconds();
    size_t per = group ? group : n;
    for (size_t at = 0; at < n; at += per) {
        size_t k = n - at < per ? n - at : per;
        step(db, begin);
        if (how & ROWS) {
            group_rows(db, rows, at, k, how & LINES, how & RANGE);
            step(db, commit);
            continue;
        }
        for (size_t i = 0; i < k; i++) { /* accept */
            size_t seq = at + i;
            int idlen, plen;
            make_event(seq, id, &idlen, payload, &plen);
            sqlite3_bind_text(ins, 1, id, idlen, SQLITE_STATIC);
            step(db, ins);
            rowids[i] = sqlite3_last_insert_rowid(db);
            if (how & BATCH_PAYLOAD) {
                memcpy(blob + blen, payload, (size_t)plen + 1);
                blen += (size_t)plen + 1;
                continue;
            }
            sqlite3_bind_int64(pl, 1, rowids[i]);
            sqlite3_bind_text(pl, 2, payload, plen, SQLITE_STATIC);
            step(db, pl);
        }
        if (how & BATCH_PAYLOAD) {
            sqlite3_bind_int64(pl, 1, rowids[0]);
            sqlite3_bind_text(pl, 2, blob, (int)blen, SQLITE_STATIC);
            step(db, pl);
            blen = 0;
        }
        if (group) { /* the ledger commits accepts before their events are delivered */
            step(db, commit);
            step(db, begin);
        }
        for (size_t i = 0; i < k; i++) { /* settle */
            sqlite3_bind_int64(done, 1, rowids[i]);
            step(db, done);
            if (drop && !(how & BATCH_PAYLOAD)) {
                sqlite3_bind_int64(del, 1, rowids[i]);
                step(db, del);
            }
        }
        step(db, commit);
    }
    double cpu = cpu_seconds() - cpu0;
    free(blob);
    sqlite3_stmt *sts[] = {ins, pl, done, del, begin, commit, rows[0], rows[1], rows[4], rows[7], rows[8]};
    for (size_t i = 0; i < sizeof sts / sizeof *sts; i++)
        sqlite3_finalize(sts[i]);
    report(db, name, n, cpu, path, wal);
    free(rowids);
}

/* ids+groups: see the head of the file. */
static void run_ids_groups(const char *dir, size_t n)
{
    char path[4096], wal[4200];
    sqlite3 *db = open_fresh(dir, "ids+groups", path, wal);
    exec(db, "CREATE TABLE ids(event_id TEXT NOT NULL, route TEXT NOT NULL, grp INTEGER NOT NULL,"
             " PRIMARY KEY(event_id, route)) WITHOUT ROWID;"
             "CREATE TABLE groups(id INTEGER PRIMARY KEY, state INTEGER NOT NULL DEFAULT 0, payloads TEXT NOT NULL);");
    sqlite3_stmt *ins = prep_rows(db, "ids", "(?, 'r', ?)");
    sqlite3_stmt *grp = prep(db, "INSERT INTO groups(id, payloads) VALUES(?1, ?2)");
    sqlite3_stmt *done = prep(db, "UPDATE groups SET state = 1 WHERE id = ?1");
    sqlite3_stmt *begin = prep(db, "BEGIN"), *commit = prep(db, "COMMIT");
    char *lines = malloc(512 * GROUP);
    static char ids[ROWS_PER_STATEMENT][32];
    char payload[512];
    double cpu0 = cpu_seconds();
    for (size_t at = 0; at < n; at += GROUP) {
        size_t k = n - at < GROUP ? n - at : GROUP, blen = 0;
        step(db, begin);
        for (size_t i = 0; i < k; i += ROWS_PER_STATEMENT) { /* n is a multiple of ROWS_PER_STATEMENT */
            for (int r = 0; r < ROWS_PER_STATEMENT; r++) {
                int idlen, plen;
                make_event(at + i + (size_t)r, ids[r], &idlen, payload, &plen);
                memcpy(lines + blen, payload, (size_t)plen);
                blen += (size_t)plen;
                lines[blen++] = '\n';
                sqlite3_bind_text(ins, 2 * r + 1, ids[r], idlen, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 2 * r + 2, (int64_t)at);
            }
            step(db, ins);
        }
        sqlite3_bind_int64(grp, 1, (int64_t)at);
        sqlite3_bind_text(grp, 2, lines, (int)blen, SQLITE_STATIC);
        step(db, grp);
        step(db, commit); /* accepts before delivery */
        step(db, begin);
        sqlite3_bind_int64(done, 1, (int64_t)at);
        step(db, done);
        step(db, commit);
    }
    double cpu = cpu_seconds() - cpu0;
    sqlite3_stmt *sts[] = {ins, grp, done, begin, commit};
    for (size_t i = 0; i < sizeof sts / sizeof *sts; i++)
        sqlite3_finalize(sts[i]);
    report(db, "ids+groups", n, cpu, path, wal);
    free(lines);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 500000;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* as the ledger does */
    run(dir, "one-tx", n, 0, 0);
    run(dir, "groups", n, GROUP, 0);
    run(dir, "groups+drop", n, GROUP, DROP);
    run(dir, "batch-payload", n, GROUP, BATCH_PAYLOAD);
    run(dir, "rows32", n, GROUP, ROWS);
    run(dir, "rows32+line", n, GROUP, ROWS | LINES);
    run(dir, "rows32+range", n, GROUP, ROWS | LINES | RANGE);
    run_ids_groups(dir, n - n % ROWS_PER_STATEMENT);
    return 0;
}
