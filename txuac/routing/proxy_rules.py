"""The request rules of a transaction-stateful proxy (RFC 3261 16), sans-IO.

Pure functions over ``txuac.sip`` messages: no Twisted, no clock. The proxied request
(``txuac.routing.proxied_request``) applies them to what the stack delivers and sends
what they return; the responses of its branches go through its ``ResponseContext``
(``txuac.routing.response_context``, RFC 3261 16.7).

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
our Via on top when the caller gives one (a compliant branch made when it has
none; a stateful branch leaves it to its client transaction) and Content-Length
present; ``Forward.next_hop`` is the URI to resolve (16.6 item 7).
Route values are rewritten as one line; untouched values keep their text.

CANCEL and ACK (RFC 3261 16.10, 16.11, RFC 6026): ``make_branch_cancel`` builds a
branch's CANCEL from its INVITE as sent; ``prepare_ack_forward`` forwards the ACK of
a 2xx statelessly with a branch derived from the ACK (retransmissions get the same
one). The ACK for a non-2xx never gets here: its INVITE server transaction absorbs it
(17.2.1).

Every error raised for a hostile message is a ``txuac.errors.SIPParseError`` whose
``status`` is the answer (400 almost always, 483 for a Max-Forwards of 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Final, Iterable

from txuac.errors import SIPParseError
from txuac.sip.fields import NameAddress, Via, parse_name_addr
from txuac.sip.grammar import Parameters, split_list
from txuac.sip.headers import Headers
from txuac.sip.message import Request, Response, make_response
from txuac.sip.tokens import token_hex
from txuac.sip.transaction import MAGIC_COOKIE, has_magic_cookie
from txuac.sip.uri import URI, AbsoluteURI, SipURI, parse_uri
from txuac.sip.via import new_branch

#: RFC 3261 16.6 item 3: the Max-Forwards a proxy adds when the request has none.
DEFAULT_MAX_FORWARDS: Final = 70
#: Request-URI schemes we route; others get 416 (RFC 3261 16.3 item 2).
ROUTED_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
LocalURIPredicate = Callable[[SipURI], bool]


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
    known = ROUTED_SCHEMES if routed_schemes is ROUTED_SCHEMES else {scheme.lower() for scheme in routed_schemes}
    if request.uri.scheme.lower() not in known:  # ROUTED_SCHEMES is lower case already
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

# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False)
class RouteProcessing:
    """What ``preprocess_route`` did: the request to go on with and what was ours."""

    request: Request
    strict_route_compat: bool  # the Request-URI was ours, replaced by the last Route
    loose_routed: bool  # the top Route value (or two with r2) was ours and removed
    maddr_stripped: bool
    own_uris: list[SipURI]  # ours, in the order they were found

    def __init__(self, request: Request) -> None:
        self.request = request
        self.strict_route_compat = False
        self.loose_routed = False
        self.maddr_stripped = False
        self.own_uris = []

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

@dataclass(init=False)
class Forward:
    """A request ready for a new client transaction and the URI to resolve (RFC 3263)."""

    request: Request
    next_hop: URI
    strict_next_hop: bool  # 16.6 item 6: the next hop is a strict router

    def __init__(self, request: Request, next_hop: URI, strict_next_hop: bool = False) -> None:
        self.request = request
        self.next_hop = next_hop
        self.strict_next_hop = strict_next_hop


def prepare_forward(request: Request, target_uri: URI | str | None, our_via: Via | None,
                    record_route: str | None = None) -> Forward:
    """RFC 3261 16.6 items 1 to 9 for one branch.

    ``target_uri`` becomes the Request-URI (None keeps it: a loose-routed request);
    ``our_via`` goes on top, a copy with a fresh branch when it has no RFC 3261
    branch; None leaves item 8 to the client transaction that sends the request (the
    stack puts its Via, with the transaction's branch, on top); ``record_route`` is the
    URI of ours to record (``lr`` and the From tag as ``ftag`` added when missing), or
    None. Raises SIPParseError (483 for a
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
    if our_via is not None:
        via = our_via.copy()
        if not has_magic_cookie(via.branch):
            via.params.set("branch", new_branch())
        forwarded.push_via(via)
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
    request.headers.insert_before_first("Record-Route", value)

# --- 16.10 CANCEL, 16.11 and 17.2.1 ACK ------------------------------------------------


def make_branch_cancel(forwarded_invite: Request) -> Request:
    """The CANCEL of one branch (RFC 3261 9.1): the INVITE's Request-URI, Call-ID, To,
    From, CSeq number and Route values, and its top Via alone (ours, with the branch of
    the client transaction that sent it), from the INVITE as sent."""
    headers = Headers()
    top_via = forwarded_invite.top_via
    if top_via is None:
        raise SIPParseError("no Via to cancel", element="Via")
    headers.add("Via", str(top_via))
    for name in ("From", "To", "Call-ID"):
        headers.add_lines_of(forwarded_invite.headers, name)
    cseq = forwarded_invite.cseq
    if cseq is None:
        raise SIPParseError("no CSeq to cancel", element="CSeq")
    headers.add("CSeq", f"{cseq.number} CANCEL")
    headers.add_lines_of(forwarded_invite.headers, "Route")
    headers.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
    headers.add("Content-Length", "0")
    return Request("CANCEL", _copy_uri(forwarded_invite.uri), headers)


def top_via_parsed_in(message: Request | Response, received: Request | None) -> Via | None:
    """``message.top_via``, taken from ``received`` (a request whose top Via is parsed
    already: the request as the stack received it) when ``message``'s first Via line is
    ``received``'s word for word and holds one via-parm, instead of parsing the same text
    again."""
    if received is not None:
        lines, received_lines = message.headers.values("via"), received.headers.values("via")
        if lines and received_lines and lines[0] == received_lines[0] and "," not in lines[0]:
            return received.top_via
    return message.top_via


def stateless_branch(request: Request, received: Request | None = None) -> str:
    """A branch that is the same for every retransmission of ``request`` (RFC 3261
    16.11): a hash of its top Via branch, or of the 17.2.3 matching fields when the
    top Via has no RFC 3261 branch. ``received``: as for ``top_via_parsed_in``."""
    top = top_via_parsed_in(request, received)
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


def prepare_ack_forward(ack: Request, our_via: Via, target_uri: URI | str | None = None,
                        received: Request | None = None) -> Forward:
    """The stateless forward of an ACK for a 2xx (RFC 3261 16.11): as ``prepare_forward``
    without Record-Route, with ``stateless_branch`` as our branch (``received``: the ACK as
    the stack received it, its top Via parsed)."""
    if ack.method != "ACK":
        raise SIPParseError(f"{ack.method} is not an ACK", element="request line")
    via = our_via.copy()
    via.params.set("branch", stateless_branch(ack, received))
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
