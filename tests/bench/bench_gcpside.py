#!/usr/bin/env python3
"""make bench, GCP side: the real daemon pulling runs from the Google APIs
fake's Pub/Sub and registering them in its BigQuery (pubsub_pull ->
bigquery merge, batches of 500, two rows per run).

  throughput   runs/s from the daemon's start to the last message
               acknowledged with all 2N rows in the table; target >= 5,000
               runs/s end to end. SB_BENCH_GCP_ROUNDS rounds (3), each on a
               fresh fake, each followed by the baseline below.
  fake ceiling the baseline: what the fake itself can serve, measured from
               Python against the same fake right after the round: one pull
               of 1,000 messages, their acknowledge, and one 500-run MERGE
               against the table as the daemon left it, each best of 3.
               runs/s = 1,000 / (pull + ack + 2 MERGEs): the fake runs in one
               Python process (one GIL), so this bounds any client.
  CPU / wall   the fake's and the daemon's CPU seconds over the round's wall
               time: the fake near 1.0 means it set the pace.
  idle RSS     a GCP-side daemon configured and idle on an empty
               subscription, 3 s after start.

The load average is printed with each round (the machine is shared). The
table is appended to bench-results.txt in the build tree.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
SRC = os.environ.get("SB_TOP_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.path.join(BUILD, "syncbridge")
FAKE = os.path.join(SRC, "tests", "fake", "gfake.py")
ENV = dict(os.environ)
ENV.setdefault("SYNCBRIDGE_PLUGIN_PATH", "%s/plugins/.libs" % BUILD)
N_RUNS = int(os.environ.get("SB_BENCH_GCP_RUNS", "20000"))
ROUNDS = int(os.environ.get("SB_BENCH_GCP_ROUNDS", "3"))
TARGET = 5000.0
PROJECT = "bench"
TOKEN = "fake-static-token"
TOPIC = "projects/%s/topics/runs" % PROJECT
SUB = "projects/%s/subscriptions/gcp" % PROJECT
FIELDS = [{"name": "id", "type": "INTEGER"}, {"name": "command", "type": "STRING"},
          {"name": "timestamp", "type": "DATETIME"}, {"name": "source", "type": "STRING"}]
MERGE = ("MERGE `%s.reg.runs` T USING UNNEST(@rows) S ON T.id = S.id AND T.source = S.source "
         "WHEN NOT MATCHED THEN INSERT (id, command, timestamp, source) "
         "VALUES (S.id, S.command, S.timestamp, S.source)" % PROJECT)


def log(msg):
    sys.stderr.write("bench_gcpside: %s\n" % msg)
    sys.stderr.flush()


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Fake:
    def __init__(self, d):
        pf = os.path.join(d, "fake.port")
        self.p = subprocess.Popen([sys.executable, FAKE, "--port", "0", "--port-file", pf, "--quiet"])
        t0 = time.time()
        while not os.path.exists(pf) or os.path.getsize(pf) == 0:
            if time.time() - t0 > 15:
                raise SystemExit("the fake did not start")
            time.sleep(0.05)
        with open(pf) as f:
            self.base = "http://127.0.0.1:%d" % int(f.read())

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", "Bearer " + TOKEN)
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def timed(self, method, path, body):
        t = time.monotonic()
        out = self.call(method, path, body)
        return time.monotonic() - t, out

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def publish(fake, topic, first, n):
    for start in range(first, first + n, 1000):
        msgs = [{"data": base64.b64encode(("sh run_replicator.sh edw t%d" % i).encode()).decode(),
                 "attributes": {"event_id": "ev-%d" % i, "run_id": str(100000 + i)}}
                for i in range(start, min(first + n, start + 1000))]
        fake.call("POST", "/v1/%s:publish" % topic, {"messages": msgs})


def config(d, fake, sub):
    access = {"auth": "static", "token": TOKEN, "endpoint": fake.base}
    cfg = {"state_dir": os.path.join(d, "state"), "log": {"level": "warn"},
           "sources": {"pull": dict(access, plugin="pubsub_pull", subscription=sub, format="command",
                                    max_messages=1000, parallel_pulls=2)},
           "sinks": {"reg": dict(access, plugin="bigquery", project=PROJECT, dataset="reg", table="runs",
                                 key=["id", "source"], batch_max=500, rows={
                                     "onprem.id": "${run_id}", "onprem.command": "${command}",
                                     "onprem.timestamp": "${finished_at}", "onprem.source": "onprem",
                                     "gcp.id": "${run_id}", "gcp.command": "${command}",
                                     "gcp.source": "gcp"})},
           "routes": {"r": {"sources": ["pull"], "steps": ["reg"]}}}
    path = os.path.join(d, "gcp.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def setup(fake):
    fake.call("POST", "/_fake/config", {"pubsub_pull_wait_seconds": 1})
    fake.call("PUT", "/v1/" + TOPIC, {})
    fake.call("PUT", "/v1/" + SUB, {"topic": TOPIC, "ackDeadlineSeconds": 60})
    fake.call("POST", "/_fake/bigquery/table", {"project": PROJECT, "dataset": "reg", "table": "runs",
                                                "fields": FIELDS})


def one_round(d):
    """runs/s, fake CPU/wall, daemon CPU/wall, the fake's ceiling (runs/s)
    and its parts (s), load average at the start."""
    fake = Fake(d)
    try:
        setup(fake)
        publish(fake, TOPIC, 0, N_RUNS)
        path = config(d, fake, SUB)
        q = urllib.parse.quote(SUB)
        load = loadavg()
        fake_cpu0 = cpu_seconds(fake.p.pid)
        t0 = time.monotonic()
        daemon = subprocess.Popen([BIN, "-c", path], env=ENV, stderr=open(os.path.join(d, "daemon.log"), "w"))
        acked = False
        try:
            while True:
                # acked = in the ledger; the rows follow from the route
                if not acked:
                    acked = fake.call("GET", "/_fake/pubsub/backlog?subscription=" + q)["unacked"] == 0
                if acked:
                    rows = fake.call("GET", "/_fake/bigquery/table?project=%s&dataset=reg&table=runs&count=1"
                                     % PROJECT)["rows"]
                    if rows >= 2 * N_RUNS:
                        break
                if daemon.poll() is not None or time.monotonic() - t0 > 1800:
                    raise SystemExit("the daemon stopped or took over 30 minutes (see %s)" % d)
                time.sleep(0.05)
            wall = time.monotonic() - t0
            fake_cpu = cpu_seconds(fake.p.pid) - fake_cpu0
            d_cpu = cpu_seconds(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(60)
        if rows != 2 * N_RUNS:
            raise SystemExit("%d rows for %d runs" % (rows, N_RUNS))
        return (N_RUNS / wall, fake_cpu / wall, d_cpu / wall) + ceiling(fake) + (load,)
    finally:
        fake.stop()


def ceiling(fake):
    """The fake's own cost of 1,000 runs as the daemon asks for them, from
    Python: (runs/s, pull s, ack s, MERGE s)."""
    sub2 = "projects/%s/subscriptions/ceiling" % PROJECT
    fake.call("PUT", "/v1/" + sub2, {"topic": TOPIC, "ackDeadlineSeconds": 60})
    publish(fake, TOPIC, 10 ** 7, 3000)
    t_pull = t_ack = t_merge = 1e9
    for k in range(3):
        t, got = fake.timed("POST", "/v1/%s:pull" % sub2, {"maxMessages": 1000})
        t_pull = min(t_pull, t)
        ids = [m["ackId"] for m in got.get("receivedMessages", [])]
        if len(ids) != 1000:
            raise SystemExit("ceiling: pulled %d messages, not 1000" % len(ids))
        t, _ = fake.timed("POST", "/v1/%s:acknowledge" % sub2, {"ackIds": ids})
        t_ack = min(t_ack, t)
        vals = []
        for i in range(10 ** 7 + 500 * k, 10 ** 7 + 500 * (k + 1)):
            for src in ("onprem", "gcp"):
                vals.append({"structValues": {"id": {"value": str(i)}, "command": {"value": "sh run_replicator.sh"},
                                              "timestamp": {"value": "2026-11-23T10:00:00"},
                                              "source": {"value": src}}})
        st = [{"name": n, "type": {"type": t}} for n, t in
              (("id", "INT64"), ("command", "STRING"), ("timestamp", "DATETIME"), ("source", "STRING"))]
        body = {"query": MERGE, "useLegacySql": False, "parameterMode": "NAMED",
                "queryParameters": [{"name": "rows", "parameterType": {"type": "ARRAY", "arrayType": {
                    "type": "STRUCT", "structTypes": st}}, "parameterValue": {"arrayValues": vals}}]}
        t, ans = fake.timed("POST", "/bigquery/v2/projects/%s/queries" % PROJECT, body)
        if ans.get("numDmlAffectedRows") != "1000":
            raise SystemExit("ceiling: the MERGE affected %s rows, not 1000" % ans.get("numDmlAffectedRows"))
        t_merge = min(t_merge, t)
    return 1000 / (t_pull + t_ack + 2 * t_merge), t_pull, t_ack, t_merge


def idle_rss(d):
    fake = Fake(d)
    try:
        setup(fake)
        path = config(d, fake, SUB)
        daemon = subprocess.Popen([BIN, "-c", path], env=ENV, stderr=open(os.path.join(d, "idle.log"), "w"))
        try:
            time.sleep(3)
            if daemon.poll() is not None:
                raise SystemExit("the idle daemon stopped (see %s)" % d)
            return rss_kb(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(60)
    finally:
        fake.stop()


def main():
    lines = ["== GCP side: pubsub_pull -> bigquery merge (fake), %d runs, batches of 500, %d rounds =="
             % (N_RUNS, ROUNDS),
             "round  load   runs/s  (target >= %.0f)   fake ceiling runs/s [pull, ack, MERGE ms]   "
             "fake CPU/wall  daemon CPU/wall" % TARGET]
    rates = []
    for k in range(ROUNDS):
        d = tempfile.mkdtemp(prefix="sbbench-gcp.")
        try:
            rate, fcpu, dcpu, ceil, tp, ta, tm, load = one_round(d)
        finally:
            subprocess.run(["rm", "-rf", d])
        rates.append(rate)
        lines.append("%5d %5.1f %8.0f %-19s %8.0f  [%3.0f, %3.0f, %3.0f]            %5.2f          %5.2f"
                     % (k + 1, load, rate, "" if rate >= TARGET else "NOT met", ceil, tp * 1e3, ta * 1e3,
                        tm * 1e3, fcpu, dcpu))
        log(lines[-1])
    d = tempfile.mkdtemp(prefix="sbbench-gcp.")
    try:
        idle = idle_rss(d)
    finally:
        subprocess.run(["rm", "-rf", d])
    med = sorted(rates)[len(rates) // 2]
    lines.append("median runs/s end to end %8.0f   (target >= %.0f%s)" % (med, TARGET,
                                                                     "" if med >= TARGET else ", NOT met"))
    lines.append("idle RSS, GCP side       %8d kB (configured, empty subscription, 3 s after start)" % idle)
    out = "\n".join(lines)
    print(out)
    with open(os.path.join(BUILD, "bench-results.txt"), "a") as f:
        f.write(out + "\n")
    return 0 if med >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
