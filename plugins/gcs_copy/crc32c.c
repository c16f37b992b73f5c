/* crc32c.c - CRC-32C, hardware and table versions (see crc32c.h). */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <nmmintrin.h>
#define HAVE_X86_CRC 1
#endif

#define POLY 0x82F63B78u /* Castagnoli, bit-reflected */

static uint32_t table[8][256];
static uint32_t x2n[32]; /* x^(2^k) mod P */
static int hw_ok;
#ifdef HAVE_X86_CRC
#define LONG_BLK 8192
#define SHORT_BLK 256
static uint32_t shift_long, shift_short; /* x^(8*blk): joins the three streams of crc32c_hw */
#endif
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* a * b mod P, in the reflected representation (bit 31 is x^0). */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

/* x^(n * 2^k) mod P */
static uint32_t x2nmodp(uint64_t n, unsigned k)
{
    uint32_t p = 1u << 31;
    while (n) {
        if (n & 1)
            p = multmodp(x2n[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int j = 0; j < 8; j++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    uint32_t p = 1u << 30; /* x^1 */
    x2n[0] = p;
    for (int k = 1; k < 32; k++)
        x2n[k] = p = multmodp(p, p);
#ifdef HAVE_X86_CRC
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d))
        hw_ok = (c & bit_SSE4_2) != 0;
    shift_short = x2nmodp(SHORT_BLK, 3);
    shift_long = x2nmodp(LONG_BLK, 3);
#endif
}

int crc32c_hw_available(void)
{
    pthread_once(&once, init);
    return hw_ok;
}

/* Raw register update (no conditioning), 8 bytes at a time. */
static uint32_t sw_raw(uint32_t c, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c; /* little-endian: the low 4 bytes meet the register */
        c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
            table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
            table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    return c;
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&once, init);
    return ~sw_raw(~crc, buf, len);
}

#ifdef HAVE_X86_CRC
__attribute__((target("sse4.2"))) static uint64_t hw_run(uint64_t c, const unsigned char *p, size_t n)
{
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return c;
}

/* Three streams of `blk` bytes each, in step, then shifted together:
 * reg(A‖B‖C) = (reg(A)·x^8blk ⊕ reg(B))·x^8blk ⊕ reg(C). */
__attribute__((target("sse4.2"))) static uint32_t hw_3way(uint32_t c, const unsigned char **pp, size_t *np,
                                                          size_t blk, uint32_t shift)
{
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n >= 3 * blk) {
        uint64_t c0 = c, c1 = 0, c2 = 0;
        const unsigned char *end = p + blk;
        do {
            uint64_t w0, w1, w2;
            memcpy(&w0, p, 8);
            memcpy(&w1, p + blk, 8);
            memcpy(&w2, p + 2 * blk, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
            p += 8;
        } while (p < end);
        c = multmodp(shift, multmodp(shift, (uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
        p += 2 * blk;
        n -= 3 * blk;
    }
    *pp = p;
    *np = n;
    return c;
}

uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&once, init); /* also the shift constants: no lazy race */
    const unsigned char *p = buf;
    uint32_t c = ~crc;
    size_t head = (8 - ((uintptr_t)p & 7)) & 7;
    if (head > len)
        head = len;
    c = (uint32_t)hw_run(c, p, head);
    p += head;
    len -= head;
    c = hw_3way(c, &p, &len, LONG_BLK, shift_long);
    c = hw_3way(c, &p, &len, SHORT_BLK, shift_short);
    return ~(uint32_t)hw_run(c, p, len);
}
#else
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    return crc32c_sw(crc, buf, len);
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    return crc32c_hw_available() ? crc32c_hw(crc, buf, len) : crc32c_sw(crc, buf, len);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    pthread_once(&once, init);
    return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void crc32c_b64(uint32_t crc, char out[9])
{
    unsigned char b[4] = {crc >> 24, (crc >> 16) & 0xff, (crc >> 8) & 0xff, crc & 0xff};
    out[0] = B64[b[0] >> 2];
    out[1] = B64[((b[0] & 3) << 4) | (b[1] >> 4)];
    out[2] = B64[((b[1] & 15) << 2) | (b[2] >> 6)];
    out[3] = B64[b[2] & 63];
    out[4] = B64[b[3] >> 2];
    out[5] = B64[(b[3] & 3) << 4];
    out[6] = '=';
    out[7] = '=';
    out[8] = 0;
}

int crc32c_from_b64(const char *s, uint32_t *crc)
{
    if (!s || strlen(s) != 8 || s[6] != '=' || s[7] != '=')
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 6; i++) {
        const char *q = strchr(B64, s[i]);
        if (!q || !s[i])
            return -1;
        v = (v << 6) | (uint64_t)(q - B64);
    }
    /* 36 bits: the last 4 must be zero */
    if (v & 15)
        return -1;
    *crc = (uint32_t)(v >> 4);
    return 0;
}
