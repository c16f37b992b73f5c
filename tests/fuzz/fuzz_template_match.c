/* fuzz_template_match.c - "${field}" templates and route match conditions.
 * The input is "TEMPLATE\0MATCH-JSON": the template is compiled and
 * rendered against a fixed event, the JSON compiled as a match and
 * evaluated on it. */
#include "build_config.h"
#include "events/match.h"
#include "events/template.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syncbridge/event.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *tpl = buf;
    size_t tl = strlen(buf);
    const char *spec = tl < size ? buf + tl + 1 : "{}";
    size_t sl = tl < size ? size - tl - 1 : 2;

    static const char ev_text[] = "{\"event_id\":\"e1\",\"schema\":\"s\",\"n\":7,\"a\":{\"b\":[1,\"x\"]},\"f\":1.5,"
                                  "\"t\":true,\"z\":null}";
    char err[256];
    sb_event *ev = sb_event_new_json(NULL, "event_id", ev_text, sizeof ev_text - 1, err, sizeof err);
    if (!ev)
        abort();

    sb_template *t = sb_template_compile(tpl, err, sizeof err);
    if (t) {
        free(sb_template_render(t, ev, err, sizeof err));
        sb_template_free(t);
    }
    json_error_t jerr;
    json_t *j = json_loadb(spec, sl, JSON_DECODE_ANY, &jerr);
    if (j) {
        sb_match *m = sb_match_compile(j, "routes.r.match", err, sizeof err);
        if (m) {
            (void)sb_match_eval(m, ev);
            sb_match_free(m);
        }
        json_decref(j);
    }
    sb_event_free(ev);
    free(buf);
    return 0;
}
