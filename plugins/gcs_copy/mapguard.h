/*
 * mapguard.h - read a memory-mapped file without dying when it shrinks.
 *
 * A page of a MAP_SHARED mapping that lies past the file's end, because
 * another process truncated the file after it was mapped, raises SIGBUS
 * on access, and SIGBUS kills the daemon. gcs_copy reads its mappings only
 * through these calls: a fault inside one of them makes it return -1, and
 * the copy fails that attempt with a reason instead of taking the process
 * down. A SIGBUS anywhere else keeps its usual effect (the handler that was
 * there before, or the default: the process dies with a core).
 *
 * Threading: mapguard_init() installs the process-wide handler once (safe
 * to call from any thread, any number of times). The guarded calls may run
 * on any number of threads at once; each thread's guard is its own.
 */
#ifndef SB_GCS_MAPGUARD_H
#define SB_GCS_MAPGUARD_H

#include <stddef.h>
#include <stdint.h>

/* Install the SIGBUS handler (once). 0, or -1 with errno from sigaction. */
int mapguard_init(void);

/* memcpy(dst, src, n) where src lies in a file mapping: 0, or -1 if the
 * mapping faulted (the file shrank); dst then holds an unspecified prefix. */
int mapguard_copy(void *dst, const void *src, size_t n);

#endif
