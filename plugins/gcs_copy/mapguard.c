/* mapguard.c - SIGBUS on a shrunken file mapping becomes an error return
 * (mapguard.h). The handler jumps back only when the faulting thread is
 * inside a guarded call and the address is in the range it reads; the
 * interrupted code is a memcpy or a CRC loop, which hold no lock and leave
 * nothing half-done that the caller does not throw away. */
#include "build_config.h"
#include "mapguard.h"

#include "crc32c.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>

struct guard {
    sigjmp_buf jb;
    const char *lo, *hi; /* the range being read */
};

static __thread struct guard *volatile active;
static struct sigaction previous;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_errno;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    struct guard *g = active;
    const char *addr = si ? (const char *)si->si_addr : NULL;
    if (g && addr >= g->lo && addr < g->hi) {
        active = NULL;
        siglongjmp(g->jb, 1);
    }
    /* not ours: whatever was there before */
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, si, uc);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* the default: die of SIGBUS once this handler returns and the access faults again */
    signal(SIGBUS, SIG_DFL);
}

static void install(void)
{
    /* The handler lives in this plugin: keep the plugin loaded for good, so
     * that an unload (a reload, the end of a run) never leaves SIGBUS
     * pointing at unmapped code. Where the code is not a loaded plugin (a
     * test links this file into its program) there is nothing to pin. */
    Dl_info info;
    if (dladdr((void *)on_sigbus, &info) && info.dli_fname && strstr(info.dli_fname, ".so"))
        if (!dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
            init_errno = ENOENT;
            return;
        }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previous) != 0)
        init_errno = errno;
}

int mapguard_init(void)
{
    pthread_once(&once, install);
    if (init_errno) {
        errno = init_errno;
        return -1;
    }
    return 0;
}

int mapguard_copy(void *dst, const void *src, size_t n)
{
    struct guard g = {.lo = src, .hi = (const char *)src + n};
    if (sigsetjmp(g.jb, 1) != 0)
        return -1;
    active = &g;
    memcpy(dst, src, n);
    active = NULL;
    return 0;
}

int mapguard_crc32c(uint32_t *crc, const void *src, size_t n)
{
    struct guard g = {.lo = src, .hi = (const char *)src + n};
    if (sigsetjmp(g.jb, 1) != 0)
        return -1;
    active = &g;
    uint32_t c = crc32c(*crc, src, n);
    active = NULL;
    *crc = c;
    return 0;
}
