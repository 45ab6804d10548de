"""A TCP relay on loopback in front of a server (a database), served by a thread, that a test
can black-hole: for outages of the network between a process and its server without
stopping either.

Usage (blocking; from a trial test, a bench, anything)::

    relay = TCPRelay(("127.0.0.1", server_port))   # listening at once on relay.port
    ...                                             # clients connect to 127.0.0.1:relay.port
    relay.cut()                                     # nothing passes, new connections hang
    relay.restore()                                 # what was held flows again
    relay.drop_connections()                        # every relayed connection closed
    relay.stop()
"""

from __future__ import annotations

import select
import socket
import threading
import time


class TCPRelay:
    """A TCP relay on 127.0.0.1 in front of ``target`` (a database), served by a thread.

    ``cut()`` black-holes it: nothing is read from either side and new connections wait in
    the listen backlog, as if the network dropped every packet; ``restore()`` lets what was
    held flow again (TCP's retransmissions would deliver it). ``drop_connections()`` closes
    every relayed connection, as a peer that gave up would.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.blackholed = False
        self._peers: dict[socket.socket, socket.socket] = {}
        self._pending: dict[socket.socket, bytes] = {}
        self._lock = threading.Lock()
        self._running = True
        self._drop = False
        self._thread = threading.Thread(target=self._serve, name=f"tcp-relay-{self.port}", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self.blackholed = True

    def restore(self) -> None:
        self.blackholed = False

    def drop_connections(self) -> None:
        with self._lock:
            self._drop = True

    def connections(self) -> int:
        return len(self._peers) // 2

    def stop(self) -> None:
        self._running = False
        self._thread.join(5)
        self._close_all()
        self.listener.close()

    def _close_all(self) -> None:
        for sock in list(self._peers):
            sock.close()
        self._peers.clear()
        self._pending.clear()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()  # the server is down: the client sees its connection closed
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = upstream
        self._peers[upstream] = client

    def _close_pair(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        self._pending.pop(sock, None)
        sock.close()
        if other is not None:
            self._peers.pop(other, None)
            self._pending.pop(other, None)
            other.close()

    def _serve(self) -> None:
        while self._running:
            with self._lock:
                if self._drop:
                    self._close_all()
                    self._drop = False
            if self.blackholed:
                time.sleep(0.02)
                continue
            readable = [self.listener, *self._peers]
            writable = [sock for sock, data in self._pending.items() if data]
            try:
                ready, can_write, _ = select.select(readable, writable, [], 0.05)
            except (OSError, ValueError):
                continue
            for sock in can_write:
                if sock in self._pending:
                    try:
                        sent = sock.send(self._pending[sock])
                    except OSError:
                        self._close_pair(sock)
                        continue
                    self._pending[sock] = self._pending[sock][sent:]
            for sock in ready:
                if sock is self.listener:
                    self._accept()
                    continue
                if sock not in self._peers:
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._close_pair(sock)
                    continue
                other = self._peers[sock]
                self._pending[other] = self._pending.get(other, b"") + data
