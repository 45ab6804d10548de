"""A fault-injecting UDP relay between txuac and a real registrar, for interop tests.

Usage from a trial test (or a bench, with any object that has ``addCleanup``)::

    from tests.support.relay import UDPRelay

    relay = UDPRelay(registrar.address, seed=8)    # started; stopped at cleanup with start(testcase)
    relay.start(self)
    # accounts use auth_proxy = relay.uri ("sip:127.0.0.1:<relay port>")
    relay.set_faults(loss=0.1, delay=0.02)         # both directions
    relay.to_client.loss = 0.5                     # or one direction
    relay.blackhole = True                         # a silent registrar
    relay.counters()                               # forwarded/dropped per direction
    relay.to_target.kinds                          # datagrams received by kind: "REGISTER", "200"...
    yield relay.snapshot()                         # both, as RelayProcess gives them from a process of its own

A client sends to the relay's port; the relay forwards each datagram to ``target`` from a
socket of its own for that client address (one per client, so replies map back), and
forwards what the target sends to that socket back to the client from the relay's port.
Datagrams from anyone but the target to a per-client socket are ignored (``strays``).

Faults, changeable at any time, apply to each datagram when it arrives at the relay:

- ``loss``: the probability that it is dropped, drawn from a ``random.Random`` per
  direction seeded from ``seed`` (the same datagram sequence loses the same datagrams);
- ``delay`` and ``jitter`` (seconds): it leaves ``delay`` plus a uniform draw in
  [-jitter, +jitter] (never below 0) after it arrived. Datagrams leave in order of their
  departure times and, on equal times, in arrival order: without jitter nothing is
  reordered, with jitter only datagrams closer together than 2 x jitter can swap;
- ``blackhole``: every datagram in either direction is dropped (counted as dropped).
  Datagrams already delayed when it is switched on still leave, as packets already in
  the network would.

One timer per direction serves its delay queue (a heap), so thousands of datagrams per
second cost one reactor timer each way, not one per datagram. Sockets get large buffers
(4 MiB where the system allows) so bursts are not dropped by the kernel; a send the
kernel refuses (ENOBUFS, EAGAIN) is counted in ``send_errors`` and as dropped.
"""

from __future__ import annotations

import heapq
import random
import socket
from collections import Counter
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

BUFFER_BYTES = 4 * 1024 * 1024
DIRECTIONS = ("to_target", "to_client", "both")


@dataclass
class Direction:
    """The faults and counters of one direction of the relay."""

    name: str
    rng: random.Random
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    received: int = 0
    forwarded: int = 0
    dropped: int = 0  # lost, black-holed or refused by the kernel
    send_errors: int = 0
    queue: list = field(default_factory=list)  # (departs_at, sequence, datagram, port, address)
    timer: object = None
    sequence: int = 0
    kinds: Counter = field(default_factory=Counter)  # received, by datagram_kind()

    def counters(self) -> dict[str, int]:
        return {"received": self.received, "forwarded": self.forwarded, "dropped": self.dropped,
                "send_errors": self.send_errors, "queued": len(self.queue)}


def datagram_kind(datagram: bytes) -> str:
    """A SIP datagram's method ("REGISTER") or, for a response, its status code ("401");
    "keepalive" for a datagram of whitespace only (RFC 5626 3.5.1 CRLF keep-alives)."""
    words = datagram.split(None, 2)
    if not words:
        return "keepalive"
    if words[0] == b"SIP/2.0" and len(words) > 1:
        return words[1].decode("ascii", "replace")
    return words[0].decode("ascii", "replace")


def _large_buffers(port) -> None:
    """Raise SO_RCVBUF and SO_SNDBUF of a listening UDP port as far as the system allows."""
    handle = port.getHandle()
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            handle.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
        except OSError:
            pass


class _ClientSide(DatagramProtocol):
    """The relay's public port: datagrams from clients, forwarded toward the target."""

    def __init__(self, relay: UDPRelay):
        self.relay = relay

    def datagramReceived(self, datagram: bytes, address) -> None:
        relay = self.relay
        upstream = relay._upstream_for(address)
        relay._arrived(relay.to_target, datagram, upstream.transport, relay.target)


class _TargetSide(DatagramProtocol):
    """The relay's socket for one client: datagrams from the target, forwarded to that client."""

    def __init__(self, relay: UDPRelay, client):
        self.relay = relay
        self.client = client

    def datagramReceived(self, datagram: bytes, address) -> None:
        relay = self.relay
        if (address[0], address[1]) != relay.target:
            relay.strays += 1
            return
        relay._arrived(relay.to_client, datagram, relay._port, self.client)


class RelayEndpoint:
    """Where a relay listens (``host``, ``port``), as an address and as a SIP URI."""

    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        """The relay as a SIP URI, for an account's auth_proxy: sip:127.0.0.1:PORT."""
        return f"sip:{self.host}:{self.port}"


class UDPRelay(RelayEndpoint):
    """A UDP relay on ``host`` (a free port unless ``port``) to ``target`` (host, port), with faults."""

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.target = (target[0], int(target[1]))
        self.host = host
        self.requested_port = port
        self.seed = seed
        self.to_target = Direction("to_target", random.Random(f"{seed}:to_target"))
        self.to_client = Direction("to_client", random.Random(f"{seed}:to_client"))
        self.blackhole = False
        self.strays = 0
        self._port = None
        self._upstreams: dict[tuple[str, int], _TargetSide] = {}

    # --- lifecycle -----------------------------------------------------------------
    def start(self, testcase=None) -> int:
        """Listen; returns the relay's port. With ``testcase``, stop() is added to its cleanups."""
        self._port = self.reactor.listenUDP(self.requested_port, _ClientSide(self), interface=self.host)
        _large_buffers(self._port)
        if testcase is not None:
            testcase.addCleanup(self.stop)
        return self.port

    def stop(self) -> defer.Deferred:
        """Stop listening, close the per-client sockets and forget queued datagrams. Idempotent."""
        for direction in (self.to_target, self.to_client):
            if direction.timer is not None and direction.timer.active():
                direction.timer.cancel()
            direction.timer = None
            direction.queue.clear()
        ports = [self._port] if self._port is not None else []
        ports += [upstream.transport for upstream in self._upstreams.values() if upstream.transport is not None]
        self._port = None
        self._upstreams.clear()
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])

    @property
    def port(self) -> int:
        return self._port.getHost().port

    @property
    def clients(self) -> list[tuple[str, int]]:
        """The client addresses seen so far (each has a socket of its own toward the target)."""
        return list(self._upstreams)

    # --- faults and counters ----------------------------------------------------------
    def directions(self, direction: str) -> tuple[Direction, ...]:
        """The Direction objects named by ``direction``: "to_target", "to_client" or "both"."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        if direction == "both":
            return (self.to_target, self.to_client)
        return (getattr(self, direction),)

    def set_faults(self, *, loss: float | None = None, delay: float | None = None, jitter: float | None = None,
                   direction: str = "both") -> None:
        """Change the faults of one direction or both; None leaves a setting as it is."""
        if loss is not None and not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be a probability in [0, 1], not {loss!r}")
        for name, value in (("delay", delay), ("jitter", jitter)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")
        for side in self.directions(direction):
            if loss is not None:
                side.loss = loss
            if delay is not None:
                side.delay = delay
            if jitter is not None:
                side.jitter = jitter

    def clear_faults(self) -> None:
        """No loss, no delay, no black hole (datagrams already queued still leave on time)."""
        self.blackhole = False
        self.set_faults(loss=0.0, delay=0.0, jitter=0.0)

    def counters(self) -> dict[str, dict[str, int]]:
        """received, forwarded, dropped, send_errors and queued per direction."""
        return {"to_target": self.to_target.counters(), "to_client": self.to_client.counters()}

    def snapshot_now(self) -> dict[str, dict]:
        """counters() of each direction with its ``kinds`` (a dict), as JSON carries it."""
        return {side.name: {**side.counters(), "kinds": dict(side.kinds)} for side in (self.to_target, self.to_client)}

    def snapshot(self) -> defer.Deferred:
        """snapshot_now() as a Deferred, as RelayProcess (tests/support/relay_process.py) gives it."""
        return defer.succeed(self.snapshot_now())

    # --- forwarding -------------------------------------------------------------------
    def _upstream_for(self, client) -> _TargetSide:
        key = (client[0], client[1])
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = _TargetSide(self, key)
            port = self.reactor.listenUDP(0, upstream, interface=self.host)
            _large_buffers(port)
            self._upstreams[key] = upstream
        return upstream

    def _arrived(self, side: Direction, datagram: bytes, port, address) -> None:
        side.received += 1
        side.kinds[datagram_kind(datagram)] += 1
        if self.blackhole or (side.loss > 0.0 and side.rng.random() < side.loss):
            side.dropped += 1
            return
        wait = side.delay
        if side.jitter > 0.0:
            wait = max(0.0, wait + side.rng.uniform(-side.jitter, side.jitter))
        if wait <= 0.0 and not side.queue:
            self._send(side, datagram, port, address)
            return
        departs_at = self.reactor.seconds() + wait
        side.sequence += 1
        heapq.heappush(side.queue, (departs_at, side.sequence, datagram, port, address))
        if side.queue[0][1] == side.sequence:  # the new datagram leaves first: (re)arm the timer
            self._arm(side)

    def _arm(self, side: Direction) -> None:
        if side.timer is not None and side.timer.active():
            side.timer.cancel()
        side.timer = None
        if side.queue:
            wait = max(0.0, side.queue[0][0] - self.reactor.seconds())
            side.timer = self.reactor.callLater(wait, self._release, side)

    def _release(self, side: Direction) -> None:
        side.timer = None
        now = self.reactor.seconds()
        queue = side.queue
        while queue and queue[0][0] <= now:
            _, _, datagram, port, address = heapq.heappop(queue)
            self._send(side, datagram, port, address)
        self._arm(side)

    def _send(self, side: Direction, datagram: bytes, port, address) -> None:
        if port is None:  # the relay was stopped
            side.dropped += 1
            return
        try:
            port.write(datagram, address)
        except OSError:
            side.send_errors += 1
            side.dropped += 1
            return
        side.forwarded += 1
