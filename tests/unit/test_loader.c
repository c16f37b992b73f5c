/* test_loader.c - the plugin loader's checks, each failure with its message. */
#include "build_config.h"
#include "engine/loader.h"
#include "testutil.h"

#include <check.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static char err[2048];

static sb_registry *registry_with(const char *dir)
{
    char *dirs[1] = {(char *)dir};
    return sb_registry_new(dirs, dir ? 1 : 0);
}

static void expect_refused(const char *file, const char *needle)
{
    char *path = tu_build_path(file);
    sb_registry *r = registry_with(NULL);
    const sb_plugin *p = sb_registry_load_file(r, path, err, sizeof err);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err, needle), "message \"%s\" lacks \"%s\"", err, needle);
    ck_assert_msg(strstr(err, path), "message \"%s\" does not name the file %s", err, path);
    sb_registry_free(r);
    free(path);
}

START_TEST(loads_bundled_plugin)
{
    sb_registry *r = registry_with(NULL);
    const sb_plugin *p = sb_registry_get(r, "discard", SB_KIND_SINK, "sinks.d", err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    ck_assert_str_eq(p->name, "discard");
    ck_assert_int_eq(p->abi_major, SB_ABI_MAJOR);
    /* loading twice returns the same descriptor */
    ck_assert_ptr_eq(sb_registry_get(r, "discard", 0, NULL, err, sizeof err), p);
    sb_registry_free(r);
}
END_TEST

START_TEST(missing_plugin_lists_search_path)
{
    sb_registry *r = registry_with("/nonexistent/dir");
    ck_assert_ptr_null(sb_registry_get(r, "nosuch", SB_KIND_SINK, "main.json: sinks.x", err, sizeof err));
    ck_assert_msg(strstr(err, "main.json: sinks.x: plugin \"nosuch\" not found"), "%s", err);
    ck_assert_msg(strstr(err, "/nonexistent/dir/nosuch.so"), "%s", err);
    sb_registry_free(r);
}
END_TEST

START_TEST(not_a_shared_object)
{
    char *dir = tu_mkdtemp();
    char *path = tu_write(dir, "fake.so", "this is text, not ELF\n");
    sb_registry *r = registry_with(NULL);
    ck_assert_ptr_null(sb_registry_load_file(r, path, err, sizeof err));
    ck_assert_msg(strstr(err, "not a loadable shared object") && strstr(err, path), "%s", err);
    sb_registry_free(r);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(symbol_missing) { expect_refused("tests/plugins/.libs/no_symbol.so", "does not export the symbol \"syncbridge_plugin\""); }
END_TEST

START_TEST(wrong_abi_version) { expect_refused("tests/plugins/.libs/bad_abi.so", "built for plugin ABI 3.0, this syncbridge provides ABI 2.5"); }
END_TEST

/* An out-of-tree plugin still built against the 1.x SDK: both versions named,
 * and where the migration is described. */
START_TEST(abi1_plugin_refused)
{
    expect_refused("tests/plugins/.libs/old_abi.so", "built for plugin ABI 1.3, this syncbridge provides ABI 2.5");
    expect_refused("tests/plugins/.libs/old_abi.so", "Migrating a plugin to ABI 2");
}
END_TEST

START_TEST(abi21_plugin_loads_without_new_members)
{
    char *path = tu_build_path("tests/plugins/.libs/abi21.so");
    sb_registry *r = registry_with(NULL);
    const sb_plugin *p = sb_registry_load_file(r, path, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    ck_assert_ptr_null(sb_plugin_preflight(p)); /* beyond its struct_size */
    ck_assert_ptr_null(sb_plugin_registry_rows(p));
    ck_assert_uint_eq(sb_plugin_size_for_minor(1), offsetof(sb_plugin, preflight));
    ck_assert_uint_eq(sb_plugin_size_for_minor(2), sizeof(sb_plugin));
    sb_registry_free(r);
    free(path);
}
END_TEST

START_TEST(wrong_struct_size) { expect_refused("tests/plugins/.libs/bad_size.so", "descriptor size"); }
END_TEST

START_TEST(name_must_match_file) { expect_refused("tests/plugins/.libs/misnamed.so", "declares plugin name \"other_name\""); }
END_TEST

START_TEST(wrong_kind)
{
    sb_registry *r = registry_with(NULL);
    ck_assert_ptr_null(sb_registry_get(r, "file_in", SB_KIND_SINK, "main.json: sinks.x", err, sizeof err));
    ck_assert_msg(strstr(err, "main.json: sinks.x: plugin \"file_in\" is a source, it cannot be used as a sink"), "%s",
                  err);
    sb_registry_free(r);
}
END_TEST

START_TEST(duplicate_name_across_dirs)
{
    char *dir = tu_mkdtemp();
    char *src = tu_build_path("plugins/.libs/discard.so");
    char *cmd = NULL;
    ck_assert_int_ge(asprintf(&cmd, "cp '%s' '%s/discard.so'", src, dir), 0);
    ck_assert_int_eq(system(cmd), 0);
    sb_registry *r = registry_with(dir);
    ck_assert_ptr_null(sb_registry_get(r, "discard", SB_KIND_SINK, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "is provided twice") && strstr(err, dir) && strstr(err, src), "%s", err);
    sb_registry_free(r);
    free(cmd);
    free(src);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(cli_plugins_documents_options)
{
    char *out = NULL;
    const char *args[] = {"plugins", "file_in", NULL};
    ck_assert_int_eq(tu_run_syncbridge(&out, args), 0);
    ck_assert_msg(strstr(out, "file_in") && strstr(out, "max_line") && strstr(out, "poll_interval"), "%s", out);
    free(out);
    const char *bad[] = {"plugins", "nosuch", NULL};
    ck_assert_int_eq(tu_run_syncbridge(&out, bad), 3);
    ck_assert_msg(strstr(out, "plugin \"nosuch\" not found"), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_add_test(tc, loads_bundled_plugin);
    tcase_add_test(tc, missing_plugin_lists_search_path);
    tcase_add_test(tc, not_a_shared_object);
    tcase_add_test(tc, symbol_missing);
    tcase_add_test(tc, wrong_abi_version);
    tcase_add_test(tc, abi1_plugin_refused);
    tcase_add_test(tc, abi21_plugin_loads_without_new_members);
    tcase_add_test(tc, wrong_struct_size);
    tcase_add_test(tc, name_must_match_file);
    tcase_add_test(tc, wrong_kind);
    tcase_add_test(tc, duplicate_name_across_dirs);
    tcase_add_test(tc, cli_plugins_documents_options);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
