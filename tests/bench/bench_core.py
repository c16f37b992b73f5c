#!/usr/bin/env python3
"""make bench: the core's speed and memory, with the targets beside them.

  throughput   file_in (JSON lines) -> route -> discard, ledger on, --once
  latency      testsrc paced at 10,000 events/s -> discard; p50/p99 of the
               time from sb_source_emit() to the event settled (ledger
               commit included), as the router measures it
  idle RSS     the daemon with one idle source, after start-up
  peak RSS     of the throughput run

Results are printed and written to bench-results.txt in the build tree.
"""
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
BIN = os.path.join(BUILD, "syncbridge")
ENV = dict(os.environ)
ENV.setdefault("SYNCBRIDGE_PLUGIN_PATH", "%s/plugins/.libs:%s/tests/plugins/.libs" % (BUILD, BUILD))
N = int(os.environ.get("SB_BENCH_EVENTS", "500000"))


def write_cfg(d, sources, extra=None):
    cfg = {"state_dir": os.path.join(d, "state"), "log": {"level": "info"},
           "limits": {"max_inflight": 20000},
           "sources": sources,
           "sinks": {"null": {"plugin": "discard", "batch_max": 1000}},
           "routes": {"r": {"sources": list(sources), "steps": ["null"]}}}
    cfg.update(extra or {})
    p = os.path.join(d, "syncbridge.json")
    with open(p, "w") as f:
        json.dump(cfg, f)
    return p


def run_once(cfg):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    r = subprocess.run([BIN, "--once", "-c", cfg], env=ENV, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("bench: syncbridge failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    m = re.search(r"finished: route r: (\d+) in, (\d+) done.*latency p50 (\d+)us p99 (\d+)us", r.stderr)
    if not m:
        sys.exit("bench: no summary line in: " + r.stderr[-2000:])
    return wall, int(m.group(2)), int(m.group(3)), int(m.group(4)), max(peak_kb, before)


def main():
    results = []
    d = tempfile.mkdtemp(prefix="sbbench.")
    try:
        # throughput
        inp = os.path.join(d, "runs.jsonl")
        with open(inp, "w") as f:
            for i in range(N):
                f.write(json.dumps({"event_id": "run-%08d" % i, "schema": "edw_prod", "table": "orders_%d" % (i % 97),
                                    "inc_key": "order_dt", "inc_val": "2026-11-23", "status": "succeeded",
                                    "td_count": 5120331, "hive_count": 5120331, "host": "hdp-edge-01"}) + "\n")
        cfg = write_cfg(d, {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id",
                                   "batch": 1024}})
        wall, done, p50, p99, peak_kb = run_once(cfg)
        if done != N:
            sys.exit("bench: %d of %d events done" % (done, N))
        results.append(("throughput, file_in -> discard, ledger on", "%.0f events/s" % (N / wall),
                        ">= 100000 events/s", N / wall >= 100000))
        results.append(("peak RSS during the throughput run", "%.1f MB" % (peak_kb / 1024.0), "(reported)", True))

        # latency at 10k/s
        d2 = tempfile.mkdtemp(dir=d)
        cfg = write_cfg(d2, {"paced": {"plugin": "testsrc", "count": 100000, "batch": 10, "rate": 10000}})
        wall, done, p50, p99, _ = run_once(cfg)
        results.append(("added latency p50 at 10,000 events/s", "%.2f ms" % (p50 / 1000.0), "(reported)", True))
        results.append(("added latency p99 at 10,000 events/s", "%.2f ms" % (p99 / 1000.0), "<= 20 ms", p99 <= 20000))

        # idle RSS
        d3 = tempfile.mkdtemp(dir=d)
        cfg = write_cfg(d3, {"idle": {"plugin": "testsrc", "count": 0}})
        p = subprocess.Popen([BIN, "-c", cfg], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        with open("/proc/%d/status" % p.pid) as f:
            rss_kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        results.append(("idle RSS", "%.1f MB" % (rss_kb / 1024.0), "<= 10 MB", rss_kb <= 10 * 1024))
    finally:
        subprocess.run(["rm", "-rf", d])

    lines = ["syncbridge core benchmark (%d cores, %s)" % (os.cpu_count(), time.strftime("%Y-%m-%d %H:%M")),
             "%-45s %-18s %-20s %s" % ("measure", "result", "target", "")]
    ok = True
    for name, val, target, met in results:
        lines.append("%-45s %-18s %-20s %s" % (name, val, target, "met" if met else "MISSED"))
        ok &= met
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(BUILD, "bench-results.txt"), "w") as f:
        f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
