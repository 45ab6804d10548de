"""The stack's timers on the reactor: every transaction deadline on one reactor timer
(``DeadlineTimer``), and the keys of finished transactions kept until a deadline
(``ExpiringKeys``, for Timer K)."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable, Generic, Hashable, TypeVar

from twisted.logger import Logger

log = Logger(namespace=__name__)  # named: a compiled module has no frame to infer it from

K = TypeVar("K", bound=Hashable)


class DeadlineTimer:
    """Calls ``fire(*args)`` at each owner's deadline, on one reactor timer for all of them.

    Entries are (deadline, n, owner) in a heap; an entry whose owner's deadline has moved
    on, or that was disarmed, is skipped when it comes up. A DelayedCall per transaction,
    created and cancelled for nearly every request (the answer comes long before Timer
    E), cost a noticeable share of the CPU of a REGISTER cycle.

    ``before_fire()``, when given, runs first whenever a deadline is due: the reactor runs
    due timers before it polls its sockets, so a busy process would otherwise fire the
    timers of transactions whose answers are already waiting to be read.
    """

    def __init__(self, reactor, before_fire: Callable[[], None] | None = None) -> None:
        self.reactor = reactor
        self.before_fire = before_fire
        self._armed: dict[object, tuple[float, Callable[..., None], tuple]] = {}
        self._deadlines: list[tuple[float, int, object]] = []
        self._sequence = 0
        self._wakeup: Any = None  # an IDelayedCall (zope interfaces carry no method types)
        self._wakeup_at = 0.0
        self._stopped = False

    def arm(self, owner: object, deadline: float | None, fire: Callable[..., None], *args) -> None:
        """Call ``fire(*args)`` at ``deadline`` for ``owner`` (replacing its earlier one);
        None disarms it."""
        if deadline is None or self._stopped:
            self.disarm(owner)
            return
        armed = self._armed.get(owner)
        if armed is not None and armed[0] == deadline:
            return
        self._armed[owner] = (deadline, fire, args)
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, owner))
        if self._wakeup is None or deadline < self._wakeup_at:
            self._arm_wakeup(deadline)

    def disarm(self, owner: object) -> None:
        if self._armed.pop(owner, None) is not None and not self._armed:
            self._deadlines.clear()
            self._cancel_wakeup()

    def stop(self) -> None:
        """Forget every deadline; nothing fires or is armed after this."""
        self._stopped = True
        self._armed.clear()
        self._deadlines.clear()
        self._cancel_wakeup()

    def _arm_wakeup(self, at: float) -> None:
        # A new call rather than reset(): Twisted moves a call sooner by a linear search of
        # its timed calls (and the repr of an exception when it is not found there yet).
        self._cancel_wakeup()
        self._wakeup = self.reactor.callLater(max(0.0, at - self.reactor.seconds()), self._wake)
        self._wakeup_at = at

    def _cancel_wakeup(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None

    def _wake(self) -> None:
        """Fire every timer that is due, then sleep until the next live deadline."""
        self._wakeup = None
        now = self.reactor.seconds()
        heap, armed = self._deadlines, self._armed
        self._drop_stale()
        if self.before_fire is not None and heap and heap[0][0] <= now:
            try:
                self.before_fire()
            except Exception:  # noqa: BLE001 - the timers fire all the same
                log.failure("reading before the transaction timers failed")
        while heap and heap[0][0] <= now:
            deadline, _, owner = heapq.heappop(heap)
            entry = armed.get(owner)
            if entry is None or entry[0] != deadline:
                continue  # moved or disarmed since
            del armed[owner]
            try:
                entry[1](*entry[2])
            except Exception:  # noqa: BLE001 - one transaction's bug must not stop the others' timers
                log.failure("transaction timer failed")
        self._drop_stale()
        if heap and not self._stopped and (self._wakeup is None or heap[0][0] < self._wakeup_at):
            self._arm_wakeup(heap[0][0])
        elif not heap:
            self._cancel_wakeup()

    def _drop_stale(self) -> None:
        """Pop the entries on top of the heap whose owner's deadline moved on or was
        disarmed: no need to wake up, or to read ahead (``before_fire``), for them. Every
        request answered before its first retransmission leaves one."""
        heap, armed = self._deadlines, self._armed
        while heap and armed.get(heap[0][2], (None,))[0] != heap[0][0]:
            heapq.heappop(heap)


class ExpiringKeys(Generic[K]):
    """Keys kept until their deadline, swept by one reactor timer.

    Meant for deadlines that come in the order the keys are added (one fixed delay, as
    Timer K is for every non-INVITE transaction): a FIFO, not a heap. A key added again
    takes its new deadline.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self._deadlines: dict[K, float] = {}
        self._queue: deque[tuple[float, K]] = deque()
        self._sweep: Any = None  # an IDelayedCall
        self._stopped = False

    @property
    def deadlines(self) -> dict[K, float]:
        """Key -> deadline of every key kept (not to be changed)."""
        return self._deadlines

    def __contains__(self, key: object) -> bool:
        return key in self._deadlines

    def __len__(self) -> int:
        return len(self._deadlines)

    def add(self, key: K, deadline: float) -> None:
        if self._stopped:
            return
        self._deadlines[key] = deadline
        self._queue.append((deadline, key))
        if self._sweep is None:
            self._sweep = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()), self._sweep_expired)

    def stop(self) -> None:
        self._stopped = True
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        self._deadlines.clear()
        self._queue.clear()

    def _sweep_expired(self) -> None:
        self._sweep = None
        now = self.reactor.seconds()
        queue = self._queue
        while queue and queue[0][0] <= now:
            deadline, key = queue.popleft()
            if self._deadlines.get(key) == deadline:
                del self._deadlines[key]
        if queue and not self._stopped:
            self._sweep = self.reactor.callLater(max(0.0, queue[0][0] - now), self._sweep_expired)
