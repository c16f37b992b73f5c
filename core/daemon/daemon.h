/*
 * daemon.h - the long-running process: load config, open the ledger,
 * build and start the router, then handle signals on the main thread
 * (SIGTERM/SIGINT drain and exit, SIGHUP reload, periodic ticks).
 * Threading: call from the main thread, before any other thread exists:
 * it blocks the handled signals so every thread started later inherits
 * the mask and only the main thread receives them.
 */
#ifndef SB_DAEMON_H
#define SB_DAEMON_H

typedef struct sb_run_opts {
    const char *config_path;
    const char *state_dir;  /* NULL = from config */
    int log_level;          /* -1 = from config */
    int once;
} sb_run_opts;

/* Exit codes (documented in README "CLI"). */
enum {
    SB_EXIT_OK = 0,
    SB_EXIT_FAILURE = 1,    /* runtime failure: state dir locked, ledger, plugin start, source failed in --once */
    SB_EXIT_USAGE = 2,
    SB_EXIT_CONFIG = 3,     /* invalid config or plugin (what and where is printed) */
    SB_EXIT_DEAD = 4,       /* --once finished, but some events were dead-lettered */
    SB_EXIT_DISCREPANCY = 5 /* reconcile found runs missing, pending too long or orphaned */
};

/* Block SIGTERM, SIGINT, SIGHUP (and ignore SIGPIPE) in the calling
 * thread; call first thing in main(). */
void sb_daemon_block_signals(void);

int sb_daemon_run(const sb_run_opts *o);

#endif
