/*
 * confval.h - config values that the config loader (config.c) and plugin
 * options (options.c) read alike: ${...} substitution, durations and
 * sizes, and the wording of a value of the wrong kind or a misspelt
 * name. One implementation, so "5s" or "64KiB" means the same, and a
 * mistake reads the same, in either place.
 *
 * Durations: a bare integer (ms) or "250ms" "5s" "2m" "1h" "1d". Sizes: a
 * bare integer (bytes) or "B" "KB" "MB" "GB" "TB" "K" "M" "G" "KiB" "MiB"
 * "GiB" (all powers of 1024). Units are case-insensitive and may follow a
 * space; the number is a non-negative integer.
 *
 * Core-internal, below both of its users: it calls neither. No state:
 * thread-safe.
 */
#ifndef SB_CONFVAL_H
#define SB_CONFVAL_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* Parse a duration (ms) or a size (bytes) written as text. -1 on error. */
int64_t sb_parse_duration_ms(const char *s);
int64_t sb_parse_size(const char *s);

typedef enum sb_scaled_kind { SB_SCALED_DURATION, SB_SCALED_SIZE } sb_scaled_kind;

/* A duration or size as a config value: a non-negative JSON integer, or a
 * string with a unit once ${...} references are substituted. 0 with *out;
 * or -1 with the problem in msg, for the caller to put after "<where>: ",
 * e.g. `expected a duration like "250ms" or "5s", got "7 days"`, or the
 * substitution's own message. */
int sb_config_scaled(const json_t *v, sb_scaled_kind kind, int64_t *out, char *msg, size_t msg_size);

/* "expected <what>, got <v as brief JSON>" into msg (for after
 * "<where>: "). Returns -1. */
int sb_config_expected(char *msg, size_t msg_size, const char *what, const json_t *v);

/* Message helpers, so that the config loader and plugin options word
 * problems alike. sb_closest_name(): the candidate nearest to `given` by
 * edit distance when close enough to be a likely typo, else NULL (borrowed).
 * sb_json_brief(): a value as compact JSON cut to about 60 characters for
 * "got ..." in messages; malloc'd. */
const char *sb_closest_name(const char *given, const char *const *names, size_t n);
char *sb_json_brief(const json_t *v);

/* Substitute ${env:NAME}, ${file:/path} and "$${" in `in`; with
 * keep_fields=0 a plain ${NAME} is an environment variable, with
 * keep_fields=1 it is left as is (template options). Returns a malloc'd
 * string or NULL with errstr set ("environment variable X is not set"). */
char *sb_config_subst(const char *in, int keep_fields, char *errstr, size_t errstr_size);

#endif
