#!/usr/bin/env python3
"""The cloudsql sink end to end against real servers: the daemon (file_in
JSON lines -> cloudsql) writing through unixODBC to PostgreSQL (psqlODBC),
MariaDB (MariaDB Connector/ODBC) and SQLite (sqliteodbc). The servers are
started here, on loopback, in a temporary directory (sqlservers.py); the
drivers are registered in a test-local odbcinst.ini (ODBCSYSINI). Rows are
checked with each server's own client, never through ODBC.

For each server: 1,000 events are exactly 1,000 rows; a replay changes
nothing; NULL, Unicode, an injection attempt and 1 MB of text round-trip;
a bad row in a batch of 500 fails alone with its SQLSTATE; a statement
naming a missing table fails with the server's message. For the servers:
killed and restarted mid-stream (nothing lost, nothing doubled); a wrong
password is a clear error in the log and in `runs`, retried until it is
right, and the password appears in no log, `check` output, `runs` or
/api/runs. For each server, 20 SIGKILLs of the daemon while events flow.
PostgreSQL: a query timeout that is cancelled and retried, the isolation
level set."""
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest
import urllib.request

import sqlservers as S
from sbtest import BIN, SRC, env, needs, wait_for

# The README's example table and upserts (keep them the same).
DDL = {
    "postgres": "CREATE TABLE IF NOT EXISTS runs (id BIGINT NOT NULL, source VARCHAR(16) NOT NULL, command TEXT, "
                "timestamp TIMESTAMP, PRIMARY KEY (id, source))",
    "mariadb": "CREATE TABLE IF NOT EXISTS runs (id BIGINT NOT NULL, source VARCHAR(16) NOT NULL, command LONGTEXT, "
               "timestamp DATETIME(6), PRIMARY KEY (id, source)) CHARACTER SET utf8mb4",
    "sqlite": "CREATE TABLE IF NOT EXISTS runs (id INTEGER NOT NULL, source TEXT NOT NULL, command TEXT, "
              "timestamp TEXT, PRIMARY KEY (id, source))",
}
UPSERT = {
    "postgres": "INSERT INTO runs (id, source, command, timestamp) VALUES (:run_id, 'gcp', :command, :finished_at) "
                "ON CONFLICT (id, source) DO UPDATE SET command = EXCLUDED.command, timestamp = EXCLUDED.timestamp",
    "mariadb": "INSERT INTO runs (id, source, command, timestamp) VALUES (:run_id, 'gcp', :command, :finished_at) "
               "ON DUPLICATE KEY UPDATE command = VALUES(command), timestamp = VALUES(timestamp)",
    "sqlite": "INSERT INTO runs (id, source, command, timestamp) VALUES (:run_id, 'gcp', :command, :finished_at) "
              "ON CONFLICT (id, source) DO UPDATE SET command = excluded.command, timestamp = excluded.timestamp",
}
PATIENT = {"max_attempts": 100000, "max_time": "1h", "initial": "20ms", "max_delay": "500ms"}


def event(i, **kw):
    e = {"event_id": "ev-%05d" % i, "run_id": 100000 + i, "command": "sh run_replicator.sh edw t%d 20261123" % i,
         "finished_at": "2026-11-23T10:%02d:%02dZ" % (i // 60 % 60, i % 60)}
    e.update(kw)
    return e


class Backend:
    """What every server's test case shares; subclasses name the server."""
    kind = None
    top = None

    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="sbcloudsql.")
        os.chmod(cls.top, 0o755)
        cls.odbc = S.odbc_dir(tempfile.mkdtemp(dir=cls.top))
        srv_dir = tempfile.mkdtemp(dir=cls.top)
        cls.srv = {"postgres": S.Postgres, "mariadb": S.MariaDB, "sqlite": S.SQLite}[cls.kind](srv_dir)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "srv", None):
            cls.srv.stop()
        subprocess.run(["rm", "-rf", cls.top])

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.top)
        self.cfg = os.path.join(self.dir, "syncbridge.json")
        self.inp = os.path.join(self.dir, "in.jsonl")
        self.table = "runs_" + hashlib.md5(self.id().encode()).hexdigest()[:10]
        self.daemons = []
        self.env = env(ODBCSYSINI=self.odbc)

    def tearDown(self):
        for p in self.daemons:
            if p.poll() is None:
                p.kill()
                p.wait()

    # ---- helpers ----
    def sql(self, q):
        if self.kind == "sqlite":
            with sqlite3.connect(self.srv.path) as c:
                return [list(r) for r in c.execute(q).fetchall()]
        return self.srv.query(q)

    def sink(self, **opts):
        s = {"plugin": "cloudsql", "connection": self.srv.connection(),
             "create_table": DDL[self.kind].replace("runs", self.table, 1),
             "statement": UPSERT[self.kind].replace("runs", self.table, 1),
             "retry": PATIENT, "reconnect_max": "1s", "login_timeout": "5s"}
        s.update(opts)
        return {k: v for k, v in s.items() if v is not None}

    def config(self, sink=None, follow=False, admin_port=None, state="state"):
        cfg = {"state_dir": os.path.join(self.dir, state), "log": {"level": "info"},
               "sources": {"in": {"plugin": "file_in", "path": self.inp, "format": "json", "id_field": "event_id",
                                  "follow": follow, "poll_interval": "50ms", "max_line": "8MB"}},
               "sinks": {"db": sink or self.sink()}, "routes": {"r": {"sources": ["in"], "steps": ["db"]}}}
        if admin_port:
            cfg["admin"] = {"enabled": True, "bind": "127.0.0.1", "port": admin_port}
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def write(self, events):
        with open(self.inp, "a") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")

    def run_once(self, expect=0, state="state"):
        r = subprocess.run([BIN, "--once", "-c", self.cfg, "--state-dir", os.path.join(self.dir, state)],
                           capture_output=True, text=True, timeout=300, env=self.env)
        self.assertEqual(r.returncode, expect, r.stderr[-4000:])
        return r

    def start(self, log="daemon.log"):
        f = open(os.path.join(self.dir, log), "a")
        p = subprocess.Popen([BIN, "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=f, env=self.env)
        f.close()
        self.daemons.append(p)
        return p

    def log(self, name="daemon.log"):
        with open(os.path.join(self.dir, name), errors="replace") as f:
            return f.read()

    def runs(self, *args):
        extra = ["--json", "--limit", "100000"] if args[0] == "list" else []
        r = subprocess.run([BIN, "-c", self.cfg, "runs"] + list(args) + extra,
                           capture_output=True, text=True, timeout=60, env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def count(self):
        return int(self.sql("SELECT COUNT(*) FROM %s" % self.table)[0][0])

    def count_or_zero(self):
        """count(), or 0 while create_table has not run yet."""
        try:
            return self.count()
        except (AssertionError, sqlite3.OperationalError):
            return 0

    def dump(self):
        return self.sql("SELECT id, source, command, timestamp FROM %s ORDER BY id, source" % self.table)

    # ---- for each server ----
    def test_thousand_events_are_thousand_rows_and_a_replay_changes_nothing(self):
        self.write(event(i) for i in range(1000))
        self.config()
        self.run_once()
        self.assertEqual(self.count(), 1000)
        ids = {int(r[0]) for r in self.sql("SELECT id FROM %s" % self.table)}
        self.assertEqual(ids, {100000 + i for i in range(1000)})
        before = self.dump()
        ts = self.sql("SELECT timestamp FROM %s WHERE id = 100061" % self.table)[0][0]
        self.assertTrue(str(ts).startswith("2026-11-23 10:01:01"), ts)  # the UTC instant, as a timestamp
        # every batch again, through a fresh ledger: the upsert makes it a no-op
        self.run_once(state="state2")
        self.assertEqual(self.dump(), before)

    def test_one_key_twice_in_a_multi_row_batch_keeps_the_later_row(self):
        """Two events of one run in the same batch land in one multi-row
        INSERT, which PostgreSQL refuses (SQLSTATE 21000); halving puts them
        in different statements, so both are written, in order, on every
        server. Array binding (multi_row false) gives the same table."""
        evs = [event(i) for i in range(40)]
        evs.insert(30, event(7, event_id="ev-again", command="second write of run 7"))
        self.write(evs)
        for multi in (True, False):
            if not multi:
                self.sql("DELETE FROM %s" % self.table)
            state = "state-%s" % multi
            self.config(self.sink(multi_row=multi), state=state)
            self.run_once(state=state)
            self.assertEqual(self.count(), 40)
            self.assertEqual(self.sql("SELECT command FROM %s WHERE id = 100007" % self.table)[0][0],
                             "second write of run 7")
            self.assertEqual(len(self.runs("list", "--state", "done")), 41)

    def test_null_unicode_injection_and_a_megabyte_round_trip(self):
        big = ("0123456789abcdef\u00e9\u65e5" * 60000)[:1 << 20]
        values = {1: None, 2: "Gr\u00fc\u00dfe \u65e5\u672c\u8a9e \U0001F600 'q' \"dq\" back\\slash",
                  3: "'); DROP TABLE %s; --" % self.table, 4: big, 5: ""}
        self.write(event(i, command=v) for i, v in values.items())
        self.config()
        r = self.run_once()
        for i, v in values.items():
            if self.kind == "sqlite":
                self.assertEqual(len(self.sql("SELECT 1 FROM %s WHERE id = %d" % (self.table, 100000 + i))), 1,
                                 "event %d missing: %s" % (i, r.stderr[-3000:]))
                got = self.sql("SELECT command FROM %s WHERE id = %d" % (self.table, 100000 + i))[0][0]
                self.assertEqual(got, v, "event %d" % i)
                continue
            length = "char_length" if self.kind == "mariadb" else "length"
            row = self.sql("SELECT command IS NULL, %s(command), md5(command) FROM %s WHERE id = %d"
                           % (length, self.table, 100000 + i))[0]
            if v is None:
                self.assertIn(row[0], ("t", "1"), "event %d: NULL" % i)
            else:
                self.assertEqual((int(row[1]), row[2]), (len(v), hashlib.md5(v.encode()).hexdigest()),
                                 "event %d" % i)
        self.assertEqual(self.count(), 5)  # the table is still there

    def test_a_bad_row_in_a_batch_of_500_fails_alone(self):
        evs = [event(i) for i in range(500)]
        evs[237] = event(237, run_id=None)  # the primary key cannot be NULL
        self.write(evs)
        self.config(self.sink(batch_max=500))
        self.run_once(expect=4)
        self.assertEqual(self.count(), 499)
        dead = self.runs("list", "--state", "dead")
        self.assertEqual([d["event_id"] for d in dead], ["ev-00237"], dead)
        self.assertRegex(dead[0]["error"], r"SQLSTATE (23502|23000|HY000) \(native \d+\): .*(null|NULL)")
        self.assertEqual(len(self.runs("list", "--state", "done")), 499)

    def test_a_statement_on_a_missing_table_fails_with_the_servers_message(self):
        self.write([event(1), event(2)])
        self.config(self.sink(create_table=None, statement="INSERT INTO no_such_table (id) VALUES (:run_id)"))
        r = self.run_once(expect=4)
        dead = self.runs("list", "--state", "dead")
        self.assertEqual(len(dead), 2)
        self.assertRegex(dead[0]["error"], r"SQLSTATE \w+ .*no_such_table")
        self.assertIn("no_such_table", r.stderr)

    def test_a_question_mark_is_refused_by_check(self):
        self.config(self.sink(statement="INSERT INTO runs (id) VALUES (?)"))
        r = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("named placeholders", r.stderr)

    def test_twenty_sigkills_of_the_daemon_while_events_flow(self):
        """Every server: a kill between a commit and its record in the
        ledger runs the batch again, and the upsert makes that harmless."""
        self.config(self.sink(batch_max=100), follow=True)
        n = 3000
        written = 0
        rnd = random.Random(15)
        for _ in range(20):
            p = self.start()
            for _ in range(3):
                if written < n:
                    self.write(event(i) for i in range(written, written + 50))
                    written += 50
                time.sleep(rnd.uniform(0.05, 0.25))
            p.send_signal(signal.SIGKILL)
            p.wait()
        if written < n:
            self.write(event(i) for i in range(written, n))
        self.start()
        wait_for(lambda: len(self.runs("list", "--state", "done")) == n, 180, "every event done")
        self.assertEqual(self.count(), n)
        self.assertEqual(len(self.sql("SELECT DISTINCT id FROM %s" % self.table)), n)


class ServerFaults:
    """Faults only a server has: restarts, passwords."""

    def test_server_killed_and_restarted_mid_stream(self):
        self.config(self.sink(), follow=True)
        self.start()
        n = 1000
        for k in range(0, n, 50):
            self.write(event(i) for i in range(k, k + 50))
            if k == 400:
                wait_for(lambda: self.count_or_zero() > 0, 60, "rows before the restart")
                self.srv.stop("kill")
                time.sleep(1)  # events queue and retry meanwhile
                self.srv.start()
            time.sleep(0.05)
        wait_for(lambda: len(self.runs("list", "--state", "done")) == n, 120, "every event done")
        self.assertEqual(self.count(), n)
        self.assertEqual(self.runs("list", "--state", "dead"), [])
        log = self.log()
        self.assertTrue("connection lost" in log or "cannot connect" in log, log[-3000:])  # noticed
        self.assertNotIn(S.PASSWORD, log)

    def test_wrong_password_is_clear_retried_and_never_shown(self):
        wrong = "Wr0ng-pass-%d" % random.randrange(10 ** 6)
        port = S.free_port()
        self.config(self.sink(connection=self.srv.connection(password="${file:%s/pw}" % self.dir)),
                    follow=True, admin_port=port)
        with open(os.path.join(self.dir, "pw"), "w") as f:
            f.write(wrong + "\n")
        self.write(event(i) for i in range(20))
        self.start()
        wait_for(lambda: "cannot connect" in self.log(), 60, "the connection error in the log")
        wait_for(lambda: any(r.get("error") for r in self.runs("list", "--state", "pending")), 60,
                 "the error on the pending runs")
        pending = self.runs("list", "--state", "pending")
        self.assertEqual(len(pending), 20)
        why = pending[0]["error"]
        self.assertRegex(why, "password authentication failed|Access denied")
        shown = [self.log(), json.dumps(pending), json.dumps(self.runs("show", str(pending[0]["entry_id"])))]
        with urllib.request.urlopen("http://127.0.0.1:%d/api/runs" % port, timeout=10) as r:
            shown.append(r.read().decode())
        chk = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, env=self.env)
        self.assertEqual(chk.returncode, 0, chk.stderr)
        shown.append(chk.stdout + chk.stderr)
        for text in shown:
            self.assertNotIn(wrong, text)
            self.assertNotIn(S.PASSWORD, text)
        # the operator fixes it on the server's side: the retried events land
        if self.kind == "postgres":
            self.srv.query("ALTER USER %s PASSWORD '%s'" % (S.USER, wrong))
        else:
            self.srv.query("ALTER USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'" % (S.USER, wrong), root=True, db=None)
        try:
            wait_for(lambda: len(self.runs("list", "--state", "done")) == 20, 60, "the retried events done")
        finally:
            if self.kind == "postgres":
                self._reset_pg_password(wrong)
            else:
                self.srv.query("ALTER USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'" % (S.USER, S.PASSWORD), root=True,
                               db=None)
        self.assertEqual(self.count(), 20)
        self.assertIn("reconnected after", self.log())
        self.assertNotIn(wrong, self.log())

    def _reset_pg_password(self, current):
        env_ = dict(os.environ, PGPASSWORD=current)
        subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.srv.port), "-U", S.USER, "-d", S.DB,
                        "-c", "ALTER USER %s PASSWORD '%s'" % (S.USER, S.PASSWORD)], check=True, env=env_,
                       capture_output=True)


@needs(S.have_sqlite(), "the SQLite ODBC driver (libsqliteodbc) or sqlite3 is missing")
class SQLiteSink(Backend, unittest.TestCase):
    kind = "sqlite"

    def test_the_sqlite_example_config_runs(self):
        """conf/examples/cloudsql-sqlite.json, with its paths moved here."""
        with open(os.path.join(SRC, "conf", "examples", "cloudsql-sqlite.json")) as f:
            text = f.read().replace("/var/lib/syncbridge", self.dir)
        with open(self.cfg, "w") as f:
            f.write(text)
        chk = subprocess.run([BIN, "-c", self.cfg, "check"], capture_output=True, text=True, env=self.env)
        self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
        with open(os.path.join(self.dir, "gcp-runs.jsonl"), "w") as f:
            for i in range(3):
                f.write(json.dumps(event(i)) + "\n")
        r = subprocess.run([BIN, "--once", "-c", self.cfg], capture_output=True, text=True, env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with sqlite3.connect(os.path.join(self.dir, "registry.db")) as c:
            rows = c.execute("SELECT id, source, timestamp FROM runs ORDER BY id").fetchall()
        self.assertEqual(rows, [(100000 + i, "gcp", "2026-11-23 10:00:%02d.000" % i) for i in range(3)])


@needs(S.have_postgres(), "PostgreSQL (postgresql) or its ODBC driver (odbc-postgresql) is missing")
class PostgresSink(Backend, ServerFaults, unittest.TestCase):
    kind = "postgres"

    def test_a_syntax_error_at_the_first_execute_falls_back_and_fails_each_event_with_it(self):
        """psqlODBC prepares on the first execute, so a server refusing the
        multi-row form says so there, as a syntax error. Here the statement
        itself is wrong (the single row too): the sink warns once, goes on
        with arrays, and each event fails with the server's 42601."""
        self.write([event(i) for i in range(4)])
        stmt = UPSERT[self.kind].replace("runs", self.table, 1) + " GARBAGE"
        self.config(self.sink(statement=stmt))
        r = self.run_once(expect=4)
        self.assertEqual(r.stderr.count("a multi-row INSERT was refused as a syntax error"), 1, r.stderr[-3000:])
        dead = self.runs("list", "--state", "dead")
        self.assertEqual(len(dead), 4)
        self.assertTrue(all("SQLSTATE 42601" in d["error"] for d in dead), [d["error"] for d in dead])

    def test_query_timeout_retries_and_isolation_is_set(self):
        """A statement slower than query_timeout is cancelled and retried
        (here until the budget runs out); isolation reaches the session."""
        self.write([event(1)])
        slow = "INSERT INTO %s (id, source) SELECT :run_id, 'gcp' FROM pg_sleep(5)" % self.table
        self.config(self.sink(statement=slow, query_timeout="1s",
                              retry={"max_attempts": 2, "initial": "10ms"}))
        t0 = time.monotonic()
        self.run_once(expect=4)
        self.assertLess(time.monotonic() - t0, 30)
        dead = self.runs("list", "--state", "dead")
        self.assertRegex(dead[0]["error"], r"retry budget exhausted .*SQLSTATE (57014|HYT00|HY008)")
        # the session's isolation level, recorded by the statement itself
        self.write([event(2)])
        probe = ("INSERT INTO %s (id, source, command) VALUES (:run_id, 'gcp', "
                 "current_setting('transaction_isolation'))" % self.table)
        self.config(self.sink(statement=probe, isolation="serializable"), state="state2")
        self.run_once(state="state2")
        self.assertEqual(self.sql("SELECT command FROM %s WHERE id = 100002" % self.table), [["serializable"]])


@needs(S.have_mariadb(), "MariaDB (mariadb-server) or its ODBC driver (odbc-mariadb) is missing")
class MariaDBSink(Backend, ServerFaults, unittest.TestCase):
    kind = "mariadb"


if __name__ == "__main__":
    unittest.main(verbosity=2)
