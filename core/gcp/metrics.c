/* metrics.c - the Google access layer's families in /metrics: HTTP
 * exchanges by plugin instance, service and status class, retries, and
 * token refreshes and failures. Every live client is listed here; a
 * client's counters leave with it (a reload restarts them, which
 * Prometheus counters tolerate). */
#include "build_config.h"
#include "gcp_internal.h"
#include "ops/metrics.h"
#include "util/util.h"

#include <syncbridge/plugin.h>

#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t clients_mu = PTHREAD_MUTEX_INITIALIZER;
/* A listed client: metrics.c reads it only through what the client gave
 * it when it was listed, and never calls into http.c. */
typedef struct listed {
    const void *client;
    const sb_gcp_conf *conf;
    sb_gcp__stats_fn stats;
} listed;

static listed *clients;
static size_t n_clients, cap_clients;
static pthread_once_t register_once = PTHREAD_ONCE_INIT;

static void labels(sb_metrics_out *out, const listed *c)
{
    const sb_gcp_conf *conf = c->conf;
    sb_metrics_printf(out, "instance=\"");
    sb_metrics_label(out, conf->ins ? sb_instance_name(conf->ins) : "-");
    sb_metrics_printf(out, "\",service=\"");
    sb_metrics_label(out, conf->service ? conf->service : "-");
    sb_metrics_printf(out, "\"");
}

static void family(sb_metrics_out *out, const char *name, const char *help)
{
    sb_metrics_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
}

/* Called by the admin server on every scrape (registry lock held). */
static void render(sb_metrics_out *out, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&clients_mu);
    sb_gcp_stats *st = sb_xcalloc(n_clients ? n_clients : 1, sizeof *st);
    for (size_t i = 0; i < n_clients; i++)
        clients[i].stats(clients[i].client, &st[i]);

    family(out, "syncbridge_http_requests_total",
           "HTTP exchanges with Google APIs (retries and token fetches included), by status class; "
           "code=\"error\" got no response.");
    static const char *const codes[] = {"2xx", "3xx", "4xx", "5xx", "error"};
    for (size_t i = 0; i < n_clients; i++) {
        const uint64_t v[] = {st[i].status_2xx, st[i].status_3xx, st[i].status_4xx, st[i].status_5xx,
                              st[i].transport_errors};
        for (size_t k = 0; k < 5; k++) {
            sb_metrics_printf(out, "syncbridge_http_requests_total{");
            labels(out, &clients[i]);
            sb_metrics_printf(out, ",code=\"%s\"} %llu\n", codes[k], (unsigned long long)v[k]);
        }
    }
    family(out, "syncbridge_http_retries_total", "HTTP exchanges with Google APIs that were retries.");
    for (size_t i = 0; i < n_clients; i++) {
        sb_metrics_printf(out, "syncbridge_http_retries_total{");
        labels(out, &clients[i]);
        sb_metrics_printf(out, "} %llu\n", (unsigned long long)st[i].retries);
    }
    family(out, "syncbridge_token_refreshes_total", "Access tokens obtained (key exchange or metadata server).");
    for (size_t i = 0; i < n_clients; i++) {
        sb_metrics_printf(out, "syncbridge_token_refreshes_total{");
        labels(out, &clients[i]);
        sb_metrics_printf(out, "} %llu\n", (unsigned long long)st[i].token_refreshes);
    }
    family(out, "syncbridge_token_errors_total",
           "Failed attempts to obtain an access token, each once (also when the current token stays in use).");
    for (size_t i = 0; i < n_clients; i++) {
        sb_metrics_printf(out, "syncbridge_token_errors_total{");
        labels(out, &clients[i]);
        sb_metrics_printf(out, "} %llu\n", (unsigned long long)st[i].token_errors);
    }
    free(st);
    pthread_mutex_unlock(&clients_mu);
}

static void register_contributor(void)
{
    sb_metrics_register("gcp", render, NULL);
}

void sb_gcp__metrics_add(const void *c, const sb_gcp_conf *conf, sb_gcp__stats_fn stats)
{
    pthread_once(&register_once, register_contributor);
    pthread_mutex_lock(&clients_mu);
    if (n_clients == cap_clients) {
        cap_clients = cap_clients ? cap_clients * 2 : 8;
        clients = sb_xrealloc(clients, cap_clients * sizeof *clients);
    }
    clients[n_clients++] = (listed){c, conf, stats};
    pthread_mutex_unlock(&clients_mu);
}

void sb_gcp__metrics_remove(const void *c)
{
    pthread_mutex_lock(&clients_mu);
    for (size_t i = 0; i < n_clients; i++)
        if (clients[i].client == c) {
            clients[i] = clients[--n_clients];
            break;
        }
    if (n_clients == 0) { /* nothing outlives the last client */
        free(clients);
        clients = NULL;
        cap_clients = 0;
    }
    pthread_mutex_unlock(&clients_mu);
}
