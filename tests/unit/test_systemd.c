/*
 * test_systemd.c - the daemon under a fake systemd: a datagram socket named
 * by NOTIFY_SOCKET receives READY=1 once sources run, STOPPING=1 on
 * SIGTERM, WATCHDOG=1 pings when WATCHDOG_USEC is set and none while a
 * step holds a batch past half the interval; stderr named by
 * JOURNAL_STREAM gets <N>-prefixed lines. Also the built-in NOTIFY_SOCKET
 * sender (compiled into this test without libsystemd) on a path and an
 * abstract socket.
 */
#include "build_config.h"
#include "ops/sdnotify.h"
#include "testutil.h"

#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A datagram socket bound to `path` (or abstract "@name"). */
static int notify_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    memcpy(sa.sun_path, path, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    else
        len++;
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, len) == 0, "bind %s", path);
    return fd;
}

/* Next datagram within timeout_ms into buf; 0 on timeout. */
static int recv_msg(int fd, char *buf, size_t bufsz, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return 0;
    ssize_t n = recv(fd, buf, bufsz - 1, 0);
    if (n < 0)
        return 0;
    buf[n] = '\0';
    return 1;
}

/* Wait for a datagram containing `needle`; returns 1 if seen in time. */
static int wait_for(int fd, const char *needle, int timeout_ms)
{
    char buf[4096];
    int64_t end = now_ms() + timeout_ms;
    while (now_ms() < end)
        if (recv_msg(fd, buf, sizeof buf, (int)(end - now_ms())) && strstr(buf, needle))
            return 1;
    return 0;
}

typedef struct daemon_run {
    char *dir, *config, *sock, *errlog;
    int fd;
    pid_t pid;
} daemon_run;

/* Start syncbridge with config `cfg` (@D@ = scratch dir), NOTIFY_SOCKET and
 * the extra environment (NAME=VALUE, NULL-terminated), stderr to a file. */
static void start_daemon(daemon_run *d, const char *cfg, const char *const *env)
{
    memset(d, 0, sizeof *d);
    d->dir = tu_mkdtemp();
    char *text = tu_with_dir(cfg, d->dir);
    d->config = tu_write(d->dir, "syncbridge.json", text);
    free(text);
    if (asprintf(&d->sock, "%s/notify.sock", d->dir) < 0 || asprintf(&d->errlog, "%s/stderr.log", d->dir) < 0)
        ck_abort();
    d->fd = notify_socket(d->sock);
    char *bin = tu_build_path("syncbridge");
    int errfd = open(d->errlog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(errfd, 0);
    d->pid = fork();
    if (d->pid == 0) {
        dup2(errfd, 2);
        dup2(errfd, 1);
        setenv("NOTIFY_SOCKET", d->sock, 1);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execl(bin, bin, "-c", d->config, (char *)NULL);
        _exit(127);
    }
    close(errfd);
    free(bin);
}

static int stop_daemon(daemon_run *d, int sig)
{
    int status = 0;
    kill(d->pid, sig);
    waitpid(d->pid, &status, 0);
    close(d->fd);
    tu_rmrf(d->dir);
    free(d->dir);
    free(d->config);
    free(d->sock);
    free(d->errlog);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static const char *quick_cfg = "{\"state_dir\": \"@D@/state\","
                               " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 5, \"batch\": 5}},"
                               " \"sinks\": {\"out\": {\"plugin\": \"discard\"}},"
                               " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"out\"]}}}";

START_TEST(ready_then_stopping_on_sigterm)
{
    daemon_run d;
    start_daemon(&d, quick_cfg, NULL);
    char *log = NULL;
    int ready = wait_for(d.fd, "READY=1", 30000);
    if (!ready)
        log = tu_slurp(d.errlog);
    ck_assert_msg(ready, "no READY=1; stderr: %s", log ? log : "");
    kill(d.pid, SIGTERM);
    ck_assert_msg(wait_for(d.fd, "STOPPING=1", 30000), "no STOPPING=1 after SIGTERM");
    ck_assert_int_eq(stop_daemon(&d, 0), 0);
    free(log);
}
END_TEST

START_TEST(watchdog_pings_while_idle)
{
    static const char *const env[] = {"WATCHDOG_USEC=400000", NULL};
    daemon_run d;
    start_daemon(&d, quick_cfg, env);
    ck_assert(wait_for(d.fd, "READY=1", 30000));
    int pings = 0;
    char buf[4096];
    int64_t end = now_ms() + 2000;
    while (now_ms() < end)
        if (recv_msg(d.fd, buf, sizeof buf, (int)(end - now_ms())) && strstr(buf, "WATCHDOG=1"))
            pings++;
    /* every WATCHDOG_USEC/4 = 100 ms, within the 200 ms main-loop tick */
    ck_assert_msg(pings >= 5, "only %d WATCHDOG=1 pings in 2 s", pings);
    ck_assert_int_eq(stop_daemon(&d, SIGTERM), 0);
}
END_TEST

START_TEST(watchdog_withheld_while_a_step_stalls)
{
    /* the sink holds its batch 20 s; WatchdogSec 1 s: pings must stop
     * about 0.5 s after the batch was taken, so systemd would kill us */
    static const char *const env[] = {"WATCHDOG_USEC=1000000", NULL};
    daemon_run d;
    start_daemon(&d,
                 "{\"state_dir\": \"@D@/state\","
                 " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 3, \"batch\": 3}},"
                 " \"sinks\": {\"slow\": {\"plugin\": \"testsink\", \"delay\": \"20s\"}},"
                 " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"slow\"]}}}",
                 env);
    ck_assert(wait_for(d.fd, "READY=1", 30000));
    int64_t start = now_ms(), last_ping = -1;
    int stalled = 0;
    char buf[4096];
    while (now_ms() < start + 4000)
        if (recv_msg(d.fd, buf, sizeof buf, (int)(start + 4000 - now_ms()))) {
            if (strstr(buf, "WATCHDOG=1"))
                last_ping = now_ms() - start;
            if (strstr(buf, "STATUS=stalled"))
                stalled = 1;
        }
    ck_assert_msg(last_ping < 1500, "WATCHDOG=1 still sent %lld ms after READY while the step stalls",
                  (long long)last_ping);
    ck_assert_msg(stalled, "no STATUS=stalled");
    char *log = tu_slurp(d.errlog);
    ck_assert_msg(log && strstr(log, "withholding keep-alive"), "%s", log ? log : "");
    free(log);
    stop_daemon(&d, SIGKILL);
}
END_TEST

/* The waiting test's length: SB_WATCHDOG_WAIT_S seconds of waiting under
 * WatchdogSec=SB_WATCHDOG_SEC. make check runs 4 s under 1 s; make
 * check-long runs the case itself, 10 minutes under 30 s. */
static int64_t env_seconds(const char *name, int64_t dflt)
{
    const char *v = getenv(name);
    return v && atoll(v) > 0 ? atoll(v) : dflt;
}

/* ABI 2: a step that waits (WAIT, polled ten times a WatchdogSec, for four
 * times WatchdogSec or SB_WATCHDOG_WAIT_S) holds no worker, so keep-alive
 * pings never stop: a 10-minute DAG run under WatchdogSec=30s, scaled down
 * unless make check-long runs it. */
START_TEST(watchdog_fed_while_a_step_waits)
{
    int64_t wd_ms = env_seconds("SB_WATCHDOG_SEC", 1) * 1000, wait_ms = env_seconds("SB_WATCHDOG_WAIT_S", 4) * 1000;
    int64_t poll_ms = wd_ms / 10;
    char wd_env[64], cfg[1024];
    snprintf(wd_env, sizeof wd_env, "WATCHDOG_USEC=%lld", (long long)wd_ms * 1000);
    const char *const env[] = {wd_env, NULL};
    snprintf(cfg, sizeof cfg,
             "{\"state_dir\": \"@D@/state\","
             " \"sources\": {\"src\": {\"plugin\": \"testsrc\", \"count\": 3, \"batch\": 3}},"
             " \"sinks\": {\"dag\": {\"plugin\": \"testsink\", \"wait_polls\": %lld, \"wait_ms\": \"%lldms\","
             "                      \"retry\": {\"max_attempts\": 1}}},"
             " \"routes\": {\"r\": {\"sources\": [\"src\"], \"steps\": [\"dag\"]}}}",
             (long long)(wait_ms / poll_ms), (long long)poll_ms);
    daemon_run d;
    start_daemon(&d, cfg, env);
    ck_assert(wait_for(d.fd, "READY=1", 30000));
    int64_t start = now_ms(), last_ping = -1, longest_gap = 0;
    int stalled = 0;
    char buf[4096];
    while (now_ms() < start + wait_ms)
        if (recv_msg(d.fd, buf, sizeof buf, (int)(start + wait_ms - now_ms()))) {
            if (strstr(buf, "WATCHDOG=1")) {
                int64_t t = now_ms() - start;
                if (t - (last_ping < 0 ? 0 : last_ping) > longest_gap)
                    longest_gap = t - (last_ping < 0 ? 0 : last_ping);
                last_ping = t;
            }
            if (strstr(buf, "STATUS=stalled"))
                stalled = 1;
        }
    ck_assert_msg(last_ping > wait_ms - wd_ms / 2, "the last WATCHDOG=1 came %lld ms after READY", (long long)last_ping);
    ck_assert_msg(longest_gap < wd_ms / 2, "%lld ms without WATCHDOG=1 while a step waits", (long long)longest_gap);
    ck_assert_msg(!stalled, "STATUS=stalled while a step only waits");
    ck_assert_int_eq(stop_daemon(&d, SIGTERM), 0);
}
END_TEST

START_TEST(journal_stream_gets_priority_prefixes)
{
    /* the child's stderr is a file; JOURNAL_STREAM names its device:inode
     * as systemd does for StandardError=journal */
    static char env_js[128];
    struct stat sb;
    daemon_run j;
    memset(&j, 0, sizeof j);
    j.dir = tu_mkdtemp();
    char *text = tu_with_dir(quick_cfg, j.dir);
    j.config = tu_write(j.dir, "syncbridge.json", text);
    free(text);
    if (asprintf(&j.sock, "%s/notify.sock", j.dir) < 0 || asprintf(&j.errlog, "%s/stderr.log", j.dir) < 0)
        ck_abort();
    j.fd = notify_socket(j.sock);
    int errfd = open(j.errlog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(errfd, 0);
    ck_assert_int_eq(fstat(errfd, &sb), 0);
    snprintf(env_js, sizeof env_js, "JOURNAL_STREAM=%llu:%llu", (unsigned long long)sb.st_dev,
             (unsigned long long)sb.st_ino);
    char *bin = tu_build_path("syncbridge");
    j.pid = fork();
    if (j.pid == 0) {
        dup2(errfd, 2);
        setenv("NOTIFY_SOCKET", j.sock, 1);
        putenv(env_js);
        execl(bin, bin, "-c", j.config, (char *)NULL);
        _exit(127);
    }
    close(errfd);
    free(bin);
    ck_assert(wait_for(j.fd, "READY=1", 30000));
    char *log = tu_slurp(j.errlog);
    ck_assert_msg(log && strstr(log, "<6>syncbridge ") && !strstr(log, "Z info"), "journal lines expected: %s",
                  log ? log : "");
    free(log);
    ck_assert_int_eq(stop_daemon(&j, SIGTERM), 0);
}
END_TEST

/* The built-in sender (this test compiles sdnotify.c without libsystemd). */
START_TEST(builtin_sender_path_and_abstract)
{
    char *dir = tu_mkdtemp();
    char path[512], buf[256], abstract[64];
    snprintf(path, sizeof path, "%s/n.sock", dir);
    int fd = notify_socket(path);
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(sb_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(sb_notify("READY=1\nSTATUS=x"), 1);
    ck_assert(recv_msg(fd, buf, sizeof buf, 2000));
    ck_assert_str_eq(buf, "READY=1\nSTATUS=x");
    close(fd);

    snprintf(abstract, sizeof abstract, "@sb-test-%d", (int)getpid());
    fd = notify_socket(abstract);
    setenv("NOTIFY_SOCKET", abstract, 1);
    ck_assert_int_eq(sb_notifyf("STATUS=%d in", 42), 1);
    ck_assert(recv_msg(fd, buf, sizeof buf, 2000));
    ck_assert_str_eq(buf, "STATUS=42 in");
    close(fd);

    setenv("NOTIFY_SOCKET", "relative/path", 1);
    ck_assert_int_eq(sb_notify("READY=1"), -1);
    unsetenv("NOTIFY_SOCKET");

    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_int_eq(sb_notify_watchdog_usec(), 30000000);
    setenv("WATCHDOG_PID", "1", 1); /* someone else's */
    ck_assert_int_eq(sb_notify_watchdog_usec(), 0);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(sb_notify_watchdog_usec(), 30000000);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    ck_assert_int_eq(sb_notify_watchdog_usec(), 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("systemd");
    TCase *tc = tcase_create("systemd");
    tcase_set_timeout(tc, 120 + (double)env_seconds("SB_WATCHDOG_WAIT_S", 4));
    tcase_add_test(tc, builtin_sender_path_and_abstract);
    tcase_add_test(tc, ready_then_stopping_on_sigterm);
    tcase_add_test(tc, watchdog_pings_while_idle);
    tcase_add_test(tc, watchdog_withheld_while_a_step_stalls);
    tcase_add_test(tc, watchdog_fed_while_a_step_waits);
    tcase_add_test(tc, journal_stream_gets_priority_prefixes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
