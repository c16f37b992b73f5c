#!/usr/bin/env python3
"""`syncbridge preflight` against the fake: a GCP-side config whose every
instance checks the live services, read-only. A clean setup passes; each
seeded misconfiguration fails the check that names it (and exits 1), and
nothing is written to any service.

The fake models IAM as "everything allowed except what a test denies"
(POST /_fake/iam/deny), which testIamPermissions and BigQuery's dry run
answer from.
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbtest  # noqa: E402
import sqlservers  # noqa: E402

P = "p"
TOPIC = "projects/p/topics/onprem-runs"
SUB = "projects/p/subscriptions/gcp-side"
ENV = "projects/p/locations/us-central1/environments/env1"
DAG = "rr_copy"
SCHEMA = [{"name": "id", "type": "INTEGER"}, {"name": "command", "type": "STRING"},
          {"name": "timestamp", "type": "DATETIME"}, {"name": "source", "type": "STRING"}]


class TestPreflight(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="sbpf.")
        cls.fake = sbtest.Fake(cls.top)
        cls.odbc = sqlservers.odbc_dir(os.path.join(cls.top))
        cls.have_sqlite = bool(sqlservers.driver_path("SQLite3"))

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        if os.environ.get("SB_KEEP_TMP") != "1":
            shutil.rmtree(cls.top, ignore_errors=True)

    def ctl(self, method, path, body=None):
        st, out = self.fake.call(method, path, body)
        self.assertEqual(st, 200, (path, out))
        return out

    def setUp(self):
        self.ctl("POST", "/_fake/reset")
        self.d = tempfile.mkdtemp(dir=self.top)
        st, _ = self.fake.call("PUT", "/v1/" + TOPIC, {}, auth=True)
        self.assertEqual(st, 200)
        st, _ = self.fake.call("PUT", "/v1/" + SUB, {"topic": TOPIC}, auth=True)
        self.assertEqual(st, 200)
        self.ctl("POST", "/_fake/bigquery/table", {"project": P, "dataset": "reg", "table": "runs", "fields": SCHEMA})
        self.ctl("POST", "/_fake/composer/environments", {"name": ENV, "state": "RUNNING"})
        self.ctl("POST", "/_fake/airflow/dags", {"dag_id": DAG})
        self.ctl("POST", "/_fake/storage/buckets", {"name": "rr-code"})
        self.ctl("POST", "/_fake/storage/buckets", {"name": "rr-landing"})
        os.makedirs(os.path.join(self.d, "td_backup"))

    def gcp(self, **o):
        base = {"auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base}
        base.update(o)
        return base

    def config(self, **change):
        """The GCP side of the seed flow, plus the on-prem publisher."""
        sinks = {
            "publish": self.gcp(plugin="pubsub", topic=TOPIC),
            "bq_register": self.gcp(plugin="bigquery", project=P, dataset="reg", table="runs", key=["id", "source"],
                                    rows={"onprem.id": "${run_id}", "onprem.command": "${command}",
                                          "onprem.timestamp": "${finished_at}", "onprem.source": "onprem",
                                          "gcp.id": "${run_id}", "gcp.command": "${command}", "gcp.source": "gcp"}),
            "bq_done": self.gcp(plugin="bigquery", project=P, dataset="reg", table="runs", mode="update",
                                key=["id", "source"], rows={"id": "${run_id}", "source": "gcp",
                                                            "timestamp": "${gcp_finished_at}"}),
        }
        if self.have_sqlite:
            sinks["sql"] = {"plugin": "cloudsql",
                            "connection": "DRIVER=SQLite3;Database=%s" % os.path.join(self.d, "reg.db"),
                            "statement": "INSERT INTO runs (id, source) VALUES (:run_id, 'gcp')"}
        actions = {
            "copy_dag": self.gcp(plugin="composer", environment=ENV, dag=DAG),
            "copy_dp": self.gcp(plugin="dataproc", project=P, region="us-central1",
                                metastore_service="projects/p/locations/us-central1/services/hms",
                                driver_uri="gs://rr-code/rr_driver.py"),
            "copy_gcs": self.gcp(plugin="gcs_copy", source=os.path.join(self.d, "td_backup", "${schema}.${table}"),
                                 destination="gs://rr-landing/${schema}", xml_endpoint=self.fake.base + "/xml"),
        }
        sources = {"pulled": self.gcp(plugin="pubsub_pull", subscription=SUB)}
        for k, v in change.items():
            for sect in (sinks, actions, sources):
                if k in sect:
                    if v is None:
                        del sect[k]
                    else:
                        sect[k].update(v)
                        for kk in [kk for kk, vv in v.items() if vv is None]:
                            del sect[k][kk]
        cfg = {"state_dir": os.path.join(self.d, "state"), "sources": sources, "sinks": sinks, "actions": actions,
               "routes": {"r": {"sources": ["pulled"], "steps": list(sinks) + list(actions)}}}
        return sbtest.write_config(os.path.join(self.d, "sb.json"), cfg)

    def preflight(self, cfg):
        e = sbtest.env(ODBCSYSINI=self.odbc)
        r = sbtest.run_cli(cfg, "preflight", env=e, timeout=120)
        return r.returncode, r.stdout, r.stderr

    def fails(self, out):
        return [line for line in out.splitlines() if line.startswith("FAIL")]

    def assert_fails_only(self, cfg, *needles):
        rc, out, err = self.preflight(cfg)
        self.assertEqual(rc, 1, out + err)
        fails = self.fails(out)
        self.assertTrue(fails, out)
        for n in needles:
            self.assertTrue(any(n in f for f in fails), "%r not in failures:\n%s" % (n, out))
        return out

    def test_clean_setup_passes_and_writes_nothing(self):
        self.ctl("DELETE", "/_fake/requests")
        rc, out, err = self.preflight(self.config())
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.fails(out), [])
        for what in ("topic %s exists" % TOPIC, "may publish to", "subscription %s exists" % SUB, "may consume",
                     "table p.reg.runs exists", "dry run of the merge statement", "dry run of the update statement",
                     "Composer environment %s is RUNNING" % ENV, "DAG rr_copy exists and is unpaused",
                     "Dataproc region us-central1", "bucket gs://rr-code", "may read gs://rr-code",
                     "credentials (auth service_account) give a token",
                     "source directory %s is readable" % os.path.join(self.d, "td_backup"), "bucket gs://rr-landing exists",
                     "may write, read and delete objects and run multipart uploads in gs://rr-landing"):
            self.assertIn(what, out)
        if self.have_sqlite:
            self.assertIn("ODBC connection", out)
        self.assertEqual(self.fake.call("GET", "/_fake/pubsub/messages?topic=" + TOPIC)[1], [])
        methods = {e["method"] for e in self.ctl("GET", "/_fake/requests") if not e["path"].startswith("/token")}
        self.assertLessEqual(methods, {"GET", "POST"})
        posts = [e["path"] for e in self.ctl("GET", "/_fake/requests") if e["method"] == "POST"]
        self.assertTrue(all(p.endswith(":testIamPermissions") or p.endswith("/queries") or p == "/token"
                            for p in posts), posts)
        self.assertFalse(self.ctl("GET", "/_fake/airflow/state")["runs"])

    def test_missing_topic_and_subscription(self):
        self.fake.call("DELETE", "/v1/" + SUB, auth=True)
        self.fake.call("DELETE", "/v1/" + TOPIC, auth=True)
        out = self.assert_fails_only(self.config(), "topic %s exists: not found" % TOPIC,
                                     "subscription %s exists: not found" % SUB)
        self.assertIn("gcloud pubsub topics create", out)

    def test_a_subscription_created_at_start_need_not_exist(self):
        # create_subscription: a missing subscription is what the daemon makes
        # at start; preflight checks the topic and the right to attach instead
        self.fake.call("DELETE", "/v1/" + SUB, auth=True)
        rc, out, err = self.preflight(self.config(pulled={"create_subscription": True, "topic": TOPIC}))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("may attach subscription %s to topic %s" % (SUB, TOPIC), out)
        self.ctl("POST", "/_fake/iam/deny", {"permissions": ["pubsub.topics.attachSubscription"]})
        self.assert_fails_only(self.config(pulled={"create_subscription": True, "topic": TOPIC}),
                               "missing pubsub.topics.attachSubscription")

    def test_missing_iam_permissions(self):
        self.ctl("POST", "/_fake/iam/deny", {"permissions": ["pubsub.topics.publish", "pubsub.subscriptions.consume",
                                                            "storage.objects.get"]})
        self.assert_fails_only(self.config(), "missing pubsub.topics.publish; grant the service account "
                               "roles/pubsub.publisher", "missing pubsub.subscriptions.consume",
                               "missing storage.objects.get")

    def test_bigquery_dry_run_refused(self):
        self.ctl("POST", "/_fake/iam/deny", {"permissions": ["bigquery.tables.updateData"]})
        self.assert_fails_only(self.config(), "dry run of the merge statement on p.reg.runs: Access Denied",
                               "roles/bigquery.jobUser")
        self.ctl("DELETE", "/_fake/iam/deny")
        self.ctl("POST", "/_fake/iam/deny", {"permissions": ["bigquery.jobs.create"]})
        self.assert_fails_only(self.config(), "bigquery.jobs.create permission")

    def test_missing_table_and_wrong_column(self):
        out = self.assert_fails_only(self.config(bq_register={"table": "nope"}), "table p.reg.nope exists (tables.get): not found")
        self.assertIn("bq mk --table", out)
        self.assert_fails_only(self.config(bq_done={"rows": {"id": "${run_id}", "source": "gcp", "finished": "x"}}),
                               'has no column "finished"')

    def test_composer_environment_and_dag(self):
        self.ctl("POST", "/_fake/composer/environments", {"name": ENV, "state": "UPDATING"})
        self.assert_fails_only(self.config(), "is RUNNING: it is UPDATING")
        self.ctl("POST", "/_fake/composer/environments", {"name": ENV, "state": "RUNNING"})
        self.ctl("POST", "/_fake/airflow/dags", {"dag_id": DAG, "is_paused": True})
        self.assert_fails_only(self.config(), "DAG rr_copy is paused", "dags unpause")
        self.assert_fails_only(self.config(copy_dag={"dag": "no_such_dag"}), "DAG no_such_dag not found")

    def test_dataproc_region_unreachable_and_bucket_missing(self):
        self.fake.fault(path_regex="^/v1/projects/p/regions/us-central1/clusters", kind="reset")
        self.assert_fails_only(self.config(copy_dp={"driver_uri": "gs://no-bucket/d.py"}),
                               "Dataproc region us-central1 of project p is reachable (clusters.list): could not reach",
                               "bucket gs://no-bucket of driver_uri exists: not found")

    def test_copy_source_bucket_and_multipart_rights(self):
        out = self.assert_fails_only(self.config(copy_gcs={"source": "/nonexistent/td/${table}",
                                                           "destination": "gs://no-landing/x"}),
                                     "source directory /nonexistent/td is readable: No such file or directory",
                                     "bucket gs://no-landing exists: not found")
        self.assertIn("gcloud storage buckets create", out)
        self.ctl("POST", "/_fake/iam/deny", {"permissions": ["storage.multipartUploads.create"],
                                             "resource_regex": "rr-landing"})
        self.assert_fails_only(self.config(), "missing storage.multipartUploads.create; grant the service account "
                               "roles/storage.objectUser on the bucket")
        # fields decide: nothing fixed to check, and that is said
        self.ctl("DELETE", "/_fake/iam/deny")
        rc, out, err = self.preflight(self.config(copy_gcs={"source": "${path}", "destination": "gs://${bucket}/x"}))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("source begins with an event field", out)
        self.assertIn("destination bucket comes from event fields", out)

    def test_copy_from_hdfs(self):
        self.ctl("POST", "/_fake/webhdfs/seed", {"path": "/td_backup/s.t/part-0", "size": 10, "seed": 1})
        hdfs = {"input": "hdfs", "hdfs_url": self.fake.base, "hdfs_user": "etl", "source": "/td_backup/${schema}.${table}"}
        rc, out, err = self.preflight(self.config(copy_gcs=hdfs))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("source directory hdfs:/td_backup is readable", out)
        self.assert_fails_only(self.config(copy_gcs=dict(hdfs, source="/elsewhere/${table}")),
                               "source directory hdfs:/elsewhere is readable: WebHDFS op=GETFILESTATUS /elsewhere: "
                               "HTTP 404")
        self.assert_fails_only(self.config(copy_gcs=dict(hdfs, source="/td_backup/s.t/part-0/${table}")),
                               "it is not a directory on HDFS (type FILE)")

    def test_credentials(self):
        # a key the fake does not trust: no token
        other = os.path.join(self.d, "other.json")
        with open(self.fake.key_file) as f:
            key = json.load(f)
        sbtest_pem = os.path.join(self.d, "o.pem")
        os.system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>/dev/null" % sbtest_pem)
        with open(sbtest_pem) as f:
            key["private_key"] = f.read()
        fd = os.open(other, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(key, f)
        self.assert_fails_only(self.config(publish={"key_file": other}), "publish: credentials (auth service_account)")
        # a token the service refuses
        self.assert_fails_only(self.config(publish={"auth": "static", "token": "not-a-token", "key_file": None}),
                               "refused the token (401")

    def test_odbc_connection(self):
        if not self.have_sqlite:
            self.skipTest("no SQLite ODBC driver")
        self.assert_fails_only(self.config(sql={"connection": "DRIVER=NoSuchDriver;Database=x"}),
                               "sql: ODBC connection", "cannot connect")

    def test_config_error_exits_3(self):
        cfg = self.config(publish={"topic": "projects/p/topics/"})
        rc, out, err = self.preflight(cfg)
        self.assertEqual(rc, 3, out + err)
        self.assertIn("FAIL  publish: configuration", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
