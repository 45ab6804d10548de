"""DeadlineTimer and ExpiringKeys on a task.Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txuac.net.timers import DeadlineTimer, ExpiringKeys


class DeadlineTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.timer = DeadlineTimer(self.clock)
        self.fired: list[tuple[str, float]] = []

    def fire(self, name: str) -> None:
        self.fired.append((name, self.clock.seconds()))

    def test_one_reactor_timer_for_all(self) -> None:
        self.timer.arm("a", 3.0, self.fire, "a")
        self.timer.arm("b", 1.0, self.fire, "b")
        self.timer.arm("c", 2.0, self.fire, "c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, [("b", 1.0), ("c", 2.0), ("a", 3.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_moved_and_disarmed_deadlines(self) -> None:
        self.timer.arm("a", 1.0, self.fire, "a")
        self.timer.arm("a", 5.0, self.fire, "a")  # moved on: the 1.0 entry is stale
        self.timer.arm("b", 2.0, self.fire, "b")
        self.timer.disarm("b")
        self.clock.advance(2.0)
        self.assertEqual(self.fired, [])
        self.clock.advance(3.0)
        self.assertEqual(self.fired, [("a", 5.0)])
        self.timer.arm("c", 6.0, self.fire, "c")
        self.timer.arm("c", None, self.fire, "c")
        self.assertEqual(self.clock.getDelayedCalls(), [], "the last one disarmed: no wake-up left")

    def test_a_failing_callback_does_not_stop_the_others(self) -> None:
        def broken() -> None:
            raise RuntimeError("bug")

        self.timer.arm("a", 1.0, broken)
        self.timer.arm("b", 1.0, self.fire, "b")
        self.clock.advance(1.0)
        self.assertEqual(self.fired, [("b", 1.0)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_before_fire_runs_first_when_a_deadline_is_due(self) -> None:
        """What it does (reading answers that wait) may disarm a due deadline: it does not fire."""
        calls: list[float] = []

        def read_first() -> None:
            calls.append(self.clock.seconds())
            self.timer.disarm("answered")

        self.timer = DeadlineTimer(self.clock, before_fire=read_first)
        self.timer.arm("answered", 1.0, self.fire, "answered")
        self.timer.arm("silent", 1.0, self.fire, "silent")
        self.timer.arm("later", 3.0, self.fire, "later")
        self.clock.advance(1.0)
        self.assertEqual(calls, [1.0])
        self.assertEqual(self.fired, [("silent", 1.0)])
        self.clock.advance(2.0)
        self.assertEqual(calls, [1.0, 3.0])
        self.assertEqual(self.fired, [("silent", 1.0), ("later", 3.0)])

    def test_before_fire_not_run_when_every_due_deadline_moved_on(self) -> None:
        calls: list[float] = []
        self.timer = DeadlineTimer(self.clock, before_fire=lambda: calls.append(self.clock.seconds()))
        self.timer.arm("answered", 1.0, self.fire, "answered")
        self.timer.arm("answered", 5.0, self.fire, "answered")  # its answer came: the 1.0 entry is stale
        self.clock.advance(1.0)
        self.assertEqual((calls, self.fired), ([], []))
        self.clock.advance(4.0)
        self.assertEqual((calls, self.fired), ([5.0], [("answered", 5.0)]))

    def test_before_fire_failing_does_not_stop_the_timers(self) -> None:
        def broken() -> None:
            raise RuntimeError("bug")

        self.timer = DeadlineTimer(self.clock, before_fire=broken)
        self.timer.arm("a", 1.0, self.fire, "a")
        self.clock.advance(1.0)
        self.assertEqual(self.fired, [("a", 1.0)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop(self) -> None:
        self.timer.arm("a", 1.0, self.fire, "a")
        self.timer.stop()
        self.timer.arm("b", 1.0, self.fire, "b")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(2.0)
        self.assertEqual(self.fired, [])


class ExpiringKeysTests(SynchronousTestCase):
    def test_keys_expire_in_order_on_one_timer(self) -> None:
        clock = Clock()
        keys: ExpiringKeys[str] = ExpiringKeys(clock)
        keys.add("a", 5.0)
        clock.advance(1.0)
        keys.add("b", 6.0)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertIn("a", keys)
        self.assertEqual(keys.deadlines, {"a": 5.0, "b": 6.0})
        clock.advance(4.0)
        self.assertNotIn("a", keys)
        self.assertIn("b", keys)
        clock.advance(1.0)
        self.assertEqual(len(keys), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_key_added_again_keeps_its_new_deadline(self) -> None:
        clock = Clock()
        keys: ExpiringKeys[str] = ExpiringKeys(clock)
        keys.add("a", 1.0)
        keys.add("a", 3.0)
        clock.advance(1.0)
        self.assertIn("a", keys)
        clock.advance(2.0)
        self.assertNotIn("a", keys)

    def test_stop(self) -> None:
        clock = Clock()
        keys: ExpiringKeys[str] = ExpiringKeys(clock)
        keys.add("a", 1.0)
        keys.stop()
        keys.add("b", 1.0)
        self.assertEqual(len(keys), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
