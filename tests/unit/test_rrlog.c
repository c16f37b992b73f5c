/* test_rrlog.c - the Run Replicator log state machine on the sample logs
 * (tests/data/rrlogs), on noise that looks like markers, and on restarts
 * from every possible checkpoint. */
#include "rrlog.h"

#include <check.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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
    rrlog_config *c = rrlog_config_new(NULL, NULL, RRLOG_FOLD_WIDTH, err, sizeof err);
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
        if (rrlog_line(r, l->v[i], l->off[i], &run)) {
            json_object_set_new(run.fields, "_hash", json_integer((json_int_t)(run.content_hash >> 2)));
            json_array_append_new(g.runs, run.fields);
            json_array_append_new(g.emit_at, json_integer((json_int_t)i));
            ck_assert_int_eq(run.first_off, json_integer_value(json_object_get(run.fields, "log_offset")));
        }
    while (end && rrlog_end(r, &run)) {
        json_object_set_new(run.fields, "_hash", json_integer((json_int_t)(run.content_hash >> 2)));
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

static json_t *date_of(json_t *run, size_t i)
{
    json_t *d = json_array_get(json_object_get(run, "dates"), i);
    ck_assert_msg(json_is_object(d), "no date %zu", i);
    return d;
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
    ck_assert_str_eq(s(r, "command_source"), "invocation");
    ck_assert_int_eq(json_array_size(json_object_get(r, "dates")), 1);
    ck_assert_str_eq(s(date_of(r, 0), "date"), "2026-11-24");
    ck_assert_str_eq(s(date_of(r, 0), "status"), "succeeded");
    ck_assert_int_eq(n(r, "td_count"), 18234);
    ck_assert_int_eq(n(r, "hive_count"), 18234);
    ck_assert_int_eq(n(r, "retcode"), 0);
    ck_assert_int_eq(n(r, "offset_days"), 1);
    ck_assert(json_is_true(json_object_get(r, "full_refresh")));
    ck_assert_ptr_null(json_object_get(r, "inc_val"));
    ck_assert_int_eq(n(r, "log_offset"), l.off[2]); /* the xtrace of the invocation */
    ck_assert_ptr_null(json_object_get(r, "finished_at")); /* no line carries a time: the caller's job */
    /* it ends at the wrapper's last line, not at the echoed markers */
    ck_assert_int_eq(json_integer_value(json_array_get(g.emit_at, 0)), 23);
    ck_assert_str_eq(l.v[23], "Script completed successfully");
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
    ck_assert_str_eq(s(r, "reason"), "date 20261123: Counts have not matched, exiting, and the script will fail");
    ck_assert_str_eq(s(date_of(r, 0), "status"), "failed");
    ck_assert_int_eq(n(r, "td_count"), 5120331);
    ck_assert_int_eq(n(r, "hive_count"), 5120330);
    ck_assert_int_eq(n(r, "retcode"), 1);
    ck_assert_str_eq(s(r, "inc_key"), "order_dt");
    ck_assert_str_eq(s(r, "inc_val"), "20261123"); /* as written */
    ck_assert_str_eq(s(r, "inc_date"), "2026-11-23");
    ck_assert_str_eq(s(r, "time_source"), "log");
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
    ck_assert_int_eq(json_array_size(json_object_get(r, "dates")), 3); /* one event, three dates */
    ck_assert_str_eq(s(date_of(r, 2), "date"), "2026-11-18");
    ck_assert_int_eq(n(date_of(r, 1), "td_count"), 64);
    ck_assert_int_eq(n(r, "td_count"), 77 + 64 + 81);
    ck_assert_str_eq(s(r, "started_at"), "2026-11-24T05:10:00Z");
    ck_assert_str_eq(s(r, "finished_at"), "2026-11-24T05:20:00Z");
    got_free(&g);
    free_lines(&l);

    l = read_lines("sqoop_failure.log");
    g = feed(c, &l, 0, 1);
    ck_assert_int_eq(json_array_size(g.runs), 1);
    r = json_array_get(g.runs, 0);
    ck_assert_str_eq(s(r, "status"), "failed");
    ck_assert_str_eq(s(r, "reason"), "date 2026-11-24: Processing failed for date : 2026-11-24");
    ck_assert_str_eq(s(r, "command"), "run_replicator.sh groupon_production deal_options");
    ck_assert_str_eq(s(r, "command_source"), "rebuilt");
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
    /* each ends with its wrapper's last line */
    ck_assert_int_eq(json_array_size(g.runs), 3);
    ck_assert_str_eq(s(json_array_get(g.runs, 0), "table"), "t_one");
    ck_assert_str_eq(s(json_array_get(g.runs, 0), "status"), "succeeded");
    ck_assert_str_eq(s(json_array_get(g.runs, 1), "status"), "failed");
    ck_assert_int_eq(n(json_array_get(g.runs, 1), "hive_count"), 3);
    /* RETCODE:0 and "Script completed successfully" without a verdict for its date: not a success */
    ck_assert_str_eq(s(json_array_get(g.runs, 2), "status"), "failed");
    ck_assert_str_eq(s(date_of(json_array_get(g.runs, 2), 0), "status"), "unfinished");
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
    rrlog_line(r, "Schema Name :- a", 10, &run);
    rrlog_line(r, "Table Name :- b", 30, &run);
    rrlog_line(r, "Processing for date: 20261124", 40, &run);
    ck_assert_int_eq(rrlog_line(r, line, 50, &run), 0);
    ck_assert_int_eq(rrlog_end(r, &run), 1);
    const char *reason = json_string_value(json_object_get(date_of(run.fields, 0), "reason"));
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

static json_t *line_run(rrlog *r, const char *line, int64_t off)
{
    rrlog_run run;
    ck_assert_msg(rrlog_line(r, line, off, &run) == 1, "\"%s\" finishes no run", line);
    return run.fields;
}

static void no_run(rrlog *r, const char *line, int64_t off)
{
    rrlog_run run;
    ck_assert_msg(rrlog_line(r, line, off, &run) == 0, "\"%s\" finished a run", line);
}

/* Counts of any size add up without overflow: the run's total saturates
 * (fuzz_rrlog found 1 + INT64_MAX; corpus/rrlog/count_sum_overflow.log). */
START_TEST(test_huge_counts_saturate)
{
    rrlog_config *c = cfg();
    got g = {json_array(), json_array(), 0, ""};
    rrlog *r = rrlog_new(c, on_report, &g);
    no_run(r, "Schema Name :- a", 10);
    no_run(r, "Table Name :- b", 20);
    no_run(r, " Picking the inc_val as 2026-11-02 ", 22);
    no_run(r, "No. of offset_days specified = 2", 24);
    no_run(r, "Processing for date: 2026-11-01", 30);
    no_run(r, " Teradata Count : 9223372036854775807", 40);
    no_run(r, " Hive Count : 9223372036854775807", 50);
    no_run(r, "Counts have matched, Success!!", 60);
    no_run(r, "Processing for date: 2026-11-02", 70);
    no_run(r, " Teradata Count : 99999999999999999999999", 80);
    no_run(r, " Hive Count : 5", 90);
    no_run(r, "Counts have matched, Success!!", 100);
    rrlog_run run;
    ck_assert_int_eq(rrlog_end(r, &run), 1);
    ck_assert_int_eq(n(run.fields, "td_count"), INT64_MAX);
    ck_assert_int_eq(n(run.fields, "hive_count"), INT64_MAX);
    json_decref(run.fields);
    rrlog_free(r);
    got_free(&g);
    rrlog_config_free(c);
}
END_TEST

START_TEST(test_closing_rules)
{
    rrlog_config *c = cfg();
    got g = {json_array(), json_array(), 0, ""};
    rrlog *r = rrlog_new(c, on_report, &g);
    rrlog_run run;
    int64_t first;
    json_t *f;
    ck_assert_int_eq(rrlog_open_run(r, &first), 0);
    no_run(r, "Schema Name :- a", 10);
    ck_assert_int_eq(rrlog_open_run(r, &first), 1);
    ck_assert_int_eq(first, 10);
    no_run(r, "Table Name :- b", 30);
    no_run(r, "Processing for date: 20261124", 40);
    ck_assert_int_eq(rrlog_idle(r, &run), 0); /* in the middle of a date: an import may be quiet for long */
    no_run(r, "Counts have matched, Success!!", 45); /* a failure line may still follow */
    no_run(r, "RETCODE:0", 50);
    no_run(r, "some noise", 60);
    ck_assert_int_eq(rrlog_idle(r, &run), 1); /* no trailer's last line: quiet ends it */
    ck_assert_str_eq(json_string_value(json_object_get(run.fields, "status")), "succeeded");
    ck_assert_int_eq(n(run.fields, "retcode"), 0);
    json_decref(run.fields);

    /* a non-zero RETCODE fails the run; the wrapper's last line ends it */
    no_run(r, "Schema Name :- a", 100);
    no_run(r, "Table Name :- b", 105);
    no_run(r, "Processing for date: 20261124", 110);
    no_run(r, "Counts have matched, Success!!", 115);
    no_run(r, "RETCODE: 3", 140);
    f = line_run(r, "Script FAILED", 150);
    ck_assert_str_eq(s(f, "status"), "failed");
    ck_assert_str_eq(s(f, "reason"), "RETCODE:3");
    json_decref(f);

    /* the end of the file reports a run with no verdict, and says why */
    no_run(r, "Schema Name :- a", 200);
    no_run(r, "Table Name :- b", 205);
    no_run(r, "Processing for date: 2026-11-24", 210);
    ck_assert_int_eq(rrlog_end(r, &run), 1);
    ck_assert_str_eq(s(run.fields, "reason"), "date 2026-11-24: no verdict");
    ck_assert_str_eq(s(date_of(run.fields, 0), "status"), "unfinished");
    json_decref(run.fields);
    ck_assert_int_eq(rrlog_end(r, &run), 0);

    /* the next run's header cuts an unfinished run short: it is reported, the new one opens */
    no_run(r, "Schema Name :- a", 300);
    no_run(r, "Table Name :- b", 320);
    no_run(r, "Processing for date: 20261124", 330);
    f = line_run(r, "Schema Name :- a", 340);
    ck_assert_str_eq(s(f, "status"), "failed");
    ck_assert_str_eq(s(f, "table"), "b");
    json_decref(f);
    ck_assert_msg(strstr(g.last_report, "no verdict (a new run started)") != NULL, "%s", g.last_report);
    ck_assert_int_eq(rrlog_open_run(r, &first), 1);
    ck_assert_int_eq(first, 340);
    no_run(r, "Table Name :- c", 360);
    no_run(r, "Processing for date: 20261124", 370);
    no_run(r, "Counts have matched, Success!!", 375);
    f = line_run(r, "Script completed successfully", 380);
    ck_assert_str_eq(s(f, "table"), "c");
    ck_assert_str_eq(s(f, "status"), "succeeded");
    json_decref(f);

    /* markers only count as whole lines */
    no_run(r, "Schema Name :- a", 400);
    no_run(r, "Table Name :- b", 420);
    no_run(r, "Processing for date: 20261124", 430);
    no_run(r, "+ echo 'Script completed successfully'", 440);
    no_run(r, "ERROR: Script FAILED", 460);
    no_run(r, "echo \"Counts have matched, Success!!\"", 480);
    f = line_run(r, "   Script FAILED   ", 500);
    ck_assert_str_eq(s(f, "reason"), "date 20261124: no verdict");
    json_decref(f);

    /* a real error: counts matched, and still the date failed */
    no_run(r, "Schema Name :- a", 600);
    no_run(r, "Table Name :- b", 605);
    no_run(r, "Processing for date: 20261124", 610);
    no_run(r, " Found Error!!", 620);
    no_run(r, "Counts have matched, Success!!", 630);
    no_run(r, "Processing failed for date : 20261124", 640);
    f = line_run(r, "Schema Name :- z", 650); /* the next run closes it */
    ck_assert_str_eq(s(f, "reason"), "date 20261124: Found Error!!");
    json_decref(f);
    rrlog_reset(r);

    /* N dates: one run, closed after the Nth verdict by what follows */
    no_run(r, "sh /x/run_replicator.sh s t k 20261105 3", 700);
    no_run(r, "Schema Name :- s", 710);
    for (int d = 5; d >= 3; d--) {
        char line[64];
        snprintf(line, sizeof line, "Processing for date: 2026110%d", d);
        no_run(r, line, 720 + d);
        no_run(r, "TD_COUNT = 2", 730 + d); /* the opswise wrapper's count lines */
        no_run(r, "HIVE_COUNT = 2", 740 + d);
        no_run(r, "Counts have matched, Success!!", 750 + d);
    }
    f = line_run(r, "${RUN_SCRIPT} \"sh /x/run_replicator.sh s u\"", 800);
    ck_assert_str_eq(s(f, "status"), "succeeded");
    ck_assert_int_eq(json_array_size(json_object_get(f, "dates")), 3);
    ck_assert_int_eq(n(f, "td_count"), 6);
    ck_assert_str_eq(s(f, "inc_val"), "20261105");
    ck_assert_int_eq(n(f, "offset_days"), 3);
    json_decref(f);
    ck_assert_int_eq(rrlog_end(r, &run), 1); /* the wrapper's run: its invocation, no date at all */
    ck_assert_str_eq(s(run.fields, "command"), "${RUN_SCRIPT} \"sh /x/run_replicator.sh s u\"");
    ck_assert_str_eq(s(run.fields, "reason"), "0 of 1 dates processed");
    json_decref(run.fields);
    rrlog_free(r);
    got_free(&g);
    rrlog_config_free(c);
}
END_TEST

/* A line of exactly fold_width bytes was folded: joined with the next. */
START_TEST(test_folded_lines_joined)
{
    rrlog_config *c = cfg();
    rrlog *r = rrlog_new(c, NULL, NULL);
    rrlog_run run;
    char inv[600];
    snprintf(inv, sizeof inv, "/opt/etl/bin/run_script.sh \"sh /opt/%0200d/cerebro/run_replicator.sh s t k 2026-11-05\"",
             0);
    size_t len = strlen(inv);
    ck_assert_uint_gt(len, RRLOG_FOLD_WIDTH);
    char piece[RRLOG_FOLD_WIDTH + 1];
    memcpy(piece, inv, RRLOG_FOLD_WIDTH);
    piece[RRLOG_FOLD_WIDTH] = '\0';
    no_run(r, piece, 0);
    int64_t first;
    ck_assert_int_eq(rrlog_open_run(r, &first), 1); /* a restart re-reads the first piece */
    ck_assert_int_eq(first, 0);
    no_run(r, inv + RRLOG_FOLD_WIDTH, RRLOG_FOLD_WIDTH + 1);
    no_run(r, "Processing for date: 2026-11-05", 400);
    no_run(r, "Counts have matched, Success!!", 450);
    ck_assert_int_eq(rrlog_end(r, &run), 1);
    ck_assert_str_eq(s(run.fields, "command"), inv);
    ck_assert_str_eq(s(run.fields, "inc_key"), "k");
    ck_assert_int_eq(n(run.fields, "log_offset"), 0);
    json_decref(run.fields);
    rrlog_free(r);
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
            if (cut < l.n && rrlog_line(r, l.v[cut], l.off[cut], &run)) {
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
    ck_assert_ptr_null(rrlog_config_new(p, NULL, RRLOG_FOLD_WIDTH, err, sizeof err));
    ck_assert_msg(strstr(err, "schema_pattern") != NULL, "%s", err);
    p[RRP_SCHEMA] = "Schema Name";
    ck_assert_ptr_null(rrlog_config_new(p, NULL, RRLOG_FOLD_WIDTH, err, sizeof err));
    ck_assert_msg(strstr(err, "capture group") != NULL, "%s", err);
    p[RRP_SCHEMA] = "";
    ck_assert_ptr_null(rrlog_config_new(p, NULL, RRLOG_FOLD_WIDTH, err, sizeof err));
    ck_assert_msg(strstr(err, "must not be empty") != NULL, "%s", err);
    p[RRP_SCHEMA] = NULL;
    p[RRP_TIMESTAMP] = "";
    rrlog_config *c = rrlog_config_new(p, NULL, RRLOG_FOLD_WIDTH, err, sizeof err);
    ck_assert_ptr_nonnull(c);
    rrlog_config_free(c);
}
END_TEST


/* ---- the hand-written default matchers, held to regexec ---------------- */

/* Lines of every shape the defaults look for, with their near misses;
 * mutations of these and of the sample logs' lines are tried too. */
static const char *const shapes[] = {
    "Schema Name :- groupon_production", " Table Name :-im_brand_list  ", "Schema Name :- a b", "Schema Name:-",
    "Table Name :- \t", "Picking the inc_val as 20261101 ", " Picking the inc_val as\t2026-11-01",
    "Picking the inc_val as", "Picking the inc_val as20261101",
    "No inc_val and inc_key  was passed, Considering this table as a full refresh ...",
    "No inc_val and inc_keywas passed, Considering this table as a full refresh",
    "No offset_days specified, loading just for a single date", "No. of offset_days specified = 7",
    "No. of offset_days specified=12x", "No. of offset_days specified = ", "No offset_days specifie",
    "Processing for date: 20261124", "Processing for date : 2026-11-24 ", "Processing for date:", "Processing for date: 2026/11/24",
    "Processing failed for date : 20261124", "Starting Import of groupon_production.im_brand_list",
    "Starting Import of a.b.c ", "Starting Import of .b", "Starting Import of a.", "Starting Import of  a.b",
    "Starting Import of a b.c", " Teradata Count : 8471207", "TD_COUNT = 12", "TD_COUNT=", "Teradata Count :12 3",
    " Hive Count : 0", "HIVE_COUNT  =  99 ", "Hive Count 5", " Found Error!!", "Found Error!! x",
    "Counts have matched, Success!!", " Counts have not matched, exiting, and the script will fail ",
    "Counts have not matched", "RETCODE:0", "RETCODE : 12 ", "RETCODE:", "RETCODE:1a", "Script completed successfully",
    " Script FAILED\t", "Script FAILED!", "+ echo 'Script completed successfully'",
    "/opt/etl/bin/run_script.sh \"sh /opt/etl/code/cerebro/run_replicator.sh groupon_production im_brand_list\"",
    "${RUN_SCRIPT} \"sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh S T K 20261101 3\"",
    "+ sh /opt/etl/code/cerebro/run_replicator.sh S T", "run_replicator.sh S T", "x run_replicator.sh",
    "++ run_replicator.sh", "sh run_replicator.shx S", "sh run_replicator.sh' run_replicator.sh", "+ + ",
    "a run_replicator.sh\"b run_replicator.shz",
    "./bin/zombie_runner run --context=schema:s,base_table:t,inc_key:order_dt,inc_date:2026-11-01 --log-level",
    "--context=inc_key:\"k$1\" --context=inc_key:b", "--context=a,inc_key:,inc_key:x1,inc_key: y",
    "--context= inc_key:a --context=inc_key:b", "--context=inc_key:inc_key:z", "--context=--context=inc_key:_q",
    "--context=inc_key:\"\"", "2026-11-24 01:12:45,827 ERROR hive.metastore: x", "[2026-11-24 01:12:04] Schema Name :- s",
    "2026-11-24T01:12:04.123 Table Name :- t", "",
};

static const rrlog_pattern differential[] = {
    RRP_TIMESTAMP, RRP_LOGTIME, RRP_COMMAND, RRP_SCHEMA, RRP_TABLE, RRP_INC_VAL, RRP_FULL_REFRESH, RRP_OFFSET_DAYS,
    RRP_DATE, RRP_START, RRP_CONTEXT, RRP_TD_COUNT, RRP_HIVE_COUNT, RRP_FOUND_ERROR, RRP_DATE_OK, RRP_DATE_FAIL,
    RRP_RETCODE, RRP_END_OK, RRP_END_FAIL,
};

static void same_as_regexec(regex_t *re, const char *line, size_t *checked)
{
    for (size_t i = 0; i < sizeof differential / sizeof differential[0]; i++) {
        rrlog_pattern p = differential[i];
        size_t nm = re[p].re_nsub + 1;
        regmatch_t want[8], mine[8];
        int w = regexec(&re[p], line, nm, want, 0) == 0;
        int g = rrlog_match_default(p, line, mine, nm);
        ck_assert_msg(g == w, "%s on \"%s\": regexec %d, by hand %d", rrlog_pattern_option[p], line, w, g);
        for (size_t k = 0; w && k < nm; k++)
            ck_assert_msg(mine[k].rm_so == want[k].rm_so && mine[k].rm_eo == want[k].rm_eo,
                          "%s on \"%s\": group %zu is %d-%d by regexec, %d-%d by hand", rrlog_pattern_option[p], line,
                          k, (int)want[k].rm_so, (int)want[k].rm_eo, (int)mine[k].rm_so, (int)mine[k].rm_eo);
        (*checked)++;
    }
}

static uint64_t rnd_state = 88172645463325252ULL;
static size_t rnd(size_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (size_t)(rnd_state % n);
}

/* A copy of s changed at random places: blanks and the characters the
 * patterns care about inserted, replaced or removed, or cut short. */
static void mutate(const char *s, char *out, size_t outsz)
{
    static const char alphabet[] = " \t.:-=+\"'#,_$09aZ!";
    snprintf(out, outsz, "%s", s);
    for (int edits = 1 + (int)rnd(3); edits > 0; edits--) {
        size_t len = strlen(out), at = rnd(len + 1);
        char c = alphabet[rnd(sizeof alphabet - 1)];
        switch (rnd(4)) {
        case 0: /* insert */
            if (len + 2 < outsz) {
                memmove(out + at + 1, out + at, len - at + 1);
                out[at] = c;
            }
            break;
        case 1: /* replace */
            if (at < len)
                out[at] = c;
            break;
        case 2: /* remove */
            if (at < len)
                memmove(out + at, out + at + 1, len - at);
            break;
        default: /* cut */
            out[at] = '\0';
        }
    }
}

START_TEST(test_default_matchers_equal_regexec)
{
    regex_t re[RRP_COUNT];
    for (size_t i = 0; i < sizeof differential / sizeof differential[0]; i++)
        ck_assert_int_eq(regcomp(&re[differential[i]], rrlog_pattern_default[differential[i]], REG_EXTENDED), 0);
    static const char *const files[] = {"count_mismatch.log", "full_refresh_success.log", "hostile.log",
                                        "incremental_offset.log", "sqoop_failure.log", "three_runs.log"};
    size_t nseeds = sizeof shapes / sizeof shapes[0], cap = nseeds, n = 0, checked = 0;
    const char **seeds = malloc(cap * sizeof *seeds);
    lines ls[sizeof files / sizeof files[0]];
    for (size_t i = 0; i < nseeds; i++)
        seeds[n++] = shapes[i];
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        ls[f] = read_lines(files[f]);
        seeds = realloc(seeds, (n + ls[f].n) * sizeof *seeds);
        for (size_t i = 0; i < ls[f].n; i++)
            seeds[n++] = ls[f].v[i];
    }
    char buf[4096];
    for (size_t i = 0; i < n; i++) {
        same_as_regexec(re, seeds[i], &checked);
        for (int k = 0; k < 200; k++) {
            mutate(seeds[i], buf, sizeof buf);
            same_as_regexec(re, buf, &checked);
        }
        /* two lines run together, as a folded line joined */
        snprintf(buf, sizeof buf, "%s%s", seeds[i], seeds[rnd(n)]);
        same_as_regexec(re, buf, &checked);
    }
    ck_assert_uint_gt(checked, 100000);
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++)
        free_lines(&ls[f]);
    free(seeds);
    for (size_t i = 0; i < sizeof differential / sizeof differential[0]; i++)
        regfree(&re[differential[i]]);
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
    tcase_add_test(tc, test_closing_rules);
    tcase_add_test(tc, test_huge_counts_saturate);
    tcase_add_test(tc, test_folded_lines_joined);
    tcase_add_test(tc, test_restart_from_any_checkpoint);
    tcase_add_test(tc, test_bad_patterns);
    tcase_add_test(tc, test_default_matchers_equal_regexec);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
