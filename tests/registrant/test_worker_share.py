"""txuac.registrant.worker_share: each account registered by exactly one worker."""

from __future__ import annotations

from zope.interface.verify import verifyObject

from twisted.trial.unittest import TestCase

from txuac.registrant.ownership import IAccountOwnership, partition_of
from txuac.registrant.worker_share import WORKER_PARTITIONS, WorkerShare

ACCOUNTS = [f"acct-{n:05d}" for n in range(20_000)]


class WorkerShareTests(TestCase):
    def test_interface(self):
        verifyObject(IAccountOwnership, WorkerShare(0, 2))

    def test_every_account_has_exactly_one_worker(self):
        for count in (2, 3, 4):
            shares = [WorkerShare(index, count) for index in range(count)]
            owners = [sum(share.owns(l_uuid, 0.0) for share in shares) for l_uuid in ACCOUNTS]
            self.assertEqual(set(owners), {1}, count)

    def test_split_by_partition(self):
        """Worker i of N owns the partitions p with p % N == i: a worker's share is a set of
        whole partitions, the same ones every process computes."""
        share = WorkerShare(1, 3)
        for l_uuid in ACCOUNTS[:500]:
            partition = partition_of(l_uuid, WORKER_PARTITIONS)
            self.assertEqual(share.owns(l_uuid, 0.0), partition % 3 == 1)
            self.assertEqual(share.worker_of(l_uuid), partition % 3)

    def test_balanced(self):
        first = sum(WorkerShare(0, 2).owns(l_uuid, 0.0) for l_uuid in ACCOUNTS)
        self.assertLess(abs(first - len(ACCOUNTS) / 2), len(ACCOUNTS) * 0.03)

    def test_never_changes(self):
        share = WorkerShare(0, 2)
        heard = []
        share.add_listener(heard.append)
        self.assertEqual(heard, [])
        self.assertEqual([share.owns("a", 0.0)] * 3, [share.owns("a", t) for t in (1.0, 1e6, 1e9)])

    def test_index_in_range(self):
        self.assertRaises(ValueError, WorkerShare, 2, 2)
        self.assertRaises(ValueError, WorkerShare, -1, 2)
