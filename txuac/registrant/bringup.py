"""Log lines that tell how the accounts are doing, read from a registrant's records and
events (its public ``records``, ``now()`` and ``add_observer``):

- after a load or reload (``arm()``), one info line when every account that should be
  registered is online (``1000 of 1000 online in 1.2 s``), or, if that takes longer than
  ``bound`` seconds, one line then with who is failing and why (``998 of 1000 online after
  30 s; 2 failing: 403 Forbidden at sip:reg.example.com (2)``);
- while any account is failing, one info line every ``interval`` seconds, grouped by
  registrar and reason (``2 of 1000 accounts failing: 403 Forbidden at sip:reg.example.com
  (2)``).

Online accounts are counted from the events as they come (no pass over the accounts per
event); a pass over every account is made only at arm, at the bound and per summary.
"""

from __future__ import annotations

from collections import Counter

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from txuac.registrant.record import State

log = Logger(namespace="txuac.registrant.bringup")

BRING_UP_BOUND = 30.0  # seconds after a load before an incomplete bring-up is reported
SUMMARY_INTERVAL = 60.0  # seconds between two summaries while accounts fail
GROUPS_SHOWN = 5  # (reason, registrar) groups named in a line; the rest are counted
_NOT_EXPECTED = (State.DISABLED, State.UNREGISTERED)


def failing_text(records, now: float, shown: int = GROUPS_SHOWN) -> tuple[int, str]:
    """How many of ``records`` are failing, and ``403 Forbidden at sip:reg (2), ...`` (largest first)."""
    groups: Counter[tuple[str, str]] = Counter()
    for record in records:
        if record.state(now) is State.FAILED:
            groups[(record.last_failure or "unknown", record.auth_proxy)] += 1
    parts = [f"{reason} at {registrar} ({count})" for (reason, registrar), count in groups.most_common(shown)]
    others = sum(groups.values()) - sum(count for _, count in groups.most_common(shown))
    if others:
        parts.append(f"{others} more in {len(groups) - shown} other group(s)")
    return sum(groups.values()), ", ".join(parts)


class BringUpReport(service.Service):
    """The bring-up and failure summary lines of one registrant: ``begin()`` once its
    accounts are loaded, ``arm()`` after each reload; stopping the service stops the lines."""

    name = "bringup"

    def __init__(self, registrant, clock, bound: float = BRING_UP_BOUND, interval: float = SUMMARY_INTERVAL):
        self.registrant = registrant
        self.clock = clock
        self.bound = bound
        self.armed_at: float | None = None
        self.expected = 0
        self.online = 0
        self._bound_call = None
        self._summary = task.LoopingCall(self.summarize)
        self._summary.clock = clock
        self.interval = interval
        registrant.add_observer(self.observe)

    def begin(self) -> None:
        """The accounts are loaded: arm for them and start the periodic summary."""
        if not self.running:
            return
        self.arm()
        if not self._summary.running:
            self._summary.start(self.interval, now=False)

    def stopService(self):
        super().stopService()
        if self._summary.running:
            self._summary.stop()
        self._cancel_bound()
        self.armed_at = None

    def arm(self) -> None:
        """A load or reload just happened: report when its accounts are all online."""
        now = self.registrant.now()
        self.armed_at = now
        self.expected = self.online = 0
        for record in self.registrant.records.values():
            state = record.state(now)
            if state not in _NOT_EXPECTED:
                self.expected += 1
                if state is State.ONLINE:
                    self.online += 1
        self._cancel_bound()
        if not self._check(now):
            self._bound_call = self.clock.callLater(self.bound, self._bound_reached)

    def observe(self, event) -> None:
        """A registrant observer: counts accounts coming online or leaving it."""
        if self.armed_at is None:
            return
        if event.state is State.ONLINE and event.previous is not State.ONLINE:
            self.online += 1
            self._check(event.at)
        elif event.previous is State.ONLINE and event.state is not State.ONLINE:
            self.online -= 1

    def _check(self, now: float) -> bool:
        if self.online < self.expected or self.armed_at is None:
            return False
        log.info("{online} of {expected} online in {seconds:.1f} s", online=self.online, expected=self.expected,
                 seconds=now - self.armed_at)
        self.armed_at = None
        self._cancel_bound()
        return True

    def _bound_reached(self) -> None:
        self._bound_call = None
        if self.armed_at is None:
            return
        now = self.registrant.now()
        records = list(self.registrant.records.values())
        online = sum(1 for record in records if record.state(now) is State.ONLINE)
        failing, groups = failing_text(records, now)
        log.info("{online} of {expected} online after {seconds:.0f} s; {failing} failing{colon}{groups}",
                 online=online, expected=self.expected, seconds=now - self.armed_at, failing=failing,
                 colon=": " if groups else "", groups=groups)
        self.armed_at = None

    def summarize(self) -> None:
        """One info line while any account is failing, grouped by reason and registrar."""
        records = self.registrant.records.values()
        failing, groups = failing_text(records, self.registrant.now())
        if failing:
            log.info("{failing} of {total} accounts failing: {groups}", failing=failing, total=len(records),
                     groups=groups)

    def _cancel_bound(self) -> None:
        if self._bound_call is not None and self._bound_call.active():
            self._bound_call.cancel()
        self._bound_call = None
