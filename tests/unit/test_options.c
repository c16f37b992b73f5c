/* test_options.c - plugin option validation, getters and the doc printer. */
#include "build_config.h"
#include "config/confval.h"
#include "engine/instance.h"
#include "config/options_internal.h"
#include "events/template.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "expected \"%s\" in \"%s\"", (sub), (s))

static const sb_option_def defs[] = {
    {SB_OPT("table", SB_OPT_STRING, NULL, 1, "Destination table.")},
    {SB_OPT("dataset", SB_OPT_STRING, "\"registry\"", 0, "Dataset name.")},
    {SB_OPT("batch", SB_OPT_INT, "100", 0, "Rows per insert.")},
    {SB_OPT("dry_run", SB_OPT_BOOL, "false", 0, "Log instead of writing.")},
    {SB_OPT("ratio", SB_OPT_DOUBLE, "0.25", 0, "Sampling ratio.")},
    {SB_OPT("batch_linger", SB_OPT_DURATION, "\"250ms\"", 0, "How long to wait for a fuller batch.")},
    {SB_OPT("max_bytes", SB_OPT_SIZE, "\"1MB\"", 0, "Largest request body.")},
    {SB_OPT("hosts", SB_OPT_STRING_LIST, "[\"localhost\"]", 0, "Brokers.")},
    {SB_OPT("labels", SB_OPT_OBJECT, NULL, 0, "Extra labels.")},
    {SB_OPT("path", SB_OPT_TEMPLATE, "\"/data/${table:-none}\"", 0, "Output path per event.")},
    {0},
};

static int create_noop(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    *self = NULL;
    return 0;
}

static void destroy_noop(void *self) {}

static const sb_plugin plugin = {
    SB_PLUGIN_ABI,
    .name = "bigquery",
    .kind = SB_KIND_SINK,
    .version = "1.2.3",
    .description = "Write run registry rows to a BigQuery table with the streaming insert API, one row per "
                   "event, retrying transient errors.",
    .options = defs,
    .create = create_noop,
    .destroy = destroy_noop,
};

/* Parse `json` against defs; NULL + err on failure. */
static sb_options *parse(const char *json, char *err, size_t err_size)
{
    json_error_t jerr;
    json_t *given = json_loads(json, 0, &jerr);
    ck_assert_msg(given != NULL, "bad test JSON: %s", jerr.text);
    sb_options *o = sb_options_parse(defs, given, "conf.d/team.json: sinks.bq", err, err_size);
    json_decref(given);
    return o;
}

static sb_instance *instance(const char *json)
{
    char err[512] = "";
    sb_options *o = parse(json, err, sizeof err);
    ck_assert_msg(o != NULL, "parse failed: %s", err);
    return sb_instance_new("bq", &plugin, o, 0, NULL);
}

static const char *parse_error(const char *json)
{
    static char err[512];
    err[0] = '\0';
    sb_options *o = parse(json, err, sizeof err);
    ck_assert_msg(o == NULL, "%s parsed", json);
    return err;
}

START_TEST(test_defaults)
{
    sb_instance *ins = instance("{\"table\":\"t\"}");
    ck_assert_str_eq(sb_opt_string(ins, "table"), "t");
    ck_assert_str_eq(sb_opt_string(ins, "dataset"), "registry");
    ck_assert_int_eq(sb_opt_int(ins, "batch"), 100);
    ck_assert_int_eq(sb_opt_bool(ins, "dry_run"), 0);
    ck_assert_double_eq(sb_opt_double(ins, "ratio"), 0.25);
    ck_assert_int_eq(sb_opt_duration_ms(ins, "batch_linger"), 250);
    ck_assert_int_eq(sb_opt_size(ins, "max_bytes"), 1048576);
    ck_assert_uint_eq(sb_opt_list_count(ins, "hosts"), 1);
    ck_assert_str_eq(sb_opt_list_item(ins, "hosts", 0), "localhost");
    ck_assert_ptr_null(sb_opt_list_item(ins, "hosts", 1));
    ck_assert_int_eq(sb_opt_isset(ins, "labels"), 0);
    ck_assert_ptr_null(sb_opt_object(ins, "labels"));
    ck_assert_int_eq(sb_opt_isset(ins, "dataset"), 1);
    ck_assert_str_eq(sb_template_text(sb_opt_template(ins, "path")), "/data/${table:-none}");
    sb_instance_free(ins);
}
END_TEST

START_TEST(test_each_type)
{
    sb_instance *ins = instance("{\"table\":\"t\",\"dataset\":\"d\",\"batch\":-7,\"dry_run\":true,\"ratio\":3,"
                                "\"batch_linger\":\"5s\",\"max_bytes\":\"64KB\",\"hosts\":[\"a:1\",\"b:2\"],"
                                "\"labels\":{\"team\":\"x\",\"n\":[1,{\"k\":\"v\"}]},\"path\":\"gs://b/${schema}/${table}\"}");
    ck_assert_str_eq(sb_opt_string(ins, "dataset"), "d");
    ck_assert_int_eq(sb_opt_int(ins, "batch"), -7);
    ck_assert_int_eq(sb_opt_bool(ins, "dry_run"), 1);
    ck_assert_double_eq(sb_opt_double(ins, "ratio"), 3.0);
    ck_assert_int_eq(sb_opt_duration_ms(ins, "batch_linger"), 5000);
    ck_assert_int_eq(sb_opt_size(ins, "max_bytes"), 65536);
    ck_assert_uint_eq(sb_opt_list_count(ins, "hosts"), 2);
    ck_assert_str_eq(sb_opt_list_item(ins, "hosts", 1), "b:2");
    const json_t *labels = sb_opt_object(ins, "labels");
    ck_assert_str_eq(json_string_value(json_object_get(labels, "team")), "x");

    sb_event *ev = sb_event_new("e1");
    sb_event_set_string(ev, "schema", "s");
    sb_event_set_string(ev, "table", "t1");
    char err[256];
    char *out = sb_template_render(sb_opt_template(ins, "path"), ev, err, sizeof err);
    ck_assert_str_eq(out, "gs://b/s/t1");
    free(out);
    sb_event_free(ev);
    sb_instance_free(ins);
}
END_TEST

START_TEST(test_integer_durations_and_sizes)
{
    sb_instance *ins = instance("{\"table\":\"t\",\"batch_linger\":1500,\"max_bytes\":512}");
    ck_assert_int_eq(sb_opt_duration_ms(ins, "batch_linger"), 1500);
    ck_assert_int_eq(sb_opt_size(ins, "max_bytes"), 512);
    sb_instance_free(ins);
}
END_TEST

/* Every form a duration or size takes is read alike by plugin options
 * and by the config loader (both go through confval.c). */
START_TEST(test_unit_forms_match_the_config_loader)
{
    static const struct {
        const char *text;
        int is_size;
        int64_t want; /* -1: refused */
    } forms[] = {
        {"250ms", 0, 250}, {"5s", 0, 5000}, {"2m", 0, 120000}, {"1h", 0, 3600000}, {"1d", 0, 86400000},
        {"1500", 0, 1500}, {"5 S", 0, 5000}, {"3D", 0, 3 * 86400000LL}, {"1.5s", 0, -1}, {"-1s", 0, -1},
        {"5 parsecs", 0, -1}, {"", 0, -1},
        {"512", 1, 512}, {"7B", 1, 7}, {"64KB", 1, 65536}, {"64kb", 1, 65536}, {"64K", 1, 65536},
        {"64KiB", 1, 65536}, {"10MB", 1, 10485760}, {"10 MiB", 1, 10485760}, {"2G", 1, 2147483648LL},
        {"1GiB", 1, 1073741824}, {"1TB", 1, 1099511627776LL}, {"9999999999TB", 1, -1}, {"64XB", 1, -1},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        int64_t text_value = forms[i].is_size ? sb_parse_size(forms[i].text) : sb_parse_duration_ms(forms[i].text);
        ck_assert_msg(text_value == forms[i].want, "%s: %lld", forms[i].text, (long long)text_value);

        json_t *v = json_string(forms[i].text);
        int64_t cfg_value = -1;
        char msg[512] = "";
        int rc = sb_config_scaled(v, forms[i].is_size ? SB_SCALED_SIZE : SB_SCALED_DURATION, &cfg_value, msg, sizeof msg);
        ck_assert_int_eq(rc, forms[i].want < 0 ? -1 : 0);
        if (rc == 0)
            ck_assert_int_eq(cfg_value, forms[i].want);
        else
            ASSERT_HAS(msg, forms[i].is_size ? "expected a size like" : "expected a duration like");

        char json[256], err[512];
        snprintf(json, sizeof json, "{\"table\":\"t\",\"%s\":\"%s\"}", forms[i].is_size ? "max_bytes" : "batch_linger",
                 forms[i].text);
        sb_options *o = parse(json, err, sizeof err);
        if (forms[i].want < 0) {
            ck_assert_msg(o == NULL, "options accepted %s", forms[i].text);
            char want[1024];
            snprintf(want, sizeof want, "conf.d/team.json: sinks.bq.%s: %s",
                     forms[i].is_size ? "max_bytes" : "batch_linger", msg);
            ck_assert_str_eq(err, want); /* the loader's words after the same "<where>: " */
        } else {
            ck_assert_msg(o != NULL, "%s: %s", forms[i].text, err);
            sb_options_free(o);
        }
        json_decref(v);
    }
    /* integers are taken as they are; references are substituted first */
    json_t *v = json_integer(42);
    int64_t n = 0;
    char msg[512];
    ck_assert_int_eq(sb_config_scaled(v, SB_SCALED_SIZE, &n, msg, sizeof msg), 0);
    ck_assert_int_eq(n, 42);
    json_decref(v);
    setenv("SB_TEST_LINGER", "2s", 1);
    v = json_string("${env:SB_TEST_LINGER}");
    ck_assert_int_eq(sb_config_scaled(v, SB_SCALED_DURATION, &n, msg, sizeof msg), 0);
    ck_assert_int_eq(n, 2000);
    json_decref(v);
    v = json_true();
    ck_assert_int_eq(sb_config_scaled(v, SB_SCALED_DURATION, &n, msg, sizeof msg), -1);
    ck_assert_str_eq(msg, "expected a duration like \"250ms\" or \"5s\", got true");
}
END_TEST

START_TEST(test_single_string_list)
{
    sb_instance *ins = instance("{\"table\":\"t\",\"hosts\":\"kafka:9092\"}");
    ck_assert_uint_eq(sb_opt_list_count(ins, "hosts"), 1);
    ck_assert_str_eq(sb_opt_list_item(ins, "hosts", 0), "kafka:9092");
    sb_instance_free(ins);
    ins = instance("{\"table\":\"t\",\"hosts\":[]}");
    ck_assert_uint_eq(sb_opt_list_count(ins, "hosts"), 0);
    sb_instance_free(ins);
}
END_TEST

START_TEST(test_substitution_applied)
{
    setenv("SB_TEST_DS", "prod", 1);
    setenv("SB_TEST_LINGER", "2m", 1);
    sb_instance *ins = instance("{\"table\":\"${SB_TEST_DS}_t\",\"dataset\":\"${env:SB_TEST_DS}\","
                                "\"batch_linger\":\"${SB_TEST_LINGER}\",\"hosts\":[\"$${lit}\",\"${env:SB_TEST_DS}\"],"
                                "\"labels\":{\"a\":{\"b\":[\"${SB_TEST_DS}\"]}},"
                                "\"path\":\"/${env:SB_TEST_DS}/${table}/$${x}\"}");
    ck_assert_str_eq(sb_opt_string(ins, "table"), "prod_t");
    ck_assert_str_eq(sb_opt_string(ins, "dataset"), "prod");
    ck_assert_int_eq(sb_opt_duration_ms(ins, "batch_linger"), 120000);
    ck_assert_str_eq(sb_opt_list_item(ins, "hosts", 0), "${lit}");
    ck_assert_str_eq(sb_opt_list_item(ins, "hosts", 1), "prod");
    const json_t *b = json_object_get(json_object_get(sb_opt_object(ins, "labels"), "a"), "b");
    ck_assert_str_eq(json_string_value(json_array_get(b, 0)), "prod");
    /* the template keeps ${table} for run time; $${x} renders as a literal */
    const sb_template *t = sb_opt_template(ins, "path");
    ck_assert_str_eq(sb_template_text(t), "/prod/${table}/$${x}");
    sb_event *ev = sb_event_new("e1");
    sb_event_set_string(ev, "table", "t9");
    char err[256];
    char *out = sb_template_render(t, ev, err, sizeof err);
    ck_assert_str_eq(out, "/prod/t9/${x}");
    free(out);
    sb_event_free(ev);
    sb_instance_free(ins);
}
END_TEST

/* A secret with "$" in it reaches a template option as data, not syntax. */
START_TEST(test_substituted_dollar_is_literal_in_templates)
{
    setenv("SB_TEST_SECRET", "pa$$w${table}rd$", 1);
    sb_instance *ins = instance("{\"table\":\"x\",\"path\":\"Bearer ${env:SB_TEST_SECRET} ${table}\"}");
    sb_event *ev = sb_event_new("e1");
    sb_event_set_string(ev, "table", "t9");
    char err[256];
    char *out = sb_template_render(sb_opt_template(ins, "path"), ev, err, sizeof err);
    ck_assert_msg(out != NULL, "%s", err);
    ck_assert_str_eq(out, "Bearer pa$$w${table}rd$ t9");
    free(out);
    sb_event_free(ev);
    sb_instance_free(ins);
}
END_TEST

START_TEST(test_substitution_errors)
{
    unsetenv("SB_TEST_UNSET");
    ck_assert_str_eq(parse_error("{\"table\":\"${SB_TEST_UNSET}\"}"),
                     "conf.d/team.json: sinks.bq.table: environment variable \"SB_TEST_UNSET\" is not set");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"hosts\":[\"a\",\"${env:SB_TEST_UNSET}\"]}"),
               "sinks.bq.hosts[1]: environment variable \"SB_TEST_UNSET\" is not set");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"labels\":{\"x\":{\"y\":[1,\"${SB_TEST_UNSET}\"]}}}"),
               "sinks.bq.labels.x.y[1]: environment variable");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"path\":\"${env:SB_TEST_UNSET}/${table}\"}"),
               "sinks.bq.path: environment variable \"SB_TEST_UNSET\" is not set");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"dataset\":\"${file:/nonexistent/sb-secret}\"}"),
               "sinks.bq.dataset: cannot read file \"/nonexistent/sb-secret\": No such file or directory");
}
END_TEST

START_TEST(test_type_errors)
{
    ck_assert_str_eq(parse_error("{\"table\":\"t\",\"batch_linger\":true}"),
                     "conf.d/team.json: sinks.bq.batch_linger: expected a duration like \"250ms\" or \"5s\", got true");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"batch_linger\":\"5 parsecs\"}"),
               "sinks.bq.batch_linger: expected a duration like \"250ms\" or \"5s\", got \"5 parsecs\"");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"batch_linger\":-5}"), "sinks.bq.batch_linger: expected a duration");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"max_bytes\":\"64XB\"}"),
               "sinks.bq.max_bytes: expected a size like \"512\", \"64KB\" or \"10MB\", got \"64XB\"");
    ASSERT_HAS(parse_error("{\"table\":5}"), "sinks.bq.table: expected a string, got 5");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"batch\":\"10\"}"), "sinks.bq.batch: expected an integer, got \"10\"");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"batch\":1.5}"), "sinks.bq.batch: expected an integer, got 1.5");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"dry_run\":\"yes\"}"), "sinks.bq.dry_run: expected true or false");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"ratio\":\"x\"}"), "sinks.bq.ratio: expected a number, got \"x\"");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"hosts\":[\"a\",7]}"), "sinks.bq.hosts[1]: expected a string, got 7");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"hosts\":{}}"), "sinks.bq.hosts: expected a list of strings, got {}");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"labels\":[1]}"), "sinks.bq.labels: expected an object, got [1]");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"path\":1}"), "sinks.bq.path: expected a string (template), got 1");
}
END_TEST

START_TEST(test_long_value_is_cut)
{
    char err[512] = "";
    json_t *given = json_pack("{s:s, s:[s,s,s,s,s,s]}", "table", "t", "batch", "aaaaaaaaaaaa", "bbbbbbbbbbbb",
                              "cccccccccccc", "dddddddddddd", "eeeeeeeeeeee", "ffffffffffff");
    sb_options *o = sb_options_parse(defs, given, "x", err, sizeof err);
    ck_assert_ptr_null(o);
    ASSERT_HAS(err, "x.batch: expected an integer, got [\"aaaaaaaaaaaa\"");
    ASSERT_HAS(err, "...");
    ck_assert_uint_lt(strlen(err), 120);
    json_decref(given);
}
END_TEST

START_TEST(test_unknown_and_required)
{
    ck_assert_str_eq(parse_error("{\"table\":\"t\",\"batch_lingr\":\"1s\"}"),
                     "conf.d/team.json: sinks.bq.batch_lingr: unknown option (did you mean \"batch_linger\"?)");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"Dataset\":\"x\"}"), "(did you mean \"dataset\"?)");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"completely_else\":1}"),
               "sinks.bq.completely_else: unknown option (known: table, dataset, batch, dry_run, ratio, "
               "batch_linger, max_bytes, hosts, labels, path)");
    ck_assert_str_eq(parse_error("{\"dataset\":\"x\"}"),
                     "conf.d/team.json: sinks.bq.table: missing required option (string)");
    ASSERT_HAS(parse_error("[]"), "conf.d/team.json: sinks.bq: expected an object of options, got []");

    static const sb_option_def none[] = {{0}};
    char err[256];
    json_t *given = json_pack("{s:i}", "x", 1);
    ck_assert_ptr_null(sb_options_parse(none, given, "w", err, sizeof err));
    ck_assert_str_eq(err, "w.x: unknown option (this plugin takes no options)");
    json_decref(given);
    sb_options *o = sb_options_parse(NULL, NULL, "w", err, sizeof err);
    ck_assert_ptr_nonnull(o);
    sb_options_free(o);
}
END_TEST

START_TEST(test_template_syntax_error)
{
    ck_assert_str_eq(parse_error("{\"table\":\"t\",\"path\":\"/data/${table\"}"),
                     "conf.d/team.json: sinks.bq.path: invalid template \"/data/${table\": unterminated \"${\" at column 7");
    ASSERT_HAS(parse_error("{\"table\":\"t\",\"path\":\"/data/$table\"}"), "sinks.bq.path: invalid template");
}
END_TEST

START_TEST(test_bad_default_in_table)
{
    static const sb_option_def bad[] = {{SB_OPT("n", SB_OPT_INT, "ten", 0, "x")}, {0}};
    char err[256];
    ck_assert_ptr_null(sb_options_parse(bad, NULL, "sinks.x", err, sizeof err));
    ASSERT_HAS(err, "sinks.x.n: the plugin's default ten is not valid JSON");
}
END_TEST

START_TEST(test_getter_misuse)
{
    sb_instance *ins = instance("{\"table\":\"t\"}");
    ck_assert_int_eq(sb_opt_int(ins, "no_such"), 0);
    ck_assert_ptr_null(sb_opt_string(ins, "no_such"));
    ck_assert_int_eq(sb_opt_isset(ins, "no_such"), 0);
    ck_assert_int_eq(sb_opt_int(ins, "table"), 0); /* declared as a string */
    ck_assert_str_eq(sb_opt_string(ins, "path"), "/data/${table:-none}");
    sb_instance_free(ins);
}
END_TEST

/* JSON_TEMPLATE: strings at any depth are templates, "${f}" alone keeps
 * the field's JSON type, ${env:} is substituted at load, the spelling of
 * OBJECT options ("$${f}", "$$${" literal) keeps its meaning, and errors
 * name the JSON path inside the option, at load and at render. */
START_TEST(test_json_template)
{
    static const sb_option_def jdefs[] = {{SB_OPT("body", SB_OPT_JSON_TEMPLATE, NULL, 0, "A request body.")},
                                          {SB_OPT("dflt", SB_OPT_JSON_TEMPLATE, "{\"n\": 1}", 0, "Defaulted.")},
                                          {0}};
    setenv("SB_TEST_TEAM", "edw", 1);
    char err[512] = "";
    json_t *given = json_loads(
        "{\"body\": {\"args\": [\"--command\", \"${command}\", \"$${table}\", \"$$${hiveconf:d}\", \"cost $$5\"],"
        " \"n\": \"${count}\", \"obj\": \"${nested}\", \"team\": \"${env:SB_TEST_TEAM}-${schema:-none}\","
        " \"plain\": 3, \"t\": true}}", 0, NULL);
    sb_options *o = sb_options_parse(jdefs, given, "actions.dp", err, sizeof err);
    json_decref(given);
    ck_assert_msg(o != NULL, "%s", err);
    static const sb_plugin jp = {SB_PLUGIN_ABI, .name = "j", .kind = SB_KIND_ACTION, .version = "1", .description = "j",
                                 .options = jdefs, .create = create_noop, .destroy = destroy_noop};
    sb_instance *ins = sb_instance_new("dp", &jp, o, 0, NULL);
    const sb_json_template *t = sb_opt_json_template(ins, "body");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(sb_opt_json_template(ins, "dflt"));
    ck_assert_str_eq(json_string_value(json_object_get(sb_json_template_source(t), "team")), "edw-${schema:-none}");
    sb_event *ev = sb_event_new("e1");
    sb_event_set_string(ev, "command", "sh run_replicator.sh edw orders");
    sb_event_set_string(ev, "table", "orders");
    sb_event_set_int(ev, "count", 7);
    sb_event_add(ev, "nested", json_pack("{s:[i,i]}", "a", 1, 2));
    json_t *r = sb_json_template_render(t, ev, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    char *text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    ck_assert_str_eq(text, "{\"args\":[\"--command\",\"sh run_replicator.sh edw orders\",\"orders\",\"${hiveconf:d}\","
                           "\"cost $5\"],\"n\":7,\"obj\":{\"a\":[1,2]},\"plain\":3,\"t\":true,\"team\":\"edw-none\"}");
    free(text);
    json_decref(r);
    /* a missing field at render: the path inside the option */
    sb_event *bare = sb_event_new("e2");
    ck_assert_ptr_null(sb_json_template_render(t, bare, err, sizeof err));
    ASSERT_HAS(err, "args[1]");
    ASSERT_HAS(err, "command");
    sb_event_free(bare);
    sb_event_free(ev);
    sb_instance_free(ins);

    /* a bad template at load: the option's path and the one inside it */
    given = json_loads("{\"body\": {\"jobs\": {\"copy\": {\"args\": [\"ok\", \"${table\"]}}}}", 0, NULL);
    ck_assert_ptr_null(sb_options_parse(jdefs, given, "actions.dp", err, sizeof err));
    json_decref(given);
    ASSERT_HAS(err, "actions.dp.body.jobs.copy.args[1]");
    given = json_loads("{\"body\": {\"q\": \"cost $5\"}}", 0, NULL);
    ck_assert_ptr_null(sb_options_parse(jdefs, given, "actions.dp", err, sizeof err));
    json_decref(given);
    ASSERT_HAS(err, "actions.dp.body.q");
    given = json_loads("{\"body\": {\"q\": \"${env:SB_TEST_UNSET_VARIABLE}\"}}", 0, NULL);
    unsetenv("SB_TEST_UNSET_VARIABLE");
    ck_assert_ptr_null(sb_options_parse(jdefs, given, "actions.dp", err, sizeof err));
    json_decref(given);
    ASSERT_HAS(err, "actions.dp.body.q");
}
END_TEST

/* TEMPLATE_MAP keeps ${field} for run time (no environment lookup),
 * still substitutes ${env:...}, and rejects a bad template or a non-string
 * value with its path. */
START_TEST(test_template_map)
{
    static const sb_option_def mdefs[] = {{SB_OPT("attrs", SB_OPT_TEMPLATE_MAP, NULL, 0, "Attributes.")},
                                          {SB_OPT("none", SB_OPT_TEMPLATE_MAP, NULL, 0, "Unset.")},
                                          {0}};
    setenv("SB_TEST_TEAM", "edw", 1);
    char err[512] = "";
    json_t *given = json_loads("{\"attrs\":{\"origin\":\"${schema}.${table}\",\"team\":\"${env:SB_TEST_TEAM}\","
                               "\"d\":\"${inc_val:-full}\"}}", 0, NULL);
    sb_options *o = sb_options_parse(mdefs, given, "sinks.ps", err, sizeof err);
    json_decref(given);
    ck_assert_msg(o != NULL, "%s", err);
    static const sb_plugin mp = {SB_PLUGIN_ABI, .name = "m", .kind = SB_KIND_SINK, .version = "1", .description = "m",
                                 .options = mdefs, .create = create_noop, .destroy = destroy_noop};
    sb_instance *ins = sb_instance_new("ps", &mp, o, 0, NULL);
    ck_assert_uint_eq(sb_opt_template_map_count(ins, "attrs"), 3);
    ck_assert_uint_eq(sb_opt_template_map_count(ins, "none"), 0);
    ck_assert_ptr_null(sb_opt_template_map_item(ins, "attrs", 3, NULL));
    sb_event *ev = sb_event_new("e1");
    sb_event_set_string(ev, "schema", "s");
    sb_event_set_string(ev, "table", "t");
    const char *want[][2] = {{"origin", "s.t"}, {"team", "edw"}, {"d", "full"}};
    for (size_t i = 0; i < 3; i++) {
        const char *key = NULL;
        const sb_template *t = sb_opt_template_map_item(ins, "attrs", i, &key);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(key, want[i][0]);
        char *out = sb_template_render(t, ev, err, sizeof err);
        ck_assert_str_eq(out, want[i][1]);
        free(out);
    }
    ck_assert_str_eq(json_string_value(json_object_get(sb_opt_object(ins, "attrs"), "origin")), "${schema}.${table}");
    sb_event_free(ev);
    sb_instance_free(ins);

    given = json_loads("{\"attrs\":{\"a\":\"${table\"}}", 0, NULL);
    ck_assert_ptr_null(sb_options_parse(mdefs, given, "sinks.ps", err, sizeof err));
    json_decref(given);
    ASSERT_HAS(err, "sinks.ps.attrs.a: invalid template");
    given = json_loads("{\"attrs\":{\"a\":5}}", 0, NULL);
    ck_assert_ptr_null(sb_options_parse(mdefs, given, "sinks.ps", err, sizeof err));
    json_decref(given);
    ASSERT_HAS(err, "sinks.ps.attrs.a: expected a string (template)");
    ck_assert_str_eq(sb_option_type_name(SB_OPT_TEMPLATE_MAP), "template map");
}
END_TEST

START_TEST(test_type_names)
{
    ck_assert_str_eq(sb_option_type_name(SB_OPT_DURATION), "duration");
    ck_assert_str_eq(sb_option_type_name(SB_OPT_STRING_LIST), "string list");
    ck_assert_str_eq(sb_option_type_name((sb_option_type)99), "?");
}
END_TEST

START_TEST(test_doc_printer)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    sb_options_print_doc(out, &plugin);
    fclose(out);
    ASSERT_HAS(text, "bigquery (sink plugin, version 1.2.3)\n  Write run registry rows");
    ASSERT_HAS(text, "OPTION");
    ASSERT_HAS(text, "DESCRIPTION");
    ASSERT_HAS(text, "table         string       required");
    ASSERT_HAS(text, "batch_linger  duration     \"250ms\"");
    ASSERT_HAS(text, "hosts         string list  [\"localhost\"]");
    ASSERT_HAS(text, "labels        object       -");
    /* wrapped descriptions continue in the description column */
    ASSERT_HAS(text, "How long to wait for a fuller\n                                            batch.\n");
    /* the long default gets its own line and the description follows, aligned */
    ASSERT_HAS(text, "\"/data/${table:-none}\"\n");
    for (char *line = text; *line;) {
        size_t l = strcspn(line, "\n");
        ck_assert_msg(l <= 78, "line too long (%zu): %.*s", l, (int)l, line);
        line += l + (line[l] ? 1 : 0);
    }
    free(text);

    static const sb_plugin bare = {SB_PLUGIN_ABI, .name = "stdout", .kind = SB_KIND_SOURCE, .version = "0.1",
                                   .description = "Read events from standard input."};
    out = open_memstream(&text, &len);
    sb_options_print_doc(out, &bare);
    fclose(out);
    ck_assert_str_eq(text, "stdout (source plugin, version 0.1)\n  Read events from standard input.\n\nOptions: none.\n");
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_each_type);
    tcase_add_test(tc, test_integer_durations_and_sizes);
    tcase_add_test(tc, test_unit_forms_match_the_config_loader);
    tcase_add_test(tc, test_single_string_list);
    tcase_add_test(tc, test_substitution_applied);
    tcase_add_test(tc, test_substituted_dollar_is_literal_in_templates);
    tcase_add_test(tc, test_substitution_errors);
    tcase_add_test(tc, test_type_errors);
    tcase_add_test(tc, test_long_value_is_cut);
    tcase_add_test(tc, test_unknown_and_required);
    tcase_add_test(tc, test_template_syntax_error);
    tcase_add_test(tc, test_bad_default_in_table);
    tcase_add_test(tc, test_getter_misuse);
    tcase_add_test(tc, test_template_map);
    tcase_add_test(tc, test_json_template);
    tcase_add_test(tc, test_type_names);
    tcase_add_test(tc, test_doc_printer);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
