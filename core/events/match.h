/*
 * match.h - route match conditions over event fields.
 *
 * Spec (JSON):
 *   {"field": "status", "equals": "succeeded"}        string/number/bool equality
 *   {"field": "schema", "in": ["a", "b"]}
 *   {"field": "table",  "glob": "im_*"}               fnmatch(3)
 *   {"field": "table",  "regex": "^im_[a-z]+$"}       POSIX extended
 *   {"field": "td_count", "exists": true}
 *   {"all": [c1, c2, ...]}  {"any": [...]}  {"not": c}
 * "field" is a path with '.' for nested objects. A missing field matches
 * nothing but {"exists": false}. Numbers compare by value with numbers and
 * by text with strings ("5" equals 5 is false: types must agree).
 *
 * Compile errors name the path inside the spec ("<where>.all[1].regex:
 * invalid regular expression: ...").
 *
 * Ownership: caller frees with sb_match_free(). Evaluation is read-only and
 * thread-safe.
 */
#ifndef SB_MATCH_H
#define SB_MATCH_H

#include <stddef.h>
#include <jansson.h>
#include <syncbridge/event.h>

typedef struct sb_match sb_match;

sb_match *sb_match_compile(const json_t *spec, const char *where, char *errstr, size_t errstr_size);
int sb_match_eval(const sb_match *m, const sb_event *ev); /* 1 = matches */
void sb_match_free(sb_match *m);

/* A field path ("a.b.c", for nested objects) split at its dots once, when
 * a condition or a template is compiled, rather than on every evaluation.
 * A path without a dot is one segment, whatever it holds; in a dotted one
 * the empty segments ("a..b", ".a", "a.") are skipped, and a path of dots
 * only has none and so names the object itself.
 *
 * sb_field_path_init() aborts on allocation failure, like the rest of
 * compiling; sb_field_path_clear() frees (a zeroed path is valid to
 * clear). sb_field_path_get() returns the value at the path in `obj`
 * (borrowed), or NULL if `obj` is NULL or a segment is missing or not an
 * object. Read-only after init: thread-safe. */
typedef struct sb_field_path {
    size_t n;
    char **seg; /* n segments, pointing into buf */
    char *buf;
} sb_field_path;

void sb_field_path_init(sb_field_path *p, const char *path);
void sb_field_path_clear(sb_field_path *p);
json_t *sb_field_path_get(const sb_field_path *p, json_t *obj);
/* The same in an event's fields (NULL if ev is NULL), reading only the
 * member the path starts with while the event is still text
 * (event_internal.h). Borrowed. */
json_t *sb_field_path_event(const sb_field_path *p, const sb_event *ev);

/* One lookup of a dotted field path in a JSON object, split as above;
 * NULL if absent or if obj or path is NULL. Borrowed. */
json_t *sb_json_path(json_t *obj, const char *path);

#endif
