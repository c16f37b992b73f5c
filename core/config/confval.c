/* confval.c - what the config loader and plugin options read alike (see
 * confval.h): ${...} substitution, durations, sizes, and the wording of a
 * wrong value or a misspelt name. */
#include "build_config.h"
#include "config/confval.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SUBST_FILE_MAX (1024 * 1024)

/* ---- substitution ---------------------------------------------------------- */

/* A substituted value is data, never syntax: in a template option a "$"
 * in a secret is doubled so the template compiler reads it literally. */
static void add_value(sb_strbuf *b, const char *v, size_t n, int in_template)
{
    for (size_t i = 0; i < n; i++)
        sb_strbuf_add(b, v[i] == '$' && in_template ? "$$" : v + i, v[i] == '$' && in_template ? 2 : 1);
}

static int subst_file(sb_strbuf *b, const char *path, int in_template, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sb_err(errstr, errstr_size, "cannot read file \"%s\": %s", path, strerror(errno));
    char *data = sb_xmalloc(SUBST_FILE_MAX + 1);
    size_t n = fread(data, 1, SUBST_FILE_MAX + 1, f);
    int read_errno = ferror(f) ? errno : 0;
    fclose(f);
    int rc = 0;
    if (read_errno)
        rc = sb_err(errstr, errstr_size, "cannot read file \"%s\": %s", path, strerror(read_errno));
    else if (n > SUBST_FILE_MAX)
        rc = sb_err(errstr, errstr_size, "file \"%s\" is larger than 1 MiB", path);
    if (rc == 0) {
        if (n > 0 && data[n - 1] == '\n')
            n--;
        if (n > 0 && data[n - 1] == '\r')
            n--;
        add_value(b, data, n, in_template);
    }
    free(data);
    return rc;
}

static int subst_env(sb_strbuf *b, const char *name, int in_template, char *errstr, size_t errstr_size)
{
    if (!*name)
        return sb_err(errstr, errstr_size, "empty environment variable name in \"${}\"");
    const char *v = getenv(name);
    if (!v)
        return sb_err(errstr, errstr_size, "environment variable \"%s\" is not set", name);
    add_value(b, v, strlen(v), in_template);
    return 0;
}

char *sb_config_subst(const char *in, int keep_fields, char *errstr, size_t errstr_size)
{
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "", 0);
    size_t i = 0;
    while (in && in[i]) {
        if (in[i] != '$' || (in[i + 1] != '{' && in[i + 1] != '$')) {
            sb_strbuf_add(&b, in + i, 1);
            i++;
            continue;
        }
        if (in[i + 1] == '$') {
            /* Templates give "$$" its own meaning, so leave it to them. */
            if (keep_fields) {
                sb_strbuf_add(&b, "$$", 2);
                i += 2;
            } else if (in[i + 2] == '{') {
                sb_strbuf_add(&b, "${", 2);
                i += 3;
            } else {
                sb_strbuf_add(&b, "$", 1);
                i++;
            }
            continue;
        }
        const char *inner = in + i + 2;
        const char *close = strchr(inner, '}');
        if (!close) {
            if (keep_fields) {
                sb_strbuf_add(&b, in + i, strlen(in + i));
                break;
            }
            free(b.p);
            sb_err(errstr, errstr_size, "unterminated \"${\" at column %zu", i + 1);
            return NULL;
        }
        size_t inner_len = (size_t)(close - inner);
        char *ref = sb_xmalloc(inner_len + 1);
        memcpy(ref, inner, inner_len);
        ref[inner_len] = '\0';
        int rc = 0;
        if (strncmp(ref, "env:", 4) == 0)
            rc = subst_env(&b, ref + 4, keep_fields, errstr, errstr_size);
        else if (strncmp(ref, "file:", 5) == 0)
            rc = subst_file(&b, ref + 5, keep_fields, errstr, errstr_size);
        else if (keep_fields)
            sb_strbuf_add(&b, in + i, inner_len + 3);
        else
            rc = subst_env(&b, ref, keep_fields, errstr, errstr_size);
        free(ref);
        if (rc != 0) {
            free(b.p);
            return NULL;
        }
        i = (size_t)(close - in) + 1;
    }
    return b.p;
}

/* ---- message helpers -------------------------------------------------- */

/* Optimal string alignment distance: Levenshtein plus adjacent
 * transpositions, the commonest typo ("prot" for "port"). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), w = lb + 1;
    size_t *d = sb_xcalloc((la + 1) * w, sizeof *d);
    for (size_t i = 0; i <= la; i++)
        d[i * w] = i;
    for (size_t j = 0; j <= lb; j++)
        d[j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[(i - 1) * w + j - 1] + cost;
            if (d[(i - 1) * w + j] + 1 < best)
                best = d[(i - 1) * w + j] + 1;
            if (d[i * w + j - 1] + 1 < best)
                best = d[i * w + j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[(i - 2) * w + j - 2] + 1 < best)
                best = d[(i - 2) * w + j - 2] + 1;
            d[i * w + j] = best;
        }
    }
    size_t dist = d[la * w + lb];
    free(d);
    return dist;
}

const char *sb_closest_name(const char *given, const char *const *names, size_t n)
{
    size_t len = strlen(given);
    size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(given, names[i]);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    return best;
}

char *sb_json_brief(const json_t *v)
{
    if (!v)
        return sb_strdup("nothing");
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return sb_strdup("?");
    if (strlen(s) > 60)
        strcpy(s + 57, "...");
    return s;
}

/* ---- durations and sizes ------------------------------------------------- */

static int64_t parse_scaled(const char *s, const char *const *units, const int64_t *mult, size_t nunits)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -1;
    while (*end == ' ')
        end++;
    if (*end == '\0')
        return (int64_t)v * mult[0];
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(end, units[i]) == 0) {
            if (v > INT64_MAX / mult[i])
                return -1;
            return (int64_t)v * mult[i];
        }
    }
    return -1;
}

/* Durations are used in microseconds and added to clock readings: one of
 * "1000000000d" overflowed there (a retention cutoff in the future pruned
 * every settled entry), so a century is the most a duration may be. */
#define MAX_DURATION_MS (100LL * 366 * 86400000)

static int64_t duration_any_ms(const char *s)
{
    static const char *const units[] = {"ms", "s", "m", "h", "d"};
    static const int64_t mult[] = {1, 1000, 60000, 3600000, 86400000};
    return parse_scaled(s, units, mult, 5);
}

int64_t sb_parse_duration_ms(const char *s)
{
    int64_t v = duration_any_ms(s);
    return v > MAX_DURATION_MS ? -1 : v;
}

int64_t sb_parse_size(const char *s)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB", "K", "M", "G", "KiB", "MiB", "GiB"};
    static const int64_t mult[] = {1, 1024, 1048576, 1073741824, 1099511627776LL,
                                   1024, 1048576, 1073741824, 1024, 1048576, 1073741824};
    return parse_scaled(s, units, mult, 11);
}

int sb_config_expected(char *msg, size_t msg_size, const char *what, const json_t *v)
{
    char *got = sb_json_brief(v);
    sb_err(msg, msg_size, "expected %s, got %s", what, got);
    free(got);
    return -1;
}

int sb_config_scaled(const json_t *v, sb_scaled_kind kind, int64_t *out, char *msg, size_t msg_size)
{
    const char *what = kind == SB_SCALED_DURATION ? "a duration like \"250ms\" or \"5s\""
                                                  : "a size like \"512\", \"64KB\" or \"10MB\"";
    int64_t n = -1;
    char *s = NULL;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        n = json_integer_value(v);
    } else if (json_is_string(v)) {
        if (!(s = sb_config_subst(json_string_value(v), 0, msg, msg_size)))
            return -1;
        n = kind == SB_SCALED_DURATION ? duration_any_ms(s) : sb_parse_size(s);
    }
    if (kind == SB_SCALED_DURATION && n > MAX_DURATION_MS) {
        free(s);
        return sb_config_expected(msg, msg_size, "a duration of at most 100 years", v);
    }
    if (n < 0 && s && strcmp(s, json_string_value(v)) != 0) {
        /* The substituted text may be a secret: name where it came from,
         * never what it is. */
        char *got = sb_json_brief(v);
        sb_err(msg, msg_size, "expected %s, got %s, whose substituted value is not one (not shown: check the variable "
               "or file it names)", what, got);
        free(got);
        free(s);
        return -1;
    }
    free(s);
    if (n < 0)
        return sb_config_expected(msg, msg_size, what, v);
    *out = n;
    return 0;
}
