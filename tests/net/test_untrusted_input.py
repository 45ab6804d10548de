"""What any peer may send to a running txuac: real UDP sockets on loopback, no account.

Unauthenticated input must not grow state (metric series, tables) without bound nor fill
the log, and gets the answers RFC 3261 asks for: whole datagrams up to
``max_message_size`` read and answered, a larger one 513, another SIP version 505.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import string
import time

from twisted.internet import defer, protocol, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.services import start_uac
from txuac.admin.metrics import Metrics
from txuac.errors import SIPParseError
from txuac.sip import Response, parse_message

HOST = "127.0.0.1"


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


class Client(protocol.DatagramProtocol):
    """A UDP socket sending requests; the responses it gets, by Call-ID."""

    def __init__(self):
        self.responses: dict[str, Response] = {}
        self.unparsed = 0

    def startProtocol(self) -> None:
        # Room for a batch of answers arriving at once (the default buffer holds ~160).
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            message = parse_message(data)
        except SIPParseError:
            self.unparsed += 1
            return
        if isinstance(message, Response):
            self.responses[message.call_id] = message

    def request(self, method: str, call_id: str, *, version: str = "SIP/2.0", body: bytes = b"",
                extra: str = "") -> bytes:
        port = self.transport.getHost().port
        head = (f"{method} sip:uac@{HOST} {version}\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{call_id};rport\r\n"
                f"From: <sip:peer@{HOST}>;tag=p1\r\n"
                f"To: <sip:uac@{HOST}>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: 1 {method}\r\n"
                f"Max-Forwards: 70\r\n"
                f"{extra}"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode() + body


class UntrustedInputTests(TestCase):
    timeout = 240

    def start(self, **core) -> None:
        self.uac = start_uac(self, {"core": {"listen": [f"udp:{HOST}:0"], "timer_t1": 10, **core}})
        self.target = (HOST, self.uac.sip.bound_address("udp").port)
        self.client = Client()
        port = reactor.listenUDP(0, self.client, interface=HOST)
        self.addCleanup(port.stopListening)
        self.log_events: list[dict] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

    def send(self, data: bytes) -> None:
        self.client.transport.write(data, self.target)

    @defer.inlineCallbacks
    def answered(self, call_ids, timeout: float = 30.0):
        """Wait until every one of ``call_ids`` got a response."""
        deadline = time.monotonic() + timeout
        while not all(c in self.client.responses for c in call_ids):
            if time.monotonic() > deadline:
                missing = [c for c in call_ids if c not in self.client.responses]
                raise AssertionError(f"{len(missing)} requests not answered, e.g. {missing[:3]}")
            yield sleep(0.01)

    @defer.inlineCallbacks
    def ask(self, data: bytes, call_id: str):
        self.send(data)
        yield self.answered([call_id])
        return self.client.responses[call_id]

    @defer.inlineCallbacks
    def random_methods(self, count: int, rng: random.Random, batch: int = 100):
        """``count`` requests with random method names, ``batch`` at a time, all answered."""
        for start in range(0, count, batch):
            call_ids = []
            for n in range(start, min(count, start + batch)):
                method = "".join(rng.choices(string.ascii_uppercase, k=10))
                call_id = f"m{n}-{method}"
                call_ids.append(call_id)
                self.send(self.client.request(method, call_id))
            yield self.answered(call_ids)
            for call_id in call_ids:
                self.assertEqual(self.client.responses.pop(call_id).status, 501)

    @defer.inlineCallbacks
    def test_random_methods_make_bounded_series_and_memory(self):
        """20,000 requests with random method names (501 each): the transaction metric keeps
        a handful of series (method="other"), and the process keeps its memory."""
        self.start()
        stack = self.uac.stack
        metrics = Metrics(self.uac)
        rng = random.Random(20261206)
        # Warm up with as many as are measured: the allocator's arenas and the caches reach
        # the peak the run needs (a smaller warm-up left 1.5-7.6 MiB of arena growth in the
        # measure, too near the bound under load); unbounded series would still add theirs.
        yield self.random_methods(20000, rng)
        yield sleep(1.0)  # Timer J (64*T1) ends the server transactions
        gc.collect()
        before = rss_kib()
        yield self.random_methods(20000, rng)
        yield sleep(1.0)
        page = metrics.render().decode()  # scraped, as Prometheus does
        gc.collect()
        grown = rss_kib() - before
        self.assertEqual(len(stack._server), 0)
        # Before the bound: +9.5-10.3 MiB (20,000 series, a 1.8 MB page); after: 0-1.2 MiB.
        self.assertLess(grown, 7 * 1024, f"VmRSS grew by {grown} KiB")
        page = metrics.render().decode()
        series = [line for line in page.splitlines() if line.startswith("txuac_transactions_total{")]
        self.assertEqual(series, ['txuac_transactions_total{method="other",outcome="5xx",side="server"} 40000.0'])
        self.assertLess(len(page), 16384)

    @defer.inlineCallbacks
    def test_20_kb_options_answered(self):
        """A datagram longer than Twisted's default read size (8192) is read whole."""
        self.start()
        body = os.urandom(10_000).hex().encode()
        response = yield self.ask(self.client.request("OPTIONS", "big-options", body=body,
                                                      extra="Content-Type: text/plain\r\n"), "big-options")
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_datagram_over_the_maximum_answered_513(self):
        """RFC 3261 21.5.11: a request larger than the server accepts gets 513 (its headers parse)."""
        self.start(max_message_size=16384)
        body = b"x" * 30_000
        response = yield self.ask(self.client.request("OPTIONS", "too-big", body=body,
                                                      extra="Content-Type: text/plain\r\n"), "too-big")
        self.assertEqual(response.status, 513)
        self.assertIn("exceeds 16384", response.reason)
        response = yield self.ask(self.client.request("OPTIONS", "fits"), "fits")
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_other_sip_version_answered_505(self):
        """RFC 3261 8.2.2 (21.5.6): a request of another SIP version gets 505."""
        self.start()
        response = yield self.ask(self.client.request("OPTIONS", "sip-7", version="SIP/7.0"), "sip-7")
        self.assertEqual(response.status, 505)
        self.assertIn("'SIP/7.0' not supported", response.reason)

    @defer.inlineCallbacks
    def test_garbage_datagrams_bounded_log(self):
        """400 datagrams that do not parse: one warning line, not 400; the rest summarised."""
        self.start()
        rng = random.Random(400)
        for n in range(400):
            self.send(b"GARBAGE " + bytes(rng.randrange(33, 127) for _ in range(60)) + b"\r\n")
            if n % 100 == 99:
                yield sleep(0.05)
        response = yield self.ask(self.client.request("OPTIONS", "after-garbage"), "after-garbage")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.uac.stack.parse_errors, 400)
        lines = [formatEvent(e) for e in self.log_events if "malformed" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines[:5])
        yield self.uac.stopService()  # the window's summary is written at the latest on stop
        lines = [formatEvent(e) for e in self.log_events if "malformed" in formatEvent(e)]
        self.assertEqual(lines[1:], ["399 more malformed messages suppressed in the last 10 s"])
