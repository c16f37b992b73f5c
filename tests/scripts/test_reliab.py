#!/usr/bin/env python3
"""Reliability and security at the daemon level (issue 20): one daemon per
state directory, a damaged or emptied ledger, plugins confined to their
directories, the operator's views, the admin endpoint under a connection
flood, and warnings that do not repeat. Real processes, real files."""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbtest  # noqa: E402
from sbtest import BIN, wait_for  # noqa: E402


def lines(path):
    try:
        with open(path) as f:
            return [l for l in f.read().splitlines() if l]
    except FileNotFoundError:
        return []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbreliab.")
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.inp = os.path.join(self.dir, "in.jsonl")
        self.out = os.path.join(self.dir, "out.jsonl")
        self.state = os.path.join(self.dir, "state")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def config(self, **extra):
        cfg = {"state_dir": self.state, "log": {"level": "info"},
               "sources": {"in": {"plugin": "file_in", "path": self.inp, "format": "json",
                                  "id_field": "event_id", "poll_interval": "20ms"}},
               "sinks": {"out": {"plugin": "file_out", "path": self.out}},
               "routes": {"r": {"sources": ["in"], "steps": ["out"]}}}
        cfg.update(extra)
        sbtest.write_config(self.cfg, cfg)

    def write_events(self, *ids, **fields):
        with open(self.inp, "a") as f:
            for i in ids:
                ev = {"event_id": i, "schema": "edw", "table": "t_" + i, "status": "succeeded"}
                ev.update(fields)
                f.write(json.dumps(ev) + "\n")

    def daemon(self, name="daemon.log", args=()):
        d = sbtest.Daemon(self.cfg, os.path.join(self.dir, name), args=args).start()
        self.daemons.append(d)
        return d

    def cli(self, *args):
        return sbtest.run_cli(self.cfg, *args, env=sbtest.env())

    def once(self):
        return subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=120,
                              env=sbtest.env())


class OneDaemonPerStateDir(Base):
    """Row 1: two daemons on one state directory published every pending
    entry twice."""

    def test_second_daemon_exits_1_naming_the_holder(self):
        self.config()
        self.write_events("a", "b")
        first = self.daemon("first.log")
        wait_for(lambda: len(lines(self.out)) == 2, what="first daemon sends")
        second = self.daemon("second.log")
        self.assertEqual(second.p.wait(timeout=60), 1, second.log())
        self.assertIn("in use by another syncbridge (pid %d" % first.p.pid, second.log())
        # the CLI reads beside the running daemon without waiting for it
        t0 = time.monotonic()
        r = self.cli("runs", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(json.loads(r.stdout)), 2)
        self.assertLess(time.monotonic() - t0, 30)
        r = self.cli("ledger", "check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # recover needs the daemon stopped
        r = self.cli("ledger", "recover")
        self.assertEqual(r.returncode, 1)
        self.assertIn("in use by another syncbridge", r.stderr)
        self.assertEqual(first.stop(), 0)
        # the lock goes with the process: a new daemon starts
        self.write_events("c")
        third = self.daemon("third.log")
        wait_for(lambda: len(lines(self.out)) == 3, what="third daemon sends")
        self.assertEqual(third.stop(), 0)
        self.assertEqual(sorted(json.loads(l)["event_id"] for l in lines(self.out)), ["a", "b", "c"])


class LedgerIntegrity(Base):
    """Rows 8 and 9: an emptied ledger was silently started afresh (every
    event re-sent); random bytes in its pages went unnoticed at start."""

    def fill(self, n):
        self.config()
        self.write_events(*["e%04d" % i for i in range(n)])
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(lines(self.out)), n)

    def test_empty_ledger_of_a_first_start_killed_early_is_initialised(self):
        # SQLite creates ledger.db before writing anything: a first start
        # killed there leaves 0 bytes and no marker, and must not block
        self.config()
        os.makedirs(self.state, exist_ok=True)
        open(os.path.join(self.state, "ledger.db"), "w").close()
        self.write_events("a", "b")
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(lines(self.out)), 2)

    def test_empty_ledger_is_refused_not_restarted(self):
        self.fill(50)
        with open(os.path.join(self.state, "ledger.db"), "w"):
            pass  # truncated to 0 bytes
        for name in ("ledger.db-wal", "ledger.db-shm"):
            try:
                os.unlink(os.path.join(self.state, name))
            except FileNotFoundError:
                pass
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is empty (0 bytes): refusing", r.stderr)
        self.assertEqual(len(lines(self.out)), 50, "nothing may be re-sent")
        # a missing ledger where one was made is refused as well
        os.unlink(os.path.join(self.state, "ledger.db"))
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is missing, but", r.stderr)
        # not SQLite at all
        with open(os.path.join(self.state, "ledger.db"), "wb") as f:
            f.write(b"\x00garbage" * 1000)
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is not an SQLite database", r.stderr)
        self.assertEqual(len(lines(self.out)), 50)

    def test_damaged_pages_are_found_at_start_and_recovered(self):
        self.fill(3000)
        db = os.path.join(self.state, "ledger.db")
        size = os.path.getsize(db)
        self.assertGreater(size, 64 * 4096)
        # random bytes over a run of pages in the middle of the file
        with open(db, "r+b") as f:
            f.seek((size // 4096 // 2) * 4096)
            f.write(os.urandom(8 * 4096))
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("the file is damaged (PRAGMA quick_check", r.stderr)
        self.assertIn("ledger recover", r.stderr)
        r = self.cli("ledger", "check")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("DAMAGED", r.stdout + r.stderr)
        r = self.cli("ledger", "recover")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("entries:", r.stdout)
        self.assertTrue(any(n.startswith("ledger.db.damaged-") for n in os.listdir(self.state)))
        r = self.cli("ledger", "check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # the checkpoint survived: the daemon starts and sends nothing again
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("quick_check ok", r.stderr)
        self.assertEqual(len(lines(self.out)), 3000)


EVIL_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void ran(void)
{
    const char *mark = getenv("SB_EVIL_MARK");
    int fd = mark ? open(mark, O_WRONLY | O_CREAT, 0600) : -1;
    if (fd >= 0)
        close(fd);
}
"""


@sbtest.needs(shutil.which("cc"), "cc (to build a hostile shared object)")
class PluginConfinement(Base):
    """Rows 2 and 3: a drop-in naming "../../tmp/x/evil" loaded the outside
    .so (its constructor ran, as root during `check`), and a plugin
    directory or .so writable by others was loaded without a word."""

    def setUp(self):
        super().setUp()
        self.plugins = os.path.join(self.dir, "plugins")
        os.mkdir(self.plugins, 0o755)
        os.chmod(self.plugins, 0o755)
        libs = os.path.join(os.path.abspath(sbtest.BUILD), "plugins", ".libs")
        for name in ("file_in.so", "file_out.so"):
            shutil.copy(os.path.join(libs, name), self.plugins)
            os.chmod(os.path.join(self.plugins, name), 0o755)
        self.outside = os.path.join(self.dir, "outside")
        os.mkdir(self.outside, 0o755)
        src = os.path.join(self.outside, "evil.c")
        with open(src, "w") as f:
            f.write(EVIL_C)
        self.evil = os.path.join(self.outside, "evil.so")
        subprocess.run(["cc", "-shared", "-fPIC", "-o", self.evil, src], check=True)
        self.mark = os.path.join(self.dir, "constructor-ran")
        self.env = sbtest.env(SYNCBRIDGE_PLUGIN_PATH=self.plugins, SB_EVIL_MARK=self.mark)

    def check(self, **extra):
        self.config(**extra)
        return subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, timeout=60,
                              env=self.env)

    def test_plugin_named_by_a_path_is_refused_before_loading(self):
        os.mkdir(os.path.join(self.dir, "conf.d"))
        rel = os.path.relpath(self.evil[:-3], self.plugins)  # ../outside/evil
        with open(os.path.join(self.dir, "conf.d", "team.json"), "w") as f:
            json.dump({"sinks": {"x": {"plugin": "../../../../" + self.evil[1:-3]},
                                 "y": {"plugin": rel}}}, f)
        r = self.check()
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("is not a plugin name", r.stderr)
        self.assertFalse(os.path.exists(self.mark), "the outside .so's constructor ran")

    def test_symlink_out_of_the_plugin_directory_is_refused(self):
        os.symlink(self.evil, os.path.join(self.plugins, "evil.so"))
        r = self.check(sinks={"out": {"plugin": "evil"}})
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("outside its directory", r.stderr)
        self.assertFalse(os.path.exists(self.mark), "the outside .so's constructor ran")

    def test_writable_directory_or_file_is_refused_unless_allowed(self):
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        if os.geteuid() == 0:  # a group other than the owner's own
            os.chown(self.plugins, -1, 4242)
            os.chmod(self.plugins, 0o775)
            r = self.check()
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("is writable by group (mode 0775)", r.stderr)
            self.assertIn("allow_insecure_plugins", r.stderr)
            os.chmod(self.plugins, 0o755)
        os.chmod(os.path.join(self.plugins, "file_out.so"), 0o757)
        r = self.check()
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("file_out.so is writable by others (mode 0757)", r.stderr)
        r = self.check(allow_insecure_plugins=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("loaded because allow_insecure_plugins is set", r.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to give a file to another user")
    def test_directory_owned_by_another_user_is_refused(self):
        os.chown(self.plugins, 4242, 4242)
        r = self.check()
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("owned by uid 4242", r.stderr)


class AdminFlood(Base):
    """Row 13: 1,000 held connections locked /healthz out (limit 32) and
    wrote 975 warning lines."""

    HELD = 1000

    def setUp(self):
        super().setUp()
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 4096)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < self.HELD + 200:
            self.skipTest("open-file limit %d is too low to hold %d connections" % (want, self.HELD))

    def healthz(self, port, timeout):
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=timeout) as r:
            return r.status, r.read()

    def test_healthz_answers_under_a_flood_of_idle_connections(self):
        port = free_port()
        self.config(admin={"enabled": True, "port": port})
        d = self.daemon()
        wait_for(lambda: self.try_healthz(port), timeout=60, what="admin endpoint up")
        held = []
        try:
            for i in range(self.HELD):
                s = socket.socket()
                s.settimeout(30)
                s.connect(("127.0.0.1", port))
                if i % 10 == 0:  # one in ten asks once, then holds its kept-alive connection
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                held.append(s)  # the others connect and send nothing
            # with every flood connection still open on this side, a probe
            # gets its answer (generous bound: a loaded 2-core machine)
            t0 = time.monotonic()
            status, body = self.healthz(port, timeout=30)
            self.assertEqual((status, body), (200, b"ok\n"))
            self.assertLess(time.monotonic() - t0, 20)
            # and again, a second probe while the flood is still held
            self.assertEqual(self.healthz(port, timeout=30)[0], 200)
        finally:
            for s in held:
                s.close()
        warnings = [l for l in d.log().splitlines() if " warn " in l and "admin:" in l]
        self.assertLessEqual(len(warnings), 10, "\n".join(warnings[:20]))
        self.assertTrue(d.alive())
        self.assertEqual(d.stop(), 0)

    def try_healthz(self, port):
        try:
            return self.healthz(port, timeout=2)[0] == 200
        except OSError:
            return False


def others_can_reach(path):
    """Whether a user with no rights of its own (nobody) can reach `path`:
    every directory above it searchable by others (CI's checkout under /root
    is not)."""
    path = os.path.realpath(path)
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & 0o001:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv") and others_can_reach(BIN),
                     "needs root, setpriv and a build tree others can reach: root reads any file, so the daemon "
                     "runs as nobody")
class UnreadableFile(Base):
    """Row 16: an unreadable log file must not repeat its warning on every
    scan. filewatch warns once per failing spell (open, read)."""

    def test_one_warning_for_a_file_that_stays_unreadable(self):
        os.chmod(self.dir, 0o755)
        logs = os.path.join(self.dir, "logs")
        os.mkdir(logs, 0o755)
        bad = os.path.join(logs, "a.log")
        with open(bad, "w") as f:
            f.write("x\n")
        os.chmod(bad, 0)
        os.mkdir(self.state, 0o755)
        os.chown(self.state, 65534, 65534)
        self.config(sources={"fw": {"plugin": "filewatch", "paths": [os.path.join(logs, "*.log")],
                                    "poll_interval": "20ms"}},
                    sinks={"out": {"plugin": "discard"}},
                    routes={"r": {"sources": ["fw"], "steps": ["out"]}})
        log_path = os.path.join(self.dir, "daemon.log")
        with open(log_path, "w") as log:
            p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN, "-c", self.cfg],
                                 stdout=subprocess.DEVNULL, stderr=log, env=sbtest.env())
            try:
                def text():
                    with open(log_path) as f:
                        return f.read()
                wait_for(lambda: "cannot open " + bad in text(), timeout=60, what="the first warning")
                for _ in range(20):  # the file changes: scans and inotify wake-ups, each retrying it
                    with open(bad, "a") as f:
                        f.write("y\n")
                    time.sleep(0.1)
                time.sleep(1)
                p.send_signal(signal.SIGTERM)
                self.assertEqual(p.wait(timeout=60), 0, text())
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.assertEqual(text().count("cannot open " + bad), 1, text())


class OperatorViews(Base):
    """Row 12: STATE said "pending" for done and dead entries, and the RUN
    column cut UTF-8 characters in half."""

    def test_runs_and_dlq_show_the_true_state_on_character_boundaries(self):
        rec = os.path.join(self.dir, "rec.txt")
        self.config(sinks={"out": {"plugin": "file_out", "path": self.out}},
                    routes={"r": {"sources": ["in"], "steps": ["out"]}})
        long_table = "таблица_" * 12  # 2-byte characters, far wider than the column
        self.write_events("ok1", table=long_table)
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        # a second route whose sink fails, for a dead entry
        self.config(sinks={"out": {"plugin": "file_out", "path": self.out},
                           "bad": {"plugin": "testsink", "record": rec, "result": "fail"}},
                    routes={"r": {"sources": ["in"], "steps": ["out"]},
                            "d": {"sources": ["in"], "steps": ["bad"]}})
        self.write_events("dead1")
        r = self.once()
        self.assertEqual(r.returncode, 4, r.stderr)
        out = subprocess.run([BIN, "-c", self.cfg, "runs"], capture_output=True, timeout=60, env=sbtest.env())
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout.decode("utf-8")  # raises on a character cut in half
        rows = [l.split() for l in text.splitlines()[1:]]
        states = {(r[2], r[1]) for r in rows}
        self.assertIn(("r", "done"), states)
        self.assertIn(("d", "dead"), states)
        self.assertNotIn("pending", [r[1] for r in rows])
        long_row = [l for l in text.splitlines() if "таблица" in l][0]
        self.assertIn("~", long_row, "a cut value is marked")
        dl = subprocess.run([BIN, "-c", self.cfg, "dlq", "list"], capture_output=True, timeout=60, env=sbtest.env())
        dtext = dl.stdout.decode("utf-8")
        self.assertEqual([l.split()[1] for l in dtext.splitlines()[1:]], ["dead"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
