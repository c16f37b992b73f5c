/* test_walbuf.c - the ledger's VFS (core/ledger/walbuf.c), which gathers
 * a WAL's writes: what a transaction commits through it is what SQLite's
 * default VFS reads back, at once and in another connection, including
 * transactions that spill pages into the WAL before they commit (and then
 * write frames again in place) and commits of more than 128 KiB of frames. */
#include "build_config.h"
#include "ledger/ledger_internal.h"

#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[] = "/tmp/sbwalbuf.XXXXXX";
static char g_path[64];

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/t.db", g_dir);
}

static void teardown(void)
{
    char p[96];
    static const char *const files[] = {"t.db", "t.db-wal", "t.db-shm", "t.db.crash", "t.db.crash-wal",
                                        "t.db.crash-shm"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    rmdir(g_dir);
    strcpy(g_dir, "/tmp/sbwalbuf.XXXXXX");
}

static sqlite3 *open_db(const char *vfs)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(g_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "");
    sqlite3_free(msg);
}

static long long scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

START_TEST(commits_read_back_through_the_default_vfs)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    /* a cache of 10 pages: a transaction spills into the WAL before its
     * commit, and pages it changes again are written again in place */
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = 10;"
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, n INTEGER NOT NULL);"
            "CREATE INDEX t_v ON t(v)");
    sqlite3 *r = open_db(NULL); /* SQLite's own VFS, another connection */
    long long rows = 0, sum = 0;
    for (int tx = 0; tx < 30; tx++) {
        char sql[512];
        int n = tx % 3 == 0 ? 2000 : 1 + tx; /* some transactions of well over 128 KiB of frames */
        exec(w, "BEGIN");
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < %d)"
                 " INSERT INTO t(v, n) SELECT printf('%%d-%%d-%%0200d', %d, i, i), i FROM k",
                 n, tx);
        exec(w, sql);
        exec(w, "UPDATE t SET n = n + 1 WHERE id % 7 = 0"); /* pages spilled already, changed again */
        exec(w, "COMMIT");
        rows += n;
        /* what the other connection reads right after the commit */
        ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), rows);
        sum = scalar(w, "SELECT sum(n) FROM t");
        ck_assert_int_eq(scalar(r, "SELECT sum(n) FROM t"), sum);
        if (tx % 10 == 9) /* the WAL starts over after a checkpoint: its frames are written from the start */
            exec(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    }
    sqlite3_close(r);
    sqlite3_close(w);
    /* reopened after the last connection closed: the WAL was checkpointed into the file */
    sqlite3 *again = open_db(NULL);
    ck_assert_int_eq(scalar(again, "SELECT count(*) FROM t"), rows);
    ck_assert_int_eq(scalar(again, "SELECT sum(n) FROM t"), sum);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(again, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(again);
}
END_TEST

/* Small transactions with the page cache big enough (the ledger's case):
 * nothing reads the WAL between the commit frame and the index update, so
 * only the flush with the commit frame's page makes each one visible. */
START_TEST(each_small_commit_is_visible_at_once)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t(v TEXT)");
    sqlite3 *r = open_db(NULL);
    for (int i = 1; i <= 300; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO t VALUES(printf('%%0%dd', %d))", 1 + i * 37 % 9000, i);
        exec(w, sql);
        ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), i);
        ck_assert_int_eq(scalar(r, "SELECT sum(length(v)) FROM t"), scalar(w, "SELECT sum(length(v)) FROM t"));
    }
    sqlite3_close(r);
    sqlite3_close(w);
}
END_TEST

/* A process that dies without closing leaves its commits in the WAL, and
 * SQLite's recovery reads them back (it checks every frame's checksum, so
 * a frame header rewritten in place but not written would lose its
 * transaction here). */
/* Transactions that spill into the WAL and change spilled pages again. */
static void run_transactions(sqlite3 *db)
{
    for (int tx = 0; tx < 20; tx++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "BEGIN; WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < %d)"
                 " INSERT INTO t(v, n) SELECT printf('%%0300d', i), 1 FROM k;"
                 " UPDATE t SET n = n + 1 WHERE id %% 5 = 0; COMMIT",
                 100 + tx * 50);
        exec(db, sql);
    }
}

START_TEST(commits_survive_the_writer_dying)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        sqlite3 *w = open_db(SB_LEDGER_VFS);
        exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = 10;"
                " PRAGMA wal_autocheckpoint = 0;"
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, n INTEGER NOT NULL)");
        run_transactions(w);
        _exit(0); /* no close: the WAL stays as written */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sqlite3 *r = open_db(NULL), *want = NULL; /* the same transactions in memory: what the file must hold */
    ck_assert_int_eq(sqlite3_open(":memory:", &want), SQLITE_OK);
    exec(want, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, n INTEGER NOT NULL)");
    run_transactions(want);
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), scalar(want, "SELECT count(*) FROM t"));
    ck_assert_int_eq(scalar(r, "SELECT sum(n * id) FROM t"), scalar(want, "SELECT sum(n * id) FROM t"));
    sqlite3_close(want);
    sqlite3_close(r);
}
END_TEST

/* A commit whose frames do not follow this connection's last write (another
 * connection wrote frames in between, or the WAL had frames when it opened)
 * is written out all the same: its commit frame's header goes straight
 * through, and the page after it flushes. */
START_TEST(commits_after_another_writer_are_visible)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    sqlite3 *w = open_db(SB_LEDGER_VFS), *other = open_db(NULL), *r = open_db(NULL);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
            "CREATE TABLE a(v TEXT); CREATE TABLE b(v TEXT)");
    exec(other, "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0");
    for (int i = 1; i <= 50; i++) {
        exec(other, "INSERT INTO a VALUES('x')");
        exec(w, i % 2 ? "INSERT INTO b VALUES('x')" : "INSERT INTO b VALUES('x'),('y'),('z')");
        ck_assert_int_eq(scalar(r, "SELECT count(*) FROM a"), i);
        ck_assert_int_eq(scalar(r, "SELECT count(*) FROM b"), i / 2 * 4 + i % 2);
    }
    sqlite3_close(r);
    sqlite3_close(other);
    sqlite3_close(w);
}
END_TEST

/* Two processes in turn, each dying without closing: the second opens a
 * WAL that holds the first one's frames and commits one row. */
START_TEST(a_commit_onto_a_wal_left_by_a_dead_writer_survives)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    for (int round = 0; round < 2; round++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            sqlite3 *w = open_db(SB_LEDGER_VFS);
            exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
                    "CREATE TABLE IF NOT EXISTS t(v TEXT); INSERT INTO t VALUES('one')");
            _exit(0);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    sqlite3 *r = open_db(NULL);
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 2);
    sqlite3_close(r);
}
END_TEST

/* A checkpoint's pages are gathered too: once it has truncated the WAL,
 * the database file alone holds the rows, also for a process that died
 * right after it. */
START_TEST(a_checkpoint_is_in_the_file_when_its_writer_dies)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        sqlite3 *w = open_db(SB_LEDGER_VFS);
        exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
                "CREATE TABLE t(v TEXT);"
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 5000)"
                " INSERT INTO t SELECT printf('%0300d', i) FROM k;"
                "PRAGMA wal_checkpoint(TRUNCATE)");
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char wal[96];
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", g_path);
    ck_assert_int_eq(stat(wal, &st), 0);
    ck_assert_int_eq(st.st_size, 0); /* the rows are in the database file only */
    sqlite3 *r = open_db(NULL);
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 5000);
    ck_assert_int_eq(scalar(r, "SELECT sum(length(v)) FROM t"), 5000 * 300);
    sqlite3_close(r);
}
END_TEST

/* Without POWERSAFE_OVERWRITE (psow=0), synchronous = FULL pads each
 * commit with copies of its frame, split by a sync: such a WAL is written
 * as SQLite alone writes it, and every commit reads back. */
START_TEST(full_sync_without_powersafe_overwrite)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    char uri[128];
    snprintf(uri, sizeof uri, "file:%s?psow=0", g_path);
    sqlite3 *w = NULL;
    ck_assert_int_eq(sqlite3_open_v2(uri, &w, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                                     SB_LEDGER_VFS),
                     SQLITE_OK);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE t(v TEXT)");
    sqlite3 *r = open_db(NULL);
    for (int i = 1; i <= 40; i++) {
        exec(w, "INSERT INTO t VALUES(printf('%0500d', 1))");
        ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), i);
    }
    sqlite3_close(r);
    sqlite3_close(w);
}
END_TEST

/* A transaction rolled back after it spilled frames into the WAL leaves
 * nothing the other connection can see, and the next one commits. */
START_TEST(a_rolled_back_transaction_leaves_nothing)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = 10; CREATE TABLE t(v TEXT)");
    sqlite3 *r = open_db(NULL);
    exec(w, "BEGIN; WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 3000)"
            " INSERT INTO t SELECT printf('%0300d', i) FROM k; ROLLBACK");
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 0);
    exec(w, "INSERT INTO t VALUES('one')");
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 1);
    sqlite3_close(r);
    sqlite3_close(w);
}
END_TEST

/* ---- writes that fail ---------------------------------------------------
 * A VFS under the ledger's (registered as the default before it) that
 * fails writes to a WAL or a database file on demand, as a full disk would. */

static sqlite3_vfs *unix_vfs, failing_vfs;
static int fail_wal, fail_db, wal_writes;

typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    int wal, db;
} ff_file;
#define FF_HEAD ((sizeof(ff_file) + 7) & ~(size_t)7)
#define FF_REAL(f) (((ff_file *)(f))->real)

static int ff_close(sqlite3_file *f) { return FF_REAL(f)->pMethods->xClose(FF_REAL(f)); }
static int ff_read(sqlite3_file *f, void *p, int n, sqlite3_int64 o) { return FF_REAL(f)->pMethods->xRead(FF_REAL(f), p, n, o); }
static int ff_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 o)
{
    ff_file *ff = (ff_file *)f;
    if ((ff->wal && fail_wal) || (ff->db && fail_db))
        return SQLITE_FULL;
    wal_writes += ff->wal;
    return ff->real->pMethods->xWrite(ff->real, p, n, o);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 n) { return FF_REAL(f)->pMethods->xTruncate(FF_REAL(f), n); }
static int ff_sync(sqlite3_file *f, int fl) { return FF_REAL(f)->pMethods->xSync(FF_REAL(f), fl); }
static int ff_size(sqlite3_file *f, sqlite3_int64 *n) { return FF_REAL(f)->pMethods->xFileSize(FF_REAL(f), n); }
static int ff_lock(sqlite3_file *f, int l) { return FF_REAL(f)->pMethods->xLock(FF_REAL(f), l); }
static int ff_unlock(sqlite3_file *f, int l) { return FF_REAL(f)->pMethods->xUnlock(FF_REAL(f), l); }
static int ff_reserved(sqlite3_file *f, int *o) { return FF_REAL(f)->pMethods->xCheckReservedLock(FF_REAL(f), o); }
static int ff_fcntl(sqlite3_file *f, int op, void *a) { return FF_REAL(f)->pMethods->xFileControl(FF_REAL(f), op, a); }
static int ff_sector(sqlite3_file *f) { return FF_REAL(f)->pMethods->xSectorSize(FF_REAL(f)); }
static int ff_dc(sqlite3_file *f) { return FF_REAL(f)->pMethods->xDeviceCharacteristics(FF_REAL(f)); }
static int ff_shm_map(sqlite3_file *f, int r, int sz, int ext, void volatile **pp)
{
    return FF_REAL(f)->pMethods->xShmMap(FF_REAL(f), r, sz, ext, pp);
}
static int ff_shm_lock(sqlite3_file *f, int o, int n, int fl) { return FF_REAL(f)->pMethods->xShmLock(FF_REAL(f), o, n, fl); }
static void ff_shm_barrier(sqlite3_file *f) { FF_REAL(f)->pMethods->xShmBarrier(FF_REAL(f)); }
static int ff_shm_unmap(sqlite3_file *f, int d) { return FF_REAL(f)->pMethods->xShmUnmap(FF_REAL(f), d); }
static int ff_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp) { return FF_REAL(f)->pMethods->xFetch(FF_REAL(f), o, n, pp); }
static int ff_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) { return FF_REAL(f)->pMethods->xUnfetch(FF_REAL(f), o, p); }
static const sqlite3_io_methods ff_methods = {3, ff_close, ff_read, ff_write, ff_truncate, ff_sync, ff_size, ff_lock,
                                              ff_unlock, ff_reserved, ff_fcntl, ff_sector, ff_dc, ff_shm_map,
                                              ff_shm_lock, ff_shm_barrier, ff_shm_unmap, ff_fetch, ff_unfetch};

static int ff_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    (void)vfs;
    ff_file *f = (ff_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)((char *)file + FF_HEAD);
    int rc = unix_vfs->xOpen(unix_vfs, name, f->real, flags, out);
    if (rc != SQLITE_OK || !f->real->pMethods) {
        f->base.pMethods = NULL;
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    f->base.pMethods = &ff_methods;
    return SQLITE_OK;
}

/* The failing VFS under the ledger's: 0 if the ledger's was registered
 * earlier in this process (CK_FORK=no) and so sits on the plain one. */
static int failing_under_ledger_vfs(void)
{
    if (sqlite3_vfs_find(SB_LEDGER_VFS))
        return 0;
    unix_vfs = sqlite3_vfs_find(NULL);
    failing_vfs = *unix_vfs;
    failing_vfs.zName = "sb-test-failing";
    failing_vfs.szOsFile = (int)FF_HEAD + unix_vfs->szOsFile;
    failing_vfs.pNext = NULL;
    failing_vfs.xOpen = ff_open;
    ck_assert_int_eq(sqlite3_vfs_register(&failing_vfs, 1), SQLITE_OK);
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    return 1;
}

/* A copy of the database and its WAL, without the shared memory: what a
 * process killed now would leave for the next one to recover. */
static sqlite3 *open_as_after_a_crash(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s %s.crash && cp %s-wal %s.crash-wal", g_path, g_path, g_path, g_path);
    ck_assert_int_eq(system(cmd), 0);
    char path[96];
    snprintf(path, sizeof path, "%s.crash", g_path);
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    return db;
}

/* The point of it all: a transaction of many frames goes to the WAL in a
 * few writes, not two per frame. */
START_TEST(a_commit_of_many_frames_is_a_few_writes)
{
    if (!failing_under_ledger_vfs())
        return;
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t(x TEXT)");
    wal_writes = 0;
    exec(w, "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 100)"
            " INSERT INTO t SELECT printf('%0800d', i) FROM k"); /* about 25 pages */
    ck_assert_int_le(wal_writes, 3);
    sqlite3 *r = open_db("unix");
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 100);
    sqlite3_close(r);
    sqlite3_close(w);
}
END_TEST

/* A commit whose frames could not be written fails, and stays failed: its
 * frames are never written later (a crash then would bring it back), and
 * the next transaction commits. */
START_TEST(a_failed_commit_never_comes_back)
{
    if (!failing_under_ledger_vfs())
        return;
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
            "CREATE TABLE t(x TEXT); INSERT INTO t VALUES('a')");
    fail_wal = 1;
    ck_assert_int_ne(sqlite3_exec(w, "BEGIN; INSERT INTO t VALUES('ghost'); COMMIT", NULL, NULL, NULL), SQLITE_OK);
    if (!sqlite3_get_autocommit(w))
        exec(w, "ROLLBACK");
    fail_wal = 0;
    ck_assert_int_eq(scalar(w, "SELECT count(*) FROM t"), 1); /* reads the WAL: nothing left to write */
    sqlite3 *crashed = open_as_after_a_crash();
    ck_assert_int_eq(scalar(crashed, "SELECT count(*) FROM t"), 1);
    sqlite3_close(crashed);
    exec(w, "INSERT INTO t VALUES('b')");
    sqlite3 *r = open_db("unix");
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 2);
    sqlite3_close(r);
    sqlite3_close(w);
}
END_TEST

/* A checkpoint whose pages could not be written fails and records nothing:
 * the WAL keeps the rows, which later transactions do not overwrite. */
START_TEST(a_failed_checkpoint_keeps_the_wal)
{
    if (!failing_under_ledger_vfs())
        return;
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
            "CREATE TABLE t(x TEXT);"
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 2000)"
            " INSERT INTO t SELECT printf('%0200d', i) FROM k");
    fail_db = 1;
    ck_assert_int_ne(sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL), SQLITE_OK);
    fail_db = 0;
    for (int i = 0; i < 20; i++) /* would start the WAL over, had the checkpoint recorded its pages */
        exec(w, "INSERT INTO t VALUES('more')");
    sqlite3 *crashed = open_as_after_a_crash();
    ck_assert_int_eq(scalar(crashed, "SELECT count(*) FROM t"), 2020);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(crashed, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(crashed);
    sqlite3_close(w);
}
END_TEST

/* A checkpoint held back by a reader records how far it got without a
 * sync: pages it could not write must not be counted as copied. (The
 * reason the database file's writes are not gathered; this test passes
 * with the code that gathered them, a review's reproduction did not.) */
START_TEST(a_failed_partial_checkpoint_loses_nothing)
{
    if (!failing_under_ledger_vfs())
        return;
    sqlite3 *w = open_db(SB_LEDGER_VFS);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
            "CREATE TABLE t(x TEXT);"
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 300)"
            " INSERT INTO t SELECT printf('%0200d', i) FROM k");
    sqlite3 *reader = open_db("unix");
    exec(reader, "BEGIN");
    ck_assert_int_eq(scalar(reader, "SELECT count(*) FROM t"), 300); /* holds its snapshot */
    exec(w, "INSERT INTO t VALUES('one more')");
    sqlite3 *c = open_db(SB_LEDGER_VFS);
    fail_db = 1;
    sqlite3_wal_checkpoint_v2(c, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    fail_db = 0;
    exec(reader, "COMMIT");
    sqlite3 *r = open_db("unix");
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 301);
    sqlite3_close(r);
    ck_assert_int_eq(sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL), SQLITE_OK);
    r = open_db("unix");
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t"), 301);
    sqlite3_close(r);
    sqlite3_close(c);
    sqlite3_close(reader);
    sqlite3_close(w);
}
END_TEST

/* A transaction rolled back after it spilled frames: another connection
 * then commits at the same place in the WAL, and this one's frames are
 * never written over it. */
START_TEST(rolled_back_frames_never_overwrite_another_writer)
{
    ck_assert_int_eq(sb_ledger__register_vfs(), SQLITE_OK);
    sqlite3 *b = open_db(NULL);
    exec(b, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t(x);"
            "INSERT INTO t VALUES('a'); PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3 *a = open_db(SB_LEDGER_VFS);
    exec(a, "PRAGMA synchronous = NORMAL; PRAGMA cache_size = 2; BEGIN;"
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 8)"
            " INSERT INTO t SELECT randomblob(3000) FROM k; ROLLBACK");
    exec(b, "INSERT INTO t VALUES('b1'); INSERT INTO t VALUES('b2')");
    ck_assert_int_eq(scalar(a, "SELECT count(*) FROM t"), 3);
    sqlite3 *r = open_db(NULL);
    ck_assert_int_eq(scalar(r, "SELECT count(*) FROM t WHERE typeof(x) = 'text'"), 3);
    sqlite3_close(r);
    sqlite3 *crashed = open_as_after_a_crash();
    ck_assert_int_eq(scalar(crashed, "SELECT count(*) FROM t WHERE typeof(x) = 'text'"), 3);
    sqlite3_close(crashed);
    sqlite3_close(a);
    sqlite3_close(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("walbuf");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, commits_read_back_through_the_default_vfs);
    tcase_add_test(tc, each_small_commit_is_visible_at_once);
    tcase_add_test(tc, commits_survive_the_writer_dying);
    tcase_add_test(tc, commits_after_another_writer_are_visible);
    tcase_add_test(tc, a_commit_onto_a_wal_left_by_a_dead_writer_survives);
    tcase_add_test(tc, a_checkpoint_is_in_the_file_when_its_writer_dies);
    tcase_add_test(tc, full_sync_without_powersafe_overwrite);
    tcase_add_test(tc, a_rolled_back_transaction_leaves_nothing);
    tcase_add_test(tc, a_commit_of_many_frames_is_a_few_writes);
    tcase_add_test(tc, a_failed_commit_never_comes_back);
    tcase_add_test(tc, a_failed_checkpoint_keeps_the_wal);
    tcase_add_test(tc, a_failed_partial_checkpoint_loses_nothing);
    tcase_add_test(tc, rolled_back_frames_never_overwrite_another_writer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
