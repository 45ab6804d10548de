from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial import unittest

from txuac.ratelimitedlog import OTHER_KIND, RateLimitedLog


class RateLimitedLogTests(unittest.TestCase):
    def setUp(self):
        self.events = []
        self.clock = Clock()
        self.limited = RateLimitedLog(Logger(observer=self.events.append), self.clock, window=10.0, max_kinds=3)

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def test_one_line_per_kind_per_window_then_a_summary(self):
        for n in range(400):
            self.limited.emit("malformed messages", "malformed message {n}", n=n)
        self.assertEqual(self.lines(), ["malformed message 0"])
        self.assertEqual(self.limited.suppressed("malformed messages"), 399)
        self.clock.advance(10)
        self.assertEqual(self.lines(), ["malformed message 0",
                                        "399 more malformed messages suppressed in the last 10 s"])
        self.assertEqual(self.events[-1]["log_level"], LogLevel.warn)
        self.limited.emit("malformed messages", "malformed message {n}", n=400)
        self.assertEqual(self.lines()[-1], "malformed message 400")

    def test_no_summary_when_nothing_was_suppressed(self):
        self.limited.emit("a", "one", level=LogLevel.info)
        self.clock.advance(10)
        self.assertEqual(self.lines(), ["one"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kinds_are_limited_independently(self):
        self.assertTrue(self.limited.emit("a", "a1"))
        self.assertTrue(self.limited.emit("b", "b1"))
        self.assertFalse(self.limited.emit("a", "a2"))
        self.assertEqual(self.lines(), ["a1", "b1"])

    def test_kinds_beyond_the_bound_share_one_window(self):
        for kind in ("a", "b", "c", "d", "e"):
            self.limited.emit(kind, "line {kind}", kind=kind)
        self.assertEqual(self.lines(), ["line a", "line b", "line c", "line d"])
        self.limited.flush()
        self.assertEqual(self.lines()[-1], "1 more other suppressed in the last 10 s")
        self.assertEqual(OTHER_KIND, "other")

    def test_flush_writes_summaries_and_cancels_timers(self):
        self.limited.emit("a", "a1")
        self.limited.emit("a", "a2")
        self.limited.flush()
        self.assertEqual(self.lines(), ["a1", "1 more a suppressed in the last 10 s"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
