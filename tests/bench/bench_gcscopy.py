#!/usr/bin/env python3
"""make bench, gcs_copy: the daemon copying a local directory to the Google
APIs fake's Cloud Storage, side by side with what the fake can take.

  ceiling     a raw parallel upload loop: `streams` curl processes at once,
              each PUTting whole files to the fake's XML API (no CRC, no
              resume): what the fake absorbs from the most direct client
  gcs_copy    the daemon (--once, one event for the whole directory):
              MB/s, its CPU seconds per GiB and its peak RSS, once with
              local_read mmap (the default) and once with pread
  hdfs        the daemon again, the same shape of data read from the
              fake's WebHDFS (LISTSTATUS, OPEN through the DataNode
              redirect); the fake serves both ends, so this is beside
              the local runs, not a ceiling of its own
  rclone      `rclone copy` with its endpoint at the fake and the same
              parallelism, when rclone is installed; else "skipped"
  resume      once: one SB_BENCH_GCS_RESUME_MB file (4096), the daemon
              SIGKILLed when half its parts are in the fake, then run
              again: the parts the fake had and that were sent again
  crc32c      GiB/s of the CRC-32C on one core (hardware and table)

Runs are interleaved (ceiling, gcs_copy, rclone, ... ROUNDS times) so a
change in the machine's load hits each alike; the load average is printed.
Data: SB_BENCH_GCS_BIG files of SB_BENCH_GCS_BIG_MB MiB and
SB_BENCH_GCS_SMALL files of 256 KiB (defaults: issue 17's 8 x 512 MiB and
2,000, 4.5 GiB). The fake hashes uploads with Debian's python3-crc32c when
it can import it (several times faster than its pure-Python CRC); when
this interpreter cannot and /usr/bin/python3 can (a pyenv python3 first in
PATH), the fake runs under /usr/bin/python3. The fake skips the MD5 of
uploads (its storage_md5 config; SB_BENCH_GCS_FAKE_MD5=1 keeps it), and
a line at the end gives the fake's own CPU per GiB for every run. Targets: throughput >= 0.8 x the ceiling,
>= 1.5 x rclone; CPU s/GiB <= 0.5 x rclone's; peak RSS <= 64 MiB;
CRC32C >= 8 GiB/s.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

BUILD = os.environ.get("SB_TOP_BUILDDIR", ".")
SRC = os.environ.get("SB_TOP_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.path.join(BUILD, "syncbridge")
FAKE = os.path.join(SRC, "tests", "fake", "gfake.py")
CRCBENCH = os.path.join(BUILD, "tests", "bench", "bench_crc32c")
ENV = dict(os.environ)
ENV.setdefault("SYNCBRIDGE_PLUGIN_PATH", "%s/plugins/.libs" % BUILD)
BIG = int(os.environ.get("SB_BENCH_GCS_BIG", "8"))
BIG_MB = int(os.environ.get("SB_BENCH_GCS_BIG_MB", "512"))
SMALL = int(os.environ.get("SB_BENCH_GCS_SMALL", "2000"))
STREAMS = int(os.environ.get("SB_BENCH_GCS_STREAMS", "8"))
ROUNDS = int(os.environ.get("SB_BENCH_GCS_ROUNDS", "2"))
RESUME_MB = int(os.environ.get("SB_BENCH_GCS_RESUME_MB", "4096"))
PART = int(os.environ.get("SB_BENCH_GCS_PART_MB", "16")) * (1 << 20)  # part_size (the default, 16MB)
MIB = 1 << 20
# No MD5 in the fake: it is the fake's largest cost per byte (about 2 CPU
# s/GiB), and every run here shares two cores with it. Cloud Storage hashes
# on its own machines. Objects then carry no md5Hash; rclone checks the MD5
# only when there is one (as for composite objects), gcs_copy only the CRC-32C.
FAKE_CONFIG = {"require_auth": False, "storage_md5": os.environ.get("SB_BENCH_GCS_FAKE_MD5") == "1"}


def log(msg):
    sys.stderr.write("bench_gcscopy: %s\n" % msg)
    sys.stderr.flush()


def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def run_measured(argv, **kw):
    """(wall s, cpu s, peak RSS KiB) of one child process."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("%s failed: %s" % (argv[0], err[-2000:]))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def make_data(d):
    src = os.path.join(d, "data")
    os.makedirs(os.path.join(src, "small"))
    chunk = os.urandom(MIB)
    for k in range(BIG):
        with open(os.path.join(src, "big%d.bin" % k), "wb") as f:
            for _ in range(BIG_MB):
                f.write(chunk)
    for k in range(SMALL):
        with open(os.path.join(src, "small", "s%04d.bin" % k), "wb") as f:
            f.write(os.urandom(256 * 1024))
    total = BIG * BIG_MB * MIB + SMALL * 256 * 1024
    return src, total


def ceiling(base, src, rnd):
    """STREAMS curl processes, each PUTting its share of the files."""
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs)
    shares = [files[k::STREAMS] for k in range(STREAMS)]
    t0 = time.monotonic()
    procs = []
    for k, share in enumerate(shares):
        if not share:
            continue
        args = ["curl", "-s", "-f", "-o", "/dev/null", "-H", "Authorization: Bearer fake-static-token"]
        for n, f in enumerate(share):
            if n:
                args.append("--next")
                args += ["-s", "-f", "-o", "/dev/null", "-H", "Authorization: Bearer fake-static-token"]
            args += ["-T", f, "%s/xml/bench/raw%d/%d/%d" % (base, rnd, k, n)]
        procs.append(subprocess.Popen(args))
    cpu = 0.0
    for p in procs:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError("curl failed")
        cpu += ru.ru_utime + ru.ru_stime
    return time.monotonic() - t0, cpu


def copy_config(base, d, src, tag, **opts):
    """A config copying src to gs://bench/copy/TAG for one event, the
    action's options beside the bench's defaults; its path."""
    inp = os.path.join(d, "in-%s.jsonl" % tag)
    with open(inp, "w") as f:
        f.write(json.dumps({"event_id": "bench-%s" % tag, "run": tag}) + "\n")
    act = {"plugin": "gcs_copy", "source": src, "destination": "gs://bench/copy/${run}", "auth": "static",
           "token": "fake-static-token", "endpoint": base, "xml_endpoint": base + "/xml", "streams": STREAMS,
           "part_size": PART, "single_max": "16MB", "step_timeout": "1h"}
    act.update(opts)
    cfg = {"state_dir": os.path.join(d, "state-%s" % tag), "log": {"level": "warn"},
           "sources": {"in": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id"}},
           "actions": {"copy": act},
           "routes": {"r": {"sources": ["in"], "steps": ["copy"]}}}
    path = os.path.join(d, "bench-%s.json" % tag)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def gcs_copy(base, d, src, tag, **opts):
    """(wall s, CPU s, peak RSS KiB) of one --once copy."""
    return run_measured([BIN, "--once", "-c", copy_config(base, d, src, tag, **opts)], env=ENV)


def seed_hdfs(base):
    """The local data's shape in the fake's WebHDFS, as generated content
    (the fake serves any size from 64 KiB of pattern)."""
    for k in range(BIG):
        call(base, "POST", "/_fake/webhdfs/seed", {"path": "/bench/hdfs/big%d.bin" % k, "size": BIG_MB * MIB, "seed": k})
    for k in range(SMALL):
        call(base, "POST", "/_fake/webhdfs/seed",
             {"path": "/bench/hdfs/small/s%04d.bin" % k, "size": 256 * 1024, "seed": 100 + k})


def part_puts(base, prefix):
    out = json.loads(call(base, "GET", "/_fake/requests?path_regex=" + urllib.parse.quote("^/xml/bench/" + prefix)))
    return [r for r in out if r["method"] == "PUT" and "partNumber=" in r["query"]]


def resume(base, d):
    """(parts, parts the fake had at the kill, parts it had that were sent
    again, part bytes received in all) for one RESUME_MB file. The fake
    logs the part PUTs the kill cut with the bytes that came (cut: true),
    so the bytes sent twice are all the part bytes less the file's."""
    src = os.path.join(d, "resume")
    os.makedirs(src)
    chunk = os.urandom(MIB)
    with open(os.path.join(src, "one.bin"), "wb") as f:
        for _ in range(RESUME_MB):
            f.write(chunk)
    os.sync()
    nparts = (RESUME_MB * MIB + PART - 1) // PART
    path = copy_config(base, d, src, "resume")
    p = subprocess.Popen([BIN, "--once", "-c", path], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            done = [r for r in part_puts(base, "copy/resume/") if r["status"] == 200]
            if len(done) * 2 >= nparts or p.poll() is not None:
                break
            time.sleep(0.2)  # each poll returns the whole log: not so often that it loads the fake
    finally:
        p.kill()
        p.wait()
    # the fake logs the cut PUTs as it sees their connections close: wait
    # until the log stops growing
    first, seen = [], -1
    while len(first) != seen:
        seen = len(first)
        time.sleep(1)
        first = part_puts(base, "copy/resume/")
    had = set(urllib.parse.parse_qs(r["query"])["partNumber"][0] for r in first if r["status"] == 200)
    call(base, "DELETE", "/_fake/requests")
    run_measured([BIN, "--once", "-c", path], env=ENV)
    after = part_puts(base, "copy/resume/")
    again = sum(1 for r in after if urllib.parse.parse_qs(r["query"])["partNumber"][0] in had)
    received = sum(r["size"] for r in first + after)
    return nparts, len(had), again, received


def rclone(base, d, src, rnd):
    conf = os.path.join(d, "rclone.conf")
    with open(conf, "w") as f:
        # the Go client's endpoint is the JSON API's base path, /storage/v1/ included
        f.write("[fake]\ntype = google cloud storage\nanonymous = true\nendpoint = %s/storage/v1/\n" % base)
    return run_measured(["rclone", "--config", conf, "copy", "--transfers", str(STREAMS), "--checkers", str(STREAMS),
                         src, "fake:bench/rclone%d" % rnd])


def crc_speed():
    if not os.path.exists(CRCBENCH):
        return None
    out = subprocess.run([CRCBENCH], capture_output=True, text=True, timeout=120)
    return out.stdout.strip()


def proc_cpu(pid):
    """CPU seconds a running process has used (utime + stime)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def series(rows):
    """The MB/s, CPU s/GiB and peak RSS MiB of (MB/s, CPU, RSS) rows, each
    as one comma-separated string."""
    return tuple(", ".join(fmt % r[k] for r in rows) for k, fmt in enumerate(("%.0f", "%.2f", "%.1f")))


def fake_python():
    """(interpreter, whether it has the C CRC-32C) for the fake."""
    probe = ["-c", "import crc32c; assert crc32c.crc32c(b'123456789') == 0xE3069283"]
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and subprocess.run([py] + probe, capture_output=True).returncode == 0:
            return py, True
    return sys.executable, False


def fake_tmpdir():
    """/dev/shm for the fake's objects when it has room for one run's
    data twice over (a run's objects plus a multipart's parts in flight):
    Cloud Storage's disks are not this machine's, so the fake's writeback
    should not be what a run waits for. None: the default temporary dir."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    need = 2 * (BIG * BIG_MB * MIB + SMALL * 256 * 1024)
    return "/dev/shm" if st.f_bavail * st.f_frsize > need else None


def main():
    d = tempfile.mkdtemp(prefix="sbbench_gcs.")
    fake = None
    try:
        port_file = os.path.join(d, "fake.port")
        py, fast = fake_python()
        log("the fake runs under %s, CRC-32C %s" % (py, "in C (python3-crc32c)" if fast else
                                                     "in pure Python (install python3-crc32c: the fake is then "
                                                     "not what is measured)"))
        fenv = dict(os.environ)
        shm = fake_tmpdir()
        if shm:
            fenv["TMPDIR"] = shm
        log("the fake keeps objects in %s" % (shm or tempfile.gettempdir()))
        fake = subprocess.Popen([py, FAKE, "--port", "0", "--port-file", port_file, "--quiet"], env=fenv)
        t0 = time.time()
        while not os.path.exists(port_file):
            if time.time() - t0 > 20:
                raise RuntimeError("the fake did not start")
            time.sleep(0.05)
        base = "http://127.0.0.1:%s" % open(port_file).read().strip()
        call(base, "POST", "/_fake/config", FAKE_CONFIG)
        call(base, "POST", "/_fake/storage/buckets", {"name": "bench"})
        src, total = make_data(d)
        os.sync()  # the data's writeback would otherwise weigh on round 1's first run only
        gib = total / float(1 << 30)
        log("data: %d x %d MiB + %d x 256 KiB = %.2f GiB, streams %d, load average %s" %
            (BIG, BIG_MB, SMALL, gib, STREAMS, open("/proc/loadavg").read().split()[:3]))
        have_rclone = shutil.which("rclone") is not None
        res = {"ceiling": [], "curl_cpu": [], "mmap": [], "pread": [], "hdfs": [], "rclone": []}
        fake_cpu = {k: [] for k in ("ceiling", "mmap", "pread", "hdfs", "rclone")}

        def measured(name, fn, *args, **kw):
            """fn's result; the fake's CPU s/GiB over it goes to fake_cpu[name]"""
            c0 = proc_cpu(fake.pid)
            out = fn(*args, **kw)
            fake_cpu[name].append((proc_cpu(fake.pid) - c0) / gib)
            return out

        def empty_bucket():
            # every run starts with the fake holding nothing, so none pays
            # for what an earlier one left in memory or on disk
            call(base, "POST", "/_fake/reset")
            call(base, "POST", "/_fake/config", FAKE_CONFIG)
            call(base, "POST", "/_fake/storage/buckets", {"name": "bench"})

        for rnd in range(ROUNDS):
            w, cpu = measured("ceiling", ceiling, base, src, rnd)
            res["ceiling"].append(total / w / 1e6)
            res["curl_cpu"].append(cpu / gib)
            empty_bucket()
            for read in ("mmap", "pread"):
                w, cpu, rss = measured(read, gcs_copy, base, d, src, "%d-%s" % (rnd, read), local_read=read)
                res[read].append((total / w / 1e6, cpu / gib, rss / 1024.0))
                empty_bucket()
            seed_hdfs(base)
            w, cpu, rss = measured("hdfs", gcs_copy, base, d, "/bench/hdfs", "%d-hdfs" % rnd, input="hdfs",
                                   hdfs_url=base)
            res["hdfs"].append((total / w / 1e6, cpu / gib, rss / 1024.0))
            empty_bucket()
            if have_rclone:
                w, cpu, rss = measured("rclone", rclone, base, d, src, rnd)
                res["rclone"].append((total / w / 1e6, cpu / gib, rss / 1024.0))
                empty_bucket()
            log("round %d done, load average %s" % (rnd + 1, open("/proc/loadavg").read().split()[:3]))
        best = max(res["ceiling"])
        lines = ["gcs_copy bench (%.2f GiB, streams %d, %d rounds interleaved, load average at end %s)" %
                 (gib, STREAMS, ROUNDS, " ".join(open("/proc/loadavg").read().split()[:3])),
                 "  ceiling (raw parallel curl PUT loop): %s MB/s; curl CPU s/GiB %s" %
                 (", ".join("%.0f" % x for x in res["ceiling"]), ", ".join("%.2f" % x for x in res["curl_cpu"]))]
        for read in ("mmap", "pread"):
            g = max(res[read])
            mbs, cpu, rss = series(res[read])
            lines += ["  gcs_copy, local_read %s: %s MB/s (best %.0f = %.2f x ceiling, target >= 0.8)" %
                      (read, mbs, g[0], g[0] / best),
                      "    CPU s/GiB: %s; peak RSS: %s MiB (target <= 64)" % (cpu, rss)]
        h = max(res["hdfs"])
        mbs, cpu, rss = series(res["hdfs"])
        lines += ["  gcs_copy from the fake's WebHDFS: %s MB/s (best %.2f x local mmap's)" %
                  (mbs, h[0] / max(res["mmap"])[0]),
                  "    CPU s/GiB: %s; peak RSS: %s MiB (target <= 64)" % (cpu, rss)]
        if have_rclone:
            r = max(res["rclone"])
            lines.append("  rclone copy: %s MB/s, CPU s/GiB %s, peak RSS %s MiB" % series(res["rclone"]))
            for read in ("mmap", "pread"):
                g = max(res[read])
                cpu_ratio = max(x[1] for x in res[read]) / min(x[1] for x in res["rclone"])
                lines.append("    local_read %s / rclone: %.2f x MB/s (target >= 1.5), %.2f x CPU s/GiB (target <= 0.5)"
                             % (read, g[0] / r[0], cpu_ratio))
        else:
            lines.append("  rclone copy: skipped (rclone is not installed)")
        lines.append("  the fake's own CPU s/GiB (what the clients' cores lose to it): " +
                     "; ".join("%s %s" % (k, ", ".join("%.2f" % x for x in v)) for k, v in fake_cpu.items() if v))
        if RESUME_MB > 0:
            nparts, had, again, received = resume(base, d)
            resent = received - RESUME_MB * MIB
            lines.append("  resume: %d MiB file, %d parts of %d MiB, SIGKILL once the fake had %d; %d of those sent "
                         "again after the restart" % (RESUME_MB, nparts, PART // MIB, had, again))
            lines.append("    bytes sent twice (parts cut by the kill included): %.1f MiB = %.2f parts; target: at "
                         "most one part per stream, %d (%s)" %
                         (resent / float(MIB), resent / float(PART), STREAMS,
                          "met" if resent <= STREAMS * PART else "not met"))
            empty_bucket()
        c = crc_speed()
        lines.append("  crc32c on one core: %s (target >= 8 GiB/s)" % (c or "skipped (bench_crc32c not built)"))
        text = "\n".join(lines)
        print(text)
        with open(os.path.join(BUILD, "bench-results.txt"), "a") as f:
            f.write(text + "\n")
        return 0
    finally:
        if fake:
            fake.terminate()
            fake.wait(10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
