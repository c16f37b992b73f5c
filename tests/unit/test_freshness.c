/* test_freshness.c - run lag per table: tracking, settling, the oldest
 * pending run, the table cap, and the ISO 8601 times it reads. */
#include "build_config.h"
#include "engine/freshness.h"
#include "util/util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static sb_event *run(const char *schema, const char *table, const char *finished)
{
    json_t *f = json_pack("{s:s, s:s}", "schema", schema, "table", table);
    if (finished)
        json_object_set_new(f, "finished_at", json_string(finished));
    return sb_event_new_with_fields("e", f);
}

START_TEST(iso8601)
{
    int64_t us;
    ck_assert_int_eq(sb_parse_iso8601_us("1970-01-01T00:00:00Z", &us), 0);
    ck_assert_int_eq(us, 0);
    ck_assert_int_eq(sb_parse_iso8601_us("2026-12-05T06:00:00Z", &us), 0);
    ck_assert_int_eq(us, 1796450400LL * 1000000);
    ck_assert_int_eq(sb_parse_iso8601_us("2026-12-05 07:00:00+01:00", &us), 0);
    ck_assert_int_eq(us, 1796450400LL * 1000000);
    ck_assert_int_eq(sb_parse_iso8601_us("2026-12-05T06:00:00.250", &us), 0); /* no zone: UTC */
    ck_assert_int_eq(us, 1796450400LL * 1000000 + 250000);
    ck_assert_int_eq(sb_parse_iso8601_us("2024-02-29T00:00:00-0530", &us), 0);
    ck_assert_int_eq(us, (1709164800LL + 5 * 3600 + 1800) * 1000000);
    ck_assert_int_eq(sb_parse_iso8601_us("20261205", &us), -1);
    ck_assert_int_eq(sb_parse_iso8601_us("2026-13-05T06:00:00Z", &us), -1);
    ck_assert_int_eq(sb_parse_iso8601_us("2026-12-05T06:00:00Zjunk", &us), -1);
    ck_assert_int_eq(sb_parse_iso8601_us(NULL, &us), -1);
}
END_TEST

START_TEST(lag_and_oldest_pending)
{
    sb_freshness *f = sb_freshness_new();
    int64_t fin[3];
    sb_event *a = run("edw", "t1", "2026-12-05T06:00:00Z"), *b = run("edw", "t1", "2026-12-05T05:00:00Z"),
             *c = run("edw", "t2", "2026-12-05T06:30:00Z"), *none = run("edw", "t3", NULL);
    int sa = sb_freshness_track(f, 1, a, &fin[0]), sb = sb_freshness_track(f, 2, b, &fin[1]),
        sc = sb_freshness_track(f, 3, c, &fin[2]);
    int64_t dummy = 42;
    ck_assert_int_eq(sb_freshness_track(f, 4, none, &dummy), -1);
    ck_assert_int_eq(dummy, 42);
    ck_assert_int_eq(sa, sb);
    ck_assert_int_ne(sa, sc);
    const char *name;
    const sb_hist *h;
    size_t pending;
    int64_t oldest;
    ck_assert_int_eq(sb_freshness_table(f, (size_t)sa, &name, &h, &pending, &oldest), 0);
    ck_assert_str_eq(name, "edw.t1");
    ck_assert_uint_eq(pending, 2);
    ck_assert_int_eq(oldest, fin[1]);
    /* the older run finishes here an hour and a half after its on-prem finish */
    sb_freshness_settle(f, sb, 2, fin[1], 1, fin[1] + 5400LL * 1000000);
    ck_assert_int_eq(sb_freshness_table(f, (size_t)sa, &name, &h, &pending, &oldest), 0);
    ck_assert_uint_eq(pending, 1);
    ck_assert_int_eq(oldest, fin[0]);
    ck_assert_uint_eq(h->count, 1);
    ck_assert_uint_eq(sb_hist_count_le(h, 3600LL * 1000000), 0);
    ck_assert_uint_eq(sb_hist_count_le(h, 7200LL * 1000000), 1);
    /* dead-lettered: no longer pending, no lag */
    sb_freshness_settle(f, sa, 1, fin[0], 0, fin[0] + 1);
    ck_assert_int_eq(sb_freshness_table(f, (size_t)sa, &name, &h, &pending, &oldest), 0);
    ck_assert_uint_eq(pending, 0);
    ck_assert_int_eq(oldest, 0);
    ck_assert_uint_eq(h->count, 1);
    /* forgotten at shutdown; a clock behind the on-prem one gives lag 0 */
    sb_freshness_forget(f, sc, 3, fin[2]);
    ck_assert_int_eq(sb_freshness_track(f, 5, c, &fin[2]), sc);
    sb_freshness_settle(f, sc, 5, fin[2], 1, fin[2] - 1000000);
    ck_assert_int_eq(sb_freshness_table(f, (size_t)sc, &name, &h, &pending, &oldest), 0);
    ck_assert_uint_eq(h->count, 1);
    ck_assert_uint_eq(h->max, 0);
    ck_assert_int_eq(sb_freshness_table(f, 2, &name, &h, &pending, &oldest), -1);
    sb_event_free(a);
    sb_event_free(b);
    sb_event_free(c);
    sb_event_free(none);
    sb_freshness_free(f);
}
END_TEST

START_TEST(table_cap)
{
    sb_freshness *f = sb_freshness_new();
    int64_t fin;
    int last = -1;
    for (int i = 0; i < SB_FRESH_MAX_TABLES + 50; i++) {
        char t[32];
        snprintf(t, sizeof t, "t%d", i);
        sb_event *ev = run("s", t, "2026-12-05T06:00:00Z");
        last = sb_freshness_track(f, i + 1, ev, &fin);
        sb_event_free(ev);
    }
    const char *name;
    const sb_hist *h;
    size_t pending;
    int64_t oldest;
    ck_assert_int_eq(last, SB_FRESH_MAX_TABLES);
    ck_assert_int_eq(sb_freshness_table(f, (size_t)last, &name, &h, &pending, &oldest), 0);
    ck_assert_str_eq(name, "_other");
    ck_assert_uint_eq(pending, 50);
    ck_assert_int_eq(sb_freshness_table(f, SB_FRESH_MAX_TABLES + 1, &name, &h, &pending, &oldest), -1);
    /* a table seen before the cap keeps its own series */
    sb_event *ev = run("s", "t7", "2026-12-05T06:00:00Z");
    ck_assert_int_eq(sb_freshness_track(f, 9999, ev, &fin), 7);
    sb_event_free(ev);
    sb_freshness_free(f);
}
END_TEST

/* Many runs of one table settled in every order (oldest first, newest
 * first, at random, some forgotten and tracked again): the count and the
 * oldest pending always match a plain list's. */
START_TEST(pending_matches_a_plain_list_in_any_settle_order)
{
    enum { N = 3000 };
    static int64_t fin[N];
    static int live[N];
    unsigned seed = 12345;
    for (int order = 0; order < 3; order++) {
        sb_freshness *f = sb_freshness_new();
        int slot = -1;
        for (int i = 0; i < N; i++) {
            char when[32];
            /* mostly in order, with some runs that finished earlier */
            snprintf(when, sizeof when, "2026-12-05T%02d:%02d:%02dZ", 6 + (i % 7 == 3 ? 0 : i / 1000),
                     (i / 60) % 60, i % 60);
            sb_event *ev = run("edw", "orders", when);
            slot = sb_freshness_track(f, i + 1, ev, &fin[i]);
            live[i] = 1;
            sb_event_free(ev);
        }
        for (int k = 0; k < N; k++) {
            int i = order == 0 ? k : order == 1 ? N - 1 - k : (int)((seed = seed * 1103515245u + 12345u) >> 8) % N;
            if (!live[i])
                continue;
            if (k % 97 == 5) { /* forgotten (a restart), then tracked again under its id */
                sb_freshness_forget(f, slot, i + 1, fin[i]);
                char when[32];
                time_t t = (time_t)(fin[i] / 1000000);
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
                sb_event *ev = run("edw", "orders", when);
                ck_assert_int_eq(sb_freshness_track(f, i + 1, ev, &fin[i]), slot);
                sb_event_free(ev);
            } else {
                sb_freshness_settle(f, slot, i + 1, fin[i], 1, fin[i] + 1);
                live[i] = 0;
            }
            size_t want = 0;
            int64_t oldest_want = 0;
            for (int j = 0; j < N; j++)
                if (live[j]) {
                    if (!want || fin[j] < oldest_want)
                        oldest_want = fin[j];
                    want++;
                }
            const char *name;
            const sb_hist *h;
            size_t pending;
            int64_t oldest;
            ck_assert_int_eq(sb_freshness_table(f, (size_t)slot, &name, &h, &pending, &oldest), 0);
            ck_assert_uint_eq(pending, want);
            ck_assert_int_eq(oldest, oldest_want);
        }
        for (int i = 0; i < N; i++)
            if (live[i]) {
                sb_freshness_settle(f, slot, i + 1, fin[i], 0, 0);
                live[i] = 0;
            }
        const char *name;
        const sb_hist *h;
        size_t pending;
        int64_t oldest;
        ck_assert_int_eq(sb_freshness_table(f, (size_t)slot, &name, &h, &pending, &oldest), 0);
        ck_assert_uint_eq(pending, 0);
        sb_freshness_free(f);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("freshness");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, iso8601);
    tcase_add_test(tc, lag_and_oldest_pending);
    tcase_add_test(tc, table_cap);
    tcase_add_test(tc, pending_matches_a_plain_list_in_any_settle_order);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
