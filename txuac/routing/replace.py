"""``uac_replace_from``/``uac_replace_to`` on a request's header (sans-IO).

Kamailio edits the header bytes in place (K:src/modules/uac/replace.c ``replace_uri``,
reference §1.1); so does this module, on the header value text, so that everything it
does not change stays as received:

- display (two-argument form only; ``display=None`` is the one-argument form and keeps
  it): the old display (a quoted string with its quotes, or the tokens) is replaced where
  it stands; an empty display removes it and the spaces after it; a display added to a
  header without one goes before ``<`` followed by one space, or, on a header without
  brackets, as ``DISPLAY <`` before the URI with ``>`` after it. No quoting is added
  (Kamailio's README: pass ``"\\"Name\\""`` yourself).
- URI (when non-empty): the URI inside the brackets is replaced byte for byte; on a
  header without brackets, a new URI holding ``;`` after its first character is put in
  ``<>`` (Kamailio master, d9e6bb39ca).

Differences from Kamailio, on purpose:

- calling replace again on the same request (``previous=`` the first result) applies
  the last value and keeps the values of the header as received for restoring; Kamailio
  refuses a second call in request_route ("called uac_replace_from() multiple times").
- a display added to a header without brackets together with a URI holding ``;`` gives
  ``DISPLAY <uri;p>``, not Kamailio's ``DISPLAY <<uri;p>>``; a URI holding ``?`` or
  ``,`` is bracketed as well (RFC 3261 20.10), where Kamailio writes it bare.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Final

from txuac.errors import AddressReplaceError, ConfigError, SIPParseError
from txuac.sip.grammar import match_quoted
from txuac.sip.message import Message, Request

FROM: Final = "From"
TO: Final = "To"


class RestoreMode(enum.Enum):
    """``restore_mode`` (Kamailio README 3.3)."""

    NONE = "none"
    MANUAL = "manual"
    AUTO = "auto"

    @classmethod
    def parse(cls, text: str) -> "RestoreMode":
        """The mode named ``text``, case-insensitive as in Kamailio's mod_init."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ConfigError(f"[routing] restore_mode: {text!r} is not none, manual or auto") from None


# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False, unsafe_hash=True)
class AddressLayout:
    """Where the parts of a From/To value (name-addr or addr-spec, with params) lie (made
    for each new From/To value, several times a call)."""

    display_start: Final[int]
    display_end: Final[int]  # display_start == display_end: no display
    uri_start: Final[int]
    uri_end: Final[int]
    enclosed: Final[bool]  # the URI is in <...>

    def __init__(self, display_start: int, display_end: int, uri_start: int, uri_end: int, enclosed: bool) -> None:
        self.display_start = display_start
        self.display_end = display_end
        self.uri_start = uri_start
        self.uri_end = uri_end
        self.enclosed = enclosed

    @property
    def has_display(self) -> bool:
        return self.display_end > self.display_start


@functools.lru_cache(maxsize=4096)
def address_layout(value: str, element: str = "From") -> AddressLayout:
    """Locate display and URI in a From/To value (SIPParseError when malformed).

    Remembered for the latest values: a call's From and To come back in every request
    and reply of the call, each read several times (restore, reply fixing)."""
    if value.startswith('"'):
        end = match_quoted(value, 0, element)
        lt = value.find("<", end)
        if lt < 0 or value[end:lt].strip(" \t"):
            raise SIPParseError("expected '<' after the display name", element=element)
        display_start, display_end = 0, end
    else:
        lt = value.find("<")
        if lt < 0:
            semicolon = value.find(";")
            uri_end = len(value) if semicolon < 0 else len(value[:semicolon].rstrip(" \t"))
            return AddressLayout(0, 0, 0, uri_end, False)
        display_end = len(value[:lt].rstrip(" \t"))
        display_start = 0
    gt = value.find(">", lt)
    if gt < 0:
        raise SIPParseError("unbalanced '<'", element=element)
    inside = value[lt + 1:gt]
    uri_start = lt + 1 + len(inside) - len(inside.lstrip(" \t"))
    uri_end = lt + 1 + len(inside.rstrip(" \t"))
    return AddressLayout(display_start, display_end, uri_start, uri_end, True)


@functools.lru_cache(maxsize=4096)
def address_span(value: str, element: str = "From") -> str:
    """The value from its start through the ``>`` after the URI, params left out.

    Kamailio's ``restore_*_avp`` content and the part of a reply's From/To that reply
    fixing replaces (K:replace.c: URI end, whitespace, then ``>`` if there is one).
    Remembered like ``address_layout``: each reply sent upstream asks for the spans of
    its own and its request's From/To.
    """
    layout = address_layout(value, element)
    end = layout.uri_end
    rest = value[end:]
    stripped = rest.lstrip(" \t")
    if stripped.startswith(">"):
        end += len(rest) - len(stripped) + 1
    return value[:end]


def _needs_brackets(uri: str) -> bool:
    # Kamailio: a ';' after the first character; ours adds '?' and ',' (RFC 3261 20.10).
    return any(char in uri[1:] for char in ";?,")


def rewrite_address(value: str, display: str | None, uri: str | None, element: str = "From") -> str:
    """``value`` with Kamailio's display and URI rules applied (module docstring).

    ``display`` None keeps the display, "" removes it; ``uri`` None or "" keeps the URI.
    """
    layout = address_layout(value, element)
    before = value[:layout.uri_start]
    uri_text = value[layout.uri_start:layout.uri_end]
    after = value[layout.uri_end:]
    bracketed_here = False
    if display is not None:
        head = before[:layout.display_start]
        tail = before[layout.display_end:]
        if layout.has_display:
            if display:
                before = head + display + tail
            else:
                before = head + tail.lstrip(" ")
        elif display:
            if layout.enclosed:
                lt = len(before) - 1
                before = before[:lt] + display + " " + before[lt:]
            else:
                before = before + display + " <"
                after = ">" + after
                bracketed_here = True
    if uri:
        uri_text = uri
        if not layout.enclosed and not bracketed_here and _needs_brackets(uri):
            uri_text = "<" + uri + ">"
    return before + uri_text + after


@dataclass(init=False, unsafe_hash=True)
class Replacement:
    """What replacing a request's From or To changed, for the proxy to store.

    ``original_*`` are the header as received (before the first replace on this
    request); the proxy puts ``restore.rr_store_param(...)`` in its Record-Route
    (``vsf``/``vst``), or ``restore.dialog_vars_after_replace(...)`` in the dialog, or keeps ``original_span`` as the
    ``restore_from_avp``/``restore_to_avp`` value for fixing replies.
    """

    header: Final[str]  # FROM or TO
    original_uri: Final[str]
    original_display: Final[str]  # raw, quotes included; "" when there was none
    original_span: Final[str]
    new_uri: Final[str | None]  # None: the URI was not replaced (display only)
    new_display: Final[str | None]  # None: the display was not given (one-argument form)

    def __init__(self, header: str, original_uri: str, original_display: str, original_span: str,
                 new_uri: str | None, new_display: str | None) -> None:
        self.header = header
        self.original_uri = original_uri
        self.original_display = original_display
        self.original_span = original_span
        self.new_uri = new_uri
        self.new_display = new_display

    @property
    def uri_replaced(self) -> bool:
        """Only a replaced URI is stored for restoring (K:replace.c)."""
        return bool(self.new_uri)


def replace_header(request: Request, header: str, display: str | None, uri: str | None, *,
                   previous: Replacement | None = None,
                   restore_mode: RestoreMode = RestoreMode.NONE) -> Replacement:
    """Apply ``uac_replace_from``/``uac_replace_to`` to ``request`` and say what changed.

    ``previous``: the result of an earlier call for the same header on this request; its
    originals are kept. ``restore_mode`` AUTO declines a URI change in a request with a
    To-tag, as Kamailio does (AddressReplaceError).
    """
    if header not in (FROM, TO):
        raise ValueError(f"header must be From or To, not {header!r}")
    if previous is not None and previous.header != header:
        raise ValueError(f"previous replacement is for {previous.header}, not {header}")
    if restore_mode is RestoreMode.AUTO and uri:
        to = request.to
        if to is not None and to.tag:
            # K:replace.c: "decline FROM replacing in sequential request in auto mode"
            raise AddressReplaceError(f"{header} URI not replaced in a sequential request in auto mode")
    value = request.headers.get(header)
    if value is None:
        raise AddressReplaceError(f"no {header} header to replace")
    layout = address_layout(value, header)
    if previous is None:
        original_uri = value[layout.uri_start:layout.uri_end]
        original_display = value[layout.display_start:layout.display_end]
        original_span = address_span(value, header)
        new_uri = uri or None
        new_display = display
    else:
        original_uri = previous.original_uri
        original_display = previous.original_display
        original_span = previous.original_span
        new_uri = uri or previous.new_uri
        new_display = display if display is not None else previous.new_display
    request.headers.set(header, rewrite_address(value, display, uri, header))
    return Replacement(header, original_uri, original_display, original_span, new_uri, new_display)


def header_uri(message: Message, header: str) -> str | None:
    """The bare URI text of ``message``'s From or To as it stands, None when absent."""
    value = message.headers.get(header)
    if value is None:
        return None
    layout = address_layout(value, header)
    return value[layout.uri_start:layout.uri_end]
