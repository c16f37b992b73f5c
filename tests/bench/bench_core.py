#!/usr/bin/env python3
"""make bench: the core's speed and memory, with the targets beside them.

  throughput   file_in (JSON lines) -> route -> discard, ledger on, --once
  latency      testsrc paced at 10,000 events/s -> discard; p50/p99 of the
               time from sb_source_emit() to the event settled (ledger
               commit included), as the router measures it
  idle RSS     the daemon with one idle source, after start-up
  peak RSS     of the throughput run
  issue 19     file_in -> discard with ledger.keep_payload always and
               until_settled: lines/s, CPU seconds per 1M lines and the
               ledger's bytes per settled event, in interleaved rounds
               (SB_BENCH_ROUNDS, 3) of issue 19's 1,000,000 lines
               (SB_BENCH_PEER_EVENTS) with Fluent Bit's tail -> null (DB and
               filesystem storage) when FLUENT_BIT names its binary, and a
               ratio per line of issue 19's table; skipped, and said so,
               without it
  issue 19 ->  file_in -> pubsub (1 worker, then 2 workers) against
  HTTP         tests/bench/pubsub_receiver on loopback (auth none), with
               Fluent Bit's tail -> http (json_lines) to the same receiver
               when FLUENT_BIT is set: lines/s, CPU seconds per 1M lines
               and the pubsub step threads' CPU per event (the sb-step1-*
               threads, from /proc/PID/task), in interleaved rounds
               (SB_BENCH_HTTP_EVENTS lines, default SB_BENCH_PEER_EVENTS)

  - pubsub with an ordering key per table (97 of them, so a batch of 1000
    events makes 97 publish requests) against a receiver that answers each
    after 20 ms, as Pub/Sub's round trip: lines/s with max_inflight 1, 4
    and 16 (SB_BENCH_KEYS_EVENTS lines, default 10,000)

SB_BENCH_ONLY=http runs the -> HTTP part alone, SB_BENCH_ONLY=discard the
issue-19 -> discard part, SB_BENCH_ONLY=keys the
ordering-key part (quick runs while working on the sink). Results are printed and written to bench-results.txt in the build tree.
"""
import json
import os
import socket
import statistics
import urllib.request
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
BIN = os.path.join(BUILD, "syncbridge")
ENV = dict(os.environ)


def libtool_wrapper(path):
    """Whether path is a script (libtool's wrapper), not the program."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


# In a build tree BIN is libtool's wrapper script, which costs about 75 ms
# of CPU per start (a shell, sed and ls) that an installed syncbridge does
# not: run the program it wraps, with the library path the wrapper sets.
if libtool_wrapper(BIN) and os.path.exists(os.path.join(BUILD, ".libs", "syncbridge")):
    BIN = os.path.join(BUILD, ".libs", "syncbridge")
    ENV["LD_LIBRARY_PATH"] = os.path.join(os.path.abspath(BUILD), ".libs") + \
        (":" + ENV["LD_LIBRARY_PATH"] if ENV.get("LD_LIBRARY_PATH") else "")
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


ROUNDS = int(os.environ.get("SB_BENCH_ROUNDS", "3"))
FLUENT_BIT = os.environ.get("FLUENT_BIT", "")

# Fluent Bit in its durable mode (tail with a DB, filesystem chunks) into
# null: the mode comparable to the ledger. Written here after the configs
# that came with the release binary measured in issue 19; the project does
# not need Fluent Bit, the bench only uses it when FLUENT_BIT is set.
FB_CONF = """[SERVICE]
    Flush        1
    Grace        5
    Log_Level    warn
    Parsers_File {state}/parsers.conf
    HTTP_Server  On
    HTTP_Listen  127.0.0.1
    HTTP_Port    {port}
    storage.path {state}/storage
    storage.sync normal
    storage.checksum off

[INPUT]
    Name           tail
    Path           {input}
    Parser         json
    Read_from_Head On
    DB             {state}/tail.db
    storage.type   filesystem

[OUTPUT]
    Name  null
    Match *
"""
FB_PARSERS = """[PARSER]
    Name   json
    Format json
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid):
    """User + system CPU seconds of a running process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def fb_start(d, inp):
    os.makedirs(d)
    port = free_port()
    with open(os.path.join(d, "parsers.conf"), "w") as f:
        f.write(FB_PARSERS)
    conf = os.path.join(d, "fb.conf")
    with open(conf, "w") as f:
        f.write(FB_CONF.format(state=d, port=port, input=inp))
    p = subprocess.Popen([FLUENT_BIT, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, port


def fb_stop(p):
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)


def fb_run(d, inp, n):
    """Fluent Bit until its output has counted all n records (its exit comes
    a flush interval later): wall time from its start, CPU time then."""
    t0 = time.monotonic()
    p, port = fb_start(d, inp)
    try:
        while time.monotonic() - t0 < 600:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/metrics" % port, timeout=2) as r:
                    m = json.load(r)
                if m["output"]["null.0"]["proc_records"] >= n:
                    return time.monotonic() - t0, proc_cpu(p.pid)
            except (OSError, ValueError, KeyError):
                pass
            if p.poll() is not None:
                sys.exit("bench: fluent-bit exited (%d)" % p.returncode)
            time.sleep(0.02)
        sys.exit("bench: fluent-bit did not finish")
    finally:
        fb_stop(p)


def sb_run(d, inp, n, keep):
    """syncbridge --once: wall, CPU (wait4) and the ledger's bytes per event."""
    os.makedirs(d)
    cfg = write_cfg(d, {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id",
                               "batch": 1024}}, {"ledger": {"keep_payload": keep}})
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, done, _, _, _ = run_once(cfg)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done != n:
        sys.exit("bench: %d of %d events done" % (done, n))
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    st = os.path.join(d, "state")
    size = sum(os.path.getsize(os.path.join(st, f)) for f in os.listdir(st) if f.startswith("ledger.db"))
    return wall, cpu, size / n


def med_range(xs, fmt):
    return "%s (%s-%s)" % (fmt % statistics.median(xs), fmt % min(xs), fmt % max(xs))



def fluent_bit_rows(results, fr, n, what):
    """Fluent Bit's rows of one comparison from its (wall s, CPU s) runs over
    n lines; (median lines/s, median CPU s per 1M lines), or None with a
    "skipped" row when there were no runs (FLUENT_BIT unset or not there)."""
    if not fr:
        why = "(%s is not executable)" % FLUENT_BIT if FLUENT_BIT else "(set FLUENT_BIT)"
        results.append(("Fluent Bit %s side by side" % what, "skipped", why, True))
        return None
    results.append(("Fluent Bit %s (filesystem): lines/s" % what, med_range([n / w for w, _ in fr], "%.0f"),
                    "(peer)", True))
    results.append(("  CPU s per 1M lines", med_range([c * 1e6 / n for _, c in fr], "%.2f"), "(peer)", True))
    return statistics.median([n / w for w, _ in fr]), statistics.median([c * 1e6 / n for _, c in fr])

def warm(path):
    """Read the file whole, so that it is in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def measured(run, d, inp, *args):
    """run(d, inp, *args) with the input file in the page cache, then d
    removed: each run starts with the same page cache. Fluent Bit's tail
    drops the file it has read from the cache (posix_fadvise DONTNEED), so
    the run after it read the input from disk, and copying it cost that run
    up to a second of system CPU per 1M lines (the first round's runs, after
    the input was written, did not pay it). And without the removal the
    earlier runs' ledgers and chunks were still dirty in the cache (their
    writeback made later rounds dearer, syncbridge's most, since its ledger
    writes the most)."""
    warm(inp)
    try:
        return run(d, inp, *args)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def side_by_side(d, inp, n, results):
    """Issue 19: interleaved rounds of syncbridge (both keep_payload modes)
    and Fluent Bit on the same input of n lines."""
    runs = {"always": [], "until_settled": [], "fb": []}
    fb = FLUENT_BIT and os.access(FLUENT_BIT, os.X_OK)
    for r in range(ROUNDS):
        for keep in ("always", "until_settled"):
            runs[keep].append(measured(sb_run, os.path.join(d, "sb-%s-%d" % (keep, r)), inp, n, keep))
        if fb:
            runs["fb"].append(measured(fb_run, os.path.join(d, "fb-%d" % r), inp, n))
    print("issue 19: %d interleaved rounds of %d lines, load average %.2f %.2f %.2f at the end" %
          ((ROUNDS, n) + os.getloadavg()))
    for keep in ("always", "until_settled"):
        rs = runs[keep]
        results.append(("file_in -> discard, keep_payload %s: lines/s" % keep,
                        med_range([n / w for w, _, _ in rs], "%.0f"), "(reported)", True))
        results.append(("  CPU s per 1M lines", med_range([c * 1e6 / n for _, c, _ in rs], "%.2f"), "(reported)",
                        True))
        target = 150 if keep == "until_settled" else None
        b = statistics.median([x for _, _, x in rs])
        results.append(("  ledger bytes per settled event", med_range([x for _, _, x in rs], "%.0f"),
                        "<= %d" % target if target else "(reported)", b <= target if target else True))
    peer = fluent_bit_rows(results, fb and runs["fb"], n, "tail -> null")
    if not peer:
        return
    fb_rate, fb_cpu = peer
    for keep in ("always", "until_settled"):
        rs = runs[keep]
        rate = statistics.median([n / w for w, _, _ in rs]) / fb_rate
        cpu = statistics.median([c * 1e6 / n for _, c, _ in rs]) / fb_cpu
        results.append(("-> null lines/s / Fluent Bit's (%s)" % keep, "%.2f" % rate, ">= 1.0", rate >= 1.0))
        results.append(("-> null CPU / Fluent Bit's (%s)" % keep, "%.2fx" % cpu, "<= 1.0x", cpu <= 1.0))


FB_HTTP_CONF = FB_CONF.replace("""[OUTPUT]
    Name  null
    Match *
""", """[OUTPUT]
    Name   http
    Match  *
    Host   127.0.0.1
    Port   {out_port}
    URI    /ingest
    Format json_lines
""")
# Issue 19's comparisons beside Fluent Bit run on the issue's input size
PEER_N = int(os.environ.get("SB_BENCH_PEER_EVENTS", "1000000"))
HTTP_N = int(os.environ.get("SB_BENCH_HTTP_EVENTS", str(PEER_N)))


def receiver_start(delay_ms=0):
    """tests/bench/pubsub_receiver on a free loopback port, answering after
    delay_ms: (process, port)."""
    p = subprocess.Popen([os.path.join(BUILD, "tests", "bench", "pubsub_receiver"), "0", str(delay_ms)],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.match(r"port (\d+)", line)
    if not m:
        p.kill()
        sys.exit("bench: pubsub_receiver did not start: %r" % line)
    return p, int(m.group(1))


def receiver_count(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/count" % port, timeout=5) as r:
        return int(r.read())


def receiver_stop(p):
    p.kill()
    p.wait(timeout=30)


def task_cpu(pid):
    """{tid: (thread name, user + system CPU seconds)} of a running process."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        out[tid] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / tick)
    return out


def sb_http_run(d, inp, n, workers, sink_extra=None, delay_ms=0):
    """syncbridge --once, file_in -> pubsub (with sink_extra's options) to a
    fresh receiver answering after delay_ms: wall, CPU (wait4), and the CPU
    of the pubsub step's threads (sampled from /proc every 20 ms until the
    exit; the last sample misses at most 20 ms)."""
    os.makedirs(d)
    rp, port = receiver_start(delay_ms)
    try:
        sink = {"plugin": "pubsub", "topic": "projects/bench/topics/t", "body": "json", "auth": "none",
                "endpoint": "http://127.0.0.1:%d" % port, "batch_max": 1000, "workers": workers}
        sink.update(sink_extra or {})
        cfg = write_cfg(d, {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id",
                                   "batch": 1024}},
                        {"sinks": {"ps": sink}, "routes": {"r": {"sources": ["in"], "steps": ["ps"]}}})
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        p = subprocess.Popen([BIN, "--once", "-c", cfg], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        threads = {}
        while p.poll() is None:
            threads.update(task_cpu(p.pid))
            time.sleep(0.02)
        wall = time.monotonic() - t0
        err = p.stderr.read()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            sys.exit("bench: syncbridge failed (%d): %s" % (p.returncode, err[-2000:]))
        m = re.search(r"finished: route r: (\d+) in, (\d+) done", err)
        got = receiver_count(port)
        if not m or int(m.group(2)) != n or got != n:
            sys.exit("bench: %s of %d events done, the receiver counted %d: %s" %
                     (m.group(2) if m else "?", n, got, err[-2000:]))
    finally:
        receiver_stop(rp)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    step = sum(c for name, c in threads.values() if name.startswith("sb-step1-"))
    return wall, cpu, step


def fb_http_run(d, inp, n):
    """Fluent Bit tail -> http to a fresh receiver, until the receiver has
    counted n records: wall time from its start, CPU time then."""
    os.makedirs(d)
    rp, out_port = receiver_start()
    try:
        port = free_port()
        with open(os.path.join(d, "parsers.conf"), "w") as f:
            f.write(FB_PARSERS)
        conf = os.path.join(d, "fb.conf")
        with open(conf, "w") as f:
            f.write(FB_HTTP_CONF.format(state=d, port=port, input=inp, out_port=out_port))
        t0 = time.monotonic()
        p = subprocess.Popen([FLUENT_BIT, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.monotonic() - t0 < 600:
                if receiver_count(out_port) >= n:
                    return time.monotonic() - t0, proc_cpu(p.pid)
                if p.poll() is not None:
                    sys.exit("bench: fluent-bit exited (%d)" % p.returncode)
                time.sleep(0.02)
            sys.exit("bench: fluent-bit did not finish")
        finally:
            fb_stop(p)
    finally:
        receiver_stop(rp)


def http_side_by_side(d, inp, n, results):
    """Issue 19's -> HTTP line: interleaved rounds of pubsub with 1 and 2
    workers and Fluent Bit's http output, each against its own receiver."""
    runs = {1: [], 2: [], "fb": []}
    fb = FLUENT_BIT and os.access(FLUENT_BIT, os.X_OK)
    for r in range(ROUNDS):
        for w in (1, 2):
            runs[w].append(measured(sb_http_run, os.path.join(d, "http-sb%d-%d" % (w, r)), inp, n, w))
        if fb:
            runs["fb"].append(measured(fb_http_run, os.path.join(d, "http-fb-%d" % r), inp, n))
    print("issue 19 -> HTTP: %d interleaved rounds of %d lines, load average %.2f %.2f %.2f at the end" %
          ((ROUNDS, n) + os.getloadavg()))
    for w in (1, 2):
        rs = runs[w]
        results.append(("file_in -> pubsub, %d worker%s: lines/s" % (w, "s" if w > 1 else ""),
                        med_range([n / x for x, _, _ in rs], "%.0f"), "(reported)", True))
        results.append(("  CPU s per 1M lines", med_range([c * 1e6 / n for _, c, _ in rs], "%.2f"), "(reported)",
                        True))
        st = statistics.median([s * 1e6 / n for _, _, s in rs])
        results.append(("  pubsub step threads, CPU us per event", med_range([s * 1e6 / n for _, _, s in rs], "%.2f"),
                        "<= 2.0", st <= 2.0))
    peer = fluent_bit_rows(results, fb and runs["fb"], n, "tail -> http")
    if not peer:
        return
    fb_rate, fb_cpu = peer
    for w in (1, 2):
        rs = runs[w]
        rate = statistics.median([n / x for x, _, _ in rs]) / fb_rate
        cpu = statistics.median([c * 1e6 / n for _, c, _ in rs]) / fb_cpu
        results.append(("-> HTTP lines/s / Fluent Bit's (%d worker%s)" % (w, "s" if w > 1 else ""), "%.2f" % rate,
                        ">= 1.0" if w == 2 else "(reported)", rate >= 1.0 or w == 1))
        results.append(("-> HTTP CPU / Fluent Bit's (%d worker%s)" % (w, "s" if w > 1 else ""), "%.2fx" % cpu,
                        "<= 1.5x", cpu <= 1.5))


KEYS_N = int(os.environ.get("SB_BENCH_KEYS_EVENTS", "10000"))
KEYS_DELAY_MS = 20


def keys_in_flight(d, results):
    """pubsub with an ordering key per table (97 tables, so a batch of 1000
    makes 97 requests) against a receiver that answers after 20 ms, a
    round trip to Pub/Sub: lines/s with max_inflight 1 (one request at a
    time, as before), 4 (the default) and 16, interleaved, 1 worker."""
    inp = os.path.join(d, "runs-keys.jsonl")
    write_input(inp, KEYS_N)
    runs = {1: [], 4: [], 16: []}
    for r in range(ROUNDS):
        for k in runs:
            runs[k].append(sb_http_run(os.path.join(d, "keys-%d-%d" % (k, r)), inp, KEYS_N, 1,
                                       {"ordering_key": "${schema}.${table}", "max_inflight": k}, KEYS_DELAY_MS))
    print("pubsub, ordering key per table, %d ms per publish: %d interleaved rounds of %d lines, load average "
          "%.2f %.2f %.2f at the end" % ((KEYS_DELAY_MS, ROUNDS, KEYS_N) + os.getloadavg()))
    for k, rs in runs.items():
        results.append(("pubsub, 97 ordering keys, 20 ms RTT, max_inflight %d: lines/s" % k,
                        med_range([KEYS_N / x for x, _, _ in rs], "%.0f"),
                        "(baseline: one at a time)" if k == 1 else "(reported)", True))
    gain = statistics.median([KEYS_N / x for x, _, _ in runs[4]]) / statistics.median([KEYS_N / x for x, _, _ in runs[1]])
    results.append(("  max_inflight 4 / max_inflight 1", "%.2fx" % gain, "> 1.5 (requests in flight together)",
                    gain > 1.5))


def write_input(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"event_id": "run-%08d" % i, "schema": "edw_prod", "table": "orders_%d" % (i % 97),
                                "inc_key": "order_dt", "inc_val": "2026-11-23", "status": "succeeded",
                                "td_count": 5120331, "hive_count": 5120331, "host": "hdp-edge-01"}) + "\n")


def idle_rss_fb(d, results, sb_rss_kb):
    if not (FLUENT_BIT and os.access(FLUENT_BIT, os.X_OK)):
        return
    empty = os.path.join(d, "empty.jsonl")
    open(empty, "w").close()
    p, _ = fb_start(os.path.join(d, "fb-idle"), empty)
    time.sleep(2.0)
    rss = proc_rss_kb(p.pid)
    fb_stop(p)
    results.append(("Fluent Bit idle RSS (tail + null)", "%.1f MB" % (rss / 1024.0), "(peer)", True))
    results.append(("idle RSS / Fluent Bit's", "%.2fx" % (sb_rss_kb / rss), "(reported)", True))


def main():
    results = []
    d = tempfile.mkdtemp(prefix="sbbench.")
    try:
        if os.environ.get("SB_BENCH_ONLY") == "http":
            inp = os.path.join(d, "runs-http.jsonl")
            write_input(inp, HTTP_N)
            http_side_by_side(d, inp, HTTP_N, results)
            return report(results)
        if os.environ.get("SB_BENCH_ONLY") == "discard":
            inp = os.path.join(d, "runs-peer.jsonl")
            write_input(inp, PEER_N)
            side_by_side(d, inp, PEER_N, results)
            return report(results)
        if os.environ.get("SB_BENCH_ONLY") == "keys":
            keys_in_flight(d, results)
            return report(results)
        # throughput
        inp = os.path.join(d, "runs.jsonl")
        write_input(inp, N)
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
        idle_rss_fb(d, results, rss_kb)

        if PEER_N != N:
            os.remove(inp)  # not beside the next input in the page cache
            inp = os.path.join(d, "runs-peer.jsonl")
            write_input(inp, PEER_N)
        side_by_side(d, inp, PEER_N, results)
        if HTTP_N != PEER_N:
            os.remove(inp)
            inp = os.path.join(d, "runs-http.jsonl")
            write_input(inp, HTTP_N)
        http_side_by_side(d, inp, HTTP_N, results)
        keys_in_flight(d, results)
    finally:
        subprocess.run(["rm", "-rf", d])
    return report(results)


def report(results):
    lines = ["syncbridge core benchmark (%d cores, %s)" % (os.cpu_count(), time.strftime("%Y-%m-%d %H:%M")),
             "%-50s %-26s %-20s %s" % ("measure", "result", "target", "")]
    ok = True
    for name, val, target, met in results:
        lines.append("%-50s %-26s %-20s %s" % (name, val, target, "met" if met else "MISSED"))
        ok &= met
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(BUILD, "bench-results.txt"), "w") as f:
        f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
