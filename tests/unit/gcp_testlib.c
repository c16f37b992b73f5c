/* gcp_testlib.c - see gcp_testlib.h. */
#include "build_config.h"
#include "gcp_testlib.h"

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double tl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *tl_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char buf[512];
    snprintf(buf, sizeof buf, "%s/sbgcp.XXXXXX", t && *t ? t : "/tmp");
    char *d = mkdtemp(buf);
    ck_assert_msg(d != NULL, "mkdtemp failed");
    return strdup(d);
}

void tl_rmrf(const char *dir)
{
    if (dir && strncmp(dir, "/", 1) == 0 && strstr(dir, "sbgcp.")) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", dir);
    }
}

void tl_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "command failed (%d): %s", rc, cmd);
}

void tl_write(const char *path, const char *text, unsigned mode)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

void tl_make_rsa(const char *dir, const char *name)
{
    tl_sh("cd '%s' && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s.pem 2>/dev/null && "
          "openssl pkey -in %s.pem -pubout -out %s.pub.pem 2>/dev/null",
          dir, name, name, name);
}

char *tl_make_sa_file(const char *dir, const char *name, const char *keyname, const char *token_uri)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.pem", dir, keyname);
    FILE *f = fopen(p, "r");
    ck_assert(f != NULL);
    char pem[8192];
    size_t n = fread(pem, 1, sizeof pem - 1, f);
    fclose(f);
    pem[n] = '\0';
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id", "p",
                          "private_key_id", "kid-1", "private_key", pem, "client_email",
                          "sb-test@p.iam.gserviceaccount.com", "client_id", "123", "token_uri", token_uri);
    char *txt = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    char *out = malloc(1024);
    snprintf(out, 1024, "%s/%s.json", dir, name);
    tl_write(out, txt, 0600);
    free(txt);
    return out;
}

void tl_make_tls(const char *dir)
{
    tl_sh("cd '%s' && "
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=sb-test-ca "
          "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && "
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout wrongca.key -out wrongca.pem -days 2 -subj /CN=wrong-ca "
          "2>/dev/null && "
          "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && "
          "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && "
          "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
          "-extfile ext.cnf 2>/dev/null",
          dir);
}

static const char *srcdir(void)
{
    const char *s = getenv("SB_TOP_SRCDIR");
    return s && *s ? s : ".";
}

int tl_have_fake(void)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/tests/fake/gfake.py", srcdir());
    return access(p, R_OK) == 0;
}

static int wait_port(const char *file, pid_t pid)
{
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(file, "r");
        if (f) {
            int port = 0;
            int n = fscanf(f, "%d", &port);
            fclose(f);
            if (n == 1 && port > 0)
                return port;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            ck_abort_msg("helper process exited before writing %s", file);
        usleep(50000);
    }
    ck_abort_msg("helper did not write %s within 10 s", file);
    return -1;
}

static tl_proc spawn(char *const argv[], const char *port_file)
{
    unlink(port_file);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    tl_proc p = {pid, 0};
    p.port = wait_port(port_file, pid);
    return p;
}

tl_proc tl_fake_start(const char *dir, int tls)
{
    char script[1024], pf[1024], pub[1024], cert[1024], key[1024];
    snprintf(script, sizeof script, "%s/tests/fake/gfake.py", srcdir());
    snprintf(pf, sizeof pf, "%s/fake%s.port", dir, tls ? "-tls" : "");
    snprintf(pub, sizeof pub, "%s/sa.pub.pem", dir);
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    char *argv[] = {"python3", script, "--port", "0", "--port-file", pf, "--sa-public-key", pub, "--quiet",
                    tls ? "--tls-cert" : NULL, cert, "--tls-key", key, NULL};
    return spawn(argv, pf);
}

tl_proc tl_proxy_start(const char *dir)
{
    char script[1024], pf[1024], lf[1024];
    snprintf(script, sizeof script, "%s/tests/scripts/http_proxy.py", srcdir());
    snprintf(pf, sizeof pf, "%s/proxy.port", dir);
    snprintf(lf, sizeof lf, "%s/proxy.log", dir);
    char *argv[] = {"python3", script, "--port", "0", "--port-file", pf, "--log-file", lf, NULL};
    return spawn(argv, pf);
}

void tl_stop(tl_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        int st;
        for (int i = 0; i < 50; i++) {
            if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
                p->pid = 0;
                return;
            }
            usleep(20000);
        }
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
        p->pid = 0;
    }
}

typedef struct sbuf {
    char *p;
    size_t n;
} sbuf;

static size_t sink(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sbuf *b = ud;
    size_t n = size * nmemb;
    b->p = realloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

long tl_ctl(const tl_proc *fake, int tls, const char *method, const char *path, const char *body, char **out)
{
    CURL *h = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", tls ? "https" : "http", fake->port, path);
    sbuf b = {calloc(1, 1), 0};
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    ck_assert_msg(rc == CURLE_OK, "control call %s %s failed: %s", method, path, curl_easy_strerror(rc));
    if (out)
        *out = b.p;
    else
        free(b.p);
    return status;
}

void tl_fault(const tl_proc *fake, const char *json)
{
    char *out = NULL;
    long st = tl_ctl(fake, 0, "POST", "/_fake/faults", json, &out);
    ck_assert_msg(st == 200, "fault %s refused: %s", json, out);
    free(out);
}

void tl_reset(const tl_proc *fake)
{
    tl_ctl(fake, 0, "POST", "/_fake/reset", "{}", NULL);
}

void tl_ctl_ok(const tl_proc *fake, const char *method, const char *path, const char *body)
{
    char *out = NULL;
    long st = tl_ctl(fake, 0, method, path, body, &out);
    ck_assert_msg(st == 200, "%s %s: %ld %s", method, path, st, out ? out : "");
    free(out);
}

json_t *tl_ctl_json(const tl_proc *fake, const char *path)
{
    char *out = NULL;
    long st = tl_ctl(fake, 0, "GET", path, NULL, &out);
    ck_assert_msg(st == 200, "GET %s: %ld %s", path, st, out ? out : "");
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(j != NULL, "GET %s: not JSON: %s", path, out);
    free(out);
    return j;
}

void tl_reset_direct(const tl_proc *fake)
{
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("no_proxy");
    tl_reset(fake);
}

static json_t *requests(const tl_proc *fake, const char *rx)
{
    char *esc = curl_easy_escape(NULL, rx, 0);
    char path[1024];
    snprintf(path, sizeof path, "/_fake/requests?path_regex=%s", esc);
    curl_free(esc);
    char *out = NULL;
    tl_ctl(fake, 0, "GET", path, NULL, &out);
    json_t *j = json_loads(out, 0, NULL);
    free(out);
    ck_assert(json_is_array(j));
    return j;
}

int tl_count(const tl_proc *fake, const char *path_regex, double *times, int max)
{
    json_t *j = requests(fake, path_regex);
    int n = (int)json_array_size(j);
    for (int i = 0; times && i < n && i < max; i++)
        times[i] = json_number_value(json_object_get(json_array_get(j, (size_t)i), "time"));
    json_decref(j);
    return n;
}

char *tl_req_header(const tl_proc *fake, const char *path_regex, int n, const char *header)
{
    json_t *j = requests(fake, path_regex);
    json_t *hd = json_object_get(json_array_get(j, (size_t)n), "headers");
    const char *key;
    json_t *v;
    char *r = NULL;
    json_object_foreach(hd, key, v) {
        if (strcasecmp(key, header) == 0)
            r = strdup(json_string_value(v));
    }
    json_decref(j);
    return r;
}

int tl_dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(s, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

int tl_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF)
        if (ch == '\n')
            n++;
    fclose(f);
    return n;
}
