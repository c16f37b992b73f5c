/* http.c - the HTTP client every Google plugin uses: libcurl easy handles
 * in a pool, one CURLSH for DNS and TLS sessions, tokens from the auth
 * provider, and the blocking send loop that sleeps between retries
 * (xfer.c says what each attempt's outcome means). */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <syncbridge/log.h>
#include <time.h>

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
    if (!conf || conf->size < SB_GCP__CONF_MIN_SIZE) {
        sb_err(errstr, errstr_size,
               "invalid sb_gcp_conf: its size field is %zu, at least %zu expected; fill it with sb_gcp_conf_init() "
               "first", conf ? conf->size : 0, (size_t)SB_GCP__CONF_MIN_SIZE);
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
    atomic_init(&c->cancel.set, 0);
    sb_gcp_conf cur; /* the caller's conf as this library's version of the struct */
    if (sb_gcp__copy_sized(&cur, sizeof cur, conf, conf->size, SB_GCP__CONF_MIN_SIZE, "sb_gcp_conf", errstr,
                           errstr_size) != 0) {
        free(c);
        free(base);
        return NULL;
    }
    cur.size = sizeof cur;
    conf_copy(&c->conf, &cur);
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

int sb_gcp__token(sb_gcp_client *c, int no_wait, char **token, int64_t *wait_ms, char *errstr, size_t errstr_size)
{
    /* Count what this call did at the token endpoint, not what it returns:
     * a failed refresh may still hand out the current token, and callers
     * that waited for another one's fetch share its result. */
    int fetch = 0;
    sb_gcp__transport t = {send_for_auth, c};
    int rc = sb_gcp__auth_token(c->auth, &t, no_wait, token, &fetch, wait_ms, errstr, errstr_size);
    if (fetch > 0)
        atomic_fetch_add(&c->st_token_refreshes, 1);
    else if (fetch < 0)
        atomic_fetch_add(&c->st_token_errors, 1);
    return rc;
}

int sb_gcp_client_token(sb_gcp_client *c, char **token, char *errstr, size_t errstr_size)
{
    return sb_gcp__token(c, 0, token, NULL, errstr, errstr_size);
}

void sb_gcp_client_cancel(sb_gcp_client *c)
{
    sb_gcp_cancel_set(&c->cancel);
}

void sb_gcp_client_cancel_reset(sb_gcp_client *c)
{
    sb_gcp_cancel_reset(&c->cancel);
}

void sb_gcp_client_invalidate_token(sb_gcp_client *c, const char *token)
{
    sb_gcp__auth_invalidate(c->auth, token);
}

/* ---- handles ---------------------------------------------------------------- */

CURL *sb_gcp__handle_get(sb_gcp_client *c)
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

void sb_gcp__handle_put(sb_gcp_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool < SB_GCP__POOL_MAX) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (h)
        curl_easy_cleanup(h);
}

/* ---- the blocking send loop ----------------------------------------------------- */

/* Sleep up to ms; 1 if the transfer was cancelled meanwhile. */
static int sleep_unless_cancelled(const sb_gcp__xfer *x, int64_t ms)
{
    int64_t until = sb_mono_us() + ms * 1000;
    for (;;) {
        if (sb_gcp__xfer_cancelled(x))
            return 1;
        int64_t left_us = until - sb_mono_us();
        if (left_us <= 0)
            return 0;
        if (left_us > 50000)
            left_us = 50000; /* look at the cancel sources 20 times a second */
        struct timespec ts = {0, (long)left_us * 1000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Attempts until one succeeds, one fails for good, or the attempts, the
 * deadline or the token run out. Every attempt uses one pooled handle. */
sb_gcp_result sb_gcp__send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp, int flags,
                           int *metadata_flavor, char *errstr, size_t errstr_size)
{
    if (metadata_flavor)
        *metadata_flavor = 0;
    sb_gcp__xfer x;
    sb_gcp_result rc = sb_gcp__xfer_init(&x, c, req, resp, flags, errstr, errstr_size);
    if (rc != SB_GCP_OK)
        return rc;
    CURL *h = sb_gcp__handle_get(c);
    if (!h) {
        sb_err(errstr, errstr_size, "%s %s: curl_easy_init failed", x.method, x.surl);
        sb_gcp__xfer_free(&x);
        return SB_GCP_TRANSPORT_ERROR;
    }
    for (;;) {
        if (sb_gcp__xfer_cancelled(&x)) {
            sb_gcp__xfer_end_cancelled(&x, errstr, errstr_size);
            break;
        }
        char *token = NULL;
        int64_t wait_ms = 0;
        if (sb_gcp__xfer_wants_token(&x) &&
            sb_gcp__token(c, x.req.no_wait, &token, &wait_ms, errstr, errstr_size) != 0) {
            sb_gcp__xfer_end_no_token(&x, wait_ms, errstr, errstr_size);
            break;
        }
        sb_gcp__xfer_prepare(&x, h, token);
        CURLcode crc = curl_easy_perform(h);
        if (metadata_flavor)
            *metadata_flavor = x.metadata_flavor;
        int64_t delay = 0;
        int done = sb_gcp__xfer_complete(&x, crc, &delay, errstr, errstr_size);
        wipe_free(token);
        if (done)
            break;
        if (delay > 0 && sleep_unless_cancelled(&x, delay)) {
            sb_gcp__xfer_end_cancelled(&x, errstr, errstr_size);
            break;
        }
    }
    sb_gcp__handle_put(c, h);
    rc = x.result;
    sb_gcp__xfer_free(&x);
    return rc;
}

sb_gcp_result sb_gcp_request_send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp,
                                  char *errstr, size_t errstr_size)
{
    return sb_gcp__send(c, req, resp, 0, NULL, errstr, errstr_size);
}
