/* fuzz_rrlog.c - the Run Replicator log parser (plugins/filewatch/rrlog.c)
 * over arbitrary lines: runs are opened, folded lines joined, dates and
 * verdicts collected; every finished run's fields are released. */
#include "build_config.h"
#include "rrlog.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static rrlog_config *cfg;

static void report(void *ctx, int level, int64_t off, const char *msg)
{
    (void)ctx, (void)level, (void)off, (void)msg;
}

static void take(rrlog_run *run)
{
    json_decref(run->fields);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cfg) {
        const char *pats[RRP_COUNT] = {0};
        char err[256];
        cfg = rrlog_config_new(pats, NULL, RRLOG_FOLD_WIDTH, err, sizeof err);
        if (!cfg)
            abort();
    }
    rrlog *r = rrlog_new(cfg, report, NULL);
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    rrlog_run run;
    int64_t off = 0;
    char *line = buf;
    for (;;) {
        char *nl = memchr(line, '\n', size - (size_t)(line - buf));
        if (nl)
            *nl = '\0';
        if (rrlog_line(r, line, off, &run)) /* a NUL inside ends the line early, as in C */
            take(&run);
        if (!nl)
            break;
        off += nl - line + 1;
        line = nl + 1;
        if (size > 0 && data[0] == 'I' && rrlog_idle(r, &run)) /* first byte picks quiet-file handling */
            take(&run);
    }
    int64_t first;
    (void)rrlog_open_run(r, &first);
    while (rrlog_end(r, &run))
        take(&run);
    rrlog_free(r);
    free(buf);
    return 0;
}
