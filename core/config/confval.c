/* confval.c - durations, sizes and the wrong-value message, shared by the
 * config loader and plugin options (see confval.h). */
#include "build_config.h"
#include "config/confval.h"
#include "config/config.h"
#include "config/options_internal.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    if (n < 0 && s && strcmp(s, json_string_value(v)) != 0) { /* say what the substitution gave */
        char *got = sb_json_brief(v);
        sb_err(msg, msg_size, "expected %s, got %s (after substitution: \"%s\")", what, got, s);
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
