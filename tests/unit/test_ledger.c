/* test_ledger.c - the run ledger against real SQLite files in a temp dir. */
#include "build_config.h"
#include "ledger/ledger.h"
#include "ledger/ledger_internal.h" /* ROWS_PER_INSERT */
#include "util/util.h"

#include <check.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[256];
static sb_ledger_opts g_opts = {.fsync = SB_FSYNC_PROCESS, .commit_interval_ms = 5, .retention_ms = 60000};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "%s/test_ledger.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static void teardown(void)
{
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static sb_ledger *open_ledger(void)
{
    char err[256] = "";
    /* a subdirectory that does not exist yet: open creates it */
    char *dir = sb_asprintf("%s/state", g_dir);
    sb_ledger *l = sb_ledger_open(dir, &g_opts, err, sizeof err);
    free(dir);
    ck_assert_msg(l != NULL, "open: %s", err);
    return l;
}

static char *payload(const char *id, const char *table, int64_t received_us)
{
    return sb_asprintf("{\"id\":\"%s\",\"source\":\"src\",\"received_us\":%lld,\"fields\":{\"table\":\"%s\",\"n\":7}}",
                       id, (long long)received_us, table);
}

/* Accept one entry and return its id. */
static int64_t accept1(sb_ledger *l, const char *id, const char *route, const char *source, const char *table,
                       int64_t received_us)
{
    char err[256];
    char *p = payload(id, table, received_us);
    sb_ledger_new e = {.event_id = id, .route = route, .source = source, .payload = p, .received_us = received_us};
    ck_assert_msg(sb_ledger_accept(l, source, NULL, &e, 1, err, sizeof err) == 0, "accept: %s", err);
    free(p);
    ck_assert_int_eq(e.duplicate, 0);
    return e.entry_id;
}

/* Step `step` of entry id completed: by its only member `member` (attempts
 * 1, fields `added`), or, with member NULL, by fan-out members recorded
 * apart. `last`: the route's last step. */
static void step_done(sb_ledger *l, int64_t id, int step, int last, const char *member, const char *added)
{
    sb_ledger_step s = {.entry_id = id, .step = step, .last = last, .member = member, .attempts = 1,
                        .added_json = added};
    sb_ledger_steps_done(l, &s, 1);
}

static void counts(sb_ledger *l, int64_t pending, int64_t done, int64_t dead)
{
    int64_t p = -1, d = -1, x = -1;
    ck_assert_int_eq(sb_ledger_counts(l, &p, &d, &x), 0);
    ck_assert_int_eq(p, pending);
    ck_assert_int_eq(d, done);
    ck_assert_int_eq(x, dead);
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "");
}

/* The first column of the first row of sql, as text (caller frees). */
static char *sql_text(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    char *v = sb_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void sql_expect(const char *path, const char *sql, const char *want)
{
    char *got = sql_text(path, sql);
    ck_assert_msg(strcmp(got, want) == 0, "%s: %s, not %s", sql, got, want);
    free(got);
}

/* Copy of a pending view, for assertions after the callback. */
struct seen {
    int n;
    int64_t entry_id[16];
    int next_step[16], attempts[16];
    int64_t first_attempt_us[16], next_retry_us[16];
    char added[16][256], members[16][256], event_id[16][64], payload[16][256], states[16][256];
};

static int collect(const sb_ledger_pending *p, void *ud)
{
    struct seen *s = ud;
    if (s->n >= 16)
        return 1;
    int i = s->n++;
    s->entry_id[i] = p->entry_id;
    s->next_step[i] = p->next_step;
    s->attempts[i] = p->attempts;
    s->first_attempt_us[i] = p->first_attempt_us;
    s->next_retry_us[i] = p->next_retry_us;
    snprintf(s->added[i], sizeof s->added[i], "%s", p->added_json);
    snprintf(s->members[i], sizeof s->members[i], "%s", p->members_done);
    snprintf(s->event_id[i], sizeof s->event_id[i], "%s", p->event_id);
    snprintf(s->payload[i], sizeof s->payload[i], "%s", p->payload ? p->payload : "(null)");
    snprintf(s->states[i], sizeof s->states[i], "%s", p->states_json ? p->states_json : "(null)");
    return 0;
}

START_TEST(test_accept_duplicate_checkpoint)
{
    sb_ledger *l = open_ledger();
    char err[256];
    char *p1 = payload("e1", "t", 1), *p2 = payload("e2", "t", 2);
    sb_ledger_new a[3] = {
        {.event_id = "e1", .route = "r1", .payload = p1, .received_us = 1},
        {.event_id = "e1", .route = "r2", .payload = p1, .received_us = 1},
        {.event_id = "e2", .route = "r1", .payload = p2, .received_us = 2},
    };
    ck_assert_ptr_null(sb_ledger_checkpoint(l, "kafka_in", NULL, NULL, 0));
    ck_assert_int_eq(sb_ledger_accept(l, "kafka_in", "off-10", a, 3, err, sizeof err), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(a[i].entry_id, 0);
        ck_assert_int_eq(a[i].duplicate, 0);
    }
    char *cp = sb_ledger_checkpoint(l, "kafka_in", NULL, NULL, 0);
    ck_assert_str_eq(cp, "off-10");
    free(cp);

    char *p3 = payload("e3", "t", 3);
    sb_ledger_new b[3] = {
        {.event_id = "e1", .route = "r2", .payload = p1, .received_us = 1},
        {.event_id = "e3", .route = "r1", .payload = p3, .received_us = 3},
        {.event_id = "e3", .route = "r1", .payload = p3, .received_us = 3},
    };
    ck_assert_int_eq(sb_ledger_accept(l, "kafka_in", "off-11", b, 3, err, sizeof err), 0);
    ck_assert_int_eq(b[0].duplicate, 1);
    ck_assert_int_eq(b[0].entry_id, a[1].entry_id);
    ck_assert_int_eq(b[1].duplicate, 0);
    ck_assert_int_eq(b[2].duplicate, 1);
    ck_assert_int_eq(b[2].entry_id, b[1].entry_id);
    counts(l, 4, 0, 0);

    /* NULL checkpoint leaves it; an empty accept with a checkpoint sets it */
    ck_assert_int_eq(sb_ledger_accept(l, "kafka_in", NULL, b, 1, err, sizeof err), 0);
    cp = sb_ledger_checkpoint(l, "kafka_in", NULL, NULL, 0);
    ck_assert_str_eq(cp, "off-11");
    free(cp);
    ck_assert_int_eq(sb_ledger_accept(l, "kafka_in", "off-12", NULL, 0, err, sizeof err), 0);
    cp = sb_ledger_checkpoint(l, "kafka_in", NULL, NULL, 0);
    ck_assert_str_eq(cp, "off-12");
    free(cp);

    /* invalid entries are refused before anything is queued */
    sb_ledger_new bad = {.event_id = "x", .route = NULL, .payload = "{}"};
    ck_assert_int_eq(sb_ledger_accept(l, "kafka_in", "off-13", &bad, 1, err, sizeof err), -1);
    cp = sb_ledger_checkpoint(l, "kafka_in", NULL, NULL, 0);
    ck_assert_str_eq(cp, "off-12");
    free(cp);

    free(p1);
    free(p2);
    free(p3);
    sb_ledger_close(l);
}
END_TEST

/* foreach_pending callback: own[0] counts the entries whose payload names
 * their own id, own[1] the others. */
static int count_own_payload(const sb_ledger_pending *p, void *ud)
{
    int *own = ud;
    char want[96];
    snprintf(want, sizeof want, "{\"id\":\"%s\",", p->event_id);
    own[p->payload && strncmp(p->payload, want, strlen(want)) == 0 && !strchr(p->payload, '\n') ? 0 : 1]++;
    return 0;
}

/* Accepts of more entries than one statement inserts (ROWS_PER_INSERT):
 * groups of rows go in together; from a group holding a duplicate or a
 * dead entry on, the batch goes one by one. Either way every entry gets
 * its own id and payload, and a duplicate the id it had. */
START_TEST(test_accept_many_rows)
{
    sb_ledger *l = open_ledger();
    char err[256];
    enum { NA = 75, NB = 132, ROWS = 32 /* ROWS_PER_INSERT, ledger_internal.h */ };
    char ida[NA][16], idb[NB][16], *pa[NA], *pb[NB];
    sb_ledger_new a[NA], b[NB];
    for (int i = 0; i < NA; i++) {
        snprintf(ida[i], sizeof ida[i], "m%d", i);
        pa[i] = payload(ida[i], "t", i);
        a[i] = (sb_ledger_new){.event_id = ida[i], .route = "r", .payload = pa[i], .received_us = i};
    }
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, a, NA, err, sizeof err), 0);
    for (int i = 0; i < NA; i++) {
        ck_assert_int_eq(a[i].duplicate, 0);
        if (i)
            ck_assert_int_eq(a[i].entry_id, a[i - 1].entry_id + 1);
    }
    for (int i = 0; i < NB; i++) {
        snprintf(idb[i], sizeof idb[i], "n%d", i);
        pb[i] = payload(idb[i], "t", 1000 + i);
        b[i] = (sb_ledger_new){.event_id = idb[i], .route = "r", .payload = pb[i], .received_us = 1000 + i};
    }
    b[3] = a[3];                 /* first group: a duplicate of an entry accepted before */
    b[3].entry_id = 0;
    b[40].dead_reason = "bad";   /* an entry dead at once */
    b[80] = b[70];               /* the same entry twice in the batch */
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, b, NB, err, sizeof err), 0);
    for (int i = 97; i < 128; i++)
        ck_assert_int_eq(b[i].entry_id, b[i - 1].entry_id + 1);
    ck_assert_int_eq(b[96].entry_id, b[95].entry_id + 1);
    ck_assert_int_eq(b[3].duplicate, 1);
    ck_assert_int_eq(b[3].entry_id, a[3].entry_id);
    ck_assert_int_eq(b[80].duplicate, 1);
    ck_assert_int_eq(b[80].entry_id, b[70].entry_id);
    for (int i = 0; i < NB; i++)
        if (i != 3 && i != 80)
            ck_assert_int_eq(b[i].duplicate, 0);
    counts(l, NA + NB - 3, 0, 1);

    /* a dead entry in the first group of a batch */
    enum { NC = ROWS + 1 };
    char idc[NC][16], *pc[NC];
    sb_ledger_new c[NC];
    for (int i = 0; i < NC; i++) {
        snprintf(idc[i], sizeof idc[i], "o%d", i);
        pc[i] = payload(idc[i], "t", 2000 + i);
        c[i] = (sb_ledger_new){.event_id = idc[i], .route = "r", .payload = pc[i], .received_us = 2000 + i};
    }
    c[10].dead_reason = "bad too";
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, c, NC, err, sizeof err), 0);
    for (int i = 0; i < NC; i++)
        ck_assert_int_eq(c[i].duplicate, 0);
    counts(l, NA + NB - 3 + NC - 1, 0, 2);

    /* A group of member records naming one (entry, step, member) twice:
     * the first record stays, as with one row at a time. */
    sb_ledger_step done[ROWS];
    for (int i = 0; i < ROWS; i++)
        done[i] = (sb_ledger_step){.entry_id = a[i].entry_id, .step = 0, .last = 1, .member = "m", .attempts = 1,
                                   .added_json = "{\"k\":\"first\"}"};
    done[5].entry_id = a[4].entry_id;
    done[5].added_json = "{\"k\":\"second\"}";
    sb_ledger_steps_done(l, done, ROWS);
    sb_ledger_sync(l);
    counts(l, NA + NB - 3 + NC - 1 - (ROWS - 1), ROWS - 1, 2);
    /* each pending entry reads its own payload back, from a row of its
     * group or one of its own */
    int own[2] = {0, 0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, count_own_payload, own),
                     NA + NB - 3 + NC - 1 - (ROWS - 1));
    ck_assert_int_eq(own[0], NA + NB - 3 + NC - 1 - (ROWS - 1));
    ck_assert_int_eq(own[1], 0);
    sb_ledger_close(l);

    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    char *q = sb_asprintf("SELECT group_concat(added) FROM members WHERE entry_id = %lld", (long long)a[4].entry_id);
    sql_expect(path, q, "{\"k\":\"first\"}");
    free(q);
    sql_expect(path, "SELECT count(*) FROM members", "31");
    sql_expect(path, "SELECT count(*) FROM entries", "238");
    /* each entry's payload is in the row that holds it: entries accepted
     * together share rows of up to PAYLOAD_ROW_TARGET bytes (schema 7):
     * a row for the 75, two for the 130 of the second batch (an entry dead
     * at once among them), one for the 33 */
    sql_expect(path,
               "SELECT count(*) FROM entries e JOIN payloads p ON p.id = (SELECT max(id) FROM payloads"
               " WHERE id <= e.id) WHERE e.id < p.id + p.span AND instr(p.payload, '\"id\":\"' || e.event_id || '\"') > 0",
               "238");
    q = sb_asprintf("SELECT group_concat(span) || ', ' || (max(length(payload)) <= %d) FROM payloads",
                    PAYLOAD_ROW_TARGET);
    sql_expect(path, q, "75,114,16,33, 1");
    free(q);
    sql_expect(path, "SELECT event_id || ' ' || error FROM entries WHERE state = 2 ORDER BY id", "n40 bad");
    free(path);
    for (int i = 0; i < NA; i++)
        free(pa[i]);
    for (int i = 0; i < NB; i++)
        free(pb[i]);
    for (int i = 0; i < NC; i++)
        free(pc[i]);
}
END_TEST

/* A duplicate stops a group's INSERT (OR FAIL) at its row: the rows before
 * it stay inserted and get their payloads, the duplicate gets the id it
 * had (also of a row the same statement inserted), the rest go one by one.
 * The counts move once for each entry. */
START_TEST(test_accept_rows_stopped_by_duplicate)
{
    sb_ledger *l = open_ledger();
    char err[256];
    enum { N = 70 };
    char ids[N][16], *pl[N];
    sb_ledger_new e[N], f[N];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "d%d", i);
        pl[i] = payload(ids[i], "t", i);
        e[i] = (sb_ledger_new){.event_id = ids[i], .route = "r", .payload = pl[i], .received_us = i};
    }
    e[20] = e[5]; /* the same entry twice in one group */
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, e, N, err, sizeof err), 0);
    for (int i = 1; i < N; i++) {
        if (i == 20)
            continue;
        ck_assert_int_eq(e[i].duplicate, 0);
        ck_assert_int_eq(e[i].entry_id, e[i == 21 ? 19 : i - 1].entry_id + 1);
    }
    ck_assert_int_eq(e[20].duplicate, 1);
    ck_assert_int_eq(e[20].entry_id, e[5].entry_id);
    counts(l, N - 1, 0, 0);
    /* again with the first row of a group a duplicate: the statement keeps
     * none of its rows, and they go one by one */
    for (int i = 0; i < N; i++)
        f[i] = (sb_ledger_new){.event_id = ids[i], .route = "r2", .payload = pl[i], .received_us = i};
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, f, 30, err, sizeof err), 0);
    f[30] = e[0];
    f[30].entry_id = 0;
    ck_assert_int_ge(N - 30, ROWS_PER_INSERT); /* a whole group: the INSERT of 32 rows runs */
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, &f[30], N - 30, err, sizeof err), 0);
    ck_assert_int_eq(f[30].duplicate, 1);
    ck_assert_int_eq(f[30].entry_id, e[0].entry_id);
    for (int i = 31; i < N; i++) {
        ck_assert_int_eq(f[i].duplicate, 0);
        if (i > 31)
            ck_assert_int_eq(f[i].entry_id, f[i - 1].entry_id + 1);
    }
    counts(l, N - 1 + N - 1, 0, 0);
    int own[2] = {0, 0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, count_own_payload, own), 2 * (N - 1));
    ck_assert_int_eq(own[0], 2 * (N - 1));
    sb_ledger_close(l);
    for (int i = 0; i < N; i++)
        free(pl[i]);
}
END_TEST

/* A group of ROWS_PER_INSERT entries of one route and source binds those
 * once for the group; a group that mixes them binds each row's own. Both
 * write every row's own id, route, source and times. */
START_TEST(test_accept_rows_shared)
{
    sb_ledger *l = open_ledger();
    char err[256];
    enum { N = 64 };
    char ids[N][16], *pl[N];
    char route_copy[] = "r1"; /* same text, another pointer */
    sb_ledger_new e[N];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "s%d", i);
        pl[i] = payload(ids[i], "t", 100 + i);
        int mixed = i >= 32;
        e[i] = (sb_ledger_new){.event_id = ids[i], .route = i == 7 ? route_copy : "r1", .payload = pl[i],
                               .received_us = 100 + i};
        if (mixed && i % 2)
            e[i].route = "r2";
        if (mixed && i % 3 == 0)
            e[i].source = "other";
    }
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, e, N, err, sizeof err), 0);
    for (int i = 1; i < N; i++)
        ck_assert_int_eq(e[i].entry_id, e[i - 1].entry_id + 1);
    sb_ledger_close(l);
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    sql_expect(path,
               "SELECT count(*) FROM entries WHERE received_us = 100 + CAST(substr(event_id, 2) AS INTEGER)"
               " AND accepted_us = updated_us AND accepted_us > 0 AND route = CASE WHEN id > 32 AND id % 2 = 0"
               " THEN 'r2' ELSE 'r1' END AND source = CASE WHEN id > 32 AND (id - 1) % 3 = 0 THEN 'other'"
               " ELSE 'src' END",
               "64");
    free(path);
    for (int i = 0; i < N; i++)
        free(pl[i]);
}
END_TEST

/* A source's dead letter is inserted straight into the dead-letter store,
 * in the accept's transaction; a redelivery of it is a duplicate. */
START_TEST(test_accept_dead_letter)
{
    sb_ledger *l = open_ledger();
    char err[256];
    char *p = payload("bad1", "t", 1);
    sb_ledger_new e[2] = {
        {.event_id = "bad1", .route = "r1", .payload = p, .received_us = 1, .dead_reason = "cannot be decoded: x"},
        {.event_id = "bad1", .route = "r2", .payload = p, .received_us = 1, .dead_reason = "cannot be decoded: x"},
    };
    ck_assert_int_eq(sb_ledger_accept(l, "pull", NULL, e, 2, err, sizeof err), 0);
    counts(l, 0, 0, 2);
    sb_ledger_filter f = {.state = SB_ENTRY_DEAD};
    json_t *arr = sb_ledger_list(l, &f, err, sizeof err);
    ck_assert_int_eq(json_array_size(arr), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 0), "error")), "cannot be decoded: x");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(arr, 0), "next_step")), 0);
    json_decref(arr);
    ck_assert_int_eq(sb_ledger_accept(l, "pull", NULL, e, 1, err, sizeof err), 0);
    ck_assert_int_eq(e[0].duplicate, 1);
    counts(l, 0, 0, 2);
    free(p);
    sb_ledger_close(l);
}
END_TEST

START_TEST(test_async_order_and_resume_view)
{
    sb_ledger *l = open_ledger();
    int64_t id = accept1(l, "ev", "r", "src", "t", 10);
    sb_ledger_member_done(l, id, 0, "a", 1, "{\"x\":1}");
    sb_ledger_member_done(l, id, 0, "b", 2, "{\"y\":2}");
    sb_ledger_member_done(l, id, 0, "a", 5, "{\"x\":99}"); /* second record of a: ignored */
    step_done(l, id, 0, 0, NULL, NULL);
    step_done(l, id, 1, 0, "c", "{\"x\":3}");
    sb_ledger_retry(l, id, 2, 1, 0, "first");
    sb_ledger_member_done(l, id, 2, "d", 1, "{\"z\":4}");
    sb_ledger_member_done(l, id, 2, "e", 1, NULL);
    sb_ledger_retry(l, id, 2, 3, 123456789, "timeout");
    sb_ledger_sync(l);

    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], id);
    ck_assert_int_eq(s.next_step[0], 2);
    ck_assert_int_eq(s.attempts[0], 3);
    ck_assert_int_eq(s.next_retry_us[0], 123456789);
    ck_assert_int_gt(s.first_attempt_us[0], 0);
    json_t *added = json_loads(s.added[0], 0, NULL);
    ck_assert_ptr_nonnull(added);
    ck_assert_int_eq(json_object_size(added), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(added, "x")), 3); /* step 1 overrides step 0 */
    ck_assert_int_eq(json_integer_value(json_object_get(added, "y")), 2);
    json_decref(added);
    ck_assert_str_eq(s.members[0], "[\"d\",\"e\"]");

    char err[256];
    json_t *e = sb_ledger_show(l, id, err, sizeof err);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(json_string_value(json_object_get(e, "error")), "timeout");
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "pending");
    json_decref(e);

    /* finishing the last step leaves the pending set */
    step_done(l, id, 2, 1, NULL, NULL);
    sb_ledger_sync(l);
    s.n = 0;
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 0);
    counts(l, 0, 1, 0);
    e = sb_ledger_show(l, id, err, sizeof err);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "next_step")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "attempts")), 0);
    json_decref(e);
    sb_ledger_close(l);
}
END_TEST

/* Progress (schema 5) sits beside the step state: a progress-only row is
 * shown but never handed back as state at resume, and a report never
 * replaces the state a step keeps. */
START_TEST(test_progress_beside_step_state)
{
    sb_ledger *l = open_ledger();
    int64_t a = accept1(l, "pa", "r", "src", "t", 10), b = accept1(l, "pb", "r", "src", "t", 11);
    sb_ledger_step_progress(l, a, 0, "copy", 10, 100);
    sb_ledger_step_progress(l, a, 0, "copy", 40, 100);
    char err[256];
    ck_assert_int_eq(sb_ledger_step_state(l, b, 0, "copy", "{\"upload\":\"u1\"}", 1, err, sizeof err), 0);
    sb_ledger_step_progress(l, b, 0, "copy", 100, 100);
    sb_ledger_sync(l);

    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 2);
    ck_assert_str_eq(s.states[0], "(null)"); /* progress only: no state to resume */
    ck_assert_str_eq(s.states[1], "{\"copy\":{\"upload\":\"u1\"}}");

    json_t *e = sb_ledger_show(l, a, err, sizeof err);
    json_t *st = json_array_get(json_object_get(e, "step_states"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(st, "progress"), "done")), 40);
    ck_assert(json_is_null(json_object_get(st, "state")));
    json_decref(e);
    e = sb_ledger_show(l, b, err, sizeof err);
    st = json_array_get(json_object_get(e, "step_states"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(st, "progress"), "total")), 100);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "state"), "upload")), "u1");
    json_decref(e);

    /* a replay forgets the last attempt's progress, and keeps the state */
    sb_ledger_dead(l, a, 0, "gave up");
    sb_ledger_dead(l, b, 0, "gave up");
    sb_ledger_sync(l);
    ck_assert_int_eq(sb_ledger_dlq_replay(l, 0, NULL, err, sizeof err), 2);
    e = sb_ledger_show(l, a, err, sizeof err);
    ck_assert_int_eq(json_array_size(json_object_get(e, "step_states")), 0);
    json_decref(e);
    e = sb_ledger_show(l, b, err, sizeof err);
    st = json_array_get(json_object_get(e, "step_states"), 0);
    ck_assert(json_is_null(json_object_get(st, "progress")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "state"), "upload")), "u1");
    json_decref(e);
    sb_ledger_close(l);
}
END_TEST

/* Steps of many entries in one call, as the router records a batch: a
 * single member's record is kept only when it added fields, and resume
 * needs nothing more. */
START_TEST(test_steps_done_batch)
{
    sb_ledger *l = open_ledger();
    char err[256];
    enum { N = 300 };
    int64_t ids[N];
    sb_ledger_step done[N];
    for (int i = 0; i < N; i++) {
        char ev[16];
        snprintf(ev, sizeof ev, "b%d", i);
        ids[i] = accept1(l, ev, "r", "src", "t", i);
        /* the first half finish their 1-step route; the others are at step 1 of 2 */
        done[i] = (sb_ledger_step){.entry_id = ids[i], .step = 0, .last = i < N / 2, .member = "a", .attempts = 1,
                                   .added_json = i % 3 == 0 ? "{\"k\":\"v\"}" : NULL};
    }
    sb_ledger_dead(l, ids[1], 0, "gave up"); /* settled: the batch leaves it */
    sb_ledger_steps_done(l, done, N);
    sb_ledger_sync(l);
    counts(l, N / 2, N / 2 - 1, 1);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 2, collect, &s), 2);
    ck_assert_int_eq(s.entry_id[0], ids[N / 2]);
    ck_assert_int_eq(s.next_step[0], 1);
    ck_assert_str_eq(s.added[0], "{\"k\":\"v\"}");
    ck_assert_str_eq(s.members[0], "[]");
    ck_assert_int_eq(s.entry_id[1], ids[N / 2 + 1]);
    ck_assert_str_eq(s.added[1], "{}");
    ck_assert_str_eq(s.members[1], "[]");
    json_t *e = sb_ledger_show(l, ids[0], err, sizeof err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "done");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(e, "steps"), 0), "instance")),
                     "a");
    json_decref(e);
    e = sb_ledger_show(l, ids[1], err, sizeof err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "dead");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "next_step")), 0);
    json_decref(e);
    sb_ledger_close(l);

    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    sql_expect(path, "SELECT count(*) FROM members", "100");
    sql_expect(path, "SELECT count(*) FROM members WHERE instance = 'a' AND step = 0 AND added IS NOT NULL", "100");
    /* written in groups of rows and one by one: each to its own entry */
    sql_expect(path,
               "SELECT count(*) FROM members m JOIN entries e ON e.id = m.entry_id"
               " WHERE CAST(substr(e.event_id, 2) AS INTEGER) % 3 = 0",
               "100");
    free(path);
}
END_TEST

/* A pending entry whose payload row is gone (a damaged file) still comes
 * back at resume, with no payload, so it is reported instead of hidden. */
START_TEST(test_pending_without_payload)
{
    sb_ledger *l = open_ledger();
    int64_t a = accept1(l, "kept", "r", "src", "t", 1);
    int64_t b = accept1(l, "lost", "r", "src", "t", 2);
    sb_ledger_close(l);
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    char *sql = sb_asprintf("DELETE FROM payloads WHERE id = %lld", (long long)b);
    exec_ok(db, sql);
    free(sql);
    sqlite3_close(db);
    free(path);

    l = open_ledger();
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 2);
    ck_assert_int_eq(s.entry_id[0], a);
    ck_assert_ptr_nonnull(strstr(s.payload[0], "\"kept\""));
    ck_assert_int_eq(s.entry_id[1], b);
    ck_assert_str_eq(s.payload[1], "(null)");
    sb_ledger_close(l);
}
END_TEST

START_TEST(test_pending_paging)
{
    sb_ledger *l = open_ledger();
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        char ev[16];
        snprintf(ev, sizeof ev, "p%d", i);
        ids[i] = accept1(l, ev, i % 2 ? "odd" : "even", "src", "t", i);
    }
    sb_ledger_entry_done(l, ids[2]);
    sb_ledger_sync(l);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 2, collect, &s), 2);
    ck_assert_int_eq(s.entry_id[0], ids[0]);
    ck_assert_int_eq(s.entry_id[1], ids[1]);
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, s.entry_id[1], 2, collect, &s), 2);
    ck_assert_int_eq(s.entry_id[2], ids[3]); /* ids[2] is done */
    ck_assert_int_eq(s.entry_id[3], ids[4]);
    s.n = 0;
    ck_assert_int_eq(sb_ledger_foreach_pending(l, "even", 0, 0, collect, &s), 2);
    ck_assert_int_eq(s.entry_id[0], ids[0]);
    ck_assert_int_eq(s.entry_id[1], ids[4]);
    ck_assert_str_eq(s.added[0], "{}");
    ck_assert_str_eq(s.members[0], "[]");
    sb_ledger_close(l);
}
END_TEST

/* Accept n entries g<first>.. in one call, table "t<i>" each; their ids. */
static void accept_group(sb_ledger *l, int first, int n, int64_t *ids)
{
    char err[256], ev[64][16], *pl[64];
    sb_ledger_new e[64];
    ck_assert_int_le(n, 64);
    for (int i = 0; i < n; i++) {
        char table[16];
        snprintf(ev[i], sizeof ev[i], "g%d", first + i);
        snprintf(table, sizeof table, "t%d", first + i);
        pl[i] = payload(ev[i], table, first + i);
        e[i] = (sb_ledger_new){.event_id = ev[i], .route = "r", .source = "src", .payload = pl[i],
                               .received_us = first + i};
    }
    ck_assert_msg(sb_ledger_accept(l, "src", NULL, e, (size_t)n, err, sizeof err) == 0, "accept: %s", err);
    for (int i = 0; i < n; i++) {
        ids[i] = e[i].entry_id;
        free(pl[i]);
    }
}

/* Payloads read back from shared rows: the field filter table = `table`
 * finds only `event_id`, and entry `id` shows table `id_table`. */
static void expect_table_read_back(sb_ledger *l, const char *table, const char *event_id, int64_t id,
                                   const char *id_table)
{
    char err[256];
    sb_ledger_filter f = {.state = -1, .field_eq_name = "table", .field_eq_value = table};
    json_t *arr = sb_ledger_list(l, &f, err, sizeof err);
    ck_assert_msg(arr != NULL, "list: %s", err);
    ck_assert_int_eq(json_array_size(arr), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 0), "event_id")), event_id);
    json_decref(arr);
    json_t *e = sb_ledger_show(l, id, err, sizeof err);
    ck_assert_msg(e != NULL, "show: %s", err);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "fields"), "table")), id_table);
    json_decref(e);
}

/* Accept n entries f<first>.. in one call with fields_only (schema 9),
 * table "t<i>" each, entry `whole` (-1: none) with its whole payload
 * instead; their ids. */
static void accept_fields(sb_ledger *l, int first, int n, int whole, int64_t *ids)
{
    char err[256], ev[64][16], *pl[64];
    sb_ledger_new e[64];
    ck_assert_int_le(n, 64);
    for (int i = 0; i < n; i++) {
        snprintf(ev[i], sizeof ev[i], "f%d", first + i);
        pl[i] = first + i == whole ? payload(ev[i], "tw", first + i)
                                   : sb_asprintf("{\"table\":\"t%d\",\"n\":7}", first + i);
        e[i] = (sb_ledger_new){.event_id = ev[i], .route = "r", .source = "src", .payload = pl[i],
                               .received_us = first + i, .fields_only = first + i != whole};
    }
    ck_assert_msg(sb_ledger_accept(l, "src", NULL, e, (size_t)n, err, sizeof err) == 0, "accept: %s", err);
    for (int i = 0; i < n; i++) {
        ids[i] = e[i].entry_id;
        free(pl[i]);
    }
}

/* Schema 9: an entry accepted with only its fields keeps only them, and
 * is read back whole (resume, show, a field filter) as if it had come
 * with its whole payload; in a payload row of a group or of its own, and
 * with an event id that JSON must escape. A row ends where the form
 * changes. */
START_TEST(test_payload_fields_only)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t f[33], m[32];
    accept_fields(l, 0, 33, -1, f);
    char *db = sb_asprintf("%s/state/ledger.db", g_dir);
    sql_expect(db, "SELECT group_concat(fields_only || ' ' || span, ',') FROM payloads", "1 33");
    sql_expect(db, "SELECT count(*) FROM payloads WHERE instr(payload, 'received_us') > 0", "0");
    accept_fields(l, 33, 32, 40, m);
    sql_expect(db, "SELECT group_concat(fields_only || ' ' || span, ',') FROM payloads WHERE id >= 34",
               "1 7,0 1,1 24");
    char *quoted = sb_asprintf("{\"table\":\"tq\"}");
    sb_ledger_new q = {.event_id = "q\"\\1", .route = "r", .source = "src", .payload = quoted, .received_us = 99,
                       .fields_only = 1};
    ck_assert_msg(sb_ledger_accept(l, "src", NULL, &q, 1, err, sizeof err) == 0, "accept: %s", err);
    free(quoted);

    /* resume reads every payload whole, in both forms, as payload() writes it */
    int64_t after = 0;
    int seen = 0;
    for (;;) {
        struct seen s = {0};
        sb_ledger_foreach_pending(l, NULL, after, 16, collect, &s);
        if (!s.n)
            break;
        for (int i = 0; i < s.n; i++, seen++) {
            after = s.entry_id[i];
            if (strcmp(s.event_id[i], "q\"\\1") == 0) {
                ck_assert_str_eq(s.payload[i],
                                 "{\"id\":\"q\\\"\\\\1\",\"source\":\"src\",\"received_us\":99,\"fields\":{\"table\":\"tq\"}}");
                continue;
            }
            int k = atoi(s.event_id[i] + 1);
            char table[16];
            snprintf(table, sizeof table, k == 40 ? "tw" : "t%d", k);
            char *want = payload(s.event_id[i], table, k);
            ck_assert_str_eq(s.payload[i], want);
            free(want);
        }
    }
    ck_assert_int_eq(seen, 66);

    expect_table_read_back(l, "t17", "f17", f[32], "t32");
    sb_ledger_close(l);
    free(db);
}
END_TEST

/* Schema 7: entries accepted together share a payload row, a line each.
 * Each reads its own back (resume, show, a field filter); the row is
 * dropped (until_settled) or pruned only once none of its entries needs
 * it. A payload with a newline of its own has a row of its own, and a row
 * ends at PAYLOAD_ROW_TARGET bytes or PAYLOAD_ROW_SPAN_MAX entries. */
START_TEST(test_payload_groups)
{
    g_opts.drop_settled_payload = 1;
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t g[32];
    accept_group(l, 0, 32, g);
    char *db = sb_asprintf("%s/state/ledger.db", g_dir);
    sql_expect(db, "SELECT count(*) || ' ' || sum(span) FROM payloads", "1 32");

    /* a field filter finds the one entry of the row whose table it names */
    expect_table_read_back(l, "t17", "g17", g[31], "t31");

    /* done but one dead and one pending: the row stays, for those two */
    sb_ledger_step done[30];
    for (int i = 0; i < 30; i++)
        done[i] = (sb_ledger_step){.entry_id = g[i], .last = 1};
    sb_ledger_steps_done(l, done, 30);
    sb_ledger_dead(l, g[30], 0, "400");
    sb_ledger_sync(l);
    sql_expect(db, "SELECT count(*) FROM payloads", "1");
    /* the dead one is replayed and done: the row stays for the pending one,
     * and so it does when the others are pruned */
    ck_assert_int_eq(sb_ledger_dlq_replay(l, g[30], NULL, err, sizeof err), 1);
    step_done(l, g[30], 0, 1, "m", NULL);
    sb_ledger_sync(l);
    sql_expect(db, "SELECT count(*) FROM payloads", "1");
    ck_assert_int_eq(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), 31);
    sql_expect(db, "SELECT count(*) FROM payloads", "1");
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], g[31]);
    ck_assert_ptr_nonnull(strstr(s.payload[0], "\"g31\""));
    ck_assert_ptr_null(strchr(s.payload[0], '\n'));
    /* the last one done: the row goes */
    sb_ledger_entry_done(l, g[31]);
    sb_ledger_sync(l);
    sql_expect(db, "SELECT count(*) FROM payloads", "0");
    sb_ledger_close(l);

    /* keep_payload: always: pruning the row's last entry drops it */
    g_opts.drop_settled_payload = 0;
    l = open_ledger();
    accept_group(l, 100, 32, g);
    for (int i = 0; i < 32; i++)
        done[i % 30] = (sb_ledger_step){.entry_id = g[i], .last = 1};
    sb_ledger_steps_done(l, done, 30); /* 2..31 */
    sb_ledger_sync(l);
    /* these 30 and the first group's last entry, done after its prune */
    ck_assert_int_eq(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), 30 + 1);
    sql_expect(db, "SELECT count(*) FROM payloads", "1");
    sb_ledger_entry_done(l, g[0]);
    sb_ledger_entry_done(l, g[1]);
    sb_ledger_sync(l);
    ck_assert_int_eq(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), 2);
    sql_expect(db, "SELECT count(*) FROM payloads", "0");

    /* a payload with a newline between its tokens has a row of its own and
     * is read back whole; the rows of the others end and start at it */
    char ev[32][16];
    sb_ledger_new nl[32];
    for (int i = 0; i < 32; i++) {
        snprintf(ev[i], sizeof ev[i], "nl%d", i);
        nl[i] = (sb_ledger_new){.event_id = ev[i], .route = "r", .payload = i == 7 ? "{\"a\":\n1}" : "{\"b\":2}"};
    }
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, nl, 32, err, sizeof err), 0);
    sql_expect(db, "SELECT group_concat(span) FROM payloads", "7,1,24");
    s.n = 0;
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, nl[7].entry_id - 1, 1, collect, &s), 1);
    ck_assert_str_eq(s.payload[0], "{\"a\":\n1}");

    /* a row takes payloads up to PAYLOAD_ROW_TARGET bytes: two of 3,000
     * bytes; one longer than that has a row of its own */
    char *big = sb_xcalloc(1, PAYLOAD_ROW_TARGET + 10);
    memset(big, 'x', PAYLOAD_ROW_TARGET);
    memcpy(big, "{\"c\":\"", 6);
    memcpy(big + 2990, "\"}", 3);
    for (int i = 0; i < 32; i++) {
        snprintf(ev[i], sizeof ev[i], "big%d", i);
        nl[i] = (sb_ledger_new){.event_id = ev[i], .route = "r", .payload = big};
    }
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, nl, 32, err, sizeof err), 0);
    sql_expect(db, "SELECT count(*) || ' ' || max(span) FROM payloads WHERE id > 32", "16 2");
    memset(big + 2990, 'x', PAYLOAD_ROW_TARGET - 2990);
    memcpy(big + PAYLOAD_ROW_TARGET - 2, "\"}", 3);
    sb_ledger_new huge[2] = {{.event_id = "huge0", .route = "r", .payload = big},
                             {.event_id = "huge1", .route = "r", .payload = "{}"}};
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, huge, 2, err, sizeof err), 0);
    char *q = sb_asprintf("SELECT group_concat(span || ':' || length(payload)) FROM payloads WHERE id >= %lld",
                          (long long)huge[0].entry_id);
    sql_expect(db, q, "1:8670,1:2");
    free(q);
    sb_ledger_new tiny[PAYLOAD_ROW_SPAN_MAX + 2];
    char tid[PAYLOAD_ROW_SPAN_MAX + 2][16];
    for (int i = 0; i < PAYLOAD_ROW_SPAN_MAX + 2; i++) {
        snprintf(tid[i], sizeof tid[i], "tiny%d", i);
        tiny[i] = (sb_ledger_new){.event_id = tid[i], .route = "r", .payload = "{}"};
    }
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, tiny, PAYLOAD_ROW_SPAN_MAX + 2, err, sizeof err), 0);
    q = sb_asprintf("SELECT group_concat(span) FROM payloads WHERE id >= %lld", (long long)tiny[0].entry_id);
    sql_expect(db, q, "128,2");
    free(q);
    free(big);
    sb_ledger_close(l);
    free(db);
}
END_TEST

/* Entry ids are reused above the largest one left: a group's row whose
 * last entries were dropped is cut back to the last one left, so that a
 * new entry given a freed id never reads an old payload (until_settled),
 * and the row goes with its last entry, so that a new row starting at a
 * reused id does not collide with it (always). With until_settled, a
 * dlq drop also drops a row whose other entries are all done. */
START_TEST(test_payload_groups_reused_ids)
{
    char err[256];
    int64_t g[32];
    char *db = sb_asprintf("%s/state/ledger.db", g_dir);

    g_opts.drop_settled_payload = 1;
    sb_ledger *l = open_ledger();
    accept_group(l, 0, 32, g);
    for (int i = 0; i < 20; i++)
        sb_ledger_entry_done(l, g[i]);
    for (int i = 20; i < 32; i++)
        sb_ledger_dead(l, g[i], 0, "400");
    sb_ledger_sync(l);
    ck_assert_int_eq(sb_ledger_dlq_drop(l, 0, NULL, err, sizeof err), 12);
    sql_expect(db, "SELECT count(*) FROM payloads", "0"); /* the others are done */
    int64_t x = accept1(l, "x", "r", "src", "tx", 5);
    ck_assert_int_eq(x, g[20]); /* a reused id */
    sb_ledger_entry_done(l, x);
    sb_ledger_sync(l);
    json_t *e = sb_ledger_show(l, x, err, sizeof err);
    ck_assert(json_is_null(json_object_get(e, "fields"))); /* its own payload went, no other shows */
    json_decref(e);
    ck_assert_int_lt(sb_ledger_republish(l, x, 0, err, sizeof err), 0);
    sb_ledger_close(l);

    g_opts.drop_settled_payload = 0;
    l = open_ledger();
    accept_group(l, 100, 32, g);
    for (int i = 20; i < 32; i++)
        sb_ledger_dead(l, g[i], 0, "400");
    sb_ledger_sync(l);
    ck_assert_int_eq(sb_ledger_dlq_drop(l, 0, NULL, err, sizeof err), 12);
    char *want = sb_asprintf("%lld/20", (long long)g[0]);
    sql_expect(db, "SELECT group_concat(id || '/' || span) FROM payloads WHERE span > 1", want); /* cut back */
    free(want);
    x = accept1(l, "y", "r", "src", "ty", 6);
    ck_assert_int_eq(x, g[20]);
    e = sb_ledger_show(l, x, err, sizeof err);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "fields"), "table")), "ty");
    json_decref(e);
    /* all pruned but the new one: the group's row goes; then a new group
     * starting at a reused id is accepted */
    for (int i = 0; i < 20; i++)
        sb_ledger_entry_done(l, g[i]);
    sb_ledger_sync(l);
    ck_assert_int_ge(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), 20);
    sb_ledger_entry_done(l, x);
    sb_ledger_sync(l);
    ck_assert_int_ge(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), 1);
    sql_expect(db, "SELECT count(*) FROM payloads", "0");
    int64_t h[32];
    accept_group(l, 200, 32, h);
    e = sb_ledger_show(l, h[5], err, sizeof err);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "fields"), "table")), "t205");
    json_decref(e);
    /* a row cut to its first entry keeps that entry's line alone: read
     * whole, the row would have been its three payloads in one */
    int64_t c[3];
    accept_fields(l, 300, 3, -1, c);
    sb_ledger_dead(l, c[1], 0, "400");
    sb_ledger_dead(l, c[2], 0, "400");
    sb_ledger_sync(l);
    ck_assert_int_eq(sb_ledger_dlq_drop(l, 0, NULL, err, sizeof err), 2);
    char *q = sb_asprintf("SELECT span || ':' || payload FROM payloads WHERE id = %lld", (long long)c[0]);
    sql_expect(db, q, "1:{\"table\":\"t300\",\"n\":7}");
    free(q);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, c[0] - 1, 1, collect, &s), 1);
    char *whole = payload("f300", "t300", 300);
    ck_assert_str_eq(s.payload[0], whole);
    free(whole);
    sb_ledger_close(l);
    free(db);
}
END_TEST

/* ledger.keep_payload: until_settled: a done entry loses its payload (by
 * the batch path and by entry_done), keeps its identity (a duplicate is
 * still recognised) and its steps' records; dead and pending ones keep
 * theirs, and a replayed dead entry loses it when it is done. */
START_TEST(test_keep_payload_until_settled)
{
    g_opts.drop_settled_payload = 1;
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t a = accept1(l, "k1", "r1", "src", "t", 1);
    int64_t b = accept1(l, "k2", "r1", "src", "t", 2);
    int64_t c = accept1(l, "k3", "r1", "src", "t", 3);
    accept1(l, "k4", "r1", "src", "t", 4);
    step_done(l, a, 0, 1, "m", "{\"msg\":\"x\"}");
    sb_ledger_entry_done(l, b);
    sb_ledger_dead(l, c, 0, "400");
    sb_ledger_sync(l);
    counts(l, 1, 2, 1);
    char *db = sb_asprintf("%s/state/ledger.db", g_dir);
    sql_expect(db, "SELECT group_concat(id) FROM (SELECT id FROM payloads ORDER BY id)", "3,4");

    char *p = payload("k1", "t", 1);
    sb_ledger_new dup = {.event_id = "k1", .route = "r1", .source = "src", .payload = p, .received_us = 1};
    ck_assert_msg(sb_ledger_accept(l, "src", NULL, &dup, 1, err, sizeof err) == 0, "accept: %s", err);
    free(p);
    ck_assert_int_eq(dup.duplicate, 1);
    ck_assert_int_eq(dup.entry_id, a);

    json_t *e = sb_ledger_show(l, a, err, sizeof err);
    ck_assert_msg(e != NULL, "show: %s", err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "done");
    ck_assert(json_is_null(json_object_get(e, "fields")));
    json_t *s0 = json_array_get(json_object_get(e, "steps"), 0); /* what the step added stays */
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(s0, "added"), "msg")), "x");
    json_decref(e);

    ck_assert_int_eq(sb_ledger_dlq_replay(l, c, NULL, err, sizeof err), 1);
    step_done(l, c, 0, 1, "m", NULL);
    sb_ledger_sync(l);
    counts(l, 1, 3, 0);
    sql_expect(db, "SELECT group_concat(id) FROM payloads", "4");

    /* A batch of steps whose ids are not consecutive (the id array), then
     * one whose are (the range), with a dead entry inside it: the dead
     * entry keeps its state and payload, the others are done without. */
    int64_t k[9];
    for (int i = 0; i < 9; i++) {
        char ev[16];
        snprintf(ev, sizeof ev, "k%d", 5 + i);
        k[i] = accept1(l, ev, "r1", "src", "t", 5 + i);
    }
    sb_ledger_step odd[3] = {{.entry_id = k[0], .last = 1}, {.entry_id = k[2], .last = 1}, {.entry_id = k[4], .last = 1}};
    sb_ledger_steps_done(l, odd, 3);
    sb_ledger_dead(l, k[7], 0, "400");
    sb_ledger_step run[3] = {{.entry_id = k[6], .last = 1}, {.entry_id = k[7], .last = 1}, {.entry_id = k[8], .last = 1}};
    sb_ledger_steps_done(l, run, 3);
    sb_ledger_sync(l);
    counts(l, 1 + 3, 3 + 5, 1);
    char *want = sb_asprintf("4,%lld,%lld,%lld,%lld", (long long)k[1], (long long)k[3], (long long)k[5],
                             (long long)k[7]);
    sql_expect(db, "SELECT group_concat(id) FROM (SELECT id FROM payloads ORDER BY id)", want);
    free(want);
    want = sb_asprintf("%lld", (long long)k[7]);
    sql_expect(db, "SELECT group_concat(id) FROM entries WHERE state = 2", want);
    free(want);
    free(db);
    sb_ledger_close(l);
    g_opts.drop_settled_payload = 0;
}
END_TEST

START_TEST(test_dead_and_dlq)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t a = accept1(l, "d1", "r1", "src", "t", 1);
    int64_t b = accept1(l, "d2", "r2", "src", "t", 2);
    int64_t c = accept1(l, "d3", "r1", "src", "t", 3);
    step_done(l, a, 0, 0, "m", "{\"k\":1}");
    sb_ledger_retry(l, a, 1, 4, 99, "503");
    sb_ledger_dead(l, a, 1, "gave up: 503");
    sb_ledger_dead(l, b, 0, "400 bad request");
    sb_ledger_dead(l, c, 0, "400");
    sb_ledger_sync(l);
    counts(l, 0, 0, 3);

    sb_ledger_filter f = {.state = SB_ENTRY_DEAD};
    json_t *arr = sb_ledger_list(l, &f, err, sizeof err);
    ck_assert_int_eq(json_array_size(arr), 3);
    json_t *first = json_array_get(arr, 2); /* newest first */
    ck_assert_int_eq(json_integer_value(json_object_get(first, "entry_id")), a);
    ck_assert_str_eq(json_string_value(json_object_get(first, "error")), "gave up: 503");
    ck_assert_int_eq(json_integer_value(json_object_get(first, "next_step")), 1);
    json_decref(arr);

    ck_assert_int_eq(sb_ledger_dlq_replay(l, 0, "r1", err, sizeof err), 2);
    ck_assert_int_eq(sb_ledger_dlq_replay(l, a, NULL, err, sizeof err), 0); /* no longer dead */
    counts(l, 2, 0, 1);

    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_take_requeued(l, 1, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], a);
    ck_assert_int_eq(s.next_step[0], 1);
    ck_assert_int_eq(s.attempts[0], 0);
    ck_assert_str_eq(s.added[0], "{\"k\":1}");
    ck_assert_int_eq(sb_ledger_take_requeued(l, 0, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[1], c);
    ck_assert_int_eq(sb_ledger_take_requeued(l, 0, collect, &s), 0);

    json_t *e = sb_ledger_show(l, a, err, sizeof err);
    ck_assert(json_is_false(json_object_get(e, "requeued")));
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "pending");
    json_decref(e);

    /* drop: only dead entries, by id or all */
    ck_assert_int_eq(sb_ledger_dlq_drop(l, a, NULL, err, sizeof err), 0);
    ck_assert_int_eq(sb_ledger_dlq_drop(l, 0, NULL, err, sizeof err), 1);
    ck_assert_ptr_null(sb_ledger_show(l, b, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "no ledger entry"));
    counts(l, 2, 0, 0);
    sb_ledger_close(l);
}
END_TEST

static size_t list_n(sb_ledger *l, sb_ledger_filter f)
{
    char err[256];
    json_t *arr = sb_ledger_list(l, &f, err, sizeof err);
    ck_assert_msg(arr != NULL, "list: %s", err);
    size_t n = json_array_size(arr);
    json_decref(arr);
    return n;
}

START_TEST(test_list_filters)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t a = accept1(l, "l1", "r1", "s1", "orders", 1000);
    int64_t b = accept1(l, "l2", "r1", "s2", "users", 2000);
    int64_t c = accept1(l, "l3", "r2", "s1", "orders", 3000);
    sb_ledger_entry_done(l, c);
    sb_ledger_sync(l);

    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1}), 3);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .route = "r1"}), 2);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .source = "s1"}), 2);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_DONE}), 1);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_PENDING}), 2);
    /* the walk stops at the pending count: one asked, one given, the newest */
    json_t *one = sb_ledger_list(l, &(sb_ledger_filter){.state = SB_ENTRY_PENDING, .limit = 1}, err, sizeof err);
    ck_assert_int_eq(json_array_size(one), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(one, 0), "event_id")), "l2");
    json_decref(one);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_PENDING, .route = "r2"}), 0);
    ck_assert_int_eq(
        list_n(l, (sb_ledger_filter){.state = -1, .field_eq_name = "table", .field_eq_value = "orders"}), 2);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .field_eq_name = "n", .field_eq_value = "7"}), 3);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .field_eq_name = "nope", .field_eq_value = "x"}),
                     0);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .since_us = 2000}), 2);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .until_us = 2000}), 1);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .since_us = 1500, .until_us = 2500}), 1);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = -1, .limit = 2}), 2);

    sb_ledger_filter f = {.state = -1, .route = "r1", .field_eq_name = "table", .field_eq_value = "orders"};
    json_t *arr = sb_ledger_list(l, &f, err, sizeof err);
    ck_assert_int_eq(json_array_size(arr), 1);
    json_t *o = json_array_get(arr, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "entry_id")), a);
    ck_assert_str_eq(json_string_value(json_object_get(o, "event_id")), "l1");
    ck_assert_str_eq(json_string_value(json_object_get(o, "source")), "s1");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "received_us")), 1000);
    ck_assert(json_is_null(json_object_get(o, "error")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "fields"), "table")), "orders");
    json_decref(arr);
    /* none pending: an empty list */
    sb_ledger_entry_done(l, a);
    sb_ledger_entry_done(l, b);
    sb_ledger_sync(l);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_PENDING}), 0);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_DONE}), 3);
    sb_ledger_close(l);
}
END_TEST

START_TEST(test_show_steps)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t id = accept1(l, "s1", "r", "src", "t", 5);
    sb_ledger_step bq = {.entry_id = id, .step = 0, .member = "bq", .attempts = 2, .added_json = "{\"rows\":3}"};
    sb_ledger_steps_done(l, &bq, 1);
    step_done(l, id, 1, 0, "discard", NULL); /* no fields added: no member record */
    sb_ledger_member_done(l, id, 2, "pub_a", 1, NULL);
    sb_ledger_member_done(l, id, 2, "pub_b", 1, "{\"msg\":\"m1\"}");
    sb_ledger_sync(l);
    json_t *e = sb_ledger_show(l, id, err, sizeof err);
    ck_assert_msg(e != NULL, "show: %s", err);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "next_step")), 2);
    json_t *steps = json_object_get(e, "steps");
    ck_assert_int_eq(json_array_size(steps), 4);
    json_t *s0 = json_array_get(steps, 0), *s1 = json_array_get(steps, 1), *s2 = json_array_get(steps, 2),
           *s3 = json_array_get(steps, 3);
    ck_assert_int_eq(json_integer_value(json_object_get(s0, "step")), 0);
    ck_assert_str_eq(json_string_value(json_object_get(s0, "instance")), "bq");
    ck_assert_int_eq(json_integer_value(json_object_get(s0, "attempts")), 2);
    ck_assert_int_gt(json_integer_value(json_object_get(s0, "completed_us")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(s0, "added"), "rows")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(s1, "step")), 1);
    ck_assert(json_is_null(json_object_get(s1, "instance")));
    ck_assert(json_is_null(json_object_get(s1, "attempts")));
    ck_assert(json_is_null(json_object_get(s1, "completed_us")));
    ck_assert(json_is_null(json_object_get(s1, "added")));
    ck_assert_int_eq(json_integer_value(json_object_get(s2, "step")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(s2, "instance")), "pub_a");
    ck_assert(json_is_null(json_object_get(s2, "added")));
    ck_assert_str_eq(json_string_value(json_object_get(s3, "instance")), "pub_b");
    json_decref(e);

    /* done: every step below next_step is listed, recorded or not */
    step_done(l, id, 2, 0, NULL, NULL);
    step_done(l, id, 3, 1, "last", NULL);
    sb_ledger_sync(l);
    e = sb_ledger_show(l, id, err, sizeof err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "done");
    steps = json_object_get(e, "steps");
    ck_assert_int_eq(json_array_size(steps), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(steps, 4), "step")), 3);
    ck_assert(json_is_null(json_object_get(json_array_get(steps, 4), "instance")));
    json_decref(e);
    ck_assert_ptr_null(sb_ledger_show(l, 9999, err, sizeof err));
    sb_ledger_close(l);
}
END_TEST

START_TEST(test_prune)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t a = accept1(l, "x1", "r", "src", "t", 1);
    int64_t b = accept1(l, "x2", "r", "src", "t", 2);
    int64_t c = accept1(l, "x3", "r", "src", "t", 3);
    step_done(l, a, 0, 1, "m", "{}");
    sb_ledger_dead(l, b, 0, "bad");
    sb_ledger_sync(l);
    int64_t now = sb_now_us();
    /* not yet older than the retention */
    ck_assert_int_eq(sb_ledger_prune(l, now), 0);
    counts(l, 1, 1, 1);
    ck_assert_int_eq(sb_ledger_prune(l, now + g_opts.retention_ms * 1000 + 1000), 2);
    counts(l, 1, 0, 0);
    ck_assert_ptr_null(sb_ledger_show(l, a, err, sizeof err));
    json_t *e = sb_ledger_show(l, c, err, sizeof err);
    ck_assert_ptr_nonnull(e);
    json_decref(e);
    sb_ledger_close(l);

    /* members rows went with their entry */
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM members", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(path);
}
END_TEST

/* All of steps[] done at once, as the router reports a batch. */
static void steps_done_run(sb_ledger *l, const int64_t *ids, int from, int to, int step)
{
    sb_ledger_step s[64];
    ck_assert_int_le(to - from, 64);
    for (int i = from; i < to; i++)
        s[i - from] = (sb_ledger_step){.entry_id = ids[i], .step = step, .last = 1};
    sb_ledger_steps_done(l, s, (size_t)(to - from));
}

/* Schema 8: a batch of consecutive entries done at their route's last step
 * is settled by one row of `settled`, not an update of each row. Every
 * read sees them done. A batch that meets entries settled already (by a
 * range, or done or dead in their own rows) updates the pending ones row
 * by row, so no count moves twice; so does a small one. A dead letter or
 * a done for an entry a range settled changes nothing; republishing one
 * folds its range back into the rows first. */
START_TEST(test_settled_ranges)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t ids[100];
    accept_group(l, 0, 64, ids);
    accept_group(l, 64, 36, ids + 64);
    steps_done_run(l, ids, 0, 32, 0);
    sb_ledger_sync(l);
    counts(l, 68, 32, 0);
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    char *want = sb_asprintf("%lld-%lld", (long long)ids[0], (long long)ids[31]);
    sql_expect(path, "SELECT group_concat(first || '-' || last) FROM settled", want);
    free(want);
    sql_expect(path, "SELECT count(*) FROM entries WHERE state = 0", "100"); /* the rows were not written */
    sql_expect(path, "SELECT count(*) || ' ' || sum(state) || ' ' || sum(next_step) FROM entries_now", "100 32 32");
    json_t *e = sb_ledger_show(l, ids[5], err, sizeof err);
    ck_assert_msg(e != NULL, "show: %s", err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "done");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "next_step")), 1);
    int64_t settled_us = json_integer_value(json_object_get(e, "updated_us"));
    ck_assert_int_ne(settled_us, 0);
    json_decref(e);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_DONE, .limit = 200}), 32);
    ck_assert_int_eq(list_n(l, (sb_ledger_filter){.state = SB_ENTRY_PENDING, .limit = 200}), 68);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 1, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], ids[32]);

    /* reported again across the range's end: the 16 pending ones only */
    steps_done_run(l, ids, 16, 48, 0);
    /* done in its own row at an end, done and dead inside (the ends pending) */
    sb_ledger_entry_done(l, ids[48]);
    sb_ledger_entry_done(l, ids[70]);
    sb_ledger_dead(l, ids[85], 0, "bad");
    steps_done_run(l, ids, 48, 64, 0);
    steps_done_run(l, ids, 64, 80, 0);
    steps_done_run(l, ids, 80, 100, 0);
    sb_ledger_sync(l);
    counts(l, 0, 99, 1);
    sql_expect(path, "SELECT count(*) FROM settled", "1");
    /* a dead letter or a done for an entry a range settled: nothing */
    sb_ledger_dead(l, ids[3], 0, "late");
    sb_ledger_entry_done(l, ids[4]);
    sb_ledger_sync(l);
    counts(l, 0, 99, 1);
    sql_expect(path, "SELECT count(*) FROM settled", "1");
    /* a run under SETTLE_RANGE_MIN (16) is updated row by row */
    int64_t few[15];
    accept_group(l, 100, 15, few);
    steps_done_run(l, few, 0, 15, 0);
    sb_ledger_sync(l);
    counts(l, 0, 114, 1);
    sql_expect(path, "SELECT count(*) FROM settled", "1");
    want = sb_asprintf("SELECT count(*) FROM entries WHERE state = 1 AND id >= %lld", (long long)few[0]);
    sql_expect(path, want, "15");
    free(want);
    sql_expect(path, "SELECT count(*) || ' ' || sum(state = 1) || ' ' || sum(state = 2) FROM entries_now", "115 114 1");

    /* republish one: its range becomes rows, the one goes back to pending */
    ck_assert_int_eq(sb_ledger_republish(l, ids[7], 0, err, sizeof err), 1);
    counts(l, 1, 113, 1);
    sql_expect(path, "SELECT count(*) FROM settled", "0");
    sql_expect(path, "SELECT count(*) FROM entries WHERE state = 1", "113");
    sql_expect(path, "SELECT count(*) FROM entries_now WHERE state = 0 AND requeued = 1", "1");
    e = sb_ledger_show(l, ids[6], err, sizeof err); /* folded: the range's values, now in the row */
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "done");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "next_step")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "updated_us")), settled_us);
    json_decref(e);
    steps_done_run(l, ids, 7, 8, 0);
    sb_ledger_sync(l);
    counts(l, 0, 114, 1);
    sb_ledger_close(l);
    free(path);
}
END_TEST

struct id_page {
    int64_t ids[128];
    int n;
};

static int add_id(const sb_ledger_pending *p, void *ud)
{
    struct id_page *pg = ud;
    ck_assert_int_lt(pg->n, 128);
    pg->ids[pg->n++] = p->entry_id;
    return 0;
}

/* Every pending entry, paged as the router's resume pages: `page` at a
 * time from after the last one seen, until a page comes back short. */
static void walk_pages(sb_ledger *l, size_t page, struct id_page *all)
{
    int64_t after = 0;
    all->n = 0;
    for (;;) {
        struct id_page one = {0};
        int got = sb_ledger_foreach_pending(l, NULL, after, page, add_id, &one);
        ck_assert_int_eq(got, one.n);
        for (int i = 0; i < one.n; i++)
            all->ids[all->n++] = one.ids[i];
        if ((size_t)got < page)
            return;
        after = one.ids[one.n - 1];
    }
}

/* The resume's walk steps over the ranges and reads the gaps between
 * them: paged as the router pages it, it finds each pending entry once, in
 * order, and none a range settled. */
START_TEST(test_pending_walk_skips_ranges)
{
    sb_ledger *l = open_ledger();
    int64_t ids[100];
    accept_group(l, 0, 64, ids);
    accept_group(l, 64, 36, ids + 64);
    steps_done_run(l, ids, 0, 32, 0);
    steps_done_run(l, ids, 48, 80, 0);
    steps_done_run(l, ids, 96, 100, 0); /* small: rows updated */
    sb_ledger_sync(l);
    counts(l, 32, 68, 0);
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    sql_expect(path, "SELECT count(*) FROM settled", "2");
    for (size_t page = 1; page <= 40; page += 13) {
        struct id_page all;
        walk_pages(l, page, &all);
        ck_assert_int_eq(all.n, 32);
        for (int i = 0; i < 16; i++)
            ck_assert_int_eq(all.ids[i], ids[32 + i]);
        for (int i = 0; i < 16; i++)
            ck_assert_int_eq(all.ids[16 + i], ids[80 + i]);
    }
    /* from inside a range, and past the last */
    struct id_page pg = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, ids[10], 0, add_id, &pg), 32);
    pg.n = 0;
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, ids[60], 0, add_id, &pg), 16);
    ck_assert_int_eq(pg.ids[0], ids[80]);
    pg.n = 0;
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, ids[99], 0, add_id, &pg), 0);
    /* three ranges side by side (as fan-out makes them): one page of 16 */
    steps_done_run(l, ids, 32, 48, 0);
    sb_ledger_sync(l);
    sql_expect(path, "SELECT count(*) FROM settled", "3");
    for (size_t page = 1; page <= 20; page += 3) {
        struct id_page all;
        walk_pages(l, page, &all);
        ck_assert_int_eq(all.n, 16);
        for (int i = 0; i < 16; i++)
            ck_assert_int_eq(all.ids[i], ids[80 + i]);
    }
    /* a route that has none */
    pg.n = 0;
    ck_assert_int_eq(sb_ledger_foreach_pending(l, "elsewhere", 0, 0, add_id, &pg), 0);
    free(path);
    sb_ledger_close(l);
}
END_TEST

/* A batch of steps made of several runs of ids (a fan-out route's step
 * batch spanning two source batches): each long run settles as a range,
 * the rest row by row. */
START_TEST(test_settled_runs_in_one_batch)
{
    sb_ledger *l = open_ledger();
    int64_t ids[64];
    accept_group(l, 0, 64, ids);
    sb_ledger_step s[64];
    size_t n = 0;
    for (int i = 0; i < 20; i++)
        s[n++] = (sb_ledger_step){.entry_id = ids[i], .last = 1};
    s[n++] = (sb_ledger_step){.entry_id = ids[30], .last = 1};
    s[n++] = (sb_ledger_step){.entry_id = ids[32], .last = 1};
    for (int i = 40; i < 56; i++)
        s[n++] = (sb_ledger_step){.entry_id = ids[i], .last = 1};
    s[n++] = (sb_ledger_step){.entry_id = ids[5], .last = 1}; /* again, in a short run */
    sb_ledger_steps_done(l, s, n);
    sb_ledger_sync(l);
    counts(l, 64 - 38, 38, 0);
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    char *want = sb_asprintf("%lld-%lld,%lld-%lld", (long long)ids[0], (long long)ids[19], (long long)ids[40],
                             (long long)ids[55]);
    sql_expect(path, "SELECT group_concat(first || '-' || last) FROM (SELECT * FROM settled ORDER BY first)", want);
    free(want);
    want = sb_asprintf("%lld,%lld", (long long)ids[30], (long long)ids[32]);
    sql_expect(path, "SELECT group_concat(id) FROM (SELECT id FROM entries WHERE state = 1 ORDER BY id)", want);
    free(want);
    sql_expect(path, "SELECT count(*) FROM entries_now WHERE state = 1", "38");
    free(path);
    sb_ledger_close(l);
}
END_TEST

/* `ledger recover` copies the ranges, and the counts it rebuilds see
 * their entries done. When the ranges cannot be read, their entries say
 * pending again: recover says so, with how many will be sent again. */
START_TEST(test_settled_ranges_recovered)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t ids[64];
    accept_group(l, 0, 64, ids);
    steps_done_run(l, ids, 0, 40, 0);
    sb_ledger_sync(l);
    counts(l, 24, 40, 0);
    sb_ledger_close(l);
    char *dir = sb_asprintf("%s/state", g_dir), *path = sb_asprintf("%s/ledger.db", dir);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ck_assert_msg(sb_ledger_recover(dir, out, err, sizeof err) == 0, "recover: %s", err);
    fclose(out);
    ck_assert_msg(strstr(text, "settled: 1 rows copied") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "WARNING") == NULL, "%s", text);
    free(text);
    sql_expect(path, "SELECT group_concat(state || ':' || entries) FROM counts", "0:24,1:40,2:0");

    /* the ranges unreadable (here: gone) */
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    exec_ok(db, "DROP TABLE settled");
    sqlite3_close(db);
    out = open_memstream(&text, &len);
    ck_assert_msg(sb_ledger_recover(dir, out, err, sizeof err) == 0, "recover: %s", err);
    fclose(out);
    ck_assert_msg(strstr(text, "settled: unreadable") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "WARNING: settled ranges were lost") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "(64 entries say pending now") != NULL, "%s", text);
    free(text);
    sql_expect(path, "SELECT group_concat(state || ':' || entries) FROM counts", "0:64,1:0,2:0");
    free(path);
    free(dir);
}
END_TEST

/* keep_payload: until_settled drops the payload rows a range settles;
 * a range pruned goes with its entries: ids are reused above the largest
 * left, and a new entry given one must be pending, not settled. */
START_TEST(test_settled_ranges_pruned)
{
    g_opts.drop_settled_payload = 1;
    sb_ledger *l = open_ledger();
    char *path = sb_asprintf("%s/state/ledger.db", g_dir);
    int64_t ids[64];
    accept_group(l, 0, 32, ids); /* payload rows of 32: a row per accept */
    accept_group(l, 32, 32, ids + 32);
    steps_done_run(l, ids, 0, 40, 0);
    sb_ledger_sync(l);
    /* the first row held only settled entries: dropped without a look */
    char *want = sb_asprintf("%lld", (long long)ids[32]);
    sql_expect(path, "SELECT group_concat(id) FROM payloads", want);
    free(want);
    steps_done_run(l, ids, 40, 64, 0);
    sb_ledger_sync(l);
    sql_expect(path, "SELECT count(*) FROM payloads", "0"); /* the second row's first entries by the first range */
    counts(l, 0, 64, 0);
    sb_ledger_close(l);
    g_opts.drop_settled_payload = 0;

    /* pruned: the range goes with its entries, so the ids given again
     * (above the largest left: none) are new pending entries */
    l = open_ledger();
    int64_t now = sb_now_us();
    ck_assert_int_eq(sb_ledger_prune(l, now + g_opts.retention_ms * 1000 + 1000), 64);
    counts(l, 0, 0, 0);
    sql_expect(path, "SELECT count(*) FROM settled", "0");
    int64_t again[4];
    accept_group(l, 100, 4, again);
    sb_ledger_sync(l);
    counts(l, 4, 0, 0);
    sql_expect(path, "SELECT count(*) FROM entries_now WHERE state = 0", "4");
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 4);
    sb_ledger_close(l);
    free(path);
}
END_TEST

/* The prune walk goes by id and passes entries it must keep: a pending one
 * and one accepted long ago but settled after the cutoff. */
START_TEST(test_prune_walk_keeps_late_settled)
{
    sb_ledger *l = open_ledger();
    int64_t p = accept1(l, "w1", "r", "src", "t", 1);
    int64_t a = accept1(l, "w2", "r", "src", "t", 2);
    int64_t b = accept1(l, "w3", "r", "src", "t", 3);
    sb_ledger_entry_done(l, b);
    sb_ledger_sync(l);
    usleep(20000);
    int64_t cutoff = sb_now_us();
    usleep(20000);
    sb_ledger_entry_done(l, a);
    int64_t c = accept1(l, "w4", "r", "src", "t", 4);
    sb_ledger_dead(l, c, 0, "bad");
    sb_ledger_sync(l);
    counts(l, 1, 2, 1);

    ck_assert_int_eq(sb_ledger_prune(l, cutoff + g_opts.retention_ms * 1000), 1);
    char err[256];
    ck_assert_ptr_null(sb_ledger_show(l, b, err, sizeof err));
    counts(l, 1, 1, 1);
    ck_assert_int_eq(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), 2);
    counts(l, 1, 0, 0);
    json_t *e = sb_ledger_show(l, p, err, sizeof err);
    ck_assert_ptr_nonnull(e);
    json_decref(e);
    sb_ledger_close(l);
}
END_TEST

/* Done and dead are reached from pending only: a late or repeated state
 * change leaves a settled entry (and the counts) as they are. */
START_TEST(test_settled_entries_stay)
{
    sb_ledger *l = open_ledger();
    char err[256];
    int64_t a = accept1(l, "s1", "r", "src", "t", 1);
    int64_t b = accept1(l, "s2", "r", "src", "t", 2);
    sb_ledger_entry_done(l, a);
    sb_ledger_dead(l, b, 0, "first reason");
    sb_ledger_entry_done(l, a);
    sb_ledger_dead(l, a, 0, "late");
    sb_ledger_entry_done(l, b);
    sb_ledger_dead(l, b, 1, "again");
    sb_ledger_sync(l);
    counts(l, 0, 1, 1);
    json_t *e = sb_ledger_show(l, b, err, sizeof err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "state")), "dead");
    ck_assert_str_eq(json_string_value(json_object_get(e, "error")), "first reason");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "next_step")), 0);
    json_decref(e);
    /* replayed, it can be settled again */
    ck_assert_int_eq(sb_ledger_dlq_replay(l, b, NULL, err, sizeof err), 1);
    counts(l, 1, 1, 0);
    sb_ledger_entry_done(l, b);
    sb_ledger_sync(l);
    counts(l, 0, 2, 0);
    sb_ledger_close(l);
}
END_TEST

/* A ledger written by a version-1 syncbridge (its schema as it created it)
 * opens, is migrated, and keeps working. */
START_TEST(test_migrate_v1)
{
    char *dir = sb_asprintf("%s/state", g_dir);
    char *path = sb_asprintf("%s/ledger.db", dir);
    ck_assert_int_eq(mkdir(dir, 0750), 0);
    int64_t now = sb_now_us(), later = now + 3600 * 1000000LL;
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    exec_ok(db, "PRAGMA journal_mode = WAL;"
                "CREATE TABLE entries(id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, route TEXT NOT NULL,"
                " source TEXT NOT NULL, payload TEXT NOT NULL, received_us INTEGER NOT NULL DEFAULT 0,"
                " state INTEGER NOT NULL DEFAULT 0, next_step INTEGER NOT NULL DEFAULT 0,"
                " attempts INTEGER NOT NULL DEFAULT 0, first_attempt_us INTEGER NOT NULL DEFAULT 0,"
                " next_retry_us INTEGER NOT NULL DEFAULT 0, updated_us INTEGER NOT NULL DEFAULT 0, error TEXT,"
                " requeued INTEGER NOT NULL DEFAULT 0, UNIQUE(event_id, route));"
                "CREATE TABLE members(entry_id INTEGER NOT NULL, step INTEGER NOT NULL, instance TEXT NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0, completed_us INTEGER NOT NULL DEFAULT 0, added TEXT,"
                " PRIMARY KEY(entry_id, step, instance)) WITHOUT ROWID;"
                "CREATE TABLE checkpoints(source TEXT PRIMARY KEY, value TEXT, updated_us INTEGER NOT NULL DEFAULT 0);"
                "CREATE INDEX entries_pending ON entries(id) WHERE state = 0;"
                "CREATE INDEX entries_settled ON entries(updated_us) WHERE state <> 0;"
                "CREATE INDEX entries_dead ON entries(id) WHERE state = 2;"
                "CREATE INDEX entries_requeued ON entries(id) WHERE requeued = 1;"
                "PRAGMA user_version = 1;");
    char *rows = sb_asprintf(
        "INSERT INTO entries(id, event_id, route, source, payload, received_us, state, next_step, updated_us, error)"
        " VALUES (1, 'v1-p', 'r', 'src', '{\"id\":\"v1-p\",\"fields\":{\"table\":\"t\"}}', 1, 0, 1, 10, NULL),"
        " (2, 'v1-d', 'r', 'src', '{\"fields\":{}}', 2, 1, 1, 1000, NULL),"
        " (3, 'v1-x', 'r', 'src', '{\"fields\":{}}', 3, 2, 0, 1000, 'boom'),"
        " (4, 'v1-r', 'r', 'src', '{\"fields\":{}}', 4, 1, 1, %lld, NULL);"
        "INSERT INTO members VALUES (1, 0, 'a', 1, 5, '{\"x\":1}'), (1, 1, 'b', 2, 6, '{\"y\":2}'),"
        " (2, 0, 'a', 1, 7, NULL);"
        "INSERT INTO checkpoints VALUES ('src', 'cp-7', 8);",
        (long long)later);
    exec_ok(db, rows);
    free(rows);
    sqlite3_close(db);

    sb_ledger *l = open_ledger();
    char err[256];
    counts(l, 1, 2, 1);
    char *cp = sb_ledger_checkpoint(l, "src", NULL, NULL, 0);
    ck_assert_str_eq(cp, "cp-7");
    free(cp);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], 1);
    ck_assert_int_eq(s.next_step[0], 1);
    ck_assert_str_eq(s.added[0], "{\"x\":1}");
    ck_assert_str_eq(s.members[0], "[\"b\"]");
    ck_assert_str_eq(s.payload[0], "{\"id\":\"v1-p\",\"fields\":{\"table\":\"t\"}}");
    json_t *e = sb_ledger_show(l, 2, err, sizeof err);
    ck_assert_msg(e != NULL, "show: %s", err);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(e, "steps"), 0), "instance")),
                     "a");
    json_decref(e);

    /* a redelivered v1 event is a duplicate; a new one gets the next id */
    sb_ledger_new again = {.event_id = "v1-p", .route = "r", .payload = "{}"};
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, &again, 1, err, sizeof err), 0);
    ck_assert_int_eq(again.duplicate, 1);
    ck_assert_int_eq(again.entry_id, 1);
    int64_t n = accept1(l, "v2-n", "r", "src", "t", 9);
    ck_assert_int_eq(n, 5);
    counts(l, 2, 2, 1);

    /* v1 entries (no accept time) are pruned by their last update; entry 4
     * was updated after the cutoff, and the new entry ends the walk */
    ck_assert_int_eq(sb_ledger_prune(l, now + g_opts.retention_ms * 1000), 2);
    counts(l, 2, 1, 0);
    ck_assert_ptr_nonnull(e = sb_ledger_show(l, 4, err, sizeof err));
    json_decref(e);
    sb_ledger_entry_done(l, n);
    ck_assert_int_eq(sb_ledger_dlq_replay(l, 0, NULL, err, sizeof err), 0);
    sb_ledger_sync(l);
    counts(l, 1, 2, 0);
    sb_ledger_close(l);

    l = open_ledger(); /* already migrated: opens as it is */
    counts(l, 1, 2, 0);
    sb_ledger_close(l);
    sql_expect(path, "PRAGMA user_version", "9");
    /* version 9: the rows written before hold whole payloads */
    sql_expect(path, "SELECT group_concat(fields_only) FROM payloads", "0,0,0");
    sql_expect(path, "SELECT count(*) FROM sqlite_master WHERE name IN ('settled', 'entries_now')", "2");
    sql_expect(path, "SELECT count(*) FROM step_states", "0");
    sql_expect(path, "SELECT count(*) FROM sqlite_master WHERE name = 'entries_settled'", "0");
    /* version 3: payloads apart, and pruned with their entries */
    sql_expect(path, "SELECT count(*) FROM pragma_table_info('entries') WHERE name = 'payload'", "0");
    sql_expect(path, "SELECT group_concat(id) FROM payloads", "1,4,5");
    sql_expect(path, "SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE tbl_name = 'entries'"
                     " AND type = 'index' AND sql IS NOT NULL ORDER BY name)",
               /* version 6: no index of pending entries; 8: one of the others */
               "entries_dead,entries_not_pending,entries_requeued");
    sql_expect(path, "PRAGMA integrity_check", "ok");
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_prune_many)
{
    sb_ledger *l = open_ledger();
    char err[256];
    enum { N = 12000 }; /* more than one prune chunk */
    sb_ledger_new *e = sb_xcalloc(N, sizeof *e);
    char(*ids)[16] = sb_xcalloc(N, 16);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], 16, "m%d", i);
        e[i] = (sb_ledger_new){.event_id = ids[i], .route = "r", .payload = "{}"};
    }
    ck_assert_msg(sb_ledger_accept(l, "src", NULL, e, N, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < N; i++)
        sb_ledger_entry_done(l, e[i].entry_id);
    sb_ledger_sync(l);
    ck_assert_int_eq(sb_ledger_prune(l, sb_now_us() + g_opts.retention_ms * 1000 + 1000), N);
    counts(l, 0, 0, 0);
    free(e);
    free(ids);
    sb_ledger_close(l);
}
END_TEST

START_TEST(test_reopen)
{
    sb_ledger *l = open_ledger();
    char err[256];
    char *p = payload("r1", "t", 1);
    sb_ledger_new e = {.event_id = "r1", .route = "r", .payload = p, .received_us = 1};
    ck_assert_int_eq(sb_ledger_accept(l, "src", "cp-1", &e, 1, err, sizeof err), 0);
    step_done(l, e.entry_id, 0, 0, "m", "{\"a\":1}");
    /* no sync: close must flush the queue */
    sb_ledger_close(l);

    l = open_ledger();
    char *cp = sb_ledger_checkpoint(l, "src", NULL, NULL, 0);
    ck_assert_str_eq(cp, "cp-1");
    free(cp);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_foreach_pending(l, NULL, 0, 0, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], e.entry_id);
    ck_assert_int_eq(s.next_step[0], 1);
    ck_assert_str_eq(s.added[0], "{\"a\":1}");
    sb_ledger_new again = e;
    ck_assert_int_eq(sb_ledger_accept(l, "src", NULL, &again, 1, err, sizeof err), 0);
    ck_assert_int_eq(again.duplicate, 1);
    free(p);
    sb_ledger_close(l);
}
END_TEST

struct acc_thread {
    sb_ledger *l;
    const char *prefix;
    int rc;
};

static void *acc_main(void *arg)
{
    struct acc_thread *t = arg;
    char err[256];
    for (int b = 0; b < 50 && t->rc == 0; b++) {
        char ids[20][32];
        sb_ledger_new e[20];
        for (int i = 0; i < 20; i++) {
            snprintf(ids[i], sizeof ids[i], "%s-%d", t->prefix, b * 20 + i);
            e[i] = (sb_ledger_new){.event_id = ids[i], .route = "r", .payload = "{}"};
        }
        char cp[16];
        snprintf(cp, sizeof cp, "%d", b);
        if (sb_ledger_accept(t->l, t->prefix, cp, e, 20, err, sizeof err) != 0)
            t->rc = -1;
        for (int i = 0; i < 20; i++)
            if (e[i].duplicate || e[i].entry_id <= 0)
                t->rc = -1;
    }
    return NULL;
}

START_TEST(test_concurrent_accept)
{
    sb_ledger *l = open_ledger();
    struct acc_thread t[2] = {{l, "A", 0}, {l, "B", 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, acc_main, &t[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(t[0].rc, 0);
    ck_assert_int_eq(t[1].rc, 0);
    counts(l, 2000, 0, 0);
    char *a = sb_ledger_checkpoint(l, "A", NULL, NULL, 0), *b = sb_ledger_checkpoint(l, "B", NULL, NULL, 0);
    ck_assert_str_eq(a, "49");
    ck_assert_str_eq(b, "49");
    free(a);
    free(b);
    sb_ledger_close(l);
}
END_TEST

static void crash_child(int wfd)
{
    char err[256];
    char *dir = sb_asprintf("%s/state", g_dir);
    sb_ledger *l = sb_ledger_open(dir, &g_opts, err, sizeof err);
    if (!l)
        _exit(2);
    for (int64_t k = 0;; k += 64) {
        char ids[64][32], cp[32];
        sb_ledger_new e[64];
        for (int i = 0; i < 64; i++) {
            snprintf(ids[i], sizeof ids[i], "c%lld", (long long)(k + i));
            e[i] = (sb_ledger_new){.event_id = ids[i], .route = "r", .payload = "{\"fields\":{}}"};
        }
        snprintf(cp, sizeof cp, "%lld", (long long)(k + 63));
        if (sb_ledger_accept(l, "src", cp, e, 64, err, sizeof err) != 0)
            _exit(3);
        for (int i = 0; i < 64; i += 2) /* some state churn beside the accepts */
            sb_ledger_entry_done(l, e[i].entry_id);
        int64_t last = k + 63;
        if (write(wfd, &last, sizeof last) != sizeof last)
            _exit(4);
    }
}

START_TEST(test_crash_sigkill)
{
    for (int round = 0; round < 3; round++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(fds[1]);
        }
        close(fds[1]);
        /* Kill it mid-stream, once it has committed something: on a loaded
         * machine opening the ledger alone can take longer than the sleep. */
        int64_t last = -1, v;
        if (read(fds[0], &v, sizeof v) == sizeof v)
            last = v;
        usleep(50000 + (useconds_t)sb_rand_below(250000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        while (read(fds[0], &v, sizeof v) == sizeof v)
            last = v;
        close(fds[0]);
        ck_assert_int_ge(last, 0);

        char *path = sb_asprintf("%s/state/ledger.db", g_dir);
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_stmt *st;
        ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        /* every acknowledged event (ids are dense from c0) is there */
        ck_assert_int_eq(sqlite3_prepare_v2(db,
                                            "SELECT count(*) FROM entries WHERE"
                                            " CAST(substr(event_id, 2) AS INTEGER) <= ?1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, last);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int64(st, 0), last + 1);
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(path);

        sb_ledger *l = open_ledger();
        char *cp = sb_ledger_checkpoint(l, "src", NULL, NULL, 0);
        ck_assert_ptr_nonnull(cp);
        ck_assert_int_ge(strtoll(cp, NULL, 10), last);
        free(cp);
        sb_ledger_close(l);
        teardown();
        setup();
    }
}
END_TEST

/* The CLI opens its own handle on the daemon's state dir and replays. */
START_TEST(test_second_handle)
{
    sb_ledger *daemon = open_ledger();
    char err[256];
    int64_t id = accept1(daemon, "h1", "r", "src", "t", 1);
    sb_ledger_dead(daemon, id, 0, "boom");
    sb_ledger_sync(daemon);
    sb_ledger *cli = open_ledger();
    json_t *arr = sb_ledger_list(cli, &(sb_ledger_filter){.state = SB_ENTRY_DEAD}, err, sizeof err);
    ck_assert_int_eq(json_array_size(arr), 1);
    json_decref(arr);
    ck_assert_int_eq(sb_ledger_dlq_replay(cli, id, NULL, err, sizeof err), 1);
    sb_ledger_close(cli);
    accept1(daemon, "h2", "r", "src", "t", 2);
    struct seen s = {0};
    ck_assert_int_eq(sb_ledger_take_requeued(daemon, 10, collect, &s), 1);
    ck_assert_int_eq(s.entry_id[0], id);
    sb_ledger_close(daemon);
}
END_TEST

START_TEST(test_power_policy)
{
    g_opts.fsync = SB_FSYNC_POWER;
    sb_ledger *l = open_ledger();
    int64_t id = accept1(l, "pw", "r", "src", "t", 1);
    sb_ledger_entry_done(l, id);
    sb_ledger_sync(l);
    counts(l, 0, 1, 0);
    sb_ledger_close(l);
    g_opts.fsync = SB_FSYNC_PROCESS;
}
END_TEST

/* The daemon and a CLI command (`runs list` polled by a script) opening a
 * brand-new ledger at the same moment: both switch the file to WAL, and
 * SQLite refuses one of them at once ("database is locked"), without its
 * busy handler, when both hold a read lock and want the write lock. The
 * daemon then failed to start. Both opens must succeed. */
typedef struct racer {
    pthread_barrier_t *go;
    const char *dir;
    sb_ledger *l;
    char err[512];
} racer;

static void *race_open(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->go);
    r->l = sb_ledger_open(r->dir, &g_opts, r->err, sizeof r->err);
    return NULL;
}

START_TEST(test_two_opens_of_a_new_ledger_race)
{
    for (int round = 0; round < 40; round++) {
        char *dir = sb_asprintf("%s/race%d", g_dir, round);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        racer r[2] = {{.go = &go, .dir = dir}, {.go = &go, .dir = dir}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, race_open, &r[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
        for (int i = 0; i < 2; i++) {
            ck_assert_msg(r[i].l != NULL, "round %d, open %d: %s", round, i, r[i].err);
            sb_ledger_close(r[i].l);
        }
        free(dir);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ledger");
    TCase *tc = tcase_create("ledger");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_accept_duplicate_checkpoint);
    tcase_add_test(tc, test_accept_many_rows);
    tcase_add_test(tc, test_accept_rows_stopped_by_duplicate);
    tcase_add_test(tc, test_accept_rows_shared);
    tcase_add_test(tc, test_async_order_and_resume_view);
    tcase_add_test(tc, test_progress_beside_step_state);
    tcase_add_test(tc, test_steps_done_batch);
    tcase_add_test(tc, test_pending_paging);
    tcase_add_test(tc, test_dead_and_dlq);
    tcase_add_test(tc, test_keep_payload_until_settled);
    tcase_add_test(tc, test_payload_groups);
    tcase_add_test(tc, test_payload_fields_only);
    tcase_add_test(tc, test_payload_groups_reused_ids);
    tcase_add_test(tc, test_accept_dead_letter);
    tcase_add_test(tc, test_list_filters);
    tcase_add_test(tc, test_show_steps);
    tcase_add_test(tc, test_prune);
    tcase_add_test(tc, test_settled_ranges);
    tcase_add_test(tc, test_settled_ranges_pruned);
    tcase_add_test(tc, test_settled_ranges_recovered);
    tcase_add_test(tc, test_pending_walk_skips_ranges);
    tcase_add_test(tc, test_settled_runs_in_one_batch);
    tcase_add_test(tc, test_prune_many);
    tcase_add_test(tc, test_prune_walk_keeps_late_settled);
    tcase_add_test(tc, test_settled_entries_stay);
    tcase_add_test(tc, test_migrate_v1);
    tcase_add_test(tc, test_pending_without_payload);
    tcase_add_test(tc, test_reopen);
    tcase_add_test(tc, test_concurrent_accept);
    tcase_add_test(tc, test_crash_sigkill);
    tcase_add_test(tc, test_second_handle);
    tcase_add_test(tc, test_power_policy);
    tcase_add_test(tc, test_two_opens_of_a_new_ledger_race);
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
