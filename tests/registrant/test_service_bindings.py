"""RegistrantService and bindings: what a 200 OK teaches is kept on the record, outbound
accounts get an instance ID, a rewritten Contact is refreshed from its own expiry, and a
challenge from anywhere but the REGISTER's destination is not answered.

Uses the task.Clock and fake stack of tests/support/registrant_harness.py (ServiceTestCase).
"""

from __future__ import annotations

from twisted.logger import capturedLogs

from tests.support.accounts import make_row
from tests.support.registrant_harness import REALM, ServiceTestCase
from txuac.admin.uac_rpc import record_struct
from txuac.net.interfaces import ResponseOrigin
from txuac.registrant.record import Flag, State
from txuac.sip import make_response, parse_message
from txuac.sip.via import Address

INSTANCE = "urn:uuid:00000000-0000-4000-8000-00000000c0de"
REGISTRAR = Address("udp", "198.51.100.7", 5070)


class BindingServiceTestCase(ServiceTestCase):
    def start_outbound(self, instance_id=INSTANCE, **settings):
        """One account made outbound before its first REGISTER (sent after reg_delay 1 s)."""
        self.start([make_row("acc1", reg_delay=1)], **settings)
        record = self.record()
        record.outbound = True
        record.instance_id = instance_id
        self.advance(1.1)
        [sent] = self.stack.pending()
        return sent


class LearnedTests(BindingServiceTestCase):
    def test_instance_id_made_when_missing_and_kept(self):
        first = self.start_outbound(instance_id="")
        instance_id = self.record().instance_id
        self.assertRegex(instance_id, r"^urn:uuid:[0-9a-f-]{36}$")
        self.assertEqual(first.request.contacts[0].params.get("+sip.instance"), f'"<{instance_id}>"')
        self.assertEqual(first.request.tokens("Supported"), ["outbound", "path", "gruu"])
        self.stack.ok(first, 60, None, ("Require", "outbound"))
        self.advance(60)
        refresh = self.stack.sent[-1]
        self.assertIsNot(refresh, first)
        self.assertEqual(self.record().instance_id, instance_id)
        self.assertEqual(refresh.request.contacts[0].params.get("+sip.instance"), f'"<{instance_id}>"')

    def test_what_the_200_teaches_is_kept(self):
        sent = self.start_outbound()
        ours = sent.request.headers.get("Contact") + ';pub-gruu="sip:alice@provider.example;gr=x"'
        self.stack.ok(sent, 600, ours, ("Require", "outbound"), ("Flow-Timer", "75"),
                      ("Path", "<sip:edge.provider.example;lr;ob>"),
                      ("Service-Route", "<sip:orig@core.provider.example;lr>"))
        record = self.record()
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertEqual(record.path, ("<sip:edge.provider.example;lr;ob>",))
        self.assertEqual(record.service_route, ("<sip:orig@core.provider.example;lr>",))
        self.assertEqual((record.pub_gruu, record.temp_gruu, record.flow_timer),
                         ("sip:alice@provider.example;gr=x", None, 75))
        shown = record_struct(record, self.now())  # uac.reg_info and uac.reg_dump, after Kamailio's fields
        self.assertEqual(list(shown)[-7:], ["state", "last_error", "path", "service_route", "pub_gruu", "temp_gruu",
                                            "flow_timer"])
        self.assertEqual((shown["path"], shown["service_route"], shown["pub_gruu"], shown["temp_gruu"],
                          shown["flow_timer"]),
                         (["<sip:edge.provider.example;lr;ob>"], ["<sip:orig@core.provider.example;lr>"],
                          "sip:alice@provider.example;gr=x", None, 75))
        # Unregistered: all of it forgotten.
        self.service.send_unregister("acc1")
        self.stack.answer(self.stack.pending()[0], 200)
        self.assertEqual((record.path, record.service_route, record.pub_gruu, record.flow_timer), ((), (), None, None))

    def test_registrar_without_outbound_logged_once(self):
        sent = self.start_outbound()
        with capturedLogs() as events:
            self.stack.ok(sent, 60, None, ("Flow-Timer", "75"))
            self.advance(60)
            self.stack.ok(self.stack.pending()[0], 60)
        self.assertEqual(self.service.status("acc1"), 1)  # a plain registration
        self.assertIsNone(self.record().flow_timer)
        lines = [e for e in events if "does not support outbound" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["l_uuid"], "acc1")

    def test_rewritten_contact_refreshed_from_its_expiry(self):
        """The registrar rewrote our Contact and grants 20 s: refreshed before it lapses."""
        self.start(reg_timer_interval=90)
        first = self.stack.sent[0]
        self.stack.ok(first, 20, "<sip:203.0.113.7:41234;transport=udp>")
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertEqual(self.events[-1].state, State.ONLINE)
        self.assertIn("rewrote our Contact", self.events[-1].reason)
        self.advance(19)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertLess(self.stack.sent[1].at, 20)
        self.assertTrue(self.record().has(Flag.ONGOING))


class ChallengeOriginTests(ServiceTestCase):
    def challenge_from(self, sent, source):
        response = make_response(sent.request, 401, to_tag="reg-tag", extra_headers=[
            ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="n1", qop="auth", algorithm=MD5')])
        response = parse_message(bytes(response))
        sent.handle.origin = ResponseOrigin(source, REGISTRAR)
        sent.deferred.callback(response)

    def test_challenge_from_elsewhere_fails_the_attempt(self):
        self.start(reg_retry_interval=30)
        self.challenge_from(self.stack.sent[0], Address("udp", "203.0.113.9", 5060))
        self.assertEqual(len(self.stack.sent), 1)  # no answer sent
        record = self.record()
        self.assertEqual(record.state(self.now()), State.FAILED)
        self.assertFalse(record.has(Flag.AUTHSENT))
        self.assertEqual(record.failures, 1)
        self.assertEqual(record.last_failure, "authentication failed: challenge from 203.0.113.9:5060, "
                                              "not from our registrar: not answered")
        self.assertEqual(self.events[-1].status, 401)

    def test_challenge_from_the_registrar_is_answered(self):
        self.start()
        self.challenge_from(self.stack.sent[0], REGISTRAR)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertEqual(len(self.stack.sent[1].request.authorization), 1)
