/*
 * example_decode - an out-of-tree action built by the test suite against
 * the installed SDK only, to show the shared body decoder
 * (syncbridge/decode.h, ABI 2.2) in a plugin outside the tree.
 *
 * It decodes the event's string field `field` (default "line") as a
 * message body would be decoded by the kafka and pubsub_pull sources, and
 * adds the decoded fields under "decoded". A body that never decodes
 * fails the event with the decoder's reason.
 */
#include <syncbridge/syncbridge.h>

#include <string.h>

typedef struct dec_conf {
    const char *field;
    int format; /* sb_decode_format */
} dec_conf;

static const sb_option_def options[] = {
    {SB_OPT("field", SB_OPT_STRING, "\"line\"", 0, "Field that holds the message body."), SB_OPT_BIND(dec_conf, field)},
    {SB_OPT("format", SB_OPT_STRING, "\"auto\"", 0, "How the body is read, as the kafka source's format."),
     SB_OPT_CHOICES(sb_decode_formats), SB_OPT_BIND(dec_conf, format)},
    {0}};

static int dec_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    *self = (void *)sb_instance_config(ins);
    return 0;
}

static void dec_destroy(void *self) { (void)self; /* the config is the core's */ }

static void dec_process(void *self, sb_batch *b)
{
    const dec_conf *c = self;
    for (size_t i = 0; i < sb_batch_count(b); i++) {
        sb_event *ev = sb_batch_event(b, i);
        const char *body = sb_event_get_string(ev, c->field);
        if (!body) {
            sb_batch_set_result(b, i, SB_RESULT_FAIL, "event has no string field \"%s\"", c->field);
            continue;
        }
        sb_decode_opts o = SB_DECODE_OPTS_INIT;
        o.format = (sb_decode_format)c->format;
        o.identity_extra = sb_event_id(ev); /* gives the run a run_id */
        sb_event *dec = NULL;
        char err[512];
        int rc = sb_decode_body(&o, sb_event_id(ev), body, strlen(body), &dec, err, sizeof err);
        if (rc == SB_DECODE_NOMEM) {
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "%s", err);
            continue;
        }
        if (rc != 0) {
            sb_batch_set_result(b, i, SB_RESULT_FAIL, "cannot decode field \"%s\": %s", c->field, err);
            continue;
        }
        sb_event_add(ev, "decoded", json_deep_copy(sb_event_fields(dec)));
        sb_event_free(dec);
        sb_batch_set_result(b, i, SB_RESULT_OK, NULL);
    }
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "example_decode",
    .kind = SB_KIND_ACTION,
    .version = "1.0",
    .description = "Example out-of-tree action: decodes a field with the SDK's body decoder",
    .options = options,
    .config_size = sizeof(dec_conf),
    .create = dec_create,
    .process = dec_process,
    .destroy = dec_destroy,
};
