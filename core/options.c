/* options.c - plugin option parsing and validation (to be implemented). */
#include "build_config.h"
#include "options_internal.h"

#include <stdlib.h>

void sb_options_free(sb_options *o)
{
    free(o);
}
