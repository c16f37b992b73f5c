/* jwt.c - RS256 JWTs for the OAuth2 JWT bearer grant (RFC 7523), and the
 * two base64 flavours Google APIs need. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

static const char std_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *sb_gcp_base64(const void *data, size_t len, int url)
{
    const unsigned char *in = data;
    const char *a = url ? url_alpha : std_alpha;
    char *out = sb_xmalloc((len + 2) / 3 * 4 + 1);
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < len)
            out[o++] = a[v >> 6 & 63];
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int url_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

unsigned char *sb_gcp__base64url_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    unsigned char *out = sb_xmalloc(n * 3 / 4 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = url_val(s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    *len = o;
    out[o] = '\0';
    return out;
}

/* An encrypted PEM must fail, not prompt on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

EVP_PKEY *sb_gcp__pem_private_key(const char *pem, char *errstr, size_t errstr_size)
{
    if (!pem || !strstr(pem, "-----BEGIN")) {
        sb_err(errstr, errstr_size, "private_key is not PEM (no -----BEGIN line)");
        return NULL;
    }
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL) : NULL;
    BIO_free(bio);
    if (!key) {
        char detail[256];
        ERR_error_string_n(ERR_peek_last_error(), detail, sizeof detail);
        ERR_clear_error();
        sb_err(errstr, errstr_size, "private_key is not a valid PEM private key (%s)", detail);
        return NULL;
    }
    if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
        EVP_PKEY_free(key);
        sb_err(errstr, errstr_size, "private_key is not an RSA key (RS256 needs RSA)");
        return NULL;
    }
    return key;
}

static char *b64url_json(json_t *j)
{
    char *txt = json_dumps(j, JSON_COMPACT);
    char *r = sb_gcp_base64(txt, strlen(txt), 1);
    free(txt);
    return r;
}

char *sb_gcp__jwt_sign(EVP_PKEY *key, const char *kid, const char *iss, const char *scope, const char *aud,
                       int64_t iat, char *errstr, size_t errstr_size)
{
    json_t *hdr = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
    if (kid && *kid)
        json_object_set_new(hdr, "kid", json_string(kid));
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", iss, "scope", scope, "aud", aud,
                               "iat", (json_int_t)iat, "exp", (json_int_t)(iat + 3600));
    if (!hdr || !claims) {
        json_decref(hdr);
        json_decref(claims);
        sb_err(errstr, errstr_size, "cannot build JWT (client_email, scope or token_uri is not valid UTF-8)");
        return NULL;
    }
    char *h = b64url_json(hdr);
    char *c = b64url_json(claims);
    json_decref(hdr);
    json_decref(claims);
    char *input = sb_asprintf("%s.%s", h, c);
    free(h);
    free(c);

    char *jwt = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ERR_clear_error();
    if (ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)input, strlen(input)) == 1) {
        sig = sb_xmalloc(siglen);
        if (EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1) {
            char *s = sb_gcp_base64(sig, siglen, 1);
            jwt = sb_asprintf("%s.%s", input, s);
            free(s);
        }
    }
    if (!jwt) {
        char detail[256];
        ERR_error_string_n(ERR_peek_last_error(), detail, sizeof detail);
        ERR_clear_error();
        sb_err(errstr, errstr_size, "cannot sign JWT with the service-account key (%s)", detail);
    }
    EVP_MD_CTX_free(ctx);
    free(sig);
    free(input);
    return jwt;
}
