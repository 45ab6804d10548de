"""SIP requests and responses with typed, lazily parsed header views."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from txuac.errors import SIPParseError
from txuac.sip import fields
from txuac.sip.fields import AuthParams, CSeq, NameAddress, RetryAfter, Via
from txuac.sip.grammar import parse_digits, split_list, strip_lws
from txuac.sip.headers import TOKENS_VIEW, TOP_VIA_VIEW, VALIDATED_MARK, Headers, header_key
from txuac.sip.uri import URI, SipURI, parse_uri
from txuac.sip.tokens import token_hex

SIP_VERSION: Final = "SIP/2.0"

# RFC 3261 8.1.1: the header fields every request and response must carry.
# Max-Forwards is left out so RFC 2543 requests are accepted (RFC 4475 3.4.1).
REQUIRED_HEADERS: Final = ("To", "From", "CSeq", "Call-ID", "Via")

REASON_PHRASES: Final = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def _contact_list(value: str, name: str) -> list:
    return fields.parse_name_addr_list(value, name, allow_wildcard=True)


def _name_addr_list(value: str, name: str) -> list:
    return fields.parse_name_addr_list(value, name)


# Header key -> the Message property that parses it; validate() reads these.
TYPED_VIEWS: Final = {
    "via": "via",
    "from": "from_",
    "to": "to",
    "call-id": "call_id",
    "cseq": "cseq",
    "max-forwards": "max_forwards",
    "contact": "contacts",
    "route": "route",
    "record-route": "record_route",
    "path": "path",
    "service-route": "service_route",
    "content-length": "content_length",
    "expires": "expires",
    "min-expires": "min_expires",
    "retry-after": "retry_after",
    "date": "date",
    "www-authenticate": "www_authenticate",
    "proxy-authenticate": "proxy_authenticate",
    "authorization": "authorization",
    "proxy-authorization": "proxy_authorization",
}
TOKEN_LIST_HEADERS: Final = frozenset({"require", "proxy-require", "supported", "unsupported", "allow"})


# The views a message's copy shares instead of parsing its lines again (a proxy copies each
# request three to five times on its way through): immutable ones only. From, To, Via and
# the lists are objects a caller may change in place; copying a From with its parsed URI
# costs more than parsing again the name-addr of a copy that reads its tag only.
SHARED_VIEWS: Final = ("call-id", "max-forwards", "content-length", "expires", "min-expires", "date")


class Message:
    """What requests and responses share: headers, body and the typed views."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: Headers | None = None, body: bytes = b""):
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def _view(self, key: str, name: str, parse):
        return self.headers.single_view(key, name, parse)

    @property
    def via(self) -> list[Via]:
        """Every via-parm of every Via line, top first; a top_via already read is the
        first item, not parsed again (a proxy validates what its stack matched)."""
        headers = self.headers

        def build() -> list[Via]:
            values = headers.values("via")
            top = self.top_via if values and headers.has_view(TOP_VIA_VIEW) and "," not in values[0] else None
            if top is not None:
                vias = [top]
                for value in values[1:]:
                    vias.extend(fields.parse_via_list(value, "Via"))
                return vias
            return [via for value in values for via in fields.parse_via_list(value, "Via")]

        return headers.view("via", build)

    @property
    def top_via(self) -> Via | None:
        """The topmost via-parm, parsing only that one (or the first of ``via`` when read)."""

        def build() -> Via | None:
            if self.headers.has_view("via"):
                vias = self.via
                return vias[0] if vias else None
            values = self.headers.values("via")
            first = values[0] if values else None
            if first is None:
                return None
            item = split_list(first, "Via")[0]
            if not item:
                raise SIPParseError("empty list element", element="Via")
            return fields.parse_via(item)

        return self.headers.view(TOP_VIA_VIEW, build)

    def top_via_branch(self) -> str | None:
        """The branch of the topmost via-parm: ``top_via``'s when it is parsed already,
        else read from the Via line without parsing it when written plainly
        (``fields.plain_top_branch``). A response needs no more to find its client
        transaction, and one to a request of our own (a REGISTER's) is never forwarded: its
        Via is never parsed."""
        if not self.headers.has_view(TOP_VIA_VIEW):
            values = self.headers.values("via")
            if not values:
                return None
            branch = fields.plain_top_branch(values[0])
            if branch is not None:
                return branch
        via = self.top_via
        return via.branch if via is not None else None

    def push_via(self, via: Via) -> None:
        """Put ``via`` on top as a Via line of its own; ``top_via`` is then ``via`` itself,
        not parsed again."""
        self.headers.prepend("Via", str(via))
        self.headers.cache_view(TOP_VIA_VIEW, via)

    @property
    def from_(self) -> NameAddress | None:
        return self._view("from", "From", fields.parse_name_addr)

    @property
    def to(self) -> NameAddress | None:
        return self._view("to", "To", fields.parse_name_addr)

    @property
    def call_id(self) -> str | None:
        return self._view("call-id", "Call-ID", fields.parse_call_id)

    @property
    def cseq(self) -> CSeq | None:
        return self._view("cseq", "CSeq", fields.parse_cseq)

    @property
    def max_forwards(self) -> int | None:
        return self._view("max-forwards", "Max-Forwards", fields.parse_max_forwards)

    @property
    def contacts(self) -> list:
        """Contact entries: NameAddress values, or ``[WILDCARD]`` for ``Contact: *``."""
        return self.headers.list_view("contact", "Contact", _contact_list)

    @property
    def route(self) -> list[NameAddress]:
        return self._name_addr_header("Route")

    @property
    def record_route(self) -> list[NameAddress]:
        return self._name_addr_header("Record-Route")

    @property
    def path(self) -> list[NameAddress]:
        return self._name_addr_header("Path")

    @property
    def service_route(self) -> list[NameAddress]:
        return self._name_addr_header("Service-Route")

    def _name_addr_header(self, name: str) -> list[NameAddress]:
        return self.headers.list_view(name.lower(), name, _name_addr_list)

    @property
    def content_length(self) -> int | None:
        return self._view("content-length", "Content-Length", parse_content_length)

    @property
    def expires(self) -> int | None:
        return self._view("expires", "Expires", fields.parse_delta_seconds)

    @property
    def min_expires(self) -> int | None:
        return self._view("min-expires", "Min-Expires", fields.parse_delta_seconds)

    @property
    def retry_after(self) -> RetryAfter | None:
        return self._view("retry-after", "Retry-After", fields.parse_retry_after)

    @property
    def date(self) -> datetime | None:
        return self._view("date", "Date", fields.parse_date)

    @property
    def www_authenticate(self) -> list[AuthParams]:
        return self._auth_header("WWW-Authenticate")

    @property
    def proxy_authenticate(self) -> list[AuthParams]:
        return self._auth_header("Proxy-Authenticate")

    @property
    def authorization(self) -> list[AuthParams]:
        return self._auth_header("Authorization")

    @property
    def proxy_authorization(self) -> list[AuthParams]:
        return self._auth_header("Proxy-Authorization")

    def _auth_header(self, name: str) -> list[AuthParams]:
        return self.headers.list_view(name.lower(), name, fields.parse_auth_list)

    def tokens(self, name: str) -> list[str]:
        """The tokens of a list header such as Require, Supported or Allow."""
        return self.headers.view(
            TOKENS_VIEW + header_key(name),  # the key edits drop it by ("k" is "supported")
            lambda: [t for line in self.headers.get_all(name) for t in fields.parse_token_list(line, name)],
        )

    def validate(self) -> "Message":
        """Parse every header that has a typed view and check the required ones.

        Raises SIPParseError for the first problem (RFC 3261 8.2: a UAS
        answers 400); returns the message so calls can be chained. The views
        stay cached, so reading them afterwards costs nothing, and so does validating the
        message again until a header changes (a proxy checks what its stack checked).
        """
        self._validate_start_line()
        if self.validated:
            return self
        keys = dict.fromkeys(self.headers.keys())  # wire order: the first bad header is named
        for key in keys:
            attribute = TYPED_VIEWS.get(key)
            if attribute is not None:
                getattr(self, attribute)
            elif key in TOKEN_LIST_HEADERS:
                self.tokens(key)
        for name in REQUIRED_HEADERS:
            if name.lower() not in keys:
                raise SIPParseError("missing required header field", element=name)
        for contact in self.contacts:
            if isinstance(contact, NameAddress):
                contact.uri  # noqa: B018 - parses the URI
                contact.expires  # noqa: B018
        for address in (self.from_, self.to, *self.route, *self.record_route, *self.path):
            if address is not None:
                address.uri  # noqa: B018
        self.headers.cache_view(VALIDATED_MARK, True)
        return self

    @property
    def validated(self) -> bool:
        """Whether validate() passed on the headers as they are (any edit clears it)."""
        return self.headers.has_view(VALIDATED_MARK)

    def _validate_start_line(self) -> None:
        pass

    # --- serialisation -------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        start_line = self.start_line()
        if "\r" in start_line or "\n" in start_line:
            raise SIPParseError("CR or LF in the start line", element="start line")
        parts = [start_line, "\r\n"]
        self.headers.serialize_into(parts, len(self.body))
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + self.body

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.start_line() == other.start_line() and self.headers == other.headers and self.body == other.body


class Request(Message):
    """A SIP request: ``METHOD uri SIP/2.0``."""

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: URI, headers: Headers | None = None, body: bytes = b""):
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def copy(self) -> "Request":
        """An independent copy (headers and URI copied, body shared: bytes are immutable;
        the views of SHARED_VIEWS shared)."""
        uri = self.uri.copy() if isinstance(self.uri, SipURI) else self.uri
        return Request(self.method, uri, self.headers.copy(SHARED_VIEWS), self.body)

    def _validate_start_line(self) -> None:
        cseq = self.cseq
        if cseq is not None and cseq.method != self.method:
            raise SIPParseError(
                f"CSeq method {cseq.method!r} does not match the request method", element="CSeq"
            )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response: ``SIP/2.0 status reason``."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str | None = None, headers: Headers | None = None, body: bytes = b""):
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def copy(self) -> "Response":
        return Response(self.status, self.reason, self.headers.copy(SHARED_VIEWS), self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parse_content_length(text: str, element: str) -> int:
    """``Content-Length = 1*DIGIT`` (RFC 3261 20.14): ASCII digits, at most ten of them
    after leading zeros, between optional SP/HTAB; the parser and the framer both read
    it here."""
    text = strip_lws(text)
    length = parse_digits(text, 9_999_999_999)
    if length is None or length > 9_999_999_999:
        raise SIPParseError(f"invalid Content-Length {text[:24]!r}", element=element)
    return length


def make_request(method: str, uri: URI | str, from_: str, to: str | None = None, *,
                 from_tag: str | None = None, call_id: str | None = None, cseq: int = 1,
                 max_forwards: int = 70,
                 extra_headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
                 body: bytes = b"") -> Request:
    """A new out-of-dialog request (RFC 3261 8.1.1): To, From with a fresh tag, Call-ID,
    CSeq, Max-Forwards, then ``extra_headers``, then Content-Length.

    ``from_`` and ``to`` are name-addr texts or bare URIs (``to`` defaults to the
    Request-URI); the stack adds the Via when it sends the request.
    """
    if isinstance(uri, str):
        uri = parse_uri(uri, "Request-URI")
    headers = Headers()
    headers.add("From", f"{_bracketed(from_)};tag={from_tag or token_hex(6)}")
    headers.add("To", _bracketed(to if to is not None else str(uri)))
    headers.add("Call-ID", call_id or token_hex(16))
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Max-Forwards", str(max_forwards))
    for name, value in extra_headers:
        headers.add(name, value)
    headers.add("Content-Length", str(len(body)))
    return Request(method, uri, headers, body)


def _bracketed(address: str) -> str:
    """A bare URI in angle brackets; a name-addr as given."""
    return address if "<" in address else f"<{address}>"


# Headers a response copies from its request (RFC 3261 8.2.6.2).
_COPIED_TO_RESPONSE: Final = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(request: Request, status: int, reason: str | None = None, to_tag: str | None = None,
                  extra_headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (), body: bytes = b"") -> Response:
    """Build a response to ``request`` (RFC 3261 8.2.6): Via, From, To, Call-ID, CSeq copied,
    then ``extra_headers``, then Content-Length.

    ``to_tag`` is added to To when it has none (RFC 3261 8.2.6.2).
    """
    headers = Headers()
    for name in _COPIED_TO_RESPONSE:
        if name != "To" or to_tag is None or status == 100:
            headers.add_lines_of(request.headers, name)
            continue
        for value in request.headers.get_all(name):
            to = request.to
            if to is not None and to.tag is None:
                value = f"{value};tag={to_tag}"
            headers.add(name, value)
    for name, value in extra_headers:
        headers.add(name, value)
    headers.add("Content-Length", str(len(body)))
    return Response(status, reason, headers, body)
