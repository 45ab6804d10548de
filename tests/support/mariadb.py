"""A REAL MariaDB server on loopback, private to one test, for the MySQL account-store tests.

Usage from a trial test::

    from tests.support.mariadb import MariaDBServer

    class StoreTests(TestCase):
        def setUp(self):
            self.db = MariaDBServer(self)        # started; stopped and removed at cleanup
            self.db.mysql(file=SCHEMA)           # an absolute path; as root, in the test database
            # self.db.url == "mysql://txuac:<password>@127.0.0.1:<port>/txuac"

        def test_outage(self):
            self.db.stop()      # normal shutdown: clients are disconnected at once
            self.db.start()     # same data directory, same port and socket

The programs are Debian's ``mariadb-server`` and ``mariadb-client`` (``mariadbd`` under
/usr/sbin, ``mariadb-install-db`` and ``mariadb``). When they are missing the test is
skipped, or fails under TXUAC_REQUIRE_PEERS=1 (as .ci/run sets).

One data directory is made by ``mariadb-install-db`` per test process (a template with the
test database, utf8mb4 as Debian's server configuration makes it, and its user, made in
bootstrap mode; removed at exit) and copied for each server, which keeps a start-up near
0.5 s. The server runs in the foreground as a PeerProcess (its log is ``mariadb-N.log`` in
the server's directory), listens on 127.0.0.1 on a free port and on the Unix socket
``sock`` in that directory, with durability and memory turned down. The test user has a
password with ':' and '@' (as Kamailio's URL parser allows), for TCP (``'txuac'@'127.0.0.1'``)
and the socket (``'txuac'@'localhost'``): the store is tested with the kind of URL an operator
writes. root has no password and is used over the socket by ``mysql()``. When the tests run
as root the server needs ``--user=root``.

``mysql()`` blocks (a subprocess of a few tens of milliseconds); so do ``stop()`` and ``start()``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile

from tests.support.peers import PeerProcess, free_port, require_program, wait_for

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
DEFAULT_USER = "txuac"
DEFAULT_DATABASE = "txuac"
DEFAULT_PASSWORD = "pw:with@special-chars"  # ':' and '@' as Kamailio's URL parser allows them
LOG_TAIL_LINES = 40

# Fast, small and quiet: a test server holds a handful of rows and must never outlive its test.
SERVER_SETTINGS = (
    "--skip-log-bin",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-data-file-path=ibdata1:4M:autoextend",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-fast-shutdown=1",
    "--performance-schema=OFF",
    "--max-connections=30",
    "--key-buffer-size=1M",
)


class MariaDBError(Exception):
    """The server did not start or stop, or the client failed; the message includes the log."""


def _programs() -> dict[str, str]:
    return {name: require_program(name) for name in ("mariadbd", "mariadb-install-db", "mariadb")}


def _user_options() -> list[str]:
    return ["--user=root"] if os.geteuid() == 0 else []


def _environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MYSQL")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _grants(database: str, user: str, password: str) -> str:
    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"]
    for host in ("127.0.0.1", "localhost"):
        statements.append(f"CREATE USER IF NOT EXISTS {sql_text(user)}@'{host}' IDENTIFIED BY {sql_text(password)};")
        statements.append(f"ALTER USER {sql_text(user)}@'{host}' IDENTIFIED BY {sql_text(password)};")
        statements.append(f"GRANT ALL ON `{database}`.* TO {sql_text(user)}@'{host}';")
    return "\n".join(statements) + "\n"


_template: list[str] = []
_running: set["MariaDBServer"] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: a test process that ends without running cleanups leaves no server behind."""
    for server in list(_running):
        server._cleanup()


def _template_datadir(programs: dict[str, str]) -> str:
    """A data directory with the default database and user, made once per process, removed at exit."""
    if _template:
        return _template[0]
    root = tempfile.mkdtemp(prefix="txuac-mdbtemplate-")
    atexit.register(shutil.rmtree, root, True)
    datadir = os.path.join(root, "data")
    argv = [programs["mariadb-install-db"], "--no-defaults", f"--datadir={datadir}",
            "--auth-root-authentication-method=normal", "--skip-test-db", *_user_options(),
            *SERVER_SETTINGS]
    result = subprocess.run(argv, env=_environment(), cwd=root, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=120)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        raise MariaDBError(f"mariadb-install-db failed ({result.returncode}):\n{output}")
    # The default database and user are made once here (bootstrap mode: no server, no port).
    argv = [programs["mariadbd"], "--no-defaults", "--bootstrap", f"--datadir={datadir}", *_user_options(),
            *SERVER_SETTINGS]
    commands = "USE mysql;\nFLUSH PRIVILEGES;\n" + _grants(DEFAULT_DATABASE, DEFAULT_USER, DEFAULT_PASSWORD)
    result = subprocess.run(argv, env=_environment(), cwd=root, input=commands.encode(), capture_output=True,
                            timeout=120)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0 or "ERROR" in output:
        raise MariaDBError(f"mariadbd --bootstrap failed ({result.returncode}):\n{output}")
    _template.append(datadir)
    return datadir


class MariaDBServer:
    """A running MariaDB server with one utf8mb4 database and one password-protected user."""

    def __init__(self, testcase, database: str = DEFAULT_DATABASE, user: str = DEFAULT_USER,
                 password: str = DEFAULT_PASSWORD, start: bool = True):
        self.programs = _programs()
        template = _template_datadir(self.programs)
        self.database = database
        self.user = user
        self.password = password
        self.host = "127.0.0.1"
        self.port = free_port(socket.SOCK_STREAM)
        # Not under trial's _trial_temp: a Unix socket path must stay short (108 bytes).
        self.directory = tempfile.mkdtemp(prefix="txuac-mdb-")
        self.datadir = os.path.join(self.directory, "data")
        self.socket = os.path.join(self.directory, "sock")
        self._process: PeerProcess | None = None
        self._starts = 0
        self._log_paths: list[str] = []
        testcase.addCleanup(self._cleanup)
        result = subprocess.run(["cp", "-a", template, self.datadir], stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=60)
        if result.returncode != 0:
            raise MariaDBError(f"copying the template data directory failed: {result.stderr!r}")
        self._made = (database, user, password) == (DEFAULT_DATABASE, DEFAULT_USER, DEFAULT_PASSWORD)
        if start:
            for attempt in range(3):
                try:
                    self.start()
                    break
                except MariaDBError:
                    if attempt == 2 or "Address already in use" not in self.log():
                        raise
                    self.port = free_port(socket.SOCK_STREAM)  # lost a race for the port

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL of the test database over TCP, in Kamailio's form (password in clear)."""
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def socket_url(self) -> str:
        """The store URL of the test database over the Unix socket."""
        return f"mysql://{self.user}:{self.password}@localhost/{self.database}?unix_socket={self.socket}"

    def argv(self) -> list[str]:
        return [self.programs["mariadbd"], "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--port={self.port}", "--bind-address=127.0.0.1", f"--pid-file={self.directory}/pid",
                *_user_options(), *SERVER_SETTINGS]

    def start(self) -> None:
        """Start the server (same data directory, port and socket as before) and wait until it answers."""
        if self.running():
            return
        self._starts += 1
        log_path = os.path.join(self.directory, f"mariadb-{self._starts}.log")
        self._log_paths.append(log_path)
        self._process = PeerProcess(self.argv(), cwd=self.directory, env=_environment(), log_path=log_path)
        _running.add(self)
        if not wait_for(lambda: self.ready() or not self._process.running(), START_TIMEOUT, 0.05) \
                or not self.ready():
            self._process.stop()
            raise MariaDBError(self.explain(f"MariaDB did not start on port {self.port}"))
        if not self._made:
            self.mysql(_grants(self.database, self.user, self.password), database="mysql")
            self._made = True

    def ready(self) -> bool:
        """True once the socket exists and a query works."""
        if not os.path.exists(self.socket):
            return False
        result = subprocess.run(self._client_argv("mysql") + ["-e", "SELECT 1"], env=_environment(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return result.returncode == 0

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running() else None

    def stop(self) -> None:
        """Shut the server down (SIGTERM to the mariadbd we started): clients are disconnected now."""
        process = self._process
        if process is None:
            return
        if process.running():
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        process.stop()  # closes the log; SIGKILL to the group only if still running
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

    def _client_argv(self, database: str) -> list[str]:
        return [self.programs["mariadb"], "--no-defaults", f"--socket={self.socket}", "--user=root",
                "--batch", "--skip-column-names", "--default-character-set=utf8mb4", f"--database={database}"]

    def mysql(self, sql: str | None = None, file: str | None = None, database: str | None = None,
              timeout: float = 30.0) -> str:
        """Run ``sql`` (or the script ``file``) with the ``mariadb`` client as root over the socket.

        In ``database`` (default: the test database); stops at the first error and raises
        MariaDBError. Output is tab-separated, without column names: ``mysql("SELECT 1, 2")`` == "1\\t2".
        """
        if (sql is None) == (file is None):
            raise ValueError("give sql or file")
        if file is not None:
            with open(file, "rb") as f:
                script = f.read()
        else:
            script = sql.encode("utf-8")
        result = subprocess.run(self._client_argv(database or self.database), env=_environment(), input=script,
                                capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise MariaDBError(f"mariadb failed ({result.returncode}) on {sql or file!r}: "
                               f"{result.stderr.decode('utf-8', 'replace').strip()}")
        return result.stdout.decode("utf-8", "replace").strip()

    def log(self) -> str:
        """Every server log of this server (one per start), oldest first."""
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
        return f"{message}\n--- mariadb log (last {lines} lines) ---\n{tail}"
