"""Fuzz the sans-IO SIP core: nothing but SIPParseError may escape, and what parses round-trips.

Each input is a mutated RFC 4475 message (or a mutated generated one), random
bytes, or a generated valid message. Mutations include characters Python reads as
whitespace or digits and SIP does not (LOOKALIKES). Every input goes through
parse_message, the bytes() round trip, a plain ASCII reading of the scalar headers
and of control characters (check_sip_reading), every typed view and the values
inside them (which must re-parse from their str()), validate(), make_response for
requests, and the stream framer fed whole and in chunks. Any other exception, a
round-trip mismatch, a header read past SIP's grammar or a refused valid message is
an escape.

Usage (from the repository root): python bench/fuzz_parser.py [N=200000] [seed=0]

The generators take a ``pick`` object with ``randint(a, b)``, ``choice(seq)``
and ``randbytes(n)``, such as ``random.Random`` (and optionally
``text(alphabet, lo, hi)``); tests/sip/test_properties.py drives the same
generators and checks from hypothesis.
"""

from __future__ import annotations

import os
import random
import re
import string
import sys
import time
import traceback
from datetime import datetime, timezone

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from txuac.sip import (  # noqa: E402
    AuthParams,
    CSeq,
    KeepAlive,
    NameAddress,
    Request,
    RetryAfter,
    SIPParseError,
    SipURI,
    StreamFramer,
    Via,
    fields,
    make_response,
    parse_message,
    parse_uri,
    unescape,
)

CORPUS_DIR = os.path.join(REPO, "tests", "data", "rfc4475")


def load_corpus(directory: str = CORPUS_DIR) -> list[bytes]:
    """The RFC 4475 messages, as bytes, in file name order."""
    corpus = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".dat"):
            with open(os.path.join(directory, name), "rb") as f:
                corpus.append(f.read())
    return corpus


# --- mutations ---------------------------------------------------------------------

# What Python takes for whitespace, digits or letters and SIP does not (RFC 3261 25.1:
# LWS is SP and HTAB, DIGIT is 0-9): other control characters, Unicode spaces, non-ASCII
# digits, int()'s "_" and "+", and letters whose upper() or lower() is ASCII.
LOOKALIKES = tuple(
    char.encode("utf-8")
    for char in (
        "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x7f", "\x00", "\x85", "\xa0",
        *(chr(code) for code in range(0x2000, 0x200B)), "\u2028", "\u3000", "\ufeff",
        "\u0663", "\u00b2", "\uff10", "\u0969", "_", "+",
        "\u017f", "\u0131", "\u212a",
    )
)

INSERTIONS = (
    b"\r", b"\n", b"\r\n", b" ", b"\t", b'"', b"<", b">", b";", b",", b"%", b"\x00",
    b"\r\n ", b"\r\n\r\n", b":", b"=", b"\\", b"(", b")", b"[", b"]", b"@", b"?", b"*",
    b"\xff", b"\xc3\xa9", b"9", b"%00", b"%zz", b"::",
) + LOOKALIKES


def _flip(data: bytes, pick) -> bytes:
    if not data:
        return data
    i = pick.randint(0, len(data) - 1)
    if pick.randint(0, 1):
        byte = data[i] ^ (1 << pick.randint(0, 7))
    else:
        byte = pick.randint(0, 255)
    return data[:i] + bytes((byte,)) + data[i + 1 :]


def _insert(data: bytes, pick) -> bytes:
    i = pick.randint(0, len(data))
    return data[:i] + pick.choice(INSERTIONS) + data[i:]


def _lookalike(data: bytes, pick) -> bytes:
    """Put a LOOKALIKE where SIP reads whitespace or digits: beside a digit, SP, HTAB or
    ':' (before or after it), or in place of a SP or HTAB."""
    spots = [i for i in range(len(data)) if data[i] in b"0123456789 \t:"] if len(data) < 4096 else []
    if not spots:
        return _insert(data, pick)
    i = pick.choice(spots)
    where = pick.randint(0, 2)
    char = pick.choice(LOOKALIKES)
    if where == 2 and data[i] in b" \t":
        return data[:i] + char + data[i + 1 :]
    i += where == 1
    return data[:i] + char + data[i:]


def _truncate(data: bytes, pick) -> bytes:
    return data[: pick.randint(0, len(data))]


def _delete(data: bytes, pick) -> bytes:
    i = pick.randint(0, len(data))
    return data[:i] + data[i + pick.randint(1, 16) :]


def _duplicate(data: bytes, pick) -> bytes:
    """Copy a slice elsewhere, sometimes many times (long digit runs, many headers)."""
    i = pick.randint(0, len(data))
    piece = data[i : i + pick.randint(1, 64)]
    times = pick.choice((1, 1, 2, 3, 100, 5000))
    if len(piece) * times > 200_000:
        times = 1
    j = pick.randint(0, len(data))
    return data[:j] + piece * times + data[j:]


def _long_run(data: bytes, pick) -> bytes:
    """Insert a long run of one character: overlarge numbers, long tokens, deep whitespace."""
    i = pick.randint(0, len(data))
    return data[:i] + pick.choice((b"0", b"9", b" ", b"a", b";", b",")) * pick.choice((300, 5000)) + data[i:]


MUTATIONS = (
    _flip, _flip, _insert, _insert, _insert, _lookalike, _lookalike, _truncate, _delete, _duplicate, _duplicate,
    _long_run,
)


def mutate(data: bytes, pick, count: int) -> bytes:
    """Apply ``count`` random mutations (flips, insertions, lookalikes, truncations, deletions, duplications, runs)."""
    for _ in range(count):
        data = pick.choice(MUTATIONS)(data, pick)
    return data


SOUP = (
    b"INVITE ", b"REGISTER ", b"SIP/2.0", b"SIP/2.0 ", b"200 OK", b"sip:", b"sips:", b"tel:", b"@",
    b"example.com", b"192.0.2.1", b"[2001:db8::1]", b":5060", b";branch=z9hG4bK", b";tag=", b";rport",
    b";received=", b";ttl=", b";maddr=", b";expires=", b";lr", b"?", b"&", b"\r\n", b"\r\n ",
    b"\r\n\r\n", b"Via: SIP/2.0/UDP ", b"v: ", b"From: ", b"f:", b"To: ", b"t:", b"Contact: ", b"m:",
    b"*", b"Call-ID: ", b"i:", b"CSeq: ", b"1 INVITE", b"Content-Length: ", b"l:", b"Max-Forwards: ",
    b"Expires: ", b"Retry-After: ", b"Date: ", b"Route: ", b"Record-Route: ", b"Require: ",
    b"WWW-Authenticate: Digest ", b"Authorization: ", b"realm=", b"nonce=", b'"', b"\\", b"<",
    b">", b",", b";", b"=", b"%", b"%41", b"0", b"00000", b"4294967296", b"65536", b" ", b"\t",
    b"\x00", b"\xff", b"\xc3\xa9", b"(", b")", b"Sat, 13 Nov 2010 23:29:00 GMT",
) + LOOKALIKES


def soup(pick, max_pieces: int = 40) -> bytes:
    """Random concatenations of SIP fragments: random input that gets past the first checks."""
    return b"".join(pick.choice(SOUP) for _ in range(pick.randint(0, max_pieces)))


# --- valid message generator ---------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
UNRESERVED = ALNUM + "-_.!~*'()"
HEX = "0123456789abcdefABCDEF"
# Printable text with some UTF-8: reason phrases, quoted strings, free-text headers.
TEXT_CHARS = string.ascii_letters + string.digits + string.punctuation + "éü中😀"
CALL_ID_CHARS = ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}"
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE")
TRANSPORTS = ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "udp", "tls-sctp")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def text(pick, alphabet: str, lo: int, hi: int) -> str:
    """``lo`` to ``hi`` characters of ``alphabet`` (through ``pick.text`` when it has one)."""
    draw = getattr(pick, "text", None)
    if draw is not None:
        return draw(alphabet, lo, hi)
    return "".join(pick.choice(alphabet) for _ in range(pick.randint(lo, hi)))


def escaped(pick, alphabet: str, lo: int, hi: int) -> str:
    """Characters of ``alphabet`` mixed with %-escapes."""
    parts = []
    for _ in range(pick.randint(lo, hi)):
        if pick.randint(0, 5) == 0:
            parts.append("%" + pick.choice(HEX) + pick.choice(HEX))
        else:
            parts.append(pick.choice(alphabet))
    return "".join(parts)


def words(pick, alphabet: str, lo: int, hi: int) -> str:
    """Words separated by single spaces: a value that unfolding leaves alone."""
    return " ".join(text(pick, alphabet, 1, 8) for _ in range(pick.randint(lo, hi)))


def maybe(pick, odds: int = 2) -> bool:
    return pick.randint(1, odds) == 1


def shuffled(pick, items: list) -> list:
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        j = pick.randint(0, i)
        items[i], items[j] = items[j], items[i]
    return items


def ipv4(pick) -> str:
    return ".".join(str(pick.randint(0, 255)) for _ in range(4))


def ipv6_reference(pick) -> str:
    groups = [text(pick, "0123456789abcdefABCDEF", 1, 4) for _ in range(8)]
    form = pick.randint(0, 2)
    if form == 0:
        body = ":".join(groups)
    elif form == 1:
        start = pick.randint(0, 7)
        stop = pick.randint(start + 1, 8)
        body = ":".join(groups[:start]) + "::" + ":".join(groups[stop:])
    else:
        body = ":".join(groups[:6]) + ":" + ipv4(pick)
    return f"[{body}]"


def hostname(pick) -> str:
    kind = pick.randint(0, 3)
    if kind == 0:
        return ipv4(pick)
    if kind == 1:
        return ipv6_reference(pick)
    labels = []
    for _ in range(pick.randint(1, 3)):
        label = pick.choice(ALNUM)
        if maybe(pick):
            label += text(pick, ALNUM + "-", 0, 6) + pick.choice(ALNUM)
        labels.append(label)
    return ".".join(labels + [text(pick, string.ascii_lowercase, 2, 4)])


def sip_uri(pick, *, headers: bool = True, bare: bool = False) -> str:
    """A sip:/sips: URI; ``bare`` leaves out what an addr-spec outside <> may not hold."""
    uri = pick.choice(("sip", "sips", "SIP")) + ":"
    if not maybe(pick, 3):
        uri += escaped(pick, UNRESERVED + ("&=+$/" if bare else "&=+$,;?/"), 1, 12)
        if maybe(pick, 4):
            uri += ":" + escaped(pick, UNRESERVED + ("&=+$" if bare else "&=+$,"), 0, 8)
        uri += "@"
    uri += hostname(pick)
    if maybe(pick):
        uri += f":{pick.randint(0, 65535)}"
    if bare:
        return uri
    paramchars = UNRESERVED + "[]/:&+$"
    for _ in range(pick.randint(0, 3)):
        param = pick.choice(("lr", "transport=tcp", "user=phone", "", ""))
        if not param:
            param = escaped(pick, paramchars, 1, 8)
            if maybe(pick):
                param += "=" + escaped(pick, paramchars, 1, 8)
        uri += ";" + param
    if headers and maybe(pick, 3):
        hnvchars = UNRESERVED + "[]/?:+$"
        uri += "?" + "&".join(
            escaped(pick, hnvchars, 1, 6) + "=" + escaped(pick, hnvchars, 0, 8) for _ in range(pick.randint(1, 2))
        )
    return uri


def request_uri(pick) -> str:
    kind = pick.randint(0, 5)
    if kind == 0:
        return "tel:+" + text(pick, string.digits + "-", 1, 15)
    if kind == 1:
        return "urn:service:" + text(pick, string.ascii_lowercase + ".", 1, 12)
    return sip_uri(pick, headers=False)


def quoted_string(pick, value: str) -> str:
    """``value`` as a quoted-string, escaping '"' and '\\' and, now and then, other characters."""
    out = []
    for char in value:
        if char in '"\\' or maybe(pick, 10):
            out.append("\\")
        out.append(char)
    return '"' + "".join(out) + '"'


def header_params(pick, params: list[tuple[str, str | None]]) -> str:
    """``;name=value`` with optional whitespace around ';' and '='."""
    out = []
    for name, value in params:
        space = pick.choice(("", "", " "))
        out.append(f"{space};{space}{name}")
        if value is not None:
            out.append(f"{space}={space}{value}")
    return "".join(out)


def extension_param(pick) -> tuple[str, str | None]:
    name = "x-" + text(pick, TOKEN_CHARS, 1, 6)
    kind = pick.randint(0, 2)
    if kind == 0:
        return name, None
    if kind == 1:
        return name, text(pick, TOKEN_CHARS, 1, 8)
    return name, quoted_string(pick, text(pick, TEXT_CHARS + " ;,", 0, 10))


def name_addr(pick, params: list[tuple[str, str | None]]) -> tuple[str, dict]:
    """A name-addr or addr-spec with header ``params``; returns (text, what a parser must find)."""
    form = pick.randint(0, 3)
    display = None
    if form == 0:
        uri = sip_uri(pick, bare=True)
        value = uri
    else:
        uri = request_uri(pick) if maybe(pick, 5) else sip_uri(pick)
        value = f"<{uri}>"
        if form == 2:
            display = text(pick, TEXT_CHARS + ' \t"\\<>,;', 0, 12)
            value = quoted_string(pick, display) + pick.choice(("", " ")) + value
        elif form == 3:
            display = words(pick, TOKEN_CHARS, 1, 3)
            value = display + pick.choice(("", " ", "  ")) + value
    value += header_params(pick, params)
    return value, {"display": display, "uri": uri, "params": params}


def via_parm(pick) -> tuple[str, dict]:
    space = lambda: pick.choice(("", "", " "))  # noqa: E731
    transport = pick.choice(TRANSPORTS)
    host = hostname(pick)
    port = pick.randint(1, 65535) if maybe(pick) else None
    value = f"SIP{space()}/{space()}2.0{space()}/{space()}{transport} {host}"
    if port is not None:
        value += f"{space()}:{space()}{port}"
    branch = "z9hG4bK" + text(pick, TOKEN_CHARS, 1, 12)
    params: list[tuple[str, str | None]] = [("branch", branch)]
    received = rport = None
    if maybe(pick):
        received = pick.choice((ipv4(pick), ipv6_reference(pick), hostname(pick)))
        params.append(("received", received))
    if maybe(pick):
        rport = pick.choice(("", str(pick.randint(1, 65535))))
        params.append(("rport", rport or None))
    if maybe(pick, 6):
        params += [("maddr", hostname(pick)), ("ttl", str(pick.randint(0, 255)))]
    if maybe(pick, 3):
        params.append(extension_param(pick))
    value += header_params(pick, shuffled(pick, params))
    expected = {
        "transport": transport,
        "host": host,
        "port": port,
        "branch": branch,
        "received": received,
        "rport": int(rport) if rport else None,
        "rport_requested": rport is not None,
    }
    return value, expected


def token_list(pick, alphabet: tuple[str, ...] | None = None) -> list[str]:
    return [pick.choice(alphabet) if alphabet else text(pick, TOKEN_CHARS, 1, 10) for _ in range(pick.randint(1, 4))]


def rfc1123_date(pick) -> tuple[str, datetime]:
    when = datetime(
        pick.randint(1970, 2099), pick.randint(1, 12), pick.randint(1, 28),
        pick.randint(0, 23), pick.randint(0, 59), pick.randint(0, 59), tzinfo=timezone.utc,
    )
    day = WEEKDAYS[when.weekday()]
    return f"{day}, {when.day:02d} {MONTHS[when.month - 1]} {when.year} {when:%H:%M:%S} GMT", when


def challenge(pick) -> tuple[str, tuple[str, str]]:
    realm = text(pick, TEXT_CHARS + " ,=", 0, 12)
    scheme = pick.choice(("Digest", "Basic", "Bearer", "digest"))
    params = [f"realm={quoted_string(pick, realm)}"]
    if scheme.lower() == "digest":
        params += [f'nonce="{text(pick, HEX, 8, 16)}"', 'qop="auth,auth-int"', "algorithm=MD5"]
    return f"{scheme} " + pick.choice((", ", ",", " , ")).join(shuffled(pick, params)), (scheme, realm)


def _non_blank(chars: str) -> bool:
    return " " not in chars and "\t" not in chars


def fold(pick, value: str) -> str:
    """Fold the value at a space between two non-blank characters (unfolding restores it)."""
    spots = [i for i in range(1, len(value) - 1) if value[i] == " " and _non_blank(value[i - 1] + value[i + 1])]
    if not spots or not maybe(pick, 4):
        return value
    i = pick.choice(spots)
    return value[:i] + "\r\n" + pick.choice((" ", "\t", "  ")) + value[i + 1 :]


def header_line(pick, names: tuple[str, ...], value: str) -> str:
    name = pick.choice(names)
    name = pick.choice((name, name, name.lower(), name.upper()))
    return name + pick.choice((": ", ":", " : ", ":\t", ":  ")) + fold(pick, value) + "\r\n"


def via_lines(pick) -> tuple[list[str], list[dict]]:
    """One to three Via lines of one to three via-parms each."""
    lines, vias = [], []
    for _ in range(pick.randint(1, 3)):
        parms = []
        for _ in range(pick.randint(1, 3)):
            value, via = via_parm(pick)
            parms.append(value)
            vias.append(via)
        lines.append(header_line(pick, ("Via", "v"), pick.choice((",", ", ", " , ")).join(parms)))
    return lines, vias


def contact_lines(pick) -> tuple[list[str], list]:
    """``Contact: *`` or zero to two lines of one to three contacts."""
    if maybe(pick, 8):
        return [header_line(pick, ("Contact", "m"), "*")], ["*"]
    lines, contacts = [], []
    for _ in range(pick.randint(0, 2)):
        items = []
        for _ in range(pick.randint(1, 3)):
            params: list[tuple[str, str | None]] = []
            expires = None
            if maybe(pick):
                expires = pick.choice((0, 3600, 2**32 - 1, 2**32, pick.randint(0, 10**12)))
                params.append(("expires", str(expires)))
            if maybe(pick, 3):
                params.append(("q", f"0.{pick.randint(0, 9)}"))
            if maybe(pick, 3):
                params.append(("+sip.instance", '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'))
            value, address = name_addr(pick, shuffled(pick, params))
            address["expires"] = None if expires is None else min(expires, 2**32 - 1)
            items.append(value)
            contacts.append(address)
        lines.append(header_line(pick, ("Contact", "m"), pick.choice((",", ", ")).join(items)))
    return lines, contacts


def optional_headers(pick, expected: dict) -> list[list[str]]:
    """Route, token lists and other headers, each maybe; fills ``expected``."""
    blocks = []

    def add(names: tuple[str, ...], value: str) -> None:
        blocks.append([header_line(pick, names, value)])
        expected["extras"].append((names[0], value))

    expected.update(route=[], tokens={}, expires=None, date=None, challenges=[], extras=[])
    if maybe(pick, 3):
        expected["route"] = [sip_uri(pick, headers=False) for _ in range(pick.randint(1, 3))]
        add(("Route",), ", ".join(f"<{uri}>" for uri in expected["route"]))
    for names, choices in ((("Supported", "k"), None), (("Require",), None), (("Allow",), METHODS)):
        if maybe(pick, 3):
            expected["tokens"][names[0]] = token_list(pick, choices)
            add(names, pick.choice((",", ", ", " ,")).join(expected["tokens"][names[0]]))
    if maybe(pick):
        add(("Subject", "s"), words(pick, TEXT_CHARS, 1, 5))
    if maybe(pick, 3):
        add(("X-" + text(pick, TOKEN_CHARS, 1, 8),), words(pick, TEXT_CHARS, 1, 5))
    if maybe(pick, 3):
        add(("Content-Type", "c"), pick.choice(("application/sdp", "text/plain;charset=utf-8")))
    if maybe(pick, 3):
        seconds = pick.choice((0, 3600, pick.randint(0, 2**33)))
        add(("Expires",), str(seconds))
        expected["expires"] = min(seconds, 2**32 - 1)
    if maybe(pick, 4):
        value, expected["date"] = rfc1123_date(pick)
        add(("Date",), value)
    if maybe(pick, 3):
        raws, challenges = zip(*(challenge(pick) for _ in range(pick.randint(1, 2))))
        add(("WWW-Authenticate",), ", ".join(raws))
        expected["challenges"] = list(challenges)
    return blocks


def build_message(pick) -> tuple[bytes, dict]:
    """A valid SIP request or response as bytes, and what parsing it must give back."""
    expected: dict = {}
    if maybe(pick, 3):
        status = pick.randint(100, 699)
        reason = pick.choice(("", "OK", words(pick, TEXT_CHARS, 1, 4)))
        method = pick.choice(METHODS)
        start = f"SIP/2.0 {status} {reason}"
        expected.update(kind="response", status=status, reason=reason)
    else:
        method = pick.choice(METHODS + (text(pick, TOKEN_CHARS, 1, 10),))
        uri = request_uri(pick)
        start = f"{method} {uri} {pick.choice(('SIP/2.0', 'SIP/2.0', 'sip/2.0'))}"
        expected.update(kind="request", method=method, uri=uri)

    blocks: list[list[str]] = []  # header lines that stay together, in order
    lines, expected["via"] = via_lines(pick)
    blocks.append(lines)
    for key, names in (("from", ("From", "f")), ("to", ("To", "t"))):
        params = [("tag", text(pick, TOKEN_CHARS, 1, 10))] if key == "from" or maybe(pick) else []
        if maybe(pick, 3):
            params.append(extension_param(pick))
        value, expected[key] = name_addr(pick, params)
        blocks.append([header_line(pick, names, value)])

    call_id = text(pick, CALL_ID_CHARS, 1, 20)
    if maybe(pick):
        call_id += "@" + text(pick, CALL_ID_CHARS, 1, 12)
    blocks.append([header_line(pick, ("Call-ID", "i"), call_id)])
    number = pick.choice((0, 1, 2**31 - 1, pick.randint(0, 2**31 - 1)))
    blocks.append([header_line(pick, ("CSeq",), f"{number}{pick.choice((' ', '  ', chr(9)))}{method}")])
    expected.update(call_id=call_id, cseq=(number, method), max_forwards=None)
    if expected["kind"] == "request" or not maybe(pick, 3):
        expected["max_forwards"] = pick.randint(0, 255)
        blocks.append([header_line(pick, ("Max-Forwards",), "0" * pick.randint(0, 2) + str(expected["max_forwards"]))])
    lines, expected["contacts"] = contact_lines(pick)
    blocks.append(lines)
    blocks += optional_headers(pick, expected)

    body = pick.randbytes(pick.choice((0, 0, 1, pick.randint(0, 48))))
    if maybe(pick, 4):
        body += b"v=0\r\n\r\nContent-Length: 99\r\n"
    expected["body"] = body
    length_kind = pick.randint(0, 7)
    trailer = b""
    if length_kind or not body:  # without Content-Length, the body is the rest of the datagram
        digits = ("00" if length_kind == 7 else "") + str(len(body))
        blocks.append([header_line(pick, ("Content-Length", "l"), digits)])
        if maybe(pick, 6):
            trailer = b"octets past Content-Length"

    head = start + "\r\n" + "".join(line for block in shuffled(pick, blocks) for line in block) + "\r\n"
    return (pick.choice(("", "", "", "\r\n")) + head).encode("utf-8") + body + trailer, expected


# --- the oracle ------------------------------------------------------------------------

VIEWS = (
    "via", "top_via", "from_", "to", "call_id", "cseq", "max_forwards", "contacts", "route",
    "record_route", "path", "service_route", "content_length", "expires", "min_expires",
    "retry_after", "date", "www_authenticate", "proxy_authenticate", "authorization",
    "proxy_authorization",
)
TOKEN_HEADERS = ("Require", "Proxy-Require", "Supported", "Unsupported", "Allow")


class ContractViolation(AssertionError):
    """Something parsed but did not round-trip, or a valid input was refused."""


def _same(what: str, original, again) -> None:
    if original != again:
        raise ContractViolation(f"{what}: {original!r} != {again!r}")


def _check_uri(uri, text: str) -> None:
    _same("str(parse_uri(text))", text, str(uri))
    if isinstance(uri, SipURI):
        for part in (uri.user, uri.password, uri.host):
            if part is not None:
                unescape(part)
        uri.transport, uri.maddr, uri.loose_route, uri.secure  # noqa: B018
        _same("re-parsed URI", uri, parse_uri(str(uri)))


def _check_value(value) -> None:
    """Read what is inside one view value; views must re-parse from their str()."""
    if isinstance(value, NameAddress):
        text = value.uri_text
        try:
            uri = value.uri
        except SIPParseError:
            return
        _check_uri(uri, text)
        value.tag  # noqa: B018
        try:
            value.expires  # noqa: B018
        except SIPParseError:
            pass
        _same("re-parsed name-addr", value, fields.parse_name_addr(str(value), "check"))
    elif isinstance(value, Via):
        value.branch, value.received, value.rport, value.rport_requested, value.maddr, value.sent_by  # noqa: B018
        _same("re-parsed Via", value, fields.parse_via(str(value)))
    elif isinstance(value, RetryAfter):
        try:
            value.duration  # noqa: B018
        except SIPParseError:
            pass
        _same("re-parsed Retry-After", value, fields.parse_retry_after(str(value)))
    elif isinstance(value, AuthParams):
        value.get("realm"), "nonce" in value  # noqa: B018
        _same("re-parsed challenge", [value], fields.parse_auth_list(str(value), "check"))
    elif isinstance(value, CSeq):
        _same("re-parsed CSeq", value, fields.parse_cseq(str(value)))


def read_views(message) -> None:
    """Read every typed view and what it holds; SIPParseError is an answer, anything else escapes."""
    if isinstance(message, Request):
        _check_uri(message.uri, str(message.uri))
        try:
            response = make_response(message, 200, to_tag="fuzz")
        except SIPParseError:
            pass
        else:
            round_trip(response)
    for name in VIEWS:
        try:
            value = getattr(message, name)
        except SIPParseError:
            continue
        for item in value if isinstance(value, list) else (value,):
            _check_value(item)
    for name in TOKEN_HEADERS:
        try:
            message.tokens(name)
        except SIPParseError:
            pass
    try:
        message.validate()
    except SIPParseError:
        pass


# A second, plain reading of RFC 3261 25.1 in ASCII terms, for what the parser accepted:
# a scalar header whose view parsed holds digits and SP/HTAB where the grammar says so
# and nothing else, and no control character (but HTAB) appears outside a quoted-pair.
_DIGITS = re.compile(r"[0-9]+\Z")
SCALARS = (
    ("Content-Length", "content_length", _DIGITS),
    ("Max-Forwards", "max_forwards", _DIGITS),
    ("Expires", "expires", _DIGITS),
    ("Min-Expires", "min_expires", _DIGITS),
    ("CSeq", "cseq", re.compile(r"[0-9]+[ \t]+[A-Za-z0-9\-.!%*_+`'~]+\Z")),
    ("Call-ID", "call_id", re.compile(r"[!-~]+\Z")),
)
_UNESCAPED_CONTROL = re.compile(r"(?<!\\)[\x00-\x08\x0a-\x1f\x7f]")


def check_sip_reading(message) -> None:
    """What the parser accepted reads the same to a peer that knows only SP/HTAB and 0-9."""
    if _UNESCAPED_CONTROL.search(message.start_line()):
        raise ContractViolation(f"control character accepted in {message.start_line()!r:.200}")
    for _, name, value in message.headers.fields():
        if _UNESCAPED_CONTROL.search(value):
            raise ContractViolation(f"control character accepted in {name}: {value!r:.200}")
    for name, view, grammar in SCALARS:
        try:
            getattr(message, view)
        except SIPParseError:
            continue
        for value in message.headers.get_all(name):
            if grammar.match(value) is None:
                raise ContractViolation(f"{name} {value!r:.80} read as {getattr(message, view)!r}")


def _difference(message, again) -> str:
    if message.start_line() != again.start_line():
        return f"start line {message.start_line()!r} became {again.start_line()!r}"
    for before, after in zip(message.headers.fields(), again.headers.fields()):
        if (before[0], before[2]) != (after[0], after[2]):
            return f"header {before[1]}: {before[2]!r} became {after[1]}: {after[2]!r}"
    if len(message.headers) != len(again.headers):
        return f"{len(message.headers)} header lines became {len(again.headers)}"
    return f"body {message.body[:60]!r} became {again.body[:60]!r}"


def round_trip(message) -> None:
    """parse(bytes(m)) == m, and serialising the copy gives the same bytes."""
    data = bytes(message)
    try:
        again = parse_message(data)
    except SIPParseError as e:
        raise ContractViolation(f"bytes(message) does not parse ({e}): {data[:300]!r}") from e
    if again != message:
        raise ContractViolation(f"parse(bytes(m)) != m: {_difference(message, again)}")
    _same("bytes(parse(bytes(m)))", data, bytes(again))


def _feed(chunks: list[bytes]) -> tuple[list, bool]:
    """What a framer yields for ``chunks``, and whether the stream broke."""
    framer = StreamFramer()
    out: list = []
    for chunk in chunks:
        try:
            out += framer.feed(chunk)
        except SIPParseError:
            return out, True
    return out, framer.error is not None


def frame(data: bytes, cuts: list[int]) -> None:
    """The framer yields the same whether fed whole or cut at ``cuts``; what it yields parses or is refused."""
    whole = _feed([data])
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0] + points, points + [len(data)])]
    pieces = _feed(chunks)
    if whole != pieces:
        raise ContractViolation(f"framer result changes when cut at {points}: {whole!r:.200} != {pieces!r:.200}")
    for item in pieces[0]:
        if not isinstance(item, KeepAlive):
            try:
                parse_message(item)
            except SIPParseError:
                pass


def exercise(data: bytes, cuts: tuple[int, ...] | list[int] = (), must_parse: bool = False):
    """The whole contract for one input; returns the parsed message or None."""
    try:
        message = parse_message(data)
    except SIPParseError as e:
        if must_parse:
            raise ContractViolation(f"valid message refused: {e}") from e
        message = None
    if message is not None:
        round_trip(message)
        check_sip_reading(message)
        read_views(message)
        if must_parse:
            try:
                message.validate()
            except SIPParseError as e:
                raise ContractViolation(f"valid message fails validate(): {e}") from e
    frame(data, list(cuts))
    return message


# --- the driver ----------------------------------------------------------------------------


def next_input(rng: random.Random, corpus: list[bytes]) -> tuple[bytes, bool]:
    """(input, must it parse) drawn from the mix of kinds."""
    kind = rng.random()
    if kind < 0.45:
        return mutate(rng.choice(corpus), rng, rng.randint(1, 4)), False
    if kind < 0.55:
        return mutate(build_message(rng)[0], rng, rng.randint(1, 3)), False
    if kind < 0.62:
        return rng.randbytes(rng.randint(0, 512)), False
    if kind < 0.70:
        return soup(rng), False
    return build_message(rng)[0], True


def _where(error: BaseException) -> str:
    """The innermost frame of the traceback: the signature of an escape."""
    frames = traceback.extract_tb(error.__traceback__)
    last = frames[-1] if frames else None
    return f"{os.path.basename(last.filename)}:{last.lineno} {last.name}" if last else "?"


def main(argv: list[str]) -> int:
    total = int(argv[1]) if len(argv) > 1 else 200_000
    seed = int(argv[2]) if len(argv) > 2 else 0
    rng = random.Random(seed)
    corpus = load_corpus()
    escapes: dict[str, int] = {}
    errors = parsed = 0
    started = time.perf_counter()
    for index in range(1, total + 1):
        data, must_parse = next_input(rng, corpus)
        cuts = [rng.randint(0, len(data)) for _ in range(rng.randint(0, 3))]
        try:
            message = exercise(data, cuts, must_parse)
        except Exception as e:  # noqa: BLE001 - an escape is exactly what we look for
            signature = f"{type(e).__name__} at {_where(e)}"
            if isinstance(e, ContractViolation):
                signature += f" ({str(e).split(':')[0]})"
            escapes[signature] = escapes.get(signature, 0) + 1
            if escapes[signature] <= 5:
                print(f"ESCAPE #{index} {signature}: {str(e)[:300]}\n  input: {data[:1000]!r}", flush=True)
            continue
        if message is None:
            errors += 1
        else:
            parsed += 1
        if index % 50_000 == 0:
            elapsed = time.perf_counter() - started
            print(f"  {index} inputs, {sum(escapes.values())} escapes, {elapsed:.1f} s", flush=True)
    count = sum(escapes.values())
    for signature, n in sorted(escapes.items(), key=lambda item: -item[1]):
        print(f"  {n:6d} x {signature}")
    print(
        f"fuzz: {total} inputs, {count} escapes, {errors} parse errors, {parsed} parsed, "
        f"{time.perf_counter() - started:.1f} s (seed {seed})"
    )
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
