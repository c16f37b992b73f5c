/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum Cloud Storage keeps for
 * every object: with the CPU's crc32 instruction (SSE4.2, three streams
 * interleaved so that its 3-cycle latency is hidden) when the CPU has it,
 * else a slicing-by-8 table loop. Both give the same value.
 *
 * Values are the finished CRC (initial ~0 and final ~0 applied), so that
 * crc32c(crc32c(0, a), b) == crc32c(0, a ‖ b) and Cloud Storage's base64
 * "crc32c" is the big-endian bytes of the value.
 *
 * Threading: every function is thread-safe (the tables are built once,
 * under pthread_once).
 */
#ifndef GCS_COPY_CRC32C_H
#define GCS_COPY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue `crc` (0 to start) over buf[0..len). */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The two implementations, for the unit test and the benchmark.
 * crc32c_hw MUST only be called when crc32c_hw_available(). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len);
int crc32c_hw_available(void);

/* The CRC of A ‖ B from crc(A), crc(B) and the length of B: how the
 * parts' CRCs of a multipart upload become the object's. */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* Cloud Storage's form: base64 of the 4 big-endian bytes ("AAAAAA=="
 * for the empty object). out MUST hold 9 bytes. */
void crc32c_b64(uint32_t crc, char out[9]);

/* The inverse; -1 if `s` is not 8 base64 characters of 4 bytes. */
int crc32c_from_b64(const char *s, uint32_t *crc);

#endif
