"""The fault-injecting UDP relay (tests/support/relay.py) between plain UDP sockets.

Clients and the target are plain sockets of the test, read in a thread so the reactor
(which runs the relay) is never blocked; payloads carry a sequence number so loss,
order and delay can be checked datagram by datagram.
"""

from __future__ import annotations

import socket
import time

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from tests.support.relay import UDPRelay
from tests.support.relay_process import RelayProcess

HOST = "127.0.0.1"


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((HOST, 0))
    return sock


def collect(sock: socket.socket, count: int, timeout: float) -> defer.Deferred:
    """In a thread: (payload, source, monotonic arrival time) of datagrams until ``count``
    have come or ``timeout`` seconds passed."""

    def receive():
        received = []
        deadline = time.monotonic() + timeout
        while len(received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(65536)
            except socket.timeout:
                break
            received.append((data, source, time.monotonic()))
        return received

    return threads.deferToThread(receive)


def numbers(received) -> list[int]:
    return [int(data.split(b" ")[1]) for data, _, _ in received]


class RelayTests(TestCase):

    timeout = 60

    def setUp(self):
        self.target = udp_socket()
        self.addCleanup(self.target.close)
        self.relay = UDPRelay(self.target.getsockname(), seed=7)
        self.relay.start(self)

    def client(self) -> socket.socket:
        sock = udp_socket()
        self.addCleanup(sock.close)
        return sock

    @defer.inlineCallbacks
    def send_paced(self, sock: socket.socket, count: int, per_tick: int = 50, prefix: bytes = b"n",
                   address=None):
        """Send ``count`` numbered datagrams, ``per_tick`` every 10 ms (5,000 per second by default)."""
        address = address or self.relay.address
        sent = 0
        while sent < count:
            for _ in range(min(per_tick, count - sent)):
                sock.sendto(prefix + b" %d" % sent, address)
                sent += 1
            yield task.deferLater(reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_forwards_both_ways_with_a_socket_per_client(self):
        first, second = self.client(), self.client()
        first.sendto(b"from 1", self.relay.address)
        second.sendto(b"from 2", self.relay.address)
        received = yield collect(self.target, 2, 5.0)
        sources = {data: source for data, source, _ in received}
        self.assertEqual(set(sources), {b"from 1", b"from 2"})
        self.assertNotEqual(sources[b"from 1"], sources[b"from 2"])
        self.assertNotIn(self.relay.port, {port for _, port in sources.values()})
        # A reply to each per-client socket goes back to that client, from the relay's port.
        self.target.sendto(b"to 2", sources[b"from 2"])
        self.target.sendto(b"to 1", sources[b"from 1"])
        (reply_1,) = yield collect(first, 1, 5.0)
        (reply_2,) = yield collect(second, 1, 5.0)
        self.assertEqual((reply_1[0], reply_1[1]), (b"to 1", self.relay.address))
        self.assertEqual((reply_2[0], reply_2[1]), (b"to 2", self.relay.address))
        self.assertEqual(sorted(self.relay.clients), sorted([first.getsockname(), second.getsockname()]))
        counters = self.relay.counters()
        self.assertEqual((counters["to_target"]["forwarded"], counters["to_client"]["forwarded"]), (2, 2))

    @defer.inlineCallbacks
    def test_counts_datagrams_by_kind_even_when_dropped(self):
        """Requests by method, responses by status, CRLF keep-alives; lost ones too."""
        client = self.client()
        client.sendto(b"REGISTER sip:example.org SIP/2.0\r\n\r\n", self.relay.address)
        client.sendto(b"\r\n\r\n", self.relay.address)
        ((_, upstream, _), _) = yield collect(self.target, 2, 5.0)
        self.target.sendto(b"SIP/2.0 401 Unauthorized\r\n\r\n", upstream)
        yield collect(client, 1, 5.0)
        self.relay.blackhole = True
        client.sendto(b"OPTIONS sip:example.org SIP/2.0\r\n\r\n", self.relay.address)
        for _ in range(500):  # the reactor reads it: up to 5 s on a busy machine
            if self.relay.to_target.received == 3:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(dict(self.relay.to_target.kinds), {"REGISTER": 1, "keepalive": 1, "OPTIONS": 1})
        self.assertEqual(dict(self.relay.to_client.kinds), {"401": 1})

    @defer.inlineCallbacks
    def test_ignores_datagrams_from_others_than_the_target(self):
        client, stranger = self.client(), self.client()
        client.sendto(b"hello", self.relay.address)
        ((_, upstream, _),) = yield collect(self.target, 1, 5.0)
        stranger.sendto(b"spoofed reply", upstream)
        self.target.sendto(b"real reply", upstream)
        received = yield collect(client, 2, 1.0)
        self.assertEqual([data for data, _, _ in received], [b"real reply"])
        self.assertEqual(self.relay.strays, 1)

    @defer.inlineCallbacks
    def test_loss_is_seeded_and_counted(self):
        """30% loss: about 600 of 2,000 dropped, the same ones again with the same seed."""
        self.relay.set_faults(loss=0.3, direction="to_target")
        client = self.client()
        sent = self.send_paced(client, 2000)
        received = yield collect(self.target, 2000, 4.0)
        yield sent
        counters = self.relay.counters()["to_target"]
        self.assertEqual(counters["received"], 2000)
        self.assertEqual(counters["forwarded"] + counters["dropped"], 2000)
        self.assertEqual(len(received), counters["forwarded"])
        self.assertTrue(520 <= counters["dropped"] <= 680, counters)  # 600 +- 4 sigma (20.5)
        # The same seed drops the same datagrams of the same sequence.
        again = UDPRelay(self.target.getsockname(), seed=7)
        again.start(self)
        again.set_faults(loss=0.3, direction="to_target")
        sent = self.send_paced(client, 2000, address=again.address)
        received_again = yield collect(self.target, counters["forwarded"], 4.0)
        yield sent
        self.assertEqual(numbers(received_again), numbers(received))
        self.assertEqual(sorted(numbers(received)), numbers(received))

    @defer.inlineCallbacks
    def test_loss_per_direction(self):
        self.relay.set_faults(loss=1.0, direction="to_client")
        client = self.client()
        client.sendto(b"n 1", self.relay.address)
        ((_, upstream, _),) = yield collect(self.target, 1, 5.0)
        self.target.sendto(b"reply", upstream)
        received = yield collect(client, 1, 0.5)
        self.assertEqual(received, [])
        self.assertEqual(self.relay.counters()["to_client"]["dropped"], 1)
        self.relay.set_faults(loss=0.0, direction="to_client")
        self.target.sendto(b"reply", upstream)
        received = yield collect(client, 1, 5.0)
        self.assertEqual([data for data, _, _ in received], [b"reply"])

    @defer.inlineCallbacks
    def test_delay_holds_each_datagram_and_keeps_the_order(self):
        self.relay.set_faults(delay=0.2)
        client = self.client()
        sent_at = time.monotonic()
        client.sendto(b"n 0", self.relay.address)
        received = yield collect(self.target, 1, 5.0)
        self.assertGreaterEqual(received[0][2] - sent_at, 0.2)
        # 1,000 datagrams at 5,000/s through a 50 ms delay both ways arrive all, in order.
        self.relay.set_faults(delay=0.05)
        sent = self.send_paced(client, 1000)
        received = yield collect(self.target, 1000, 10.0)
        yield sent
        self.assertEqual(numbers(received), list(range(1000)))
        upstream = received[0][1]
        for number in range(1000):
            self.target.sendto(b"r %d" % number, upstream)
        replies = yield collect(client, 1000, 10.0)
        self.assertEqual(numbers(replies), list(range(1000)))

    @defer.inlineCallbacks
    def test_jitter_reorders_only_datagrams_closer_than_twice_the_jitter(self):
        client = self.client()
        # Spaced 40 ms apart with +-10 ms of jitter: never reordered.
        self.relay.set_faults(delay=0.02, jitter=0.01)
        for number in range(40):
            client.sendto(b"n %d" % number, self.relay.address)
            yield task.deferLater(reactor, 0.04, lambda: None)
        received = yield collect(self.target, 40, 5.0)
        self.assertEqual(numbers(received), list(range(40)))
        # 300 at once with +-50 ms of jitter: reordered, none lost.
        self.relay.set_faults(delay=0.06, jitter=0.05)
        for number in range(300):
            client.sendto(b"n %d" % number, self.relay.address)
        received = yield collect(self.target, 300, 5.0)
        self.assertEqual(sorted(numbers(received)), list(range(300)))
        self.assertNotEqual(numbers(received), list(range(300)))

    @defer.inlineCallbacks
    def test_blackhole_drops_everything_until_switched_off(self):
        client = self.client()
        client.sendto(b"n 0", self.relay.address)
        ((_, upstream, _),) = yield collect(self.target, 1, 5.0)
        self.relay.blackhole = True
        client.sendto(b"n 1", self.relay.address)
        self.target.sendto(b"r 1", upstream)
        self.assertEqual((yield collect(self.target, 1, 0.5)), [])
        self.assertEqual((yield collect(client, 1, 0.1)), [])
        counters = self.relay.counters()
        self.assertEqual((counters["to_target"]["dropped"], counters["to_client"]["dropped"]), (1, 1))
        self.relay.blackhole = False
        client.sendto(b"n 2", self.relay.address)
        self.target.sendto(b"r 2", upstream)
        self.assertEqual(numbers((yield collect(self.target, 1, 5.0))), [2])
        self.assertEqual(numbers((yield collect(client, 1, 5.0))), [2])

    @defer.inlineCallbacks
    def test_thousands_of_datagrams_per_second(self):
        """10,000 datagrams at 10,000/s with 20 ms of delay: every one forwarded, in order."""
        self.relay.set_faults(delay=0.02)
        client = self.client()
        started = time.monotonic()
        sent = self.send_paced(client, 10_000, per_tick=100)
        received = yield collect(self.target, 10_000, 20.0)
        yield sent
        elapsed = time.monotonic() - started
        counters = self.relay.counters()["to_target"]
        self.assertEqual((counters["forwarded"], counters["dropped"]), (10_000, 0), counters)
        self.assertEqual(numbers(received), list(range(10_000)))
        self.assertLess(elapsed, 10.0)

    def test_fault_settings_are_checked(self):
        self.assertRaises(ValueError, self.relay.set_faults, loss=1.5)
        self.assertRaises(ValueError, self.relay.set_faults, delay=-1)
        self.assertRaises(ValueError, self.relay.set_faults, loss=0.1, direction="sideways")
        self.relay.set_faults(loss=0.2, delay=0.01, jitter=0.005, direction="to_client")
        self.assertEqual((self.relay.to_client.loss, self.relay.to_client.delay, self.relay.to_client.jitter),
                         (0.2, 0.01, 0.005))
        self.assertEqual((self.relay.to_target.loss, self.relay.to_target.delay), (0.0, 0.0))
        self.relay.blackhole = True
        self.relay.clear_faults()
        self.assertEqual((self.relay.blackhole, self.relay.to_client.loss, self.relay.to_client.delay), (False, 0, 0))


class RelayProcessTests(TestCase):
    """The same relay in a process of its own, driven by commands (a bench's relay)."""

    timeout = 60

    @defer.inlineCallbacks
    def test_forwards_with_faults_and_reports_its_counters(self):
        target = udp_socket()
        self.addCleanup(target.close)
        relay = RelayProcess(target.getsockname(), seed=7)
        yield relay.start(self)
        client = udp_socket()
        self.addCleanup(client.close)
        client.sendto(b"REGISTER sip:example.org SIP/2.0\r\n\r\n", relay.address)
        ((_, upstream, _),) = yield collect(target, 1, 10.0)
        target.sendto(b"SIP/2.0 401 Unauthorized\r\n\r\n", upstream)
        ((reply, source, _),) = yield collect(client, 1, 10.0)
        self.assertEqual((reply, source), (b"SIP/2.0 401 Unauthorized\r\n\r\n", relay.address))
        relay.set_faults(loss=1.0, direction="to_client")
        relay.blackhole = True
        yield relay.snapshot()  # commands are carried out in order: both are in force
        client.sendto(b"OPTIONS sip:example.org SIP/2.0\r\n\r\n", relay.address)
        self.assertEqual((yield collect(target, 1, 1.0)), [], "black-holed")
        relay.blackhole = False
        yield relay.snapshot()
        client.sendto(b"REGISTER sip:example.org SIP/2.0\r\n\r\n", relay.address)
        yield collect(target, 1, 10.0)
        target.sendto(b"SIP/2.0 200 OK\r\n\r\n", upstream)
        self.assertEqual((yield collect(client, 1, 1.0)), [], "lost toward the client")
        snapshot = yield relay.snapshot()
        self.assertEqual(snapshot["to_target"]["kinds"], {"REGISTER": 2, "OPTIONS": 1})
        self.assertEqual((snapshot["to_target"]["forwarded"], snapshot["to_target"]["dropped"]), (2, 1))
        self.assertEqual(snapshot["to_client"]["kinds"], {"401": 1, "200": 1})
        self.assertEqual((snapshot["to_client"]["forwarded"], snapshot["to_client"]["dropped"]), (1, 1))
        yield relay.stop()
        self.assertTrue(relay._child.ended.called)
