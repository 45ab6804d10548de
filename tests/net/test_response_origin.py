"""SIPStack tells the consumer where a final response came from (``Response.source``) and
where the request it answers went (``Response.sent_to``): txuac.auth answers a challenge
only when they agree. Fake transports and clock, as in test_stack."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tests.support.stack_harness import PEER, StackTestCase, outgoing
from txuac.sip import make_response, parse_message
from txuac.sip.address import Address


class ResponseOriginTests(StackTestCase):
    def test_udp_response_from_the_target(self):
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 401)
        response = self.successResultOf(d)
        self.assertEqual((response.source, response.sent_to), (Address("udp", *PEER), Address("udp", *PEER)))
        self.finish()

    def test_udp_response_from_elsewhere(self):
        """RFC 3261 17.1.3 matches by branch only: a response from another socket is delivered,
        and says so."""
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 401, source=("203.0.113.9", 5060))
        response = self.successResultOf(d)
        self.assertEqual(response.source, Address("udp", "203.0.113.9", 5060))
        self.assertEqual(response.sent_to, Address("udp", *PEER))
        self.finish()

    def test_stream_response_from_the_connection(self):
        target = Address("tcp", "198.51.100.7", 5060)
        d = self.stack.send_request(outgoing(), target)
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        connection = factory.buildProtocol(None)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.1", 40001),
                                    peerAddress=IPv4Address("TCP", "198.51.100.7", 5060))
        connection.makeConnection(transport)
        self.reactor.advance(0)
        request = parse_message(transport.value())
        connection.dataReceived(bytes(make_response(request, 407, to_tag="uas")))
        response = self.successResultOf(d)
        self.assertEqual((response.source, response.sent_to), (target, target))
        self.finish()

    def test_copy_keeps_the_origin(self):
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 200)
        response = self.successResultOf(d)
        copy = response.copy()
        self.assertEqual((copy.source, copy.sent_to), (response.source, response.sent_to))
        self.finish()
