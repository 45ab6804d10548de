"""RFC 3263 resolution against a real twisted.names authoritative server on loopback.

``Zone`` and ``serve_zone`` are also used by test_failover and test_tls: the
zone is served over UDP by ``DNSServerFactory`` and every query it answers is
recorded, so the tests see what went over the wire, not what a mock was asked.
"""

from __future__ import annotations

import random
from collections import Counter

from twisted.internet import defer, protocol, reactor, task
from twisted.names import client, dns, error as dns_error
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.dns_zone import Zone, a, aaaa, naptr, serve_zone, srv
from txuac.errors import ResolutionError
from txuac.net.resolver import TargetResolver, make_dns_resolver, order_srv
from txuac.sip import Headers, Request, parse_uri
from txuac.sip.address import Address


class _BlackHole(protocol.DatagramProtocol):
    def __init__(self):
        self.datagrams = 0

    def datagramReceived(self, data, addr):
        self.datagrams += 1


def silent_dns(testcase: TestCase) -> tuple[int, _BlackHole]:
    """A UDP port that takes DNS queries and never answers."""
    hole = _BlackHole()
    port = reactor.listenUDP(0, hole, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, hole


def options(uri: str, route: str | None = None) -> Request:
    headers = Headers()
    if route is not None:
        headers.add("Route", route)
    return Request("OPTIONS", parse_uri(uri), headers)


def sample_zone() -> Zone:
    """Records shared by the resolution tests (zone order deliberately not the RFC 3263 order)."""
    return Zone({
        # NAPTR: order beats preference; SIP+D2S (SCTP) and E2U are not ours; a "." replacement
        # or a non-terminal rule (no "s" flag) leads nowhere.
        "naptr.test.example": [
            naptr(20, 5, "SIPS+D2T", "_sips._tcp.naptr.test.example"),
            naptr(10, 20, "SIP+D2U", "_sip._udp.naptr.test.example"),
            naptr(10, 10, "SIP+D2T", "_sip._tcp.naptr.test.example"),
            naptr(5, 10, "SIP+D2S", "_sip._sctp.naptr.test.example"),
            naptr(1, 10, "E2U+sip", "", flags=b"u"),
            naptr(10, 15, "SIP+D2U", "."),
            naptr(10, 16, "SIP+D2U", "_sip._udp.naptr.test.example", flags=b""),
            a("192.0.2.20"),
        ],
        "_sip._tcp.naptr.test.example": [srv(20, 0, 5071, "tcp2.test.example"), srv(10, 0, 5070, "tcp1.test.example")],
        "_sip._udp.naptr.test.example": [srv(10, 0, 5080, "udp1.test.example")],
        "_sips._tcp.naptr.test.example": [srv(10, 0, 5091, "tls1.test.example")],
        "_sip._sctp.naptr.test.example": [srv(10, 0, 5099, "sctp.test.example")],
        "tcp1.test.example": [a("192.0.2.1")],
        "tcp2.test.example": [a("192.0.2.2"), aaaa("2001:db8::2")],
        "udp1.test.example": [a("192.0.2.3")],
        "tls1.test.example": [a("192.0.2.4")],
        "sctp.test.example": [a("192.0.2.5")],
        # SRV without NAPTR.
        "srv.test.example": [a("192.0.2.40")],
        "_sip._udp.srv.test.example": [srv(10, 0, 5062, "udp1.test.example")],
        "_sip._tcp.srv.test.example": [srv(10, 0, 5063, "tcp1.test.example")],
        "_sips._tcp.srv.test.example": [srv(10, 0, 5064, "tls1.test.example")],
        # Only addresses: RFC 3263 4.2 default ports.
        "plain.test.example": [a("192.0.2.10"), aaaa("2001:db8::10")],
        # "." as the only target: SIP over UDP is decidedly not offered; nor anything else.
        "dot.test.example": [a("192.0.2.30")],
        "_sip._udp.dot.test.example": [srv(0, 0, 0, ".")],
        # "." for UDP only: TCP is still offered.
        "dotudp.test.example": [a("192.0.2.31")],
        "_sip._udp.dotudp.test.example": [srv(0, 0, 0, ".")],
        "_sip._tcp.dotudp.test.example": [srv(10, 0, 5065, "tcp1.test.example")],
        # An SRV target without an address is skipped.
        "_sip._udp.broken.test.example": [srv(10, 0, 5066, "nowhere.test.example"),
                                          srv(20, 0, 5067, "udp1.test.example")],
    })


class OrderSRVTests(SynchronousTestCase):
    """RFC 2782 selection, with a seeded random.Random so the runs are reproducible."""

    RUNS = 20000

    def assertNear(self, value: float, expected: float, delta: float) -> None:
        self.assertLessEqual(abs(value - expected), delta, f"{value} is not within {delta} of {expected}")

    def test_priority_first(self):
        records = [srv(20, 100, 1, "c"), srv(10, 0, 2, "a"), srv(30, 1000, 3, "d"), srv(10, 0, 4, "b")]
        for seed in range(50):
            ordered = order_srv(records, random.Random(seed))
            self.assertEqual([r.priority for r in ordered], [10, 10, 20, 30])
            self.assertEqual(sorted(r.port for r in ordered), [1, 2, 3, 4])

    def test_weights_give_proportions(self):
        records = [srv(10, 10, 1, "a"), srv(10, 20, 2, "b"), srv(10, 70, 3, "c")]
        rng = random.Random(3263)
        first = Counter()
        second_after_c = Counter()
        for _ in range(self.RUNS):
            ordered = order_srv(records, rng)
            self.assertEqual(sorted(r.port for r in ordered), [1, 2, 3])
            first[ordered[0].port] += 1
            if ordered[0].port == 3:
                second_after_c[ordered[1].port] += 1
        for port, share in ((1, 0.10), (2, 0.20), (3, 0.70)):
            self.assertNear(first[port] / self.RUNS, share, 0.015)
        # With c taken, a and b compete 10:20 for the next place.
        total = sum(second_after_c.values())
        self.assertNear(second_after_c[1] / total, 1 / 3, 0.02)

    def test_zero_weight_after_weighted(self):
        records = [srv(10, 0, 1, "z1"), srv(10, 50, 2, "w"), srv(10, 0, 3, "z2")]
        rng = random.Random(2782)
        second = Counter()
        for _ in range(self.RUNS):
            ordered = order_srv(records, rng)
            self.assertEqual(ordered[0].port, 2)
            second[ordered[1].port] += 1
        # Among zero weights the choice is uniform.
        self.assertNear(second[1] / self.RUNS, 0.5, 0.02)

    def test_all_zero_weights_uniform(self):
        records = [srv(10, 0, port, "t") for port in (1, 2, 3)]
        rng = random.Random(1)
        first = Counter(order_srv(records, rng)[0].port for _ in range(self.RUNS))
        for port in (1, 2, 3):
            self.assertNear(first[port] / self.RUNS, 1 / 3, 0.02)

    def test_seed_reproducible(self):
        records = [srv(10, w, p, "t") for p, w in enumerate((5, 10, 15, 20, 0, 50))]
        self.assertEqual(order_srv(records, random.Random(7)), order_srv(records, random.Random(7)))

    def test_empty(self):
        self.assertEqual(order_srv([], random.Random(0)), [])


class LiveZoneTestCase(TestCase):
    """A TargetResolver asking a real twisted.names server on loopback."""

    timeout = 30

    def setUp(self):
        self.zone = sample_zone()
        self.port = serve_zone(self, self.zone)
        self.resolver = self.make_resolver()

    def make_resolver(self, **kwargs) -> TargetResolver:
        return TargetResolver(reactor, servers=[("127.0.0.1", self.port)], dns_timeout=(2,), **kwargs)

    @defer.inlineCallbacks
    def resolve(self, uri: str, resolver: TargetResolver | None = None):
        targets = yield (resolver or self.resolver).resolve_uri(parse_uri(uri))
        return [(t.transport, t.host, t.port) for t in targets]


class NAPTRTests(LiveZoneTestCase):

    @defer.inlineCallbacks
    def test_naptr_srv_a_order(self):
        """NAPTR order then preference, SRV priority, then A before AAAA; D2S and E2U dropped."""
        targets = yield self.resolve("sip:alice@naptr.test.example")
        self.assertEqual(targets, [
            ("tcp", "192.0.2.1", 5070), ("tcp", "192.0.2.2", 5071), ("tcp", "2001:db8::2", 5071),
            ("udp", "192.0.2.3", 5080),
            ("tls", "192.0.2.4", 5091),
        ])
        queries = self.zone.take_queries()
        self.assertEqual(queries[0], ("naptr.test.example", "NAPTR"))
        self.assertNotIn(("_sip._sctp.naptr.test.example", "SRV"), queries)
        self.assertNotIn(("", "SRV"), queries)
        # NAPTR found: the fixed _sip._udp/_sip._tcp names are not guessed on top.
        self.assertEqual([q for q in queries if q[1] == "SRV"], [
            ("_sip._tcp.naptr.test.example", "SRV"), ("_sip._udp.naptr.test.example", "SRV"),
            ("_sips._tcp.naptr.test.example", "SRV")])

    @defer.inlineCallbacks
    def test_sips_only_tls(self):
        targets = yield self.resolve("sips:alice@naptr.test.example")
        self.assertEqual(targets, [("tls", "192.0.2.4", 5091)])
        self.assertNotIn(("_sip._tcp.naptr.test.example", "SRV"), self.zone.queries)
        self.assertNotIn(("_sip._udp.naptr.test.example", "SRV"), self.zone.queries)

    @defer.inlineCallbacks
    def test_supported_transports_filter(self):
        targets = yield self.resolve("sip:naptr.test.example", self.make_resolver(transports=("udp",)))
        self.assertEqual(targets, [("udp", "192.0.2.3", 5080)])

    @defer.inlineCallbacks
    def test_sips_without_tls_fails(self):
        with self.assertRaises(ResolutionError):
            yield self.resolve("sips:naptr.test.example", self.make_resolver(transports=("udp", "tcp")))
        self.assertEqual(self.zone.queries, [])

    @defer.inlineCallbacks
    def test_transport_param_skips_naptr(self):
        """RFC 3263 4.1/4.2: an explicit transport means no NAPTR, the SRV name of that transport."""
        targets = yield self.resolve("sip:naptr.test.example;transport=udp")
        self.assertEqual(targets, [("udp", "192.0.2.3", 5080)])
        self.assertEqual(self.zone.take_queries(), [
            ("_sip._udp.naptr.test.example", "SRV"), ("udp1.test.example", "A"), ("udp1.test.example", "AAAA")])

    @defer.inlineCallbacks
    def test_sips_transport_tcp_is_tls(self):
        targets = yield self.resolve("sips:naptr.test.example;transport=tcp")
        self.assertEqual(targets, [("tls", "192.0.2.4", 5091)])
        self.assertNotIn(("naptr.test.example", "NAPTR"), self.zone.queries)

    @defer.inlineCallbacks
    def test_sips_transport_udp_refused(self):
        with self.assertRaises(ResolutionError):
            yield self.resolve("sips:naptr.test.example;transport=udp")

    @defer.inlineCallbacks
    def test_unknown_transport_refused(self):
        with self.assertRaises(ResolutionError):
            yield self.resolve("sip:naptr.test.example;transport=sctp")
        self.assertEqual(self.zone.queries, [])

    @defer.inlineCallbacks
    def test_route_is_resolved_and_named(self):
        request = options("sips:bob@elsewhere.invalid", route="<sips:naptr.test.example;lr>")
        targets = yield self.resolver.resolve_request(request)
        self.assertEqual(targets, [Address("tls", "192.0.2.4", 5091)])
        self.assertEqual(self.resolver.server_name(request), "naptr.test.example")
        self.assertNotIn("elsewhere.invalid", {name for name, _ in self.zone.queries})

    @defer.inlineCallbacks
    def test_tel_uri_refused(self):
        with self.assertRaises(ResolutionError):
            yield self.resolver.resolve_request(options("tel:+15551234"))


class SRVTests(LiveZoneTestCase):

    @defer.inlineCallbacks
    def test_srv_without_naptr(self):
        targets = yield self.resolve("sip:srv.test.example")
        self.assertEqual(targets, [("udp", "192.0.2.3", 5062), ("tcp", "192.0.2.1", 5063), ("tls", "192.0.2.4", 5064)])
        self.assertEqual([q for q in self.zone.queries if q[1] in ("NAPTR", "SRV")], [
            ("srv.test.example", "NAPTR"), ("_sip._udp.srv.test.example", "SRV"),
            ("_sip._tcp.srv.test.example", "SRV"), ("_sips._tcp.srv.test.example", "SRV")])

    @defer.inlineCallbacks
    def test_sips_srv_without_naptr(self):
        targets = yield self.resolve("sips:srv.test.example")
        self.assertEqual(targets, [("tls", "192.0.2.4", 5064)])
        self.assertEqual([q for q in self.zone.queries if q[1] == "SRV"], [("_sips._tcp.srv.test.example", "SRV")])

    @defer.inlineCallbacks
    def test_transport_tcp_srv(self):
        targets = yield self.resolve("sip:srv.test.example;transport=TCP")
        self.assertEqual(targets, [("tcp", "192.0.2.1", 5063)])
        self.assertEqual(self.zone.take_queries()[0], ("_sip._tcp.srv.test.example", "SRV"))

    @defer.inlineCallbacks
    def test_transport_tls_on_sip_uri(self):
        targets = yield self.resolve("sip:srv.test.example;transport=tls")
        self.assertEqual(targets, [("tls", "192.0.2.4", 5064)])

    @defer.inlineCallbacks
    def test_dot_target_means_unavailable(self):
        """RFC 2782 ".": UDP is not offered, and neither is the A-record fallback."""
        with self.assertRaises(ResolutionError):
            yield self.resolve("sip:dot.test.example")
        self.assertNotIn(("dot.test.example", "A"), self.zone.queries)
        self.assertNotIn(("", "A"), self.zone.queries)

    @defer.inlineCallbacks
    def test_dot_for_one_transport_only(self):
        targets = yield self.resolve("sip:dotudp.test.example")
        self.assertEqual(targets, [("tcp", "192.0.2.1", 5065)])

    @defer.inlineCallbacks
    def test_target_without_address_skipped(self):
        targets = yield self.resolve("sip:broken.test.example;transport=udp")
        self.assertEqual(targets, [("udp", "192.0.2.3", 5067)])
        self.assertIn(("nowhere.test.example", "A"), self.zone.queries)

    @defer.inlineCallbacks
    def test_weighted_srv_over_the_wire(self):
        """The weights reach order_srv intact: 1 vs 99 within one priority, seeded."""
        self.zone.add("_sip._udp.weighted.test.example", srv(10, 1, 6001, "udp1.test.example"),
                      srv(10, 99, 6002, "udp1.test.example"))
        resolver = self.make_resolver(rng=random.Random(5))
        firsts = Counter()
        for _ in range(40):
            resolver._cache.clear()
            targets = yield self.resolve("sip:weighted.test.example;transport=udp", resolver)
            self.assertEqual(sorted(port for _, _, port in targets), [6001, 6002])
            firsts[targets[0][2]] += 1
        self.assertGreater(firsts[6002], 30)


class AddressFallbackTests(LiveZoneTestCase):

    @defer.inlineCallbacks
    def test_a_and_aaaa_default_port(self):
        targets = yield self.resolve("sip:plain.test.example")
        self.assertEqual(targets, [("udp", "192.0.2.10", 5060), ("udp", "2001:db8::10", 5060)])
        self.assertEqual(self.zone.queries[-2:], [("plain.test.example", "A"), ("plain.test.example", "AAAA")])

    @defer.inlineCallbacks
    def test_sips_default_port(self):
        targets = yield self.resolve("sips:plain.test.example")
        self.assertEqual(targets, [("tls", "192.0.2.10", 5061), ("tls", "2001:db8::10", 5061)])

    @defer.inlineCallbacks
    def test_transport_param_default_ports(self):
        self.assertEqual((yield self.resolve("sip:plain.test.example;transport=tcp"))[0], ("tcp", "192.0.2.10", 5060))
        self.assertEqual((yield self.resolve("sip:plain.test.example;transport=tls"))[0], ("tls", "192.0.2.10", 5061))

    @defer.inlineCallbacks
    def test_port_zero_is_the_default_port(self):
        self.assertEqual((yield self.resolve("sip:naptr.test.example:0"))[0], ("udp", "192.0.2.20", 5060))
        self.assertEqual((yield self.resolve("sip:192.0.2.30:0")), [("udp", "192.0.2.30", 5060)])

    @defer.inlineCallbacks
    def test_explicit_port_skips_naptr_and_srv(self):
        targets = yield self.resolve("sip:naptr.test.example:5099")
        self.assertEqual(targets, [("udp", "192.0.2.20", 5099)])
        self.assertEqual(self.zone.take_queries(), [("naptr.test.example", "A"), ("naptr.test.example", "AAAA")])
        targets = yield self.resolve("sips:naptr.test.example:5098")
        self.assertEqual(targets, [("tls", "192.0.2.20", 5098)])
        targets = yield self.resolve("sip:naptr.test.example:5097;transport=tcp")
        self.assertEqual(targets, [("tcp", "192.0.2.20", 5097)])

    @defer.inlineCallbacks
    def test_numeric_hosts_ask_nothing(self):
        self.assertEqual((yield self.resolve("sip:192.0.2.50")), [("udp", "192.0.2.50", 5060)])
        self.assertEqual((yield self.resolve("sips:192.0.2.50")), [("tls", "192.0.2.50", 5061)])
        self.assertEqual((yield self.resolve("sip:192.0.2.50;transport=tcp")), [("tcp", "192.0.2.50", 5060)])
        self.assertEqual((yield self.resolve("sip:u@[2001:db8::1]:5070;transport=tcp")), [("tcp", "2001:db8::1", 5070)])
        self.assertEqual(self.zone.queries, [])

    def test_literal_target_without_a_deferred(self):
        literal = self.resolver.literal_target
        self.assertEqual(literal(parse_uri("sip:192.0.2.50")), Address("udp", "192.0.2.50", 5060))
        self.assertEqual(literal(parse_uri("sips:192.0.2.50")), Address("tls", "192.0.2.50", 5061))
        self.assertEqual(literal(parse_uri("sip:u@[2001:db8::1]:5070;transport=tcp")), Address("tcp", "2001:db8::1", 5070))
        self.assertIsNone(literal(parse_uri("sip:plain.test.example")), "a name is looked up by resolve_uri")
        self.assertRaises(ResolutionError, literal, parse_uri("sips:192.0.2.50;transport=udp"))
        self.assertEqual(self.zone.queries, [])

    @defer.inlineCallbacks
    def test_maddr_replaces_host(self):
        targets = yield self.resolve("sip:x@unknown.invalid;maddr=srv.test.example;transport=tcp")
        self.assertEqual(targets, [("tcp", "192.0.2.1", 5063)])
        self.assertNotIn("unknown.invalid", {name for name, _ in self.zone.queries})
        self.zone.take_queries()
        targets = yield self.resolve("sip:x@naptr.test.example:5070;maddr=192.0.2.77")
        self.assertEqual(targets, [("udp", "192.0.2.77", 5070)])
        self.assertEqual(self.zone.queries, [])

    @defer.inlineCallbacks
    def test_names_dns_cannot_carry(self):
        """A 64-octet label or a NAPTR/SRV "." is no name to ask: ResolutionError, not UnicodeError."""
        for uri in ("sip:" + "a" * 64 + ".test.example", "sip:" + "a" * 64 + ".test.example:5060",
                    "sip:" + ".".join(["abcdefgh"] * 30) + ";transport=tcp"):
            with self.assertRaises(ResolutionError):
                yield self.resolve(uri)
        self.assertEqual(self.zone.queries, [])

    @defer.inlineCallbacks
    def test_nxdomain(self):
        with self.assertRaises(ResolutionError):
            yield self.resolve("sip:missing.test.example")
        with self.assertRaises(ResolutionError):
            yield self.resolve("sip:missing.test.example:5060")
        with self.assertRaises(ResolutionError):
            yield self.resolve("sip:outside.invalid")


class TimeoutTests(TestCase):

    timeout = 30

    @defer.inlineCallbacks
    def test_unanswered_dns_is_resolution_error(self):
        port, hole = silent_dns(self)
        resolver = TargetResolver(reactor, servers=[("127.0.0.1", port)], dns_timeout=(0.1, 0.1))
        start = reactor.seconds()
        with self.assertRaises(ResolutionError):
            yield resolver.resolve_uri(parse_uri("sip:slow.test.example"))
        # NAPTR, 3 SRV, A, AAAA, each sent twice: nothing else was asked, no resolv.conf server.
        self.assertEqual(hole.datagrams, 12)
        self.assertLess(reactor.seconds() - start, 5)
        self.assertEqual(resolver._cache, {})  # timeouts are not cached

    @defer.inlineCallbacks
    def test_timeout_on_srv_falls_back_to_the_next_step(self):
        """A server answering A but never SRV: the SRV step gives up after dns_timeout."""
        zone = Zone({"plain.test.example": [a("192.0.2.10")]})
        real = serve_zone(self, zone)
        hole_port, hole = silent_dns(self)
        naptr_srv = TargetResolver(reactor, servers=[("127.0.0.1", hole_port)], dns_timeout=(0.1,))
        direct = TargetResolver(reactor, servers=[("127.0.0.1", real)], dns_timeout=(0.1,))
        with self.assertRaises(ResolutionError):
            yield naptr_srv.resolve_uri(parse_uri("sip:plain.test.example"))
        targets = yield direct.resolve_uri(parse_uri("sip:plain.test.example"))
        self.assertEqual(targets, [Address("udp", "192.0.2.10", 5060)])


class CacheTests(LiveZoneTestCase):

    @defer.inlineCallbacks
    def test_second_resolution_within_ttl_asks_nothing(self):
        first = yield self.resolve("sip:naptr.test.example")
        self.assertTrue(self.zone.take_queries())
        second = yield self.resolve("sip:naptr.test.example")
        self.assertEqual(self.zone.queries, [])
        self.assertEqual(second, first)

    @defer.inlineCallbacks
    def test_nodata_cached_nxdomain_without_soa_not(self):
        """NAPTR of plain.test.example is NODATA with an SOA: cached (RFC 2308). The SRV names
        are NXDOMAIN without an SOA from twisted.names: asked again."""
        yield self.resolve("sip:plain.test.example")
        self.zone.take_queries()
        yield self.resolve("sip:plain.test.example")
        self.assertEqual(self.zone.queries, [
            ("_sip._udp.plain.test.example", "SRV"), ("_sip._tcp.plain.test.example", "SRV"),
            ("_sips._tcp.plain.test.example", "SRV")])

    @defer.inlineCallbacks
    def test_expires_after_ttl(self):
        self.zone.add("short.test.example", a("192.0.2.60", ttl=1))
        uri = "sip:short.test.example:5060"
        yield self.resolve(uri)
        self.assertEqual(self.zone.take_queries(), [("short.test.example", "A"), ("short.test.example", "AAAA")])
        yield self.resolve(uri)
        # The A answer lives 1 s; the AAAA NODATA min(SOA TTL, SOA minimum) = min(1, 60) s.
        self.assertEqual(self.zone.take_queries(), [])
        yield task.deferLater(reactor, 1.2, lambda: None)
        self.zone.records[b"short.test.example"] = [a("192.0.2.61", ttl=1)]
        targets = yield self.resolve(uri)
        self.assertEqual(targets, [("udp", "192.0.2.61", 5060)])
        self.assertEqual(self.zone.take_queries(), [("short.test.example", "A"), ("short.test.example", "AAAA")])

    @defer.inlineCallbacks
    def test_clear_cache_by_new_resolver(self):
        yield self.resolve("sip:naptr.test.example")
        self.zone.take_queries()
        yield self.resolve("sip:naptr.test.example", self.make_resolver())
        self.assertIn(("naptr.test.example", "NAPTR"), self.zone.queries)


class _CountingResolver:
    """An IResolver double for the TTL arithmetic on a task.Clock (the wire is tested above)."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.calls = 0

    def lookupAddress(self, name, timeout=None):
        self.calls += 1
        if isinstance(self.outcome, Exception):
            return defer.fail(self.outcome)
        return defer.succeed(self.outcome)

    lookupIPV6Address = lookupAddress


class CacheClockTests(SynchronousTestCase):

    def test_positive_ttl_is_the_smallest(self):
        clock = task.Clock()
        answers = [dns.RRHeader(b"h.example", dns.A, ttl=30, payload=dns.Record_A("192.0.2.1", 30)),
                   dns.RRHeader(b"h.example", dns.A, ttl=10, payload=dns.Record_A("192.0.2.2", 10))]
        fake = _CountingResolver((answers, [], []))
        resolver = TargetResolver(clock, dns_resolver=fake)
        resolve = lambda: self.successResultOf(resolver.resolve_uri(parse_uri("sip:h.example:5060")))
        self.assertEqual(len(resolve()), 2)
        self.assertEqual(fake.calls, 2)  # A and AAAA (the AAAA lookup gets A records: not cached)
        resolve()
        self.assertEqual(fake.calls, 3)
        clock.advance(9.9)
        resolve()
        self.assertEqual(fake.calls, 4)
        clock.advance(0.2)
        resolve()
        self.assertEqual(fake.calls, 6)

    def test_negative_answer_cached_for_soa_minimum(self):
        clock = task.Clock()
        message = dns.Message(rCode=dns.ENAME)
        message.authority = [dns.RRHeader(b"example", dns.SOA, ttl=300,
                                          payload=dns.Record_SOA(minimum=20, ttl=300))]
        fake = _CountingResolver(dns_error.DNSNameError(message))
        resolver = TargetResolver(clock, dns_resolver=fake)
        self.failureResultOf(resolver.resolve_uri(parse_uri("sip:h.example:5060")), ResolutionError)
        self.assertEqual(fake.calls, 2)
        clock.advance(19)
        self.failureResultOf(resolver.resolve_uri(parse_uri("sip:h.example:5060")), ResolutionError)
        self.assertEqual(fake.calls, 2)
        clock.advance(1)
        self.failureResultOf(resolver.resolve_uri(parse_uri("sip:h.example:5060")), ResolutionError)
        self.assertEqual(fake.calls, 4)

    def test_authoritative_domain_error_is_resolution_error(self):
        """An in-process authority raises AuthoritativeDomainError, which is no DomainError."""
        zone = Zone({"plain.test.example": [a("192.0.2.10")]})
        resolver = TargetResolver(task.Clock(), dns_resolver=zone)
        self.failureResultOf(resolver.resolve_uri(parse_uri("sip:missing.test.example")), ResolutionError)
        self.assertEqual(self.successResultOf(resolver.resolve_uri(parse_uri("sip:plain.test.example"))),
                         [Address("udp", "192.0.2.10", 5060)])


class ResolverConstructionTests(TestCase):

    def test_lazy(self):
        """Building a TargetResolver reads no resolv.conf and leaves no timer on the reactor."""
        before = len(reactor.getDelayedCalls())
        resolver = TargetResolver(reactor)
        self.assertIsNone(resolver._dns)
        self.assertEqual(len(reactor.getDelayedCalls()), before)

    def test_configured_servers_only(self):
        before = len(reactor.getDelayedCalls())
        chain = make_dns_resolver(reactor, [("127.0.0.1", 5353)])
        upstream = chain.resolvers[-1]
        self.assertEqual(upstream.servers, [("127.0.0.1", 5353)])
        self.assertEqual(tuple(upstream.dynServers), ())
        self.assertEqual(len(reactor.getDelayedCalls()), before)

    @defer.inlineCallbacks
    def test_twisted_cache_resolver_stays_empty(self):
        """Why resolver.py caches itself: createResolver's CacheResolver is never filled."""
        zone = Zone({"plain.test.example": [a("192.0.2.10")]})
        port = serve_zone(self, zone)
        chain = client.createResolver(servers=[("127.0.0.1", port)])
        upstream = chain.resolvers[-1]
        self.addCleanup(lambda: upstream._parseCall.active() and upstream._parseCall.cancel())
        yield chain.lookupAddress("plain.test.example")
        yield chain.lookupAddress("plain.test.example")
        self.assertEqual(chain.resolvers[1].cache, {})
        self.assertEqual(len(zone.queries), 2)
