#!/usr/bin/env python3
"""make bench-versus BASE=DIR: the core's numbers, this build beside another.

"No worse than before" for a change to the core is only shown by running
both builds on the same input, taking turns, on the same machine at the
same time: the machine's load moves more than most changes do. For each of
SB_BENCH_ROUNDS rounds (3), the base build (BASE, a build tree of an earlier
commit with its own plugins) and this one run, in an order that alternates:

  throughput   500,000 JSON lines, file_in -> discard, ledger on, --once:
               events/s and CPU seconds (wait4)
  latency      testsrc paced at 10,000 events/s -> discard: p99 from
               sb_source_emit() to settled, as the router reports it
  idle RSS     one idle source, 2 s after start

Then, when valgrind is installed, the one measure the machine's load does
not move: instructions per event of the throughput run (100,000 lines,
cachegrind, once per build).

Printed: median (range) per build and the ratio new / base.
"""
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402

ROUNDS = int(os.environ.get("SB_BENCH_ROUNDS", "3"))
N = bench_core.N


def use(build):
    """Point bench_core at one build tree and its plugins."""
    bench_core.BIN = os.path.join(build, "syncbridge")
    bench_core.ENV["SYNCBRIDGE_PLUGIN_PATH"] = "%s/plugins/.libs:%s/tests/plugins/.libs" % (build, build)


def measure(d, inp):
    out = {}
    cfg = bench_core.write_cfg(tempfile.mkdtemp(dir=d), {
        "in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id", "batch": 1024}})
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, done, _, _, _ = bench_core.run_once(cfg)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done != N:
        sys.exit("bench: %d of %d events done" % (done, N))
    out["throughput, events/s"] = N / wall
    out["CPU s per %dk events" % (N // 1000)] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cfg = bench_core.write_cfg(tempfile.mkdtemp(dir=d), {
        "paced": {"plugin": "testsrc", "count": 100000, "batch": 10, "rate": 10000}})
    _, _, _, p99, _ = bench_core.run_once(cfg)
    out["latency p99 at 10k/s, ms"] = p99 / 1000.0
    cfg = bench_core.write_cfg(tempfile.mkdtemp(dir=d), {"idle": {"plugin": "testsrc", "count": 0}})
    p = subprocess.Popen([bench_core.BIN, "-c", cfg], env=bench_core.ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    with open("/proc/%d/status" % p.pid) as f:
        out["idle RSS, MB"] = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024.0
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    return out


def instructions_per_event(d, build, inp):
    """cachegrind's instruction count of a --once run over inp, per line."""
    use(build)
    n = sum(1 for _ in open(inp))
    cfg = bench_core.write_cfg(tempfile.mkdtemp(dir=d), {
        "in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id", "batch": 1024}})
    r = subprocess.run([os.path.join(build, "libtool"), "--mode=execute", "valgrind", "--tool=cachegrind",
                        "--cache-sim=no", "--cachegrind-out-file=/dev/null", bench_core.BIN, "--once", "-c", cfg],
                       env=bench_core.ENV, capture_output=True, text=True, cwd=build, timeout=1800)
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode != 0 or not m:
        sys.exit("bench: cachegrind run failed: " + r.stderr[-2000:])
    return int(m.group(1).replace(",", "")) / n


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench_versus.py BASE_BUILD_DIR (this build: SB_TOP_BUILDDIR)")
    builds = {"base": os.path.abspath(sys.argv[1]), "new": os.path.abspath(bench_core.BUILD)}
    for name, b in builds.items():
        if not os.access(os.path.join(b, "syncbridge"), os.X_OK):
            sys.exit("bench: no syncbridge binary in %s (%s)" % (b, name))
    d = tempfile.mkdtemp(prefix="sbversus.")
    inp = os.path.join(d, "runs.jsonl")
    with open(inp, "w") as f:
        for i in range(N):
            f.write('{"event_id": "run-%08d", "schema": "edw_prod", "table": "orders_%d", "inc_key": "order_dt",'
                    ' "inc_val": "2026-11-23", "status": "succeeded", "td_count": 5120331, "hive_count": 5120331,'
                    ' "host": "hdp-edge-01"}\n' % (i, i % 97))
    got = {"base": [], "new": []}
    for r in range(ROUNDS):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        for name in order:
            use(builds[name])
            got[name].append(measure(d, inp))
            print("round %d %s: %s" % (r + 1, name, ", ".join("%s %.2f" % kv for kv in got[name][-1].items())),
                  flush=True)
    print("\n| measure | base, median (range) | new, median (range) | new / base |\n|---|---|---|---|")
    for k in got["new"][0]:
        b = [x[k] for x in got["base"]]
        n = [x[k] for x in got["new"]]
        print("| %s | %.2f (%.2f–%.2f) | %.2f (%.2f–%.2f) | %.2f |" % (
            k, statistics.median(b), min(b), max(b), statistics.median(n), min(n), max(n),
            statistics.median(n) / statistics.median(b)))
    if subprocess.run(["sh", "-c", "command -v valgrind"], capture_output=True).returncode == 0:
        small = os.path.join(d, "small.jsonl")
        with open(inp) as src, open(small, "w") as dst:
            for i, line in enumerate(src):
                if i == 100000:
                    break
                dst.write(line)
        ir = {name: instructions_per_event(d, b, small) for name, b in builds.items()}
        print("| instructions per event (cachegrind, 100,000 lines) | %.0f | %.0f | %.3f |" % (
            ir["base"], ir["new"], ir["new"] / ir["base"]))
    else:
        print("instructions per event: skipped (valgrind is not installed)")
    with open("/proc/loadavg") as f:
        print("load average at the end: %s" % " ".join(f.read().split()[:3]))
    subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
