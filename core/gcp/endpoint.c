/* endpoint.c - base URL of each Google service: explicit override, then
 * the emulator variable the official clients honour, then Google's host. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

typedef enum emu_form {
    EMU_NONE,          /* no emulator convention */
    EMU_HOSTPORT,      /* host:port, no scheme (PUBSUB_EMULATOR_HOST) */
    EMU_MAYBE_SCHEME,  /* http://host:port or host:port (STORAGE_EMULATOR_HOST) */
    EMU_URL            /* full URL with scheme (BIGQUERY_EMULATOR_HOST) */
} emu_form;

static const struct service {
    const char *name;
    const char *base;
    const char *emu_var;
    emu_form emu;
} services[] = {
    {"pubsub", "https://pubsub.googleapis.com", "PUBSUB_EMULATOR_HOST", EMU_HOSTPORT},
    {"storage", "https://storage.googleapis.com", "STORAGE_EMULATOR_HOST", EMU_MAYBE_SCHEME},
    {"bigquery", "https://bigquery.googleapis.com", "BIGQUERY_EMULATOR_HOST", EMU_URL},
    {"dataproc", "https://dataproc.googleapis.com", NULL, EMU_NONE},
    {"composer", "https://composer.googleapis.com", NULL, EMU_NONE},
    {"iamcredentials", "https://iamcredentials.googleapis.com", NULL, EMU_NONE},
};

static const struct service *find(const char *name)
{
    for (size_t i = 0; name && i < sizeof services / sizeof services[0]; i++)
        if (strcmp(services[i].name, name) == 0)
            return &services[i];
    return NULL;
}

static char *strip_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

char *sb_gcp_endpoint(const char *service, const char *override, int *emulator, char *errstr, size_t errstr_size)
{
    const struct service *sv = find(service);
    if (emulator)
        *emulator = 0;
    if (!sv) {
        sb_err(errstr, errstr_size,
               "unknown Google service \"%s\" (known: pubsub, storage, bigquery, dataproc, composer, iamcredentials)",
               service ? service : "(null)");
        return NULL;
    }
    if (override && *override)
        return strip_slashes(sb_strdup(override));
    const char *v = sv->emu_var ? getenv(sv->emu_var) : NULL;
    if (v && *v) {
        if (emulator)
            *emulator = 1;
        int has_scheme = strstr(v, "://") != NULL;
        switch (sv->emu) {
        case EMU_HOSTPORT:
            /* The convention is host:port; tolerate a scheme if someone adds one. */
        case EMU_MAYBE_SCHEME:
            return strip_slashes(has_scheme ? sb_strdup(v) : sb_asprintf("http://%s", v));
        case EMU_URL:
            if (!has_scheme) {
                /* python-bigquery would fail on this; be lenient like the others. */
                return strip_slashes(sb_asprintf("http://%s", v));
            }
            return strip_slashes(sb_strdup(v));
        case EMU_NONE:
            break;
        }
    }
    return sb_strdup(sv->base);
}
