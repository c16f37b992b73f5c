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

/* Look up a dotted field path in a JSON object; NULL if absent. Borrowed. */
json_t *sb_json_path(json_t *obj, const char *path);
/* The same in an event's fields, reading only the member the path starts
 * with while the event is still text (event_internal.h). Borrowed. */
json_t *sb_event_path(const sb_event *ev, const char *path);

#endif
