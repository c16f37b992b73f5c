/*
 * example_upper - an out-of-tree plugin, built by the test suite against
 * the installed SDK only (pkg-config syncbridge), to prove that a team can
 * write its own action without the syncbridge source tree.
 *
 * It adds the field `upper_table`: the event's `table` in upper case.
 */
#include <syncbridge/syncbridge.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sb_option_def options[] = {
    {SB_OPT("field", SB_OPT_STRING, "\"table\"", 0, "Field to upper-case.")},
    {0}};

static int up_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    *self = (void *)sb_opt_string(ins, "field");
    return 0;
}

static void up_process(void *self, sb_batch *b)
{
    const char *field = self;
    for (size_t i = 0; i < sb_batch_count(b); i++) {
        sb_event *ev = sb_batch_event(b, i);
        const char *v = sb_event_get_string(ev, field);
        if (!v) {
            sb_batch_set_result(b, i, SB_RESULT_FAIL, "event has no string field \"%s\"", field);
            continue;
        }
        size_t n = strlen(v);
        char *u = malloc(n + 1);
        if (!u) {
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "out of memory");
            continue;
        }
        for (size_t k = 0; k <= n; k++)
            u[k] = (char)toupper((unsigned char)v[k]);
        sb_event_add(ev, "upper_table", json_string(u));
        free(u);
        sb_batch_set_result(b, i, SB_RESULT_OK, NULL);
    }
}

static void up_destroy(void *self) { (void)self; }

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "example_upper",
    .kind = SB_KIND_ACTION,
    .version = "1.0",
    .description = "Example out-of-tree action: upper-cases a field",
    .options = options,
    .create = up_create,
    .process = up_process,
    .destroy = up_destroy,
};
