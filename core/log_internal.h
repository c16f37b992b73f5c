/*
 * log_internal.h - configuring the log (core only). Plugins use
 * syncbridge/log.h. Thread-safe after sb_log_setup(), which the control
 * thread calls at start-up and on reload.
 */
#ifndef SB_LOG_INTERNAL_H
#define SB_LOG_INTERNAL_H

#include <syncbridge/log.h>

typedef enum sb_log_target { SB_LOG_TO_STDERR = 0, SB_LOG_TO_SYSLOG = 1 } sb_log_target;

void sb_log_setup(sb_log_level level, sb_log_target target);
/* "error" "warn" "info" "debug" -> level, or -1. */
int sb_log_level_parse(const char *s);
const char *sb_log_level_name(sb_log_level level);

/* The instance name used as the message prefix (defined by instance.c). */
const char *sb_log_instance_name(const struct sb_instance *ins);

#endif
