/* fuzz_command.c - the Run Replicator command parser: a scheduler's line or
 * a Pub/Sub/Kafka message body turned into schema, table and incremental
 * arguments (core/events/runreplicator.c). */
#include "build_config.h"
#include "runreplicator.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *fields = json_object();
    rr_command cmd;
    int rc = rr_command_fields_n((const char *)data, size, NULL, NULL, fields, &cmd, err, sizeof err);
    if (rc == 0)
        (void)rr_set_run_id(&cmd, "host", fields);
    json_decref(fields);
    if (size < 64) {
        char s[64], out[16];
        memcpy(s, data, size);
        s[size] = '\0';
        (void)rr_parse_date(s, out);
    }
    (void)rr_utf8_error_at((const char *)data, size);
    return 0;
}
