"""txuac.sip.via: the transport layer's Via rules (RFC 3261 8.1.1.7, 18.2.1, 18.2.2; RFC 3581),
on plain values."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.sip_messages import wire
from txuac.sip import address, parse_message, via
from txuac.sip.address import Address
from txuac.sip.fields import parse_via
from txuac.sip.via import MAGIC_COOKIE, has_magic_cookie, make_via, new_branch, response_address, stamp_received


def request_with_via(value: str):
    """An OPTIONS whose only Via is ``value``."""
    return parse_message(wire(start="OPTIONS sip:bob@example.com SIP/2.0").replace(
        b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds", f"Via: {value}".encode()))


class BranchTests(SynchronousTestCase):
    def test_has_magic_cookie(self) -> None:
        for branch, expected in [
            (None, False),
            ("", False),
            ("z9hG4bK", False),  # RFC 4475 badbranch: the cookie alone
            ("z9hG4bK776asdhds", True),
            ("z9hG4bK-1", True),
            ("776asdhds", False),
            ("xz9hG4bK776", False),
        ]:
            self.assertEqual(has_magic_cookie(branch), expected, repr(branch))

    def test_new_branch(self) -> None:
        """RFC 3261 8.1.1.7: the magic cookie, then 96 random bits; never the same twice."""
        branches = {new_branch() for _ in range(100)}
        self.assertEqual(len(branches), 100)
        for branch in branches:
            self.assertTrue(branch.startswith(MAGIC_COOKIE))
            self.assertEqual(len(branch), len(MAGIC_COOKIE) + 24)
            self.assertTrue(has_magic_cookie(branch))


class MakeViaTests(SynchronousTestCase):
    def test_udp_asks_for_rport(self) -> None:
        made = make_via("udp", "192.0.2.1", 5060)
        self.assertEqual((made.transport, made.host, made.port), ("UDP", "192.0.2.1", 5060))
        self.assertTrue(has_magic_cookie(made.branch))
        self.assertTrue(made.rport_requested)  # RFC 3581 3
        self.assertEqual(parse_via(str(made)).branch, made.branch)

    def test_streams_and_rport_off(self) -> None:
        self.assertFalse(make_via("tcp", "192.0.2.1", 5060).rport_requested)
        self.assertFalse(make_via("udp", "192.0.2.1", 5060, rport=False).rport_requested)
        self.assertEqual(make_via("tls", "192.0.2.1", 5061).transport, "TLS")

    def test_ipv6_in_brackets(self) -> None:
        self.assertEqual(make_via("udp", "2001:db8::1", 5060).host, "[2001:db8::1]")


class StampReceivedTests(SynchronousTestCase):
    def test_received_and_rport_filled(self) -> None:
        """RFC 3581 4: an empty rport gets the source port, and received is added with it."""
        request = request_with_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport")
        stamp_received(request, Address("udp", "198.51.100.7", 40000))
        top = request.top_via
        self.assertEqual((top.received, top.rport), ("198.51.100.7", 40000))
        self.assertEqual(request.headers.get("Via"),
                         "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=40000;received=198.51.100.7")

    def test_rport_of_a_matching_sent_by_still_gets_received(self) -> None:
        request = request_with_via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKb;rport")
        stamp_received(request, Address("udp", "198.51.100.7", 40000))
        self.assertEqual((request.top_via.received, request.top_via.rport), ("198.51.100.7", 40000))

    def test_received_without_rport(self) -> None:
        """RFC 3261 18.2.1: received when sent-by is not the source address."""
        request = request_with_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc")
        stamp_received(request, Address("udp", "198.51.100.7", 5060))
        self.assertEqual((request.top_via.received, request.top_via.rport), ("198.51.100.7", None))

    def test_matching_sent_by_is_left_alone(self) -> None:
        text = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKd"
        request = request_with_via(text)
        stamp_received(request, Address("udp", "198.51.100.7", 5060))
        self.assertEqual(request.headers.get("Via"), text)

    def test_host_name_sent_by_gets_received(self) -> None:
        request = request_with_via("SIP/2.0/UDP pc33.example.com;branch=z9hG4bKe")
        stamp_received(request, Address("udp", "198.51.100.7", 5060))
        self.assertEqual(request.top_via.received, "198.51.100.7")

    def test_only_the_top_via_of_a_comma_separated_line(self) -> None:
        request = request_with_via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKf, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKg")
        stamp_received(request, Address("udp", "198.51.100.7", 5060))
        self.assertEqual(request.headers.get("Via"),
                         "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKf;received=198.51.100.7, "
                         "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKg")

    def test_no_via(self) -> None:
        request = parse_message(wire())
        request.headers.remove("Via")
        stamp_received(request, Address("udp", "198.51.100.7", 5060))
        self.assertNotIn("Via", request.headers)


class ResponseAddressTests(SynchronousTestCase):
    def address(self, value: str, transport: str = "udp") -> Address:
        return response_address(parse_via(value), transport)

    def test_received_and_rport(self) -> None:
        """RFC 3581 4: back to the source address and port."""
        self.assertEqual(self.address("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport=40000;received=198.51.100.7"),
                         Address("udp", "198.51.100.7", 40000))

    def test_received_and_the_sent_by_port(self) -> None:
        """RFC 3261 18.2.2: without rport, received and the sent-by port (default 5060)."""
        self.assertEqual(self.address("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;received=198.51.100.7"),
                         Address("udp", "198.51.100.7", 5070))
        self.assertEqual(self.address("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa"), Address("udp", "10.0.0.1", 5060))

    def test_maddr(self) -> None:
        self.assertEqual(self.address("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa;maddr=239.255.255.1;received=10.0.0.9"),
                         Address("udp", "239.255.255.1", 5060))

    def test_tls_default_port_and_ipv6(self) -> None:
        self.assertEqual(self.address("SIP/2.0/TLS [2001:db8::1];branch=z9hG4bKa", "tls"),
                         Address("tls", "2001:db8::1", 5061))


class OneHomeTests(SynchronousTestCase):
    def test_one_home(self) -> None:
        """via.py uses the address module's names rather than its own copies."""
        self.assertIs(via.Address, address.Address)
        self.assertIs(via.bare_host, address.bare_host)
