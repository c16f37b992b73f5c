#!/usr/bin/env python3
"""The pubsub sink end to end: the real daemon (file_in JSON lines ->
pubsub) publishing to the Google APIs fake, authenticated with a
service-account key made here with openssl and checked by the fake's token
endpoint. Asserts on what the fake stored (/_fake/pubsub/messages) and on
its request log, on the ledger (runs show) and on the dead-letter store."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import unittest

from sbtest import BIN, PROJECT, Daemon, Fake, data_of, wait_for


class PubSubSink(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="sbpubsub.")
        cls.fake = Fake(cls.top)
        cls.dup_report = []

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        subprocess.run(["rm", "-rf", cls.top])
        for line in cls.dup_report:
            sys.stderr.write(line + "\n")

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.top)
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.inp = os.path.join(self.dir, "in.jsonl")
        self.fake.call("DELETE", "/_fake/faults")
        self.topic = self.id().rsplit(".", 1)[-1].replace("_", "-")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def sink(self, topic=None, **opts):
        s = {"plugin": "pubsub", "topic": "projects/%s/topics/%s" % (PROJECT, topic or self.topic),
             "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
             "retry": {"initial": "20ms", "max_delay": "300ms", "max_attempts": 50}}
        s.update(opts)
        return s

    def config(self, sinks, steps, source_extra=None, log_level="info"):
        src = {"plugin": "file_in", "path": self.inp, "format": "json", "id_field": "event_id", "follow": False}
        src.update(source_extra or {})
        cfg = {"state_dir": os.path.join(self.dir, "state"), "log": {"level": log_level},
               "sources": {"in": src}, "sinks": sinks, "routes": {"r": {"sources": ["in"], "steps": steps}}}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def write(self, events):
        with open(self.inp, "a") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")

    def run_once(self, expect=0):
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, expect, r.stderr[-3000:])
        return r

    def cli(self, *args):
        r = subprocess.run([BIN, "-c", self.cfg] + list(args), capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    @staticmethod
    def run_event(i, table="orders", **extra):
        e = {"event_id": "ev-%03d" % i, "command": "sh run_replicator.sh edw %s %d" % (table, i),
             "schema": "edw", "table": table, "host": "hdp-edge-01", "run_id": 1000 + i, "status": "succeeded"}
        e.update(extra)
        return e

    # ------------------------------------------------------------------------
    def test_messages_attributes_and_ledger(self):
        events = [self.run_event(i) for i in range(5)]
        events.insert(2, {"event_id": "ev-nocmd", "schema": "edw", "table": "x", "status": "succeeded"})
        self.write(events)
        self.fake.create_topic(self.topic)
        # host replaces the standard attribute; note needs escaping in the request body
        self.config({"ps": self.sink(attributes={"origin": "${schema}.${table}", "status": "${status}",
                                                 "host": "edge:${host}", "note": "q\"uote\\ \u00e9\ttab"})}, ["ps"])
        self.run_once(expect=4)  # the event without a command is dead-lettered

        msgs = self.fake.messages(self.topic)
        self.assertEqual(len(msgs), 5)
        for i, m in enumerate(msgs):
            self.assertEqual(data_of(m), "sh run_replicator.sh edw orders %d" % i)
            self.assertEqual(m["attributes"], {"event_id": "ev-%03d" % i, "run_id": str(1000 + i), "schema": "edw",
                                               "table": "orders", "host": "edge:hdp-edge-01",
                                               "origin": "edw.orders", "status": "succeeded",
                                               "note": "q\"uote\\ \u00e9\ttab"})
            self.assertNotIn("orderingKey", m)

        dead = self.cli("dlq", "list", "--json")
        self.assertEqual([d["event_id"] for d in dead], ["ev-nocmd"])
        self.assertIn('has no string field "command"', dead[0]["error"])

        # the ledger records each message id as pubsub_message_id
        ids = {m["attributes"]["event_id"]: m["messageId"] for m in msgs}
        done = self.cli("runs", "--state", "done", "--json", "--limit", "100")
        self.assertEqual(len(done), 5)
        for e in done:
            show = self.cli("runs", "show", str(e["entry_id"]))
            added = [s["added"] for s in show["steps"] if s["instance"] == "ps"]
            self.assertEqual(added[0]["pubsub_message_id"], ids[e["event_id"]])

        # authenticated with the service-account key: a JWT grant at /token, bearer on publish
        st, tok = self.fake.call("GET", "/_fake/requests?path_regex=%5E/token%24")
        self.assertTrue(any(r["status"] == 200 for r in tok))
        for r in self.fake.publishes(self.topic):
            self.assertTrue(r["headers"]["Authorization"].startswith("Bearer "))

    def test_configured_event_id_replaces_the_standard_one(self):
        self.write([self.run_event(0)])
        self.fake.create_topic(self.topic)
        self.config({"ps": self.sink(attributes={"event_id": "run-${table}"})}, ["ps"])
        self.run_once()
        self.assertEqual(self.fake.messages(self.topic)[0]["attributes"]["event_id"], "run-orders")
        # once in the request body: a parser keeping the first duplicate would see ours
        body = self.fake.publishes(self.topic)[0]["body"]
        self.assertEqual(body.count('"event_id"'), 1, body)

    def test_ordering_keys_and_max_messages(self):
        tables = ["a", "b", "c"]
        events = [self.run_event(i, table=tables[i % 3] if i % 7 else "a") for i in range(40)]
        self.write(events)
        self.fake.create_topic(self.topic)
        self.config({"ps": self.sink(ordering_key="${schema}.${table}", max_messages=4)}, ["ps"])
        self.run_once()
        msgs = self.fake.messages(self.topic)
        self.assertEqual(sorted(m["attributes"]["event_id"] for m in msgs), sorted(e["event_id"] for e in events))
        # per key, event order is kept
        for t in tables:
            got = [m["attributes"]["event_id"] for m in msgs if m["orderingKey"] == "edw." + t]
            want = [e["event_id"] for e in events if e["table"] == t]
            self.assertEqual(got, want)
        # no request mixes keys or carries more than max_messages
        sizes = []
        for r in self.fake.publishes(self.topic):
            body = json.loads(r["body"])["messages"]
            sizes.append(len(body))
            self.assertEqual(len({m.get("orderingKey") for m in body}), 1, body)
        self.assertLessEqual(max(sizes), 4)
        self.assertEqual(max(sizes), 4, sizes)
        self.assertEqual(sum(sizes), 40)

    def test_requests_of_a_batch_are_in_flight_together(self):
        """One batch, four ordering keys: four requests, which max_inflight
        (4 by default) sends at once; with max_inflight 1 they go one after
        another. The fake holds each of them 600 ms, so the spread of their
        arrival in its log tells which."""
        tables = ["a", "b", "c", "d"]
        for inflight, together in ((4, True), (1, False)):
            topic = "%s-%d" % (self.topic, inflight)
            self.fake.create_topic(topic)
            self.fake.fault(path_regex="/topics/%s:publish$" % topic, kind="latency", latency_ms=600, count=4)
            open(self.inp, "w").close()
            self.write(self.run_event(i, table=tables[i % 4]) for i in range(8))
            subprocess.run(["rm", "-rf", os.path.join(self.dir, "state")])
            self.config({"ps": self.sink(topic=topic, ordering_key="${schema}.${table}", max_inflight=inflight)},
                        ["ps"])
            self.run_once()
            reqs = self.fake.publishes(topic)
            self.assertEqual(len(reqs), 4, [r["body"] for r in reqs])
            spread = max(r["time"] for r in reqs) - min(r["time"] for r in reqs)
            if together:
                self.assertLess(spread, 0.5, "max_inflight 4: the four requests were not in flight together")
            else:
                self.assertGreater(spread, 1.7, "max_inflight 1: the requests overlapped")
            for t in tables:  # each key's messages in event order, in one request
                got = [m["attributes"]["event_id"] for m in self.fake.messages(topic) if m["orderingKey"] == "edw." + t]
                self.assertEqual(got, ["ev-%03d" % i for i in range(8) if tables[i % 4] == t])

    def test_a_key_whose_request_fails_holds_its_next_one_back_while_others_fly(self):
        """Two keys, two requests each, in flight together: the first request
        to reach the fake gets a 503, so its key's second request is held
        back (RETRY) instead of overtaking it; the other key goes on. In the
        end every message is published once, each key's in event order
        (test_a_key_keeps_its_order_across_retries_and_batches)."""
        tables = ["a", "b"]
        self.write(self.run_event(i, table=tables[i % 2]) for i in range(8))
        self.fake.create_topic(self.topic)
        self.fake.fault(path_regex="/topics/%s:publish$" % self.topic, kind="status", status=503, count=1)
        self.config({"ps": self.sink(ordering_key="${schema}.${table}", max_messages=2)}, ["ps"], log_level="debug")
        r = self.run_once()
        held = [l for l in r.stderr.splitlines() if "retry: held back: an earlier message with ordering key" in l]
        self.assertEqual(len(held), 2, r.stderr[-3000:])  # the failed key's second request: two events
        msgs = self.fake.messages(self.topic)
        self.assertEqual(sorted(m["attributes"]["event_id"] for m in msgs), ["ev-%03d" % i for i in range(8)])
        # the first pass: the refused request and the other key's two; the
        # refused key's second request was not sent
        first = [(q["status"], [m["attributes"]["event_id"] for m in json.loads(q["body"])["messages"]])
                 for q in self.fake.publishes(self.topic)[:3]]
        refused = [ids for st, ids in first if st == 503]
        self.assertEqual(len(refused), 1, first)
        key = "a" if refused[0] == ["ev-000", "ev-002"] else "b"
        self.assertIn(refused[0], (["ev-000", "ev-002"], ["ev-001", "ev-003"]))
        other = sorted(i for st, ids in first if st == 200 for i in ids)
        self.assertEqual(other, ["ev-%03d" % i for i in range(8) if tables[i % 2] != key], first)

    def test_a_key_keeps_its_order_across_retries_and_batches(self):
        """One ordering key, batches of 4, requests of 2: the second request
        gets a 503 twice. Its events are retried on the core's jittered
        schedule and the later batches come meanwhile, yet Pub/Sub gets
        the key's messages in event order: the key's lane holds the later
        ones back (WAIT, not charged to the retry budget) until the retried
        ones are published."""
        n = 12
        self.write(self.run_event(i) for i in range(n))
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="latency", latency_ms=1, count=1)  # the first request goes through
        self.fake.fault(path_regex=rx, kind="status", status=503, count=2)
        self.config({"ps": self.sink(ordering_key="${schema}.${table}", max_messages=2, batch_max=4,
                                     retry={"initial": "50ms", "max_delay": "400ms", "max_attempts": 4})},
                    ["ps"], log_level="debug")
        r = self.run_once()
        published = [m["attributes"]["event_id"] for q in self.fake.publishes(self.topic) if q["status"] == 200
                     for m in json.loads(q["body"])["messages"]]
        self.assertEqual(published, ["ev-%03d" % i for i in range(n)], r.stderr[-3000:])
        waits = [l for l in r.stderr.splitlines() if "looks again" in l and "is to be published first" in l]
        self.assertTrue(waits, r.stderr[-3000:])
        self.assertEqual(self.cli("dlq", "list", "--json"), [])

    def test_a_key_given_up_on_does_not_block_its_later_messages(self):
        """Publishing always fails: each of the key's messages in turn spends
        its retry budget and is dead-lettered (abandon() takes it out of
        its key's lane), so the ones behind it are tried, not left waiting
        until their step_timeout (6h: the run would not end)."""
        n = 6
        self.write(self.run_event(i) for i in range(n))
        self.fake.create_topic(self.topic)
        self.fake.fault(path_regex="/topics/%s:publish$" % self.topic, kind="status", status=503)
        self.config({"ps": self.sink(ordering_key="${schema}.${table}", max_messages=1, batch_max=2,
                                     retry={"initial": "20ms", "max_delay": "50ms", "max_attempts": 2})}, ["ps"])
        t0 = time.monotonic()
        self.run_once(expect=4)
        self.assertLess(time.monotonic() - t0, 30)
        dead = self.cli("dlq", "list", "--json")
        self.assertEqual(sorted(d["event_id"] for d in dead), ["ev-%03d" % i for i in range(n)])
        for d in dead:  # a message held back behind a failing one in its batch is charged too
            self.assertIn("retry budget exhausted after 2 attempts", d["error"])
        tried = [json.loads(q["body"])["messages"][0]["attributes"]["event_id"] for q in self.fake.publishes(self.topic)]
        first = [tried.index(e) for e in sorted(set(tried))]
        self.assertEqual(first, sorted(first), tried)  # none first tried before an earlier one

    def test_a_refused_request_in_flight_with_others_is_resent_message_by_message(self):
        """Two keys, one request each, in flight together; the first to
        arrive is refused whole (400). Its messages go again one by one,
        in order and one after another, through the same flights, while
        the other key's request is answered: every event once, in order."""
        tables = ["a", "b"]
        self.write(self.run_event(i, table=tables[i % 2]) for i in range(6))
        self.fake.create_topic(self.topic)
        self.fake.fault(path_regex="/topics/%s:publish$" % self.topic, kind="status", status=400, count=1,
                        message="Invalid message")
        self.config({"ps": self.sink(ordering_key="${schema}.${table}")}, ["ps"])
        r = self.run_once()
        self.assertIn("re-sending them one by one", r.stderr)
        reqs = [(q["status"], [m["attributes"]["event_id"] for m in json.loads(q["body"])["messages"]])
                for q in self.fake.publishes(self.topic)]
        refused = [ids for st, ids in reqs if st == 400]
        self.assertEqual(len(refused), 1, reqs)
        singles = [ids[0] for st, ids in reqs if st == 200 and len(ids) == 1]
        self.assertEqual(singles, refused[0], reqs)  # one by one, in event order
        msgs = self.fake.messages(self.topic)
        self.assertEqual(sorted(m["attributes"]["event_id"] for m in msgs), ["ev-%03d" % i for i in range(6)])
        for t in tables:
            got = [m["attributes"]["event_id"] for m in msgs if m["orderingKey"] == "edw." + t]
            self.assertEqual(got, ["ev-%03d" % i for i in range(6) if tables[i % 2] == t])

    def test_max_bytes_splits_requests(self):
        events = [self.run_event(i, pad=i) for i in range(30)]
        for e in events:
            e["command"] += " " + "x" * 600
        self.write(events)
        self.fake.create_topic(self.topic)
        self.config({"ps": self.sink(max_bytes="4KB")}, ["ps"])
        self.run_once()
        reqs = self.fake.publishes(self.topic)
        self.assertEqual(sum(len(json.loads(r["body"])["messages"]) for r in reqs), 30)
        self.assertTrue(all(r["size"] <= 4096 for r in reqs), [r["size"] for r in reqs])
        # each ~1 kB message: 4 fit in 4 KB, so the batch became several requests
        self.assertGreaterEqual(len(reqs), 8)
        self.assertEqual(len(self.fake.messages(self.topic)), 30)

    def test_oversize_events_fail_alone(self):
        events = [self.run_event(0),
                  self.run_event(1, command="x" * 10_500_000),
                  self.run_event(2, host="h" * 2000),
                  self.run_event(3, command="y" * 900_000),
                  self.run_event(4)]
        self.write(events)
        self.fake.create_topic(self.topic)
        self.config({"ps": self.sink(max_bytes="1MB")}, ["ps"], {"max_line": "16MB"})
        self.run_once(expect=4)
        msgs = self.fake.messages(self.topic)
        self.assertEqual([m["attributes"]["event_id"] for m in msgs], ["ev-000", "ev-004"])
        dead = {d["event_id"]: d["error"] for d in self.cli("dlq", "list", "--json")}
        self.assertEqual(sorted(dead), ["ev-001", "ev-002", "ev-003"])
        self.assertIn("message for event ev-001 is 10.5 MB, over Pub/Sub's 10 MB limit", dead["ev-001"])
        self.assertIn('attribute "host" of event ev-002 is 2000 bytes, over Pub/Sub\'s 1024-byte limit',
                      dead["ev-002"])
        self.assertIn("message for event ev-003 is 1.2 MB as base64 JSON (data 900.0 kB)", dead["ev-003"])
        self.assertIn("max_bytes", dead["ev-003"])

    def test_body_json_and_template(self):
        events = [self.run_event(i) for i in range(3)]
        self.write(events)
        tj, tt = self.topic + "-json", self.topic + "-tpl"
        self.fake.create_topic(tj)
        self.fake.create_topic(tt)
        self.config({"pj": self.sink(topic=tj, body="json"),
                     "pt": self.sink(topic=tt, body="template", template="${schema}.${table} ${status} #${run_id}")},
                    [["pj", "pt"]])
        self.run_once()
        mj = self.fake.messages(tj)
        self.assertEqual([json.loads(data_of(m)) for m in mj], events)
        mt = self.fake.messages(tt)
        self.assertEqual([data_of(m) for m in mt], ["edw.orders succeeded #%d" % (1000 + i) for i in range(3)])
        self.assertEqual(mt[1]["attributes"]["event_id"], "ev-001")

    def test_faults_everything_arrives_at_least_once(self):
        n = 60
        self.write([self.run_event(i) for i in range(n)])
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=503, count=3)
        self.fake.fault(path_regex=rx, kind="status", status=429, retry_after=1, count=1)
        self.fake.fault(path_regex=rx, kind="reset", count=2)
        self.fake.fault(path_regex=rx, kind="truncate", count=2)
        self.config({"ps": self.sink(max_messages=5, batch_max=10)}, ["ps"])
        t0 = time.monotonic()
        self.run_once()
        took = time.monotonic() - t0
        msgs = self.fake.messages(self.topic)
        counts = {}
        for m in msgs:
            counts[m["attributes"]["event_id"]] = counts.get(m["attributes"]["event_id"], 0) + 1
        self.assertEqual(sorted(counts), ["ev-%03d" % i for i in range(n)], "every event arrives")
        reqs = self.fake.publishes(self.topic)
        statuses = [r["status"] for r in reqs]
        self.assertEqual(statuses.count(503), 3)
        self.assertEqual(statuses.count(429), 1)
        self.assertEqual(statuses.count(0), 2)  # resets
        # Only requests whose answer was lost after the fake stored them
        # (truncated answers) can duplicate: the documented window.
        dups = sum(c - 1 for c in counts.values())
        self.assertLessEqual(dups, 2 * 5)
        self.dup_report.append("test_pubsub: fault run: %d events, %d messages, %d duplicates "
                               "(2 truncated answers of up to 5 messages each), %.1f s" % (n, len(msgs), dups, took))
        # the 429's Retry-After (1 s) held its events back at least that long
        i429 = statuses.index(429)
        first = json.loads(reqs[i429]["body"])["messages"][0]["attributes"]["event_id"]
        later = [r for r in reqs[i429 + 1:]
                 if first in [m["attributes"]["event_id"] for m in json.loads(r["body"])["messages"]]]
        self.assertTrue(later)
        self.assertGreaterEqual(later[0]["time"] - reqs[i429]["time"], 0.95)

    # ---- retries as a fleet (the core's circuit) ------------------------------
    def write_slim(self, n):
        """n events whose requests of 500 stay under the fake's 64 KiB log cut."""
        self.write({"event_id": "e%05d" % i, "command": "c%d" % i} for i in range(n))

    def published_once(self, n):
        counts = {}
        for m in self.fake.messages(self.topic):
            counts[m["attributes"]["event_id"]] = counts.get(m["attributes"]["event_id"], 0) + 1
        self.assertEqual(sorted(counts), ["e%05d" % i for i in range(n)], "every event arrives")
        self.assertEqual([k for k, c in counts.items() if c > 1], [], "and once")

    def run_through_outage(self, seconds, **sink_opts):
        """Run the daemon (--once) on what was written while every publish
        gets a 503 until `seconds` after the first one: the time the outage
        ended and the daemon's log."""
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=503)  # until cleared
        self.config({"ps": self.sink(retry={"initial": "500ms", "max_delay": "2s", "max_attempts": 50},
                                     **sink_opts)}, ["ps"])
        log = open(os.path.join(self.dir, "daemon.log"), "w")
        p = subprocess.Popen([BIN, "--once", "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(p)
        wait_for(lambda: self.fake.publishes(self.topic), what="the first publish")
        time.sleep(seconds)
        self.fake.clear_faults()
        cleared = time.time()
        self.assertEqual(p.wait(120), 0)
        log.close()
        with open(os.path.join(self.dir, "daemon.log")) as f:
            return cleared, f.read()

    def test_outage_is_probed_then_drained_in_full_batches(self):
        # 5,000 pending events and an 8 s 503 outage: one probe at a time at
        # the retry pace (each event on its own timer made hundreds of
        # requests a second), then full batches (they were of one message).
        n = 5000
        self.write_slim(n)
        cleared, text = self.run_through_outage(8, batch_max=500)
        reqs = self.fake.publishes(self.topic)
        failed = [r for r in reqs if r["status"] == 503]
        span = failed[-1]["time"] - failed[0]["time"]
        # pace 0.25-0.5 s, 0.5-1 s, then 1-2 s: about 8 in 8 s
        self.assertLessEqual(len(failed), 20, "%d requests in a %.1f s outage" % (len(failed), span))
        self.assertGreaterEqual(len(failed), 3)
        ok = [r for r in reqs if r["status"] == 200]
        sizes = [len(json.loads(r["body"])["messages"]) for r in ok]
        self.assertEqual(sum(sizes), n)
        self.assertGreaterEqual(statistics.median(sizes), 400, sizes)
        drain = ok[-1]["time"] - cleared
        self.assertLess(drain, 20, "drained %.1f s after the outage" % drain)
        self.published_once(n)
        self.dup_report.append("test_pubsub: outage run: %d events, %d requests during a %.1f s outage, "
                               "%d after it (median %d messages), drained %.1f s after it"
                               % (n, len(failed), span, len(ok), statistics.median(sizes), drain))
        self.assertEqual(text.count("a whole batch failed"), 1, text[-3000:])
        self.assertIn("releasing", text)

    def test_outage_with_ordering_keys_opens_the_circuit_and_keeps_each_keys_order(self):
        """2,000 events over 8 ordering keys and a 5 s 503 outage: the
        lanes do not keep the step's circuit from opening (once) and
        probing at the retry pace, and afterwards every key's messages
        arrive once, in order. (Messages a lane holds back are answered
        RETRY, not WAIT, when none of their batch's requests was
        published, so that such a batch counts as failed whole.)"""
        n, keys = 2000, 8
        self.write({"event_id": "e%05d" % i, "command": "c%d" % i, "table": "t%d" % (i % keys)} for i in range(n))
        _, text = self.run_through_outage(5, batch_max=500, ordering_key="${table}")
        failed = [r for r in self.fake.publishes(self.topic) if r["status"] == 503]
        self.assertLessEqual(len(failed), 12 * keys, "%d requests in the outage" % len(failed))
        self.assertEqual(text.count("a whole batch failed"), 1, text[-3000:])
        self.published_once(n)
        for k in range(keys):
            got = [m["attributes"]["event_id"] for m in self.fake.messages(self.topic) if m["orderingKey"] == "t%d" % k]
            self.assertEqual(got, ["e%05d" % i for i in range(k, n, keys)])

    def test_a_partly_failed_batch_drains_its_keys_in_a_few_requests(self):
        """2,000 events over 8 ordering keys; the first two publish requests
        get a 503, so two keys' messages are retried while the later
        batches hold theirs back. A batch's retries come back together and
        the held-back messages of a key together, so each key drains in a
        few requests. (Each event on a timer of its own brought them back
        one by one, and a key published one message per retry: 250 messages
        took minutes.)"""
        n, keys = 2000, 8
        self.write({"event_id": "e%05d" % i, "command": "c%d" % i, "table": "t%d" % (i % keys)} for i in range(n))
        self.fake.create_topic(self.topic)
        self.fake.fault(path_regex="/topics/%s:publish$" % self.topic, kind="status", status=503, count=2)
        self.config({"ps": self.sink(retry={"initial": "500ms", "max_delay": "2s", "max_attempts": 50},
                                     batch_max=500, ordering_key="${table}")}, ["ps"])
        t0 = time.monotonic()
        self.run_once()
        took = time.monotonic() - t0
        self.published_once(n)
        for k in range(keys):
            got = [m["attributes"]["event_id"] for m in self.fake.messages(self.topic) if m["orderingKey"] == "t%d" % k]
            self.assertEqual(got, ["e%05d" % i for i in range(k, n, keys)])
        ok = [r for r in self.fake.publishes(self.topic) if r["status"] == 200]
        self.dup_report.append("test_pubsub: two failed requests over 8 keys: %d requests after them, %.1f s"
                               % (len(ok), took))
        # 32 here (4 batches of 500 over 8 keys, and the retries); one
        # message per request for the two keys would be about 500
        self.assertLessEqual(len(ok), 150, "%d publish requests for %d events" % (len(ok), n))

    def test_retry_after_holds_every_batch_back(self):
        # Three 429s with Retry-After: 2. Each one pauses the sink: not only
        # its own events but every batch (they went out within 9 ms).
        n = 40
        self.write_slim(n)
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=429, retry_after=2, count=3)
        self.config({"ps": self.sink(batch_max=10, max_messages=10)}, ["ps"])
        self.run_once()
        reqs = self.fake.publishes(self.topic)
        self.assertEqual([r["status"] for r in reqs].count(429), 3)
        for i, r in enumerate(reqs):
            if r["status"] == 429 and i + 1 < len(reqs):
                gap = reqs[i + 1]["time"] - r["time"]
                self.assertGreaterEqual(gap, 1.9, "request %d came %.3f s after a 429 with Retry-After: 2" % (i + 1, gap))
        self.published_once(n)

    def test_sigterm_while_the_circuit_is_open(self):
        # The held events are pending in the ledger: the daemon stops at once,
        # and the next run publishes each of them once.
        n = 300
        self.write_slim(n)
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=503)
        self.config({"ps": self.sink(batch_max=50,
                                     retry={"initial": "1s", "max_delay": "10s", "max_attempts": 50})}, ["ps"])
        d = Daemon(self.cfg, os.path.join(self.dir, "daemon.log")).start()
        try:
            wait_for(lambda: len(self.fake.publishes(self.topic)) >= 2, what="a failed probe")
            t0 = time.monotonic()
            rc = d.stop(timeout=30)
        finally:
            d.kill()
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log()[-3000:])
        self.assertLess(took, 5, "SIGTERM took %.1f s" % took)
        self.assertEqual(len(self.cli("runs", "--state", "pending", "--json", "--limit", "1000")), n)
        self.assertEqual(self.fake.messages(self.topic), [])
        self.fake.clear_faults()
        self.run_once()
        self.published_once(n)

    def test_retry_after_seconds_and_http_date(self):
        # Publish is not idempotent, so a 429 comes back to the sink, which
        # asks the core to wait at least Retry-After, read by the access
        # layer's parser: first as seconds, then as an HTTP-date.
        self.write([self.run_event(0)])
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=429, retry_after=2, count=1)
        # an HTTP-date 3 s after the second answer (1 s resolution: at least 2 s away)
        self.fake.fault(path_regex=rx, kind="status", status=429, retry_after_date_in=3, count=1)
        self.config({"ps": self.sink()}, ["ps"])
        self.run_once()
        reqs = self.fake.publishes(self.topic)
        self.assertEqual([r["status"] for r in reqs], [429, 429, 200])
        self.assertGreaterEqual(reqs[1]["time"] - reqs[0]["time"], 1.95, "Retry-After: 2")
        self.assertGreaterEqual(reqs[2]["time"] - reqs[1]["time"], 1.5, "Retry-After: an HTTP-date 3 s ahead")
        self.assertEqual([m["attributes"]["event_id"] for m in self.fake.messages(self.topic)], ["ev-000"])

    def test_refused_request_is_resent_message_by_message(self):
        # A 400 publishes nothing, so the sink re-sends each message alone to
        # find the offending one; here the refusal was one-off, so all arrive
        # once. Then 403s are retried (credentials/IAM may be fixed).
        self.write([self.run_event(i) for i in range(6)])
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=400, count=1, message="Invalid message")
        self.fake.fault(path_regex=rx, kind="status", status=403, count=2, message="User not authorized")
        self.config({"ps": self.sink()}, ["ps"])
        r = self.run_once()
        ids = [m["attributes"]["event_id"] for m in self.fake.messages(self.topic)]
        self.assertEqual(sorted(ids), ["ev-%03d" % i for i in range(6)])
        self.assertEqual(len(ids), 6)
        self.assertIn("re-sending them one by one", r.stderr)
        self.assertIn("roles/pubsub.publisher", r.stderr)

    def test_400_resend_one_by_one_holds_an_ordering_key_back(self):
        # A 400 refuses the whole request (one ordering key), so the sink
        # re-sends its messages one at a time. When one of those must be
        # retried (here a 503 to ev-001 alone), the key's later messages
        # are held back (RETRY) behind it instead of being published ahead
        # of it in the same pass (e606089).
        self.write([self.run_event(i) for i in range(5)])
        self.fake.create_topic(self.topic)
        rx = "/topics/%s:publish$" % self.topic
        self.fake.fault(path_regex=rx, kind="status", status=400, count=1, message="Invalid message")
        self.fake.fault(path_regex=rx, kind="latency", latency_ms=1, count=1)  # ev-000 alone goes through
        self.fake.fault(path_regex=rx, kind="status", status=503, count=1)     # ev-001 alone: retry
        # at debug level the core logs each retry with its reason
        self.config({"ps": self.sink(ordering_key="${schema}.${table}")}, ["ps"], log_level="debug")
        r = self.run_once()

        def ids(req):
            return [m["attributes"]["event_id"] for m in json.loads(req["body"])["messages"]]

        reqs = self.fake.publishes(self.topic)
        first = [(ids(q), q["status"]) for q in reqs[:3]]
        self.assertEqual(first, [(["ev-%03d" % i for i in range(5)], 400), (["ev-000"], 200), (["ev-001"], 503)])
        self.assertIn("re-sending them one by one", r.stderr)
        # the pass stopped at ev-001: its later messages were retried, not sent
        for i in (2, 3, 4):
            held = [l for l in r.stderr.splitlines() if "event ev-%03d step 1 retry" % i in l]
            self.assertEqual(len(held), 1, r.stderr[-3000:])
            self.assertRegex(held[0], r'held back: an earlier message with ordering key \\?"edw\.orders\\?" was not')
        self.assertFalse([l for l in r.stderr.splitlines() if "event ev-000 step 1 retry" in l])
        # and every event was published exactly once in the end
        got = sorted(m["attributes"]["event_id"] for m in self.fake.messages(self.topic))
        self.assertEqual(got, ["ev-%03d" % i for i in range(5)])
        self.assertTrue(all(m["orderingKey"] == "edw.orders" for m in self.fake.messages(self.topic)))

    def test_permanent_400_dead_letters_with_the_error_line(self):
        self.write([self.run_event(0)])
        self.fake.create_topic(self.topic)
        self.fake.fault(path_regex="/topics/%s:publish$" % self.topic, kind="status", status=400,
                        message="Bad message for this topic")
        self.config({"ps": self.sink()}, ["ps"])
        self.run_once(expect=4)
        dead = self.cli("dlq", "list", "--json")
        self.assertIn("HTTP 400 INVALID_ARGUMENT: Bad message for this topic", dead[0]["error"])
        self.assertEqual(len(self.fake.publishes(self.topic)), 1, "a 400 is not retried")

    def test_topic_created_later(self):
        self.write([self.run_event(i) for i in range(4)])
        self.config({"ps": self.sink()}, ["ps"])
        log = open(os.path.join(self.dir, "daemon.log"), "w")
        p = subprocess.Popen([BIN, "--once", "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(p)
        wait_for(lambda: sum(1 for r in self.fake.publishes(self.topic) if r["status"] == 404) >= 3,
                 what="publishes refused with 404")
        self.assertIsNone(p.poll(), "a missing topic is retried, not dead-lettered")
        self.fake.create_topic(self.topic)
        self.assertEqual(p.wait(30), 0)
        log.close()
        # no ordering key: each event is retried on its own, in any order
        self.assertEqual(sorted(m["attributes"]["event_id"] for m in self.fake.messages(self.topic)),
                         ["ev-%03d" % i for i in range(4)])
        with open(os.path.join(self.dir, "daemon.log")) as f:
            self.assertIn("topic projects/p/topics/%s not found" % self.topic, f.read())

    def test_concurrent_workers(self):
        n = 200
        self.write([self.run_event(i) for i in range(n)])
        self.fake.create_topic(self.topic)
        self.config({"ps": self.sink(max_messages=10, batch_max=20, workers=4)}, ["ps"])
        self.run_once()
        ids = sorted(m["attributes"]["event_id"] for m in self.fake.messages(self.topic))
        self.assertEqual(ids, ["ev-%03d" % i for i in range(n)])

    def test_config_errors(self):
        cases = [({"topic_name": "t"}, "option project is required"),
                 ({"topic_name": "projects/p/topics/"}, "is not projects/PROJECT/topics/TOPIC"),
                 ({"topic_name": "projects/p/topics/t", "project": "q"}, "not used when topic is a full name"),
                 ({"max_messages": 1001}, "sinks.ps.max_messages: 1001 is outside the allowed range 1 to 1000"),
                 ({"max_bytes": "10MB"}, "sinks.ps.max_bytes: 10MB is outside the allowed range 1KB to 10000000"),
                 ({"body": "template"}, "required with body \"template\""),
                 ({"body": "xml"}, 'sinks.ps.body: "xml" is not one of the allowed values: "command", "json", '
                                   '"template"'),
                 ({"attributes": {"a": "${table"}}, "sinks.ps.attributes.a: invalid template")]
        for opts, msg in cases:
            sink = self.sink(**{k: v for k, v in opts.items() if k != "topic_name"})
            if "topic_name" in opts:
                sink["topic"] = opts["topic_name"]
            self.config({"ps": sink}, ["ps"])
            r = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 3, (opts, r.stderr))
            self.assertIn(msg, r.stderr, opts)


if __name__ == "__main__":
    unittest.main(verbosity=2)
