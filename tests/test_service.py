"""txuac.service in-process, on the real reactor and real loopback sockets.

UACService embedded in a parent MultiService starts, answers, stops and lets
go of its sockets; stopService waits for in-flight client transactions; a
socket that cannot be bound is a ConfigError naming it, with nothing left bound.
(The same service run by twistd and twist is tests/test_tap.py.)
"""

from __future__ import annotations

import os
import socket
import subprocess

from twisted.application import service
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.peers import free_port
from txuac.admin.web import AdminWebService
from txuac.config import settings_from_dict
from txuac.errors import ConfigError, StoreError, TransactionTimeout, TransportError
from txuac.service import SIPService, UACService
from txuac.sip import Request, Response, make_response, parse_message
from txuac.sip.via import Address

NO_RPC = {"enabled": False}  # the JSON-RPC server would bind port 5064 (tests/admin cover it)


def request_bytes(method: str, port: int, call_id: str, via: str | None = None) -> bytes:
    lines = [
        f"{method} sip:uac@127.0.0.1:{port} SIP/2.0",
        *([f"Via: {via}"] if via else []),
        "Max-Forwards: 70",
        "From: <sip:test@127.0.0.1>;tag=t1",
        f"To: <sip:uac@127.0.0.1:{port}>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def bindable(transport: str, port: int, host: str = "127.0.0.1") -> bool:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as twisted does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class SlowPeer(protocol.DatagramProtocol):
    """A UDP UAS that answers the first copy of each request with 200 after ``delay``."""

    def __init__(self, delay: float | None):
        self.delay = delay
        self.received: list[Request] = []
        self.answered: list[Response] = []

    def datagramReceived(self, data: bytes, addr) -> None:
        request = parse_message(data)
        first = all(r.call_id != request.call_id for r in self.received)
        self.received.append(request)
        if first and self.delay is not None:
            reactor.callLater(self.delay, self.answer, request, addr)

    def answer(self, request: Request, addr) -> None:
        if self.transport is None:
            return
        response = make_response(request, 200, to_tag="peer")
        self.answered.append(response)
        self.transport.write(bytes(response), addr)


class Client(protocol.DatagramProtocol):
    def __init__(self):
        self.responses: defer.DeferredQueue = defer.DeferredQueue()

    def datagramReceived(self, data: bytes, addr) -> None:
        self.responses.put(parse_message(data))


class UACServiceTests(TestCase):
    timeout = 15

    def setUp(self):
        self.port = free_port()
        self.settings = settings_from_dict(
            {"rpc": NO_RPC,
             "core": {"listen": [f"udp:127.0.0.1:{self.port}", f"tcp:127.0.0.1:{self.port}"], "timer_t1": 50,
                      "timer_t2": 400}},
            "test.toml",
        )

    def udp(self, proto) -> int:
        port = reactor.listenUDP(0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def embedded(self, settings=None):
        """A UACService inside a parent MultiService, started as twistd would."""
        parent = service.MultiService()
        uac = UACService(settings or self.settings)
        uac.setServiceParent(parent)
        parent.privilegedStartService()
        parent.startService()
        self.addCleanup(lambda: parent.stopService() if parent.running else None)
        return parent, uac

    def store_settings(self, path: str, port: int | None = None):
        port = port or self.port
        return settings_from_dict(
            {"rpc": NO_RPC, "core": {"listen": [f"udp:127.0.0.1:{port}"]},
             "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{port}"}},
            "test.toml")

    @defer.inlineCallbacks
    def test_store_that_cannot_be_used_is_a_startup_error(self):
        """Embedded without on_startup_error: one error line, registrant_ready() fails, the
        rest runs; with it, the callback gets the same error (twistd's exit 1 and line)."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _, uac = self.embedded(self.store_settings(directory))
        failure = yield self.assertFailure(uac.registrant_ready(), StoreError)
        expected = f"test.toml: [uac] reg_db_url: cannot open sqlite:///{directory}: it is a directory"
        self.assertEqual(str(failure), expected)
        self.assertEqual([formatEvent(e) for e in events if e.get("log_level") == LogLevel.error], [expected])
        self.assertTrue(uac.sip.running)

        seen = []
        other = UACService(self.store_settings(directory, free_port()), reactor, on_startup_error=seen.append)
        other.startService()
        self.addCleanup(other.stopService)
        yield self.assertFailure(other.registrant_ready(), StoreError)
        self.assertEqual([str(e) for e in seen], [expected])

    @defer.inlineCallbacks
    def test_registrant_ready_after_the_accounts_load(self):
        path = os.path.join(os.path.abspath(self.mktemp()) + ".sqlite")
        _, uac = self.embedded(self.store_settings(path))
        yield uac.registrant_ready()
        self.assertEqual(uac.registrant.store.table_version, 6)
        yield uac.registrant_ready()  # once ready, at once

    @defer.inlineCallbacks
    def test_embedded_start_answer_stop(self):
        parent, uac = self.embedded()
        self.assertTrue(uac.running)
        self.assertTrue(uac.sip.running)
        self.assertFalse(bindable("udp", self.port))
        self.assertFalse(bindable("tcp", self.port))
        client = Client()
        client_port = self.udp(client)
        client.transport.write(
            request_bytes("OPTIONS", self.port, "embedded-1", f"SIP/2.0/UDP 127.0.0.1:{client_port};branch=z9hG4bKe1;rport"),
            ("127.0.0.1", self.port))
        response = yield client.responses.get()
        self.assertEqual((response.status, response.call_id), (200, "embedded-1"))

        yield parent.stopService()
        self.assertFalse(uac.running)
        self.assertFalse(uac.sip.running)
        self.assertEqual(uac.sip.ports, [])
        self.assertTrue(bindable("udp", self.port))
        self.assertTrue(bindable("tcp", self.port))

    @defer.inlineCallbacks
    def test_ipv6(self):
        try:
            port = free_port(host="::1")
        except OSError:
            raise self.skipTest("no IPv6 loopback")
        settings = settings_from_dict({"rpc": NO_RPC, "core": {"listen": [f"udp:[::1]:{port}", f"tcp:[::1]:{port}"]}})
        parent, uac = self.embedded(settings)
        self.assertEqual(uac.sip.bound_address("tcp"), Address("tcp", "::1", port))
        client = Client()
        client_port = reactor.listenUDP(0, client, interface="::1")
        self.addCleanup(client_port.stopListening)
        client.transport.write(
            request_bytes("OPTIONS", port, "v6-1", f"SIP/2.0/UDP [::1]:{client_port.getHost().port};branch=z9hG4bK6;rport"),
            ("::1", port))
        response = yield client.responses.get()
        self.assertEqual((response.status, response.call_id), (200, "v6-1"))
        yield parent.stopService()

    @defer.inlineCallbacks
    def test_plain_start_service_binds(self):
        """Embedders that call only startService() get their sockets too, bound once."""
        uac = UACService(self.settings)
        uac.startService()
        self.addCleanup(lambda: uac.stopService() if uac.running else None)
        self.assertEqual(len(uac.sip.ports), 2)
        self.assertEqual(uac.sip.bound_address("udp"), Address("udp", "127.0.0.1", self.port))
        self.assertEqual(uac.sip.bound_address("tcp"), Address("tcp", "127.0.0.1", self.port))
        yield uac.stopService()
        self.assertTrue(bindable("udp", self.port))

    @defer.inlineCallbacks
    def test_no_restart(self):
        """The stack is closed by stopService: starting again must fail loudly, not half work."""
        uac = UACService(self.settings)
        uac.startService()
        yield uac.stopService()
        self.assertRaises(RuntimeError, uac.startService)
        self.assertEqual(uac.sip.ports, [])
        self.assertTrue(bindable("udp", self.port))

    @defer.inlineCallbacks
    def test_port_zero(self):
        settings = settings_from_dict({"rpc": NO_RPC, "core": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]}})
        _, uac = self.embedded(settings)
        udp, tcp = uac.sip.bound_address("udp"), uac.sip.bound_address("tcp")
        self.assertNotEqual(udp.port, 0)
        self.assertNotEqual(tcp.port, 0)
        self.assertRaises(LookupError, uac.sip.bound_address, "tls")
        yield uac.stopService()

    def stack_timers(self) -> list:
        """The reactor's delayed calls that are SIP transaction timers."""
        return [call for call in reactor.getDelayedCalls()
                if call.active() and getattr(call.func, "__name__", "") in ("_wake", "_sweep_expired")]

    def cancel_stack_timers(self) -> None:
        for call in self.stack_timers():
            call.cancel()

    @defer.inlineCallbacks
    def test_stop_waits_for_in_flight_transaction(self):
        peer = SlowPeer(delay=0.3)
        peer_port = self.udp(peer)
        parent, uac = self.embedded()
        request = parse_message(request_bytes("OPTIONS", peer_port, "in-flight-1"))
        sent = uac.stack.send_request(request, Address("udp", "127.0.0.1", peer_port))
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(peer.received), 1)
        self.assertEqual(uac.stack.pending_client_transactions, 1)

        started = reactor.seconds()
        stopped = parent.stopService()
        self.assertFalse(stopped.called)
        refused = yield self.assertFailure(
            uac.stack.send_request(parse_message(request_bytes("OPTIONS", peer_port, "late")),
                                   Address("udp", "127.0.0.1", peer_port)),
            TransportError)
        self.assertIn("stopping", str(refused))
        response = yield sent
        self.assertEqual((response.status, response.call_id), (200, "in-flight-1"))
        yield stopped
        elapsed = reactor.seconds() - started
        self.assertLess(elapsed, 1.5)  # well before the 64*T1 = 3.2 s cap: it ended when the response came
        self.assertGreater(elapsed, 0.2)
        self.assertTrue(bindable("udp", self.port))

    @defer.inlineCallbacks
    def test_no_timer_left_after_stop(self):
        """Once stopService has fired, the stack has nothing left on the reactor."""
        self.addCleanup(self.cancel_stack_timers)
        peer = SlowPeer(delay=0.1)
        peer_port = self.udp(peer)
        parent, uac = self.embedded()
        sent = uac.stack.send_request(parse_message(request_bytes("OPTIONS", peer_port, "timers")),
                                      Address("udp", "127.0.0.1", peer_port))
        yield task.deferLater(reactor, 0.02, lambda: None)
        yield parent.stopService()
        self.assertEqual((yield sent).status, 200)
        self.assertEqual(self.stack_timers(), [])

    @defer.inlineCallbacks
    def test_stop_gives_up_after_64_t1(self):
        settings = settings_from_dict(
            {"rpc": NO_RPC, "core": {"listen": [f"udp:127.0.0.1:{self.port}"], "timer_t1": 10}})
        peer = SlowPeer(delay=None)  # never answers
        peer_port = self.udp(peer)
        parent, uac = self.embedded(settings)
        sent = uac.stack.send_request(parse_message(request_bytes("OPTIONS", peer_port, "silent")),
                                      Address("udp", "127.0.0.1", peer_port))
        started = reactor.seconds()
        yield parent.stopService()
        self.assertLess(reactor.seconds() - started, 2.0)  # 64*T1 = 0.64 s
        yield self.assertFailure(sent, TransactionTimeout, TransportError)
        self.assertTrue(bindable("udp", self.port))

    @defer.inlineCallbacks
    def test_stop_with_nothing_pending_is_quick(self):
        parent, _ = self.embedded()
        started = reactor.seconds()
        yield parent.stopService()
        self.assertLess(reactor.seconds() - started, 0.5)


class BindFailureTests(TestCase):
    timeout = 15

    def test_port_in_use_names_the_socket(self):
        port = free_port()
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        settings = settings_from_dict({"rpc": NO_RPC,
                                       "core": {"listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]}},
                                      "busy.toml")
        uac = UACService(settings)
        with self.assertRaises(ConfigError) as caught:
            uac.privilegedStartService()
        self.assertEqual(str(caught.exception),
                         f"busy.toml: [core] listen: cannot bind tcp:127.0.0.1:{port}: Address already in use")
        self.assertEqual(uac.sip.ports, [])  # the UDP socket bound before it was closed again

    @defer.inlineCallbacks
    def test_nothing_left_bound_after_a_failure(self):
        port = free_port()
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        settings = settings_from_dict(
            {"rpc": NO_RPC, "core": {"listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]}})
        uac = UACService(settings)
        self.assertRaises(ConfigError, uac.startService)
        yield task.deferLater(reactor, 0, lambda: None)  # the UDP port closes on the next turn
        self.assertTrue(bindable("udp", port))
        blocker.close()
        uac.sip.privilegedStartService()  # the failure did not leave it half started
        self.assertEqual(len(uac.sip.ports), 2)
        yield uac.sip.stopService()


class TLSSettingsTests(TestCase):
    def pem_files(self) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "garbage.pem"), "w") as f:
            f.write("not PEM\n")
        return directory

    def test_unusable_server_certificate_names_the_file(self):
        directory = self.pem_files()
        settings = settings_from_dict(
            {"core": {"listen": ["tls:127.0.0.1:0"]},
             "tls": {"certificate": "garbage.pem", "private_key": "garbage.pem"}}, "tls.toml", base_dir=directory)
        with self.assertRaises(ConfigError) as caught:
            UACService(settings)
        self.assertTrue(str(caught.exception).startswith("tls.toml: [tls] certificate"), str(caught.exception))

    def test_unusable_client_certificate_names_the_file(self):
        directory = self.pem_files()
        settings = settings_from_dict(
            {"tls": {"certificate": "garbage.pem", "private_key": "garbage.pem"}}, "tls.toml", base_dir=directory)
        with self.assertRaises(ConfigError) as caught:
            UACService(settings)
        self.assertTrue(str(caught.exception).startswith("tls.toml: [tls] certificate"), str(caught.exception))

    def test_ca_file_without_certificates_names_the_file(self):
        directory = self.pem_files()
        settings = settings_from_dict({"tls": {"ca_file": "garbage.pem"}}, "tls.toml", base_dir=directory)
        with self.assertRaises(ConfigError) as caught:
            UACService(settings)
        self.assertTrue(str(caught.exception).startswith("tls.toml: [tls] ca_file"), str(caught.exception))

    def test_tls_client_configured_without_ca_file(self):
        """verify against the platform's trust store: a sips: target must not fail 'TLS is not configured'."""
        uac = UACService(settings_from_dict({}))
        self.assertIsNotNone(uac.stack.pool.tls_client_options)
        self.assertIsNotNone(uac.stack.pool.tls_client_options("example.com"))

    @defer.inlineCallbacks
    def test_tls_listener(self):
        openssl = subprocess.run(["sh", "-c", "command -v openssl"], capture_output=True, text=True).stdout.strip()
        if not openssl:
            raise self.skipTest("openssl is not installed")
        directory = self.pem_files()
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-keyout", os.path.join(directory, "key.pem"), "-out", os.path.join(directory, "cert.pem")],
                       check=True, capture_output=True)
        settings = settings_from_dict(
            {"rpc": NO_RPC, "core": {"listen": ["tls:127.0.0.1:0"]},
             "tls": {"certificate": "cert.pem", "private_key": "key.pem"}},
            "tls.toml", base_dir=directory)
        uac = UACService(settings)
        uac.startService()
        address = uac.sip.bound_address("tls")
        self.assertFalse(bindable("tcp", address.port))
        yield uac.stopService()
        self.assertTrue(bindable("tcp", address.port))


class SIPServiceTests(TestCase):
    def test_uac_service_holds_the_sip_service(self):
        uac = UACService(settings_from_dict({"rpc": NO_RPC}))
        self.assertIsInstance(uac.sip, SIPService)
        self.assertIs(uac.stack, uac.sip.stack)
        self.assertEqual(list(uac), [uac.sip])

    def test_rpc_server_is_a_child_by_default(self):
        """[rpc] is on unless disabled: the admin HTTP server starts after the others, stops first."""
        uac = UACService(settings_from_dict({"rpc": {"listen": "tcp:0:interface=127.0.0.1"}}))
        self.assertIsInstance(uac.rpc, AdminWebService)
        self.assertIs(list(uac)[-1], uac.rpc)
        self.assertIsNone(UACService(settings_from_dict({"rpc": NO_RPC})).rpc)
