/* event.c - the event model: fields, metadata, payload (de)serialisation. */
#include "build_config.h"
#include "event_internal.h"
#include "util.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static void drop_raw(sb_event *ev);

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
    free(ev->id);
    free(ev->source);
    drop_raw(ev);
    json_decref(ev->fields);
    json_decref(ev->added);
    free(ev);
}

const char *sb_event_id(const sb_event *ev) { return ev->id; }
const char *sb_event_source(const sb_event *ev) { return ev->source; }
int64_t sb_event_received_us(const sb_event *ev) { return ev->received_us; }
void sb_event_set_received_us(sb_event *ev, int64_t us) { ev->received_us = us; }
static void drop_raw(sb_event *ev)
{
    free(ev->raw);
    ev->raw = NULL;
    json_decref(ev->raw_set);
    ev->raw_set = NULL;
}

/* A setter keeps the raw text valid by remembering what it set; the
 * payload appends those members after the raw ones (a later duplicate key
 * wins when parsed, as the set did). Steals v; -1 on failure. */
static int set_field(sb_event *ev, const char *key, json_t *v)
{
    if (!v)
        return -1;
    if (ev->raw) {
        if (!ev->raw_set)
            ev->raw_set = json_object();
        if (!ev->raw_set || json_object_set(ev->raw_set, key, v) != 0)
            drop_raw(ev);
    }
    return json_object_set_new(ev->fields, key, v);
}

json_t *sb_event_fields(sb_event *ev)
{
    drop_raw(ev);
    return ev->fields;
}

sb_event *sb_event_new_json(const char *fallback_id, const char *id_field, const char *text, size_t len,
                            char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    json_t *obj = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(obj)) {
        if (obj)
            sb_err(errstr, errstr_size, "not a JSON object");
        else
            sb_err(errstr, errstr_size, "%s (column %d)", jerr.text, jerr.column);
        json_decref(obj);
        return NULL;
    }
    const char *own = id_field ? json_string_value(json_object_get(obj, id_field)) : NULL;
    sb_event *ev = sb_event_new_with_fields(own && *own ? own : fallback_id, obj);
    if (!ev) {
        sb_err(errstr, errstr_size, "out of memory or empty event id");
        return NULL;
    }
    ev->raw = malloc(len + 1);
    if (ev->raw) {
        memcpy(ev->raw, text, len);
        ev->raw[len] = '\0';
    }
    return ev;
}

void sb_event_set_source(sb_event *ev, const char *source)
{
    free(ev->source);
    ev->source = sb_strdup(source);
}

const char *sb_event_get_string(const sb_event *ev, const char *key)
{
    return json_string_value(json_object_get(ev->fields, key));
}

int64_t sb_event_get_int(const sb_event *ev, const char *key, int64_t fallback)
{
    json_t *v = json_object_get(ev->fields, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
}

int sb_event_set_string(sb_event *ev, const char *key, const char *value)
{
    return set_field(ev, key, json_string(value ? value : ""));
}

int sb_event_set_int(sb_event *ev, const char *key, int64_t value)
{
    return set_field(ev, key, json_integer((json_int_t)value));
}

int sb_event_add(sb_event *ev, const char *key, json_t *value)
{
    drop_raw(ev);
    if (!key || !value) {
        json_decref(value);
        return -1;
    }
    if (!ev->added && !(ev->added = json_object())) {
        json_decref(value);
        return -1;
    }
    if (json_object_set(ev->added, key, value) != 0) {
        json_decref(value);
        return -1;
    }
    return json_object_set_new(ev->fields, key, value);
}

json_t *sb_event_take_added(sb_event *ev)
{
    json_t *a = ev->added;
    ev->added = NULL;
    if (a && json_object_size(a) == 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

void sb_event_discard_added(sb_event *ev)
{
    /* A failed step's additions must not leak into the next attempt's view:
     * remove them from the fields. (A field it replaced is lost only when
     * the step overwrote an existing key and then failed; steps add new
     * keys by convention.) */
    if (!ev->added)
        return;
    const char *k;
    json_t *v;
    drop_raw(ev);
    json_object_foreach(ev->added, k, v) json_object_del(ev->fields, k);
    json_decref(ev->added);
    ev->added = NULL;
}

void sb_event_merge_fields(sb_event *ev, json_t *obj)
{
    drop_raw(ev);
    if (json_is_object(obj))
        json_object_update(ev->fields, obj);
}

sb_event *sb_event_clone(const sb_event *src)
{
    sb_event *ev = sb_xcalloc(1, sizeof *ev);
    ev->id = sb_strdup(src->id);
    ev->source = sb_strdup(src->source);
    ev->received_us = src->received_us;
    ev->fields = json_deep_copy(src->fields);
    if (!ev->fields) {
        sb_event_free(ev);
        return NULL;
    }
    return ev;
}

/* The raw text with the setters' members spliced in before its closing
 * brace: "{...raw...,"k":v}". malloc'd. */
static char *raw_with_sets(const sb_event *ev)
{
    if (!ev->raw_set || json_object_size(ev->raw_set) == 0)
        return sb_strdup(ev->raw);
    char *sets = json_dumps(ev->raw_set, JSON_COMPACT); /* "{...}" */
    if (!sets)
        return NULL;
    /* the text parsed as an object: optional blanks, '{', members, '}', blanks */
    size_t n = strlen(ev->raw);
    while (n && ev->raw[n - 1] != '}')
        n--;
    const char *p = strchr(ev->raw, '{');
    p = p ? p + 1 : ev->raw;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    int empty = *p == '}';
    char *out = sb_asprintf("%.*s%s%s", (int)(n ? n - 1 : 0), ev->raw, empty ? "" : ",", sets + 1);
    free(sets);
    return out;
}

/* Built by hand around one json_dumps of the fields: this runs once per
 * event on the source's thread, where a temporary object would cost more
 * than the dump itself. */
char *sb_event_to_payload(const sb_event *ev)
{
    char *fields = ev->raw ? raw_with_sets(ev) : json_dumps(ev->fields, JSON_COMPACT);
    const char *fields_txt = fields;
    json_t *id = json_string(ev->id), *src = ev->source ? json_string(ev->source) : json_null();
    char *id_txt = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
    char *src_txt = src ? json_dumps(src, JSON_ENCODE_ANY) : NULL;
    char *out = NULL;
    if (fields_txt && id_txt && src_txt)
        out = sb_asprintf("{\"id\":%s,\"source\":%s,\"received_us\":%lld,\"fields\":%s}", id_txt, src_txt,
                          (long long)ev->received_us, fields_txt);
    free(fields);
    free(id_txt);
    free(src_txt);
    json_decref(id);
    json_decref(src);
    return out;
}

sb_event *sb_event_from_payload(const char *payload, char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    json_t *o = json_loads(payload, 0, &jerr);
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
