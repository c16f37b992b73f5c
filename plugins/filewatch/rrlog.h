/*
 * rrlog.h - the Run Replicator log state machine (DESIGN.md §8).
 *
 * Fed one log line at a time (with its byte offset), it recognises where
 * a run starts, collects what the run prints (schema, table, date,
 * counts, RETCODE, the invocation) and says when the run is finished: a
 * success or failure marker line, a non-zero RETCODE, or the file ending
 * after a RETCODE. Every recognition is a POSIX extended regex from the
 * configuration (defaults below), applied to the line after an optional
 * leading timestamp is taken off. Markers count only when the whole line
 * is the marker, so shell traces (`+ echo 'Script completed
 * successfully'`), echoed ssh/hadoop commands and ERROR noise do not end
 * a run.
 *
 * Pure: no I/O, no clock. One rrlog per file; not thread-safe (one
 * thread per instance). The config is read-only and may be shared.
 */
#ifndef SB_FILEWATCH_RRLOG_H
#define SB_FILEWATCH_RRLOG_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "runreplicator.h"

typedef enum rrlog_pattern {
    RRP_TIMESTAMP, /* leading timestamp, taken off the line; group 1 is "YYYY-MM-DD HH:MM:SS" */
    RRP_COMMAND,   /* the invocation; group 1 is the command (checked before IGNORE: xtrace shows it) */
    RRP_IGNORE,    /* lines that never mean anything: shell traces, separators */
    RRP_SCHEMA,    /* group 1: schema */
    RRP_TABLE,     /* group 1: table */
    RRP_DATE,      /* group 1: the date processed */
    RRP_START,     /* groups 1, 2: schema, table */
    RRP_TD_COUNT,  /* group 1 */
    RRP_HIVE_COUNT,
    RRP_SUCCESS,   /* the run finished well */
    RRP_FAILURE,   /* the run failed */
    RRP_RETCODE,   /* group 1: exit code; non-zero finishes the run as failed */
    RRP_COUNT
} rrlog_pattern;

/* Option names ("schema_pattern", ...) and default regexes, indexed by rrlog_pattern. */
extern const char *const rrlog_pattern_option[RRP_COUNT];
extern const char *const rrlog_pattern_default[RRP_COUNT];

typedef struct rrlog_config rrlog_config;

/* Compile the patterns (NULL entries take the default; "" disables the
 * timestamp, command and ignore patterns, and is an error for the others).
 * script_name MAY be NULL ("run_replicator.sh"). NULL + errstr naming the
 * option on a bad regex. */
rrlog_config *rrlog_config_new(const char *const patterns[RRP_COUNT], const char *script_name, char *errstr,
                               size_t errstr_size);
void rrlog_config_free(rrlog_config *cfg);

/* Called for what a human should know (a run rejected or abandoned, an
 * invocation line not understood): sb_log level, byte offset of the line
 * concerned, message. */
typedef void (*rrlog_report_fn)(void *ctx, int level, int64_t offset, const char *msg);

/* A finished run. `fields` is owned by the receiver. NULL fields: they
 * could not be allocated; the run must be read again, not skipped. */
typedef struct rrlog_run {
    json_t *fields;   /* command, script, schema, table, [inc_key, inc_val, offset_days], status,
                         td_count, hive_count, started_at, finished_at, [run_date, retcode, reason], log_offset;
                         no run_id: the caller adds it (rr_set_run_id) knowing where the run was read */
    rr_command cmd;   /* for rr_identity() */
    int64_t first_off; /* offset of the run's first line: the run's identity in this file */
    uint64_t content_hash; /* FNV-1a of the run's lines: tells apart runs at the same offset of a
                              truncated or replaced file; the same on every re-read */
} rrlog_run;

typedef struct rrlog rrlog;

rrlog *rrlog_new(const rrlog_config *cfg, rrlog_report_fn report, void *ctx);
void rrlog_free(rrlog *r);

/* One complete line (NUL-terminated, no newline) starting at byte `off`,
 * read at `now_us` (used when the line has no timestamp). Returns 1 and
 * fills *out when the line finishes a run, else 0. */
int rrlog_line(rrlog *r, const char *line, int64_t off, int64_t now_us, rrlog_run *out);

/* The file ended (rotated away and drained, deleted, end of input with
 * --once). An open run whose last word was a RETCODE finishes with it
 * (1, *out filled); any other open run is reported and dropped. */
int rrlog_end(rrlog *r, int64_t now_us, rrlog_run *out);

/* 1 and *first_off when a run is open (not yet finished), else 0. A
 * restart must re-read the file from there to rebuild the run. */
int rrlog_open_run(const rrlog *r, int64_t *first_off);

/* Forget any open run (the file was truncated or replaced). */
void rrlog_reset(rrlog *r);

#endif
