/*
 * harness.h - run one sink or action plugin in process, the way Fluent
 * Bit's runtime tests run one plugin inside the engine.
 *
 * The plugin runs inside the real core: the config loader parses and
 * validates its options, the loader dlopens its .so from the build tree, the
 * router calls process() with batches, and the run ledger records results,
 * added fields and step state. The harness only feeds events in (straight
 * into the ledger, as a source would) and reads the outcome back:
 *
 *   sbh *h = sbh_new("actions", "{\"plugin\": \"composer\", \"dag\": \"x\"}");
 *   sbh_event(h, "e1", "{\"schema\": \"edw\", \"table\": \"t\"}");
 *   sbh_run(h);
 *   ck_assert_str_eq(sbh_state(h, "e1"), "done");
 *   ck_assert_str_eq(json_string_value(json_object_get(sbh_added(h, "e1"), "dag_run_id")), "...");
 *
 * The instance is named "under_test" on route "r". Its JSON may hold the
 * core's keys (retry, batch_max, workers, step_timeout) to control results
 * and timings; "@D@" anywhere in it becomes the harness's scratch directory
 * (sbh_dir). Failures abort the test through Check (ck_assert).
 *
 * Ownership: everything returned is owned by the harness and valid until the
 * next sbh_run() or sbh_free(). Not thread-safe: one test thread.
 */
#ifndef SB_HARNESS_H
#define SB_HARNESS_H

#include <check.h>
#include <jansson.h>
#include <stdint.h>

typedef struct sbh sbh;

/* section: "sinks" or "actions"; instance_json: the instance's config object. */
sbh *sbh_new(const char *section, const char *instance_json);
/* sbh_new() with `extra` (members of a JSON object, MAY be NULL) added to
 * or replacing those of base_json. */
sbh *sbh_new_merged(const char *section, const char *base_json, const char *extra);
/* Queue an event (fields as a JSON object text) for the next sbh_run(). */
void sbh_event(sbh *h, const char *event_id, const char *fields_json);
/* Run until every queued event is done or dead-lettered (60 s at most),
 * then stop, as `syncbridge --once` would. May be called again with more
 * events: the ledger and what the plugin kept carry over, as after a
 * restart. */
void sbh_run(sbh *h);
/* "done", "dead" or "pending". */
const char *sbh_state(sbh *h, const char *event_id);
/* The reason recorded for the event (its last RETRY/WAIT/FAIL), or NULL. */
const char *sbh_error(sbh *h, const char *event_id);
/* The fields the step added (an object, possibly empty). */
json_t *sbh_added(sbh *h, const char *event_id);
/* The step state the plugin keeps for the event, or NULL. */
json_t *sbh_step_state(sbh *h, const char *event_id);
/* The progress of the step's long work, {"done","total"}, or NULL. */
json_t *sbh_step_progress(sbh *h, const char *event_id);
/* The scratch directory (removed by sbh_free), and a path inside it
 * (malloc'd). */
const char *sbh_dir(const sbh *h);
char *sbh_path(const sbh *h, const char *name);

/* Each test file defines its suite; tests/harness/main.c runs it. */
Suite *sbh_suite(void);
void sbh_free(sbh *h);

#endif
