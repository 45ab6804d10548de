"""Probing a registrar whose REGISTERs fail, to re-register its accounts as soon as it answers.

Nothing is sent while all is well. A destination (the next hop REGISTERs go to, as the
per-destination budget names it) becomes suspect when one of its REGISTERs fails by
timeout or transport error, or when its REGISTERs have been in flight for
``SILENT_AFTER`` seconds without any answer from it (retransmissions alone may get a
REGISTER through a short outage without a timeout, yet the registrar may have restarted
without its bindings). A suspect destination gets one OPTIONS at a time (RFC 3261 11),
from the accounts' socket, at ``interval`` seconds doubling to ``max_interval`` while
unanswered. The first answer of any status, to an OPTIONS or to one of its REGISTERs
(retransmissions may get through first), re-registers, paced by the send limits, the
accounts of the destination whose REGISTERs failed, and every one of them, online ones
included, when the probing saw it down first (a probe unanswered, or no answer for
``SILENT_AFTER`` seconds of probing): a registrar that was down may have restarted
without its bindings, while one that answers at once only lost a few datagrams. A
destination that never answers OPTIONS is left to its accounts' REGISTER retries.

``ProbePlan`` decides (sans-IO, explicit ``now``); ``RegistrarProber`` sends the OPTIONS
and asks the registrant to re-register.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from txuac.errors import ResolutionError, TransactionTimeout, TransportError, TxuacError
from txuac.net.interfaces import ISIPStack
from txuac.registrant.health import options_request, registrar_request_uri
from txuac.sip.address import Address
from txuac.sip.uri import SipURI

log = Logger()

# Seconds REGISTERs to a destination may stay in flight with nothing heard from it before
# it is probed: by then each has been sent at least four times (T1 500 ms, RFC 3261 17.1.2.2).
SILENT_AFTER = 4.0


class Recovery(enum.Enum):
    """Which accounts of a destination that answers a probe re-register."""

    FAILED = "the accounts whose REGISTERs failed: it answered at once"
    ALL = "every account: it was seen down, and may have lost its bindings"


@dataclass
class _Probe:
    """A suspect destination being probed."""

    interval: float
    next_at: float
    started_at: float
    in_flight: bool = False
    unanswered: int = 0


@dataclass
class _Traffic:
    """REGISTER cycles in flight to a destination and when it last answered (or went busy)."""

    in_flight: int = 0
    heard_at: float = 0.0


class ProbePlan:
    """When to probe which destination, and when its answer means "re-register".

    A destination recovered less than ``max_interval`` seconds ago that fails again is
    probed from twice the interval it had reached, the first probe after it, not at once:
    a registrar that answers OPTIONS while its REGISTERs fail has its accounts
    re-registered less and less often, down to once per ``max_interval``.
    """

    def __init__(self, interval: float, max_interval: float, silent_after: float = SILENT_AFTER):
        self.interval = max(interval, 0.01)
        self.max_interval = max(max_interval, self.interval)
        self.silent_after = silent_after
        self.probes: dict[str, _Probe] = {}
        self._traffic: dict[str, _Traffic] = {}
        self._recovered: dict[str, tuple[float, float]] = {}  # destination -> (when, interval reached)

    # --- what the REGISTERs tell ---------------------------------------------------------
    def sent(self, destination: str, now: float) -> None:
        """A REGISTER cycle to ``destination`` started."""
        traffic = self._traffic.get(destination)
        if traffic is None:
            traffic = self._traffic[destination] = _Traffic()
        if traffic.in_flight == 0:
            traffic.heard_at = now  # the silence counts from the first cycle in flight
        traffic.in_flight += 1

    def ended(self, destination: str, now: float, answered: bool) -> Recovery | None:
        """A REGISTER cycle to ``destination`` ended, ``answered`` by a final response or not;
        an answer while it is probed ends the probing as an answer to the probe would."""
        traffic = self._traffic.get(destination)
        if traffic is not None:
            traffic.in_flight -= 1
            if answered:
                traffic.heard_at = now
            if traffic.in_flight <= 0:
                del self._traffic[destination]
        return self.answered(destination, now) if answered else None

    def suspect(self, destination: str, now: float) -> bool:
        """Probe ``destination`` (a REGISTER failed by timeout or transport error, or it is
        silent); True when this starts its probing."""
        if destination in self.probes:
            return False
        recovered = self._recovered.get(destination)
        if recovered is not None and now - recovered[0] < self.max_interval:
            interval = min(recovered[1] * 2, self.max_interval)
            self.probes[destination] = _Probe(interval, now + interval, now)
        else:
            self.probes[destination] = _Probe(self.interval, now, now)
        return True

    def silent(self, now: float) -> list[str]:
        """Destinations not probed yet whose REGISTERs have been in flight unanswered for
        ``silent_after`` seconds."""
        return [destination for destination, traffic in self._traffic.items()
                if now - traffic.heard_at >= self.silent_after and destination not in self.probes]

    # --- the probes ----------------------------------------------------------------------
    def due(self, now: float) -> list[str]:
        """Destinations to send an OPTIONS to now (each counted as in flight)."""
        due = []
        for destination, probe in self.probes.items():
            if not probe.in_flight and probe.next_at <= now:
                probe.in_flight = True
                due.append(destination)
        return due

    def answered(self, destination: str, now: float) -> Recovery | None:
        """An answer (any status) to the probe: which of the destination's accounts to
        re-register now, None when it was not being probed."""
        probe = self.probes.pop(destination, None)
        if probe is None:
            return None
        self._recovered[destination] = (now, probe.interval)
        traffic = self._traffic.get(destination)
        if traffic is not None:
            traffic.heard_at = now
        if probe.unanswered or now - probe.started_at >= self.silent_after:
            return Recovery.ALL
        return Recovery.FAILED

    def drop(self, destination: str) -> None:
        """Stop probing ``destination``."""
        self.probes.pop(destination, None)

    def unanswered(self, destination: str, now: float) -> None:
        """The probe timed out or could not be sent: the next one after a longer interval."""
        probe = self.probes.get(destination)
        if probe is None:
            return
        probe.in_flight = False
        probe.unanswered += 1
        probe.interval = min(probe.interval * 2, self.max_interval)
        probe.next_at = now + probe.interval


class RegistrarProber:
    """Carries out a ProbePlan for the registrant: OPTIONS out, re-registration on an answer.

    The registrant reports its REGISTER cycles (``sent``, ``ended``) and calls ``tick``
    from its scheduler; no timer of its own.
    """

    def __init__(self, registrant, stack: ISIPStack, interval: float, max_interval: float,
                 from_host: str = "127.0.0.1", user_agent: str | None = None):
        self.registrant = registrant
        self.stack = stack
        self.plan = ProbePlan(interval, max_interval)
        self.from_host = from_host
        self.user_agent = user_agent
        self.targets: dict[str, tuple[SipURI | Address, Address | None]] = {}
        self.request_uris: dict[str, str | None] = {}  # registrar_request_uri
        self.probes = 0  # OPTIONS sent
        self.recoveries = 0  # destinations re-registered on a probe's answer
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def sent(self, destination: str, record, now: float) -> None:
        if destination not in self.targets:
            try:
                self.targets[destination] = self.registrant.registrar_target(record)
            except TxuacError:
                return
            self.request_uris[destination] = registrar_request_uri(self.targets[destination][0], record)
        self.plan.sent(destination, now)

    def ended(self, destination: str, now: float, answered: bool) -> None:
        recovery = None if self._stopped else self.plan.ended(destination, now, answered)
        if recovery is not None:
            self._recover(destination, recovery, "its REGISTERs are answered")

    def failed(self, destination: str, now: float, reason: str) -> None:
        """A REGISTER to ``destination`` failed by timeout or transport error."""
        if destination in self.targets and self.plan.suspect(destination, now):
            log.info("registrar {destination} failing ({reason}): probing it with OPTIONS",
                     destination=destination, reason=reason)

    def tick(self, now: float) -> None:
        if self._stopped:
            return
        for destination in self.plan.silent(now):
            if destination in self.targets and self.plan.suspect(destination, now):
                log.info("registrar {destination} silent for {seconds:g} s: probing it with OPTIONS",
                         destination=destination, seconds=self.plan.silent_after)
        if self.plan.probes:
            for destination in self.plan.due(now):
                self._probe(destination)

    def _probe(self, destination: str) -> None:
        if not self.registrant.accounts_of(destination):
            self.plan.drop(destination)  # no account registers there any more
            return
        target, source = self.targets[destination]
        request = options_request(target, self.from_host, self.user_agent, self.request_uris.get(destination))
        self.probes += 1
        try:
            d = self.stack.send_request(request, target, source=source)
        except TxuacError as e:
            d = defer.fail(e)
        d.addCallbacks(self._answered, self._unanswered, callbackArgs=(destination,), errbackArgs=(destination,))

    def _answered(self, response, destination: str) -> None:
        recovery = None if self._stopped else self.plan.answered(destination, self.registrant.now())
        if recovery is not None:
            self._recover(destination, recovery, f"OPTIONS answered {response.status}")

    def _recover(self, destination: str, recovery: Recovery, why: str) -> None:
        accounts = self.registrant.accounts_of(destination, failed_only=recovery is Recovery.FAILED)
        count = self.registrant.reregister(accounts, f"registrar {destination} answers again")
        self.recoveries += 1
        log.info("registrar {destination} answers again ({why}): re-registering {count} {which}",
                 destination=destination, why=why, count=count,
                 which="failed account(s)" if recovery is Recovery.FAILED else "account(s), online ones included")

    def _unanswered(self, failure, destination: str) -> None:
        if failure.check(TransactionTimeout, TransportError, ResolutionError) is None:
            log.failure("OPTIONS probe to {destination} failed unexpectedly", failure, destination=destination)
        if not self._stopped:
            self.plan.unanswered(destination, self.registrant.now())


__all__ = ["ProbePlan", "Recovery", "RegistrarProber", "SILENT_AFTER"]
