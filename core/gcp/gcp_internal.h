/*
 * gcp_internal.h - contracts between the files of libsyncbridge_gcp, and
 * the pure functions the unit tests call directly. Not installed.
 *
 *   common.c    defaults, backoff, Retry-After, results, cancel tokens,
 *               response headers                       (calls no other file)
 *   multi.c     many transfers on one thread            (sb_gcp_multi_*)
 *   http.c      client, handle pool, tokens, blocking send loop (sb_gcp_client_*)
 *   xfer.c      one transfer: request checks, curl setup, callbacks, what an
 *               attempt's outcome means (retry, redirect, done)
 *   auth.c      token providers, shared refresh, fetch backoff (sb_gcp__auth_*)
 *   jwt.c       RS256 JWT, base64                       (sb_gcp__jwt_*)
 *   gerror.c    error body -> one line                  (sb_gcp_error_line)
 *   redact.c    secrets out of log lines                (sb_gcp_redact)
 *   endpoint.c  base URLs, emulator variables           (sb_gcp_endpoint)
 *   options.c   client from an instance's options
 *   metrics.c   live clients in /metrics               (sb_gcp__metrics_*)
 *
 * Calls go one way: options, multi -> http -> xfer -> auth, metrics, jwt,
 * gerror, redact, endpoint, settle -> common. Where a lower file needs the client (auth
 * sending a token request, metrics reading counters) the client hands it a
 * function to call, so it does not call back up.
 */
#ifndef SB_GCP_INTERNAL_H
#define SB_GCP_INTERNAL_H

#include <syncbridge/gcp.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define SB_GCP_DEFAULT_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define SB_GCP_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define SB_GCP_DEFAULT_METADATA_HOST "metadata.google.internal"

/* ---- common.c ---- */

/* Upper bound of the n-th retry delay (n = 0 for the first retry):
 * min(max_ms, initial_ms * mult^n). */
int64_t sb_gcp__backoff_cap_ms(int64_t initial_ms, double mult, int64_t max_ms, int n);
/* Full jitter: uniform in [0, cap]. */
int64_t sb_gcp__backoff_delay_ms(int64_t initial_ms, double mult, int64_t max_ms, int n);
/* sb_gcp_retry_after_ms() with the wall clock's `now` given (tests). */
int64_t sb_gcp__retry_after_at_ms(const char *value, time_t now);
/* 408, 429, 500, 502, 503, 504. */
int sb_gcp__status_retriable(long status);

/* The size a caller struct must at least have: the end of its 2.0 fields. */
#define SB_GCP__CONF_MIN_SIZE (offsetof(sb_gcp_conf, ins) + sizeof(void *))
#define SB_GCP__REQUEST_MIN_SIZE (offsetof(sb_gcp_request, batch) + sizeof(void *))
/* Copy a caller struct of `size` bytes into `dst` (`dst_size` bytes,
 * zero-filled beyond what the caller has). 0, or -1 with errstr when size
 * is below min_size, or the caller's struct is larger and sets fields this
 * library does not know. `what` names the struct in the message. */
int sb_gcp__copy_sized(void *dst, size_t dst_size, const void *src, size_t size, size_t min_size, const char *what,
                       char *errstr, size_t errstr_size);

/* All headers of one answer (sb_gcp_response.priv). */
void sb_gcp__headers_reset(sb_gcp_response *r);
/* Add one; a repeated name gets ",value" appended. */
void sb_gcp__headers_add(sb_gcp_response *r, const char *name, size_t nl, const char *value, size_t vl);

struct sb_gcp_cancel {
    atomic_int set;
};

/* ---- the client (http.c; its fields are read by xfer.c and multi.c) ---- */

#define SB_GCP__POOL_MAX 16 /* idle easy handles kept; more MAY be in use at once */

typedef struct sb_gcp_auth sb_gcp_auth;

struct sb_gcp_client {
    int listed;       /* in the /metrics list (metrics.c) */
    sb_gcp_conf conf; /* strings owned (copied) */
    char *base_url;
    sb_gcp_auth *auth;
    sb_gcp_cancel cancel; /* sb_gcp_client_cancel() */

    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_mu;
    CURL *pool[SB_GCP__POOL_MAX];
    int npool;

    atomic_uint_fast64_t st_requests, st_attempts, st_2xx, st_3xx, st_4xx, st_5xx, st_transport, st_retries,
        st_token_refreshes, st_token_errors;
};

/* Flags for sb_gcp__send(). */
#define SB_GCP__DIRECT 0x1 /* never through a proxy (metadata server) */

/* sb_gcp_request_send() with internal flags; *metadata_flavor (MAY be
 * NULL) is set to 1 when the response carried "Metadata-Flavor: Google". */
sb_gcp_result sb_gcp__send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp, int flags,
                           int *metadata_flavor, char *errstr, size_t errstr_size);

/* A pooled easy handle (reset, connections kept), and back. NULL if
 * libcurl cannot make one. */
CURL *sb_gcp__handle_get(sb_gcp_client *c);
void sb_gcp__handle_put(sb_gcp_client *c, CURL *h);

/* A token for one attempt: sb_gcp_client_token(), whose fetch does not
 * sleep when no_wait. On failure *wait_ms is the time left before the
 * next fetch attempt (token backoff). */
int sb_gcp__token(sb_gcp_client *c, int no_wait, char **token, int64_t *wait_ms, char *errstr, size_t errstr_size);

/* ---- xfer.c: one transfer ---- */

typedef struct sb_gcp__xfer {
    sb_gcp_client *c;
    sb_gcp_request req; /* the caller's, size-normalised; pointers borrowed */
    int flags;          /* SB_GCP__* */
    sb_gcp_response *resp;
    sb_gcp_cancel *run_cancel; /* a multi run's, MAY be NULL */
    char *url, *surl;   /* current (after redirects) and its redacted form */
    char *origin;       /* scheme://host:port of the request's own URL */
    const char *method;
    int drop_body;      /* a 303 turned it into a GET */
    int use_auth;       /* the client has a token provider and the request wants it */
    int max_attempts;
    int64_t deadline_ms, start_us, deadline_us;
    int refreshed_for_401, retries;
    char prev[CURL_ERROR_SIZE + 512]; /* why the previous attempt failed */
    /* one attempt */
    CURL *h;
    struct curl_slist *hdrs;
    char *auth_hdr;
    const char *token; /* borrowed from the driver for the attempt */
    size_t cap;
    long cur_status;   /* of the answer being read */
    int metadata_flavor, read_started, write_failed;
    uint64_t delivered; /* body bytes handed to write_cb, all attempts */
    int64_t t0_us;
    char curl_err[CURL_ERROR_SIZE];
    sb_gcp_result result;
} sb_gcp__xfer;

/* Check and copy the request; resp is cleared. SB_GCP_OK, or
 * SB_GCP_INVALID with errstr (then nothing to free). */
sb_gcp_result sb_gcp__xfer_init(sb_gcp__xfer *x, sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp,
                                int flags, char *errstr, size_t errstr_size);
void sb_gcp__xfer_free(sb_gcp__xfer *x);
/* Whether the next attempt sends a token (the current URL's origin). */
int sb_gcp__xfer_wants_token(const sb_gcp__xfer *x);
/* Any of the request's cancel sources is set. */
int sb_gcp__xfer_cancelled(const sb_gcp__xfer *x);
/* End it as cancelled / for want of a token (wait_ms: token backoff). */
void sb_gcp__xfer_end_cancelled(sb_gcp__xfer *x, char *errstr, size_t errstr_size);
void sb_gcp__xfer_end_no_token(sb_gcp__xfer *x, int64_t wait_ms, char *errstr, size_t errstr_size);
/* Set handle h up for the next attempt with `token` (MAY be NULL; kept
 * until sb_gcp__xfer_complete()). */
void sb_gcp__xfer_prepare(sb_gcp__xfer *x, CURL *h, const char *token);
/* After the attempt's transfer ended with rc: 1 done (x->result, errstr
 * set), or 0 to go again after *delay_ms (0: at once). */
int sb_gcp__xfer_complete(sb_gcp__xfer *x, CURLcode rc, int64_t *delay_ms, char *errstr, size_t errstr_size);


/* ---- auth.c ---- */

/* How auth sends a token request: sb_gcp__send() on the client that asked
 * for the token, handed down by http.c (auth never calls http.c). */
typedef struct sb_gcp__transport {
    sb_gcp_result (*send)(void *ud, const sb_gcp_request *req, sb_gcp_response *resp, int flags,
                          int *metadata_flavor, char *errstr, size_t errstr_size);
    void *ud;
} sb_gcp__transport;

/* `mode` is already resolved (not DEFAULT). Checks a key file now.
 * The caller owns the result; free with sb_gcp__auth_free(). */
sb_gcp_auth *sb_gcp__auth_new(const sb_gcp_conf *conf, sb_gcp_auth_mode mode, char *errstr, size_t errstr_size);
void sb_gcp__auth_free(sb_gcp_auth *a);
sb_gcp_auth_mode sb_gcp__auth_mode(const sb_gcp_auth *a);
/* 0 with a malloc'd token (NULL for NONE), or -1 with errstr. *fetch
 * says what this call itself did at the token endpoint: 1 fetched a
 * token, -1 tried and failed (also when the current token is still
 * valid and returned), 0 nothing (a cached token, a waiter sharing
 * another caller's fetch, or a failure inside the fetch backoff). So
 * counting *fetch counts each attempt once. On failure *wait_ms (MAY be
 * NULL) is the time left before the next fetch is allowed.
 * no_wait: the fetch's own request does not sleep between attempts.
 * Thread-safe. */
int sb_gcp__auth_token(sb_gcp_auth *a, const sb_gcp__transport *t, int no_wait, char **token, int *fetch,
                       int64_t *wait_ms, char *errstr, size_t errstr_size);
void sb_gcp__auth_invalidate(sb_gcp_auth *a, const char *token);
/* Whether a 401 can be cured by fetching a new token. */
int sb_gcp__auth_refreshable(const sb_gcp_auth *a);

/* Test hook: seconds added to the clock used for JWT iat/exp (simulates a
 * skewed host clock). 0 in production. */
extern volatile long sb_gcp__clock_offset_s;

/* ---- jwt.c ---- */

/* Parse a PEM private key (RSA). NULL with errstr (never the key text). */
EVP_PKEY *sb_gcp__pem_private_key(const char *pem, char *errstr, size_t errstr_size);
/* A signed RS256 JWT for the JWT bearer grant: header {"alg","typ","kid"}
 * (kid omitted if NULL), claims iss, scope, aud, iat, exp = iat + 3600.
 * malloc'd; NULL with errstr. */
char *sb_gcp__jwt_sign(EVP_PKEY *key, const char *kid, const char *iss, const char *scope, const char *aud,
                       int64_t iat, char *errstr, size_t errstr_size);
/* Decode base64url without padding (tests); malloc'd, *len set. */
unsigned char *sb_gcp__base64url_decode(const char *s, size_t *len);


/* ---- metrics.c: live clients listed for /metrics ---- */

/* A client's counters, read on every scrape. */
typedef void (*sb_gcp__stats_fn)(const void *client, sb_gcp_stats *out);
/* List a client; `conf` (its instance and service label it) and the
 * client stay valid until sb_gcp__metrics_remove(c), which waits out a
 * scrape reading them. */
void sb_gcp__metrics_add(const void *c, const sb_gcp_conf *conf, sb_gcp__stats_fn stats);
void sb_gcp__metrics_remove(const void *c);

#endif
