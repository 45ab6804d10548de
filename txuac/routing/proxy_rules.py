"""The rules of a transaction-stateful proxy (RFC 3261 16), sans-IO.

Pure functions and one state class over ``txuac.sip`` messages: no Twisted, no clock.
The proxy core (the Twisted side, later) feeds them what the stack reports and does
what they return.

Request validation (RFC 3261 16.3), ``check_request``:
  * a malformed request (``Message.validate``) gets the parse error's status (400,
    505, ...); Max-Forwards may be missing (RFC 2543 clients, RFC 4475 3.4.1);
  * a Request-URI scheme we do not route (default: sip, sips, tel) gets 416;
  * Max-Forwards 0 gets 483 (RFC 4475 3.3.11), OPTIONS included by default as in
    Kamailio's scripts; ``answer_options=True`` takes 16.3 item 3's MAY instead:
    an OPTIONS with Max-Forwards 0, whoever it is addressed to, gets 200 and the
    caller answers it as a UAS (RFC 3261 11);
  * a Proxy-Require option tag we do not support gets 420; ``make_rejection``
    adds the Unsupported header field (RFC 3261 8.2.2.3). Require is the UAS's
    business and is ignored (RFC 4475 3.3.5);
  * loop detection (16.3 item 4, a MAY) is not done: Max-Forwards bounds loops and
    a spiral through us (a Request-URI changed by the script) is legitimate.
    Kamailio does not detect loops by Via either.

Route processing (RFC 3261 16.4), ``preprocess_route``:
  * strict-route compatibility: a Request-URI that is ours (``is_local_uri``),
    without user part (our Record-Route values have none), while Route values are
    present, was put there by a strict router: it is replaced by the last Route
    value, which is removed;
  * a ``maddr`` of ours in the Request-URI is stripped with port and transport;
  * a top Route value that is ours is removed (loose routing); when it carries
    Kamailio's ``r2`` (double Record-Route) and the next one is ours too, that one
    goes as well;
  * the URIs of ours found on the way are reported with all their parameters
    (``ftag``, ``vsf``/``vst``, unknown ones): the caller decides. Nothing is
    refused for an unknown parameter. ``downstream`` compares ``ftag`` with the
    From tag (Kamailio's is_direction).

Forwarding (RFC 3261 16.6), ``prepare_forward`` returns a ``Forward``: a copy of
the request with the new Request-URI, Max-Forwards decremented (70 when absent),
our Record-Route value (``lr`` and ``ftag=<From tag>`` added, sips when the
request is sips) before the others, a strict next hop handled (16.6 item 6),
our Via on top (a compliant branch made when the caller gives none) and
Content-Length present; ``Forward.next_hop`` is the URI to resolve (16.6 item 7).
Route values are rewritten as one line; untouched values keep their text.

Responses (RFC 3261 16.7), ``ResponseContext``: the branches of one forwarded
request. Provisional responses but 100 and every 2xx are forwarded at once; a 2xx
of an INVITE after the final response too; other finals are stored. When no branch
is pending and no final was sent, the update says ``completed``: the failure route
may add branches (serial forking), else ``finish()`` gives the best response: a
6xx first, then the lowest class; in 4xx 401, 407, 415, 420, 484 before the others,
otherwise the lowest code, the first received on a tie (Kamailio's t_pick_branch);
408 when no final exists; a chosen 503 goes up as 500 (16.7 item 6, Kamailio's
remap_503_500); a chosen 401/407 carries the WWW-/Proxy-Authenticate values of
every other 401/407 (16.7 item 7). A branch that times out counts as a 408, one
whose transport fails as a 503 (16.9); a cancelled branch that times out counts as
a 487. After a 6xx, a CANCEL or a final response,
no new branch is allowed (16.7 item 5, 16.10). CANCELs go to branches that have
had a provisional response, others get theirs at their first one (9.1).
``response_for_upstream`` removes our top Via (16.7 item 3) and drops what has no
Via left, whose top Via is not ours, or whose next Via is a broadcast, multicast or
unspecified address without maddr (RFC 4475 3.3.10).

CANCEL and ACK (RFC 3261 16.10, 16.11, 17.2.1, RFC 6026): ``cancel_disposition``
and ``ack_disposition`` decide; ``make_branch_cancel`` builds a branch's CANCEL;
``prepare_ack_forward`` forwards the ACK of a 2xx statelessly with a branch
derived from the ACK (retransmissions get the same one).

Every error raised for a hostile message is a ``txuac.errors.SIPParseError`` whose
``status`` is the answer (400 almost always, 483 for a Max-Forwards of 0).
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Iterable

from txuac.errors import SIPParseError, TxuacError
from txuac.sip.fields import NameAddress, Via, parse_name_addr
from txuac.sip.grammar import Parameters, split_list
from txuac.sip.headers import Headers
from txuac.sip.message import Request, Response, make_response
from txuac.sip.tokens import token_hex
from txuac.sip.transaction import MAGIC_COOKIE, has_magic_cookie
from txuac.sip.uri import URI, AbsoluteURI, SipURI, parse_uri
from txuac.sip.via import bare_host, ip_address_of, new_branch

#: RFC 3261 16.6 item 3: the Max-Forwards a proxy adds when the request has none.
DEFAULT_MAX_FORWARDS = 70
#: Request-URI schemes we route; others get 416 (RFC 3261 16.3 item 2).
ROUTED_SCHEMES = frozenset({"sip", "sips", "tel"})
#: 4xx codes that tell the client how to retry, preferred in that order (16.7 item 6).
PREFERRED_4XX = (401, 407, 415, 420, 484)

LocalURIPredicate = Callable[[SipURI], bool]


class BranchRefused(TxuacError):
    """A new branch was asked for where RFC 3261 forbids one (after a 6xx, a CANCEL or
    a final response: 16.7 item 5, 16.10)."""


# --- 16.3 request validation -------------------------------------------------------

def check_request(request: Request, supported_proxy_extensions: Iterable[str] = (),
                  routed_schemes: Iterable[str] = ROUTED_SCHEMES,
                  answer_options: bool = False) -> int | None:
    """The status a proxy answers ``request`` with instead of forwarding it, or None.

    RFC 3261 16.3 items 1, 2, 3 and 5 (item 4, loop detection, is not done: see the
    module docstring). 200 is returned only for an OPTIONS with Max-Forwards 0 when
    ``answer_options`` is set: the caller answers it as a UAS (RFC 3261 11). An ACK
    is never answered: a status for an ACK means drop it.
    """
    try:
        request.validate()  # 16.3 item 1: reasonable syntax
        max_forwards = request.max_forwards
    except SIPParseError as error:
        return error.status
    # 16.3 item 2: the Request-URI scheme.
    if request.uri.scheme.lower() not in {scheme.lower() for scheme in routed_schemes}:
        return 416
    # 16.3 item 3: Max-Forwards.
    if max_forwards == 0:
        return 200 if answer_options and request.method == "OPTIONS" else 483
    # 16.3 item 5: Proxy-Require.
    if unsupported_extensions(request, supported_proxy_extensions):
        return 420
    return None


def unsupported_extensions(request: Request, supported: Iterable[str] = ()) -> list[str]:
    """The Proxy-Require option tags not in ``supported`` (RFC 3261 16.3 item 5).

    Option tags compare case-sensitively (RFC 3261 19.2). Raises SIPParseError for
    a malformed Proxy-Require.
    """
    known = set(supported)
    return [tag for tag in request.tokens("Proxy-Require") if tag not in known]


def make_rejection(request: Request, status: int, supported_proxy_extensions: Iterable[str] = (),
                   to_tag: str | None = None) -> Response:
    """The response for a ``check_request`` status: 420 lists the unsupported option
    tags in Unsupported (RFC 3261 8.2.2.3, 16.3 item 5); a parse error's reason phrase
    says what is wrong."""
    extra: list[tuple[str, str]] = []
    reason = None
    try:
        request.validate()
    except SIPParseError as error:
        reason = error.reason_phrase if error.status == status else None
    else:
        if status == 420:
            extra.append(("Unsupported", ", ".join(unsupported_extensions(request, supported_proxy_extensions))))
    try:
        return make_response(request, status, reason, to_tag=to_tag or token_hex(6), extra_headers=extra)
    except SIPParseError:  # a To that does not parse gets no tag (the copy is verbatim)
        return make_response(request, status, reason, extra_headers=extra)


# --- 16.4 route information preprocessing --------------------------------------------

@dataclass
class RouteProcessing:
    """What ``preprocess_route`` did: the request to go on with and what was ours."""

    request: Request
    strict_route_compat: bool = False  # the Request-URI was ours, replaced by the last Route
    loose_routed: bool = False  # the top Route value (or two with r2) was ours and removed
    maddr_stripped: bool = False
    own_uris: list[SipURI] = field(default_factory=list)  # ours, in the order they were found

    @property
    def params(self) -> Parameters:
        """The parameters of the first URI of ours (ftag, vsf, vst, lr, unknown ones)."""
        return self.own_uris[0].params.copy() if self.own_uris else Parameters()

    @property
    def ftag(self) -> str | None:
        return self.params.get("ftag")

    @property
    def downstream(self) -> bool | None:
        """True when the request goes the way the dialog's first request went (its From
        tag is ``ftag``), False the other way, None without ``ftag``."""
        ftag = self.ftag
        if ftag is None:
            return None
        from_ = self.request.from_
        return from_ is not None and from_.tag == ftag


def preprocess_route(request: Request, is_local_uri: LocalURIPredicate) -> RouteProcessing:
    """RFC 3261 16.4 on a copy of ``request``; ``is_local_uri(uri)`` says whether a SIP
    or SIPS URI designates this proxy (host, port, transport: the caller's sockets and
    names). Raises SIPParseError for a malformed Route or Request-URI."""
    forwarded = request.copy()
    result = RouteProcessing(forwarded)
    routes = _list_items(forwarded.headers, "Route")
    uri = forwarded.uri
    # 16.4: a Request-URI we put into a Record-Route came from a strict router.
    if routes and isinstance(uri, SipURI) and uri.user is None and is_local_uri(uri):
        last = _parse_route_item(routes.pop())
        forwarded.uri = last.uri.copy() if isinstance(last.uri, SipURI) else last.uri
        result.strict_route_compat = True
        result.own_uris.append(uri)
    # 16.4: a maddr of ours is stripped with the port and transport.
    uri = forwarded.uri
    if isinstance(uri, SipURI) and uri.maddr:
        probe = uri.copy()
        probe.host = uri.maddr
        probe.params.remove("maddr")
        if is_local_uri(probe):
            stripped = uri.copy()
            stripped.params.remove("maddr")
            stripped.params.remove("transport")
            stripped.port = None
            forwarded.uri = stripped
            result.maddr_stripped = True
    # 16.4: the top Route value is ours: remove it (and a second one of Kamailio's r2).
    if routes:
        top_uri = _parse_route_item(routes[0]).uri
        if isinstance(top_uri, SipURI) and is_local_uri(top_uri):
            routes.pop(0)
            result.loose_routed = True
            result.own_uris.append(top_uri)
            if "r2" in top_uri.params and routes:
                second_uri = _parse_route_item(routes[0]).uri
                if isinstance(second_uri, SipURI) and is_local_uri(second_uri):
                    routes.pop(0)
                    result.own_uris.append(second_uri)
    if result.strict_route_compat or result.loose_routed:
        _set_list_items(forwarded.headers, "Route", routes)
    return result


# --- 16.6 request forwarding ---------------------------------------------------------

@dataclass
class Forward:
    """A request ready for a new client transaction and the URI to resolve (RFC 3263)."""

    request: Request
    next_hop: URI
    strict_next_hop: bool = False  # 16.6 item 6: the next hop is a strict router


def prepare_forward(request: Request, target_uri: URI | str | None, our_via: Via,
                    record_route: str | None = None) -> Forward:
    """RFC 3261 16.6 items 1 to 9 for one branch.

    ``target_uri`` becomes the Request-URI (None keeps it: a loose-routed request);
    ``our_via`` goes on top, a copy with a fresh branch when it has no RFC 3261
    branch; ``record_route`` is the URI of ours to record (``lr`` and the From tag as
    ``ftag`` added when missing), or None. Raises SIPParseError (483 for a
    Max-Forwards of 0) for what cannot be forwarded.
    """
    forwarded = request.copy()  # 16.6 item 1
    if target_uri is not None:  # 16.6 item 2
        forwarded.uri = parse_uri(target_uri, "target URI") if isinstance(target_uri, str) else _copy_uri(target_uri)
    # 16.6 item 3: Max-Forwards.
    max_forwards = forwarded.max_forwards
    if max_forwards is None:
        forwarded.headers.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
    elif max_forwards == 0:
        raise SIPParseError("Max-Forwards is 0", status=483, element="Max-Forwards")
    else:
        forwarded.headers.set("Max-Forwards", str(max_forwards - 1))
    # 16.6 item 6: a strict router as next hop gets the Request-URI, the old one goes last.
    routes = _list_items(forwarded.headers, "Route")
    strict = False
    if routes:
        first_uri = _parse_route_item(routes[0]).uri
        if not isinstance(first_uri, SipURI):
            raise SIPParseError(f"next hop {first_uri.scheme}: is not a SIP or SIPS URI", element="Route")
        if not first_uri.loose_route:
            routes.pop(0)
            routes.append(f"<{forwarded.uri}>")
            forwarded.uri = first_uri.copy()
            _set_list_items(forwarded.headers, "Route", routes)
            strict = True
    # 16.6 item 4: our Record-Route value before the others.
    if record_route is not None:
        _insert_record_route(forwarded, _record_route_value(forwarded, record_route, routes))
    # 16.6 item 7: the next hop.
    if strict or not routes:
        next_hop: URI = forwarded.uri
    else:
        next_hop = _parse_route_item(routes[0]).uri
    # 16.6 item 8: our Via on top with a unique branch.
    via = our_via.copy()
    if not has_magic_cookie(via.branch):
        via.params.set("branch", new_branch())
    forwarded.headers.prepend("Via", str(via))
    # 16.6 item 9: Content-Length (a stream needs it; the value follows the body).
    if "Content-Length" not in forwarded.headers:
        forwarded.headers.add("Content-Length", str(len(forwarded.body)))
    return Forward(forwarded, next_hop, strict)


def _record_route_value(request: Request, record_route: str, routes_after_item_6: list[str]) -> str:
    """Our Record-Route value (16.6 item 4): ``<uri;lr;ftag=...>``, sips when needed; in
    Kamailio's order: ``transport`` first, then ``lr`` and ``ftag``, then the others
    (vsf/vst)."""
    uri = parse_uri(record_route, "Record-Route")
    if not isinstance(uri, SipURI):
        raise SIPParseError("our Record-Route must be a SIP or SIPS URI", element="Record-Route")
    params = list(uri.params.items())
    lead: list[tuple[str, str | None]] = []
    if "lr" not in uri.params:
        lead.append(("lr", None))
    from_ = request.from_
    if "ftag" not in uri.params and from_ is not None and from_.tag is not None:
        lead.append(("ftag", from_.tag))  # Kamailio's append_fromtag
    first = 1 if params and params[0][0].lower() == "transport" else 0
    uri.params = Parameters(params[:first] + lead + params[first:])
    # 16.6 item 4: a sips Request-URI or top Route makes the Record-Route sips.
    secure = request.uri.secure
    if routes_after_item_6:
        secure = secure or _parse_route_item(routes_after_item_6[0]).uri.secure
    if secure:
        uri.scheme = "sips"
    return f"<{uri}>"


def _insert_record_route(request: Request, value: str) -> None:
    items = request.headers.items()
    headers = Headers()
    placed = False
    for name, existing in items:
        if not placed and name.lower() == "record-route":
            headers.add("Record-Route", value)
            placed = True
        headers.add(name, existing)
    if not placed:
        headers.prepend("Record-Route", value)
    request.headers = headers


# --- 16.7 response processing ---------------------------------------------------------

class _BranchState(enum.Enum):
    CALLING = "calling"  # nothing heard yet
    PROCEEDING = "proceeding"  # a provisional response
    COMPLETED = "completed"  # a final response (or a timeout / transport failure)


@dataclass
class _Branch:
    state: _BranchState = _BranchState.CALLING
    final: Response | None = None  # upstream form (our Via removed) or synthesized
    cancel_pending: bool = False  # CANCEL it at its first provisional response (9.1)
    cancelled: bool = False
    local: bool = False  # final synthesized here (timeout, transport failure), not received


@dataclass
class ContextUpdate:
    """What to do after an event: responses to send upstream now, in order, branches to
    CANCEL now, and whether every branch is done with no final sent (the failure
    route's turn; then ``ResponseContext.finish``)."""

    forward: list[Response] = field(default_factory=list)
    cancel: list[int] = field(default_factory=list)
    completed: bool = False


class ResponseContext:
    """The response context of one proxied request (RFC 3261 16.7).

    ``request`` is the request as received (upstream Vias): synthesized responses
    (408, 500) are built from it with ``to_tag``.
    """

    def __init__(self, request: Request, to_tag: str | None = None):
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.to_tag = to_tag or token_hex(6)
        self.branches: list[_Branch] = []
        self.final_sent: Response | None = None
        self.received_6xx = False
        self.cancelled = False
        self._order: list[int] = []  # branch numbers in the order their finals came

    @property
    def pending(self) -> list[int]:
        """Branches without a final response."""
        return [n for n, b in enumerate(self.branches) if b.state is not _BranchState.COMPLETED]

    @property
    def can_fork(self) -> bool:
        return self.final_sent is None and not self.received_6xx and not self.cancelled

    def add_branch(self) -> int:
        """A new branch's number (serial forking from a failure route included)."""
        if not self.can_fork:
            raise BranchRefused("no new branch after a 6xx, a CANCEL or a final response")
        self.branches.append(_Branch())
        return len(self.branches) - 1

    def receive(self, branch: int, response: Response) -> ContextUpdate:
        """A response from downstream on ``branch``, as received (our Via on top)."""
        state = self.branches[branch]
        upstream = response_for_upstream(response)
        if upstream is None:
            return ContextUpdate()  # 16.7 item 3: nothing to send it to; ignored
        update = ContextUpdate()
        status = response.status
        if status < 200:
            if state.state is _BranchState.CALLING:
                state.state = _BranchState.PROCEEDING
                if state.cancel_pending:  # 9.1: the CANCEL waited for this
                    state.cancel_pending = False
                    state.cancelled = True
                    update.cancel.append(branch)
            # 16.7 item 5: provisional responses but 100 go up at once, before a final.
            if status != 100 and self.final_sent is None and state.state is _BranchState.PROCEEDING:
                update.forward.append(upstream)
            return update
        if 200 <= status < 300:
            # 16.7 item 5: every 2xx before the final, every INVITE 2xx after it.
            if self.final_sent is None or self.is_invite:
                update.forward.append(upstream)
            if state.state is not _BranchState.COMPLETED:
                state.state = _BranchState.COMPLETED
                state.final = upstream
                self._order.append(branch)
            if self.final_sent is None:
                self.final_sent = upstream
                update.cancel.extend(self._cancel_pending())  # 16.7 item 10
            return update
        if state.state is _BranchState.COMPLETED:
            return update  # a late final on a done branch
        self._complete(branch, upstream)
        if status >= 600 and self.final_sent is None:
            # 16.7 item 5: a 6xx waits, the other branches are cancelled, no new ones.
            self.received_6xx = True
            update.cancel.extend(self._cancel_pending())
        update.completed = self._is_complete()
        return update

    def timed_out(self, branch: int) -> ContextUpdate:
        """The branch's client transaction timed out: a 408 for it (16.7, 17.1.1.2), a 487
        when it was being cancelled (what Kamailio fakes for a branch it cancels)."""
        state = self.branches[branch]
        return self._synthesize(branch, 487 if state.cancelled or state.cancel_pending else 408)

    def transport_failed(self, branch: int) -> ContextUpdate:
        """The branch could not be sent: a 503 for it (RFC 3261 16.9)."""
        return self._synthesize(branch, 503)

    def cancel(self) -> ContextUpdate:
        """A CANCEL matched this context (RFC 3261 16.10): the branches to CANCEL now;
        the others are cancelled at their first provisional response."""
        self.cancelled = True
        return ContextUpdate(cancel=self._cancel_pending(), completed=self._is_complete())

    def best_response(self) -> Response:
        """The response 16.7 item 6 chooses, with 16.7 item 7's challenges, not yet sent."""
        number = self.picked_branch()
        if number is None:
            return make_response(self.request, 408, to_tag=self.to_tag)
        best = self.branches[number].final
        assert best is not None
        candidates = [self.branches[n].final for n in self._failed_branches()]
        if best.status == 503:
            # 16.7 item 6: a 503 would say this proxy cannot serve anything.
            best = best.copy()
            best.status, best.reason = 500, "Server Internal Error"
        if best.status in (401, 407):
            best = _aggregate_challenges(best, [r for r in candidates if r is not best and r.status in (401, 407)])
        return best

    def picked_branch(self) -> int | None:
        """The branch whose final response 16.7 item 6 chooses (Kamailio's "picked
        branch"; the first on a tie), None when no branch has a final >= 300."""
        numbers = self._failed_branches()
        if not numbers:
            return None
        return min(numbers, key=lambda n: _response_priority(self.branches[n].final))  # type: ignore[arg-type]

    def is_local(self, branch: int) -> bool:
        """Whether the branch's final was synthesized here (a timeout, a transport failure)."""
        return self.branches[branch].local

    def _failed_branches(self) -> list[int]:
        """Branches with a final >= 300, in the order the finals came."""
        return [n for n in self._order if (final := self.branches[n].final) is not None and final.status >= 300]

    def finish(self) -> Response:
        """The final response to send upstream now (16.7 items 6 and 7); no branch after."""
        if self.final_sent is not None:
            raise BranchRefused("a final response was already sent")
        best = self.best_response()
        self.final_sent = best
        return best

    def _synthesize(self, branch: int, status: int) -> ContextUpdate:
        state = self.branches[branch]
        if state.state is _BranchState.COMPLETED:
            return ContextUpdate()
        self._complete(branch, make_response(self.request, status, to_tag=self.to_tag))
        state.cancel_pending = False
        state.local = True
        return ContextUpdate(completed=self._is_complete())

    def _complete(self, branch: int, final: Response) -> None:
        state = self.branches[branch]
        state.state = _BranchState.COMPLETED
        state.final = final
        state.cancel_pending = False
        self._order.append(branch)

    def _cancel_pending(self) -> list[int]:
        """Mark every pending branch cancelled; return those that may be cancelled now (9.1)."""
        if not self.is_invite:
            return []  # only INVITE client transactions are cancelled (9.1)
        now = []
        for number, branch in enumerate(self.branches):
            if branch.cancelled or branch.state is _BranchState.COMPLETED:
                continue
            if branch.state is _BranchState.PROCEEDING:
                branch.cancelled = True
                now.append(number)
            else:
                branch.cancel_pending = True
        return now

    def _is_complete(self) -> bool:
        return self.final_sent is None and bool(self.branches) and not self.pending


def _response_priority(response: Response) -> int:
    """Lower is better (16.7 item 6, Kamailio's t_pick_branch priorities)."""
    status = response.status
    status_class, rest = divmod(status, 100)
    if status_class == 6:
        return 1000 + rest
    if status_class == 4:
        return 4000 + (PREFERRED_4XX.index(status) if status in PREFERRED_4XX else 100 + rest)
    if status_class in (3, 5):
        return status_class * 1000 + rest
    return 10000 + status


def _aggregate_challenges(chosen: Response, others: list[Response]) -> Response:
    """16.7 item 7: every other 401/407's WWW-/Proxy-Authenticate values, unmodified."""
    result = chosen.copy()
    for other in others:
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            for value in other.headers.get_all(name):
                result.headers.add(name, value)
    return result


def response_for_upstream(response: Response, is_our_via: Callable[[Via], bool] | None = None) -> Response | None:
    """A copy of ``response`` without its top Via (RFC 3261 16.7 item 3), or None when it
    must not be forwarded: no Via left, a top Via that ``is_our_via`` refuses, or a Via
    that does not parse (18.1.2: dropped, nobody to answer)."""
    try:
        top = response.top_via
        if top is None or (is_our_via is not None and not is_our_via(top)):
            return None
        upstream = response.copy()
        values = split_list(upstream.headers.get("Via") or "", "Via")
        upstream.headers.remove_first("Via")
        if len(values) > 1:
            upstream.headers.prepend("Via", ", ".join(values[1:]))
        next_via = upstream.top_via
        if next_via is None or _unroutable(next_via):
            return None
    except SIPParseError:
        return None
    return upstream


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _unroutable(via: Via) -> bool:
    """A Via that sends the response to a broadcast, multicast or unspecified address
    (RFC 4475 3.3.10); an explicit maddr is the sender's choice (RFC 3261 18.2.2)."""
    if via.maddr:
        return False
    address = ip_address_of(bare_host(via.received or via.host))
    if address is None:
        return False  # a host name
    return address.is_multicast or address.is_unspecified or address == _BROADCAST


# --- 16.10 CANCEL, 16.11 and 17.2.1 ACK ------------------------------------------------

class CancelDisposition(enum.Enum):
    """What to do with a CANCEL (RFC 3261 16.10)."""

    CANCEL_BRANCHES = "cancel branches"  # answer 200, ResponseContext.cancel()
    ANSWER_ONLY = "answer only"  # answer 200: the final response is already out
    FORWARD_STATELESSLY = "forward statelessly"  # no context: 16.10's last paragraph


def cancel_disposition(context: ResponseContext | None) -> CancelDisposition:
    """RFC 3261 16.10 for a CANCEL whose INVITE matched ``context`` (None: no match)."""
    if context is None:
        return CancelDisposition.FORWARD_STATELESSLY
    if context.final_sent is not None:
        return CancelDisposition.ANSWER_ONLY
    return CancelDisposition.CANCEL_BRANCHES


def make_branch_cancel(forwarded_invite: Request) -> Request:
    """The CANCEL of one branch (RFC 3261 9.1): the forwarded INVITE's Request-URI,
    Call-ID, To, From, CSeq number, top Via (our branch) and Route values."""
    headers = Headers()
    top_via = forwarded_invite.top_via
    if top_via is None:
        raise SIPParseError("no Via to cancel", element="Via")
    headers.add("Via", str(top_via))
    for name in ("From", "To", "Call-ID"):
        for value in forwarded_invite.headers.get_all(name):
            headers.add(name, value)
    cseq = forwarded_invite.cseq
    if cseq is None:
        raise SIPParseError("no CSeq to cancel", element="CSeq")
    headers.add("CSeq", f"{cseq.number} CANCEL")
    for value in forwarded_invite.headers.get_all("Route"):
        headers.add("Route", value)
    headers.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
    headers.add("Content-Length", "0")
    return Request("CANCEL", _copy_uri(forwarded_invite.uri), headers)


class AckDisposition(enum.Enum):
    """What to do with an ACK."""

    ABSORB = "absorb"  # an ACK for our non-2xx: hop by hop, never forwarded (17.2.1)
    FORWARD = "forward"  # an ACK for a 2xx: end to end, statelessly (16.11, RFC 6026 7.1)


def ack_disposition(final_status_sent: int | None) -> AckDisposition:
    """``final_status_sent`` is the final status of the INVITE server transaction the ACK
    matched, None when it matched none (an ACK for a 2xx has its own branch)."""
    if final_status_sent is not None and final_status_sent >= 300:
        return AckDisposition.ABSORB
    return AckDisposition.FORWARD


def stateless_branch(request: Request) -> str:
    """A branch that is the same for every retransmission of ``request`` (RFC 3261
    16.11): a hash of its top Via branch, or of the 17.2.3 matching fields when the
    top Via has no RFC 3261 branch."""
    top = request.top_via
    if top is not None and has_magic_cookie(top.branch):
        material = ["3261", top.branch or "", str(top.host).lower(), str(top.port)]
    else:
        to, from_, cseq = request.to, request.from_, request.cseq
        material = [
            "2543", str(request.uri), (to.tag or "") if to else "", (from_.tag or "") if from_ else "",
            request.call_id or "", str(cseq.number) if cseq else "", str(top) if top else "",
        ]
    digest = hashlib.sha256("\0".join(material).encode("utf-8", "surrogateescape")).hexdigest()
    return MAGIC_COOKIE + "sl" + digest[:24]


def prepare_ack_forward(ack: Request, our_via: Via, target_uri: URI | str | None = None) -> Forward:
    """The stateless forward of an ACK for a 2xx (RFC 3261 16.11): as ``prepare_forward``
    without Record-Route, with ``stateless_branch`` as our branch."""
    if ack.method != "ACK":
        raise SIPParseError(f"{ack.method} is not an ACK", element="request line")
    via = our_via.copy()
    via.params.set("branch", stateless_branch(ack))
    return prepare_forward(ack, target_uri, via, None)


# --- header list editing ------------------------------------------------------------

def _list_items(headers: Headers, name: str) -> list[str]:
    """The comma-separated values of every ``name`` line, as written."""
    items = []
    for line in headers.get_all(name):
        for item in split_list(line, name):
            if not item:
                raise SIPParseError("empty list element", element=name)
            items.append(item)
    return items


def _set_list_items(headers: Headers, name: str, items: list[str]) -> None:
    """Replace every ``name`` line by one line of ``items`` (none when empty)."""
    if items:
        headers.set(name, ", ".join(items))
    else:
        headers.remove(name)


def _parse_route_item(item: str) -> NameAddress:
    address = parse_name_addr(item, "Route")
    address.uri  # noqa: B018 - parses the URI, SIPParseError when malformed
    return address


def _copy_uri(uri: URI) -> URI:
    return uri.copy() if isinstance(uri, SipURI) else AbsoluteURI(uri.scheme, uri.opaque)
