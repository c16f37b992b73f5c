/* preflight.c - the checks every Google plugin's preflight() makes: a
 * token, a resource that exists, the permissions held on it. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Preflight asks once or twice, never for minutes: a wrong endpoint should
 * be reported while the operator is still looking. */
#define PF_ATTEMPTS 2
#define PF_DEADLINE_MS 20000

int sb_gcp_preflight_token(sb_gcp_client *c, sb_preflight *pf)
{
    sb_gcp_auth_mode mode = sb_gcp_client_auth_mode(c);
    char what[160], err[1024] = "";
    snprintf(what, sizeof what, "credentials (auth %s) give a token", sb_gcp_auth_mode_name(mode));
    if (mode == SB_GCP_AUTH_NONE) {
        sb_preflight_ok(pf, "credentials: auth none (an emulator or a test endpoint), no token needed");
        return 0;
    }
    char *token = NULL;
    if (sb_gcp_client_token(c, &token, err, sizeof err) != 0) {
        sb_preflight_fail(pf, what, "%s; set key_file (auth service_account), GOOGLE_APPLICATION_CREDENTIALS, or run "
                          "where the metadata server answers (docs/gcp-auth.md)", err);
        return -1;
    }
    free(token);
    sb_preflight_ok(pf, what);
    return 0;
}

/* One failed answer as a check's fix. */
static void report_failure(sb_preflight *pf, const char *what, sb_gcp_result rc, const sb_gcp_response *resp,
                           const char *err, const char *fix_404, const char *roles)
{
    const char *line = resp->error_line ? resp->error_line : err;
    if (rc == SB_GCP_HTTP_ERROR && resp->status == 401)
        sb_preflight_fail(pf, what, "the service refused the token (401: %s); check that the key is not revoked and "
                          "the account is enabled", line);
    else if (rc == SB_GCP_HTTP_ERROR && resp->status == 403)
        sb_preflight_fail(pf, what, "permission denied (403: %s); grant the service account %s", line,
                          roles ? roles : "the role the plugin's README section names");
    else if (rc == SB_GCP_HTTP_ERROR && resp->status == 404)
        sb_preflight_fail(pf, what, "not found (404: %s); %s", line, fix_404 ? fix_404 : "check the name");
    else if (rc == SB_GCP_AUTH_ERROR)
        sb_preflight_fail(pf, what, "no token: %s", err);
    else if (rc == SB_GCP_HTTP_ERROR)
        sb_preflight_fail(pf, what, "HTTP %ld: %s", resp->status, line);
    else
        sb_preflight_fail(pf, what, "could not reach the service: %s; check endpoint, proxy and network", err);
}

int sb_gcp_preflight_get(sb_gcp_client *c, sb_preflight *pf, const char *url, const char *what, const char *fix_404,
                         const char *roles, json_t **body)
{
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.method = "GET";
    req.url = url;
    req.idempotent = 1;
    req.max_attempts = PF_ATTEMPTS;
    req.deadline_ms = PF_DEADLINE_MS;
    sb_gcp_response resp;
    char err[1024] = "";
    sb_gcp_result rc = sb_gcp_request_send(c, &req, &resp, err, sizeof err);
    int out = 0;
    if (body)
        *body = NULL;
    if (rc == SB_GCP_OK) {
        sb_preflight_ok(pf, what);
        if (body)
            *body = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
    } else {
        report_failure(pf, what, rc, &resp, err, fix_404, roles);
        out = -1;
    }
    sb_gcp_response_clear(&resp);
    return out;
}

int sb_gcp_preflight_permissions(sb_gcp_client *c, sb_preflight *pf, const char *post_url, const char *get_url,
                                 const char *const *perms, const char *what, const char *roles)
{
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    static const char *const json_headers[] = {"Content-Type: application/json", NULL};
    char *url = NULL, *text = NULL;
    if (post_url) {
        json_t *list = json_array();
        for (size_t i = 0; perms[i]; i++)
            json_array_append_new(list, json_string(perms[i]));
        json_t *b = json_pack("{s:o}", "permissions", list);
        text = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        req.method = "POST";
        req.url = post_url;
        req.headers = json_headers;
        req.body = text;
        req.body_len = text ? strlen(text) : 0;
    } else {
        size_t len = strlen(get_url) + 1;
        for (size_t i = 0; perms[i]; i++)
            len += strlen(perms[i]) + 14;
        url = malloc(len);
        if (!url)
            abort();
        strcpy(url, get_url);
        for (size_t i = 0; perms[i]; i++) {
            strcat(url, i ? "&permissions=" : "?permissions=");
            strcat(url, perms[i]); /* permission names are [a-zA-Z.]: nothing to escape */
        }
        req.method = "GET";
        req.url = url;
    }
    req.idempotent = 1; /* testIamPermissions changes nothing */
    req.max_attempts = PF_ATTEMPTS;
    req.deadline_ms = PF_DEADLINE_MS;
    sb_gcp_response resp;
    char err[1024] = "";
    sb_gcp_result rc = sb_gcp_request_send(c, &req, &resp, err, sizeof err);
    int out = 0;
    if (rc != SB_GCP_OK) {
        report_failure(pf, what, rc, &resp, err, "check the name", roles);
        out = -1;
    } else {
        json_t *root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        json_t *held = json_object_get(root, "permissions");
        char missing[1024] = "";
        size_t used = 0;
        for (size_t i = 0; perms[i]; i++) {
            int found = 0;
            size_t k;
            json_t *v;
            json_array_foreach(held, k, v) found |= json_is_string(v) && strcmp(json_string_value(v), perms[i]) == 0;
            if (!found) {
                int w = snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", perms[i]);
                if (w > 0 && (size_t)w < sizeof missing - used)
                    used += (size_t)w;
            }
        }
        if (used) {
            sb_preflight_fail(pf, what, "missing %s; grant the service account %s", missing,
                              roles ? roles : "a role that holds them");
            out = -1;
        } else {
            sb_preflight_ok(pf, what);
        }
        json_decref(root);
    }
    sb_gcp_response_clear(&resp);
    free(url);
    free(text);
    return out;
}

int sb_gcp_preflight_resource(sb_gcp_client *c, sb_preflight *pf, const char *url, const char *what,
                              const char *fix_404, const char *viewer_roles, const char *const *perms,
                              const char *perms_what, const char *user_roles)
{
    if (sb_gcp_preflight_get(c, pf, url, what, fix_404, viewer_roles, NULL) != 0)
        return -1;
    /* Cloud Storage spells testIamPermissions as a GET on a sub-resource;
     * the other APIs as Google's custom-method POST. */
    int storage = strstr(url, "/storage/v1/b/") != NULL;
    char *turl = sb_asprintf(storage ? "%s/iam/testPermissions" : "%s:testIamPermissions", url);
    int rc = sb_gcp_preflight_permissions(c, pf, storage ? NULL : turl, storage ? turl : NULL, perms, perms_what,
                                          user_roles);
    free(turl);
    return rc;
}
