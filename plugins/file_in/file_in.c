/*
 * file_in - source: read a file (or stdin) as lines or JSON lines.
 *
 * Each line becomes one event; the position (device, inode, offset) is
 * committed with the events as the source checkpoint, so a restart
 * continues after the last accepted line and never re-sends or skips one.
 * A file replaced (other inode) or truncated below the checkpoint is read
 * from the start. The tailing of rotating Run Replicator logs with globs
 * and inotify is the job of the filewatch plugin; this one is for tests,
 * demos and batch loads (with --once it stops at end of file).
 */
#include <syncbridge/syncbridge.h>

#include <errno.h>
#include <poll.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

/* The options, validated and filled in by the core. */
typedef struct file_in_conf {
    const char *path;
    int format; /* index into formats[] */
    int follow;
    int64_t batch;
    int64_t poll_ms;
    int64_t max_line;
    const char *id_field;
    int allow_fifo;
} file_in_conf;

enum { FORMAT_LINES, FORMAT_JSON };
static const char *const formats[] = {"lines", "json", NULL};

typedef struct file_in {
    sb_instance *ins;
    const char *path;
    int json;
    int follow;
    size_t batch;
    int64_t poll_ms;
    size_t max_line;
    const char *id_field;
    int allow_fifo;
    /* stdio's buffer for the file open now (one at a time): glibc reads a
     * block (4 KiB) per call with its own, and ignores setvbuf's size when
     * it is not given the buffer. 64 KiB a call made 16 times fewer system
     * calls on a big file (Fluent Bit's tail reads 32 KiB). */
    char iobuf[1 << 16];
} file_in;

static const sb_option_def options[] = {
    {SB_OPT("path", SB_OPT_STRING, NULL, 1, "File to read; \"-\" reads standard input (no checkpoint)."),
     SB_OPT_BIND(file_in_conf, path)},
    {SB_OPT("format", SB_OPT_STRING, "\"lines\"", 0,
            "\"lines\": each line is an event with fields line, file, offset. \"json\": each line is a JSON object "
            "whose members are the event's fields."),
     SB_OPT_CHOICES(formats), SB_OPT_BIND(file_in_conf, format)},
    {SB_OPT("follow", SB_OPT_BOOL, "true", 0, "Keep reading data appended to the file (ignored with --once)."),
     SB_OPT_BIND(file_in_conf, follow)},
    {SB_OPT("batch", SB_OPT_INT, "512", 0, "Lines handed to the core per commit."),
     SB_OPT_RANGE_BIND(1, 1000000, file_in_conf, batch)},
    {SB_OPT("poll_interval", SB_OPT_DURATION, "\"250ms\"", 0, "How often to look for appended data when following."),
     SB_OPT_RANGE_BIND(1, 3600000, file_in_conf, poll_ms)},
    {SB_OPT("max_line", SB_OPT_SIZE, "\"1MB\"", 0, "Longer lines are reported and skipped."),
     SB_OPT_RANGE_BIND(1, 1LL << 30, file_in_conf, max_line)},
    {SB_OPT("id_field", SB_OPT_STRING, NULL, 0,
            "JSON format: take the event id from this field when present (else "
            "file:<dev>:<inode>:<offset>:<line hash>)."),
     SB_OPT_BIND(file_in_conf, id_field)},
    {SB_OPT("allow_fifo", SB_OPT_BOOL, "false", 0,
            "Read a named pipe (FIFO). Off: a FIFO is refused, since reading one waits for a writer and has no "
            "position to resume from."),
     SB_OPT_BIND(file_in_conf, allow_fifo)},
    {0}};

static int fi_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    const file_in_conf *c = sb_instance_config(ins);
    file_in *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    f->ins = ins;
    f->path = c->path;
    f->json = c->format == FORMAT_JSON;
    f->follow = c->follow && !sb_instance_once(ins);
    f->batch = (size_t)c->batch;
    f->poll_ms = c->poll_ms;
    f->max_line = (size_t)c->max_line;
    f->id_field = c->id_field;
    f->allow_fifo = c->allow_fifo;
    *self = f;
    return 0;
}

static void fi_destroy(void *self)
{
    free(self);
}

/* FNV-1a: part of a line's fallback event id, so that new data at an old
 * position (a truncated file re-read, an inode reused) is not taken for a
 * duplicate of what the ledger already holds. */
static uint64_t line_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* The id of a line without one of its own: its device, inode, offset and
 * hash. */
static void fallback_id(char id[160], const struct stat *st, int64_t offset, const char *line, size_t len)
{
    snprintf(id, 160, "file:%ju:%ju:%" PRId64 ":%016" PRIx64, (uintmax_t)st->st_dev, (uintmax_t)st->st_ino, offset,
             line_hash(line, len));
}

/* Build the event for one complete line; NULL if it is unusable (reported,
 * errno EINVAL) or memory ran out (errno ENOMEM: the line is fine, read it
 * again rather than skip it). */
static sb_event *line_event(file_in *f, const struct stat *st, int64_t offset, char *line, size_t len)
{
    char id[160];
    if (!f->json) {
        fallback_id(id, st, offset, line, len);
        json_t *text = json_stringn(line, len);
        if (!text) {
            sb_log(f->ins, SB_LOG_ERROR, "%s: line at offset %" PRId64 " skipped: not valid UTF-8", f->path, offset);
            errno = EINVAL;
            return NULL;
        }
        sb_event *ev = sb_event_new(id);
        if (!ev || json_object_set_new(sb_event_fields(ev), "line", text) != 0 ||
            sb_event_set_string(ev, "file", f->path) != 0 || sb_event_set_int(ev, "offset", offset) != 0) {
            if (!ev)
                json_decref(text);
            sb_event_free(ev);
            errno = ENOMEM;
            return NULL;
        }
        return ev;
    }
    /* the SDK's decoder, so that a JSON line reads as a JSON message does in kafka and pubsub_pull */
    char err[256];
    sb_decode_opts o = SB_DECODE_OPTS_INIT;
    o.format = SB_DECODE_JSON;
    o.id_field = f->id_field;
    sb_event *ev = NULL;
    int rc = SB_DECODE_INVALID;
    /* With id_field set, lines nearly always carry their own id: decode
     * without a fallback first (an empty one is refused), which spares the
     * line's hash and the id's printf, a fifth of this thread's time. A line
     * without it (or not JSON) is decoded a second time, with the fallback:
     * looking for the name in each line first cost every line 1.4 % of the
     * daemon's CPU (docs/benchmarks.md). */
    if (f->id_field)
        rc = sb_decode_body(&o, "", line, len, &ev, err, sizeof err);
    if (rc == SB_DECODE_INVALID) {
        fallback_id(id, st, offset, line, len);
        rc = sb_decode_body(&o, id, line, len, &ev, err, sizeof err);
    }
    if (rc == SB_DECODE_INVALID)
        sb_log(f->ins, SB_LOG_ERROR, "%s: line at offset %" PRId64 " skipped: %s", f->path, offset, err);
    if (rc != 0)
        errno = rc == SB_DECODE_NOMEM ? ENOMEM : EINVAL;
    return ev;
}

static int parse_checkpoint(const char *cp, const struct stat *st, int64_t *offset)
{
    uintmax_t dev, ino;
    int64_t off;
    if (!cp || sscanf(cp, "%ju:%ju:%" SCNd64, &dev, &ino, &off) != 3)
        return 0;
    if (dev != (uintmax_t)st->st_dev || ino != (uintmax_t)st->st_ino || off > (int64_t)st->st_size)
        return 0; /* replaced or truncated: start over */
    *offset = off;
    return 1;
}

/* Read until stopping, end of input (not following), or the file being
 * replaced (returns 1: reopen). 0 = done, -1 = failed. */
/* Open the path without ever blocking (a FIFO's open waits for a writer,
 * and would not see SIGTERM). A directory is an error; a FIFO only with
 * allow_fifo, and then it stays non-blocking (*fifo = 1). NULL when
 * refused or failed (logged). */
static FILE *open_input(file_in *f, struct stat *st, int *fifo)
{
    *fifo = 0;
    int fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        sb_log(f->ins, SB_LOG_ERROR, "cannot open %s: %s", f->path, strerror(errno));
        return NULL;
    }
    const char *refused = NULL;
    if (fstat(fd, st) != 0)
        refused = strerror(errno);
    else if (S_ISDIR(st->st_mode))
        refused = "it is a directory; path names one file";
    else if (S_ISFIFO(st->st_mode) && !f->allow_fifo)
        refused = "it is a FIFO (named pipe): reading one waits for a writer and cannot resume from a position; "
                  "set allow_fifo to read it anyway";
    else if (!S_ISREG(st->st_mode) && !S_ISFIFO(st->st_mode) && !S_ISCHR(st->st_mode))
        refused = "it is not a regular file";
    if (refused) {
        sb_log(f->ins, SB_LOG_ERROR, "cannot read %s: %s", f->path, refused);
        close(fd);
        return NULL;
    }
    *fifo = S_ISFIFO(st->st_mode);
    if (!*fifo) /* the non-blocking open was only for the open itself */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        sb_log(f->ins, SB_LOG_ERROR, "cannot read %s: %s", f->path, strerror(errno));
        close(fd);
        return NULL;
    }
    setvbuf(fp, f->iobuf, _IOFBF, sizeof f->iobuf);
    /* only this source's thread uses it: no lock per line (getline took
     * one, an atomic instruction per line; docs/benchmarks.md) */
    __fsetlocking(fp, FSETLOCKING_BYCALLER);
    return fp;
}

/* Whether a FIFO's EOF is its end: a writer came and closed it. A read
 * before any writer opened the FIFO also returns EOF, but Linux then
 * reports no POLLHUP (only once a writer has been and gone), so a reader
 * that started first waits for its writer instead of ending empty. */
static int fifo_ended(FILE *fp)
{
    struct pollfd p = {.fd = fileno(fp), .events = POLLIN};
    if (poll(&p, 1, 0) < 0)
        return 1;
    return (p.revents & POLLHUP) && !(p.revents & POLLIN);
}

static int read_file(file_in *f, sb_source_ctx *ctx)
{
    int is_fifo = 0;
    struct stat st;
    FILE *fp;
    /* a FIFO, like stdin, is a stream: no position to checkpoint or re-read */
    int is_stdin = strcmp(f->path, "-") == 0;
    if (is_stdin) {
        fp = stdin;
        if (fstat(fileno(fp), &st) != 0) {
            sb_log(f->ins, SB_LOG_ERROR, "cannot stat standard input: %s", strerror(errno));
            return -1;
        }
    } else {
        fp = open_input(f, &st, &is_fifo);
        if (!fp)
            return -1;
    }
    int is_stream = is_stdin || is_fifo;
    int64_t offset = 0;
    if (sb_source_flush(ctx) != 0) { /* the checkpoint must be the committed one */
        if (!is_stdin)
            fclose(fp);
        return -1;
    }
    if (!is_stream && parse_checkpoint(sb_source_checkpoint(ctx), &st, &offset) && fseeko(fp, offset, SEEK_SET) != 0) {
        sb_log(f->ins, SB_LOG_ERROR, "cannot seek %s to %" PRId64 ": %s", f->path, offset, strerror(errno));
        fclose(fp);
        return -1;
    }
    sb_event **evs = calloc(f->batch, sizeof *evs);
    if (!evs) {
        sb_log(f->ins, SB_LOG_ERROR, "out of memory for a batch of %zu lines", f->batch);
        if (!is_stdin)
            fclose(fp);
        return -1;
    }
    sb_strbuf carry = {0}; /* FIFO: the start of a line whose rest has not come yet */
    char *line = NULL;
    size_t cap = 0, n = 0;
    int rc = 0;
    char cp[128];
    while (!sb_source_stopping(ctx)) {
        errno = 0;
        ssize_t len = getline(&line, &cap, fp);
        int at_eof = len < 0;
        if (is_fifo && len > 0 && line[len - 1] != '\n' && (ferror(fp) || f->follow)) {
            /* the writer has not finished the line: a pipe cannot be re-read,
             * so keep what came and wait for the rest */
            sb_strbuf_add(&carry, line, (size_t)len);
            at_eof = 1;
            len = -1;
        } else if (is_fifo && len > 0 && carry.len) {
            sb_strbuf_add(&carry, line, (size_t)len);
            free(line);
            line = carry.p;
            cap = carry.cap;
            len = (ssize_t)carry.len;
            carry = (sb_strbuf){0};
        }
        if (at_eof && is_fifo && (errno == EAGAIN || ferror(fp) || (feof(fp) && (f->follow || !fifo_ended(fp))))) {
            /* no data yet (EAGAIN), no writer yet (EOF before any came), or,
             * when following, no writer any more: wait, interruptibly, and
             * look again */
            clearerr(fp);
            if (n > 0 && sb_source_emit_async(ctx, evs, n, NULL) != 0) {
                n = 0;
                rc = sb_source_stopping(ctx) ? 0 : -1;
                break;
            }
            n = 0;
            if (sb_source_wait(ctx, (int)f->poll_ms))
                break;
            continue;
        }
        if (!at_eof && line[len - 1] != '\n') {
            /* A partial last line: wait for its newline (re-read it later). */
            if (f->follow) {
                fseeko(fp, -(off_t)len, SEEK_CUR);
                clearerr(fp);
                at_eof = 1;
            }
        }
        if (!at_eof) {
            size_t l = (size_t)len;
            int64_t line_off = offset;
            offset += len;
            while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
                l--;
            if (l > f->max_line) {
                sb_log(f->ins, SB_LOG_ERROR, "%s: line at offset %" PRId64 " is %zu bytes, over max_line; skipped",
                       f->path, line_off, l);
            } else if (l > 0) {
                sb_event *ev = line_event(f, &st, line_off, line, l);
                int why = ev ? 0 : errno;
                /* stdin cannot be read again: wait for memory and build the line anew */
                while (!ev && why == ENOMEM && is_stream && !sb_source_wait(ctx, 100)) {
                    ev = line_event(f, &st, line_off, line, l);
                    why = ev ? 0 : errno;
                }
                if (ev) {
                    evs[n++] = ev;
                } else if (why == ENOMEM) {
                    /* not past this line: the batch so far is dropped unacknowledged and re-read
                     * (stdin: only when stopping, when nothing can be re-read anyway) */
                    sb_log(f->ins, SB_LOG_ERROR, "%s: out of memory at offset %" PRId64 "; %s", f->path, line_off,
                           is_stream ? "stopping" : "reading again");
                    rc = -1;
                    break;
                }
            }
        }
        if (n == f->batch || (at_eof && n > 0) || (at_eof && !is_stream && n == 0 && offset > 0 && !f->follow)) {
            snprintf(cp, sizeof cp, "%ju:%ju:%" PRId64, (uintmax_t)st.st_dev, (uintmax_t)st.st_ino, offset);
            /* async: the next batch is read while this one commits; the
             * checkpoint goes with it, so a crash resumes after the last
             * committed batch */
            if (sb_source_emit_async(ctx, evs, n, is_stream ? NULL : cp) != 0) {
                n = 0;
                rc = sb_source_stopping(ctx) ? 0 : -1;
                break;
            }
            n = 0;
        }
        if (at_eof && !is_stream && ferror(fp)) {
            sb_log(f->ins, SB_LOG_ERROR, "cannot read %s: %s", f->path, strerror(errno));
            rc = -1;
            break;
        }
        if (at_eof) {
            if (!f->follow || is_stream)
                break;
            clearerr(fp);
            struct stat now;
            if (stat(f->path, &now) == 0 && (now.st_ino != st.st_ino || now.st_size < offset)) {
                sb_log(f->ins, SB_LOG_INFO, "%s was replaced or truncated; reading it from the start", f->path);
                rc = 1;
                break;
            }
            if (sb_source_wait(ctx, (int)f->poll_ms))
                break;
        }
    }
    for (size_t i = 0; i < n; i++)
        sb_event_free(evs[i]);
    free(evs);
    free(line);
    free(carry.p);
    if (!is_stdin)
        fclose(fp);
    return rc;
}

static int fi_run(void *self, sb_source_ctx *ctx)
{
    int rc;
    while ((rc = read_file(self, ctx)) == 1 && !sb_source_stopping(ctx))
        ;
    return rc == 1 ? 0 : rc;
}

/* `syncbridge preflight`: the input is there, is what open_input()
 * accepts, and this user may read it. Read-only: nothing is opened (a
 * FIFO's open would count as its reader, a device's may do anything). */
static void fi_preflight(void *self, sb_preflight *pf)
{
    file_in *f = self;
    if (strcmp(f->path, "-") == 0) {
        sb_preflight_ok(pf, "input \"-\" is the daemon's standard input (nothing to check)");
        return;
    }
    char *what = sb_asprintf("input %s is a readable file", f->path);
    struct stat st;
    if (stat(f->path, &st) != 0) {
        if (errno == ENOENT)
            sb_preflight_fail(pf, what, "it does not exist: create it or fix path (the source fails until "
                              "it is there)");
        else if (errno == EACCES)
            sb_preflight_fail(pf, what, "%s: give the daemon's user execute permission on the directories "
                              "above it", strerror(errno));
        else
            sb_preflight_fail(pf, what, "%s: fix path", strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        sb_preflight_fail(pf, what, "it is a directory; path names one file (filewatch follows directories "
                          "of files)");
    } else if (S_ISFIFO(st.st_mode) && !f->allow_fifo) {
        sb_preflight_fail(pf, what, "it is a FIFO (named pipe): set allow_fifo to read it as a stream, or "
                          "fix path");
    } else if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
        sb_preflight_fail(pf, what, "it is not a regular file: fix path");
    } else if (access(f->path, R_OK) != 0) {
        sb_preflight_fail(pf, what, "%s: give the daemon's user read permission on it", strerror(errno));
    } else {
        const char *kind = S_ISFIFO(st.st_mode) ? "a FIFO, read as a stream" : "a device";
        char *ok = S_ISREG(st.st_mode) ? sb_asprintf("%s (%jd bytes)", what, (intmax_t)st.st_size)
                                       : sb_asprintf("%s (%s)", what, kind);
        sb_preflight_ok(pf, ok);
        free(ok);
    }
    free(what);
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "file_in",
    .kind = SB_KIND_SOURCE,
    .version = "1.0",
    .description = "Read a file or stdin as lines or JSON lines (checkpointed)",
    .options = options,
    .config_size = sizeof(file_in_conf),
    .create = fi_create,
    .run = fi_run,
    .destroy = fi_destroy,
    .preflight = fi_preflight,
};
