/* log.c - leveled logging to stderr or syslog, prefixed by instance name. */
#include "build_config.h"
#include "log/log_internal.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static _Atomic int g_level = SB_LOG_INFO;
static _Atomic int g_target = SB_LOG_TO_STDERR;
static _Atomic(sb_log_name_fn) g_name_fn;

void sb_log_set_name_fn(sb_log_name_fn fn)
{
    atomic_store(&g_name_fn, fn);
}

/* systemd sets JOURNAL_STREAM=<dev>:<ino> of the stream it connected to
 * stdout/stderr; if that is still our stderr, journald reads it. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat sb;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &sb) != 0)
        return 0;
    return (unsigned long long)sb.st_dev == dev && (unsigned long long)sb.st_ino == ino;
}

sb_log_target sb_log_target_parse(const char *s)
{
    if (s && strcmp(s, "syslog") == 0)
        return SB_LOG_TO_SYSLOG;
    if (s && strcmp(s, "journal") == 0)
        return SB_LOG_TO_JOURNAL;
    return SB_LOG_TO_STDERR;
}

void sb_log_setup(sb_log_level level, sb_log_target target)
{
    g_level = level;
    if (target == SB_LOG_TO_STDERR && stderr_is_journal())
        target = SB_LOG_TO_JOURNAL;
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
    sb_log_name_fn name_of = atomic_load(&g_name_fn);
    const char *name = ins && name_of ? name_of(ins) : NULL;

    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    if (g_target == SB_LOG_TO_JOURNAL) {
        if (name)
            fprintf(stderr, "<%d>[%s] %s\n", prio[level], name, msg);
        else
            fprintf(stderr, "<%d>%s\n", prio[level], msg);
        return;
    }
    if (g_target == SB_LOG_TO_SYSLOG) {
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
