/*
 * template.h - compile "${field}" templates (public render API is in
 * syncbridge/options.h).
 *
 * Syntax: literal text with ${name} or ${name:-default}; name is a field
 * path ([A-Za-z0-9_]+ segments joined by '.', for nested objects). "$$"
 * is a literal "$". Anything else after '$' ({ unterminated, empty name,
 * bad characters) is a compile error naming the column.
 *
 * Ownership: caller frees with sb_template_free(). Immutable, thread-safe.
 */
#ifndef SB_TEMPLATE_H
#define SB_TEMPLATE_H

#include <stddef.h>
#include <syncbridge/options.h>

sb_template *sb_template_compile(const char *text, char *errstr, size_t errstr_size);
void sb_template_free(sb_template *t);

#endif
