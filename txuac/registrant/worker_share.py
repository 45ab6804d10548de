"""The accounts one worker process registers when ``[core] workers`` is more than 1.

A static split: worker ``index`` of ``count`` owns the partitions ``p`` with
``p % count == index``. Every worker computes the same partition of an l_uuid
(txuac.registrant.ownership.partition_of), so each account has exactly one owner and the
shares never change while the processes run.
"""

from __future__ import annotations

from zope.interface import implementer

from txuac.registrant.ownership import IAccountOwnership, OwnershipListener, partition_of

# As many as a cluster's default: a worker's share is then a set of whole cluster partitions.
WORKER_PARTITIONS = 256


@implementer(IAccountOwnership)
class WorkerShare:
    """Worker ``index`` (0-based) of ``count``: the accounts whose partition is ``index`` modulo ``count``."""

    def __init__(self, index: int, count: int, partitions: int = WORKER_PARTITIONS):
        if not 0 <= index < count:
            raise ValueError(f"worker {index} of {count}")
        self.index = index
        self.count = count
        self.partitions = partitions

    def worker_of(self, l_uuid: str) -> int:
        """The worker that registers ``l_uuid``."""
        return partition_of(l_uuid, self.partitions) % self.count

    def owns(self, l_uuid: str, now: float) -> bool:
        return self.worker_of(l_uuid) == self.index

    def add_listener(self, listener: OwnershipListener) -> None:
        pass  # a static split never changes
