"""txuac.registrant.service: scheduling, replies, operations and pacing of uac_reg accounts.

Driven with a task.Clock reactor, a fake SIP stack (every REGISTER waits on a
Deferred the test fires with a response or a TransactionTimeout) and an
in-memory store. Reference: kamailio-uac-behaviour.md 4.4-4.13, with our
documented differences (refresh before expiry for short grants, 423 answered at
once, Retry-After honoured, timeouts fail, counters derived from state).
"""

from __future__ import annotations

import hashlib
import random

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from tests.support.accounts import HA1, make_row
from tests.support.registrant_harness import CONTACT_ADDR, REALM, TICK, ServiceTestCase
from txuac.errors import SIPParseError, UnknownFilterAttribute
from txuac.registrant.failures import FailureSummary
from txuac.registrant.record import Flag, State
from txuac.sip import SipURI, parse_uri


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------
class InitialRegistrationTests(ServiceTestCase):
    def test_store_opened_and_loaded(self):
        self.start([make_row("acc1"), make_row("acc2")])
        self.assertTrue(self.store.opened)
        self.assertEqual(sorted(self.service.records), ["acc1", "acc2"])

    def test_register_sent_at_start(self):
        self.start()
        self.assertEqual(len(self.stack.sent), 1)
        self.assertEqual(self.stack.sent[0].at, 0.0)
        self.assertEqual(self.service.status("acc1"), -2)
        self.assertEqual(self.record().state(self.now()), State.REGISTERING)
        self.assertTrue(self.record().has(Flag.ONGOING))

    def test_register_layout(self):
        self.start([make_row("acc1", r_username="alice", r_domain="voip.example.net", expires=900,
                             auth_proxy="sip:edge.example.net:5070;transport=tcp")])
        request = self.stack.sent[0].request
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(str(request.uri), "sip:voip.example.net")
        self.assertEqual(str(request.from_.uri), "sip:alice@voip.example.net")
        self.assertEqual(str(request.to.uri), "sip:alice@voip.example.net")
        self.assertTrue(request.from_.tag)
        self.assertIsNone(request.to.tag)
        self.assertEqual(request.headers.get_all("Contact"), [f"<sip:acc1@{CONTACT_ADDR}>"])
        self.assertEqual(request.headers.get_all("Expires"), ["900"])
        self.assertEqual(request.cseq.number, 10)
        self.assertEqual(request.cseq.method, "REGISTER")

    def test_auth_proxy_is_the_target_not_a_header(self):
        self.start([make_row("acc1", auth_proxy="sip:edge.example.net:5070;transport=tcp")])
        sent = self.stack.sent[0]
        self.assertIsInstance(sent.target, SipURI)
        self.assertEqual(sent.target, parse_uri("sip:edge.example.net:5070;transport=tcp"))
        self.assertNotIn(b"edge.example.net", bytes(sent.request))
        self.assertIsNone(sent.request.headers.get("Route"))

    def test_contact_user_layout(self):
        self.start([make_row("acc1", contact_user="0211234567")])
        self.assertEqual(self.stack.sent[0].request.headers.get("Contact"),
                         f"<sip:0211234567@{CONTACT_ADDR};line=acc1>")

    def test_record_contact_addr_overrides_setting(self):
        self.start([make_row("acc1", contact_addr="198.51.100.7:5080")])
        self.assertEqual(self.stack.sent[0].request.headers.get("Contact"), "<sip:acc1@198.51.100.7:5080>")

    def test_user_agent_setting(self):
        self.start(user_agent="txuac-test/1.0")
        self.assertEqual(self.stack.sent[0].request.headers.get("User-Agent"), "txuac-test/1.0")

    def test_disabled_and_zero_expires_rows_are_not_sent(self):
        self.start([make_row("acc1"), make_row("off", flags=1), make_row("zero", expires=0)])
        self.advance(300, step=1)
        self.assertEqual({s.contact_user for s in self.stack.sent}, {"acc1"})
        self.assertEqual(self.service.status("off"), -3)
        self.assertEqual(self.service.status("zero"), -99)

    def test_invalid_row_skipped_others_loaded(self):
        self.start([make_row("bad", r_domain=""), make_row("acc1")])
        self.assertEqual(list(self.service.records), ["acc1"])
        self.assertEqual(len(self.stack.sent), 1)

    def test_reg_delay(self):
        self.start([make_row("acc1", reg_delay=30), make_row("acc2")])
        self.assertEqual([s.contact_user for s in self.stack.sent], ["acc2"])
        self.advance_to(29.9)
        self.assertEqual(len(self.stack.sent), 1)
        self.advance_to(30.0 + TICK)
        self.assertEqual([s.contact_user for s in self.stack.sent], ["acc2", "acc1"])
        self.assertTrue(30.0 <= self.stack.sent[1].at <= 30.0 + TICK)

    def test_random_delay_with_seeded_rng(self):
        rows = [make_row(f"a{i:02d}") for i in range(20)]
        self.start(rows, seed=99, reg_random_delay=60)
        expected_rng = random.Random(99)
        expected = {row["l_uuid"]: expected_rng.randrange(60) for row in rows}
        self.advance(61)
        self.assertEqual(len(self.stack.sent), 20)
        for sent in self.stack.sent:
            delay = expected[sent.contact_user]
            self.assertTrue(delay <= sent.at <= delay + TICK + 1e-9, (sent.contact_user, delay, sent.at))
        self.assertGreater(len(set(expected.values())), 5)

    def test_explicit_reg_delay_not_randomized(self):
        self.start([make_row("acc1", reg_delay=5)], reg_random_delay=1000)
        self.assertEqual(self.record().reg_delay, 5)


class RefreshTimingTests(ServiceTestCase):
    def test_long_grant_refreshed_about_interval_plus_3_early(self):
        self.start([make_row("acc1", expires=3600)], reg_timer_interval=90)
        self.register_online(expires=3600)
        self.assertEqual(self.record().expires_at, 3600.0)
        self.advance_to(3400, step=10)
        self.assertEqual(len(self.stack.sent), 1)
        self.advance_to(3600, step=TICK)
        self.assertEqual(len(self.stack.sent), 2)
        refresh = self.stack.sent[1]
        early = 3600.0 - refresh.at
        self.assertGreaterEqual(early, 93.0 - TICK)  # about reg_timer_interval + 3 s early
        self.assertLessEqual(early, 93.0 * 1.1 + TICK)
        self.assertEqual(refresh.expires, 3600)

    def test_long_grant_refreshes_keep_status_1(self):
        self.start([make_row("acc1", expires=3600)], reg_timer_interval=90)
        self.register_online(expires=3600)
        refreshes = 0
        for _ in range(int(3 * 3600 / 1.0)):
            self.clock.advance(1.0)
            for sent in self.stack.pending():
                refreshes += 1
                self.assertLess(sent.at, self.record().expires_at)  # before expiry, every time
                self.stack.ok(sent, 3600)
            self.assertEqual(self.service.status("acc1"), 1, self.now())
        self.assertEqual(refreshes, 3)

    def test_short_grant_refreshed_before_expiry(self):
        """20 s grant with reg_timer_interval 90: refreshed before expiry, status stays 1."""
        self.start([make_row("acc1", expires=20)], reg_timer_interval=90)
        self.register_online(expires=20)
        refreshes = 0
        while self.now() < 300:
            self.clock.advance(TICK)
            for sent in self.stack.pending():
                self.assertLess(sent.at, self.record().expires_at)
                self.assertEqual(self.service.status("acc1"), 1)  # across the refresh boundary too
                refreshes += 1
                self.stack.ok(sent, 20)
            self.assertEqual(self.service.status("acc1"), 1, self.now())
        # refreshed half-way (9-10 s after each send): about 30 refreshes in 300 s
        self.assertTrue(28 <= refreshes <= 34, refreshes)

    def test_grant_shorter_than_requested(self):
        self.start([make_row("acc1", expires=3600)])
        self.register_online(expires=120)
        self.assertEqual(self.record().expires_at, 120.0)
        self.advance_to(120, step=0.5)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertLess(self.stack.sent[1].at, 120.0)
        self.assertEqual(self.stack.sent[1].expires, 3600)  # we keep asking for what we want

    def test_contact_expires_param_wins_over_header(self):
        self.start([make_row("acc1", expires=3600)])
        sent = self.stack.sent[0]
        self.stack.answer(sent, 200, ("Contact", f"<sip:acc1@{CONTACT_ADDR}>;expires=300"), ("Expires", "1800"))
        self.assertEqual(self.record().expires_at, 300.0)

    def test_expires_header_without_param(self):
        self.start([make_row("acc1", expires=3600)])
        self.stack.answer(self.stack.sent[0], 200, ("Contact", f"<sip:acc1@{CONTACT_ADDR}>"), ("Expires", "1800"))
        self.assertEqual(self.record().expires_at, 1800.0)
        self.assertEqual(self.service.status("acc1"), 1)

    def test_expiry_counts_from_send_time(self):
        self.start([make_row("acc1", reg_delay=1)])
        self.advance(1.0)
        sent_at = self.stack.sent[0].at
        self.advance(2.0)
        self.stack.ok(self.stack.sent[0], 600)
        self.assertAlmostEqual(self.record().expires_at, sent_at + 600.0)

    def test_binding_expires_when_registrar_stops_answering(self):
        self.start([make_row("acc1")], reg_retry_interval=30)
        self.register_online(expires=600)
        self.advance_to(600, step=1)
        self.assertEqual(len(self.stack.pending()), 1)  # refresh unanswered
        self.assertNotEqual(self.service.status("acc1"), 1)
        self.assertEqual(self.service.counters()["regactive"], 0)


class ReplyTests(ServiceTestCase):
    def test_200_not_listing_our_contact(self):
        self.start([make_row("acc1")], reg_timer_interval=90)
        # Two bindings, neither ours (a single one would be taken as our rewritten Contact).
        self.stack.answer(self.stack.sent[0], 200, ("Contact", f"<sip:someone@{CONTACT_ADDR}>;expires=600"),
                          ("Contact", "<sip:someone-else@192.0.2.99>;expires=600"))
        self.assertEqual(self.service.status("acc1"), -99)
        self.assertFalse(self.record().has(Flag.ONLINE))
        self.assertFalse(self.record().has(Flag.ONGOING))
        self.assertFalse(self.record().has(Flag.DISABLED))
        self.advance_to(89, step=1)
        self.assertEqual(len(self.stack.sent), 1)
        self.advance_to(91, step=TICK)
        self.assertEqual(len(self.stack.sent), 2)  # retried later

    def test_contact_user_matched_by_line_param(self):
        self.start([make_row("acc1", contact_user="0211234567")])
        self.stack.answer(self.stack.sent[0], 200,
                          ("Contact", "<sip:0211234567@203.0.113.1:5060;line=acc1>;expires=600"))
        self.assertEqual(self.service.status("acc1"), 1)

    def test_200_without_contact_is_a_failure(self):
        self.start([make_row("acc1")], reg_retry_interval=60)
        self.stack.answer(self.stack.sent[0], 200)
        self.assertEqual(self.record().state(self.now()), State.FAILED)

    def test_binding_granted_zero_is_not_abandoned(self):
        """A 200 that lists our contact with expires=0 (or no expiry at all): Kamailio treats the
        account as due again at once (4.8); it must not sit dormant for ever."""
        self.start([make_row("acc1", expires=600)], reg_timer_interval=90, reg_retry_interval=60)
        self.stack.answer(self.stack.sent[0], 200, ("Contact", f"<sip:acc1@{CONTACT_ADDR}>;expires=0"))
        self.assertNotEqual(self.service.status("acc1"), 1)
        self.advance(2 * 90 + 10, step=1)
        self.assertGreaterEqual(len(self.stack.sent), 2, "no REGISTER after a 200 granting 0 s")

    def test_200_without_any_expiry_is_not_abandoned(self):
        self.start([make_row("acc1", expires=600)], reg_timer_interval=90, reg_retry_interval=60)
        self.stack.answer(self.stack.sent[0], 200, ("Contact", f"<sip:acc1@{CONTACT_ADDR}>"))
        self.advance(2 * 90 + 10, step=1)
        self.assertGreaterEqual(len(self.stack.sent), 2, "no REGISTER after a 200 without expiry")

    def test_403_disables_without_retry_interval(self):
        self.start([make_row("acc1")], reg_retry_interval=0)
        self.stack.answer(self.stack.sent[0], 403)
        record = self.record()
        self.assertEqual(self.service.status("acc1"), -3)
        self.assertEqual(record.state(self.now()), State.DISABLED)
        self.assertEqual(record.last_failure, "403 Forbidden")
        self.assertEqual(record.last_status, 403)
        self.advance(1000, step=5)
        self.assertEqual(len(self.stack.sent), 1)

    def test_403_retried_after_interval(self):
        self.start([make_row("acc1")], reg_forbidden_retry_interval=60, reg_retry_jitter=0)
        self.advance(1.0)
        self.stack.answer(self.stack.sent[0], 403)
        self.assertEqual(self.record().state(self.now()), State.FAILED)
        self.assertEqual(self.service.status("acc1"), -99)
        self.assertEqual(self.record().failures, 1)
        self.advance_to(60.9)
        self.assertEqual(len(self.stack.sent), 1)
        self.advance_to(61.0 + TICK)
        self.assertEqual(len(self.stack.sent), 2)
        self.stack.ok(self.stack.sent[1], 600)
        self.assertEqual(self.record().failures, 0)
        self.assertIsNone(self.record().last_failure)

    def test_503_retry_after_longer_than_retry_interval(self):
        self.start([make_row("acc1")], reg_retry_interval=60)
        self.stack.answer(self.stack.sent[0], 503, ("Retry-After", "300"))
        self.advance_to(299.5, step=0.5)
        self.assertEqual(len(self.stack.sent), 1)
        self.advance_to(300.0 + TICK)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertTrue(300.0 <= self.stack.sent[1].at <= 300.0 + TICK)

    def test_503_retry_after_shorter_than_retry_interval(self):
        self.start([make_row("acc1")], reg_retry_interval=60, reg_retry_jitter=0)
        self.stack.answer(self.stack.sent[0], 503, ("Retry-After", "10"))
        self.advance_to(59.5, step=0.5)
        self.assertEqual(len(self.stack.sent), 1)
        self.advance_to(60.0 + TICK)
        self.assertEqual(len(self.stack.sent), 2)

    def test_timeout_fails_and_clears_ongoing(self):
        self.start([make_row("acc1")], reg_retry_interval=60, reg_retry_jitter=0)
        self.advance(32.0)
        self.stack.timeout(self.stack.sent[0])
        record = self.record()
        self.assertFalse(record.has(Flag.ONGOING))
        self.assertEqual(record.state(self.now()), State.FAILED)
        self.assertIn("timeout", record.last_failure)
        self.assertEqual(self.service.status("acc1"), -99)
        self.advance_to(92.0 + TICK)
        self.assertEqual(len(self.stack.sent), 2)

    def test_timeout_disables_without_retry_interval(self):
        self.start([make_row("acc1")], reg_retry_interval=0)
        self.stack.timeout(self.stack.sent[0])
        self.assertEqual(self.service.status("acc1"), -3)
        self.assertFalse(self.record().has(Flag.ONGOING))

    def test_failed_refresh_keeps_scheduling(self):
        self.start([make_row("acc1")], reg_retry_interval=30, reg_retry_jitter=0)
        self.register_online(expires=600)
        self.advance_to(600, step=1)
        self.stack.timeout(self.stack.pending()[0])
        self.advance(31, step=1)
        self.assertEqual(len(self.stack.pending()), 1)


class TooBriefTests(ServiceTestCase):
    def test_423_then_200(self):
        self.start([make_row("acc1", expires=60)])
        self.advance(1.0)
        self.stack.answer(self.stack.sent[0], 423, ("Min-Expires", "300"))
        self.assertEqual(len(self.stack.sent), 2)  # asked again at once
        second = self.stack.sent[1]
        self.assertEqual(second.at, self.now())  # at once, not at the next tick
        self.assertEqual(second.expires, 300)
        self.assertEqual(second.target, self.stack.sent[0].target)
        self.stack.ok(second, 300)
        self.assertEqual(self.record().expires, 300)
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertAlmostEqual(self.record().expires_at, second.at + 300.0)
        self.assertEqual(self.service.counters()["regactive"], 1)
        self.advance_to(300, step=1)
        self.assertEqual(self.stack.sent[2].expires, 300)  # the refresh keeps the new expiry

    def test_423_without_min_expires_doubles(self):
        self.start([make_row("acc1", expires=60)])
        self.stack.answer(self.stack.sent[0], 423)
        self.assertEqual(self.stack.sent[1].expires, 120)

    def test_423_three_times_is_a_failure(self):
        """At most three 423s in a row: the third is a failure, no fourth REGISTER goes out."""
        self.start([make_row("acc1", expires=60)], reg_retry_interval=60)
        for minimum in (120, 240, 480):
            self.stack.answer(self.stack.pending()[0], 423, ("Min-Expires", str(minimum)))
        self.assertEqual(len(self.stack.sent), 3)
        self.assertEqual(self.stack.pending(), [])
        self.assertEqual(self.record().state(self.now()), State.FAILED)
        self.assertIn("423", self.record().last_failure)

    def test_423_chain_is_bounded(self):
        self.start([make_row("acc1", expires=60)], reg_fatal_retry_interval=60, reg_retry_jitter=0)
        for i in range(10):
            pending = self.stack.pending()
            if not pending:
                break
            self.stack.answer(pending[0], 423, ("Min-Expires", str(120 * 2 ** i)))
        self.assertLessEqual(len(self.stack.sent), 4)
        self.assertEqual(self.record().state(self.now()), State.FAILED)
        self.assertFalse(self.record().has(Flag.ONGOING))
        self.advance(61)
        self.assertEqual(len(self.stack.pending()), 1)  # retried after the interval


class AuthenticationTests(ServiceTestCase):
    def authorization(self, request, header="Authorization"):
        values = request.authorization if header == "Authorization" else request.proxy_authorization
        self.assertEqual(len(values), 1)
        return values[0]

    def test_401_then_200(self):
        self.start([make_row("acc1", auth_username="user-a", auth_password="pw-a", r_domain=REALM)])
        first = self.stack.sent[0]
        self.stack.challenge(first)
        self.assertEqual(len(self.stack.sent), 2)
        retry = self.stack.sent[1]
        record = self.record()
        self.assertTrue(record.has(Flag.AUTHSENT))  # during the authenticated retry
        self.assertTrue(record.has(Flag.ONGOING))
        self.assertEqual(self.service.status("acc1"), -2)
        self.assertEqual(retry.request.call_id, first.request.call_id)
        self.assertEqual(retry.request.cseq.number, 11)
        self.assertEqual(retry.request.from_.tag, first.request.from_.tag)
        self.assertEqual(retry.target, first.target)
        self.assertEqual(retry.request.headers.get("Contact"), first.request.headers.get("Contact"))
        self.assertEqual(retry.request.expires, first.request.expires)
        auth = self.authorization(retry.request)
        self.assertEqual(auth.get("username"), "user-a")
        self.assertEqual(auth.get("realm"), REALM)
        self.assertEqual(auth.get("uri"), f"sip:{REALM}")
        ha1 = md5(f"user-a:{REALM}:pw-a")
        ha2 = md5(f"REGISTER:sip:{REALM}")
        expected = md5(f"{ha1}:nonce-1:{auth.get('nc')}:{auth.get('cnonce')}:auth:{ha2}")
        self.assertEqual(auth.get("response"), expected)
        self.stack.ok(retry, 600)
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertFalse(record.has(Flag.AUTHSENT))
        self.assertFalse(record.has(Flag.ONGOING))

    def test_register_and_authenticated_retry_retransmit_every_500ms_by_default(self):
        self.start([make_row("acc1", auth_username="user-a", auth_password="pw-a", r_domain=REALM)])
        first = self.stack.sent[0]
        self.stack.challenge(first)
        retry = self.stack.sent[1]
        self.assertEqual((first.t2, retry.t2), (0.5, 0.5))

    def test_reg_timer_t2_is_the_registers_retransmission_cap(self):
        self.start([make_row("acc1", auth_username="user-a", auth_password="pw-a", r_domain=REALM)],
                   reg_timer_t2=4.0)
        first = self.stack.sent[0]
        self.stack.challenge(first)
        self.assertEqual([s.t2 for s in self.stack.sent], [4.0, 4.0])

    def test_407_answered_with_proxy_authorization(self):
        self.start([make_row("acc1")])
        self.stack.challenge(self.stack.sent[0], status=407)
        retry = self.stack.sent[1]
        self.assertEqual(self.authorization(retry.request, "Proxy-Authorization").get("realm"), REALM)
        self.assertEqual(retry.request.headers.get_all("Authorization"), [])

    def test_ha1_used_for_the_answer(self):
        ha1 = md5(f"auth-acc1:{REALM}:the-real-password")
        self.start([make_row("acc1", auth_password="", auth_ha1=ha1.upper())])
        self.stack.challenge(self.stack.sent[0])
        auth = self.authorization(self.stack.sent[1].request)
        ha2 = md5(f"REGISTER:{auth.get('uri')}")
        self.assertEqual(auth.get("response"),
                         md5(f"{ha1}:nonce-1:{auth.get('nc')}:{auth.get('cnonce')}:auth:{ha2}"))

    def test_password_and_ha1_both_set_ha1_wins(self):
        """Kamailio loads rows with both (auth_ha1 has priority, 4.5); the REGISTER must still go
        out, for this account and for the others."""
        ha1 = md5(f"auth-acc1:{REALM}:the-real-password")
        self.flush_scheduler_errors()
        self.start([make_row("acc1", auth_password="stale-password", auth_ha1=ha1), make_row("acc2")])
        self.assertEqual(sorted(s.contact_user for s in self.stack.sent), ["acc1", "acc2"])
        first = [s for s in self.stack.sent if s.contact_user == "acc1"][0]
        self.stack.challenge(first)
        retry = self.stack.sent[-1]
        auth = self.authorization(retry.request)
        ha2 = md5(f"REGISTER:{auth.get('uri')}")
        self.assertEqual(auth.get("response"),
                         md5(f"{ha1}:nonce-1:{auth.get('nc')}:{auth.get('cnonce')}:auth:{ha2}"))

    def test_401_then_401_disables_without_retry_interval(self):
        self.start([make_row("acc1")], reg_retry_interval=0)
        self.stack.challenge(self.stack.sent[0])
        self.stack.challenge(self.stack.sent[1], nonce="nonce-2")
        self.assertEqual(len(self.stack.sent), 2)  # exactly one authenticated attempt
        record = self.record()
        self.assertTrue(record.last_failure.startswith("authentication failed"), record.last_failure)
        self.assertEqual(record.state(self.now()), State.DISABLED)
        self.assertEqual(self.service.status("acc1"), -3)
        self.assertFalse(record.has(Flag.AUTHSENT))
        self.assertFalse(record.has(Flag.ONGOING))
        self.assertEqual(self.service.counters()["regdisabled"], 1)
        self.advance(500, step=5)
        self.assertEqual(len(self.stack.sent), 2)

    def test_401_then_401_retried_after_interval(self):
        self.start([make_row("acc1")], reg_forbidden_retry_interval=60, reg_retry_jitter=0)
        first = self.stack.sent[0]
        self.stack.challenge(first)
        self.stack.challenge(self.stack.sent[1], nonce="nonce-2")
        record = self.record()
        self.assertTrue(record.last_failure.startswith("authentication failed"))
        self.assertEqual(record.state(self.now()), State.FAILED)
        self.assertEqual(record.last_status, 401)
        self.advance_to(59.9)
        self.assertEqual(len(self.stack.sent), 2)
        self.advance_to(60.0 + TICK)
        self.assertEqual(len(self.stack.sent), 3)
        again = self.stack.sent[2].request
        self.assertEqual(again.headers.get_all("Authorization"), [])  # a new cycle starts unauthenticated
        self.assertEqual(again.call_id, first.request.call_id)  # the account keeps its Call-ID
        self.assertGreater(again.cseq.number, 11)  # above the authenticated retry's
        self.stack.challenge(self.stack.sent[2], nonce="nonce-3")
        self.assertEqual(len(self.stack.sent), 4)  # one answer per cycle again
        self.stack.ok(self.stack.sent[3], 600)
        self.assertEqual(self.service.status("acc1"), 1)

    def test_realm_mismatch_sends_no_credentials(self):
        self.start([make_row("acc1", realm="expected.example")], reg_retry_interval=60)
        self.stack.challenge(self.stack.sent[0], realm="other.example")
        self.assertEqual(len(self.stack.sent), 1)
        record = self.record()
        self.assertEqual(record.state(self.now()), State.FAILED)
        self.assertIn("authentication failed", record.last_failure)
        self.assertFalse(record.has(Flag.AUTHSENT))
        self.assertFalse(record.has(Flag.ONGOING))

    def test_realm_match_is_answered(self):
        self.start([make_row("acc1", realm="expected.example")])
        self.stack.challenge(self.stack.sent[0], realm="expected.example")
        self.assertEqual(len(self.stack.sent), 2)
        self.assertEqual(self.authorization(self.stack.sent[1].request).get("realm"), "expected.example")

    def test_empty_realm_answers_any(self):
        self.start([make_row("acc1", realm="")])
        self.stack.challenge(self.stack.sent[0], realm="whatever.example")
        self.assertEqual(len(self.stack.sent), 2)

    def test_each_refresh_may_authenticate_once(self):
        self.start([make_row("acc1")], reg_retry_interval=60)
        self.stack.challenge(self.stack.sent[0])
        self.stack.ok(self.stack.sent[1], 600)
        self.advance_to(600, step=1)
        refresh = self.stack.pending()[0]
        self.stack.challenge(refresh, nonce="nonce-2")
        self.assertEqual(len(self.stack.pending()), 1)
        self.stack.ok(self.stack.pending()[0], 600)
        self.assertEqual(self.service.status("acc1"), 1)


class KeepCallIdTests(ServiceTestCase):
    def test_refresh_reuses_call_id_with_next_cseq(self):
        self.start([make_row("acc1")], reg_keep_callid=True)
        first = self.stack.sent[0].request
        self.stack.ok(self.stack.sent[0], 100)
        self.advance_to(100, step=0.5)
        second = self.stack.sent[1].request
        self.assertEqual(second.call_id, first.call_id)
        self.assertEqual(second.cseq.number, 11)
        self.stack.ok(self.stack.sent[1], 100)
        self.advance_to(200, step=0.5)
        third = self.stack.sent[2].request
        self.assertEqual(third.call_id, first.call_id)
        self.assertEqual(third.cseq.number, 12)

    def test_cseq_follows_the_authenticated_retry(self):
        self.start([make_row("acc1")], reg_keep_callid=True)
        self.stack.challenge(self.stack.sent[0])
        self.stack.ok(self.stack.sent[1], 100)  # CSeq 11
        self.advance_to(100, step=0.5)
        refresh = self.stack.sent[2].request
        self.assertEqual(refresh.call_id, self.stack.sent[0].request.call_id)
        self.assertEqual(refresh.cseq.number, 12)

    def test_423_resend_advances_cseq(self):
        """Every new request on a kept Call-ID needs a higher CSeq (RFC 3261 8.1.1.5, 10.3 step 7)."""
        self.start([make_row("acc1", expires=100)], reg_keep_callid=True)
        self.stack.ok(self.stack.sent[0], 100)
        self.advance_to(100, step=0.5)
        refresh = self.stack.sent[1].request
        self.stack.answer(self.stack.sent[1], 423, ("Min-Expires", "300"))
        resend = self.stack.sent[2].request
        if resend.call_id == refresh.call_id:
            self.assertGreater(resend.cseq.number, refresh.cseq.number)

    def test_refresh_after_unlisted_200_advances_cseq(self):
        """The registrar accepted CSeq n (200, our contact not listed): the next REGISTER on the same
        Call-ID must not repeat n, or the registrar must refuse it (RFC 3261 10.3 step 7)."""
        self.start([make_row("acc1", expires=100)], reg_keep_callid=True, reg_timer_interval=30)
        self.stack.ok(self.stack.sent[0], 100)
        self.advance_to(100, step=0.5)
        refresh = self.stack.sent[1].request
        self.stack.answer(self.stack.sent[1], 200, ("Contact", "<sip:someone-else@192.0.2.99>;expires=100"),
                          ("Contact", "<sip:someone@192.0.2.98>;expires=100"))
        self.advance(31, step=0.5)
        after = self.stack.sent[2].request
        if after.call_id == refresh.call_id:
            self.assertGreater(after.cseq.number, refresh.cseq.number)

    def test_without_keep_callid_every_refresh_is_new(self):
        self.start([make_row("acc1")], reg_keep_callid=False)
        self.stack.ok(self.stack.sent[0], 100)
        self.advance_to(100, step=0.5)
        self.assertNotEqual(self.stack.sent[1].request.call_id, self.stack.sent[0].request.call_id)
        self.assertEqual(self.stack.sent[1].request.cseq.number, 10)


class EnableDisableTests(ServiceTestCase):
    def test_return_codes(self):
        self.start([make_row("acc1")])
        self.assertEqual(self.service.disable("l_uuid", "acc1"), 1)
        self.assertEqual(self.service.disable("l_uuid", "nobody"), -2)
        self.assertEqual(self.service.disable("realm", "x"), -3)
        self.assertEqual(self.service.enable("l_uuid", "acc1"), 1)
        self.assertEqual(self.service.enable("l_uuid", "nobody"), -2)
        self.assertEqual(self.service.enable("expires", "3600"), -3)

    def test_by_other_attributes(self):
        self.start([make_row("acc1", l_username="100", r_username="alice", auth_username="a-user")])
        for attribute, value in (("l_username", "100"), ("r_username", "alice"), ("auth_username", "a-user")):
            self.assertEqual(self.service.disable(attribute, value), 1)
            self.assertEqual(self.record().state(self.now()), State.DISABLED)
            self.assertEqual(self.service.enable(attribute, value), 1)
            self.assertNotEqual(self.record().state(self.now()), State.DISABLED)

    def test_disable_sends_nothing_and_stops_refreshes(self):
        self.start([make_row("acc1")])
        self.register_online(expires=600)
        self.assertEqual(self.service.disable("l_uuid", "acc1"), 1)
        self.assertTrue(self.record().has(Flag.DISABLED))
        self.assertEqual(self.record().state(self.now()), State.DISABLED)
        self.advance(3 * 600, step=1)
        self.assertEqual(len(self.stack.sent), 1)  # no un-REGISTER, no refresh
        self.assertEqual(self.service.counters()["regdisabled"], 1)
        self.assertEqual(self.service.status("acc1"), -3)

    def test_enable_schedules_a_send(self):
        self.start([make_row("acc1", flags=1)])
        self.assertEqual(self.stack.sent, [])
        self.advance(5.0)
        self.assertEqual(self.service.enable("l_uuid", "acc1"), 1)
        self.advance(1.0)
        self.assertEqual(len(self.stack.sent), 1)
        self.assertTrue(5.0 <= self.stack.sent[0].at <= 5.0 + 1.0)
        self.stack.ok(self.stack.sent[0], 600)
        self.assertEqual(self.service.status("acc1"), 1)

    def test_enable_after_failure_disable(self):
        self.start([make_row("acc1")], reg_retry_interval=0)
        self.stack.answer(self.stack.sent[0], 403)
        self.assertEqual(self.service.status("acc1"), -3)
        self.service.enable("l_uuid", "acc1")
        self.advance(1.0)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertIsNone(self.record().last_failure)

    def test_disable_while_in_flight(self):
        self.start([make_row("acc1")])
        self.service.disable("l_uuid", "acc1")
        self.stack.ok(self.stack.sent[0], 100)
        self.advance(500, step=1)
        self.assertEqual(len(self.stack.sent), 1)
        self.assertEqual(self.record().state(self.now()), State.DISABLED)


class ActiveTests(ServiceTestCase):
    def test_inactive_at_start_sends_nothing(self):
        self.start([make_row("acc1")], reg_active=False)
        self.advance(100, step=1)
        self.assertEqual(self.stack.sent, [])
        self.assertFalse(self.service.set_active(True))
        self.advance(1.0)
        self.assertEqual(len(self.stack.sent), 1)

    def test_set_active_false_stops_refreshes(self):
        self.start([make_row("acc1")])
        self.register_online(expires=600)
        self.assertTrue(self.service.set_active(False))
        self.advance(1200, step=1)
        self.assertEqual(len(self.stack.sent), 1)
        self.assertEqual(self.service.status("acc1"), -99)  # the binding lapsed
        self.assertFalse(self.service.set_active(True))
        self.advance(1.0)
        self.assertEqual(len(self.stack.sent), 2)

    def test_in_flight_completes_while_inactive(self):
        self.start([make_row("acc1")])
        self.service.set_active(False)
        self.stack.ok(self.stack.sent[0], 600)
        self.assertEqual(self.service.status("acc1"), 1)

    def test_set_active_true_resumes_a_refresh_skipped_while_inactive(self):
        """Switched off across the refresh moment, on again before expiry: the binding must
        still be refreshed before it lapses."""
        self.start([make_row("acc1")], reg_timer_interval=90)
        self.register_online(expires=600)
        self.service.set_active(False)
        self.advance_to(560, step=1)  # the refresh (about 500 s) was due while inactive
        self.assertEqual(len(self.stack.sent), 1)
        self.assertEqual(self.service.status("acc1"), 1)
        self.service.set_active(True)
        self.advance_to(599, step=1)
        self.assertEqual(len(self.stack.sent), 2, "binding left to lapse after reg_active 1")

    def test_set_active_true_keeps_pending_refresh(self):
        self.start([make_row("acc1")], reg_timer_interval=90)
        self.register_online(expires=600)
        self.service.set_active(False)
        self.advance_to(100, step=1)
        self.service.set_active(True)
        self.advance_to(599, step=1)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertGreater(self.stack.sent[1].at, 450.0)


class ReloadTests(ServiceTestCase):
    def test_reload_rate_limited_by_reload_delta(self):
        self.start(reload_delta=30)
        self.advance(31, step=1)
        self.assertEqual(self.successResultOf(self.service.reload()), 1)
        self.advance(10, step=1)
        self.assertEqual(self.successResultOf(self.service.reload()), -1)
        loads = self.store.loads
        self.advance(21, step=1)
        self.assertEqual(self.successResultOf(self.service.reload()), 1)
        self.assertEqual(self.store.loads, loads + 1)

    def test_first_reload_after_start_allowed(self):
        """Kamailio's reload stamp starts at 0: the first uac.reg_reload is always allowed (4.11),
        the load at startup is not a reload."""
        self.start(reload_delta=30)
        self.advance(1.0)
        self.assertEqual(self.successResultOf(self.service.reload()), 1)

    def test_late_reply_updates_reloaded_record(self):
        self.start([make_row("acc1")], reload_delta=0)
        old = self.stack.sent[0]
        self.advance(1)
        self.successResultOf(self.service.reload())
        self.stack.ok(old, 600)
        self.assertTrue(self.record().has(Flag.ONLINE))


class RefreshRowTests(ServiceTestCase):
    def test_unknown_row(self):
        self.start()
        self.assertEqual(self.successResultOf(self.service.refresh("nobody")), -1)

    def test_row_gone_from_store_leaves_record(self):
        self.start()
        del self.store.rows["acc1"]
        self.assertEqual(self.successResultOf(self.service.refresh("acc1")), -1)
        self.assertIn("acc1", self.service.records)

    def test_invalid_row_leaves_record(self):
        self.start()
        self.store.rows["acc1"]["auth_proxy"] = ""
        self.assertEqual(self.successResultOf(self.service.refresh("acc1")), -1)
        self.assertEqual(self.record().auth_proxy, "sip:proxy.provider.example:5070")

    def test_refresh_reregisters_a_changed_account(self):
        self.start([make_row("acc1", expires=600)])
        self.register_online(expires=600)
        self.store.rows["acc1"]["expires"] = 1200
        self.advance(10)
        self.assertEqual(self.successResultOf(self.service.refresh("acc1")), 1)
        self.assertEqual(self.record().expires, 1200)
        self.assertTrue(self.record().has(Flag.ONLINE))  # the same binding: online until the registrar answers
        self.advance(TICK)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertEqual(self.stack.sent[1].expires, 1200)

    def test_refresh_loads_a_new_row(self):
        self.start([make_row("acc1")])
        self.store.rows["acc9"] = make_row("acc9")
        self.assertEqual(self.successResultOf(self.service.refresh("acc9")), 1)
        self.advance(TICK)
        self.assertIn("acc9", [s.contact_user for s in self.stack.sent])

    def test_refresh_carries_ongoing(self):
        self.start([make_row("acc1")])
        self.assertEqual(self.successResultOf(self.service.refresh("acc1")), 1)
        self.assertTrue(self.record().has(Flag.ONGOING))
        self.advance(1.0)
        self.assertEqual(len(self.stack.sent), 1)  # no second REGISTER while one is in flight
        self.stack.ok(self.stack.sent[0], 600)
        self.assertFalse(self.record().has(Flag.ONGOING))
        self.assertEqual(self.service.status("acc1"), 1)

    def test_refresh_carries_authsent(self):
        self.start([make_row("acc1")])
        self.stack.challenge(self.stack.sent[0])
        self.successResultOf(self.service.refresh("acc1"))
        self.assertTrue(self.record().has(Flag.AUTHSENT))
        self.assertTrue(self.record().has(Flag.ONGOING))

    def test_refresh_does_not_carry_disabled_state(self):
        self.start([make_row("acc1")], reg_retry_interval=0)
        self.stack.answer(self.stack.sent[0], 403)
        self.assertEqual(self.service.status("acc1"), -3)
        self.successResultOf(self.service.refresh("acc1"))
        self.assertEqual(self.service.status("acc1"), -99)
        self.advance(TICK)
        self.assertEqual(len(self.stack.sent), 2)


class AddRemoveTests(ServiceTestCase):
    def test_add(self):
        self.start([make_row("acc1")])
        self.assertEqual(self.service.add(make_row("acc2")), 1)
        self.assertEqual(self.service.counters()["regtotal"], 2)
        self.advance(TICK)
        self.assertEqual([s.contact_user for s in self.stack.sent], ["acc1", "acc2"])

    def test_add_duplicate(self):
        self.start([make_row("acc1")])
        self.assertEqual(self.service.add(make_row("acc1", r_username="other")), 409)
        self.assertEqual(self.record().r_username, "remote-acc1")

    def test_add_duplicate_with_surrounding_blanks(self):
        """The row is stripped when loaded; the duplicate check must use the same l_uuid."""
        self.start([make_row("acc1")])
        self.stack.ok(self.stack.sent[0], 600)
        self.assertEqual(self.service.add(make_row(" acc1 ", l_username="local-acc1", r_username="other", auth_username="auth-acc1")), 409)
        self.assertEqual(self.record().r_username, "remote-acc1")
        self.assertEqual(self.service.status("acc1"), 1)

    def test_add_invalid(self):
        self.start([make_row("acc1")])
        self.assertEqual(self.service.add(make_row("acc2", auth_password="", auth_ha1="")), -1)
        self.assertNotIn("acc2", self.service.records)

    def test_remove(self):
        self.start([make_row("acc1"), make_row("acc2")])
        for sent in self.stack.pending():
            self.stack.ok(sent, 600)
        self.assertEqual(self.service.remove("acc1"), 1)
        self.assertEqual(self.service.remove("acc1"), -1)
        self.assertEqual(self.service.status("acc1"), -1)
        self.assertEqual(self.service.counters()["regtotal"], 1)
        self.advance(1200, step=1)
        self.assertEqual([s.contact_user for s in self.stack.sent[2:]].count("acc1"), 0)  # no un-REGISTER either
        self.assertGreater([s.contact_user for s in self.stack.sent[2:]].count("acc2"), 0)

    def test_reply_for_removed_account_is_ignored(self):
        """Kamailio re-looks the record up by l_uuid and ignores the reply when it is gone (4.8)."""
        self.start([make_row("acc1")])
        self.service.remove("acc1")
        before = len(self.events)
        self.stack.ok(self.stack.sent[0], 600)
        self.assertEqual(self.events[before:], [])
        self.assertNotIn("acc1", self.service.records)


class SendTests(ServiceTestCase):
    def test_send_unregister(self):
        self.start([make_row("acc1")], reg_retry_interval=0)
        first = self.register_online(expires=600)
        d = self.service.send_unregister("acc1")
        self.assertIsNotNone(d)
        unregister = self.stack.sent[1]
        self.assertEqual(unregister.expires, 0)
        self.assertEqual(unregister.request.headers.get("Contact"), first.request.headers.get("Contact"))
        self.assertEqual(unregister.target, first.target)
        self.stack.answer(unregister, 200)  # typical: no Contact left
        self.successResultOf(d)
        record = self.record()
        # As Kamailio: disabled (its 200 without Contact takes the failure path, which
        # its reg_retry_interval 0 makes a disabling one), dormant with expires 0.
        self.assertEqual(record.state(self.now()), State.DISABLED)
        self.assertTrue(record.has(Flag.DISABLED))
        self.assertFalse(record.has(Flag.ONLINE))
        self.assertEqual(self.service.status("acc1"), -3)
        self.assertEqual(self.service.counters()["regactive"], 0)
        self.advance(3 * 600, step=1)
        self.assertEqual(len(self.stack.sent), 2)  # dormant: no refresh

    def test_an_online_account_shows_flags_20(self):
        """Kamailio's INIT (16) with ONLINE (4): monitoring tests ``flags & 16``."""
        self.start([make_row("acc1"), make_row("acc2", reg_delay=30)])
        self.register_online()
        self.assertEqual(self.record().flags, Flag.INIT | Flag.ONLINE)
        self.assertEqual(self.record().flags, 20)
        self.assertFalse(self.service.records["acc2"].has(Flag.INIT))  # its reg_delay has not passed
        self.advance(31, step=1)
        self.assertTrue(self.service.records["acc2"].has(Flag.INIT))

    def test_unregistered_stays_dormant_once_enabled_until_refreshed(self):
        self.start([make_row("acc1")])
        self.register_online(expires=600)
        self.service.send_unregister("acc1")
        self.stack.answer(self.stack.sent[1], 200)
        self.assertEqual(self.service.status("acc1"), -3)
        self.assertEqual(self.service.enable("l_uuid", "acc1"), 1)
        self.advance(5, step=TICK)
        self.assertEqual(len(self.stack.sent), 2)  # enabled, but expires 0: nothing sent
        self.assertEqual((self.service.status("acc1"), self.record().state(self.now())), (-99, State.UNREGISTERED))
        self.assertEqual(self.successResultOf(self.service.refresh("acc1")), 1)
        self.advance(TICK, step=TICK)
        self.assertEqual(self.stack.sent[-1].expires, 3600)

    def test_send_unregister_by_attribute(self):
        self.start([make_row("acc1", l_username="100")])
        self.register_online()
        self.assertIsNotNone(self.service.send_unregister("100", "l_username"))
        self.assertEqual(self.stack.sent[1].expires, 0)

    def test_send_unregister_unknown(self):
        self.start()
        self.assertIsNone(self.service.send_unregister("nobody"))

    def test_refresh_after_unregister_wakes_it(self):
        self.start([make_row("acc1")])
        self.register_online()
        self.service.send_unregister("acc1")
        self.stack.answer(self.stack.sent[1], 200)
        self.successResultOf(self.service.refresh("acc1"))
        self.advance(TICK)
        self.assertEqual(self.stack.sent[2].expires, 3600)

    def test_send_register_ignores_disabled(self):
        self.start([make_row("acc1", flags=1)])
        d = self.service.send_register("l_uuid", "acc1")
        self.assertIsNotNone(d)
        self.assertEqual(len(self.stack.sent), 1)
        self.stack.ok(self.stack.sent[0], 600)
        self.successResultOf(d)

    def test_send_register_unknown(self):
        self.start()
        self.assertIsNone(self.service.send_register("l_uuid", "nobody"))


class StatusCounterTests(ServiceTestCase):
    def test_status_codes(self):
        self.start([make_row("online"), make_row("ongoing"), make_row("off", flags=1), make_row("failed")],
                   reg_retry_interval=60)
        by_user = {s.contact_user: s for s in self.stack.sent}
        self.stack.ok(by_user["online"], 600)
        self.stack.answer(by_user["failed"], 403)
        self.assertEqual(self.service.status("online"), 1)
        self.assertEqual(self.service.status("ongoing"), -2)
        self.assertEqual(self.service.status("off"), -3)
        self.assertEqual(self.service.status("failed"), -99)
        self.assertEqual(self.service.status("unknown"), -1)

    def test_counters(self):
        self.start([make_row("a"), make_row("b"), make_row("c", flags=1), make_row("d")], reg_retry_interval=60)
        self.assertEqual(self.service.counters(),
                         {"regtotal": 4, "regactive": 0, "regdisabled": 1, "regongoing": 3, "regfailed": 0})
        by_user = {s.contact_user: s for s in self.stack.sent}
        self.stack.ok(by_user["a"], 600)
        self.stack.ok(by_user["b"], 100)
        self.stack.answer(by_user["d"], 403)
        self.assertEqual(self.service.counters(),
                         {"regtotal": 4, "regactive": 2, "regdisabled": 1, "regongoing": 0, "regfailed": 1})
        self.service.set_active(False)
        self.advance(101, step=1)  # b's binding lapses
        self.assertEqual(self.service.counters()["regactive"], 1)

    def test_counters_follow_disable_and_enable(self):
        self.start([make_row("a"), make_row("b")])
        self.service.disable("l_uuid", "a")
        self.service.disable("l_uuid", "nobody")  # Kamailio miscounts this one
        self.assertEqual(self.service.counters()["regdisabled"], 1)
        self.service.enable("l_uuid", "a")
        self.service.enable("l_uuid", "nobody")
        self.assertEqual(self.service.counters()["regdisabled"], 0)

    def test_lookup(self):
        self.start([make_row("acc1", l_username="100", l_domain="pbx.local")])
        self.assertEqual(self.service.lookup("acc1"), "sip:100@pbx.local")
        self.assertIsNone(self.service.lookup("nobody"))

    def test_lookup_uri(self):
        self.start([make_row("acc1", l_username="100", l_domain="pbx.local")])
        self.assertEqual(self.service.lookup_uri("sip:100@anything.example"), "acc1")
        self.assertIsNone(self.service.lookup_uri("sip:200@pbx.local"))

    def test_lookup_uri_with_domain(self):
        self.start([make_row("acc1", l_username="100", l_domain="pbx.local")], reg_use_domain=True)
        self.assertEqual(self.service.lookup_uri("sip:100@pbx.local"), "acc1")
        self.assertIsNone(self.service.lookup_uri("sip:100@other.local"))

    def test_request_to(self):
        self.flush_scheduler_errors()  # a row with password and HA1 kills the scheduler (see AuthenticationTests)
        self.start([make_row("acc1", l_username="100", realm="r.example", auth_ha1=HA1)])
        self.assertEqual(self.service.request_to("acc1"), {
            "ruri": "sip:remote-acc1@sip.provider.example", "duri": "sip:proxy.provider.example:5070",
            "realm": "r.example", "username": "auth-acc1", "password": "secret-pw", "ha1": False})
        self.assertEqual(self.service.request_to("100", 1 | 2)["password"], HA1)
        self.assertIsNone(self.service.request_to("nobody"))

    def test_request_to_with_domain(self):
        self.start([make_row("acc1", l_username="100", l_domain="pbx.local")], reg_use_domain=True)
        self.assertEqual(self.service.request_to("sip:100@pbx.local", 1)["username"], "auth-acc1")
        self.assertIsNone(self.service.request_to("sip:100@other.local", 1))
        self.assertRaises(SIPParseError, self.service.request_to, "100@pbx.local", 1)

    def test_find(self):
        self.start([make_row("acc1", r_username="alice")])
        self.assertIs(self.service.find("r_username", "alice"), self.record())
        self.assertIsNone(self.service.find("l_uuid", "nobody"))
        self.assertRaises(UnknownFilterAttribute, self.service.find, "socket", "x")


class RoutineLogTests(ServiceTestCase):
    """log_routine: the debug events of routine transitions are only made when wanted."""

    def logged(self, **settings) -> list[str]:
        with capturedLogs() as events:
            self.start(**settings)
            self.stack.ok(self.stack.sent[0], 600)
        return [formatEvent(e) for e in events if e.get("l_uuid") == "acc1"]

    def test_routine_transitions_logged_by_default(self):
        lines = self.logged()
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(len(self.events), 2)

    def test_routine_transitions_not_logged_without_log_routine(self):
        self.assertEqual(self.logged(log_routine=False), [])
        self.assertEqual([e.state for e in self.events], [State.REGISTERING, State.ONLINE], "observers see them")

    def test_other_transitions_logged_without_log_routine(self):
        with capturedLogs() as events:
            self.start(log_routine=False, reg_retry_interval=30)
            self.stack.timeout(self.stack.sent[0])
        lines = [formatEvent(e) for e in events if e.get("l_uuid") == "acc1"]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("registering -> failed", lines[0])

    def test_service_sets_it_from_the_log_level(self):
        from txuac.config import settings_from_dict
        from txuac.service import registrant_settings
        self.assertFalse(registrant_settings(settings_from_dict({})).log_routine)
        self.assertTrue(registrant_settings(settings_from_dict({"log": {"level": "debug"}})).log_routine)


class FailureSummaryTests(ServiceTestCase):
    """An outage: the temporary failures of a round are one info line per registrar, the
    per-account lines are at debug."""

    def test_a_thousand_accounts_failing_at_one_registrar(self):
        rows = [make_row(f"acc{n}") for n in range(1000)]
        with capturedLogs() as events:
            self.start(rows, reg_retry_interval=30, reg_retry_jitter=0)
            for _ in range(2):  # two retry rounds
                self.clock.advance(0)
                while len(self.stack.pending()) < 1000:
                    self.clock.advance(TICK)
                for sent in self.stack.pending()[:998]:
                    self.stack.timeout(sent)
                for sent in self.stack.pending():
                    self.stack.answer(sent, 503)
                self.clock.advance(10)
                while not self.stack.pending():
                    self.clock.advance(1)
        info = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.info]
        failures = [line for line in info if "failed" in line]
        self.assertEqual(failures, ["1000 account(s) failed at proxy.provider.example: no answer (timeout) (998), "
                                    "503 Service Unavailable (2)"] * 2)
        per_account = [e for e in events if e.get("l_uuid") == "acc7" and e.get("state") == "failed"]
        self.assertEqual([e["log_level"] for e in per_account], [LogLevel.debug] * 2)

    def test_destinations_and_reasons_are_bounded(self):
        summary = FailureSummary(Clock(), max_destinations=2, max_reasons=2)
        with capturedLogs() as events:
            for n in range(4):
                summary.add(f"reg{n}.example.com", "503 Service Unavailable")
            for reason in ("a", "b", "c", "d"):
                summary.add("reg0.example.com", reason)
            summary.flush()
        self.assertEqual(sorted(formatEvent(e) for e in events), sorted([
            "1 account(s) failed at reg2.example.com: 503 Service Unavailable (1)",
            "1 account(s) failed at reg3.example.com: 503 Service Unavailable (1)",
            "5 account(s) failed at reg0.example.com: other reasons (3), 503 Service Unavailable (1), a (1)",
            "1 account(s) failed at reg1.example.com: 503 Service Unavailable (1)",
        ]))


class ObserverTests(ServiceTestCase):
    def test_events_for_a_registration(self):
        self.start()
        self.stack.ok(self.stack.sent[0], 600)
        self.assertEqual([(e.previous, e.state) for e in self.events],
                         [(State.WAITING, State.REGISTERING), (State.REGISTERING, State.ONLINE)])
        online = self.events[-1]
        self.assertEqual(online.l_uuid, "acc1")
        self.assertEqual(online.status, 200)
        self.assertIn("600", online.reason)
        self.assertEqual(online.at, 0.0)

    def test_failure_event(self):
        self.start(reg_retry_interval=60)
        self.stack.answer(self.stack.sent[0], 403)
        failed = self.events[-1]
        self.assertEqual(failed.state, State.FAILED)
        self.assertEqual(failed.previous, State.REGISTERING)
        self.assertEqual(failed.reason, "403 Forbidden")
        self.assertEqual(failed.status, 403)

    def test_timeout_event(self):
        self.start(reg_retry_interval=0)
        self.stack.timeout(self.stack.sent[0])
        event = self.events[-1]
        self.assertEqual((event.previous, event.state), (State.REGISTERING, State.DISABLED))
        self.assertIn("timeout", event.reason)
        self.assertIsNone(event.status)

    def test_events_chain(self):
        """Every state change is reported, and each event starts where the previous one ended."""
        self.start([make_row("acc1", expires=60)], reg_retry_interval=30, reg_retry_jitter=0)
        sent = self.stack.sent[0]
        self.stack.answer(sent, 423, ("Min-Expires", "120"))
        self.stack.challenge(self.stack.sent[1])
        self.stack.ok(self.stack.sent[2], 120)
        self.service.disable("l_uuid", "acc1")
        self.service.enable("l_uuid", "acc1")
        self.advance(TICK)
        self.stack.answer(self.stack.pending()[0], 503)
        self.advance(31, step=1)
        self.stack.timeout(self.stack.pending()[0])
        self.service.set_active(False)
        states = [State.WAITING] + [e.state for e in self.events]
        for i, event in enumerate(self.events):
            self.assertEqual(event.previous, states[i], (i, event))
            self.assertTrue(event.reason, event)
        self.assertIn(State.DISABLED, states)
        self.assertIn(State.ONLINE, states)
        self.assertEqual(self.record().state(self.now()), self.events[-1].state)

    def test_disable_and_enable_events(self):
        self.start([make_row("acc1", flags=1)])
        self.service.enable("l_uuid", "acc1")
        self.service.disable("l_uuid", "acc1")
        self.assertEqual([(e.previous, e.state, e.reason) for e in self.events],
                         [(State.DISABLED, State.WAITING, "enabled"), (State.WAITING, State.DISABLED, "disabled")])

    def test_raising_observer_breaks_nothing(self):
        self.start([make_row("acc1"), make_row("acc2")])
        calls = []

        def broken(event):
            calls.append(event)
            raise ZeroDivisionError("observer bug")

        self.service.observers.insert(0, broken)
        for sent in self.stack.pending():
            self.stack.ok(sent, 600)
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertEqual(self.service.status("acc2"), 1)
        self.assertEqual(len(calls), 2)
        self.assertEqual([e.state for e in self.events[-2:]], [State.ONLINE, State.ONLINE])
        self.advance(600, step=1)
        self.assertEqual(len(self.stack.sent), 4)  # the scheduler still runs
        self.service.observers.remove(broken)
        self.assertTrue(self.flushLoggedErrors(ZeroDivisionError))


class PacingTests(ServiceTestCase):
    def test_thousand_accounts_at_rate_200(self):
        rate = 200
        self.start([make_row(f"a{i:04d}") for i in range(1000)], reg_send_rate=rate)
        budget_cap = rate * TICK * 2
        per_step = [len(self.stack.sent)]
        while len(self.stack.sent) < 1000 and self.now() < 20:
            before = len(self.stack.sent)
            self.clock.advance(TICK)
            per_step.append(len(self.stack.sent) - before)
        self.assertEqual(len(self.stack.sent), 1000)
        self.assertEqual(len({s.contact_user for s in self.stack.sent}), 1000)
        self.assertTrue(max(per_step) <= budget_cap, max(per_step))
        duration = self.stack.sent[-1].at - self.stack.sent[0].at
        self.assertTrue(4.5 <= duration <= 5.5, duration)
        for start in range(0, 5):
            self.assertLessEqual(len(self.sends_between(start, start + 1.0)), rate + budget_cap)

    def test_budget_not_hoarded_across_a_long_pause(self):
        rate = 200
        self.start([make_row("first")], reg_send_rate=rate)
        self.advance(10, step=1)
        for i in range(500):
            self.service.add(make_row(f"b{i:03d}"))
        before = len(self.stack.sent)
        self.clock.advance(TICK)
        self.assertLessEqual(len(self.stack.sent) - before, rate * TICK * 2)

    def test_refreshes_are_paced_too(self):
        rate = 100
        self.start([make_row(f"a{i:03d}") for i in range(300)], reg_send_rate=rate)
        self.advance(4, step=TICK)
        self.assertEqual(len(self.stack.sent), 300)
        for sent in list(self.stack.sent):
            self.stack.ok(sent, 3600)
        self.advance_to(3400, step=10)
        first_refresh = len(self.stack.sent)
        while self.now() < 3600:
            before = len(self.stack.sent)
            self.clock.advance(TICK)
            self.assertLessEqual(len(self.stack.sent) - before, rate * TICK * 2)
            for sent in self.stack.pending():
                self.stack.ok(sent, 3600)
        self.assertEqual(len(self.stack.sent) - first_refresh, 300)
        self.assertEqual(self.service.counters()["regactive"], 300)


class DestinationBudgetTests(ServiceTestCase):
    """reg_dest_rate and reg_dest_max_in_flight: one provider is paced, the others are not held up."""

    def rows(self):
        slow = [make_row(f"s{i:03d}", auth_proxy="sip:slow.example:5060") for i in range(100)]
        fast = [make_row(f"f{i:03d}", auth_proxy="sip:fast.example:5060") for i in range(100)]
        return slow + fast

    def sent_to(self, host: str) -> list:
        return [s for s in self.stack.sent if s.target.host == host]

    def test_rate_per_destination(self):
        self.start(self.rows(), reg_send_rate=1000, reg_dest_rate=20)
        self.advance(1, step=TICK)
        # Each destination: a second's worth plus its burst (2), whatever the other does.
        self.assertEqual(len(self.sent_to("fast.example")), 22)
        self.assertEqual(len(self.sent_to("slow.example")), 22)
        self.advance(4, step=TICK)
        slow = self.sent_to("slow.example")
        self.assertTrue(95 <= len(slow) <= 102, len(slow))
        for start in range(1, 5):
            self.assertLessEqual(len([s for s in slow if start <= s.at < start + 1]), 21)

    def test_in_flight_per_destination(self):
        self.start(self.rows(), reg_dest_max_in_flight=10)
        self.advance(1, step=TICK)
        self.assertEqual(len(self.sent_to("slow.example")), 10)
        self.assertEqual(len(self.sent_to("fast.example")), 10)
        for sent in self.sent_to("slow.example")[:5]:
            self.stack.ok(sent, 3600)
        self.advance(TICK * 2, step=TICK)
        self.assertEqual(len(self.sent_to("slow.example")), 15, "each answer frees a place")
        self.assertEqual(len(self.sent_to("fast.example")), 10)
        self.assertEqual(self.service.destinations.in_flight, {"slow.example": 10, "fast.example": 10})

    def test_a_paced_destination_is_not_scanned_again_every_tick(self):
        """Accounts waiting for their destination's budget are parked in order, not pushed
        back on the heap and popped again at every tick."""
        self.start([make_row(f"s{i:04d}", auth_proxy="sip:slow.example:5060") for i in range(2000)],
                   reg_dest_rate=10)
        looked_up = []
        destination = self.service._destination
        self.service._destination = lambda record: looked_up.append(record.l_uuid) or destination(record)
        self.advance(3, step=TICK)
        self.assertLessEqual(len(looked_up), 2000 + 100)
        sent = [s.contact_user for s in self.stack.sent]
        self.assertEqual(sent, sorted(sent), "in due order")
        self.assertTrue(30 <= len(sent) <= 33, len(sent))

    def test_failures_free_their_place(self):
        self.start(self.rows()[:3], reg_dest_max_in_flight=1, reg_retry_interval=60)
        self.assertEqual(len(self.stack.sent), 1)
        self.stack.timeout(self.stack.sent[0])
        self.advance(TICK * 2, step=TICK)
        self.assertEqual(len(self.stack.sent), 2)
        self.stack.challenge(self.stack.sent[1])  # the authenticated retry is the same cycle
        self.assertEqual(self.service.destinations.in_flight, {"slow.example": 1})
        self.stack.ok(self.stack.sent[2], 600)
        self.advance(TICK * 2, step=TICK)
        self.assertEqual(len(self.stack.sent), 4)


class StopTests(ServiceTestCase):
    def test_stop_waits_for_in_flight_register(self):
        self.start([make_row("acc1")])
        d = self.service.stopService()
        self.assertNoResult(d)
        self.assertFalse(self.store.closed)
        self.stack.ok(self.stack.sent[0], 600)
        self.successResultOf(d)
        self.assertTrue(self.store.closed)

    def test_stop_waits_across_the_authenticated_retry(self):
        self.start([make_row("acc1")])
        d = self.service.stopService()
        self.stack.challenge(self.stack.sent[0])
        self.assertNoResult(d)
        self.stack.ok(self.stack.sent[1], 600)
        self.successResultOf(d)

    def test_stop_without_in_flight(self):
        self.start([make_row("acc1")])
        self.stack.ok(self.stack.sent[0], 600)
        self.successResultOf(self.service.stopService())
        self.assertTrue(self.store.closed)
        self.advance(1200, step=1)
        self.assertEqual(len(self.stack.sent), 1)  # nothing after stop

    def test_stop_does_not_unregister_by_default(self):
        self.start([make_row("acc1")])
        self.stack.ok(self.stack.sent[0], 600)
        self.successResultOf(self.service.stopService())
        self.assertEqual(len(self.stack.sent), 1)

    def test_unregister_on_stop(self):
        self.start([make_row("on1"), make_row("on2"), make_row("failed"), make_row("off", flags=1)],
                   reg_unregister_on_stop=True, reg_retry_interval=60)
        by_user = {s.contact_user: s for s in self.stack.sent}
        self.stack.ok(by_user["on1"], 600)
        self.stack.ok(by_user["on2"], 600)
        self.stack.answer(by_user["failed"], 403)
        d = self.service.stopService()
        unregisters = self.stack.sent[3:]
        self.assertEqual(sorted(s.contact_user for s in unregisters), ["on1", "on2"])
        self.assertEqual([s.expires for s in unregisters], [0, 0])
        self.assertNoResult(d)
        self.stack.answer(unregisters[0], 200)
        self.assertNoResult(d)
        self.assertFalse(self.store.closed)
        self.stack.answer(unregisters[1], 200)
        self.successResultOf(d)
        self.assertTrue(self.store.closed)
        self.assertEqual(self.service.counters()["regactive"], 0)

    def test_unregister_on_stop_waits_for_a_refresh_in_flight(self):
        """An online account whose refresh is in flight at stop: stopService must wait for that
        REGISTER too (else its late 200 can re-create the binding after our un-REGISTER)."""
        self.start([make_row("acc1")], reg_unregister_on_stop=True)
        self.stack.ok(self.stack.sent[0], 600)
        self.advance_to(560, step=1)
        refresh = self.stack.pending()[0]
        self.assertEqual(refresh.expires, 3600)
        d = self.service.stopService()
        for sent in self.stack.pending():
            if sent.expires == 0:
                self.stack.answer(sent, 200)
        self.assertNoResult(d)  # the refresh is still in flight
        self.stack.ok(refresh, 600)
        for sent in self.stack.pending():
            if sent.expires == 0:
                self.stack.answer(sent, 200)
        self.successResultOf(d)
        self.assertEqual(self.stack.sent[-1].expires, 0)  # the last word is the un-REGISTER
        self.assertNotEqual(self.service.status("acc1"), 1)

    def test_unregister_on_stop_survives_a_timeout(self):
        self.start([make_row("acc1")], reg_unregister_on_stop=True)
        self.stack.ok(self.stack.sent[0], 600)
        d = self.service.stopService()
        self.stack.timeout(self.stack.sent[1])
        self.successResultOf(d)
        self.assertTrue(self.store.closed)


class RobustnessTests(ServiceTestCase):
    def test_unbuildable_register_does_not_stop_the_scheduler(self):
        """One account whose REGISTER cannot be built (r_domain with a space) must not stop the
        LoopingCall for every other account."""
        self.flush_scheduler_errors()
        self.start([make_row("bad", r_domain="bad domain.example"), make_row("good", reg_delay=5)],
                   reg_retry_interval=60)
        self.advance(6, step=TICK)
        self.assertIn("good", [s.contact_user for s in self.stack.sent])
