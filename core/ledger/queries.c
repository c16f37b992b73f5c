/* queries.c - the ledger's reads: checkpoints, pending entries for resume
 * and replay, `runs list` and `runs show`, counts by state. */
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

/* ---- reads ------------------------------------------------------------- */

char *sb_ledger_checkpoint(sb_ledger *l, const char *source, int *failed, char *errstr, size_t errstr_size)
{
    int dummy;
    failed = failed ? failed : &dummy;
    *failed = 1;
    sqlite3 *db = sb_ledger__reader_get(l, errstr, errstr_size);
    if (!db)
        return NULL;
    char *val = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT value FROM checkpoints WHERE source = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sb_ledger__bind_text(st, 1, source ? source : "");
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            val = sb_strdup((const char *)sqlite3_column_text(st, 0));
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        *failed = 0;
    else
        sb_err(errstr, errstr_size, "reading the checkpoint of %s: %s", source ? source : "", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sb_ledger__reader_put(l, db);
    return val;
}

#define PENDING_COLS                                                                                               \
    "id, event_id, route, source, " ENTRY_PAYLOAD ", next_step, attempts, first_attempt_us, next_retry_us,"        \
    " (SELECT CASE WHEN count(*) THEN json_group_object(member, json(state)) END FROM step_states"                \
    "  WHERE entry_id = id AND step = next_step AND state IS NOT NULL)"

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
        .states_json = (const char *)sqlite3_column_text(st, 9),
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
        json_t *obj = a ? json_loads(a, JSON_ALLOW_NUL, NULL) : NULL; /* a step may add "\u0000" */
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

/* A range read for the resume's walk (cover or next below, which read the
 * well-formed ranges only: a damaged row must not stop the walk moving
 * on): *out gets the id it selects for `id`, 0 if none. Returns SQLITE_DONE
 * or SQLite's error: the walk fails rather than resume, as pending,
 * entries that a range it could not read had settled. */
static int range_read(sqlite3_stmt *st, int64_t id, int64_t *out)
{
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

int sb_ledger_foreach_pending(sb_ledger *l, const char *route, int64_t after_id, size_t limit,
                              int (*cb)(const sb_ledger_pending *p, void *ud), void *ud)
{
    sqlite3 *db = sb_ledger__reader_get(l, NULL, 0);
    if (!db)
        return -1;
    sqlite3_stmt *st = NULL, *mem = NULL, *cover = NULL, *next = NULL;
    int count = -1;
    /* A walk of the entries by id from after_id (schema 6 dropped the index
     * of pending ones): the resume pages through them once. Since schema 8
     * the entries a range settled still say pending in their rows: the walk
     * reads the gaps between ranges only, and steps over each range (a
     * check of each row against the ranges was 5 times slower). One read
     * transaction, so that the ranges and the rows agree. */
    int in_tx = sb_ledger__exec_sql(db, "BEGIN", NULL, 0) == 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT " PENDING_COLS " FROM entries WHERE state = 0 AND id > ?1 AND id <= ?4"
                           " AND (?2 IS NULL OR route = ?2) ORDER BY id LIMIT ?3",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT last FROM settled WHERE first <= ?1 AND last >= first ORDER BY first DESC"
                           " LIMIT 1",
                           -1, &cover, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT first FROM settled WHERE first > ?1 AND last >= first ORDER BY first LIMIT 1",
                           -1, &next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, members_sql, -1, &mem, NULL) != SQLITE_OK) {
        sb_log(NULL, SB_LOG_ERROR, "ledger: %s", sqlite3_errmsg(db));
        goto out;
    }
    sb_ledger__bind_text(st, 2, route);
    count = 0;
    int64_t from = after_id; /* the walk is past this id */
    int rc = SQLITE_DONE, stop = 0;
    while (!stop && (!limit || (size_t)count < limit) && from < INT64_MAX) {
        int64_t skip_to, gap_end; /* the last id of the range covering from + 1; the first of the next one */
        if ((rc = range_read(cover, from + 1, &skip_to)) != SQLITE_DONE)
            break;
        if (skip_to > from) {
            from = skip_to;
            continue;
        }
        if ((rc = range_read(next, from, &gap_end)) != SQLITE_DONE)
            break;
        sqlite3_bind_int64(st, 1, from);
        sqlite3_bind_int64(st, 4, gap_end ? gap_end - 1 : INT64_MAX); /* the gap: from + 1 to this */
        sqlite3_bind_int64(st, 3, limit ? (sqlite3_int64)(limit - (size_t)count) : -1);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            stop = emit_pending(db, st, mem, cb, ud);
            if (stop < 0) {
                count = -1;
                break;
            }
            count++;
            if (stop)
                break;
        }
        sqlite3_reset(st);
        if (count < 0 || (rc != SQLITE_ROW && rc != SQLITE_DONE) || !gap_end)
            break;
        from = gap_end - 1; /* the range at gap_end covers gap_end: the next pass steps over it */
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sb_log(NULL, SB_LOG_ERROR, "ledger: reading pending entries: %s", sqlite3_errmsg(db));
        count = -1;
    }
out:
    sqlite3_finalize(st);
    sqlite3_finalize(mem);
    sqlite3_finalize(cover);
    sqlite3_finalize(next);
    if (in_tx && sb_ledger__exec_sql(db, "COMMIT", NULL, 0) != 0)
        sb_ledger__exec_sql(db, "ROLLBACK", NULL, 0);
    sb_ledger__reader_put(l, db);
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
    sqlite3 *db = sb_ledger__reader_get(l, err, sizeof err);
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
    if (sqlite3_prepare_v2(db, "SELECT " PENDING_COLS " FROM entries WHERE id = ?1", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, members_sql, -1, &mem, NULL) != SQLITE_OK)
        goto out;
    if (sb_ledger__run_call(l, clear_requeued, &ids, err, sizeof err) < 0) {
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
    sb_ledger__reader_put(l, db);
    free(ids.ids);
    return count;
}

static json_t *col_json_text(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? json_string(s) : json_null();
}

/* An entry as it is now (FROM ENTRIES_NOW: a range may have settled it) */
#define LIST_COLS                                                                                                   \
    "entries.id, event_id, route, source, " NOW_STATE ", " NOW_NEXT_STEP ", " NOW_RETRY_COLUMN("attempts") ","     \
    " received_us, " NOW_UPDATED_US ", error, " ENTRY_PAYLOAD ", " NOW_RETRY_COLUMN("first_attempt_us") ","        \
    " " NOW_RETRY_COLUMN("next_retry_us") ", requeued"

static json_t *row_to_json(sqlite3_stmt *st)
{
    json_t *fields = NULL;
    const char *payload = (const char *)sqlite3_column_text(st, 10);
    json_t *doc = payload ? json_loads(payload, JSON_ALLOW_NUL, NULL) : NULL;
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

/* The entries by state from `counts` (kept by the writer) into v[0..2]:
 * 0, or -1 (logged). */
static int read_counts(sqlite3 *db, int64_t v[3])
{
    v[0] = v[1] = v[2] = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT state, entries FROM counts", -1, &st, NULL);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int state = sqlite3_column_int(st, 0);
            if (state >= 0 && state < 3)
                v[state] = sqlite3_column_int64(st, 1);
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_log(NULL, SB_LOG_ERROR, "ledger counts: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
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
    sqlite3 *db = sb_ledger__reader_get(l, errstr, errstr_size);
    if (!db) {
        free(path);
        return NULL;
    }
    json_t *out = NULL;
    sqlite3_stmt *st = NULL;
    /* The state goes into the text, not a parameter: only a literal
     * "state = 2" lets SQLite walk the partial index of dead entries
     * instead of every entry, which `dlq list` did. Pending entries have no
     * index since schema 6: the walk newest first stops once it has as many
     * as `counts` says there are (none: no walk), in the same read
     * transaction, so that a ledger with few pending entries is not read
     * whole for them. */
    char state_cond[64] = "?3 < 0";
    int64_t limit = f->limit ? (int64_t)f->limit : 100;
    int in_tx = 0;
    if (f->state == SB_ENTRY_PENDING) {
        in_tx = sb_ledger__exec_sql(db, "BEGIN", NULL, 0) == 0;
        int64_t v[3];
        if (read_counts(db, v) == 0 && v[SB_ENTRY_PENDING] < limit)
            limit = v[SB_ENTRY_PENDING];
        if (limit == 0) {
            out = json_array();
            goto out;
        }
    }
    /* dead is what the row says; pending and done depend on the ranges too */
    if (f->state == SB_ENTRY_PENDING)
        snprintf(state_cond, sizeof state_cond, "entries.state = 0 AND s.first IS NULL");
    else if (f->state == SB_ENTRY_DONE)
        snprintf(state_cond, sizeof state_cond, "(entries.state = 1 OR s.first IS NOT NULL)");
    else if (f->state >= 0)
        snprintf(state_cond, sizeof state_cond, "entries.state = %d", f->state);
    char sql[4096]; /* about 1,600 bytes */
    snprintf(sql, sizeof sql,
             "SELECT " LIST_COLS " FROM " ENTRIES_NOW " WHERE"
             " (?1 IS NULL OR route = ?1) AND (?2 IS NULL OR source = ?2) AND %s"
             " AND (?4 IS NULL OR CAST(json_extract(" ENTRY_PAYLOAD ", ?4) AS TEXT) = ?5)"
             " AND (?6 = 0 OR received_us >= ?6) AND (?7 = 0 OR received_us < ?7)"
             " ORDER BY entries.id DESC LIMIT ?8",
             state_cond);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sb_err(errstr, errstr_size, "ledger list: %s", sqlite3_errmsg(db));
        goto out;
    }
    sb_ledger__bind_text(st, 1, f->route);
    sb_ledger__bind_text(st, 2, f->source);
    sqlite3_bind_int(st, 3, f->state);
    sb_ledger__bind_text(st, 4, path);
    sb_ledger__bind_text(st, 5, f->field_eq_value ? f->field_eq_value : "");
    sqlite3_bind_int64(st, 6, f->since_us);
    sqlite3_bind_int64(st, 7, f->until_us);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)limit);
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
    if (in_tx)
        sb_ledger__exec_sql(db, "COMMIT", NULL, 0);
    sb_ledger__reader_put(l, db);
    free(path);
    return out;
}

/* A step below next_step without member records: its only member completed
 * it and added no fields, which leaves no record (see OP_STEP). */
static json_t *unrecorded_step(int step)
{
    return json_pack("{s:i, s:n, s:n, s:n, s:n}", "step", step, "instance", "attempts", "completed_us", "added");
}

/* "step_states": what each step's members keep for the entry (plugin ABI
 * 2: the DAG run id, the operation name...), so an operator sees what a
 * waiting step waits for. Returns SQLITE_DONE or the error code. */
static int add_step_states(sqlite3 *db, json_t *o, int64_t entry_id)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT step, member, state, started_us, updated_us, progress FROM step_states"
                                " WHERE entry_id = ?1 ORDER BY step, member",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    json_t *arr = json_array();
    sqlite3_bind_int64(st, 1, entry_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *txt = (const char *)sqlite3_column_text(st, 2);
        json_t *state = txt ? json_loads(txt, JSON_DECODE_ANY, NULL) : NULL;
        const char *ptxt = (const char *)sqlite3_column_text(st, 5);
        json_t *progress = ptxt ? json_loads(ptxt, 0, NULL) : NULL;
        json_array_append_new(arr, json_pack("{s:i, s:o, s:o, s:o, s:I, s:I}", "step", sqlite3_column_int(st, 0),
                                             "member", col_json_text(st, 1), "state", state ? state : json_null(),
                                             "progress", progress ? progress : json_null(), "started_us",
                                             (json_int_t)sqlite3_column_int64(st, 3), "updated_us",
                                             (json_int_t)sqlite3_column_int64(st, 4)));
    }
    sqlite3_finalize(st);
    json_object_set_new(o, "step_states", arr);
    return rc;
}

json_t *sb_ledger_show(sb_ledger *l, int64_t entry_id, char *errstr, size_t errstr_size)
{
    sqlite3 *db = sb_ledger__reader_get(l, errstr, errstr_size);
    if (!db)
        return NULL;
    json_t *o = NULL;
    sqlite3_stmt *st = NULL, *mem = NULL;
    if (sqlite3_prepare_v2(db, "SELECT " LIST_COLS " FROM " ENTRIES_NOW " WHERE entries.id = ?1", -1, &st, NULL) !=
            SQLITE_OK ||
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
        json_t *added = a ? json_loads(a, JSON_ALLOW_NUL, NULL) : NULL;
        json_object_set_new(s, "added", added ? added : json_null());
        json_array_append_new(steps, s);
    }
    for (; unlisted < next_step; unlisted++)
        json_array_append_new(steps, unrecorded_step(unlisted));
    json_object_set_new(o, "steps", steps);
    if (rc == SQLITE_DONE)
        rc = add_step_states(db, o, entry_id);
    if (rc != SQLITE_DONE) {
        sb_err(errstr, errstr_size, "ledger show: %s", sqlite3_errmsg(db));
        json_decref(o);
        o = NULL;
    }
out:
    sqlite3_finalize(st);
    sqlite3_finalize(mem);
    sb_ledger__reader_put(l, db);
    return o;
}

int sb_ledger_counts(sb_ledger *l, int64_t *pending, int64_t *done, int64_t *dead)
{
    sqlite3 *db = sb_ledger__reader_get(l, NULL, 0);
    if (!db)
        return -1;
    int64_t v[3];
    int rc = read_counts(db, v);
    sb_ledger__reader_put(l, db);
    if (rc != 0)
        return -1;
    if (pending)
        *pending = v[SB_ENTRY_PENDING];
    if (done)
        *done = v[SB_ENTRY_DONE];
    if (dead)
        *dead = v[SB_ENTRY_DEAD];
    return 0;
}
