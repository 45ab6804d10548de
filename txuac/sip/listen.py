"""Listen specs: one SIP socket as Kamailio writes it, ``proto:host:port``.

The ``[core] listen`` addresses, ``default_socket``, a uacreg row's ``socket`` and a
script's ``$uac_req(sock)`` are all read by ``parse_listen``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from txuac.errors import InvalidListenSpec
from txuac.sip.address import DEFAULT_PORTS, Address, ip_address_of

TRANSPORTS: Final = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class ListenSpec:
    """One SIP socket: transport (udp, tcp, tls), IP address and port (0: the system picks one)."""

    transport: str
    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def address(self) -> Address:
        """The socket as the Address a request is sent from."""
        return Address(self.transport, self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_listen(text: object) -> ListenSpec:
    """``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:0.0.0.0:5061``, ``udp:127.0.0.1``
    (the transport's default port). A bad one raises InvalidListenSpec saying why."""
    if not isinstance(text, str):
        raise InvalidListenSpec(f"expected a string like 'udp:127.0.0.1:5060', got {text!r}")
    transport, sep, rest = text.partition(":")
    transport = transport.lower()
    if not sep or transport not in TRANSPORTS:
        raise InvalidListenSpec(f"{text!r} must start with udp:, tcp: or tls:")
    bracketed = rest.startswith("[")
    if bracketed:
        close = rest.find("]")
        if close < 0:
            raise InvalidListenSpec(f"unterminated IPv6 address in {text!r}")
        host, port_text = rest[1:close], rest[close + 1:]
        if port_text and not port_text.startswith(":"):
            raise InvalidListenSpec(f"junk after the address in {text!r}")
        has_port, port_text = bool(port_text), port_text[1:]
    elif rest.count(":") > 1:
        raise InvalidListenSpec(f"IPv6 addresses go in brackets: {text!r} (like tcp:[::1]:5060)")
    else:
        host, colon, port_text = rest.partition(":")
        has_port = bool(colon)
    address = ip_address_in(host, bracketed, text)
    port = DEFAULT_PORTS[transport]
    if has_port:
        if not is_number(port_text) or not 0 <= int(port_text) < 65536:
            raise InvalidListenSpec(f"invalid port {port_text!r} in {text!r}")
        port = int(port_text)
    return ListenSpec(transport, str(address), port)


def ip_address_in(host: str, bracketed: bool, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``host``, read from ``text``, as an IP address; brackets only around IPv6 ones."""
    address = ip_address_of(host)
    if address is None:
        raise InvalidListenSpec(f"{host!r} in {text!r} is not an IPv4 or IPv6 address")
    if bracketed and isinstance(address, ipaddress.IPv4Address):
        raise InvalidListenSpec(f"brackets are for IPv6 addresses in {text!r}")
    return address


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses."""
    return text.isascii() and text.isdigit()
