/*
 * bigquery - sink: write each event as one or more rows of a BigQuery
 * table, keyed so that retries, redeliveries and crashes never double a
 * row (REST: tables.get, tabledata.insertAll, jobs.query and
 * jobs.getQueryResults, as tests/fake/contracts/gcp/bigquery-v2.discovery.json
 * describes them).
 *
 * Modes:
 *   merge      (default) one `MERGE t USING UNNEST(@rows) s ON keys WHEN
 *              NOT MATCHED THEN INSERT` per batch: a row is inserted once,
 *              and a re-run (retry, redelivery, crash) finds it and changes
 *              nothing, so a later update is never undone. DML rows are
 *              never in the streaming buffer, so they are updatable at once.
 *   update     one `MERGE ... WHEN MATCHED THEN UPDATE SET` per batch: the
 *              non-key columns the rows name are set on the rows matching
 *              the keys. A row that is not there (yet) is retried.
 *   insert_all streaming inserts with insertId = event id / row name:
 *              best-effort de-duplication, for append-only tables (streamed
 *              rows cannot be updated or merged for up to ~90 minutes).
 *
 * Jobs. jobs.query carries a requestId (36 characters) derived from the
 * instance, the chunk's event ids and the attempt, so a request re-sent
 * after a lost answer, or after a crash, returns the first job instead of
 * running again. A job that is not complete within the request is polled
 * with jobs.getQueryResults: its id and location are the events' step
 * state and the events WAIT, holding no thread, also across a restart.
 *
 * Errors: 408/429/5xx, rateLimitExceeded, backendError, concurrent-update
 * and streaming-buffer refusals are retried; invalidQuery and other
 * refusals fail the events with BigQuery's message, after a chunk of
 * several events has been re-run event by event to find the one at fault.
 * Mutating statements on one table are sent one at a time from this
 * process (BigQuery queues concurrent DML on a table and fails the excess).
 *
 * Abandon: when the core gives up on waiting events (step_timeout, dlq
 * drop), their job is cancelled with jobs.cancel, once per job.
 *
 * Schema: read once (tables.get) and kept for the instance's life; a
 * changed table needs a reload of the daemon.
 *
 * Threading: the schema is loaded under a mutex and never changed after,
 * and the table locks are process-wide, so process() may run concurrently
 * (SB_PLUGIN_CONCURRENT).
 */
#include <syncbridge/syncbridge.h>
#include <syncbridge/buf.h>
#include <syncbridge/gcp.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bqrows.h"

enum bq_mode { MODE_MERGE, MODE_UPDATE, MODE_INSERT_ALL };
static const char *const modes[] = {[MODE_MERGE] = "merge", [MODE_UPDATE] = "update",
                                    [MODE_INSERT_ALL] = "insert_all", NULL};

#define BQ_MAX_INSERT_ID 128

typedef struct bq_conf {
    const char *project;
    const char *dataset;
    const char *table;
    int mode;
    const char *time_zone;
    const char *location;
    int64_t max_rows;
    int64_t poll_ms;
    int64_t query_timeout_ms;
} bq_conf;

static const sb_option_def options[] = {
    {SB_OPT("project", SB_OPT_STRING, NULL, 1, "Project of the table (and of the query jobs)."),
     SB_OPT_BIND(bq_conf, project)},
    {SB_OPT("dataset", SB_OPT_STRING, NULL, 1, "Dataset of the table."), SB_OPT_BIND(bq_conf, dataset)},
    {SB_OPT("table", SB_OPT_STRING, NULL, 1, "The table; it must exist (its schema types the rows)."),
     SB_OPT_BIND(bq_conf, table)},
    {SB_OPT("mode", SB_OPT_STRING, "\"merge\"", 0,
            "\"merge\" (insert rows whose key is absent), \"update\" (set the other columns of rows whose key "
            "matches) or \"insert_all\" (streaming inserts with insertId; append-only)."),
     SB_OPT_CHOICES(modes), SB_OPT_BIND(bq_conf, mode)},
    {SB_OPT("rows", SB_OPT_TEMPLATE_MAP, NULL, 1,
            "The rows of an event: \"ROW.COLUMN\": template (several rows), or \"COLUMN\": template (one row). "
            "A column a row does not name is NULL; an empty value is NULL except in STRING columns.")},
    {SB_OPT("key", SB_OPT_STRING_LIST, NULL, 0,
            "Columns that identify a row, e.g. [\"id\", \"source\"]: required for merge and update.")},
    {SB_OPT("time_zone", SB_OPT_STRING, "\"UTC\"", 0,
            "DATETIME columns: an instant with a zone (\"...Z\", \"+02:00\") is written as its civil time in this "
            "zone: \"UTC\", a fixed \"+HH:MM\"/\"-HH:MM\", or a zone name such as \"America/Chicago\" (read "
            "from /usr/share/zoneinfo, or $TZDIR, at start: its DST rules apply, also past the file's last "
            "transition); a value without a zone is written as is."),
     SB_OPT_BIND(bq_conf, time_zone)},
    {SB_OPT("location", SB_OPT_STRING, NULL, 0, "Location of the dataset for jobs (default: BigQuery's choice)."),
     SB_OPT_BIND(bq_conf, location)},
    {SB_OPT("max_rows", SB_OPT_INT, "1000", 0,
            "Most rows per statement or insertAll request (keeps requests within BigQuery's size limits)."),
     SB_OPT_RANGE_BIND(1, 10000, bq_conf, max_rows)},
    {SB_OPT("poll_interval", SB_OPT_DURATION, "\"1s\"", 0, "How often a running query job is looked at."),
     SB_OPT_RANGE_BIND(10, 600000, bq_conf, poll_ms)},
    {SB_OPT("query_timeout", SB_OPT_DURATION, "\"10s\"", 0,
            "How long jobs.query waits for the job before it is polled instead (timeoutMs)."),
     SB_OPT_RANGE_BIND(0, 60000, bq_conf, query_timeout_ms)},
    SB_GCP_OPTION_DEFS,
    {0}};

/* ---- per-table serialisation of DML (process-wide) ------------------------ */

typedef struct table_lock {
    char *name;
    pthread_mutex_t mu;
    int refs;
    struct table_lock *next;
} table_lock;

static pthread_mutex_t locks_mu = PTHREAD_MUTEX_INITIALIZER;
static table_lock *locks;

static table_lock *table_lock_get(const char *name)
{
    pthread_mutex_lock(&locks_mu);
    table_lock *t = locks;
    while (t && strcmp(t->name, name) != 0)
        t = t->next;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            abort();
        t->name = sb_asprintf("%s", name);
        pthread_mutex_init(&t->mu, NULL);
        t->next = locks;
        locks = t;
    }
    t->refs++;
    pthread_mutex_unlock(&locks_mu);
    return t;
}

static void table_lock_put(table_lock *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&locks_mu);
    if (--t->refs == 0) {
        table_lock **pp = &locks;
        while (*pp != t)
            pp = &(*pp)->next;
        *pp = t->next;
        pthread_mutex_destroy(&t->mu);
        free(t->name);
        free(t);
    }
    pthread_mutex_unlock(&locks_mu);
}

/* ---- instance ------------------------------------------------------------- */

typedef struct bq {
    sb_instance *ins;
    const bq_conf *c;
    enum bq_mode mode;
    sb_gcp_client *gc;
    bq_rows *rows;
    size_t *key;   /* indexes into rows->cols */
    size_t nkey;
    bq_zone zone;  /* loaded at create, read-only after: workers share it */
    char *fq;      /* project.dataset.table, for logs */
    char *table_url, *query_url, *insert_url;
    table_lock *tl;
    pthread_mutex_t mu;
    bq_schema *schema;          /* cached; NULL until fetched */
    const bq_column **colmeta;  /* rows->cols[i]'s column */
    char *schema_error;         /* the config does not fit the table */
    char *cancelled[16];        /* jobs abandon() asked to cancel lately (the core gives up on
                                 * events one by one), under mu */
    size_t ncancelled;
} bq;

static int valid_id(const char *s, int dots_ok)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char ch = *s;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                 ch == '-' || (dots_ok && (ch == '.' || ch == ':'));
        if (!ok)
            return 0;
    }
    return 1;
}

static void bq_destroy(void *self)
{
    bq *p = self;
    if (!p)
        return;
    sb_gcp_client_destroy(p->gc);
    bq_rows_free(p->rows);
    bq_schema_free(p->schema);
    bq_zone_clear(&p->zone);
    free(p->colmeta);
    free(p->schema_error);
    free(p->key);
    free(p->fq);
    free(p->table_url);
    free(p->query_url);
    free(p->insert_url);
    for (size_t i = 0; i < sizeof p->cancelled / sizeof p->cancelled[0]; i++)
        free(p->cancelled[i]);
    table_lock_put(p->tl);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static int bq_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    bq *p = calloc(1, sizeof *p);
    if (!p)
        return sb_err(errstr, errstr_size, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    p->ins = ins;
    p->c = sb_instance_config(ins);
    const bq_conf *c = p->c;
    p->mode = (enum bq_mode)c->mode;
    if (!valid_id(c->project, 1) || !valid_id(c->dataset, 0) || !valid_id(c->table, 0)) {
        sb_err(errstr, errstr_size, "options project/dataset/table: \"%s\".\"%s\".\"%s\" is not a table name "
               "(letters, digits, _ and -)", c->project, c->dataset, c->table);
        goto fail;
    }
    if (bq_zone_parse(c->time_zone, &p->zone, errstr, errstr_size) != 0)
        goto fail;
    if (!(p->rows = bq_rows_parse(ins, "rows", errstr, errstr_size)))
        goto fail;
    size_t nk = sb_opt_list_count(ins, "key");
    if (p->mode != MODE_INSERT_ALL && nk == 0) {
        sb_err(errstr, errstr_size, "option key: required with mode \"%s\" (e.g. [\"id\", \"source\"])",
               modes[p->mode]);
        goto fail;
    }
    p->key = calloc(nk ? nk : 1, sizeof *p->key);
    for (size_t i = 0; i < nk; i++) {
        const char *k = sb_opt_list_item(ins, "key", i);
        size_t j = 0;
        while (j < p->rows->ncols && strcasecmp(p->rows->cols[j], k) != 0)
            j++;
        if (j == p->rows->ncols) {
            sb_err(errstr, errstr_size, "option key: column \"%s\" is not among the columns of rows", k);
            goto fail;
        }
        for (size_t r = 0; r < p->rows->nrows; r++) {
            size_t m = 0;
            while (m < p->rows->rows[r].ncells && p->rows->rows[r].cells[m].col != j)
                m++;
            if (m == p->rows->rows[r].ncells) {
                sb_err(errstr, errstr_size, "option rows: row \"%s\" gives no value for the key column \"%s\"",
                       p->rows->rows[r].name, k);
                goto fail;
            }
        }
        p->key[p->nkey++] = j;
    }
    if (p->mode == MODE_UPDATE && p->nkey == p->rows->ncols) {
        sb_err(errstr, errstr_size, "option rows: mode \"update\" needs a column besides the key to set");
        goto fail;
    }
    p->fq = sb_asprintf("%s.%s.%s", c->project, c->dataset, c->table);
    p->table_url = sb_asprintf("/bigquery/v2/projects/%s/datasets/%s/tables/%s", c->project, c->dataset, c->table);
    p->insert_url = sb_asprintf("%s/insertAll", p->table_url);
    p->query_url = sb_asprintf("/bigquery/v2/projects/%s/queries", c->project);
    if (!(p->gc = sb_gcp_client_from_instance(ins, "bigquery", errstr, errstr_size)))
        goto fail;
    p->tl = table_lock_get(p->fq);
    *self = p;
    return 0;
fail:
    bq_destroy(p);
    return -1;
}

/* ---- schema ---------------------------------------------------------------- */

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

/* Check the config against the table once its schema is known: every
 * column exists and can be written. The reason in p->schema_error, else 0. */
static void check_schema(bq *p)
{
    p->colmeta = calloc(p->rows->ncols, sizeof *p->colmeta);
    if (!p->colmeta)
        abort();
    for (size_t i = 0; i < p->rows->ncols; i++) {
        const bq_column *col = bq_schema_find(p->schema, p->rows->cols[i]);
        if (!col) {
            p->schema_error = sb_asprintf("schema mismatch: table %s has no column \"%s\"", p->fq, p->rows->cols[i]);
            return;
        }
        if (!bq_param_type(col->type)) {
            p->schema_error = sb_asprintf("schema mismatch: column %s of %s is %s, which rows cannot hold", col->name,
                                          p->fq, col->type);
            return;
        }
        p->colmeta[i] = col;
    }
    for (size_t i = 0; i < p->schema->n; i++) {
        const bq_column *col = &p->schema->cols[i];
        size_t j = 0;
        while (j < p->rows->ncols && strcasecmp(p->rows->cols[j], col->name) != 0)
            j++;
        if (col->required && j == p->rows->ncols && p->mode != MODE_UPDATE) {
            p->schema_error = sb_asprintf("schema mismatch: column %s of %s is REQUIRED and rows give it no value",
                                          col->name, p->fq);
            return;
        }
    }
}

/* Fetch the schema unless cached. 0, or -1 with the events settled. */
static int load_schema(bq *p, sb_batch *b, const size_t *idx, size_t n)
{
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    if (!p->schema) {
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = p->table_url, .idempotent = 1, .no_wait = 1};
        sb_gcp_response resp;
        char err[1024] = "";
        sb_gcp_result r = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        if (r == SB_GCP_OK) {
            json_t *t = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
            p->schema = bq_schema_from_table(t, err, sizeof err);
            json_decref(t);
            if (p->schema)
                check_schema(p);
            else
                p->schema_error = sb_asprintf("table %s: %s", p->fq, err);
        } else {
            sb_gcp_outcome o = sb_gcp_settle(b, idx, n, r, &resp, err, SB_GCP_404_RETRY);
            if (o.cause == SB_GCP_CAUSE_NOT_FOUND)
                sb_log(p->ins, SB_LOG_ERROR, "table %s not found (%s); retrying: create it, or fix project/dataset/"
                       "table", p->fq, o.reason);
            else
                sb_log(p->ins, SB_LOG_WARN, "cannot read the schema of %s: %s", p->fq, o.reason);
            rc = -1;
        }
        sb_gcp_response_clear(&resp);
    }
    if (rc == 0 && p->schema_error) {
        for (size_t k = 0; k < n; k++)
            sb_batch_set_result(b, idx[k], SB_RESULT_FAIL, "%s", p->schema_error);
        sb_log(p->ins, SB_LOG_ERROR, "%s", p->schema_error);
        rc = -1;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- rendering ------------------------------------------------------------- */

/* One row's typed values, one per rows->cols entry (NULL = SQL NULL). */
typedef struct row {
    char **v;
    size_t ev;      /* index into the batch */
    size_t spec;    /* index into rows->rows */
} row;

static void row_free(bq *p, row *r)
{
    if (r->v)
        for (size_t i = 0; i < p->rows->ncols; i++)
            free(r->v[i]);
    free(r->v);
    r->v = NULL;
}

/* Render event i's rows into out[] (room for rows->nrows). 0, or -1 with the reason. */
static int render(bq *p, sb_event *ev, size_t i, row *out, char *err, size_t errsz)
{
    size_t nc = p->rows->ncols;
    for (size_t r = 0; r < p->rows->nrows; r++) {
        const bq_rowspec *rs = &p->rows->rows[r];
        out[r] = (row){.v = calloc(nc, sizeof(char *)), .ev = i, .spec = r};
        if (!out[r].v)
            abort();
        for (size_t k = 0; k < rs->ncells; k++) {
            char terr[256];
            char *text = sb_template_render(rs->cells[k].tpl, ev, terr, sizeof terr);
            if (!text) {
                sb_err(err, errsz, "row %s, column %s: %s", rs->name, p->rows->cols[rs->cells[k].col], terr);
                goto fail;
            }
            int rc = bq_type_value(p->colmeta[rs->cells[k].col], text, &p->zone, &out[r].v[rs->cells[k].col], terr,
                                   sizeof terr);
            free(text);
            if (rc != 0) {
                sb_err(err, errsz, "row %s: %s", rs->name, terr);
                goto fail;
            }
        }
        for (size_t c = 0; c < nc; c++)
            if (!out[r].v[c] && p->colmeta[c]->required && p->mode != MODE_UPDATE) {
                sb_err(err, errsz, "row %s: column %s is REQUIRED and the value is empty", rs->name, p->rows->cols[c]);
                goto fail;
            }
        for (size_t k = 0; k < p->nkey; k++)
            if (!out[r].v[p->key[k]]) {
                sb_err(err, errsz, "row %s: key column %s is empty", rs->name, p->rows->cols[p->key[k]]);
                goto fail;
            }
    }
    return 0;
fail:
    for (size_t r = 0; r < p->rows->nrows; r++)
        row_free(p, &out[r]);
    return -1;
}

static int same_key(bq *p, const row *a, const row *b)
{
    for (size_t k = 0; k < p->nkey; k++)
        if (strcmp(a->v[p->key[k]], b->v[p->key[k]]) != 0)
            return 0;
    return 1;
}

static uint64_t key_hash(bq *p, const row *r)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over the key values, each with its terminator */
    for (size_t k = 0; k < p->nkey; k++)
        for (const unsigned char *c = (const unsigned char *)r->v[p->key[k]];; c++) {
            h = (h ^ *c) * 1099511628211ULL;
            if (!*c)
                break;
        }
    return h;
}

/* ---- DML ------------------------------------------------------------------- */

static void add_ident(sb_strbuf *s, const char *name)
{
    sb_strbuf_printf(s, "`%s`", name); /* names are [A-Za-z0-9_], checked at create */
}

static char *dml_sql(bq *p)
{
    sb_strbuf s = {0};
    sb_strbuf_printf(&s, "MERGE `%s` T USING UNNEST(@rows) S ON ", p->fq);
    for (size_t k = 0; k < p->nkey; k++) {
        const char *c = p->rows->cols[p->key[k]];
        sb_strbuf_printf(&s, "%sT.", k ? " AND " : "");
        add_ident(&s, c);
        sb_strbuf_add(&s, " = S.", 5);
        add_ident(&s, c);
    }
    if (p->mode == MODE_MERGE) {
        sb_strbuf_printf(&s, " WHEN NOT MATCHED THEN INSERT (");
        for (size_t c = 0; c < p->rows->ncols; c++) {
            if (c)
                sb_strbuf_add(&s, ", ", 2);
            add_ident(&s, p->colmeta[c]->name);
        }
        sb_strbuf_printf(&s, ") VALUES (");
        for (size_t c = 0; c < p->rows->ncols; c++) {
            sb_strbuf_add(&s, c ? ", S." : "S.", c ? 4 : 2);
            add_ident(&s, p->rows->cols[c]);
        }
        sb_strbuf_add(&s, ")", 1);
    } else {
        sb_strbuf_printf(&s, " WHEN MATCHED THEN UPDATE SET ");
        int first = 1;
        for (size_t c = 0; c < p->rows->ncols; c++) {
            int is_key = 0;
            for (size_t k = 0; k < p->nkey; k++)
                is_key |= p->key[k] == c;
            if (is_key)
                continue;
            if (!first)
                sb_strbuf_add(&s, ", ", 2);
            first = 0;
            add_ident(&s, p->colmeta[c]->name);
            sb_strbuf_add(&s, " = S.", 5);
            add_ident(&s, p->rows->cols[c]);
        }
    }
    return s.p;
}

static json_t *rows_param(bq *p, row *const *rows, size_t n)
{
    json_t *st = json_array();
    for (size_t c = 0; c < p->rows->ncols; c++)
        json_array_append_new(st, json_pack("{s:s, s:{s:s}}", "name", p->rows->cols[c], "type", "type",
                                            bq_param_type(p->colmeta[c]->type)));
    json_t *vals = json_array();
    for (size_t r = 0; r < n; r++) {
        json_t *sv = json_object();
        for (size_t c = 0; c < p->rows->ncols; c++)
            json_object_set_new(sv, p->rows->cols[c],
                                rows[r]->v[c] ? json_pack("{s:s}", "value", rows[r]->v[c]) : json_object());
        json_array_append_new(vals, json_pack("{s:o}", "structValues", sv));
    }
    return json_pack("{s:s, s:{s:s, s:{s:s, s:o}}, s:{s:o}}", "name", "rows", "parameterType", "type", "ARRAY",
                     "arrayType", "type", "STRUCT", "structTypes", st, "parameterValue", "arrayValues", vals);
}

/* 36 characters from the instance, the events and their attempt: a re-sent
 * request (lost answer, crash) is the same, a retry after a failure is not. */
static void request_id(bq *p, sb_batch *b, const size_t *idx, size_t n, char out[37])
{
    sb_strbuf s = {0};
    int attempt = 0;
    sb_strbuf_printf(&s, "%s|%s|%s", sb_instance_name(p->ins), p->fq, modes[p->mode]);
    for (size_t k = 0; k < n; k++) {
        sb_strbuf_printf(&s, "|%s", sb_event_id(sb_batch_event(b, idx[k])));
        int a = sb_batch_attempt(b, idx[k]);
        attempt = a > attempt ? a : attempt;
    }
    sb_strbuf_printf(&s, "|%d", attempt);
    uint64_t h1 = (uint64_t)sb_run_id(s.p);
    sb_strbuf_add(&s, "#2", 2);
    uint64_t h2 = (uint64_t)sb_run_id(s.p);
    free(s.p);
    snprintf(out, 37, "sb-%016" PRIx64 "-%016" PRIx64, h1, h2);
}

typedef struct call {
    bq *p;
    sb_batch *b;
} call;

static void run_dml(call *cl, const size_t *idx, size_t n, int split_ok);

/* The events idx[0..n) ran in a completed job that affected `affected` rows
 * of `expected`. */
static void dml_done(call *cl, const size_t *idx, size_t n, const char *job, long long affected, long long expected,
                     int split_ok)
{
    bq *p = cl->p;
    if (p->mode == MODE_UPDATE && affected < expected) {
        if (n > 1 && split_ok) {
            /* which rows are missing: each event on its own (an update is idempotent) */
            for (size_t k = 0; k < n; k++)
                run_dml(cl, &idx[k], 1, 0);
            return;
        }
        for (size_t k = 0; k < n; k++) {
            sb_batch_set_state(cl->b, idx[k], NULL);
            sb_batch_set_result(cl->b, idx[k], SB_RESULT_RETRY,
                                "update of %s matched %lld of %lld rows: the row to update is not there (yet)", p->fq,
                                affected, expected);
        }
        return;
    }
    for (size_t k = 0; k < n; k++) {
        if (job)
            sb_event_add(sb_batch_event(cl->b, idx[k]), "bigquery_job_id", json_string(job));
        sb_batch_set_result(cl->b, idx[k], SB_RESULT_OK, NULL);
    }
}

/* Google's reason and message of an error body. */
static void error_of(const sb_gcp_response *resp, const char **reason, const char **message, json_t **root)
{
    *root = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    json_t *e = json_object_get(*root, "error");
    json_t *first = json_array_get(json_object_get(e, "errors"), 0);
    *reason = json_string_value(json_object_get(first, "reason"));
    *message = json_string_value(json_object_get(e, "message"));
    if (!*message)
        *message = json_string_value(json_object_get(first, "message"));
}

static int contains(const char *s, const char *what)
{
    return s && strstr(s, what) != NULL;
}

/* A refused statement or job. */
static void dml_error(call *cl, const size_t *idx, size_t n, sb_gcp_result rc, const sb_gcp_response *resp,
                      const char *err, int split_ok)
{
    bq *p = cl->p;
    for (size_t k = 0; k < n; k++)
        sb_batch_set_state(cl->b, idx[k], NULL);
    const char *reason = NULL, *message = NULL;
    json_t *root = NULL;
    if (rc == SB_GCP_HTTP_ERROR)
        error_of(resp, &reason, &message, &root);
    sb_gcp_outcome o = sb_gcp_classify(rc, resp, err, SB_GCP_404_RETRY);
    const char *why = message ? message : o.reason;
    int transient = o.result == SB_RESULT_RETRY || contains(reason, "rateLimitExceeded") ||
                    contains(reason, "backendError") || contains(reason, "internalError") ||
                    contains(why, "streaming buffer") || contains(why, "Could not serialize access") ||
                    contains(why, "concurrent update");
    if (transient) {
        if (contains(why, "streaming buffer"))
            sb_log(p->ins, SB_LOG_WARN, "%s: rows of %s are still in the streaming buffer (written by insertAll, "
                   "not by this sink's merge); retrying until BigQuery flushes them: %s", modes[p->mode], p->fq, why);
        else
            sb_log(p->ins, SB_LOG_WARN, "%s of %zu events on %s failed, will retry: %s", modes[p->mode], n, p->fq, why);
        for (size_t k = 0; k < n; k++) {
            sb_batch_set_result(cl->b, idx[k], SB_RESULT_RETRY, "%s", why);
            if (o.retry_after_ms > 0)
                sb_batch_set_retry_after(cl->b, idx[k], o.retry_after_ms);
        }
    } else if (n > 1 && split_ok) {
        sb_log(p->ins, SB_LOG_WARN, "%s of %zu events on %s refused (%s); running them one by one to find the one "
               "at fault", modes[p->mode], n, p->fq, why);
        for (size_t k = 0; k < n; k++)
            run_dml(cl, &idx[k], 1, 0);
    } else {
        sb_log(p->ins, SB_LOG_WARN, "%s on %s refused: %s", modes[p->mode], p->fq, why);
        for (size_t k = 0; k < n; k++)
            sb_batch_set_result(cl->b, idx[k], SB_RESULT_FAIL, "BigQuery %s: %s", reason ? reason : "error", why);
    }
    json_decref(root);
}

/* A job answer (jobs.query or jobs.getQueryResults) that came back 2xx. */
static void dml_answer(call *cl, const size_t *idx, size_t n, const sb_gcp_response *resp, long long expected,
                       int split_ok)
{
    bq *p = cl->p;
    json_t *root = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    json_t *ref = json_object_get(root, "jobReference");
    const char *job = json_string_value(json_object_get(ref, "jobId"));
    const char *loc = json_string_value(json_object_get(ref, "location"));
    if (!loc)
        loc = json_string_value(json_object_get(root, "location"));
    json_t *errs = json_object_get(root, "errors");
    if (json_is_true(json_object_get(root, "jobComplete")) && json_array_size(errs) == 0) {
        const char *aff = json_string_value(json_object_get(root, "numDmlAffectedRows"));
        dml_done(cl, idx, n, job, aff ? strtoll(aff, NULL, 10) : 0, expected, split_ok);
    } else if (json_array_size(errs) > 0) {
        /* a complete job that failed, reported in a 2xx answer */
        json_t *e = json_array_get(errs, 0);
        const char *msg = json_string_value(json_object_get(e, "message"));
        json_t *eb = json_pack("{s:{s:s, s:[O]}}", "error", "message", msg ? msg : "job failed", "errors", e);
        char *body = eb ? json_dumps(eb, JSON_COMPACT) : NULL;
        json_decref(eb);
        sb_gcp_response fake = {.status = 400, .body = body, .body_len = body ? strlen(body) : 0};
        dml_error(cl, idx, n, SB_GCP_HTTP_ERROR, &fake, "job failed", split_ok);
        free(body);
    } else if (job) {
        for (size_t k = 0; k < n; k++) {
            json_t *st = json_pack("{s:s, s:I}", "job", job, "rows", (json_int_t)expected);
            if (loc)
                json_object_set_new(st, "location", json_string(loc));
            sb_batch_set_state(cl->b, idx[k], st);
            sb_batch_wait(cl->b, idx[k], p->c->poll_ms, "BigQuery job %s is running", job);
        }
    } else {
        for (size_t k = 0; k < n; k++)
            sb_batch_set_result(cl->b, idx[k], SB_RESULT_RETRY, "BigQuery answered without a job reference");
    }
    json_decref(root);
}

/* Run one statement for events idx[0..n): their rows, de-duplicated by key
 * (merge keeps the first, update the last). */
static void run_dml(call *cl, const size_t *idx, size_t n, int split_ok)
{
    bq *p = cl->p;
    size_t nr = p->rows->nrows;
    row *all = calloc(n * nr, sizeof *all);
    row **uniq = calloc(n * nr, sizeof *uniq);
    size_t *ok = calloc(n, sizeof *ok);
    if (!all || !uniq || !ok)
        abort();
    size_t nu = 0, nok = 0;
    /* rows by key: an open-addressing index into uniq[] (slot 0 = empty), so
     * de-duplicating a batch of 1,000 rows is not 500,000 comparisons */
    size_t nslot = 16;
    while (nslot < 2 * n * nr)
        nslot *= 2;
    size_t *slot = calloc(nslot, sizeof *slot);
    if (!slot)
        abort();
    for (size_t k = 0; k < n; k++) {
        char err[512];
        sb_event *ev = sb_batch_event(cl->b, idx[k]);
        if (render(p, ev, idx[k], &all[k * nr], err, sizeof err) != 0) {
            sb_log(p->ins, SB_LOG_WARN, "event %s: %s", sb_event_id(ev), err);
            sb_batch_set_result(cl->b, idx[k], SB_RESULT_FAIL, "%s", err);
            continue;
        }
        ok[nok++] = idx[k];
        for (size_t r = 0; r < nr; r++) {
            row *x = &all[k * nr + r];
            size_t h = (size_t)key_hash(p, x) & (nslot - 1);
            while (slot[h] && !same_key(p, uniq[slot[h] - 1], x))
                h = (h + 1) & (nslot - 1);
            if (!slot[h]) {
                uniq[nu++] = x;
                slot[h] = nu;
            } else if (p->mode == MODE_UPDATE) {
                uniq[slot[h] - 1] = x;
            }
        }
    }
    if (nok) {
        char *sql = dml_sql(p);
        char rid[37];
        request_id(p, cl->b, ok, nok, rid);
        json_t *body = json_pack("{s:s, s:b, s:s, s:[o], s:s, s:I}", "query", sql, "useLegacySql", 0, "parameterMode",
                                 "NAMED", "queryParameters", rows_param(p, uniq, nu), "requestId", rid, "timeoutMs",
                                 (json_int_t)p->c->query_timeout_ms);
        if (p->c->location)
            json_object_set_new(body, "location", json_string(p->c->location));
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        free(sql);
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = p->query_url, .headers = json_headers, .body = text,
                              .body_len = strlen(text), .idempotent = 1 /* requestId */, .no_wait = 1};
        sb_gcp_response resp;
        char err[1024] = "";
        pthread_mutex_lock(&p->tl->mu);
        sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        pthread_mutex_unlock(&p->tl->mu);
        free(text);
        if (rc == SB_GCP_OK)
            dml_answer(cl, ok, nok, &resp, (long long)nu, split_ok);
        else
            dml_error(cl, ok, nok, rc, &resp, err, split_ok);
        sb_gcp_response_clear(&resp);
    }
    for (size_t i = 0; i < n * nr; i++)
        row_free(p, &all[i]);
    free(all);
    free(uniq);
    free(ok);
    free(slot);
}

/* Events waiting for job `job`: look at it once. */
static void poll_job(call *cl, const size_t *idx, size_t n, const char *job, const char *loc, long long expected)
{
    bq *p = cl->p;
    char *url = sb_asprintf("%s/%s?maxResults=0&timeoutMs=0%s%s", p->query_url, job, loc ? "&location=" : "",
                            loc ? loc : "");
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = url, .idempotent = 1, .no_wait = 1};
    sb_gcp_response resp;
    char err[1024] = "";
    sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
    free(url);
    if (rc == SB_GCP_OK) {
        dml_answer(cl, idx, n, &resp, expected, 1);
    } else if (rc == SB_GCP_HTTP_ERROR && resp.status == 404) {
        /* the job is gone (or never was): the statement is idempotent, run it again */
        sb_log(p->ins, SB_LOG_WARN, "BigQuery job %s not found; running its statement again", job);
        for (size_t k = 0; k < n; k++)
            sb_batch_set_state(cl->b, idx[k], NULL);
        run_dml(cl, idx, n, 1);
    } else {
        sb_gcp_outcome o = sb_gcp_classify(rc, &resp, err, 0);
        if (o.result == SB_RESULT_RETRY) {
            /* keep the job in the state: the next call looks at it again */
            for (size_t k = 0; k < n; k++) {
                sb_batch_set_result(cl->b, idx[k], SB_RESULT_RETRY, "polling BigQuery job %s: %s", job, o.reason);
                sb_batch_set_state(cl->b, idx[k], json_deep_copy(sb_batch_state(cl->b, idx[k])));
            }
        } else {
            dml_error(cl, idx, n, rc, &resp, err, 1);
        }
    }
    sb_gcp_response_clear(&resp);
}

/* ---- insertAll --------------------------------------------------------------- */

static void insert_all(call *cl, const size_t *idx, size_t n)
{
    bq *p = cl->p;
    size_t nr = p->rows->nrows;
    row *all = calloc(n * nr, sizeof *all);
    size_t *rowev = calloc(n * nr, sizeof *rowev); /* request row -> k */
    int *bad = calloc(n, sizeof *bad);
    if (!all || !rowev || !bad)
        abort();
    json_t *rows = json_array();
    for (size_t k = 0; k < n; k++) {
        char err[512];
        sb_event *ev = sb_batch_event(cl->b, idx[k]);
        if (render(p, ev, idx[k], &all[k * nr], err, sizeof err) != 0) {
            sb_batch_set_result(cl->b, idx[k], SB_RESULT_FAIL, "%s", err);
            bad[k] = 1;
            continue;
        }
        for (size_t r = 0; r < nr; r++) {
            row *x = &all[k * nr + r];
            const char *eid = sb_event_id(ev);
            char *iid = sb_asprintf("%s/%s", eid, p->rows->rows[r].name);
            if (strlen(iid) > BQ_MAX_INSERT_ID) {
                free(iid);
                iid = sb_asprintf("h%016" PRIx64 "/%s", (uint64_t)sb_run_id(eid), p->rows->rows[r].name);
            }
            json_t *j = json_object();
            for (size_t c = 0; c < p->rows->ncols; c++)
                if (x->v[c])
                    json_object_set_new(j, p->colmeta[c]->name, json_string(x->v[c]));
            rowev[json_array_size(rows)] = k;
            json_array_append_new(rows, json_pack("{s:s, s:o}", "insertId", iid, "json", j));
            free(iid);
        }
    }
    size_t nsent = json_array_size(rows);
    if (nsent > 0) {
        json_t *rb = json_pack("{s:o, s:b, s:b}", "rows", rows, "skipInvalidRows", 0, "ignoreUnknownValues", 0);
        rows = NULL;
        char *text = json_dumps(rb, JSON_COMPACT);
        json_decref(rb);
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = p->insert_url, .headers = json_headers, .body = text,
                              .body_len = strlen(text), .idempotent = 1 /* insertId */, .no_wait = 1};
        sb_gcp_response resp;
        char err[1024] = "";
        sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        free(text);
        size_t *left = calloc(n, sizeof *left);
        size_t nleft = 0;
        if (rc == SB_GCP_OK) {
            json_t *root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
            json_t *ie = json_object_get(root, "insertErrors");
            size_t i;
            json_t *e;
            json_array_foreach(ie, i, e)
            {
                json_int_t at = json_integer_value(json_object_get(e, "index"));
                json_t *first = json_array_get(json_object_get(e, "errors"), 0);
                const char *reason = json_string_value(json_object_get(first, "reason"));
                const char *msg = json_string_value(json_object_get(first, "message"));
                if (at < 0 || (size_t)at >= nsent)
                    continue; /* not a row we sent */
                size_t k = rowev[at];
                if (bad[k])
                    continue;
                if (reason && strcmp(reason, "stopped") == 0) {
                    bad[k] = 2;
                    continue;
                }
                bad[k] = 1;
                sb_batch_set_result(cl->b, idx[k], SB_RESULT_FAIL, "insertAll into %s refused a row: %s: %s", p->fq,
                                    reason ? reason : "invalid", msg ? msg : "");
            }
            json_decref(root);
            for (size_t k = 0; k < n; k++)
                if (bad[k] == 2)
                    sb_batch_set_result(cl->b, idx[k], SB_RESULT_RETRY,
                                        "insertAll into %s stopped by another event's invalid row", p->fq);
                else if (!bad[k])
                    sb_batch_set_result(cl->b, idx[k], SB_RESULT_OK, NULL);
        } else {
            for (size_t k = 0; k < n; k++)
                if (!bad[k])
                    left[nleft++] = idx[k];
            sb_gcp_outcome o = sb_gcp_settle(cl->b, left, nleft, rc, &resp, err, SB_GCP_404_RETRY);
            sb_log(p->ins, o.result == SB_RESULT_FAIL ? SB_LOG_ERROR : SB_LOG_WARN, "insertAll into %s: %s", p->fq,
                   o.reason);
        }
        free(left);
        sb_gcp_response_clear(&resp);
    }
    json_decref(rows);
    for (size_t i = 0; i < n * nr; i++)
        row_free(p, &all[i]);
    free(all);
    free(rowev);
    free(bad);
}

/* ---- abandon ------------------------------------------------------------------ */

/* The core gave up on these events (step timeout, or retry budget spent) while their
 * job may still run: ask BigQuery to cancel it, once per job. A DML job is
 * atomic, so it either commits or leaves nothing; a cancel that comes too
 * late changes nothing, and replaying the event from the dead-letter store
 * finds its rows (the statement is idempotent). */
static void bq_abandon(void *self, sb_batch *b)
{
    bq *p = self;
    size_t n = sb_batch_count(b);
    for (size_t i = 0; i < n; i++) {
        const json_t *st = sb_batch_state(b, i);
        const char *job = json_string_value(json_object_get(st, "job"));
        const char *loc = json_string_value(json_object_get(st, "location"));
        if (!job)
            continue;
        /* once per job: the events of one statement are given up one by one */
        size_t ring = sizeof p->cancelled / sizeof p->cancelled[0];
        int seen = 0;
        pthread_mutex_lock(&p->mu);
        for (size_t j = 0; j < ring && !seen; j++)
            seen = p->cancelled[j] && strcmp(p->cancelled[j], job) == 0;
        if (!seen) {
            free(p->cancelled[p->ncancelled % ring]);
            p->cancelled[p->ncancelled++ % ring] = sb_asprintf("%s", job);
        }
        pthread_mutex_unlock(&p->mu);
        if (seen) {
            sb_log(p->ins, SB_LOG_WARN, "event %s given up while BigQuery job %s on %s was running (its cancel is "
                   "already requested)", sb_event_id(sb_batch_event(b, i)), job, p->fq);
            continue;
        }
        char *url = sb_asprintf("/bigquery/v2/projects/%s/jobs/%s/cancel%s%s", p->c->project, job,
                                loc ? "?location=" : "", loc ? loc : "");
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = url, .headers = json_headers,
                              .body = "{}", .body_len = 2, .idempotent = 1, .no_wait = 1};
        sb_gcp_response resp;
        char err[1024] = "";
        sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        free(url);
        if (rc == SB_GCP_OK)
            sb_log(p->ins, SB_LOG_WARN, "event %s given up while BigQuery job %s on %s was running; cancel requested "
                   "(a job that already committed keeps its rows: replaying the event finds them)",
                   sb_event_id(sb_batch_event(b, i)), job, p->fq);
        else
            sb_log(p->ins, SB_LOG_WARN, "event %s given up while BigQuery job %s on %s was running; the cancel "
                   "failed (%s): the job may still commit, which a replay of the event finds harmless",
                   sb_event_id(sb_batch_event(b, i)), job, p->fq, resp.error_line ? resp.error_line : err);
        sb_gcp_response_clear(&resp);
    }
}

/* ---- process ------------------------------------------------------------------ */

static void bq_process(void *self, sb_batch *b)
{
    bq *p = self;
    size_t n = sb_batch_count(b);
    if (!n)
        return;
    size_t *all = calloc(n, sizeof *all), *fresh = calloc(n, sizeof *fresh), *grp = calloc(n, sizeof *grp);
    int *polled = calloc(n, sizeof *polled);
    if (!all || !fresh || !grp || !polled)
        abort();
    for (size_t i = 0; i < n; i++)
        all[i] = i;
    call cl = {p, b};
    if (load_schema(p, b, all, n) != 0)
        goto out;
    /* events whose job is running: one look per job */
    for (size_t i = 0; i < n; i++) {
        const char *job = json_string_value(json_object_get(sb_batch_state(b, i), "job"));
        if (!job || polled[i])
            continue;
        size_t ng = 0;
        for (size_t j = i; j < n; j++) {
            const char *jj = json_string_value(json_object_get(sb_batch_state(b, j), "job"));
            if (!polled[j] && jj && strcmp(jj, job) == 0) {
                grp[ng++] = j;
                polled[j] = 1;
            }
        }
        char *jobc = sb_asprintf("%s", job); /* the state may be replaced while polling */
        const char *loc = json_string_value(json_object_get(sb_batch_state(b, i), "location"));
        char *locc = loc ? sb_asprintf("%s", loc) : NULL;
        long long expected = json_integer_value(json_object_get(sb_batch_state(b, i), "rows"));
        poll_job(&cl, grp, ng, jobc, locc, expected);
        free(jobc);
        free(locc);
    }
    size_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (!polled[i])
            fresh[nf++] = i;
    /* chunks within max_rows */
    size_t per = (size_t)p->c->max_rows / p->rows->nrows;
    if (per == 0)
        per = 1;
    for (size_t s = 0; s < nf; s += per) {
        size_t m = nf - s < per ? nf - s : per;
        if (p->mode == MODE_INSERT_ALL)
            insert_all(&cl, fresh + s, m);
        else
            run_dml(&cl, fresh + s, m, 1);
    }
out:
    free(all);
    free(fresh);
    free(grp);
    free(polled);
}

/* ---- preflight ----------------------------------------------------------------- */

/* A dry run of the statement this instance sends (BigQuery checks the
 * table, the columns and the caller's permissions, and runs nothing). */
static void preflight_dry_run(bq *p, sb_preflight *pf)
{
    char *sql = p->mode == MODE_INSERT_ALL ? sb_asprintf("SELECT * FROM `%s` LIMIT 0", p->fq) : dml_sql(p);
    json_t *body = json_pack("{s:s, s:b, s:b}", "query", sql, "useLegacySql", 0, "dryRun", 1);
    if (p->mode != MODE_INSERT_ALL) {
        json_object_set_new(body, "parameterMode", json_string("NAMED"));
        json_object_set_new(body, "queryParameters", json_pack("[o]", rows_param(p, NULL, 0)));
    }
    if (p->c->location)
        json_object_set_new(body, "location", json_string(p->c->location));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = p->query_url,
                          .headers = json_headers, .body = text, .body_len = strlen(text), .idempotent = 1,
                          .max_attempts = 2, .deadline_ms = 20000};
    sb_gcp_response resp;
    char err[1024] = "";
    sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
    char *what = sb_asprintf("dry run of the %s statement on %s", modes[p->mode], p->fq);
    if (rc == SB_GCP_OK) {
        sb_preflight_ok(pf, what);
    } else {
        const char *reason = NULL, *message = NULL;
        json_t *root = NULL;
        if (rc == SB_GCP_HTTP_ERROR)
            error_of(&resp, &reason, &message, &root);
        const char *why = message ? message : resp.error_line ? resp.error_line : err;
        if (resp.status == 403)
            sb_preflight_fail(pf, what, "%s; grant the service account roles/bigquery.jobUser on project %s and "
                              "roles/bigquery.dataEditor on the table", why, p->c->project);
        else
            sb_preflight_fail(pf, what, "%s%s%s", reason ? reason : "", reason ? ": " : "", why);
        json_decref(root);
    }
    free(what);
    free(text);
    free(sql);
    sb_gcp_response_clear(&resp);
}

/* Read-only: the token, the table and its columns, a dry run. */
static void bq_preflight(void *self, sb_preflight *pf)
{
    bq *p = self;
    if (sb_gcp_preflight_token(p->gc, pf) != 0)
        return;
    char *what = sb_asprintf("table %s exists (tables.get)", p->fq);
    char *fix = sb_asprintf("create it (bq mk --table %s:%s.%s id:INTEGER,command:STRING,timestamp:DATETIME,"
                            "source:STRING) or fix project/dataset/table", p->c->project, p->c->dataset, p->c->table);
    json_t *t = NULL;
    int rc = sb_gcp_preflight_get(p->gc, pf, p->table_url, what, fix, "roles/bigquery.dataViewer on the dataset", &t);
    free(what);
    free(fix);
    if (rc != 0)
        return;
    char err[1024] = "";
    pthread_mutex_lock(&p->mu);
    if (!p->schema) {
        p->schema = bq_schema_from_table(t, err, sizeof err);
        if (p->schema)
            check_schema(p);
        else
            p->schema_error = sb_asprintf("table %s: %s", p->fq, err);
    }
    const char *serr = p->schema_error;
    pthread_mutex_unlock(&p->mu);
    json_decref(t);
    what = sb_asprintf("the columns of rows are in %s", p->fq);
    if (serr) {
        sb_preflight_fail(pf, what, "%s", serr);
        free(what);
        return;
    }
    sb_preflight_ok(pf, what);
    free(what);
    preflight_dry_run(p, pf);
}

/* ---- reconcile ------------------------------------------------------------------ */

/* One GET or POST for registry_rows: a short retry budget, no core scheduler. 0 + *root, or -1 + errstr. */
static int rr_call(bq *p, const char *method, const char *url, const char *body, json_t **root, char *errstr,
                   size_t errstr_size)
{
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = method, .url = url, .idempotent = 1,
                          .max_attempts = 3, .deadline_ms = 60000};
    if (body) {
        req.headers = json_headers;
        req.body = body;
        req.body_len = strlen(body);
    }
    sb_gcp_response resp;
    char err[1024] = "";
    sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
    int out = 0;
    if (rc != SB_GCP_OK) {
        out = sb_err(errstr, errstr_size, "%s", resp.error_line ? resp.error_line : err);
    } else {
        *root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        json_t *errs = json_object_get(*root, "errors");
        if (!*root) {
            out = sb_err(errstr, errstr_size, "BigQuery answered with no JSON");
        } else if (json_array_size(errs) > 0) {
            const char *m = json_string_value(json_object_get(json_array_get(errs, 0), "message"));
            out = sb_err(errstr, errstr_size, "query failed: %s", m ? m : "no message");
            json_decref(*root);
            *root = NULL;
        }
    }
    sb_gcp_response_clear(&resp);
    return out;
}

/* The registry rows of every run that has a row at or after since_us, or
 * a pending (NULL) one: the instance is a registry when its table has the
 * registry columns id, source and timestamp (DESIGN §1). */
static int bq_registry_rows(void *self, int64_t since_us, json_t **rows, char *errstr, size_t errstr_size)
{
    bq *p = self;
    *rows = NULL;
    json_t *t = NULL;
    if (rr_call(p, "GET", p->table_url, NULL, &t, errstr, errstr_size) != 0)
        return -1;
    char err[512] = "";
    bq_schema *sc = bq_schema_from_table(t, err, sizeof err);
    json_decref(t);
    if (!sc)
        return sb_err(errstr, errstr_size, "table %s: %s", p->fq, err);
    int registry = bq_schema_find(sc, "id") && bq_schema_find(sc, "source") && bq_schema_find(sc, "timestamp");
    bq_schema_free(sc);
    if (!registry)
        return 0;
    time_t secs = (time_t)(since_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char since[32];
    strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%S", &tm);
    char *sql = sb_asprintf("SELECT id, source, timestamp FROM `%s` WHERE id IN (SELECT id FROM `%s` WHERE "
                            "timestamp IS NULL OR timestamp >= @since)", p->fq, p->fq);
    json_t *body = json_pack("{s:s, s:b, s:s, s:[{s:s, s:{s:s}, s:{s:s}}], s:I, s:I}", "query", sql, "useLegacySql",
                             0, "parameterMode", "NAMED", "queryParameters", "name", "since", "parameterType", "type",
                             "DATETIME", "parameterValue", "value", since, "timeoutMs", (json_int_t)10000,
                             "maxResults", (json_int_t)10000);
    if (p->c->location)
        json_object_set_new(body, "location", json_string(p->c->location));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    free(sql);
    json_t *root = NULL;
    int rc = rr_call(p, "POST", p->query_url, text, &root, errstr, errstr_size);
    free(text);
    json_t *out = json_array();
    char *job = NULL, *loc = NULL;
    for (int polls = 0; rc == 0; polls++) {
        json_t *ref = json_object_get(root, "jobReference");
        if (!job && json_string_value(json_object_get(ref, "jobId"))) {
            job = sb_asprintf("%s", json_string_value(json_object_get(ref, "jobId")));
            const char *l = json_string_value(json_object_get(ref, "location"));
            loc = l ? sb_asprintf("%s", l) : NULL;
        }
        const char *token = NULL;
        if (json_is_true(json_object_get(root, "jobComplete"))) {
            size_t i;
            json_t *r;
            json_array_foreach(json_object_get(root, "rows"), i, r)
            {
                json_t *f = json_object_get(r, "f");
                const char *id = json_string_value(json_object_get(json_array_get(f, 0), "v"));
                const char *src = json_string_value(json_object_get(json_array_get(f, 1), "v"));
                const char *ts = json_string_value(json_object_get(json_array_get(f, 2), "v"));
                if (!id || !src)
                    continue;
                json_array_append_new(out, json_pack("{s:I, s:s, s:o}", "id", (json_int_t)strtoll(id, NULL, 10),
                                                     "source", src, "timestamp", ts ? json_string(ts) : json_null()));
            }
            token = json_string_value(json_object_get(root, "pageToken"));
            if (!token)
                break;
        } else if (polls > 120) {
            rc = sb_err(errstr, errstr_size, "query job %s did not complete", job ? job : "?");
            break;
        }
        if (!job) {
            rc = sb_err(errstr, errstr_size, "BigQuery answered without a job reference");
            break;
        }
        char *url = sb_asprintf("%s/%s?timeoutMs=10000&maxResults=10000%s%s%s%s", p->query_url, job,
                                token ? "&pageToken=" : "", token ? token : "", loc ? "&location=" : "",
                                loc ? loc : "");
        json_decref(root);
        root = NULL;
        rc = rr_call(p, "GET", url, NULL, &root, errstr, errstr_size);
        free(url);
    }
    json_decref(root);
    free(job);
    free(loc);
    if (rc != 0) {
        json_decref(out);
        return -1;
    }
    *rows = out;
    return 0;
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "bigquery",
    .kind = SB_KIND_SINK,
    .version = "1.0",
    .description = "Write events as BigQuery rows: idempotent MERGE (insert once, update later) or streaming inserts",
    .flags = SB_PLUGIN_CONCURRENT,
    .options = options,
    .config_size = sizeof(bq_conf),
    .create = bq_create,
    .process = bq_process,
    .abandon = bq_abandon,
    .destroy = bq_destroy,
    .preflight = bq_preflight,
    .registry_rows = bq_registry_rows,
};
