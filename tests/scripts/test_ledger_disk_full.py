#!/usr/bin/env python3
"""A full state disk doubles nothing (issue 20, row 7).

The state directory is a small tmpfs mounted for the test (the test runs
as root, as CI does). The daemon reads 20,000 lines into a slow sink; while
their completions come, a ballast file fills the disk: commits fail with
SQLITE_FULL. The ballast is then removed. Every step completion
that could not be recorded must be recorded later (held and retried), so
that when the input is done every entry is settled, and a restart
re-delivers nothing. Before the fix, the completions whose second try
failed were dropped: their entries stayed pending and were delivered
again at the next start.

Where mounting is impossible (not root, no CAP_SYS_ADMIN) the test is
skipped (a failure under SB_STRICT_TESTS=1); it has no LD_PRELOAD or loop
file fallback.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from sbtest import BIN, env, needs, wait_for

LINES = 20000


def can_mount():
    if os.geteuid() != 0:
        return False
    d = tempfile.mkdtemp(prefix="sbmnt.")
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", d], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True)
        return ok
    finally:
        os.rmdir(d)


@needs(can_mount(), "mounting a tmpfs (root with CAP_SYS_ADMIN)")
class DiskFull(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbfull.")
        self.state = os.path.join(self.dir, "state")
        os.mkdir(self.state)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "none", self.state], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.input = os.path.join(self.dir, "in.jsonl")
        with open(self.input, "w") as f:
            for i in range(LINES):
                f.write(json.dumps({"n": i, "pad": "x" * 120}) + "\n")
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        with open(self.cfg, "w") as f:
            json.dump({"state_dir": self.state, "log": {"level": "info"},
                       "sources": {"in": {"plugin": "file_in", "path": self.input, "format": "json"}},
                       "sinks": {"out": {"plugin": "testsink", "delay": "20ms", "batch_max": 100}},
                       "routes": {"r": {"sources": ["in"], "steps": ["out"]}}}, f)
        self.errlog = os.path.join(self.dir, "daemon.log")
        self.proc = None

    def tearDown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["umount", "-l", self.state], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def counts(self):
        r = subprocess.run([BIN, "--state-dir", self.state, "runs", "list", "--json", "--limit", "10000000"],
                           capture_output=True, text=True, env=env(), timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        states = {}
        for e in json.loads(r.stdout):
            states[e["state"]] = states.get(e["state"], 0) + 1
        return states

    def log_text(self):
        with open(self.errlog, errors="replace") as f:
            return f.read()

    def test_unrecorded_completions_are_retried_not_redelivered(self):
        ballast = os.path.join(self.state, "ballast")
        log = open(self.errlog, "w")
        self.addCleanup(log.close)
        self.proc = subprocess.Popen([BIN, "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=log, env=env())
        # the events are accepted at once, the slow sink completes them a hundred at a time: fill the
        # disk while completions are still coming
        wait_for(lambda: os.path.exists(os.path.join(self.state, "ledger.db-wal")), what="the ledger")
        time.sleep(1.0)
        with open(ballast, "wb", buffering=0) as f:  # unbuffered: the close has nothing left to write
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        wait_for(lambda: re.search(r"state change\(s\) (could )?not (be )?recorded", self.log_text()), timeout=60,
                 what="a step completion to fail for want of space")
        time.sleep(1.0)  # let it run full for a while: completions keep failing
        os.unlink(ballast)
        wait_for(lambda: self.counts().get("done", 0) == LINES, timeout=180, interval=0.5,
                 what="every line settled once the disk has room again")
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=60), 0)
        log.close()
        self.assertEqual(self.counts(), {"done": LINES}, self.log_text()[-3000:])
        self.assertIn("recorded after", self.log_text())
        self.assertNotIn("closing with", self.log_text())

        # a restart delivers nothing again: nothing was left pending
        log = open(self.errlog, "a")
        self.proc = subprocess.Popen([BIN, "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=log, env=env())
        time.sleep(2.0)
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=60), 0)
        log.close()
        self.assertEqual(self.counts(), {"done": LINES})


if __name__ == "__main__":
    unittest.main(verbosity=2)
