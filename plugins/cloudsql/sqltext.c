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

int sql_stmt_parse(sql_stmt *st, const char *text, char *errstr, size_t errstr_size)
{
    memset(st, 0, sizeof *st);
    sb_strbuf out = {0};
    const char *s = text;
    size_t n = strlen(text), i = 0;
    while (i < n) {
        char c = s[i];
        if (c == '\'' || c == '"' || c == '`') { /* quoted: a doubled quote is an escaped one */
            size_t j = i + 1;
            for (;;) {
                if (j >= n) {
                    free(out.p);
                    sql_stmt_free(st);
                    return sb_err(errstr, errstr_size, "statement: the %c at offset %zu is never closed", c, i);
                }
                if (s[j] == c) {
                    if (s[j + 1] == c) {
                        j += 2;
                        continue;
                    }
                    break;
                }
                j++;
            }
            sb_strbuf_add(&out, s + i, j + 1 - i);
            i = j + 1;
        } else if (c == '-' && s[i + 1] == '-') { /* comment to the end of the line */
            size_t j = i;
            while (j < n && s[j] != '\n')
                j++;
            sb_strbuf_add(&out, s + i, j - i);
            i = j;
        } else if (c == '/' && s[i + 1] == '*') {
            const char *end = strstr(s + i + 2, "*/");
            if (!end) {
                free(out.p);
                sql_stmt_free(st);
                return sb_err(errstr, errstr_size, "statement: the comment at offset %zu is never closed", i);
            }
            size_t j = (size_t)(end - s) + 2;
            sb_strbuf_add(&out, s + i, j - i);
            i = j;
        } else if (c == '$' && (i == 0 || !ident_char(s[i - 1])) && dollar_tag(s + i)) {
            size_t tl = dollar_tag(s + i);
            char *tag = sb_asprintf("%.*s", (int)tl, s + i);
            const char *end = strstr(s + i + tl, tag);
            free(tag);
            if (!end) {
                free(out.p);
                sql_stmt_free(st);
                return sb_err(errstr, errstr_size, "statement: the dollar quote at offset %zu is never closed", i);
            }
            size_t j = (size_t)(end - s) + tl;
            sb_strbuf_add(&out, s + i, j - i);
            i = j;
        } else if (c == ':' && (s[i + 1] == ':' || s[i + 1] == '=')) { /* x::type, @v := 1 */
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
            sb_strbuf_add(&out, "?", 1);
            i = j;
        } else if (c == '?') {
            free(out.p);
            sql_stmt_free(st);
            return sb_err(errstr, errstr_size,
                          "statement: a '?' at offset %zu: write named placeholders (:field) instead, which are "
                          "bound from the event's fields",
                          i);
        } else {
            sb_strbuf_add(&out, s + i, 1);
            i++;
        }
    }
    if (!out.p)
        sb_strbuf_add(&out, "", 0);
    st->sql = out.p;
    return 0;
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
