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

/* Room for n more bytes (and the NUL after them) at b->p + b->len, which
 * it returns; the caller writes them and then adds n to b->len. For hot
 * paths writing several pieces after one check. Aborts on OOM. */
char *sb_strbuf_room(sb_strbuf *b, size_t n);

/* v in decimal at p, without a NUL (room for 20 digits and a sign); returns
 * the length. For hot paths, where snprintf costs more than the digits. */
size_t sb_i64_text(char *p, int64_t v);

/* Read a whole file into a malloc'd NUL-terminated buffer. */
char *sb_read_file(const char *path, size_t *len, char *errstr, size_t errstr_size);

/* The deadline `us` microseconds from now on `clock`, for
 * pthread_cond_timedwait: CLOCK_REALTIME for a default condition variable,
 * CLOCK_MONOTONIC for one created with that clock attribute. */
void sb_deadline_in(clockid_t clock, int64_t us, struct timespec *ts);

/* Uniform random in [0, n) from a thread-local xorshift generator. */
uint64_t sb_rand_below(uint64_t n);

struct stat;
/* Whether a file or directory that code or secrets are read from can be
 * changed by someone other than root and this process's user: 1 with the
 * reason in `why` ("writable by group/others (mode 0775)", "owned by uid
 * 1000, neither root nor this process's user"), else 0. Group write is
 * accepted when the group is its owner's private group (no one else). */
int sb_untrusted_owner_or_mode(const struct stat *st, char *why, size_t why_size);

/* mkdir -p with mode. 0 or -1 with errstr. */
int sb_mkdir_p(const char *path, unsigned mode, char *errstr, size_t errstr_size);


/* "YYYY-MM-DDTHH:MM:SS[.frac][Z|+HH:MM|-HH:MM]" (a space for the T is
 * fine; no zone means UTC) as microseconds since the epoch. 0, or -1 when
 * s is not such a time. */
int sb_parse_iso8601_us(const char *s, int64_t *out);

#endif
