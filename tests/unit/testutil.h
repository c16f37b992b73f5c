/*
 * testutil.h - helpers shared by the C tests: scratch directories, files,
 * paths into the build tree, and running the syncbridge binary.
 */
#ifndef SB_TESTUTIL_H
#define SB_TESTUTIL_H

#include <stddef.h>

/* A fresh directory under $TMPDIR (or /tmp); malloc'd path. */
char *tu_mkdtemp(void);
/* Write `text` to dir/name (creating subdirectories); malloc'd full path. */
char *tu_write(const char *dir, const char *name, const char *text);
/* Whole file as a malloc'd string, NULL if absent. */
char *tu_slurp(const char *path);
/* Count lines containing `needle` in a file. */
int tu_count_lines(const char *path, const char *needle);
/* $SB_TOP_BUILDDIR/rel (or ./rel); malloc'd. */
char *tu_build_path(const char *rel);
/* $SB_TOP_SRCDIR/rel (or ../rel); malloc'd. */
char *tu_src_path(const char *rel);
/* Run the syncbridge binary with args (NULL-terminated), capturing
 * stdout+stderr into *out (malloc'd). Returns its exit status, or -1. */
int tu_run_syncbridge(char **out, const char *const *args);
/* text with every "@D@" replaced by dir (a scratch directory in config
 * templates); malloc'd. */
char *tu_with_dir(const char *text, const char *dir);
/* rm -rf */
void tu_rmrf(const char *dir);

#endif
