/* A plugin as an ABI 1.3 SDK built it (the 1.x descriptor ended at
 * destroy): the loader must refuse it, naming both versions. */
#include <syncbridge/syncbridge.h>
#include <stddef.h>
static int c(sb_instance *i, void **s, char *e, size_t n) { (void)i; (void)s; (void)e; (void)n; return 0; }
static void d(void *s) { (void)s; }
static void p(void *s, sb_batch *b) { (void)s; (void)b; }
const sb_plugin syncbridge_plugin = {.abi_major = 1, .abi_minor = 3,
                                     .struct_size = (uint32_t)offsetof(sb_plugin, config_size),
                                     .name = "old_abi", .kind = SB_KIND_SINK, .version = "0", .description = "x",
                                     .create = c, .process = p, .destroy = d};
