"""The ``uac`` namespace's registration functions (Kamailio README 4.10-4.16; reference
section 4.10), on the registrant of the service (``[uac] reg_db_url``).

Kamailio writes results into pseudo-variables named by ``dst``; here ``dst`` is
``"$ru"`` (the Request-URI of the request being routed), ``"$du"`` (its destination
URI: the next hop, Request-URI and Route untouched, as Kamailio's) or a callable given
the value. Without a registrant every function returns -1 (logged once per proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from txuac.errors import ScriptArgumentError, SIPParseError
from txuac.routing.script import allowed_like
from txuac.routing.uac_auth import RequestCredentials
from txuac.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:
    from txuac.sip.message import Request
    from txuac.sip.uri import URI

log = Logger()

Destination = str | Callable[[str], Any]
REQUEST_TO_MODES = range(4)  # bit 0: match l_username; bit 1: the HA1 as password


class RequestTargets:
    """Where ``dst`` values go for one request: its Request-URI and destination URI."""

    def __init__(self, msg: "Request | None") -> None:
        self.msg = msg
        self.destination: "URI | None" = None  # Kamailio's $du

    def store(self, dst: Destination, value: str) -> bool:
        """Put ``value`` in ``dst``; False when it cannot go there (logged)."""
        if callable(dst):
            dst(value)
            return True
        if dst not in ("$ru", "$du"):
            raise ScriptArgumentError(f"dst must be \"$ru\", \"$du\" or a callable, not {dst!r}")
        if self.msg is None:
            log.info("{dst}: no request here", dst=dst)
            return False
        try:
            uri = parse_uri(value, dst)
        except SIPParseError as e:
            log.info("{dst}: {error}", dst=dst, error=str(e))
            return False
        if dst == "$ru":
            self.msg.uri = uri
        else:
            self.destination = uri
        return True


class RegistrationFunctions:
    """uac_reg_lookup, uac_reg_lookup_uri, uac_reg_status, uac_reg_request_to,
    uac_reg_enable, uac_reg_disable, uac_reg_refresh; mixed into the ``uac`` namespace, which provides ``credentials`` (the request's credentials)."""

    credentials: RequestCredentials

    def __init__(self, registrant: Any, targets: RequestTargets, warn_missing: Callable[[], None]):
        self._registrant = registrant
        self._targets = targets
        self._warn_missing = warn_missing

    def _active(self) -> Any:
        if self._registrant is None:
            self._warn_missing()
        return self._registrant

    @allowed_like("uac_reg_lookup")
    def uac_reg_lookup(self, uuid: str, dst: Destination) -> int:
        """``sip:l_username@l_domain`` of the account ``uuid`` into ``dst``: 1, or -1."""
        registrant = self._active()
        found = registrant.lookup(str(uuid)) if registrant is not None else None
        return 1 if found is not None and self._targets.store(dst, found) else -1

    @allowed_like("uac_reg_lookup_uri")
    def uac_reg_lookup_uri(self, uri: str, dst: Destination) -> int:
        """The l_uuid of the account whose l_username (and l_domain with reg_use_domain)
        ``uri`` names into ``dst``: 1, -1 not found, -2 not a SIP URI."""
        registrant = self._active()
        if registrant is None:
            return -1
        try:
            if not isinstance(parse_uri(str(uri)), SipURI):
                return -2
        except SIPParseError:
            return -2
        found = registrant.lookup_uri(str(uri))
        return 1 if found is not None and self._targets.store(dst, found) else -1

    @allowed_like("uac_reg_status")
    def uac_reg_status(self, uuid: str) -> int:
        """1 registered, -2 registering, -3 disabled, -99 waiting, -1 unknown."""
        registrant = self._active()
        return registrant.status(str(uuid)) if registrant is not None else -1

    @allowed_like("uac_reg_request_to")
    def uac_reg_request_to(self, user: str, mode: int = 0) -> int:
        """Address the request to the account's registrar as the account: Request-URI
        ``sip:r_username@r_domain``, destination ``auth_proxy``, and ``uac.credentials`` set for
        ``uac_auth`` (mode bit 0: ``user`` is an l_username, else an l_uuid; bit 1: the
        HA1 as password, then ``uac_auth(1)``). 1, -1 not found, -2 not a SIP URI."""
        registrant = self._active()
        if registrant is None:
            return -1
        if mode not in REQUEST_TO_MODES:
            log.info("uac_reg_request_to: mode {mode!r} is not 0 to 3", mode=mode)
            return -1
        try:
            found = registrant.request_to(str(user), int(mode))
        except SIPParseError:
            return -2
        if found is None or not found["password"]:
            return -1
        if not self._targets.store("$ru", found["ruri"]):
            return -1
        self._targets.destination = None
        if found["duri"] and not self._targets.store("$du", found["duri"]):
            return -1
        self.credentials.username, self.credentials.password, self.credentials.realm = found["username"], found["password"], found["realm"]
        return 1

    @allowed_like("uac_reg_enable")
    def uac_reg_enable(self, attr: str, val: str) -> int:
        """Enable the first account whose ``attr`` (l_uuid, l_username, r_username,
        auth_username) is ``val``, as ``uac.reg_enable`` does. 1, or -1 (none, another attr)."""
        return self._set_enabled("uac_reg_enable", attr, val, True)

    @allowed_like("uac_reg_disable")
    def uac_reg_disable(self, attr: str, val: str) -> int:
        """Disable the first account whose ``attr`` is ``val`` (as uac_reg_enable). 1, or -1."""
        return self._set_enabled("uac_reg_disable", attr, val, False)

    def _set_enabled(self, name: str, attr: str, val: str, enabled: bool) -> int:
        registrant = self._active()
        if registrant is None:
            return -1
        operation = registrant.enable if enabled else registrant.disable
        result = operation(str(attr), str(val))
        if result < 0:  # the registrant's -2 (no such account) and -3 (attr) are Kamailio's -1
            log.info("{name}: {why}", name=name,
                     why=f"no account with {attr} {val!r}" if result == -2 else f"{attr!r} is not an account field")
            return -1
        return 1

    @allowed_like("uac_reg_refresh")
    def uac_reg_refresh(self, luuid: str) -> int:
        """Read the row ``luuid`` from the store again (the account is added, changed or left
        as it is, as ``uac.reg_refresh``). The store answers asynchronously: 1 once the read
        is under way, or its result (1, -1 no such row or invalid) when it answered at once;
        a later -1 is logged. -1 without a registrant or an l_uuid."""
        registrant = self._active()
        if registrant is None or not luuid:
            return -1
        answered: list[int] = []
        d = defer.maybeDeferred(registrant.refresh, str(luuid)).addErrback(_refresh_error, luuid)
        d.addCallback(answered.append)
        if answered:
            return 1 if answered[0] > 0 else -1
        d.addCallback(lambda _: _note_late_refresh(answered[0], luuid))
        return 1


def _refresh_error(failure: Any, luuid: str) -> int:
    log.failure("uac_reg_refresh of {luuid} failed", failure, luuid=luuid)
    return -1


def _note_late_refresh(result: int, luuid: str) -> None:
    if result < 0:
        log.info("uac_reg_refresh: no valid row {luuid} in the store", luuid=luuid)


__all__ = ["RegistrationFunctions", "RequestTargets"]
