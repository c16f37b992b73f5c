/* gerror.c - turn an HTTP error body into one line an operator can act on.
 * Handles Google's JSON error (AIP-193, with v1 "errors" and v2 "details"),
 * OAuth token endpoint errors and RFC 7807 problem JSON (Airflow). */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <jansson.h>
#include <string.h>

#define SNIPPET_MAX 200

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Copy up to max characters of s onto one line: control characters and
 * runs of white space become one space. */
static char *one_line(const char *s, size_t len, size_t max)
{
    char *out = sb_xmalloc(max + 4);
    size_t o = 0;
    int space = 1; /* drop leading white space */
    for (size_t i = 0; i < len && o < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isspace(ch) || ch < 0x20 || ch == 0x7f) {
            if (!space)
                out[o++] = ' ';
            space = 1;
            continue;
        }
        out[o++] = (char)ch;
        space = 0;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    if (o == max && len > max) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static const char *first_reason(const json_t *err)
{
    const json_t *errors = json_object_get(err, "errors");
    size_t i;
    const json_t *e;
    json_array_foreach(errors, i, e) {
        const char *r = jstr(e, "reason");
        if (r && *r)
            return r;
    }
    const json_t *details = json_object_get(err, "details");
    json_array_foreach(details, i, e) {
        const char *r = jstr(e, "reason");
        if (r && *r)
            return r;
    }
    return NULL;
}

static char *line(long status, const char *word, const char *msg, const char *reason)
{
    char *m = msg ? one_line(msg, strlen(msg), 1000) : sb_strdup("");
    char *r;
    if (word && *word && *m && reason)
        r = sb_asprintf("HTTP %ld %s: %s (reason: %s)", status, word, m, reason);
    else if (word && *word && *m)
        r = sb_asprintf("HTTP %ld %s: %s", status, word, m);
    else if (word && *word)
        r = reason ? sb_asprintf("HTTP %ld %s (reason: %s)", status, word, reason)
                   : sb_asprintf("HTTP %ld %s", status, word);
    else if (*m)
        r = reason ? sb_asprintf("HTTP %ld: %s (reason: %s)", status, m, reason) : sb_asprintf("HTTP %ld: %s", status, m);
    else
        r = sb_asprintf("HTTP %ld", status);
    free(m);
    return r;
}

char *sb_gcp_error_line(long status, const char *body, size_t body_len)
{
    if (!body || body_len == 0)
        return sb_asprintf("HTTP %ld (empty body)", status);
    json_t *root = json_loadb(body, body_len, 0, NULL);
    char *r = NULL;
    if (json_is_object(root)) {
        const json_t *err = json_object_get(root, "error");
        if (json_is_object(err)) {
            /* Google: {"error":{"code","message","status","errors","details"}} */
            r = line(status, jstr(err, "status"), jstr(err, "message"), first_reason(err));
        } else if (json_is_string(err)) {
            /* OAuth: {"error":"invalid_grant","error_description":"..."} */
            r = line(status, json_string_value(err), jstr(root, "error_description"), NULL);
        } else if (jstr(root, "title") || jstr(root, "detail")) {
            /* RFC 7807 problem JSON (Airflow REST API). */
            r = line(status, jstr(root, "title"), jstr(root, "detail"), NULL);
        } else if (jstr(root, "message")) {
            r = line(status, NULL, jstr(root, "message"), NULL);
        }
    }
    json_decref(root);
    if (!r) {
        char *snip = one_line(body, body_len, SNIPPET_MAX);
        r = *snip ? sb_asprintf("HTTP %ld: %s", status, snip) : sb_asprintf("HTTP %ld (empty body)", status);
        free(snip);
    }
    return r;
}
