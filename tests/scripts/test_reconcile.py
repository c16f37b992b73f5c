#!/usr/bin/env python3
"""`syncbridge reconcile` and the freshness metrics, against the fake.

An on-prem node publishes ten runs (file_in -> pubsub) with its admin
endpoint on: /metrics then has the lag of each table's runs. The test then
writes the registry as the GCP side would have, with rows removed on
purpose: runs 9 and 10 never got any row, run 6 lacks its Cloud SQL row,
runs 7 and 8 have a gcp row still pending hours after the on-prem finish,
and run 99 has rows but no on-prem run. reconcile must name exactly these;
--republish then sends runs 9 and 10 through the route again, and the
running daemon publishes them a second time.
"""
import datetime
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbtest  # noqa: E402
import sqlservers  # noqa: E402

TOPIC = "projects/p/topics/onprem-runs"
FQ = "p.reg.runs"
SCHEMA = [{"name": "id", "type": "INTEGER"}, {"name": "command", "type": "STRING"},
          {"name": "timestamp", "type": "DATETIME"}, {"name": "source", "type": "STRING"}]


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class TestReconcile(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="sbrec.")
        self.fake = sbtest.Fake(self.d)
        self.odbc = sqlservers.odbc_dir(self.d)
        self.have_sqlite = bool(sqlservers.driver_path("SQLite3"))

    def tearDown(self):
        self.fake.stop()
        if os.environ.get("SB_KEEP_TMP") != "1":
            shutil.rmtree(self.d, ignore_errors=True)

    def ctl(self, method, path, body=None, auth=False):
        st, out = self.fake.call(method, path, body, auth=auth)
        self.assertEqual(st, 200, (path, out))
        return out

    def bq(self, sql):
        out = self.ctl("POST", "/bigquery/v2/projects/p/queries", {"query": sql, "useLegacySql": False}, auth=True)
        self.assertTrue(out.get("jobComplete"), out)

    def test_a_ledger_without_payloads_is_an_error_not_a_clean_result(self):
        # keep_payload: until_settled drops a done entry's payload, and with it
        # the run: reconcile must say it cannot see those runs, not exit 0
        inp = os.path.join(self.d, "runs.jsonl")
        with open(inp, "w") as f:
            for n in (1, 2):
                f.write(json.dumps({"event_id": "run-%d" % n, "run_id": n, "status": "succeeded"}) + "\n")
        cfg = sbtest.write_config(os.path.join(self.d, "sb.json"), {
            "state_dir": os.path.join(self.d, "state"), "ledger": {"keep_payload": "until_settled"},
            "sources": {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id"}},
            "sinks": {"out": {"plugin": "discard"}},
            "routes": {"r": {"sources": ["in"], "steps": ["out"]}}})
        r = subprocess.run([sbtest.BIN, "--once", "-c", cfg], capture_output=True, text=True, timeout=60, env=sbtest.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        r = sbtest.run_cli(cfg, "reconcile", "--since", "1d", env=sbtest.env())
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("2 ledger entries in the window keep no payload", r.stderr)

    def test_finds_runs_removed_on_purpose_and_republishes_them(self):
        self.fake.create_topic(TOPIC)
        self.ctl("POST", "/_fake/bigquery/table", {"project": "p", "dataset": "reg", "table": "runs", "fields": SCHEMA})
        now = time.time()
        old = now - 8 * 3600          # pending rows: finished 8 h ago
        inp = os.path.join(self.d, "runs.jsonl")
        with open(inp, "w") as f:
            for n in range(1, 11):
                fin = old if n in (7, 8) else now - 600
                f.write(json.dumps({"event_id": "run-%d" % n, "run_id": n, "schema": "edw", "table": "t%d" % (n % 3),
                                    "status": "succeeded", "finished_at": iso(fin),
                                    "command": "sh run_replicator.sh edw t%d" % (n % 3)}) + "\n")
        db = os.path.join(self.d, "registry.db")
        port = free_port()
        sinks = {"publish": self.fake.sink(TOPIC),
                 "registry": {"plugin": "bigquery", "project": "p", "dataset": "reg", "table": "runs",
                              "key": ["id", "source"], "rows": {"id": "${run_id}", "source": "onprem"},
                              "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base}}
        if self.have_sqlite:
            sinks["sql"] = {"plugin": "cloudsql", "connection": "DRIVER=SQLite3;Database=%s" % db,
                            "statement": "INSERT INTO runs (id, source) VALUES (:run_id, 'gcp')",
                            "registry_query": "SELECT id, source, timestamp FROM runs"}
        cfg = sbtest.write_config(os.path.join(self.d, "sb.json"), {
            "state_dir": os.path.join(self.d, "state"),
            "admin": {"enabled": True, "port": port},
            "sources": {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id",
                               "poll_interval": "20ms"}},
            "sinks": sinks,
            # the registry and SQL instances are only read by reconcile; a route
            # matching nothing keeps them in the config
            "routes": {"onprem": {"sources": ["in"], "steps": ["publish"]},
                       "unused": {"sources": ["in"], "match": {"field": "never", "exists": True},
                                  "steps": ["registry"] + (["sql"] if self.have_sqlite else [])}}})
        env = sbtest.env(ODBCSYSINI=self.odbc)
        d = sbtest.Daemon(cfg, os.path.join(self.d, "daemon.log"), environ=env).start()
        try:
            def done():
                r = sbtest.run_cli(cfg, "runs", "list", "--route", "onprem", "--state", "done", "--json", env=env)
                return r.returncode == 0 and len(json.loads(r.stdout or "[]")) == 10
            sbtest.wait_for(done, 30, "ten runs published")
            self.assertEqual(len(self.fake.messages(TOPIC)), 10)

            # freshness: the lag of every table's runs, nothing pending
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
                metrics = r.read().decode()
            self.assertIn('syncbridge_run_lag_seconds_count{route="onprem",table="edw.t1"} 4', metrics)
            # runs 1, 4 and 10 finished ten minutes ago, run 7 eight hours ago
            self.assertIn('syncbridge_run_lag_seconds_bucket{route="onprem",table="edw.t1",le="600"} 0', metrics)
            self.assertIn('syncbridge_run_lag_seconds_bucket{route="onprem",table="edw.t1",le="1800"} 3', metrics)
            self.assertIn('syncbridge_run_lag_seconds_bucket{route="onprem",table="edw.t1",le="28800"} 3', metrics)
            self.assertIn('syncbridge_run_lag_seconds_bucket{route="onprem",table="edw.t1",le="86400"} 4', metrics)
            self.assertIn('syncbridge_run_lag_seconds_bucket{route="onprem",table="edw.t1",le="+Inf"} 4', metrics)
            self.assertIn('syncbridge_run_oldest_pending_seconds{route="onprem",table="edw.t0"} 0.000', metrics)
            self.assertIn('syncbridge_run_pending{route="onprem",table="edw.t2"} 0', metrics)

            # the registry as the GCP side wrote it, with rows removed on purpose
            def dt(t):
                return "DATETIME '%s'" % datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%S")
            vals = []
            for n in range(1, 9):
                fin = old if n in (7, 8) else now - 600
                vals.append("(%d, 'onprem', %s)" % (n, dt(fin)))
                vals.append("(%d, 'gcp', %s)" % (n, "NULL" if n in (7, 8) else dt(now - 60)))
            vals.append("(99, 'gcp', %s)" % dt(now - 60))
            self.bq("INSERT INTO `%s` (id, source, timestamp) VALUES %s" % (FQ, ", ".join(vals)))
            if self.have_sqlite:
                c = sqlite3.connect(db)
                c.execute("CREATE TABLE runs (id INTEGER, source TEXT, timestamp TEXT, PRIMARY KEY (id, source))")
                for n in (1, 2, 3, 4, 5, 7, 8):   # 6 removed on purpose
                    c.execute("INSERT INTO runs VALUES (?, 'gcp', ?)", (n, iso(now - 60)))
                c.commit()
                c.close()

            r = sbtest.run_cli(cfg, "reconcile", "--since", "1d", "--json", env=env)
            self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
            out = json.loads(r.stdout)
            ids = lambda k: sorted(x["run_id"] for x in out[k])
            self.assertEqual(ids("missing"), [9, 10])
            self.assertEqual(ids("pending"), [7, 8])
            self.assertEqual(ids("orphans"), [99])
            if self.have_sqlite:
                self.assertEqual(ids("incomplete"), [6])
                self.assertEqual(out["incomplete"][0]["missing"], ["cloudsql gcp row"])
            self.assertEqual(out["missing"][0]["ledger"]["state"], "done")
            self.assertEqual(out["runs"], 10)

            text = sbtest.run_cli(cfg, "reconcile", "--since", "1d", env=env)
            self.assertEqual(text.returncode, 5)
            self.assertIn("never reached GCP: 2", text.stdout)
            self.assertIn("gcp row pending too long: 2", text.stdout)
            # a longer threshold: nothing pending
            r = sbtest.run_cli(cfg, "reconcile", "--since", "1d", "--pending-after", "9h", "--json", env=env)
            self.assertEqual(json.loads(r.stdout)["pending"], [])

            r = sbtest.run_cli(cfg, "reconcile", "--since", "1d", "--republish", "--json", env=env)
            self.assertEqual(r.returncode, 5, r.stderr)
            self.assertEqual(len(json.loads(r.stdout)["republished"]), 2)

            sbtest.wait_for(lambda: len(self.fake.messages(TOPIC)) == 12, 30, "the running daemon to publish runs 9 and 10 again")
            again = [m for m in self.fake.messages(TOPIC)][10:]
            self.assertEqual(sorted(int(m["attributes"]["run_id"]) for m in again), [9, 10])
            # the same event ids: a GCP side that still holds them drops them as duplicates
            self.assertEqual(sorted(m["attributes"]["event_id"] for m in again), ["run-10", "run-9"])
        finally:
            self.assertEqual(d.stop(), 0, d.log()[-3000:])


if __name__ == "__main__":
    unittest.main(verbosity=2)
