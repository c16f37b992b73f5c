/* writer.c - the ledger's writer thread (the op queue, group commit), the
 * WAL checkpointer thread, and the write calls that feed them. */
#include "build_config.h"
#include "ledger/ledger_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <syncbridge/log.h>

/* ---- queue ------------------------------------------------------------- */

static size_t arena_put(struct opbuf *b, const char *s, size_t len)
{
    if (!s)
        return NO_STR;
    if (b->alen + len + 1 > b->acap) {
        size_t cap = b->acap ? b->acap : 65536;
        while (cap < b->alen + len + 1)
            cap *= 2;
        b->arena = sb_xrealloc(b->arena, cap);
        b->acap = cap;
    }
    size_t off = b->alen;
    memcpy(b->arena + off, s, len);
    b->arena[off + len] = '\0';
    b->alen += len + 1;
    return off;
}

static const char *arena_str(const struct opbuf *b, size_t off)
{
    return off == NO_STR ? NULL : b->arena + off;
}

void sb_ledger__opbuf_free(struct opbuf *b)
{
    free(b->ops);
    free(b->arena);
}

/* Append op with copies of its strings to b. */
static void buf_push(struct opbuf *b, struct op *op, const char *s1, const char *s2)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 4096;
        b->ops = sb_xrealloc(b->ops, b->cap * sizeof *b->ops);
    }
    op->s1 = arena_put(b, s1, s1 ? strlen(s1) : 0);
    op->s2 = arena_put(b, s2, s2 ? strlen(s2) : 0);
    b->ops[b->n++] = *op;
    if (op->w)
        b->waiters++;
}

/* Append op to the queue (l->mu held). */
static void push_op(sb_ledger *l, struct op *op, const char *s1, const char *s2)
{
    buf_push(&l->in, op, s1, s2);
}

/* Async callers wait while the queue is full (l->mu held). */
static void wait_space(sb_ledger *l)
{
    while (l->in.n >= QUEUE_SOFT_MAX && !l->stopping)
        pthread_cond_wait(&l->space, &l->mu);
}

/* Tell the writer about what was just queued (l->mu held): an idle writer
 * always, a gathering one when a caller waits or the group is full. */
static void wake_writer(sb_ledger *l, int waiting)
{
    if (l->writer_idle || (l->writer_gathering && (waiting || l->in.n >= GATHER_MAX)))
        pthread_cond_signal(&l->work);
}

/* Queue op (strings copied); with a waiter, block until the writer has
 * processed it. */
static void enqueue(sb_ledger *l, struct op *op, const char *s1, const char *s2)
{
    pthread_mutex_lock(&l->mu);
    if (!op->w)
        wait_space(l);
    push_op(l, op, s1, s2);
    wake_writer(l, op->w != NULL);
    if (op->w)
        while (!op->w->done)
            pthread_cond_wait(&l->done_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

int sb_ledger__run_call(sb_ledger *l, call_fn fn, void *ctx, char *err, size_t errsz)
{
    struct op op = {.kind = OP_CALL};
    struct waiter w = {.fn = fn, .ctx = ctx};
    op.w = &w;
    enqueue(l, &op, NULL, NULL);
    if (w.rc < 0)
        sb_err(err, errsz, "%s", w.err);
    return w.rc;
}

/* ---- writer ------------------------------------------------------------ */

static int wstep(sb_ledger *l, int which, char *err, size_t errsz)
{
    sqlite3_stmt *st = l->ws[which];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return sb_err(err, errsz, "%s", sqlite3_errmsg(l->wdb));
    return 0;
}

void sb_ledger__bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* A write transaction of the writer: tx_commit adds the entries it moved
 * between states to `counts` in the same transaction. */
static int tx_begin(sb_ledger *l, char *err, size_t errsz)
{
    memset(l->moved, 0, sizeof l->moved);
    return wstep(l, W_BEGIN, err, errsz);
}

static int tx_commit(sb_ledger *l, char *err, size_t errsz)
{
    for (int state = 0; state < 3; state++) {
        if (!l->moved[state])
            continue;
        sqlite3_stmt *st = l->ws[W_COUNTS_ADD];
        sqlite3_bind_int(st, 1, state);
        sqlite3_bind_int64(st, 2, l->moved[state]);
        if (wstep(l, W_COUNTS_ADD, err, errsz) != 0)
            return -1;
    }
    return wstep(l, W_COMMIT, err, errsz);
}

/* Run the bound state change `which` (its WHERE matches pending entries
 * only) and count the entries it matched as moved to `state`. */
static int settle_step(sb_ledger *l, int which, int state, char *err, size_t errsz)
{
    if (wstep(l, which, err, errsz) != 0)
        return -1;
    int n = sqlite3_changes(l->wdb);
    l->moved[SB_ENTRY_PENDING] -= n;
    l->moved[state] += n;
    return 0;
}

/* An entry's source: its own, else its batch's. */
static const char *entry_source(const struct waiter *w, const sb_ledger_new *e)
{
    return e->source ? e->source : (w->source ? w->source : "");
}

/* Bind an entry's payload as parameter i and its fields_only as i + 1.
 * The caller usually knows the length: strlen of every payload was 3% of
 * the writer's time. */
static void bind_payload(sqlite3_stmt *st, int i, const sb_ledger_new *e)
{
    sqlite3_bind_text(st, i, e->payload, e->payload_len && e->payload_len <= INT_MAX ? (int)e->payload_len : -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(st, i + 1, e->fields_only != 0);
}

/* The id of entry e, found by its identity; 0 if there is none. */
static int64_t find_entry(sb_ledger *l, const sb_ledger_new *e)
{
    sqlite3_stmt *find = l->ws[W_FIND];
    sb_ledger__bind_text(find, 1, e->event_id);
    sb_ledger__bind_text(find, 2, e->route);
    int64_t id = sqlite3_step(find) == SQLITE_ROW ? sqlite3_column_int64(find, 0) : 0;
    sqlite3_reset(find);
    return id;
}

/* a and b are the same text (usually the same pointer: a batch's entries
 * share their route's and source's names). a is not NULL. */
static int same_text(const char *a, const char *b) { return a == b || (b && strcmp(a, b) == 0); }

/* Bind an entry's row of an entries INSERT from parameter *p on. */
static void bind_entry(sqlite3_stmt *st, int *p, const struct waiter *w, const sb_ledger_new *e, int64_t now)
{
    sb_ledger__bind_text(st, (*p)++, e->event_id);
    sb_ledger__bind_text(st, (*p)++, e->route);
    sb_ledger__bind_text(st, (*p)++, entry_source(w, e));
    sqlite3_bind_int64(st, (*p)++, e->received_us);
    sqlite3_bind_int64(st, (*p)++, now); /* updated_us */
    sqlite3_bind_int64(st, (*p)++, now); /* accepted_us */
}

/* Insert the payload row the writer has been filling, if any
 * (payload_row_add). */
static int payload_row_flush(sb_ledger *l, char *err, size_t errsz)
{
    if (!l->group_span)
        return 0;
    sqlite3_stmt *pl = l->ws[W_PAYLOAD_GROUP];
    sqlite3_bind_int64(pl, 1, l->group_first);
    sqlite3_bind_text(pl, 2, l->group.p, (int)l->group.len, SQLITE_STATIC);
    sqlite3_bind_int(pl, 3, l->group_span);
    sqlite3_bind_int(pl, 4, l->group_fields_only);
    l->group_span = 0;
    l->group.len = 0;
    return wstep(l, W_PAYLOAD_GROUP, err, errsz);
}

/* Entry e's payload, which its accept op writes: a line of the row the
 * writer is filling (l->group; schema 7), which goes in when the next
 * line would not fit (PAYLOAD_ROW_TARGET, PAYLOAD_ROW_SPAN_MAX), is not
 * the next entry's, is the other form (fields_only), or the op ends. A
 * payload with a newline of its own (JSON text may have one between its
 * tokens; the text a JSON source's event keeps has none) or too long for
 * a row of several gets a row of its own, whole. */
static int payload_row_add(sb_ledger *l, const sb_ledger_new *e, char *err, size_t errsz)
{
    size_t len = e->payload_len ? e->payload_len : strlen(e->payload);
    int line = len < PAYLOAD_ROW_TARGET && !memchr(e->payload, '\n', len);
    if (l->group_span && (!line || e->entry_id != l->group_first + l->group_span ||
                          (e->fields_only != 0) != l->group_fields_only || l->group.len + 1 + len > PAYLOAD_ROW_TARGET ||
                          l->group_span >= PAYLOAD_ROW_SPAN_MAX))
        if (payload_row_flush(l, err, errsz) != 0)
            return -1;
    if (!line) {
        sqlite3_stmt *pl = l->ws[W_PAYLOAD];
        sqlite3_bind_int64(pl, 1, e->entry_id);
        bind_payload(pl, 2, e);
        return wstep(l, W_PAYLOAD, err, errsz);
    }
    if (l->group_span) {
        sb_strbuf_add(&l->group, "\n", 1);
    } else {
        l->group_first = e->entry_id;
        l->group_fields_only = e->fields_only != 0;
    }
    sb_strbuf_add(&l->group, e->payload, len);
    l->group_span++;
    return 0;
}

/* Entry e was inserted with id `id`: its payload row, its count, and its
 * death at once if it came with a dead_reason. */
static int inserted(sb_ledger *l, sb_ledger_new *e, int64_t id, int64_t now, char *err, size_t errsz)
{
    e->entry_id = id;
    e->duplicate = 0;
    if (payload_row_add(l, e, err, errsz) != 0)
        return -1;
    l->moved[SB_ENTRY_PENDING]++;
    if (e->dead_reason) {
        sqlite3_stmt *dd = l->ws[W_DEAD];
        sqlite3_bind_int64(dd, 1, id);
        sqlite3_bind_int(dd, 2, 0);
        sb_ledger__bind_text(dd, 3, e->dead_reason);
        sqlite3_bind_int64(dd, 4, now);
        if (settle_step(l, W_DEAD, SB_ENTRY_DEAD, err, errsz) != 0)
            return -1;
    }
    return 0;
}

/* Accept one entry: inserted with its payload (and dead at once if it
 * came with a dead_reason), or found to be a duplicate. */
static int accept_one(sb_ledger *l, const struct waiter *w, sb_ledger_new *e, int64_t now, char *err, size_t errsz)
{
    sqlite3_stmt *ins = l->ws[W_INSERT];
    int p = 1;
    bind_entry(ins, &p, w, e, now);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    if (rc != SQLITE_DONE && rc != SQLITE_CONSTRAINT_UNIQUE)
        return sb_err(err, errsz, "insert %s: %s", e->event_id, sqlite3_errmsg(l->wdb));
    if (rc == SQLITE_DONE)
        return inserted(l, e, sqlite3_last_insert_rowid(l->wdb), now, err, errsz);
    e->entry_id = find_entry(l, e);
    if (!e->entry_id)
        return sb_err(err, errsz, "lookup %s: %s", e->event_id, sqlite3_errmsg(l->wdb));
    e->duplicate = 1;
    return 0;
}

/* Accept ROWS_PER_INSERT entries from e with one entries INSERT, their
 * payloads into the payload row being filled (payload_row_add). 1: the
 * entries from e + *taken on must go one by one (one came dead, or one is
 * a duplicate). The INSERT is OR FAIL: a duplicate stops it and the rows
 * before it stay, *taken of them, whose payloads are added here. */
static int accept_rows(sb_ledger *l, const struct waiter *w, sb_ledger_new *e, int64_t now, size_t *taken, char *err,
                       size_t errsz)
{
    *taken = 0;
    const char *route = e[0].route, *source = entry_source(w, &e[0]);
    int shared = route != NULL;
    for (int r = 0; r < ROWS_PER_INSERT; r++) {
        if (e[r].dead_reason)
            return 1;
        if (shared && r && !(same_text(route, e[r].route) && same_text(source, entry_source(w, &e[r]))))
            shared = 0;
    }
    sqlite3_stmt *ins = l->ws[shared ? W_INSERT_ROWS_SHARED : W_INSERT_ROWS];
    if (shared) {
        sqlite3_bind_text(ins, 1, route, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, source, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, now);
        for (int r = 0; r < ROWS_PER_INSERT; r++) {
            sb_ledger__bind_text(ins, 4 + 2 * r, e[r].event_id);
            sqlite3_bind_int64(ins, 5 + 2 * r, e[r].received_us);
        }
    } else {
        for (int r = 0, p = 1; r < ROWS_PER_INSERT; r++)
            bind_entry(ins, &p, w, &e[r], now);
    }
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        int kept = sqlite3_changes(l->wdb);
        if (kept < 0 || kept >= ROWS_PER_INSERT)
            return sb_err(err, errsz, "insert %s and %d more: %d rows kept before the duplicate", e[0].event_id,
                          ROWS_PER_INSERT - 1, kept);
        for (int r = 0; r < kept; r++) {
            int64_t id = find_entry(l, &e[r]);
            if (!id)
                return sb_err(err, errsz, "lookup %s: %s", e[r].event_id, sqlite3_errmsg(l->wdb));
            if (inserted(l, &e[r], id, now, err, errsz) != 0)
                return -1;
        }
        *taken = (size_t)kept;
        return 1;
    }
    if (rc != SQLITE_DONE)
        return sb_err(err, errsz, "insert %s and %d more: %s", e[0].event_id, ROWS_PER_INSERT - 1,
                      sqlite3_errmsg(l->wdb));
    /* One statement's rows get consecutive ids: SQLite gives each new row
     * the largest id in the table plus one (only a table holding the
     * largest possible id makes it choose at random, and ids here count
     * up from 1). Checked on the first row all the same, as payloads and
     * steps are written by id: if it is not so, each row's id is looked up. */
    int64_t first = sqlite3_last_insert_rowid(l->wdb) - (ROWS_PER_INSERT - 1);
    int consecutive = find_entry(l, &e[0]) == first;
    for (int r = 0; r < ROWS_PER_INSERT; r++) {
        e[r].entry_id = consecutive ? first + r : find_entry(l, &e[r]);
        if (!e[r].entry_id)
            return sb_err(err, errsz, "lookup %s: %s", e[r].event_id, sqlite3_errmsg(l->wdb));
        e[r].duplicate = 0;
    }
    for (int r = 0; r < ROWS_PER_INSERT; r++)
        if (payload_row_add(l, &e[r], err, errsz) != 0)
            return -1;
    l->moved[SB_ENTRY_PENDING] += ROWS_PER_INSERT;
    return 0;
}

static int apply_accept(sb_ledger *l, struct waiter *w, int64_t now, char *err, size_t errsz)
{
    size_t i = 0;
    l->group_span = 0; /* what a failed op left: rolled back */
    l->group.len = 0;
    /* Once a group had to go one by one, the rest of the batch does too: a
     * source reading again what it had sent (after a restart) has a
     * duplicate in every group, and each failed group INSERT is wasted. */
    int in_groups = 1;
    while (i < w->n) {
        if (in_groups && w->n - i >= ROWS_PER_INSERT) {
            size_t taken;
            int rc = accept_rows(l, w, &w->entries[i], now, &taken, err, errsz);
            if (rc < 0)
                return -1;
            if (rc == 0) {
                i += ROWS_PER_INSERT;
                continue;
            }
            i += taken;
            in_groups = 0;
        }
        /* the last entries, fewer than a statement's rows, or a group
         * that has a dead or duplicate entry in it */
        size_t end = w->n - i >= ROWS_PER_INSERT ? i + ROWS_PER_INSERT : w->n;
        for (; i < end; i++)
            if (accept_one(l, w, &w->entries[i], now, err, errsz) != 0)
                return -1;
    }
    if (payload_row_flush(l, err, errsz) != 0)
        return -1;
    if (w->checkpoint) {
        sqlite3_stmt *st = l->ws[W_CHECKPOINT];
        sb_ledger__bind_text(st, 1, w->source ? w->source : "");
        sb_ledger__bind_text(st, 2, w->checkpoint);
        sqlite3_bind_int64(st, 3, now);
        if (wstep(l, W_CHECKPOINT, err, errsz) != 0)
            return -1;
    }
    return 0;
}

/* The member record of an OP_MEMBER, or of an OP_STEP with s2 set: s1
 * instance, s2 added. */
static void bind_member(sqlite3_stmt *st, int *p, const struct opbuf *b, const struct op *op)
{
    sqlite3_bind_int64(st, (*p)++, op->entry_id);
    sqlite3_bind_int(st, (*p)++, op->step);
    sb_ledger__bind_text(st, (*p)++, arena_str(b, op->s1));
    sqlite3_bind_int(st, (*p)++, op->attempts);
    sqlite3_bind_int64(st, (*p)++, op->t1);
    sb_ledger__bind_text(st, (*p)++, arena_str(b, op->s2));
}

static int apply_member(sb_ledger *l, const struct opbuf *b, const struct op *op, char *err, size_t errsz)
{
    int p = 1;
    bind_member(l->ws[W_MEMBER], &p, b, op);
    return wstep(l, W_MEMBER, err, errsz);
}

/* OP_STEP ops [from, to) that one statement can apply: the same step, time
 * and `last`, as sb_ledger_steps_done() queues a batch. Returns `to` of
 * the run that starts at from. */
static size_t steps_run(const struct opbuf *b, size_t from, size_t to)
{
    const struct op *first = &b->ops[from];
    size_t i = from + 1;
    while (i < to && b->ops[i].kind == OP_STEP && b->ops[i].step == first->step && b->ops[i].last == first->last &&
           b->ops[i].t1 == first->t1)
        i++;
    return i;
}

/* Append sep and the decimal id to the writer's id list; snprintf took a
 * visible share of the writer's time. */
static void ids_add(sb_strbuf *ids, char sep, int64_t id)
{
    char buf[24];
    buf[0] = sep;
    sb_strbuf_add(ids, buf, 1 + sb_i64_text(buf + 1, id));
}

/* The entries a statement over a run of steps applies to: the ids first
 * to last when they are consecutive, else the JSON array in l->ids. */
typedef struct id_run {
    int consecutive;
    int64_t first, last;
} id_run;

/* Bind the run's ids: ?1 and ?4 of a _RANGE statement, else ?1. */
static void bind_ids(sb_ledger *l, sqlite3_stmt *st, const id_run *ids)
{
    if (ids->consecutive) {
        sqlite3_bind_int64(st, 1, ids->first);
        sqlite3_bind_int64(st, 4, ids->last);
    } else {
        sqlite3_bind_text(st, 1, l->ids.p, (int)l->ids.len, SQLITE_STATIC);
    }
}

/* keep_payload: until_settled: delete the payloads of the entries in ids
 * that are done. */
static int drop_payloads(sb_ledger *l, const id_run *ids, char *err, size_t errsz)
{
    if (!l->opts.drop_settled_payload)
        return 0;
    int which = ids->consecutive ? W_DROP_PAYLOADS_RANGE : W_DROP_PAYLOADS;
    bind_ids(l, l->ws[which], ids);
    return wstep(l, which, err, errsz);
}

/* The route's last step `op->step` of the consecutive entries `ids` is
 * done: settle them as one range (W_SETTLE_RANGE) and drop their payloads
 * (keep_payload: until_settled). 1 if it did, 0 if the range is refused
 * (the caller updates each entry's row instead), -1 on error. */
static int settle_range(sb_ledger *l, const struct op *op, const id_run *ids, char *err, size_t errsz)
{
    sqlite3_stmt *st = l->ws[W_SETTLE_RANGE];
    bind_ids(l, st, ids);
    sqlite3_bind_int(st, 2, op->step);
    sqlite3_bind_int64(st, 3, op->t1);
    if (wstep(l, W_SETTLE_RANGE, err, errsz) != 0)
        return -1;
    if (sqlite3_changes(l->wdb) == 0)
        return 0;
    int64_t n = ids->last - ids->first + 1;
    l->moved[SB_ENTRY_PENDING] -= n;
    l->moved[SB_ENTRY_DONE] += n;
    if (!l->opts.drop_settled_payload)
        return 1;
    bind_ids(l, l->ws[W_DROP_SETTLED_PAYLOADS], ids);
    return wstep(l, W_DROP_SETTLED_PAYLOADS, err, errsz) == 0 ? 1 : -1;
}

/* The route's last step of ops [from, to) is done. Their ids are one run
 * or several (a step's batch that takes the end of one source batch and
 * the start of the next: a route fed with others gets a run of ids per
 * source batch): each run of at least SETTLE_RANGE_MIN consecutive ids
 * settles as a range, and the ids of the others, and of a run whose range
 * is refused, go into l->ids (a JSON array, "]" still to add) for the
 * UPDATE of each row. Returns how many ids it listed, -1 on error. */
static int settle_runs(sb_ledger *l, const struct opbuf *b, size_t from, size_t to, char *err, size_t errsz)
{
    int listed = 0;
    l->ids.len = 0;
    for (size_t i = from; i < to;) {
        size_t end = i + 1;
        while (end < to && b->ops[end].entry_id == b->ops[end - 1].entry_id + 1)
            end++;
        int settled = 0;
        if (end - i >= SETTLE_RANGE_MIN) {
            id_run run = {1, b->ops[i].entry_id, b->ops[end - 1].entry_id};
            settled = settle_range(l, &b->ops[from], &run, err, errsz);
            if (settled < 0)
                return -1;
        }
        for (size_t k = i; k < end && !settled; k++)
            ids_add(&l->ids, listed++ ? ',' : '[', b->ops[k].entry_id);
        i = end;
    }
    return listed;
}

/* The member records of ROWS_PER_INSERT ops with one statement. */
static int apply_member_rows(sb_ledger *l, const struct opbuf *b, const struct op *const *ops, char *err,
                             size_t errsz)
{
    for (int r = 0, p = 1; r < ROWS_PER_INSERT; r++)
        bind_member(l->ws[W_MEMBER_ROWS], &p, b, ops[r]);
    return wstep(l, W_MEMBER_ROWS, err, errsz);
}

static int apply_steps(sb_ledger *l, const struct opbuf *b, size_t from, size_t to, char *err, size_t errsz)
{
    l->ids.len = 0;
    const struct op *first = &b->ops[from];
    id_run ids = {1, first->entry_id, b->ops[to - 1].entry_id};
    for (size_t i = from + 1; i < to && ids.consecutive; i++)
        ids.consecutive = b->ops[i].entry_id == b->ops[i - 1].entry_id + 1;
    const struct op *members[ROWS_PER_INSERT]; /* ops with a member record, not yet written */
    int nmembers = 0;
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (op->s2 != NO_STR) {
            members[nmembers++] = op;
            if (nmembers == ROWS_PER_INSERT) {
                if (apply_member_rows(l, b, members, err, errsz) != 0)
                    return -1;
                nmembers = 0;
            }
        }
        if (!ids.consecutive && !first->last)
            ids_add(&l->ids, i == from ? '[' : ',', op->entry_id);
    }
    for (int k = 0; k < nmembers; k++)
        if (apply_member(l, b, members[k], err, errsz) != 0)
            return -1;
    if (first->last) { /* what no range settled is listed: all of it when ids.consecutive */
        int listed = settle_runs(l, b, from, to, err, errsz);
        if (listed <= 0)
            return listed;
    }
    if (!ids.consecutive)
        sb_strbuf_add(&l->ids, "]", 1);
    int which = first->last ? (ids.consecutive ? W_LAST_STEPS_RANGE : W_LAST_STEPS)
                            : (ids.consecutive ? W_STEPS_RANGE : W_STEPS);
    sqlite3_stmt *st = l->ws[which];
    bind_ids(l, st, &ids);
    sqlite3_bind_int(st, 2, first->step);
    sqlite3_bind_int64(st, 3, first->t1);
    if (!first->last)
        return wstep(l, which, err, errsz);
    if (settle_step(l, which, SB_ENTRY_DONE, err, errsz) != 0)
        return -1;
    return drop_payloads(l, &ids, err, errsz);
}

static int apply_op(sb_ledger *l, const struct opbuf *b, const struct op *op, int64_t now, char *err, size_t errsz)
{
    sqlite3_stmt *st;
    switch (op->kind) {
    case OP_ACCEPT:
        return apply_accept(l, op->w, now, err, errsz);
    case OP_MEMBER:
        return apply_member(l, b, op, err, errsz);
    case OP_ENTRY_DONE:
        st = l->ws[W_ENTRY_DONE];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int64(st, 2, op->t1);
        if (settle_step(l, W_ENTRY_DONE, SB_ENTRY_DONE, err, errsz) != 0)
            return -1;
        return drop_payloads(l, &(id_run){1, op->entry_id, op->entry_id}, err, errsz);
    case OP_RETRY:
        st = l->ws[W_RETRY];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int(st, 2, op->step);
        sqlite3_bind_int(st, 3, op->attempts);
        sqlite3_bind_int64(st, 4, op->t2);
        sqlite3_bind_int64(st, 5, op->t1);
        sb_ledger__bind_text(st, 6, arena_str(b, op->s1));
        return wstep(l, W_RETRY, err, errsz);
    case OP_DEAD:
        st = l->ws[W_DEAD];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int(st, 2, op->step);
        sb_ledger__bind_text(st, 3, arena_str(b, op->s1));
        sqlite3_bind_int64(st, 4, op->t1);
        return settle_step(l, W_DEAD, SB_ENTRY_DEAD, err, errsz);
    case OP_STATE:
        st = l->ws[W_STATE];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int(st, 2, op->step);
        sb_ledger__bind_text(st, 3, arena_str(b, op->s1));
        sb_ledger__bind_text(st, 4, arena_str(b, op->s2));
        sqlite3_bind_int64(st, 5, op->t1);
        return wstep(l, W_STATE, err, errsz);
    case OP_PROGRESS:
        st = l->ws[W_PROGRESS];
        sqlite3_bind_int64(st, 1, op->entry_id);
        sqlite3_bind_int(st, 2, op->step);
        sb_ledger__bind_text(st, 3, arena_str(b, op->s1));
        sb_ledger__bind_text(st, 4, arena_str(b, op->s2));
        sqlite3_bind_int64(st, 5, op->t1);
        return wstep(l, W_PROGRESS, err, errsz);
    case OP_STEP: /* applied in runs by apply_group() */
    case OP_SYNC:
    case OP_CALL:
        return 0;
    }
    return 0;
}

static void rollback(sb_ledger *l)
{
    if (!sqlite3_get_autocommit(l->wdb))
        wstep(l, W_ROLLBACK, NULL, 0);
}

/* Apply ops [from, to) in one transaction; with_accepts = 0 skips accepts. */
static int apply_group(sb_ledger *l, const struct opbuf *b, size_t from, size_t to, int with_accepts, char *err,
                       size_t errsz)
{
    int64_t now = sb_now_us();
    if (tx_begin(l, err, errsz) != 0)
        return -1;
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (!with_accepts && op->kind == OP_ACCEPT)
            continue;
        int rc;
        if (op->kind == OP_STEP) {
            size_t end = steps_run(b, i, to);
            rc = apply_steps(l, b, i, end, err, errsz);
            i = end - 1;
        } else {
            rc = apply_op(l, b, op, now, err, errsz);
        }
        if (rc != 0) {
            rollback(l);
            return -1;
        }
    }
    if (tx_commit(l, err, errsz) != 0) {
        rollback(l);
        return -1;
    }
    return 0;
}

/* Copy the state changes of ops [from, to) (not accepts, syncs or calls)
 * into l->held, without their waiters (a waiter lives only until it is
 * told its result). */
static void hold(sb_ledger *l, const struct opbuf *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        struct op op = b->ops[i];
        /* progress is only shown, and a later report replaces it: not worth holding */
        if (op.kind == OP_ACCEPT || op.kind == OP_SYNC || op.kind == OP_CALL || op.kind == OP_PROGRESS)
            continue;
        op.w = NULL;
        buf_push(&l->held, &op, arena_str(b, b->ops[i].s1), arena_str(b, b->ops[i].s2));
    }
}

static void process_behind_held(sb_ledger *l, const struct opbuf *b, size_t from, size_t to);
static int flush_held(sb_ledger *l);

static void commit_group(sb_ledger *l, const struct opbuf *b, size_t from, size_t to)
{
    if (l->held.n && flush_held(l) != 0) {
        process_behind_held(l, b, from, to);
        return;
    }
    char err[200];
    if (apply_group(l, b, from, to, 1, err, sizeof err) == 0)
        return;
    size_t async = 0;
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (op->kind == OP_ACCEPT) {
            op->w->rc = -1;
            snprintf(op->w->err, sizeof op->w->err, "ledger commit failed: %s", err);
        } else if (op->kind != OP_SYNC) {
            if (op->w) { /* a state saved synchronously: failed unless the second try below works */
                op->w->rc = -1;
                snprintf(op->w->err, sizeof op->w->err, "ledger commit failed: %s", err);
            }
            async++;
        }
    }
    if (!async)
        return;
    /* The accepts are refused (their callers will not acknowledge); the state
     * changes concern entries committed earlier, so give them a second try
     * alone (also when the group held nothing else: the failure may have
     * been transient, e.g. BUSY from another process). */
    if (apply_group(l, b, from, to, 0, err, sizeof err) == 0) {
        for (size_t i = from; i < to; i++)
            if (b->ops[i].kind == OP_STATE && b->ops[i].w)
                b->ops[i].w->rc = 0;
        return;
    }
    /* Dropped, they would leave their entries pending: a restart would
     * deliver them again (a full disk re-delivered thousands). They are
     * held and retried until written, and nothing new is accepted meanwhile. */
    sb_log(NULL, SB_LOG_ERROR,
           "ledger: %zu state change(s) could not be recorded: %s; they are kept and retried, and no new event is "
           "accepted until they are written",
           async, err);
    snprintf(l->held_err, sizeof l->held_err, "%s", err);
    l->held_since_us = sb_now_us();
    l->held_retry_ms = HELD_RETRY_MIN_MS;
    hold(l, b, from, to);
}

/* Write the held state changes: 0 when there are none left. */
static int flush_held(sb_ledger *l)
{
    char err[200];
    if (!l->held.n)
        return 0;
    if (apply_group(l, &l->held, 0, l->held.n, 0, err, sizeof err) != 0) {
        snprintf(l->held_err, sizeof l->held_err, "%s", err);
        if (l->held_retry_ms < HELD_RETRY_MAX_MS)
            l->held_retry_ms = l->held_retry_ms * 2 < HELD_RETRY_MAX_MS ? l->held_retry_ms * 2 : HELD_RETRY_MAX_MS;
        return -1;
    }
    sb_log(NULL, SB_LOG_WARN, "ledger: %zu held state change(s) recorded after %.1f s; accepting again", l->held.n,
           (double)(sb_now_us() - l->held_since_us) / 1e6);
    l->held.n = l->held.alen = l->held.waiters = 0;
    return 0;
}

/* A group that comes while changes are held: its state changes queue up
 * behind them (call order), its accepts are refused. */
static void process_behind_held(sb_ledger *l, const struct opbuf *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        const struct op *op = &b->ops[i];
        if (op->kind == OP_ACCEPT) {
            op->w->rc = -1;
            snprintf(op->w->err, sizeof op->w->err,
                     "ledger cannot record state changes (%.180s); not accepting until it can", l->held_err);
        } else if (op->kind == OP_STATE && op->w) { /* its caller is told now; the state is still written later */
            op->w->rc = -1;
            snprintf(op->w->err, sizeof op->w->err, "ledger commit failed: %.200s", l->held_err);
        }
    }
    hold(l, b, from, to);
}

static void do_call(sb_ledger *l, struct waiter *w)
{
    if (tx_begin(l, w->err, sizeof w->err) != 0) {
        w->rc = -1;
        return;
    }
    w->rc = w->fn(l, w->ctx, w->err, sizeof w->err);
    if (w->rc < 0) {
        rollback(l);
    } else if (tx_commit(l, w->err, sizeof w->err) != 0) {
        rollback(l);
        w->rc = -1;
    }
}

static void process(sb_ledger *l, const struct opbuf *b)
{
    size_t i = 0;
    while (i < b->n) {
        if (b->ops[i].kind == OP_CALL) {
            struct waiter *w = b->ops[i].w;
            if (l->held.n && flush_held(l) != 0) { /* it would run ahead of the held changes: refused too */
                w->rc = -1;
                snprintf(w->err, sizeof w->err, "ledger cannot record state changes (%.180s); try again later",
                         l->held_err);
            } else {
                do_call(l, w);
            }
            i++;
            continue;
        }
        size_t j = i;
        while (j < b->n && b->ops[j].kind != OP_CALL)
            j++;
        commit_group(l, b, i, j);
        i = j;
    }
}

/* ---- checkpoints ---------------------------------------------------------
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses its
 * threshold, on the writer thread: copying the WAL back into the database,
 * and its fsyncs, took a fifth of the writer's time under load. A thread
 * of its own does it instead, woken by the WAL hook, with PASSIVE
 * checkpoints that never block the writer. Under sustained load it may not
 * copy every frame before the next commit (only then can the WAL restart
 * from its beginning), so past CKPT_HARD_BYTES of WAL the writer
 * checkpoints inline as SQLite would have: the WAL stays bounded either
 * way. Past CKPT_SOFT_BYTES every commit wakes the checkpointer (a wake
 * while it runs is one more run, not a queue). Waking it only once per
 * 4 MB of growth saved half its CPU under load, but then it never caught
 * up with the writer, the WAL reached CKPT_HARD_BYTES every few seconds
 * even at 1,000 events/s, and the writer's inline checkpoint (with its
 * fsyncs) put 80-100 ms into the latency run's p99. The hook counts
 * frames; the sizes are bytes converted to the file's page size. */
/* CKPT_SOFT_BYTES and CKPT_HARD_BYTES are in ledger_internal.h: opening
 * the ledger converts them to the file's pages. */

int sb_ledger__wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sb_ledger *l = arg;
    if (frames >= l->ck_hard_frames) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= l->ck_soft_frames) {
        pthread_mutex_lock(&l->ckmu);
        l->ck_wanted = 1;
        pthread_cond_signal(&l->ckcv);
        pthread_mutex_unlock(&l->ckmu);
    }
    return SQLITE_OK;
}

void *sb_ledger__checkpointer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sb-ckpt");
    sb_ledger *l = arg;
    pthread_mutex_lock(&l->ckmu);
    for (;;) {
        while (!l->ck_wanted && !l->ck_stopping)
            pthread_cond_wait(&l->ckcv, &l->ckmu);
        if (l->ck_stopping)
            break;
        l->ck_wanted = 0;
        pthread_mutex_unlock(&l->ckmu);
        int rc = sqlite3_wal_checkpoint_v2(l->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) /* busy: another one is at it */
            sb_log(NULL, SB_LOG_WARN, "ledger: checkpoint: %s", sqlite3_errmsg(l->cdb));
        pthread_mutex_lock(&l->ckmu);
    }
    pthread_mutex_unlock(&l->ckmu);
    return NULL;
}

void *sb_ledger__writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sb-ledger");
    sb_ledger *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (l->in.n == 0 && !l->stopping) {
            l->writer_idle = 1;
            if (l->held.n) { /* retry the held changes when nothing else comes */
                struct timespec dl;
                sb_deadline_in(CLOCK_MONOTONIC, l->held_retry_ms * 1000, &dl);
                int timed_out = pthread_cond_timedwait(&l->work, &l->mu, &dl) == ETIMEDOUT;
                l->writer_idle = 0;
                if (timed_out && l->in.n == 0) {
                    pthread_mutex_unlock(&l->mu);
                    flush_held(l);
                    pthread_mutex_lock(&l->mu);
                }
                continue;
            }
            pthread_cond_wait(&l->work, &l->mu);
            l->writer_idle = 0;
        }
        if (l->in.n == 0) {
            if (l->held.n) { /* closing: a last try, then say what a restart delivers again */
                pthread_mutex_unlock(&l->mu);
                if (flush_held(l) != 0)
                    sb_log(NULL, SB_LOG_ERROR,
                           "ledger: closing with %zu state change(s) not recorded (%s); the entries concerned are "
                           "delivered again after a restart",
                           l->held.n, l->held_err);
                pthread_mutex_lock(&l->mu);
            }
            break;
        }
        /* Only async ops queued: nobody is blocked, so wait a little for
         * more to share the commit. A blocked caller ends the wait. */
        if (!l->stopping && l->in.waiters == 0 && l->in.n < GATHER_MAX && l->opts.commit_interval_ms > 0) {
            struct timespec dl;
            sb_deadline_in(CLOCK_MONOTONIC, l->opts.commit_interval_ms * 1000, &dl); /* `work` uses this clock */
            l->writer_gathering = 1;
            while (!l->stopping && l->in.waiters == 0 && l->in.n < GATHER_MAX)
                if (pthread_cond_timedwait(&l->work, &l->mu, &dl) == ETIMEDOUT)
                    break;
            l->writer_gathering = 0;
        }
        struct opbuf t = l->cur;
        l->cur = l->in;
        l->in = t;
        pthread_cond_broadcast(&l->space);
        pthread_mutex_unlock(&l->mu);

        process(l, &l->cur);

        pthread_mutex_lock(&l->mu);
        if (l->cur.waiters) { /* usually none: step results do not wait */
            for (size_t i = 0; i < l->cur.n; i++)
                if (l->cur.ops[i].w)
                    l->cur.ops[i].w->done = 1;
            pthread_cond_broadcast(&l->done_cv);
        }
        l->cur.n = l->cur.alen = l->cur.waiters = 0;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- writes ------------------------------------------------------------ */

int sb_ledger_accept(sb_ledger *l, const char *source, const char *checkpoint, sb_ledger_new *entries, size_t n,
                     char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++)
        if (!entries[i].event_id || !entries[i].route || !entries[i].payload)
            return sb_err(errstr, errstr_size, "ledger accept: entry %zu lacks event_id, route or payload", i);
    if (n == 0 && !checkpoint)
        return 0;
    struct waiter w = {.source = source, .checkpoint = checkpoint, .entries = entries, .n = n};
    struct op op = {.kind = OP_ACCEPT, .w = &w};
    enqueue(l, &op, NULL, NULL);
    if (w.rc < 0)
        return sb_err(errstr, errstr_size, "%s", w.err);
    return 0;
}

void sb_ledger_member_done(sb_ledger *l, int64_t entry_id, int step, const char *instance, int attempts,
                           const char *added_json)
{
    struct op op = {.kind = OP_MEMBER, .entry_id = entry_id, .step = step, .attempts = attempts,
                    .t1 = sb_now_us()};
    enqueue(l, &op, instance ? instance : "", added_json);
}

void sb_ledger_steps_done(sb_ledger *l, const sb_ledger_step *steps, size_t n)
{
    if (n == 0)
        return;
    int64_t now = sb_now_us();
    pthread_mutex_lock(&l->mu);
    wait_space(l);
    for (size_t i = 0; i < n; i++) {
        const sb_ledger_step *s = &steps[i];
        struct op op = {.kind = OP_STEP, .entry_id = s->entry_id, .step = s->step, .last = s->last,
                        .attempts = s->attempts, .t1 = now};
        /* A single member that added nothing needs no record: resume
         * merges no fields from it and next_step says it is done. */
        const char *added = s->member ? s->added_json : NULL;
        push_op(l, &op, added ? s->member : NULL, added);
    }
    wake_writer(l, 0);
    pthread_mutex_unlock(&l->mu);
}

void sb_ledger_entry_done(sb_ledger *l, int64_t entry_id)
{
    struct op op = {.kind = OP_ENTRY_DONE, .entry_id = entry_id, .t1 = sb_now_us()};
    enqueue(l, &op, NULL, NULL);
}

void sb_ledger_retry(sb_ledger *l, int64_t entry_id, int step, int attempts, int64_t next_retry_us,
                     const char *reason)
{
    struct op op = {.kind = OP_RETRY, .entry_id = entry_id, .step = step, .attempts = attempts,
                    .t1 = sb_now_us(), .t2 = next_retry_us};
    enqueue(l, &op, reason, NULL);
}

void sb_ledger_dead(sb_ledger *l, int64_t entry_id, int step, const char *reason)
{
    struct op op = {.kind = OP_DEAD, .entry_id = entry_id, .step = step, .t1 = sb_now_us()};
    enqueue(l, &op, reason, NULL);
}

int sb_ledger_step_state(sb_ledger *l, int64_t entry_id, int step, const char *member, const char *state_json, int wait,
                         char *errstr, size_t errstr_size)
{
    struct op op = {.kind = OP_STATE, .entry_id = entry_id, .step = step, .t1 = sb_now_us()};
    struct waiter w = {0};
    if (wait)
        op.w = &w;
    enqueue(l, &op, member, state_json);
    if (wait && w.rc < 0)
        return sb_err(errstr, errstr_size, "%s", w.err);
    return 0;
}

void sb_ledger_step_progress(sb_ledger *l, int64_t entry_id, int step, const char *member, uint64_t done,
                             uint64_t total)
{
    char progress[64];
    snprintf(progress, sizeof progress, "{\"done\":%llu,\"total\":%llu}", (unsigned long long)done,
             (unsigned long long)total);
    struct op op = {.kind = OP_PROGRESS, .entry_id = entry_id, .step = step, .t1 = sb_now_us()};
    /* never wait for space: the caller is a transfer's callback. A full
     * queue drops a report, except the final one, which a later one would
     * not replace. */
    pthread_mutex_lock(&l->mu);
    if (l->in.n < QUEUE_SOFT_MAX || (total > 0 && done >= total)) {
        push_op(l, &op, member, progress);
        wake_writer(l, 0);
    }
    pthread_mutex_unlock(&l->mu);
}

void sb_ledger_sync(sb_ledger *l)
{
    struct waiter w = {0};
    struct op op = {.kind = OP_SYNC, .w = &w};
    enqueue(l, &op, NULL, NULL);
}
