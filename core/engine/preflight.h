/*
 * preflight.h - the core's side of a plugin's preflight(): collects the
 * checks an instance reports and prints one line per check.
 *
 * Ownership: the caller owns the sb_preflight (sb_preflight_new/free).
 * Threading: one thread (the CLI's); a plugin reports from inside its
 * preflight() call only.
 */
#ifndef SB_PREFLIGHT_H
#define SB_PREFLIGHT_H

#include <stdio.h>
#include <syncbridge/plugin.h>

/* Lines go to `out` as they are reported: "ok    NAME: WHAT" or
 * "FAIL  NAME: WHAT: FIX". */
sb_preflight *sb_preflight_new(FILE *out);
void sb_preflight_free(sb_preflight *pf);
/* The instance the next reports belong to (borrowed; outlive the reports). */
void sb_preflight_begin(sb_preflight *pf, const char *instance);
size_t sb_preflight_checks(const sb_preflight *pf);
size_t sb_preflight_failures(const sb_preflight *pf);
/* Checks reported for the current instance since sb_preflight_begin(). */
size_t sb_preflight_instance_checks(const sb_preflight *pf);

#endif
