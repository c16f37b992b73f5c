/* Integration tests of the GCP HTTP client against tests/fake/gfake.py:
 * retries per fault class, backoff gaps, give-up paths, idempotency,
 * Retry-After, proxies (explicit and environment), TLS, logging. */
#include "ops/metrics.h"
#include "build_config.h"
#include "gcp_internal.h"
#include "gcp_testlib.h"
#include "log/log_internal.h"

#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *dir;
static tl_proc fake;

static void suite_setup(void)
{
    if (!tl_have_fake())
        return;
    dir = tl_tmpdir();
    tl_make_rsa(dir, "sa");
    tl_make_tls(dir);
    fake = tl_fake_start(dir, 0);
}

static void suite_teardown(void)
{
    tl_stop(&fake);
    tl_rmrf(dir);
}

static void test_setup(void)
{
    /* Requests to 127.0.0.1 must not wander into a proxy from the environment. */
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    unsetenv("all_proxy");
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    if (fake.pid)
        tl_reset(&fake);
}

#define NEED_FAKE()                                                                                  \
    do {                                                                                             \
        if (!tl_have_fake()) {                                                                       \
            fprintf(stderr, "SKIP %s: tests/fake/gfake.py not present (merge the fake branch)\n", __func__); \
            return;                                                                                  \
        }                                                                                            \
    } while (0)

static void base_conf(sb_gcp_conf *conf, char *endpoint, size_t n)
{
    sb_gcp_conf_init(conf);
    snprintf(endpoint, n, "http://127.0.0.1:%d", fake.port);
    conf->service = "pubsub";
    conf->endpoint = endpoint;
    conf->auth = SB_GCP_AUTH_STATIC;
    conf->token = "fake-static-token";
    conf->retry_initial_ms = 50;
    conf->retry_multiplier = 2.0;
    conf->retry_max_delay_ms = 1000;
    conf->max_attempts = 6;
    conf->deadline_ms = 20000;
    conf->timeout_ms = 5000;
}

static sb_gcp_client *client(sb_gcp_conf *conf)
{
    char err[512];
    sb_gcp_client *c = sb_gcp_client_new(conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

static const char *const json_hdr[] = {"Content-Type: application/json", NULL};

static void create_topic(sb_gcp_client *c, const char *topic)
{
    char path[256], err[512];
    snprintf(path, sizeof path, "/v1/projects/p/topics/%s", topic);
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "PUT", .url = path, .headers = json_hdr, .body = "{}", .body_len = 2, .idempotent = 1};
    sb_gcp_response r;
    sb_gcp_result rc = sb_gcp_request_send(c, &req, &r, err, sizeof err);
    ck_assert_msg(rc == SB_GCP_OK, "create topic: %s", err);
    sb_gcp_response_clear(&r);
}

static const char pub_body[] = "{\"messages\":[{\"data\":\"aGVsbG8=\",\"attributes\":{\"id\":\"e1\"}}]}";

static sb_gcp_result publish(sb_gcp_client *c, const char *topic, int idempotent, sb_gcp_response *r, char *err,
                             size_t errsz)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/projects/p/topics/%s:publish", topic);
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = path, .headers = json_hdr, .body = pub_body,
                          .body_len = strlen(pub_body), .idempotent = idempotent};
    return sb_gcp_request_send(c, &req, r, err, errsz);
}

START_TEST(test_publish_ok)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t1");
    sb_gcp_response r;
    ck_assert_int_eq(publish(c, "t1", 1, &r, err, sizeof err), SB_GCP_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_msg(strstr(r.body, "messageIds") != NULL, "%s", r.body);
    ck_assert_ptr_nonnull(r.content_type);
    ck_assert_msg(strncmp(r.content_type, "application/json", 16) == 0, "%s", r.content_type);
    ck_assert_ptr_null(r.error_line);
    sb_gcp_response_clear(&r);
    char *auth = tl_req_header(&fake, ":publish$", 0, "Authorization");
    ck_assert_ptr_nonnull(auth);
    ck_assert_str_eq(auth, "Bearer fake-"); /* the fake logs the first 12 characters */
    free(auth);
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.requests, 2);
    ck_assert_uint_eq(st.status_2xx, 2);
    ck_assert_uint_eq(st.retries, 0);
    /* the same counters reach /metrics through the admin endpoint's hook */
    char *m = sb_metrics_render(NULL, NULL, NULL, NULL);
    ck_assert_msg(strstr(m, "# TYPE syncbridge_http_requests_total counter") &&
                      strstr(m, "syncbridge_http_requests_total{instance=\"-\",service=\"pubsub\",code=\"2xx\"} 2") &&
                      strstr(m, "syncbridge_token_refreshes_total{instance=\"-\",service=\"pubsub\"}"),
                  "%s", m);
    free(m);
    sb_gcp_client_destroy(c);
}
END_TEST

/* Retried `want` times; the gaps between attempts stay under each attempt's cap. */
static void check_gaps(const char *rx, int want, const sb_gcp_conf *conf, double slack_s)
{
    double t[16];
    int n = tl_count(&fake, rx, t, 16);
    ck_assert_int_eq(n, want);
    for (int i = 1; i < n; i++) {
        double gap = t[i] - t[i - 1];
        double cap = (double)sb_gcp__backoff_cap_ms(conf->retry_initial_ms, conf->retry_multiplier,
                                                    conf->retry_max_delay_ms, i - 1) / 1000.0;
        ck_assert_msg(gap >= 0 && gap <= cap + slack_s, "gap %d = %.3f s, cap %.3f s", i, gap, cap);
    }
}

START_TEST(test_503_retried_then_ok)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t2");
    tl_fault(&fake, "{\"path_regex\":\"t2:publish\",\"kind\":\"status\",\"status\":503,\"count\":3}");
    sb_gcp_response r;
    ck_assert_msg(publish(c, "t2", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 4);
    sb_gcp_response_clear(&r);
    check_gaps("t2:publish$", 4, &conf, 0.25);
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.retries, 3);
    ck_assert_uint_eq(st.status_5xx, 3);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_other_statuses_retried)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t3");
    const int codes[] = {408, 500, 502, 504};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        tl_ctl(&fake, 0, "DELETE", "/_fake/requests", NULL, NULL);
        char f[256];
        snprintf(f, sizeof f, "{\"path_regex\":\"t3$\",\"method\":\"GET\",\"status\":%d,\"count\":2}", codes[i]);
        tl_fault(&fake, f);
        sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/t3", .idempotent = 1};
        sb_gcp_response r;
        ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%d: %s", codes[i], err);
        ck_assert_int_eq(r.attempts, 3);
        ck_assert_int_eq(tl_count(&fake, "t3$", NULL, 0), 3);
        sb_gcp_response_clear(&r);
    }
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_reset_retried)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t4");
    sb_gcp_client_destroy(c); /* the publish starts on a fresh connection */
    c = client(&conf);
    tl_fault(&fake, "{\"path_regex\":\"t4:publish\",\"kind\":\"reset\",\"count\":2}");
    sb_gcp_response r;
    ck_assert_msg(publish(c, "t4", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 3);
    sb_gcp_response_clear(&r);
    check_gaps("t4:publish$", 3, &conf, 0.25);
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.transport_errors, 2);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_truncate_retried)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t5");
    tl_ctl(&fake, 0, "DELETE", "/_fake/requests", NULL, NULL);
    tl_fault(&fake, "{\"path_regex\":\"t5$\",\"method\":\"GET\",\"kind\":\"truncate\",\"count\":1}");
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/t5", .idempotent = 1};
    sb_gcp_response r;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 2);
    ck_assert_msg(strstr(r.body, "projects/p/topics/t5") != NULL, "%s", r.body);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tl_count(&fake, "t5$", NULL, 0), 2);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_latency_timeout_retried)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    conf.timeout_ms = 400;
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t6");
    tl_fault(&fake, "{\"path_regex\":\"t6$\",\"method\":\"GET\",\"kind\":\"latency\",\"latency_ms\":1500,\"count\":1}");
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/t6", .idempotent = 1};
    sb_gcp_response r;
    double t0 = tl_now();
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    double took = tl_now() - t0;
    ck_assert_int_eq(r.attempts, 2);
    ck_assert_msg(took >= 0.4 && took < 1.4, "took %.3f s", took);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

/* SDK 2.3: a request's own low-speed bound (a stall bound) overrides the
 * client's: an answer that keeps silent past it is cut and retried. */
START_TEST(test_request_low_speed_cuts_a_stall)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf); /* the client's: 1 byte/s for 30 s */
    create_topic(c, "t6s");
    tl_fault(&fake, "{\"path_regex\":\"t6s$\",\"method\":\"GET\",\"kind\":\"latency\",\"latency_ms\":2500,\"count\":1}");
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = "/v1/projects/p/topics/t6s";
    req.idempotent = 1;
    req.low_speed_limit = 1;
    req.low_speed_time_ms = 1000;
    sb_gcp_response r;
    double t0 = tl_now();
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    double took = tl_now() - t0;
    ck_assert_int_eq(r.attempts, 2);
    ck_assert_msg(took >= 0.9 && took < 2.4, "took %.3f s", took);
    sb_gcp_response_clear(&r);
    /* not retried (one attempt): the stall is a transport error, "timed out" */
    tl_fault(&fake, "{\"path_regex\":\"t6s$\",\"method\":\"GET\",\"kind\":\"latency\",\"latency_ms\":2500,\"count\":1}");
    req.max_attempts = 1;
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    ck_assert_msg(strstr(err, "timed out") != NULL, "%s", err);
    sb_gcp_response_clear(&r);
    req.low_speed_time_ms = -1;
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_INVALID);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

/* SDK 2.3: negotiate never sends the client's Google token (no Kerberos
 * here: the fake does not challenge, so the request goes through as is). */
START_TEST(test_negotiate_sends_no_token)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.url = "/webhdfs/v1/?op=GETFILESTATUS";
    req.negotiate = 1;
    sb_gcp_response r;
    sb_gcp_result rc = sb_gcp_request_send(c, &req, &r, err, sizeof err);
    if (!sb_gcp_negotiate_available()) {
        ck_assert_int_eq(rc, SB_GCP_INVALID);
        ck_assert_msg(strstr(err, "without GSS-API") != NULL, "%s", err);
    } else {
        ck_assert_msg(rc == SB_GCP_OK, "%s", err);
        char *auth = tl_req_header(&fake, "^/webhdfs/", 0, "Authorization");
        ck_assert_msg(auth == NULL, "a token went with a negotiate request: %s", auth);
    }
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_gives_up_after_max_attempts)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    conf.max_attempts = 3;
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t7");
    tl_fault(&fake, "{\"path_regex\":\"t7:publish\",\"status\":503,\"message\":\"The service is currently unavailable.\"}");
    sb_gcp_response r;
    sb_gcp_result rc = publish(c, "t7", 1, &r, err, sizeof err);
    ck_assert_int_eq(rc, SB_GCP_HTTP_ERROR);
    ck_assert_int_eq(r.status, 503);
    ck_assert_int_eq(r.attempts, 3);
    ck_assert(sb_gcp_result_retriable(rc, &r));
    ck_assert_str_eq(r.error_line, "HTTP 503 UNAVAILABLE: The service is currently unavailable.");
    char want[512];
    snprintf(want, sizeof want,
             "POST http://127.0.0.1:%d/v1/projects/p/topics/t7:publish: HTTP 503 UNAVAILABLE: The service is "
             "currently unavailable.; gave up after 3 attempts",
             fake.port);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(tl_count(&fake, "t7:publish$", NULL, 0), 3);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_gives_up_at_deadline)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    conf.max_attempts = 100;
    conf.retry_initial_ms = 200;
    conf.retry_max_delay_ms = 400;
    conf.deadline_ms = 1200;
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t8");
    tl_fault(&fake, "{\"path_regex\":\"t8:publish\",\"status\":500}");
    sb_gcp_response r;
    double t0 = tl_now();
    ck_assert_int_eq(publish(c, "t8", 1, &r, err, sizeof err), SB_GCP_HTTP_ERROR);
    double took = tl_now() - t0;
    ck_assert_msg(took < 1.5, "took %.3f s past a 1.2 s deadline", took);
    ck_assert_msg(r.attempts >= 2 && r.attempts < 100, "attempts %d", r.attempts);
    ck_assert_msg(strstr(err, "HTTP 500 INTERNAL") && strstr(err, "(deadline 1200 ms)"), "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_not_idempotent_503_not_resent)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t9");
    tl_fault(&fake, "{\"path_regex\":\"t9:publish\",\"status\":503,\"count\":1}");
    sb_gcp_response r;
    ck_assert_int_eq(publish(c, "t9", 0, &r, err, sizeof err), SB_GCP_HTTP_ERROR);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_int_eq(tl_count(&fake, "t9:publish$", NULL, 0), 1);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_not_idempotent_reset_not_resent)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t10"); /* leaves a reusable connection: the POST must not use it */
    tl_fault(&fake, "{\"path_regex\":\"t10:publish\",\"kind\":\"reset\",\"count\":1}");
    sb_gcp_response r;
    ck_assert_int_eq(publish(c, "t10", 0, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_msg(strstr(err, "not retried: the request is not idempotent and may have reached the server"), "%s", err);
    ck_assert_int_eq(tl_count(&fake, "t10:publish$", NULL, 0), 1);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_connect_failure_retried_even_if_not_idempotent)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", tl_dead_port());
    conf.max_attempts = 3;
    conf.retry_initial_ms = 10;
    sb_gcp_client *c = client(&conf);
    sb_gcp_response r;
    ck_assert_int_eq(publish(c, "x", 0, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    ck_assert_int_eq(r.attempts, 3);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(err, "cannot connect") && strstr(err, "gave up after 3 attempts"), "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_429_retry_after_honoured)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    conf.retry_initial_ms = 10;
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t11");
    tl_fault(&fake, "{\"path_regex\":\"t11:publish\",\"status\":429,\"retry_after\":1,\"count\":1}");
    sb_gcp_response r;
    ck_assert_msg(publish(c, "t11", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 2);
    sb_gcp_response_clear(&r);
    double t[2];
    ck_assert_int_eq(tl_count(&fake, "t11:publish$", t, 2), 2);
    ck_assert_msg(t[1] - t[0] >= 0.95, "retried after %.3f s despite Retry-After: 1", t[1] - t[0]);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_429_retry_after_http_date_honoured)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    conf.retry_initial_ms = 10;
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t11d");
    /* the same wait given as a date: 2 s ahead, so at least 1 s after the clock's second */
    char date[64], fault[256];
    time_t at = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(fault, sizeof fault, "{\"path_regex\":\"t11d:publish\",\"status\":429,\"retry_after\":\"%s\",\"count\":1}",
             date);
    tl_fault(&fake, fault);
    sb_gcp_response r;
    ck_assert_msg(publish(c, "t11d", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 2);
    sb_gcp_response_clear(&r);
    double t[2];
    ck_assert_int_eq(tl_count(&fake, "t11d:publish$", t, 2), 2);
    ck_assert_msg(t[1] - t[0] >= 0.95, "retried after %.3f s despite Retry-After: %s", t[1] - t[0], date);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_4xx_not_retried)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/missing", .idempotent = 1};
    sb_gcp_response r;
    sb_gcp_result rc = sb_gcp_request_send(c, &req, &r, err, sizeof err);
    ck_assert_int_eq(rc, SB_GCP_HTTP_ERROR);
    ck_assert_int_eq(r.status, 404);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert(!sb_gcp_result_retriable(rc, &r));
    ck_assert_msg(strncmp(r.error_line, "HTTP 404 NOT_FOUND: ", 20) == 0, "%s", r.error_line);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
}
END_TEST

typedef struct upload {
    const char *data;
    size_t len, pos;
    int rewinds;
} upload;

static size_t up_read(char *buf, size_t size, void *opaque)
{
    upload *u = opaque;
    size_t n = u->len - u->pos < 7 ? u->len - u->pos : 7; /* small pieces on purpose */
    n = n < size ? n : size;
    memcpy(buf, u->data + u->pos, n);
    u->pos += n;
    return n;
}

static int up_rewind(void *opaque)
{
    upload *u = opaque;
    u->pos = 0;
    u->rewinds++;
    return 0;
}

START_TEST(test_read_callback_upload_retried)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t12");
    tl_fault(&fake, "{\"path_regex\":\"t12:publish\",\"status\":503,\"count\":1}");
    upload u = {pub_body, strlen(pub_body), 0, 0};
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "POST", .url = "/v1/projects/p/topics/t12:publish", .headers = json_hdr,
                          .read_cb = up_read, .rewind_cb = up_rewind, .read_opaque = &u, .body_len = u.len,
                          .idempotent = 1};
    sb_gcp_response r;
    ck_assert_msg(sb_gcp_request_send(c, &req, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 2);
    ck_assert_int_eq(u.rewinds, 1);
    sb_gcp_response_clear(&r);
    char *out = NULL;
    tl_ctl(&fake, 0, "GET", "/_fake/pubsub/messages?topic=projects/p/topics/t12", NULL, &out);
    ck_assert_msg(strstr(out, "aGVsbG8=") != NULL, "%s", out);
    free(out);
    sb_gcp_client_destroy(c);
}
END_TEST

typedef struct worker {
    sb_gcp_client *c;
    int ok;
} worker;

static void *work(void *p)
{
    worker *w = p;
    for (int i = 0; i < 10; i++) {
        sb_gcp_response r;
        char err[512];
        if (publish(w->c, "t13", 1, &r, err, sizeof err) == SB_GCP_OK)
            w->ok++;
        sb_gcp_response_clear(&r);
    }
    return NULL;
}

START_TEST(test_concurrent_requests)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char ep[64];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t13");
    pthread_t th[8];
    worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker){c, 0};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(w[i].ok, 10);
    }
    ck_assert_int_eq(tl_count(&fake, "t13:publish$", NULL, 0), 80);
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.requests, 81);
    sb_gcp_client_destroy(c);
}
END_TEST

static char *proxy_log(void)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/proxy.log", dir);
    return p;
}

START_TEST(test_proxy_explicit_and_env)
{
    NEED_FAKE();
    tl_proc px = tl_proxy_start(dir);
    int before = tl_lines(proxy_log());
    sb_gcp_conf conf;
    char ep[64], err[512], purl[64];
    base_conf(&conf, ep, sizeof ep);
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", px.port);
    conf.proxy = purl;
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t14");
    sb_gcp_response r;
    ck_assert_msg(publish(c, "t14", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
    ck_assert_int_eq(tl_lines(proxy_log()) - before, 2);

    /* From the environment, as libcurl reads it. */
    setenv("http_proxy", purl, 1);
    conf.proxy = NULL;
    c = client(&conf);
    ck_assert_msg(publish(c, "t14", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
    ck_assert_int_eq(tl_lines(proxy_log()) - before, 3);

    /* no_proxy option bypasses it. */
    conf.no_proxy = "127.0.0.1";
    c = client(&conf);
    ck_assert_msg(publish(c, "t14", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
    ck_assert_int_eq(tl_lines(proxy_log()) - before, 3);
    unsetenv("http_proxy");
    tl_stop(&px);
}
END_TEST

static void tls_conf(sb_gcp_conf *conf, char *ep, size_t n, const tl_proc *tf, char *ca, const char *which)
{
    sb_gcp_conf_init(conf);
    snprintf(ep, n, "https://127.0.0.1:%d", tf->port);
    snprintf(ca, 1024, "%s/%s", dir, which);
    conf->service = "pubsub";
    conf->endpoint = ep;
    conf->auth = SB_GCP_AUTH_STATIC;
    conf->token = "fake-static-token";
    conf->ca_file = ca;
    conf->retry_initial_ms = 10;
}

START_TEST(test_tls_ca_ok_wrong_ca_fails_clearly)
{
    NEED_FAKE();
    tl_proc tf = tl_fake_start(dir, 1);
    sb_gcp_conf conf;
    char ep[64], ca[1024], err[1024];
    tls_conf(&conf, ep, sizeof ep, &tf, ca, "ca.pem");
    sb_gcp_client *c = client(&conf);
    create_topic(c, "t15");
    sb_gcp_client_destroy(c);

    tls_conf(&conf, ep, sizeof ep, &tf, ca, "wrongca.pem");
    c = client(&conf);
    sb_gcp_response r;
    ck_assert_int_eq(publish(c, "t15", 1, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    ck_assert_int_eq(r.attempts, 1); /* no retry can fix a certificate */
    char want[256];
    snprintf(want, sizeof want, "TLS certificate verification failed for https://127.0.0.1:%d/v1/projects/p/topics/t15:publish: ",
             tf.port);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    ck_assert_msg(strstr(err, "; set ca_file or check the proxy") != NULL, "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);

    /* HTTPS through the proxy: a CONNECT tunnel, still verified end to end. */
    tl_proc px = tl_proxy_start(dir);
    int before = tl_lines(proxy_log());
    char purl[64];
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", px.port);
    tls_conf(&conf, ep, sizeof ep, &tf, ca, "ca.pem");
    conf.proxy = purl;
    c = client(&conf);
    ck_assert_msg(publish(c, "t15", 1, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
    ck_assert_int_ge(tl_lines(proxy_log()) - before, 1);
    tl_stop(&px);
    tl_stop(&tf);
}
END_TEST

START_TEST(test_debug_log_redacts)
{
    NEED_FAKE();
    char logp[1024];
    snprintf(logp, sizeof logp, "%s/stderr.log", dir);
    int fd = open(logp, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ck_assert(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    sb_log_setup(SB_LOG_DEBUG, SB_LOG_TO_STDERR);
    sb_gcp_conf conf;
    char ep[64], err[512];
    base_conf(&conf, ep, sizeof ep);
    sb_gcp_client *c = client(&conf);
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/nope?access_token=SECRET123"};
    sb_gcp_response r;
    sb_gcp_request_send(c, &req, &r, err, sizeof err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char txt[8192] = {0};
    FILE *f = fopen(logp, "r");
    size_t n = fread(txt, 1, sizeof txt - 1, f);
    fclose(f);
    txt[n] = '\0';
    ck_assert_msg(strstr(txt, "GET http://127.0.0.1:") && strstr(txt, "access_token=[REDACTED] -> 404 in "),
                  "log: %s", txt);
    ck_assert_msg(strstr(txt, "SECRET123") == NULL && strstr(txt, "fake-static-token") == NULL, "log: %s", txt);
    ck_assert_msg(strstr(err, "SECRET123") == NULL, "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gcp_http");
    TCase *tc = tcase_create("fake");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, test_setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_publish_ok);
    tcase_add_test(tc, test_503_retried_then_ok);
    tcase_add_test(tc, test_other_statuses_retried);
    tcase_add_test(tc, test_reset_retried);
    tcase_add_test(tc, test_truncate_retried);
    tcase_add_test(tc, test_latency_timeout_retried);
    tcase_add_test(tc, test_request_low_speed_cuts_a_stall);
    tcase_add_test(tc, test_negotiate_sends_no_token);
    tcase_add_test(tc, test_gives_up_after_max_attempts);
    tcase_add_test(tc, test_gives_up_at_deadline);
    tcase_add_test(tc, test_not_idempotent_503_not_resent);
    tcase_add_test(tc, test_not_idempotent_reset_not_resent);
    tcase_add_test(tc, test_connect_failure_retried_even_if_not_idempotent);
    tcase_add_test(tc, test_429_retry_after_honoured);
    tcase_add_test(tc, test_429_retry_after_http_date_honoured);
    tcase_add_test(tc, test_4xx_not_retried);
    tcase_add_test(tc, test_read_callback_upload_retried);
    tcase_add_test(tc, test_concurrent_requests);
    tcase_add_test(tc, test_proxy_explicit_and_env);
    tcase_add_test(tc, test_tls_ca_ok_wrong_ca_fails_clearly);
    tcase_add_test(tc, test_debug_log_redacts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
