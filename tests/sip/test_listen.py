"""txuac.sip.listen: Kamailio's ``proto:host:port`` sockets, parsed once by the core for the
configuration, the rows and the scripts."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.listen_specs import BAD_SOCKETS, GOOD_SOCKETS
from txuac.errors import InvalidListenSpec, TxuacError
from txuac.sip.address import Address
from txuac.sip.listen import ListenSpec, ip_address_in, is_number, parse_listen


class ParseListenTests(SynchronousTestCase):
    def test_good_sockets(self):
        for text, expected in GOOD_SOCKETS:
            self.assertEqual(parse_listen(text), expected, text)

    def test_str_round_trips(self):
        for text, expected in GOOD_SOCKETS:
            self.assertEqual(parse_listen(str(expected)), expected)
        self.assertEqual(str(ListenSpec("tcp", "::1", 5060)), "tcp:[::1]:5060")
        self.assertTrue(ListenSpec("tcp", "::1", 5060).is_ipv6)
        self.assertFalse(ListenSpec("tcp", "127.0.0.1", 5060).is_ipv6)

    def test_bad_sockets_raise_a_txuac_error_saying_why(self):
        """Without naming where: the caller knows (a file's key, a row's column, a script's sock)."""
        for text in BAD_SOCKETS:
            raised = self.assertRaises(InvalidListenSpec, parse_listen, text)
            self.assertIsInstance(raised, TxuacError)
            self.assertIn(repr(text), str(raised), text)

    def test_bad_socket_messages(self):
        self.assertIn("udp:, tcp: or tls:", str(self.assertRaises(InvalidListenSpec, parse_listen, "sctp:1.2.3.4")))
        self.assertIn("brackets are for IPv6", str(self.assertRaises(InvalidListenSpec, parse_listen, "udp:[1.2.3.4]")))
        self.assertIn("in brackets", str(self.assertRaises(InvalidListenSpec, parse_listen, "tcp:::1:5060")))
        self.assertIn("invalid port '65536'",
                      str(self.assertRaises(InvalidListenSpec, parse_listen, "udp:127.0.0.1:65536")))
        self.assertIn("'example.com' in 'udp:example.com:5060' is not an IPv4 or IPv6 address",
                      str(self.assertRaises(InvalidListenSpec, parse_listen, "udp:example.com:5060")))

    def test_not_a_string(self):
        raised = self.assertRaises(InvalidListenSpec, parse_listen, 5060)
        self.assertEqual(str(raised), "expected a string like 'udp:127.0.0.1:5060', got 5060")

    def test_address(self):
        self.assertEqual(parse_listen("tls:[::1]").address, Address("tls", "::1", 5061))
        self.assertEqual(ListenSpec("udp", "127.0.0.1", 5070).address, Address("udp", "127.0.0.1", 5070))


class PartsTests(SynchronousTestCase):
    def test_ip_address_in(self):
        self.assertEqual(str(ip_address_in("::1", True, "[::1]")), "::1")
        self.assertEqual(str(ip_address_in("10.0.0.1", False, "10.0.0.1")), "10.0.0.1")
        self.assertRaises(InvalidListenSpec, ip_address_in, "10.0.0.1", True, "[10.0.0.1]")
        self.assertRaises(InvalidListenSpec, ip_address_in, "host", False, "host")

    def test_is_number(self):
        self.assertTrue(is_number("5060"))
        for text in ("", "+1", "-1", "\u00b2", "5e3", " 1"):
            self.assertFalse(is_number(text), text)
