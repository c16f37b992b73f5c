/* Integration tests of the Google layer's streaming features against
 * tests/fake/gfake.py: bodies streamed to a write callback in bounded
 * memory, WebHDFS 307 redirects (and where the token may go), cancellation
 * from another thread, curl_multi runs of parallel transfers, no_wait
 * retries that hand Retry-After back, and the header accessor. */
#include "build_config.h"
#include "gcp_internal.h"
#include "gcp_testlib.h"

#include <check.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dir;
static tl_proc fake;

static void suite_setup(void)
{
    if (!tl_have_fake())
        return;
    dir = tl_tmpdir();
    tl_make_rsa(dir, "sa");
    fake = tl_fake_start(dir, 0);
}

static void suite_teardown(void)
{
    tl_stop(&fake);
    tl_rmrf(dir);
}

static void test_setup(void)
{
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("no_proxy");
    if (fake.pid)
        tl_reset(&fake);
}

#define NEED_FAKE()                                                                                  \
    do {                                                                                             \
        if (!tl_have_fake()) {                                                                       \
            fprintf(stderr, "SKIP %s: tests/fake/gfake.py not present\n", __func__);                 \
            return;                                                                                  \
        }                                                                                            \
    } while (0)

static char ep[64];

static sb_gcp_client *client(void)
{
    sb_gcp_conf conf;
    sb_gcp_conf_init(&conf);
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", fake.port);
    conf.service = "pubsub";
    conf.endpoint = ep;
    conf.auth = SB_GCP_AUTH_STATIC;
    conf.token = "fake-static-token";
    conf.retry_initial_ms = 50;
    conf.retry_max_delay_ms = 500;
    conf.deadline_ms = 30000;
    conf.timeout_ms = 20000;
    char err[512];
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

/* ---- the fake's WebHDFS content: byte i = P[i % 65521] ---- */

#define PLEN 65521
static unsigned char pat[PLEN];

static void make_pattern(int seed)
{
    size_t n = 0;
    for (int j = 0; n < PLEN; j++) {
        char in[64];
        int l = snprintf(in, sizeof in, "gfake:%d:%d", seed, j);
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)in, (size_t)l, d);
        size_t k = PLEN - n < sizeof d ? PLEN - n : sizeof d;
        memcpy(pat + n, d, k);
        n += k;
    }
}

static void seed_file(const char *path, long size, int seed)
{
    char body[256];
    snprintf(body, sizeof body, "{\"path\":\"%s\",\"size\":%ld,\"seed\":%d}", path, size, seed);
    char *out = NULL;
    long st = tl_ctl(&fake, 0, "POST", "/_fake/webhdfs/seed", body, &out);
    ck_assert_msg(st == 200, "seed: %s", out);
    free(out);
}

/* A write callback that checks every byte against the pattern. */
typedef struct sink {
    uint64_t got;
    uint64_t bad; /* first mismatch + 1 */
    size_t max_chunk;
    long status_seen;
} sink;

static size_t on_data(const char *data, size_t len, const sb_gcp_response *resp, void *opaque)
{
    sink *s = opaque;
    s->status_seen = resp->status;
    if (len > s->max_chunk)
        s->max_chunk = len;
    for (size_t i = 0; i < len && !s->bad; i++)
        if ((unsigned char)data[i] != pat[(s->got + i) % PLEN])
            s->bad = s->got + i + 1;
    s->got += len;
    return len;
}

static long vm_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            v = strtol(line + strlen(key), NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static void open_url(char *url, size_t n, const char *host, const char *path)
{
    snprintf(url, n, "http://%s:%d/webhdfs/v1%s?op=OPEN&user.name=sb", host, fake.port, path);
}

START_TEST(test_stream_large_body_bounded_memory)
{
    NEED_FAKE();
    const long size = 96L << 20;
    make_pattern(7);
    seed_file("/big/f", size, 7);
    sb_gcp_client *c = client();
    char url[256], err[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/datanode/webhdfs/v1/big/f?op=OPEN&offset=0", fake.port);
    sink s = {0};
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = url;
    req.idempotent = 1;
    req.no_auth = 1;
    req.write_cb = on_data;
    req.write_opaque = &s;
    sb_gcp_response r;
    long rss0 = vm_kib("VmRSS:");
    sb_gcp_result rc = sb_gcp_request_send(c, &req, &r, err, sizeof err);
    long hwm = vm_kib("VmHWM:");
    ck_assert_msg(rc == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(s.status_seen, 200);
    ck_assert_uint_eq(s.got, (uint64_t)size);
    ck_assert_msg(s.bad == 0, "byte %llu differs", (unsigned long long)(s.bad - 1));
    ck_assert_ptr_null(r.body); /* nothing kept in memory */
    ck_assert_uint_eq(r.body_len, 0);
    /* 96 MiB went through; the process grew by far less */
    ck_assert_msg(hwm - rss0 < 24 * 1024, "peak RSS grew by %ld KiB while streaming %ld MiB", hwm - rss0, size >> 20);
    sb_gcp_response_clear(&r);

    /* An error answer is not streamed: it stays in resp for error_line. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/datanode/webhdfs/v1/big/none?op=OPEN", fake.port);
    s = (sink){0};
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_HTTP_ERROR);
    ck_assert_int_eq(r.status, 404);
    ck_assert_uint_eq(s.got, 0);
    ck_assert_msg(r.error_line && strstr(r.error_line, "File does not exist"), "%s", r.error_line);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

static size_t stop_after_1mb(const char *data, size_t len, const sb_gcp_response *resp, void *opaque)
{
    (void)data, (void)resp;
    uint64_t *got = opaque;
    *got += len;
    return *got > (1u << 20) ? 0 : len;
}

START_TEST(test_write_callback_abort_not_retried)
{
    NEED_FAKE();
    seed_file("/big/g", 8L << 20, 1);
    sb_gcp_client *c = client();
    char url[256], err[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/datanode/webhdfs/v1/big/g?op=OPEN", fake.port);
    uint64_t got = 0;
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = url;
    req.idempotent = 1;
    req.no_auth = 1;
    req.write_cb = stop_after_1mb;
    req.write_opaque = &got;
    sb_gcp_response r;
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_msg(strstr(err, "write callback aborted the transfer"), "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_webhdfs_redirect_followed)
{
    NEED_FAKE();
    make_pattern(3);
    seed_file("/data/f1", 300000, 3);
    sb_gcp_client *c = client();
    char url[256], err[512];
    open_url(url, sizeof url, "127.0.0.1", "/data/f1");
    sink s = {0};
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = url;
    req.idempotent = 1;
    req.write_cb = on_data;
    req.write_opaque = &s;

    /* Off by default: the 307 is the answer. */
    sb_gcp_response r;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.status, 307);
    ck_assert_msg(r.location && strstr(r.location, "/datanode/webhdfs/v1/data/f1?op=OPEN"), "%s", r.location);
    ck_assert_str_eq(sb_gcp_response_header(&r, "location"), r.location);
    ck_assert_uint_eq(s.got, 0);
    ck_assert_int_eq(tl_count(&fake, "^/datanode/", NULL, 0), 0);
    sb_gcp_response_clear(&r);

    /* Followed: NameNode -> DataNode, the same origin, so the token goes too. */
    req.follow_redirects = 3;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.redirects, 1);
    ck_assert_int_eq(r.attempts, 2);
    ck_assert_uint_eq(s.got, 300000);
    ck_assert_msg(s.bad == 0, "byte %llu differs", (unsigned long long)(s.bad - 1));
    sb_gcp_response_clear(&r);
    char *auth = tl_req_header(&fake, "^/datanode/", 0, "Authorization");
    ck_assert_ptr_nonnull(auth);
    free(auth);

    /* Another origin (the NameNode names the DataNode "localhost"): no token... */
    tl_ctl(&fake, 0, "DELETE", "/_fake/requests", NULL, NULL);
    char hh[64];
    snprintf(hh, sizeof hh, "Host: localhost:%d", fake.port);
    const char *hdrs[] = {hh, NULL};
    req.headers = hdrs;
    s = (sink){0};
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(s.got, 300000);
    sb_gcp_response_clear(&r);
    auth = tl_req_header(&fake, "^/webhdfs/", 0, "Authorization");
    ck_assert_ptr_nonnull(auth); /* the first hop is the request's own origin */
    free(auth);
    auth = tl_req_header(&fake, "^/datanode/", 0, "Authorization");
    ck_assert_msg(auth == NULL, "token sent to another origin: %s", auth);

    /* ... unless asked. */
    tl_ctl(&fake, 0, "DELETE", "/_fake/requests", NULL, NULL);
    req.redirect_auth = 1;
    s = (sink){0};
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    auth = tl_req_header(&fake, "^/datanode/", 0, "Authorization");
    ck_assert_ptr_nonnull(auth);
    free(auth);

    /* The hop limit: a redirect beyond it is the answer. */
    req.headers = NULL;
    req.follow_redirects = 0;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.status, 307);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

/* ---- cancellation ---- */

typedef struct canceller {
    sb_gcp_cancel *k;
    sb_gcp_client *c; /* cancel the client instead when set */
    int after_ms;
} canceller;

static void *cancel_later(void *p)
{
    canceller *k = p;
    usleep((useconds_t)k->after_ms * 1000);
    if (k->c)
        sb_gcp_client_cancel(k->c);
    else
        sb_gcp_cancel_set(k->k);
    return NULL;
}

START_TEST(test_cancel_from_another_thread)
{
    NEED_FAKE();
    sb_gcp_client *c = client();
    char err[512];
    sb_gcp_cancel *k = sb_gcp_cancel_new();
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = "/v1/projects/p/topics/slow";
    req.idempotent = 1;
    req.cancel = k;
    sb_gcp_response r;

    /* A server that takes 15 s to answer. */
    tl_fault(&fake, "{\"path_regex\":\"topics/slow$\",\"kind\":\"latency\",\"latency_ms\":15000}");
    pthread_t th;
    canceller ck = {k, NULL, 300};
    pthread_create(&th, NULL, cancel_later, &ck);
    double t0 = tl_now();
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_CANCELLED);
    double took = tl_now() - t0;
    pthread_join(th, NULL);
    ck_assert_msg(took < 1.5, "cancel took %.2f s", took);
    ck_assert_msg(strstr(err, "cancelled after 1 attempt"), "%s", err);
    sb_gcp_response_clear(&r);
    /* it stays set: the next request does not even start */
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_CANCELLED);
    ck_assert_int_eq(r.attempts, 0);
    sb_gcp_response_clear(&r);

    /* A retry delay (Retry-After 20 s) is cut short too, by the client's cancel. */
    sb_gcp_cancel_reset(k);
    tl_reset(&fake);
    tl_fault(&fake, "{\"path_regex\":\"topics/slow$\",\"status\":503,\"retry_after\":20}");
    ck = (canceller){NULL, c, 300};
    pthread_create(&th, NULL, cancel_later, &ck);
    t0 = tl_now();
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_CANCELLED);
    took = tl_now() - t0;
    pthread_join(th, NULL);
    ck_assert_msg(took < 1.5, "cancel took %.2f s", took);
    ck_assert_msg(strstr(err, "(last: HTTP 503"), "%s", err);
    sb_gcp_outcome o = sb_gcp_classify(SB_GCP_CANCELLED, &r, err, 0);
    ck_assert_int_eq(o.result, SB_RESULT_RETRY);
    ck_assert_int_eq(o.cause, SB_GCP_CAUSE_CANCELLED);
    sb_gcp_response_clear(&r);
    sb_gcp_client_cancel_reset(c);
    tl_reset(&fake);
    req.cancel = NULL;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_HTTP_ERROR && r.status == 404, "%s",
                  err);
    sb_gcp_response_clear(&r);
    sb_gcp_cancel_free(k);
    sb_gcp_client_destroy(c);
}
END_TEST

/* ---- no_wait ---- */

START_TEST(test_no_wait_returns_retry_after)
{
    NEED_FAKE();
    sb_gcp_client *c = client();
    char err[512];
    tl_fault(&fake, "{\"path_regex\":\"topics/busy$\",\"status\":503,\"retry_after\":2,\"count\":1}");
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = "/v1/projects/p/topics/busy";
    req.idempotent = 1;
    req.no_wait = 1;
    sb_gcp_response r;
    double t0 = tl_now();
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_HTTP_ERROR);
    ck_assert_msg(tl_now() - t0 < 1.0, "slept %.2f s", tl_now() - t0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_int_eq(r.retry_after_ms, 2000);
    ck_assert_msg(strstr(err, "left to the caller to retry (after 2000 ms)"), "%s", err);
    sb_gcp_outcome o = sb_gcp_classify(SB_GCP_HTTP_ERROR, &r, err, 0);
    ck_assert_int_eq(o.result, SB_RESULT_RETRY);
    ck_assert_int_eq(o.retry_after_ms, 2000);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tl_count(&fake, "topics/busy$", NULL, 0), 1);

    /* A connect failure: at once too. */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", tl_dead_port());
    req.url = url;
    t0 = tl_now();
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_msg(tl_now() - t0 < 1.0, "slept %.2f s", tl_now() - t0);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_header_accessor_any_header)
{
    NEED_FAKE();
    sb_gcp_client *c = client();
    char err[512];
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = "/v1/projects/p/topics/h";
    req.method = "PUT";
    req.body = "{}";
    req.body_len = 2;
    req.idempotent = 1;
    sb_gcp_response r;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_ptr_nonnull(sb_gcp_response_header(&r, "content-type"));
    ck_assert_str_eq(sb_gcp_response_header(&r, "CONTENT-TYPE"), r.content_type);
    ck_assert_ptr_nonnull(sb_gcp_response_header(&r, "Content-Length"));
    ck_assert_ptr_null(sb_gcp_response_header(&r, "x-not-sent"));
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

/* ---- curl_multi ---- */

typedef struct part {
    sink s;
    sb_gcp_result rc;
    long status;
    int calls;
    int attempts;
    char err[256];
} part;

static void part_done(sb_gcp_multi *m, void *opaque, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    (void)m;
    part *p = opaque;
    p->rc = rc;
    p->status = resp->status;
    p->attempts = resp->attempts;
    p->calls++;
    snprintf(p->err, sizeof p->err, "%s", errstr);
}

START_TEST(test_multi_parallel_transfers)
{
    NEED_FAKE();
    enum { N = 8 };
    make_pattern(5);
    for (int i = 0; i < N; i++) {
        char path[64];
        snprintf(path, sizeof path, "/par/f%d", i);
        seed_file(path, 1L << 20, 5);
    }
    /* Every DataNode read waits 1.5 s before answering, and one NameNode
     * OPEN gets a 503 first: run one after another this takes over 12 s. */
    tl_fault(&fake, "{\"path_regex\":\"^/datanode/\",\"kind\":\"latency\",\"latency_ms\":1500}");
    tl_fault(&fake, "{\"path_regex\":\"^/webhdfs/v1/par/f3\",\"status\":503,\"count\":1}");
    sb_gcp_client *c = client();
    char err[512];
    sb_gcp_multi *m = sb_gcp_multi_new(c, N, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    part parts[N];
    char urls[N][256];
    memset(parts, 0, sizeof parts);
    for (int i = 0; i < N; i++) {
        char path[64];
        snprintf(path, sizeof path, "/par/f%d", i);
        open_url(urls[i], sizeof urls[i], "127.0.0.1", path);
        sb_gcp_request req = SB_GCP_REQUEST_INIT;
        req.url = urls[i];
        req.idempotent = 1;
        req.follow_redirects = 1;
        req.write_cb = on_data;
        req.write_opaque = &parts[i].s;
        ck_assert_int_eq(sb_gcp_multi_add(m, &req, part_done, &parts[i], err, sizeof err), 0);
    }
    ck_assert_uint_eq(sb_gcp_multi_pending(m), N);
    double t0 = tl_now();
    ck_assert_int_eq(sb_gcp_multi_run(m, NULL), SB_GCP_OK);
    double took = tl_now() - t0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(parts[i].calls == 1 && parts[i].rc == SB_GCP_OK && parts[i].status == 200, "part %d: %d %ld %s",
                      i, parts[i].rc, parts[i].status, parts[i].err);
        ck_assert_uint_eq(parts[i].s.got, 1u << 20);
        ck_assert_msg(parts[i].s.bad == 0, "part %d byte %llu", i, (unsigned long long)(parts[i].s.bad - 1));
    }
    ck_assert_int_eq(parts[3].attempts, 3); /* 503, then 307, then the DataNode */
    ck_assert_msg(took < 6.0, "8 transfers of 1.5 s took %.2f s: not in parallel", took);
    ck_assert_uint_eq(sb_gcp_multi_pending(m), 0);
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.requests, N);
    ck_assert_uint_eq(st.retries, 1);
    sb_gcp_multi_destroy(m);
    sb_gcp_client_destroy(c);
}
END_TEST

/* A transfer added by a done callback, with nothing else in flight, starts
 * at once: the multi used to sleep its whole poll interval (100 ms) first,
 * which made a chain of requests (the next part, a key's next publish)
 * crawl. */
typedef struct chain {
    int left, done;
    char url[64];
} chain;

static void chain_done(sb_gcp_multi *m, void *opaque, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    (void)rc, (void)resp, (void)errstr;
    chain *ch = opaque;
    ch->done++;
    if (ch->left-- > 0) {
        sb_gcp_request req = SB_GCP_REQUEST_INIT;
        req.url = ch->url;
        req.idempotent = 1;
        char err[256];
        ck_assert_int_eq(sb_gcp_multi_add(m, &req, chain_done, ch, err, sizeof err), 0);
    }
}

START_TEST(test_multi_starts_what_a_callback_adds_at_once)
{
    NEED_FAKE();
    sb_gcp_client *c = client();
    char err[512];
    sb_gcp_multi *m = sb_gcp_multi_new(c, 4, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    chain ch = {.left = 19};
    snprintf(ch.url, sizeof ch.url, "/v1/projects/p/topics/chain");
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = ch.url;
    req.idempotent = 1;
    ck_assert_int_eq(sb_gcp_multi_add(m, &req, chain_done, &ch, err, sizeof err), 0);
    double t0 = tl_now();
    ck_assert_int_eq(sb_gcp_multi_run(m, NULL), SB_GCP_OK);
    double took = tl_now() - t0;
    ck_assert_int_eq(ch.done, 20);
    ck_assert_msg(took < 1.5, "20 requests one after another took %.2f s: each waited for the poll", took);
    sb_gcp_multi_destroy(m);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_multi_cancel)
{
    NEED_FAKE();
    enum { N = 6 };
    tl_fault(&fake, "{\"path_regex\":\"topics/m\",\"kind\":\"latency\",\"latency_ms\":15000}");
    sb_gcp_client *c = client();
    char err[512];
    sb_gcp_multi *m = sb_gcp_multi_new(c, 3, err, sizeof err); /* 3 in flight, 3 queued */
    part parts[N];
    memset(parts, 0, sizeof parts);
    char urls[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(urls[i], sizeof urls[i], "/v1/projects/p/topics/m%d", i);
        sb_gcp_request req = SB_GCP_REQUEST_INIT;
        req.url = urls[i];
        req.idempotent = 1;
        ck_assert_int_eq(sb_gcp_multi_add(m, &req, part_done, &parts[i], err, sizeof err), 0);
    }
    sb_gcp_cancel *k = sb_gcp_cancel_new();
    pthread_t th;
    canceller ck = {k, NULL, 300};
    pthread_create(&th, NULL, cancel_later, &ck);
    double t0 = tl_now();
    ck_assert_int_eq(sb_gcp_multi_run(m, k), SB_GCP_CANCELLED);
    double took = tl_now() - t0;
    pthread_join(th, NULL);
    ck_assert_msg(took < 1.5, "cancel took %.2f s", took);
    for (int i = 0; i < N; i++)
        ck_assert_msg(parts[i].calls == 1 && parts[i].rc == SB_GCP_CANCELLED, "part %d: %d calls, rc %d", i,
                      parts[i].calls, parts[i].rc);
    ck_assert_uint_eq(sb_gcp_multi_pending(m), 0);
    sb_gcp_multi_destroy(m);
    sb_gcp_cancel_free(k);
    sb_gcp_client_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gcp_stream");
    TCase *tc = tcase_create("fake");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, test_setup, NULL);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_stream_large_body_bounded_memory);
    tcase_add_test(tc, test_write_callback_abort_not_retried);
    tcase_add_test(tc, test_webhdfs_redirect_followed);
    tcase_add_test(tc, test_cancel_from_another_thread);
    tcase_add_test(tc, test_no_wait_returns_retry_after);
    tcase_add_test(tc, test_header_accessor_any_header);
    tcase_add_test(tc, test_multi_parallel_transfers);
    tcase_add_test(tc, test_multi_cancel);
    tcase_add_test(tc, test_multi_starts_what_a_callback_adds_at_once);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
