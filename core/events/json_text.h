/*
 * json_text.h - JSON as text, without building a tree.
 *
 * The admission path sees every event a JSON source emits. Building a
 * jansson tree for each costs more than the rest of admission together, and
 * most routes never read the fields (the ledger stores the text as is). So
 * admission only checks the text with sb_json_scan_object() and reads the
 * one member it needs; the tree is built later, on the thread of whichever
 * step first reads a field (event.c).
 *
 * Core-internal. All functions are thread-safe (no shared state).
 */
#ifndef SB_JSON_TEXT_H
#define SB_JSON_TEXT_H

#include "util/util.h"

#include <jansson.h>
#include <stddef.h>

/* What sb_json_scan_object() found of the member it was asked for. */
typedef enum {
    SB_JSON_MEMBER_ABSENT,    /* no top-level member has that name */
    SB_JSON_MEMBER_STRING,    /* the last one is a string: see text/len */
    SB_JSON_MEMBER_OTHER,     /* the last one is not a string */
    SB_JSON_MEMBER_UNDECIDED, /* escapes in a key or in the value: parse the text to know */
} sb_json_member_kind;

typedef struct {
    sb_json_member_kind kind;
    const char *text; /* in the text looked in; sb_json_scan_object(): a STRING's bytes inside its quotes
                       * (no escapes); the lookups below: the value's whole JSON text */
    size_t len;
} sb_json_member;

/* One top-level member of a JSON object's text: pointers into that text. */
typedef struct sb_json_span_s {
    const char *key; /* inside the quotes, as written (escapes not undone) */
    size_t key_len;
    const char *value; /* the value's whole JSON text, a string's quotes included */
    size_t value_len;
    int key_escaped;
} sb_json_span;

/* What sb_json_scan_object() writes besides its verdict, when asked. */
typedef struct {
    char *text;   /* room for as many bytes as the text scanned, apart from it: the object's
                   * text without whitespace between tokens */
    size_t len;   /* out: its length */
    sb_json_span *spans; /* room for max_spans: the top-level members, pointing into `text` */
    size_t max_spans;
    size_t n_spans; /* out: how many; SIZE_MAX when there were more than max_spans */
} sb_json_compact;

/* 1 if text[0..len) is what json_loadb(text, len, 0, ...) accepts and its
 * value is an object, else 0: the same grammar, UTF-8 and escape rules
 * (\u0000 and unpaired surrogates refused), integer range (int64) and real
 * overflow, and nesting depth (2048). tests/unit/test_json_text.c holds the
 * two to agreement on generated input. The caller asks jansson for the
 * error message when it needs one (the failure path need not be fast).
 * With `key` non-NULL, *member describes the LAST top-level member of that
 * name (jansson keeps the last of duplicate keys). With `spaced` non-NULL,
 * *spaced is 0 when an accepted object has no whitespace between its
 * braces outside strings (it is already compact), else 1. With `out`
 * non-NULL, an accepted object's text from its '{' to its '}' without that
 * whitespace is written to out->text: the same JSON, its strings and
 * numbers as written, made while scanning rather than in a second pass
 * (a flat object's tokens are copied as they are read, other objects' text
 * between runs of whitespace); and its top-level members, what
 * sb_json_members() would find in that copy, to out->spans. */
int sb_json_scan_object(const char *text, size_t len, const char *key, sb_json_member *member, int *spaced,
                        sb_json_compact *out);

/* The top-level members, in order, of text that is known to be valid: an
 * object ("{...}") or a member list as the event's setters write it
 * (",\"k\":v,\"k2\":v2"). No checking, so much cheaper than the scan; an
 * event indexes its text once and then looks up any number of fields.
 * malloc'd (aborts on OOM, as sb_x*), count in *n. */
sb_json_span *sb_json_members(const char *text, size_t len, size_t *n);

/* Look `key` up in members m[0..n): *member gets the LAST one named so
 * (jansson keeps the last duplicate), STRING or OTHER by its type, with
 * text/len spanning the value's JSON text; or ABSENT; or UNDECIDED when a
 * key with escapes comes after the last plain match (it might be this name
 * once unescaped: only a parse can tell). */
void sb_json_find_in(const sb_json_span *m, size_t n, const char *key, sb_json_member *member);

/* The same for a single lookup: walks the text in place, allocating
 * nothing (for the event's short list of set members). */
void sb_json_find_member(const char *text, size_t len, const char *key, sb_json_member *member);

/* 1 if s[0..len) is plain ASCII that a JSON string holds as is (no quote,
 * backslash, control character or byte over 0x7F): sb_json_quote() would
 * only put quotes around it. */
int sb_json_plain(const char *s, size_t len);

/* 1 if s[0..len) can be a JSON string: valid UTF-8 without a NUL byte,
 * which json_stringn() refuses (sb_json_quote() returns -1 for it). */
int sb_json_quotable(const char *s, size_t len);

/* Append s[0..len) as a JSON string (quotes included), escaped the way
 * json_dumps() escapes. -1 (nothing appended) if s is not valid UTF-8 or
 * holds a NUL byte, as json_stringn() refuses those. */
int sb_json_quote(sb_strbuf *b, const char *s, size_t len);

/* Append v as compact JSON, as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
 * writes it (object members in jansson's order; reals through jansson).
 * For the few small values a step adds per event, where json_dumps's
 * set-up cost more than the writing. -1 (b as it was) if jansson refuses. */
int sb_json_dump(sb_strbuf *b, const json_t *v);

#endif
