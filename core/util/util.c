/* util.c - small helpers shared by the core. */
#include "build_config.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

int64_t sb_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sb_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int sb_err(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void oom(void)
{
    fputs("syncbridge: out of memory\n", stderr);
    abort();
}

void *sb_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *sb_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *sb_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom();
    return q;
}

char *sb_strdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        oom();
    return d;
}

size_t sb_i64_text(char *p, int64_t v)
{
    /* two digits a step: the ledger payload's times have 16 */
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "4041424344454647484950515253545556575859606162636465666768697071727374757677787980"
                                "81828384858687888990919293949596979899";
    char tmp[24], *t = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        t -= 2;
        memcpy(t, pairs + 2 * (u % 100), 2);
        u /= 100;
    }
    if (u >= 10) {
        t -= 2;
        memcpy(t, pairs + 2 * u, 2);
    } else {
        *--t = (char)('0' + u);
    }
    size_t len = 0;
    if (v < 0)
        p[len++] = '-';
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(p + len, t, n);
    return len + n;
}

char *sb_asprintf(const char *fmt, ...)
{
    va_list ap;
    char *out = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom();
    return out;
}

char *sb_strbuf_room(sb_strbuf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 64;
        b->p = sb_xrealloc(b->p, b->cap);
    }
    return b->p + b->len;
}

void sb_strbuf_add(sb_strbuf *b, const char *s, size_t n)
{
    memcpy(sb_strbuf_room(b, n), s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sb_strbuf_printf(sb_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        while (b->len + (size_t)n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 64;
        b->p = sb_xrealloc(b->p, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *sb_read_file(const char *path, size_t *len, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sb_err(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = sb_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = sb_xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        sb_err(errstr, errstr_size, "%s: read error", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void sb_deadline_in(clockid_t clock, int64_t us, struct timespec *ts)
{
    clock_gettime(clock, ts);
    int64_t ns = ts->tv_nsec + (us % 1000000) * 1000;
    ts->tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

uint64_t sb_rand_below(uint64_t n)
{
    static __thread uint64_t state;
    if (state == 0)
        state = (uint64_t)sb_mono_us() ^ ((uint64_t)(uintptr_t)&state << 17) ^ 0x9E3779B97F4A7C15ull;
    /* xorshift64* */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    uint64_t r = state * 0x2545F4914F6CDD1Dull;
    return n ? r % n : 0;
}

int sb_mkdir_p(const char *path, unsigned mode, char *errstr, size_t errstr_size)
{
    if (!path || !*path)
        return sb_err(errstr, errstr_size, "empty directory path");
    char *p = sb_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST) {
            sb_err(errstr, errstr_size, "cannot create directory %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, mode) != 0 && errno != EEXIST)
        rc = sb_err(errstr, errstr_size, "cannot create directory %s: %s", p, strerror(errno));
    free(p);
    return rc;
}

/* A user private group (Fedora and RHEL give each user one, with umask
 * 002): named like its user, that user's primary group, and no other
 * member. Group write then reaches nobody else. */
static int private_group(uid_t uid, gid_t gid)
{
    char buf[4096];
    struct passwd pw, *pwp = NULL;
    struct group gr, *grp = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &pwp) != 0 || !pwp || pw.pw_gid != gid)
        return 0;
    char name[256];
    snprintf(name, sizeof name, "%s", pw.pw_name);
    if (getgrgid_r(gid, &gr, buf, sizeof buf, &grp) != 0 || !grp || strcmp(gr.gr_name, name) != 0)
        return 0;
    for (char **m = gr.gr_mem; m && *m; m++)
        if (strcmp(*m, name) != 0)
            return 0;
    return 1;
}

int sb_untrusted_owner_or_mode(const struct stat *st, char *why, size_t why_size)
{
    /* group-writable is fine when the group is its owner alone */
    int group_ok = (st->st_mode & 0022) == 0020 && private_group(st->st_uid, st->st_gid);
    if ((st->st_mode & 0022) && !group_ok) {
        snprintf(why, why_size, "writable by %s (mode %04o)",
                 (st->st_mode & 0022) == 0022 ? "group and others" : st->st_mode & 0020 ? "group" : "others",
                 (unsigned)(st->st_mode & 07777));
        return 1;
    }
    if (st->st_uid != 0 && st->st_uid != geteuid()) {
        snprintf(why, why_size, "owned by uid %u, neither root nor the user syncbridge runs as (uid %u)",
                 (unsigned)st->st_uid, (unsigned)geteuid());
        return 1;
    }
    return 0;
}

int sb_parse_iso8601_us(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec, n = 0;
    char sep;
    if (!s || sscanf(s, "%4d-%2d-%2d%c%2d:%2d:%2d%n", &y, &mo, &d, &sep, &h, &mi, &sec, &n) != 7 || n != 19 ||
        (sep != 'T' && sep != ' '))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return -1;
    const char *p = s + n;
    int64_t frac_us = 0;
    if (*p == '.' || *p == ',') {
        int64_t scale = 100000;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            frac_us += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int64_t off_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh = 0, om = 0;
        if (!(p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9'))
            return -1;
        oh = (p[1] - '0') * 10 + (p[2] - '0');
        const char *q = p + 3;
        if (*q == ':')
            q++;
        if (q[0] >= '0' && q[0] <= '9' && q[1] >= '0' && q[1] <= '9') {
            om = (q[0] - '0') * 10 + (q[1] - '0');
            q += 2;
        }
        off_s = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p = q;
    }
    if (*p)
        return -1;
    /* days from the civil date (proleptic Gregorian), without timegm's zone state */
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *out = ((days * 86400 + (int64_t)h * 3600 + mi * 60 + sec) - off_s) * 1000000 + frac_us;
    return 0;
}
