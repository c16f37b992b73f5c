#!/usr/bin/env python3
"""The bigquery sink's time_zone with IANA zone names, held against
Python's zoneinfo as the oracle (a TZif reader we did not write).

tests/unit/bq_zone_probe (built by `make check`) runs the sink's own code:
for each "ZONE EPOCH" line it prints the UTC offset and the DATETIME that
bq_type_value writes for that instant. Compared here with zoneinfo reading
the same file:
- instants spread at random over 1970-2100 (the seed is printed; set
  SB_TZIF_SEED to replay one), so most of 2038-2100 falls past the files'
  last transition and is the POSIX TZ footer's work;
- every offset change from 1900 to 2100 (found by zoneinfo alone), at the
  change and one second either side;
- the same for zone files written here with footers the shipped data
  rarely uses (Jn, n, times past 24 h and negative ones), against zoneinfo
  and against glibc reading the footer as TZ;
and that damaged files and names that try to leave the zone directory
give an error, not a crash or a file read.
"""
import datetime
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
import unittest
import zoneinfo

from sbtest import BUILD

PROBE = os.path.join(BUILD, "tests", "unit", "bq_zone_probe")
SYSTEM = "/usr/share/zoneinfo"
ZONES = ["America/Chicago", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo",
         "Pacific/Apia", "Europe/Dublin", "Africa/Casablanca",
         # a few more shapes: negative rule times, southern DST, :45 offsets, 2 h DST
         "America/Nuuk", "Pacific/Auckland", "Pacific/Chatham", "Antarctica/Troll", "America/Santiago",
         "Asia/Tehran", "America/St_Johns"]
# Footers for zone files made here (one transition, at 1970, to the
# standard offset given, as zic writes one), and the oracles that judge
# them: zoneinfo, and glibc's own reading of the string as TZ (localtime in
# a test process, never in the daemon). Each footer keeps its transitions
# inside the year they belong to, where RFC 8536 and both readings agree.
# zoneinfo (3.11) reads the zero-based "n" day as one-based, one day early
# (POSIX: n counts from 0, leap days included; glibc does so), so those two
# footers are judged by glibc alone.
BOTH, GLIBC = ("zoneinfo", "glibc"), ("glibc",)
FOOTERS = {
    "Test/Julian": ("XXX3YYY,J60/-1,J300/26", -3 * 3600, BOTH),
    "Test/ZeroBased": ("AAA-10BBB,59/0,304/0", 10 * 3600, GLIBC),
    "Test/Hours167": ("AAA-10BBB,J100/167,J280/-2", 10 * 3600, BOTH),
    "Test/Negative": ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -2 * 3600, BOTH),
    "Test/LordHowe": ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, BOTH),
    "Test/NegativeDST": ("IST-1GMT0,M10.5.0,M3.5.0/1", 3600, BOTH),
    "Test/Fixed": ("<+0330>-3:30", 12600, BOTH),
    "Test/Seconds": ("LMT-0:25:21DDD-1:25:21,M5.1.6/23,M9.5.6/25", 1521, BOTH),
    "Test/LeapDay": ("EEE5FFF,60/1,J60/1", -5 * 3600, GLIBC),
}
EPOCH = datetime.datetime(1970, 1, 1)
T0 = int(datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
T1 = int(datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
SCAN_FROM = int(datetime.datetime(1900, 1, 1, tzinfo=datetime.timezone.utc).timestamp())


def tzif_with_footer(footer, std_off):
    """A version 2 file: one transition (1970) to a standard type, then the footer."""
    v1 = b"TZif2" + bytes(15) + struct.pack(">6L", 0, 0, 0, 0, 0, 0)
    chars = b"STD\0"
    head = b"TZif2" + bytes(15) + struct.pack(">6L", 0, 0, 0, 1, 1, len(chars))
    body = struct.pack(">q", 0) + b"\0" + struct.pack(">lBB", std_off, 0, 0) + chars
    return v1 + head + body + b"\n" + footer.encode() + b"\n"


class Zoneinfo:
    """Python's zoneinfo reading the very file the probe reads. The offset
    is the civil time fromtimestamp gives less the instant: utcoffset() of
    that civil time looks the offset up again from local time, and at the
    end of a repeated hour (3.11) it can answer for the wrong side."""
    since = SCAN_FROM

    def __init__(self, path, name):
        with open(path, "rb") as f:
            self.tz = zoneinfo.ZoneInfo.from_file(f, key=name)

    def civil(self, t):
        return datetime.datetime.fromtimestamp(t, self.tz).replace(tzinfo=None)

    def offset(self, t):
        return int((self.civil(t) - EPOCH).total_seconds()) - t

    def answer(self, t):
        return "%d %s" % (self.offset(t), self.civil(t).isoformat())


class Glibc:
    """glibc's localtime with TZ set to a footer: only after the file's one
    transition (1970), where the footer alone rules."""
    since = 1

    def __init__(self, tz_string):
        self.tz = tz_string
        self.saved = os.environ.get("TZ")
        os.environ["TZ"] = tz_string
        time.tzset()

    def close(self):
        if self.saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = self.saved
        time.tzset()

    def offset(self, t):
        return time.localtime(t).tm_gmtoff

    def answer(self, t):
        lt = time.localtime(t)
        return "%d %s" % (lt.tm_gmtoff, time.strftime("%Y-%m-%dT%H:%M:%S", lt))


def changes(oracle, lo, hi, step=6 * 3600):
    """Every instant from lo to hi where the oracle's offset changes, found
    by stepping and then bisecting to the second."""
    out = []
    prev_t, prev = lo, oracle.offset(lo)
    for t in range(lo + step, hi + step, step):
        cur = oracle.offset(t)
        if cur != prev:
            a, b = prev_t, t  # offset(a) == prev != offset(b)
            while b - a > 1:
                m = (a + b) // 2
                if oracle.offset(m) == prev:
                    a = m
                else:
                    b = m
            out.append(b)
        prev_t, prev = t, cur
    return out


def probe(lines, tzdir):
    env = dict(os.environ, TZDIR=tzdir)
    r = subprocess.run([PROBE], input="".join(lines), env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError("probe exited %d: %s" % (r.returncode, r.stderr))
    return r.stdout.splitlines()


def zoneinfo_reads(path, name):
    """Whether this Python's zoneinfo accepts the file's footer: before
    3.11.4 or so it refuses RFC 8536's extended rule times (hours past 24,
    negative), e.g. Debian 12's 3.11.2; glibc still judges those footers."""
    try:
        Zoneinfo(path, name)
        return True
    except ValueError as e:
        print("  %-22s zoneinfo cannot read its footer here (%s): glibc alone judges it" % (name, e))
        return False


class Zones(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.seed = int(os.environ.get("SB_TZIF_SEED", random.randrange(1 << 32)))
        print("test_tzif: seed %d (SB_TZIF_SEED=%d replays it)" % (cls.seed, cls.seed))
        cls.dir = tempfile.mkdtemp(prefix="sbtzif.")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def compare(self, tzdir, zones, random_per_zone):
        """zones: (name, oracle maker); the probe answers every instant
        the oracles were asked about, in one run."""
        rnd = random.Random(self.seed)
        lines, want = [], []
        for name, make in zones:
            oracle = make()
            try:
                instants = [rnd.randrange(max(T0, oracle.since), T1) for _ in range(random_per_zone)]
                edges = changes(oracle, oracle.since, T1)
                if not name.endswith("Fixed"):
                    self.assertTrue(edges, "%s: the oracle shows no offset change at all" % name)
                instants += [e + d for e in edges for d in (-1, 0, 1) if e + d >= oracle.since]
                for t in instants:
                    lines.append("%s %d\n" % (name, t))
                    want.append(oracle.answer(t))
            finally:
                getattr(oracle, "close", lambda: None)()
            print("  %-22s %-8s %4d offset changes, %5d instants" % (name, type(oracle).__name__, len(edges),
                                                                     len(instants)))
        got = probe(lines, tzdir)
        self.assertEqual(len(got), len(want), "the probe answered %d lines of %d" % (len(got), len(want)))
        bad = ["%s | %s | %s" % (lines[i].strip(), want[i], got[i]) for i in range(len(want)) if got[i] != want[i]]
        print("test_tzif: %d instants compared, %d differ" % (len(want), len(bad)))
        if bad:
            self.fail("%d differ; zone epoch | oracle | ours:\n%s" % (len(bad), "\n".join(bad[:20])))

    def test_system_zones(self):
        """The zones a migration names, in the shipped data, against zoneinfo."""
        self.compare(SYSTEM, [(n, lambda n=n: Zoneinfo(os.path.join(SYSTEM, n), n)) for n in ZONES], 3000)

    def test_footer_forms(self):
        """Footers written here: the rule alone decides after 1970."""
        tzdir = os.path.join(self.dir, "footers")
        zones = []
        for name, (footer, std_off, oracles) in FOOTERS.items():
            path = os.path.join(tzdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(tzif_with_footer(footer, std_off))
            if "zoneinfo" in oracles and zoneinfo_reads(path, name):
                zones.append((name, lambda p=path, n=name: Zoneinfo(p, n)))
            zones.append((name, lambda f=footer: Glibc(f)))
        self.compare(tzdir, zones, 1000)

    def test_damaged_and_escaping(self):
        tzdir = os.path.join(self.dir, "damaged")
        os.makedirs(os.path.join(tzdir, "Bad"))
        with open(os.path.join(SYSTEM, "Europe/Berlin"), "rb") as f:
            berlin = f.read()
        files = {"Bad/Empty": b"", "Bad/Header": berlin[:30], "Bad/Half": berlin[:len(berlin) // 2],
                 "Bad/NoFooter": berlin[:berlin.rindex(b"\n", 0, len(berlin) - 1)], "Bad/OpenFooter": berlin[:-1],
                 "Bad/Text": b"Europe/Berlin\n" * 10, "Bad/Version1": berlin[:4] + b"\0" + berlin[5:]}
        for name, data in files.items():
            with open(os.path.join(tzdir, name), "wb") as f:
                f.write(data)
        # a good zone file just outside the directory: reaching it would be a bug
        with open(os.path.join(self.dir, "outside"), "wb") as f:
            f.write(berlin)
        escaping = ["../outside", "Bad/../../outside", os.path.join(self.dir, "outside"), "./../outside",
                    "..", "Bad/./Empty"]
        got = probe(["%s 0\n" % n for n in list(files) + escaping], tzdir)
        want = {"Bad/Empty": "truncated: first header", "Bad/Header": "truncated: first header",
                "Bad/Half": "truncated", "Bad/NoFooter": "no TZ string footer", "Bad/OpenFooter": "no closing newline",
                "Bad/Text": "not a TZif file", "Bad/Version1": "a version 1 TZif file"}
        for name, line in zip(list(files) + escaping, got):
            self.assertTrue(line.startswith('ERR option time_zone: "%s" is not UTC' % name), line)
            if name in want:
                self.assertIn(want[name], line)
                self.assertIn(os.path.join(tzdir, name) + ":", line)
            else:
                self.assertIn("(a zone name ", line)
        self.assertEqual(len(got), len(files) + len(escaping))


if __name__ == "__main__":
    unittest.main(verbosity=2)
