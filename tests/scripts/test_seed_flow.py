#!/usr/bin/env python3
"""The seed flow end to end, through both daemons, with faults everywhere.

The two deployments are the shipped examples, conf/examples/onprem-node.json
and conf/examples/gcp-side.json, with only their addresses, paths and
timings changed (routes, rows and statements are the files'):

  on-prem daemon:  Run Replicator logs (filewatch) and a Kafka topic
                   (librdkafka's mock cluster) -> pubsub
  GCP-side daemon: pubsub_pull -> bigquery (onprem row + pending gcp row)
                   -> composer DAG run, or for schema dwh_fin a dataproc
                   workflow -> cloudsql (a real PostgreSQL through psqlODBC)
                   -> bigquery (the gcp row updated)

against the Google APIs fake (service-account JWTs checked). While runs are
written to the logs and produced to Kafka:
  * 10% of the requests to every Google API the flow uses (OAuth token,
    Pub/Sub publish/pull/ack/modifyAckDeadline, BigQuery, Composer,
    Airflow, Dataproc) fail: 503, 429, or a truncated answer to a request
    that was carried out (the lost-answer case);
  * each daemon is SIGKILLed at random moments and restarted;
  * the PostgreSQL server is stopped and started again once.

Then, for every run: exactly 2 BigQuery rows with the gcp row updated,
exactly one DAG run (or one Dataproc workflow), exactly one Cloud SQL row,
no Dataproc cluster left, nothing dead-lettered or pending in either ledger,
nothing unacknowledged in the subscription; failed on-prem runs are not
published (the example's match). Duplicated publishes are counted and
classified (a kill of the on-prem daemon between the two copies, else a lost
answer) and shown to be absorbed by the GCP side's ledger (one entry per
event_id attribute).

Size: SB_FLOW_RUNS (100), SB_FLOW_KILLS per daemon (2), SB_FLOW_REPEAT (1)
times in a row, SB_FLOW_SEED. `make check-long` runs 1000 runs, 10 kills,
3 times. The report goes to stderr (the make check log keeps it).
"""
import collections
import datetime
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

from sbtest import (BUILD, FAST_GROUP, KCAT, MOCK, PROJECT, SRC, Daemon, Fake, MockCluster, data_of, env, needs,
                    run_cli, wait_for, write_config)
from sqlservers import Postgres, have_postgres, odbc_dir
from test_onprem_e2e import command_of, run_lines

RUNS = int(os.environ.get("SB_FLOW_RUNS", "100"))
KILLS = int(os.environ.get("SB_FLOW_KILLS", "2"))
REPEAT = int(os.environ.get("SB_FLOW_REPEAT", "1"))
HAVE_KAFKA = bool(KCAT) and os.path.exists(MOCK)
PLUGINS = os.path.join(os.path.abspath(BUILD), "plugins", ".libs")
HAVE_PLUGINS = all(os.path.exists(os.path.join(PLUGINS, p + ".so")) for p in
                   ("filewatch", "kafka", "pubsub", "pubsub_pull", "bigquery", "composer", "dataproc", "cloudsql"))
HOST = "hdp-edge-11"
TOPIC = "projects/%s/topics/onprem-runs" % PROJECT
SUB = "projects/%s/subscriptions/gcp-side" % PROJECT
ENV = "projects/%s/locations/us-central1/environments/etl" % PROJECT
DAG = "run_replicator_copy"
DATASET, TABLE = "etl_registry", "runs"
FAULTED = r"^/(token|v1/|bigquery/|airflow/)"  # every Google API; /_fake/ is never faulted
REPORT = []


def example(name):
    with open(os.path.join(SRC, "conf", "examples", name)) as f:
        return json.load(f)


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()


@needs(HAVE_KAFKA, "kcat or the mockcluster helper is missing")
@needs(have_postgres(), "PostgreSQL (initdb, postgres, psql) or psqlODBC is missing")
class SeedFlow(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sbflow.")
        os.chmod(self.dir, 0o755)  # PostgreSQL runs as nobody below it
        self.fake = Fake(self.dir)
        os.makedirs(os.path.join(self.dir, "pgroot"))
        self.pg = Postgres(os.path.join(self.dir, "pgroot"))
        self.mc = MockCluster(3, (("rr-runs", 3),))
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.alive():
                d.kill()
        self.mc.close()
        self.pg.stop()
        self.fake.stop()
        if os.environ.get("SB_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- set-up ----------------------------------------------------------------------------
    def ctl(self, method, path, body=None):
        st, out = self.fake.call(method, path, body)
        self.assertEqual(st, 200, (path, out))
        return out

    def prepare(self):
        self.ctl("POST", "/_fake/reset")
        self.ctl("POST", "/_fake/config", {"airflow_auto_seconds": 0.3, "dataproc_cluster_seconds": 0.3,
                                           "dataproc_job_seconds": 0.3, "pubsub_pull_wait_seconds": 1})
        self.assertEqual(self.fake.call("PUT", "/v1/" + TOPIC, {}, auth=True)[0], 200)
        st, out = self.fake.call("PUT", "/v1/" + SUB, {"topic": TOPIC, "ackDeadlineSeconds": 10}, auth=True)
        self.assertEqual(st, 200, out)
        self.ctl("POST", "/_fake/bigquery/table", {
            "project": PROJECT, "dataset": DATASET, "table": TABLE,
            "fields": [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}, {"name": "command", "type": "STRING"},
                       {"name": "timestamp", "type": "DATETIME"},
                       {"name": "source", "type": "STRING", "mode": "REQUIRED"}]})
        self.ctl("POST", "/_fake/composer/environments", {"name": ENV, "state": "RUNNING"})
        self.ctl("POST", "/_fake/airflow/dags", {"dag_id": DAG})
        self.pg.query("DROP TABLE IF EXISTS runs")
        self.pg.query("CREATE TABLE runs (id BIGINT NOT NULL, source VARCHAR(16) NOT NULL, command TEXT, "
                      "timestamp TIMESTAMP, PRIMARY KEY (id, source))")

    def google(self, inst, **extra):
        """Point a Google instance of an example at the fake, with test-speed retries."""
        inst.pop("proxy", None)
        inst.update({"auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
                     "retry_initial": "20ms", "retry_max_delay": "200ms",
                     "retry": {"initial": "20ms", "max_delay": "300ms", "max_attempts": 100000, "max_time": "1h"}})
        inst.update(extra)
        return inst

    def configs(self, run_dir, logs):
        on = example("onprem-node.json")
        on.update(state_dir=os.path.join(run_dir, "onprem"), log={"level": "info"}, admin={"enabled": False},
                  ledger={"commit_interval": "2ms"}, shutdown_timeout="5s")
        on["sources"]["rr_logs"].update(paths=[os.path.join(logs, "*.log")], host=HOST, poll_interval="100ms",
                                        rotate_wait="300ms")
        props = dict(FAST_GROUP, **{"session.timeout.ms": "2500", "heartbeat.interval.ms": "100"})
        on["sources"]["rr_kafka"].update(brokers=self.mc.bootstrap, topics=["rr-runs"], commit_interval="200ms",
                                         poll_timeout="50ms", properties=props)
        for s in on["sinks"].values():
            self.google(s, topic=TOPIC, batch_max=50, max_messages=50)

        g = example("gcp-side.json")
        g.update(state_dir=os.path.join(run_dir, "gcp"), log={"level": "info"}, admin={"enabled": False},
                 ledger={"commit_interval": "2ms"}, shutdown_timeout="5s")
        self.google(g["sources"]["onprem_runs"], subscription=SUB, ack_deadline="10s", pull_timeout="5s")
        del g["sources"]["onprem_runs"]["retry"]  # a core key of steps, not sources
        for name in ("bq_register", "bq_gcp_done"):
            self.google(g["sinks"][name], project=PROJECT, poll_interval="100ms", batch_max=100)
        self.google(g["actions"]["copy_dag"], environment=ENV, poll_interval="200ms", batch_max=100)
        self.google(g["actions"]["copy_workflow"], project=PROJECT, poll_interval="200ms", batch_max=100,
                    metastore_service="projects/%s/locations/us-central1/services/hive-metastore" % PROJECT)
        g["actions"]["copy_workflow"]["cluster_config"]["gceClusterConfig"].update(
            serviceAccount="rr-dataproc@%s.iam.gserviceaccount.com" % PROJECT,
            subnetworkUri="projects/%s/regions/us-central1/subnetworks/etl" % PROJECT)
        sql = g["sinks"]["sql_register"]
        sql.pop("create_table")
        sql.update(connection=self.pg.connection(), batch_max=100, reconnect_max="1s",
                   retry={"initial": "50ms", "max_delay": "1s", "max_attempts": 100000, "max_time": "1h"},
                   statement="INSERT INTO runs (id, source, command, timestamp) VALUES (:run_id, 'gcp', :command, "
                             ":gcp_finished_at) ON CONFLICT (id, source) DO UPDATE SET command = EXCLUDED.command, "
                             "timestamp = EXCLUDED.timestamp")
        return (write_config(os.path.join(run_dir, "onprem.json"), on),
                write_config(os.path.join(run_dir, "gcp.json"), g))

    def faults_on(self):
        # 10% in all, taken in turn: 4% 503, 3% 429 (of the rest), 3% a lost answer
        self.fake.fault(path_regex=FAULTED, kind="status", status=503, rate=0.04)
        self.fake.fault(path_regex=FAULTED, kind="status", status=429, retry_after="0", rate=0.03 / 0.96)
        self.fake.fault(path_regex=FAULTED, kind="truncate", rate=0.03 / 0.93)

    # -- what the services hold ------------------------------------------------------------------
    def bq_rows(self):
        q = urllib.parse.urlencode({"project": PROJECT, "dataset": DATASET, "table": TABLE})
        return self.ctl("GET", "/_fake/bigquery/table?" + q)

    def sql_rows(self):
        return self.pg.query("SELECT id, source, command, timestamp FROM runs")

    def ledger(self, cfg, *args):
        r = run_cli(cfg, *args, "--json", env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout or "[]")

    # -- the test --------------------------------------------------------------------------------
    def test_seed_flow_under_faults_kills_and_a_sql_restart(self):
        seed = int(os.environ.get("SB_FLOW_SEED", str(int(time.time()))))
        for rep in range(REPEAT):
            self.one_round(seed + rep, rep)
        print("\n".join(["", "seed flow:"] + REPORT), file=sys.stderr)

    def one_round(self, seed, rep):
        rnd = random.Random(seed)
        t_start = time.monotonic()
        self.prepare()
        self.env = env(ODBCSYSINI=odbc_dir(self.dir))
        run_dir = os.path.join(self.dir, "round%d" % rep)
        logs = os.path.join(run_dir, "logs")
        os.makedirs(logs)
        on_cfg, gcp_cfg = self.configs(run_dir, logs)
        topic = "rr-runs"
        n_log = RUNS // 2
        n_kafka = RUNS - n_log
        # runs arrive over a span that grows with their number; kills fall in it and a bit after
        span = max(8.0, RUNS / 15.0)

        expected = {}  # command -> route expected on the GCP side
        failed_cmds = []
        kills = {"onprem": [], "gcp": []}
        lock = threading.Lock()
        stop = threading.Event()

        def schema_for(i):
            return "dwh_fin" if i % 5 == 0 else "edw_prod"  # one run in five takes the Dataproc route

        def log_writer():
            files = [open(os.path.join(logs, "rr-%d.log" % k), "a") for k in range(3)]
            i = 0
            while i < n_log and not stop.is_set():
                schema, table = schema_for(i), "r%d_log_%05d" % (rep, i)
                f = files[rnd.randrange(3)]
                f.write("\n".join(run_lines(schema, table)) + "\n")
                with lock:
                    expected[command_of(schema, table)] = schema
                if i % 20 == 7:  # a failed run: the example publishes succeeded runs only
                    ft = "r%d_failed_%05d" % (rep, i)
                    f.write("\n".join(run_lines("edw_prod", ft, status="failed")) + "\n")
                    failed_cmds.append(command_of("edw_prod", ft))
                f.flush()
                i += 1
                time.sleep(rnd.uniform(0, 2 * span / max(1, n_log)))
            for f in files:
                f.close()

        def producer():
            i = 0
            while i < n_kafka and not stop.is_set():
                k = min(n_kafka - i, rnd.randint(1, 8))
                cmds = []
                for j in range(i, i + k):
                    schema, table = schema_for(j), "r%d_kafka_%05d" % (rep, j)
                    cmds.append(command_of(schema, table, ("load_dt", "2026-11-%02d" % (1 + j % 28))))
                    with lock:
                        expected[cmds[-1]] = schema
                self.mc.produce(topic, cmds)
                i += k
                time.sleep(rnd.uniform(0, 2 * span * k / max(1, n_kafka)))

        on = Daemon(on_cfg, os.path.join(run_dir, "onprem.log"), environ=self.env).start()
        gcp = Daemon(gcp_cfg, os.path.join(run_dir, "gcp.log"), environ=self.env).start()
        self.daemons += [on, gcp]
        self.faults_on()
        holder = {"onprem": on, "gcp": gcp}

        def killer(name):
            # KILLS moments spread over the span and a little after, while
            # runs are published, registered, waited on and recorded
            at = sorted(rnd.uniform(0.5, span * 1.3) for _ in range(KILLS))
            t0 = time.monotonic()
            for t in at:
                time.sleep(max(0, t - (time.monotonic() - t0)))
                d = holder[name]
                if not d.alive():
                    raise AssertionError("%s daemon died by itself:\n%s" % (name, d.log()[-3000:]))
                d.kill()
                kills[name].append(time.time())
                time.sleep(rnd.uniform(0, 0.3))
                nd = Daemon(d.cfg, d.log_path, environ=self.env).start()
                self.daemons.append(nd)
                holder[name] = nd

        def sql_restart():
            time.sleep(span / 2)
            self.pg.stop("fast")
            time.sleep(1.0)
            self.pg.start()

        errors = []

        def guard(fn, *a):
            def run():
                try:
                    fn(*a)
                except BaseException as e:  # noqa: B902 - reported below
                    errors.append(e)
            return threading.Thread(target=run)

        threads = [guard(log_writer), guard(producer), guard(killer, "onprem"), guard(killer, "gcp"),
                   guard(sql_restart)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        if errors:
            raise errors[0]
        self.assertEqual(len(expected), RUNS)

        # drain: faults stay on; every run must come through
        def through():
            rows = self.bq_rows()
            return (len(rows) >= 2 * RUNS and all(r["timestamp"] for r in rows if r["source"] == "gcp")
                    and len(self.sql_rows()) >= RUNS)
        wait_for(through, timeout=max(180, RUNS * 0.6), what="every run through both sites", interval=1.0)
        for name in ("onprem", "gcp"):
            cfg = on_cfg if name == "onprem" else gcp_cfg
            wait_for(lambda: self.ledger(cfg, "runs", "--state", "pending", "--limit", "100000") == [],
                     timeout=60, what="the %s ledger settled" % name, interval=0.5)
        self.fake.clear_faults()
        wait_for(lambda: self.ctl("GET", "/_fake/pubsub/backlog?subscription=" + urllib.parse.quote(SUB))
                 ["unacked"] == 0, timeout=60, what="every message acknowledged", interval=0.5)
        for name, d in holder.items():
            self.assertTrue(d.alive(), "%s daemon died:\n%s" % (name, d.log()[-3000:]))
            self.assertEqual(d.stop(), 0, d.log()[-3000:])
        self.check(rep, seed, expected, failed_cmds, kills, on_cfg, gcp_cfg, time.monotonic() - t_start)

    def check(self, rep, seed, expected, failed_cmds, kills, on_cfg, gcp_cfg, took):
        # Pub/Sub: every run published, none lost; failed runs not published
        msgs = self.fake.messages(TOPIC)
        by_cmd = collections.defaultdict(list)
        for m in msgs:
            by_cmd[data_of(m)].append(m)
        self.assertEqual(set(by_cmd), set(expected), "exactly the succeeded runs are published")
        self.assertFalse(set(failed_cmds) & set(by_cmd))
        run_of = {}
        for cmd, ms in by_cmd.items():
            ids = {m["attributes"]["event_id"] for m in ms}
            rids = {m["attributes"]["run_id"] for m in ms}
            self.assertEqual((len(ids), len(rids)), (1, 1), "one event id and run id per run: %s" % cmd)
            run_of[cmd] = int(rids.pop())
        self.assertEqual(len(set(run_of.values())), RUNS, "run ids are distinct")

        # BigQuery: two rows per run, the gcp row updated
        rows = self.bq_rows()
        per = collections.defaultdict(list)
        for r in rows:
            per[int(r["id"])].append(r)
        self.assertEqual(len(rows), 2 * RUNS)
        for cmd, rid in run_of.items():
            got = sorted(per[rid], key=lambda r: r["source"])
            self.assertEqual([r["source"] for r in got], ["gcp", "onprem"], cmd)
            self.assertTrue(got[0]["timestamp"], "gcp row updated: %s" % cmd)
            self.assertTrue(got[1]["timestamp"], "onprem row has its time: %s" % cmd)
            self.assertEqual({r["command"] for r in got}, {cmd})

        # one DAG run per Composer run, one workflow per Dataproc run, no cluster left
        dag_runs = self.ctl("GET", "/_fake/airflow/state")["runs"]
        runs_per = collections.Counter(r["conf"]["run"]["run_id"] for r in dag_runs)
        composer = {rid for cmd, rid in run_of.items() if expected[cmd] != "dwh_fin"}
        dataproc = {rid for cmd, rid in run_of.items() if expected[cmd] == "dwh_fin"}
        self.assertEqual(set(runs_per), composer)
        self.assertEqual({k: v for k, v in runs_per.items() if v != 1}, {}, "DAG runs per run")
        self.assertTrue(all(r["state"] == "success" for r in dag_runs))
        dp = self.ctl("GET", "/_fake/dataproc/state")
        wfs = [o for o in dp["operations"] if o["metadata"]["@type"].endswith("WorkflowMetadata")]
        self.assertEqual(len(wfs), len(dataproc), "one workflow per Dataproc run")
        self.assertTrue(all(o["done"] and "error" not in o for o in wfs))
        tables = collections.Counter()
        for j in dp["jobs"]:
            tables[j["labels"]["table"]] += 1
        self.assertEqual({t: n for t, n in tables.items() if n != 1}, {}, "one job per table")
        self.assertEqual(len(tables), len(dataproc))
        self.assertEqual(dp["clusters"], [], "no Dataproc cluster left")

        # Cloud SQL: one gcp row per run
        sql = self.sql_rows()
        self.assertEqual(len(sql), RUNS)
        self.assertEqual(sorted(int(r[0]) for r in sql), sorted(run_of.values()))
        self.assertTrue(all(r[1] == "gcp" and r[3] for r in sql))

        # nothing dead-lettered, nothing pending, one GCP ledger entry per run
        for cfg in (on_cfg, gcp_cfg):
            self.assertEqual(self.ledger(cfg, "dlq", "list"), [], cfg)
            self.assertEqual(self.ledger(cfg, "runs", "--state", "pending", "--limit", "100000"), [], cfg)
        done = self.ledger(gcp_cfg, "runs", "--state", "done", "--limit", "100000")
        self.assertEqual(sorted(e["event_id"] for e in done),
                         sorted(by_cmd[c][0]["attributes"]["event_id"] for c in by_cmd))

        # the duplicated publishes, and how they were absorbed
        dups = {c: ms for c, ms in by_cmd.items() if len(ms) > 1}
        extra = sum(len(ms) - 1 for ms in dups.values())
        by_kill = 0
        for ms in dups.values():
            t = sorted(datetime.datetime.fromisoformat(m["publishTime"].replace("Z", "+00:00")).timestamp()
                       for m in ms)
            if any(t[0] <= k <= t[-1] for k in kills["onprem"]):
                by_kill += 1
        backlog = self.ctl("GET", "/_fake/pubsub/backlog?subscription=" + urllib.parse.quote(SUB))
        REPORT.append(
            "round %d (seed %d): %d runs (%d from logs, %d from Kafka; %d Composer, %d Dataproc), %d failed runs "
            "not published, %d + %d SIGKILLs (on-prem + GCP side), PostgreSQL restarted once, 10%% faults on "
            "every Google API; %.0f s" % (rep + 1, seed, RUNS, RUNS // 2, RUNS - RUNS // 2, len(composer),
                                         len(dataproc), len(failed_cmds), len(kills["onprem"]), len(kills["gcp"]),
                                         took))
        REPORT.append(
            "  duplicated publishes: %d messages for %d runs, %d runs published more than once (%d extra copies): "
            "%d with an on-prem kill between "
            "the copies (published, killed before the step was recorded), %d without (the answer was lost: "
            "a truncated reply, so the sink sent it again). Pub/Sub delivered %d times for %d messages "
            "(redeliveries after kills and lost pulls). Absorbed: the GCP side's ledger holds %d entries, one "
            "per event_id attribute, so each run was registered, copied and recorded once."
            % (len(msgs), RUNS, len(dups), extra, by_kill, len(dups) - by_kill, backlog["deliveries"], len(msgs), len(done)))
        log = self.ctl("GET", "/_fake/requests")  # the fake keeps the last 10,000
        faulted = collections.Counter(r["status"] for r in log if r["status"] in (0, 429, 503))
        with open(os.path.join(os.path.dirname(gcp_cfg), "gcp.log"), errors="replace") as f:
            text = f.read()
        sql_lost = text.count("connection lost") + text.count("cannot connect")
        REPORT.append("  faults in the last %d Google API requests: %d x 503, %d x 429, plus truncated answers; "
                      "the PostgreSQL restart showed as %d connection errors of sql_register, retried"
                      % (len(log), faulted[503], faulted[429], sql_lost))
        REPORT.append("  invariants held: 2 BigQuery rows per run with the gcp row updated, 1 DAG run or 1 "
                      "workflow per run, 1 Cloud SQL row per run, no cluster, no dead letter, nothing pending")


if __name__ == "__main__":
    unittest.main()
