#!/usr/bin/env python3
"""make bench, on-prem section: the real daemon between librdkafka's mock
cluster or Run Replicator logs and the Google APIs fake's Pub/Sub, with
the baselines measured beside it on the same machine (docs/benchmarks.md).

  baselines    kcat's consume rate from the mock cluster; the fake's publish
               ceiling (one http.client loop posting 1000-message requests
               shaped like the sink's)
  throughput   kafka -> discard; kafka -> pubsub (1 worker, then more
               workers and larger batches); filewatch -> pubsub. Sustained
               rate: events settled, from the first to the last, read from
               the admin endpoint's /metrics every 100 ms
  latency      paced at 1,000 events/s, end to end: the producer's
               time.time_ns() (in the Kafka message, or when the writer
               wrote the line that finishes a run) to the fake's publishTime
               of the message (set when it accepted the publish request,
               just before it answers)
  idle RSS     kafka + filewatch + pubsub configured and idle

Printed with the target or baseline beside each, and appended to
bench-results.txt in the build tree (bench_core.py writes it first).
"""
import base64
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
SRC = os.environ.get("SB_TOP_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.path.join(BUILD, "syncbridge")
MOCK = os.path.join(BUILD, "tests", "kafka", "mockcluster")
FAKE = os.path.join(SRC, "tests", "fake", "gfake.py")
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
ENV = dict(os.environ)
ENV.setdefault("SYNCBRIDGE_PLUGIN_PATH", "%s/plugins/.libs:%s/tests/plugins/.libs" % (BUILD, BUILD))
N_KAFKA = int(os.environ.get("SB_BENCH_KAFKA_EVENTS", "100000"))
N_RUNS = int(os.environ.get("SB_BENCH_RUNS", "20000"))
PARTITIONS = 8
LAT_SECONDS = float(os.environ.get("SB_BENCH_LATENCY_SECONDS", "10"))
LAT_RATE = 1000
TOKEN = "fake-static-token"
PROJECT = "bench"


def log(msg):
    sys.stderr.write("bench_onprem: %s\n" % msg)
    sys.stderr.flush()


def wait_for(pred, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for " + what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def rfc3339_ns(s):
    """publishTime ("2026-11-24T16:32:23.123456Z") as ns since the epoch."""
    head, frac = s.rstrip("Z").split(".")
    dt = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 10**9 + int((frac + "000000000")[:9])


# ---- the fake ----------------------------------------------------------------
class Fake:
    def __init__(self, d):
        port_file = os.path.join(d, "fake.port")
        self.err = open(os.path.join(d, "fake.log"), "w")
        self.proc = subprocess.Popen([sys.executable, FAKE, "--port", "0", "--port-file", port_file, "--quiet"],
                                     stdout=self.err, stderr=self.err)
        wait_for(lambda: os.path.exists(port_file), 15, "the fake's port file")
        with open(port_file) as f:
            self.port = int(f.read().strip())
        self.base = "http://127.0.0.1:%d" % self.port

    def call(self, method, path, body=None, auth=True):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        hdrs = {"Content-Type": "application/json"}
        if auth:
            hdrs["Authorization"] = "Bearer " + TOKEN
        c.request(method, path, json.dumps(body).encode() if body is not None else None, hdrs)
        r = c.getresponse()
        raw = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError("fake: %s %s: %d %s" % (method, path, r.status, raw[:300]))
        return json.loads(raw) if raw else None

    def topic(self, name):
        self.call("PUT", "/v1/projects/%s/topics/%s" % (PROJECT, name), {})
        return "projects/%s/topics/%s" % (PROJECT, name)

    def messages(self, topic):
        return self.call("GET", "/_fake/pubsub/messages?topic=" + urllib.parse.quote(topic), auth=False)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.err.close()


def fake_ceiling(fake, topic, nreq=40):
    """messages/s one client achieves posting 1000-message requests shaped
    like the sink's (command as data, event_id/schema/table/host attributes)."""
    msgs = []
    for i in range(1000):
        cmd = "sh /etl/run_replicator.sh edw_prod orders_%d order_dt 20261123 2" % (i % 97)
        msgs.append({"data": base64.b64encode(cmd.encode()).decode(),
                     "attributes": {"event_id": "kafka:tput:%d:%d" % (i % 8, i), "schema": "edw_prod",
                                    "table": "orders_%d" % (i % 97), "host": "hdp-edge-01"}})
    body = json.dumps({"messages": msgs}, separators=(",", ":")).encode()
    c = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=60)
    hdrs = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}
    path = "/v1/%s:publish" % topic
    best = 0.0
    for _ in range(2):
        t0 = time.monotonic()
        for _ in range(nreq):
            c.request("POST", path, body, hdrs)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError("fake publish: %d" % r.status)
        best = max(best, nreq * 1000 / (time.monotonic() - t0))
    c.close()
    return best


# ---- the mock cluster -----------------------------------------------------------
class MockCluster:
    def __init__(self, topics):
        args = [MOCK, "-b", "3"]
        for t, n in topics:
            args += ["-t", "%s:%d" % (t, n)]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, bufsize=1 << 16)
        line = self.p.stdout.readline().strip()
        assert line.startswith("BOOTSTRAP="), line
        self.bootstrap = line.split("=", 1)[1]

    def send(self, text):
        self.p.stdin.write(text)
        self.p.stdin.flush()

    def sync(self):
        self.send("SYNC\n")
        ok = self.p.stdout.readline().split()
        if not ok or ok[0] != "OK" or ok[2] != "0":
            raise RuntimeError("mockcluster: %s" % ok)
        return int(ok[1])

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=20)


def kafka_payload(i, sent_ns=0):
    """~300 bytes: a Run Replicator result as JSON, the command included."""
    t = "orders_%d" % (i % 97)
    d = {"schema": "edw_prod", "table": t, "status": "succeeded", "run_date": "2026-11-23",
         "command": "sh /etl/run_replicator.sh edw_prod %s order_dt 20261123 2" % t,
         "td_count": 5120331, "hive_count": 5120331, "host": "hdp-edge-01",
         "started_at": "2026-11-23T02:00:00Z", "finished_at": "2026-11-23T02:14:09Z", "seq": i,
         "sent_ns": sent_ns}
    s = json.dumps(d, separators=(",", ":"))
    return s[:-1] + ',"pad":"%s"}' % ("x" * max(0, 290 - len(s)))


def kcat_rate(bootstrap, topic, n):
    """kcat's sustained consume rate: messages/s from its first output to the
    last message (so its start-up is not counted, as for the daemon)."""
    p = subprocess.Popen([KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    count, t_first, first_count = 0, None, 0
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        count += b.count(b"\n")
        if t_first is None:
            t_first, first_count = time.monotonic(), count
    t_end = time.monotonic()
    p.wait()
    if count != n:
        raise RuntimeError("kcat read %d of %d messages" % (count, n))
    return (count - first_count) / (t_end - t_first)


# ---- the daemon -------------------------------------------------------------------
class Daemon:
    def __init__(self, d, sources, sinks, routes, admin=True):
        os.makedirs(d, exist_ok=True)
        self.port = free_port() if admin else None
        cfg = {"state_dir": os.path.join(d, "state"), "log": {"level": "info"},
               "limits": {"max_inflight": 20000},
               "sources": sources, "sinks": sinks, "routes": routes}
        if admin:
            cfg["admin"] = {"enabled": True, "bind": "127.0.0.1", "port": self.port}
        self.cfg = os.path.join(d, "syncbridge.json")
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        self.logpath = os.path.join(d, "daemon.log")
        self.logf = open(self.logpath, "w")
        self.p = subprocess.Popen([BIN, "-c", self.cfg], env=ENV, stdout=subprocess.DEVNULL, stderr=self.logf)

    def log(self):
        with open(self.logpath) as f:
            return f.read()

    def metric(self, name, route="r"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
        finally:
            c.close()
        m = re.search(r'^%s\{route="%s"\} (\S+)' % (name, route), text, re.M)
        return float(m.group(1)) if m else 0.0

    def done(self, route="r"):
        try:
            return int(self.metric("syncbridge_route_events_done_total", route))
        except OSError:
            return 0

    def sustained(self, n, timeout=300, route="r", interval=0.1):
        """events/s settled in the steady state: between the first poll that
        saw events done and the last poll before all n were done (polls
        are kept sparse not to slow the daemon down). Runs too short for
        two such polls use the poll that saw all n done."""
        polls = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.p.poll() is not None:
                raise RuntimeError("the daemon exited: " + self.log()[-2000:])
            k = self.done(route)
            now = time.monotonic()
            if k > 0:
                polls.append((now, k))
            if k >= n:
                inner = [p for p in polls if p[1] < n]
                a, b = (inner[0], inner[-1]) if len(inner) >= 2 else (polls[0], polls[-1])
                if b[0] <= a[0]:
                    raise RuntimeError("all %d events done before the first poll" % n)
                return (b[1] - a[1]) / (b[0] - a[0])
            time.sleep(interval)
        raise RuntimeError("%d of %d events done after %ds: %s" % (self.done(route), n, timeout, self.log()[-2000:]))

    def rss_kb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


# librdkafka's mock broker answers a fetch that finds no data only after the
# consumer's fetch.wait.max.ms (500 ms by default), where a real broker
# answers as soon as data arrives. Paced runs would measure that wait, so
# they ask for 10 ms (docs/benchmarks.md).
MOCK_FETCH = {"fetch.wait.max.ms": "10"}


def kafka_source(mc, topic, group, **extra):
    s = {"plugin": "kafka", "brokers": mc.bootstrap, "topics": [topic], "group_id": group,
         "format": "json", "commit_interval": "1s"}
    s.update(extra)
    return s


def pubsub_sink(fake, topic, **extra):
    s = {"plugin": "pubsub", "topic": topic, "auth": "static", "token": TOKEN, "endpoint": fake.base,
         "batch_max": 1000}
    s.update(extra)
    return s


def wait_assigned(dm, partitions):
    wait_for(lambda: "assigned %d partition(s)" % partitions in dm.log() or dm.p.poll() is not None, 60,
             "the partitions to be assigned")
    if dm.p.poll() is not None:
        raise RuntimeError("the daemon exited: " + dm.log()[-2000:])


# ---- runs in Run Replicator logs -----------------------------------------------
def rr_run(i):
    t = "t_%07d" % i
    return ("####################\nSchema Name :- edw_prod\nTable Name :- %s\nProcessing for date: 2026-11-23\n"
            " Teradata Count : %d\n Hive Count : %d\nCounts have matched, Success!!\nRETCODE:0\n"
            "Script completed successfully\n" % (t, 5120331 + i, 5120331 + i)), t


def filewatch_source(path):
    return {"plugin": "filewatch", "paths": [path], "format": "runreplicator", "poll_interval": "1s",
            "host": "hdp-edge-01"}


# ---- the measures -------------------------------------------------------------
def main():
    for what, p in (("syncbridge", BIN), ("mockcluster", MOCK), ("kcat", KCAT)):
        if not p or not os.path.exists(p):
            print("bench_onprem: %s is missing (configure with kafka and the Google access layer, install kcat); "
                  "on-prem section skipped" % what)
            return 0
    results = []
    top = tempfile.mkdtemp(prefix="sbbench-onprem.")
    fake = Fake(top)
    mc = MockCluster([("tput", PARTITIONS), ("lat", PARTITIONS), ("idle", 1)])
    procs = []
    try:
        # -- topic for the throughput runs: N small messages over 8 partitions
        log("producing %d messages over %d partitions" % (N_KAFKA, PARTITIONS))
        chunk = []
        for i in range(N_KAFKA):
            chunk.append("P tput %d %s\n" % (i % PARTITIONS, kafka_payload(i)))
            if len(chunk) == 5000:
                mc.send("".join(chunk))
                chunk = []
        mc.send("".join(chunk))
        mc.sync()

        # -- baselines
        kc = max(kcat_rate(mc.bootstrap, "tput", N_KAFKA) for _ in range(3))
        log("kcat: %.0f msgs/s" % kc)
        results.append(("kcat consume, mock cluster (baseline)", "%.0f msgs/s" % kc, "(baseline)", None))
        ceil = fake_ceiling(fake, fake.topic("ceiling"))
        log("fake ceiling: %.0f msgs/s" % ceil)
        results.append(("fake publish ceiling, 1000-msg requests", "%.0f msgs/s" % ceil, "(baseline)", None))

        # -- kafka -> discard
        d = os.path.join(top, "kdisc")
        dm = Daemon(d, {"k": kafka_source(mc, "tput", "g-discard")},
                    {"null": {"plugin": "discard", "batch_max": 1000}}, {"r": {"sources": ["k"], "steps": ["null"]}})
        procs.append(dm)
        rate = dm.sustained(N_KAFKA)
        dm.stop()
        log("kafka -> discard: %.0f events/s" % rate)
        results.append(("kafka -> discard (ledger on)", "%.0f events/s" % rate,
                        ">= %.0f (80%% of kcat)" % (0.8 * kc), rate >= 0.8 * kc))

        # -- kafka -> pubsub, then with more workers and larger batches
        variants = [("kafka -> pubsub, 1 worker, batch 1000", {}, True),
                    ("kafka -> pubsub, 2 workers, batch 1000", {"workers": 2}, False),
                    ("kafka -> pubsub, 2 workers, batch 4000", {"workers": 2, "batch_max": 4000}, False)]
        for i, (name, extra, primary) in enumerate(variants):
            topic = fake.topic("k2p%d" % i)
            dm = Daemon(os.path.join(top, "k2p%d" % i), {"k": kafka_source(mc, "tput", "g-k2p%d" % i)},
                        {"ps": pubsub_sink(fake, topic, **extra)}, {"r": {"sources": ["k"], "steps": ["ps"]}})
            procs.append(dm)
            rate = dm.sustained(N_KAFKA)
            dm.stop()
            log("%s: %.0f events/s" % (name, rate))
            target = ">= 50000; ceiling %.0f" % ceil
            results.append((name, "%.0f events/s" % rate, target if primary else "(ceiling %.0f)" % ceil,
                             rate >= 50000 if primary else None))

        # -- kafka -> pubsub latency at 1,000 events/s
        topic = fake.topic("klat")
        dm = Daemon(os.path.join(top, "klat"),
                    {"k": kafka_source(mc, "lat", "g-lat", properties=MOCK_FETCH)},
                    {"ps": pubsub_sink(fake, topic, attributes={"sent_ns": "${sent_ns}"})},
                    {"r": {"sources": ["k"], "steps": ["ps"]}})
        procs.append(dm)
        wait_assigned(dm, PARTITIONS)
        # warm-up: one message per partition, so every fetcher has its
        # position before the clock starts (sent_ns 0 marks them)
        mc.send("".join("P lat %d %s\n" % (p, kafka_payload(p)) for p in range(PARTITIONS)))
        mc.sync()
        wait_for(lambda: dm.done() >= PARTITIONS, 60, "the warm-up messages")
        n = int(LAT_SECONDS * LAT_RATE)
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i / LAT_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            mc.send("P lat %d %s\n" % (i % PARTITIONS, kafka_payload(i, time.time_ns())))
        mc.sync()
        wait_for(lambda: dm.done() >= n + PARTITIONS, 60, "the paced events to be published")
        lat = [(rfc3339_ns(m["publishTime"]) - int(m["attributes"]["sent_ns"])) / 1e6 for m in fake.messages(topic)
               if m["attributes"]["sent_ns"] != "0"]
        dm.stop()
        if len(lat) != n:
            raise RuntimeError("%d of %d paced messages published" % (len(lat), n))
        p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
        log("kafka -> pubsub latency p50 %.2f ms p99 %.2f ms" % (p50, p99))
        results.append(("kafka -> pubsub latency p50, 1,000/s", "%.2f ms" % p50, "(reported)", None))
        results.append(("kafka -> pubsub latency p99, 1,000/s", "%.2f ms" % p99, "<= 50 ms", p99 <= 50))

        # -- filewatch -> pubsub throughput: N runs already in a log
        logdir = os.path.join(top, "rrlogs")
        os.makedirs(logdir)
        with open(os.path.join(logdir, "tput.log"), "w") as f:
            for i in range(N_RUNS):
                f.write(rr_run(i)[0])
        topic = fake.topic("f2p")
        dm = Daemon(os.path.join(top, "f2p"), {"fw": filewatch_source(os.path.join(logdir, "tput.log"))},
                    {"ps": pubsub_sink(fake, topic, body="json")}, {"r": {"sources": ["fw"], "steps": ["ps"]}})
        procs.append(dm)
        rate = dm.sustained(N_RUNS)
        dm.stop()
        log("filewatch -> pubsub: %.0f runs/s" % rate)
        results.append(("filewatch -> pubsub", "%.0f runs/s" % rate, "(ceiling %.0f)" % ceil, None))

        # -- filewatch -> pubsub latency: the writer appends one run per ms
        path = os.path.join(logdir, "lat.log")
        open(path, "w").close()
        topic = fake.topic("flat")
        dm = Daemon(os.path.join(top, "flat"), {"fw": filewatch_source(path)},
                    {"ps": pubsub_sink(fake, topic, body="json")}, {"r": {"sources": ["fw"], "steps": ["ps"]}})
        procs.append(dm)
        time.sleep(1.5)
        n = int(LAT_SECONDS * LAT_RATE)
        written = {}
        with open(path, "a") as f:
            t0 = time.monotonic()
            for i in range(n):
                due = t0 + i / LAT_RATE
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                text, table = rr_run(i)
                written[table] = time.time_ns()
                f.write(text)
                f.flush()
        wait_for(lambda: dm.done() >= n, 60, "the paced runs to be published")
        lat = [(rfc3339_ns(m["publishTime"]) - written[m["attributes"]["table"]]) / 1e6 for m in fake.messages(topic)]
        dm.stop()
        if len(lat) != n:
            raise RuntimeError("%d of %d paced runs published" % (len(lat), n))
        p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
        log("filewatch -> pubsub latency p50 %.2f ms p99 %.2f ms" % (p50, p99))
        results.append(("filewatch -> pubsub latency p50, 1,000/s", "%.2f ms" % p50, "(reported)", None))
        results.append(("filewatch -> pubsub latency p99, 1,000/s", "%.2f ms" % p99, "<= 50 ms", p99 <= 50))

        # -- idle RSS: kafka + filewatch + pubsub configured, nothing to do
        idledir = os.path.join(top, "idlelogs")
        os.makedirs(idledir)
        topic = fake.topic("idle")
        dm = Daemon(os.path.join(top, "idle"),
                    {"k": kafka_source(mc, "idle", "g-idle"), "fw": filewatch_source(os.path.join(idledir, "*.log"))},
                    {"ps": pubsub_sink(fake, topic)},
                    {"r": {"sources": ["k", "fw"], "steps": ["ps"]}}, admin=False)
        procs.append(dm)
        wait_assigned(dm, 1)
        time.sleep(2.0)
        rss = dm.rss_kb()
        dm.stop()
        results.append(("idle RSS, kafka + filewatch + pubsub", "%.1f MB" % (rss / 1024.0), "<= 16 MB",
                        rss <= 16 * 1024))
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()
        mc.close()
        fake.stop()
        shutil.rmtree(top, ignore_errors=True)

    lines = ["", "syncbridge on-prem benchmark (%d cores, %s)" % (os.cpu_count(), time.strftime("%Y-%m-%d %H:%M")),
             "%-45s %-18s %-28s %s" % ("measure", "result", "target / baseline", "")]
    ok = True
    for name, val, target, met in results:
        mark = "" if met is None else "met" if met else "MISSED"
        lines.append("%-45s %-18s %-28s %s" % (name, val, target, mark))
        ok &= met is not False
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(BUILD, "bench-results.txt"), "a") as f:
        f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
