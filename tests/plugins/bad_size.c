/* A descriptor whose size disagrees with the ABI: the loader must refuse it. */
#include <syncbridge/syncbridge.h>
#include <stddef.h>
const sb_plugin syncbridge_plugin = {.abi_major = SB_ABI_MAJOR, .abi_minor = SB_ABI_MINOR,
                                     .struct_size = sizeof(sb_plugin) - 8, .name = "bad_size"};
