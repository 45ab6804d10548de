"""Live changes to uacreg, without a database: the batches a feed hands on (ChangeBatcher)
and the MySQL change log's reading rule (ChangeLogCursor)."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import StoreError
from txuac.registrant.store.feed import COALESCE_WINDOW, RETRY_DELAY, ChangeBatcher
from txuac.registrant.store.mysql_feed import ChangeLogCursor


class ChangeBatcherTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.batches: list = []
        self.answer = None  # what on_changed returns
        self.batcher = ChangeBatcher(self.on_changed, self.clock)

    def on_changed(self, l_uuids):
        self.batches.append(l_uuids)
        return self.answer

    def test_changes_within_the_window_are_one_batch(self):
        """A bulk INSERT of 10,000 rows: 10,000 notifications, one batch."""
        for n in range(10_000):
            self.batcher.changed([f"u{n}"])
        self.clock.advance(COALESCE_WINDOW / 2)
        self.assertEqual(self.batches, [])
        self.clock.advance(COALESCE_WINDOW / 2)
        self.assertEqual(len(self.batches), 1)
        self.assertEqual(self.batches[0], frozenset(f"u{n}" for n in range(10_000)))
        self.clock.advance(10)
        self.assertEqual(len(self.batches), 1)

    def test_one_batch_at_a_time(self):
        """Changes arriving while a batch is applied wait for it, then go together."""
        self.answer = defer.Deferred()
        self.batcher.changed(["a"])
        self.clock.advance(COALESCE_WINDOW)
        applying = self.answer
        self.answer = None
        self.batcher.changed(["b"])
        self.batcher.changed(["c", "b"])
        self.clock.advance(5)
        self.assertEqual(self.batches, [frozenset({"a"})])
        applying.callback(None)
        self.clock.advance(COALESCE_WINDOW)
        self.assertEqual(self.batches, [frozenset({"a"}), frozenset({"b", "c"})])

    def test_missed_changes_become_everything(self):
        """After a reconnect: None, which swallows the single l_uuids pending with it."""
        self.batcher.changed(["a"])
        self.batcher.missed()
        self.batcher.changed(["b"])
        self.clock.advance(COALESCE_WINDOW)
        self.assertEqual(self.batches, [None])
        self.batcher.changed(["c"])
        self.clock.advance(COALESCE_WINDOW)
        self.assertEqual(self.batches, [None, frozenset({"c"})])

    def test_a_failed_batch_comes_again_with_the_next(self):
        self.answer = defer.fail(StoreError("the server is gone"))
        with capturedLogs() as events:
            self.batcher.changed(["a"])
            self.clock.advance(COALESCE_WINDOW)
            self.answer = None
            self.batcher.changed(["b"])
            self.clock.advance(COALESCE_WINDOW)
            self.assertEqual(len(self.batches), 1)  # the retry waits RETRY_DELAY
            self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.batches[1], frozenset({"a", "b"}))
        texts = [e["log_format"] for e in events]
        self.assertEqual(len([t for t in texts if "failed" in t]), 1)
        self.assertEqual(len([t for t in texts if "applied again" in t]), 1)

    def test_a_failed_catch_up_is_tried_again(self):
        self.answer = defer.fail(StoreError("the server is gone"))
        with capturedLogs():
            self.batcher.missed()
            self.clock.advance(COALESCE_WINDOW)
            self.answer = None
            self.batcher.changed(["b"])
            self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.batches, [None, None])

    def test_stop_waits_for_the_batch_being_applied(self):
        self.answer = defer.Deferred()
        self.batcher.changed(["a"])
        self.clock.advance(COALESCE_WINDOW)
        applying = self.answer
        self.batcher.changed(["b"])
        stopped = self.batcher.stop()
        self.assertNoResult(stopped)
        applying.callback(None)
        self.successResultOf(stopped)
        self.clock.advance(10)
        self.batcher.changed(["c"])
        self.batcher.missed()
        self.clock.advance(10)
        self.assertEqual(self.batches, [frozenset({"a"})])

    def test_stop_cancels_a_pending_batch(self):
        self.batcher.changed(["a"])
        self.successResultOf(self.batcher.stop())
        self.clock.advance(10)
        self.assertEqual(self.batches, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])



class ChangeLogCursorTests(SynchronousTestCase):
    """MySQL's change log: seqs are taken at the trigger, not at commit."""

    def test_rows_past_the_start_once_each(self):
        cursor = ChangeLogCursor(10, settle=5)
        self.assertEqual(cursor.take([(11, "a"), (12, "b")], now=0), {"a", "b"})
        self.assertEqual(cursor.take([(11, "a"), (12, "b"), (13, "a")], now=1), {"a"})
        self.assertEqual(cursor.take([(11, "a"), (12, "b"), (13, "a")], now=2), set())

    def test_a_seq_committed_late_is_still_read(self):
        """Seq 11's transaction commits after 12 was read: 11 is read at the next poll."""
        cursor = ChangeLogCursor(10, settle=5)
        self.assertEqual(cursor.take([(12, "b")], now=0), {"b"})
        self.assertEqual(cursor.watermark, 10)
        self.assertEqual(cursor.take([(11, "a"), (12, "b")], now=4), {"a"})

    def test_the_watermark_follows_settled_seqs(self):
        """A gap still open ``settle`` s after a later seq was read is given up (a rollback,
        auto_increment_increment): the reads start past it."""
        cursor = ChangeLogCursor(10, settle=5)
        cursor.take([(12, "b")], now=0)
        cursor.take([(12, "b"), (14, "c")], now=3)
        self.assertEqual(cursor.watermark, 10)
        cursor.take([(12, "b"), (14, "c")], now=5)
        self.assertEqual(cursor.watermark, 12)
        self.assertEqual(cursor.take([(14, "c")], now=8), set())
        self.assertEqual(cursor.watermark, 14)

    def test_restart(self):
        cursor = ChangeLogCursor(100, settle=5)
        cursor.take([(101, "a")], now=0)
        cursor.restart(3)
        self.assertEqual(cursor.take([(4, "a")], now=1), {"a"})
