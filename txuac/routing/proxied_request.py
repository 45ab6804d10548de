"""One request through the proxy: the routing script's routes run on it, its branches
are forwarded, their responses go upstream.

``ProxiedRequest`` binds the script's namespaces (``tm``, ``sl``, ``rr``, ``uac``,
``dialog``) to a copy of the request, relays it on ``tm.t_relay()`` (RFC 3261 16.6) in a
client transaction per branch, feeds what comes back to its ``ResponseContext`` (16.7)
and does what that returns: responses upstream with the From/To and CSeq the caller sent,
CANCELs, the failure route when every branch failed.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure

from txuac.auth import add_credentials, challenge_origin
from txuac.errors import AuthenticationError, SIPParseError, TransactionTimeout, TransportError
from txuac.net.stack import ClientRequest, IncomingRequest
from txuac.routing.dialog_functions import DialogFunctions
from txuac.routing.dialogs import DialogError, shift_cseq
from txuac.routing.proxy_rules import Forward, prepare_ack_forward, prepare_forward
from txuac.routing.reg_functions import RequestTargets
from txuac.routing.replace import RestoreMode
from txuac.routing.response_context import (
    Branch,
    BranchRefused,
    BranchState,
    ContextUpdate,
    ResponseContext,
    response_for_upstream,
)
from txuac.routing.restore import apply_rewrites, reply_rewrites
from txuac.routing.rr_functions import RR
from txuac.routing.script import Route, ScriptFailure, call_route
from txuac.routing.sl_functions import SL
from txuac.routing.tm_functions import TM
from txuac.routing.uac_auth import answer_challenge, credentials_lookup
from txuac.routing.uac_functions import UAC, RequestAddresses, RouteParamsSource
from txuac.sip.message import Request, Response
from txuac.sip.uri import URI, SipURI, parse_uri
from txuac.sip.via import make_via

if TYPE_CHECKING:
    from txuac.routing.proxy import ProxyService

log = Logger()

#: Initial requests that can start a dialog.
DIALOG_METHODS = ("INVITE", "SUBSCRIBE", "REFER")


def answered(incoming: IncomingRequest) -> bool:
    """Whether a final response went out on ``incoming``'s server transaction."""
    return incoming.transaction is not None and incoming.transaction.answered


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
        cseq = self.incoming.request.headers.get("CSeq") if self.cseq_shifted else None
        if cseq is not None:
            response.headers.set("CSeq", cseq)
        return response

    def forward_late(self, response: Response) -> None:
        """A 2xx retransmitted after the transaction's final went upstream (16.7 item 5)."""
        if 200 <= response.status < 300:
            upstream = response_for_upstream(response, request=self.incoming.request)
            if upstream is not None:
                self.incoming.send(self.prepare(upstream))


class ProxiedRequest:
    """One request going through the script: the namespaces and, once relayed, the
    response context of its branches."""

    __slots__ = ("proxy", "incoming", "msg", "record_route", "replied", "context", "addresses", "route_params",
                 "tm", "sl", "rr", "failure_route", "in_failure_route", "branch_failure_route", "failed_branch",
                 "branch_route", "reply_route", "current_reply", "last_target", "tracked", "cseq_raise", "up",
                 "in_dialog", "dialog", "targets", "uac", "__weakref__")

    def __init__(self, proxy: ProxyService, incoming: IncomingRequest):
        self.proxy = proxy
        self.incoming = incoming
        self.msg = incoming.request.copy()
        self.record_route = False
        self.replied = False
        self.context: ResponseContext | None = None  # opened by the first relay; holds the branches
        self.addresses = RequestAddresses()
        self.route_params = RouteParamsSource()
        self.tm = TM(self)
        self.sl = SL(self)
        self.rr = RR(self)
        self.failure_route: Route | None = None  # armed by tm.t_on_failure
        self.in_failure_route = False
        self.branch_failure_route: Route | None = None  # armed by tm.t_on_branch_failure
        self.failed_branch: int | None = None  # the branch its event_route[tm:branch-failure:NAME] runs for
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
        self.targets = RequestTargets(self.msg)  # $du: tm.setdsturi, uac_reg_request_to, uac_reg_lookup
        # No reference cycle through self (namespaces hold weak proxies, incoming a weakref):
        # a finished request is freed by reference counting, not left to the collector's
        # rare full collections (bench/proxy.py: ~45 KiB per call otherwise, never freed).
        dialog, me = self.dialog, weakref.proxy(self)
        self.uac = UAC(self.msg, proxy.restore, self.addresses, self.route_params, lambda: dialog.dialog,
                       authenticate=lambda mode: me.authenticate(mode),
                       requests=proxy.requests, registrant=proxy.parts.registrant,
                       targets=self.targets, warn_no_registrant=proxy.warn_no_registrant)
        incoming.proxied = weakref.ref(self)  # found again by the cancel handler

    @property
    def is_ack(self) -> bool:
        return self.incoming.request.method == "ACK"

    def reply(self, code: int, reason: str | None) -> int:
        if self.is_ack or answered(self.incoming):
            return -1
        self.incoming.respond(code, reason)
        self.replied = True
        return 1

    def answer_failure(self) -> None:
        if not self.is_ack and self.context is None and not answered(self.incoming):
            self.incoming.respond(500)

    # --- forwarding -----------------------------------------------------------------------
    def relay(self, target: URI | str | None) -> int:
        if target is None and (self.in_failure_route or self.failed_branch is not None):
            target = self.last_target  # the failure route's request has the relayed R-URI
        self.last_target = target
        if self.is_ack:
            return self._relay_ack(target)
        if self.replied or answered(self.incoming):
            return -1
        self._track_request()
        if self.context is None:
            self.context = ResponseContext(self.incoming.request, self.incoming.to_tag)
        try:
            number = self.context.add_branch()
        except BranchRefused:
            return -1
        branch = self.context.branches[number]
        if self.branch_route is not None:
            forward, destination = self._prepare_in_branch_route(target)
        else:
            forward, destination = self._prepare(target), self.targets.destination
        if forward is None:
            self.apply(self.context.transport_failed(number))
            return -1
        self._shift_cseq(forward.request)
        branch.request = forward.request
        # Kamailio's $du (tm.setdsturi, uac_reg_request_to): the next hop, Request-URI and Route kept.
        chosen = destination or forward.next_hop
        if not isinstance(chosen, SipURI):
            self.apply(self.context.transport_failed(number))
            return -1
        next_hop: SipURI = chosen

        # The INVITE client transaction stays Accepted 64*T1 after its 2xx (RFC 6026):
        # this callback lives that long, so it holds the request weakly and, once the
        # request is done with, forwards a retransmitted 2xx with `up` alone.
        me, up = weakref.ref(self), self.up

        def provisional(response: Response) -> None:
            proxied = me()
            if proxied is None:
                up.forward_late(response)
                return
            if response.status < 200:  # a 2xx after the first goes upstream too (RFC 6026 7.2)
                proxied.run_onreply_route(response)
            proxied.apply(proxied.response_context().receive(number, response))

        # Timer C (16.6 item 11) as Kamailio's fr_inv_timer: a final by then, or a 408.
        # The stack puts our Via on (16.6 item 8, the client transaction's branch); its
        # handle tells the branch's CANCEL what was sent and where, failover included.
        timeout = self.proxy.settings.fr_inv_timeout if self.msg.method == "INVITE" else None
        branch.carrier = self.proxy.stack.start_request(forward.request, next_hop, on_provisional=provisional,
                                                        timeout=timeout, on_final=partial(self._outcome, number, branch))
        return 1

    def _outcome(self, number: int, branch: Branch, outcome: "Response | Failure", carrier: ClientRequest) -> None:
        """Branch ``number``'s final response, or its failure: a response whose handling
        raised ends the branch as a failed one (the stack logs what ``_failed`` raises)."""
        if isinstance(outcome, Failure):
            self._failed(outcome, number)
            return
        try:
            self._final(outcome, number, branch)
        except Exception:
            self._failed(Failure(), number)

    def response_context(self) -> ResponseContext:
        """The response context of the branches, there once a branch is relayed (a
        branch's response or failure, the routes run for them)."""
        context = self.context
        assert context is not None, "no branch relayed"
        return context

    def _prepare(self, target: URI | str | None) -> Forward | None:
        """``msg`` made ready for a branch to ``target`` (16.6; our Via is the stack's), or
        None (logged)."""
        transport = self.incoming.source.transport
        record_route = self.our_record_route(transport) if self._records_route() else None
        try:
            return prepare_forward(self.msg, target, None, record_route)
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

    def _prepare_in_branch_route(self, target: URI | str | None) -> tuple[Forward | None, URI | None]:
        """The branch route armed by ``tm.t_on_branch`` runs on ``msg`` with the branch's
        Request-URI; what it changes, ``$du`` included, goes on this branch only (Kamailio's
        branch_route): the branch's forward and destination URI."""
        saved, saved_destination = self.msg.copy(), self.targets.destination
        try:
            if isinstance(target, str):
                self.msg.uri = parse_uri(target, "target URI")
            elif target is not None:
                self.msg.uri = target.copy() if isinstance(target, SipURI) else target
            route = self.branch_route
            assert route is not None  # only called when tm.t_on_branch armed one
            result = call_route(route, self.msg, self.uac, self.tm, self.rr, self.dialog, self.sl)
            if isinstance(result, ScriptFailure):
                self.proxy.note_script_failure(result, self.msg)
                return None, None
            return self._prepare(None), self.targets.destination
        except SIPParseError as e:
            log.info("{method} not forwarded: {error}", method=self.msg.method, error=str(e))
            return None, None
        finally:
            self.msg.uri, self.msg.headers, self.msg.body = saved.uri, saved.headers, saved.body
            self.targets.destination = saved_destination

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
        if context is None:
            number = None
        elif self.failed_branch is not None:
            number = self.failed_branch  # event_route[tm:branch-failure:NAME]: that branch's reply
        else:
            number = context.picked_branch()
        if context is None or number is None or context.is_local(number):
            log.info("uac_auth: no reply from downstream to answer for {call_id}", call_id=self.msg.call_id)
            return -1
        branch = context.branches[number]
        challenge = branch.received
        if challenge is None or branch.request is None or challenge.status not in (401, 407):
            return -1
        refused = challenge_origin(branch.origin, "the branch's destination")
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

    def _final(self, response: Response, number: int, branch: Branch) -> None:
        self.run_onreply_route(response)
        done = branch.state is BranchState.COMPLETED
        self._branch_final(number, self.response_context().receive(number, response), done)

    def _failed(self, failure, number: int) -> None:
        context = self.response_context()
        branch = context.branches[number]
        done = branch.state is BranchState.COMPLETED
        if failure.check(TransactionTimeout):
            if self.msg.method == "INVITE" and branch.heard:
                self._cancel_branch(branch)  # it rang: 16.6 item 11 cancels it
            self._branch_final(number, context.timed_out(number), done)
        else:
            log.info("branch {number} of {method} failed: {error}", number=number, method=self.msg.method,
                     error=failure.getErrorMessage())
            self._branch_final(number, context.transport_failed(number), done)

    def _branch_final(self, number: int, update: ContextUpdate, done_before: bool) -> None:
        """A branch's final is in: a failure (>= 300, received or a local 408/503) runs the
        armed ``event_route[tm:branch-failure:NAME]`` before the transaction decides
        (Kamailio's tm); a branch it relays keeps the transaction going."""
        context = self.response_context()
        final = context.branches[number].final
        route = self.branch_failure_route
        if (route is not None and not done_before and final is not None and final.status >= 300
                and context.final_sent is None):
            self._run_branch_failure_route(route, number)
            if context.pending or self.replied or answered(self.incoming):
                update.completed = False
        self.apply(update)

    def _run_branch_failure_route(self, route: Route, number: int) -> None:
        """The route runs on the request with the failed branch's Request-URI: ``uac_auth``
        answers that branch's challenge, ``tm.t_relay()`` adds a branch to it."""
        branch = self.response_context().branches[number]
        if branch.request is not None:
            self.last_target = branch.request.uri
        self.failed_branch = number
        try:
            result = call_route(route, self.msg, self.uac, self.tm, self.rr, self.dialog, self.sl)
        finally:
            self.failed_branch = None
        if isinstance(result, ScriptFailure):
            self.proxy.note_script_failure(result, self.msg)

    def apply(self, update: ContextUpdate) -> None:
        """Do what the response context said: responses upstream, CANCELs, the final."""
        for response in update.forward:
            self.incoming.send(self.upstream(response))
        if not (update.cancel or update.completed):
            return
        context = self.response_context()
        for number in update.cancel:
            self._cancel_branch(context.branches[number])
        if update.completed:
            if self.failure_route is not None:
                self._run_failure_route()
                if context.pending or self.replied or answered(self.incoming):
                    return  # a new branch (serial forking) or the route replied
            self.incoming.send(self.upstream(context.finish()))

    def _run_failure_route(self) -> None:
        """Every branch failed: the failure route armed by ``tm.t_on_failure`` runs, once
        (Kamailio: re-arm it in the route for the next failure). ``tm.t_relay()`` there
        adds a branch to the same response context (serial forking, 16.7 item 5)."""
        route, self.failure_route = self.failure_route, None
        assert route is not None  # only called when tm.t_on_failure armed one
        self.in_failure_route = True
        try:
            result = call_route(route, self.msg, self.uac, self.tm, self.rr, self.dialog, self.sl)
        finally:
            self.in_failure_route = False
        self.branch_failure_route = None
        self.failed_branch = None
        if isinstance(result, ScriptFailure):
            self.proxy.note_script_failure(result, self.msg)

    def _cancel_branch(self, branch: Branch) -> None:
        cancel = branch.cancel_request()
        if cancel is None or branch.sent_to is None:
            return  # nothing heard from it: the context cancels it at its first response
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
            forward = prepare_ack_forward(self.msg, make_via(local.transport, local.host, local.port), target,
                                          self.incoming.request)
        except SIPParseError as e:
            log.info("ACK not forwarded: {error}", error=str(e))
            return -1
        self._shift_cseq(forward.request)
        next_hop = self.targets.destination or forward.next_hop
        if not isinstance(next_hop, SipURI):
            return -1
        stack = self.proxy.stack
        address = stack.udp_target_now(forward.request, next_hop)
        if address is not None:
            try:
                stack.send_stateless_udp(forward.request, address)
            except TransportError as e:
                log.info("ACK not forwarded: {error}", error=str(e))
            return 1
        d = stack.resolver.resolve_uri(next_hop)
        d.addCallback(lambda targets: stack.send_stateless(forward.request, targets[0]))
        d.addErrback(lambda f: log.info("ACK not forwarded: {error}", error=f.getErrorMessage()))
        return 1
