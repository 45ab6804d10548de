"""Which process may register which account: l_uuids hashed into partitions, and the seam
the registrant asks before every REGISTER.

A single node owns every account (AllAccounts). In a cluster the lease service
(txuac.registrant.cluster) holds leases on partitions and answers ``owns`` from them; a
static split between worker processes is another implementation of the same interface.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

from zope.interface import Attribute, Interface, implementer


def partition_of(l_uuid: str, partitions: int) -> int:
    """The partition of an account: CRC-32 of its l_uuid, the same in every process
    (Python's ``hash`` of a str is salted per process)."""
    return zlib.crc32(l_uuid.encode("utf-8")) % partitions


@dataclass(frozen=True)
class OwnershipChange:
    """Partitions this process may now register (``gained``) and those it no longer may
    (``lost``: already not owned when this is delivered), at ``now`` (on the ownership's own
    clock: a cluster's is monotonic).

    ``bound_contacts``: for accounts of the gained partitions, the Contact URI their previous
    owner registered (from the fleet view); ``other_contact_addrs``: the contact address of
    every other node known to the fleet. The new owner removes each account's Contact as
    any of them would have registered it (RFC 3261 10.2.2). ``fresh``: gained partitions no
    other node may have registered (a node's first partitions on a fleet that never held
    them): their accounts are registered as at start-up, not taken over.
    """

    gained: frozenset[int]
    lost: frozenset[int]
    now: float
    bound_contacts: Mapping[str, str] = field(default_factory=dict)
    other_contact_addrs: tuple[str, ...] = ()
    fresh: frozenset[int] = frozenset()


OwnershipListener = Callable[[OwnershipChange], None]


class IAccountOwnership(Interface):
    """Which accounts this process registers."""

    partitions = Attribute("int: how many partitions l_uuids are hashed into")

    def owns(l_uuid, now):  # noqa: N805 - zope interface signature
        """bool: may this process send a REGISTER for ``l_uuid`` at ``now`` (checked right
        before every send: the fence). ``now`` is the registrant's wall clock; an
        implementation whose deadlines run on another clock reads that one instead."""

    def add_listener(listener):  # noqa: N805
        """``listener(OwnershipChange)`` is called on every change."""


@implementer(IAccountOwnership)
class AllAccounts:
    """The single-node default: every account, for good."""

    partitions = 1

    def owns(self, l_uuid: str, now: float) -> bool:
        return True

    def add_listener(self, listener: OwnershipListener) -> None:
        pass  # never changes
