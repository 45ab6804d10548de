"""Several real txuac nodes sharing one uacreg table, for the cluster interop tests and
bench/cluster.py.

Usage from a trial test (or a bench, with any object that has ``mktemp`` and ``addCleanup``)::

    from tests.support.cluster import Fleet

    fleet = Fleet(self, "postgres", accounts=3000)   # database, registrar, rows; no node yet
    fleet.start_nodes(3)                              # node-a, node-b, node-c: twistd processes
    fleet.wait_settled(timeout=60)                    # one binding per AoR, each from its owner
    fleet.nodes[0].kill()                             # kill -9; .freeze() / .thaw() / .stop()
    fleet.database.cut(); fleet.database.restore()    # black-hole the database (a TCP relay)
    fleet.database.restart()                          # the server itself
    fleet.nodes[1].status()                           # its cluster.status; .metrics(), .rpc(...)

The database is a private PostgreSQL (tests/support/postgres.py) or MariaDB
(tests/support/mariadb.py) with Kamailio's uacreg table (conf/schema) holding the accounts;
the nodes reach it through a ``TCPRelay`` (tests/support/tcp_relay.py) so a test can cut it
without stopping the server.
The registrar is a real Kamailio (tests/support/kamailio.py) with its jsonrpcs FIFO on, so the
whole usrloc table is read with one ``ul.dump`` (``Fleet.bindings()``). Each node is
``twistd -n uac --config`` in a directory of its own, with its own SIP port (its
``reg_contact_addr``: that is what tells whose binding a contact is), admin port and
``[cluster] node_id``. Everything blocks: the nodes are other processes, so a test needs no
reactor and polls with ``wait_for``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

from tests.support.accounts import uacreg_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.mariadb import MariaDBServer, sql_text
from tests.support.peers import PeerProcess, free_port, wait_for
from tests.support.postgres import PostgresCluster
from tests.support.stores import SCHEMAS
from tests.support.tcp_relay import TCPRelay
from tests.support.twistd import START_TIMEOUT, child_environment, twistd_argv
from txuac import __version__

NODE_IDS = ("node-a", "node-b", "node-c", "node-d", "node-e")
EXPIRES = 120  # asked of the registrar: a refresh every ~27 s with reg_timer_interval 90
STOP_TIMEOUT = 30.0
CONTACT_HOST_PORT = re.compile(r"@([^;>?]+)")
COLUMNS = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
           "auth_password", "auth_ha1", "auth_proxy", "expires", "flags", "reg_delay", "contact_addr", "socket",
           "contact_user")


class ClusterDatabase:
    """A private PostgreSQL or MariaDB server with Kamailio's uacreg table, reached by the
    nodes through a TCPRelay (``url``)."""

    def __init__(self, testcase, kind: str):
        self.kind = kind
        if kind == "postgres":
            self.server: PostgresCluster | MariaDBServer = PostgresCluster(testcase)
            self.server.psql(file=os.path.join(SCHEMAS, "postgres.sql"))
        elif kind == "mysql":
            self.server = MariaDBServer(testcase)
            self.server.mysql(file=os.path.join(SCHEMAS, "mysql.sql"))
        else:
            raise ValueError(f"kind must be postgres or mysql, not {kind!r}")
        self.relay = TCPRelay((self.server.host, self.server.port))
        testcase.addCleanup(self.relay.stop)

    @property
    def url(self) -> str:
        return self.server.url.replace(f":{self.server.port}/", f":{self.relay.port}/")

    def sql(self, text: str, timeout: float = 60.0) -> str:
        """Run ``text`` on the server directly (not through the relay); its output."""
        if len(text) > 100_000:  # longer than one argv string may be: through a file
            path = os.path.join(self.server.directory, "script.sql")
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
            return self.run_file(path, timeout)
        if isinstance(self.server, PostgresCluster):
            return self.server.psql(text, timeout=timeout)
        return self.server.mysql(text, timeout=timeout)

    def run_file(self, path: str, timeout: float = 600.0) -> str:
        if isinstance(self.server, PostgresCluster):
            return self.server.psql(file=path, timeout=timeout)
        return self.server.mysql(file=path, timeout=timeout)

    def insert(self, rows: list[dict], batch: int = 1000) -> None:
        """INSERT ``rows`` into uacreg, as plain SQL (kamctl's way)."""
        statements = []
        for start in range(0, len(rows), batch):
            values = ",\n".join(
                "(" + ", ".join(str(row[c]) if isinstance(row[c], int) else sql_text(row[c]) for c in COLUMNS) + ")"
                for row in rows[start:start + batch])
            statements.append(f"INSERT INTO uacreg ({', '.join(COLUMNS)}) VALUES\n{values};")
        self.sql("\n".join(statements))

    def delete(self, l_uuid: str) -> None:
        self.sql(f"DELETE FROM uacreg WHERE l_uuid = {sql_text(l_uuid)}")

    def leases(self) -> dict[int, str | None]:
        """partition -> holding node_id (None when free) from txuac_cluster_lease, on the DB clock."""
        now = "now()" if self.kind == "postgres" else "CURRENT_TIMESTAMP(3)"
        out = self.sql(f"SELECT partition_id, CASE WHEN expires_at > {now} THEN node_id END FROM txuac_cluster_lease")
        separator = "|" if self.kind == "postgres" else "\t"
        leases: dict[int, str | None] = {}
        for line in out.splitlines():
            partition, node = line.split(separator)
            leases[int(partition)] = node if node not in ("", "NULL") else None
        return leases

    def cut(self) -> None:
        self.relay.cut()

    def restore(self) -> None:
        self.relay.restore()

    def restart(self) -> None:
        """Stop the server (its clients are disconnected) and start it again on the same port."""
        self.server.restart()


class ClusterNode:
    """One ``twistd -n uac`` of the fleet, in its own directory with its own ports."""

    def __init__(self, testcase, node_id: str, database_url: str, registrar_host: str, *,
                 cluster: dict | None = None, uac: dict | None = None, environment: dict | None = None):
        self.node_id = node_id
        self.environment = child_environment() if environment is None else environment
        self.workdir = os.path.abspath(testcase.mktemp())
        os.makedirs(self.workdir)
        self.sip_port = free_port()
        self.rpc_port = free_port(socket.SOCK_STREAM)
        self.contact_addr = f"{registrar_host}:{self.sip_port}"
        self.config_path = os.path.join(self.workdir, "uac.toml")
        self.process: PeerProcess | None = None
        self.starts = 0
        settings = {
            "uac": {"reg_db_url": database_url, "reg_contact_addr": self.contact_addr, "reg_retry_interval": 5,
                    "reg_retry_max_interval": 30, **(uac or {})},
        }
        if cluster is not None:  # None: a single node, no [cluster]
            settings["cluster"] = {"node_id": node_id, **cluster}
        with open(self.config_path, "w") as f:
            f.write("[core]\n"
                    f'listen = ["udp:{registrar_host}:{self.sip_port}"]\n'
                    "[rpc]\n"
                    f'listen = "tcp:{self.rpc_port}:interface=127.0.0.1"\n'
                    "[log]\nfailure_summary_interval = 1\n")
            for section, values in settings.items():
                f.write(f"[{section}]\n")
                for key, value in values.items():
                    f.write(f"{key} = {json.dumps(value)}\n")
        testcase.addCleanup(self.kill)

    # -- process -------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        log_path = os.path.join(self.workdir, f"twistd-{self.starts}.log")
        argv = twistd_argv("-n", "--pidfile=", "uac", "--config", self.config_path)
        self.process = PeerProcess(argv, cwd=self.workdir, env=self.environment, log_path=log_path)
        if wait:
            self.wait_started()

    def wait_started(self) -> None:
        started = f"txuac {__version__} started"
        process = self.process
        if not wait_for(lambda: started in process.output() or not process.running(), START_TIMEOUT * 3, 0.1):
            raise AssertionError(self.explain(f"{self.node_id}: no {started!r}"))
        if not process.running():
            raise AssertionError(self.explain(f"{self.node_id} exited with {process.process.returncode}"))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def kill(self) -> None:
        """kill -9 (the whole process group: twistd has no children of its own). Idempotent."""
        if self.process is None:
            return
        if self.process.running():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop()

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait for a clean exit (un-REGISTERs and lease releases included)."""
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.explain(f"{self.node_id} still running {timeout} s after SIGTERM"))

    def output(self) -> str:
        return self.process.output() if self.process else ""

    def logs(self) -> str:
        """Every run's output, oldest first."""
        parts = []
        for number in range(1, self.starts + 1):
            path = os.path.join(self.workdir, f"twistd-{number}.log")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
        return "".join(parts)

    def explain(self, message: str = "", lines: int = 40) -> str:
        tail = "\n".join(self.logs().splitlines()[-lines:])
        return f"{message}\n--- {self.node_id} ({self.workdir}), last {lines} lines ---\n{tail}"

    # -- admin ---------------------------------------------------------------------------

    def rpc(self, method: str, *params, timeout: float = 30.0):
        """The result of JSON-RPC ``method`` (AssertionError with the error when it fails)."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.rpc_port}/RPC", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            reply = json.loads(answer.read())
        if "error" in reply:
            raise AssertionError(f"{self.node_id}: {method} failed: {reply['error']}")
        return reply["result"]

    def status(self) -> dict:
        return self.rpc("cluster.status")

    def metrics(self, timeout: float = 30.0) -> dict[str, float]:
        """The Prometheus exposition as {series: value}, e.g. 'txuac_cluster_fenced_total': 1.0."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rpc_port}/metrics", timeout=timeout) as answer:
            text = answer.read().decode()
        series: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                series[name] = float(value)
        return series

    def metric(self, name: str) -> float:
        """The sum of every series of ``name`` (0 when there is none)."""
        return sum(value for series, value in self.metrics().items() if series.split("{", 1)[0] == name)


def contact_host_port(contact: str) -> str:
    """'sip:acct00001@127.0.0.1:5070;transport=udp' -> '127.0.0.1:5070'."""
    match = CONTACT_HOST_PORT.search(contact)
    return match.group(1) if match else contact


class Fleet:
    """A database holding ``accounts`` rows, a Kamailio registrar, and the txuac nodes started on them."""

    def __init__(self, testcase, kind: str = "postgres", accounts: int = 3000, *, expires: int = EXPIRES,
                 cluster: dict | None = None, uac: dict | None = None, registrar_children: int = 4,
                 clustered: bool = True, node_environment: dict | None = None,
                 registrar_options: dict | None = None):
        self.testcase = testcase
        self.database = ClusterDatabase(testcase, kind)
        # Transactions of a burst of takeovers linger for Timer K in shared memory: 64 MiB runs
        # out (500 answers) with 3,000 accounts.
        self.registrar = KamailioRegistrar(testcase, rpc_fifo=True, children=registrar_children,
                                           shm_mb=max(256, accounts // 200), pkg_mb=max(16, accounts // 2000),
                                           udp_maxbuffer=4 * 1024 * 1024, **(registrar_options or {}))
        self.cluster_settings = dict(cluster or {}) if clustered else None
        self.uac_settings = dict(uac or {})
        self.node_environment = node_environment
        self.expires = expires
        self.rows = self.make_rows(accounts)
        self.database.insert(self.rows)
        self.nodes: list[ClusterNode] = []

    def make_rows(self, count: int, start: int = 0) -> list[dict]:
        return uacreg_rows(count, self.registrar.uri(), start=start, expires=self.expires,
                           password_prefix=self.registrar.password_prefix)

    def user_of(self, l_uuid: str) -> str:
        return "acct" + l_uuid[len("uuid"):]

    def expected_users(self) -> set[str]:
        return {row["l_username"] for row in self.rows}

    # -- nodes ---------------------------------------------------------------------------

    def add_node(self, start: bool = True) -> ClusterNode:
        node = ClusterNode(self.testcase, NODE_IDS[len(self.nodes)], self.database.url, self.registrar.host,
                           cluster=self.cluster_settings, uac=self.uac_settings,
                           environment=self.node_environment)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def start_nodes(self, count: int, settle_each: float | None = None) -> list[ClusterNode]:
        """Start ``count`` more nodes at once or, with ``settle_each``, one after the other, each
        once the fleet before it has settled (within ``settle_each`` seconds)."""
        added = [self.add_node(start=False) for _ in range(count)]
        for node in added:
            node.start(wait=settle_each is not None)
            if settle_each is not None:
                self.wait_settled(settle_each)
        for node in added:
            node.wait_started()
        return added

    def node_at(self, host_port: str) -> ClusterNode | None:
        for node in self.nodes:
            if node.contact_addr == host_port:
                return node
        return None

    # -- what the registrar holds -----------------------------------------------------------

    def bindings(self) -> dict[str, list[str]]:
        """AoR (user part) -> its contact URIs, from one ul.dump of the registrar."""
        return self.registrar.binding_map()

    def owners(self) -> dict[str, str | None]:
        """AoR (user part) -> node_id of the node holding its partition's lease (None: nobody)."""
        from txuac.registrant.ownership import partition_of

        leases = self.database.leases()
        partitions = len(leases)
        return {row["l_username"]: leases.get(partition_of(row["l_uuid"], partitions)) for row in self.rows}

    def unbalanced(self, down: frozenset[str] = frozenset()) -> list[str]:
        """The partitions not held by the node rendezvous hashing gives them to among the running
        nodes not in ``down`` (every node computes the same owner from the same live nodes)."""
        from txuac.registrant.cluster.leases import desired_owner

        live = [node.node_id for node in self.nodes if node.running() and node.node_id not in down]
        return [f"partition {partition}: held by {holder}, should be {desired_owner(partition, live)}"
                for partition, holder in sorted(self.database.leases().items())
                if holder != desired_owner(partition, live)]

    def problems(self, bindings: dict[str, list[str]], users: set[str] | None = None,
                 owners: dict[str, str | None] | None = None, down: frozenset[str] = frozenset()) -> list[str]:
        """What is wrong with ``bindings``: an AoR of ``users`` with no binding, one with two or more,
        a binding from a node in ``down``, and (given ``owners``) one not from its owner's contact."""
        users = self.expected_users() if users is None else users
        problems = []
        for user in sorted(users):
            contacts = bindings.get(user, [])
            if not contacts:
                problems.append(f"{user}: no binding")
                continue
            if len(contacts) > 1:
                problems.append(f"{user}: {len(contacts)} bindings {contacts}")
                continue
            node = self.node_at(contact_host_port(contacts[0]))
            if node is None:
                problems.append(f"{user}: binding {contacts[0]} from no node")
            elif node.node_id in down:
                problems.append(f"{user}: binding {contacts[0]} from {node.node_id}, which is down")
            elif owners is not None and owners.get(user) != node.node_id:
                problems.append(f"{user}: binding from {node.node_id}, owner {owners.get(user)}")
        return problems

    def doubles(self, bindings: dict[str, list[str]]) -> list[str]:
        """The AoRs with two bindings or more."""
        return sorted(user for user, contacts in bindings.items() if len(contacts) > 1)

    def wait_settled(self, timeout: float, down: frozenset[str] = frozenset(), check_owner: bool = True,
                     users: set[str] | None = None) -> float:
        """Poll until every AoR of ``users`` (all rows) has exactly one binding, from a live node
        (with ``check_owner``: every partition held by the node rendezvous hashing gives it to
        among the live ones, and the binding from its owner's contact); the seconds it took.
        AssertionError at ``timeout``, naming the first problems."""
        started = time.monotonic()
        seen: list[str] = []

        def settled() -> bool:
            bindings = self.bindings()
            seen[:] = self.problems(bindings, users, None, down)
            if not seen and check_owner:  # the leases after: a binding cannot predate its lease
                seen[:] = self.unbalanced(down) or self.problems(bindings, users, self.owners(), down)
            return not seen

        if not wait_for(settled, timeout, 0.25):
            raise AssertionError(self.explain(f"not settled within {timeout} s: {len(seen)} problems, "
                                              f"first: {seen[:10]}"))
        return time.monotonic() - started

    def explain(self, message: str) -> str:
        parts = [message]
        for node in self.nodes:
            parts.append(node.explain(lines=15))
        parts.append(self.registrar.explain(lines=10))
        return "\n".join(parts)
