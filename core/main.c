/* main.c - command line parsing and dispatch. */
#include "build_config.h"
#include "daemon/cli.h"
#include "config/confval.h"
#include "daemon/daemon.h"
#include "log/log_internal.h"
#include "util/util.h"

#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef SB_DEFAULT_CONFIG
#define SB_DEFAULT_CONFIG "/etc/syncbridge/syncbridge.json"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: syncbridge [OPTIONS] [COMMAND [ARGS]]\n"
            "\n"
            "Commands:\n"
            "  run                 run the bridge (default)\n"
            "  check               validate the config, load every plugin, print the routes\n"
            "  plugins [NAME|FILE] list plugins on the search path, or document one\n"
            "  runs [list]         list run ledger entries (filters below)\n"
            "  runs show ID        one entry with its steps, as JSON\n"
            "  dlq [list]          list dead-lettered entries\n"
            "  dlq replay ID|--all send dead-lettered entries through their route again\n"
            "  dlq drop ID|--all   delete dead-lettered entries\n"
            "  ledger check        full integrity check of the run ledger (safe beside the daemon)\n"
            "  ledger recover      copy what is readable of a damaged ledger into a new one (daemon stopped)\n"
            "  preflight           check, read-only, every instance against the live services it needs\n"
            "  reconcile           compare the on-prem runs with the registry rows (BigQuery, Cloud SQL)\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   main config file (default %s)\n"
            "      --once          run until the sources are exhausted and every event settled\n"
            "      --state-dir DIR override the config's state_dir\n"
            "  -l, --log-level L   error, warn, info or debug (overrides the config)\n"
            "      --route R       filter runs/dlq by route\n"
            "      --source S      filter runs by source instance\n"
            "      --state S       filter runs: pending, done or dead\n"
            "      --table T       filter runs by the event's table field\n"
            "      --since TIME    filter runs received at or after TIME (epoch seconds, or a duration ago: 1h, 2d)\n"
            "      --limit N       at most N entries (default 100)\n"
            "      --all           dlq replay/drop: every dead-lettered entry (of --route, if given)\n"
            "      --json          JSON output\n"
            "      --republish     reconcile: publish the runs that never reached GCP again through their route\n"
            "      --pending-after D  reconcile: a gcp row pending longer than D after the on-prem finish is\n"
            "                      reported (default 6h)\n"
            "  -V, --version       print the version\n"
            "  -h, --help          this text\n"
            "\n"
            "Exit codes: 0 ok; 1 runtime failure; 2 usage; 3 invalid config or plugin; 4 --once finished with\n"
            "dead-lettered events.\n",
            SB_DEFAULT_CONFIG);
}

static int parse_since(const char *s, int64_t *out)
{
    int64_t d = sb_parse_duration_ms(s);
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end == '\0' && v > 0) {
        *out = (int64_t)v * 1000000;
        return 0;
    }
    if (d < 0)
        return -1;
    *out = sb_now_us() - d * 1000;
    return 0;
}

int main(int argc, char **argv)
{
    /* Events are allocated on source threads and freed on step threads in
     * bursts; without these, glibc trims and consolidates its heap on every
     * burst (measured: ~10% of the daemon's CPU at 100k events/s). Memory
     * stays bounded by the routes' in-flight budgets either way. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    sb_daemon_block_signals();
    enum { O_ONCE = 256, O_STATE_DIR, O_ROUTE, O_SOURCE, O_STATE, O_TABLE, O_SINCE, O_LIMIT, O_ALL, O_JSON, O_REPUBLISH, O_PENDING_AFTER };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},  {"once", no_argument, NULL, O_ONCE},
        {"state-dir", required_argument, NULL, O_STATE_DIR}, {"log-level", required_argument, NULL, 'l'},
        {"route", required_argument, NULL, O_ROUTE}, {"source", required_argument, NULL, O_SOURCE},
        {"state", required_argument, NULL, O_STATE}, {"table", required_argument, NULL, O_TABLE},
        {"since", required_argument, NULL, O_SINCE}, {"limit", required_argument, NULL, O_LIMIT},
        {"all", no_argument, NULL, O_ALL},         {"json", no_argument, NULL, O_JSON},
        {"republish", no_argument, NULL, O_REPUBLISH}, {"pending-after", required_argument, NULL, O_PENDING_AFTER},
        {"version", no_argument, NULL, 'V'},       {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    sb_run_opts run = {.config_path = SB_DEFAULT_CONFIG, .log_level = -1};
    int config_given = 0;
    sb_cli_opts cli = {.filter = {.state = -1}};
    int c;
    while ((c = getopt_long(argc, argv, "c:l:Vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            run.config_path = optarg;
            config_given = 1;
            break;
        case 'l':
            run.log_level = sb_log_level_parse(optarg);
            if (run.log_level < 0) {
                fprintf(stderr, "syncbridge: --log-level must be error, warn, info or debug, not \"%s\"\n", optarg);
                return SB_EXIT_USAGE;
            }
            break;
        case O_ONCE: run.once = 1; break;
        case O_STATE_DIR: run.state_dir = optarg; break;
        case O_ROUTE: cli.filter.route = optarg; break;
        case O_SOURCE: cli.filter.source = optarg; break;
        case O_STATE:
            cli.filter.state = strcmp(optarg, "pending") == 0 ? 0 : strcmp(optarg, "done") == 0 ? 1
                             : strcmp(optarg, "dead") == 0    ? 2 : -2;
            if (cli.filter.state == -2) {
                fprintf(stderr, "syncbridge: --state must be pending, done or dead, not \"%s\"\n", optarg);
                return SB_EXIT_USAGE;
            }
            break;
        case O_TABLE:
            cli.filter.field_eq_name = "table";
            cli.filter.field_eq_value = optarg;
            break;
        case O_SINCE:
            if (parse_since(optarg, &cli.filter.since_us) != 0) {
                fprintf(stderr, "syncbridge: --since takes epoch seconds or a duration like 2h, not \"%s\"\n", optarg);
                return SB_EXIT_USAGE;
            }
            break;
        case O_LIMIT: cli.filter.limit = (size_t)strtoul(optarg, NULL, 10); break;
        case O_ALL: cli.all = 1; break;
        case O_JSON: cli.json = 1; break;
        case O_REPUBLISH: cli.republish = 1; break;
        case O_PENDING_AFTER:
            cli.pending_after_ms = sb_parse_duration_ms(optarg);
            if (cli.pending_after_ms <= 0) {
                fprintf(stderr, "syncbridge: --pending-after takes a duration like 6h, not \"%s\"\n", optarg);
                return SB_EXIT_USAGE;
            }
            break;
        case 'V': printf("%s\nplugin ABI %d.%d\n", PACKAGE_STRING, SB_ABI_MAJOR, SB_ABI_MINOR); return SB_EXIT_OK;
        case 'h': usage(stdout); return SB_EXIT_OK;
        default: usage(stderr); return SB_EXIT_USAGE;
        }
    }
    cli.config_path = run.config_path;
    cli.state_dir = run.state_dir;
    if (run.log_level >= 0)
        sb_log_setup((sb_log_level)run.log_level, SB_LOG_TO_STDERR);

    const char *cmd = optind < argc ? argv[optind++] : "run";
    int nargs = argc - optind;
    char **args = argv + optind;
    if (strcmp(cmd, "run") == 0 && nargs == 0)
        return sb_daemon_run(&run);
    if (strcmp(cmd, "check") == 0 && nargs == 0)
        return sb_cli_check(&cli);
    if (strcmp(cmd, "plugins") == 0 && nargs <= 1) {
        /* listing plugins needs no config; use the default one only if it exists */
        if (!config_given && access(run.config_path, R_OK) != 0)
            cli.config_path = NULL;
        return sb_cli_plugins(&cli, nargs ? args[0] : NULL);
    }
    if (strcmp(cmd, "runs") == 0)
        return sb_cli_runs(&cli, nargs, args);
    if (strcmp(cmd, "dlq") == 0)
        return sb_cli_dlq(&cli, nargs, args);
    if (strcmp(cmd, "ledger") == 0)
        return sb_cli_ledger(&cli, nargs, args);
    if (strcmp(cmd, "preflight") == 0 && nargs == 0)
        return sb_cli_preflight(&cli);
    if (strcmp(cmd, "reconcile") == 0 && nargs == 0)
        return sb_cli_reconcile(&cli);
    fprintf(stderr, "syncbridge: unknown command or wrong arguments: %s\n", cmd);
    usage(stderr);
    return SB_EXIT_USAGE;
}
