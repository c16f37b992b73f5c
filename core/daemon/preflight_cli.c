/* preflight_cli.c - `syncbridge preflight`: every instance of a config
 * checks, read-only, the live services it needs (the plugins' preflight()). */
#include "build_config.h"
#include "daemon/cli.h"
#include "daemon/cli_instances.h"
#include "daemon/daemon.h"
#include "engine/preflight.h"

#include <stdio.h>

int sb_cli_preflight(const sb_cli_opts *o)
{
    char err[2048];
    sb_cli_instances *c = sb_cli_instances_open(o->config_path, err, sizeof err);
    if (!c) {
        fprintf(stderr, "syncbridge: %s\n", err);
        return SB_EXIT_CONFIG;
    }
    sb_preflight *pf = sb_preflight_new(stdout);
    size_t broken = 0;
    for (size_t i = 0; i < c->n; i++) {
        const char *name = c->cfg->instances[i].name;
        sb_preflight_begin(pf, name);
        if (!c->ins[i]) {
            sb_preflight_fail(pf, "configuration", "%s", c->errors[i]);
            broken++;
            continue;
        }
        sb_preflight_fn fn = sb_plugin_preflight(c->ins[i]->plugin);
        if (fn)
            fn(c->ins[i]->self, pf);
        if (sb_preflight_instance_checks(pf) == 0)
            printf("-     %s: plugin %s has no live checks (its options are valid)\n", name,
                   c->ins[i]->plugin->name);
    }
    size_t fails = sb_preflight_failures(pf);
    printf("preflight %s: %zu checks, %zu failed\n", o->config_path, sb_preflight_checks(pf), fails);
    sb_preflight_free(pf);
    sb_cli_instances_free(c);
    return fails ? (broken == fails ? SB_EXIT_CONFIG : SB_EXIT_FAILURE) : SB_EXIT_OK;
}
