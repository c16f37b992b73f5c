/* test_config.c - the config loader on real files in a temporary directory. */
#include "build_config.h"
#include "config/config.h"
#include "config/confval.h"
#include "log/log_internal.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "expected \"%s\" in \"%s\"", (sub), (s))

static char dir[64];
static char errbuf[2048];

static void write_file(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Absolute path of a file in the test directory (static, rotating). */
static const char *at(const char *rel)
{
    static char bufs[4][512];
    static int i;
    char *b = bufs[i++ % 4];
    snprintf(b, 512, "%s/%s", dir, rel);
    return b;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    strcpy(dir, "/tmp/sb-config-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/conf.d", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
}

static void teardown(void)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static sb_config *load_ok(void)
{
    errbuf[0] = '\0';
    sb_config *c = sb_config_load(at("main.json"), errbuf, sizeof errbuf);
    ck_assert_msg(c != NULL, "load failed: %s", errbuf);
    return c;
}

/* Load main.json expecting failure; the message is in errbuf. */
static const char *load_err(void)
{
    errbuf[0] = '\0';
    sb_config *c = sb_config_load(at("main.json"), errbuf, sizeof errbuf);
    ck_assert_msg(c == NULL, "load unexpectedly succeeded");
    return errbuf;
}

static const char *minimal_main =
    "{\"sources\": {\"rr_logs\": {\"plugin\": \"file_in\", \"path\": \"/var/log/rr/*.log\"}},\n"
    " \"sinks\": {\"out\": {\"plugin\": \"stdout\"}},\n"
    " \"routes\": {\"r\": {\"sources\": [\"rr_logs\"], \"steps\": [\"out\"]}}}\n";

/* Main with the sections above plus `extra` route JSON as routes.r. */
static void main_with_route(const char *route)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"sources\": {\"rr_logs\": {\"plugin\": \"file_in\"}},\n"
             " \"sinks\": {\"out\": {\"plugin\": \"stdout\"}, \"bq\": {\"plugin\": \"bigquery\"}},\n"
             " \"actions\": {\"composer\": {\"plugin\": \"composer\"}},\n"
             " \"routes\": {\"r\": %s}}\n",
             route);
    write_file("main.json", text);
}

START_TEST(test_valid_merge)
{
    setenv("SB_TEST_STATE", "/srv/state", 1);
    write_file("secret.txt", "s3cr3t\n");
    char main_text[4096];
    snprintf(main_text, sizeof main_text,
             "{\n"
             "  \"state_dir\": \"${SB_TEST_STATE}/sb\",\n"
             "  \"plugin_path\": [\"/opt/team/plugins\", \"${env:SB_TEST_STATE}/plugins\"],\n"
             "  \"log\": {\"level\": \"debug\", \"target\": \"syslog\"},\n"
             "  \"shutdown_timeout\": \"10s\",\n"
             "  \"ledger\": {\"fsync\": \"power\", \"retention\": \"2d\", \"commit_interval\": 10,"
             " \"keep_payload\": \"until_settled\"},\n"
             "  \"limits\": {\"max_inflight\": 50, \"max_inflight_bytes\": \"1MB\"},\n"
             "  \"admin\": {\"enabled\": true, \"bind\": \"${file:%s/secret.txt}\", \"port\": 9000},\n"
             "  \"sources\": {\"rr_logs\": {\"plugin\": \"file_in\", \"path\": \"/var/log/rr/*.log\", \"workers\": 3}},\n"
             "  \"sinks\": {\"out\": {\"plugin\": \"stdout\", \"batch_max\": 50, \"workers\": 2,\n"
             "            \"retry\": {\"max_attempts\": 3, \"max_time\": \"1m\", \"initial\": \"100ms\",\n"
             "                      \"max_delay\": \"2s\", \"multiplier\": 1.5},\n"
             "            \"pretty\": true, \"prefix\": \"${env:NOT_SUBSTITUTED_HERE}\"}},\n"
             "  \"routes\": {\"onprem\": {\"sources\": [\"rr_logs\"],\n"
             "                \"match\": {\"field\": \"status\", \"equals\": \"succeeded\"},\n"
             "                \"steps\": [\"out\", [\"bq\", \"composer\"], \"out\"],\n"
             "                \"max_inflight\": 7, \"max_inflight_bytes\": \"2KB\"}}\n"
             "}\n",
             dir);
    write_file("main.json", main_text);
    write_file("conf.d/10-team.json",
               "{\"sinks\": {\"bq\": {\"plugin\": \"bigquery\", \"table\": \"${table}\"}},\n"
               " \"routes\": {\"team\": {\"sources\": [\"rr_logs\", \"kafka_in\"], \"steps\": [\"bq\"]}}}\n");
    write_file("conf.d/20-other.json",
               "{\"sources\": {\"kafka_in\": {\"plugin\": \"kafka\"}},\n"
               " \"actions\": {\"composer\": {\"plugin\": \"composer\", \"dag\": \"replicate\"}}}\n");
    write_file("conf.d/notes.txt", "not json, ignored");
    write_file("conf.d/.hidden.json", "{\"state_dir\": 1}");

    sb_config *c = load_ok();
    ck_assert_str_eq(c->main_file, at("main.json"));
    ck_assert_str_eq(c->conf_d, at("conf.d"));
    ck_assert_str_eq(c->state_dir, "/srv/state/sb");
    ck_assert_uint_eq(c->n_plugin_dirs, 3);
    ck_assert_str_eq(c->plugin_dirs[0], "/opt/team/plugins");
    ck_assert_str_eq(c->plugin_dirs[1], "/srv/state/plugins");
    ck_assert_str_eq(c->plugin_dirs[2], SB_DEFAULT_PLUGIN_DIR);
    ck_assert_int_eq(c->log_level, SB_LOG_DEBUG);
    ck_assert_str_eq(c->log_target, "syslog");
    ck_assert_int_eq(c->shutdown_timeout_ms, 10000);
    ck_assert_int_eq(c->fsync, SB_FSYNC_POWER);
    ck_assert_int_eq(c->retention_ms, 2 * 86400000LL);
    ck_assert_int_eq(c->commit_interval_ms, 10);
    ck_assert_int_eq(c->keep_payload_until_settled, 1);
    ck_assert_int_eq(c->max_inflight, 50);
    ck_assert_int_eq(c->max_inflight_bytes, 1048576);
    ck_assert_int_eq(c->admin_enabled, 1);
    ck_assert_str_eq(c->admin_bind, "s3cr3t");
    ck_assert_int_eq(c->admin_port, 9000);

    ck_assert_uint_eq(c->n_instances, 5);
    const sb_instance_conf *src = sb_config_instance(c, "rr_logs");
    ck_assert_int_eq(src->kind, SB_KIND_SOURCE);
    ck_assert_str_eq(src->plugin, "file_in");
    ck_assert_str_eq(src->file, at("main.json"));
    /* sources keep every key but "plugin" as options, reserved names included */
    ck_assert_int_eq(json_integer_value(json_object_get(src->options, "workers")), 3);
    ck_assert_str_eq(json_string_value(json_object_get(src->options, "path")), "/var/log/rr/*.log");

    const sb_instance_conf *out = sb_config_instance(c, "out");
    ck_assert_int_eq(out->kind, SB_KIND_SINK);
    ck_assert_int_eq(out->workers, 2);
    ck_assert_int_eq(out->batch_max, 50);
    ck_assert_int_eq(out->retry.max_attempts, 3);
    ck_assert_int_eq(out->retry.max_time_ms, 60000);
    ck_assert_int_eq(out->retry.initial_ms, 100);
    ck_assert_int_eq(out->retry.max_delay_ms, 2000);
    ck_assert_double_eq(out->retry.multiplier, 1.5);
    ck_assert_uint_eq(json_object_size(out->options), 2);
    ck_assert_ptr_null(json_object_get(out->options, "workers"));
    /* plugin options stay raw: substitution happens against the option table later */
    ck_assert_str_eq(json_string_value(json_object_get(out->options, "prefix")), "${env:NOT_SUBSTITUTED_HERE}");

    const sb_instance_conf *bq = sb_config_instance(c, "bq");
    ck_assert_str_eq(bq->file, at("conf.d/10-team.json"));
    ck_assert_int_eq(bq->workers, 1);
    ck_assert_int_eq(bq->batch_max, 500);
    ck_assert_int_eq(bq->retry.max_attempts, 10);
    ck_assert_int_eq(bq->retry.max_time_ms, 3600000);
    ck_assert_int_eq(bq->retry.initial_ms, 500);
    ck_assert_int_eq(bq->retry.max_delay_ms, 300000);
    ck_assert_double_eq(bq->retry.multiplier, 2.0);
    ck_assert_str_eq(json_string_value(json_object_get(bq->options, "table")), "${table}");
    ck_assert_int_eq(sb_config_instance(c, "composer")->kind, SB_KIND_ACTION);
    ck_assert_int_eq(sb_config_instance(c, "kafka_in")->kind, SB_KIND_SOURCE);
    ck_assert_ptr_null(sb_config_instance(c, "nope"));

    ck_assert_uint_eq(c->n_routes, 2);
    const sb_route_conf *r = &c->routes[0];
    ck_assert_str_eq(r->name, "onprem");
    ck_assert_str_eq(r->file, at("main.json"));
    ck_assert_uint_eq(r->n_sources, 1);
    ck_assert_str_eq(r->sources[0], "rr_logs");
    ck_assert_uint_eq(r->n_steps, 3);
    ck_assert_uint_eq(r->steps[0].n, 1);
    ck_assert_str_eq(r->steps[0].instances[0], "out");
    ck_assert_uint_eq(r->steps[1].n, 2);
    ck_assert_str_eq(r->steps[1].instances[0], "bq");
    ck_assert_str_eq(r->steps[1].instances[1], "composer");
    ck_assert_str_eq(json_string_value(json_object_get(r->match, "equals")), "succeeded");
    ck_assert_int_eq(r->max_inflight, 7);
    ck_assert_int_eq(r->max_inflight_bytes, 2048);
    r = &c->routes[1];
    ck_assert_str_eq(r->name, "team");
    ck_assert_str_eq(r->file, at("conf.d/10-team.json"));
    ck_assert_uint_eq(r->n_sources, 2);
    ck_assert_str_eq(r->sources[1], "kafka_in");
    ck_assert_ptr_null(r->match);
    ck_assert_int_eq(r->max_inflight, 50);
    ck_assert_int_eq(r->max_inflight_bytes, 1048576);
    sb_config_free(c);
}
END_TEST

START_TEST(test_defaults_without_conf_d)
{
    teardown();
    ck_assert_ptr_nonnull(mkdtemp(strcpy(dir, "/tmp/sb-config-XXXXXX")));
    write_file("main.json", minimal_main);
    sb_config *c = load_ok();
    ck_assert_str_eq(c->conf_d, at("conf.d"));
    ck_assert_str_eq(c->state_dir, SB_DEFAULT_STATE_DIR);
    ck_assert_uint_eq(c->n_plugin_dirs, 1);
    ck_assert_str_eq(c->plugin_dirs[0], SB_DEFAULT_PLUGIN_DIR);
    ck_assert_int_eq(c->log_level, SB_LOG_INFO);
    ck_assert_str_eq(c->log_target, "stderr");
    ck_assert_int_eq(c->shutdown_timeout_ms, 30000);
    ck_assert_int_eq(c->fsync, SB_FSYNC_PROCESS);
    ck_assert_int_eq(c->retention_ms, 7 * 86400000LL);
    ck_assert_int_eq(c->commit_interval_ms, 5);
    ck_assert_int_eq(c->keep_payload_until_settled, 0);
    ck_assert_int_eq(c->max_inflight, 10000);
    ck_assert_int_eq(c->max_inflight_bytes, 64LL * 1024 * 1024);
    ck_assert_int_eq(c->admin_enabled, 0);
    ck_assert_str_eq(c->admin_bind, "127.0.0.1");
    ck_assert_int_eq(c->admin_port, 8686);
    ck_assert_int_eq(c->routes[0].max_inflight, 10000);
    sb_config_free(c);
}
END_TEST

START_TEST(test_custom_conf_d)
{
    ck_assert_int_eq(mkdir(at("teams"), 0755), 0);
    write_file("main.json",
               "{\"conf_d\": \"teams\", \"sinks\": {\"out\": {\"plugin\": \"stdout\"}}}");
    write_file("teams/a.json", "{\"sources\": {\"in\": {\"plugin\": \"stdin\"}}}");
    write_file("conf.d/ignored.json", "{\"sources\": {\"in\": {\"plugin\": \"other\"}}}");
    sb_config *c = load_ok();
    ck_assert_str_eq(c->conf_d, at("teams"));
    ck_assert_str_eq(sb_config_instance(c, "in")->plugin, "stdin");
    sb_config_free(c);

    /* a missing conf_d is fine, one that is not a directory is not */
    write_file("main.json", "{\"conf_d\": \"nowhere\"}");
    c = load_ok();
    ck_assert_uint_eq(c->n_instances, 0);
    sb_config_free(c);
    write_file("main.json", "{\"conf_d\": \"main.json\"}");
    char want[800];
    snprintf(want, sizeof want, "%s: conf_d: cannot read directory \"%s\": Not a directory", at("main.json"),
             at("main.json"));
    ck_assert_str_eq(load_err(), want);
}
END_TEST

/* A drop-in symlink that leads nowhere is an error naming it, never a
 * drop-in skipped without a word. */
START_TEST(test_dangling_and_looping_dropin_symlinks)
{
    write_file("main.json", minimal_main);
    write_file("conf.d/10-ok.json", "{\"sinks\": {\"o\": {\"plugin\": \"stdout\"}}}");
    char link[600];
    snprintf(link, sizeof link, "%s", at("conf.d/20-team.json"));
    ck_assert_int_eq(symlink(at("gone/team.json"), link), 0);
    ASSERT_HAS(load_err(), "cannot read drop-in ");
    ASSERT_HAS(load_err(), "conf.d/20-team.json: No such file or directory (a dangling or looping symlink?)");
    ck_assert_int_eq(unlink(link), 0);
    ck_assert_int_eq(symlink("20-team.json", link), 0); /* points at itself */
    ASSERT_HAS(load_err(), "conf.d/20-team.json: Too many levels of symbolic links");
    ck_assert_int_eq(unlink(link), 0);
    sb_config_free(load_ok());
}
END_TEST

START_TEST(test_syntax_errors)
{
    write_file("main.json", "{\n  \"state_dir\": \"/x\",\n  oops\n}\n");
    const char *e = load_err();
    char want[600];
    snprintf(want, sizeof want, "%s:3:", at("main.json"));
    ck_assert_msg(strncmp(e, want, strlen(want)) == 0, "got %s", e);
    ASSERT_HAS(e, ": syntax error: ");

    write_file("main.json", minimal_main);
    write_file("conf.d/team.json", "{\"sinks\": {\"a\": {\"plugin\": \"x\",}}}");
    e = load_err();
    snprintf(want, sizeof want, "%s:1:", at("conf.d/team.json"));
    ck_assert_msg(strncmp(e, want, strlen(want)) == 0, "got %s", e);
    ASSERT_HAS(e, "syntax error");

    write_file("conf.d/team.json", "{\"sinks\": {\"a\": {\"plugin\": \"x\"}, \"a\": {\"plugin\": \"y\"}}}");
    ASSERT_HAS(load_err(), "syntax error: duplicate object key");

    write_file("conf.d/team.json", "[1, 2]");
    snprintf(want, sizeof want, "%s: expected a JSON object at the top level", at("conf.d/team.json"));
    ck_assert_str_eq(load_err(), want);

    errbuf[0] = '\0';
    ck_assert_ptr_null(sb_config_load(at("missing.json"), errbuf, sizeof errbuf));
    snprintf(want, sizeof want, "cannot read config file %s: No such file or directory", at("missing.json"));
    ck_assert_str_eq(errbuf, want);
}
END_TEST

START_TEST(test_unknown_keys)
{
    char want[600];
    write_file("main.json", "{\"state_dri\": \"/x\"}");
    snprintf(want, sizeof want, "%s: state_dri: unknown key (did you mean \"state_dir\"?)", at("main.json"));
    ck_assert_str_eq(load_err(), want);
    write_file("main.json", "{\"ledger\": {\"fsynk\": \"power\"}}");
    ASSERT_HAS(load_err(), "main.json: ledger.fsynk: unknown key (did you mean \"fsync\"?)");
    write_file("main.json", "{\"whatever\": 1}");
    ASSERT_HAS(load_err(), "main.json: whatever: unknown key");
    main_with_route("{\"sources\": [\"rr_logs\"], \"step\": [\"out\"]}");
    ASSERT_HAS(load_err(), "main.json: routes.r.step: unknown key (did you mean \"steps\"?)");
    write_file("main.json", "{\"sinks\": {\"out\": {\"plugin\": \"stdout\", \"retry\": {\"max_atempts\": 2}}}}");
    ASSERT_HAS(load_err(), "main.json: sinks.out.retry.max_atempts: unknown key (did you mean \"max_attempts\"?)");
    write_file("main.json", "{\"admin\": {\"prot\": 1}}");
    ASSERT_HAS(load_err(), "admin.prot: unknown key (did you mean \"port\"?)");
}
END_TEST

START_TEST(test_wrong_types)
{
    char want[600];
    write_file("main.json", "{\"shutdown_timeout\": true}");
    snprintf(want, sizeof want, "%s: shutdown_timeout: expected a duration like \"250ms\" or \"5s\", got true",
             at("main.json"));
    ck_assert_str_eq(load_err(), want);
    write_file("main.json", "{\"state_dir\": 5}");
    ASSERT_HAS(load_err(), "main.json: state_dir: expected a string, got 5");
    write_file("main.json", "{\"plugin_path\": [\"/a\", false]}");
    ASSERT_HAS(load_err(), "main.json: plugin_path[1]: expected a string, got false");
    write_file("main.json", "{\"plugin_path\": 3}");
    ASSERT_HAS(load_err(), "plugin_path: expected a directory or a list of directories, got 3");
    write_file("main.json", "{\"admin\": {\"port\": \"x\"}}");
    ASSERT_HAS(load_err(), "main.json: admin.port: expected an integer from 1 to 65535, got \"x\"");
    write_file("main.json", "{\"admin\": {\"port\": 70000}}");
    ASSERT_HAS(load_err(), "admin.port: expected an integer from 1 to 65535, got 70000");
    write_file("main.json", "{\"admin\": {\"enabled\": \"yes\"}}");
    ASSERT_HAS(load_err(), "admin.enabled: expected true or false, got \"yes\"");
    write_file("main.json", "{\"log\": {\"level\": \"verbose\"}}");
    ASSERT_HAS(load_err(), "log.level: expected one of \"error\", \"warn\", \"info\", \"debug\", got \"verbose\"");
    write_file("main.json", "{\"ledger\": {\"fsync\": \"always\"}}");
    ASSERT_HAS(load_err(), "ledger.fsync: expected one of \"process\", \"power\", got \"always\"");
    write_file("main.json", "{\"ledger\": {\"keep_payload\": \"never\"}}");
    ASSERT_HAS(load_err(), "ledger.keep_payload: expected one of \"always\", \"until_settled\", got \"never\"");
    write_file("main.json", "{\"log\": \"debug\"}");
    ASSERT_HAS(load_err(), "main.json: log: expected an object, got \"debug\"");
    write_file("main.json", "{\"sinks\": []}");
    ASSERT_HAS(load_err(), "main.json: sinks: expected an object of named entries, got []");
    write_file("main.json", "{\"sinks\": {\"out\": {\"plugin\": \"stdout\", \"workers\": \"2\"}}}");
    ASSERT_HAS(load_err(), "main.json: sinks.out.workers: expected an integer from 1 to 1024, got \"2\"");
    write_file("main.json", "{\"sinks\": {\"out\": {\"plugin\": \"stdout\", \"batch_max\": 0}}}");
    ASSERT_HAS(load_err(), "sinks.out.batch_max: expected an integer from 1 to 1000000, got 0");
    write_file("main.json", "{\"actions\": {\"a\": {\"plugin\": \"x\", \"retry\": {\"multiplier\": 0.5}}}}");
    ASSERT_HAS(load_err(), "actions.a.retry.multiplier: expected a number >= 1.0, got 0.5");
    write_file("main.json", "{\"sinks\": {\"out\": {\"plugin\": 1}}}");
    ASSERT_HAS(load_err(), "main.json: sinks.out.plugin: expected a string, got 1");
    write_file("main.json", "{\"sinks\": {\"out\": {\"type\": \"stdout\"}}}");
    ASSERT_HAS(load_err(), "main.json: sinks.out: missing required key \"plugin\"");
    write_file("main.json", "{\"sinks\": {\"out\": \"stdout\"}}");
    ASSERT_HAS(load_err(), "main.json: sinks.out: expected an object with at least a \"plugin\" key, got \"stdout\"");
    main_with_route("[\"out\"]");
    ASSERT_HAS(load_err(), "main.json: routes.r: expected an object with \"sources\" and \"steps\", got [\"out\"]");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\"], \"max_inflight\": 0}");
    ASSERT_HAS(load_err(), "routes.r.max_inflight: expected an integer >= 1, got 0");
}
END_TEST

START_TEST(test_duration_and_size_forms)
{
    /* the same forms plugin options take (confval.c), references included */
    setenv("SB_TEST_RETENTION", "36 H", 1);
    write_file("main.json",
               "{\"shutdown_timeout\": \"1500ms\", \"ledger\": {\"retention\": \"${env:SB_TEST_RETENTION}\"},"
               " \"limits\": {\"max_inflight_bytes\": \"64KiB\"},"
               " \"sources\": {\"rr_logs\": {\"plugin\": \"filewatch\"}}, \"sinks\": {\"out\": {\"plugin\": \"stdout\","
               " \"retry\": {\"max_time\": \"2 d\", \"initial\": 50}}},"
               " \"routes\": {\"r\": {\"sources\": [\"rr_logs\"], \"steps\": [\"out\"], \"max_inflight_bytes\": \"3m\"}}}");
    sb_config *c = load_ok();
    ck_assert_int_eq(c->shutdown_timeout_ms, 1500);
    ck_assert_int_eq(c->retention_ms, 36 * 3600000LL);
    ck_assert_int_eq(c->max_inflight_bytes, 65536);
    ck_assert_int_eq(c->routes[0].max_inflight_bytes, 3 * 1048576);
    sb_config_free(c);
}
END_TEST

START_TEST(test_bad_durations_and_sizes)
{
    write_file("main.json", "{\"ledger\": {\"retention\": \"7 days\"}}");
    ASSERT_HAS(load_err(), "main.json: ledger.retention: expected a duration like \"250ms\" or \"5s\", got \"7 days\"");
    write_file("main.json", "{\"limits\": {\"max_inflight_bytes\": \"64XB\"}}");
    ASSERT_HAS(load_err(),
               "main.json: limits.max_inflight_bytes: expected a size like \"512\", \"64KB\" or \"10MB\", got \"64XB\"");
    write_file("main.json", "{\"sinks\": {\"o\": {\"plugin\": \"x\", \"retry\": {\"max_time\": -1}}}}");
    ASSERT_HAS(load_err(), "sinks.o.retry.max_time: expected a duration");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\"], \"max_inflight_bytes\": \"lots\"}");
    ASSERT_HAS(load_err(), "routes.r.max_inflight_bytes: expected a size");
    /* a duration that would overflow once in microseconds (a retention
     * cutoff in the future would prune every settled entry) */
    write_file("main.json", "{\"ledger\": {\"retention\": \"1000000000d\"}}");
    ASSERT_HAS(load_err(), "ledger.retention: expected a duration of at most 100 years, got \"1000000000d\"");
    write_file("main.json", "{\"shutdown_timeout\": 9000000000000000000}");
    ASSERT_HAS(load_err(), "shutdown_timeout: expected a duration of at most 100 years");
    /* a reference is named when its value is at fault, and the value (maybe
     * a secret) is never echoed */
    setenv("SB_TEST_BAD_RETENTION", "5 sec s3cr3t", 1);
    write_file("main.json", "{\"ledger\": {\"retention\": \"${env:SB_TEST_BAD_RETENTION}\"}}");
    ASSERT_HAS(load_err(), "got \"${env:SB_TEST_BAD_RETENTION}\", whose substituted value is not one");
    ck_assert_ptr_null(strstr(load_err(), "s3cr3t"));
}
END_TEST

START_TEST(test_duplicates)
{
    char want[1200];
    write_file("main.json", minimal_main);
    write_file("conf.d/team.json", "{\"sinks\": {\"out\": {\"plugin\": \"stdout\"}}}");
    snprintf(want, sizeof want, "instance \"out\" is defined twice: %s (sinks.out) and %s (sinks.out)",
             at("main.json"), at("conf.d/team.json"));
    ck_assert_str_eq(load_err(), want);

    /* one namespace across sections */
    write_file("conf.d/team.json", "{\"actions\": {\"rr_logs\": {\"plugin\": \"x\"}}}");
    snprintf(want, sizeof want, "instance \"rr_logs\" is defined twice: %s (sources.rr_logs) and %s (actions.rr_logs)",
             at("main.json"), at("conf.d/team.json"));
    ck_assert_str_eq(load_err(), want);

    write_file("conf.d/team.json", "{\"sinks\": {\"bq\": {\"plugin\": \"x\"}}}");
    write_file("conf.d/zz.json", "{\"sinks\": {\"bq\": {\"plugin\": \"y\"}}}");
    snprintf(want, sizeof want, "instance \"bq\" is defined twice: %s (sinks.bq) and %s (sinks.bq)",
             at("conf.d/team.json"), at("conf.d/zz.json"));
    ck_assert_str_eq(load_err(), want);

    unlink(at("conf.d/zz.json"));
    write_file("conf.d/team.json", "{\"routes\": {\"r\": {\"sources\": [\"rr_logs\"], \"steps\": [\"out\"]}}}");
    snprintf(want, sizeof want, "route \"r\" is defined twice: %s (routes.r) and %s (routes.r)", at("main.json"),
             at("conf.d/team.json"));
    ck_assert_str_eq(load_err(), want);

    /* a route may share an instance's name: separate namespaces */
    write_file("conf.d/team.json", "{\"routes\": {\"out\": {\"sources\": [\"rr_logs\"], \"steps\": [\"out\"]}}}");
    sb_config *c = load_ok();
    ck_assert_uint_eq(c->n_routes, 2);
    sb_config_free(c);
}
END_TEST

START_TEST(test_route_references)
{
    char want[600];
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\", \"bqq\"]}");
    snprintf(want, sizeof want, "%s: routes.r.steps[1]: unknown instance \"bqq\" (did you mean \"bq\"?)",
             at("main.json"));
    ck_assert_str_eq(load_err(), want);
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\", [\"bq\", \"nothing_like_it\"]]}");
    ASSERT_HAS(load_err(), "main.json: routes.r.steps[1][1]: unknown instance \"nothing_like_it\"");
    main_with_route("{\"sources\": [\"kafka\"], \"steps\": [\"out\"]}");
    ASSERT_HAS(load_err(), "main.json: routes.r.sources[0]: unknown instance \"kafka\"");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\", \"rr_logs\"]}");
    snprintf(want, sizeof want, "%s: routes.r.steps[1]: \"rr_logs\" is a source, steps must be sinks or actions",
             at("main.json"));
    ck_assert_str_eq(load_err(), want);
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [[\"out\", \"rr_logs\"]]}");
    ASSERT_HAS(load_err(), "routes.r.steps[0][1]: \"rr_logs\" is a source, steps must be sinks or actions");
    main_with_route("{\"sources\": [\"rr_logs\", \"out\"], \"steps\": [\"bq\"]}");
    ASSERT_HAS(load_err(), "routes.r.sources[1]: \"out\" is a sink, sources must be source instances");
    main_with_route("{\"sources\": [\"composer\"], \"steps\": [\"bq\"]}");
    ASSERT_HAS(load_err(), "routes.r.sources[0]: \"composer\" is an action");

    /* a route in a drop-in may name instances from the main file and vice versa */
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"team_sink\"]}");
    write_file("conf.d/team.json", "{\"sinks\": {\"team_sink\": {\"plugin\": \"x\"}}}");
    sb_config *c = load_ok();
    sb_config_free(c);
}
END_TEST

START_TEST(test_route_shape)
{
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": []}");
    ASSERT_HAS(load_err(), "main.json: routes.r.steps: expected a non-empty list of steps, got []");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": \"out\"}");
    ASSERT_HAS(load_err(), "routes.r.steps: expected a non-empty list of steps, got \"out\"");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\", []]}");
    ASSERT_HAS(load_err(), "routes.r.steps[1]: expected an instance name or a non-empty list of names, got []");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\", 4]}");
    ASSERT_HAS(load_err(), "routes.r.steps[1]: expected an instance name or a non-empty list of names, got 4");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [[\"out\", 4]]}");
    ASSERT_HAS(load_err(), "routes.r.steps[0][1]: expected a string, got 4");
    main_with_route("{\"sources\": [], \"steps\": [\"out\"]}");
    ASSERT_HAS(load_err(), "routes.r.sources: expected a non-empty list of source names, got []");
    main_with_route("{\"steps\": [\"out\"]}");
    ASSERT_HAS(load_err(), "main.json: routes.r: missing required key \"sources\"");
    main_with_route("{\"sources\": [\"rr_logs\"]}");
    ASSERT_HAS(load_err(), "main.json: routes.r: missing required key \"steps\"");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\"], \"match\": \"status=ok\"}");
    ASSERT_HAS(load_err(), "routes.r.match: expected a condition object, got \"status=ok\"");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\"],"
                    " \"match\": {\"all\": [{\"field\": \"t\", \"regex\": \"(\"}]}}");
    ASSERT_HAS(load_err(), "main.json: routes.r.match.all[0].regex: invalid regular expression");
    main_with_route("{\"sources\": [\"rr_logs\"], \"steps\": [\"out\"], \"match\": {\"field\": \"t\", \"is\": 1}}");
    ASSERT_HAS(load_err(), "main.json: routes.r.match.is: unknown key in match condition");
}
END_TEST

START_TEST(test_bad_names)
{
    write_file("main.json", "{\"sinks\": {\"out put\": {\"plugin\": \"stdout\"}}}");
    ASSERT_HAS(load_err(), "main.json: sinks.out put: invalid name \"out put\" (use letters, digits, \"_\", \".\" and \"-\")");
    write_file("main.json", "{\"sources\": {\"\": {\"plugin\": \"stdin\"}}}");
    ASSERT_HAS(load_err(), "invalid name \"\"");
    write_file("main.json", "{\"sources\": {\"in\": {\"plugin\": \"stdin\"}}, \"sinks\": {\"o\": {\"plugin\": \"x\"}},"
                            " \"routes\": {\"r/1\": {\"sources\": [\"in\"], \"steps\": [\"o\"]}}}");
    ASSERT_HAS(load_err(), "main.json: routes.r/1: invalid name \"r/1\"");
    write_file("main.json", "{\"sinks\": {\"team-a.bq_1\": {\"plugin\": \"x\"}}}");
    sb_config *c = load_ok();
    sb_config_free(c);
}
END_TEST

START_TEST(test_dropin_forbidden_keys)
{
    char want[600];
    write_file("main.json", minimal_main);
    write_file("conf.d/team.json", "{\"sinks\": {}, \"state_dir\": \"/tmp/x\"}");
    snprintf(want, sizeof want, "%s: state_dir: not allowed in a drop-in (only sources, sinks, actions and routes)",
             at("conf.d/team.json"));
    ck_assert_str_eq(load_err(), want);
    write_file("conf.d/team.json", "{\"limits\": {}}");
    ASSERT_HAS(load_err(), "conf.d/team.json: limits: not allowed in a drop-in");
}
END_TEST

START_TEST(test_substitution_errors)
{
    char want[800];
    unsetenv("SB_TEST_UNSET");
    write_file("main.json", "{\"state_dir\": \"${env:SB_TEST_UNSET}/x\"}");
    snprintf(want, sizeof want, "%s: state_dir: environment variable \"SB_TEST_UNSET\" is not set", at("main.json"));
    ck_assert_str_eq(load_err(), want);
    write_file("main.json", "{\"log\": {\"level\": \"${SB_TEST_UNSET}\"}}");
    ASSERT_HAS(load_err(), "main.json: log.level: environment variable \"SB_TEST_UNSET\" is not set");
    write_file("main.json", "{\"sinks\": {\"o\": {\"plugin\": \"${SB_TEST_UNSET}\"}}}");
    ASSERT_HAS(load_err(), "main.json: sinks.o.plugin: environment variable \"SB_TEST_UNSET\" is not set");

    write_file("main.json", "{\"admin\": {\"bind\": \"${file:/nonexistent/sb/bind}\"}}");
    ASSERT_HAS(load_err(), "main.json: admin.bind: cannot read file \"/nonexistent/sb/bind\": No such file or directory");
    snprintf(want, sizeof want, "{\"admin\": {\"bind\": \"${file:%s}\"}}", at("conf.d"));
    write_file("main.json", want);
    snprintf(want, sizeof want, "admin.bind: cannot read file \"%s\": Is a directory", at("conf.d"));
    ASSERT_HAS(load_err(), want);
    write_file("main.json", "{\"state_dir\": \"/x/${unterminated\"}");
    ASSERT_HAS(load_err(), "main.json: state_dir: unterminated \"${\" at column 4");
}
END_TEST

START_TEST(test_subst_function)
{
    char err[512] = "";
    char *s;
    setenv("SB_TEST_V", "val", 1);
    s = sb_config_subst("a ${env:SB_TEST_V} ${SB_TEST_V} $${x} $$ $x $", 0, err, sizeof err);
    ck_assert_str_eq(s, "a val val ${x} $$ $x $");
    free(s);
    s = sb_config_subst("a ${env:SB_TEST_V} ${table} ${t:-d} $${x} $$ ${open", 1, err, sizeof err);
    ck_assert_str_eq(s, "a val ${table} ${t:-d} $${x} $$ ${open");
    free(s);
    s = sb_config_subst("", 0, err, sizeof err);
    ck_assert_str_eq(s, "");
    free(s);

    write_file("pw", "hunter2\r\n");
    char in[600];
    snprintf(in, sizeof in, "pw=${file:%s}.", at("pw"));
    s = sb_config_subst(in, 0, err, sizeof err);
    ck_assert_str_eq(s, "pw=hunter2.");
    free(s);
    write_file("pw", "two\nlines\n\n");
    s = sb_config_subst(in, 1, err, sizeof err);
    ck_assert_str_eq(s, "pw=two\nlines\n.");
    free(s);

    FILE *f = fopen(at("big"), "w");
    for (int i = 0; i < 1024 * 1024 + 1; i++)
        fputc('x', f);
    fclose(f);
    snprintf(in, sizeof in, "${file:%s}", at("big"));
    ck_assert_ptr_null(sb_config_subst(in, 0, err, sizeof err));
    char want[600];
    snprintf(want, sizeof want, "file \"%s\" is larger than 1 MiB", at("big"));
    ck_assert_str_eq(err, want);

    unsetenv("SB_TEST_UNSET");
    ck_assert_ptr_null(sb_config_subst("${SB_TEST_UNSET}", 0, err, sizeof err));
    ck_assert_str_eq(err, "environment variable \"SB_TEST_UNSET\" is not set");
    ck_assert_ptr_null(sb_config_subst("${env:SB_TEST_UNSET}", 1, err, sizeof err));
    ck_assert_str_eq(err, "environment variable \"SB_TEST_UNSET\" is not set");
    ck_assert_ptr_null(sb_config_subst("${}", 0, err, sizeof err));
    ASSERT_HAS(err, "empty environment variable name");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_valid_merge);
    tcase_add_test(tc, test_defaults_without_conf_d);
    tcase_add_test(tc, test_custom_conf_d);
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_dangling_and_looping_dropin_symlinks);
    tcase_add_test(tc, test_unknown_keys);
    tcase_add_test(tc, test_wrong_types);
    tcase_add_test(tc, test_duration_and_size_forms);
    tcase_add_test(tc, test_bad_durations_and_sizes);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_route_references);
    tcase_add_test(tc, test_route_shape);
    tcase_add_test(tc, test_bad_names);
    tcase_add_test(tc, test_dropin_forbidden_keys);
    tcase_add_test(tc, test_substitution_errors);
    tcase_add_test(tc, test_subst_function);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
