"""Temporary registration failures, logged as one line per registrar per round.

During an outage every account of a registrar fails in the same retry round: a line per
account would be a thousand lines a round. The per-account lines go to debug; the
failures of each destination are gathered for ``window`` seconds from the first, then
written as one info line::

    1000 accounts failed at proxy.provider.example: no answer (timeout) (998), 503 Service Unavailable (2)
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

OTHER_REASONS = "other reasons"


class _Round:
    __slots__ = ("reasons", "closing")

    def __init__(self, closing: IDelayedCall):
        self.reasons: Counter[str] = Counter()
        self.closing = closing


class FailureSummary:
    """``add(destination, reason)`` per failed account; one info line per destination per
    ``window``. Reasons past ``max_reasons`` per round count as "other reasons" (a
    registrar's reason phrases are its own), destinations past ``max_destinations``
    open rounds are logged at once."""

    def __init__(self, clock: IReactorTime, window: float = 10.0, max_destinations: int = 1024,
                 max_reasons: int = 8):
        self.clock = clock
        self.window = window
        self.max_destinations = max_destinations
        self.max_reasons = max_reasons
        self._rounds: dict[str, _Round] = {}

    def add(self, destination: str, reason: str) -> None:
        current = self._rounds.get(destination)
        if current is None:
            if len(self._rounds) >= self.max_destinations:
                self._write(destination, Counter({reason: 1}))
                return
            current = self._rounds[destination] = _Round(self.clock.callLater(self.window, self._close, destination))
        reasons = current.reasons
        if reason not in reasons and len(reasons) >= self.max_reasons:
            reason = OTHER_REASONS
        reasons[reason] += 1

    def _close(self, destination: str) -> None:
        current = self._rounds.pop(destination, None)
        if current is not None:
            self._write(destination, current.reasons)

    @staticmethod
    def _write(destination: str, reasons: Counter[str]) -> None:
        count = sum(reasons.values())
        text = ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common())
        log.info("{count} account(s) failed at {destination}: {reasons}", count=count, destination=destination,
                 reasons=text)

    def flush(self) -> None:
        """Write every open round now and cancel the timers (when the registrant stops)."""
        for destination, current in list(self._rounds.items()):
            if current.closing.active():
                current.closing.cancel()
            self._close(destination)


__all__ = ["FailureSummary"]
