/*
 * rrlog.c - the Run Replicator log state machine (see rrlog.h).
 *
 * States: IDLE (no run), OPEN (invocation, header or a date seen, the
 * verdicts not all in) and DONE (every date has its verdict, or one
 * failed: the script has stopped; only its trailer may still come). A run
 * in DONE closes at its trailer's last line, at the next run's first line,
 * at the end of the file or when the file goes quiet. A run in OPEN is cut
 * short by a line that can only start another run (a second invocation or
 * Schema Name after its header, a date beyond its last): it is reported
 * with its date unfinished, and the new run opens.
 *
 * A date's verdict is not its count line alone: a job that logged a real
 * error (` Found Error!!`) or returned non-zero still prints `Counts have
 * matched, Success!!` and then `Processing failed for date : D`. So a
 * matched date stays provisional until the next date, the trailer, the
 * next run or the end of the file says nothing failed it.
 *
 * The default patterns are matched by hand ("the default patterns without
 * regexec" below); a pattern changed in the config goes to regexec.
 */
#include "rrlog.h"

#include <ctype.h>
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
    [RRP_TIMESTAMP] = "timestamp_pattern",
    [RRP_LOGTIME] = "time_pattern",
    [RRP_COMMAND] = "command_pattern",
    [RRP_IGNORE] = "ignore_pattern",
    [RRP_SCHEMA] = "schema_pattern",
    [RRP_TABLE] = "table_pattern",
    [RRP_INC_VAL] = "inc_val_pattern",
    [RRP_FULL_REFRESH] = "full_refresh_pattern",
    [RRP_OFFSET_DAYS] = "offset_days_pattern",
    [RRP_DATE] = "date_pattern",
    [RRP_START] = "start_pattern",
    [RRP_CONTEXT] = "context_pattern",
    [RRP_TD_COUNT] = "td_count_pattern",
    [RRP_HIVE_COUNT] = "hive_count_pattern",
    [RRP_FOUND_ERROR] = "found_error_pattern",
    [RRP_DATE_OK] = "date_success_pattern",
    [RRP_DATE_FAIL] = "date_failure_pattern",
    [RRP_RETCODE] = "retcode_pattern",
    [RRP_END_OK] = "success_pattern",
    [RRP_END_FAIL] = "failure_pattern",
};

const char *const rrlog_pattern_default[RRP_COUNT] = {
    [RRP_TIMESTAMP] = "^\\[?([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2})(\\.[0-9]+)?\\]?" WS,
    [RRP_LOGTIME] = "([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}),[0-9]{3}",
    [RRP_COMMAND] = "^[+[:space:]]*([^+[:space:]].*run_replicator\\.sh([[:space:]'\"].*)?)$",
    [RRP_IGNORE] = "^" WS "(\\+|#+" WS "$|$)",
    [RRP_SCHEMA] = "^" WS "Schema Name" WS ":-" WS "([^[:space:]]+)" WS "$",
    [RRP_TABLE] = "^" WS "Table Name" WS ":-" WS "([^[:space:]]+)" WS "$",
    [RRP_INC_VAL] = "^" WS "Picking the inc_val as[[:space:]]+([^[:space:]]+)" WS "$",
    [RRP_FULL_REFRESH] = "^" WS "No inc_val and inc_key[[:space:]]+was passed, Considering this table as a full refresh",
    [RRP_OFFSET_DAYS] = "^" WS "(No offset_days specified|No\\. of offset_days specified" WS "=" WS "([0-9]+))",
    [RRP_DATE] = "^" WS "Processing for date" WS ":" WS "([0-9-]+)" WS "$",
    [RRP_START] = "^" WS "Starting Import of ([^.[:space:]]+)\\.([^[:space:]]+)" WS "$",
    [RRP_CONTEXT] = "--context=[^[:space:]]*inc_key:\"?([A-Za-z_][A-Za-z0-9_$]*)",
    [RRP_TD_COUNT] = "^" WS "(Teradata Count" WS ":|TD_COUNT" WS "=)" WS "([0-9]+)" WS "$",
    [RRP_HIVE_COUNT] = "^" WS "(Hive Count" WS ":|HIVE_COUNT" WS "=)" WS "([0-9]+)" WS "$",
    [RRP_FOUND_ERROR] = "^" WS "Found Error!!" WS "$",
    [RRP_DATE_OK] = "^" WS "Counts have matched, Success!!" WS "$",
    [RRP_DATE_FAIL] = "^" WS "(Counts have not matched.*|Processing failed for date.*)$",
    [RRP_RETCODE] = "^" WS "RETCODE" WS ":" WS "([0-9]+)" WS "$",
    [RRP_END_OK] = "^" WS "Script completed successfully" WS "$",
    [RRP_END_FAIL] = "^" WS "Script FAILED" WS "$",
};

/* Patterns that may be "" (disabled). */
static int optional(int i)
{
    return i == RRP_TIMESTAMP || i == RRP_LOGTIME || i == RRP_COMMAND || i == RRP_IGNORE || i == RRP_INC_VAL ||
           i == RRP_FULL_REFRESH || i == RRP_OFFSET_DAYS || i == RRP_CONTEXT || i == RRP_FOUND_ERROR ||
           i == RRP_RETCODE || i == RRP_END_OK || i == RRP_END_FAIL;
}

/* Capture groups a pattern needs. */
static size_t groups_needed(int i)
{
    switch (i) {
    case RRP_START:
        return 2;
    case RRP_IGNORE: case RRP_FULL_REFRESH: case RRP_OFFSET_DAYS: case RRP_FOUND_ERROR: case RRP_DATE_OK:
    case RRP_DATE_FAIL: case RRP_END_OK: case RRP_END_FAIL:
        return 0;
    default:
        return 1;
    }
}

struct rrlog_config {
    regex_t re[RRP_COUNT];
    int enabled[RRP_COUNT];
    int is_default[RRP_COUNT];
    char script[RR_NAME_MAX + 1];
    size_t fold_width;
};

#define VAL_MAX 256

typedef enum { D_RUNNING, D_MATCHED, D_FAILED, D_UNFINISHED } date_state;

typedef struct rr_date {
    char date[16];       /* as the log wrote it */
    date_state st;
    int found_error;
    int64_t td, hive;    /* -1 = not printed */
    char reason[VAL_MAX];
} rr_date;

typedef enum { S_IDLE, S_OPEN, S_DONE } run_state;

struct rrlog {
    const rrlog_config *cfg;
    rrlog_report_fn report;
    void *ctx;
    run_state st;
    int64_t first_off;
    int has_cmd;
    rr_command cmd;
    char *command_text;
    char schema[VAL_MAX], table[VAL_MAX];
    int schema_line, table_line; /* seen as header lines (not only from the invocation) */
    char inc_val[16];            /* from " Picking the inc_val as V " */
    char ctx_inc_key[RR_NAME_MAX + 1];
    int full_refresh_line;
    int offset_days;             /* -1: no offset_days line */
    int offset_given;            /* the line gave N (not "No offset_days specified") */
    rr_date *dates;
    size_t ndates, capdates;
    int64_t retcode;             /* -1: none */
    int end_failed, end_ok;
    int64_t first_us, last_us;   /* 0: no line of the run carried a time */
    uint64_t hash;               /* FNV-1a over the run's lines so far */
    int cur_hashed;
    long hour_key;               /* parse_ts()'s cache: YYYYMMDDHH and its time */
    int64_t hour_t;
    /* a folded line waiting for its continuation */
    char *fold;
    size_t fold_len, fold_cap;
    int64_t fold_off;
};

rrlog_config *rrlog_config_new(const char *const patterns[RRP_COUNT], const char *script_name, size_t fold_width,
                               char *errstr, size_t errstr_size)
{
    rrlog_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    snprintf(cfg->script, sizeof cfg->script, "%s", script_name && *script_name ? script_name : "run_replicator.sh");
    cfg->fold_width = fold_width;
    for (int i = 0; i < RRP_COUNT; i++) {
        const char *p = patterns && patterns[i] ? patterns[i] : rrlog_pattern_default[i];
        if (!*p) {
            if (optional(i))
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
        cfg->is_default[i] = strcmp(p, rrlog_pattern_default[i]) == 0;
        size_t need = groups_needed(i);
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
    r->fold_off = -1;
    rrlog_reset(r);
    return r;
}

/* Forget the run (not a waiting folded line). The dates' array is kept
 * for the next run: its first block is over 1 KB, and malloc serves that
 * size by consolidating its small free blocks first (a tenth of the
 * source's time on a directory of small logs). */
static void clear_run(rrlog *r)
{
    free(r->command_text);
    r->command_text = NULL;
    r->ndates = 0;
    r->st = S_IDLE;
    r->first_off = 0;
    r->has_cmd = 0;
    memset(&r->cmd, 0, sizeof r->cmd);
    r->schema[0] = r->table[0] = r->inc_val[0] = r->ctx_inc_key[0] = '\0';
    r->schema_line = r->table_line = r->full_refresh_line = r->offset_given = 0;
    r->offset_days = -1;
    r->retcode = -1;
    r->end_failed = r->end_ok = 0;
    r->first_us = r->last_us = 0;
    r->hash = 14695981039346656037ULL;
}

void rrlog_reset(rrlog *r)
{
    clear_run(r);
    r->fold_len = 0;
    r->fold_off = -1;
}

void rrlog_free(rrlog *r)
{
    if (!r)
        return;
    clear_run(r);
    free(r->dates);
    free(r->fold);
    free(r);
}

int rrlog_open_run(const rrlog *r, int64_t *first_off)
{
    int64_t at = -1;
    if (r->st != S_IDLE)
        at = r->first_off;
    if (r->fold_off >= 0 && (at < 0 || r->fold_off < at))
        at = r->fold_off;
    if (at >= 0)
        *first_off = at;
    return at >= 0;
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

static int digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0; /* also at the NUL: nothing past it is read */
    return 1;
}

/* "YYYY-MM-DD HH:MM:SS" (or with 'T' when allow_t) at s. */
static int ts_at(const char *s, int allow_t)
{
    return digits(s, 4) && s[4] == '-' && digits(s + 5, 2) && s[7] == '-' && digits(s + 8, 2) &&
           (s[10] == ' ' || (allow_t && s[10] == 'T')) && digits(s + 11, 2) && s[13] == ':' && digits(s + 14, 2) &&
           s[16] == ':' && digits(s + 17, 2);
}

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* "YYYY-MM-DD HH:MM:SS" in the host's local time (TZ) -> microseconds.
 * mktime() once per hour of the log (it reads the zone rules each time;
 * zone changes fall on whole hours): the rest is arithmetic. */
static int parse_ts(rrlog *r, const char *s, size_t len, int64_t *us)
{
    if (len < 19 || !ts_at(s, 1))
        return -1;
    long hour_key = (long)num(s, 4) * 1000000 + num(s + 5, 2) * 10000 + num(s + 8, 2) * 100 + num(s + 11, 2);
    if (hour_key != r->hour_key) {
        struct tm tm = {0};
        tm.tm_year = num(s, 4) - 1900;
        tm.tm_mon = num(s + 5, 2) - 1;
        tm.tm_mday = num(s + 8, 2);
        tm.tm_hour = num(s + 11, 2);
        tm.tm_isdst = -1;
        time_t t = mktime(&tm);
        if (t == (time_t)-1)
            return -1;
        r->hour_key = hour_key;
        r->hour_t = (int64_t)t;
    }
    *us = (r->hour_t + num(s + 14, 2) * 60 + num(s + 17, 2)) * 1000000;
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

/* The run's total of a count so far (-1: none yet) plus one date's, which
 * is >= 0; a log can print counts of any size, so the sum saturates
 * instead of overflowing (fuzz_rrlog found it). */
static int64_t add_count(int64_t sum, int64_t n)
{
    if (sum < 0)
        return n;
    return n > INT64_MAX - sum ? INT64_MAX : sum + n;
}

/* The line as a reason: the whole match, blanks trimmed. */
static void reason_of(const char *line, const regmatch_t *m, char *out, size_t outsz)
{
    char tmp[VAL_MAX];
    group(line, m, tmp, sizeof tmp);
    size_t n = strlen(tmp), b = 0;
    while (n > 0 && isspace((unsigned char)tmp[n - 1]))
        tmp[--n] = '\0';
    while (isspace((unsigned char)tmp[b]))
        b++;
    snprintf(out, outsz, "%s", tmp + b);
}

/* ---- the default patterns without regexec --------------------------------
 *
 * glibc's regexec took about half of the source thread's time on a
 * directory of small logs (a few microseconds a line, twenty and more on
 * the long echoed commands). Every default pattern is a fixed shape:
 * blanks, literals, one run of a character class per group, blanks to the
 * end. Each is matched here by hand with the same result and the same
 * groups as regexec gives it in the C locale (POSIX leftmost-longest),
 * which test_rrlog checks line by line against regexec itself. A pattern
 * changed in the config always goes to regexec. */

static int space(char c)
{
    return isspace((unsigned char)c);
}

/* q past any blanks (NULL stays NULL). */
static const char *skip_space(const char *q)
{
    while (q && space(*q))
        q++;
    return q;
}

/* q past the literal w, or NULL. */
static const char *lit(const char *q, const char *w)
{
    if (!q)
        return NULL;
    while (*w)
        if (*q++ != *w++)
            return NULL;
    return q;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The end of the longest run of class characters at q (q itself when none). */
typedef int (*char_class)(char c);
static const char *run_of(const char *q, char_class in)
{
    while (*q && in(*q))
        q++;
    return q;
}

static int non_space(char c)
{
    return !space(c);
}

static int date_char(char c)
{
    return is_digit(c) || c == '-';
}

static int non_dot_space(char c)
{
    return c != '.' && !space(c);
}

static int id_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int id_char(char c)
{
    return id_start(c) || is_digit(c) || c == '$';
}

/* Only blanks from q to the end. */
static int blank_to_end(const char *q)
{
    return q && *skip_space(q) == '\0';
}

static void set_group(regmatch_t *m, size_t nm, size_t g, const char *s, const char *from, const char *to)
{
    if (g < nm) {
        m[g].rm_so = from ? (regoff_t)(from - s) : -1;
        m[g].rm_eo = from ? (regoff_t)(to - s) : -1;
    }
}

/* `^WS word WS sep WS (class+) WS $`, group 1 the run: the header lines,
 * dates, RETCODE. sep NULL: `word[[:space:]]+(class+)`. */
static int word_value(const char *s, const char *word, const char *sep, char_class in, regmatch_t *m, size_t nm)
{
    const char *q = lit(skip_space(s), word);
    if (!q)
        return 0;
    if (sep) {
        q = lit(skip_space(q), sep);
        if (!q)
            return 0;
    } else if (!space(*q)) {
        return 0;
    }
    const char *a = skip_space(q), *b = run_of(a, in);
    if (b == a || !blank_to_end(b))
        return 0;
    set_group(m, nm, 0, s, s, s + strlen(s));
    set_group(m, nm, 1, s, a, b);
    return 1;
}

/* `^WS phrase WS $`, no groups. */
static int whole_phrase(const char *s, const char *phrase, regmatch_t *m, size_t nm)
{
    if (!blank_to_end(lit(skip_space(s), phrase)))
        return 0;
    set_group(m, nm, 0, s, s, s + strlen(s));
    return 1;
}

/* `^WS(word1 WS sep1|word2 WS sep2) WS ([0-9]+) WS $`: the counts. */
static int count_line(const char *s, const char *w1, const char *sep1, const char *w2, const char *sep2, regmatch_t *m,
                      size_t nm)
{
    const char *a = skip_space(s), *q = lit(a, w1);
    q = q ? lit(skip_space(q), sep1) : lit(skip_space(lit(a, w2)), sep2);
    if (!q)
        return 0;
    const char *d = skip_space(q), *e = run_of(d, is_digit);
    if (e == d || !blank_to_end(e))
        return 0;
    set_group(m, nm, 0, s, s, s + strlen(s));
    set_group(m, nm, 1, s, a, q);
    set_group(m, nm, 2, s, d, e);
    return 1;
}

/* `^[+[:space:]]*([^+[:space:]].*run_replicator\.sh([[:space:]'"].*)?)$`:
 * group 1 starts at the first character that is neither + nor a blank, and
 * runs to the end; the script's name must come after that character, at
 * the end or before a blank or a quote. */
static int command_line(const char *s, regmatch_t *m, size_t nm)
{
    static const char name[] = "run_replicator.sh";
    const char *a = s;
    while (*a == '+' || space(*a))
        a++;
    if (!*a)
        return 0;
    const char *k = a + 1, *hit = NULL;
    while ((k = strstr(k, name)) != NULL) {
        char c = k[sizeof name - 1];
        if (c == '\0' || space(c) || c == '\'' || c == '"')
            hit = k; /* `.*` takes the longest: the last such name; group 2 starts after it */
        k++;
    }
    if (!hit)
        return 0;
    const char *end = s + strlen(s), *g2 = hit + sizeof name - 1;
    set_group(m, nm, 0, s, s, end);
    set_group(m, nm, 1, s, a, end);
    if (g2 < end)
        set_group(m, nm, 2, s, g2, end);
    else
        set_group(m, nm, 2, s, NULL, NULL);
    return 1;
}

/* `--context=[^[:space:]]*inc_key:"?([A-Za-z_][A-Za-z0-9_$]*)`: the first
 * --context= from which a match exists, and of its blank-free run the
 * last inc_key: followed by a name (the longest match). */
static int context_line(const char *s, regmatch_t *m, size_t nm)
{
    static const char opt[] = "--context=", key[] = "inc_key:";
    for (const char *c = strstr(s, opt); c; c = strstr(c + 1, opt)) {
        const char *run_end = run_of(c + sizeof opt - 1, non_space);
        const char *id = NULL, *id_end = NULL;
        for (const char *k = strstr(c + sizeof opt - 1, key); k && k < run_end; k = strstr(k + 1, key)) {
            const char *v = k + sizeof key - 1;
            if (*v == '"')
                v++;
            if (id_start(*v)) {
                id = v;
                id_end = run_of(v + 1, id_char);
            }
        }
        if (id) {
            set_group(m, nm, 0, s, c, id_end);
            set_group(m, nm, 1, s, id, id_end);
            return 1;
        }
    }
    return 0;
}

/* The default timestamp patterns (tried on nearly every line). */
static int fast_time(rrlog_pattern p, const char *s, regmatch_t *m, size_t nm)
{
    if (p == RRP_TIMESTAMP) {
        const char *q = s + (*s == '[');
        if (!ts_at(q, 1))
            return 0;
        const char *e = q + 19;
        if (*e == '.' && isdigit((unsigned char)e[1])) {
            for (e++; isdigit((unsigned char)*e); e++)
                ;
            set_group(m, nm, 2, s, q + 19, e);
        }
        if (*e == ']')
            e++;
        while (isspace((unsigned char)*e))
            e++;
        m[0].rm_so = 0;
        m[0].rm_eo = (regoff_t)(e - s);
        if (nm > 1) {
            m[1].rm_so = (regoff_t)(q - s);
            m[1].rm_eo = (regoff_t)(q - s + 19);
        }
        return 1;
    }
    for (const char *c = strchr(s, ','); c; c = strchr(c + 1, ','))
        if (c - s >= 19 && ts_at(c - 19, 0) && digits(c + 1, 3)) {
            m[0].rm_so = (regoff_t)(c - 19 - s);
            m[0].rm_eo = (regoff_t)(c + 4 - s);
            if (nm > 1) {
                m[1].rm_so = m[0].rm_so;
                m[1].rm_eo = (regoff_t)(c - s);
            }
            return 1;
        }
    return 0;
}

/* `^WS (a.*|b.*)$` for the date failure: the whole line, group 1 from a or b. */
static int failure_line(const char *s, regmatch_t *m, size_t nm)
{
    const char *a = skip_space(s);
    if (!lit(a, "Counts have not matched") && !lit(a, "Processing failed for date"))
        return 0;
    const char *end = s + strlen(s);
    set_group(m, nm, 0, s, s, end);
    set_group(m, nm, 1, s, a, end);
    return 1;
}

/* `^WS(No offset_days specified|No\. of offset_days specified WS = WS ([0-9]+))`. */
static int offset_days_line(const char *s, regmatch_t *m, size_t nm)
{
    const char *a = skip_space(s), *q = lit(a, "No offset_days specified");
    if (q) {
        set_group(m, nm, 0, s, s, q);
        set_group(m, nm, 1, s, a, q);
        set_group(m, nm, 2, s, NULL, NULL);
        return 1;
    }
    q = lit(skip_space(lit(a, "No. of offset_days specified")), "=");
    if (!q)
        return 0;
    const char *d = skip_space(q), *e = run_of(d, is_digit);
    if (e == d)
        return 0;
    set_group(m, nm, 0, s, s, e);
    set_group(m, nm, 1, s, a, e);
    set_group(m, nm, 2, s, d, e);
    return 1;
}

/* The hand-written matcher of default pattern p: 1 match, 0 none, with the
 * groups below nm set as regexec sets them; -1: p has none (regexec). */
int rrlog_match_default(rrlog_pattern p, const char *s, regmatch_t *m, size_t nm)
{
    for (size_t i = 0; i < nm; i++)
        m[i].rm_so = m[i].rm_eo = -1;
    switch (p) {
    case RRP_TIMESTAMP:
    case RRP_LOGTIME:
        return fast_time(p, s, m, nm);
    case RRP_COMMAND:
        return command_line(s, m, nm);
    case RRP_SCHEMA:
        return word_value(s, "Schema Name", ":-", non_space, m, nm);
    case RRP_TABLE:
        return word_value(s, "Table Name", ":-", non_space, m, nm);
    case RRP_INC_VAL:
        return word_value(s, "Picking the inc_val as", NULL, non_space, m, nm);
    case RRP_FULL_REFRESH: {
        const char *q = lit(skip_space(s), "No inc_val and inc_key");
        if (!q || !space(*q) || !(q = lit(skip_space(q), "was passed, Considering this table as a full refresh")))
            return 0;
        set_group(m, nm, 0, s, s, q);
        return 1;
    }
    case RRP_OFFSET_DAYS:
        return offset_days_line(s, m, nm);
    case RRP_DATE:
        return word_value(s, "Processing for date", ":", date_char, m, nm);
    case RRP_START: {
        const char *a = lit(skip_space(s), "Starting Import of ");
        if (!a)
            return 0;
        const char *dot = run_of(a, non_dot_space);
        if (dot == a || *dot != '.')
            return 0;
        const char *e = run_of(dot + 1, non_space);
        if (e == dot + 1 || !blank_to_end(e))
            return 0;
        set_group(m, nm, 0, s, s, s + strlen(s));
        set_group(m, nm, 1, s, a, dot);
        set_group(m, nm, 2, s, dot + 1, e);
        return 1;
    }
    case RRP_CONTEXT:
        return context_line(s, m, nm);
    case RRP_TD_COUNT:
        return count_line(s, "Teradata Count", ":", "TD_COUNT", "=", m, nm);
    case RRP_HIVE_COUNT:
        return count_line(s, "Hive Count", ":", "HIVE_COUNT", "=", m, nm);
    case RRP_FOUND_ERROR:
        return whole_phrase(s, "Found Error!!", m, nm);
    case RRP_DATE_OK:
        return whole_phrase(s, "Counts have matched, Success!!", m, nm);
    case RRP_DATE_FAIL:
        return failure_line(s, m, nm);
    case RRP_RETCODE:
        return word_value(s, "RETCODE", ":", is_digit, m, nm);
    case RRP_END_OK:
        return whole_phrase(s, "Script completed successfully", m, nm);
    case RRP_END_FAIL:
        return whole_phrase(s, "Script FAILED", m, nm);
    case RRP_IGNORE:
    case RRP_COUNT:
        break;
    }
    return -1;
}

static int match(const rrlog *r, rrlog_pattern p, const char *s, regmatch_t *m, size_t nm)
{
    const rrlog_config *c = r->cfg;
    if (!c->enabled[p])
        return 0;
    if (c->is_default[p] && p == RRP_IGNORE) { /* a trace, a rule of '#', a blank line */
        const char *q = s;
        while (isspace((unsigned char)*q))
            q++;
        if (*q == '+' || !*q)
            return 1;
        while (*q == '#')
            q++;
        while (isspace((unsigned char)*q))
            q++;
        return *q == '\0' && *s != '\0';
    }
    if (c->is_default[p]) {
        /* the script's name must be on an invocation line too (script_name) */
        if (p == RRP_COMMAND && !strstr(s, c->script))
            return 0;
        int rc = rrlog_match_default(p, s, m, nm);
        if (rc >= 0)
            return rc;
    }
    return regexec(&c->re[p], s, nm, m, 0) == 0;
}

static void hash_str(rrlog *r, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        r->hash = (r->hash ^ *p) * 1099511628211ULL;
    r->hash = (r->hash ^ '\n') * 1099511628211ULL;
}

static void open_run(rrlog *r, int64_t off)
{
    clear_run(r);
    r->st = S_OPEN;
    r->first_off = off;
    r->cur_hashed = 0;
}

static rr_date *cur_date(rrlog *r)
{
    return r->ndates ? &r->dates[r->ndates - 1] : NULL;
}

/* The number of dates the run processes: its offset_days line, else its
 * command's, else 1. */
static int dates_expected(const rrlog *r)
{
    if (r->offset_days >= 0)
        return r->offset_days;
    if (r->has_cmd && r->cmd.offset_days >= 0)
        return r->cmd.offset_days;
    return 1;
}

/* What a run's rebuilt command is when its invocation was not logged:
 * `script S T [K V [N]]` from the header and the zombie_runner context. */
static void rebuilt_command(const rrlog *r, char *buf, size_t n)
{
    if (r->inc_val[0] && r->ctx_inc_key[0]) {
        if (r->offset_given)
            snprintf(buf, n, "%s %s %s %s %s %d", r->cfg->script, r->schema, r->table, r->ctx_inc_key, r->inc_val,
                     r->offset_days);
        else
            snprintf(buf, n, "%s %s %s %s %s", r->cfg->script, r->schema, r->table, r->ctx_inc_key, r->inc_val);
    } else {
        snprintf(buf, n, "%s %s %s", r->cfg->script, r->schema, r->table);
    }
}

static int set_dates(rrlog *r, json_t *f, int64_t *td, int64_t *hive)
{
    json_t *a = json_array();
    int rc = a ? 0 : -1;
    *td = *hive = -1;
    for (size_t i = 0; a && i < r->ndates; i++) {
        const rr_date *d = &r->dates[i];
        static const char *const names[] = {"running", "succeeded", "failed", "unfinished"};
        json_t *o = json_object();
        if (!o) {
            rc = -1;
            break;
        }
        rc |= json_object_set_new(o, "date", json_string(d->date));
        rc |= json_object_set_new(o, "status", json_string(names[d->st]));
        rc |= json_object_set_new(o, "td_count", d->td >= 0 ? json_integer(d->td) : json_null());
        rc |= json_object_set_new(o, "hive_count", d->hive >= 0 ? json_integer(d->hive) : json_null());
        rc |= json_object_set_new(o, "reason", d->reason[0] ? json_string(d->reason) : json_null());
        rc |= json_array_append_new(a, o);
        if (d->td >= 0)
            *td = add_count(*td, d->td);
        if (d->hive >= 0)
            *hive = add_count(*hive, d->hive);
    }
    rc |= json_object_set_new(f, "dates", a);
    return rc;
}

/* Close the run and build its result; 1 with *out, or 0 if it cannot be
 * reported (said why). Out of memory: 1 with out->fields NULL.
 * `hash_current`: the line being fed is the run's own (its last). */
static int finish(rrlog *r, const char *cur, int hash_current, const char *why_unfinished, rrlog_run *out)
{
    if (hash_current && cur && !r->cur_hashed) {
        hash_str(r, cur);
        r->cur_hashed = 1;
    }
    rr_date *d = cur_date(r);
    if (d && d->st == D_RUNNING) {
        d->st = D_UNFINISHED;
        snprintf(d->reason, sizeof d->reason, "no verdict");
        report(r, SB_LOG_WARN, r->first_off, "run %s.%s: date %s has no verdict (%s)", r->schema[0] ? r->schema : "?",
               r->table[0] ? r->table : "?", d->date, why_unfinished);
    }
    char errstr[256];
    char cmdline[3 * VAL_MAX + 2 * RR_NAME_MAX + 64];
    const char *text = r->command_text;
    if (!r->has_cmd) {
        const char *odd = " \t'\"\\<>;|&"; /* would be re-split by the parser: say it plainly */
        const char *why = !r->schema[0] ? "no schema in its log" : !r->table[0] ? "no table in its log" : NULL;
        if (!why && (strpbrk(r->schema, odd) || strpbrk(r->table, odd))) {
            snprintf(errstr, sizeof errstr, "%s \"%.64s\" is not a valid identifier",
                     strpbrk(r->schema, odd) ? "schema" : "table", strpbrk(r->schema, odd) ? r->schema : r->table);
            why = errstr;
        }
        if (why) {
            report(r, SB_LOG_ERROR, r->first_off, "run finished but rejected: %s", why);
            clear_run(r);
            return 0;
        }
        rebuilt_command(r, cmdline, sizeof cmdline);
        text = cmdline;
    }
    /* run_id is the caller's: the run's identity includes where it was read */
    rr_command c = {.offset_days = -1};
    json_t *f = json_object();
    int rc = f ? rr_command_fields(text, r->cfg->script, NULL, f, &c, errstr, sizeof errstr) : RR_NOMEM;
    if (rc == RR_INVALID) {
        report(r, SB_LOG_ERROR, r->first_off, "run finished but rejected: %s", errstr);
        json_decref(f);
        clear_run(r);
        return 0;
    }
    if (rc == 0) {
        int n = dates_expected(r);
        const char *status = "succeeded";
        char reason[2 * VAL_MAX];
        reason[0] = '\0';
        for (size_t i = 0; i < r->ndates; i++)
            if (r->dates[i].st != D_MATCHED) {
                status = "failed";
                snprintf(reason, sizeof reason, "date %s: %s", r->dates[i].date, r->dates[i].reason);
                break;
            }
        if (!reason[0] && r->ndates < (size_t)n) {
            status = "failed";
            snprintf(reason, sizeof reason, "%zu of %d dates processed", r->ndates, n);
        }
        if (!reason[0] && r->retcode > 0) {
            status = "failed";
            snprintf(reason, sizeof reason, "RETCODE:%lld", (long long)r->retcode);
        }
        if (!reason[0] && r->end_failed) {
            status = "failed";
            snprintf(reason, sizeof reason, "Script FAILED");
        }
        if (!r->has_cmd && r->inc_val[0] && !r->ctx_inc_key[0]) {
            /* no inc_key anywhere: the command says schema and table only; the fields say the rest */
            char norm[16];
            rc |= json_object_set_new(f, "inc_val", json_string(r->inc_val));
            if (rr_parse_date(r->inc_val, norm) == 0)
                rc |= json_object_set_new(f, "inc_date", json_string(norm));
            rc |= json_object_set_new(f, "full_refresh", json_false());
        }
        rc |= json_object_set_new(f, "command_source", json_string(r->has_cmd ? "invocation" : "rebuilt"));
        rc |= json_object_set_new(f, "offset_days", json_integer(n));
        rc |= json_object_set_new(f, "status", json_string(status));
        if (reason[0]) /* cut at a character boundary (group()): only memory can fail it */
            rc |= json_object_set_new(f, "reason", json_string(reason));
        int64_t td, hive;
        rc |= set_dates(r, f, &td, &hive);
        rc |= json_object_set_new(f, "td_count", td >= 0 ? json_integer(td) : json_null());
        rc |= json_object_set_new(f, "hive_count", hive >= 0 ? json_integer(hive) : json_null());
        if (r->retcode >= 0)
            rc |= json_object_set_new(f, "retcode", json_integer(r->retcode));
        if (r->first_us) {
            char ts[32];
            iso8601(r->first_us, ts);
            rc |= json_object_set_new(f, "started_at", json_string(ts));
            iso8601(r->last_us, ts);
            rc |= json_object_set_new(f, "finished_at", json_string(ts));
            rc |= json_object_set_new(f, "time_source", json_string("log"));
        }
        rc |= json_object_set_new(f, "log_offset", json_integer(r->first_off));
    }
    if (rc != 0) {
        json_decref(f);
        f = NULL;
    }
    out->fields = f;
    out->cmd = c;
    out->first_off = r->first_off;
    out->content_hash = r->hash;
    out->has_times = r->first_us != 0;
    clear_run(r);
    return 1;
}

/* The line `line` (at `off`) starts a run: close the one before if any
 * (1 with *out), then open. */
static int start_new(rrlog *r, const char *line, int64_t off, const char *why, rrlog_run *out)
{
    int emitted = 0;
    if (r->st == S_OPEN)
        report(r, SB_LOG_WARN, r->first_off, "run %s.%s was cut short by a new run (%s) at offset %lld",
               r->schema[0] ? r->schema : "?", r->table[0] ? r->table : "?", why, (long long)off);
    if (r->st != S_IDLE)
        emitted = finish(r, line, 0, "a new run started", out);
    open_run(r, off);
    return emitted;
}

static void note_time(rrlog *r, int64_t at)
{
    if (!at)
        return;
    if (!r->first_us)
        r->first_us = at;
    r->last_us = at;
}

static int same_name(const char *a, const char *b)
{
    return !a[0] || !b[0] || strcasecmp(a, b) == 0;
}

static int line_step(rrlog *r, const char *line, int64_t off, rrlog_run *out);

int rrlog_line(rrlog *r, const char *line, int64_t off, rrlog_run *out)
{
    size_t fw = r->cfg->fold_width;
    size_t len = fw ? strlen(line) : 0;
    if (fw && (len == fw || r->fold_len)) {
        /* a folded line: gather its pieces, a piece shorter than the width is the last */
        size_t need = r->fold_len + len + 1;
        if (need > r->fold_cap) {
            size_t cap = r->fold_cap ? 2 * r->fold_cap : 1024;
            while (cap < need)
                cap *= 2;
            char *b = realloc(r->fold, cap);
            if (!b) { /* lose the join, not the line */
                report(r, SB_LOG_WARN, off, "out of memory joining a folded line; its pieces are read apart");
                r->fold_len = 0;
                r->fold_off = -1;
                return line_step(r, line, off, out);
            }
            r->fold = b;
            r->fold_cap = cap;
        }
        if (!r->fold_len)
            r->fold_off = off;
        memcpy(r->fold + r->fold_len, line, len + 1);
        r->fold_len += len;
        if (len == fw)
            return 0;
        int64_t at = r->fold_off;
        r->fold_len = 0;
        r->fold_off = -1;
        return line_step(r, r->fold, at, out);
    }
    return line_step(r, line, off, out);
}

static int line_step(rrlog *r, const char *line, int64_t off, rrlog_run *out)
{
    const char *whole = line;
    regmatch_t m[4];
    int64_t at = 0;
    int emitted = 0, end;
    r->cur_hashed = 0;
    if (match(r, RRP_TIMESTAMP, line, m, 2) && m[0].rm_so == 0) {
        if (m[1].rm_so >= 0)
            parse_ts(r, line + m[1].rm_so, (size_t)(m[1].rm_eo - m[1].rm_so), &at);
        line += m[0].rm_eo;
    }
    char v[VAL_MAX], v2[VAL_MAX];

    if (match(r, RRP_COMMAND, line, m, 2)) {
        size_t gi = m[1].rm_so >= 0 ? 1 : 0;
        char *text = strndup(line + m[gi].rm_so, (size_t)(m[gi].rm_eo - m[gi].rm_so));
        rr_command c;
        char errstr[256];
        if (text && rr_parse_command(text, r->cfg->script, &c, errstr, sizeof errstr) == 0) {
            int same = r->st == S_OPEN && !r->schema_line && r->ndates == 0 &&
                       (r->has_cmd ? strcasecmp(c.schema, r->cmd.schema) == 0 &&
                                         strcasecmp(c.table, r->cmd.table) == 0 &&
                                         strcmp(c.inc_date, r->cmd.inc_date) == 0
                                   : same_name(r->schema, c.schema) && same_name(r->table, c.table));
            if (!same) {
                char desc[2 * RR_NAME_MAX + 32];
                snprintf(desc, sizeof desc, "invocation of %s.%s", c.schema, c.table);
                emitted = start_new(r, whole, off, desc, out);
            }
            if (!r->has_cmd) {
                r->has_cmd = 1;
                r->cmd = c;
                r->command_text = text;
                text = NULL;
                snprintf(r->schema, VAL_MAX, "%s", c.schema);
                snprintf(r->table, VAL_MAX, "%s", c.table);
            }
            free(text);
            note_time(r, at);
            goto hash;
        }
        if (text)
            report(r, SB_LOG_WARN, off, "invocation line not understood (%s): %.200s", errstr, text);
        free(text);
        /* not an invocation: whatever else the line is */
    }
    if (match(r, RRP_IGNORE, line, m, 1))
        goto hash;
    if (!at && r->st != S_IDLE && match(r, RRP_LOGTIME, line, m, 2) && m[1].rm_so >= 0)
        parse_ts(r, line + m[1].rm_so, (size_t)(m[1].rm_eo - m[1].rm_so), &at);

    /* lines that can open a run */
    if (match(r, RRP_SCHEMA, line, m, 2)) {
        group(line, &m[1], v, sizeof v);
        if (r->st != S_OPEN || r->schema_line || r->ndates || !same_name(r->schema, v)) {
            snprintf(v2, sizeof v2, "schema %.240s", v);
            emitted = start_new(r, whole, off, v2, out);
        }
        snprintf(r->schema, VAL_MAX, "%s", v);
        r->schema_line = 1;
    } else if (match(r, RRP_TABLE, line, m, 2)) {
        group(line, &m[1], v, sizeof v);
        if (r->st != S_OPEN || r->table_line || r->ndates || !same_name(r->table, v)) {
            snprintf(v2, sizeof v2, "table %.240s", v);
            emitted = start_new(r, whole, off, v2, out);
        }
        snprintf(r->table, VAL_MAX, "%s", v);
        r->table_line = 1;
    } else if (match(r, RRP_DATE, line, m, 2)) {
        char d[16];
        group(line, &m[1], v, sizeof v);
        if (rr_parse_date(v, d) != 0) {
            report(r, SB_LOG_WARN, off, "\"%.64s\" is not a date (yyyymmdd or yyyy-mm-dd); ignored", v);
            goto hash;
        }
        if (r->st != S_OPEN) {
            snprintf(v2, sizeof v2, "date %.240s", v);
            emitted = start_new(r, whole, off, v2, out);
        }
        rr_date *prev = cur_date(r);
        if (prev && prev->st == D_RUNNING) {
            prev->st = D_UNFINISHED;
            snprintf(prev->reason, sizeof prev->reason, "no verdict");
        }
        if (r->ndates == r->capdates) {
            size_t cap = r->capdates ? 2 * r->capdates : 4;
            rr_date *a = realloc(r->dates, cap * sizeof *a);
            if (!a) {
                report(r, SB_LOG_ERROR, off, "out of memory for date %s of the run; it is not counted", v);
                goto hash;
            }
            r->dates = a;
            r->capdates = cap;
        }
        rr_date *nd = &r->dates[r->ndates++];
        memset(nd, 0, sizeof *nd);
        memcpy(nd->date, v, strlen(v) + 1); /* 8 or 10 characters: rr_parse_date checked */
        nd->st = D_RUNNING;
        nd->td = nd->hive = -1;
    } else if (match(r, RRP_START, line, m, 3)) {
        group(line, &m[1], v, sizeof v);
        group(line, &m[2], v2, sizeof v2);
        if (r->st != S_OPEN || !same_name(r->schema, v) || !same_name(r->table, v2)) {
            char desc[2 * VAL_MAX + 16];
            snprintf(desc, sizeof desc, "import of %s.%s", v, v2);
            emitted = start_new(r, whole, off, desc, out);
        }
        if (!r->schema[0])
            snprintf(r->schema, VAL_MAX, "%s", v);
        if (!r->table[0])
            snprintf(r->table, VAL_MAX, "%s", v2);
    } else if (r->st == S_IDLE) {
        return 0; /* noise between runs, a trailer of a run already reported */
    } else if ((end = match(r, RRP_END_FAIL, line, m, 1) ? 2 : match(r, RRP_END_OK, line, m, 1)) != 0) {
        if (end == 2)
            r->end_failed = 1;
        else
            r->end_ok = 1;
        note_time(r, at);
        return finish(r, whole, 1, "the script ended", out);
    } else if (match(r, RRP_RETCODE, line, m, 2)) {
        r->retcode = group_int(line, &m[1]);
        rr_date *d = cur_date(r);
        if (d && d->st == D_RUNNING) {
            d->st = D_UNFINISHED;
            snprintf(d->reason, sizeof d->reason, "no verdict (RETCODE:%lld)", (long long)r->retcode);
        }
        r->st = S_DONE;
    } else if (match(r, RRP_DATE_FAIL, line, m, 1)) {
        rr_date *d = cur_date(r);
        if (d && d->st != D_FAILED) {
            if (d->found_error)
                snprintf(d->reason, sizeof d->reason, "Found Error!!");
            else
                reason_of(line, &m[0], d->reason, sizeof d->reason);
            d->st = D_FAILED;
        } else if (!d) {
            report(r, SB_LOG_WARN, off, "a date failed before any date started; the run is failed");
            r->end_failed = 1;
        }
        r->st = S_DONE;
    } else if (r->st == S_DONE) {
        return 0; /* after the verdicts only the lines above still belong to the run */
    } else if (match(r, RRP_DATE_OK, line, m, 1)) {
        rr_date *d = cur_date(r);
        if (d && d->st == D_RUNNING)
            d->st = D_MATCHED;
        /* the Nth verdict; or a verdict with no date at all (a log that lost its date line): nothing more
         * will come for it but a trailer, and it is reported for what it is ("0 of N dates processed") */
        if (r->ndates >= (size_t)dates_expected(r) || !d)
            r->st = S_DONE;
    } else if (match(r, RRP_TD_COUNT, line, m, 4)) {
        rr_date *d = cur_date(r);
        if (d)
            d->td = group_int(line, &m[r->cfg->re[RRP_TD_COUNT].re_nsub < 4 ? r->cfg->re[RRP_TD_COUNT].re_nsub : 3]);
    } else if (match(r, RRP_HIVE_COUNT, line, m, 4)) {
        rr_date *d = cur_date(r);
        if (d)
            d->hive =
                group_int(line, &m[r->cfg->re[RRP_HIVE_COUNT].re_nsub < 4 ? r->cfg->re[RRP_HIVE_COUNT].re_nsub : 3]);
    } else if (match(r, RRP_FOUND_ERROR, line, m, 1)) {
        rr_date *d = cur_date(r);
        if (d)
            d->found_error = 1;
    } else if (match(r, RRP_INC_VAL, line, m, 2)) {
        group(line, &m[1], v, sizeof v);
        char d[16];
        if (rr_parse_date(v, d) == 0)
            memcpy(r->inc_val, v, strlen(v) + 1);
    } else if (match(r, RRP_FULL_REFRESH, line, m, 1)) {
        r->full_refresh_line = 1;
    } else if (match(r, RRP_OFFSET_DAYS, line, m, 4)) {
        size_t g = r->cfg->re[RRP_OFFSET_DAYS].re_nsub < 4 ? r->cfg->re[RRP_OFFSET_DAYS].re_nsub : 3;
        if (g > 0 && m[g].rm_so >= 0) {
            int64_t n = group_int(line, &m[g]);
            r->offset_days = n > 99999 ? 99999 : (int)n;
            r->offset_given = 1;
        } else {
            r->offset_days = 1;
        }
    } else if (match(r, RRP_CONTEXT, line, m, 2)) {
        if (!r->ctx_inc_key[0] && m[1].rm_so >= 0) {
            group(line, &m[1], v, sizeof v);
            if (strlen(v) <= RR_NAME_MAX)
                memcpy(r->ctx_inc_key, v, strlen(v) + 1);
        }
    }
    if (r->st == S_OPEN || r->st == S_DONE)
        note_time(r, at);
hash:
    if (r->st != S_IDLE && !r->cur_hashed) {
        hash_str(r, whole);
        r->cur_hashed = 1;
    }
    return emitted;
}

int rrlog_end(rrlog *r, rrlog_run *out)
{
    if (r->fold_len) { /* the last piece of a folded line, then the end */
        int64_t at = r->fold_off;
        r->fold_len = 0;
        r->fold_off = -1;
        if (line_step(r, r->fold, at, out))
            return 1;
    }
    if (r->st == S_IDLE)
        return 0;
    return finish(r, NULL, 0, "the log ended", out);
}

int rrlog_idle(rrlog *r, rrlog_run *out)
{
    if (r->st != S_DONE)
        return 0;
    return finish(r, NULL, 0, "the log went quiet", out);
}
