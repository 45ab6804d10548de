"""SIP over UDP, TCP and TLS on Twisted: listeners, connections and their reuse.

These classes move bytes only. Whole messages go to a ``MessageSink`` (the
stack) with the address they came from and the channel to answer on.
"""

from __future__ import annotations

import errno
import random
import socket
from typing import TYPE_CHECKING, Callable, Protocol as TypingProtocol

from twisted.internet import defer, endpoints, error, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from txuac.errors import SIPParseError, TransportError
from txuac.net.datagrams import UDPChannel
from txuac.ratelimitedlog import RateLimitedLog
from txuac.sip.framing import PING_BYTES, PONG_BYTES, KeepAlive, StreamFramer
from txuac.sip.parser import ParserLimits
from txuac.sip.address import Address

if TYPE_CHECKING:
    from txuac.net.handoff import Handoff

log = Logger()

_BLANK = b"\r\n\x00 "  # what keep-alive datagrams are made of

# RFC 5626 4.4.1: a ping not answered within 10 s means the flow has failed.
PONG_TIMEOUT = 10.0

ConnectionLostObserver = Callable[[Address], None]


class Channel(TypingProtocol):
    """Something a message can be sent on: a UDP socket with a peer, or a connection."""

    @property
    def local(self) -> Address: ...

    def send(self, data: bytes) -> None: ...


class MessageSink(TypingProtocol):
    def message_received(self, data: bytes, source: Address, channel: Channel) -> None: ...

    def connection_lost(self, connection: "StreamConnection") -> None: ...


class UDPListener(protocol.DatagramProtocol):
    """One UDP socket: receives datagrams for the sink and sends from the same port.

    The socket buffers are raised to ``buffer_size`` where the system allows
    (Linux caps it at net.core.rmem_max/wmem_max): every queued datagram costs
    a whole kernel buffer, so the default of about 200 KB overflows at a few
    hundred messages arriving at once, as answers to a burst of requests do.
    """

    buffer_size = 4 * 1024 * 1024
    # Every datagram is read whole (Twisted reads 8192 octets by default and drops the
    # rest): the largest UDP payload. The parser refuses one over max_message_size (513).
    max_datagram = 65535

    def __init__(self, host: str, port: int, sink: MessageSink):
        self.host = host
        self.port = port
        self.sink = sink
        self._socket: socket.socket | None = None  # the real socket, once started
        self._local: Address | None = None
        # Where the requests that would go out from this socket go out from instead: a
        # worker's own socket beside a shared one (docs/workers.rst), so that their
        # responses come back to this process.
        self.requests_from: UDPListener | None = None
        # With workers: what it reads of another worker's call goes there (txuac.net.handoff).
        self.handoff: Handoff | None = None

    def stopProtocol(self) -> None:
        self._socket = None

    @property
    def local(self) -> Address:
        local = self._local
        if local is None or local.port != self.port:  # made once the port is known (every request asks)
            local = self._local = Address("udp", self.host, self.port)
        return local

    def startProtocol(self) -> None:
        self.port = self.transport.getHost().port
        self.transport.maxPacketSize = self.max_datagram
        handle = getattr(self.transport, "getHandle", None)
        sock = handle() if handle is not None else None
        self._socket = sock if isinstance(sock, socket.socket) else None
        if isinstance(sock, socket.socket):
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    if sock.getsockopt(socket.SOL_SOCKET, option) < self.buffer_size:
                        sock.setsockopt(socket.SOL_SOCKET, option, self.buffer_size)
                except OSError as e:
                    log.info("cannot enlarge the buffers of UDP socket {port}: {error}", port=self.port,
                             error=str(e))

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        if not data or (data[0] in _BLANK and not data.strip(_BLANK)):
            return  # keep-alive datagrams (CRLF, NUL) carry nothing to answer
        handoff = self.handoff
        if handoff is not None and handoff.hand_off(self, data, addr):
            return
        self.receive(data, addr)

    def receive(self, data: bytes, addr: tuple) -> None:
        """A datagram from ``addr`` for the sink, read here or handed over by another worker."""
        source = Address("udp", addr[0], addr[1])
        self.sink.message_received(data, source, UDPChannel(self, source))

    def send(self, data: bytes, peer: Address) -> None:
        if self.transport is None:
            raise TransportError(f"UDP socket {self.host}:{self.port} is closed")
        sock = self._socket
        if sock is None:
            self._write(data, peer)
            return
        # Straight to the socket: Twisted's Port.write checks the address is an IP
        # literal, which ours always are, at a tenth of a REGISTER cycle's CPU.
        try:
            sock.sendto(data, (peer.host, peer.port))
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:
                return  # an ICMP error for an earlier datagram: UDP is unreliable anyway (as Twisted)
            if e.errno == errno.EINTR:
                self._write(data, peer)
                return
            raise TransportError(f"sending to {peer.host}:{peer.port} failed: {e}") from e
        except (ValueError, TypeError) as e:  # not an address of the socket's family
            raise TransportError(f"sending to {peer.host}:{peer.port} failed: {e}") from e

    def _write(self, data: bytes, peer: Address) -> None:
        try:
            self.transport.write(data, (peer.host, peer.port))
        except (OSError, ValueError, error.MessageLengthError) as e:
            # ValueError: InvalidAddressError, a host name or the wrong address family.
            raise TransportError(f"sending to {peer.host}:{peer.port} failed: {e}") from e


class StreamConnection(protocol.Protocol, TimeoutMixin):
    """A TCP or TLS connection carrying SIP, framed by Content-Length (RFC 3261 18.3)."""

    def __init__(self, transport_name: str, sink: MessageSink, pool: "ConnectionPool", outgoing: bool,
                 verified_name: str | None = None):
        self.transport_name = transport_name
        self.sink = sink
        self.pool = pool
        self.outgoing = outgoing
        # The name our TLS client verified the peer's certificate against (RFC 5922);
        # None for TCP and for connections the peer opened.
        self.verified_name = verified_name
        self.framer = StreamFramer(pool.limits, expect_pings=not outgoing)
        self.peer: Address | None = None
        self.local = Address(transport_name, "", 0)
        self.connected = False
        self.callLater = pool.reactor.callLater  # TimeoutMixin: the pool's reactor, not the global one
        # Why we closed it ourselves ("idle", "shutdown"), for a quiet loss; None: the peer,
        # the network or a dead flow ended it, which observers hear about.
        self.closed_by_us: str | None = None
        self._next_ping = None  # IDelayedCall of the next keep-alive (outgoing connections only)
        # Set by txuac.net.tls on the TLS connections we open: explains a failed handshake.
        self.tls_verdict = None
        self.failure_reason: str | None = None  # why the connection was lost, when known
        self._pong_deadline = None  # IDelayedCall: no pong by then, the connection is dead

    def connectionMade(self) -> None:
        if self.pool.closed:
            self.transport.loseConnection()  # opened after close_all(): nothing may use it
            return
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        self.peer = Address(self.transport_name, peer.host, peer.port)
        self.local = Address(self.transport_name, host.host, host.port)
        self.connected = True
        self.setTimeout(self.pool.idle_timeout)
        self.pool.register(self)
        self._schedule_ping()

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        try:
            items = self.framer.feed(data)
        except SIPParseError as e:
            self._close_unreadable(e)
            return
        for item in items:
            if item is KeepAlive.PING:
                self.transport.write(PONG_BYTES)  # RFC 5626 4.4.1
            elif item is KeepAlive.PONG:
                self._pong_received()
            elif isinstance(item, bytes):
                try:
                    self.sink.message_received(item, self.peer, self)
                except Exception:
                    # A defect in handling one message must not close a connection others share
                    # (Twisted drops the connection when dataReceived raises).
                    log.failure("{transport} message from {peer} could not be handled",
                                transport=self.transport_name, peer=self.peer)
        if self.framer.error is not None:
            self._close_unreadable(self.framer.error)

    def _close_unreadable(self, error: SIPParseError) -> None:
        self.pool.input_log.emit("connections closed for unreadable input",
                                 "closing connection from {peer}: {error}", peer=self.peer, error=str(error))
        self.transport.loseConnection()

    def send(self, data: bytes) -> None:
        if not self.connected:
            raise TransportError(f"{self.transport_name} connection to {self.peer} is closed")
        self.resetTimeout()
        self.transport.write(data)

    def lost_text(self) -> str:
        """What users read when the connection is gone: with the TLS verdict, if one."""
        if self.failure_reason is not None:
            return f"TLS connection to {self.peer} failed: {self.failure_reason}"
        return f"connection to {self.peer} lost"

    def timeoutConnection(self) -> None:
        log.debug("closing idle {transport} connection to {peer}", transport=self.transport_name, peer=self.peer)
        self.close("idle")

    def close(self, why: str) -> None:
        """Close on our own initiative (``why``: "idle", "shutdown"): a quiet loss."""
        self.closed_by_us = why
        self._stop_keepalive()
        self.transport.loseConnection()

    # --- RFC 5626 4.4.1 CRLF keep-alives, on connections we opened ------------------------
    def _schedule_ping(self) -> None:
        """The next ping in 80-100% of the interval (RFC 5626 4.4.1), if keep-alives are on."""
        if not self.outgoing or not self.connected or self.peer is None:
            return
        interval = self.pool.keepalive_interval_for(self.peer)
        if interval <= 0:
            return
        self._next_ping = self.callLater(interval * self.pool.rng.uniform(0.8, 1.0), self._ping)

    def _ping(self) -> None:
        self._next_ping = None
        if not self.connected:
            return
        self.transport.write(PING_BYTES)
        if self.pool.answers_pings(self.peer):
            self._pong_deadline = self.callLater(self.pool.pong_timeout, self._pong_missing)
        else:
            # Not known to answer (RFC 5626 is optional for servers): the pings still keep
            # NAT bindings open; a pong, when one comes, arms the deadline from then on.
            self._schedule_ping()

    def _pong_received(self) -> None:
        if self.peer is not None:
            self.pool.pong_seen(self.peer)
        if self._pong_deadline is not None:
            if self._pong_deadline.active():
                self._pong_deadline.cancel()
            self._pong_deadline = None
            self._schedule_ping()

    def _pong_missing(self) -> None:
        """RFC 5626 4.4.1: no pong within 10 s, the flow has failed: drop it at once."""
        self._pong_deadline = None
        log.warn("{transport} connection to {peer} did not answer a keep-alive within {timeout} s: closing it",
                 transport=self.transport_name, peer=self.peer, timeout=self.pool.pong_timeout)
        self.transport.abortConnection()

    def _stop_keepalive(self) -> None:
        for call in (self._next_ping, self._pong_deadline):
            if call is not None and call.active():
                call.cancel()
        self._next_ping = self._pong_deadline = None

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self.tls_verdict is not None and reason is not None:
            self.failure_reason = self.tls_verdict.explain(reason)
        was_connected, self.connected = self.connected, False
        self.setTimeout(None)
        self._stop_keepalive()
        if was_connected:
            self.pool.unregister(self)
            self.sink.connection_lost(self)


class PendingConnection:
    """A channel to a peer whose connection is still being opened: what is sent waits for it.

    Used for responses whose request connection closed (RFC 3261 18.2.2); when
    the connection fails, ``on_failure`` is called once and later sends raise.
    """

    def __init__(self, pool: "ConnectionPool", address: Address, on_failure: Callable[[], None]):
        self.local = Address(address.transport, "", 0)
        self.peer = address
        self._queue: list[bytes] = []
        self._connection: StreamConnection | None = None
        self._error: str | None = None
        self._on_failure = on_failure
        pool.connect(address).addCallbacks(self._opened, self._failed)

    def send(self, data: bytes) -> None:
        if self._error is not None:
            raise TransportError(self._error)
        if self._connection is not None:
            self._connection.send(data)
        else:
            self._queue.append(data)

    def _opened(self, connection: StreamConnection) -> None:
        self._connection = connection
        queued, self._queue = self._queue, []
        try:
            for data in queued:
                connection.send(data)
        except TransportError as e:
            self._failed(e)

    def _failed(self, reason) -> None:
        self._error = str(getattr(reason, "value", reason))
        self._queue.clear()
        self._on_failure()


class StreamServerFactory(protocol.Factory):
    """Accepts incoming TCP/TLS connections; they join the pool for reuse."""

    def __init__(self, transport_name: str, sink: MessageSink, pool: "ConnectionPool"):
        self.transport_name = transport_name
        self.sink = sink
        self.pool = pool

    def buildProtocol(self, addr) -> StreamConnection:
        connection = StreamConnection(self.transport_name, self.sink, self.pool, outgoing=False)
        connection.factory = self
        return connection


class ConnectionPool:
    """Open TCP/TLS connections by (transport, peer host, peer port), in both directions.

    A request to a peer reuses any open connection to it, including one the
    peer opened to us (RFC 3261 18.1.1 allows either).
    """

    def __init__(self, reactor: IReactorTime, sink: MessageSink, limits: ParserLimits, idle_timeout: float,
                 tls_client_options=None, connect_timeout: float = 10.0, keepalive_interval: float = 0.0,
                 pong_timeout: float = PONG_TIMEOUT, rng: random.Random | None = None):
        self.reactor = reactor
        self.sink = sink
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.tls_client_options = tls_client_options  # callable(hostname) -> IOpenSSLClientConnectionCreator
        self.connect_timeout = connect_timeout
        # Seconds between CRLF keep-alives on the connections we open (0: none), and how
        # long a peer known to answer them has to do so.
        self.keepalive_interval = keepalive_interval
        self.pong_timeout = pong_timeout
        self.rng = rng or random.Random()
        self._flow_intervals: dict[tuple[str, str, int], float] = {}  # Flow-Timer by peer
        self._answering_peers: set[tuple[str, str, int]] = set()  # peers seen to answer pings
        self._connections: dict[tuple, StreamConnection] = {}
        self._pending: dict[tuple, list[defer.Deferred]] = {}
        self.lost_observers: list[ConnectionLostObserver] = []
        self.closed = False
        self.input_log = RateLimitedLog(log, reactor)  # what peers can make us log

    @staticmethod
    def _key(address: Address, verified_name: str | None = None) -> tuple:
        """TLS connections are also keyed by the name they were verified for: a connection
        checked for one domain is never reused for another at the same address."""
        return address.transport, address.host, address.port, verified_name if address.transport == "tls" else None

    def register(self, connection: StreamConnection) -> None:
        self._connections.setdefault(self._key(connection.peer, connection.verified_name), connection)

    def unregister(self, connection: StreamConnection) -> None:
        if connection.peer is None:
            return
        key = self._key(connection.peer, connection.verified_name)
        if self._connections.get(key) is connection:
            del self._connections[key]

    # --- keep-alives and lost connections ---------------------------------------------------
    def set_keepalive_interval(self, address: Address, seconds: float | None) -> None:
        """Keep-alive interval for connections to ``address``: a Flow-Timer (RFC 5626 4.4.1)
        the registrar gave; None returns to ``keepalive_interval``. A registrar sending a
        Flow-Timer supports outbound, so it answers pings. Takes effect from the next ping."""
        peer = (address.transport, address.host, address.port)
        if seconds is None or seconds <= 0:
            self._flow_intervals.pop(peer, None)
            return
        self._flow_intervals[peer] = float(seconds)
        self._answering_peers.add(peer)
        for connection in list(self._connections.values()):
            if connection.peer == address and connection._next_ping is None and connection._pong_deadline is None:
                connection._schedule_ping()  # keep-alives were off for it until now

    def keepalive_interval_for(self, address: Address) -> float:
        return self._flow_intervals.get((address.transport, address.host, address.port), self.keepalive_interval)

    def answers_pings(self, address: Address) -> bool:
        return (address.transport, address.host, address.port) in self._answering_peers

    def pong_seen(self, address: Address) -> None:
        if len(self._answering_peers) < 65536:
            self._answering_peers.add((address.transport, address.host, address.port))

    def add_connection_lost_observer(self, observer: ConnectionLostObserver) -> None:
        """Call ``observer(peer)`` when a stream connection is lost other than by our own
        choice (idle timeout, shutdown): closed or reset by the peer, or dead by keep-alive."""
        self.lost_observers.append(observer)

    def remove_connection_lost_observer(self, observer: ConnectionLostObserver) -> None:
        if observer in self.lost_observers:
            self.lost_observers.remove(observer)

    def connection_lost(self, connection: StreamConnection) -> None:
        """Tell the observers, unless we closed ``connection`` ourselves."""
        if connection.closed_by_us is not None or connection.peer is None or self.closed:
            return
        if connection.failure_reason is not None:
            # One line per peer and name per 10 s: every account using it fails the same way.
            self.input_log.emit(f"TLS failures with {connection.peer} for {connection.verified_name}",
                                "{error}", peer=connection.peer, server_name=connection.verified_name,
                                error=connection.lost_text())
        else:
            log.info("{transport} connection to {peer} lost", transport=connection.transport_name,
                     peer=connection.peer)
        for observer in tuple(self.lost_observers):
            try:
                observer(connection.peer)
            except Exception:  # noqa: BLE001 - one observer must not break the others or the stack
                log.failure("connection-lost observer failed")

    def find(self, address: Address) -> StreamConnection | None:
        """A connection the peer at ``address`` opened to us, or a TCP one we opened."""
        return self._connections.get(self._key(address))

    def connect(self, address: Address, server_name: str | None = None) -> defer.Deferred:
        """A Deferred firing with an open connection to ``address``, reusing one if possible.

        ``server_name`` is the name a TLS certificate must match (RFC 5922);
        it defaults to the address.
        """
        if self.closed:
            return defer.fail(TransportError("the connection pool is closed"))
        if address.transport == "tls":
            server_name = server_name or address.host
        key = self._key(address, server_name)
        existing = self._connections.get(key)
        if existing is not None and existing.connected:
            return defer.succeed(existing)
        waiting = self._pending.get(key)
        if waiting is not None:
            d = defer.Deferred()
            waiting.append(d)
            return d
        self._pending[key] = []
        d = self._open(address, server_name)
        d.addBoth(self._opened, key)
        return d

    def _open(self, address: Address, server_name: str | None) -> defer.Deferred:
        if ":" in address.host:
            endpoint = endpoints.TCP6ClientEndpoint(self.reactor, address.host, address.port,
                                                    timeout=self.connect_timeout)
        else:
            endpoint = endpoints.TCP4ClientEndpoint(self.reactor, address.host, address.port,
                                                    timeout=self.connect_timeout)
        if address.transport == "tls":
            if self.tls_client_options is None:
                return defer.fail(TransportError("TLS is not configured"))
            endpoint = endpoints.wrapClientTLS(self.tls_client_options(server_name), endpoint)
        verified_name = server_name if address.transport == "tls" else None
        factory = protocol.Factory.forProtocol(lambda: StreamConnection(address.transport, self.sink, self,
                                                                        outgoing=True, verified_name=verified_name))
        d = endpoint.connect(factory)
        d.addErrback(self._connect_failed, address)
        return d

    @staticmethod
    def _connect_failed(failure, address: Address):
        if failure.check(TransportError):
            return failure
        raise TransportError(f"cannot connect to {address.transport}:{address.host}:{address.port}: "
                             f"{failure.getErrorMessage()}")

    def _opened(self, result, key):
        for d in self._pending.pop(key, []):
            if isinstance(result, StreamConnection):
                d.callback(result)
            else:
                d.errback(result)
        return result

    def close_all(self) -> None:
        """Close every connection; connections completing later are closed at once."""
        self.closed = True
        self.input_log.flush()
        for connection in list(self._connections.values()):
            connection.setTimeout(None)
            connection.close("shutdown")

    def __len__(self) -> int:
        return len(self._connections)
