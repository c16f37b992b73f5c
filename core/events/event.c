/* event.c - the event model: fields, metadata, payload (de)serialisation.
 *
 * JSON events stay text until something reads a field (event_internal.h):
 * the kafka source's events reach the ledger and a discarding or
 * command-forwarding step without ever becoming a tree. */
#include "build_config.h"
#include "events/event_internal.h"
#include "events/event_blocks.h"
#include "events/json_text.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syncbridge/log.h>

static void drop_raw(sb_event *ev);

/* The longest text sb_event_new_json() keeps in the event's own block, and
 * the most top-level members it indexes there as it checks the text. */
#define EVENT_BLOCK_TEXT_MAX 4096
#define EVENT_INDEX_MAX 32

struct sb_peek_s {
    size_t key; /* offset in peek_keys */
    json_t *v;
};

sb_event *sb_event_new(const char *event_id)
{
    if (!event_id || !*event_id)
        return NULL;
    sb_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->id = strdup(event_id);
    ev->fields = json_object();
    if (!ev->id || !ev->fields) {
        sb_event_free(ev);
        return NULL;
    }
    return ev;
}

sb_event *sb_event_new_with_fields(const char *event_id, json_t *fields)
{
    if (!event_id || !*event_id || !json_is_object(fields)) {
        json_decref(fields);
        return NULL;
    }
    sb_event *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->id = strdup(event_id))) {
        free(ev);
        json_decref(fields);
        return NULL;
    }
    ev->fields = fields;
    return ev;
}

void sb_event_free(sb_event *ev)
{
    if (!ev)
        return;
    if (!ev->in_block)
        free(ev->id);
    if (ev->source_owned)
        free((char *)ev->source);
    drop_raw(ev);
    json_decref(ev->fields);
    free(ev->added.p);
    for (size_t i = 0; i < ev->npeek; i++)
        json_decref(ev->peek[i].v);
    free(ev->peek);
    free(ev->peek_keys.p);
    if (ev->block_cap)
        sb_event_block_give(ev, ev->block_cap);
    else
        free(ev);
}

const char *sb_event_id(const sb_event *ev) { return ev->id; }
const char *sb_event_source(const sb_event *ev) { return ev->source; }
int64_t sb_event_received_us(const sb_event *ev) { return ev->received_us; }
void sb_event_set_received_us(sb_event *ev, int64_t us) { ev->received_us = us; }

/* Only once the fields exist: the text is their only copy before. */
static void drop_raw(sb_event *ev)
{
    if (!ev->index_in_block) /* else made by the scan, in the event's block */
        free(ev->index); /* points into raw */
    ev->index = NULL;
    ev->nindex = 0;
    ev->index_in_block = 0;
    if (!ev->in_block)
        free(ev->raw);
    ev->raw = NULL;
    ev->raw_len = 0;
    free(ev->sets.p);
    ev->sets = (sb_strbuf){0};
}

/* The raw text with the setters' members spliced in before its closing
 * brace, appended to b: {...raw...,"k":v}. */
static void add_fields_text(sb_strbuf *b, const sb_event *ev)
{
    if (!ev->sets.len) {
        sb_strbuf_add(b, ev->raw, ev->raw_len);
        return;
    }
    size_t inner = 1; /* past '{': is the raw object empty? */
    while (inner < ev->raw_len - 1 && strchr(" \t\r\n", ev->raw[inner]))
        inner++;
    int empty = inner == ev->raw_len - 1;
    sb_strbuf_add(b, ev->raw, ev->raw_len - 1);
    sb_strbuf_add(b, ev->sets.p + empty, ev->sets.len - (size_t)empty); /* no leading ',' in "{}" */
    sb_strbuf_add(b, "}", 1);
}

json_t *sb_event_view(const sb_event *cev)
{
    sb_event *ev = (sb_event *)cev; /* a cache: one thread at a time uses an event (event.h) */
    if (ev->fields)
        return ev->fields;
    sb_strbuf text = {0};
    add_fields_text(&text, ev);
    json_error_t jerr;
    /* JSON_ALLOW_NUL: a step may have added a string holding \u0000 (the
     * source's own text never does: sb_event_new_json() refuses it) */
    ev->fields = json_loadb(text.p, text.len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(ev->fields)) {
        /* The text was checked on creation and the sets are ours, so only
         * an allocation can fail here: abort as the sb_x* helpers do. */
        sb_log(NULL, SB_LOG_ERROR, "event %s: its fields cannot be built: %s", ev->id, jerr.text);
        abort();
    }
    free(text.p);
    return ev->fields;
}

/* Parse the value text of a member read from the raw text; text we
 * checked or wrote, so only an allocation can fail (abort, as sb_x*). */
static json_t *member_value(const sb_event *ev, const sb_json_member *m)
{
    /* the common cases directly: a string without escapes, an integer */
    if (m->kind == SB_JSON_MEMBER_STRING && !memchr(m->text, '\\', m->len)) {
        json_t *v = json_stringn_nocheck(m->text + 1, m->len - 2);
        if (v)
            return v;
    } else if (m->kind == SB_JSON_MEMBER_OTHER && m->len < 20 && strspn(m->text, "-0123456789") == m->len) {
        json_t *v = json_integer(strtoll(m->text, NULL, 10)); /* checked or ours: in range */
        if (v)
            return v;
    }
    json_error_t jerr;
    json_t *v = json_loadb(m->text, m->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v) {
        sb_log(NULL, SB_LOG_ERROR, "event %s: a field cannot be read: %s", ev->id, jerr.text);
        abort();
    }
    return v;
}

/* The peeked value of key, or NULL. */
static json_t **peek_slot(const sb_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->npeek; i++)
        if (strcmp(ev->peek_keys.p + ev->peek[i].key, key) == 0)
            return &ev->peek[i].v;
    return NULL;
}

static void peek_add(sb_event *ev, const char *key, json_t *v)
{
    if (ev->npeek == ev->peek_cap) {
        ev->peek_cap = ev->peek_cap ? ev->peek_cap * 2 : 8;
        ev->peek = sb_xrealloc(ev->peek, ev->peek_cap * sizeof *ev->peek);
    }
    ev->peek[ev->npeek].key = ev->peek_keys.len;
    ev->peek[ev->npeek++].v = v;
    sb_strbuf_add(&ev->peek_keys, key, strlen(key) + 1); /* with its NUL */
}

/* Whether raw JSON text can hold a member named key: not when the key's
 * bytes occur nowhere in it and it has no escape (which could spell the key
 * another way). Cheaper than the member index for a key most events lack,
 * like the run fields the freshness metrics look for on every event. */
static int text_may_name(const char *raw, size_t len, const char *key)
{
    size_t klen = strlen(key);
    if (klen == 0 || memchr(raw, '\\', len))
        return 1;
    /* memchr on the key's first byte, then compare: a few dozen instructions
     * on a typical event where glibc's memmem took about 400; past 32
     * candidates (a text full of that byte) the index is the cheaper way */
    const char *p = raw, *end = raw + len;
    for (int tries = 0; tries < 32 && (size_t)(end - p) >= klen; tries++, p++) {
        if (!(p = memchr(p, key[0], (size_t)(end - p) - klen + 1)))
            return 0;
        if (memcmp(p, key, klen) == 0)
            return 1;
    }
    return (size_t)(end - p) >= klen;
}

/* Member `key` of an event without a tree, as text: what was set since
 * (which wins), else the source's text through its member index: made by
 * the scan that checked the text, or else on the first lookup that may
 * find something. */
static void text_member(sb_event *ev, const char *key, sb_json_member *m)
{
    *m = (sb_json_member){SB_JSON_MEMBER_ABSENT, NULL, 0};
    if (ev->sets.len) /* set later than the text: wins */
        sb_json_find_member(ev->sets.p, ev->sets.len, key, m);
    if (m->kind == SB_JSON_MEMBER_ABSENT) {
        if (!ev->index) {
            if (!text_may_name(ev->raw, ev->raw_len, key))
                return;
            ev->index = sb_json_members(ev->raw, ev->raw_len, &ev->nindex);
        }
        sb_json_find_in(ev->index, ev->nindex, key, m);
    }
}

json_t *sb_event_member(const sb_event *cev, const char *key)
{
    sb_event *ev = (sb_event *)cev; /* a cache: one thread at a time uses an event (event.h) */
    if (!key)
        return NULL;
    if (ev->fields)
        return json_object_get(ev->fields, key);
    json_t **slot = peek_slot(ev, key);
    if (slot)
        return *slot;
    sb_json_member m;
    text_member(ev, key, &m);
    if (m.kind == SB_JSON_MEMBER_ABSENT)
        return NULL;
    if (m.kind == SB_JSON_MEMBER_UNDECIDED)
        return json_object_get(sb_event_view(ev), key);
    json_t *v = member_value(ev, &m);
    peek_add(ev, key, v);
    return v;
}

/* A setter keeps the raw text valid by appending what it set (the payload
 * and a later parse see the later duplicate key win, as the set did).
 * set_raw_key() appends `,"key":` and returns the mark to roll back to;
 * the setter appends the value's JSON text. Then a tree gets the value
 * only if one holds the key (tree_wants): the fields once built, or a
 * member read before. Most events are set and sent without a tree: the
 * kafka source sets four fields per message, and building values nobody
 * reads was a tenth of its thread's time. */
static void set_raw_undo(sb_event *ev, size_t mark)
{
    ev->sets.len = mark;
    ev->sets.p[mark] = '\0';
}

static int set_raw_key(sb_event *ev, const char *key, size_t *mark)
{
    *mark = ev->sets.len;
    sb_strbuf_add(&ev->sets, ",", 1);
    if (sb_json_quote(&ev->sets, key, strlen(key)) != 0) {
        set_raw_undo(ev, *mark);
        return -1;
    }
    sb_strbuf_add(&ev->sets, ":", 1);
    return 0;
}

static int tree_wants(const sb_event *ev, const char *key)
{
    return !ev->raw || ev->fields || peek_slot(ev, key);
}

/* Put jv (stolen) into the tree that holds key. -1 if jansson refuses. */
static int tree_set(sb_event *ev, const char *key, json_t *jv)
{
    if (!jv)
        return -1;
    if (ev->raw && !ev->fields) { /* the peek cache: keep the copy current */
        json_t **slot = peek_slot(ev, key);
        if (!slot) {
            json_decref(jv);
            return 0;
        }
        json_decref(*slot);
        *slot = jv;
        return 0;
    }
    if (json_object_set_new(ev->fields, key, jv) != 0) {
        if (ev->raw) /* the fields and the text now disagree: keep the fields */
            drop_raw(ev);
        return -1;
    }
    return 0;
}

json_t *sb_event_fields(sb_event *ev)
{
    sb_event_view(ev);
    drop_raw(ev);
    return ev->fields;
}

/* sb_event_new_json() refusing: errno tells the text's fault from memory's. */
static sb_event *refuse(int err, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sb_event *refuse(int err, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    errno = err;
    return NULL;
}

sb_event *sb_event_new_json(const char *fallback_id, const char *id_field, const char *text, size_t len,
                            char *errstr, size_t errstr_size)
{
    sb_json_member m;
    json_t *obj = NULL;
    const char *own = NULL;
    size_t own_len = 0;
    int spaced = 1;
    /* The text is kept without the whitespace between its tokens, written
     * by the scan that checks it: what the ledger stores and sinks publish
     * is then smaller, and compact JSON is copied as is (a second pass to
     * drop the whitespace was a twentieth of the pubsub step's thread).
     * The same scan notes where each top-level member is: the index that
     * field lookups use (a sink's attributes), which a walk of the text on
     * the step's thread made before. */
    char compact[EVENT_BLOCK_TEXT_MAX];
    sb_json_span spans[EVENT_INDEX_MAX];
    sb_json_compact made = {compact, 0, spans, EVENT_INDEX_MAX, 0};
    sb_json_compact *out = len <= sizeof compact ? &made : NULL; /* longer texts are kept as they came */
    if (!sb_json_scan_object(text, len, id_field, &m, &spaced, out) ||
        (id_field && m.kind == SB_JSON_MEMBER_UNDECIDED)) {
        /* Refused (jansson words the reason), or the id needs unescaping.
         * NULs first: jansson skips some, and the text must stay a C string. */
        const char *nul = memchr(text, '\0', len);
        if (nul)
            return refuse(EINVAL, errstr, errstr_size, "NUL byte at offset %zu", (size_t)(nul - text));
        json_error_t jerr;
        obj = json_loadb(text, len, 0, &jerr);
        if (!obj)
            return refuse(json_error_code(&jerr) == json_error_out_of_memory ? ENOMEM : EINVAL, errstr,
                          errstr_size, "%s (column %d)", jerr.text, jerr.column);
        if (!json_is_object(obj)) {
            json_decref(obj);
            return refuse(EINVAL, errstr, errstr_size, "not a JSON object");
        }
        own = id_field ? json_string_value(json_object_get(obj, id_field)) : NULL;
        own_len = own ? strlen(own) : 0;
    } else if (id_field && m.kind == SB_JSON_MEMBER_STRING) {
        own = m.text;
        own_len = m.len;
    }
    if (!own_len && (!fallback_id || !*fallback_id)) {
        json_decref(obj);
        return refuse(EINVAL, errstr, errstr_size, "no event id: the text has none and no fallback was given");
    }
    const char *open;
    size_t raw_len, nindex = 0;
    if (!obj && out) {
        open = compact;
        raw_len = made.len;
        spaced = 0;
        nindex = made.n_spans == SIZE_MAX ? 0 : made.n_spans; /* 0: made on the first lookup, as for others */
    } else { /* the text from its '{' to its '}' (checked: it is an object) */
        while (len && text[len - 1] != '}')
            len--;
        open = memchr(text, '{', len);
        raw_len = len - (size_t)(open - text);
    }
    /* The event, its id and its text in one allocation when the text is
     * short, as most are: three per event were a visible share of the
     * source's thread, and of the frees on the thread that ends the event.
     * A long text gets its own, so that dropping it (sb_event_fields())
     * gives its memory back. */
    const char *id = own_len ? own : fallback_id;
    size_t id_len = own_len ? own_len : strlen(fallback_id);
    int in_block = raw_len <= EVENT_BLOCK_TEXT_MAX; /* true whenever nindex > 0 */
    size_t index_size = nindex * sizeof(sb_json_span);
    uint32_t block_cap;
    sb_event *ev = sb_event_block_take(sizeof *ev + (in_block ? index_size + id_len + 1 + raw_len + 1 : 0), &block_cap);
    if (ev) {
        memset(ev, 0, sizeof *ev);
        ev->block_cap = block_cap;
        ev->in_block = (unsigned)in_block;
        if (in_block) {
            ev->index = nindex ? (sb_json_span *)(ev + 1) : NULL; /* first: its pointers stay aligned */
            ev->id = (char *)(ev + 1) + index_size;
            ev->raw = ev->id + id_len + 1;
        } else {
            ev->id = malloc(id_len + 1);
            ev->raw = ev->id ? malloc(raw_len + 1) : NULL;
        }
    }
    if (ev && ev->id && ev->raw) {
        memcpy(ev->id, id, id_len);
        ev->id[id_len] = '\0';
        memcpy(ev->raw, open, raw_len);
        ev->raw[raw_len] = '\0';
        ev->raw_len = raw_len;
        for (size_t i = 0; i < nindex; i++) /* the spans point into `compact`: move them to the copy */
            ev->index[i] = (sb_json_span){ev->raw + (spans[i].key - compact), spans[i].key_len,
                                          ev->raw + (spans[i].value - compact), spans[i].value_len,
                                          spans[i].key_escaped};
        ev->nindex = nindex;
        ev->index_in_block = nindex > 0;
        ev->raw_compact = !obj && !spaced; /* jansson's path did not say */
        ev->fields = obj; /* NULL (not parsed yet) on the fast path */
        return ev;
    }
    json_decref(obj);
    sb_event_free(ev);
    return refuse(ENOMEM, errstr, errstr_size, "out of memory");
}

/* Source names, shared: every event carries its source's name and a
 * daemon has a few sources, so a copy per event was an allocation and a
 * free per event. The first INTERNED_MAX names seen are kept for the
 * process's life (append-only: read without the lock); an event whose
 * name does not fit gets its own copy. */
#define INTERNED_MAX 64
static const char *interned[INTERNED_MAX];
static size_t n_interned; /* published with release: names below it are set */
static pthread_mutex_t interned_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *interned_find(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(interned[i], s) == 0)
            return interned[i];
    return NULL;
}

static const char *intern(const char *s)
{
    size_t seen = __atomic_load_n(&n_interned, __ATOMIC_ACQUIRE);
    const char *found = interned_find(s, seen);
    if (found || seen == INTERNED_MAX) /* full: no lock taken per event for the names that missed it */
        return found;
    pthread_mutex_lock(&interned_lock);
    size_t n = n_interned;
    if (!(found = interned_find(s, n)) && n < INTERNED_MAX && (interned[n] = strdup(s))) {
        found = interned[n];
        __atomic_store_n(&n_interned, n + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&interned_lock);
    return found;
}

void sb_event_set_source(sb_event *ev, const char *source)
{
    if (source == ev->source)
        return;
    if (ev->source_owned)
        free((char *)ev->source);
    ev->source = source ? intern(source) : NULL;
    ev->source_owned = source && !ev->source;
    if (ev->source_owned)
        ev->source = sb_strdup(source);
}

json_t *sb_event_get_value(const sb_event *ev, const char *key)
{
    return sb_event_member(ev, key);
}

int sb_event_get_json(const sb_event *cev, const char *key, const char **text, size_t *len)
{
    sb_event *ev = (sb_event *)cev; /* the member index is a cache, as in sb_event_member() */
    if (!key)
        return 0;
    if (ev->fields || !ev->raw)
        return -1;
    sb_json_member m;
    text_member(ev, key, &m);
    if (m.kind == SB_JSON_MEMBER_ABSENT)
        return 0;
    if (m.kind == SB_JSON_MEMBER_UNDECIDED)
        return -1;
    *text = m.text;
    *len = m.len;
    return 1;
}

const char *sb_event_get_string(const sb_event *ev, const char *key)
{
    return json_string_value(sb_event_member(ev, key));
}

int64_t sb_event_get_int(const sb_event *ev, const char *key, int64_t fallback)
{
    json_t *v = sb_event_member(ev, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
}

int sb_event_set_string(sb_event *ev, const char *key, const char *value)
{
    if (!key)
        return -1;
    value = value ? value : "";
    if (ev->raw) {
        size_t mark;
        if (set_raw_key(ev, key, &mark) != 0)
            return -1;
        if (sb_json_quote(&ev->sets, value, strlen(value)) != 0) {
            set_raw_undo(ev, mark);
            return -1; /* not UTF-8: json_string() refuses it too */
        }
        if (!tree_wants(ev, key))
            return 0;
    }
    return tree_set(ev, key, json_string(value));
}

int sb_event_set_int(sb_event *ev, const char *key, int64_t value)
{
    if (!key)
        return -1;
    if (ev->raw) {
        size_t mark;
        if (set_raw_key(ev, key, &mark) != 0)
            return -1;
        char v[24];
        int n = snprintf(v, sizeof v, "%" PRId64, value);
        sb_strbuf_add(&ev->sets, v, (size_t)n);
        if (!tree_wants(ev, key))
            return 0;
    }
    return tree_set(ev, key, json_integer((json_int_t)value));
}

static void added_undo(sb_event *ev, size_t mark)
{
    ev->added.len = mark;
    if (ev->added.p)
        ev->added.p[mark] = '\0';
}

int sb_event_add(sb_event *ev, const char *key, json_t *value)
{
    if (!key || !value) {
        json_decref(value);
        return -1;
    }
    size_t mark = ev->added.len;
    sb_strbuf_add(&ev->added, ",", 1);
    if (sb_json_quote(&ev->added, key, strlen(key)) != 0) {
        added_undo(ev, mark);
        json_decref(value);
        return -1;
    }
    sb_strbuf_add(&ev->added, ":", 1);
    if (sb_json_dump(&ev->added, value) != 0) {
        added_undo(ev, mark);
        json_decref(value);
        return -1;
    }
    /* as a setter: the text stays the whole truth, and no tree is built */
    if (ev->raw)
        sb_strbuf_add(&ev->sets, ev->added.p + mark, ev->added.len - mark);
    if (!tree_wants(ev, key)) {
        json_decref(value);
        return 0;
    }
    if (tree_set(ev, key, value) != 0) { /* steals the value */
        added_undo(ev, mark);
        return -1;
    }
    return 0;
}

int sb_event_add_string(sb_event *ev, const char *key, const char *s, size_t n)
{
    if (!key || !s)
        return -1;
    /* the value is needed as a value too, or written as \u0000 */
    if (tree_wants(ev, key) || memchr(s, '\0', n))
        return sb_event_add(ev, key, json_stringn(s, n));
    size_t mark = ev->added.len;
    sb_strbuf_add(&ev->added, ",", 1);
    if (sb_json_quote(&ev->added, key, strlen(key)) != 0) {
        added_undo(ev, mark);
        return -1;
    }
    sb_strbuf_add(&ev->added, ":", 1);
    if (sb_json_quote(&ev->added, s, n) != 0) {
        added_undo(ev, mark);
        return -1;
    }
    sb_strbuf_add(&ev->sets, ev->added.p + mark, ev->added.len - mark); /* tree_wants() is false: ev->raw is set */
    return 0;
}

/* The added members as an object, a later duplicate key winning (as
 * jansson's loader keeps it); NULL if none or out of memory. */
static json_t *added_object(const sb_event *ev)
{
    if (!ev->added.len)
        return NULL;
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "{", 1);
    sb_strbuf_add(&b, ev->added.p + 1, ev->added.len - 1);
    sb_strbuf_add(&b, "}", 1);
    json_t *obj = json_loadb(b.p, b.len, JSON_ALLOW_NUL, NULL); /* a value may hold \u0000 */
    free(b.p);
    return obj;
}

/* Whether member i's key, as written, is one of members 0..i-1's. */
static int key_seen_before(const sb_json_span *m, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (m[k].key_len == m[i].key_len && !memcmp(m[k].key, m[i].key, m[i].key_len))
            return 1;
    return 0;
}

/* Whether two of the added members have the same key. */
static int added_twice(const sb_event *ev)
{
    size_t n = 0;
    sb_json_span *m = sb_json_members(ev->added.p, ev->added.len, &n);
    int twice = 0;
    for (size_t i = 1; i < n && !twice; i++)
        twice = key_seen_before(m, i);
    free(m);
    return twice;
}

char *sb_event_take_added(sb_event *ev)
{
    if (!ev->added.len)
        return NULL;
    char *text = NULL;
    if (memchr(ev->added.p + 1, ',', ev->added.len - 1) && added_twice(ev)) { /* rare: one copy of each key */
        json_t *obj = added_object(ev);
        sb_strbuf b = {0};
        if (obj && sb_json_dump(&b, obj) == 0)
            text = b.p;
        else
            free(b.p);
        if (!text) /* out of memory: the step's work is done all the same */
            sb_log(NULL, SB_LOG_ERROR,
                   "event %s: the fields a step added could not be written for the run ledger; if the event is "
                   "resumed after a restart, later steps will not see them", ev->id);
        json_decref(obj);
        free(ev->added.p);
    } else { /* ,"k":v... becomes {"k":v...} in place */
        ev->added.p[0] = '{';
        sb_strbuf_add(&ev->added, "}", 1);
        text = ev->added.p;
    }
    ev->added = (sb_strbuf){0};
    return text;
}

void sb_event_discard_added(sb_event *ev)
{
    /* A failed step's additions must not leak into the next attempt's view:
     * remove them from the fields. (A field it replaced is lost only when
     * the step overwrote an existing key and then failed; steps add new
     * keys by convention.) */
    json_t *added = added_object(ev);
    free(ev->added.p);
    ev->added = (sb_strbuf){0};
    if (!added)
        return;
    const char *k;
    json_t *v;
    json_t *fields = sb_event_fields(ev);
    json_object_foreach(added, k, v) json_object_del(fields, k);
    json_decref(added);
}

void sb_event_merge_fields(sb_event *ev, json_t *obj)
{
    json_t *fields = sb_event_fields(ev);
    if (json_is_object(obj))
        json_object_update(fields, obj);
}

sb_event *sb_event_clone(const sb_event *src)
{
    sb_event *ev = sb_xcalloc(1, sizeof *ev);
    ev->id = sb_strdup(src->id);
    if (src->source_owned)
        sb_event_set_source(ev, src->source);
    else
        ev->source = src->source; /* interned, or NULL */
    ev->received_us = src->received_us;
    if (src->raw) { /* the text is the whole truth (invariant): copy it, not the tree */
        ev->raw = sb_xmalloc(src->raw_len + 1);
        memcpy(ev->raw, src->raw, src->raw_len + 1);
        ev->raw_len = src->raw_len;
        ev->raw_compact = src->raw_compact;
        if (src->sets.len)
            sb_strbuf_add(&ev->sets, src->sets.p, src->sets.len);
        return ev;
    }
    ev->fields = json_deep_copy(src->fields);
    if (!ev->fields) {
        sb_event_free(ev);
        return NULL;
    }
    return ev;
}

/* The payload is written by hand into a buffer sized once (from this
 * hint): it runs once per event on the source's thread, where temporary
 * JSON values, a printf or the buffer's growth by doubling would cost more
 * than the text. */
size_t sb_event_fields_size_hint(const sb_event *ev) { return ev->raw ? ev->raw_len + ev->sets.len : 256; }

static size_t payload_size_hint(const sb_event *ev)
{
    return 66 + strlen(ev->id) + (ev->source ? strlen(ev->source) : 4) + /* 66: the names, quotes, 20 digits */
           sb_event_fields_size_hint(ev);
}

/* received_us as text: the events of a batch share it, so the last one
 * written on this thread is kept (each source serialises on its own). */
static size_t received_text(int64_t us, const char **text)
{
    static _Thread_local int64_t last_us;
    static _Thread_local char last[24];
    static _Thread_local size_t last_len; /* 0: nothing kept yet (a number has a digit) */
    if (!last_len || us != last_us) {
        last_len = sb_i64_text(last, us);
        last_us = us;
    }
    *text = last;
    return last_len;
}

/* sb_strbuf_add with the room check inline: the payload is written in
 * pieces, and a call for each was most of its cost (docs/benchmarks.md). */
static inline void put(sb_strbuf *b, const char *s, size_t n)
{
    char *w = b->len + n + 1 > b->cap ? sb_strbuf_room(b, n) : b->p + b->len;
    memcpy(w, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}
#define PUT_LITERAL(b, lit) put((b), (lit), sizeof(lit) - 1)

/* s as a JSON string: put between quotes when it needs no escaping (an id
 * taken from JSON text without escapes, a source's name), else quoted. */
static int put_string(sb_strbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (!sb_json_plain(s, n))
        return sb_json_quote(b, s, n);
    put(b, "\"", 1);
    put(b, s, n);
    put(b, "\"", 1);
    return 0;
}

/* b back to its first `mark` bytes: what a failed append leaves */
static int append_failed(sb_strbuf *b, size_t mark)
{
    b->len = mark;
    if (b->p)
        b->p[mark] = '\0';
    return -1;
}

/* The fields object's text appended to b; -1, b as it was, if a field
 * cannot be written as JSON. */
static int append_fields_text(const sb_event *ev, sb_strbuf *b)
{
    size_t mark = b->len;
    if (ev->raw)
        add_fields_text(b, ev);
    else if (sb_json_dump(b, ev->fields) != 0)
        return append_failed(b, mark);
    return 0;
}

int sb_event_append_fields(const sb_event *ev, sb_strbuf *b)
{
    /* the ledger writes them into the payload when it is read */
    if (!sb_json_quotable(ev->id, strlen(ev->id)) ||
        (ev->source && !sb_json_quotable(ev->source, strlen(ev->source))))
        return -1;
    return append_fields_text(ev, b);
}

static int append_payload(const sb_event *ev, sb_strbuf *b)
{
    size_t mark = b->len;
    PUT_LITERAL(b, "{\"id\":");
    if (put_string(b, ev->id) != 0)
        return append_failed(b, mark);
    PUT_LITERAL(b, ",\"source\":");
    if (!ev->source)
        PUT_LITERAL(b, "null");
    else if (put_string(b, ev->source) != 0)
        return append_failed(b, mark);
    PUT_LITERAL(b, ",\"received_us\":");
    const char *num;
    size_t num_len = received_text(ev->received_us, &num);
    put(b, num, num_len);
    PUT_LITERAL(b, ",\"fields\":");
    if (append_fields_text(ev, b) != 0) /* the id and source are checked as put_string wrote them */
        return append_failed(b, mark);
    PUT_LITERAL(b, "}");
    return 0;
}

char *sb_event_to_payload(const sb_event *ev, size_t *len)
{
    sb_strbuf b = {0};
    b.cap = payload_size_hint(ev); /* the common case (nothing to escape) in one allocation */
    b.p = sb_xmalloc(b.cap);
    b.p[0] = '\0';
    if (append_payload(ev, &b) != 0) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}

sb_event *sb_event_from_payload(const char *payload, char *errstr, size_t errstr_size)
{
    if (!payload) {
        sb_err(errstr, errstr_size, "the ledger holds no payload for it");
        return NULL;
    }
    json_error_t jerr;
    json_t *o = json_loads(payload, JSON_ALLOW_NUL, &jerr); /* as the fields may hold (sb_event_view) */
    if (!o) {
        sb_err(errstr, errstr_size, "payload is not JSON: %s", jerr.text);
        return NULL;
    }
    const char *id = NULL;
    json_int_t rx = 0;
    json_t *fields = NULL, *src = NULL;
    if (json_unpack_ex(o, &jerr, 0, "{s:s, s?o, s?I, s:o}", "id", &id, "source", &src, "received_us", &rx,
                       "fields", &fields) != 0 ||
        !json_is_object(fields)) {
        sb_err(errstr, errstr_size, "payload has not the event shape: %s", jerr.text);
        json_decref(o);
        return NULL;
    }
    sb_event *ev = sb_event_new(id);
    if (ev) {
        sb_event_set_source(ev, json_string_value(src)); /* null when the event had none */
        ev->received_us = rx;
        json_decref(ev->fields);
        ev->fields = json_incref(fields);
    }
    json_decref(o);
    return ev;
}

int sb_json_append_string(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    sb_strbuf b = {*buf, *len, *cap};
    int rc = sb_json_quote(&b, s, n);
    *buf = b.p;
    *len = b.len;
    *cap = b.cap;
    return rc;
}

/* Drop the whitespace between the tokens of checked JSON text t[0..n),
 * in place; returns the new length. One pass, byte by byte: a field's
 * strings are short, shorter than a memchr or memmove call pays for. */
static size_t compact_json(char *t, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        char c = t[r++];
        if (c == '"') {
            t[w++] = c;
            while (r < n) {
                char d = t[r++];
                t[w++] = d;
                if (d == '"')
                    break;
                if (d == '\\' && r < n)
                    t[w++] = t[r++];
            }
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            t[w++] = c;
        }
    }
    return w;
}

/* Whether the setters' members name a key twice, or one the raw text has
 * (or might have: an escaped key), so that splicing them in would publish
 * a duplicate key, which JSON readers need not accept. */
static int sets_shadow(const sb_event *ev)
{
    size_t n = 0;
    sb_json_span *m = sb_json_members(ev->sets.p, ev->sets.len, &n);
    int shadow = 0;
    char key[256];
    for (size_t i = 0; i < n && !shadow; i++) {
        if (m[i].key_escaped || m[i].key_len >= sizeof key) {
            shadow = 1;
            break;
        }
        shadow = key_seen_before(m, i);
        memcpy(key, m[i].key, m[i].key_len);
        key[m[i].key_len] = '\0';
        sb_json_member f;
        sb_json_find_member(ev->raw, ev->raw_len, key, &f);
        shadow |= f.kind != SB_JSON_MEMBER_ABSENT;
    }
    free(m);
    return shadow;
}

int sb_event_append_json(const sb_event *ev, char **buf, size_t *len, size_t *cap)
{
    sb_strbuf b = {*buf, *len, *cap};
    int rc = 0;
    if (ev->raw && (!ev->sets.len || !sets_shadow(ev))) {
        size_t at = b.len; /* all but the closing brace, compacted where it was copied */
        sb_strbuf_add(&b, ev->raw, ev->raw_len - 1);
        if (!ev->raw_compact)
            b.len = at + compact_json(b.p + at, ev->raw_len - 1);
        if (ev->sets.len) {
            int empty = b.p[b.len - 1] == '{'; /* no leading ',' in "{}" */
            sb_strbuf_add(&b, ev->sets.p + empty, ev->sets.len - (size_t)empty);
        }
        sb_strbuf_add(&b, "}", 1);
    } else {
        rc = sb_json_dump(&b, sb_event_view(ev)); /* leaves b as it was on failure */
    }
    *buf = b.p;
    *len = b.len;
    *cap = b.cap;
    return rc;
}

int64_t sb_run_id(const char *identity)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!identity || EVP_Digest(identity, strlen(identity), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 8)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | md[i];
    return (int64_t)(v & 0x7FFFFFFFFFFFFFFFull);
}
