"""Log lines that a peer can provoke, at most one per kind per window.

What unauthenticated input causes (a malformed datagram, a refused request, a failed
token) must not let whoever sends it fill the log. ``RateLimitedLog`` writes the first
line of each kind in a window and counts the rest; when the window closes it writes one
summary, ``N more <kind> suppressed in the last 10 s``, and the next line of that kind
opens a new window. Kinds are bounded too: past ``max_kinds`` open windows, new kinds
share one ("other").
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

OTHER_KIND = "other"


class _Window:
    __slots__ = ("level", "suppressed", "closing")

    def __init__(self, level: LogLevel, closing: IDelayedCall):
        self.level = level
        self.suppressed = 0
        self.closing = closing


class RateLimitedLog:
    """``emit(kind, format, **fields)``: ``log.emit`` unless a line of ``kind`` was written
    in the last ``window`` seconds of ``clock`` (a reactor, or ``task.Clock`` in tests).

    ``flush()`` writes the pending summaries and cancels the timers: call it when the
    owner stops, so that no timer outlives it.
    """

    def __init__(self, log: Logger, clock: IReactorTime, window: float = 10.0, max_kinds: int = 256):
        self.log = log
        self.clock = clock
        self.window = window
        self.max_kinds = max_kinds
        self._windows: dict[str, _Window] = {}

    def emit(self, kind: str, format: str, /, level: LogLevel = LogLevel.warn, **fields) -> bool:
        """Log ``format`` with ``fields`` at ``level``, or count it if ``kind`` already had its
        line in this window. True when the line was written."""
        windows = self._windows
        if kind not in windows and len(windows) >= self.max_kinds:
            kind = OTHER_KIND
        current = windows.get(kind)
        if current is not None:
            current.suppressed += 1
            return False
        windows[kind] = _Window(level, self.clock.callLater(self.window, self._close, kind))
        self.log.emit(level, format, **fields)
        return True

    def suppressed(self, kind: str) -> int:
        """Lines of ``kind`` counted but not written in its current window."""
        current = self._windows.get(kind)
        return current.suppressed if current is not None else 0

    def _close(self, kind: str) -> None:
        current = self._windows.pop(kind, None)
        if current is not None and current.suppressed:
            self.log.emit(current.level, "{suppressed} more {kind} suppressed in the last {window:g} s",
                          suppressed=current.suppressed, kind=kind, window=self.window)

    def flush(self) -> None:
        """Close every window now: their summaries are written, their timers cancelled."""
        for kind, current in list(self._windows.items()):
            if current.closing.active():
                current.closing.cancel()
            self._close(kind)


__all__ = ["OTHER_KIND", "RateLimitedLog"]
