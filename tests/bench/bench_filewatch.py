#!/usr/bin/env python3
"""make bench, filewatch section: Run Replicator logs as the scripts write
them (tests/scripts/rrgen.py), read once (--once) by the real daemon into
the discard sink.

  one big file     SB_BENCH_RR_RUNS (20,000) runs in one log: runs/s
  100,000 files    SB_BENCH_RR_FILES (100,000) logs of one finished run each,
                   with the open-file limit at 1,024 (ulimit -n): files/s,
                   events == runs, exit status 0

Each line gives the wall time of the daemon from start to exit (start-up,
reading, the ledger commit of every event), its peak RSS (getrusage of
the child: ru_maxrss), and the targets of issue 13 beside them (first
pass >= 5,000 files/s, peak RSS <= 64 MB). Appended to bench-results.txt
in the build tree. Not a test: nothing here runs under `make check`.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
SRC = os.environ.get("SB_TOP_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "scripts"))
import rrgen  # noqa: E402

BIN = os.path.join(BUILD, "syncbridge")
ENV = dict(os.environ, TZ="UTC")
ENV.setdefault("SYNCBRIDGE_PLUGIN_PATH", "%s/plugins/.libs:%s/tests/plugins/.libs" % (BUILD, BUILD))
N_RUNS = int(os.environ.get("SB_BENCH_RR_RUNS", "20000"))
N_FILES = int(os.environ.get("SB_BENCH_RR_FILES", "100000"))
NOFILE = 1024


def log(msg):
    sys.stderr.write("bench_filewatch: %s\n" % msg)
    sys.stderr.flush()


def once(work, logs, nofile=None):
    """Run the daemon once over logs/*.log into discard: (seconds, peak RSS KB, exit status, events)."""
    cfg = {"state_dir": os.path.join(work, "state"), "log": {"level": "warn"},
           "sources": {"rr": {"plugin": "filewatch", "paths": [os.path.join(logs, "*.log")], "host": "bench",
                              "file_time_pattern": "_([0-9]{8}_[0-9]{6})\\.log$"}},
           "sinks": {"out": {"plugin": "discard"}},
           "routes": {"r": {"sources": ["rr"], "steps": ["out"]}}}
    path = os.path.join(work, "syncbridge.json")
    with open(path, "w") as f:
        json.dump(cfg, f)

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    errpath = os.path.join(work, "daemon.err")
    with open(errpath, "w") as err:
        t0 = time.monotonic()
        p = subprocess.Popen([BIN, "--once", "-c", path], stdout=subprocess.DEVNULL, stderr=err, env=ENV,
                             preexec_fn=limit)
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    events = None
    r = subprocess.run([BIN, "--state-dir", os.path.join(work, "state"), "runs", "list", "--json", "--limit",
                        "10000000"], capture_output=True, text=True, env=ENV)
    if r.returncode == 0:
        events = len(json.loads(r.stdout))
    if rc != 0:
        with open(errpath) as f:
            log("exit %d: %s" % (rc, f.read()[-2000:]))
    return secs, ru.ru_maxrss, rc, events, ru.ru_utime + ru.ru_stime


def main():
    if not os.path.exists(BIN):
        print("bench_filewatch: %s is missing; section skipped" % BIN)
        return 0
    lines = []
    rc = 0
    top = tempfile.mkdtemp(prefix="sbbench-fw.")
    try:
        big = os.path.join(top, "big")
        log("generating %d runs in one log" % N_RUNS)
        rrgen.generate(big, N_RUNS, "single", seed=7)
        secs, rss, st, events, cpu = once(big, os.path.join(big, "logs"))
        lines.append("filewatch one file: %d runs in %.2f s = %.0f runs/s (CPU %.2f s), peak RSS %.1f MB, events %s, "
                     "exit %d" % (N_RUNS, secs, N_RUNS / secs, cpu, rss / 1024.0, events, st))
        rc |= st != 0 or events != N_RUNS
        shutil.rmtree(big, ignore_errors=True)

        many = os.path.join(top, "many")
        log("generating %d logs of one run each" % N_FILES)
        rrgen.generate(many, N_FILES, "per-run", seed=8)
        secs, rss, st, events, cpu = once(many, os.path.join(many, "logs"), nofile=NOFILE)
        ok = st == 0 and events == N_FILES and N_FILES / secs >= 5000 and rss <= 64 * 1024
        lines.append("filewatch %d files (ulimit -n %d): %.2f s = %.0f files/s (target >= 5000; CPU %.2f s), "
                     "peak RSS %.1f MB (target <= 64), events %s, exit %d: %s"
                     % (N_FILES, NOFILE, secs, N_FILES / secs, cpu, rss / 1024.0, events, st,
                        "ok" if ok else "MISSED"))
        rc |= not ok
    finally:
        shutil.rmtree(top, ignore_errors=True)
    for line in lines:
        print(line)
    with open(os.path.join(BUILD, "bench-results.txt"), "a") as f:
        f.write("\n".join(lines) + "\n")
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
