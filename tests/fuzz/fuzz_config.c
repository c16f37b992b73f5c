/* fuzz_config.c - the config loader: JSON, ${env:}/${file:} substitution,
 * the core keys and every plugin-independent check. The input is written
 * to a file (the loader reads files) and loaded; an error must be a
 * message, never a crash. */
#include "build_config.h"
#include "config/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz_config_%d.json", (int)getpid());
        setenv("FUZZ_VAR", "value", 1);
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    char err[1024];
    sb_config *c = sb_config_load(path, err, sizeof err);
    sb_config_free(c);
    return 0;
}
