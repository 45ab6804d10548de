"""Typed views of SIP header values, parsed on demand.

Each ``parse_*`` function takes one header value (already unfolded) and the
header name for error messages, and raises SIPParseError on bad input.
Views are plain values: change one and write ``str(view)`` back into the
message's headers to change the message.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from typing import Callable, Final, TypeVar

from txuac.errors import SIPParseError
from txuac.sip.grammar import (
    QUOTED_INNER,
    QUOTED_STRING,
    TOKEN,
    Parameters,
    check_token,
    is_token,
    match_quoted,
    parse_digits,
    quote,
    split_list,
    split_lws,
    split_params,
    strip_lws,
    unquote,
)
from txuac.sip.memo import ParseMemo
from txuac.sip.methods import KNOWN_METHODS
from txuac.sip.uri import URI, parse_port, parse_uri, split_host_port

T = TypeVar("T")
MAX_DELTA_SECONDS: Final = 2**32 - 1
_WHITESPACE_RE: Final = re.compile(r"\s")


class NameAddress:
    """``[display-name] <uri> *(;param)`` as in From, To, Contact, Route (RFC 3261 20.10).

    The URI is parsed when first read.
    """

    __slots__ = ("display_name", "params", "_uri", "_uri_text", "_element")

    def __init__(
        self,
        uri: URI | str,
        display_name: str | None = None,
        params: Parameters | None = None,
        *,
        element: str = "name-addr",
    ):
        self.display_name = display_name
        self.params = params if params is not None else Parameters()
        self._element = element
        self._uri: URI | None
        self._uri_text: str | None
        if isinstance(uri, str):
            self._uri = None
            self._uri_text = uri
        else:
            self._uri = uri
            self._uri_text = None

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(self._uri_text or "", self._element)
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value
        self._uri_text = None

    @property
    def uri_text(self) -> str:
        return (self._uri_text or "") if self._uri is None else str(self._uri)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The ``expires`` contact parameter (RFC 3261 10.2.1.1), clamped to 2**32-1."""
        value = self.params.get("expires")
        if value is None:
            return None
        return parse_delta_seconds(value, self._element)

    def copy(self, element: str | None = None) -> "NameAddress":
        """An independent copy; ``element`` names the header its URI's errors are reported in."""
        uri = self._uri.copy() if self._uri is not None and hasattr(self._uri, "copy") else self.uri_text
        return NameAddress(uri, self.display_name, self.params.copy(), element=element or self._element)

    def __str__(self) -> str:
        text = f"<{self.uri_text}>{self.params}"
        if self.display_name is not None:
            return f"{quote(self.display_name)} {text}"
        return text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddress):
            return NotImplemented
        return (
            self.display_name == other.display_name
            and self.uri == other.uri
            and self.params == other.params
        )

    def __repr__(self) -> str:
        return f"NameAddress({str(self)!r})"


class Wildcard:
    """The ``Contact: *`` of a REGISTER that removes every binding (RFC 3261 10.2.2)."""

    __slots__ = ()

    def __str__(self) -> str:
        return "*"

    def __repr__(self) -> str:
        return "WILDCARD"


WILDCARD: Final = Wildcard()


# The common shapes, matched in one go: ["display" | token display] <uri> [;params]
# and addr-spec [;params]. Anything else takes the slow path, which names the error.
_NAME_ADDR_RE: Final = re.compile(
    r'[ \t]*(?:"(' + QUOTED_INNER + r')"|((?:' + TOKEN + r"[ \t]+)*" + TOKEN + r"))?"
    r"[ \t]*<([^\s<>]+)>[ \t]*(?:;(.*))?\Z",
    re.S,
)
_ADDR_SPEC_RE: Final = re.compile(r"[ \t]*([^\s;<>\"?,]+)[ \t]*(?:;(.*))?\Z", re.S)
_QUOTED_PAIR_RE: Final = re.compile(r"\\(.)", re.S)


_BRACKETED_RE: Final = re.compile(r"<([^\s<>]+)>[ \t]*(?:;(.*))?\Z", re.S)


# The name-addrs parsed recently (txuac.sip.memo): a dialog's messages repeat them.
_NAME_ADDRS: Final[ParseMemo[NameAddress]] = ParseMemo()


def parse_name_addr(text: str, element: str) -> NameAddress:
    """Parse one name-addr or addr-spec with its header parameters."""
    prototype = _NAME_ADDRS.recall(text)
    if prototype is not None:
        return prototype.copy(element)
    address = _parse_name_addr(text, element)
    if _NAME_ADDRS.parsed_before(text):
        _NAME_ADDRS.keep(text, address.copy(element))
    return address


def _parse_name_addr(text: str, element: str) -> NameAddress:
    if text[:1] == "<":
        m = _BRACKETED_RE.match(text)
        if m is not None:
            return _name_addr(m.group(1), None, m.group(2), element)
    m = _NAME_ADDR_RE.match(text)
    if m is not None:
        quoted, display, uri_text, params_text = m.groups()
        if quoted is not None:
            display = _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
        elif display is not None:
            display = " ".join(split_lws(display))
        return _name_addr(uri_text, display, params_text, element)
    m = _ADDR_SPEC_RE.match(text)
    if m is not None and ":" in m.group(1):
        return _name_addr(m.group(1), None, m.group(2), element)
    return _parse_name_addr_slowly(text, element)


def _name_addr(uri_text: str, display: str | None, params_text: str | None, element: str) -> NameAddress:
    params = Parameters.parse(params_text, element) if params_text is not None else Parameters()
    return NameAddress(uri_text, display, params, element=element)


def _parse_name_addr_slowly(text: str, element: str) -> NameAddress:
    text = strip_lws(text)
    if not text:
        raise SIPParseError("empty value", element=element)
    display: str | None = None
    if text[0] == '"':
        end = match_quoted(text, 0, element)
        display = unquote(text[:end])
        lt = end
        while lt < len(text) and text[lt] in " \t":
            lt += 1
        if lt >= len(text) or text[lt] != "<":
            raise SIPParseError("expected '<' after the display name", element=element)
    else:
        lt = text.find("<")
        if lt > 0:
            words = split_lws(text[:lt])
            if words:
                for word in words:
                    if not is_token(word):
                        raise SIPParseError(
                            f"display name {strip_lws(text[:lt])[:40]!r} must be quoted", element=element
                        )
                display = " ".join(words)
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SIPParseError("unbalanced '<'", element=element)
        uri_text = text[lt + 1 : gt]
        if _WHITESPACE_RE.search(uri_text):
            raise SIPParseError("whitespace inside <addr-spec>", element=element)
        rest = strip_lws(text[gt + 1 :])
        if rest:
            if rest[0] != ";":
                raise SIPParseError(f"junk after '>': {rest[:20]!r}", element=element)
            params = Parameters.parse(rest[1:], element)
        else:
            params = Parameters()
        return NameAddress(uri_text, display, params, element=element)
    # addr-spec without brackets: header parameters start at the first ';'
    # and the URI may not contain ',', '?' or ';' (RFC 3261 20.10).
    semicolon = text.find(";")
    if semicolon >= 0:
        uri_text = strip_lws(text[:semicolon])
        params = Parameters.parse(text[semicolon + 1 :], element)
    else:
        uri_text = text
        params = Parameters()
    if "?" in uri_text or "," in uri_text or _WHITESPACE_RE.search(uri_text):
        raise SIPParseError("a URI with '?', ',' or spaces must be enclosed in <>", element=element)
    return NameAddress(uri_text, None, params, element=element)


def parse_name_addr_list(value: str, element: str, allow_wildcard: bool = False) -> list:
    """Parse a comma-separated list of name-addrs (Contact, Route, Record-Route, Path)."""
    if "," not in value:
        if allow_wildcard and strip_lws(value) == "*":
            return [WILDCARD]
        return [parse_name_addr(value, element)]
    return _parse_items(value, element, parse_name_addr)


def _parse_items(value: str, element: str, parse_item: Callable[[str, str], T]) -> list[T]:
    """Each element of a comma list parsed by ``parse_item``; an empty element is an error."""
    result = []
    for item in split_list(value, element):
        if not item:
            raise SIPParseError("empty list element", element=element)
        result.append(parse_item(item, element))
    return result


class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...`` (RFC 3261 20.42)."""

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Parameters | None = None,
        protocol: str = "SIP/2.0",
    ):
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params if params is not None else Parameters()

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The port filled in by the server (RFC 3581), None when absent or empty."""
        value = self.params.get("rport")
        return int(value) if value else None  # checked by parse_port when parsed

    @property
    def rport_requested(self) -> bool:
        """True when the client asked for ``rport`` (RFC 3581 3)."""
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def copy(self) -> "Via":
        return Via(self.transport, self.host, self.port, self.params.copy(), self.protocol)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{self.params}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.protocol.upper() == other.protocol.upper()
            and self.transport.upper() == other.transport.upper()
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
        )

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


_VIA_RE: Final = re.compile(
    r"([^\s/]+)[ \t]*/[ \t]*([^\s/]+)[ \t]*/[ \t]*([^\s/;]+)[ \t]+([^;]+?)[ \t]*(?:;(.*))?\Z", re.S
)
_SENT_BY_COLON_RE: Final = re.compile(r"[ \t]*:[ \t]*(?=[0-9]+\Z)")


_HOST: Final = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?"
_VIA_FAST_RE: Final = re.compile(
    r"[ \t]*(" + TOKEN + r")[ \t]*/[ \t]*(" + TOKEN + r")[ \t]*/[ \t]*(" + TOKEN + r")[ \t]+"
    r"(" + _HOST + r")(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(?:;(.*))?\Z",
    re.S,
)


def parse_via(text: str, element: str = "Via") -> Via:
    """Parse one via-parm (one element of a Via header's comma list)."""
    m = _VIA_FAST_RE.match(text)
    if m is None:
        return _parse_via_slowly(text, element)
    name, version, transport, host, port_text, params_text = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise SIPParseError(f"invalid port {port_text!r}", element=element)
    if host[0] == "[" and host.count(":") < 2:
        raise SIPParseError(f"invalid IPv6 reference {host!r}", element=element)
    params = Parameters.parse(params_text, element) if params_text is not None else Parameters()
    _check_via_params(params, element)
    return Via(transport, host, port, params, "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name}/{version}")


_BRANCH_VALUE_RE: Final = re.compile(r"z9hG4bK" + TOKEN + r"(?=[;, \t]|\Z)")


def plain_top_branch(line: str) -> str | None:
    """The branch of the first via-parm of Via line ``line`` when it is written plainly
    (``;branch=z9hG4bK`` and a token, with no comma, quote or other branch parameter before
    it), else None: the caller parses the Via. This is all RFC 3261 17.1.3 needs to match a
    response to a client transaction. A later branch parameter changes nothing: the first
    is the one the parser's ``Via.branch`` returns too."""
    start = line.find(";branch=z9hG4bK")
    if start < 0 or line.find(",", 0, start) >= 0 or line.find('"', 0, start) >= 0:
        return None
    if "branch" in line[:start].lower():
        return None
    found = _BRANCH_VALUE_RE.match(line, start + 8)
    return found.group() if found is not None else None


def _parse_via_slowly(text: str, element: str) -> Via:
    text = strip_lws(text)
    m = _VIA_RE.match(text)
    if m is None:
        raise SIPParseError(f"malformed via-parm {text[:64]!r}", element=element)
    name, version, transport, sent_by, params_text = m.groups()
    check_token(name, element, "protocol name")
    check_token(version, element, "protocol version")
    check_token(transport, element, "transport")
    if " " in sent_by or "\t" in sent_by:
        sent_by = _SENT_BY_COLON_RE.sub(":", sent_by)
    host, port = split_host_port(sent_by, element)
    params = Parameters.parse(params_text, element) if params_text is not None else Parameters()
    _check_via_params(params, element)
    return Via(transport, host, port, params, f"{name}/{version}")


def _check_ipv6(value: str, key: str, element: str) -> None:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise SIPParseError(f"invalid {key} {value[:48]!r}", element=element) from None


_CHECKED_VIA_PARAMS: Final = frozenset({"rport", "ttl", "received", "maddr", "branch"})


def _check_via_params(params: Parameters, element: str) -> None:
    for key, value in params.items():
        lkey = key.lower()
        if lkey not in _CHECKED_VIA_PARAMS:
            continue
        if lkey == "branch":
            # The parameter list was validated as gen-values: a token but for "[]:".
            if not value or value[0] == '"' or ":" in value or "[" in value or "]" in value:
                raise SIPParseError("invalid branch", element=element)
        elif lkey == "rport":
            if value:
                parse_port(value, element)
        elif lkey == "ttl":
            ttl = None if value is None or len(value) > 10 else parse_digits(value, 255)
            if ttl is None or ttl > 255:
                raise SIPParseError("invalid ttl", element=element)
        elif not value:
            raise SIPParseError(f"{key} needs a value", element=element)
        elif ":" in value and not value.startswith("["):
            _check_ipv6(value, key, element)  # RFC 3261 received = IPv6address, unbracketed
        else:
            split_host_port(value, element)


def parse_via_list(value: str, element: str = "Via") -> list[Via]:
    return _parse_items(value, element, parse_via)


class CSeq:
    """``CSeq: 1 INVITE`` (RFC 3261 20.16)."""

    __slots__ = ("number", "method")

    def __init__(self, number: int, method: str):
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.number == other.number and self.method == other.method

    def __repr__(self) -> str:
        return f"CSeq({self.number}, {self.method!r})"


def parse_cseq(text: str, element: str = "CSeq") -> CSeq:
    parts = split_lws(text)
    if len(parts) != 2:
        raise SIPParseError(f"expected 'number method', got {text[:40]!r}", element=element)
    number, method = parts
    if method not in _COMMON_METHODS:
        check_token(method, element, "method")
    # RFC 3261 8.1.1.5: the sequence number MUST be expressible as a 32-bit
    # unsigned integer and MUST be less than 2**31.
    value = parse_digits(number, 2**31 - 1)
    if value is None or value >= 2**31:
        raise SIPParseError(f"invalid sequence number {number[:24]!r}", element=element)
    return CSeq(value, method)


_COMMON_METHODS: Final = KNOWN_METHODS


def parse_delta_seconds(text: str, element: str) -> int:
    """``delta-seconds``: digits; values above 2**32-1 are taken as 2**32-1."""
    if len(text) < 10 and text.isascii() and text.isdigit():
        return int(text)
    text = strip_lws(text)
    seconds = parse_digits(text, MAX_DELTA_SECONDS)
    if seconds is None:
        raise SIPParseError(f"expected delta-seconds, got {text[:24]!r}", element=element)
    return min(seconds, MAX_DELTA_SECONDS)


def parse_max_forwards(text: str, element: str = "Max-Forwards") -> int:
    """RFC 3261 20.22: 0 to 255 (leading zeros allowed, RFC 4475 3.1.1.1)."""
    text = strip_lws(text)
    hops = parse_digits(text, 255)  # leading zeros are allowed (RFC 4475 3.1.1.1: "0068")
    if hops is None or hops > 255:
        raise SIPParseError(f"invalid value {text[:24]!r} (0-255)", element=element)
    return hops


class RetryAfter:
    """``Retry-After: 18000 (in maintenance) ;duration=3600`` (RFC 3261 20.33)."""

    __slots__ = ("seconds", "comment", "params")

    def __init__(self, seconds: int, comment: str | None = None, params: Parameters | None = None):
        self.seconds = seconds
        self.comment = comment
        self.params = params if params is not None else Parameters()

    @property
    def duration(self) -> int | None:
        value = self.params.get("duration")
        return None if value is None else parse_delta_seconds(value, "Retry-After")

    def __str__(self) -> str:
        comment = f" ({self.comment})" if self.comment is not None else ""
        return f"{self.seconds}{comment}{self.params}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryAfter):
            return NotImplemented
        return (self.seconds, self.comment, self.params) == (other.seconds, other.comment, other.params)

    def __repr__(self) -> str:
        return f"RetryAfter({str(self)!r})"


_RETRY_AFTER_RE: Final = re.compile(r"[ \t]*([0-9]+)[ \t]*")


def parse_retry_after(text: str, element: str = "Retry-After") -> RetryAfter:
    m = _RETRY_AFTER_RE.match(text)
    if m is None:
        raise SIPParseError(f"expected delta-seconds, got {strip_lws(text)[:24]!r}", element=element)
    seconds = parse_delta_seconds(m.group(1), element)
    pos = m.end()
    comment = None
    if pos < len(text) and text[pos] == "(":
        end = _comment_end(text, pos, element)
        comment = text[pos + 1 : end - 1]
        pos = end
    rest = strip_lws(text[pos:])
    params = Parameters()
    if rest:
        if rest[0] != ";":
            raise SIPParseError(f"junk {rest[:20]!r}", element=element)
        params = Parameters.parse(rest[1:], element)
        duration = params.get("duration")
        if "duration" in params:
            parse_delta_seconds(duration or "", element)
    return RetryAfter(seconds, comment, params)


def _comment_end(text: str, pos: int, element: str) -> int:
    """Index past the comment starting at ``text[pos] == '('`` (nesting, quoted-pairs)."""
    depth = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    raise SIPParseError("unterminated comment", element=element)


class AuthParams:
    """One challenge or credentials: a scheme and its auth-params (RFC 3261 25.1, RFC 7235).

    ``params`` keeps (name, raw value) in order; ``get`` returns the value
    with quotes and escapes removed. ``token68`` holds a bare credentials blob.
    """

    __slots__ = ("scheme", "params", "token68")

    def __init__(self, scheme: str, params: list[tuple[str, str]] | None = None, token68: str | None = None):
        self.scheme = scheme
        self.params = list(params) if params else []
        self.token68 = token68

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return unquote(value)
        return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self.params)

    def __str__(self) -> str:
        if self.token68 is not None:
            return f"{self.scheme} {self.token68}"
        if not self.params:
            return self.scheme
        return self.scheme + " " + ", ".join(f"{k}={v}" for k, v in self.params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuthParams):
            return NotImplemented
        return (
            self.scheme.lower() == other.scheme.lower()
            and self.params == other.params
            and self.token68 == other.token68
        )

    def __repr__(self) -> str:
        return f"AuthParams({self.scheme!r}, {len(self.params)} params)"


# auth-param = token EQUAL ( token / quoted-string ); some stacks send unquoted
# URIs (uri=sip:...), so any run without quotes, spaces or commas is accepted too.
_AUTH_PARAM_RE: Final = re.compile(r"(" + TOKEN + r")[ \t]*=[ \t]*(" + QUOTED_STRING + r'|[^\s",=][^\s",]*)\Z')
_SCHEME_START_RE: Final = re.compile(r"(" + TOKEN + r")(?:[ \t]+(.*))?\Z", re.S)
_TOKEN68_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")


_AUTH_VALUE: Final = QUOTED_STRING + r'|[^\s",=][^\s",]*'
_AUTH_PAIR: Final = r"(" + TOKEN + r")[ \t]*=[ \t]*(" + _AUTH_VALUE + r")"
# One scheme with one or more auth-params: the usual shape, parsed in one go.
_SINGLE_AUTH_RE: Final = re.compile(
    r"[ \t]*(" + TOKEN + r")[ \t]+((?:" + TOKEN + r"[ \t]*=[ \t]*(?:" + _AUTH_VALUE + r")[ \t]*,[ \t]*)*"
    + TOKEN + r"[ \t]*=[ \t]*(?:" + _AUTH_VALUE + r"))[ \t]*\Z"
)
_AUTH_PAIRS_RE: Final = re.compile(_AUTH_PAIR)


def parse_auth_list(value: str, element: str) -> list[AuthParams]:
    """Parse a (Proxy-|WWW-)Authenticate or (Proxy-)Authorization value.

    Several challenges may share one header (RFC 7235 4.1): a list element
    that starts with a bare token followed by whitespace starts a new one.
    """
    m = _SINGLE_AUTH_RE.match(value)
    if m is not None and not _starts_second_challenge(m.group(2)):
        return [AuthParams(m.group(1), _AUTH_PAIRS_RE.findall(m.group(2)))]
    result: list[AuthParams] = []
    current: AuthParams | None = None
    param_match = _AUTH_PARAM_RE.match
    for item in split_list(value, element):
        if not item:
            continue  # RFC 7230 7: empty list elements are ignored
        m = param_match(item)
        if m is not None and current is not None and current.token68 is None:
            current.params.append((m.group(1), m.group(2)))
            continue
        m = _SCHEME_START_RE.match(item)
        if m is None:
            raise SIPParseError(f"expected an auth scheme or auth-param, got {item[:32]!r}", element=element)
        current = AuthParams(m.group(1))
        result.append(current)
        rest = m.group(2)
        if rest:
            rest = strip_lws(rest)
            pm = param_match(rest)
            if pm is not None:
                current.params.append((pm.group(1), pm.group(2)))
            elif _TOKEN68_RE.match(rest):
                current.token68 = rest
            else:
                raise SIPParseError(f"malformed auth-param {rest[:32]!r}", element=element)
    if not result:
        raise SIPParseError("no auth scheme", element=element)
    return result


def _starts_second_challenge(params_text: str) -> bool:
    """True when a second ``scheme param=...`` hides inside what looked like one challenge."""
    return _SECOND_SCHEME_RE.search(params_text) is not None


_SECOND_SCHEME_RE: Final = re.compile(r",[ \t]*" + TOKEN + r"[ \t]+" + TOKEN + r"[ \t]*=")

_MONTHS: Final = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_DATE_RE: Final = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT\Z"
)


def parse_date(text: str, element: str = "Date") -> datetime:
    """RFC 1123 date in GMT only (RFC 3261 20.17)."""
    text = strip_lws(text)
    m = _DATE_RE.match(text)
    if m is None or m.group(3) not in _MONTHS:
        raise SIPParseError(f"not an RFC 1123 GMT date: {text[:40]!r}", element=element)
    try:
        return datetime(
            int(m.group(4)),
            _MONTHS[m.group(3)],
            int(m.group(2)),
            int(m.group(5)),
            int(m.group(6)),
            int(m.group(7)),
            tzinfo=timezone.utc,
        )
    except ValueError as e:
        raise SIPParseError(f"impossible date: {e}", element=element) from None


def parse_call_id(text: str, element: str = "Call-ID") -> str:
    """``callid = word [ "@" word ]`` (RFC 3261 25.1)."""
    text = strip_lws(text)
    if _CALL_ID_RE.match(text) is None:
        raise SIPParseError(f"invalid Call-ID {text[:40]!r}", element=element)
    return text


_WORD: Final = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID_RE: Final = re.compile(_WORD + r"(?:@" + _WORD + r")?\Z")


_TOKEN_LIST_RE: Final = re.compile(r"[ \t]*" + TOKEN + r"(?:[ \t]*,[ \t]*" + TOKEN + r")*[ \t]*\Z")


def parse_token_list(value: str, element: str) -> list[str]:
    """A comma list of tokens (Require, Supported, Allow, ...); empty elements skipped."""
    if _TOKEN_LIST_RE.match(value):
        return [strip_lws(token) for token in value.split(",")]
    tokens = []
    for item in split_list(value, element):
        if item:
            tokens.append(check_token(item, element))
    return tokens


__all__ = [
    "AuthParams",
    "CSeq",
    "NameAddress",
    "RetryAfter",
    "Via",
    "WILDCARD",
    "Wildcard",
    "parse_auth_list",
    "parse_call_id",
    "parse_cseq",
    "parse_date",
    "parse_delta_seconds",
    "parse_max_forwards",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_retry_after",
    "parse_token_list",
    "parse_via",
    "parse_via_list",
    "split_params",
]
