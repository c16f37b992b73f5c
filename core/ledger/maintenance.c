/* maintenance.c - retention pruning and the dead-letter commands (drop,
 * replay), each run on the ledger's writer thread through run_call. */
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

/* ---- writer-side maintenance (run via sb_ledger__run_call) ----------- */

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

/* Delete the listed entries with their member records, and their payload
 * rows once no entry of a row is left (or, keep_payload: until_settled,
 * none that is not done); a row that stays is cut back to its last entry
 * left (ledger_internal.h, PAYLOAD_ROW_CUT), and so is a settled range
 * (writer). */
static int delete_entries(sb_ledger *l, struct del_list *d, char *err, size_t errsz)
{
    const char *const sql[] = {
        "DELETE FROM members WHERE entry_id = ?1",
        "DELETE FROM step_states WHERE entry_id = ?1",
        "DELETE FROM entries WHERE id = ?1",
        /* a range left without entries goes; one whose last entry went is
         * cut back to its last one left (ids are reused above the largest) */
        "DELETE FROM settled WHERE first = " SETTLED_RANGE_OF("?1") " AND " SETTLED_RANGE_EMPTY,
        SETTLED_RANGE_CUT("first = " SETTLED_RANGE_OF("?1") " AND last = ?1"),
        l->opts.drop_settled_payload
            ? "DELETE FROM payloads WHERE id = " PAYLOAD_ROW_OF("?1") " AND " PAYLOAD_ROW_SETTLED
            : "DELETE FROM payloads WHERE id = " PAYLOAD_ROW_OF("?1") " AND " PAYLOAD_ROW_UNUSED,
        PAYLOAD_ROW_CUT(PAYLOAD_ROW_HOLDING("?1")),
    };
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
                           "SELECT entries.id, " NOW_STATE ", " NOW_UPDATED_US ", accepted_us FROM " ENTRIES_NOW
                           " WHERE entries.id > ?1 ORDER BY entries.id LIMIT ?2",
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
        if (sb_ledger__run_call(l, prune_fn, &c, err, sizeof err) < 0) {
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
    sb_ledger__bind_text(sel, 2, c->route);
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
    if (sb_ledger__run_call(l, drop_fn, &c, errstr, errstr_size) < 0)
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
    /* The last attempt's progress would show as the new attempt's until its
     * first report: drop it (and a row that held nothing else), keep the
     * plugins' state, which the new attempt resumes from. */
    static const char *const forget[] = {
        "DELETE FROM step_states WHERE state IS NULL AND entry_id IN (SELECT id FROM entries WHERE state = 2"
        " AND (?1 = 0 OR id = ?1) AND (?2 IS NULL OR route = ?2))",
        "UPDATE step_states SET progress = NULL WHERE progress IS NOT NULL AND entry_id IN (SELECT id FROM entries"
        " WHERE state = 2 AND (?1 = 0 OR id = ?1) AND (?2 IS NULL OR route = ?2))",
    };
    for (size_t i = 0; i < sizeof forget / sizeof forget[0]; i++) {
        sqlite3_stmt *f = NULL;
        if (sqlite3_prepare_v2(l->wdb, forget[i], -1, &f, NULL) != SQLITE_OK)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
        sqlite3_bind_int64(f, 1, c->entry_id);
        sb_ledger__bind_text(f, 2, c->route);
        int rc = sqlite3_step(f);
        sqlite3_finalize(f);
        if (rc != SQLITE_DONE)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(l->wdb,
                           "UPDATE entries SET state = 0, attempts = 0, first_attempt_us = 0, next_retry_us = 0,"
                           " requeued = 1, updated_us = ?3 WHERE state = 2 AND (?1 = 0 OR id = ?1)"
                           " AND (?2 IS NULL OR route = ?2)",
                           -1, &st, NULL) != SQLITE_OK)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_bind_int64(st, 1, c->entry_id);
    sb_ledger__bind_text(st, 2, c->route);
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
    if (sb_ledger__run_call(l, replay_fn, &c, errstr, errstr_size) < 0)
        return -1;
    return c.changed;
}

struct republish_ctx {
    int64_t entry_id;
    int step;
    int changed;
};

/* Entry id's row says what a settled range says of it, for all entries
 * of that range, and the range goes: before a change to one of them
 * (writer). Nothing if no range covers it. */
static int fold_range(sb_ledger *l, int64_t id, char *err, size_t errsz)
{
#define COVERING "(SELECT first FROM settled WHERE first = " SETTLED_RANGE_OF("?1") " AND last >= ?1)"
    static const char *const sql[] = {
        "UPDATE entries SET state = 1, next_step = (SELECT next_step FROM settled WHERE first = " COVERING "),"
        " attempts = 0, first_attempt_us = 0, next_retry_us = 0, updated_us = (SELECT updated_us FROM settled"
        " WHERE first = " COVERING ") WHERE id BETWEEN " COVERING " AND (SELECT last FROM settled WHERE first = "
        COVERING ") AND state = 0",
        "DELETE FROM settled WHERE first = " COVERING,
    };
#undef COVERING
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(l->wdb, sql[i], -1, &st, NULL) != SQLITE_OK)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    }
    return 0;
}

/* One statement per state, so that the counts by state stay exact. */
static int republish_fn(sb_ledger *l, void *ctx, char *err, size_t errsz)
{
    struct republish_ctx *c = ctx;
    /* keep_payload: until_settled drops a done entry's payload: nothing to send again */
    sqlite3_stmt *has = NULL;
    if (sqlite3_prepare_v2(l->wdb, "SELECT 1 FROM payloads WHERE " PAYLOAD_ROW_HOLDING("?1"), -1, &has, NULL) !=
        SQLITE_OK)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    sqlite3_bind_int64(has, 1, c->entry_id);
    int found = sqlite3_step(has) == SQLITE_ROW;
    sqlite3_finalize(has);
    if (!found)
        return sb_err(err, errsz,
                      "entry %lld keeps no payload (ledger.keep_payload: until_settled dropped it when it settled), "
                      "so it cannot be sent again; publish the run again from its source",
                      (long long)c->entry_id);
    if (fold_range(l, c->entry_id, err, errsz) != 0)
        return -1;
    static const char *const sql[] = {
        "DELETE FROM members WHERE entry_id = ?1 AND step >= ?2",
        "DELETE FROM step_states WHERE entry_id = ?1 AND step >= ?2",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(l->wdb, sql[i], -1, &st, NULL) != SQLITE_OK)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
        sqlite3_bind_int64(st, 1, c->entry_id);
        sqlite3_bind_int(st, 2, c->step);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    }
    for (int state = SB_ENTRY_DONE; state <= SB_ENTRY_DEAD; state++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(l->wdb,
                               "UPDATE entries SET state = 0, next_step = ?2, attempts = 0, first_attempt_us = 0,"
                               " next_retry_us = 0, error = NULL, requeued = 1, updated_us = ?3"
                               " WHERE id = ?1 AND state = ?4",
                               -1, &st, NULL) != SQLITE_OK)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
        sqlite3_bind_int64(st, 1, c->entry_id);
        sqlite3_bind_int(st, 2, c->step);
        sqlite3_bind_int64(st, 3, sb_now_us());
        sqlite3_bind_int(st, 4, state);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
        int n = sqlite3_changes(l->wdb);
        c->changed += n;
        l->moved[state] -= n;
        l->moved[SB_ENTRY_PENDING] += n;
    }
    return 0;
}

int sb_ledger_republish(sb_ledger *l, int64_t entry_id, int step, char *errstr, size_t errstr_size)
{
    struct republish_ctx c = {.entry_id = entry_id, .step = step};
    if (sb_ledger__run_call(l, republish_fn, &c, errstr, errstr_size) < 0)
        return -1;
    return c.changed;
}
