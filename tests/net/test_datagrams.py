"""txuac.net.datagrams: the channel to one UDP peer, on any listener that has an address and
sends to a peer (a recording one here; tests/net/test_transports.py has it on a real
UDPListener)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import TransportError
from txuac.net.datagrams import UDPChannel
from txuac.sip.address import Address

LOCAL = Address("udp", "192.0.2.1", 5060)
PEER = Address("udp", "198.51.100.7", 5062)


class RecordingListener:
    def __init__(self, failing: bool = False):
        self.sent: list[tuple[bytes, Address]] = []
        self.failing = failing

    @property
    def local(self) -> Address:
        return LOCAL

    def send(self, data: bytes, peer: Address) -> None:
        if self.failing:
            raise TransportError(f"sending to {peer.host}:{peer.port} failed")
        self.sent.append((data, peer))


class UDPChannelTests(SynchronousTestCase):
    def test_sends_to_its_peer_from_the_listener(self):
        listener = RecordingListener()
        channel = UDPChannel(listener, PEER)
        channel.send(b"one")
        channel.send(b"two")
        self.assertEqual(listener.sent, [(b"one", PEER), (b"two", PEER)])
        self.assertEqual((channel.local, channel.peer, channel.listener), (LOCAL, PEER, listener))

    def test_another_peer_on_the_same_listener(self):
        """What the stack does for a response that goes where its Via says (RFC 3261 18.2.2)."""
        listener = RecordingListener()
        other = Address("udp", "203.0.113.9", 5070)
        UDPChannel(UDPChannel(listener, PEER).listener, other).send(b"answer")
        self.assertEqual(listener.sent, [(b"answer", other)])

    def test_the_listeners_errors_reach_the_sender(self):
        with self.assertRaises(TransportError):
            UDPChannel(RecordingListener(failing=True), PEER).send(b"x")
