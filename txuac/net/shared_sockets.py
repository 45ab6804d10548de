"""Listen sockets several worker processes bind at once (Linux SO_REUSEPORT).

Each worker makes its own socket with SO_REUSEPORT set before ``bind``, then hands it to
the reactor (``adoptDatagramPort``, ``adoptStreamPort``). The kernel spreads what arrives
over the group: a UDP datagram by a hash of its 4-tuple, so everything one source
address and port sends reaches the same worker; a TCP connection to one worker for its
whole life. See docs/workers.rst.
"""

from __future__ import annotations

import socket

from twisted.internet import error
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.tls import TLSMemoryBIOFactory


def shared_socket(kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    """A non-blocking socket bound to ``host``:``port`` with SO_REUSEPORT (and, for TCP,
    listening); CannotListenError when it cannot be bound, as the reactor's listen* raise."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's listenTCP
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(50)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise error.CannotListenError(host, port, e) from None
    return sock


def listen_udp_shared(reactor, host: str, port: int, protocol: DatagramProtocol, max_packet_size: int = 65535):
    """``reactor.listenUDP`` on a socket other workers bind too."""
    sock = shared_socket(socket.SOCK_DGRAM, host, port)
    try:
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, max_packet_size)
    finally:
        sock.close()  # the reactor's port holds its own duplicate


def listen_stream_shared(reactor, host: str, port: int, factory: Factory, tls_options=None):
    """``reactor.listenTCP`` (``listenSSL`` with ``tls_options``) on a socket other workers bind too."""
    if tls_options is not None:
        factory = TLSMemoryBIOFactory(tls_options, False, factory)
    sock = shared_socket(socket.SOCK_STREAM, host, port)
    try:
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()
