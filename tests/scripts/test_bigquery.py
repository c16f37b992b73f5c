#!/usr/bin/env python3
"""The bigquery sink end to end: the real daemon (file_in JSON lines ->
bigquery merge -> bigquery update) keeping the existing run registry
(id INTEGER, command STRING, timestamp DATETIME, source STRING) in the
Google APIs fake, with its streaming buffer on. Asserts on the table the
fake holds: two rows per run, the GCP row updated once, nothing doubled by
retries, injected faults, slow jobs or a second run of the same events."""
import json
import os
import subprocess
import tempfile
import unittest
import urllib.parse

from sbtest import BIN, PROJECT, Fake, env, wait_for

DATASET, TABLE = "registry", "runs"
SCHEMA = [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
          {"name": "command", "type": "STRING"},
          {"name": "timestamp", "type": "DATETIME"},
          {"name": "source", "type": "STRING", "mode": "REQUIRED"}]


class BigQuerySink(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="sbbq.")
        cls.fake = Fake(cls.top)

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        subprocess.run(["rm", "-rf", cls.top])

    def setUp(self):
        self.fake.call("POST", "/_fake/reset")
        self.dir = tempfile.mkdtemp(dir=self.top)
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.inp = os.path.join(self.dir, "in.jsonl")
        st, _ = self.fake.call("POST", "/_fake/bigquery/table",
                               {"project": PROJECT, "dataset": DATASET, "table": TABLE, "fields": SCHEMA})
        self.assertEqual(st, 200)

    def sink(self, **opts):
        s = {"plugin": "bigquery", "project": PROJECT, "dataset": DATASET, "table": TABLE,
             "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
             "retry": {"initial": "20ms", "max_delay": "200ms", "max_attempts": 100}}
        s.update(opts)
        return s

    def registry(self, **opts):
        return self.sink(key=["id", "source"], rows={
            "onprem.id": "${run_id}", "onprem.command": "${command}", "onprem.timestamp": "${finished_at}",
            "onprem.source": "onprem",
            "gcp.id": "${run_id}", "gcp.command": "${command}", "gcp.source": "gcp"}, **opts)

    def updater(self, **opts):
        return self.sink(mode="update", key=["id", "source"],
                         rows={"id": "${run_id}", "source": "gcp", "timestamp": "${gcp_finished_at}"}, **opts)

    def config(self, steps, sinks):
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": "info"},
               "sources": {"in": {"plugin": "file_in", "path": self.inp, "format": "json", "id_field": "event_id",
                                  "follow": False}},
               "sinks": sinks, "routes": {"r": {"sources": ["in"], "steps": steps}}}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def write(self, events):
        with open(self.inp, "a") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")

    def run_once(self, expect=0):
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=300, env=env())
        self.assertEqual(r.returncode, expect, r.stderr[-3000:])
        return r

    def rows(self):
        q = urllib.parse.urlencode({"project": PROJECT, "dataset": DATASET, "table": TABLE})
        st, rows = self.fake.call("GET", "/_fake/bigquery/table?" + q)
        self.assertEqual(st, 200, rows)
        return rows

    @staticmethod
    def ev(i, **extra):
        e = {"event_id": "ev-%04d" % i, "run_id": 5000 + i, "command": "sh run_replicator.sh edw t%d" % i,
             "finished_at": "2026-12-05T06:%02d:%02d+01:00" % (i // 60 % 60, i % 60),
             "gcp_finished_at": "2026-12-05T09:00:%02dZ" % (i % 60)}
        e.update(extra)
        return e

    def check_registry(self, n, updated=True):
        rows = self.rows()
        by = {}
        for r in rows:
            by.setdefault((r["id"], r["source"]), []).append(r)
        self.assertEqual(len(rows), 2 * n, "two rows per run")
        for i in range(n):
            on, gcp = by[(5000 + i, "onprem")], by[(5000 + i, "gcp")]
            self.assertEqual((len(on), len(gcp)), (1, 1))
            # the on-prem instant (+01:00) as UTC civil time
            self.assertEqual(on[0]["timestamp"], "2026-12-05T05:%02d:%02d" % (i // 60 % 60, i % 60))
            self.assertEqual(on[0]["command"], "sh run_replicator.sh edw t%d" % i)
            if updated:
                self.assertEqual(gcp[0]["timestamp"], "2026-12-05T09:00:%02d" % (i % 60))
            else:
                self.assertIsNone(gcp[0]["timestamp"])

    # ------------------------------------------------------------------------
    def test_two_rows_per_run_then_the_update(self):
        n = 300
        self.write([self.ev(i) for i in range(n)])
        self.config(["reg", "upd"], {"reg": self.registry(), "upd": self.updater()})
        self.run_once()
        self.check_registry(n)
        # statements, not streaming: nothing in the streaming buffer, nothing via insertAll
        st, log = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("insertAll$"))
        self.assertEqual(log, [])

    def test_redelivery_and_a_second_daemon_double_nothing(self):
        n = 50
        self.write([self.ev(i) for i in range(n)])
        self.config(["reg", "upd"], {"reg": self.registry(), "upd": self.updater()})
        self.run_once()
        # the same events again in a fresh ledger (a lost ledger, another
        # daemon, a duplicated publish): the merge finds the rows and does
        # not reset the updated GCP row
        self.config(["reg"], {"reg": self.registry()})
        os.rename(os.path.join(self.dir, "state"), os.path.join(self.dir, "state.old"))
        self.run_once()
        self.check_registry(n)

    def test_faults_and_slow_jobs_lose_and_double_nothing(self):
        n = 120
        self.write([self.ev(i) for i in range(n)])
        # 10% of queries answer 503 and 10% of polls 429; every job is
        # incomplete for two polls
        self.fake.call("POST", "/_fake/config", {"bq_slow_queries": 2})
        self.fake.fault(path_regex="/queries$", status=503, rate=0.1)
        self.fake.fault(path_regex="/queries/", status=429, rate=0.1)
        self.fake.fault(path_regex="/tables/runs$", status=500, rate=0.1)
        self.config(["reg", "upd"], {"reg": self.registry(max_rows=40, poll_interval="20ms"),
                                     "upd": self.updater(max_rows=40, poll_interval="20ms")})
        self.run_once()
        self.check_registry(n)
        st, polls = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("/queries/job_"))
        self.assertTrue(polls, "incomplete jobs were polled")

    def test_a_running_job_survives_a_restart(self):
        # the daemon is SIGKILLed while its events WAIT on a running job;
        # the next start polls that job (its id is the events' step state)
        # and never sends the statement again
        self.write([self.ev(i) for i in range(3)])
        # the job is complete at its 40th look: a few before the kill, the rest after
        self.fake.call("POST", "/_fake/config", {"bq_slow_queries": 40})
        try:
            self.config(["reg"], {"reg": self.registry(poll_interval="50ms", query_timeout="0s")})
            p = subprocess.Popen([BIN, "--once", "-c", self.cfg], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env())
            try:
                def polled():
                    st, log = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("/queries/"))
                    return len(log) >= 2
                wait_for(polled, 60, "the job polled")
            finally:
                p.kill()
                p.wait()
        finally:
            self.fake.call("POST", "/_fake/config", {"bq_slow_queries": 0})
        st, sent = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("/queries$"))
        self.assertEqual(len(sent), 1, "one statement before the kill")
        self.fake.call("DELETE", "/_fake/requests")
        self.run_once()
        st, again = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("/queries"))
        self.assertTrue(again, "the job was looked at after the restart")
        self.assertTrue(all("/queries/" in r["path"] for r in again), "the statement was not sent again")
        self.assertEqual(len(self.rows()), 6)

    def test_a_job_given_up_at_the_step_timeout_is_cancelled(self):
        # a job that never completes: the events WAIT until step_timeout,
        # then abandon() asks BigQuery to cancel it, and they are dead letters
        self.write([self.ev(i) for i in range(3)])
        self.fake.call("POST", "/_fake/config", {"bq_slow_queries": 100000})
        try:
            self.config(["reg"], {"reg": self.registry(poll_interval="50ms", query_timeout="0s",
                                                        step_timeout="1s")})
            r = self.run_once(expect=4)
        finally:
            self.fake.call("POST", "/_fake/config", {"bq_slow_queries": 0})
        st, cancels = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("/cancel$"))
        self.assertEqual(len(cancels), 1, "one cancel for the batch's one job")
        self.assertEqual(cancels[0]["method"], "POST")
        self.assertIn("cancel requested", r.stderr)
        dead = json.loads(subprocess.run([BIN, "-c", self.cfg, "dlq", "list", "--json"], capture_output=True,
                                         text=True, env=env()).stdout)
        # the fake's cancel comes too late (it ran the MERGE when it was
        # sent), so the job ends DONE: the events still waiting on it finish
        # OK, and the given-up one is a dead letter whose rows are there
        self.assertGreaterEqual(len(dead), 1)
        self.assertEqual(len(self.rows()), 6)

    def test_bad_value_fails_only_its_event(self):
        self.write([self.ev(0), self.ev(1, run_id="not-a-number"), self.ev(2)])
        self.config(["reg"], {"reg": self.registry()})
        self.run_once(expect=4)
        ids = sorted({r["id"] for r in self.rows()})
        self.assertEqual(ids, [5000, 5002])
        r = subprocess.run([BIN, "-c", self.cfg, "dlq", "list", "--json"], capture_output=True, text=True, env=env())
        dead = json.loads(r.stdout)
        self.assertEqual([d["event_id"] for d in dead], ["ev-0001"])
        self.assertIn("is not an integer", dead[0]["error"])

    def test_update_waits_for_streamed_rows_and_insert_all_dedups(self):
        # insert_all rows sit in the streaming buffer: an update over them is
        # refused until it is flushed, and retried meanwhile
        self.fake.call("POST", "/_fake/config", {"stream_buffer_seconds": 2})
        self.write([self.ev(i) for i in range(5)])
        stream = self.sink(mode="insert_all", rows={
            "onprem.id": "${run_id}", "onprem.timestamp": "${finished_at}", "onprem.source": "onprem",
            "gcp.id": "${run_id}", "gcp.source": "gcp"})
        self.config(["s", "upd"], {"s": stream, "upd": self.updater()})
        self.run_once()
        rows = self.rows()
        self.assertEqual(len(rows), 10)
        self.assertEqual(sorted(r["timestamp"] for r in rows if r["source"] == "gcp"),
                         ["2026-12-05T09:00:%02d" % i for i in range(5)])
        # the same events again: insertId de-duplicates the stream
        os.rename(os.path.join(self.dir, "state"), os.path.join(self.dir, "state.old"))
        self.config(["s"], {"s": stream})
        self.run_once()
        self.assertEqual(len(self.rows()), 10)

    def test_missing_table_is_a_clear_error(self):
        self.write([self.ev(0)])
        self.config(["reg"], {"reg": self.registry(table="nope", retry={"max_attempts": 2, "initial": "10ms"})})
        r = self.run_once(expect=4)
        self.assertIn("table %s.%s.nope not found" % (PROJECT, DATASET), r.stderr)

    def test_check_does_not_contact_bigquery(self):
        self.config(["reg"], {"reg": self.registry()})
        r = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, env=env())
        self.assertEqual(r.returncode, 0, r.stderr)
        st, log = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote("^/bigquery"))
        self.assertEqual(log, [])

    def test_time_zone_names_an_iana_zone(self):
        """America/Chicago: CDT in July, CST in January, also in 2090 (past
        the zone file's last transition: its footer rule)."""
        stamps = {"2026-07-01T17:00:00Z": "2026-07-01T12:00:00", "2026-01-15T17:00:00+01:00": "2026-01-15T10:00:00",
                  "2090-07-01T17:00:00Z": "2090-07-01T12:00:00", "2090-12-01T17:00:00Z": "2090-12-01T11:00:00"}
        self.write([self.ev(i, finished_at=ts) for i, ts in enumerate(stamps)])
        self.config(["reg"], {"reg": self.registry(time_zone="America/Chicago")})
        self.run_once()
        got = {r["id"]: r["timestamp"] for r in self.rows() if r["source"] == "onprem"}
        self.assertEqual(got, {5000 + i: civil for i, civil in enumerate(stamps.values())})

    def test_time_zone_that_is_no_zone_is_a_config_error(self):
        for tz, why in [("America/Chicgo", "(no zone file /usr/share/zoneinfo/America/Chicgo)"),
                        ("../../etc/passwd", "(a zone name has only letters, digits, _ + - and /)")]:
            self.config(["reg"], {"reg": self.registry(time_zone=tz)})
            r = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True,
                               env=dict(env(), TZDIR=""))
            self.assertNotEqual(r.returncode, 0, r.stderr)
            self.assertIn('option time_zone: "%s" is not UTC, +HH:MM / -HH:MM or a zone in /usr/share/zoneinfo %s'
                          % (tz, why), r.stderr)


if __name__ == "__main__":
    unittest.main()
