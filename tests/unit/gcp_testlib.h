/* gcp_testlib.h - helpers for the GCP layer tests: temp dirs, test keys
 * and certificates made with the openssl CLI, the gfake server and the
 * test proxy as child processes, and the fake's control API. */
#ifndef GCP_TESTLIB_H
#define GCP_TESTLIB_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct tl_proc {
    pid_t pid;
    int port;
} tl_proc;

/* mkdtemp under $TMPDIR; aborts on failure. */
char *tl_tmpdir(void);
void tl_rmrf(const char *dir);
/* Run a shell command; aborts the test (ck_abort) on non-zero exit. */
void tl_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tl_write(const char *path, const char *text, unsigned mode);

/* dir/key.pem (PKCS#8 RSA) and dir/pub.pem. */
void tl_make_rsa(const char *dir, const char *name);
/* A service-account key file dir/NAME.json for key dir/KEY.pem with token_uri. */
char *tl_make_sa_file(const char *dir, const char *name, const char *keyname, const char *token_uri);
/* dir/ca.pem, dir/server.pem, dir/server.key (CN/SAN 127.0.0.1) and an unrelated dir/wrongca.pem. */
void tl_make_tls(const char *dir);

/* 1 if tests/fake/gfake.py exists (else the integration tests skip). */
int tl_have_fake(void);
/* Start gfake on a free port with dir/pub.pem as the SA public key;
 * tls != 0 uses dir/server.pem. Waits for the port file. */
tl_proc tl_fake_start(const char *dir, int tls);
tl_proc tl_proxy_start(const char *dir);
void tl_stop(tl_proc *p);

/* Control API (plain libcurl, no retries). Returns the HTTP status; *out
 * (MAY be NULL) gets the body, malloc'd. tls: https without verification. */
long tl_ctl(const tl_proc *fake, int tls, const char *method, const char *path, const char *body, char **out);
void tl_fault(const tl_proc *fake, const char *json);
/* A control call that must answer 200 (else the test fails with the answer). */
void tl_ctl_ok(const tl_proc *fake, const char *method, const char *path, const char *body);
/* GET a control path that answers JSON: the parsed body (caller decrefs). */
json_t *tl_ctl_json(const tl_proc *fake, const char *path);
/* Clear the proxy variables (a test's requests go straight to the fake),
 * then reset the fake. */
void tl_reset_direct(const tl_proc *fake);
void tl_reset(const tl_proc *fake);
/* Number of logged requests whose path matches regex; times[] (MAY be NULL,
 * up to max) gets their timestamps in seconds. */
int tl_count(const tl_proc *fake, const char *path_regex, double *times, int max);
/* The n-th logged request's header value (malloc'd) or NULL. */
char *tl_req_header(const tl_proc *fake, const char *path_regex, int n, const char *header);
/* A TCP port that nobody listens on. */
int tl_dead_port(void);
/* Count lines in a file. */
int tl_lines(const char *path);
double tl_now(void);

#endif
