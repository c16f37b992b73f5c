/*
 * tailer.h - follow the files that match a set of globs: new files,
 * appends, rotation by rename, copytruncate, deletion, and a position per
 * file that survives restarts through one checkpoint string.
 *
 * A file is known by (device, inode) and a fingerprint of its first 256
 * bytes (FNV-1a over however many of them exist, with that count), so a
 * file replaced while the daemon was down, or an inode reused, is read
 * from the start instead of from a stale offset. The tailer cuts the data
 * into complete lines and hands each to the handler with its offset;
 * lines that are too long or not text (NUL bytes, invalid UTF-8) are
 * reported with file:offset and skipped, and a partial last line waits
 * for its newline.
 *
 * Scale (a directory that keeps every run's log): files are looked up
 * by hash, never by a list walk; at most max_open files hold a
 * descriptor. A file read to its end is closed when more are open, or
 * when it has been quiet for rotate_wait, and is reopened by path when a
 * scan sees it grow, with its inode and fingerprint checked. Read buffers
 * live only while a file has a partial line. An open or read that fails
 * is retried at the next cycle and counted (fw_tailer_stats); at the
 * --once end a file that still cannot be read to its end is counted as
 * unreadable.
 *
 * Checkpoint (JSON, compact): {"v":2,"files":"<one line per file>"} with
 * lines "dev ino offset fingerprint-hex fingerprint-bytes shared suffix\n":
 * the path is the first `shared` bytes of the line before's path and then
 * `suffix` (front coding: a directory's files share most of their path).
 * One JSON string: a directory of 100,000 files is a few MB of text, not
 * 600,000 JSON values. Version 1, {"v":1,"files":[{"p":path,"d":dev,"i":ino,
 * "o":offset,"h":"fingerprint hex","n":fingerprint bytes}...]}, is still
 * read. The offset of each file is what the handler's resume() says: the
 * next line to read, or earlier (the first line of a Run Replicator run
 * still open), so that a restart re-reads what is not yet accounted for.
 *
 * Threading: one tailer belongs to one source thread; fw_tailer_stats()
 * may be called from any thread.
 */
#ifndef SB_FILEWATCH_TAILER_H
#define SB_FILEWATCH_TAILER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <syncbridge/syncbridge.h>

typedef struct fw_file fw_file;
typedef struct fw_tailer fw_tailer;

typedef struct fw_tailer_conf {
    sb_instance *ins; /* for sb_log */
    const char *const *paths;
    size_t npaths;
    const char *const *exclude;
    size_t nexclude;
    int use_inotify;
    int64_t poll_ms;
    int64_t rotate_wait_ms;
    size_t max_line;
    int start_at_end; /* files found at the very first start (no checkpoint) are read from their end */
    size_t max_open;  /* most descriptors held at once; 0 = a quarter of RLIMIT_NOFILE */
    int end_at_eof;   /* --once: a file read to its end is ended (end()) in the same cycle, so that what
                         its handler keeps for it is freed before the next file (100,000 files) */
} fw_tailer_conf;

/* What the owner does with files and lines. Every member is called on the
 * source thread from inside fw_tailer_cycle()/fw_tailer_finish(). A
 * callback returning -1 stops the cycle (the core is stopping). */
typedef struct fw_handler {
    void *ctx;
    /* a file starts being tracked; MAY set *fw_file_user(f) */
    int (*open)(void *ctx, fw_file *f);
    /* one complete text line (NUL-terminated, no newline) at byte `off` */
    int (*line)(void *ctx, fw_file *f, const char *line, size_t len, int64_t off);
    /* the file has ended: rotated away and drained, deleted, or --once */
    int (*end)(void *ctx, fw_file *f);
    /* the file was truncated: what was read of it no longer exists */
    void (*reset)(void *ctx, fw_file *f);
    /* the file is forgotten; free what open() set */
    void (*close)(void *ctx, fw_file *f);
    /* where a restart must read this file from, given the next unread line */
    int64_t (*resume)(void *ctx, fw_file *f, int64_t next_off);
    /* MAY be NULL: the file has had no new data for rotate_wait (once per quiet spell) */
    int (*idle)(void *ctx, fw_file *f);
} fw_handler;

/* Counters, for /metrics and the --once verdict. */
typedef struct fw_tailer_stats {
    uint64_t files;        /* tracked now */
    uint64_t open_files;   /* holding a descriptor now */
    uint64_t opens;        /* opens and reopens */
    uint64_t open_errors;  /* opens that failed (each is retried) */
    uint64_t read_errors;  /* reads that failed (each is retried) */
    uint64_t unreadable;   /* files given up at the --once end: not read to their end */
    uint64_t bytes;        /* read */
} fw_tailer_stats;

fw_tailer *fw_tailer_new(const fw_tailer_conf *conf, const fw_handler *h, char *errstr, size_t errstr_size);
void fw_tailer_free(fw_tailer *t);

/* Take the positions from a checkpoint (NULL: the very first start).
 * Positions apply to the files the next scan finds. */
void fw_tailer_restore(fw_tailer *t, const char *checkpoint);

/* Find files, read what is new in each, retire rotated/deleted ones after
 * rotate_wait. 0, or -1 if a handler returned -1. */
int fw_tailer_cycle(fw_tailer *t);

/* End every file (the --once end of input): a file whose open or read
 * failed is tried again a few times; partial last lines count as lines,
 * then end() for each. 0 or -1. */
int fw_tailer_finish(fw_tailer *t);

void fw_tailer_stats_get(const fw_tailer *t, fw_tailer_stats *out);

/* Whether `path` is excluded by one of `patterns`: a pattern without a
 * slash ("*.gz") is matched against the file's name, one with a slash
 * against the whole path, where a wildcard does not cross a slash. */
int fw_excluded(const char *const *patterns, size_t n, const char *path);

/* Non-zero when a position changed since the last fw_tailer_checkpoint(). */
int fw_tailer_dirty(const fw_tailer *t);

/* Sleep until inotify reports a change, the poll interval passes, a
 * rotated file's wait runs out, or the core is stopping (non-zero). */
int fw_tailer_wait(fw_tailer *t, sb_source_ctx *ctx);

/* The checkpoint for every tracked file; malloc'd, caller frees. */
char *fw_tailer_checkpoint(fw_tailer *t);

const char *fw_file_path(const fw_file *f);
dev_t fw_file_dev(const fw_file *f);
ino_t fw_file_ino(const fw_file *f);
void **fw_file_user(fw_file *f);
/* The file's modification time (seconds) when it was last looked at. */
int64_t fw_file_mtime(const fw_file *f);

#endif
