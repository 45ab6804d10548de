"""The transaction-stateful proxy on the SIP stack, driven by the routing script.

``ProxyService(stack, routes, settings, local_addresses)`` takes every proxied method
from the stack (``start``; ``stop`` gives them back). For each request:

1. ``check_request`` (RFC 3261 16.3): a status is answered with ``make_rejection``
   (an ACK is dropped);
2. the script's ``request_route`` runs (``call_route``) with the message (a copy of
   the request as received) and the namespaces below. An exception in the script,
   an unknown namespace function included (an AttributeError the script sees), is
   logged once with the script's traceback and answered 500 unless a reply went out
   or the request was relayed; the service goes on. A route that neither replies
   nor relays drops the request, as Kamailio does at the end of request_route.

Namespaces (Kamailio's KEMI names, bound to the request being routed: no ``msg``
argument, as ``KSR.tm.t_relay()``), returning Kamailio's codes (1 success, negative
failure):

- ``sl.sl_send_reply(code, reason)`` (and ``sl.send_reply``): answer statelessly
  in Kamailio's terms; here through the server transaction;
- ``rr.record_route()``: the relayed request gets our Record-Route
  ``<sip:host:port;lr;ftag=...>`` (proxy_rules.prepare_forward); ``rr.loose_route()``
  is RFC 3261 16.4 (``preprocess_route``): 1 when the request had a Route (or a
  strict-router Request-URI) of ours, now removed, -1 otherwise;
- ``tm.t_relay()`` / ``tm.t_relay_to_uri(uri)``: forward statefully (16.6) to the
  Route next hop or the Request-URI (or ``uri``); responses go upstream through a
  ``ResponseContext`` (16.7). An ACK (the ACK of a 2xx: the stack absorbs the others)
  is forwarded statelessly (16.11).
- ``uac``: From/To replace and restore (``uac_functions``): ``uac_replace_from/to``,
  ``uac_restore_from/to``. The vsf/vst parameters go on our Record-Route when the request
  is relayed (so the order of ``rr.record_route()`` and the replace does not matter);
  every response sent upstream gets the From/To its request was received with. In
  ``restore_mode = "auto"``, ``rr.loose_route()`` restores From/To of an in-dialog request
  from the vsf/vst of our Route (direction from its ``ftag``), as Kamailio's rr callback.
  With ``restore_dlg`` and a dialog, the dialog's variables replace vsf/vst.
  ``uac.uac_req_send(**fields)`` sends through the proxy's one ``RequestSender``
  (``req_send``), whose events run ``event_route[uac:reply]`` or ``[routing] event_callback``.
- ``dialog`` (``dialog_functions``): ``dlg_manage()``, ``is_in_dialog()``. The service
  owns the ``DialogTable`` (``[routing] dialog_timeout``, ``max_dialogs``): a dialog is
  created by ``dlg_manage()`` on an initial INVITE, updated by the INVITE's responses as
  they come back and by the in-dialog requests relayed (a BYE ends it), and expired by a
  LoopingCall on the stack's reactor every ``DIALOG_EXPIRY_INTERVAL`` seconds.

CANCEL (16.10) comes through the stack's cancel handler: the stack answers it 200
and the pending branches are cancelled (``make_branch_cancel``), or the INVITE is
answered 487 when it was never relayed. The branch CANCEL keeps the branch of the
INVITE's Via (RFC 3261 9.1): it goes in a client transaction of its own keyed by that
branch (``send_request(keep_via=True)``), retransmitted over UDP until its 200. An unmatched CANCEL gets 481
from the stack (no stateless forwarding yet).

``ProxyRunner`` runs it in UACService when ``[routing] script`` is set.

``tm.t_on_failure(name)`` arms ``failure_route[name]``: when every branch has failed
(ContextUpdate.completed: a final >= 300 from each, timeouts, a CANCEL), it runs once
with the request as relayed; ``tm.t_relay()`` there (to the last relayed Request-URI) or
``tm.t_relay_to_uri`` adds a branch to the same ResponseContext (serial forking); when it
adds none and does not reply, the best response goes upstream. ``tm.t_is_canceled`` and
``tm.t_check_status`` (the failing status in a failure route, the reply's in
onreply_route) go with it. There, ``uac.uac_auth()`` answers the picked branch's 401/407
on the request (``authenticate``); the new branch and, in the request's dialog (tracked
for an INVITE even without ``dlg_manage``), every later request of that direction go
with their CSeq raised, and every reply upstream gets the CSeq it was sent with.

``tm.t_on_branch(name)`` arms ``branch_route[name]``: it runs for each branch relayed
after, with the branch's Request-URI, and what it changes stays on that branch (an
exception drops the branch). ``onreply_route`` runs for every reply received on a
branch before the response context handles it (an exception is logged, the reply goes
on). ``uac.uac_reg_*`` (``reg_functions``) use the registrant of ``ServiceParts``;
``uac_reg_request_to`` and ``uac_reg_lookup(.., "$du")`` set the branch's next hop.

A 2xx retransmitted (or from another fork) while the INVITE client transaction is
Accepted (RFC 6026, 64*T1) goes upstream too: a caller whose 200 was lost gets it.

``tm.t_on_reply(name)`` arms ``onreply_route[name]``, run after the global one.

Not yet: the other dialog functions.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from txuac.auth import CredentialList, ICredentialSource, add_credentials, challenge_origin
from txuac.config import RoutingSettings, Settings
from txuac.errors import AuthenticationError, SIPParseError, TransactionTimeout
from txuac.net.stack import IncomingRequest, SIPStack
from txuac.routing.dialog_functions import DialogFunctions
from txuac.routing.dialogs import DialogError, DialogTable, shift_cseq
from txuac.routing.proxy_rules import (
    BranchRefused,
    CancelDisposition,
    ContextUpdate,
    Forward,
    ResponseContext,
    cancel_disposition,
    check_request,
    make_branch_cancel,
    make_rejection,
    prepare_ack_forward,
    prepare_forward,
    preprocess_route,
    response_for_upstream,
)
from txuac.routing.reg_functions import RequestTargets
from txuac.routing.replace import RestoreMode
from txuac.routing.restore import apply_rewrites, reply_rewrites
from txuac.routing.uac_auth import answer_challenge, credentials_lookup
from txuac.routing.req_send import RequestSender, ScriptEvents, event_handler
from txuac.routing.script import Route, RouteTable, ScriptFailure, call_route, load_script
from txuac.routing.uac_functions import (
    UAC,
    RequestAddresses,
    RestoreSettings,
    RouteParamsSource,
    restore_from_dialog,
    restore_in_dialog,
)
from txuac.sip.digest import ALL_ALGORITHMS, NonceCounter
from txuac.sip.grammar import split_list
from txuac.sip.address import default_port
from txuac.sip.message import Request, Response
from txuac.sip.methods import METHODS
from txuac.sip.uri import URI, SipURI, parse_uri
from txuac.sip.via import Address, bare_host, make_via, via_host

log = Logger()

#: Methods the proxy takes from the stack (CANCEL comes through the cancel handler).
PROXIED_METHODS = tuple(method for method in METHODS if method != "CANCEL")
DIALOG_METHODS = ("INVITE", "SUBSCRIBE", "REFER")  # initial requests that can start a dialog
DIALOG_EXPIRY_INTERVAL = 1.0  # seconds between DialogTable.expire runs


@dataclass(frozen=True)
class ServiceParts:
    """What the proxy uses from the rest of txuac (UACService): the ``[uac] credential``
    list and digest settings for ``uac_auth``, the nonce counter shared with every
    Authenticator of the service, and the registrant for the ``uac_reg_*`` functions
    (None without ``reg_db_url``)."""

    credentials: ICredentialSource = field(default_factory=CredentialList)
    nonces: NonceCounter = field(default_factory=NonceCounter)
    algorithms: tuple[str, ...] = ALL_ALGORITHMS
    registrant: Any = None
    default_socket: str | None = None  # [uac] default_socket, for uac_req_send

    @classmethod
    def of(cls, uac_service: Any) -> "ServiceParts":
        authenticator = uac_service.authenticator
        return cls(uac_service.credentials, authenticator.nonces, authenticator.algorithms,
                   uac_service.registrant, uac_service.settings.uac.default_socket)


class ProxyService:
    """The proxy: the stack's handler for ``PROXIED_METHODS`` and CANCEL once started."""

    def __init__(self, stack: SIPStack, routes: RouteTable, settings: RoutingSettings,
                 local_addresses: Sequence[Address], parts: "ServiceParts | None" = None):
        if not local_addresses:
            raise ValueError("the proxy needs the addresses it listens on")
        self.stack = stack
        self.routes = routes
        self.settings = settings
        self.parts = parts if parts is not None else ServiceParts()
        self.local_addresses = list(local_addresses)
        self.restore = RestoreSettings.from_settings(settings)
        self.dialogs = DialogTable(dialog_timeout=settings.dialog_timeout, max_dialogs=settings.max_dialogs)
        self._expiry = task.LoopingCall(self.expire_dialogs)
        self._expiry.clock = stack.reactor
        self.script_failures = 0
        self._warned_no_registrant = False
        # One sender for every uac_req_send; its events run the script (req_send.ScriptEvents).
        self.events = ScriptEvents(routes, settings.event_callback, self.event_uac, self._count_event_failure)
        self.requests = RequestSender(stack, self.parts.nonces, self.parts.algorithms, self.parts.default_socket,
                                      self.events)

    def event_uac(self) -> UAC:
        """The ``uac`` namespace of event_route[uac:reply]: no request, uac_req_send works."""
        return UAC(None, self.restore, RequestAddresses(), RouteParamsSource(), requests=self.requests)

    def now(self) -> float:
        return self.stack.reactor.seconds()

    def _count_event_failure(self) -> None:
        self.script_failures += 1  # logged by ScriptEvents

    def warn_no_registrant(self) -> None:
        """A uac_reg_* function without [uac] reg_db_url: said once, then -1 silently."""
        if not self._warned_no_registrant:
            self._warned_no_registrant = True
            log.warn("uac_reg_* functions return -1: registrations are not enabled ([uac] reg_db_url)")

    def expire_dialogs(self) -> None:
        for dialog in self.dialogs.expire(self.now()):
            log.info("dialog {call_id} ended: {reason}", call_id=dialog.call_id, reason=dialog.end_reason.value)

    def start(self) -> None:
        for method in PROXIED_METHODS:
            self.stack.set_handler(method, self.request_received)
        self.stack.set_cancel_handler(self.cancel_received)
        self._expiry.start(DIALOG_EXPIRY_INTERVAL, now=False)

    def stop(self) -> None:
        for method in PROXIED_METHODS:
            self.stack.set_handler(method, None)
        self.stack.set_cancel_handler(None)
        if self._expiry.running:
            self._expiry.stop()

    # --- addresses ----------------------------------------------------------------------
    def is_local_uri(self, uri: SipURI) -> bool:
        """Whether ``uri`` designates one of our sockets (host and port; RFC 3261 16.4)."""
        host = bare_host(uri.host).lower()
        transport = "tls" if uri.secure else (uri.transport or "udp")
        port = uri.port or default_port(transport)
        return any(bare_host(a.host).lower() == host and a.port == port for a in self.local_addresses)

    def local_address(self, transport: str) -> Address:
        """Our socket for ``transport`` (the first one when none matches)."""
        for address in self.local_addresses:
            if address.transport == transport:
                return address
        return self.local_addresses[0]

    def record_route_uri(self, transport: str) -> str:
        address = self.local_address(transport)
        suffix = "" if address.transport == "udp" else f";transport={address.transport}"
        scheme = "sips" if address.transport == "tls" else "sip"
        return f"{scheme}:{via_host(address.host)}:{address.port}{suffix}"

    # --- requests -----------------------------------------------------------------------
    def request_received(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        status = check_request(request)
        if status is not None:
            if request.method != "ACK":
                incoming.send(make_rejection(request, status, to_tag=incoming.to_tag))
            return
        proxied = ProxiedRequest(self, incoming)
        result = call_route(self.routes.request, proxied.msg, proxied.uac, proxied.tm, proxied.rr,
                            proxied.dialog, proxied.sl)
        if isinstance(result, ScriptFailure):
            self.note_script_failure(result, request)
            proxied.answer_failure()

    def note_script_failure(self, failure: ScriptFailure, message: Request | Response) -> None:
        """A route raised: counted and logged once with the script's traceback."""
        self.script_failures += 1
        what = message.method if isinstance(message, Request) else f"{message.status} reply"
        log.error("routing script failed in {route} for {what} {call_id}:\n{traceback}", route=failure.route.label,
                  what=what, call_id=message.call_id, traceback=failure.traceback)

    def cancel_received(self, cancel: IncomingRequest, invite: IncomingRequest | None) -> bool | None:
        """RFC 3261 16.10; the stack answered the CANCEL 200 when ``invite`` is not None."""
        if invite is None:
            return None  # the stack answers 481
        ref = getattr(invite, "proxied", None)  # alive while a branch is pending
        proxied: ProxiedRequest | None = ref() if ref is not None else None
        if proxied is None or proxied.context is None:
            if invite.transaction is not None and not _answered(invite):
                invite.respond(487)
            return None
        if cancel_disposition(proxied.context) is CancelDisposition.CANCEL_BRANCHES:
            proxied.apply(proxied.context.cancel())
        return None


def _answered(incoming: IncomingRequest) -> bool:
    last = incoming.transaction.last_response if incoming.transaction is not None else None
    return last is not None and last.status >= 200


class _Branch:
    """One forwarded copy of the request: what was sent and where (for its CANCEL), and
    its final response as received (uac_auth answers it)."""

    def __init__(self) -> None:
        self.request: Request | None = None  # None when it could not be prepared
        self.sent_via: str | None = None  # our Via as sent, from the first response
        self.sent_to: Address | None = None
        self.final: Response | None = None


class _Upstream:
    """How replies go upstream: with the From/To (reply_rewrites) and the CSeq the request
    was received with. A branch keeps it for 2xx retransmitted after the ProxiedRequest
    is gone."""

    __slots__ = ("incoming", "addresses", "cseq_shifted")

    def __init__(self, incoming: IncomingRequest, addresses: RequestAddresses):
        self.incoming = incoming
        self.addresses = addresses
        self.cseq_shifted = False  # a branch went with another CSeq: replies get the received one

    def prepare(self, response: Response) -> Response:
        addresses = self.addresses
        if addresses.fixed_headers:
            apply_rewrites(response, reply_rewrites(response, addresses.fixed_headers, self.incoming.request,
                                                    addresses.saved_spans))
        if self.cseq_shifted:
            response.headers.set("CSeq", self.incoming.request.headers.get("CSeq"))
        return response

    def forward_late(self, response: Response) -> None:
        """A 2xx retransmitted after the transaction's final went upstream (16.7 item 5)."""
        if 200 <= response.status < 300:
            upstream = response_for_upstream(response)
            if upstream is not None:
                self.incoming.send(self.prepare(upstream))


class ProxiedRequest:
    """One request going through the script: the namespaces and, once relayed, the
    response context of its branches."""

    def __init__(self, proxy: ProxyService, incoming: IncomingRequest):
        self.proxy = proxy
        self.incoming = incoming
        self.msg = incoming.request.copy()
        self.record_route = False
        self.replied = False
        self.context: ResponseContext | None = None
        self.branches: list[_Branch] = []
        self.addresses = RequestAddresses()
        self.route_params = RouteParamsSource()
        self.tm = TM(self)
        self.sl = SL(self)
        self.rr = RR(self)
        self.failure_route: Route | None = None  # armed by tm.t_on_failure
        self.in_failure_route = False
        self.branch_route: Route | None = None  # armed by tm.t_on_branch
        self.reply_route: Route | None = None  # armed by tm.t_on_reply
        self.current_reply: Response | None = None  # the reply onreply_route runs for
        self.last_target: URI | str | None = None  # the Request-URI given to the last relay
        self.tracked = False  # an in-dialog request noted in the dialog table once relayed
        self.cseq_raise = 0  # CSeq + this on the branches of a request outside any dialog (uac_auth)
        self.up = _Upstream(incoming, self.addresses)
        found = proxy.dialogs.match(incoming.request)  # None for an initial request
        self.in_dialog = found is not None  # a request of a dialog the table tracks
        self.dialog = DialogFunctions(self.msg, proxy.dialogs, proxy.now, found)
        self.targets = RequestTargets(self.msg)  # $du of uac_reg_request_to and uac_reg_lookup
        # No reference cycle through self (namespaces hold weak proxies, incoming a weakref):
        # a finished request is freed by reference counting, not left to the collector's
        # rare full collections (bench/proxy.py: ~45 KiB per call otherwise, never freed).
        dialog, me = self.dialog, weakref.proxy(self)
        self.uac = UAC(self.msg, proxy.restore, self.addresses, self.route_params, lambda: dialog.dialog,
                       authenticate=lambda *args, **kwargs: me.authenticate(*args, **kwargs),
                       requests=proxy.requests, registrant=proxy.parts.registrant,
                       targets=self.targets, warn_no_registrant=proxy.warn_no_registrant)
        incoming.proxied = weakref.ref(self)  # type: ignore[attr-defined] - found again by the cancel handler

    @property
    def is_ack(self) -> bool:
        return self.incoming.request.method == "ACK"

    def reply(self, code: int, reason: str | None) -> int:
        if self.is_ack or _answered(self.incoming):
            return -1
        self.incoming.respond(code, reason)
        self.replied = True
        return 1

    def answer_failure(self) -> None:
        if not self.is_ack and self.context is None and not _answered(self.incoming):
            self.incoming.respond(500)

    # --- forwarding -----------------------------------------------------------------------
    def relay(self, target: URI | str | None) -> int:
        if target is None and self.in_failure_route:
            target = self.last_target  # the failure route's request has the relayed R-URI
        self.last_target = target
        if self.is_ack:
            return self._relay_ack(target)
        if self.replied or _answered(self.incoming):
            return -1
        self._track_request()
        if self.context is None:
            self.context = ResponseContext(self.incoming.request, self.incoming.to_tag)
        try:
            number = self.context.add_branch()
        except BranchRefused:
            return -1
        branch = _Branch()
        self.branches.append(branch)  # index = the context's branch number
        if self.branch_route is not None:
            forward = self._prepare_in_branch_route(target)
        else:
            forward = self._prepare(target)
        if forward is None:
            self.apply(self.context.transport_failed(number))
            return -1
        # The stack puts its own Via on top (with the client transaction's branch).
        forward.request.headers.remove_first("Via")
        self._shift_cseq(forward.request)
        branch.request = forward.request
        # Kamailio's $du (uac_reg_request_to): the next hop, Request-URI and Route kept.
        next_hop = self.targets.destination or forward.next_hop
        next_hop = next_hop if isinstance(next_hop, SipURI) else None
        if next_hop is None:
            self.apply(self.context.transport_failed(number))
            return -1

        # The INVITE client transaction stays Accepted 64*T1 after its 2xx (RFC 6026):
        # this callback lives that long, so it holds the request weakly and, once the
        # request is done with, forwards a retransmitted 2xx with `up` alone.
        me, up = weakref.ref(self), self.up

        def provisional(response: Response) -> None:
            proxied = me()
            if proxied is None:
                up.forward_late(response)
            elif response.status >= 200:  # a 2xx after the first: upstream too (RFC 6026 7.2)
                proxied.apply(proxied.context.receive(number, response))
            else:
                proxied._note_sent(proxied.branches[number], response)
                proxied.run_onreply_route(response)
                proxied.apply(proxied.context.receive(number, response))

        # Timer C (16.6 item 11) as Kamailio's fr_inv_timer: a final by then, or a 408.
        timeout = self.proxy.settings.fr_inv_timeout if self.msg.method == "INVITE" else None
        d = self.proxy.stack.send_request(forward.request, next_hop, on_provisional=provisional, timeout=timeout)
        d.addCallback(self._final, number, branch)
        d.addErrback(self._failed, number)
        d.addErrback(lambda f: log.failure("response handling failed", f))
        return 1

    def _prepare(self, target: URI | str | None) -> Forward | None:
        """``msg`` made ready for a branch to ``target`` (16.6), or None (logged)."""
        transport = self.incoming.source.transport
        local = self.proxy.local_address(transport)
        record_route = self.our_record_route(transport) if self._records_route() else None
        try:
            return prepare_forward(self.msg, target, make_via(local.transport, local.host, local.port), record_route)
        except SIPParseError as e:
            log.info("{method} not forwarded: {error}", method=self.msg.method, error=str(e))
            return None

    def _records_route(self) -> bool:
        """rr.record_route() was called, or ``[routing] record_route`` and a uac function
        needs the dialog's later requests to come through us: a From/To to restore, a CSeq
        raised by uac_auth (without them the dialog breaks)."""
        if self.record_route:
            return True
        msg = self.msg
        if not self.proxy.settings.record_route or self.in_dialog or msg.method not in DIALOG_METHODS:
            return False
        restoring = bool(self.addresses.replacements) and self.proxy.restore.mode is not RestoreMode.NONE
        found = self.dialog.found
        raised = self.cseq_raise or (found is not None and found[0].cseq_offset[found[1]])
        return restoring or bool(raised)

    def _prepare_in_branch_route(self, target: URI | str | None) -> Forward | None:
        """The branch route armed by ``tm.t_on_branch`` runs on ``msg`` with the branch's
        Request-URI; what it changes goes on this branch only (Kamailio's branch_route)."""
        saved = self.msg.copy()
        try:
            if target is not None:
                self.msg.uri = parse_uri(target, "target URI") if isinstance(target, str) else target.copy()
            result = call_route(self.branch_route, self.msg, self.uac, self.tm, self.rr, self.dialog, self.sl)
            if isinstance(result, ScriptFailure):
                self.proxy.note_script_failure(result, self.msg)
                return None
            return self._prepare(None)
        except SIPParseError as e:
            log.info("{method} not forwarded: {error}", method=self.msg.method, error=str(e))
            return None
        finally:
            self.msg.uri, self.msg.headers, self.msg.body = saved.uri, saved.headers, saved.body

    def run_onreply_route(self, response: Response) -> None:
        """``onreply_route``, then the ``onreply_route[NAME]`` armed by ``tm.t_on_reply``,
        for a reply received on a branch before tm handles it (the script may change it;
        an exception is logged and the reply goes on)."""
        for route in (self.proxy.routes.onreply, self.reply_route):
            if route is None:
                continue
            self.current_reply = response
            try:
                result = call_route(route, response, self.uac, self.tm, self.rr, self.dialog, self.sl)
            finally:
                self.current_reply = None
            if isinstance(result, ScriptFailure):
                self.proxy.note_script_failure(result, response)

    def our_record_route(self, transport: str) -> str:
        """Our Record-Route URI, with vsf/vst of the replaced (or restored) From/To."""
        uri = self.proxy.record_route_uri(transport)
        for name, value in self.addresses.record_route_params(self.proxy.restore):
            uri += f";{name}={value}"
        return uri

    def upstream(self, response: Response) -> Response:
        """``response`` as it goes upstream (``_Upstream.prepare``), noted in the dialog."""
        self.up.prepare(response)
        self._track_response(response)
        return response

    def _shift_cseq(self, request: Request) -> None:
        """The CSeq a branch goes with: raised by the requests uac_auth resent in its
        dialog and direction (Kamailio's known limitation, fixed: RFC 3261 12.2.1.1 wants
        CSeq to grow within a dialog), or by this request's own resends."""
        found = self.dialog.found
        try:
            if found is not None:
                shifted = found[0].shift_request(request, found[1])
            elif self.cseq_raise:
                shift_cseq(request, self.cseq_raise)
                shifted = True
            else:
                shifted = False
        except DialogError as e:
            log.info("{method}: CSeq not raised: {error}", method=request.method, error=str(e))
            return
        if shifted:
            self.up.cseq_shifted = True

    def authenticate(self, mode: int) -> int:
        """``uac.uac_auth(mode)``: the picked branch's 401/407 answered on ``msg`` for the
        next branch (uac_auth module doc), CSeq raised for it and, in a dialog, for the
        rest of the dialog in that direction. -1 and a log line when it cannot be."""
        context = self.context
        number = context.picked_branch() if context is not None else None
        if context is None or number is None or context.is_local(number):
            log.info("uac_auth: no reply from downstream to answer for {call_id}", call_id=self.msg.call_id)
            return -1
        branch = self.branches[number]
        challenge = branch.final
        if challenge is None or branch.request is None or challenge.status not in (401, 407):
            return -1
        refused = challenge_origin(challenge, "the branch's destination")
        if refused is not None:
            log.warn("uac_auth for {call_id}: {status} {refused}", call_id=self.msg.call_id,
                     status=challenge.status, refused=refused)
            return -1
        parts = self.proxy.parts
        uri = str(branch.request.uri)
        try:
            answers = answer_challenge(self.msg, challenge, uri,
                                       credentials_lookup(self.uac.credentials, parts.credentials, mode),
                                       parts.algorithms, parts.nonces)
        except (AuthenticationError, SIPParseError) as e:
            log.info("uac_auth for {call_id}: {error}", call_id=self.msg.call_id, error=str(e))
            return -1
        add_credentials(self.msg, answers)
        self.last_target = branch.request.uri  # Kamailio: the R-URI of the picked branch
        self._raise_cseq()
        return 1

    def _raise_cseq(self) -> None:
        """The next branch goes with CSeq + 1 (RFC 3261 8.1.3.5, and a resend with the same
        CSeq would look merged, 8.2.2.2); in a dialog (an INVITE starts one for this) the
        dialog's later requests of this direction are raised alike."""
        if self.dialog.found is None and self.msg.method == "INVITE" and not self.in_dialog:
            self.dialog.track()
        found = self.dialog.found
        if found is not None:
            found[0].add_cseq_offset(found[1])
        else:
            self.cseq_raise += 1

    def _track_request(self) -> None:
        if not self.tracked and self.in_dialog:
            self.tracked = True
            self.proxy.dialogs.on_request(self.msg, self.proxy.now())

    def _track_response(self, response: Response) -> None:
        """The dialog follows what the caller gets: a 407 answered by a failure route
        does not end it."""
        if self.dialog.found is not None and self.msg.method == "INVITE":
            self.proxy.dialogs.on_response(response, self.proxy.now())

    def _final(self, response: Response, number: int, branch: _Branch) -> None:
        branch.final = response
        self._note_sent(branch, response)
        self.run_onreply_route(response)
        self.apply(self.context.receive(number, response))

    def _failed(self, failure, number: int) -> None:
        if failure.check(TransactionTimeout):
            branch = self.branches[number]
            if self.msg.method == "INVITE" and branch.sent_via is not None:
                self._cancel_branch(branch)  # it rang: 16.6 item 11 cancels it
            self.apply(self.context.timed_out(number))
        else:
            log.info("branch {number} of {method} failed: {error}", number=number, method=self.msg.method,
                     error=failure.getErrorMessage())
            self.apply(self.context.transport_failed(number))

    @staticmethod
    def _note_sent(branch: _Branch, response: Response) -> None:
        if branch.sent_via is None:
            branch.sent_via = response.headers.get("Via")
            branch.sent_to = getattr(response, "sent_to", None)

    def apply(self, update: ContextUpdate) -> None:
        """Do what the response context said: responses upstream, CANCELs, the final."""
        for response in update.forward:
            self.incoming.send(self.upstream(response))
        for number in update.cancel:
            self._cancel_branch(self.branches[number])
        if update.completed:
            if self.failure_route is not None:
                self._run_failure_route()
                if self.context.pending or self.replied or _answered(self.incoming):
                    return  # a new branch (serial forking) or the route replied
            self.incoming.send(self.upstream(self.context.finish()))

    def _run_failure_route(self) -> None:
        """Every branch failed: the failure route armed by ``tm.t_on_failure`` runs, once
        (Kamailio: re-arm it in the route for the next failure). ``tm.t_relay()`` there
        adds a branch to the same response context (serial forking, 16.7 item 5)."""
        route, self.failure_route = self.failure_route, None
        self.in_failure_route = True
        try:
            result = call_route(route, self.msg, self.uac, self.tm, self.rr, self.dialog, self.sl)
        finally:
            self.in_failure_route = False
        if isinstance(result, ScriptFailure):
            self.proxy.note_script_failure(result, self.msg)

    def _cancel_branch(self, branch: _Branch) -> None:
        if branch.request is None or branch.sent_via is None or branch.sent_to is None:
            return  # nothing heard from it: the context cancels it at its first response
        sent = branch.request.copy()
        sent.headers.prepend("Via", _first_value(branch.sent_via))
        cancel = make_branch_cancel(sent)
        # A client transaction of its own keyed by the INVITE's branch (9.1), retransmitted
        # over UDP until its 200; what it gets back changes nothing here.
        d = self.proxy.stack.send_request(cancel, branch.sent_to, keep_via=True)
        d.addErrback(lambda f: log.info("CANCEL of a branch: {error}", error=f.getErrorMessage()))

    def _relay_ack(self, target: URI | str | None) -> int:
        """RFC 3261 16.11: the ACK of a 2xx, forwarded statelessly."""
        self._track_request()
        transport = self.incoming.source.transport
        local = self.proxy.local_address(transport)
        try:
            forward = prepare_ack_forward(self.msg, make_via(local.transport, local.host, local.port), target)
        except SIPParseError as e:
            log.info("ACK not forwarded: {error}", error=str(e))
            return -1
        self._shift_cseq(forward.request)
        if not isinstance(forward.next_hop, SipURI):
            return -1
        stack = self.proxy.stack
        d = stack.resolver.resolve_uri(forward.next_hop)
        d.addCallback(lambda targets: stack.send_stateless(forward.request, targets[0]))
        d.addErrback(lambda f: log.info("ACK not forwarded: {error}", error=f.getErrorMessage()))
        return 1


def _first_value(via_line: str) -> str:
    return split_list(via_line, "Via")[0]


class TM:
    """Kamailio's tm functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def t_relay(self) -> int:
        """Forward statefully to the Route next hop or the Request-URI (KSR.tm.t_relay)."""
        return self._proxied.relay(None)

    def t_relay_to_uri(self, uri: str) -> int:
        """Forward with ``uri`` as the Request-URI (our equivalent of $ru + t_relay)."""
        try:
            target = parse_uri(uri, "t_relay_to_uri")
        except SIPParseError:
            return -1
        return self._proxied.relay(target)

    def t_on_failure(self, name: str) -> int:
        """Run ``failure_route[name]`` when every branch failed (KSR.tm.t_on_failure)."""
        route = self._named("failure", name)
        if route is not None:
            self._proxied.failure_route = route
        return 1 if route is not None else -1

    def t_on_branch(self, name: str) -> int:
        """Run ``branch_route[name]`` for each branch relayed from now on (KSR.tm.t_on_branch)."""
        route = self._named("branch", name)
        if route is not None:
            self._proxied.branch_route = route
        return 1 if route is not None else -1

    def _named(self, kind: str, name: str) -> Route | None:
        """The script's ``{kind}_route[name]``; None (logged) when it has none."""
        routes = self._proxied.proxy.routes
        table = {"failure": routes.failure, "branch": routes.branch, "reply": routes.replies}[kind]
        route = table.get(name)
        if route is None:
            label = "onreply" if kind == "reply" else kind
            log.error("t_on_{kind}: no {label}_route[{name}] in the script", kind=kind, label=label, name=name)
        return route

    def t_on_reply(self, name: str) -> int:
        """Run ``onreply_route[name]`` for the replies of this transaction (KSR.tm.t_on_reply)."""
        route = self._named("reply", name)
        if route is not None:
            self._proxied.reply_route = route
        return 1 if route is not None else -1

    def t_is_canceled(self) -> int:
        """1 when the transaction was cancelled (a CANCEL from upstream), -1 otherwise."""
        context = self._proxied.context
        return 1 if context is not None and context.cancelled else -1

    def t_check_status(self, regex: str) -> int:
        """1 when the status of the reply being handled (onreply_route) or of the one that
        failed the transaction (failure route) matches ``regex`` (Kamailio: an unanchored
        POSIX match), -1 otherwise."""
        proxied = self._proxied
        context = proxied.context
        if proxied.current_reply is not None:
            status = proxied.current_reply.status
        elif proxied.in_failure_route and context is not None:
            status = context.best_response().status
        else:
            return -1
        try:
            return 1 if re.search(regex, str(status)) else -1
        except re.error:
            return -1


class SL:
    """Kamailio's sl functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def sl_send_reply(self, code: int, reason: str | None = None) -> int:
        return self._proxied.reply(int(code), reason)

    send_reply = sl_send_reply


class RR:
    """Kamailio's rr functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def record_route(self) -> int:
        """Our Record-Route on the relayed request (RFC 3261 16.6 item 4)."""
        self._proxied.record_route = True
        return 1

    def loose_route(self) -> int:
        """RFC 3261 16.4: 1 when a Route (or strict-router Request-URI) of ours was
        removed from the request, -1 otherwise (or for a malformed Route)."""
        msg = self._proxied.msg
        try:
            processed = preprocess_route(msg, self._proxied.proxy.is_local_uri)
        except SIPParseError:
            return -1
        if not (processed.loose_routed or processed.strict_route_compat):
            return -1
        msg.uri, msg.headers = processed.request.uri, processed.request.headers
        proxied = self._proxied
        params = processed.params
        proxied.route_params.params = params
        restore = proxied.proxy.restore
        found = proxied.dialog.found
        if restore.mode is RestoreMode.AUTO and restore.dialog_vars and found is not None and found[0].variables:
            # restore_dlg: the dialog's variables (K:replace.c replace_callback).
            restore_from_dialog(restore, msg, proxied.addresses, found[0], found[1])
        elif restore.mode is RestoreMode.AUTO and processed.own_uris:
            # K:uac.c rr_checker: auto mode restores From/To inside loose_route.
            restore_in_dialog(restore, msg, proxied.addresses, params)
        return 1


class ProxyRunner(service.Service):
    """Runs the proxy inside UACService when ``[routing] script`` is set: the script is
    loaded at construction (a ConfigError stops txuac from starting), the proxy starts
    after the SIP service has bound its sockets (ports of 0 resolved) and stops first.

    Our Record-Route and the Route values we recognise use the listen addresses: a
    wildcard listen (0.0.0.0, ::) has no address to put there (logged at start)."""

    def __init__(self, sip: Any, settings: Settings, parts: ServiceParts | None = None):
        self.sip = sip
        self.settings = settings
        self.parts = parts
        assert settings.routing.script is not None
        self.routes = load_script(settings.routing.script)
        event_handler(self.routes, settings.routing.event_callback)  # a ConfigError now, not at start
        self.proxy: ProxyService | None = None

    def startService(self) -> None:
        super().startService()
        addresses = [Address(spec.transport, spec.host, port.getHost().port)
                     for spec, port in zip(self.settings.core.listen, self.sip.ports)]
        for address in addresses:
            if address.host in ("0.0.0.0", "::"):
                log.warn("[routing]: listening on {host}: Record-Route needs a specific address", host=address.host)
        self.proxy = ProxyService(self.sip.stack, self.routes, self.settings.routing, addresses, self.parts)
        self.proxy.start()
        log.info("proxy started with the routing script {path}", path=self.routes.path)

    def stopService(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        super().stopService()


__all__ = ["PROXIED_METHODS", "ProxiedRequest", "ProxyRunner", "ProxyService", "ServiceParts"]
