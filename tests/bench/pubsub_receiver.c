/*
 * pubsub_receiver - a loopback HTTP/1.1 receiver for the → HTTP benchmark
 * (issue 19, tests/bench/bench_core.py). Not a fake of Pub/Sub: it checks
 * nothing, it only answers fast and counts.
 *
 *   POST .../topics/T:publish   {"messageIds":["1",...]}, one id per message
 *   any other POST              200 {} (Fluent Bit's http output)
 *   GET /count                  the records received so far, as decimal text
 *   GET /requests               the POSTs received so far (records per request
 *                               show how full the client's batches were)
 *
 * Records are counted in each body: the items of Pub/Sub's "messages"
 * array, the items of a top-level JSON array (Fluent Bit's `format json`)
 * and the top-level objects of JSON lines (`format json_lines`).
 *
 * One thread, poll(), keep-alive, Content-Length bodies (no chunked
 * encoding: neither client sends it). Usage: pubsub_receiver [PORT
 * [DELAY_MS]]; it prints "port N" on stdout once listening (0 or no PORT:
 * any free port). DELAY_MS holds each answer that long, as a round trip to
 * Pub/Sub would (the connection's, so requests on other connections go
 * on meanwhile).
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <fcntl.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256

typedef struct conn {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int64_t due_ms; /* with DELAY_MS: when the pending answer may go */
} conn;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static conn conns[MAX_CONNS];
static size_t nconns;
static uint64_t records, requests, next_id = 1;

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        perror("realloc");
        exit(1);
    }
    return p;
}

static void out_put(conn *c, const char *s, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        while (c->out_len + n > c->out_cap)
            c->out_cap = c->out_cap ? c->out_cap * 2 : 65536;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

/* Count the records in a body (see the top of the file). In a publish
 * request, each object in the array inside the top-level object (depth 2:
 * {"messages":[...]}); else each object opening at depth 0 (JSON lines) or
 * as an item of a top-level array (depth 1). */
static uint64_t count_records(const char *b, size_t n, int publish)
{
    char stack[3] = {0};
    int depth = 0, in_str = 0;
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        switch (ch) {
        case '"':
            in_str = 1;
            break;
        case '{':
        case '[':
            if (ch == '{' && (publish ? depth == 2 && stack[0] == '{' && stack[1] == '['
                                      : depth == 0 || (depth == 1 && stack[0] == '[')))
                k++;
            if (depth < 3)
                stack[depth] = ch;
            depth++;
            break;
        case '}':
        case ']':
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
    }
    return k;
}

static void respond(conn *c, const char *body, size_t len, const char *ctype)
{
    char head[256];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", ctype, len);
    out_put(c, head, (size_t)h);
    out_put(c, body, len);
}

static char *ids;
static size_t ids_cap;

static void handle(conn *c, const char *method, const char *path, const char *body, size_t blen)
{
    if (strcmp(method, "GET") == 0) {
        char num[32];
        int n = snprintf(num, sizeof num, "%llu",
                         (unsigned long long)(strcmp(path, "/requests") == 0 ? requests : records));
        respond(c, num, (size_t)n, "text/plain");
        return;
    }
    requests++;
    int publish = strstr(path, ":publish") != NULL;
    uint64_t k = count_records(body, blen, publish);
    records += k;
    if (!publish) {
        respond(c, "{}", 2, "application/json");
        return;
    }
    size_t need = 32 + k * 24, len = 0;
    if (need > ids_cap)
        ids = xrealloc(ids, ids_cap = need);
    len += (size_t)sprintf(ids, "{\"messageIds\":[");
    for (uint64_t i = 0; i < k; i++)
        len += (size_t)sprintf(ids + len, "%s\"%llu\"", i ? "," : "", (unsigned long long)next_id++);
    len += (size_t)sprintf(ids + len, "]}");
    respond(c, ids, len, "application/json");
}

/* Handle every complete request in c->in. -1: close the connection. */
static int parse(conn *c)
{
    size_t off = 0;
    for (;;) {
        char *start = c->in + off;
        size_t avail = c->in_len - off;
        char *end = memmem(start, avail, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t hlen = (size_t)(end - start) + 4;
        size_t clen = 0;
        char method[16] = "", path[1024] = "";
        if (sscanf(start, "%15s %1023s", method, path) != 2)
            return -1;
        for (char *l = memchr(start, '\n', hlen); l && l < end; l = memchr(l + 1, '\n', (size_t)(end - l))) {
            if (strncasecmp(l + 1, "Content-Length:", 15) == 0)
                clen = strtoul(l + 16, NULL, 10);
            else if (strncasecmp(l + 1, "Transfer-Encoding:", 18) == 0)
                return -1; /* chunked: not supported, see the top */
        }
        if (avail < hlen + clen)
            break;
        handle(c, method, path, start + hlen, clen);
        off += hlen + clen;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return 0;
}

static void drop(size_t i)
{
    close(conns[i].fd);
    free(conns[i].in);
    free(conns[i].out);
    conns[i] = conns[--nconns];
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? (uint16_t)atoi(argv[1]) : 0),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 64) != 0) {
        perror("bind/listen");
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    int64_t delay = argc > 2 ? atoll(argv[2]) : 0;
    struct pollfd pf[MAX_CONNS + 1];
    for (;;) {
        pf[0] = (struct pollfd){.fd = ls, .events = POLLIN};
        int64_t now = now_ms(), wait = -1;
        for (size_t i = 0; i < nconns; i++) {
            conn *c = &conns[i];
            short ev = POLLIN;
            if (c->out_len > c->out_off) {
                ev = c->due_ms <= now ? POLLOUT : 0; /* held: nothing to read meanwhile (one request at a time) */
                if (c->due_ms > now && (wait < 0 || c->due_ms - now < wait))
                    wait = c->due_ms - now;
            }
            pf[i + 1] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        if (poll(pf, nconns + 1, (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        /* back to front, so drop() (which moves the last one here) is safe */
        for (size_t i = nconns; i-- > 0;) {
            conn *c = &conns[i];
            short re = pf[i + 1].revents;
            if (!re)
                continue;
            if (re & POLLOUT) {
                ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    drop(i);
                    continue;
                }
                if (w > 0 && (c->out_off += (size_t)w) == c->out_len)
                    c->out_off = c->out_len = 0;
                continue;
            }
            if (c->in_cap - c->in_len < 65536)
                c->in = xrealloc(c->in, c->in_cap = c->in_cap * 2 + 65536);
            ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                drop(i);
                continue;
            }
            c->in_len += (size_t)r;
            if (parse(c) != 0) {
                drop(i);
                continue;
            }
            if (c->out_len && delay > 0) {
                c->due_ms = now_ms() + delay;
            } else if (c->out_len) { /* answer at once; poll only if the socket is full */
                ssize_t w = write(c->fd, c->out, c->out_len);
                if (w > 0 && (c->out_off = (size_t)w) == c->out_len)
                    c->out_off = c->out_len = 0;
            }
        }
        if (pf[0].revents & POLLIN) {
            int fd = accept(ls, NULL, NULL);
            if (fd >= 0 && nconns < MAX_CONNS) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                conns[nconns++] = (conn){.fd = fd};
            } else if (fd >= 0) {
                close(fd);
            }
        }
    }
}
