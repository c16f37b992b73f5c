#!/usr/bin/env python3
"""filewatch end to end: the real daemon tails real Run Replicator logs
(tests/data/rrlogs) through real rotation, truncation, deletion, restarts
and inotify or polling, into file_out. Every test checks the exact events."""
import fnmatch
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from sbtest import BIN, RRLOGS as DATA, wait_for


def sample(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def run_text(schema, table, status="succeeded", td=10, hive=10):
    """A run as Run Replicator prints it; its first line is 'Schema Name'."""
    end = "Counts have matched, Success!!\nRETCODE:0\nScript completed successfully\n" if status == "succeeded" \
        else " Counts have not matched, exiting, and the script will fail \nRETCODE:1\nScript FAILED\n"
    return ("Schema Name :- %s\nTable Name :- %s\nProcessing for date: 2026-11-24\n"
            "Starting Import of %s.%s\n+ echo 'Script completed successfully'\n"
            " Teradata Count : %d\n Hive Count : %d\n" % (schema, table, schema, table, td, hive)) + end


def run_id(identity):
    """sb_run_id(): the first 8 bytes of SHA-256, top bit cleared."""
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") & 0x7FFFFFFFFFFFFFFF


def expected_run_id(event):
    """A filewatch run's identity: schema.table|inc_val or full|file|inode|offset
    of the run's first line (the offset in its event id)."""
    f = event["fields"]
    off = int(event["event_id"].split(":")[3])
    return run_id("%s.%s|%s|%s|%d|%d" % (f["schema"], f["table"], f.get("inc_date", "full"), f["log_file"],
                                          os.stat(f["log_file"]).st_ino, off))


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbfw.")
        self.logs = os.path.join(self.dir, "logs")
        os.mkdir(self.logs)
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.out = os.path.join(self.dir, "out.jsonl")
        self.errlog = os.path.join(self.dir, "daemon.log")
        self.procs = []
        self.files = []
        self.config()

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in self.files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def config(self, **opts):
        src = {"plugin": "filewatch", "paths": [os.path.join(self.logs, "*.log")], "poll_interval": "10s",
               "rotate_wait": "400ms", "host": "edge-test"}
        src.update(opts)
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": "info"},
               "sources": {"rr": src}, "sinks": {"out": {"plugin": "file_out", "path": self.out}},
               "routes": {"r": {"sources": ["rr"], "steps": ["out"]}}}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def env(self):
        e = dict(os.environ)
        e["TZ"] = "UTC"
        return e

    def start(self):
        seen = len(self.log_text())  # the log is appended to: only this run's lines count
        log = open(self.errlog, "a")
        self.files.append(log)
        p = subprocess.Popen([BIN, "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=log, env=self.env())
        self.procs.append(p)
        wait_for(lambda: "following" in self.log_text()[seen:] or "started" in self.log_text()[seen:]
                 or p.poll() is not None, what="daemon start")
        time.sleep(0.2)
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)

    def once(self):
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60,
                           env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stderr

    def log_text(self):
        try:
            with open(self.errlog, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def events(self):
        try:
            with open(self.out) as f:
                return [json.loads(l) for l in f.read().splitlines() if l]
        except FileNotFoundError:
            return []

    def tables(self):
        return [e["fields"]["table"] for e in self.events()]

    def write(self, name, text, mode="a"):
        with open(os.path.join(self.logs, name), mode + "b") as f:
            f.write(text.encode() if isinstance(text, str) else text)

    def assertNoDuplicates(self):
        ids = [e["event_id"] for e in self.events()]
        self.assertEqual(len(ids), len(set(ids)), ids)


class Samples(Base):
    def test_each_sample_gives_exactly_its_runs(self):
        for name in os.listdir(DATA):
            shutil.copy(os.path.join(DATA, name), self.logs)
        err = self.once()
        by_file = {}
        for e in self.events():
            by_file.setdefault(os.path.basename(e["fields"]["log_file"]), []).append(e)
        self.assertEqual(sorted((k, len(v)) for k, v in by_file.items()),
                         [("count_mismatch.log", 1), ("full_refresh_success.log", 1), ("hostile.log", 1),
                          ("incremental_offset.log", 1), ("sqoop_failure.log", 1), ("three_runs.log", 3)])
        f = by_file["full_refresh_success.log"][0]["fields"]
        st = os.stat(os.path.join(self.logs, "full_refresh_success.log"))
        self.assertRegex(by_file["full_refresh_success.log"][0]["event_id"],
                         "^filewatch:%d:%d:%d:[0-9a-f]{16}$" % (st.st_dev, st.st_ino, f["log_offset"]))
        self.assertEqual((f["schema"], f["table"], f["status"], f["td_count"], f["hive_count"], f["host"]),
                         ("groupon_production", "im_brand_list", "succeeded", 18234, 18234, "edge-test"))
        self.assertEqual(f["command"], "sh /opt/etl/code/cerebro/run_replicator.sh groupon_production im_brand_list")
        self.assertIsInstance(f["run_id"], int)
        self.assertGreaterEqual(f["run_id"], 0)
        for e in self.events():
            self.assertEqual(e["fields"]["run_id"], expected_run_id(e), e)
        self.assertTrue(f["started_at"].endswith("Z") and f["finished_at"].endswith("Z"))
        m = by_file["count_mismatch.log"][0]["fields"]
        self.assertEqual((m["status"], m["td_count"], m["hive_count"], m["inc_key"], m["inc_val"], m["inc_date"]),
                         ("failed", 5120331, 5120330, "order_dt", "20261123", "2026-11-23"))
        self.assertEqual((m["started_at"], m["finished_at"]), ("2026-11-24T04:00:01Z", "2026-11-24T04:05:41Z"))
        i = by_file["incremental_offset.log"][0]["fields"]
        self.assertEqual((i["status"], i["inc_val"], i["offset_days"], len(i["dates"])), ("succeeded", "2026-11-20", 3, 3))
        self.assertEqual(by_file["sqoop_failure.log"][0]["fields"]["reason"],
                         "date 2026-11-24: Processing failed for date : 2026-11-24")
        # the third has RETCODE:0 and "Script completed successfully" but no verdict for its date
        self.assertEqual([e["fields"]["status"] for e in by_file["three_runs.log"]], ["succeeded", "failed", "failed"])
        self.assertEqual(by_file["hostile.log"][0]["fields"]["schema"], "good_schema")
        self.assertIn("not a valid identifier", err)
        self.assertIn("hostile.log:", err)
        # a second --once finds nothing new
        self.once()
        self.assertEqual(len(self.events()), 8)
        self.assertNoDuplicates()

    def test_command_and_json_formats(self):
        self.config(format="command", paths=[os.path.join(self.logs, "*.msg")])
        with open(os.path.join(self.logs, "a.msg"), "w") as f:
            f.write('${RUN_SCRIPT} "sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh groupon_production im_brand_list"\n'
                    "sh run_replicator.sh groupon;rm -rf / t\n"
                    "bash -c 'sh /x/run_replicator.sh edw orders dt 20261340'\n"
                    "bash -c 'sh /x/run_replicator.sh edw orders dt 20261123 2'\n")
        err = self.once()
        f = [e["fields"] for e in self.events()]
        self.assertEqual([(x["schema"], x["table"], x.get("inc_val")) for x in f],
                         [("groupon_production", "im_brand_list", None), ("edw", "orders", "20261123")])
        self.assertEqual(f[1]["offset_days"], 2)
        for e in self.events():
            self.assertEqual(e["fields"]["run_id"], expected_run_id(e), e)
        self.assertIn('schema "groupon;rm" is not a valid identifier', err)
        self.assertIn('inc_val "20261340" is not a date', err)
        self.config(format="json", id_field="id", paths=[os.path.join(self.logs, "*.jsonl")])
        with open(os.path.join(self.logs, "b.jsonl"), "w") as j:
            j.write('{"id": "x1", "schema": "s"}\nnot json\n{"schema": "s2"}\n')
        err = self.once()
        self.assertEqual([e["event_id"] for e in self.events()][2], "x1")
        self.assertTrue(self.events()[3]["event_id"].startswith("filewatch:"))
        self.assertIn("b.jsonl:", err)


class Scale(Base):
    def test_unreadable_file_fails_once_and_the_rest_goes_out(self):
        """A matched file whose read fails (here /proc/self/mem: a regular
        file that answers EIO) is retried, then makes --once exit non-zero;
        the runs of the readable files still go out."""
        self.write("good.log", run_text("edw", "t_good"))
        os.symlink("/proc/self/mem", os.path.join(self.logs, "bad.log"))
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60,
                           env=self.env())
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("bad.log could not be read to its end", r.stderr)
        self.assertIn("cannot read", r.stderr)
        self.assertEqual(self.tables(), ["t_good"])

    def test_globs_name_what_glob_names(self):
        """The patterns name the files glob(3) names, under the same paths:
        a wildcard directory, a literal file, a relative pattern (from the
        daemon's directory), hidden files only by a dot, a symbolic link to
        a file, a directory that matches, other files and an exclude."""
        g = os.path.join(self.dir, "g")
        files = ["a/logs/x.log", "b/logs/y.log", "b/logs/w.log", "b/logs/.h.log", "b/logs/z.txt", "c/one.log",
                 "c/two.log", "elsewhere/t.log", "rel/r1.log", "rel/.r2.log", "d/one/run.log", "d/two/run.log",
                 "a/logs/x.log.gz"]
        for i, name in enumerate(files):
            os.makedirs(os.path.dirname(os.path.join(g, name)), exist_ok=True)
            with open(os.path.join(g, name), "w") as f:
                f.write(run_text("edw", "t_%d" % i))
        os.mkdir(os.path.join(g, "b/logs/sub.log"))
        os.symlink(os.path.join(g, "elsewhere/t.log"), os.path.join(g, "b/logs/ln.log"))
        patterns = [os.path.join(g, "*/logs/*.log"), os.path.join(g, "c/one.log"), "g/rel/*.log",
                    os.path.join(g, "b/logs/.*"), os.path.join(g, "d/*/run.log"), os.path.join(g, "a/logs/*")]
        # with a slash: the whole path; without: the file's name
        exclude = [os.path.join(g, "b/*/w.log"), "*.gz"]
        self.config(paths=patterns, exclude=exclude)
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60,
                           env=self.env(), cwd=self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = set()
        for pat in patterns:
            for path in glob.glob(os.path.join(self.dir, pat) if not pat.startswith("/") else pat):
                path = os.path.relpath(path, self.dir) if not pat.startswith("/") else path
                if os.path.isfile(os.path.join(self.dir, path)) and not any(
                        fnmatch.fnmatch(path if "/" in x else os.path.basename(path), x) for x in exclude):
                    want.add(path)
        self.assertEqual(sorted(e["fields"]["log_file"] for e in self.events()), sorted(want))
        self.assertIn("g/rel/r1.log", want)  # relative, as glob names it
        self.assertIn(os.path.join(g, "b/logs/ln.log"), want)
        self.assertIn(os.path.join(g, "b/logs/.h.log"), want)
        self.assertIn(os.path.join(g, "d/two/run.log"), want)  # a wildcard directory, a fixed name
        self.assertNotIn(os.path.join(g, "a/logs/x.log.gz"), want)
        self.assertEqual(len(want), 8)

    def test_many_files_few_descriptors(self):
        """More files than descriptors allowed: each is closed once read and
        none is missed; a closed file that grows is reopened by path."""
        self.config(max_open=4, rotate_wait="300ms", poll_interval="100ms")
        with open(self.cfg) as f:
            cfg = json.load(f)
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        cfg["admin"] = {"enabled": True, "bind": "127.0.0.1", "port": port}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        for i in range(40):
            self.write("f%02d.log" % i, run_text("edw", "t_%02d" % i))
        p = self.start()
        wait_for(lambda: len(self.events()) == 40, what="a run from each of 40 files")
        time.sleep(0.6)  # quiet: every file is closed now
        self.write("f07.log", run_text("edw", "t_again"))
        wait_for(lambda: len(self.events()) == 41, what="the run appended to a closed file")
        self.assertEqual(self.events()[-1]["fields"]["log_file"], os.path.join(self.logs, "f07.log"))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()

        def metric(name):
            m = re.search(r'^syncbridge_filewatch_%s\{instance="rr"\} (\d+)$' % name, text, re.M)
            self.assertIsNotNone(m, name)
            return int(m.group(1))
        self.assertEqual(metric("files"), 40)
        self.assertLessEqual(metric("open_files"), 4)
        self.assertGreaterEqual(metric("opens_total"), 41)  # each file once, f07 again
        self.assertEqual((metric("open_errors_total"), metric("read_errors_total")), (0, 0))
        self.stop(p)
        self.assertEqual(sorted(self.tables()), sorted(["t_%02d" % i for i in range(40)] + ["t_again"]))
        self.assertNoDuplicates()


class Live(Base):
    def test_rename_rotation_mid_run_loses_nothing(self):
        """logrotate (no copytruncate) renames the log while Run Replicator still
        writes the run through its open descriptor; the rest of that run goes to
        the renamed file, the next run to the new file."""
        path = os.path.join(self.logs, "rr.log")
        w = open(path, "a")
        half = run_text("edw", "t_rotated").split("\n")
        w.write("\n".join(half[:4]) + "\n")
        w.flush()
        p = self.start()
        time.sleep(0.3)
        os.rename(path, path + ".1")  # out of the glob
        time.sleep(0.1)
        w.write("\n".join(half[4:]))
        w.flush()
        w.close()
        self.write("rr.log", run_text("edw", "t_new"))
        wait_for(lambda: len(self.events()) == 2, what="both runs")
        self.assertEqual(sorted(self.tables()), ["t_new", "t_rotated"])
        wait_for(lambda: "done with the rotated" in self.log_text(), what="rotated file closed")
        self.stop(p)
        self.assertNoDuplicates()

    def test_copytruncate(self):
        self.write("ct.log", run_text("edw", "t_before"))
        p = self.start()
        wait_for(lambda: self.tables() == ["t_before"], what="first run")
        path = os.path.join(self.logs, "ct.log")
        shutil.copy(path, os.path.join(self.dir, "ct.log.1"))
        os.truncate(path, 0)
        self.write("ct.log", run_text("edw", "t_after"))
        wait_for(lambda: self.tables() == ["t_before", "t_after"], what="run after truncation")
        self.assertIn("truncated", self.log_text())
        self.stop(p)

    def test_quiet_file_and_deletion(self):
        """A run whose verdicts are in and that has no trailer (the plain
        run_script.sh) ends when its file goes quiet; a run in the middle of
        a date does not (an import may be silent for long): it ends with its
        file, reported with its date unfinished."""
        self.write("a.log", run_text("edw", "t_a").replace("RETCODE:0\n", "")
                   .replace("Script completed successfully\n", ""))  # ends on its verdict
        self.write("b.log", "Schema Name :- edw\nTable Name :- t_cut\nProcessing for date: 2026-11-24\n")
        p = self.start()
        wait_for(lambda: self.tables() == ["t_a"], what="run ended by its file going quiet")
        self.assertEqual(self.events()[0]["fields"]["status"], "succeeded")
        time.sleep(0.6)
        self.assertEqual(self.tables(), ["t_a"], "a run inside its date waits for its file's end")
        os.unlink(os.path.join(self.logs, "b.log"))
        wait_for(lambda: len(self.events()) == 2, what="half run reported at its file's end")
        f = self.events()[1]["fields"]
        self.assertEqual((f["table"], f["status"], f["dates"][0]["status"], f["reason"]),
                         ("t_cut", "failed", "unfinished", "date 2026-11-24: no verdict"))
        self.assertIn("deleted", self.log_text())
        self.stop(p)

    def test_restart_with_half_written_run(self):
        self.write("r.log", run_text("edw", "t_1") + "\n".join(run_text("edw", "t_2").split("\n")[:5]) + "\n")
        p = self.start()
        wait_for(lambda: self.tables() == ["t_1"], what="first run")
        time.sleep(0.2)
        self.stop(p)
        self.write("r.log", "\n".join(run_text("edw", "t_2").split("\n")[5:]) + run_text("edw", "t_3"))
        p = self.start()
        wait_for(lambda: len(self.events()) >= 3, what="runs after restart")
        time.sleep(0.3)
        self.stop(p)
        self.assertEqual(self.tables(), ["t_1", "t_2", "t_3"])
        self.assertNoDuplicates()
        # the half-written run keeps the id of its first line
        with open(os.path.join(self.logs, "r.log")) as f:
            text = f.read()
        off = text.index("Schema Name :- edw\nTable Name :- t_2")
        self.assertRegex(self.events()[1]["event_id"], ":%d:[0-9a-f]{16}$" % off)
        # and once more with nothing new: nothing re-sent
        p = self.start()
        time.sleep(0.4)
        self.stop(p)
        self.assertEqual(len(self.events()), 3)

    def test_file_replaced_while_down(self):
        self.write("x.log", run_text("edw", "t_old"))
        p = self.start()
        wait_for(lambda: self.tables() == ["t_old"], what="first run")
        self.stop(p)
        os.unlink(os.path.join(self.logs, "x.log"))
        self.write("x.log", run_text("edw", "t_neu"))  # same size, maybe the same inode: the fingerprint differs
        p = self.start()
        wait_for(lambda: len(self.events()) == 2, what="replacement read from the start")
        self.stop(p)
        self.assertEqual(self.tables(), ["t_old", "t_neu"])

    def test_partial_line_waits_for_newline(self):
        text = run_text("edw", "t_p").split("Counts have matched")[0]
        self.write("p.log", text + "Counts have matched, Succ")
        p = self.start()
        time.sleep(0.5)
        self.assertEqual(self.events(), [])
        self.write("p.log", "ess!!\n")
        wait_for(lambda: self.tables() == ["t_p"], what="completed line")
        self.stop(p)

    def test_long_and_binary_lines_skipped_neighbours_kept(self):
        self.config(max_line="1KB")
        lines = run_text("edw", "t_garbage").split("\n")
        bad = ["x" * 5000, "bin\x00ary \x00 stuff", ]
        body = "\n".join(lines[:5] + bad + lines[5:6]).encode() + b"\n\xff\xfe not utf8\n" + \
            "\n".join(lines[6:]).encode()
        self.write("g.log", body)
        p = self.start()
        wait_for(lambda: len(self.events()) == 1, what="run around the garbage")
        f = self.events()[0]["fields"]
        self.assertEqual((f["td_count"], f["hive_count"], f["status"]), (10, 10, "succeeded"))
        t = self.log_text()
        self.assertIn("over max_line", t)
        self.assertIn("NUL", t)
        self.assertIn("invalid UTF-8", t)
        self.assertIn("g.log:", t)
        self.stop(p)

    def test_restart_inside_an_over_long_line_skips_it_whole(self):
        """The checkpoint taken while skipping an over-long line points at
        the line's start, so its tail is never read as a line of its own."""
        self.config(format="command", max_line="1KB")
        self.write("c.log", "sh /opt/run_replicator.sh edw t_good\n" + "x" * 3000)
        p = self.start()
        wait_for(lambda: self.tables() == ["t_good"], what="first command")
        time.sleep(0.3)
        self.stop(p)
        self.write("c.log", " sh /opt/run_replicator.sh edw t_tail\nsh /opt/run_replicator.sh edw t_after\n")
        p = self.start()
        wait_for(lambda: "t_after" in self.tables(), what="command after the long line")
        time.sleep(0.3)
        self.stop(p)
        self.assertEqual(self.tables(), ["t_good", "t_after"])
        self.assertIn("over max_line", self.log_text())

    def test_polling_mode_new_file(self):
        self.config(inotify=False, poll_interval="50ms")
        p = self.start()
        self.write("new.log", run_text("edw", "t_polled"))
        wait_for(lambda: self.tables() == ["t_polled"], timeout=5, what="polled file")
        self.stop(p)

    def test_inotify_wakes_for_new_file(self):
        self.config(poll_interval="60s")  # only inotify can be this quick
        p = self.start()
        os.mkdir(os.path.join(self.dir, "tmp"))
        tmp = os.path.join(self.dir, "tmp", "n.log")
        with open(tmp, "w") as f:
            f.write(run_text("edw", "t_moved_in"))
        os.rename(tmp, os.path.join(self.logs, "n.log"))  # IN_MOVED_TO
        wait_for(lambda: self.tables() == ["t_moved_in"], timeout=3, what="inotify: moved-in file")
        self.write("n.log", run_text("edw", "t_appended"))  # IN_MODIFY
        wait_for(lambda: len(self.events()) == 2, timeout=3, what="inotify: append")
        self.stop(p)


if __name__ == "__main__":
    unittest.main(verbosity=2)
