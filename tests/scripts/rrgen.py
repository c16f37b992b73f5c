#!/usr/bin/env python3
"""rrgen - realistic Run Replicator logs with the known truth of every run.

The logs are written the way the public run_script.sh / run_replicator.sh
and their opswise wrappers write them (README "Run Replicator logs"):
the invocation (inside a `${RUN_SCRIPT} "sh ..."` or `/path/run_script.sh
"sh ..."` wrapper, as a `set -x` trace, plain, or not logged at all), the
header, one block per date going back from INC_VAL, the job's own output
with benign ERROR noise, the verdict, and the wrapper's trailer when there
is one. Lines longer than 250 columns are folded, as the terminal that
captured them did.

The truth of each run is stated from what the script did, not from what a
parser would read: the fields filewatch must emit, as a list of JSON
objects (one per run, in file order) with the file they are in.

    rrgen.py --out DIR --runs N [--layout single|per-run] [--seed S]

writes DIR/logs/*.log and DIR/truth.json. Python 3 standard library only.
"""
import argparse
import calendar
import datetime as dt
import json
import os
import random

FOLD = 250
SCRIPT = "run_replicator.sh"
SCHEMAS = ["groupon_production", "edw_prod", "dwh_fin", "user_gp", "sox_dw", "ods_mkt"]
WORDS = ["orders", "deal", "options", "im", "brand", "list", "ledger", "entries", "users", "clicks", "daily",
         "agg", "fact", "dim", "voucher", "refunds", "merchant", "geo", "txn", "hist"]
KEYS = ["order_dt", "posting_date", "event_date", "dt", "load_date", "updated_at"]
RULE = "#" * 69
FILE_TIME = "%Y%m%d_%H%M%S"  # per-run file names: rr_<schema>.<table>_<start>.log


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Run:
    """One run: draws its arguments and fate, then writes its lines."""

    def __init__(self, rnd, n, start):
        self.rnd = rnd
        self.schema = rnd.choice(SCHEMAS)
        self.table = "%s_%s_%d" % (rnd.choice(WORDS), rnd.choice(WORDS), n)
        self.t = start
        self.full = rnd.random() < 0.3
        if self.full:
            self.inc_key = self.inc_val = None
            self.hyphens = False
            self.offset_arg = None
            day = start.date()
        else:
            self.inc_key = rnd.choice(KEYS)
            day = start.date() - dt.timedelta(days=rnd.randint(1, 5))
            self.hyphens = rnd.random() < 0.5
            self.inc_val = day.strftime("%Y-%m-%d" if self.hyphens else "%Y%m%d")
            self.offset_arg = rnd.choice([None, None, 1, 2, 3, 4, 5, 6, 7])
        self.n = self.offset_arg or 1
        fmt = "%Y-%m-%d" if self.hyphens else "%Y%m%d"
        self.dates = [(day - dt.timedelta(days=i)).strftime(fmt) for i in range(self.n)]
        # what the wrapper and the scheduler do
        self.wrapper = rnd.choice(["run_script_var", "run_script_path", "trace_wrapper", "plain", "trace_plain",
                                   "none"])
        self.expand = rnd.random() < 0.5
        self.inner_trace = rnd.random() < 0.3  # set -x inside: the inner command traced too
        self.xtrace = rnd.random() < 0.4  # `+ ...` trace lines all through the run
        self.opswise = rnd.random() < 0.3  # TD_COUNT = / HIVE_COUNT = instead of the Teradata/Hive lines
        self.trailer = rnd.random() < 0.65
        self.long_path = rnd.random() < 0.1  # an invocation longer than the fold width
        self.times = rnd.choice(["prefix", "prefix_bracket", "log4j", "none"])
        # fate of each date: ok, mismatch, job_error (Found Error!! or not), killed
        fate = rnd.random()
        self.fail_at = None
        self.fail_kind = None
        if fate < 0.12:
            self.fail_at, self.fail_kind = rnd.randrange(self.n), "mismatch"
        elif fate < 0.20:
            self.fail_at, self.fail_kind = rnd.randrange(self.n), "job_error"
        elif fate < 0.25:
            self.fail_at, self.fail_kind = rnd.randrange(self.n), "killed"
        self.bad_retcode = self.fail_at is None and rnd.random() < 0.03  # every date fine, the script still failed
        self.lines = []  # (text, carries_time)
        self.first_t = self.last_t = None

    # ---- writing -------------------------------------------------------
    def tick(self, lo=0, hi=3):
        self.t += dt.timedelta(seconds=self.rnd.randint(lo, hi))

    def emit(self, text, own=True, log4j=False):
        """One line of the run. `own`: the run's own line (its time counts)."""
        prefix = ""
        timed = False
        if self.times == "prefix":
            prefix, timed = self.t.strftime("%Y-%m-%d %H:%M:%S "), True
        elif self.times == "prefix_bracket":
            prefix, timed = self.t.strftime("[%Y-%m-%d %H:%M:%S] "), True
        elif self.times == "log4j" and log4j:
            timed = True
        if timed and own:
            self.first_t = self.first_t or self.t
            self.last_t = self.t
        self.lines.append(prefix + text)

    def trace(self, text):
        if self.xtrace:
            self.emit("+ " + text, own=False)

    def log4j(self, level, where, msg):
        if self.times == "none":  # Hadoop's own yy/MM/dd layout: not a time a run is dated by
            stamp = self.t.strftime("%y/%m/%d %H:%M:%S")
        else:
            stamp = self.t.strftime("%Y-%m-%d %H:%M:%S") + ",%03d" % self.rnd.randint(0, 999)
        self.emit("%s %s %s: %s" % (stamp, level, where, msg), log4j=True)

    def args(self):
        a = [self.schema, self.table]
        if not self.full:
            a += [self.inc_key, self.inc_val]
            if self.offset_arg is not None:
                a.append(str(self.offset_arg))
        return " ".join(a)

    def invocation(self):
        base = "${ETL_CODE_BASE}" if not self.expand else "/opt/etl/code"
        if self.long_path:
            base += "/" + "/".join(["releases", "2026.11.02-build.%d" % self.rnd.randint(100, 999)] +
                                   ["very_long_directory_name_%02d" % i for i in range(8)])
        inner = "sh %s/cerebro/%s %s" % (base, SCRIPT, self.args())
        wrapper = "${RUN_SCRIPT}" if not self.expand else "/opt/etl/bin/run_script.sh"
        w = self.wrapper
        if w == "run_script_var":
            return '${RUN_SCRIPT} "%s"' % inner, '${RUN_SCRIPT} "%s"' % inner
        if w == "run_script_path":
            line = '%s "%s"' % ("/opt/etl/bin/run_script.sh" if self.expand else "${SCRIPTS}/run_script.sh", inner)
            return line, line
        if w == "trace_wrapper":  # bash xtrace quotes a word with blanks in single quotes
            line = "%s '%s'" % (wrapper, inner)
            return "+ " + line, line
        if w == "plain":
            return inner, inner
        if w == "trace_plain":
            return "+ " + inner, inner
        return None, None

    def write(self):
        rnd = self.rnd
        self.command = None
        if rnd.random() < 0.5:
            self.trace("export ETL_CODE_BASE=/opt/etl/code")
        logged, command = self.invocation()
        if logged:
            self.emit(logged)
            self.command = command
        if self.inner_trace and self.wrapper != "none":
            self.emit("+ sh /opt/etl/code/cerebro/%s %s" % (SCRIPT, self.args()))
        self.tick()
        self.emit(RULE, own=False)
        self.trace("echo 'Schema Name :- %s'" % self.schema)
        self.emit("Schema Name :- %s" % self.schema)
        self.emit("Table Name :- %s" % self.table)
        if self.full:
            self.emit("No inc_val and inc_key  was passed, Considering this table as a full refresh ...")
        else:
            self.trace("'[' -z %s ']'" % self.inc_val)
            self.emit(" Picking the inc_val as %s " % self.inc_val)
        if self.offset_arg is None:
            self.emit("No offset_days specified, loading just for a single date")
        else:
            self.emit("No. of offset_days specified = %d" % self.offset_arg)
        self.emit("There are hiphens" if self.hyphens else "We don't have hiphens indate")
        self.results = []
        for i, d in enumerate(self.dates):
            r = self.block(i, d)
            self.results.append(r)
            if r["status"] != "succeeded":
                break
        self.trailer_lines()
        return self

    def block(self, i, d):
        rnd = self.rnd
        s, t = self.schema, self.table
        res = {"date": d, "status": "succeeded", "td_count": None, "hive_count": None, "reason": None}
        self.tick()
        self.emit(RULE, own=False)
        self.emit("Processing for date: %s" % d)
        self.emit(RULE, own=False)
        compact = d.replace("-", "")
        self.trace("hadoop fs -ls /td_backup/%s.%s/%s" % (s, t, compact))
        self.emit("hadoop fs -ls /td_backup/%s.%s/%s" % (s, t, compact))
        if rnd.random() < 0.2:
            self.emit(" File Already Exist for the date %s , Did you mean to re-load it?" % d)
        else:
            self.emit("ls: `/td_backup/%s.%s/%s': No such file or directory" % (s, t, compact))
        self.emit("Starting Import of %s.%s" % (s, t))
        ctx = "schema:%s,base_table:%s" % (s, t)
        if not self.full:
            ctx += ',inc_key:"%s",inc_date:%s' % (self.inc_key, d)
        zr = ("ssh -o StrictHostKeyChecking=no -o BatchMode=yes etl_svc@hdp-edge-%02d.snc1 \"source /home/etl_svc/"
              ".bash_profile; cd /var/groupon/zombie_runner/current && ./bin/zombie_runner run "
              "--workflow=/var/groupon/cerebro/workflows/td_to_hive_replicator.yml --context=%s,"
              "target_dir:/td_backup/%s.%s/%s,td_host:tdwc.snc1,queue:etl_replication,mappers:%d "
              "--log-level=INFO --retries=0\"" % (rnd.randint(1, 9), ctx, s, t, compact, rnd.randint(4, 32)))
        self.trace("echo '%s'" % zr.replace("'", "'\\''"))
        self.emit(zr)
        fails_here = self.fail_at == i
        kind = self.fail_kind if fails_here else None
        for _ in range(rnd.randint(2, 6)):
            self.tick(1, 40)
            self.job_noise()
        if kind == "killed":
            res["status"], res["reason"] = "unfinished", "no verdict"
            self.killed = True
            return res
        td = rnd.randint(0, 9000000)
        hive = td
        found_error = False
        if kind == "mismatch":
            hive = td - rnd.randint(1, 50) if td > 50 else td + rnd.randint(1, 50)
        if kind == "job_error":
            found_error = rnd.random() < 0.7
            self.log4j("ERROR", "tool.ImportTool", "Import failed: java.io.IOException: Teradata connection reset")
            if found_error:
                self.emit(" Found Error!!")
            if rnd.random() < 0.5:
                td = hive = 0
        self.tick()
        self.emit(" Length=%d" % rnd.randint(1, 40))
        if self.opswise:
            self.emit("TD_COUNT = %d" % td)
            self.emit("HIVE_COUNT = %d" % hive)
        else:
            self.trace("echo ' Teradata Count : %d'" % td)
            self.emit(" Teradata Count : %d" % td)
            self.emit(" Hive Count : %d" % hive)
        res["td_count"], res["hive_count"] = td, hive
        self.trace("'[' %d -eq %d ']'" % (td, hive))
        if kind == "mismatch":
            self.emit(" Counts have not matched, exiting, and the script will fail ")
            self.emit("Processing failed for date : %s" % d)
            res["status"], res["reason"] = "failed", "Counts have not matched, exiting, and the script will fail"
        elif kind == "job_error":
            self.emit("Counts have matched, Success!!")
            self.emit("Processing failed for date : %s" % d)
            res["status"] = "failed"
            res["reason"] = "Found Error!!" if found_error else "Processing failed for date : %s" % d
        else:
            self.trace("echo 'Counts have matched, Success!!'")
            self.emit("Counts have matched, Success!!")
        return res

    def job_noise(self):
        rnd = self.rnd
        c = rnd.random()
        if c < 0.35:
            self.log4j("INFO", "mapreduce.Job", "map %d%% reduce 0%%" % rnd.randint(0, 100))
        elif c < 0.5:
            self.log4j("ERROR", "hive.metastore", "Table already exists: %s.%s (benign)" % (self.schema, self.table))
        elif c < 0.6:
            self.emit("ERROR: Script FAILED to find previous backup, continuing")
        elif c < 0.7:
            self.emit("26/11/24 03:12:09 ERROR tool.BaseSqoopTool: Counts have not matched is not an error here")
        elif c < 0.8:
            self.emit("+ echo 'Script completed successfully'", own=False)
        elif c < 0.9:
            self.emit('ssh hdp-edge-02 "hadoop fs -rm -r -skipTrash /tmp/%s; echo Script completed successfully"'
                      % self.table)
        else:
            self.log4j("WARN", "conf.HiveConf", "HiveConf of name hive.metastore.local does not exist")

    def trailer_lines(self):
        self.killed = any(r["status"] == "unfinished" for r in self.results)
        failed = any(r["status"] != "succeeded" for r in self.results) or self.bad_retcode
        self.retcode = None
        self.script_failed = False
        if self.killed:  # killed: no wrapper lived to print a trailer
            return
        if self.trailer:
            self.tick()
            self.retcode = 1 if failed else 0
            self.emit("RETCODE:%d" % self.retcode)
            self.emit("Script FAILED" if failed else "Script completed successfully")
            self.script_failed = failed

    # ---- truth ------------------------------------------------------------
    def truth(self):
        dates = self.results
        status = "succeeded"
        reason = None
        for r in dates:
            if r["status"] != "succeeded":
                status = "failed"
                reason = "date %s: %s" % (r["date"], r["reason"])
                break
        if status == "succeeded" and self.retcode:
            status, reason = "failed", "RETCODE:%d" % self.retcode
        if status == "succeeded" and self.bad_retcode:  # bad_retcode without a trailer: nothing says so
            pass
        tds = [r["td_count"] for r in dates if r["td_count"] is not None]
        hives = [r["hive_count"] for r in dates if r["hive_count"] is not None]
        if self.command:
            command, source = self.command, "invocation"
        else:
            command, source = "%s %s" % (SCRIPT, self.args()), "rebuilt"
        f = {"command": command, "command_source": source, "script": SCRIPT, "schema": self.schema,
             "table": self.table, "offset_days": self.n, "full_refresh": self.full, "status": status,
             "dates": dates, "td_count": sum(tds) if tds else None, "hive_count": sum(hives) if hives else None}
        if not self.full:
            f["inc_key"], f["inc_val"] = self.inc_key, self.inc_val
            f["inc_date"] = self.inc_val if self.hyphens else "%s-%s-%s" % (
                self.inc_val[:4], self.inc_val[4:6], self.inc_val[6:])
        if reason:
            f["reason"] = reason
        if self.retcode is not None:
            f["retcode"] = self.retcode
        if self.first_t:
            f["started_at"], f["finished_at"], f["time_source"] = iso(self.first_t), iso(self.last_t), "log"
        return f


def epoch(t):
    """A naive UTC datetime as seconds since the epoch, whatever TZ says."""
    return calendar.timegm(t.timetuple())


def fold(line):
    """The terminal's folding at FOLD columns: pieces of exactly FOLD columns, then the rest."""
    if len(line) > FOLD and len(line) % FOLD == 0:
        line += " "  # a last piece of exactly FOLD columns would swallow the next line: not what a terminal shows
    return [line[i:i + FOLD] for i in range(0, len(line), FOLD)] or [""]


def generate(out, runs, layout="single", seed=1, start=None):
    """Write out/logs/*.log; return the truth (list of dicts with "file" and "fields")."""
    rnd = random.Random(seed)
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    t = start or dt.datetime(2026, 11, 24, 1, 0, 0)
    truth = []
    single = []
    for n in range(runs):
        start_t = t
        r = Run(rnd, n, t).write()
        body = [p for line in r.lines for p in fold(line)]
        f = r.truth()
        if layout == "single":
            name = "replicator.log"
            if rnd.random() < 0.3:
                single.append("+ cd /opt/etl/code")
            single.extend(body)
        else:
            named = rnd.random() < 0.6
            name = ("rr_%s.%s_%s.log" % (r.schema, r.table, start_t.strftime(FILE_TIME)) if named
                    else "rr_%06d.log" % n)
            path = os.path.join(logs, name)
            with open(path, "w") as fp:
                fp.write("\n".join(body) + "\n")
            mtime = r.t + dt.timedelta(seconds=2)
            os.utime(path, (epoch(mtime), epoch(mtime)))
            if "started_at" not in f:
                if named:
                    f["started_at"], f["time_source"] = iso(start_t), "file_name"
                else:
                    f["started_at"], f["time_source"] = iso(mtime), "mtime"
                f["finished_at"] = iso(mtime)
        truth.append({"file": name, "fields": f})
        t = r.t + dt.timedelta(seconds=rnd.randint(5, 600))
    if layout == "single":
        path = os.path.join(logs, "replicator.log")
        with open(path, "w") as fp:
            fp.write("\n".join(single) + "\n")
        mtime = t
        os.utime(path, (epoch(mtime), epoch(mtime)))
        for x in truth:
            if "started_at" not in x["fields"]:
                x["fields"].update(started_at=iso(mtime), finished_at=iso(mtime), time_source="mtime")
    with open(os.path.join(out, "truth.json"), "w") as fp:
        json.dump(truth, fp, indent=1)
    return truth


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--layout", choices=["single", "per-run"], default="single")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    truth = generate(a.out, a.runs, a.layout, a.seed)
    print("%d runs in %s" % (len(truth), os.path.join(a.out, "logs")))


if __name__ == "__main__":
    main()
