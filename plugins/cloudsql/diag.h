/*
 * diag.h - the cloudsql sink's reading of ODBC errors: the driver's
 * diagnostic records as one line, and what the error means for the events.
 *
 * Threading: a diag is plain data used by one thread; reading the records
 * of a handle is done by the thread that owns it.
 */
#ifndef SB_CLOUDSQL_DIAG_H
#define SB_CLOUDSQL_DIAG_H

#include <sql.h>
#include <sqlext.h>

#define DIAG_TEXT 2048

typedef struct diag {
    char state[6];       /* the deciding record's SQLSTATE ("" when the driver gave none) */
    SQLINTEGER native;   /* ... and its native error */
    char text[DIAG_TEXT]; /* every record: "SQLSTATE 23505 (native 7): message; ..." */
    int conn_lost;       /* some record says the connection is gone (08xxx, 57P0x) */
} diag;

/* What an error means. */
typedef enum diag_class {
    DIAG_CONN,      /* the connection is gone or unusable: RETRY, reconnect */
    DIAG_TRANSIENT, /* serialization, deadlock, timeout, resources: RETRY on the same connection */
    DIAG_DUPLICATE, /* a duplicate key (OK with duplicate_is_success, else as DIAG_DATA) */
    DIAG_DATA,      /* constraint, syntax, data: this row (or statement) is wrong, FAIL */
} diag_class;

/* Read every diagnostic record of `h` (after a call on it returned
 * SQL_ERROR or SQL_SUCCESS_WITH_INFO) and append them to d. `what` names the
 * call for the text when the handle holds no record ("SQLExecute failed"). */
void diag_read(diag *d, SQLSMALLINT type, SQLHANDLE h, const char *what);

/* The class of what diag_read() collected. */
diag_class diag_classify(const diag *d);

/* Whether it is a syntax error (one of DIAG_DATA's SQLSTATEs): the
 * statement's text, not a row, is what the server refused. */
int diag_is_syntax_error(const diag *d);

#endif
