/* xfer.c - one transfer of the Google access layer, whoever drives it
 * (http.c's blocking loop or multi.c's curl_multi loop): the request's
 * checks, one attempt's curl setup and callbacks (headers, streamed body,
 * upload body, cancellation), and what the attempt's outcome means: done,
 * retry after a delay, or go again at once (a fresh token, a redirect). */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syncbridge/log.h>

/* An error body kept beside a streamed request is for error_line only. */
#define STREAM_ERROR_BODY_MAX (1u << 20)

/* libcurl's buffer for a streamed upload's body (CURLOPT_UPLOAD_BUFFERSIZE,
 * libcurl >= 7.62; 64 KiB by default). At 512 KiB the read callback and
 * the send() under it run an eighth as often: gcs_copy's CPU per GiB fell
 * by a fifth to a quarter (docs/benchmarks.md); 1 MiB gained nothing more.
 * It costs 512 KiB per upload in flight. */
#define UPLOAD_BUFFER (512L << 10)

static int is_absolute(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* "scheme://host:port", lower case, or NULL if the URL cannot be parsed. */
static char *origin_of(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *o = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        o = sb_asprintf("%s://%s:%s", scheme, host, port);
        for (char *p = o; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return o;
}

int sb_gcp_negotiate_available(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v && (v->features & CURL_VERSION_SPNEGO) && (v->features & CURL_VERSION_GSSAPI);
}

sb_gcp_result sb_gcp__xfer_init(sb_gcp__xfer *x, sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp,
                                int flags, char *errstr, size_t errstr_size)
{
    memset(x, 0, sizeof *x);
    memset(resp, 0, sizeof *resp);
    if (!req)
        return sb_err(errstr, errstr_size, "invalid request: NULL"), SB_GCP_INVALID;
    if (sb_gcp__copy_sized(&x->req, sizeof x->req, req, req->size, SB_GCP__REQUEST_MIN_SIZE, "sb_gcp_request", errstr,
                           errstr_size) != 0)
        return SB_GCP_INVALID;
    const sb_gcp_request *r = &x->req;
    if (!r->url || (r->read_cb && r->body) || r->follow_redirects < 0 || r->low_speed_limit < 0 ||
        r->low_speed_time_ms < 0) {
        sb_err(errstr, errstr_size, "invalid request: url is required, body and read_cb exclude each other, "
                                    "follow_redirects, low_speed_limit and low_speed_time_ms >= 0");
        return SB_GCP_INVALID;
    }
    if (r->negotiate && !sb_gcp_negotiate_available()) {
        sb_err(errstr, errstr_size, "invalid request: negotiate (SPNEGO) asked, but this libcurl (%s) was built "
                                    "without GSS-API",
               curl_version_info(CURLVERSION_NOW)->version);
        return SB_GCP_INVALID;
    }
    x->c = c;
    x->flags = flags;
    x->resp = resp;
    x->method = r->method ? r->method : (r->body || r->read_cb) ? "POST" : "GET";
    x->url = is_absolute(r->url) ? sb_strdup(r->url) : sb_asprintf("%s%s", c->base_url, r->url);
    x->surl = sb_gcp_redact(x->url);
    x->origin = origin_of(x->url);
    x->use_auth = !r->no_auth && !r->negotiate && sb_gcp__auth_mode(c->auth) != SB_GCP_AUTH_NONE;
    x->max_attempts = r->max_attempts > 0 ? r->max_attempts : c->conf.max_attempts;
    x->deadline_ms = r->deadline_ms > 0 ? r->deadline_ms : c->conf.deadline_ms;
    x->start_us = sb_mono_us();
    x->deadline_us = x->start_us + x->deadline_ms * 1000;
    x->result = SB_GCP_TRANSPORT_ERROR;
    atomic_fetch_add(&c->st_requests, 1);
    return SB_GCP_OK;
}

static void attempt_free(sb_gcp__xfer *x)
{
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    if (x->auth_hdr) {
        OPENSSL_cleanse(x->auth_hdr, strlen(x->auth_hdr));
        free(x->auth_hdr);
        x->auth_hdr = NULL;
    }
    x->token = NULL;
}

void sb_gcp__xfer_free(sb_gcp__xfer *x)
{
    attempt_free(x);
    free(x->url);
    free(x->surl);
    free(x->origin);
    x->url = x->surl = x->origin = NULL;
}

int sb_gcp__xfer_wants_token(const sb_gcp__xfer *x)
{
    if (!x->use_auth)
        return 0;
    if (x->req.redirect_auth || !x->resp->redirects)
        return 1;
    char *o = origin_of(x->url);
    int same = o && x->origin && strcmp(o, x->origin) == 0;
    free(o);
    return same;
}

int sb_gcp__xfer_cancelled(const sb_gcp__xfer *x)
{
    return sb_gcp_cancel_is_set(&x->c->cancel) || sb_gcp_cancel_is_set(x->req.cancel) ||
           sb_gcp_cancel_is_set(x->run_cancel) || (x->req.batch && sb_batch_stopping(x->req.batch));
}

void sb_gcp__xfer_end_cancelled(sb_gcp__xfer *x, char *errstr, size_t errstr_size)
{
    x->result = SB_GCP_CANCELLED;
    sb_err(errstr, errstr_size, "%s %s: cancelled after %d attempt%s%s%s", x->method, x->surl, x->resp->attempts,
           x->resp->attempts == 1 ? "" : "s", x->prev[0] ? " (last: " : "", x->prev[0] ? x->prev : "");
    if (x->prev[0] && errstr && errstr_size > 0) {
        size_t l = strlen(errstr);
        snprintf(errstr + l, errstr_size - l, ")");
    }
}

void sb_gcp__xfer_end_no_token(sb_gcp__xfer *x, int64_t wait_ms, char *errstr, size_t errstr_size)
{
    x->result = SB_GCP_AUTH_ERROR;
    x->resp->retry_after_ms = wait_ms > 0 ? wait_ms : 0;
    if (x->prev[0] && errstr && errstr_size > 0) {
        size_t l = strlen(errstr);
        snprintf(errstr + l, errstr_size - l, " (after: %s %s: %s)", x->method, x->surl, x->prev);
    }
}

/* ---- callbacks ------------------------------------------------------------ */

static void body_append(sb_gcp__xfer *x, const char *ptr, size_t n)
{
    sb_gcp_response *r = x->resp;
    if (x->req.write_cb && r->body_len + n > STREAM_ERROR_BODY_MAX)
        n = r->body_len < STREAM_ERROR_BODY_MAX ? STREAM_ERROR_BODY_MAX - r->body_len : 0;
    if (!n)
        return;
    if (r->body_len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        r->body = sb_xrealloc(r->body, cap);
        x->cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static int is_redirect(long st)
{
    return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sb_gcp__xfer *x = ud;
    size_t n = size * nmemb;
    if (x->req.write_cb && x->cur_status >= 200 && x->cur_status < 300) {
        size_t got = x->req.write_cb(ptr, n, x->resp, x->req.write_opaque);
        x->delivered += n;
        if (got != n) {
            x->write_failed = 1;
            return 0; /* CURLE_WRITE_ERROR */
        }
        return n;
    }
    if (x->req.follow_redirects > x->resp->redirects && is_redirect(x->cur_status))
        return n; /* the body of a redirect we follow: nobody reads it */
    body_append(x, ptr, n);
    return n;
}

static void set_slot(char **slot, const char *v, size_t n)
{
    free(*slot);
    *slot = sb_asprintf("%.*s", (int)n, v);
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sb_gcp__xfer *x = ud;
    sb_gcp_response *r = x->resp;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        /* A new answer (after 100 Continue, say): forget earlier headers. */
        char **slots[] = {&r->location, &r->range, &r->retry_after, &r->x_goog_hash, &r->etag, &r->content_type};
        for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
            free(*slots[i]);
            *slots[i] = NULL;
        }
        sb_gcp__headers_reset(r);
        x->metadata_flavor = 0;
        const char *sp = memchr(ptr, ' ', n);
        x->cur_status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->status = x->cur_status;
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
    sb_gcp__headers_add(r, ptr, nl, v, vl);
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(ptr, name, nl) == 0)
    if (IS("Location"))
        set_slot(&r->location, v, vl);
    else if (IS("Range"))
        set_slot(&r->range, v, vl);
    else if (IS("Retry-After"))
        set_slot(&r->retry_after, v, vl);
    else if (IS("x-goog-hash"))
        set_slot(&r->x_goog_hash, sb_gcp_response_header(r, "x-goog-hash"),
                 strlen(sb_gcp_response_header(r, "x-goog-hash")));
    else if (IS("ETag"))
        set_slot(&r->etag, v, vl);
    else if (IS("Content-Type"))
        set_slot(&r->content_type, v, vl);
    else if (IS("Metadata-Flavor"))
        x->metadata_flavor = vl == 6 && strncmp(v, "Google", 6) == 0;
#undef IS
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    sb_gcp__xfer *x = ud;
    x->read_started = 1;
    size_t n = x->req.read_cb(buf, size * nmemb, x->req.read_opaque);
    if (n == SB_GCP_READ_ABORT)
        return CURL_READFUNC_ABORT;
    return n;
}

/* Called by libcurl at least about once a second, also while idle. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return sb_gcp__xfer_cancelled(ud);
}

/* ---- one attempt ------------------------------------------------------------ */

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

/* The caller's headers, no 100-continue, chunked for an upload of unknown
 * length, the token, and the metadata server's flavor. */
static void request_headers(sb_gcp__xfer *x, const char *token)
{
    struct curl_slist *hdrs = NULL;
    for (const char *const *hp = x->req.headers; hp && *hp; hp++)
        hdrs = add_header(hdrs, *hp);
    hdrs = add_header(hdrs, "Expect:"); /* no 100-continue round trip */
    if (x->req.read_cb && !x->drop_body && (int64_t)x->req.body_len < 0)
        hdrs = add_header(hdrs, "Transfer-Encoding: chunked");
    if (token) {
        x->auth_hdr = sb_asprintf("Authorization: Bearer %s", token);
        hdrs = add_header(hdrs, x->auth_hdr);
    }
    if (x->flags & SB_GCP__DIRECT)
        hdrs = add_header(hdrs, "Metadata-Flavor: Google");
    x->hdrs = hdrs;
}

void sb_gcp__xfer_prepare(sb_gcp__xfer *x, CURL *h, const char *token)
{
    const sb_gcp_conf *cf = &x->c->conf;
    const sb_gcp_request *req = &x->req;
    const char *method = x->method;
    attempt_free(x);
    x->h = h;
    x->token = token;
    x->cap = 0;
    x->cur_status = 0;
    x->metadata_flavor = 0;
    x->read_started = 0;
    x->write_failed = 0;
    /* Forget the previous attempt's answer, not the count of attempts. */
    int attempts = x->resp->attempts, redirects = x->resp->redirects;
    sb_gcp_response_clear(x->resp);
    x->resp->attempts = attempts + 1;
    x->resp->redirects = redirects;
    atomic_fetch_add(&x->c->st_attempts, 1);
    request_headers(x, token);

    int64_t remaining_ms = (x->deadline_us - sb_mono_us()) / 1000;
    int64_t timeout_ms = cf->timeout_ms < remaining_ms ? cf->timeout_ms : remaining_ms;
    if (timeout_ms < 1)
        timeout_ms = 1;
    curl_easy_setopt(h, CURLOPT_URL, x->url);
    curl_easy_setopt(h, CURLOPT_SHARE, x->c->share);
    curl_easy_setopt(h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    /* Redirects are followed here, not by libcurl, so the token's origin
     * rule and the method rules are ours. */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cf->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    long low_speed = req->low_speed_limit > 0 ? req->low_speed_limit : cf->low_speed_limit;
    int64_t low_speed_ms = req->low_speed_time_ms > 0 ? req->low_speed_time_ms : cf->low_speed_time_ms;
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, low_speed);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)((low_speed_ms + 999) / 1000));
    if (req->negotiate) {
        /* `curl --negotiate -u :`: the ticket comes from the credential
         * cache, the empty user name only switches authentication on */
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_NEGOTIATE);
        curl_easy_setopt(h, CURLOPT_USERPWD, ":");
    }
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, cf->tls_verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, cf->tls_verify ? 2L : 0L);
    if (cf->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, cf->ca_file);
    if (x->flags & SB_GCP__DIRECT) {
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
    /* A streamed body is handed over as sent: the caller may check its
     * length and hash against the server's. */
    if (!req->write_cb)
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->curl_err);
    if (!req->idempotent && strcmp(method, "GET") != 0) {
        /* libcurl silently re-sends a request once when a reused
         * connection turns out dead; a non-idempotent request must go out
         * at most once, so it gets its own connection. */
        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
    }
    /* the blocking path reuses one handle for every attempt: a method set
     * for an earlier attempt (a PUT answered 303) must not carry over */
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    if (x->drop_body) {
        if (strcmp(method, "HEAD") == 0)
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        else
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (req->read_cb) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, x);
#if LIBCURL_VERSION_NUM >= 0x073e00
        curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, UPLOAD_BUFFER);
#endif
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
    x->curl_err[0] = '\0';
    x->t0_us = sb_mono_us();
}

/* ---- what an attempt's outcome means --------------------------------------- */

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

typedef struct verdict {
    int done;             /* finished: OK, or an error that no retry can cure */
    int retry;            /* worth another attempt, budget permitting */
    int no_backoff;       /* again at once (a refreshed token) */
    int64_t min_delay_ms; /* Retry-After */
    char why[CURL_ERROR_SIZE + 256];
} verdict;

/* Whether the body can be sent again (not read yet, or rewound). */
static int resendable(const sb_gcp__xfer *x)
{
    return x->drop_body || !x->req.read_cb || !x->read_started || x->req.rewind_cb;
}

static int rewind_body(sb_gcp__xfer *x)
{
    if (x->drop_body || !x->req.read_cb || !x->read_started)
        return 0;
    return x->req.rewind_cb ? x->req.rewind_cb(x->req.read_opaque) : -1;
}

/* A 3xx the request asked to follow: the next URL and method. 1 when it
 * is followed, 0 when the answer stands as it is. */
static int follow(sb_gcp__xfer *x)
{
    long st = x->resp->status;
    if (!is_redirect(st) || x->req.follow_redirects <= x->resp->redirects || !x->resp->location)
        return 0;
    char *next = NULL;
    curl_easy_getinfo(x->h, CURLINFO_REDIRECT_URL, &next);
    if (!next || !is_absolute(next))
        return 0;
    int to_get = st == 303 || ((st == 301 || st == 302) && strcmp(x->method, "POST") == 0);
    if (!to_get && !x->drop_body && rewind_body(x) != 0)
        return 0; /* the body cannot be sent again: the 3xx is the answer */
    char *url = sb_strdup(next); /* owned by the handle until its next use */
    free(x->url);
    free(x->surl);
    x->url = url;
    x->surl = sb_gcp_redact(url);
    if (to_get) {
        if (strcmp(x->method, "HEAD") != 0)
            x->method = "GET";
        x->drop_body = 1;
    }
    x->resp->redirects++;
    return 1;
}

static void judge_status(sb_gcp__xfer *x, verdict *v)
{
    sb_gcp_response *resp = x->resp;
    if (resp->status < 400) {
        x->result = SB_GCP_OK;
        v->done = 1;
        return;
    }
    x->result = SB_GCP_HTTP_ERROR;
    /* a body echoed by a proxy or emulator could carry a token or a
     * signed assertion: redact before it reaches errstr or a log */
    char *line = sb_gcp_error_line(resp->status, resp->body, resp->body_len);
    resp->error_line = sb_gcp_redact(line);
    free(line);
    snprintf(v->why, sizeof v->why, "%s", resp->error_line);
    int64_t after = sb_gcp_retry_after_ms(resp->retry_after);
    resp->retry_after_ms = after > 0 ? after : 0;
    if (x->delivered)
        return; /* part of a body was handed over: the caller resumes */
    if (resp->status == 401 && x->token && !x->refreshed_for_401 && resendable(x) &&
        sb_gcp__auth_refreshable(x->c->auth)) {
        /* The token was revoked or expired early: fetch a new one
         * and try once more; the server did not process the call. */
        sb_gcp__auth_invalidate(x->c->auth, x->token);
        x->refreshed_for_401 = 1;
        v->retry = 1;
        v->no_backoff = 1;
    } else if (sb_gcp__status_retriable(resp->status) && x->req.idempotent && resendable(x)) {
        v->retry = 1;
        v->min_delay_ms = resp->retry_after_ms;
    }
}

/* No HTTP answer. A TLS verification failure ends the request with its own
 * message in errstr. Otherwise retried when the request surely never left,
 * or when it is idempotent and its body can be sent again. */
static void judge_transport(sb_gcp__xfer *x, CURLcode rc, long req_size, const char *detail, verdict *v, char *errstr,
                            size_t errstr_size)
{
    x->result = SB_GCP_TRANSPORT_ERROR;
    if (tls_verify_error(rc)) {
        sb_err(errstr, errstr_size, "TLS certificate verification failed for %s: %s; set ca_file or check the proxy",
               x->surl, detail);
        v->done = 1;
        return;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(v->why, sizeof v->why, "timed out (%s)", detail);
    else if (not_sent(rc))
        snprintf(v->why, sizeof v->why, "cannot connect (%s)", detail);
    else if (x->write_failed)
        snprintf(v->why, sizeof v->why, "write callback aborted the transfer after %llu bytes",
                 (unsigned long long)x->delivered);
    else
        snprintf(v->why, sizeof v->why, "%s", detail);
    int reached = !not_sent(rc) && req_size > 0;
    if (permanent_transport(rc) || x->write_failed)
        v->retry = 0;
    else if (x->delivered) {
        size_t l = strlen(v->why);
        snprintf(v->why + l, sizeof v->why - l, "; not retried: %llu bytes of the body were already handed over",
                 (unsigned long long)x->delivered);
    } else if (!reached && !x->read_started)
        v->retry = 1;
    else if (x->req.idempotent && resendable(x))
        v->retry = 1;
    if (!v->retry && reached && !x->req.idempotent && !permanent_transport(rc) && !x->delivered) {
        size_t l = strlen(v->why);
        snprintf(v->why + l, sizeof v->why - l,
                 "; not retried: the request is not idempotent and may have reached the server");
    }
}

#define append(v, ...) \
    do { \
        size_t l_ = strlen((v)->why); \
        snprintf((v)->why + l_, sizeof (v)->why - l_, __VA_ARGS__); \
    } while (0)

/* The retry budget and the deadline. 0 with *delay_ms before the next
 * attempt, or -1 with the reason appended to v->why. */
static int next_attempt_delay(sb_gcp__xfer *x, verdict *v, int64_t *delay_ms)
{
    const sb_gcp_conf *cf = &x->c->conf;
    sb_gcp_response *resp = x->resp;
    if (!v->no_backoff && resp->attempts >= x->max_attempts) {
        append(v, "; gave up after %d attempts", resp->attempts);
        return -1;
    }
    if (!v->no_backoff && x->req.no_wait) {
        if (v->min_delay_ms > 0)
            append(v, "; left to the caller to retry (after %lld ms)", (long long)v->min_delay_ms);
        else
            append(v, "; left to the caller to retry");
        return -1;
    }
    int64_t delay = v->no_backoff ? 0 : sb_gcp__backoff_delay_ms(cf->retry_initial_ms, cf->retry_multiplier,
                                                                  cf->retry_max_delay_ms, x->retries);
    if (delay < v->min_delay_ms)
        delay = v->min_delay_ms;
    /* Not when the next attempt would have under a tenth of the
     * deadline left to finish in: squeezed in at the end, it timed out
     * and reported "timed out" instead of the error that made us retry. */
    if (sb_mono_us() + (delay + x->deadline_ms / 10) * 1000 >= x->deadline_us) {
        append(v, "; gave up after %d attempts and %lld ms (deadline %lld ms)", resp->attempts,
               (long long)((sb_mono_us() - x->start_us) / 1000), (long long)x->deadline_ms);
        return -1;
    }
    if (rewind_body(x) != 0) {
        append(v, "; cannot retry: rewinding the upload body failed");
        return -1;
    }
    *delay_ms = delay;
    return 0;
}

int sb_gcp__xfer_complete(sb_gcp__xfer *x, CURLcode rc, int64_t *delay_ms, char *errstr, size_t errstr_size)
{
    sb_gcp_client *c = x->c;
    const sb_gcp_conf *cf = &c->conf;
    sb_gcp_response *resp = x->resp;
    CURL *h = x->h;
    int64_t took_ms = (sb_mono_us() - x->t0_us) / 1000;
    long status = 0, req_size = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &req_size);
    const char *detail = x->curl_err[0] ? x->curl_err : curl_easy_strerror(rc);
    *delay_ms = 0;

    if (rc == CURLE_ABORTED_BY_CALLBACK && sb_gcp__xfer_cancelled(x)) {
        atomic_fetch_add(&c->st_transport, 1);
        sb_log(cf->ins, SB_LOG_DEBUG, "%s %s -> cancelled after %lld ms (attempt %d)", x->method, x->surl,
               (long long)took_ms, resp->attempts);
        attempt_free(x);
        sb_gcp__xfer_end_cancelled(x, errstr, errstr_size);
        return 1;
    }
    verdict v = {0};
    if (rc == CURLE_OK) {
        resp->status = status;
        count_status(c, status);
        sb_log(cf->ins, SB_LOG_DEBUG, "%s %s -> %ld in %lld ms (attempt %d)", x->method, x->surl, status,
               (long long)took_ms, resp->attempts);
        if (follow(x)) {
            sb_log(cf->ins, SB_LOG_DEBUG, "redirect %d to %s", resp->redirects, x->surl);
            attempt_free(x);
            return 0;
        }
        judge_status(x, &v);
    } else {
        atomic_fetch_add(&c->st_transport, 1);
        sb_log(cf->ins, SB_LOG_DEBUG, "%s %s -> %s in %lld ms (attempt %d)", x->method, x->surl, detail,
               (long long)took_ms, resp->attempts);
        resp->status = 0;
        judge_transport(x, rc, req_size, detail, &v, errstr, errstr_size);
    }
    attempt_free(x);
    if (v.done)
        return 1;
    if (!v.retry || next_attempt_delay(x, &v, delay_ms) != 0) {
        sb_err(errstr, errstr_size, "%s %s: %s", x->method, x->surl, v.why);
        return 1;
    }
    if (!v.no_backoff)
        x->retries++;
    atomic_fetch_add(&c->st_retries, 1);
    sb_log(cf->ins, SB_LOG_DEBUG, "%s %s: %s; retry %d in %lld ms", x->method, x->surl, v.why, resp->attempts,
           (long long)*delay_ms);
    snprintf(x->prev, sizeof x->prev, "%s", v.why);
    return 0;
}
