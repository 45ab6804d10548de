"""txuac.net.handoff on the real reactor, loopback and UNIX sockets: two workers' shared
listen sockets in one process, each call's datagrams reaching the worker that owns its
Call-ID whichever socket the kernel gave them to, with their source kept."""

from __future__ import annotations

import os
import socket
import struct

from twisted.internet import defer, reactor
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import TestCase

from tests.support.peers import free_port
from tests.support.sipp import until
from txuac.net import handoff as handoff_module
from txuac.net.handoff import MAX_FRAME, MAX_PENDING, Handoff, decode_frame, encode_frame, handoff_socket_path
from txuac.net.shared_sockets import listen_udp_shared
from txuac.net.transports import UDPListener
from txuac.sip.affinity import call_owner


def invite(call_id: str) -> bytes:
    return (f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


class Sink:
    """What a worker's stack would get: (data, source, the listener answering)."""

    def __init__(self):
        self.received: list[tuple[bytes, object, object]] = []

    def message_received(self, data, source, channel):
        self.received.append((data, source, channel.listener))

    def connection_lost(self, connection):
        pass


class FrameTests(TestCase):
    def test_round_trip(self):
        frame = encode_frame("::1", 5060, "2001:db8::7", 40000, b"SIP/2.0 200 OK\r\n\r\n")
        self.assertEqual(decode_frame(frame), ("::1", 5060, "2001:db8::7", 40000, b"SIP/2.0 200 OK\r\n\r\n"))

    def test_unreadable(self):
        for frame in (b"", b"no line", b"a 1 b 2\n", b"a x b 2\ndata", b"a 1 b\ndata", b"a 1 b 2 3\ndata"):
            self.assertRaises(ValueError, decode_frame, frame)


class HandoffTests(TestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory, mode=0o700)
        self.port = free_port()

    def worker(self, index: int, workers: int = 2) -> tuple[Handoff, UDPListener, Sink]:
        sink = Sink()
        listener = UDPListener("127.0.0.1", self.port, sink)
        udp = listen_udp_shared(reactor, "127.0.0.1", self.port, listener)
        self.addCleanup(udp.stopListening)
        handoff = Handoff(reactor, self.directory, index, workers)
        handoff.add_listener(listener)
        handoff.start()
        self.addCleanup(handoff.stop)
        return handoff, listener, sink

    def sender(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        return s

    @defer.inlineCallbacks
    def connect_both(self, workers):
        """Until each worker has its connection to the other (the first message for a
        worker not yet connected to is handled where it was read)."""
        calls = {0: "c0", 1: "c1"}
        for index in (0, 1):
            n = 0
            while call_owner(invite(calls[index]), 2) != index:
                n += 1
                calls[index] = f"c{index}-{n}"
        for handoff in workers:
            handoff.hand_off(next(iter(handoff.listeners.values())), invite(calls[1 - handoff.index]), ("127.0.0.1", 1))
        connected = yield until(lambda: all(
            h._links[1 - h.index].sender is not None for h in workers), timeout=10)
        self.assertTrue(connected)

    @defer.inlineCallbacks
    def test_every_call_reaches_its_owner_from_one_source(self):
        """One source (an SBC): the kernel gives all its datagrams to one socket; each
        call still goes to the worker its Call-ID names, with the source kept, answered
        from that worker's own socket on the shared address."""
        workers = [self.worker(0), self.worker(1)]
        yield self.connect_both([h for h, _, _ in workers])
        for handoff, _, sink in workers:
            del sink.received[:]
            handoff.handed_off = handoff.taken = 0
        sbc = self.sender()
        calls = [f"{n}-{n * 7919:x}@192.0.2.1" for n in range(60)]
        for call_id in calls:
            sbc.sendto(invite(call_id), ("127.0.0.1", self.port))
            sbc.sendto(invite(call_id), ("127.0.0.1", self.port))  # its retransmission
        arrived = yield until(lambda: sum(len(sink.received) for _, _, sink in workers) == 120, timeout=10)
        self.assertTrue(arrived, [len(sink.received) for _, _, sink in workers])
        for index, (handoff, listener, sink) in enumerate(workers):
            owned = [c for c in calls if call_owner(invite(c), 2) == index]
            self.assertTrue(owned)
            got = [data.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode() for data, _, _ in sink.received]
            self.assertEqual(sorted(got), sorted(owned * 2))
            self.assertEqual({source.port for _, source, _ in sink.received}, {sbc.getsockname()[1]})
            self.assertEqual({source.host for _, source, _ in sink.received}, {"127.0.0.1"})
            self.assertEqual({id(answering) for _, _, answering in sink.received}, {id(listener)})
        self.assertEqual(sum(h.handed_off for h, _, _ in workers), 60)
        self.assertEqual(sum(h.taken for h, _, _ in workers), 60)

    @defer.inlineCallbacks
    def test_an_owner_out_of_reach_gets_its_calls_handled_here(self):
        """Worker 1 not started (or starting again): what waited for the connection, and
        what comes while it cannot be made, worker 0 handles itself; it tries to reach
        worker 1 again at most every RETRY_AFTER seconds."""
        handoff, listener, sink = self.worker(0)
        call = next(f"x{n}" for n in range(100) if call_owner(invite(f"x{n}"), 2) == 1)
        self.assertTrue(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))  # waits for the connection
        self.assertTrue(handoff._links[1].connecting)
        handled = yield until(lambda: len(sink.received) == 1, timeout=10)
        self.assertTrue(handled)
        self.assertEqual((sink.received[0][1].port, handoff.kept, handoff.taken), (7, 1, 0))
        self.assertFalse(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))
        self.assertFalse(handoff._links[1].connecting)  # not again before RETRY_AFTER
        self.assertEqual(handoff.kept, 2)

    @defer.inlineCallbacks
    def test_messages_wait_for_the_connection_in_order(self):
        """The first messages for a worker wait while the connection is made, at most
        MAX_PENDING of them (then dropped and counted), and reach it in their order."""
        workers = [self.worker(0), self.worker(1)]
        handoff, listener, _ = workers[0]
        sink = workers[1][2]
        calls = [f"w{n}" for n in range(3 * MAX_PENDING) if call_owner(invite(f"w{n}"), 2) == 1][:MAX_PENDING + 5]
        for call in calls:
            self.assertTrue(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))
        self.assertEqual(handoff.dropped, 5)
        arrived = yield until(lambda: len(sink.received) == MAX_PENDING, timeout=10)
        self.assertTrue(arrived, len(sink.received))
        got = [data.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode() for data, _, _ in sink.received]
        self.assertEqual(got, calls[:MAX_PENDING])
        self.assertEqual((handoff.handed_off, workers[1][0].taken), (MAX_PENDING, MAX_PENDING))

    @defer.inlineCallbacks
    def test_an_owner_that_starts_again_is_reached_again(self):
        """Worker 1 stops (its connections close with it) and starts again: worker 0
        handles its calls meanwhile, then hands them to it again."""
        self.patch(handoff_module, "RETRY_AFTER", 0.2)
        workers = [self.worker(0), self.worker(1)]
        yield self.connect_both([h for h, _, _ in workers])
        first, listener, _ = workers[0]
        second, second_listener, _ = workers[1]
        call = next(f"r{n}" for n in range(100) if call_owner(invite(f"r{n}"), 2) == 1)
        yield second.stop()
        lost = yield until(lambda: first._links[1].sender is None, timeout=10)
        self.assertTrue(lost)
        kept = first.kept
        self.assertFalse(first.hand_off(listener, invite(call), ("127.0.0.1", 7)))  # for this worker to handle
        self.assertEqual(first.kept, kept + 1)
        again = Handoff(reactor, self.directory, 1, 2)  # worker 1 started again: the same path
        again.add_listener(second_listener)
        again.start()
        self.addCleanup(again.stop)
        yield until(lambda: first._links[1].retry_at <= reactor.seconds(), timeout=10)
        self.assertTrue(first.hand_off(listener, invite(call), ("127.0.0.1", 7)))  # waits for the connection
        reached = yield until(lambda: again.taken == 1, timeout=10)
        self.assertTrue(reached)

    def test_a_stopped_worker_hands_nothing_over(self):
        handoff, listener, _ = self.worker(0)
        call = next(f"s{n}" for n in range(100) if call_owner(invite(f"s{n}"), 2) == 1)
        handoff.stop()
        self.assertFalse(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))
        self.assertEqual(handoff._links, {})

    def test_its_own_calls_and_calls_without_call_id_stay(self):
        handoff, listener, sink = self.worker(0)
        own = next(f"y{n}" for n in range(100) if call_owner(invite(f"y{n}"), 2) == 0)
        self.assertFalse(handoff.hand_off(listener, invite(own), ("127.0.0.1", 7)))
        self.assertFalse(handoff.hand_off(listener, b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("127.0.0.1", 7)))
        self.assertEqual((handoff.kept, handoff.handed_off), (0, 0))
        self.assertEqual(handoff._links, {})

    @defer.inlineCallbacks
    def test_a_full_connection_drops_and_counts(self):
        """The owner takes less than it is handed: the connection's buffer fills, the
        transport pauses us, and what is for that worker is dropped (the peers
        retransmit), never queued without bound."""
        workers = [self.worker(0), self.worker(1)]
        yield self.connect_both([h for h, _, _ in workers])
        handoff, listener, _ = workers[0]
        sender = handoff._links[1].sender
        sender.pauseProducing()
        call = next(f"z{n}" for n in range(100) if call_owner(invite(f"z{n}"), 2) == 1)
        self.assertTrue(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))
        self.assertTrue(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))
        self.assertEqual(handoff.dropped, 2)
        self.assertEqual(handoff._warnings.suppressed("full"), 1)  # logged once
        sender.resumeProducing()
        self.assertTrue(handoff.hand_off(listener, invite(call), ("127.0.0.1", 7)))
        self.assertEqual(handoff.dropped, 2)

    def test_unreadable_and_foreign_frames_are_dropped(self):
        handoff, listener, sink = self.worker(0)
        handoff.take(b"\xff\xfe garbage")
        handoff.take(encode_frame("127.0.0.1", self.port + 1, "127.0.0.1", 7, invite("a")))  # not our listener
        self.assertEqual((sink.received, handoff.taken), ([], 0))
        handoff.take(encode_frame("127.0.0.1", self.port, "127.0.0.1", 7, invite("a")))
        self.assertEqual(len(sink.received), 1)

    @defer.inlineCallbacks
    def test_an_oversized_frame_closes_the_connection(self):
        handoff, _, _ = self.worker(0)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.connect(handoff_socket_path(self.directory, 0))
        s.sendall(struct.pack("!I", MAX_FRAME + 1) + b"x" * 1000)
        s.setblocking(False)

        def closed():
            try:
                return s.recv(1) == b""
            except BlockingIOError:
                return False
        self.assertTrue((yield until(closed, timeout=10)))

    def test_a_directory_it_cannot_listen_in_is_logged_not_fatal(self):
        """The other workers then handle its calls themselves (they cannot connect)."""
        events: list[dict] = []
        self.patch(handoff_module, "log", Logger(observer=events.append))
        handoff = Handoff(reactor, os.path.join(self.directory, "gone"), 0, 2)
        handoff.start()
        self.assertEqual([event["log_level"] for event in events], [LogLevel.error])
        self.assertIn("gone/handoff-0.sock", formatEvent(events[0]))
        self.assertIsNone(handoff.stop())

    def test_the_socket_is_the_service_users_alone(self):
        self.worker(0)
        self.assertEqual(os.stat(handoff_socket_path(self.directory, 0)).st_mode & 0o777, 0o600)
