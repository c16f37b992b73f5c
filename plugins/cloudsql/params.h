/*
 * params.h - the cloudsql sink's parameter values: one event field turned
 * into what SQLBindParameter takes, typed from the value itself.
 *
 *   JSON integer            SQL_BIGINT     (SQL_C_SBIGINT)
 *   JSON real               SQL_DOUBLE     (SQL_C_DOUBLE)
 *   true / false            SQL_BIT        (SQL_C_BIT)
 *   RFC 3339 string with a zone, "2026-11-23T10:00:00Z", "...+01:00":
 *                           SQL_TYPE_TIMESTAMP (the instant in UTC)
 *   any other string        SQL_WVARCHAR / SQL_WLONGVARCHAR (UTF-16, so that
 *                           every driver gets Unicode whatever the locale)
 *   object / array          the same as a string, holding its compact JSON
 *   null                    NULL
 *
 * Threading: values are plain data, used by one thread.
 */
#ifndef SB_CLOUDSQL_PARAMS_H
#define SB_CLOUDSQL_PARAMS_H

#include <jansson.h>
#include <sql.h>
#include <sqlext.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pv_kind { PV_NULL = 0, PV_INT, PV_DOUBLE, PV_BOOL, PV_TIMESTAMP, PV_TEXT } pv_kind;

typedef struct pvalue {
    pv_kind kind;
    SQLBIGINT i;
    double d;
    unsigned char b;
    SQL_TIMESTAMP_STRUCT ts;
    SQLWCHAR *w;  /* PV_TEXT: malloc'd UTF-16, not terminated */
    size_t wlen;  /* in SQLWCHAR units */
} pvalue;

/* Fill *v from a JSON value (json_null() for NULL). 0, or -1 with errstr
 * when the value cannot be bound (never for what jansson holds, which is
 * valid UTF-8; kept for a future type). */
int pvalue_from_json(pvalue *v, const json_t *j, char *errstr, size_t errstr_size);
/* A text value from UTF-8 bytes (which must be valid UTF-8). */
void pvalue_text(pvalue *v, const char *s, size_t len);
void pvalue_clear(pvalue *v);

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" (a space for
 * the T is taken too) to a UTC timestamp. 0, or -1 if s is not one. */
int parse_rfc3339(const char *s, SQL_TIMESTAMP_STRUCT *ts);

/* The C type, SQL type, column size and decimal digits to bind a value of
 * this kind with; `wlen` is the longest text (in units) bound in the slot. */
void pv_bind_types(pv_kind k, size_t wlen, SQLSMALLINT *ctype, SQLSMALLINT *sqltype, SQLULEN *colsize,
                   SQLSMALLINT *digits);

#endif
