/* common.c - the values of the Google access layer that every other file
 * may use and that call none of them: configuration defaults, auth mode
 * names, backoff and Retry-After arithmetic, which statuses are retried,
 * and freeing a response. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- pure helpers ------------------------------------------------------ */

int64_t sb_gcp__backoff_cap_ms(int64_t initial_ms, double mult, int64_t max_ms, int n)
{
    double cap = (double)initial_ms;
    for (int i = 0; i < n && cap < (double)max_ms; i++)
        cap *= mult;
    if (cap > (double)max_ms)
        cap = (double)max_ms;
    return cap < 0 ? 0 : (int64_t)cap;
}

int64_t sb_gcp__backoff_delay_ms(int64_t initial_ms, double mult, int64_t max_ms, int n)
{
    int64_t cap = sb_gcp__backoff_cap_ms(initial_ms, mult, max_ms, n);
    return (int64_t)sb_rand_below((uint64_t)cap + 1);
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; m 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int month_index(const char *name)
{
    static const char *const names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++)
        if (strcmp(name, names[i]) == 0)
            return i + 1;
    return 0;
}

static int only_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    return *s == '\0';
}

/* An HTTP-date (RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC 850 and
 * asctime forms a recipient must accept) -> seconds since the epoch, or -1.
 * Parsed by hand: strptime's names follow the process locale. */
static int64_t http_date(const char *v, time_t now)
{
    char wday[16], mon[4], zone[4];
    int d, y, H, M, S, n = 0;
    if (sscanf(v, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3[A-Z]%n", wday, &d, mon, &y, &H, &M, &S, zone,
               &n) == 8 && n > 0) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    } else if (n = 0, sscanf(v, "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d %3[A-Z]%n", wday, &d, mon, &y, &H, &M,
                             &S, zone, &n) == 8 && n > 0) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT; a two-digit year more than
         * 50 years ahead is the most recent past one with those digits */
        struct tm t;
        gmtime_r(&now, &t);
        if (y < 0)
            return -1;
        y += 2000;
        if (y > t.tm_year + 1900 + 50)
            y -= 100;
    } else if (n = 0, sscanf(v, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wday, mon, &d, &H, &M, &S, &y, &n) ==
                          7 && n > 0) {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        strcpy(zone, "GMT");
    } else {
        return -1;
    }
    int m = month_index(mon);
    /* %d takes a sign: "-1:-1:-1" must not pass */
    if (!only_blanks(v + n) || strcmp(zone, "GMT") != 0 || m == 0 || d < 1 || d > 31 || H < 0 || H > 23 || M < 0 ||
        M > 59 || S < 0 || S > 60 || y < 1970)
        return -1;
    return days_from_civil(y, m, d) * 86400 + H * 3600 + M * 60 + S;
}

int64_t sb_gcp__retry_after_at_ms(const char *value, time_t now)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    int64_t s;
    if (*value >= '0' && *value <= '9') {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || !only_blanks(end))
            return -1;
        s = v;
    } else {
        int64_t at = http_date(value, now);
        if (at < 0)
            return -1;
        s = at > (int64_t)now ? at - (int64_t)now : 0; /* a date passed: no wait */
    }
    if (s < 0 || s > 86400)
        return -1; /* more than a day is a mistake, not a wait */
    return s * 1000;
}

int64_t sb_gcp_retry_after_ms(const char *value)
{
    return sb_gcp__retry_after_at_ms(value, time(NULL));
}

int sb_gcp__status_retriable(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

int sb_gcp_auth_mode_parse(const char *s)
{
    static const char *const names[] = {"default", "adc", "service_account", "metadata", "none", "static"};
    for (int i = 0; s && i < (int)(sizeof names / sizeof names[0]); i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *sb_gcp_auth_mode_name(sb_gcp_auth_mode mode)
{
    switch (mode) {
    case SB_GCP_AUTH_DEFAULT: return "default";
    case SB_GCP_AUTH_ADC: return "adc";
    case SB_GCP_AUTH_SERVICE_ACCOUNT: return "service_account";
    case SB_GCP_AUTH_METADATA: return "metadata";
    case SB_GCP_AUTH_NONE: return "none";
    case SB_GCP_AUTH_STATIC: return "static";
    }
    return "?";
}

int sb_gcp__copy_sized(void *dst, size_t dst_size, const void *src, size_t size, size_t min_size, const char *what,
                       char *errstr, size_t errstr_size)
{
    if (size < min_size)
        return sb_err(errstr, errstr_size,
                      "invalid %s: its size field is %zu, at least %zu expected (set size = sizeof(%s); "
                      "a zeroed struct is not initialised)",
                      what, size, min_size, what);
    memset(dst, 0, dst_size);
    memcpy(dst, src, size < dst_size ? size : dst_size);
    /* A newer caller's fields this library cannot honour must be unset. */
    for (size_t i = dst_size; i < size; i++)
        if (((const unsigned char *)src)[i])
            return sb_err(errstr, errstr_size,
                          "invalid %s: it sets fields this libsyncbridge_gcp does not know (size %zu, known %zu); "
                          "the plugin was built against a newer SDK",
                          what, size, dst_size);
    return 0;
}

void sb_gcp_conf_init_sized(sb_gcp_conf *conf, size_t size)
{
    /* The caller's own bytes, all of them: a newer caller's struct is
     * larger, and its fields unknown here must read as unset. */
    memset(conf, 0, size);
    if (size < SB_GCP__CONF_MIN_SIZE)
        return; /* left with a size sb_gcp_client_new() refuses */
    conf->size = size;
    conf->auth = SB_GCP_AUTH_DEFAULT;
    conf->refresh_margin_ms = 225000;
    conf->tls_verify = 1;
    conf->connect_timeout_ms = 10000;
    conf->timeout_ms = 60000;
    conf->low_speed_limit = 1;
    conf->low_speed_time_ms = 30000;
    conf->max_attempts = 6;
    conf->retry_initial_ms = 250;
    conf->retry_multiplier = 2.0;
    conf->retry_max_delay_ms = 32000;
    conf->deadline_ms = 120000;
}

/* ---- cancel tokens ------------------------------------------------------ */

sb_gcp_cancel *sb_gcp_cancel_new(void)
{
    sb_gcp_cancel *k = sb_xcalloc(1, sizeof *k);
    atomic_init(&k->set, 0);
    return k;
}

void sb_gcp_cancel_free(sb_gcp_cancel *k)
{
    free(k);
}

void sb_gcp_cancel_set(sb_gcp_cancel *k)
{
    atomic_store(&k->set, 1);
}

void sb_gcp_cancel_reset(sb_gcp_cancel *k)
{
    atomic_store(&k->set, 0);
}

int sb_gcp_cancel_is_set(const sb_gcp_cancel *k)
{
    return k && atomic_load(&((sb_gcp_cancel *)k)->set);
}

/* ---- response headers ---------------------------------------------------- */

typedef struct headers {
    size_t n, cap;
    char **name, **value;
} headers;

void sb_gcp__headers_reset(sb_gcp_response *r)
{
    headers *h = r->priv;
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->name[i]);
        free(h->value[i]);
    }
    h->n = 0;
}

static void headers_free(sb_gcp_response *r)
{
    headers *h = r->priv;
    if (!h)
        return;
    sb_gcp__headers_reset(r);
    free(h->name);
    free(h->value);
    free(h);
    r->priv = NULL;
}

void sb_gcp__headers_add(sb_gcp_response *r, const char *name, size_t nl, const char *value, size_t vl)
{
    headers *h = r->priv;
    if (!h)
        h = r->priv = sb_xcalloc(1, sizeof *h);
    for (size_t i = 0; i < h->n; i++)
        if (strlen(h->name[i]) == nl && strncasecmp(h->name[i], name, nl) == 0) {
            char *j = sb_asprintf("%s,%.*s", h->value[i], (int)vl, value);
            free(h->value[i]);
            h->value[i] = j;
            return;
        }
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->name = sb_xrealloc(h->name, h->cap * sizeof *h->name);
        h->value = sb_xrealloc(h->value, h->cap * sizeof *h->value);
    }
    h->name[h->n] = sb_asprintf("%.*s", (int)nl, name);
    h->value[h->n] = sb_asprintf("%.*s", (int)vl, value);
    h->n++;
}

const char *sb_gcp_response_header(const sb_gcp_response *r, const char *name)
{
    const headers *h = r && name ? r->priv : NULL;
    for (size_t i = 0; h && i < h->n; i++)
        if (strcasecmp(h->name[i], name) == 0)
            return h->value[i];
    return NULL;
}

/* ---- results ------------------------------------------------------------ */

void sb_gcp_response_clear(sb_gcp_response *r)
{
    if (!r)
        return;
    headers_free(r);
    free(r->body);
    free(r->location);
    free(r->range);
    free(r->retry_after);
    free(r->x_goog_hash);
    free(r->etag);
    free(r->content_type);
    free(r->error_line);
    memset(r, 0, sizeof *r);
}
