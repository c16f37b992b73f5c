/* A plugin as the ABI 2.1 SDK built it: its descriptor ends at abandon(),
 * before preflight. The loader must load it and never read the members
 * appended in 2.2; this file's symbol is a whole sb_plugin with a trap in
 * preflight, so a loader that reads past struct_size calls the trap. */
#include <syncbridge/syncbridge.h>
#include <stddef.h>
#include <stdlib.h>
static void p(void *s, sb_batch *b) { (void)s; (void)b; }
static void trap(void *s, sb_preflight *pf) { (void)s; (void)pf; abort(); }
const sb_plugin syncbridge_plugin = {.abi_major = 2, .abi_minor = 1,
                                     .struct_size = (uint32_t)offsetof(sb_plugin, preflight),
                                     .name = "abi21", .kind = SB_KIND_SINK, .version = "0", .description = "x",
                                     .process = p, .preflight = trap};
