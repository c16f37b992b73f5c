/*
 * syncbridge/buf.h - text helpers for plugins: error messages, printf to a
 * new string, and a growable buffer. The core uses the same functions.
 *
 * Out of memory: these abort the process, as the core does (a daemon that
 * cannot allocate a few bytes cannot make progress, and an abort with a
 * core dump beats a silent drop). Code that must survive a failed large
 * allocation (a request body of megabytes) allocates that itself.
 *
 * Threading: every function is thread-safe; a buffer is used by one thread
 * at a time. Since ABI 2.0.
 */
#ifndef SYNCBRIDGE_BUF_H
#define SYNCBRIDGE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* vsnprintf into errstr (NULL-safe, always terminated). Returns -1, so that
 * `return sb_err(errstr, size, "option x: ...")` reads naturally in a
 * create() or a helper that fails. */
int sb_err(char *errstr, size_t errstr_size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* A new malloc'd string, printf-formatted; the caller frees it. */
char *sb_asprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* A growable NUL-terminated text: start from {0}, append, then take .p
 * (the caller frees it) or reset .len to 0 to reuse the memory. */
typedef struct sb_strbuf {
    char *p;
    size_t len, cap;
} sb_strbuf;

void sb_strbuf_add(sb_strbuf *b, const char *s, size_t n);
void sb_strbuf_printf(sb_strbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
