/*
 * util.h - small helpers shared by the core (time, strings, errors).
 * Core-internal: not installed. All functions are thread-safe.
 */
#ifndef SB_UTIL_H
#define SB_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <syncbridge/buf.h>

/* Wall clock and monotonic clock in microseconds. */
int64_t sb_now_us(void);
int64_t sb_mono_us(void);

/* sb_err, sb_asprintf and sb_strbuf are public (syncbridge/buf.h). */
char *sb_strdup(const char *s); /* NULL-safe; aborts on OOM */
void *sb_xmalloc(size_t n);     /* aborts on OOM */
void *sb_xcalloc(size_t n, size_t size);
void *sb_xrealloc(void *p, size_t n);

/* Read a whole file into a malloc'd NUL-terminated buffer. */
char *sb_read_file(const char *path, size_t *len, char *errstr, size_t errstr_size);

/* The deadline `us` microseconds from now on `clock`, for
 * pthread_cond_timedwait: CLOCK_REALTIME for a default condition variable,
 * CLOCK_MONOTONIC for one created with that clock attribute. */
void sb_deadline_in(clockid_t clock, int64_t us, struct timespec *ts);

/* Uniform random in [0, n) from a thread-local xorshift generator. */
uint64_t sb_rand_below(uint64_t n);

/* mkdir -p with mode. 0 or -1 with errstr. */
int sb_mkdir_p(const char *path, unsigned mode, char *errstr, size_t errstr_size);

#endif
