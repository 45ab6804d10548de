"""The routing script's ``dialog`` namespace (Kamailio's dialog module, KEMI names).

- ``dlg_manage()`` (request route): on an initial INVITE, the proxy's ``DialogTable``
  gets a dialog for it (``DialogTable.create``; the responses relayed back confirm or
  end it, the dialog's later requests keep it alive, a BYE ends it, timeouts expire it);
  on an in-dialog request, whether it belongs to a known dialog. 1 success, -1 failure
  (no Call-ID or From tag, the table full, an in-dialog request of no known dialog).
- ``is_in_dialog()``: 1 when the request belongs to a dialog the table tracks, else -1.

Other dialog functions are not implemented: using one is an AttributeError saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from txuac.routing.dialogs import Dialog, DialogError, DialogTable
from txuac.routing.restore import Direction
from txuac.routing.script import RouteKind, allowed_in
from txuac.sip.message import Request

log = Logger()


class DialogFunctions:
    """Kamailio's dialog functions for one request."""

    def __init__(self, msg: Request, table: DialogTable, now: Callable[[], float],
                 found: tuple[Dialog, Direction] | None):
        self._msg = msg
        self._table = table
        self._now = now
        self.found = found  # the request's dialog and direction, once known

    @property
    def dialog(self) -> Dialog | None:
        return self.found[0] if self.found is not None else None

    @allowed_in(RouteKind.REQUEST, RouteKind.BRANCH)
    def dlg_manage(self) -> int:
        """Track the dialog of an initial INVITE; 1 for a request of a known dialog."""
        return self.track()

    def track(self) -> int:
        """``dlg_manage`` without its route check: the proxy tracks a dialog by itself
        when uac_auth raises an initial INVITE's CSeq."""
        if self.found is not None:
            return 1
        to = self._msg.to
        if self._msg.method != "INVITE" or to is None or to.tag is not None:
            return -1
        try:
            self.found = (self._table.create(self._msg, self._now()), Direction.DOWNSTREAM)
        except DialogError as error:
            log.info("dlg_manage: {error}", error=str(error))
            return -1
        return 1

    def is_in_dialog(self) -> int:
        return 1 if self.found is not None else -1

    def __getattr__(self, attribute: str) -> Any:
        raise AttributeError(f"dialog.{attribute}() is not available in this txuac proxy yet")


__all__ = ["DialogFunctions"]
