"""Via rules of the transport layer (RFC 3261 18.2, RFC 3581), sans-IO."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from txuac.sip.fields import Via
from txuac.sip.grammar import split_list
from txuac.sip.message import Request
from txuac.sip.transaction import MAGIC_COOKIE
from txuac.sip.tokens import token_hex


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to: transport (udp/tcp/tls), IP and port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        """As people read it in logs and errors: ``tls:127.0.0.1:5071``, IPv6 in brackets."""
        return f"{self.transport}:{via_host(self.host)}:{self.port}"


def new_branch() -> str:
    """A fresh RFC 3261 8.1.1.7 branch: the magic cookie and 96 random bits."""
    return MAGIC_COOKIE + token_hex(12)


def via_host(host: str) -> str:
    """An IP address as it is written in a Via sent-by: IPv6 in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def bare_host(host: str) -> str:
    """A host without the brackets of an IPv6 reference."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


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


_IP_ADDRESSES: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None] = {}
_IP_ADDRESSES_KEPT = 4096


def ip_address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``ipaddress.ip_address(host)``, None for a host name. Remembered for the last few
    thousand hosts: every request asks for its source and its Via's (~8 us each)."""
    if host in _IP_ADDRESSES:
        return _IP_ADDRESSES[host]
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if len(_IP_ADDRESSES) >= _IP_ADDRESSES_KEPT:
        _IP_ADDRESSES.clear()
    _IP_ADDRESSES[host] = address
    return address


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


def response_address(via: Via, source_transport: str, default_port: int = 5060) -> Address:
    """Where a response goes over an unreliable transport (RFC 3261 18.2.2, RFC 3581 4).

    Streams answer on the connection the request came in on; this gives the
    address to use when that connection is gone.
    """
    host = via.received or bare_host(via.host)
    if via.maddr:
        host = via.maddr
    port = via.rport or via.port or (5061 if via.transport.upper() == "TLS" else default_port)
    return Address(source_transport, bare_host(host), port)
