"""Three real txuac nodes on one uacreg table (a real PostgreSQL or MariaDB) registering 3,000
accounts at a real Kamailio registrar: each account registered by exactly one live node, a
dead or frozen node's accounts taken over within two lease periods, the database going away
and coming back without a binding lost or doubled, live changes to the table, a rolling
restart without an account offline.

One fleet per database runs every scenario in turn, each leaving it settled for the next (a
fleet takes 10 to 20 s to start and settle; the scenarios themselves are mostly waits): the
three nodes started at once, rows added and deleted by SQL, kill -9 of a node (then started
again), SIGSTOP past the lease, the database restarted, the database black-holed for 30 s,
and a rolling restart last. A failure's traceback names its scenario; test.log has the time
each one took.

What the registrar holds is read with one ``ul.dump`` (tests/support/cluster.py); "its owner"
is the node holding the lease of the account's partition in txuac_cluster_lease, read after
the bindings. Every node runs with the [cluster] defaults (lease_period 6 s, renew_interval
1 s) and accounts asking for 120 s, refreshed 93 s before they expire (reg_timer_interval 90),
so no binding would expire during any outage below.

The tests block: the nodes are other processes and nothing here needs the reactor.
"""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.support.cluster import ClusterNode, Fleet, contact_host_port
from tests.support.peers import wait_for

ACCOUNTS = 3000
NODES = 3
LEASE_PERIOD = 6.0  # [cluster] lease_period's default
RECOVERY_LIMIT = 15.0  # kill -9 to every account online again: two lease periods and the registrations
START_LIMIT = 90.0  # three nodes starting and registering 3,000 accounts on a busy machine
OUTAGE = 30.0
# From the INSERT's commit to the binding: PostgreSQL NOTIFYs at once; MariaDB's change log is
# polled twice a second, so a row may wait half a second before its REGISTER, 401 and REGISTER.
LIVE_CHANGE_LIMIT = {"postgres": 1.0, "mysql": 1.0}
POLL = 0.5  # seconds between two reads of the registrar while something is broken

log = Logger()


class ClusterInteropMixin:
    """Every scenario on one fleet, run on each database."""

    kind = "postgres"

    def test_scenarios_on_one_fleet(self):
        """Three nodes started at once and settled, then each scenario in turn on the same
        fleet (its docstring says what it checks)."""
        started = time.monotonic()
        fleet = Fleet(self, self.kind, ACCOUNTS)
        fleet.start_nodes(NODES)
        fleet.wait_settled(START_LIMIT)
        log.info("{kind}: fleet settled in {seconds:.1f} s", kind=self.kind, seconds=time.monotonic() - started)
        for scenario in (self.registered_once_by_its_owner, self.rows_added_and_deleted_by_sql,
                         self.kill_minus_nine, self.frozen_node_is_fenced_and_rejoins, self.database_restart,
                         self.database_outage, self.rolling_restart):
            started = time.monotonic()
            scenario(fleet)
            log.info("{kind}: {scenario} passed in {seconds:.1f} s", kind=self.kind, scenario=scenario.__name__,
                     seconds=time.monotonic() - started)

    # -- the scenarios -------------------------------------------------------------------

    def registered_once_by_its_owner(self, fleet: Fleet) -> None:
        """Every account has exactly one binding, from the node that holds its partition; the
        partitions are shared between the three nodes, and each node's cluster.status, metrics
        and the fleet view (uac.reg_dump cluster) agree."""
        held = self.held(fleet)
        self.assertEqual(sorted(held), ["node-a", "node-b", "node-c"], held)
        partitions = sum(held.values())
        self.assertEqual(partitions, len(fleet.database.leases()))
        for count in held.values():  # rendezvous hashing: a third each, give or take
            self.assertGreater(count, partitions / NODES / 2, held)
        for node in fleet.nodes:
            status = node.status()
            self.assertEqual(status["node_id"], node.node_id)
            self.assertEqual(status["partitions_held"], held[node.node_id], status)
            self.assertEqual(node.metric("txuac_cluster_partitions_held"), held[node.node_id])
            self.assertEqual(node.metric("txuac_cluster_nodes_live"), NODES)
        owners = fleet.owners()
        wrong: list[str] = []

        def fleet_view_agrees() -> bool:  # written in batches: give it a few seconds
            view = fleet.nodes[0].rpc("uac.reg_dump", "cluster")
            wrong[:] = [f"{row['r_username']}: {row['owner']} {row['state']}, owner {owners[row['r_username']]}"
                        for row in view if (row["owner"], row["state"]) != (owners[row["r_username"]], "online")]
            return len(view) == ACCOUNTS and not wrong

        self.assertTrue(wait_for(fleet_view_agrees, 15, 0.5), f"uac.reg_dump cluster: {wrong[:10]}")

    def rows_added_and_deleted_by_sql(self, fleet: Fleet) -> None:
        """A row INSERTed with plain SQL is registered within a second (PostgreSQL and
        MariaDB, whose poll adds up to half of it) by its owner; a row DELETEd is unregistered."""
        [row] = fleet.make_rows(1, start=ACCOUNTS)
        user = row["l_username"]
        inserted = time.monotonic()
        fleet.database.insert([row])
        self.assertTrue(wait_for(lambda: len(fleet.registrar.contacts(user)) == 1, 10, 0.02),
                        fleet.explain(f"SQL INSERT: {user} not registered"))
        added = time.monotonic() - inserted
        log.info("{kind}: a row INSERTed registered after {seconds:.2f} s", kind=self.kind, seconds=added)
        self.assertLess(added, LIVE_CHANGE_LIMIT[self.kind], f"SQL INSERT: {user} registered after {added:.2f} s")
        fleet.rows.append(row)
        fleet.wait_settled(10)  # from its owner's contact

        gone = fleet.rows.pop(0)
        fleet.database.delete(gone["l_uuid"])
        self.assertTrue(wait_for(lambda: fleet.registrar.contacts(gone["l_username"]) == [], 10, 0.05),
                        fleet.explain(f"SQL DELETE: {gone['l_username']} still registered"))

    def kill_minus_nine(self, fleet: Fleet) -> None:
        """kill -9 of one node: its accounts are registered by the others, from their own
        contacts (the dead one's binding removed in the same REGISTER), within two lease
        periods; one binding per account after. Started again, it gets its share back."""
        victim = fleet.nodes[1]
        victims = {user for user, contacts in fleet.bindings().items()
                   if contact_host_port(contacts[0]) == victim.contact_addr}
        self.assertGreater(len(victims), ACCOUNTS / NODES / 2)
        others = [node for node in fleet.nodes if node is not victim]
        takeovers_before = self.metric_sum(others, "txuac_cluster_takeovers_total")
        killed = time.monotonic()
        victim.kill()
        fleet.wait_settled(RECOVERY_LIMIT + 10, down=frozenset({victim.node_id}))
        recovery = time.monotonic() - killed
        log.info("{kind}: kill -9, {count} accounts online again after {seconds:.1f} s", kind=self.kind,
                 count=len(victims), seconds=recovery)
        self.assertLess(recovery, RECOVERY_LIMIT, f"kill -9: {len(victims)} accounts took {recovery:.1f} s")
        self.assertNotIn(victim.node_id, self.held(fleet))
        self.assertGreater(self.metric_sum(others, "txuac_cluster_takeovers_total"), takeovers_before)

        victim.start()
        fleet.wait_settled(START_LIMIT)
        self.assertIn(victim.node_id, self.held(fleet), "kill -9: the node started again holds nothing")

    def frozen_node_is_fenced_and_rejoins(self, fleet: Fleet) -> None:
        """SIGSTOP past the lease, then SIGCONT: the node sends no REGISTER for the accounts it
        lost (no binding from its contact for an account whose partition another node holds),
        counts the fence, then gets partitions again and registers its share."""
        frozen = fleet.nodes[2]
        fenced_before = frozen.metric("txuac_cluster_fenced_total")
        logged_before = len(frozen.output())
        frozen.freeze()
        fleet.wait_settled(RECOVERY_LIMIT + 10, down=frozenset({frozen.node_id}))
        frozen.thaw()
        problems: list[str] = []

        def rejoined() -> bool:
            bindings = fleet.bindings()
            owners = fleet.owners()  # after the bindings: a binding cannot predate its lease
            for user, contacts in bindings.items():
                for contact in contacts:
                    if contact_host_port(contact) == frozen.contact_addr and owners.get(user) != frozen.node_id:
                        problems.append(f"{user}: {contact} while {owners.get(user)} holds its partition")
            return bool(problems) or frozen.node_id in owners.values()

        wait_for(rejoined, 30, 0.2)
        self.assertEqual(problems, [], fleet.explain("SIGSTOP: the frozen node registered accounts it no longer owned"))
        self.assertGreaterEqual(frozen.metric("txuac_cluster_fenced_total"), fenced_before + 1)
        self.assertIn("fence", frozen.output()[logged_before:].lower())
        fleet.wait_settled(60)
        self.assertIn(frozen.node_id, self.held(fleet))

    def database_restart(self, fleet: Fleet) -> None:
        """The database server restarted under three nodes: no account lapses or doubles, the
        nodes reconnect."""
        problems = self.watch(fleet, 2 * LEASE_PERIOD, during=fleet.database.restart)
        problems += self.watch(fleet, 60, until_settled=True)
        self.assertEqual(problems, [], fleet.explain(f"database restart: {len(problems)} problems"))
        self.assertReconnected(fleet)

    def database_outage(self, fleet: Fleet) -> None:
        """The database black-holed for 30 s under three nodes: at every poll each account has
        one binding (none lapses, none doubled); then the nodes reconnect."""
        problems = self.watch(fleet, OUTAGE, during=fleet.database.cut)
        fleet.database.restore()
        problems += self.watch(fleet, 60, until_settled=True)
        self.assertEqual(problems, [], fleet.explain(f"database outage: {len(problems)} problems"))
        self.assertReconnected(fleet)

    def rolling_restart(self, fleet: Fleet) -> None:
        """Each node stopped and started again in turn: at every poll every account has one
        binding (the taker refreshes the stopped node's bindings, the restarted node takes its
        share back)."""
        problems: list[str] = []
        for node in fleet.nodes:
            problems += self.watch(fleet, 60, during=node.stop, until_settled=True)
            problems += self.watch(fleet, 60, during=node.start, until_settled=True)
        self.assertEqual(problems, [], fleet.explain(f"rolling restart: {len(problems)} problems"))

    # -- reading the fleet ---------------------------------------------------------------

    def held(self, fleet: Fleet) -> dict[str, int]:
        """node_id -> partitions it holds, from the lease table."""
        counts: dict[str, int] = {}
        for node_id in fleet.database.leases().values():
            if node_id is not None:
                counts[node_id] = counts.get(node_id, 0) + 1
        return counts

    def metric_sum(self, nodes: list[ClusterNode], name: str) -> float:
        return sum(node.metric(name) for node in nodes)

    def watch(self, fleet: Fleet, seconds: float, during=None, until_settled: bool = False) -> list[str]:
        """Read the registrar every POLL seconds for ``seconds`` (calling ``during()`` once
        first), or with ``until_settled`` until every account is registered by its owner
        (AssertionError if not within ``seconds``); every AoR missing or doubled at any poll,
        with the time it was seen."""
        seen: list[str] = []
        users = fleet.expected_users()
        started = time.monotonic()
        if during is not None:
            during()
        while True:
            bindings = fleet.bindings()
            at = time.monotonic() - started
            seen += [f"{at:.1f} s: {problem}" for problem in fleet.problems(bindings, users)]
            if until_settled and not fleet.problems(bindings, users, fleet.owners()):
                return seen
            if at >= seconds:
                if until_settled:
                    raise AssertionError(fleet.explain(f"not settled within {seconds} s; seen: {seen[:10]}"))
                return seen
            time.sleep(POLL)

    def assertReconnected(self, fleet: Fleet) -> None:
        """Every partition held by a live node again, every account registered by its owner."""
        partitions = len(fleet.database.leases())
        self.assertTrue(wait_for(lambda: sum(self.held(fleet).values()) == partitions, 60, 0.5),
                        fleet.explain(f"partitions held after the outage: {self.held(fleet)}"))
        fleet.wait_settled(60)


class PostgresClusterTests(ClusterInteropMixin, TestCase):
    kind = "postgres"


class MariaDBClusterTests(ClusterInteropMixin, TestCase):
    kind = "mysql"
