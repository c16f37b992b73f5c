/* sdnotify.c - sd_notify via libsystemd when built with it, else a
 * built-in sender for the NOTIFY_SOCKET datagram protocol. */
#include "build_config.h"
#include "ops/sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SB_FORCE_BUILTIN_NOTIFY: the tests build the built-in sender too */
#if defined(SB_WITH_LIBSYSTEMD) && !defined(SB_FORCE_BUILTIN_NOTIFY)
#include <systemd/sd-daemon.h>

int sb_notify(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc > 0 ? 1 : 0;
}

int64_t sb_notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? (int64_t)usec : 0;
}

#else
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

int sb_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un sa;
    size_t plen = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || plen >= sizeof sa.sun_path) {
        errno = EINVAL; /* vsock and other transports are not supported */
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL counted */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/' ? 1 : 0));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int saved = errno;
    close(fd);
    if (n < 0) {
        errno = saved;
        return -1;
    }
    return 1;
}

int64_t sb_notify_watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!us || !*us)
        return 0;
    if (pid && *pid && strtoll(pid, NULL, 10) != (long long)getpid())
        return 0;
    char *end;
    long long v = strtoll(us, &end, 10);
    return (*end == '\0' && v > 0) ? (int64_t)v : 0;
}
#endif

int sb_notifyf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return sb_notify(buf);
}
