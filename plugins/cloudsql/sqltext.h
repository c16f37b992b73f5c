/*
 * sqltext.h - the cloudsql sink's SQL text: named placeholders to ODBC
 * markers, and connection strings with their secrets kept out of sight.
 *
 * Pure string work, no ODBC: unit-tested on its own. Every function is
 * thread-safe (no shared state); results are malloc'd and owned by the
 * caller.
 */
#ifndef SB_CLOUDSQL_SQLTEXT_H
#define SB_CLOUDSQL_SQLTEXT_H

#include <stddef.h>

/* A statement with its named placeholders (":run_id") replaced by "?".
 * markers[i] is the index into names[] of the i-th "?" (a name used twice
 * gives two markers bound to one value). */
typedef struct sql_stmt {
    char *sql;     /* the text handed to SQLPrepare */
    char **names;  /* distinct placeholder names, in first-use order */
    size_t n_names;
    size_t *markers;
    size_t n_markers;
    /* The statement's one row of values, [row_start, row_end) in sql with
     * its parentheses, when the statement is an INSERT (or MySQL's REPLACE)
     * ... VALUES (...) with a single row and every marker inside that row:
     * then sql_stmt_multi_row() can repeat it. row_end == 0: it is not. */
    size_t row_start, row_end;
} sql_stmt;

/* Parse `text`. Quoted strings ('...', "...", `...`), PostgreSQL dollar
 * quotes ($tag$...$tag$), comments (-- ..., # ... is not one, / * ... * /),
 * casts (x::int) and MySQL's := are copied as they are. A literal "?" outside
 * them is refused, since only named placeholders are bound. 0, or -1 with a
 * message naming the offset in errstr. */
int sql_stmt_parse(sql_stmt *st, const char *text, char *errstr, size_t errstr_size);
void sql_stmt_free(sql_stmt *st);

/* The statement with its row of values written `rows` times ("VALUES (?, ?),
 * (?, ?)"), the markers of row t being t * n_markers + 1 ... in order; what
 * follows the row (ON CONFLICT ..., ON DUPLICATE KEY UPDATE ...) is kept
 * once. malloc'd; NULL when st has no such row (row_end == 0). */
char *sql_stmt_multi_row(const sql_stmt *st, size_t rows);

/* Secrets in an ODBC connection string: the values of PWD, PASSWORD and of
 * any key holding "pwd", "pass", "secret", "token" or "key" (case-insensitive),
 * braced ({...}) or not. A connection string without '=' is a DSN name and
 * has none. Returns a NULL-terminated malloc'd list (possibly empty) that
 * conn_secrets_free() frees. */
char **conn_secrets(const char *conn);
void conn_secrets_free(char **secrets);

/* `text` with every occurrence of every secret (those of at least 3 bytes;
 * shorter ones would mangle the text and protect nothing) replaced by
 * "[REDACTED]". malloc'd. */
char *redact(const char *text, char *const *secrets);

/* The connection string to hand to SQLDriverConnect: `conn` itself, or
 * "DSN=conn" for a bare DSN name. malloc'd. */
char *conn_string(const char *conn);

#endif
