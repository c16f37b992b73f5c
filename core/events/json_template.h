/*
 * json_template.h - compile a JSON value whose strings are "${field}"
 * templates (SB_OPT_JSON_TEMPLATE; the render API is public in
 * syncbridge/options.h).
 *
 * `v` is taken as given (the config loader has already substituted
 * ${env:...} and ${file:...}); every string in it is compiled with
 * sb_template_compile(), and a compile error is reported as
 * "<where><JSON path inside v>: <reason>", e.g.
 * `actions.dp.jobs.copy.pysparkJob.args[1]: invalid template ...`.
 *
 * Ownership: the caller frees with sb_json_template_free(). Immutable
 * after compile: thread-safe.
 */
#ifndef SB_JSON_TEMPLATE_H
#define SB_JSON_TEMPLATE_H

#include <stddef.h>
#include <jansson.h>
#include <syncbridge/options.h>

sb_json_template *sb_json_template_compile(const json_t *v, const char *where, char *errstr, size_t errstr_size);
void sb_json_template_free(sb_json_template *t);

#endif
