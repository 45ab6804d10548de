"""txuac.registrant.ownership and the registrant honouring it: owned-only scheduling, the
check before every send (the fence), parking on lost partitions, registering gained ones."""

from __future__ import annotations

import zlib

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.accounts import make_row
from tests.support.registrant_harness import CONTACT_ADDR, FakeStore, ServiceTestCase
from txuac.errors import StoreError
from txuac.registrant.account import CSEQ_AHEAD
from txuac.registrant.ownership import AllAccounts, IAccountOwnership, OwnershipChange, partition_of

# partition_of(l_uuid, 4): acc5 0, acc1 1, acc3 1, acc4 2, acc2 3.
ROWS = [make_row(name) for name in ("acc1", "acc2", "acc3", "acc4", "acc5")]


@implementer(IAccountOwnership)
class LeasedPartitions:
    """Partitions held until ``deadline`` (a lease that is not renewed), changed by the test."""

    partitions = 4

    def __init__(self, owned=(), deadline: float = float("inf")):
        self.owned = set(owned)
        self.deadline = deadline
        self.listeners = []

    def owns(self, l_uuid, now):
        return partition_of(l_uuid, self.partitions) in self.owned and now < self.deadline

    def add_listener(self, listener):
        self.listeners.append(listener)

    def change(self, gained=(), lost=(), now=0.0, bound_contacts=None, other_contact_addrs=(), fresh=()):
        self.owned = (self.owned | set(gained)) - set(lost)
        change = OwnershipChange(frozenset(gained), frozenset(lost), now, bound_contacts or {},
                                 tuple(other_contact_addrs), frozenset(fresh))
        for listener in self.listeners:
            listener(change)


class PartitionTests(SynchronousTestCase):
    def test_crc32_of_the_l_uuid(self):
        """The same in every process (never Python's salted hash()), fixed values."""
        self.assertEqual([partition_of(u, 256) for u in ("acc1", "acc2", "acc5")], [93, 231, 68])
        self.assertEqual(partition_of("ü-account", 97), zlib.crc32("ü-account".encode()) % 97)

    def test_every_partition_used(self):
        self.assertEqual({partition_of(f"account-{i}", 16) for i in range(500)}, set(range(16)))

    def test_all_accounts(self):
        ownership = AllAccounts()
        verifyObject(IAccountOwnership, ownership)
        verifyObject(IAccountOwnership, LeasedPartitions())
        self.assertTrue(ownership.owns("anything", 1e12))
        ownership.add_listener(lambda change: self.fail("never changes"))


class OwnedAccountsTests(ServiceTestCase):
    def sent_users(self):
        return sorted(s.contact_user for s in self.stack.sent)

    def test_only_owned_accounts_are_loaded_and_registered(self):
        service = self.start(ROWS, ownership=LeasedPartitions({1, 2}))
        self.advance(1)
        self.assertEqual(sorted(service.records), ["acc1", "acc3", "acc4"])
        self.assertEqual(self.sent_users(), ["acc1", "acc3", "acc4"])
        self.assertEqual(service.counters()["regtotal"], 3)

    def test_no_send_once_the_lease_deadline_passed(self):
        """The fence: the check uses the send's own now, before any change is delivered."""
        ownership = LeasedPartitions({1}, deadline=100.0)
        self.start(ROWS, ownership=ownership)
        for _ in range(20):
            self.advance(10)
            for sent in self.stack.pending():
                self.stack.ok(sent, 30)
        self.assertGreater(len(self.stack.sent), 4)  # refreshes went out before the deadline
        self.assertEqual([s for s in self.stack.sent if s.at >= 100.0], [])
        self.successResultOf(self.service.send_register("l_uuid", "acc1"))  # an operator's, too
        self.assertEqual([s for s in self.stack.sent if s.at >= 100.0], [])

    def test_lost_partitions_are_parked_without_unregister(self):
        ownership = LeasedPartitions({1, 2})
        service = self.start(ROWS, ownership=ownership)
        self.advance(1)
        acc4 = [s for s in self.stack.pending() if s.contact_user == "acc4"][0]
        for sent in self.stack.pending():
            if sent is not acc4:
                self.stack.ok(sent, 60)
        ownership.change(lost={1, 2}, now=self.now())
        self.assertEqual(service.records, {})
        self.stack.ok(acc4, 60)  # a late reply finds no account
        before = len(self.stack.sent)
        self.advance(300)
        self.assertEqual(len(self.stack.sent), before)  # no refresh, no un-REGISTER

    def test_reload_parks_accounts_another_node_owns(self):
        ownership = LeasedPartitions({1})
        service = self.start(ROWS, ownership=ownership)
        self.advance(1)
        ownership.owned = {2}  # as a lease service would, without telling
        self.successResultOf(service.reload(force=True))
        self.assertEqual(sorted(service.records), ["acc4"])
        self.assertEqual([s.expires for s in self.stack.sent if s.contact_user == "acc1"], [3600])

    def test_refresh_and_add_of_an_account_not_owned(self):
        service = self.start(ROWS, ownership=LeasedPartitions({1}))
        self.assertEqual(self.successResultOf(service.refresh("acc2")), 1)
        self.assertEqual(service.add(make_row("acc7")), 1)  # partition 0: its owner registers it
        self.assertNotIn("acc2", service.records)
        self.assertNotIn("acc7", service.records)


class GainedPartitionsTests(ServiceTestCase):
    def test_gained_accounts_go_on_from_the_stored_call_id_with_the_old_contact_removed(self):
        rows = [make_row("acc1", call_id="kept-call-id", cseq=512), make_row("acc3"), make_row("acc2")]
        ownership = LeasedPartitions()
        service = self.start(rows, ownership=ownership)
        self.advance(1)
        self.assertEqual(self.stack.sent, [])
        old = "sip:acc1@192.0.2.99:5060"
        ownership.change(gained={1}, now=self.now(), bound_contacts={"acc1": old, "acc3": f"sip:acc3@{CONTACT_ADDR}"})
        self.advance(0.1)
        sent = {s.contact_user: s for s in self.stack.sent}
        self.assertEqual(sorted(sent), ["acc1", "acc3"])
        first = sent["acc1"].request
        # RFC 3261 10.2: the same Call-ID goes on, CSEQ_AHEAD above the stored mark: the
        # previous owner may have used that many CSeqs past it, its newer mark not written.
        self.assertEqual((first.call_id, first.cseq.number), ("kept-call-id", 512 + CSEQ_AHEAD + 1))
        self.assertEqual([(str(c.uri), c.expires) for c in first.contacts],
                         [(f"sip:acc1@{CONTACT_ADDR}", None), (old, 0)])
        self.assertEqual(len(sent["acc3"].request.contacts), 1)  # its bound contact is ours already
        self.stack.ok(sent["acc1"], 60)
        self.assertEqual(service.status("acc1"), 1)
        self.advance(60)
        refresh = [s for s in self.stack.sent if s.contact_user == "acc1"][-1].request
        self.assertEqual(refresh.cseq.number, 512 + CSEQ_AHEAD + 2)
        self.assertEqual(len(refresh.contacts), 1)  # removed with the first 2xx

    def test_the_first_register_waits_for_its_cseq_mark_to_be_written(self):
        """Killed right after its takeover REGISTER, a node must leave the next taker a
        stored mark above that REGISTER's CSeq, or the next taker sends the same CSeq and
        the registrar ignores it, its expires=0 Contacts too (RFC 3261 10.3 step 7)."""
        store = HeldWrites([make_row("acc1", call_id="kept-call-id", cseq=512), make_row("acc3")])
        ownership = LeasedPartitions()
        self.start(store=store, ownership=ownership)
        ownership.change(gained={1}, now=self.now())
        self.advance(0.5)
        self.assertEqual([s.contact_user for s in self.stack.sent], ["acc3"])  # no Call-ID stored: a new one
        states, written = store.writes.pop(0)
        self.assertEqual([(s.l_uuid, s.call_id, s.cseq) for s in states],
                         [("acc1", "kept-call-id", 512 + 2 * CSEQ_AHEAD + 1)])
        written.callback(None)
        self.advance(0.1)
        first = [s.request for s in self.stack.sent if s.contact_user == "acc1"]
        self.assertEqual([r.cseq.number for r in first], [512 + CSEQ_AHEAD + 1])
        store.release()

    def test_gained_accounts_are_registered_when_the_mark_cannot_be_written(self):
        store = HeldWrites([make_row("acc1", call_id="kept-call-id", cseq=512)])
        ownership = LeasedPartitions()
        self.start(store=store, ownership=ownership)
        ownership.change(gained={1}, now=self.now())
        store.writes.pop(0)[1].errback(StoreError("database unavailable"))
        self.advance(0.1)
        self.assertEqual([s.contact_user for s in self.stack.sent], ["acc1"])
        store.release()

    def test_gained_accounts_remove_their_contact_as_every_other_node_registered_it(self):
        """Whatever the fleet view shows: a REGISTER whose 2xx the previous owner never saw
        leaves a binding at the registrar too (RFC 3261 10.2.2)."""
        rows = [make_row("acc1"), make_row("acc3", contact_addr="198.51.100.7:5080")]
        ownership = LeasedPartitions()
        self.start(rows, ownership=ownership)
        ownership.change(gained={1}, now=self.now(), other_contact_addrs=("192.0.2.98:5060", CONTACT_ADDR))
        self.advance(0.1)
        sent = {s.contact_user: s.request for s in self.stack.sent}
        self.assertEqual([(str(c.uri), c.expires) for c in sent["acc1"].contacts],
                         [(f"sip:acc1@{CONTACT_ADDR}", None), ("sip:acc1@192.0.2.98:5060", 0)])
        self.assertEqual(len(sent["acc3"].contacts), 1)  # its own contact_addr: the same on every node

    def test_gained_accounts_are_taken_a_chunk_per_reactor_turn(self):
        """A takeover of many accounts leaves the reactor between chunks (lease renewals
        and the fence run in between); a partition lost meanwhile is not taken further."""
        from txuac.registrant import service as service_module

        self.patch(service_module, "GAIN_CHUNK", 1)
        rows = [make_row("acc1"), make_row("acc3"), make_row("acc2")]
        ownership = LeasedPartitions()
        service = self.start(rows, ownership=ownership)
        ownership.change(gained={1}, now=self.now())  # acc1 and acc3
        self.assertEqual(sorted(service.records), ["acc1"])
        self.clock.advance(0)
        self.assertEqual(sorted(service.records), ["acc1", "acc3"])
        service.records.pop("acc3")
        ownership.change(gained={1}, now=self.now())
        self.assertEqual(sorted(service.records), ["acc1"])  # acc3 waits for the next turn
        ownership.change(lost={1}, gained={3}, now=self.now())  # acc2
        self.clock.advance(0)
        self.assertEqual(sorted(service.records), ["acc2"])

    def test_a_gained_partition_reads_only_its_own_rows(self):
        """The l_uuids first, then only the rows of the partition gained, a chunk per query:
        a node taking a share of a large table never reads the whole table."""
        from txuac.registrant import service as service_module

        self.patch(service_module, "GAIN_CHUNK", 2)
        rows = [make_row(f"acc{n}") for n in range(1, 41)]
        mine = sorted(r["l_uuid"] for r in rows if partition_of(r["l_uuid"], 4) == 1)
        ownership = LeasedPartitions()
        service = self.start(rows, ownership=ownership)
        self.assertEqual((self.store.rows_read, self.store.loads), (0, 0))  # nothing owned: no row read
        ownership.change(gained={1}, now=self.now())
        for _ in range(len(mine)):
            self.clock.advance(0)
        self.assertEqual(sorted(service.records), mine)
        self.assertEqual((self.store.rows_read, self.store.loads), (len(mine), 0))
        self.assertEqual(sorted(u for chunk in self.store.many_loads for u in chunk), mine)
        self.assertLessEqual(max(len(chunk) for chunk in self.store.many_loads), 2)

    def test_reload_reads_only_the_owned_rows(self):
        rows = [make_row(f"acc{n}") for n in range(1, 41)]
        mine = sorted(r["l_uuid"] for r in rows if partition_of(r["l_uuid"], 4) in (1, 2))
        service = self.start(rows, ownership=LeasedPartitions({1, 2}))
        self.assertEqual(sorted(service.records), mine)
        self.assertEqual((self.store.rows_read, self.store.loads), (len(mine), 0))

    def test_reload_leaves_the_accounts_of_a_partition_being_gained_to_the_takeover(self):
        """Read by a reload while its partition's own read is under way, an account would be
        registered as at start-up: without the Contacts of the other nodes removed."""
        from txuac.registrant import service as service_module

        self.patch(service_module, "GAIN_CHUNK", 1)
        ownership = LeasedPartitions()
        service = self.start([make_row("acc1"), make_row("acc3")], ownership=ownership)
        ownership.change(gained={1}, now=self.now(), other_contact_addrs=("192.0.2.98:5060",))
        self.assertEqual(sorted(service.records), ["acc1"])  # acc3 waits for the next turn
        self.successResultOf(service.reload(force=True))
        self.assertEqual(sorted(service.records), ["acc1"])
        self.clock.advance(0)
        self.advance(0.1)
        sent = {s.contact_user: s.request for s in self.stack.sent}
        self.assertEqual([(str(c.uri), c.expires) for c in sent["acc3"].contacts],
                         [(f"sip:acc3@{CONTACT_ADDR}", None), ("sip:acc3@192.0.2.98:5060", 0)])

    def test_fresh_partitions_are_registered_as_at_start_up(self):
        """No other node held them: no CSeq jump, no Contact to remove, reg_delay kept."""
        rows = [make_row("acc1", call_id="kept-call-id", cseq=512), make_row("acc2", reg_delay=5)]
        ownership = LeasedPartitions()
        self.start(rows, ownership=ownership)
        ownership.change(gained={1, 3}, fresh={3}, now=self.now(), other_contact_addrs=("192.0.2.98:5060",))
        self.advance(1)
        sent = {s.contact_user: s.request for s in self.stack.sent}
        self.assertEqual(sorted(sent), ["acc1"])  # acc2 waits for its reg_delay
        self.assertEqual(sent["acc1"].cseq.number, 512 + CSEQ_AHEAD + 1)
        self.assertEqual(len(sent["acc1"].contacts), 2)
        self.advance(5)
        acc2 = [s.request for s in self.stack.sent if s.contact_user == "acc2"]
        self.assertEqual([len(r.contacts) for r in acc2], [1])

    def test_partition_lost_before_its_accounts_are_read(self):
        store = SlowStore(ROWS)
        ownership = LeasedPartitions()
        service = self.start(store=store, ownership=ownership)
        store.slow = True
        ownership.change(gained={1}, now=self.now())
        ownership.change(lost={1}, now=self.now())
        store.release()
        self.advance(1)
        self.assertEqual((service.records, self.stack.sent), ({}, []))

    def test_store_failure_is_retried(self):
        store = SlowStore(ROWS)
        ownership = LeasedPartitions()
        service = self.start(store=store, ownership=ownership)
        store.failures = 1
        ownership.change(gained={2}, now=self.now())
        self.assertEqual(service.records, {})
        self.advance(1.5)
        self.assertEqual(sorted(service.records), ["acc4"])
        self.assertEqual([s.contact_user for s in self.stack.sent], ["acc4"])


class SlowStore(FakeStore):
    """A FakeStore whose load_keys can be held back (``slow``) or fail (``failures`` times)."""

    def __init__(self, rows=()):
        super().__init__(rows)
        self.slow = False
        self.failures = 0
        self.held: list[defer.Deferred] = []

    def load_keys(self):
        if self.failures:
            self.failures -= 1
            return defer.fail(StoreError("database unavailable"))
        if not self.slow:
            return super().load_keys()
        d = defer.Deferred()
        self.held.append(d)
        return d

    def release(self):
        for d in self.held:
            d.callback(list(self.rows))


class HeldWrites(FakeStore):
    """A FakeStore whose save_states waits for the test to answer each write."""

    def __init__(self, rows=()):
        super().__init__(rows)
        self.writes: list[tuple[list, defer.Deferred]] = []
        self.held = True

    def save_states(self, states):
        if not self.held:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self.writes.append((list(states), d))
        return d

    def release(self):
        """Every write held answered, the next ones at once."""
        self.held = False
        for _, d in self.writes:
            d.called or d.callback(None)
