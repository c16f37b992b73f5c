/* options.c - build a client from a plugin instance's options (declared by
 * SB_GCP_OPTION_DEFS): a thin layer over sb_gcp_client_new(). */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>


static const char *opt_str(const struct sb_instance *ins, const char *name)
{
    const char *v = sb_opt_isset(ins, name) ? sb_opt_string(ins, name) : NULL;
    return v && *v ? v : NULL;
}

sb_gcp_client *sb_gcp_client_from_instance(const struct sb_instance *ins, const char *service, char *errstr,
                                           size_t errstr_size)
{
    sb_gcp_conf conf;
    sb_gcp_conf_init(&conf);
    conf.ins = ins;
    conf.service = service;
    const char *auth = opt_str(ins, "auth");
    if (auth) {
        int mode = sb_gcp_auth_mode_parse(auth);
        if (mode < 0 || mode == SB_GCP_AUTH_DEFAULT) {
            sb_err(errstr, errstr_size,
                   "option auth: \"%s\" is not one of adc, service_account, metadata, none, static", auth);
            return NULL;
        }
        conf.auth = (sb_gcp_auth_mode)mode;
    }
    conf.key_file = opt_str(ins, "key_file");
    conf.token = opt_str(ins, "token");
    conf.endpoint = opt_str(ins, "endpoint");
    conf.ca_file = opt_str(ins, "ca_file");
    conf.proxy = opt_str(ins, "proxy");
    conf.no_proxy = opt_str(ins, "no_proxy");
    if (sb_opt_isset(ins, "allow_insecure_key_file"))
        conf.allow_insecure_key_file = sb_opt_bool(ins, "allow_insecure_key_file");
    if (sb_opt_isset(ins, "tls_verify"))
        conf.tls_verify = sb_opt_bool(ins, "tls_verify");
    if (sb_opt_isset(ins, "connect_timeout"))
        conf.connect_timeout_ms = sb_opt_duration_ms(ins, "connect_timeout");
    if (sb_opt_isset(ins, "timeout"))
        conf.timeout_ms = sb_opt_duration_ms(ins, "timeout");
    if (sb_opt_isset(ins, "max_attempts"))
        conf.max_attempts = (int)sb_opt_int(ins, "max_attempts");
    if (sb_opt_isset(ins, "retry_initial"))
        conf.retry_initial_ms = sb_opt_duration_ms(ins, "retry_initial");
    if (sb_opt_isset(ins, "retry_max_delay"))
        conf.retry_max_delay_ms = sb_opt_duration_ms(ins, "retry_max_delay");
    if (sb_opt_isset(ins, "deadline"))
        conf.deadline_ms = sb_opt_duration_ms(ins, "deadline");

    char *scopes = NULL;
    size_t n = sb_opt_isset(ins, "scopes") ? sb_opt_list_count(ins, "scopes") : 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = sb_opt_list_item(ins, "scopes", i);
        char *j = scopes ? sb_asprintf("%s %s", scopes, s) : sb_strdup(s);
        free(scopes);
        scopes = j;
    }
    conf.scopes = scopes;
    sb_gcp_client *c = sb_gcp_client_new(&conf, errstr, errstr_size);
    free(scopes);
    return c;
}
