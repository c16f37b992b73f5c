/*
 * event_internal.h - what the core knows of an event beyond the SDK:
 * serialisation to and from the ledger payload, and the record of fields
 * added by the current step.
 */
#ifndef SB_EVENT_INTERNAL_H
#define SB_EVENT_INTERNAL_H

#include <syncbridge/event.h>

#include "util/util.h"

/* An event made from JSON text (sb_event_new_json) keeps that text, checked
 * but not parsed: `fields` is built from it on first read, on whichever
 * thread reads first, and most routes never read (the ledger stores the
 * text). Invariant: while `raw` is set, raw with `sets` spliced in before
 * its closing brace is exactly the fields; without `raw`, `fields` is. */
struct sb_event {
    char *id;         /* owned, or inside this block when in_block */
    const char *source; /* an interned name (never freed), or owned when source_owned */
    int64_t received_us;
    json_t *fields;  /* object, owned; NULL until first read when raw is set */
    /* ,"key":value for each sb_event_add() by the step in progress, in
     * order (a later key wins): the ledger wants the text, so no object
     * is built (it cost a fifth of the pubsub step's thread). */
    sb_strbuf added;
    char *raw;       /* the source's JSON object text, '{' to '}'; owned (or in this block), may be NULL */
    size_t raw_len;
    unsigned raw_compact : 1;  /* raw has no whitespace between tokens (sb_event_append_json copies it as is) */
    unsigned in_block : 1;     /* id and raw were allocated with the event (sb_event_new_json) */
    unsigned source_owned : 1; /* source is the event's own copy */
    unsigned index_in_block : 1; /* index was made by the scan, in the event's block */
    sb_strbuf sets;  /* ,"key":value for each setter call since, in order (a later key wins) */
    /* Members read from the text while `fields` is NULL: a few per event,
     * so a short array (keys in peek_keys) rather than a jansson object,
     * whose hashtable cost more to build and free than the lookups saved. */
    struct sb_peek_s *peek; /* owned, values owned */
    size_t npeek, peek_cap;
    sb_strbuf peek_keys;
    /* the raw text's members: made by the scan that checked the text (in
     * this block, index_in_block), else on the first read (owned); may be NULL */
    struct sb_json_span_s *index;
    size_t nindex;
    uint32_t block_cap; /* the event's memory goes back to sb_event_block_give() (event_blocks.h); 0: to free() */
};

/* The fields for reading (match, templates): built from the raw text on
 * first use, which is kept. Borrowed; NULL never (aborts if memory runs
 * out, as the sb_x* helpers do). */
json_t *sb_event_view(const sb_event *ev);

/* The top-level member `key` for reading, or NULL if absent. Borrowed,
 * valid until the event is changed or freed. Without the tree, reads just
 * that member from the text (and keeps it): a step that reads a few fields
 * never pays for the whole tree. */
json_t *sb_event_member(const sb_event *ev, const char *key);

/* Ledger payload: {"id","source","received_us","fields":{...}}. malloc'd,
 * its length in *len when len is not NULL; NULL if a field cannot be
 * written as JSON. */
char *sb_event_to_payload(const sb_event *ev, size_t *len);
/* The payload's "fields" object alone, appended to b (-1, b as it was, if
 * a field, the id or the source cannot be written as JSON: the id and the
 * source are not written here, but are when the ledger makes the whole
 * payload), and a guess of the bytes it takes
 * (exact but for escapes, and for the fields of an event that is no longer
 * text): for a batch's events written into one buffer, which the ledger
 * keeps as they are and makes whole payloads of when it is read
 * (sb_ledger_new.fields_only). */
int sb_event_append_fields(const sb_event *ev, sb_strbuf *b);
size_t sb_event_fields_size_hint(const sb_event *ev);
/* Rebuild from a payload; NULL with errstr if it is not one. */
sb_event *sb_event_from_payload(const char *payload, char *errstr, size_t errstr_size);
void sb_event_set_source(sb_event *ev, const char *source);
/* Deep copy (each route gets its own). */
sb_event *sb_event_clone(const sb_event *ev);
/* Take the fields added since the last call as a JSON object's compact
 * text (malloc'd, caller owns; a key added twice once, with its later
 * value), or NULL if none were added. */
char *sb_event_take_added(sb_event *ev);
/* Drop fields added by a step that did not succeed: restore from `before`. */
void sb_event_discard_added(sb_event *ev);
/* Merge a JSON object of fields into the event (resume). */
void sb_event_merge_fields(sb_event *ev, json_t *obj);

#endif
