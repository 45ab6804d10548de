"""Leases on account partitions, sans-IO: who should own what, what to renew, acquire and
release, and when this node must stop registering (the fence).

The shell (txuac.registrant.cluster.service) runs one transaction per tick: it heartbeats,
reads the lease rows and the live nodes with the database's clock (``db_now``), asks
``plan`` what to write, writes it, and tells ``NodeLeases`` what committed. Times of the
database and of this process are never compared with each other:

- the database sets ``expires_at = its now() + lease_period`` in the renewing transaction,
  whose now() is at or after the moment the transaction started;
- this node's deadline is its own monotonic time when it *started* that transaction,
  plus lease_period, minus ``margin``.

So in real time the deadline comes at least ``margin`` before the lease expires, and
another node acquires a partition only once the database sees it expired. A node that
renewed at real time t stops at the latest at t + period - margin; the taker starts after
t + period. A REGISTER that passed the check before the deadline and is still being
retransmitted carries a CSeq below the taker's (the stored CSeq is reserved ahead), so the
registrar refuses it once the taker's arrived (RFC 3261 10.3 step 7); before that it only
refreshes the binding the taker removes.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from txuac.registrant.ownership import OwnershipChange


def weight(partition: int, node_id: str) -> int:
    """Rendezvous weight of ``node_id`` for ``partition`` (the same in every process)."""
    digest = hashlib.blake2b(f"{partition}/{node_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def desired_owner(partition: int, nodes: Iterable[str]) -> str:
    """Highest random weight: every node computes the same owner from the same live nodes,
    and a node joining or leaving moves only the partitions it wins or held."""
    return max(nodes, key=lambda node: (weight(partition, node), node))


@dataclass(frozen=True)
class LeaseRow:
    """A row of txuac_cluster_lease, as read: ``expires_at`` on the DB clock."""

    partition: int
    node_id: str | None
    expires_at: float | None
    epoch: int = 0


@dataclass(frozen=True)
class LeasePlan:
    """What this tick's transaction writes."""

    renew: frozenset[int]  # held: expires_at = now() + lease_period
    acquire: frozenset[int]  # free or expired, ours by rendezvous: taken (epoch + 1)
    release: frozenset[int]  # given up locally last tick (accounts parked): node_id NULL
    hand_off: frozenset[int]  # held, another live node's by rendezvous: given up after this commit
    taken_from: Mapping[int, str]  # acquired partitions whose expired lease another node held


@dataclass(frozen=True)
class ClusterSettings:
    """[cluster] (docs/cluster.rst)."""

    node_id: str
    partitions: int = 256  # the fleet's: every node the same (the lease table's row count)
    lease_period: float = 6.0  # seconds a lease lasts after a renewal, on the database's clock
    renew_interval: float = 1.0  # seconds between ticks (heartbeat, renew, acquire); < lease_period / 3
    state_write_interval: float = 1.0  # seconds between writes of the fleet view

    @property
    def fence_margin(self) -> float:
        """How long before the database's expiry this node stops: a tenth of the period."""
        return self.lease_period / 10


class PartitionState(enum.Enum):
    FREE = "not ours"
    HELD = "ours: registered here"
    RELEASING = "given up here, still ours in the database until released"


class LeaseEvent(enum.Enum):
    ACQUIRED = "the transaction that took it committed"
    RENEWED = "the transaction that renewed it committed"
    NOT_RENEWED = "a committed transaction did not renew it (lost to another node)"
    HAND_OFF = "another live node should own it"
    RELEASED = "the transaction that released it committed"
    FENCED = "no renewal before the local deadline"


class Delivered(enum.Enum):
    NOTHING = 0
    GAINED = 1
    LOST = 2


_S, _E, _D = PartitionState, LeaseEvent, Delivered
# (state, event) -> (next state, what the registrant is told); a pair not listed leaves
# the partition as it is and tells nothing.
LEASE_TRANSITIONS: dict[tuple[PartitionState, LeaseEvent], tuple[PartitionState, Delivered]] = {
    (_S.FREE, _E.ACQUIRED): (_S.HELD, _D.GAINED),
    (_S.HELD, _E.RENEWED): (_S.HELD, _D.NOTHING),
    (_S.HELD, _E.NOT_RENEWED): (_S.FREE, _D.LOST),
    (_S.HELD, _E.HAND_OFF): (_S.RELEASING, _D.LOST),
    (_S.HELD, _E.FENCED): (_S.FREE, _D.LOST),
    (_S.RELEASING, _E.RELEASED): (_S.FREE, _D.NOTHING),
    (_S.RELEASING, _E.FENCED): (_S.FREE, _D.NOTHING),
    (_S.RELEASING, _E.NOT_RENEWED): (_S.FREE, _D.NOTHING),
}


def live_nodes(heartbeats: Mapping[str, float], db_now: float, lease_period: float, node_id: str) -> frozenset[str]:
    """Nodes whose heartbeat is younger than a lease period, and this one."""
    return frozenset(node for node, at in heartbeats.items() if db_now - at < lease_period) | {node_id}


def plan(node_id: str, leases: Iterable[LeaseRow], nodes: frozenset[str], db_now: float,
         held: frozenset[int], releasing: frozenset[int]) -> LeasePlan:
    """This tick's writes, from the lease rows read (locked) in the transaction at ``db_now``."""
    acquire: set[int] = set()
    hand_off: set[int] = set()
    taken_from: dict[int, str] = {}
    renew: set[int] = set()
    for row in leases:
        partition = row.partition
        ours = desired_owner(partition, nodes) == node_id
        live_lease = row.node_id is not None and row.expires_at is not None and row.expires_at > db_now
        if partition in held:
            if row.node_id == node_id and live_lease:
                renew.add(partition)
                if not ours:
                    hand_off.add(partition)
            continue  # not ours any more in the database: NOT_RENEWED when committed
        # A live lease of our own not held here (fenced, or its renewal committed too late) is
        # taken again at once: no other node may hold it, and waiting for it to expire would
        # leave its accounts unregistered for a lease period after every database outage.
        if partition in releasing or not ours or (live_lease and row.node_id != node_id):
            continue
        acquire.add(partition)
        if row.node_id is not None and row.node_id != node_id:
            taken_from[partition] = row.node_id
    return LeasePlan(frozenset(renew), frozenset(acquire), releasing, frozenset(hand_off), taken_from)


class NodeLeases:
    """This node's partitions (PartitionState each) and the local deadline of its leases."""

    def __init__(self, node_id: str, partitions: int, lease_period: float, margin: float):
        if margin <= 0 or margin >= lease_period:
            raise ValueError("the fence margin must be between 0 and the lease period")
        self.node_id = node_id
        self.partitions = partitions
        self.lease_period = lease_period
        self.margin = margin
        self.states: dict[int, PartitionState] = {}
        self.deadline = float("-inf")  # local monotonic time the held leases are good until

    def held(self) -> frozenset[int]:
        return frozenset(p for p, s in self.states.items() if s is PartitionState.HELD)

    def releasing(self) -> frozenset[int]:
        return frozenset(p for p, s in self.states.items() if s is PartitionState.RELEASING)

    def owns(self, partition: int, now: float) -> bool:
        """May this node register the accounts of ``partition`` at ``now`` (local clock)."""
        return now < self.deadline and self.states.get(partition) is PartitionState.HELD

    def _apply(self, partitions: Iterable[int], event: LeaseEvent, gained: set[int], lost: set[int]) -> None:
        for partition in partitions:
            state = self.states.get(partition, PartitionState.FREE)
            step = LEASE_TRANSITIONS.get((state, event))
            if step is None:
                continue
            following, delivered = step
            if following is PartitionState.FREE:
                self.states.pop(partition, None)
            else:
                self.states[partition] = following
            if delivered is Delivered.GAINED:
                gained.add(partition)
            elif delivered is Delivered.LOST:
                lost.add(partition)

    def committed(self, planned: LeasePlan, started_at: float, now: float) -> OwnershipChange:
        """The tick's transaction, started at local ``started_at``, committed at ``now``."""
        gained: set[int] = set()
        lost: set[int] = set()
        held = self.held()
        self._apply(planned.release, LeaseEvent.RELEASED, gained, lost)
        self._apply(held - planned.renew, LeaseEvent.NOT_RENEWED, gained, lost)
        self._apply(planned.renew, LeaseEvent.RENEWED, gained, lost)
        if planned.renew or planned.acquire:
            self.deadline = started_at + self.lease_period - self.margin
        if now >= self.deadline:  # committed too late to be of use: the fence
            return self._fenced(gained, lost, now)
        self._apply(planned.acquire, LeaseEvent.ACQUIRED, gained, lost)
        self._apply(planned.hand_off, LeaseEvent.HAND_OFF, gained, lost)
        return self._change(gained, lost, now)

    def check(self, now: float) -> OwnershipChange | None:
        """The fence: past the deadline without a renewal, every partition is lost here."""
        if now < self.deadline or not self.states:
            return None
        return self._fenced(set(), set(), now)

    def _fenced(self, gained: set[int], lost: set[int], now: float) -> OwnershipChange:
        self._apply(list(self.states), LeaseEvent.FENCED, gained, lost)
        return self._change(gained - lost, lost, now)

    def give_up(self, now: float) -> OwnershipChange:
        """A clean stop: every held partition is lost here, to be released in the database."""
        gained: set[int] = set()
        lost: set[int] = set()
        self._apply(self.held(), LeaseEvent.HAND_OFF, gained, lost)
        return self._change(gained, lost, now)

    @staticmethod
    def _change(gained: set[int], lost: set[int], now: float) -> OwnershipChange:
        return OwnershipChange(frozenset(gained), frozenset(lost), now)
