"""SIP and SIPS URIs (RFC 3261 19.1, 25.1) and opaque absolute URIs.

Fields keep the text as it appeared, %-escapes included, so that
``str(parse_uri(text)) == text`` for every valid URI; ``unescape`` gives the
decoded value where a comparison (RFC 3261 19.1.4) needs it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes
from typing import Final

from txuac.errors import SIPParseError
from txuac.sip.grammar import Parameters, parse_digits
from txuac.sip.memo import ParseMemo

_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_ESCAPED: Final = r"%[0-9A-Fa-f]{2}"
# user = 1*( unreserved / escaped / user-unreserved )
_USER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|" + _ESCAPED + r")+\Z")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|" + _ESCAPED + r")*\Z")
# hostname / IPv4address (also matched by the hostname rule) / IPv6reference.
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?\Z")
_IPV6_REFERENCE_RE: Final = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
# paramchar = param-unreserved / unreserved / escaped
_PARAMCHARS_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|" + _ESCAPED + r")+\Z")
# hname / hvalue chars = hnv-unreserved / unreserved / escaped
_HNVCHARS_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|" + _ESCAPED + r")*\Z")
# Anything printable but the delimiters that would end a URI inside a header.
_OPAQUE_RE: Final = re.compile(r"[^\x00-\x20<>\"\x7f]+\Z")


def is_user(text: str) -> bool:
    """True when ``text`` is an RFC 3261 25.1 ``user`` (escapes kept as written)."""
    return _USER_RE.match(text) is not None


def is_paramchars(text: str) -> bool:
    """True when ``text`` is 1*paramchar (RFC 3261 25.1): a URI parameter's name or value."""
    return _PARAMCHARS_RE.match(text) is not None


def unescape(text: str) -> str:
    """Decode %-escapes (RFC 3261 19.1.2); octets that are not UTF-8 survive as surrogates."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


class SipURI:
    """A ``sip:`` or ``sips:`` URI."""

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "_port_text")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        *,
        scheme: str = "sip",
        password: str | None = None,
        port: int | None = None,
        params: Parameters | None = None,
        headers: list[tuple[str, str]] | None = None,
    ):
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else Parameters()
        self.headers = list(headers) if headers else []
        self._port_text: str | None = None

    @property
    def secure(self) -> bool:
        """True for ``sips:`` (RFC 3261 19.1: TLS on every hop)."""
        return self.scheme.lower() == "sips"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def loose_route(self) -> bool:
        """True when the URI carries ``lr`` (RFC 3261 19.1.1)."""
        return "lr" in self.params

    def copy(self) -> "SipURI":
        clone = SipURI(
            self.host,
            self.user,
            scheme=self.scheme,
            password=self.password,
            port=self.port,
            params=self.params.copy(),
            headers=self.headers,
        )
        clone._port_text = self._port_text
        return clone

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":" + self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            # Leading zeros are valid (port = 1*DIGIT) and kept as written.
            port_text = self._port_text
            parts.append(f":{port_text}" if port_text and int(port_text) == self.port else f":{self.port}")
        if self.params:
            parts.append(str(self.params))
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        return (
            self.scheme.lower() == other.scheme.lower()
            and self.user == other.user
            and self.password == other.password
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
            and self.headers == other.headers
        )

    def __hash__(self) -> int:
        return hash((self.scheme.lower(), self.user, self.host.lower(), self.port))

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"


class AbsoluteURI:
    """Any other absolute URI (``tel:``, ``urn:``, unknown schemes), kept opaque."""

    __slots__ = ("scheme", "opaque")

    secure = False

    def __init__(self, scheme: str, opaque: str):
        self.scheme = scheme
        self.opaque = opaque

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return self.scheme.lower() == other.scheme.lower() and self.opaque == other.opaque

    def __hash__(self) -> int:
        return hash((self.scheme.lower(), self.opaque))

    def __repr__(self) -> str:
        return f"AbsoluteURI({str(self)!r})"


URI = SipURI | AbsoluteURI


# The SIP URIs parsed recently (txuac.sip.memo): a dialog's messages repeat them.
_SIP_URIS: Final[ParseMemo[SipURI]] = ParseMemo()


def parse_uri(text: str, element: str = "URI") -> URI:
    """Parse an absolute URI; ``sip``/``sips`` get a SipURI, others an AbsoluteURI."""
    prototype = _SIP_URIS.recall(text)
    if prototype is not None:
        return prototype.copy()
    uri = _parse_uri(text, element)
    if isinstance(uri, SipURI) and _SIP_URIS.parsed_before(text):
        _SIP_URIS.keep(text, uri.copy())
    return uri


def _parse_uri(text: str, element: str) -> URI:
    if text.startswith("sip:"):
        return _parse_sip_uri("sip", text[4:], element)
    scheme, colon, rest = text.partition(":")
    if not colon or _SCHEME_RE.match(scheme) is None:
        raise SIPParseError(f"not an absolute URI: {text[:64]!r}", element=element)
    lscheme = scheme.lower()
    if lscheme != "sip" and lscheme != "sips":
        if _OPAQUE_RE.match(rest) is None:
            raise SIPParseError(f"invalid characters in {scheme} URI", element=element)
        return AbsoluteURI(scheme, rest)
    return _parse_sip_uri(scheme, rest, element)




def _unrolled(chars: str, at_least_one: bool) -> str:
    """``*(chars / escaped)`` as an unrolled loop: no nested quantifiers, no backtracking blow-up."""
    body = f"{chars}*(?:{_ESCAPED}{chars}*)*"
    if not at_least_one:
        return f"(?:{body})"
    return f"(?:{chars}+(?:{_ESCAPED}{chars}*)*|(?:{_ESCAPED}{chars}*)+)"


_USER_CHARS: Final = _unrolled(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]", True)
_PASSWORD_CHARS: Final = _unrolled(r"[A-Za-z0-9\-_.!~*'()&=+$,]", False)
_PARAM_CHARS: Final = _unrolled(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]", True)
# The common shapes in one match (with and without userinfo); anything else
# goes through the step-by-step parser below, which names the offending part.
_HOSTPORT_PARAMS: Final = (
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)(?::([0-9]{1,5}))?"
    r"((?:;" + _PARAM_CHARS + r"(?:=" + _PARAM_CHARS + r")?)*)\Z"
)
_SIP_URI_WITH_USER_RE: Final = re.compile(r"(" + _USER_CHARS + r")(?::(" + _PASSWORD_CHARS + r"))?@" + _HOSTPORT_PARAMS)
_SIP_URI_HOST_ONLY_RE: Final = re.compile(_HOSTPORT_PARAMS)


def _parse_sip_uri(scheme: str, rest: str, element: str) -> SipURI:
    if "?" not in rest:
        if "@" in rest:
            m = _SIP_URI_WITH_USER_RE.match(rest)
            if m is None:
                return _parse_sip_uri_slowly(scheme, rest, element)
            user, password, host, port_text, params_text = m.groups()
        else:
            m = _SIP_URI_HOST_ONLY_RE.match(rest)
            if m is None:
                return _parse_sip_uri_slowly(scheme, rest, element)
            user = password = None
            host, port_text, params_text = m.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                return _parse_sip_uri_slowly(scheme, rest, element)
        if host[0] == "[" and host.count(":") < 2:
            return _parse_sip_uri_slowly(scheme, rest, element)
        items = []
        if params_text:
            for piece in params_text[1:].split(";"):
                name, eq, value = piece.partition("=")
                items.append((name, value if eq else None))
        uri = SipURI(host, user, scheme=scheme, password=password, port=port, params=Parameters._adopt(items))
        uri._port_text = port_text
        return uri
    return _parse_sip_uri_slowly(scheme, rest, element)


def _parse_sip_uri_slowly(scheme: str, rest: str, element: str) -> SipURI:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if _USER_RE.match(user) is None:
            raise SIPParseError(f"invalid user part {user[:64]!r}", element=element)
        if colon:
            if _PASSWORD_RE.match(pw) is None:
                raise SIPParseError("invalid password part", element=element)
            password = pw

    headers: list[tuple[str, str]] = []
    question = rest.find("?")
    if question >= 0:
        headers = _parse_uri_headers(rest[question + 1 :], element)
        rest = rest[:question]
    semicolon = rest.find(";")
    params = Parameters()
    if semicolon >= 0:
        params = _parse_uri_params(rest[semicolon + 1 :], element)
        rest = rest[:semicolon]

    host, port = split_host_port(rest, element)
    uri = SipURI(host, user, scheme=scheme, password=password, port=port, params=params, headers=headers)
    if port is not None:
        uri._port_text = rest.rpartition(":")[2]
    return uri


def split_host_port(text: str, element: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references in brackets) and validate both."""
    port = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SIPParseError("unterminated IPv6 reference", element=element)
        host = text[: close + 1]
        tail = text[close + 1 :]
        if tail:
            if tail[0] != ":":
                raise SIPParseError(f"junk after host {host!r}", element=element)
            port = parse_port(tail[1:], element)
        if _IPV6_REFERENCE_RE.match(host) is None or host.count(":") < 2:
            raise SIPParseError(f"invalid IPv6 reference {host!r}", element=element)
        return host, port
    host, colon, port_text = text.partition(":")
    if colon:
        port = parse_port(port_text, element)
    if _HOSTNAME_RE.match(host) is None:
        raise SIPParseError(f"invalid host {host[:64]!r}", element=element)
    return host, port


def parse_port(text: str, element: str) -> int:
    """``port = 1*DIGIT``, at most five of them (ASCII only), 0 to 65535."""
    port = parse_digits(text, 65535) if len(text) <= 5 else None
    if port is None or port > 65535:
        raise SIPParseError(f"invalid port {text[:16]!r}", element=element)
    return port


def _parse_uri_params(text: str, element: str) -> Parameters:
    items: list[tuple[str, str | None]] = []
    for piece in text.split(";"):
        name, eq, value = piece.partition("=")
        if _PARAMCHARS_RE.match(name) is None:
            raise SIPParseError(f"invalid URI parameter {piece[:32]!r}", element=element)
        if eq:
            if _PARAMCHARS_RE.match(value) is None:
                raise SIPParseError(f"invalid value of URI parameter {name!r}", element=element)
            items.append((name, value))
        else:
            items.append((name, None))
    return Parameters(items)


def _parse_uri_headers(text: str, element: str) -> list[tuple[str, str]]:
    headers = []
    for piece in text.split("&"):
        name, eq, value = piece.partition("=")
        if not name or not eq or _HNVCHARS_RE.match(name) is None or _HNVCHARS_RE.match(value) is None:
            raise SIPParseError(f"invalid URI header {piece[:32]!r}", element=element)
        headers.append((name, value))
    return headers
