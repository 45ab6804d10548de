"""The routing script's ``rr`` namespace (Kamailio's rr module, KEMI names).

``record_route()`` puts our Record-Route on the relayed request (RFC 3261 16.6 item 4);
``loose_route()`` is RFC 3261 16.4 on the request being routed and, in
``restore_mode = "auto"``, restores its From/To as Kamailio's uac rr callback does.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from txuac.errors import SIPParseError
from txuac.routing.proxy_rules import preprocess_route
from txuac.routing.replace import RestoreMode
from txuac.routing.uac_functions import restore_from_dialog, restore_in_dialog

if TYPE_CHECKING:
    from txuac.routing.proxied_request import ProxiedRequest


class RR:
    """Kamailio's rr functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def record_route(self) -> int:
        """Our Record-Route on the relayed request (RFC 3261 16.6 item 4)."""
        self._proxied.record_route = True
        return 1

    def loose_route(self) -> int:
        """RFC 3261 16.4: 1 when a Route (or strict-router Request-URI) of ours was
        removed from the request, -1 otherwise (or for a malformed Route)."""
        msg = self._proxied.msg
        try:
            processed = preprocess_route(msg, self._proxied.proxy.is_local_uri)
        except SIPParseError:
            return -1
        if not (processed.loose_routed or processed.strict_route_compat):
            return -1
        msg.uri, msg.headers = processed.request.uri, processed.request.headers
        proxied = self._proxied
        params = processed.params
        proxied.route_params.params = params
        restore = proxied.proxy.restore
        found = proxied.dialog.found
        if restore.mode is RestoreMode.AUTO and restore.dialog_vars and found is not None and found[0].variables:
            # restore_dlg: the dialog's variables (K:replace.c replace_callback).
            restore_from_dialog(restore, msg, proxied.addresses, found[0], found[1])
        elif restore.mode is RestoreMode.AUTO and processed.own_uris:
            # K:uac.c rr_checker: auto mode restores From/To inside loose_route.
            restore_in_dialog(restore, msg, proxied.addresses, params)
        return 1
