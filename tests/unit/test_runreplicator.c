/* test_runreplicator.c - the Run Replicator command parser on real and hostile input. */
#include "runreplicator.h"

#include <syncbridge/decode.h>
#include <syncbridge/event.h>

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "expected \"%s\" in \"%s\"", (sub), (s))

static rr_command cmd;
static char err[512];

static void ok(const char *text)
{
    err[0] = '\0';
    ck_assert_msg(rr_parse_command(text, NULL, &cmd, err, sizeof err) == 0, "rejected [%s]: %s", text, err);
}

/* Expect a rejection whose reason contains `why`. */
static void bad(const char *text, const char *why)
{
    err[0] = '\0';
    ck_assert_msg(rr_parse_command(text, NULL, &cmd, err, sizeof err) == -1, "accepted [%s]", text);
    ASSERT_HAS(err, why);
    ck_assert_str_eq(cmd.schema, "");
    ck_assert_str_eq(cmd.table, "");
}

START_TEST(test_seed_forms)
{
    ok("${RUN_SCRIPT} \"sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh groupon_production im_brand_list\"");
    ck_assert_str_eq(cmd.script, "run_replicator.sh");
    ck_assert_str_eq(cmd.schema, "groupon_production");
    ck_assert_str_eq(cmd.table, "im_brand_list");
    ck_assert_str_eq(cmd.inc_key, "");
    ck_assert_str_eq(cmd.inc_val, "");
    ck_assert_int_eq(cmd.offset_days, -1);

    ok("/opt/etl/bin/run_wrapper.sh \"sh /opt/etl/code/cerebro/run_replicator.sh groupon_production im_brand_list\"");
    ck_assert_str_eq(cmd.table, "im_brand_list");

    ok("sh run_replicator.sh edw_prod orders_daily order_dt 20261123");
    ck_assert_str_eq(cmd.inc_key, "order_dt");
    ck_assert_str_eq(cmd.inc_val, "20261123"); /* exactly as written */
    ck_assert_str_eq(cmd.inc_date, "2026-11-23");
    ck_assert_int_eq(cmd.offset_days, -1);

    ok("sh /x/run_replicator.sh edw_prod orders_daily order_dt 2024-02-29 3");
    ck_assert_str_eq(cmd.inc_val, "2024-02-29");
    ck_assert_str_eq(cmd.inc_date, "2024-02-29");
    ck_assert_int_eq(cmd.offset_days, 3);

    ok("bash -c 'sh /x/run_replicator.sh edw_prod orders_daily order_dt 20261123 0'");
    ck_assert_str_eq(cmd.schema, "edw_prod");
    ck_assert_int_eq(cmd.offset_days, 0);

    ok("run_replicator.sh S$1 T_2");
    ck_assert_str_eq(cmd.schema, "S$1");
}
END_TEST

START_TEST(test_spacing_and_quoting)
{
    ok("   sh    run_replicator.sh\t  groupon_production   im_brand_list   ");
    ck_assert_str_eq(cmd.table, "im_brand_list");
    ok("sh run_replicator.sh 'groupon_production' \"im_brand_list\"");
    ck_assert_str_eq(cmd.schema, "groupon_production");
    ok("sh run_\"replicator\".sh groupon_production im\\_brand_list");
    ck_assert_str_eq(cmd.table, "im_brand_list");
    /* a wrapper two levels deep */
    ok("ssh edge02 \"bash -c 'sh /x/run_replicator.sh a b'\"");
    ck_assert_str_eq(cmd.schema, "a");
    /* redirections after the arguments are not arguments */
    ok("sh run_replicator.sh a b > /tmp/rr.log 2>&1");
    ck_assert_str_eq(cmd.table, "b");
    ok("sh run_replicator.sh a b k 20260101 2 >>/tmp/rr.log");
    ck_assert_int_eq(cmd.offset_days, 2);
    /* another script name */
    err[0] = '\0';
    ck_assert_int_eq(rr_parse_command("sh /x/rr2.sh s t", "rr2.sh", &cmd, err, sizeof err), 0);
    ck_assert_str_eq(cmd.script, "rr2.sh");
}
END_TEST

START_TEST(test_injection_is_never_accepted)
{
    bad("sh run_replicator.sh groupon;rm -rf / im_brand_list", "schema \"groupon;rm\" is not a valid identifier");
    bad("sh run_replicator.sh \"groupon;rm -rf /\" t", "schema \"groupon;rm -rf /\" is not a valid identifier");
    bad("sh run_replicator.sh $(id) t", "schema \"$(id)\"");
    bad("sh run_replicator.sh s \"$(id -u)\"", "table \"$(id -u)\"");
    bad("sh run_replicator.sh `id` t", "schema \"`id`\"");
    bad("sh run_replicator.sh s t`reboot`", "table \"t`reboot`\"");
    bad("sh run_replicator.sh ${SCHEMA} t", "schema \"${SCHEMA}\"");
    bad("sh run_replicator.sh s t && rm -rf /", "unexpected shell operator \"&&\"");
    bad("sh run_replicator.sh s t ; reboot", "unexpected shell operator \";\"");
    bad("sh run_replicator.sh s t | mail x", "unexpected shell operator");
    bad("sh run_replicator.sh s t & ", "unexpected shell operator");
    bad("sh run_replicator.sh s t > /tmp/x; reboot", "after a redirection");
    bad("sh run_replicator.sh s t k 20260101 1 extra", "unexpected argument \"extra\"");
    bad("sh run_replicator.sh s 't\nDROP TABLE x'", "table");
    bad("sh run_replicator.sh s ../../etc/passwd", "table \"../../etc/passwd\"");
    bad("sh run_replicator.sh s 1table", "table \"1table\"");
    bad("sh run_replicator.sh s t k;id 20260101", "inc_key \"k;id\"");
    bad("sh run_replicator.sh s t k 20260101 -1", "offset_days \"-1\"");
    bad("sh run_replicator.sh s t k 20260101 1e3", "offset_days");
    bad("sh run_replicator.sh s t k 20260101 999999", "offset_days");
    char longname[RR_NAME_MAX + 40];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    char line[512];
    snprintf(line, sizeof line, "run_replicator.sh s %s", longname);
    bad(line, "is not a valid identifier");
}
END_TEST

START_TEST(test_bad_dates)
{
    bad("sh run_replicator.sh s t k 20261340", "inc_val \"20261340\" is not a date");
    bad("sh run_replicator.sh s t k 2026-02-30", "inc_val");
    bad("sh run_replicator.sh s t k 2025-02-29", "inc_val");
    bad("sh run_replicator.sh s t k 2026-1-05", "inc_val");
    bad("sh run_replicator.sh s t k 2026/01/05", "inc_val");
    bad("sh run_replicator.sh s t k 202601011", "inc_val");
    bad("sh run_replicator.sh s t k 00000000", "inc_val");
    bad("sh run_replicator.sh s t k 2026-01-0a", "inc_val");
    bad("sh run_replicator.sh s t k 2026--1-01", "inc_val");
    ok("sh run_replicator.sh s t k 2000-02-29");
    char d[16];
    ck_assert_int_eq(rr_parse_date("19991231", d), 0);
    ck_assert_str_eq(d, "1999-12-31");
    ck_assert_int_eq(rr_parse_date("1900-02-29", d), -1);
    ck_assert_int_eq(rr_parse_date("", d), -1);
}
END_TEST

START_TEST(test_structure_errors)
{
    bad("", "empty command");
    bad("sh other_script.sh s t", "no run_replicator.sh in the command");
    bad("echo run_replicator.sh.bak s t", "no run_replicator.sh");
    bad("sh run_replicator.sh", "missing schema");
    bad("sh run_replicator.sh groupon_production", "missing table");
    bad("${RUN_SCRIPT} \"sh run_replicator.sh groupon_production", "unterminated quote");
    bad("sh run_replicator.sh 'groupon_production im_brand_list", "unterminated quote");
    bad("sh run_replicator.sh s t k", "inc_key \"k\" given without inc_val");
    bad("sh run_replicator.sh s t > ", "without a target");
    /* fields must be JSON text: bytes that are not UTF-8 are refused here, with the column */
    bad("sh /opt/caf\xe9/run_replicator.sh s t", "command is not valid UTF-8 text (byte 0xe9 at column 12)");
    bad("sh run_replicator.sh s t \xc0\xaf", "not valid UTF-8"); /* overlong "/" */
    bad("sh run_replicator.sh s t \xed\xa0\x80", "not valid UTF-8"); /* a surrogate */
    bad("sh run_replicator.sh s t \xf4\x90\x80\x80", "not valid UTF-8"); /* past U+10FFFF */
    bad("sh run_replicator.sh s t \xe2\x82", "not valid UTF-8"); /* cut short */
    ok("sh /opt/caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80/run_replicator.sh s t");
    ck_assert_str_eq(cmd.table, "t");
    ck_assert_int_eq(rr_parse_command(NULL, NULL, &cmd, err, sizeof err), -1);
    /* huge input is refused before it is split */
    size_t n = 70000;
    char *huge = malloc(n + 1);
    memset(huge, 'x', n);
    huge[n] = '\0';
    bad(huge, "longer than");
    free(huge);
    /* deep nesting stops looking rather than recursing without end */
    bad("a \"b 'c \\\"d run_replicator.sh\\\"'\"", "");
}
END_TEST

START_TEST(test_fields_and_identity)
{
    ok("sh run_replicator.sh edw_prod orders_daily order_dt 20261123 2");
    json_t *f = json_object();
    ck_assert_int_eq(rr_command_to_fields(&cmd, "the command", f), 0);
    ck_assert_str_eq(json_string_value(json_object_get(f, "command")), "the command");
    ck_assert_str_eq(json_string_value(json_object_get(f, "script")), "run_replicator.sh");
    ck_assert_str_eq(json_string_value(json_object_get(f, "schema")), "edw_prod");
    ck_assert_str_eq(json_string_value(json_object_get(f, "table")), "orders_daily");
    ck_assert_str_eq(json_string_value(json_object_get(f, "inc_key")), "order_dt");
    ck_assert_str_eq(json_string_value(json_object_get(f, "inc_val")), "20261123");
    ck_assert_str_eq(json_string_value(json_object_get(f, "inc_date")), "2026-11-23");
    ck_assert_int_eq(json_integer_value(json_object_get(f, "offset_days")), 2);
    ck_assert(json_is_false(json_object_get(f, "full_refresh")));
    json_decref(f);

    char id[512];
    rr_identity(&cmd, "/var/log/rr.log|42|100", id, sizeof id);
    ck_assert_str_eq(id, "edw_prod.orders_daily|2026-11-23|/var/log/rr.log|42|100");
    ok("sh run_replicator.sh a b");
    f = json_object();
    ck_assert_int_eq(rr_command_to_fields(&cmd, NULL, f), 0);
    ck_assert_ptr_null(json_object_get(f, "inc_key"));
    ck_assert_ptr_null(json_object_get(f, "inc_date"));
    ck_assert_int_eq(json_integer_value(json_object_get(f, "offset_days")), 1); /* what the script loads */
    ck_assert(json_is_true(json_object_get(f, "full_refresh")));
    ck_assert_ptr_null(json_object_get(f, "command"));
    json_decref(f);
    rr_identity(&cmd, NULL, id, sizeof id);
    ck_assert_str_eq(id, "a.b|full|");
}
END_TEST

/* jansson's allocations fail while this is set */
static int fail_allocs;

static void *maybe_malloc(size_t n)
{
    return fail_allocs ? NULL : malloc(n);
}

START_TEST(test_command_fields_in_one_call)
{
    const char *text = "${RUN_SCRIPT} \"sh /x/run_replicator.sh edw_prod orders_daily order_dt 20261123 2\"";
    json_t *f = json_object();
    rr_command c;
    ck_assert_int_eq(rr_command_fields(text, NULL, "kafka:rr:1:5", f, &c, err, sizeof err), 0);
    ck_assert_str_eq(c.table, "orders_daily");
    ck_assert_str_eq(json_string_value(json_object_get(f, "command")), text);
    ck_assert_str_eq(json_string_value(json_object_get(f, "inc_val")), "20261123");
    ck_assert_str_eq(json_string_value(json_object_get(f, "inc_date")), "2026-11-23");
    ck_assert_int_eq(json_integer_value(json_object_get(f, "offset_days")), 2);
    /* run_id is sb_run_id() of the run's identity with the extra */
    char id[512];
    rr_identity(&c, "kafka:rr:1:5", id, sizeof id);
    ck_assert_str_eq(id, "edw_prod.orders_daily|2026-11-23|kafka:rr:1:5");
    ck_assert_int_eq(json_integer_value(json_object_get(f, "run_id")), sb_run_id(id));
    json_decref(f);

    /* no extra: no run_id, until the caller knows the identity */
    f = json_object();
    ck_assert_int_eq(rr_command_fields("sh run_replicator.sh a b", "run_replicator.sh", NULL, f, NULL, err, sizeof err),
                     0);
    ck_assert_ptr_null(json_object_get(f, "run_id"));
    ok("sh run_replicator.sh a b");
    ck_assert_int_eq(rr_set_run_id(&cmd, "/var/log/rr.log|42|100", f), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(f, "run_id")), sb_run_id("a.b|full|/var/log/rr.log|42|100"));
    json_decref(f);

    /* an extra longer than any fixed buffer still counts whole */
    char longer[6000];
    memset(longer, 'p', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    f = json_object();
    ck_assert_int_eq(rr_set_run_id(&cmd, longer, f), 0);
    json_int_t long_id = json_integer_value(json_object_get(f, "run_id"));
    longer[sizeof longer - 2] = 'q';
    ck_assert_int_eq(rr_set_run_id(&cmd, longer, f), 0);
    ck_assert_int_ne(json_integer_value(json_object_get(f, "run_id")), long_id);
    json_decref(f);

    /* not a command: the reason, and nothing set */
    f = json_object();
    ck_assert_int_eq(rr_command_fields("sh run_replicator.sh \"a;b\" t", NULL, "x", f, NULL, err, sizeof err),
                     RR_INVALID);
    ASSERT_HAS(err, "schema \"a;b\" is not a valid identifier");
    ck_assert_int_eq(json_object_size(f), 0);

    /* out of memory is told apart from a bad command */
    fail_allocs = 1;
    int rc = rr_command_fields("sh run_replicator.sh a b", NULL, "x", f, NULL, err, sizeof err);
    fail_allocs = 0;
    ck_assert_int_eq(rc, RR_NOMEM);
    ck_assert_str_eq(err, "out of memory");
    json_decref(f);
}
END_TEST

/* The SDK's decoder (syncbridge/decode.h) over this parser: each format,
 * what never decodes, and a caller struct without its size. */
START_TEST(test_decode_body)
{
    char derr[256];
    sb_event *ev = NULL;
    sb_decode_opts o = SB_DECODE_OPTS_INIT;
    const char *dcmd = "${RUN_SCRIPT} \"sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh edw orders load_date 20261123 1\"";
    {
        int rc = sb_decode_body(&o, "m1", dcmd, strlen(dcmd), &ev, derr, sizeof derr);
        ck_assert_msg(rc == 0, "%s", derr);
    }
    ck_assert_str_eq(sb_event_get_string(ev, "table"), "orders");
    ck_assert_str_eq(sb_event_get_string(ev, "inc_date"), "2026-11-23");
    ck_assert_ptr_null(sb_event_get_string(ev, "run_id")); /* no identity_extra */
    sb_event_free(ev);
    o.identity_extra = "kafka:rr:0:1";
    ck_assert_int_eq(sb_decode_body(&o, "m1", dcmd, strlen(dcmd), &ev, derr, sizeof derr), 0);
    ck_assert(json_is_integer(json_object_get(sb_event_fields(ev), "run_id")));
    sb_event_free(ev);
    const char *js = "  {\"id\": \"x7\", \"table\": \"t\"}";
    o.id_field = "id";
    ck_assert_int_eq(sb_decode_body(&o, "m2", js, strlen(js), &ev, derr, sizeof derr), 0); /* auto: JSON */
    ck_assert_str_eq(sb_event_id(ev), "x7");
    sb_event_free(ev);
    o.format = SB_DECODE_RAW;
    ck_assert_int_eq(sb_decode_body(&o, "m3", "any text", 8, &ev, derr, sizeof derr), 0);
    ck_assert_str_eq(sb_event_get_string(ev, "body"), "any text");
    sb_event_free(ev);
    ck_assert_int_eq(sb_decode_body(&o, "m4", "\xff\xfe", 2, &ev, derr, sizeof derr), SB_DECODE_INVALID);
    ck_assert_ptr_null(ev);
    ck_assert_ptr_nonnull(strstr(derr, "UTF-8"));
    o.format = SB_DECODE_COMMAND;
    ck_assert_int_eq(sb_decode_body(&o, "m5", "rm -rf /", 8, &ev, derr, sizeof derr), SB_DECODE_INVALID);
    ck_assert_int_eq(sb_decode_body(&o, "m6", "", 0, &ev, derr, sizeof derr), SB_DECODE_INVALID);
    sb_decode_opts sizeless = {0};
    ck_assert_int_eq(sb_decode_body(&sizeless, "m7", dcmd, strlen(dcmd), &ev, derr, sizeof derr), SB_DECODE_INVALID);
    ck_assert_ptr_nonnull(strstr(derr, "SB_DECODE_OPTS_INIT"));
    ck_assert_ptr_null(ev);
    ck_assert_str_eq(sb_decode_formats[SB_DECODE_RAW], "raw");
}
END_TEST

int main(void)
{
    json_set_alloc_funcs(maybe_malloc, free);
    Suite *s = suite_create("runreplicator");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_seed_forms);
    tcase_add_test(tc, test_spacing_and_quoting);
    tcase_add_test(tc, test_injection_is_never_accepted);
    tcase_add_test(tc, test_bad_dates);
    tcase_add_test(tc, test_structure_errors);
    tcase_add_test(tc, test_fields_and_identity);
    tcase_add_test(tc, test_command_fields_in_one_call);
    tcase_add_test(tc, test_decode_body);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
