"""RFC 3261 section 17 transactions as sans-IO state machines.

Each transaction is driven by its owner with explicit times: ``start(now)``,
``receive(message, now)``, ``send_response(response, now)`` (server side),
``handle_timer(now)`` and ``transport_failed(now)``. Every call returns a list
of effects for the owner to carry out; ``deadline`` is the earliest time at
which ``handle_timer`` must be called, or None. Nothing here reads a clock or
touches a socket.

INVITE transactions follow RFC 6026: a 2xx moves them to Accepted (Timers L
and M) instead of ending them, so that retransmitted 2xx and INVITEs are
absorbed by the transaction rather than mistaken for new ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from txuac.sip.headers import Headers
from txuac.sip.message import Request, Response
from txuac.sip.via import MAGIC_COOKIE, has_magic_cookie


# Retransmissions at a T2 lowered by TimerSettings.with_t2 (4 s of them at 500 ms): under
# 10% loss each way eight lost tries in a row happen to one transaction in 600,000.
LOWERED_T2_RESENDS: Final = 8


@dataclass(frozen=True)
class TimerSettings:
    """T1, T2 and T4 of RFC 3261 17.1.1.1 and table 4, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # A T2 lowered by with_t2 holds for this many retransmissions, then the interval doubles
    # up to t2_after again (0: for good).
    fast_resends: int = 0
    t2_after: float = 4.0

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M."""
        return 64 * self.t1

    def with_t2(self, t2: float, resends: int = LOWERED_T2_RESENDS) -> TimerSettings:
        """These timers with another T2, the cap on a non-INVITE request's retransmission
        interval (RFC 3261 17.1.2.2), never below T1: a request whose server answers at once
        (a REGISTER) may retransmit sooner than the default 4 s; Timer F stays 64*T1.
        The lowered T2 holds for ``resends`` retransmissions only (0: for good), then the
        interval doubles up to this T2 again: a lost datagram is made up for at once, a
        server that is down does not get a request every T1 until Timer F (at 500 ms:
        18 sends in 32 s instead of 64)."""
        return TimerSettings(self.t1, max(self.t1, t2), self.t4, resends, self.t2)


DEFAULT_TIMERS: Final = TimerSettings()


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# --- effects --------------------------------------------------------------------
# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False, unsafe_hash=True)
class Transmit:
    """Send these bytes to the transaction's peer (a first send or a retransmission)."""

    data: Final[bytes]
    retransmission: Final[bool]

    def __init__(self, data: bytes, retransmission: bool = False) -> None:
        self.data = data
        self.retransmission = retransmission


@dataclass(init=False, unsafe_hash=True)
class Deliver:
    """Pass this response up to the transaction user (client side)."""

    response: Final[Response]

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(init=False, unsafe_hash=True)
class TimedOut:
    """The transaction gave up: Timer B or F (no final response) or H (no ACK); or, with
    ``after`` (seconds), the TU's own timeout for a final response (``abandon``)."""

    timer: Final[str]
    after: Final[float | None]

    def __init__(self, timer: str, after: float | None = None) -> None:
        self.timer = timer
        self.after = after


@dataclass(frozen=True)
class TransportFailed:
    """The transport reported an error; the transaction is over (RFC 3261 17.1.4, 17.2.4)."""


@dataclass(frozen=True)
class Ended:
    """The transaction reached Terminated; its owner forgets it."""


Effect = Transmit | Deliver | TimedOut | TransportFailed | Ended


class _Transaction:
    """Timers and bookkeeping shared by the four state machines."""

    def __init__(self, reliable: bool, timers: TimerSettings):
        self.reliable = reliable
        self.timers = timers
        self.state: State | None = None
        self._deadlines: dict[str, float] = {}

    @property
    def deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        return min(self._deadlines.values()) if self._deadlines else None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _arm(self, name: str, at: float) -> None:
        self._deadlines[name] = at

    def _disarm(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _terminate(self, effects: list[Effect]) -> list[Effect]:
        self.state = State.TERMINATED
        self._deadlines.clear()
        effects.append(Ended())
        return effects

    def handle_timer(self, now: float) -> list[Effect]:
        """Fire every timer due at ``now``, earliest first."""
        effects: list[Effect] = []
        while self._deadlines and not self.terminated:
            name, at = min(self._deadlines.items(), key=lambda item: item[1])
            if at > now:
                break
            del self._deadlines[name]
            self._fire(name, at, effects)
        return effects

    def transport_failed(self, now: float) -> list[Effect]:
        if self.terminated:
            return []
        return self._terminate([TransportFailed()])

    def _fire(self, name: str, at: float, effects: list[Effect]) -> None:
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """Client INVITE (17.1.1) and non-INVITE (17.1.2) transactions."""

    def __init__(self, request: Request, reliable: bool, timers: TimerSettings = DEFAULT_TIMERS):
        super().__init__(reliable, timers)
        self.request: Request | None = request
        self.method = request.method
        self.key = client_key_for_request(request)
        self.is_invite = self.method == "INVITE"
        self._request_bytes = bytes(request)
        self._ack_bytes: bytes | None = None
        self._interval = timers.t1
        self._resent = 0

    @property
    def absorbing(self) -> bool:
        """True once a non-INVITE transaction is Completed: until Timer K it only absorbs
        retransmitted responses (RFC 3261 17.1.2.2), so a stack may keep just its key and
        deadline instead of the whole transaction."""
        return self.state is State.COMPLETED and not self.is_invite

    def _release_request(self) -> None:
        """Nothing is retransmitted after a final response: let the request go while
        Timers K, D or M absorb stray responses (thousands may be waiting at once)."""
        self.request = None
        self._request_bytes = b""

    def start(self, now: float) -> list[Effect]:
        """Send the request and arm A/B (INVITE) or E/F (non-INVITE)."""
        timeout = now + self.timers.timeout
        if self.is_invite:
            self.state = State.CALLING
            self._arm("B", timeout)
            if not self.reliable:
                self._arm("A", now + self.timers.t1)
        else:
            self.state = State.TRYING
            self._arm("F", timeout)
            if not self.reliable:
                self._arm("E", now + self.timers.t1)
        return [Transmit(self._request_bytes)]

    def abandon(self, now: float, after: float) -> list[Effect]:
        """The TU's own timeout (``after`` seconds, Kamailio's fr_timer) ran out before Timer
        B or F: the transaction ends at once, with no more retransmissions, so that a late
        response matches nothing. Nothing once a final response came or it ended."""
        if self.terminated or self.state not in (State.CALLING, State.TRYING, State.PROCEEDING):
            return []
        self._release_request()
        return self._terminate([TimedOut("fr", after)])

    def receive(self, response: Response, now: float) -> list[Effect]:
        """Feed a response whose key matched this transaction (17.1.3)."""
        if self.is_invite:
            return self._invite_response(response, now)
        return self._non_invite_response(response, now)

    def _non_invite_response(self, response: Response, now: float) -> list[Effect]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # Completed absorbs retransmissions; Terminated ignores them
        if response.status < 200:
            if self.state is State.TRYING:
                self.state = State.PROCEEDING
            return [Deliver(response)]
        self.state = State.COMPLETED
        self._disarm("E", "F")
        self._release_request()
        # RFC 3261 17.1.2.2: Timer K is T4 on unreliable transports, zero on reliable ones.
        if self.reliable:
            return self._terminate([Deliver(response)])
        self._arm("K", now + self.timers.t4)
        return [Deliver(response)]

    def _invite_response(self, response: Response, now: float) -> list[Effect]:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            # 17.1.1.2: Timer B only bounds Calling; once Proceeding the TU decides (CANCEL).
            self._disarm("A", "B")
            if status < 200:
                self.state = State.PROCEEDING
                return [Deliver(response)]
            if status < 300:
                # RFC 6026 7.2: Accepted, Timer M; the TU sends the ACK for a 2xx.
                self.state = State.ACCEPTED
                self._arm("M", now + self.timers.timeout)
                self._release_request()
                return [Deliver(response)]
            self.state = State.COMPLETED
            request = self.request
            assert request is not None  # released only once a final response arrived
            self._ack_bytes = bytes(make_ack(request, response))
            self._release_request()
            if self.reliable:
                return self._terminate([Transmit(self._ack_bytes), Deliver(response)])
            # Timer D: at least 32 s on unreliable transports (17.1.1.2).
            self._arm("D", now + max(32.0, self.timers.timeout))
            return [Transmit(self._ack_bytes), Deliver(response)]
        if self.state is State.ACCEPTED and 200 <= status < 300:
            return [Deliver(response)]  # retransmitted or forked 2xx: the TU ACKs it
        if self.state is State.COMPLETED and status >= 300 and self._ack_bytes is not None:
            return [Transmit(self._ack_bytes, retransmission=True)]
        return []

    def _fire(self, name: str, at: float, effects: list[Effect]) -> None:
        if name == "A":
            self._interval *= 2  # 17.1.1.2: Timer A doubles without the T2 cap
            self._arm("A", at + self._interval)
            effects.append(Transmit(self._request_bytes, retransmission=True))
        elif name == "E":
            # 17.1.2.2: doubling up to T2 while Trying, T2 once Proceeding.
            timers = self.timers
            self._resent += 1
            t2 = timers.t2
            if timers.fast_resends and self._resent > timers.fast_resends:
                t2 = timers.t2_after
            if self.state is State.PROCEEDING:
                self._interval = t2
            else:
                self._interval = min(self._interval * 2, t2)
            self._arm("E", at + self._interval)
            effects.append(Transmit(self._request_bytes, retransmission=True))
        elif name in ("B", "F"):
            effects.append(TimedOut(name))
            self._terminate(effects)
        else:  # D, K, M
            self._terminate(effects)


class ServerTransaction(_Transaction):
    """Server INVITE (17.2.1) and non-INVITE (17.2.2) transactions.

    The owner creates it for a new request, hands the request to the TU, and
    sends the TU's responses through ``send_response``.
    """

    def __init__(self, request: Request, reliable: bool, timers: TimerSettings = DEFAULT_TIMERS,
                 key: tuple | None = None):
        super().__init__(reliable, timers)
        self.request: Request | None = request  # None once released (release_request)
        self.method = request.method
        # Its server_key (given by an owner that looked the request up by it), kept: the
        # request's parsed views are dropped once it is answered, and the key is needed
        # until the transaction ends.
        self.key: tuple = key if key is not None else server_key(request)
        self.is_invite = self.method == "INVITE"
        self.state = State.PROCEEDING if self.is_invite else State.TRYING
        # The last response sent (None once released) and its status (kept).
        self.last_response: Response | None = None
        self.last_status: int | None = None
        self._response_bytes: bytes | None = None
        self._interval = timers.t1

    @property
    def answered(self) -> bool:
        """Whether a final response was sent."""
        return self.last_status is not None and self.last_status >= 200

    def release_response(self) -> None:
        """Let the last response go; its bytes stay for retransmissions and its status for
        ``answered``. An owner keeping thousands of answered transactions until Timers
        J, L or H (32 s each) calls it once the response is sent."""
        self.last_response = None

    def release_request(self) -> None:
        """Let the request go: a non-INVITE transaction answered finally only resends that
        answer until Timer J (17.2.2), and needs no more of its request than its key."""
        self.request = None

    def send_response(self, response: Response, now: float) -> list[Effect]:
        """Send a response from the TU; returns nothing when the state does not allow it."""
        if self.state not in (State.TRYING, State.PROCEEDING, State.ACCEPTED):
            return []
        if self.state is State.ACCEPTED and not 200 <= response.status < 300:
            return []
        self.last_response = response
        self.last_status = response.status
        self._response_bytes = data = bytes(response)
        effects: list[Effect] = [Transmit(data)]
        status = response.status
        if status < 200:
            self.state = State.PROCEEDING
            return effects
        if not self.is_invite:
            self.state = State.COMPLETED
            if self.reliable:
                return self._terminate(effects)
            self._arm("J", now + self.timers.timeout)
            return effects
        if status < 300:
            if self.state is not State.ACCEPTED:
                # RFC 6026 8.7: Accepted, Timer L; the TU retransmits its 2xx itself.
                self.state = State.ACCEPTED
                self._arm("L", now + self.timers.timeout)
            return effects
        self.state = State.COMPLETED
        self._arm("H", now + self.timers.timeout)
        if not self.reliable:
            self._arm("G", now + self.timers.t1)
        return effects

    def receive(self, request: Request, now: float) -> list[Effect]:
        """Feed a retransmitted request or an ACK that matched this transaction (17.2.3)."""
        if request.method == "ACK":
            if self.is_invite and self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._disarm("G", "H")
                if self.reliable:
                    return self._terminate([])
                self._arm("I", now + self.timers.t4)
            return []  # ACKs in Accepted or Confirmed are absorbed here
        if self.state in (State.PROCEEDING, State.COMPLETED) and self._response_bytes is not None:
            return [Transmit(self._response_bytes, retransmission=True)]
        return []  # Trying, Accepted, Confirmed: absorb

    def _fire(self, name: str, at: float, effects: list[Effect]) -> None:
        if name == "G":
            self._interval = min(self._interval * 2, self.timers.t2)
            self._arm("G", at + self._interval)
            if self._response_bytes is not None:
                effects.append(Transmit(self._response_bytes, retransmission=True))
        elif name == "H":
            effects.append(TimedOut("H"))
            self._terminate(effects)
        else:  # I, J, L
            self._terminate(effects)


# --- matching -------------------------------------------------------------------
def client_key_for_request(request: Request) -> tuple[str, str]:
    """The key a client transaction is filed under: top Via branch and method."""
    via = request.top_via
    return (via.branch if via is not None else "") or "", request.method


def client_key_for_response(response: Response) -> tuple[str, str] | None:
    """RFC 3261 17.1.3: a response matches by top Via branch and CSeq method."""
    branch = response.top_via_branch()
    cseq = response.cseq
    if not branch or cseq is None:
        return None
    return branch, cseq.method


def server_key(request: Request) -> tuple:
    """RFC 3261 17.2.3 (branch, sent-by, method; ACK matches its INVITE) with the
    RFC 2543 fallback for requests without a magic-cookie branch."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    if via is not None and has_magic_cookie(via.branch):
        return ("3261", via.branch, via.host.lower(), via.port, method)
    from_ = request.from_
    cseq = request.cseq
    # RFC 3261 17.2.3 for RFC 2543 peers: Request-URI, To tag, From tag, Call-ID,
    # CSeq and top Via. An ACK's To tag is the one our response added, so the
    # To tag is left out to let the ACK find its INVITE transaction.
    return (
        "2543",
        str(request.uri),
        from_.tag if from_ is not None else None,
        request.call_id,
        cseq.number if cseq is not None else None,
        method,
        str(via) if via is not None else None,
    )


def make_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 17.1.1.3)."""
    headers = Headers()
    via = request.top_via
    if via is not None:
        headers.add("Via", str(via))
    from_ = request.headers.get("From")
    if from_ is not None:
        headers.add("From", from_)
    to = response.headers.get("To")
    if to is not None:
        headers.add("To", to)
    call_id = request.headers.get("Call-ID")
    if call_id is not None:
        headers.add("Call-ID", call_id)
    cseq = request.cseq
    if cseq is not None:
        headers.add("CSeq", f"{cseq.number} ACK")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("Content-Length", "0")
    return Request("ACK", request.uri, headers)
