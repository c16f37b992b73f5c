/* fuzz_json_event.c - the JSON text scanner and events built from JSON
 * text (what file_in, kafka and pubsub_pull do with every line/message):
 * validating scan (its compact copy, and the members it notes against a
 * walk of that copy), member walks over what it accepted, single-field
 * reads on the lazy text, then the full fields object, which must agree with jansson's view, and the event's compact JSON text, which must
 * parse to the same fields. */
#include "build_config.h"
#include "events/json_text.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syncbridge/event.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    sb_json_member one;
    /* the scanner takes any bytes; the member walks are only for text it accepted */
    char *compact = malloc(size + 1);
    sb_json_span spans[16];
    sb_json_compact made = {compact, 0, spans, 16, 0};
    if (compact && sb_json_scan_object(text, size, "event_id", &one, NULL, &made)) {
        size_t compact_len = made.len;
        /* the compact copy is the same JSON */
        json_t *a = json_loadb(text, size, 0, NULL), *b = json_loadb(compact, compact_len, 0, NULL);
        if (!a || !b || !json_equal(a, b))
            abort();
        json_decref(a);
        json_decref(b);
        /* the members the scan noted are what a walk of the copy finds */
        size_t nw = 0;
        sb_json_span *w = sb_json_members(compact, compact_len, &nw);
        if (made.n_spans == SIZE_MAX ? nw <= 16 : made.n_spans != nw)
            abort();
        for (size_t i = 0; made.n_spans != SIZE_MAX && i < nw; i++)
            if (spans[i].key != w[i].key || spans[i].key_len != w[i].key_len || spans[i].value != w[i].value ||
                spans[i].value_len != w[i].value_len || spans[i].key_escaped != w[i].key_escaped)
                abort();
        free(w);
        size_t n = 0;
        sb_json_span *m = sb_json_members(text, size, &n);
        sb_json_find_in(m, n, "event_id", &one);
        free(m);
        sb_json_find_member(text, size, "a", &one);
    }
    free(compact);
    char err[256];
    sb_event *ev = sb_event_new_json("fallback", "event_id", text, size, err, sizeof err);
    if (!ev)
        return 0;
    (void)sb_event_get_string(ev, "a");
    (void)sb_event_get_int(ev, "n", 0);
    (void)sb_event_get_string(ev, "event_id");
    sb_event_set_string(ev, "added", "x\"y");
    (void)sb_event_get_string(ev, "added");
    /* the compact text (copied as is when the source's was compact) is the
     * same JSON as the fields */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (sb_event_append_json(ev, &buf, &len, &cap) == 0) {
        json_t *back = json_loadb(buf, len, 0, NULL);
        if (!back || !json_equal(back, sb_event_fields(ev))) /* the tree from now on */
            abort();
        json_decref(back);
    }
    free(buf);
    sb_event_free(ev);
    return 0;
}
