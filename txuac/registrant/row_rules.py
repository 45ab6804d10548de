"""What each uacreg column may hold, checked the same way for a row loaded from the store
and for ``uac.reg_add`` (both become records through record_from_row).

Texts are no longer than Kamailio's schema makes the column (uac-create.sql; a longer value
could not be stored there) and hold no CR, LF or NUL (a line break in a header value is a
header of its own, RFC 3261 7.3.1). What goes into a REGISTER is parsed as it will be sent:
user parts as RFC 3261 25.1 ``user`` (unreserved, escaped, user-unreserved), domains, the
proxy and the Contact address through the SIP URI parser, the socket through the listen
parser, and the values written inside a quoted-string (realm, digest username) without
``"`` or ``\\``. Integers are the table's 32-bit INTEGER, never negative.

Sans-IO: plain functions of plain values.
"""

from __future__ import annotations

from typing import Final

from txuac.errors import InvalidListenSpec, InvalidRecord, SIPParseError
from txuac.sip.grammar import has_control
from txuac.sip.listen import parse_listen
from txuac.sip.uri import SipURI, is_paramchars, is_user, parse_uri

# VARCHAR sizes of Kamailio's uacreg (utils/kamctl/*/uac-create.sql, the same for every
# database; schema/sqlite.sql and schema/postgres.sql hold the same table).
COLUMN_SIZES: Final = {
    "l_uuid": 64, "l_username": 64, "l_domain": 64, "r_username": 64, "r_domain": 64, "realm": 64,
    "auth_username": 64, "auth_password": 64, "auth_ha1": 128, "auth_proxy": 255, "contact_addr": 255,
    "socket": 128, "contact_user": 255,
}
# expires, flags and reg_delay are INTEGER columns: 0 to 2**31 - 1 (expires 0 keeps its
# Kamailio meaning: the account does not register).
MAX_INTEGER: Final = 2**31 - 1
INTEGER_COLUMNS: Final = ("expires", "flags", "reg_delay")
# Domains, realms, proxies and sockets repeat across thousands of rows: a value found
# valid is not checked again (a bounded set: a table of distinct values only costs time),
# and records keep one copy of each (record_from_row).
REPEATING_COLUMNS: Final = frozenset(("l_domain", "r_domain", "realm", "auth_proxy", "contact_addr", "socket"))
_VALID_KEPT: Final = 4096
_valid: set[tuple[str, str]] = set()


def invalid(field: str, reason: str) -> InvalidRecord:
    """``invalid FIELD: REASON``, the one wording of a bad column."""
    return InvalidRecord(f"invalid {field}: {reason}", field)


def check_text(field: str, value: str) -> None:
    """Size and line breaks of any text column, then the syntax of the columns that have one."""
    if not value:
        return
    if field in REPEATING_COLUMNS:
        key = (field, value)
        if key in _valid:
            return
        _check_text(field, value)
        if len(_valid) < _VALID_KEPT:
            _valid.add(key)
        return
    _check_text(field, value)


def _check_text(field: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise invalid(field, "holds a CR, LF or NUL character")
    size = COLUMN_SIZES.get(field)
    if size is not None and len(value) > size:
        raise invalid(field, f"longer than {size} characters")
    syntax = _SYNTAX.get(field)
    if syntax is not None:
        reason = syntax(value)
        if reason is not None:
            raise invalid(field, reason)


def check_integer(field: str, value: int) -> int:
    if not 0 <= value <= MAX_INTEGER:
        raise invalid(field, f"{value} is out of range (0 to {MAX_INTEGER})")
    return value


def _user(value: str) -> str | None:
    """RFC 3261 25.1 ``user``: what makes ``sip:VALUE@host`` with VALUE as the whole user part."""
    if not is_user(value):
        return "not a SIP user part (RFC 3261 25.1: letters, digits, escapes and -_.!~*'()&=+$,;?/)"
    return None


def _l_uuid(value: str) -> str | None:
    """The Contact's user part (no contact_user) or its ``line`` parameter (RFC 3261 25.1 pvalue)."""
    reason = _user(value)
    if reason is not None:
        return reason
    if not is_paramchars(value):
        return "not usable as a Contact line parameter (RFC 3261 25.1 paramchar)"
    return None


def _domain(value: str) -> str | None:
    """A host with an optional port (and URI parameters): what follows ``sip:``."""
    try:
        uri = parse_uri(f"sip:{value}")
    except SIPParseError as e:
        return f"does not make a SIP URI ({e.reason})"
    if not isinstance(uri, SipURI) or uri.user is not None or uri.headers:
        return "not a host[:port]"
    return None


def _proxy(value: str) -> str | None:
    try:
        uri = parse_uri(value)
    except SIPParseError as e:
        return f"not a SIP URI ({e.reason})"
    if not isinstance(uri, SipURI):
        return "not a sip: or sips: URI"
    if uri.headers:
        return "a proxy URI has no headers (?...)"
    return None


def _contact_addr(value: str) -> str | None:
    """What follows ``user@`` in the Contact: host[:port], parameters allowed."""
    try:
        uri = parse_uri(f"sip:user@{value}")
    except SIPParseError as e:
        return f"does not make a Contact URI ({e.reason})"
    if not isinstance(uri, SipURI) or uri.user != "user" or uri.headers:
        return "not a host[:port]"
    return None


def _socket(value: str) -> str | None:
    try:
        parse_listen(value)
    except InvalidListenSpec as e:
        return str(e)
    return None


def _in_quotes(value: str) -> str | None:
    """Written inside a quoted-string of the Authorization header (RFC 3261 25.1 qdtext)."""
    if '"' in value or "\\" in value or has_control(value):
        return 'holds a quote, a backslash or a control character'
    return None


_SYNTAX: Final = {
    "l_uuid": _l_uuid,
    "l_username": _user,
    "l_domain": _domain,
    "r_username": _user,
    "r_domain": _domain,
    "realm": _in_quotes,
    "auth_username": _in_quotes,
    "auth_proxy": _proxy,
    "contact_addr": _contact_addr,
    "socket": _socket,
    "contact_user": _user,
}
