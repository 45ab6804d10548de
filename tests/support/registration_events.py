"""The RegistrationEvents a registrant emits, kept in order, with bounded waits for one."""

from __future__ import annotations

from twisted.internet import defer, reactor

from txuac.registrant.record import State
from txuac.registrant.service import RegistrationEvent


class EventLog:
    """Every RegistrationEvent of a registrant, and bounded waits for one."""

    def __init__(self, registrant):
        self.seen: list[RegistrationEvent] = []
        self._waiters: list[tuple] = []
        registrant.add_observer(self._observe)

    def _observe(self, event: RegistrationEvent) -> None:
        self.seen.append(event)
        for waiter in list(self._waiters):
            predicate, d, timer = waiter
            if predicate(event):
                self._waiters.remove(waiter)
                timer.cancel()
                d.callback(event)

    def index(self, event: RegistrationEvent) -> int:
        return next(i for i, e in enumerate(self.seen) if e is event)

    def wait(self, predicate, timeout: float, after: RegistrationEvent | None = None,
             what: str = "an event") -> defer.Deferred:
        """The first event (after ``after``, when given) matching ``predicate``: one seen
        already, or the next one; AssertionError listing the events after ``timeout`` s."""
        start = self.index(after) + 1 if after is not None else 0
        for event in self.seen[start:]:
            if predicate(event):
                return defer.succeed(event)
        d: defer.Deferred = defer.Deferred()

        def expired():
            self._waiters.remove(waiter)
            d.errback(AssertionError(f"no {what} within {timeout} s; events:\n{self.describe()}"))

        waiter = (predicate, d, reactor.callLater(timeout, expired))
        self._waiters.append(waiter)
        return d

    def state(self, state: State, timeout: float, after: RegistrationEvent | None = None) -> defer.Deferred:
        return self.wait(lambda e: e.state is state, timeout, after, f"{state.value} event")

    def describe(self) -> str:
        if not self.seen:
            return "  (none)"
        origin = self.seen[0].at
        return "\n".join(f"  +{e.at - origin:7.3f} {e.l_uuid} {e.previous.value} -> {e.state.value} "
                         f"status={e.status} ({e.reason})" for e in self.seen)
