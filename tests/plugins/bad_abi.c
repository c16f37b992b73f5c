/* A plugin built for a future ABI major: the loader must refuse it. */
#include <syncbridge/syncbridge.h>
#include <stddef.h>
static int c(sb_instance *i, void **s, char *e, size_t n) { (void)i; (void)s; (void)e; (void)n; return 0; }
static void d(void *s) { (void)s; }
static void p(void *s, sb_batch *b) { (void)s; (void)b; }
const sb_plugin syncbridge_plugin = {.abi_major = SB_ABI_MAJOR + 1, .abi_minor = 0, .struct_size = sizeof(sb_plugin),
                                     .name = "bad_abi", .kind = SB_KIND_SINK, .version = "0", .description = "x",
                                     .create = c, .process = p, .destroy = d};
