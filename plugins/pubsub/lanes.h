/*
 * lanes.h - a Pub/Sub ordering key's messages kept in order across
 * batches and retries.
 *
 * Within a batch the sink publishes a key's messages in event order and
 * holds back the ones after a message that must be retried. Across
 * batches the core does not keep order (a batch's retries come back
 * together, but on a timer of their own), so a retried message could
 * come back after its key's later ones, or after new events of the key
 * were published. Google's own publishers pause the key instead. Here a
 * key with a message owed (retried, not yet published) has a lane: the
 * event ids owed, oldest first. Until the lane is empty, a batch may
 * publish a key's events only in lane order, from its head;
 * the others are held back (the sink answers WAIT, or RETRY when none of
 * the batch's requests was published) and join the lane. Keys without a
 * lane, the usual case, cost one lookup per key per batch.
 *
 * An event leaves its lane when it is published or fails for good (the
 * sink's FAIL), or when the core gives up on it (abandon()): a message
 * that is never published does not block its key for ever.
 *
 * Scope: with `workers` 1 the lanes keep each key's order whatever is
 * retried. With several workers two batches of one key can be published
 * at the same time, and their order is not kept (the README says so).
 * The lanes live in memory, with the instance: after a restart of the
 * daemon or of the instance (FATAL, a reload that makes it anew) the core
 * resumes each pending event at its own retry time, so a key with a
 * message waiting for its retry at that moment can lose its order once.
 * Lanes know events by id: an instance that two routes share, both
 * carrying the same event, takes the event published on one route as
 * published on both, and that key's order can break.
 *
 * Threading: every function takes the lanes' own lock. Ownership: the
 * lanes copy the keys and ids they keep.
 */
#ifndef SB_PUBSUB_LANES_H
#define SB_PUBSUB_LANES_H

#include <stddef.h>
#include <stdint.h>

typedef struct ps_lanes ps_lanes;

/* NULL if memory ran out. */
ps_lanes *ps_lanes_new(void);
void ps_lanes_free(ps_lanes *l);

/* A batch's events of one key: ids[idx[k]] for k < n, in event order.
 * Reorders idx so that the key's owed events come first, in lane order,
 * then the others in the order given, and returns how many from the start
 * may be published now: the lane's head and what follows it without a
 * gap. The rest are to be held back (WAIT: they are not failing, so the
 * retry budget is not charged) for *wait_ms, which doubles from 50 ms to
 * 2 s while the lane's head does not move, so that a key waiting behind a
 * long retry is looked at less and less often. */
size_t ps_lanes_admit(ps_lanes *l, const char *key, const char *const *ids, size_t *idx, size_t n,
                      int64_t *wait_ms);

/* After the batch: the same events in admit()'s order, owed[idx[k]]
 * non-zero for those to be retried (failed or held back). They stay in or
 * join the lane (new ones at its end, in this order); the others leave
 * it. 0, or -1 if memory ran out (the key's order is then not kept). */
int ps_lanes_settle(ps_lanes *l, const char *key, const char *const *ids, const size_t *idx, size_t n,
                    const unsigned char *owed);

/* The core gave up on event `id` of key `key`: it leaves the lane. */
void ps_lanes_forget(ps_lanes *l, const char *key, const char *id);

/* Keys with a lane, for tests and the debug log. */
size_t ps_lanes_count(ps_lanes *l);

#endif
