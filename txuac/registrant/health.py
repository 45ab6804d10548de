"""Is the registrar still there? Lost connections and OPTIONS pings, each re-registering at once.

- ``FlowTracker``: which accounts registered over which TCP/TLS connection (the peer
  Address their last final response came from). When the stack reports a connection
  lost (closed or reset by the peer, or dead by keep-alive), every account that used
  it is re-registered at once instead of waiting for its refresh, since a binding over
  a connection-oriented flow is useless once the flow is gone (RFC 5626 4.4.1, 4.5).
- ``Reachability`` (sans-IO): up/down hysteresis of one destination, fed ping results.
- ``OptionsPinger``: every ``reg_options_ping_interval`` seconds, one OPTIONS per
  registrar destination (the next hop the REGISTERs go to and the local socket they
  leave from) that has at least one account with ``options_ping`` set, asking for the
  REGISTERs' Request-URI where the registrar is reached by address. Any response,
  even 4xx/5xx, means the destination is alive; a timeout, a transport error or no
  answer before the next ping is a failure. ``reg_ping_down_count`` failures in a row
  mark it down, ``reg_ping_up_count`` successes up again; on down -> up every account
  of the destination (with or without ``options_ping``) is re-registered at once, since
  a registrar that restarted may have lost its bindings.

While a destination is down its accounts keep their schedule and retry policy: their
REGISTERs are the best probe there is, and holding them on the word of OPTIONS alone
would starve a registrar that drops OPTIONS but takes REGISTERs. The up transition cuts
whatever backoff they reached short.

Without per-account pings, a registrar whose REGISTERs fail is probed only while they
fail (txuac.registrant.probe).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from txuac.errors import ResolutionError, TransactionTimeout, TransportError, TxuacError
from txuac.registrant.record import Flag
from txuac.sip.message import Request, make_request
from txuac.sip.uri import SipURI
from txuac.net.interfaces import ISIPStack
from txuac.sip.address import Address

log = Logger()

# A connection that keeps dropping right after the registrar answered must not turn
# into a REGISTER loop: one immediate re-registration per account per this many seconds.
RECOVERY_SPACING = 10.0


class FlowTracker:
    """Accounts by the TCP/TLS peer their REGISTERs last got a final response from."""

    def __init__(self, registrant, stack: ISIPStack):
        self.registrant = registrant
        self.stack = stack
        self._peer_of: dict[str, Address] = {}
        self._accounts: dict[Address, set[str]] = {}
        self._recovered_at: dict[str, float] = {}

    def start(self) -> None:
        self.stack.add_connection_lost_observer(self.connection_lost)

    def stop(self) -> None:
        self.stack.remove_connection_lost_observer(self.connection_lost)

    def learned(self, l_uuid: str, source: Address | None, flow_timer: int | None = None) -> None:
        """A final response for ``l_uuid`` came from ``source`` (None: unknown)."""
        if source is None or not source.reliable:
            self.forget(l_uuid)
            return
        old = self._peer_of.get(l_uuid)
        if old != source:
            self.forget(l_uuid)
            self._peer_of[l_uuid] = source
            self._accounts.setdefault(source, set()).add(l_uuid)
        if flow_timer:
            # RFC 5626 4.4.1: the registrar's Flow-Timer sets this flow's keep-alive interval.
            self.stack.set_keepalive_interval(source, flow_timer)

    def forget(self, l_uuid: str) -> None:
        peer = self._peer_of.pop(l_uuid, None)
        if peer is not None:
            accounts = self._accounts.get(peer)
            if accounts is not None:
                accounts.discard(l_uuid)
                if not accounts:
                    del self._accounts[peer]

    def peer_of(self, l_uuid: str) -> Address | None:
        return self._peer_of.get(l_uuid)

    def accounts_on(self, peer: Address) -> list[str]:
        return sorted(self._accounts.get(peer, ()))

    def connection_lost(self, peer: Address) -> None:
        """Re-register every account whose REGISTER went over the lost connection, at once
        (at most once per RECOVERY_SPACING seconds each)."""
        accounts = self.accounts_on(peer)
        if not accounts:
            return
        now = self.registrant.now()
        later: dict[float, list[str]] = {}
        for l_uuid in accounts:
            at = max(now, self._recovered_at.get(l_uuid, now - RECOVERY_SPACING) + RECOVERY_SPACING)
            self._recovered_at[l_uuid] = at
            later.setdefault(at, []).append(l_uuid)
        count = 0
        for at, group in later.items():
            count += self.registrant.reregister(group, f"connection to {peer} lost", at=at)
        log.info("connection to {peer} lost: re-registering {count} account(s) that used it",
                 peer=peer, count=count)


class State(str, enum.Enum):
    UNKNOWN = "unknown"  # not pinged yet
    UP = "up"
    DOWN = "down"


@dataclass
class Reachability:
    """Up/down hysteresis of one destination (sans-IO: fed results, returns transitions).

    From UNKNOWN, the first success means UP and ``down_count`` failures DOWN; UP goes
    DOWN after ``down_count`` failures in a row, DOWN goes UP after ``up_count`` successes
    in a row.
    """

    up_count: int
    down_count: int
    state: State = State.UNKNOWN
    successes: int = 0
    failures: int = 0
    changed_at: float | None = None
    last_error: str | None = None

    def success(self, now: float) -> State | None:
        """Record an answer; the new state when it changed."""
        self.failures = 0
        self.successes += 1
        if self.state is State.UP:
            return None
        if self.state is State.UNKNOWN or self.successes >= self.up_count:
            return self._become(State.UP, now)
        return None

    def failure(self, now: float, error: str) -> State | None:
        """Record a failed ping; the new state when it changed."""
        self.successes = 0
        self.failures += 1
        self.last_error = error
        if self.state is not State.DOWN and self.failures >= self.down_count:
            return self._become(State.DOWN, now)
        return None

    def _become(self, state: State, now: float) -> State:
        self.state = state
        self.changed_at = now
        return state


@dataclass(frozen=True)
class DestinationEvent:
    """A destination went up or down (observers of OptionsPinger)."""

    destination: str
    state: State
    previous: State
    reason: str
    at: float
    accounts: int  # accounts of the destination at the time


DestinationObserver = Callable[[DestinationEvent], None]


@dataclass
class _Destination:
    key: str
    target: SipURI | Address
    source: Address | None
    reachability: Reachability
    accounts: list[str] = field(default_factory=list)
    request_uri: str | None = None  # see registrar_request_uri
    pinging: bool = False  # an OPTIONS is in flight
    counted: bool = False  # a round already counted the ping in flight as unanswered


def registrar_request_uri(target: SipURI | Address, record) -> str | None:
    """The Request-URI of an OPTIONS to the registrar ``record`` registers with at ``target``:
    the REGISTERs' own (sip:r_domain) when it is reached by address, so that a TLS registrar
    is verified against the name its REGISTERs verify (RFC 5922 4.1) and routes the OPTIONS
    as it routes them; None (the target URI itself) when it is reached by a URI."""
    return f"sip:{record.r_domain}" if isinstance(target, Address) else None


def options_request(target: SipURI | Address, from_host: str, user_agent: str | None = None,
                    request_uri: str | None = None) -> Request:
    """OPTIONS to the registrar itself (RFC 3261 11: a capabilities query works as a ping).
    ``request_uri``: the REGISTERs' own (sip:r_domain), so that a TLS registrar reached by
    address is verified against the name its REGISTERs verify (RFC 5922 4.1)."""
    if request_uri is not None:
        uri = request_uri
    elif isinstance(target, Address):
        host = f"[{target.host}]" if ":" in target.host else target.host
        uri = f"sip:{host}:{target.port}" + (f";transport={target.transport}" if target.transport != "udp" else "")
    else:
        uri = str(target)
    headers = [("Accept", "application/sdp")]
    if user_agent:
        headers.append(("User-Agent", user_agent))
    return make_request("OPTIONS", uri, f"sip:ping@{from_host}", extra_headers=headers)


class OptionsPinger:
    """OPTIONS pings per registrar destination, with hysteresis; down -> up re-registers."""

    def __init__(self, registrant, stack, reactor, interval: float, up_count: int, down_count: int,
                 from_host: str = "127.0.0.1", user_agent: str | None = None):
        self.registrant = registrant
        self.stack = stack
        self.reactor = reactor
        self.interval = interval
        self.up_count = max(1, up_count)
        self.down_count = max(1, down_count)
        self.from_host = from_host
        self.user_agent = user_agent
        self.destinations: dict[str, _Destination] = {}
        self.observers: list[DestinationObserver] = []
        self._round_call = None
        self._stopped = True

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stopped = False
        self._round()

    def stop(self) -> None:
        self._stopped = True
        if self._round_call is not None and self._round_call.active():
            self._round_call.cancel()
        self._round_call = None

    def add_observer(self, observer: DestinationObserver) -> None:
        self.observers.append(observer)

    def state(self, destination: str) -> State:
        entry = self.destinations.get(destination)
        return entry.reachability.state if entry is not None else State.UNKNOWN

    def states(self) -> dict[str, State]:
        return {key: entry.reachability.state for key, entry in self.destinations.items()}

    def destination_of(self, l_uuid: str) -> str | None:
        for key, entry in self.destinations.items():
            if l_uuid in entry.accounts:
                return key
        return None

    # --- rounds -------------------------------------------------------------------------
    def _round(self) -> None:
        self._round_call = None
        if self._stopped:
            return
        try:
            self._group()
            now = self.reactor.seconds()
            for entry in list(self.destinations.values()):
                if entry.pinging:
                    # Unanswered for another interval: a failure each time, so that a silent
                    # destination goes down after down_count intervals whatever Timer F is.
                    # The transaction goes on (its UDP retransmissions probe as well).
                    entry.counted = True
                    self._result(entry, None, f"no answer within {self.interval:g} s", now)
                    continue
                self._ping(entry)
        except Exception:  # noqa: BLE001 - a bug in one round must not end the pings
            log.failure("OPTIONS ping round failed")
        if not self._stopped:
            self._round_call = self.reactor.callLater(self.interval, self._round)

    def _group(self) -> None:
        """Destinations of the accounts that may register, kept when one has options_ping."""
        groups: dict[str, tuple[SipURI | Address, Address | None, list[str], bool]] = {}
        request_uris: dict[str, str | None] = {}  # of each group's first account
        for record in list(self.registrant.records.values()):
            if record.expires <= 0 or record.flags & Flag.DISABLED:  # not registering
                continue
            try:
                target, source = self.registrant.registrar_target(record)
            except TxuacError:
                continue
            key = _key(target, source)
            group = groups.get(key)
            if group is None:
                group = groups[key] = (target, source, [], False)
                request_uris[key] = registrar_request_uri(target, record)
            group[2].append(record.l_uuid)
            if record.options_ping and not group[3]:
                groups[key] = (target, source, group[2], True)
        kept: dict[str, _Destination] = {}
        for key, (target, source, accounts, pinged) in groups.items():
            if not pinged:
                continue
            entry = self.destinations.get(key)
            if entry is None:
                entry = _Destination(key, target, source, Reachability(self.up_count, self.down_count))
            entry.accounts = accounts
            entry.request_uri = request_uris[key]
            kept[key] = entry
        self.destinations = kept

    def _ping(self, entry: _Destination) -> None:
        request = options_request(entry.target, self.from_host, self.user_agent, entry.request_uri)
        entry.pinging = True
        entry.counted = False
        try:
            d = self.stack.send_request(request, entry.target, source=entry.source)
        except TxuacError as e:
            d = defer.fail(e)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(entry,), errbackArgs=(entry,))

    def _answered(self, response, entry: _Destination) -> None:
        entry.pinging = False
        self._result(entry, response.status, None, self.reactor.seconds())

    def _failed(self, failure, entry: _Destination) -> None:
        entry.pinging = False
        if failure.check(TransactionTimeout, TransportError, ResolutionError) is None:
            log.failure("OPTIONS ping to {destination} failed unexpectedly", failure, destination=entry.key)
        if not entry.counted:
            self._result(entry, None, failure.getErrorMessage(), self.reactor.seconds())

    def _result(self, entry: _Destination, status: int | None, error: str | None, now: float) -> None:
        if self._stopped or self.destinations.get(entry.key) is not entry:
            return  # stopped, or no longer pinged: no account left there
        reachability = entry.reachability
        previous = reachability.state
        if error is None:
            changed = reachability.success(now)
            reason = f"answered {status}"
        else:
            changed = reachability.failure(now, error)
            reason = f"{reachability.failures} ping(s) failed, the last: {error}"
        if changed is None:
            return
        if changed is State.DOWN:
            log.warn("registrar {destination} is down ({reason}); {count} account(s) use it",
                     destination=entry.key, reason=reason, count=len(entry.accounts), destination_state="down")
        else:
            log.info("registrar {destination} is up ({reason})", destination=entry.key, reason=reason,
                     destination_state="up")
        event = DestinationEvent(entry.key, changed, previous, reason, now, len(entry.accounts))
        for observer in tuple(self.observers):
            try:
                observer(event)
            except Exception:  # noqa: BLE001 - an observer must not stop the pings
                log.failure("destination observer failed")
        if previous is State.DOWN and changed is State.UP:
            count = self.registrant.reregister(entry.accounts, f"registrar {entry.key} is back")
            log.info("registrar {destination} is back: re-registering {count} account(s)",
                     destination=entry.key, count=count)


def _key(target: SipURI | Address, source: Address | None) -> str:
    return str(target) if source is None else f"{target} from {source}"


__all__ = ["DestinationEvent", "FlowTracker", "OptionsPinger", "Reachability", "State", "options_request",
           "registrar_request_uri"]
