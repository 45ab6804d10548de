"""The routing script's ``uac`` namespace: From/To replace and restore in the proxy.

Kamailio's names and return codes (README 4.1-4.4; 1 success, -1 failure), bound to one
request (``ProxiedRequest``):

- ``uac_replace_from(display, uri)`` / ``uac_replace_from(uri)`` and ``uac_replace_to``
  (request and branch routes): the header of the request to be forwarded is rewritten
  (``replace.replace_header``). With ``restore_mode`` manual or auto, the original URI is
  kept for restoring: ``;vsf=``/``;vst=`` (``rr_from_store_param``/``rr_to_store_param``,
  ``restore_passwd``, ``restore_sign``) is put on OUR Record-Route when the request is
  relayed, so calling it before or after ``rr.record_route()`` is the same (no
  Record-Route: nothing stored, as Kamailio, whose parameter goes nowhere without it).
  Every reply sent upstream for the transaction gets the From/To it was received with
  (``restore.reply_rewrites``); ``restore_from_avp``/``restore_to_avp`` give the saved span.
- ``uac_restore_from()`` / ``uac_restore_to()`` (request route, manual mode, after
  ``rr.loose_route()``): the Route of ours that loose_route removed is read for
  ``vsf``/``vst`` (``restore.restore_plan``); the replies are not fixed (Kamailio
  registers no reply callback there). In auto mode ``rr.loose_route()`` restores both by
  itself and fixes the replies.
- ``restore_dlg = true`` (auto mode) with a dialog (``dialog.dlg_manage()`` before the
  replace): the URIs and displays go in the dialog's variables (``_uac_fu``, ...) instead
  of vsf/vst, and the dialog's later requests are restored from them, displays included
  (``restore.dialog_restore``), in the direction the dialog gives.

A second replace of the same header on one request applies the last value and keeps the
received one for restoring (replace.py); Kamailio refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from txuac.errors import AddressReplaceError, SIPParseError
from txuac.routing.dialogs import Dialog
from txuac.routing.replace import FROM, TO, Replacement, RestoreMode, replace_header
from txuac.routing.restore import (
    Direction,
    RequestRestore,
    Storage,
    StoreParamNames,
    apply_rewrites,
    dialog_restore,
    dialog_vars_after_replace,
    restore_plan,
    rr_store_param,
    storage_for,
)
from txuac.routing.restore_codec import RestoreCodec
from txuac.routing.req_send import RequestSender, send_from_script
from txuac.routing.reg_functions import RegistrationFunctions, RequestTargets
from txuac.routing.script import allowed_like
from txuac.routing.uac_auth import RequestCredentials

if TYPE_CHECKING:
    from txuac.config import RoutingSettings
    from txuac.sip.message import Request

log = Logger()


@dataclass(frozen=True)
class RestoreSettings:
    """The [routing] settings of From/To restore, parsed once per proxy."""

    mode: RestoreMode
    codec: RestoreCodec
    names: StoreParamNames
    save_spans: frozenset[str]  # headers whose restore_*_avp is set
    dialog_vars: bool = False  # restore_dlg

    @classmethod
    def from_settings(cls, settings: RoutingSettings) -> "RestoreSettings":
        saved = {header for header, on in ((FROM, settings.restore_from_avp), (TO, settings.restore_to_avp)) if on}
        return cls(RestoreMode.parse(settings.restore_mode),
                   RestoreCodec(settings.restore_passwd, settings.restore_sign, settings.restore_sign_key),
                   StoreParamNames(settings.rr_from_store_param, settings.rr_to_store_param),
                   frozenset(saved), settings.restore_dlg)


class RequestAddresses:
    """What uac functions did to one request: replacements, restores, replies to fix.

    Made for every request the proxy routes: slots and a plain ``__init__`` (a dataclass's
    default factories cost more than the rest of it)."""

    __slots__ = ("replacements", "in_dialog_vars", "fixed_headers", "saved_spans", "rr_params")

    def __init__(self) -> None:
        self.replacements: dict[str, Replacement] = {}
        self.in_dialog_vars: set[str] = set()  # replaced headers stored in the dialog
        self.fixed_headers: set[str] = set()
        self.saved_spans: dict[str, str] = {}
        self.rr_params: dict[str, str] = {}  # restored values carried on

    def record_route_params(self, restore: RestoreSettings) -> list[tuple[str, str]]:
        """``(name, value)`` for our Record-Route: the replaced URIs, else those restored."""
        params = dict(self.rr_params)
        if restore.mode is not RestoreMode.NONE:
            for header, replacement in self.replacements.items():
                if header in self.in_dialog_vars:
                    continue
                stored = rr_store_param(replacement, restore.codec, restore.names)
                if stored is not None:
                    params[stored[0]] = stored[1]
        return list(params.items())

    def note_restore(self, plan: RequestRestore) -> None:
        if plan.fix_replies:
            self.fixed_headers.update(plan.fixed_headers)
        for name, value in plan.rr_params:
            self.rr_params[name] = value


def restore_in_dialog(restore: RestoreSettings, msg: "Request", addresses: RequestAddresses,
                      route_params: Mapping[str, str | None],
                      requested: tuple[str, ...] = (FROM, TO)) -> RequestRestore:
    """``restore_plan`` applied to ``msg`` and noted in ``addresses``."""
    plan = restore_plan(restore.mode, msg, route_params, restore.codec, restore.names,
                        requested=requested)
    apply_rewrites(msg, plan.rewrites)
    addresses.note_restore(plan)
    return plan


def restore_from_dialog(restore: RestoreSettings, msg: "Request", addresses: RequestAddresses,
                        dialog: Dialog, flow: Direction) -> RequestRestore:
    """Dialog mode (restore_dlg): ``dialog_restore`` applied to ``msg`` and noted."""
    plan = dialog_restore(dialog.variables, msg, flow)
    apply_rewrites(msg, plan.rewrites)
    addresses.note_restore(plan)
    return plan


class UAC(RegistrationFunctions):
    """Kamailio's uac functions for one request: From/To here, uac_auth (the proxy's
    ``authenticate``), uac_req_send (``requests``), the registration functions
    (``RegistrationFunctions`` on ``registrant``, values put in ``targets``).

    ``dialog()`` gives the request's dialog (``dialog.dlg_manage()``), None without one:
    with ``restore_mode = "auto"`` and ``restore_dlg``, a replace made once the dialog
    exists stores its URIs as dialog variables instead of vsf/vst (Kamailio README 3.4).
    """

    def __init__(self, msg: "Request", restore: RestoreSettings, addresses: RequestAddresses,
                 route_params: "RouteParamsSource", dialog: Callable[[], Dialog | None] = lambda: None,
                 authenticate: Callable[[int], int] | None = None, requests: "RequestSender | None" = None,
                 registrant: Any = None, targets: RequestTargets | None = None,
                 warn_no_registrant: Callable[[], None] = lambda: None):
        super().__init__(registrant, targets if targets is not None else RequestTargets(msg), warn_no_registrant)
        self.credentials = RequestCredentials()  # Kamailio's auth_username/password/realm AVPs
        self._authenticate = authenticate
        self._requests = requests  # the proxy's uac_req_send sender
        self._msg = msg
        self._restore = restore
        self._addresses = addresses
        self._route_params = route_params
        self._dialog = dialog

    def _replace(self, header: str, display: str | None, uri: str | None) -> int:
        addresses = self._addresses
        restore = self._restore
        before = self._msg.headers.get(header)
        dialog = self._dialog()
        storage = storage_for(restore.mode, restore.dialog_vars, dialog is not None)
        try:
            replacement = replace_header(self._msg, header, display, uri,
                                         previous=addresses.replacements.get(header),
                                         restore_mode=restore.mode)
            if storage is Storage.RECORD_ROUTE:
                rr_store_param(replacement, restore.codec, restore.names)  # a URI too long for vsf/vst
        except (AddressReplaceError, SIPParseError) as error:
            if before is not None:
                self._msg.headers.set(header, before)  # -1 leaves the request as it was
            log.info("uac_replace_{which}: {error}", which=header.lower(), error=str(error))
            return -1
        addresses.replacements[header] = replacement
        if storage is Storage.NONE or not replacement.uri_replaced:
            return 1  # K:replace.c: only a replaced URI is stored and its replies fixed
        if storage is Storage.DIALOG:
            assert dialog is not None
            dialog.update_vars(dialog_vars_after_replace(dialog.variables, replacement))
            addresses.in_dialog_vars.add(header)
        addresses.fixed_headers.add(header)
        if header in restore.save_spans:
            addresses.saved_spans.setdefault(header, replacement.original_span)
        return 1

    @allowed_like("uac_replace_from")
    def uac_replace_from(self, display_or_uri: str, uri: str | None = None) -> int:
        """``uac_replace_from(display, uri)``, or ``uac_replace_from(uri)``."""
        if uri is None:
            return self._replace(FROM, None, display_or_uri)
        return self._replace(FROM, display_or_uri, uri)

    @allowed_like("uac_replace_to")
    def uac_replace_to(self, display_or_uri: str, uri: str | None = None) -> int:
        """``uac_replace_to(display, uri)``, or ``uac_replace_to(uri)``."""
        if uri is None:
            return self._replace(TO, None, display_or_uri)
        return self._replace(TO, display_or_uri, uri)

    def _restore_header(self, header: str) -> int:
        if self._restore.mode is not RestoreMode.MANUAL:
            return -1  # K:replace.c restore_uri is for manual mode (auto restores in loose_route)
        params = self._route_params()
        if params is None:
            return -1
        plan = restore_in_dialog(self._restore, self._msg, self._addresses, params, (header,))
        return 1 if plan.restored else -1

    @allowed_like("uac_restore_from")
    def uac_restore_from(self) -> int:
        """Restore From (To the other way) from the Route's ``vsf`` (manual mode)."""
        return self._restore_header(FROM)

    @allowed_like("uac_restore_to")
    def uac_restore_to(self) -> int:
        """Restore To (From the other way) from the Route's ``vst`` (manual mode)."""
        return self._restore_header(TO)

    @allowed_like("uac_req_send")
    def uac_req_send(self, **fields: Any) -> int:
        """Send a request described by the ``$uac_req`` keys as keyword arguments
        (README 4.9; txuac.routing.req_send): 1 when sent, -1 for a bad field. Its replies
        go to ``event_route[uac:reply]`` (or ``event_callback``) as ``evroute`` says."""
        return send_from_script(self._requests, fields)


    @allowed_like("uac_auth")
    def uac_auth(self, mode: int = 0) -> int:
        """Answer the failing branch's 401/407 on the request (README 4.7): 1, then
        ``tm.t_relay()`` sends the new branch; -1 when it cannot. ``mode`` 1: the
        password (``uac.credentials.password`` or ``[uac] credential``) is an HA1."""
        if self._authenticate is None:
            return -1
        try:
            mode = int(mode)
        except (TypeError, ValueError):
            log.info("uac_auth: mode {mode!r} is not a number", mode=mode)
            return -1
        return self._authenticate(mode)

    @allowed_like("uac_auth_mode")
    def uac_auth_mode(self, mode: int) -> int:
        """``uac_auth(mode)`` (README 4.8)."""
        return self.uac_auth.__wrapped__(self, mode)  # type: ignore[attr-defined]


class RouteParamsSource:
    """The params of the Route URI of ours that loose_route removed (None before)."""

    def __init__(self) -> None:
        self.params: Mapping[str, str | None] | None = None

    def __call__(self) -> Mapping[str, str | None] | None:
        return self.params


__all__ = ["RequestAddresses", "RestoreSettings", "RouteParamsSource", "UAC", "restore_from_dialog",
           "restore_in_dialog"]
