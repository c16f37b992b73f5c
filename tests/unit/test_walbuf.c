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
    static const char *const files[] = {"t.db", "t.db-wal", "t.db-shm"};
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
