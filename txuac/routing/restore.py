"""Restoring replaced From/To URIs in a dialog's later requests and in replies (sans-IO).

The decisions of Kamailio's ``restore_uri``, ``rr_checker``, ``restore_uris_reply`` and
``replace_callback`` (K:src/modules/uac/replace.c, reference §1.2-§1.7) as data: each
function returns what the proxy must write (``HeaderRewrite``), which headers the replies
of the transaction must get back (``RequestRestore.fixed_headers``) and which Record-Route
parameters to carry on; the proxy applies them (``apply_rewrites``).

Where the values live (``storage_for``):

- RR mode: ``;vsf=``/``;vst=`` on our Record-Route (``rr_store_param``), read back from
  the Route that addressed us (``restore_plan``). Which header a value rewrites depends
  on the direction, from the Route's ``ftag`` (K:src/modules/rr/loose.c
  ``is_direction``): ``vsf`` rewrites To upstream, From otherwise; ``vst`` rewrites To
  downstream, From otherwise. Only the URI is restored, never the display.
- dialog mode (``restore_mode = auto``, ``restore_dlg = 1``, a dialog exists): dialog
  variables with Kamailio's names (``DIALOG_VARIABLES``), displays restored too
  (``dialog_restore``).
- ``restore_from_avp``/``restore_to_avp``: the header span (display through ``>``) saved
  before an edit (``Replacement.original_span``, ``RequestRestore.saved_spans``) and given
  back to ``reply_rewrites``, for scripts that rewrite the received request.

Replies: every reply of a transaction whose request had From (To) replaced or restored
gets back the request's From (To) span as received, or the saved span (Kamailio
TMCB_RESPONSE_IN). In manual mode, ``uac_restore_*`` does not fix the replies of the
sequential request (Kamailio registers no reply callback there): ``fix_replies`` False.

Difference from Kamailio, on purpose: in dialog mode, a one-argument replace (URI only)
stores the header's own display as the new display, so later requests keep it; Kamailio
stores "" and removes the display from the caller's later requests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from txuac.errors import SIPParseError
from txuac.routing.replace import (
    FROM,
    TO,
    Replacement,
    RestoreMode,
    address_span,
    header_uri,
    rewrite_address,
)
from txuac.routing.restore_codec import RestoreCodec
from txuac.sip.message import Message, Request, Response

# K:replace.c from_dlgvar/to_dlgvar: original URI, new URI, original display, new display.
DIALOG_VARIABLES: Final = {
    FROM: ("_uac_fu", "_uac_funew", "_uac_fdp", "_uac_fdpnew"),
    TO: ("_uac_to", "_uac_tonew", "_uac_tdp", "_uac_tdpnew"),
}


class Direction(enum.Enum):
    """Of an in-dialog request: from the caller (downstream) or from the callee (upstream)."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"


class Storage(enum.Enum):
    """Where a replacement is remembered for restoring."""

    NONE = "none"
    RECORD_ROUTE = "record-route"
    DIALOG = "dialog"


@dataclass(frozen=True)
class StoreParamNames:
    """``rr_from_store_param`` and ``rr_to_store_param`` (Kamailio README 3.1, 3.2)."""

    from_param: str = "vsf"
    to_param: str = "vst"

    def for_header(self, header: str) -> str:
        return self.from_param if header == FROM else self.to_param


# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False, unsafe_hash=True)
class HeaderRewrite:
    """Set ``header`` of a message to ``value`` (the whole header value;
    several are made for each call)."""

    header: Final[str]
    value: Final[str]

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        self.value = value


@dataclass(init=False, unsafe_hash=True)
class RequestRestore:
    """What restoring decided for one in-dialog request."""

    rewrites: Final[tuple[HeaderRewrite, ...]]
    # Parameters to put on our Record-Route again (a re-INVITE we record-route keeps them).
    rr_params: Final[tuple[tuple[str, str], ...]]
    # restore_from_avp / restore_to_avp: each rewritten header's span before the rewrite.
    saved_spans: Final[Mapping[str, str]]
    fix_replies: Final[bool]

    def __init__(self, rewrites: tuple[HeaderRewrite, ...] = (), rr_params: tuple[tuple[str, str], ...] = (),
                 saved_spans: Mapping[str, str] | None = None, fix_replies: bool = False) -> None:
        self.rewrites = rewrites
        self.rr_params = rr_params
        self.saved_spans = saved_spans if saved_spans is not None else {}
        self.fix_replies = fix_replies

    @property
    def fixed_headers(self) -> frozenset[str]:
        """The headers rewritten (Kamailio's FL_USE_UAC_FROM/TO on the request)."""
        return frozenset(rewrite.header for rewrite in self.rewrites)

    @property
    def restored(self) -> bool:
        """Kamailio's ``uac_restore_*`` return: 1 when something was restored."""
        return bool(self.rewrites)


def storage_for(mode: RestoreMode, restore_dlg: bool, dialog_exists: bool) -> Storage:
    """Where a replace stores its values (K:uac.c mod_init, K:replace.c replace_uri).

    ``restore_dlg`` counts only in auto mode; without a dialog for the request, RR mode.
    """
    if mode is RestoreMode.NONE:
        return Storage.NONE
    if mode is RestoreMode.AUTO and restore_dlg and dialog_exists:
        return Storage.DIALOG
    return Storage.RECORD_ROUTE


def rr_store_param(replacement: Replacement, codec: RestoreCodec = RestoreCodec(),
                   names: StoreParamNames = StoreParamNames()) -> tuple[str, str] | None:
    """``(name, value)`` for our Record-Route, None when the URI was not replaced."""
    if not replacement.uri_replaced:
        return None
    assert replacement.new_uri is not None
    value = codec.encode(replacement.original_uri, replacement.new_uri)
    return names.for_header(replacement.header), value


def direction(ftag: str | None, from_tag: str | None) -> Direction:
    """K:rr/loose.c is_direction: ``ftag`` equal to the From-tag is downstream, different is
    upstream; a missing or empty one of them counts as downstream."""
    if not ftag or not from_tag or ftag == from_tag:
        return Direction.DOWNSTREAM
    return Direction.UPSTREAM


def message_direction(message: Message, ftag: str | None) -> Direction:
    """``direction`` against the message's From-tag (an unparsable From: downstream)."""
    try:
        address = message.from_
    except SIPParseError:
        return Direction.DOWNSTREAM
    return direction(ftag, address.tag if address is not None else None)


def restored_header(param_header: str, flow: Direction) -> str:
    """The header a ``vsf`` (FROM) or ``vst`` (TO) value rewrites (reference §1.5)."""
    if param_header == FROM:
        return TO if flow is Direction.UPSTREAM else FROM
    return TO if flow is Direction.DOWNSTREAM else FROM


def restore_header(message: Message, param_header: str, value: str, flow: Direction,
                   codec: RestoreCodec = RestoreCodec()) -> HeaderRewrite | None:
    """Decode ``value`` against the header it rewrites; None when it does not decode."""
    header = restored_header(param_header, flow)
    current = message.headers.get(header)
    if current is None:
        return None
    try:
        current_uri = header_uri(message, header)
        if current_uri is None:
            return None
        other = codec.decode(value, current_uri)
        if other is None:
            return None
        return HeaderRewrite(header, rewrite_address(current, None, other, header))
    except SIPParseError:
        return None


def restore_plan(mode: RestoreMode, message: Request, route_params: Mapping[str, str | None],
                 codec: RestoreCodec = RestoreCodec(), names: StoreParamNames = StoreParamNames(),
                 *, requested: Iterable[str] = (FROM, TO)) -> RequestRestore:
    """Restore an in-dialog request from the params of the Route URI that addressed us.

    Auto mode restores both (``rr_checker``, run by loose routing); manual mode restores
    what the script asked for in ``requested`` (FROM for ``uac_restore_from()``, TO for
    ``uac_restore_to()``); none restores nothing.
    """
    if mode is RestoreMode.NONE:
        return RequestRestore()
    flow = message_direction(message, route_params.get("ftag"))
    rewrites: list[HeaderRewrite] = []
    rr_params: list[tuple[str, str]] = []
    saved: dict[str, str] = {}
    for param_header in (FROM, TO):
        if param_header not in requested:
            continue
        name = names.for_header(param_header)
        value = route_params.get(name)
        if not value:
            continue
        if codec.well_formed(value):
            rr_params.append((name, value))  # K:replace.c re-adds it once it decodes
        rewrite = restore_header(message, param_header, value, flow, codec)
        if rewrite is None:
            continue
        saved[rewrite.header] = address_span(message.headers.get(rewrite.header) or "", rewrite.header)
        rewrites.append(rewrite)
    fix = mode is RestoreMode.AUTO and bool(rewrites)
    return RequestRestore(tuple(rewrites), tuple(rr_params), saved, fix)


def reply_rewrites(response: Response, fixed_headers: Iterable[str], received: Request | None = None,
                   saved_spans: Mapping[str, str] | None = None) -> list[HeaderRewrite]:
    """Give a reply back the From/To its transaction's request was received with.

    For each header in ``fixed_headers``: the reply's span (display through ``>``; the
    params such as ``;tag=`` kept) is replaced by ``saved_spans[header]`` when set (the
    ``restore_*_avp`` equivalent), else by the same span of ``received``. A header the
    reply or the source lacks is left alone.
    """
    rewrites = []
    for header in (FROM, TO):
        if header not in fixed_headers:
            continue
        current = response.headers.get(header)
        if current is None:
            continue
        source = (saved_spans or {}).get(header)
        try:
            if not source:
                received_value = received.headers.get(header) if received is not None else None
                if received_value is None:
                    continue
                source = address_span(received_value, header)
            span = address_span(current, header)
        except SIPParseError:
            continue
        rewrites.append(HeaderRewrite(header, source + current[len(span):]))
    return rewrites


def dialog_vars_after_replace(variables: Mapping[str, str], replacement: Replacement) -> dict[str, str]:
    """The dialog variables to set after a replace (K:replace.c replace_uri, dialog branch).

    The first replace in a dialog stores the original URI and display; a later one (another
    branch, a serial fork) keeps them and sets only the new ones. Nothing when the URI was
    not replaced.
    """
    if not replacement.uri_replaced:
        return {}
    assert replacement.new_uri is not None
    original_uri, new_uri, original_display, new_display = DIALOG_VARIABLES[replacement.header]
    updates = {
        new_uri: replacement.new_uri,
        new_display: replacement.new_display if replacement.new_display is not None
        else replacement.original_display,
    }
    if original_uri not in variables:
        updates[original_uri] = replacement.original_uri
        updates[original_display] = replacement.original_display
    return updates


def dialog_restore(variables: Mapping[str, str], message: Request, flow: Direction) -> RequestRestore:
    """Rewrite an in-dialog request from the dialog variables (K:replace.c replace_callback).

    Downstream, From (To) gets the new URI and display; upstream, the original URI and
    display go into To (From). An empty stored display removes the display.
    """
    rewrites = []
    saved = {}
    for replaced in (FROM, TO):
        original_uri, new_uri, original_display, new_display = DIALOG_VARIABLES[replaced]
        if original_uri not in variables or new_uri not in variables:
            continue
        if flow is Direction.DOWNSTREAM:
            header, uri, display = replaced, variables[new_uri], variables.get(new_display, "")
        else:
            header = TO if replaced == FROM else FROM
            uri, display = variables[original_uri], variables.get(original_display, "")
        current = message.headers.get(header)
        if current is None or not uri:
            continue
        try:
            value = rewrite_address(current, display, uri, header)
            saved[header] = address_span(current, header)
        except SIPParseError:
            continue
        rewrites.append(HeaderRewrite(header, value))
    return RequestRestore(tuple(rewrites), (), saved, bool(rewrites))


def apply_rewrites(message: Message, rewrites: Iterable[HeaderRewrite]) -> None:
    """Write each rewrite into ``message``."""
    for rewrite in rewrites:
        message.headers.set(rewrite.header, rewrite.value)
