/*
 * sdnotify.h - the systemd service notification protocol (sd_notify(3)).
 *
 * With libsystemd (configure --with-systemd, the default when found) this
 * calls sd_notify(); without it a built-in sender implements the same
 * protocol: one datagram with newline-separated VAR=VALUE lines to the
 * AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace). Outside systemd ($NOTIFY_SOCKET unset) every call is
 * a no-op, so the daemon calls these unconditionally.
 *
 * Threading: safe from any thread (no shared state besides the
 * environment, which the daemon does not modify after start).
 */
#ifndef SB_SDNOTIFY_H
#define SB_SDNOTIFY_H

#include <stdint.h>

/* Send `state` (e.g. "READY=1\nSTATUS=..."). 1 sent, 0 not under systemd
 * notification, -1 on error (errno set). */
int sb_notify(const char *state);

/* printf-style sb_notify. */
int sb_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval in microseconds if systemd asks this process for
 * keep-alive pings ($WATCHDOG_USEC set and $WATCHDOG_PID, when set, is
 * our pid), else 0. */
int64_t sb_notify_watchdog_usec(void);

#endif
