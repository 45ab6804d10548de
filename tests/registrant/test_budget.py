"""txuac.registrant.budget: per-destination REGISTER pacing, sans-IO."""

from twisted.trial.unittest import SynchronousTestCase

from txuac.registrant.budget import DestinationBudget


class DestinationBudgetTests(SynchronousTestCase):
    def test_rate_per_destination(self):
        budget = DestinationBudget(max_in_flight=1000, rate=10, burst_seconds=0.1)  # burst: 1
        self.assertEqual(budget.wait("a", 0.0), 0.0)
        budget.started("a", 0.0)
        self.assertAlmostEqual(budget.wait("a", 0.0), 0.1)
        self.assertAlmostEqual(budget.wait("a", 0.05), 0.05)
        self.assertEqual(budget.wait("a", 0.1), 0.0)
        self.assertEqual(budget.wait("b", 0.0), 0.0, "another destination has its own bucket")

    def test_burst_is_bounded_after_a_pause(self):
        budget = DestinationBudget(max_in_flight=1000, rate=100, burst_seconds=0.1)  # burst: 10
        started = 0
        while budget.wait("a", 1000.0) == 0.0:
            budget.started("a", 1000.0)
            started += 1
        self.assertEqual(started, 10)

    def test_in_flight_limit(self):
        budget = DestinationBudget(max_in_flight=2, rate=1e6)
        budget.started("a", 0.0)
        budget.started("a", 0.0)
        self.assertEqual(budget.wait("a", 0.0, busy_wait=0.05), 0.05)
        self.assertEqual(budget.wait("b", 0.0), 0.0)
        budget.ended("a")
        self.assertEqual(budget.wait("a", 0.0), 0.0)
        budget.ended("a")
        self.assertEqual(budget.in_flight, {}, "idle destinations are forgotten")
