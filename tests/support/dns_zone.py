"""An authoritative DNS zone served on loopback for resolver tests: records (``naptr``,
``srv``, ``a``, ``aaaa``), a ``Zone`` that records what it is asked, ``serve_zone``."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.names import authority, dns, server
from twisted.trial.unittest import TestCase


ORIGIN = "test.example"


def naptr(order: int, preference: int, service: str, replacement: str, ttl: int = 300, flags: bytes = b"s"):
    return dns.Record_NAPTR(order, preference, flags, service.encode(), b"", replacement.encode(), ttl=ttl)


def srv(priority: int, weight: int, port: int, target: str, ttl: int = 300):
    return dns.Record_SRV(priority, weight, port, target.encode(), ttl=ttl)


def a(address: str, ttl: int = 300):
    return dns.Record_A(address, ttl=ttl)


def aaaa(address: str, ttl: int = 300):
    return dns.Record_AAAA(address, ttl=ttl)


class Zone(authority.FileAuthority):
    """An in-memory authoritative zone that records each (name, type) it is asked."""

    def __init__(self, records: dict[str, list], origin: str = ORIGIN, negative_ttl: int = 60):
        self._initial = (origin, records, negative_ttl)
        self.queries: list[tuple[str, str]] = []
        super().__init__(origin)

    def loadFile(self, origin) -> None:
        origin, records, negative_ttl = self._initial
        self.soa = (origin.encode(), dns.Record_SOA(mname=b"ns." + origin.encode(), rname=b"root." + origin.encode(),
                                                    serial=1, refresh=3600, retry=600, expire=86400,
                                                    minimum=negative_ttl, ttl=negative_ttl))
        self.records = {}
        for name, rrs in records.items():
            self.add(name, *rrs)

    def add(self, name: str, *rrs) -> None:
        self.records.setdefault(name.lower().encode(), []).extend(rrs)

    def _lookup(self, name, cls, type, timeout=None):
        self.queries.append((name.decode("ascii").lower(), dns.QUERY_TYPES.get(type, str(type))))
        return super()._lookup(name, cls, type, timeout)

    def take_queries(self) -> list[tuple[str, str]]:
        taken, self.queries = self.queries, []
        return taken


def serve_zone(testcase: TestCase, zone: Zone) -> int:
    """Serve ``zone`` on a UDP port of 127.0.0.1 until the test ends; the port."""
    factory = server.DNSServerFactory(authorities=[zone])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port
