/* test_rrlog.c - the Run Replicator log state machine on the sample logs
 * (tests/data/rrlogs), on noise that looks like markers, and on restarts
 * from every possible checkpoint. */
#include "rrlog.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000000000LL /* 2023-11-14T22:13:20Z */

typedef struct got {
    json_t *runs;   /* array of fields */
    json_t *emit_at; /* line index at which each run finished */
    int reports;
    char last_report[512];
} got;

static void on_report(void *ctx, int level, int64_t off, const char *msg)
{
    got *g = ctx;
    (void)level;
    g->reports++;
    snprintf(g->last_report, sizeof g->last_report, "@%lld %s", (long long)off, msg);
}

static rrlog_config *cfg(void)
{
    char err[512];
    rrlog_config *c = rrlog_config_new(NULL, NULL, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

typedef struct lines {
    char **v;
    int64_t *off;
    size_t n;
    int64_t size;
} lines;

static lines read_lines(const char *name)
{
    char path[1024];
    const char *top = getenv("SB_TOP_SRCDIR");
    snprintf(path, sizeof path, "%s/tests/data/rrlogs/%s", top ? top : "..", name);
    FILE *fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    lines l = {0};
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t off = 0;
    while ((len = getline(&buf, &cap, fp)) > 0) {
        l.v = realloc(l.v, (l.n + 1) * sizeof *l.v);
        l.off = realloc(l.off, (l.n + 1) * sizeof *l.off);
        l.off[l.n] = off;
        off += len;
        if (buf[len - 1] == '\n')
            buf[--len] = '\0';
        l.v[l.n++] = strdup(buf);
    }
    l.size = off;
    free(buf);
    fclose(fp);
    return l;
}

static void free_lines(lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    free(l->off);
}

/* Feed lines [from_line, n) and the end of file. */
static got feed(const rrlog_config *c, const lines *l, size_t from_line, int end)
{
    got g = {json_array(), json_array(), 0, ""};
    rrlog *r = rrlog_new(c, on_report, &g);
    rrlog_run run;
    for (size_t i = from_line; i < l->n; i++)
        if (rrlog_line(r, l->v[i], l->off[i], NOW, &run)) {
            json_object_set_new(run.fields, "_hash", json_integer((json_int_t)(run.content_hash >> 2)));
            json_array_append_new(g.runs, run.fields);
            json_array_append_new(g.emit_at, json_integer((json_int_t)i));
            ck_assert_int_eq(run.first_off, json_integer_value(json_object_get(run.fields, "log_offset")));
        }
    if (end && rrlog_end(r, NOW, &run)) {
        json_array_append_new(g.runs, run.fields);
        json_array_append_new(g.emit_at, json_integer((json_int_t)l->n));
    }
    rrlog_free(r);
    return g;
}

static void got_free(got *g)
{
    json_decref(g->runs);
    json_decref(g->emit_at);
}

static const char *s(json_t *run, const char *k)
{
    json_t *v = json_object_get(run, k);
    ck_assert_msg(json_is_string(v), "field %s missing", k);
    return json_string_value(v);
}

static json_int_t n(json_t *run, const char *k)
{
    json_t *v = json_object_get(run, k);
    ck_assert_msg(json_is_integer(v), "field %s missing", k);
    return json_integer_value(v);
}

START_TEST(test_full_refresh_with_noise)
{
    rrlog_config *c = cfg();
    lines l = read_lines("full_refresh_success.log");
    got g = feed(c, &l, 0, 1);
    ck_assert_int_eq(json_array_size(g.runs), 1);
    json_t *r = json_array_get(g.runs, 0);
    ck_assert_str_eq(s(r, "status"), "succeeded");
    ck_assert_str_eq(s(r, "schema"), "groupon_production");
    ck_assert_str_eq(s(r, "table"), "im_brand_list");
    ck_assert_str_eq(s(r, "command"), "sh /opt/etl/code/cerebro/run_replicator.sh groupon_production im_brand_list");
    ck_assert_str_eq(s(r, "run_date"), "2026-11-24");
    ck_assert_int_eq(n(r, "td_count"), 18234);
    ck_assert_int_eq(n(r, "hive_count"), 18234);
    ck_assert_ptr_null(json_object_get(r, "inc_val"));
    ck_assert_int_eq(n(r, "log_offset"), l.off[2]); /* the xtrace of the invocation */
    ck_assert_str_eq(s(r, "finished_at"), "2023-11-14T22:13:20Z");
    /* it ends at the real marker, not at the echoed ones */
    ck_assert_int_eq(json_integer_value(json_array_get(g.emit_at, 0)), 21);
    ck_assert_str_eq(l.v[21], "Counts have matched, Success!!");
    got_free(&g);
    free_lines(&l);
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_count_mismatch_with_timestamps)
{
    rrlog_config *c = cfg();
    lines l = read_lines("count_mismatch.log");
    got g = feed(c, &l, 0, 1);
    ck_assert_int_eq(json_array_size(g.runs), 1);
    json_t *r = json_array_get(g.runs, 0);
    ck_assert_str_eq(s(r, "status"), "failed");
    ck_assert_str_eq(s(r, "reason"), "Counts have not matched, exiting, and the script will fail");
    ck_assert_int_eq(n(r, "td_count"), 5120331);
    ck_assert_int_eq(n(r, "hive_count"), 5120330);
    ck_assert_str_eq(s(r, "inc_key"), "order_dt");
    ck_assert_str_eq(s(r, "inc_val"), "20261123"); /* as written */
    ck_assert_str_eq(s(r, "inc_date"), "2026-11-23");
    ck_assert_str_eq(s(r, "started_at"), "2026-11-24T04:00:01Z");
    ck_assert_str_eq(s(r, "finished_at"), "2026-11-24T04:05:41Z");
    got_free(&g);
    free_lines(&l);
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_incremental_and_failures)
{
    rrlog_config *c = cfg();
    lines l = read_lines("incremental_offset.log");
    got g = feed(c, &l, 0, 1);
    ck_assert_int_eq(json_array_size(g.runs), 1);
    json_t *r = json_array_get(g.runs, 0);
    ck_assert_str_eq(s(r, "status"), "succeeded");
    ck_assert_str_eq(s(r, "inc_val"), "2026-11-20");
    ck_assert_int_eq(n(r, "offset_days"), 3);
    ck_assert_str_eq(s(r, "started_at"), "2026-11-24T05:10:00Z");
    ck_assert_str_eq(s(r, "finished_at"), "2026-11-24T05:14:59Z");
    got_free(&g);
    free_lines(&l);

    l = read_lines("sqoop_failure.log");
    g = feed(c, &l, 0, 1);
    ck_assert_int_eq(json_array_size(g.runs), 1);
    r = json_array_get(g.runs, 0);
    ck_assert_str_eq(s(r, "status"), "failed");
    ck_assert_str_eq(s(r, "reason"), "Processing failed for date : 2026-11-24");
    ck_assert_str_eq(s(r, "command"), "run_replicator.sh groupon_production deal_options");
    ck_assert(json_is_null(json_object_get(r, "td_count")));
    got_free(&g);
    free_lines(&l);
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_three_runs_in_one_file)
{
    rrlog_config *c = cfg();
    lines l = read_lines("three_runs.log");
    got g = feed(c, &l, 0, 0);
    /* the third ends with RETCODE:0 + "Script completed successfully" */
    ck_assert_int_eq(json_array_size(g.runs), 3);
    ck_assert_str_eq(s(json_array_get(g.runs, 0), "table"), "t_one");
    ck_assert_str_eq(s(json_array_get(g.runs, 1), "status"), "failed");
    ck_assert_int_eq(n(json_array_get(g.runs, 1), "hive_count"), 3);
    ck_assert_str_eq(s(json_array_get(g.runs, 2), "status"), "succeeded");
    ck_assert_int_eq(n(json_array_get(g.runs, 2), "retcode"), 0);
    got_free(&g);
    free_lines(&l);
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_hostile_lines_rejected_with_reason)
{
    rrlog_config *c = cfg();
    lines l = read_lines("hostile.log");
    got g = feed(c, &l, 0, 1);
    ck_assert_int_eq(json_array_size(g.runs), 1);
    ck_assert_str_eq(s(json_array_get(g.runs, 0), "schema"), "good_schema");
    ck_assert_int_ge(g.reports, 2);
    got_free(&g);
    free_lines(&l);
    rrlog_config_free(c);
}
END_TEST

/* A reason longer than the value limit is cut at a character boundary: a
 * cut inside a UTF-8 character made the run go out without its reason. */
START_TEST(test_long_reason_cut_at_a_character)
{
    rrlog_config *c = cfg();
    got g = {json_array(), json_array(), 0, ""};
    rrlog *r = rrlog_new(c, on_report, &g);
    rrlog_run run;
    char line[1024] = "Counts have not matched ";
    for (int i = 0; i < 200; i++)
        strcat(line, "\xc3\xa9"); /* 2 bytes each; the limit falls inside one */
    rrlog_line(r, "Schema Name :- a", 10, NOW, &run);
    rrlog_line(r, "Table Name :- b", 30, NOW, &run);
    ck_assert_int_eq(rrlog_line(r, line, 50, NOW, &run), 1);
    const char *reason = json_string_value(json_object_get(run.fields, "reason"));
    ck_assert_msg(reason != NULL, "the run lost its reason");
    ck_assert_int_eq(strncmp(reason, line, strlen(reason)), 0);
    ck_assert_uint_ge(strlen(reason), 250);
    ck_assert_uint_lt(strlen(reason), 256);
    json_decref(run.fields);
    rrlog_free(r);
    got_free(&g);
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_retcode_rules)
{
    rrlog_config *c = cfg();
    got g = {json_array(), json_array(), 0, ""};
    rrlog *r = rrlog_new(c, on_report, &g);
    rrlog_run run;
    int64_t first;
    ck_assert_int_eq(rrlog_open_run(r, &first), 0);
    ck_assert_int_eq(rrlog_line(r, "Schema Name :- a", 10, NOW, &run), 0);
    ck_assert_int_eq(rrlog_open_run(r, &first), 1);
    ck_assert_int_eq(first, 10);
    ck_assert_int_eq(rrlog_line(r, "Table Name :- b", 30, NOW, &run), 0);
    ck_assert_int_eq(rrlog_line(r, "RETCODE:0", 50, NOW, &run), 0); /* zero: wait for a marker or the end */
    ck_assert_int_eq(rrlog_line(r, "some noise", 60, NOW, &run), 0);
    ck_assert_int_eq(rrlog_end(r, NOW, &run), 1);
    ck_assert_str_eq(json_string_value(json_object_get(run.fields, "status")), "succeeded");
    json_decref(run.fields);
    /* non-zero finishes at once */
    rrlog_line(r, "Schema Name :- a", 100, NOW, &run);
    rrlog_line(r, "Table Name :- b", 120, NOW, &run);
    ck_assert_int_eq(rrlog_line(r, "RETCODE: 3", 140, NOW, &run), 1);
    ck_assert_str_eq(json_string_value(json_object_get(run.fields, "reason")), "RETCODE:3");
    json_decref(run.fields);
    /* no RETCODE at the end: dropped with a report */
    rrlog_line(r, "Schema Name :- a", 200, NOW, &run);
    ck_assert_int_eq(rrlog_end(r, NOW, &run), 0);
    ck_assert_msg(strstr(g.last_report, "no end in its file") != NULL, "%s", g.last_report);
    /* a new table while a run is open: the old run is reported and dropped */
    rrlog_line(r, "Schema Name :- a", 300, NOW, &run);
    rrlog_line(r, "Table Name :- b", 320, NOW, &run);
    rrlog_line(r, "Table Name :- c", 340, NOW, &run);
    ck_assert_msg(strstr(g.last_report, "never finished") != NULL, "%s", g.last_report);
    ck_assert_int_eq(rrlog_open_run(r, &first), 1);
    ck_assert_int_eq(first, 340);
    rrlog_line(r, "Schema Name :- a", 360, NOW, &run);
    ck_assert_int_eq(rrlog_line(r, "Script completed successfully", 380, NOW, &run), 1);
    ck_assert_str_eq(json_string_value(json_object_get(run.fields, "table")), "c");
    json_decref(run.fields);
    /* markers only count as whole lines */
    rrlog_line(r, "Schema Name :- a", 400, NOW, &run);
    rrlog_line(r, "Table Name :- b", 420, NOW, &run);
    ck_assert_int_eq(rrlog_line(r, "+ echo 'Script completed successfully'", 440, NOW, &run), 0);
    ck_assert_int_eq(rrlog_line(r, "ERROR: Script FAILED", 460, NOW, &run), 0);
    ck_assert_int_eq(rrlog_line(r, "echo \"Counts have matched, Success!!\"", 480, NOW, &run), 0);
    ck_assert_int_eq(rrlog_line(r, "   Script FAILED   ", 500, NOW, &run), 1);
    json_decref(run.fields);
    rrlog_free(r);
    got_free(&g);
    rrlog_config_free(c);
}
END_TEST

/* Cut every sample after every line, as a restart would: resume from the
 * open run's first line (or the next line when none is open). The runs
 * after the cut must come out exactly as without the cut, and none before. */
START_TEST(test_restart_from_any_checkpoint)
{
    static const char *const files[] = {"full_refresh_success.log", "count_mismatch.log", "incremental_offset.log",
                                        "sqoop_failure.log", "three_runs.log", "hostile.log"};
    rrlog_config *c = cfg();
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        lines l = read_lines(files[f]);
        got all = feed(c, &l, 0, 1);
        got dummy = {json_array(), json_array(), 0, ""};
        rrlog *r = rrlog_new(c, on_report, &dummy);
        rrlog_run run;
        size_t emitted = 0;
        for (size_t cut = 0; cut <= l.n; cut++) {
            int64_t resume = cut < l.n ? l.off[cut] : l.size, first;
            if (rrlog_open_run(r, &first))
                resume = first;
            size_t from = 0;
            while (from < l.n && l.off[from] < resume)
                from++;
            got after = feed(c, &l, from, 1);
            ck_assert_int_eq(json_array_size(after.runs), json_array_size(all.runs) - emitted);
            for (size_t k = 0; k < json_array_size(after.runs); k++) {
                json_t *a = json_array_get(after.runs, k), *b = json_array_get(all.runs, emitted + k);
                ck_assert_int_eq(n(a, "log_offset"), n(b, "log_offset"));
                ck_assert_int_eq(n(a, "_hash"), n(b, "_hash")); /* the same event id on a re-read */
                ck_assert_str_eq(s(a, "status"), s(b, "status"));
                ck_assert_str_eq(s(a, "table"), s(b, "table"));
            }
            got_free(&after);
            if (cut < l.n && rrlog_line(r, l.v[cut], l.off[cut], NOW, &run)) {
                json_decref(run.fields);
                emitted++;
            }
        }
        rrlog_free(r);
        got_free(&dummy);
        got_free(&all);
        free_lines(&l);
    }
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_bad_patterns)
{
    char err[512];
    const char *p[RRP_COUNT] = {0};
    p[RRP_SCHEMA] = "Schema (";
    ck_assert_ptr_null(rrlog_config_new(p, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "schema_pattern") != NULL, "%s", err);
    p[RRP_SCHEMA] = "Schema Name";
    ck_assert_ptr_null(rrlog_config_new(p, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "capture group") != NULL, "%s", err);
    p[RRP_SCHEMA] = "";
    ck_assert_ptr_null(rrlog_config_new(p, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "must not be empty") != NULL, "%s", err);
    p[RRP_SCHEMA] = NULL;
    p[RRP_TIMESTAMP] = "";
    rrlog_config *c = rrlog_config_new(p, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(c);
    rrlog_config_free(c);
}
END_TEST

int main(void)
{
    setenv("TZ", "UTC", 1);
    Suite *su = suite_create("rrlog");
    TCase *tc = tcase_create("rrlog");
    tcase_add_test(tc, test_full_refresh_with_noise);
    tcase_add_test(tc, test_count_mismatch_with_timestamps);
    tcase_add_test(tc, test_incremental_and_failures);
    tcase_add_test(tc, test_three_runs_in_one_file);
    tcase_add_test(tc, test_hostile_lines_rejected_with_reason);
    tcase_add_test(tc, test_long_reason_cut_at_a_character);
    tcase_add_test(tc, test_retcode_rules);
    tcase_add_test(tc, test_restart_from_any_checkpoint);
    tcase_add_test(tc, test_bad_patterns);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
