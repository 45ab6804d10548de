"""ClusterService on a REAL PostgreSQL and a REAL MariaDB: two nodes split the partitions,
a node that stops renewing is taken over after its lease, a clean stop hands over at once
and leaves the node's row for the takers, a lease table of another size is refused."""

from __future__ import annotations

import os
import time

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.accounts import make_row
from tests.support.registrant_harness import FakeStack
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster
from tests.support.services import wait_until
from tests.support.stores import SCHEMAS
from txuac.errors import StoreError, TransactionTimeout
from txuac.registrant.cluster import database
from txuac.registrant.cluster.database import AccountView
from txuac.registrant.ownership import partition_of
from txuac.registrant.record import Flag
from txuac.registrant.service import RegistrantService
from txuac.registrant.settings import RegistrantSettings
from txuac.registrant.store import COLUMNS, open_store
from txuac.registrant.cluster.leases import live_nodes
from txuac.registrant.cluster.service import ClusterService, ClusterSettings
from txuac.registrant.store.url import parse_store_url

PARTITIONS = 16
PERIOD = 2.0  # seconds: short, so that a takeover fits in a test
WAIT = 30.0  # seconds any condition may take on a busy machine


class ClusterLeaseMixin:
    timeout = 120
    schema = ""

    def start_database(self) -> str:
        raise NotImplementedError

    def setUp(self):
        self.url = parse_store_url(self.start_database())
        self.nodes: list[ClusterService] = []

    @defer.inlineCallbacks
    def node(self, node_id: str, partitions: int = PARTITIONS):
        settings = ClusterSettings(node_id=node_id, partitions=partitions, lease_period=PERIOD, renew_interval=0.2,
                                   state_write_interval=0.5)
        node = ClusterService(settings, self.url, f"127.0.0.{len(self.nodes) + 1}:5060")
        node.changes = []
        node.add_listener(node.changes.append)
        yield node.startService()
        self.nodes.append(node)
        self.addCleanup(self.stop, node)
        return node

    @staticmethod
    def stop(node):
        if node.running:
            return node.stopService()
        for loop in (node._loop, node._fence_loop, node._write_loop):  # a crashed one
            if loop.running:
                loop.stop()
        for pool in (node._lease_pool, node._view_pool):
            if pool.running:
                pool.close()
        return None

    @staticmethod
    def crash(node):
        """As kill -9 would leave it: no more renewals, nothing released."""
        for loop in (node._loop, node._write_loop):
            loop.stop()
        node.running = False

    def test_two_nodes_split_the_partitions(self):
        return self._split()

    @defer.inlineCallbacks
    def _split(self):
        a = yield self.node("node-a")
        yield wait_until(lambda: len(a.leases.held()) == PARTITIONS, WAIT)
        b = yield self.node("node-b")
        yield wait_until(lambda: a.leases.held() | b.leases.held() == set(range(PARTITIONS))
                         and not a.leases.held() & b.leases.held() and b.leases.held(), WAIT)
        self.assertLessEqual(len(b.leases.held()), PARTITIONS - 2)
        lost_by_a = set().union(*(c.lost for c in a.changes))
        self.assertEqual(lost_by_a, b.leases.held())  # handed over, not taken
        self.assertEqual(b.metrics.takeovers, 0)
        return a, b

    @defer.inlineCallbacks
    def test_a_node_that_stops_renewing_is_taken_over_after_its_lease(self):
        a, b = yield self._split()
        theirs = b.leases.held()
        self.crash(b)
        started = a.now()
        yield wait_until(lambda: len(a.leases.held()) == PARTITIONS, WAIT)
        took = a.now() - started
        self.assertGreater(took, PERIOD * 0.5)  # not before b's lease ran out
        self.assertEqual(a.metrics.takeovers, len(theirs))
        # b, frozen, noticed its deadline on its own: it registers nothing any more.
        yield wait_until(lambda: not b.leases.held(), WAIT)
        self.assertEqual(b.metrics.fenced, 1)
        self.assertFalse(any(b.owns(f"acc{i}", b.now()) for i in range(100)))

    @defer.inlineCallbacks
    def test_a_clean_stop_hands_over_at_once(self):
        a, b = yield self._split()
        started = a.now()
        yield b.stopService()
        yield wait_until(lambda: len(a.leases.held()) == PARTITIONS, WAIT)
        self.assertLess(a.now() - started, PERIOD + 5)  # released: no waiting for the lease (slack for load)
        self.assertEqual(a.metrics.takeovers, 0)

    @defer.inlineCallbacks
    def test_a_clean_stop_leaves_the_node_row_for_the_takers(self):
        """Stopped with reg_unregister_on_stop false, a node leaves its bindings at the
        registrar: its row stays, no longer live, and the taker's first REGISTER of each
        account removes the Contact it registered from its contact_addr (RFC 3261 10.2.2)."""
        a, b = yield self._split()
        rows = [make_row(f"acc{n}") for n in range(40)]
        yield a._view_pool.runInteraction(insert_accounts, rows)
        stack = yield self.registrant(a, "127.0.0.1:5060")
        theirs = sorted(r["l_uuid"] for r in rows if partition_of(r["l_uuid"], PARTITIONS) in b.leases.held())
        self.assertTrue(theirs)
        yield b.stopService()
        nodes = yield a._view_pool.runInteraction(select, f"SELECT node_id, contact_addr FROM {database.NODE_TABLE}")
        self.assertIn(("node-b", "127.0.0.2:5060"), nodes)
        status = yield a.status()
        self.assertEqual({n["node_id"]: n["live"] for n in status["nodes"]}, {"node-a": True, "node-b": False})

        def first_registers():
            first = {}
            for sent in stack.sent:
                first.setdefault(sent.contact_user, sent.request)
            return first

        yield wait_until(lambda: set(theirs) <= set(first_registers()), WAIT)
        for l_uuid in theirs:
            contacts = [(str(c.uri), c.expires) for c in first_registers()[l_uuid].contacts]
            self.assertIn((f"sip:{l_uuid}@127.0.0.2:5060", 0), contacts)

    @defer.inlineCallbacks
    def test_a_tick_stuck_through_an_outage_takes_nothing_from_a_node_live_at_its_start(self):
        """The database's now is the transaction's start in every statement (MySQL/MariaDB's
        NOW() is the statement's own otherwise): a tick that waited out an outage after its
        heartbeat must not find every other node dead, whose heartbeats stopped with the
        outage too, and take their partitions."""
        a, b = yield self._split()
        theirs = b.leases.held()
        self.crash(b)
        ticked = yield a._lease_pool.runInteraction(stuck_tick, a.sql, "node-a", "127.0.0.1:5060", PERIOD,
                                                    a.leases.held(), frozenset())
        self.assertEqual(ticked.planned.acquire & theirs, frozenset())
        self.assertIn("node-b", live_nodes(ticked.nodes, ticked.db_now, PERIOD, "node-a"))

    @defer.inlineCallbacks
    def test_a_fenced_node_takes_its_live_leases_back_at_its_next_tick(self):
        a = yield self.node("node-a")
        yield wait_until(lambda: len(a.leases.held()) == PARTITIONS, WAIT)
        a._loop.stop()
        if a._ticking is not None:
            yield a._ticking
        a._deliver(a.leases.check(a.monotonic() + PERIOD))  # its deadline passed; its leases live on
        self.assertEqual(a.leases.held(), frozenset())
        yield a.tick()
        self.assertEqual(len(a.leases.held()), PARTITIONS)

    @defer.inlineCallbacks
    def test_rows_of_nodes_gone_for_a_day_are_deleted_when_a_node_starts(self):
        a = yield self.node("node-a")
        for node_id, age in (("node-old", database.NODE_RETENTION + 60), ("node-recent", 3600)):
            yield a._view_pool.runInteraction(
                select, f"INSERT INTO {database.NODE_TABLE} (node_id, contact_addr, heartbeat_at) "
                        f"VALUES ('{node_id}', '', {a.sql.later.replace('%s', str(a.sql.seconds(-age)))})")
        yield self.node("node-b")
        nodes = yield a._view_pool.runInteraction(select, f"SELECT node_id FROM {database.NODE_TABLE}")
        self.assertEqual(sorted(n for (n,) in nodes), ["node-a", "node-b", "node-recent"])

    @defer.inlineCallbacks
    def registrant(self, node: ClusterService, contact_addr: str):
        """A registrant on ``node``'s partitions that sends to a FakeStack (never answered)."""
        stack = FakeStack(reactor)
        settings = RegistrantSettings(reg_contact_addr=contact_addr, reg_probe=False)
        registrant = RegistrantService(settings, stack, open_store(self.url, reactor), reactor, ownership=node)

        def stop():
            for sent in stack.pending():
                sent.deferred.errback(TransactionTimeout("test over"))
            return registrant.stopService()

        yield registrant.startService()
        self.addCleanup(stop)
        return stack

    @defer.inlineCallbacks
    def test_a_database_outage_fences_then_the_leases_are_taken_again(self):
        a = yield self.node("node-a")
        yield wait_until(lambda: len(a.leases.held()) == PARTITIONS, WAIT)
        self.stop_database()
        yield wait_until(lambda: not a.leases.held(), WAIT)  # fenced, not crashed
        self.assertEqual(a.metrics.fenced, 1)
        self.start_database_again()
        # Owned once the change is delivered, after the previous owners' contacts are read.
        yield wait_until(lambda: len(a.leases.held()) == PARTITIONS and not a._announcing, WAIT)
        self.assertTrue(a.owns("acc1", a.now()))

    @defer.inlineCallbacks
    def test_nodes_starting_together_on_an_empty_database(self):
        """The tables are created once, without a node waiting for a failed attempt."""
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        nodes = yield defer.gatherResults([self.node(f"node-{n}") for n in "abc"])
        yield wait_until(lambda: set().union(*(n.leases.held() for n in nodes)) == set(range(PARTITIONS)), WAIT)
        self.assertEqual([e for e in logged if "cannot prepare" in e.get("log_format", "")], [])

    @defer.inlineCallbacks
    def test_a_node_with_another_partition_number_is_refused(self):
        yield self.node("node-a")
        settings = ClusterSettings(node_id="node-b", partitions=PARTITIONS * 2, lease_period=PERIOD)
        node = ClusterService(settings, self.url, "127.0.0.2:5060")
        error = yield self.assertFailure(node.startService(), StoreError)
        self.assertIn(f"partitions is {PARTITIONS * 2}", str(error))
        self.assertIn(f"table has {PARTITIONS} partitions", str(error))
        for pool in (node._lease_pool, node._view_pool):
            pool.close()


    @defer.inlineCallbacks
    def test_fleet_view_and_status(self):
        a, b = yield self._split()
        rows = [make_row(name) for name in ("acc1", "acc2", "acc3")]
        yield a._view_pool.runInteraction(insert_accounts, rows)
        yield a._view_pool.runInteraction(database.write_accounts, a.sql, [
            AccountView("acc1", "node-a", "sip:acc1@127.0.0.1:5060", Flag.ONLINE | Flag.INIT, "", 1e9)])
        yield b._view_pool.runInteraction(database.write_accounts, b.sql, [
            AccountView("acc2", "node-b", "sip:acc2@127.0.0.2:5060", 0, "408 Request Timeout", 1e9),
            AccountView("acc1", "node-a", "sip:acc1@127.0.0.1:5060", Flag.ONLINE, "", 2e9)])  # replaces
        fleet = yield b.fleet()
        self.assertEqual([(r["l_uuid"], r["owner"], r["state"], r["flags"], r["last_error"]) for r in fleet],
                         [("acc1", "node-a", "online", Flag.ONLINE, None),
                          ("acc2", "node-b", "failed", 0, "408 Request Timeout"),
                          ("acc3", "", "waiting", 0, None)])
        self.assertEqual(fleet[0]["r_username"], "remote-acc1")
        contacts = yield a._view_pool.runInteraction(database.bound_contacts, "node-a")
        self.assertEqual(contacts, {"acc2": "sip:acc2@127.0.0.2:5060"})
        ticked = yield a._lease_pool.runInteraction(database.tick, a.sql, "node-a", "127.0.0.1:5060", PERIOD,
                                                    a.leases.held(), frozenset())
        self.assertEqual(ticked.contact_addrs, ("127.0.0.2:5060",))  # every other node's address
        status = yield a.status()
        self.assertEqual((status["node_id"], status["partitions"]), ("node-a", PARTITIONS))
        self.assertEqual({n["node_id"]: n["partitions"] for n in status["nodes"]},
                         {"node-a": len(a.leases.held()), "node-b": len(b.leases.held())})
        self.assertTrue(all(n["live"] and n["heartbeat_age"] < PERIOD for n in status["nodes"]))
        self.assertGreater(status["lease_deadline_in"], 0)


class StuckCursor:
    """A cursor that waits three lease periods after the heartbeat, as a transaction stuck
    behind an outage does."""

    def __init__(self, cursor):
        self._cursor = cursor

    def execute(self, statement, *parameters):
        self._cursor.execute(statement, *parameters)
        if statement.startswith(f"INSERT INTO {database.NODE_TABLE}"):
            time.sleep(3 * PERIOD)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def stuck_tick(cursor, *arguments):
    return database.tick(StuckCursor(cursor), *arguments)


def select(cursor, sql):
    cursor.execute(sql)
    return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def insert_accounts(cursor, rows):
    columns = [c for c in COLUMNS if c != "contact_user"]
    cursor.executemany(f"INSERT INTO uacreg ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                       [tuple(row[c] for c in columns) for row in rows])


class PostgresClusterLeaseTests(ClusterLeaseMixin, TestCase):
    def start_database(self) -> str:
        self.pg = PostgresCluster(self)
        self.pg.psql(file=os.path.join(SCHEMAS, "postgres.sql"))
        return self.pg.url

    def stop_database(self):
        self.pg.stop()

    def start_database_again(self):
        self.pg.start()


class MariaDBClusterLeaseTests(ClusterLeaseMixin, TestCase):
    def start_database(self) -> str:
        self.db = MariaDBServer(self)
        self.db.mysql(file=os.path.join(SCHEMAS, "mysql.sql"))
        return self.db.url

    def stop_database(self):
        self.db.stop()

    def start_database_again(self):
        self.db.start()
