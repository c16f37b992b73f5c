/*
 * cli.h - the operator commands other than `run`: check, plugins, runs,
 * dlq. Each returns a process exit code (see daemon.h) and prints to
 * stdout (results) or stderr (errors). Main thread only.
 */
#ifndef SB_CLI_H
#define SB_CLI_H

#include "ledger/ledger.h"

typedef struct sb_cli_opts {
    const char *config_path;
    const char *state_dir;   /* overrides the config's */
    int json;                /* --json output */
    int all;                 /* --all for dlq replay/drop */
    sb_ledger_filter filter; /* --route --source --state --table --since --limit */
} sb_cli_opts;

int sb_cli_check(const sb_cli_opts *o);
/* name NULL: list every plugin on the search path. */
int sb_cli_plugins(const sb_cli_opts *o, const char *name);
/* args: [] list, ["show", ID] */
int sb_cli_runs(const sb_cli_opts *o, int argc, char **argv);
/* args: ["list"] | ["replay", ID|--all] | ["drop", ID|--all] */
int sb_cli_dlq(const sb_cli_opts *o, int argc, char **argv);

#endif
