/* repair.c - the operator's ledger commands: `ledger check` (a full
 * integrity check) and `ledger recover` (copy what is readable of a damaged
 * ledger into a new one). */
#include "build_config.h"
#include "ledger/ledger_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int sb_ledger_check(const char *state_dir, FILE *out, char *errstr, size_t errstr_size)
{
    char msg[512];
    char *path = sb_asprintf("%s/ledger.db", state_dir);
    if (sb_ledger__check_file(state_dir, path, msg, sizeof msg) != 0) {
        fprintf(out, "%s\n", msg);
        free(path);
        return 1;
    }
    if (access(path, F_OK) != 0) {
        sb_err(errstr, errstr_size, "%s does not exist", path);
        free(path);
        return -1;
    }
    sqlite3 *db = NULL;
    /* read-only: beside a running daemon this only reads, through SQLite's
     * shared locks, and never blocks the daemon's writer */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sb_err(errstr, errstr_size, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        free(path);
        return -1;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    int64_t t0 = sb_mono_us();
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check(100)", -1, &st, NULL);
    int ok = 0, rows = 0;
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 0);
        if (rows++ == 0 && line && strcmp(line, "ok") == 0)
            ok = 1;
        else
            fprintf(out, "%s\n", line ? line : "");
    }
    int result;
    if (rc != SQLITE_DONE && rc != SQLITE_OK) {
        fprintf(out, "%s: DAMAGED (the check stopped: %s)\n", path, sqlite3_errmsg(db));
        result = 1;
    } else {
        fprintf(out, "%s: %s (%.1f s)\n", path, ok ? "ok" : "DAMAGED", (double)(sb_mono_us() - t0) / 1e6);
        result = ok ? 0 : 1;
    }
    if (result)
        fprintf(out, "stop the daemon, then `syncbridge ledger recover` copies what is readable into a new ledger\n");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(path);
    return result;
}

/* ---- recover ----------------------------------------------------------- */

/* A table to copy and the integer column it is walked by (its key, or the
 * first column of it). */
static const struct {
    const char *table, *key;
} tables[] = {
    {"checkpoints", "rowid"}, {"entries", "id"},           {"payloads", "id"},
    {"members", "entry_id"},  {"step_states", "entry_id"}, {"settled", "first"},
};

/* Copy the rows of one table in key order. A damaged page stops a scan;
 * the scan then starts again past it, skipping ever further until it finds
 * readable rows again, and the keys skipped are reported as lost, as is
 * setting *damaged. */
static int copy_table(sqlite3 *old, sqlite3 *db, const char *table, const char *key, FILE *out, int *damaged,
                      char *err, size_t errsz)
{
    char *sql = sb_asprintf("SELECT %s AS sb_key, * FROM %s WHERE %s >= ?1 ORDER BY %s", key, table, key, key);
    sqlite3_stmt *sel = NULL, *ins = NULL;
    int rc = sqlite3_prepare_v2(old, sql, -1, &sel, NULL);
    free(sql);
    if (rc != SQLITE_OK) {
        /* the table's schema itself is unreadable */
        fprintf(out, "  %s: unreadable (%s): nothing copied\n", table, sqlite3_errmsg(old));
        *damaged = 1;
        return 0;
    }
    int ncol = sqlite3_column_count(sel);
    sb_strbuf b = {0};
    sb_strbuf_printf(&b, "INSERT OR IGNORE INTO main.%s(", table);
    for (int i = 1; i < ncol; i++)
        sb_strbuf_printf(&b, "%s\"%s\"", i > 1 ? ", " : "", sqlite3_column_name(sel, i));
    sb_strbuf_add(&b, ") VALUES(", 9);
    for (int i = 1; i < ncol; i++)
        sb_strbuf_printf(&b, "%s?%d", i > 1 ? ", " : "", i);
    sb_strbuf_add(&b, ")", 1);
    rc = sqlite3_prepare_v2(db, b.p, -1, &ins, NULL);
    free(b.p);
    if (rc != SQLITE_OK) {
        sb_err(err, errsz, "%s: %s", table, sqlite3_errmsg(db));
        sqlite3_finalize(sel);
        return -1;
    }
    int64_t from = INT64_MIN, last = INT64_MIN, copied = 0, skip = 1, gaps = 0, lost = 0;
    for (;;) {
        sqlite3_reset(sel);
        sqlite3_bind_int64(sel, 1, from);
        int got = 0;
        while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
            last = sqlite3_column_int64(sel, 0);
            for (int i = 1; i < ncol; i++)
                sqlite3_bind_value(ins, i, sqlite3_column_value(sel, i));
            int irc = sqlite3_step(ins);
            if ((irc & 0xff) == SQLITE_CORRUPT || (irc & 0xff) == SQLITE_CONSTRAINT) {
                /* the row's own record is damaged (an overflow page, a value
                 * that breaks the schema): it is lost, its neighbours are not */
                sqlite3_reset(ins);
                lost++;
                continue;
            }
            if (irc != SQLITE_DONE) {
                sb_err(err, errsz, "%s: writing the new ledger: %s", table, sqlite3_errmsg(db));
                sqlite3_finalize(sel);
                sqlite3_finalize(ins);
                return -1;
            }
            copied += sqlite3_changes(db);
            sqlite3_reset(ins);
            got = 1;
        }
        if (rc == SQLITE_DONE)
            break;
        /* damaged: resume past the last row read, skipping further each time
         * nothing is found */
        skip = got ? 1 : skip * 2;
        int64_t base = last == INT64_MIN ? 0 : last;
        if (skip > (INT64_C(1) << 40) || base > INT64_MAX - skip) {
            fprintf(out, "  %s: rows after key %" PRId64 " are unreadable: %s\n", table, base, sqlite3_errmsg(old));
            break;
        }
        if (got || from == INT64_MIN)
            gaps++;
        from = base + skip;
    }
    fprintf(out, "  %s: %" PRId64 " rows copied", table, copied);
    if (lost)
        fprintf(out, ", %" PRId64 " damaged rows lost", lost);
    fprintf(out, "%s\n", gaps ? ", and the rows on damaged pages are lost" : "");
    if (lost || gaps)
        *damaged = 1;
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    return 0;
}

static int rename_set(const char *from, const char *to, char *err, size_t errsz)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char *a = sb_asprintf("%s%s", from, suffix[i]), *b = sb_asprintf("%s%s", to, suffix[i]);
        int rc = rename(a, b);
        if (rc != 0 && (errno != ENOENT || i == 0)) {
            sb_err(err, errsz, "cannot rename %s to %s: %s", a, b, strerror(errno));
            free(a);
            free(b);
            return -1;
        }
        free(a);
        free(b);
    }
    return 0;
}

int sb_ledger_recover(const char *state_dir, FILE *out, char *errstr, size_t errstr_size)
{
    char msg[512];
    char *path = sb_asprintf("%s/ledger.db", state_dir);
    char *fresh = sb_asprintf("%s/ledger.db.recovering", state_dir);
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    char *damaged = sb_asprintf("%s/ledger.db.damaged-%s", state_dir, stamp);
    int readable = sb_ledger__check_file(state_dir, path, msg, sizeof msg) == 0 && access(path, F_OK) == 0;
    sqlite3 *db = NULL, *old = NULL;
    int rc = -1, moved = 0;
    unlink(fresh);
    if (access(path, F_OK) != 0) {
        sb_err(errstr, errstr_size, "%s does not exist: nothing to recover (restore it from a backup, or remove %s/%s "
               "to start a new ledger deliberately)", path, state_dir, SB_LEDGER_MARKER_FILE);
        goto out;
    }
    if (!readable)
        fprintf(out, "%s\nnothing in it can be read: the new ledger starts empty\n", msg);
    if (rename_set(path, damaged, errstr, errstr_size) != 0)
        goto out;
    moved = 1;
    fprintf(out, "the damaged ledger is kept as %s\n", damaged);
    if (!(db = sb_ledger__open_conn(fresh, msg, sizeof msg)) ||
        sb_ledger__exec_sql(db, "PRAGMA journal_mode = WAL", msg, sizeof msg) != 0 ||
        sb_ledger__setup_schema(db, msg, sizeof msg) != 0) {
        sb_err(errstr, errstr_size, "cannot create %s: %s", fresh, msg);
        goto out;
    }
    if (readable) {
        /* Read through a connection of its own: a statement that meets a
         * damaged page can end the transaction of its connection, which
         * must not be the one writing the new ledger. */
        old = sb_ledger__open_conn(damaged, msg, sizeof msg);
        int version = old ? sb_ledger__pragma_int(old, "PRAGMA user_version") : -1;
        if (!old || version != SCHEMA_VERSION) {
            sb_err(errstr, errstr_size, "%s: %s", damaged,
                   !old ? msg : version < 0 ? "its schema version cannot be read"
                                            : "its schema is of another version: start the daemon on it once first");
            goto out;
        }
        if (sb_ledger__exec_sql(db, "BEGIN", msg, sizeof msg) != 0) {
            sb_err(errstr, errstr_size, "%s", msg);
            goto out;
        }
        int settled_damaged = 0;
        for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
            int rows_lost = 0;
            if (copy_table(old, db, tables[i].table, tables[i].key, out, &rows_lost, errstr, errstr_size) != 0)
                goto out;
            if (strcmp(tables[i].table, "settled") == 0)
                settled_damaged = rows_lost;
        }
        /* a payload without its entry serves nothing (a row is cut back to
         * its last entry left: PAYLOAD_ROW_CUT), nor does a settled range
         * (cut back the same way); counts are derived */
        if (sb_ledger__exec_sql(db,
                                "DELETE FROM payloads WHERE " PAYLOAD_ROW_UNUSED ";" PAYLOAD_ROW_CUT("1") ";"
                                "DELETE FROM settled WHERE " SETTLED_RANGE_EMPTY ";" SETTLED_RANGE_CUT("1") ";"
                                "UPDATE counts SET entries = (SELECT count(*) FROM entries_now e"
                                " WHERE e.state = counts.state);"
                                "COMMIT;",
                                msg, sizeof msg) != 0) {
            sb_err(errstr, errstr_size, "%s", msg);
            goto out;
        }
        /* A lost range leaves its entries' rows saying pending, though they
         * were done: the next start sends them again. Nothing tells them
         * from entries that were pending, so the operator is told. */
        if (settled_damaged)
            fprintf(out,
                    "WARNING: settled ranges were lost: entries they had settled now say pending, and the next start "
                    "sends them again (%d entries say pending now; consumers must treat a repeated event_id as "
                    "done). `syncbridge runs --state pending` lists them.\n",
                    sb_ledger__pragma_int(db, "SELECT count(*) FROM entries_now WHERE state = 0"));
    }
    if (sb_ledger__exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)", msg, sizeof msg) != 0) {
        sb_err(errstr, errstr_size, "%s", msg);
        goto out;
    }
    sqlite3_close(db);
    db = NULL;
    if (rename_set(fresh, path, errstr, errstr_size) != 0)
        goto out;
    fprintf(out, "recovered into %s\n", path);
    rc = 0;
out:
    if (old)
        sqlite3_close(old);
    if (db)
        sqlite3_close(db);
    if (rc != 0 && moved) {
        /* put the ledger back where the daemon looks for it: a recovery
         * that could not finish must leave things as it found them */
        char back[512];
        static const char *const suffix[] = {"", "-wal", "-shm"};
        for (size_t i = 0; i < 3; i++) {
            char *f = sb_asprintf("%s%s", fresh, suffix[i]);
            unlink(f);
            free(f);
        }
        if (rename_set(damaged, path, back, sizeof back) == 0)
            fprintf(out, "recovery failed: %s is back in place, unchanged\n", path);
        else
            fprintf(out, "recovery failed, and moving the ledger back failed too: %s (it is %s)\n", back, damaged);
    }
    free(path);
    free(fresh);
    free(damaged);
    return rc;
}
