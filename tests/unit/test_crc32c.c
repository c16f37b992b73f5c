/* test_crc32c.c - gcs_copy's CRC-32C: published vectors (RFC 3720 B.4,
 * the "123456789" check value, Cloud Storage's base64 of the empty object),
 * hardware = table on random data at every alignment and length, and
 * combine() agreeing with one pass over the concatenation. */
#include "../../plugins/gcs_copy/crc32c.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static void vectors(crc_fn f)
{
    unsigned char b[32];
    ck_assert_uint_eq(f(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(f(0, "", 0), 0);
    memset(b, 0, sizeof b);
    ck_assert_uint_eq(f(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof b);
    ck_assert_uint_eq(f(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    ck_assert_uint_eq(f(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    ck_assert_uint_eq(f(0, b, 32), 0x113FDB5Cu);
    /* incremental == one pass */
    ck_assert_uint_eq(f(f(0, "1234", 4), "56789", 5), 0xE3069283u);
}

START_TEST(test_vectors_sw)
{
    vectors(crc32c_sw);
}
END_TEST

START_TEST(test_vectors_hw)
{
    if (!crc32c_hw_available())
        return; /* the table version is what runs there */
    vectors(crc32c_hw);
}
END_TEST

START_TEST(test_hw_equals_sw_random)
{
    size_t n = 3 * 8192 * 2 + 3 * 256 + 1000;
    unsigned char *b = malloc(n + 8);
    unsigned s = 12345;
    for (size_t i = 0; i < n + 8; i++) {
        s = s * 1103515245u + 12345u;
        b[i] = (unsigned char)(s >> 16);
    }
    size_t lens[] = {0, 1, 7, 8, 255, 256, 767, 768, 769, 8191, 3 * 8192, 3 * 8192 + 5, n};
    for (size_t off = 0; off < 8; off++)
        for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
            uint32_t sw = crc32c_sw(0x1234567u, b + off, lens[k]);
            ck_assert_uint_eq(crc32c(0x1234567u, b + off, lens[k]), sw);
            if (crc32c_hw_available())
                ck_assert_uint_eq(crc32c_hw(0x1234567u, b + off, lens[k]), sw);
        }
    free(b);
}
END_TEST

START_TEST(test_combine)
{
    unsigned char b[100000];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (unsigned char)(i * 7 + (i >> 9));
    uint32_t whole = crc32c(0, b, sizeof b);
    size_t cuts[] = {0, 1, 5, 4096, 50000, 99999, 100000};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        size_t c = cuts[k];
        uint32_t a = crc32c(0, b, c), z = crc32c(0, b + c, sizeof b - c);
        ck_assert_uint_eq(crc32c_combine(a, z, sizeof b - c), whole);
    }
    /* three parts, as a multipart upload combines them */
    uint32_t p1 = crc32c(0, b, 30000), p2 = crc32c(0, b + 30000, 30000), p3 = crc32c(0, b + 60000, 40000);
    ck_assert_uint_eq(crc32c_combine(crc32c_combine(p1, p2, 30000), p3, 40000), whole);
}
END_TEST

START_TEST(test_base64)
{
    char s[9];
    uint32_t v;
    crc32c_b64(0, s);
    ck_assert_str_eq(s, "AAAAAA==");
    crc32c_b64(crc32c(0, "hello world", 11), s); /* gsutil hash: yZRlqg== */
    ck_assert_str_eq(s, "yZRlqg==");
    ck_assert_int_eq(crc32c_from_b64("yZRlqg==", &v), 0);
    ck_assert_uint_eq(v, crc32c(0, "hello world", 11));
    ck_assert_int_eq(crc32c_from_b64("yZRlqg=", &v), -1);
    ck_assert_int_eq(crc32c_from_b64("yZRlq?==", &v), -1);
    ck_assert_int_eq(crc32c_from_b64("yZRlqh==", &v), -1); /* stray low bits */
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("crc32c");
    TCase *t = tcase_create("crc32c");
    tcase_add_test(t, test_vectors_sw);
    tcase_add_test(t, test_vectors_hw);
    tcase_add_test(t, test_hw_equals_sw_random);
    tcase_add_test(t, test_combine);
    tcase_add_test(t, test_base64);
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
