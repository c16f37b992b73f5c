/*
 * instance.h - a configured plugin instance: name, plugin, validated
 * options, the plugin's state, and the calls into the plugin's lifecycle.
 *
 * Ownership: the router (or `syncbridge check`) owns instances and frees
 * them with sb_instance_free(), which destroys the plugin state if it was
 * created. Threading: lifecycle calls from the control thread only.
 */
#ifndef SB_INSTANCE_H
#define SB_INSTANCE_H

#include <stdatomic.h>
#include <syncbridge/plugin.h>

#include "config/options_internal.h"

struct sb_instance {
    char *name;
    const sb_plugin *plugin;
    sb_options *opts; /* owned */
    void *self;       /* plugin state, after create() */
    int created;
    int started;
    int once;
    char *state_dir;
    void *config; /* plugin->config_size bytes, bound options filled in; NULL when 0 */
};

/* Takes ownership of `opts`, and binds the plugin's SB_OPT_F_BIND options
 * into a config struct of its config_size. Never fails (aborts on OOM). */
sb_instance *sb_instance_new(const char *name, const sb_plugin *plugin, sb_options *opts, int once,
                             const char *state_dir);
/* plugin->create() (a stateless plugin has none: self is its config struct); 0 or -1
 * with errstr prefixed by the instance name. */
int sb_instance_create(sb_instance *ins, char *errstr, size_t errstr_size);
/* plugin->start() (if any); 0 or -1 with errstr. */
int sb_instance_start(sb_instance *ins, char *errstr, size_t errstr_size);
/* plugin->stop() if started. */
void sb_instance_stop(sb_instance *ins);
/* stop if needed, destroy() if created, free. NULL-safe. */
void sb_instance_free(sb_instance *ins);

#endif
