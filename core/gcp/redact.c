/* redact.c - take secrets out of text before it reaches a log line or an
 * error string: Authorization headers, bearer tokens, token/assertion/
 * secret values in JSON or form encoding, and PEM private keys. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MASK "[REDACTED]"

/* Keys whose values are secrets, in JSON ("key": "v") or form (key=v). */
static const char *const secret_keys[] = {
    "access_token", "accessToken", "id_token", "refresh_token", "assertion", "client_secret",
    "private_key", "signedJwt", "token", "password",
    /* a Hadoop delegation token in a WebHDFS query, and the upload_id of a
     * Cloud Storage resumable session, whose URI alone lets anyone upload */
    "delegation", "upload_id", NULL,
};

static int is_word(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* PEM block: from "-----BEGIN ...PRIVATE KEY-----" through the END line. */
static size_t match_pem(const char *s, size_t *skip)
{
    if (strncmp(s, "-----BEGIN ", 11) != 0)
        return 0;
    const char *eol = strstr(s + 11, "-----");
    if (!eol)
        return 0;
    size_t hl = (size_t)(eol - s);
    if (hl < 11 + 11 || strncmp(eol - 11, "PRIVATE KEY", 11) != 0)
        return 0;
    const char *end = strstr(eol + 5, "-----END ");
    if (end) {
        const char *close = strstr(end + 9, "-----");
        *skip = close ? (size_t)(close + 5 - s) : strlen(s);
    } else {
        *skip = strlen(s);
    }
    return 1;
}

/* "Authorization: value" (also Proxy-Authorization) up to the line end. */
static int match_auth_header(const char *start, const char *s, size_t *keep, size_t *skip)
{
    static const char *const names[] = {"Proxy-Authorization:", "Authorization:", NULL};
    if (s > start && (is_word(s[-1])))
        return 0;
    for (int i = 0; names[i]; i++) {
        size_t nl = strlen(names[i]);
        if (strncasecmp(s, names[i], nl) == 0) {
            size_t k = nl;
            while (s[k] == ' ' || s[k] == '\t')
                k++;
            size_t e = k;
            while (s[e] && s[e] != '\r' && s[e] != '\n')
                e++;
            *keep = k;
            *skip = e;
            return 1;
        }
    }
    return 0;
}

/* "Bearer <token>" anywhere. */
static int match_bearer(const char *start, const char *s, size_t *keep, size_t *skip)
{
    if ((s > start && is_word(s[-1])) || strncasecmp(s, "Bearer ", 7) != 0)
        return 0;
    size_t k = 7;
    while (s[k] == ' ')
        k++;
    size_t e = k;
    while (s[e] && !isspace((unsigned char)s[e]) && s[e] != '"' && s[e] != '\'' && s[e] != ',')
        e++;
    if (e == k)
        return 0;
    *keep = k;
    *skip = e;
    return 1;
}

/* key="value" in JSON, or key=value in a form / query string. */
static int match_key(const char *start, const char *s, size_t *keep, size_t *skip)
{
    int quoted = 0;
    const char *k0 = s;
    if (*s == '"') {
        quoted = 1;
        k0 = s + 1;
    } else if (s > start && is_word(s[-1])) {
        return 0;
    }
    for (int i = 0; secret_keys[i]; i++) {
        size_t kl = strlen(secret_keys[i]);
        if (strncasecmp(k0, secret_keys[i], kl) != 0)
            continue;
        const char *p = k0 + kl;
        if (quoted) {
            if (*p != '"')
                continue;
            p++;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p != ':')
                continue;
            p++;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p != '"')
                continue; /* a number or object: not a secret string */
            p++;
            const char *v = p;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
            *keep = (size_t)(v - s);
            *skip = (size_t)(p - s);
            return 1;
        }
        if (*p != '=')
            continue;
        p++;
        const char *v = p;
        while (*p && *p != '&' && *p != '"' && *p != '\'' && !isspace((unsigned char)*p))
            p++;
        *keep = (size_t)(v - s);
        *skip = (size_t)(p - s);
        return 1;
    }
    return 0;
}

char *sb_gcp_redact(const char *text)
{
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "", 0);
    if (!text)
        return b.p;
    const char *s = text;
    while (*s) {
        size_t keep = 0, skip = 0;
        if (match_pem(s, &skip)) {
            sb_strbuf_add(&b, "[REDACTED PRIVATE KEY]", 22);
            s += skip;
        } else if (match_auth_header(text, s, &keep, &skip) || match_bearer(text, s, &keep, &skip) ||
                   match_key(text, s, &keep, &skip)) {
            sb_strbuf_add(&b, s, keep);
            if (skip > keep)
                sb_strbuf_add(&b, MASK, strlen(MASK));
            s += skip;
        } else {
            sb_strbuf_add(&b, s, 1);
            s++;
        }
    }
    return b.p;
}
