/*
 * runreplicator.h - understanding Run Replicator runs: the command parser
 * behind the SDK's body decoder (syncbridge/decode.h, format "command"),
 * and what the bundled filewatch source uses on its log lines. Part of
 * libsyncbridge but NOT of the SDK: out-of-tree plugins use
 * sb_decode_body(); the bundled plugins, built with the core, may call
 * these directly.
 *
 * A run is `run_replicator.sh SCHEMA TABLE [INC_KEY INC_VAL [OFFSET_DAYS]]`
 * (README "Run Replicator logs"). The message the GCP side consumes is the
 * command that ran, e.g.
 *   ${RUN_SCRIPT} "sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh groupon_production im_brand_list"
 * with variables expanded or not. The command is split with shell-like
 * quoting (single and double quotes, backslash escapes) and NEVER executed
 * or expanded; the run_replicator.sh token may be nested inside a quoted
 * argument of a wrapper (`${RUN_SCRIPT} "sh ..."`, `bash -c '...'`).
 *
 * Threading: every function is reentrant. Ownership: out-structs are
 * filled by value; nothing to free. Fields are set in a JSON object the
 * caller owns.
 */
#ifndef SB_EVENTS_RUNREPLICATOR_H
#define SB_EVENTS_RUNREPLICATOR_H

#include <stddef.h>
#include <jansson.h>

#define RR_NAME_MAX 128

typedef struct rr_command {
    char script[RR_NAME_MAX + 1]; /* basename, "run_replicator.sh" */
    char schema[RR_NAME_MAX + 1];
    char table[RR_NAME_MAX + 1];
    char inc_key[RR_NAME_MAX + 1]; /* "" when a full refresh */
    char inc_val[16];              /* exactly as written (yyyymmdd or yyyy-mm-dd), "" when a full refresh */
    char inc_date[16];             /* inc_val as YYYY-MM-DD, "" when a full refresh */
    int offset_days;               /* -1 when absent (the script then loads one date) */
} rr_command;

/* What rr_parse_command() returns besides 0. */
#define RR_INVALID (-1) /* not one run's command: errstr says why; it never will be */
#define RR_NOMEM (-2)   /* an allocation failed: errstr "out of memory"; try again later */

/* Parse a command line. Schema, table and inc_key must be identifiers
 * ([A-Za-z_][A-Za-z0-9_$]*, at most RR_NAME_MAX); inc_val yyyymmdd or
 * yyyy-mm-dd and a real date; offset_days a non-negative integer. Returns
 * 0, or RR_INVALID (-1) with a reason in errstr naming the offending token, e.g.
 * `schema "groupon;rm -rf" is not a valid identifier`, `no
 * run_replicator.sh in the command`, `unterminated quote`, `command is
 * not valid UTF-8 text (byte 0xff at column 24)`; or RR_NOMEM (-2).
 * `script_name` MAY be NULL for the default "run_replicator.sh". */
int rr_parse_command(const char *cmd, const char *script_name, rr_command *out, char *errstr, size_t errstr_size);

/* Set the event fields of a parsed command: command (as given), script,
 * schema, table, inc_key/inc_val/inc_date when present, offset_days (1,
 * what the script loads, when the command names none) and full_refresh
 * (no inc_val). The same fields whichever source saw the command.
 * `command_text` MUST be UTF-8 (the text rr_parse_command accepted is), so
 * -1 means an allocation failed; else 0. */
int rr_command_to_fields(const rr_command *c, const char *command_text, json_t *fields);

/* The run's identity for sb_run_id(): "schema.table|inc_date-or-full|extra"
 * (inc_date, so 20261123 and 2026-11-23 are the same run).
 * `extra` distinguishes executions of the same table/date (e.g. the
 * start time, or the source position) and MAY be NULL. Writes into buf. */
void rr_identity(const rr_command *c, const char *extra, char *buf, size_t bufsize);

/* Set "run_id" in `fields`: sb_run_id() of rr_identity(c, identity_extra),
 * the whole identity however long `identity_extra` is. 0, or RR_NOMEM. */
int rr_set_run_id(const rr_command *c, const char *identity_extra, json_t *fields);

/* What a source does with a command line that names a run, in one call:
 *   text -> rr_parse_command() -> rr_command_to_fields() (command = text
 *   as given) -> rr_identity(cmd, identity_extra) -> "run_id".
 * `script_name` as for rr_parse_command(). `identity_extra` tells this
 * execution apart (the source position: a Kafka message id, a file and
 * offset); NULL leaves run_id out, for a caller that learns the run's
 * identity only later and then calls rr_set_run_id(). `cmd` MAY be NULL;
 * it receives the parsed command.
 *
 * Returns 0; RR_INVALID with the reason in errstr when `text` is not one
 * run's command (then `fields` is untouched, and the input never will be
 * one: log and skip it); or RR_NOMEM, errstr "out of memory", when an
 * allocation failed (then `fields` may hold some of the fields: drop it,
 * and do not move past the input, which would succeed later). */
int rr_command_fields(const char *text, const char *script_name, const char *identity_extra, json_t *fields,
                      rr_command *cmd, char *errstr, size_t errstr_size);

/* rr_command_fields() on a message or line of `len` bytes that may end in
 * blanks or a newline (taken off) and MUST NOT hold a NUL byte (RR_INVALID,
 * "command contains a NUL byte"). What the kafka and filewatch command
 * formats both do with one message. */
int rr_command_fields_n(const char *text, size_t len, const char *script_name, const char *identity_extra,
                        json_t *fields, rr_command *cmd, char *errstr, size_t errstr_size);

/* Validate a date written yyyymmdd or yyyy-mm-dd (a real calendar date,
 * years 1900-2999) and write it as YYYY-MM-DD into out. 0, or -1 if it is
 * not one. The same check rr_parse_command applies to INC_VAL; the log
 * parser uses it for "Processing for date:" lines. */
int rr_parse_date(const char *s, char out[16]);

/* Offset of the first byte of s[0..n) that breaks strict UTF-8 (no
 * overlongs, surrogates or code points past U+10FFFF: what jansson accepts
 * as a string), or -1 if it is valid. Shared by the command parser and
 * filewatch's line reader. */
long rr_utf8_error_at(const char *s, size_t n);

#endif
