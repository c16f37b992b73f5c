/*
 * options_internal.h - parse and validate plugin options against the
 * plugin's declared table (see syncbridge/options.h for the syntax).
 *
 * sb_options_parse() is given the raw options object of one instance and a
 * location prefix used in every message ("conf.d/team.json: sinks.bq"):
 * unknown keys (with a "did you mean" when close), wrong types, missing
 * required options, bad durations/sizes, substitution failures and
 * template syntax errors are all reported as "<where>.<key>: <problem>".
 *
 * Ownership: the returned sb_options owns copies of every value and is
 * freed with sb_options_free(). Read-only after parse, so thread-safe.
 */
#ifndef SB_OPTIONS_INTERNAL_H
#define SB_OPTIONS_INTERNAL_H

#include <stdio.h>
#include <jansson.h>
#include <syncbridge/options.h>
#include <syncbridge/plugin.h>

typedef struct sb_options sb_options;

sb_options *sb_options_parse(const sb_option_def *defs, const json_t *given, const char *where,
                             char *errstr, size_t errstr_size);
void sb_options_free(sb_options *o);

/* The instance's options (defined by the instance module). */
const sb_options *sb_instance_options(const struct sb_instance *ins);

/* Print a plugin's documentation: name, kind, version, description and
 * its option table (name, type, default, required, description). */
void sb_options_print_doc(FILE *out, const sb_plugin *p);

const char *sb_option_type_name(sb_option_type t);

/* Message helpers, shared with the config loader so both word problems
 * alike. sb_closest_name(): the candidate nearest to `given` by edit
 * distance when close enough to be a likely typo, else NULL (borrowed).
 * sb_json_brief(): a value as compact JSON cut to about 60 characters for
 * "got ..." in messages; malloc'd. */
const char *sb_closest_name(const char *given, const char *const *names, size_t n);
char *sb_json_brief(const json_t *v);

#endif
