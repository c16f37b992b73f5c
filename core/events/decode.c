/* decode.c - a message body to an event (syncbridge/decode.h). */
#include "build_config.h"
#include "events/runreplicator.h"

#include <syncbridge/decode.h>

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>

const char *const sb_decode_formats[] = {[SB_DECODE_AUTO] = "auto", [SB_DECODE_JSON] = "json",
                                         [SB_DECODE_COMMAND] = "command", [SB_DECODE_RAW] = "raw", NULL};

static int nomem(char *err, size_t errsz)
{
    snprintf(err, errsz, "out of memory");
    return SB_DECODE_NOMEM;
}

static int with_fields(const char *id, json_t *fields, sb_event **out, char *err, size_t errsz)
{
    *out = sb_event_new_with_fields(id, fields);
    return *out ? 0 : nomem(err, errsz);
}

int sb_decode_body(const sb_decode_opts *o, const char *id, const char *body, size_t len, sb_event **out,
                   char *err, size_t errsz)
{
    *out = NULL;
    /* the members of ABI 2.2; a later minor's are read only when o->size covers them */
    if (!o || o->size < offsetof(sb_decode_opts, identity_extra) + sizeof o->identity_extra) {
        snprintf(err, errsz, "sb_decode_opts without its size (use SB_DECODE_OPTS_INIT)");
        return SB_DECODE_INVALID;
    }
    if (!body || len == 0) {
        snprintf(err, errsz, "empty message");
        return SB_DECODE_INVALID;
    }
    sb_decode_format f = o->format;
    if ((int)f < SB_DECODE_AUTO || f > SB_DECODE_RAW) {
        snprintf(err, errsz, "sb_decode_opts.format %d is not an sb_decode_format", (int)f);
        return SB_DECODE_INVALID;
    }
    if (f == SB_DECODE_AUTO) {
        size_t i = 0;
        while (i < len && isspace((unsigned char)body[i]))
            i++;
        f = i < len && body[i] == '{' ? SB_DECODE_JSON : SB_DECODE_COMMAND;
    }
    if (f == SB_DECODE_JSON) {
        *out = sb_event_new_json(id, o->id_field, body, len, err, errsz);
        if (*out)
            return 0;
        return errno == ENOMEM ? nomem(err, errsz) : SB_DECODE_INVALID;
    }
    if (f == SB_DECODE_RAW) {
        long bad = rr_utf8_error_at(body, len);
        if (bad >= 0) {
            snprintf(err, errsz, "body is not valid UTF-8 text (byte 0x%02x at offset %ld)",
                     (unsigned char)body[bad], bad);
            return SB_DECODE_INVALID;
        }
        json_t *fields = json_object();
        json_t *s = json_stringn(body, len); /* NULs are kept: jansson counts the length */
        if (!fields || !s) {
            json_decref(fields);
            json_decref(s);
            return nomem(err, errsz);
        }
        if (json_object_set_new(fields, "body", s) != 0) { /* s is released by jansson on failure */
            json_decref(fields);
            return nomem(err, errsz);
        }
        return with_fields(id, fields, out, err, errsz);
    }
    json_t *fields = json_object();
    int rc = fields ? rr_command_fields_n(body, len, o->script_name, o->identity_extra, fields, NULL, err, errsz)
                    : RR_NOMEM;
    if (rc != 0) {
        json_decref(fields);
        return rc == RR_INVALID ? SB_DECODE_INVALID : nomem(err, errsz);
    }
    return with_fields(id, fields, out, err, errsz);
}
