"""SIPStack driven through fake transports and a fake clock (no sockets, no real time).

The reactor is a MemoryReactorClock: ``callLater`` and ``seconds`` for the
timers, ``connectTCP`` recorded for stream targets. UDP goes through a
FakeDatagramTransport, streams through StringTransport. The only stand-in
for a txuac component is the target resolver of the failover tests.
"""

from __future__ import annotations

import types
import weakref

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import capturedLogs
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.stack_harness import LOCAL, PEER, T1, T2, T4, StackTestCase, outgoing, request_bytes
from txuac.errors import ResolutionError, TransactionTimeout, TransportError
from txuac.net.resolver import TargetResolver
from txuac.sip import make_response, parse_message
from txuac.sip.uri import parse_uri
from txuac.sip.address import Address
from txuac.sip.transaction import TimerSettings


@implementer(IReadDescriptor)
class SocketWithAnswers:
    """A UDP socket with datagrams waiting: doRead hands them to ``receive``; a datagram
    written goes to ``write`` (none expected when it is None)."""

    def __init__(self, receive, write=None):
        self.waiting: list[bytes] = []
        self._receive, self._write = receive, write

    def doRead(self):  # noqa: N802 - Twisted's name
        while self.waiting:
            self._receive(self.waiting.pop(0))

    def write(self, data, address):
        if self._write is None:
            raise AssertionError("nothing should be sent from this socket")
        self._write(data, address)

    def fileno(self):
        return -1

    def logPrefix(self):  # noqa: N802 - Twisted's name
        return "SocketWithAnswers"

class ClientTransactionTests(StackTestCase):
    def test_via_added_with_fresh_branch_and_rport(self):
        original = outgoing()
        first = self.stack.send_request(original, Address("udp", *PEER))
        second = self.stack.send_request(original, Address("udp", *PEER))
        (req1, addr1), (req2, addr2) = self.sent()
        self.assertEqual((addr1, addr2), (PEER, PEER))
        via1, via2 = req1.top_via, req2.top_via
        for via in (via1, via2):
            self.assertEqual((via.transport, via.host, via.port), ("UDP", LOCAL[0], LOCAL[1]))
            self.assertTrue(via.branch.startswith("z9hG4bK") and len(via.branch) > 7 + 16, via.branch)
            self.assertTrue(via.rport_requested)
            self.assertIsNone(via.rport)
        self.assertNotEqual(via1.branch, via2.branch)
        self.assertEqual(len(req1.via), 1)
        self.assertNotIn("Via", original.headers, "the caller's request must not be modified")
        self.answer(req1, 200)
        self.answer(req2, 200)
        self.assertEqual(self.successResultOf(first).status, 200)
        self.assertEqual(self.successResultOf(second).status, 200)
        self.reactor.advance(T4)
        self.assertEqual(self.stack._client, {})
        self.finish()

    def test_content_length_added_when_missing(self):
        """RFC 3261 18.3: required on streams; added on every transport (the caller's request untouched)."""
        original = parse_message(bytes(outgoing()).replace(b"Content-Length: 0\r\n", b""))
        self.assertNotIn("Content-Length", original.headers)
        over_udp = self.stack.send_request(original, Address("udp", *PEER))
        over_tcp = self.stack.send_request(original, Address("tcp", "198.51.100.7", 5060))
        [(request, _)] = self.sent()
        self.assertEqual(request.headers.get("Content-Length"), "0")
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 5060))
        protocol.makeConnection(transport)
        self.assertIn(b"\r\nContent-Length: 0\r\n", transport.value())
        self.assertNotIn("Content-Length", original.headers)
        self.finish()
        self.failureResultOf(over_udp, TransportError)
        self.failureResultOf(over_tcp, TransportError)

    def test_provisional_then_final(self):
        provisional = []
        d = self.stack.send_request(outgoing(), Address("udp", *PEER), on_provisional=provisional.append)
        [(request, _)] = self.sent()
        self.answer(request, 100)
        self.answer(request, 183)
        self.assertNoResult(d)
        self.answer(request, 404)
        self.assertEqual([r.status for r in provisional], [100, 183])
        self.assertEqual(self.successResultOf(d).status, 404)
        self.answer(request, 404)  # a retransmission is absorbed by Completed
        self.finish()

    def test_completed_transactions_keep_only_their_key_until_timer_k(self):
        """17.1.2.2: Completed absorbs retransmissions until Timer K (T4 on UDP); the
        stack keeps just the keys, swept in order by one reactor timer."""
        first = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request1, _)] = self.sent()
        self.answer(request1, 200)
        self.reactor.advance(T4 / 2)
        second = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request2, _)] = self.sent()
        self.answer(request2, 404)
        self.assertEqual(self.successResultOf(first).status, 200)
        self.assertEqual(self.successResultOf(second).status, 404)
        self.assertEqual(self.stack._client, {})
        self.assertEqual(len(self.stack._absorbing), 2)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1, "one sweep timer, not one per transaction")
        with capturedLogs() as events:
            self.answer(request1, 200)  # retransmissions: absorbed, not "matches no transaction"
            self.answer(request2, 404)
        self.assertEqual(events, [])
        self.reactor.advance(T4 / 2)
        self.assertEqual(list(self.stack._absorbing), [(request2.top_via.branch, "OPTIONS")])
        self.reactor.advance(T4 / 2)
        self.assertEqual(self.stack._absorbing, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.finish()

    def test_absorbing_keys_are_dropped_on_stop(self):
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 200)
        self.successResultOf(d)
        self.assertTrue(self.stack._absorbing)
        self.finish()
        self.assertEqual(self.stack._absorbing, {})

    def test_provisional_callback_error_does_not_break_the_transaction(self):
        def broken(response):
            raise RuntimeError("TU bug")

        d = self.stack.send_request(outgoing(), Address("udp", *PEER), on_provisional=broken)
        [(request, _)] = self.sent()
        self.answer(request, 180)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.answer(request, 200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_timer_e_and_f_over_udp(self):
        """17.1.2.2: retransmit at T1, 2T1, 4T1 ... capped at T2; Timer F at 64*T1."""
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        times = [0.0]
        self.sent()
        now = 0.0
        while now < 64 * T1:
            self.reactor.advance(0.25)
            now += 0.25
            times.extend(now for _ in self.sent())
        expected = [0.0]
        interval = T1
        while expected[-1] + interval < 64 * T1:
            expected.append(expected[-1] + interval)
            interval = min(2 * interval, T2)
        self.assertEqual(times, expected)
        self.assertEqual(expected[:6], [0.0, 0.5, 1.5, 3.5, 7.5, 11.5])
        self.failureResultOf(d, TransactionTimeout)
        self.assertEqual(self.stack._client, {})
        self.finish()

    def test_caller_timeout_before_timer_f(self):
        """``timeout``: the transaction fails as a timeout then, retransmits no more and
        ignores a late response."""
        d = self.stack.send_request(outgoing(), Address("udp", *PEER), timeout=2.0)
        [(request, _)] = self.sent()
        self.reactor.advance(1.99)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        self.assertIn("within 2 s", str(self.failureResultOf(d, TransactionTimeout).value))
        self.assertEqual(self.stack._client, {})
        self.assertEqual(self.stack.client_outcomes[("OPTIONS", "timeout")], 1)
        self.assertEqual(len(self.sent()), 2, "retransmitted at T1 and 3*T1 until then")
        self.reactor.advance(64 * T1)
        self.assertEqual(self.sent(), [], "no retransmission after the timeout")
        self.answer(request, 200)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.finish()

    def test_request_t2_caps_its_retransmissions_only(self):
        """``t2``: this request's first eight retransmissions every T1 once capped at it
        (17.1.2.2), then doubling to the stack's T2 again; Timer F still at 64*T1; another
        request at the same time keeps the stack's T2."""
        own = self.stack.send_request(outgoing(call_id="own"), Address("udp", *PEER), t2=T1)
        other = self.stack.send_request(outgoing(call_id="other"), Address("udp", *PEER))
        self.assertEqual(len(self.sent()), 2)
        times: dict[str, list[float]] = {"own": [], "other": []}
        for _ in range(32):
            self.reactor.advance(0.25)
            for request, _ in self.sent():
                times[request.call_id].append(self.reactor.seconds())
        self.assertEqual(times["own"], [0.5 * i for i in range(1, 10)] + [5.5, 7.5])
        self.assertEqual(times["other"], [0.5, 1.5, 3.5, 7.5])
        self.reactor.advance(64 * T1)
        self.failureResultOf(own, TransactionTimeout)
        self.failureResultOf(other, TransactionTimeout)
        self.finish()

    def test_requests_with_different_t2_each_keep_their_own(self):
        """The lowered timers are made once per T2 asked, and a request asking another T2
        (or the stack's timers replaced) gets timers of its own, not the last ones made."""
        first = self.stack.send_request(outgoing(call_id="first"), Address("udp", *PEER), t2=T1)
        second = self.stack.send_request(outgoing(call_id="second"), Address("udp", *PEER), t2=2 * T1)
        self.stack.timers = TimerSettings(t1=T1 / 2)
        third = self.stack.send_request(outgoing(call_id="third"), Address("udp", *PEER), t2=T1)
        self.assertEqual(len(self.sent()), 3)
        times: dict[str, list[float]] = {"first": [], "second": [], "third": []}
        for _ in range(16):
            self.reactor.advance(0.25)
            for request, _ in self.sent():
                times[request.call_id].append(self.reactor.seconds())
        self.assertEqual(times["first"], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
        self.assertEqual(times["second"], [0.5, 1.5, 2.5, 3.5])
        self.assertEqual(times["third"], [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75])
        self.reactor.advance(64 * T1)
        for d in (first, second, third):
            self.failureResultOf(d, TransactionTimeout)
        self.finish()

    def test_request_t2_not_retransmitted_once_answered(self):
        """A lowered T2 costs nothing when the answer comes: one datagram, as before."""
        d = self.stack.send_request(outgoing(), Address("udp", *PEER), t2=T1)
        [(request, _)] = self.sent()
        self.reactor.advance(0.1)
        self.answer(request, 200)
        self.reactor.advance(64 * T1)
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(self.stack.retransmissions, 0)
        self.finish()

    def test_answer_waiting_on_the_socket_is_read_before_retransmitting(self):
        """A busy process reaches its due timers before its sockets: the answer that is
        already waiting is read first, so the request is not sent again."""
        socket = SocketWithAnswers(self.receive, self.udp.write)
        d = self.stack.send_request(outgoing(), Address("udp", *PEER), t2=T1)
        [(request, _)] = self.sent()
        self.listener.transport = socket
        socket.waiting.append(bytes(make_response(request, 200, to_tag="uas")))
        self.reactor.advance(T1)
        self.assertEqual(self.sent(), [], "not sent again")
        self.assertEqual(self.successResultOf(d).status, 200)
        self.listener.transport = self.udp
        self.finish()

    def test_answer_waiting_on_a_workers_own_socket_is_read_before_retransmitting(self):
        """With [core] workers the answers come to the worker's own socket (requests_from)."""
        own = types.SimpleNamespace(transport=SocketWithAnswers(self.receive), requests_from=None)
        d = self.stack.send_request(outgoing(), Address("udp", *PEER), t2=T1)
        [(request, _)] = self.sent()
        self.listener.requests_from = own
        try:
            own.transport.waiting.append(bytes(make_response(request, 200, to_tag="uas")))
            self.reactor.advance(T1)
        finally:
            self.listener.requests_from = None
        self.assertEqual(self.sent(), [], "not sent again")
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_caller_timeout_cancelled_by_the_final_response(self):
        d = self.stack.send_request(outgoing(), Address("udp", *PEER), timeout=2.0)
        [(request, _)] = self.sent()
        self.answer(request, 200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.reactor.advance(2.0)
        self.assertEqual(self.stack.client_outcomes[("OPTIONS", "timeout")], 0)
        self.finish()

    def test_timer_e_after_provisional_is_t2(self):
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        self.answer(request, 100)
        self.reactor.advance(T1)  # E fires once at T1, then every T2 in Proceeding
        self.assertEqual(len(self.sent()), 1)
        self.reactor.advance(T2 - 0.01)
        self.assertEqual(self.sent(), [])
        self.reactor.advance(0.01)
        self.assertEqual(len(self.sent()), 1)
        self.answer(request, 200)
        self.successResultOf(d)
        self.finish()

    def test_udp_send_error_is_a_transport_error(self):
        self.udp.unreachable.add("203.0.113.9")
        d = self.stack.send_request(outgoing(), Address("udp", "203.0.113.9", 5060))
        self.failureResultOf(d, TransportError)
        self.assertEqual(self.stack._client, {})
        self.finish()

    def test_errors_come_in_the_deferred(self):
        """Nothing is raised by send_request itself: every error fails the Deferred."""
        self.failureResultOf(self.stack.send_request(outgoing(), Address("udp", "2001:db8::1", 5060)),
                             TransportError)  # no IPv6 socket
        self.stack.resolver = TargetResolver(self.reactor, dns_resolver=object())  # its server_name() refuses tel:
        tel = parse_message(bytes(outgoing()).replace(b"OPTIONS sip:uas@198.51.100.7:5062 SIP/2.0",
                                                      b"OPTIONS tel:+15551234 SIP/2.0"))
        self.failureResultOf(self.stack.send_request(tel, Address("tls", "198.51.100.7", 5061)), ResolutionError)
        self.assertEqual(self.reactor.tcpClients, [])
        self.finish()

    def test_tcp_request_is_not_retransmitted(self):
        self.stack.add_stream_listener(Address("tcp", LOCAL[0], 5060))
        d = self.stack.send_request(outgoing(), Address("tcp", "198.51.100.7", 5060))
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("198.51.100.7", 5060))
        protocol = factory.buildProtocol(None)
        transport = StringTransport(hostAddress=IPv4Address("TCP", LOCAL[0], 41000),
                                    peerAddress=IPv4Address("TCP", "198.51.100.7", 5060))
        protocol.makeConnection(transport)
        request = parse_message(transport.value())
        via = request.top_via
        self.assertEqual((via.transport, via.host, via.port), ("TCP", LOCAL[0], 5060))
        self.assertFalse(via.rport_requested)
        transport.clear()
        self.reactor.advance(32 * T1)
        self.assertEqual(transport.value(), b"", "no retransmission over TCP")
        protocol.dataReceived(bytes(make_response(request, 200, to_tag="x")))
        self.assertEqual(self.successResultOf(d).status, 200)
        # A second request reuses the connection.
        d2 = self.stack.send_request(outgoing(call_id="out-2"), Address("tcp", "198.51.100.7", 5060))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        second = parse_message(transport.value())
        self.assertEqual(second.call_id, "out-2")
        protocol.dataReceived(bytes(make_response(second, 200, to_tag="x")))
        self.successResultOf(d2)
        self.finish()

    def test_tcp_timeout_without_retransmissions(self):
        d = self.stack.send_request(outgoing(), Address("tcp", "198.51.100.7", 5060))
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 5060))
        protocol.makeConnection(transport)
        sent = transport.value()
        self.reactor.advance(64 * T1 - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.failureResultOf(d, TransactionTimeout)
        self.assertEqual(transport.value(), sent)
        self.finish()

    def test_connection_lost_fails_the_transaction_at_once(self):
        d = self.stack.send_request(outgoing(), Address("tcp", "198.51.100.7", 5060))
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 5060)))
        self.assertEqual(len(self.stack.pool), 1)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.failureResultOf(d, TransportError)
        self.assertEqual(len(self.stack.pool), 0)
        self.assertEqual(self.stack._client, {})
        self.finish()

    def test_request_back_on_an_incoming_connection(self):
        connection, transport = self.stream(peer=("198.51.100.7", 40000))
        d = self.stack.send_request(outgoing(), Address("tcp", "198.51.100.7", 40000))
        self.assertEqual(self.reactor.tcpClients, [], "the incoming connection is reused")
        request = parse_message(transport.value())
        connection.dataReceived(bytes(make_response(request, 200, to_tag="x")))
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()


class FailoverTests(StackTestCase):
    def test_next_target_on_transport_error_timeout_and_503(self):
        self.udp.unreachable.add("203.0.113.1")
        self.resolver.targets = [
            Address("udp", "203.0.113.1", 5060),  # sendto() fails
            Address("udp", "203.0.113.2", 5060),  # never answers
            Address("tcp", "203.0.113.3", 5060),  # connection refused
            Address("udp", "203.0.113.4", 5060),  # 503
            Address("udp", "203.0.113.5", 5060),  # 200
        ]
        d = self.stack.send_request(outgoing())
        [(silent, addr)] = self.sent()
        self.assertEqual(addr, ("203.0.113.2", 5060))
        self.reactor.advance(64 * T1)
        self.assertNoResult(d)
        retransmissions = self.sent()
        self.assertTrue(retransmissions and all(a == ("203.0.113.2", 5060) for _, a in retransmissions))
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        [(busy, addr)] = self.sent()
        self.assertEqual(addr, ("203.0.113.4", 5060))
        self.answer(busy, 503)
        [(good, addr)] = self.sent()
        self.assertEqual(addr, ("203.0.113.5", 5060))
        branches = {silent.top_via.branch, busy.top_via.branch, good.top_via.branch}
        self.assertEqual(len(branches), 3, "a fresh branch for every target")
        self.assertEqual(len(good.via), 1)
        self.answer(good, 200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.finish()

    def test_last_error_when_every_target_fails(self):
        self.udp.unreachable.update({"203.0.113.1", "203.0.113.2"})
        self.resolver.targets = [Address("udp", "203.0.113.1", 5060), Address("udp", "203.0.113.2", 5060)]
        failure = self.failureResultOf(self.stack.send_request(outgoing()), TransportError)
        self.assertIn("203.0.113.2", str(failure.value))
        self.finish()

    def test_503_from_the_last_target_is_the_answer(self):
        self.resolver.targets = [Address("udp", "203.0.113.4", 5060)]
        d = self.stack.send_request(outgoing())
        [(request, _)] = self.sent()
        self.answer(request, 503)
        self.assertEqual(self.successResultOf(d).status, 503)
        self.finish()

    def test_no_failover_on_other_errors(self):
        self.resolver.targets = [Address("udp", "203.0.113.4", 5060), Address("udp", "203.0.113.5", 5060)]
        d = self.stack.send_request(outgoing())
        [(request, _)] = self.sent()
        self.answer(request, 486)
        self.assertEqual(self.successResultOf(d).status, 486)
        self.assertEqual(self.sent(), [])
        self.finish()

    def test_no_target(self):
        self.failureResultOf(self.stack.send_request(outgoing()), TransportError)


class OnFinalTests(StackTestCase):
    """``start_request(on_final=...)``: the outcome as one plain call instead of a Deferred."""

    def start(self, target=None, **kwargs):
        outcomes = []
        handle = self.stack.start_request(outgoing(), target if target is not None else Address("udp", *PEER),
                                          on_final=lambda outcome, request: outcomes.append((outcome, request)),
                                          **kwargs)
        return handle, outcomes

    def test_final_response_and_the_handle(self):
        handle, outcomes = self.start(t2=T1)
        self.assertIsNone(handle.deferred)
        [(request, _)] = self.sent()
        self.assertEqual(handle.sent.top_via.branch, request.top_via.branch)
        self.receive(bytes(make_response(request, 100)))
        self.assertEqual(outcomes, [])
        self.answer(request, 200)
        [(response, given)] = outcomes
        self.assertEqual(response.status, 200)
        self.assertIs(given, handle)
        self.assertEqual(handle.origin.source, Address("udp", *PEER))
        self.answer(request, 200)  # a retransmission: absorbed, not told again
        self.assertEqual(len(outcomes), 1)
        self.assertEqual(self.stack.client_outcomes[("OPTIONS", "2xx")], 1)
        self.finish()

    def test_an_accepted_invite_does_not_keep_the_handle(self):
        """RFC 6026 7.2: the INVITE transaction stays 64*T1 after its 2xx (Timer M), for
        retransmitted 2xx; the handle (and the request sent, a proxy's copy of the INVITE)
        is the caller's from the final response on, so thousands of calls ending at once do
        not keep theirs."""
        outcomes = []
        handle = self.stack.start_request(outgoing(method="INVITE"), Address("udp", *PEER),
                                          on_provisional=outcomes.append,
                                          on_final=lambda outcome, request: outcomes.append((outcome, request)))
        [(request, _)] = self.sent()
        self.answer(request, 200)
        [(response, given)] = outcomes
        self.assertEqual((response.status, given), (200, handle))
        [call] = self.stack._client.values()
        self.assertIsNone(call.handle)
        self.assertIsNone(call.deferred.handle)
        self.answer(request, 200)  # retransmitted: still the caller's, through on_provisional
        self.assertEqual([r.status for r in outcomes[1:]], [200])
        self.reactor.advance(64 * T1)
        self.assertEqual(self.stack._client, {})

    def test_timeout_is_a_failure(self):
        handle, outcomes = self.start()
        self.reactor.advance(64 * T1)
        [(failure, given)] = outcomes
        self.assertIsInstance(failure, Failure)
        failure.trap(TransactionTimeout)
        self.assertIs(given, handle)
        self.finish()

    def test_unknown_source_socket_fails_at_once(self):
        _, outcomes = self.start(source=Address("udp", "192.0.2.99", 5060))
        [(failure, _)] = outcomes
        failure.trap(TransportError)
        self.assertEqual(self.sent(), [])
        self.finish()

    def test_a_resolved_next_hop_is_told_the_same_way(self):
        self.resolver.targets = [Address("udp", *PEER)]
        outcomes = []
        handle = self.stack.start_request(outgoing(), on_final=lambda outcome, request: outcomes.append(
            (outcome, request)))
        self.assertIsNone(handle.deferred)
        [(request, _)] = self.sent()
        self.answer(request, 486)
        [(response, given)] = outcomes
        self.assertEqual((response.status, given), (486, handle))
        self.finish()

    def test_an_ip_address_next_hop_is_sent_to_at_once(self):
        self.stack.resolver = TargetResolver(self.reactor, dns_resolver=object())  # any lookup would fail
        outcomes = []
        handle = self.stack.start_request(outgoing(), parse_uri(f"sip:{PEER[0]}:{PEER[1]}"),
                                          on_final=lambda outcome, request: outcomes.append(outcome))
        [(request, address)] = self.sent()
        self.assertEqual((address, handle.sent_to), (PEER, Address("udp", *PEER)))
        self.answer(request, 200)
        self.assertEqual([outcome.status for outcome in outcomes], [200])
        self.finish()

    def test_an_unreachable_ip_address_next_hop_fails_and_is_logged(self):
        self.stack.resolver = TargetResolver(self.reactor, dns_resolver=object())
        self.udp.unreachable.add("203.0.113.9")
        outcomes = []
        with capturedLogs() as events:
            self.stack.start_request(outgoing(), parse_uri("sip:203.0.113.9"),
                                     on_final=lambda outcome, request: outcomes.append(outcome))
        [failure] = outcomes
        failure.trap(TransportError)
        self.assertTrue(any("failed" in (event.get("log_format") or "") and event.get("method") == "OPTIONS"
                            for event in events))
        self.finish()

    def test_its_own_timeout(self):
        _, outcomes = self.start(timeout=2.0)
        self.reactor.advance(1.9)
        self.assertEqual(outcomes, [])
        self.reactor.advance(0.1)
        [(failure, _)] = outcomes
        failure.trap(TransactionTimeout)
        self.assertIn("within 2 s", str(failure.value))
        self.finish()

    def test_its_timeout_goes_with_the_final_response(self):
        def timeouts():
            return [call for call in self.reactor.getDelayedCalls() if call.func == self.stack._final_response_timeout]

        _, outcomes = self.start(timeout=2.0)
        self.assertEqual(len(timeouts()), 1)
        [(request, _)] = self.sent()
        self.answer(request, 200)
        self.assertEqual(timeouts(), [])
        self.reactor.advance(2.0)
        self.assertEqual([outcome.status for outcome, _ in outcomes], [200])
        self.finish()

    def test_on_final_is_let_go_once_told(self):
        class Consumer:
            def __call__(self, outcome, request):
                pass

        consumer = Consumer()
        gone = weakref.ref(consumer)
        self.stack.start_request(outgoing(), Address("udp", *PEER), on_final=consumer)
        del consumer
        self.assertIsNotNone(gone())
        [(request, _)] = self.sent()
        self.answer(request, 200)
        self.assertIsNone(gone(), "what on_final holds (a proxied request) is freed without the collector")
        self.finish()

    def test_a_raising_on_final_of_a_resolved_next_hop_is_logged_too(self):
        self.resolver.targets = [Address("udp", *PEER)]

        def broken(outcome, request):
            raise RuntimeError("consumer bug")

        self.stack.start_request(outgoing(), on_final=broken)
        [(request, _)] = self.sent()
        with capturedLogs() as events:
            self.answer(request, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("on_final" in (event.get("log_format") or "") for event in events))
        self.finish()

    def test_udp_target_now(self):
        self.stack.resolver = TargetResolver(self.reactor, dns_resolver=object())  # any lookup would fail
        now = self.stack.udp_target_now
        self.assertEqual(now(outgoing(), Address("udp", *PEER)), Address("udp", *PEER))
        self.assertIsNone(now(outgoing(), Address("tcp", *PEER)))
        self.assertEqual(now(outgoing(), parse_uri("sip:192.0.2.7:5070")), Address("udp", "192.0.2.7", 5070))
        self.assertEqual(now(outgoing("sip:uas@198.51.100.7:5062")), Address("udp", "198.51.100.7", 5062))
        self.assertIsNone(now(outgoing(), parse_uri("sip:192.0.2.7;transport=tcp")))
        self.assertIsNone(now(outgoing(), parse_uri("sip:proxy.example.com")), "a name is resolved")
        self.assertIsNone(now(outgoing(), parse_uri("sips:192.0.2.7;transport=udp")), "refused where resolved")
        self.assertIsNone(now(outgoing("tel:+15551234")), "refused where resolved")

    def test_a_raising_on_final_is_logged_and_the_stack_goes_on(self):
        def broken(outcome, request):
            raise RuntimeError("consumer bug")

        self.stack.start_request(outgoing(call_id="broken"), Address("udp", *PEER), on_final=broken)
        _, outcomes = self.start()
        [first, second] = [request for request, _ in self.sent()]
        with capturedLogs() as events:
            self.answer(first, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("on_final" in (event.get("log_format") or "") for event in events))
        self.answer(second, 200)
        self.assertEqual(outcomes[0][0].status, 200)
        self.finish()

    def test_stop_waits_for_it_then_fails_it(self):
        _, outcomes = self.start()
        stopped = self.stack.stop(grace=2.0)
        self.assertNoResult(stopped)
        _, refused = self.start()
        refused[0][0].trap(TransportError)
        self.reactor.advance(2.0)
        [(failure, _)] = outcomes
        failure.trap(TransportError)
        self.assertIn("stopped", str(failure.value))
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_ends_when_it_is_answered(self):
        _, outcomes = self.start()
        [(request, _)] = self.sent()
        stopped = self.stack.stop()
        self.assertNoResult(stopped)
        self.answer(request, 200)
        self.assertEqual(outcomes[0][0].status, 200)
        self.successResultOf(stopped)


class StopTests(StackTestCase):
    def test_stop_waits_for_in_flight_transactions_then_fails_the_rest(self):
        answered = self.stack.send_request(outgoing(call_id="a"), Address("udp", *PEER))
        silent = self.stack.send_request(outgoing(call_id="b"), Address("udp", "203.0.113.2", 5060))
        first = [r for r, addr in self.sent() if r.call_id == "a"][0]
        stopped = self.stack.stop(grace=2.0)
        self.failureResultOf(self.stack.send_request(outgoing(), Address("udp", *PEER)), TransportError)
        self.reactor.advance(1.0)
        self.answer(first, 200)
        self.assertEqual(self.successResultOf(answered).status, 200)
        self.assertNoResult(stopped)
        self.assertNoResult(silent)
        self.reactor.advance(1.0)
        failure = self.failureResultOf(silent, TransportError)
        self.assertIn("stopped", str(failure.value))
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.stack._client, {})

    def test_stop_ends_when_the_last_transaction_does(self):
        d = self.stack.send_request(outgoing(), Address("udp", *PEER))
        [(request, _)] = self.sent()
        stopped = self.stack.stop()
        self.assertNoResult(stopped)
        self.answer(request, 200)
        self.successResultOf(d)
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_with_nothing_pending(self):
        self.successResultOf(self.stack.stop())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_no_failover_while_stopping(self):
        self.resolver.targets = [Address("udp", "203.0.113.2", 5060), Address("udp", "203.0.113.3", 5060)]
        d = self.stack.send_request(outgoing())
        self.sent()
        stopped = self.stack.stop(grace=10 * 64 * T1)
        self.reactor.advance(64 * T1)  # the first target times out while stopping
        self.failureResultOf(d, TransportError, TransactionTimeout)
        self.assertEqual([addr for _, addr in self.sent() if addr[0] == "203.0.113.3"], [])
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connection_completing_after_stop(self):
        d = self.stack.send_request(outgoing(), Address("tcp", "198.51.100.7", 5060))
        self.successResultOf(self.stack.stop())
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 5060))
        protocol.makeConnection(transport)
        self.failureResultOf(d, TransportError)
        self.assertEqual(transport.value(), b"", "nothing is sent once stopped")
        self.assertTrue(transport.disconnecting, "a connection made after stop() is closed")
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class ServerSideTests(StackTestCase):
    def capture(self, method="OPTIONS", respond=None):
        seen = []

        def handler(incoming):
            seen.append(incoming)
            if respond is not None:
                incoming.respond(respond)

        self.stack.set_handler(method, handler)
        return seen

    def test_options_answered_with_allow_accept_supported(self):
        self.receive(request_bytes())
        [(response, addr)] = self.sent()
        self.assertEqual(addr, PEER)
        self.assertEqual(response.status, 200)
        self.assertIn("OPTIONS", response.tokens("Allow"))
        self.assertEqual(response.headers.get("Accept"), "application/sdp")
        self.assertIn("Supported", response.headers)
        self.assertIsNotNone(response.to.tag, "RFC 3261 8.2.6.2: a UAS adds a To tag")
        self.assertEqual(response.call_id, "call-1")

    def test_received_and_rport_stamped(self):
        """RFC 3581 4: rport filled, received added; the response goes to both."""
        seen = self.capture(respond=200)
        self.receive(request_bytes(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKnat;rport"), source=PEER)
        [incoming] = seen
        via = incoming.request.top_via
        self.assertEqual((via.received, via.rport), (PEER[0], PEER[1]))
        self.assertEqual(incoming.source, Address("udp", *PEER))
        [(response, addr)] = self.sent()
        self.assertEqual(addr, PEER)
        self.assertEqual((response.top_via.received, response.top_via.rport), (PEER[0], PEER[1]))

    def test_received_without_rport(self):
        """RFC 3261 18.2.2: received address, sent-by port."""
        seen = self.capture(respond=200)
        self.receive(request_bytes(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKnat"), source=PEER)
        via = seen[0].request.top_via
        self.assertEqual((via.received, via.rport_requested), (PEER[0], False))
        [(_, addr)] = self.sent()
        self.assertEqual(addr, (PEER[0], 5070))

    def test_host_name_sent_by_gets_received(self):
        seen = self.capture(respond=200)
        self.receive(request_bytes(via="SIP/2.0/UDP client.example.com;branch=z9hG4bKname"), source=PEER)
        self.assertEqual(seen[0].request.top_via.received, PEER[0])
        [(_, addr)] = self.sent()
        self.assertEqual(addr, (PEER[0], 5060))

    def test_matching_sent_by_gets_no_received(self):
        seen = self.capture(respond=200)
        self.receive(request_bytes(via=f"SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bKsame"), source=PEER)
        self.assertNotIn("received", seen[0].request.top_via.params)
        [(_, addr)] = self.sent()
        self.assertEqual(addr, PEER)

    def test_stream_response_on_the_same_connection(self):
        seen = self.capture(respond=200)
        connection, transport = self.stream(peer=("198.51.100.7", 40000))
        connection.dataReceived(request_bytes(via="SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKtcp"))
        self.assertEqual(seen[0].source, Address("tcp", "198.51.100.7", 40000))
        self.assertEqual(seen[0].request.top_via.received, "198.51.100.7")
        response = parse_message(transport.value())
        self.assertEqual(response.status, 200)
        self.assertEqual(self.sent(), [], "nothing on UDP")

    def test_stream_closed_before_the_answer(self):
        """RFC 3261 18.2.2: a new connection to received and the sent-by port carries the response."""
        seen = self.capture()
        connection, transport = self.stream()
        connection.dataReceived(request_bytes(via="SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKgone"))
        connection.connectionLost(Failure(ConnectionRefusedError()))
        seen[0].respond(200)
        self.assertEqual(transport.value(), b"")
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("198.51.100.7", 5070))
        new_transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        factory.buildProtocol(None).makeConnection(new_transport)
        self.assertEqual(parse_message(new_transport.value()).status, 200)

    def test_stream_closed_and_no_new_connection(self):
        """When the new connection fails too, the transaction ends; nothing is raised to the TU."""
        seen = self.capture()
        connection, _ = self.stream()
        connection.dataReceived(request_bytes(via="SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKgone2"))
        connection.connectionLost(Failure(ConnectionRefusedError()))
        seen[0].respond(200)
        [(_, _, factory, _, connector)] = self.reactor.tcpClients
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertEqual(self.stack._server, {})

    def test_retransmitted_request_gets_the_same_response(self):
        seen = self.capture(respond=404)
        self.receive(request_bytes())
        self.receive(request_bytes())
        self.assertEqual(len(seen), 1)
        (first, _), (second, _) = self.sent()
        self.assertEqual(bytes(first), bytes(second))

    def test_unknown_method_501(self):
        self.receive(request_bytes(method="FOO"))
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 501)

    def test_known_unhandled_method_405_with_allow(self):
        self.capture("NOTIFY", respond=200)
        self.receive(request_bytes(method="MESSAGE"))
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 405)
        self.assertEqual(set(response.tokens("Allow")), {"ACK", "CANCEL", "NOTIFY", "OPTIONS"})

    def test_malformed_request_400_with_the_parser_reason(self):
        for extra, word in ((b"Max-Forwards: 300\r\n", "Max-Forwards"), (None, "To")):
            data = request_bytes(call_id=f"bad-{word}")
            if extra is not None:
                data = data.replace(b"Max-Forwards: 70\r\n", extra)
            else:
                data = data.replace(b"To: <sip:uas@192.0.2.1>", b"To: <sip:uas@192.0.2.1")
            self.receive(data)
            [(response, addr)] = self.sent()
            self.assertEqual((response.status, addr), (400, PEER))
            self.assertIn(word, response.reason)
            self.assertEqual(response.call_id, f"bad-{word}")

    def test_unparseable_datagram_gets_nothing_and_one_log_line(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.receive(b"\x16\x03\x01 not SIP at all\r\n\r\n")
        self.assertEqual(self.sent(), [])
        mine = [e for e in events if e.get("log_namespace") == "txuac.net.stack"]
        self.assertEqual(len(mine), 1, mine)
        self.assertIn("malformed", mine[0]["log_format"])

    def test_keepalives_ignored(self):
        self.receive(b"\r\n\r\n")
        self.receive(b"\r\n")
        self.assertEqual(self.sent(), [])

    def test_handler_error_500_and_the_stack_keeps_working(self):
        def broken(incoming):
            raise RuntimeError("TU bug")

        self.stack.set_handler("OPTIONS", broken)
        self.receive(request_bytes(call_id="c1"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 500)
        self.stack.set_handler("OPTIONS", None)
        self.receive(request_bytes(call_id="c2", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnext"))
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 200)

    def test_handler_error_after_answering_sends_no_500(self):
        def answers_then_fails(incoming):
            incoming.respond(202)
            raise RuntimeError("TU bug")

        self.stack.set_handler("NOTIFY", answers_then_fails)
        self.receive(request_bytes(method="NOTIFY"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual([r.status for r, _ in self.sent()], [202])

    def test_cancel_matches_the_invite(self):
        invites = self.capture("INVITE")
        invite = request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv1")
        self.receive(invite)
        [incoming] = invites
        ringing = incoming.respond(180)
        cancel = request_bytes(method="CANCEL", cseq="1 CANCEL",
                               via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv1")
        self.receive(cancel)
        sent = self.sent()
        self.assertEqual([(r.status, r.cseq.method) for r, _ in sent],
                         [(100, "INVITE"), (180, "INVITE"), (200, "CANCEL"), (487, "INVITE")])
        self.assertTrue(incoming.cancelled)
        tags = {r.to.tag for r, _ in sent if r.status != 100}
        self.assertEqual(tags, {ringing.to.tag}, "one To tag for the INVITE, its 487 and the CANCEL's 200")
        # The handler's own late answer is refused by the transaction; the ACK for the 487 ends it.
        incoming.respond(200)
        self.assertEqual(self.sent(), [])
        ack = request_bytes(method="ACK", cseq="1 ACK", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv1",
                            to=f"<sip:uas@192.0.2.1>;tag={ringing.to.tag}")
        self.receive(ack)
        self.assertEqual(self.sent(), [])
        self.receive(cancel)  # a retransmitted CANCEL gets its 200 again
        self.assertEqual([(r.status, r.cseq.method) for r, _ in self.sent()], [(200, "CANCEL")])
        self.assertEqual(len(invites), 1)

    def test_invite_gets_100_trying_unless_answered_at_once(self):
        """RFC 3261 17.2.1: a 100 (without To tag) when the handler has not answered."""
        self.capture("INVITE")
        self.receive(request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKslow"))
        [(trying, _)] = self.sent()
        self.assertEqual((trying.status, trying.to.tag), (100, None))
        self.stack.set_handler("INVITE", lambda incoming: incoming.respond(486))
        self.receive(request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKfast"))
        self.assertEqual([r.status for r, _ in self.sent()], [486])

    def test_cancel_after_the_final_response(self):
        invites = self.capture("INVITE", respond=486)
        self.receive(request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv2"))
        self.sent()
        self.receive(request_bytes(method="CANCEL", cseq="1 CANCEL",
                                   via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv2"))
        self.assertEqual([(r.status, r.cseq.method) for r, _ in self.sent()], [(200, "CANCEL")])
        self.assertFalse(invites[0].cancelled)

    def test_an_answered_transaction_keeps_the_bytes_of_its_response(self):
        """Until Timer H, J or L (32 s) a transaction only resends its final response: it
        keeps its bytes and status, not the Response."""
        self.capture("INVITE", respond=486)
        self.receive(request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv3"))
        [(final, _)] = self.sent()
        [(transaction, _, incoming)] = self.stack._server.values()
        self.assertEqual((transaction.last_response, transaction.last_status, transaction.answered),
                         (None, 486, True))
        self.receive(request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv3"))
        [(again, _)] = self.sent()
        self.assertEqual(bytes(again), bytes(final))
        self.receive(request_bytes(method="CANCEL", cseq="1 CANCEL",
                                   via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv3"))
        self.assertEqual([(r.status, r.cseq.method) for r, _ in self.sent()], [(200, "CANCEL")])
        self.assertFalse(incoming.cancelled)

    def test_an_answered_non_invite_keeps_where_its_answer_goes_not_its_request(self):
        """RFC 3261 17.2.2: until Timer J a non-INVITE transaction resends its final response
        to retransmitted requests; it keeps the channel to the address the answer went to
        (rport, RFC 3581 4) and lets the request and the IncomingRequest go."""
        seen = self.capture("MESSAGE", respond=200)
        message = request_bytes(method="MESSAGE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKmsg1;rport")
        self.receive(message, source=("203.0.113.20", 40000))  # behind a NAT: rport and received
        [(answer, to)] = self.sent()
        self.assertEqual(to, ("203.0.113.20", 40000))
        [(transaction, channel, incoming)] = self.stack._server.values()
        self.assertEqual((transaction.request, incoming, transaction.method), (None, None, "MESSAGE"))
        self.assertEqual(channel.peer, Address("udp", "203.0.113.20", 40000))
        self.receive(message, source=("203.0.113.20", 40000))
        [(again, to)] = self.sent()
        self.assertEqual((bytes(again), to), (bytes(answer), ("203.0.113.20", 40000)))
        self.assertEqual(len(seen), 1)
        self.reactor.advance(64 * T1)  # Timer J
        self.assertEqual(self.stack._server, {})

    def test_an_answered_invite_keeps_its_request(self):
        """A CANCEL or an ACK still finds the INVITE (and its To tag) until Timer H or L."""
        self.capture("INVITE", respond=486)
        self.receive(request_bytes(method="INVITE", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKinv4"))
        self.sent()
        [(transaction, _, incoming)] = self.stack._server.values()
        self.assertIs(transaction.request, incoming.request)

    def test_cancel_without_a_match_481(self):
        self.receive(request_bytes(method="CANCEL", cseq="1 CANCEL",
                                   via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnone"))
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 481)

    def test_ack_for_a_2xx_goes_to_the_handler(self):
        acks = self.capture("ACK")
        self.receive(request_bytes(method="ACK", cseq="1 ACK", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKack"))
        self.assertEqual(len(acks), 1)
        self.assertIsNone(acks[0].transaction)
        self.assertRaises(TransportError, acks[0].respond, 200)
        self.assertEqual(self.sent(), [])

    def test_server_transactions_end(self):
        self.receive(request_bytes())
        self.assertEqual(len(self.stack._server), 1)
        self.reactor.advance(64 * T1)  # Timer J
        self.assertEqual(self.stack._server, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_response_to_a_bad_via_address_is_dropped(self):
        """A Via maddr that is a host name cannot be sent to: logged, never raised."""
        self.receive(request_bytes(via="SIP/2.0/UDP 10.0.0.1;maddr=proxy.example.com;branch=z9hG4bKm"))
        self.assertEqual(self.sent(), [])
        self.receive(request_bytes(via="SIP/2.0/UDP 10.0.0.1;maddr=proxy.example.com;branch=z9hG4bKm2",
                                   extra="Max-Forwards: 1\r\n"))  # malformed: two Max-Forwards
        self.assertEqual(self.sent(), [])


class ProxyHookTests(StackTestCase):
    """The hooks a proxy needs (RFC 3261 16.10, 16.11, 16.2): CANCELs handed over,
    no automatic 100, ACKs for 2xx forwarded without a transaction."""

    INVITE_VIA = "SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKpx1"

    def setUp(self):
        super().setUp()
        self.invites = []
        self.cancels = []
        self.keep_unmatched = None
        self.stack.set_handler("INVITE", self.invites.append)
        self.stack.set_cancel_handler(self.on_cancel)

    def on_cancel(self, cancel, invite):
        self.cancels.append((cancel, invite))
        return self.keep_unmatched

    def invite(self, via=INVITE_VIA, call_id="call-1"):
        self.receive(request_bytes(method="INVITE", via=via, call_id=call_id))
        return self.invites[-1]

    def cancel(self, via=INVITE_VIA, call_id="call-1"):
        self.receive(request_bytes(method="CANCEL", cseq="1 CANCEL", via=via, call_id=call_id))

    def statuses(self):
        return [(r.status, r.cseq.method) for r, _ in self.sent()]

    def test_cancel_handed_over_and_the_487_left_to_the_handler(self):
        incoming = self.invite()
        self.assertEqual(self.statuses(), [(100, "INVITE")])
        self.cancel()
        [(cancel, invite)] = self.cancels
        self.assertIs(invite, incoming)
        self.assertTrue(invite.cancelled)
        self.assertEqual(cancel.request.method, "CANCEL")
        [(ok, addr)] = self.sent()
        self.assertEqual((ok.status, ok.cseq.method, addr), (200, "CANCEL", PEER))
        self.assertEqual(ok.to.tag, incoming.to_tag, "RFC 3261 9.2: the INVITE's To tag")
        self.reactor.advance(T1)
        self.assertEqual(self.sent(), [], "no 487 from the stack")
        # The 487 relayed (or made) by the proxy reaches the wire through the INVITE's transaction.
        incoming.respond(487)
        [(final, addr)] = self.sent()
        self.assertEqual((final.status, final.cseq.method, final.to.tag, addr), (487, "INVITE", ok.to.tag, PEER))

    def test_cancel_finds_its_own_invite_among_several(self):
        first = self.invite()
        second = self.invite(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKpx2", call_id="call-2")
        self.sent()
        self.cancel(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKpx2", call_id="call-2")
        [(_, invite)] = self.cancels
        self.assertIs(invite, second)
        self.assertEqual((first.cancelled, second.cancelled), (False, True))

    def test_retransmitted_cancel_absorbed_by_its_transaction(self):
        self.invite()
        self.cancel()
        self.cancel()
        self.assertEqual(len(self.cancels), 1)
        self.assertEqual(self.statuses(), [(100, "INVITE"), (200, "CANCEL"), (200, "CANCEL")])

    def test_cancel_after_the_final_response_only_answered(self):
        incoming = self.invite()
        incoming.respond(486)
        self.sent()
        self.cancel()
        self.assertEqual(self.statuses(), [(200, "CANCEL")])
        self.assertEqual(self.cancels, [])
        self.assertFalse(incoming.cancelled)

    def test_unmatched_cancel_handed_over_then_481(self):
        self.cancel(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnothing")
        [(cancel, invite)] = self.cancels
        self.assertIsNone(invite)
        self.assertEqual(self.statuses(), [(481, "CANCEL")])

    def test_unmatched_cancel_kept_by_the_handler(self):
        """16.10: the proxy may forward it; it answers the CANCEL itself later."""
        self.keep_unmatched = True
        self.cancel(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnothing")
        self.assertEqual(self.sent(), [])
        [(cancel, _)] = self.cancels
        cancel.respond(200)
        self.assertEqual(self.statuses(), [(200, "CANCEL")])

    def test_unmatched_cancel_answered_by_the_handler_gets_no_481(self):
        def answers(cancel, invite):
            cancel.respond(404)

        self.stack.set_cancel_handler(answers)
        self.cancel(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnothing")
        self.assertEqual(self.statuses(), [(404, "CANCEL")])

    def test_without_a_handler_again_the_stack_answers(self):
        self.stack.set_cancel_handler(None)
        self.cancel(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnothing")
        self.assertEqual(self.statuses(), [(481, "CANCEL")])
        incoming = self.invite()
        self.cancel()
        self.assertEqual(self.statuses(), [(100, "INVITE"), (200, "CANCEL"), (487, "INVITE")])
        self.assertTrue(incoming.cancelled)
        self.assertEqual(self.cancels, [])

    def test_failing_cancel_handler_falls_back_to_the_487(self):
        def broken(cancel, invite):
            raise RuntimeError("routing script bug")

        self.stack.set_cancel_handler(broken)
        self.invite()
        self.cancel()
        self.cancel(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnothing")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(self.statuses(), [(100, "INVITE"), (200, "CANCEL"), (487, "INVITE"), (481, "CANCEL")])

    def test_suppressed_trying(self):
        """16.2: the proxy sends its 100 when it decides to; the stack sends none."""
        def proxy(incoming):
            incoming.suppress_trying()
            self.invites.append(incoming)

        self.stack.set_handler("INVITE", proxy)
        incoming = self.invite()
        self.assertEqual(self.sent(), [])
        self.reactor.advance(T1)
        self.assertEqual(self.sent(), [])
        incoming.respond(100)
        incoming.respond(180)
        self.assertEqual(self.statuses(), [(100, "INVITE"), (180, "INVITE")])

    def test_handler_own_100_is_the_only_one(self):
        def proxy(incoming):
            self.invites.append(incoming)
            incoming.respond(100, headers=[("X-Proxy", "1")])

        self.stack.set_handler("INVITE", proxy)
        self.invite()
        [(trying, _)] = self.sent()
        self.assertEqual((trying.status, trying.headers.get("X-Proxy")), (100, "1"))

    def test_ack_for_a_non_2xx_absorbed_by_the_invite_transaction(self):
        """17.2.1: the ACK for a 487 stops Timer G and never reaches the ACK handler."""
        acks = []
        self.stack.set_handler("ACK", acks.append)
        unacked = self.invite(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKpxA", call_id="call-a")
        unacked.respond(486)
        incoming = self.invite()
        incoming.respond(486)
        self.sent()
        self.receive(request_bytes(method="ACK", cseq="1 ACK", via=self.INVITE_VIA,
                                   to=f"<sip:uas@192.0.2.1>;tag={incoming.to_tag}"))
        self.assertEqual(acks, [])
        self.reactor.advance(T1)  # Timer G: only the unacknowledged 486 comes again
        [(again, _)] = self.sent()
        self.assertEqual((again.status, again.call_id), (486, "call-a"))

    def test_ack_for_a_2xx_forwarded_statelessly(self):
        """16.11: the ACK handler forwards the ACK with its own Via; no transaction."""
        downstream = Address("udp", "203.0.113.5", 5060)
        results = []

        def forward(ack):
            self.assertIsNone(ack.transaction)
            request = ack.request.copy()
            request.headers.prepend("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKslack1")
            request.uri = parse_uri("sip:callee@203.0.113.5")
            results.append(self.stack.send_stateless(request, downstream))

        self.stack.set_handler("ACK", forward)
        self.receive(request_bytes(method="ACK", cseq="1 ACK", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKack2",
                                   to="<sip:uas@192.0.2.1>;tag=callee"))
        self.assertIsNone(self.successResultOf(results[0]))
        [(ack, addr)] = self.sent()
        self.assertEqual(addr, (downstream.host, downstream.port))
        self.assertEqual((ack.method, str(ack.uri)), ("ACK", "sip:callee@203.0.113.5"))
        self.assertEqual([v.branch for v in ack.via], ["z9hG4bKslack1", "z9hG4bKack2"])
        self.assertEqual(self.stack._server, {})
        self.reactor.advance(64 * T1)
        self.assertEqual(self.sent(), [], "never retransmitted")

    def test_send_stateless_failure(self):
        self.udp.unreachable.add("203.0.113.9")
        request = parse_message(request_bytes(method="ACK", cseq="1 ACK"))
        self.failureResultOf(self.stack.send_stateless(request, Address("udp", "203.0.113.9", 5060)), TransportError)
        self.stack.stop(grace=0)
        self.failureResultOf(self.stack.send_stateless(request, Address("udp", *PEER)), TransportError)

    def test_send_stateless_udp_raises_at_once(self):
        request = parse_message(request_bytes(method="ACK", cseq="1 ACK").replace(b"Content-Length: 0\r\n", b""))
        self.stack.send_stateless_udp(request, Address("udp", *PEER))
        [(sent, address)] = self.sent()
        self.assertEqual((sent.method, sent.headers.get("Content-Length"), address), ("ACK", "0", PEER))
        self.assertNotIn("Content-Length", request.headers)
        self.udp.unreachable.add("203.0.113.9")
        self.assertRaises(TransportError, self.stack.send_stateless_udp, request, Address("udp", "203.0.113.9", 5060))
        self.stack.stop(grace=0)
        self.assertRaises(TransportError, self.stack.send_stateless_udp, request, Address("udp", *PEER))

    def test_send_stateless_on_a_stream(self):
        """Over TCP the request waits for the connection; Content-Length added on a copy."""
        request = parse_message(request_bytes(method="ACK", cseq="1 ACK").replace(b"Content-Length: 0\r\n", b""))
        d = self.stack.send_stateless(request, Address("tcp", "203.0.113.5", 5060))
        self.assertNoResult(d)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("203.0.113.5", 5060))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        factory.buildProtocol(None).makeConnection(transport)
        self.assertIsNone(self.successResultOf(d))
        sent = parse_message(transport.value())
        self.assertEqual((sent.method, sent.headers.get("Content-Length")), ("ACK", "0"))
        self.assertNotIn("Content-Length", request.headers)
        self.assertEqual(self.sent(), [])
        self.finish()


class ClientRequestTests(StackTestCase):
    """start_request: send_request's Deferred, and the branch and target the request went with."""

    def test_handle_knows_branch_and_target(self):
        original = outgoing(method="INVITE")
        handle = self.stack.start_request(original, Address("udp", *PEER))
        [(sent, addr)] = self.sent()
        self.assertEqual(addr, PEER)
        self.assertEqual(handle.sent_to, Address("udp", *PEER))
        self.assertEqual(handle.branch, sent.top_via.branch)
        self.assertEqual(str(handle.sent.top_via), str(sent.top_via))
        self.assertNotIn("Via", original.headers, "the caller's request is not modified")
        self.answer(sent, 486)
        self.assertEqual(self.successResultOf(handle.deferred).status, 486)
        self.finish()

    def test_cancel_built_from_the_handle_matches_the_transaction(self):
        """RFC 3261 9.1: the CANCEL carries the INVITE's branch, sent with keep_via to the same place."""
        handle = self.stack.start_request(outgoing(method="INVITE"), Address("udp", *PEER))
        [(invite, _)] = self.sent()
        self.answer(invite, 180)
        cancel = handle.sent.copy()
        cancel.method = "CANCEL"
        cancel.headers.set("CSeq", f"{handle.sent.cseq.number} CANCEL")
        d = self.stack.send_request(cancel, handle.sent_to, keep_via=True)
        [(sent_cancel, addr)] = self.sent()
        self.assertEqual((sent_cancel.top_via.branch, addr), (handle.branch, PEER))
        self.answer(sent_cancel, 200)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.answer(invite, 487)
        self.assertEqual(self.successResultOf(handle.deferred).status, 487)
        self.finish()

    def test_failover_moves_the_handle_to_the_next_target(self):
        self.resolver.targets = [Address("udp", "203.0.113.4", 5060), Address("udp", "203.0.113.5", 5060)]
        handle = self.stack.start_request(outgoing())
        [(busy, addr)] = self.sent()
        self.assertEqual((handle.sent_to, handle.branch), (Address("udp", "203.0.113.4", 5060), busy.top_via.branch))
        self.answer(busy, 503)
        [(good, addr)] = self.sent()
        self.assertEqual((handle.sent_to, handle.branch), (Address("udp", "203.0.113.5", 5060), good.top_via.branch))
        self.answer(good, 200)
        self.assertEqual(self.successResultOf(handle.deferred).status, 200)
        self.finish()

    def test_nothing_known_before_a_transaction_starts(self):
        self.resolver.targets = []
        handle = self.stack.start_request(outgoing())
        self.failureResultOf(handle.deferred, TransportError)
        self.assertIsNone(handle.sent)
        self.assertIsNone(handle.sent_to)
        self.assertIsNone(handle.branch)
        self.finish()
