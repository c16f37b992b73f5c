"""Shared helpers for the end-to-end Python tests (stdlib only).

- paths of the build and source trees (SB_TOP_BUILDDIR / SB_TOP_SRCDIR, as
  `make check` exports them; run by hand they default to the cwd and this
  checkout);
- wait_for(): poll a condition with a deadline;
- Fake: the Google APIs fake (tests/fake/gfake.py) on a free port, with a
  service-account key made here with openssl whose public half the fake's
  token endpoint trusts, plus its control API (topics, stored messages,
  request log, faults);
- MockCluster: librdkafka's mock cluster (tests/kafka/mockcluster) driven
  over stdin; kcat_produce()/kcat_read() use kcat as the independent client;
- Daemon: one syncbridge process with its stderr in a log file;
- needs(): skip a test whose tools are missing, except in strict mode.
"""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
SRC = os.environ.get("SB_TOP_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# SB_BIN: another syncbridge to drive, say one run against an older SQLite
# (tests/scripts/check_sqlite_floor.sh)
BIN = os.environ.get("SB_BIN") or os.path.join(BUILD, "syncbridge")
FAKE = os.path.join(SRC, "tests", "fake", "gfake.py")
MOCK = os.path.join(BUILD, "tests", "kafka", "mockcluster")
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
RRLOGS = os.path.join(SRC, "tests", "data", "rrlogs")
PROJECT = "p"
NO_OFFSET = -1001  # Kafka: nothing committed for the partition
# Fast consumer-group membership for tests (the mock coordinator honours these).
FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "200",
              "topic.metadata.refresh.interval.ms": "1000"}


def needs(have, what):
    """Decorator: run the test (or class) only when `have` is true. Without
    it the test is skipped, naming `what` is missing; but with
    SB_STRICT_TESTS=1 (bootstrap.sh test, and so CI) it fails instead, so a
    tool that the project's own set-up forgot to install cannot pass CI
    as a skip."""
    if have:
        return lambda obj: obj
    if os.environ.get("SB_STRICT_TESTS") == "1":
        def fail(obj):
            if isinstance(obj, type):
                def setUpClass(cls):
                    raise AssertionError("%s (SB_STRICT_TESTS=1: a missing tool is a failure)" % what)
                obj.setUpClass = classmethod(setUpClass)
                return obj

            def failing(*a, **kw):
                raise AssertionError("%s (SB_STRICT_TESTS=1: a missing tool is a failure)" % what)
            failing.__name__ = obj.__name__
            return failing
        return fail
    return unittest.skip(what)


def wait_for(pred, timeout=20.0, what="condition", interval=0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


def data_of(m):
    """The decoded body of a message as the fake stores it."""
    return base64.b64decode(m.get("data", "")).decode()


class Fake:
    """gfake on 127.0.0.1:<free port>. With sa_key, a service-account key
    file (key_file) is written whose token_uri is the fake's /token and
    whose public key the fake trusts."""

    def __init__(self, d, sa_key=True):
        args = [sys.executable, FAKE, "--port", "0", "--port-file", os.path.join(d, "fake.port"), "--quiet"]
        if sa_key:
            sh = lambda c: subprocess.run(c, shell=True, check=True, cwd=d, stderr=subprocess.DEVNULL)
            sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.pem")
            sh("openssl pkey -in sa.pem -pubout -out sa.pub.pem")
            args += ["--sa-public-key", os.path.join(d, "sa.pub.pem")]
        port_file = os.path.join(d, "fake.port")
        self.proc = subprocess.Popen(args)
        wait_for(lambda: os.path.exists(port_file), 15, "the fake's port file")
        with open(port_file) as f:
            self.port = int(f.read().strip())
        self.base = "http://127.0.0.1:%d" % self.port
        self.key_file = None
        if sa_key:
            with open(os.path.join(d, "sa.pem")) as f:
                pem = f.read()
            self.key_file = os.path.join(d, "sa.json")
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"type": "service_account", "project_id": PROJECT, "private_key_id": "kid-1",
                           "private_key": pem, "client_email": "sb-test@p.iam.gserviceaccount.com",
                           "client_id": "1", "token_uri": self.base + "/token"}, f)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def call(self, method, path, body=None, auth=False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", "Bearer fake-static-token")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    @staticmethod
    def topic_name(topic):
        return topic if topic.startswith("projects/") else "projects/%s/topics/%s" % (PROJECT, topic)

    def create_topic(self, topic):
        st, _ = self.call("PUT", "/v1/" + self.topic_name(topic), {}, auth=True)
        assert st == 200, st

    def messages(self, topic):
        """Every message the topic ever received, in order."""
        st, out = self.call("GET", "/_fake/pubsub/messages?topic=" + urllib.parse.quote(self.topic_name(topic)))
        assert st == 200, (st, out)
        return out

    def publishes(self, topic):
        """Logged publish requests for a topic, in arrival order."""
        short = self.topic_name(topic).rsplit("/", 1)[-1]
        st, out = self.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("/topics/%s:publish$" % short))
        assert st == 200
        return out

    def fault(self, **f):
        st, _ = self.call("POST", "/_fake/faults", f)
        assert st == 200, st

    def clear_faults(self):
        self.call("DELETE", "/_fake/faults")

    def sink(self, topic, **opts):
        """A pubsub sink instance publishing to this fake with the key file."""
        s = {"plugin": "pubsub", "topic": self.topic_name(topic), "auth": "service_account",
             "key_file": self.key_file, "endpoint": self.base,
             "retry": {"initial": "20ms", "max_delay": "300ms", "max_attempts": 50}}
        s.update(opts)
        return s


class MockCluster:
    """tests/kafka/mockcluster: BROKERS brokers, topics as (name, partitions).
    Keep topics small: the mock drops a partition's oldest data past ~5 MiB."""

    def __init__(self, brokers=3, topics=()):
        args = [MOCK, "-b", str(brokers)]
        for t, n in topics:
            args += ["-t", "%s:%d" % (t, n)]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        line = self.p.stdout.readline().strip()
        assert line.startswith("BOOTSTRAP="), line
        self.bootstrap = line.split("=", 1)[1]

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def produce(self, topic, payloads, partition=-1):
        for pl in payloads:
            self.cmd("P %s %d %s" % (topic, partition, pl))
        self.cmd("SYNC")
        ok = self.p.stdout.readline().split()
        assert ok[0] == "OK" and ok[2] == "0", ok

    def committed(self, group, topic):
        self.cmd("COMMITTED %s %s" % (group, topic))
        out = {}
        while True:
            l = self.p.stdout.readline().split()
            if not l or l[0] == "END":
                return out
            assert l[0] == "COMMITTED", l
            out[int(l[1])] = int(l[2])

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)
        self.p.stdout.close()


def kcat_produce(bootstrap, topic, payloads, partition=None):
    """Produce one message per payload with kcat. Without a partition each
    message gets its own key ("k<n>"), so the partitioner spreads them."""
    args = [KCAT, "-b", bootstrap, "-t", topic, "-P", "-q"]
    if partition is not None:
        args += ["-p", str(partition)]
        data = "".join(p + "\n" for p in payloads)
    else:
        args += ["-K", "\t"]
        data = "".join("k%d\t%s\n" % (i, p) for i, p in enumerate(payloads))
    subprocess.run(args, input=data, text=True, check=True, timeout=30, capture_output=True)


def kcat_read(bootstrap, topic):
    """Every message of the topic as {(partition, offset): payload}, read by kcat."""
    r = subprocess.run([KCAT, "-b", bootstrap, "-t", topic, "-C", "-e", "-q", "-o", "beginning",
                        "-f", "%p %o %s\n"], capture_output=True, text=True, check=True, timeout=30)
    out = {}
    for l in r.stdout.splitlines():
        p, o, s = l.split(" ", 2)
        out[(int(p), int(o))] = s
    return out


def ends(msgs, partitions):
    """Next offset per partition: what a fully caught-up group has committed
    (NO_OFFSET where the partition never had a message)."""
    e = {p: NO_OFFSET for p in range(partitions)}
    for (p, o) in msgs:
        e[p] = max(e[p], o + 1)
    return e


def owned_partitions(log, topic):
    """Partitions of TOPIC a kafka source owns according to its log: the
    result of its assigned/revoked/lost lines, in order (an eager assignment
    replaces the set, a cooperative one adds to it)."""
    own = set()
    for l in log.splitlines():
        for verb in ("assigned", "revoked", "lost"):
            if "] %s " % verb in l:
                parts = {int(x) for x in re.findall(re.escape(topic) + r"\[(\d+)\]", l)}
                own = own | parts if verb == "assigned" and "cooperative" in l else \
                    parts if verb == "assigned" else own - parts
    return own


# Plugins from the build tree unless `make check` set the path, as its
# AM_TESTS_ENVIRONMENT does: a test run by hand passes it to every child.
os.environ.setdefault("SYNCBRIDGE_PLUGIN_PATH", "%s/plugins/.libs:%s/tests/plugins/.libs"
                      % (os.path.abspath(BUILD), os.path.abspath(BUILD)))


def env(**extra):
    """The environment for a daemon: the plugin path (above), local time
    UTC (filewatch reads log time stamps in local time)."""
    e = dict(os.environ)
    e["TZ"] = "UTC"
    e.update(extra)
    return e


def write_config(path, cfg):
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


class Daemon:
    """One `syncbridge -c CFG [args]` with stderr appended to LOG."""

    def __init__(self, cfg, log, args=(), environ=None):
        self.cfg, self.log_path, self.args = cfg, log, list(args)
        self.env = environ if environ is not None else env()
        self.p = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "a")
        self.p = subprocess.Popen([BIN, "-c", self.cfg] + self.args, stdout=subprocess.DEVNULL,
                                  stderr=self._log, env=self.env)
        return self

    def _term_blocked(self):
        """Whether a thread of the process blocks SIGTERM, as syncbridge's
        main() does first, before it starts a thread. (Not only the main
        thread's mask: while it waits in sigtimedwait, Linux shows SIGTERM
        unblocked in it.)"""
        tasks = "/proc/%d/task" % self.p.pid
        try:
            for t in os.listdir(tasks):
                with open(os.path.join(tasks, t, "status")) as f:
                    m = re.search(r"^SigBlk:\s*([0-9a-f]+)", f.read(), re.M)
                if m and int(m.group(1), 16) & (1 << (signal.SIGTERM - 1)):
                    return True
        except OSError:
            return True  # gone: nothing to wait for
        return False

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, timeout=30):
        """SIGTERM once the daemon blocks it, wait; returns the exit code;
        all within `timeout`. Before that, SIGTERM reaches libtool's
        wrapper script or the program before main() and kills it (-15),
        where a test that found its work done at once meant to stop it.
        The wait for it is at most 10 s: a wrapper that does not exec the
        program never shows it blocked."""
        deadline = time.monotonic() + timeout
        blocked_by = time.monotonic() + min(timeout, 10)
        while self.alive() and not self._term_blocked() and time.monotonic() < blocked_by:
            time.sleep(0.02)
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=max(deadline - time.monotonic(), 1))
        self._close()
        return rc

    def kill(self):
        if self.alive():
            self.p.kill()
        self.p.wait()
        self._close()

    def _close(self):
        if self._log:
            self._log.close()
            self._log = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def run_cli(cfg, *args, env=None, timeout=60):
    """`syncbridge -c CFG ARGS...` to completion."""
    return subprocess.run([BIN, "-c", cfg] + list(args), capture_output=True, text=True, timeout=timeout, env=env)
