#!/usr/bin/env python3
"""The gcs_copy action in the daemon, against the fake's Cloud Storage
(JSON API uploads and XML API multipart uploads):

* exact: binary content with CRLF and \\n\\n, an empty file, a file that is
  an exact multiple of the part size, a multi-part file and a subdirectory
  arrive byte for byte, with Cloud Storage's crc32c equal to the source's;
  the fields gcs_objects, gcs_uri, crc32c and gcp_finished_at are set; a second event for
  the same files sends no byte (skipped: same size and CRC32C).
* glob: a glob copies its matches, named relative to its directory part.
* bucket: a wrong bucket dead-letters the event with Cloud Storage's 404
  message.
* faults: 5xx, connection resets and truncated answers on every storage
  request lose nothing.
* hdfs: the same over the fake's WebHDFS (LISTSTATUS, then OPEN with the
  307 to the DataNode), byte for byte, and skipped the second time.
* changed: a complete answered 404 with no object after it starts a new
  upload (RETRY); a file rewritten with the same size between a SIGKILL and
  the resume gets a new upload, not the old parts.
* kill: SIGKILLs in the middle of a multipart upload; each restart resumes
  from the parts already committed (no committed part is sent again), the
  object ends complete and correct, and no multipart upload is left open.
  SB_GCS_KILLS (default 3; `make check-long` 20) sets the number.
"""
import base64
import calendar
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbtest  # noqa: E402

sys.path.insert(0, os.path.join(sbtest.SRC, "tests", "fake"))
from gfake import crc32c as crcmod  # noqa: E402  (the fake's own CRC-32C, not ours)
from gfake import webhdfs  # noqa: E402

MIB = 1024 * 1024
PART = 5 * MIB
BUCKET = "bkt"
KILLS = int(os.environ.get("SB_GCS_KILLS", "3"))


def crc_b64(data):
    return crcmod.b64(crcmod.crc32c(data))


class Base(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="sbgcs.")
        self.fake = sbtest.Fake(self.d)
        st, out = self.fake.call("POST", "/_fake/storage/buckets", {"name": BUCKET})
        self.assertEqual(st, 200, out)
        self.inp = os.path.join(self.d, "input.jsonl")
        open(self.inp, "w").close()
        self.src = os.path.join(self.d, "runs")
        os.makedirs(self.src)
        self.log = os.path.join(self.d, "daemon.log")

    def tearDown(self):
        self.fake.stop()
        if os.environ.get("SB_KEEP_TMP") != "1":
            shutil.rmtree(self.d, ignore_errors=True)

    def config(self, **opts):
        act = {"plugin": "gcs_copy", "source": self.src + "/${run}", "destination": "gs://${bucket}/copies/${run}",
               "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
               "xml_endpoint": self.fake.base + "/xml", "part_size": PART, "single_max": 1 * MIB, "streams": 4,
               "retry_initial": "20ms", "retry_max_delay": "200ms", "max_attempts": 8,
               "retry": {"initial": "50ms", "max_delay": "500ms", "max_attempts": 100}, "step_timeout": "5m"}
        act.update(opts)
        cfg = {"state_dir": os.path.join(self.d, "state"), "log": {"level": "info"}, "shutdown_timeout": "10s",
               "ledger": {"commit_interval": "2ms"},
               "sources": {"in": {"plugin": "file_in", "path": self.inp, "format": "json", "id_field": "event_id",
                                  "poll_interval": "20ms"}},
               "actions": {"copy": act},
               "routes": {"r": {"sources": ["in"], "steps": ["copy"]}}}
        return sbtest.write_config(os.path.join(self.d, "syncbridge.json"), cfg)

    def event(self, eid, run, bucket=BUCKET):
        with open(self.inp, "a") as f:
            f.write(json.dumps({"event_id": eid, "run": run, "bucket": bucket}) + "\n")

    def write(self, rel, data):
        p = os.path.join(self.src, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return data

    def once(self, cfg, timeout=300, rc=0):
        r = subprocess.run([sbtest.BIN, "--once", "-c", cfg], capture_output=True, text=True, timeout=timeout,
                           env=sbtest.env())
        with open(self.log, "a") as f:
            f.write(r.stderr)
        self.assertEqual(r.returncode, rc, r.stderr[-3000:])
        return r.stderr

    def ledger(self, cfg, state):
        r = sbtest.run_cli(cfg, "runs", "list", "--state", state, "--json", "--limit", "100000", env=sbtest.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout or "[]")

    def added(self, cfg, entry):
        """The fields the copy step added to a ledger entry (runs show)."""
        r = sbtest.run_cli(cfg, "runs", "show", str(entry["entry_id"]), "--json", env=sbtest.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        out = {}
        for st in json.loads(r.stdout)["steps"]:
            out.update(st.get("added") or {})
        return out

    def obj(self, name):
        """(bytes, metadata) of gs://BUCKET/name, read through the fake's JSON API."""
        q = urllib.parse.quote(name, safe="")
        req = urllib.request.Request("%s/storage/v1/b/%s/o/%s" % (self.fake.base, BUCKET, q))
        req.add_header("Authorization", "Bearer fake-static-token")
        with urllib.request.urlopen(req, timeout=30) as r:
            meta = json.loads(r.read())
        req = urllib.request.Request("%s/storage/v1/b/%s/o/%s?alt=media" % (self.fake.base, BUCKET, q))
        req.add_header("Authorization", "Bearer fake-static-token")
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read(), meta

    def objects(self, prefix):
        req = urllib.request.Request("%s/storage/v1/b/%s/o?prefix=%s" % (self.fake.base, BUCKET,
                                                                       urllib.parse.quote(prefix, safe="")))
        req.add_header("Authorization", "Bearer fake-static-token")
        with urllib.request.urlopen(req, timeout=30) as r:
            return sorted(o["name"] for o in json.loads(r.read()).get("items", []))

    def open_uploads(self):
        """The bucket's multipart uploads begun and neither completed nor
        aborted (XML API: GET /BUCKET?uploads)."""
        req = urllib.request.Request("%s/xml/%s?uploads" % (self.fake.base, BUCKET))
        req.add_header("Authorization", "Bearer fake-static-token")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode().count("<Upload>")

    def requests(self, regex):
        st, out = self.fake.call("GET", "/_fake/requests?path_regex=" + urllib.parse.quote(regex))
        self.assertEqual(st, 200)
        return out

    def part_puts(self):
        return [r for r in self.requests(r"^/xml/") if r["method"] == "PUT" and "partNumber=" in str(r["query"])]

    def assert_copied(self, run, files):
        names = self.objects("copies/%s/" % run)
        self.assertEqual(names, sorted("copies/%s/%s" % (run, k) for k in files))
        for rel, data in files.items():
            got, meta = self.obj("copies/%s/%s" % (run, rel))
            self.assertEqual(len(got), len(data), rel)
            self.assertTrue(got == data, "%s differs from the source" % rel)
            self.assertEqual(meta["crc32c"], crc_b64(data), rel)
            self.assertEqual(meta["metadata"]["syncbridge-source"], os.path.join(self.src, run, rel))


class TestCopy(Base):
    def test_exact_copies_then_skip(self):
        rnd = random.Random(7)
        files = {
            "crlf.bin": self.write("r1/crlf.bin", b"a\r\nb\n\nc\r\n\r\n\x00\xff" * 1000 + rnd.randbytes(3000)),
            "empty": self.write("r1/empty", b""),
            "exact_parts.bin": self.write("r1/exact_parts.bin", rnd.randbytes(2 * PART)),
            "three_parts.bin": self.write("r1/three_parts.bin", rnd.randbytes(2 * PART + 12345)),
            "sub/dir/small.txt": self.write("r1/sub/dir/small.txt", b"line one\n\nline two\r\n"),
            "one_mib.bin": self.write("r1/one_mib.bin", rnd.randbytes(MIB)),
        }
        # an upload begun by an attempt that never learnt its id: aborted
        req = urllib.request.Request("%s/xml/%s/copies/r1/three_parts.bin?uploads" % (self.fake.base, BUCKET),
                                     data=b"", method="POST")
        req.add_header("Authorization", "Bearer fake-static-token")
        urllib.request.urlopen(req, timeout=30).read()
        self.assertEqual(self.open_uploads(), 1)
        cfg = self.config()
        self.event("e1", "r1")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r1", files)
        self.assertEqual(self.open_uploads(), 0)
        done = self.ledger(cfg, "done")
        self.assertEqual(len(done), 1)
        fields = self.added(cfg, done[0])
        total = sum(len(v) for v in files.values())
        self.assertEqual(fields["gcs_objects"], {"count": 6, "bytes": total, "copied": 6, "skipped": 0})
        self.assertEqual(fields["gcs_uri"], "gs://%s/copies/r1" % BUCKET)
        whole = b"".join(files[k] for k in sorted(files))
        self.assertEqual(fields["crc32c"], crc_b64(whole))
        # when the copy into Cloud Storage ended, for the registry's gcp row
        self.assertRegex(fields["gcp_finished_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertLess(abs(time.time() - calendar.timegm(time.strptime(fields["gcp_finished_at"],
                                                                          "%Y-%m-%dT%H:%M:%SZ"))), 600)
        # the parts went up with their CRC32C, and the multi-part objects in parts
        parts = self.part_puts()
        self.assertEqual(len(parts), 2 + 3)
        for p in parts:
            self.assertIn("crc32c=", p["headers"].get("X-Goog-Hash", p["headers"].get("x-goog-hash", "")))

        # the same files again: everything is there already, nothing is sent
        self.fake.call("DELETE", "/_fake/requests")
        self.event("e2", "r1")
        self.once(cfg)
        self.assertEqual(self.requests(r"^/(xml|upload)/"), [])
        done = {e["event_id"]: e for e in self.ledger(cfg, "done")}
        self.assertEqual(self.added(cfg, done["e2"])["gcs_objects"]["skipped"], 6)

    def test_glob(self):
        self.write("r2/a.dat", b"A" * 10)
        self.write("r2/b.dat", b"B" * 20)
        self.write("r2/c.txt", b"C")
        cfg = self.config(source=self.src + "/${run}/*.dat")
        self.event("g1", "r2")
        self.once(cfg)
        self.assertEqual(self.objects("copies/r2/"), ["copies/r2/a.dat", "copies/r2/b.dat"])

    def test_wrong_bucket_fails_with_storage_message(self):
        self.write("r3/x", b"x")
        cfg = self.config()
        self.event("w1", "r3", bucket="no-such-bucket")
        self.once(cfg, rc=4)  # 4: something was dead-lettered
        failed = self.ledger(cfg, "dead")
        self.assertEqual(len(failed), 1, self.ledger(cfg, "done"))
        self.assertIn("The specified bucket does not exist.", failed[0]["error"])
        self.assertIn("gs://no-such-bucket", failed[0]["error"])


class TestHdfs(Base):
    def seed(self, path, data=None, size=None, seed=0):
        body = {"path": path}
        if data is not None:
            body["data_b64"] = base64.b64encode(data).decode()
        else:
            body.update(size=size, seed=seed)
            pat = webhdfs.pattern(seed)
            data = (pat * (size // len(pat) + 1))[:size]
        st, out = self.fake.call("POST", "/_fake/webhdfs/seed", body)
        self.assertEqual(st, 200, out)
        return data

    def assert_hdfs_copied(self, run, files):
        self.assertEqual(self.objects("copies/%s/" % run), sorted("copies/%s/%s" % (run, k) for k in files))
        for rel, data in files.items():
            got, meta = self.obj("copies/%s/%s" % (run, rel))
            self.assertTrue(got == data, "%s differs from the source" % rel)
            self.assertEqual(meta["crc32c"], crc_b64(data), rel)
            self.assertEqual(meta["metadata"]["syncbridge-source"], "/td/%s/%s" % (run, rel))

    def test_webhdfs_exact_then_skip(self):
        files = {
            "crlf.bin": self.seed("/td/r6/crlf.bin", b"x\r\ny\n\n\x00\xfe" * 5000),
            "empty": self.seed("/td/r6/empty", b""),
            "sub/big.bin": self.seed("/td/r6/sub/big.bin", size=2 * PART + 333, seed=3),
            "sub/exact.bin": self.seed("/td/r6/sub/exact.bin", size=2 * PART, seed=4),
        }
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, hdfs_user="etl", source="/td/${run}")
        self.event("h1", "r6")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_hdfs_copied("r6", files)
        self.assertEqual(self.open_uploads(), 0)
        opens = [r for r in self.requests(r"^/webhdfs/") if "OPEN" in str(r["query"])]
        self.assertTrue(opens and all("etl" in str(r["query"]) for r in opens))
        self.assertTrue(self.requests(r"^/datanode/"), "no read followed the 307 to the DataNode")
        # again: nothing is uploaded
        self.fake.call("DELETE", "/_fake/requests")
        self.event("h2", "r6")
        self.once(cfg)
        self.assertEqual(self.requests(r"^/(xml|upload)/"), [])
        # a glob in the last component
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, source="/td/${run}/sub/*.bin",
                          destination="gs://${bucket}/copies/g${run}")
        self.event("h3", "r6")
        self.once(cfg)
        self.assertEqual(self.objects("copies/gr6/"), ["copies/gr6/big.bin", "copies/gr6/exact.bin"])

    def test_missing_hdfs_path_fails(self):
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, source="/td/${run}")
        self.event("h4", "nothere")
        self.once(cfg, rc=4)
        dead = self.ledger(cfg, "dead")
        self.assertIn("File does not exist: /td/nothere", dead[0]["error"])


class TestFaults(Base):
    def test_5xx_resets_truncations_lose_nothing(self):
        rnd = random.Random(11)
        files = {"f%d.bin" % k: self.write("r4/f%d.bin" % k, rnd.randbytes(rnd.choice([0, 100, 300000, 2 * PART,
                                                                                       PART + 77])))
                 for k in range(8)}
        rx = "^/(xml|upload|storage)/"
        self.fake.fault(path_regex=rx, kind="status", status=503, rate=0.04)
        self.fake.fault(path_regex=rx, kind="reset", rate=0.03)
        self.fake.fault(path_regex=rx, kind="truncate", rate=0.03)
        cfg = self.config()
        self.event("f1", "r4")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.fake.clear_faults()
        self.assert_copied("r4", files)
        self.assertEqual(self.open_uploads(), 0)


class TestChanged(Base):
    def test_complete_404_then_no_object_starts_again(self):
        """A complete answered 404 is taken for a repeat of one that
        succeeded; when the object is not there either, the upload vanished:
        RETRY and a new upload, not a dead letter."""
        data = self.write("r7/big.bin", random.Random(5).randbytes(2 * PART + 10))
        self.fake.fault(path_regex=r"^/xml/[^?]*\?uploadId=", method="POST", kind="status", status=404,
                        message="The specified multipart upload does not exist.", count=1)
        cfg = self.config()
        self.event("v1", "r7")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r7", {"big.bin": data})
        self.assertEqual(self.open_uploads(), 0)
        with open(self.log) as f:
            self.assertIn("the multipart upload vanished", f.read())

    def test_file_rewritten_same_size_restarts_the_upload(self):
        """A SIGKILL mid-upload, then the file is rewritten with the same
        size: the recorded parts are of the old bytes, so the upload is
        aborted and begun again (mtime/inode in the step state)."""
        rnd = random.Random(9)
        size = 8 * PART
        self.write("r8/big.bin", rnd.randbytes(size))
        cfg = self.config(streams=2)
        self.fake.fault(path_regex=r"^/xml/.*partNumber=", kind="latency", latency_ms=150)
        self.event("m1", "r8")
        d = sbtest.Daemon(cfg, self.log).start()
        deadline = time.time() + 30
        while time.time() < deadline and len([r for r in self.part_puts() if r.get("status") == 200]) < 3:
            time.sleep(0.05)
        d.kill()
        self.fake.clear_faults()
        time.sleep(0.02)  # a different mtime even on a coarse clock
        data = self.write("r8/big.bin", rnd.randbytes(size))
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r8", {"big.bin": data})
        self.assertEqual(self.open_uploads(), 0)
        with open(self.log) as f:
            self.assertIn("is not the file the open upload", f.read())

    def test_file_truncated_under_the_mapping_is_retried_not_a_crash(self):
        """Another process shrinks and regrows the file while it is copied:
        a mapped page past the new end raises SIGBUS, which must fail that
        attempt (retried) instead of killing the daemon. Once the file is
        left alone, the copy is exact."""
        rnd = random.Random(11)
        size = 16 * PART  # long enough to be sending while the size flaps
        path = os.path.join(self.src, "r9", "big.bin")
        self.write("r9/big.bin", rnd.randbytes(size))
        cfg = self.config(streams=2)
        self.event("t1", "r9")
        d = sbtest.Daemon(cfg, self.log).start()
        # flap the size for a while: half, then whole again, a few ms each
        fd = os.open(path, os.O_WRONLY)
        end = time.time() + 4
        while time.time() < end:
            os.ftruncate(fd, size // 3)
            time.sleep(0.003)
            os.ftruncate(fd, size)
            time.sleep(0.003)
        os.close(fd)
        self.assertTrue(d.alive(), "the daemon died while the file changed under it:\n" + d.log()[-3000:])
        # the first event copied the file as some moment of the flapping left
        # it; a second run of the same table after it settles is exact
        deadline = time.time() + 60
        while time.time() < deadline and not self.ledger(cfg, "done"):
            time.sleep(0.1)
        data = self.write("r9/big.bin", rnd.randbytes(size))
        self.event("t2", "r9")
        while time.time() < deadline and len(self.ledger(cfg, "done")) < 2:
            time.sleep(0.1)
        self.assertTrue(d.alive(), d.log()[-3000:])
        self.assertEqual(d.stop(), 0, d.log()[-3000:])
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r9", {"big.bin": data})
        log = d.log()
        print("shrank: %d, changed size: %d" % (log.count("shrank while being copied"),
                                                log.count("changed size while being copied")), file=sys.stderr)


class TestKill(Base):
    def test_sigkill_resumes_without_resending_committed_parts(self):
        seed = int(os.environ.get("SB_GCS_SEED", str(int(time.time()))))
        rnd = random.Random(seed)
        nparts = max(16, 3 * KILLS)  # long enough that every kill lands mid-copy
        size = nparts * PART - 1000
        data = self.write("r5/big.bin", b"".join(rnd.randbytes(MIB) for _ in range(size // MIB + 1))[:size])
        streams = 2
        cfg = self.config(streams=streams)
        # slow parts down so that the kills land in the middle of the copy
        self.fake.fault(path_regex=r"^/xml/.*partNumber=", kind="latency", latency_ms=150)
        self.event("k1", "r5")
        print("seed %d, %d kills" % (seed, KILLS), file=sys.stderr)
        for _ in range(KILLS):
            before = len(self.part_puts())
            d = sbtest.Daemon(cfg, self.log).start()
            # kill mid-upload: once this run has sent a part (a slow start,
            # under ASan on a busy machine, must not make the kill land first)
            deadline = time.time() + 60
            while time.time() < deadline and len(self.part_puts()) == before and d.alive():
                time.sleep(0.02)
            time.sleep(rnd.uniform(0.05, 0.5))
            self.assertTrue(d.alive(), d.log()[-3000:])
            d.kill()
        self.fake.clear_faults()
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r5", {"big.bin": data})
        self.assertEqual(self.open_uploads(), 0)
        with open(self.log) as f:
            self.assertIn("resuming the upload", f.read(), "no kill landed in the middle of the upload")
        # committed parts are never sent again: each kill loses at most the
        # parts in flight (one per stream)
        puts = self.part_puts()
        inits = [r for r in self.requests(r"^/xml/") if r["method"] == "POST" and "uploads" in r["query"]]
        resent = len(puts) - nparts
        print("%d part PUTs for %d parts, %d uploads begun" % (len(puts), nparts, len(inits)), file=sys.stderr)
        self.assertLessEqual(resent, (KILLS + 1) * streams * max(1, len(inits)), "too many parts sent again")
        done = self.ledger(cfg, "done")
        self.assertEqual(self.added(cfg, done[0])["crc32c"], crc_b64(data))


if __name__ == "__main__":
    unittest.main(verbosity=2)
