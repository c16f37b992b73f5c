/*
 * gcp_internal.h - contracts between the files of libsyncbridge_gcp, and
 * the pure functions the unit tests call directly. Not installed.
 *
 *   common.c    defaults, backoff, Retry-After, results (calls no other file)
 *   http.c      client, connection pool, retries       (sb_gcp_client_*)
 *   auth.c      token providers, shared refresh         (sb_gcp__auth_*)
 *   jwt.c       RS256 JWT, base64                       (sb_gcp__jwt_*)
 *   gerror.c    error body -> one line                  (sb_gcp_error_line)
 *   redact.c    secrets out of log lines                (sb_gcp_redact)
 *   endpoint.c  base URLs, emulator variables           (sb_gcp_endpoint)
 *   options.c   client from an instance's options
 *   metrics.c   live clients in /metrics               (sb_gcp__metrics_*)
 *
 * Calls go one way: options -> http -> auth, metrics, jwt, gerror,
 * redact, endpoint -> common. Where a lower file needs the client (auth
 * sending a token request, metrics reading counters) the client hands it a
 * function to call, so it does not call back up.
 */
#ifndef SB_GCP_INTERNAL_H
#define SB_GCP_INTERNAL_H

#include <syncbridge/gcp.h>
#include <openssl/evp.h>
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

/* ---- http.c ---- */

/* Flags for sb_gcp__send(). */
#define SB_GCP__DIRECT 0x1 /* never through a proxy (metadata server) */

/* sb_gcp_request_send() with internal flags; *metadata_flavor (MAY be
 * NULL) is set to 1 when the response carried "Metadata-Flavor: Google". */
sb_gcp_result sb_gcp__send(sb_gcp_client *c, const sb_gcp_request *req, sb_gcp_response *resp, int flags,
                           int *metadata_flavor, char *errstr, size_t errstr_size);


/* ---- auth.c ---- */

typedef struct sb_gcp_auth sb_gcp_auth;

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
 * valid and returned), 0 nothing (a cached token, or a waiter sharing
 * another caller's fetch). So counting *fetch counts each attempt once.
 * Thread-safe. */
int sb_gcp__auth_token(sb_gcp_auth *a, const sb_gcp__transport *t, char **token, int *fetch,
                       char *errstr, size_t errstr_size);
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
