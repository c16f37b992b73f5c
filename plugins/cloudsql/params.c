/* params.c - event values as ODBC parameters (params.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm */
#endif
#include "params.h"

#include <syncbridge/buf.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Texts up to this many characters bind as SQL_WVARCHAR; longer ones as
 * SQL_WLONGVARCHAR, which drivers send without a length cap. */
#define PV_VARCHAR_MAX 4000

void pvalue_clear(pvalue *v)
{
    free(v->w);
    memset(v, 0, sizeof *v);
}

void pvalue_text(pvalue *v, const char *s, size_t len)
{
    v->kind = PV_TEXT;
    /* UTF-16 never needs more units than UTF-8 has bytes */
    v->w = malloc((len ? len : 1) * sizeof *v->w);
    if (!v->w)
        abort();
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        uint32_t cp;
        if (*p < 0x80) {
            cp = *p++;
        } else if ((*p & 0xe0) == 0xc0 && p + 1 < end) {
            cp = ((uint32_t)(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
            p += 2;
        } else if ((*p & 0xf0) == 0xe0 && p + 2 < end) {
            cp = ((uint32_t)(p[0] & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
            p += 3;
        } else if ((*p & 0xf8) == 0xf0 && p + 3 < end) {
            cp = ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) | ((uint32_t)(p[2] & 0x3f) << 6) |
                 (p[3] & 0x3f);
            p += 4;
        } else { /* not reached for jansson's strings; keep going rather than loop */
            cp = 0xfffd;
            p++;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            v->w[o++] = (SQLWCHAR)(0xd800 | (cp >> 10));
            v->w[o++] = (SQLWCHAR)(0xdc00 | (cp & 0x3ff));
        } else {
            v->w[o++] = (SQLWCHAR)cp;
        }
    }
    v->wlen = o;
}

static int num(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int parse_rfc3339(const char *s, SQL_TIMESTAMP_STRUCT *ts)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) < 20 || num(s, 4, &Y) || s[4] != '-' || num(s + 5, 2, &M) || s[7] != '-' || num(s + 8, 2, &D) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || num(s + 11, 2, &h) || s[13] != ':' ||
        num(s + 14, 2, &m) || s[16] != ':' || num(s + 17, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return -1;
    const char *p = s + 19;
    uint32_t frac = 0; /* nanoseconds */
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 9) {
                frac = frac * 10 + (uint32_t)(*p - '0');
                digits++;
            }
            p++;
        }
        if (!digits)
            return -1;
        while (digits++ < 9)
            frac *= 10;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (num(p + 1, 2, &oh) || p[3] != ':' || num(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = (oh * 60L + om) * 60L * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1; /* no zone: not an instant, so it stays text */
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m,
                    .tm_sec = sec > 59 ? 59 : sec};
    time_t t = timegm(&tm) - off;
    struct tm u;
    if (!gmtime_r(&t, &u))
        return -1;
    ts->year = (SQLSMALLINT)(u.tm_year + 1900);
    ts->month = (SQLUSMALLINT)(u.tm_mon + 1);
    ts->day = (SQLUSMALLINT)u.tm_mday;
    ts->hour = (SQLUSMALLINT)u.tm_hour;
    ts->minute = (SQLUSMALLINT)u.tm_min;
    ts->second = (SQLUSMALLINT)u.tm_sec;
    ts->fraction = (frac / 1000) * 1000; /* microseconds: what every server keeps */
    return 0;
}

int pvalue_from_json(pvalue *v, const json_t *j, char *errstr, size_t errstr_size)
{
    memset(v, 0, sizeof *v);
    switch (json_typeof(j)) {
    case JSON_NULL:
        v->kind = PV_NULL;
        return 0;
    case JSON_INTEGER:
        v->kind = PV_INT;
        v->i = (SQLBIGINT)json_integer_value(j);
        return 0;
    case JSON_REAL:
        v->kind = PV_DOUBLE;
        v->d = json_real_value(j);
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind = PV_BOOL;
        v->b = json_is_true(j) ? 1 : 0;
        return 0;
    case JSON_STRING: {
        const char *s = json_string_value(j);
        if (parse_rfc3339(s, &v->ts) == 0) {
            v->kind = PV_TIMESTAMP;
            return 0;
        }
        pvalue_text(v, s, json_string_length(j));
        return 0;
    }
    case JSON_OBJECT:
    case JSON_ARRAY: {
        char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return sb_err(errstr, errstr_size, "cannot encode the value as JSON text");
        pvalue_text(v, text, strlen(text));
        free(text);
        return 0;
    }
    }
    return sb_err(errstr, errstr_size, "unknown JSON type");
}

void pv_bind_types(pv_kind k, size_t wlen, SQLSMALLINT *ctype, SQLSMALLINT *sqltype, SQLULEN *colsize,
                   SQLSMALLINT *digits)
{
    *digits = 0;
    switch (k) {
    case PV_INT:
        *ctype = SQL_C_SBIGINT, *sqltype = SQL_BIGINT, *colsize = 19;
        return;
    case PV_DOUBLE:
        *ctype = SQL_C_DOUBLE, *sqltype = SQL_DOUBLE, *colsize = 15;
        return;
    case PV_BOOL:
        *ctype = SQL_C_BIT, *sqltype = SQL_BIT, *colsize = 1;
        return;
    case PV_TIMESTAMP:
        *ctype = SQL_C_TYPE_TIMESTAMP, *sqltype = SQL_TYPE_TIMESTAMP, *colsize = 26, *digits = 6;
        return;
    case PV_TEXT:
        *ctype = SQL_C_WCHAR, *sqltype = wlen > PV_VARCHAR_MAX ? SQL_WLONGVARCHAR : SQL_WVARCHAR;
        *colsize = wlen ? wlen : 1;
        return;
    case PV_NULL:
    default:
        *ctype = SQL_C_CHAR, *sqltype = SQL_VARCHAR, *colsize = 1;
        return;
    }
}
