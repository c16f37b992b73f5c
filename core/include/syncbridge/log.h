/*
 * syncbridge/log.h - logging for plugins.
 *
 * Every message logged through an instance is prefixed with the instance
 * name ("[rr_logs] ..."), so operators can tell instances of one plugin
 * apart. Thread-safe; callable from any thread.
 */
#ifndef SYNCBRIDGE_LOG_H
#define SYNCBRIDGE_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sb_log_level {
    SB_LOG_ERROR = 0,
    SB_LOG_WARN = 1,
    SB_LOG_INFO = 2,
    SB_LOG_DEBUG = 3
} sb_log_level;

struct sb_instance;

/* Log for an instance; `ins` MAY be NULL (core messages). */
void sb_log(const struct sb_instance *ins, sb_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Non-zero if `level` would be emitted: guard expensive debug formatting. */
int sb_log_enabled(sb_log_level level);

#ifdef __cplusplus
}
#endif
#endif
