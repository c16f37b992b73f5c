"""Real SQL servers for the cloudsql tests (stdlib only), each started in a
temporary directory on a free loopback port and stopped by stop():

- Postgres: initdb + postgres, run as the 'nobody' user (through setpriv)
  when the test runs as root, since PostgreSQL refuses root; password
  authentication over TCP, so a wrong password is a real refusal;
- MariaDB: mariadb-install-db + mariadbd with --user=root allowed, its
  data directory in the temporary directory;
- odbc_dir(): a test-local odbcinst.ini (ODBCSYSINI) naming the drivers'
  .so files found on this machine (Debian or RHEL paths), so nothing
  global is configured.

Each server has query(sql) through its own command-line client, which is
independent of the ODBC path under test.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time

PASSWORD = "s3cr3t-Pw-for-tests"
USER = "sbtest"
DB = "registry"

# The ODBC drivers: name in odbcinst.ini -> candidate .so paths (Debian, RHEL).
DRIVERS = {
    "PostgreSQL": ["/usr/lib/*/odbc/psqlodbcw.so", "/usr/lib64/psqlodbcw.so", "/usr/lib/psqlodbcw.so"],
    "MariaDB": ["/usr/lib/*/odbc/libmaodbc.so", "/usr/lib64/libmaodbc.so", "/usr/lib64/mariadb/libmaodbc.so"],
    "SQLite3": ["/usr/lib/*/odbc/libsqlite3odbc.so", "/usr/lib64/libsqlite3odbc.so"],
}


def driver_path(name):
    for pat in DRIVERS[name]:
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    return None


def odbc_dir(d):
    """Write d/odbcinst.ini (and an empty odbc.ini) for the drivers found;
    point ODBCSYSINI at d."""
    with open(os.path.join(d, "odbcinst.ini"), "w") as f:
        for name in DRIVERS:
            p = driver_path(name)
            if p:
                f.write("[%s]\nDriver=%s\n\n" % (name, p))
    open(os.path.join(d, "odbc.ini"), "w").close()
    return d


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _which(names, extra_dirs=()):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
        for d in extra_dirs:
            if os.path.exists(os.path.join(d, n)):
                return os.path.join(d, n)
    return None


def _pg_bindir():
    for pat in ["/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"]:
        for d in sorted(glob.glob(pat), reverse=True):
            if os.path.exists(os.path.join(d, "postgres")):
                return d
    p = shutil.which("postgres")
    return os.path.dirname(p) if p else None


def have_postgres():
    b = _pg_bindir()
    return bool(b and os.path.exists(os.path.join(b, "initdb")) and shutil.which("psql") and driver_path("PostgreSQL"))


def have_mariadb():
    return bool(_which(["mariadbd", "mysqld"], ["/usr/sbin", "/usr/libexec"]) and
                _which(["mariadb-install-db", "mysql_install_db"]) and _which(["mariadb", "mysql"]) and
                driver_path("MariaDB"))


def have_sqlite():
    return bool(driver_path("SQLite3") and shutil.which("sqlite3"))


def _wait_port(port, proc, log, timeout=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError("server exited (%s); its log:\n%s" % (proc.returncode, _tail(log)))
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not listen on %d in %ds; its log:\n%s" % (port, timeout, _tail(log)))


def _tail(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""


class Postgres:
    """PostgreSQL in d/pg on a free port, user sbtest with PASSWORD, database registry."""

    def __init__(self, d):
        self.bindir = _pg_bindir()
        self.dir = os.path.join(d, "pg")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        os.makedirs(self.dir)
        self.as_user = []
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as nobody
            nobody = pwd.getpwnam("nobody")
            for p in (d, self.dir):
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
            self.as_user = ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                            "--clear-groups", "--"]
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if self.as_user:
            os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(self.as_user + [os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", USER,
                                       "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                                       "-E", "UTF8", "--locale=C"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = free_port()
        self.start()
        self.query("CREATE DATABASE %s" % DB, db="postgres")

    def start(self):
        logf = open(self.log, "a")
        if self.as_user:
            os.chown(self.log, pwd.getpwnam("nobody").pw_uid, -1)
        self.proc = subprocess.Popen(self.as_user + [os.path.join(self.bindir, "postgres"), "-D", self.data,
                                                     "-p", str(self.port), "-k", self.dir,
                                                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                                     "-c", "max_connections=50"],
                                     stdout=logf, stderr=logf)
        logf.close()
        _wait_port(self.port, self.proc, self.log)
        # listening is not accepting: wait for a query to work
        t0 = time.monotonic()
        while True:
            r = subprocess.run(self._psql("postgres") + ["-c", "select 1"], capture_output=True, text=True,
                               env=self._env())
            if r.returncode == 0:
                return
            if time.monotonic() - t0 > 60:
                raise AssertionError("postgres not ready: %s\n%s" % (r.stderr, _tail(self.log)))
            time.sleep(0.2)

    def stop(self, mode="fast"):
        """Stop: 'fast' (SIGINT: clients are cut off) or 'kill' (SIGKILL)."""
        if self.proc.poll() is None:
            if mode == "kill":
                self.proc.kill()
            else:
                self.proc.send_signal(2)
            self.proc.wait(60)
        if mode == "kill":  # the postmaster's children go on their own once it is gone; wait for the port
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    time.sleep(0.1)
                except OSError:
                    break

    def _env(self):
        e = dict(os.environ)
        e["PGPASSWORD"] = PASSWORD
        return e

    def _psql(self, db):
        return ["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", db,
                "-v", "ON_ERROR_STOP=1"]

    def query(self, sql, db=DB):
        """Rows of the last statement, each a list of strings (NULL is None)."""
        r = subprocess.run(self._psql(db) + ["-F", "\x1f", "-P", "null=\x1e", "-c", sql], capture_output=True,
                           text=True, env=self._env())
        if r.returncode != 0:
            raise AssertionError("psql %r: %s" % (sql, r.stderr))
        return [[None if c == "\x1e" else c for c in l.split("\x1f")] for l in r.stdout.split("\n") if l]

    def connection(self, password=PASSWORD):
        return ("DRIVER=PostgreSQL;SERVER=127.0.0.1;PORT=%d;DATABASE=%s;UID=%s;PWD=%s"
                % (self.port, DB, USER, password))


class MariaDB:
    """MariaDB in d/mariadb on a free port, user sbtest with PASSWORD, database registry."""

    def __init__(self, d):
        self.dir = os.path.join(d, "mariadb")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "server.log")
        os.makedirs(self.data)
        self.server = _which(["mariadbd", "mysqld"], ["/usr/sbin", "/usr/libexec"])
        install = _which(["mariadb-install-db", "mysql_install_db"])
        self.client = _which(["mariadb", "mysql"])
        r = subprocess.run([install, "--no-defaults", "--datadir=" + self.data, "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("mariadb-install-db: %s%s" % (r.stdout[-2000:], r.stderr[-2000:]))
        self.port = free_port()
        self.start()
        self.query("CREATE DATABASE %s CHARACTER SET utf8mb4; CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
                   " GRANT ALL ON %s.* TO '%s'@'127.0.0.1'" % (DB, USER, PASSWORD, DB, USER), root=True, db=None)

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([self.server, "--no-defaults", "--datadir=" + self.data, "--user=root",
                                      "--port=%d" % self.port, "--bind-address=127.0.0.1", "--socket=" + self.sock,
                                      "--pid-file=" + os.path.join(self.dir, "pid"), "--skip-log-bin",
                                      "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=64M",
                                      "--max-allowed-packet=64M", "--character-set-server=utf8mb4",
                                      "--skip-name-resolve"],
                                     stdout=logf, stderr=logf)
        logf.close()
        _wait_port(self.port, self.proc, self.log)

    def stop(self, mode="fast"):
        if self.proc.poll() is None:
            if mode == "kill":
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(120)

    def query(self, sql, root=False, db=DB):
        args = [self.client, "--no-defaults", "-N", "-B", "--raw"]
        args += ["-S", self.sock, "-uroot"] if root else ["-h", "127.0.0.1", "-P", str(self.port), "-u", USER,
                                                          "-p" + PASSWORD]
        if db:
            args.append(db)
        r = subprocess.run(args + ["-e", sql], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("mariadb %r: %s" % (sql, r.stderr))
        return [[None if c == "NULL" else c for c in l.split("\t")] for l in r.stdout.split("\n") if l]

    def connection(self, password=PASSWORD):
        return ("DRIVER=MariaDB;SERVER=127.0.0.1;PORT=%d;DATABASE=%s;UID=%s;PWD=%s"
                % (self.port, DB, USER, password))


class SQLite:
    """A SQLite database file d/registry.db (no server)."""

    def __init__(self, d):
        self.path = os.path.join(d, "registry.db")
        self.port = None

    def query(self, sql):
        r = subprocess.run(["sqlite3", "-batch", "-noheader", "-separator", "\x1f", "-nullvalue", "\x1e",
                            self.path, sql], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("sqlite3 %r: %s" % (sql, r.stderr))
        return [[None if c == "\x1e" else c for c in l.split("\x1f")] for l in r.stdout.split("\n") if l]

    def connection(self, password=None):
        return "DRIVER=SQLite3;Database=%s" % self.path

    def stop(self, mode="fast"):
        pass
