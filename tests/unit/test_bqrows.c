/* test_bqrows.c - the bigquery sink's typed values: NULL for empty, integers,
 * booleans, and the DATETIME time zone rule. */
#include "../../plugins/bigquery/bqrows.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const char *typed(const char *type, const char *text, int off, char *buf, size_t size)
{
    bq_column c = {.name = "c", .type = (char *)type};
    char *out = NULL, err[256];
    if (bq_type_value(&c, text, off, &out, err, sizeof err) != 0) {
        snprintf(buf, size, "ERR %s", err);
        return buf;
    }
    snprintf(buf, size, "%s", out ? out : "NULL");
    free(out);
    return buf;
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

int main(void)
{
    Suite *s = suite_create("bqrows");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_datetime_zone_rule);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
