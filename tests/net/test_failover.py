"""RFC 3263 failover interop: a zone served by twisted.names on loopback, SIPp UAS as targets.

The request goes to a domain; NAPTR and SRV (from the real DNS server) list a
dead first target and a live second one. SIPp logs every message it gets, so
the tests check what reached each peer, not only the final response.
"""

from __future__ import annotations

import os
import re
import socket
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.support.dns_zone import Zone, a, naptr, serve_zone, srv
from tests.support.peers import PeerProcess, free_port, require_program, wait_for
from tests.support.services import LOOPBACK_T1_MS, start_core_service
from tests.support.sip_messages import options_request
from txuac.errors import TransportError
from txuac.service import UACService

SCENARIOS = os.path.join(os.path.dirname(__file__), "sipp")
T1_MS = LOOPBACK_T1_MS


def _port_taken(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@defer.inlineCallbacks
def logged(predicate, timeout: float = 5.0):
    """Wait, without blocking the reactor, until ``predicate()`` holds; fail after ``timeout``."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("SIPp did not log the expected message")
        yield task.deferLater(reactor, 0.02, lambda: None)


class SIPpUAS:
    """A SIPp UAS on 127.0.0.1 running one of tests/net/sipp/dns_*.xml until the test ends."""

    def __init__(self, testcase: TestCase, scenario: str, transport: str = "udp"):
        sipp = require_program("sipp")
        self.port = free_port()
        workdir = os.path.abspath(testcase.mktemp())
        os.makedirs(workdir)
        self.message_log = os.path.join(workdir, "messages.log")
        self.process = PeerProcess(
            [sipp, "-sf", os.path.join(SCENARIOS, scenario), "-i", "127.0.0.1", "-p", str(self.port),
             "-t", "u1" if transport == "udp" else "t1", "-nostdin", "-trace_msg", "-message_file", self.message_log],
            cwd=workdir, log_path=os.path.join(workdir, "sipp.out"))
        testcase.addCleanup(self.process.stop)
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        if not wait_for(lambda: _port_taken(self.port, kind) or not self.process.running(), 10):
            raise AssertionError(f"SIPp did not bind {transport} port {self.port}")
        if not self.process.running():
            raise AssertionError(f"SIPp exited: {self.process.output()}")

    def _log(self) -> str:
        try:
            with open(self.message_log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def received_branches(self) -> list[str]:
        """The Via branch of every OPTIONS SIPp received, in order (retransmissions included)."""
        branches = []
        for block in self._log().split("-----------------------------------------------"):
            if " message received " in block and re.search(r"^OPTIONS sip", block, re.M):
                match = re.search(r"^Via:.*?;branch=([^;\s]+)", block, re.M)
                branches.append(match.group(1) if match else "")
        return branches

    def sent_statuses(self) -> list[int]:
        return [int(m) for m in re.findall(r" message sent .*?\n\s*SIP/2\.0 (\d{3})", self._log(), re.S)]


class FailoverTests(TestCase):

    timeout = 60

    def serve(self, records: dict) -> None:
        records.setdefault("dead.test.example", [a("127.0.0.1")])
        records.setdefault("live.test.example", [a("127.0.0.1")])
        self.zone = Zone(records)
        self.dns_port = serve_zone(self, self.zone)

    def uac(self) -> UACService:
        return start_core_service(self, {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
                                    "dns_servers": [f"127.0.0.1:{self.dns_port}"]})

    @defer.inlineCallbacks
    def test_silent_first_target_times_out_then_second_answers(self):
        """UDP: Timer F (64*T1) on the priority-10 SIPp that never answers, then 200 from priority 20."""
        silent = SIPpUAS(self, "dns_options_silent.xml")
        live = SIPpUAS(self, "dns_options_200.xml")
        self.serve({
            "fo.test.example": [naptr(10, 10, "SIP+D2U", "_sip._udp.fo.test.example")],
            "_sip._udp.fo.test.example": [srv(20, 0, live.port, "live.test.example"),
                                          srv(10, 0, silent.port, "dead.test.example")],
        })
        service = self.uac()
        start = time.monotonic()
        response = yield service.stack.send_request(options_request("sip:ping@fo.test.example"))
        elapsed = time.monotonic() - start
        self.assertEqual(response.status, 200)
        self.assertGreaterEqual(elapsed, 64 * T1_MS / 1000 * 0.95)
        # SIPp writes its message log with buffered I/O: stopping it flushes the log.
        silent.process.stop()
        live.process.stop()
        dead_branches = silent.received_branches()
        self.assertGreater(len(dead_branches), 1)  # Timer E retransmissions reached it
        self.assertEqual(len(set(dead_branches)), 1)
        live_branches = live.received_branches()
        self.assertEqual(len(live_branches), 1)
        self.assertNotEqual(live_branches[0], dead_branches[0])  # a new transaction (fresh branch)
        self.assertEqual(self.zone.queries[0], ("fo.test.example", "NAPTR"))

    @defer.inlineCallbacks
    def test_unbound_first_target(self):
        """UDP to a port nobody listens on: the same timeout path, then the second target."""
        live = SIPpUAS(self, "dns_options_200.xml")
        self.serve({
            "_sip._udp.nobody.test.example": [srv(10, 0, free_port(), "dead.test.example"),
                                              srv(20, 0, live.port, "live.test.example")],
        })
        response = yield self.uac().stack.send_request(options_request("sip:ping@nobody.test.example;transport=udp"))
        self.assertEqual(response.status, 200)
        self.assertEqual(len(live.received_branches()), 1)

    @defer.inlineCallbacks
    def test_refused_tcp_first_target(self):
        """TCP: connection refused is a TransportError, so the next SRV target is tried at once."""
        live = SIPpUAS(self, "dns_options_200.xml", transport="tcp")
        self.serve({
            "tcp.test.example": [naptr(10, 10, "SIP+D2T", "_sip._tcp.tcp.test.example")],
            "_sip._tcp.tcp.test.example": [srv(10, 0, free_port(socket.SOCK_STREAM), "dead.test.example"),
                                           srv(20, 0, live.port, "live.test.example")],
        })
        service = self.uac()
        start = time.monotonic()
        response = yield service.stack.send_request(options_request("sip:ping@tcp.test.example"))
        self.assertEqual(response.status, 200)
        self.assertLess(time.monotonic() - start, 64 * T1_MS / 1000)
        self.assertEqual(len(live.received_branches()), 1)

    @defer.inlineCallbacks
    def test_503_fails_over(self):
        busy = SIPpUAS(self, "dns_options_503.xml")
        live = SIPpUAS(self, "dns_options_200.xml")
        self.serve({
            "busy.test.example": [naptr(10, 10, "SIP+D2U", "_sip._udp.busy.test.example")],
            "_sip._udp.busy.test.example": [srv(10, 0, busy.port, "dead.test.example"),
                                            srv(20, 0, live.port, "live.test.example")],
        })
        response = yield self.uac().stack.send_request(options_request("sip:ping@busy.test.example"))
        self.assertEqual(response.status, 200)
        yield logged(lambda: busy.sent_statuses() == [503])  # SIPp logs a message after sending it
        self.assertEqual(len(busy.received_branches()), 1)
        self.assertEqual(len(live.received_branches()), 1)
        self.assertNotEqual(busy.received_branches(), live.received_branches())

    @defer.inlineCallbacks
    def test_503_from_the_last_target_is_the_answer(self):
        busy = SIPpUAS(self, "dns_options_503.xml")
        self.serve({"_sip._udp.only.test.example": [srv(10, 0, busy.port, "dead.test.example")]})
        response = yield self.uac().stack.send_request(options_request("sip:ping@only.test.example;transport=udp"))
        self.assertEqual(response.status, 503)

    @defer.inlineCallbacks
    def test_every_target_dead(self):
        """Both SRV targets refuse TCP: the last TransportError reaches the caller."""
        self.serve({"_sip._tcp.gone.test.example": [srv(10, 0, free_port(socket.SOCK_STREAM), "dead.test.example"),
                                                    srv(20, 0, free_port(socket.SOCK_STREAM), "dead.test.example")]})
        d = self.uac().stack.send_request(options_request("sip:ping@gone.test.example;transport=tcp"))
        yield self.assertFailure(d, TransportError)
