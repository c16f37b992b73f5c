#!/usr/bin/env python3
"""make bench, cloudsql: rows/s into a real PostgreSQL (started here, as in
tests/scripts/test_cloudsql.py) through the daemon: file_in JSON lines ->
run ledger -> cloudsql (psqlODBC, the README's upsert), with batches of 500
sent as multi-row INSERTs (the default; target: >= 20,000 rows/s, the median
of 3), the same with 2 workers and with array binding instead (multi_row
false, how batches went before), interleaved with two baselines: the daemon
alone (the same events into discard) and PostgreSQL alone (the same upsert
as one INSERT ... SELECT); then row by row in one transaction and one row
per transaction beside them.

The time is the whole `syncbridge --once` run (start, ledger, sink, stop):
what an operator would see, and a lower bound for the sink alone."""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import sqlservers as S  # noqa: E402
from sbtest import BIN, env  # noqa: E402

TARGET = 20000
DDL = ("CREATE TABLE IF NOT EXISTS {t} (id BIGINT NOT NULL, source VARCHAR(16) NOT NULL, command TEXT, "
       "timestamp TIMESTAMP, PRIMARY KEY (id, source))")
UPSERT = ("INSERT INTO {t} (id, source, command, timestamp) VALUES (:run_id, 'gcp', :command, :finished_at) "
          "ON CONFLICT (id, source) DO UPDATE SET command = EXCLUDED.command, timestamp = EXCLUDED.timestamp")


def server_cpu(srv):
    """CPU seconds of the PostgreSQL processes so far (the postmaster counts
    the backends it has reaped)."""
    tot = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read().rsplit(")", 1)[-1].split()
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"postgres" in cmd:
            tot += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
    return tot / os.sysconf("SC_CLK_TCK")


def run(top, srv, odbc, name, n, batch, array_binding=True, cpu=None, workers=1, sink=True, multi_row=True):
    d = tempfile.mkdtemp(dir=top)
    inp = os.path.join(d, "in.jsonl")
    with open(inp, "w") as f:
        for i in range(n):
            f.write(json.dumps({"event_id": "b-%d" % i, "run_id": i, "command":
                                "sh /opt/etl/code/cerebro/run_replicator.sh edw_prod orders_%d order_dt 20261123" % i,
                                "finished_at": "2026-11-23T10:00:00Z"}) + "\n")
    t = "bench_" + name
    cfg = {"state_dir": os.path.join(d, "state"), "log": {"level": "warn"},
           "sources": {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id",
                              "follow": False}},
           "sinks": {"db": {"plugin": "cloudsql", "connection": srv.connection(), "create_table": DDL.format(t=t),
                            "statement": UPSERT.format(t=t), "batch_max": batch, "array_binding": array_binding,
                            "multi_row": multi_row, "workers": workers} if sink else {"plugin": "discard", "batch_max": batch}},
           "routes": {"r": {"sources": ["in"], "steps": ["db"]}}}
    path = os.path.join(d, "c.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    c0, d0, t0 = server_cpu(srv), os.times(), time.monotonic()
    r = subprocess.run([BIN, "--once", "-c", path], capture_output=True, text=True, env=env(ODBCSYSINI=odbc))
    dt = time.monotonic() - t0
    c1, d1 = server_cpu(srv), os.times()
    if cpu is not None:  # microseconds of CPU per row: the server's, the daemon's
        cpu.append(((c1 - c0) / n * 1e6, (d1.children_user + d1.children_system
                                          - d0.children_user - d0.children_system) / n * 1e6))
    rows = int(srv.query("SELECT COUNT(*) FROM %s" % t)[0][0]) if sink else n
    if r.returncode != 0 or rows != n:
        raise SystemExit("bench_cloudsql %s: exit %d, %d of %d rows\n%s" % (name, r.returncode, rows, n, r.stderr[-2000:]))
    return n / dt


def server_alone(srv, n):
    """The same upsert of n rows run by PostgreSQL alone, from one
    INSERT ... SELECT (no client, no ODBC, one statement): the server's
    ceiling on this machine."""
    t = "bench_server"
    srv.query(DDL.format(t=t))
    sql = UPSERT.format(t=t).replace("VALUES (:run_id, 'gcp', :command, :finished_at)", "SELECT g, 'gcp', "
                                     "'sh /opt/etl/code/cerebro/run_replicator.sh edw_prod orders_' || g || "
                                     "' order_dt 20261123', timestamp '2026-11-23 10:00:00' "
                                     "FROM generate_series(1, %d) g" % n)
    t0 = time.monotonic()
    srv.query(sql)
    dt = time.monotonic() - t0
    if int(srv.query("SELECT COUNT(*) FROM %s" % t)[0][0]) != n:
        raise SystemExit("bench_cloudsql: the server-alone upsert did not write %d rows" % n)
    srv.query("DROP TABLE %s" % t)
    return n / dt


def main():
    if not S.have_postgres():
        print("cloudsql: SKIP (PostgreSQL or psqlODBC missing)")
        return 0
    top = tempfile.mkdtemp(prefix="sbbench-cloudsql.")
    os.chmod(top, 0o755)
    odbc = S.odbc_dir(tempfile.mkdtemp(dir=top))
    srv = S.Postgres(tempfile.mkdtemp(dir=top))
    try:
        cpu = []
        batched, alone, nosink, two, arrays, cpu_arrays = [], [], [], [], [], []
        loads = []
        for k in range(3):   # interleaved, so a change in the machine's load shows in every column
            loads.append(os.getloadavg()[0])
            batched.append(run(top, srv, odbc, "b500_%d" % k, 50000, 500, cpu=cpu))
            nosink.append(run(top, srv, odbc, "discard_%d" % k, 50000, 500, sink=False))
            alone.append(server_alone(srv, 50000))
            two.append(run(top, srv, odbc, "b500_w2_%d" % k, 50000, 500, workers=2))
            arrays.append(run(top, srv, odbc, "b500_arrays_%d" % k, 50000, 500, multi_row=False, cpu=cpu_arrays))
        rows = run(top, srv, odbc, "b500_rows", 50000, 500, array_binding=False, multi_row=False)
        single = run(top, srv, odbc, "b1", 5000, 1)
    finally:
        srv.stop()
        subprocess.run(["rm", "-rf", top])
    ok = sorted(batched)[1] >= TARGET   # the median
    out = []

    def row(xs):
        return " / ".join("%.0f" % x for x in xs)
    out.append("cloudsql -> PostgreSQL, 50,000 events, 3 interleaved rounds (load average %s)"
               % " / ".join("%.1f" % x for x in loads))
    out.append("  batches of 500 (multi-row INSERTs), 1 worker: %s rows/s (target >= %d) %s"
               % (row(batched), TARGET, "met" if ok else "MISSED"))
    out.append("  the same, 2 workers:                         %s rows/s" % row(two))
    out.append("  array binding instead (multi_row false):     %s rows/s" % row(arrays))
    out.append("  baseline, the daemon alone (file_in -> ledger -> discard, same events): %s events/s" % row(nosink))
    out.append("  baseline, PostgreSQL alone (the same upsert as one INSERT ... SELECT): %s rows/s" % row(alone))
    for what, cs in (("multi-row INSERTs", cpu), ("array binding", cpu_arrays)):
        out.append("  CPU per row, %s: PostgreSQL %s us, the daemon (file_in, ledger, sink, driver) %s us"
                   % (what, " / ".join("%.0f" % c[0] for c in cs), " / ".join("%.0f" % c[1] for c in cs)))
    out.append("cloudsql -> PostgreSQL, batches of 500, row by row in one transaction: %.0f rows/s" % rows)
    out.append("cloudsql -> PostgreSQL, one row per transaction (batch_max 1): %.0f rows/s" % single)
    print("\n".join(out))
    with open(os.path.join(os.environ.get("SB_TOP_BUILDDIR", "."), "bench-results.txt"), "a") as f:
        f.write("\n".join(out) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
