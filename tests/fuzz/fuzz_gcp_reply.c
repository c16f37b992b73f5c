/* fuzz_gcp_reply.c - what the Google layer reads from a server's reply:
 * error bodies (Google JSON, OAuth, RFC 7807, anything else), Retry-After
 * values, and the redaction applied to anything that may be logged. The
 * first two bytes pick the HTTP status. */
#include "build_config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syncbridge/gcp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    long status = 100 + (long)((data[0] << 8 | data[1]) % 500);
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    free(sb_gcp_error_line(status, body, len));
    char *s = malloc(len + 1);
    memcpy(s, body, len);
    s[len] = '\0';
    (void)sb_gcp_retry_after_ms(s);
    free(sb_gcp_redact(s));
    free(s);
    return 0;
}
