"""txuac.registrant.protocol: the REGISTER layout, what a reply means, and when to refresh.

Reference: kamailio-uac-behaviour.md 4.7 (building the REGISTER), 4.8 (reply handling), 4.6
(refresh moment), with our documented differences (refresh before expiry even for a grant
shorter than reg_timer_interval; 423 answered at once; Retry-After honoured).
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_record
from txuac.registrant.protocol import (
    Learned,
    Outcome,
    OutcomeKind,
    build_register,
    contact_header,
    contact_uri,
    interpret,
    new_instance_id,
    our_binding,
    refresh_at,
)
from txuac.sip import SipURI, make_response, parse_message

DEFAULT_ADDR = "192.0.2.10:5060"


def reply(request, status, *headers, reason=None):
    """A response to ``request`` as it arrives from the wire (serialized and parsed again)."""
    response = make_response(request, status, reason, to_tag="srv1", extra_headers=list(headers))
    return parse_message(bytes(response))


class ContactTests(SynchronousTestCase):
    def test_l_uuid_at_default_address(self):
        self.assertEqual(contact_uri(make_record("acc1"), DEFAULT_ADDR), "sip:acc1@192.0.2.10:5060")

    def test_record_contact_addr_overrides_default(self):
        record = make_record("acc1", contact_addr="198.51.100.7:5080;transport=tcp")
        self.assertEqual(contact_uri(record, DEFAULT_ADDR), "sip:acc1@198.51.100.7:5080;transport=tcp")

    def test_contact_user_with_line_param(self):
        record = make_record("acc1", contact_user="0211234567")
        self.assertEqual(contact_uri(record, DEFAULT_ADDR), "sip:0211234567@192.0.2.10:5060;line=acc1")

    def test_contact_user_and_contact_addr(self):
        record = make_record("acc1", contact_user="trunk", contact_addr="203.0.113.5")
        self.assertEqual(contact_uri(record, DEFAULT_ADDR), "sip:trunk@203.0.113.5;line=acc1")


class BuildRegisterTests(SynchronousTestCase):
    def setUp(self):
        self.record = make_record("acc1", r_username="alice", r_domain="sip.provider.example",
                                  auth_proxy="sip:outbound.provider.example:5070;transport=tcp")

    def build(self, **kwargs):
        kwargs.setdefault("expires", 3600)
        return build_register(self.record, DEFAULT_ADDR, **kwargs)

    def test_request_uri_is_r_domain(self):
        request = self.build()
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(str(request.uri), "sip:sip.provider.example")
        self.assertIsInstance(request.uri, SipURI)

    def test_from_and_to_are_the_remote_aor(self):
        request = self.build()
        self.assertEqual(str(request.from_.uri), "sip:alice@sip.provider.example")
        self.assertEqual(str(request.to.uri), "sip:alice@sip.provider.example")
        self.assertIsNone(request.from_.display_name)
        self.assertIsNone(request.to.display_name)

    def test_from_has_a_tag_to_has_none(self):
        request = self.build()
        self.assertTrue(request.from_.tag)
        self.assertIsNone(request.to.tag)

    def test_new_from_tag_each_time(self):
        self.assertNotEqual(self.build().from_.tag, self.build().from_.tag)

    def test_contact_header_exactly(self):
        request = self.build()
        self.assertEqual(request.headers.get_all("Contact"), ["<sip:acc1@192.0.2.10:5060>"])
        self.assertIsNone(request.contacts[0].expires)  # Kamailio: no expires param in Contact

    def test_contact_with_contact_user(self):
        self.record.contact_user = "0211234567"
        request = self.build()
        self.assertEqual(request.headers.get_all("Contact"), ["<sip:0211234567@192.0.2.10:5060;line=acc1>"])

    def test_record_contact_addr_overrides_reg_contact_addr(self):
        self.record.contact_addr = "198.51.100.7:5080"
        self.assertEqual(self.build().headers.get("Contact"), "<sip:acc1@198.51.100.7:5080>")

    def test_takeover_removes_the_stale_contact_in_the_same_register(self):
        """RFC 3261 10.2.2: the binding another node registered goes with expires=0 after ours."""
        self.record.stale_contacts = ("sip:acc1@192.0.2.99:5060",)
        wire = bytes(self.build(expires=600, call_id="kept-call-id", cseq=112))
        self.assertIn(b"\r\nCall-ID: kept-call-id\r\nCSeq: 112 REGISTER\r\n", wire)
        self.assertIn(b"\r\nContact: <sip:acc1@192.0.2.10:5060>\r\n"
                      b"Contact: <sip:acc1@192.0.2.99:5060>;expires=0\r\nExpires: 600\r\n", wire)
        contacts = parse_message(wire).contacts
        self.assertEqual([(str(c.uri), c.expires) for c in contacts],
                         [("sip:acc1@192.0.2.10:5060", None), ("sip:acc1@192.0.2.99:5060", 0)])

    def test_takeover_removes_every_stale_contact_in_order(self):
        self.record.stale_contacts = ("sip:acc1@192.0.2.98:5060", "sip:acc1@192.0.2.99:5060")
        wire = bytes(self.build(expires=600, call_id="kept-call-id", cseq=112))
        self.assertIn(b"\r\nContact: <sip:acc1@192.0.2.10:5060>\r\n"
                      b"Contact: <sip:acc1@192.0.2.98:5060>;expires=0\r\n"
                      b"Contact: <sip:acc1@192.0.2.99:5060>;expires=0\r\nExpires: 600\r\n", wire)
        self.assertEqual([(str(c.uri), c.expires) for c in parse_message(wire).contacts],
                         [("sip:acc1@192.0.2.10:5060", None), ("sip:acc1@192.0.2.98:5060", 0),
                          ("sip:acc1@192.0.2.99:5060", 0)])

    def test_expires_header(self):
        self.assertEqual(self.build(expires=600).headers.get_all("Expires"), ["600"])
        self.assertEqual(self.build(expires=0).headers.get_all("Expires"), ["0"])

    def test_new_call_id_starts_at_cseq_10(self):
        request = self.build()
        self.assertEqual(request.cseq.number, 10)
        self.assertEqual(request.cseq.method, "REGISTER")
        self.assertTrue(request.call_id)

    def test_fresh_call_id_each_time(self):
        self.assertNotEqual(self.build().call_id, self.build().call_id)

    def test_kept_call_id_and_cseq(self):
        request = self.build(call_id="kept-call-id@host", cseq=12)
        self.assertEqual(request.call_id, "kept-call-id@host")
        self.assertEqual(request.cseq.number, 12)

    def test_auth_proxy_never_in_the_headers(self):
        wire = bytes(self.build())
        self.assertNotIn(b"outbound.provider.example", wire)
        self.assertNotIn(b"Route:", wire)

    def test_user_agent(self):
        self.assertIsNone(self.build().headers.get("User-Agent"))
        self.assertEqual(self.build(user_agent="txuac/1").headers.get("User-Agent"), "txuac/1")

    def test_round_trips_through_the_parser(self):
        request = self.build()
        parsed = parse_message(bytes(request))
        self.assertEqual(parsed.method, "REGISTER")
        self.assertEqual(str(parsed.uri), "sip:sip.provider.example")
        self.assertEqual(parsed.headers.get("Contact"), "<sip:acc1@192.0.2.10:5060>")
        self.assertEqual(parsed.expires, 3600)
        self.assertEqual(parsed.max_forwards, 70)
        self.assertEqual(parsed.content_length, 0)


class InterpretOkTests(SynchronousTestCase):
    def setUp(self):
        self.record = make_record("acc1")
        self.request = build_register(self.record, DEFAULT_ADDR, 3600)

    def test_contact_expires_param(self):
        response = reply(self.request, 200, ("Contact", "<sip:acc1@192.0.2.10:5060>;expires=600"))
        self.assertEqual(interpret(self.record, response, 3600),
                         Outcome(OutcomeKind.ONLINE, granted=600, learned=Learned()))

    def test_contact_param_wins_over_expires_header(self):
        response = reply(self.request, 200, ("Contact", "<sip:acc1@192.0.2.10:5060>;expires=600"), ("Expires", "1800"))
        self.assertEqual(interpret(self.record, response, 3600).granted, 600)

    def test_expires_header_when_no_param(self):
        response = reply(self.request, 200, ("Contact", "<sip:acc1@192.0.2.10:5060>"), ("Expires", "1800"))
        outcome = interpret(self.record, response, 3600)
        self.assertEqual((outcome.kind, outcome.granted), (OutcomeKind.ONLINE, 1800))

    def test_host_and_port_are_not_compared(self):
        response = reply(self.request, 200, ("Contact", "<sip:acc1@203.0.113.99:6000;transport=udp>;expires=60"),
                         ("Contact", "<sip:other@192.0.2.10:5060>;expires=900"))
        self.assertEqual(interpret(self.record, response, 3600),
                         Outcome(OutcomeKind.ONLINE, granted=60, learned=Learned()))

    def test_ours_among_other_bindings(self):
        response = reply(self.request, 200,
                         ("Contact", "<sip:other@198.51.100.1>;expires=100, <sip:someone@198.51.100.2>;expires=200"),
                         ("Contact", "<sip:acc1@192.0.2.10:5060>;expires=300"))
        self.assertEqual(interpret(self.record, response, 3600).granted, 300)

    def test_not_listing_our_contact(self):
        """Several bindings, none of them ours: unlisted (Kamailio's rule)."""
        response = reply(self.request, 200, ("Contact", "<sip:someone-else@192.0.2.10:5060>;expires=600"),
                         ("Contact", "<sip:another@192.0.2.11:5060>;expires=600"))
        outcome = interpret(self.record, response, 3600)
        self.assertEqual(outcome.kind, OutcomeKind.UNLISTED)
        self.assertEqual(outcome.granted, 0)
        self.assertEqual(outcome.learned, Learned())  # what an earlier 200 taught is forgotten

    def test_user_match_is_exact(self):
        for user in ("ACC1", "acc10", "acc"):
            with self.subTest(user=user):
                response = reply(self.request, 200, ("Contact", f"<sip:{user}@192.0.2.10>;expires=600"),
                                 ("Contact", "<sip:someone-else@192.0.2.10>;expires=600"))
                self.assertEqual(interpret(self.record, response, 3600).kind, OutcomeKind.UNLISTED)

    def test_wildcard_contact_is_not_ours(self):
        response = reply(self.request, 200, ("Contact", "*"))
        self.assertNotEqual(interpret(self.record, response, 3600).kind, OutcomeKind.ONLINE)

    def test_contact_user_matched_by_line_param(self):
        self.record.contact_user = "0211234567"
        response = reply(self.request, 200, ("Contact", "<sip:0211234567@192.0.2.10:5060;line=acc2>;expires=300"),
                         ("Contact", "<sip:0211234567@192.0.2.10:5060;line=acc1>;expires=900"))
        self.assertEqual(interpret(self.record, response, 3600),
                         Outcome(OutcomeKind.ONLINE, granted=900, learned=Learned()))

    def test_contact_user_other_line_is_not_ours(self):
        self.record.contact_user = "0211234567"
        response = reply(self.request, 200, ("Contact", "<sip:0211234567@192.0.2.10:5060;line=acc2>;expires=900"))
        self.assertEqual(interpret(self.record, response, 3600).kind, OutcomeKind.UNLISTED)

    def test_line_param_matches_without_contact_user(self):
        """A registrar that rewrote the user but kept the URI parameters: found by ``line``."""
        response = reply(self.request, 200, ("Contact", "<sip:other@192.0.2.10>;expires=100"),
                         ("Contact", "<sip:trunk@192.0.2.10;line=acc1>;expires=900"))
        outcome = interpret(self.record, response, 3600)
        self.assertEqual((outcome.kind, outcome.granted, outcome.reason), (OutcomeKind.ONLINE, 900, ""))

    def test_without_contact_is_a_failure(self):
        outcome = interpret(self.record, reply(self.request, 200), 3600)
        self.assertEqual(outcome.kind, OutcomeKind.FAILED)
        self.assertIn("Contact", outcome.reason)

    def test_unregister_answered(self):
        """An un-REGISTER's 200 usually lists no Contact: it is not a failure for us."""
        self.assertEqual(interpret(self.record, reply(self.request, 200), 0).kind, OutcomeKind.UNREGISTERED)

    def test_binding_granted_zero_is_not_online(self):
        response = reply(self.request, 200, ("Contact", "<sip:acc1@192.0.2.10:5060>;expires=0"))
        self.assertNotEqual(interpret(self.record, response, 3600).kind, OutcomeKind.ONLINE)

    def test_unparsable_contact_is_a_failure(self):
        response = make_response(self.request, 200, extra_headers=[("Contact", "<sip:acc1@192.0.2.10:5060")])
        self.assertEqual(interpret(self.record, response, 3600).kind, OutcomeKind.FAILED)


class InterpretErrorTests(SynchronousTestCase):
    def setUp(self):
        self.record = make_record("acc1")
        self.request = build_register(self.record, DEFAULT_ADDR, 60)

    def test_423_with_min_expires(self):
        outcome = interpret(self.record, reply(self.request, 423, ("Min-Expires", "3600")), 60)
        self.assertEqual(outcome.kind, OutcomeKind.INTERVAL_TOO_BRIEF)
        self.assertEqual(outcome.expires, 3600)
        self.assertIn("423", outcome.reason)

    def test_423_without_min_expires_doubles(self):
        outcome = interpret(self.record, reply(self.request, 423), 60)
        self.assertEqual((outcome.kind, outcome.expires), (OutcomeKind.INTERVAL_TOO_BRIEF, 120))

    def test_423_with_unparsable_min_expires_doubles(self):
        outcome = interpret(self.record, reply(self.request, 423, ("Min-Expires", "soon")), 60)
        self.assertEqual((outcome.kind, outcome.expires), (OutcomeKind.INTERVAL_TOO_BRIEF, 120))

    def test_423_always_asks_for_more(self):
        outcome = interpret(self.record, reply(self.request, 423, ("Min-Expires", "30")), 60)
        self.assertGreater(outcome.expires, 60)

    def test_403(self):
        outcome = interpret(self.record, reply(self.request, 403), 60)
        self.assertEqual(outcome, Outcome(OutcomeKind.FAILED, reason="403 Forbidden"))

    def test_other_failures(self):
        for status in (302, 400, 404, 408, 480, 486, 500, 503, 603):
            with self.subTest(status=status):
                outcome = interpret(self.record, reply(self.request, status), 60)
                self.assertEqual(outcome.kind, OutcomeKind.FAILED)
                self.assertTrue(outcome.reason.startswith(str(status)))
                self.assertIsNone(outcome.retry_after)

    def test_retry_after_on_503(self):
        outcome = interpret(self.record, reply(self.request, 503, ("Retry-After", "300")), 60)
        self.assertEqual((outcome.kind, outcome.retry_after), (OutcomeKind.FAILED, 300))

    def test_retry_after_with_comment_and_duration(self):
        outcome = interpret(self.record, reply(self.request, 503, ("Retry-After", "120 (maintenance);duration=60")),
                            60)
        self.assertEqual(outcome.retry_after, 120)

    def test_retry_after_on_404_480_and_5xx(self):
        for status in (404, 480, 500, 502, 504, 580):
            with self.subTest(status=status):
                outcome = interpret(self.record, reply(self.request, status, ("Retry-After", "90")), 60)
                self.assertEqual(outcome.retry_after, 90)

    def test_retry_after_ignored_elsewhere(self):
        # 6xx is left out: the code honours it too (status >= 500), which RFC 3261 allows for 600/603.
        for status in (403, 486):
            with self.subTest(status=status):
                outcome = interpret(self.record, reply(self.request, status, ("Retry-After", "90")), 60)
                self.assertIsNone(outcome.retry_after)

    def test_unparsable_retry_after_is_ignored(self):
        outcome = interpret(self.record, reply(self.request, 503, ("Retry-After", "later")), 60)
        self.assertEqual((outcome.kind, outcome.retry_after), (OutcomeKind.FAILED, None))


class RefreshAtTests(SynchronousTestCase):
    """We refresh timer_interval+3 s before expiry, never later than half-way, with <= 10% jitter."""

    def test_long_grant_refreshes_about_interval_plus_3_early(self):
        rng = random.Random(42)
        for _ in range(500):
            at = refresh_at(1000.0, 3600, 90, rng)
            early = 1000.0 + 3600 - at
            self.assertGreaterEqual(early, 93.0)
            self.assertLessEqual(early, 93.0 * 1.1 + 1e-9)

    def test_jitter_spreads_refreshes(self):
        rng = random.Random(5)
        times = {round(refresh_at(0.0, 3600, 90, rng), 3) for _ in range(50)}
        self.assertGreater(len(times), 40)

    def test_reproducible_with_seeded_rng(self):
        self.assertEqual([refresh_at(0.0, 600, 90, random.Random(9)) for _ in range(3)],
                         [refresh_at(0.0, 600, 90, random.Random(9)) for _ in range(3)])

    def test_short_grant_refreshed_before_expiry(self):
        """Grant 20 s with reg_timer_interval 90: Kamailio lets it lapse, we refresh half-way."""
        rng = random.Random(1)
        for _ in range(500):
            at = refresh_at(500.0, 20, 90, rng)
            self.assertGreater(at, 500.0)
            self.assertLess(at, 520.0)
            self.assertGreaterEqual(at, 500.0 + 9.0 - 1e-9)
            self.assertLessEqual(at, 500.0 + 10.0 + 1e-9)

    def test_never_after_expiry_for_any_grant(self):
        rng = random.Random(3)
        for granted in (1, 2, 5, 10, 30, 60, 93, 94, 95, 120, 185, 186, 187, 300, 600, 3600, 86400, 2**32 - 1):
            for interval in (0, 1, 10, 90, 300, 3600):
                for _ in range(20):
                    at = refresh_at(0.0, granted, interval, rng)
                    self.assertLess(at, granted, (granted, interval))
                    self.assertGreater(at, 0.0, (granted, interval))

    def test_small_interval(self):
        rng = random.Random(3)
        at = refresh_at(0.0, 3600, 10, rng)
        self.assertTrue(3600 - 13 * 1.1 - 1e-9 <= at <= 3600 - 13, at)


INSTANCE = "urn:uuid:00000000-0000-4000-8000-00000000c0de"


def outbound_record(l_uuid="acc1", **overrides):
    record = make_record(l_uuid, **overrides)
    record.outbound = True
    record.instance_id = INSTANCE
    return record


class OutboundContactTests(SynchronousTestCase):
    """RFC 5626 4.2.1: an outbound account's REGISTER carries ;ob, reg-id and +sip.instance."""

    def test_ob_on_the_contact_uri(self):
        self.assertEqual(contact_uri(outbound_record(), DEFAULT_ADDR), "sip:acc1@192.0.2.10:5060;ob")

    def test_ob_after_line_and_contact_addr_params(self):
        record = outbound_record(contact_user="trunk", contact_addr="198.51.100.7:5080;transport=tcp")
        self.assertEqual(contact_uri(record, DEFAULT_ADDR), "sip:trunk@198.51.100.7:5080;transport=tcp;line=acc1;ob")

    def test_contact_header(self):
        record = outbound_record()
        record.reg_id = 2
        self.assertEqual(contact_header(record, DEFAULT_ADDR),
                         f'<sip:acc1@192.0.2.10:5060;ob>;reg-id=2;+sip.instance="<{INSTANCE}>"')

    def test_plain_account_contact_header_is_kamailios(self):
        record = make_record("acc1")
        record.instance_id = INSTANCE  # an instance ID alone does not make an outbound account
        self.assertEqual(contact_header(record, DEFAULT_ADDR), "<sip:acc1@192.0.2.10:5060>")

    def test_register_on_the_wire(self):
        request = parse_message(bytes(build_register(outbound_record(), DEFAULT_ADDR, 600)))
        contact = request.contacts[0]
        self.assertEqual(str(contact.uri), "sip:acc1@192.0.2.10:5060;ob")
        self.assertIn("ob", contact.uri.params)
        self.assertEqual(contact.params.get("reg-id"), "1")
        self.assertEqual(contact.params.get("+sip.instance"), f'"<{INSTANCE}>"')
        self.assertEqual(request.tokens("Supported"), ["outbound", "path", "gruu"])

    def test_plain_account_sends_no_supported(self):
        request = build_register(make_record("acc1"), DEFAULT_ADDR, 600)
        self.assertIsNone(request.headers.get("Supported"))

    def test_new_instance_id(self):
        first, second = new_instance_id(), new_instance_id()
        self.assertNotEqual(first, second)
        self.assertRegex(first, r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class BindingMatchTests(SynchronousTestCase):
    """Our binding in a 200 OK: URI user l_uuid, else ``line``, else ``+sip.instance``, else
    the only binding of a rewritten Contact (registration-peers.md pain point 4)."""

    def setUp(self):
        self.record = make_record("acc1")
        self.request = build_register(self.record, DEFAULT_ADDR, 3600)

    def interpret(self, *contacts, record=None, expires_header=None):
        headers = [("Contact", contact) for contact in contacts]
        if expires_header is not None:
            headers.append(("Expires", str(expires_header)))
        return interpret(record or self.record, reply(self.request, 200, *headers), 3600)

    def test_rewritten_contact_is_the_only_binding(self):
        """An SBC rewrote user, host and port: the only binding listed is ours, with its expiry."""
        outcome = self.interpret("<sip:203.0.113.7:41234;transport=udp>;expires=120")
        self.assertEqual((outcome.kind, outcome.granted), (OutcomeKind.ONLINE, 120))
        self.assertIn("rewrote our Contact", outcome.reason)

    def test_rewritten_contact_without_param_takes_the_expires_header(self):
        outcome = self.interpret("<sip:x-7f3a@203.0.113.7:41234>", expires_header=45)
        self.assertEqual((outcome.kind, outcome.granted), (OutcomeKind.ONLINE, 45))

    def test_rewritten_contact_granted_zero_is_not_online(self):
        self.assertEqual(self.interpret("<sip:203.0.113.7:41234>;expires=0").kind, OutcomeKind.UNLISTED)

    def test_only_binding_of_another_line_is_not_ours(self):
        self.assertEqual(self.interpret("<sip:trunk@203.0.113.7;line=acc2>;expires=120").kind, OutcomeKind.UNLISTED)

    def test_only_binding_of_another_instance_is_not_ours(self):
        record = outbound_record()
        other = '<sip:203.0.113.7:41234;ob>;expires=120;+sip.instance="<urn:uuid:11111111-1111-4111-8111-111111111111>"'
        self.assertEqual(self.interpret(other, record=record).kind, OutcomeKind.UNLISTED)

    def test_several_rewritten_bindings_none_ours(self):
        outcome = self.interpret("<sip:203.0.113.7:41234>;expires=120", "<sip:203.0.113.8:41234>;expires=60")
        self.assertEqual(outcome.kind, OutcomeKind.UNLISTED)

    def test_instance_among_rewritten_bindings(self):
        record = outbound_record()
        outcome = self.interpret(
            '<sip:203.0.113.7:41234;ob>;expires=120;+sip.instance="<urn:uuid:11111111-1111-4111-8111-111111111111>"',
            f'<sip:203.0.113.8:41235;ob>;reg-id=1;expires=300;+sip.instance="<{INSTANCE.upper()}>"',
            record=record)
        self.assertEqual((outcome.kind, outcome.granted, outcome.reason), (OutcomeKind.ONLINE, 300, ""))

    def test_instance_ignored_for_a_plain_account(self):
        self.record.instance_id = INSTANCE  # not outbound: no +sip.instance was sent
        outcome = self.interpret("<sip:203.0.113.7:41234>;expires=120",
                                 f'<sip:203.0.113.8:41235>;expires=300;+sip.instance="<{INSTANCE}>"')
        self.assertEqual(outcome.kind, OutcomeKind.UNLISTED)

    def test_rules_in_order(self):
        record = outbound_record()
        instance = f'<sip:203.0.113.9>;expires=30;+sip.instance="<{INSTANCE}>"'
        line = "<sip:trunk@203.0.113.8;line=acc1>;expires=20"
        user = "<sip:acc1@203.0.113.7>;expires=10"
        request = build_register(record, DEFAULT_ADDR, 3600)
        cases = (([instance, line, user], "user", 10), ([instance, line], "line", 20),
                 ([instance, "<sip:x@203.0.113.1>"], "instance", 30), ([instance], "instance", 30))
        for contacts, rule, granted in cases:
            with self.subTest(rule=rule, contacts=contacts):
                response = reply(request, 200, *[("Contact", c) for c in contacts])
                binding, found = our_binding(record, response.contacts)
                self.assertEqual((found, binding.expires), (rule, granted))

    def test_no_bindings(self):
        self.assertEqual(our_binding(self.record, []), (None, ""))


class LearnedTests(SynchronousTestCase):
    """What a 200 OK teaches: Path (RFC 3327), Service-Route (RFC 3608), GRUUs (RFC 5627),
    Flow-Timer and outbound support (RFC 5626)."""

    def setUp(self):
        self.record = outbound_record()
        self.request = build_register(self.record, DEFAULT_ADDR, 3600)
        self.ours = (f'<sip:acc1@203.0.113.7:41234;ob>;expires=600;+sip.instance="<{INSTANCE}>";reg-id=1;'
                     f'pub-gruu="sip:alice@provider.example;gr={INSTANCE}";'
                     'temp-gruu="sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@provider.example;gr"')

    def learned(self, *headers, record=None):
        outcome = interpret(record or self.record, reply(self.request, 200, *headers), 3600)
        self.assertEqual(outcome.kind, OutcomeKind.ONLINE)
        return outcome.learned

    def test_path_and_service_route(self):
        learned = self.learned(("Contact", self.ours),
                               ("Path", "<sip:edge1.provider.example;lr;ob>"),
                               ("Path", "<sip:edge2.provider.example;lr>, <sip:core.provider.example;lr>"),
                               ("Service-Route", "<sip:orig@scscf.provider.example;lr>"))
        self.assertEqual(learned.path, ("<sip:edge1.provider.example;lr;ob>", "<sip:edge2.provider.example;lr>",
                                        "<sip:core.provider.example;lr>"))
        self.assertEqual(learned.service_route, ("<sip:orig@scscf.provider.example;lr>",))

    def test_none_listed(self):
        learned = self.learned(("Contact", "<sip:acc1@203.0.113.7>;expires=600"))
        self.assertEqual(learned, Learned())

    def test_gruus_of_our_binding(self):
        other = ('<sip:bob@198.51.100.1>;expires=100;pub-gruu="sip:bob@provider.example;gr=urn:uuid:other";'
                 'temp-gruu="sip:tgruu.other@provider.example;gr"')
        learned = self.learned(("Contact", other), ("Contact", self.ours))
        self.assertEqual(learned.pub_gruu, f"sip:alice@provider.example;gr={INSTANCE}")
        self.assertEqual(learned.temp_gruu, "sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@provider.example;gr")

    def test_flow_timer_with_require_outbound(self):
        learned = self.learned(("Contact", self.ours), ("Require", "outbound"), ("Flow-Timer", "60"))
        self.assertTrue(learned.outbound)
        self.assertEqual(learned.flow_timer, 60)

    def test_without_require_outbound_no_flow(self):
        """The registrar ignored outbound (RFC 5626 4.2.1): a plain binding, no Flow-Timer."""
        learned = self.learned(("Contact", self.ours), ("Flow-Timer", "60"))
        self.assertFalse(learned.outbound)
        self.assertIsNone(learned.flow_timer)

    def test_plain_account_has_no_flow(self):
        record = make_record("acc1")
        learned = self.learned(("Contact", "<sip:acc1@203.0.113.7>;expires=600"), ("Require", "outbound"),
                               ("Flow-Timer", "60"), record=record)
        self.assertEqual((learned.outbound, learned.flow_timer), (False, None))

    def test_unusable_flow_timer(self):
        for value in ("soon", "-5", "", "99999999999"):
            with self.subTest(value=value):
                learned = self.learned(("Contact", self.ours), ("Require", "outbound"), ("Flow-Timer", value))
                self.assertTrue(learned.outbound)
                self.assertIsNone(learned.flow_timer)

    def test_unparsable_path_is_dropped(self):
        learned = self.learned(("Contact", self.ours), ("Path", "<sip:edge1.provider.example;lr"),
                               ("Service-Route", "<sip:scscf.provider.example;lr>"))
        self.assertEqual((learned.path, learned.service_route), ((), ("<sip:scscf.provider.example;lr>",)))

    def test_unregister_forgets(self):
        outcome = interpret(self.record, reply(self.request, 200, ("Path", "<sip:edge1.provider.example;lr>")), 0)
        self.assertEqual((outcome.kind, outcome.learned), (OutcomeKind.UNREGISTERED, Learned()))

    def test_failures_teach_nothing(self):
        self.assertIsNone(interpret(self.record, reply(self.request, 503), 3600).learned)
