/* multi.c - many transfers on one thread with curl_multi: each transfer is
 * an xfer.c transfer like a blocking one, but a retry delay parks it in
 * the queue with a start time instead of sleeping, so the others go on. */
#include "build_config.h"
#include "gcp_internal.h"
#include "util/util.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* How often the run loop looks at the cancel sources while nothing moves. */
#define POLL_MS 100

typedef struct mx {
    sb_gcp__xfer x;
    sb_gcp_response resp;
    sb_gcp_done_cb done;
    void *opaque;
    CURL *h;        /* while in flight */
    char *token;    /* while in flight */
    int64_t ready_us; /* queued: not before */
    struct mx *next;
    char err[1024];
} mx;

struct sb_gcp_multi {
    sb_gcp_client *c;
    CURLM *m;
    int max_parallel;
    mx *queue, *queue_tail; /* waiting to start, in order */
    mx *active;             /* in flight */
    int nactive;
    size_t pending;
};

sb_gcp_multi *sb_gcp_multi_new(sb_gcp_client *c, int max_parallel, char *errstr, size_t errstr_size)
{
    CURLM *cm = curl_multi_init();
    if (!cm) {
        sb_err(errstr, errstr_size, "curl_multi_init failed");
        return NULL;
    }
    sb_gcp_multi *m = sb_xcalloc(1, sizeof *m);
    m->c = c;
    m->m = cm;
    m->max_parallel = max_parallel > 0 ? max_parallel : 8;
    /* Keep a connection per parallel transfer between runs. */
    curl_multi_setopt(cm, CURLMOPT_MAXCONNECTS, (long)m->max_parallel);
    return m;
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void enqueue(sb_gcp_multi *m, mx *t)
{
    t->next = NULL;
    if (m->queue_tail)
        m->queue_tail->next = t;
    else
        m->queue = t;
    m->queue_tail = t;
}

int sb_gcp_multi_add(sb_gcp_multi *m, const sb_gcp_request *req, sb_gcp_done_cb done, void *opaque, char *errstr,
                     size_t errstr_size)
{
    mx *t = sb_xcalloc(1, sizeof *t);
    if (sb_gcp__xfer_init(&t->x, m->c, req, &t->resp, 0, errstr, errstr_size) != SB_GCP_OK) {
        free(t);
        return -1;
    }
    /* The transfer's url is already copied; the request's own pointer
     * is not read again. */
    t->done = done;
    t->opaque = opaque;
    t->ready_us = 0;
    enqueue(m, t);
    m->pending++;
    return 0;
}

size_t sb_gcp_multi_pending(const sb_gcp_multi *m)
{
    return m->pending;
}

/* A transfer is over: its callback, then it is gone. */
static void finish(sb_gcp_multi *m, mx *t)
{
    if (t->h) {
        sb_gcp__handle_put(m->c, t->h);
        t->h = NULL;
    }
    wipe_free(t->token);
    t->token = NULL;
    m->pending--;
    if (t->done)
        t->done(m, t->opaque, t->x.result, &t->resp, t->err);
    sb_gcp_response_clear(&t->resp);
    sb_gcp__xfer_free(&t->x);
    free(t);
}

static void unlink_active(sb_gcp_multi *m, mx *t)
{
    for (mx **p = &m->active; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            break;
        }
    t->next = NULL;
    curl_multi_remove_handle(m->m, t->h);
    m->nactive--;
}

/* Start the queued transfers whose time has come, while slots are free.
 * Returns the time until the earliest queued one is due (ms; -1 none). */
static int64_t start_ready(sb_gcp_multi *m, sb_gcp_cancel *cancel)
{
    int64_t now = sb_mono_us(), next = -1;
    mx **p = &m->queue, *prev = NULL;
    while (*p) {
        mx *t = *p;
        if (t->ready_us > now || m->nactive >= m->max_parallel) {
            int64_t due_ms = (t->ready_us - now + 999) / 1000; /* rounded up: no spin in its last ms */
            if (t->ready_us > now && (next < 0 || due_ms < next))
                next = due_ms;
            else if (t->ready_us <= now)
                next = 0; /* due, but no slot */
            prev = t;
            p = &t->next;
            continue;
        }
        *p = t->next; /* off the queue */
        if (m->queue_tail == t)
            m->queue_tail = prev;
        t->next = NULL;
        t->x.run_cancel = cancel;
        if (t->x.resp->attempts == 0) {
            /* The deadline counts from the first attempt, not from the
             * time spent queued behind the others. */
            t->x.start_us = sb_mono_us();
            t->x.deadline_us = t->x.start_us + t->x.deadline_ms * 1000;
        }
        if (sb_gcp__xfer_cancelled(&t->x)) {
            sb_gcp__xfer_end_cancelled(&t->x, t->err, sizeof t->err);
            finish(m, t);
            continue;
        }
        int64_t wait_ms = 0;
        if (sb_gcp__xfer_wants_token(&t->x) &&
            sb_gcp__token(m->c, 1, &t->token, &wait_ms, t->err, sizeof t->err) != 0) {
            sb_gcp__xfer_end_no_token(&t->x, wait_ms, t->err, sizeof t->err);
            finish(m, t);
            continue;
        }
        t->h = sb_gcp__handle_get(m->c);
        if (!t->h) {
            t->x.result = SB_GCP_TRANSPORT_ERROR;
            sb_err(t->err, sizeof t->err, "%s %s: curl_easy_init failed", t->x.method, t->x.surl);
            finish(m, t);
            continue;
        }
        sb_gcp__xfer_prepare(&t->x, t->h, t->token);
        curl_multi_add_handle(m->m, t->h);
        t->next = m->active;
        m->active = t;
        m->nactive++;
    }
    return next;
}

/* Transfers libcurl has finished: done, or back in the queue. */
static void collect(sb_gcp_multi *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->m, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        sb_gcp__xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        mx *t = (mx *)x; /* x is the first member */
        CURLcode rc = msg->data.result;
        unlink_active(m, t);
        int64_t delay = 0;
        int done = sb_gcp__xfer_complete(&t->x, rc, &delay, t->err, sizeof t->err);
        wipe_free(t->token);
        t->token = NULL;
        sb_gcp__handle_put(m->c, t->h);
        t->h = NULL;
        if (done) {
            finish(m, t);
        } else {
            t->ready_us = sb_mono_us() + delay * 1000;
            enqueue(m, t);
        }
    }
}

static void cancel_all(sb_gcp_multi *m)
{
    while (m->active) {
        mx *t = m->active;
        unlink_active(m, t);
        sb_gcp__xfer_end_cancelled(&t->x, t->err, sizeof t->err);
        finish(m, t);
    }
    while (m->queue) {
        mx *t = m->queue;
        m->queue = t->next;
        if (!m->queue)
            m->queue_tail = NULL;
        sb_gcp__xfer_end_cancelled(&t->x, t->err, sizeof t->err);
        finish(m, t);
    }
}

sb_gcp_result sb_gcp_multi_run(sb_gcp_multi *m, sb_gcp_cancel *cancel)
{
    while (m->pending > 0) {
        if (sb_gcp_cancel_is_set(cancel) || sb_gcp_cancel_is_set(&m->c->cancel)) {
            cancel_all(m);
            return SB_GCP_CANCELLED;
        }
        start_ready(m, cancel);
        int running = 0;
        curl_multi_perform(m->m, &running);
        collect(m);
        if (!m->pending)
            break;
        /* Start now what the callbacks just queued (with an idle multi the
         * poll below would otherwise sleep its whole POLL_MS first), and
         * learn when the rest is due. */
        int64_t next = start_ready(m, cancel);
        if (!m->pending) /* what it took out ended there (no token, cancelled) */
            break;
        /* Wait for traffic, the next queued start, or the cancel check. */
        long timeout = POLL_MS;
        curl_multi_timeout(m->m, &timeout);
        if (timeout < 0 || timeout > POLL_MS)
            timeout = POLL_MS;
        if (next >= 0 && next < timeout && m->nactive < m->max_parallel)
            timeout = (long)next;
        if (timeout > 0)
            curl_multi_poll(m->m, NULL, 0, (int)timeout, NULL);
    }
    /* A cancel can also end the run from inside: the transfers' progress
     * callbacks abort the active ones and start_ready() ends the queued
     * ones, leaving nothing pending before the check at the top sees it. */
    if (sb_gcp_cancel_is_set(cancel) || sb_gcp_cancel_is_set(&m->c->cancel))
        return SB_GCP_CANCELLED;
    return SB_GCP_OK;
}

void sb_gcp_multi_destroy(sb_gcp_multi *m)
{
    if (!m)
        return;
    cancel_all(m);
    curl_multi_cleanup(m->m);
    free(m);
}
