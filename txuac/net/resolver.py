"""RFC 3263 next-hop resolution on twisted.names: NAPTR, then SRV, then A/AAAA.

Answers are cached here for their TTL (RFC 2181 5.2; empty answers for the SOA
minimum, RFC 2308 5): the CacheResolver in the chain ``client.createResolver``
builds is never filled by the client side of twisted.names. Pass any
``IResolver`` as ``dns_resolver`` for tests.
"""

from __future__ import annotations

import ipaddress
import random

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.names import client, dns, error as dns_error, hosts as dns_hosts, resolve

from txuac.errors import ResolutionError
from txuac.sip.message import Request
from txuac.sip.uri import SipURI
from txuac.sip.address import DEFAULT_PORTS, Address, bare_host, is_ip_address

log = Logger()

# RFC 3263 4.1 and RFC 3261 26.2: NAPTR services and SRV prefixes by transport.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
# AuthoritativeDomainError is not a DomainError; IOError comes from a resolver without servers.
_DNS_ERRORS = (dns_error.DomainError, dns_error.AuthoritativeDomainError, dns_error.DNSQueryTimeoutError,
               dns_error.ResolverError, defer.TimeoutError, NotImplementedError, OSError, CannotListenError)
# Seconds before each retransmission of a query; the last one expiring fails the lookup.
# twisted.names' default (1, 3, 11, 45) outlasts Timer B/F, so a SIP request would time out
# before resolution gives up and fails over.
DNS_TIMEOUT = (1, 3, 5)
CACHE_SIZE = 4096
_LOOKUPS = {
    dns.NAPTR: "lookupNamingAuthorityPointer",
    dns.SRV: "lookupService",
    dns.A: "lookupAddress",
    dns.AAAA: "lookupIPV6Address",
}


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


def make_dns_resolver(reactor, servers: list[tuple[str, int]] | None = None):
    """The hosts file, then ``servers`` only, or the name servers of resolv.conf when None."""
    if not servers:
        return client.createResolver()
    # Not createResolver(servers=...): it also reads resolv.conf, asks its servers when ours
    # time out, and leaves a re-read timer on the reactor.
    return resolve.ResolverChain([dns_hosts.Resolver(), client.Resolver(servers=list(servers), reactor=reactor)])


class TargetResolver:
    """Turns a request into the ordered list of Addresses to try (RFC 3263 4)."""

    def __init__(self, reactor=None, dns_resolver=None, servers: list[tuple[str, int]] | None = None,
                 transports: tuple[str, ...] = ("udp", "tcp", "tls"), rng: random.Random | None = None,
                 dns_timeout: tuple[float, ...] = DNS_TIMEOUT):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._dns = dns_resolver
        self._servers = list(servers) if servers else None
        self.transports = transports
        self.rng = rng or random.Random()
        self.dns_timeout = tuple(dns_timeout)
        self._cache: dict[tuple[bytes, int], tuple[float, tuple | Exception]] = {}

    @property
    def dns(self):
        """The IResolver asked, built on first use (building one reads resolv.conf and starts timers)."""
        if self._dns is None:
            self._dns = make_dns_resolver(self.reactor, self._servers)
        return self._dns

    @dns.setter
    def dns(self, resolver) -> None:
        self._dns = resolver
        self._cache.clear()

    def server_name(self, request: Request) -> str:
        """The name a TLS peer's certificate must match: the SIP domain (RFC 5922 4.1)."""
        return bare_host(next_hop_uri(request).host)

    def resolve_request(self, request: Request) -> defer.Deferred:
        try:
            uri = next_hop_uri(request)
        except ResolutionError:
            return defer.fail()
        return self.resolve_uri(uri)

    def resolve_uri(self, uri: SipURI) -> defer.Deferred:
        """A Deferred list of Addresses for ``uri``, best first; ResolutionError when empty."""
        try:
            host, transport = self._host_and_transport(uri)
        except ResolutionError:
            return defer.fail()
        if is_ip_address(host):
            return defer.succeed([_literal_address(uri, host, transport)])
        return self._resolve_uri(uri, host, transport).addCallback(_unique)

    def literal_target(self, uri: SipURI) -> Address | None:
        """The one Address of a ``uri`` whose host is an IP address, found without a Deferred
        (every request a proxy relays to an address needs it); None when the host is a name
        to look up (``resolve_uri``). ResolutionError when the transport it asks for is not
        available."""
        host, transport = self._host_and_transport(uri)
        return _literal_address(uri, host, transport) if is_ip_address(host) else None

    def _host_and_transport(self, uri: SipURI) -> tuple[str, str | None]:
        """The host to resolve and the transport ``uri`` asks for (None: any), or a
        ResolutionError when that transport is not available."""
        host = bare_host(uri.maddr or uri.host)
        secure = uri.secure
        transport = uri.transport
        if secure and transport not in (None, "tcp", "tls"):
            raise ResolutionError(f"sips: cannot use transport={transport}")
        if transport is not None:
            transport = "tls" if secure or transport == "tls" else transport
        if transport is not None and transport not in self.transports:
            raise ResolutionError(f"transport {transport} is not available")
        if secure and "tls" not in self.transports:
            raise ResolutionError("sips: needs TLS, which is not available")
        return host, transport

    @defer.inlineCallbacks
    def _resolve_uri(self, uri: SipURI, host: str, transport: str | None):
        secure = uri.secure
        if uri.port is not None:
            # RFC 3263 4.1/4.2: no NAPTR or SRV for an explicit port.
            transport = transport or ("tls" if secure else "udp")
            port = uri.port or DEFAULT_PORTS[transport]
            hosts = yield self._addresses(host)
            return [Address(transport, ip, port) for ip in hosts]
        candidates = []
        if transport is None:
            # RFC 3263 4.1: NAPTR only when the URI does not name the transport (4.2 then
            # asks the SRV name of that transport).
            candidates = yield self._naptr(host, secure)
        if not candidates:
            candidates, found = yield self._srv_without_naptr(host, secure, transport)
            if found and not candidates:
                raise ResolutionError(f"{host}: no usable SRV target")
        if candidates:
            return candidates
        # RFC 3263 4.2: no SRV records, so A/AAAA with the default port.
        transport = transport or ("tls" if secure else "udp")
        hosts = yield self._addresses(host)
        return [Address(transport, ip, DEFAULT_PORTS[transport]) for ip in hosts]

    @defer.inlineCallbacks
    def _naptr(self, domain: str, secure: bool):
        try:
            answers, _, _ = yield self._lookup(dns.NAPTR, domain)
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
            if record.flags.string.lower() != b"s" or record.replacement.name in (b"", b"."):
                continue  # RFC 3263 4.1: a terminal "s" rule naming an SRV record
            usable.append((naptr_transport, record.replacement.name.decode("ascii", "replace")))
        result = []
        for naptr_transport, srv_name in usable:
            result.extend((yield self._srv(srv_name, naptr_transport)) or [])
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
        found = False
        for candidate in order:
            addresses = yield self._srv(SRV_PREFIXES[candidate] + domain, candidate)
            if addresses is not None:
                found = True
                result.extend(addresses)
        return result, found

    @defer.inlineCallbacks
    def _srv(self, name: str, transport: str):
        """Addresses from the SRV records of ``name``, best first; None when it has none."""
        try:
            answers, _, _ = yield self._lookup(dns.SRV, name)
        except _DNS_ERRORS:
            return None
        records = [rr.payload for rr in answers if rr.type == dns.SRV]
        if not records:
            return None
        # RFC 2782: a target of "." means the service is decidedly not available here.
        records = [r for r in records if r.target.name not in (b"", b".")]
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
        if is_ip_address(host):
            return [host]
        found: list[str] = []
        for rtype in (dns.A, dns.AAAA):
            try:
                answers, _, _ = yield self._lookup(rtype, host)
            except _DNS_ERRORS:
                continue
            found.extend(rr.payload.dottedQuad() if rtype == dns.A else _ipv6_text(rr.payload)
                         for rr in answers if rr.type == rtype)
        if not found:
            raise ResolutionError(f"{host}: no A or AAAA record")
        return found

    def _lookup(self, rtype: int, name: str) -> defer.Deferred:
        """One DNS lookup through the TTL cache: (answers, authority, additional) or a failure."""
        try:
            wire = _wire_name(name)
        except dns_error.DomainError:
            return defer.fail()
        key = (wire.lower(), rtype)
        now = self.reactor.seconds()
        entry = self._cache.get(key)
        if entry is not None:
            expires, outcome = entry
            if now < expires:
                return defer.fail(outcome) if isinstance(outcome, Exception) else defer.succeed(outcome)
            del self._cache[key]
        d = getattr(self.dns, _LOOKUPS[rtype])(wire, timeout=self.dns_timeout)
        d.addCallbacks(self._store, self._store_failure, callbackArgs=(key,), errbackArgs=(key,))
        return d

    def _store(self, result, key):
        answers, authority, _ = result
        # The smallest TTL of the answer, CNAMEs on the way included (RFC 2181 5.2).
        wanted = any(rr.type == key[1] for rr in answers)
        ttl = min(rr.ttl for rr in answers) if wanted else _negative_ttl(authority)
        self._remember(key, ttl, result)
        return result

    def _store_failure(self, failure, key):
        if failure.check(dns_error.DNSNameError, dns_error.AuthoritativeDomainError):
            message = failure.value.args[0] if failure.value.args else None
            self._remember(key, _negative_ttl(getattr(message, "authority", ())), failure.value)
        return failure

    def _remember(self, key, ttl: float, outcome) -> None:
        if ttl <= 0:
            return
        if len(self._cache) >= CACHE_SIZE:
            now = self.reactor.seconds()
            for old in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[old]
            while len(self._cache) >= CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (self.reactor.seconds() + ttl, outcome)


def _wire_name(name: str) -> bytes:
    """``name`` as DNS carries it, or DomainError, as for a name that does not exist, when it
    cannot be one (twisted.names would raise UnicodeError from its IDNA codec)."""
    try:
        wire = name.rstrip(".").encode("ascii")
    except UnicodeEncodeError:
        raise dns_error.DomainError(name) from None
    if len(wire) > 253 or not all(0 < len(label) < 64 for label in wire.split(b".")):
        raise dns_error.DomainError(name)
    return wire


def _negative_ttl(authority) -> float:
    """RFC 2308 5: a NODATA or NXDOMAIN answer lives for min(SOA TTL, SOA minimum), if given."""
    for rr in authority:
        if rr.type == dns.SOA:
            return min(rr.ttl, rr.payload.minimum)
    return 0


def _unique(addresses: list[Address]) -> list[Address]:
    """The first occurrence of each Address (several NAPTR or SRV records may lead to one)."""
    return list(dict.fromkeys(addresses))


def _ipv6_text(record) -> str:
    return str(ipaddress.IPv6Address(record.address))


def _literal_address(uri: SipURI, host: str, transport: str | None) -> Address:
    """RFC 3263 4.1/4.2: an IP address needs no lookup; the transport the URI names, or
    UDP (TLS for sips), and its port or the transport's default."""
    transport = transport or ("tls" if uri.secure else "udp")
    return Address(transport, host, uri.port or DEFAULT_PORTS[transport])
