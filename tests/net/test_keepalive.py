"""RFC 5626 CRLF keep-alives on the stream connections we open, and lost-connection observers.

Same fakes as tests/net/test_stack.py (MemoryReactorClock, StringTransport), whose
StackTestCase sets the stack up.
"""

from __future__ import annotations

import random

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.support.stack_harness import StackTestCase, outgoing
from txuac.errors import TransportError
from txuac.net.transports import PONG_TIMEOUT
from txuac.sip import make_response, parse_message
from txuac.sip.framing import PING_BYTES, PONG_BYTES
from txuac.sip.address import Address

INTERVAL = 30.0
REGISTRAR = ("198.51.100.7", 5060)
PEER = Address("tcp", *REGISTRAR)


class KeepAliveTestCase(StackTestCase):
    def setUp(self):
        super().setUp()
        self.stack.pool.keepalive_interval = INTERVAL
        self.stack.pool.rng = random.Random(1)
        self.lost: list[Address] = []
        self.stack.add_connection_lost_observer(self.lost.append)

    def connect(self, outgoing_=True):
        connection, transport = self.stream(peer=REGISTRAR, outgoing_=outgoing_)
        return connection, transport

    def pings(self, transport: StringTransport) -> int:
        """How many pings were written since the last call."""
        count = transport.value().count(PING_BYTES)
        transport.clear()
        return count

    def advance_to_ping(self, transport: StringTransport) -> float:
        """Advance one second at a time until a ping goes out; return the time it took."""
        start = self.reactor.seconds()
        for _ in range(int(INTERVAL) + 2):
            self.reactor.advance(1)
            if self.pings(transport):
                return self.reactor.seconds() - start
        self.fail("no ping within the interval")


class PingTests(KeepAliveTestCase):
    def test_ping_in_80_to_100_percent_of_the_interval(self):
        delays = []
        for seed in range(20):
            self.stack.pool.rng = random.Random(seed)
            connection, transport = self.connect()
            delays.append(self.advance_to_ping(transport))
            connection.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(all(0.8 * INTERVAL <= d <= INTERVAL + 1 for d in delays), delays)
        self.assertGreater(len(set(delays)), 1, "randomised (RFC 5626 4.4.1)")
        self.finish()

    def test_no_pings_when_off(self):
        self.stack.pool.keepalive_interval = 0
        _, transport = self.connect()
        self.reactor.advance(10 * INTERVAL)
        self.assertEqual(self.pings(transport), 0)
        self.finish()

    def test_no_pings_on_connections_the_peer_opened(self):
        _, transport = self.connect(outgoing_=False)
        self.reactor.advance(INTERVAL)
        self.assertEqual(self.pings(transport), 0)
        self.finish()

    def test_answered_pings_keep_the_connection(self):
        connection, transport = self.connect()
        for _ in range(5):
            self.advance_to_ping(transport)
            connection.dataReceived(PONG_BYTES)
        self.reactor.advance(PONG_TIMEOUT + 1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.lost, [])
        self.finish()

    def test_pong_split_across_reads(self):
        connection, transport = self.connect()
        self.advance_to_ping(transport)
        connection.dataReceived(b"\r")
        connection.dataReceived(b"\n")
        self.advance_to_ping(transport)
        self.reactor.advance(PONG_TIMEOUT + 0.5)
        self.assertTrue(transport.disconnecting, "the pong made the peer one that answers")
        self.finish()

    def test_unanswered_ping_of_an_answering_peer_closes_the_connection(self):
        connection, transport = self.connect()
        self.advance_to_ping(transport)
        connection.dataReceived(PONG_BYTES)
        self.advance_to_ping(transport)
        self.reactor.advance(PONG_TIMEOUT - 0.5)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.disconnected, "aborted, not a graceful close waiting on a dead peer")
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.lost, [PEER], "a dead flow is a lost connection")
        self.assertEqual(len(self.stack.pool), 0)
        self.finish()

    def test_messages_are_not_pongs(self):
        """Only a CRLF answers a ping: a response that happens to arrive does not."""
        connection, transport = self.connect()
        self.advance_to_ping(transport)
        connection.dataReceived(PONG_BYTES)
        d = self.stack.send_request(outgoing(), PEER)
        request = transport.value()
        transport.clear()
        self.advance_to_ping(transport)
        connection.dataReceived(bytes(make_response(parse_message(request), 200, to_tag="x")))
        self.successResultOf(d)
        self.reactor.advance(PONG_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.finish()

    def test_peer_that_never_answers_is_pinged_but_not_closed(self):
        """Servers need not answer pings (RFC 5626 is optional): pings still refresh NAT
        bindings, and a peer never seen to answer is not declared dead."""
        _, transport = self.connect()
        pings = 0
        for _ in range(4):
            self.advance_to_ping(transport)
            pings += 1
            self.reactor.advance(PONG_TIMEOUT + 1)
        self.assertEqual(pings, 4)
        self.assertFalse(transport.disconnecting)
        self.finish()

    def test_a_new_connection_to_an_answering_peer_gets_the_deadline_at_once(self):
        first, transport = self.connect()
        self.advance_to_ping(transport)
        first.dataReceived(PONG_BYTES)
        first.connectionLost(Failure(ConnectionLost()))
        second, transport = self.connect()
        self.advance_to_ping(transport)
        self.reactor.advance(PONG_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.finish()

    def test_flow_timer_overrides_the_interval(self):
        """RFC 5626 4.4.1: with a Flow-Timer, pings at 80-100% of it; the registrar supports
        outbound, so a missing pong fails the flow from the first ping."""
        self.stack.pool.set_keepalive_interval(PEER, 10)
        connection, transport = self.connect()
        delay = self.advance_to_ping(transport)
        self.assertTrue(8 <= delay <= 10, delay)
        self.reactor.advance(PONG_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(ConnectionLost()))
        self.stack.pool.set_keepalive_interval(PEER, None)
        _, transport = self.connect()
        self.assertGreaterEqual(self.advance_to_ping(transport), 0.8 * INTERVAL)
        self.finish()

    def test_flow_timer_turns_pings_on_for_an_open_connection(self):
        self.stack.pool.keepalive_interval = 0
        _, transport = self.connect()
        self.reactor.advance(INTERVAL)
        self.assertEqual(self.pings(transport), 0)
        self.stack.pool.set_keepalive_interval(PEER, 20)
        self.assertLessEqual(self.advance_to_ping(transport), 20)
        self.finish()

    def test_timers_end_with_the_connection(self):
        connection, transport = self.connect()
        self.advance_to_ping(transport)
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])
        self.finish()


class LostObserverTests(KeepAliveTestCase):
    def test_peer_closing_is_reported_after_the_transactions_fail(self):
        order = []
        d = self.stack.send_request(outgoing(), PEER)
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", *REGISTRAR)))
        d.addErrback(lambda f: order.append(("failed", f.check(TransportError))))
        self.stack.add_connection_lost_observer(lambda peer: order.append(("lost", peer)))
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(order, [("failed", TransportError), ("lost", PEER)])
        self.assertEqual(self.lost, [PEER])
        self.finish()

    def test_idle_close_is_quiet(self):
        connection, transport = self.connect(outgoing_=False)
        self.reactor.advance(self.stack.pool.idle_timeout)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.lost, [])
        self.finish()

    def test_shutdown_is_quiet(self):
        connection, transport = self.connect()
        d = self.stack.stop(grace=0)
        self.reactor.advance(0)
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.lost, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_failing_observer_does_not_stop_the_others(self):
        def broken(peer):
            raise RuntimeError("observer bug")

        self.stack.pool.lost_observers.insert(0, broken)
        connection, _ = self.connect()
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.lost, [PEER])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.stack.remove_connection_lost_observer(broken)
        self.assertEqual(len(self.stack.pool.lost_observers), 1)
        self.finish()
