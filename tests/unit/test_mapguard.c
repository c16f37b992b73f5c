/* test_mapguard.c - gcs_copy's guard for reading mapped files: a file
 * truncated under its mapping makes the guarded copy return -1
 * instead of killing the process, on several threads at once, and a SIGBUS
 * outside a guard still ends the process. */
#include "../../plugins/gcs_copy/mapguard.h"

#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A file of `pages` pages of 'x', mapped whole, then truncated to `keep`
 * pages: the pages past `keep` fault on access. */
static unsigned char *shrunk_map(size_t pages, size_t keep, size_t *pg)
{
    *pg = (size_t)sysconf(_SC_PAGESIZE);
    char path[] = "/tmp/sbmapguard.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    unsigned char *buf = malloc(pages * *pg);
    memset(buf, 'x', pages * *pg);
    ck_assert_int_eq(write(fd, buf, pages * *pg), (ssize_t)(pages * *pg));
    free(buf);
    unsigned char *m = mmap(NULL, pages * *pg, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    ck_assert_int_eq(ftruncate(fd, (off_t)(keep * *pg)), 0);
    close(fd);
    return m;
}

START_TEST(a_shrunk_file_is_an_error_not_a_crash)
{
    ck_assert_int_eq(mapguard_init(), 0);
    size_t pg;
    unsigned char *m = shrunk_map(3, 1, &pg);
    unsigned char *dst = malloc(3 * pg);
    ck_assert_int_eq(mapguard_copy(dst, m, pg), 0); /* the page still in the file */
    ck_assert_int_eq(dst[pg - 1], 'x');
    ck_assert_int_eq(mapguard_copy(dst, m, 3 * pg), -1);
    /* the guard is armed again after a fault */
    ck_assert_int_eq(mapguard_copy(dst, m, pg), 0);
    ck_assert_int_eq(dst[0], 'x');
    ck_assert_int_eq(mapguard_copy(dst, m + 2 * pg, 16), -1);
    munmap(m, 3 * pg);
    free(dst);
}
END_TEST

static unsigned char *shared_map;
static size_t shared_pg;

static void *fault_many(void *arg)
{
    (void)arg;
    unsigned char buf[64];
    long faults = 0;
    for (int i = 0; i < 200; i++) {
        faults += mapguard_copy(buf, shared_map + shared_pg + (size_t)i, sizeof buf) != 0;
        faults += mapguard_copy(buf, shared_map, sizeof buf) != 0 ? 1000 : 0; /* must never fault */
    }
    return (void *)faults;
}

START_TEST(each_thread_has_its_own_guard)
{
    ck_assert_int_eq(mapguard_init(), 0);
    shared_map = shrunk_map(2, 1, &shared_pg);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, fault_many, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        ck_assert_int_eq((long)r, 200);
    }
    munmap(shared_map, 2 * shared_pg);
}
END_TEST

START_TEST(a_fault_outside_a_guard_still_ends_the_process)
{
    ck_assert_int_eq(mapguard_init(), 0);
    size_t pg;
    unsigned char *m = shrunk_map(2, 1, &pg);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        volatile unsigned char c = m[pg]; /* unguarded */
        (void)c;
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    /* killed by SIGBUS, or (under ASan, whose handler was there before) an
     * error exit after its report: anything but a normal end */
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "the child survived an unguarded SIGBUS");
    munmap(m, 2 * pg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mapguard");
    TCase *t = tcase_create("mapguard");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, a_shrunk_file_is_an_error_not_a_crash);
    tcase_add_test(t, each_thread_has_its_own_guard);
    tcase_add_test(t, a_fault_outside_a_guard_still_ends_the_process);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_set_fork_status(r, CK_NOFORK);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
