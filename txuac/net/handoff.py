"""One source's calls over every worker: the worker that reads a datagram on a shared
listen socket hands it to the worker that owns its call (txuac.sip.affinity).

SO_REUSEPORT gives every datagram of one source address and port to one worker; an SBC or
a trunk in front of the proxy is one source. So the worker the kernel picked reads the
Call-ID, and when another worker owns the call it writes the datagram, with its source
and the listen address it came to, over a UNIX stream connection to that worker, which
takes it as if its own socket had read it (and answers from the same shared address).
Each worker listens on ``handoff-<index>.sock`` in the workers' directory (mode 0700);
the others connect to it when they first have something for it. docs/workers.rst.

While the owner cannot be reached (not started yet, starting again after it ended) the
worker handles the message itself, as the kernel does while a worker's socket is gone;
while the connection is being made, messages wait for it (at most MAX_PENDING). While the owner takes less than it is sent (the connection's
buffer full), messages for it are dropped and counted, as a full socket buffer drops
them: the peers retransmit. Nothing grows without bound.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from twisted.internet import error, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from txuac.ratelimitedlog import RateLimitedLog
from txuac.sip.affinity import call_owner

if TYPE_CHECKING:
    from txuac.net.transports import UDPListener

log = Logger()

MAX_FRAME = 65535 + 256  # the largest datagram and the line that says where it came from
BUFFER = 1024 * 1024  # bytes a connection buffers before messages for its worker are dropped
RETRY_AFTER = 1.0  # seconds between two attempts to reach a worker that could not be reached
MAX_PENDING = 1024  # datagrams waiting for a worker's connection to be made


def handoff_socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"handoff-{index}.sock")


def encode_frame(listen_host: str, listen_port: int, source_host: str, source_port: int, data: bytes) -> bytes:
    """``<listen host> <listen port> <source host> <source port>`` LF, then the datagram."""
    return f"{listen_host} {listen_port} {source_host} {source_port}\n".encode("ascii") + data


def decode_frame(frame: bytes) -> tuple[str, int, str, int, bytes]:
    """What encode_frame wrote; ValueError when ``frame`` is not that."""
    line, separator, data = frame.partition(b"\n")
    listen_host, listen_port, source_host, source_port = line.decode("ascii").split(" ")
    if not separator or not data:
        raise ValueError("no datagram after the address line")
    return listen_host, int(listen_port), source_host, int(source_port), data


class Handoff:
    """Worker ``index`` of ``workers``: hands datagrams to their call's worker and takes
    those the others hand to it, for the UDPListeners added with ``add_listener``."""

    def __init__(self, reactor, directory: str, index: int, workers: int):
        self.reactor = reactor
        self.directory = directory
        self.index = index
        self.workers = workers
        self.listeners: dict[tuple[str, int], UDPListener] = {}
        self._links: dict[int, _Link] = {}
        self._taking: set[_Taking] = set()  # the other workers' connections to this one
        self._stopped = False
        self._port = None
        self._warnings = RateLimitedLog(log, reactor)
        self.handed_off = 0  # datagrams written to another worker
        self.taken = 0  # datagrams another worker handed to this one
        self.kept = 0  # datagrams of another worker's call handled here: it could not be reached
        self.dropped = 0  # datagrams for a worker whose connection was full

    def add_listener(self, listener: "UDPListener") -> None:
        """``listener`` (a shared listen socket) hands off what it reads; what the others
        hand off for its address comes to it."""
        self.listeners[(listener.host, listener.port)] = listener
        listener.handoff = self

    def start(self) -> None:
        """Listen for the other workers. When that fails (the directory cannot be written
        to), this worker logs why and handles its own share only of what the kernel gives
        it: the others, unable to reach it, handle its calls themselves."""
        path = handoff_socket_path(self.directory, self.index)
        factory = protocol.Factory.forProtocol(_Taking)
        factory.noisy = False
        factory.handoff = self  # type: ignore[attr-defined]
        try:
            if os.path.exists(path):
                os.unlink(path)  # left by this worker's previous run
            self._port = self.reactor.listenUNIX(path, factory, mode=0o600)
        except (OSError, error.CannotListenError) as e:
            log.error("workers cannot hand calls to this one ({path}: {error}): each call is handled by the "
                      "worker that reads it", path=path, error=str(e))

    def stop(self):
        """Stops listening and closes the connections to and from the others (a Deferred,
        or None): they hand this worker's calls to nobody until it is back, and it hands
        nothing any more."""
        self._stopped = True
        for link in self._links.values():
            link.close()
        self._links.clear()
        for taking in list(self._taking):
            taking.transport.loseConnection()
        self._warnings.flush()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    def hand_off(self, listener: "UDPListener", data: bytes, addr: tuple) -> bool:
        """True when ``data`` (read by ``listener`` from ``addr``) is another worker's to
        handle: handed to it, waiting for its connection, or dropped (its connection full,
        or MAX_PENDING waiting); False when this worker handles it."""
        owner = call_owner(data, self.workers)
        if owner is None or owner == self.index or self._stopped:
            return False
        link = self._links.get(owner)
        if link is None:
            link = self._links[owner] = _Link(self, owner)
        sender = link.sender
        if sender is None and not link.connecting and not link.connect():
            self.kept += 1  # out of reach, tried again after RETRY_AFTER
            return False
        frame = encode_frame(listener.host, listener.port, addr[0], addr[1], data)
        if sender is not None and not sender.paused:
            sender.sendString(frame)
            self.handed_off += 1
            return True
        if sender is None and len(link.pending) < MAX_PENDING:
            link.pending.append(frame)  # the connection is being made
            return True
        self.dropped += 1
        self._warnings.emit("full", "worker {worker} takes fewer messages than it is handed: dropping some",
                            worker=owner)
        return True

    def take(self, frame: bytes) -> None:
        """A datagram another worker handed to this one."""
        if self.deliver(frame):
            self.taken += 1

    def deliver(self, frame: bytes) -> bool:
        """The datagram of ``frame`` to its listener here; False when it has none."""
        try:
            listen_host, listen_port, source_host, source_port, data = decode_frame(frame)
        except (ValueError, UnicodeDecodeError):
            self._warnings.emit("unreadable", "unreadable message from another worker dropped")
            return False
        listener = self.listeners.get((listen_host, listen_port))
        if listener is None:
            self._warnings.emit("unknown", "message handed over for {host}:{port}, which is not ours: dropped",
                                host=listen_host, port=listen_port)
            return False
        listener.receive(data, (source_host, source_port))
        return True

    def _unreachable(self, owner: int, reason: str) -> None:
        self._warnings.emit(f"unreachable {owner}",
                            "worker {worker} cannot be reached ({reason}): its calls are handled here meanwhile",
                            level=LogLevel.info, worker=owner, reason=reason)


class _Link:
    """The connection to one other worker: made when first needed, again after it is lost
    (at most every RETRY_AFTER seconds). What is handed over while it is being made waits
    in ``pending`` (at most MAX_PENDING), and is handled here if it cannot be made."""

    def __init__(self, handoff: Handoff, owner: int):
        self.handoff = handoff
        self.owner = owner
        self.sender: _Sending | None = None
        self.connecting = False
        self.pending: list[bytes] = []
        self.retry_at = 0.0
        self.closed = False

    def connect(self) -> bool:
        """Start making the connection; False when it is not time to try again."""
        reactor = self.handoff.reactor
        if self.closed or reactor.seconds() < self.retry_at:
            return False
        self.connecting = True
        reactor.connectUNIX(handoff_socket_path(self.handoff.directory, self.owner), _SendingFactory(self),
                            timeout=5)
        return True

    def connected(self, sender: "_Sending") -> None:
        self.connecting = False
        if self.closed:
            sender.transport.loseConnection()
            return
        self.sender = sender
        pending, self.pending = self.pending, []
        for frame in pending:
            sender.sendString(frame)
        self.handoff.handed_off += len(pending)

    def failed(self, reason: str) -> None:
        self.connecting = False
        self.sender = None
        self.retry_at = self.handoff.reactor.seconds() + RETRY_AFTER
        pending, self.pending = self.pending, []
        if self.closed:
            return
        self.handoff._unreachable(self.owner, reason)
        for frame in pending:
            self.handoff.kept += 1
            self.handoff.deliver(frame)

    def close(self) -> None:
        self.closed = True
        sender, self.sender = self.sender, None
        if sender is not None:
            sender.transport.loseConnection()


@implementer(IPushProducer)
class _Sending(Int32StringReceiver):
    """Our side of a connection to another worker: only writes."""

    MAX_LENGTH = MAX_FRAME

    def __init__(self, link: _Link):
        self.link = link
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.bufferSize = BUFFER
        self.transport.registerProducer(self, True)
        self.link.connected(self)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self.link.sender is self:
            self.link.failed(reason.getErrorMessage())

    def stringReceived(self, string: bytes) -> None:
        self.transport.loseConnection()  # the other side never writes

    # IPushProducer: the transport says when its buffer is over BUFFER, and when it is not.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class _SendingFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, link: _Link):
        self.link = link

    def buildProtocol(self, addr) -> _Sending:
        return _Sending(self.link)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.link.failed(reason.getErrorMessage())


class _Taking(Int32StringReceiver):
    """Another worker's connection to this one: datagrams it hands over."""

    MAX_LENGTH = MAX_FRAME

    def connectionMade(self) -> None:
        self.factory.handoff._taking.add(self)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.factory.handoff._taking.discard(self)

    def stringReceived(self, frame: bytes) -> None:
        self.factory.handoff.take(frame)

    def lengthLimitExceeded(self, length: int) -> None:
        self.factory.handoff._warnings.emit("too long", "a frame of {length} bytes from another worker: closing",
                                            length=length)
        self.transport.loseConnection()
