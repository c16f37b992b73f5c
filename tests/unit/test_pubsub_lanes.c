/* test_pubsub_lanes.c - the pubsub sink's ordering-key lanes: which of a
 * batch's messages may go, in what order, and how a lane fills, drains and
 * lets go of a message the core gave up on. */
#include "../../plugins/pubsub/lanes.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const char *const ids[] = {"e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"};

/* admit() of idx (batch positions of ids[]) for key "k" */
static size_t admit(ps_lanes *l, size_t *idx, size_t n, int64_t *wait_ms)
{
    return ps_lanes_admit(l, "k", ids, idx, n, wait_ms);
}

/* idx[0..n) is want[0..n): the order admit() gave */
static void assert_order(const size_t *idx, const size_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(idx[i] == want[i], "position %zu: %zu, want %zu", i, idx[i], want[i]);
}

START_TEST(no_lane_admits_everything_in_place)
{
    ps_lanes *l = ps_lanes_new();
    size_t idx[] = {2, 0, 1};
    int64_t w;
    ck_assert_uint_eq(admit(l, idx, 3, &w), 3);
    ck_assert_uint_eq(idx[0], 2); /* untouched */
    unsigned char owed[8] = {0};
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, idx, 3, owed), 0);
    ck_assert_uint_eq(ps_lanes_count(l), 0);
    ps_lanes_free(l);
}
END_TEST

START_TEST(a_lane_goes_in_its_order_and_drains)
{
    ps_lanes *l = ps_lanes_new();
    int64_t w;
    /* batch 1: e0 published, e1 failed, e2 held back in the batch */
    size_t b1[] = {0, 1, 2};
    ck_assert_uint_eq(admit(l, b1, 3, &w), 3);
    unsigned char owed[8] = {0, 1, 1};
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, b1, 3, owed), 0);
    ck_assert_uint_eq(ps_lanes_count(l), 1); /* lane e1 e2 */
    /* batch 2: new e3, e4 and the retried e2 (not the head): all wait */
    size_t b2[] = {3, 2, 4};
    ck_assert_uint_eq(admit(l, b2, 3, &w), 0);
    ck_assert_int_eq(w, 50);
    assert_order(b2, (const size_t[]){2, 3, 4}, 3); /* owed first, in lane order, then the new ones */
    memset(owed, 1, sizeof owed);
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, b2, 3, owed), 0); /* lane e1 e2 e3 e4 */
    /* still no head: the wait doubles */
    size_t b3[] = {4};
    ck_assert_uint_eq(admit(l, b3, 1, &w), 0);
    ck_assert_int_eq(w, 100);
    /* batch 4: e3, e1, e5 (new), e2: e1 e2 e3 go, e5 waits for e4 */
    size_t b4[] = {3, 1, 5, 2};
    ck_assert_uint_eq(admit(l, b4, 4, &w), 3);
    assert_order(b4, (const size_t[]){1, 2, 3, 5}, 4);
    memset(owed, 0, sizeof owed);
    owed[5] = 1;
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, b4, 4, owed), 0); /* lane e4 e5 */
    /* the head moved: the wait starts again from the shortest */
    size_t b5[] = {5};
    ck_assert_uint_eq(admit(l, b5, 1, &w), 0);
    ck_assert_int_eq(w, 50);
    /* batch 6: e4, e5 and the new e6 all go: the lane is used up */
    size_t b6[] = {6, 5, 4};
    ck_assert_uint_eq(admit(l, b6, 3, &w), 3);
    assert_order(b6, (const size_t[]){4, 5, 6}, 3);
    memset(owed, 0, sizeof owed);
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, b6, 3, owed), 0);
    ck_assert_uint_eq(ps_lanes_count(l), 0);
    ps_lanes_free(l);
}
END_TEST

START_TEST(a_message_given_up_on_leaves_its_lane)
{
    ps_lanes *l = ps_lanes_new();
    int64_t w;
    size_t b1[] = {0, 1};
    unsigned char owed[8] = {1, 1};
    ck_assert_uint_eq(admit(l, b1, 2, &w), 2);
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, b1, 2, owed), 0);
    ps_lanes_forget(l, "other", "e0"); /* another key's: nothing */
    ps_lanes_forget(l, "k", "e0");
    size_t b2[] = {1};
    ck_assert_uint_eq(admit(l, b2, 1, &w), 1); /* e1 is the head now */
    ps_lanes_forget(l, "k", "e1");
    ck_assert_uint_eq(ps_lanes_count(l), 0);
    ps_lanes_free(l); /* and a lane left at the end is freed (ASan) */
    l = ps_lanes_new();
    ck_assert_int_eq(ps_lanes_settle(l, "k", ids, b1, 2, owed), 0);
    ck_assert_int_eq(ps_lanes_settle(l, "k2", ids, b1, 2, owed), 0);
    ck_assert_uint_eq(ps_lanes_count(l), 2);
    ps_lanes_free(l);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pubsub_lanes");
    TCase *t = tcase_create("lanes");
    tcase_add_test(t, no_lane_admits_everything_in_place);
    tcase_add_test(t, a_lane_goes_in_its_order_and_drains);
    tcase_add_test(t, a_message_given_up_on_leaves_its_lane);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
