/* http.c - the HTTP client every Google plugin uses: libcurl easy handles
 * in a pool, one CURLSH for DNS, TLS sessions and connections, retries with
 * full-jitter exponential backoff, tokens from the auth provider. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syncbridge/log.h>
#include <time.h>

#define POOL_MAX 16 /* idle easy handles kept; more MAY be in use at once */

struct sb_gcp_client {
    int listed;       /* in the /metrics list (metrics.c) */
    sb_gcp_conf conf; /* strings owned (copied) */
    char *base_url;
    sb_gcp_auth *auth;

    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_mu;
    CURL *pool[POOL_MAX];
    int npool;

    atomic_uint_fast64_t st_requests, st_attempts, st_2xx, st_3xx, st_4xx, st_5xx, st_transport, st_retries,
        st_token_refreshes, st_token_errors;
};

/* ---- client lifecycle ---------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userptr)
{
    (void)h, (void)access;
    sb_gcp_client *c = userptr;
    pthread_mutex_lock(&c->share_mu[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userptr)
{
    (void)h;
    sb_gcp_client *c = userptr;
    pthread_mutex_unlock(&c->share_mu[data]);
}

static void conf_copy(sb_gcp_conf *dst, const sb_gcp_conf *src)
{
    *dst = *src;
    dst->service = sb_strdup(src->service);
    dst->endpoint = sb_strdup(src->endpoint);
    dst->key_file = sb_strdup(src->key_file);
    dst->token = sb_strdup(src->token);
    dst->scopes = sb_strdup(src->scopes);
    dst->metadata_host = sb_strdup(src->metadata_host);
    dst->ca_file = sb_strdup(src->ca_file);
    dst->proxy = sb_strdup(src->proxy);
    dst->no_proxy = sb_strdup(src->no_proxy);
    dst->user_agent = sb_strdup(src->user_agent ? src->user_agent : "syncbridge/" PACKAGE_VERSION);
}

static void conf_free(sb_gcp_conf *c)
{
    free((char *)c->service);
    free((char *)c->endpoint);
    free((char *)c->key_file);
    if (c->token)
        OPENSSL_cleanse((char *)c->token, strlen(c->token));
    free((char *)c->token);
    free((char *)c->scopes);
    free((char *)c->metadata_host);
    free((char *)c->ca_file);
    free((char *)c->proxy);
    free((char *)c->no_proxy);
    free((char *)c->user_agent);
}

/* curl_slist_append returns NULL and keeps the list on allocation failure;
 * a request must never go out without a header it was given (the token). */
static struct curl_slist *add_header(struct curl_slist *list, const char *h)
{
    struct curl_slist *l = curl_slist_append(list, h);
    if (!l) {
        fputs("syncbridge: out of memory\n", stderr);
        abort(); /* as sb_xmalloc does */
    }
    return l;
}

/* For /metrics (metrics.c), which lists clients without calling into this file. */
static void stats_of(const void *client, sb_gcp_stats *out)
{
    sb_gcp_client_stats(client, out);
}

sb_gcp_client *sb_gcp_client_new(const sb_gcp_conf *conf, char *errstr, size_t errstr_size)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        sb_err(errstr, errstr_size, "libcurl initialisation failed: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    if (conf->max_attempts < 1 || conf->retry_initial_ms < 0 || conf->retry_max_delay_ms < 0 ||
        conf->retry_multiplier < 1.0 || conf->deadline_ms <= 0 || conf->timeout_ms <= 0 ||
        conf->connect_timeout_ms <= 0) {
        sb_err(errstr, errstr_size,
               "invalid HTTP settings: max_attempts must be >= 1, timeouts and deadline > 0, retry delays >= 0");
        return NULL;
    }
    int emulator = 0;
    char *base = NULL;
    if (conf->service) {
        base = sb_gcp_endpoint(conf->service, conf->endpoint, &emulator, errstr, errstr_size);
        if (!base)
            return NULL;
    } else {
        base = sb_strdup(conf->endpoint ? conf->endpoint : "");
    }
    sb_gcp_auth_mode mode = conf->auth;
    if (mode == SB_GCP_AUTH_DEFAULT)
        mode = emulator ? SB_GCP_AUTH_NONE : SB_GCP_AUTH_ADC;

    sb_gcp_client *c = sb_xcalloc(1, sizeof *c);
    conf_copy(&c->conf, conf);
    c->base_url = base;
    pthread_mutex_init(&c->pool_mu, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_mu[i], NULL);
    c->share = curl_share_init();
    if (!c->share) {
        sb_err(errstr, errstr_size, "curl_share_init failed");
        sb_gcp_client_destroy(c);
        return NULL;
    }
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    /* Not CURL_LOCK_DATA_CONNECT: libcurl does not support sharing live
     * connections between concurrent threads. Each pooled handle keeps its
     * own connections across requests (curl_easy_reset keeps them). */

    c->auth = sb_gcp__auth_new(&c->conf, mode, errstr, errstr_size);
    if (!c->auth) {
        sb_gcp_client_destroy(c);
        return NULL;
    }
    if (!conf->tls_verify)
        sb_log(conf->ins, SB_LOG_WARN, "TLS certificate verification is OFF (tls_verify false); "
                                       "anyone on the path can read and change Google API traffic");
    sb_log(conf->ins, SB_LOG_DEBUG, "gcp client: service %s, base %s, auth %s%s", conf->service ? conf->service : "-",
           *base ? base : "-", sb_gcp_auth_mode_name(mode), emulator ? " (emulator)" : "");
    sb_gcp__metrics_add(c, &c->conf, stats_of);
    c->listed = 1;
    return c;
}


void sb_gcp_client_destroy(sb_gcp_client *c)
{
    if (!c)
        return;
    if (c->listed)
        sb_gcp__metrics_remove(c); /* waits out a scrape reading it */
    sb_gcp__auth_free(c->auth);
    for (int i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    if (c->share)
        curl_share_cleanup(c->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_mu[i]);
    pthread_mutex_destroy(&c->pool_mu);
    conf_free(&c->conf);
    free(c->base_url);
    free(c);
}

const char *sb_gcp_client_base_url(const sb_gcp_client *c)
{
    return c->base_url;
}

sb_gcp_auth_mode sb_gcp_client_auth_mode(const sb_gcp_client *c)
{
    return sb_gcp__auth_mode(c->auth);
}

void sb_gcp_client_stats(const sb_gcp_client *c, sb_gcp_stats *o)
{
    sb_gcp_client *m = (sb_gcp_client *)c; /* atomics are read-only here */
    o->requests = atomic_load(&m->st_requests);
    o->attempts = atomic_load(&m->st_attempts);
    o->status_2xx = atomic_load(&m->st_2xx);
    o->status_3xx = atomic_load(&m->st_3xx);
    o->status_4xx = atomic_load(&m->st_4xx);
    o->status_5xx = atomic_load(&m->st_5xx);
    o->transport_errors = atomic_load(&m->st_transport);
    o->retries = atomic_load(&m->st_retries);
    o->token_refreshes = atomic_load(&m->st_token_refreshes);
    o->token_errors = atomic_load(&m->st_token_errors);
}

/* Auth's token requests go through the client that wants the token (its
 * proxy, TLS settings and handle pool). */
static sb_gcp_result send_for_auth(void *ud, const sb_gcp_request *req, sb_gcp_response *resp, int flags,
                                   int *metadata_flavor, char *errstr, size_t errstr_size)
{
    return sb_gcp__send(ud, req, resp, flags, metadata_flavor, errstr, errstr_size);
}

int sb_gcp_client_token(sb_gcp_client *c, char **token, char *errstr, size_t errstr_size)
{
    /* Count what this call did at the token endpoint, not what it returns:
     * a failed refresh may still hand out the current token, and callers
     * that waited for another one's fetch share its result. */
    int fetch = 0;
    sb_gcp__transport t = {send_for_auth, c};
    int rc = sb_gcp__auth_token(c->auth, &t, token, &fetch, errstr, errstr_size);
    if (fetch > 0)
        atomic_fetch_add(&c->st_token_refreshes, 1);
    else if (fetch < 0)
        atomic_fetch_add(&c->st_token_errors, 1);
    return rc;
}

void sb_gcp_client_invalidate_token(sb_gcp_client *c, const char *token)
{
    sb_gcp__auth_invalidate(c->auth, token);
}

/* ---- one attempt --------------------------------------------------------- */

static CURL *handle_get(sb_gcp_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool > 0)
        h = c->pool[--c->npool];
    pthread_mutex_unlock(&c->pool_mu);
    if (h)
        curl_easy_reset(h); /* keeps connections, DNS and TLS session caches */
    else
        h = curl_easy_init();
    return h;
}

static void handle_put(sb_gcp_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool < POOL_MAX) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (h)
        curl_easy_cleanup(h);
}

typedef struct attempt {
    sb_gcp_response *resp;
    size_t cap;
    int metadata_flavor;
    const sb_gcp_request *req;
    int read_started;
} attempt;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    attempt *a = ud;
    sb_gcp_response *r = a->resp;
    size_t n = size * nmemb;
    if (r->body_len + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        r->body = sb_xrealloc(r->body, cap);
        a->cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static void set_header(char **slot, const char *v, size_t n)
{
    free(*slot);
    *slot = sb_xmalloc(n + 1);
    memcpy(*slot, v, n);
    (*slot)[n] = '\0';
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    attempt *a = ud;
    sb_gcp_response *r = a->resp;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue, say): forget earlier headers. */
        char **slots[] = {&r->location, &r->range, &r->retry_after, &r->x_goog_hash, &r->etag, &r->content_type};
        for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
            free(*slots[i]);
            *slots[i] = NULL;
        }
        a->metadata_flavor = 0;
        return n;
    }
    const char *colon = memchr(ptr, ':', n);
    if (!colon)
        return n;
    size_t nl = (size_t)(colon - ptr);
    const char *v = colon + 1;
    const char *end = ptr + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v);
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(ptr, name, nl) == 0)
    if (IS("Location"))
        set_header(&r->location, v, vl);
    else if (IS("Range"))
        set_header(&r->range, v, vl);
    else if (IS("Retry-After"))
        set_header(&r->retry_after, v, vl);
    else if (IS("x-goog-hash")) {
        /* GCS sends one x-goog-hash per algorithm; keep them comma-joined. */
        if (r->x_goog_hash) {
            char *j = sb_asprintf("%s,%.*s", r->x_goog_hash, (int)vl, v);
            free(r->x_goog_hash);
            r->x_goog_hash = j;
        } else {
            set_header(&r->x_goog_hash, v, vl);
        }
    } else if (IS("ETag"))
        set_header(&r->etag, v, vl);
    else if (IS("Content-Type"))
        set_header(&r->content_type, v, vl);
    else if (IS("Metadata-Flavor"))
        a->metadata_flavor = vl == 6 && strncmp(v, "Google", 6) == 0;
#undef IS
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    attempt *a = ud;
    a->read_started = 1;
    size_t n = a->req->read_cb(buf, size * nmemb, a->req->read_opaque);
    if (n == SB_GCP_READ_ABORT)
        return CURL_READFUNC_ABORT;
    return n;
}

static void response_reset(sb_gcp_response *r)
{
    int attempts = r->attempts;
    sb_gcp_response_clear(r);
    r->attempts = attempts;
}

/* Transport errors after which the request surely never reached the server. */
static int not_sent(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY;
}

static int tls_verify_error(CURLcode rc)
{
    return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE
#if LIBCURL_VERSION_NUM < 0x073e00
           || rc == CURLE_SSL_CACERT
#endif
           || rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

/* Errors no retry can cure. */
static int permanent_transport(CURLcode rc)
{
    return tls_verify_error(rc) || rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ||
           rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR || rc == CURLE_OUT_OF_MEMORY ||
           rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_NOT_BUILT_IN;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void count_status(sb_gcp_client *c, long status)
{
    if (status >= 500)
        atomic_fetch_add(&c->st_5xx, 1);
    else if (status >= 400)
        atomic_fetch_add(&c->st_4xx, 1);
    else if (status >= 300)
        atomic_fetch_add(&c->st_3xx, 1);
    else
        atomic_fetch_add(&c->st_2xx, 1);
}

static int perform(sb_gcp_client *c, CURL *h, const sb_gcp_request *req, const char *method, const char *url,
                   struct curl_slist *hdrs, int flags, int64_t timeout_ms, attempt *a, char *curl_err)
{
    const sb_gcp_conf *cf = &c->conf;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cf->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, cf->low_speed_limit);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)((cf->low_speed_time_ms + 999) / 1000));
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, cf->tls_verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, cf->tls_verify ? 2L : 0L);
    if (cf->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, cf->ca_file);
    if (flags & SB_GCP__DIRECT) {
        curl_easy_setopt(h, CURLOPT_PROXY, "");
        curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    } else {
        if (cf->proxy)
            curl_easy_setopt(h, CURLOPT_PROXY, cf->proxy);
        if (cf->no_proxy)
            curl_easy_setopt(h, CURLOPT_NOPROXY, cf->no_proxy);
    }
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, cf->user_agent);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    if (!req->idempotent && strcmp(method, "GET") != 0) {
        /* libcurl silently re-sends a request once when a reused
         * connection turns out dead; a non-idempotent request must go out
         * at most once, so it gets its own connection. */
        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
    }
    if (req->read_cb) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, a);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    } else if (req->body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
               strcmp(method, "PATCH") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_err[0] = '\0';
    return (int)curl_easy_perform(h);
}

static int is_absolute(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* The URL with secrets masked, for log lines and errors. */
static char *safe_url(const char *url)
{
    return sb_gcp_redact(url);
}

/* The headers of one attempt: the caller's, no 100-continue, chunked for
 * an upload of unknown length, the token, and the metadata server's flavor.
 * *auth_hdr holds the token line, for free_headers() to wipe. */
static struct curl_slist *request_headers(const sb_gcp_request *req, const char *token, int flags, char **auth_hdr)
{
    struct curl_slist *hdrs = NULL;
    for (const char *const *hp = req->headers; hp && *hp; hp++)
        hdrs = add_header(hdrs, *hp);
    hdrs = add_header(hdrs, "Expect:"); /* no 100-continue round trip */
    if (req->read_cb && (int64_t)req->body_len < 0)
        hdrs = add_header(hdrs, "Transfer-Encoding: chunked");
    *auth_hdr = NULL;
    if (token) {
        *auth_hdr = sb_asprintf("Authorization: Bearer %s", token);
        hdrs = add_header(hdrs, *auth_hdr);
    }
    if (flags & SB_GCP__DIRECT)
        hdrs = add_header(hdrs, "Metadata-Flavor: Google");
    return hdrs;
}

static void free_headers(struct curl_slist *hdrs, char *auth_hdr)
{
    curl_slist_free_all(hdrs);
    if (auth_hdr) {
        OPENSSL_cleanse(auth_hdr, strlen(auth_hdr));
        free(auth_hdr);
    }
}

/* What one attempt's outcome means for the request. */
typedef struct verdict {
    sb_gcp_result result;
    int done;             /* finished: OK, or an error that no retry can cure */
    int retry;            /* worth another attempt, budget permitting */
    int no_backoff;       /* retry at once (a refreshed token) */
    int64_t min_delay_ms; /* Retry-After */
    char why[CURL_ERROR_SIZE + 128];
} verdict;

/* An HTTP answer: OK below 400; a 401 with a token that can be refreshed
 * is retried once at once; retriable statuses of an idempotent request
 * are retried after at least Retry-After. */
static void judge_status(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp, const attempt *a,
                         const char *token, int *refreshed_for_401, verdict *v)
{
    if (resp->status < 400) {
        v->result = SB_GCP_OK;
        v->done = 1;
        return;
    }
    v->result = SB_GCP_HTTP_ERROR;
    /* a body echoed by a proxy or emulator could carry a token or a
     * signed assertion: redact before it reaches errstr or a log */
    char *line = sb_gcp_error_line(resp->status, resp->body, resp->body_len);
    resp->error_line = sb_gcp_redact(line);
    free(line);
    snprintf(v->why, sizeof v->why, "%s", resp->error_line);
    /* a streamed body that was read and cannot be rewound is never re-sent */
    int resendable = !req->read_cb || !a->read_started || req->rewind_cb;
    if (resp->status == 401 && token && !*refreshed_for_401 && resendable && sb_gcp__auth_refreshable(c->auth)) {
        /* The token was revoked or expired early: fetch a new one
         * and try once more; the server did not process the call. */
        sb_gcp__auth_invalidate(c->auth, token);
        *refreshed_for_401 = 1;
        v->retry = 1;
        v->no_backoff = 1;
    } else if (sb_gcp__status_retriable(resp->status) && req->idempotent && resendable) {
        v->retry = 1;
        v->min_delay_ms = sb_gcp_retry_after_ms(resp->retry_after);
    }
}

/* No HTTP answer. A TLS verification failure ends the request with its own
 * message in errstr. Otherwise retried when the request surely never left,
 * or when it is idempotent and its body can be sent again. */
static void judge_transport(CURLcode rc, long req_size, const sb_gcp_request *req, const attempt *a,
                            const char *detail, const char *surl, verdict *v, char *errstr, size_t errstr_size)
{
    v->result = SB_GCP_TRANSPORT_ERROR;
    if (tls_verify_error(rc)) {
        sb_err(errstr, errstr_size, "TLS certificate verification failed for %s: %s; set ca_file or check the proxy",
               surl, detail);
        v->done = 1;
        return;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(v->why, sizeof v->why, "timed out (%s)", detail);
    else if (not_sent(rc))
        snprintf(v->why, sizeof v->why, "cannot connect (%s)", detail);
    else
        snprintf(v->why, sizeof v->why, "%s", detail);
    int reached = !not_sent(rc) && req_size > 0;
    if (permanent_transport(rc))
        v->retry = 0;
    else if (!reached && !a->read_started)
        v->retry = 1;
    else if (req->idempotent && (!a->read_started || req->rewind_cb))
        v->retry = 1;
    if (!v->retry && reached && !req->idempotent && !permanent_transport(rc)) {
        size_t l = strlen(v->why);
        snprintf(v->why + l, sizeof v->why - l,
                 "; not retried: the request is not idempotent and may have reached the server");
    }
}

/* The request's retry budget and its deadline. 0 with *delay_ms to wait
 * before the next attempt, or -1 with the reason appended to v->why. */
static int next_attempt_delay(sb_gcp_client *c, const sb_gcp_request *req, const sb_gcp_response *resp,
                              const attempt *a, verdict *v, int max_attempts, int retries, int64_t start,
                              int64_t deadline, int64_t deadline_ms, int64_t *delay_ms)
{
    const sb_gcp_conf *cf = &c->conf;
    if (!v->no_backoff && resp->attempts >= max_attempts) {
        size_t l = strlen(v->why);
        snprintf(v->why + l, sizeof v->why - l, "; gave up after %d attempts", resp->attempts);
        return -1;
    }
    int64_t delay = v->no_backoff ? 0 : sb_gcp__backoff_delay_ms(cf->retry_initial_ms, cf->retry_multiplier,
                                                                  cf->retry_max_delay_ms, retries);
    if (delay < v->min_delay_ms)
        delay = v->min_delay_ms;
    /* Not when the next attempt would have under a tenth of the
     * deadline left to finish in: squeezed in at the end, it timed out
     * and reported "timed out" instead of the error that made us retry. */
    if (sb_mono_us() + (delay + deadline_ms / 10) * 1000 >= deadline) {
        size_t l = strlen(v->why);
        snprintf(v->why + l, sizeof v->why - l, "; gave up after %d attempts and %lld ms (deadline %lld ms)",
                 resp->attempts, (long long)((sb_mono_us() - start) / 1000), (long long)deadline_ms);
        return -1;
    }
    if (req->read_cb && a->read_started && req->rewind_cb && req->rewind_cb(req->read_opaque) != 0) {
        size_t l = strlen(v->why);
        snprintf(v->why + l, sizeof v->why - l, "; cannot retry: rewinding the upload body failed");
        return -1;
    }
    *delay_ms = delay;
    return 0;
}

/* Attempts until one succeeds, one fails for good, or the attempts, the
 * deadline or the token run out. Every attempt uses one pooled handle. */
sb_gcp_result sb_gcp__send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp, int flags,
                           int *metadata_flavor, char *errstr, size_t errstr_size)
{
    const sb_gcp_conf *cf = &c->conf;
    memset(resp, 0, sizeof *resp);
    if (metadata_flavor)
        *metadata_flavor = 0;
    if (!req || !req->url || (req->read_cb && req->body)) {
        sb_err(errstr, errstr_size, "invalid request: url is required, and body and read_cb exclude each other");
        return SB_GCP_INVALID;
    }
    atomic_fetch_add(&c->st_requests, 1);
    const char *method = req->method ? req->method : (req->body || req->read_cb) ? "POST" : "GET";
    char *url = is_absolute(req->url) ? sb_strdup(req->url) : sb_asprintf("%s%s", c->base_url, req->url);
    char *surl = safe_url(url);
    int max_attempts = req->max_attempts > 0 ? req->max_attempts : cf->max_attempts;
    int64_t deadline_ms = req->deadline_ms > 0 ? req->deadline_ms : cf->deadline_ms;
    int64_t start = sb_mono_us();
    int64_t deadline = start + deadline_ms * 1000;
    int use_auth = !req->no_auth && sb_gcp__auth_mode(c->auth) != SB_GCP_AUTH_NONE;
    int refreshed_for_401 = 0;
    int retries = 0; /* backoff exponent */
    /* Why the previous attempt failed: when a retry cannot get a token,
     * that error is still the real cause and goes into errstr too. */
    char prev[CURL_ERROR_SIZE + 512] = "";
    sb_gcp_result result = SB_GCP_TRANSPORT_ERROR;
    CURL *h = handle_get(c);
    if (!h) {
        sb_err(errstr, errstr_size, "%s %s: curl_easy_init failed", method, surl);
        free(url);
        free(surl);
        return SB_GCP_TRANSPORT_ERROR;
    }

    for (;;) {
        char *token = NULL;
        if (use_auth && sb_gcp_client_token(c, &token, errstr, errstr_size) != 0) {
            if (prev[0] && errstr && errstr_size > 0) {
                size_t l = strlen(errstr);
                snprintf(errstr + l, errstr_size - l, " (after: %s %s: %s)", method, surl, prev);
            }
            result = SB_GCP_AUTH_ERROR;
            break;
        }
        char *auth_hdr;
        struct curl_slist *hdrs = request_headers(req, token, flags, &auth_hdr);
        int64_t remaining_ms = (deadline - sb_mono_us()) / 1000;
        int64_t timeout_ms = cf->timeout_ms < remaining_ms ? cf->timeout_ms : remaining_ms;
        if (timeout_ms < 1)
            timeout_ms = 1;
        attempt a = {resp, 0, 0, req, 0};
        response_reset(resp);
        resp->attempts++;
        atomic_fetch_add(&c->st_attempts, 1);
        char curl_err[CURL_ERROR_SIZE];
        int64_t t0 = sb_mono_us();
        CURLcode rc = (CURLcode)perform(c, h, req, method, url, hdrs, flags, timeout_ms, &a, curl_err);
        int64_t took_ms = (sb_mono_us() - t0) / 1000;
        free_headers(hdrs, auth_hdr);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        long req_size = 0;
        curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &req_size);
        if (metadata_flavor)
            *metadata_flavor = a.metadata_flavor;
        const char *detail = curl_err[0] ? curl_err : curl_easy_strerror(rc);

        verdict v = {0};
        if (rc == CURLE_OK) {
            resp->status = status;
            count_status(c, status);
            sb_log(cf->ins, SB_LOG_DEBUG, "%s %s -> %ld in %lld ms (attempt %d)", method, surl, status,
                   (long long)took_ms, resp->attempts);
            judge_status(c, req, resp, &a, token, &refreshed_for_401, &v);
        } else {
            atomic_fetch_add(&c->st_transport, 1);
            sb_log(cf->ins, SB_LOG_DEBUG, "%s %s -> %s in %lld ms (attempt %d)", method, surl, detail,
                   (long long)took_ms, resp->attempts);
            judge_transport(rc, req_size, req, &a, detail, surl, &v, errstr, errstr_size);
        }
        free(token);
        result = v.result;
        if (v.done)
            break;
        int64_t delay = 0;
        if (!v.retry || next_attempt_delay(c, req, resp, &a, &v, max_attempts, retries, start, deadline, deadline_ms,
                                           &delay) != 0) {
            sb_err(errstr, errstr_size, "%s %s: %s", method, surl, v.why);
            break;
        }
        if (!v.no_backoff)
            retries++;
        atomic_fetch_add(&c->st_retries, 1);
        sb_log(cf->ins, SB_LOG_DEBUG, "%s %s: %s; retry %d in %lld ms", method, surl, v.why, resp->attempts,
               (long long)delay);
        snprintf(prev, sizeof prev, "%s", v.why);
        if (delay > 0)
            sleep_ms(delay);
    }
    handle_put(c, h);
    free(url);
    free(surl);
    return result;
}

sb_gcp_result sb_gcp_request_send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp,
                                  char *errstr, size_t errstr_size)
{
    return sb_gcp__send(c, req, resp, 0, NULL, errstr, errstr_size);
}
