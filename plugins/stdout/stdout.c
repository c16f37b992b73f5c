/*
 * stdout - sink: print each event, as a JSON line or through a template.
 * For demos, the quick start and debugging routes.
 */
#include <syncbridge/syncbridge.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out {
    sb_instance *ins;
    const sb_template *tpl;
} out;

static const sb_option_def options[] = {
    {SB_OPT("template", SB_OPT_TEMPLATE, NULL, 0,
     "Print this text per event, e.g. \"${schema}.${table} ${status}\". Default: the event as a JSON line "
     "{\"event_id\",\"source\",\"fields\"}.")},
    {0}};

static int so_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    out *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    o->ins = ins;
    o->tpl = sb_opt_template(ins, "template");
    *self = o;
    return 0;
}

static void so_destroy(void *self)
{
    free(self);
}

/* One line per event, written with one fwrite so concurrent routes do not
 * interleave within a line. */
static void so_process(void *self, sb_batch *b)
{
    out *o = self;
    for (size_t i = 0; i < sb_batch_count(b); i++) {
        sb_event *ev = sb_batch_event(b, i);
        char err[256];
        char *text;
        if (o->tpl) {
            text = sb_template_render(o->tpl, ev, err, sizeof err);
            if (!text) {
                sb_batch_set_result(b, i, SB_RESULT_FAIL, "%s", err);
                continue;
            }
        } else {
            json_t *j = json_pack("{s:s, s:s?, s:O}", "event_id", sb_event_id(ev), "source", sb_event_source(ev),
                                  "fields", sb_event_fields(ev));
            text = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
        }
        if (!text) {
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "out of memory");
            continue;
        }
        size_t len = strlen(text);
        text[len] = '\n';
        int ok = fwrite(text, 1, len + 1, stdout) == len + 1;
        free(text);
        sb_batch_set_result(b, i, ok ? SB_RESULT_OK : SB_RESULT_RETRY, ok ? NULL : "cannot write to stdout");
    }
    if (fflush(stdout) != 0)
        for (size_t i = 0; i < sb_batch_count(b); i++)
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "cannot flush stdout");
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "stdout",
    .kind = SB_KIND_SINK,
    .version = "1.0",
    .description = "Print events to standard output (JSON lines or a template)",
    .options = options,
    .create = so_create,
    .process = so_process,
    .destroy = so_destroy,
};
