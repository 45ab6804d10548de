"""One uacreg account in memory: its row, validated as Kamailio does, and its state.

Sans-IO: no Twisted, no clock; times are passed in as ``now`` (seconds).
"""

from __future__ import annotations

import enum
import random
import sys
from dataclasses import dataclass, field

from txuac.errors import SIPParseError, TxuacError
from txuac.sip.uri import parse_uri


class Flag:
    """Kamailio's state bits, kept with the same values (they show in RPC output and the DB).

    Plain ints, not an IntFlag: they are tested many times per REGISTER, and enum
    arithmetic was a measurable share of the registrant's CPU.
    """

    DISABLED = 1
    ONGOING = 2
    ONLINE = 4
    AUTHSENT = 8
    INIT = 16


class State(str, enum.Enum):
    """A readable state derived from the flags and times (reg_dump's ``state`` field)."""

    ONLINE = "online"
    REGISTERING = "registering"
    WAITING = "waiting"  # not sent yet, or a retry is pending
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    DISABLED = "disabled"
    UNREGISTERED = "unregistered"  # expires 0: dormant until refreshed or reloaded


class InvalidRecord(TxuacError):
    """A uacreg row Kamailio would not load; ``reason`` says why."""


# Columns that Kamailio refuses to load empty (K:uac_reg.c uac_reg_db_to_reg).
MANDATORY = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "auth_username", "auth_proxy")
_HEX = frozenset("0123456789abcdef")


@dataclass(slots=True)
class RegistrationRecord:
    """A registration account: the uacreg columns, then the runtime state."""

    l_uuid: str
    l_username: str
    l_domain: str
    r_username: str
    r_domain: str
    realm: str
    auth_username: str
    auth_password: str
    auth_ha1: str
    auth_proxy: str
    expires: int  # requested; changed by 423 and by unregister
    table_expires: int  # as loaded: what a failed run of 423s returns to
    flags: int  # Flag bits
    reg_delay: int
    contact_addr: str
    socket: str
    contact_user: str
    # --- ours, from the account's row in our own table beside uacreg (issue 8) ---
    user_agent: str = ""  # "": the service's user_agent
    extra_headers: tuple[tuple[str, str], ...] = ()  # added to every REGISTER
    from_username: str = ""  # "": r_username (From user different from the auth user)
    outbound: bool = False  # RFC 5626: +sip.instance, reg-id, flow keep-alives
    instance_id: str = ""  # "urn:uuid:...", made once and kept
    reg_id: int = 1
    options_ping: bool = False  # OPTIONS pings to the registrar, with up/down hysteresis
    # --- state ----------------------------------------------------------------
    loaded_at: float = 0.0  # Kamailio's reg_init
    due_at: float = 0.0  # when the scheduler next sends a REGISTER for it
    sent_at: float | None = None
    expires_at: float | None = None  # send time + granted expiry of the last 200
    call_id: str | None = None  # kept between refreshes with reg_keep_callid
    cseq: int = 0
    last_status: int | None = None
    last_failure: str | None = None
    failures: int = field(default=0)
    # Learnt from the last 200 OK (RFC 3327, RFC 3608, RFC 5627, RFC 5626).
    path: tuple[str, ...] = ()
    service_route: tuple[str, ...] = ()
    pub_gruu: str | None = None
    temp_gruu: str | None = None
    flow_timer: int | None = None

    @property
    def aor(self) -> str:
        """The remote address of record: From and To of the REGISTER."""
        return f"sip:{self.r_username}@{self.r_domain}"

    @property
    def local_uri(self) -> str:
        """What uac_reg_lookup returns: ``sip:l_username@l_domain``."""
        return f"sip:{self.l_username}@{self.l_domain}"

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def registered(self, now: float) -> bool:
        """Online and not expired: what regactive counts and status 1 means."""
        return self.has(Flag.ONLINE) and self.expires_at is not None and self.expires_at > now

    def status(self, now: float) -> int:
        """Kamailio's uac_reg_status: 1 registered, -2 ongoing, -3 disabled, -99 otherwise."""
        if self.registered(now):
            return 1
        if self.has(Flag.ONGOING):
            return -2
        if self.has(Flag.DISABLED):
            return -3
        return -99

    def state(self, now: float) -> State:
        if self.has(Flag.DISABLED):
            return State.DISABLED
        if self.has(Flag.ONGOING):
            return State.REGISTERING
        if self.registered(now):
            return State.ONLINE
        if self.expires == 0:
            return State.UNREGISTERED
        if self.last_failure is not None:
            return State.FAILED
        return State.WAITING


def record_from_row(row: dict, now: float, reg_random_delay: int = 0,
                    rng: random.Random | None = None) -> RegistrationRecord:
    """Validate a uacreg row as Kamailio does (K:uac_reg.c); InvalidRecord names the reason.

    Mandatory columns must not be empty; a password or a 32-hex HA1 is needed
    (the HA1 wins and is lower-cased). reg_delay 0 with reg_random_delay set
    draws a random delay in [0, reg_random_delay).
    """
    values = {name: _text(row.get(name), name in _SHARED_COLUMNS) for name in _TEXT_COLUMNS}
    for name in MANDATORY:
        if not values[name]:
            raise InvalidRecord(f"{name} is empty")
    ha1 = values["auth_ha1"].lower()
    if ha1 and (len(ha1) != 32 or not _HEX.issuperset(ha1)):
        raise InvalidRecord("auth_ha1 is not 32 hex digits")
    if not ha1 and not values["auth_password"]:
        raise InvalidRecord("neither auth_password nor auth_ha1 is set")
    values["auth_ha1"] = ha1
    for name in ("r_domain", "r_username"):
        try:  # the REGISTER's Request-URI and From/To must be valid SIP URIs
            parse_uri(f"sip:{values['r_username']}@{values['r_domain']}" if name == "r_username"
                      else f"sip:{values['r_domain']}", name)
        except SIPParseError as e:
            raise InvalidRecord(f"{name} does not make a SIP URI: {e.reason}") from None
    numbers = {name: _integer(row.get(name), name) for name in ("expires", "flags", "reg_delay")}
    if numbers["expires"] < 0 or numbers["reg_delay"] < 0:
        raise InvalidRecord("expires and reg_delay must not be negative")
    reg_delay = numbers["reg_delay"]
    if reg_delay == 0 and reg_random_delay > 0:
        reg_delay = (rng or random).randrange(reg_random_delay)
    # Only the DISABLED bit of the stored flags is an initial state; the others are runtime.
    flags = numbers["flags"] & Flag.DISABLED
    return RegistrationRecord(**values, expires=numbers["expires"], table_expires=numbers["expires"], flags=flags,
                              reg_delay=reg_delay,
                              loaded_at=now, due_at=now + reg_delay)


_TEXT_COLUMNS = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
                 "auth_password", "auth_ha1", "auth_proxy", "contact_addr", "socket", "contact_user")
# Domains, realms, proxies and addresses repeat across thousands of rows: one copy each.
_SHARED_COLUMNS = frozenset(("l_domain", "r_domain", "realm", "auth_proxy", "contact_addr", "socket"))


def _text(value, shared: bool = False) -> str:
    if value.__class__ is str:
        text = value.strip()
    elif value is None:
        return ""
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "replace").strip()
    else:
        text = str(value).strip()
    return sys.intern(text) if shared else text


def _integer(value, name: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{name} is not an integer: {str(value)[:20]!r}") from None
