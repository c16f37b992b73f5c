/*
 * cli_instances.h - the instances of a config, created (never started), for
 * the operator commands that talk to the services themselves: preflight and
 * reconcile. Each instance's options are validated against its plugin's
 * table and its create() is called, exactly as the daemon would.
 *
 * Ownership: sb_cli_instances_free() frees the instances, the registry and
 * the config it loaded. Threading: main thread only.
 */
#ifndef SB_CLI_INSTANCES_H
#define SB_CLI_INSTANCES_H

#include "config/config.h"
#include "engine/instance.h"
#include "engine/loader.h"

typedef struct sb_cli_instances {
    sb_config *cfg;
    sb_registry *reg;
    size_t n;
    sb_instance **ins;   /* n entries; NULL where building it failed */
    char **errors;       /* n entries; the reason where ins[i] is NULL */
} sb_cli_instances;

/* Load `config_path` and build every instance. NULL (with errstr) only
 * when the config itself does not load; an instance that cannot be built
 * is reported in errors[i] and the others are still built. */
sb_cli_instances *sb_cli_instances_open(const char *config_path, char *errstr, size_t errstr_size);
void sb_cli_instances_free(sb_cli_instances *c);

#endif
