/*
 * ledger.h - the run ledger: durable local state of every accepted event.
 *
 * Engine: SQLite in WAL mode, one file <state_dir>/ledger.db. A ledger
 * *entry* is one event on one route (an event matching two routes makes
 * two entries). For each entry the ledger keeps the event payload, the
 * route, which steps (and which members) are done with the fields each
 * added, attempts, the next retry time and the last error; settled
 * entries (done or dead) are pruned after the retention period. Per
 * source instance it keeps the last checkpoint, and it keeps the number of
 * entries in each state.
 *
 * Writes go through one writer thread that batches them (group commit):
 * sb_ledger_accept() waits until its batch is committed (the caller may
 * then acknowledge upstream); the step/state calls are queued and return at
 * once, and are committed in order within commit_interval, what one call
 * queued in one transaction. Durability per
 * sb_fsync_policy: PROCESS survives a crash or SIGKILL of the daemon,
 * POWER also survives power loss.
 *
 * Threading: every function is safe to call from any thread, except
 * sb_ledger_open/close (control thread, once).
 * Ownership: strings passed in are copied; results handed to callbacks are
 * borrowed for the duration of the callback.
 */
#ifndef SB_LEDGER_H
#define SB_LEDGER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

typedef struct sb_ledger sb_ledger;

typedef enum sb_entry_state {
    SB_ENTRY_PENDING = 0, /* steps remain */
    SB_ENTRY_DONE = 1,    /* every step completed */
    SB_ENTRY_DEAD = 2     /* in the dead-letter store */
} sb_entry_state;

typedef struct sb_ledger_opts {
    sb_fsync_policy fsync;
    int64_t commit_interval_ms; /* max wait to gather a group commit */
    int64_t retention_ms;       /* settled entries older than this are pruned */
    int quick_check;            /* 1: PRAGMA quick_check before use, refusing a damaged file (the daemon's start) */
    int drop_settled_payload;   /* 1: delete an entry's payload when it is done (ledger.keep_payload:
                                 * until_settled); dead entries keep theirs for `dlq replay` */
    int beside_daemon;          /* 1: an operator command, maybe beside a running daemon: close without the
                                 * truncating WAL checkpoint, which would hold the daemon's writer up */
} sb_ledger_opts;

/* Files beside ledger.db in the state directory. */
#define SB_LEDGER_LOCK_FILE "syncbridge.lock"     /* flock()ed by the daemon; holds its pid */
#define SB_LEDGER_MARKER_FILE "ledger.created"    /* written once a ledger exists: it must not vanish */

/* Take the state directory's exclusive lock (creating the directory as
 * needed) without waiting: the descriptor, to keep open for the life of
 * the process, or -1 with errstr, which names the holder's pid when
 * another process holds it. One daemon per state directory: two would
 * resume and send the same pending entries. Operator commands do not take
 * it: they read through SQLite's own locking beside a running daemon. */
int sb_ledger_lock(const char *state_dir, char *errstr, size_t errstr_size);

/* `syncbridge ledger check`: PRAGMA integrity_check of <state_dir>/ledger.db,
 * opened read-only. Prints what SQLite reports to `out`. 0 intact, 1
 * damaged, -1 with errstr when it cannot be read at all. */
int sb_ledger_check(const char *state_dir, FILE *out, char *errstr, size_t errstr_size);

/* `syncbridge ledger recover`: copy every readable row of a damaged
 * ledger into a new one, keeping the damaged file beside it as
 * ledger.db.damaged-<time>. Caller holds sb_ledger_lock(). Prints what was
 * kept and what was lost to `out`. 0 or -1 with errstr. */
int sb_ledger_recover(const char *state_dir, FILE *out, char *errstr, size_t errstr_size);

/* One (event, route) to accept. */
typedef struct sb_ledger_new {
    const char *event_id;
    const char *route;
    const char *source;
    const char *payload;   /* the event as JSON text: {"id","source","received_us","fields":{...}}, or its
                            * fields alone (fields_only) */
    size_t payload_len;    /* its length when the caller knows it (0: the ledger takes strlen) */
    /* 1: payload is only the object the whole payload has under "fields";
     * its id, source and received_us are this entry's event_id, source and
     * received_us, and the ledger puts them back when it is read (queries
     * and resume see the whole payload). A sixth of an event's bytes
     * written twice less (docs/benchmarks.md). */
    int fields_only;
    int64_t received_us;
    /* NULL: the entry is pending at step 0. Else it goes straight to the
     * dead-letter store with this reason, in the same transaction (a source
     * that received something it can never turn into an event). */
    const char *dead_reason;
    /* out: */
    int64_t entry_id;      /* ledger row id */
    int duplicate;         /* 1: (event_id, route) was already in the ledger; not inserted */
} sb_ledger_new;

/* Open (creating the directory, file and schema as needed; migrating
 * older schema versions). NULL with errstr on failure. Starts the writer.
 * Refuses, never starting over, a ledger.db that is empty, not SQLite, or
 * missing where SB_LEDGER_MARKER_FILE says a ledger was made, and (with
 * opts->quick_check) one that fails PRAGMA quick_check.
 * The process's first open switches SQLite's memory statistics off
 * (sqlite3_config), which only works before anything else uses SQLite. */
sb_ledger *sb_ledger_open(const char *state_dir, const sb_ledger_opts *opts, char *errstr, size_t errstr_size);
/* Flush and commit everything queued, stop the writer, close. NULL-safe. */
void sb_ledger_close(sb_ledger *l);

/* Durably insert n entries and set the source's checkpoint (NULL = leave
 * as is) in one transaction. Blocks until committed. Entries whose
 * (event_id, route) exists are marked duplicate and not changed. 0 or -1
 * with errstr (nothing of the call was committed then). */
int sb_ledger_accept(sb_ledger *l, const char *source, const char *checkpoint,
                     sb_ledger_new *entries, size_t n, char *errstr, size_t errstr_size);

/* Last committed checkpoint of a source: malloc'd string, or NULL when the
 * source has none OR the read failed; `failed` (MAY be NULL) tells the two
 * apart (1 with errstr set), so that a source never restarts from its
 * default position because of a read error. */
char *sb_ledger_checkpoint(sb_ledger *l, const char *source, int *failed, char *errstr, size_t errstr_size);

/* Queued (asynchronous) state changes, committed in call order. One that
 * a commit cannot record (disk full, I/O error) is held by the writer and
 * retried, ahead of later ones, until it is written; meanwhile
 * sb_ledger_accept() and the maintenance calls fail with the reason, and
 * sb_ledger_sync() returns without waiting for the held ones. Done and
 * dead are reached from pending only: sb_ledger_entry_done() or
 * sb_ledger_dead() for an entry that is already settled changes nothing
 * (sb_ledger_dlq_replay() is the way back to pending). */
/* Fan-out member `instance` of step `step` completed for the entry, with
 * the fields it added (JSON object text, NULL = none). Recording the same
 * (entry, step, instance) twice keeps the first. */
void sb_ledger_member_done(sb_ledger *l, int64_t entry_id, int step, const char *instance,
                           int attempts, const char *added_json);

/* A completed step of one entry, for sb_ledger_steps_done(). */
typedef struct sb_ledger_step {
    int64_t entry_id;
    int step;               /* next_step becomes step + 1, attempts reset */
    int last;               /* the route's last step: the entry is done as well */
    /* The step's only member, recorded with the step (NULL for a fan-out
     * step: its members are recorded by sb_ledger_member_done()). A member
     * that added no fields leaves no record: next_step says it is done. */
    const char *member;
    int attempts;           /* attempts the member made */
    const char *added_json; /* fields the member added (JSON object text), NULL = none */
} sb_ledger_step;

/* Queue the completion of n steps (of different entries, or of one entry's
 * steps in order) under one lock. */
void sb_ledger_steps_done(sb_ledger *l, const sb_ledger_step *steps, size_t n);
/* All steps done: state DONE (for an entry whose route lost steps since). */
void sb_ledger_entry_done(sb_ledger *l, int64_t entry_id);
/* A retry is scheduled. */
void sb_ledger_retry(sb_ledger *l, int64_t entry_id, int step, int attempts, int64_t next_retry_us,
                     const char *reason);
/* Dead-lettered at `step` with reason. */
void sb_ledger_dead(sb_ledger *l, int64_t entry_id, int step, const char *reason);

/* Record the state member `member` of step `step` keeps for the entry
 * (JSON text; NULL clears it), in order with the other queued changes.
 * wait = 0 queues it and returns 0; wait = 1 blocks until it is committed
 * and returns 0, or -1 with errstr if it could not be. */
int sb_ledger_step_state(sb_ledger *l, int64_t entry_id, int step, const char *member, const char *state_json, int wait,
                         char *errstr, size_t errstr_size);

/* Record how far the long work of member `member` at step `step` has got
 * (bytes or units done out of total), queued like a state change but never
 * waiting: when the queue is full a report is dropped, unless it is the
 * final one (done >= total). Not held and retried when a commit fails.
 * Callers throttle it: the router writes at most one a second per event. */
void sb_ledger_step_progress(sb_ledger *l, int64_t entry_id, int step, const char *member, uint64_t done,
                             uint64_t total);

/* Wait until everything queued so far is committed (tests, shutdown). */
void sb_ledger_sync(sb_ledger *l);

/* A pending entry as resumed after a restart. */
typedef struct sb_ledger_pending {
    int64_t entry_id;
    const char *event_id;
    const char *route;
    const char *source;
    const char *payload;      /* as accepted */
    int next_step;            /* first unfinished step */
    int attempts;             /* attempts made at next_step */
    int64_t first_attempt_us; /* of next_step; 0 if none yet */
    int64_t next_retry_us;    /* 0 = due now */
    const char *added_json;   /* JSON object: every field added by completed steps/members, merged in order */
    const char *members_done; /* JSON array of instance names done at next_step (fan-out) */
    const char *states_json;  /* JSON object: member -> the state it keeps at next_step; NULL if none */
} sb_ledger_pending;

/* Call cb for pending entries of `route` (NULL = all), oldest first, with
 * entry_id > after_id, at most `limit` (0 = no limit). Returns the number
 * visited or -1. cb returning non-zero stops early. Used to resume in pages. */
int sb_ledger_foreach_pending(sb_ledger *l, const char *route, int64_t after_id, size_t limit,
                              int (*cb)(const sb_ledger_pending *p, void *ud), void *ud);

/* ---- operator views (CLI `runs` and `dlq`, admin /api/runs) ---- */

typedef struct sb_ledger_filter {
    const char *route;     /* NULL = any */
    const char *source;    /* NULL = any */
    int state;             /* -1 = any, else sb_entry_state */
    const char *field_eq_name;  /* optional: payload field equals value (e.g. "table") */
    const char *field_eq_value;
    int64_t since_us;      /* 0 = any: received at or after */
    int64_t until_us;      /* 0 = any: received before */
    size_t limit;          /* 0 = 100 */
} sb_ledger_filter;

/* JSON array of entries: [{"entry_id","event_id","route","source","state",
 * "next_step","attempts","received_us","updated_us","error","fields"}...],
 * newest first. Caller json_decref()s. NULL on error. */
json_t *sb_ledger_list(sb_ledger *l, const sb_ledger_filter *f, char *errstr, size_t errstr_size);
/* One entry with its steps: {..., "steps":[{"step","instance","attempts",
 * "completed_us","added"}...]}, a record per member that completed its
 * step (fan-out members done at the current step included), in step order. A step below next_step completed by
 * its only member with no fields added has no member record; it shows as
 * {"step": N, "instance": null, "attempts": null, "completed_us": null,
 * "added": null}. NULL if absent (errstr says so). */
json_t *sb_ledger_show(sb_ledger *l, int64_t entry_id, char *errstr, size_t errstr_size);
/* (sb_ledger_show also gives "step_states": [{"step","member","state",
 * "progress","started_us","updated_us"}], what steps keep for the entry
 * (ABI 2) and how far their long work got: {"done","total"} or null.) */

/* DLQ: move dead entries back to pending at their failed step with
 * attempts reset (entry_id 0 = all dead entries, optionally of a route),
 * flagged "requeued". Returns how many, or -1. Safe to call from another
 * process (the CLI) while the daemon runs: the daemon collects flagged
 * entries with sb_ledger_take_requeued() every few seconds. */
int sb_ledger_dlq_replay(sb_ledger *l, int64_t entry_id, const char *route, char *errstr, size_t errstr_size);
/* Send a settled (done or dead) entry through its route again from step
 * `step` (`reconcile --republish`): pending again, its attempts and error
 * cleared, what steps >= `step` recorded forgotten, and flagged like a DLQ
 * replay so a running daemon takes it within seconds. 1 when it was
 * settled and is pending now, 0 when it was pending already (or is gone),
 * -1 with errstr. */
int sb_ledger_republish(sb_ledger *l, int64_t entry_id, int step, char *errstr, size_t errstr_size);
/* Clear the requeued flag of up to `limit` entries and call cb for each
 * (same view as resume). Returns the number taken or -1. */
int sb_ledger_take_requeued(sb_ledger *l, size_t limit,
                            int (*cb)(const sb_ledger_pending *p, void *ud), void *ud);

/* Delete dead entries (entry_id 0 = all, optionally of a route). */
int sb_ledger_dlq_drop(sb_ledger *l, int64_t entry_id, const char *route, char *errstr, size_t errstr_size);

/* Delete settled entries last updated before now - retention. Returns the
 * number pruned or -1. Called periodically by the daemon. Its cost grows
 * with the entries it deletes and with those accepted before the cutoff
 * that it must keep (pending, or settled after the cutoff). */
int sb_ledger_prune(sb_ledger *l, int64_t now_us);

/* Counts by state (for metrics / tests), kept by the writer as it commits:
 * reading them does not depend on the ledger's size. */
int sb_ledger_counts(sb_ledger *l, int64_t *pending, int64_t *done, int64_t *dead);

#endif
