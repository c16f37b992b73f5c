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

/* Check a plugin's option table for what the core cannot honour (choices
 * on a non-string, an empty range, a binding past config_size or of a
 * string list). 0, or -1 with the option named in errstr. */
int sb_options_check_table(const sb_option_def *defs, size_t config_size, char *errstr, size_t errstr_size);

/* Store every SB_OPT_F_BIND option's value into conf (laid out as the
 * table's offsets say; checked by sb_options_check_table). The pointers
 * stored are owned by `o`. */
void sb_options_bind(const sb_options *o, const sb_option_def *defs, void *conf);

/* How the sb_opt_*() getters find an instance's options. Options sit
 * below the engine and know nothing of instances, so the instance module
 * installs this when it makes an instance (sb_instance_new). Until then
 * every getter finds no option. Thread-safe. */
typedef const sb_options *(*sb_options_lookup_fn)(const struct sb_instance *ins);
void sb_options_set_lookup(sb_options_lookup_fn fn);

/* Print a plugin's documentation: name, kind, version, description and
 * its option table (name, type, default, required, description). */
void sb_options_print_doc(FILE *out, const sb_plugin *p);

const char *sb_option_type_name(sb_option_type t);

#endif
