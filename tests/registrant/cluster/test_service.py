"""ClusterService on a task.Clock with pools whose transactions the test answers: the fence
at the local deadline when renewals fail, recovery, the previous owners' contacts, the
fleet view written in batches, a clean stop."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_record, make_row
from tests.support.registrant_harness import FakeStack, FakeStore
from txuac.errors import TransactionTimeout
from txuac.registrant.cluster import database
from txuac.registrant.cluster.database import TickResult
from txuac.registrant.cluster.leases import LeasePlan
from txuac.registrant.cluster.postgres import SQL
from txuac.registrant.cluster.service import FENCE_CHECK, ClusterService, ClusterSettings
from txuac.registrant.ownership import partition_of
from txuac.registrant.service import RegistrantService
from txuac.registrant.settings import RegistrantSettings
from txuac.registrant.store.url import parse_store_url

SETTINGS = ClusterSettings(node_id="node-a", partitions=4, lease_period=6.0, renew_interval=1.0,
                           state_write_interval=1.0)
# partition_of(l_uuid, 4): acc1 1, acc2 3, acc4 2.


class FakePool:
    """Every transaction waits for the test to answer it."""

    running = True

    def __init__(self):
        self.calls: list[tuple] = []

    def runInteraction(self, function, *args):  # noqa: N802 - adbapi's name
        d = defer.Deferred()
        self.calls.append((function, args, d))
        return d

    def pending(self, function):
        return [(args, d) for f, args, d in self.calls if f is function and not d.called]

    def close(self):
        self.running = False


def acquired(partitions, taken_from=None, held_before=(), contact_addrs=()):
    planned = LeasePlan(frozenset(), frozenset(partitions), frozenset(), frozenset(), taken_from or {})
    return TickResult(planned, 1000.0, {"node-a": 1000.0}, {p: "node-a" for p in partitions},
                      frozenset(held_before), tuple(contact_addrs))


def renewed(partitions):
    planned = LeasePlan(frozenset(partitions), frozenset(), frozenset(), frozenset(), {})
    return TickResult(planned, 1001.0, {"node-a": 1001.0}, {p: "node-a" for p in partitions})


class ClusterServiceCase(SynchronousTestCase):
    """A started ClusterService on a Clock, its prepare answered."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)
        self.leases, self.view = FakePool(), FakePool()
        self.node = ClusterService(SETTINGS, parse_store_url("postgres://u:p@127.0.0.1/db"), "192.0.2.1:5060",
                                   reactor=self.clock, pools=(self.leases, self.view, SQL),
                                   monotonic=self.monotonic_clock())
        self.changes = []
        self.node.add_listener(self.changes.append)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.started = self.node.startService()
        self.answer(self.leases, database.prepare, None)

    def monotonic_clock(self):
        """The lease deadlines' clock: here the reactor's."""
        return self.clock.seconds

    def answer(self, pool, function, result):
        pending = pool.pending(function)
        self.assertEqual(len(pending), 1, function)
        pending[0][1].callback(result)

    def fail_tick(self):
        pending = self.leases.pending(database.tick)
        self.assertEqual(len(pending), 1)
        pending[0][1].errback(ConnectionError("server closed the connection unexpectedly"))

    def lines(self, text):
        return [e for e in self.logged if text in e.get("log_format", "")]


class ClusterServiceTests(ClusterServiceCase):

    def test_fenced_at_the_local_deadline_when_renewals_fail_then_taken_again(self):
        self.answer(self.leases, database.tick, acquired({1, 2}))
        self.answer(self.view, database.bound_contacts, {})
        self.successResultOf(self.started)
        self.assertEqual([(c.gained, c.lost) for c in self.changes], [({1, 2}, set())])
        deadline = 100 + SETTINGS.lease_period - SETTINGS.fence_margin  # from the first tick's start
        while self.clock.seconds() < deadline - FENCE_CHECK:
            self.clock.advance(FENCE_CHECK)
            if self.leases.pending(database.tick):
                self.fail_tick()
        self.assertTrue(self.node.owns("acc1", self.clock.seconds()))
        self.node.monotonic = lambda: deadline  # the clock read at the send decides, not the fence loop
        self.assertFalse(self.node.owns("acc1", self.clock.seconds()))
        self.node.monotonic = self.clock.seconds
        self.assertEqual(len(self.changes), 1)
        self.clock.advance(FENCE_CHECK * 2)
        self.assertEqual([(c.gained, c.lost) for c in self.changes[1:]], [(set(), {1, 2})])
        self.assertEqual(self.node.metrics.fenced, 1)
        self.assertEqual(len(self.lines("lease renewal failed")), 1)  # once for the outage
        self.assertEqual(len(self.lines("fenced")), 1)
        self.clock.advance(1.0)
        self.answer(self.leases, database.tick, acquired({1, 2}))
        self.answer(self.view, database.bound_contacts, {})
        self.assertEqual((self.changes[-1].gained, self.node.metrics.fenced), ({1, 2}, 1))
        self.assertTrue(self.node.owns("acc4", self.clock.seconds()))

    def test_renewal_moves_the_deadline(self):
        self.answer(self.leases, database.tick, acquired({1}))
        self.answer(self.view, database.bound_contacts, {})
        for _ in range(20):
            self.clock.advance(SETTINGS.renew_interval)
            self.answer(self.leases, database.tick, renewed({1}))
        self.assertTrue(self.node.owns("acc1", self.clock.seconds()))
        self.assertEqual(self.node.metrics.fenced, 0)
        self.assertEqual(sum(self.node.metrics.renew_counts), 21)

    def test_gained_partitions_come_with_the_previous_owners_contacts(self):
        self.answer(self.leases, database.tick, acquired({1, 3}, taken_from={1: "node-b"},
                                                         contact_addrs=("192.0.2.2:5060", "192.0.2.3:5060")))
        self.assertEqual(self.changes, [])  # told once the contacts are read
        self.answer(self.view, database.bound_contacts, {"acc1": "sip:acc1@192.0.2.2:5060",
                                                         "acc4": "sip:acc4@192.0.2.2:5060"})
        self.assertEqual(dict(self.changes[0].bound_contacts), {"acc1": "sip:acc1@192.0.2.2:5060"})
        self.assertEqual(self.changes[0].other_contact_addrs, ("192.0.2.2:5060", "192.0.2.3:5060"))
        self.assertEqual(self.node.metrics.takeovers, 1)
        self.assertEqual(len(self.lines("took {count} partitions")), 1)

    def test_the_other_nodes_addresses_from_the_tick_when_the_fleet_view_cannot_be_read(self):
        """Right after a database outage the view's connection may be the one found dead: the
        takeover still removes the Contacts of every other node's address (the tick read them)."""
        self.answer(self.leases, database.tick, acquired({1}, taken_from={1: "node-b"}, held_before={1},
                                                         contact_addrs=("192.0.2.2:5060",)))
        [(args, d)] = self.view.pending(database.bound_contacts)
        d.errback(ConnectionError("Lost connection to MySQL server during query"))
        self.assertEqual((self.changes[0].gained, self.changes[0].other_contact_addrs, self.changes[0].fresh),
                         ({1}, ("192.0.2.2:5060",), set()))
        self.assertEqual(len(self.lines("reading the previous owners' contacts failed")), 1)

    def test_first_tick_partitions_nobody_else_held_are_fresh(self):
        """This run's first partitions are taken over when their lease had a holder or the
        fleet view shows another node registered their accounts; the others are registered
        as at start-up. Partitions are not owned until their change is delivered."""
        self.answer(self.leases, database.tick, acquired({1, 2, 3}, taken_from={1: "node-b"}, held_before={1}))
        self.assertFalse(self.node.owns("acc1", self.clock.seconds()))  # contacts being read
        self.answer(self.view, database.bound_contacts, {"acc4": "sip:acc4@192.0.2.2:5060"})  # acc4: 2
        self.assertTrue(self.node.owns("acc1", self.clock.seconds()))
        self.assertEqual((self.changes[0].gained, self.changes[0].fresh), ({1, 2, 3}, {3}))
        self.clock.advance(SETTINGS.renew_interval)
        self.answer(self.leases, database.tick, acquired({0}))
        self.answer(self.view, database.bound_contacts, {})
        self.assertEqual((self.changes[1].gained, self.changes[1].fresh), ({0}, set()))  # later gains: taken over

    def test_clean_stop_gives_up_then_releases(self):
        self.answer(self.leases, database.tick, acquired({1}))
        self.answer(self.view, database.bound_contacts, {})
        stopped = self.node.stopService()
        self.assertEqual(self.changes[-1].lost, {1})
        self.assertFalse(self.node.owns("acc1", self.clock.seconds()))
        self.answer(self.leases, database.release_all, None)
        self.successResultOf(stopped)
        self.assertFalse(self.leases.running)


class OpeningStore(FakeStore):
    """A FakeStore whose open() waits for the test."""

    def open(self):
        self.opening: defer.Deferred = defer.Deferred()
        return self.opening


class FirstTickTests(ClusterServiceCase):
    def test_partitions_taken_while_the_registrant_opens_its_store_are_taken_over(self):
        """A node restarted right after kill -9, or joining as another's lease expires, takes
        partitions in its first tick: their accounts are taken over (the other node's Contact
        removed, RFC 3261 10.2.2), not loaded as at a start by the registrant's first reload."""
        store = OpeningStore([make_row("acc1", call_id="kept-call-id", cseq=512)])
        stack = FakeStack(self.clock)
        registrant = RegistrantService(RegistrantSettings(reg_contact_addr="192.0.2.1:5060", reg_probe=False),
                                       stack, store, self.clock, ownership=self.node)
        started = registrant.startService()
        self.answer(self.leases, database.tick, acquired({1}, taken_from={1: "node-b"}, held_before={1},
                                                         contact_addrs=("192.0.2.2:5060",)))
        self.answer(self.view, database.bound_contacts, {})
        store.opening.callback(None)
        self.successResultOf(started)
        self.clock.advance(0.1)
        [sent] = stack.sent
        self.assertEqual([(str(c.uri), c.expires) for c in sent.request.contacts],
                         [("sip:acc1@192.0.2.1:5060", None), ("sip:acc1@192.0.2.2:5060", 0)])
        sent.deferred.errback(TransactionTimeout("test over"))
        self.successResultOf(registrant.stopService())


class WallClockStepTests(ClusterServiceCase):
    """The lease deadline is on a monotonic clock: a wall clock stepped back (an NTP
    correction, an operator's date) must not let the node register past it, since the
    database's expiry of the lease does not move."""

    def monotonic_clock(self):
        self.mono = Clock()
        self.mono.advance(100)
        return self.mono.seconds

    def test_the_fence_fires_on_time_when_the_wall_clock_steps_back(self):
        self.answer(self.leases, database.tick, acquired({1}))
        self.answer(self.view, database.bound_contacts, {})
        deadline = 100 + SETTINGS.lease_period - SETTINGS.fence_margin  # from the first tick's start
        self.clock.advance(-60)
        while self.mono.seconds() < deadline - FENCE_CHECK:
            self.mono.advance(FENCE_CHECK)
            self.clock.advance(FENCE_CHECK)
            if self.leases.pending(database.tick):
                self.fail_tick()
        self.assertTrue(self.node.owns("acc1", self.clock.seconds()))
        self.mono.advance(FENCE_CHECK * 2)
        self.clock.advance(FENCE_CHECK * 2)
        self.assertFalse(self.node.owns("acc1", self.clock.seconds()))  # the wall clock says 60 s to go
        self.node.check_fence()  # as the fence loop does, on the reactor's (wall) timers
        self.assertEqual([(c.gained, c.lost) for c in self.changes[1:]], [(set(), {1})])
        self.assertEqual(self.node.metrics.fenced, 1)


class Registrant:
    """What the cluster reads of a registrant: its records, observers, busy accounts."""

    settings = type("S", (), {"reg_contact_addr": "192.0.2.1:5060"})()

    def __init__(self, names=("acc1", "acc4")):
        self.records = {name: make_record(name) for name in names}
        self.observers = []
        self.busy: frozenset[str] | None = frozenset()

    def add_observer(self, observer):
        self.observers.append(observer)

    def busy_accounts(self):
        return self.busy

    def changed(self, *names):
        for name in names:
            self.observers[0](type("E", (), {"l_uuid": name})())


class HandOffTests(ClusterServiceCase):
    """A partition another node should own is released only once its accounts are quiet
    and their last state, the Contact to remove, is in the fleet view."""

    def test_release_waits_for_the_registers_out_and_the_final_view(self):
        registrant = Registrant()
        self.node.watch(registrant)
        self.node.add_listener(lambda change: [registrant.records.pop(u) for u in list(registrant.records)
                                               if partition_of(u, 4) in change.lost])
        self.answer(self.leases, database.tick, acquired({1, 2}))
        self.answer(self.view, database.bound_contacts, {})
        registrant.changed("acc1", "acc4")  # acc1: partition 1, acc4: partition 2
        registrant.busy = frozenset({"acc1"})
        self.clock.advance(SETTINGS.renew_interval)
        hand_off = LeasePlan(frozenset({1, 2}), frozenset(), frozenset(), frozenset({1, 2}), {})
        self.answer(self.leases, database.tick, TickResult(hand_off, 1001.0, {}, {}))
        self.assertEqual(self.changes[-1].lost, {1, 2})
        self.assertEqual(self.node.releasable(), set())  # acc1 busy; both views unwritten
        self.clock.advance(SETTINGS.state_write_interval)
        [(args, d)] = self.view.pending(database.write_accounts)
        self.assertEqual(sorted((v.l_uuid, v.bound_contact) for v in args[1]),
                         [("acc1", "sip:acc1@192.0.2.1:5060"), ("acc4", "sip:acc4@192.0.2.1:5060")])
        d.callback(None)
        self.assertEqual(self.node.releasable(), {2})
        registrant.busy = None  # a state write under way
        self.assertEqual(self.node.releasable(), set())
        registrant.busy = frozenset()
        self.assertEqual(self.node.releasable(), {1, 2})
        [(args, _)] = self.leases.pending(database.tick)
        self.assertEqual(args[-1], set())  # the tick already out was asked to release nothing


class FleetViewTests(SynchronousTestCase):
    def test_changed_accounts_written_in_one_batch(self):
        clock, view = Clock(), FakePool()
        node = ClusterService(SETTINGS, parse_store_url("postgres://u:p@127.0.0.1/db"), "192.0.2.1:5060",
                              reactor=clock, pools=(FakePool(), view, SQL), monotonic=clock.seconds)
        node._view_pool, node.sql = view, SQL
        registrant = Registrant()
        node.watch(registrant)
        registrant.records["acc1"].last_failure = "no answer (timeout)"
        registrant.changed("acc1", "acc4", "acc1", "gone")
        node.write_view()
        [(args, d)] = view.pending(database.write_accounts)
        views = sorted(args[1])
        self.assertEqual([(v.l_uuid, v.owner_node, v.bound_contact, v.last_error) for v in views],
                         [("acc1", "node-a", "sip:acc1@192.0.2.1:5060", "no answer (timeout)"),
                          ("acc4", "node-a", "sip:acc4@192.0.2.1:5060", "")])
        d.errback(ConnectionError("down"))
        node.write_view()  # the failed batch goes again
        [(args, d)] = view.pending(database.write_accounts)
        self.assertEqual(len(args[1]), 2)


class StartTests(SynchronousTestCase):
    def test_a_database_not_up_yet_is_waited_for(self):
        clock, leases = Clock(), FakePool()
        node = ClusterService(SETTINGS, parse_store_url("postgres://u:p@127.0.0.1/db"), "192.0.2.1:5060",
                              reactor=clock, pools=(leases, FakePool(), SQL), monotonic=clock.seconds)
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        started = node.startService()
        for _ in range(3):
            [(args, d)] = leases.pending(database.prepare)
            d.errback(ConnectionError("connection refused"))
            clock.advance(2.0)
        self.assertEqual(len([e for e in logged if "cannot prepare" in e.get("log_format", "")]), 1)
        [(args, d)] = leases.pending(database.prepare)
        d.callback(None)
        self.assertNoResult(started)
        [(args, d)] = leases.pending(database.tick)  # ticking once ready
        d.callback(acquired(set()))
        self.successResultOf(started)
        stopped = node.stopService()
        [(args, d)] = leases.pending(database.release_all)
        d.callback(None)
        self.successResultOf(stopped)
