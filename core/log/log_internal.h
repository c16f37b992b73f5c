/*
 * log_internal.h - configuring the log (core only). Plugins use
 * syncbridge/log.h. Thread-safe after sb_log_setup(), which the control
 * thread calls at start-up and on reload.
 */
#ifndef SB_LOG_INTERNAL_H
#define SB_LOG_INTERNAL_H

#include <syncbridge/log.h>

/* STDERR: timestamped lines; but when stderr is connected to the journal
 * ($JOURNAL_STREAM names its device:inode, as systemd sets it for
 * StandardError=journal) lines are written as JOURNAL instead.
 * JOURNAL: "<N>message" on stderr, N the syslog priority, no timestamp
 * (journald parses the prefix and stamps the time itself).
 * SYSLOG: syslog(3), facility daemon. */
typedef enum sb_log_target { SB_LOG_TO_STDERR = 0, SB_LOG_TO_SYSLOG = 1, SB_LOG_TO_JOURNAL = 2 } sb_log_target;

void sb_log_setup(sb_log_level level, sb_log_target target);
/* "stderr" "syslog" "journal" (NULL = stderr) -> target. */
sb_log_target sb_log_target_parse(const char *s);
/* "error" "warn" "info" "debug" -> level, or -1. */
int sb_log_level_parse(const char *s);
const char *sb_log_level_name(sb_log_level level);

/* How sb_log() names the instance a message is for ("[name] ..."). The
 * log sits below the engine and knows nothing of instances, so the
 * instance module installs this when it makes an instance
 * (sb_instance_new). Until then messages carry no name. Thread-safe. */
typedef const char *(*sb_log_name_fn)(const struct sb_instance *ins);
void sb_log_set_name_fn(sb_log_name_fn fn);

#endif
