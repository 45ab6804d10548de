"""SIPStack tells the consumer where a final response came from and where the request it
answers went (``ClientRequest.origin``, a ResponseOrigin beside the response, which stays a
pure value): txuac.auth answers a challenge only when they agree. Fake transports and
clock, as in test_stack."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tests.support.stack_harness import PEER, StackTestCase, outgoing
from txuac.net.interfaces import ResponseOrigin
from txuac.sip import make_response, parse_message
from txuac.sip.address import Address


class ResponseOriginTests(StackTestCase):
    def test_udp_response_from_the_target(self):
        handle = self.stack.start_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.assertIsNone(handle.origin, "no response yet")
        self.answer(request, 401)
        self.successResultOf(handle.deferred)
        self.assertEqual(handle.origin, ResponseOrigin(Address("udp", *PEER), Address("udp", *PEER)))
        self.finish()

    def test_udp_response_from_elsewhere(self):
        """RFC 3261 17.1.3 matches by branch only: a response from another socket is delivered,
        and the handle says so."""
        handle = self.stack.start_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 401, source=("203.0.113.9", 5060))
        self.successResultOf(handle.deferred)
        self.assertEqual(handle.origin.source, Address("udp", "203.0.113.9", 5060))
        self.assertEqual(handle.origin.sent_to, Address("udp", *PEER))
        self.finish()

    def test_stream_response_from_the_connection(self):
        target = Address("tcp", "198.51.100.7", 5060)
        handle = self.stack.start_request(outgoing(), target)
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        connection = factory.buildProtocol(None)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.1", 40001),
                                    peerAddress=IPv4Address("TCP", "198.51.100.7", 5060))
        connection.makeConnection(transport)
        self.reactor.advance(0)
        request = parse_message(transport.value())
        connection.dataReceived(bytes(make_response(request, 407, to_tag="uas")))
        self.successResultOf(handle.deferred)
        self.assertEqual(handle.origin, ResponseOrigin(target, target))
        self.finish()

    def test_the_response_carries_no_network_facts(self):
        """The core Response has no place for them: the origin is the handle's."""
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 200)
        response = self.successResultOf(d)
        self.assertFalse(hasattr(response, "source"))
        self.assertFalse(hasattr(response, "sent_to"))
        self.assertEqual(bytes(response.copy()), bytes(response))
        self.finish()

    def test_origin_follows_failover(self):
        """A 503 from the first target, a 200 from the next: the origin is the 200's."""
        self.resolver.targets = [Address("udp", "203.0.113.4", 5060), Address("udp", "203.0.113.5", 5060)]
        handle = self.stack.start_request(outgoing())
        [(busy, _)] = self.sent()
        self.answer(busy, 503, source=("203.0.113.4", 5060))
        self.assertIsNone(handle.origin, "a new transaction has heard nothing yet")
        [(good, _)] = self.sent()
        self.answer(good, 200, source=("203.0.113.5", 5060))
        self.assertEqual(self.successResultOf(handle.deferred).status, 200)
        second = Address("udp", "203.0.113.5", 5060)
        self.assertEqual(handle.origin, ResponseOrigin(second, second))
        self.finish()
