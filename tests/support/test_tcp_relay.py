"""The TCP relay the cluster tests cut databases with (tests/support/tcp_relay.py), against a
loopback echo server."""

from __future__ import annotations

import socket
import threading

from twisted.trial.unittest import TestCase

from tests.support.peers import free_port
from tests.support.tcp_relay import TCPRelay

HELD = 0.3  # seconds a black-holed relay is watched for leaks


class EchoServer:
    """Echoes what each connection sends, one thread per connection."""

    def __init__(self, testcase):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        testcase.addCleanup(self.listener.close)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    @staticmethod
    def _echo(connection):
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)


class TCPRelayTests(TestCase):
    def setUp(self):
        self.server = EchoServer(self)
        self.relay = TCPRelay(("127.0.0.1", self.server.port))
        self.addCleanup(self.relay.stop)

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.relay.port), timeout=5)
        self.addCleanup(client.close)
        return client

    def receive(self, client: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = client.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def test_relays_both_ways(self):
        client = self.connect()
        payload = bytes(range(256)) * 1000  # more than one read
        client.sendall(payload)
        self.assertEqual(self.receive(client, len(payload)), payload)
        self.assertEqual(self.relay.connections(), 1)

    def test_cut_holds_everything_until_restored(self):
        client = self.connect()
        client.sendall(b"before")
        self.assertEqual(self.receive(client, 6), b"before")
        self.relay.cut()
        client.sendall(b"during")
        late = self.connect()  # waits in the backlog
        late.sendall(b"late")
        for sock in (client, late):
            sock.settimeout(HELD)
            self.assertRaises(socket.timeout, sock.recv, 10)
            sock.settimeout(5)
        self.relay.restore()
        self.assertEqual(self.receive(client, 6), b"during")
        self.assertEqual(self.receive(late, 4), b"late")

    def test_drop_connections(self):
        client = self.connect()
        client.sendall(b"x")
        self.assertEqual(self.receive(client, 1), b"x")
        self.relay.drop_connections()
        self.assertEqual(client.recv(10), b"")

    def test_server_down_closes_the_client(self):
        relay = TCPRelay(("127.0.0.1", free_port(socket.SOCK_STREAM)))
        self.addCleanup(relay.stop)
        client = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        self.addCleanup(client.close)
        self.assertEqual(client.recv(10), b"")
