/* cli_instances.c - build a config's instances for preflight and reconcile. */
#include "build_config.h"
#include "daemon/cli_instances.h"
#include "config/options_internal.h"
#include "util/util.h"

#include <stdlib.h>

static const char *section_of(sb_plugin_kind k)
{
    return k == SB_KIND_SOURCE ? "sources" : k == SB_KIND_SINK ? "sinks" : "actions";
}

sb_cli_instances *sb_cli_instances_open(const char *config_path, char *errstr, size_t errstr_size)
{
    sb_config *cfg = sb_config_load(config_path, errstr, errstr_size);
    if (!cfg)
        return NULL;
    sb_cli_instances *c = sb_xcalloc(1, sizeof *c);
    c->cfg = cfg;
    c->reg = sb_registry_new(cfg->plugin_dirs, cfg->n_plugin_dirs);
    sb_registry_allow_insecure(c->reg, cfg->allow_insecure_plugins);
    c->n = cfg->n_instances;
    c->ins = sb_xcalloc(c->n ? c->n : 1, sizeof *c->ins);
    c->errors = sb_xcalloc(c->n ? c->n : 1, sizeof *c->errors);
    for (size_t i = 0; i < c->n; i++) {
        const sb_instance_conf *ic = &cfg->instances[i];
        char *where = sb_asprintf("%s: %s.%s", ic->file, section_of(ic->kind), ic->name);
        char err[1024];
        const sb_plugin *p = sb_registry_get(c->reg, ic->plugin, ic->kind, where, err, sizeof err);
        sb_options *opts = p ? sb_options_parse(p->options, ic->options, where, err, sizeof err) : NULL;
        free(where);
        if (!opts) {
            c->errors[i] = sb_strdup(err);
            continue;
        }
        sb_instance *ins = sb_instance_new(ic->name, p, opts, 1, cfg->state_dir);
        if (sb_instance_create(ins, err, sizeof err) != 0) {
            c->errors[i] = sb_asprintf("%s: %s.%s: %s", ic->file, section_of(ic->kind), ic->name, err);
            sb_instance_free(ins);
            continue;
        }
        c->ins[i] = ins;
    }
    return c;
}

void sb_cli_instances_free(sb_cli_instances *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        sb_instance_free(c->ins[i]);
        free(c->errors[i]);
    }
    free(c->ins);
    free(c->errors);
    /* instances first: their plugins' code lives in the registry's handles */
    sb_registry_free(c->reg);
    sb_config_free(c->cfg);
    free(c);
}
