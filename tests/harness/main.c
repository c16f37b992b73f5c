/* main.c - the one main() of the plugin tests built on the harness: each
 * test file defines sbh_suite() (harness.mk). */
#include <check.h>
#include <stdlib.h>

Suite *sbh_suite(void);

int main(void)
{
    SRunner *sr = srunner_create(sbh_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
