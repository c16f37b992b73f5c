/* test_file_out.c - the file_out sink in process (harness.h). */
#include "harness.h"
#include "testutil.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(writes_one_json_line_per_event)
{
    sbh *h = sbh_new("sinks", "{\"plugin\": \"file_out\", \"path\": \"@D@/out.jsonl\"}");
    sbh_event(h, "e1", "{\"schema\": \"edw\", \"table\": \"orders\"}");
    sbh_event(h, "e2", "{\"schema\": \"edw\", \"table\": \"deals\", \"note\": \"caf\\u00e9 \\\"quoted\\\"\"}");
    sbh_run(h);
    ck_assert_str_eq(sbh_state(h, "e1"), "done");
    ck_assert_str_eq(sbh_state(h, "e2"), "done");
    char *path = sbh_path(h, "out.jsonl");
    ck_assert_int_eq(tu_count_lines(path, "\"event_id\":\"e1\""), 1);
    ck_assert_int_eq(tu_count_lines(path, "caf\u00e9 \\\"quoted\\\""), 1);
    free(path);
    sbh_free(h);
}
END_TEST

START_TEST(template_renders_fields)
{
    sbh *h = sbh_new("sinks", "{\"plugin\": \"file_out\", \"path\": \"@D@/out.txt\","
                              " \"template\": \"${schema}.${table} ${status:-unknown}\"}");
    sbh_event(h, "e1", "{\"schema\": \"edw\", \"table\": \"orders\", \"status\": \"succeeded\"}");
    sbh_event(h, "e2", "{\"schema\": \"edw\", \"table\": \"deals\"}");
    sbh_run(h);
    char *path = sbh_path(h, "out.txt");
    char *text = tu_slurp(path);
    ck_assert_msg(text && strstr(text, "edw.orders succeeded") && strstr(text, "edw.deals unknown"), "%s",
                  text ? text : "(none)");
    free(text);
    free(path);
    sbh_free(h);
}
END_TEST

Suite *sbh_suite(void)
{
    Suite *s = suite_create("file_out");
    TCase *tc = tcase_create("file_out");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, writes_one_json_line_per_event);
    tcase_add_test(tc, template_renders_fields);
    suite_add_tcase(s, tc);
    return s;
}
