"""SIPStack without sockets: ``StackTestCase`` runs the stack on a MemoryReactorClock with a
fake UDP socket bound to ``LOCAL`` (``FakeUDP``) and a fixed resolver, and feeds it
datagrams from ``PEER``; ``request_bytes`` and ``outgoing`` are requests to feed or send."""

from __future__ import annotations

import errno

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress
from twisted.internet.address import IPv4Address
from twisted.internet.error import InvalidAddressError
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txuac.net.stack import SIPStack
from txuac.net.transports import StreamConnection, UDPListener
from txuac.sip import Request, make_response, parse_message
from txuac.sip.transaction import TimerSettings

LOCAL = ("192.0.2.1", 5060)
PEER = ("198.51.100.7", 5062)
T1, T2, T4 = 0.5, 4.0, 5.0


class FakeUDP(FakeDatagramTransport):
    """A UDP socket bound to ``LOCAL``; writes to ``unreachable`` hosts fail like sendto()."""

    def __init__(self):
        super().__init__()
        self.unreachable: set[str] = set()

    def getHost(self):
        return IPv4Address("UDP", *LOCAL)

    def write(self, packet, addr=FakeDatagramTransport.noAddr):
        if not isIPAddress(addr[0]):
            raise InvalidAddressError(addr[0], "write() only accepts IP addresses, not hostnames")  # as udp.Port
        if addr[0] in self.unreachable:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        super().write(packet, addr)


class FakeResolver:
    """Stands in for TargetResolver: a fixed list of targets (failover tests only)."""

    def __init__(self, targets=()):
        self.targets = list(targets)

    def resolve_request(self, request):
        return defer.succeed(list(self.targets))

    def literal_target(self, uri):
        return None  # every next hop is looked up, an IP address too

    def server_name(self, request):
        return "example.com"


def request_bytes(method="OPTIONS", via=f"SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bKabc1;rport",
                  call_id="call-1", cseq=None, to="<sip:uas@192.0.2.1>", extra="", body=b"") -> bytes:
    cseq = cseq or f"1 {method}"
    head = (
        f"{method} sip:uas@192.0.2.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"From: <sip:alice@example.com>;tag=f1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\n"
        f"Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def outgoing(uri="sip:uas@198.51.100.7:5062", method="OPTIONS", call_id="out-1") -> Request:
    return parse_message(
        f"{method} {uri} SIP/2.0\r\n"
        f"From: <sip:a@192.0.2.1>;tag=1\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n".encode()
    )


class StackTestCase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver()
        self.stack = SIPStack(self.reactor, timers=TimerSettings(T1, T2, T4), resolver=self.resolver)
        self.listener = UDPListener(LOCAL[0], 0, self.stack)
        self.udp = FakeUDP()
        self.listener.makeConnection(self.udp)
        self.stack.add_udp_listener(self.listener)

    # --- helpers --------------------------------------------------------------
    def sent(self) -> list[tuple[object, tuple]]:
        """Every datagram written since the last call, parsed, with its destination."""
        out = [(parse_message(data), addr) for data, addr in self.udp.written]
        del self.udp.written[:]
        return out

    def receive(self, data: bytes, source=PEER) -> None:
        self.listener.datagramReceived(data, source)

    def answer(self, request: Request, status: int, source=PEER, reason=None) -> None:
        """Feed the response ``status`` to a request the stack sent."""
        self.receive(bytes(make_response(request, status, reason, to_tag="uas")), source)

    def stream(self, peer=("198.51.100.7", 40000), outgoing_=False) -> tuple[StreamConnection, StringTransport]:
        connection = StreamConnection("tcp", self.stack, self.stack.pool, outgoing=outgoing_)
        transport = StringTransport(hostAddress=IPv4Address("TCP", LOCAL[0], 5060),
                                    peerAddress=IPv4Address("TCP", *peer))
        connection.makeConnection(transport)
        return connection, transport

    def finish(self) -> None:
        """Stop the stack and check that no timer outlives it."""
        d = self.stack.stop(grace=0)
        self.reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
