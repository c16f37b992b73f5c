/*
 * tailer.c - glob, inotify/polling, rotation, truncation and per-file
 * positions for the filewatch source (see tailer.h).
 *
 * Every wake-up runs one cycle: scan the globs (a file is tracked by
 * device and inode, so a rename inside the globs is just a new path),
 * then read every tracked file to its end. A file no longer at any
 * matching path (renamed away or deleted) is still read through its open
 * descriptor, because the writer may still be finishing the run in it,
 * until no data has come for rotate_wait; then it ends and is forgotten.
 * inotify only decides when to wake; the cycle never trusts it for what
 * changed, so an overflowed queue or a network file system (inotify
 * off) costs latency, never data.
 */
#include "tailer.h"
#include "runreplicator.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FP_BYTES 256
#define READ_CHUNK 65536

struct fw_file {
    char *path;
    dev_t dev;
    ino_t ino;
    int fd;
    int wd;             /* inotify watch on the file, -1 none */
    int64_t off;        /* offset of buf[0]: everything before is consumed */
    int64_t pos;        /* read position of fd (off + len) */
    char *buf;
    size_t len, cap;
    int skipping;       /* inside an over-long line: drop up to its newline */
    int64_t skip_start; /* where that line starts: the checkpoint stays there */
    uint64_t fp;
    int fpn;
    int seen;           /* found by the current scan */
    int64_t gone_since; /* monotonic ms when it left its path, 0 = live */
    void *user;
    struct fw_file *next;
};

typedef struct known {
    char *path;
    uintmax_t dev, ino;
    int64_t off;
    uint64_t fp;
    int fpn;
} known;

struct fw_tailer {
    fw_tailer_conf c;
    fw_handler h;
    fw_file *files;
    known *known;
    size_t nknown;
    int first_start; /* no checkpoint at all */
    int scanned;     /* the first scan has applied `known` */
    int ino_fd;      /* -1 when polling */
    int *dir_wd;     /* per pattern */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *fw_file_path(const fw_file *f) { return f->path; }
dev_t fw_file_dev(const fw_file *f) { return f->dev; }
ino_t fw_file_ino(const fw_file *f) { return f->ino; }
void **fw_file_user(fw_file *f) { return &f->user; }

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Fingerprint of the first min(size, FP_BYTES) bytes. */
static int fingerprint(int fd, uint64_t *fp, int *fpn)
{
    unsigned char b[FP_BYTES];
    ssize_t n = pread(fd, b, sizeof b, 0);
    if (n < 0)
        return -1;
    *fp = fnv1a(b, (size_t)n);
    *fpn = (int)n;
    return 0;
}

/* Fingerprint of the first n bytes (to compare with a stored one). */
static int fingerprint_n(int fd, int n, uint64_t *fp)
{
    unsigned char b[FP_BYTES];
    if (n < 0 || n > FP_BYTES)
        return -1;
    ssize_t got = pread(fd, b, (size_t)n, 0);
    if (got != n)
        return -1;
    *fp = fnv1a(b, (size_t)n);
    return 0;
}

fw_tailer *fw_tailer_new(const fw_tailer_conf *conf, const fw_handler *h, char *errstr, size_t errstr_size)
{
    fw_tailer *t = calloc(1, sizeof *t);
    if (!t || !(t->dir_wd = calloc(conf->npaths ? conf->npaths : 1, sizeof *t->dir_wd))) {
        free(t);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    t->c = *conf;
    t->h = *h;
    t->ino_fd = -1;
    for (size_t i = 0; i < conf->npaths; i++)
        t->dir_wd[i] = -1;
    if (conf->use_inotify) {
        t->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (t->ino_fd < 0)
            sb_log(conf->ins, SB_LOG_WARN, "inotify unavailable (%s); polling every %" PRId64 "ms", strerror(errno),
                   conf->poll_ms);
    }
    return t;
}

static void forget_known(fw_tailer *t)
{
    for (size_t i = 0; i < t->nknown; i++)
        free(t->known[i].path);
    free(t->known);
    t->known = NULL;
    t->nknown = 0;
}

static void file_close(fw_tailer *t, fw_file *f)
{
    if (t->h.close)
        t->h.close(t->h.ctx, f);
    if (f->wd >= 0 && t->ino_fd >= 0)
        inotify_rm_watch(t->ino_fd, f->wd); /* fails harmlessly if the kernel already dropped it */
    if (f->fd >= 0)
        close(f->fd);
    free(f->buf);
    free(f->path);
    free(f);
}

void fw_tailer_free(fw_tailer *t)
{
    if (!t)
        return;
    while (t->files) {
        fw_file *f = t->files;
        t->files = f->next;
        file_close(t, f);
    }
    forget_known(t);
    if (t->ino_fd >= 0)
        close(t->ino_fd);
    free(t->dir_wd);
    free(t);
}

void fw_tailer_restore(fw_tailer *t, const char *checkpoint)
{
    forget_known(t);
    t->scanned = 0;
    t->first_start = checkpoint == NULL;
    if (!checkpoint)
        return;
    json_error_t jerr;
    json_t *root = json_loads(checkpoint, 0, &jerr);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    if (!json_is_array(files)) {
        sb_log(t->c.ins, SB_LOG_ERROR, "checkpoint not understood (%s); every file is read from the start",
               root ? "no files" : jerr.text);
        json_decref(root);
        return;
    }
    t->known = calloc(json_array_size(files) + 1, sizeof *t->known);
    if (!t->known) {
        sb_log(t->c.ins, SB_LOG_ERROR, "out of memory reading the checkpoint; every file is read from the start "
               "(runs already accepted are recognised by their ids)");
        json_decref(root);
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(files, i, e)
    {
        const char *p = json_string_value(json_object_get(e, "p"));
        const char *h = json_string_value(json_object_get(e, "h"));
        if (!p || !h)
            continue;
        known *k = &t->known[t->nknown];
        k->dev = (uintmax_t)json_integer_value(json_object_get(e, "d"));
        k->ino = (uintmax_t)json_integer_value(json_object_get(e, "i"));
        k->off = json_integer_value(json_object_get(e, "o"));
        k->fpn = (int)json_integer_value(json_object_get(e, "n"));
        k->fp = strtoull(h, NULL, 16);
        k->path = strdup(p);
        if (k->path)
            t->nknown++;
    }
    json_decref(root);
}

char *fw_tailer_checkpoint(fw_tailer *t)
{
    json_t *files = json_array();
    for (fw_file *f = t->files; f; f = f->next) {
        if (f->fpn < FP_BYTES && f->pos > f->fpn)
            fingerprint(f->fd, &f->fp, &f->fpn); /* the file has grown: widen the fingerprint */
        /* Inside an over-long line, point at its start: after a restart it
         * is skipped again, never read from its middle as a line of its own. */
        int64_t next = f->skipping ? f->skip_start : f->off;
        int64_t at = t->h.resume ? t->h.resume(t->h.ctx, f, next) : next;
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, f->fp);
        json_array_append_new(files, json_pack("{s:s, s:I, s:I, s:I, s:s, s:i}", "p", f->path, "d",
                                               (json_int_t)f->dev, "i", (json_int_t)f->ino, "o", (json_int_t)at,
                                               "h", hex, "n", f->fpn));
    }
    json_t *root = json_pack("{s:i, s:o}", "v", 1, "files", files);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static int excluded(const fw_tailer *t, const char *path)
{
    for (size_t i = 0; i < t->c.nexclude; i++)
        if (fnmatch(t->c.exclude[i], path, FNM_PATHNAME) == 0)
            return 1;
    return 0;
}

static fw_file *find_file(fw_tailer *t, dev_t dev, ino_t ino)
{
    for (fw_file *f = t->files; f; f = f->next)
        if (f->dev == dev && f->ino == ino)
            return f;
    return NULL;
}

/* Where to start a file just found: its checkpoint position when it is
 * the same file, else the start (or the end, at the very first start). */
static int64_t start_offset(fw_tailer *t, fw_file *f, const struct stat *st)
{
    if (!t->scanned) {
        for (size_t i = 0; i < t->nknown; i++) {
            known *k = &t->known[i];
            if (k->dev != (uintmax_t)st->st_dev || k->ino != (uintmax_t)st->st_ino)
                continue;
            uint64_t fp;
            if (fingerprint_n(f->fd, k->fpn, &fp) != 0 || fp != k->fp) {
                sb_log(t->c.ins, SB_LOG_INFO,
                       "%s: not the file the checkpoint knew under this inode (replaced while stopped); reading it "
                       "from the start",
                       f->path);
                return 0;
            }
            if (k->off > (int64_t)st->st_size) {
                sb_log(t->c.ins, SB_LOG_WARN,
                       "%s: shorter (%jd bytes) than the checkpoint's offset %" PRId64
                       " (truncated while stopped); reading it from the start",
                       f->path, (intmax_t)st->st_size, k->off);
                return 0;
            }
            return k->off;
        }
        for (size_t i = 0; i < t->nknown; i++)
            if (strcmp(t->known[i].path, f->path) == 0) {
                sb_log(t->c.ins, SB_LOG_INFO, "%s: replaced while stopped (inode %ju, was %ju); reading it from the start",
                       f->path, (uintmax_t)st->st_ino, t->known[i].ino);
                return 0;
            }
        if (t->first_start && t->c.start_at_end)
            return (int64_t)st->st_size;
    }
    return 0;
}

static int track(fw_tailer *t, const char *path, const struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sb_log(t->c.ins, SB_LOG_WARN, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    fw_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        sb_log(t->c.ins, SB_LOG_ERROR, "%s: out of memory; it is tried again at the next scan", path);
        free(f);
        close(fd);
        return 0;
    }
    f->fd = fd;
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->wd = -1;
    f->seen = 1;
    fingerprint(fd, &f->fp, &f->fpn);
    f->off = f->pos = start_offset(t, f, st);
    if (f->off > 0 && lseek(fd, (off_t)f->off, SEEK_SET) < 0)
        f->off = f->pos = 0;
    if (t->ino_fd >= 0)
        f->wd = inotify_add_watch(t->ino_fd, path, IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF);
    f->next = t->files;
    t->files = f;
    sb_log(t->c.ins, SB_LOG_INFO, "following %s from offset %" PRId64, path, f->off);
    if (t->h.open && t->h.open(t->h.ctx, f) != 0)
        return -1;
    return 0;
}

static void watch_dirs(fw_tailer *t)
{
    if (t->ino_fd < 0)
        return;
    for (size_t i = 0; i < t->c.npaths; i++) {
        if (t->dir_wd[i] >= 0)
            continue;
        char *copy = strdup(t->c.paths[i]);
        if (!copy)
            continue;
        const char *dir = dirname(copy);
        if (!strpbrk(dir, "*?[")) /* a wildcard directory is found by the periodic scan */
            t->dir_wd[i] = inotify_add_watch(t->ino_fd, dir,
                                             IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_MODIFY |
                                                 IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
        free(copy);
    }
}

static int scan(fw_tailer *t)
{
    watch_dirs(t);
    for (fw_file *f = t->files; f; f = f->next)
        f->seen = 0;
    for (size_t i = 0; i < t->c.npaths; i++) {
        glob_t g;
        int rc = glob(t->c.paths[i], GLOB_NOSORT, NULL, &g);
        if (rc != 0) {
            if (rc != GLOB_NOMATCH)
                sb_log(t->c.ins, SB_LOG_WARN, "cannot expand %s", t->c.paths[i]);
            continue;
        }
        for (size_t j = 0; j < g.gl_pathc; j++) {
            const char *p = g.gl_pathv[j];
            struct stat st;
            if (excluded(t, p) || stat(p, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            fw_file *f = find_file(t, st.st_dev, st.st_ino);
            if (f) {
                if (strcmp(f->path, p) != 0) { /* renamed within the globs: same file */
                    char *np = strdup(p);
                    if (np) {
                        sb_log(t->c.ins, SB_LOG_INFO, "%s is now %s", f->path, np);
                        free(f->path);
                        f->path = np;
                    }
                }
                f->seen = 1;
                if (f->gone_since) {
                    f->gone_since = 0;
                }
            } else if (track(t, p, &st) != 0) {
                globfree(&g);
                return -1;
            }
        }
        globfree(&g);
    }
    if (!t->scanned) {
        t->scanned = 1;
        forget_known(t);
    }
    int64_t now = mono_ms();
    for (fw_file *f = t->files; f; f = f->next)
        if (!f->seen && !f->gone_since) {
            struct stat st;
            int deleted = fstat(f->fd, &st) == 0 && st.st_nlink == 0;
            sb_log(t->c.ins, SB_LOG_INFO, "%s was %s; reading it to its end for up to %" PRId64 "ms", f->path,
                   deleted ? "deleted" : "rotated away", t->c.rotate_wait_ms);
            f->gone_since = now;
        }
    return 0;
}

/* One line (without its newline) at `off`; `next` is where the line after starts. */
static int deliver(fw_tailer *t, fw_file *f, char *line, size_t len, int64_t off, int64_t next)
{
    f->off = next; /* before the callback: a checkpoint taken inside it is past this line */
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > t->c.max_line) {
        sb_log(t->c.ins, SB_LOG_WARN, "%s:%" PRId64 ": line of %zu bytes is over max_line (%zu); skipped", f->path, off,
               len, t->c.max_line);
        return 0;
    }
    if (memchr(line, '\0', len)) {
        sb_log(t->c.ins, SB_LOG_WARN, "%s:%" PRId64 ": binary data (NUL bytes) in the line; skipped", f->path, off);
        return 0;
    }
    if (rr_utf8_error_at(line, len) >= 0) {
        sb_log(t->c.ins, SB_LOG_WARN, "%s:%" PRId64 ": invalid UTF-8 in the line; skipped", f->path, off);
        return 0;
    }
    line[len] = '\0';
    return t->h.line ? t->h.line(t->h.ctx, f, line, len, off) : 0;
}

/* Cut complete lines out of f->buf. `eof_line`: the remainder is a line too. */
static int drain_buffer(fw_tailer *t, fw_file *f, int eof_line)
{
    size_t start = 0;
    while (start < f->len) {
        char *nl = memchr(f->buf + start, '\n', f->len - start);
        if (!nl) {
            if (f->skipping) { /* still inside the over-long line */
                f->off += (int64_t)(f->len - start);
                start = f->len;
                break;
            }
            if (f->len - start > t->c.max_line) {
                sb_log(t->c.ins, SB_LOG_WARN, "%s:%" PRId64 ": line longer than max_line (%zu); skipped", f->path,
                       f->off, t->c.max_line);
                f->skipping = 1;
                f->skip_start = f->off;
                f->off += (int64_t)(f->len - start);
                start = f->len;
                break;
            }
            if (eof_line) {
                size_t l = f->len - start;
                int64_t lo = f->off;
                if (deliver(t, f, f->buf + start, l, lo, lo + (int64_t)l) != 0)
                    return -1;
                start = f->len;
            }
            break;
        }
        size_t l = (size_t)(nl - (f->buf + start));
        int64_t lo = f->off;
        if (f->skipping) {
            f->skipping = 0;
            f->off += (int64_t)l + 1;
        } else if (deliver(t, f, f->buf + start, l, lo, lo + (int64_t)l + 1) != 0) {
            start += l + 1;
            memmove(f->buf, f->buf + start, f->len - start);
            f->len -= start;
            return -1;
        }
        start += l + 1;
    }
    memmove(f->buf, f->buf + start, f->len - start);
    f->len -= start;
    return 0;
}

/* Read what is new. Returns bytes read (>= 0) or -1 if a handler stopped. */
static int64_t read_file(fw_tailer *t, fw_file *f)
{
    struct stat st;
    if (fstat(f->fd, &st) == 0 && (int64_t)st.st_size < f->pos) {
        sb_log(t->c.ins, SB_LOG_WARN,
               "%s: truncated (%jd bytes, was read to %" PRId64 "; copytruncate?); reading it from the start", f->path,
               (intmax_t)st.st_size, f->pos);
        if (t->h.reset)
            t->h.reset(t->h.ctx, f);
        lseek(f->fd, 0, SEEK_SET);
        f->off = f->pos = 0;
        f->len = 0;
        f->skipping = 0;
        fingerprint(f->fd, &f->fp, &f->fpn);
    }
    int64_t total = 0;
    for (;;) {
        if (f->cap - f->len < READ_CHUNK) {
            size_t cap = f->cap ? f->cap : READ_CHUNK;
            while (cap - f->len < READ_CHUNK)
                cap *= 2;
            char *b = realloc(f->buf, cap + 1); /* +1: room to NUL-terminate a last line */
            if (!b)
                return total;
            f->buf = b;
            f->cap = cap;
        }
        ssize_t n = read(f->fd, f->buf + f->len, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        f->len += (size_t)n;
        f->pos += n;
        total += n;
        if (drain_buffer(t, f, 0) != 0)
            return -1;
    }
    return total;
}

static int end_file(fw_tailer *t, fw_file *f)
{
    if (f->len > 0 && drain_buffer(t, f, 1) != 0)
        return -1;
    return t->h.end ? t->h.end(t->h.ctx, f) : 0;
}

int fw_tailer_cycle(fw_tailer *t)
{
    if (scan(t) != 0)
        return -1;
    int64_t now = mono_ms();
    fw_file **pp = &t->files;
    while (*pp) {
        fw_file *f = *pp;
        int64_t got = read_file(t, f);
        if (got < 0)
            return -1;
        if (f->gone_since && got > 0)
            f->gone_since = now; /* the writer is still finishing it */
        if (f->gone_since && now - f->gone_since >= t->c.rotate_wait_ms) {
            sb_log(t->c.ins, SB_LOG_INFO, "%s: done with the rotated/deleted file", f->path);
            if (end_file(t, f) != 0)
                return -1;
            *pp = f->next;
            file_close(t, f);
            continue;
        }
        pp = &f->next;
    }
    return 0;
}

int fw_tailer_finish(fw_tailer *t)
{
    for (fw_file *f = t->files; f; f = f->next)
        if (end_file(t, f) != 0)
            return -1;
    return 0;
}

int fw_tailer_wait(fw_tailer *t, sb_source_ctx *ctx)
{
    int64_t wait = t->c.poll_ms, now = mono_ms();
    for (fw_file *f = t->files; f; f = f->next)
        if (f->gone_since) {
            int64_t left = f->gone_since + t->c.rotate_wait_ms - now;
            if (left < wait)
                wait = left < 1 ? 1 : left;
        }
    if (t->ino_fd < 0)
        return sb_source_wait(ctx, (int)wait);
    int64_t until = now + wait;
    while (!sb_source_stopping(ctx)) {
        int64_t left = until - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = t->ino_fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)(left < 100 ? left : 100)); /* slices: notice stopping soon */
        if (rc > 0) {
            char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
            int overflow = 0;
            ssize_t n;
            while ((n = read(t->ino_fd, buf, sizeof buf)) > 0)
                for (char *p = buf; p < buf + n;) {
                    const struct inotify_event *ev = (const struct inotify_event *)p;
                    if (ev->mask & IN_Q_OVERFLOW)
                        overflow = 1;
                    for (size_t i = 0; i < t->c.npaths; i++)
                        if (ev->wd == t->dir_wd[i] && (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)))
                            t->dir_wd[i] = -1; /* the directory went away: watch it again when it is back */
                    p += sizeof *ev + ev->len;
                }
            if (overflow)
                sb_log(t->c.ins, SB_LOG_DEBUG, "inotify queue overflowed; rescanning");
            return 0;
        }
    }
    return 1;
}
