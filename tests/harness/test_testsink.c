/* test_testsink.c - ABI 2 results through the harness: WAIT with step
 * state, results and fields as the ledger records them. */
#include "harness.h"

#include <check.h>
#include <string.h>

START_TEST(wait_keeps_step_state_until_done)
{
    sbh *h = sbh_new("sinks", "{\"plugin\": \"testsink\", \"wait_polls\": 2, \"wait_ms\": \"5ms\","
                              " \"add_field\": \"run_url\", \"add_value\": \"https://x/${table}\"}");
    sbh_event(h, "e1", "{\"table\": \"t\"}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    json_t *st = sbh_step_state(h, "e1");
    ck_assert_msg(st && json_integer_value(json_object_get(st, "polls")) == 2, "state %s",
                  st ? json_dumps(st, 0) : "(none)");
    ck_assert_str_eq(json_string_value(json_object_get(sbh_added(h, "e1"), "run_url")), "https://x/t");
    sbh_free(h);
}
END_TEST

/* Progress is recorded where `runs show` reads it, throttled to one record
 * a second per event but always with the last report. */
START_TEST(progress_is_recorded_for_runs_show)
{
    sbh *h = sbh_new("sinks", "{\"plugin\": \"testsink\", \"delay\": \"40ms\", \"progress_parts\": 4}");
    sbh_event(h, "e1", "{}");
    sbh_event(h, "e2", "{}");
    sbh_run(h);
    for (int k = 1; k <= 2; k++) {
        const char *id = k == 1 ? "e1" : "e2";
        ck_assert_str_eq(sbh_state(h, id), "done");
        json_t *p = sbh_step_progress(h, id);
        ck_assert_msg(p, "no progress recorded for %s", id);
        ck_assert_int_eq(json_integer_value(json_object_get(p, "done")), 4000);
        ck_assert_int_eq(json_integer_value(json_object_get(p, "total")), 4000);
        /* a step that kept no state has none after its progress row */
        ck_assert_ptr_null(sbh_step_state(h, id));
    }
    sbh_free(h);
}
END_TEST

START_TEST(fail_is_dead_lettered_with_the_reason)
{
    sbh *h = sbh_new("sinks", "{\"plugin\": \"testsink\", \"result\": \"fail\"}");
    sbh_event(h, "e1", "{}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "dead");
    ck_assert_msg(strstr(sbh_error(h, "e1"), "under_test: failed: fail"), "%s", sbh_error(h, "e1"));
    ck_assert_int_eq(json_object_size(sbh_added(h, "e1")), 0);
    sbh_free(h);
}
END_TEST

Suite *sbh_suite(void)
{
    Suite *s = suite_create("testsink");
    TCase *tc = tcase_create("abi2");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, wait_keeps_step_state_until_done);
    tcase_add_test(tc, progress_is_recorded_for_runs_show);
    tcase_add_test(tc, fail_is_dead_lettered_with_the_reason);
    suite_add_tcase(s, tc);
    return s;
}
