/*
 * filewatch - source: tail Run Replicator logs (globs, rotation, inotify
 * or polling) and emit one event per finished run.
 *
 * This file is the plugin glue: options, the event each format builds,
 * batching and the checkpoint. Files, rotation and positions are in
 * tailer.c; what a run looks like in a log is in rrlog.c.
 *
 * Formats:
 *   runreplicator  one event per finished run (rrlog.h), id
 *                  filewatch:<dev>:<ino>:<offset of the run's first line>
 *   command        each line is the seed's message (the command that ran)
 *   json           each line is a JSON object of fields
 *
 * The checkpoint holds, per file, the first line of a run still open (or
 * the next line), so a run half-written at shutdown is re-read whole at
 * the next start, and runs already emitted sit before it and are not
 * sent again.
 */
#include <syncbridge/syncbridge.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "rrlog.h"
#include "runreplicator.h"
#include "tailer.h"

#define FW_BATCH 512

typedef enum fw_format { FMT_RR, FMT_COMMAND, FMT_JSON } fw_format;

typedef struct fw {
    sb_instance *ins;
    fw_format format;
    const char *id_field;
    const char *script;
    char host[256];
    rrlog_config *rrcfg;
    fw_tailer_conf tc;
    const char **paths, **exclude;
    /* during run() */
    fw_tailer *t;
    sb_source_ctx *ctx;
    sb_event *evs[FW_BATCH];
    size_t n;
    char *last_cp;
} fw;

typedef struct fw_fstate { /* per tracked file */
    fw *self;
    fw_file *f;
    rrlog *rr;
} fw_fstate;

/* Pattern options come after the fixed ones; their defaults are filled in
 * from rrlog_pattern_default when the plugin is loaded, so the regexes
 * live in one place. */
#define FIXED_OPTIONS 12
static sb_option_def options[FIXED_OPTIONS + RRP_COUNT + 1] = {
    {SB_OPT("paths", SB_OPT_STRING_LIST, NULL, 1,
     "Glob patterns of the log files to follow, e.g. [\"/var/log/cerebro/*.log\"]. New files that match are picked up "
     "while running.")},
    {SB_OPT("exclude", SB_OPT_STRING_LIST, "[]", 0,
     "Globs of paths never to read, e.g. rotated copies (\"*.gz\", \"*.1\") when the paths would match them.")},
    {SB_OPT("format", SB_OPT_STRING, "\"runreplicator\"", 0,
     "\"runreplicator\": one event per finished run found in the log lines. \"command\": each line is the command "
     "that ran (the seed's Pub/Sub message). \"json\": each line is a JSON object of fields.")},
    {SB_OPT("inotify", SB_OPT_BOOL, "true", 0,
     "Wake on inotify events. Set false on NFS and other file systems without inotify: then only poll_interval "
     "applies.")},
    {SB_OPT("poll_interval", SB_OPT_DURATION, "\"1s\"", 0,
     "How often to look for new files and data without waiting for inotify (with inotify: a safety net).")},
    {SB_OPT("rotate_wait", SB_OPT_DURATION, "\"5s\"", 0,
     "A file renamed away or deleted is still read until it has had no new data for this long, then closed.")},
    {SB_OPT("max_line", SB_OPT_SIZE, "\"1MB\"", 0, "Longer lines are reported with file:offset and skipped.")},
    {SB_OPT("start_at", SB_OPT_STRING, "\"beginning\"", 0,
     "Files found at the very first start (no checkpoint yet): \"beginning\" reads them whole, \"end\" only what is "
     "appended. Files found later are always read whole.")},
    {SB_OPT("host", SB_OPT_STRING, NULL, 0, "Value of the host field (default: this machine's host name).")},
    {SB_OPT("id_field", SB_OPT_STRING, NULL, 0,
     "json format: take the event id from this field when present (else filewatch:<dev>:<inode>:<offset>).")},
    {SB_OPT("script_name", SB_OPT_STRING, "\"run_replicator.sh\"", 0,
     "The script whose invocations are runs (command format, and the invocation line in logs).")},
    {SB_OPT("emit_failed", SB_OPT_BOOL, "true", 0, "runreplicator format: emit failed runs too (status \"failed\").")},
};

static const char *const pattern_help[RRP_COUNT] = {
    [RRP_TIMESTAMP] = "Leading timestamp taken off each line; group 1 \"YYYY-MM-DD HH:MM:SS\" in local time "
                      "gives started_at/finished_at (else the time the line was read). \"\" disables.",
    [RRP_COMMAND] = "The invocation line (also as a shell trace); group 1 is parsed as the command. \"\" disables.",
    [RRP_IGNORE] = "Lines that never count: shell traces (+), # separators, blank lines. \"\" disables.",
    [RRP_SCHEMA] = "Schema line; group 1 is the schema.",
    [RRP_TABLE] = "Table line; group 1 is the table.",
    [RRP_DATE] = "Date line; group 1 (yyyymmdd or yyyy-mm-dd) is run_date.",
    [RRP_START] = "Import start line; groups 1 and 2 are schema and table.",
    [RRP_TD_COUNT] = "Teradata count; group 1 is td_count.",
    [RRP_HIVE_COUNT] = "Hive count; group 1 is hive_count.",
    [RRP_SUCCESS] = "A whole line that finishes the run as succeeded.",
    [RRP_FAILURE] = "A whole line that finishes the run as failed (the line is the reason).",
    [RRP_RETCODE] = "Exit code line; group 1: non-zero finishes the run as failed, zero finishes it when the file "
                    "ends.",
};

__attribute__((constructor)) static void fill_pattern_options(void)
{
    for (int i = 0; i < RRP_COUNT; i++) {
        json_t *s = json_string(rrlog_pattern_default[i]);
        options[FIXED_OPTIONS + i] = (sb_option_def){SB_OPT(rrlog_pattern_option[i], SB_OPT_STRING,
                                                            json_dumps(s, JSON_ENCODE_ANY), 0, pattern_help[i])};
        json_decref(s);
    }
}

__attribute__((destructor)) static void free_pattern_options(void)
{
    for (int i = 0; i < RRP_COUNT; i++)
        free((char *)options[FIXED_OPTIONS + i].default_value);
}

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static const char **list_option(sb_instance *ins, const char *name, size_t *n)
{
    *n = sb_opt_list_count(ins, name);
    const char **v = calloc(*n + 1, sizeof *v);
    for (size_t i = 0; v && i < *n; i++)
        v[i] = sb_opt_list_item(ins, name, i);
    return v;
}

static void fw_destroy(void *p)
{
    fw *self = p;
    if (!self)
        return;
    rrlog_config_free(self->rrcfg);
    free(self->paths);
    free(self->exclude);
    free(self);
}

static int fw_create(sb_instance *ins, void **out, char *errstr, size_t errstr_size)
{
    fw *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    self->ins = ins;
    const char *format = sb_opt_string(ins, "format");
    if (strcmp(format, "runreplicator") == 0)
        self->format = FMT_RR;
    else if (strcmp(format, "command") == 0)
        self->format = FMT_COMMAND;
    else if (strcmp(format, "json") == 0)
        self->format = FMT_JSON;
    else {
        snprintf(errstr, errstr_size, "format must be \"runreplicator\", \"command\" or \"json\", not \"%s\"", format);
        goto fail;
    }
    const char *start_at = sb_opt_string(ins, "start_at");
    if (strcmp(start_at, "beginning") != 0 && strcmp(start_at, "end") != 0) {
        snprintf(errstr, errstr_size, "start_at must be \"beginning\" or \"end\", not \"%s\"", start_at);
        goto fail;
    }
    self->script = sb_opt_string(ins, "script_name");
    self->id_field = sb_opt_string(ins, "id_field");
    if (sb_opt_isset(ins, "host"))
        snprintf(self->host, sizeof self->host, "%s", sb_opt_string(ins, "host"));
    else if (gethostname(self->host, sizeof self->host - 1) != 0)
        snprintf(self->host, sizeof self->host, "unknown");
    const char *pats[RRP_COUNT];
    for (int i = 0; i < RRP_COUNT; i++)
        pats[i] = sb_opt_string(ins, rrlog_pattern_option[i]);
    if (!(self->rrcfg = rrlog_config_new(pats, self->script, errstr, errstr_size)))
        goto fail;
    self->paths = list_option(ins, "paths", &self->tc.npaths);
    self->exclude = list_option(ins, "exclude", &self->tc.nexclude);
    if (!self->paths || !self->exclude) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (self->tc.npaths == 0) {
        snprintf(errstr, errstr_size, "paths must name at least one glob");
        goto fail;
    }
    self->tc.ins = ins;
    self->tc.paths = self->paths;
    self->tc.exclude = self->exclude;
    self->tc.use_inotify = sb_opt_bool(ins, "inotify");
    self->tc.poll_ms = sb_opt_duration_ms(ins, "poll_interval");
    self->tc.rotate_wait_ms = sb_opt_duration_ms(ins, "rotate_wait");
    self->tc.max_line = (size_t)sb_opt_size(ins, "max_line");
    self->tc.start_at_end = strcmp(start_at, "end") == 0;
    if (self->tc.poll_ms < 1)
        self->tc.poll_ms = 1;
    *out = self;
    return 0;
fail:
    fw_destroy(self);
    return -1;
}

/* Hand the batch and the positions behind it (`cp`, taken over; NULL =
 * the current positions) to the core. */
static int emit_with(fw *self, int force_checkpoint, char *cp)
{
    if (!cp)
        cp = fw_tailer_checkpoint(self->t);
    if (self->n == 0 && !force_checkpoint && cp && self->last_cp && strcmp(cp, self->last_cp) == 0) {
        free(cp);
        return 0;
    }
    int rc = sb_source_emit_async(self->ctx, self->evs, self->n, cp);
    self->n = 0;
    free(self->last_cp);
    self->last_cp = cp;
    return rc;
}

static int emit(fw *self, int force_checkpoint)
{
    return emit_with(self, force_checkpoint, NULL);
}

/* ev NULL means the event could not be built (out of memory): fail, so that
 * run() is run again from the last checkpoint instead of moving past it. */
static int push(fw *self, sb_event *ev)
{
    if (!ev) {
        sb_log(self->ins, SB_LOG_ERROR, "out of memory building an event; reading again from the checkpoint");
        return -1;
    }
    self->evs[self->n++] = ev;
    return self->n == FW_BATCH ? emit(self, 0) : 0;
}

static void on_report(void *ctx, int level, int64_t off, const char *msg)
{
    fw_fstate *fs = ctx;
    sb_log(fs->self->ins, (sb_log_level)level, "%s:%" PRId64 ": %s", fw_file_path(fs->f), off, msg);
}

/* filewatch:<dev>:<ino>:<offset>:<content hash>. The hash (of the run's
 * lines, or of the line) keeps apart what a truncated file or a reused
 * inode later holds at the same offset; a re-read gives the same id. */
static void event_id(const fw_file *f, int64_t off, uint64_t hash, char *buf, size_t n)
{
    snprintf(buf, n, "filewatch:%ju:%ju:%" PRId64 ":%016" PRIx64, (uintmax_t)fw_file_dev(f),
             (uintmax_t)fw_file_ino(f), off, hash);
}

static uint64_t line_hash(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* What tells one execution of a run apart in the logs (rr_identity): the
 * file and the offset of the run's first line, or of the command line. */
static void identity_extra(const fw_file *f, int64_t off, char *buf, size_t n)
{
    snprintf(buf, n, "%s|%ju|%" PRId64, fw_file_path(f), (uintmax_t)fw_file_ino(f), off);
}

/* Fields every event from a log carries besides what the parser found. */
static void add_common(fw *self, fw_file *f, json_t *fields)
{
    json_object_set_new(fields, "host", json_string(self->host));
    json_object_set_new(fields, "log_file", json_string(fw_file_path(f)));
}

static int emit_run(fw *self, fw_file *f, rrlog_run *run)
{
    if (!run->fields) /* the parser ran out of memory: the run is read again */
        return push(self, NULL);
    char id[128], extra[4200];
    event_id(f, run->first_off, run->content_hash, id, sizeof id);
    add_common(self, f, run->fields);
    identity_extra(f, run->first_off, extra, sizeof extra);
    if (rr_set_run_id(&run->cmd, extra, run->fields) != 0) {
        json_decref(run->fields);
        return push(self, NULL);
    }
    if (!sb_opt_bool(self->ins, "emit_failed") &&
        strcmp(json_string_value(json_object_get(run->fields, "status")), "failed") == 0) {
        json_decref(run->fields);
        return 0;
    }
    if (sb_log_enabled(SB_LOG_DEBUG))
        sb_log(self->ins, SB_LOG_DEBUG, "%s:%" PRId64 ": run %s.%s %s", fw_file_path(f), run->first_off,
               run->cmd.schema, run->cmd.table, json_string_value(json_object_get(run->fields, "status")));
    return push(self, sb_event_new_with_fields(id, run->fields));
}

static int h_open(void *ctx, fw_file *f)
{
    fw *self = ctx;
    fw_fstate *fs = calloc(1, sizeof *fs);
    if (fs && self->format == FMT_RR && !(fs->rr = rrlog_new(self->rrcfg, on_report, fs))) {
        free(fs);
        fs = NULL;
    }
    if (!fs) { /* untracked lines would be consumed unparsed: fail instead */
        sb_log(self->ins, SB_LOG_ERROR, "%s: out of memory for its parser state", fw_file_path(f));
        return -1;
    }
    fs->self = self;
    fs->f = f;
    *fw_file_user(f) = fs;
    return 0;
}

static void h_close(void *ctx, fw_file *f)
{
    fw_fstate *fs = *fw_file_user(f);
    if (fs) {
        rrlog_free(fs->rr);
        free(fs);
    }
}

static void h_reset(void *ctx, fw_file *f)
{
    fw_fstate *fs = *fw_file_user(f);
    int64_t first;
    if (fs && fs->rr && rrlog_open_run(fs->rr, &first)) {
        sb_log(fs->self->ins, SB_LOG_WARN, "%s:%" PRId64 ": the run that started here was truncated away; dropped",
               fw_file_path(f), first);
        rrlog_reset(fs->rr);
    }
}

static int64_t h_resume(void *ctx, fw_file *f, int64_t next)
{
    fw_fstate *fs = *fw_file_user(f);
    int64_t first;
    if (fs && fs->rr && rrlog_open_run(fs->rr, &first) && first < next)
        return first;
    return next;
}

static int h_line(void *ctx, fw_file *f, const char *line, size_t len, int64_t off)
{
    fw *self = ctx;
    fw_fstate *fs = *fw_file_user(f);
    char id[128], err[512];
    if (self->format == FMT_RR) {
        rrlog_run run;
        if (fs && fs->rr && rrlog_line(fs->rr, line, off, now_us(), &run))
            return emit_run(self, f, &run);
        return 0;
    }
    event_id(f, off, line_hash(line, len), id, sizeof id);
    if (self->format == FMT_JSON) {
        sb_event *ev = sb_event_new_json(id, self->id_field, line, len, err, sizeof err);
        if (!ev && errno == ENOMEM) /* the line is fine: read it again rather than skip it */
            return push(self, NULL);
        if (!ev) {
            sb_log(self->ins, SB_LOG_WARN, "%s:%" PRId64 ": line rejected: %s", fw_file_path(f), off, err);
            return 0;
        }
        return push(self, ev);
    }
    if (len == 0)
        return 0;
    char extra[4200];
    identity_extra(f, off, extra, sizeof extra);
    json_t *fields = json_object();
    int rc = fields ? rr_command_fields(line, self->script, extra, fields, NULL, err, sizeof err) : RR_NOMEM;
    if (rc != 0) {
        json_decref(fields);
        if (rc == RR_NOMEM) /* the line is fine: read it again rather than skip it */
            return push(self, NULL);
        sb_log(self->ins, SB_LOG_WARN, "%s:%" PRId64 ": command rejected: %s", fw_file_path(f), off, err);
        return 0;
    }
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_set_new(fields, "finished_at", json_string(ts));
    add_common(self, f, fields);
    return push(self, sb_event_new_with_fields(id, fields));
}

static int h_end(void *ctx, fw_file *f)
{
    fw *self = ctx;
    fw_fstate *fs = *fw_file_user(f);
    rrlog_run run;
    if (fs && fs->rr && rrlog_end(fs->rr, now_us(), &run))
        return emit_run(self, f, &run);
    return 0;
}

static int fw_run(void *p, sb_source_ctx *ctx)
{
    fw *self = p;
    char err[256];
    if (sb_source_flush(ctx) != 0) /* the checkpoint must be the committed one */
        return -1;
    fw_handler h = {.ctx = self, .open = h_open, .line = h_line, .end = h_end,
                    .reset = h_reset, .close = h_close, .resume = h_resume};
    self->t = fw_tailer_new(&self->tc, &h, err, sizeof err);
    if (!self->t) {
        sb_log(self->ins, SB_LOG_ERROR, "%s", err);
        return -1;
    }
    self->ctx = ctx;
    self->n = 0;
    fw_tailer_restore(self->t, sb_source_checkpoint(ctx));
    int rc = 0, once = sb_instance_once(self->ins);
    while (!sb_source_stopping(ctx)) {
        if (fw_tailer_cycle(self->t) != 0 || emit(self, 0) != 0) {
            rc = -1;
            break;
        }
        if (once) {
            /* Runs the end of input finishes go out, but the checkpoint stays
             * where it was before: a run still being written, or a last line
             * without its newline, is read again by the next start (a run
             * sent now is then a duplicate the ledger drops). */
            char *cp = fw_tailer_checkpoint(self->t);
            if (fw_tailer_finish(self->t) != 0 || emit_with(self, 1, cp) != 0 || sb_source_flush(ctx) != 0)
                rc = -1;
            break;
        }
        if (fw_tailer_wait(self->t, ctx))
            break;
    }
    for (size_t i = 0; i < self->n; i++)
        sb_event_free(self->evs[i]);
    self->n = 0;
    fw_tailer_free(self->t);
    self->t = NULL;
    free(self->last_cp);
    self->last_cp = NULL;
    return sb_source_stopping(ctx) ? 0 : rc;
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "filewatch",
    .kind = SB_KIND_SOURCE,
    .version = "1.0",
    .description = "Tail Run Replicator logs (globs, rotation, inotify or polling): one event per finished run",
    .options = options,
    .create = fw_create,
    .run = fw_run,
    .destroy = fw_destroy,
};
