/* settle.c - one answer from a Google API becomes per-event results, the
 * same way in every Google plugin (the table is in syncbridge/gcp.h). */
#include "build_config.h"
#include "gcp_internal.h"

sb_gcp_outcome sb_gcp_classify(sb_gcp_result rc, const sb_gcp_response *resp, const char *errstr, unsigned flags)
{
    sb_gcp_outcome o = {.result = SB_RESULT_RETRY, .cause = SB_GCP_CAUSE_TRANSIENT};
    long st = resp ? resp->status : 0;
    o.reason = resp && resp->error_line ? resp->error_line : (errstr && *errstr ? errstr : "no answer");
    switch (rc) {
    case SB_GCP_OK:
        o.result = SB_RESULT_OK;
        o.cause = SB_GCP_CAUSE_NONE;
        o.reason = NULL;
        return o;
    case SB_GCP_INVALID:
        o.result = SB_RESULT_FAIL;
        o.cause = SB_GCP_CAUSE_REFUSED;
        return o;
    case SB_GCP_CANCELLED:
        o.cause = SB_GCP_CAUSE_CANCELLED;
        o.reason = errstr && *errstr ? errstr : "cancelled: the daemon is stopping";
        return o;
    case SB_GCP_AUTH_ERROR:
        o.cause = SB_GCP_CAUSE_AUTH;
        o.reason = errstr && *errstr ? errstr : o.reason;
        o.retry_after_ms = resp && resp->retry_after_ms > 0 ? resp->retry_after_ms : 0;
        return o;
    case SB_GCP_TRANSPORT_ERROR:
        o.reason = errstr && *errstr ? errstr : o.reason;
        return o;
    case SB_GCP_HTTP_ERROR:
        break;
    }
    if (st == 401 || st == 403) {
        o.cause = SB_GCP_CAUSE_AUTH;
    } else if (st == 404) {
        o.cause = SB_GCP_CAUSE_NOT_FOUND;
        o.result = (flags & SB_GCP_404_RETRY) ? SB_RESULT_RETRY : SB_RESULT_FAIL;
    } else if (st == 409) {
        o.cause = SB_GCP_CAUSE_EXISTS;
        o.result = (flags & SB_GCP_409_OK) ? SB_RESULT_OK : SB_RESULT_FAIL;
    } else if (st < 500 && !sb_gcp__status_retriable(st)) { /* every 5xx is the service's trouble */
        o.cause = SB_GCP_CAUSE_REFUSED;
        o.result = SB_RESULT_FAIL;
    }
    if (o.result == SB_RESULT_RETRY && resp) {
        int64_t after = sb_gcp_retry_after_ms(resp->retry_after);
        if (resp->retry_after_ms > after)
            after = resp->retry_after_ms;
        o.retry_after_ms = after > 0 ? after : 0;
    }
    return o;
}

/* One reading of an answer everywhere: "retriable" is what classify calls
 * RETRY, with no plugin flags. */
int sb_gcp_result_retriable(sb_gcp_result rc, const sb_gcp_response *resp)
{
    return sb_gcp_classify(rc, resp, NULL, 0).result == SB_RESULT_RETRY;
}

sb_gcp_outcome sb_gcp_settle(sb_batch *b, const size_t *idx, size_t n, sb_gcp_result rc,
                             const sb_gcp_response *resp, const char *errstr, unsigned flags)
{
    sb_gcp_outcome o = sb_gcp_classify(rc, resp, errstr, flags);
    for (size_t k = 0; k < n; k++) {
        size_t i = idx ? idx[k] : k;
        if (o.result == SB_RESULT_OK)
            sb_batch_set_result(b, i, SB_RESULT_OK, NULL);
        else
            sb_batch_set_result(b, i, o.result, "%s", o.reason);
        if (o.retry_after_ms > 0)
            sb_batch_set_retry_after(b, i, o.retry_after_ms);
    }
    return o;
}
