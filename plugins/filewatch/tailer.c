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
#include "build_config.h"
#include "tailer.h"
#include "runreplicator.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <dirent.h>
#include <glob.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FP_BYTES 256
#define READ_CHUNK 65536
#define FINISH_ATTEMPTS 4 /* --once: tries of a file whose open or read failed, before it counts as unreadable */

struct fw_file {
    /* Kept small: one per file of a directory of 100,000 (flags as bits,
     * the partial-line state as narrow as its limits allow). */
    char *path;
    dev_t dev;
    ino_t ino;
    int64_t off;        /* offset of buf[0]: everything before is consumed */
    int64_t pos;        /* read position (off + len) */
    char *buf;          /* only while a partial line waits */
    size_t len, cap;
    int64_t skip_start; /* where an over-long line starts: the checkpoint stays there */
    uint64_t fp;
    int64_t ckpt_off;
    int64_t size_seen;  /* size at the last stat */
    int64_t mtime;
    int64_t gone_since; /* monotonic ms when it left its path, 0 = live */
    int64_t last_data_ms;
    void *user;
    struct fw_file *next;  /* every file */
    int fd;             /* -1: closed (reopened by path when it grows) */
    int wd;             /* inotify watch on the file while open, -1 none */
    int fpn;            /* bytes the fingerprint covers, at most FP_BYTES */
    unsigned skipping : 1;     /* inside an over-long line: drop up to its newline */
    unsigned fp_from_read : 1; /* read from offset 0: the fingerprint comes from the first bytes read (no pread) */
    unsigned seen : 1;         /* found by the current scan */
    unsigned placed : 1;       /* its start offset is known (first open done) */
    unsigned ended : 1;        /* --once: end() already called; ckpt_off is its checkpoint offset */
    unsigned idle_sent : 1;
    unsigned failing : 1;      /* its last open or read failed */
    struct fw_file *hnext; /* hash chain by (dev, ino) */
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
    fw_file **htab; /* by (dev, ino) */
    size_t hcap, nfiles, nopen;
    known *known;
    size_t nknown;
    size_t *kidx_ino, *kidx_path; /* open addressing over known[], index + 1, 0 = empty */
    size_t kcap;
    int first_start; /* no checkpoint at all */
    int scanned;     /* the first scan has applied `known` */
    int dirty;
    char *spare;     /* one read buffer kept between files (READ_CHUNK + 1), so that 100,000 files do not
                        malloc and free one each */
    int atime_ok;    /* O_NOATIME was refused: open plainly */
    char *path;      /* scan's path buffer */
    size_t pathcap;
    int ino_fd;      /* -1 when polling */
    int *dir_wd;     /* per pattern */
    fw_tailer_stats st;
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
int64_t fw_file_mtime(const fw_file *f) { return f->mtime; }

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t hash_id(uintmax_t dev, uintmax_t ino)
{
    uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4FULL;
    return (size_t)(h ^ (h >> 29));
}

static size_t hash_path(const char *p)
{
    return (size_t)fnv1a((const unsigned char *)p, strlen(p));
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
    if (!t || !(t->dir_wd = calloc(conf->npaths ? conf->npaths : 1, sizeof *t->dir_wd)) ||
        !(t->htab = calloc(1024, sizeof *t->htab))) {
        if (t)
            free(t->dir_wd);
        free(t);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    t->hcap = 1024;
    t->c = *conf;
    t->h = *h;
    t->ino_fd = -1;
    if (!t->c.max_open) {
        struct rlimit rl;
        rlim_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? rl.rlim_cur : 1024;
        t->c.max_open = lim / 4 > 8 ? (size_t)(lim / 4) : 8;
    }
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
    free(t->kidx_ino);
    free(t->kidx_path);
    t->known = NULL;
    t->kidx_ino = t->kidx_path = NULL;
    t->nknown = t->kcap = 0;
}

static fw_file *find_file(fw_tailer *t, dev_t dev, ino_t ino)
{
    for (fw_file *f = t->htab[hash_id(dev, ino) & (t->hcap - 1)]; f; f = f->hnext)
        if (f->dev == dev && f->ino == ino)
            return f;
    return NULL;
}

static void hash_insert(fw_tailer *t, fw_file *f)
{
    if (t->nfiles + 1 > t->hcap) { /* keep chains short: grow at load 1 */
        size_t cap = t->hcap * 2;
        fw_file **tab = calloc(cap, sizeof *tab);
        if (tab) {
            for (fw_file *g = t->files; g; g = g->next) {
                size_t b = hash_id(g->dev, g->ino) & (cap - 1);
                g->hnext = tab[b];
                tab[b] = g;
            }
            free(t->htab);
            t->htab = tab;
            t->hcap = cap;
        }
    }
    size_t b = hash_id(f->dev, f->ino) & (t->hcap - 1);
    f->hnext = t->htab[b];
    t->htab[b] = f;
}

static void hash_remove(fw_tailer *t, fw_file *f)
{
    for (fw_file **pp = &t->htab[hash_id(f->dev, f->ino) & (t->hcap - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == f) {
            *pp = f->hnext;
            return;
        }
}

static void close_fd(fw_tailer *t, fw_file *f)
{
    if (f->wd >= 0 && t->ino_fd >= 0)
        inotify_rm_watch(t->ino_fd, f->wd); /* fails harmlessly if the kernel already dropped it */
    f->wd = -1;
    if (f->fd >= 0) {
        close(f->fd);
        t->nopen--;
    }
    f->fd = -1;
}

static void drop_buffer(fw_tailer *t, fw_file *f)
{
    if (f->len == 0 && f->buf) {
        if (!t->spare && f->cap == READ_CHUNK)
            t->spare = f->buf;
        else
            free(f->buf);
        f->buf = NULL;
        f->cap = 0;
    }
}

static void file_close(fw_tailer *t, fw_file *f)
{
    if (t->h.close)
        t->h.close(t->h.ctx, f);
    close_fd(t, f);
    free(f->buf);
    free(f->path);
    free(f);
    t->nfiles--;
    t->dirty = 1;
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
    free(t->spare);
    free(t->path);
    free(t->htab);
    free(t->dir_wd);
    free(t);
}

static int add_known(fw_tailer *t, const char *path, uintmax_t dev, uintmax_t ino, int64_t off, uint64_t fp, int fpn)
{
    known *k = &t->known[t->nknown];
    k->dev = dev;
    k->ino = ino;
    k->off = off;
    k->fp = fp;
    k->fpn = fpn;
    k->path = strdup(path);
    if (!k->path)
        return -1;
    t->nknown++;
    return 0;
}

static void index_known(fw_tailer *t)
{
    size_t cap = 16;
    while (cap < 2 * t->nknown)
        cap *= 2;
    t->kidx_ino = calloc(cap, sizeof *t->kidx_ino);
    t->kidx_path = calloc(cap, sizeof *t->kidx_path);
    if (!t->kidx_ino || !t->kidx_path) {
        free(t->kidx_ino);
        free(t->kidx_path);
        t->kidx_ino = t->kidx_path = NULL;
        return; /* lookups fall back to none found: files are read from the start, ids drop duplicates */
    }
    t->kcap = cap;
    for (size_t i = 0; i < t->nknown; i++) {
        size_t b = hash_id(t->known[i].dev, t->known[i].ino) & (cap - 1);
        while (t->kidx_ino[b])
            b = (b + 1) & (cap - 1);
        t->kidx_ino[b] = i + 1;
        b = hash_path(t->known[i].path) & (cap - 1);
        while (t->kidx_path[b])
            b = (b + 1) & (cap - 1);
        t->kidx_path[b] = i + 1;
    }
}

static known *known_by_id(fw_tailer *t, uintmax_t dev, uintmax_t ino)
{
    if (!t->kcap)
        return NULL;
    for (size_t b = hash_id(dev, ino) & (t->kcap - 1); t->kidx_ino[b]; b = (b + 1) & (t->kcap - 1)) {
        known *k = &t->known[t->kidx_ino[b] - 1];
        if (k->dev == dev && k->ino == ino)
            return k;
    }
    return NULL;
}

static known *known_by_path(fw_tailer *t, const char *path)
{
    if (!t->kcap)
        return NULL;
    for (size_t b = hash_path(path) & (t->kcap - 1); t->kidx_path[b]; b = (b + 1) & (t->kcap - 1)) {
        known *k = &t->known[t->kidx_path[b] - 1];
        if (strcmp(k->path, path) == 0)
            return k;
    }
    return NULL;
}

/* Version 2's files: "dev ino off fp fpn shared suffix\n" lines, each
 * path the first `shared` bytes of the one before and then its suffix. */
static void restore_v2(fw_tailer *t, const char *text)
{
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    t->known = calloc(lines + 1, sizeof *t->known);
    if (!t->known)
        return;
    const char *p = text;
    char *prev = NULL;
    size_t prevlen = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        uintmax_t dev, ino;
        long long off;
        char hex[17];
        int fpn, used = 0;
        size_t shared;
        if (sscanf(p, "%ju %ju %lld %16s %d %zu %n", &dev, &ino, &off, hex, &fpn, &shared, &used) == 6 &&
            used > 0 && p + used <= nl && shared <= prevlen) {
            size_t sl = (size_t)(nl - p - used);
            char *path = malloc(shared + sl + 1);
            if (path) {
                if (shared)
                    memcpy(path, prev, shared);
                memcpy(path + shared, p + used, sl);
                path[shared + sl] = '\0';
                if (add_known(t, path, dev, ino, off, strtoull(hex, NULL, 16), fpn) == 0) {
                    prev = t->known[t->nknown - 1].path;
                    prevlen = shared + sl;
                }
                free(path);
            }
        }
        p = nl + 1;
    }
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
    if (json_is_string(files)) {
        restore_v2(t, json_string_value(files));
    } else if (json_is_array(files)) {
        t->known = calloc(json_array_size(files) + 1, sizeof *t->known);
        size_t i;
        json_t *e;
        json_array_foreach(files, i, e)
        {
            const char *p = json_string_value(json_object_get(e, "p"));
            const char *h = json_string_value(json_object_get(e, "h"));
            if (!p || !h || !t->known)
                continue;
            add_known(t, p, (uintmax_t)json_integer_value(json_object_get(e, "d")),
                      (uintmax_t)json_integer_value(json_object_get(e, "i")),
                      json_integer_value(json_object_get(e, "o")), strtoull(h, NULL, 16),
                      (int)json_integer_value(json_object_get(e, "n")));
        }
    } else {
        sb_log(t->c.ins, SB_LOG_ERROR, "checkpoint not understood (%s); every file is read from the start",
               root ? "no files" : jerr.text);
        json_decref(root);
        return;
    }
    json_decref(root);
    if (!t->known) {
        sb_log(t->c.ins, SB_LOG_ERROR, "out of memory reading the checkpoint; every file is read from the start "
               "(runs already accepted are recognised by their ids)");
        return;
    }
    index_known(t);
}

static int64_t checkpoint_offset(fw_tailer *t, fw_file *f)
{
    if (f->ended)
        return f->ckpt_off;
    /* Inside an over-long line, point at its start: after a restart it
     * is skipped again, never read from its middle as a line of its own. */
    int64_t next = f->skipping ? f->skip_start : f->off;
    return t->h.resume ? t->h.resume(t->h.ctx, f, next) : next;
}

/* Room for `more` bytes (and a NUL) in *buf; -1 when out of memory. */
static int reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more + 1 <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 65536;
    while (nc < len + more + 1)
        nc *= 2;
    char *b = realloc(*buf, nc);
    if (!b)
        return -1;
    *buf = b;
    *cap = nc;
    return 0;
}

/* Append s[0..n) escaped for the inside of a JSON string (s is UTF-8). */
static void append_escaped(char *buf, size_t *len, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = (char)c;
        } else if (c < 0x20) {
            *len += (size_t)sprintf(buf + *len, "\\u%04x", c);
        } else {
            buf[(*len)++] = (char)c;
        }
    }
}

char *fw_tailer_checkpoint(fw_tailer *t)
{
    /* Written straight as JSON text, one buffer: with 100,000 files it is
     * several MB, and the core keeps its own copy while it commits it. */
    char *out = NULL;
    size_t len = 0, cap = 0;
    const char *prev = "";
    size_t prevlen = 0;
    if (reserve(&out, &cap, len, 32) != 0)
        return NULL;
    len += (size_t)sprintf(out, "{\"v\":2,\"files\":\"");
    for (fw_file *f = t->files; f; f = f->next) {
        if (!f->placed)
            continue; /* not opened yet: a restart finds it new, as this run did */
        size_t plen = strlen(f->path);
        if (rr_utf8_error_at(f->path, plen) >= 0)
            continue; /* not JSON text: a restart reads it from the start, its runs' ids drop duplicates */
        if (f->fd >= 0 && f->fpn < FP_BYTES && f->pos > f->fpn)
            fingerprint(f->fd, &f->fp, &f->fpn); /* the file has grown: widen the fingerprint */
        size_t shared = 0; /* front coding: the bytes this path shares with the one before */
        while (shared < plen && shared < prevlen && f->path[shared] == prev[shared])
            shared++;
        if (reserve(&out, &cap, len, 128 + 6 * (plen - shared)) != 0) {
            free(out);
            return NULL;
        }
        len += (size_t)snprintf(out + len, cap - len, "%ju %ju %" PRId64 " %016" PRIx64 " %d %zu ",
                                (uintmax_t)f->dev, (uintmax_t)f->ino, checkpoint_offset(t, f), f->fp, f->fpn, shared);
        append_escaped(out, &len, f->path + shared, plen - shared);
        out[len++] = '\\';
        out[len++] = 'n';
        prev = f->path;
        prevlen = plen;
    }
    out[len++] = '"';
    out[len++] = '}';
    out[len] = '\0';
    t->dirty = 0;
    return out;
}

int fw_tailer_dirty(const fw_tailer *t)
{
    return t->dirty;
}

void fw_tailer_stats_get(const fw_tailer *t, fw_tailer_stats *out)
{
    *out = t->st;
    out->files = t->nfiles;
    out->open_files = t->nopen;
}

int fw_excluded(const char *const *patterns, size_t n, const char *path)
{
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    for (size_t i = 0; i < n; i++) {
        int whole = strchr(patterns[i], '/') != NULL;
        if (fnmatch(patterns[i], whole ? path : name, FNM_PATHNAME) == 0)
            return 1;
    }
    return 0;
}

static int excluded(const fw_tailer *t, const char *path) { return fw_excluded(t->c.exclude, t->c.nexclude, path); }

/* Where to start a file opened for the first time: its checkpoint
 * position when it is the same file, else the start (or the end, at the
 * very first start). */
static int64_t start_offset(fw_tailer *t, fw_file *f, const struct stat *st)
{
    known *k = known_by_id(t, (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    if (k) {
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
    if ((k = known_by_path(t, f->path)) != NULL) {
        sb_log(t->c.ins, SB_LOG_INFO, "%s: replaced while stopped (inode %ju, was %ju); reading it from the start",
               f->path, (uintmax_t)st->st_ino, k->ino);
        return 0;
    }
    if (t->first_start && t->c.start_at_end)
        return (int64_t)st->st_size;
    return 0;
}

/* Close the descriptors of files read to their end, least needed first,
 * until `want` more can be opened. */
static void make_room(fw_tailer *t, size_t want)
{
    for (fw_file *f = t->files; f && t->nopen + want > t->c.max_open; f = f->next)
        if (f->fd >= 0 && !f->gone_since)
            close_fd(t, f);
}

/* Open for reading without touching the file's access time (a read of a
 * log is not a use of it, and the inode update cost a write per file):
 * O_NOATIME needs the file's owner or CAP_FOWNER, so after one EPERM the
 * tailer opens plainly. */
static int open_ro(fw_tailer *t, const char *path)
{
    if (!t->atime_ok) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME);
        if (fd >= 0 || errno != EPERM)
            return fd;
        t->atime_ok = 1;
    }
    return open(path, O_RDONLY | O_CLOEXEC);
}

static void open_failed(fw_tailer *t, fw_file *f, const char *what)
{
    t->st.open_errors++;
    if (!f->failing) /* once per failing spell: a file that stays unreadable must not flood the log */
        sb_log(t->c.ins, SB_LOG_WARN, "cannot %s %s: %s; trying again", what, f->path, strerror(errno));
    f->failing = 1;
}

/* Give f a descriptor at its read position: the first open, or a reopen
 * by path with inode and fingerprint checked. 0, or -1 (counted; retried
 * at the next cycle). */
static int ensure_open(fw_tailer *t, fw_file *f)
{
    if (f->fd >= 0)
        return 0;
    if (t->nopen >= t->c.max_open)
        make_room(t, 1);
    int fd = open_ro(t, f->path);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
        make_room(t, t->c.max_open / 2 + 1);
        fd = open_ro(t, f->path);
    }
    if (fd < 0) {
        open_failed(t, f, "open");
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        open_failed(t, f, "stat");
        return -1;
    }
    if (st.st_dev != f->dev || st.st_ino != f->ino) { /* the path names another file now: this one is gone */
        close(fd);
        return -1;
    }
    f->fd = fd;
    t->nopen++;
    t->st.opens++;
    f->size_seen = (int64_t)st.st_size;
    f->mtime = (int64_t)st.st_mtime;
    if (!f->placed) {
        f->off = f->pos = start_offset(t, f, &st);
        if (f->pos == 0) { /* the first read takes it: one system call less per file */
            f->fp = fnv1a(NULL, 0);
            f->fpn = 0;
            f->fp_from_read = 1;
        } else {
            fingerprint(fd, &f->fp, &f->fpn);
        }
        f->placed = 1;
        t->dirty = 1;
        sb_log(t->c.ins, SB_LOG_DEBUG, "following %s from offset %" PRId64, f->path, f->off);
    } else {
        uint64_t fp;
        if (f->fpn > 0 && (fingerprint_n(fd, f->fpn, &fp) != 0 || fp != f->fp)) {
            sb_log(t->c.ins, SB_LOG_WARN, "%s: its first bytes changed while it was closed (truncated and rewritten?); "
                   "reading it from the start", f->path);
            if (t->h.reset)
                t->h.reset(t->h.ctx, f);
            f->off = f->pos = 0;
            f->len = 0;
            f->skipping = 0;
            fingerprint(fd, &f->fp, &f->fpn);
            t->dirty = 1;
        }
    }
    if (f->pos > 0 && lseek(fd, (off_t)f->pos, SEEK_SET) < 0) {
        open_failed(t, f, "seek in");
        close_fd(t, f);
        return -1;
    }
    return 0; /* the directory's watch wakes us for it; a watch of its own only once it leaves (scan) */
}

static int track(fw_tailer *t, const char *path, const struct stat *st)
{
    fw_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        sb_log(t->c.ins, SB_LOG_ERROR, "%s: out of memory; it is tried again at the next scan", path);
        free(f);
        return 0;
    }
    f->fd = -1;
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->wd = -1;
    f->seen = 1;
    f->size_seen = (int64_t)st->st_size;
    f->mtime = (int64_t)st->st_mtime;
    f->last_data_ms = mono_ms();
    hash_insert(t, f); /* before it joins the list: a growing table re-inserts what is listed */
    f->next = t->files;
    t->files = f;
    t->nfiles++;
    t->dirty = 1;
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

/* One path the globs name: tracked already (a rename is noticed), new
 * (tracked), or not a regular file. `dfd`/`name`: where to stat it from
 * (AT_FDCWD and the path, or its directory and its name: one component
 * for the kernel to look up instead of the whole path). -1 if a handler
 * stopped. */
static int scan_one(fw_tailer *t, int dfd, const char *name, const char *p)
{
    struct stat st;
    if (excluded(t, p) || fstatat(dfd, name, &st, 0) != 0 || !S_ISREG(st.st_mode))
        return 0;
    fw_file *f = find_file(t, st.st_dev, st.st_ino);
    if (!f)
        return track(t, p, &st);
    if (strcmp(f->path, p) != 0) { /* renamed within the globs: same file */
        char *np = strdup(p);
        if (np) {
            sb_log(t->c.ins, SB_LOG_INFO, "%s is now %s", f->path, np);
            free(f->path);
            f->path = np;
            t->dirty = 1;
        }
    }
    f->seen = 1;
    f->gone_since = 0;
    f->size_seen = (int64_t)st.st_size;
    f->mtime = (int64_t)st.st_mtime;
    return 0;
}

static int has_magic(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '*' || s[i] == '?' || s[i] == '[' || s[i] == '\\')
            return 1;
    return 0;
}

/* The entries of directory `dir` whose names match `base` as glob(3)
 * matches a last component (a leading dot only by a dot), each under the
 * path `prefix` + name, as glob(3) would have named it. */
static int scan_dir(fw_tailer *t, const char *dir, const char *prefix, size_t plen, const char *base)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT && errno != ENOTDIR)
            sb_log(t->c.ins, SB_LOG_WARN, "cannot read directory %s: %s", dir, strerror(errno));
        return 0;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_type == DT_DIR || e->d_type == DT_FIFO || e->d_type == DT_SOCK || e->d_type == DT_CHR ||
            e->d_type == DT_BLK || fnmatch(base, e->d_name, FNM_PERIOD) != 0)
            continue;
        size_t nlen = strlen(e->d_name);
        if (reserve(&t->path, &t->pathcap, 0, plen + nlen) != 0)
            continue; /* out of memory: found by the next scan */
        memcpy(t->path, prefix, plen);
        memcpy(t->path + plen, e->d_name, nlen + 1);
        rc = scan_one(t, dirfd(d), e->d_name, t->path);
    }
    closedir(d);
    return rc;
}

/* The files one pattern names. Its directories are read one entry at a
 * time, not through glob(3), which held every path of a directory of
 * 100,000 files in memory at once, each its own allocation. A wildcard in
 * the directory part is still expanded by glob(3): a few directories. */
static int scan_pattern(fw_tailer *t, const char *pat)
{
    const char *slash = strrchr(pat, '/'), *base = slash ? slash + 1 : pat;
    size_t dlen = slash ? (size_t)(slash - pat) + 1 : 0; /* the directory part, with its slash */
    if (!*base)
        return 0; /* names a directory */
    if (!has_magic(base, strlen(base)) && !has_magic(pat, dlen))
        return scan_one(t, AT_FDCWD, pat, pat); /* a literal path (a wildcard directory is globbed below) */
    if (!has_magic(pat, dlen)) {
        char *dir = dlen ? strndup(pat, dlen) : strdup(".");
        if (!dir)
            return 0;
        int rc = scan_dir(t, dir, pat, dlen, base);
        free(dir);
        return rc;
    }
    char *dirpat = strndup(pat, dlen - 1);
    if (!dirpat)
        return 0;
    glob_t g;
    int rc = glob(dirpat, GLOB_NOSORT | GLOB_ONLYDIR, NULL, &g);
    free(dirpat);
    if (rc != 0) {
        if (rc != GLOB_NOMATCH)
            sb_log(t->c.ins, SB_LOG_WARN, "cannot expand %s", pat);
        return 0;
    }
    rc = 0;
    for (size_t j = 0; rc == 0 && j < g.gl_pathc; j++) {
        size_t n = strlen(g.gl_pathv[j]);
        char *prefix = malloc(n + 2);
        if (!prefix)
            continue; /* out of memory: found by the next scan */
        memcpy(prefix, g.gl_pathv[j], n);
        memcpy(prefix + n, "/", 2);
        rc = scan_dir(t, g.gl_pathv[j], prefix, n + 1, base);
        free(prefix);
    }
    globfree(&g);
    return rc;
}

static int scan(fw_tailer *t)
{
    watch_dirs(t);
    for (fw_file *f = t->files; f; f = f->next)
        f->seen = 0;
    for (size_t i = 0; i < t->c.npaths; i++)
        if (scan_pattern(t, t->c.paths[i]) != 0)
            return -1;
    int64_t now = mono_ms();
    for (fw_file *f = t->files; f; f = f->next)
        if (!f->seen && !f->gone_since) {
            struct stat st;
            int deleted = f->fd >= 0 && fstat(f->fd, &st) == 0 && st.st_nlink == 0;
            sb_log(t->c.ins, SB_LOG_INFO, "%s was %s; reading it to its end for up to %" PRId64 "ms", f->path,
                   deleted ? "deleted" : "rotated away", t->c.rotate_wait_ms);
            f->gone_since = now;
            if (t->ino_fd >= 0 && f->fd >= 0 && f->wd < 0) { /* out of the watched directory: watch it alone */
                char proc[64];
                snprintf(proc, sizeof proc, "/proc/self/fd/%d", f->fd);
                f->wd = inotify_add_watch(t->ino_fd, proc, IN_MODIFY | IN_DELETE_SELF);
            }
        }
    return 0;
}

/* 1 when s[0..n) is ASCII without NUL bytes (8 bytes at a time). */
static int plain_text(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if ((w & highs) || ((w - ones) & ~w & highs)) /* a byte >= 0x80, or a zero byte */
            return 0;
    }
    for (; i < n; i++)
        if (s[i] == '\0' || (unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
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
    if (plain_text(line, len)) {
        /* nearly every line: no NUL, nothing to check as UTF-8 */
    } else if (memchr(line, '\0', len)) {
        sb_log(t->c.ins, SB_LOG_WARN, "%s:%" PRId64 ": binary data (NUL bytes) in the line; skipped", f->path, off);
        return 0;
    } else if (rr_utf8_error_at(line, len) >= 0) {
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

/* Read what is new. Returns bytes read (>= 0), -1 if a handler stopped,
 * or -2 if the read failed (counted; the file is closed and read again
 * from where it stopped at the next cycle). */
static int64_t read_file(fw_tailer *t, fw_file *f, int just_opened)
{
    struct stat st;
    if (!just_opened && fstat(f->fd, &st) == 0) { /* just opened: ensure_open has looked */
        f->mtime = (int64_t)st.st_mtime;
        f->size_seen = (int64_t)st.st_size;
        if ((int64_t)st.st_size < f->pos) {
            sb_log(t->c.ins, SB_LOG_WARN,
                   "%s: truncated (%jd bytes, was read to %" PRId64 "; copytruncate?); reading it from the start",
                   f->path, (intmax_t)st.st_size, f->pos);
            if (t->h.reset)
                t->h.reset(t->h.ctx, f);
            lseek(f->fd, 0, SEEK_SET);
            f->off = f->pos = 0;
            f->len = 0;
            f->skipping = 0;
            fingerprint(f->fd, &f->fp, &f->fpn);
            t->dirty = 1;
        }
    }
    int64_t total = 0;
    for (;;) {
        if (!f->buf && t->spare) {
            f->buf = t->spare;
            f->cap = READ_CHUNK;
            t->spare = NULL;
        }
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
        if (n < 0) {
            t->st.read_errors++;
            if (!f->failing)
                sb_log(t->c.ins, SB_LOG_WARN, "cannot read %s at offset %" PRId64 ": %s; trying again", f->path,
                       f->pos, strerror(errno));
            f->failing = 1;
            close_fd(t, f);
            return -2;
        }
        if (n == 0)
            break;
        if (f->fp_from_read && f->pos == 0) {
            f->fpn = n < FP_BYTES ? (int)n : FP_BYTES;
            f->fp = fnv1a((const unsigned char *)f->buf + f->len, (size_t)f->fpn);
            f->fp_from_read = 0;
        }
        f->len += (size_t)n;
        f->pos += n;
        total += n;
        t->st.bytes += (uint64_t)n;
        t->dirty = 1;
        if (drain_buffer(t, f, 0) != 0)
            return -1;
        /* A short read that reached the size just seen is the end for now:
         * no read of 0 bytes to confirm it (what comes later, the next
         * cycle reads). */
        if (n < READ_CHUNK && f->pos >= f->size_seen)
            break;
    }
    f->failing = 0;
    drop_buffer(t, f);
    return total;
}

static int end_file(fw_tailer *t, fw_file *f)
{
    if (f->ended)
        return 0;
    if (f->len > 0 && drain_buffer(t, f, 1) != 0)
        return -1;
    drop_buffer(t, f);
    return t->h.end ? t->h.end(t->h.ctx, f) : 0;
}

/* End f now, keeping as its checkpoint offset what resume() says before
 * the end closes its run (a run the end finished is read again by the
 * next start, as a run still being written must be). */
static int end_now(fw_tailer *t, fw_file *f)
{
    if (f->ended)
        return 0;
    int64_t next = f->skipping ? f->skip_start : f->off;
    f->ckpt_off = t->h.resume ? t->h.resume(t->h.ctx, f, next) : next;
    int rc = end_file(t, f);
    f->ended = 1;
    return rc;
}

/* Open if needed and read what is new; -1 if a handler stopped. A file
 * that cannot be opened or read stays `failing` for the next try. */
static int64_t visit(fw_tailer *t, fw_file *f)
{
    int just_opened = 0;
    if (f->ended)
        return 0;
    if (f->fd < 0) {
        if (f->placed && !f->failing && f->size_seen == f->pos)
            return 0; /* closed and nothing new */
        if (f->gone_since)
            return 0; /* closed and no longer at its path: nothing to open */
        if (ensure_open(t, f) != 0)
            return 0;
        just_opened = 1;
    }
    int64_t got = read_file(t, f, just_opened);
    return got == -2 ? 0 : got;
}

int fw_tailer_cycle(fw_tailer *t)
{
    if (scan(t) != 0)
        return -1;
    int64_t now = mono_ms();
    fw_file **pp = &t->files;
    while (*pp) {
        fw_file *f = *pp;
        int64_t got = visit(t, f);
        if (got < 0)
            return -1;
        if (got > 0) {
            f->last_data_ms = now;
            f->idle_sent = 0;
            if (f->gone_since)
                f->gone_since = now; /* the writer is still finishing it */
        }
        if (f->gone_since && now - f->gone_since >= t->c.rotate_wait_ms) {
            sb_log(t->c.ins, SB_LOG_INFO, "%s: done with the rotated/deleted file", f->path);
            if (end_file(t, f) != 0)
                return -1;
            *pp = f->next;
            hash_remove(t, f);
            file_close(t, f);
            continue;
        }
        if (t->c.end_at_eof && !f->failing && end_now(t, f) != 0)
            return -1;
        int quiet = now - f->last_data_ms >= t->c.rotate_wait_ms;
        if (quiet && !f->idle_sent && !f->failing) {
            f->idle_sent = 1;
            if (t->h.idle && t->h.idle(t->h.ctx, f) != 0)
                return -1;
        }
        /* a file read to its end gives its descriptor back when others need it, or when quiet; a rotated
         * one keeps it: it can no longer be reopened by path */
        if (f->fd >= 0 && !f->gone_since && (quiet || t->nopen > t->c.max_open / 2))
            close_fd(t, f);
        pp = &f->next;
    }
    return 0;
}

int fw_tailer_finish(fw_tailer *t)
{
    /* what failed to open or read gets a few more tries, a little apart */
    for (int attempt = 1; attempt < FINISH_ATTEMPTS; attempt++) {
        int failing = 0;
        for (fw_file *f = t->files; f; f = f->next)
            failing += f->failing;
        if (!failing)
            break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000000L * attempt};
        nanosleep(&ts, NULL);
        for (fw_file *f = t->files; f; f = f->next)
            if (f->failing && visit(t, f) < 0)
                return -1;
    }
    for (fw_file *f = t->files; f; f = f->next) {
        if (f->failing) {
            t->st.unreadable++;
            sb_log(t->c.ins, SB_LOG_ERROR, "%s could not be read to its end (offset %" PRId64 " of %" PRId64 ")",
                   f->path, f->pos, f->size_seen);
        }
        if (end_now(t, f) != 0)
            return -1;
    }
    return 0;
}

int fw_tailer_wait(fw_tailer *t, sb_source_ctx *ctx)
{
    int64_t wait = t->c.poll_ms, now = mono_ms();
    for (fw_file *f = t->files; f; f = f->next) {
        int64_t left = wait;
        if (f->gone_since)
            left = f->gone_since + t->c.rotate_wait_ms - now;
        else if (!f->idle_sent)
            left = f->last_data_ms + t->c.rotate_wait_ms - now;
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
