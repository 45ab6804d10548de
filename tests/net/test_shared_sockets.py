"""txuac.net.shared_sockets and the worker's own send socket (``[core] workers`` > 1), on
the real reactor and loopback: several sockets share a port, one source always reaches
the same one, and the requests a worker sends name its own port in their Via, where the
responses come back."""

from __future__ import annotations

import socket

from twisted.internet import defer, error, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.support.peers import free_port
from tests.support.sipp import until
from txuac.config import settings_from_dict
from txuac.net.shared_sockets import listen_stream_shared, listen_udp_shared
from txuac.service import SIPService
from txuac.sip import Request, make_response, parse_message


class Collect(protocol.DatagramProtocol):
    def __init__(self):
        self.received: list[tuple[bytes, tuple]] = []

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))


class SharedUDPTests(TestCase):
    def listen(self, port: int) -> Collect:
        collect = Collect()
        udp = listen_udp_shared(reactor, "127.0.0.1", port, collect)
        self.addCleanup(udp.stopListening)
        return collect

    @defer.inlineCallbacks
    def test_one_source_reaches_one_socket(self):
        """Linux hashes a datagram's 4-tuple to one socket of the group: all that one
        source address and port sends (a request, its retransmissions, its CANCEL) goes
        to the same worker; other sources spread over the group."""
        port = free_port()
        first, second = self.listen(port), self.listen(port)
        senders = []
        for _ in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(s.close)
            s.bind(("127.0.0.1", 0))
            senders.append(s)
        for round_ in range(5):
            for s in senders:
                s.sendto(b"x%d" % round_, ("127.0.0.1", port))
        yield until(lambda: len(first.received) + len(second.received) == 80, timeout=10)
        by_source = {}
        for collect in (first, second):
            for _, addr in collect.received:
                by_source.setdefault(addr, set()).add(id(collect))
        self.assertEqual(len(by_source), 16)
        self.assertTrue(all(len(sockets) == 1 for sockets in by_source.values()), by_source)
        self.assertTrue(first.received and second.received, "16 sources all hashed to one socket")

    def test_not_shared_with_an_exclusive_socket(self):
        """A port bound without SO_REUSEPORT (another program) is a CannotListenError."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            plain.bind(("127.0.0.1", 0))
            port = plain.getsockname()[1]
            self.assertRaises(error.CannotListenError, listen_udp_shared, reactor, "127.0.0.1", port, Collect())

    def test_tcp_shared(self):
        port = free_port(socket.SOCK_STREAM)
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        for _ in range(2):
            listening = listen_stream_shared(reactor, "127.0.0.1", port, factory)
            self.addCleanup(listening.stopListening)
            self.assertEqual(listening.getHost().port, port)


OPTIONS = (
    "OPTIONS sip:peer@127.0.0.1:{port} SIP/2.0\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:uac@127.0.0.1>;tag=a\r\n"
    "To: <sip:peer@127.0.0.1>\r\n"
    "Call-ID: worker-socket\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


class Answer(protocol.DatagramProtocol):
    """Answers every request 200 at the address its top Via names (RFC 3261 18.2.2)."""

    def __init__(self):
        self.requests: list[tuple[Request, tuple]] = []

    def datagramReceived(self, data, addr):
        request = parse_message(data)
        self.requests.append((request, addr))
        via = request.top_via
        self.transport.write(bytes(make_response(request, 200, to_tag="b")), (via.host, via.port))


class WorkerSocketTests(TestCase):
    def start(self, workers: int) -> SIPService:
        self.port = free_port()
        sip = SIPService(settings_from_dict({"core": {"listen": [f"udp:127.0.0.1:{self.port}"], "workers": workers}}),
                         reactor)
        sip.startService()
        self.addCleanup(sip.stopService)
        return sip

    @defer.inlineCallbacks
    def send_options(self, sip: SIPService):
        peer = Answer()
        udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        peer_port = udp.getHost().port
        request = parse_message(OPTIONS.format(port=peer_port).encode())
        response = yield sip.stack.send_request(request, parse_message(OPTIONS.format(port=peer_port).encode()).uri)
        self.assertEqual(response.status, 200)
        [(sent, source)] = peer.requests
        return sent.top_via.port, source[1]

    @defer.inlineCallbacks
    def test_requests_go_out_from_the_worker_socket(self):
        """With workers > 1 a request leaves from the worker's own port and its Via names
        that port: the response comes back to this process, not to the shared group."""
        sip = self.start(workers=2)
        [own] = sip.worker_ports
        own_port = own.getHost().port
        self.assertNotEqual(own_port, self.port)
        via_port, source_port = yield self.send_options(sip)
        self.assertEqual((via_port, source_port), (own_port, own_port))

    @defer.inlineCallbacks
    def test_one_worker_sends_from_the_listen_socket(self):
        sip = self.start(workers=1)
        self.assertEqual(sip.worker_ports, [])
        via_port, source_port = yield self.send_options(sip)
        self.assertEqual((via_port, source_port), (self.port, self.port))

    @defer.inlineCallbacks
    def test_worker_socket_closed_on_stop(self):
        sip = self.start(workers=2)
        [own] = sip.worker_ports
        own_port = own.getHost().port
        yield sip.stopService()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", own_port))  # free again
