/*
 * discard - sink: accept every event and do nothing with it. Measures the
 * core's own cost (the benchmark's sink) and terminates routes whose
 * earlier steps are the point.
 */
#include <syncbridge/syncbridge.h>

#include <stdlib.h>

static int dc_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    (void)ins;
    (void)errstr;
    (void)errstr_size;
    *self = NULL;
    return 0;
}

static void dc_process(void *self, sb_batch *b)
{
    (void)self;
    for (size_t i = 0; i < sb_batch_count(b); i++)
        sb_batch_set_result(b, i, SB_RESULT_OK, NULL);
}

static void dc_destroy(void *self)
{
    (void)self;
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "discard",
    .kind = SB_KIND_SINK,
    .version = "1.0",
    .description = "Accept and drop every event (benchmarks, route terminators)",
    .flags = SB_PLUGIN_CONCURRENT,
    .create = dc_create,
    .process = dc_process,
    .destroy = dc_destroy,
};
