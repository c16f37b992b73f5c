/* mapguard.c - SIGBUS on a shrunken file mapping becomes an error return
 * (mapguard.h). The handler jumps back only when the faulting thread is
 * inside a guarded call and the address is in the range it reads; the
 * interrupted code is a memcpy, which holds no lock and leaves
 * nothing half-done that the caller does not throw away. */
#include "build_config.h"
#include "mapguard.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <link.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

struct guard {
    sigjmp_buf jb;
    const char *lo, *hi; /* the range being read */
};

/* initial-exec: the handler must not make glibc allocate this thread's TLS
 * block (a dlopen'd object's TLS is otherwise set up lazily, with malloc) */
static __thread struct guard *volatile active __attribute__((tls_model("initial-exec")));
static struct sigaction previous;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_errno;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    struct guard *g = active;
    const char *addr = si ? (const char *)si->si_addr : NULL;
    if (g && si && si->si_code > 0 && addr >= g->lo && addr < g->hi) {
        active = NULL;
        siglongjmp(g->jb, 1);
    }
    /* not ours: whatever was there before */
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, si, uc);
        return;
    }
    if (previous.sa_handler == SIG_IGN && (!si || si->si_code <= 0))
        return; /* a SIGBUS sent by kill(), which was ignored before */
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* the default action: die of SIGBUS now (SA_NODEFER: raise() is
     * delivered at once), whether it was a fault or sent */
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

static void install(void)
{
    /* The handler lives in this plugin: keep the plugin loaded for good, so
     * that an unload (a reload, the end of a run) never leaves SIGBUS
     * pointing at unmapped code. The main program (a test links this file
     * into its program) has an empty name in its link map and is never
     * unloaded. */
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1((void *)on_sigbus, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm) {
        init_errno = ENOENT;
        return;
    }
    if (lm->l_name && lm->l_name[0] && !dlopen(lm->l_name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
        init_errno = ENOENT;
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    /* NODEFER: SIGBUS stays unblocked after the jump (sigsetjmp does not
     * save the mask, which spares a system call per guarded read) */
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
    if (sigsetjmp(g.jb, 0) != 0)
        return -1;
    active = &g;
    atomic_signal_fence(memory_order_seq_cst); /* the reads stay inside the guarded window */
    memcpy(dst, src, n);
    atomic_signal_fence(memory_order_seq_cst);
    active = NULL;
    return 0;
}
