/* Pure unit tests of the GCP layer: base64, JWT, redaction, error lines,
 * endpoint resolution, backoff bounds, Retry-After. No network. */
#include "build_config.h"
#include "gcp_internal.h"

#include <check.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

static void b64_is(const char *in, int url, const char *want)
{
    char *got = sb_gcp_base64(in, strlen(in), url);
    ck_assert_str_eq(got, want);
    free(got);
}

START_TEST(test_base64_vectors)
{
    /* RFC 4648 section 10 */
    b64_is("", 0, "");
    b64_is("f", 0, "Zg==");
    b64_is("fo", 0, "Zm8=");
    b64_is("foo", 0, "Zm9v");
    b64_is("foob", 0, "Zm9vYg==");
    b64_is("fooba", 0, "Zm9vYmE=");
    b64_is("foobar", 0, "Zm9vYmFy");
    b64_is("f", 1, "Zg");
    b64_is("fo", 1, "Zm8");
    b64_is("foobar", 1, "Zm9vYmFy");
    const unsigned char bin[] = {0xfb, 0xff, 0xfe};
    char *s = sb_gcp_base64(bin, 3, 0);
    ck_assert_str_eq(s, "+//+");
    free(s);
    s = sb_gcp_base64(bin, 3, 1);
    ck_assert_str_eq(s, "-__-");
    size_t n = 0;
    unsigned char *d = sb_gcp__base64url_decode(s, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert(memcmp(d, bin, 3) == 0);
    free(d);
    free(s);
    ck_assert_ptr_null(sb_gcp__base64url_decode("a+b", &n));
}
END_TEST

static EVP_PKEY *gen_rsa(void)
{
    EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, NULL);
    EVP_PKEY *k = NULL;
    ck_assert(EVP_PKEY_keygen_init(kc) == 1);
    ck_assert(EVP_PKEY_CTX_set_rsa_keygen_bits(kc, 2048) == 1);
    ck_assert(EVP_PKEY_keygen(kc, &k) == 1);
    EVP_PKEY_CTX_free(kc);
    return k;
}

static char *to_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *r = strndup(p, (size_t)n);
    BIO_free(b);
    return r;
}

START_TEST(test_jwt_sign_verify)
{
    EVP_PKEY *gen = gen_rsa();
    char *pem = to_pem(gen);
    char err[256];
    EVP_PKEY *k = sb_gcp__pem_private_key(pem, err, sizeof err);
    ck_assert_msg(k != NULL, "%s", err);
    char *jwt = sb_gcp__jwt_sign(k, "kid-9", "a@p.iam.gserviceaccount.com", SB_GCP_DEFAULT_SCOPE,
                                 "https://oauth2.googleapis.com/token", 1700000000, err, sizeof err);
    ck_assert_msg(jwt != NULL, "%s", err);
    ck_assert_ptr_null(strchr(jwt, '='));
    char *d1 = strchr(jwt, '.');
    char *d2 = strchr(d1 + 1, '.');
    ck_assert_ptr_nonnull(d2);
    char *h64 = strndup(jwt, (size_t)(d1 - jwt));
    char *c64 = strndup(d1 + 1, (size_t)(d2 - d1 - 1));
    size_t n;
    unsigned char *h = sb_gcp__base64url_decode(h64, &n);
    ck_assert_str_eq((char *)h, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"kid-9\"}");
    unsigned char *c = sb_gcp__base64url_decode(c64, &n);
    json_t *claims = json_loads((char *)c, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "iss")), "a@p.iam.gserviceaccount.com");
    ck_assert_str_eq(json_string_value(json_object_get(claims, "scope")), SB_GCP_DEFAULT_SCOPE);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "aud")), "https://oauth2.googleapis.com/token");
    ck_assert_int_eq(json_integer_value(json_object_get(claims, "iat")), 1700000000);
    ck_assert_int_eq(json_integer_value(json_object_get(claims, "exp")), 1700003600);
    json_decref(claims);

    /* The signature verifies with the public half (RSASSA-PKCS1-v1_5 SHA-256). */
    unsigned char *sig = sb_gcp__base64url_decode(d2 + 1, &n);
    ck_assert_uint_eq(n, 256);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ck_assert(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, gen) == 1);
    ck_assert_int_eq(EVP_DigestVerify(ctx, sig, n, (unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    /* ... and not for a changed input. */
    jwt[3] ^= 1;
    EVP_MD_CTX_free(ctx);
    ctx = EVP_MD_CTX_new();
    ck_assert(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, gen) == 1);
    ck_assert_int_ne(EVP_DigestVerify(ctx, sig, n, (unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    EVP_MD_CTX_free(ctx);
    free(sig);
    free(h);
    free(c);
    free(h64);
    free(c64);
    free(jwt);
    EVP_PKEY_free(k);
    EVP_PKEY_free(gen);
    free(pem);
}
END_TEST

START_TEST(test_pem_errors)
{
    char err[256];
    ck_assert_ptr_null(sb_gcp__pem_private_key("not a key", err, sizeof err));
    ck_assert_str_eq(err, "private_key is not PEM (no -----BEGIN line)");
    const char *bad = "-----BEGIN PRIVATE KEY-----\nTUlJQkdhcmJhZ2VTRUNSRVRTVFVGRg==\n-----END PRIVATE KEY-----\n";
    ck_assert_ptr_null(sb_gcp__pem_private_key(bad, err, sizeof err));
    ck_assert_msg(strstr(err, "not a valid PEM private key") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "TUlJ") == NULL, "key text leaked: %s", err);
}
END_TEST

static void redacts(const char *in, const char *want)
{
    char *got = sb_gcp_redact(in);
    ck_assert_msg(strcmp(got, want) == 0, "redact(%s) = %s, want %s", in, got, want);
    free(got);
}

START_TEST(test_redact)
{
    redacts("GET /v1/x HTTP/1.1\r\nAuthorization: Bearer ya29.abc\r\nHost: h\r\n",
            "GET /v1/x HTTP/1.1\r\nAuthorization: [REDACTED]\r\nHost: h\r\n");
    redacts("authorization:Bearer x", "authorization:[REDACTED]");
    redacts("Proxy-Authorization: Basic dXNlcjpwdw==", "Proxy-Authorization: [REDACTED]");
    redacts("sent Bearer ya29.a0AfH6 to server", "sent Bearer [REDACTED] to server");
    redacts("{\"access_token\":\"ya29.secret\",\"expires_in\":3599}",
            "{\"access_token\":\"[REDACTED]\",\"expires_in\":3599}");
    redacts("{\"access_token\" : \"a\\\"b\"}", "{\"access_token\" : \"[REDACTED]\"}");
    redacts("grant_type=urn%3Aietf&assertion=eyJhbGc.eyJpc3M.sig&x=1", "grant_type=urn%3Aietf&assertion=[REDACTED]&x=1");
    redacts("https://h/v1/t?access_token=abc&alt=json", "https://h/v1/t?access_token=[REDACTED]&alt=json");
    redacts("{\"id_token\":\"x\",\"refresh_token\":\"y\",\"client_secret\":\"z\"}",
            "{\"id_token\":\"[REDACTED]\",\"refresh_token\":\"[REDACTED]\",\"client_secret\":\"[REDACTED]\"}");
    redacts("{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"}",
            "{\"private_key\": \"[REDACTED]\"}");
    redacts("key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- end",
            "key: [REDACTED PRIVATE KEY] end");
    redacts("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    /* Words that merely contain a key name are left alone. */
    redacts("my_token=1 tokens=2 {\"tokenCount\":\"3\"}", "my_token=1 tokens=2 {\"tokenCount\":\"3\"}");
    redacts("{\"token\":\"t\"}", "{\"token\":\"[REDACTED]\"}");
    redacts("GET http://nn:9870/webhdfs/v1/x?op=OPEN&user.name=etl&delegation=HAAEZXRsAA: timed out",
            "GET http://nn:9870/webhdfs/v1/x?op=OPEN&user.name=etl&delegation=[REDACTED] timed out"); /* up to a space */
    redacts("PUT https://h/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=ADPycdt: reset",
            "PUT https://h/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=[REDACTED] reset");
    redacts("", "");
    char *n = sb_gcp_redact(NULL);
    ck_assert_str_eq(n, "");
    free(n);
}
END_TEST

static void line_is(long status, const char *body, const char *want)
{
    char *got = sb_gcp_error_line(status, body, body ? strlen(body) : 0);
    ck_assert_msg(strcmp(got, want) == 0, "error_line = [%s], want [%s]", got, want);
    free(got);
}

START_TEST(test_error_line)
{
    line_is(403,
            "{\"error\":{\"code\":403,\"message\":\"User not authorized to perform this action.\","
            "\"status\":\"PERMISSION_DENIED\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.Help\"},"
            "{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"IAM_PERMISSION_DENIED\"}]}}",
            "HTTP 403 PERMISSION_DENIED: User not authorized to perform this action. (reason: IAM_PERMISSION_DENIED)");
    line_is(404,
            "{\"error\":{\"code\":404,\"message\":\"Not found: Table p:d.t\",\"errors\":[{\"domain\":\"global\","
            "\"reason\":\"notFound\",\"message\":\"Not found: Table p:d.t\"}],\"status\":\"NOT_FOUND\"}}",
            "HTTP 404 NOT_FOUND: Not found: Table p:d.t (reason: notFound)");
    line_is(503, "{\"error\":{\"code\":503,\"message\":\"Backend\\nError\",\"errors\":[{\"reason\":\"backendError\"}]}}",
            "HTTP 503: Backend Error (reason: backendError)");
    line_is(400, "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}",
            "HTTP 400 invalid_grant: Invalid JWT Signature.");
    line_is(404, "{\"type\":\"about:blank\",\"title\":\"DAG not found\",\"detail\":\"DAG with dag_id: 'x' not found\","
                 "\"status\":404}",
            "HTTP 404 DAG not found: DAG with dag_id: 'x' not found");
    line_is(502, "<html>\n<head><title>502 Bad Gateway</title></head>\n</html>",
            "HTTP 502: <html> <head><title>502 Bad Gateway</title></head> </html>");
    line_is(500, NULL, "HTTP 500 (empty body)");
    line_is(500, "  \n ", "HTTP 500 (empty body)");
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *got = sb_gcp_error_line(500, big, strlen(big));
    ck_assert_uint_eq(strlen(got), strlen("HTTP 500: ") + 200 + 3);
    free(got);
}
END_TEST

static void clear_emulators(void)
{
    unsetenv("PUBSUB_EMULATOR_HOST");
    unsetenv("STORAGE_EMULATOR_HOST");
    unsetenv("BIGQUERY_EMULATOR_HOST");
}

static void ep_is(const char *svc, const char *override, const char *want, int want_emu)
{
    int emu = -1;
    char err[256];
    char *got = sb_gcp_endpoint(svc, override, &emu, err, sizeof err);
    ck_assert_msg(got != NULL, "%s", err);
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(emu, want_emu);
    free(got);
}

START_TEST(test_endpoint)
{
    clear_emulators();
    ep_is("pubsub", NULL, "https://pubsub.googleapis.com", 0);
    ep_is("storage", NULL, "https://storage.googleapis.com", 0);
    ep_is("bigquery", NULL, "https://bigquery.googleapis.com", 0);
    ep_is("dataproc", NULL, "https://dataproc.googleapis.com", 0);
    ep_is("composer", NULL, "https://composer.googleapis.com", 0);
    ep_is("iamcredentials", NULL, "https://iamcredentials.googleapis.com", 0);
    setenv("PUBSUB_EMULATOR_HOST", "localhost:8085", 1);
    setenv("STORAGE_EMULATOR_HOST", "localhost:4443", 1);
    setenv("BIGQUERY_EMULATOR_HOST", "http://localhost:9050/", 1);
    ep_is("pubsub", NULL, "http://localhost:8085", 1);
    ep_is("storage", NULL, "http://localhost:4443", 1);
    ep_is("bigquery", NULL, "http://localhost:9050", 1);
    ep_is("dataproc", NULL, "https://dataproc.googleapis.com", 0);
    setenv("STORAGE_EMULATOR_HOST", "https://gcs.test:4443", 1);
    ep_is("storage", NULL, "https://gcs.test:4443", 1);
    /* explicit config beats the emulator variable */
    ep_is("pubsub", "https://pubsub.europe-west1.rep.googleapis.com/", "https://pubsub.europe-west1.rep.googleapis.com", 0);
    ep_is("pubsub", "", "http://localhost:8085", 1);
    clear_emulators();
    char err[256];
    ck_assert_ptr_null(sb_gcp_endpoint("spanner", NULL, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "unknown Google service \"spanner\"") != NULL, "%s", err);
}
END_TEST

START_TEST(test_emulator_defaults_auth_none)
{
    clear_emulators();
    setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1", 1);
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    sb_gcp_conf conf;
    sb_gcp_conf_init(&conf);
    conf.service = "pubsub";
    char err[256];
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(sb_gcp_client_auth_mode(c), SB_GCP_AUTH_NONE);
    ck_assert_str_eq(sb_gcp_client_base_url(c), "http://127.0.0.1:1");
    char *tok = (char *)1;
    ck_assert_int_eq(sb_gcp_client_token(c, &tok, err, sizeof err), 0);
    ck_assert_ptr_null(tok);
    sb_gcp_client_destroy(c);
    /* Without the emulator the default is ADC -> metadata (no env var). */
    clear_emulators();
    c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(sb_gcp_client_auth_mode(c), SB_GCP_AUTH_METADATA);
    ck_assert_str_eq(sb_gcp_client_base_url(c), "https://pubsub.googleapis.com");
    sb_gcp_client_destroy(c);
    /* An explicit mode wins over the emulator default. */
    setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1", 1);
    conf.auth = SB_GCP_AUTH_STATIC;
    conf.token = "t0k";
    c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_int_eq(sb_gcp_client_auth_mode(c), SB_GCP_AUTH_STATIC);
    ck_assert_int_eq(sb_gcp_client_token(c, &tok, err, sizeof err), 0);
    ck_assert_str_eq(tok, "t0k");
    free(tok);
    sb_gcp_client_destroy(c);
    clear_emulators();
}
END_TEST

START_TEST(test_backoff_bounds)
{
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(100, 2.0, 60000, 0), 100);
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(100, 2.0, 60000, 1), 200);
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(100, 2.0, 60000, 3), 800);
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(100, 1.3, 60000, 2), 169);
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(100, 2.0, 1000, 10), 1000);
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(100, 2.0, 1000, 100000), 1000);
    ck_assert_int_eq(sb_gcp__backoff_cap_ms(0, 2.0, 1000, 5), 0);
    /* Full jitter: every delay in [0, cap], and the mean grows with n
     * (about cap/2) until the cap. */
    double prev_mean = -1;
    for (int n = 0; n < 6; n++) {
        int64_t cap = sb_gcp__backoff_cap_ms(100, 2.0, 2000, n);
        int64_t lo = cap, hi = 0;
        double sum = 0;
        for (int i = 0; i < 4000; i++) {
            int64_t d = sb_gcp__backoff_delay_ms(100, 2.0, 2000, n);
            ck_assert_msg(d >= 0 && d <= cap, "delay %lld outside [0,%lld]", (long long)d, (long long)cap);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            sum += (double)d;
        }
        double mean = sum / 4000;
        ck_assert_msg(mean > cap * 0.4 && mean < cap * 0.6, "n=%d mean %.1f cap %lld", n, mean, (long long)cap);
        ck_assert_msg(lo < cap / 10 && hi > cap * 9 / 10, "n=%d not spread: %lld..%lld", n, (long long)lo, (long long)hi);
        if (cap < 2000)
            ck_assert(mean > prev_mean);
        prev_mean = mean;
    }
}
END_TEST

START_TEST(test_retry_after_and_status)
{
    /* delay-seconds */
    ck_assert_int_eq(sb_gcp_retry_after_ms("1"), 1000);
    ck_assert_int_eq(sb_gcp_retry_after_ms(" 30 "), 30000);
    ck_assert_int_eq(sb_gcp_retry_after_ms("0"), 0);
    ck_assert_int_eq(sb_gcp_retry_after_ms("86400"), 86400000);
    ck_assert_int_eq(sb_gcp_retry_after_ms("86401"), -1);
    ck_assert_int_eq(sb_gcp_retry_after_ms("1.5"), -1);
    ck_assert_int_eq(sb_gcp_retry_after_ms("-5"), -1);
    ck_assert_int_eq(sb_gcp_retry_after_ms("5 s"), -1);
    ck_assert_int_eq(sb_gcp_retry_after_ms(""), -1);
    ck_assert_int_eq(sb_gcp_retry_after_ms(NULL), -1);
    /* HTTP-date, counted from now: the three forms RFC 9110 makes recipients accept */
    const time_t now = 1445412450; /* Wed, 21 Oct 2015 07:27:30 GMT */
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Oct 2015 07:28:00 GMT", now), 30000);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wednesday, 21-Oct-15 07:28:00 GMT", now), 30000);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed Oct 21 07:28:00 2015", now), 30000);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed Oct  1 07:28:00 2015", now), 0); /* past: no wait */
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("  Thu, 22 Oct 2015 07:27:30 GMT\r\n", now), 86400000);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Thu, 22 Oct 2015 07:27:31 GMT", now), -1); /* over a day */
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Oct 2015 07:28:00 PST", now), -1);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Okt 2015 07:28:00 GMT", now), -1);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Oct 2015 07:28:00 GMT trailing", now), -1);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Oct 2015 24:28:00 GMT", now), -1);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Oct 2015", now), -1);
    /* sscanf's %d takes a sign; a negative field is not a time */
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wed, 21 Oct 2015 07:-1:00 GMT", now), -1);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Wednesday, 21-Oct--1 07:28:00 GMT", now), -1);
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Sun, 29 Feb 2032 00:00:00 GMT", 1961625600 - 5), 5000);
    /* RFC 850's two-digit year: at most 50 years ahead, else the century before */
    ck_assert_int_eq(sb_gcp__retry_after_at_ms("Thursday, 01-Jan-70 00:00:10 GMT", 0), 10000);
    long yes[] = {408, 429, 500, 502, 503, 504};
    long no[] = {200, 400, 401, 403, 404, 409, 412, 501};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        ck_assert(sb_gcp__status_retriable(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        ck_assert(!sb_gcp__status_retriable(no[i]));
    sb_gcp_response r = {0};
    r.status = 503;
    ck_assert(sb_gcp_result_retriable(SB_GCP_HTTP_ERROR, &r));
    r.status = 403; /* credentials or IAM can be fixed: retried later, as classify says */
    ck_assert(sb_gcp_result_retriable(SB_GCP_HTTP_ERROR, &r));
    r.status = 400;
    ck_assert(!sb_gcp_result_retriable(SB_GCP_HTTP_ERROR, &r));
    ck_assert(sb_gcp_result_retriable(SB_GCP_TRANSPORT_ERROR, NULL));
    ck_assert(!sb_gcp_result_retriable(SB_GCP_OK, &r));
}
END_TEST

START_TEST(test_auth_mode_names_and_conf)
{
    ck_assert_int_eq(sb_gcp_auth_mode_parse("adc"), SB_GCP_AUTH_ADC);
    ck_assert_int_eq(sb_gcp_auth_mode_parse("service_account"), SB_GCP_AUTH_SERVICE_ACCOUNT);
    ck_assert_int_eq(sb_gcp_auth_mode_parse("metadata"), SB_GCP_AUTH_METADATA);
    ck_assert_int_eq(sb_gcp_auth_mode_parse("none"), SB_GCP_AUTH_NONE);
    ck_assert_int_eq(sb_gcp_auth_mode_parse("static"), SB_GCP_AUTH_STATIC);
    ck_assert_int_eq(sb_gcp_auth_mode_parse("oauth"), -1);
    ck_assert_str_eq(sb_gcp_auth_mode_name(SB_GCP_AUTH_SERVICE_ACCOUNT), "service_account");
    sb_gcp_conf conf;
    sb_gcp_conf_init(&conf);
    ck_assert_int_eq(conf.tls_verify, 1);
    ck_assert_int_eq(conf.refresh_margin_ms, 225000);
    conf.auth = SB_GCP_AUTH_NONE;
    conf.max_attempts = 0;
    char err[256];
    ck_assert_ptr_null(sb_gcp_client_new(&conf, err, sizeof err));
    ck_assert_msg(strstr(err, "max_attempts") != NULL, "%s", err);
    conf.max_attempts = 3;
    conf.auth = SB_GCP_AUTH_STATIC;
    ck_assert_ptr_null(sb_gcp_client_new(&conf, err, sizeof err));
    ck_assert_msg(strstr(err, "auth static needs token") != NULL, "%s", err);
    conf.auth = SB_GCP_AUTH_SERVICE_ACCOUNT;
    ck_assert_ptr_null(sb_gcp_client_new(&conf, err, sizeof err));
    ck_assert_str_eq(err, "auth service_account needs key_file");
    /* The option fragment declares every documented option once. */
    static const sb_option_def defs[] = {SB_GCP_OPTION_DEFS, {0}};
    const char *names[] = {"auth", "key_file", "token", "scopes", "allow_insecure_key_file", "endpoint", "ca_file",
                           "tls_verify", "proxy", "no_proxy", "connect_timeout", "timeout", "max_attempts",
                           "retry_initial", "retry_max_delay", "deadline"};
    ck_assert_uint_eq(sizeof defs / sizeof defs[0] - 1, sizeof names / sizeof names[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ck_assert_str_eq(defs[i].name, names[i]);
        ck_assert_ptr_nonnull(defs[i].description);
        if (defs[i].default_value) {
            json_t *v = json_loads(defs[i].default_value, JSON_DECODE_ANY, NULL);
            ck_assert_msg(v != NULL, "bad default for %s", defs[i].name);
            json_decref(v);
        }
    }
}
END_TEST

/* One answer, one reading, in every Google plugin (sb_gcp_classify). */
START_TEST(test_classify_answers)
{
    static const struct {
        sb_gcp_result rc;
        long status;
        const char *retry_after;
        unsigned flags;
        sb_result want;
        sb_gcp_cause cause;
        int64_t after_ms;
    } cases[] = {
        {SB_GCP_OK, 200, NULL, 0, SB_RESULT_OK, SB_GCP_CAUSE_NONE, 0},
        {SB_GCP_HTTP_ERROR, 429, "3", 0, SB_RESULT_RETRY, SB_GCP_CAUSE_TRANSIENT, 3000},
        {SB_GCP_HTTP_ERROR, 503, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_TRANSIENT, 0},
        {SB_GCP_HTTP_ERROR, 408, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_TRANSIENT, 0},
        {SB_GCP_TRANSPORT_ERROR, 0, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_TRANSIENT, 0},
        {SB_GCP_AUTH_ERROR, 0, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_AUTH, 0},
        {SB_GCP_HTTP_ERROR, 401, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_AUTH, 0},
        {SB_GCP_HTTP_ERROR, 403, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_AUTH, 0},
        {SB_GCP_HTTP_ERROR, 404, NULL, 0, SB_RESULT_FAIL, SB_GCP_CAUSE_NOT_FOUND, 0},
        {SB_GCP_HTTP_ERROR, 404, NULL, SB_GCP_404_RETRY, SB_RESULT_RETRY, SB_GCP_CAUSE_NOT_FOUND, 0},
        {SB_GCP_HTTP_ERROR, 409, NULL, 0, SB_RESULT_FAIL, SB_GCP_CAUSE_EXISTS, 0},
        {SB_GCP_HTTP_ERROR, 409, NULL, SB_GCP_409_OK, SB_RESULT_OK, SB_GCP_CAUSE_EXISTS, 0},
        {SB_GCP_HTTP_ERROR, 400, "5", 0, SB_RESULT_FAIL, SB_GCP_CAUSE_REFUSED, 0},
        {SB_GCP_INVALID, 0, NULL, 0, SB_RESULT_FAIL, SB_GCP_CAUSE_REFUSED, 0},
        {SB_GCP_CANCELLED, 0, NULL, 0, SB_RESULT_RETRY, SB_GCP_CAUSE_CANCELLED, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sb_gcp_response resp = {.status = cases[i].status, .retry_after = (char *)cases[i].retry_after,
                                .error_line = cases[i].status >= 400 ? (char *)"HTTP xxx: the line" : NULL};
        sb_gcp_outcome o = sb_gcp_classify(cases[i].rc, &resp, "transport said so", cases[i].flags);
        ck_assert_msg(o.result == cases[i].want && o.cause == cases[i].cause && o.retry_after_ms == cases[i].after_ms,
                      "case %zu: result %d cause %d after %lld", i, (int)o.result, (int)o.cause,
                      (long long)o.retry_after_ms);
        if (o.result != SB_RESULT_OK)
            ck_assert_ptr_nonnull(o.reason);
    }
}
END_TEST

/* sb_gcp_result_retriable() and sb_gcp_classify() never disagree. */
START_TEST(test_retriable_agrees_with_classify)
{
    const sb_gcp_result rcs[] = {SB_GCP_OK, SB_GCP_HTTP_ERROR, SB_GCP_TRANSPORT_ERROR, SB_GCP_AUTH_ERROR,
                                 SB_GCP_INVALID, SB_GCP_CANCELLED};
    for (size_t k = 0; k < sizeof rcs / sizeof rcs[0]; k++)
        for (long st = 0; st < 600; st++) {
            if (rcs[k] == SB_GCP_HTTP_ERROR && st < 400)
                continue;
            sb_gcp_response r = {.status = st};
            int retry = sb_gcp_classify(rcs[k], &r, NULL, 0).result == SB_RESULT_RETRY;
            ck_assert_msg(sb_gcp_result_retriable(rcs[k], &r) == retry, "rc %d status %ld", (int)rcs[k], st);
        }
    /* every 5xx, 401, 403, 408, 429: later; other 4xx: never */
    const long later[] = {401, 403, 408, 429, 500, 501, 502, 503, 504, 505, 599};
    const long never[] = {400, 404, 405, 409, 410, 412, 413, 422};
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++) {
        sb_gcp_response r = {.status = later[i]};
        ck_assert_msg(sb_gcp_result_retriable(SB_GCP_HTTP_ERROR, &r), "%ld", later[i]);
    }
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
        sb_gcp_response r = {.status = never[i]};
        ck_assert_msg(!sb_gcp_result_retriable(SB_GCP_HTTP_ERROR, &r), "%ld", never[i]);
    }
    /* the retry delay the layer computed (token backoff) reaches the core */
    sb_gcp_response r = {.retry_after_ms = 1500};
    ck_assert_int_eq(sb_gcp_classify(SB_GCP_AUTH_ERROR, &r, "no token", 0).retry_after_ms, 1500);
    r = (sb_gcp_response){.status = 503, .retry_after_ms = 2000};
    ck_assert_int_eq(sb_gcp_classify(SB_GCP_HTTP_ERROR, &r, NULL, 0).retry_after_ms, 2000);
}
END_TEST

/* Caller structs carry their size; 0 or too small is refused clearly. */
START_TEST(test_struct_sizes_checked)
{
    char err[512];
    sb_gcp_conf conf;
    memset(&conf, 0, sizeof conf);
    conf.auth = SB_GCP_AUTH_NONE;
    conf.max_attempts = 1;
    ck_assert_ptr_null(sb_gcp_client_new(&conf, err, sizeof err));
    ck_assert_msg(strstr(err, "invalid sb_gcp_conf: its size field is 0") && strstr(err, "sb_gcp_conf_init()"), "%s",
                  err);
    sb_gcp_conf_init(&conf);
    ck_assert_uint_eq(conf.size, sizeof conf);
    conf.auth = SB_GCP_AUTH_NONE;
    conf.endpoint = "http://127.0.0.1:1";
    sb_gcp_client *c = sb_gcp_client_new(&conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);

    /* a newer caller's larger conf, filled by this library's init */
    struct {
        sb_gcp_conf conf;
        int64_t future;
    } bigconf;
    memset(&bigconf, 0xa5, sizeof bigconf);
    sb_gcp_conf_init_sized(&bigconf.conf, sizeof bigconf);
    bigconf.conf.auth = SB_GCP_AUTH_NONE;
    sb_gcp_client *c2 = sb_gcp_client_new(&bigconf.conf, err, sizeof err);
    ck_assert_msg(c2 != NULL, "%s", err);
    sb_gcp_client_destroy(c2);

    sb_gcp_request req = {.url = "/x"}; /* no size */
    sb_gcp_response r;
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_INVALID);
    ck_assert_msg(strstr(err, "invalid sb_gcp_request: its size field is 0") != NULL, "%s", err);
    sb_gcp_response_clear(&r);
    req.size = 8;
    ck_assert_int_eq(sb_gcp_request_send(c, &req, &r, err, sizeof err), SB_GCP_INVALID);
    ck_assert_msg(strstr(err, "its size field is 8") != NULL, "%s", err);
    sb_gcp_response_clear(&r);
    /* a newer caller's struct: larger is fine while the unknown tail is unset */
    struct {
        sb_gcp_request req;
        int64_t future;
    } big = {.req = {.size = sizeof big, .url = "/x", .no_auth = 1, .max_attempts = 1, .deadline_ms = 200}};
    ck_assert_int_eq(sb_gcp_request_send(c, &big.req, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    sb_gcp_response_clear(&r);
    big.future = 1;
    ck_assert_int_eq(sb_gcp_request_send(c, &big.req, &r, err, sizeof err), SB_GCP_INVALID);
    ck_assert_msg(strstr(err, "newer SDK") != NULL, "%s", err);
    sb_gcp_response_clear(&r);
    /* an SDK 2.0-2.2 caller's struct ends at batch: accepted, and the 2.3
     * fields past it (low_speed_*, negotiate) read as unset */
    struct {
        sb_gcp_request req;
    } old;
    memset(&old, 0xa5, sizeof old);
    memset(&old.req, 0, offsetof(sb_gcp_request, low_speed_limit));
    old.req.size = offsetof(sb_gcp_request, low_speed_limit);
    old.req.url = "/x";
    old.req.no_auth = 1;
    old.req.max_attempts = 1;
    old.req.deadline_ms = 200;
    ck_assert_int_eq(sb_gcp_request_send(c, &old.req, &r, err, sizeof err), SB_GCP_TRANSPORT_ERROR);
    sb_gcp_response_clear(&r);
    /* multi_add checks the same way, and queues nothing */
    sb_gcp_multi *m = sb_gcp_multi_new(c, 2, err, sizeof err);
    ck_assert_ptr_nonnull(m);
    req.size = 0;
    ck_assert_int_eq(sb_gcp_multi_add(m, &req, NULL, NULL, err, sizeof err), -1);
    ck_assert_uint_eq(sb_gcp_multi_pending(m), 0);
    sb_gcp_multi_destroy(m);
    sb_gcp_client_destroy(c);
}
END_TEST

/* Any header through the accessor; repeats joined as an HTTP list. */
START_TEST(test_header_accessor)
{
    sb_gcp_response r = {0};
    ck_assert_ptr_null(sb_gcp_response_header(&r, "etag"));
    sb_gcp__headers_add(&r, "X-Goog-Hash", 11, "crc32c=AAAAAA==", 15);
    sb_gcp__headers_add(&r, "x-goog-hash", 11, "md5=BBBB", 8);
    sb_gcp__headers_add(&r, "X-Goog-Generation", 17, "17", 2);
    ck_assert_str_eq(sb_gcp_response_header(&r, "x-goog-hash"), "crc32c=AAAAAA==,md5=BBBB");
    ck_assert_str_eq(sb_gcp_response_header(&r, "X-GOOG-GENERATION"), "17");
    ck_assert_ptr_null(sb_gcp_response_header(&r, "x-goog"));
    ck_assert_ptr_null(sb_gcp_response_header(NULL, "x"));
    sb_gcp_response_clear(&r);
    ck_assert_ptr_null(r.priv);
    ck_assert_ptr_null(sb_gcp_response_header(&r, "x-goog-hash"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gcp_pure");
    TCase *tc = tcase_create("pure");
    tcase_add_test(tc, test_base64_vectors);
    tcase_add_test(tc, test_jwt_sign_verify);
    tcase_add_test(tc, test_pem_errors);
    tcase_add_test(tc, test_redact);
    tcase_add_test(tc, test_error_line);
    tcase_add_test(tc, test_endpoint);
    tcase_add_test(tc, test_emulator_defaults_auth_none);
    tcase_add_test(tc, test_backoff_bounds);
    tcase_add_test(tc, test_retry_after_and_status);
    tcase_add_test(tc, test_auth_mode_names_and_conf);
    tcase_add_test(tc, test_classify_answers);
    tcase_add_test(tc, test_retriable_agrees_with_classify);
    tcase_add_test(tc, test_struct_sizes_checked);
    tcase_add_test(tc, test_header_accessor);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
