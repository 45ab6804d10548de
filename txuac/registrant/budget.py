"""Per-destination pacing of REGISTERs, sans-IO: one provider never sees a flood from us.

Each destination (a registrar or outbound proxy host) has its own limit of REGISTER
cycles in flight and its own token bucket of cycles started per second, on top of the
service-wide ``reg_send_rate`` and ``reg_max_in_flight``: providers block addresses that
register too much at once.
"""

from __future__ import annotations


class DestinationBudget:
    """``wait(destination, now)`` says how long a new cycle must wait; ``started`` and
    ``ended`` keep the count of cycles in flight."""

    def __init__(self, max_in_flight: int, rate: float, burst_seconds: float = 0.1):
        self.max_in_flight = max_in_flight
        self.rate = rate
        self.burst = max(rate * burst_seconds, 1.0)
        self.in_flight: dict[str, int] = {}
        self._tokens: dict[str, tuple[float, float]] = {}  # destination -> (tokens, at)

    def wait(self, destination: str, now: float, busy_wait: float = 0.05) -> float:
        """0 when a cycle to ``destination`` may start now, else seconds to wait
        (``busy_wait`` when it has too many in flight: their answers decide)."""
        if self.in_flight.get(destination, 0) >= self.max_in_flight:
            return busy_wait
        tokens = self._refill(destination, now)
        # (A hair below 1: refills in steps of rate * tick must not lose a step to rounding.)
        return 0.0 if tokens >= 1.0 - 1e-9 else (1.0 - tokens) / self.rate

    def started(self, destination: str, now: float) -> None:
        self._tokens[destination] = (self._refill(destination, now) - 1.0, now)
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1

    def ended(self, destination: str) -> None:
        count = self.in_flight.get(destination, 0) - 1
        if count > 0:
            self.in_flight[destination] = count
        else:
            self.in_flight.pop(destination, None)

    def _refill(self, destination: str, now: float) -> float:
        tokens, at = self._tokens.get(destination, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)
