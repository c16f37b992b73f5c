/* admin.c - the HTTP admin endpoint on libmicrohttpd (see admin.h).
 *
 * Why a library: an admin port faces whatever can reach it, and HTTP/1.1
 * parsing (request smuggling, slow clients, keep-alive, chunking, header
 * limits) is where hand-written servers get it wrong; libmicrohttpd is
 * small, packaged on every target distribution, and handles connection
 * limits and timeouts for us. */
#include "build_config.h"
#include "ops/admin.h"
#include "ledger/ledger.h"
#include "log/log_internal.h"
#include "ops/metrics.h"
#include "engine/router.h"
#include "engine/router_ops.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SB_WITH_ADMIN
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <microhttpd.h>

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

#define DEFAULT_STUCK_US (300 * 1000000LL)
#define MIN_FREE_BYTES (1024 * 1024LL)

/* Connection flood (many clients that connect and send nothing, send a
 * byte at a time, or hold a kept-alive connection). Every connection has
 * CONN_TIMEOUT_S of inactivity at most. Above CONN_SOFT_LIMIT open
 * connections, each new one closes the oldest that is not in the middle of
 * a request, so a flood of idle connections never locks out a probe that
 * asks at once (/healthz), and a slow client is bounded by the pace of new
 * connections as well as by the timeout. CONN_HARD_LIMIT (descriptors) is
 * libmicrohttpd's own cap. */
#define CONN_SOFT_LIMIT 64
#define CONN_HARD_LIMIT 512
#define CONN_TIMEOUT_S 10
/* Warnings of the endpoint (its own and libmicrohttpd's): one line per
 * interval, saying how many were held back. */
#define WARN_INTERVAL_US (10 * 1000000LL)

/* One open connection, oldest first in sb_admin.conns. */
typedef struct conn {
    struct conn *prev, *next;
    int fd;
    int busy;      /* a request is being answered: never evicted */
    int evicted;
} conn;

struct sb_admin {
    struct MHD_Daemon *mhd;
    int port;
    sb_ledger *ledger;
    char *state_dir;
    int64_t stuck_after_us;
    pthread_rwlock_t lock; /* guards router: read by requests, written by set_router */
    sb_router *router;
    /* Touched only by libmicrohttpd's one internal thread (connection
     * notifications, requests and its log all run there). */
    conn *conns_head, *conns_tail;
    size_t n_conns;
    int64_t warn_at_us;      /* when the last warning line was written */
    unsigned long warn_held; /* warnings held back since */
    unsigned long evicted;   /* idle connections closed since the last line about it */
};

static void admin_warn(sb_admin *a, const char *msg)
{
    int64_t now = sb_mono_us();
    if (a->warn_at_us && now - a->warn_at_us < WARN_INTERVAL_US) {
        a->warn_held++;
        return;
    }
    if (a->warn_held)
        sb_log(NULL, SB_LOG_WARN, "admin: %s (and %lu more warnings in the last %lld s)", msg, a->warn_held,
               (long long)((now - a->warn_at_us) / 1000000));
    else
        sb_log(NULL, SB_LOG_WARN, "admin: %s", msg);
    a->warn_at_us = now;
    a->warn_held = 0;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    sb_admin *a = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn *k = *socket_context;
        if (!k)
            return;
        if (k->prev)
            k->prev->next = k->next;
        else
            a->conns_head = k->next;
        if (k->next)
            k->next->prev = k->prev;
        else
            a->conns_tail = k->prev;
        a->n_conns--;
        free(k);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn *k = sb_xcalloc(1, sizeof *k);
    k->fd = info ? info->connect_fd : -1;
    k->prev = a->conns_tail;
    if (a->conns_tail)
        a->conns_tail->next = k;
    else
        a->conns_head = k;
    a->conns_tail = k;
    a->n_conns++;
    *socket_context = k;
    if (a->n_conns <= CONN_SOFT_LIMIT)
        return;
    /* make room: the oldest connection not answering a request */
    for (conn *o = a->conns_head; o && o != k; o = o->next) {
        if (o->busy || o->evicted || o->fd < 0)
            continue;
        shutdown(o->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
        o->evicted = 1;
        a->evicted++;
        char msg[160];
        snprintf(msg, sizeof msg,
                 "over %d connections: closing the oldest idle ones to keep room (%lu so far; a connection flood?)",
                 CONN_SOFT_LIMIT, a->evicted);
        admin_warn(a, msg);
        break;
    }
}

static mhd_result reply(struct MHD_Connection *c, unsigned status, const char *ctype, char *body, size_t len)
{
    /* body is malloc'd and handed over */
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    mhd_result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static mhd_result reply_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return MHD_NO;
    size_t n = strlen(s);
    /* add a newline for curl users; json_dumps output is malloc'd */
    char *body = sb_xrealloc(s, n + 2);
    body[n] = '\n';
    body[n + 1] = '\0';
    return reply(c, status, "application/json", body, n + 1);
}

static mhd_result reply_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return reply_json(c, status, json_pack("{s:s}", "error", msg));
}

/* Why the ledger cannot take writes, or NULL. */
static const char *ledger_unwritable(sb_admin *a, char *buf, size_t bufsz)
{
    if (!a->state_dir)
        return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/ledger.db", a->state_dir);
    if (access(a->state_dir, W_OK) != 0 || access(path, W_OK) != 0) {
        snprintf(buf, bufsz, "ledger %s is not writable: %s", path, strerror(errno));
        return buf;
    }
    struct statvfs vfs;
    if (statvfs(a->state_dir, &vfs) == 0 && (long long)vfs.f_bavail * (long long)vfs.f_frsize < MIN_FREE_BYTES) {
        snprintf(buf, bufsz, "ledger file system of %s is full", a->state_dir);
        return buf;
    }
    return NULL;
}

static mhd_result h_readyz(sb_admin *a, struct MHD_Connection *c)
{
    json_t *reasons = json_array();
    char buf[4600];
    pthread_rwlock_rdlock(&a->lock);
    if (!a->router) {
        json_array_append_new(reasons, json_string("no configuration loaded (starting or reloading)"));
    } else {
        sb_router_health h;
        sb_router_health_get(a->router, sb_mono_us(), &h);
        if (h.sources_alive < h.sources_total) {
            snprintf(buf, sizeof buf, "%d of %d sources running", h.sources_alive, h.sources_total);
            json_array_append_new(reasons, json_string(buf));
        }
        if (h.oldest_busy_us > a->stuck_after_us) {
            snprintf(buf, sizeof buf, "route %s step %d: a worker has held its batch for %lld s (deadline %lld s)",
                     h.oldest_route, h.oldest_step, (long long)(h.oldest_busy_us / 1000000),
                     (long long)(a->stuck_after_us / 1000000));
            json_array_append_new(reasons, json_string(buf));
        }
    }
    pthread_rwlock_unlock(&a->lock);
    const char *why = ledger_unwritable(a, buf, sizeof buf);
    if (why)
        json_array_append_new(reasons, json_string(why));
    if (json_array_size(reasons) == 0) {
        json_decref(reasons);
        return reply_json(c, MHD_HTTP_OK, json_pack("{s:b}", "ready", 1));
    }
    return reply_json(c, MHD_HTTP_SERVICE_UNAVAILABLE, json_pack("{s:b,s:o}", "ready", 0, "reasons", reasons));
}

static mhd_result h_metrics(sb_admin *a, struct MHD_Connection *c)
{
    size_t len;
    pthread_rwlock_rdlock(&a->lock);
    char *text = sb_metrics_render(a->router, a->ledger, a->state_dir, &len);
    pthread_rwlock_unlock(&a->lock);
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static mhd_result h_runs(sb_admin *a, struct MHD_Connection *c)
{
    if (!a->ledger)
        return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no ledger");
    sb_ledger_filter f = {.state = -1};
    const char *v;
    long long n;
    f.route = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "route");
    f.source = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "source");
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "table"))) {
        f.field_eq_name = "table";
        f.field_eq_value = v;
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "status"))) {
        if (strcmp(v, "pending") == 0)
            f.state = SB_ENTRY_PENDING;
        else if (strcmp(v, "done") == 0)
            f.state = SB_ENTRY_DONE;
        else if (strcmp(v, "dead") == 0)
            f.state = SB_ENTRY_DEAD;
        else
            return reply_error(c, MHD_HTTP_BAD_REQUEST, "status must be pending, done or dead");
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since"))) {
        if (parse_int(v, 0, 4102444800LL, &n) != 0)
            return reply_error(c, MHD_HTTP_BAD_REQUEST, "since must be epoch seconds");
        f.since_us = n * 1000000LL;
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"))) {
        if (parse_int(v, 1, 10000, &n) != 0)
            return reply_error(c, MHD_HTTP_BAD_REQUEST, "limit must be an integer from 1 to 10000");
        f.limit = (size_t)n;
    }
    char err[1024];
    json_t *runs = sb_ledger_list(a->ledger, &f, err, sizeof err);
    if (!runs)
        return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    return reply_json(c, MHD_HTTP_OK, runs);
}

static mhd_result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_size, void **state)
{
    sb_admin *a = cls;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci && ci->socket_context)
        ((conn *)ci->socket_context)->busy = 1;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD");
    if (*upload_size) { /* a GET with a body: ignore it */
        *upload_size = 0;
        return MHD_YES;
    }
    sb_log(NULL, SB_LOG_DEBUG, "admin: %s %s", method, url);
    if (strcmp(url, "/healthz") == 0)
        return reply(c, MHD_HTTP_OK, "text/plain; charset=utf-8", sb_strdup("ok\n"), 3);
    if (strcmp(url, "/readyz") == 0)
        return h_readyz(a, c);
    if (strcmp(url, "/metrics") == 0)
        return h_metrics(a, c);
    if (strcmp(url, "/api/runs") == 0)
        return h_runs(a, c);
    return reply_error(c, MHD_HTTP_NOT_FOUND, "not found: try /healthz /readyz /metrics /api/runs");
}

/* The request's answer is sent (or the request was abandoned): the
 * connection may idle again, and then be closed to make room. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_state, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)req_state;
    (void)toe;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci && ci->socket_context)
        ((conn *)ci->socket_context)->busy = 0;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    admin_warn(cls, msg);
}

sb_admin *sb_admin_start(const sb_admin_opts *o, char *errstr, size_t errstr_size)
{
    const char *bind = o->bind && *o->bind ? o->bind : "127.0.0.1";
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int gai = getaddrinfo(bind, port, &hints, &ai);
    if (gai != 0) {
        sb_err(errstr, errstr_size, "admin.bind %s: %s", bind, gai_strerror(gai));
        return NULL;
    }
    sb_admin *a = sb_xcalloc(1, sizeof *a);
    a->ledger = o->ledger;
    a->state_dir = sb_strdup(o->state_dir);
    a->stuck_after_us = o->stuck_after_us > 0 ? o->stuck_after_us : DEFAULT_STUCK_US;
    pthread_rwlock_init(&a->lock, NULL);
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    a->mhd = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, a,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, a, /* first, so every message goes to our log */
                              MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_HARD_LIMIT,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                              MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!a->mhd) {
        sb_err(errstr, errstr_size, "admin endpoint %s:%d: cannot listen%s%s", bind, o->port, errno ? ": " : "",
               errno ? strerror(errno) : "");
        sb_admin_stop(a);
        return NULL;
    }
    /* the port actually bound (port 0 = ephemeral) */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    a->port = o->port;
    if (info && getsockname(info->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
    return a;
}

int sb_admin_port(const sb_admin *a)
{
    return a->port;
}

void sb_admin_set_router(sb_admin *a, sb_router *r)
{
    if (!a)
        return;
    pthread_rwlock_wrlock(&a->lock);
    a->router = r;
    pthread_rwlock_unlock(&a->lock);
}

void sb_admin_stop(sb_admin *a)
{
    if (!a)
        return;
    if (a->mhd)
        MHD_stop_daemon(a->mhd);
    pthread_rwlock_destroy(&a->lock);
    free(a->state_dir);
    free(a);
}

#else /* built with --disable-admin */

struct sb_admin {
    int unused;
};

sb_admin *sb_admin_start(const sb_admin_opts *o, char *errstr, size_t errstr_size)
{
    sb_err(errstr, errstr_size, "admin endpoint requested, but syncbridge was built with --disable-admin");
    return NULL;
}

int sb_admin_port(const sb_admin *a)
{
    return 0;
}

void sb_admin_set_router(sb_admin *a, struct sb_router *r)
{
}

void sb_admin_stop(sb_admin *a)
{
}
#endif
