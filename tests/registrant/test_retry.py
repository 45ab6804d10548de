"""Retries per failure kind: the sans-IO policy, and the registrant following it on a Clock.

Temporary failures back off from reg_retry_interval (txuac's default 30 s) doubling up to
reg_retry_max_interval; 403 and refused credentials wait reg_forbidden_retry_interval,
other final failures reg_fatal_retry_interval, both with an alert; each delay +-jitter;
a longer Retry-After wins; reg_retry_interval 0 is Kamailio's disable-on-failure.
"""

from __future__ import annotations

import random

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_row
from tests.support.registrant_harness import TICK, ServiceTestCase
from txuac.errors import (
    AuthenticationError,
    ChallengeOriginError,
    ResolutionError,
    TransactionTimeout,
    TransportError,
)
from txuac.registrant.record import Flag, State
from txuac.registrant.retry import MIN_DELAY, FailureKind, RetryPolicy, classify
from txuac.registrant.settings import RegistrantSettings

TIMER_F = 32.0  # 64 * T1: when a REGISTER nobody answers fails (RFC 3261 17.1.2.2)


class ClassifyTests(SynchronousTestCase):
    def test_temporary(self):
        for status in (408, 480, 500, 502, 503, 504, 555, 599):
            self.assertIs(classify(status), FailureKind.TEMPORARY, status)
        for error in (TransactionTimeout, TransportError, ResolutionError):
            self.assertIs(classify(None, error), FailureKind.TEMPORARY, error)

    def test_a_2xx_we_cannot_use_is_temporary(self):
        """A 200 without our Contact or unparsable: the registrar works, ask again soon."""
        self.assertIs(classify(200), FailureKind.TEMPORARY)

    def test_forbidden(self):
        self.assertIs(classify(403), FailureKind.FORBIDDEN)
        # Challenged again after our answer, or a challenge we must not or cannot answer.
        self.assertIs(classify(401, AuthenticationError), FailureKind.FORBIDDEN)
        self.assertIs(classify(407, AuthenticationError), FailureKind.FORBIDDEN)
        # A challenge from elsewhere is not the registrar refusing us: a spoofer must not
        # park the account on the forbidden interval.
        self.assertIs(classify(401, ChallengeOriginError), FailureKind.TEMPORARY)
        self.assertIs(classify(None, AuthenticationError), FailureKind.FORBIDDEN)
        self.assertIs(classify(401), FailureKind.FORBIDDEN)

    def test_fatal(self):
        for status in (300, 302, 400, 404, 405, 420, 423, 489, 600, 603, 606):
            self.assertIs(classify(status), FailureKind.FATAL, status)

    def test_nothing_sent_is_fatal(self):
        """No status and no network error: the REGISTER could not be built from the row."""
        self.assertIs(classify(None), FailureKind.FATAL)


class PolicyTests(SynchronousTestCase):
    def delays(self, policy: RetryPolicy, kind: FailureKind, failures: int, count: int = 500,
               retry_after: int | None = None) -> list[float]:
        rng = random.Random(7)
        return [policy.delay(kind, failures, retry_after, rng) for _ in range(count)]

    def test_defaults_are_txuacs(self):
        self.assertEqual(RetryPolicy(), RetryPolicy(30, 600, 1800, 3600, 20))

    def test_temporary_backoff_doubles_up_to_the_cap(self):
        policy = RetryPolicy(jitter=0)
        got = [policy.delay(FailureKind.TEMPORARY, n, None, random.Random(0)) for n in range(1, 9)]
        self.assertEqual(got, [30, 60, 120, 240, 480, 600, 600, 600])
        self.assertEqual(policy.delay(FailureKind.TEMPORARY, 10 ** 6, None, random.Random(0)), 600)

    def test_cap_never_below_the_first_interval(self):
        policy = RetryPolicy(retry_interval=900, retry_max_interval=600, jitter=0)
        self.assertEqual(policy.base(FailureKind.TEMPORARY, 1), 900)
        self.assertEqual(policy.base(FailureKind.TEMPORARY, 5), 900)

    def test_forbidden_and_fatal_intervals_do_not_back_off(self):
        policy = RetryPolicy(jitter=0)
        for failures in (1, 2, 10):
            self.assertEqual(policy.delay(FailureKind.FORBIDDEN, failures, None, random.Random(0)), 1800)
            self.assertEqual(policy.delay(FailureKind.FATAL, failures, None, random.Random(0)), 3600)

    def test_jitter_bounds_and_spread(self):
        policy = RetryPolicy()  # 20 %
        for kind, failures, base in ((FailureKind.TEMPORARY, 1, 30), (FailureKind.TEMPORARY, 3, 120),
                                     (FailureKind.TEMPORARY, 9, 600), (FailureKind.FORBIDDEN, 1, 1800),
                                     (FailureKind.FATAL, 1, 3600)):
            delays = self.delays(policy, kind, failures)
            self.assertGreaterEqual(min(delays), base * 0.8, kind)
            self.assertLessEqual(max(delays), base * 1.2, kind)
            # Spread over the whole range, not a constant offset.
            self.assertLess(min(delays), base * 0.85, kind)
            self.assertGreater(max(delays), base * 1.15, kind)

    def test_never_below_one_second(self):
        delays = self.delays(RetryPolicy(retry_interval=1, jitter=100), FailureKind.TEMPORARY, 1)
        self.assertEqual(min(delays), MIN_DELAY)
        self.assertLessEqual(max(delays), 2.0)

    def test_retry_after_wins_when_longer(self):
        policy = RetryPolicy()
        self.assertEqual(set(self.delays(policy, FailureKind.TEMPORARY, 1, retry_after=300)), {300.0})
        self.assertEqual(set(self.delays(policy, FailureKind.FATAL, 1, retry_after=7200)), {7200.0})

    def test_retry_after_shorter_is_ignored(self):
        policy = RetryPolicy()
        self.assertGreaterEqual(min(self.delays(policy, FailureKind.TEMPORARY, 1, retry_after=10)), 24.0)
        self.assertGreaterEqual(min(self.delays(policy, FailureKind.FATAL, 1, retry_after=60)), 2880.0)

    def test_retry_interval_zero_disables_every_kind(self):
        policy = RetryPolicy(retry_interval=0)
        for kind in FailureKind:
            self.assertIsNone(policy.delay(kind, 1, 30, random.Random(0)), kind)

    def test_zero_forbidden_or_fatal_interval_disables_that_kind_only(self):
        policy = RetryPolicy(forbidden_retry_interval=0)
        self.assertIsNone(policy.delay(FailureKind.FORBIDDEN, 1, None, random.Random(0)))
        self.assertIsNotNone(policy.delay(FailureKind.FATAL, 1, None, random.Random(0)))
        policy = RetryPolicy(fatal_retry_interval=0)
        self.assertIsNone(policy.delay(FailureKind.FATAL, 1, None, random.Random(0)))
        self.assertIsNotNone(policy.delay(FailureKind.FORBIDDEN, 1, None, random.Random(0)))
        self.assertIsNotNone(policy.delay(FailureKind.TEMPORARY, 1, None, random.Random(0)))


class ServiceRetryTests(ServiceTestCase):
    """The registrant on a Clock with the fake stack (tests/support/registrant_harness.py)."""

    def sent_for(self, l_uuid: str = "acc1") -> list:
        return [s for s in self.stack.sent if s.contact_user == l_uuid]

    def fail_and_measure(self, answer) -> float:
        """Fail the pending REGISTER of acc1 with ``answer(sent)``; seconds until the next one."""
        failed_at = self.now()
        before = len(self.stack.sent)
        answer(self.stack.pending()[0])
        self.assertEqual(len(self.stack.sent), before, "retried at once")
        while len(self.stack.sent) == before:
            self.clock.advance(1.0)
            self.assertLess(self.now() - failed_at, 10000, "never retried")
        return self.stack.sent[-1].at - failed_at

    def test_default_is_not_kamailios_zero(self):
        self.assertEqual(RegistrantSettings().reg_retry_interval, 30)
        self.start()
        self.stack.timeout(self.stack.sent[0])
        self.assertEqual(self.record().state(self.now()), State.FAILED)
        self.assertFalse(self.record().has(Flag.DISABLED))

    def test_backoff_doubles_caps_and_resets_on_success(self):
        self.start(reg_retry_jitter=0, reg_retry_interval=30, reg_retry_max_interval=200)
        delays = [self.fail_and_measure(self.stack.timeout) for _ in range(5)]
        self.assertEqual(delays, [30, 60, 120, 200, 200])
        self.assertEqual(self.record().failures, 5)
        self.stack.ok(self.stack.pending()[0], 3600)
        self.assertEqual(self.record().failures, 0)
        self.advance(10)
        self.service.send_register("l_uuid", "acc1")
        self.assertEqual(self.fail_and_measure(lambda sent: self.stack.answer(sent, 503)), 30)

    def test_jitter_spreads_accounts_that_failed_together(self):
        self.start([make_row(f"a{i:02d}") for i in range(40)])  # default: 30 s +-20 %
        for sent in self.stack.pending():
            self.stack.answer(sent, 503)
        self.advance(40, step=0.5)
        retries = [s.at for s in self.stack.sent[40:]]
        self.assertEqual(len(retries), 40)
        self.assertGreaterEqual(min(retries), 24.0)
        self.assertLessEqual(max(retries), 36.0 + 0.5)
        self.assertGreater(max(retries) - min(retries), 6.0, "retries not spread")

    def test_retry_after_longer_wins(self):
        self.start()
        delay = self.fail_and_measure(lambda sent: self.stack.answer(sent, 503, ("Retry-After", "300")))
        self.assertEqual(delay, 300)

    def test_retry_after_shorter_is_ignored(self):
        self.start()
        delay = self.fail_and_measure(lambda sent: self.stack.answer(sent, 503, ("Retry-After", "5")))
        self.assertTrue(24 <= delay <= 37, delay)

    def test_retry_after_on_404_is_honoured_when_longer_than_its_fatal_interval(self):
        self.start(reg_fatal_retry_interval=100, reg_retry_jitter=0)
        delay = self.fail_and_measure(lambda sent: self.stack.answer(sent, 404, ("Retry-After", "500")))
        self.assertEqual(delay, 500)

    def test_timeout_is_temporary_without_alert(self):
        self.start()
        with capturedLogs() as logged:
            delay = self.fail_and_measure(self.stack.timeout)
        self.assertTrue(24 <= delay <= 37, delay)
        failed = [e for e in self.events if e.state is State.FAILED][0]
        self.assertFalse(failed.alert)
        self.assertEqual([e for e in logged if e.get("alert")], [])

    def test_403_waits_the_forbidden_interval_with_an_alert(self):
        self.start()
        with capturedLogs() as logged:
            delay = self.fail_and_measure(lambda sent: self.stack.answer(sent, 403))
        self.assertTrue(1440 <= delay <= 2161, delay)
        failed = [e for e in self.events if e.state is State.FAILED][0]
        self.assertEqual((failed.previous, failed.reason, failed.status, failed.alert),
                         (State.REGISTERING, "403 Forbidden", 403, True))
        [alert] = [e for e in logged if e.get("alert")]
        self.assertEqual(alert["log_level"], LogLevel.warn)
        self.assertEqual((alert["l_uuid"], alert["kind"], alert["status"]), ("acc1", "forbidden", 403))
        self.assertLessEqual(abs(alert["retry_in"] - delay), 1.0)  # the clock moves by 1 s steps

    def test_refused_credentials_wait_the_forbidden_interval(self):
        self.start(reg_retry_jitter=0)
        self.stack.challenge(self.stack.sent[0])
        delay = self.fail_and_measure(lambda sent: self.stack.challenge(sent, nonce="nonce-2"))
        self.assertEqual(delay, 1800)
        self.assertTrue(self.record().last_failure.startswith("authentication failed"))

    def test_404_is_fatal_retried_on_its_interval_with_an_alert(self):
        """A dead account is revived on its fatal interval, not disabled for good."""
        self.start()
        with capturedLogs() as logged:
            self.stack.answer(self.stack.sent[0], 404)
        record = self.record()
        self.assertEqual(record.state(self.now()), State.FAILED)
        self.assertFalse(record.has(Flag.DISABLED))
        self.assertEqual(self.service.counters()["regdisabled"], 0)
        self.assertTrue(self.events[-1].alert)
        [alert] = [e for e in logged if e.get("alert")]
        self.assertEqual((alert["log_level"], alert["kind"]), (LogLevel.warn, "fatal"))
        self.assertTrue(2880 <= record.due_at <= 4320, record.due_at)
        self.advance_to(record.due_at + TICK, step=10)
        self.assertEqual(len(self.stack.sent), 2)
        self.stack.ok(self.stack.sent[1], 3600)
        self.assertEqual(self.service.status("acc1"), 1)

    def test_zero_fatal_interval_disables_on_fatal_only(self):
        self.start([make_row("gone"), make_row("busy")], reg_fatal_retry_interval=0)
        by_user = {s.contact_user: s for s in self.stack.sent}
        self.stack.answer(by_user["gone"], 404)
        self.stack.answer(by_user["busy"], 503)
        self.assertEqual(self.service.status("gone"), -3)
        self.assertEqual(self.record("busy").state(self.now()), State.FAILED)

    def test_explicit_zero_disables_as_kamailio(self):
        self.start(reg_retry_interval=0)
        with capturedLogs() as logged:
            self.stack.answer(self.stack.sent[0], 503)
        self.assertEqual(self.service.status("acc1"), -3)
        self.assertEqual(self.events[-1].state, State.DISABLED)
        self.assertTrue(self.events[-1].alert)
        [alert] = [e for e in logged if e.get("alert")]
        self.assertIsNone(alert["retry_in"])
        self.advance(5000, step=10)
        self.assertEqual(len(self.stack.sent), 1)


class OutageTests(ServiceTestCase):
    """A registrar silent for 75 s: every REGISTER sent meanwhile times out after Timer F."""

    ACCOUNTS = 50
    OUTAGE = (10.0, 85.0)

    def run_outage(self, until: float, **settings) -> None:
        self.start([make_row(f"a{i:02d}", expires=120) for i in range(self.ACCOUNTS)], **settings)
        self.disabled_seen = set()
        while self.now() < until:
            for sent in self.stack.pending():
                if self.OUTAGE[0] <= sent.at < self.OUTAGE[1]:
                    if self.now() >= sent.at + TIMER_F:
                        self.stack.timeout(sent)
                else:
                    self.stack.ok(sent, 120)
            self.disabled_seen |= {r.l_uuid for r in self.service.records.values() if r.has(Flag.DISABLED)}
            self.clock.advance(TICK)

    def test_default_settings_bring_every_account_back(self):
        # The last REGISTER lost in the outage fails by its end + Timer F; its retry (at
        # most the second backoff step, 60 s + 20 %) is answered.
        back_by = self.OUTAGE[1] + TIMER_F + 60 * 1.2 + 1
        self.run_outage(back_by)
        self.assertEqual(self.disabled_seen, set())
        failed = {e.l_uuid for e in self.events if e.state is State.FAILED}
        self.assertEqual(len(failed), self.ACCOUNTS, "the outage was not seen")
        self.assertEqual(self.service.counters()["regactive"], self.ACCOUNTS)
        self.assertEqual(self.service.counters()["regdisabled"], 0)

    def test_kamailios_zero_disables_every_account_for_good(self):
        self.run_outage(self.OUTAGE[1] + 300, reg_retry_interval=0)
        self.assertEqual(self.service.counters()["regdisabled"], self.ACCOUNTS)
        self.assertEqual(self.service.counters()["regactive"], 0)
