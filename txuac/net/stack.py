"""The SIP stack on Twisted: transactions bound to transports, timers and targets.

``SIPStack.send_request(request, target) -> Deferred[Response]`` runs a client
transaction; incoming requests get a server transaction and go to the
handler registered for their method, or to the default behaviour (OPTIONS
answered, other methods refused).

Hooks for a proxy (RFC 3261 16):

- ``set_cancel_handler(handler)``: by default the stack answers a CANCEL itself
  (481 without a matching INVITE server transaction, else 200 and a 487 to the
  INVITE). With a handler, a CANCEL that matches a pending INVITE is answered 200
  by the stack (9.2, with the INVITE's To tag) and handed to
  ``handler(cancel, invite)``, the INVITE marked ``cancelled``; the stack sends no
  487: the proxy cancels its branches and relays the 487 that comes back, or makes
  one when no branch remains (16.10). A CANCEL matching nothing is handed over with
  ``invite=None``; the stack answers it 481 unless the handler returns True, which
  means it keeps the CANCEL (forwards it, 16.10's last paragraph, and answers it
  through ``cancel.send``/``cancel.respond`` itself).
- ``IncomingRequest.suppress_trying()``: an INVITE handler that sends its own 100
  (16.2) or none at all turns off the stack's automatic one (17.2.1).
- ``send_stateless(request, target)``: a request sent as it is, without a
  transaction: the ACK for a 2xx a proxy forwards (16.11, RFC 6026 7.1). An ACK for a
  non-2xx final response is absorbed by its INVITE server transaction (17.2.1) and
  never reaches a handler; an ACK matching no transaction (the 2xx one) goes to the
  ACK handler with ``transaction`` None.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import classImplements

from txuac import __version__
from txuac.errors import ResolutionError, SIPParseError, TransactionTimeout, TransportError
from txuac.net.datagrams import UDPChannel
from txuac.net.interfaces import ISIPStack
from txuac.net.resolver import TargetResolver, next_hop_uri
from txuac.net.timers import DeadlineTimer, ExpiringKeys
from txuac.ratelimitedlog import RateLimitedLog
from txuac.net.transports import (
    Channel,
    ConnectionPool,
    PendingConnection,
    StreamConnection,
    UDPListener,
)
from txuac.sip.message import Message, Request, Response, make_response
from txuac.sip.methods import KNOWN_METHODS
from txuac.sip.parser import ParserLimits, parse_message
from txuac.sip.server_rules import (
    CancelMatch,
    default_answer,
    invite_key_for_cancel,
    malformed_answer,
    match_cancel,
    needs_automatic_trying,
)
from txuac.sip.tokens import token_hex
from txuac.sip.uri import SipURI
from txuac.sip.transaction import (
    ClientTransaction,
    Deliver,
    Ended,
    ServerTransaction,
    TimedOut,
    TimerSettings,
    Transmit,
    TransportFailed,
    client_key_for_response,
    server_key,
)
from txuac.sip.address import Address, ResponseOrigin, bare_host
from txuac.sip.via import make_via, response_address, stamp_received

log = Logger(namespace=__name__)  # named: a compiled module has no frame to infer it from

SERVER_HEADER = f"txuac/{__version__}"

RequestHandler = Callable[["IncomingRequest"], None]
# (incoming CANCEL, the INVITE it cancels or None) -> True to keep an unmatched CANCEL.
CancelHandler = Callable[["IncomingRequest", "IncomingRequest | None"], "bool | None"]


class IncomingRequest:
    """A request received by the stack, with the means to answer it.

    ``cancelled`` becomes True when a CANCEL matched the (INVITE) transaction
    before it was answered finally: the stack then sent the 487 itself, or, with
    a cancel handler (``SIPStack.set_cancel_handler``), left it to the handler.
    """

    def __init__(self, stack: "SIPStack", request: Request, source: Address, transaction: ServerTransaction | None):
        self.stack = stack
        self.request = request
        self.source = source
        self.transaction = transaction
        self.cancelled = False
        self.send_trying = True  # the stack's automatic 100 for an INVITE (17.2.1)
        self._to_tag: str | None = None
        self.proxied: Any = None  # a weakref to the proxy's ProxiedRequest relaying it (txuac.routing)

    def suppress_trying(self) -> None:
        """No automatic 100 Trying for this INVITE: the handler sends its own, or none.

        Per request rather than a stack setting: the 100 belongs to whoever handles
        the INVITE. A proxy sends it when it decides to forward (RFC 3261 16.2: a
        stateful proxy may generate its own 100 Trying), possibly later than the
        handler call and with headers of its own, while a local answer
        needs none; a stack-wide switch would also silence it for other INVITE
        handlers sharing the stack. A handler that simply calls ``respond(100)``
        itself needs no call here: the stack only sends a 100 when nothing was sent.
        """
        self.send_trying = False

    @property
    def to_tag(self) -> str:
        """The To tag of every response to this request (RFC 3261 8.2.6.2), made on first use."""
        if self._to_tag is None:
            self._to_tag = token_hex(8)
        return self._to_tag

    def respond(self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"", to_tag: str | None = None) -> Response:
        """Build a response (RFC 3261 8.2.6), add ``headers``, and send it.

        A request without a To tag gets ``to_tag``, or this request's own tag,
        in every response but a 100.
        """
        extra = [("Server", self.stack.server_header), *headers]
        response = make_response(self.request, status, reason, to_tag=to_tag or self.to_tag, extra_headers=extra,
                                 body=body)
        self.send(response)
        return response

    def send(self, response: Response) -> None:
        if self.transaction is None:
            raise TransportError("an ACK cannot be answered")
        self.stack._send_response(self.transaction, response)


class ClientRequest:
    """A request ``SIPStack.start_request`` sends: ``deferred`` fires with the final response
    (as ``send_request``'s does; None when ``on_final`` was given); ``sent`` is the request as the current client transaction
    sent it (our Via on top) and ``sent_to`` where, both None until a transaction starts
    (after resolution or connecting) and replaced when the next target is tried;
    ``origin`` says where the final response of the current transaction came from, None
    until one came."""

    __slots__ = ("deferred", "sent", "sent_to", "origin")

    def __init__(self, deferred: bool = True) -> None:
        if deferred:  # start_request sets the one its transaction fires: a Deferred less per request
            self.deferred: defer.Deferred | None = defer.Deferred()
        self.sent: Request | None = None
        self.sent_to: Address | None = None
        self.origin: ResponseOrigin | None = None

    @property
    def branch(self) -> str | None:
        """The branch of our Via: the client transaction's key (RFC 3261 17.1.3)."""
        via = self.sent.top_via if self.sent is not None else None
        return via.branch if via is not None else None


class _Outcome:
    """A client transaction's final outcome for ``start_request``'s ``on_final``: what the
    stack asks of a Deferred (``called``, ``callback``, ``errback``), as one plain call."""

    __slots__ = ("on_final", "handle", "called", "expiry", "target", "_waiting")

    def __init__(self, on_final: "Callable[[Response | Failure, ClientRequest], None]", handle: "ClientRequest",
                 target: Address | None = None):
        self.on_final: "Callable[[Response | Failure, ClientRequest], None] | None" = on_final
        self.handle: "ClientRequest | None" = handle  # let go once told
        self.called = False
        self.expiry: Any = None  # an IDelayedCall: the caller's timeout, cancelled by the outcome
        self.target = target  # a next hop resolved here: its timeout or transport error is logged
        self._waiting: list[defer.Deferred] | None = None

    def callback(self, response: Response) -> None:
        self._fire(response)

    def errback(self, error: "Exception | Failure") -> None:
        self._fire(error if isinstance(error, Failure) else Failure(error))

    def fired(self) -> defer.Deferred:
        """A Deferred that fires with None once the outcome is given (``stop`` waits on it)."""
        d: defer.Deferred = defer.Deferred()
        if self.called:
            d.callback(None)
        else:
            if self._waiting is None:
                self._waiting = []
            self._waiting.append(d)
        return d

    def _fire(self, result: "Response | Failure") -> None:
        self.called = True
        expiry = self.expiry
        if expiry is not None and expiry.active():
            expiry.cancel()
        on_final, self.on_final = self.on_final, None  # what it holds goes once told, as a Deferred's callbacks
        handle, self.handle = self.handle, None
        method = handle.sent.method if handle is not None and handle.sent is not None else None
        if self.target is not None and isinstance(result, Failure) and result.check(TransactionTimeout, TransportError):
            _log_target_failed(method, self.target, result.value)
        try:
            on_final(result, handle)  # type: ignore[misc, arg-type]  # both set until this one call
        except Exception:
            log.failure("on_final callback for {method} failed", method=method)
        waiting, self._waiting = self._waiting, None
        for d in waiting or ():
            d.callback(None)


class _ClientCall:
    """What the stack keeps for one client transaction (``key``: its entry in ``SIPStack._client``;
    ``target``: where its request is sent; ``handle``: the ClientRequest told of it, if any)."""

    __slots__ = ("transaction", "channel", "deferred", "on_provisional", "key", "target", "handle")

    def __init__(self, transaction: ClientTransaction, channel: Channel, deferred: "defer.Deferred | _Outcome",
                 on_provisional: Callable[[Response], None] | None, key: tuple[str, str], target: Address,
                 handle: "ClientRequest | None"):
        self.transaction = transaction
        self.channel = channel
        self.deferred = deferred
        self.on_provisional = on_provisional
        self.key = key
        self.target = target
        self.handle = handle



def _notify(call: "_ClientCall", response: Response) -> None:
    """``on_provisional`` of the call, which must not break the stack when it raises."""
    if call.on_provisional is not None:
        try:
            call.on_provisional(response)
        except Exception:
            log.failure("on_provisional callback for {method} failed", method=call.transaction.method)

class SIPStack:
    """Transactions, transports and dispatch. Create, ``listen()``, use, ``stop()``."""

    def __init__(self, reactor, timers: TimerSettings = TimerSettings(), limits: ParserLimits = ParserLimits(),
                 resolver: TargetResolver | None = None, idle_timeout: float = 600.0,
                 tls_client_options=None, user_agent: str = "txuac", keepalive_interval: float = 0.0):
        self.reactor = reactor
        self.timers = timers
        # The timers with_t2 last made, and from what: a registrant asks for the same T2 on
        # every REGISTER, and making them again each time was a share of its cycle.
        self._lowered: tuple[TimerSettings, float, TimerSettings] | None = None
        self.limits = limits
        self.resolver = resolver if resolver is not None else TargetResolver(reactor)
        self.server_header = SERVER_HEADER if user_agent == "txuac" else user_agent
        # keepalive_interval: seconds between RFC 5626 CRLF keep-alives on connections we open (0: none).
        self.pool = ConnectionPool(reactor, self, limits, idle_timeout, tls_client_options,
                                   keepalive_interval=keepalive_interval)
        self.udp_listeners: list[UDPListener] = []
        self.stream_listeners: dict[str, Address] = {}
        self.handlers: dict[str, RequestHandler] = {}
        self.cancel_handler: CancelHandler | None = None
        self._client: dict[tuple[str, str], _ClientCall] = {}
        # IncomingRequest None: a non-INVITE answered finally (_keep_answer_only).
        self._server: dict[tuple, tuple[ServerTransaction, Channel, IncomingRequest | None]] = {}
        # Transaction timers: one reactor timer for all of them (see _schedule).
        self._timers = DeadlineTimer(reactor, before_fire=self._read_udp)
        # Completed non-INVITE client transactions waiting out Timer K: only their keys
        # (see _absorb).
        self._absorbed: ExpiringKeys[tuple[str, str]] = ExpiringKeys(reactor)
        self._stopping = False
        self._stopped = False
        self.retransmissions = 0  # requests and responses sent again by a transaction timer or a retransmission
        # For metrics: transactions by (method, outcome), method one of KNOWN_METHODS or
        # "other", outcome "2xx".."6xx", "timeout" or "transport_error"; messages dropped
        # or refused as malformed.
        self.client_outcomes: Counter[tuple[str, str]] = Counter()
        self.server_outcomes: Counter[tuple[str, str]] = Counter()
        self.parse_errors = 0
        # What any peer can make us log (malformed messages), at most a line per kind per 10 s.
        self.input_log = RateLimitedLog(log, reactor)

    @property
    def _absorbing(self) -> dict[tuple[str, str], float]:
        """Key -> Timer K deadline of the Completed non-INVITE transactions kept as keys."""
        return self._absorbed.deadlines

    # --- configuration ----------------------------------------------------------------
    def add_udp_listener(self, listener: UDPListener) -> None:
        self.udp_listeners.append(listener)

    def _read_udp(self) -> None:
        """Read the datagrams waiting on the UDP sockets (before transaction timers fire):
        a request whose answer is already here is not sent again, and its server does not
        have to answer it again, which matters most when the process is busy. A worker's
        own socket (``requests_from``) is where its answers come: read too."""
        for listener in self.udp_listeners:
            for socket in (listener, listener.requests_from):
                port = socket.transport if socket is not None else None
                if port is not None and IReadDescriptor.providedBy(port):
                    port.doRead()

    def add_stream_listener(self, address: Address) -> None:
        self.stream_listeners[address.transport] = address

    def set_handler(self, method: str, handler: RequestHandler | None) -> None:
        """Route incoming ``method`` requests to ``handler`` (None restores the default)."""
        if handler is None:
            self.handlers.pop(method.upper(), None)
        else:
            self.handlers[method.upper()] = handler

    def set_cancel_handler(self, handler: CancelHandler | None) -> None:
        """Hand CANCELs to ``handler(cancel, invite)`` instead of answering them 487 here
        (None restores the default); see the module docstring and ``_cancel``."""
        self.cancel_handler = handler

    @property
    def allowed_methods(self) -> list[str]:
        return sorted({"OPTIONS", "ACK", "CANCEL", *self.handlers})

    # --- client side -------------------------------------------------------------------
    def start_request(self, request: Request, target: Address | SipURI | None = None,
                      on_provisional: Callable[[Response], None] | None = None,
                      source: Address | None = None, timeout: float | None = None,
                      keep_via: bool = False, t2: float | None = None,
                      on_final: "Callable[[Response | Failure, ClientRequest], None] | None" = None) -> "ClientRequest":
        """``send_request`` that returns a ClientRequest: its ``deferred`` is what
        send_request returns, and it tells the branch and target of the transaction
        carrying the request (a proxy's CANCEL of the branch needs both, RFC 3261 9.1).

        With ``on_final``, the outcome goes to ``on_final(response or Failure, the
        ClientRequest)`` instead, once, and ``deferred`` is None: a Deferred and its
        callbacks were a share of a REGISTER cycle at thousands a second."""
        handle = ClientRequest(deferred=False)
        if on_final is None:
            handle.deferred = self._send(request, target, on_provisional, source, timeout, keep_via, handle, t2)
            return handle
        handle.deferred = None
        address = None if self._stopping or (keep_via and not isinstance(target, Address)) else \
            self.udp_target_now(request, target)
        if address is not None:
            outcome = _Outcome(on_final, handle, None if isinstance(target, Address) else address)
            self._send_once(request.copy(), address, on_provisional, source, timeout, keep_via, handle=handle, t2=t2,
                            outcome=outcome)
            return handle
        # Resolved or connected first: the same outcome (a raising on_final logged, not left
        # in a Deferred), fired by the Deferred of that path.
        outcome = _Outcome(on_final, handle)
        self._send(request, target, on_provisional, source, timeout, keep_via, handle, t2).addCallbacks(
            outcome.callback, outcome.errback)
        return handle

    def udp_target_now(self, request: Request, target: Address | SipURI | None = None) -> Address | None:
        """Where ``request`` goes when that is known without a Deferred and is a UDP
        Address: ``target`` itself, or the IP address of ``target`` or of the request's
        next hop (one target, so there is nothing to fail over to); None when it must be
        resolved or connected to first (``resolver.resolve_uri``, which also says why a
        URI cannot be used)."""
        if isinstance(target, Address):
            return target if target.transport == "udp" else None
        try:
            address = self.resolver.literal_target(target if target is not None else next_hop_uri(request))
        except ResolutionError:
            return None  # the resolving path fails the request with it
        return address if address is not None and address.transport == "udp" else None

    def send_request(self, request: Request, target: Address | SipURI | None = None,
                     on_provisional: Callable[[Response], None] | None = None,
                     source: Address | None = None, timeout: float | None = None,
                     keep_via: bool = False, t2: float | None = None) -> defer.Deferred:
        """Send ``request`` in a new client transaction.

        The Deferred fires with the final response, or fails with
        TransactionTimeout, TransportError or a ResolutionError.
        ``on_provisional`` gets the 1xx, and for an INVITE the 2xx that come after the
        first (retransmissions, other forks: RFC 6026 7.2, for a proxy to forward). ``target`` is
        an Address to send to, or a SIP URI of the next hop (an outbound proxy:
        resolved by RFC 3263, never written into the request); with none, the
        next hop comes from the top Route or the Request-URI. On a transport
        error, a timeout or a 503 the next resolved target is tried with a
        fresh branch. ``source`` picks the local UDP socket to send from (Kamailio's
        ``socket`` column and ``default_socket``); by default the first one of the
        target's address family. ``timeout`` (seconds) fails a transaction with
        TransactionTimeout when no final response came by then, before Timer B/F
        (Kamailio's per-transaction fr_timer); each target tried gets its own.
        ``keep_via``: the request's top Via is ours already and its branch keys the
        transaction (a proxy's CANCEL of a branch, RFC 3261 9.1: the branch of the
        INVITE it cancels); ``target`` must then be an Address.
        ``t2`` (seconds): this request's RFC 3261 T2, the cap on its retransmission
        interval over UDP (17.1.2.2), for its first retransmissions, then the stack's again
        (``TimerSettings.with_t2``).
        """
        return self._send(request, target, on_provisional, source, timeout, keep_via, None, t2)

    def _send(self, request: Request, target: Address | SipURI | None, on_provisional,
              source: Address | None, timeout: float | None, keep_via: bool,
              handle: "ClientRequest | None", t2: float | None = None) -> defer.Deferred:
        if self._stopping:
            return defer.fail(TransportError("the SIP stack is stopping"))
        if isinstance(target, Address):
            return cast(defer.Deferred, self._send_once(request.copy(), target, on_provisional, source, timeout,
                                                        keep_via, handle=handle, t2=t2))
        if keep_via:
            raise ValueError("keep_via needs the Address the request goes to")
        server_name = None
        if target is not None:
            # RFC 5922 4.1: a TLS server is identified by the host of the URI resolved to
            # reach it: an outbound proxy's own host, not the Request-URI's domain.
            server_name = bare_host(target.host)
            targets = self.resolver.resolve_uri(target)
        else:
            targets = self.resolver.resolve_request(request)
        return targets.addCallback(self._try_targets, request, on_provisional, source, timeout, server_name, handle,
                                   t2)

    def _try_targets(self, targets: list[Address], request: Request, on_provisional, source: Address | None,
                     timeout: float | None = None, server_name: str | None = None,
                     handle: "ClientRequest | None" = None, t2: float | None = None, index: int = 0,
                     last_error: Exception | None = None) -> defer.Deferred:
        """``request`` to ``targets[index]``, and on a timeout, a transport error or a 503 to
        the next one (plain callbacks rather than a generator: every relayed request comes
        here)."""
        if index >= len(targets) or (index and self._stopping):  # no failover once stop() was called
            return defer.fail(last_error if last_error is not None else TransportError("no target to send to"))
        target = targets[index]
        attempt = request.copy()

        def answered(response: Response):
            if response.status == 503 and index + 1 < len(targets):
                log.info("{method} to {target} got 503, trying the next target", method=request.method, target=target)
                return self._try_targets(targets, request, on_provisional, source, timeout, server_name, handle, t2,
                                         index + 1, last_error)
            return response

        def failed(failure):
            failure.trap(TransactionTimeout, TransportError)
            error = failure.value
            _log_target_failed(request.method, target, error)
            return self._try_targets(targets, request, on_provisional, source, timeout, server_name, handle, t2,
                                     index + 1, error)

        d = cast(defer.Deferred, self._send_once(attempt, target, on_provisional, source, timeout,
                                                 server_name=server_name, handle=handle, t2=t2))
        return d.addCallbacks(answered, failed)

    def _send_once(self, request: Request, target: Address, on_provisional,
                   source: Address | None = None, timeout: float | None = None,
                   keep_via: bool = False, server_name: str | None = None,
                   handle: "ClientRequest | None" = None, t2: float | None = None,
                   outcome: "_Outcome | None" = None) -> "defer.Deferred | _Outcome":
        """One client transaction to ``target`` (``request`` is ours to add the Via to);
        ``server_name``: what a TLS certificate must name, by default the request's next hop.
        ``outcome`` (UDP only): what the transaction fires instead of a Deferred."""
        if target.transport == "udp":
            try:
                return self._start_client(UDPChannel(self._udp_listener_for(target, source), target), request,
                                          target, on_provisional, timeout, keep_via, handle, t2, outcome)
            except TransportError:
                if outcome is None:
                    return defer.fail()
                outcome.errback(Failure())
                return outcome
        try:
            if target.transport != "tls":
                server_name = None
            elif server_name is None:
                server_name = self.resolver.server_name(request)
        except ResolutionError:
            return defer.fail()
        d = self.pool.connect(target, server_name=server_name)
        return d.addCallback(self._start_client, request, target, on_provisional, timeout, keep_via, handle, t2)

    def send_stateless(self, request: Request, target: Address, source: Address | None = None) -> defer.Deferred:
        """Send ``request`` as it is to ``target``, without a transaction (RFC 3261 16.11:
        a proxy forwards an ACK for a 2xx statelessly, with its own Via already on top).

        Fires with None once the bytes are handed to the transport, or fails with a
        TransportError (or a ResolutionError for a TLS server name). Nothing is
        retransmitted. ``source`` as for ``send_request``.
        """
        if self._stopping:
            return defer.fail(TransportError("the SIP stack is stopping"))
        if target.transport == "udp":
            try:
                self.send_stateless_udp(request, target, source)
            except TransportError:
                return defer.fail()
            return defer.succeed(None)
        data = _stateless_bytes(request)
        try:
            server_name = self.resolver.server_name(request) if target.transport == "tls" else None
        except ResolutionError:
            return defer.fail()
        return self.pool.connect(target, server_name=server_name).addCallback(lambda channel: channel.send(data))

    def send_stateless_udp(self, request: Request, target: Address, source: Address | None = None) -> None:
        """``send_stateless`` to a UDP ``target`` without a Deferred (a proxy forwards an
        ACK for every call): TransportError, raised, when it cannot be sent."""
        if self._stopping:
            raise TransportError("the SIP stack is stopping")
        UDPChannel(self._udp_listener_for(target, source), target).send(_stateless_bytes(request))

    def _udp_listener_for(self, target: Address, source: Address | None = None) -> UDPListener:
        """The socket a request goes out from: ``source``'s, or the first of the target's
        family; a worker's own socket instead of a shared one (``requests_from``)."""
        listener = self._udp_listener_named(target, source)
        return listener.requests_from or listener

    def _udp_listener_named(self, target: Address, source: Address | None) -> UDPListener:
        if source is not None and source.transport == "udp":
            for listener in self.udp_listeners:
                if (listener.host, listener.port) == (source.host, source.port):
                    return listener
            raise TransportError(f"udp:{source.host}:{source.port} is not one of our sockets")
        want_v6 = ":" in target.host
        for listener in self.udp_listeners:
            if (":" in listener.host) == want_v6:
                return listener
        raise TransportError(f"no UDP socket of the right address family for {target.host}")

    def _start_client(self, channel: Channel, request: Request, target: Address, on_provisional,
                      timeout: float | None = None, keep_via: bool = False,
                      handle: "ClientRequest | None" = None, t2: float | None = None,
                      outcome: "_Outcome | None" = None) -> "defer.Deferred | _Outcome":
        """Start the client transaction; what it fires: a new Deferred, or ``outcome``."""
        if self._stopped:
            raise TransportError("the SIP stack stopped")  # a connection completed after stop()
        _ensure_content_length(request)
        if keep_via:
            via = request.top_via
            if via is None:
                raise ValueError("keep_via: the request has no Via")
        else:
            local = self.stream_listeners.get(target.transport, channel.local)
            via = make_via(target.transport, local.host, local.port)
            request.push_via(via)
        if handle is not None:
            handle.sent, handle.sent_to, handle.origin = request, target, None
        timers = self.timers if t2 is None else self._timers_with_t2(t2)
        transaction = ClientTransaction(request, reliable=target.reliable, timers=timers)
        d: "defer.Deferred | _Outcome" = outcome if outcome is not None else defer.Deferred()
        call = _ClientCall(transaction, channel, d, on_provisional, (via.branch or "", request.method), target,  # 17.1.3
                           handle)
        self._client[call.key] = call
        if timeout is not None:
            expiry = self.reactor.callLater(timeout, self._final_response_timeout, call, timeout)
            if outcome is not None:
                outcome.expiry = expiry
            else:
                d.addBoth(_cancelling(expiry))  # type: ignore[union-attr]
        self._apply_client(call, transaction.start(self.reactor.seconds()))
        return d

    def _timers_with_t2(self, t2: float) -> TimerSettings:
        lowered = self._lowered
        if lowered is None or lowered[0] is not self.timers or lowered[1] != t2:
            lowered = self._lowered = (self.timers, t2, self.timers.with_t2(t2))
        return lowered[2]

    def _final_response_timeout(self, call: _ClientCall, timeout: float) -> None:
        """The caller's timeout ran out before Timer B/F (ClientTransaction.abandon)."""
        if call.deferred.called:
            return
        self._apply_client(call, call.transaction.abandon(self.reactor.seconds(), timeout))

    def _apply_client(self, call: _ClientCall, effects, source: Address | None = None) -> None:
        """Carry out a client transaction's effects; ``source``: where the response that
        made them came from."""
        transaction = call.transaction
        for effect in effects:
            if isinstance(effect, Transmit):
                self.retransmissions += effect.retransmission
                try:
                    call.channel.send(effect.data)
                except TransportError as e:
                    self._client_failed(call, e)
                    return
            elif isinstance(effect, Deliver):
                response = effect.response
                if response.status < 200:
                    _notify(call, response)
                elif not call.deferred.called:
                    self.client_outcomes[(_method_label(transaction.method), _status_class(response.status))] += 1
                    if call.handle is not None and source is not None:
                        call.handle.origin = ResponseOrigin(source, call.target)
                    # The caller has the handle (and the request it sent) from now on: an
                    # INVITE transaction kept 32 s for retransmitted 2xx (Timer M) does not hold it.
                    call.handle = None
                    call.deferred.callback(response)
                else:
                    _notify(call, response)  # RFC 6026 7.2: a 2xx after the first, for the TU
            elif isinstance(effect, TimedOut):
                if not call.deferred.called:
                    self.client_outcomes[(_method_label(transaction.method), "timeout")] += 1
                    if effect.after is not None:
                        text = f"{transaction.method}: no final response within {effect.after:g} s"
                    else:
                        text = f"{transaction.method}: no final response (Timer {effect.timer})"
                    call.deferred.errback(TransactionTimeout(text))
            elif isinstance(effect, TransportFailed):
                if not call.deferred.called:
                    self.client_outcomes[(_method_label(transaction.method), "transport_error")] += 1
                    call.deferred.errback(TransportError(f"{transaction.method}: transport failed"))
            elif isinstance(effect, Ended):
                self._client.pop(call.key, None)
        if transaction.absorbing and not self._stopped:
            self._absorb(call)
        else:
            self._schedule(transaction, self._client_timer, call)

    def _absorb(self, call: _ClientCall) -> None:
        """Forget a Completed non-INVITE transaction but its key until Timer K.

        RFC 3261 17.1.2.2: in Completed it only absorbs retransmitted responses. At
        thousands of REGISTERs a second, T4 (5 s) of them would otherwise hold their
        transaction, Deferred, channel and reactor timer each; Timer K is the same
        for all, so the deadlines come in order and one timer sweeps them.
        """
        transaction = call.transaction
        self._client.pop(call.key, None)
        self._timers.disarm(transaction)
        deadline = transaction.deadline
        if deadline is not None:
            self._absorbed.add(call.key, deadline)

    def _client_timer(self, call: _ClientCall) -> None:
        self._apply_client(call, call.transaction.handle_timer(self.reactor.seconds()))

    def _client_failed(self, call: _ClientCall, error: TransportError) -> None:
        effects = call.transaction.transport_failed(self.reactor.seconds())
        if not call.deferred.called:
            self.client_outcomes[(_method_label(call.transaction.method), "transport_error")] += 1
            call.deferred.errback(error)
        self._apply_client(call, effects)

    # --- server side ---------------------------------------------------------------------
    def _send_response(self, transaction: ServerTransaction, response: Response) -> None:
        entry = self._server.get(transaction.key)
        if entry is None:
            log.debug("response {status} for a finished transaction dropped", status=response.status)
            return
        _ensure_content_length(response)
        final = response.status >= 200
        if final and not transaction.answered:
            self.server_outcomes[(_method_label(transaction.method), _status_class(response.status))] += 1
        effects = transaction.send_response(response, self.reactor.seconds())
        channel = entry[1]
        if final and not transaction.is_invite:
            channel = self._keep_answer_only(transaction, channel)
        self._apply_server(transaction, channel, effects)
        if final:
            # Kept until Timer J/L/H for retransmissions, which need the response's bytes
            # only, and no parsed views of the request (thousands wait at once).
            response.headers.drop_views()
            transaction.release_response()
            if transaction.request is not None:
                transaction.request.headers.drop_views()

    def _keep_answer_only(self, transaction: ServerTransaction, channel: Channel) -> Channel:
        """A non-INVITE transaction answered finally resends its answer to retransmitted
        requests until Timer J (RFC 3261 17.2.2): it keeps the channel to where the answer
        goes (returned, for the answer itself), not the request, nor the IncomingRequest
        (which its CANCEL would need: a non-INVITE has none)."""
        channel = self._response_channel(transaction, channel)
        self._server[transaction.key] = (transaction, channel, None)
        transaction.release_request()
        return channel

    def _apply_server(self, transaction: ServerTransaction, channel: Channel, effects) -> None:
        for effect in effects:
            if isinstance(effect, Transmit):
                self.retransmissions += effect.retransmission
                try:
                    self._response_channel(transaction, channel).send(effect.data)
                except TransportError as e:
                    log.info("response for {method} could not be sent: {error}", method=transaction.method,
                             error=str(e))
                    self._apply_server(transaction, channel, transaction.transport_failed(self.reactor.seconds()))
                    return
            elif isinstance(effect, TimedOut):
                log.info("no ACK for the final response to INVITE {call_id}",
                         call_id=transaction.request.call_id if transaction.request is not None else None)
            elif isinstance(effect, Ended):
                self._server.pop(transaction.key, None)
        self._schedule(transaction, self._server_timer, transaction, channel)

    def _server_transport_failed(self, transaction: ServerTransaction) -> None:
        entry = self._server.get(transaction.key)
        if entry is not None:
            log.info("no connection for the response to {method}", method=transaction.method)
            self._apply_server(transaction, entry[1], transaction.transport_failed(self.reactor.seconds()))

    def _server_timer(self, transaction: ServerTransaction, channel: Channel) -> None:
        self._apply_server(transaction, channel, transaction.handle_timer(self.reactor.seconds()))

    def _response_channel(self, transaction: ServerTransaction, channel: Channel) -> Channel:
        """RFC 3261 18.2.2: the same connection for streams; for UDP, received with rport
        (RFC 3581 4) or else the sent-by port."""
        request = transaction.request
        via = request.top_via if request is not None else None
        if via is None:
            # Not a request the stack accepted (validated requests have one), or one that
            # was let go once answered: ``channel`` is the one its answer went on.
            return channel
        if isinstance(channel, StreamConnection) and not channel.connected:
            entry = self._server.get(transaction.key)
            if entry is not None and isinstance(entry[1], PendingConnection):
                return entry[1]  # already reconnecting for an earlier response
            address = response_address(via, channel.transport_name)
            existing = self.pool.find(address)
            if existing is not None and existing.connected:
                return existing
            # 18.2.2: open a connection to received and the sent-by port.
            pending = PendingConnection(self.pool, address, lambda: self._server_transport_failed(transaction))
            if entry is not None:
                self._server[transaction.key] = (entry[0], pending, entry[2])
            return pending
        if isinstance(channel, UDPChannel):
            target = response_address(via, "udp")
            if target != channel.peer:
                return UDPChannel(channel.listener, target)
        return channel

    # --- receiving -----------------------------------------------------------------------
    def message_received(self, data: bytes, source: Address, channel: Channel) -> None:
        """Entry point of the transports for every datagram or framed stream message."""
        if self._stopped:
            return  # shut down: nothing is answered or logged any more
        try:
            message = parse_message(data, self.limits)
        except SIPParseError as e:
            self._malformed(data, e, source, channel, e.message if isinstance(e.message, Request) else None)
            return
        if isinstance(message, Response):
            self._response_received(message, source)
        else:
            self._request_received(cast(Request, message), source, channel)

    def _response_received(self, response: Response, source: Address) -> None:
        try:
            key = client_key_for_response(response)
        except SIPParseError as e:
            self.parse_errors += 1
            self.input_log.emit("unreadable responses", "response from {source} dropped: {error}",
                                level=LogLevel.info, source=source, error=str(e))
            return
        call = self._client.get(key) if key is not None else None
        if call is None:
            if key in self._absorbed:
                return  # a retransmitted final response: absorbed (17.1.2.2)
            log.debug("response {status} from {source} matches no transaction", status=response.status, source=source)
            return
        # RFC 3261 17.1.3 matches a response by branch alone, wherever it came from: the
        # ClientRequest tells the consumer where (ResponseOrigin).
        self._apply_client(call, call.transaction.receive(response, self.reactor.seconds()), source)

    def _request_received(self, request: Request, source: Address, channel: Channel) -> None:
        try:
            request.validate()
        except SIPParseError as e:
            self._malformed(bytes(request), e, source, channel, request)
            return
        stamp_received(request, source)
        key = server_key(request)
        existing = self._server.get(key)
        if request.method == "ACK":
            if existing is not None:
                transaction, first_channel, _ = existing
                self._apply_server(transaction, first_channel, transaction.receive(request, self.reactor.seconds()))
            else:
                self._dispatch(IncomingRequest(self, request, source, None))  # ACK for a 2xx: the TU's
            return
        if existing is not None:
            transaction, first_channel, _ = existing
            self._apply_server(transaction, first_channel, transaction.receive(request, self.reactor.seconds()))
            return
        transaction = ServerTransaction(request, reliable=source.reliable, timers=self.timers, key=key)
        incoming = IncomingRequest(self, request, source, transaction)
        self._server[transaction.key] = (transaction, channel, incoming)
        if request.method == "CANCEL":
            self._cancel(incoming)
        else:
            self._dispatch(incoming)
            if needs_automatic_trying(transaction, incoming.send_trying):
                incoming.respond(100)

    def _dispatch(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        handler = self.handlers.get(method)
        try:
            if handler is not None:
                handler(incoming)
            elif method != "ACK":
                answer = default_answer(method, self.allowed_methods, KNOWN_METHODS)
                if answer is not None:
                    incoming.respond(answer[0], headers=answer[1])
        except Exception:
            log.failure("handler for {method} failed", method=method)
            if incoming.transaction is not None and incoming.transaction.last_status is None:
                incoming.respond(500)

    def _cancel(self, incoming: IncomingRequest) -> None:
        """RFC 3261 9.2: CANCEL matches the INVITE server transaction with the same branch.

        Without a cancel handler: 481 when nothing matches, else 200 and, if the INVITE
        is still pending, a 487 to it. With one (16.10): the same 200, then the handler
        gets the CANCEL and the pending INVITE and answers the INVITE itself; an
        unmatched CANCEL goes to the handler with None and gets a 481 unless the
        handler returns True (it keeps the CANCEL). A CANCEL for an INVITE already
        answered finally only gets its 200. A failing handler: the default (487, 481).
        """
        entry = self._server.get(invite_key_for_cancel(incoming.request))
        # An INVITE's entry always has its IncomingRequest (only a non-INVITE's lets it go).
        invite_transaction, invite = (entry[0], entry[2]) if entry is not None else (None, None)
        match = match_cancel(invite_transaction if invite is not None else None)
        handler = self.cancel_handler
        if invite_transaction is None or invite is None or match is CancelMatch.NO_TRANSACTION:
            kept = False
            if handler is not None:
                try:
                    kept = handler(incoming, None) is True
                except Exception:
                    log.failure("CANCEL handler failed")
            if not kept and incoming.transaction is not None and incoming.transaction.last_status is None:
                incoming.respond(481)
            return
        # RFC 3261 9.2: the To tag of the 200 for the CANCEL should be the INVITE's.
        incoming.respond(200, to_tag=invite.to_tag)
        if match is CancelMatch.PENDING:
            invite.cancelled = True
            if handler is not None:
                try:
                    handler(incoming, invite)
                    return
                except Exception:
                    log.failure("CANCEL handler failed")
                    if invite_transaction.answered:
                        return
            invite.respond(487)

    def _malformed(self, data: bytes, error: SIPParseError, source: Address, channel: Channel,
                   request: Request | None = None) -> None:
        """Answer a malformed request with the parser's status when a response can be built."""
        self.parse_errors += 1
        self.input_log.emit("malformed messages", "malformed message from {source}: {error}",
                            source=source, error=str(error))
        try:
            response = malformed_answer(request, error, source, self.server_header)
            if response is None:
                return
            target = channel
            via = response.top_via
            if isinstance(channel, UDPChannel) and via is not None:
                target = UDPChannel(channel.listener, response_address(via, "udp"))
            target.send(bytes(response))
        except (SIPParseError, TransportError) as e:
            self.input_log.emit("unanswerable malformed requests", "no {status} sent to {source}: {error}",
                                level=LogLevel.info, status=error.status, source=source, error=str(e))

    def connection_lost(self, connection: StreamConnection) -> None:
        """Client transactions waiting on a lost connection fail at once (RFC 3261 17.1.4);
        then the connection-lost observers hear of it."""
        for call in [c for c in self._client.values() if c.channel is connection]:
            self._client_failed(call, TransportError(connection.lost_text()))
        self.pool.connection_lost(connection)

    def add_connection_lost_observer(self, observer: Callable[[Address], None]) -> None:
        """Call ``observer(peer)`` when a TCP/TLS connection is lost other than by our own
        choice (idle timeout, shutdown): the peer closed or reset it, or it failed a keep-alive."""
        self.pool.add_connection_lost_observer(observer)

    def remove_connection_lost_observer(self, observer: Callable[[Address], None]) -> None:
        self.pool.remove_connection_lost_observer(observer)

    def set_keepalive_interval(self, peer: Address, seconds: float | None) -> None:
        """RFC 5626 4.4.1: keep-alives every ``seconds`` on connections to ``peer`` (a registrar's
        Flow-Timer); None returns to the stack's ``keepalive_interval``."""
        self.pool.set_keepalive_interval(peer, seconds)

    # --- timers ----------------------------------------------------------------------------
    def _schedule(self, transaction, fire: Callable[..., None], *args) -> None:
        """Call ``fire(*args)`` at the transaction's ``deadline``; nothing once it has none
        (every transaction timer shares one reactor timer: DeadlineTimer)."""
        self._timers.arm(transaction, None if transaction.terminated else transaction.deadline, fire, *args)

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def pending_client_transactions(self) -> int:
        return sum(1 for call in self._client.values() if not call.deferred.called)

    def stop(self, grace: float | None = None) -> defer.Deferred:
        """Refuse new requests, wait (at most 64*T1) for pending client transactions, then
        cancel every timer and close the connections."""
        self._stopping = True
        pending = [call.deferred for call in self._client.values() if not call.deferred.called]
        waits = [d.fired() if isinstance(d, _Outcome) else _quietly(d) for d in pending]
        done = defer.DeferredList(waits, consumeErrors=True)
        timeout = self.timers.timeout if grace is None else grace
        done.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda *_: None)
        done.addBoth(self._shutdown)
        return done

    def _shutdown(self, _=None) -> None:
        self._stopped = True
        for call in list(self._client.values()):
            if not call.deferred.called:
                call.deferred.errback(TransportError("the SIP stack stopped"))
        self._client.clear()
        self._server.clear()
        self._timers.stop()
        self._absorbed.stop()
        self.input_log.flush()
        self.pool.close_all()


# Declared here rather than with @implementer: a class decorator would keep mypyc from
# compiling SIPStack as a native class.
classImplements(SIPStack, ISIPStack)


def _method_label(method: str) -> str:
    """A method as the transaction counters key it: one txuac knows, or "other", since a
    peer can make up any number of names."""
    return method if method in KNOWN_METHODS else "other"


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def _quietly(d: defer.Deferred) -> defer.Deferred:
    """A Deferred that fires when ``d`` does, without consuming its result."""
    mirror: defer.Deferred = defer.Deferred()

    def both(result):
        if not mirror.called:
            mirror.callback(None)
        return result

    d.addBoth(both)
    return mirror


def _log_target_failed(method: str | None, target: Address, error: BaseException) -> None:
    log.info("{method} to {target} failed: {error}", method=method, target=target, error=str(error))


def _stateless_bytes(request: Request) -> bytes:
    """``request`` as sent without a transaction: with a Content-Length (RFC 3261 18.3),
    added to a copy when missing (the caller's request untouched, as in send_request)."""
    if "Content-Length" not in request.headers:
        request = request.copy()
        _ensure_content_length(request)
    return bytes(request)


def _cancelling(delayed: Any) -> Callable:
    """A callback that cancels ``delayed`` if still pending and passes the result on."""
    def cancel(result):
        if delayed.active():
            delayed.cancel()
        return result
    return cancel


def _ensure_content_length(message: Message) -> None:
    """RFC 3261 18.3, 20.14: Content-Length is required on streams and recommended on UDP;
    serialising writes the body's real length into it."""
    if "Content-Length" not in message.headers:
        message.headers.add("Content-Length", str(len(message.body)))


__all__ = ["CancelHandler", "ClientRequest", "ISIPStack", "IncomingRequest", "Message", "SIPStack"]
