/*
 * parts.h - how a file is cut into the parts of an XML API multipart
 * upload. Cloud Storage takes at most 10,000 parts of at most 5 GiB each,
 * and objects of at most 5 TiB: the configured part size grows (in whole
 * MiB) when it would need more parts than that.
 *
 * Threading: pure functions, no state.
 */
#ifndef GCS_COPY_PARTS_H
#define GCS_COPY_PARTS_H

#include <stdint.h>

#define GCS_MAX_PARTS 10000u
#define GCS_MAX_PART_SIZE (5ULL << 30)
#define GCS_MAX_OBJECT_SIZE (5ULL << 40)

/* The part size for a file of `size` bytes when `want` is configured:
 * max(want, ceil(size / 10000) rounded up to a MiB), at most 5 GiB.
 * 0 if the file is larger than Cloud Storage's 5 TiB object limit. */
uint64_t gcs_part_size(uint64_t size, uint64_t want);

#endif
