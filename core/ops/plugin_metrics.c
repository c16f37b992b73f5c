/* plugin_metrics.c - the series plugins declare through syncbridge/metrics.h,
 * rendered as one /metrics contributor. Families live for the process;
 * series come and go with their instances. */
#include "build_config.h"
#include "ops/metrics.h"
#include "util/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <syncbridge/log.h>
#include <syncbridge/metrics.h>

typedef struct family family;

struct sb_metric {
    family *fam;
    char *instance;
    _Atomic uint64_t value; /* a gauge's int64 in two's complement */
    sb_metric *next;
};

struct family {
    char *name; /* with the "syncbridge_" prefix */
    char *help;
    sb_metric_type type;
    sb_metric *series;
    family *next;
};

static pthread_mutex_t pm_mu = PTHREAD_MUTEX_INITIALIZER;
static family *families, **families_tail = &families;
static pthread_once_t pm_once = PTHREAD_ONCE_INIT;

static void render(sb_metrics_out *out, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&pm_mu);
    for (family *f = families; f; f = f->next) {
        if (!f->series)
            continue;
        sb_metrics_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                          f->type == SB_METRIC_COUNTER ? "counter" : "gauge");
        for (sb_metric *m = f->series; m; m = m->next) {
            uint64_t v = atomic_load_explicit(&m->value, memory_order_relaxed);
            sb_metrics_printf(out, "%s{instance=\"", f->name);
            sb_metrics_label(out, m->instance);
            if (f->type == SB_METRIC_GAUGE)
                sb_metrics_printf(out, "\"} %lld\n", (long long)(int64_t)v);
            else
                sb_metrics_printf(out, "\"} %llu\n", (unsigned long long)v);
        }
    }
    pthread_mutex_unlock(&pm_mu);
}

/* Registered once, outside pm_mu: the registry calls render() with its own
 * lock held, so taking it while holding pm_mu could deadlock. */
static void register_once(void)
{
    sb_metrics_register("plugins", render, NULL);
}

static int valid_name(const char *s)
{
    if (!s || !*s || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

static int valid_help(const char *s)
{
    return s && *s && !strpbrk(s, "\n\\");
}

sb_metric *sb_metric_new(const sb_instance *ins, sb_metric_type type, const char *name, const char *help)
{
    if (!valid_name(name) || (type != SB_METRIC_COUNTER && type != SB_METRIC_GAUGE) || !valid_help(help)) {
        sb_log(ins, SB_LOG_ERROR, "metric \"%s\" refused: a name is [a-z_][a-z0-9_]*, the type counter or gauge, "
               "the help one line without backslashes", name ? name : "(null)");
        return NULL;
    }
    pthread_once(&pm_once, register_once);
    const char *inst = ins ? sb_instance_name(ins) : "";
    char *full = sb_asprintf("syncbridge_%s", name);
    pthread_mutex_lock(&pm_mu);
    family *f = families;
    while (f && strcmp(f->name, full) != 0)
        f = f->next;
    const char *why = NULL;
    if (f && f->type != type)
        why = "declared before with another type";
    for (sb_metric *m = f ? f->series : NULL; m && !why; m = m->next)
        if (strcmp(m->instance, inst) == 0)
            why = "this instance already has that series";
    sb_metric *m = NULL;
    if (!why) {
        if (!f) {
            f = sb_xcalloc(1, sizeof *f);
            f->name = full;
            full = NULL;
            f->help = sb_strdup(help);
            f->type = type;
            *families_tail = f;
            families_tail = &f->next;
        }
        m = sb_xcalloc(1, sizeof *m);
        m->fam = f;
        m->instance = sb_strdup(inst);
        sb_metric **tail = &f->series; /* keep declaration order on /metrics */
        while (*tail)
            tail = &(*tail)->next;
        *tail = m;
    }
    pthread_mutex_unlock(&pm_mu);
    if (why)
        sb_log(ins, SB_LOG_ERROR, "metric %s refused: %s", full, why);
    free(full);
    return m;
}

void sb_metric_add(sb_metric *m, uint64_t n)
{
    if (m)
        atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}

void sb_metric_set(sb_metric *m, int64_t value)
{
    if (m)
        atomic_store_explicit(&m->value, (uint64_t)value, memory_order_relaxed);
}

void sb_metric_free(sb_metric *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&pm_mu);
    for (sb_metric **p = &m->fam->series; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    pthread_mutex_unlock(&pm_mu);
    free(m->instance);
    free(m);
}
