/* test_gcs_parts.c - gcs_copy's part size: the configured size while it
 * needs at most 10,000 parts, else grown in whole MiB; 0 past 5 TiB. */
#include "../../plugins/gcs_copy/parts.h"

#include <check.h>
#include <stdlib.h>

#define MIB (1ULL << 20)

START_TEST(test_part_size)
{
    uint64_t want = 16 * MIB;
    ck_assert_uint_eq(gcs_part_size(1, want), want);
    ck_assert_uint_eq(gcs_part_size(want * GCS_MAX_PARTS, want), want);
    /* one byte more needs a larger part: the next whole MiB */
    ck_assert_uint_eq(gcs_part_size(want * GCS_MAX_PARTS + 1, want), 17 * MIB);
    uint64_t sizes[] = {want * GCS_MAX_PARTS + 1, 200ULL << 30, 1ULL << 40, GCS_MAX_OBJECT_SIZE - 1,
                        GCS_MAX_OBJECT_SIZE};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint64_t ps = gcs_part_size(sizes[i], want);
        ck_assert_uint_ge(ps, want);
        ck_assert_uint_eq(ps % MIB, 0);
        ck_assert_uint_le(ps, GCS_MAX_PART_SIZE);
        ck_assert_uint_le((sizes[i] + ps - 1) / ps, GCS_MAX_PARTS);
    }
    /* a configured size above what is needed stays */
    ck_assert_uint_eq(gcs_part_size(1ULL << 40, 1ULL << 30), 1ULL << 30);
    /* past Cloud Storage's object limit */
    ck_assert_uint_eq(gcs_part_size(GCS_MAX_OBJECT_SIZE + 1, want), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gcs_parts");
    TCase *t = tcase_create("gcs_parts");
    tcase_add_test(t, test_part_size);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
