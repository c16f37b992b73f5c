/* fuzz_admin.c - the admin endpoint's request handling: each input is sent
 * as raw bytes on a fresh connection to a running endpoint (with a ledger,
 * so /api/runs parses its query), and the reply is read to the end. The
 * server must answer or close, never crash or hang. */
#include "build_config.h"
#include "ledger/ledger.h"
#include "ops/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static sb_admin *admin;
static int port;

static void start(void)
{
    char dir[] = "/tmp/fuzz_admin_XXXXXX", err[512];
    if (!mkdtemp(dir))
        abort();
    sb_ledger_opts lo = {.commit_interval_ms = 1, .retention_ms = 3600000};
    sb_ledger *l = sb_ledger_open(dir, &lo, err, sizeof err); /* kept for the process's life */
    if (!l) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    sb_admin_opts o = {.bind = "127.0.0.1", .port = 0, .ledger = l, .state_dir = dir};
    admin = sb_admin_start(&o, err, sizeof err);
    if (!admin) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    port = sb_admin_port(admin);
}

/* libFuzzer's -timeout arms a SIGALRM every second, so a blocking call can
 * return EINTR: that is the harness's business, never a verdict on the
 * server. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* poll one event until it comes or deadline_ms passes: 1, 0 on timeout */
static int wait_for(int fd, short events, int64_t deadline_ms, short *revents)
{
    for (;;) {
        int64_t left = deadline_ms - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("fuzz_admin: poll");
            abort();
        }
        *revents = p.revents;
        return n;
    }
}

static int connect_endpoint(void)
{
    /* Thousands of connections a second leave the client's side of each in
     * TIME_WAIT for a minute; from one address that could use up the
     * ephemeral ports. Each connection comes from the next of 65,536
     * loopback addresses instead (where the system allows it). */
    static uint32_t next_src;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("fuzz_admin: socket");
        abort();
    }
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f010000u | (next_src++ & 0xffffu));
    (void)bind(fd, (struct sockaddr *)&src, sizeof src); /* else the kernel picks */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        short rev = 0;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (errno != EINPROGRESS || wait_for(fd, POLLOUT, now_ms() + 15000, &rev) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            fprintf(stderr, "fuzz_admin: cannot connect to the endpoint: %s\n", strerror(soerr ? soerr : errno));
            abort();
        }
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!admin)
        start();
    int fd = connect_endpoint();
    int64_t deadline = now_ms() + 15000; /* the endpoint's own timeouts bound this */
    size_t off = 0;
    short rev = 0;
    while (off < size) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR) && wait_for(fd, POLLOUT, deadline, &rev) == 1)
            continue;
        break; /* the server may close early on a bad request */
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            break; /* closed, or reset by the server */
        if (r > 0)
            continue;
        if (wait_for(fd, POLLIN, deadline, &rev) == 0) {
            fprintf(stderr, "fuzz_admin: no reply and no close within 15 s\n");
            abort();
        }
    }
    close(fd);
    return 0;
}
