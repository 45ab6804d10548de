"""The registrant following a store's change feed ([uac] reg_db_watch): each batch of changed
l_uuids read again and applied as a reload would, None as a forced reload."""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from tests.support.accounts import make_row
from tests.support.registrant_harness import TICK, FakeStore, ServiceTestCase
from txuac.errors import StoreError
from txuac.registrant.store import IChangeFeed


@implementer(IChangeFeed)
class FakeChangeFeed:
    """Hands the registrant the batches a test gives it."""

    def __init__(self, store, stack=None):
        self.store = store
        self.stack = stack
        self.on_changed = None
        self.started_before_load = None
        self.stopped = False

    def start(self, on_changed):
        self.on_changed = on_changed
        self.started_before_load = self.store.loads == 0
        return defer.succeed(None)

    def stop(self):
        self.stopped = True
        self.sent_before_stop = len(self.stack.sent)
        return defer.succeed(None)


class FollowingChangesTests(ServiceTestCase):
    """The registrant applying a feed's batches (follow_changes) as a reload would."""

    def start_online(self, l_uuids=("acc1", "acc2"), **settings):
        self.store = FakeStore([make_row(l_uuid) for l_uuid in l_uuids])
        self.feed = FakeChangeFeed(self.store)
        self.start(store=self.store, changes=self.feed, **settings)
        self.feed.stack = self.stack
        for sent in list(self.stack.pending()):
            self.stack.ok(sent, 600)
        self.advance(100, step=1)

    def apply(self, l_uuids):
        self.successResultOf(defer.maybeDeferred(self.feed.on_changed, l_uuids))
        self.advance(TICK)

    def sent_for(self, l_uuid: str) -> list:
        return [s for s in self.stack.sent if s.contact_user == l_uuid]

    def test_the_feed_starts_before_the_first_load_and_stops_with_the_service(self):
        self.start_online()
        self.assertTrue(self.feed.started_before_load)
        self.successResultOf(self.service.stopService())
        self.assertTrue(self.feed.stopped)

    def test_the_feed_stops_before_the_unregistering_stop(self):
        """No batch is applied while the accounts are unregistered at stop."""
        self.start_online(reg_unregister_on_stop=True)
        count = len(self.stack.sent)
        stopping = self.service.stopService()
        self.assertEqual(self.feed.sent_before_stop, count)
        for sent in self.stack.pending():
            self.stack.ok(sent, 0)
        self.successResultOf(stopping)
        self.assertEqual(len(self.stack.sent), count + 2)

    def test_an_inserted_row_is_registered_at_once(self):
        self.start_online()
        self.store.rows["acc3"] = make_row("acc3")
        self.apply(frozenset({"acc3"}))
        self.assertEqual([s.expires for s in self.sent_for("acc3")], [3600])
        self.assertEqual(self.store.many_loads, [frozenset({"acc3"})])
        self.assertEqual(self.store.loads, 1)  # no reload of the whole table

    def test_an_updated_row_registers_again(self):
        self.start_online()
        before = self.sent_for("acc1")[-1].request
        self.store.rows["acc1"]["auth_password"] = "a new secret"
        self.apply(frozenset({"acc1"}))
        again = self.sent_for("acc1")[-1]
        self.assertIsNot(again.request, before)
        self.assertEqual(again.expires, 3600)
        self.assertEqual(again.request.call_id, before.call_id)

    def test_an_unchanged_row_sends_nothing(self):
        self.start_online()
        count = len(self.stack.sent)
        self.apply(frozenset({"acc1", "acc2"}))
        self.assertEqual(len(self.stack.sent), count)

    def test_a_deleted_row_is_unregistered_and_forgotten(self):
        self.start_online()
        del self.store.rows["acc2"]
        self.apply(frozenset({"acc2", "never-there"}))
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600, 0])
        self.stack.ok(self.sent_for("acc2")[-1], 0)
        self.assertEqual(sorted(self.service.records), ["acc1"])

    def test_missed_changes_reload_everything(self):
        self.start_online()
        self.store.rows["acc3"] = make_row("acc3")
        del self.store.rows["acc1"]
        self.apply(None)
        self.apply(None)  # a forced reload: reload_delta does not refuse it
        self.assertEqual(self.store.loads, 3)
        self.assertEqual(sorted(self.service.records), ["acc2", "acc3"])
        self.assertEqual(self.sent_for("acc1")[-1].expires, 0)

    def test_a_store_error_fails_the_batch(self):
        self.start_online()
        self.store.load_many = lambda l_uuids: defer.fail(StoreError("the server is gone"))
        self.failureResultOf(self.feed.on_changed(frozenset({"acc1"})), StoreError)
