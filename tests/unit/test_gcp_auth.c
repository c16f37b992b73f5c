/* Integration tests of the GCP token providers against tests/fake/gfake.py:
 * service-account JWT grant, caching and early refresh, one shared refresh
 * for concurrent callers, 401 -> refresh -> retry once, metadata server,
 * ADC, and a distinct error for each kind of bad key file. */
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
#include <sys/stat.h>
#include <unistd.h>

static char *dir;
static char *sa_file;
static tl_proc fake;
static char token_uri[128];

static void suite_setup(void)
{
    if (!tl_have_fake())
        return;
    dir = tl_tmpdir();
    tl_make_rsa(dir, "sa");
    tl_make_rsa(dir, "other");
    fake = tl_fake_start(dir, 0);
    snprintf(token_uri, sizeof token_uri, "http://127.0.0.1:%d/token", fake.port);
    sa_file = tl_make_sa_file(dir, "sa", "sa", token_uri);
}

static void suite_teardown(void)
{
    tl_stop(&fake);
    tl_rmrf(dir);
    free(sa_file);
}

static void test_setup(void)
{
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("no_proxy");
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("GCE_METADATA_HOST");
    unsetenv("PUBSUB_EMULATOR_HOST");
    sb_gcp__clock_offset_s = 0;
    if (fake.pid) {
        tl_reset(&fake);
        tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"require_auth\":true,\"token_expires_in\":3599}", NULL);
    }
}

#define NEED_FAKE()                                                                                  \
    do {                                                                                             \
        if (!tl_have_fake()) {                                                                       \
            fprintf(stderr, "SKIP %s: tests/fake/gfake.py not present (merge the fake branch)\n", __func__); \
            return;                                                                                  \
        }                                                                                            \
    } while (0)

static char endpoint[64];

static void sa_conf(sb_gcp_conf *conf, const char *key_file)
{
    sb_gcp_conf_init(conf);
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", fake.port);
    conf->service = "pubsub";
    conf->endpoint = endpoint;
    conf->auth = SB_GCP_AUTH_SERVICE_ACCOUNT;
    conf->key_file = key_file;
    conf->retry_initial_ms = 20;
    conf->max_attempts = 3;
}

static const char *const json_hdr[] = {"Content-Type: application/json", NULL};

static sb_gcp_result get_topic(sb_gcp_client *c, const char *topic, sb_gcp_response *r, char *err, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/projects/p/topics/%s", topic);
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "PUT", .url = path, .headers = json_hdr, .body = "{}", .body_len = 2, .idempotent = 1};
    sb_gcp_result rc = sb_gcp_request_send(c, &req, r, err, n);
    if (rc == SB_GCP_HTTP_ERROR && r->status == 409) { /* already there: fine */
        sb_gcp_response_clear(r);
        req.method = "GET";
        req.body = NULL;
        req.body_len = 0;
        rc = sb_gcp_request_send(c, &req, r, err, n);
    }
    return rc;
}

static int tokens_fetched(void)
{
    return tl_count(&fake, "^/token$", NULL, 0);
}

START_TEST(test_sa_jwt_accepted_and_cached)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(sb_gcp_client_auth_mode(c), SB_GCP_AUTH_SERVICE_ACCOUNT);
    ck_assert_int_eq(tokens_fetched(), 0); /* lazily, on first use */
    sb_gcp_response r;
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(get_topic(c, "a1", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
        sb_gcp_response_clear(&r);
    }
    ck_assert_int_eq(tokens_fetched(), 1);
    char *ct = tl_req_header(&fake, "^/token$", 0, "Content-Type");
    ck_assert_str_eq(ct, "application/x-www-form-urlencoded");
    free(ct);
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.token_refreshes, 1);
    ck_assert_uint_eq(st.token_errors, 0);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_refresh_before_expiry)
{
    NEED_FAKE();
    tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"token_expires_in\":4}", NULL);
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    conf.refresh_margin_ms = 1500; /* refresh 2.5 s into a 4 s token */
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    char *t1, *t2, *t3;
    ck_assert_msg(sb_gcp_client_token(c, &t1, err, sizeof err) == 0, "%s", err);
    usleep(500000);
    ck_assert_int_eq(sb_gcp_client_token(c, &t2, err, sizeof err), 0);
    ck_assert_str_eq(t1, t2);
    ck_assert_int_eq(tokens_fetched(), 1);
    usleep(2300000); /* 2.8 s: inside the margin, still before expiry */
    ck_assert_int_eq(sb_gcp_client_token(c, &t3, err, sizeof err), 0);
    ck_assert_str_ne(t1, t3);
    ck_assert_int_eq(tokens_fetched(), 2);
    /* The refreshed token works against the API. */
    sb_gcp_response r;
    ck_assert_msg(get_topic(c, "a2", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    free(t1);
    free(t2);
    free(t3);
    sb_gcp_client_destroy(c);
}
END_TEST

typedef struct caller {
    sb_gcp_client *c;
    pthread_barrier_t *b;
    char *tok;
    int rc;
} caller;

static void *call_token(void *p)
{
    caller *k = p;
    char err[512];
    pthread_barrier_wait(k->b);
    k->rc = sb_gcp_client_token(k->c, &k->tok, err, sizeof err);
    return NULL;
}

START_TEST(test_concurrent_callers_share_one_refresh)
{
    NEED_FAKE();
    /* A slow token endpoint makes sure every caller arrives mid-fetch. */
    tl_fault(&fake, "{\"path_regex\":\"^/token$\",\"kind\":\"latency\",\"latency_ms\":300}");
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    enum { N = 16 };
    pthread_t th[N];
    caller k[N];
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, N);
    for (int i = 0; i < N; i++) {
        k[i] = (caller){c, &b, NULL, -1};
        pthread_create(&th[i], NULL, call_token, &k[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(k[i].rc, 0);
        ck_assert_str_eq(k[i].tok, k[0].tok);
    }
    for (int i = 0; i < N; i++)
        free(k[i].tok);
    pthread_barrier_destroy(&b);
    ck_assert_int_eq(tokens_fetched(), 1);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_failed_refresh_counted_while_token_still_valid)
{
    NEED_FAKE();
    tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"token_expires_in\":4}", NULL);
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    conf.refresh_margin_ms = 3000; /* at most half the life: refresh 2 s into a 4 s token */
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    char *t1, *t2, *t3;
    ck_assert_msg(sb_gcp_client_token(c, &t1, err, sizeof err) == 0, "%s", err);
    usleep(2300000);
    /* The refresh fails, but the current token is still good: it is used... */
    tl_fault(&fake, "{\"path_regex\":\"^/token$\",\"status\":400,\"count\":1}");
    ck_assert_msg(sb_gcp_client_token(c, &t2, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(t1, t2);
    ck_assert_int_eq(tokens_fetched(), 2);
    /* ... and the failed attempt is counted all the same */
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.token_refreshes, 1);
    ck_assert_uint_eq(st.token_errors, 1);
    /* no new attempt for a while (10 s), so nothing more to count */
    ck_assert_int_eq(sb_gcp_client_token(c, &t3, err, sizeof err), 0);
    ck_assert_int_eq(tokens_fetched(), 2);
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.token_errors, 1);
    free(t1);
    free(t2);
    free(t3);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_concurrent_callers_share_one_failed_refresh)
{
    NEED_FAKE();
    /* Each fetch is two attempts, the second a second after the first
     * (Retry-After), so every caller arrives while the first one fetches. */
    tl_fault(&fake, "{\"path_regex\":\"^/token$\",\"status\":503,\"retry_after\":1}");
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    conf.max_attempts = 2;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    enum { N = 16 };
    pthread_t th[N];
    caller k[N];
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, N);
    for (int i = 0; i < N; i++) {
        k[i] = (caller){c, &b, NULL, 0};
        pthread_create(&th[i], NULL, call_token, &k[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&b);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(k[i].rc, -1);
        ck_assert_ptr_null(k[i].tok);
    }
    /* one failed fetch (of two attempts) for all of them, counted once */
    int fetches = tokens_fetched() / 2;
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_int_ge(fetches, 1);
    ck_assert_int_lt(fetches, N);
    ck_assert_uint_eq(st.token_errors, (uint64_t)fetches);
    ck_assert_uint_eq(st.token_refreshes, 0);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_401_refresh_and_retry_once)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    sb_gcp_response r;
    ck_assert_msg(get_topic(c, "a4", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tokens_fetched(), 1);

    /* One 401 (token revoked): new token, one retry, success. */
    tl_fault(&fake, "{\"path_regex\":\"topics/a4$\",\"status\":401,\"count\":1}");
    sb_gcp_request get = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/a4", .idempotent = 1};
    ck_assert_msg(sb_gcp_request_send(c, &get, &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    ck_assert_int_eq(r.attempts, 2);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tokens_fetched(), 2);

    /* 401 every time: exactly one refresh and one retry, then the error. */
    tl_fault(&fake, "{\"path_regex\":\"topics/a4$\",\"method\":\"PUT\",\"status\":401}");
    sb_gcp_request req = {.size = sizeof(sb_gcp_request), .method = "PUT", .url = "/v1/projects/p/topics/a4", .headers = json_hdr, .body = "{}",
                          .body_len = 2, .idempotent = 1};
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_HTTP_ERROR);
    ck_assert_int_eq(r.status, 401);
    ck_assert_int_eq(r.attempts, 2);
    ck_assert_msg(strstr(err, "HTTP 401 UNAUTHENTICATED") != NULL, "%s", err);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tokens_fetched(), 3);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_token_error_on_a_retry_keeps_the_earlier_error)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char err[2048];
    sa_conf(&conf, sa_file);
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    sb_gcp_response r;
    ck_assert_msg(get_topic(c, "a13", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);

    /* The token is refused (401), and the new one cannot be had: the
     * operator sees the token error and the 401 that led to it. */
    tl_fault(&fake, "{\"path_regex\":\"topics/a13$\",\"status\":401,\"count\":1}");
    tl_fault(&fake, "{\"path_regex\":\"^/token$\",\"status\":400,\"count\":1}");
    sb_gcp_request get = {.size = sizeof(sb_gcp_request), .method = "GET", .url = "/v1/projects/p/topics/a13", .idempotent = 1};
    ck_assert_int_eq(sb_gcp_request_send(c, &get, &r, err, sizeof err), SB_GCP_AUTH_ERROR);
    ck_assert_int_eq(r.attempts, 1);
    ck_assert_int_eq(r.status, 401);
    sb_gcp_response_clear(&r);
    char want[512];
    snprintf(want, sizeof want, "token endpoint %s rejected service account sb-test@p.iam.gserviceaccount.com",
             token_uri);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    snprintf(want, sizeof want, " (after: GET http://127.0.0.1:%d/v1/projects/p/topics/a13: HTTP 401 UNAUTHENTICATED",
             fake.port);
    ck_assert_msg(strstr(err, want) != NULL, "%s", err);
    ck_assert_msg(err[strlen(err) - 1] == ')', "%s", err);

    /* A token error before the first attempt has nothing before it (the
     * refused token is no longer cached). */
    tl_fault(&fake, "{\"path_regex\":\"^/token$\",\"status\":400,\"count\":1}");
    ck_assert_int_eq(sb_gcp_request_send(c, &get, &r, err, sizeof err), SB_GCP_AUTH_ERROR);
    ck_assert_int_eq(r.attempts, 0);
    sb_gcp_response_clear(&r);
    ck_assert_msg(strstr(err, "(after:") == NULL, "%s", err);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_metadata_server_and_adc_fallback)
{
    NEED_FAKE();
    char host[64], err[1024];
    snprintf(host, sizeof host, "127.0.0.1:%d", fake.port);
    setenv("GCE_METADATA_HOST", host, 1);
    /* A proxy from the environment must not be used for the metadata server. */
    setenv("http_proxy", "http://127.0.0.1:1", 1);
    sb_gcp_conf conf;
    sa_conf(&conf, NULL);
    conf.auth = SB_GCP_AUTH_ADC; /* no GOOGLE_APPLICATION_CREDENTIALS -> metadata */
    conf.no_proxy = "127.0.0.1"; /* ... while API calls do honour it: bypass here */
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(sb_gcp_client_auth_mode(c), SB_GCP_AUTH_METADATA);
    sb_gcp_response r;
    ck_assert_msg(get_topic(c, "a5", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    const char *mdrx = "^/computeMetadata/v1/instance/service-accounts/default/token$";
    ck_assert_int_eq(tl_count(&fake, mdrx, NULL, 0), 1);
    char *flavor = tl_req_header(&fake, mdrx, 0, "Metadata-Flavor");
    ck_assert_ptr_nonnull(flavor);
    ck_assert_str_eq(flavor, "Google");
    free(flavor);
    sb_gcp_client_destroy(c);
    unsetenv("http_proxy");
}
END_TEST

START_TEST(test_metadata_impostor_refused)
{
    NEED_FAKE();
    /* A plain web server answering the metadata path without Metadata-Flavor. */
    tl_sh("mkdir -p '%s/www/computeMetadata/v1/instance/service-accounts/default' && "
          "echo '{\"access_token\":\"x\",\"expires_in\":3600}' > "
          "'%s/www/computeMetadata/v1/instance/service-accounts/default/token'",
          dir, dir);
    char script[2048];
    snprintf(script, sizeof script,
             "import http.server,functools,sys\n"
             "class H(http.server.SimpleHTTPRequestHandler):\n"
             "    log_message=lambda *a:None\n"
             "h=functools.partial(H,directory=sys.argv[1])\n"
             "s=http.server.HTTPServer(('127.0.0.1',0),h)\n"
             "open(sys.argv[2]+'.tmp','w').write(str(s.server_address[1]))\n"
             "import os;os.rename(sys.argv[2]+'.tmp',sys.argv[2])\n"
             "s.serve_forever()\n");
    char spath[1024], www[1024], pf[1024];
    snprintf(spath, sizeof spath, "%s/www.py", dir);
    snprintf(www, sizeof www, "%s/www", dir);
    snprintf(pf, sizeof pf, "%s/www.port", dir);
    tl_write(spath, script, 0600);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("python3", "python3", spath, www, pf, (char *)NULL);
        _exit(127);
    }
    int port = 0;
    for (int i = 0; i < 100 && port == 0; i++) {
        FILE *f = fopen(pf, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (!port)
            usleep(50000);
    }
    ck_assert_int_gt(port, 0);
    char host[64], err[1024];
    snprintf(host, sizeof host, "127.0.0.1:%d", port);
    sb_gcp_conf conf;
    sa_conf(&conf, NULL);
    conf.auth = SB_GCP_AUTH_METADATA;
    conf.metadata_host = host;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    char *tok = NULL;
    ck_assert_int_eq(sb_gcp_client_token(c, &tok, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "answered without \"Metadata-Flavor: Google\"") != NULL, "%s", err);
    sb_gcp_client_destroy(c);
    tl_proc p = {pid, port};
    tl_stop(&p);
}
END_TEST

START_TEST(test_adc_uses_google_application_credentials)
{
    NEED_FAKE();
    setenv("GOOGLE_APPLICATION_CREDENTIALS", sa_file, 1);
    setenv("GCE_METADATA_HOST", "127.0.0.1:1", 1);
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, NULL);
    conf.auth = SB_GCP_AUTH_DEFAULT;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(sb_gcp_client_auth_mode(c), SB_GCP_AUTH_SERVICE_ACCOUNT);
    sb_gcp_response r;
    ck_assert_msg(get_topic(c, "a6", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tokens_fetched(), 1);
    sb_gcp_client_destroy(c);
}
END_TEST

static void bad_key(const char *key_file, int allow_insecure, const char *want)
{
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, key_file);
    conf.allow_insecure_key_file = allow_insecure;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c == NULL, "accepted %s", key_file);
    ck_assert_msg(strcmp(err, want) == 0, "got  [%s]\nwant [%s]", err, want);
    ck_assert_msg(strstr(err, "PRIVATE KEY") == NULL && strstr(err, "MII") == NULL, "key material leaked: %s", err);
}

START_TEST(test_key_file_errors)
{
    NEED_FAKE();
    char p[512], want[2048];

    snprintf(p, sizeof p, "%s/none.json", dir);
    snprintf(want, sizeof want, "key file %s does not exist", p);
    bad_key(p, 0, want);

    snprintf(p, sizeof p, "%s/notjson.json", dir);
    tl_write(p, "{\"type\": \"service_account\",\n \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIE", 0600);
    snprintf(want, sizeof want, "key file %s is not JSON (syntax error at line 2, column 50)", p);
    bad_key(p, 0, want);

    snprintf(p, sizeof p, "%s/user.json", dir);
    tl_write(p, "{\"type\":\"authorized_user\",\"client_id\":\"x\",\"client_secret\":\"s\",\"refresh_token\":\"r\"}", 0600);
    snprintf(want, sizeof want,
             "key file %s is not a service-account key (\"type\" is \"authorized_user\", expected "
             "\"service_account\"); create one with: gcloud iam service-accounts keys create",
             p);
    bad_key(p, 0, want);

    snprintf(p, sizeof p, "%s/badpem.json", dir);
    tl_write(p,
             "{\"type\":\"service_account\",\"client_email\":\"a@p.iam.gserviceaccount.com\",\"private_key\":"
             "\"-----BEGIN PRIVATE KEY-----\\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\\n-----END PRIVATE KEY-----\\n\"}",
             0600);
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, p);
    ck_assert_ptr_null(sb_gcp_client_new(&conf, err, sizeof err));
    snprintf(want, sizeof want, "key file %s: private_key is not a valid PEM private key (", p);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    ck_assert_msg(strstr(err, "MIIBVQ") == NULL, "key material leaked: %s", err);

    /* A good key with loose permissions: refused, then accepted on request. */
    snprintf(p, sizeof p, "%s/loose.json", dir);
    tl_sh("cp '%s' '%s' && chmod 0644 '%s'", sa_file, p, p);
    snprintf(want, sizeof want,
             "key file %s is readable by group/others (mode 0644); run chmod 600 %s, or set "
             "allow_insecure_key_file to accept it",
             p, p);
    bad_key(p, 0, want);
    conf.key_file = p;
    conf.allow_insecure_key_file = 1;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    sb_gcp_client_destroy(c);

    /* A private key in a directory others can write: they could swap it. */
    char sub[256];
    snprintf(sub, sizeof sub, "%.200s/shared", dir);
    snprintf(p, sizeof p, "%s/key.json", sub);
    tl_sh("mkdir -p '%s' && cp '%s' '%s' && chmod 0600 '%s' && chmod 0777 '%s'", sub, sa_file, p, p, sub);
    snprintf(want, sizeof want,
             "key file %s: its directory %s is writable by group and others (mode 0777); fix it, or set "
             "allow_insecure_key_file to accept it",
             p, sub);
    bad_key(p, 0, want);
    conf.key_file = p;
    c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_clock_skew_rejected_clearly)
{
    NEED_FAKE();
    sb_gcp__clock_offset_s = -7200; /* this host runs two hours late */
    sb_gcp_conf conf;
    char err[2048];
    sa_conf(&conf, sa_file);
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    sb_gcp_response r;
    ck_assert_int_eq(get_topic(c, "a9", &r, err, sizeof err), SB_GCP_AUTH_ERROR);
    ck_assert_int_eq(r.attempts, 0); /* the API call was never sent */
    sb_gcp_response_clear(&r);
    char want[512];
    snprintf(want, sizeof want, "token endpoint %s rejected the JWT for sb-test@p.iam.gserviceaccount.com as expired "
             "or not yet valid: HTTP 400 invalid_grant: Invalid JWT: Token must be a short-lived token", token_uri);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    ck_assert_msg(strstr(err, "the host clock is probably wrong") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "eyJ") == NULL, "JWT leaked: %s", err);
    ck_assert_int_eq(tokens_fetched(), 1); /* a 400 is not retried */
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.token_errors, 1);
    sb_gcp_client_destroy(c);
}
END_TEST

START_TEST(test_unknown_key_rejected_clearly)
{
    NEED_FAKE();
    char *other = tl_make_sa_file(dir, "other", "other", token_uri);
    sb_gcp_conf conf;
    char err[2048];
    sa_conf(&conf, other);
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    char *tok = NULL;
    ck_assert_int_eq(sb_gcp_client_token(c, &tok, err, sizeof err), -1);
    char want[1024];
    snprintf(want, sizeof want,
             "token endpoint %s rejected service account sb-test@p.iam.gserviceaccount.com (key kid-1 from %s): "
             "HTTP 400 invalid_grant: Invalid JWT Signature.; check the key is not deleted or disabled and the "
             "account exists",
             token_uri, other);
    ck_assert_str_eq(err, want);
    sb_gcp_client_destroy(c);
    free(other);
}
END_TEST

START_TEST(test_static_and_none)
{
    NEED_FAKE();
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, NULL);
    conf.auth = SB_GCP_AUTH_NONE;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    sb_gcp_response r;
    ck_assert_int_eq(get_topic(c, "a12", &r, err, sizeof err), SB_GCP_HTTP_ERROR);
    ck_assert_int_eq(r.status, 401); /* the fake requires auth: none sends no header */
    ck_assert_int_eq(r.attempts, 1);  /* and a 401 without a token is not retried */
    sb_gcp_response_clear(&r);
    char *h = tl_req_header(&fake, "topics/a12$", 0, "Authorization");
    ck_assert_ptr_null(h);
    tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"require_auth\":false}", NULL);
    ck_assert_msg(get_topic(c, "a12", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    sb_gcp_client_destroy(c);
    tl_ctl(&fake, 0, "POST", "/_fake/config", "{\"require_auth\":true}", NULL);

    conf.auth = SB_GCP_AUTH_STATIC;
    conf.token = "fake-static-token";
    c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(get_topic(c, "a12", &r, err, sizeof err) == SB_GCP_OK, "%s", err);
    sb_gcp_response_clear(&r);
    ck_assert_int_eq(tokens_fetched(), 0);
    sb_gcp_client_destroy(c);
}
END_TEST

typedef struct hammer {
    sb_gcp_client *c;
    double until;
    int calls, auth_errors, no_wait_backoff;
} hammer;

/* Requests as fast as they come back, as workers retrying would. */
static void *hammer_run(void *p)
{
    hammer *h = p;
    while (tl_now() < h->until) {
        char err[2048];
        sb_gcp_request req = SB_GCP_REQUEST_INIT;
        req.url = "/v1/projects/p/topics/hb";
        req.idempotent = 1;
        req.no_wait = 1;
        sb_gcp_response r;
        sb_gcp_result rc = sb_gcp_request_send(h->c, &req, &r, err, sizeof err);
        h->calls++;
        if (rc == SB_GCP_AUTH_ERROR) {
            h->auth_errors++;
            if (r.retry_after_ms > 0 && strstr(err, "next token attempt in"))
                h->no_wait_backoff++;
        }
        sb_gcp_response_clear(&r);
    }
    return NULL;
}

static int count_in(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    if (f)
        fclose(f);
    return n;
}

/* A token endpoint that refuses: a bounded rate of token requests, shared
 * by every caller of the client, and one log line per state change. */
START_TEST(test_token_failures_back_off_shared)
{
    NEED_FAKE();
    char logp[1024];
    snprintf(logp, sizeof logp, "%s/backoff.log", dir);
    int fd = open(logp, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ck_assert(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    sb_log_setup(SB_LOG_INFO, SB_LOG_TO_STDERR);

    tl_fault(&fake, "{\"path_regex\":\"^/token$\",\"status\":400,\"message\":\"key refused\"}");
    sb_gcp_conf conf;
    char err[1024];
    sa_conf(&conf, sa_file);
    conf.retry_initial_ms = 200;
    conf.retry_max_delay_ms = 800;
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    enum { N = 8 };
    const double window = 3.0;
    pthread_t th[N];
    hammer h[N];
    double t0 = tl_now();
    for (int i = 0; i < N; i++) {
        h[i] = (hammer){c, t0 + window, 0, 0, 0};
        pthread_create(&th[i], NULL, hammer_run, &h[i]);
    }
    int calls = 0, backoff = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(h[i].auth_errors, h[i].calls);
        calls += h[i].calls;
        backoff += h[i].no_wait_backoff;
    }
    /* Delays of at least 100, 200, 400, 400 ... ms (half of each cap): at
     * most 1 + 1 + 1 + 1 + 6 attempts in 3 s, whatever the callers did. */
    int fetched = tokens_fetched();
    ck_assert_msg(fetched >= 3 && fetched <= 10, "%d token requests in %.0f s (%d calls)", fetched, window, calls);
    ck_assert_int_gt(calls, 10 * fetched); /* the rest were answered from the backoff */
    ck_assert_int_gt(backoff, 0);
    ck_assert_int_eq(tl_count(&fake, "topics/hb$", NULL, 0), 0); /* no API call without a token */
    sb_gcp_stats st;
    sb_gcp_client_stats(c, &st);
    ck_assert_uint_eq(st.token_errors, (uint64_t)fetched);

    /* The endpoint recovers: the next attempt after the backoff works. */
    tl_ctl(&fake, 0, "DELETE", "/_fake/faults", NULL, NULL);
    usleep(900000);
    char *tok = NULL;
    ck_assert_msg(sb_gcp_client_token(c, &tok, err, sizeof err) == 0, "%s", err);
    free(tok);
    sb_gcp_client_destroy(c);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    ck_assert_int_eq(count_in(logp, "gcp auth: cannot get a service_account token"), 1);
    ck_assert_int_eq(count_in(logp, "gcp auth: got a service_account token again after"), 1);
    ck_assert_int_eq(count_in(logp, "key refused"), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gcp_auth");
    TCase *tc = tcase_create("fake");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, test_setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sa_jwt_accepted_and_cached);
    tcase_add_test(tc, test_refresh_before_expiry);
    tcase_add_test(tc, test_concurrent_callers_share_one_refresh);
    tcase_add_test(tc, test_failed_refresh_counted_while_token_still_valid);
    tcase_add_test(tc, test_concurrent_callers_share_one_failed_refresh);
    tcase_add_test(tc, test_401_refresh_and_retry_once);
    tcase_add_test(tc, test_token_error_on_a_retry_keeps_the_earlier_error);
    tcase_add_test(tc, test_metadata_server_and_adc_fallback);
    tcase_add_test(tc, test_metadata_impostor_refused);
    tcase_add_test(tc, test_adc_uses_google_application_credentials);
    tcase_add_test(tc, test_key_file_errors);
    tcase_add_test(tc, test_clock_skew_rejected_clearly);
    tcase_add_test(tc, test_unknown_key_rejected_clearly);
    tcase_add_test(tc, test_static_and_none);
    tcase_add_test(tc, test_token_failures_back_off_shared);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
