"""The routing script's ``tm`` namespace (Kamailio's tm module, KEMI names).

Bound to one proxied request: ``t_relay()`` and ``t_relay_to_uri(uri)`` forward it
statefully, ``t_on_failure``, ``t_on_branch`` and ``t_on_reply`` arm the script's named
routes for its transaction, ``t_is_canceled`` and ``t_check_status`` read its state.
Kamailio's codes: 1 success, -1 failure.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING

from twisted.logger import Logger

from txuac.errors import SIPParseError
from txuac.routing.script import Route
from txuac.sip.uri import parse_uri

if TYPE_CHECKING:
    from txuac.routing.proxied_request import ProxiedRequest

log = Logger()


class TM:
    """Kamailio's tm functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def t_relay(self) -> int:
        """Forward statefully to the Route next hop or the Request-URI (KSR.tm.t_relay)."""
        return self._proxied.relay(None)

    def t_relay_to_uri(self, uri: str) -> int:
        """Forward with ``uri`` as the Request-URI (our equivalent of $ru + t_relay)."""
        try:
            target = parse_uri(uri, "t_relay_to_uri")
        except SIPParseError:
            return -1
        return self._proxied.relay(target)

    def t_on_failure(self, name: str) -> int:
        """Run ``failure_route[name]`` when every branch failed (KSR.tm.t_on_failure)."""
        route = self._named("failure", name)
        if route is not None:
            self._proxied.failure_route = route
        return 1 if route is not None else -1

    def t_on_branch(self, name: str) -> int:
        """Run ``branch_route[name]`` for each branch relayed from now on (KSR.tm.t_on_branch)."""
        route = self._named("branch", name)
        if route is not None:
            self._proxied.branch_route = route
        return 1 if route is not None else -1

    def _named(self, kind: str, name: str) -> Route | None:
        """The script's ``{kind}_route[name]``; None (logged) when it has none."""
        routes = self._proxied.proxy.routes
        table = {"failure": routes.failure, "branch": routes.branch, "reply": routes.replies}[kind]
        route = table.get(name)
        if route is None:
            label = "onreply" if kind == "reply" else kind
            log.error("t_on_{kind}: no {label}_route[{name}] in the script", kind=kind, label=label, name=name)
        return route

    def t_on_reply(self, name: str) -> int:
        """Run ``onreply_route[name]`` for the replies of this transaction (KSR.tm.t_on_reply)."""
        route = self._named("reply", name)
        if route is not None:
            self._proxied.reply_route = route
        return 1 if route is not None else -1

    def t_is_canceled(self) -> int:
        """1 when the transaction was cancelled (a CANCEL from upstream), -1 otherwise."""
        context = self._proxied.context
        return 1 if context is not None and context.cancelled else -1

    def t_check_status(self, regex: str) -> int:
        """1 when the status of the reply being handled (onreply_route) or of the one that
        failed the transaction (failure route) matches ``regex`` (Kamailio: an unanchored
        POSIX match), -1 otherwise."""
        proxied = self._proxied
        context = proxied.context
        if proxied.current_reply is not None:
            status = proxied.current_reply.status
        elif proxied.in_failure_route and context is not None:
            status = context.best_response().status
        else:
            return -1
        try:
            return 1 if re.search(regex, str(status)) else -1
        except re.error:
            return -1
