/* fuzz_tzif.c - the bigquery sink's TZif reader (plugins/bigquery/tzif.c)
 * over arbitrary bytes as a zone file: refused or parsed, and a parsed
 * zone answers offsets (transitions and POSIX TZ footer) at instants
 * across and beyond its range. */
#include "../../plugins/bigquery/tzif.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    tzif_zone *z = tzif_parse(data, size, "fuzz", err, sizeof err);
    if (!z)
        return 0;
    static const int64_t at[] = {INT64_MIN, -(INT64_C(1) << 59), -2208988800, -1, 0, 1, 2147483647,
                                 4102444800, INT64_C(253402300799), INT64_C(1) << 59, INT64_MAX};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++)
        (void)tzif_offset(z, at[i]);
    int64_t t = 0;
    if (size >= 8)
        memcpy(&t, data + size - 8, 8);
    for (int k = 0; k < 64; k++) /* a walk over 2 years from an instant the input picks */
        (void)tzif_offset(z, t / 2 + k * 1000003);
    tzif_free(z);
    return 0;
}
