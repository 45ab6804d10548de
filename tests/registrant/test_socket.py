"""Per-account ``socket`` and ``[uac] default_socket``: the REGISTER leaves from that local socket."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.accounts import make_row
from tests.support.peers import free_port
from tests.support.registrant_harness import ServiceTestCase
from tests.support.services import start_uac
from tests.support.stores import sqlite_uacreg
from txuac.config import settings_from_dict
from txuac.errors import ConfigError
from txuac.service import UACService
from txuac.sip.address import Address


class DefaultSocketConfigTests(SynchronousTestCase):

    def test_default_socket_must_be_one_of_ours(self):
        core = {"listen": ["udp:127.0.0.1:5070", "udp:127.0.0.1:5072"]}
        settings = settings_from_dict({"core": core, "uac": {"default_socket": "udp:127.0.0.1:5072"}})
        self.assertEqual(settings.uac.default_socket, "udp:127.0.0.1:5072")
        with self.assertRaises(ConfigError) as raised:
            settings_from_dict({"core": core, "uac": {"default_socket": "udp:127.0.0.1:5099"}}, "uac.toml")
        self.assertIn("[uac] default_socket", str(raised.exception))


class SocketParsedOnceTests(ServiceTestCase):
    def test_a_rows_socket_is_parsed_when_loaded_not_per_register(self):
        # Every REGISTER goes out from the very Address parsed when the row was loaded (a
        # parse per REGISTER would hand the stack a new one each time).
        self.start([make_row("acc1", socket="udp:127.0.0.1:5072")])
        source = self.record().source
        self.assertEqual(source, Address("udp", "127.0.0.1", 5072))
        for _ in range(3):
            [sent] = self.stack.pending()
            self.stack.ok(sent, expires=60)
            self.advance(60)
        self.assertGreaterEqual(len(self.stack.sources), 4)
        for used in self.stack.sources:
            self.assertIs(used, source)


class SourceSocketTests(TestCase):
    """A plain UDP socket plays the registrar and records the source port of each REGISTER."""

    timeout = 20

    def setUp(self):
        self.registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.registrar.bind(("127.0.0.1", 0))
        self.registrar.setblocking(False)
        self.addCleanup(self.registrar.close)
        self.ports = [free_port(), free_port()]

    @defer.inlineCallbacks
    def start(self, rows: list[dict], default_socket: str | None = None) -> UACService:
        path = yield sqlite_uacreg(self, rows)
        uac = {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{self.ports[0]}"}
        if default_socket:
            uac["default_socket"] = default_socket
        return start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{port}" for port in self.ports], "timer_t1": 50}, "uac": uac})

    @defer.inlineCallbacks
    def source_ports(self, count: int) -> list[int]:
        """Source ports of the first ``count`` REGISTERs the registrar socket receives."""
        ports: list[int] = []
        for _ in range(200):
            while len(ports) < count:
                try:
                    data, (_, port) = self.registrar.recvfrom(65535)
                except BlockingIOError:
                    break
                if data.startswith(b"REGISTER"):
                    ports.append(port)
            if len(ports) >= count:
                return ports
            yield task.deferLater(reactor, 0.02, lambda: None)
        raise AssertionError(f"only {len(ports)} REGISTERs arrived")

    def row(self, l_uuid: str, socket_text: str = "") -> dict:
        host, port = self.registrar.getsockname()
        return make_row(l_uuid, auth_proxy=f"sip:{host}:{port}", socket=socket_text)

    @defer.inlineCallbacks
    def test_row_socket_and_default_socket(self):
        second = f"udp:127.0.0.1:{self.ports[1]}"
        yield self.start([self.row("with-socket", second)])
        self.assertEqual((yield self.source_ports(1)), [self.ports[1]])

    @defer.inlineCallbacks
    def test_default_socket_applies_to_rows_without_one(self):
        yield self.start([self.row("plain")], default_socket=f"udp:127.0.0.1:{self.ports[1]}")
        self.assertEqual((yield self.source_ports(1)), [self.ports[1]])

    @defer.inlineCallbacks
    def test_without_socket_the_first_one_is_used(self):
        yield self.start([self.row("plain")])
        self.assertEqual((yield self.source_ports(1)), [self.ports[0]])

    @defer.inlineCallbacks
    def test_a_socket_we_do_not_have_fails_that_account_only(self):
        service = yield self.start([self.row("bad", "udp:127.0.0.1:1"), self.row("good")])
        self.assertEqual((yield self.source_ports(1)), [self.ports[0]])
        record = service.registrant.records["bad"]
        self.assertIn("not one of our sockets", record.last_failure)
