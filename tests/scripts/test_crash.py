#!/usr/bin/env python3
"""Crash test: SIGKILL the daemon at random moments while events flow.

A writer appends Run Replicator-like JSON lines to a file the whole time.
The daemon tails it (file_in) through a two-step route: file_out (fsync'd)
then testsink (records every call and adds a field). It is killed with
SIGKILL at a random moment in each of TRIALS runs and restarted; a last run
with --once drains everything. Then:
  * every input event reached the sink at least once (file_out's output);
  * the ledger holds one entry per input event, all done after both steps;
  * the ledger holds exactly one member record per entry: testsink's, with
    the field it added (file_out adds none, so its step leaves no record).
With SB_CRASH_KEEP_PAYLOAD=until_settled (ledger.keep_payload; `make
check-long` runs both), no payload is left once every entry is done.
Duplicates at the sink are expected only in the documented window (a step
done but not yet recorded when the kill came) and are counted in the output.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

TRIALS = int(os.environ.get("SB_CRASH_TRIALS", "20"))
KEEP_PAYLOAD = os.environ.get("SB_CRASH_KEEP_PAYLOAD", "always")
from sbtest import BIN  # sbtest also sets the plugin path for runs by hand


def whole_record_after_tear(line):
    """The event id of the complete record a torn line ends with, or None."""
    at = line.find('{"event_id"', 1)
    while at > 0:
        try:
            return json.loads(line[at:])["event_id"]
        except ValueError:
            at = line.find('{"event_id"', at + 1)
    return None


def main():
    seed = int(os.environ.get("SB_CRASH_SEED", str(int(time.time()))))
    rnd = random.Random(seed)
    d = tempfile.mkdtemp(prefix="sbcrash.")
    inp, out, rec = (os.path.join(d, n) for n in ("input.jsonl", "out.jsonl", "record.txt"))
    cfg = {
        "state_dir": os.path.join(d, "state"),
        "log": {"level": "warn"},
        "shutdown_timeout": "10s",
        "ledger": {"commit_interval": "2ms", "keep_payload": KEEP_PAYLOAD},
        "sources": {"tail": {"plugin": "file_in", "path": inp, "format": "json", "id_field": "event_id",
                             "poll_interval": "10ms", "batch": 64}},
        "sinks": {
            "out": {"plugin": "file_out", "path": out, "fsync": True, "batch_max": 50},
            "rec": {"plugin": "testsink", "record": rec, "batch_max": 50, "add_field": "rec_at"},
        },
        "routes": {"r": {"sources": ["tail"], "steps": ["out", "rec"]}},
    }
    cfg_path = os.path.join(d, "syncbridge.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    open(inp, "w").close()

    written = []
    stop = threading.Event()

    def writer():
        n = 0
        fd = os.open(inp, os.O_WRONLY | os.O_APPEND)
        while not stop.is_set():
            burst = rnd.randint(1, 40)
            lines = []
            for _ in range(burst):
                eid = "run-%06d" % n
                lines.append(json.dumps({"event_id": eid, "schema": "edw", "table": "t%d" % (n % 17),
                                         "status": "succeeded", "n": n}) + "\n")
                written.append(eid)
                n += 1
            os.write(fd, "".join(lines).encode())  # whole lines in one write
            time.sleep(rnd.uniform(0.001, 0.02))
        os.close(fd)

    wt = threading.Thread(target=writer)
    wt.start()
    kills = 0
    try:
        for trial in range(TRIALS):
            p = subprocess.Popen([BIN, "-c", cfg_path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rnd.uniform(0.05, 0.6))
            if p.poll() is not None:
                print("daemon exited early (%d): %s" % (p.returncode, p.stderr.read().decode()))
                return 1
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stderr.close()
            kills += 1
    finally:
        stop.set()
        wt.join()

    final = subprocess.run([BIN, "--once", "-c", cfg_path], capture_output=True, text=True, timeout=300)
    if final.returncode != 0:
        print("final --once run failed (%d): %s" % (final.returncode, final.stderr))
        return 1

    failures = []
    seen = {}
    torn = 0
    with open(out) as f:
        for line in f:
            try:
                eid = json.loads(line)["event_id"]
            except ValueError:
                # a SIGKILL in the middle of a write leaves a partial line, and
                # the next daemon appends after it; the torn event was not
                # recorded as done, so it is written again in full later
                # (the record nests the event's fields, which hold an
                # "event_id" too, so take the first start that parses to
                # the end of the line, not the last one)
                eid = whole_record_after_tear(line)
                if eid is None:
                    raise
                torn += 1
            seen[eid] = seen.get(eid, 0) + 1
    if torn:
        print("%d line(s) torn by a kill, their events written again" % torn)
    missing = [e for e in written if e not in seen]
    if missing:
        failures.append("%d events never reached the sink, e.g. %s" % (len(missing), missing[:5]))
    dup_events = sum(1 for c in seen.values() if c > 1)
    dup_writes = sum(c - 1 for c in seen.values())

    db = sqlite3.connect(os.path.join(d, "state", "ledger.db"))
    n_entries = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    not_done = db.execute("SELECT count(*) FROM entries_now WHERE state != 1 OR next_step != 2").fetchone()[0]
    twice = db.execute("SELECT count(*) FROM (SELECT entry_id, step, instance, count(*) c FROM members "
                       "GROUP BY 1, 2, 3 HAVING c != 1)").fetchone()[0]
    per_entry = db.execute("SELECT count(*) FROM (SELECT e.id FROM entries e LEFT JOIN members m ON m.entry_id = e.id"
                           " AND m.step = 1 AND m.instance = 'rec' AND m.added LIKE '%rec_at%' GROUP BY e.id"
                           " HAVING count(m.step) != 1)").fetchone()[0]
    others = db.execute("SELECT count(*) FROM members WHERE step != 1 OR instance != 'rec'").fetchone()[0]
    # a payload row holds `span` entries from its id on (ledger schema 7)
    payloads = db.execute("SELECT coalesce(sum(span), 0) FROM payloads").fetchone()[0]
    covered = db.execute("SELECT count(*) FROM entries e JOIN payloads p ON p.id = (SELECT max(id) FROM payloads"
                         " WHERE id <= e.id) WHERE e.id < p.id + p.span").fetchone()[0]
    if KEEP_PAYLOAD == "until_settled" and payloads:
        failures.append("%d payloads left with keep_payload until_settled and every entry done" % payloads)
    if KEEP_PAYLOAD == "always" and (payloads != n_entries or covered != n_entries):
        failures.append("%d payloads (%d entries with one) for %d entries with keep_payload always" %
                        (payloads, covered, n_entries))
    if n_entries != len(written):
        failures.append("ledger has %d entries for %d input events" % (n_entries, len(written)))
    if not_done:
        failures.append("%d ledger entries are not done after both steps" % not_done)
    if twice or per_entry or others:
        failures.append("member records: %d repeated, %d entries without testsink's, %d unexpected"
                        % (twice, per_entry, others))

    print("crash test (seed %d, keep_payload %s): %d events, %d SIGKILLs, %d events written twice or more by the sink "
          "(%d extra writes, the documented at-least-once window)" % (seed, KEEP_PAYLOAD, len(written), kills, dup_events, dup_writes))
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        print("state kept in", d)
        return 1
    subprocess.run(["rm", "-rf", d])
    return 0


if __name__ == "__main__":
    sys.exit(main())
