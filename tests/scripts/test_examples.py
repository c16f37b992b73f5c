#!/usr/bin/env python3
"""Every configuration under conf/examples and conf/sample passes
`syncbridge check` as shipped: options valid, plugins loaded, every
instance created, without contacting anything. The seed flow's two
deployments (onprem-node.json, gcp-side.json) must also keep their routes
(the flow test, test_seed_flow.py, runs them end to end). A file whose
plugin this build left out (--disable-kafka, --disable-odbc, --disable-gcp)
is skipped with the reason."""
import glob
import json
import os
import subprocess
import unittest

from sbtest import BIN, BUILD, SRC, env

EXAMPLES = os.path.join(SRC, "conf", "examples")
PLUGINS = os.path.join(os.path.abspath(BUILD), "plugins", ".libs")


def plugins_of(cfg):
    return {i["plugin"] for kind in ("sources", "sinks", "actions") for i in cfg.get(kind, {}).values()}


class Examples(unittest.TestCase):
    def check(self, path, cwd=None):
        with open(path) as f:
            cfg = json.load(f)
        missing = [p for p in plugins_of(cfg) if not os.path.exists(os.path.join(PLUGINS, p + ".so"))]
        if missing:
            self.skipTest("%s: this build has no %s" % (os.path.basename(path), ", ".join(sorted(missing))))
        # the emulator variables would change the defaults the files rely on
        e = {k: v for k, v in env().items() if not k.endswith("_EMULATOR_HOST")}
        e.update(SB_DEMO_FAKE="http://127.0.0.1:9", SB_DEMO_DIR="/nonexistent")  # the sample's endpoints
        r = subprocess.run([BIN, "-c", path, "check"], capture_output=True, text=True, timeout=60, env=e, cwd=cwd)
        self.assertEqual(r.returncode, 0, "%s: %s" % (path, r.stderr))
        return r.stdout

    def test_every_example_passes_check(self):
        files = sorted(glob.glob(os.path.join(EXAMPLES, "*.json")))
        self.assertGreaterEqual(len(files), 7)
        for path in files:
            with self.subTest(example=os.path.basename(path)):
                self.check(path)

    def test_the_samples_pass_check(self):
        for name in ("syncbridge.json", "gcp-side.json"):
            with self.subTest(sample=name):
                self.check(os.path.join(SRC, "conf", "sample", name), cwd=SRC)

    def test_onprem_node_routes(self):
        out = self.check(os.path.join(EXAMPLES, "onprem-node.json"))
        self.assertIn("route runs_from_logs", out)
        self.assertIn("step 1: publish_log_runs (sink pubsub)", out)
        self.assertIn("route runs_from_kafka", out)
        self.assertIn("step 1: publish_kafka_runs (sink pubsub)", out)
        block = out[out.index("route runs_pushed_from_logs"):]
        self.assertIn("step 1: push_to_gcs (action gcs_copy)", block)
        self.assertIn("step 2: publish_pushed_runs (sink pubsub)", block)

    def test_pushed_runs_take_one_route_on_each_side(self):
        with open(os.path.join(EXAMPLES, "onprem-node.json")) as f:
            onprem = json.load(f)
        with open(os.path.join(EXAMPLES, "gcp-side.json")) as f:
            gcp = json.load(f)
        # the schemas pushed on-prem are exactly those kept out of the plain route
        r = onprem["routes"]
        self.assertEqual(r["runs_pushed_from_logs"]["match"]["all"][1], r["runs_from_logs"]["match"]["all"][1]["not"])
        # what the push adds travels as attributes, and the GCP side routes on it
        attrs = onprem["sinks"]["publish_pushed_runs"]["attributes"]
        self.assertEqual(attrs["gcp_finished_at"], "${gcp_finished_at}")
        g = gcp["routes"]
        self.assertEqual(g["seed_pushed"]["match"], {"field": "gcp_finished_at", "exists": True})
        self.assertEqual(g["seed_pushed"]["steps"], ["bq_register", "sql_register", "bq_gcp_done"])
        for other in ("seed_composer", "seed_dataproc"):
            self.assertIn({"not": g["seed_pushed"]["match"]}, g[other]["match"]["all"], other)

    def test_gcp_side_routes_composer_and_dataproc(self):
        out = self.check(os.path.join(EXAMPLES, "gcp-side.json"))
        for route, copy in (("seed_composer", "copy_dag (action composer)"),
                            ("seed_dataproc", "copy_workflow (action dataproc)")):
            block = out[out.index("route " + route):]
            steps = [l.split(":", 1)[1].split("[")[0].strip() for l in block.splitlines()[1:] if "step " in l][:4]
            self.assertEqual(steps, ["bq_register (sink bigquery)", copy, "sql_register (sink cloudsql)",
                                     "bq_gcp_done (sink bigquery)"], route)


if __name__ == "__main__":
    unittest.main()
