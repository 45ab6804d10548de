"""RFC 3263 next-hop resolution on twisted.names: NAPTR, then SRV, then A/AAAA.

Caching by TTL comes from twisted.names' own CacheResolver (part of the chain
``client.createResolver`` builds); pass any ``IResolver`` for tests.
"""

from __future__ import annotations

import ipaddress
import random

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns, error as dns_error

from txuac.errors import ResolutionError
from txuac.sip.message import Request
from txuac.sip.uri import SipURI
from txuac.sip.via import Address, bare_host

log = Logger()

# RFC 3263 4.1 and RFC 3261 26.2: NAPTR services and SRV prefixes by transport.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
_DNS_ERRORS = (dns_error.DomainError, dns_error.DNSQueryTimeoutError, dns_error.ResolverError, defer.TimeoutError)


def next_hop_uri(request: Request) -> SipURI:
    """The URI RFC 3261 8.1.2 sends to: the top Route when loose-routing, else the Request-URI."""
    routes = request.route
    if routes:
        uri = routes[0].uri
    else:
        uri = request.uri
    if not isinstance(uri, SipURI):
        raise ResolutionError(f"cannot route to a {uri.scheme}: URI")
    return uri


def order_srv(records: list, rng: random.Random) -> list:
    """RFC 2782 ordering: by priority, and weighted random within one priority."""
    ordered = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                pick = group[0] if len(group) == 1 else rng.choice(group)
            else:
                point = rng.uniform(0, total)
                running = 0
                pick = group[-1]
                for record in group:
                    running += record.weight
                    if running >= point and record.weight > 0:
                        pick = record
                        break
            group.remove(pick)
            ordered.append(pick)
    return ordered


class TargetResolver:
    """Turns a request into the ordered list of Addresses to try (RFC 3263 4)."""

    def __init__(self, reactor=None, dns_resolver=None, servers: list[tuple[str, int]] | None = None,
                 transports: tuple[str, ...] = ("udp", "tcp", "tls"), rng: random.Random | None = None):
        if dns_resolver is None:
            dns_resolver = client.createResolver(servers=servers or None)
        self.dns = dns_resolver
        self.transports = transports
        self.rng = rng or random.Random()

    def server_name(self, request: Request) -> str:
        """The name a TLS peer's certificate must match: the SIP domain (RFC 5922 4.1)."""
        return bare_host(next_hop_uri(request).host)

    def resolve_request(self, request: Request) -> defer.Deferred:
        try:
            uri = next_hop_uri(request)
        except ResolutionError:
            return defer.fail()
        return self.resolve_uri(uri)

    @defer.inlineCallbacks
    def resolve_uri(self, uri: SipURI):
        """A Deferred list of Addresses for ``uri``, best first; ResolutionError when empty."""
        host = bare_host(uri.maddr or uri.host)
        secure = uri.secure
        transport = uri.transport
        if secure and transport not in (None, "tcp", "tls"):
            raise ResolutionError(f"sips: cannot use transport={transport}")
        if transport is not None:
            transport = "tls" if secure or transport == "tls" else transport
        if transport is not None and transport not in self.transports:
            raise ResolutionError(f"transport {transport} is not available")
        numeric = _is_ip(host)
        if numeric or uri.port is not None:
            # RFC 3263 4.1/4.2: no NAPTR or SRV for an IP address or an explicit port.
            transport = transport or ("tls" if secure else "udp")
            port = uri.port or DEFAULT_PORTS[transport]
            if numeric:
                return [Address(transport, host, port)]
            hosts = yield self._addresses(host)
            return [Address(transport, ip, port) for ip in hosts]
        candidates = yield self._naptr(host, secure, transport)
        if not candidates:
            candidates = yield self._srv_without_naptr(host, secure, transport)
        if candidates:
            return candidates
        # RFC 3263 4.2: no SRV records, so A/AAAA with the default port.
        transport = transport or ("tls" if secure else "udp")
        hosts = yield self._addresses(host)
        return [Address(transport, ip, DEFAULT_PORTS[transport]) for ip in hosts]

    @defer.inlineCallbacks
    def _naptr(self, domain: str, secure: bool, transport: str | None):
        try:
            answers, _, _ = yield self.dns.lookupNamingAuthorityPointer(domain)
        except _DNS_ERRORS:
            return []
        records = [rr.payload for rr in answers if rr.type == dns.NAPTR]
        usable = []
        for record in sorted(records, key=lambda r: (r.order, r.preference)):
            service = record.service.string.decode("ascii", "replace").upper()
            naptr_transport = NAPTR_SERVICES.get(service)
            if naptr_transport is None or naptr_transport not in self.transports:
                continue
            if secure and naptr_transport != "tls":
                continue
            if transport is not None and naptr_transport != transport:
                continue
            if record.flags.string.lower() != b"s":
                continue
            usable.append((naptr_transport, record.replacement.name.decode("ascii", "replace")))
        result = []
        for naptr_transport, srv_name in usable:
            result.extend((yield self._srv(srv_name, naptr_transport)))
        return result

    @defer.inlineCallbacks
    def _srv_without_naptr(self, domain: str, secure: bool, transport: str | None):
        if transport is not None:
            order = [transport]
        elif secure:
            order = ["tls"]
        else:
            order = [t for t in ("udp", "tcp", "tls") if t in self.transports]
        result = []
        for candidate in order:
            result.extend((yield self._srv(SRV_PREFIXES[candidate] + domain, candidate)))
        return result

    @defer.inlineCallbacks
    def _srv(self, name: str, transport: str):
        try:
            answers, _, additional = yield self.dns.lookupService(name)
        except _DNS_ERRORS:
            return []
        records = [rr.payload for rr in answers if rr.type == dns.SRV]
        if len(records) == 1 and records[0].target.name in (b"", b"."):
            return []  # RFC 2782: "." means the service is not available here
        result = []
        for record in order_srv(records, self.rng):
            target = record.target.name.decode("ascii", "replace")
            try:
                hosts = yield self._addresses(target)
            except ResolutionError:
                continue
            result.extend(Address(transport, ip, record.port) for ip in hosts)
        return result

    @defer.inlineCallbacks
    def _addresses(self, host: str):
        if _is_ip(host):
            return [host]
        found: list[str] = []
        for lookup, rtype in ((self.dns.lookupAddress, dns.A), (self.dns.lookupIPV6Address, dns.AAAA)):
            try:
                answers, _, _ = yield lookup(host)
            except _DNS_ERRORS:
                continue
            found.extend(rr.payload.dottedQuad() if rtype == dns.A else _ipv6_text(rr.payload)
                         for rr in answers if rr.type == rtype)
        if not found:
            raise ResolutionError(f"{host}: no A or AAAA record")
        return found


def _ipv6_text(record) -> str:
    return str(ipaddress.IPv6Address(record.address))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
