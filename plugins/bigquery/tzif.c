/* tzif.c - TZif (RFC 8536) zones for the bigquery sink (tzif.h). */
#include "tzif.h"

#include <syncbridge/buf.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The largest zone file shipped is a few tens of KB; anything past this is
 * not a zone file, and the bound keeps a wrong path from being slurped. */
#define TZIF_MAX_FILE (1024 * 1024)
#define TZIF_HEADER 44
/* RFC 8536: a UT offset is within -89999..93599 seconds (-25 h to +26 h). */
#define UTOFF_MIN (-89999)
#define UTOFF_MAX 93599
/* Instants are clamped to about +-18 billion years so that the calendar
 * arithmetic of the footer rule cannot overflow int64. */
#define T_LIMIT ((int64_t)1 << 59)

/* One date of a POSIX TZ rule: Jn (1..365, no Feb 29), n (0..365) or
 * Mm.w.d, and the local time of day it happens at, in seconds. */
typedef struct tz_date {
    char kind; /* 'J', 'n' or 'M' */
    int day;   /* Jn, n */
    int mon, week, wday;
    int32_t secs;
} tz_date;

/* The footer: standard offset, and DST with its rule when has_dst. */
typedef struct tz_posix {
    int32_t std_off, dst_off; /* east of UTC, seconds */
    int has_dst;
    tz_date start, end;
} tz_posix;

struct tzif_zone {
    size_t ntrans;
    int64_t *trans;     /* strictly ascending */
    int32_t *trans_off; /* the offset from trans[i] on */
    int32_t first_off;  /* before trans[0]: time type 0 (RFC 8536 3.2) */
    int has_footer;     /* else the last type holds for ever */
    tz_posix footer;
};

/* ---- names and files ------------------------------------------------------ */

const char *tzif_dir(void)
{
    const char *d = getenv("TZDIR");
    return d && *d ? d : "/usr/share/zoneinfo";
}

static int name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '+' ||
           c == '-' || c == '/';
}

int tzif_name_ok(const char *name, char *err, size_t errsz)
{
    size_t n = strlen(name);
    if (n == 0 || n > 255)
        return sb_err(err, errsz, "a zone name has 1 to 255 characters"), 0;
    if (name[0] == '/')
        return sb_err(err, errsz, "a zone name is relative, not an absolute path"), 0;
    for (size_t i = 0; i < n; i++) {
        if (!name_char(name[i]))
            return sb_err(err, errsz, "a zone name has only letters, digits, _ + - and /"), 0;
        /* '.' is refused above, so ".." cannot occur; an empty component
         * ("a//b", "a/") is refused here so one name has one spelling */
        if (name[i] == '/' && (name[i + 1] == '/' || name[i + 1] == '\0'))
            return sb_err(err, errsz, "a zone name has no empty component"), 0;
    }
    return 1;
}

/* Read a whole regular file of at most TZIF_MAX_FILE bytes. */
static unsigned char *slurp(const char *path, size_t *len, char *err, size_t errsz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            sb_err(err, errsz, "no zone file %s", path);
        else
            sb_err(err, errsz, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        sb_err(err, errsz, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        sb_err(err, errsz, "%s is not a zone file (a directory or special file)", path);
    } else if (st.st_size > TZIF_MAX_FILE) {
        sb_err(err, errsz, "%s is not a zone file (%lld bytes, more than %d)", path, (long long)st.st_size,
               TZIF_MAX_FILE);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        sb_err(err, errsz, "out of memory");
    } else {
        size_t got = 0;
        ssize_t r = 1;
        while (got < (size_t)st.st_size && (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
            got += (size_t)r;
        if (r < 0) {
            sb_err(err, errsz, "%s: %s", path, strerror(errno));
            free(buf);
            buf = NULL;
        }
        *len = got;
    }
    close(fd);
    return buf;
}

tzif_zone *tzif_load(const char *name, char *err, size_t errsz)
{
    if (!tzif_name_ok(name, err, errsz))
        return NULL;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", tzif_dir(), name);
    if (n < 0 || (size_t)n >= sizeof path) {
        sb_err(err, errsz, "the zone file's path is too long");
        return NULL;
    }
    size_t len = 0;
    unsigned char *data = slurp(path, &len, err, errsz);
    if (!data)
        return NULL;
    tzif_zone *z = tzif_parse(data, len, path, err, errsz);
    free(data);
    return z;
}

void tzif_free(tzif_zone *z)
{
    if (!z)
        return;
    free(z->trans);
    free(z->trans_off);
    free(z);
}

/* ---- the POSIX TZ footer -------------------------------------------------- */

/* Up to `max` decimal digits (at least one) into *v. */
static int digits_val(const char **s, int max, int *v)
{
    int n = 0, x = 0;
    while (n < max && **s >= '0' && **s <= '9') {
        x = x * 10 + (**s - '0');
        (*s)++;
        n++;
    }
    *v = x;
    return n > 0 && !(**s >= '0' && **s <= '9');
}

/* A zone abbreviation: three or more letters, or <...> of letters, digits, + and -. */
static int posix_name(const char **s)
{
    const char *p = *s;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' ||
               *p == '-')
            p++, n++;
        if (*p++ != '>')
            return 0;
    } else {
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
            p++, n++;
    }
    *s = p;
    return n >= 3;
}

/* [+-]h[h...][:mm[:ss]] with at most max_h hours, into signed seconds. */
static int posix_hms(const char **s, int max_h, int32_t *secs)
{
    int sign = 1, h, m = 0, sec = 0;
    if (**s == '+' || **s == '-')
        sign = *(*s)++ == '-' ? -1 : 1;
    if (!digits_val(s, max_h > 99 ? 3 : 2, &h) || h > max_h)
        return 0;
    if (**s == ':') {
        (*s)++;
        if (!digits_val(s, 2, &m) || m > 59)
            return 0;
        if (**s == ':') {
            (*s)++;
            if (!digits_val(s, 2, &sec) || sec > 59)
                return 0;
        }
    }
    *secs = sign * (h * 3600 + m * 60 + sec);
    return 1;
}

/* ",date[/time]": the date forms of POSIX, the time signed and up to 167
 * hours as RFC 8536 3.3.1 allows. */
static int posix_date(const char **s, tz_date *d)
{
    if (*(*s)++ != ',')
        return 0;
    d->secs = 7200; /* 02:00 when no time is given */
    if (**s == 'M') {
        (*s)++;
        d->kind = 'M';
        if (!digits_val(s, 2, &d->mon) || d->mon < 1 || d->mon > 12 || *(*s)++ != '.' ||
            !digits_val(s, 1, &d->week) || d->week < 1 || d->week > 5 || *(*s)++ != '.' ||
            !digits_val(s, 1, &d->wday) || d->wday > 6)
            return 0;
    } else if (**s == 'J') {
        (*s)++;
        d->kind = 'J';
        if (!digits_val(s, 3, &d->day) || d->day < 1 || d->day > 365)
            return 0;
    } else {
        d->kind = 'n';
        if (!digits_val(s, 3, &d->day) || d->day > 365)
            return 0;
    }
    if (**s == '/') {
        (*s)++;
        return posix_hms(s, 167, &d->secs);
    }
    return 1;
}

static int utoff_ok(int32_t off)
{
    return off >= UTOFF_MIN && off <= UTOFF_MAX;
}

/* "std offset [dst [offset] ,start[/time],end[/time]]". POSIX offsets
 * count west, so they are negated. */
static int posix_parse(const char *s, tz_posix *p)
{
    int32_t w;
    memset(p, 0, sizeof *p);
    if (!posix_name(&s) || !posix_hms(&s, 24, &w) || !utoff_ok(-w))
        return 0;
    p->std_off = -w;
    if (!*s)
        return 1;
    if (!posix_name(&s))
        return 0;
    p->has_dst = 1;
    p->dst_off = p->std_off + 3600;
    if (*s != ',') {
        if (!posix_hms(&s, 24, &w) || !utoff_ok(-w))
            return 0;
        p->dst_off = -w;
    }
    /* a DST without a rule would use the implementation's default rule:
     * the tz project never writes one, so it is refused */
    return posix_date(&s, &p->start) && posix_date(&s, &p->end) && !*s;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int64_t floor_mod(int64_t a, int64_t b)
{
    return a - floor_div(a, b) * b;
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Leap days in the years before y (proleptic Gregorian, from year 0). */
static int64_t leaps_before(int64_t y)
{
    return floor_div(y - 1, 4) - floor_div(y - 1, 100) + floor_div(y - 1, 400);
}

/* Days from 1970-01-01 to January 1 of year y. */
static int64_t jan1(int64_t y)
{
    return (y - 1970) * 365 + leaps_before(y) - leaps_before(1970);
}

static int64_t year_of(int64_t days)
{
    int64_t y = 1970 + floor_div(days * 400, 146097);
    while (jan1(y) > days)
        y--;
    while (jan1(y + 1) <= days)
        y++;
    return y;
}

/* Days from the epoch to the date `d` falls on in year y. */
static int64_t rule_day(const tz_date *d, int64_t y)
{
    static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    static const int mlen[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = is_leap(y);
    if (d->kind == 'J')
        return jan1(y) + d->day - 1 + (leap && d->day >= 60);
    if (d->kind == 'n')
        return jan1(y) + d->day;
    int64_t first = jan1(y) + before[d->mon - 1] + (leap && d->mon > 2);
    int64_t wd_first = floor_mod(first + 4, 7); /* 1970-01-01 was a Thursday (4) */
    int64_t mday = 1 + floor_mod(d->wday - wd_first, 7) + 7 * (d->week - 1);
    int len = mlen[d->mon - 1] + (leap && d->mon == 2);
    while (mday > len) /* week 5 is "the last" */
        mday -= 7;
    return first + mday - 1;
}

/* Which of std and dst holds at t: the latest start or end at or before
 * t wins. Years around t's are looked at because times beyond 24 h or
 * below 0 may move a transition into the next or the previous year; at a
 * tie a start wins, so DST all year ("0/0,J365/25") stays DST. */
static int32_t posix_offset(const tz_posix *p, int64_t t)
{
    if (!p->has_dst)
        return p->std_off;
    int64_t y = year_of(floor_div(t + p->std_off, 86400));
    int64_t best = INT64_MIN;
    int dst = 0;
    for (int64_t k = y - 2; k <= y + 1; k++) {
        int64_t s = rule_day(&p->start, k) * 86400 + p->start.secs - p->std_off;
        int64_t e = rule_day(&p->end, k) * 86400 + p->end.secs - p->dst_off;
        if (e <= t && e > best) {
            best = e;
            dst = 0;
        }
        if (s <= t && s >= best) {
            best = s;
            dst = 1;
        }
    }
    return dst ? p->dst_off : p->std_off;
}

/* ---- the TZif file -------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chars;
} tzif_counts;

/* The header at p (len bytes left): magic, version, counts. */
static int header(const unsigned char *p, size_t len, const char *what, const char *which, tzif_counts *c,
                  char *err, size_t errsz)
{
    if (len < TZIF_HEADER)
        return sb_err(err, errsz, "%s: truncated: %s header needs %d bytes, %zu left", what, which, TZIF_HEADER, len);
    if (memcmp(p, "TZif", 4) != 0)
        return sb_err(err, errsz, "%s: not a TZif file (no \"TZif\" magic in the %s header)", what, which);
    if (p[4] == 0)
        return sb_err(err, errsz, "%s: a version 1 TZif file (only version 2 and later, with 64-bit times, are read)",
                      what);
    if (p[4] < '2' || p[4] > '9')
        return sb_err(err, errsz, "%s: unknown TZif version byte 0x%02x", what, p[4]);
    *c = (tzif_counts){be32(p + 20), be32(p + 24), be32(p + 28), be32(p + 32), be32(p + 36), be32(p + 40)};
    return 0;
}

/* Bytes of a data block with `tsize`-byte times (uint64: counts are 32-bit). */
static uint64_t block_size(const tzif_counts *c, int tsize)
{
    return (uint64_t)c->time * (tsize + 1) + (uint64_t)c->type * 6 + c->chars + (uint64_t)c->leap * (tsize + 4) +
           c->isstd + c->isut;
}

static int check_counts(const tzif_counts *c, const char *what, char *err, size_t errsz)
{
    if (c->type == 0 || c->type > 256)
        return sb_err(err, errsz, "%s: damaged: %u local time types (1 to 256)", what, c->type);
    if (c->chars == 0)
        return sb_err(err, errsz, "%s: damaged: no abbreviation characters", what);
    if ((c->isut != 0 && c->isut != c->type) || (c->isstd != 0 && c->isstd != c->type))
        return sb_err(err, errsz, "%s: damaged: %u UT and %u standard indicators for %u types", what, c->isut,
                      c->isstd, c->type);
    if (c->leap != 0)
        return sb_err(err, errsz, "%s: has leap seconds (a \"right/\" zone); use the zone without them", what);
    return 0;
}

/* The time types: UT offset, DST flag, abbreviation index; then the
 * indicators, which must be 0 or 1. Offsets into off[]. */
static int types(const unsigned char *p, const tzif_counts *c, const char *what, int32_t *off, char *err,
                 size_t errsz)
{
    for (uint32_t i = 0; i < c->type; i++) {
        const unsigned char *t = p + (size_t)i * 6;
        off[i] = (int32_t)be32(t);
        if (!utoff_ok(off[i]) || t[4] > 1 || t[5] >= c->chars)
            return sb_err(err, errsz, "%s: damaged: local time type %u (offset %ld, dst %u, abbreviation %u)", what,
                          i, (long)off[i], t[4], t[5]);
    }
    const unsigned char *ind = p + (size_t)c->type * 6 + c->chars;
    for (uint32_t i = 0; i < c->isstd + c->isut; i++)
        if (ind[i] > 1)
            return sb_err(err, errsz, "%s: damaged: standard/UT indicator %u is %u", what, i, ind[i]);
    return 0;
}

static int transitions(const unsigned char *p, const tzif_counts *c, const int32_t *off, tzif_zone *z,
                       const char *what, char *err, size_t errsz)
{
    z->ntrans = c->time;
    z->trans = calloc(c->time ? c->time : 1, sizeof *z->trans);
    z->trans_off = calloc(c->time ? c->time : 1, sizeof *z->trans_off);
    if (!z->trans || !z->trans_off)
        return sb_err(err, errsz, "out of memory");
    const unsigned char *idx = p + (size_t)c->time * 8;
    for (uint32_t i = 0; i < c->time; i++) {
        z->trans[i] = be64(p + (size_t)i * 8);
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            return sb_err(err, errsz, "%s: damaged: transition %u is not after the one before it", what, i);
        if (idx[i] >= c->type)
            return sb_err(err, errsz, "%s: damaged: transition %u names type %u of %u", what, i, idx[i], c->type);
        z->trans_off[i] = off[idx[i]];
    }
    z->first_off = off[0];
    return 0;
}

/* "\n" TZ string "\n" at the end of the file; empty means none. */
static int footer(const unsigned char *p, size_t len, const char *what, tzif_zone *z, char *err, size_t errsz)
{
    if (len < 2 || p[0] != '\n')
        return sb_err(err, errsz, "%s: truncated: no TZ string footer after the 64-bit data", what);
    const unsigned char *nl = memchr(p + 1, '\n', len - 1);
    if (!nl)
        return sb_err(err, errsz, "%s: truncated: the TZ string footer has no closing newline", what);
    if ((size_t)(nl - p) + 1 != len)
        return sb_err(err, errsz, "%s: damaged: %zu bytes after the TZ string footer", what,
                      len - (size_t)(nl - p) - 1);
    size_t n = (size_t)(nl - p) - 1;
    if (n == 0)
        return 0;
    char s[256];
    if (n >= sizeof s || memchr(p + 1, '\0', n))
        return sb_err(err, errsz, "%s: damaged: the TZ string footer is not a TZ string", what);
    memcpy(s, p + 1, n);
    s[n] = '\0';
    if (!posix_parse(s, &z->footer))
        return sb_err(err, errsz, "%s: the TZ string footer \"%s\" is not one this reader understands", what, s);
    z->has_footer = 1;
    return 0;
}

tzif_zone *tzif_parse(const unsigned char *data, size_t len, const char *what, char *err, size_t errsz)
{
    tzif_counts c1, c;
    if (header(data, len, what, "first", &c1, err, errsz) != 0)
        return NULL;
    uint64_t v1 = block_size(&c1, 4);
    if (v1 > len - TZIF_HEADER) {
        sb_err(err, errsz, "%s: truncated: the 32-bit data needs %llu bytes, %zu left", what,
               (unsigned long long)v1, len - TZIF_HEADER);
        return NULL;
    }
    size_t at = TZIF_HEADER + (size_t)v1;
    if (header(data + at, len - at, what, "second", &c, err, errsz) != 0 || check_counts(&c, what, err, errsz) != 0)
        return NULL;
    at += TZIF_HEADER;
    uint64_t v2 = block_size(&c, 8);
    if (v2 > len - at) {
        sb_err(err, errsz, "%s: truncated: the 64-bit data needs %llu bytes, %zu left", what,
               (unsigned long long)v2, len - at);
        return NULL;
    }
    tzif_zone *z = calloc(1, sizeof *z);
    int32_t off[256];
    const unsigned char *blk = data + at;
    size_t types_at = (size_t)c.time * 9;
    if (!z || types(blk + types_at, &c, what, off, err, errsz) != 0 ||
        transitions(blk, &c, off, z, what, err, errsz) != 0 ||
        footer(blk + v2, len - at - (size_t)v2, what, z, err, errsz) != 0) {
        if (!z)
            sb_err(err, errsz, "out of memory");
        tzif_free(z);
        return NULL;
    }
    return z;
}

/* ---- the offset at an instant --------------------------------------------- */

int32_t tzif_offset(const tzif_zone *z, int64_t t)
{
    t = t < -T_LIMIT ? -T_LIMIT : t > T_LIMIT ? T_LIMIT : t;
    size_t n = z->ntrans;
    if (n == 0)
        return z->has_footer ? posix_offset(&z->footer, t) : z->first_off;
    if (t < z->trans[0])
        return z->first_off;
    if (t > z->trans[n - 1] && z->has_footer)
        return posix_offset(&z->footer, t);
    size_t lo = 0, hi = n; /* the last transition at or before t is in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->trans_off[lo];
}
