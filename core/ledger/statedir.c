/* statedir.c - the state directory around ledger.db: the lock that lets one
 * daemon use it, and the marker that says a ledger was created there. */
#include "build_config.h"
#include "ledger/ledger_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The lock is a file of its own, never ledger.db: SQLite uses POSIX locks
 * on the database, which a close() of any descriptor of that file in the
 * process drops. flock() locks belong to the open file description, so the
 * lock lasts exactly as long as the daemon's descriptor, and the kernel
 * releases it when the daemon dies, however it dies. */
int sb_ledger_lock(const char *state_dir, char *errstr, size_t errstr_size)
{
    char msg[512];
    if (sb_mkdir_p(state_dir, 0750, msg, sizeof msg) != 0)
        return sb_err(errstr, errstr_size, "%s", msg);
    char *path = sb_asprintf("%s/" SB_LEDGER_LOCK_FILE, state_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        sb_err(errstr, errstr_size, "cannot open the lock file %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (e == EWOULDBLOCK)
            sb_err(errstr, errstr_size,
                   "state directory %s is in use by another syncbridge (pid %s, lock file %s): one daemon per state "
                   "directory, or both would send the same pending entries",
                   state_dir, *pid ? pid : "unknown", path);
        else
            sb_err(errstr, errstr_size, "cannot lock %s: %s", path, strerror(e));
        close(fd);
        free(path);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        sb_err(errstr, errstr_size, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        free(path);
        return -1;
    }
    free(path);
    return fd; /* held until the process exits */
}

int sb_ledger__check_file(const char *state_dir, const char *db_path, char *errstr, size_t errstr_size)
{
    char *marker = sb_asprintf("%s/" SB_LEDGER_MARKER_FILE, state_dir);
    struct stat st;
    int had_ledger = access(marker, F_OK) == 0;
    int rc = 0;
    if (stat(db_path, &st) != 0) {
        if (errno != ENOENT)
            rc = sb_err(errstr, errstr_size, "cannot stat %s: %s", db_path, strerror(errno));
        else if (had_ledger)
            rc = sb_err(errstr, errstr_size,
                        "%s is missing, but %s says a ledger was created here: refusing to start a new one, which "
                        "would send every source's input again (restore the file, or see docs/operations.md, "
                        "\"The run ledger\")",
                        db_path, marker);
    } else if (!S_ISREG(st.st_mode)) {
        rc = sb_err(errstr, errstr_size, "%s is not a regular file", db_path);
    } else if (st.st_size == 0 && !had_ledger) {
        /* see below: no ledger was ever made here, SQLite initialises it */
    } else if (st.st_size == 0) {
        /* SQLite would take an empty file for a new database: every
         * checkpoint would be gone and every source would start over.
         * Without the marker no ledger was ever made here: a first start
         * killed between SQLite creating the file and writing the schema
         * leaves it empty, and the next start must simply go on. */
        rc = sb_err(errstr, errstr_size,
                    "%s is empty (0 bytes): refusing to start a new ledger over it, which would send every source's "
                    "input again (restore the file, or see docs/operations.md, \"The run ledger\")",
                    db_path);
    } else {
        static const char magic[16] = "SQLite format 3";
        char head[16];
        int fd = open(db_path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, head, sizeof head) : -1;
        if (fd >= 0)
            close(fd);
        if (n < 0)
            rc = sb_err(errstr, errstr_size, "cannot read %s: %s", db_path, strerror(errno));
        else if (n < (ssize_t)sizeof head || memcmp(head, magic, sizeof magic) != 0)
            rc = sb_err(errstr, errstr_size,
                        "%s is not an SQLite database (its header is wrong): refusing it (restore the file, or see "
                        "docs/operations.md, \"The run ledger\")",
                        db_path);
    }
    free(marker);
    return rc;
}

void sb_ledger__mark(const char *state_dir)
{
    char *marker = sb_asprintf("%s/" SB_LEDGER_MARKER_FILE, state_dir);
    if (access(marker, F_OK) != 0) {
        int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (fd >= 0) {
            static const char text[] = "This state directory holds a syncbridge run ledger (ledger.db).\n"
                                       "syncbridge refuses to start over an empty or missing ledger.db while this\n"
                                       "file exists. See docs/operations.md, \"The run ledger\".\n";
            if (write(fd, text, sizeof text - 1) < 0) {
                /* best effort: the next open writes it again */
            }
            close(fd);
        }
    }
    free(marker);
}
