/*
 * syncbridge/gcp.h - Google Cloud access layer shared by the Google plugins
 * (libsyncbridge_gcp, built when configure has --enable-gcp, the default).
 *
 * Purpose: one HTTP client on libcurl that every Google plugin uses, so
 * connection reuse, timeouts, TLS verification, proxies, retries with
 * jittered exponential backoff, OAuth2 tokens and Google's error JSON are
 * handled once and the same way everywhere.
 *
 *   sb_gcp_client   an HTTP client plus one token provider. A plugin creates
 *                   one per instance (sb_gcp_client_from_instance() in
 *                   create(), sb_gcp_client_destroy() in destroy()).
 *   sb_gcp_request  what to send; sb_gcp_response what came back.
 *
 * Ownership: every object has one owner and one destroy function, named
 * below. Strings passed in a conf or request struct are copied or only
 * read during the call; the caller keeps ownership of them.
 *
 * Threading: a client is thread-safe. Any number of threads MAY call
 * sb_gcp_request_send() and sb_gcp_client_token() on one client at once;
 * they share a pool of connections and one cached token, and when the
 * token needs refreshing only one thread fetches it while the others wait.
 * An sb_gcp_multi (many transfers on one thread) belongs to the thread
 * that runs it. sb_gcp_client_cancel() and sb_gcp_cancel_set() MAY be
 * called from any thread at any time. sb_gcp_client_destroy() MUST NOT
 * run concurrently with any other call on the same client.
 *
 * Struct versions: the caller-allocated structs that carry settings
 * (sb_gcp_conf, sb_gcp_request) start with a `size` field that the caller
 * sets to sizeof the struct it was compiled with (sb_gcp_conf_init() and
 * SB_GCP_REQUEST_INIT do it). A zero or too small size is refused with
 * SB_GCP_INVALID / NULL and a message, so a later SDK can add fields
 * without breaking plugins built against this one. sb_gcp_response is
 * written by the library: new answer data is reached through accessors
 * such as sb_gcp_response_header(), never through new struct fields.
 *
 * Migrating from libsyncbridge_gcp.so.0: start every request with
 * SB_GCP_REQUEST_INIT (or set .size = sizeof(sb_gcp_request)); fill confs
 * with sb_gcp_conf_init() as before; sb_gcp_result_retriable() now agrees
 * with sb_gcp_classify() (401, 403 and every 5xx are retriable too); a
 * plugin inside process() should set no_wait and settle with
 * sb_gcp_settle() rather than let the client sleep.
 *
 * Secrets: no function in this layer writes a private key, a signed JWT or
 * an access token into a log line or an errstr.
 */
#ifndef SYNCBRIDGE_GCP_H
#define SYNCBRIDGE_GCP_H

#include <stddef.h>
#include <stdint.h>
#include <syncbridge/options.h>
#include <syncbridge/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sb_gcp_client sb_gcp_client;
struct sb_gcp_response;

/* ---- configuration --------------------------------------------------- */

typedef enum sb_gcp_auth_mode {
    /* Application default, except when an emulator variable (or nothing
     * else) says otherwise: resolves to SB_GCP_AUTH_NONE when the
     * service's emulator variable is in effect, else SB_GCP_AUTH_ADC. */
    SB_GCP_AUTH_DEFAULT = 0,
    /* $GOOGLE_APPLICATION_CREDENTIALS (a service-account key) if set, else
     * the GCE metadata server. */
    SB_GCP_AUTH_ADC,
    SB_GCP_AUTH_SERVICE_ACCOUNT, /* key_file, JWT exchanged at token_uri */
    SB_GCP_AUTH_METADATA,        /* GCE/GKE/Composer metadata server */
    SB_GCP_AUTH_NONE,            /* no Authorization header (emulators) */
    SB_GCP_AUTH_STATIC           /* `token` sent as is */
} sb_gcp_auth_mode;

/* "adc" "service_account" "metadata" "none" "static" -> mode, or -1. */
int sb_gcp_auth_mode_parse(const char *s);
const char *sb_gcp_auth_mode_name(sb_gcp_auth_mode mode);

typedef struct sb_gcp_conf {
    size_t size; /* sizeof(sb_gcp_conf); set by sb_gcp_conf_init() */

    /* Which Google service the client talks to ("pubsub", "storage",
     * "bigquery", "dataproc", "composer", "iamcredentials") and an
     * explicit base URL override; see sb_gcp_endpoint(). service MAY be
     * NULL for a client that only sends absolute URLs. */
    const char *service;
    const char *endpoint;

    /* Authentication. */
    sb_gcp_auth_mode auth;
    const char *key_file;        /* SERVICE_ACCOUNT (ADC takes $GOOGLE_APPLICATION_CREDENTIALS) */
    const char *token;           /* STATIC */
    const char *scopes;          /* space separated; NULL = cloud-platform */
    int allow_insecure_key_file; /* accept a key file readable by group/others */
    int64_t refresh_margin_ms;   /* refresh when less validity remains; default 225000 (3m45s) */
    const char *metadata_host;   /* host[:port]; NULL = $GCE_METADATA_HOST or metadata.google.internal */

    /* Transport. */
    const char *ca_file;       /* PEM CA bundle; NULL = system store */
    int tls_verify;            /* default 1; 0 disables peer and host checks (logged as a warning) */
    const char *proxy;         /* NULL = libcurl's http_proxy/https_proxy environment handling */
    const char *no_proxy;      /* NULL = $no_proxy */
    int64_t connect_timeout_ms; /* default 10000 */
    int64_t timeout_ms;        /* per attempt, default 60000 */
    long low_speed_limit;      /* bytes/s; abort an attempt slower than this ... default 1 */
    int64_t low_speed_time_ms; /* ... for this long, default 30000 */
    const char *user_agent;    /* default "syncbridge/VERSION" */

    /* Retries (see sb_gcp_request_send()). The same schedule paces token
     * fetches after a failed one, shared by every caller of the client. */
    int max_attempts;          /* including the first; default 6 */
    int64_t retry_initial_ms;  /* default 250 */
    double retry_multiplier;   /* default 2.0 */
    int64_t retry_max_delay_ms; /* cap of one delay, default 32000 */
    int64_t deadline_ms;       /* whole request incl. retries, default 120000 */

    /* Instance used as the log prefix; MAY be NULL. */
    const struct sb_instance *ins;
} sb_gcp_conf;

/* Fill `conf` with the defaults above (all strings NULL) and its size.
 * Call it first, then set what you need: a zeroed struct is not a valid
 * default (and its size 0 is refused). The macro passes the size the
 * caller was compiled with. */
void sb_gcp_conf_init_sized(sb_gcp_conf *conf, size_t size);
#define sb_gcp_conf_init(conf) sb_gcp_conf_init_sized((conf), sizeof *(conf))

/* ---- the client ------------------------------------------------------ */

/* Create a client. Resolves the endpoint and the auth mode, and checks a
 * service-account key file now (existence, permissions, JSON, PEM) so
 * config mistakes fail create() instead of the first request. No network
 * I/O happens here. `conf` and its strings are copied.
 * Returns NULL with a message in errstr on failure.
 * The caller owns the result and MUST free it with sb_gcp_client_destroy(). */
sb_gcp_client *sb_gcp_client_new(const sb_gcp_conf *conf, char *errstr, size_t errstr_size);

/* Build a client from an instance's validated options (the ones
 * SB_GCP_OPTION_DEFS declares; the plugin's table MUST include them) for
 * `service`. A thin layer over sb_gcp_client_new(). Ownership as there. */
sb_gcp_client *sb_gcp_client_from_instance(const struct sb_instance *ins, const char *service,
                                           char *errstr, size_t errstr_size);

/* Free a client, its connections and its cached token. NULL-safe. No other
 * call on the client MAY be in progress. */
void sb_gcp_client_destroy(sb_gcp_client *c);

/* Base URL of the client's service without a trailing slash, e.g.
 * "https://pubsub.googleapis.com" or "http://localhost:8085". Owned by
 * the client; valid until sb_gcp_client_destroy(). "" if no service. */
const char *sb_gcp_client_base_url(const sb_gcp_client *c);

/* The auth mode in effect after resolving DEFAULT and ADC. */
sb_gcp_auth_mode sb_gcp_client_auth_mode(const sb_gcp_client *c);

/* A currently valid access token, fetched or refreshed if needed.
 * On success returns 0 and stores a malloc'd token the caller MUST free
 * in *token (NULL in mode NONE). On failure returns -1 with a message in
 * errstr. Thread-safe; concurrent callers share one refresh. */
int sb_gcp_client_token(sb_gcp_client *c, char **token, char *errstr, size_t errstr_size);

/* Forget `token` if it is still the cached one (the server answered 401
 * to it), so the next call fetches a new one. sb_gcp_request_send()
 * already does this itself.
 *
 * Token fetch failures back off: after a failed fetch, the client makes
 * no new attempt for a while (the retry schedule of the conf: retry_initial
 * doubling up to retry_max_delay, at least any Retry-After), whoever
 * asks; callers in between get the last error at once, with the time
 * left in it. One warning is logged when fetching starts failing and one
 * info line when it works again, not one per attempt. */
void sb_gcp_client_invalidate_token(sb_gcp_client *c, const char *token);

/* ---- cancellation ---------------------------------------------------- */

/* A cancel token: set from any thread, it makes the requests and multi
 * runs that carry it end soon (within about 100 ms, also in the middle
 * of a transfer or a retry delay) with SB_GCP_CANCELLED. It stays set
 * until sb_gcp_cancel_reset(). The caller owns it (sb_gcp_cancel_free()),
 * and it MUST outlive the requests that carry it. */
typedef struct sb_gcp_cancel sb_gcp_cancel;
sb_gcp_cancel *sb_gcp_cancel_new(void);
void sb_gcp_cancel_free(sb_gcp_cancel *k);
void sb_gcp_cancel_set(sb_gcp_cancel *k);   /* thread-safe */
void sb_gcp_cancel_reset(sb_gcp_cancel *k); /* thread-safe */
int sb_gcp_cancel_is_set(const sb_gcp_cancel *k);

/* Cancel every request and multi run in progress on the client, and every
 * later one, until sb_gcp_client_cancel_reset(). For a plugin's cancel()
 * (the daemon is stopping): thread-safe, returns at once. Meant for long,
 * resumable work (a copy that keeps its progress in step state): a short
 * call that is not idempotent is better left to finish, since one cut
 * after it reached the server is sent again after the restart. */
void sb_gcp_client_cancel(sb_gcp_client *c);
void sb_gcp_client_cancel_reset(sb_gcp_client *c);

/* ---- requests -------------------------------------------------------- */

/* Upload body source for large bodies. read: copy up to `size` bytes into
 * buf and return how many, 0 at the end, or SB_GCP_READ_ABORT to fail the
 * request. rewind: go back to the start (called before a retry); if it is
 * NULL, a request whose body was read is not retried. */
#define SB_GCP_READ_ABORT ((size_t)-1)
typedef size_t (*sb_gcp_read_cb)(char *buf, size_t size, void *opaque);
typedef int (*sb_gcp_rewind_cb)(void *opaque);

/* Streamed response body. Called with the body of a 2xx answer as it
 * arrives (the bodies of error answers and redirects still go to
 * resp->body, so error_line works); resp->status and the headers are
 * already set. Return `len` to go on; anything else aborts the request
 * (SB_GCP_TRANSPORT_ERROR, "write callback aborted"). Once bytes were
 * handed over, a failure is not retried: the caller knows how many it got
 * and can resume (e.g. with a Range header). */
typedef size_t (*sb_gcp_write_cb)(const char *data, size_t len, const struct sb_gcp_response *resp, void *opaque);

typedef struct sb_gcp_request {
    size_t size;          /* sizeof(sb_gcp_request): use SB_GCP_REQUEST_INIT */
    const char *method;   /* "GET" "POST" "PUT" "PATCH" "DELETE"; NULL = GET, or POST with a body */
    const char *url;      /* absolute "http(s)://..." or a path "/v1/..." appended to the base URL */
    const char *const *headers; /* NULL-terminated "Name: value" list; MAY be NULL */
    const void *body;     /* MAY be NULL; not copied, MUST stay valid during the call */
    size_t body_len;
    sb_gcp_read_cb read_cb; /* instead of body; body_len then gives the length, or -1 for chunked */
    sb_gcp_rewind_cb rewind_cb;
    void *read_opaque;
    /* Non-zero when sending the request twice is harmless (GET, PUT of the
     * same content, requestId/insertId, GCS preconditions...). A request
     * that is not idempotent is re-sent only when it surely did not reach
     * the server (connect failures). */
    int idempotent;
    int no_auth;          /* do not send an Authorization header */
    int max_attempts;     /* 0 = the client's */
    int64_t deadline_ms;  /* 0 = the client's */

    /* Since SDK 2.0 (size checked). */
    sb_gcp_write_cb write_cb; /* stream a 2xx body here instead of resp->body */
    void *write_opaque;
    /* Follow up to this many redirects (301/302/303/307/308 with a
     * Location); 0 = none, the default (GCS resumable uploads answer 308).
     * 307/308 keep the method and body (a read_cb body needs rewind_cb),
     * 303 and a POST's 301/302 become GET without a body. The
     * Authorization header goes only to the request's own origin (scheme,
     * host and port) unless redirect_auth is set; the caller's headers go
     * everywhere. */
    int follow_redirects;
    int redirect_auth;
    /* Non-zero: never sleep between attempts. An outcome that would be
     * retried after a delay returns at once as it is (e.g.
     * SB_GCP_HTTP_ERROR with status 503, or SB_GCP_TRANSPORT_ERROR), with
     * resp->retry_after_ms, so a plugin hands the waiting to the core's
     * scheduler (sb_gcp_settle()). Retries that cost no wait still happen:
     * a fresh token after a 401. Token fetches for it do not sleep either. */
    int no_wait;
    sb_gcp_cancel *cancel;   /* MAY be NULL; see sb_gcp_cancel */
    const sb_batch *batch;   /* MAY be NULL: cancelled once sb_batch_stopping(batch), i.e. as
                                soon as the daemon stops (also while it drains): for long work */

    /* Since SDK 2.3 (size checked: a plugin built against 2.3 that sets
     * them is refused by an older library, with a message). */
    /* Abort an attempt whose transfer moves fewer than low_speed_limit
     * bytes/s, up and down together, for low_speed_time_ms (libcurl's
     * CURLOPT_LOW_SPEED_LIMIT/TIME; whole seconds, rounded up), waiting
     * for the answer included. 0 = the client's (sb_gcp_conf). A cut
     * attempt is a transport error ("timed out"), retried as any other:
     * only when the request is idempotent and its body can be sent again.
     * limit 1 with a time T means "no byte for T": a stall bound. */
    long low_speed_limit;
    int64_t low_speed_time_ms;
    /* Non-zero: HTTP Negotiate (SPNEGO, Kerberos; libcurl's
     * CURLAUTH_NEGOTIATE with an empty user name, as `curl --negotiate -u :`)
     * with the process's Kerberos credential cache (KRB5CCNAME, else the
     * default cache): for Hadoop's WebHDFS and other Kerberos HTTP services.
     * Implies no_auth: a Google token is never sent with it. libcurl MUST be
     * built with GSS-API (`curl -V` lists GSS-API and SPNEGO); otherwise the
     * request fails with SB_GCP_INVALID. The server's 401 challenge and the
     * authenticated repeat are one attempt, inside libcurl. */
    int negotiate;
    /* MUST be 0 (SB_GCP_REQUEST_INIT). It fills what would be tail padding,
     * so that a field a later SDK appends grows sizeof and the size check
     * above can refuse it in an older library. */
    int reserved0;
} sb_gcp_request;

/* Whether requests can use `negotiate`: libcurl was built with GSS-API
 * and SPNEGO (since SDK 2.3). For a plugin's create(), so a config asking
 * for Kerberos fails there rather than on every request. Thread-safe. */
int sb_gcp_negotiate_available(void);

/* `sb_gcp_request req = SB_GCP_REQUEST_INIT;` then set the fields. */
#define SB_GCP_REQUEST_INIT {.size = sizeof(sb_gcp_request)}

typedef struct sb_gcp_response {
    long status;          /* HTTP status of the last attempt; 0 if none arrived */
    char *body;           /* NUL-terminated (may contain NULs before body_len); NULL for a
                             body streamed to write_cb */
    size_t body_len;
    /* Selected headers, NULL when absent (kept for existing callers; any
     * header: sb_gcp_response_header()). */
    char *location, *range, *retry_after, *x_goog_hash, *etag, *content_type;
    /* For status >= 400: one readable line from the error body (see
     * sb_gcp_error_line()); else NULL. */
    char *error_line;
    int attempts;         /* how many times the request was sent */
    /* Least delay before trying again, when the outcome is retriable: the
     * server's Retry-After, or the time left in the token fetch backoff;
     * else 0. */
    int64_t retry_after_ms;
    int redirects;        /* redirects followed */
    void *priv;           /* the library's: all headers of the answer */
} sb_gcp_response;

typedef enum sb_gcp_result {
    SB_GCP_OK = 0,            /* a response with status < 400 arrived */
    SB_GCP_HTTP_ERROR = 1,    /* a response with status >= 400 (after any retries) */
    SB_GCP_TRANSPORT_ERROR = 2, /* no usable response: connection, TLS, timeout, deadline */
    SB_GCP_AUTH_ERROR = 3,    /* no token could be obtained, so the (next) attempt was not sent;
                                 when it was a retry, errstr ends "(after: <METHOD> <url>: <the
                                 earlier attempt's error>)" and resp holds that attempt's response */
    SB_GCP_INVALID = 4,       /* bad request struct (programming error) */
    SB_GCP_CANCELLED = 5      /* cancelled (sb_gcp_cancel, sb_gcp_client_cancel(), or the batch
                                 is stopping) before an answer was complete */
} sb_gcp_result;

/* Send a request, retrying with full-jitter exponential backoff (delay =
 * uniform(0, min(retry_max_delay, retry_initial * multiplier^n))) until
 * max_attempts or the deadline, on 408/429/500/502/503/504 and on
 * connection errors (idempotent requests only, except connect failures).
 * Retry-After (see sb_gcp_retry_after_ms()) is a minimum delay. A 401 to a token from the
 * provider invalidates it, fetches a new one and retries once.
 * With req->no_wait, nothing sleeps (see there). Redirects are followed
 * only when req->follow_redirects says so.
 *
 * `req` and what it points to are only read during the call. `resp` MUST
 * point to caller storage; it is cleared first and MUST be released with
 * sb_gcp_response_clear() whatever the result. On anything but SB_GCP_OK a
 * readable message (URL, what failed, attempts) is in errstr.
 * Thread-safe; the calling thread blocks until the end (or cancellation). */
sb_gcp_result sb_gcp_request_send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp,
                                  char *errstr, size_t errstr_size);

/* Free what a response holds and zero it. NULL-safe, idempotent. */
void sb_gcp_response_clear(sb_gcp_response *resp);

/* The value of header `name` (case-insensitive) in the final answer, or
 * NULL. A header sent several times (x-goog-hash: one per algorithm) gives
 * its values joined with ",", the HTTP list form. Owned by resp: valid
 * until sb_gcp_response_clear(). */
const char *sb_gcp_response_header(const sb_gcp_response *resp, const char *name);

/* Whether the core should retry the work later: exactly when
 * sb_gcp_classify(rc, resp, NULL, 0) says RETRY (transport, auth and
 * cancelled; HTTP 401, 403, 408, 429 and 5xx). Other 4xx are permanent.
 * (Which answers the client itself re-sends at once is narrower: 408, 429,
 * 500, 502, 503, 504 and connection errors.) */
int sb_gcp_result_retriable(sb_gcp_result rc, const sb_gcp_response *resp);

/* ---- many transfers on one thread (curl_multi) ----------------------- */

/* A set of transfers run together on the calling thread: parallel parts of
 * an upload, parallel files. Each request follows the same rules as in
 * sb_gcp_request_send() (retries, tokens, redirects, streaming, stats),
 * except that a retry delay never blocks the others: with no_wait unset,
 * the transfer waits its turn inside sb_gcp_multi_run() while the rest
 * go on. DNS and TLS sessions are shared with the client; the multi keeps
 * its own connections, reused across runs, so keep one multi for a job.
 *
 * Ownership: the caller owns the multi (sb_gcp_multi_destroy()); it MUST
 * be destroyed before its client. Threading: one thread at a time; only
 * the cancel calls may come from others. */
typedef struct sb_gcp_multi sb_gcp_multi;

/* Called once per transfer, on the thread running sb_gcp_multi_run(), when
 * it is finished (as sb_gcp_request_send() would return). resp and errstr
 * are the multi's and valid only during the call; the callback MAY take
 * resp->body (set it to NULL). It MAY add new transfers. */
typedef void (*sb_gcp_done_cb)(sb_gcp_multi *m, void *opaque, sb_gcp_result rc, sb_gcp_response *resp,
                               const char *errstr);

/* max_parallel: transfers in flight at once (more wait in order); 0 = 8.
 * NULL with errstr on failure. */
sb_gcp_multi *sb_gcp_multi_new(sb_gcp_client *c, int max_parallel, char *errstr, size_t errstr_size);
void sb_gcp_multi_destroy(sb_gcp_multi *m); /* NULL-safe; finishes pending ones as CANCELLED */

/* Queue a transfer. `req` is copied, but what it points to (url aside,
 * which is copied) MUST stay valid until its done callback: headers, body,
 * the read/write callbacks' state, the cancel token. Its deadline counts
 * from its first attempt, not from its time in the queue. Token fetches
 * for a multi never sleep (a failed one ends the transfer with
 * SB_GCP_AUTH_ERROR). Returns 0, or -1 with errstr for an invalid request
 * (nothing queued, no callback). */
int sb_gcp_multi_add(sb_gcp_multi *m, const sb_gcp_request *req, sb_gcp_done_cb done, void *opaque, char *errstr,
                     size_t errstr_size);

/* Run until every transfer (incl. those added by callbacks) is done, or
 * `cancel` (MAY be NULL) or the client's cancel is set: then every
 * unfinished transfer ends with SB_GCP_CANCELLED through its callback.
 * Returns SB_GCP_CANCELLED when a cancel is set at the end of the run,
 * else SB_GCP_OK. */
sb_gcp_result sb_gcp_multi_run(sb_gcp_multi *m, sb_gcp_cancel *cancel);

/* Transfers queued or in flight. */
size_t sb_gcp_multi_pending(const sb_gcp_multi *m);

/* ---- settling events from an answer (since ABI 2.0) ------------------ */

/* What an answer means for the events it was for, the same way in every
 * Google plugin:
 *   SB_GCP_OK                          OK
 *   408, 429, 5xx, transport error     RETRY (Retry-After kept)
 *   no token, 401, 403                 RETRY: credentials or IAM can be fixed
 *                                      without losing the work (cause AUTH)
 *   404                                RETRY with SB_GCP_404_RETRY (a topic or
 *                                      table that may be created later), else FAIL
 *   409                                OK with SB_GCP_409_OK (it already exists:
 *                                      a create keyed on our own id), else FAIL
 *   other 4xx                          FAIL with Google's error line
 *   SB_GCP_CANCELLED                   RETRY (the work was not done; cause CANCELLED)
 *   SB_GCP_INVALID                     FAIL (a bug in the request, not transient)
 * RETRY carries resp->retry_after_ms (Retry-After, or the token backoff). */
#define SB_GCP_404_RETRY 0x1u
#define SB_GCP_409_OK 0x2u

typedef enum sb_gcp_cause {
    SB_GCP_CAUSE_NONE = 0,    /* OK */
    SB_GCP_CAUSE_TRANSIENT,   /* 408/429/5xx/transport: the service, not us */
    SB_GCP_CAUSE_AUTH,        /* no token, 401, 403: credentials or IAM */
    SB_GCP_CAUSE_NOT_FOUND,   /* 404 */
    SB_GCP_CAUSE_EXISTS,      /* 409 */
    SB_GCP_CAUSE_REFUSED,     /* other 4xx, or an invalid request */
    SB_GCP_CAUSE_CANCELLED    /* cancelled: the daemon is stopping */
} sb_gcp_cause;

typedef struct sb_gcp_outcome {
    sb_result result;         /* OK, RETRY or FAIL */
    sb_gcp_cause cause;       /* for the plugin's log line (e.g. which IAM role to check) */
    int64_t retry_after_ms;   /* RETRY: the server's Retry-After (or the token backoff), else 0 */
    const char *reason;       /* Google's error line, else errstr; borrowed: valid until resp is cleared */
} sb_gcp_outcome;

/* Classify one answer (see the table above). `errstr` is what
 * sb_gcp_request_send() wrote. Thread-safe. */
sb_gcp_outcome sb_gcp_classify(sb_gcp_result rc, const sb_gcp_response *resp, const char *errstr, unsigned flags);

/* Set the result of events idx[0..n) of the batch from one answer, as
 * sb_gcp_classify() reads it: the reason and Retry-After included. Returns
 * the outcome, so the caller can log its cause once. */
sb_gcp_outcome sb_gcp_settle(sb_batch *b, const size_t *idx, size_t n, sb_gcp_result rc,
                             const sb_gcp_response *resp, const char *errstr, unsigned flags);

/* Counters since the client was created; monotonic, read without locks
 * (each counter is atomic). */
typedef struct sb_gcp_stats {
    uint64_t requests;          /* sb_gcp_request_send() calls */
    uint64_t attempts;          /* HTTP exchanges tried, incl. retries and token fetches */
    uint64_t status_2xx, status_3xx, status_4xx, status_5xx;
    uint64_t transport_errors;  /* attempts that got no response */
    uint64_t retries;
    uint64_t token_refreshes;   /* successful token fetches */
    uint64_t token_errors;      /* failed token fetches: each attempt once, also when the
                                   current token was still valid and kept in use */
} sb_gcp_stats;

void sb_gcp_client_stats(const sb_gcp_client *c, sb_gcp_stats *out);

/* ---- helpers --------------------------------------------------------- */

/* Base URL for `service` (see sb_gcp_conf.service): `override` if non-NULL
 * and non-empty, else the emulator variable (PUBSUB_EMULATOR_HOST host:port
 * -> http://host:port; STORAGE_EMULATOR_HOST with or without scheme;
 * BIGQUERY_EMULATOR_HOST with scheme), else the Google default. Trailing
 * slashes are removed. *emulator (MAY be NULL) is set to 1 when an
 * emulator variable was used. Returns a malloc'd string the caller frees,
 * or NULL with errstr for an unknown service. */
char *sb_gcp_endpoint(const char *service, const char *override, int *emulator,
                      char *errstr, size_t errstr_size);

/* One readable line for an HTTP error body: Google JSON error
 * ("HTTP 403 PERMISSION_DENIED: message (reason: ...)"), OAuth error
 * ("HTTP 400 invalid_grant: description"), RFC 7807 problem JSON
 * ("HTTP 404 DAG not found: detail"), else the first 200 characters of the
 * body on one line. Returns a malloc'd string the caller frees. */
char *sb_gcp_error_line(long status, const char *body, size_t body_len);

/* The delay a Retry-After header value asks for, in milliseconds, as
 * sb_gcp_request_send() reads it, so a plugin that retries through the
 * core (sb_batch_set_retry_after()) waits the same: delay-seconds ("120")
 * or an HTTP-date counted from now ("Wed, 21 Oct 2015 07:28:00 GMT", also
 * the obsolete "Wednesday, 21-Oct-15 07:28:00 GMT" and "Wed Oct 21
 * 07:28:00 2015"), 0 for a date already past. -1 when `value` is NULL,
 * unreadable, or more than a day (86400 s), which is taken for a mistake
 * rather than waited for. Thread-safe. */
int64_t sb_gcp_retry_after_ms(const char *value);

/* Base64 of `data`: standard alphabet with padding, or (url != 0) the
 * URL-safe alphabet without padding. Returns a malloc'd string. */
char *sb_gcp_base64(const void *data, size_t len, int url);

/* Copy of `text` with secrets replaced by "[REDACTED]": Authorization
 * header values, Bearer tokens, access_token/id_token/refresh_token and
 * assertion values (JSON or form), client_secret, private_key and PEM
 * private key blocks. Returns a malloc'd string the caller frees. */
char *sb_gcp_redact(const char *text);

/* ---- preflight (since SDK 2.2, for a plugin's preflight()) -------------- */

/* Credentials resolve: fetch a token (nothing to fetch in mode none) and
 * report "credentials (MODE) give a token", or the failure and how to fix
 * it. 0 when a token (or none needed) was had, -1 when not (reported).
 * Whether the service accepts the token shows in the next check. */
int sb_gcp_preflight_token(sb_gcp_client *c, sb_preflight *pf);

/* GET `url` (path or absolute) and report the check `what` ("topic
 * projects/p/topics/t exists"): ok on 2xx; else a failure that says
 * which: the service refused the token (401), the caller lacks
 * permission (403: hold `roles`), the resource is missing (404:
 * `fix_404`), or the service could not be reached. A short retry budget:
 * preflight never waits long. On 2xx, *body (MAY be NULL) receives the
 * parsed answer (caller decrefs). 0 ok, -1 failed (reported). */
int sb_gcp_preflight_get(sb_gcp_client *c, sb_preflight *pf, const char *url, const char *what, const char *fix_404,
                         const char *roles, json_t **body);

/* testIamPermissions: ask the service which of `perms` (NULL-terminated)
 * the caller holds on a resource, and report ok when all are held, else
 * a failure naming the missing ones and `roles`. `post_url` is a
 * `...:testIamPermissions` URL (Pub/Sub: POST {"permissions": [...]});
 * with post_url NULL, `get_url` is Cloud Storage's `.../iam/testPermissions`
 * (GET ?permissions=...). 0 ok, -1 failed (reported). */
int sb_gcp_preflight_permissions(sb_gcp_client *c, sb_preflight *pf, const char *post_url, const char *get_url,
                                 const char *const *perms, const char *what, const char *roles);

/* The usual pair (since SDK 2.3): the resource at `url` exists
 * (sb_gcp_preflight_get, a 403 there asks for `viewer_roles`), then,
 * only when it does, the caller holds `perms` on it (reported as
 * `perms_what`; missing ones ask for `user_roles`). The permissions are
 * asked at the resource's own testIamPermissions: `URL:testIamPermissions`
 * (POST), or for a Cloud Storage bucket (`.../storage/v1/b/NAME`)
 * `URL/iam/testPermissions` (GET). 0 when both passed, -1 when not
 * (reported). */
int sb_gcp_preflight_resource(sb_gcp_client *c, sb_preflight *pf, const char *url, const char *what,
                              const char *fix_404, const char *viewer_roles, const char *const *perms,
                              const char *perms_what, const char *user_roles);

/* ---- plugin options ---------------------------------------------------- */

/* Splice into a plugin's sb_option_def table so every Google plugin takes
 * the same access options:
 *     static const sb_option_def opts[] = {
 *         {SB_OPT("topic", SB_OPT_STRING, NULL, 1, "...")},
 *         SB_GCP_OPTION_DEFS,
 *         {0}
 *     };
 */
#define SB_GCP_OPTION_DEFS \
    {SB_OPT("auth", SB_OPT_STRING, NULL, 0, \
     "How to get Google credentials: \"adc\" (GOOGLE_APPLICATION_CREDENTIALS, else the metadata server), " \
     "\"service_account\" (key_file), \"metadata\", \"none\" (emulators) or \"static\" (token). " \
     "Default adc, or none when the service's emulator variable is set.")}, \
    {SB_OPT("key_file", SB_OPT_STRING, NULL, 0, \
     "Service-account JSON key file for auth service_account; must not be readable by group/others.")}, \
    {SB_OPT("token", SB_OPT_STRING, NULL, 0, \
     "Access token for auth static; use ${file:/path} or ${env:NAME} to keep it out of the config.")}, \
    {SB_OPT("scopes", SB_OPT_STRING_LIST, "[\"https://www.googleapis.com/auth/cloud-platform\"]", 0, \
     "OAuth scopes requested for service_account and metadata tokens.")}, \
    {SB_OPT("allow_insecure_key_file", SB_OPT_BOOL, "false", 0, \
     "Accept a key file readable by group or others.")}, \
    {SB_OPT("endpoint", SB_OPT_STRING, NULL, 0, \
     "Base URL overriding the Google default and emulator variables, e.g. http://localhost:8085.")}, \
    {SB_OPT("ca_file", SB_OPT_STRING, NULL, 0, "PEM CA bundle used to verify TLS servers (default: system store).")}, \
    {SB_OPT("tls_verify", SB_OPT_BOOL, "true", 0, "Verify TLS certificates and host names. Leave on.")}, \
    {SB_OPT("proxy", SB_OPT_STRING, NULL, 0, \
     "HTTP(S) proxy URL, e.g. http://proxy:3128 (default: http_proxy/https_proxy environment).")}, \
    {SB_OPT("no_proxy", SB_OPT_STRING, NULL, 0, "Comma-separated hosts reached without the proxy (default: no_proxy environment).")}, \
    {SB_OPT("connect_timeout", SB_OPT_DURATION, "\"10s\"", 0, "Time allowed to connect (incl. TLS) per attempt.")}, \
    {SB_OPT("timeout", SB_OPT_DURATION, "\"60s\"", 0, "Time allowed for one HTTP attempt.")}, \
    {SB_OPT("max_attempts", SB_OPT_INT, "6", 0, "Attempts per request including the first (1 = no retries).")}, \
    {SB_OPT("retry_initial", SB_OPT_DURATION, "\"250ms\"", 0, "First retry delay bound; doubles per attempt, full jitter.")}, \
    {SB_OPT("retry_max_delay", SB_OPT_DURATION, "\"32s\"", 0, "Upper bound of one retry delay.")}, \
    {SB_OPT("deadline", SB_OPT_DURATION, "\"120s\"", 0, "Time allowed for one request including all retries.")}

#ifdef __cplusplus
}
#endif
#endif
