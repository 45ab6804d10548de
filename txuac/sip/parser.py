"""bytes -> Request/Response, for one datagram or one framed stream message.

The parser checks the structure (start line, header lines, Content-Length,
CSeq) eagerly and leaves every other header to the typed views. It raises
SIPParseError and nothing else, whatever the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from txuac.errors import SIPParseError
from txuac.sip.headers import _NAME_CACHE, Headers, header_names
from txuac.sip.fields import parse_cseq
from txuac.sip.grammar import CONTROL_OCTETS, ascii_upper, check_controls, has_control, is_digits, strip_lws
from txuac.sip.message import Message, Request, Response, parse_content_length
from txuac.sip.uri import SipURI, parse_uri


@dataclass(frozen=True)
class ParserLimits:
    """Bounds beyond which the parser refuses a message instead of allocating."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192


DEFAULT_LIMITS: Final = ParserLimits()

_METHOD_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# ASCII: with IGNORECASE alone, "S" also matches U+017F and a "ſIP/2.0" line would pass.
_VERSION_RE: Final = re.compile(r"SIP/([0-9]+)\.([0-9]+)\Z", re.IGNORECASE | re.ASCII)


def parse_message(data: bytes | bytearray | memoryview, limits: ParserLimits = DEFAULT_LIMITS) -> Message:
    """Parse one SIP message from a datagram.

    Octets past Content-Length are ignored (RFC 4475 3.1.1.8); without
    Content-Length the body is the rest of the datagram (RFC 3261 18.3).
    """
    try:
        return _parse(data, limits)
    except SIPParseError:
        raise
    except (ValueError, IndexError, UnicodeError, OverflowError, RecursionError) as e:
        # A defect of ours must still surface as a parse error, never as a crash.
        raise SIPParseError(f"unparseable message ({type(e).__name__})") from e


def _parse(data: bytes | bytearray | memoryview, limits: ParserLimits, head_only: bool = False) -> Message:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SIPParseError("expected bytes")
    if len(data) > limits.max_message_size:  # before any copy
        raise _too_large(data, limits)
    data = bytes(data)
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")  # RFC 3261 7.5: ignore CRLFs before the start line
    head_end, body_start, newline = _find_header_end(data)
    head, controls = _decode_head(data, head_end)
    max_lines = limits.max_headers + 1
    if len(head) > 32 * max_lines and head.count("\n") >= max_lines:
        raise SIPParseError(f"more than {limits.max_headers} header lines")  # checked before splitting
    lines = head.split(newline)
    if len(lines) > max_lines:
        raise SIPParseError(f"more than {limits.max_headers} header lines")
    start_line = lines[0]
    if not start_line:
        raise SIPParseError("empty message")
    if "\r" in start_line or "\n" in start_line:
        raise SIPParseError("bare CR or LF in the start line", element="start line")
    if len(head) > limits.max_line_length:
        _check_line_lengths(lines, limits.max_line_length)
    fields, index = _parse_header_lines(lines, limits)
    headers = Headers._from_parsed(fields, index)
    message = _parse_start_line(start_line, headers)
    if controls:
        _check_controls(start_line, fields)

    cseq_values = index.get("cseq")
    if cseq_values is not None and len(cseq_values) > 1:
        raise SIPParseError("more than one CSeq", element="CSeq")
    length_values = index.get("content-length")
    if length_values is not None and len(length_values) > 1:
        raise SIPParseError("more than one Content-Length", element="Content-Length")
    body = data[body_start:]
    if length_values is not None and not head_only:
        length = parse_content_length(length_values[0], "Content-Length")
        if length > len(body):
            raise SIPParseError(
                f"Content-Length {length} exceeds the {len(body)} octets received", element="Content-Length"
            )
        body = body[:length]
        headers.cache_view("content-length", length)
    message.body = body

    # CSeq is checked eagerly: every layer needs it and it is cheap.
    if cseq_values is not None:
        try:
            cseq = parse_cseq(cseq_values[0])
            if isinstance(message, Request) and cseq.method != message.method:
                raise SIPParseError(f"CSeq method {cseq.method!r} does not match {message.method!r}",
                                    element="CSeq")
        except SIPParseError as e:
            e.message = message  # a request still gets its 400 (RFC 3261 16.3 item 1, 8.2)
            raise
        headers.cache_view("cseq", cseq)
    return message


def _too_large(data: bytes | bytearray | memoryview, limits: ParserLimits) -> SIPParseError:
    """513 (RFC 3261 21.5.11), with the message's start line and headers when they parse
    within the limit, so that a request is answered along its Via."""
    error = SIPParseError(f"message of {len(data)} octets exceeds {limits.max_message_size}", status=513)
    head = bytes(memoryview(data)[:limits.max_message_size])  # one copy, of the part allowed
    try:
        error.message = _parse(head[:_find_header_end(head)[1]], limits, head_only=True)
    except (SIPParseError, ValueError, IndexError, UnicodeError, OverflowError):
        pass  # no head to answer: the 513 is logged only
    return error


def _find_header_end(data: bytes) -> tuple[int, int, str]:
    """(end of the header section, start of the body, line separator).

    The first line's ending decides: CRLF as RFC 3261 7.5 says, or bare LF,
    which is not RFC 3261 but common enough to accept.
    """
    first = data.find(b"\n")
    if first > 0 and data[first - 1] != 13:
        lf_end = data.find(b"\n\n")
        if lf_end >= 0:
            return lf_end, lf_end + 2, "\n"
        raise SIPParseError("no end of header section")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return end, end + 4, "\r\n"
    if data.endswith(b"\r\n") and len(data) > 2:
        # The datagram ends right after its last header line: no body.
        return len(data) - 2, len(data), "\r\n"
    raise SIPParseError("no end of header section")


def _check_line_lengths(lines: list[str], limit: int) -> None:
    if len(lines[0]) > limit:
        # RFC 3261 21.4.12: 414 for an over-long Request-URI.
        raise SIPParseError("start line too long", status=400 if lines[0].startswith("SIP/") else 414,
                            element="start line")
    for line in lines:
        if len(line) > limit:
            raise SIPParseError(f"line longer than {limit} octets", element="header")


def _decode_head(data: bytes, head_end: int) -> tuple[str, bool]:
    """The header section as text, and whether it holds a control character other than
    HTAB, CR and LF (found with bytes.translate: ~1 ns an octet, a regex takes five)."""
    raw = data[:head_end]
    controls = len(raw.translate(None, CONTROL_OCTETS)) != len(raw)
    return raw.decode("utf-8", "surrogateescape"), controls


def _check_controls(start_line: str, fields: list[tuple[str, str, str]]) -> None:
    """RFC 3261 25.1: no control character but HTAB in a start line, and in a header
    value only as a quoted-pair."""
    if has_control(start_line):
        raise SIPParseError("control character in the start line", element="start line")
    for _, name, value in fields:
        check_controls(value, name)


def _parse_start_line(line: str, headers: Headers) -> Message:
    if ascii_upper(line[:4]) == "SIP/":
        version, _, rest = line.partition(" ")
        _check_version(version)
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise SIPParseError(f"invalid status code {code[:16]!r}", element="status line")
        if "\r" in reason or "\n" in reason:
            raise SIPParseError("CR or LF in the reason phrase", element="status line")
        return Response(int(code), reason, headers)
    # RFC 3261 7.1: Method SP Request-URI SP SIP-Version, single spaces only.
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SIPParseError("expected 'METHOD Request-URI SIP/2.0' with single spaces", element="request line")
    method, uri_text, version = parts
    if _METHOD_RE.match(method) is None:
        raise SIPParseError(f"invalid method {method[:32]!r}", element="request line")
    if uri_text.startswith("<"):
        raise SIPParseError("Request-URI enclosed in <>", element="Request-URI")
    if "\t" in uri_text:
        raise SIPParseError("whitespace in the Request-URI", element="Request-URI")
    uri = parse_uri(uri_text, "Request-URI")
    if isinstance(uri, SipURI) and uri.headers:
        # RFC 3261 19.1.1 table: headers are not allowed in a Request-URI.
        raise SIPParseError("headers are not allowed in the Request-URI", element="Request-URI")
    request = Request(method, uri, headers)
    try:
        _check_version(version)
    except SIPParseError as e:
        e.message = request  # answered along its Via: 505 (RFC 3261 8.2.2), or 400
        raise
    return request


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    m = _VERSION_RE.match(version)
    if m is None:
        raise SIPParseError(f"malformed SIP version {version[:16]!r}", element="start line")
    if (m.group(1), m.group(2)) != ("2", "0"):
        raise SIPParseError(f"version {version[:16]!r} not supported", status=505, element="start line")


def _parse_header_lines(lines: list[str], limits: ParserLimits) -> tuple[list[tuple[str, str, str]], dict]:
    """Unfold and split header lines into (key, canonical name, value), and index the values by key.

    One pass does both: every extra Python-level pass over the headers
    costs about as much as parsing a typed header.
    """
    result: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    names = _NAME_CACHE
    for position in range(1, len(lines)):
        line = lines[position]
        name, colon, value = line.partition(":")
        entry = names.get(name) if colon else None  # only valid names are cached: the common case ends here
        if "\r" in value or "\n" in value:
            # A bare CR or LF would survive into the value and split it on output.
            raise SIPParseError("bare CR or LF inside a header line", element=entry[1] if entry else "header")
        if entry is None:
            if not line:
                raise SIPParseError("empty line inside the header section", element="header")
            if line[0] == " " or line[0] == "\t":
                _fold(result, index, line, limits)
                continue
            if not colon:
                raise SIPParseError(f"header line without ':' {line[:40]!r}", element="header")
            entry = header_names(name)
        key = entry[0]
        value = strip_lws(value)
        result.append((key, entry[1], value))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    return result, index


def _fold(result: list[tuple[str, str, str]], index: dict, line: str, limits: ParserLimits) -> None:
    """RFC 3261 7.3.1: a continuation line; the folding is equivalent to one SP."""
    if not result:
        raise SIPParseError("continuation line before the first header", element="header")
    key, name, value = result[-1]
    if "\r" in line or "\n" in line:
        raise SIPParseError("bare CR or LF inside a header line", element=name)
    continuation = strip_lws(line)
    if not continuation:
        return  # a line of blanks adds nothing (and no trailing space)
    joined = f"{value} {continuation}" if value else continuation
    if len(joined) > limits.max_line_length:
        raise SIPParseError(f"header value longer than {limits.max_line_length}", element=name)
    result[-1] = (key, name, joined)
    index[key][-1] = joined


__all__ = ["DEFAULT_LIMITS", "ParserLimits", "parse_message"]
