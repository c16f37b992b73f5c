/* bqrows.c - rows, schema and typed values of the bigquery sink (bqrows.h). */
#include "bqrows.h"

#include <syncbridge/buf.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || n > 300 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

void bq_rows_free(bq_rows *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nrows; i++) {
        free(r->rows[i].name);
        free(r->rows[i].cells);
    }
    for (size_t i = 0; i < r->ncols; i++)
        free(r->cols[i]);
    free(r->rows);
    free(r->cols);
    free(r);
}

static size_t col_index(bq_rows *r, const char *name, size_t n)
{
    for (size_t i = 0; i < r->ncols; i++)
        if (strlen(r->cols[i]) == n && strncmp(r->cols[i], name, n) == 0)
            return i;
    r->cols = realloc(r->cols, (r->ncols + 1) * sizeof *r->cols);
    if (!r->cols)
        abort();
    r->cols[r->ncols] = sb_asprintf("%.*s", (int)n, name);
    return r->ncols++;
}

bq_rows *bq_rows_parse(const sb_instance *ins, const char *opt, char *err, size_t errsz)
{
    bq_rows *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    size_t n = sb_opt_template_map_count(ins, opt);
    for (size_t i = 0; i < n; i++) {
        const char *key = NULL;
        const sb_template *t = sb_opt_template_map_item(ins, opt, i, &key);
        const char *dot = strchr(key, '.');
        const char *row = dot ? key : "row", *col = dot ? dot + 1 : key;
        size_t rl = dot ? (size_t)(dot - key) : 3;
        if (!valid_name(row, rl) || !valid_name(col, strlen(col))) {
            sb_err(err, errsz, "option %s: \"%s\" is not COLUMN or ROW.COLUMN (letters, digits, _)", opt, key);
            bq_rows_free(r);
            return NULL;
        }
        size_t k = 0;
        while (k < r->nrows && !(strlen(r->rows[k].name) == rl && strncmp(r->rows[k].name, row, rl) == 0))
            k++;
        if (k == r->nrows) {
            r->rows = realloc(r->rows, (r->nrows + 1) * sizeof *r->rows);
            if (!r->rows)
                abort();
            r->rows[k] = (bq_rowspec){.name = sb_asprintf("%.*s", (int)rl, row)};
            r->nrows++;
        }
        bq_rowspec *rs = &r->rows[k];
        rs->cells = realloc(rs->cells, (rs->ncells + 1) * sizeof *rs->cells);
        if (!rs->cells)
            abort();
        rs->cells[rs->ncells++] = (bq_cell){.col = col_index(r, col, strlen(col)), .tpl = t};
    }
    if (r->nrows == 0) {
        sb_err(err, errsz, "option %s: names no column", opt);
        bq_rows_free(r);
        return NULL;
    }
    return r;
}

void bq_schema_free(bq_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->cols[i].name);
        free(s->cols[i].type);
    }
    free(s->cols);
    free(s);
}

bq_schema *bq_schema_from_table(const json_t *table, char *err, size_t errsz)
{
    const json_t *fields = json_object_get(json_object_get(table, "schema"), "fields");
    if (!json_is_array(fields) || json_array_size(fields) == 0) {
        sb_err(err, errsz, "the table has no schema");
        return NULL;
    }
    bq_schema *s = calloc(1, sizeof *s);
    s->cols = calloc(json_array_size(fields), sizeof *s->cols);
    if (!s || !s->cols)
        abort();
    size_t i;
    const json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *type = json_string_value(json_object_get(f, "type"));
        const char *mode = json_string_value(json_object_get(f, "mode"));
        if (!name || !type)
            continue;
        s->cols[s->n++] = (bq_column){.name = sb_asprintf("%s", name), .type = sb_asprintf("%s", type),
                                      .required = mode && strcasecmp(mode, "REQUIRED") == 0};
    }
    return s;
}

const bq_column *bq_schema_find(const bq_schema *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcasecmp(s->cols[i].name, name) == 0) /* BigQuery column names are case-insensitive */
            return &s->cols[i];
    return NULL;
}

const char *bq_param_type(const char *t)
{
    static const char *const map[][2] = {
        {"INTEGER", "INT64"},     {"INT64", "INT64"},         {"FLOAT", "FLOAT64"},   {"FLOAT64", "FLOAT64"},
        {"BOOLEAN", "BOOL"},      {"BOOL", "BOOL"},           {"STRING", "STRING"},   {"BYTES", "BYTES"},
        {"DATETIME", "DATETIME"}, {"TIMESTAMP", "TIMESTAMP"}, {"DATE", "DATE"},       {"TIME", "TIME"},
        {"NUMERIC", "NUMERIC"},   {"BIGNUMERIC", "BIGNUMERIC"}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (strcasecmp(t, map[i][0]) == 0)
            return map[i][1];
    return NULL;
}

int bq_parse_zone(const char *s, int *off)
{
    if (strcasecmp(s, "UTC") == 0 || strcmp(s, "Z") == 0) {
        *off = 0;
        return 0;
    }
    int h, m;
    char sign, tail;
    if (sscanf(s, "%c%2d:%2d%c", &sign, &h, &m, &tail) != 3 || (sign != '+' && sign != '-') || strlen(s) != 6 ||
        h > 14 || m > 59)
        return -1;
    *off = (sign == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 0;
}

int bq_zone_parse(const char *s, bq_zone *z, char *err, size_t errsz)
{
    char why[512];
    *z = (bq_zone){0};
    if (bq_parse_zone(s, &z->fixed_s) == 0)
        return 0;
    if ((s[0] == '+' || s[0] == '-') && strchr(s, ':'))
        snprintf(why, sizeof why, "a fixed offset is +HH:MM or -HH:MM, at most 14:59");
    else if ((z->tz = tzif_load(s, why, sizeof why)))
        return 0;
    return sb_err(err, errsz, "option time_zone: \"%s\" is not UTC, +HH:MM / -HH:MM or a zone in %s (%s)", s,
                  tzif_dir(), why);
}

void bq_zone_clear(bq_zone *z)
{
    tzif_free(z->tz);
    *z = (bq_zone){0};
}

int32_t bq_zone_offset(const bq_zone *z, int64_t t)
{
    return z->tz ? tzif_offset(z->tz, t) : z->fixed_s;
}

static int digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

static int two(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* "YYYY-MM-DD[T ]HH:MM:SS[.f...][Z|±HH:MM|±HHMM]" -> civil parts, fraction
 * text and zone. 0, or -1. */
static int parse_datetime(const char *s, struct tm *tm, char frac[16], int *has_zone, int *zone_s)
{
    memset(tm, 0, sizeof *tm);
    frac[0] = '\0';
    *has_zone = 0;
    *zone_s = 0;
    if (strlen(s) < 19 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2) ||
        (s[10] != 'T' && s[10] != ' ' && s[10] != 't') || !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) ||
        s[16] != ':' || !digits(s + 17, 2))
        return -1;
    tm->tm_year = atoi(s) - 1900;
    tm->tm_mon = atoi(s + 5) - 1;
    tm->tm_mday = atoi(s + 8);
    tm->tm_hour = atoi(s + 11);
    tm->tm_min = atoi(s + 14);
    tm->tm_sec = atoi(s + 17);
    if (tm->tm_mon > 11 || tm->tm_mday < 1 || tm->tm_mday > 31 || tm->tm_hour > 23 || tm->tm_min > 59 ||
        tm->tm_sec > 60)
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        size_t n = 0;
        p++;
        while (isdigit((unsigned char)p[n]))
            n++;
        if (n == 0 || n > 9)
            return -1;
        snprintf(frac, 16, ".%.*s", (int)(n > 6 ? 6 : n), p); /* DATETIME keeps microseconds */
        p += n;
    }
    if (*p == 'Z' || *p == 'z') {
        *has_zone = 1;
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (!digits(p, 2))
            return -1;
        int h = two(p), m = 0; /* two digits, "0130" included */
        p += 2;
        if (*p == ':')
            p++;
        if (digits(p, 2)) {
            m = two(p);
            p += 2;
        }
        if (h > 14 || m > 59)
            return -1;
        *has_zone = 1;
        *zone_s = sign * (h * 3600 + m * 60);
    }
    return *p ? -1 : 0;
}

static int type_is(const bq_column *c, const char *a, const char *b)
{
    return strcasecmp(c->type, a) == 0 || (b && strcasecmp(c->type, b) == 0);
}

int bq_type_value(const bq_column *col, const char *text, const bq_zone *zone, char **out, char *err, size_t errsz)
{
    *out = NULL;
    if (!*text && !type_is(col, "STRING", "BYTES"))
        return 0; /* NULL */
    if (type_is(col, "INTEGER", "INT64")) {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (end == text || *end || errno)
            return sb_err(err, errsz, "column %s (%s): \"%.60s\" is not an integer", col->name, col->type, text);
        *out = sb_asprintf("%lld", v);
        return 0;
    }
    if (type_is(col, "FLOAT", "FLOAT64") || type_is(col, "NUMERIC", "BIGNUMERIC")) {
        char *end;
        errno = 0;
        (void)strtod(text, &end);
        if (end == text || *end)
            return sb_err(err, errsz, "column %s (%s): \"%.60s\" is not a number", col->name, col->type, text);
        *out = sb_asprintf("%s", text);
        return 0;
    }
    if (type_is(col, "BOOLEAN", "BOOL")) {
        if (strcasecmp(text, "true") != 0 && strcasecmp(text, "false") != 0)
            return sb_err(err, errsz, "column %s (%s): \"%.60s\" is not true or false", col->name, col->type, text);
        *out = sb_asprintf("%s", strcasecmp(text, "true") == 0 ? "true" : "false");
        return 0;
    }
    if (type_is(col, "DATETIME", NULL)) {
        struct tm tm;
        char frac[16];
        int has_zone, zone_s;
        if (parse_datetime(text, &tm, frac, &has_zone, &zone_s) != 0)
            return sb_err(err, errsz, "column %s (DATETIME): \"%.60s\" is not YYYY-MM-DDTHH:MM:SS[.ffffff][zone]",
                          col->name, text);
        if (has_zone) {
            int64_t instant = (int64_t)timegm(&tm) - zone_s;
            time_t t = (time_t)(instant + bq_zone_offset(zone, instant));
            if (!gmtime_r(&t, &tm))
                return sb_err(err, errsz, "column %s (DATETIME): \"%.60s\" is out of range", col->name, text);
        }
        char buf[64];
        snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        *out = sb_asprintf("%s", buf);
        return 0;
    }
    *out = sb_asprintf("%s", text);
    return 0;
}
