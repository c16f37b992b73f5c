/* log.c - leveled logging to stderr or syslog, prefixed by instance name. */
#include "build_config.h"
#include "log_internal.h"
#include "util.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static _Atomic int g_level = SB_LOG_INFO;
static _Atomic int g_target = SB_LOG_TO_STDERR;

void sb_log_setup(sb_log_level level, sb_log_target target)
{
    g_level = level;
    if (target == SB_LOG_TO_SYSLOG && g_target != SB_LOG_TO_SYSLOG)
        openlog("syncbridge", LOG_PID, LOG_DAEMON);
    g_target = target;
}

int sb_log_level_parse(const char *s)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *sb_log_level_name(sb_log_level level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    return (level >= 0 && level <= 3) ? names[level] : "?";
}

int sb_log_enabled(sb_log_level level)
{
    return (int)level <= g_level;
}

void sb_log(const struct sb_instance *ins, sb_log_level level, const char *fmt, ...)
{
    if ((int)level > g_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *name = ins ? sb_log_instance_name(ins) : NULL;

    if (g_target == SB_LOG_TO_SYSLOG) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        if (name)
            syslog(prio[level], "[%s] %s", name, msg);
        else
            syslog(prio[level], "%s", msg);
        return;
    }
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    /* one fprintf per line so concurrent threads do not interleave */
    if (name)
        fprintf(stderr, "%s.%03ldZ %-5s [%s] %s\n", ts, now.tv_nsec / 1000000, sb_log_level_name(level), name, msg);
    else
        fprintf(stderr, "%s.%03ldZ %-5s %s\n", ts, now.tv_nsec / 1000000, sb_log_level_name(level), msg);
}
