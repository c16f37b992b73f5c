/*
 * file_out - sink: append each event to a file as a JSON line (or through
 * a template), optionally fsync'd before the batch is reported done.
 *
 * Delivery is at least once: after a crash between the write and the
 * ledger recording the step, the event is written again on resume. Readers
 * de-duplicate on event_id.
 */
#include <syncbridge/syncbridge.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct file_out {
    sb_instance *ins;
    const char *path;
    const sb_template *tpl;
    int fsync;
    int fd;
} file_out;

static const sb_option_def options[] = {
    {SB_OPT("path", SB_OPT_STRING, NULL, 1, "File to append to (created with mode 0640).")},
    {SB_OPT("template", SB_OPT_TEMPLATE, NULL, 0,
     "Write this text per event instead of the JSON line {\"event_id\",\"source\",\"received_us\",\"fields\"}.")},
    {SB_OPT("fsync", SB_OPT_BOOL, "false", 0, "fsync the file before reporting a batch done.")},
    {0}};

static int fo_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    file_out *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    f->ins = ins;
    f->path = sb_opt_string(ins, "path");
    f->tpl = sb_opt_template(ins, "template");
    f->fsync = sb_opt_bool(ins, "fsync");
    f->fd = -1;
    *self = f;
    return 0;
}

static int fo_start(void *self, char *errstr, size_t errstr_size)
{
    file_out *f = self;
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (f->fd < 0) {
        snprintf(errstr, errstr_size, "cannot open %s: %s", f->path, strerror(errno));
        return -1;
    }
    return 0;
}

static void fo_stop(void *self)
{
    file_out *f = self;
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

static void fo_destroy(void *self)
{
    fo_stop(self);
    free(self);
}

static char *render(file_out *f, sb_event *ev, char *err, size_t errsz)
{
    if (f->tpl)
        return sb_template_render(f->tpl, ev, err, errsz);
    json_t *j = json_pack("{s:s, s:s?, s:I, s:O}", "event_id", sb_event_id(ev), "source", sb_event_source(ev),
                          "received_us", (json_int_t)sb_event_received_us(ev), "fields", sb_event_fields(ev));
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        snprintf(err, errsz, "cannot serialise the event");
    return s;
}

static void fo_process(void *self, sb_batch *b)
{
    file_out *f = self;
    size_t n = sb_batch_count(b), cap = 65536, len = 0;
    char *buf = malloc(cap);
    int *ok = calloc(n ? n : 1, sizeof *ok);
    if (!buf || !ok) {
        for (size_t i = 0; i < n; i++)
            sb_batch_set_result(b, i, SB_RESULT_RETRY, "out of memory");
        free(buf);
        free(ok);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char err[256];
        char *s = render(f, sb_batch_event(b, i), err, sizeof err);
        if (!s) {
            sb_batch_set_result(b, i, SB_RESULT_FAIL, "%s", err);
            continue;
        }
        size_t l = strlen(s);
        if (len + l + 1 > cap) {
            while (len + l + 1 > cap)
                cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(s);
                sb_batch_set_result(b, i, SB_RESULT_RETRY, "out of memory");
                continue;
            }
            buf = nb;
        }
        memcpy(buf + len, s, l);
        buf[len + l] = '\n';
        len += l + 1;
        free(s);
        ok[i] = 1;
    }
    const char *failure = NULL;
    off_t start = lseek(f->fd, 0, SEEK_END); /* this sink is the file's only writer (not concurrent) */
    for (size_t off = 0; off < len && !failure;) {
        ssize_t w = write(f->fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            failure = strerror(errno);
        else if (w == 0)
            failure = "the write made no progress";
        else
            off += (size_t)w;
    }
    /* Leave no half record behind: the retry appends the whole batch again. */
    if (failure && start >= 0 && ftruncate(f->fd, start) != 0)
        sb_log(f->ins, SB_LOG_ERROR, "%s: cannot remove a partly written batch: %s", f->path, strerror(errno));
    if (!failure && f->fsync && fsync(f->fd) != 0)
        failure = strerror(errno);
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            sb_batch_set_result(b, i, failure ? SB_RESULT_RETRY : SB_RESULT_OK, failure ? "write to %s failed: %s" : NULL,
                                f->path, failure);
    free(buf);
    free(ok);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "file_out",
    .kind = SB_KIND_SINK,
    .version = "1.0",
    .description = "Append events to a file as JSON lines (or a template)",
    .options = options,
    .create = fo_create,
    .start = fo_start,
    .process = fo_process,
    .stop = fo_stop,
    .destroy = fo_destroy,
};
