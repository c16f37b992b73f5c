/* diag.c - ODBC diagnostic records and their meaning (diag.h). */
#include "diag.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static void append(diag *d, const char *s)
{
    size_t used = strlen(d->text);
    if (used + 1 >= sizeof d->text)
        return;
    snprintf(d->text + used, sizeof d->text - used, "%s", s);
}

static int lost_state(const char *st)
{
    return strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 || strcmp(st, "57P02") == 0 ||
           strcmp(st, "57P03") == 0;
}

void diag_read(diag *d, SQLSMALLINT type, SQLHANDLE h, const char *what)
{
    SQLCHAR state[6], msg[1024];
    SQLINTEGER native;
    SQLSMALLINT len;
    int any = 0;
    for (SQLSMALLINT rec = 1; rec <= 8; rec++) {
        SQLRETURN rc = SQLGetDiagRec(type, h, rec, state, &native, msg, sizeof msg, &len);
        if (rc != SQL_SUCCESS && rc != SQL_SUCCESS_WITH_INFO)
            break;
        any = 1;
        /* drivers end messages with newlines; keep the reason on one line */
        for (char *p = (char *)msg; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        size_t ml = strlen((char *)msg);
        while (ml && msg[ml - 1] == ' ')
            msg[--ml] = 0;
        char one[1200];
        snprintf(one, sizeof one, "%sSQLSTATE %s (native %ld): %s", d->text[0] ? "; " : "", (char *)state,
                 (long)native, (char *)msg);
        append(d, one);
        if (lost_state((char *)state))
            d->conn_lost = 1;
        /* the deciding record: the first that is not a warning (01xxx) */
        if (!d->state[0] || strncmp(d->state, "01", 2) == 0) {
            memcpy(d->state, state, sizeof d->state);
            d->native = native;
        }
    }
    if (!any && !d->text[0])
        append(d, what);
}

static int message_says_duplicate(const char *text)
{
    static const char *const words[] = {"UNIQUE constraint failed", "Duplicate entry", "duplicate key value",
                                        "is not unique"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strstr(text, words[i]))
            return 1;
    return 0;
}

/* The SQLite driver says HY000 for every error of SQLite, with SQLite's
 * result code as the native error. */
static diag_class sqlite_class(const diag *d)
{
    switch (d->native & 0xff) {
    case 5:  /* SQLITE_BUSY */
    case 6:  /* SQLITE_LOCKED */
    case 7:  /* SQLITE_NOMEM */
    case 10: /* SQLITE_IOERR */
    case 13: /* SQLITE_FULL */
        return DIAG_TRANSIENT;
    case 19: /* SQLITE_CONSTRAINT */
        return message_says_duplicate(d->text) ? DIAG_DUPLICATE : DIAG_DATA;
    case 1:  /* SQLITE_ERROR: syntax, no such table or column */
    case 18: /* SQLITE_TOOBIG */
    case 20: /* SQLITE_MISMATCH */
    case 25: /* SQLITE_RANGE */
        return DIAG_DATA;
    default:
        return DIAG_TRANSIENT;
    }
}

int diag_is_syntax_error(const diag *d)
{
    /* ODBC's 42000 (MySQL/MariaDB report it too), PostgreSQL's 42601, ODBC 2's 37000 */
    return strcmp(d->state, "42000") == 0 || strcmp(d->state, "42601") == 0 || strcmp(d->state, "37000") == 0;
}

diag_class diag_classify(const diag *d)
{
    const char *s = d->state;
    if (d->conn_lost || lost_state(s))
        return DIAG_CONN;
    if (strcmp(s, "HY000") == 0 && strstr(d->text, "[SQLite]"))
        return sqlite_class(d);
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0 || strcmp(s, "HYT00") == 0 || strcmp(s, "HYT01") == 0 ||
        strcmp(s, "HY008") == 0 || strcmp(s, "57014") == 0 || strcmp(s, "55P03") == 0 || strncmp(s, "53", 2) == 0 ||
        strcmp(s, "HY001") == 0)
        return DIAG_TRANSIENT;
    /* PostgreSQL says 23505; MySQL/MariaDB 23000 with 1062 (or 1586); the
     * SQLite driver reports SQLite's own message */
    if (strcmp(s, "23505") == 0 ||
        (strcmp(s, "23000") == 0 && (d->native == 1062 || d->native == 1586 || message_says_duplicate(d->text))))
        return DIAG_DUPLICATE;
    if (strncmp(s, "21", 2) == 0 || strncmp(s, "22", 2) == 0 || strncmp(s, "23", 2) == 0 ||
        strncmp(s, "42", 2) == 0 || strncmp(s, "44", 2) == 0 || strncmp(s, "0A", 2) == 0 ||
        strncmp(s, "07", 2) == 0 || strcmp(s, "25P02") == 0)
        return DIAG_DATA;
    return DIAG_TRANSIENT;
}
