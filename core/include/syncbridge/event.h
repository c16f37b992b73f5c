/*
 * syncbridge/event.h - the event a source emits and steps process.
 *
 * An event is a JSON object of fields (jansson) plus metadata: a stable
 * event id (derived from what identifies it at the source, so that a
 * redelivery maps to the same id), the source instance name and the
 * receive time.
 *
 * Ownership: sb_event_new() returns an event owned by the caller until it
 * is passed to sb_source_emit(), which takes it. Events seen in process()
 * are owned by the core. Field pointers returned here are borrowed and
 * valid until the event is changed or freed.
 *
 * Threading: an event is used by one thread at a time; no locking inside.
 */
#ifndef SYNCBRIDGE_EVENT_H
#define SYNCBRIDGE_EVENT_H

#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sb_event sb_event;

/* New empty event. `event_id` MUST be non-empty and stable for the input it
 * describes (e.g. "file:<dev>:<ino>:<offset>", "kafka:<topic>:<part>:<off>").
 * Returns NULL on allocation failure. */
sb_event *sb_event_new(const char *event_id);

/* New event whose fields are `fields` (a JSON object; the reference is
 * stolen, also on failure). Cheaper than copying a parsed object in.
 * Returns NULL if event_id is empty, fields is not an object, or on
 * allocation failure. */
sb_event *sb_event_new_with_fields(const char *event_id, json_t *fields);

/* New event from the JSON text of its fields (an object), for sources that
 * receive JSON (JSON lines, Kafka messages). The id is the string member
 * `id_field` when it is present and non-empty (id_field MAY be NULL), else
 * `fallback_id`. The text is checked here (exactly as json_loadb() would
 * check it) but not parsed: the core writes it to the run ledger as is
 * (since ABI 2.5 without the whitespace between its tokens, when the text
 * is at most 4 KiB and its id needs no unescaping; strings and numbers stay
 * as written), reads single fields from it (sb_event_get_string() and the like, route
 * matches, templates) and builds the fields object only when something asks
 * for all of it (sb_event_fields()). Setters and sb_event_add() keep the
 * text current; sb_event_fields() hands out the object and drops the text.
 * NULL with errstr and errno on failure: EINVAL when the text is at fault
 * ("not a JSON object", "NUL byte at offset N", the parser's message with
 * its column) or there is no id; ENOMEM when memory ran out (a source
 * should then retry rather than skip the input). */
sb_event *sb_event_new_json(const char *fallback_id, const char *id_field, const char *text, size_t len,
                            char *errstr, size_t errstr_size);

/* Free an event the caller owns (one never emitted). NULL is a no-op. */
void sb_event_free(sb_event *ev);

const char *sb_event_id(const sb_event *ev);

/* Source instance that produced it (set by the core on emit). */
const char *sb_event_source(const sb_event *ev);

/* Receive time, microseconds since the epoch (set by the core on emit
 * unless the source set one). */
int64_t sb_event_received_us(const sb_event *ev);
void sb_event_set_received_us(sb_event *ev, int64_t us);

/* The fields object. Borrowed. Sources MAY modify it before emit; steps
 * MUST use sb_event_add() so that the added fields are recorded. For an
 * event made by sb_event_new_json() this builds the object, the costly
 * part of JSON handling: steps that only read a few fields should use the
 * accessors below. */
json_t *sb_event_fields(sb_event *ev);

/* Field accessors; NULL/fallback when absent or of another type. */
const char *sb_event_get_string(const sb_event *ev, const char *key);
int64_t sb_event_get_int(const sb_event *ev, const char *key, int64_t fallback);

/* Field `key` whatever its type, NULL when absent: what
 * json_object_get(sb_event_fields(ev), key) gives, without building the
 * fields object of an event made by sb_event_new_json() (only that member
 * is parsed from the source's text, and kept). Borrowed, valid until the
 * event is next changed (a setter, sb_event_add()) or freed. Since ABI 2.4. */
json_t *sb_event_get_value(const sb_event *ev, const char *key);

/* Field `key` as the JSON text the event holds it in, for sinks that copy
 * values into JSON they write: a string with its quotes and escapes as the
 * source wrote them, a number, object or array as written (since ABI 2.5
 * without the whitespace between tokens, as sb_event_new_json() keeps a
 * text of up to 4 KiB). Returns 1 with
 * *text (*len bytes, not NUL-terminated), 0 when the event has no such
 * field, or -1 when the field is not held as text (an event built from a
 * tree, after sb_event_fields(), or a key written with escapes, whose
 * first lookup builds the tree): then use the accessors above. *text is
 * borrowed, valid until the event is next changed (a setter,
 * sb_event_add()), sb_event_fields() is called, or it is freed. Since ABI
 * 2.4. */
int sb_event_get_json(const sb_event *ev, const char *key, const char **text, size_t *len);

/* Convenience setters for sources; return -1 if the key or value is not
 * valid UTF-8, or on allocation failure. */
int sb_event_set_string(sb_event *ev, const char *key, const char *value);
int sb_event_set_int(sb_event *ev, const char *key, int64_t value);

/* From a step: add or replace a field for the steps after this one.
 * Steals the reference to `value`. Recorded in the run ledger with the
 * step, so a resumed event sees it too. Returns -1 on failure. */
int sb_event_add(sb_event *ev, const char *key, json_t *value);

/* What sb_event_add(ev, key, json_stringn(s, n)) does, without making the
 * jansson value when the event's fields object has not been built: for a
 * sink that adds a field to every event it delivers (Pub/Sub's message
 * id), the string goes straight into the event's record of added fields.
 * -1, adding nothing, if s is not valid UTF-8 or memory ran out. Since ABI
 * 2.5. */
int sb_event_add_string(sb_event *ev, const char *key, const char *s, size_t n);

/* Append s[0..n) as a JSON string, quotes included and escaped as
 * json_dumps() would, to the malloc'd text *buf of *len bytes in a buffer
 * of *cap (all three start zeroed; *buf stays NUL-terminated). For sinks
 * that write request bodies per event, where building and dumping jansson
 * values costs more than the request. Returns -1, appending nothing, if s
 * is not valid UTF-8 or holds a NUL byte; aborts if memory runs out, as the
 * core does. Since ABI 1.2. */
int sb_json_append_string(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* Append the event's fields as one compact JSON object (no whitespace
 * between tokens) to *buf, as sb_json_append_string() does. For an event
 * made by sb_event_new_json() it is the source's text with its whitespace
 * dropped and the fields set since spliced in before the closing brace,
 * so the tree is neither built nor dumped: for sinks that publish whole
 * events. That is the same JSON as json_dumps(sb_event_fields(ev),
 * JSON_COMPACT), and the same bytes when the source wrote its strings and
 * numbers as jansson does (a source's "\u00e9" stays so). A member set
 * again (over the source's, or twice) is written once, with its later
 * value: the fields are then dumped instead, as for any other event.
 * A source text that itself names a key twice is passed on as it came.
 * Returns -1, appending nothing, only if the fields cannot be dumped.
 * Since ABI 2.3. */
int sb_event_append_json(const sb_event *ev, char **buf, size_t *len, size_t *cap);

/* A 63-bit non-negative id derived deterministically from `identity`
 * (first 8 bytes of its SHA-256, top bit cleared): the same run always maps
 * to the same registry rows and DAG run. */
int64_t sb_run_id(const char *identity);

#ifdef __cplusplus
}
#endif
#endif
