/*
 * config.h - the daemon's configuration model and loader.
 *
 * sb_config_load() reads the main JSON file and every *.json drop-in in conf.d
 * (sorted by name), merges them by instance and route name, applies
 * ${env:NAME}/${NAME}/${file:/path} substitution to the core's own keys,
 * and validates the structure: unknown keys, wrong types, a name defined
 * twice (both files named), routes referring to unknown instances or to an
 * instance of the wrong section. Plugin options are kept raw (per instance)
 * and validated later against the plugin's option table by
 * sb_options_parse(), once the plugin is loaded.
 *
 * Every error names the file and the JSON path, and for syntax errors the
 * line and column: "conf.d/team.json: routes.r1.steps[2]: unknown instance
 * \"bq\"" / "main.json:12:5: syntax error: ...".
 *
 * Ownership: the sb_config and everything it points to is owned by the
 * caller and freed with sb_config_free(). Not thread-safe; built once and
 * read-only afterwards.
 */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include <syncbridge/plugin.h>

typedef struct sb_retry_policy {
    int max_attempts;      /* per step, including the first; default 10 */
    int64_t max_time_ms;   /* per step since its first attempt; default 1h */
    int64_t initial_ms;    /* first backoff; default 500ms */
    int64_t max_delay_ms;  /* cap; default 5m */
    double multiplier;     /* default 2.0 */
} sb_retry_policy;

typedef struct sb_instance_conf {
    char *name;           /* the key in its section */
    char *plugin;         /* "plugin" key: plugin name */
    sb_plugin_kind kind;  /* from its section: sources / sinks / actions */
    char *file;           /* file that defined it */
    json_t *options;      /* every other key, raw (no substitution yet); owned */
    /* core-reserved keys, sinks/actions only: */
    int workers;          /* "workers", default 1: concurrent process() calls */
    int batch_max;        /* "batch_max", default 500 */
    sb_retry_policy retry;/* "retry": {max_attempts,max_time,initial,max_delay,multiplier} */
    int64_t step_timeout_ms; /* "step_timeout", default 6h: the whole step, waits included */
} sb_instance_conf;

typedef struct sb_step_conf {
    size_t n;             /* >= 1; > 1 means fan-out, run in parallel */
    char **instances;     /* names of sink/action instances */
} sb_step_conf;

typedef struct sb_route_conf {
    char *name;
    char *file;
    size_t n_sources;
    char **sources;
    json_t *match;        /* NULL = every event; else the raw match spec, owned */
    size_t n_steps;
    sb_step_conf *steps;
    int64_t max_inflight;       /* "max_inflight": events admitted, not settled; default from limits */
    int64_t max_inflight_bytes; /* "max_inflight_bytes": same, in payload bytes */
} sb_route_conf;

typedef enum sb_fsync_policy {
    SB_FSYNC_PROCESS = 0, /* survive a process crash (SQLite WAL synchronous=NORMAL) */
    SB_FSYNC_POWER = 1    /* survive power loss (synchronous=FULL) */
} sb_fsync_policy;

typedef struct sb_config {
    char *main_file;
    char *conf_d;              /* "conf_d", default "<dir of main>/conf.d" */
    char *state_dir;           /* "state_dir", default SB_DEFAULT_STATE_DIR */
    size_t n_plugin_dirs;
    char **plugin_dirs;        /* "plugin_path" (string or list), then the built-in default */
    int allow_insecure_plugins; /* "allow_insecure_plugins": load plugins others could change, with a warning */
    int log_level;             /* "log": {"level": "error|warn|info|debug", "target": "stderr|syslog|journal"} */
    char *log_target;
    int64_t shutdown_timeout_ms; /* "shutdown_timeout", default 30s */
    /* "ledger": {...} */
    sb_fsync_policy fsync;     /* "fsync": "process" | "power", default process */
    int64_t retention_ms;      /* "retention", default 7d: settled entries older are pruned */
    int64_t commit_interval_ms;/* "commit_interval", default 5ms: group-commit window */
    int ledger_check_at_start; /* "check_at_start", default true: PRAGMA quick_check when the daemon starts */
    int keep_payload_until_settled; /* "keep_payload": "always" (default, 0) | "until_settled" (1) */
    /* "limits": {...} defaults for routes */
    int64_t max_inflight;      /* default 10000 */
    int64_t max_inflight_bytes;/* default 64MB */
    /* "admin": {...} the HTTP admin endpoint, off by default */
    int admin_enabled;
    char *admin_bind;          /* default 127.0.0.1 */
    int admin_port;            /* default 8686 */

    size_t n_instances;
    sb_instance_conf *instances;
    size_t n_routes;
    sb_route_conf *routes;
} sb_config;

sb_config *sb_config_load(const char *main_file, char *errstr, size_t errstr_size);
void sb_config_free(sb_config *c);

/* Lookup by name; NULL if absent. */
const sb_instance_conf *sb_config_instance(const sb_config *c, const char *name);

/* ${...} substitution (sb_config_subst) is in confval.h. */

#endif
