/* json_text.c - JSON text checked and written without a tree (json_text.h).
 *
 * The scan follows jansson's loader rule for rule (see json_text.h); where
 * jansson's behaviour is a choice rather than RFC 8259, the comment says so. */
#include "build_config.h"
#include "events/json_text.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

typedef struct {
    const char *p, *end;
    int spaced; /* skip_ws() skipped something */
    /* the compact copy, when asked for: the text from `copied` on is still
     * to be written at `out` (skip_ws() writes up to each run it skips) */
    char *out;
    const char *copied;
} cursor;

/* Where text position p (not before `copied`) lands in the compact copy:
 * nothing between `copied` and p was skipped. */
static const char *out_at(const cursor *c, const char *p) { return c->out + (p - c->copied); }

/* Copy what is still to be copied of the text, up to `to`. */
static void copy_up_to(cursor *c, const char *to)
{
    size_t n = (size_t)(to - c->copied);
    memcpy(c->out, c->copied, n);
    c->out += n;
}

static void skip_ws_run(cursor *c);

/* Skip whitespace: inline for the common case of none (compact text, and
 * most places in spaced text). */
static inline void skip_ws(cursor *c)
{
    if (c->p < c->end && IS_WS(*c->p))
        skip_ws_run(c);
}

static void skip_ws_run(cursor *c)
{
    const char *from = c->p;
    while (c->p < c->end && IS_WS(*c->p))
        c->p++;
    if (c->p != from) {
        c->spaced = 1;
        if (c->out) {
            copy_up_to(c, from);
            c->copied = c->p;
        }
    }
}

/* Length of the well-formed UTF-8 sequence at p (shortest form, no
 * surrogates, at most U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned u = p[0];
    size_t n;
    uint32_t v;
    if (u < 0x80)
        return 1;
    if (u >= 0xC2 && u <= 0xDF)
        n = 2, v = u & 0x1F;
    else if (u >= 0xE0 && u <= 0xEF)
        n = 3, v = u & 0x0F;
    else if (u >= 0xF0 && u <= 0xF4)
        n = 4, v = u & 0x07;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
        return 0;
    return n;
}

static int hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        *v <<= 4;
        if (IS_DIGIT(h))
            *v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f')
            *v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            *v |= (uint32_t)(h - 'A' + 10);
        else
            return -1;
    }
    return 0;
}

/* The bytes of w (8 bytes of text, the first in its lowest byte on a
 * little-endian machine) that are a quote, a backslash, a control
 * character or not ASCII, the bytes scan_string must look at one by one:
 * the high bit of each such byte. Exact as a yes/no, and in its lowest set
 * bit (a borrow only runs upward, from a byte that is flagged rightly);
 * bits above that one may be wrong. */
static uint64_t special_bytes(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    uint64_t zero_q = (q - ones) & ~q, zero_b = (b - ones) & ~b;
    uint64_t below_space = (w - ones * 0x20) & ~w;
    return (zero_q | zero_b | below_space | w) & highs;
}

/* The 8 bytes at p (if there are 8 before end) are plain ASCII: none a
 * quote, a backslash or a control character. */
static int plain8(const unsigned char *p, const unsigned char *end)
{
    uint64_t w;
    if (end - p < 8)
        return 0;
    memcpy(&w, p, 8);
    return special_bytes(w) == 0;
}

/* A string, the cursor just past its opening quote. Leaves the cursor past
 * the closing quote; *escaped tells whether it held escapes. */
static int scan_string(cursor *c, int *escaped)
{
    *escaped = 0;
    for (;;) {
        /* Most string text is plain ASCII: skip it 8 bytes at a time, and
         * straight to the first byte that needs a look (most strings are
         * short: that byte is often the closing quote). */
        while (c->end - c->p >= 8) {
            uint64_t w;
            memcpy(&w, c->p, 8);
            uint64_t special = special_bytes(w);
            if (special) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                c->p += __builtin_ctzll(special) >> 3;
#endif
                break;
            }
            c->p += 8;
        }
        if (c->p >= c->end)
            return -1;
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            c->p++;
            return 0;
        }
        if (ch < 0x20) /* raw control characters, NUL included */
            return -1;
        if (ch < 0x80 && ch != '\\') {
            c->p++;
            continue;
        }
        if (ch != '\\') {
            size_t n = utf8_seq((const unsigned char *)c->p, (const unsigned char *)c->end);
            if (!n)
                return -1;
            c->p += n;
            continue;
        }
        *escaped = 1;
        if (c->end - c->p < 2)
            return -1;
        char e = c->p[1];
        if (e != 'u') {
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return -1;
            c->p += 2;
            continue;
        }
        uint32_t v, v2;
        if (c->end - c->p < 6 || hex4(c->p + 2, &v) != 0)
            return -1;
        c->p += 6;
        if (v == 0) /* jansson refuses \u0000 without JSON_ALLOW_NUL, in keys always */
            return -1;
        if (v >= 0xDC00 && v <= 0xDFFF)
            return -1;
        if (v >= 0xD800 && v <= 0xDBFF) {
            if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || hex4(c->p + 2, &v2) != 0 ||
                v2 < 0xDC00 || v2 > 0xDFFF)
                return -1;
            c->p += 6;
        }
    }
}

/* jansson reads integers with strtoll and refuses what overflows int64. */
static int integer_fits(const char *digits, size_t n, int negative)
{
    static const char max[] = "9223372036854775807", min[] = "9223372036854775808";
    if (n != sizeof max - 1)
        return n < sizeof max - 1;
    return memcmp(digits, negative ? min : max, n) <= 0;
}

/* jansson refuses reals that overflow a double (not those that underflow). */
static int real_fits(const char *s, size_t n)
{
    char small[64];
    char *buf = n < sizeof small ? small : sb_xmalloc(n + 1);
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    double d = strtod(buf, NULL);
    int fits = !(isinf(d) && errno == ERANGE);
    if (buf != small)
        free(buf);
    return fits;
}

static int scan_number(cursor *c)
{
    const char *start = c->p;
    int negative = *c->p == '-';
    if (negative)
        c->p++;
    const char *digits = c->p;
    if (c->p < c->end && *c->p == '0') {
        c->p++; /* a leading zero ends the number: "01" fails as garbage after it */
    } else if (c->p < c->end && IS_DIGIT(*c->p)) {
        while (c->p < c->end && IS_DIGIT(*c->p))
            c->p++;
    } else {
        return -1;
    }
    if (c->p == c->end || (*c->p != '.' && *c->p != 'e' && *c->p != 'E'))
        return integer_fits(digits, (size_t)(c->p - digits), negative) ? 0 : -1;
    if (*c->p == '.') {
        c->p++;
        if (c->p == c->end || !IS_DIGIT(*c->p))
            return -1;
        while (c->p < c->end && IS_DIGIT(*c->p))
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (c->p == c->end || !IS_DIGIT(*c->p))
            return -1;
        while (c->p < c->end && IS_DIGIT(*c->p))
            c->p++;
    }
    return real_fits(start, (size_t)(c->p - start)) ? 0 : -1;
}

/* true, false, null: jansson reads a whole run of letters, so "truex" is one
 * bad token rather than true followed by garbage. */
static int scan_literal(cursor *c)
{
    const char *s = c->p;
    while (c->p < c->end && IS_ALPHA(*c->p))
        c->p++;
    size_t n = (size_t)(c->p - s);
    return (n == 4 && (memcmp(s, "true", 4) == 0 || memcmp(s, "null", 4) == 0)) ||
                   (n == 5 && memcmp(s, "false", 5) == 0)
               ? 0
               : -1;
}

/* ---- the flat object, in one pass --------------------------------------
 *
 * Most events are objects one level deep whose values are strings without
 * escapes, numbers and literals. scan_flat() checks and copies those in one
 * pass, each token copied as it is read (a string 8 bytes at a time), where
 * the general scan below keeps a state machine and copies the text between
 * runs of whitespace: on bench_core.py's line it took 40 % of the source
 * thread's instructions. It only ever accepts: anything else (an escape, a
 * nested value, an empty object, an error) sends the text to the general
 * scan, which starts over and has the last word. */

/* The string whose opening quote is at p, if it has no escape and no
 * control character and is valid UTF-8: copied, quotes included, to *o
 * (advanced past it); the position past its closing quote. NULL if not. */
/* Inlined: called once or twice per member, its calls were a third of its cost. */
static inline __attribute__((always_inline)) const char *copy_plain_string(const char *p, const char *end, char **o)
{
    char *w = *o;
    *w++ = *p++;
    for (;;) {
        if (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            /* all 8 stored, the plain ones kept: the copy is never ahead of
             * the text, so there is room (sb_json_compact) */
            memcpy(w, &x, 8);
            uint64_t special = special_bytes(x);
            if (!special) {
                p += 8;
                w += 8;
                continue;
            }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            size_t plain = (size_t)__builtin_ctzll(special) >> 3;
            p += plain;
            w += plain;
#endif
        } else if (p >= end) {
            return NULL;
        }
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            *w++ = '"';
            *o = w;
            return p + 1;
        }
        if (ch < 0x20 || ch == '\\')
            return NULL;
        size_t n = ch < 0x80 ? 1 : utf8_seq((const unsigned char *)p, (const unsigned char *)end);
        if (!n)
            return NULL;
        memcpy(w, p, n);
        w += n;
        p += n;
    }
}

/* Past whitespace at p; *spaced set if there was any. */
static inline const char *past_ws(const char *p, const char *end, int *spaced)
{
    if (p < end && IS_WS(*p)) {
        *spaced = 1;
        do
            p++;
        while (p < end && IS_WS(*p));
    }
    return p;
}

/* 1: text accepted, *member, *spaced and *out written as
 * sb_json_scan_object() writes them. -1: the general scan must decide. */
static int scan_flat(const char *text, size_t len, const char *key, sb_json_member *member, int *spaced,
                     sb_json_compact *out)
{
    const char *p = text, *end = text + len;
    size_t keylen = key ? strlen(key) : 0, n = 0;
    char *o = out->text;
    int ws = 0, ignored = 0;
    if (member)
        *member = (sb_json_member){SB_JSON_MEMBER_ABSENT, NULL, 0};
    p = past_ws(p, end, &ignored); /* outside the braces: not "spaced" */
    if (p == end || *p != '{')
        return -1;
    *o++ = *p++;
    for (;;) {
        p = past_ws(p, end, &ws);
        if (p == end || *p != '"')
            return -1;
        char *k = o + 1;
        if (!(p = copy_plain_string(p, end, &o)))
            return -1;
        size_t klen = (size_t)(o - 1 - k);
        p = past_ws(p, end, &ws);
        if (p == end || *p != ':')
            return -1;
        *o++ = *p++;
        p = past_ws(p, end, &ws);
        if (p == end)
            return -1;
        const char *vin = p;
        char *v = o;
        if (*p == '"') {
            if (!(p = copy_plain_string(p, end, &o)))
                return -1;
        } else {
            cursor c = {p, end, 0, NULL, NULL};
            if (*p == '-' || IS_DIGIT(*p)) {
                if (scan_number(&c) != 0)
                    return -1;
            } else if (!IS_ALPHA(*p) || scan_literal(&c) != 0) {
                return -1; /* a nested value, or not JSON */
            }
            size_t n_tok = (size_t)(c.p - p);
            if (end - p >= 16 && n_tok <= 16)
                memcpy(o, p, 16); /* a fixed size is two moves, not a call; room as above */
            else
                memcpy(o, p, n_tok);
            o += n_tok;
            p = c.p;
        }
        if (n < out->max_spans)
            out->spans[n++] = (sb_json_span){k, klen, v, (size_t)(o - v), 0};
        else
            n = SIZE_MAX; /* too many to index here */
        if (member && key && klen == keylen && memcmp(k, key, keylen) == 0)
            *member = *vin == '"' ? (sb_json_member){SB_JSON_MEMBER_STRING, vin + 1, (size_t)(p - vin - 2)}
                                  : (sb_json_member){SB_JSON_MEMBER_OTHER, NULL, 0};
        p = past_ws(p, end, &ws);
        if (p == end)
            return -1;
        if (*p == ',') {
            *o++ = *p++;
            continue;
        }
        if (*p != '}')
            return -1;
        *o++ = *p++;
        break;
    }
    if (past_ws(p, end, &ignored) != end)
        return -1;
    out->len = (size_t)(o - out->text);
    out->n_spans = n;
    if (spaced)
        *spaced = ws;
    return 1;
}

int sb_json_scan_object(const char *text, size_t len, const char *key, sb_json_member *member, int *spaced,
                        sb_json_compact *out)
{
    if (out && scan_flat(text, len, key, member, spaced, out) > 0)
        return 1;
    /* one bit per open container: 1 object, 0 array */
    unsigned char stack[(JSON_PARSER_MAX_DEPTH + 7) / 8];
    size_t open = 0;
    size_t keylen = key ? strlen(key) : 0;
    int at_key = 0; /* the value being scanned belongs to the member asked for */
    /* the top-level member being recorded in out->spans, if any: set at its
     * key, its value's end set when the scan is back at the top level */
    sb_json_span *span = NULL;
    enum { VALUE, KEY, AFTER } state = VALUE;
    cursor c = {text, text + len, 0, NULL, NULL};
    if (member)
        *member = (sb_json_member){SB_JSON_MEMBER_ABSENT, NULL, 0};
    if (spaced)
        *spaced = 1;
    skip_ws(&c);
    if (c.p == c.end || *c.p != '{') /* json_loadb without JSON_DECODE_ANY; we want an object */
        return 0;
    c.spaced = 0; /* only what is between the braces counts */
    if (out) {
        c.out = out->text;
        out->n_spans = 0;
    }
    c.copied = c.p;
    for (;;) {
        int spaced_inside = c.spaced;
        if (state == AFTER && open == 0) { /* the closing brace read: the rest may only be whitespace */
            if (out) {
                copy_up_to(&c, c.p);
                out->len = (size_t)(c.out - out->text);
                c.out = NULL;
            }
            skip_ws(&c);
            if (spaced)
                *spaced = spaced_inside;
            return c.p == c.end;
        }
        skip_ws(&c);
        if (state == AFTER) {
            int in_object = (stack[(open - 1) / 8] >> ((open - 1) % 8)) & 1;
            if (c.p == c.end)
                return 0;
            if (*c.p == ',') {
                c.p++;
                state = in_object ? KEY : VALUE;
            } else if (*c.p == (in_object ? '}' : ']')) {
                c.p++;
                if (--open == 1 && span) { /* a top-level member's object or array ends */
                    span->value_len = (size_t)(out_at(&c, c.p) - span->value);
                    span = NULL;
                }
            } else {
                return 0;
            }
            continue;
        }
        if (c.p == c.end)
            return 0;
        if (state == KEY) {
            int escaped;
            if (*c.p != '"')
                return 0;
            const char *k = ++c.p;
            if (scan_string(&c, &escaped) != 0)
                return 0;
            if (open == 1 && out && out->n_spans != SIZE_MAX) {
                if (out->n_spans == out->max_spans) {
                    out->n_spans = SIZE_MAX; /* too many to index here */
                } else {
                    span = &out->spans[out->n_spans++];
                    span->key = out_at(&c, k);
                    span->key_len = (size_t)(c.p - 1 - k);
                    span->key_escaped = escaped;
                }
            }
            at_key = 0;
            if (open == 1 && key && member) {
                if (escaped)
                    member->kind = SB_JSON_MEMBER_UNDECIDED; /* might name it once unescaped */
                else if ((size_t)(c.p - 1 - k) == keylen && memcmp(k, key, keylen) == 0)
                    at_key = 1;
            }
            skip_ws(&c);
            if (c.p == c.end || *c.p != ':')
                return 0;
            c.p++;
            state = VALUE;
            continue;
        }
        /* a value, at jansson depth open + 1 */
        if (open + 1 > JSON_PARSER_MAX_DEPTH)
            return 0;
        char ch = *c.p;
        int rc = 0, escaped = 0;
        const char *vstart = c.p;
        if (span && open == 1) /* a top-level member's value starts */
            span->value = out_at(&c, c.p);
        state = AFTER;
        if (ch == '{' || ch == '[') {
            c.p++;
            if (ch == '{')
                stack[open / 8] |= (unsigned char)(1u << (open % 8));
            else
                stack[open / 8] &= (unsigned char)~(1u << (open % 8));
            open++;
            skip_ws(&c);
            if (c.p < c.end && *c.p == (ch == '{' ? '}' : ']')) {
                c.p++;
                open--;
            } else {
                state = ch == '{' ? KEY : VALUE;
            }
        } else if (ch == '"') {
            c.p++;
            rc = scan_string(&c, &escaped);
        } else if (ch == '-' || IS_DIGIT(ch)) {
            rc = scan_number(&c);
        } else if (IS_ALPHA(ch)) {
            rc = scan_literal(&c);
        } else {
            return 0;
        }
        if (rc != 0)
            return 0;
        if (span && open == 1) { /* a scalar, or an empty object or array: its end is here */
            span->value_len = (size_t)(out_at(&c, c.p) - span->value);
            span = NULL;
        }
        if (at_key) {
            at_key = 0;
            if (member->kind == SB_JSON_MEMBER_UNDECIDED)
                continue; /* an escaped key earlier may be this name too: stays undecided */
            if (ch != '"')
                *member = (sb_json_member){SB_JSON_MEMBER_OTHER, NULL, 0};
            else if (escaped)
                *member = (sb_json_member){SB_JSON_MEMBER_UNDECIDED, NULL, 0};
            else
                *member = (sb_json_member){SB_JSON_MEMBER_STRING, vstart + 1, (size_t)(c.p - vstart - 2)};
        }
    }
}

/* Past the string whose opening quote is at p, in valid JSON. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            return end;
        const char *bs = q; /* an odd run of backslashes escapes the quote */
        while (bs > p && bs[-1] == '\\')
            bs--;
        if (((q - bs) & 1) == 0)
            return q + 1;
        p = q + 1;
    }
}

/* Past the value starting at p, in valid JSON. */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end) /* a member list cut after its ':' */
        return end;
    if (*p == '"')
        return skip_string(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && !IS_WS(*p))
            p++;
        return p;
    }
    size_t depth = 0;
    while (p < end) {
        switch (*p) {
        case '"':
            p = skip_string(p, end);
            continue;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (--depth == 0)
                return p + 1;
            break;
        default:
            break;
        }
        p++;
    }
    return p;
}

/* The walk over a known-valid object's or member list's top level. */
typedef struct {
    const char *p, *end;
} walk;

static walk walk_start(const char *text, size_t len)
{
    walk w = {text, text + len};
    while (w.p < w.end && IS_WS(*w.p))
        w.p++;
    w.p++; /* the '{' or the leading ',' */
    return w;
}

/* The next member into *m; 0 at the end. */
static int walk_next(walk *w, sb_json_span *m)
{
    while (w->p < w->end && IS_WS(*w->p))
        w->p++;
    if (w->p >= w->end || *w->p != '"')
        return 0; /* '}' or the end of a member list */
    const char *k = w->p + 1;
    w->p = skip_string(w->p, w->end);
    size_t klen = (size_t)(w->p - 1 - k);
    while (w->p < w->end && (IS_WS(*w->p) || *w->p == ':'))
        w->p++;
    const char *v = w->p;
    w->p = skip_value(w->p, w->end);
    *m = (sb_json_span){k, klen, v, (size_t)(w->p - v), memchr(k, '\\', klen) != NULL};
    while (w->p < w->end && IS_WS(*w->p))
        w->p++;
    if (w->p < w->end && *w->p == ',')
        w->p++;
    else
        w->p = w->end;
    return 1;
}

sb_json_span *sb_json_members(const char *text, size_t len, size_t *n)
{
    size_t cap = 16;
    sb_json_span *out = sb_xmalloc(cap * sizeof *out);
    walk w = walk_start(text, len);
    *n = 0;
    sb_json_span m;
    while (walk_next(&w, &m)) {
        if (*n == cap)
            out = sb_xrealloc(out, (cap *= 2) * sizeof *out);
        out[(*n)++] = m;
    }
    return out;
}

static int span_is(const sb_json_span *m, const char *key, size_t keylen)
{
    return !m->key_escaped && m->key_len == keylen && memcmp(m->key, key, keylen) == 0;
}

static void found(const sb_json_span *m, sb_json_member *member)
{
    /* a text cut right after ':' leaves an empty value at the very end */
    int is_string = m->value_len > 0 && *m->value == '"';
    *member = (sb_json_member){is_string ? SB_JSON_MEMBER_STRING : SB_JSON_MEMBER_OTHER, m->value,
                               m->value_len};
}

void sb_json_find_in(const sb_json_span *m, size_t n, const char *key, sb_json_member *member)
{
    size_t keylen = strlen(key);
    for (size_t i = n; i-- > 0;) { /* the last one wins */
        if (m[i].key_escaped) { /* might be this name once unescaped */
            *member = (sb_json_member){SB_JSON_MEMBER_UNDECIDED, NULL, 0};
            return;
        }
        if (span_is(&m[i], key, keylen)) {
            found(&m[i], member);
            return;
        }
    }
    *member = (sb_json_member){SB_JSON_MEMBER_ABSENT, NULL, 0};
}

void sb_json_find_member(const char *text, size_t len, const char *key, sb_json_member *member)
{
    size_t keylen = strlen(key);
    walk w = walk_start(text, len);
    sb_json_span m;
    *member = (sb_json_member){SB_JSON_MEMBER_ABSENT, NULL, 0};
    while (walk_next(&w, &m)) {
        if (m.key_escaped) /* undecided unless a plain match comes later */
            *member = (sb_json_member){SB_JSON_MEMBER_UNDECIDED, NULL, 0};
        else if (span_is(&m, key, keylen))
            found(&m, member);
    }
}

int sb_json_plain(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (plain8(p, end))
        p += 8;
    for (; p < end; p++)
        if (*p < 0x20 || *p >= 0x80 || *p == '"' || *p == '\\')
            return 0;
    return 1;
}

int sb_json_quotable(const char *s, size_t len)
{
    const unsigned char *q = (const unsigned char *)s, *end = q + len;
    /* skips 8 bytes of plain ASCII at a time (special_bytes), as the
     * quoting walk does */
    while (q < end) {
        if (plain8(q, end)) {
            q += 8;
            continue;
        }
        size_t n = *q ? utf8_seq(q, end) : 0;
        if (!n)
            return 0;
        q += n;
    }
    return 1;
}

int sb_json_quote(sb_strbuf *b, const char *s, size_t len)
{
    static const char hexd[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    if (!sb_json_quotable(s, len)) /* checked whole before anything is written */
        return -1;
    sb_strbuf_add(b, "\"", 1);
    const unsigned char *run = p;
    for (; p < end; p++) {
        while (plain8(p, end))
            p += 8;
        if (p == end)
            break;
        unsigned char ch = *p;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        sb_strbuf_add(b, (const char *)run, (size_t)(p - run));
        char esc[7] = {'\\', 0};
        size_t n = 2;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hexd[ch >> 4];
            esc[5] = hexd[ch & 15];
            n = 6;
        }
        sb_strbuf_add(b, esc, n);
        run = p + 1;
    }
    sb_strbuf_add(b, (const char *)run, (size_t)(p - run));
    sb_strbuf_add(b, "\"", 1);
    return 0;
}

static int dump_value(sb_strbuf *b, const json_t *v)
{
    char num[32];
    switch (json_typeof(v)) {
    case JSON_STRING:
        if (sb_json_quote(b, json_string_value(v), json_string_length(v)) == 0)
            return 0;
        break; /* a NUL inside (json_stringn allows it): jansson writes \u0000 */
    case JSON_INTEGER: {
        int n = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_strbuf_add(b, num, (size_t)n);
        return 0;
    }
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL: {
        const char *lit = json_is_true(v) ? "true" : json_is_false(v) ? "false" : "null";
        sb_strbuf_add(b, lit, strlen(lit));
        return 0;
    }
    case JSON_ARRAY:
        sb_strbuf_add(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                sb_strbuf_add(b, ",", 1);
            if (dump_value(b, json_array_get(v, i)) != 0)
                return -1;
        }
        sb_strbuf_add(b, "]", 1);
        return 0;
    case JSON_OBJECT: {
        const char *key;
        json_t *m;
        int first = 1;
        sb_strbuf_add(b, "{", 1);
        json_object_foreach((json_t *)v, key, m) {
            if (!first)
                sb_strbuf_add(b, ",", 1);
            first = 0;
            if (sb_json_quote(b, key, strlen(key)) != 0)
                return -1;
            sb_strbuf_add(b, ":", 1);
            if (dump_value(b, m) != 0)
                return -1;
        }
        sb_strbuf_add(b, "}", 1);
        return 0;
    }
    default: /* a real: jansson's own formatting */
        break;
    }
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t)
        return -1;
    sb_strbuf_add(b, t, strlen(t));
    free(t);
    return 0;
}

int sb_json_dump(sb_strbuf *b, const json_t *v)
{
    size_t mark = b->len;
    if (!v || dump_value(b, v) != 0) {
        b->len = mark;
        if (b->p)
            b->p[mark] = '\0';
        return -1;
    }
    return 0;
}
