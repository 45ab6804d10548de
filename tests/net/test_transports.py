"""txuac.net.transports: UDP sockets, TCP/TLS connections, the channels the stack answers on
and the pool that reuses connections. Same fakes as tests/net/test_stack.py
(MemoryReactorClock, FakeDatagramTransport, StringTransport); the RFC 5626 keep-alives of
the connections are in tests/net/test_keepalive.py."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.support.stack_harness import LOCAL, PEER, FakeUDP, StackTestCase, request_bytes
from txuac.errors import TransportError
from txuac.net.transports import PendingConnection, StreamConnection, UDPChannel, UDPListener
from txuac.sip.address import Address

TCP_PEER = Address("tcp", "198.51.100.7", 5060)


class RecordingSink:
    """A MessageSink that keeps what it is given."""

    def __init__(self):
        self.messages: list[tuple[bytes, Address, object]] = []
        self.lost: list[StreamConnection] = []

    def message_received(self, data, source, channel):
        self.messages.append((data, source, channel))

    def connection_lost(self, connection):
        self.lost.append(connection)


class UDPListenerTests(StackTestCase):
    def setUp(self):
        super().setUp()
        self.sink = RecordingSink()
        self.own = UDPListener(LOCAL[0], 0, self.sink)
        self.socket = FakeUDP()
        self.own.makeConnection(self.socket)

    def test_a_datagram_goes_to_the_sink_with_its_source_and_a_channel_back(self):
        self.own.datagramReceived(b"OPTIONS sip:x SIP/2.0\r\n\r\n", PEER)
        [(data, source, channel)] = self.sink.messages
        self.assertEqual((data, source), (b"OPTIONS sip:x SIP/2.0\r\n\r\n", Address("udp", *PEER)))
        self.assertIsInstance(channel, UDPChannel)
        self.assertEqual(channel.local, Address("udp", LOCAL[0], LOCAL[1]))
        channel.send(b"answer")
        self.assertEqual(self.socket.written, [(b"answer", PEER)])

    def test_keepalive_datagrams_are_dropped(self):
        """RFC 5626 4.4.2 CRLF keep-alives (and blank or NUL datagrams) carry nothing to answer."""
        for data in (b"", b"\r\n", b"\r\n\r\n", b"\x00", b" \r\n"):
            self.own.datagramReceived(data, PEER)
        self.assertEqual(self.sink.messages, [])

    def test_the_port_is_the_sockets(self):
        """Bound to port 0, the listener takes the port the system gave the socket."""
        self.assertEqual(self.own.port, LOCAL[1])
        self.assertEqual(self.own.local, Address("udp", *LOCAL))

    def test_send_errors_are_transport_errors(self):
        self.socket.unreachable.add("203.0.113.9")
        with self.assertRaises(TransportError) as raised:
            self.own.send(b"x", Address("udp", "203.0.113.9", 5060))
        self.assertIn("sending to 203.0.113.9:5060 failed", str(raised.exception))
        self.assertRaises(TransportError, self.own.send, b"x", Address("udp", "host.example", 5060))

    def test_send_on_a_closed_socket(self):
        self.own.transport = None
        self.assertRaises(TransportError, self.own.send, b"x", Address("udp", *PEER))


class StreamConnectionTests(StackTestCase):
    def test_framed_messages_go_to_the_sink_with_the_connection(self):
        sink = RecordingSink()
        connection = StreamConnection("tcp", sink, self.stack.pool, outgoing=False)
        connection.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 40000)))
        one = request_bytes(via="SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKf1")
        connection.dataReceived(one[:10])
        self.assertEqual(sink.messages, [])
        connection.dataReceived(one[10:] + one)
        self.assertEqual([(data, source) for data, source, _ in sink.messages],
                         [(one, Address("tcp", "198.51.100.7", 40000))] * 2)
        self.assertIs(sink.messages[0][2], connection)

    def test_send_on_a_closed_connection(self):
        connection, _ = self.stream()
        connection.connectionLost(Failure(ConnectionRefusedError()))
        with self.assertRaises(TransportError) as raised:
            connection.send(b"x")
        self.assertIn("connection to", str(raised.exception))
        self.assertEqual(connection.lost_text(), f"connection to {connection.peer} lost")

    def test_stream_connection_survives_a_failing_message(self):
        """An exception out of the stack for one framed message keeps the connection open."""
        handled = []

        class Sink:
            def message_received(self, data, source, channel):
                handled.append(data)
                if len(handled) == 1:
                    raise RuntimeError("stack bug")

            def connection_lost(self, connection):
                pass

        connection = StreamConnection("tcp", Sink(), self.stack.pool, outgoing=False)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 40000))
        connection.makeConnection(transport)
        one = request_bytes(via="SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKs1")
        connection.dataReceived(one + one)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(handled), 2)
        self.assertFalse(transport.disconnecting)
        self.finish()

    def test_stream_connection_idle_timeout_uses_the_stack_reactor(self):
        connection, transport = self.stream()
        self.assertEqual(len(self.stack.pool), 1)
        self.reactor.advance(self.stack.pool.idle_timeout)
        self.assertTrue(transport.disconnecting)


class PendingConnectionTests(StackTestCase):
    def test_sends_wait_for_the_connection_then_go_in_order(self):
        failures = []
        pending = PendingConnection(self.stack.pool, TCP_PEER, lambda: failures.append(1))
        pending.send(b"one")
        pending.send(b"two")
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("198.51.100.7", 5060))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        factory.buildProtocol(None).makeConnection(transport)
        self.assertEqual(transport.value(), b"onetwo")
        pending.send(b"three")
        self.assertEqual(transport.value(), b"onetwothree")
        self.assertEqual(failures, [])

    def test_a_failed_connection_is_reported_once_and_later_sends_raise(self):
        failures = []
        pending = PendingConnection(self.stack.pool, TCP_PEER, lambda: failures.append(1))
        pending.send(b"one")
        [(_, _, factory, _, connector)] = self.reactor.tcpClients
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertEqual(failures, [1])
        with self.assertRaises(TransportError) as raised:
            pending.send(b"two")
        self.assertIn("cannot connect to tcp:198.51.100.7:5060", str(raised.exception))


class ConnectionPoolTests(StackTestCase):
    def test_connect_reuses_the_connection_and_waits_with_the_first(self):
        pool = self.stack.pool
        first, second = pool.connect(TCP_PEER), pool.connect(TCP_PEER)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        factory.buildProtocol(None).makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, port)))
        connection = self.successResultOf(first)
        self.assertIs(self.successResultOf(second), connection)
        self.assertIs(self.successResultOf(pool.connect(TCP_PEER)), connection)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertIs(pool.find(TCP_PEER), connection)
        self.assertEqual(len(pool), 1)

    def test_a_connection_the_peer_opened_is_found_and_reused(self):
        connection, _ = self.stream(peer=("198.51.100.7", 5060))
        self.assertIs(self.stack.pool.find(TCP_PEER), connection)
        self.assertIs(self.successResultOf(self.stack.pool.connect(TCP_PEER)), connection)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_a_failed_connect_is_a_transport_error_for_every_waiter(self):
        pool = self.stack.pool
        first, second = pool.connect(TCP_PEER), pool.connect(TCP_PEER)
        [(_, _, factory, _, connector)] = self.reactor.tcpClients
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        for d in (first, second):
            self.assertIn("cannot connect to tcp:198.51.100.7:5060", str(self.failureResultOf(d, TransportError).value))
        self.assertIsNone(pool.find(TCP_PEER))

    def test_tls_without_client_options(self):
        failure = self.failureResultOf(self.stack.pool.connect(Address("tls", "198.51.100.7", 5061)), TransportError)
        self.assertEqual(str(failure.value), "TLS is not configured")

    def test_close_all_closes_and_refuses(self):
        connection, transport = self.stream()
        self.stack.pool.close_all()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(connection.closed_by_us, "shutdown")
        self.assertEqual(str(self.failureResultOf(self.stack.pool.connect(TCP_PEER), TransportError).value),
                         "the connection pool is closed")
