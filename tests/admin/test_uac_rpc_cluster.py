"""uac.reg_add and uac.reg_remove on a cluster node: the row written to (deleted from) the
shared table, the change feed bringing it to the account's owner; without [cluster], the
node's memory only, as Kamailio."""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet import defer
from zope.interface import implementer

from tests.support.accounts import make_row
from tests.support.registrant_harness import TICK, FakeStore, ServiceTestCase
from txuac.admin.rpc import Dispatcher
from txuac.admin.uac_rpc import REG_ADD_PARAMS, UACMethods
from txuac.errors import StoreError
from txuac.registrant.ownership import IAccountOwnership
from txuac.registrant.store import IChangeFeed


@implementer(IChangeFeed)
class HeldFeed:
    """A change feed whose batches the test hands over."""

    def __init__(self):
        self.on_changed = None

    def start(self, on_changed):
        self.on_changed = on_changed
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)


@implementer(IAccountOwnership)
class OwnedBy:
    """This node owns the accounts named; another node the others."""

    partitions = 1

    def __init__(self, *l_uuids):
        self.l_uuids = set(l_uuids)

    def owns(self, l_uuid, now):
        return l_uuid in self.l_uuids

    def add_listener(self, listener):
        pass


class FailingStore(FakeStore):
    def insert_row(self, row):
        return defer.fail(StoreError("the server is not up"))

    def delete_row(self, l_uuid):
        return defer.fail(StoreError("the server is not up"))


def add_params(l_uuid: str, **overrides) -> list:
    row = make_row(l_uuid, **overrides)
    return [row[param.name] for param in REG_ADD_PARAMS]


class TableRPCTestCase(ServiceTestCase):
    """A registrant on a Clock behind the uac.* methods of a node in a cluster or not."""

    def node(self, in_cluster: bool, rows=("acc1",), feed: bool = True, store=None, ownership=None):
        self.store = store if store is not None else FakeStore([make_row(l_uuid) for l_uuid in rows])
        self.feed = HeldFeed() if feed else None
        self.start(store=self.store, changes=self.feed, ownership=ownership)
        for sent in list(self.stack.pending()):
            self.stack.ok(sent, 600)
        self.advance(10, step=1)
        uac = SimpleNamespace(settings=SimpleNamespace(rpc=SimpleNamespace(show_secrets=False)),
                              registrant=self.service, cluster=object() if in_cluster else None)
        self.dispatcher = Dispatcher(self.clock)
        UACMethods(uac, self.clock).register(self.dispatcher)

    def call(self, method: str, *params):
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
        answer = json.loads(self.successResultOf(self.dispatcher.handle(body)).body)
        return answer.get("error") or answer["result"]

    def deliver(self, *l_uuids):
        """The change feed's batch of these l_uuids."""
        self.successResultOf(defer.maybeDeferred(self.feed.on_changed, frozenset(l_uuids)))
        self.advance(TICK)

    def sent_for(self, l_uuid: str) -> list:
        return [s for s in self.stack.sent if s.contact_user == l_uuid]


class ClusterTests(TableRPCTestCase):

    def test_reg_add_writes_the_row_and_the_feed_brings_the_account(self):
        self.node(in_cluster=True)
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2")), {})
        self.assertEqual(self.store.rows["acc2"], make_row("acc2"))
        self.assertNotIn("acc2", self.service.records)  # the feed brings it, to this node too
        self.advance(TICK)
        self.assertEqual(self.sent_for("acc2"), [])
        self.deliver("acc2")
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600])

    def test_reg_add_of_a_row_there_answers_as_kamailio(self):
        """409 for a row of the table, whoever owns it (this node has no record of it)."""
        self.node(in_cluster=True, rows=("acc1", "acc2"), ownership=OwnedBy("acc1"))
        self.assertNotIn("acc2", self.service.records)
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2", l_username="other")),
                         {"code": 409, "message": "uuid already exists"})
        self.assertEqual(self.store.rows["acc2"], make_row("acc2"))

    def test_reg_add_of_an_account_another_node_owns(self):
        """Written to the table; this node, told by the feed, leaves it to its owner."""
        self.node(in_cluster=True, ownership=OwnedBy("acc1"))
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2")), {})
        self.assertIn("acc2", self.store.rows)
        self.deliver("acc2")
        self.assertNotIn("acc2", self.service.records)
        self.assertEqual(self.sent_for("acc2"), [])

    def test_reg_add_of_an_invalid_row_writes_nothing(self):
        self.node(in_cluster=True)
        error = self.call("uac.reg_add", *add_params("acc2", l_domain=""))
        self.assertEqual((error["code"], error["message"]), (400, "Invalid Parameter Values"))
        self.assertNotIn("acc2", self.store.rows)

    def test_store_failures_are_answered_500(self):
        self.node(in_cluster=True, store=FailingStore([make_row("acc1")]))
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2")),
                         {"code": 500, "message": "Failed to add record - check log messages"})
        self.assertEqual(self.call("uac.reg_remove", "acc1"),
                         {"code": 500, "message": "Failed to remove record - check log messages"})
        self.assertIn("acc1", self.service.records)

    def test_reg_remove_deletes_the_row_and_the_owner_unregisters(self):
        """Unlike Kamailio's memory-only remove, the owner unregisters the account."""
        self.node(in_cluster=True, rows=("acc1", "acc2"))
        self.assertEqual(self.call("uac.reg_remove", "acc2"), {})
        self.assertNotIn("acc2", self.store.rows)
        self.assertIn("acc2", self.service.records)  # until the feed says so
        self.deliver("acc2")
        self.assertNotIn("acc2", self.service.records)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600, 0])

    def test_reg_remove_of_a_row_not_there(self):
        self.node(in_cluster=True)
        self.assertEqual(self.call("uac.reg_remove", "acc9"), {"code": 404, "message": "Record not found"})

    def test_reg_remove_of_an_account_known_here_but_gone_from_the_table(self):
        """The table is the truth: a row deleted meanwhile is not found."""
        self.node(in_cluster=True, rows=("acc1", "acc2"))
        del self.store.rows["acc2"]
        self.assertEqual(self.call("uac.reg_remove", "acc2"), {"code": 404, "message": "Record not found"})

    def test_the_feed_bringing_an_account_twice_registers_it_once(self):
        """The feed may tell a node of a row it has read already (its own write and another
        change to it in one batch, a reconnect): the account is unchanged."""
        self.node(in_cluster=True)
        self.call("uac.reg_add", *add_params("acc2"))
        self.deliver("acc2")
        for sent in list(self.stack.pending()):
            self.stack.ok(sent, 600)
        self.deliver("acc2")
        self.advance(10, step=1)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600])

    def test_without_a_feed_this_node_reads_its_write_at_once(self):
        """reg_db_watch = false in a cluster: the node answering takes the change itself."""
        self.node(in_cluster=True, feed=False)
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2")), {})
        self.advance(TICK)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600])
        self.stack.ok(self.sent_for("acc2")[0], 600)
        self.assertEqual(self.call("uac.reg_remove", "acc2"), {})
        self.advance(TICK)
        self.assertNotIn("acc2", self.service.records)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600, 0])


class SingleNodeTests(TableRPCTestCase):
    """Kamailio's behaviour: memory only, the table untouched."""

    def test_reg_add_in_memory(self):
        self.node(in_cluster=False)
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2")), {})
        self.assertNotIn("acc2", self.store.rows)
        self.advance(TICK)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600])
        self.assertEqual(self.call("uac.reg_add", *add_params("acc2")), {"code": 409, "message": "uuid already exists"})

    def test_reg_remove_in_memory(self):
        self.node(in_cluster=False, rows=("acc1", "acc2"))
        self.assertEqual(self.call("uac.reg_remove", "acc2"), {})
        self.assertIn("acc2", self.store.rows)
        self.assertNotIn("acc2", self.service.records)
        self.advance(TICK)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600])  # no un-REGISTER
