/* sqltext.c - named placeholders and connection-string secrets (sqltext.h). */
#include "sqltext.h"

#include <syncbridge/buf.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int ident_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static int ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Length of a dollar-quote tag "$tag$" at s (s[0] == '$'), or 0. */
static size_t dollar_tag(const char *s)
{
    size_t i = 1;
    if (s[i] != '$' && !ident_start(s[i]))
        return 0;
    while (s[i] != '$') {
        if (!ident_char(s[i]))
            return 0;
        i++;
    }
    return i + 1;
}

void sql_stmt_free(sql_stmt *st)
{
    if (!st)
        return;
    free(st->sql);
    for (size_t i = 0; i < st->n_names; i++)
        free(st->names[i]);
    free(st->names);
    free(st->markers);
    memset(st, 0, sizeof *st);
}

static size_t name_index(sql_stmt *st, const char *name, size_t len)
{
    for (size_t i = 0; i < st->n_names; i++)
        if (strlen(st->names[i]) == len && memcmp(st->names[i], name, len) == 0)
            return i;
    st->names = realloc(st->names, (st->n_names + 1) * sizeof *st->names);
    if (!st->names)
        abort();
    st->names[st->n_names] = sb_asprintf("%.*s", (int)len, name);
    return st->n_names++;
}

/* Where a quoted string, comment or dollar quote starting at s[i] ends
 * (the index after it): 0 when none starts there, -1 (with errstr) when it
 * is never closed. */
static long literal_end(const char *s, size_t n, size_t i, char *errstr, size_t errstr_size)
{
    char c = s[i];
    if (c == '\'' || c == '"' || c == '`') { /* a doubled quote is an escaped one */
        for (size_t j = i + 1; j < n; j++)
            if (s[j] == c) {
                if (s[j + 1] != c)
                    return (long)j + 1;
                j++;
            }
        return sb_err(errstr, errstr_size, "statement: the %c at offset %zu is never closed", c, i);
    }
    if (c == '-' && s[i + 1] == '-') { /* to the end of the line */
        const char *nl = strchr(s + i, '\n');
        return nl ? (long)(nl - s) : (long)n;
    }
    if (c == '/' && s[i + 1] == '*') {
        const char *end = strstr(s + i + 2, "*/");
        if (!end)
            return sb_err(errstr, errstr_size, "statement: the comment at offset %zu is never closed", i);
        return (long)(end - s) + 2;
    }
    if (c == '$' && (i == 0 || !ident_char(s[i - 1])) && dollar_tag(s + i)) {
        size_t tl = dollar_tag(s + i);
        char *tag = sb_asprintf("%.*s", (int)tl, s + i);
        const char *end = strstr(s + i + tl, tag);
        free(tag);
        if (!end)
            return sb_err(errstr, errstr_size, "statement: the dollar quote at offset %zu is never closed", i);
        return (long)(end - s) + (long)tl;
    }
    return 0;
}

/* Looking for the one row of an INSERT ... VALUES (...), token by token at
 * the statement's top level (sql_stmt.row_start). */
typedef struct row_scan {
    int words;     /* words seen so far */
    int insert;    /* the first word is INSERT or REPLACE */
    int depth;     /* parentheses open */
    int after_values, in_row, row_done, after_row, ended;
    int disqualified; /* a marker outside the row, a second row, a SELECT or another statement */
} row_scan;

static int word_is(const char *w, size_t len, const char *kw)
{
    return len == strlen(kw) && strncasecmp(w, kw, len) == 0;
}

/* After the row, only what an upsert or RETURNING adds may follow, kept
 * once: ON CONFLICT / ON DUPLICATE KEY, MySQL's AS alias, RETURNING, and a
 * final ';'. Anything else (a second statement, LIMIT, a UNION) would not
 * mean the same once the row is repeated. */
static void after_the_row(row_scan *rs, const char *w, size_t len, char c)
{
    if (rs->ended || !(c == ';' || (w && (word_is(w, len, "on") || word_is(w, len, "as") ||
                                          word_is(w, len, "returning")))))
        rs->disqualified = 1;
    rs->ended |= c == ';';
}

static void scan_word(row_scan *rs, const char *w, size_t len)
{
    if (rs->words++ == 0)
        rs->insert = word_is(w, len, "insert") || word_is(w, len, "replace");
    if (rs->after_row)
        after_the_row(rs, w, len, 0);
    else if (rs->ended)
        rs->disqualified = 1;
    if (rs->depth == 0 && !rs->row_done && word_is(w, len, "select"))
        rs->disqualified = 1; /* INSERT ... SELECT ... VALUES: not a row of values */
    /* the first top-level VALUES only: MySQL's VALUES(col) may follow the row */
    rs->after_values = rs->depth == 0 && !rs->in_row && !rs->row_done && word_is(w, len, "values");
    rs->after_row = 0;
}

/* Any other token at out_len in the output: c is its first byte (0 for a
 * quote or marker). */
static void scan_token(row_scan *rs, sql_stmt *st, char c, size_t out_len)
{
    rs->words++;
    if (rs->after_row || rs->ended)
        after_the_row(rs, NULL, 0, c);
    if (c == '(') {
        if (rs->after_values && rs->depth == 0) {
            rs->in_row = 1;
            st->row_start = out_len;
        }
        rs->depth++;
    } else if (c == ')' && rs->depth > 0) {
        if (--rs->depth == 0 && rs->in_row) {
            rs->in_row = 0;
            rs->row_done = 1;
            st->row_end = out_len + 1;
            rs->after_values = 0;
            rs->after_row = 1;
            return;
        }
    }
    rs->after_values = 0;
    rs->after_row = 0;
}

int sql_stmt_parse(sql_stmt *st, const char *text, char *errstr, size_t errstr_size)
{
    memset(st, 0, sizeof *st);
    sb_strbuf out = {0};
    row_scan rs = {0};
    const char *s = text;
    size_t n = strlen(text), i = 0;
    while (i < n) {
        char c = s[i];
        long end = literal_end(s, n, i, errstr, errstr_size);
        if (end < 0) {
            free(out.p);
            sql_stmt_free(st);
            return -1;
        }
        if (end > 0) { /* copied as it is; a comment is no token */
            if (!(c == '-' || c == '/'))
                scan_token(&rs, st, 0, out.len);
            sb_strbuf_add(&out, s + i, (size_t)end - i);
            i = (size_t)end;
        } else if (c == ':' && (s[i + 1] == ':' || s[i + 1] == '=')) { /* x::type, @v := 1 */
            scan_token(&rs, st, c, out.len);
            sb_strbuf_add(&out, s + i, 2);
            i += 2;
        } else if (c == ':' && ident_start(s[i + 1]) && (i == 0 || s[i - 1] != ':')) {
            size_t j = i + 1;
            while (ident_char(s[j]))
                j++;
            size_t idx = name_index(st, s + i + 1, j - i - 1);
            st->markers = realloc(st->markers, (st->n_markers + 1) * sizeof *st->markers);
            if (!st->markers)
                abort();
            st->markers[st->n_markers++] = idx;
            if (!rs.in_row)
                rs.disqualified = 1;
            scan_token(&rs, st, 0, out.len);
            sb_strbuf_add(&out, "?", 1);
            i = j;
        } else if (c == '?') {
            free(out.p);
            sql_stmt_free(st);
            return sb_err(errstr, errstr_size,
                          "statement: a '?' at offset %zu: write named placeholders (:field) instead, which are "
                          "bound from the event's fields",
                          i);
        } else if (ident_start(c) && (i == 0 || !ident_char(s[i - 1]))) {
            size_t j = i + 1;
            while (ident_char(s[j]))
                j++;
            scan_word(&rs, s + i, j - i);
            sb_strbuf_add(&out, s + i, j - i);
            i = j;
        } else {
            if (!isspace((unsigned char)c))
                scan_token(&rs, st, c, out.len);
            sb_strbuf_add(&out, s + i, 1);
            i++;
        }
    }
    if (!out.p)
        sb_strbuf_add(&out, "", 0);
    st->sql = out.p;
    if (!rs.insert || !rs.row_done || rs.disqualified || st->n_markers == 0)
        st->row_start = st->row_end = 0;
    return 0;
}

char *sql_stmt_multi_row(const sql_stmt *st, size_t rows)
{
    if (st->row_end == 0 || rows == 0)
        return NULL;
    const char *row = st->sql + st->row_start;
    size_t row_len = st->row_end - st->row_start;
    sb_strbuf out = {0};
    sb_strbuf_add(&out, st->sql, st->row_start);
    for (size_t t = 0; t < rows; t++) {
        if (t)
            sb_strbuf_add(&out, ", ", 2);
        sb_strbuf_add(&out, row, row_len);
    }
    sb_strbuf_add(&out, st->sql + st->row_end, strlen(st->sql + st->row_end));
    return out.p;
}

/* ---- connection strings ---------------------------------------------------- */

static int secret_key(const char *k, size_t len)
{
    static const char *const words[] = {"pwd", "pass", "secret", "token", "key"};
    char low[64];
    if (len >= sizeof low)
        len = sizeof low - 1;
    for (size_t i = 0; i < len; i++)
        low[i] = (char)tolower((unsigned char)k[i]);
    low[len] = 0;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strstr(low, words[i]))
            return 1;
    return 0;
}

char **conn_secrets(const char *conn)
{
    char **out = calloc(1, sizeof *out);
    size_t n = 0;
    if (!out)
        abort();
    if (!strchr(conn, '='))
        return out;
    const char *p = conn;
    while (*p) {
        while (*p == ';' || isspace((unsigned char)*p))
            p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        if (*p != '=') /* a stray word: skip it */
            continue;
        const char *ke = p;
        while (ke > k && isspace((unsigned char)ke[-1]))
            ke--;
        p++;
        const char *v = p, *ve;
        if (*p == '{') { /* {value; with ;} and }} for a literal } */
            v = ++p;
            while (*p && !(*p == '}' && p[1] != '}'))
                p += (*p == '}') ? 2 : 1;
            ve = p;
            if (*p)
                p++;
        } else {
            while (*p && *p != ';')
                p++;
            ve = p;
        }
        if (secret_key(k, (size_t)(ke - k)) && ve > v) {
            out = realloc(out, (n + 2) * sizeof *out);
            if (!out)
                abort();
            out[n++] = sb_asprintf("%.*s", (int)(ve - v), v);
            out[n] = NULL;
        }
    }
    return out;
}

void conn_secrets_free(char **secrets)
{
    if (!secrets)
        return;
    for (char **s = secrets; *s; s++)
        free(*s);
    free(secrets);
}

char *redact(const char *text, char *const *secrets)
{
    char *cur = sb_asprintf("%s", text ? text : "");
    for (char *const *s = secrets; s && *s; s++) {
        size_t sl = strlen(*s);
        if (sl < 3)
            continue;
        sb_strbuf b = {0};
        const char *p = cur, *hit;
        while ((hit = strstr(p, *s))) {
            sb_strbuf_add(&b, p, (size_t)(hit - p));
            sb_strbuf_add(&b, "[REDACTED]", 10);
            p = hit + sl;
        }
        sb_strbuf_add(&b, p, strlen(p));
        free(cur);
        cur = b.p;
    }
    return cur;
}

char *conn_string(const char *conn)
{
    return strchr(conn, '=') ? sb_asprintf("%s", conn) : sb_asprintf("DSN=%s", conn);
}
