/*
 * syncbridge/decode.h - one message body to one event, the same way in
 * every source that receives whole messages (the bundled kafka and
 * pubsub_pull sources, file_in's JSON lines, and any out-of-tree source;
 * filewatch reads commands with the same parser): the Run Replicator
 * command that ran, a JSON object of fields, or raw text. Since ABI 2.2.
 *
 * The "command" format reads the message the on-prem side sends for one
 * run, e.g.
 *   ${RUN_SCRIPT} "sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh groupon_production im_brand_list"
 * (variables expanded or not; `run_replicator.sh SCHEMA TABLE [INC_KEY
 * INC_VAL [OFFSET_DAYS]]`, possibly inside a wrapper's quoted argument).
 * It is split with shell-like quoting and NEVER executed or expanded. The
 * event gets the fields command, script, schema, table, inc_key, inc_val,
 * inc_date (YYYY-MM-DD), offset_days, full_refresh and, when
 * identity_extra is given, run_id (sb_run_id() of the run's identity):
 * the same fields whichever source saw the command (README "Run
 * Replicator logs").
 *
 * Out of memory: unlike syncbridge/buf.h, these calls report it
 * (SB_DECODE_NOMEM) instead of aborting, as the event constructors of
 * syncbridge/event.h do: a body may be megabytes, and a source can leave
 * the message unacknowledged and try again later.
 *
 * Threading: every function is reentrant and thread-safe; nothing is
 * shared between calls. Ownership: the options and the body are only read
 * during the call; the event returned belongs to the caller (emit it,
 * dead-letter it, or sb_event_free() it).
 */
#ifndef SYNCBRIDGE_DECODE_H
#define SYNCBRIDGE_DECODE_H

#include <stddef.h>
#include <syncbridge/event.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Index order of sb_decode_formats[], so that a source can declare its
 * format option with SB_OPT_CHOICES(sb_decode_formats) and bind it to an
 * int that is an sb_decode_format. */
typedef enum sb_decode_format {
    SB_DECODE_AUTO = 0, /* JSON when the body starts with '{' (after blanks), else a command */
    SB_DECODE_JSON,     /* a JSON object whose members are the fields */
    SB_DECODE_COMMAND,  /* the Run Replicator command that ran (above) */
    SB_DECODE_RAW       /* any UTF-8 text, as the field "body" */
} sb_decode_format;

/* "auto" "json" "command" "raw", NULL-terminated. */
extern const char *const sb_decode_formats[];

/* What sb_decode_body() returns besides 0. */
#define SB_DECODE_INVALID (-1) /* the body never will decode: errstr says why (dead-letter it) */
#define SB_DECODE_NOMEM (-2)   /* an allocation failed: do not acknowledge; try again later */

/* Caller-allocated, so it starts with its size: later minors append
 * members, and the core reads only those the caller's size covers.
 * `sb_decode_opts o = SB_DECODE_OPTS_INIT;` then set the members. */
typedef struct sb_decode_opts {
    size_t size;                /* MUST be sizeof(sb_decode_opts) (SB_DECODE_OPTS_INIT) */
    sb_decode_format format;
    const char *id_field;       /* json: take the event id from this member when present; MAY be NULL */
    const char *script_name;    /* command: the script that marks a run; NULL = "run_replicator.sh" */
    /* command: what tells this execution of the run apart (the message's
     * own id, a source position); MAY be NULL: run_id is then left out */
    const char *identity_extra;
} sb_decode_opts;

#define SB_DECODE_OPTS_INIT {.size = sizeof(sb_decode_opts)}

/* Decode body[0..len) into a new event with id `id` (json: unless id_field
 * names a member of the body). Returns 0 with *out set; SB_DECODE_INVALID
 * with the reason in errstr (an empty body, bad JSON, not one run's
 * command, text that is not UTF-8, an `o` whose size is too small); or
 * SB_DECODE_NOMEM. *out is NULL whenever the result is not 0. */
int sb_decode_body(const sb_decode_opts *o, const char *id, const char *body, size_t len, sb_event **out,
                   char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif
