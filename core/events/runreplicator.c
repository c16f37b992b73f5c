/*
 * runreplicator.c - parse a Run Replicator command without ever running it.
 *
 * The command is split into words the way a POSIX shell would quote them
 * (single quotes, double quotes, backslashes) but nothing is expanded,
 * substituted or executed: "$(id)", "`id`" and "${VAR}" stay literal text
 * and then fail the identifier checks. A word that still contains blanks
 * after unquoting is a wrapper's argument (`${RUN_SCRIPT} "sh ..."`,
 * `bash -c '...'`) and is split again, a few levels deep at most, to find
 * the script word.
 */
#include "build_config.h"
#include "events/runreplicator.h"

#include <syncbridge/event.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RR_DEFAULT_SCRIPT "run_replicator.sh"
#define RR_MAX_COMMAND 65536 /* longer is not a command line, it is an attack */
#define RR_MAX_DEPTH 4       /* wrapper nesting: sh -c "bash -c '...'" and so on */

typedef struct words {
    char **v;
    size_t n, cap;
} words;

static void words_free(words *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->v[i]);
    free(w->v);
    w->v = NULL;
    w->n = w->cap = 0;
}

static int words_push(words *w, const char *s, size_t len)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        char **v = realloc(w->v, cap * sizeof *v);
        if (!v)
            return -1;
        w->v = v;
        w->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    w->v[w->n++] = copy;
    return 0;
}

/* Split `s` into words. Quotes group and are removed; a backslash outside
 * single quotes takes the next character literally (inside double quotes
 * only before $ ` " \ and newline, as in sh). Returns 0, or RR_INVALID or
 * RR_NOMEM with errstr. */
static int split_words(const char *s, words *out, char *errstr, size_t errstr_size)
{
    size_t len = strlen(s);
    char *cur = malloc(len + 1);
    if (!cur) {
        snprintf(errstr, errstr_size, "out of memory");
        return RR_NOMEM;
    }
    int rc = RR_INVALID;
    size_t n = 0;
    int in_word = 0;
    const char *p = s;
    while (*p) {
        char c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (in_word && words_push(out, cur, n) != 0)
                goto oom;
            in_word = 0;
            n = 0;
            p++;
        } else if (c == '\'') {
            const char *end = strchr(p + 1, '\'');
            if (!end) {
                snprintf(errstr, errstr_size, "unterminated quote (') at column %zu", (size_t)(p - s) + 1);
                goto fail;
            }
            memcpy(cur + n, p + 1, (size_t)(end - p - 1));
            n += (size_t)(end - p - 1);
            in_word = 1;
            p = end + 1;
        } else if (c == '"') {
            const char *q = p + 1;
            while (*q && *q != '"') {
                if (*q == '\\' && q[1] && strchr("$`\"\\\n", q[1]))
                    q++;
                cur[n++] = *q++;
            }
            if (!*q) {
                snprintf(errstr, errstr_size, "unterminated quote (\") at column %zu", (size_t)(p - s) + 1);
                goto fail;
            }
            in_word = 1;
            p = q + 1;
        } else if (c == '\\') {
            if (p[1]) {
                cur[n++] = p[1];
                p += 2;
            } else {
                cur[n++] = '\\';
                p++;
            }
            in_word = 1;
        } else {
            cur[n++] = c;
            in_word = 1;
            p++;
        }
    }
    if (in_word && words_push(out, cur, n) != 0)
        goto oom;
    free(cur);
    return 0;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    rc = RR_NOMEM;
fail:
    free(cur);
    words_free(out);
    return rc;
}

static int is_identifier(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > RR_NAME_MAX || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '$'))
            return 0;
    return 1;
}

int rr_parse_date(const char *s, char out[16])
{
    int y, m, d;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(n == 10 && (i == 4 || i == 7) && s[i] == '-'))
            return -1;
    if (n == 8) {
        y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        m = (s[4] - '0') * 10 + (s[5] - '0');
        d = (s[6] - '0') * 10 + (s[7] - '0');
    } else if (n == 10 && s[4] == '-' && s[7] == '-') {
        y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        m = (s[5] - '0') * 10 + (s[6] - '0');
        d = (s[8] - '0') * 10 + (s[9] - '0');
    } else {
        return -1;
    }
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || y > 2999 || m < 1 || m > 12 || d < 1)
        return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap))
        return -1;
    snprintf(out, 16, "%04d-%02d-%02d", y, m, d);
    return 0;
}

static const char *basename_of(const char *w)
{
    const char *slash = strrchr(w, '/');
    return slash ? slash + 1 : w;
}

/* A redirection word ends the arguments: ">", ">>", "2>&1", ">file", "<x". */
static int is_redirection(const char *w)
{
    while (isdigit((unsigned char)*w))
        w++;
    return *w == '>' || *w == '<';
}

/* Fill `out` from the words after the script word. */
static int parse_args(char **a, size_t n, rr_command *out, char *errstr, size_t errstr_size)
{
    static const char *const names[] = {"schema", "table", "inc_key", "inc_val", "offset_days"};
    /* a list or pipeline ("s t; reboot", "s t && x") is not one run */
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], ";") == 0 || strcmp(a[i], "&&") == 0 || strcmp(a[i], "||") == 0 || strcmp(a[i], "|") == 0 ||
            strcmp(a[i], "&") == 0) {
            snprintf(errstr, errstr_size, "unexpected shell operator \"%s\" after %s", a[i], out->script);
            return -1;
        }
    size_t nargs = 0;
    while (nargs < n && !is_redirection(a[nargs]))
        nargs++;
    if (nargs > 5) {
        snprintf(errstr, errstr_size, "unexpected argument \"%.64s\" after offset_days", a[5]);
        return -1;
    }
    for (size_t i = nargs; i < n; i++) { /* only redirections and their targets may follow */
        const char *w = a[i];
        while (isdigit((unsigned char)*w))
            w++;
        int needs_target = strcmp(w, ">") == 0 || strcmp(w, ">>") == 0 || strcmp(w, "<") == 0;
        if (!is_redirection(a[i])) {
            snprintf(errstr, errstr_size, "unexpected argument \"%.64s\" after a redirection", a[i]);
            return -1;
        }
        if (needs_target && ++i == n) {
            snprintf(errstr, errstr_size, "redirection \"%s\" without a target", a[i - 1]);
            return -1;
        }
    }
    if (nargs < 1) {
        snprintf(errstr, errstr_size, "missing schema after %s", out->script);
        return -1;
    }
    if (nargs < 2) {
        snprintf(errstr, errstr_size, "missing table after schema \"%.64s\"", a[0]);
        return -1;
    }
    if (nargs == 3) {
        snprintf(errstr, errstr_size, "inc_key \"%.64s\" given without inc_val", a[2]);
        return -1;
    }
    for (size_t i = 0; i < nargs && i < 3; i++)
        if (!is_identifier(a[i])) {
            snprintf(errstr, errstr_size, "%s \"%.64s\" is not a valid identifier", names[i], a[i]);
            return -1;
        }
    snprintf(out->schema, sizeof out->schema, "%s", a[0]);
    snprintf(out->table, sizeof out->table, "%s", a[1]);
    if (nargs >= 4) {
        snprintf(out->inc_key, sizeof out->inc_key, "%s", a[2]);
        if (rr_parse_date(a[3], out->inc_date) != 0) {
            snprintf(errstr, errstr_size, "inc_val \"%.64s\" is not a date (yyyymmdd or yyyy-mm-dd)", a[3]);
            return -1;
        }
        memcpy(out->inc_val, a[3], strlen(a[3]) + 1); /* 8 or 10 characters: rr_parse_date checked */
    }
    if (nargs == 5) {
        const char *o = a[4];
        size_t len = strlen(o);
        int ok = len > 0 && len <= 5;
        for (size_t i = 0; ok && i < len; i++)
            ok = isdigit((unsigned char)o[i]) != 0;
        if (!ok) {
            snprintf(errstr, errstr_size, "offset_days \"%.64s\" is not a non-negative integer (at most 99999)", o);
            return -1;
        }
        out->offset_days = atoi(o);
    }
    return 0;
}

/* Look for the script word in `cmd`, descending into words that hold a
 * nested command. 1 = found and parsed, 0 = not here, RR_INVALID or
 * RR_NOMEM = error. */
static int find_script(const char *cmd, const char *script, int depth, rr_command *out, char *errstr,
                       size_t errstr_size)
{
    words w = {0};
    int rc = split_words(cmd, &w, errstr, errstr_size);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < w.n && rc == 0; i++) {
        if (strcmp(basename_of(w.v[i]), script) == 0) {
            rc = parse_args(w.v + i + 1, w.n - i - 1, out, errstr, errstr_size) == 0 ? 1 : RR_INVALID;
        } else if (depth < RR_MAX_DEPTH && strpbrk(w.v[i], " \t\n") && strstr(w.v[i], script)) {
            rc = find_script(w.v[i], script, depth + 1, out, errstr, errstr_size);
        }
    }
    words_free(&w);
    return rc;
}

long rr_utf8_error_at(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned long cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return (long)i;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
                return (long)i;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return (long)i;
        i += k + 1;
    }
    return -1;
}

int rr_parse_command(const char *cmd, const char *script_name, rr_command *out, char *errstr, size_t errstr_size)
{
    const char *script = script_name && *script_name ? script_name : RR_DEFAULT_SCRIPT;
    memset(out, 0, sizeof *out);
    out->offset_days = -1;
    if (!cmd || !*cmd) {
        snprintf(errstr, errstr_size, "empty command");
        return -1;
    }
    if (strlen(cmd) > RR_MAX_COMMAND) {
        snprintf(errstr, errstr_size, "command is longer than %d bytes", RR_MAX_COMMAND);
        return -1;
    }
    long bad = rr_utf8_error_at(cmd, strlen(cmd));
    if (bad >= 0) {
        /* its fields could not be JSON text: say so here, not as a failure later */
        snprintf(errstr, errstr_size, "command is not valid UTF-8 text (byte 0x%02x at column %ld)",
                 (unsigned char)cmd[bad], bad + 1);
        return -1;
    }
    if (strlen(script) > RR_NAME_MAX) {
        snprintf(errstr, errstr_size, "script name is longer than %d bytes", RR_NAME_MAX);
        return -1;
    }
    snprintf(out->script, sizeof out->script, "%s", script);
    int rc = find_script(cmd, script, 0, out, errstr, errstr_size);
    if (rc == 0)
        snprintf(errstr, errstr_size, "no %s in the command", script);
    if (rc != 1) {
        char keep[RR_NAME_MAX + 1];
        memcpy(keep, out->script, sizeof keep);
        memset(out, 0, sizeof *out);
        memcpy(out->script, keep, sizeof keep);
        out->offset_days = -1;
        return rc == RR_NOMEM ? RR_NOMEM : RR_INVALID;
    }
    return 0;
}

int rr_command_to_fields(const rr_command *c, const char *command_text, json_t *fields)
{
    int rc = 0;
    if (command_text)
        rc |= json_object_set_new(fields, "command", json_string(command_text));
    rc |= json_object_set_new(fields, "script", json_string(c->script));
    rc |= json_object_set_new(fields, "schema", json_string(c->schema));
    rc |= json_object_set_new(fields, "table", json_string(c->table));
    if (c->inc_key[0])
        rc |= json_object_set_new(fields, "inc_key", json_string(c->inc_key));
    if (c->inc_val[0]) {
        rc |= json_object_set_new(fields, "inc_val", json_string(c->inc_val));
        rc |= json_object_set_new(fields, "inc_date", json_string(c->inc_date));
    }
    rc |= json_object_set_new(fields, "offset_days", json_integer(c->offset_days >= 0 ? c->offset_days : 1));
    rc |= json_object_set_new(fields, "full_refresh", json_boolean(!c->inc_val[0]));
    return rc ? -1 : 0;
}

void rr_identity(const rr_command *c, const char *extra, char *buf, size_t bufsize)
{
    snprintf(buf, bufsize, "%s.%s|%s|%s", c->schema, c->table, c->inc_date[0] ? c->inc_date : "full",
             extra ? extra : "");
}

int rr_set_run_id(const rr_command *c, const char *identity_extra, json_t *fields)
{
    size_t size = strlen(c->schema) + strlen(c->table) + sizeof c->inc_date + 8 +
                  (identity_extra ? strlen(identity_extra) : 0);
    char *identity = malloc(size);
    if (!identity)
        return RR_NOMEM;
    rr_identity(c, identity_extra, identity, size);
    int rc = json_object_set_new(fields, "run_id", json_integer(sb_run_id(identity)));
    free(identity);
    return rc == 0 ? 0 : RR_NOMEM;
}

int rr_command_fields(const char *text, const char *script_name, const char *identity_extra, json_t *fields,
                      rr_command *cmd, char *errstr, size_t errstr_size)
{
    rr_command c;
    int rc = rr_parse_command(text, script_name, &c, errstr, errstr_size);
    if (rc == 0 && (rr_command_to_fields(&c, text, fields) != 0 ||
                    (identity_extra && rr_set_run_id(&c, identity_extra, fields) != 0))) {
        snprintf(errstr, errstr_size, "out of memory");
        rc = RR_NOMEM;
    }
    if (cmd)
        *cmd = c;
    return rc;
}

int rr_command_fields_n(const char *text, size_t len, const char *script_name, const char *identity_extra,
                        json_t *fields, rr_command *cmd, char *errstr, size_t errstr_size)
{
    if (memchr(text, '\0', len)) {
        snprintf(errstr, errstr_size, "command contains a NUL byte");
        return RR_INVALID;
    }
    while (len && isspace((unsigned char)text[len - 1]))
        len--;
    char *copy = malloc(len + 1);
    if (!copy) {
        snprintf(errstr, errstr_size, "out of memory");
        return RR_NOMEM;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    int rc = rr_command_fields(copy, script_name, identity_extra, fields, cmd, errstr, errstr_size);
    free(copy);
    return rc;
}
