"""RFC 3261 section 25 lexical rules as small, fast scanners.

Everything here works on ``str`` values decoded from the wire with
``utf-8``/``surrogateescape`` so that any octet survives a round trip.
"""

from __future__ import annotations

import re
from typing import Final, Iterator

from txuac.errors import SIPParseError

# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
# Regex building blocks, shared with the header views.
TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE; quoted-pair excludes CR and LF.
# Written as an unrolled loop so that long strings match without per-character alternation.
QUOTED_INNER: Final = r'[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*'
QUOTED_STRING: Final = '"' + QUOTED_INNER + '"'
# gen-value = token / host / quoted-string; host adds "[", "]" and ":" (IPv6 references).
GEN_VALUE: Final = r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+"

_TOKEN_RE: Final = re.compile(TOKEN + r"\Z")
_GEN_VALUE_RE: Final = re.compile(GEN_VALUE + r"\Z")
_QUOTED_RE: Final = re.compile(QUOTED_STRING)
_QUOTED_PAIR_RE: Final = re.compile(r"\\(.)", re.S)
# Control characters are escaped too: RFC 3261 25.1 allows them in a quoted-pair only.
_NEEDS_QUOTING_RE: Final = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
# One element of a comma list: runs of plain text, quoted strings, <...> and (...).
_LIST_ITEM_RE: Final = re.compile(r'(?:[^,"<]+|' + QUOTED_STRING + r"|<[^>]*>)*")
_PARAM: Final = r"[ \t]*(" + TOKEN + r")[ \t]*(?:(=)[ \t]*(" + GEN_VALUE + "|" + QUOTED_STRING + r")[ \t]*)?"
_PARAM_NO_GROUPS: Final = _PARAM.replace("(" + TOKEN + ")", TOKEN).replace("(=)", "=").replace("(" + GEN_VALUE, "(?:" + GEN_VALUE)
# A whole parameter list after its first ';': validated in one match, then split.
_PARAM_LIST_RE: Final = re.compile(_PARAM_NO_GROUPS + "(?:;" + _PARAM_NO_GROUPS + r")*\Z")
_PARAM_PAIR_RE: Final = re.compile(_PARAM + r"(?:;|\Z)")
# The usual shape, without whitespace and with quoted values free of ';' and '\\'
# (+sip.instance="<urn:...>"): one cheap match, then a plain split on ';'.
SIMPLE_PARAM: Final = TOKEN + "(?:=(?:" + GEN_VALUE + r'|"[^"\\\r\n;]*"))?'
_SIMPLE_PARAM: Final = SIMPLE_PARAM
_SIMPLE_PARAM_LIST_RE: Final = re.compile(_SIMPLE_PARAM + "(?:;" + _SIMPLE_PARAM + r")*\Z")


# RFC 3261 25.1: LWS and SWS are made of SP and HTAB only. str.strip() and str.split()
# without arguments also take \x0b, \x0c, \x1c-\x1f, \x85, \xa0 and every Unicode
# space, str.isdigit() and int() take non-ASCII digits, str.upper() turns U+017F into
# "S": a parser that reads a header differently from the next hop's is how request
# smuggling starts. The helpers below are the only way txuac.sip reads those.
LWS_CHARS: Final = " \t"
# CTL (%x00-1F / %x7F) but HTAB, CR and LF, which the line structure handles.
CONTROL_OCTETS: Final = bytes(range(0x00, 0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f"
_CONTROL_CHARS: Final = frozenset(CONTROL_OCTETS.decode("ascii"))
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_UPPER: Final = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
_ASCII_LOWER: Final = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def strip_lws(text: str) -> str:
    """``text`` without leading and trailing SP and HTAB."""
    return text.strip(LWS_CHARS)


def split_lws(text: str) -> list[str]:
    """The words of ``text`` separated by runs of SP and HTAB (``str.split()`` for SIP)."""
    if "\t" in text:
        text = text.replace("\t", " ")
    return [word for word in text.split(" ") if word]


def is_digits(text: str) -> bool:
    """True for ``1*DIGIT``: ASCII 0-9 only (``str.isdigit()`` also takes "\u0663" and "\u00b2")."""
    return text.isascii() and text.isdigit()


def parse_digits(text: str, maximum: int) -> int | None:
    """``1*DIGIT`` (ASCII, leading zeros allowed) as an int, ``maximum + 1`` when above
    ``maximum``, None when ``text`` is anything else (``int()`` also takes spaces, "_",
    "+" and non-ASCII digits)."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if not significant:
        return 0
    if len(significant) > 20:
        return maximum + 1
    value = int(significant)
    return value if value <= maximum else maximum + 1


def ascii_upper(text: str) -> str:
    """``text`` with a-z upper-cased and nothing else changed (``str.upper()`` maps U+017F to "S")."""
    return text.upper() if text.isascii() else text.translate(_ASCII_UPPER)


def ascii_lower(text: str) -> str:
    """``text`` with A-Z lower-cased and nothing else changed (``str.lower()`` maps U+212A to "k")."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def has_control(text: str) -> bool:
    """True when ``text`` holds a CTL other than HTAB, CR and LF."""
    if text.isprintable():
        return False  # no CTL is printable: the usual case, without a search
    return _CONTROL_RE.search(text) is not None


def check_controls(value: str, element: str) -> None:
    """Refuse a CTL (but HTAB) in a header value outside a quoted-pair.

    RFC 3261 25.1: header values are TEXT-UTF8 and LWS; a control character
    may only appear escaped, as a quoted-pair inside a quoted-string or a
    comment (RFC 4475 3.1.1.2 has BEL, NUL and DEL so). CR and LF never may.
    """
    if _CONTROL_RE.search(value) is None:
        return
    quoted = False
    depth = 0
    pos = 0
    end = len(value)
    while pos < end:
        char = value[pos]
        if char == "\\" and (quoted or depth):  # quoted-pair (CR and LF never reach here)
            pos += 2
            continue
        if char in _CONTROL_CHARS:
            raise SIPParseError(f"control character {ord(char):#04x} outside a quoted-pair", element=element)
        if quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        pos += 1


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_RE.match(text) is not None


def check_token(text: str, element: str, what: str = "token") -> str:
    """Return ``text`` or raise SIPParseError naming ``element``."""
    if _TOKEN_RE.match(text) is None:
        raise SIPParseError(f"invalid {what} {text!r}", element=element)
    return text


def match_quoted(text: str, pos: int, element: str) -> int:
    """Return the index just past the quoted-string starting at ``text[pos]``."""
    m = _QUOTED_RE.match(text, pos)
    if m is None:
        raise SIPParseError("unterminated quoted string", element=element)
    return m.end()


def unquote(text: str) -> str:
    """Remove the quotes and quoted-pair escapes of a quoted-string (as is otherwise)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


def quote(text: str) -> str:
    """Make a quoted-string of ``text``, escaping backslash, double quote and control characters."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'  # nothing to escape (no control character is printable): the usual case
    return '"' + _NEEDS_QUOTING_RE.sub(lambda m: "\\" + m.group(0), text) + '"'


def split_list(value: str, element: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 7.3.1).

    Commas inside quoted strings and angle brackets do not split.
    Elements are stripped; empty elements are kept as "" so callers decide
    whether they are an error.
    """
    if "," not in value:
        return [strip_lws(value)]
    if '"' not in value and "<" not in value:
        return [strip_lws(part) for part in value.split(",")]
    parts = []
    pos = 0
    end = len(value)
    match = _LIST_ITEM_RE.match
    while True:
        found = match(value, pos)
        assert found is not None  # the pattern also matches the empty string
        stop = found.end()
        parts.append(strip_lws(value[pos:stop]))
        if stop == end:
            return parts
        if value[stop] != ",":
            # An unbalanced quote or bracket: the slow scanner names the error.
            return [strip_lws(part) for part in _scan_separated(value, ",", element)]
        pos = stop + 1


def split_params(text: str, element: str) -> list[str]:
    """Split ``a;b=c;d="x;y"`` on semicolons outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    return list(_scan_separated(text, ";", element))


def _scan_separated(value: str, separator: str, element: str) -> Iterator[str]:
    """Split on ``separator`` outside quoted strings and angle brackets, naming what is unbalanced.

    Parentheses are not special: the list headers split here carry no
    comments, and '(' is valid in the user part of a URI.
    """
    start = 0
    pos = 0
    end = len(value)
    angle = False
    while pos < end:
        char = value[pos]
        if char == '"' and not angle:
            pos = match_quoted(value, pos, element)
            continue
        if char == "<":
            angle = True
        elif char == ">" and angle:
            angle = False
        elif char == separator and not angle:
            yield value[start:pos]
            start = pos + 1
        pos += 1
    if angle:
        raise SIPParseError("unbalanced '<'", element=element)
    yield value[start:]


class Parameters:
    """Ordered ``;name=value`` parameters with case-insensitive names.

    Values are kept as they appeared (quoted strings keep their quotes); a
    parameter without ``=`` has the value None.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str | None]] | None = None):
        self._items: list[tuple[str, str | None]] = list(items) if items else []

    @classmethod
    def _adopt(cls, items: list[tuple[str, str | None]]) -> "Parameters":
        """Wrap a list the caller hands over (no copy: the parsers' hot path)."""
        params = cls()
        params._items = items
        return params

    @classmethod
    def parse(cls, text: str, element: str) -> "Parameters":
        """Parse the text after the first ``;`` (``a=1;b``); whitespace around ``;``/``=`` is allowed."""
        if _SIMPLE_PARAM_LIST_RE.match(text) is not None:
            items = []
            for piece in text.split(";"):
                name, eq, value = piece.partition("=")
                items.append((name, value if eq else None))
            return cls._adopt(items)
        if _PARAM_LIST_RE.match(text) is None:
            _raise_param_error(text, element)
        if '"' in text:
            return cls._adopt([(name, value if eq else None) for name, eq, value in _PARAM_PAIR_RE.findall(text)])
        items = []
        for piece in text.split(";"):
            name, eq, value = piece.partition("=")
            items.append((strip_lws(name), strip_lws(value) if eq else None))
        return cls._adopt(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first parameter called ``name`` (None when it has no value)."""
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return value
        return default

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        for key, _ in self._items:  # a loop, not any() over a generator: about twice as fast
            if key.lower() == lname:
                return True
        return False

    def __getitem__(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return value
        raise KeyError(name)

    def set(self, name: str, value: str | None = None) -> None:
        """Replace the value of ``name`` in place, or append it."""
        lname = name.lower()
        for index, (key, _) in enumerate(self._items):
            if key.lower() == lname:
                self._items[index] = (key, value)
                return
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        """Remove every parameter called ``name``."""
        lname = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != lname]

    def items(self) -> list[tuple[str, str | None]]:
        return list(self._items)

    def copy(self) -> "Parameters":
        return Parameters(self._items)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Parameters):
            return NotImplemented
        return self._items == other._items

    def __str__(self) -> str:
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self._items)

    def __repr__(self) -> str:
        return f"Parameters({self._items!r})"


def _raise_param_error(text: str, element: str) -> None:
    """Name the first bad parameter of a list that failed validation."""
    for piece in split_params(text, element):
        name, eq, value = piece.partition("=")
        name = strip_lws(name)
        if not name:
            raise SIPParseError("empty parameter", element=element)
        if _TOKEN_RE.match(name) is None:
            raise SIPParseError(f"invalid parameter name {name[:32]!r}", element=element)
        if eq:
            value = strip_lws(value)
            if _GEN_VALUE_RE.match(value) is None and _QUOTED_RE.fullmatch(value) is None:
                raise SIPParseError(f"invalid value for parameter {name!r}", element=element)
    raise SIPParseError("malformed parameters", element=element)
