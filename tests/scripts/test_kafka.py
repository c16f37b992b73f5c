#!/usr/bin/env python3
"""The kafka source end to end: the real daemon consumes from librdkafka's
mock cluster (tests/kafka/mockcluster, the real Kafka protocol on TCP) into
the file_out sink. kcat is the independent producer and reader. Covers the
JSON and command formats, unparsable messages, restart, SIGKILL between the
ledger commit and the offset commit, two instances in one group with a
rebalance, and `syncbridge check`."""
import collections
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from sbtest import (BIN, FAST_GROUP, KCAT, MOCK, NO_OFFSET, MockCluster, ends, env, kcat_produce, kcat_read,
                    needs, owned_partitions, wait_for)


def sink(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f.read().splitlines() if l]
    except FileNotFoundError:
        return []


@needs(KCAT and os.path.exists(MOCK), "kcat or the mockcluster helper is missing")
class Base(unittest.TestCase):
    topics = (("rr", 3),)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbkafka.")
        self.mc = MockCluster(3, self.topics)
        self.procs = []
        self.logs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in self.logs:
            f.close()
        self.mc.close()
        subprocess.run(["rm", "-rf", self.dir])

    def config(self, name="a", topics=("rr",), group="g", admin_port=None, **src):
        d = os.path.join(self.dir, name)
        os.makedirs(d, exist_ok=True)
        props = dict(FAST_GROUP)
        props.update(src.pop("properties", {}))
        source = {"plugin": "kafka", "brokers": self.mc.bootstrap, "topics": list(topics), "group_id": group,
                  "commit_interval": "200ms", "poll_timeout": "50ms", "properties": props}
        source.update(src)
        cfg = {"state_dir": os.path.join(d, "state"), "log": {"level": "info"},
               "sources": {"k": source},
               "sinks": {"out": {"plugin": "file_out", "path": os.path.join(d, "out.jsonl")}},
               "routes": {"r": {"sources": ["k"], "steps": ["out"]}}}
        if admin_port:
            cfg["admin"] = {"enabled": True, "bind": "127.0.0.1", "port": admin_port}
        path = os.path.join(d, "syncbridge.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    @staticmethod
    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @staticmethod
    def metric(port, name):
        """Route r's value of a counter on the admin endpoint, 0 if unreachable."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            c.close()
        except OSError:
            return 0
        m = re.search(r'^%s\{route="r"\} (\S+)' % name, text, re.M)
        return float(m.group(1)) if m else 0

    def out(self, name="a"):
        return sink(os.path.join(self.dir, name, "out.jsonl"))

    def log(self, name="a"):
        with open(os.path.join(self.dir, name, "daemon.log")) as f:
            return f.read()

    def start(self, name="a"):
        log = open(os.path.join(self.dir, name, "daemon.log"), "a")
        self.logs.append(log)
        p = subprocess.Popen([BIN, "-c", os.path.join(self.dir, name, "syncbridge.json")],
                             stdout=subprocess.DEVNULL, stderr=log, env=env())
        self.procs.append(p)
        return p

    def cli(self, cfg, *args):
        return subprocess.run([BIN, "-c", cfg] + list(args), capture_output=True, text=True, timeout=30, env=env())

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)


class Formats(Base):
    def test_json_and_command_messages_and_bad_ones_do_not_block(self):
        self.config()
        good_cmd = '${RUN_SCRIPT} "sh /etl/cerebro/run_replicator.sh groupon_production im_brand_list"'
        dated = "sh /etl/run_replicator.sh edw_prod orders_daily order_date 20261123 2"
        # everything on partition 1, bad messages between good ones
        kcat_produce(self.mc.bootstrap, "rr", [
            json.dumps({"schema": "edw", "table": "t1", "status": "succeeded"}),
            "{this is not json",
            good_cmd,
            'sh /etl/run_replicator.sh "groupon;rm -rf /" tbl',
            "echo hello",
            dated,
            json.dumps({"schema": "edw", "table": "t2"}),
        ], partition=1)
        kcat_produce(self.mc.bootstrap, "rr", [json.dumps({"schema": "x", "table": "p0"})], partition=0)
        msgs = kcat_read(self.mc.bootstrap, "rr")
        self.assertEqual(len(msgs), 8)
        p = self.start()
        wait_for(lambda: len(self.out()) == 5, what="5 good messages in the sink")
        wait_for(lambda: self.mc.committed("g", "rr") == {0: 1, 1: 7, 2: NO_OFFSET},
                 what="offsets committed past the bad messages")
        self.stop(p)
        evs = {e["event_id"]: e["fields"] for e in self.out()}
        self.assertEqual(len(self.out()), 5, "no event twice")
        self.assertEqual(sorted(evs), ["kafka:rr:0:0", "kafka:rr:1:0", "kafka:rr:1:2", "kafka:rr:1:5",
                                       "kafka:rr:1:6"])
        j = evs["kafka:rr:1:0"]
        self.assertEqual((j["schema"], j["table"], j["status"]), ("edw", "t1", "succeeded"))
        self.assertEqual((j["kafka_topic"], j["kafka_partition"], j["kafka_offset"]), ("rr", 1, 0))
        self.assertIsInstance(j["kafka_timestamp"], int)
        self.assertNotIn("run_id", j)
        c = evs["kafka:rr:1:2"]
        self.assertEqual(c["command"], good_cmd)
        self.assertEqual((c["schema"], c["table"], c["script"]), ("groupon_production", "im_brand_list",
                                                                  "run_replicator.sh"))
        self.assertIsInstance(c["run_id"], int)
        self.assertGreaterEqual(c["run_id"], 0)
        d = evs["kafka:rr:1:5"]
        self.assertEqual((d["schema"], d["table"], d["inc_key"]), ("edw_prod", "orders_daily", "order_date"))
        self.assertEqual((d["inc_val"], d["inc_date"], d["offset_days"], d["full_refresh"]),
                         ("20261123", "2026-11-23", 2, False))  # inc_val exactly as written
        self.assertNotEqual(d["run_id"], c["run_id"])
        # sb_run_id() of the run's identity, told apart by the message id
        for f, ident in ((c, "groupon_production.im_brand_list|full|kafka:rr:1:2"),
                         (d, "edw_prod.orders_daily|2026-11-23|kafka:rr:1:5")):
            digest = hashlib.sha256(ident.encode()).digest()
            self.assertEqual(f["run_id"], int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF)
        log = self.log()
        for off in (1, 3, 4):
            self.assertIn("message rr[1] at offset %d skipped" % off, log)
        self.assertIn("3 unparsable messages", log)

    def test_json_format_id_field(self):
        self.config(format="json", id_field="run_key")
        kcat_produce(self.mc.bootstrap, "rr", [json.dumps({"run_key": "run-7", "table": "a"}),
                                               "sh /x/run_replicator.sh s t"], partition=2)
        p = self.start()
        wait_for(lambda: len(self.out()) == 1, what="the JSON message")
        wait_for(lambda: "offset 1 skipped" in self.log(), what="the command rejected in json format")
        self.stop(p)
        self.assertEqual(self.out()[0]["event_id"], "run-7")


class Restart(Base):
    def test_restart_resumes_from_committed_offsets(self):
        self.config()
        kcat_produce(self.mc.bootstrap, "rr", [json.dumps({"n": i}) for i in range(40)])
        p = self.start()
        wait_for(lambda: len(self.out()) == 40, what="first 40")
        self.stop(p)
        # the close committed everything that reached the ledger
        self.assertEqual(self.mc.committed("g", "rr"), ends(kcat_read(self.mc.bootstrap, "rr"), 3))
        self.mc.produce("rr", [json.dumps({"n": i}) for i in range(40, 70)])
        p = self.start()
        wait_for(lambda: len(self.out()) == 70, what="all 70")
        time.sleep(0.5)
        self.stop(p)
        ids = [e["event_id"] for e in self.out()]
        self.assertEqual(len(ids), len(set(ids)), "nothing routed twice")
        self.assertEqual(sorted(e["fields"]["n"] for e in self.out()), list(range(70)))
        self.assertIn("0 duplicates", self.log().splitlines()[-1])
        self.assertEqual(self.mc.committed("g", "rr"), ends(kcat_read(self.mc.bootstrap, "rr"), 3))

    def test_sigkill_before_commit_redelivers_and_ledger_drops_duplicates(self):
        # a commit interval far beyond the test: only revoke/close would commit
        port = self.free_port()
        cfg = self.config(commit_interval="1h", admin_port=port)
        kcat_produce(self.mc.bootstrap, "rr", [json.dumps({"n": i}) for i in range(30)])
        p = self.start()
        wait_for(lambda: len(self.out()) == 30, what="30 in the sink")
        # kill once the ledger holds them done: a repeat in the sink can then
        # only come from routing a redelivered message again
        wait_for(lambda: len(json.loads(self.cli(cfg, "runs", "--state", "done", "--json").stdout)) == 30,
                 what="30 done in the ledger")
        p.kill()
        p.wait()
        self.assertEqual(set(self.mc.committed("g", "rr").values()), {NO_OFFSET},
                         "killed before any commit: everything will be redelivered")
        self.mc.produce("rr", [json.dumps({"n": i}) for i in range(30, 40)])
        p = self.start()
        wait_for(lambda: len(self.out()) >= 40, what="the 10 new ones")
        # the new ones may overtake redeliveries on other partitions: stop
        # only once all 30 have come back (and been refused) too
        wait_for(lambda: self.metric(port, "syncbridge_route_duplicates_total") >= 30, what="30 redelivered")
        self.stop(p)
        ids = [e["event_id"] for e in self.out()]
        self.assertEqual(len(ids), 40)
        self.assertEqual(len(set(ids)), 40, "redelivered messages must not be routed twice")
        self.assertRegex(self.log().splitlines()[-1], r"\b30 duplicates\b")
        self.assertEqual(self.mc.committed("g", "rr"), ends(kcat_read(self.mc.bootstrap, "rr"), 3))

    def test_brokers_down_are_logged_and_the_consumer_keeps_retrying(self):
        self.config()
        self.mc.produce("rr", [json.dumps({"n": i}) for i in range(10)])
        p = self.start()
        wait_for(lambda: len(self.out()) == 10, what="first 10")
        for b in (1, 2, 3):
            self.mc.cmd("DOWN %d" % b)
            self.assertEqual(self.mc.p.stdout.readline().strip(), "OK")
        wait_for(lambda: "kafka error (retrying)" in self.log(), what="the outage logged")
        self.assertIsNone(p.poll())
        for b in (1, 2, 3):
            self.mc.cmd("UP %d" % b)
            self.assertEqual(self.mc.p.stdout.readline().strip(), "OK")
        self.mc.produce("rr", [json.dumps({"n": i}) for i in range(10, 20)])
        wait_for(lambda: len(self.out()) == 20, timeout=30, what="the 10 produced after the outage")
        self.stop(p)
        self.assertEqual(sorted(e["fields"]["n"] for e in self.out()), list(range(20)))


class Group(Base):
    topics = (("grp", 6),)

    def run_two_instances(self, props, protocol):
        self.config("a", topics=("grp",), properties=props)
        self.config("b", topics=("grp",), properties=props)
        a, b = self.start("a"), self.start("b")

        def owned(name):
            return owned_partitions(self.log(name), "grp")
        wait_for(lambda: owned("a") and owned("b") and owned("a") | owned("b") == set(range(6))
                 and not owned("a") & owned("b"), timeout=30, what="both instances own partitions")
        kcat_produce(self.mc.bootstrap, "grp", [json.dumps({"n": i}) for i in range(60)])
        all_ids = lambda: {e["event_id"] for e in self.out("a")} | {e["event_id"] for e in self.out("b")}
        wait_for(lambda: len(all_ids()) == 60, what="60 across both")
        pa = {e["fields"]["kafka_partition"] for e in self.out("a")}
        pb = {e["fields"]["kafka_partition"] for e in self.out("b")}
        self.assertTrue(pa and pb, "each instance gets some partitions")
        self.assertFalse(pa & pb, "a partition is consumed by one instance")
        # b leaves: its partitions move to a, with nothing lost or repeated
        self.stop(b)
        wait_for(lambda: owned("a") == set(range(6)), timeout=30, what="a owns every partition")
        kcat_produce(self.mc.bootstrap, "grp", [json.dumps({"n": i}) for i in range(60, 120)])
        wait_for(lambda: len(all_ids()) == 120, what="120 across both")
        time.sleep(0.5)
        self.stop(a)
        every = [e["event_id"] for e in self.out("a") + self.out("b")]
        dups = collections.Counter(every)
        twice = [k for k, v in dups.items() if v > 1]
        self.assertEqual(twice, [], "b committed on revoke, so a starts exactly after it")
        self.assertEqual(sorted(e["fields"]["n"] for e in self.out("a") + self.out("b")), list(range(120)))
        self.assertEqual(self.mc.committed("g", "grp"), ends(kcat_read(self.mc.bootstrap, "grp"), 6))
        self.assertIn("(%s)" % protocol, self.log("a"))

    def test_two_instances_eager(self):
        self.run_two_instances({"partition.assignment.strategy": "range"}, "eager")

    def test_two_instances_cooperative(self):
        self.run_two_instances({"partition.assignment.strategy": "cooperative-sticky"}, "cooperative")


class Check(Base):
    def test_check_prints_route(self):
        cfg = self.config()
        r = self.cli(cfg, "check")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("route r", r.stdout)
        self.assertIn("sources: k", r.stdout)

    def test_unknown_property_is_named(self):
        cfg = self.config(properties={"no.such.property": "1"})
        r = self.cli(cfg, "check")
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("no.such.property", r.stderr)
        cfg = self.config(properties={"enable.auto.offset.store": "true"})
        r = self.cli(cfg, "check")
        self.assertEqual(r.returncode, 3)
        self.assertIn("enable.auto.offset.store", r.stderr)
        # secrets come from the environment through the core's substitution
        cfg = self.config(topics=("^rr.*",), properties={
            "security.protocol": "sasl_plaintext", "sasl.mechanisms": "PLAIN", "sasl.username": "u",
            "sasl.password": "${env:SBK_TEST_PASS}"})
        no_pass = env()
        no_pass.pop("SBK_TEST_PASS", None)
        r = subprocess.run([BIN, "-c", cfg, "check"], capture_output=True, text=True, timeout=30, env=no_pass)
        self.assertEqual(r.returncode, 3)
        self.assertIn("sasl.password", r.stderr)
        r = subprocess.run([BIN, "-c", cfg, "check"], capture_output=True, text=True, timeout=30,
                           env=env(SBK_TEST_PASS="s3cret"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("s3cret", r.stdout + r.stderr)
        cfg = self.config(format="xml")
        r = self.cli(cfg, "check")
        self.assertEqual(r.returncode, 3)
        self.assertIn("format", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
