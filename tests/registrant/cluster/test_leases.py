"""txuac.registrant.cluster.leases: rendezvous owners, the tick's plan, this node's
partitions and the fence, with explicit times."""

from __future__ import annotations

import itertools

from twisted.trial.unittest import SynchronousTestCase

from txuac.registrant.cluster.leases import (
    LeasePlan,
    LeaseRow,
    NodeLeases,
    desired_owner,
    live_nodes,
    plan,
)

NODES = frozenset({"node-a", "node-b", "node-c"})
PERIOD = 6.0
MARGIN = 0.6


def free_rows(partitions=16):
    return [LeaseRow(p, None, None) for p in range(partitions)]


class RendezvousTests(SynchronousTestCase):
    def test_balanced_and_the_same_in_any_order(self):
        owners = [desired_owner(p, NODES) for p in range(256)]
        self.assertEqual(owners, [desired_owner(p, sorted(NODES, reverse=True)) for p in range(256)])
        for node in NODES:
            self.assertTrue(60 <= owners.count(node) <= 110, (node, owners.count(node)))

    def test_a_leaving_node_moves_only_its_partitions(self):
        before = {p: desired_owner(p, NODES) for p in range(256)}
        after = {p: desired_owner(p, NODES - {"node-c"}) for p in range(256)}
        moved = {p for p in before if before[p] != after[p]}
        self.assertEqual(moved, {p for p in before if before[p] == "node-c"})

    def test_live_nodes_by_heartbeat_on_the_db_clock(self):
        heartbeats = {"node-b": 1000.0, "node-c": 993.0}
        self.assertEqual(live_nodes(heartbeats, 1001.0, PERIOD, "node-a"), {"node-a", "node-b"})


class PlanTests(SynchronousTestCase):
    def setUp(self):
        self.ours = [p for p in range(16) if desired_owner(p, NODES) == "node-a"]
        self.theirs = [p for p in range(16) if desired_owner(p, NODES) != "node-a"]

    def test_acquires_free_partitions_that_are_ours(self):
        planned = plan("node-a", free_rows(), NODES, 100.0, frozenset(), frozenset())
        self.assertEqual(planned, LeasePlan(frozenset(), frozenset(self.ours), frozenset(), frozenset(), {}))

    def test_waits_for_a_live_lease_takes_an_expired_one(self):
        p, q = self.ours[:2]
        rows = [LeaseRow(p, "node-b", 106.0, 3), LeaseRow(q, "node-c", 99.9, 7)]
        planned = plan("node-a", rows, NODES, 100.0, frozenset(), frozenset())
        self.assertEqual((planned.acquire, dict(planned.taken_from)), ({q}, {q: "node-c"}))

    def test_renews_what_it_holds_and_hands_off_what_another_should_own(self):
        mine, other = self.ours[0], self.theirs[0]
        rows = [LeaseRow(mine, "node-a", 103.0), LeaseRow(other, "node-a", 103.0)]
        planned = plan("node-a", rows, NODES, 100.0, frozenset({mine, other}), frozenset())
        self.assertEqual((planned.renew, planned.hand_off, planned.acquire), ({mine, other}, {other}, set()))

    def test_takes_back_a_live_lease_of_its_own_it_does_not_hold(self):
        """Fenced (or its renewal committed too late), the node holds nothing here while the
        database still names it: no other node may take those, so it takes them again now."""
        mine, other = self.ours[0], self.theirs[0]
        rows = [LeaseRow(mine, "node-a", 106.0), LeaseRow(other, "node-a", 106.0)]
        planned = plan("node-a", rows, NODES, 100.0, frozenset(), frozenset())
        self.assertEqual((planned.acquire, dict(planned.taken_from)), ({mine}, {}))

    def test_alone_it_takes_everything(self):
        planned = plan("node-a", free_rows(), frozenset({"node-a"}), 100.0, frozenset(), frozenset())
        self.assertEqual(planned.acquire, set(range(16)))

    def test_releases_what_it_gave_up_and_does_not_take_it_back(self):
        p = self.ours[0]
        planned = plan("node-a", [LeaseRow(p, "node-a", 103.0)], NODES, 100.0, frozenset(), frozenset({p}))
        self.assertEqual((planned.release, planned.acquire, planned.renew), ({p}, set(), set()))


class NodeLeasesTests(SynchronousTestCase):
    def setUp(self):
        self.leases = NodeLeases("node-a", 16, PERIOD, MARGIN)

    def acquire(self, partitions, started_at=10.0, now=10.1):
        planned = LeasePlan(frozenset(), frozenset(partitions), frozenset(), frozenset(), {})
        return self.leases.committed(planned, started_at, now)

    def test_acquired_is_gained_and_owned_until_the_local_deadline(self):
        change = self.acquire({1, 2})
        self.assertEqual((change.gained, change.lost), ({1, 2}, set()))
        self.assertEqual(self.leases.deadline, 10.0 + PERIOD - MARGIN)  # from the transaction's start
        self.assertTrue(self.leases.owns(1, 15.39))
        self.assertFalse(self.leases.owns(1, 15.4))
        self.assertFalse(self.leases.owns(3, 11.0))

    def test_fence_loses_everything_once(self):
        self.acquire({1, 2})
        self.assertIsNone(self.leases.check(15.3))
        change = self.leases.check(15.4)
        self.assertEqual((change.gained, change.lost), (set(), {1, 2}))
        self.assertIsNone(self.leases.check(16.0))
        self.assertEqual(self.leases.held(), set())

    def test_renewal_moves_the_deadline(self):
        self.acquire({1})
        renew = LeasePlan(frozenset({1}), frozenset(), frozenset(), frozenset(), {})
        change = self.leases.committed(renew, 14.0, 14.2)
        self.assertEqual((change.gained, change.lost), (set(), set()))
        self.assertTrue(self.leases.owns(1, 19.0))

    def test_a_renewal_committed_after_its_deadline_fences(self):
        self.acquire({1})
        renew = LeasePlan(frozenset({1}), frozenset({2}), frozenset(), frozenset(), {})
        change = self.leases.committed(renew, 14.0, 19.5)
        self.assertEqual((change.gained, change.lost), (set(), {1}))
        self.assertFalse(self.leases.owns(2, 19.5))

    def test_not_renewed_is_lost(self):
        self.acquire({1, 2})
        renew = LeasePlan(frozenset({2}), frozenset(), frozenset(), frozenset(), {})
        self.assertEqual(self.leases.committed(renew, 11.0, 11.1).lost, {1})

    def test_hand_off_is_lost_at_once_and_released_next_tick(self):
        self.acquire({1, 2})
        hand_off = LeasePlan(frozenset({1, 2}), frozenset(), frozenset(), frozenset({2}), {})
        change = self.leases.committed(hand_off, 11.0, 11.1)
        self.assertEqual(change.lost, {2})
        self.assertFalse(self.leases.owns(2, 11.1))
        self.assertEqual(self.leases.releasing(), {2})
        release = LeasePlan(frozenset({1}), frozenset(), frozenset({2}), frozenset(), {})
        change = self.leases.committed(release, 12.0, 12.1)
        self.assertEqual((change.gained, change.lost, self.leases.releasing()), (set(), set(), set()))

    def test_give_up_on_stop(self):
        self.acquire({1, 2})
        self.assertEqual(self.leases.give_up(12.0).lost, {1, 2})
        self.assertEqual(self.leases.releasing(), {1, 2})


class NeverOverlapTests(SynchronousTestCase):
    """The holder renews once, then freezes (or loses the database); a taker ticks every
    10 ms. Over the worst timings (the DB's now() taken late in the transaction, a slow
    commit, clocks offset from each other, the holder's clock slow), the holder's last
    moment of ownership comes before the taker's first, in real time."""

    def test_holder_stops_before_the_taker_starts(self):
        partition = next(p for p in range(16) if desired_owner(p, {"node-a", "node-b"}) == "node-b")
        for db_delay, commit_delay, db_offset, local_offset, drift in itertools.product(
                (0.0, 0.2, 2.0), (0.0, 0.5, 5.0), (-3600.0, 0.0, 7.0), (-50.0, 123.0), (0.0, 0.9)):
            with self.subTest(db_delay=db_delay, commit_delay=commit_delay, drift=drift):
                self.walk(partition, db_delay, commit_delay, db_offset, local_offset, drift)

    def walk(self, partition, db_delay, commit_delay, db_offset, local_offset, drift):
        def db_clock(real):
            return real + db_offset

        def holder_clock(real):  # slow: by the end of a period, behind by ``drift`` margins
            return real * (1 - drift * MARGIN / PERIOD) + local_offset

        holder = NodeLeases("node-b", 16, PERIOD, MARGIN)
        # The holder's transaction starts at real 100; the database's now() is read db_delay later.
        started = holder_clock(100.0)
        expires_at = db_clock(100.0 + db_delay) + PERIOD
        committed = LeasePlan(frozenset(), frozenset({partition}), frozenset(), frozenset(), {})
        holder.committed(committed, started, holder_clock(100.0 + db_delay + commit_delay))
        row = LeaseRow(partition, "node-b", expires_at, 1)
        last_owned = max((r / 100 for r in range(10000, 12000) if holder.owns(partition, holder_clock(r / 100))),
                         default=None)
        # node-b is gone from the live nodes (no heartbeat): node-a should own everything.
        first_taken = next(r / 100 for r in range(10000, 12000)
                           if partition in plan("node-a", [row], frozenset({"node-a"}), db_clock(r / 100),
                                                frozenset(), frozenset()).acquire)
        if last_owned is not None:
            self.assertLess(last_owned, first_taken)
