#!/usr/bin/env python3
"""The daemon as an operator sees it: signals, reload, the runs/dlq CLI,
exit codes, and file_in's handling of awkward input. Real processes, real
files, real ledger."""
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest

from sbtest import BIN  # sbtest also sets the plugin path for runs by hand


def wait_for(pred, timeout=15.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def lines(path):
    try:
        with open(path) as f:
            return [l for l in f.read().splitlines() if l]
    except FileNotFoundError:
        return []


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbdaemon.")
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.inp = os.path.join(self.dir, "in.jsonl")
        self.out = os.path.join(self.dir, "out.jsonl")
        self.procs = []
        self.logs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in self.logs:
            f.close()
        subprocess.run(["rm", "-rf", self.dir])

    def config(self, sinks, steps, **extra):
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": "info"},
               "sources": {"in": {"plugin": "file_in", "path": self.inp, "format": "json", "id_field": "event_id",
                                  "poll_interval": "20ms"}},
               "sinks": sinks, "routes": {"r": {"sources": ["in"], "steps": steps}}}
        cfg.update(extra)
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def write_events(self, *ids, raw=None):
        with open(self.inp, "a") as f:
            for i in ids:
                f.write(json.dumps({"event_id": i, "schema": "edw", "table": "t_" + i, "status": "succeeded"}) + "\n")
            if raw:
                f.write(raw)

    def start(self):
        log = open(os.path.join(self.dir, "daemon.log"), "a")
        self.logs.append(log)
        p = subprocess.Popen([BIN, "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(p)
        return p

    def log_text(self):
        with open(os.path.join(self.dir, "daemon.log")) as f:
            return f.read()

    def cli(self, *args):
        return subprocess.run([BIN, "-c", self.cfg] + list(args), capture_output=True, text=True, timeout=60)


class Signals(Base):
    def test_sigterm_drains_and_exits_zero(self):
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        self.write_events("a", "b", "c")
        p = self.start()
        wait_for(lambda: len(lines(self.out)) == 3, what="3 events out")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)
        self.assertIn("SIGTERM received", self.log_text())

    def test_sighup_rejects_bad_config_and_applies_good_one(self):
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        self.write_events("a")
        p = self.start()
        wait_for(lambda: len(lines(self.out)) == 1, what="first event")
        with open(self.cfg, "w") as f:
            f.write('{"sources": {"in": {"plugin": "file_in", "path": 5}}}')
        p.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in self.log_text(), what="reload rejected")
        self.assertIn("sources.in.path", self.log_text())
        self.assertIsNone(p.poll(), "a bad reload must not stop the daemon")
        self.write_events("b")
        wait_for(lambda: len(lines(self.out)) == 2, what="old config keeps running")
        out2 = os.path.join(self.dir, "out2.jsonl")
        self.config({"out": {"plugin": "file_out", "path": self.out},
                     "out2": {"plugin": "file_out", "path": out2}}, ["out", "out2"])
        p.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in self.log_text(), what="reload done")
        self.write_events("c")
        wait_for(lambda: len(lines(out2)) == 1, what="new step active")
        self.assertEqual(json.loads(lines(out2)[0])["event_id"], "c")
        self.assertEqual([json.loads(l)["event_id"] for l in lines(self.out)], ["a", "b", "c"])
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)


class Cli(Base):
    def test_runs_and_dlq_replay_while_running(self):
        rec = os.path.join(self.dir, "rec.txt")
        self.config({"bad": {"plugin": "testsink", "record": rec, "result": "fail"}}, ["bad"])
        self.write_events("x1", "x2")
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 4, r.stderr)  # finished with dead letters
        dl = self.cli("dlq", "list", "--json")
        self.assertEqual(dl.returncode, 0, dl.stderr)
        dead = json.loads(dl.stdout)
        self.assertEqual(sorted(e["event_id"] for e in dead), ["x1", "x2"])
        self.assertIn("bad: failed: fail", dead[0]["error"])
        table = self.cli("runs", "--state", "dead")
        self.assertIn("edw.t_x1", table.stdout)
        show = self.cli("runs", "show", str(dead[0]["entry_id"]))
        self.assertEqual(json.loads(show.stdout)["state"], "dead")
        # fix the sink, start the daemon, replay from the CLI while it runs
        self.config({"bad": {"plugin": "testsink", "record": rec, "result": "ok"}}, ["bad"])
        p = self.start()
        time.sleep(0.3)
        rp = self.cli("dlq", "replay", "--all")
        self.assertEqual(rp.returncode, 0, rp.stderr)
        self.assertIn("replaying 2", rp.stdout)
        wait_for(lambda: sum(1 for l in lines(rec) if l.endswith(" ok")) == 2, what="replayed events processed")
        wait_for(lambda: json.loads(self.cli("runs", "--state", "done", "--json").stdout) != [], what="done")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)
        self.assertEqual(json.loads(self.cli("dlq", "list", "--json").stdout), [])

    def test_dlq_drop_and_usage_errors(self):
        rec = os.path.join(self.dir, "rec.txt")
        self.config({"bad": {"plugin": "testsink", "record": rec, "result": "fail"}}, ["bad"])
        self.write_events("y1")
        subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, timeout=60)
        entry = json.loads(self.cli("dlq", "--json").stdout)[0]["entry_id"]
        self.assertEqual(self.cli("dlq", "drop").returncode, 2)
        self.assertEqual(self.cli("dlq", "drop", "abc").returncode, 2)
        d = self.cli("dlq", "drop", str(entry))
        self.assertIn("dropped 1", d.stdout)
        self.assertEqual(json.loads(self.cli("dlq", "--json").stdout), [])
        self.assertEqual(self.cli("--state", "bogus", "runs").returncode, 2)

    def test_exit_code_for_invalid_config(self):
        with open(self.cfg, "w") as f:
            f.write('{"sources": {"in": {"plugin": "file_in", "path": "x"}},\n "routes": {"r": {"sources": ["in"], "steps": ["nope"]}}}')
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 3)
        self.assertIn('routes.r.steps[0]', r.stderr)
        self.assertIn("nope", r.stderr)


class Waits(Base):
    """Plugin ABI 2: a step that waits with step state survives SIGKILL."""

    def test_sigkill_between_polls_resumes_with_one_side_effect(self):
        record = os.path.join(self.dir, "record.txt")
        # each event: trigger (the side effect), then WAIT polls 300 ms apart;
        # max_attempts 1 shows the waits are not charged to the retry budget
        self.config({"dag": {"plugin": "testsink", "record": record, "wait_polls": 3, "wait_ms": "300ms",
                             "retry": {"max_attempts": 1}}}, ["dag"])
        ids = ["r%d" % i for i in range(5)]
        self.write_events(*ids)
        p = self.start()
        # killed after every event's second poll, before its third
        wait_for(lambda: all(any(l.startswith("dag %s " % i) and l.endswith(" wait 2") for l in lines(record))
                             for i in ids), what="every event's second poll")
        p.kill()
        p.wait()
        self.assertFalse(any(l.endswith(" ok") for l in lines(record)), "finished before the kill")
        p = self.start()
        wait_for(lambda: sum(1 for l in lines(record) if l.endswith(" ok")) == len(ids), timeout=30,
                 what="every event done after the restart")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)
        for i in ids:
            mine = [l for l in lines(record) if l.startswith("dag %s " % i)]
            self.assertEqual(sum(1 for l in mine if l.endswith(" trigger")), 1, "one side effect: %s" % mine)
            self.assertEqual(sum(1 for l in mine if l.endswith(" ok")), 1, mine)
            self.assertTrue(any(l.endswith(" wait 3") for l in mine), "the third poll came after the restart")
        done = json.loads(self.cli("runs", "--state", "done", "--json").stdout)
        self.assertEqual(sorted(r["event_id"] for r in done), ids)


class FileInEdges(Base):
    """file_in on what is not a regular file: refused with the reason, or
    (a FIFO with allow_fifo) read without ever blocking SIGTERM."""

    def run_once(self, path, **opts):
        src = {"plugin": "file_in", "path": path}
        src.update(opts)
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        with open(self.cfg) as f:
            cfg = json.load(f)
        cfg["sources"]["in"] = src
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        return subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=30)

    def test_directory_is_an_error(self):
        os.mkdir(os.path.join(self.dir, "logs"))
        r = self.run_once(os.path.join(self.dir, "logs"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("is a directory", r.stderr)

    def test_fifo_is_refused_without_hanging(self):
        fifo = os.path.join(self.dir, "pipe")
        os.mkfifo(fifo)
        r = self.run_once(fifo)  # no writer: a blocking open would hang here
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("set allow_fifo", r.stderr)

    def test_fifo_with_allow_fifo_reads_and_stops_on_sigterm(self):
        fifo = os.path.join(self.dir, "pipe")
        os.mkfifo(fifo)
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        with open(self.cfg) as f:
            cfg = json.load(f)
        cfg["sources"]["in"] = {"plugin": "file_in", "path": fifo, "format": "json", "allow_fifo": True,
                                "poll_interval": "20ms"}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        p = self.start()
        time.sleep(0.5)  # the source waits for a writer without blocking
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, b'{"n": 1}\n{"n": 2}\n{"n": ')
        time.sleep(0.3)  # the writer finishes its third line later: it must arrive whole
        os.write(w, b'3}\n')
        wait_for(lambda: len(lines(self.out)) == 3, what="3 lines through the FIFO")
        self.assertEqual([json.loads(l)["fields"]["n"] for l in lines(self.out)], [1, 2, 3])
        p.send_signal(signal.SIGTERM)  # the writer is still open: nothing to read, must still stop
        self.assertEqual(p.wait(timeout=15), 0)
        os.close(w)


    def test_fifo_read_once_waits_for_its_first_writer(self):
        """Without following, a FIFO is read until its writer closes it; a
        source that starts first must wait for the writer, not end at once."""
        fifo = os.path.join(self.dir, "pipe")
        os.mkfifo(fifo)
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        with open(self.cfg) as f:
            cfg = json.load(f)
        cfg["sources"]["in"] = {"plugin": "file_in", "path": fifo, "format": "json", "allow_fifo": True,
                                "follow": False, "poll_interval": "20ms"}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        p = subprocess.Popen([BIN, "--once", "-c", self.cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        def has_fifo_open():
            try:
                return any(os.readlink("/proc/%d/fd/%s" % (p.pid, fd)) == fifo
                           for fd in os.listdir("/proc/%d/fd" % p.pid))
            except OSError:
                return False
        wait_for(lambda: has_fifo_open() or p.poll() is not None, what="file_in opening the FIFO")
        time.sleep(0.3)  # it has read no writer's EOF yet: it must still be there
        self.assertIsNone(p.poll(), "file_in ended before the FIFO's writer came")
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, b'{"n": 1}\n{"n": 2}\n')
        os.close(w)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual([json.loads(l)["fields"]["n"] for l in lines(self.out)], [1, 2])


class FileIn(Base):
    def test_awkward_lines_are_reported_and_skipped_without_losing_neighbours(self):
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        big = json.dumps({"event_id": "huge", "pad": "x" * 3000})
        self.write_events("a", raw="this is not json\n" + big + "\n" + "\x00\x01\x02 garbage\n")
        self.write_events("b")
        with open(self.cfg) as f:
            cfg = json.load(f)
        cfg["sources"]["in"]["max_line"] = "1KB"
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([json.loads(l)["event_id"] for l in lines(self.out)], ["a", "b"])
        self.assertIn("skipped", r.stderr)
        self.assertIn("over max_line", r.stderr)

    def test_json_line_ids_own_or_fallback(self):
        """A line's own id_field string is its id; a line without one (or
        whose member is not a string, or empty, or named only inside
        another string) gets the file position's id, and a broken line is
        reported with the parser's reason, whether or not it names the field."""
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        self.write_events("own", raw="\n".join([
            json.dumps({"event_id": 7, "n": 1}),
            json.dumps({"event_id": "", "n": 2}),
            json.dumps({"n": 3}),
            json.dumps({"note": "the \"event_id\" is elsewhere", "n": 4}),
            json.dumps({"n": 5, "event_id": "last-own"}),
            '{"event_id": "broken", "n": ',
            "{broken",
        ]) + "\n")
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        db = sqlite3.connect(os.path.join(self.dir, "state", "ledger.db"))
        ids = [row[0] for row in db.execute("SELECT event_id FROM entries ORDER BY id")]
        db.close()
        self.assertEqual(ids[0], "own")
        self.assertEqual(ids[5], "last-own")
        for i in range(1, 5):
            self.assertRegex(ids[i], r"^file:\d+:\d+:\d+:[0-9a-f]{16}$")
        self.assertEqual(len(set(ids)), 6)
        self.assertEqual(len(ids), 6)
        skipped = [l for l in r.stderr.splitlines() if "skipped" in l]
        self.assertEqual(len(skipped), 2, r.stderr)
        self.assertTrue(all("column" in l for l in skipped), skipped)  # jansson's reason, with its column

    def test_partial_line_waits_for_newline_and_restart_does_not_resend(self):
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        self.write_events("a")
        with open(self.inp, "a") as f:
            f.write('{"event_id": "b", "tab')
        p = self.start()
        wait_for(lambda: len(lines(self.out)) == 1, what="first event")
        time.sleep(0.3)
        self.assertEqual(len(lines(self.out)), 1, "a partial line must wait")
        with open(self.inp, "a") as f:
            f.write('le": "t"}\n')
        wait_for(lambda: len(lines(self.out)) == 2, what="completed line")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)
        self.write_events("c")
        p = self.start()
        wait_for(lambda: len(lines(self.out)) == 3, what="event after restart")
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        self.assertEqual([json.loads(l)["event_id"] for l in lines(self.out)], ["a", "b", "c"])

    def test_replaced_file_is_read_from_the_start(self):
        self.config({"out": {"plugin": "file_out", "path": self.out}}, ["out"])
        self.write_events("a", "b")
        p = self.start()
        wait_for(lambda: len(lines(self.out)) == 2, what="first file")
        os.rename(self.inp, self.inp + ".1")
        self.write_events("c")
        wait_for(lambda: len(lines(self.out)) == 3, what="replacement file")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        self.assertEqual([json.loads(l)["event_id"] for l in lines(self.out)], ["a", "b", "c"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
