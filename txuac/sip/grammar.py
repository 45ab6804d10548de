"""RFC 3261 section 25 lexical rules as small, fast scanners.

Everything here works on ``str`` values decoded from the wire with
``utf-8``/``surrogateescape`` so that any octet survives a round trip.
"""

from __future__ import annotations

import re
from typing import Iterator

from txuac.errors import SIPParseError

# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
# Regex building blocks, shared with the header views.
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE; quoted-pair excludes CR and LF.
# Written as an unrolled loop so that long strings match without per-character alternation.
QUOTED_INNER = r'[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*'
QUOTED_STRING = '"' + QUOTED_INNER + '"'
# gen-value = token / host / quoted-string; host adds "[", "]" and ":" (IPv6 references).
GEN_VALUE = r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+"

_TOKEN_RE = re.compile(TOKEN + r"\Z")
_GEN_VALUE_RE = re.compile(GEN_VALUE + r"\Z")
_QUOTED_RE = re.compile(QUOTED_STRING)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
_NEEDS_QUOTING_RE = re.compile(r'["\\]')
# One element of a comma list: runs of plain text, quoted strings, <...> and (...).
_LIST_ITEM_RE = re.compile(r'(?:[^,"<]+|' + QUOTED_STRING + r"|<[^>]*>)*")
_PARAM = r"[ \t]*(" + TOKEN + r")[ \t]*(?:(=)[ \t]*(" + GEN_VALUE + "|" + QUOTED_STRING + r")[ \t]*)?"
_PARAM_NO_GROUPS = _PARAM.replace("(" + TOKEN + ")", TOKEN).replace("(=)", "=").replace("(" + GEN_VALUE, "(?:" + GEN_VALUE)
# A whole parameter list after its first ';': validated in one match, then split.
_PARAM_LIST_RE = re.compile(_PARAM_NO_GROUPS + "(?:;" + _PARAM_NO_GROUPS + r")*\Z")
_PARAM_PAIR_RE = re.compile(_PARAM + r"(?:;|\Z)")
# The usual shape, without whitespace and with quoted values free of ';' and '\\'
# (+sip.instance="<urn:...>"): one cheap match, then a plain split on ';'.
SIMPLE_PARAM = TOKEN + "(?:=(?:" + GEN_VALUE + r'|"[^"\\\r\n;]*"))?'
_SIMPLE_PARAM = SIMPLE_PARAM
_SIMPLE_PARAM_LIST_RE = re.compile(_SIMPLE_PARAM + "(?:;" + _SIMPLE_PARAM + r")*\Z")


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
    """Make a quoted-string of ``text``, escaping backslash and double quote."""
    return '"' + _NEEDS_QUOTING_RE.sub(lambda m: "\\" + m.group(0), text) + '"'


def split_list(value: str, element: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 7.3.1).

    Commas inside quoted strings and angle brackets do not split.
    Elements are stripped; empty elements are kept as "" so callers decide
    whether they are an error.
    """
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    parts = []
    pos = 0
    end = len(value)
    match = _LIST_ITEM_RE.match
    while True:
        found = match(value, pos)
        assert found is not None  # the pattern also matches the empty string
        stop = found.end()
        parts.append(value[pos:stop].strip())
        if stop == end:
            return parts
        if value[stop] != ",":
            # An unbalanced quote or bracket: the slow scanner names the error.
            return [part.strip() for part in _scan_separated(value, ",", element)]
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
            items.append((name.strip(), value.strip() if eq else None))
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
        return any(key.lower() == lname for key, _ in self._items)

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
        name = name.strip()
        if not name:
            raise SIPParseError("empty parameter", element=element)
        if _TOKEN_RE.match(name) is None:
            raise SIPParseError(f"invalid parameter name {name[:32]!r}", element=element)
        if eq:
            value = value.strip()
            if _GEN_VALUE_RE.match(value) is None and _QUOTED_RE.fullmatch(value) is None:
                raise SIPParseError(f"invalid value for parameter {name!r}", element=element)
    raise SIPParseError("malformed parameters", element=element)
