"""One uacreg account in memory: its row, validated as Kamailio does, and its state.

Sans-IO: no Twisted, no clock; times are passed in as ``now`` (seconds).
"""

from __future__ import annotations

import enum
import random
import sys
from dataclasses import dataclass
from typing import Final

from txuac.errors import InvalidListenSpec, SIPParseError
from txuac.registrant.row_rules import REPEATING_COLUMNS, InvalidRecord, check_integer, check_text, invalid
from txuac.sip.grammar import is_token
from txuac.sip.listen import parse_listen
from txuac.sip.uri import parse_uri
from txuac.sip.address import Address

__all__ = ["Flag", "InvalidRecord", "MANDATORY", "RegistrationRecord", "State", "record_from_row"]


class Flag:
    """Kamailio's state bits, kept with the same values (they show in RPC output and the DB).

    Plain ints, not an IntFlag: they are tested many times per REGISTER, and enum
    arithmetic was a measurable share of the registrant's CPU.
    """

    DISABLED: Final = 1
    ONGOING: Final = 2
    ONLINE: Final = 4
    AUTHSENT: Final = 8
    INIT: Final = 16


_DISABLED, _ONGOING, _ONLINE = Flag.DISABLED, Flag.ONGOING, Flag.ONLINE


class State(str, enum.Enum):
    """A readable state derived from the flags and times (reg_dump's ``state`` field)."""

    ONLINE = "online"
    REGISTERING = "registering"
    WAITING = "waiting"  # not sent yet, or a retry is pending
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    DISABLED = "disabled"
    UNREGISTERED = "unregistered"  # expires 0: dormant until refreshed or reloaded


# Columns that Kamailio refuses to load empty (K:uac_reg.c uac_reg_db_to_reg).
MANDATORY = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "auth_username", "auth_proxy")
_HEX = frozenset("0123456789abcdef")


@dataclass(slots=True, init=False)
class RegistrationRecord:
    """A registration account: the uacreg columns, then the runtime state.

    Made from its row (record_from_row): the columns and when it is due; ``__init__`` sets
    every other field to its starting value (our table's columns are applied after it).
    ``__init__`` is written out, not generated: mypyc builds a dataclass through the
    generated one, which runs interpreted (a sixth of loading a row).
    """

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
    source: Address | None  # ``socket`` parsed when loaded: the local socket REGISTERs leave from
    # --- ours, from the account's row in our own table beside uacreg ---
    user_agent: str  # "": the service's user_agent
    extra_headers: tuple[tuple[str, str], ...]  # added to every REGISTER
    from_username: str  # "": r_username (From user different from the auth user)
    outbound: bool  # RFC 5626: +sip.instance, reg-id, flow keep-alives
    instance_id: str  # "urn:uuid:...", made once and kept
    reg_id: int
    options_ping: bool  # OPTIONS pings to the registrar, with up/down hysteresis
    table_disabled: bool  # the row's DISABLED bit, as loaded (flags change at run time)
    # --- state ----------------------------------------------------------------
    loaded_at: float  # Kamailio's reg_init
    due_at: float  # when the scheduler next sends a REGISTER for it
    sent_at: float | None
    expires_at: float | None  # send time + granted expiry of the last 200
    call_id: str | None  # kept between refreshes with reg_keep_callid
    cseq: int
    # What our table holds for the account (the last state handed to the store).
    saved_call_id: str
    saved_cseq: int
    saved_instance_id: str
    last_status: int | None
    last_failure: str | None
    failures: int
    # Learnt from the last 200 OK (RFC 3327, RFC 3608, RFC 5627, RFC 5626).
    path: tuple[str, ...]
    service_route: tuple[str, ...]
    pub_gruu: str | None
    temp_gruu: str | None
    flow_timer: int | None
    # Contact URIs other nodes may have registered for the account (a cluster takeover):
    # removed with expires=0 in our REGISTERs until one is answered with a 2xx (RFC 3261 10.2.2).
    stale_contacts: tuple[str, ...]

    def __init__(self, l_uuid: str, l_username: str, l_domain: str, r_username: str, r_domain: str,
                 realm: str, auth_username: str, auth_password: str, auth_ha1: str, auth_proxy: str,
                 expires: int, flags: int, reg_delay: int, contact_addr: str, socket: str,
                 contact_user: str, *, source: Address | None, loaded_at: float, due_at: float) -> None:
        self.l_uuid = l_uuid
        self.l_username = l_username
        self.l_domain = l_domain
        self.r_username = r_username
        self.r_domain = r_domain
        self.realm = realm
        self.auth_username = auth_username
        self.auth_password = auth_password
        self.auth_ha1 = auth_ha1
        self.auth_proxy = auth_proxy
        self.expires = expires
        self.table_expires = expires
        self.flags = flags
        self.reg_delay = reg_delay
        self.contact_addr = contact_addr
        self.socket = socket
        self.contact_user = contact_user
        self.source = source
        self.user_agent = ""
        self.extra_headers = ()
        self.from_username = ""
        self.outbound = False
        self.instance_id = ""
        self.reg_id = 1
        self.options_ping = False
        self.table_disabled = bool(flags & _DISABLED)
        self.loaded_at = loaded_at
        self.due_at = due_at
        self.sent_at = None
        self.expires_at = None
        self.call_id = None
        self.cseq = 0
        self.saved_call_id = ""
        self.saved_cseq = 0
        self.saved_instance_id = ""
        self.last_status = None
        self.last_failure = None
        self.failures = 0
        self.path = ()
        self.service_route = ()
        self.pub_gruu = None
        self.temp_gruu = None
        self.flow_timer = None
        self.stale_contacts = ()

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
        expires_at = self.expires_at
        return bool(self.flags & _ONLINE) and expires_at is not None and expires_at > now

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
        flags = self.flags  # read per REGISTER several times: no helper calls
        if flags & _DISABLED:
            return State.DISABLED
        if flags & _ONGOING:
            return State.REGISTERING
        if self.registered(now):
            return State.ONLINE
        if self.expires == 0:
            return State.UNREGISTERED
        if self.last_failure is not None:
            return State.FAILED
        return State.WAITING


def record_from_row(row: dict, now: float, reg_random_delay: int = 0,
                    rng: random.Random | None = None, problems: list[str] | None = None) -> RegistrationRecord:
    """Validate a uacreg row; InvalidRecord names the column and the reason.

    As Kamailio (K:uac_reg.c): mandatory columns must not be empty; a password or a 32-hex
    HA1 is needed (the HA1 wins and is lower-cased). Beyond Kamailio, every column is
    checked by txuac.registrant.row_rules (sizes, line breaks, SIP syntax, integer range).
    reg_delay 0 with reg_random_delay set draws a random delay in [0, reg_random_delay).

    The columns of our own table (EXT_COLUMNS, absent for a store without it) never make
    the account invalid: a bad value is left at its default and its reason appended to
    ``problems`` (for the caller to log once, naming the account).
    """
    values = {name: _text(row.get(name), name in REPEATING_COLUMNS) for name in _TEXT_COLUMNS}
    for name in MANDATORY:
        if not values[name]:
            raise InvalidRecord(f"{name} is empty", name)
    for name, text in values.items():
        check_text(name, text)
    ha1 = values["auth_ha1"].lower()
    if ha1 and (len(ha1) != 32 or not _HEX.issuperset(ha1)):
        raise InvalidRecord("auth_ha1 is not 32 hex digits", "auth_ha1")
    if not ha1 and not values["auth_password"]:
        raise InvalidRecord("neither auth_password nor auth_ha1 is set", "auth_password")
    numbers = {name: check_integer(name, _integer(row.get(name), name)) for name in ("expires", "flags", "reg_delay")}
    reg_delay = numbers["reg_delay"]
    if reg_delay == 0 and reg_random_delay > 0:
        reg_delay = (rng or random).randrange(reg_random_delay)
    # Only the DISABLED bit of the stored flags is an initial state; the others are runtime.
    flags = numbers["flags"] & Flag.DISABLED
    record = RegistrationRecord(
        values["l_uuid"], values["l_username"], values["l_domain"], values["r_username"], values["r_domain"],
        values["realm"], values["auth_username"], values["auth_password"], ha1, values["auth_proxy"],
        numbers["expires"], flags, reg_delay, values["contact_addr"], values["socket"], values["contact_user"],
        source=source_address(values["socket"]), loaded_at=now, due_at=now + reg_delay)
    if "call_id" in row:
        _apply_ext(record, row, problems if problems is not None else [])
        record.saved_call_id = record.call_id or ""
        record.saved_cseq = record.cseq
        record.saved_instance_id = record.instance_id
    return record


def source_address(socket: str) -> Address | None:
    """A ``proto:ip:port`` socket (a row's, or default_socket) as the Address to send
    from; None when empty. The row rules have checked a row's (InvalidRecord else)."""
    if not socket:
        return None
    address = _SOURCES.get(socket)
    if address is None:
        try:
            address = parse_listen(socket).address
        except InvalidListenSpec as e:
            raise InvalidRecord(f"socket: {e}") from None
        if len(_SOURCES) < 4096:  # a few sockets serve every row
            _SOURCES[socket] = address
    return address


_SOURCES: dict[str, Address] = {}


# Headers an extra_headers line must not set: txuac writes them itself (RFC 3261 7.3.3
# compact forms included), or they carry credentials.
FORBIDDEN_EXTRA_HEADERS = frozenset((
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m", "expires",
    "content-length", "l", "authorization", "proxy-authorization", "user-agent",
))
MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5: CSeq below 2**31


def parse_extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    """``extra_headers``: one ``Name: value`` per line (LF or CRLF); InvalidRecord names the
    first bad line. Names are SIP tokens (RFC 3261 25.1) not in FORBIDDEN_EXTRA_HEADERS;
    values are one line of printable text (no CR, LF or other control character but tab)."""
    headers = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not is_token(name):
            raise InvalidRecord(f"line {number}: {name[:40]!r} is not a header name", "extra_headers")
        if name.lower() in FORBIDDEN_EXTRA_HEADERS:
            raise InvalidRecord(f"line {number}: {name} is written by txuac, not by extra_headers", "extra_headers")
        if not value:
            raise InvalidRecord(f"line {number}: {name} has no value", "extra_headers")
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
            raise InvalidRecord(f"line {number}: the value of {name} holds a control character", "extra_headers")
        headers.append((name, value))
    return tuple(headers)


def _apply_ext(record: RegistrationRecord, row: dict, problems: list[str]) -> None:
    """Fill the record from the columns of our own table; bad values stay at their default."""
    user_agent = _text(row.get("user_agent"), True)
    if user_agent and any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in user_agent):
        problems.append("user_agent holds a control character (the service's is used)")
    else:
        record.user_agent = user_agent
    extra = _text(row.get("extra_headers"))
    if extra:
        try:
            record.extra_headers = parse_extra_headers(extra)
        except InvalidRecord as e:
            problems.append(f"extra_headers skipped: {e}")
    from_username = _text(row.get("from_username"))
    if from_username:
        try:  # RFC 3261 10.2: From is a SIP URI in r_domain
            parse_uri(f"sip:{from_username}@{record.r_domain}", "from_username")
            record.from_username = from_username
        except SIPParseError as e:
            problems.append(f"from_username does not make a SIP URI ({e.reason}): r_username is used")
    instance_id = _text(row.get("instance_id"))
    if instance_id and (not instance_id.lower().startswith("urn:") or any(c in instance_id for c in '"<> \t')):
        problems.append("instance_id is not a URN: a new one is made")
    else:
        record.instance_id = instance_id
    call_id = _text(row.get("call_id"))
    if call_id and any(ord(c) <= 32 or ord(c) == 127 for c in call_id):
        problems.append("call_id holds a space or control character: a new one is made")
        call_id = ""
    for name, low, default in (("outbound", 0, 0), ("options_ping", 0, 0), ("reg_id", 1, 1), ("cseq", 0, 0)):
        try:
            value = _integer(row.get(name), name, default)
        except InvalidRecord as e:
            problems.append(str(e))
            value = default
        if not low <= value <= MAX_CSEQ:
            problems.append(f"{name} {value} is out of range")
            value = default
        if name == "outbound":
            record.outbound = value != 0
        elif name == "options_ping":
            record.options_ping = value != 0
        elif name == "reg_id":
            record.reg_id = value
        else:
            record.cseq = value
    if call_id:
        record.call_id = call_id


_TEXT_COLUMNS = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
                 "auth_password", "auth_ha1", "auth_proxy", "contact_addr", "socket", "contact_user")


def _text(value, shared: bool = False) -> str:
    """The column as text, without surrounding SP and HTAB (a CR or LF stays, for the rules
    to refuse: a value that holds one was not written as meant)."""
    if value.__class__ is str:
        text = value.strip(" \t")
    elif value is None:
        return ""
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "replace").strip(" \t")
    else:
        text = str(value).strip(" \t")
    return sys.intern(text) if shared else text


def _integer(value, name: str, default: int = 0) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(name, f"not an integer: {str(value)[:20]!r}") from None
