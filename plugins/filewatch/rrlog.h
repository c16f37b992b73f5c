/*
 * rrlog.h - the Run Replicator log state machine (README "Run Replicator
 * logs" describes the lines it reads).
 *
 * Fed one log line at a time (with its byte offset), it follows a run as
 * the scripts write it: invocation or header, then one block per date
 * (`Processing for date: D` ... verdict), then an optional trailer
 * (`RETCODE:N`, `Script completed successfully`/`Script FAILED`). One run
 * gives ONE result, whatever its number of dates; the per-date verdicts
 * are inside it (`dates`).
 *
 * A run closes at the first of: a `Script completed successfully` /
 * `Script FAILED` line; the next run's first line (invocation, header,
 * date) once its Nth date has a verdict or a date failed; the file's end
 * (rrlog_end); the file going quiet once the verdicts are in
 * (rrlog_idle). A run cut short by the next run or by the end of its
 * file is still reported: its unfinished date has status "unfinished".
 *
 * Every recognition is a POSIX extended regex from the configuration
 * (defaults below), applied to the line after an optional leading
 * timestamp is taken off. Markers count only when the whole line is the
 * marker, so shell traces (`+ echo 'Script completed successfully'`),
 * echoed ssh/hadoop commands and ERROR noise do not end a run. Lines
 * exactly `fold_width` bytes long were folded by the terminal that
 * captured them and are joined with the line that follows.
 *
 * Pure: no I/O, no clock. One rrlog per file; not thread-safe (one
 * thread per instance). The config is read-only and may be shared.
 */
#ifndef SB_FILEWATCH_RRLOG_H
#define SB_FILEWATCH_RRLOG_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <regex.h>

#include "runreplicator.h"

typedef enum rrlog_pattern {
    RRP_TIMESTAMP,    /* leading timestamp, taken off the line; group 1 is "YYYY-MM-DD HH:MM:SS" */
    RRP_LOGTIME,      /* a timestamp anywhere in the line (log4j job output); group 1 as above */
    RRP_COMMAND,      /* the invocation; group 1 is the command (checked before IGNORE: xtrace shows it) */
    RRP_IGNORE,       /* lines that never mean anything: shell traces, separators */
    RRP_SCHEMA,       /* group 1: schema */
    RRP_TABLE,        /* group 1: table */
    RRP_INC_VAL,      /* group 1: inc_val as the script picked it */
    RRP_FULL_REFRESH, /* the run is a full refresh */
    RRP_OFFSET_DAYS,  /* the number of dates; its last group, when it matched, is N, else N is 1 */
    RRP_DATE,         /* group 1: the date a block processes */
    RRP_START,        /* groups 1, 2: schema, table */
    RRP_CONTEXT,      /* the echoed zombie_runner command; group 1: inc_key from its --context */
    RRP_TD_COUNT,     /* last group: the Teradata count of the date */
    RRP_HIVE_COUNT,   /* last group: the Hive count of the date */
    RRP_FOUND_ERROR,  /* the job saw a real error: a following failure line has this reason */
    RRP_DATE_OK,      /* the date's counts matched (a failure line may still follow) */
    RRP_DATE_FAIL,    /* the date failed (the line is the reason) */
    RRP_RETCODE,      /* group 1: the wrapper's exit code; non-zero fails the run */
    RRP_END_OK,       /* the wrapper's last line for a run that went well */
    RRP_END_FAIL,     /* the wrapper's last line for a run that failed */
    RRP_COUNT
} rrlog_pattern;

/* Option names ("schema_pattern", ...) and default regexes, indexed by rrlog_pattern. */
extern const char *const rrlog_pattern_option[RRP_COUNT];
extern const char *const rrlog_pattern_default[RRP_COUNT];

#define RRLOG_FOLD_WIDTH 250 /* the default fold_width */

typedef struct rrlog_config rrlog_config;

/* The default pattern p matched by hand, as regexec (C locale) matches
 * rrlog_pattern_default[p]: 1 with m[0..nm) set as regexec sets them, 0
 * for no match, -1 when p has no such matcher (the ignore pattern, whose
 * default rrlog applies in its own way). Exported for test_rrlog, which
 * holds it to regexec line by line. */
int rrlog_match_default(rrlog_pattern p, const char *s, regmatch_t *m, size_t nm);

/* Compile the patterns (NULL entries take the default; "" disables the
 * optional ones: timestamp, time, command, ignore, inc_val, full refresh,
 * offset_days, context, found error, retcode and the two trailer lines;
 * it is an error for the others). script_name MAY be NULL
 * ("run_replicator.sh"). fold_width 0 joins no lines. NULL + errstr naming
 * the option on a bad regex. */
rrlog_config *rrlog_config_new(const char *const patterns[RRP_COUNT], const char *script_name, size_t fold_width,
                               char *errstr, size_t errstr_size);
void rrlog_config_free(rrlog_config *cfg);

/* Called for what a human should know (a run rejected or cut short, an
 * invocation line not understood): sb_log level, byte offset of the line
 * concerned, message. */
typedef void (*rrlog_report_fn)(void *ctx, int level, int64_t offset, const char *msg);

/* A finished run. `fields` is owned by the receiver. NULL fields: they
 * could not be allocated; the run must be read again, not skipped. */
typedef struct rrlog_run {
    json_t *fields;    /* command, command_source, script, schema, table, [inc_key, inc_val, inc_date],
                          offset_days, full_refresh, status, [reason], dates, td_count, hive_count,
                          [retcode], [started_at, finished_at, time_source "log"], log_offset.
                          No run_id: the caller adds it (rr_set_run_id) knowing where the run was read;
                          no times when no line of the run carried one (has_times 0): the caller
                          takes them from the file's name or mtime. */
    rr_command cmd;    /* for rr_identity() */
    int64_t first_off; /* offset of the run's first line: the run's identity in this file */
    uint64_t content_hash; /* FNV-1a of the run's lines: tells apart runs at the same offset of a
                              truncated or replaced file; the same on every re-read */
    int has_times;
} rrlog_run;

typedef struct rrlog rrlog;

/* NULL when out of memory. */
rrlog *rrlog_new(const rrlog_config *cfg, rrlog_report_fn report, void *ctx);
void rrlog_free(rrlog *r);

/* One complete line (NUL-terminated, no newline) starting at byte `off`.
 * Returns 1 and fills *out when a run is finished by this line (its own
 * last line, or the next run's first), else 0. */
int rrlog_line(rrlog *r, const char *line, int64_t off, rrlog_run *out);

/* The file ended (rotated away and drained, deleted, end of input with
 * --once): a folded line still waiting is a line, and the open run
 * finishes, its unfinished date reported as such. Returns 1 with *out
 * while there is a run to report: call it until it returns 0. */
int rrlog_end(rrlog *r, rrlog_run *out);

/* The file has been quiet for rotate_wait: a run whose verdicts are all
 * in (only a trailer could still come) finishes. A run in the middle of
 * a date does not: an import may be silent for long. 1 with *out, or 0. */
int rrlog_idle(rrlog *r, rrlog_run *out);

/* 1 and *first_off when a run is open (not yet finished) or a folded line
 * waits for its continuation, else 0. A restart must re-read the file
 * from there to rebuild the run. */
int rrlog_open_run(const rrlog *r, int64_t *first_off);

/* Forget any open run (the file was truncated or replaced). */
void rrlog_reset(rrlog *r);

#endif
