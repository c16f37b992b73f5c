/* test_match.c - route match conditions and dotted field paths. */
#include "build_config.h"
#include "events/match.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "expected \"%s\" in \"%s\"", (sub), (s))

static sb_event *event_from(const char *fields_json)
{
    sb_event *ev = sb_event_new("test:1");
    json_t *obj = json_loads(fields_json, 0, NULL);
    ck_assert_ptr_nonnull(obj);
    json_object_update(sb_event_fields(ev), obj);
    json_decref(obj);
    return ev;
}

/* Compile `spec` and evaluate it against `fields`; fails the test on a compile error. */
static int matches(const char *spec, const char *fields)
{
    char err[512] = "";
    json_t *j = json_loads(spec, 0, NULL);
    ck_assert_ptr_nonnull(j);
    sb_match *m = sb_match_compile(j, "m", err, sizeof err);
    ck_assert_msg(m != NULL, "compile failed: %s", err);
    sb_event *ev = event_from(fields);
    int r = sb_match_eval(m, ev);
    sb_event_free(ev);
    sb_match_free(m);
    json_decref(j);
    return r;
}

/* Compile `spec`, expecting an error; returns it (static buffer). */
static const char *compile_error(const char *spec)
{
    static char err[512];
    err[0] = '\0';
    json_t *j = json_loads(spec, JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(j);
    sb_match *m = sb_match_compile(j, "routes.r.match", err, sizeof err);
    ck_assert_ptr_null(m);
    json_decref(j);
    return err;
}

START_TEST(test_equals)
{
    const char *ev = "{\"status\":\"succeeded\",\"n\":5,\"x\":2.5,\"ok\":true}";
    ck_assert_int_eq(matches("{\"field\":\"status\",\"equals\":\"succeeded\"}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"status\",\"equals\":\"failed\"}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"n\",\"equals\":5}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"n\",\"equals\":5.0}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"n\",\"equals\":\"5\"}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"x\",\"equals\":2.5}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"ok\",\"equals\":true}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"ok\",\"equals\":false}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"missing\",\"equals\":null}", ev), 0);
}
END_TEST

START_TEST(test_in_glob_regex)
{
    const char *ev = "{\"schema\":\"b\",\"table\":\"im_brand_list\",\"n\":3}";
    ck_assert_int_eq(matches("{\"field\":\"schema\",\"in\":[\"a\",\"b\"]}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"schema\",\"in\":[\"a\",\"c\"]}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"n\",\"in\":[1,3]}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"table\",\"glob\":\"im_*\"}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"table\",\"glob\":\"ex_*\"}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"n\",\"glob\":\"*\"}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"table\",\"regex\":\"^im_[a-z_]+$\"}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"table\",\"regex\":\"^[0-9]+$\"}", ev), 0);
}
END_TEST

START_TEST(test_exists_and_missing)
{
    const char *ev = "{\"td_count\":0}";
    ck_assert_int_eq(matches("{\"field\":\"td_count\",\"exists\":true}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"td_count\",\"exists\":false}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"hive_count\",\"exists\":false}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"hive_count\",\"exists\":true}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"hive_count\",\"glob\":\"*\"}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"hive_count\",\"in\":[null]}", ev), 0);
}
END_TEST

START_TEST(test_nested_paths)
{
    const char *ev = "{\"run\":{\"table\":{\"name\":\"t1\"},\"n\":1}}";
    ck_assert_int_eq(matches("{\"field\":\"run.table.name\",\"equals\":\"t1\"}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"run.n.x\",\"exists\":true}", ev), 0);
    ck_assert_int_eq(matches("{\"field\":\"run.table\",\"equals\":{\"name\":\"t1\"}}", ev), 1);

    json_t *obj = json_loads(ev, 0, NULL);
    ck_assert_str_eq(json_string_value(sb_json_path(obj, "run.table.name")), "t1");
    ck_assert_ptr_null(sb_json_path(obj, "run.missing"));
    ck_assert_ptr_null(sb_json_path(obj, "run.n.deeper"));
    ck_assert_ptr_null(sb_json_path(NULL, "run"));
    ck_assert_ptr_eq(sb_json_path(obj, "run"), json_object_get(obj, "run"));
    json_decref(obj);
}
END_TEST

/* Paths are split once, at compile time; every form is looked up as a
 * per-call split always did. */
START_TEST(test_compiled_paths_look_up_as_before)
{
    json_t *obj = json_loads("{\"a\":{\"b\":1,\"s\":\"x\"},\"\":\"empty key\",\"x.y\":2,\"n\":3}", 0, NULL);
    ck_assert_ptr_nonnull(obj);
    json_t *a = json_object_get(obj, "a"), *b = json_object_get(a, "b");
    static const char *const paths[] = {"a.b", "a..b", ".a.b", "a.b.", "a", "", ".", "..", "x.y", "a.b.c", "n.x",
                                        "zz", "a.zz"};
    json_t *const want[] = {b, b, b, b, a, json_object_get(obj, ""), obj, obj, NULL, NULL, NULL, NULL, NULL};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        sb_field_path p;
        sb_field_path_init(&p, paths[i]);
        for (int k = 0; k < 3; k++) /* the compiled path is not consumed by a lookup */
            ck_assert_msg(sb_field_path_get(&p, obj) == want[i], "path \"%s\"", paths[i]);
        ck_assert_ptr_null(sb_field_path_get(&p, NULL));
        sb_field_path_clear(&p);
        ck_assert_msg(sb_json_path(obj, paths[i]) == want[i], "sb_json_path \"%s\"", paths[i]);
    }
    sb_field_path zero = {0};
    sb_field_path_clear(&zero);
    json_decref(obj);

    /* the same through compiled conditions, evaluated more than once */
    const char *ev = "{\"a\":{\"b\":1},\"x.y\":2}";
    ck_assert_int_eq(matches("{\"field\":\"a..b\",\"equals\":1}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\".a.b.\",\"in\":[0,1]}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\"x.y\",\"exists\":false}", ev), 1);
    ck_assert_int_eq(matches("{\"field\":\".\",\"exists\":true}", ev), 1);
    char err[256];
    json_t *spec = json_loads("{\"any\":[{\"field\":\"a.b\",\"equals\":2},{\"field\":\"a.b\",\"equals\":1}]}", 0, NULL);
    sb_match *m = sb_match_compile(spec, "m", err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    sb_event *e = event_from(ev);
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(sb_match_eval(m, e), 1);
    ck_assert_int_eq(sb_match_eval(m, NULL), 0);
    sb_event_free(e);
    sb_match_free(m);
    json_decref(spec);
}
END_TEST

START_TEST(test_combinators)
{
    const char *ev = "{\"status\":\"succeeded\",\"schema\":\"a\",\"table\":\"im_x\"}";
    ck_assert_int_eq(matches("{\"all\":[{\"field\":\"status\",\"equals\":\"succeeded\"},"
                             "{\"field\":\"table\",\"glob\":\"im_*\"}]}", ev), 1);
    ck_assert_int_eq(matches("{\"all\":[{\"field\":\"status\",\"equals\":\"succeeded\"},"
                             "{\"field\":\"table\",\"glob\":\"ex_*\"}]}", ev), 0);
    ck_assert_int_eq(matches("{\"any\":[{\"field\":\"schema\",\"equals\":\"z\"},"
                             "{\"field\":\"table\",\"glob\":\"im_*\"}]}", ev), 1);
    ck_assert_int_eq(matches("{\"any\":[{\"field\":\"schema\",\"equals\":\"z\"},"
                             "{\"field\":\"status\",\"equals\":\"failed\"}]}", ev), 0);
    ck_assert_int_eq(matches("{\"not\":{\"field\":\"status\",\"equals\":\"failed\"}}", ev), 1);
    ck_assert_int_eq(matches("{\"not\":{\"any\":[{\"field\":\"x\",\"exists\":true},"
                             "{\"all\":[{\"field\":\"schema\",\"in\":[\"a\"]},{\"not\":"
                             "{\"field\":\"table\",\"regex\":\"^im\"}}]}]}}", ev), 1);
}
END_TEST

START_TEST(test_null_matcher_matches_all)
{
    sb_event *ev = event_from("{}");
    ck_assert_int_eq(sb_match_eval(NULL, ev), 1);
    sb_event_free(ev);
}
END_TEST

START_TEST(test_errors)
{
    ASSERT_HAS(compile_error("{\"field\":\"a\",\"equal\":1}"), "routes.r.match.equal: unknown key in match condition");
    ASSERT_HAS(compile_error("{\"all\":[{\"field\":\"a\",\"equals\":1},{\"field\":\"t\",\"regex\":\"(\"}]}"),
               "routes.r.match.all[1].regex: invalid regular expression: ");
    ASSERT_HAS(compile_error("{\"any\":[{\"not\":{\"field\":\"a\",\"bogus\":1}}]}"),
               "routes.r.match.any[0].not.bogus: unknown key");
    ASSERT_HAS(compile_error("{\"all\":[]}"), "routes.r.match.all: expected a non-empty list of conditions");
    ASSERT_HAS(compile_error("{\"all\":{}}"), "routes.r.match.all: expected a non-empty list");
    ASSERT_HAS(compile_error("{\"equals\":1}"), "routes.r.match: \"equals\" needs a \"field\"");
    ASSERT_HAS(compile_error("{\"field\":5,\"equals\":1}"), "routes.r.match.field: expected a non-empty string");
    ASSERT_HAS(compile_error("{\"field\":\"a\"}"), "routes.r.match: condition has no test");
    ASSERT_HAS(compile_error("{\"field\":\"a\",\"equals\":1,\"glob\":\"x\"}"), "combine them with \"all\"");
    ASSERT_HAS(compile_error("{\"field\":\"a\",\"in\":\"x\"}"), "routes.r.match.in: expected a list of values");
    ASSERT_HAS(compile_error("{\"field\":\"a\",\"glob\":1}"), "routes.r.match.glob: expected a string pattern");
    ASSERT_HAS(compile_error("{\"field\":\"a\",\"exists\":\"yes\"}"), "routes.r.match.exists: expected true or false");
    ASSERT_HAS(compile_error("{\"field\":\"a\",\"all\":[{\"field\":\"a\",\"exists\":true}]}"),
               "routes.r.match.field: not allowed with \"all\"");
    ASSERT_HAS(compile_error("[1]"), "routes.r.match: expected a condition object");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("match");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_equals);
    tcase_add_test(tc, test_in_glob_regex);
    tcase_add_test(tc, test_exists_and_missing);
    tcase_add_test(tc, test_nested_paths);
    tcase_add_test(tc, test_compiled_paths_look_up_as_before);
    tcase_add_test(tc, test_combinators);
    tcase_add_test(tc, test_null_matcher_matches_all);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
