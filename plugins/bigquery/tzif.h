/*
 * tzif.h - one IANA time zone read from its TZif file (RFC 8536), for the
 * bigquery sink's time_zone option: the UTC offset in effect at an instant.
 *
 * Only version 2 and later files are read (their 64-bit block); past the
 * last transition the file's POSIX TZ footer gives the rule, so instants far
 * in the future get their DST right. Leap-second ("right/") files are
 * refused: a DATETIME has no leap seconds.
 *
 * Why not localtime_r: TZ and tzset() are process-global, and other
 * instances in the daemon may need other zones at the same time.
 *
 * Ownership: tzif_load/tzif_parse return a zone the caller frees with
 * tzif_free. Threading: a zone is immutable once returned, so any number
 * of threads may call tzif_offset on it at once without locking; loading
 * reads the environment (TZDIR), so do it at create() time.
 */
#ifndef SB_PLUGINS_TZIF_H
#define SB_PLUGINS_TZIF_H

#include <stddef.h>
#include <stdint.h>

typedef struct tzif_zone tzif_zone;

/* The directory zone files are read from: $TZDIR when set and not empty
 * (as glibc does), else /usr/share/zoneinfo. Not owned by the caller. */
const char *tzif_dir(void);

/* 1 when `name` may name a zone file: relative, components of letters,
 * digits, _ + - only (so no "..", no "."), none empty. Else 0 with the
 * reason in errstr. Checked before any path is built. */
int tzif_name_ok(const char *name, char *errstr, size_t errstr_size);

/* Load tzif_dir()/name. NULL with the reason (naming the file) in errstr. */
tzif_zone *tzif_load(const char *name, char *errstr, size_t errstr_size);

/* Parse a TZif image of `len` bytes; `what` names it in errors. Every size,
 * count and index is checked: damaged data gives NULL and errstr. */
tzif_zone *tzif_parse(const unsigned char *data, size_t len, const char *what, char *errstr, size_t errstr_size);

void tzif_free(tzif_zone *z);

/* The UTC offset in seconds (east positive) at `t`, seconds since the epoch. */
int32_t tzif_offset(const tzif_zone *z, int64_t t);

#endif
