/* db.c - the ledger's SQLite connections: opening one, running SQL, the
 * pool of readers. */
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

/* ---- connections ------------------------------------------------------- */

int sb_ledger__exec_sql(sqlite3 *db, const char *sql, char *err, size_t errsz)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sb_err(err, errsz, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int sb_ledger__exec_sql_patient(sqlite3 *db, const char *sql, char *err, size_t errsz)
{
    int64_t deadline = sb_mono_us() + (int64_t)BUSY_TIMEOUT_MS * 1000;
    for (;;) {
        int rc = sb_ledger__exec_sql(db, sql, err, errsz);
        int code = sqlite3_errcode(db) & 0xff;
        if (rc == 0 || (code != SQLITE_BUSY && code != SQLITE_LOCKED) || sb_mono_us() >= deadline)
            return rc;
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* sb_payload_line(payload, span, k): entry k's payload in a payload row
 * (ENTRY_PAYLOAD in ledger_internal.h): the row whole if it holds one
 * entry, else its line k; NULL if the row holds no entry k. */
static void payload_line(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *p = (const char *)sqlite3_value_text(argv[0]);
    int64_t span = sqlite3_value_int64(argv[1]), k = sqlite3_value_int64(argv[2]);
    if (!p || k < 0 || k >= (span > 1 ? span : 1))
        return; /* NULL */
    const char *end = p + sqlite3_value_bytes(argv[0]);
    if (span > 1) {
        for (; k > 0 && p; k--) {
            p = memchr(p, '\n', (size_t)(end - p));
            p = p ? p + 1 : NULL;
        }
        if (!p)
            return;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl)
            end = nl;
    }
    sqlite3_result_text(ctx, p, (int)(end - p), SQLITE_TRANSIENT);
}

#ifndef SQLITE_INNOCUOUS /* SQLite before 3.31 */
#define SQLITE_INNOCUOUS 0
#endif

sqlite3 *sb_ledger__open_conn(const char *path, char *err, size_t errsz)
{
    sqlite3 *db = NULL;
    /* the default VFS if ours cannot be registered: only slower */
    const char *vfs = sb_ledger__register_vfs() == SQLITE_OK ? SB_LEDGER_VFS : NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs);
    if (rc != SQLITE_OK) {
        sb_err(err, errsz, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(db, 1);
    if (sqlite3_create_function_v2(db, "sb_payload_line", 3, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
                                   NULL, payload_line, NULL, NULL, NULL) != SQLITE_OK) {
        sb_err(err, errsz, "cannot open %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

sqlite3 *sb_ledger__reader_get(sb_ledger *l, char *err, size_t errsz)
{
    sqlite3 *db = NULL;
    pthread_mutex_lock(&l->rmu);
    if (l->nrfree)
        db = l->rfree[--l->nrfree];
    pthread_mutex_unlock(&l->rmu);
    if (!db)
        db = sb_ledger__open_conn(l->path, err, errsz);
    return db;
}

void sb_ledger__reader_put(sb_ledger *l, sqlite3 *db)
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
int sb_ledger__pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}
