/*
 * cli.h - the operator commands other than `run`: check, plugins, runs,
 * dlq, ledger. Each returns a process exit code (see daemon.h) and prints to
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
    int republish;           /* reconcile --republish */
    int64_t pending_after_ms;/* reconcile --pending-after, default 6h */
} sb_cli_opts;

int sb_cli_check(const sb_cli_opts *o);
/* name NULL: list every plugin on the search path. */
int sb_cli_plugins(const sb_cli_opts *o, const char *name);
/* args: [] list, ["show", ID] */
int sb_cli_runs(const sb_cli_opts *o, int argc, char **argv);
/* args: ["list"] | ["replay", ID|--all] | ["drop", ID|--all] */
int sb_cli_dlq(const sb_cli_opts *o, int argc, char **argv);
/* Before `dlq drop` deletes entry_id (0: the dead entries of
 * o->filter.route): the remote work their steps' states name goes to the
 * instances' abandon() (dlq_cancel.c). */
void sb_cli_dlq_cancel(const sb_cli_opts *o, sb_ledger *l, int64_t entry_id);
/* args: ["check"] | ["recover"] (recover needs the daemon stopped) */
int sb_cli_ledger(const sb_cli_opts *o, int argc, char **argv);
/* Every instance's read-only checks of the live services (preflight_cli.c):
 * 0 when all pass, 1 when one failed, 3 when an instance could not even be
 * built from the config. */
int sb_cli_preflight(const sb_cli_opts *o);
/* Compare the on-prem runs with the registry rows (reconcile.c). */
int sb_cli_reconcile(const sb_cli_opts *o);

#endif
