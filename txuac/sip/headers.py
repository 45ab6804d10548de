"""An ordered, case-insensitive, multi-valued header list (RFC 3261 7.3)."""

from __future__ import annotations

from typing import Callable, Final, Iterable, Iterator, TypeVar

from txuac.errors import SIPParseError
from txuac.sip.grammar import check_controls, is_token, strip_lws

T = TypeVar("T")

# RFC 3261 7.3.3 and the IANA registry: compact form -> canonical name.
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "c": "Content-Type",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_KNOWN_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "Flow-Timer", "From",
    "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route",
    "Refer-To", "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
    "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires", "Subject",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
]
CANONICAL_NAMES = {name.lower(): name for name in _KNOWN_NAMES}

# Raw header name as received (trailing whitespace included) -> (key, canonical name).
_NAME_CACHE: Final[dict[str, tuple[str, str]]] = {}
_NAME_CACHE_LIMIT: Final = 4096


def header_names(raw_name: str) -> tuple[str, str]:
    """(lookup key, output name) of a header name as received.

    The key is the lower-case long form (compact forms expanded); the output
    name is the canonical spelling, or the name as received when unknown.
    """
    entry = _NAME_CACHE.get(raw_name)
    if entry is not None:
        return entry
    name = raw_name.rstrip(" \t")
    if not is_token(name):
        raise SIPParseError(f"invalid header name {name[:40]!r}", element="header")
    lower = name.lower()
    compact = COMPACT_FORMS.get(lower)
    key = compact.lower() if compact else lower
    entry = (key, CANONICAL_NAMES.get(key, name))
    if len(_NAME_CACHE) < _NAME_CACHE_LIMIT:
        _NAME_CACHE[raw_name] = entry
    return entry


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded."""
    entry = _NAME_CACHE.get(name)
    return entry[0] if entry is not None else header_names(name)[0]


# Final: mypyc reads a final module-level name as a C static, not from the module's dict
# at each use (the hot paths read these on every view and every copy).
_INDEX: Final = "\0index"  # the key of the per-name index inside the views cache
# The views-cache keys of views that are not one header's own view (whose key is the
# header's lookup key). _dependent_view_keys says which edits make each one stale.
TOP_VIA_VIEW: Final = "top_via"  # Message.top_via: the first via-parm of the Via lines
TOKENS_VIEW: Final = "tokens:"  # "tokens:" + key: Message.tokens of the key's lines
VALIDATED_MARK: Final = "\0validated"  # Message.validate() passed: it reads every header
# Header key -> the views read from its lines besides its own and its tokens.
_DERIVED_VIEWS: Final[dict[str, tuple[str, ...]]] = {"via": (TOP_VIA_VIEW,)}
_DEPENDENT_CACHE: Final[dict[str, tuple[str, ...]]] = {}  # key -> _dependent_view_keys(key)
_NO_VALUES: Final[list[str]] = []
# A view not built yet (a cached view may be None). Looked up with get(), not caught as a
# KeyError: every view misses once per message, and a raised KeyError costs ~4x a get().
_NOT_CACHED: Final = object()


def _dependent_view_keys(key: str) -> tuple[str, ...]:
    """The views-cache keys an edit of the ``key`` lines makes stale: the key's own view,
    the views derived from its lines and the mark of validate(). The views of the other
    headers stay; the per-name index is updated by the edit itself."""
    keys = _DEPENDENT_CACHE.get(key)
    if keys is None:
        keys = (key, TOKENS_VIEW + key, *_DERIVED_VIEWS.get(key, ()), VALIDATED_MARK)
        if len(_DEPENDENT_CACHE) < _NAME_CACHE_LIMIT:
            _DEPENDENT_CACHE[key] = keys
    return keys


class Headers:
    """Header fields in wire order; names compare case-insensitively, compact forms included.

    Each field is ``(key, name, value)``: the lookup key, the canonical name
    used on output, and the value with folding replaced by a space. Typed
    views of a header are cached here; an edit drops those that read the edited lines
    (see _dependent_view_keys) and keeps the others.
    """

    __slots__ = ("_fields", "_views")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()):
        self._fields: list[tuple[str, str, str]] = []
        self._views: dict = {}
        for name, value in fields:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, fields: list[tuple[str, str, str]], index: dict | None = None) -> "Headers":
        """Adopt a parser's field list, and its per-key index of values when it built one."""
        headers = cls()
        headers._fields = fields
        headers._views = {} if index is None else {_INDEX: index}
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``."""
        values = self.values(header_key(name))
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (one entry per header line)."""
        return list(self.values(header_key(name)))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        index = self._views.get(_INDEX)
        if index is not None:
            return key in index
        for field in self._fields:  # a loop, not any() over a generator: about twice as fast
            if field[0] == key:
                return True
        return False

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        key, output_name = header_names(name)
        value = _check_value(value, name)
        self._fields.append((key, output_name, value))
        if self._views:  # no views while a message is built or a copy not read yet
            index = self._lines_changed(key)
            if index is not None:
                index[key] = [*index.get(key, _NO_VALUES), value]

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before every other (a new top Via, a new Route)."""
        key, output_name = header_names(name)
        value = _check_value(value, name)
        self._fields.insert(0, (key, output_name, value))
        if self._views:
            self._first_line_added(key, value)

    def insert_before_first(self, name: str, value: str) -> None:
        """Insert a header line before the first ``name`` line, or before every other line
        when there is none (a proxy's Record-Route, RFC 3261 16.6 item 4)."""
        key, output_name = header_names(name)
        value = _check_value(value, name)
        fields = self._fields
        position = 0
        for index, existing in enumerate(fields):
            if existing[0] == key:
                position = index
                break
        fields.insert(position, (key, output_name, value))
        if self._views:
            self._first_line_added(key, value)

    def add_lines_of(self, other: "Headers", name: str) -> None:
        """Append every ``name`` line of ``other``, in order, as it is there: it was checked
        when it went in (by the parser or an edit), so it is not checked again (a response
        copies its request's Via, From, Call-ID and CSeq, RFC 3261 8.2.6.2)."""
        key = header_key(name)
        added = [field for field in other._fields if field[0] == key]
        if not added:
            return
        self._fields.extend(added)
        if self._views:
            index = self._lines_changed(key)
            if index is not None:
                index[key] = [*index.get(key, _NO_VALUES), *[field[2] for field in added]]

    def _first_line_added(self, key: str, value: str) -> None:
        """After a ``key`` line went before the other ``key`` lines."""
        index = self._lines_changed(key)
        if index is not None:
            index[key] = [value, *index.get(key, _NO_VALUES)]

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one, kept where the first one was."""
        key, output_name = header_names(name)
        value = _check_value(value, name)
        field = (key, output_name, value)
        fields = []
        placed = False
        for existing in self._fields:
            if existing[0] == key:
                if not placed:
                    fields.append(field)
                    placed = True
            else:
                fields.append(existing)
        if not placed:
            fields.append(field)
        self._fields = fields
        if self._views:
            index = self._lines_changed(key)
            if index is not None:
                index[key] = [value]

    def remove(self, name: str) -> int:
        """Remove every ``name`` line; return how many were removed."""
        key = header_key(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[0] != key]
        removed = before - len(self._fields)
        if removed and self._views:
            index = self._lines_changed(key)
            if index is not None:
                del index[key]
        return removed

    def remove_first(self, name: str) -> str | None:
        """Remove and return the first ``name`` line's value (popping a Via line)."""
        key = header_key(name)
        for position, field in enumerate(self._fields):
            if field[0] == key:
                del self._fields[position]
                index = self._lines_changed(key) if self._views else None
                if index is not None:
                    rest = index[key][1:]
                    if rest:
                        index[key] = rest
                    else:
                        del index[key]
                return field[2]
        return None

    def _lines_changed(self, key: str) -> dict | None:
        """Drop the views the ``key`` lines' change made stale (the edits call it only when
        some view is cached); return the per-name index, when built, for the caller to
        update (its lists are replaced, never changed in place: values() hands them out)."""
        views = self._views
        for view_key in _DEPENDENT_CACHE.get(key) or _dependent_view_keys(key):  # a call less when known
            if view_key in views:
                del views[view_key]
        return views.get(_INDEX)

    def drop_views(self) -> None:
        """Forget the typed views and the per-name index (rebuilt on the next lookup): for
        a message kept long but rarely read, such as a finished transaction's."""
        self._views = {}

    def values(self, key: str) -> list[str]:
        """Every value of the header whose lookup key (see header_key) is ``key``; do not modify it."""
        views = self._views
        index = views.get(_INDEX)
        if index is None:
            # Built on first lookup and kept up to date by the edits,
            # so every later lookup is one dict access.
            index = {}
            for field_key, _, value in self._fields:
                if field_key in index:
                    index[field_key].append(value)
                else:
                    index[field_key] = [value]
            views[_INDEX] = index
        return index.get(key, _NO_VALUES)

    def single_view(self, key: str, name: str, parse: Callable[[str, str], T]) -> T | None:
        """The cached view of a single-valued header: None when absent, an error when repeated."""
        views = self._views
        cached = views.get(key, _NOT_CACHED)
        if cached is not _NOT_CACHED:
            return cached
        values = self.values(key)
        if not values:
            result = None
        elif len(values) > 1:
            raise SIPParseError(f"{len(values)} {name} header fields, one allowed", element=name)
        else:
            result = parse(values[0], name)
        views[key] = result
        return result

    def list_view(self, key: str, name: str, parse: Callable[[str, str], list]) -> list:
        """The cached items of every ``key`` line, each line parsed by ``parse(value, name)``."""
        cached = self._views.get(key, _NOT_CACHED)
        if cached is not _NOT_CACHED:
            return cached
        result = [item for value in self.values(key) for item in parse(value, name)]
        self._views[key] = result
        return result

    def cache_view(self, cache_key: str, value: object) -> None:
        """Store a view computed elsewhere (the parser's eager CSeq and Content-Length)."""
        self._views[cache_key] = value

    def has_view(self, cache_key: str) -> bool:
        """Whether the view ``cache_key`` is cached (dropped by an edit it depends on)."""
        return cache_key in self._views

    def view(self, cache_key: str, build: Callable[[], T]) -> T:
        """Return the cached typed view ``cache_key``, building it on first use."""
        cached = self._views.get(cache_key, _NOT_CACHED)
        if cached is not _NOT_CACHED:
            return cached
        value = self._views[cache_key] = build()
        return value

    def copy(self, shared_views: tuple[str, ...] = ()) -> "Headers":
        """The same lines, the per-name index (an edit replaces a key's list, never
        changes one: the copies share the lists safely), the mark of validate() (the lines
        are the same) and the cached views named in ``shared_views``, which must be
        immutable (an int, a str). The other views are parsed again when read: they are
        objects a caller may change in place (a Via's received)."""
        views = self._views
        index = views.get(_INDEX)
        headers = Headers._from_parsed(list(self._fields), dict(index) if index is not None else None)
        if len(views) > (0 if index is None else 1):  # more than the index: something to take along
            copied = headers._views
            if VALIDATED_MARK in views:
                copied[VALIDATED_MARK] = True
            for key in shared_views:
                view = views.get(key, _NOT_CACHED)
                if view is not _NOT_CACHED:
                    copied[key] = view
        return headers

    def items(self) -> list[tuple[str, str]]:
        """(canonical name, value) pairs in order."""
        return [(name, value) for _, name, value in self._fields]

    def keys(self) -> list[str]:
        """The lookup keys of every line, in order."""
        return [key for key, _, _ in self._fields]

    def fields(self) -> list[tuple[str, str, str]]:
        """(key, canonical name, value) of every line, in order."""
        return list(self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._fields] == [(k, v) for k, _, v in other._fields]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def serialize_into(self, parts: list[str], content_length: int | None) -> None:
        """Append ``Name: value\\r\\n`` lines; Content-Length is written as ``content_length``."""
        for key, name, value in self._fields:
            if key == "content-length" and content_length is not None and value.lstrip("0") != str(content_length).lstrip("0"):
                value = str(content_length)  # the body changed: keep the header honest
            parts.append(f"{name}: {value}\r\n")


def _check_value(value: str, name: str) -> str:
    """A value to add: one line, control characters only in quoted-pairs (as the parser wants)."""
    if value.isprintable():
        # No CR, LF or other CTL (none is printable): the common case, at half the cost
        # of check_controls' search, which would accept it as it is.
        return strip_lws(value)
    if "\r" in value or "\n" in value:
        raise SIPParseError("CR or LF in a header value", element=name)
    check_controls(value, name)
    return strip_lws(value)
