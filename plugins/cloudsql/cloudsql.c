/*
 * cloudsql - sink: run one parameterised SQL statement per event through
 * unixODBC: Cloud SQL for PostgreSQL or MySQL (through the Cloud SQL Auth
 * Proxy or a private IP), any on-prem database with an ODBC driver, or
 * SQLite on a node with no server.
 *
 * Statement. `statement` holds named placeholders (:run_id); they become
 * "?" markers (sqltext.c) and each is bound with SQLBindParameter, typed
 * from the event's value (params.c). Event data never enters the SQL text.
 * Idempotency is the statement's job: an upsert keyed on the event (the
 * README has one for PostgreSQL, MySQL/MariaDB and SQLite), because a step
 * runs again after a crash between the commit and its record in the ledger,
 * or after a commit whose answer was lost.
 *
 * Batches. A batch is one transaction: the statement is executed for every
 * event, then committed. A single-row INSERT ... VALUES (...) whose
 * placeholders are all in its row is sent as multi-row INSERTs (one row per
 * event, up to CS_MULTI_MAX_ROWS per statement): the server parses and plans
 * one statement instead of one per row, which is most of its cost per row.
 * Other statements go with array binding (SQL_ATTR_PARAMSET_SIZE) where the
 * driver takes it and the batch's values have one type per placeholder, else
 * row by row. When a row is refused (constraint, syntax, data: SQLSTATE
 * 21/22/23/42/...), the transaction is rolled back and the batch split in
 * halves, each in its own transaction, down to the single event that fails
 * (FAIL with the SQLSTATE, native error and message); its neighbours are
 * committed. A duplicate key is OK when duplicate_is_success is set.
 *
 * Connections. One per worker thread (worker_init), opened by the first
 * batch, with SQL_ATTR_LOGIN_TIMEOUT; statements carry
 * SQL_ATTR_QUERY_TIMEOUT. A connection error (08xxx, or the driver saying
 * the connection is dead) drops the connection and RETRYs the batch's
 * events; reconnecting waits an exponential backoff (up to reconnect_max),
 * which batches arriving earlier are given as their Retry-After.
 * Serialization failures, deadlocks and timeouts RETRY on the same
 * connection. Nothing is acknowledged before its commit succeeded.
 *
 * Secrets. `connection` usually gets its password through ${file:} or
 * ${env:}. The connection string is never logged or put in a reason: what
 * the sink shows has the values of PWD, PASSWORD and other secret-looking
 * keys replaced by [REDACTED], and every diagnostic is scrubbed of them.
 *
 * Threading: SB_PLUGIN_CONCURRENT. The instance is read-only after start()
 * except for the worker list and the create_table flag, under `mu`; each
 * worker's handles are used by its own thread, and by cancel() (SQLCancel,
 * which ODBC allows from another thread) under `mu`.
 */
#include <syncbridge/syncbridge.h>

#include "diag.h"
#include "params.h"
#include "sqltext.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sql.h>
#include <sqlext.h>

/* Array binding allocates one slot per row of the longest value of each
 * placeholder, and a multi-row INSERT's values go in one message; past this
 * many bytes for a batch, rows go one at a time. */
#define CS_ARRAY_MAX_BYTES (16u << 20)
#define CS_BACKOFF_FIRST_MS 200
/* Multi-row INSERTs: at most this many rows, and placeholders (SQLite's
 * default limit before 3.32 is 999), per statement. */
#define CS_MULTI_MAX_ROWS 256
#define CS_MULTI_MAX_MARKERS 999
/* multi-row statements kept prepared per worker, by row count */
#define CS_MULTI_SLOTS 4

static const char *const isolations[] = {"default", "read_uncommitted", "read_committed", "repeatable_read",
                                         "serializable", NULL};
static const SQLULEN isolation_attr[] = {0, SQL_TXN_READ_UNCOMMITTED, SQL_TXN_READ_COMMITTED,
                                         SQL_TXN_REPEATABLE_READ, SQL_TXN_SERIALIZABLE};

typedef struct cs_conf {
    const char *connection;
    const char *statement;
    const char *create_table;
    int isolation;
    int duplicate_is_success;
    int array_binding;
    int multi_row;
    int64_t login_timeout_ms;
    int64_t query_timeout_ms;
    int64_t reconnect_max_ms;
    const char *registry_query;
} cs_conf;

static const sb_option_def options[] = {
    {SB_OPT("connection", SB_OPT_STRING, NULL, 1,
            "ODBC connection string (\"DRIVER=PostgreSQL;SERVER=127.0.0.1;PORT=5432;DATABASE=registry;UID=sb;"
            "PWD=${file:/etc/syncbridge/db.pw}\") or a DSN name from odbc.ini. Secrets through ${file:} or ${env:}; "
            "never logged."),
     SB_OPT_BIND(cs_conf, connection)},
    {SB_OPT("statement", SB_OPT_STRING, NULL, 1,
            "SQL run once per event, with named placeholders (:run_id, :command) bound from the event's fields "
            "(and :sb_event_id, :sb_source, :sb_received_at); make it an upsert so that a replay changes nothing."),
     SB_OPT_BIND(cs_conf, statement)},
    {SB_OPT("create_table", SB_OPT_STRING, NULL, 0,
            "DDL run once, on the first connection (for demos), e.g. CREATE TABLE IF NOT EXISTS ..."),
     SB_OPT_BIND(cs_conf, create_table)},
    {SB_OPT("isolation", SB_OPT_STRING, "\"default\"", 0, "Transaction isolation level (\"default\": the driver's)."),
     SB_OPT_CHOICES(isolations), SB_OPT_BIND(cs_conf, isolation)},
    {SB_OPT("duplicate_is_success", SB_OPT_BOOL, "false", 0,
            "A duplicate-key error means the row is already there: OK instead of FAIL (for plain INSERTs)."),
     SB_OPT_BIND(cs_conf, duplicate_is_success)},
    {SB_OPT("array_binding", SB_OPT_BOOL, "true", 0,
            "Send a batch with one execute (SQL_ATTR_PARAMSET_SIZE) where the driver supports it; false: row by "
            "row (still one transaction)."),
     SB_OPT_BIND(cs_conf, array_binding)},
    {SB_OPT("multi_row", SB_OPT_BOOL, "true", 0,
            "Send a batch as INSERT ... VALUES (...), (...), ... (up to 256 rows and 999 placeholders a statement) "
            "when the statement is a single-row INSERT ... VALUES with every placeholder in its row; false: array "
            "binding or row by row. A statement-level trigger then fires once per statement, not per event."),
     SB_OPT_BIND(cs_conf, multi_row)},
    {SB_OPT("login_timeout", SB_OPT_DURATION, "\"10s\"", 0, "SQL_ATTR_LOGIN_TIMEOUT (whole seconds, rounded up)."),
     SB_OPT_RANGE_BIND(1000, 3600000, cs_conf, login_timeout_ms)},
    {SB_OPT("query_timeout", SB_OPT_DURATION, "\"30s\"", 0,
            "SQL_ATTR_QUERY_TIMEOUT per execute and commit (whole seconds, rounded up); a timeout RETRYs."),
     SB_OPT_RANGE_BIND(1000, 3600000, cs_conf, query_timeout_ms)},
    {SB_OPT("reconnect_max", SB_OPT_DURATION, "\"30s\"", 0,
            "Longest wait between attempts to reconnect (the backoff starts at 200ms and doubles)."),
     SB_OPT_RANGE_BIND(100, 3600000, cs_conf, reconnect_max_ms)},
    {SB_OPT("registry_query", SB_OPT_STRING, NULL, 0,
            "For `syncbridge reconcile`: a SELECT giving the registry rows as (id, source, timestamp), e.g. "
            "\"SELECT id, source, timestamp FROM runs\" (a WHERE bounding the time keeps it short; rows before "
            "--since are ignored anyway). Unset: this instance is not compared."),
     SB_OPT_BIND(cs_conf, registry_query)},
    {0}};

typedef struct cs_worker cs_worker;

typedef struct cloudsql {
    sb_instance *ins;
    const cs_conf *c;
    char *connstr;    /* for SQLDriverConnect only */
    char *shown_conn; /* redacted, for logs */
    char **secrets;
    sql_stmt st;
    size_t multi_max; /* rows per multi-row INSERT; 0: not used */
    SQLHENV env;
    pthread_mutex_t mu;
    int ddl_done;
    cs_worker *workers;
} cloudsql;

struct cs_worker {
    cloudsql *cs;
    SQLHDBC dbc;
    SQLHSTMT stmt;
    int arrays;          /* the driver takes SQL_ATTR_PARAMSET_SIZE > 1 */
    int ts_as_text;      /* in arrays, timestamps go as text (MariaDB's driver, below) */
    /* multi-row INSERTs prepared on this connection, by row count (a steady
     * batch size needs one or two); slots are reused round robin */
    SQLHSTMT multi[CS_MULTI_SLOTS];
    size_t multi_rows[CS_MULTI_SLOTS];
    unsigned multi_next;
    int multi_refused;   /* the server refused the multi-row form: not tried again on this connection */
    int failures;        /* connection attempts failed in a row */
    int64_t next_try_ms; /* monotonic: no reconnect before this */
    char *last_error;    /* why the last connection attempt failed (redacted) */
    cs_worker *next;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static SQLULEN secs(int64_t ms) { return (SQLULEN)((ms + 999) / 1000); }

/* ---- lifecycle ------------------------------------------------------------ */

static void drop_connection_locked(cs_worker *w, int locked);

static void cs_destroy(void *self)
{
    cloudsql *cs = self;
    if (!cs)
        return;
    /* After a FATAL the core destroys and re-creates the instance while
     * workers still hold their states (their worker_fini comes later):
     * close their connections now, or the environment could not be freed,
     * and cut them loose from this instance. */
    pthread_mutex_lock(&cs->mu);
    for (cs_worker *w = cs->workers; w; w = w->next) {
        if (w->dbc)
            SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_ROLLBACK);
        drop_connection_locked(w, 1);
        w->cs = NULL;
    }
    cs->workers = NULL;
    pthread_mutex_unlock(&cs->mu);
    if (cs->env)
        SQLFreeHandle(SQL_HANDLE_ENV, cs->env);
    sql_stmt_free(&cs->st);
    free(cs->connstr);
    free(cs->shown_conn);
    conn_secrets_free(cs->secrets);
    pthread_mutex_destroy(&cs->mu);
    free(cs);
}

static int cs_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    cloudsql *cs = calloc(1, sizeof *cs);
    if (!cs)
        return sb_err(errstr, errstr_size, "out of memory");
    pthread_mutex_init(&cs->mu, NULL);
    cs->ins = ins;
    cs->c = sb_instance_config(ins);
    if (!cs->c->connection[0]) {
        cs_destroy(cs);
        return sb_err(errstr, errstr_size, "option connection: empty; give an ODBC connection string or a DSN name");
    }
    cs->connstr = conn_string(cs->c->connection);
    cs->secrets = conn_secrets(cs->c->connection);
    cs->shown_conn = redact(cs->connstr, cs->secrets);
    char perr[256];
    if (sql_stmt_parse(&cs->st, cs->c->statement, perr, sizeof perr) != 0) {
        cs_destroy(cs);
        return sb_err(errstr, errstr_size, "option %s", perr);
    }
    if (cs->st.n_markers == 0) {
        cs_destroy(cs);
        return sb_err(errstr, errstr_size,
                      "option statement: no named placeholder (:field); the statement would write the same row for "
                      "every event");
    }
    if (cs->c->multi_row && cs->st.row_end) {
        cs->multi_max = CS_MULTI_MAX_MARKERS / cs->st.n_markers;
        if (cs->multi_max > CS_MULTI_MAX_ROWS)
            cs->multi_max = CS_MULTI_MAX_ROWS;
        if (cs->multi_max < 2)
            cs->multi_max = 0;
    }
    *self = cs;
    return 0;
}

static int cs_start(void *self, char *errstr, size_t errstr_size)
{
    cloudsql *cs = self;
    /* the environment only: connections are opened by the workers, lazily,
     * so that a database that is down delays events but not the daemon */
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_ENV, SQL_NULL_HANDLE, &cs->env)) ||
        !SQL_SUCCEEDED(SQLSetEnvAttr(cs->env, SQL_ATTR_ODBC_VERSION, (SQLPOINTER)SQL_OV_ODBC3, 0)))
        return sb_err(errstr, errstr_size, "cannot allocate an ODBC environment (unixODBC)");
    return 0;
}

/* ---- connections ------------------------------------------------------------ */

/* Close a worker's connection. `locked`: the caller holds w->cs->mu. */
static void drop_connection_locked(cs_worker *w, int locked)
{
    cloudsql *cs = w->cs;
    if (cs && !locked)
        pthread_mutex_lock(&cs->mu); /* cancel() may be calling SQLCancel on stmt */
    SQLHSTMT stmt = w->stmt, multi[CS_MULTI_SLOTS];
    SQLHDBC dbc = w->dbc;
    memcpy(multi, w->multi, sizeof multi);
    memset(w->multi, 0, sizeof w->multi);
    memset(w->multi_rows, 0, sizeof w->multi_rows);
    w->multi_refused = 0; /* the next connection tries again */
    w->stmt = SQL_NULL_HSTMT;
    w->dbc = SQL_NULL_HDBC;
    if (cs && !locked)
        pthread_mutex_unlock(&cs->mu);
    for (int i = 0; i < CS_MULTI_SLOTS; i++)
        if (multi[i])
            SQLFreeHandle(SQL_HANDLE_STMT, multi[i]);
    if (stmt)
        SQLFreeHandle(SQL_HANDLE_STMT, stmt);
    if (dbc) {
        SQLDisconnect(dbc);
        SQLFreeHandle(SQL_HANDLE_DBC, dbc);
    }
}

static void drop_connection(cs_worker *w)
{
    drop_connection_locked(w, 0);
}

/* Run the create_table DDL once per instance, on the first connection. A
 * data-class error (it exists, the DDL is wrong) is logged and not tried
 * again: the statement's own errors will say more. 0, or -1 (connection
 * trouble: try again with the next connection). */
static int run_ddl(cs_worker *w, diag *d)
{
    cloudsql *cs = w->cs;
    pthread_mutex_lock(&cs->mu);
    int done = cs->ddl_done || !cs->c->create_table;
    pthread_mutex_unlock(&cs->mu);
    if (done)
        return 0;
    SQLHSTMT s;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, w->dbc, &s))) {
        diag_read(d, SQL_HANDLE_DBC, w->dbc, "SQLAllocHandle(statement) failed");
        return -1;
    }
    SQLSetStmtAttr(s, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)(uintptr_t)secs(cs->c->query_timeout_ms), 0);
    SQLRETURN rc = SQLExecDirect(s, (SQLCHAR *)cs->c->create_table, SQL_NTS);
    if (rc == SQL_ERROR)
        diag_read(d, SQL_HANDLE_STMT, s, "SQLExecDirect(create_table) failed");
    SQLFreeHandle(SQL_HANDLE_STMT, s);
    if (rc != SQL_ERROR && !SQL_SUCCEEDED(SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_COMMIT))) {
        diag_read(d, SQL_HANDLE_DBC, w->dbc, "commit of create_table failed");
        rc = SQL_ERROR;
    }
    if (rc == SQL_ERROR) {
        SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_ROLLBACK);
        diag_class k = diag_classify(d);
        if (k == DIAG_CONN || k == DIAG_TRANSIENT)
            return -1;
        char *why = redact(d->text, cs->secrets);
        sb_log(cs->ins, SB_LOG_WARN, "create_table failed, not tried again: %s", why);
        free(why);
        memset(d, 0, sizeof *d);
    } else {
        sb_log(cs->ins, SB_LOG_INFO, "create_table done");
    }
    pthread_mutex_lock(&cs->mu);
    cs->ddl_done = 1;
    pthread_mutex_unlock(&cs->mu);
    return 0;
}

/* Open w's connection and prepare the statement. 0, or -1 with the
 * diagnostics in *d, or -2 when the server refused the statement itself. */
static int open_connection(cs_worker *w, diag *d)
{
    cloudsql *cs = w->cs;
    const cs_conf *c = cs->c;
    SQLHDBC dbc;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_DBC, cs->env, &dbc))) {
        diag_read(d, SQL_HANDLE_ENV, cs->env, "SQLAllocHandle(connection) failed");
        return -1;
    }
    SQLSetConnectAttr(dbc, SQL_ATTR_LOGIN_TIMEOUT, (SQLPOINTER)(uintptr_t)secs(c->login_timeout_ms), 0);
    SQLCHAR out[1024];
    SQLSMALLINT outlen;
    SQLRETURN rc = SQLDriverConnect(dbc, NULL, (SQLCHAR *)cs->connstr, SQL_NTS, out, sizeof out, &outlen,
                                    SQL_DRIVER_NOPROMPT);
    if (!SQL_SUCCEEDED(rc)) {
        diag_read(d, SQL_HANDLE_DBC, dbc, "SQLDriverConnect failed");
        d->conn_lost = 1;
        SQLFreeHandle(SQL_HANDLE_DBC, dbc);
        return -1;
    }
    pthread_mutex_lock(&cs->mu);
    w->dbc = dbc;
    pthread_mutex_unlock(&cs->mu);
    if (!SQL_SUCCEEDED(SQLSetConnectAttr(dbc, SQL_ATTR_AUTOCOMMIT, (SQLPOINTER)SQL_AUTOCOMMIT_OFF, 0))) {
        diag_read(d, SQL_HANDLE_DBC, dbc, "the driver cannot turn autocommit off");
        d->conn_lost = 1; /* not the events' fault: retry */
        drop_connection(w);
        return -1;
    }
    if (c->isolation > 0 &&
        !SQL_SUCCEEDED(SQLSetConnectAttr(dbc, SQL_ATTR_TXN_ISOLATION,
                                         (SQLPOINTER)(uintptr_t)isolation_attr[c->isolation], 0))) {
        diag_read(d, SQL_HANDLE_DBC, dbc, "the driver refuses the isolation level");
        d->conn_lost = 1;
        drop_connection(w);
        return -1;
    }
    if (run_ddl(w, d) != 0) {
        drop_connection(w);
        return -1;
    }
    SQLHSTMT stmt;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, dbc, &stmt))) {
        diag_read(d, SQL_HANDLE_DBC, dbc, "SQLAllocHandle(statement) failed");
        drop_connection(w);
        return -1;
    }
    pthread_mutex_lock(&cs->mu);
    w->stmt = stmt;
    pthread_mutex_unlock(&cs->mu);
    SQLSetStmtAttr(stmt, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)(uintptr_t)secs(c->query_timeout_ms), 0);
    if (!SQL_SUCCEEDED(SQLPrepare(stmt, (SQLCHAR *)cs->st.sql, SQL_NTS))) {
        /* drivers that prepare on the server (MariaDB) say here what
         * others say at the first execute: a missing table, bad syntax */
        diag_read(d, SQL_HANDLE_STMT, stmt, "SQLPrepare failed");
        SQLEndTran(SQL_HANDLE_DBC, dbc, SQL_ROLLBACK);
        drop_connection(w);
        diag_class k = diag_classify(d);
        return k == DIAG_DATA || k == DIAG_DUPLICATE ? -2 : -1;
    }
    /* array binding: the driver either takes a paramset size of 2 as is,
     * or says it changed it (01S02) or cannot (HYC00) */
    w->arrays = 0;
    if (c->array_binding) {
        SQLULEN got = 0;
        if (SQLSetStmtAttr(stmt, SQL_ATTR_PARAMSET_SIZE, (SQLPOINTER)2, 0) == SQL_SUCCESS &&
            SQL_SUCCEEDED(SQLGetStmtAttr(stmt, SQL_ATTR_PARAMSET_SIZE, &got, 0, NULL)) && got == 2)
            w->arrays = 1;
        SQLSetStmtAttr(stmt, SQL_ATTR_PARAMSET_SIZE, (SQLPOINTER)1, 0);
        /* MariaDB Connector/ODBC (3.1.15) loses 40 bytes (a MYSQL_TIME)
         * per row for each SQL_C_TYPE_TIMESTAMP value in a parameter array,
         * and nothing for text or numbers or row by row (ASan, every order
         * of resets and statement attributes tried): its arrays carry
         * timestamps as text, which the server converts the same way */
        char name[128] = "";
        w->ts_as_text = w->arrays && SQL_SUCCEEDED(SQLGetInfo(dbc, SQL_DRIVER_NAME, name, sizeof name, NULL)) &&
                        strstr(name, "maodbc") != NULL;
    }
    return 0;
}

/* Make sure w is connected. 0, or -1 with a (redacted) reason in *why and
 * the delay before the next attempt in *wait_ms, or -2 when the statement
 * is refused (its events fail). */
static int ensure_connected(cs_worker *w, char **why, int64_t *wait_ms)
{
    cloudsql *cs = w->cs;
    if (w->stmt)
        return 0;
    int64_t now = mono_ms();
    if (w->failures && now < w->next_try_ms) {
        *wait_ms = w->next_try_ms - now;
        *why = sb_asprintf("not connected, reconnecting in %lld ms: %s", (long long)*wait_ms,
                           w->last_error ? w->last_error : "?");
        return -1;
    }
    diag d = {0};
    int rc = open_connection(w, &d);
    if (rc == -2) {
        char *text = redact(d.text, cs->secrets);
        sb_log(cs->ins, SB_LOG_ERROR, "the server refuses the statement: %s", text);
        *why = sb_asprintf("the server refuses the statement: %s", text);
        free(text);
        return -2;
    }
    if (rc == 0) {
        if (w->failures)
            sb_log(cs->ins, SB_LOG_INFO, "reconnected after %d failed attempts (%s)", w->failures, cs->shown_conn);
        else
            sb_log(cs->ins, SB_LOG_INFO, "connected (%s)%s", cs->shown_conn,
                   w->arrays || !cs->c->array_binding || cs->multi_max
                       ? ""
                       : "; the driver takes no parameter arrays: rows go one at a time");
        w->failures = 0;
        free(w->last_error);
        w->last_error = NULL;
        return 0;
    }
    w->failures++;
    int64_t delay = CS_BACKOFF_FIRST_MS;
    for (int i = 1; i < w->failures && delay < cs->c->reconnect_max_ms; i++)
        delay *= 2;
    if (delay > cs->c->reconnect_max_ms)
        delay = cs->c->reconnect_max_ms;
    w->next_try_ms = now + delay;
    free(w->last_error);
    w->last_error = redact(d.text, cs->secrets);
    sb_log(cs->ins, SB_LOG_ERROR, "cannot connect (%s), attempt %d, next in %lld ms: %s", cs->shown_conn,
           w->failures, (long long)delay, w->last_error);
    *why = sb_asprintf("cannot connect: %s", w->last_error);
    *wait_ms = delay;
    return -1;
}

static int cs_worker_init(void *self, void **worker, char *errstr, size_t errstr_size)
{
    cloudsql *cs = self;
    cs_worker *w = calloc(1, sizeof *w);
    if (!w)
        return sb_err(errstr, errstr_size, "out of memory");
    w->cs = cs;
    pthread_mutex_lock(&cs->mu);
    w->next = cs->workers;
    cs->workers = w;
    pthread_mutex_unlock(&cs->mu);
    *worker = w;
    return 0;
}

static void cs_worker_fini(void *self, void *worker)
{
    (void)self; /* after a restart not the instance that made w, NULL if it failed: w->cs says */
    cs_worker *w = worker;
    if (!w)
        return;
    cloudsql *cs = w->cs; /* NULL once its instance was destroyed (cs_destroy) */
    if (cs) {
        pthread_mutex_lock(&cs->mu);
        for (cs_worker **p = &cs->workers; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
        pthread_mutex_unlock(&cs->mu);
    }
    if (w->dbc)
        SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_ROLLBACK);
    drop_connection(w);
    free(w->last_error);
    free(w);
}

static void cs_cancel(void *self)
{
    cloudsql *cs = self;
    pthread_mutex_lock(&cs->mu);
    for (cs_worker *w = cs->workers; w; w = w->next) {
        if (w->stmt)
            SQLCancel(w->stmt);
        for (int i = 0; i < CS_MULTI_SLOTS; i++)
            if (w->multi[i])
                SQLCancel(w->multi[i]);
    }
    pthread_mutex_unlock(&cs->mu);
}

/* ---- one batch ---------------------------------------------------------------- */

typedef struct run {
    cloudsql *cs;
    cs_worker *w;
    sb_batch *b;
    pvalue *vals;   /* [event][name] */
    size_t n_names;
    int broken;     /* the connection went away: the rest RETRY */
    char *broken_why;
} run;

static pvalue *val(run *r, size_t ev, size_t name) { return &r->vals[ev * r->n_names + name]; }

static void set_all(run *r, const size_t *idx, size_t m, sb_result res, const char *why)
{
    for (size_t k = 0; k < m; k++) {
        if (why)
            sb_batch_set_result(r->b, idx[k], res, "%s", why);
        else
            sb_batch_set_result(r->b, idx[k], res, NULL);
    }
}

/* Bind event ev's values to markers first + 1 ... of statement s (one row);
 * inds[] has a slot per marker of the row. */
static int bind_row(run *r, SQLHSTMT s, size_t ev, size_t first, SQLLEN *inds, diag *d)
{
    sql_stmt *st = &r->cs->st;
    for (size_t k = 0; k < st->n_markers; k++) {
        pvalue *v = val(r, ev, st->markers[k]);
        SQLSMALLINT ct, sqlt, dig;
        SQLULEN colsize;
        pv_bind_types(v->kind, v->wlen, &ct, &sqlt, &colsize, &dig);
        SQLPOINTER p = NULL;
        SQLLEN buflen = 0;
        switch (v->kind) {
        case PV_INT: p = &v->i; break;
        case PV_DOUBLE: p = &v->d; break;
        case PV_BOOL: p = &v->b; break;
        case PV_TIMESTAMP: p = &v->ts; buflen = sizeof v->ts; break;
        case PV_TEXT: p = v->w; buflen = (SQLLEN)(v->wlen * sizeof(SQLWCHAR)); break;
        case PV_NULL: break;
        }
        inds[k] = v->kind == PV_NULL ? SQL_NULL_DATA : v->kind == PV_TEXT ? buflen : 0;
        if (!SQL_SUCCEEDED(SQLBindParameter(s, (SQLUSMALLINT)(first + k + 1), SQL_PARAM_INPUT, ct, sqlt, colsize,
                                            dig, p, buflen, &inds[k]))) {
            diag_read(d, SQL_HANDLE_STMT, s, "SQLBindParameter failed");
            return -1;
        }
    }
    return 0;
}

/* After SQLExecute: SQL_NO_DATA (an UPDATE that matched nothing) is
 * success; results are discarded. */
static int executed(SQLHSTMT s, SQLRETURN rc, diag *d)
{
    if (rc == SQL_ERROR || rc == SQL_INVALID_HANDLE || rc == SQL_NEED_DATA) {
        diag_read(d, SQL_HANDLE_STMT, s, "SQLExecute failed");
        SQLFreeStmt(s, SQL_CLOSE);
        return -1;
    }
    while (SQL_SUCCEEDED(SQLMoreResults(s)))
        ;
    SQLFreeStmt(s, SQL_CLOSE);
    return 0;
}

static int exec_rows(run *r, const size_t *idx, size_t m, diag *d)
{
    SQLLEN *inds = calloc(r->cs->st.n_markers, sizeof *inds);
    if (!inds)
        abort();
    int rc = 0;
    for (size_t k = 0; k < m && rc == 0; k++) {
        SQLFreeStmt(r->w->stmt, SQL_RESET_PARAMS);
        rc = bind_row(r, r->w->stmt, idx[k], 0, inds, d);
        if (rc == 0)
            rc = executed(r->w->stmt, SQLExecute(r->w->stmt), d);
    }
    free(inds);
    return rc;
}

/* The worker's multi-row INSERT of `rows` rows: prepared before, or now
 * into a slot other than keep's. NULL with *d when it cannot be prepared. */
static SQLHSTMT multi_stmt(cs_worker *w, size_t rows, SQLHSTMT keep, diag *d)
{
    for (int i = 0; i < CS_MULTI_SLOTS; i++)
        if (w->multi[i] && w->multi_rows[i] == rows)
            return w->multi[i];
    cloudsql *cs = w->cs;
    SQLHSTMT s;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, w->dbc, &s))) {
        diag_read(d, SQL_HANDLE_DBC, w->dbc, "SQLAllocHandle(statement) failed");
        return NULL;
    }
    SQLSetStmtAttr(s, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)(uintptr_t)secs(cs->c->query_timeout_ms), 0);
    char *sql = sql_stmt_multi_row(&cs->st, rows);
    SQLRETURN rc = SQLPrepare(s, (SQLCHAR *)sql, SQL_NTS);
    free(sql);
    if (!SQL_SUCCEEDED(rc)) {
        diag_read(d, SQL_HANDLE_STMT, s, "SQLPrepare of a multi-row INSERT failed");
        SQLFreeHandle(SQL_HANDLE_STMT, s);
        return NULL;
    }
    unsigned slot = w->multi_next++ % CS_MULTI_SLOTS;
    if (keep && w->multi[slot] == keep)
        slot = w->multi_next++ % CS_MULTI_SLOTS;
    pthread_mutex_lock(&cs->mu); /* cancel() reads the slots */
    SQLHSTMT old = w->multi[slot];
    w->multi[slot] = s;
    w->multi_rows[slot] = rows;
    pthread_mutex_unlock(&cs->mu);
    if (old)
        SQLFreeHandle(SQL_HANDLE_STMT, old);
    return s;
}

/* The server does not take the multi-row form: say so, and send arrays or
 * single rows on this connection from now on. Returns 1 (exec_multi's "run
 * them another way"), with *d cleared. */
static int refuse_multi(run *r, diag *d)
{
    char *why = redact(d->text, r->cs->secrets);
    sb_log(r->cs->ins, SB_LOG_WARN,
           "a multi-row INSERT was refused as a syntax error; this connection sends %s from now on: %s",
           r->w->arrays ? "parameter arrays" : "one row at a time", why);
    free(why);
    memset(d, 0, sizeof *d);
    r->w->multi_refused = 1;
    return 1;
}

/* The m rows as multi-row INSERTs, in event order: as few statements as
 * multi_max allows, of nearly equal sizes (so at most two sizes, each kept
 * prepared). 1 when the values are too large for it (nothing ran) or the
 * server refuses the multi-row form (then from then on): the caller rolls
 * back whatever ran and sends arrays or rows. */
static int exec_multi(run *r, const size_t *idx, size_t m, diag *d)
{
    cs_worker *w = r->w;
    size_t n_markers = r->cs->st.n_markers, per = r->cs->multi_max, bytes = 0;
    for (size_t k = 0; k < m; k++)
        for (size_t j = 0; j < r->n_names; j++)
            bytes += val(r, idx[k], j)->wlen * sizeof(SQLWCHAR) + sizeof(SQL_TIMESTAMP_STRUCT);
    if (bytes > CS_ARRAY_MAX_BYTES)
        return 1;
    size_t q = (m + per - 1) / per, small = m / q, n_big = m % q;
    SQLHSTMT s_small = multi_stmt(w, small, NULL, d);
    SQLHSTMT s_big = s_small && n_big ? multi_stmt(w, small + 1, s_small, d) : s_small;
    if (!s_small || !s_big) {
        diag_class k = diag_classify(d);
        return k == DIAG_DATA || k == DIAG_DUPLICATE ? refuse_multi(r, d) : -1;
    }
    SQLLEN *inds = calloc((small + 1) * n_markers, sizeof *inds);
    if (!inds)
        abort();
    int rc = 0;
    for (size_t c = 0, done = 0; c < q && rc == 0; c++) {
        size_t rows = small + (c < n_big);
        SQLHSTMT s = c < n_big ? s_big : s_small;
        SQLFreeStmt(s, SQL_RESET_PARAMS);
        for (size_t t = 0; t < rows && rc == 0; t++)
            rc = bind_row(r, s, idx[done + t], t * n_markers, inds + t * n_markers, d);
        if (rc == 0)
            rc = executed(s, SQLExecute(s), d);
        done += rows;
    }
    free(inds);
    /* drivers that prepare on the first execute (psqlODBC) say there that
     * the server has no multi-row form: a syntax error, the same for every
     * row, not a row at fault */
    if (rc != 0 && diag_is_syntax_error(d))
        return refuse_multi(r, d);
    return rc;
}

/* One column per placeholder name, m rows. */
typedef struct column {
    pv_kind kind;
    size_t elem; /* bytes per row */
    char *data;
    SQLLEN *ind;
    size_t wmax;
} column;

/* The kind every row of name j shares (nulls aside), or -1 if they differ. */
static int column_kind(run *r, const size_t *idx, size_t m, size_t j, size_t *wmax)
{
    int kind = PV_NULL;
    *wmax = 0;
    for (size_t k = 0; k < m; k++) {
        pvalue *v = val(r, idx[k], j);
        if (v->kind == PV_NULL)
            continue;
        if (kind != PV_NULL && kind != (int)v->kind)
            return -1;
        kind = v->kind;
        if (v->wlen > *wmax)
            *wmax = v->wlen;
    }
    return kind;
}

#define TS_TEXT_SIZE 27 /* "YYYY-MM-DD HH:MM:SS.ffffff" and its NUL */

/* A timestamp as the text MariaDB reads back into the same DATETIME(6);
 * its length. */
static SQLLEN ts_text(const SQL_TIMESTAMP_STRUCT *t, char *out)
{
    int n = snprintf(out, TS_TEXT_SIZE, "%04d-%02u-%02u %02u:%02u:%02u.%06lu", (int)t->year % 10000,
                     (unsigned)t->month % 100, (unsigned)t->day % 100, (unsigned)t->hour % 100,
                     (unsigned)t->minute % 100, (unsigned)t->second % 100,
                     (unsigned long)(t->fraction / 1000) % 1000000);
    return n < 0 ? 0 : n >= TS_TEXT_SIZE ? TS_TEXT_SIZE - 1 : n;
}

/* Execute the m rows with one array-bound SQLExecute. 1 when the batch
 * does not fit arrays (mixed types, too large): run it row by row. */
static int exec_array(run *r, const size_t *idx, size_t m, diag *d)
{
    sql_stmt *st = &r->cs->st;
    column *cols = calloc(r->n_names, sizeof *cols);
    if (!cols)
        abort();
    size_t total = 0;
    int rc = 0;
    for (size_t j = 0; j < r->n_names && rc == 0; j++) {
        int k = column_kind(r, idx, m, j, &cols[j].wmax);
        if (k < 0) {
            rc = 1;
            break;
        }
        cols[j].kind = (pv_kind)k;
        switch (cols[j].kind) {
        case PV_INT: cols[j].elem = sizeof(SQLBIGINT); break;
        case PV_DOUBLE: cols[j].elem = sizeof(double); break;
        case PV_BOOL: cols[j].elem = 1; break;
        case PV_TIMESTAMP: cols[j].elem = r->w->ts_as_text ? TS_TEXT_SIZE : sizeof(SQL_TIMESTAMP_STRUCT); break;
        case PV_TEXT: cols[j].elem = (cols[j].wmax ? cols[j].wmax : 1) * sizeof(SQLWCHAR); break;
        case PV_NULL: cols[j].elem = 1; break;
        }
        total += cols[j].elem * m;
        if (total > CS_ARRAY_MAX_BYTES)
            rc = 1;
    }
    for (size_t j = 0; j < r->n_names && rc == 0; j++) {
        column *c = &cols[j];
        c->data = calloc(m, c->elem);
        c->ind = calloc(m, sizeof *c->ind);
        if (!c->data || !c->ind)
            abort();
        for (size_t k = 0; k < m; k++) {
            pvalue *v = val(r, idx[k], j);
            char *slot = c->data + k * c->elem;
            c->ind[k] = 0;
            switch (v->kind) {
            case PV_NULL: c->ind[k] = SQL_NULL_DATA; break;
            case PV_INT: memcpy(slot, &v->i, sizeof v->i); break;
            case PV_DOUBLE: memcpy(slot, &v->d, sizeof v->d); break;
            case PV_BOOL: *slot = (char)v->b; break;
            case PV_TIMESTAMP:
                if (r->w->ts_as_text)
                    c->ind[k] = ts_text(&v->ts, slot);
                else
                    memcpy(slot, &v->ts, sizeof v->ts);
                break;
            case PV_TEXT:
                memcpy(slot, v->w, v->wlen * sizeof(SQLWCHAR));
                c->ind[k] = (SQLLEN)(v->wlen * sizeof(SQLWCHAR));
                break;
            }
        }
    }
    SQLHSTMT s = r->w->stmt;
    SQLUSMALLINT *status = NULL;
    SQLULEN processed = 0;
    if (rc == 0) {
        status = calloc(m, sizeof *status);
        if (!status)
            abort();
        SQLFreeStmt(s, SQL_RESET_PARAMS);
        SQLSetStmtAttr(s, SQL_ATTR_PARAM_BIND_TYPE, (SQLPOINTER)SQL_PARAM_BIND_BY_COLUMN, 0);
        SQLSetStmtAttr(s, SQL_ATTR_PARAM_STATUS_PTR, status, 0);
        SQLSetStmtAttr(s, SQL_ATTR_PARAMS_PROCESSED_PTR, &processed, 0);
        if (!SQL_SUCCEEDED(SQLSetStmtAttr(s, SQL_ATTR_PARAMSET_SIZE, (SQLPOINTER)(uintptr_t)m, 0))) {
            diag_read(d, SQL_HANDLE_STMT, s, "SQL_ATTR_PARAMSET_SIZE refused");
            rc = -1;
        }
        for (size_t k = 0; k < st->n_markers && rc == 0; k++) {
            column *c = &cols[st->markers[k]];
            SQLSMALLINT ct, sqlt, dig;
            SQLULEN colsize;
            pv_bind_types(c->kind, c->wmax, &ct, &sqlt, &colsize, &dig);
            if (c->kind == PV_TIMESTAMP && r->w->ts_as_text)
                ct = SQL_C_CHAR, sqlt = SQL_VARCHAR, colsize = TS_TEXT_SIZE - 1, dig = 0;
            if (!SQL_SUCCEEDED(SQLBindParameter(s, (SQLUSMALLINT)(k + 1), SQL_PARAM_INPUT, ct, sqlt, colsize, dig,
                                                c->data, (SQLLEN)c->elem, c->ind))) {
                diag_read(d, SQL_HANDLE_STMT, s, "SQLBindParameter failed");
                rc = -1;
            }
        }
        if (rc == 0) {
            SQLRETURN er = SQLExecute(s);
            if (er == SQL_ERROR || er == SQL_INVALID_HANDLE || er == SQL_NEED_DATA) {
                diag_read(d, SQL_HANDLE_STMT, s, "SQLExecute failed");
                rc = -1;
            } else {
                while (SQL_SUCCEEDED(SQLMoreResults(s)))
                    ;
                /* some drivers report a refused row only in its status */
                for (size_t k = 0; k < m && rc == 0; k++)
                    if (status[k] == SQL_PARAM_ERROR || status[k] == SQL_PARAM_UNUSED) {
                        diag_read(d, SQL_HANDLE_STMT, s, "a row of the parameter array failed");
                        rc = -1;
                    }
                if (rc == 0 && processed != m) {
                    diag_read(d, SQL_HANDLE_STMT, s, "the driver processed fewer rows than it was given");
                    rc = -1;
                }
            }
            SQLFreeStmt(s, SQL_CLOSE);
        }
        SQLSetStmtAttr(s, SQL_ATTR_PARAMSET_SIZE, (SQLPOINTER)1, 0);
        SQLSetStmtAttr(s, SQL_ATTR_PARAM_STATUS_PTR, NULL, 0);
        SQLSetStmtAttr(s, SQL_ATTR_PARAMS_PROCESSED_PTR, NULL, 0);
        SQLFreeStmt(s, SQL_RESET_PARAMS);
    }
    for (size_t j = 0; j < r->n_names; j++) {
        free(cols[j].data);
        free(cols[j].ind);
    }
    free(cols);
    free(status);
    return rc;
}

/* The m events in one transaction. 0 committed, or -1 rolled back with *d. */
static int transaction(run *r, const size_t *idx, size_t m, diag *d)
{
    cs_worker *w = r->w;
    int rc = 1;
    if (r->cs->multi_max && !w->multi_refused && m > 1 && (rc = exec_multi(r, idx, m, d)) == 1)
        SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_ROLLBACK); /* a refused form may have left the transaction failed */
    if (rc == 1 && w->arrays && m > 1)
        rc = exec_array(r, idx, m, d);
    if (rc == 1)
        rc = exec_rows(r, idx, m, d);
    if (rc == 0) {
        SQLRETURN er = SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_COMMIT);
        if (SQL_SUCCEEDED(er))
            return 0;
        diag_read(d, SQL_HANDLE_DBC, w->dbc, "commit failed");
    }
    SQLEndTran(SQL_HANDLE_DBC, w->dbc, SQL_ROLLBACK);
    if (!d->conn_lost) { /* a driver that only says "general error" about a dead connection */
        SQLUINTEGER dead = 0;
        if (SQL_SUCCEEDED(SQLGetConnectAttr(w->dbc, SQL_ATTR_CONNECTION_DEAD, &dead, 0, NULL)) &&
            dead == SQL_CD_TRUE)
            d->conn_lost = 1;
    }
    return -1;
}

static void run_range(run *r, const size_t *idx, size_t m)
{
    if (m == 0)
        return;
    if (r->broken) {
        set_all(r, idx, m, SB_RESULT_RETRY, r->broken_why);
        return;
    }
    if (sb_batch_stopping(r->b)) {
        set_all(r, idx, m, SB_RESULT_RETRY, "the daemon is stopping");
        return;
    }
    diag d = {0};
    if (transaction(r, idx, m, &d) == 0) {
        set_all(r, idx, m, SB_RESULT_OK, NULL);
        return;
    }
    diag_class k = diag_classify(&d);
    char *why = redact(d.text, r->cs->secrets);
    switch (k) {
    case DIAG_CONN:
        sb_log(r->cs->ins, SB_LOG_WARN, "connection lost, reconnecting: %s", why);
        r->broken = 1;
        r->broken_why = sb_asprintf("connection lost: %s", why);
        drop_connection(r->w);
        set_all(r, idx, m, SB_RESULT_RETRY, r->broken_why);
        break;
    case DIAG_TRANSIENT:
        set_all(r, idx, m, SB_RESULT_RETRY, why);
        break;
    case DIAG_DUPLICATE:
    case DIAG_DATA:
        if (m > 1) { /* find the row: halves, each its own transaction */
            run_range(r, idx, m / 2);
            run_range(r, idx + m / 2, m - m / 2);
        } else if (k == DIAG_DUPLICATE && r->cs->c->duplicate_is_success) {
            sb_batch_set_result(r->b, idx[0], SB_RESULT_OK, NULL);
        } else {
            sb_batch_set_result(r->b, idx[0], SB_RESULT_FAIL, "%s", why);
        }
        break;
    }
    free(why);
}

/* Event ev's value for placeholder `name`: its field, or the event's id,
 * source or receive time for the sb_ names. -1 with the reason if the event
 * has neither. */
static int event_value(sb_event *ev, const char *name, pvalue *v, char *why, size_t why_size)
{
    json_t *f = sb_event_get_value(ev, name); /* that field only: the event's whole tree is not built */
    if (f)
        return pvalue_from_json(v, f, why, why_size);
    memset(v, 0, sizeof *v);
    if (strcmp(name, "sb_event_id") == 0) {
        pvalue_text(v, sb_event_id(ev), strlen(sb_event_id(ev)));
        return 0;
    }
    if (strcmp(name, "sb_source") == 0) {
        const char *s = sb_event_source(ev) ? sb_event_source(ev) : "";
        pvalue_text(v, s, strlen(s));
        return 0;
    }
    if (strcmp(name, "sb_received_at") == 0) {
        int64_t us = sb_event_received_us(ev);
        time_t t = (time_t)(us / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        v->kind = PV_TIMESTAMP;
        v->ts = (SQL_TIMESTAMP_STRUCT){(SQLSMALLINT)(tm.tm_year + 1900), (SQLUSMALLINT)(tm.tm_mon + 1),
                                       (SQLUSMALLINT)tm.tm_mday,          (SQLUSMALLINT)tm.tm_hour,
                                       (SQLUSMALLINT)tm.tm_min,           (SQLUSMALLINT)tm.tm_sec,
                                       (SQLUINTEGER)((us % 1000000) * 1000)};
        return 0;
    }
    return sb_err(why, why_size, "the event has no field \"%s\" (statement placeholder :%s)", name, name);
}

static void cs_process(void *self, sb_batch *b)
{
    cloudsql *cs = self;
    cs_worker *w = sb_batch_worker(b);
    size_t n = sb_batch_count(b);
    char *why = NULL;
    int64_t wait_ms = 0;
    int rc = ensure_connected(w, &why, &wait_ms);
    if (rc == -2) {
        for (size_t i = 0; i < n; i++)
            sb_batch_set_result(b, i, SB_RESULT_FAIL, "%s", why);
        free(why);
        return;
    }
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "%s", why);
            sb_batch_set_retry_after(b, i, wait_ms);
        }
        free(why);
        return;
    }
    run r = {.cs = cs, .w = w, .b = b, .n_names = cs->st.n_names};
    r.vals = calloc(n * r.n_names + 1, sizeof *r.vals);
    size_t *idx = calloc(n + 1, sizeof *idx), m = 0;
    if (!r.vals || !idx)
        abort();
    for (size_t i = 0; i < n; i++) {
        sb_event *ev = sb_batch_event(b, i);
        char err[256];
        int ok = 1;
        for (size_t j = 0; j < r.n_names && ok; j++)
            if (event_value(ev, cs->st.names[j], val(&r, i, j), err, sizeof err) != 0) {
                sb_batch_set_result(b, i, SB_RESULT_FAIL, "%s", err);
                ok = 0;
            }
        if (ok)
            idx[m++] = i;
    }
    run_range(&r, idx, m);
    for (size_t i = 0; i < n * r.n_names; i++)
        pvalue_clear(&r.vals[i]);
    free(r.vals);
    free(r.broken_why);
    free(idx);
}

/* Read-only: open one connection and prepare the statement, as a worker
 * would, but without create_table (preflight changes nothing). */
static void cs_preflight(void *self, sb_preflight *pf)
{
    cloudsql *cs = self;
    char err[256];
    if (!cs->env && cs_start(cs, err, sizeof err) != 0) {
        sb_preflight_fail(pf, "ODBC environment", "%s", err);
        return;
    }
    pthread_mutex_lock(&cs->mu);
    int had_ddl = cs->c->create_table != NULL;
    cs->ddl_done = 1;
    pthread_mutex_unlock(&cs->mu);
    cs_worker w = {.cs = cs};
    diag d;
    memset(&d, 0, sizeof d);
    char *what = sb_asprintf("ODBC connection %s opens and the statement prepares", cs->shown_conn);
    int rc = open_connection(&w, &d);
    if (rc == 0) {
        sb_preflight_ok(pf, what);
    } else {
        char *why = redact(d.text, cs->secrets);
        if (rc == -2)
            sb_preflight_fail(pf, what, "the server refused the statement: %s%s", why,
                              had_ddl ? " (create_table, skipped here, would run at the first connection)" : "");
        else
            sb_preflight_fail(pf, what, "cannot connect: %s; check the driver (odbcinst -q -d), server, port, "
                              "database and credentials", why);
        free(why);
    }
    free(what);
    if (w.dbc)
        SQLEndTran(SQL_HANDLE_DBC, w.dbc, SQL_ROLLBACK);
    drop_connection(&w);
}

/* Column i of the current row as text (NULL for SQL NULL), malloc'd. */
static char *column_text(SQLHSTMT st, SQLUSMALLINT i, int *is_null)
{
    char buf[512];
    SQLLEN ind = 0;
    *is_null = 0;
    if (!SQL_SUCCEEDED(SQLGetData(st, i, SQL_C_CHAR, buf, sizeof buf, &ind)) || ind == SQL_NULL_DATA) {
        *is_null = ind == SQL_NULL_DATA;
        return NULL;
    }
    return sb_asprintf("%s", buf);
}

/* `syncbridge reconcile`: the rows registry_query gives. */
static int cs_registry_rows(void *self, int64_t since_us, json_t **rows, char *errstr, size_t errstr_size)
{
    cloudsql *cs = self;
    (void)since_us; /* the query bounds itself; the core ignores older rows */
    *rows = NULL;
    if (!cs->c->registry_query)
        return 0;
    char err[256];
    if (!cs->env && cs_start(cs, err, sizeof err) != 0)
        return sb_err(errstr, errstr_size, "%s", err);
    pthread_mutex_lock(&cs->mu);
    cs->ddl_done = 1; /* read-only: never create_table here */
    pthread_mutex_unlock(&cs->mu);
    cs_worker w = {.cs = cs};
    diag d;
    memset(&d, 0, sizeof d);
    int rc = 0;
    if (open_connection(&w, &d) != 0) {
        char *why = redact(d.text, cs->secrets);
        rc = sb_err(errstr, errstr_size, "cannot connect: %s", why);
        free(why);
        drop_connection(&w);
        return rc;
    }
    SQLHSTMT st;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, w.dbc, &st))) {
        drop_connection(&w);
        return sb_err(errstr, errstr_size, "SQLAllocHandle(statement) failed");
    }
    SQLSetStmtAttr(st, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)(uintptr_t)secs(cs->c->query_timeout_ms), 0);
    json_t *out = json_array();
    if (!SQL_SUCCEEDED(SQLExecDirect(st, (SQLCHAR *)cs->c->registry_query, SQL_NTS))) {
        diag_read(&d, SQL_HANDLE_STMT, st, "SQLExecDirect(registry_query) failed");
        char *why = redact(d.text, cs->secrets);
        rc = sb_err(errstr, errstr_size, "registry_query: %s", why);
        free(why);
    } else {
        SQLRETURN fr;
        while ((fr = SQLFetch(st)) == SQL_SUCCESS || fr == SQL_SUCCESS_WITH_INFO) {
            int n0, n1, n2;
            char *id = column_text(st, 1, &n0), *src = column_text(st, 2, &n1), *ts = column_text(st, 3, &n2);
            char *end = NULL;
            long long v = id ? strtoll(id, &end, 10) : 0;
            if (id && src && end && *end == '\0')
                json_array_append_new(out, json_pack("{s:I, s:s, s:o}", "id", (json_int_t)v, "source", src,
                                                     "timestamp", ts ? json_string(ts) : json_null()));
            else
                sb_log(cs->ins, SB_LOG_WARN, "registry_query: a row without an integer id and a source is skipped");
            free(id);
            free(src);
            free(ts);
        }
        if (fr != SQL_NO_DATA) {
            diag_read(&d, SQL_HANDLE_STMT, st, "SQLFetch failed");
            char *why = redact(d.text, cs->secrets);
            rc = sb_err(errstr, errstr_size, "registry_query: %s", why);
            free(why);
        }
    }
    SQLFreeHandle(SQL_HANDLE_STMT, st);
    SQLEndTran(SQL_HANDLE_DBC, w.dbc, SQL_ROLLBACK);
    drop_connection(&w);
    if (rc != 0) {
        json_decref(out);
        return -1;
    }
    *rows = out;
    return 0;
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "cloudsql",
    .kind = SB_KIND_SINK,
    .version = "1.0",
    .description = "Run a parameterised SQL statement (an upsert) per event through ODBC: Cloud SQL, "
                   "PostgreSQL, MySQL/MariaDB, SQLite",
    .flags = SB_PLUGIN_CONCURRENT,
    .options = options,
    .config_size = sizeof(cs_conf),
    .create = cs_create,
    .start = cs_start,
    .process = cs_process,
    .destroy = cs_destroy,
    .worker_init = cs_worker_init,
    .worker_fini = cs_worker_fini,
    .cancel = cs_cancel,
    .preflight = cs_preflight,
    .registry_rows = cs_registry_rows,
};
