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
 *   command        each line is the command that ran (the message the GCP side consumes)
 *   json           each line is a JSON object of fields
 *
 * The checkpoint holds, per file, the first line of a run still open (or
 * the next line), so a run half-written at shutdown is re-read whole at
 * the next start, and runs already emitted sit before it and are not
 * sent again.
 */
#include <syncbridge/syncbridge.h>

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <libgen.h>
#include <malloc.h>
#include <pthread.h>
#include <pwd.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "rrlog.h"
#include "runreplicator.h"
#include "tailer.h"

#define FW_BATCH 512
/* A checkpoint names every file: at most one a second, and one per 10 s
 * per 100,000 files followed (building and committing one costs about as
 * much as reading a few hundred small files). */
#define FW_CHECKPOINT_MS 1000
#define FW_CHECKPOINT_MS_PER_FILE 0.1

#define FW_NMETRICS 7

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
    int has_file_time;
    regex_t file_time;
    /* during run() */
    fw_tailer *t;
    sb_source_ctx *ctx;
    sb_event *evs[FW_BATCH];
    size_t n;
    int64_t last_cp_ms;
    /* One parser state kept for the next file: a state is about 1.3 KB, and
     * malloc serves a block that size by first consolidating its small free
     * blocks, which cost the source thread a tenth of its time when every
     * small log took and gave back a state of its own. */
    struct fw_fstate *spare;
    fw_tailer_stats stats; /* the tailer's counters at the last metrics_update() */
    sb_metric *metric[FW_NMETRICS];
} fw;

typedef struct fw_fstate { /* per file, only while a run is open in it (100,000 files) */
    struct fw *self;
    fw_file *f;
    rrlog *rr;
} fw_fstate;

/* Pattern options come after the fixed ones; their defaults are filled in
 * from rrlog_pattern_default when the plugin is loaded, so the regexes
 * live in one place. */
static const char *const formats[] = {[FMT_RR] = "runreplicator", [FMT_COMMAND] = "command", [FMT_JSON] = "json",
                                      NULL};
static const char *const start_ats[] = {"beginning", "end", NULL};

/* The options the core checks and fills in (ABI 2 table). */
typedef struct fw_conf {
    int format; /* fw_format */
    int start_at_end;
    int64_t fold_width;
    int64_t max_open;
} fw_conf;

#define FIXED_OPTIONS 15
static sb_option_def options[FIXED_OPTIONS + RRP_COUNT + 1] = {
    {SB_OPT("paths", SB_OPT_STRING_LIST, NULL, 1,
     "Glob patterns of the log files to follow, e.g. [\"/var/log/cerebro/*.log\"]. New files that match are picked up "
     "while running.")},
    {SB_OPT("exclude", SB_OPT_STRING_LIST, "[]", 0,
     "Globs of files never to read, e.g. rotated copies (\"*.gz\", \"*.1\") when the paths would match them: "
     "a glob without a slash is matched against the file's name, one with a slash against its whole path.")},
    {SB_OPT("format", SB_OPT_STRING, "\"runreplicator\"", 0,
            "\"runreplicator\": one event per finished run found in the log lines. \"command\": each line is the "
            "command that ran (the message the GCP side consumes). \"json\": each line is a JSON object of fields."),
     SB_OPT_CHOICES(formats), SB_OPT_BIND(fw_conf, format)},
    {SB_OPT("inotify", SB_OPT_BOOL, "true", 0,
     "Wake on inotify events. Set false on NFS and other file systems without inotify: then only poll_interval "
     "applies.")},
    {SB_OPT("poll_interval", SB_OPT_DURATION, "\"1s\"", 0,
     "How often to look for new files and data without waiting for inotify (with inotify: a safety net).")},
    {SB_OPT("rotate_wait", SB_OPT_DURATION, "\"5s\"", 0,
     "A file renamed away or deleted is still read until it has had no new data for this long, then closed.")},
    {SB_OPT("max_line", SB_OPT_SIZE, "\"1MB\"", 0, "Longer lines are reported with file:offset and skipped.")},
    {SB_OPT("start_at", SB_OPT_STRING, "\"beginning\"", 0,
            "Files found at the very first start (no checkpoint yet): \"beginning\" reads them whole, \"end\" only "
            "what is appended. Files found later are always read whole."),
     SB_OPT_CHOICES(start_ats), SB_OPT_BIND(fw_conf, start_at_end)},
    {SB_OPT("host", SB_OPT_STRING, NULL, 0, "Value of the host field (default: this machine's host name).")},
    {SB_OPT("id_field", SB_OPT_STRING, NULL, 0,
     "json format: take the event id from this field when present (else filewatch:<dev>:<inode>:<offset>).")},
    {SB_OPT("script_name", SB_OPT_STRING, "\"run_replicator.sh\"", 0,
     "The script whose invocations are runs (command format, and the invocation line in logs).")},
    {SB_OPT("emit_failed", SB_OPT_BOOL, "true", 0, "runreplicator format: emit failed runs too (status \"failed\").")},
    {SB_OPT("fold_width", SB_OPT_INT, "250", 0,
            "runreplicator format: a line exactly this long was folded by the terminal that captured the log and is "
            "joined with the next one (0: never)."),
     SB_OPT_RANGE_BIND(0, 1000000, fw_conf, fold_width)},
    {SB_OPT("file_time_pattern", SB_OPT_STRING, "\"\"", 0,
     "runreplicator format: a regex on the file's base name whose group 1 holds its start time as 14 digits "
     "YYYYMMDDHHMMSS in local time (other characters in the group are skipped), e.g. \"_([0-9]{8}_[0-9]{6})\\\\.log$\". "
     "Used for started_at (and time_source \"file_name\") when no line of the run carries a time; the file's "
     "mtime is then finished_at. \"\": no such pattern.")},
    {SB_OPT("max_open", SB_OPT_INT, "0", 0,
     "Most files kept open at once. A file read to its end is closed when more are open (or when it has been "
     "quiet for rotate_wait), and reopened by path, with its inode and fingerprint checked, when it grows. 0: a "
     "quarter of the open-file limit (ulimit -n)."), SB_OPT_RANGE_BIND(0, 1000000, fw_conf, max_open)},
};

static const char *const pattern_help[RRP_COUNT] = {
    [RRP_TIMESTAMP] = "Leading timestamp taken off each line; group 1 \"YYYY-MM-DD HH:MM:SS\" in local time "
                      "gives started_at/finished_at. \"\" disables.",
    [RRP_LOGTIME] = "A timestamp anywhere in a line of the run (log4j job output); group 1 as for timestamp_pattern. "
                    "\"\" disables.",
    [RRP_COMMAND] = "The invocation line, also inside a wrapper or as a shell trace; group 1 is parsed as the "
                    "command and kept as logged. \"\" disables.",
    [RRP_IGNORE] = "Lines that never count: shell traces (+), # separators, blank lines. \"\" disables.",
    [RRP_SCHEMA] = "Schema header line; group 1 is the schema.",
    [RRP_TABLE] = "Table header line; group 1 is the table.",
    [RRP_INC_VAL] = "Header line with the inc_val the script picked; group 1. \"\" disables.",
    [RRP_FULL_REFRESH] = "Header line of a full refresh. \"\" disables.",
    [RRP_OFFSET_DAYS] = "Header line with the number of dates: its last group when it matched, else 1. \"\" "
                        "disables.",
    [RRP_DATE] = "First line of a date block; group 1 (yyyymmdd or yyyy-mm-dd) is the date.",
    [RRP_START] = "Import start line; groups 1 and 2 are schema and table.",
    [RRP_CONTEXT] = "The echoed zombie_runner command; group 1 is inc_key (from --context), used when the "
                    "invocation was not logged. \"\" disables.",
    [RRP_TD_COUNT] = "Teradata count of a date; the last group.",
    [RRP_HIVE_COUNT] = "Hive count of a date; the last group.",
    [RRP_FOUND_ERROR] = "The job saw a real error: the date's failure has this reason. \"\" disables.",
    [RRP_DATE_OK] = "A whole line: the date's counts matched (a failure line may still follow).",
    [RRP_DATE_FAIL] = "A whole line: the date failed and the script stops (the line is the reason).",
    [RRP_RETCODE] = "The wrapper's exit code; group 1: non-zero fails the run. \"\" disables.",
    [RRP_END_OK] = "The wrapper's last line of a run that went well. \"\" disables.",
    [RRP_END_FAIL] = "The wrapper's last line of a run that failed. \"\" disables.",
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
    for (size_t i = 0; i < FW_NMETRICS; i++)
        sb_metric_free(self->metric[i]);
    if (self->has_file_time)
        regfree(&self->file_time);
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
    const fw_conf *c = sb_instance_config(ins); /* choices and ranges checked by the core */
    self->format = (fw_format)c->format;
    self->script = sb_opt_string(ins, "script_name");
    self->id_field = sb_opt_string(ins, "id_field");
    if (sb_opt_isset(ins, "host"))
        snprintf(self->host, sizeof self->host, "%s", sb_opt_string(ins, "host"));
    else if (gethostname(self->host, sizeof self->host - 1) != 0)
        snprintf(self->host, sizeof self->host, "unknown");
    const char *pats[RRP_COUNT];
    for (int i = 0; i < RRP_COUNT; i++)
        pats[i] = sb_opt_string(ins, rrlog_pattern_option[i]);
    int64_t fold = c->fold_width;
    self->tc.max_open = (size_t)c->max_open;
    const char *ftp = sb_opt_string(ins, "file_time_pattern");
    if (ftp && *ftp) {
        int rc = regcomp(&self->file_time, ftp, REG_EXTENDED);
        if (rc != 0 || self->file_time.re_nsub < 1) {
            char msg[256] = "needs a capture group";
            if (rc != 0)
                regerror(rc, &self->file_time, msg, sizeof msg);
            else
                regfree(&self->file_time);
            snprintf(errstr, errstr_size, "file_time_pattern \"%s\": %s", ftp, msg);
            goto fail;
        }
        self->has_file_time = 1;
    }
    if (!(self->rrcfg = rrlog_config_new(pats, self->script, (size_t)fold, errstr, errstr_size)))
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
    self->tc.start_at_end = c->start_at_end;
    if (self->tc.poll_ms < 1)
        self->tc.poll_ms = 1;
    *out = self;
    return 0;
fail:
    fw_destroy(self);
    return -1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Hand the batch to the core, with the positions behind it when they
 * changed and the last were sent long enough ago (a checkpoint names every
 * file: a directory of 100,000 files must not write it per batch), or when
 * `force`. `cp` (taken over) is the checkpoint to send, NULL = the current
 * positions; `positions` 0 sends none (the --once end sends them next).
 * Runs sent before the checkpoint that covers them are read
 * again after a crash and recognised by their ids. */
static int emit_with(fw *self, int force, char *cp, int positions)
{
    int64_t now = mono_ms();
    int64_t interval = FW_CHECKPOINT_MS + (int64_t)(FW_CHECKPOINT_MS_PER_FILE * (double)self->stats.files);
    if (!cp && positions && (force || (fw_tailer_dirty(self->t) && now - self->last_cp_ms >= interval))) {
        if (!(cp = fw_tailer_checkpoint(self->t))) {
            sb_log(self->ins, SB_LOG_ERROR, "out of memory building the checkpoint");
            return -1;
        }
    }
    if (!cp && self->n == 0)
        return 0;
    int rc = sb_source_emit_async(self->ctx, self->evs, self->n, cp);
    self->n = 0;
    if (cp)
        self->last_cp_ms = now;
    free(cp);
    return rc;
}

static int emit(fw *self, int force)
{
    return emit_with(self, force, NULL, 1);
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
    if (self->n < FW_BATCH)
        return 0;
    int rc = sb_source_emit_async(self->ctx, self->evs, self->n, NULL); /* positions: at the end of the cycle */
    self->n = 0;
    return rc;
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

static void iso8601(int64_t secs, char out[32])
{
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The start time in the file's name (file_time_pattern): the first 14
 * digits of group 1 as YYYYMMDDHHMMSS in local time. 0, or -1. */
static int name_time(fw *self, const char *path, int64_t *secs)
{
    regmatch_t m[2];
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!self->has_file_time || regexec(&self->file_time, base, 2, m, 0) != 0 || m[1].rm_so < 0)
        return -1;
    char d[15];
    size_t n = 0;
    for (regoff_t i = m[1].rm_so; i < m[1].rm_eo && n < 14; i++)
        if (base[i] >= '0' && base[i] <= '9')
            d[n++] = base[i];
    if (n != 14)
        return -1;
    d[14] = '\0';
    struct tm tm = {0};
    if (sscanf(d, "%4d%2d%2d%2d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == (time_t)-1)
        return -1;
    *secs = (int64_t)t;
    return 0;
}

/* started_at/finished_at of a run none of whose lines carried a time:
 * the file's name, else its mtime, else now. */
static int set_times(fw *self, fw_file *f, json_t *fields)
{
    char a[32], b[32];
    int64_t start, mtime = fw_file_mtime(f);
    const char *source;
    if (name_time(self, fw_file_path(f), &start) == 0) {
        source = "file_name";
        iso8601(start, a);
        iso8601(mtime > 0 ? mtime : start, b);
    } else if (mtime > 0) {
        source = "mtime";
        iso8601(mtime, a);
        memcpy(b, a, sizeof b);
    } else {
        source = "read_time";
        iso8601((int64_t)time(NULL), a);
        memcpy(b, a, sizeof b);
    }
    return json_object_set_new(fields, "started_at", json_string(a)) |
           json_object_set_new(fields, "finished_at", json_string(b)) |
           json_object_set_new(fields, "time_source", json_string(source));
}

static int emit_run(fw *self, fw_file *f, rrlog_run *run)
{
    if (!run->fields) /* the parser ran out of memory: the run is read again */
        return push(self, NULL);
    if (!run->has_times && set_times(self, f, run->fields) != 0) {
        json_decref(run->fields);
        return push(self, NULL);
    }
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
    (void)ctx;
    *fw_file_user(f) = NULL; /* the parser state comes with a file's first run */
    return 0;
}

static void free_state(fw_file *f)
{
    fw_fstate *fs = *fw_file_user(f);
    if (!fs)
        return;
    *fw_file_user(f) = NULL;
    if (!fs->self->spare) {
        rrlog_reset(fs->rr);
        fs->f = NULL;
        fs->self->spare = fs;
        return;
    }
    rrlog_free(fs->rr);
    free(fs);
}

/* The parser of f, made on first use; NULL when out of memory. */
static rrlog *parser(fw *self, fw_file *f)
{
    fw_fstate *fs = *fw_file_user(f);
    if (fs)
        return fs->rr;
    if (self->spare) {
        fs = self->spare;
        self->spare = NULL;
    } else {
        if (!(fs = calloc(1, sizeof *fs)))
            return NULL;
        fs->self = self;
        if (!(fs->rr = rrlog_new(self->rrcfg, on_report, fs))) {
            free(fs);
            return NULL;
        }
    }
    fs->f = f;
    *fw_file_user(f) = fs;
    return fs->rr;
}

/* Free the parser of f when no run is open in it. */
static void release(fw_file *f)
{
    fw_fstate *fs = *fw_file_user(f);
    int64_t first;
    if (fs && !rrlog_open_run(fs->rr, &first))
        free_state(f);
}

static void h_close(void *ctx, fw_file *f)
{
    (void)ctx;
    free_state(f);
}

static void h_reset(void *ctx, fw_file *f)
{
    fw_fstate *fs = *fw_file_user(f);
    int64_t first;
    (void)ctx;
    if (fs && rrlog_open_run(fs->rr, &first)) {
        sb_log(fs->self->ins, SB_LOG_WARN, "%s:%" PRId64 ": the run that started here was truncated away; dropped",
               fw_file_path(f), first);
        rrlog_reset(fs->rr);
    }
    free_state(f);
}

static int64_t h_resume(void *ctx, fw_file *f, int64_t next)
{
    fw_fstate *fs = *fw_file_user(f);
    int64_t first;
    (void)ctx;
    if (fs && rrlog_open_run(fs->rr, &first) && first < next)
        return first;
    return next;
}

static int h_line(void *ctx, fw_file *f, const char *line, size_t len, int64_t off)
{
    fw *self = ctx;
    char id[128], err[512];
    if (self->format == FMT_RR) {
        rrlog_run run;
        rrlog *rr = parser(self, f);
        if (!rr) { /* untracked lines would be consumed unparsed: fail instead */
            sb_log(self->ins, SB_LOG_ERROR, "%s: out of memory for its parser state", fw_file_path(f));
            return -1;
        }
        int rc = rrlog_line(rr, line, off, &run) ? emit_run(self, f, &run) : 0;
        release(f);
        return rc;
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
    int rc = fields ? rr_command_fields_n(line, len, self->script, extra, fields, NULL, err, sizeof err) : RR_NOMEM;
    if (rc != 0) {
        json_decref(fields);
        if (rc == RR_NOMEM) /* the line is fine: read it again rather than skip it */
            return push(self, NULL);
        sb_log(self->ins, SB_LOG_WARN, "%s:%" PRId64 ": command rejected: %s", fw_file_path(f), off, err);
        return 0;
    }
    char ts[32];
    iso8601((int64_t)time(NULL), ts);
    json_object_set_new(fields, "finished_at", json_string(ts));
    json_object_set_new(fields, "time_source", json_string("read_time"));
    add_common(self, f, fields);
    return push(self, sb_event_new_with_fields(id, fields));
}

static int h_end(void *ctx, fw_file *f)
{
    fw *self = ctx;
    fw_fstate *fs = *fw_file_user(f);
    rrlog_run run;
    int rc = 0;
    while (rc == 0 && fs && rrlog_end(fs->rr, &run))
        rc = emit_run(self, f, &run);
    free_state(f);
    return rc;
}

static int h_idle(void *ctx, fw_file *f)
{
    fw *self = ctx;
    fw_fstate *fs = *fw_file_user(f);
    rrlog_run run;
    int rc = 0;
    if (fs && rrlog_idle(fs->rr, &run))
        rc = emit_run(self, f, &run);
    release(f);
    return rc;
}

/* The tailer's counters on /metrics, one series per instance. */
static const struct {
    const char *name, *help;
    sb_metric_type type;
    size_t off;
} fw_metrics[FW_NMETRICS] = {
    {"filewatch_files", "Files the filewatch source follows.", SB_METRIC_GAUGE, offsetof(fw_tailer_stats, files)},
    {"filewatch_open_files", "Followed files holding a descriptor now.", SB_METRIC_GAUGE,
     offsetof(fw_tailer_stats, open_files)},
    {"filewatch_opens_total", "Opens and reopens of followed files.", SB_METRIC_COUNTER,
     offsetof(fw_tailer_stats, opens)},
    {"filewatch_open_errors_total", "Opens of followed files that failed (each is retried).", SB_METRIC_COUNTER,
     offsetof(fw_tailer_stats, open_errors)},
    {"filewatch_read_errors_total", "Reads of followed files that failed (each is retried).", SB_METRIC_COUNTER,
     offsetof(fw_tailer_stats, read_errors)},
    {"filewatch_unreadable_files_total", "Files given up at the --once end: not read to their end.",
     SB_METRIC_COUNTER, offsetof(fw_tailer_stats, unreadable)},
    {"filewatch_read_bytes_total", "Bytes read from followed files.", SB_METRIC_COUNTER,
     offsetof(fw_tailer_stats, bytes)},
};

static void metrics_update(fw *self)
{
    fw_tailer_stats_get(self->t, &self->stats);
    for (size_t i = 0; i < FW_NMETRICS; i++)
        sb_metric_set(self->metric[i], (int64_t) * (const uint64_t *)((const char *)&self->stats + fw_metrics[i].off));
}

static void metrics_add(fw *self)
{
    for (size_t i = 0; i < FW_NMETRICS; i++)
        if (!self->metric[i]) /* run() again after a restart keeps its series */
            self->metric[i] = sb_metric_new(self->ins, fw_metrics[i].type, fw_metrics[i].name, fw_metrics[i].help);
}

static int fw_run(void *p, sb_source_ctx *ctx)
{
    fw *self = p;
    char err[256];
    if (sb_source_flush(ctx) != 0) /* the checkpoint must be the committed one */
        return -1;
    fw_handler h = {.ctx = self, .open = h_open, .line = h_line, .end = h_end, .reset = h_reset,
                    .close = h_close, .resume = h_resume, .idle = h_idle};
    int once = sb_instance_once(self->ins);
    self->tc.end_at_eof = once;
    self->t = fw_tailer_new(&self->tc, &h, err, sizeof err);
    if (!self->t) {
        sb_log(self->ins, SB_LOG_ERROR, "%s", err);
        return -1;
    }
    self->ctx = ctx;
    self->n = 0;
    self->last_cp_ms = 0;
    metrics_add(self);
    fw_tailer_restore(self->t, sb_source_checkpoint(ctx));
    int rc = 0;
    while (!sb_source_stopping(ctx)) {
        int cyc = fw_tailer_cycle(self->t);
        metrics_update(self);
        /* --once: the end below sends the positions; one more checkpoint
         * just before it would be a second copy of every file's line in
         * memory at once (several MB with 100,000 files) */
        if (cyc != 0 || (once ? emit_with(self, 0, NULL, 0) : emit(self, 0)) != 0) {
            rc = -1;
            break;
        }
        if (once) {
            /* Runs the end of input finishes go out, but the checkpoint of
             * each file stays where it was before its end: a run still being
             * written, or a last line without its newline, is read again by
             * the next start (a run sent now is then a duplicate the ledger
             * drops). A file that could not be read to its end fails the
             * source, so that --once exits non-zero. */
            /* The last runs go first and are committed; then what the runs of 100,000 files
             * left free goes back to the system before the checkpoint naming every file is
             * built, copied by the core and written by SQLite: that moment is the run's peak. */
            if (fw_tailer_finish(self->t) != 0 || emit_with(self, 0, NULL, 0) != 0 || sb_source_flush(ctx) != 0)
                rc = -1;
            malloc_trim(0);
            if (rc != 0 || emit(self, 1) != 0 || sb_source_flush(ctx) != 0)
                rc = -1;
            metrics_update(self);
            if (rc == 0 && self->stats.unreadable > 0) {
                sb_log(self->ins, SB_LOG_ERROR, "%llu matched file%s could not be read to its end",
                       (unsigned long long)self->stats.unreadable, self->stats.unreadable == 1 ? "" : "s");
                rc = -1;
            }
            break;
        }
        if (fw_tailer_wait(self->t, ctx))
            break;
    }
    for (size_t i = 0; i < self->n; i++)
        sb_event_free(self->evs[i]);
    self->n = 0;
    metrics_update(self);
    fw_tailer_free(self->t);
    self->t = NULL;
    if (self->spare) {
        rrlog_free(self->spare->rr);
        free(self->spare);
        self->spare = NULL;
    }
    return sb_source_stopping(ctx) ? 0 : rc;
}

/* ---- preflight ------------------------------------------------------------- */

/* The directory a pattern's matches must be under: its leading components
 * up to the first wildcard ("." for a bare name). Wildcards as the tailer
 * sees them (a backslash escapes, so it counts too). */
static char *pattern_dir(const char *pat)
{
    size_t m = strcspn(pat, "*?[\\");
    const char *slash = NULL;
    for (const char *s = pat; s < pat + m; s++)
        if (*s == '/')
            slash = s;
    if (!slash)
        return sb_asprintf(".");
    if (slash == pat)
        return sb_asprintf("/");
    return sb_asprintf("%.*s", (int)(slash - pat), pat);
}

/* glob(3) reports a directory it cannot read only through a callback
 * without a context; preflight runs on the control thread, one instance
 * at a time. */
static _Thread_local char *glob_unreadable;

static int glob_error(const char *path, int err)
{
    if (err != ENOENT && err != ENOTDIR && !glob_unreadable)
        glob_unreadable = sb_asprintf("%s: %s", path, strerror(err));
    return 0; /* go on: count what can be read */
}

/* `syncbridge preflight`: for each pattern, its directory is there and
 * this user may list and enter it, and how many files match now (as the
 * tailer counts them: regular files, not excluded). Read-only: create()
 * opened nothing, and nothing is opened here but directories to list. */
static void fw_preflight(void *p, sb_preflight *pf)
{
    fw *self = p;
    char user[64], pwbuf[1024];
    struct passwd pw, *pwp = NULL;
    if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &pwp) == 0 && pwp)
        snprintf(user, sizeof user, "%s", pw.pw_name);
    else
        snprintf(user, sizeof user, "uid %u", (unsigned)geteuid());
    for (size_t i = 0; i < self->tc.npaths; i++) {
        const char *pat = self->paths[i];
        char *dir = pattern_dir(pat);
        char *what = sb_asprintf("directory %s of paths \"%s\" is readable by %s", dir, pat, user);
        struct stat st;
        if (stat(dir, &st) != 0) {
            if (errno == ENOENT)
                sb_preflight_fail(pf, what, "it does not exist: create it or fix paths");
            else if (errno == EACCES)
                sb_preflight_fail(pf, what, "%s: give %s execute permission on the directories above it",
                                  strerror(errno), user);
            else
                sb_preflight_fail(pf, what, "%s: fix paths", strerror(errno));
        } else if (!S_ISDIR(st.st_mode)) {
            sb_preflight_fail(pf, what, "it is not a directory: fix paths");
        } else if (access(dir, R_OK | X_OK) != 0) {
            sb_preflight_fail(pf, what, "%s: give %s read and execute permission on it (and execute on the "
                              "directories above it), e.g. with setfacl -m u:%s:rx %s", strerror(errno), user,
                              pwp ? user : "USER", dir);
        } else {
            glob_t g;
            size_t n = 0, excluded = 0;
            int rc = glob(pat, GLOB_NOSORT, glob_error, &g);
            for (size_t j = 0; rc == 0 && j < g.gl_pathc; j++) {
                if (stat(g.gl_pathv[j], &st) != 0 || !S_ISREG(st.st_mode))
                    continue;
                if (fw_excluded(self->exclude, self->tc.nexclude, g.gl_pathv[j]))
                    excluded++;
                else
                    n++;
            }
            if (rc == 0)
                globfree(&g);
            if (glob_unreadable) {
                sb_preflight_fail(pf, what, "%s (files under it are not seen): give %s read and execute "
                                  "permission on it", glob_unreadable, user);
            } else if (rc != 0 && rc != GLOB_NOMATCH) {
                sb_preflight_fail(pf, what, "the pattern cannot be expanded (%s): fix paths",
                                  rc == GLOB_NOSPACE ? "out of memory" : "read error");
            } else {
                char more[64] = "";
                if (excluded)
                    snprintf(more, sizeof more, " (and %zu excluded)", excluded);
                char *ok = n == 0 ? sb_asprintf("%s: no file matches yet%s", what, more)
                                  : sb_asprintf("%s: %zu file%s match%s%s", what, n, n == 1 ? "" : "s",
                                                n == 1 ? "es" : "", more);
                sb_preflight_ok(pf, ok);
                free(ok);
            }
            free(glob_unreadable);
            glob_unreadable = NULL;
        }
        free(what);
        free(dir);
    }
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "filewatch",
    .kind = SB_KIND_SOURCE,
    .version = "1.0",
    .description = "Tail Run Replicator logs (globs, rotation, inotify or polling): one event per finished run",
    .options = options,
    .config_size = sizeof(fw_conf),
    .create = fw_create,
    .run = fw_run,
    .destroy = fw_destroy,
    .preflight = fw_preflight,
};
