/* bq_zone_probe.c - a helper for tests/scripts/test_tzif.py: reads lines
 * "ZONE EPOCH" on stdin and prints, for each, "OFFSET CIVIL": the UTC
 * offset the bigquery sink's time_zone code gives at that instant and the
 * DATETIME bq_type_value writes for the instant (as "...Z"), so the test can
 * hold both against Python's zoneinfo. A zone that does not load prints
 * "ERR reason". Lines of one zone should come together: the zone is kept
 * loaded until the name changes. */
#define _GNU_SOURCE
#include "../../plugins/bigquery/bqrows.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void probe(const bq_zone *z, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char in[64], err[512];
    if (!gmtime_r(&tt, &tm)) {
        printf("ERR gmtime\n");
        return;
    }
    snprintf(in, sizeof in, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    bq_column col = {.name = "ts", .type = "DATETIME"};
    char *out = NULL;
    if (bq_type_value(&col, in, z, &out, err, sizeof err) != 0) {
        printf("ERR %s\n", err);
        return;
    }
    printf("%" PRId32 " %s\n", bq_zone_offset(z, t), out);
    free(out);
}

int main(void)
{
    char line[1024], cur[512] = "", err[1024];
    bq_zone z = {0};
    int loaded = 0;
    while (fgets(line, sizeof line, stdin)) {
        char name[512];
        long long t;
        if (sscanf(line, "%511s %lld", name, &t) != 2) {
            printf("ERR bad input line\n");
            continue;
        }
        if (strcmp(name, cur) != 0) {
            bq_zone_clear(&z);
            snprintf(cur, sizeof cur, "%s", name);
            loaded = bq_zone_parse(name, &z, err, sizeof err) == 0;
        }
        if (loaded)
            probe(&z, t);
        else
            printf("ERR %s\n", err);
    }
    bq_zone_clear(&z);
    return 0;
}
