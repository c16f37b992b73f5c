/*
 * gcs_copy - action: copy the files an event names (a local path: one
 * file, a directory or a glob) to Cloud Storage, with end-to-end CRC32C,
 * parallel streams on one thread (curl_multi) and resume after a crash.
 *
 * Per event:
 *   1. `source` and `destination` are rendered against the event; the
 *      files are listed (sorted by their name relative to the source's
 *      base), and each gets the object name PREFIX/RELATIVE_PATH.
 *   2. Whether each object is already there with the same size and CRC32C,
 *      so it is skipped and a re-run copies nothing twice: for several
 *      files one objects.list of the destination prefix (1,000 a page)
 *      tells, as rclone lists a directory; for one file, or a prefix
 *      holding many more objects than files, objects.get per file. A 404
 *      for the bucket fails the event with Cloud Storage's message.
 *   3. A file up to `single_max` goes in one request (JSON API multipart
 *      upload: metadata with its crc32c, which Cloud Storage checks, then
 *      the bytes). A larger file is an XML API multipart upload: its parts
 *      (`part_size`) go up in parallel, each with X-Goog-Hash crc32c, and
 *      their CRCs are combined into the object's. With streams 1 it is a
 *      JSON API resumable upload instead: chunks one after another, the
 *      last with the whole file's CRC32C. Before an upload is made final
 *      the file is checked against its listing (size, mtime, ctime,
 *      inode): a file that changed while it was read is not completed.
 *   4. After the upload the object's crc32c from Cloud Storage is compared
 *      with ours. A mismatch deletes the object and fails the attempt.
 *   5. The event gets gcs_objects, gcs_uri, crc32c and gcp_finished_at.
 * At most `streams` requests are in flight, all on the calling thread
 * through one sb_gcp_multi.
 *
 * Reading: each request maps its window of the file (mmap, madvise
 * SEQUENTIAL), drops the pages already sent (MADV_DONTNEED) as it goes and
 * unmaps the window when the request is done, so the resident set stays
 * about streams x 1 MiB whatever the file size.
 *
 * Resume: the step state holds, per multipart upload in progress, its
 * uploadId and the parts done (number, ETag, CRC32C); it is written to the
 * ledger as soon as the upload is created and after each part, so after a
 * SIGKILL the copy goes on with the parts not yet committed and re-sends at
 * most the parts that were in flight; a resumable upload keeps its session
 * URI and the bytes persisted instead. An upload the event gives up on
 * (FAIL, step timeout, dlq drop) is aborted, so none is left behind.
 *
 * Threading: one process() call uses its own multi; the client is
 * thread-safe, the rest is read-only after create(): SB_PLUGIN_CONCURRENT.
 */
#include <syncbridge/syncbridge.h>
#include <syncbridge/buf.h>
#include <syncbridge/gcp.h>
#include <syncbridge/metrics.h>

#include "crc32c.h"
#include "mapguard.h"
#include "parts.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define DROP_STEP (1 * MIB) /* pages behind the read position are dropped in steps of this */

enum { IN_LOCAL, IN_HDFS };
static const char *const inputs[] = {[IN_LOCAL] = "local", [IN_HDFS] = "hdfs", NULL};
enum { READ_MMAP, READ_PREAD };
static const char *const local_reads[] = {[READ_MMAP] = "mmap", [READ_PREAD] = "pread", NULL};

typedef struct gc_conf {
    const sb_template *source;
    const sb_template *destination;
    int input;
    int local_read;
    int64_t streams;
    int64_t part_size;
    int64_t single_max;
    int64_t hdfs_buffer;
    const char *xml_endpoint;
    int64_t progress_interval;
    int64_t stall_timeout;
    const char *hdfs_url;
    const char *hdfs_user;
    const char *hdfs_delegation;
    int hdfs_negotiate;
} gc_conf;

static const sb_option_def options[] = {
    {SB_OPT("source", SB_OPT_TEMPLATE, NULL, 1,
            "What to copy, from event fields: a file, a directory (copied recursively) or a glob, e.g. "
            "/td_backup/${schema}.${table}/${inc_val}."),
     SB_OPT_BIND(gc_conf, source)},
    {SB_OPT("destination", SB_OPT_TEMPLATE, NULL, 1,
            "gs://bucket/prefix from event fields; each file becomes the object prefix/<its path under the "
            "source>."),
     SB_OPT_BIND(gc_conf, destination)},
    {SB_OPT("input", SB_OPT_STRING, "\"local\"", 0,
            "Where source is read: \"local\" (a path on this machine) or \"hdfs\" (WebHDFS at hdfs_url)."),
     SB_OPT_CHOICES(inputs), SB_OPT_BIND(gc_conf, input)},
    {SB_OPT("local_read", SB_OPT_STRING, "\"mmap\"", 0,
            "input local: how the bytes sent are read: \"mmap\" (windows mapped and dropped as they are sent) or "
            "\"pread\" (straight into the transfer's buffer; less CPU where page faults are costly, as in some "
            "VMs: docs/benchmarks.md)."),
     SB_OPT_CHOICES(local_reads), SB_OPT_BIND(gc_conf, local_read)},
    {SB_OPT("streams", SB_OPT_INT, "8", 0, "Requests in flight at once: files in parallel, and parts of large files."),
     SB_OPT_RANGE_BIND(1, 64, gc_conf, streams)},
    {SB_OPT("part_size", SB_OPT_SIZE, "\"16MB\"", 0,
            "Part size of multipart uploads (5 MiB to 5 GiB, a multiple of 4 KiB)."),
     SB_OPT_RANGE_BIND(5 * MIB, 5LL * 1024 * MIB, gc_conf, part_size)},
    {SB_OPT("single_max", SB_OPT_SIZE, "\"16MB\"", 0, "Files up to this size go in one request; larger ones in parts."),
     SB_OPT_RANGE_BIND(0, 5LL * 1024 * MIB, gc_conf, single_max)},
    {SB_OPT("hdfs_buffer", SB_OPT_SIZE, "\"32MB\"", 0,
            "input hdfs: bytes read from WebHDFS held in memory at once (a part or a small file is read whole, "
            "as its CRC32C goes in the upload's header). Reads wait while it is full; one always runs. "
            "streams x part_size keeps every stream busy, at that much more resident memory."),
     SB_OPT_RANGE_BIND(1 * MIB, 64LL * 1024 * MIB, gc_conf, hdfs_buffer)},
    {SB_OPT("if_generation_match", SB_OPT_INT, NULL, 0,
            "0: create only; an object that exists with other content fails the event (412) instead of being "
            "overwritten."),
     SB_OPT_RANGE(0, 0)},
    {SB_OPT("xml_endpoint", SB_OPT_STRING, "\"https://storage.googleapis.com\"", 0,
            "Base URL of the Cloud Storage XML API (multipart uploads)."),
     SB_OPT_BIND(gc_conf, xml_endpoint)},
    {SB_OPT("progress_interval", SB_OPT_DURATION, "\"30s\"", 0, "How often a long copy logs its progress."),
     SB_OPT_RANGE_BIND(1000, 86400000, gc_conf, progress_interval)},
    {SB_OPT("stall_timeout", SB_OPT_DURATION, "\"10s\"", 0,
            "A transfer of file bytes (a part, a one-request upload, a WebHDFS read) that moves no byte for this "
            "long is cut and sent again; whole seconds. Keep it under half of systemd's WatchdogSec."),
     SB_OPT_RANGE_BIND(1000, 3600000, gc_conf, stall_timeout)},
    {SB_OPT("hdfs_url", SB_OPT_STRING, NULL, 0, "input hdfs: the NameNode's WebHDFS base, e.g. http://nn:9870."),
     SB_OPT_BIND(gc_conf, hdfs_url)},
    {SB_OPT("hdfs_user", SB_OPT_STRING, NULL, 0, "input hdfs: user.name for a cluster without Kerberos."),
     SB_OPT_BIND(gc_conf, hdfs_user)},
    {SB_OPT("hdfs_delegation", SB_OPT_STRING, NULL, 0,
            "input hdfs: a delegation token (use ${file:/path}); sent as delegation= on every WebHDFS request."),
     SB_OPT_BIND(gc_conf, hdfs_delegation)},
    {SB_OPT("hdfs_negotiate", SB_OPT_BOOL, "false", 0,
            "input hdfs: Kerberos (SPNEGO, curl --negotiate -u :) with the daemon's credential cache (KRB5CCNAME); "
            "excludes hdfs_user and hdfs_delegation."),
     SB_OPT_BIND(gc_conf, hdfs_negotiate)},
    SB_GCP_OPTION_DEFS,
    {0}};

typedef struct gcs_copy {
    sb_instance *ins;
    const gc_conf *c;
    int create_only;
    sb_gcp_client *gc;
    char *xml_base, *hdfs_base;
    sb_metric *m_bytes, *m_files, *m_skipped, *m_retries, *m_rate;
} gcs_copy;

/* ---- one event's copy ----------------------------------------------------- */

enum { PART_TODO, PART_FLIGHT, PART_DONE };

typedef struct part {
    int st;
    uint32_t crc;
    char *etag;
} part;

enum { F_WAIT, F_META, F_SINGLE, F_INIT, F_PARTS, F_COMPLETE, F_VERIFY, F_DONE };

typedef struct gfile {
    char *path, *rel, *name;
    uint64_t size;
    int64_t mtime_ns; /* identity at listing time: a resumed upload must be of the same file, */
    int64_t ctime_ns; /* and the file must still be it when the upload is made final */
    uint64_t ino;     /* local inode or WebHDFS fileId; ctime_ns 0 for WebHDFS (it has none) */
    int fd;
    int phase;
    int skipped;
    uint32_t crc; /* whole file, once known */
    int crc_known;
    int complete_404; /* the complete request answered 404: taken as a repeat of one that succeeded */
    int rstuck;       /* resumable: chunks in a row of which nothing was persisted */
    char *refusal;    /* a create-only request answered 412: its reason, while the object is checked */
    /* multipart */
    char *upload_id;
    uint64_t psize;
    uint32_t nparts, next, ndone, nflight;
    uint64_t counted; /* bytes of its done parts already in the job's done_bytes */
    part *parts;
    uint32_t remote_crc; /* hdfs: what Cloud Storage has, while our CRC is being read */
    /* resumable upload (streams 1): session URI, bytes Cloud Storage has
     * persisted, and the CRC32C of those bytes */
    char *session;
    uint64_t roff;
    uint32_t rcrc;
} gfile;

/* An object the destination listing showed (step 2). */
typedef struct known {
    char *name;
    uint64_t size;
    uint32_t crc;
    int has_crc;
} known;

/* How the job learns which objects exist: per file (objects.get), or from
 * one listing of the prefix, still running or done. */
enum { LIST_NONE, LIST_RUNNING, LIST_DONE };

typedef struct job {
    gcs_copy *p;
    sb_batch *b;
    size_t i;
    const char *eid;
    char *bucket, *prefix;
    gfile *f;
    size_t nf, next_file, active_files;
    int inflight;
    json_t *state; /* {"uploads": {name: {...}}} */
    uint64_t total, done_bytes, flight_bytes;
    /* the first failure decides the event */
    sb_result result;
    char *reason;
    int64_t retry_after_ms;
    int fatal_bucket;
    int64_t t0_us, last_log_us;
    uint64_t copied_files, skipped_files, sent_bytes;
    sb_gcp_multi *m;
    int hdfs;
    unsigned char *rbuf; /* range_crc's buffer, DROP_STEP bytes once used */
    int listing; /* LIST_* */
    known *known;
    size_t nknown, cknown, listed; /* listed: objects seen, kept or not */
    /* WebHDFS bytes in buffers (hdfs_buffer bounds it), and the reads
     * waiting for room: each holds its stream slot (counted in inflight) */
    uint64_t held;
    struct tx *waiting, *waiting_tail;
} job;

enum {
    T_META, T_SINGLE, T_INIT, T_PART, T_COMPLETE, T_VERIFY, T_DELETE, T_ABORT, T_READ, T_LIST, T_STAT,
    T_RINIT, T_RSTATUS, T_RCHUNK, T_RCANCEL, /* resumable: initiate, status query, chunk, cancel */
    T_OLIST                                  /* objects.list of the destination prefix */
};
/* what a WebHDFS read (T_READ) goes on with */
enum { R_SINGLE, R_PART, R_CRC, R_RCHUNK, R_RCRC };
/* what a WebHDFS GETFILESTATUS of a file being copied (T_STAT) goes on with */
enum { S_COMPLETE, S_SINGLE, S_RFINAL };

typedef struct tx {
    job *j;
    gfile *f;
    int kind;
    uint32_t part;
    /* body: pre ‖ file window ‖ post */
    char *pre, *post;
    size_t pre_len, post_len;
    uint64_t off, len; /* window in the file */
    unsigned char *map;
    size_t map_len, adj;
    int owned;         /* map is a malloc'd buffer (WebHDFS), not a mapping */
    int then;          /* T_READ: R_*; T_STAT: S_* */
    uint64_t got;      /* T_READ: bytes received */
    uint32_t rcrc;     /* T_READ R_CRC: running CRC */
    uint64_t pos, dropped; /* bytes of the body handed to curl; window bytes dropped */
    char *url;
    char *hdr[6];
    const char *hdrs[7];
    char *xml; /* complete body */
    struct tx *next_waiting; /* T_READ waiting for hdfs_buffer room */
    struct tx *pending; /* T_STAT S_RFINAL: the chunk to send when the file is unchanged (owned) */
} tx;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* RFC 3986 percent-encoding; keep_slash for XML API paths. */
static char *pct(const char *s, int keep_slash)
{
    sb_strbuf b = {0};
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '-' ||
            *q == '_' || *q == '.' || *q == '~' || (keep_slash && *q == '/'))
            sb_strbuf_add(&b, (const char *)q, 1);
        else
            sb_strbuf_printf(&b, "%%%02X", *q);
    }
    if (!b.p)
        sb_strbuf_add(&b, "", 0);
    return b.p;
}

/* A header value: printable ASCII kept, anything else percent-encoded. */
static char *hval(const char *s)
{
    sb_strbuf b = {0};
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q >= 0x20 && *q < 0x7f && *q != '%')
            sb_strbuf_add(&b, (const char *)q, 1);
        else
            sb_strbuf_printf(&b, "%%%02X", *q);
    }
    if (!b.p)
        sb_strbuf_add(&b, "", 0);
    return b.p;
}

static void fail(job *j, sb_result r, int64_t retry_after_ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(job *j, sb_result r, int64_t retry_after_ms, const char *fmt, ...)
{
    if (j->result != SB_RESULT_UNSET)
        return; /* the first failure is the reason */
    va_list ap;
    va_start(ap, fmt);
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    j->result = r;
    j->reason = strdup(buf);
    j->retry_after_ms = retry_after_ms;
}

static void report(job *j)
{
    uint64_t d = j->done_bytes + j->flight_bytes;
    sb_batch_progress(j->b, j->i, d > j->total ? j->total : d, j->total);
    int64_t t = now_us();
    if (t - j->last_log_us >= j->p->c->progress_interval * 1000) {
        j->last_log_us = t;
        double secs = (double)(t - j->t0_us) / 1e6;
        double rate = secs > 0 ? (double)j->sent_bytes / secs / 1e6 : 0;
        sb_log(j->p->ins, SB_LOG_INFO,
               "event %s: copied %" PRIu64 " of %" PRIu64 " bytes to gs://%s/%s (%.1f MB/s, %zu of %zu files)", j->eid,
               d, j->total, j->bucket, j->prefix, rate, (size_t)(j->copied_files + j->skipped_files), j->nf);
        sb_metric_set(j->p->m_rate, (int64_t)rate);
    }
}

/* ---- step state ----------------------------------------------------------- */

static json_t *upload_state(job *j, const gfile *f)
{
    return json_object_get(json_object_get(j->state, "uploads"), f->name);
}

static void save_state(job *j)
{
    sb_batch_set_state(j->b, j->i, json_deep_copy(j->state));
    if (sb_batch_save_state(j->b, j->i) != 0)
        fail(j, SB_RESULT_RETRY, 0, "the run ledger could not record the upload's progress");
}

static void state_set_upload(job *j, gfile *f)
{
    json_t *ups = json_object_get(j->state, "uploads");
    if (!ups) {
        ups = json_object();
        json_object_set_new(j->state, "uploads", ups);
    }
    json_t *parts = json_array();
    for (uint32_t k = 0; k < f->nparts; k++)
        if (f->parts[k].st == PART_DONE)
            json_array_append_new(parts, json_pack("[I,s,I]", (json_int_t)(k + 1), f->parts[k].etag,
                                                   (json_int_t)f->parts[k].crc));
    json_t *u = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "id", f->upload_id, "bucket", j->bucket, "size",
                          (json_int_t)f->size, "mtime_ns", (json_int_t)f->mtime_ns, "ino", (json_int_t)f->ino, "ps",
                          (json_int_t)f->psize, "parts", parts);
    if (f->ctime_ns)
        json_object_set_new(u, "ctime_ns", json_integer((json_int_t)f->ctime_ns));
    json_object_set_new(ups, f->name, u);
    save_state(j);
}

static void state_drop_upload(job *j, gfile *f)
{
    json_t *ups = json_object_get(j->state, "uploads");
    if (ups && json_object_get(ups, f->name)) {
        json_object_del(ups, f->name);
        save_state(j);
    }
}

/* ---- reading the file ----------------------------------------------------- */

static void unmap(tx *t)
{
    if (t->map) {
        if (t->owned) { /* on_done starts the reads waiting for this room once its handler ran */
            free(t->map);
            t->j->held -= t->map_len < t->j->held ? t->map_len : t->j->held;
        } else
            munmap(t->map, t->map_len);
        t->map = NULL;
    }
}

static int map_window(tx *t)
{
    if (t->map || t->len == 0)
        return 0;
    long pg = sysconf(_SC_PAGESIZE);
    t->adj = (size_t)(t->off % (uint64_t)pg);
    t->map_len = (size_t)t->len + t->adj;
    void *m = mmap(NULL, t->map_len, PROT_READ, MAP_SHARED, t->f->fd, (off_t)(t->off - t->adj));
    if (m == MAP_FAILED) {
        t->map = NULL;
        return -1;
    }
    t->map = m;
    madvise(m, t->map_len, MADV_SEQUENTIAL);
    return 0;
}

/* Drop the mapped pages of the window below window offset `upto`. */
static void drop_behind(tx *t, uint64_t upto)
{
    if (!t->map || t->owned)
        return;
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t end = ((upto + t->adj) / (uint64_t)pg) * (uint64_t)pg;
    if (end > t->dropped + DROP_STEP || upto == t->len) {
        madvise(t->map + t->dropped, (size_t)(end - t->dropped), MADV_DONTNEED);
        t->dropped = end;
    }
}

static int open_file(job *j, gfile *f);

/* Map a local window before it is sent, unless local_read is pread. */
static int prepare_window(tx *t)
{
    return t->j->p->c->local_read == READ_PREAD ? 0 : map_window(t);
}

/* The reason a window could not be read: the file shrank under the mapping. */
static void fail_shrunk(job *j, const gfile *f)
{
    fail(j, SB_RESULT_RETRY, 0, "%s shrank while being copied (it was %" PRIu64 " bytes when mapped)", f->path,
         f->size);
}

/* CRC32C of [off, off+len) of a local file into *out, read with pread()
 * through one reused buffer; -1 with the job failed. The CRC must be known
 * before a request's headers go, so these bytes are read twice: this pass
 * reads them with pread(), as mapping them costs three times the CPU here
 * (0.27 against 0.88 s/GiB in a VM with costly page faults, docs/
 * benchmarks.md) and pages mapped for it would count twice in RSS. */
static int range_crc(job *j, gfile *f, uint64_t off, uint64_t len, uint32_t *out)
{
    if (open_file(j, f) != 0)
        return -1;
    if (!j->rbuf && len && !(j->rbuf = malloc(DROP_STEP)))
        abort();
    uint32_t c = 0;
    for (uint64_t o = 0; o < len;) {
        size_t want = len - o < DROP_STEP ? (size_t)(len - o) : DROP_STEP;
        ssize_t n = pread(f->fd, j->rbuf, want, (off_t)(off + o));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fail(j, SB_RESULT_RETRY, 0, "%s: read: %s", f->path, strerror(errno));
            return -1;
        }
        if (n == 0) {
            fail_shrunk(j, f);
            return -1;
        }
        c = crc32c(c, j->rbuf, (size_t)n);
        o += (uint64_t)n;
    }
    *out = c;
    return 0;
}

/* CRC of the window into *out: its buffer (WebHDFS) or its file range. */
static int window_crc(tx *t, uint32_t *out)
{
    if (t->owned) {
        *out = crc32c(0, t->map + t->adj, (size_t)t->len);
        return 0;
    }
    return range_crc(t->j, t->f, t->off, t->len, out);
}

static size_t body_read(char *buf, size_t size, void *opaque)
{
    tx *t = opaque;
    uint64_t total = t->pre_len + t->len + t->post_len;
    if (t->pos >= total)
        return 0;
    int use_pread = !t->owned && t->j->p->c->local_read == READ_PREAD;
    if (t->len && !use_pread && map_window(t) != 0) {
        fail(t->j, SB_RESULT_RETRY, 0, "%s: mmap: %s", t->f->path, strerror(errno));
        return SB_GCP_READ_ABORT;
    }
    size_t n = 0;
    while (n < size && t->pos < total) {
        uint64_t pos = t->pos;
        const unsigned char *src;
        uint64_t avail;
        if (pos < t->pre_len) {
            src = (const unsigned char *)t->pre + pos;
            avail = t->pre_len - pos;
        } else if (pos < t->pre_len + t->len) {
            src = use_pread ? NULL : t->map + t->adj + (pos - t->pre_len);
            avail = t->pre_len + t->len - pos;
        } else {
            src = (const unsigned char *)t->post + (pos - t->pre_len - t->len);
            avail = total - pos;
        }
        size_t k = size - n < avail ? size - n : (size_t)avail;
        int in_file = pos >= t->pre_len && pos < t->pre_len + t->len;
        if (in_file && use_pread) {
            ssize_t r = pread(t->f->fd, buf + n, k, (off_t)(t->off + (pos - t->pre_len)));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                if (r == 0)
                    fail_shrunk(t->j, t->f);
                else
                    fail(t->j, SB_RESULT_RETRY, 0, "%s: read: %s", t->f->path, strerror(errno));
                return SB_GCP_READ_ABORT;
            }
            k = (size_t)r;
        } else if (!in_file || t->owned) {
            memcpy(buf + n, src, k);
        } else if (mapguard_copy(buf + n, src, k) != 0) {
            fail_shrunk(t->j, t->f);
            return SB_GCP_READ_ABORT;
        }
        n += k;
        t->pos += k;
    }
    if (t->len) {
        uint64_t in = t->pos > t->pre_len ? t->pos - t->pre_len : 0;
        if (in > t->len)
            in = t->len;
        drop_behind(t, in);
    }
    t->j->flight_bytes += n;
    t->j->sent_bytes += n;
    report(t->j);
    return n;
}

static int body_rewind(void *opaque)
{
    tx *t = opaque;
    t->j->flight_bytes -= t->pos < t->j->flight_bytes ? t->pos : t->j->flight_bytes;
    t->pos = 0;
    t->dropped = 0;
    sb_metric_add(t->j->p->m_retries, 1);
    return 0;
}

/* ---- transfers ------------------------------------------------------------ */

static void pump(job *j);
static int local_changed(const gfile *f, char *why, size_t n);
static int identity_differs(const gfile *f, uint64_t size, int64_t mtime_ns, int64_t ctime_ns, uint64_t ino, char *why,
                            size_t n);
static int64_t hdfs_mtime_ns(const json_t *st);
static const char *xml_tag(const char *body, const char *tag, char *out, size_t out_size);
static void on_done(sb_gcp_multi *m, void *opaque, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr);

static void tx_free(tx *t)
{
    unmap(t);
    free(t->pre);
    free(t->post);
    free(t->url);
    free(t->xml);
    for (size_t k = 0; k < sizeof t->hdr / sizeof *t->hdr; k++)
        free(t->hdr[k]);
    if (t->pending)
        tx_free(t->pending);
    free(t);
}

static tx *tx_new(job *j, gfile *f, int kind)
{
    tx *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->j = j;
    t->f = f;
    t->kind = kind;
    return t;
}

static void tx_header(tx *t, char *h)
{
    size_t k = 0;
    while (t->hdr[k])
        k++;
    t->hdr[k] = h;
    t->hdrs[k] = h;
}

/* A transfer of file bytes that moves none for stall_timeout is cut (a
 * transport error, "timed out") and sent again by the access layer; after
 * max_attempts the event RETRIES with its committed parts. Only these: the
 * answer to a complete request (no body, the server assembling parts) may
 * rightly take longer. A single upload or last chunk also waits for its
 * answer under the bound; should that be cut, it is only sent again. */
static void stall_bound(const gcs_copy *p, sb_gcp_request *req)
{
    req->low_speed_limit = 1;
    req->low_speed_time_ms = p->c->stall_timeout;
}

static void send_tx(tx *t, const char *method, int idempotent)
{
    job *j = t->j;
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    req.method = method;
    req.url = t->url;
    req.headers = t->hdr[0] ? t->hdrs : NULL;
    req.idempotent = idempotent;
    req.batch = j->b;
    if (t->kind == T_PART || t->kind == T_SINGLE || t->kind == T_RCHUNK)
        stall_bound(j->p, &req);
    uint64_t blen = t->pre_len + t->len + t->post_len;
    if (t->xml) {
        req.body = t->xml;
        req.body_len = strlen(t->xml);
    } else if (blen || !strcmp(method, "PUT") || !strcmp(method, "POST")) {
        req.read_cb = body_read;
        req.rewind_cb = body_rewind;
        req.read_opaque = t;
        req.body_len = (size_t)blen;
    }
    char err[512];
    if (sb_gcp_multi_add(j->m, &req, on_done, t, err, sizeof err) != 0) {
        fail(j, SB_RESULT_FAIL, 0, "%s", err);
        tx_free(t);
        return;
    }
    j->inflight++;
}

static char *json_url(job *j, gfile *f, const char *query)
{
    char *b = pct(j->bucket, 0), *o = pct(f->name, 0);
    char *u = sb_asprintf("%s/storage/v1/b/%s/o/%s%s", sb_gcp_client_base_url(j->p->gc), b, o, query);
    free(b);
    free(o);
    return u;
}

static char *xml_url(job *j, gfile *f, const char *query)
{
    char *b = pct(j->bucket, 0), *o = pct(f->name, 1);
    char *u = sb_asprintf("%s/%s/%s%s", j->p->xml_base, b, o, query);
    free(b);
    free(o);
    return u;
}

/* ---- WebHDFS ----------------------------------------------------------------- */

static char *hdfs_url(const gcs_copy *p, const char *path, const char *op_query)
{
    char *enc = pct(path, 1);
    sb_strbuf b = {0};
    sb_strbuf_printf(&b, "%s/webhdfs/v1%s?%s", p->hdfs_base, enc, op_query);
    free(enc);
    if (p->c->hdfs_user) {
        char *u = pct(p->c->hdfs_user, 0);
        sb_strbuf_printf(&b, "&user.name=%s", u);
        free(u);
    }
    if (p->c->hdfs_delegation) {
        char *d = pct(p->c->hdfs_delegation, 0);
        sb_strbuf_printf(&b, "&delegation=%s", d);
        free(d);
    }
    return b.p;
}

/* What every request to the cluster (NameNode and DataNodes) carries. */
static void hdfs_request(const gcs_copy *p, sb_gcp_request *req)
{
    req->no_auth = 1; /* never send a Google token to the cluster */
    req->negotiate = p->c->hdfs_negotiate;
}

static size_t hdfs_write(const char *data, size_t len, const struct sb_gcp_response *resp, void *opaque)
{
    (void)resp;
    tx *t = opaque;
    if (t->got + len > t->len)
        return 0; /* more than asked for: abort */
    if (t->then == R_CRC || t->then == R_RCRC)
        t->rcrc = crc32c(t->rcrc, data, len);
    else
        memcpy(t->map + t->got, data, len);
    t->got += len;
    report(t->j); /* reading is work too: keeps the watchdog fed */
    return len;
}

static void send_read(tx *t);

/* Read [off, off+len) of the file from the DataNode (OPEN follows the 307),
 * then go on with `then`: R_SINGLE / R_PART hold the bytes in a buffer,
 * R_CRC only computes their CRC. A read into a buffer waits while
 * hdfs_buffer is full and another buffer holds it (so one always runs),
 * keeping its stream slot: RSS stays bounded whatever streams and
 * part_size are. */
static void hdfs_read(job *j, gfile *f, uint64_t off, uint64_t len, int then, uint32_t k)
{
    tx *t = tx_new(j, f, T_READ);
    t->then = then;
    t->part = k;
    t->off = off;
    t->len = len;
    if (then != R_CRC && then != R_RCRC && len) {
        t->owned = 1;
        t->map_len = (size_t)len; /* allocated when sent */
        if (j->waiting || (j->held && j->held + len > (uint64_t)j->p->c->hdfs_buffer)) { /* in order */
            j->inflight++;
            if (j->waiting_tail)
                j->waiting_tail->next_waiting = t;
            else
                j->waiting = t;
            j->waiting_tail = t;
            return;
        }
    }
    send_read(t);
}

static void send_read(tx *t)
{
    job *j = t->j;
    if (t->owned) {
        t->map = malloc(t->map_len);
        if (!t->map) {
            fail(j, SB_RESULT_RETRY, 0, "out of memory for a %zu-byte read buffer", t->map_len);
            tx_free(t);
            return;
        }
        j->held += t->map_len;
    }
    char q[96];
    snprintf(q, sizeof q, "op=OPEN&offset=%" PRIu64 "&length=%" PRIu64, t->off, t->len);
    t->url = hdfs_url(j->p, t->f->path, q);
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    hdfs_request(j->p, &req);
    stall_bound(j->p, &req);
    req.url = t->url;
    req.follow_redirects = 3;
    req.idempotent = 1;
    req.batch = j->b;
    req.write_cb = hdfs_write;
    req.write_opaque = t;
    char err[512];
    if (sb_gcp_multi_add(j->m, &req, on_done, t, err, sizeof err) != 0) {
        fail(j, SB_RESULT_FAIL, 0, "%s", err);
        tx_free(t);
        return;
    }
    j->inflight++;
}

/* Buffer room came free: start the reads waiting for it, in order (or,
 * once the event has failed, drop them with their slots). */
static void start_waiting_reads(job *j)
{
    while (j->waiting) {
        tx *t = j->waiting;
        if (j->result == SB_RESULT_UNSET && j->held && j->held + t->map_len > (uint64_t)j->p->c->hdfs_buffer)
            break;
        j->waiting = t->next_waiting;
        if (!j->waiting)
            j->waiting_tail = NULL;
        j->inflight--; /* send_read takes the slot again */
        if (j->result != SB_RESULT_UNSET)
            tx_free(t);
        else
            send_read(t);
    }
}

static void start_single_buf(job *j, gfile *f, unsigned char *buf);
static void send_part(job *j, gfile *f, tx *t);
static void after_crc(job *j, gfile *f);
static void start_complete(job *j, gfile *f);
static void send_chunk(job *j, gfile *f, tx *t);
static void resumable_caught_up(job *j, gfile *f, uint64_t persisted, uint32_t crc);
static void start_rcancel(job *j, gfile *f, const char *session);
static void start_abort(job *j, gfile *f, const char *upload_id);
static void start_delete(job *j, gfile *f, const char *generation);

/* The source changed while it was copied: the bytes sent may be of two
 * versions. The multipart upload is aborted or the resumable session
 * cancelled (and forgotten), and the attempt RETRIES, so the next one
 * lists the file again and copies the new version whole. */
static void source_changed(job *j, gfile *f, const char *why)
{
    fail(j, SB_RESULT_RETRY, 0, "%s changed while being copied (%s)", f->path, why);
    if (f->upload_id) {
        sb_log(j->p->ins, SB_LOG_INFO, "event %s: aborting the multipart upload of gs://%s/%s: %s changed (%s)",
               j->eid, j->bucket, f->name, f->path, why);
        start_abort(j, f, f->upload_id);
        state_drop_upload(j, f);
    }
    if (f->session) {
        start_rcancel(j, f, f->session);
        state_drop_upload(j, f);
    }
}

/* GETFILESTATUS of a file being copied, then `then` if it is unchanged:
 * S_COMPLETE, S_SINGLE with the file's bytes in buf, or S_RFINAL with the
 * last chunk ready in `pending` (both taken). */
static void hdfs_stat_then(job *j, gfile *f, int then, unsigned char *buf, tx *pending)
{
    tx *t = tx_new(j, f, T_STAT);
    t->then = then;
    t->map = buf;
    t->map_len = buf ? (size_t)f->size : 0; /* what hdfs_buffer counted for it */
    t->owned = 1;
    t->pending = pending;
    t->url = hdfs_url(j->p, f->path, "op=GETFILESTATUS");
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    hdfs_request(j->p, &req);
    req.url = t->url;
    req.idempotent = 1;
    req.batch = j->b;
    char err[512];
    if (sb_gcp_multi_add(j->m, &req, on_done, t, err, sizeof err) != 0) {
        fail(j, SB_RESULT_FAIL, 0, "%s", err);
        tx_free(t);
        return;
    }
    j->inflight++;
}

static void on_stat(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    gfile *f = t->f;
    char why[256];
    if (rc == SB_GCP_HTTP_ERROR && resp->status == 404) {
        source_changed(j, f, "it is gone");
        return;
    }
    if (rc != SB_GCP_OK) {
        sb_gcp_outcome o = sb_gcp_classify(rc, resp, errstr, 0);
        fail(j, o.result == SB_RESULT_FAIL ? SB_RESULT_FAIL : SB_RESULT_RETRY, o.retry_after_ms,
             "WebHDFS GETFILESTATUS %s: %s", f->path, o.reason ? o.reason : "failed");
        return;
    }
    json_t *o = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    json_t *st = json_object_get(o, "FileStatus");
    if (!json_is_object(st)) {
        fail(j, SB_RESULT_RETRY, 0, "WebHDFS GETFILESTATUS %s: no FileStatus in the answer", f->path);
    } else if (identity_differs(f, (uint64_t)json_integer_value(json_object_get(st, "length")), hdfs_mtime_ns(st), 0,
                                (uint64_t)json_integer_value(json_object_get(st, "fileId")), why, sizeof why)) {
        source_changed(j, f, why);
    } else if (j->result == SB_RESULT_UNSET) {
        if (t->then == S_COMPLETE) {
            start_complete(j, f);
        } else if (t->then == S_RFINAL) {
            tx *u = t->pending;
            t->pending = NULL; /* handed on */
            send_chunk(j, f, u);
        } else {
            unsigned char *buf = t->map;
            t->map = NULL; /* handed on */
            start_single_buf(j, f, buf);
        }
    }
    json_decref(o);
}

/* Every part is sent: make the upload final only if the source is still
 * the file the parts were read from (rclone's check, made after the last
 * part rather than before the first). */
static void parts_sent(job *j, gfile *f)
{
    if (j->result != SB_RESULT_UNSET)
        return;
    if (j->hdfs) {
        hdfs_stat_then(j, f, S_COMPLETE, NULL, NULL);
        return;
    }
    char why[256];
    if (local_changed(f, why, sizeof why))
        source_changed(j, f, why);
    else
        start_complete(j, f);
}

static void on_read(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    gfile *f = t->f;
    /* a failed or short read fails the event; once it has failed, for
     * whatever reason, nothing more is sent */
    if (rc != SB_GCP_OK || t->got != t->len || j->result != SB_RESULT_UNSET) {
        if (t->then == R_PART) {
            f->parts[t->part].st = PART_TODO;
            f->nflight--;
        }
        if (rc != SB_GCP_OK) {
            sb_gcp_outcome o = sb_gcp_classify(rc, resp, errstr, 0);
            fail(j, o.result == SB_RESULT_FAIL ? SB_RESULT_FAIL : SB_RESULT_RETRY, o.retry_after_ms,
                 "WebHDFS read of %s: %s", f->path, o.reason ? o.reason : "failed");
        } else if (t->got != t->len) {
            fail(j, SB_RESULT_RETRY, 0, "WebHDFS read of %s at %" PRIu64 ": %" PRIu64 " of %" PRIu64 " bytes", f->path,
                 t->off, t->got, t->len);
        }
        return;
    }
    if (t->then == R_CRC) {
        f->crc = t->rcrc;
        f->crc_known = 1;
        after_crc(j, f);
    } else if (t->then == R_SINGLE) {
        unsigned char *buf = t->map;
        t->map = NULL; /* handed on */
        f->crc = buf ? crc32c(0, buf, (size_t)t->len) : 0;
        f->crc_known = 1;
        hdfs_stat_then(j, f, S_SINGLE, buf, NULL); /* the bytes are all here: still the file listed? */
    } else if (t->then == R_RCRC) {
        resumable_caught_up(j, f, t->off + t->len, crc32c_combine(f->rcrc, t->rcrc, t->len));
    } else if (t->then == R_RCHUNK) {
        tx *u = tx_new(j, f, T_RCHUNK);
        u->off = t->off;
        u->len = t->len;
        u->map = t->map;
        u->map_len = t->map_len;
        u->owned = 1;
        t->map = NULL;
        u->rcrc = crc32c(0, u->map, (size_t)u->len);
        if (u->off + u->len == f->size) { /* the last bytes are here: still the file listed? */
            hdfs_stat_then(j, f, S_RFINAL, NULL, u);
            return;
        }
        send_chunk(j, f, u);
    } else {
        tx *u = tx_new(j, f, T_PART);
        u->part = t->part;
        u->off = t->off;
        u->len = t->len;
        u->map = t->map;
        u->map_len = t->map_len;
        u->owned = 1;
        t->map = NULL;
        f->parts[u->part].crc = crc32c(0, u->map, (size_t)u->len);
        send_part(j, f, u);
    }
}

static void start_meta(job *j, gfile *f)
{
    f->phase = F_META;
    tx *t = tx_new(j, f, T_META);
    t->url = json_url(j, f, "?fields=size,crc32c,generation");
    send_tx(t, "GET", 1);
}

static int open_file(job *j, gfile *f)
{
    if (f->fd >= 0 || j->hdfs)
        return 0;
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        fail(j, errno == ENOENT ? SB_RESULT_FAIL : SB_RESULT_RETRY, 0, "%s: %s", f->path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size != f->size) {
        fail(j, SB_RESULT_RETRY, 0, "%s changed size while being copied (%" PRIu64 " then %lld bytes)", f->path,
             f->size, (long long)st.st_size);
        return -1;
    }
    return 0;
}

static int file_crc(job *j, gfile *f)
{
    if (f->crc_known)
        return 0;
    uint32_t crc = 0;
    if (range_crc(j, f, 0, f->size, &crc) != 0)
        return -1;
    f->crc = crc;
    f->crc_known = 1;
    return 0;
}

static void finish_file(job *j, gfile *f, int skipped)
{
    f->phase = F_DONE;
    f->skipped = skipped;
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    j->active_files--;
    j->done_bytes += f->size > f->counted ? f->size - f->counted : 0; /* its done parts counted already */
    f->counted = f->size;
    if (skipped) {
        j->skipped_files++;
        sb_metric_add(j->p->m_skipped, 1);
    } else {
        j->copied_files++;
        sb_metric_add(j->p->m_files, 1);
        sb_metric_add(j->p->m_bytes, f->size);
    }
    report(j);
}

/* The object's resource for an upload: name, content type and our
 * metadata (event id, source path, run id). The caller owns it. */
static json_t *object_resource(job *j, const gfile *f)
{
    json_t *md = json_pack("{s:s, s:s}", "syncbridge-event-id", j->eid, "syncbridge-source", f->path);
    const char *run = sb_event_get_string(sb_batch_event(j->b, j->i), "run_id");
    if (run)
        json_object_set_new(md, "syncbridge-run-id", json_string(run));
    return json_pack("{s:s, s:s, s:o}", "name", f->name, "contentType", "application/octet-stream", "metadata", md);
}

static void object_meta(tx *t, const char *meta_key, char **pre, size_t *pre_len, char **post, size_t *post_len,
                        const char *boundary)
{
    job *j = t->j;
    gfile *f = t->f;
    char b64[9];
    crc32c_b64(f->crc, b64);
    json_t *o = object_resource(j, f);
    json_object_set_new(o, meta_key, json_string(b64));
    char *js = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    *pre = sb_asprintf("--%s\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n%s\r\n--%s\r\n"
                       "Content-Type: application/octet-stream\r\n\r\n",
                       boundary, js, boundary);
    free(js);
    *pre_len = strlen(*pre);
    *post = sb_asprintf("\r\n--%s--\r\n", boundary);
    *post_len = strlen(*post);
}

static void start_single(job *j, gfile *f)
{
    f->phase = F_SINGLE;
    if (j->hdfs) {
        hdfs_read(j, f, 0, f->size, R_SINGLE, 0);
        return;
    }
    if (file_crc(j, f) != 0)
        return;
    start_single_buf(j, f, NULL);
}

/* buf: the file's bytes read from WebHDFS (taken), or NULL: mmap the file. */
static void start_single_buf(job *j, gfile *f, unsigned char *buf)
{
    tx *t = tx_new(j, f, T_SINGLE);
    t->off = 0;
    t->len = f->size;
    if (buf) {
        t->map = buf;
        t->map_len = (size_t)f->size;
        t->owned = 1;
    }
    char boundary[48];
    snprintf(boundary, sizeof boundary, "sb_gcs_copy_%08x%08x", (unsigned)f->crc, (unsigned)f->size);
    object_meta(t, "crc32c", &t->pre, &t->pre_len, &t->post, &t->post_len, boundary);
    char *b = pct(j->bucket, 0);
    t->url = sb_asprintf("%s/upload/storage/v1/b/%s/o?uploadType=multipart&fields=size,crc32c,generation%s",
                         sb_gcp_client_base_url(j->p->gc), b, j->p->create_only ? "&ifGenerationMatch=0" : "");
    free(b);
    tx_header(t, sb_asprintf("Content-Type: multipart/related; boundary=%s", boundary));
    send_tx(t, "POST", 1); /* the same content again is harmless */
}

static void start_init(job *j, gfile *f)
{
    f->phase = F_INIT;
    tx *t = tx_new(j, f, T_INIT);
    t->url = xml_url(j, f, "?uploads");
    char *e = hval(j->eid), *s = hval(f->path);
    tx_header(t, sb_asprintf("Content-Type: application/octet-stream"));
    tx_header(t, sb_asprintf("x-goog-meta-syncbridge-event-id: %s", e));
    tx_header(t, sb_asprintf("x-goog-meta-syncbridge-source: %s", s));
    const char *run = sb_event_get_string(sb_batch_event(j->b, j->i), "run_id");
    if (run) {
        char *r = hval(run);
        tx_header(t, sb_asprintf("x-goog-meta-syncbridge-run-id: %s", r));
        free(r);
    }
    free(e);
    free(s);
    send_tx(t, "POST", 0);
}

static void setup_parts(gfile *f, uint64_t psize)
{
    f->psize = psize;
    f->nparts = (uint32_t)((f->size + psize - 1) / psize);
    f->parts = calloc(f->nparts, sizeof *f->parts);
    if (!f->parts)
        abort();
    f->next = f->ndone = f->nflight = 0;
}

static void start_part(job *j, gfile *f, uint32_t k)
{
    if (j->hdfs) {
        uint64_t off = (uint64_t)k * f->psize;
        f->parts[k].st = PART_FLIGHT;
        f->nflight++;
        hdfs_read(j, f, off, f->size - off < f->psize ? f->size - off : f->psize, R_PART, k);
        return;
    }
    tx *t = tx_new(j, f, T_PART);
    t->part = k;
    t->off = (uint64_t)k * f->psize;
    t->len = f->size - t->off < f->psize ? f->size - t->off : f->psize;
    if (open_file(j, f) != 0 || prepare_window(t) != 0) {
        if (j->result == SB_RESULT_UNSET)
            fail(j, SB_RESULT_RETRY, 0, "%s: mmap: %s", f->path, strerror(errno));
        tx_free(t);
        return;
    }
    if (window_crc(t, &f->parts[k].crc) != 0) {
        tx_free(t);
        return;
    }
    f->parts[k].st = PART_FLIGHT;
    f->nflight++;
    send_part(j, f, t);
}

/* PUT one part whose bytes and CRC are ready. */
static void send_part(job *j, gfile *f, tx *t)
{
    uint32_t k = t->part;
    char q[96], b64[9];
    snprintf(q, sizeof q, "?partNumber=%u&uploadId=", k + 1);
    char *id = pct(f->upload_id, 0), *qq = sb_asprintf("%s%s", q, id);
    t->url = xml_url(j, f, qq);
    free(id);
    free(qq);
    crc32c_b64(f->parts[k].crc, b64);
    tx_header(t, sb_asprintf("x-goog-hash: crc32c=%s", b64));
    tx_header(t, sb_asprintf("Content-Type: application/octet-stream"));
    send_tx(t, "PUT", 1);
}

static void start_complete(job *j, gfile *f)
{
    f->phase = F_COMPLETE;
    tx *t = tx_new(j, f, T_COMPLETE);
    sb_strbuf x = {0};
    sb_strbuf_printf(&x, "<CompleteMultipartUpload>");
    for (uint32_t k = 0; k < f->nparts; k++)
        sb_strbuf_printf(&x, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", k + 1, f->parts[k].etag);
    sb_strbuf_printf(&x, "</CompleteMultipartUpload>");
    t->xml = x.p;
    char *id = pct(f->upload_id, 0), *q = sb_asprintf("?uploadId=%s", id);
    t->url = xml_url(j, f, q);
    free(id);
    free(q);
    tx_header(t, sb_asprintf("Content-Type: application/xml"));
    if (j->p->create_only)
        tx_header(t, sb_asprintf("x-goog-if-generation-match: 0"));
    send_tx(t, "POST", 1); /* a repeat answers NoSuchUpload: then the object tells */
}

static void start_verify(job *j, gfile *f)
{
    f->phase = F_VERIFY;
    tx *t = tx_new(j, f, T_VERIFY);
    t->url = json_url(j, f, "?fields=size,crc32c,generation");
    send_tx(t, "GET", 1);
}

static void start_delete(job *j, gfile *f, const char *generation)
{
    tx *t = tx_new(j, f, T_DELETE);
    char *q = sb_asprintf("?ifGenerationMatch=%s", generation ? generation : "0");
    t->url = json_url(j, f, generation ? q : "");
    free(q);
    send_tx(t, "DELETE", 1);
}

static void start_abort(job *j, gfile *f, const char *upload_id)
{
    tx *t = tx_new(j, f, T_ABORT);
    char *id = pct(upload_id, 0), *q = sb_asprintf("?uploadId=%s", id);
    t->url = xml_url(j, f, q);
    free(id);
    free(q);
    send_tx(t, "DELETE", 1);
}

static void check_object(job *j, gfile *f, sb_gcp_response *resp, const char *how);
static void request_failed(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr,
                           const char *what);
static void precondition_failed(job *j, tx *t, sb_gcp_response *resp, const char *errstr, const char *what);

/* Whether a recorded upload is of the file as listed now: same size, and
 * (when recorded) same mtime, ctime and inode. */
static int recorded_same_file(const json_t *u, const gfile *f)
{
    json_t *mt = json_object_get(u, "mtime_ns"), *ino = json_object_get(u, "ino");
    json_t *ct = json_object_get(u, "ctime_ns");
    return (uint64_t)json_integer_value(json_object_get(u, "size")) == f->size &&
           (!mt || (int64_t)json_integer_value(mt) == f->mtime_ns) &&
           (!ct || (int64_t)json_integer_value(ct) == f->ctime_ns) &&
           (!ino || (uint64_t)json_integer_value(ino) == f->ino);
}

/* Abort or cancel whatever upload the step state records for the file,
 * and forget it. */
static void drop_recorded(job *j, gfile *f)
{
    json_t *u = upload_state(j, f);
    const char *id = json_string_value(json_object_get(u, "id"));
    const char *sess = json_string_value(json_object_get(u, "session"));
    if (id)
        start_abort(j, f, id);
    if (sess)
        start_rcancel(j, f, sess);
    if (u)
        state_drop_upload(j, f);
}

/* ---- one stream: a resumable upload (JSON API) ------------------------------
 *
 * With streams 1 a large file goes up as one resumable upload: initiate
 * (the object's metadata; the answer's Location is the session URI), then
 * chunks of part_size (rounded down to 256 KiB, as Cloud Storage wants)
 * one after another with Content-Range, each answered 308 with the bytes
 * persisted ("Range: bytes=0-N"), the last one with the object. The
 * session, the bytes persisted and their CRC32C are the step state, so
 * after a crash the copy asks the session how far it got
 * (`Content-Range: bytes *\/SIZE`) and goes on from there. The last chunk
 * carries X-Goog-Hash with the whole file's CRC32C, combined from the
 * chunks'; Cloud Storage refuses the upload if the bytes differ. */

#define RCHUNK_QUANTUM (256 * 1024)

static uint64_t chunk_size(const job *j)
{
    return (uint64_t)j->p->c->part_size / RCHUNK_QUANTUM * RCHUNK_QUANTUM;
}

/* Bytes persisted, from a 308's "Range: bytes=0-N" (none: 0); -1 if unreadable. */
static int64_t persisted_of(const sb_gcp_response *resp)
{
    const char *r = sb_gcp_response_header(resp, "range");
    unsigned long long a, b;
    if (!r)
        return 0;
    if (sscanf(r, "bytes=%llu-%llu", &a, &b) != 2 || a != 0)
        return -1;
    return (int64_t)b + 1;
}

static void state_set_session(job *j, gfile *f)
{
    json_t *ups = json_object_get(j->state, "uploads");
    if (!ups) {
        ups = json_object();
        json_object_set_new(j->state, "uploads", ups);
    }
    json_t *u = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "session", f->session, "bucket", j->bucket, "size",
                          (json_int_t)f->size, "mtime_ns", (json_int_t)f->mtime_ns, "ino", (json_int_t)f->ino,
                          "offset", (json_int_t)f->roff, "crc", (json_int_t)f->rcrc);
    if (f->ctime_ns)
        json_object_set_new(u, "ctime_ns", json_integer((json_int_t)f->ctime_ns));
    json_object_set_new(ups, f->name, u);
    save_state(j);
}

static void start_rinit(job *j, gfile *f)
{
    f->phase = F_INIT;
    free(f->session);
    f->session = NULL;
    f->roff = 0;
    f->rcrc = 0;
    j->done_bytes -= f->counted; /* from the start again */
    f->counted = 0;
    tx *t = tx_new(j, f, T_RINIT);
    json_t *o = object_resource(j, f);
    t->xml = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *b = pct(j->bucket, 0);
    t->url = sb_asprintf("%s/upload/storage/v1/b/%s/o?uploadType=resumable%s", sb_gcp_client_base_url(j->p->gc), b,
                         j->p->create_only ? "&ifGenerationMatch=0" : "");
    free(b);
    tx_header(t, sb_asprintf("Content-Type: application/json; charset=UTF-8"));
    tx_header(t, sb_asprintf("X-Upload-Content-Type: application/octet-stream"));
    tx_header(t, sb_asprintf("X-Upload-Content-Length: %" PRIu64, f->size));
    send_tx(t, "POST", 1); /* a repeat opens a second session; the first is never used and expires */
}

static void start_rstatus(job *j, gfile *f)
{
    f->phase = F_PARTS;
    tx *t = tx_new(j, f, T_RSTATUS);
    t->url = strdup(f->session);
    tx_header(t, sb_asprintf("Content-Range: bytes */%" PRIu64, f->size));
    send_tx(t, "PUT", 1);
}

/* Cancel a session (Cloud Storage answers 499). */
static void start_rcancel(job *j, gfile *f, const char *session)
{
    tx *t = tx_new(j, f, T_RCANCEL);
    t->url = strdup(session);
    send_tx(t, "DELETE", 1);
}

/* The next chunk from the bytes persisted on. */
static void next_chunk(job *j, gfile *f)
{
    uint64_t cs = chunk_size(j);
    uint64_t len = f->size - f->roff < cs ? f->size - f->roff : cs;
    if (j->hdfs) {
        hdfs_read(j, f, f->roff, len, R_RCHUNK, 0);
        return;
    }
    tx *t = tx_new(j, f, T_RCHUNK);
    t->off = f->roff;
    t->len = len;
    if (open_file(j, f) != 0 || prepare_window(t) != 0) {
        if (j->result == SB_RESULT_UNSET)
            fail(j, SB_RESULT_RETRY, 0, "%s: mmap: %s", f->path, strerror(errno));
        tx_free(t);
        return;
    }
    if (window_crc(t, &t->rcrc) != 0) {
        tx_free(t);
        return;
    }
    send_chunk(j, f, t);
}

/* PUT a chunk whose bytes and CRC (t->rcrc) are ready. */
static void send_chunk(job *j, gfile *f, tx *t)
{
    char why[256];
    /* the last chunk makes the object final: a local file changed in place
     * since the listing must not get there (WebHDFS is checked before) */
    if (t->off + t->len == f->size && !j->hdfs && local_changed(f, why, sizeof why)) {
        tx_free(t);
        source_changed(j, f, why);
        return;
    }
    f->phase = F_PARTS;
    t->url = strdup(f->session);
    tx_header(t, sb_asprintf("Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, t->off, t->off + t->len - 1,
                             f->size));
    tx_header(t, sb_asprintf("Content-Type: application/octet-stream"));
    if (t->off + t->len == f->size) {
        char b64[9];
        crc32c_b64(crc32c_combine(f->rcrc, t->rcrc, t->len), b64);
        tx_header(t, sb_asprintf("X-Goog-Hash: crc32c=%s", b64));
    }
    send_tx(t, "PUT", 1); /* the same range again is harmless: persisted bytes are skipped */
}

/* Cloud Storage has `persisted` bytes whose CRC32C is `crc`: record it and
 * go on, or (all there: the last answer was lost) check the object. */
static void resumable_caught_up(job *j, gfile *f, uint64_t persisted, uint32_t crc)
{
    uint64_t was = f->roff;
    f->roff = persisted;
    f->rcrc = crc;
    if (persisted > was) {
        j->done_bytes += persisted - was;
        f->counted += persisted - was;
    }
    if (persisted == f->size) {
        f->crc = crc;
        f->crc_known = 1;
        state_drop_upload(j, f);
        free(f->session);
        f->session = NULL;
        start_verify(j, f);
        return;
    }
    if (persisted != was)
        state_set_session(j, f);
    if (j->result == SB_RESULT_UNSET)
        next_chunk(j, f);
}

/* Persisted bytes beyond those recorded (a chunk whose answer was lost, or
 * a crash before its state was written): their CRC, then go on. */
static void catch_up(job *j, gfile *f, uint64_t n)
{
    if (n == f->roff) {
        resumable_caught_up(j, f, n, f->rcrc);
        return;
    }
    if (j->hdfs) {
        hdfs_read(j, f, f->roff, n - f->roff, R_RCRC, 0);
        return;
    }
    uint32_t c;
    if (range_crc(j, f, f->roff, n - f->roff, &c) == 0)
        resumable_caught_up(j, f, n, crc32c_combine(f->rcrc, c, n - f->roff));
}

/* Resume the session the step state records, or begin one. */
static void start_resumable(job *j, gfile *f)
{
    json_t *u = upload_state(j, f);
    const char *sess = json_string_value(json_object_get(u, "session"));
    uint64_t off = (uint64_t)json_integer_value(json_object_get(u, "offset"));
    if (sess && recorded_same_file(u, f) && off < f->size) {
        f->session = strdup(sess);
        f->roff = off;
        f->rcrc = (uint32_t)json_integer_value(json_object_get(u, "crc"));
        j->done_bytes += off;
        f->counted += off;
        sb_log(j->p->ins, SB_LOG_INFO, "event %s: resuming the resumable upload of %s at byte %" PRIu64 " of %" PRIu64,
               j->eid, f->name, off, f->size);
        start_rstatus(j, f);
        return;
    }
    if (sess)
        sb_log(j->p->ins, SB_LOG_INFO,
               "event %s: %s is not the file the open resumable upload of %s began with (size, mtime, ctime or "
               "inode differ): cancelling it and starting again",
               j->eid, f->path, f->name);
    drop_recorded(j, f);
    start_rinit(j, f);
}

static void on_rinit(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    gfile *f = t->f;
    const char *loc = rc == SB_GCP_OK ? sb_gcp_response_header(resp, "location") : NULL;
    if (rc != SB_GCP_OK) {
        request_failed(j, t, rc, resp, errstr, "starting the resumable upload of");
    } else if (!loc || (strncmp(loc, "http://", 7) && strncmp(loc, "https://", 8))) {
        fail(j, SB_RESULT_RETRY, 0, "starting the resumable upload of gs://%s/%s: no Location in the answer",
             j->bucket, f->name);
    } else {
        f->session = strdup(loc);
        state_set_session(j, f); /* before any byte: a crash resumes it */
        if (j->result == SB_RESULT_UNSET)
            next_chunk(j, f);
    }
}

static void on_rstatus(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    gfile *f = t->f;
    int64_t n = rc == SB_GCP_OK && resp->status == 308 ? persisted_of(resp) : 0;
    if (rc == SB_GCP_OK && resp->status == 308 && n >= (int64_t)f->roff && (uint64_t)n <= f->size) {
        catch_up(j, f, (uint64_t)n);
    } else if (rc == SB_GCP_OK && resp->status != 308) {
        catch_up(j, f, f->size); /* complete: the last answer was lost */
    } else if ((rc == SB_GCP_OK) || (rc == SB_GCP_HTTP_ERROR && (resp->status == 404 || resp->status == 410))) {
        /* gone (expired after a week, cancelled) or less than recorded */
        sb_log(j->p->ins, SB_LOG_INFO, "event %s: the resumable upload of %s %s: starting it again", j->eid, f->name,
               rc == SB_GCP_OK ? "reports fewer bytes than recorded" : "is gone");
        if (rc == SB_GCP_OK)
            start_rcancel(j, f, f->session);
        state_drop_upload(j, f);
        start_rinit(j, f);
    } else {
        request_failed(j, t, rc, resp, errstr, "asking how far the resumable upload got of");
    }
}

/* A one-request upload or a resumable upload's last chunk made the object.
 * A local file changed meanwhile may have given it bytes of two versions:
 * it goes, so the next attempt does not take it for a copy; else it is
 * checked against our CRC32C. */
static void object_made(job *j, gfile *f, sb_gcp_response *resp)
{
    char why[256];
    if (!j->hdfs && local_changed(f, why, sizeof why)) {
        json_t *o = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
        start_delete(j, f, json_string_value(json_object_get(o, "generation")));
        json_decref(o);
        source_changed(j, f, why);
    } else {
        check_object(j, f, resp, "uploading");
    }
}

static void on_rchunk(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    gfile *f = t->f;
    if (rc == SB_GCP_OK && resp->status == 308) {
        int64_t n = persisted_of(resp);
        if (n < (int64_t)t->off || n > (int64_t)(t->off + t->len)) {
            fail(j, SB_RESULT_RETRY, 0,
                 "gs://%s/%s: after the chunk at %" PRIu64 "-%" PRIu64 " the resumable upload has %lld bytes",
                 j->bucket, f->name, t->off, t->off + t->len - 1, (long long)n);
            return;
        }
        uint32_t c = t->rcrc;
        uint64_t got = (uint64_t)n - t->off;
        /* a 308 that keeps reporting nothing new (a proxy dropping the Range
         * header) would send the same chunk forever */
        if (got > 0)
            f->rstuck = 0;
        else if (++f->rstuck >= 3) {
            fail(j, SB_RESULT_RETRY, 0,
                 "gs://%s/%s: the resumable upload persisted nothing of the chunk at %" PRIu64 " three times",
                 j->bucket, f->name, t->off);
            return;
        }
        if (got < t->len) { /* only part of the chunk was persisted */
            c = 0;
            if (t->owned)
                c = crc32c(0, t->map, (size_t)got);
            else if (got && range_crc(j, f, t->off, got, &c) != 0) /* read again: with pread nothing is mapped */
                return;
        }
        resumable_caught_up(j, f, (uint64_t)n, crc32c_combine(f->rcrc, c, got));
        return;
    }
    if (rc == SB_GCP_HTTP_ERROR && resp->status == 412 && j->p->create_only && t->off + t->len == f->size) {
        /* the last chunk: the object exists; the session stays recorded
         * until check_412 decides, so a refusal still cancels it */
        f->crc = crc32c_combine(f->rcrc, t->rcrc, t->len);
        f->crc_known = 1;
        precondition_failed(j, t, resp, errstr, "uploading");
        return;
    }
    if (rc == SB_GCP_OK) {
        f->crc = crc32c_combine(f->rcrc, t->rcrc, t->len);
        f->crc_known = 1;
        state_drop_upload(j, f);
        free(f->session);
        f->session = NULL;
        object_made(j, f, resp);
        return;
    }
    if (rc == SB_GCP_HTTP_ERROR && (resp->status == 404 || resp->status == 410)) {
        state_drop_upload(j, f);
        fail(j, SB_RESULT_RETRY, 0, "gs://%s/%s: the resumable upload session is gone (%s); starting it again",
             j->bucket, f->name, resp->error_line ? resp->error_line : "404");
        return;
    }
    request_failed(j, t, rc, resp, errstr, "uploading a chunk of");
}

/* Resume a multipart upload from the step state, or start one. */
static void start_upload(job *j, gfile *f)
{
    if (f->size <= (uint64_t)j->p->c->single_max) {
        start_single(j, f);
        return;
    }
    json_t *u = upload_state(j, f);
    /* one stream: a resumable upload, unless a multipart upload of this
     * file is under way from when streams was larger (its parts are kept) */
    int parts_kept = json_object_get(u, "id") && recorded_same_file(u, f);
    if (json_object_get(u, "session") || (j->p->c->streams == 1 && !parts_kept)) {
        start_resumable(j, f);
        return;
    }
    if (u) {
        uint64_t size = (uint64_t)json_integer_value(json_object_get(u, "size"));
        uint64_t ps = (uint64_t)json_integer_value(json_object_get(u, "ps"));
        const char *id = json_string_value(json_object_get(u, "id"));
        /* the same file: same size, and (when recorded) same mtime, ctime and inode */
        json_t *mt = json_object_get(u, "mtime_ns"), *ino = json_object_get(u, "ino");
        json_t *ct = json_object_get(u, "ctime_ns");
        int same = size == f->size && (!mt || (int64_t)json_integer_value(mt) == f->mtime_ns) &&
                   (!ct || (int64_t)json_integer_value(ct) == f->ctime_ns) &&
                   (!ino || (uint64_t)json_integer_value(ino) == f->ino);
        if (id && same && ps >= 5 * MIB && ps <= GCS_MAX_PART_SIZE &&
            (size + ps - 1) / ps <= GCS_MAX_PARTS) {
            f->upload_id = strdup(id);
            setup_parts(f, ps);
            size_t k;
            json_t *pp;
            uint32_t resumed = 0;
            json_array_foreach(json_object_get(u, "parts"), k, pp)
            {
                json_int_t n = json_integer_value(json_array_get(pp, 0));
                const char *etag = json_string_value(json_array_get(pp, 1));
                if (n < 1 || (uint64_t)n > f->nparts || !etag || f->parts[n - 1].st == PART_DONE)
                    continue;
                f->parts[n - 1].st = PART_DONE;
                f->parts[n - 1].etag = strdup(etag);
                f->parts[n - 1].crc = (uint32_t)json_integer_value(json_array_get(pp, 2));
                f->ndone++;
                resumed++;
                uint64_t plen = (uint64_t)(n - 1) * ps + ps > f->size ? f->size - (uint64_t)(n - 1) * ps : ps;
                j->done_bytes += plen;
                f->counted += plen;
            }
            sb_log(j->p->ins, SB_LOG_INFO, "event %s: resuming the upload of %s: %u of %u parts already there",
                   j->eid, f->name, resumed, f->nparts);
            f->phase = F_PARTS;
            if (f->ndone == f->nparts)
                parts_sent(j, f);
            return;
        }
        /* a different file now: drop that upload */
        if (id) {
            sb_log(j->p->ins, SB_LOG_INFO,
                   "event %s: %s is not the file the open upload of %s began with (size, mtime, ctime or "
                   "inode differ): aborting it and starting again",
                   j->eid, f->path, f->name);
            start_abort(j, f, id);
        }
        state_drop_upload(j, f);
    }
    /* at most 10,000 parts: a larger file gets larger parts */
    uint64_t ps = gcs_part_size(f->size, (uint64_t)j->p->c->part_size);
    if (!ps) {
        fail(j, SB_RESULT_FAIL, 0, "%s: %" PRIu64 " bytes is more than Cloud Storage's 5 TiB object limit", f->path,
             f->size);
        return;
    }
    if (ps != (uint64_t)j->p->c->part_size)
        sb_log(j->p->ins, SB_LOG_INFO, "event %s: %s goes in parts of %" PRIu64 " bytes (at most %u parts)", j->eid,
               f->name, ps, GCS_MAX_PARTS);
    setup_parts(f, ps);
    /* First abort what an earlier attempt began but never recorded (the
     * answer to its initiate was lost, or the daemon died before the
     * state was written): object names are the event's own. */
    f->phase = F_INIT;
    tx *t = tx_new(j, f, T_LIST);
    char *b = pct(j->bucket, 0), *pre = pct(f->name, 0);
    t->url = sb_asprintf("%s/%s?uploads&prefix=%s", j->p->xml_base, b, pre);
    free(b);
    free(pre);
    send_tx(t, "GET", 1);
}

/* ListMultipartUploadsResult: abort each upload of exactly this object. */
static void on_list(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp)
{
    gfile *f = t->f;
    if (rc == SB_GCP_OK && resp->body) {
        const char *q = resp->body;
        char key[2048], id[512];
        while ((q = strstr(q, "<Upload>")) != NULL) {
            const char *end = strstr(q, "</Upload>");
            if (!end)
                break;
            size_t n = (size_t)(end - q);
            char *one = strndup(q, n);
            if (xml_tag(one, "Key", key, sizeof key) && xml_tag(one, "UploadId", id, sizeof id) &&
                !strcmp(key, f->name)) {
                sb_log(j->p->ins, SB_LOG_INFO, "event %s: aborting an unrecorded multipart upload of gs://%s/%s",
                       j->eid, j->bucket, f->name);
                start_abort(j, f, id);
            }
            free(one);
            q = end;
        }
    } else if (rc != SB_GCP_OK) {
        /* not being able to list is no reason to stop the copy */
        sb_log(j->p->ins, SB_LOG_DEBUG, "event %s: listing multipart uploads of gs://%s/%s failed: %s", j->eid,
               j->bucket, f->name, resp->error_line ? resp->error_line : "no answer");
    }
    if (j->result == SB_RESULT_UNSET)
        start_init(j, f);
}

static const char *xml_tag(const char *body, const char *tag, char *out, size_t out_size)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = body ? strstr(body, open) : NULL;
    if (!a)
        return NULL;
    a += strlen(open);
    const char *z = strstr(a, close);
    if (!z || (size_t)(z - a) >= out_size)
        return NULL;
    memcpy(out, a, (size_t)(z - a));
    out[z - a] = 0;
    return out;
}

/* The failure of one request decides the event (the others finish). */
static void request_failed(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr,
                           const char *what)
{
    /* a local file rewritten under the request (a part's bytes no longer
     * match the CRC taken before it: 400 BadDigest) is worth another try,
     * not a refusal */
    char why[256];
    if (!j->hdfs && local_changed(t->f, why, sizeof why)) {
        source_changed(j, t->f, why);
        return;
    }
    sb_gcp_outcome o = sb_gcp_classify(rc, resp, errstr, 0);
    if (o.result == SB_RESULT_OK)
        o.result = SB_RESULT_RETRY;
    fail(j, o.result, o.retry_after_ms, "%s gs://%s/%s: %s", what, j->bucket, t->f->name,
         o.reason ? o.reason : "failed");
}

static int is_bucket_404(const sb_gcp_response *resp)
{
    return resp->status == 404 && resp->error_line && strstr(resp->error_line, "bucket does not exist");
}

/* Skip the file when Cloud Storage has an object of its size and CRC32C
 * (has: the object exists and told both), else upload it. */
static void decide(job *j, gfile *f, int has, uint64_t size, uint32_t rcrc)
{
    int same = 0;
    if (has && size == f->size) {
        if (j->hdfs) { /* read it to know its CRC, then decide */
            f->remote_crc = rcrc;
            hdfs_read(j, f, 0, f->size, R_CRC, 0);
            return;
        }
        if (file_crc(j, f) != 0)
            return;
        same = rcrc == f->crc;
    }
    if (same) {
        drop_recorded(j, f); /* committed before the crash could record it */
        finish_file(j, f, 1);
        return;
    }
    start_upload(j, f);
}

static void on_meta(job *j, tx *t, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    gfile *f = t->f;
    if (rc == SB_GCP_OK) {
        json_t *o = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
        const char *sz = json_string_value(json_object_get(o, "size"));
        const char *cs = json_string_value(json_object_get(o, "crc32c"));
        uint32_t rcrc = 0;
        int has = sz && cs && crc32c_from_b64(cs, &rcrc) == 0;
        uint64_t size = has ? strtoull(sz, NULL, 10) : 0;
        json_decref(o);
        decide(j, f, has, size, rcrc);
        return;
    }
    if (rc == SB_GCP_HTTP_ERROR && resp->status == 404 && !is_bucket_404(resp)) {
        start_upload(j, f);
        return;
    }
    if (is_bucket_404(resp)) {
        fail(j, SB_RESULT_FAIL, 0, "gs://%s: HTTP 404: %s", j->bucket, "The specified bucket does not exist.");
        j->fatal_bucket = 1;
        return;
    }
    request_failed(j, t, rc, resp, errstr, "reading");
}

/* ---- the destination listing (step 2) ------------------------------------- */

/* A listing that shows more objects than this is not worth reading on:
 * the prefix holds far more than this event's files. */
static size_t list_cap(const job *j)
{
    return 2 * j->nf + 1000;
}

static void start_olist(job *j, const char *page_token)
{
    tx *t = tx_new(j, NULL, T_OLIST);
    char *b = pct(j->bucket, 0), *pre = *j->prefix ? sb_asprintf("%s/", j->prefix) : strdup("");
    char *epre = pct(pre, 0), *tok = page_token ? pct(page_token, 0) : NULL;
    t->url = sb_asprintf("%s/storage/v1/b/%s/o?prefix=%s&maxResults=1000"
                         "&fields=items(name,size,crc32c),nextPageToken%s%s",
                         sb_gcp_client_base_url(j->p->gc), b, epre, tok ? "&pageToken=" : "", tok ? tok : "");
    free(b);
    free(pre);
    free(epre);
    free(tok);
    j->listing = LIST_RUNNING;
    send_tx(t, "GET", 1);
}

static int cmp_known(const void *a, const void *b)
{
    return strcmp(((const known *)a)->name, ((const known *)b)->name);
}

static void drop_known(job *j)
{
    for (size_t k = 0; k < j->nknown; k++)
        free(j->known[k].name);
    free(j->known);
    j->known = NULL;
    j->nknown = j->cknown = 0;
}

/* One page of objects.list: keep what it shows, ask for the next page, or
 * start the files. Any failure but a missing bucket falls back to
 * objects.get per file, which has its own error handling. */
static void on_olist(job *j, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    if (rc != SB_GCP_OK) {
        if (is_bucket_404(resp)) {
            fail(j, SB_RESULT_FAIL, 0, "gs://%s: HTTP 404: %s", j->bucket, "The specified bucket does not exist.");
            j->fatal_bucket = 1;
            return;
        }
        sb_log(j->p->ins, SB_LOG_INFO, "event %s: listing gs://%s/%s failed (%s): checking each file instead",
               j->eid, j->bucket, j->prefix, resp->error_line ? resp->error_line : errstr);
        drop_known(j);
        j->listing = LIST_NONE;
        return;
    }
    json_error_t jerr;
    json_t *o = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, &jerr);
    json_t *items = json_object_get(o, "items");
    if (!o || (items && !json_is_array(items))) {
        sb_log(j->p->ins, SB_LOG_WARN, "event %s: the listing of gs://%s/%s is not an object list (%s): "
               "checking each file instead", j->eid, j->bucket, j->prefix, o ? "items is not an array" : jerr.text);
        json_decref(o);
        drop_known(j);
        j->listing = LIST_NONE;
        return;
    }
    size_t k;
    json_t *it;
    json_array_foreach(items, k, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        const char *sz = json_string_value(json_object_get(it, "size"));
        const char *cs = json_string_value(json_object_get(it, "crc32c"));
        j->listed++;
        if (!name || !sz)
            continue;
        if (j->nknown == j->cknown) {
            j->cknown = j->cknown ? 2 * j->cknown : 256;
            j->known = realloc(j->known, j->cknown * sizeof *j->known);
            if (!j->known)
                abort();
        }
        known *kn = &j->known[j->nknown++];
        kn->name = strdup(name);
        kn->size = strtoull(sz, NULL, 10);
        kn->has_crc = cs && crc32c_from_b64(cs, &kn->crc) == 0;
    }
    const char *next = json_string_value(json_object_get(o, "nextPageToken"));
    if (next && *next && j->listed <= list_cap(j)) {
        start_olist(j, next);
    } else if (next && *next) {
        sb_log(j->p->ins, SB_LOG_DEBUG, "event %s: gs://%s/%s holds more than %zu objects: checking each file instead",
               j->eid, j->bucket, j->prefix, list_cap(j));
        drop_known(j);
        j->listing = LIST_NONE;
    } else {
        if (j->nknown) /* qsort and bsearch take no NULL base, even for 0 items */
            qsort(j->known, j->nknown, sizeof *j->known, cmp_known);
        j->listing = LIST_DONE;
    }
    json_decref(o);
}

/* Step 2 for one file, from the listing. */
static void decide_listed(job *j, gfile *f)
{
    f->phase = F_META;
    known key = {.name = f->name};
    const known *kn = j->nknown ? bsearch(&key, j->known, j->nknown, sizeof *j->known, cmp_known) : NULL;
    decide(j, f, kn && kn->has_crc, kn ? kn->size : 0, kn ? kn->crc : 0);
}

/* hdfs: the file's CRC is known now; skip it or upload it. */
static void after_crc(job *j, gfile *f)
{
    if (f->remote_crc != f->crc) {
        start_upload(j, f);
        return;
    }
    drop_recorded(j, f);
    finish_file(j, f, 1);
}

/* Compare the object Cloud Storage has with ours; on a mismatch delete it. */
static void check_object(job *j, gfile *f, sb_gcp_response *resp, const char *how)
{
    json_t *o = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    const char *sz = json_string_value(json_object_get(o, "size"));
    const char *cs = json_string_value(json_object_get(o, "crc32c"));
    const char *gen = json_string_value(json_object_get(o, "generation"));
    uint32_t rcrc = 0;
    char ours[9];
    crc32c_b64(f->crc, ours);
    if (!sz || !cs || crc32c_from_b64(cs, &rcrc) != 0) {
        fail(j, SB_RESULT_RETRY, 0, "%s gs://%s/%s: Cloud Storage's answer has no size or crc32c", how, j->bucket,
             f->name);
    } else if (strtoull(sz, NULL, 10) != f->size || rcrc != f->crc) {
        sb_log(j->p->ins, SB_LOG_ERROR,
               "event %s: gs://%s/%s has %s bytes, crc32c %s; the source %s has %" PRIu64 " bytes, crc32c %s: "
               "deleting the object",
               j->eid, j->bucket, f->name, sz, cs, f->path, f->size, ours);
        fail(j, SB_RESULT_RETRY, 0, "gs://%s/%s: crc32c mismatch (Cloud Storage %s, source %s); object deleted",
             j->bucket, f->name, cs, ours);
        start_delete(j, f, gen);
    } else {
        finish_file(j, f, 0);
    }
    json_decref(o);
}

/* The object's CRC32C from its parts' (crc(A‖B) from crc(A), crc(B), len(B)). */
static void combine_parts_crc(gfile *f)
{
    uint32_t c = 0;
    for (uint32_t k = 0; k < f->nparts; k++) {
        uint64_t plen = (uint64_t)k * f->psize + f->psize > f->size ? f->size - (uint64_t)k * f->psize : f->psize;
        c = crc32c_combine(c, f->parts[k].crc, plen);
    }
    f->crc = c;
    f->crc_known = 1;
}

/* 412 to a create-only upload or complete: the object exists. When this
 * request was the access layer's repeat after a lost answer, the first
 * one made it, and the object is ours: read its metadata to tell
 * (check_412) before calling it a refusal. */
static void precondition_failed(job *j, tx *t, sb_gcp_response *resp, const char *errstr, const char *what)
{
    gfile *f = t->f;
    sb_gcp_outcome o = sb_gcp_classify(SB_GCP_HTTP_ERROR, resp, errstr, 0);
    free(f->refusal);
    f->refusal = sb_asprintf("%s gs://%s/%s: %s", what, j->bucket, f->name, o.reason ? o.reason : "HTTP 412");
    f->phase = F_VERIFY;
    tx *v = tx_new(j, f, T_VERIFY);
    v->url = json_url(j, f, "?fields=size,crc32c,generation,metadata");
    send_tx(v, "GET", 1);
}

/* After a 412: the object holds our bytes (size and CRC32C, the rule by
 * which an existing object is skipped) -> done; else the refusal stands
 * (FAIL, as create-only asks). Whether its metadata names this event
 * tells a repeat of our own request from a twin made by another event;
 * both hold exactly the file's bytes, and a retry would skip either. */
static void check_412(job *j, gfile *f, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    if (rc != SB_GCP_OK) {
        sb_gcp_outcome o = sb_gcp_classify(rc, resp, errstr, 0);
        fail(j, SB_RESULT_RETRY, o.retry_after_ms, "%s; reading the object then: %s", f->refusal,
             o.reason ? o.reason : "failed");
        return;
    }
    json_t *o = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    const char *sz = json_string_value(json_object_get(o, "size"));
    const char *cs = json_string_value(json_object_get(o, "crc32c"));
    const char *by = json_string_value(json_object_get(json_object_get(o, "metadata"), "syncbridge-event-id"));
    uint32_t rcrc;
    if (sz && cs && strtoull(sz, NULL, 10) == f->size && crc32c_from_b64(cs, &rcrc) == 0 && rcrc == f->crc) {
        if (by && !strcmp(by, j->eid))
            sb_log(j->p->ins, SB_LOG_INFO,
                   "event %s: gs://%s/%s: 412 to a repeated request; the object is the one our first request made "
                   "(size, crc32c and event id match)",
                   j->eid, j->bucket, f->name);
        else
            sb_log(j->p->ins, SB_LOG_INFO,
                   "event %s: gs://%s/%s: 412; the object already holds the same bytes (size and crc32c match), "
                   "made by %s%s: kept",
                   j->eid, j->bucket, f->name, by ? "event " : "another writer", by ? by : "");
        /* a 412 to the first complete: our parts are still stored (a repeat's
         * abort answers 404, which is fine) */
        if (f->upload_id)
            start_abort(j, f, f->upload_id);
        state_drop_upload(j, f);
        free(f->session); /* a final chunk's session: done with */
        f->session = NULL;
        finish_file(j, f, !(by && !strcmp(by, j->eid))); /* another writer's twin: skipped, not copied */
    } else {
        fail(j, SB_RESULT_FAIL, 0, "%s", f->refusal);
    }
    json_decref(o);
}

static void on_done(sb_gcp_multi *m, void *opaque, sb_gcp_result rc, sb_gcp_response *resp, const char *errstr)
{
    (void)m;
    tx *t = opaque;
    job *j = t->j;
    gfile *f = t->f;
    j->inflight--;
    if (t->kind != T_READ) { /* every body byte handed to curl is now counted as done or not at all */
        j->flight_bytes -= t->pos < j->flight_bytes ? t->pos : j->flight_bytes;
    }
    if (t->kind != T_READ && t->kind != T_STAT && t->kind != T_RCHUNK) /* these still read it */
        unmap(t);
    switch (t->kind) {
    case T_READ:
        on_read(j, t, rc, resp, errstr);
        break;
    case T_STAT:
        on_stat(j, t, rc, resp, errstr);
        break;
    case T_RINIT:
        on_rinit(j, t, rc, resp, errstr);
        break;
    case T_RSTATUS:
        on_rstatus(j, t, rc, resp, errstr);
        break;
    case T_RCHUNK:
        on_rchunk(j, t, rc, resp, errstr);
        break;
    case T_RCANCEL:
        if (rc != SB_GCP_OK && resp->status != 499 && resp->status != 404 && resp->status != 410)
            sb_log(j->p->ins, SB_LOG_WARN, "event %s: could not cancel a resumable upload of gs://%s/%s: %s", j->eid,
                   j->bucket, f->name, resp->error_line ? resp->error_line : errstr);
        break;
    case T_LIST:
        on_list(j, t, rc, resp);
        break;
    case T_META:
        on_meta(j, t, rc, resp, errstr);
        break;
    case T_OLIST:
        on_olist(j, rc, resp, errstr);
        break;
    case T_SINGLE:
        if (rc == SB_GCP_HTTP_ERROR && resp->status == 412 && j->p->create_only) {
            precondition_failed(j, t, resp, errstr, "uploading");
        } else if (rc != SB_GCP_OK) {
            if (is_bucket_404(resp))
                j->fatal_bucket = 1;
            request_failed(j, t, rc, resp, errstr, "uploading");
        } else {
            object_made(j, f, resp);
        }
        break;
    case T_INIT: {
        char id[512];
        if (rc != SB_GCP_OK) {
            request_failed(j, t, rc, resp, errstr, "starting the multipart upload of");
        } else if (!xml_tag(resp->body, "UploadId", id, sizeof id)) {
            fail(j, SB_RESULT_RETRY, 0, "starting the multipart upload of gs://%s/%s: no UploadId in the answer",
                 j->bucket, f->name);
        } else {
            f->upload_id = strdup(id);
            f->phase = F_PARTS;
            state_set_upload(j, f); /* before any part: an orphan is then always known */
        }
        break;
    }
    case T_PART: {
        part *pt = &f->parts[t->part];
        f->nflight--;
        const char *etag = rc == SB_GCP_OK ? sb_gcp_response_header(resp, "etag") : NULL;
        if (rc == SB_GCP_OK && etag) {
            pt->st = PART_DONE;
            pt->etag = strdup(etag);
            f->ndone++;
            j->done_bytes += t->len;
            f->counted += t->len;
            state_set_upload(j, f);
            if (f->ndone == f->nparts)
                parts_sent(j, f);
        } else {
            pt->st = PART_TODO;
            if (rc == SB_GCP_HTTP_ERROR && resp->status == 404) {
                /* the upload is gone (aborted or expired): start over next time */
                state_drop_upload(j, f);
                fail(j, SB_RESULT_RETRY, 0, "gs://%s/%s: the multipart upload is gone (%s); starting it again",
                     j->bucket, f->name, resp->error_line ? resp->error_line : "404");
            }
            if (rc == SB_GCP_OK)
                fail(j, SB_RESULT_RETRY, 0, "uploading part %u of gs://%s/%s: no ETag in the answer", t->part + 1,
                     j->bucket, f->name);
            else
                request_failed(j, t, rc, resp, errstr, "uploading a part of");
        }
        break;
    }
    case T_COMPLETE:
        combine_parts_crc(f);
        if (rc == SB_GCP_OK || (rc == SB_GCP_HTTP_ERROR && resp->status == 404 && !is_bucket_404(resp))) {
            f->complete_404 = rc != SB_GCP_OK;
            state_drop_upload(j, f);
            start_verify(j, f);
        } else if (rc == SB_GCP_HTTP_ERROR && resp->status == 412 && j->p->create_only) {
            precondition_failed(j, t, resp, errstr, "completing the multipart upload of");
        } else {
            request_failed(j, t, rc, resp, errstr, "completing the multipart upload of");
        }
        break;
    case T_VERIFY:
        if (f->refusal)
            check_412(j, f, rc, resp, errstr);
        else if (rc == SB_GCP_HTTP_ERROR && resp->status == 404 && f->complete_404 && !is_bucket_404(resp))
            /* the 404 to complete was not a repeat after all: the upload was
             * aborted or expired; the state no longer names it */
            fail(j, SB_RESULT_RETRY, 0, "gs://%s/%s: the multipart upload vanished (no such upload, no object); "
                 "starting again", j->bucket, f->name);
        else if (rc != SB_GCP_OK)
            request_failed(j, t, rc, resp, errstr, "checking");
        else
            check_object(j, f, resp, "checking");
        break;
    case T_DELETE:
        if (rc != SB_GCP_OK && resp->status != 404)
            sb_log(j->p->ins, SB_LOG_ERROR, "event %s: could not delete gs://%s/%s: %s", j->eid, j->bucket, f->name,
                   resp->error_line ? resp->error_line : errstr);
        break;
    case T_ABORT:
        if (rc != SB_GCP_OK && resp->status != 404)
            sb_log(j->p->ins, SB_LOG_WARN, "event %s: could not abort a multipart upload of gs://%s/%s: %s", j->eid,
                   j->bucket, f->name, resp->error_line ? resp->error_line : errstr);
        break;
    }
    tx_free(t);
    start_waiting_reads(j); /* after the handler: a failure it found drops them instead */
    pump(j);
}

/* Start work while fewer than `streams` requests are in flight. */
static void pump(job *j)
{
    int streams = (int)j->p->c->streams;
    if (j->listing == LIST_RUNNING)
        return; /* no file starts before the listing says what is there */
    while (j->inflight < streams && j->result == SB_RESULT_UNSET) {
        gfile *pf = NULL;
        for (size_t k = 0; k < j->nf; k++) { /* parts of files under way first: they finish files */
            gfile *f = &j->f[k];
            if (f->phase == F_PARTS && f->next < f->nparts) {
                pf = f;
                break;
            }
        }
        if (pf) {
            while (pf->next < pf->nparts && pf->parts[pf->next].st != PART_TODO)
                pf->next++;
            if (pf->next < pf->nparts) {
                start_part(j, pf, pf->next++);
                continue;
            }
            continue;
        }
        if (j->next_file < j->nf && j->active_files < (size_t)streams * 2) {
            gfile *f = &j->f[j->next_file++];
            j->active_files++;
            if (j->listing == LIST_DONE)
                decide_listed(j, f);
            else
                start_meta(j, f);
            continue;
        }
        break;
    }
}

/* ---- listing the source --------------------------------------------------- */

typedef struct flist {
    gfile *f;
    size_t n, cap;
    int transient; /* the listing failed for a reason that may pass (WebHDFS 5xx, no connection) */
} flist;

static int64_t st_mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int64_t st_ctime_ns(const struct stat *st)
{
    return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

static void appendf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *out, size_t n, const char *fmt, ...)
{
    size_t at = strlen(out);
    if (at + 1 >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + at, n - at, fmt, ap);
    va_end(ap);
}

/* Whether a file is still the one listed at the start of the attempt:
 * 0, or 1 with what differs in `why` ("mtime 1796460000.123456789, now
 * 1796460001.000000000"). ctime is compared when known (local files),
 * which catches a rewrite that put the old mtime back (cp -p, touch -r). */
static int identity_differs(const gfile *f, uint64_t size, int64_t mtime_ns, int64_t ctime_ns, uint64_t ino, char *why,
                            size_t n)
{
    why[0] = 0;
    if (mtime_ns != f->mtime_ns)
        appendf(why, n, "mtime %lld.%09lld, now %lld.%09lld", (long long)(f->mtime_ns / 1000000000),
                (long long)(f->mtime_ns % 1000000000), (long long)(mtime_ns / 1000000000),
                (long long)(mtime_ns % 1000000000));
    if (size != f->size)
        appendf(why, n, "%ssize %" PRIu64 ", now %" PRIu64, why[0] ? "; " : "", f->size, size);
    if (f->ctime_ns && ctime_ns != f->ctime_ns)
        appendf(why, n, "%sctime %lld.%09lld, now %lld.%09lld", why[0] ? "; " : "",
                (long long)(f->ctime_ns / 1000000000), (long long)(f->ctime_ns % 1000000000),
                (long long)(ctime_ns / 1000000000), (long long)(ctime_ns % 1000000000));
    if (ino != f->ino)
        appendf(why, n, "%s%s %" PRIu64 ", now %" PRIu64, why[0] ? "; " : "", f->ctime_ns ? "inode" : "fileId",
                f->ino, ino);
    return why[0] != 0;
}

/* A local file's identity now against the listing's (by path: a file
 * replaced by a rename has changed too). One that cannot be stat'ed has
 * changed. */
static int local_changed(const gfile *f, char *why, size_t n)
{
    struct stat st;
    if (stat(f->path, &st) != 0) {
        snprintf(why, n, "%s", strerror(errno));
        return 1;
    }
    return identity_differs(f, (uint64_t)st.st_size, st_mtime_ns(&st), st_ctime_ns(&st), (uint64_t)st.st_ino, why,
                            n);
}

/* FileStatus.modificationTime is in milliseconds */
static int64_t hdfs_mtime_ns(const json_t *st)
{
    return (int64_t)json_integer_value(json_object_get(st, "modificationTime")) * 1000000;
}

static int add_file(flist *l, const char *path, const char *rel, uint64_t size, int64_t mtime_ns, int64_t ctime_ns,
                    uint64_t ino)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        gfile *nf = realloc(l->f, l->cap * sizeof *nf);
        if (!nf)
            abort();
        l->f = nf;
    }
    gfile *f = &l->f[l->n++];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    f->rel = strdup(rel);
    f->size = size;
    f->mtime_ns = mtime_ns;
    f->ctime_ns = ctime_ns;
    f->ino = ino;
    f->fd = -1;
    return 0;
}

/* The directories from the top down to the one being read: a symbolic
 * link back to one of them would make the walk endless. */
typedef struct dchain {
    dev_t dev;
    ino_t ino;
    const struct dchain *up;
} dchain;

static int walk(flist *l, const char *dir, const char *rel, const dchain *up, char *err, size_t errsz)
{
    DIR *d = opendir(dir);
    if (!d)
        return sb_err(err, errsz, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = sb_asprintf("%s/%s", dir, e->d_name);
        char *r = *rel ? sb_asprintf("%s/%s", rel, e->d_name) : sb_asprintf("%s", e->d_name);
        struct stat st;
        if (stat(p, &st) != 0)
            rc = sb_err(err, errsz, "%s: %s", p, strerror(errno));
        else if (S_ISDIR(st.st_mode)) {
            const dchain *c = up;
            while (c && !(c->dev == st.st_dev && c->ino == st.st_ino))
                c = c->up;
            dchain me = {st.st_dev, st.st_ino, up};
            if (c)
                rc = sb_err(err, errsz, "%s: a symbolic link loop (it is %s or one of its parents)", p, dir);
            else
                rc = walk(l, p, r, &me, err, errsz);
        }
        else if (S_ISREG(st.st_mode))
            add_file(l, p, r, (uint64_t)st.st_size, st_mtime_ns(&st), st_ctime_ns(&st), (uint64_t)st.st_ino);
        free(p);
        free(r);
    }
    closedir(d);
    return rc;
}

static int add_path(flist *l, const char *path, const char *base, char *err, size_t errsz)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return sb_err(err, errsz, "%s: %s", path, strerror(errno));
    const char *rel = path;
    size_t bl = strlen(base);
    if (bl && !strncmp(path, base, bl) && path[bl] == '/')
        rel = path + bl + 1;
    else {
        const char *s = strrchr(path, '/');
        rel = s ? s + 1 : path;
    }
    if (S_ISDIR(st.st_mode))
    {
        dchain top = {st.st_dev, st.st_ino, NULL};
        return walk(l, path, !strcmp(path, base) ? "" : rel, &top, err, errsz);
    }
    if (!S_ISREG(st.st_mode))
        return sb_err(err, errsz, "%s is not a regular file or a directory", path);
    return add_file(l, path, rel, (uint64_t)st.st_size, st_mtime_ns(&st), st_ctime_ns(&st), (uint64_t)st.st_ino);
}

static int cmp_rel(const void *a, const void *b)
{
    return strcmp(((const gfile *)a)->rel, ((const gfile *)b)->rel);
}

/* Files of `src`: a glob's matches (relative to its directory part), a
 * directory's tree, or one file (its base name). 0, -1 + err. */
static int list_local(const char *src, flist *l, char *err, size_t errsz)
{
    char *s = strdup(src);
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        s[--n] = 0;
    int rc = 0;
    if (strpbrk(s, "*?[")) {
        /* base: the directories before the first wildcard */
        char *w = strpbrk(s, "*?[");
        char *base = strndup(s, (size_t)(w - s));
        char *slash = strrchr(base, '/');
        if (slash)
            *slash = 0;
        else
            base[0] = 0;
        glob_t g;
        int gr = glob(s, GLOB_ERR, NULL, &g);
        if (gr == GLOB_NOMATCH)
            rc = sb_err(err, errsz, "%s matches no file", s);
        else if (gr != 0)
            rc = sb_err(err, errsz, "%s: cannot read a directory of the glob", s);
        else
            for (size_t k = 0; rc == 0 && k < g.gl_pathc; k++)
                rc = add_path(l, g.gl_pathv[k], base, err, errsz);
        if (gr != GLOB_NOMATCH)
            globfree(&g);
        free(base);
    } else {
        rc = add_path(l, s, s, err, errsz);
    }
    free(s);
    if (rc == 0 && l->n > 1)
        qsort(l->f, l->n, sizeof *l->f, cmp_rel);
    for (size_t k = 1; rc == 0 && k < l->n; k++)
        if (!strcmp(l->f[k].rel, l->f[k - 1].rel))
            rc = sb_err(err, errsz, "%s and %s would both be the object .../%s", l->f[k - 1].path, l->f[k].path,
                        l->f[k].rel);
    return rc;
}

/* One WebHDFS call (GETFILESTATUS / LISTSTATUS) on the NameNode: its JSON,
 * or NULL with err ("... 404: File does not exist: /x" and *missing = 1). */
static json_t *hdfs_call(gcs_copy *p, flist *l, const char *path, const char *op, char *err, size_t errsz)
{
    char *url = hdfs_url(p, path, op);
    sb_gcp_request req = SB_GCP_REQUEST_INIT;
    hdfs_request(p, &req);
    req.url = url;
    req.idempotent = 1;
    req.no_wait = 1;
    sb_gcp_response resp;
    char e[512] = "";
    sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, e, sizeof e);
    json_t *j = NULL;
    if (rc == SB_GCP_OK)
        j = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
    if (!j) {
        /* WebHDFS errors: {"RemoteException": {"exception", "message"}} */
        json_t *x = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
        const char *m = json_string_value(json_object_get(json_object_get(x, "RemoteException"), "message"));
        /* 401: no Kerberos ticket (hdfs_negotiate) or an expired token, which
         * a kinit or a new token cures, as the reads judge it */
        l->transient = resp.status == 0 || resp.status == 401 || resp.status == 408 || resp.status == 429 ||
                       resp.status >= 500;
        if (resp.status)
            sb_err(err, errsz, "WebHDFS %s %s: HTTP %ld: %s", op, path, resp.status, m ? m : (e[0] ? e : "no JSON"));
        else
            sb_err(err, errsz, "WebHDFS %s %s: %s", op, path, e);
        json_decref(x);
    }
    sb_gcp_response_clear(&resp);
    free(url);
    return j;
}

static int hdfs_walk(gcs_copy *p, flist *l, const char *dir, const char *rel, const char *pattern, char *err,
                     size_t errsz)
{
    json_t *j = hdfs_call(p, l, dir, "op=LISTSTATUS", err, errsz);
    if (!j)
        return -1;
    size_t k;
    json_t *st;
    int rc = 0;
    json_array_foreach(json_object_get(json_object_get(j, "FileStatuses"), "FileStatus"), k, st)
    {
        const char *name = json_string_value(json_object_get(st, "pathSuffix"));
        const char *type = json_string_value(json_object_get(st, "type"));
        if (!name || !*name || !type)
            continue;
        if (pattern && fnmatch(pattern, name, FNM_PERIOD) != 0)
            continue;
        char *path = strcmp(dir, "/") ? sb_asprintf("%s/%s", dir, name) : sb_asprintf("/%s", name);
        char *r = *rel ? sb_asprintf("%s/%s", rel, name) : sb_asprintf("%s", name);
        if (!strcmp(type, "DIRECTORY"))
            rc = hdfs_walk(p, l, path, r, NULL, err, errsz);
        else if (!strcmp(type, "FILE"))
            add_file(l, path, r, (uint64_t)json_integer_value(json_object_get(st, "length")), hdfs_mtime_ns(st), 0,
                     (uint64_t)json_integer_value(json_object_get(st, "fileId")));
        free(path);
        free(r);
        if (rc)
            break;
    }
    json_decref(j);
    return rc;
}

/* HDFS: a file, a directory's tree, or a glob in the last path component. */
static int list_hdfs(gcs_copy *p, const char *src, flist *l, char *err, size_t errsz)
{
    if (src[0] != '/')
        return sb_err(err, errsz, "HDFS source \"%s\" is not an absolute path", src);
    char *s = strdup(src);
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        s[--n] = 0;
    char *slash = strrchr(s, '/');
    int rc;
    if (strpbrk(s, "*?[")) {
        if (strpbrk(s, "*?[") < slash) {
            free(s);
            return sb_err(err, errsz, "HDFS source \"%s\": wildcards only in the last path component", src);
        }
        *slash = 0;
        rc = hdfs_walk(p, l, *s ? s : "/", "", slash + 1, err, errsz);
        if (rc == 0 && l->n == 0)
            rc = sb_err(err, errsz, "%s matches no file", src);
    } else {
        json_t *j = hdfs_call(p, l, s, "op=GETFILESTATUS", err, errsz);
        if (!j) {
            rc = -1;
        } else {
            json_t *st = json_object_get(j, "FileStatus");
            const char *type = json_string_value(json_object_get(st, "type"));
            if (type && !strcmp(type, "DIRECTORY"))
                rc = hdfs_walk(p, l, s, "", NULL, err, errsz);
            else if (type && !strcmp(type, "FILE"))
                rc = add_file(l, s, slash + 1, (uint64_t)json_integer_value(json_object_get(st, "length")),
                              hdfs_mtime_ns(st), 0, (uint64_t)json_integer_value(json_object_get(st, "fileId")));
            else
                rc = sb_err(err, errsz, "WebHDFS GETFILESTATUS %s: no FileStatus.type in the answer", s);
            json_decref(j);
        }
    }
    free(s);
    if (rc == 0 && l->n > 1)
        qsort(l->f, l->n, sizeof *l->f, cmp_rel);
    return rc;
}

static void free_files(gfile *f, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        free(f[k].path);
        free(f[k].rel);
        free(f[k].name);
        free(f[k].upload_id);
        free(f[k].refusal);
        free(f[k].session);
        for (uint32_t q = 0; q < f[k].nparts; q++)
            free(f[k].parts[q].etag);
        free(f[k].parts);
        if (f[k].fd >= 0)
            close(f[k].fd);
    }
    free(f);
}

/* "gs://bucket/prefix" -> bucket, prefix without slashes at the ends. */
static int parse_dest(const char *d, char **bucket, char **prefix, char *err, size_t errsz)
{
    if (strncmp(d, "gs://", 5) != 0 || !d[5] || d[5] == '/')
        return sb_err(err, errsz, "destination \"%s\" is not gs://bucket[/prefix]", d);
    const char *b = d + 5, *s = strchr(b, '/');
    *bucket = s ? strndup(b, (size_t)(s - b)) : strdup(b);
    const char *p = s ? s + 1 : "";
    while (*p == '/')
        p++;
    *prefix = strdup(p);
    size_t n = strlen(*prefix);
    while (n && (*prefix)[n - 1] == '/')
        (*prefix)[--n] = 0;
    if (strspn(*bucket, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != strlen(*bucket)) {
        sb_err(err, errsz, "destination \"%s\": \"%s\" is not a bucket name", d, *bucket);
        free(*bucket);
        free(*prefix);
        return -1;
    }
    return 0;
}

/* ---- process -------------------------------------------------------------- */

static void abort_uploads(gcs_copy *p, sb_batch *b, size_t i, const json_t *st, const char *why);

static void copy_event(gcs_copy *p, sb_batch *b, size_t i)
{
    sb_event *ev = sb_batch_event(b, i);
    char err[1024];
    char *src = sb_template_render(p->c->source, ev, err, sizeof err);
    if (!src) {
        sb_batch_set_result(b, i, SB_RESULT_FAIL, "option source: %s", err);
        return;
    }
    char *dst = sb_template_render(p->c->destination, ev, err, sizeof err);
    if (!dst) {
        free(src);
        sb_batch_set_result(b, i, SB_RESULT_FAIL, "option destination: %s", err);
        return;
    }
    job j = {.p = p, .b = b, .i = i, .eid = sb_event_id(ev), .result = SB_RESULT_UNSET};
    flist l = {0};
    j.hdfs = p->c->input == IN_HDFS;
    if (parse_dest(dst, &j.bucket, &j.prefix, err, sizeof err) != 0 ||
        (j.hdfs ? list_hdfs(p, src, &l, err, sizeof err) : list_local(src, &l, err, sizeof err)) != 0) {
        sb_batch_set_result(b, i, l.transient ? SB_RESULT_RETRY : SB_RESULT_FAIL, "%s", err);
        free(src);
        free(dst);
        free(j.bucket);
        free(j.prefix);
        free_files(l.f, l.n);
        return;
    }
    j.f = l.f;
    j.nf = l.n;
    for (size_t k = 0; k < j.nf; k++) {
        j.f[k].name = *j.prefix ? sb_asprintf("%s/%s", j.prefix, j.f[k].rel) : sb_asprintf("%s", j.f[k].rel);
        j.total += j.f[k].size;
    }
    const json_t *st = sb_batch_state(b, i);
    j.state = st ? json_deep_copy(st) : json_object();
    j.t0_us = j.last_log_us = now_us();
    j.m = sb_gcp_multi_new(p->gc, (int)p->c->streams, err, sizeof err);
    if (!j.m) {
        fail(&j, SB_RESULT_RETRY, 0, "%s", err);
    } else {
        sb_batch_progress(b, i, 0, j.total);
        if (j.nf > 1)
            start_olist(&j, NULL);
        else
            pump(&j);
        sb_gcp_multi_run(j.m, NULL);
        sb_gcp_multi_destroy(j.m);
        while (j.waiting) { /* left only by a failure: a read waits only while a transfer in the multi holds a buffer */
            tx *t = j.waiting;
            j.waiting = t->next_waiting;
            tx_free(t);
        }
    }
    if (j.result == SB_RESULT_UNSET) {
        for (size_t k = 0; k < j.nf; k++)
            if (j.f[k].phase != F_DONE)
                fail(&j, SB_RESULT_RETRY, 0, "gs://%s/%s was not finished", j.bucket, j.f[k].name);
    }
    if (j.result == SB_RESULT_UNSET) {
        uint32_t all = 0;
        for (size_t k = 0; k < j.nf; k++)
            all = crc32c_combine(all, j.f[k].crc, j.f[k].size);
        char b64[9];
        crc32c_b64(all, b64);
        sb_event_add(ev, "gcs_objects",
                     json_pack("{s:I, s:I, s:I, s:I}", "count", (json_int_t)j.nf, "bytes", (json_int_t)j.total,
                               "copied", (json_int_t)j.copied_files, "skipped", (json_int_t)j.skipped_files));
        if (!*j.prefix)
            sb_event_add(ev, "gcs_uri", json_sprintf("gs://%s", j.bucket));
        else
            sb_event_add(ev, "gcs_uri", json_sprintf("gs://%s/%s", j.bucket, j.prefix));
        sb_event_add(ev, "crc32c", json_string(b64));
        /* the copy into Google Cloud ended now, as the composer and dataproc
         * actions say with the same field (the registry's gcp row) */
        char when[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        sb_event_add(ev, "gcp_finished_at", json_string(when));
        sb_batch_progress(b, i, j.total, j.total);
        double secs = (double)(now_us() - j.t0_us) / 1e6;
        sb_log(p->ins, SB_LOG_INFO,
               "event %s: %zu files, %" PRIu64 " bytes to gs://%s/%s: %" PRIu64 " copied, %" PRIu64
               " already there (%.1f MB/s)",
               j.eid, j.nf, j.total, j.bucket, j.prefix, j.copied_files, j.skipped_files,
               secs > 0 ? (double)j.sent_bytes / secs / 1e6 : 0.0);
        sb_batch_set_state(b, i, NULL);
        sb_batch_set_result(b, i, SB_RESULT_OK, NULL);
    } else {
        if (j.result == SB_RESULT_FAIL) {
            abort_uploads(p, b, i, j.state, "the copy failed");
            json_object_del(j.state, "uploads");
        }
        sb_batch_set_state(b, i, json_object_size(j.state) ? json_incref(j.state) : NULL);
        sb_batch_set_result(b, i, j.result, "%s", j.reason);
        if (j.result == SB_RESULT_RETRY && j.retry_after_ms > 0)
            sb_batch_set_retry_after(b, i, j.retry_after_ms);
    }
    json_decref(j.state);
    drop_known(&j);
    free(j.rbuf);
    free(j.reason);
    free(src);
    free(dst);
    free(j.bucket);
    free(j.prefix);
    free_files(j.f, j.nf);
}

static void gc_process(void *self, sb_batch *b)
{
    for (size_t i = 0, n = sb_batch_count(b); i < n; i++)
        copy_event(self, b, i);
}

/* Abort the multipart uploads a state names (blocking; few requests). */
static void abort_uploads(gcs_copy *p, sb_batch *b, size_t i, const json_t *st, const char *why)
{
    (void)b;
    (void)i;
    const char *name;
    json_t *u;
    json_object_foreach((json_t *)json_object_get(st, "uploads"), name, u)
    {
        (void)name;
        const char *id = json_string_value(json_object_get(u, "id"));
        const char *sess = json_string_value(json_object_get(u, "session"));
        const char *bucket = json_string_value(json_object_get(u, "bucket"));
        if ((!id && !sess) || !bucket)
            continue;
        char *url;
        if (id) {
            char *bk = pct(bucket, 0), *ob = pct(name, 1), *idq = pct(id, 0);
            url = sb_asprintf("%s/%s/%s?uploadId=%s", p->xml_base, bk, ob, idq);
            free(bk);
            free(ob);
            free(idq);
        } else {
            url = strdup(sess); /* a resumable session: DELETE cancels it (499) */
        }
        sb_gcp_request req = SB_GCP_REQUEST_INIT;
        req.method = "DELETE";
        req.url = url;
        req.idempotent = 1;
        sb_gcp_response resp;
        char err[512] = "";
        sb_gcp_result rc = sb_gcp_request_send(p->gc, &req, &resp, err, sizeof err);
        const char *kind = id ? "multipart" : "resumable";
        if (rc == SB_GCP_OK || resp.status == 404 || resp.status == 410 || (!id && resp.status == 499))
            sb_log(p->ins, SB_LOG_INFO, "%s: aborted the %s upload of gs://%s/%s", why, kind, bucket, name);
        else
            sb_log(p->ins, SB_LOG_ERROR, "%s: could not abort the %s upload %s of gs://%s/%s: %s", why, kind,
                   id ? id : "session", bucket, name, resp.error_line ? resp.error_line : err);
        sb_gcp_response_clear(&resp);
        free(url);
    }
}

static void gc_abandon(void *self, sb_batch *b)
{
    for (size_t i = 0, n = sb_batch_count(b); i < n; i++)
        abort_uploads(self, b, i, sb_batch_state(b, i), "given up");
}

static void gc_cancel(void *self)
{
    gcs_copy *p = self;
    sb_gcp_client_cancel(p->gc);
}

/* ---- preflight -------------------------------------------------------------- */

/* The directory a template's fixed beginning names: "/td_backup/${schema}/x"
 * gives "/td_backup"; NULL when the template starts with a field. */
static char *fixed_dir(const sb_template *t)
{
    const char *text = sb_template_text(t);
    size_t n = strcspn(text, "$*?[");
    while (n && text[n - 1] != '/')
        n--;
    if (n == 0)
        return NULL;
    if (n > 1)
        n--; /* drop the slash, but keep "/" itself */
    return sb_asprintf("%.*s", (int)n, text);
}

static void preflight_source(gcs_copy *p, sb_preflight *pf)
{
    char *dir = fixed_dir(p->c->source);
    if (!dir) {
        sb_preflight_ok(pf, "source begins with an event field: its directory is known per event only");
        return;
    }
    char *what = sb_asprintf("source directory %s%s is readable", p->c->input == IN_HDFS ? "hdfs:" : "", dir);
    if (p->c->input == IN_HDFS) {
        flist l = {0};
        char err[640];
        json_t *st = hdfs_call(p, &l, dir, "op=GETFILESTATUS", err, sizeof err);
        const char *type = json_string_value(json_object_get(json_object_get(st, "FileStatus"), "type"));
        if (!st)
            sb_preflight_fail(pf, what, "%s; check hdfs_url%s", err,
                              p->c->hdfs_negotiate ? " and the Kerberos ticket (klist, KRB5CCNAME)"
                              : p->c->hdfs_user || p->c->hdfs_delegation ? ", hdfs_user and hdfs_delegation"
                                                                        : "");
        else if (!type || strcmp(type, "DIRECTORY") != 0)
            sb_preflight_fail(pf, what, "it is not a directory on HDFS (type %s); fix source", type ? type : "unknown");
        else
            sb_preflight_ok(pf, what);
        json_decref(st);
    } else {
        struct stat st;
        if (stat(dir, &st) != 0)
            sb_preflight_fail(pf, what, "%s; create it, mount it, or fix source", strerror(errno));
        else if (!S_ISDIR(st.st_mode))
            sb_preflight_fail(pf, what, "it is not a directory; fix source");
        else if (access(dir, R_OK | X_OK) != 0)
            sb_preflight_fail(pf, what, "%s; let the daemon's user read it (the unit's User=)", strerror(errno));
        else
            sb_preflight_ok(pf, what);
    }
    free(what);
    free(dir);
}

/* Read-only: the source's fixed directory, the token, the destination
 * bucket and the right to write, read back and delete objects in it and to
 * run (and abort) multipart uploads. */
static void gc_preflight(void *self, sb_preflight *pf)
{
    gcs_copy *p = self;
    preflight_source(p, pf);
    if (sb_gcp_preflight_token(p->gc, pf) != 0)
        return;
    const char *dest = sb_template_text(p->c->destination);
    if (dest[0] == '$') {
        sb_preflight_ok(pf, "destination comes from event fields: its bucket is checked per event only");
        return;
    }
    if (strncmp(dest, "gs://", 5) != 0 || dest[5] == '/' || dest[5] == 0) {
        sb_preflight_fail(pf, "destination is gs://BUCKET/PREFIX", "it is \"%s\"; fix destination", dest);
        return;
    }
    const char *b = dest + 5;
    size_t n = strcspn(b, "/");
    if (memchr(b, '$', n)) {
        sb_preflight_ok(pf, "destination bucket comes from event fields: checked per event only");
        return;
    }
    static const char *const perms[] = {"storage.objects.create", "storage.objects.get", "storage.objects.delete",
                                        "storage.multipartUploads.create", "storage.multipartUploads.abort", NULL};
    char *url = sb_asprintf("/storage/v1/b/%.*s", (int)n, b);
    char *what = sb_asprintf("bucket gs://%.*s exists", (int)n, b);
    char *may = sb_asprintf("may write, read and delete objects and run multipart uploads in gs://%.*s "
                            "(testIamPermissions)",
                            (int)n, b);
    sb_gcp_preflight_resource(p->gc, pf, url, what, "create it (gcloud storage buckets create), or fix destination",
                              "roles/storage.objectUser on it", perms, may, "roles/storage.objectUser on the bucket");
    free(url);
    free(what);
    free(may);
}

static void gc_destroy(void *self)
{
    gcs_copy *p = self;
    if (!p)
        return;
    sb_gcp_client_destroy(p->gc);
    sb_metric_free(p->m_bytes);
    sb_metric_free(p->m_files);
    sb_metric_free(p->m_skipped);
    sb_metric_free(p->m_retries);
    sb_metric_free(p->m_rate);
    free(p->xml_base);
    free(p->hdfs_base);
    free(p);
}

static int gc_create(sb_instance *ins, void **self, char *errstr, size_t errstr_size)
{
    gcs_copy *p = calloc(1, sizeof *p);
    if (!p)
        return sb_err(errstr, errstr_size, "out of memory");
    p->ins = ins;
    p->c = sb_instance_config(ins);
    if (mapguard_init() != 0) {
        free(p);
        return sb_err(errstr, errstr_size, "cannot install the SIGBUS guard for mapped files: %s", strerror(errno));
    }
    if (p->c->input != IN_HDFS) {
        const char *set = p->c->hdfs_url ? "hdfs_url"
                          : p->c->hdfs_user ? "hdfs_user"
                          : p->c->hdfs_delegation ? "hdfs_delegation"
                          : p->c->hdfs_negotiate ? "hdfs_negotiate"
                                                 : NULL;
        if (set) {
            free(p);
            return sb_err(errstr, errstr_size, "option %s: it is for input \"hdfs\", and input is \"local\"", set);
        }
    }
    if (p->c->input == IN_HDFS) {
        if (!p->c->hdfs_url || (strncmp(p->c->hdfs_url, "http://", 7) && strncmp(p->c->hdfs_url, "https://", 8))) {
            free(p);
            return sb_err(errstr, errstr_size, "input \"hdfs\" needs option hdfs_url, e.g. http://namenode:9870");
        }
        if (p->c->hdfs_negotiate && (p->c->hdfs_user || p->c->hdfs_delegation)) {
            const char *other = p->c->hdfs_user ? "hdfs_user (user.name, for a cluster without Kerberos)"
                                                : "hdfs_delegation (a token fetched with Kerberos beforehand)";
            free(p);
            return sb_err(errstr, errstr_size, "option hdfs_negotiate: Kerberos excludes %s; set one of them", other);
        }
        if (p->c->hdfs_negotiate && !sb_gcp_negotiate_available()) {
            free(p);
            return sb_err(errstr, errstr_size,
                          "option hdfs_negotiate: this libcurl was built without GSS-API (`curl -V` lists no "
                          "SPNEGO); use hdfs_delegation");
        }
        p->hdfs_base = strdup(p->c->hdfs_url);
        size_t hn = strlen(p->hdfs_base);
        while (hn && p->hdfs_base[hn - 1] == '/')
            p->hdfs_base[--hn] = 0;
    }
    if (p->c->part_size % 4096) {
        int64_t ps = p->c->part_size;
        free(p);
        return sb_err(errstr, errstr_size, "option part_size: %" PRId64 " is not a multiple of 4 KiB", ps);
    }
    p->create_only = sb_opt_isset(ins, "if_generation_match");
    p->xml_base = strdup(p->c->xml_endpoint);
    size_t n = strlen(p->xml_base);
    while (n && p->xml_base[n - 1] == '/')
        p->xml_base[--n] = 0;
    p->gc = sb_gcp_client_from_instance(ins, "storage", errstr, errstr_size);
    if (!p->gc) {
        gc_destroy(p);
        return -1;
    }
    p->m_bytes = sb_metric_new(ins, SB_METRIC_COUNTER, "gcs_copy_bytes_total", "Bytes copied to Cloud Storage.");
    p->m_files = sb_metric_new(ins, SB_METRIC_COUNTER, "gcs_copy_files_total", "Files copied to Cloud Storage.");
    p->m_skipped = sb_metric_new(ins, SB_METRIC_COUNTER, "gcs_copy_skipped_files_total",
                                 "Files already in Cloud Storage with the same size and CRC32C, not copied again.");
    p->m_retries = sb_metric_new(ins, SB_METRIC_COUNTER, "gcs_copy_retries_total",
                                 "Upload requests whose body was sent again (retries).");
    p->m_rate = sb_metric_new(ins, SB_METRIC_GAUGE, "gcs_copy_rate_mbps",
                              "Throughput of the copy in progress, MB/s (updated every progress_interval).");
    *self = p;
    return 0;
}

const sb_plugin syncbridge_plugin = {
    SB_PLUGIN_ABI,
    .name = "gcs_copy",
    .kind = SB_KIND_ACTION,
    .version = "1.0",
    .description = "Copy an event's files to Cloud Storage: parallel parts, end-to-end CRC32C, resume after a crash",
    .flags = SB_PLUGIN_CONCURRENT,
    .options = options,
    .config_size = sizeof(gc_conf),
    .create = gc_create,
    .process = gc_process,
    .destroy = gc_destroy,
    .cancel = gc_cancel,
    .abandon = gc_abandon,
    .preflight = gc_preflight,
};
