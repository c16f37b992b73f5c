/* testutil.c - see testutil.h. */
#include "build_config.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_mkdtemp(void)
{
    const char *tmp = getenv("TMPDIR");
    char *t = NULL;
    if (asprintf(&t, "%s/sbtest.XXXXXX", tmp ? tmp : "/tmp") < 0 || !mkdtemp(t)) {
        perror("mkdtemp");
        abort();
    }
    return t;
}

static void mkparents(char *path)
{
    for (char *s = path + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(path, 0755);
            *s = '/';
        }
}

char *tu_write(const char *dir, const char *name, const char *text)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        abort();
    mkparents(path);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        abort();
    }
    fputs(text, f);
    fclose(f);
    return path;
}

char *tu_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

int tu_count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0)
        if (!needle || strstr(line, needle))
            n++;
    free(line);
    fclose(f);
    return n;
}

static char *under(const char *env, const char *fallback, const char *rel)
{
    const char *top = getenv(env);
    char *p = NULL;
    if (asprintf(&p, "%s/%s", top ? top : fallback, rel) < 0)
        abort();
    return p;
}

char *tu_build_path(const char *rel) { return under("SB_TOP_BUILDDIR", ".", rel); }
char *tu_src_path(const char *rel) { return under("SB_TOP_SRCDIR", "..", rel); }

int tu_run_syncbridge(char **out, const char *const *args)
{
    char *bin = tu_build_path("syncbridge");
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        close(pipefd[1]);
        size_t n = 0;
        while (args[n])
            n++;
        char **argv = calloc(n + 2, sizeof *argv);
        argv[0] = bin;
        for (size_t i = 0; i < n; i++)
            argv[i + 1] = (char *)args[i];
        execv(bin, argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(pipefd[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    free(bin);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void tu_rmrf(const char *dir)
{
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", dir) >= 0 && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    free(cmd);
}

char *tu_with_dir(const char *text, const char *dir)
{
    size_t dl = strlen(dir), n = 0;
    char *out = malloc(strlen(text) * (dl + 1) + 1);
    if (!out)
        abort();
    for (const char *p = text; *p;) {
        if (strncmp(p, "@D@", 3) == 0) {
            memcpy(out + n, dir, dl);
            n += dl;
            p += 3;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}
