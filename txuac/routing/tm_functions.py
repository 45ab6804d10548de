"""The routing script's ``tm`` namespace (Kamailio's tm module, KEMI names).

Bound to one proxied request: ``t_relay()`` and ``t_relay_to_uri(uri)`` forward it
statefully, ``t_on_failure``, ``t_on_branch``, ``t_on_reply`` and ``t_on_branch_failure``
arm the script's named routes for its transaction, ``t_is_canceled`` and
``t_check_status`` read its state.
``setdsturi``, ``resetdsturi``, ``isdsturiset`` and ``du`` are Kamailio's ``$du`` (KEMI's
core ``KSR.setdsturi``...; txuac has no core namespace): the next hop of the branches
relayed from now on, the Request-URI and Route untouched. Kamailio's codes: 1 success,
-1 failure.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING

from twisted.logger import Logger

from txuac.errors import SIPParseError
from txuac.routing.script import BRANCH_FAILURE_EVENT, Route
from txuac.sip.uri import parse_uri

if TYPE_CHECKING:
    from txuac.routing.proxied_request import ProxiedRequest

log = Logger()


class TM:
    """Kamailio's tm functions for one request."""

    def __init__(self, proxied: ProxiedRequest):
        self._proxied = weakref.proxy(proxied)

    def t_relay(self) -> int:
        """Forward statefully to ``$du``, else the Route next hop or the Request-URI
        (KSR.tm.t_relay)."""
        return self._proxied.relay(None)

    def setdsturi(self, uri: str) -> int:
        """``$du = uri``: 1, or -1 (logged) when ``uri`` is not a URI (KSR.setdsturi)."""
        return 1 if self._proxied.targets.store("$du", str(uri)) else -1

    def resetdsturi(self) -> int:
        """``$du = $null``: the Route or the Request-URI decides again (KSR.resetdsturi)."""
        self._proxied.targets.destination = None
        return 1

    def isdsturiset(self) -> int:
        """1 when ``$du`` is set (here or by a uac_reg function), -1 otherwise (KSR.isdsturiset)."""
        return 1 if self._proxied.targets.destination is not None else -1

    @property
    def du(self) -> str | None:
        """``$du`` as text, None when unset; assigning a string is ``setdsturi``, None
        ``resetdsturi`` (an invalid URI raises SIPParseError)."""
        destination = self._proxied.targets.destination
        return str(destination) if destination is not None else None

    @du.setter
    def du(self, uri: str | None) -> None:
        if uri is None:
            self.resetdsturi()
        else:
            self._proxied.targets.destination = parse_uri(str(uri), "$du")

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
        if kind == "branch_failure":
            route = routes.events.get(f"{BRANCH_FAILURE_EVENT}:{name}")
            label = f"event_route[{BRANCH_FAILURE_EVENT}:{name}]"
        else:
            table = {"failure": routes.failure, "branch": routes.branch, "reply": routes.replies}[kind]
            route = table.get(name)
            label = f"{'onreply' if kind == 'reply' else kind}_route[{name}]"
        if route is None:
            log.error("t_on_{kind}: no {label} in the script", kind=kind, label=label)
        return route

    def t_on_branch_failure(self, name: str) -> int:
        """Run ``event_route[tm:branch-failure:name]`` for each branch of this transaction
        that fails from now on (KSR.tm.t_on_branch_failure)."""
        route = self._named("branch_failure", name)
        if route is not None:
            self._proxied.branch_failure_route = route
        return 1 if route is not None else -1

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
        """1 when the status of the reply being handled (onreply_route), of the failed
        branch (tm:branch-failure) or of the one that failed the transaction (failure
        route) matches ``regex`` (Kamailio: an unanchored
        POSIX match), -1 otherwise."""
        proxied = self._proxied
        context = proxied.context
        if proxied.current_reply is not None:
            status = proxied.current_reply.status
        elif proxied.failed_branch is not None and context is not None:
            final = context.branches[proxied.failed_branch].final
            if final is None:
                return -1
            status = final.status
        elif proxied.in_failure_route and context is not None:
            status = context.best_response().status
        else:
            return -1
        try:
            return 1 if re.search(regex, str(status)) else -1
        except re.error:
            return -1
