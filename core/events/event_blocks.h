/*
 * event_blocks.h - memory for the events made from JSON text
 * (sb_event_new_json), given back for reuse instead of to malloc.
 *
 * A source's thread makes the events and a step's thread frees them. glibc
 * frees each into the source thread's arena, under that arena's lock and
 * with its bins' bookkeeping, and the source's next malloc takes it out
 * again: about a tenth of the daemon's CPU on file_in -> discard
 * (docs/benchmarks.md). A block given back here goes to the next event
 * instead.
 *
 * Thread-safe: any thread may take and give. A thread's gifts gather in a
 * list of its own and move to a shared pool 64 at a time; a thread taking
 * takes 64 from the pool once its own list is empty. A thread that exits
 * gives its gifts to the pool and frees what it had taken (a pthread key's
 * destructor). Memory kept is bounded: blocks up to 2 KiB, 2048 in the
 * pool, 128 per thread.
 */
#ifndef SB_EVENT_BLOCKS_H
#define SB_EVENT_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

/* A block of at least `need` bytes (malloc's alignment), or NULL if memory
 * runs out. *cap is what to give back with it: its size, or 0 for a block
 * the pool does not keep (over 2 KiB), which goes to free() instead. Under
 * AddressSanitizer a block given back is unaddressable until taken again,
 * and one taken is addressable only up to `need`. */
void *sb_event_block_take(size_t need, uint32_t *cap);

/* Give back a block taken with capacity cap (not 0). */
void sb_event_block_give(void *block, uint32_t cap);

#endif
