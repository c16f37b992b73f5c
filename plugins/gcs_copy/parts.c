/* parts.c - part size of a multipart upload (see parts.h). */
#include "parts.h"

#define MIB_ (1ULL << 20)

uint64_t gcs_part_size(uint64_t size, uint64_t want)
{
    if (size > GCS_MAX_OBJECT_SIZE)
        return 0;
    uint64_t need = (size + GCS_MAX_PARTS - 1) / GCS_MAX_PARTS;
    need = (need + MIB_ - 1) / MIB_ * MIB_;
    uint64_t ps = want > need ? want : need;
    return ps > GCS_MAX_PART_SIZE ? GCS_MAX_PART_SIZE : ps;
}
