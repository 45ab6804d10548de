"""A UDP socket's channel to one peer: what the stack answers and sends on for UDP.

Compiled with the SIP core: the stack makes one for every datagram it receives and every
request or response it sends over UDP, and calls its ``send``.
"""

from __future__ import annotations

from typing import Protocol

from txuac.sip.address import Address


class DatagramListener(Protocol):
    """A UDP socket (txuac.net.transports.UDPListener): its address, and a send to a peer."""

    @property
    def local(self) -> Address: ...

    def send(self, data: bytes, peer: Address) -> None: ...


class UDPChannel:
    """A UDP listener bound to one peer address (kept by each server transaction until it
    ends: slots, no instance dict, in the pure-Python build too)."""

    __slots__ = ("listener", "peer")

    def __init__(self, listener: DatagramListener, peer: Address) -> None:
        self.listener = listener
        self.peer = peer

    @property
    def local(self) -> Address:
        return self.listener.local

    def send(self, data: bytes) -> None:
        self.listener.send(data, self.peer)
