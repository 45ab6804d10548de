"""Transport addresses and default ports (txuac.sip.address)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip.address import (
    DEFAULT_PORTS,
    Address,
    ResponseOrigin,
    bare_host,
    default_port,
    is_ip_address,
    via_host,
)


class AddressTests(SynchronousTestCase):
    def test_default_ports(self) -> None:
        """RFC 3261 19.1.2: 5060 for UDP and TCP, 5061 for TLS; any case; 5060 otherwise."""
        self.assertEqual(DEFAULT_PORTS, {"udp": 5060, "tcp": 5060, "tls": 5061})
        self.assertEqual([default_port(t) for t in ("udp", "TCP", "tls", "TLS", "sctp")],
                         [5060, 5060, 5061, 5061, 5060])

    def test_is_ip_address(self) -> None:
        for host, expected in [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("[2001:db8::1]", True),
                               ("sip.example.com", False), ("", False), ("1.2.3", False), ("[::1", False)]:
            self.assertEqual(is_ip_address(host), expected, host)

    def test_hosts_in_brackets(self) -> None:
        self.assertEqual(via_host("::1"), "[::1]")
        self.assertEqual(via_host("[::1]"), "[::1]")
        self.assertEqual(via_host("10.0.0.1"), "10.0.0.1")
        self.assertEqual(bare_host("[::1]"), "::1")
        self.assertEqual(bare_host("host.example"), "host.example")

    def test_address(self) -> None:
        self.assertEqual(str(Address("tls", "::1", 5061)), "tls:[::1]:5061")
        self.assertFalse(Address("udp", "127.0.0.1", 5060).reliable)
        self.assertTrue(Address("tcp", "127.0.0.1", 5060).reliable)

    def test_addresses_are_values(self) -> None:
        """Equal and hashed alike when transport, host and port are (dict keys, sets); a
        ResponseOrigin likewise by its two addresses."""
        a, b = Address("udp", "127.0.0.1", 5060), Address("udp", "127.0.0.1", 5060)
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))
        self.assertEqual(len({a, b, Address("tcp", "127.0.0.1", 5060), Address("udp", "127.0.0.2", 5060),
                              Address("udp", "127.0.0.1", 5061)}), 4)
        self.assertNotEqual(a, ("udp", "127.0.0.1", 5060))
        self.assertEqual(repr(a), "Address(transport='udp', host='127.0.0.1', port=5060)")
        other = Address("udp", "192.0.2.1", 5060)
        self.assertEqual(ResponseOrigin(a, other), ResponseOrigin(b, other))
        self.assertEqual(hash(ResponseOrigin(a, other)), hash(ResponseOrigin(b, other)))
        self.assertNotEqual(ResponseOrigin(a, other), ResponseOrigin(other, a))
