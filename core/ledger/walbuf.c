/* walbuf.c - SQLite's default VFS with the writes to a WAL gathered into
 * fewer system calls (ledger_internal.h, SB_LEDGER_VFS).
 *
 * SQLite writes each WAL frame with two pwrite()s, its 24-byte header and
 * its page: on file_in -> discard about 190,000 calls per 1M events, and
 * the calls, more than the bytes, cost the CPU (a C program: 0.34 s of CPU
 * per 100,000 frames written so, 0.10 s gathered 1 MiB a call;
 * docs/benchmarks.md). Here the writes that follow one another in a WAL
 * are kept in a buffer and written with one call.
 *
 * The database file's own writes (a checkpoint's pages) are not gathered:
 * a checkpoint that a reader holds back records how far it got without a
 * sync or any other call this VFS could fail, so pages still in a buffer
 * (or lost with a failed write) would be counted as copied. A review
 * found that and it was reproduced; docs/benchmarks.md has the numbers.
 *
 * A WAL's writes:
 * - are gathered only once the WAL is paired with its connection's
 *   database file (wb_device_characteristics), and only when that file has
 *   POWERSAFE_OVERWRITE (without it, synchronous = FULL pads each commit
 *   with copies of its frame, split by a sync);
 * - are gathered while each goes on where the one before ended (a frame's
 *   page after its header, a frame after the one before); a write
 *   elsewhere in the file (a frame rewritten in place, a header given a
 *   new checksum, the first write after another connection's frames) goes
 *   through at once;
 * - are written out with the commit frame's page. A transaction's frames
 *   become visible to other connections when the writer updates the WAL
 *   index, after it has written its commit frame, the one whose header
 *   holds the database's size (bytes 4-7, not 0), whether that header was
 *   gathered or written straight through; an error then fails the write,
 *   and with it the transaction, as a failed pwrite() did;
 * - are written out before a read, a sync, a truncation, a size query or
 *   a file control of the WAL;
 * - are dropped when the write transaction ends (its WAL write lock is
 *   released on the database file) and at close: what is left then is of
 *   a transaction that did not commit, and written later it could land on
 *   frames another connection has committed since. A crash likewise loses
 *   only what was never committed.
 * A write of the buffer that fails drops it too, and the WAL then refuses
 * every write until the transaction ends, so that a transaction that lost
 * frames cannot commit (flush()).
 *
 * The ledger never uses locking_mode = EXCLUSIVE, in which SQLite takes no
 * shared-memory locks and the end of a write transaction would not show.
 *
 * Other files (the database itself, journals, temporary files) pass
 * through untouched; the database file's methods only pair it with its
 * WAL and tell it when a write transaction ends. Thread
 * safety: as SQLite's own files, a connection's files are used by one
 * thread at a time; the VFS is registered once (pthread_once). */
#include "build_config.h"
#include "ledger/ledger_internal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* Under 128 KiB: the unix VFS writes `amount & 0x1FFFF` bytes a call and
 * takes a write of 0 bytes for a full disk, so a write of 128 KiB failed. */
#define WALBUF_SIZE (120 << 10)
#define WAL_FRAME_HEADER 24
#define WAL_WRITE_LOCK 0 /* the shared-memory lock a write transaction holds (wal.c) */

typedef struct wb_file wb_file;
struct wb_file {
    sqlite3_file base;  /* pMethods: methods[] */
    sqlite3_file *real; /* the default VFS's file, in the same allocation, after this */
    int wal;            /* a WAL paired with its database file: its frames are gathered */
    const char *name;   /* as SQLite gave it to xOpen: valid until xClose */
    int main_db;        /* opened as a connection's database file */
    wb_file *pair;      /* a database file's WAL, a WAL's database file (same connection), or NULL */
    int failed;         /* a write of the buffer failed: see flush() */
    int commit_frame;   /* the last write was a commit frame's header: its page comes next */
    char *buf;          /* malloc'd on the first write; bytes for the file from off on */
    size_t len;
    sqlite3_int64 off;
    sqlite3_int64 next; /* where the last write ended: a write from there goes on with it */
};

/* the real file follows wb_file, aligned as SQLite aligns its files */
#define WB_HEAD ((sizeof(wb_file) + 7) & ~(size_t)7)

static sqlite3_vfs *real_vfs;
static sqlite3_vfs walbuf_vfs;
/* A WAL just opened on this thread, until its database file is found:
 * sqlite3WalOpen() asks that file for its device characteristics right
 * after it opens the WAL, on the same thread. */
static _Thread_local wb_file *opened_wal;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Write the buffer out. On failure it is dropped (kept, it could later be
 * written over what another connection wrote there since) and the WAL
 * marked failed: it then refuses every write, and so its transaction's
 * commit, until the write transaction ends (wb_shm_lock). SQLite ignores
 * the errors of some calls (file controls, the size query and truncation
 * that limit the WAL's size), so the error is not only returned. */
static int flush(wb_file *f)
{
    if (!f->len)
        return SQLITE_OK;
    int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->off);
    f->len = 0;
    if (rc != SQLITE_OK)
        f->failed = 1;
    return rc;
}

/* The WAL of a transaction that lost frames: no sync or truncation either. */
static int failed_before(const wb_file *f, int rc) { return f->failed ? rc : SQLITE_OK; }

/* A frame header that marks the transaction's commit: its page is the last
 * write of the transaction, and takes the buffer out with it. */
static int commit_header(const void *p, int amt)
{
    return amt == WAL_FRAME_HEADER && be32((const unsigned char *)p + 4) != 0;
}

static int wb_close(sqlite3_file *file)
{
    wb_file *f = (wb_file *)file;
    f->len = 0; /* of a transaction that never wrote its commit frame: not committed */
    if (opened_wal == f)
        opened_wal = NULL;
    if (f->pair)
        f->pair->pair = NULL;
    int rc = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc;
}

static int wb_read(sqlite3_file *file, void *p, int amt, sqlite3_int64 off)
{
    wb_file *f = (wb_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, p, amt, off);
}

/* Write through to the file, after what the buffer holds. */
static int write_through(wb_file *f, const void *p, int amt, sqlite3_int64 off)
{
    int rc = flush(f);
    if (rc == SQLITE_OK)
        rc = f->real->pMethods->xWrite(f->real, p, amt, off);
    f->next = off + amt;
    f->commit_frame = commit_header(p, amt); /* a header written here: its page still flushes */
    return rc;
}

static int wb_write(sqlite3_file *file, const void *p, int amt, sqlite3_int64 off)
{
    wb_file *f = (wb_file *)file;
    if (!f->wal)
        return f->real->pMethods->xWrite(f->real, p, amt, off);
    if (f->failed)
        return SQLITE_IOERR_WRITE; /* this transaction lost frames: it must not commit */
    /* Only a write that goes on where the last one ended is gathered: the
     * frames of a transaction, one after the other. A write elsewhere (a
     * frame rewritten in place, its header given a new checksum) goes
     * through at once, so that nothing written out of that order can be
     * left in the buffer when the commit frame's page flushes it. */
    if (off != f->next || (size_t)amt > WALBUF_SIZE)
        return write_through(f, p, amt, off);
    int commit_page = f->commit_frame; /* this is the commit frame's page: the transaction's last write */
    if (f->len + (size_t)amt > WALBUF_SIZE) {
        int rc = flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (!f->buf && !(f->buf = malloc(WALBUF_SIZE)))
        return write_through(f, p, amt, off); /* no memory: as SQLite alone */
    if (!f->len)
        f->off = off;
    memcpy(f->buf + f->len, p, (size_t)amt);
    f->len += (size_t)amt;
    f->next = off + amt;
    f->commit_frame = commit_header(p, amt);
    return commit_page ? flush(f) : SQLITE_OK;
}

static int wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    wb_file *f = (wb_file *)file;
    int rc = flush(f);
    if (rc == SQLITE_OK)
        rc = failed_before(f, SQLITE_IOERR_TRUNCATE);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wb_sync(sqlite3_file *file, int flags)
{
    wb_file *f = (wb_file *)file;
    int rc = flush(f);
    if (rc == SQLITE_OK)
        rc = failed_before(f, SQLITE_IOERR_FSYNC);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wb_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    wb_file *f = (wb_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wb_lock(sqlite3_file *file, int level)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int wb_unlock(sqlite3_file *file, int level)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->xUnlock(f->real, level);
}

static int wb_check_reserved_lock(sqlite3_file *file, int *out)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wb_file_control(sqlite3_file *file, int op, void *arg)
{
    wb_file *f = (wb_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wb_sector_size(sqlite3_file *file)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

/* Also where a connection's WAL finds its database file (opened_wal). Its
 * frames are gathered only then, and only when the database file has
 * POWERSAFE_OVERWRITE: without it, synchronous = FULL pads each commit to
 * the sector with copies of its frame, split by a sync. */
static int wb_device_characteristics(sqlite3_file *file)
{
    wb_file *f = (wb_file *)file;
    int dc = f->real->pMethods->xDeviceCharacteristics(f->real);
    wb_file *w = opened_wal;
    if (w && f->main_db && f->name && w->name) {
        opened_wal = NULL;
        size_t n = strlen(f->name);
        if (strncmp(w->name, f->name, n) == 0 && strcmp(w->name + n, "-wal") == 0 &&
            (dc & SQLITE_IOCAP_POWERSAFE_OVERWRITE)) {
            if (f->pair)
                f->pair->pair = NULL;
            f->pair = w;
            w->pair = f;
            w->wal = 1;
        }
    }
    return dc;
}

static int wb_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **pp)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, pp);
}

/* The end of a write transaction (its WAL write lock released): whatever
 * its WAL's buffer still holds is of a transaction that did not commit (a
 * commit writes it out), and must never be written. */
static int wb_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    wb_file *f = (wb_file *)file;
    int rc = f->real->pMethods->xShmLock(f->real, offset, n, flags);
    if (f->pair && offset == WAL_WRITE_LOCK && (flags & SQLITE_SHM_UNLOCK) && (flags & SQLITE_SHM_EXCLUSIVE)) {
        f->pair->len = 0;
        f->pair->failed = 0;
        f->pair->commit_frame = 0;
    }
    return rc;
}

static void wb_shm_barrier(sqlite3_file *file)
{
    wb_file *f = (wb_file *)file;
    f->real->pMethods->xShmBarrier(f->real);
}

static int wb_shm_unmap(sqlite3_file *file, int delete_flag)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int wb_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **pp)
{
    wb_file *f = (wb_file *)file;
    if (f->real->pMethods->iVersion < 3) {
        *pp = NULL; /* no mapping: SQLite reads instead */
        return SQLITE_OK;
    }
    return f->real->pMethods->xFetch(f->real, off, amt, pp);
}

static int wb_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    wb_file *f = (wb_file *)file;
    return f->real->pMethods->iVersion < 3 ? SQLITE_OK : f->real->pMethods->xUnfetch(f->real, off, p);
}

/* The methods, declared at the real file's version (SQLite tells a file
 * that can hold a WAL by its version and its xShmMap). */
#define WB_METHODS(version)                                                                                        \
    {                                                                                                               \
        version, wb_close, wb_read, wb_write, wb_truncate, wb_sync, wb_file_size, wb_lock, wb_unlock,             \
            wb_check_reserved_lock, wb_file_control, wb_sector_size, wb_device_characteristics, wb_shm_map,        \
            wb_shm_lock, wb_shm_barrier, wb_shm_unmap, wb_fetch, wb_unfetch                                        \
    }
static const sqlite3_io_methods methods[] = {WB_METHODS(1), WB_METHODS(2), WB_METHODS(3)};

static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
    (void)vfs;
    wb_file *f = (wb_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)((char *)file + WB_HEAD);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK || !f->real->pMethods) {
        f->base.pMethods = NULL; /* SQLite then does not close it */
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    f->name = name;
    f->main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    /* a WAL is gathered once its database file is known (wb_device_characteristics) */
    opened_wal = flags & SQLITE_OPEN_WAL ? f : NULL;
    int version = f->real->pMethods->iVersion;
    f->base.pMethods = &methods[version < 1 ? 0 : version > 3 ? 2 : version - 1];
    return SQLITE_OK;
}

static int register_rc = SQLITE_ERROR;

static void register_once(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs || real_vfs->iVersion < 1)
        return;
    walbuf_vfs = *real_vfs; /* its other methods as they are, pAppData included */
    walbuf_vfs.zName = SB_LEDGER_VFS;
    walbuf_vfs.szOsFile = (int)WB_HEAD + real_vfs->szOsFile;
    walbuf_vfs.pNext = NULL;
    walbuf_vfs.xOpen = wb_open;
    register_rc = sqlite3_vfs_register(&walbuf_vfs, 0);
}

int sb_ledger__register_vfs(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    return register_rc;
}
