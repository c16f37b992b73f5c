/* auth.c - token providers behind one interface: service-account key
 * (JWT bearer grant), GCE metadata server, static token, none. One cached
 * token per provider; when it needs refreshing, one caller fetches while
 * the others wait on a condition variable. After a failed fetch no caller
 * fetches again before the backoff has passed, so a refusing token
 * endpoint sees a bounded rate whatever the number of callers, and the
 * log gets one line when fetching starts failing and one when it works
 * again. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syncbridge/log.h>
#include <time.h>

volatile long sb_gcp__clock_offset_s = 0;

struct sb_gcp_auth {
    sb_gcp_auth_mode mode;
    const struct sb_instance *ins;
    int64_t margin_ms;

    /* service account */
    char *key_file, *client_email, *key_id, *token_uri, *scope;
    EVP_PKEY *key;
    /* metadata */
    char *metadata_url;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *token;          /* cached; static token in STATIC mode */
    int64_t expiry_us;    /* monotonic */
    int64_t refresh_us;   /* monotonic: refresh from here on */
    int refreshing;
    uint64_t generation;  /* bumped after each fetch attempt */
    char last_err[1024];

    /* fetch backoff: the retry schedule of the client's conf */
    int64_t backoff_initial_ms, backoff_max_ms;
    double backoff_mult;
    int fail_streak;      /* failed fetches in a row */
    int64_t next_fetch_us; /* monotonic: no fetch before this after a failure */
    int64_t failing_since_us;
};

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Space-separated scopes; NULL -> cloud-platform. */
static char *scope_string(const char *scopes)
{
    return sb_strdup(scopes && *scopes ? scopes : SB_GCP_DEFAULT_SCOPE);
}

static int load_key_file(sb_gcp_auth *a, const char *path, int allow_insecure, char *errstr, size_t errstr_size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return sb_err(errstr, errstr_size, "key file %s does not exist", path);
        return sb_err(errstr, errstr_size, "key file %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return sb_err(errstr, errstr_size, "key file %s is not a regular file", path);
    if ((st.st_mode & 0044) && !allow_insecure)
        return sb_err(errstr, errstr_size,
                      "key file %s is readable by group/others (mode %04o); run chmod 600 %s, or set "
                      "allow_insecure_key_file to accept it",
                      path, (unsigned)(st.st_mode & 07777), path);
    /* whoever can write the directory can swap the key for their own */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? sb_asprintf("%.*s", slash == path ? 1 : (int)(slash - path), path) : sb_strdup(".");
    char why[160];
    int untrusted = stat(dir, &st) == 0 && sb_untrusted_owner_or_mode(&st, why, sizeof why);
    if (untrusted && !allow_insecure) {
        sb_err(errstr, errstr_size, "key file %s: its directory %s is %s; fix it, or set allow_insecure_key_file to "
               "accept it", path, dir, why);
        free(dir);
        return -1;
    }
    free(dir);
    char err[256];
    size_t len = 0;
    char *txt = sb_read_file(path, &len, err, sizeof err);
    if (!txt)
        return sb_err(errstr, errstr_size, "key file %s cannot be read: %s", path, err);
    json_error_t jerr;
    json_t *root = json_loadb(txt, len, 0, &jerr);
    OPENSSL_cleanse(txt, len);
    free(txt);
    if (!json_is_object(root)) {
        json_decref(root);
        /* jerr.text may quote the file's content: report only the position. */
        return sb_err(errstr, errstr_size, "key file %s is not JSON (syntax error at line %d, column %d)", path,
                      jerr.line, jerr.column);
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    if (!type || strcmp(type, "service_account") != 0) {
        sb_err(errstr, errstr_size,
               "key file %s is not a service-account key (\"type\" is %s%s%s, expected \"service_account\"); "
               "create one with: gcloud iam service-accounts keys create",
               path, type ? "\"" : "", type ? type : "missing", type ? "\"" : "");
        json_decref(root);
        return -1;
    }
    const char *email = json_string_value(json_object_get(root, "client_email"));
    const char *pem = json_string_value(json_object_get(root, "private_key"));
    if (!email || !*email || !pem) {
        sb_err(errstr, errstr_size, "key file %s lacks %s", path, !email || !*email ? "client_email" : "private_key");
        json_decref(root);
        return -1;
    }
    a->key = sb_gcp__pem_private_key(pem, err, sizeof err);
    if (!a->key) {
        sb_err(errstr, errstr_size, "key file %s: %s", path, err);
        json_decref(root);
        return -1;
    }
    a->client_email = sb_strdup(email);
    a->key_id = sb_strdup(json_string_value(json_object_get(root, "private_key_id")));
    const char *uri = json_string_value(json_object_get(root, "token_uri"));
    a->token_uri = sb_strdup(uri && *uri ? uri : SB_GCP_DEFAULT_TOKEN_URI);
    a->key_file = sb_strdup(path);
    json_decref(root);
    return 0;
}

sb_gcp_auth *sb_gcp__auth_new(const sb_gcp_conf *conf, sb_gcp_auth_mode mode, char *errstr, size_t errstr_size)
{
    sb_gcp_auth *a = sb_xcalloc(1, sizeof *a);
    a->ins = conf->ins;
    a->margin_ms = conf->refresh_margin_ms >= 0 ? conf->refresh_margin_ms : 225000;
    a->scope = scope_string(conf->scopes);
    a->backoff_initial_ms = conf->retry_initial_ms > 0 ? conf->retry_initial_ms : 1;
    a->backoff_max_ms = conf->retry_max_delay_ms > a->backoff_initial_ms ? conf->retry_max_delay_ms
                                                                          : a->backoff_initial_ms;
    a->backoff_mult = conf->retry_multiplier >= 1.0 ? conf->retry_multiplier : 2.0;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);

    const char *key_file = conf->key_file;
    if (mode == SB_GCP_AUTH_ADC) {
        const char *gac = getenv("GOOGLE_APPLICATION_CREDENTIALS");
        if (gac && *gac) {
            mode = SB_GCP_AUTH_SERVICE_ACCOUNT;
            key_file = gac;
        } else {
            mode = SB_GCP_AUTH_METADATA;
        }
    }
    a->mode = mode;
    switch (mode) {
    case SB_GCP_AUTH_SERVICE_ACCOUNT:
        if (!key_file || !*key_file) {
            sb_err(errstr, errstr_size, "auth service_account needs key_file");
            goto fail;
        }
        if (load_key_file(a, key_file, conf->allow_insecure_key_file, errstr, errstr_size) != 0)
            goto fail;
        break;
    case SB_GCP_AUTH_METADATA: {
        const char *host = conf->metadata_host;
        if (!host || !*host)
            host = getenv("GCE_METADATA_HOST");
        if (!host || !*host)
            host = SB_GCP_DEFAULT_METADATA_HOST;
        char *scopes = NULL;
        if (conf->scopes && *conf->scopes) {
            /* The metadata server takes a comma-separated list. */
            scopes = sb_strdup(conf->scopes);
            for (char *p = scopes; *p; p++)
                if (*p == ' ')
                    *p = ',';
        }
        a->metadata_url = sb_asprintf("http://%s/computeMetadata/v1/instance/service-accounts/default/token%s%s",
                                      host, scopes ? "?scopes=" : "", scopes ? scopes : "");
        free(scopes);
        break;
    }
    case SB_GCP_AUTH_STATIC:
        if (!conf->token || !*conf->token) {
            sb_err(errstr, errstr_size, "auth static needs token (e.g. \"token\": \"${file:/run/secrets/gcp-token}\")");
            goto fail;
        }
        a->token = sb_strdup(conf->token);
        a->expiry_us = INT64_MAX;
        a->refresh_us = INT64_MAX;
        break;
    case SB_GCP_AUTH_NONE:
        break;
    default:
        sb_err(errstr, errstr_size, "unknown auth mode %d", (int)mode);
        goto fail;
    }
    return a;
fail:
    sb_gcp__auth_free(a);
    return NULL;
}

void sb_gcp__auth_free(sb_gcp_auth *a)
{
    if (!a)
        return;
    EVP_PKEY_free(a->key);
    free(a->key_file);
    free(a->client_email);
    free(a->key_id);
    free(a->token_uri);
    free(a->scope);
    free(a->metadata_url);
    wipe_free(a->token);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

sb_gcp_auth_mode sb_gcp__auth_mode(const sb_gcp_auth *a)
{
    return a->mode;
}

int sb_gcp__auth_refreshable(const sb_gcp_auth *a)
{
    return a->mode == SB_GCP_AUTH_SERVICE_ACCOUNT || a->mode == SB_GCP_AUTH_METADATA;
}

/* Parse {"access_token","expires_in"} from a token response. */
static int parse_token(const sb_gcp_response *r, const char *who, char **token, int64_t *expires_in_s, char *errstr,
                       size_t errstr_size)
{
    json_t *root = json_loadb(r->body ? r->body : "", r->body_len, 0, NULL);
    const char *tok = json_string_value(json_object_get(root, "access_token"));
    json_t *exp = json_object_get(root, "expires_in");
    if (!tok || !*tok) {
        json_decref(root);
        return sb_err(errstr, errstr_size, "%s answered HTTP %ld without an access_token", who, r->status);
    }
    *token = sb_strdup(tok);
    *expires_in_s = json_is_integer(exp) ? (int64_t)json_integer_value(exp) : json_is_real(exp) ? (int64_t)json_real_value(exp) : 3600;
    json_decref(root);
    return 0;
}

static int is_clock_error(const char *line)
{
    static const char *const words[] = {"iat", "exp", "timeframe", "short-lived", "expired", "clock", NULL};
    for (int i = 0; words[i]; i++)
        if (strstr(line, words[i]))
            return 1;
    return 0;
}

static int fetch_service_account(sb_gcp_auth *a, const sb_gcp__transport *t, int no_wait, char **token,
                                 int64_t *expires_in_s, int64_t *after_ms, char *errstr, size_t errstr_size)
{
    char err[512];
    int64_t iat = (int64_t)time(NULL) + sb_gcp__clock_offset_s;
    char *jwt = sb_gcp__jwt_sign(a->key, a->key_id, a->client_email, a->scope, a->token_uri, iat, err, sizeof err);
    if (!jwt)
        return sb_err(errstr, errstr_size, "service account %s (key file %s): %s", a->client_email, a->key_file, err);
    char *body = sb_asprintf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", jwt);
    wipe_free(jwt);
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
                                       NULL};
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.no_wait = no_wait;
    req.method = "POST";
    req.url = a->token_uri;
    req.headers = hdrs;
    req.body = body;
    req.body_len = strlen(body);
    req.idempotent = 1; /* a token grant has no side effect */
    req.no_auth = 1;
    sb_gcp_response r;
    sb_gcp_result rc = t->send(t->ud, &req, &r, 0, NULL, err, sizeof err);
    wipe_free(body);
    *after_ms = r.retry_after_ms;
    int ret = -1;
    if (rc == SB_GCP_OK) {
        char who[300];
        snprintf(who, sizeof who, "token endpoint %s", a->token_uri);
        ret = parse_token(&r, who, token, expires_in_s, errstr, errstr_size);
    } else if (rc == SB_GCP_HTTP_ERROR && r.status >= 400 && r.status < 500) {
        const char *line = r.error_line ? r.error_line : "";
        if (is_clock_error(line))
            sb_err(errstr, errstr_size,
                   "token endpoint %s rejected the JWT for %s as expired or not yet valid: %s; the host clock is "
                   "probably wrong (check NTP/chrony: this host thinks it is %lld UTC)",
                   a->token_uri, a->client_email, line, (long long)iat);
        else
            sb_err(errstr, errstr_size,
                   "token endpoint %s rejected service account %s (key %s from %s): %s; check the key is not "
                   "deleted or disabled and the account exists",
                   a->token_uri, a->client_email, a->key_id ? a->key_id : "-", a->key_file, line);
    } else {
        sb_err(errstr, errstr_size, "cannot get a token for service account %s: %s", a->client_email, err);
    }
    sb_gcp_response_clear(&r);
    return ret;
}

static int fetch_metadata(sb_gcp_auth *a, const sb_gcp__transport *t, int no_wait, char **token, int64_t *expires_in_s,
                          int64_t *after_ms, char *errstr, size_t errstr_size)
{
    char err[512];
    static const char *const hdrs[] = {"Accept: application/json", NULL};
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.no_wait = no_wait;
    req.method = "GET";
    req.url = a->metadata_url;
    req.headers = hdrs;
    req.idempotent = 1;
    req.no_auth = 1;
    sb_gcp_response r;
    int flavor = 0;
    sb_gcp_result rc = t->send(t->ud, &req, &r, SB_GCP__DIRECT, &flavor, err, sizeof err);
    *after_ms = r.retry_after_ms;
    int ret = -1;
    if (rc == SB_GCP_OK && !flavor) {
        sb_err(errstr, errstr_size,
               "%s answered without \"Metadata-Flavor: Google\": not a GCE metadata server (check GCE_METADATA_HOST; "
               "off Google Cloud use auth service_account)",
               a->metadata_url);
    } else if (rc == SB_GCP_OK) {
        ret = parse_token(&r, "the metadata server", token, expires_in_s, errstr, errstr_size);
    } else if (rc == SB_GCP_TRANSPORT_ERROR) {
        sb_err(errstr, errstr_size,
               "cannot reach the GCE metadata server: %s; off Google Cloud set auth service_account with key_file, "
               "or GOOGLE_APPLICATION_CREDENTIALS",
               err);
    } else {
        sb_err(errstr, errstr_size, "the metadata server refused a token: %s%s", err,
               r.status == 404 ? " (no service account attached to this VM?)" : "");
    }
    sb_gcp_response_clear(&r);
    return ret;
}

/* After a failed fetch: when the next one may go out, and the state-change
 * log line. Called with a->mu held. */
static int64_t note_failure(sb_gcp_auth *a, const char *err, int64_t after_ms)
{
    int64_t now = sb_mono_us();
    int64_t cap = sb_gcp__backoff_cap_ms(a->backoff_initial_ms, a->backoff_mult, a->backoff_max_ms, a->fail_streak);
    /* equal jitter: clients of a fleet spread out, the pace stays bounded */
    int64_t delay = cap / 2 + (int64_t)sb_rand_below((uint64_t)(cap - cap / 2) + 1);
    if (delay < after_ms)
        delay = after_ms;
    if (a->fail_streak++ == 0) {
        a->failing_since_us = now;
        sb_log(a->ins, SB_LOG_WARN,
               "gcp auth: cannot get a %s token: %s; retrying with backoff (up to %lld s between attempts); "
               "logged again when it works",
               sb_gcp_auth_mode_name(a->mode), err, (long long)((a->backoff_max_ms + 999) / 1000));
    } else {
        sb_log(a->ins, SB_LOG_DEBUG, "gcp auth: token fetch %d failed, next in %lld ms: %s", a->fail_streak,
               (long long)delay, err);
    }
    a->next_fetch_us = now + delay * 1000;
    return delay;
}

static void note_success(sb_gcp_auth *a)
{
    if (a->fail_streak > 0)
        sb_log(a->ins, SB_LOG_INFO, "gcp auth: got a %s token again after %d failed attempts over %lld s",
               sb_gcp_auth_mode_name(a->mode), a->fail_streak,
               (long long)((sb_mono_us() - a->failing_since_us) / 1000000));
    a->fail_streak = 0;
    a->next_fetch_us = 0;
}

int sb_gcp__auth_token(sb_gcp_auth *a, const sb_gcp__transport *t, int no_wait, char **token, int *fetch,
                       int64_t *wait_ms, char *errstr, size_t errstr_size)
{
    *token = NULL;
    *fetch = 0;
    if (wait_ms)
        *wait_ms = 0;
    if (a->mode == SB_GCP_AUTH_NONE)
        return 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        int64_t now = sb_mono_us();
        if (a->token && now < a->refresh_us) {
            *token = sb_strdup(a->token);
            pthread_mutex_unlock(&a->mu);
            return 0;
        }
        if (a->mode == SB_GCP_AUTH_STATIC) {
            pthread_mutex_unlock(&a->mu);
            return sb_err(errstr, errstr_size, "static token missing");
        }
        if (!a->refreshing && a->fail_streak > 0 && now < a->next_fetch_us) {
            /* Inside the backoff after a failed fetch: the last error, now. */
            int64_t left = (a->next_fetch_us - now + 999) / 1000;
            if (wait_ms)
                *wait_ms = left;
            sb_err(errstr, errstr_size, "%s (next token attempt in %lld ms)", a->last_err, (long long)left);
            pthread_mutex_unlock(&a->mu);
            return -1;
        }
        if (!a->refreshing)
            break;
        /* Someone else is fetching: wait for that fetch and use its result. */
        uint64_t gen = a->generation;
        while (a->refreshing && a->generation == gen)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->token && sb_mono_us() < a->expiry_us) {
            *token = sb_strdup(a->token);
            pthread_mutex_unlock(&a->mu);
            return 0;
        }
        if (a->generation != gen) {
            sb_err(errstr, errstr_size, "%s", a->last_err);
            if (wait_ms && a->next_fetch_us > sb_mono_us())
                *wait_ms = (a->next_fetch_us - sb_mono_us() + 999) / 1000;
            pthread_mutex_unlock(&a->mu);
            return -1;
        }
    }
    a->refreshing = 1;
    pthread_mutex_unlock(&a->mu);

    char err[1024];
    char *tok = NULL;
    int64_t expires_in = 0, after_ms = 0;
    int64_t t0 = sb_mono_us();
    int rc = a->mode == SB_GCP_AUTH_SERVICE_ACCOUNT
                 ? fetch_service_account(a, t, no_wait, &tok, &expires_in, &after_ms, err, sizeof err)
                 : fetch_metadata(a, t, no_wait, &tok, &expires_in, &after_ms, err, sizeof err);
    *fetch = rc == 0 ? 1 : -1; /* the caller counts it, whatever the old token still allows */

    pthread_mutex_lock(&a->mu);
    a->refreshing = 0;
    a->generation++;
    if (rc == 0) {
        if (expires_in < 1)
            expires_in = 1;
        /* Refresh `margin` before expiry, but never use less than half the
         * lifetime, or a short-lived token would be refetched every call. */
        int64_t life_ms = expires_in * 1000;
        int64_t margin = a->margin_ms < life_ms / 2 ? a->margin_ms : life_ms / 2;
        wipe_free(a->token);
        a->token = tok;
        a->expiry_us = t0 + life_ms * 1000;
        a->refresh_us = a->expiry_us - margin * 1000;
        *token = sb_strdup(tok);
        note_success(a);
        sb_log(a->ins, SB_LOG_DEBUG, "gcp auth: new %s token, valid %lld s", sb_gcp_auth_mode_name(a->mode),
               (long long)expires_in);
    } else {
        snprintf(a->last_err, sizeof a->last_err, "%s", err);
        if (a->token && sb_mono_us() < a->expiry_us) {
            /* Refresh failed but the old token still works: keep going. */
            sb_log(a->ins, SB_LOG_WARN, "gcp auth: token refresh failed, using the current token until it expires: %s",
                   err);
            *token = sb_strdup(a->token);
            /* Do not hammer the token endpoint: try again in 10 s. */
            int64_t next = sb_mono_us() + 10 * 1000000LL;
            a->refresh_us = next < a->expiry_us ? next : a->expiry_us;
            rc = 0;
        } else {
            int64_t delay = note_failure(a, err, after_ms);
            if (wait_ms)
                *wait_ms = delay;
            sb_err(errstr, errstr_size, "%s", err);
        }
    }
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return rc == 0 ? 0 : -1;
}

void sb_gcp__auth_invalidate(sb_gcp_auth *a, const char *token)
{
    if (!token || a->mode == SB_GCP_AUTH_STATIC || a->mode == SB_GCP_AUTH_NONE)
        return;
    pthread_mutex_lock(&a->mu);
    if (a->token && strcmp(a->token, token) == 0) {
        wipe_free(a->token);
        a->token = NULL;
        a->expiry_us = 0;
        a->refresh_us = 0;
    }
    pthread_mutex_unlock(&a->mu);
}
