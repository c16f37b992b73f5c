/* A well-formed plugin whose declared name differs from its file name. */
#include <syncbridge/syncbridge.h>
#include <stddef.h>
static int c(sb_instance *i, void **s, char *e, size_t n) { (void)i; (void)s; (void)e; (void)n; return 0; }
static void d(void *s) { (void)s; }
static void p(void *s, sb_batch *b) { (void)s; (void)b; }
const sb_plugin syncbridge_plugin = {SB_PLUGIN_ABI, .name = "other_name", .kind = SB_KIND_SINK, .version = "0",
                                     .description = "x", .create = c, .process = p, .destroy = d};
