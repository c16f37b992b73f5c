/*
 * rrlog.c - the Run Replicator log state machine (see rrlog.h).
 *
 * A run opens at the first line that says something about it (the
 * invocation, Schema Name, Table Name, Processing for date, Starting
 * Import) and closes at its first success or failure marker, at a
 * non-zero RETCODE, or at the end of the file after a RETCODE. Markers
 * seen while no run is open (the "Script completed successfully" that
 * follows "Counts have matched, Success!!") belong to the run already
 * reported and are ignored. A line that names another schema or table
 * while a run is open means the old run was cut short (killed, out of
 * disk): it is reported and dropped, and the new one opens.
 */
#include "rrlog.h"

#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <syncbridge/log.h>

#define WS "[[:space:]]*"

const char *const rrlog_pattern_option[RRP_COUNT] = {
    [RRP_TIMESTAMP] = "timestamp_pattern", [RRP_COMMAND] = "command_pattern",
    [RRP_IGNORE] = "ignore_pattern",       [RRP_SCHEMA] = "schema_pattern",
    [RRP_TABLE] = "table_pattern",         [RRP_DATE] = "date_pattern",
    [RRP_START] = "start_pattern",         [RRP_TD_COUNT] = "td_count_pattern",
    [RRP_HIVE_COUNT] = "hive_count_pattern", [RRP_SUCCESS] = "success_pattern",
    [RRP_FAILURE] = "failure_pattern",     [RRP_RETCODE] = "retcode_pattern",
};

const char *const rrlog_pattern_default[RRP_COUNT] = {
    [RRP_TIMESTAMP] = "^\\[?([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2})(\\.[0-9]+)?\\]?" WS,
    [RRP_COMMAND] = "^[+[:space:]]*(([^[:space:]'\"]*sh[[:space:]]+)?[^[:space:]'\"]*run_replicator\\.sh([[:space:]]+[^["
                    ":space:]]+)*)" WS "$",
    [RRP_IGNORE] = "^" WS "(\\+|#+" WS "$|$)",
    [RRP_SCHEMA] = "^" WS "Schema Name" WS ":-" WS "([^[:space:]]+)" WS "$",
    [RRP_TABLE] = "^" WS "Table Name" WS ":-" WS "([^[:space:]]+)" WS "$",
    [RRP_DATE] = "^" WS "Processing for date" WS ":" WS "([0-9-]+)" WS "$",
    [RRP_START] = "^" WS "Starting Import of ([^.[:space:]]+)\\.([^[:space:]]+)" WS "$",
    [RRP_TD_COUNT] = "^" WS "Teradata Count" WS ":" WS "([0-9]+)" WS "$",
    [RRP_HIVE_COUNT] = "^" WS "Hive Count" WS ":" WS "([0-9]+)" WS "$",
    [RRP_SUCCESS] = "^" WS "(Script completed successfully|Counts have matched, Success!!)" WS "$",
    [RRP_FAILURE] = "^" WS "(Script FAILED|Counts have not matched.*|Processing failed for date.*)" WS "$",
    [RRP_RETCODE] = "^" WS "RETCODE" WS ":" WS "([0-9]+)" WS "$",
};

struct rrlog_config {
    regex_t re[RRP_COUNT];
    int enabled[RRP_COUNT];
    char script[RR_NAME_MAX + 1];
};

#define VAL_MAX 256

struct rrlog {
    const rrlog_config *cfg;
    rrlog_report_fn report;
    void *ctx;
    int open;
    int64_t first_off;
    int has_cmd;
    rr_command cmd;
    char *command_text;
    char schema[VAL_MAX], table[VAL_MAX], run_date[16];
    int64_t td, hive, retcode; /* -1 = not seen */
    int64_t started_us;
    int last_was_retcode;
    uint64_t hash;       /* FNV-1a over the run's lines so far */
    const char *cur;     /* the line being fed */
    int cur_hashed;
};

static void hash_line(rrlog *r)
{
    if (r->cur_hashed || !r->cur)
        return;
    for (const unsigned char *p = (const unsigned char *)r->cur; *p; p++)
        r->hash = (r->hash ^ *p) * 1099511628211ULL;
    r->hash = (r->hash ^ '\n') * 1099511628211ULL;
    r->cur_hashed = 1;
}

rrlog_config *rrlog_config_new(const char *const patterns[RRP_COUNT], const char *script_name, char *errstr,
                               size_t errstr_size)
{
    rrlog_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    snprintf(cfg->script, sizeof cfg->script, "%s", script_name && *script_name ? script_name : "run_replicator.sh");
    for (int i = 0; i < RRP_COUNT; i++) {
        const char *p = patterns && patterns[i] ? patterns[i] : rrlog_pattern_default[i];
        if (!*p) {
            if (i == RRP_TIMESTAMP || i == RRP_COMMAND || i == RRP_IGNORE)
                continue;
            snprintf(errstr, errstr_size, "%s must not be empty", rrlog_pattern_option[i]);
            rrlog_config_free(cfg);
            return NULL;
        }
        int rc = regcomp(&cfg->re[i], p, REG_EXTENDED);
        if (rc != 0) {
            char msg[256];
            regerror(rc, &cfg->re[i], msg, sizeof msg);
            snprintf(errstr, errstr_size, "%s \"%s\": %s", rrlog_pattern_option[i], p, msg);
            rrlog_config_free(cfg);
            return NULL;
        }
        cfg->enabled[i] = 1;
        size_t need = (i == RRP_START) ? 2 : (i == RRP_SUCCESS || i == RRP_FAILURE || i == RRP_IGNORE) ? 0 : 1;
        if (cfg->re[i].re_nsub < need) {
            snprintf(errstr, errstr_size, "%s \"%s\" needs %zu capture group%s", rrlog_pattern_option[i], p, need,
                     need > 1 ? "s" : "");
            rrlog_config_free(cfg);
            return NULL;
        }
    }
    return cfg;
}

void rrlog_config_free(rrlog_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < RRP_COUNT; i++)
        if (cfg->enabled[i])
            regfree(&cfg->re[i]);
    free(cfg);
}

rrlog *rrlog_new(const rrlog_config *cfg, rrlog_report_fn report, void *ctx)
{
    rrlog *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    r->report = report;
    r->ctx = ctx;
    rrlog_reset(r);
    return r;
}

void rrlog_reset(rrlog *r)
{
    free(r->command_text);
    const rrlog_config *cfg = r->cfg;
    rrlog_report_fn report = r->report;
    void *ctx = r->ctx;
    const char *cur = r->cur;
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->report = report;
    r->ctx = ctx;
    r->cur = cur; /* a line that supersedes a run is the new run's first */
    r->td = r->hive = r->retcode = -1;
}

void rrlog_free(rrlog *r)
{
    if (!r)
        return;
    free(r->command_text);
    free(r);
}

int rrlog_open_run(const rrlog *r, int64_t *first_off)
{
    if (r->open)
        *first_off = r->first_off;
    return r->open;
}

static void report(rrlog *r, int level, int64_t off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void report(rrlog *r, int level, int64_t off, const char *fmt, ...)
{
    if (!r->report)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->report(r->ctx, level, off, msg);
}

static void iso8601(int64_t us, char out[32])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "YYYY-MM-DD HH:MM:SS" in the host's local time (TZ) -> microseconds. */
static int parse_ts(const char *s, size_t len, int64_t *us)
{
    char buf[32];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct tm tm = {0};
    char sep;
    if (sscanf(buf, "%d-%d-%d%c%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &sep, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == (time_t)-1)
        return -1;
    *us = (int64_t)t * 1000000;
    return 0;
}

/* Regex group m of s into out, cut to fit at a character boundary (the
 * line is UTF-8: a cut inside a character made json_string() refuse the
 * value, and the run went out without it). */
static void group(const char *s, const regmatch_t *m, char *out, size_t outsz)
{
    const char *from = s + (m->rm_so < 0 ? 0 : m->rm_so);
    size_t len = m->rm_so < 0 ? 0 : (size_t)(m->rm_eo - m->rm_so);
    if (len >= outsz) {
        len = outsz - 1;
        while (len > 0 && ((unsigned char)from[len] & 0xC0) == 0x80) /* from[len]: a continuation byte */
            len--;
    }
    memcpy(out, from, len);
    out[len] = '\0';
}

static int64_t group_int(const char *s, const regmatch_t *m)
{
    char buf[24];
    group(s, m, buf, sizeof buf);
    return strtoll(buf, NULL, 10);
}

static void open_run(rrlog *r, int64_t off, int64_t at_us)
{
    r->open = 1;
    r->first_off = off;
    r->started_us = at_us;
    r->hash = 14695981039346656037ULL;
    r->cur_hashed = 0;
}

/* A line named a different run while one is open: drop the old one. */
static void supersede(rrlog *r, int64_t off, int64_t at_us, const char *what)
{
    report(r, SB_LOG_WARN, r->first_off,
           "run %s.%s that started here never finished: a new run (%s) starts at offset %lld; dropped",
           r->schema[0] ? r->schema : "?", r->table[0] ? r->table : "?", what, (long long)off);
    rrlog_reset(r);
    open_run(r, off, at_us);
}

/* Set a name (schema/table) of the current run, opening or superseding as needed. */
static void set_name(rrlog *r, char *slot, const char *value, int64_t off, int64_t at_us, const char *what)
{
    if (r->open && slot[0] && strcasecmp(slot, value) != 0) {
        char desc[VAL_MAX + 16];
        snprintf(desc, sizeof desc, "%s %s", what, value);
        supersede(r, off, at_us, desc);
    }
    if (!r->open)
        open_run(r, off, at_us);
    snprintf(slot, VAL_MAX, "%s", value);
}

/* Build the finished run; 1 with *out, or 0 if it cannot be reported (said
 * why). Out of memory: 1 with out->fields NULL. */
static int finish(rrlog *r, const char *status, const char *reason, int64_t at_us, rrlog_run *out)
{
    char errstr[256];
    char cmdline[2 * VAL_MAX + RR_NAME_MAX + 8];
    const char *text = r->command_text;
    if (!r->has_cmd) {
        /* the same identifier rules as an invocation, through the same parser */
        snprintf(cmdline, sizeof cmdline, "%s %s %s", r->cfg->script, r->schema, r->table);
        text = cmdline;
        const char *odd = " \t'\"\\<>;|&"; /* would be re-split by the parser: say it plainly */
        const char *why = !r->schema[0] ? "no schema in its log" : !r->table[0] ? "no table in its log" : NULL;
        if (!why && (strpbrk(r->schema, odd) || strpbrk(r->table, odd))) {
            snprintf(errstr, sizeof errstr, "%s \"%.64s\" is not a valid identifier",
                     strpbrk(r->schema, odd) ? "schema" : "table", strpbrk(r->schema, odd) ? r->schema : r->table);
            why = errstr;
        }
        if (why) {
            report(r, SB_LOG_ERROR, r->first_off, "run finished (%s) but rejected: %s", status, why);
            rrlog_reset(r);
            return 0;
        }
    }
    /* run_id is the caller's: the run's identity includes where it was read */
    rr_command c = {.offset_days = -1};
    json_t *f = json_object();
    int rc = f ? rr_command_fields(text, r->cfg->script, NULL, f, &c, errstr, sizeof errstr) : RR_NOMEM;
    if (rc == RR_INVALID) {
        report(r, SB_LOG_ERROR, r->first_off, "run finished (%s) but rejected: %s", status, errstr);
        json_decref(f);
        rrlog_reset(r);
        return 0;
    }
    if (rc == 0) {
        char ts[32];
        rc |= json_object_set_new(f, "status", json_string(status));
        rc |= json_object_set_new(f, "td_count", r->td >= 0 ? json_integer(r->td) : json_null());
        rc |= json_object_set_new(f, "hive_count", r->hive >= 0 ? json_integer(r->hive) : json_null());
        iso8601(r->started_us, ts);
        rc |= json_object_set_new(f, "started_at", json_string(ts));
        iso8601(at_us, ts);
        rc |= json_object_set_new(f, "finished_at", json_string(ts));
        if (r->run_date[0])
            rc |= json_object_set_new(f, "run_date", json_string(r->run_date));
        if (r->retcode >= 0)
            rc |= json_object_set_new(f, "retcode", json_integer(r->retcode));
        if (reason) /* cut at a character boundary (group()): only memory can fail it */
            rc |= json_object_set_new(f, "reason", json_string(reason));
        rc |= json_object_set_new(f, "log_offset", json_integer(r->first_off));
    }
    if (rc != 0) {
        json_decref(f);
        f = NULL;
    }
    out->fields = f;
    out->cmd = c;
    out->first_off = r->first_off;
    hash_line(r);
    out->content_hash = r->hash;
    rrlog_reset(r);
    return 1;
}

static int match(const rrlog *r, rrlog_pattern p, const char *s, regmatch_t *m, size_t nm)
{
    return r->cfg->enabled[p] && regexec(&r->cfg->re[p], s, nm, m, 0) == 0;
}

static int line_step(rrlog *r, const char *line, int64_t off, int64_t now_us, rrlog_run *out);

int rrlog_line(rrlog *r, const char *line, int64_t off, int64_t now_us, rrlog_run *out)
{
    r->cur = line;
    r->cur_hashed = 0;
    int rc = line_step(r, line, off, now_us, out);
    if (r->open)
        hash_line(r);
    r->cur = NULL;
    return rc;
}

static int line_step(rrlog *r, const char *line, int64_t off, int64_t now_us, rrlog_run *out)
{
    regmatch_t m[4];
    int64_t at = now_us;
    if (match(r, RRP_TIMESTAMP, line, m, 4) && m[0].rm_so == 0) {
        if (m[1].rm_so >= 0)
            parse_ts(line + m[1].rm_so, (size_t)(m[1].rm_eo - m[1].rm_so), &at);
        line += m[0].rm_eo;
    }

    if (match(r, RRP_COMMAND, line, m, 2)) {
        size_t gi = m[1].rm_so >= 0 ? 1 : 0;
        size_t len = (size_t)(m[gi].rm_eo - m[gi].rm_so);
        char *text = strndup(line + m[gi].rm_so, len);
        rr_command c;
        char errstr[256];
        if (!text)
            return 0;
        if (rr_parse_command(text, r->cfg->script, &c, errstr, sizeof errstr) != 0) {
            report(r, SB_LOG_WARN, off, "invocation line not understood (%s): %.200s", errstr, text);
            free(text);
            return 0;
        }
        int same = r->open &&
                   (r->has_cmd ? strcasecmp(c.schema, r->cmd.schema) == 0 && strcasecmp(c.table, r->cmd.table) == 0 &&
                                     strcmp(c.inc_val, r->cmd.inc_val) == 0
                               : (!r->schema[0] || strcasecmp(c.schema, r->schema) == 0) &&
                                     (!r->table[0] || strcasecmp(c.table, r->table) == 0));
        if (r->open && !same) {
            char desc[2 * RR_NAME_MAX + 16];
            snprintf(desc, sizeof desc, "invocation of %s.%s", c.schema, c.table);
            supersede(r, off, at, desc);
        }
        if (!r->open)
            open_run(r, off, at);
        if (!r->has_cmd) {
            r->has_cmd = 1;
            r->cmd = c;
            r->command_text = text;
            snprintf(r->schema, VAL_MAX, "%s", c.schema);
            snprintf(r->table, VAL_MAX, "%s", c.table);
        } else {
            free(text);
        }
        r->last_was_retcode = 0;
        return 0;
    }
    if (match(r, RRP_IGNORE, line, m, 1))
        return 0;

    if (match(r, RRP_FAILURE, line, m, 1)) {
        if (!r->open)
            return 0;
        char reason[VAL_MAX];
        group(line, &m[0], reason, sizeof reason);
        size_t n = strlen(reason), b = 0;
        while (n > 0 && (reason[n - 1] == ' ' || reason[n - 1] == '\t'))
            reason[--n] = '\0';
        while (reason[b] == ' ' || reason[b] == '\t')
            b++;
        return finish(r, "failed", reason + b, at, out);
    }
    if (match(r, RRP_SUCCESS, line, m, 1))
        return r->open ? finish(r, "succeeded", NULL, at, out) : 0;
    if (match(r, RRP_RETCODE, line, m, 2)) {
        if (!r->open)
            return 0;
        r->retcode = group_int(line, &m[1]);
        r->last_was_retcode = 1;
        if (r->retcode != 0) {
            char reason[64];
            snprintf(reason, sizeof reason, "RETCODE:%lld", (long long)r->retcode);
            return finish(r, "failed", reason, at, out);
        }
        return 0;
    }
    if (match(r, RRP_TD_COUNT, line, m, 2)) {
        if (r->open) {
            r->td = group_int(line, &m[1]);
            r->last_was_retcode = 0;
        }
        return 0;
    }
    if (match(r, RRP_HIVE_COUNT, line, m, 2)) {
        if (r->open) {
            r->hive = group_int(line, &m[1]);
            r->last_was_retcode = 0;
        }
        return 0;
    }
    char v[VAL_MAX], v2[VAL_MAX];
    if (match(r, RRP_START, line, m, 3)) {
        group(line, &m[1], v, sizeof v);
        group(line, &m[2], v2, sizeof v2);
        set_name(r, r->schema, v, off, at, "schema");
        set_name(r, r->table, v2, off, at, "table");
    } else if (match(r, RRP_SCHEMA, line, m, 2)) {
        group(line, &m[1], v, sizeof v);
        set_name(r, r->schema, v, off, at, "schema");
    } else if (match(r, RRP_TABLE, line, m, 2)) {
        group(line, &m[1], v, sizeof v);
        set_name(r, r->table, v, off, at, "table");
    } else if (match(r, RRP_DATE, line, m, 2)) {
        char d[16];
        group(line, &m[1], v, sizeof v);
        if (rr_parse_date(v, d) != 0) {
            report(r, SB_LOG_WARN, off, "\"%.64s\" is not a date (yyyymmdd or yyyy-mm-dd); ignored", v);
            return 0;
        }
        if (r->open && r->run_date[0] && strcmp(r->run_date, d) != 0) {
            char desc[64];
            snprintf(desc, sizeof desc, "date %s", d);
            supersede(r, off, at, desc);
        }
        if (!r->open)
            open_run(r, off, at);
        memcpy(r->run_date, d, sizeof d);
    } else {
        return 0; /* noise */
    }
    r->last_was_retcode = 0;
    return 0;
}

int rrlog_end(rrlog *r, int64_t now_us, rrlog_run *out)
{
    if (!r->open)
        return 0;
    if (r->last_was_retcode && r->retcode == 0)
        return finish(r, "succeeded", NULL, now_us, out);
    report(r, SB_LOG_WARN, r->first_off, "run %s.%s that started here has no end in its file; dropped",
           r->schema[0] ? r->schema : "?", r->table[0] ? r->table : "?");
    rrlog_reset(r);
    return 0;
}
