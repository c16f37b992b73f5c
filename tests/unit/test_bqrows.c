/* test_bqrows.c - the bigquery sink's typed values: NULL for empty, integers,
 * booleans, and the DATETIME time zone rule; the time_zone option's IANA
 * zones (names checked before a path is built, damaged TZif data refused,
 * the POSIX TZ footer). tests/scripts/test_tzif.py holds the zones against
 * Python's zoneinfo; the expectations here are facts about the zones. */
#define _GNU_SOURCE
#include "../../plugins/bigquery/bqrows.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *typed_in(const char *type, const char *text, const bq_zone *z, char *buf, size_t size)
{
    bq_column c = {.name = "c", .type = (char *)type};
    char *out = NULL, err[256];
    if (bq_type_value(&c, text, z, &out, err, sizeof err) != 0) {
        snprintf(buf, size, "ERR %s", err);
        return buf;
    }
    snprintf(buf, size, "%s", out ? out : "NULL");
    free(out);
    return buf;
}

static const char *typed(const char *type, const char *text, int off, char *buf, size_t size)
{
    bq_zone z = {.fixed_s = off};
    return typed_in(type, text, &z, buf, size);
}

START_TEST(test_values)
{
    char b[512];
    ck_assert_str_eq(typed("INTEGER", "42", 0, b, sizeof b), "42");
    ck_assert_str_eq(typed("INTEGER", "", 0, b, sizeof b), "NULL");
    ck_assert_str_eq(typed("STRING", "", 0, b, sizeof b), "");
    ck_assert_msg(strstr(typed("INT64", "4x", 0, b, sizeof b), "is not an integer"), "%s", b);
    ck_assert_str_eq(typed("BOOLEAN", "TRUE", 0, b, sizeof b), "true");
    ck_assert_msg(strstr(typed("BOOL", "yes", 0, b, sizeof b), "not true or false"), "%s", b);
    ck_assert_str_eq(typed("FLOAT", "1.5e3", 0, b, sizeof b), "1.5e3");
}
END_TEST

START_TEST(test_datetime_zone_rule)
{
    char b[512];
    /* an instant: its civil time in the configured zone */
    ck_assert_str_eq(typed("DATETIME", "2026-12-05T06:00:00Z", 0, b, sizeof b), "2026-12-05T06:00:00");
    ck_assert_str_eq(typed("DATETIME", "2026-12-05T00:30:00+01:00", 0, b, sizeof b), "2026-12-04T23:30:00");
    ck_assert_str_eq(typed("DATETIME", "2026-12-05T06:00:00.123456789Z", 7200, b, sizeof b),
                     "2026-12-05T08:00:00.123456");
    ck_assert_str_eq(typed("DATETIME", "2026-12-31T23:00:00-0130", 0, b, sizeof b), "2027-01-01T00:30:00");
    /* a civil time: as written */
    ck_assert_str_eq(typed("DATETIME", "2026-12-05 07:30:00", 7200, b, sizeof b), "2026-12-05T07:30:00");
    ck_assert_msg(strstr(typed("DATETIME", "2026-13-05T07:30:00", 0, b, sizeof b), "ERR"), "%s", b);
    ck_assert_msg(strstr(typed("DATETIME", "2026-12-05T07:30:00Zjunk", 0, b, sizeof b), "ERR"), "%s", b);
    int off;
    ck_assert_int_eq(bq_parse_zone("UTC", &off), 0);
    ck_assert_int_eq(off, 0);
    ck_assert_int_eq(bq_parse_zone("-05:30", &off), 0);
    ck_assert_int_eq(off, -19800);
    ck_assert_int_eq(bq_parse_zone("Europe/Paris", &off), -1);
    ck_assert_str_eq(bq_param_type("INTEGER"), "INT64");
    ck_assert_ptr_null(bq_param_type("RECORD"));
}
END_TEST

/* Names that could leave the zone directory, or are no zone's name. */
static const char *const bad_names[] = {"../../../etc/passwd", "/etc/localtime", "America/../../etc/passwd",
                                        "America/./Chicago", "..", ".", "", "America//Chicago", "America/",
                                        "Europe/Berlin\n", "Europe/Berlin ", "Europe\\Berlin", "zone.tab",
                                        "Europe/Berlin%00", "America/Chicago;rm"};

START_TEST(test_zone_names)
{
    char err[256];
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        err[0] = '\0';
        ck_assert_msg(tzif_name_ok(bad_names[i], err, sizeof err) == 0, "accepted \"%s\"", bad_names[i]);
        ck_assert_msg(err[0], "no reason for \"%s\"", bad_names[i]);
        ck_assert_ptr_null(tzif_load(bad_names[i], err, sizeof err));
        ck_assert_msg(strncmp(err, "a zone name ", 12) == 0, "%s: %s", bad_names[i], err);
    }
    ck_assert_int_eq(tzif_name_ok("Etc/GMT+5", err, sizeof err), 1);
    ck_assert_int_eq(tzif_name_ok("America/Port-au-Prince", err, sizeof err), 1);
    ck_assert_int_eq(tzif_name_ok("America/Argentina/Buenos_Aires", err, sizeof err), 1);
}
END_TEST

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* Parse a copy of exactly n bytes, so a sanitizer sees any read past them. */
static tzif_zone *parse_copy(const unsigned char *data, size_t n, char *err, size_t errsz)
{
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    tzif_zone *z = tzif_parse(copy, n, "test.tzif", err, errsz);
    free(copy);
    return z;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

START_TEST(test_damaged_files)
{
    size_t len;
    unsigned char *f = read_all("/usr/share/zoneinfo/Europe/Berlin", &len);
    char err[1024];
    tzif_zone *z = parse_copy(f, len, err, sizeof err);
    ck_assert_msg(z, "%s", err);
    tzif_free(z);
    /* every truncation is an error naming the file, never a crash */
    for (size_t n = 0; n < len; n++) {
        err[0] = '\0';
        z = parse_copy(f, n, err, sizeof err);
        ck_assert_msg(!z, "a %zu-byte prefix parsed", n);
        ck_assert_msg(strncmp(err, "test.tzif: ", 11) == 0, "%zu: %s", n, err);
    }
    /* any single byte damaged: parsed or refused, never a crash */
    unsigned char *m = malloc(len);
    for (size_t i = 0; i < len; i++) {
        for (int v = 0; v < 256; v += 51) {
            memcpy(m, f, len);
            m[i] ^= (unsigned char)(v | 1);
            tzif_free(parse_copy(m, len, err, sizeof err));
        }
    }
    /* named damage, in the second (64-bit) header at 44 + the v1 block */
    uint32_t c1[6];
    for (int k = 0; k < 6; k++)
        c1[k] = (uint32_t)f[20 + 4 * k] << 24 | (uint32_t)f[21 + 4 * k] << 16 | (uint32_t)f[22 + 4 * k] << 8 |
                f[23 + 4 * k];
    size_t h2 = 44 + c1[3] * 5 + c1[4] * 6 + c1[5] + c1[2] * 8 + c1[1] + c1[0];
    struct {
        size_t at;
        uint32_t v;
        const char *want;
    } cases[] = {{h2 + 32, 0xffffffffu, "truncated: the 64-bit data needs"},
                 {h2 + 36, 0, "0 local time types"},
                 {h2 + 28, 1, "leap seconds"},
                 {h2 + 20, 1, "UT and"},
                 {h2 + 40, 0, "no abbreviation"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memcpy(m, f, len);
        put32(m + cases[i].at, cases[i].v);
        ck_assert_ptr_null(parse_copy(m, len, err, sizeof err));
        ck_assert_msg(strstr(err, cases[i].want), "%s", err);
    }
    memcpy(m, f, len);
    m[4] = 0;
    ck_assert_ptr_null(parse_copy(m, len, err, sizeof err));
    ck_assert_msg(strstr(err, "version 1"), "%s", err);
    memcpy(m, f, len);
    memcpy(m + h2 + 44 + 8, m + h2 + 44, 8); /* transition 1 at the time of transition 0 */
    ck_assert_ptr_null(parse_copy(m, len, err, sizeof err));
    ck_assert_msg(strstr(err, "transition 1 is not after"), "%s", err);
    memcpy(m, f, len);
    m[len - 3] = '!'; /* the slash of the footer's "M10.5.0/3\n" */
    ck_assert_ptr_null(parse_copy(m, len, err, sizeof err));
    ck_assert_msg(strstr(err, "TZ string footer \"CET-1CEST,M3.5.0,M10.5.0!3\""), "%s", err);
    free(m);
    free(f);
}
END_TEST

/* A version 2 file with no transitions, one type and this footer. */
static tzif_zone *footer_zone(const char *footer, char *err, size_t errsz)
{
    unsigned char buf[512] = {0};
    memcpy(buf, "TZif2", 5);
    memcpy(buf + 44, "TZif2", 5);
    put32(buf + 44 + 36, 1); /* typecnt */
    put32(buf + 44 + 40, 4); /* charcnt */
    size_t n = 88;
    memcpy(buf + n + 6, "XXX", 4); /* type 0: offset 0, std, abbreviation 0 */
    n += 10;
    n += (size_t)snprintf((char *)buf + n, sizeof buf - n, "\n%s\n", footer);
    return parse_copy(buf, n, err, errsz);
}

START_TEST(test_footers)
{
    char err[1024];
    static const char *const good[] = {"<+0330>-3:30", "EST5EDT,M3.2.0,M11.1.0", "CET-1CEST,M3.5.0,M10.5.0/3",
                                       "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "XXX3YYY,J60/-25,J300/26",
                                       "EST5EDT,0/0,J365/25", "AAA-10BBB-9:30:15,100/167,280/-167", "<+00>0",
                                       "IST-1GMT0,M10.5.0,M3.5.0/1"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        tzif_zone *z = footer_zone(good[i], err, sizeof err);
        ck_assert_msg(z, "%s: %s", good[i], err);
        tzif_free(z);
    }
    static const char *const bad[] = {"EST5EDT", "EST", "ES5", "EST25", "EST5EDT,M13.1.0,M11.1.0",
                                      "EST5EDT,J0,J365", "EST5EDT,366,J365", "EST5EDT,M3.2.0/168,M11.1.0",
                                      "EST5EDT,M3.6.0,M11.1.0", "EST5EDT,M3.2.7,M11.1.0", "EST5EDT,M3.2.0",
                                      "EST5EDT,M3.2.0,M11.1.0,", "<+0330-3:30", "<+03>-3:60", "EST+"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tzif_zone *z = footer_zone(bad[i], err, sizeof err);
        ck_assert_msg(!z, "accepted footer \"%s\"", bad[i]);
        ck_assert_msg(strstr(err, "TZ string footer"), "%s", err);
    }
    /* no transitions: the footer holds from the start */
    tzif_zone *z = footer_zone("<+0330>-3:30", err, sizeof err);
    ck_assert_int_eq(tzif_offset(z, 0), 12600);
    tzif_free(z);
    /* DST all year (RFC 8536 3.3.1), also in the hours around New Year when
     * the transitions of two years meet */
    z = footer_zone("EST5EDT,0/0,J365/25", err, sizeof err);
    for (int64_t t = 4102444800 - 86400; t < 4102444800 + 86400; t += 1800) /* around 2100-01-01 */
        ck_assert_int_eq(tzif_offset(z, t), -14400);
    /* instants far beyond any year that matters do not overflow */
    ck_assert_int_eq(tzif_offset(z, INT64_MAX), -14400);
    ck_assert_int_eq(tzif_offset(z, INT64_MIN), -14400);
    tzif_free(z);
    z = footer_zone("EST5EDT,M3.2.0,M11.1.0", err, sizeof err);
    tzif_offset(z, INT64_MAX);
    tzif_offset(z, INT64_MIN);
    tzif_free(z);
}
END_TEST

/* The DATETIME of an instant in an IANA zone: DST on both sides of the
 * year, at its edges, and long after the file's last transition (2037). */
START_TEST(test_iana_zones)
{
    char b[512], err[1024];
    bq_zone z;
    ck_assert_msg(bq_zone_parse("America/Chicago", &z, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(z.tz);
    ck_assert_str_eq(typed_in("DATETIME", "2026-01-15T12:00:00Z", &z, b, sizeof b), "2026-01-15T06:00:00");
    ck_assert_str_eq(typed_in("DATETIME", "2026-07-15T12:00:00Z", &z, b, sizeof b), "2026-07-15T07:00:00");
    /* 2026-03-08 02:00 CST is the start of CDT: 08:00Z */
    ck_assert_str_eq(typed_in("DATETIME", "2026-03-08T07:59:59Z", &z, b, sizeof b), "2026-03-08T01:59:59");
    ck_assert_str_eq(typed_in("DATETIME", "2026-03-08T08:00:00Z", &z, b, sizeof b), "2026-03-08T03:00:00");
    ck_assert_str_eq(typed_in("DATETIME", "2099-07-01T12:00:00.5+02:00", &z, b, sizeof b), "2099-07-01T05:00:00.5");
    ck_assert_str_eq(typed_in("DATETIME", "2099-12-01T12:00:00Z", &z, b, sizeof b), "2099-12-01T06:00:00");
    ck_assert_str_eq(typed_in("DATETIME", "2099-12-01 12:00:00", &z, b, sizeof b), "2099-12-01T12:00:00");
    bq_zone_clear(&z);
    ck_assert_ptr_null(z.tz);
    ck_assert_msg(bq_zone_parse("Europe/Berlin", &z, err, sizeof err) == 0, "%s", err);
    /* CEST ends at 01:00Z on the last Sunday of October: 2087-10-26 */
    ck_assert_str_eq(typed_in("DATETIME", "2087-10-26T00:59:59Z", &z, b, sizeof b), "2087-10-26T02:59:59");
    ck_assert_str_eq(typed_in("DATETIME", "2087-10-26T01:00:00Z", &z, b, sizeof b), "2087-10-26T02:00:00");
    bq_zone_clear(&z);
    ck_assert_msg(bq_zone_parse("Asia/Kolkata", &z, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(bq_zone_offset(&z, 4102444800), 19800);
    bq_zone_clear(&z);
    /* UTC and fixed offsets stay fixed, with no file read */
    ck_assert_int_eq(bq_zone_parse("utc", &z, err, sizeof err), 0);
    ck_assert_ptr_null(z.tz);
    ck_assert_int_eq(bq_zone_parse("+05:45", &z, err, sizeof err), 0);
    ck_assert_int_eq(bq_zone_offset(&z, 0), 20700);
}
END_TEST

START_TEST(test_zone_errors)
{
    char err[1024];
    bq_zone z;
    unsetenv("TZDIR");
    ck_assert_int_eq(bq_zone_parse("Mars/Olympus_Mons", &z, err, sizeof err), -1);
    ck_assert_str_eq(err, "option time_zone: \"Mars/Olympus_Mons\" is not UTC, +HH:MM / -HH:MM or a zone in "
                          "/usr/share/zoneinfo (no zone file /usr/share/zoneinfo/Mars/Olympus_Mons)");
    ck_assert_int_eq(bq_zone_parse("America", &z, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "(/usr/share/zoneinfo/America is not a zone file"), "%s", err);
    ck_assert_int_eq(bq_zone_parse("+25:00", &z, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "(a fixed offset is +HH:MM or -HH:MM"), "%s", err);
    /* a name that could leave the zone directory: refused, no path built */
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        ck_assert_int_eq(bq_zone_parse(bad_names[i], &z, err, sizeof err), -1);
        ck_assert_msg(strstr(err, "is not UTC") && strstr(err, "(a zone name "), "%s: %s", bad_names[i], err);
    }
    /* TZDIR is honoured as glibc does */
    setenv("TZDIR", "/nonexistent-zoneinfo", 1);
    ck_assert_int_eq(bq_zone_parse("Europe/Berlin", &z, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "a zone in /nonexistent-zoneinfo (no zone file /nonexistent-zoneinfo/Europe/Berlin)"),
                  "%s", err);
    unsetenv("TZDIR");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bqrows");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_datetime_zone_rule);
    tcase_add_test(tc, test_zone_names);
    tcase_add_test(tc, test_damaged_files);
    tcase_add_test(tc, test_footers);
    tcase_add_test(tc, test_iana_zones);
    tcase_add_test(tc, test_zone_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
