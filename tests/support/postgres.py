"""A REAL PostgreSQL server on loopback, private to one test, for the account-store tests.

Usage from a trial test::

    from tests.support.postgres import PostgresCluster

    class StoreTests(TestCase):
        def setUp(self):
            self.pg = PostgresCluster(self)       # started; stopped and removed at cleanup
            self.pg.psql(file=SCHEMA)   # an absolute path (trial runs in _trial_temp); as the test user
            # self.pg.url == "postgres://txuac:<password>@127.0.0.1:<port>/txuac"

        def test_outage(self):
            self.pg.stop()      # fast shutdown: clients are disconnected at once
            self.pg.start()     # same data directory, same port

The server binaries are looked up as /usr/lib/postgresql/<version>/bin/initdb (Debian's
``postgresql`` package; the newest version wins) or ``initdb`` on the PATH. When they are
missing the test is skipped, or fails under TXUAC_REQUIRE_PEERS=1 (as .ci/run sets).

One data directory is made by ``initdb`` per test process (a template holding the default
role and database, made in single-user mode; removed at exit) and copied for each cluster,
which keeps a cluster's start-up under 0.2 s (the first one pays about 0.7 s for initdb). The
server runs in the foreground as a PeerProcess (its log is ``postgres-N.log`` in the cluster's
directory), listens on 127.0.0.1 on a free port and on a Unix socket in that directory, with
durability switched off (fsync, synchronous_commit, full_page_writes) and small memory.
TCP clients authenticate with a password (scram-sha-256): the store is tested with the same
kind of URL an operator writes. Unix-socket clients are trusted, so ``psql()`` needs no
password. When the tests run as root the directory belongs to the ``postgres`` user and the
server and initdb run as that user (PostgreSQL refuses to run as root), through ``setpriv``,
which execs: the PID we hold is the postmaster's own.

``psql()`` blocks (a subprocess taking a few tens of milliseconds); so do ``stop()`` and
``start()``, for as long as the server needs (well under a second here).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile

from tests.support.peers import PEERS_HIDDEN, PeerProcess, free_port, missing_peer, require_program, wait_for

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
SERVER_USER = "postgres"  # the OS user the server runs as when the tests run as root
SUPERUSER = "postgres"    # the database superuser initdb creates
DEFAULT_USER = "txuac"    # made in the template: a cluster with these needs no CREATE at start
DEFAULT_DATABASE = "txuac"
DEFAULT_PASSWORD = "pw:with@special-chars"  # ':' and '@' as Kamailio's URL parser allows them
LOG_TAIL_LINES = 40

# Fast, small and quiet: a test cluster holds a handful of rows and must never outlive its test.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "8MB",
    "max_connections": "20",
    "dynamic_shared_memory_type": "posix",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


class PostgresError(Exception):
    """The server did not start or stop, or psql failed; the message includes the log."""


def find_bindir() -> str | None:
    """The directory of the newest PostgreSQL server binaries installed, or None."""
    if PEERS_HIDDEN:
        return None
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        name = path.split("/")[-3]
        return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)

    for path in sorted(candidates, key=version, reverse=True):
        if os.access(path, os.X_OK):
            return os.path.dirname(path)
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def require_bindir() -> str:
    """Like require_program, for the server binaries: skip, or fail when peers are required."""
    bindir = find_bindir()
    if bindir is None:
        missing_peer("PostgreSQL server binaries (initdb) are not installed")
    return bindir


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the server's OS user: unchanged unless we are root."""
    if os.geteuid() != 0:
        return argv
    setpriv = require_program("setpriv")
    entry = pwd.getpwnam(SERVER_USER)
    return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *argv]


def _owned_tempdir(prefix: str) -> str:
    """A new private directory under /tmp, owned by the server's OS user when we are root.

    Not under trial's _trial_temp: the checkout may not be traversable by that user, and a
    Unix socket path must stay short (108 bytes).
    """
    path = tempfile.mkdtemp(prefix=prefix)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


_template: dict[str, str] = {}
_running: set["PostgresCluster"] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: a test process that ends without running cleanups leaves no server behind."""
    for cluster in list(_running):
        cluster._cleanup()


def _template_datadir(bindir: str) -> str:
    """A freshly initdb'd data directory, made once per process and removed at exit."""
    if bindir in _template:
        return _template[bindir]
    root = _owned_tempdir("txuac-pgtemplate-")
    atexit.register(shutil.rmtree, root, True)
    datadir = os.path.join(root, "data")
    argv = _as_server_user([
        os.path.join(bindir, "initdb"), "-D", datadir, "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
        "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions",
        "--wal-segsize=1",
    ])
    result = subprocess.run(argv, env=_environment(), stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        raise PostgresError(f"initdb failed ({result.returncode}):\n{output}")
    # The default role and database are made once here (single-user mode: no server, no port).
    commands = (f"CREATE ROLE {DEFAULT_USER} LOGIN PASSWORD '{DEFAULT_PASSWORD}'\n"
                f"CREATE DATABASE {DEFAULT_DATABASE} OWNER {DEFAULT_USER}\n"
                # template0 is never used here: a smaller template copies faster.
                "ALTER DATABASE template0 IS_TEMPLATE false\n"
                "DROP DATABASE template0\n")
    argv = _as_server_user([os.path.join(bindir, "postgres"), "--single", "-D", datadir, "-c", "fsync=off",
                            "postgres"])
    result = subprocess.run(argv, env=_environment(), input=commands.encode(), capture_output=True, timeout=120)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0 or "ERROR" in output:
        raise PostgresError(f"postgres --single failed ({result.returncode}):\n{output}")
    _template[bindir] = datadir
    return datadir


class PostgresCluster:
    """A running PostgreSQL server with one database and one password-protected user."""

    def __init__(self, testcase, database: str = DEFAULT_DATABASE, user: str = DEFAULT_USER,
                 password: str = DEFAULT_PASSWORD, start: bool = True):
        self.bindir = require_bindir()
        template = _template_datadir(self.bindir)
        self.database = database
        self.user = user
        self.password = password
        self.host = "127.0.0.1"
        self.port = free_port(socket.SOCK_STREAM)
        self.directory = _owned_tempdir("txuac-pg-")
        self.datadir = os.path.join(self.directory, "data")
        self._process: PeerProcess | None = None
        self._starts = 0
        self._log_paths: list[str] = []
        testcase.addCleanup(self._cleanup)
        self._copy_template(template)
        self._made = (database, user, password) == (DEFAULT_DATABASE, DEFAULT_USER, DEFAULT_PASSWORD)
        if start:
            for attempt in range(3):
                try:
                    self.start()
                    break
                except PostgresError:
                    if attempt == 2 or "already in use" not in self.log():
                        raise
                    self.port = free_port(socket.SOCK_STREAM)  # lost a race for the port

    # -- lifecycle ---------------------------------------------------------------------------

    def _copy_template(self, template: str) -> None:
        argv = ["cp", "-a", template, self.datadir]  # as root too: -a keeps the owner
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if result.returncode != 0:
            raise PostgresError(f"copying the template data directory failed: {result.stderr!r}")

    @property
    def url(self) -> str:
        """The store URL of the test database, in Kamailio's form (password in clear)."""
        return f"postgres://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def argv(self) -> list[str]:
        argv = [os.path.join(self.bindir, "postgres"), "-D", self.datadir, "-p", str(self.port),
                "-k", self.directory]
        for name, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        return _as_server_user(argv)

    def start(self) -> None:
        """Start the server (same data directory and port as before) and wait until it accepts."""
        if self.running():
            return
        self._starts += 1
        log_path = os.path.join(self.directory, f"postgres-{self._starts}.log")
        self._log_paths.append(log_path)
        self._process = PeerProcess(self.argv(), cwd=self.directory, env=_environment(), log_path=log_path)
        _running.add(self)
        if not wait_for(lambda: self.ready() or not self._process.running(), START_TIMEOUT, 0.02) \
                or not self.ready():
            self._process.stop()
            raise PostgresError(self.explain(f"PostgreSQL did not start on port {self.port}"))
        if not self._made:  # not the template's role and database
            password = self.password.replace("'", "''")
            verb = "ALTER" if self.user == DEFAULT_USER else "CREATE"
            self.psql(f'{verb} ROLE "{self.user}" LOGIN PASSWORD \'{password}\'', user=SUPERUSER,
                      database="postgres")
            if self.database == DEFAULT_DATABASE:
                self.psql(f'ALTER DATABASE "{self.database}" OWNER TO "{self.user}"', user=SUPERUSER,
                          database="postgres")
            else:
                self.psql(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"', user=SUPERUSER,
                          database="postgres")
            self._made = True

    def ready(self) -> bool:
        """True once the server accepts connections (pg_isready over TCP)."""
        result = subprocess.run(
            [os.path.join(self.bindir, "pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-t", "1"],
            env=_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return result.returncode == 0

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running() else None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster we started): clients are disconnected now."""
        process = self._process
        if process is None:
            return
        if process.running():
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        process.stop()  # closes the log; SIGTERM/SIGKILL to the group only if still running
        self._process = None
        _running.discard(self)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------

    def psql(self, sql: str | None = None, file: str | None = None, user: str | None = None,
             database: str | None = None, timeout: float = 30.0) -> str:
        """Run ``sql`` (or the script ``file``) with psql over the Unix socket; its output.

        Runs as ``user`` (default: the test user, so tables belong to it) in ``database``
        (default: the test database); stops at the first error and raises PostgresError.
        Output is unaligned, tuples only: ``psql("SELECT 1, 2")`` == "1|2".
        """
        if (sql is None) == (file is None):
            raise ValueError("give sql or file")
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.directory, "-p", str(self.port), "-U", user or self.user,
                "-d", database or self.database]
        argv += ["-c", sql] if sql is not None else ["-f", file]
        result = subprocess.run(argv, env=_environment(), stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise PostgresError(f"psql failed ({result.returncode}) on {sql or file!r}: "
                                f"{result.stderr.decode('utf-8', 'replace').strip()}")
        return result.stdout.decode("utf-8", "replace").strip()

    def log(self) -> str:
        """Every server log of this cluster (one per start), oldest first."""
        parts = []
        for path in self._log_paths:
            try:
                with open(path, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(parts)

    def explain(self, message: str = "", lines: int = LOG_TAIL_LINES) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"{message}\n--- postgres log (last {lines} lines) ---\n{tail}"
