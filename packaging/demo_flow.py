#!/usr/bin/env python3
"""demo_flow.py - the quick start's view of the Google APIs fake
(tests/fake), for packaging/bootstrap.sh demo. Standard library only.

  demo_flow.py setup BASE            prepare the fake for the seed flow: no
                                     auth, the topic and the GCP side's
                                     subscription, the BigQuery registry
                                     table, a RUNNING Composer environment
                                     with its DAG, and a clock on which DAG
                                     runs and Dataproc workflows finish
  demo_flow.py published BASE        list what the topic holds
  demo_flow.py watch BASE N SQLDB READY
                                     touch READY after the first look (start
                                     the GCP side after that), then wait
                                     until N runs have both BigQuery
                                     rows, the GCP one updated, and a Cloud
                                     SQL row; keep the first view of each
                                     run's rows while its GCP row is still
                                     pending; then print each run

It only reads and prepares; the two daemons do the flow.
"""
import base64
import json
import sqlite3
import sys
import time
import urllib.parse
import urllib.request

PROJECT = "syncbridge-demo"
TOPIC = "projects/%s/topics/onprem-runs" % PROJECT
SUBSCRIPTION = "projects/%s/subscriptions/gcp-side" % PROJECT
DATASET, TABLE = "etl_registry", "runs"
ENVIRONMENT = "projects/%s/locations/us-central1/environments/etl" % PROJECT
DAG = "run_replicator_copy"


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def setup(base):
    # like the emulators: no token needed; DAG runs go queued -> running ->
    # success two seconds apart, clusters and jobs take a second each
    call(base, "POST", "/_fake/config", {"require_auth": False, "airflow_auto_seconds": 2,
                                         "dataproc_cluster_seconds": 1, "dataproc_job_seconds": 1,
                                         "pubsub_pull_wait_seconds": 1})
    call(base, "PUT", "/v1/" + TOPIC, {})
    call(base, "PUT", "/v1/" + SUBSCRIPTION, {"topic": TOPIC, "ackDeadlineSeconds": 30})
    call(base, "POST", "/_fake/bigquery/table", {
        "project": PROJECT, "dataset": DATASET, "table": TABLE,
        "fields": [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}, {"name": "command", "type": "STRING"},
                   {"name": "timestamp", "type": "DATETIME"}, {"name": "source", "type": "STRING", "mode": "REQUIRED"}]})
    call(base, "POST", "/_fake/composer/environments", {"name": ENVIRONMENT, "state": "RUNNING"})
    call(base, "POST", "/_fake/airflow/dags", {"dag_id": DAG, "is_paused": False})


def messages(base):
    return call(base, "GET", "/_fake/pubsub/messages?topic=" + urllib.parse.quote(TOPIC))


def published(base):
    for m in messages(base):
        a = m.get("attributes", {})
        print("  %s  %s.%s  %s" % (m["messageId"], a.get("schema"), a.get("table"),
                                   base64.b64decode(m.get("data", "")).decode()))


def bq_rows(base):
    q = urllib.parse.urlencode({"project": PROJECT, "dataset": DATASET, "table": TABLE})
    return call(base, "GET", "/_fake/bigquery/table?" + q)


def sql_rows(path):
    try:
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return con.execute("SELECT id, source, command, timestamp FROM runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the table is made by the sink's first batch
        return []
    finally:
        con.close()


def secs(t):
    """An RFC 3339 time cut to the second, for the eye."""
    return t[:19] if t else t


def fmt_row(r):
    ts = r.get("timestamp")
    return "%-6s timestamp %s" % (r["source"], ts if ts else "NULL (pending)")


def watch(base, n, sqldb, ready, timeout=50):
    before = {}  # run id -> its rows the first time both were there and gcp was pending
    t0 = time.monotonic()
    while True:
        rows = bq_rows(base)
        by = {}
        for r in rows:
            by.setdefault(int(r["id"]), {})[r["source"]] = r
        for rid, two in by.items():
            if rid not in before and len(two) == 2 and two["gcp"].get("timestamp") is None:
                before[rid] = two
        done = [rid for rid, two in by.items() if len(two) == 2 and two["gcp"].get("timestamp")]
        sql = sql_rows(sqldb)
        if ready:
            open(ready, "w").close()
            ready = None
        if len(done) >= n and len(sql) >= n:
            break
        if time.monotonic() - t0 > timeout:
            print("demo: after %d s, %d of %d runs are through the GCP side" % (timeout, len(done), n),
                  file=sys.stderr)
            return 1
        time.sleep(0.1)

    msgs = {}
    for m in messages(base):
        msgs.setdefault(int(m["attributes"]["run_id"]), m)
    dag_runs = {r["conf"].get("run", {}).get("run_id"): r for r in call(base, "GET", "/_fake/airflow/state")["runs"]}
    dp = call(base, "GET", "/_fake/dataproc/state")
    sql_by = {int(r[0]): r for r in sql}
    for rid in sorted(by, key=lambda k: msgs[k]["messageId"] if k in msgs else ""):
        m = msgs.get(rid, {})
        a = m.get("attributes", {})
        print("run %d  %s.%s" % (rid, a.get("schema"), a.get("table")))
        print("  published  message %s: %s" % (m.get("messageId"), base64.b64decode(m.get("data", "")).decode()))
        print("             attributes event_id=%s finished_at=%s" % (a.get("event_id"), a.get("finished_at")))
        b = before.get(rid)
        if b:
            print("  BigQuery before the update: %s | %s" % (fmt_row(b["onprem"]), fmt_row(b["gcp"])))
        else:
            print("  BigQuery before the update: (not caught: the update came between two looks)")
        run = dag_runs.get(rid)
        if run:
            print("  Composer   DAG %s, run %s" % (run["dag_id"], run["dag_run_id"]))
            print("             state %s: queued %s, ended %s" % (run["state"], secs(run.get("queued_at")),
                                                                  secs(run.get("end_date"))))
        else:
            # the workflow's jobs carry the label table (set in the sample config)
            ids = {j["reference"]["jobId"] for j in dp["jobs"] if j.get("labels", {}).get("table") == a.get("table")}
            for o in dp["operations"]:
                md = o["metadata"]
                nodes = md.get("graph", {}).get("nodes", [])
                if md.get("@type", "").endswith("WorkflowMetadata") and any(x.get("jobId") in ids for x in nodes):
                    print("  Dataproc   workflow %s on cluster %s" % (o["name"].rsplit("/", 1)[-1],
                                                                      md.get("clusterName")))
                    print("             state %s%s: %s, ended %s" % (
                        md.get("state"), " with an error" if "error" in o else "",
                        ", ".join("job %s %s" % (x.get("jobId"), x.get("state")) for x in nodes),
                        secs(md.get("endTime"))))
        two = by[rid]
        print("  BigQuery after the update:  %s | %s" % (fmt_row(two["onprem"]), fmt_row(two["gcp"])))
        s = sql_by.get(rid)
        print("  Cloud SQL  runs row: id %s, source %s, timestamp %s" % (s[0], s[1], s[3]) if s else
              "  Cloud SQL  (no row)")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "setup":
        setup(argv[2])
    elif len(argv) >= 3 and argv[1] == "published":
        published(argv[2])
    elif len(argv) >= 6 and argv[1] == "watch":
        return watch(argv[2], int(argv[3]), argv[4], argv[5])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
