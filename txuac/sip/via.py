"""Via rules of the transport layer (RFC 3261 18.2, RFC 3581), sans-IO."""

from __future__ import annotations

from typing import Final

from txuac.sip.address import DEFAULT_PORTS, Address, bare_host, ip_address_of, via_host
from txuac.sip.fields import Via
from txuac.sip.grammar import split_list
from txuac.sip.message import Request
from txuac.sip.tokens import token_hex

MAGIC_COOKIE: Final = "z9hG4bK"


def has_magic_cookie(branch: str | None) -> bool:
    """RFC 3261 8.1.1.7; a bare cookie carries no identifier (RFC 4475 3.2.1)."""
    return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)


def new_branch() -> str:
    """A fresh RFC 3261 8.1.1.7 branch: the magic cookie and 96 random bits."""
    return MAGIC_COOKIE + token_hex(12)


def make_via(transport: str, host: str, port: int, rport: bool = True) -> Via:
    """Our Via for a request sent from ``host:port`` (RFC 3261 8.1.1.7, RFC 3581 3)."""
    via = Via(transport.upper(), via_host(host), port)
    via.params.set("branch", new_branch())
    if rport and transport == "udp":
        via.params.set("rport")
    return via


def stamp_received(request: Request, source: Address) -> None:
    """Add ``received`` and fill ``rport`` on the top Via (RFC 3261 18.2.1, RFC 3581 4)."""
    via = request.top_via
    if via is None:
        return
    changed = False
    if not _same_address(bare_host(via.host), source.host):
        via.params.set("received", source.host)
        changed = True
    if via.rport_requested:
        via.params.set("rport", str(source.port))
        if via.received is None:
            via.params.set("received", source.host)
        changed = True
    if changed:
        _replace_top_via(request, via)


def _same_address(sent_by: str, source: str) -> bool:
    address = ip_address_of(sent_by)  # a host name in sent-by always gets received (18.2.1)
    return address is not None and address == ip_address_of(source)


def _replace_top_via(request: Request, via: Via) -> None:
    """Write ``via`` back as the first via-parm of the first Via line."""
    lines = request.headers.get_all("Via")
    parts = split_list(lines[0], "Via")
    parts[0] = str(via)
    request.headers.remove_first("Via")
    request.headers.prepend("Via", ", ".join(parts))


def response_address(via: Via, source_transport: str, default_port: int = DEFAULT_PORTS["udp"]) -> Address:
    """Where a response goes over an unreliable transport (RFC 3261 18.2.2, RFC 3581 4).

    Streams answer on the connection the request came in on; this gives the
    address to use when that connection is gone.
    """
    host = via.received or bare_host(via.host)
    if via.maddr:
        host = via.maddr
    port = via.rport or via.port or (DEFAULT_PORTS["tls"] if via.transport.upper() == "TLS" else default_port)
    return Address(source_transport, bare_host(host), port)
