/* preflight.c - collect and print the checks of plugins' preflight(). */
#include "build_config.h"
#include "engine/preflight.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdlib.h>

struct sb_preflight {
    FILE *out;
    const char *instance;
    size_t checks, failures, here;
};

sb_preflight *sb_preflight_new(FILE *out)
{
    sb_preflight *pf = sb_xcalloc(1, sizeof *pf);
    pf->out = out;
    return pf;
}

void sb_preflight_free(sb_preflight *pf) { free(pf); }

void sb_preflight_begin(sb_preflight *pf, const char *instance)
{
    pf->instance = instance;
    pf->here = 0;
}

size_t sb_preflight_checks(const sb_preflight *pf) { return pf->checks; }
size_t sb_preflight_failures(const sb_preflight *pf) { return pf->failures; }
size_t sb_preflight_instance_checks(const sb_preflight *pf) { return pf->here; }

void sb_preflight_ok(sb_preflight *pf, const char *what)
{
    pf->checks++;
    pf->here++;
    fprintf(pf->out, "ok    %s: %s\n", pf->instance ? pf->instance : "?", what ? what : "");
    fflush(pf->out);
}

void sb_preflight_fail(sb_preflight *pf, const char *what, const char *fix, ...)
{
    pf->checks++;
    pf->here++;
    pf->failures++;
    fprintf(pf->out, "FAIL  %s: %s: ", pf->instance ? pf->instance : "?", what ? what : "");
    if (fix) {
        va_list ap;
        va_start(ap, fix);
        vfprintf(pf->out, fix, ap);
        va_end(ap);
    }
    fputc('\n', pf->out);
    fflush(pf->out);
}
