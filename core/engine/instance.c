/* instance.c - one configured plugin instance and its lifecycle calls. */
#include "build_config.h"
#include "engine/instance.h"
#include "log/log_internal.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

/* The hooks through which the log and the option getters, which sit
 * below the engine, reach an instance's name and options. */
static const char *log_name(const struct sb_instance *ins) { return ins->name; }
static const sb_options *options_of(const struct sb_instance *ins) { return ins->opts; }

sb_instance *sb_instance_new(const char *name, const sb_plugin *plugin, sb_options *opts, int once,
                             const char *state_dir)
{
    sb_log_set_name_fn(log_name);
    sb_options_set_lookup(options_of);
    sb_instance *ins = sb_xcalloc(1, sizeof *ins);
    ins->name = sb_strdup(name);
    ins->plugin = plugin;
    ins->opts = opts;
    ins->once = once;
    ins->state_dir = sb_strdup(state_dir ? state_dir : ".");
    if (plugin->config_size) {
        ins->config = sb_xcalloc(1, plugin->config_size);
        sb_options_bind(opts, plugin->options, ins->config);
    }
    return ins;
}

int sb_instance_create(sb_instance *ins, char *errstr, size_t errstr_size)
{
    char msg[1024] = "";
    /* a stateless plugin's self is its config struct (or NULL without one) */
    void *self = ins->plugin->create ? NULL : ins->config;
    if (ins->plugin->create && ins->plugin->create(ins, &self, msg, sizeof msg) != 0)
        return sb_err(errstr, errstr_size, "%s: %s", ins->name, msg[0] ? msg : "create failed (no reason given)");
    ins->self = self;
    ins->created = 1;
    return 0;
}

int sb_instance_start(sb_instance *ins, char *errstr, size_t errstr_size)
{
    char msg[1024] = "";
    if (ins->plugin->start && ins->plugin->start(ins->self, msg, sizeof msg) != 0)
        return sb_err(errstr, errstr_size, "%s: %s", ins->name, msg[0] ? msg : "start failed (no reason given)");
    ins->started = 1;
    return 0;
}

void sb_instance_stop(sb_instance *ins)
{
    if (ins->started && ins->plugin->stop)
        ins->plugin->stop(ins->self);
    ins->started = 0;
}

void sb_instance_free(sb_instance *ins)
{
    if (!ins)
        return;
    sb_instance_stop(ins);
    if (ins->created && ins->plugin->destroy)
        ins->plugin->destroy(ins->self);
    sb_options_free(ins->opts);
    free(ins->config);
    free(ins->name);
    free(ins->state_dir);
    free(ins);
}

const char *sb_instance_name(const sb_instance *ins) { return ins->name; }
int sb_instance_once(const sb_instance *ins) { return ins->once; }
const char *sb_instance_state_dir(const sb_instance *ins) { return ins->state_dir; }
const void *sb_instance_config(const sb_instance *ins) { return ins->config; }
