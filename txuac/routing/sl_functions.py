"""The routing script's ``sl`` namespace (Kamailio's sl module, KEMI names): a reply to
the request being routed, here through its server transaction."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from txuac.routing.proxied_request import ProxiedRequest


class SL:
    """Kamailio's sl functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def sl_send_reply(self, code: int, reason: str | None = None) -> int:
        return self._proxied.reply(int(code), reason)

    send_reply = sl_send_reply
