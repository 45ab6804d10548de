"""A REAL Kamailio as a digest-authenticating SIP registrar on loopback, for interop tests.

Usage from a trial test::

    from tests.support.kamailio import KamailioRegistrar

    class RegisterTests(TestCase):
        def setUp(self):
            self.registrar = KamailioRegistrar(self)          # started; stopped at cleanup
            # self.registrar.port, .host, .realm, .password_for("alice") == "pw-alice"

        @defer.inlineCallbacks
        def test_registers(self):
            ...  # REGISTER sip:alice@test.example to 127.0.0.1:self.registrar.port
            contacts = yield self.registrar.wait_for_contacts("sip:alice@test.example", 1)
            self.assertEqual(contacts, ["sip:alice@127.0.0.1:5070"], self.registrar.explain("bindings"))

Kamailio runs ``tests/support/kamailio-registrar.cfg`` in the foreground (``-DD -E``) in its
own process group, logging to ``kamailio.log`` in the test's temp dir (kept after the test;
``explain()`` appends its tail to assertion messages). The cfg computes each account's
password from the authentication username (``password_for``), so any number of accounts
works without a table. Bindings are kept in memory (usrloc ``db_mode`` 0, ``use_domain`` 0:
an AoR is just the user part) and read with ``kamcmd`` over a private ctl socket.

Behaviour of the cfg (see its header): REGISTER without (or with stale) credentials gets a
401 (407 with ``proxy=True``); a wrong password gets ``403 Forbidden`` (or is challenged
again with ``rechallenge_wrong_password=True``); the right one is saved and answered 200 with
the bindings. OPTIONS, INFO, MESSAGE, NOTIFY, PUBLISH, SUBSCRIBE, BYE, UPDATE, PRACK and REFER
get 200 OK, after the same authentication when ``challenge_all`` (the default in proxy mode).
Anything else that fails the check (a forged or foreign nonce, a response of the wrong length
for the algorithm: ``pv_*_authenticate`` returns -1) is challenged again. The authentication
username is not compared with the From/To user. ``script_log()`` lists the cfg's own lines,
e.g. "auth REGISTER user=alice rc=-2". IPv4 hosts only (readiness reads /proc/net/udp).

The kamcmd helpers block (a subprocess, a few milliseconds); from a running reactor use the
``*_async`` variants, which run them in the reactor's thread pool and return Deferreds.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading

from twisted.internet import threads

from tests.support.peers import PeerProcess, free_port, missing_peer, require_program, wait_for

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio-registrar.cfg")
# A trunk: challenges INVITEs with 407, relays them to -A UAS, checks in-dialog CSeqs.
TRUNK_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio-trunk.cfg")
# An anonymising proxy: uac_replace_from in restore_mode auto (vsf), XORed with -A RESTORE_PASSWD.
PROXY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio-proxy.cfg")
# Kamailio's uac module registering the accounts of -A DB_URL (a uacreg table).
UAC_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio-uac.cfg")
# The database module usrloc needs for a db_url scheme, and Kamailio's DDL of its version and
# location tables (Debian's kamailio package installs them with kamdbctl's schema files).
USRLOC_DB_MODULES = {"postgres": "db_postgres.so", "mysql": "db_mysql.so"}
USRLOC_SCHEMA_FILES = ("/usr/share/kamailio/{kind}/standard-create.sql", "/usr/share/kamailio/{kind}/usrloc-create.sql")
ALGORITHMS = ("MD5", "SHA-256")
# www_challenge/proxy_challenge flags for each qop choice.
QOP_FLAGS = {None: 0, "auth": 1, "auth-int": 2}
START_TIMEOUT = 10.0
LOG_TAIL_LINES = 60


class KamailioError(Exception):
    """Kamailio did not start, or a kamcmd query failed; the message includes its log."""


def aor_user(aor: str) -> str:
    """The usrloc key of ``aor``: 'sip:alice@example.com;x=y', 'alice@example.com' and 'alice' -> 'alice'."""
    user = re.sub(r"^sips?:", "", aor.strip().strip("<>"))
    return user.split("@", 1)[0].split(";", 1)[0]


def usrloc_schema_files(kind: str) -> list[str]:
    """The scripts making Kamailio's version and location tables for ``kind`` ("postgres" or
    "mysql"), in order; the test is skipped (or fails under TXUAC_REQUIRE_PEERS=1) when they
    are not installed."""
    paths = [template.format(kind=kind) for template in USRLOC_SCHEMA_FILES]
    for path in paths:
        if not os.path.exists(path):
            missing_peer(f"Kamailio's usrloc schema {path} is not installed")
    return paths


def _local_ports(kind: str, state: str | None) -> set[tuple[str, int]]:
    """(hex address, port) pairs bound in /proc/net/{kind} (Linux), optionally in one TCP state."""
    found = set()
    try:
        with open(f"/proc/net/{kind}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if state is None or fields[3] == state:
                    address, port = fields[1].rsplit(":", 1)
                    found.add((address, int(port, 16)))
    except FileNotFoundError:
        pass
    return found


def _proc_address(host: str) -> str:
    """``host`` (IPv4) as /proc/net/udp writes it: 127.0.0.1 -> 0100007F."""
    return socket.inet_aton(host)[::-1].hex().upper()


class KamailioRegistrar:
    """A Kamailio registrar started for ``testcase`` on a free port of 127.0.0.1 (UDP, and TCP if asked).

    realm: realm of challenges and checks. algorithm: "MD5" or "SHA-256" (challenge and
    check). qop: "auth", None (no qop in the challenge) or "auth-int" (challenge only:
    Kamailio 5.6 cannot verify auth-int responses). password_prefix: the password of user U
    is password_prefix + U. proxy: challenge with 407/Proxy-Authenticate and check
    Proxy-Authorization. challenge_all: authenticate every request, not only REGISTER
    (default: True in proxy mode, else False). rechallenge_wrong_password: answer a wrong
    password with a new challenge instead of 403. nonce_expire: nonce lifetime (s); an
    expired nonce is re-challenged with stale=true. tcp: listen on TCP too (same port).
    tls: (certificate, private_key) PEM files: listen on TLS too, on ``tls_port`` (a free one).
    children: UDP (and TCP) worker processes. shm_mb/pkg_mb: Kamailio's -m/-M.
    udp_maxbuffer: Kamailio's ``maxbuffer`` (UDP receive buffer probe ceiling, bytes).
    rpc_fifo: load jsonrpcs on a FIFO too, for ``jsonrpc()`` and ``binding_map()`` (replies of any size).
    usrloc_db_url: keep the bindings in this database's location table too (made beforehand with
    ``usrloc_schema_files(kind)``), written as ``usrloc_db_mode`` says: 1 write-through (in the
    worker answering the REGISTER), 2 write-back (every second, from usrloc's timer). The
    default None keeps them in memory only.
    defines: extra -A defines (NAME -> value, or None for a flag). start: start now.
    config: the cfg file (CONFIG; TRUNK_CONFIG for a challenging trunk, which needs a UAS define;
    PROXY_CONFIG for an anonymising uac proxy, which needs RESTORE_PASSWD).
    """

    def __init__(
        self,
        testcase,
        *,
        realm: str = "test.example",
        algorithm: str = "MD5",
        qop: str | None = "auth",
        password_prefix: str = "pw-",
        proxy: bool = False,
        challenge_all: bool | None = None,
        rechallenge_wrong_password: bool = False,
        nonce_expire: int = 300,
        tcp: bool = False,
        tls: tuple[str, str] | None = None,
        children: int = 2,
        shm_mb: int = 64,
        pkg_mb: int = 8,
        udp_maxbuffer: int | None = None,
        rpc_fifo: bool = False,
        usrloc_db_url: str | None = None,
        usrloc_db_mode: int = 2,
        defines: dict[str, str | int | None] | None = None,
        host: str = "127.0.0.1",
        start: bool = True,
        config: str = CONFIG,
    ):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {algorithm!r}")
        if qop not in QOP_FLAGS:
            raise ValueError(f"qop must be one of {tuple(QOP_FLAGS)}, not {qop!r}")
        for label, value in (("realm", realm), ("password_prefix", password_prefix)):
            if '"' in value or "\\" in value:
                raise ValueError(f"{label} must not contain quotes or backslashes")
        self.testcase = testcase
        self.kamailio = require_program("kamailio")
        self.kamcmd_path = require_program("kamcmd")
        self.realm = realm
        self.algorithm = algorithm
        self.qop = qop
        self.password_prefix = password_prefix
        self.proxy = proxy
        self.challenge_all = proxy if challenge_all is None else challenge_all
        self.rechallenge_wrong_password = rechallenge_wrong_password
        self.nonce_expire = nonce_expire
        self.tcp = tcp
        self.tls = tls
        self.tls_port: int | None = None
        self.children = children
        self.shm_mb = shm_mb
        self.pkg_mb = pkg_mb
        self.udp_maxbuffer = udp_maxbuffer
        self.extra_defines = dict(defines or {})
        self.rpc_fifo = rpc_fifo
        if usrloc_db_url is not None and usrloc_db_url.split(":", 1)[0] not in USRLOC_DB_MODULES:
            raise ValueError(f"usrloc_db_url must start with one of {tuple(USRLOC_DB_MODULES)}")
        if usrloc_db_mode not in (1, 2):
            raise ValueError(f"usrloc_db_mode must be 1 or 2, not {usrloc_db_mode!r}")
        self.usrloc_db_url = usrloc_db_url
        self.usrloc_db_mode = usrloc_db_mode
        self.host = host
        self.config = config
        self.port: int | None = None
        self.process: PeerProcess | None = None
        self.halts = 0
        self._replies = itertools.count()
        self.rundir = os.path.abspath(testcase.mktemp())
        os.makedirs(self.rundir)
        self.log_path = os.path.join(self.rundir, "kamailio.log")
        # A unix socket path must fit in 108 bytes; trial temp dirs can be longer.
        self._ctl_dir = tempfile.mkdtemp(prefix="txuac-kam-")
        self.ctl_path = os.path.join(self._ctl_dir, "ctl")
        self.fifo_path = os.path.join(self._ctl_dir, "rpc.fifo")
        testcase.addCleanup(self.stop)
        if start:
            self.start()

    # --- accounts -----------------------------------------------------------------

    def password_for(self, username: str) -> str:
        """The password the cfg expects from authentication username ``username``."""
        return self.password_prefix + username

    def uri(self, transport: str | None = None) -> str:
        """The registrar's SIP URI, e.g. sip:127.0.0.1:5060 (;transport=tcp if asked)."""
        suffix = f";transport={transport}" if transport and transport.lower() != "udp" else ""
        return f"sip:{self.host}:{self.port}{suffix}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # --- process ------------------------------------------------------------------

    def defines(self) -> dict[str, str | int | None]:
        """The -A preprocessor defines for the cfg (strings already quoted)."""
        defines: dict[str, str | int | None] = {
            "CTL_SOCKET": f'"unix:{self.ctl_path}"',
            "REALM": f'"{self.realm}"',
            "PW_PREFIX": f'"{self.password_prefix}"',
            "CHALLENGE_FLAGS": QOP_FLAGS[self.qop],
            "NONCE_EXPIRE": int(self.nonce_expire),
            "CHILDREN": int(self.children),
        }
        if self.algorithm == "SHA-256":
            defines["WITH_SHA256"] = None
        if self.proxy:
            defines["WITH_PROXY"] = None
        if self.challenge_all:
            defines["WITH_CHALLENGE_ALL"] = None
        if self.rechallenge_wrong_password:
            defines["WITH_RECHALLENGE"] = None
        if self.tcp or self.tls:
            defines["WITH_TCP"] = None
        if self.tls:
            defines["WITH_TLS"] = None
            defines["TLS_CERT"] = f'"{self.tls[0]}"'
            defines["TLS_KEY"] = f'"{self.tls[1]}"'
        if self.udp_maxbuffer:
            defines["MAXBUFFER"] = int(self.udp_maxbuffer)
        if self.rpc_fifo:
            defines["RPC_FIFO"] = f'"{self.fifo_path}"'
            defines["RPC_REPLY_DIR"] = f'"{self._ctl_dir}/"'
        if self.usrloc_db_url:
            defines["USRLOC_DB_URL"] = f'"{self.usrloc_db_url}"'
            defines["USRLOC_DB_MODULE"] = f'"{USRLOC_DB_MODULES[self.usrloc_db_url.split(":", 1)[0]]}"'
            defines["USRLOC_DB_MODE"] = int(self.usrloc_db_mode)
        defines.update(self.extra_defines)
        return defines

    def argv(self) -> list[str]:
        argv = [
            self.kamailio, "-DD", "-E", "-f", self.config, "-Y", self.rundir, "-w", self.rundir,
            "-m", str(self.shm_mb), "-M", str(self.pkg_mb), "-l", f"udp:{self.host}:{self.port}",
        ]
        if self.tcp:
            argv += ["-l", f"tcp:{self.host}:{self.port}"]
        if self.tls:
            argv += ["-l", f"tls:{self.host}:{self.tls_port}"]
        for name, value in self.defines().items():
            argv += ["-A", name if value is None else f"{name}={value}"]
        return argv

    def start(self, attempts: int = 3, port: int | None = None) -> None:
        """Start Kamailio (on ``port``, else a free one) and wait until it listens and its ctl
        socket exists (a fraction of a second)."""
        for attempt in range(attempts):
            self.port = port or free_port(socket.SOCK_DGRAM, self.host)
            if self.tls and (self.tls_port is None or port is None):
                self.tls_port = free_port(socket.SOCK_STREAM, self.host)
            if os.path.exists(self.ctl_path):
                os.unlink(self.ctl_path)
            argv = self.argv()
            with open(os.path.join(self.rundir, "kamailio.cmd"), "w") as f:
                f.write(shlex.join(argv) + "\n")
            self.process = PeerProcess(argv, cwd=self.rundir, log_path=self.log_path)
            wait_for(lambda: not self.process.running() or self.ready(), START_TIMEOUT)
            if self.process.running() and self.ready():
                return
            status = self.process.stop()
            output = self.process.output()
            # Another process took the port between free_port() and Kamailio's bind: retry.
            if "Address already in use" in output and attempt + 1 < attempts:
                continue
            raise KamailioError(
                f"Kamailio did not start on {self.host}:{self.port} (exit status {status})\n"
                f"command: {shlex.join(argv)}\n{self._format_log(output)}"
            )

    def halt(self) -> int | None:
        """Stop Kamailio but keep its port for ``start(port=self.port)``: a registrar that is down.

        Its log so far is kept as kamailio.log.N (N = 1, 2, ...). Returns the exit status.
        """
        if self.process is None:
            return None
        status = self.process.stop()
        self.process = None
        self.halts += 1
        if os.path.exists(self.log_path):
            os.replace(self.log_path, f"{self.log_path}.{self.halts}")
        return status

    def restart(self) -> None:
        """A new Kamailio on the same port: the registrar is back with its bindings lost (usrloc
        is in memory). After halt(), only starts it."""
        self.halt()
        self.start(port=self.port)

    def ready(self) -> bool:
        """Kamailio's UDP (and TCP) socket is bound and the ctl socket exists."""
        address = _proc_address(self.host)
        if (address, self.port) not in _local_ports("udp", None):
            return False
        if self.tcp and (address, self.port) not in _local_ports("tcp", "0A"):
            return False
        if self.tls and (address, self.tls_port) not in _local_ports("tcp", "0A"):
            return False
        return os.path.exists(self.ctl_path) and (not self.rpc_fifo or os.path.exists(self.fifo_path))

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> int | None:
        """SIGTERM Kamailio's process group (SIGKILL after 5 s); returns its exit status. Idempotent."""
        status = None
        if self.process is not None:
            status = self.process.stop()
        shutil.rmtree(self._ctl_dir, ignore_errors=True)
        return status

    # --- logs -------------------------------------------------------------------------

    def log(self) -> str:
        """Everything Kamailio logged so far (kept in the test's temp dir as kamailio.log)."""
        if not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def script_log(self) -> list[str]:
        """The cfg's own log lines (each request and authentication result), without prefixes."""
        return [line.split("txuac: ", 1)[1] for line in self.log().splitlines() if "<script>: txuac: " in line]

    def _format_log(self, text: str, lines: int = LOG_TAIL_LINES) -> str:
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def explain(self, message: str = "", lines: int = LOG_TAIL_LINES) -> str:
        """``message`` followed by the tail of Kamailio's log: for assertion messages."""
        return f"{message}\n{self._format_log(self.log(), lines)}"

    # --- kamcmd queries (blocking) -------------------------------------------------------

    def kamcmd(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``kamcmd -s unixs:<ctl> *args`` and return its output; KamailioError on an RPC error.

        kamcmd exits 0 even when the RPC fails: errors are recognised by the "error: " prefix.
        It cannot read replies larger than about 128 KB (a full ul.dump of thousands of AoRs).
        """
        argv = [self.kamcmd_path, "-s", f"unixs:{self.ctl_path}", *args]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise KamailioError(self.explain(f"{shlex.join(argv)} timed out after {timeout} s"))
        out = done.stdout.decode("utf-8", "replace")
        err = done.stderr.decode("utf-8", "replace")
        if done.returncode != 0 or out.startswith("error:"):
            raise KamailioError(self.explain(f"{shlex.join(argv)} failed ({done.returncode}): {out}{err}"))
        return out

    def bindings(self, aor: str) -> list[dict[str, str]]:
        """The bindings of ``aor`` from ``ul.lookup location``: one dict per contact
        (keys as Kamailio prints them: Address, Expires, Q, Call-ID, CSeq, User-Agent, ...).
        """
        try:
            out = self.kamcmd("ul.lookup", "location", aor_user(aor))
        except KamailioError as e:
            if "AOR not found" in str(e):
                return []
            raise
        bindings: list[dict[str, str]] = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Contact: {"):
                bindings.append({})
            elif bindings and ": " in line and not line.endswith("{"):
                key, value = line.split(": ", 1)
                bindings[-1][key] = value
        return bindings

    def contacts(self, aor: str) -> list[str]:
        """The contact URIs registered for ``aor`` (any of 'sip:u@d', 'u@d', 'u'), in Kamailio's order."""
        return [binding["Address"] for binding in self.bindings(aor)]

    def aors(self) -> list[str]:
        """Every AoR (user part) with at least one binding, from ``ul.dump brief``."""
        out = self.kamcmd("ul.dump", "brief")
        return [line.split(": ", 1)[1] for line in (l.strip() for l in out.splitlines()) if line.startswith("AoR: ")]

    def statistic(self, name: str) -> int:
        """One counter from ``stats.get_statistics``, e.g. 'location_contacts' or 'usrloc:location_contacts'.

        Kamailio takes a bare name or a whole 'group:'; 'group:name' silently prints nothing.
        """
        bare = name.rsplit(":", 1)[-1]
        out = self.kamcmd("stats.get_statistics", bare)
        for line in out.splitlines():
            key, _, value = line.partition(" = ")
            if key.strip().rsplit(":", 1)[-1] == bare:
                return int(value)
        raise KamailioError(self.explain(f"statistic {name} not in: {out}"))

    def contact_count(self) -> int:
        """How many bindings exist in total (usrloc:location_contacts; expired ones go within ~1 s)."""
        return self.statistic("location_contacts")

    def user_count(self) -> int:
        """How many AoRs have bindings (usrloc:location_users)."""
        return self.statistic("location_users")

    def jsonrpc(self, method: str, *params, timeout: float = 30.0):
        """The ``result`` of ``method`` through the jsonrpcs FIFO (``rpc_fifo=True``); any size,
        unlike kamcmd. KamailioError on an RPC error or no answer within ``timeout``."""
        if not self.rpc_fifo:
            raise ValueError("start the registrar with rpc_fifo=True")
        name = f"reply-{os.getpid()}-{threading.get_ident()}-{next(self._replies)}"
        reply_path = os.path.join(self._ctl_dir, name)
        os.mkfifo(reply_path, 0o600)
        chunks: list[bytes] = []

        def read_reply():
            with open(reply_path, "rb") as reply:  # blocks until Kamailio opens it to answer
                chunks.append(reply.read())

        reader = threading.Thread(target=read_reply, daemon=True)
        reader.start()
        try:
            request = {"jsonrpc": "2.0", "method": method, "params": list(params), "reply_name": name, "id": 1}
            with open(self.fifo_path, "w") as fifo:
                fifo.write(json.dumps(request) + "\n")
            reader.join(timeout)
            if reader.is_alive():
                with open(reply_path, "wb"):  # unblocks the reader
                    pass
                raise KamailioError(self.explain(f"no answer to {method} within {timeout} s"))
        finally:
            os.unlink(reply_path)
        answer = json.loads(b"".join(chunks).decode("utf-8", "replace"))
        if "error" in answer:
            raise KamailioError(self.explain(f"{method} failed: {answer['error']}"))
        return answer.get("result")

    def binding_map(self) -> dict[str, list[str]]:
        """Every AoR (user part) with its contact addresses, from one ``ul.dump`` (``rpc_fifo=True``)."""
        found: dict[str, list[str]] = {}
        for domain in self.jsonrpc("ul.dump")["Domains"]:
            for entry in domain["Domain"]["AoRs"]:
                info = entry["Info"]
                found[info["AoR"]] = [contact["Contact"]["Address"] for contact in info["Contacts"]]
        return found

    # --- asynchronous variants (Deferreds, for tests with a running reactor) ----------------

    def kamcmd_async(self, *args: str, timeout: float = 10.0):
        return threads.deferToThread(self.kamcmd, *args, timeout=timeout)

    def bindings_async(self, aor: str):
        return threads.deferToThread(self.bindings, aor)

    def contacts_async(self, aor: str):
        return threads.deferToThread(self.contacts, aor)

    def contact_count_async(self):
        return threads.deferToThread(self.contact_count)

    def wait_for_contacts(self, aor: str, count: int = 1, timeout: float = 10.0, exact: bool = True):
        """A Deferred firing with the contacts of ``aor`` once there are ``count`` of them
        (at least ``count`` if not ``exact``); it fails with KamailioError (and the log) at ``timeout``.
        ``count=0`` waits for the bindings to disappear.
        """

        def poll():
            seen: list[str] = []

            def check():
                seen[:] = self.contacts(aor)
                return len(seen) == count if exact else len(seen) >= count

            if wait_for(check, timeout, interval=0.05):
                return list(seen)
            raise KamailioError(self.explain(f"{aor}: wanted {count} contact(s), have {seen} after {timeout} s"))

        return threads.deferToThread(poll)
