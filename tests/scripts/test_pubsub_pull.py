#!/usr/bin/env python3
"""The pubsub_pull source end to end: the real daemon pulling a
subscription of the Google APIs fake into a testsink route. Asserts on the
ledger (one event per event_id, whatever Pub/Sub redelivers or the on-prem
side publishes twice), on the dead-letter store (a body that does not
decode, acked all the same), and on the fake's subscription backlog (every
message acknowledged, and only after its event was committed; leases kept
while the route is slow; a SIGKILL before the commit redelivers)."""
import base64
import json
import os
import subprocess
import tempfile
import time
import unittest
import urllib.parse

from sbtest import BIN, BUILD, PROJECT, Daemon, Fake, env, wait_for


# make check-long: the scale (1,000 runs, 20 kills); make check keeps
# each test to seconds
LONG = os.environ.get("SB_CHECK_LONG") == "1"


def plugin_env():
    b = os.path.abspath(BUILD)
    return env(SYNCBRIDGE_PLUGIN_PATH=os.path.join(b, "plugins", ".libs") + ":" +
               os.path.join(b, "tests", "plugins", ".libs"))


class PubSubPull(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="sbpull.")
        cls.fake = Fake(cls.top)

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        subprocess.run(["rm", "-rf", cls.top])

    def setUp(self):
        self.fake.call("POST", "/_fake/reset")
        # an empty pull answers within a second, so a stop is quick
        self.fake.call("POST", "/_fake/config", {"pubsub_pull_wait_seconds": 1})
        self.dir = tempfile.mkdtemp(dir=self.top)
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.rec = os.path.join(self.dir, "record")
        self.topic = "projects/%s/topics/runs" % PROJECT
        self.sub = "projects/%s/subscriptions/gcp-side" % PROJECT
        self.assertEqual(self.fake.call("PUT", "/v1/" + self.topic, {}, auth=True)[0], 200)
        st, body = self.fake.call("PUT", "/v1/" + self.sub, {"topic": self.topic, "ackDeadlineSeconds": 10},
                                  auth=True)
        self.assertEqual(st, 200, body)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.kill()

    def source(self, **opts):
        s = {"plugin": "pubsub_pull", "subscription": self.sub, "auth": "service_account",
             "key_file": self.fake.key_file, "endpoint": self.fake.base, "ack_deadline": "10s"}
        s.update(opts)
        return s

    def config(self, sink=None, source=None, max_inflight=None):
        route = {"sources": ["pull"], "steps": ["rec"]}
        if max_inflight:
            route["max_inflight"] = max_inflight
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": "debug"},
               "sources": {"pull": source or self.source()},
               "sinks": {"rec": sink or {"plugin": "testsink", "record": self.rec}},
               "routes": {"r": route}}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def publish(self, msgs):
        body = {"messages": [{"data": base64.b64encode(d.encode()).decode(), "attributes": a} for d, a in msgs]}
        st, js = self.fake.call("POST", "/v1/%s:publish" % self.topic, body, auth=True)
        self.assertEqual(st, 200, js)
        return js["messageIds"]

    def backlog(self):
        st, js = self.fake.call("GET", "/_fake/pubsub/backlog?subscription=" + urllib.parse.quote(self.sub))
        self.assertEqual(st, 200, js)
        return js

    def daemon(self):
        d = Daemon(self.cfg, os.path.join(self.dir, "daemon.log"), environ=plugin_env()).start()
        self.daemons.append(d)
        return d

    def cli(self, *args):
        r = subprocess.run([BIN, "-c", self.cfg] + list(args), capture_output=True, text=True, timeout=60,
                           env=plugin_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def entries(self, state=None):
        args = ["runs", "--json", "--limit", "10000"] + (["--state", state] if state else [])
        return self.cli(*args)

    @staticmethod
    def run_msg(i):
        return ("${RUN_SCRIPT} \"sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh edw t%d\"" % i,
                {"event_id": "onprem-%03d" % i, "run_id": str(7000 + i), "schema": "edw", "table": "t%d" % i})

    # ------------------------------------------------------------------------
    def test_one_event_per_run_duplicates_and_a_dead_letter(self):
        n = 30
        self.publish([self.run_msg(i) for i in range(n)])
        self.publish([self.run_msg(i) for i in range(5)])          # the on-prem side published these twice
        bad_id = self.publish([("rm -rf / # not a run", {"event_id": "onprem-bad"})])[0]
        json_id = self.publish([('{"run_id": 1, "command": "x"}', {})])[0]   # no event_id: the message id
        self.config(source=self.source(parallel_pulls=3, max_messages=7))
        d = self.daemon()
        wait_for(lambda: self.backlog()["unacked"] == 0, 60, "every message acknowledged")
        self.assertEqual(d.stop(), 0)

        done = {e["event_id"]: e for e in self.entries("done")}
        self.assertEqual(set(done), {"onprem-%03d" % i for i in range(n)} | {"pubsub:" + json_id})
        with open(self.rec) as f:
            recorded = [l for l in f.read().splitlines() if l]
        self.assertEqual(len(recorded), n + 1, "one event per run, duplicates absorbed")

        # fields: decoded command, attributes (run_id as the publisher's integer), publish time
        show = self.cli("runs", "show", str(done["onprem-003"]["entry_id"]))
        fields = show["event"]["fields"] if "event" in show else show["fields"]
        self.assertEqual(fields["run_id"], 7003)
        self.assertEqual((fields["schema"], fields["table"]), ("edw", "t3"))
        self.assertIn("publish_time", fields)
        self.assertEqual(fields["finished_at"], fields["publish_time"])

        dead = self.cli("dlq", "list", "--json")
        self.assertEqual([x["event_id"] for x in dead], ["onprem-bad"])
        self.assertIn("cannot be decoded", dead[0]["error"])
        self.assertIn(bad_id, dead[0]["error"])

    def test_slow_route_keeps_leases_and_kill_before_commit_redelivers(self):
        n = 40
        self.publish([self.run_msg(i) for i in range(n)])
        # a slow step and a small route: most messages wait in a blocked
        # emit, uncommitted, for longer than the 10 s ack deadline
        self.config(sink={"plugin": "testsink", "record": self.rec, "delay": "1s", "batch_max": 2},
                    source=self.source(batch=4, max_messages=10), max_inflight=4)
        d = self.daemon()
        time.sleep(14)
        b = self.backlog()
        committed = len(self.entries())
        self.assertEqual(b["deliveries"], n, "no message was redelivered: its lease was extended")
        self.assertLess(committed, n)
        # acknowledged only what the ledger holds
        self.assertLessEqual(b["acked"], committed)
        st, log = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote(":modifyAckDeadline$"))
        self.assertTrue(log, "leases were extended")
        d.kill()

        # the uncommitted messages come back after their deadline; a fast
        # route takes them, and each run is still one event
        self.config()
        d = self.daemon()
        wait_for(lambda: self.backlog()["unacked"] == 0, 90, "every message acknowledged after the restart")
        self.assertEqual(d.stop(), 0)
        self.assertGreater(self.backlog()["deliveries"], n, "the uncommitted messages were redelivered")
        ids = [e["event_id"] for e in self.entries()]
        self.assertEqual(sorted(ids), sorted("onprem-%03d" % i for i in range(n)))

    def test_faults_on_pull_ack_and_lease_lose_and_double_nothing(self):
        n = 60
        self.publish([self.run_msg(i) for i in range(n)])
        for path in (":pull$", ":acknowledge$", ":modifyAckDeadline$"):
            self.fake.fault(path_regex=path, status=503, rate=0.1)
        self.fake.fault(path_regex=":pull$", status=429, rate=0.1)
        self.config(source=self.source(max_messages=5, batch=5))
        d = self.daemon()
        wait_for(lambda: self.backlog()["unacked"] == 0, 120, "every message acknowledged despite the faults")
        self.assertEqual(d.stop(), 0)
        ids = [e["event_id"] for e in self.entries()]
        self.assertEqual(sorted(ids), sorted("onprem-%03d" % i for i in range(n)))

    def test_faults_on_pull_ack_query_and_insert_all_lose_and_double_nothing(self):
        # pubsub_pull -> bigquery merge (jobs.query) -> bigquery insert_all,
        # with 10% 5xx/429 on pull, acknowledge, jobs.query and insertAll,
        # and answers lost after BigQuery acted (truncated): the requestId
        # and the insertId make each resend harmless
        n = 1000 if LONG else 60
        fields = [{"name": "id", "type": "INTEGER"}, {"name": "command", "type": "STRING"},
                  {"name": "timestamp", "type": "DATETIME"}, {"name": "source", "type": "STRING"}]
        for table in ("runs", "log"):
            st, _ = self.fake.call("POST", "/_fake/bigquery/table",
                                   {"project": PROJECT, "dataset": "reg", "table": table, "fields": fields})
            self.assertEqual(st, 200)
        self.publish([self.run_msg(i) for i in range(n)])
        # each kind surely once (the first matching fault wins), then at random
        for path in ("/queries$", "/insertAll$"):
            self.fake.fault(path_regex=path, kind="truncate", count=1)
            self.fake.fault(path_regex=path, status=429, count=1)
        for path in (":pull$", ":acknowledge$", "/queries$", "/insertAll$"):
            self.fake.fault(path_regex=path, status=503, count=1)
        for path in (":pull$", ":acknowledge$", "/queries$", "/insertAll$"):
            self.fake.fault(path_regex=path, status=503, rate=0.1)
        for path in (":pull$", "/queries$", "/insertAll$"):
            self.fake.fault(path_regex=path, status=429, rate=0.1)
        for path in ("/queries$", "/insertAll$"):
            self.fake.fault(path_regex=path, kind="truncate", rate=0.1)
        bq = {"plugin": "bigquery", "project": PROJECT, "dataset": "reg", "key": ["id", "source"],
              "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
              "batch_max": 25, "retry": {"initial": "20ms", "max_delay": "200ms", "max_attempts": 200}}
        reg = dict(bq, table="runs", rows={"onprem.id": "${run_id}", "onprem.command": "${command}",
                                           "onprem.source": "onprem", "gcp.id": "${run_id}",
                                           "gcp.command": "${command}", "gcp.source": "gcp"})
        log = dict(bq, table="log", mode="insert_all", key=None,
                   rows={"id": "${run_id}", "command": "${command}", "source": "onprem"})
        del log["key"]
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": "info"},
               "sources": {"pull": self.source(max_messages=25, batch=25)},
               "sinks": {"reg": reg, "log": log},
               "routes": {"r": {"sources": ["pull"], "steps": ["reg", "log"]}}}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        d = self.daemon()
        wait_for(lambda: self.backlog()["unacked"] == 0 and len(self.entries("done")) == n, 240,
                 "every run registered despite the faults")
        self.assertEqual(d.stop(), 0)
        for table, per_run in (("runs", ("onprem", "gcp")), ("log", ("onprem",))):
            q = urllib.parse.urlencode({"project": PROJECT, "dataset": "reg", "table": table})
            st, rows = self.fake.call("GET", "/_fake/bigquery/table?" + q)
            keys = sorted((r["id"], r["source"]) for r in rows)
            self.assertEqual(keys, sorted((7000 + i, s) for i in range(n) for s in per_run), table)

    def test_kills_while_registering_leave_two_rows_per_run(self):
        # pubsub_pull -> bigquery merge -> bigquery update, SIGKILLed while
        # runs flow: exactly two rows per run, every GCP row updated
        n, kills = (1000, 20) if LONG else (200, 3)
        fields = [{"name": "id", "type": "INTEGER"}, {"name": "command", "type": "STRING"},
                  {"name": "timestamp", "type": "DATETIME"}, {"name": "source", "type": "STRING"}]
        st, _ = self.fake.call("POST", "/_fake/bigquery/table",
                               {"project": PROJECT, "dataset": "reg", "table": "runs", "fields": fields})
        self.assertEqual(st, 200)
        msgs = []
        for i in range(n):
            cmd, attrs = self.run_msg(i)
            attrs["gcp_finished_at"] = "2026-12-05T10:00:%02dZ" % (i % 60)
            msgs.append((cmd, attrs))
        for k in range(0, n, 50):
            self.publish(msgs[k:k + 50])
        bq = {"plugin": "bigquery", "project": PROJECT, "dataset": "reg", "table": "runs", "key": ["id", "source"],
              "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
              "batch_max": 40, "retry": {"initial": "20ms", "max_delay": "200ms", "max_attempts": 100}}
        reg = dict(bq, rows={"onprem.id": "${run_id}", "onprem.command": "${command}",
                             "onprem.timestamp": "${finished_at}", "onprem.source": "onprem",
                             "gcp.id": "${run_id}", "gcp.command": "${command}", "gcp.source": "gcp"})
        upd = dict(bq, mode="update", rows={"id": "${run_id}", "source": "gcp", "timestamp": "${gcp_finished_at}"})
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": "info"},
               "sources": {"pull": self.source(max_messages=20, batch=20)},
               "sinks": {"reg": reg, "upd": upd},
               "routes": {"r": {"sources": ["pull"], "steps": ["reg", "upd"]}}}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)
        for k in range(kills):
            # killed as soon as it has pulled something, then a little later each time
            seen = self.backlog()["deliveries"]
            d = self.daemon()
            wait_for(lambda: self.backlog()["deliveries"] > seen, 60, "a pull")
            time.sleep(0.1 * (k % 4))
            d.kill()
        d = self.daemon()
        wait_for(lambda: self.backlog()["unacked"] == 0 and len(self.entries("done")) == n, 180,
                 "every run registered and updated")
        self.assertEqual(d.stop(), 0)
        self.assertGreater(self.backlog()["deliveries"], n, "the kills left messages to redeliver")
        q = urllib.parse.urlencode({"project": PROJECT, "dataset": "reg", "table": "runs"})
        st, rows = self.fake.call("GET", "/_fake/bigquery/table?" + q)
        by = {}
        for r in rows:
            by.setdefault((r["id"], r["source"]), []).append(r)
        self.assertEqual(len(rows), 2 * n)
        for i in range(n):
            self.assertEqual(len(by[(7000 + i, "onprem")]), 1)
            gcp = by[(7000 + i, "gcp")]
            self.assertEqual(len(gcp), 1)
            self.assertEqual(gcp[0]["timestamp"], "2026-12-05T10:00:%02d" % (i % 60))

    def test_create_subscription_and_check_without_network(self):
        sub = "projects/%s/subscriptions/made-here" % PROJECT
        self.config(source=self.source(subscription=sub, create_subscription=True, topic=self.topic))
        r = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, env=plugin_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.fake.call("GET", "/v1/" + sub, auth=True)[0], 404)
        d = self.daemon()
        wait_for(lambda: self.fake.call("GET", "/v1/" + sub, auth=True)[0] == 200, 30, "the subscription")
        st, res = self.fake.call("GET", "/v1/" + sub, auth=True)
        self.assertEqual(res["ackDeadlineSeconds"], 10)
        self.publish([self.run_msg(1)])
        wait_for(lambda: len(self.entries("done")) == 1, 30, "the event")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
