"""Kamailio's ``uac_req_send()`` and ``event_route[uac:reply]`` (K:uac_send.c; README 4.9,
5 ``$uac_req``, 6.1).

``UacRequest`` is one request described by the ``$uac_req`` keys (the keyword arguments of
``uac.uac_req_send(...)`` and ``UACService.req_send(...)``), validated when it is made:
Kamailio's buffer sizes (a value of ``FIELD_LIMITS[key]`` bytes or more is refused, as
"Value size too big"), the types, and SIP syntax; a bad field is a UacRequestError.
Kamailio's defaults: furi and turi are the ruri, CSeq 10 (tm's DEFAULT_CSEQ), a generated
Call-ID, no event (evroute 0). ``fr_timeout`` is in milliseconds, as tm's timers.

``RequestSender.send(request)`` sends it through the SIP stack and returns a Deferred
firing with the final ``UacReplyEvent``; SIP failures are events, never an errback. Each
send has its own context (``_Exchange``) holding an immutable UacRequest: Kamailio's
shared per-request copy was freed twice on repeated 401s (PR #4210).

Completion, as K:uac_send.c:

- a 401/407 is answered once when ``auser`` and ``apasswd`` are set and evroute is not 2:
  any realm, ``apasswd`` an HA1 when ``flags`` bit 0 is set, digest-uri the ruri; the retry
  has the same Call-ID and From tag, CSeq of the challenge + 1, the same next hop, socket
  and timers. A second challenge is final (no second retry);
- ``on_event(event)`` is called per ``evroute``: 0 never; 2 for a failure only (a final
  reply >= 300 or a local one); any other value for every completion, so a challenged
  request gives two events, the 401/407 and then the final reply (README 6.1);
- ``evtype`` 1 is a reply received (``event.response``), 2 a local one (no response):
  408 for a timeout (``fr_timeout``, else Timer F), 477 when it could not be sent, 478
  when the destination did not resolve (tm's codes for those errors).

With a routing script, ``ScriptEvents`` runs the event: ``[routing] event_callback``
(a function of the script, called ``fn("uac:reply", msg, uac, tm, rr, dialog, sl)``: the
event name first, as Kamailio's KEMI callback, then the route arguments, so that one
function can serve as a route) or else ``@event_route("uac:reply")``, with ``msg`` the
event. As in Kamailio (a REQUEST_ROUTE) ``uac.uac_req_send`` works there; ``tm``, ``rr``,
``dialog`` and ``sl`` have no request to act on and raise RouteContextError.

Kamailio 6.1's ``ftag`` and ``ttag`` are the From and To tags (a token each, a fresh From
tag without ``ftag``); ``all`` is taken and means nothing here (Kamailio's
``$uac_req(all) = $null`` clears its one buffer; each call here starts from the defaults).

Differences from Kamailio: INVITE, ACK and CANCEL are refused (txuac sends no ACK for a
2xx nor a CANCEL for these requests), so ``fr_inv_timeout`` is checked but unused;
``ftag``/``ttag`` are sent (Kamailio 6.1 stores them and tm makes its own From tag); the retry is sent from the
same socket as the first request (Kamailio re-applies ``sock`` but not
``default_socket``); a challenge from another address than the one the request went to
is not answered (``txuac.auth.challenge_origin``); hdrs may not set Via, From, To,
Call-ID, CSeq, Max-Forwards or Content-Length, which come from the fields and the body.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from txuac.auth import authorized_retry, challenge_origin
from txuac.credentials import FixedCredentials
from txuac.errors import (
    AuthenticationError,
    ConfigError,
    InvalidListenSpec,
    ResolutionError,
    RouteContextError,
    SIPParseError,
    TransactionTimeout,
    TransportError,
    UacRequestError,
)
from txuac.net.interfaces import ISIPStack, ResponseOrigin
from txuac.net.stack import ClientRequest
from txuac.routing.script import ROUTE_PARAMETERS, Route, RouteKind, RouteTable, ScriptFailure, call_route
from txuac.sip.digest import (
    ALL_ALGORITHMS,
    Credentials,
    NonceCounter,
    authorization,
    choose_challenge,
    parse_challenges,
)
from txuac.sip.grammar import is_token
from txuac.sip.headers import header_key
from txuac.sip.listen import parse_listen
from txuac.sip.message import Request, Response, make_request
from txuac.sip.tokens import token_hex
from txuac.sip.uri import URI, SipURI, parse_uri
from txuac.sip.via import Address

log = Logger()

EVENT_NAME = "uac:reply"

# Kamailio's $uac_req buffers (K:uac_send.c): a value must be shorter, in bytes.
FIELD_LIMITS: Mapping[str, int] = {
    "method": 32, "ruri": 1024, "furi": 1024, "turi": 1024, "ouri": 1024, "hdrs": 2048, "body": 32768,
    "auser": 128, "apasswd": 64, "sock": 1024, "callid": 128, "evparam": 128, "ftag": 128, "ttag": 128,
}
# Taken and ignored: Kamailio's buffer reset ($uac_req(all) = $null).
IGNORED_FIELDS = frozenset({"all"})
INTEGER_FIELDS = ("flags", "cseqno", "fr_timeout", "fr_inv_timeout", "evroute")
DEFAULT_CSEQ = 10  # tm's DEFAULT_CSEQ
FLAG_HA1 = 1  # flags bit 0: apasswd is an HA1

EVROUTE_NONE = 0
EVROUTE_FAILURE = 2  # any other value: every completion
EVTYPE_REPLY = 1
EVTYPE_LOCAL = 2
LOCAL_TIMEOUT = 408
LOCAL_SEND_FAILED = 477  # tm: "Unfortunately error on sending to next hop occurred"
LOCAL_UNRESOLVABLE = 478  # tm: "Unresolvable destination"

REFUSED_METHODS = frozenset({"INVITE", "ACK", "CANCEL"})
# Set from the fields: in hdrs they would make a second, contradicting header.
FIELD_HEADERS = frozenset(header_key(name) for name in ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards",
                                                       "Content-Length"))
_SECRET_FIELDS = frozenset({"apasswd"})


@dataclass(frozen=True, repr=False)
class UacRequest:
    """One request of uac_req_send, from the ``$uac_req`` keys (see the module docstring).

    Made with Kamailio's defaults resolved: ``furi``/``turi`` the ruri when empty,
    ``cseqno`` 10 when not positive, ``callid`` generated when empty. ``None`` for a key
    is Kamailio's ``$null``: the default. The repr never shows ``apasswd``.
    """

    method: str
    ruri: str
    furi: str = ""
    turi: str = ""
    ouri: str = ""
    hdrs: str = ""
    body: str | bytes = ""
    flags: int = 0
    auser: str = ""
    apasswd: str = ""
    sock: str = ""
    callid: str = ""
    ftag: str = ""
    ttag: str = ""
    cseqno: int = 0
    fr_timeout: int = 0
    fr_inv_timeout: int = 0
    evroute: int = EVROUTE_NONE
    evparam: str = ""
    # Parsed once, for sending.
    uri: URI = field(init=False, compare=False)
    headers: tuple[tuple[str, str], ...] = field(init=False, compare=False)
    next_hop: SipURI | None = field(init=False, compare=False)
    source: Address | None = field(init=False, compare=False)
    credentials: Credentials | None = field(init=False, compare=False)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> "UacRequest":
        """From keyword arguments; an unknown key, or a missing method or ruri, is a
        UacRequestError (Kamailio's uac_req_send returns -1 for the latter)."""
        unknown = sorted(set(values) - set(FIELD_NAMES) - IGNORED_FIELDS)
        if unknown:
            raise UacRequestError(f"unknown $uac_req field(s): {', '.join(unknown)}")
        given = {name: value for name, value in values.items() if value is not None and name not in IGNORED_FIELDS}
        for required in ("method", "ruri"):
            if not given.get(required):
                raise UacRequestError(f"{required}: required")
        return cls(**given)

    def __post_init__(self) -> None:
        for name in FIELD_NAMES:
            _check_type(name, getattr(self, name))
        for name, limit in FIELD_LIMITS.items():
            value = getattr(self, name)
            size = len(value.encode("utf-8") if isinstance(value, str) else value)
            if size >= limit:
                raise UacRequestError(f"{name}: {size} bytes, must be shorter than {limit}")
        for name in ("fr_timeout", "fr_inv_timeout"):
            if getattr(self, name) < 0:
                raise UacRequestError(f"{name}: must be 0 (the default) or a number of milliseconds")
        set_ = object.__setattr__
        method = self.method
        if not is_token(method):
            raise UacRequestError(f"method: not a SIP method: {method[:40]!r}")
        if method.upper() in REFUSED_METHODS:
            raise UacRequestError(f"method: {method} is not sent by uac_req_send in txuac (no dialog handling)")
        uri = _parse("ruri", self.ruri)
        set_(self, "furi", self.furi or self.ruri)
        set_(self, "turi", self.turi or self.ruri)
        for name in ("furi", "turi"):
            _parse(name, getattr(self, name))
        next_hop = None
        if self.ouri:
            next_hop = _parse("ouri", self.ouri)
            if not isinstance(next_hop, SipURI):
                raise UacRequestError(f"ouri: must be a sip: or sips: URI, got {self.ouri[:64]!r}")
        elif not isinstance(uri, SipURI):
            raise UacRequestError("ruri: a non-SIP Request-URI needs ouri (the next hop)")
        set_(self, "uri", uri)
        set_(self, "next_hop", next_hop)
        set_(self, "headers", _header_lines(self.hdrs))
        set_(self, "source", socket_address(self.sock, "sock") if self.sock else None)
        if self.callid and any(c in self.callid for c in " \t\r\n"):
            raise UacRequestError("callid: must not contain white space")
        set_(self, "callid", self.callid or token_hex(16))
        for name in ("ftag", "ttag"):
            tag = getattr(self, name)
            if tag and not is_token(tag):
                raise UacRequestError(f"{name}: not a tag (RFC 3261 token): {tag[:40]!r}")
        set_(self, "cseqno", self.cseqno if self.cseqno > 0 else DEFAULT_CSEQ)
        set_(self, "credentials", self._credentials())

    def _credentials(self) -> Credentials | None:
        """Kamailio answers a challenge only with both auser and apasswd (any realm)."""
        if not (self.auser and self.apasswd):
            return None
        try:
            if self.flags & FLAG_HA1:
                return Credentials(self.auser, ha1=self.apasswd)
            return Credentials(self.auser, password=self.apasswd)
        except AuthenticationError:
            # Shorter than 64: only an MD5 HA1 fits Kamailio's buffer.
            raise UacRequestError("apasswd: with flags bit 0 it must be an HA1 of 32 hex digits") from None

    @property
    def answers_challenges(self) -> bool:
        """Whether a 401/407 is answered (never with evroute 2, K:uac_send.c)."""
        return self.credentials is not None and self.evroute != EVROUTE_FAILURE

    @property
    def timeout(self) -> float | None:
        """The transaction's final response timeout in seconds (None: Timer F)."""
        return self.fr_timeout / 1000.0 if self.fr_timeout else None

    def build(self) -> Request:
        """The first request (RFC 3261 8.1.1): From with ``ftag`` or a fresh tag, To with
        ``ttag`` when given, the hdrs, the body."""
        body = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
        request = make_request(self.method, self.uri, self.furi, self.turi, from_tag=self.ftag or None,
                               call_id=self.callid, cseq=self.cseqno, extra_headers=self.headers, body=body)
        if self.ttag:
            request.headers.set("To", f"{request.headers.get('To')};tag={self.ttag}")
        return request

    def __repr__(self) -> str:
        shown = []
        for name in FIELD_NAMES:
            value = getattr(self, name)
            if name in ("method", "ruri") or value != _DEFAULTS[name]:
                shown.append(f"{name}=***" if name in _SECRET_FIELDS else f"{name}={value!r}")
        return f"UacRequest({', '.join(shown)})"


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(UacRequest) if f.init)
_DEFAULTS = {f.name: f.default for f in fields(UacRequest) if f.init}


def _check_type(name: str, value: Any) -> None:
    if name in INTEGER_FIELDS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UacRequestError(f"{name}: expected an integer, got {type(value).__name__}")
    elif not isinstance(value, str) and not (name == "body" and isinstance(value, bytes)):
        raise UacRequestError(f"{name}: expected a string, got {type(value).__name__}")


def _parse(name: str, text: str) -> URI:
    try:
        return parse_uri(text, name)
    except SIPParseError as e:
        raise UacRequestError(f"{name}: {e.reason}") from None


def _header_lines(hdrs: str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` lines, CRLF-terminated in Kamailio (a bare LF or a missing last
    CRLF is accepted); a line starting with white space continues the previous one."""
    lines: list[tuple[str, str]] = []
    for line in hdrs.replace("\r\n", "\n").split("\n"):
        if not line.strip(" \t"):
            continue
        if "\r" in line:
            raise UacRequestError("hdrs: a bare CR")
        if line[0] in " \t":
            if not lines:
                raise UacRequestError("hdrs: a continuation line before the first header")
            name, value = lines[-1]
            continuation = line.strip(" \t")
            lines[-1] = (name, f"{value} {continuation}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip(" \t")
        if not colon or not is_token(name):
            raise UacRequestError(f"hdrs: not a header line: {line[:40]!r}")
        if header_key(name) in FIELD_HEADERS:
            raise UacRequestError(f"hdrs: {name} comes from the $uac_req fields, not from hdrs")
        lines.append((name, value.strip(" \t")))
    return tuple(lines)


def socket_address(text: str, where: str) -> Address:
    """A ``proto:ip:port`` socket (Kamailio's sock, default_socket) as a source Address."""
    try:
        return parse_listen(text).address
    except InvalidListenSpec as e:
        raise UacRequestError(f"{where}: {e}") from None


@dataclass(frozen=True, repr=False)
class UacReplyEvent:
    """What ``event_route[uac:reply]`` sees: the fields of the request sent (read through,
    ``event.ruri``, ``event.evparam``), ``evcode``, ``evtype`` (1 a reply, 2 local) and
    the reply (None for evtype 2)."""

    request: UacRequest
    evcode: int
    evtype: int
    response: Response | None = None

    def __getattr__(self, name: str) -> Any:
        if name in FIELD_NAMES:
            return getattr(self.request, name)
        raise AttributeError(f"UacReplyEvent has no {name!r} (the $uac_req keys: {', '.join(FIELD_NAMES)})")

    def __repr__(self) -> str:
        return f"UacReplyEvent(evcode={self.evcode}, evtype={self.evtype}, request={self.request!r})"


EventHandler = Callable[[UacReplyEvent], None]


class RequestSender:
    """Sends UacRequests through ``stack`` (see the module docstring).

    ``nonces``: the service's nonce counter (nc per nonce); ``algorithms``: the digest
    allow-list; ``default_socket``: ``[uac] default_socket`` for requests without sock;
    ``on_event``: where the events go (None: nowhere, the Deferred only).
    """

    def __init__(self, stack: ISIPStack, nonces: NonceCounter | None = None,
                 algorithms: tuple[str, ...] = ALL_ALGORITHMS, default_socket: str | None = None,
                 on_event: EventHandler | None = None):
        self.stack = stack
        self.nonces = nonces if nonces is not None else NonceCounter()
        self.algorithms = algorithms
        self.default_source = socket_address(default_socket, "[uac] default_socket") if default_socket else None
        self.on_event = on_event

    def send(self, request: UacRequest) -> defer.Deferred:
        """Deferred[UacReplyEvent]: the final event (fired whatever evroute says)."""
        return _Exchange(self, request).start()

    def deliver(self, event: UacReplyEvent) -> None:
        """Give ``event`` to ``on_event`` when its evroute asks for it."""
        evroute = event.request.evroute
        if self.on_event is None or evroute == EVROUTE_NONE:
            return
        if evroute == EVROUTE_FAILURE and event.evtype == EVTYPE_REPLY and event.evcode < 300:
            return
        try:
            self.on_event(event)
        except Exception:
            log.failure("uac:reply event handler failed for {method} {ruri}", method=event.request.method,
                        ruri=event.request.ruri)


class _Exchange:
    """One uac_req_send: the first request and at most one authenticated retry."""

    def __init__(self, sender: RequestSender, request: UacRequest):
        self.sender = sender
        self.request = request
        self.source = request.source or sender.default_source
        self.result: defer.Deferred = defer.Deferred()

    def start(self) -> defer.Deferred:
        self._send(self.request.build(), retried=False)
        return self.result

    def _send(self, sip: Request, retried: bool) -> None:
        sending = self.sender.stack.start_request(sip, self.request.next_hop, None, self.source, self.request.timeout)
        sending.deferred.addCallbacks(self._replied, self._failed, callbackArgs=(sip, retried, sending))
        sending.deferred.addErrback(self._bug)

    def _replied(self, response: Response, sent: Request, retried: bool, sending: ClientRequest) -> None:
        event = UacReplyEvent(self.request, response.status, EVTYPE_REPLY, response)
        retry = None
        if response.status in (401, 407) and not retried and self.request.answers_challenges:
            retry = self._authorized(sent, response, sending.origin)
        self.sender.deliver(event)  # K:uac_send.c: the event route runs before the retry
        if retry is not None:
            self._send(retry, retried=True)
        else:
            self.result.callback(event)

    def _failed(self, failure) -> None:
        error = failure.trap(TransactionTimeout, TransportError, ResolutionError)
        code = {TransactionTimeout: LOCAL_TIMEOUT, ResolutionError: LOCAL_UNRESOLVABLE}.get(error, LOCAL_SEND_FAILED)
        log.info("uac_req_send {method} {ruri}: {code} ({error})", method=self.request.method,
                 ruri=self.request.ruri, code=code, error=failure.getErrorMessage())
        event = UacReplyEvent(self.request, code, EVTYPE_LOCAL)
        self.sender.deliver(event)
        self.result.callback(event)

    def _bug(self, failure) -> None:
        log.failure("uac_req_send {method} {ruri} failed", failure, method=self.request.method,
                    ruri=self.request.ruri)
        if not self.result.called:
            self.result.callback(UacReplyEvent(self.request, LOCAL_SEND_FAILED, EVTYPE_LOCAL))

    def _authorized(self, sent: Request, response: Response, origin: ResponseOrigin | None) -> Request | None:
        """The retry answering ``response`` (RFC 3261 22.2), or None when it cannot be
        (``origin``: where it came from)."""
        request = self.request
        assert request.credentials is not None  # answers_challenges
        refused = challenge_origin(origin)
        if refused is not None:
            log.warn("uac_req_send {method} {ruri}: {status} {refused}", method=request.method,
                     ruri=request.ruri, status=response.status, refused=refused)
            return None
        try:
            challenge, credentials = choose_challenge(parse_challenges(response),
                                                      FixedCredentials(request.credentials).credentials_for,
                                                      self.sender.algorithms)
        except AuthenticationError as e:
            log.info("uac_req_send {method} {ruri}: {status} not answered: {reason}", method=request.method,
                     ruri=request.ruri, status=response.status, reason=str(e))
            return None
        value = authorization(challenge, credentials, request.method, request.ruri, sent.body,
                              nc=self.sender.nonces.next(challenge.nonce))
        cseq = response.cseq.number + 1 if response.cseq is not None else request.cseqno + 1
        return authorized_retry(sent, [(challenge, value)], cseq)


def send_from_script(sender: RequestSender | None, values: Mapping[str, Any]) -> int:
    """``uac.uac_req_send(**values)``: 1 when sent, -1 for a bad field (logged once,
    without values that could be secret) or without a sender."""
    if sender is None:
        log.error("uac_req_send: no request sender here (the proxy gives one to its routes)")
        return -1
    try:
        request = UacRequest.from_fields(values)
    except UacRequestError as e:
        log.info("uac_req_send: {error}", error=str(e))
        return -1
    sender.send(request)
    return 1


# --- the routing script's side ---------------------------------------------------------
def event_handler(routes: RouteTable, event_callback: str | None) -> Route | None:
    """What runs for a uac:reply event: the script function named ``event_callback``
    (ConfigError naming the script when it is missing or cannot take the arguments),
    else ``@event_route("uac:reply")``, else nothing."""
    if not event_callback:
        return routes.events.get(EVENT_NAME)
    where = f"{routes.path}: [routing] event_callback {event_callback!r}"
    function = getattr(routes.module, event_callback, None)
    if function is None or not callable(function):
        raise ConfigError(f"{where}: no such function in the routing script")
    try:
        inspect.signature(function).bind(EVENT_NAME, *ROUTE_PARAMETERS)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must accept (event_name, {', '.join(ROUTE_PARAMETERS)})") from None
    code = getattr(function, "__code__", None)
    return Route(RouteKind.EVENT, EVENT_NAME, function, routes.path, code.co_firstlineno if code else 0)


class OutsideTransaction:
    """``tm``, ``rr``, ``dialog`` and ``sl`` in event_route[uac:reply]: there is no
    request or transaction to act on, so every function raises RouteContextError."""

    def __init__(self, namespace: str):
        self._namespace = namespace

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RouteContextError(f"{self._namespace}.{name}() cannot be used from event_route[{EVENT_NAME}]: "
                                    f"there is no request there")
        return unavailable


class ScriptEvents:
    """An ``on_event`` handler running the script's event callback or event route with
    ``(event, uac, tm, rr, dialog, sl)``; ``make_uac()`` gives the ``uac`` namespace
    (its uac_req_send works there). An exception in the script is logged once with its
    traceback and counted in ``failures`` (and by ``on_failure``, the proxy's count)."""

    def __init__(self, routes: RouteTable, event_callback: str | None, make_uac: Callable[[], Any],
                 on_failure: Callable[[], None] | None = None):
        self.route = event_handler(routes, event_callback)
        self.with_name = bool(event_callback)
        self.make_uac = make_uac
        self.on_failure = on_failure
        self.failures = 0

    def __call__(self, event: UacReplyEvent) -> None:
        route = self.route
        if route is None:
            return  # Kamailio: silently nothing without an event route
        args: tuple = (event, self.make_uac(), *(OutsideTransaction(name) for name in ("tm", "rr", "dialog", "sl")))
        if self.with_name:
            args = (EVENT_NAME, *args)
        result = call_route(route, *args)
        if isinstance(result, ScriptFailure):
            self.failures += 1
            if self.on_failure is not None:
                self.on_failure()
            log.error("routing script failed in {route} for {method} {ruri} ({evcode}):\n{traceback}",
                      route=route.label, method=event.request.method, ruri=event.request.ruri,
                      evcode=event.evcode, traceback=result.traceback)


__all__ = ["EVENT_NAME", "FIELD_LIMITS", "FIELD_NAMES", "OutsideTransaction", "RequestSender", "ScriptEvents",
           "UacReplyEvent", "UacRequest", "event_handler", "send_from_script", "socket_address"]
