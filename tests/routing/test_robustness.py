"""The proxy keeps serving whatever it is sent: real UDP sockets, raw datagrams.

UACService runs the proxy with a routing script (ProxyInteropCase.start_proxy); a test
client and a callee (UDPPeer, answering every request 200) sit on their own sockets of
127.0.0.1. Each test sends something bad (garbage datagrams, a request with a broken
From/Via/CSeq, Max-Forwards 0, a request addressed to the proxy itself that loops until
Max-Forwards runs out, a Route of ours with unknown or garbled parameters, a callee whose
answers do not parse, a script that raises or calls a function outside its routes) and
then checks the answer, if one is due, and that an OPTIONS to the callee is still relayed
there and its 200 relayed back.

tests/routing/test_proxy.py checks the same decisions on fake transports; here they go
through the stack's parser, the transaction layer and the sockets.
"""

from __future__ import annotations

import gc
import os

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from tests.support.sipp import HOST, sleep, until
from tests.support.sipp_proxy import ProxyInteropCase
from txuac.errors import SIPParseError
from txuac.routing.proxied_request import ProxiedRequest
from txuac.sip.message import Request, Response, make_response
from txuac.sip.parser import parse_message

SCRIPT = '''
from txuac.routing.script import request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    test = msg.headers.get("X-Robustness")
    if test == "raise":
        raise RuntimeError("the script failed on purpose")
    if test == "wrong-route":
        uac.uac_auth()  # failure routes only: RouteContextError
    if test == "reply":
        sl.sl_send_reply(200, "Answered by the script")
        return
    if msg.to is not None and msg.to.tag is not None:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        tm.t_relay()
        return
    tm.t_relay()
'''
WAIT = 10.0  # seconds for an answer that is due (the machine is shared)
QUIET = 1.0  # seconds to wait for nothing to happen


class UDPPeer(DatagramProtocol):
    """A SIP endpoint on its own socket: what it received (parsed; raw bytes when it does
    not parse) and, with ``answer``, a 200 to every request but ACK."""

    def __init__(self, answer: bool = False):
        self.messages: list = []
        self.datagrams: list[bytes] = []  # everything, as received
        self.answer = answer
        self.mangle = None  # a function of the 200's bytes: what is sent instead

    def datagramReceived(self, data: bytes, address) -> None:
        self.datagrams.append(data)
        try:
            message = parse_message(data)
        except SIPParseError:
            self.messages.append(data)
            return
        self.messages.append(message)
        if self.answer and isinstance(message, Request) and message.method != "ACK":
            response = bytes(make_response(message, 200, to_tag="callee"))
            self.transport.write(self.mangle(response) if self.mangle else response, address)

    def with_call_id(self, call_id: str) -> list:
        return [m for m in self.messages if not isinstance(m, bytes) and m.headers.get("Call-ID") == call_id]

    def final_responses(self, call_id: str) -> list[Response]:
        return [m for m in self.with_call_id(call_id) if isinstance(m, Response) and m.status >= 200]


class RobustnessTests(ProxyInteropCase):
    script = SCRIPT

    def setUp(self):
        super().setUp()
        self.client = UDPPeer()
        self.callee = UDPPeer(answer=True)
        for peer in (self.client, self.callee):
            port = reactor.listenUDP(0, peer, interface=HOST)
            self.addCleanup(port.stopListening)
        self.client_port = self.client.transport.getHost().port
        self.callee_uri = f"sip:callee@{HOST}:{self.callee.transport.getHost().port}"
        self.log_events: list[dict] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)
        self.calls = 0

    # --- sending ----------------------------------------------------------------------
    def new_call_id(self) -> str:
        self.calls += 1
        return f"robust-{self.calls}-{os.urandom(4).hex()}@{HOST}"

    def request(self, method: str, call_id: str, uri: str | None = None, *, max_forwards: int = 70,
                to_tag: str | None = None, headers: dict[str, str] | None = None, **replaced: str) -> bytes:
        """A request from the client; ``replaced`` (From, Via, CSeq, ... with _ for -) replaces
        the header lines of those names, an empty value leaves the header out."""
        uri = uri or self.callee_uri
        lines = {
            "Via": f"SIP/2.0/UDP {HOST}:{self.client_port};branch=z9hG4bK{os.urandom(6).hex()};rport",
            "From": f"<sip:client@{HOST}:{self.client_port}>;tag=caller",
            "To": f"<{uri}>" + (f";tag={to_tag}" if to_tag else ""),
            "Call-ID": call_id,
            "CSeq": f"1 {method}",
            "Max-Forwards": str(max_forwards),
        }
        for name, value in replaced.items():
            lines[name.replace("_", "-")] = value
        lines.update(headers or {})
        text = f"{method} {uri} SIP/2.0\r\n"
        text += "".join(f"{name}: {value}\r\n" for name, value in lines.items() if value)
        return (text + "Content-Length: 0\r\n\r\n").encode()

    def send(self, data: bytes) -> None:
        self.client.transport.write(data, (HOST, self.port))

    @defer.inlineCallbacks
    def final_response(self, call_id: str):
        """The first final response the client got for ``call_id`` (fails after WAIT)."""
        got = yield until(lambda: self.client.final_responses(call_id), WAIT)
        self.assertTrue(got, f"no final response for {call_id}: {self.client.with_call_id(call_id)}")
        return self.client.final_responses(call_id)[0]

    @defer.inlineCallbacks
    def assert_still_serving(self):
        """An OPTIONS to the callee goes through the proxy and its 200 comes back."""
        call_id = self.new_call_id()
        self.send(self.request("OPTIONS", call_id))
        response = yield self.final_response(call_id)
        self.assertEqual(response.status, 200)
        [relayed] = [m for m in self.callee.with_call_id(call_id) if isinstance(m, Request)]
        self.assertEqual((relayed.top_via.host, relayed.top_via.port), (HOST, self.port))
        self.assertTrue(self.service.running)

    def script_failures_logged(self) -> list[dict]:
        return [e for e in self.log_events if str(e.get("log_format", "")).startswith("routing script failed")]

    # --- the tests ----------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_garbage_datagrams(self):
        valid = self.request("OPTIONS", self.new_call_id())
        for data in (b"", b"\x00", b"\r\n\r\n", os.urandom(1400), b"\xff" * 3000, b"INVITE\r\n\r\n",
                     b"SIP/2.0 200 OK\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", valid[:len(valid) // 2],
                     valid.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1),
                     valid.replace(b"Content-Length: 0", b"Content-Length: 99999"),
                     valid.replace(b"OPTIONS sip:", b"OPTIONS \x00sip:", 1)):
            self.send(data)
        # A response that matches no transaction of ours.
        self.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnone\r\n"
                  b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
                  b"Content-Length: 0\r\n\r\n")
        yield sleep(QUIET)
        self.assertEqual([m for m in self.callee.messages], [])
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_broken_from_route_or_cseq_answered_400(self):
        for broken in ({"From": "<sip:client@127.0.0.1;tag=caller"}, {"From": ""}, {"From": "\"unclosed <sip:a@b>"},
                       {"CSeq": ""}, {"Route": f"<sip:{HOST}:{self.port};lr;vsf=%%zz>"}, {"Route": "<garbage"},
                       {"Route": f"<sip:{HOST}:{self.port};lr;vst=>"}, {"Route": f"<sip:{HOST}:{self.port};lr;;x>"}):
            call_id = self.new_call_id()
            self.send(self.request("OPTIONS", call_id, **broken))
            response = yield self.final_response(call_id)
            self.assertEqual(response.status, 400, broken)
        # A CSeq the parser refuses: the 400 copies it (RFC 3261 8.2.6.2): raw datagrams.
        for cseq in ("one OPTIONS", "1 INVITE", "99999999999 OPTIONS"):
            call_id = self.new_call_id()
            self.send(self.request("OPTIONS", call_id, CSeq=cseq))

            def answers():
                return [data for data in self.client.datagrams if f"Call-ID: {call_id}\r\n".encode() in data]

            got = yield until(answers, WAIT)
            self.assertTrue(got, cseq)
            self.assertTrue(answers()[0].startswith(b"SIP/2.0 400 "), answers())
            self.assertIn(f"CSeq: {cseq}\r\n".encode(), answers()[0])
        self.assertEqual([m for m in self.callee.messages], [])
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_no_call_id_answered_400(self):
        self.send(self.request("OPTIONS", ""))  # the Call-ID line left out

        def answers():
            return [m for m in self.client.messages if isinstance(m, Response) and "Call-ID" not in m.headers]

        got = yield until(answers, WAIT)
        self.assertTrue(got, self.client.messages)
        self.assertEqual([m.status for m in answers()], [400])
        self.assertEqual([m for m in self.callee.messages], [])
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_broken_via_dropped(self):
        call_id = self.new_call_id()
        for via in ("SIP/2.0/UDP", "SIP/2.0/UDP 127.0.0.1:notaport;branch=z9hG4bKx", "garbage", ""):
            self.send(self.request("OPTIONS", call_id, Via=via))
        yield sleep(QUIET)
        # No Via to answer along: nothing relayed, nothing answered.
        self.assertEqual(self.client.with_call_id(call_id), [])
        self.assertEqual(self.callee.with_call_id(call_id), [])
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_max_forwards_zero_gets_483(self):
        call_id = self.new_call_id()
        self.send(self.request("MESSAGE", call_id, max_forwards=0))
        response = yield self.final_response(call_id)
        self.assertEqual(response.status, 483)
        self.assertEqual(self.callee.with_call_id(call_id), [])
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_loop_through_the_proxy_itself_ends_in_483(self):
        # Addressed to the proxy: each relay comes back to it with Max-Forwards one less.
        call_id = self.new_call_id()
        self.send(self.request("MESSAGE", call_id, f"sip:loop@{HOST}:{self.port}", max_forwards=5))
        response = yield self.final_response(call_id)
        self.assertEqual(response.status, 483)
        self.assertEqual(self.proxy.script_failures, 0)
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_invite_loop_through_the_proxy_itself_ends_in_483(self):
        call_id = self.new_call_id()
        self.send(self.request("INVITE", call_id, f"sip:loop@{HOST}:{self.port}"))
        response = yield self.final_response(call_id)
        self.assertEqual(response.status, 483)
        self.assertEqual(self.proxy.script_failures, 0)
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_callee_answering_garbage_gets_the_caller_408(self):
        # The callee's answers do not parse (or match nothing): Timer F (64*T1) ends the branch.
        mangled = (lambda data: data.replace(b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE"),
                   lambda data: data[:40], lambda data: data.replace(b"z9hG4bK", b"z9hG4bKx"))
        call_ids = []
        for mangle in mangled:
            self.callee.mangle = mangle
            call_ids.append(self.new_call_id())
            self.send(self.request("MESSAGE", call_ids[-1]))
            yield until(lambda: self.callee.with_call_id(call_ids[-1]), WAIT)
        for call_id in call_ids:
            response = yield self.final_response(call_id)
            self.assertEqual(response.status, 408)
        self.callee.mangle = None
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_route_of_ours_with_unknown_and_garbled_params_routed(self):
        # Well-formed (RFC 3261 uri-parameter) but unknown, or values that do not decode.
        routes = (f"<sip:{HOST}:{self.port};lr;foo=bar;ftag=other;vsf=!!not-base64!!;vst=AAAA----;x>",
                  f"<sip:{HOST}:{self.port};lr;vsf=AAAAAAAAAAAAAAAAAAAA;ftag;X-Unknown=1>")
        for route in routes:
            call_id = self.new_call_id()
            request = self.request("MESSAGE", call_id, to_tag="callee", Route=route)
            self.send(request)
            response = yield self.final_response(call_id)
            self.assertEqual(response.status, 200, route)
            [relayed] = [m for m in self.callee.with_call_id(call_id) if isinstance(m, Request)]
            self.assertNotIn("Route", relayed.headers)
            sent = parse_message(request)
            for name in ("From", "To"):
                self.assertEqual(relayed.headers.get(name), sent.headers.get(name))
        self.assertEqual(self.proxy.script_failures, 0)
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_script_exception_answered_500_logged_once(self):
        call_id = self.new_call_id()
        self.send(self.request("MESSAGE", call_id, headers={"X-Robustness": "raise"}))
        response = yield self.final_response(call_id)
        self.assertEqual(response.status, 500)
        yield self.assert_still_serving()
        [event] = self.script_failures_logged()
        self.assertIn("RuntimeError: the script failed on purpose", event["traceback"])
        self.assertEqual(self.proxy.script_failures, 1)
        self.assertEqual(self.callee.with_call_id(call_id), [])

    @defer.inlineCallbacks
    def test_function_from_the_wrong_route_answered_500(self):
        call_id = self.new_call_id()
        self.send(self.request("MESSAGE", call_id, headers={"X-Robustness": "wrong-route"}))
        response = yield self.final_response(call_id)
        self.assertEqual(response.status, 500)
        yield self.assert_still_serving()
        [event] = self.script_failures_logged()
        self.assertIn("RouteContextError: uac_auth() can be used from failure_route", event["traceback"])
        self.assertEqual(self.proxy.script_failures, 1)

    @defer.inlineCallbacks
    def test_finished_requests_freed_without_the_collector(self):
        # A request and all its script state go once nothing needs them (its client
        # transaction ended), by reference counting: cycles would wait for a full
        # collection, which the thresholds of twist uac make rare (memory grew ~45 KiB
        # per call in bench/proxy.py). Lingering server transactions do not keep them.
        enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        answered, relayed = self.new_call_id(), self.new_call_id()
        self.send(self.request("MESSAGE", answered, headers={"X-Robustness": "reply"}))
        self.send(self.request("MESSAGE", relayed))
        for call_id in (answered, relayed):
            response = yield self.final_response(call_id)
            self.assertEqual(response.status, 200)
        stack = self.service.stack
        ended = yield until(lambda: not stack.pending_client_transactions, WAIT)
        self.assertTrue(ended)
        # type(), not isinstance(): a dead weak proxy (a script may keep a namespace) raises there.
        self.assertEqual([o for o in gc.get_objects() if type(o) is ProxiedRequest], [])
