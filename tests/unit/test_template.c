/* test_template.c - "${field}" templates: compile errors and rendering. */
#include "build_config.h"
#include "events/template.h"
#include <syncbridge/event.h>

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "expected \"%s\" in \"%s\"", (sub), (s))

static const char *fields =
    "{\"schema\":\"groupon_production\",\"table\":\"im_brand_list\",\"run_id\":1234567890123,"
    "\"ratio\":0.5,\"ok\":true,\"nothing\":null,\"tags\":[\"a\",1],\"run\":{\"host\":\"h1\",\"n\":{\"x\":1}}}";

/* Render `text` against `fields`; returns malloc'd output or NULL with err. */
static char *render(const char *text, char *err, size_t err_size)
{
    char cerr[256] = "";
    sb_template *t = sb_template_compile(text, cerr, sizeof cerr);
    ck_assert_msg(t != NULL, "compile failed: %s", cerr);
    ck_assert_str_eq(sb_template_text(t), text);
    sb_event *ev = sb_event_new("test:1");
    json_t *obj = json_loads(fields, 0, NULL);
    json_object_update(sb_event_fields(ev), obj);
    json_decref(obj);
    char *out = sb_template_render(t, ev, err, err_size);
    sb_event_free(ev);
    sb_template_free(t);
    return out;
}

static void expect(const char *text, const char *want)
{
    char err[256] = "";
    char *out = render(text, err, sizeof err);
    ck_assert_msg(out != NULL, "render of %s failed: %s", text, err);
    ck_assert_str_eq(out, want);
    free(out);
}

static const char *compile_error(const char *text)
{
    static char err[256];
    err[0] = '\0';
    sb_template *t = sb_template_compile(text, err, sizeof err);
    ck_assert_msg(t == NULL, "\"%s\" compiled", text);
    return err;
}

START_TEST(test_literals)
{
    expect("", "");
    expect("plain text", "plain text");
    expect("cost $$5 and $${x}", "cost $5 and ${x}");
    expect("{braces} alone", "{braces} alone");
}
END_TEST

START_TEST(test_fields)
{
    expect("${schema}.${table}", "groupon_production.im_brand_list");
    expect("id=${run_id}", "id=1234567890123");
    expect("${ratio}/${ok}/${nothing}", "0.5/true/null");
    expect("${tags}", "[\"a\",1]");
    expect("${run}", "{\"host\":\"h1\",\"n\":{\"x\":1}}");
    expect("host ${run.host} x=${run.n.x}", "host h1 x=1");
    expect("${table}${table}", "im_brand_listim_brand_list");
}
END_TEST

START_TEST(test_defaults)
{
    expect("${inc_val:-none}", "none");
    expect("${inc_val:-}|", "|");
    expect("${table:-none}", "im_brand_list");
    expect("${run.missing:-a b $c}", "a b $c");
}
END_TEST

START_TEST(test_missing_field)
{
    char err[256] = "";
    char *out = render("insert ${table} ${inc_key}", err, sizeof err);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(err, "template \"insert ${table} ${inc_key}\": event has no field \"inc_key\"");
    out = render("${run.host.x}", err, sizeof err);
    ck_assert_ptr_null(out);
    ASSERT_HAS(err, "event has no field \"run.host.x\"");
}
END_TEST

/* One compiled template, rendered again and again for different events:
 * the paths split at compile time serve every render. */
START_TEST(test_compiled_template_renders_many_events)
{
    char err[256] = "";
    sb_template *t = sb_template_compile("${run.host}/${run.n.x:-none}/${table}", err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    static const char *const evs[] = {"{\"run\":{\"host\":\"h1\",\"n\":{\"x\":1}},\"table\":\"a\"}",
                                      "{\"run\":{\"host\":\"h2\",\"n\":5},\"table\":\"b\"}",
                                      "{\"run\":{\"host\":\"h3\"},\"table\":\"c\"}"};
    static const char *const want[] = {"h1/1/a", "h2/none/b", "h3/none/c"};
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < 3; i++) {
            sb_event *ev = sb_event_new("test:1");
            json_t *obj = json_loads(evs[i], 0, NULL);
            json_object_update(sb_event_fields(ev), obj);
            json_decref(obj);
            char *out = sb_template_render(t, ev, err, sizeof err);
            ck_assert_msg(out != NULL, "%s", err);
            ck_assert_str_eq(out, want[i]);
            free(out);
            sb_event_free(ev);
        }
    /* no event: a field without a default is missing, named as written */
    ck_assert_ptr_null(sb_template_render(t, NULL, err, sizeof err));
    ck_assert_str_eq(err, "template \"${run.host}/${run.n.x:-none}/${table}\": event has no field \"run.host\"");
    sb_template_free(t);
}
END_TEST

START_TEST(test_compile_errors)
{
    ASSERT_HAS(compile_error("abc${table"), "unterminated \"${\" at column 4");
    ASSERT_HAS(compile_error("${}"), "empty field name at column 1");
    ASSERT_HAS(compile_error("a $b"), "\"$\" must start \"${field}\"");
    ASSERT_HAS(compile_error("a $b"), "column 3");
    ASSERT_HAS(compile_error("trailing $"), "column 10");
    ASSERT_HAS(compile_error("${a b}"), "expected \"}\" or \":-default\" after the field name at column 4");
    ASSERT_HAS(compile_error("${a.}"), "expected a field name");
    ASSERT_HAS(compile_error("${-x}"), "expected a field name");
    ASSERT_HAS(compile_error("${a:-x"), "unterminated");
    ASSERT_HAS(compile_error("x ${a.b"), "invalid template \"x ${a.b\"");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("template");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_literals);
    tcase_add_test(tc, test_fields);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_missing_field);
    tcase_add_test(tc, test_compiled_template_renders_many_events);
    tcase_add_test(tc, test_compile_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
