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
  the resume gets a new upload, not the old parts; a file rewritten in
  place while it is copied (local multipart: the upload is aborted, never
  completed; local one-request: the object is deleted; WebHDFS: a new
  modificationTime) is copied again whole on the next attempt.
* create-only: with if_generation_match 0, a 412 where the object holds the
  file's bytes and our event id is done; one with other bytes dead-letters.
* stall: a part whose answer does not come is cut after stall_timeout and
  sent again.
* resumable: with streams 1 a large file is one resumable upload (chunks,
  the last with X-Goog-Hash), also from WebHDFS; after SIGKILLs the session
  goes on from the bytes it persisted (a partial chunk included).
* hdfs negotiate: validated, and no Google token or user.name goes to the
  cluster with it (no Kerberos here).
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

    def config(self, log_level="info", **opts):
        act = {"plugin": "gcs_copy", "source": self.src + "/${run}", "destination": "gs://${bucket}/copies/${run}",
               "auth": "service_account", "key_file": self.fake.key_file, "endpoint": self.fake.base,
               "xml_endpoint": self.fake.base + "/xml", "part_size": PART, "single_max": 1 * MIB, "streams": 4,
               "retry_initial": "20ms", "retry_max_delay": "200ms", "max_attempts": 8,
               "retry": {"initial": "50ms", "max_delay": "500ms", "max_attempts": 100}, "step_timeout": "5m"}
        act.update(opts)
        cfg = {"state_dir": os.path.join(self.d, "state"), "log": {"level": log_level}, "shutdown_timeout": "10s",
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
        # parts cut by a kill are logged too (cut: true); these are the ones that came whole
        return [r for r in self.requests(r"^/xml/") if r["method"] == "PUT" and "partNumber=" in str(r["query"])
                and not r.get("cut")]

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
        # what is there came from one listing of the prefix, not a GET per file
        self.assertEqual(len(self.requests(r"^/storage/v1/b/%s/o$" % BUCKET)), 1)
        self.assertEqual(self.requests(r"^/storage/v1/b/%s/o/" % BUCKET), [])
        done = {e["event_id"]: e for e in self.ledger(cfg, "done")}
        self.assertEqual(self.added(cfg, done["e2"])["gcs_objects"]["skipped"], 6)

    def test_listing_refused_falls_back_to_a_get_per_file(self):
        """A service account allowed objects.get but not objects.list: the
        copy still skips what is there, asking per file."""
        files = {"a": self.write("r5/a", b"a" * 100), "b": self.write("r5/b", b"b" * 200)}
        cfg = self.config()
        self.event("l1", "r5")
        self.once(cfg)
        self.fake.call("DELETE", "/_fake/requests")
        self.fake.fault(path_regex=r"^/storage/v1/b/%s/o\?" % BUCKET, kind="status", status=403, count=1)
        self.event("l2", "r5")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assertEqual(self.requests(r"^/(xml|upload)/"), [])
        self.assertEqual(len(self.requests(r"^/storage/v1/b/%s/o/" % BUCKET)), 2)
        done = {e["event_id"]: e for e in self.ledger(cfg, "done")}
        self.assertEqual(self.added(cfg, done["l2"])["gcs_objects"]["skipped"], 2)
        self.assert_copied("r5", files)

    def test_exact_copies_with_pread(self):
        """local_read pread: the bytes sent are read straight into the
        transfer's buffer; the copies are as exact, by parts and whole."""
        rnd = random.Random(8)
        files = {
            "crlf.bin": self.write("r7/crlf.bin", b"a\r\nb\n\nc\r\n\r\n\x00\xff" * 1000),
            "empty": self.write("r7/empty", b""),
            "exact_parts.bin": self.write("r7/exact_parts.bin", rnd.randbytes(2 * PART)),
            "three_parts.bin": self.write("r7/three_parts.bin", rnd.randbytes(2 * PART + 12345)),
            "one_mib.bin": self.write("r7/one_mib.bin", rnd.randbytes(MIB)),
        }
        cfg = self.config(local_read="pread")
        self.event("p1", "r7")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r7", files)
        self.assertEqual(len(self.part_puts()), 2 + 3)

    def test_glob(self):
        self.write("r2/a.dat", b"A" * 10)
        self.write("r2/b.dat", b"B" * 20)
        self.write("r2/c.txt", b"C")
        cfg = self.config(source=self.src + "/${run}/*.dat")
        self.event("g1", "r2")
        self.once(cfg)
        self.assertEqual(self.objects("copies/r2/"), ["copies/r2/a.dat", "copies/r2/b.dat"])

    def test_wrong_bucket_fails_with_storage_message(self):
        # one file (objects.get) and two (objects.list): the same failure
        self.write("r3/x", b"x")
        self.write("r6/x", b"x")
        self.write("r6/y", b"y")
        cfg = self.config()
        self.event("w1", "r3", bucket="no-such-bucket")
        self.event("w2", "r6", bucket="no-such-bucket")
        self.once(cfg, rc=4)  # 4: something was dead-lettered
        failed = self.ledger(cfg, "dead")
        self.assertEqual(len(failed), 2, self.ledger(cfg, "done"))
        for f in failed:
            self.assertIn("The specified bucket does not exist.", f["error"])
            self.assertIn("gs://no-such-bucket", f["error"])


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

    def test_hdfs_buffer_bounds_the_reads_held(self):
        """hdfs_buffer: a part read from WebHDFS is held whole until it is
        sent, so with room for one part the reads run one after another
        (each waits for the previous part's upload to free its buffer),
        whatever streams is; the copy is still exact."""
        files = {"big.bin": self.seed("/td/r17/big.bin", size=4 * PART - 5, seed=6)}
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, source="/td/${run}", streams=4,
                          hdfs_buffer=PART)
        self.fake.fault(path_regex=r"^/datanode/", kind="latency", latency_ms=300)
        self.event("b1", "r17")
        self.once(cfg)
        self.fake.clear_faults()
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_hdfs_copied("r17", files)
        reads = sorted(r["time"] for r in self.requests(r"^/datanode/"))
        self.assertEqual(len(reads), 4, reads)
        gaps = [b - a for a, b in zip(reads, reads[1:])]
        self.assertGreater(min(gaps), 0.25, "reads overlapped: %s" % gaps)

    @unittest.skipUnless("SPNEGO" in subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout
                         if shutil.which("curl") else False, "libcurl without GSS-API/SPNEGO")
    def test_negotiate_sends_no_token_and_no_user_name(self):
        """hdfs_negotiate: requests to the NameNode and the DataNode go with
        libcurl's SPNEGO armed (nothing here challenges it, so no Kerberos
        exchange happens), never a Google token and never user.name."""
        files = {"a.bin": self.seed("/td/r16/a.bin", b"kerberos\r\n" * 100),
                 "big.bin": self.seed("/td/r16/big.bin", size=PART + 77, seed=5)}
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, hdfs_negotiate=True, source="/td/${run}")
        self.event("n1", "r16")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_hdfs_copied("r16", files)
        cluster = self.requests(r"^/(webhdfs|datanode)/")
        self.assertTrue([r for r in cluster if "OPEN" in str(r["query"])], cluster)
        for r in cluster:
            self.assertNotIn("user.name", str(r["query"]), r)
            self.assertNotIn("delegation", str(r["query"]), r)
            self.assertFalse([k for k in r["headers"] if k.lower() == "authorization"], r)
        # the uploads still carry the Google token
        uploads = self.requests(r"^/(xml|upload)/")
        self.assertTrue(uploads and all(any(k.lower() == "authorization" for k in r["headers"]) for r in uploads))

    def test_negotiate_option_is_validated(self):
        r = sbtest.run_cli(self.config(input="hdfs", hdfs_url=self.fake.base, hdfs_negotiate="yes"), "check",
                           env=sbtest.env())
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("hdfs_negotiate", r.stdout + r.stderr)
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, hdfs_negotiate=True, hdfs_user="etl")
        p = subprocess.run([sbtest.BIN, "--once", "-c", cfg], capture_output=True, text=True, timeout=60,
                           env=sbtest.env())
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("option hdfs_negotiate: Kerberos excludes hdfs_user", p.stderr)
        # the cluster's options on a local copy would be silently unused
        r = sbtest.run_cli(self.config(hdfs_user="etl"), "check", env=sbtest.env())
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('option hdfs_user: it is for input "hdfs", and input is "local"', r.stdout + r.stderr)

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


class TestResumable(Base):
    def chunk_puts(self):
        return [r for r in self.requests(r"^/upload/") if r["method"] == "PUT" and "upload_id=" in str(r["query"])
                and not r.get("cut")]

    def test_one_stream_is_a_resumable_upload(self):
        """streams 1: a large file is one resumable upload (JSON API), its
        chunks one after another, the last with X-Goog-Hash; no XML parts."""
        rnd = random.Random(21)
        files = {"big.bin": self.write("r17/big.bin", rnd.randbytes(3 * PART + 123)),
                 "exact.bin": self.write("r17/exact.bin", rnd.randbytes(2 * PART)),
                 "small.txt": self.write("r17/small.txt", b"one\r\n\n")}
        cfg = self.config(streams=1)
        self.event("u1", "r17")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r17", files)
        self.assertEqual(self.part_puts(), [])
        inits = [r for r in self.requests(r"^/upload/") if r["method"] == "POST"
                 and "uploadType=resumable" in str(r["query"])]
        self.assertEqual(len(inits), 2)
        puts = self.chunk_puts()
        self.assertEqual(len(puts), 4 + 2)
        finals = [p for p in puts if any(k.lower() == "x-goog-hash" for k in p["headers"])]
        self.assertEqual(len(finals), 2, "the last chunk of each file carries the CRC32C")
        # again: nothing is sent
        self.fake.call("DELETE", "/_fake/requests")
        self.event("u2", "r17")
        self.once(cfg)
        self.assertEqual(self.requests(r"^/(xml|upload)/"), [])

    def test_chunks_persisted_in_part_go_on_from_the_range(self):
        """Cloud Storage may persist only part of a chunk: the 308's Range
        says how much, and the copy goes on from there (the CRC of the
        bytes persisted read again from the file, mapped or not)."""
        rnd = random.Random(23)
        self.fake.call("POST", "/_fake/config", {"storage_resumable_persist_max": MIB})
        try:
            for k, read in enumerate(("mmap", "pread")):
                run = "r20%d" % k
                files = {"big.bin": self.write(run + "/big.bin", rnd.randbytes(2 * PART + 99))}
                cfg = self.config(streams=1, local_read=read)
                self.event("p%d" % k, run)
                self.once(cfg)
                self.assertEqual(self.ledger(cfg, "dead"), [], read)
                self.assert_copied(run, files)
        finally:
            self.fake.call("POST", "/_fake/config", {"storage_resumable_persist_max": 0})
        # 2 x 3 chunks of 5 MiB without the cap; with 1 MiB persisted per
        # request each chunk is sent again from where the last one stopped
        self.assertGreater(len(self.chunk_puts()), 2 * 6, "the chunks were persisted whole")

    def test_sigkill_resumes_the_session_from_what_was_persisted(self):
        rnd = random.Random(22)
        nchunks = 10
        data = self.write("r18/big.bin", rnd.randbytes(nchunks * PART - 7))
        cfg = self.config(streams=1, log_level="debug")
        self.fake.fault(path_regex=r"^/upload/.*upload_id=", method="PUT", kind="latency", latency_ms=200)
        self.event("u3", "r18")
        kills = 2
        for _ in range(kills):
            mark = len(self.chunk_puts())
            d = sbtest.Daemon(cfg, self.log).start()
            deadline = time.time() + 60
            while time.time() < deadline and d.alive() and len(self.chunk_puts()) < mark + 2:
                time.sleep(0.02)
            time.sleep(0.1)
            self.assertTrue(d.alive(), d.log()[-3000:])
            d.kill()
        self.fake.clear_faults()
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r18", {"big.bin": data})
        with open(self.log) as f:
            log = f.read()
        self.assertIn("resuming the resumable upload of copies/r18/big.bin at byte", log)
        inits = [r for r in self.requests(r"^/upload/") if r["method"] == "POST"]
        self.assertEqual(len(inits), 1, "a new session was begun instead of resuming")
        sent = sum(r["size"] for r in self.chunk_puts())
        print("%d bytes sent for %d" % (sent, len(data)), file=sys.stderr)
        self.assertLessEqual(sent, len(data) + kills * PART, "more than a chunk per kill sent again")

    def test_hdfs_one_stream(self):
        size = 2 * PART + 5
        st, out = self.fake.call("POST", "/_fake/webhdfs/seed", {"path": "/td/r19/big.bin", "size": size, "seed": 7})
        self.assertEqual(st, 200, out)
        pat = webhdfs.pattern(7)
        data = (pat * (size // len(pat) + 1))[:size]
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, source="/td/${run}", streams=1)
        self.event("u4", "r19")
        self.once(cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        got, meta = self.obj("copies/r19/big.bin")
        self.assertTrue(got == data)
        self.assertEqual(meta["crc32c"], crc_b64(data))
        self.assertEqual(len(self.chunk_puts()), 3)


class TestStall(Base):
    def test_stalled_part_is_cut_after_stall_timeout_and_sent_again(self):
        """A part whose answer does not come (the fake sits on it for 20 s)
        moves no byte: after stall_timeout it is cut and sent again, and the
        copy is exact, long before the 60 s per-attempt timeout."""
        data = self.write("r15/big.bin", random.Random(15).randbytes(3 * PART))
        cfg = self.config(stall_timeout="1s", log_level="debug")
        self.fake.fault(path_regex=r"^/xml/.*partNumber=2&", kind="latency", latency_ms=20000, count=1)
        self.event("s1", "r15")
        t0 = time.time()
        self.once(cfg)
        took = time.time() - t0
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r15", {"big.bin": data})
        with open(self.log) as f:
            log = f.read()
        self.assertRegex(log, r"PUT \S+partNumber=2&\S+: timed out \(Operation too slow")
        self.assertLess(took, 15, "the stalled part waited for the fake instead of being cut")

    def test_stall_timeout_is_checked(self):
        cfg = self.config(stall_timeout="500ms")
        r = sbtest.run_cli(cfg, "check", env=sbtest.env())
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("stall_timeout", r.stdout + r.stderr)


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

    def rewrite_in_place(self, path, data):
        """New bytes over the old ones: same inode, same size, new mtime."""
        fd = os.open(path, os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def wait_first_part(self, d, timeout=30):
        """Until the daemon's debug log shows a part answered 200 (the fake's
        own request log lags while it hashes parts)."""
        deadline = time.time() + timeout
        while time.time() < deadline and d.alive():
            if any("partNumber=" in ln and "-> 200" in ln for ln in d.log().splitlines()):
                return
            time.sleep(0.01)
        self.fail("no part was sent:\n" + d.log()[-3000:])

    def wait_done(self, d, cfg, n=1, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.ledger(cfg, "done")) < n and d.alive():
            time.sleep(0.05)
        self.assertTrue(d.alive(), d.log()[-3000:])
        self.assertEqual(d.stop(), 0, d.log()[-3000:])

    def test_file_rewritten_in_place_during_the_copy_is_copied_again_whole(self):
        """The file is rewritten in place, same size, while its parts go up:
        before the upload is completed its mtime/ctime tell, the upload is
        aborted and the next attempt copies the new version whole (no object
        made of two versions)."""
        rnd = random.Random(13)
        size = 8 * PART
        path = os.path.join(self.src, "r10", "big.bin")
        self.write("r10/big.bin", rnd.randbytes(size))
        cfg = self.config(streams=2, log_level="debug")
        self.fake.fault(path_regex=r"^/xml/.*partNumber=", kind="latency", latency_ms=300)
        self.event("c1", "r10")
        d = sbtest.Daemon(cfg, self.log).start()
        self.wait_first_part(d)
        data = rnd.randbytes(size)
        self.rewrite_in_place(path, data)
        self.fake.clear_faults()
        self.wait_done(d, cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r10", {"big.bin": data})
        self.assertEqual(self.open_uploads(), 0)
        self.assertIn("%s changed while being copied (mtime " % path, d.log())
        completes = [r for r in self.requests(r"^/xml/") if r["method"] == "POST" and "uploadId=" in str(r["query"])]
        self.assertEqual(len(completes), 1, "an upload of the old version was completed")

    def test_small_file_rewritten_during_its_upload_is_deleted_and_copied_again(self):
        """A single-request upload cannot be held back before it is final:
        the object it made is deleted when the file changed under it."""
        path = os.path.join(self.src, "r11", "small.bin")
        self.write("r11/small.bin", b"old " * 16384)
        cfg = self.config()
        # the upload waits in the fake while the file is rewritten
        self.fake.fault(path_regex=r"^/upload/", kind="latency", latency_ms=1500, count=1)
        self.event("c2", "r11")
        d = sbtest.Daemon(cfg, self.log).start()
        deadline = time.time() + 30
        while time.time() < deadline and not [r for r in self.requests(r"small\.bin")
                                              if r["method"] == "GET" and r.get("status") == 404]:
            time.sleep(0.02)
        time.sleep(0.2)
        data = b"new " * 16384
        self.rewrite_in_place(path, data)
        self.wait_done(d, cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r11", {"small.bin": data})
        self.assertIn("%s changed while being copied (mtime " % path, d.log())
        deletes = [r for r in self.requests(r"small\.bin") if r["method"] == "DELETE"]
        self.assertEqual(len(deletes), 1, "the object of the changed file was not deleted")
        self.assertIn("ifGenerationMatch=", str(deletes[0]["query"]))

    def test_hdfs_file_replaced_during_the_copy_is_copied_again_whole(self):
        """WebHDFS: the file's modificationTime from GETFILESTATUS, asked
        again after the last part, tells that it was rewritten."""
        def seed(size, k):
            st, out = self.fake.call("POST", "/_fake/webhdfs/seed", {"path": "/td/r12/big.bin", "size": size,
                                                                     "seed": k})
            self.assertEqual(st, 200, out)
            pat = webhdfs.pattern(k)
            return (pat * (size // len(pat) + 1))[:size]
        size = 6 * PART + 5
        seed(size, 1)
        cfg = self.config(input="hdfs", hdfs_url=self.fake.base, source="/td/${run}", streams=2, log_level="debug")
        self.fake.fault(path_regex=r"^/xml/.*partNumber=", kind="latency", latency_ms=300)
        self.event("c3", "r12")
        d = sbtest.Daemon(cfg, self.log).start()
        self.wait_first_part(d)
        data = seed(size, 2)
        self.fake.clear_faults()
        self.wait_done(d, cfg)
        self.assertEqual(self.ledger(cfg, "dead"), [])
        got, meta = self.obj("copies/r12/big.bin")
        self.assertTrue(got == data, "the object is not the new version")
        self.assertEqual(self.open_uploads(), 0)
        self.assertIn("/td/r12/big.bin changed while being copied (mtime ", d.log())

    def test_file_truncated_under_the_mapping_is_retried_not_a_crash(self):
        """Another process shrinks and regrows the file while it is copied:
        a mapped page past the new end raises SIGBUS, which must fail that
        attempt (retried) instead of killing the daemon. Once the file is
        left alone, the copy is exact."""
        self.truncated_while_read()

    def test_file_truncated_under_pread_is_retried(self):
        """The same with local_read pread: a short read fails the attempt."""
        self.truncated_while_read(local_read="pread")

    def truncated_while_read(self, **opts):
        rnd = random.Random(11)
        size = 16 * PART  # long enough to be sending while the size flaps
        path = os.path.join(self.src, "r9", "big.bin")
        self.write("r9/big.bin", rnd.randbytes(size))
        cfg = self.config(streams=2, **opts)
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


class TestCreateOnly(Base):
    def put_object(self, name, data, metadata=None):
        """Make gs://BUCKET/name (JSON API multipart upload) as another writer would."""
        meta = json.dumps({"name": name, "metadata": metadata or {}}).encode()
        body = (b"--b\r\nContent-Type: application/json\r\n\r\n" + meta + b"\r\n--b\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--b--\r\n")
        req = urllib.request.Request("%s/upload/storage/v1/b/%s/o?uploadType=multipart" % (self.fake.base, BUCKET),
                                     data=body, method="POST")
        req.add_header("Authorization", "Bearer fake-static-token")
        req.add_header("Content-Type", "multipart/related; boundary=b")
        urllib.request.urlopen(req, timeout=30).read()

    def test_412_with_our_bytes_is_success(self):
        """With if_generation_match 0, the object appears between the check
        and the upload with the file's bytes and this event's id (as when
        the upload's first answer was lost and the access layer sent it
        again): the 412 is checked against the object and taken as done."""
        data = self.write("r13/a.bin", random.Random(3).randbytes(65536))
        cfg = self.config(if_generation_match=0)
        self.fake.fault(path_regex=r"^/upload/", kind="latency", latency_ms=2000, count=1)
        self.event("o1", "r13")
        d = sbtest.Daemon(cfg, self.log).start()
        deadline = time.time() + 30
        while time.time() < deadline and not [r for r in self.requests(r"a\.bin")
                                              if r["method"] == "GET" and r.get("status") == 404]:
            time.sleep(0.02)
        time.sleep(0.2)  # the upload now waits in the fake
        self.put_object("copies/r13/a.bin", data, {"syncbridge-event-id": "o1",
                                                   "syncbridge-source": os.path.join(self.src, "r13", "a.bin")})
        deadline = time.time() + 60
        while time.time() < deadline and not self.ledger(cfg, "done") and d.alive():
            time.sleep(0.05)
        self.assertEqual(d.stop(), 0, d.log()[-3000:])
        self.assertEqual(self.ledger(cfg, "dead"), [])
        self.assert_copied("r13", {"a.bin": data})
        uploads = [r for r in self.requests(r"^/upload/") if "uploadType=multipart" in str(r["query"])]
        self.assertEqual([r["status"] for r in uploads], [200, 412], "the test's own upload, then the daemon's")
        self.assertIn("412 to a repeated request; the object is the one our first request made", d.log())

    def test_412_with_other_bytes_fails(self):
        self.write("r14/a.bin", b"ours" * 1000)
        self.put_object("copies/r14/a.bin", b"theirs" * 1000)
        cfg = self.config(if_generation_match=0)
        self.event("o2", "r14")
        self.once(cfg, rc=4)
        dead = self.ledger(cfg, "dead")
        self.assertEqual(len(dead), 1)
        self.assertIn("uploading gs://%s/copies/r14/a.bin: HTTP 412" % BUCKET, dead[0]["error"])
        got, _ = self.obj("copies/r14/a.bin")
        self.assertEqual(got, b"theirs" * 1000)


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
