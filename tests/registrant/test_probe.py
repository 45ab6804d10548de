"""txuac.registrant.probe: OPTIONS to a failing registrar, re-registration on its answer.

ProbePlan is driven with explicit times, no reactor; the registrant runs as in
tests/registrant/test_service.py (task.Clock, fake stack and store) with the probe on.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_row
from tests.support.registrant_harness import ServiceTestCase
from txuac.errors import TransportError
from txuac.registrant.probe import SILENT_AFTER, ProbePlan, Recovery
from txuac.registrant.record import State

DEST = "proxy.provider.example"
OTHER_PROXY = "sip:other.example:5070"


class ProbePlanTests(SynchronousTestCase):
    def test_nothing_to_probe_until_suspect(self):
        plan = ProbePlan(2.0, 30.0)
        plan.sent(DEST, 0.0)
        plan.ended(DEST, 0.5, answered=True)
        self.assertEqual(plan.due(100.0), [])
        self.assertEqual(plan.silent(100.0), [])

    def test_suspect_is_probed_at_once_one_probe_at_a_time(self):
        plan = ProbePlan(2.0, 30.0)
        self.assertTrue(plan.suspect(DEST, 10.0))
        self.assertFalse(plan.suspect(DEST, 10.0))
        self.assertEqual(plan.due(10.0), [DEST])
        self.assertEqual(plan.due(50.0), [])  # still in flight

    def test_unanswered_probes_back_off_to_the_cap(self):
        plan = ProbePlan(2.0, 10.0)
        plan.suspect(DEST, 0.0)
        nexts = []
        now = 0.0
        for _ in range(4):
            self.assertEqual(plan.due(now), [DEST])
            plan.unanswered(DEST, now)
            nexts.append(plan.probes[DEST].next_at - now)
            self.assertEqual(plan.due(now + nexts[-1] - 0.01), [])
            now += nexts[-1]
        self.assertEqual(nexts, [4.0, 8.0, 10.0, 10.0])

    def test_an_answer_while_probing_means_reregister_once(self):
        plan = ProbePlan(2.0, 30.0)
        plan.suspect(DEST, 0.0)
        plan.due(0.0)
        self.assertIs(plan.answered(DEST, 1.0), Recovery.FAILED)  # answered at once: not down
        self.assertIsNone(plan.answered(DEST, 1.5))
        self.assertEqual(plan.due(100.0), [])

    def test_seen_down_then_answering_means_reregister_all(self):
        plan = ProbePlan(2.0, 30.0)
        plan.suspect(DEST, 0.0)
        plan.due(0.0)
        plan.unanswered(DEST, 32.0)
        self.assertEqual(plan.due(36.0), [DEST])
        self.assertIs(plan.answered(DEST, 36.1), Recovery.ALL)  # a probe went unanswered
        plan.suspect(DEST, 100.0)
        plan.due(100.0)
        self.assertIs(plan.answered(DEST, 100.0 + SILENT_AFTER), Recovery.ALL)  # answered late

    def test_failing_again_soon_after_a_recovery_waits_a_longer_interval(self):
        plan = ProbePlan(2.0, 30.0)
        plan.suspect(DEST, 0.0)
        plan.due(0.0)
        plan.answered(DEST, 0.1)
        plan.suspect(DEST, 1.0)
        self.assertEqual(plan.due(4.9), [])
        self.assertEqual(plan.due(5.0), [DEST])
        # Long after the recovery, a new failure is probed at once again.
        plan.answered(DEST, 5.1)
        plan.suspect(DEST, 40.0)
        self.assertEqual(plan.due(40.0), [DEST])

    def test_silent_destination_counts_from_its_first_cycle_in_flight(self):
        plan = ProbePlan(2.0, 30.0)
        plan.sent(DEST, 10.0)
        plan.sent(DEST, 12.0)
        self.assertEqual(plan.silent(10.0 + SILENT_AFTER - 0.1), [])
        self.assertEqual(plan.silent(10.0 + SILENT_AFTER), [DEST])
        plan.ended(DEST, 13.0, answered=True)  # an answer: silent from then on only
        self.assertEqual(plan.silent(13.0 + SILENT_AFTER - 0.1), [])
        self.assertEqual(plan.silent(13.0 + SILENT_AFTER), [DEST])
        plan.suspect(DEST, 13.0 + SILENT_AFTER)
        self.assertEqual(plan.silent(100.0), [])  # probed already
        plan.ended(DEST, 20.0, answered=False)
        self.assertEqual(plan._traffic, {})

    def test_a_register_answered_while_probing_ends_it_as_a_probe_answer(self):
        plan = ProbePlan(2.0, 30.0)
        plan.sent(DEST, 0.0)
        self.assertIsNone(plan.ended(DEST, 0.1, answered=True))  # not probed: nothing to do
        plan.suspect(DEST, 1.0)
        plan.due(1.0)
        plan.sent(DEST, 1.5)
        self.assertIsNone(plan.ended(DEST, 2.0, answered=False))
        plan.sent(DEST, 2.0)
        self.assertIs(plan.ended(DEST, 2.5, answered=True), Recovery.FAILED)
        self.assertEqual(plan.probes, {})
        plan.suspect(DEST, 100.0)
        plan.sent(DEST, 100.0)
        self.assertIs(plan.ended(DEST, 100.0 + SILENT_AFTER, answered=True), Recovery.ALL)

    def test_unanswered_cycles_do_not_reset_the_silence(self):
        plan = ProbePlan(2.0, 30.0)
        plan.sent(DEST, 0.0)
        plan.sent(DEST, 1.0)
        plan.ended(DEST, 3.0, answered=False)
        self.assertEqual(plan.silent(SILENT_AFTER), [DEST])


class ProbeServiceTests(ServiceTestCase):
    """The registrant with the probe on: three accounts behind one proxy, one elsewhere."""

    def start_probing(self, **settings):
        rows = [make_row("acc1"), make_row("acc2"), make_row("acc3"), make_row("far", auth_proxy=OTHER_PROXY)]
        settings.setdefault("reg_probe", True)
        service = self.start(rows, **settings)
        self.advance(0.2)
        for sent in self.stack.pending():
            self.stack.ok(sent)
        self.assertEqual(service.counters()["regactive"], 4)
        return service

    def options(self):
        return [s for s in self.stack.sent if s.request.method == "OPTIONS"]

    def registers(self, l_uuid):
        return [s for s in self.stack.sent if s.request.method == "REGISTER" and s.contact_user == l_uuid]

    def fail_refresh(self, l_uuid, transport=False):
        self.service.send_register("l_uuid", l_uuid)
        sent = self.registers(l_uuid)[-1]
        if transport:
            sent.deferred.errback(TransportError("connection refused"))
        else:
            self.stack.timeout(sent)
        self.assertIs(self.service.records[l_uuid].state(self.clock.seconds()), State.FAILED)

    def test_nothing_extra_while_all_is_well(self):
        self.start_probing()
        for _ in range(5400):  # an hour and a half: every account refreshed
            self.advance(1.0, step=1.0)
            for sent in self.stack.pending():
                self.stack.ok(sent)
        self.assertGreater(len(self.registers("acc1")), 1)
        self.assertEqual(self.options(), [])
        self.assertEqual(self.service.prober.probes, 0)

    def test_register_timeout_probes_its_destination_once(self):
        self.start_probing()
        self.fail_refresh("acc1")
        self.fail_refresh("acc2")
        self.advance(0.1)
        options = self.options()
        self.assertEqual(len(options), 1)
        self.assertEqual(self.service.prober.probes, 1)
        self.assertEqual(str(options[0].target), "sip:proxy.provider.example:5070")
        self.assertEqual(str(options[0].request.uri), "sip:proxy.provider.example:5070")

    def test_registrar_by_address_is_asked_for_the_registers_domain(self):
        """Reached by address, the OPTIONS carries the REGISTERs' Request-URI (sip:r_domain),
        so that a TLS registrar is verified against the name its REGISTERs verify."""
        rows = [make_row("acc1", auth_proxy="sip:192.0.2.7:5070")]
        self.start(rows, reg_probe=True)
        self.advance(0.2)
        for sent in self.stack.pending():
            self.stack.ok(sent)
        self.fail_refresh("acc1")
        self.advance(0.1)
        options = self.options()
        self.assertEqual(len(options), 1)
        self.assertEqual(str(options[0].target), "udp:192.0.2.7:5070")
        self.assertEqual(str(options[0].request.uri), f"sip:{rows[0]['r_domain']}")

    def test_transport_error_probes_too(self):
        self.start_probing()
        self.fail_refresh("acc1", transport=True)
        self.advance(0.1)
        self.assertEqual(len(self.options()), 1)

    def reregistered(self, answer_probe) -> dict[str, int]:
        """REGISTERs sent per account within 0.2 s of ``answer_probe()``."""
        before = {l_uuid: len(self.registers(l_uuid)) for l_uuid in ("acc1", "acc2", "acc3", "far")}
        answer_probe()
        self.advance(0.2)
        return {l_uuid: len(self.registers(l_uuid)) - count for l_uuid, count in before.items()}

    def test_an_answer_at_once_reregisters_the_failed_accounts_at_once(self):
        self.start_probing()
        self.fail_refresh("acc1")
        self.advance(0.1)
        self.assertGreater(self.service.records["acc1"].due_at, self.clock.seconds() + 10)  # its retry
        # Any status means alive; answered at once, the registrar was not down: only the failed one.
        sent = self.reregistered(lambda: self.stack.answer(self.options()[0], 404))
        self.assertEqual(sent, {"acc1": 1, "acc2": 0, "acc3": 0, "far": 0})
        self.assertEqual(self.service.prober.recoveries, 1)
        for register in self.stack.pending():
            self.stack.ok(register)
        self.assertEqual(self.service.counters()["regactive"], 4)
        self.assertEqual(len(self.options()), 1)  # probing stopped

    def test_a_destination_seen_down_then_answering_reregisters_every_account(self):
        self.start_probing(reg_probe_interval=2.0)
        self.fail_refresh("acc1")
        self.advance(0.1)
        self.stack.timeout(self.options()[0])
        self.advance(4.1)
        self.assertEqual(len(self.options()), 2)
        sent = self.reregistered(lambda: self.stack.answer(self.options()[1], 200))
        # The failed account and the online ones behind the same proxy; not the other proxy's.
        self.assertEqual(sent, {"acc1": 1, "acc2": 1, "acc3": 1, "far": 0})

    def test_unanswered_probe_is_repeated_with_backoff(self):
        self.start_probing(reg_probe_interval=2.0, reg_probe_max_interval=8.0)
        self.fail_refresh("acc1")
        self.advance(0.1)
        gaps = []
        for _ in range(4):
            probe = self.options()[-1]
            self.stack.timeout(probe)
            failed_at = self.clock.seconds()
            self.advance(8.1)
            gaps.append(round(self.options()[-1].at - failed_at))
        self.assertEqual(gaps, [4, 8, 8, 8])  # 2 s doubled at each unanswered probe, capped at 8 s

    def test_silent_destination_is_probed_and_its_answer_reregisters(self):
        self.start_probing()
        self.service.send_register("l_uuid", "acc1")  # never answered: the registrar is gone
        self.advance(SILENT_AFTER - 0.2)
        self.assertEqual(self.options(), [])
        self.advance(0.3)
        self.assertEqual(len(self.options()), 1)
        self.advance(SILENT_AFTER)  # the OPTIONS unanswered as long: down
        sent = self.reregistered(lambda: self.stack.answer(self.options()[0], 200))
        # acc1 is still in its transaction; the online accounts refresh at once.
        self.assertEqual(sent, {"acc1": 0, "acc2": 1, "acc3": 1, "far": 0})

    def test_silence_answered_at_once_reregisters_nothing(self):
        # A few lost datagrams, not an outage: nothing failed, nothing re-registered.
        self.start_probing()
        self.service.send_register("l_uuid", "acc1")
        self.advance(SILENT_AFTER + 0.1)
        sent = self.reregistered(lambda: self.stack.answer(self.options()[0], 200))
        self.assertEqual(sent, {"acc1": 0, "acc2": 0, "acc3": 0, "far": 0})

    def test_an_answered_register_ends_the_probing_too(self):
        self.start_probing()
        self.fail_refresh("acc1")
        self.advance(0.1)
        self.service.send_register("l_uuid", "acc2")
        sent = self.reregistered(lambda: self.stack.ok(self.registers("acc2")[-1]))
        self.assertEqual(sent, {"acc1": 1, "acc2": 0, "acc3": 0, "far": 0})
        self.assertEqual(self.service.prober.plan.probes, {})
        self.stack.answer(self.options()[0], 200)  # late: nothing more
        self.advance(0.2)
        self.assertEqual(len(self.registers("acc1")), 3)

    def test_probing_stops_when_no_account_is_left_there(self):
        self.start_probing(reg_probe_interval=2.0)
        self.fail_refresh("acc1")
        self.advance(0.1)
        for l_uuid in ("acc1", "acc2", "acc3"):
            self.service.remove(l_uuid)
        self.stack.timeout(self.options()[0])
        self.advance(60)
        self.assertEqual(len(self.options()), 1)
        self.assertEqual(self.service.prober.plan.probes, {})

    def test_off_switch(self):
        self.start_probing(reg_probe=False)
        self.fail_refresh("acc1")
        self.advance(60)
        self.assertEqual(self.options(), [])
        self.assertIsNone(self.service.prober)
