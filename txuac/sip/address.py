"""Transport addresses: where a message comes from or goes to, and the default ports."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

#: RFC 3261 19.1.2: 5060 for UDP and TCP, 5061 for TLS.
DEFAULT_PORTS: Final[dict[str, int]] = {"udp": 5060, "tcp": 5060, "tls": 5061}


def default_port(transport: str) -> int:
    """The port of ``transport`` (any case) when none is given; 5060 for one we do not know."""
    return DEFAULT_PORTS.get(transport.lower(), 5060)


@dataclass(init=False, eq=False)
class Address:
    """Where a message came from or goes to: transport (udp/tcp/tls), IP and port.

    Read-only (``Final``), compared and hashed by value. Its methods are written out, not
    generated: mypyc builds a dataclass through its generated ``__init__``, which runs
    interpreted (about 0.8 us an Address, and every datagram makes one)."""

    transport: Final[str]
    host: Final[str]
    port: Final[int]

    def __init__(self, transport: str, host: str, port: int) -> None:
        self.transport = transport
        self.host = host
        self.port = port

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return self.port == other.port and self.host == other.host and self.transport == other.transport

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port))

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        """As people read it in logs and errors: ``tls:127.0.0.1:5071``, IPv6 in brackets."""
        return f"{self.transport}:{via_host(self.host)}:{self.port}"


@dataclass(init=False, eq=False)
class ResponseOrigin:
    """Where a final response came from (``source``) and where the request it answers went
    (``sent_to``): network facts the stack knows and a core Response does not carry.

    RFC 3261 17.1.3 matches a response to its transaction by branch alone, wherever it came
    from: a consumer answering a challenge compares the two (``txuac.auth.challenge_origin``).
    Read-only, compared and hashed by value, methods written out as Address's.
    """

    source: Final[Address]
    sent_to: Final[Address]

    def __init__(self, source: Address, sent_to: Address) -> None:
        self.source = source
        self.sent_to = sent_to

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResponseOrigin):
            return NotImplemented
        return self.source == other.source and self.sent_to == other.sent_to

    def __hash__(self) -> int:
        return hash((self.source, self.sent_to))


def via_host(host: str) -> str:
    """An IP address as it is written in a Via sent-by: IPv6 in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def bare_host(host: str) -> str:
    """A host without the brackets of an IPv6 reference."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


_IP_ADDRESSES: Final[dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]] = {}
_IP_ADDRESSES_KEPT: Final = 4096


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


def is_ip_address(host: str) -> bool:
    """True for an IPv4 or IPv6 address (IPv6 with or without brackets), False for a name."""
    return ip_address_of(bare_host(host)) is not None
