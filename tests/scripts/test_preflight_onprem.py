#!/usr/bin/env python3
"""`syncbridge preflight` for the on-prem sources: kafka against librdkafka's
mock cluster (brokers answer, topics exist; a closed port fails within the
plugin's 5 s bound), filewatch (each pattern's directory is there and
readable, how many files match) and file_in (the input is a readable file).
Every failure exits 1 and says what to fix; all ok exits 0.
"""
import os
import shutil
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbtest  # noqa: E402
from sbtest import needs  # noqa: E402

PLUGINS = os.environ.get("SYNCBRIDGE_PLUGIN_PATH", os.path.join(sbtest.BUILD, "plugins", ".libs")).split(":")
HAVE_KAFKA_PLUGIN = any(os.path.exists(os.path.join(d, "kafka.so")) for d in PLUGINS)


class Base(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="sbpfo.")

    def tearDown(self):
        if os.environ.get("SB_KEEP_TMP") != "1":
            shutil.rmtree(self.d, ignore_errors=True)

    def preflight(self, sources):
        """Preflight a config of these sources, routed to a discard sink:
        (exit status, stdout, stderr)."""
        cfg = {"state_dir": os.path.join(self.d, "state"), "sources": sources,
               "sinks": {"d": {"plugin": "discard"}},
               "routes": {"r": {"sources": list(sources), "steps": ["d"]}}}
        path = sbtest.write_config(os.path.join(self.d, "sb.json"), cfg)
        r = sbtest.run_cli(path, "preflight", env=sbtest.env(), timeout=60)
        return r.returncode, r.stdout, r.stderr

    def lines(self, out, kind, instance):
        return [l for l in out.splitlines() if l.startswith("%-6s%s: " % (kind, instance))]

    def assert_ok(self, sources, instance, *needles):
        rc, out, err = self.preflight(sources)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("FAIL", out)
        oks = self.lines(out, "ok", instance)
        for n in needles:
            self.assertTrue(any(n in l for l in oks), "%r not in ok lines:\n%s" % (n, out))
        return out

    def assert_fails(self, sources, instance, *needles):
        rc, out, err = self.preflight(sources)
        self.assertEqual(rc, 1, out + err)
        fails = self.lines(out, "FAIL", instance)
        self.assertTrue(fails, out)
        for n in needles:
            self.assertTrue(any(n in l for l in fails), "%r not in failures:\n%s" % (n, out))
        return out


def closed_port():
    """A local port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@unittest.skipUnless(HAVE_KAFKA_PLUGIN, "the kafka plugin is not built (--disable-kafka)")
@needs(os.path.exists(sbtest.MOCK), "the mockcluster helper is missing (make check builds it)")
class TestKafka(Base):
    @classmethod
    def setUpClass(cls):
        cls.mock = sbtest.MockCluster(brokers=3, topics=[("runs", 4), ("runs-b", 2)])

    @classmethod
    def tearDownClass(cls):
        cls.mock.close()

    def kafka(self, **o):
        s = {"plugin": "kafka", "brokers": self.mock.bootstrap, "topics": ["runs"], "group_id": "pf"}
        s.update(o)
        return {"k": s}

    def test_existing_topics(self):
        out = self.assert_ok(self.kafka(topics=["runs", "^runs.*"]), "k",
                             "brokers %s answer (3 brokers)" % self.mock.bootstrap,
                             "topic runs exists (4 partitions)",
                             "topics matching ^runs.* exist (2 topics, 6 partitions)")
        self.assertIn("preflight ", out)
        # read-only: the group never joined, so it committed nothing
        self.assertTrue(all(o == sbtest.NO_OFFSET for o in self.mock.committed("pf", "runs").values()))

    def test_missing_topic(self):
        sources = self.kafka(topics=["runs", "no-such-topic"])
        for _ in range(2):  # not created by the first preflight
            out = self.assert_fails(sources, "k", "topic no-such-topic exists: not found: create it "
                                    "(kafka-topics.sh --create --topic no-such-topic) or fix topics")
            self.assertIn("ok    k: topic runs exists (4 partitions)", out)
        self.assert_fails(self.kafka(topics=["^nothing-.*"]), "k",
                          "topics matching ^nothing-.* exist: no topic this client may see matches")

    def test_brokers_down_fails_in_bounded_time(self):
        port = closed_port()
        t0 = time.monotonic()
        out = self.assert_fails(self.kafka(brokers="127.0.0.1:%d" % port), "k",
                                "brokers 127.0.0.1:%d answer: no metadata within 5 s" % port,
                                "check brokers, that this host reaches them (network, firewall), and the "
                                "TLS/SASL properties")
        self.assertLess(time.monotonic() - t0, 20, out)
        # no topic line when the brokers did not answer
        self.assertNotIn("topic runs", out)


class TestFilewatch(Base):
    def fw(self, *paths):
        return {"fw": {"plugin": "filewatch", "paths": list(paths)}}

    def test_existing_directory(self):
        logs = os.path.join(self.d, "logs")
        os.mkdir(logs)
        for n in ("a.log", "b.log", "c.txt"):
            open(os.path.join(logs, n), "w").close()
        os.mkdir(os.path.join(logs, "d.log"))  # a directory is not a file that matches
        empty = os.path.join(self.d, "empty")
        os.mkdir(empty)
        self.assert_ok(self.fw(os.path.join(logs, "*.log"), os.path.join(empty, "*.log"),
                               os.path.join(self.d, "*", "a.*")), "fw",
                       'directory %s of paths "%s/*.log" is readable by' % (logs, logs),
                       ": 2 files match",
                       'directory %s of paths "%s/*.log" is readable by' % (empty, empty),
                       ": no file matches yet",
                       # a wildcard directory: its fixed part is checked
                       'directory %s of paths "%s/*/a.*"' % (self.d, self.d), ": 1 file matches")

    def test_excluded_files_are_not_counted(self):
        logs = os.path.join(self.d, "logs")
        os.mkdir(logs)
        for n in ("a.log", "a.log.1", "b.log.1"):
            open(os.path.join(logs, n), "w").close()
        sources = self.fw(os.path.join(logs, "a.*"))
        sources["fw"]["exclude"] = [os.path.join(logs, "*.1")]
        self.assert_ok(sources, "fw", ": 1 file matches (and 1 excluded)")

    def test_missing_directory(self):
        missing = os.path.join(self.d, "missing")
        self.assert_fails(self.fw(os.path.join(missing, "*.log")), "fw",
                          'directory %s of paths "%s/*.log" is readable by' % (missing, missing),
                          "it does not exist: create it or fix paths")

    def test_not_a_directory(self):
        # a path under a file (ENOTDIR): unreadable even for root
        self.assert_fails(self.fw("/etc/passwd/x/*.log"), "fw",
                          'directory /etc/passwd/x of paths "/etc/passwd/x/*.log"', "Not a directory: fix paths")

    @unittest.skipIf(os.geteuid() == 0, "root reads a directory whatever its mode")
    def test_unreadable_directory(self):
        locked = os.path.join(self.d, "locked")
        os.mkdir(locked, 0o000)
        try:
            self.assert_fails(self.fw(os.path.join(locked, "*.log")), "fw",
                              "Permission denied: give", "read and execute permission on it")
        finally:
            os.chmod(locked, 0o755)


class TestFileIn(Base):
    def fi(self, path, **o):
        s = {"plugin": "file_in", "path": path}
        s.update(o)
        return {"fi": s}

    def test_readable_file(self):
        p = os.path.join(self.d, "in.txt")
        with open(p, "w") as f:
            f.write("one\ntwo\n")
        self.assert_ok(self.fi(p), "fi", "input %s is a readable file (8 bytes)" % p)

    def test_missing_file(self):
        p = os.path.join(self.d, "nothere.txt")
        self.assert_fails(self.fi(p), "fi", "input %s is a readable file: it does not exist: create it or fix path" % p)

    def test_refused_kinds(self):
        self.assert_fails(self.fi(self.d), "fi", "it is a directory; path names one file")
        fifo = os.path.join(self.d, "fifo")
        os.mkfifo(fifo)
        self.assert_fails(self.fi(fifo), "fi", "it is a FIFO (named pipe): set allow_fifo")
        self.assert_ok(self.fi(fifo, allow_fifo=True), "fi", "(a FIFO, read as a stream)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
