#!/usr/bin/env python3
"""filewatch on generated Run Replicator corpora (tests/scripts/rrgen.py):
the real daemon reads them with --once, and every field of every run's one
event is compared with what the generator knows the scripts did.

Also a measuring tool:  test_filewatch_corpus.py --measure --runs N --layout L
prints runs right and events per run without asserting."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import rrgen
from sbtest import BIN

# fields the truth states when they apply and that must be absent otherwise
OPTIONAL = ("inc_key", "inc_val", "inc_date", "reason", "retcode")


def run_once(workdir, logs, file_time=True, extra=None):
    """Run the daemon with --once over logs/*.log; return (events, stderr, returncode)."""
    out = os.path.join(workdir, "out.jsonl")
    src = {"plugin": "filewatch", "paths": [os.path.join(logs, "*.log")], "host": "edge-test"}
    if file_time:
        src["file_time_pattern"] = "_([0-9]{8}_[0-9]{6})\\.log$"
    src.update(extra or {})
    cfg = {"state_dir": os.path.join(workdir, "state"), "log": {"level": "warn"},
           "sources": {"rr": src}, "sinks": {"out": {"plugin": "file_out", "path": out}},
           "routes": {"r": {"sources": ["rr"], "steps": ["out"]}}}
    path = os.path.join(workdir, "syncbridge.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ, TZ="UTC")
    r = subprocess.run([BIN, "--once", "-c", path], capture_output=True, text=True, timeout=600, env=env)
    events = []
    if os.path.exists(out):
        with open(out) as f:
            events = [json.loads(l) for l in f if l.strip()]
    return events, r.stderr, r.returncode


def compare(truth, events):
    """(runs right, list of problems, events per file). Events are matched to
    the truth by file and, within a file, by order of their first line."""
    by_file = {}
    for e in events:
        by_file.setdefault(os.path.basename(e["fields"]["log_file"]), []).append(e)
    for v in by_file.values():
        v.sort(key=lambda e: e["fields"]["log_offset"])
    want = {}
    for t in truth:
        want.setdefault(t["file"], []).append(t["fields"])
    problems = []
    right = 0
    for name, runs in want.items():
        got = by_file.get(name, [])
        if len(got) != len(runs):
            problems.append("%s: %d events for %d runs" % (name, len(got), len(runs)))
        for i, (t, e) in enumerate(zip(runs, got)):
            f = e["fields"]
            bad = ["%s: want %r, got %r" % (k, v, f.get(k, "<absent>")) for k, v in t.items() if f.get(k) != v]
            bad += ["%s: want absent, got %r" % (k, f[k]) for k in OPTIONAL if k not in t and k in f]
            for k in ("run_id", "host", "log_file", "log_offset"):
                if k not in f:
                    bad.append("%s missing" % k)
            if bad:
                problems.append("%s run %d (%s.%s): %s" % (name, i, t["schema"], t["table"], "; ".join(bad)))
            else:
                right += 1
    for name in by_file:
        if name not in want:
            problems.append("%s: %d events from a file with no runs" % (name, len(by_file[name])))
    return right, problems


class Corpus(unittest.TestCase):
    RUNS = 2000

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbcorpus.")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self, layout, seed):
        truth = rrgen.generate(self.dir, self.RUNS, layout, seed)
        events, err, rc = run_once(self.dir, os.path.join(self.dir, "logs"))
        self.assertEqual(rc, 0, err[-3000:])
        right, problems = compare(truth, events)
        self.assertEqual(problems[:20], [], "%d of %d runs right" % (right, len(truth)))
        self.assertEqual(len(events), len(truth))
        self.assertEqual(right, len(truth))
        self.assertEqual(len({e["event_id"] for e in events}), len(events))
        return truth, events

    def test_single_file(self):
        self.check("single", 11)

    def test_file_per_run(self):
        self.check("per-run", 12)

    def test_kafka_body_gives_the_same_fields(self):
        """The on-prem message as a filewatch `command` line gives the same
        command fields as the run's invocation in its log."""
        truth, events = None, None
        body = '${RUN_SCRIPT} "sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh groupon_production im_brand_list"'
        logs = os.path.join(self.dir, "logs")
        os.makedirs(logs)
        with open(os.path.join(logs, "a.log"), "w") as f:
            f.write(body + "\n#####\nSchema Name :- groupon_production\nTable Name :- im_brand_list\n"
                    "No inc_val and inc_key  was passed, Considering this table as a full refresh ...\n"
                    "No offset_days specified, loading just for a single date\nWe don't have hiphens indate\n"
                    "Processing for date: 20261124\n Teradata Count : 5\n Hive Count : 5\n"
                    "Counts have matched, Success!!\nRETCODE:0\nScript completed successfully\n")
        events, err, rc = run_once(self.dir, logs)
        self.assertEqual(rc, 0, err)
        log_fields = events[0]["fields"]
        with open(os.path.join(logs, "b.msg"), "w") as f:
            f.write(body + "\n")
        os.unlink(os.path.join(logs, "a.log"))
        msg, err, rc = run_once(self.dir, logs, extra={"format": "command",
                                                       "paths": [os.path.join(logs, "*.msg")]})
        self.assertEqual(rc, 0, err)
        m = msg[-1]["fields"]
        for k in ("command", "script", "schema", "table", "offset_days", "full_refresh"):
            self.assertEqual(m[k], log_fields[k], k)
        for k in ("inc_key", "inc_val", "inc_date"):
            self.assertNotIn(k, m)
            self.assertNotIn(k, log_fields)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--layout", default="single")
    ap.add_argument("--seed", type=int, default=1)
    a, rest = ap.parse_known_args()
    if not a.measure:
        unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
        return
    d = tempfile.mkdtemp(prefix="sbcorpus.")
    try:
        truth = rrgen.generate(d, a.runs, a.layout, a.seed)
        events, err, rc = run_once(d, os.path.join(d, "logs"))
        right, problems = compare(truth, events)
        print("layout %s: %d runs, %d events (%.3f per run), %d runs right, exit %d" %
              (a.layout, len(truth), len(events), len(events) / max(1, len(truth)), right, rc))
        for p in problems[:15]:
            print("  " + p)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
