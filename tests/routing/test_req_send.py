"""uac_req_send (txuac.routing.req_send) on a SIPStack with fake transports and a fake clock
(tests/routing/test_proxy.py's harness): the $uac_req fields with Kamailio's defaults and
limits, the automatic digest retry (once), the events per evroute, local events (evtype 2),
fr_timeout, and the routing script's side (uac.uac_req_send, event_route[uac:reply],
[routing] event_callback)."""

from __future__ import annotations

import hashlib

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.support.proxy_harness import CALLEE, OURS, ProxyTestCase, request
from tests.support.stack_harness import LOCAL, T1
from txuac.config import RoutingSettings, settings_from_dict
from txuac.errors import ConfigError, RouteContextError, UacRequestError
from txuac.routing.proxy import ProxyService
from txuac.routing.req_send import (
    FIELD_LIMITS,
    OutsideTransaction,
    RequestSender,
    UacReplyEvent,
    UacRequest,
    event_handler,
)
from txuac.routing.script import RouteKind, running_route
from txuac.routing.uac_functions import UAC, RequestAddresses, RestoreSettings, RouteParamsSource
from txuac.service import UACService
from txuac.sip import make_response
from txuac.sip.fields import parse_auth_list
from txuac.sip.via import Address

TARGET = f"sip:bob@{CALLEE[0]}:{CALLEE[1]}"
REALM = "trunk.example"
NONCE = "nonce-1"
SECRET = "s3cret-pw"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def expected_digest(authorization: str, password: str, method: str) -> str:
    """RFC 2617 3.2.2.1 with qop=auth, from the parameters the request carries."""
    get = parse_auth_list(authorization, "Authorization")[0].get
    ha1 = md5(f"{get('username')}:{get('realm')}:{password}")
    ha2 = md5(f"{method}:{get('uri')}")
    return md5(f"{ha1}:{get('nonce')}:{get('nc')}:{get('cnonce')}:{get('qop')}:{ha2}")


class FieldTests(SynchronousTestCase):
    """UacRequest: Kamailio's defaults, buffer sizes and types; SIP syntax checked."""

    def test_defaults(self):
        sent = UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET})
        self.assertEqual((sent.furi, sent.turi, sent.ouri, sent.cseqno, sent.evroute, sent.flags),
                         (TARGET, TARGET, "", 10, 0, 0))
        self.assertRegex(sent.callid, r"\A[0-9a-f]{32}\Z")
        self.assertNotEqual(sent.callid, UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET}).callid)
        self.assertIsNone(sent.credentials)
        self.assertIsNone(sent.timeout)
        built = sent.build()
        self.assertEqual((built.method, str(built.uri), built.cseq.number, built.call_id),
                         ("OPTIONS", TARGET, 10, sent.callid))
        self.assertIsNotNone(built.from_.tag)
        self.assertIsNone(built.to.tag)
        self.assertEqual((str(built.from_.uri), str(built.to.uri)), (TARGET, TARGET))
        # $null (None) is the default, as Kamailio's "$uac_req(key) = $null".
        self.assertEqual(UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "furi": None,
                                                 "cseqno": None}).furi, TARGET)

    def test_given_values(self):
        sent = UacRequest.from_fields({
            "method": "MESSAGE", "ruri": TARGET, "furi": "sip:alice@example.com", "turi": "sip:carol@example.com",
            "ouri": "sip:192.0.2.50:5080", "hdrs": "Content-Type: text/plain\r\nX-Folded: a\r\n b\r\n",
            "body": "hello", "callid": "call-x", "cseqno": 42, "fr_timeout": 1500, "evroute": 1,
            "evparam": "ctx"})
        built = sent.build()
        self.assertEqual((str(built.from_.uri), str(built.to.uri), built.call_id, built.cseq.number),
                         ("sip:alice@example.com", "sip:carol@example.com", "call-x", 42))
        self.assertEqual((built.headers.get("Content-Type"), built.headers.get("X-Folded"), built.body),
                         ("text/plain", "a b", b"hello"))
        self.assertEqual((sent.next_hop.host, sent.next_hop.port, sent.timeout), ("192.0.2.50", 5080, 1.5))

    def test_kamailio_6_1_keys(self):
        """ftag and ttag are the From and To tags; all (Kamailio's buffer reset) is taken."""
        sent = UacRequest.from_fields({"method": "NOTIFY", "ruri": TARGET, "ftag": "f-1", "ttag": "t.2",
                                       "all": None})
        built = sent.build()
        self.assertEqual((built.from_.tag, built.to.tag, str(built.to.uri)), ("f-1", "t.2", TARGET))
        self.assertEqual(built.headers.keys()[-1], "content-length")
        self.assertEqual(UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "all": 1}).build().to.tag, None)

    def test_limits_are_kamailio_buffer_sizes(self):
        """A value of the buffer's size or more is refused ("Value size too big"), one byte
        less is taken."""
        fits = {"method": "X" * 31, "ruri": "sip:" + "a" * (1023 - 16) + "@example.com", "hdrs": "X-A: " + "a" * 2042,
                "body": "b" * 32767, "auser": "u" * 127, "apasswd": "p" * 63, "callid": "c" * 127,
                "evparam": "e" * 127, "ftag": "f" * 127, "ttag": "t" * 127}
        for name, value in fits.items():
            self.assertEqual(len(value.encode()), FIELD_LIMITS[name] - 1, name)
            values = {"method": "OPTIONS", "ruri": TARGET, name: value}
            UacRequest.from_fields(values)
            values[name] = value + "x" if name != "ruri" else "sip:x" + value[4:]
            with self.assertRaises(UacRequestError) as caught:
                UacRequest.from_fields(values)
            self.assertIn(f"{name}: {FIELD_LIMITS[name]} bytes", str(caught.exception))
        # Bytes, not characters.
        self.assertRaises(UacRequestError, UacRequest.from_fields,
                          {"method": "OPTIONS", "ruri": TARGET, "evparam": "é" * 64})

    def test_bad_fields(self):
        cases = {
            "unknown": {"fromtag": "x"},
            "ftag: not a tag": {"ftag": "a b"},
            "ttag: not a tag": {"ttag": "a;b"},
            "method: required": {"method": ""},
            "ruri: required": {"ruri": None},
            "flags: expected an integer": {"flags": "1"},
            "evroute: expected an integer": {"evroute": True},
            "ruri: expected a string": {"ruri": 5},
            "method: not a SIP method": {"method": "OPT IONS"},
            "no dialog handling": {"method": "INVITE"},
            "ruri:": {"ruri": "sip:bob@exa mple.com"},
            "furi:": {"furi": "nonsense"},
            "ouri: must be a sip:": {"ouri": "tel:+123"},
            "needs ouri": {"ruri": "tel:+4930123"},
            "hdrs: CSeq comes from": {"hdrs": "CSeq: 5 OPTIONS\r\n"},
            "hdrs: Max-Forwards comes from": {"hdrs": "Max-Forwards: 3\r\n"},
            "hdrs: f comes from": {"hdrs": "f: <sip:x@y>\r\n"},
            "hdrs: not a header line": {"hdrs": "no colon here\r\n"},
            "sock": {"sock": "sctp:1.2.3.4:5060"},
            "fr_timeout: must be 0": {"fr_timeout": -1},
            "callid: must not contain": {"callid": "a b"},
            "apasswd: with flags bit 0": {"auser": "u", "apasswd": "not-hex", "flags": 1},
        }
        for reason, values in cases.items():
            with self.assertRaises(UacRequestError, msg=reason) as caught:
                UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, **values})
            self.assertIn(reason, str(caught.exception))

    def test_secrets_are_never_shown(self):
        sent = UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "auser": "bob", "apasswd": SECRET})
        self.assertIn("apasswd=***", repr(sent))
        self.assertNotIn(SECRET, repr(sent))
        self.assertNotIn(SECRET, repr(UacReplyEvent(sent, 200, 1)))
        with self.assertRaises(UacRequestError) as caught:
            UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "auser": "bob", "apasswd": SECRET * 10})
        self.assertNotIn(SECRET, str(caught.exception))

    def test_credentials(self):
        """Only with both auser and apasswd (K:uac_send.c); any realm; flags bit 0: HA1."""
        for values in ({"auser": "bob"}, {"apasswd": SECRET}):
            self.assertIsNone(UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, **values}).credentials)
        plain = UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "auser": "bob", "apasswd": SECRET})
        self.assertEqual((plain.credentials.username, plain.credentials.password, plain.credentials.realm),
                         ("bob", SECRET, None))
        self.assertTrue(plain.answers_challenges)
        ha1 = md5(f"bob:{REALM}:{SECRET}")
        hashed = UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "auser": "bob", "apasswd": ha1,
                                         "flags": 1})
        self.assertEqual((hashed.credentials.ha1, hashed.credentials.password), (ha1, None))
        self.assertFalse(UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "auser": "bob",
                                                 "apasswd": SECRET, "evroute": 2}).answers_challenges)

    def test_event_reads_the_request_fields(self):
        sent = UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, "evparam": "mine", "evroute": 1})
        event = UacReplyEvent(sent, 408, 2)
        self.assertEqual((event.ruri, event.evparam, event.evroute, event.method, event.evcode, event.evtype),
                         (TARGET, "mine", 1, "OPTIONS", 408, 2))
        self.assertIsNone(event.response)
        with self.assertRaises(AttributeError):
            event.status


class SenderTestCase(ProxyTestCase):
    """A RequestSender on the harness's stack, its events in ``self.events``."""

    def setUp(self):
        super().setUp()
        self.events: list[UacReplyEvent] = []
        self.sender = RequestSender(self.stack, on_event=self.events.append)

    def send(self, **fields):
        return self.sender.send(UacRequest.from_fields({"method": "OPTIONS", "ruri": TARGET, **fields}))

    def one_sent(self):
        [message] = self.sent(CALLEE)
        return message

    def challenge(self, sent, status=401, nonce=NONCE, source=CALLEE):
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        response = make_response(sent, status, to_tag="uas1", extra_headers=[
            (name, f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5')])
        self.receive(bytes(response), source)

    def codes(self):
        return [(event.evcode, event.evtype) for event in self.events]


class EventTests(SenderTestCase):
    def test_evroute_0_no_event_the_deferred_fires(self):
        d = self.send()
        self.answer(self.one_sent(), 200)
        event = self.successResultOf(d)
        self.assertEqual((event.evcode, event.evtype, event.response.status), (200, 1, 200))
        self.assertEqual(self.events, [])

    def test_challenged_request_fires_twice(self):
        """README 6.1: with evroute 1 a challenged request gives the 401, then the final reply;
        the retry (RFC 3261 22.2) keeps Call-ID and From tag, CSeq of the 401 + 1, To without tag."""
        d = self.send(auser="bob", apasswd=SECRET, evroute=1, evparam="p1")
        first = self.one_sent()
        self.challenge(first)
        self.assertEqual(self.codes(), [(401, 1)])
        self.assertEqual(self.events[0].response.status, 401)
        retry = self.one_sent()
        self.assertEqual((retry.call_id, retry.from_.tag, retry.cseq.number, retry.to.tag, str(retry.uri)),
                         (first.call_id, first.from_.tag, 11, None, TARGET))
        self.assertNotEqual(retry.top_via.branch, first.top_via.branch)
        authorization = retry.headers.get("Authorization")
        params = parse_auth_list(authorization, "Authorization")[0]
        self.assertEqual((params.get("username"), params.get("realm"), params.get("uri"), params.get("nc")),
                         ("bob", REALM, TARGET, "00000001"))
        self.assertEqual(params.get("response"), expected_digest(authorization, SECRET, "OPTIONS"))
        self.answer(retry, 200)
        self.assertEqual(self.codes(), [(401, 1), (200, 1)])
        self.assertEqual(self.events[1].evparam, "p1")
        self.assertIs(self.successResultOf(d), self.events[1])

    def test_proxy_challenge(self):
        d = self.send(auser="bob", apasswd=SECRET, evroute=1)
        self.challenge(self.one_sent(), 407)
        retry = self.one_sent()
        self.assertIn(f'realm="{REALM}"', retry.headers.get("Proxy-Authorization"))
        self.answer(retry, 200)
        self.assertEqual(self.successResultOf(d).evcode, 200)

    def test_no_second_retry(self):
        """A second challenge is final: the event fires twice at most (Kamailio retries once)."""
        d = self.send(auser="bob", apasswd=SECRET, evroute=1)
        self.challenge(self.one_sent())
        self.challenge(self.one_sent(), nonce="nonce-2")
        self.assertEqual(self.sent(CALLEE), [])
        self.assertEqual(self.codes(), [(401, 1), (401, 1)])
        self.assertEqual(self.successResultOf(d).evcode, 401)

    def test_evroute_0_with_credentials_retries_silently(self):
        d = self.send(auser="bob", apasswd=SECRET)
        self.challenge(self.one_sent())
        self.answer(self.one_sent(), 200)
        self.assertEqual(self.events, [])
        self.assertEqual(self.successResultOf(d).evcode, 200)

    def test_without_credentials_a_challenge_is_final(self):
        d = self.send(auser="bob", evroute=1)
        self.challenge(self.one_sent())
        self.assertEqual(self.sent(CALLEE), [])
        self.assertEqual(self.codes(), [(401, 1)])
        self.assertEqual(self.successResultOf(d).evcode, 401)

    def test_evroute_2_failures_only_and_no_retry(self):
        d = self.send(auser="bob", apasswd=SECRET, evroute=2)
        self.challenge(self.one_sent())
        self.assertEqual(self.sent(CALLEE), [], "no auth retry with evroute 2")
        self.assertEqual(self.codes(), [(401, 1)])
        self.assertEqual(self.successResultOf(d).evcode, 401)
        del self.events[:]
        d = self.send(evroute=2)
        self.answer(self.one_sent(), 200)
        self.assertEqual(self.successResultOf(d).evcode, 200)
        self.assertEqual(self.events, [], "a success is no failure")
        d = self.send(evroute=2)
        self.answer(self.one_sent(), 404)
        self.assertEqual(self.codes(), [(404, 1)])

    def test_other_evroute_values_are_1(self):
        self.send(evroute=7)
        self.answer(self.one_sent(), 202)
        self.assertEqual(self.codes(), [(202, 1)])

    def test_timeout_is_evtype_2(self):
        """No reply: Timer F (64*T1), a local 408 with evtype 2 and no response; also with evroute 2."""
        for evroute in (1, 2):
            d = self.send(evroute=evroute)
            self.reactor.advance(64 * T1 - 0.01)
            self.assertNoResult(d)
            self.reactor.advance(0.02)
            event = self.successResultOf(d)
            self.assertEqual((event.evcode, event.evtype, event.response), (408, 2, None))
            self.assertIs(self.events[-1], event)
            self.sent()

    def test_fr_timeout(self):
        """fr_timeout (ms, as tm's timers) ends the transaction sooner than Timer F, the
        retry included."""
        d = self.send(fr_timeout=2000, evroute=1)
        self.reactor.advance(1.99)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        event = self.successResultOf(d)
        self.assertEqual((event.evcode, event.evtype), (408, 2))
        self.sent()
        d = self.send(fr_timeout=2000, evroute=1, auser="bob", apasswd=SECRET)
        self.reactor.advance(1.5)
        self.challenge(self.sent(CALLEE)[0])
        self.one_sent()
        self.reactor.advance(1.99)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        self.assertEqual(self.codes()[-2:], [(401, 1), (408, 2)])

    def test_send_failure_is_evtype_2(self):
        self.udp.unreachable.add(CALLEE[0])
        d = self.send(evroute=1)
        event = self.successResultOf(d)
        self.assertEqual((event.evcode, event.evtype), (477, 2))
        self.assertEqual(self.codes(), [(477, 2)])

    def test_socket_not_ours_is_evtype_2(self):
        event = self.successResultOf(self.send(sock="udp:203.0.113.1:5060"))
        self.assertEqual((event.evcode, event.evtype), (477, 2))

    def test_default_socket(self):
        sender = RequestSender(self.stack, default_socket="udp:203.0.113.1:5060")
        self.assertEqual(sender.default_source, Address("udp", "203.0.113.1", 5060))
        self.assertEqual(self.successResultOf(sender.send(UacRequest.from_fields(
            {"method": "OPTIONS", "ruri": TARGET}))).evcode, 477)
        ours = f"udp:{LOCAL[0]}:{self.listener.port}"
        d = RequestSender(self.stack, default_socket=ours).send(UacRequest.from_fields(
            {"method": "OPTIONS", "ruri": TARGET}))
        self.answer(self.one_sent(), 200)
        self.assertEqual(self.successResultOf(d).evcode, 200)

    def test_ha1(self):
        d = self.send(auser="bob", apasswd=md5(f"bob:{REALM}:{SECRET}"), flags=1, evroute=1)
        self.challenge(self.one_sent())
        retry = self.one_sent()
        authorization = retry.headers.get("Authorization")
        self.assertEqual(parse_auth_list(authorization, "Authorization")[0].get("response"),
                         expected_digest(authorization, SECRET, "OPTIONS"))
        self.answer(retry, 200)
        self.assertEqual(self.successResultOf(d).evcode, 200)

    def test_challenge_from_elsewhere_is_not_answered(self):
        d = self.send(auser="bob", apasswd=SECRET, evroute=1)
        sent = self.one_sent()
        with capturedLogs() as logged:
            self.challenge(sent, source=("203.0.113.66", 5060))
        self.assertEqual(self.sent(CALLEE), [])
        self.assertEqual(self.successResultOf(d).evcode, 401)
        self.assertTrue(any("not answered" in str(e.get("refused", "")) for e in logged))

    def test_each_send_has_its_own_context(self):
        """Kamailio freed a shared copy twice on repeated 401s (PR #4210): here two
        challenged requests in flight keep their own fields and retries."""
        first = self.send(auser="bob", apasswd=SECRET, evroute=1, evparam="one")
        second = self.send(auser="carol", apasswd="other", evroute=1, evparam="two")
        sent_first, sent_second = self.sent(CALLEE)
        self.challenge(sent_second)
        self.challenge(sent_first)
        retry_second, retry_first = self.sent(CALLEE)
        self.assertEqual((retry_first.call_id, retry_second.call_id), (sent_first.call_id, sent_second.call_id))
        self.assertIn('username="carol"', retry_second.headers.get("Authorization"))
        self.answer(retry_first, 200)
        self.answer(retry_second, 403)
        first, second = self.successResultOf(first), self.successResultOf(second)
        self.assertEqual(((first.evparam, first.evcode), (second.evparam, second.evcode)), (("one", 200), ("two", 403)))
        self.assertEqual([e.evparam for e in self.events], ["two", "one", "one", "two"])

    def test_a_failing_handler_does_not_stop_the_exchange(self):
        def broken(event):
            raise RuntimeError("handler bug")

        self.sender.on_event = broken
        d = self.send(auser="bob", apasswd=SECRET, evroute=1)
        self.challenge(self.one_sent())
        self.answer(self.one_sent(), 200)
        self.assertEqual(self.successResultOf(d).evcode, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


SCRIPT = '''
from txuac.routing.script import event_route, request_route

EVENTS = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.uri.user == "send":
        code = uac.uac_req_send(method="OPTIONS", ruri="sip:bob@198.51.100.9:5070", evroute=1,
                                evparam="from-request", auser="bob", apasswd="s3cret-pw")
        sl.sl_send_reply(200 if code == 1 else 500, f"sent {code}")
    elif msg.uri.user == "bad":
        code = uac.uac_req_send(method="OPTIONS", ruri="sip:bob@198.51.100.9:5070", auser="bob",
                                apasswd="s3cret-pw" * 10)
        sl.sl_send_reply(400, f"bad {code}")
    else:
        sl.sl_send_reply(200, "Alive")


@event_route("uac:reply")
def uac_reply(msg, uac, tm, rr, dialog, sl):
    EVENTS.append((msg.evcode, msg.evtype, msg.evparam))
    if msg.evparam == "from-request" and msg.evcode == 200:
        uac.uac_req_send(method="MESSAGE", ruri="sip:noc@198.51.100.9:5070", body="done", evroute=1,
                         evparam="from-event")
    if msg.evparam == "from-event":
        tm.t_relay()
'''


class ScriptTests(SenderTestCase):
    """uac.uac_req_send in the request route and in event_route[uac:reply]."""

    script = SCRIPT

    def script_events(self):
        return self.proxy.routes.module.EVENTS

    def test_request_route_and_event_route(self):
        self.receive(request("OPTIONS", uri=f"sip:send@{LOCAL[0]}:{LOCAL[1]}"))
        replies = self.sent()
        [(reply, _)] = [(m, a) for m, a in replies if a != CALLEE]
        self.assertEqual((reply.status, reply.reason), (200, "sent 1"))
        [options] = [m for m, a in replies if a == CALLEE]
        self.challenge(options)
        self.answer(self.one_sent(), 200)
        self.assertEqual(self.script_events(), [(401, 1, "from-request"), (200, 1, "from-request")])
        # The event route sent a MESSAGE; its event route calls tm.t_relay: RouteContextError,
        # logged once with the script's traceback, the service goes on.
        message = self.one_sent()
        self.assertEqual((message.method, message.body), ("MESSAGE", b"done"))
        with capturedLogs() as logged:
            self.answer(message, 202)
        self.assertEqual(self.script_events()[-1], (202, 1, "from-event"))
        [failure] = [e for e in logged if "routing script failed" in e.get("log_format", "")]
        self.assertIn("RouteContextError: tm.t_relay() cannot be used from event_route[uac:reply]",
                      failure["traceback"])
        self.assertIn("tm.t_relay()", failure["traceback"])
        self.assertEqual((self.proxy.events.failures, self.proxy.script_failures), (1, 1))
        self.receive(request("OPTIONS", uri=OURS, branch="z9hG4bKagain"))
        self.assertEqual([m.status for m, _ in self.sent()], [200])

    def test_bad_field_is_minus_1_logged_once_without_the_secret(self):
        with capturedLogs() as logged:
            self.receive(request("OPTIONS", uri=f"sip:bad@{LOCAL[0]}:{LOCAL[1]}"))
        [(reply, _)] = self.sent()
        self.assertEqual((reply.status, reply.reason), (400, "bad -1"))
        lines = [e for e in logged if "uac_req_send" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertIn("apasswd", lines[0]["error"])
        self.assertNotIn(SECRET, repr(logged))

    def test_uac_without_a_sender(self):
        uac = UAC(None, RestoreSettings.from_settings(RoutingSettings()), RequestAddresses(), RouteParamsSource())
        with running_route(RouteKind.REQUEST), capturedLogs() as logged:
            self.assertEqual(uac.uac_req_send(method="OPTIONS", ruri=TARGET), -1)
        self.assertEqual(len(logged), 1)

    def test_not_allowed_outside_routes(self):
        uac = self.proxy.event_uac()
        self.assertRaises(RouteContextError, uac.uac_req_send, method="OPTIONS", ruri=TARGET)

    def test_no_transaction_in_the_event_route(self):
        """tm, rr, dialog and sl have no request in event_route[uac:reply]."""
        for name, call in (("tm", "t_relay"), ("rr", "record_route"), ("dialog", "dlg_manage"),
                           ("sl", "sl_send_reply")):
            namespace = OutsideTransaction(name)
            with self.assertRaises(RouteContextError) as caught:
                getattr(namespace, call)(200)
            self.assertIn(f"{name}.{call}() cannot be used from event_route[uac:reply]", str(caught.exception))


CALLBACK_SCRIPT = '''
from txuac.routing.script import event_route, request_route

CALLS = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    sl.sl_send_reply(200 if uac.uac_req_send(method="OPTIONS", ruri="sip:bob@198.51.100.9:5070",
                                             evroute=1) == 1 else 500)


def ksr_uac_event(evname, msg, uac, tm, rr, dialog, sl):
    CALLS.append((evname, msg.evcode))


@event_route("uac:reply")
def not_this_one(msg, uac, tm, rr, dialog, sl):
    CALLS.append(("event_route", msg.evcode))

NOT_CALLABLE = 1


def too_few(evname, msg):
    pass
'''


class EventCallbackTests(ProxyTestCase):
    """[routing] event_callback (README 3.24): called instead of event_route[uac:reply]."""

    script = CALLBACK_SCRIPT
    settings = {"event_callback": "ksr_uac_event"}

    def test_called_with_the_event_name_first(self):
        self.receive(request("OPTIONS", uri=OURS))
        sent = self.sent()
        self.assertEqual([m.status for m, a in sent if a != CALLEE], [200])
        [options] = [m for m, a in sent if a == CALLEE]
        self.answer(options, 200)
        self.assertEqual(self.proxy.routes.module.CALLS, [("uac:reply", 200)])

    def test_validated_at_load(self):
        routes = self.proxy.routes
        for name, reason in (("missing", "no such function"), ("NOT_CALLABLE", "no such function"),
                             ("too_few", "must accept (event_name, msg, uac, tm, rr, dialog, sl)")):
            with self.assertRaises(ConfigError) as caught:
                event_handler(routes, name)
            self.assertIn(f"{routes.path}: [routing] event_callback {name!r}: {reason}", str(caught.exception))
            self.assertRaises(ConfigError, ProxyService, self.stack, routes,
                              RoutingSettings(script=routes.path, event_callback=name), [Address("udp", *LOCAL)])
        self.assertEqual(event_handler(routes, None).function.__name__, "not_this_one")

    def test_runner_refuses_a_missing_callback(self):
        document = {"core": {"listen": ["udp:127.0.0.1:0"]}, "rpc": {"enabled": False},
                    "routing": {"script": self.proxy.routes.path, "event_callback": "missing"}}
        with self.assertRaises(ConfigError) as caught:
            UACService(settings_from_dict(document), MemoryReactorClock())
        self.assertIn("event_callback 'missing'", str(caught.exception))


class ServiceReqSendTests(SynchronousTestCase):
    """UACService.req_send: usable without a routing script."""

    def test_without_a_script(self):
        service = UACService(settings_from_dict({"core": {"listen": ["udp:127.0.0.1:0"]}, "rpc": {"enabled": False}}),
                             MemoryReactorClock())
        self.assertRaises(UacRequestError, service.req_send, method="OPTIONS")
        # Not started: no socket to send from, a local failure (evtype 2), not an errback.
        event = self.successResultOf(service.req_send(method="OPTIONS", ruri=TARGET, evparam="x"))
        self.assertEqual((event.evcode, event.evtype, event.evparam), (477, 2, "x"))
