"""uac_req_send against a REAL Kamailio that challenges OPTIONS and INFO (KamailioRegistrar
with challenge_all; the password of user U is "pw-" + U), txuac running a routing script
whose event_route[uac:reply] records every event.

- UACService.req_send of an OPTIONS and an INFO with auser/apasswd: the event route sees
  the 401, then the 200 (evtype 1); Kamailio logs the authenticated request;
- a wrong password: 401, then Kamailio's 403; evroute 2: the 401 only (no retry);
- a dead target (a closed UDP port on 127.0.0.1): evtype 2, evcode 408, with fr_timeout
  and with Timer F (T1 50 ms);
- the script path end to end: a raw UDP OPTIONS to txuac makes its request route call
  uac.uac_req_send (an INFO to Kamailio); the event route, seeing its 200, sends a
  MESSAGE with uac.uac_req_send from there.
"""

from __future__ import annotations

import os

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.sipp import HOST, T1, T2, until
from txuac.config import settings_from_dict
from txuac.service import UACService
from txuac.sip import parse_message

SCRIPT = '''
from txuac.routing.script import event_route, request_route

EVENTS = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    target = msg.headers.get("X-Target")
    if msg.method == "OPTIONS" and target:
        code = uac.uac_req_send(method="INFO", ruri=target, auser="alice", apasswd="pw-alice",
                                hdrs="Content-Type: text/plain\\r\\n", body="from the request route",
                                evroute=1, evparam="route")
        sl.sl_send_reply(202 if code == 1 else 500, f"uac_req_send {code}")
        return
    sl.sl_send_reply(404, "Not here")


@event_route("uac:reply")
def uac_reply(msg, uac, tm, rr, dialog, sl):
    reason = msg.response.reason if msg.response is not None else None
    EVENTS.append((msg.evparam, msg.evcode, msg.evtype, reason))
    if msg.evparam == "route" and msg.evcode == 200:
        uac.uac_req_send(method="MESSAGE", ruri=msg.ruri, auser=msg.auser, apasswd=msg.apasswd,
                         hdrs="Content-Type: text/plain\\r\\n", body="from the event route", evroute=1,
                         evparam="event")
'''


class Collector(protocol.DatagramProtocol):
    """A UDP socket of the test's: what it receives, parsed."""

    def __init__(self):
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append(parse_message(data))


class ReqSendInteropTests(TestCase):
    timeout = 120

    def setUp(self):
        self.kamailio = KamailioRegistrar(self, challenge_all=True)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        script = os.path.join(workdir, "routing.py")
        with open(script, "w") as f:
            f.write(SCRIPT)
        self.service = UACService(settings_from_dict({
            "core": {"listen": [f"udp:{HOST}:0"], "timer_t1": int(T1 * 1000), "timer_t2": int(T2 * 1000)},
            "rpc": {"enabled": False}, "routing": {"script": script}}), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.events = self.service.proxy.proxy.routes.module.EVENTS
        self.target = f"sip:alice@{HOST}:{self.kamailio.port}"

    def script_events(self, evparam):
        return [event[1:] for event in self.events if event[0] == evparam]

    @defer.inlineCallbacks
    def test_options_and_info_authenticated(self):
        for method, body in (("OPTIONS", ""), ("INFO", "ping")):
            event = yield self.service.req_send(method=method, ruri=self.target, auser="alice", apasswd="pw-alice",
                                                hdrs="Content-Type: text/plain\r\n" if body else "", body=body,
                                                evroute=1, evparam=method)
            self.assertEqual((event.evcode, event.evtype, event.response.status), (200, 1, 200),
                             self.kamailio.explain(method))
            self.assertEqual(self.script_events(method), [(401, 1, "Unauthorized"), (200, 1, "OK")],
                             self.kamailio.explain(method))
            self.assertIn(f"auth {method} user=alice rc=1", self.kamailio.script_log())

    @defer.inlineCallbacks
    def test_wrong_password(self):
        event = yield self.service.req_send(method="OPTIONS", ruri=self.target, auser="alice", apasswd="wrong",
                                            evroute=1, evparam="wrong")
        self.assertEqual(event.evcode, 403)
        self.assertEqual(self.script_events("wrong"), [(401, 1, "Unauthorized"), (403, 1, "Forbidden")],
                         self.kamailio.explain())

    @defer.inlineCallbacks
    def test_evroute_2_failures_only_without_retry(self):
        event = yield self.service.req_send(method="INFO", ruri=self.target, auser="alice", apasswd="pw-alice",
                                            evroute=2, evparam="failures", callid="evroute-2-call")
        self.assertEqual(event.evcode, 401)
        self.assertEqual(self.script_events("failures"), [(401, 1, "Unauthorized")])
        requests = [line for line in self.kamailio.script_log() if "call-id=evroute-2-call" in line]
        self.assertEqual(len(requests), 1, self.kamailio.explain("one INFO, no authenticated retry"))

    @defer.inlineCallbacks
    def test_dead_target_is_a_local_408(self):
        dead = f"sip:nobody@{HOST}:{free_port()}"
        event = yield self.service.req_send(method="OPTIONS", ruri=dead, fr_timeout=1000, evroute=1, evparam="fr")
        self.assertEqual((event.evcode, event.evtype, event.response), (408, 2, None))
        self.assertEqual(self.script_events("fr"), [(408, 2, None)])
        # Without fr_timeout: Timer F, 64*T1 = 3.2 s here; evroute 2 reports it too.
        started = reactor.seconds()
        event = yield self.service.req_send(method="OPTIONS", ruri=dead, evroute=2, evparam="timer-f")
        self.assertEqual((event.evcode, event.evtype), (408, 2))
        self.assertGreaterEqual(reactor.seconds() - started, 64 * T1 - 0.1)
        self.assertEqual(self.script_events("timer-f"), [(408, 2, None)])

    @defer.inlineCallbacks
    def test_from_the_request_route_and_the_event_route(self):
        collector = Collector()
        port = reactor.listenUDP(0, collector, interface=HOST)
        self.addCleanup(port.stopListening)
        local = port.getHost().port
        proxy_port = self.service.sip.bound_address("udp").port
        options = (f"OPTIONS sip:{HOST}:{proxy_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bKtrigger1;rport\r\n"
                   f"From: <sip:tester@{HOST}>;tag=t1\r\n"
                   f"To: <sip:{HOST}:{proxy_port}>\r\n"
                   f"Call-ID: trigger-1\r\n"
                   f"CSeq: 1 OPTIONS\r\n"
                   f"Max-Forwards: 70\r\n"
                   f"X-Target: {self.target}\r\n"
                   f"Content-Length: 0\r\n\r\n")
        port.write(options.encode(), (HOST, proxy_port))
        answered = yield until(lambda: collector.received, 10)
        self.assertTrue(answered, "no reply from txuac")
        self.assertEqual((collector.received[0].status, collector.received[0].reason), (202, "uac_req_send 1"))
        done = yield until(lambda: len(self.script_events("event")) >= 2, 30)
        self.assertTrue(done, self.kamailio.explain(f"events so far: {self.events}"))
        self.assertEqual(self.script_events("route"), [(401, 1, "Unauthorized"), (200, 1, "OK")])
        self.assertEqual(self.script_events("event"), [(401, 1, "Unauthorized"), (200, 1, "OK")])
        log = self.kamailio.script_log()
        self.assertIn("auth INFO user=alice rc=1", log)
        self.assertIn("auth MESSAGE user=alice rc=1", log)
        self.assertEqual(self.service.proxy.proxy.events.failures, 0)
