/* test_json_text.c - the tree-less JSON scan agrees with jansson's loader.
 *
 * Admission trusts sb_json_scan_object() to say exactly what json_loadb()
 * would accept, because the tree is built later from the same text (event.c
 * aborts if it then fails). So the test is differential: hand-picked edge
 * cases, then a few hundred thousand generated documents and mutations of
 * them, each run through both and compared, with the member lookup checked
 * against json_object_get() on the parsed tree. The one difference allowed
 * is jansson's skipping of some NUL bytes (see agree()). */
#include "build_config.h"
#include "events/json_text.h"
#include "util/util.h"

#include <check.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t below(size_t n) { return (size_t)(next() % n); }

/* Whether accepted JSON text has whitespace outside strings between its
 * first '{' and its last '}'. */
static int spaced_inside(const char *text, size_t len)
{
    const char *open = memchr(text, '{', len);
    while (len && text[len - 1] != '}')
        len--;
    int in_string = 0;
    for (const char *p = open; p < text + len; p++) {
        if (in_string) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_string = 0;
        } else if (*p == '"') {
            in_string = 1;
        } else if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            return 1;
        }
    }
    return 0;
}

/* Compare scan and jansson on text[0..len); on disagreement fail with it. */
static void agree(const char *text, size_t len, const char *key)
{
    sb_json_member m;
    int spaced = -1;
    char *out = malloc(len ? len : 1); /* exactly the room promised: ASan sees a byte past it */
    sb_json_span spans[8]; /* few: documents with more members check the overflow */
    sb_json_compact made = {out, 0, spans, sizeof spans / sizeof *spans, 0};
    int ok = sb_json_scan_object(text, len, key, &m, &spaced, &made);
    size_t out_len = made.len;
    json_error_t err;
    json_t *obj = json_loadb(text, len, 0, &err);
    int want = json_is_object(obj);
    /* jansson's one leniency: a NUL byte right after a number or literal is
     * skipped (its lexer takes an ungot NUL for an empty buffer). The scan
     * refuses every NUL, and so does sb_event_new_json(). */
    if (!ok && want && memchr(text, '\0', len)) {
        json_decref(obj);
        free(out);
        return;
    }
    if (ok != want) {
        fprintf(stderr, "disagreement on %zu bytes:", len);
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, " %02x", (unsigned char)text[i]);
        fputc('\n', stderr);
    }
    ck_assert_msg(ok == want, "scan says %d, jansson %d (%s) for [%.*s]", ok, want, obj ? "parsed" : err.text,
                  (int)(len > 200 ? 200 : len), text);
    ck_assert_msg(!ok || spaced == spaced_inside(text, len), "scan says spaced %d for [%.*s]", spaced,
                  (int)(len > 200 ? 200 : len), text);
    if (ok) { /* the compact copy: the same JSON, no whitespace outside strings, nothing else changed */
        json_t *back = json_loadb(out, out_len, 0, NULL);
        ck_assert_msg(json_equal(back, obj), "compact [%.*s] of [%.*s]", (int)out_len, out,
                      (int)(len > 200 ? 200 : len), text);
        json_decref(back);
        ck_assert_int_eq(spaced_inside(out, out_len), 0);
        ck_assert_msg(out[0] == '{' && out[out_len - 1] == '}', "compact [%.*s]", (int)out_len, out);
        size_t kept = 0; /* what was dropped was whitespace between tokens: the rest in order */
        for (const char *p = memchr(text, '{', len); kept < out_len && p < text + len; p++)
            if (*p == out[kept])
                kept++;
        ck_assert_msg(kept == out_len, "compact [%.*s] is not a subsequence of its text", (int)out_len, out);
        /* the members noted on the way are what a walk of the copy finds */
        size_t n = 0;
        sb_json_span *walked = sb_json_members(out, out_len, &n);
        if (made.n_spans == SIZE_MAX) {
            ck_assert_msg(n > made.max_spans, "overflow with %zu members in [%.*s]", n, (int)out_len, out);
        } else {
            ck_assert_msg(made.n_spans == n, "%zu spans, the walk found %zu in [%.*s]", made.n_spans, n,
                          (int)out_len, out);
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(spans[i].key == walked[i].key && spans[i].key_len == walked[i].key_len &&
                                  spans[i].value == walked[i].value && spans[i].value_len == walked[i].value_len &&
                                  spans[i].key_escaped == walked[i].key_escaped,
                              "member %zu: [%.*s]=[%.*s], the walk [%.*s]=[%.*s] in [%.*s]", i, (int)spans[i].key_len,
                              spans[i].key, (int)spans[i].value_len, spans[i].value, (int)walked[i].key_len,
                              walked[i].key, (int)walked[i].value_len, walked[i].value, (int)out_len, out);
        }
        free(walked);
    }
    free(out);
    /* the unchecked lookup finds what jansson keeps, for plain keys */
    static const char *const plain[] = {"id", "a", "b", "idx", ""};
    for (size_t i = 0; ok && i < sizeof plain / sizeof *plain; i++) {
        sb_json_member f;
        sb_json_find_member(text, len, plain[i], &f);
        json_t *v = json_object_get(obj, plain[i]);
        if (f.kind == SB_JSON_MEMBER_UNDECIDED)
            continue;
        ck_assert_msg((f.kind == SB_JSON_MEMBER_ABSENT) == (v == NULL), "find %s in [%.*s]", plain[i],
                      (int)(len > 200 ? 200 : len), text);
        if (v) {
            json_t *got = json_loadb(f.text, f.len, JSON_DECODE_ANY, NULL);
            ck_assert_msg(json_equal(got, v) && (f.kind == SB_JSON_MEMBER_STRING) == json_is_string(v),
                          "find %s gave [%.*s] in [%.*s]", plain[i], (int)f.len, f.text, (int)(len > 200 ? 200 : len),
                          text);
            json_decref(got);
        }
    }
    if (ok && key) {
        json_t *v = json_object_get(obj, key);
        switch (m.kind) {
        case SB_JSON_MEMBER_ABSENT:
            ck_assert_msg(v == NULL, "member %s said absent in [%.*s]", key, (int)len, text);
            break;
        case SB_JSON_MEMBER_OTHER:
            ck_assert_msg(v && !json_is_string(v), "member %s said not a string in [%.*s]", key, (int)len, text);
            break;
        case SB_JSON_MEMBER_STRING:
            ck_assert_msg(json_is_string(v) && json_string_length(v) == m.len &&
                              memcmp(json_string_value(v), m.text, m.len) == 0,
                          "member %s value differs in [%.*s]", key, (int)len, text);
            break;
        case SB_JSON_MEMBER_UNDECIDED:
            break; /* the caller parses: nothing to compare */
        }
    }
    json_decref(obj);
}

static void agree_s(const char *text) { agree(text, strlen(text), "id"); }

START_TEST(hand_picked_edges)
{
    static const char *const cases[] = {
        "{}", " {} ", "{ }", "\t{\n}\r\n", "[]", "[1]", "1", "\"s\"", "null", "", " ", "{", "}", "{}}", "{} {}",
        "{\"a\":1}", "{\"a\":1,}", "{,\"a\":1}", "{\"a\" 1}", "{\"a\":}", "{a:1}", "{'a':1}", "{\"a\":[1,2,]}",
        "{\"a\":[,1]}", "{\"a\":[]}", "{\"a\":[[]]}", "{\"a\":{}}", "{\"a\":{\"b\":{\"c\":[{}]}}}",
        "{\"a\":true}", "{\"a\":false}", "{\"a\":null}", "{\"a\":tru}", "{\"a\":truex}", "{\"a\":True}",
        "{\"a\":true1}", "{\"a\":nul}", "{\"a\":nan}", "{\"a\":Infinity}",
        "{\"a\":0}", "{\"a\":-0}", "{\"a\":01}", "{\"a\":-01}", "{\"a\":00}", "{\"a\":1.}", "{\"a\":.5}",
        "{\"a\":1.5}", "{\"a\":-1.5e10}", "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":1E-5}", "{\"a\":1e5.5}",
        "{\"a\":+1}", "{\"a\":-}", "{\"a\":--1}", "{\"a\":0x10}", "{\"a\":1 2}",
        "{\"a\":9223372036854775807}", "{\"a\":9223372036854775808}", "{\"a\":-9223372036854775808}",
        "{\"a\":-9223372036854775809}", "{\"a\":99999999999999999999}", "{\"a\":10000000000000000000}",
        "{\"a\":1e308}", "{\"a\":1e309}", "{\"a\":-1e309}", "{\"a\":1e-400}", "{\"a\":1.7976931348623157e308}",
        "{\"a\":1.7976931348623159e308}", "{\"a\":123456789012345678901234567890.5}",
        "{\"a\":\"\"}", "{\"a\":\"x\\\"y\"}", "{\"a\":\"\\/\\b\\f\\n\\r\\t\\\\\"}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u0041\"}", "{\"a\":\"\\u00e9\"}", "{\"a\":\"\\u004\"}", "{\"a\":\"\\u00G1\"}",
        "{\"a\":\"\\u0000\"}", "{\"\\u0000\":1}", "{\"a\":\"\\ud83d\\ude00\"}", "{\"a\":\"\\uD83D\\uDE00\"}",
        "{\"a\":\"\\ud83d\"}", "{\"a\":\"\\ud83dx\"}", "{\"a\":\"\\ud83d\\u0041\"}", "{\"a\":\"\\ude00\"}",
        "{\"a\":\"\\ud83d\\ud83d\"}", "{\"a\":\"tab\there\"}", "{\"a\":\"nl\nhere\"}", "{\"a\":\"\x7f\"}",
        "{\"a\":\"\xc3\xa9\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xe0\x80\xaf\"}",
        "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x8f\xbf\xbf\"}", "{\"a\":\"\xf4\x90\x80\x80\"}",
        "{\"a\":\"\xf0\x9f\x98\x80\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\x80\"}", "{\"\xc3\xa9\":1}",
        "\xef\xbb\xbf{}", "{}\xc3\xa9", "{\"a\":1}\x00", "{\"a\"\x00:1}",
        "{\"id\":\"x\"}", "{\"id\":\"x\",\"id\":\"y\"}", "{\"id\":\"x\",\"id\":5}", "{\"id\":5,\"id\":\"x\"}",
        "{\"id\":\"\"}", "{\"id\":\"a\\u0062\"}", "{\"i\\u0064\":\"x\"}", "{\"id\":\"x\",\"i\\u0064\":\"y\"}",
        "{\"b\":{\"id\":\"inner\"}}", "{\"b\":[{\"id\":\"inner\"}],\"id\":\"outer\"}", "{\"id\":[\"x\"]}",
        "{\"id\":{\"id\":\"x\"}}", "{\"idx\":\"1\",\"i\":\"2\"}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        agree_s(cases[i]);
    /* the NUL cases above stop at strlen; pass them whole too */
    agree("{\"a\":1}\0", 8, "id");
    agree("{\"a\"\0:1}", 8, "id");
    agree("{\"a\":\"\0\"}", 9, "id");
    agree("{\"id\":\"x\0y\"}", 12, "id");
}
END_TEST

/* Nesting around jansson's depth limit: the innermost container at depth d
 * (arrays, then objects), and a scalar one level below it. */
/* A member list whose text ends right after a ':' (the fuzzer's first
 * find): the walk must stop at the end of its input, not read past it.
 * The text is copied to an exact-size buffer so ASan sees any overrun. */
START_TEST(member_walk_stops_at_the_end)
{
    static const char *const cuts[] = {",\"k\":", ",\"k\"", ",\"k", "{\"k\":", "{\"a\":1,\"k\":"};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        size_t len = strlen(cuts[i]), n = 0;
        char *exact = malloc(len);
        memcpy(exact, cuts[i], len);
        sb_json_span *m = sb_json_members(exact, len, &n);
        for (size_t j = 0; j < n; j++)
            ck_assert(m[j].value + m[j].value_len <= exact + len);
        free(m);
        sb_json_member one;
        sb_json_find_member(exact, len, "k", &one);
        free(exact);
    }
}
END_TEST

START_TEST(depth_limit)
{
    for (size_t d = JSON_PARSER_MAX_DEPTH - 2; d <= JSON_PARSER_MAX_DEPTH + 2; d++) {
        for (int kind = 0; kind < 3; kind++) {
            sb_strbuf b = {0};
            sb_strbuf_add(&b, "{\"k\":", 5);
            for (size_t i = 2; i < d; i++)
                sb_strbuf_add(&b, kind == 1 ? "{\"k\":" : "[", kind == 1 ? 5 : 1);
            sb_strbuf_add(&b, kind == 0 ? "[]" : kind == 1 ? "{}" : "[1]", kind == 2 ? 3 : 2);
            for (size_t i = 2; i < d; i++)
                sb_strbuf_add(&b, kind == 1 ? "}" : "]", 1);
            sb_strbuf_add(&b, "}", 1);
            agree(b.p, b.len, "id");
            free(b.p);
        }
    }
}
END_TEST

/* ---- generated documents ---------------------------------------------------- */

static const char *const atoms[] = {
    "0", "-0", "1", "-1", "42", "3.25", "-0.5e-3", "1E10", "9223372036854775807", "-9223372036854775808",
    "9223372036854775808", "1e308", "1e309", "1e-330", "true", "false", "null", "\"\"", "\"x\"", "\"id\"",
    "\"\\u00e9\"", "\"\\ud83d\\ude00\"", "\"\xc3\xa9t\xc3\xa9\"", "\"a\\\"b\"", "\"\\\\\"", "\"\\n\"",
    /* longer than 8 bytes, so the scanner's 8-byte skip runs, with what it
     * must stop at placed before, on and after a word boundary */
    "\"sh /etl/run_replicator.sh edw_prod orders order_dt 20261123 2\"", "\"0123456\\\"89abcdef\"",
    "\"01234567\\n9abcdefgh\"", "\"012345678\xc3\xa9" "abcdefgh\"", "\"abcdefgh~\x7f\"", "\"abcdefghijklmnop\"",
};
static const char *const keys[] = {"\"id\"", "\"a\"", "\"b\"", "\"i\\u0064\"", "\"\"", "\"\xc3\xa9\"", "\"idx\""};

static void add(sb_strbuf *b, const char *s) { sb_strbuf_add(b, s, strlen(s)); }

static void gen_value(sb_strbuf *b, int depth)
{
    size_t r = below(depth > 4 ? 6 : 10);
    if (r < 6) {
        const char *a = atoms[below(sizeof atoms / sizeof *atoms)];
        sb_strbuf_add(b, a, strlen(a));
        return;
    }
    int obj = r >= 8;
    size_t n = below(4);
    sb_strbuf_add(b, obj ? "{" : "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            add(b, below(8) ? "," : " , ");
        if (obj) {
            const char *k = keys[below(sizeof keys / sizeof *keys)];
            sb_strbuf_add(b, k, strlen(k));
            sb_strbuf_add(b, ":", 1);
        }
        gen_value(b, depth + 1);
    }
    sb_strbuf_add(b, obj ? "}" : "]", 1);
}

static void gen_object(sb_strbuf *b)
{
    b->len = 0;
    size_t n = below(6);
    add(b, below(10) ? "{" : " \n{ ");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_strbuf_add(b, ",", 1);
        const char *k = keys[below(sizeof keys / sizeof *keys)];
        sb_strbuf_add(b, k, strlen(k));
        add(b, below(10) ? ":" : " : ");
        gen_value(b, 1);
    }
    add(b, below(10) ? "}" : "}\t\r\n");
}

/* Bytes that matter to a JSON lexer. */
static const char interesting[] = "{}[]:,\"\\/ \t\n\r0123456789-+.eEutfnlrsa\x00\x01\x1f\x7f\x80\xbf\xc2\xc3\xe0"
                                  "\xed\xef\xf0\xf4\xf5\xff";

static void mutate(sb_strbuf *b)
{
    int times = 1 + (int)below(3);
    for (int t = 0; t < times && b->len > 0; t++) {
        size_t at = below(b->len);
        char c = interesting[below(sizeof interesting - 1)];
        switch (below(4)) {
        case 0: /* replace */
            b->p[at] = c;
            break;
        case 1: /* insert */
            sb_strbuf_add(b, " ", 1);
            memmove(b->p + at + 1, b->p + at, b->len - 1 - at);
            b->p[at] = c;
            break;
        case 2: /* delete */
            memmove(b->p + at, b->p + at + 1, b->len - at - 1);
            b->len--;
            break;
        default: /* truncate */
            b->len = at;
            break;
        }
    }
}

START_TEST(generated_documents_and_mutations)
{
    sb_strbuf b = {0};
    for (int i = 0; i < 150000; i++) {
        gen_object(&b);
        agree(b.p, b.len, "id");
        mutate(&b);
        agree(b.p, b.len, "id");
    }
    free(b.p);
}
END_TEST

/* Flat objects (the scan's fast path: scalar values, no escapes) with the
 * whitespace Python's json.dumps and people write, whole and mutated. */
static const char *const gaps[] = {"", "", " ", " ", "  ", "\t", "\n", "\r\n"};

static void gen_flat(sb_strbuf *b)
{
    b->len = 0;
    size_t n = below(12);
    add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
    add(b, "{");
    for (size_t i = 0; i < n; i++) {
        if (i) {
            add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
            add(b, ",");
        }
        add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
        add(b, keys[below(sizeof keys / sizeof *keys)]);
        add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
        add(b, ":");
        add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
        add(b, atoms[below(sizeof atoms / sizeof *atoms)]);
    }
    add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
    add(b, "}");
    add(b, gaps[below(sizeof gaps / sizeof *gaps)]);
}

START_TEST(generated_flat_documents_and_mutations)
{
    sb_strbuf b = {0};
    for (int i = 0; i < 150000; i++) {
        gen_flat(&b);
        agree(b.p, b.len, "id");
        mutate(&b);
        agree(b.p, b.len, "id");
    }
    free(b.p);
}
END_TEST

START_TEST(quote_matches_json_dumps)
{
    static const char *const strs[] = {
        "", "plain", "quote\" backslash\\ slash/", "\b\f\n\r\t", "\x01\x1f\x7f", "\xc3\xa9t\xc3\xa9",
        "\xf0\x9f\x98\x80", "sh /etl/run_replicator.sh edw orders",
        /* past 8 bytes of plain ASCII, which the quote skips a word at a time */
        "0123456789abcdef\"", "01234567\\89abcdefgh\xc3\xa9 and\tthe rest of a longer line", "abcdefgh\x01",
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        json_t *s = json_string(strs[i]);
        char *want = json_dumps(s, JSON_ENCODE_ANY);
        sb_strbuf b = {0};
        ck_assert_int_eq(sb_json_quote(&b, strs[i], strlen(strs[i])), 0);
        ck_assert_str_eq(b.p, want);
        free(b.p);
        free(want);
        json_decref(s);
    }
    /* what json_string() refuses is refused, and nothing is appended */
    static const char *const bad[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xff", "a\x80", "abcdefghij\xff",
                                      "abcdefgh\xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sb_strbuf b = {0};
        ck_assert_int_eq(sb_json_quote(&b, bad[i], strlen(bad[i])), -1);
        ck_assert_uint_eq(b.len, 0);
        ck_assert_ptr_null(json_string(bad[i]));
        free(b.p);
    }
    sb_strbuf b = {0};
    ck_assert_int_eq(sb_json_quote(&b, "a\0b", 3), -1);
    ck_assert_int_eq(sb_json_quote(&b, "abcdefghij\0b", 12), -1);
    free(b.p);
    /* generated strings: plain runs with escapes and UTF-8 at every offset */
    static const char *const parts[] = {"a", "plain run ", "\"", "\\", "\n", "\x01", "\xc3\xa9", "\xe2\x82\xac",
                                        "\xf0\x9f\x98\x80", "/"};
    srand(19);
    for (int i = 0; i < 5000; i++) {
        char str[256] = "";
        size_t len = 0;
        for (int k = rand() % 12; k > 0; k--) {
            const char *part = parts[rand() % (int)(sizeof parts / sizeof *parts)];
            memcpy(str + len, part, strlen(part) + 1);
            len += strlen(part);
        }
        json_t *js = json_string(str);
        char *want = json_dumps(js, JSON_ENCODE_ANY);
        sb_strbuf q = {0};
        ck_assert_int_eq(sb_json_quote(&q, str, len), 0);
        ck_assert_str_eq(q.p, want);
        free(q.p);
        free(want);
        json_decref(js);
    }
}
END_TEST

/* sb_i64_text writes what printf's %lld writes. */
START_TEST(i64_text_matches_printf)
{
    static const int64_t v[] = {0, 7, 9, 10, 42, 99, 100, 101, 999, 1000, 1700000000000000, -1, -10, -99, -100,
                                 INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char got[32], want[32];
        size_t n = sb_i64_text(got, v[i]);
        got[n] = '\0';
        snprintf(want, sizeof want, "%lld", (long long)v[i]);
        ck_assert_str_eq(got, want);
    }
}
END_TEST

/* sb_json_dump writes what json_dumps writes, for generated documents
 * (every kind of value, nesting, escapes, duplicate keys, reals) and for
 * bare values; what jansson cannot hold is refused, b left as it was. */
START_TEST(dump_matches_json_dumps)
{
    sb_strbuf doc = {0}, out = {0};
    int compared = 0;
    for (int i = 0; i < 20000; i++) {
        gen_object(&doc);
        json_t *v = json_loadb(doc.p, doc.len, JSON_DECODE_ANY, NULL);
        if (!v)
            continue; /* out of range numbers and the like */
        json_t *vals[] = {v, json_object_get(v, "id"), json_object_get(v, "a")};
        for (size_t k = 0; k < sizeof vals / sizeof *vals; k++) {
            if (!vals[k])
                continue;
            char *want = json_dumps(vals[k], JSON_COMPACT | JSON_ENCODE_ANY);
            out.len = 0;
            sb_strbuf_add(&out, "pre", 3);
            ck_assert_int_eq(sb_json_dump(&out, vals[k]), 0);
            ck_assert_msg(strcmp(out.p + 3, want) == 0, "dump %s, jansson %s", out.p + 3, want);
            free(want);
            compared++;
        }
        json_decref(v);
    }
    ck_assert_int_gt(compared, 20000);
    /* a string holding a NUL (json_stringn allows one) as jansson writes it */
    json_t *nul = json_pack("{s:s%}", "k", "a\0b", (size_t)3);
    char *want = json_dumps(nul, JSON_COMPACT);
    out.len = 0;
    ck_assert_int_eq(sb_json_dump(&out, nul), 0);
    ck_assert_str_eq(out.p, want);
    ck_assert_str_eq(out.p, "{\"k\":\"a\\u0000b\"}");
    free(want);
    json_decref(nul);
    out.len = 0;
    sb_strbuf_add(&out, "pre", 3);
    ck_assert_int_eq(sb_json_dump(&out, NULL), -1);
    ck_assert_str_eq(out.p, "pre");
    free(doc.p);
    free(out.p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json_text");
    TCase *tc = tcase_create("json_text");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hand_picked_edges);
    tcase_add_test(tc, member_walk_stops_at_the_end);
    tcase_add_test(tc, depth_limit);
    tcase_add_test(tc, generated_documents_and_mutations);
    tcase_add_test(tc, generated_flat_documents_and_mutations);
    tcase_add_test(tc, quote_matches_json_dumps);
    tcase_add_test(tc, i64_text_matches_printf);
    tcase_add_test(tc, dump_matches_json_dumps);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
