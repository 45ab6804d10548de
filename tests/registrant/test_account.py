"""The account machine without a reactor: plain records, explicit ``now``, effects checked."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import uacreg_rows
from txuac.registrant import protocol
from txuac.registrant.account import (
    CSEQ_AHEAD,
    MAX_TOO_BRIEF,
    TRANSITIONS,
    AccountMachine,
    Arm,
    Emit,
    Persist,
    Send,
    Step,
)
from txuac.registrant.record import Flag, RegistrationRecord, State, record_from_row
from txuac.registrant.retry import FailureKind, RetryPolicy
from txuac.sip import make_response, parse_message
from txuac.sip.address import Address

KAMAILIO_BITS = Flag.DISABLED | Flag.ONGOING | Flag.ONLINE | Flag.AUTHSENT | Flag.INIT
CONTACT_ADDR = "192.0.2.10:5060"


def account(now: float = 100.0, **overrides) -> RegistrationRecord:
    return record_from_row(uacreg_rows(1, "sip:192.0.2.1:5060", **overrides)[0], now)


def machine(retry_interval: int = 30, keep_callid: bool = True) -> AccountMachine:
    return AccountMachine(RetryPolicy(retry_interval), random.Random(7), CONTACT_ADDR, 90, keep_callid)


def answer(send: Send, status: int, *headers: tuple[str, str]):
    """The final response to the REGISTER of ``send``, as it arrives from the wire."""
    return parse_message(bytes(make_response(send.request, status, to_tag="srv", extra_headers=list(headers))))


def only(effects: list, kind: type):
    found = [effect for effect in effects if isinstance(effect, kind)]
    assert len(found) == 1, effects
    return found[0]


def of_kind(effects: list, kind: type) -> list:
    return [effect for effect in effects if isinstance(effect, kind)]


class TableTests(SynchronousTestCase):

    def test_every_step_changes_only_kamailios_bits(self):
        self.assertEqual(set(TRANSITIONS), set(Step))
        for step, transition in TRANSITIONS.items():
            with self.subTest(step=step):
                self.assertEqual((transition.set | transition.clear) & ~KAMAILIO_BITS, 0)
                self.assertEqual(transition.set & transition.clear, 0)
                self.assertNotEqual(transition.set | transition.clear, 0)

    def test_the_end_of_a_cycle_clears_ongoing_and_authsent(self):
        for step in (Step.ONLINE, Step.TOO_BRIEF, Step.UNLISTED, Step.UNREGISTERED, Step.RETRIED,
                     Step.DISABLED_BY_FAILURE):
            with self.subTest(step=step):
                self.assertEqual(TRANSITIONS[step].clear & (Flag.ONGOING | Flag.AUTHSENT),
                                 Flag.ONGOING | Flag.AUTHSENT)


class CycleTests(SynchronousTestCase):

    def setUp(self):
        self.machine = machine()
        self.record = account()

    def send(self, now: float = 100.0) -> Send:
        return only(self.machine.due(self.record, now), Send)

    def test_due_sends_persists_and_emits(self):
        effects = self.machine.due(self.record, 100.0)
        self.assertEqual([type(e) for e in effects], [Persist, Emit, Send])
        persist, emit, send = effects
        self.assertEqual(send.request.cseq.number, 10)
        self.assertEqual(send.request.call_id, self.record.call_id)
        self.assertEqual((send.expires, send.too_brief), (600, 0))
        self.assertEqual(persist.state.cseq, 10 + CSEQ_AHEAD)
        self.assertEqual((emit.previous, emit.state, emit.at), (State.WAITING, State.REGISTERING, 100.0))
        self.assertEqual(self.record.flags, Flag.INIT | Flag.ONGOING)
        self.assertEqual(self.record.sent_at, 100.0)

    def test_the_next_register_persists_nothing_while_the_mark_is_ahead(self):
        self.send()
        self.machine.replied(self.record, answer(self.send(), 200), protocol.Outcome(protocol.OutcomeKind.UNLISTED),
                             600, 0, 101.0)
        effects = self.machine.due(self.record, 200.0)
        self.assertEqual(of_kind(effects, Persist), [])
        self.assertEqual(only(effects, Send).request.cseq.number, 12)

    def test_challenged_takes_the_cseq_of_the_retry(self):
        send = self.send()
        self.assertEqual(send.call_id, send.request.call_id)
        self.machine.challenged(self.record, send.call_id, 11)
        self.assertEqual(self.record.flags, Flag.INIT | Flag.ONGOING | Flag.AUTHSENT)
        self.assertEqual(self.record.cseq, 11)
        self.machine.challenged(self.record, "another-call", 50)
        self.assertEqual(self.record.cseq, 11)

    def test_online_arms_the_refresh_and_emits_with_latency(self):
        send = self.send(100.0)
        response = answer(send, 200, ("Contact", f"<sip:{self.record.l_uuid}@{CONTACT_ADDR}>;expires=600"))
        outcome = protocol.interpret(self.record, response, 600)
        effects = self.machine.replied(self.record, response, outcome, 600, 0, 100.5)
        self.assertEqual(self.record.flags, Flag.INIT | Flag.ONLINE)  # 20, as Kamailio shows an online account
        self.assertEqual(self.record.expires_at, 700.0)
        arm = only(effects, Arm)
        self.assertTrue(100.0 + 300 <= arm.at < 700.0 - 90, arm.at)
        self.assertEqual(self.record.due_at, arm.at)
        emit = only(effects, Emit)
        self.assertEqual((emit.state, emit.latency, emit.status), (State.ONLINE, 0.5, 200))
        self.assertEqual(self.record.status(101.0), 1)

    def test_423_asks_again_then_fails(self):
        send = self.send()
        for too_brief in range(MAX_TOO_BRIEF - 1):
            response = answer(send, 423, ("Min-Expires", "1200"))
            effects = self.machine.replied(self.record, response, protocol.interpret(self.record, response, 600),
                                           send.expires, send.too_brief, 101.0)
            send = only(effects, Send)
            self.assertEqual((send.expires, send.too_brief), (1200, too_brief + 1))
            self.assertEqual(self.record.flags, Flag.INIT | Flag.ONGOING)
        response = answer(send, 423, ("Min-Expires", "1200"))
        effects = self.machine.replied(self.record, response, protocol.interpret(self.record, response, 1200),
                                       send.expires, send.too_brief, 102.0)
        self.assertEqual(of_kind(effects, Send), [])
        self.assertEqual(self.record.expires, 600)  # back to the table's value
        self.assertIn(f"{MAX_TOO_BRIEF} times in a row", only(effects, Emit).reason)

    def test_a_timeout_is_retried_later(self):
        self.send()
        effects = self.machine.failed(self.record, "no answer (timeout)", None, 132.0, FailureKind.TEMPORARY)
        self.assertEqual(self.record.flags, Flag.INIT)
        arm = only(effects, Arm)
        self.assertTrue(132.0 + 24 <= arm.at <= 132.0 + 36, arm.at)
        emit = only(effects, Emit)
        self.assertEqual((emit.state, emit.alert, emit.kind), (State.FAILED, False, FailureKind.TEMPORARY))
        self.assertEqual(self.record.status(133.0), -99)

    def test_reg_retry_interval_0_disables_as_kamailio(self):
        self.machine = machine(retry_interval=0)
        self.send()
        effects = self.machine.failed(self.record, "no answer (timeout)", None, 132.0)
        self.assertEqual(self.record.flags, Flag.INIT | Flag.DISABLED)
        self.assertEqual(of_kind(effects, Arm), [])
        self.assertTrue(only(effects, Emit).alert)

    def test_a_refused_cseq_drops_the_call_id(self):
        send = self.send()
        response = answer(send, 400)
        self.machine.replied(self.record, response, protocol.interpret(self.record, response, 600), 600, 0, 101.0)
        self.assertIsNone(self.record.call_id)
        self.assertEqual(only(self.machine.due(self.record, 200.0), Send).request.cseq.number, 10)

    def test_without_keep_callid_every_register_is_kamailios(self):
        self.machine = machine(keep_callid=False)
        effects = self.machine.due(self.record, 100.0)
        self.assertEqual(of_kind(effects, Persist), [])
        self.assertEqual(only(effects, Send).request.cseq.number, 10)

    def test_unregister_sends_expires_0_and_goes_dormant(self):
        self.record.flags = Flag.INIT | Flag.ONLINE
        self.record.expires_at = 1000.0
        send = only(self.machine.unregister(self.record, 100.0), Send)
        self.assertEqual((send.expires, self.record.expires), (0, 0))
        self.assertEqual(send.request.headers.get("Expires"), "0")
        response = answer(send, 200)
        effects = self.machine.replied(self.record, response, protocol.interpret(self.record, response, 0), 0, 0,
                                       100.2)
        # As Kamailio leaves it: disabled (uac_reg_status -3) with expires 0.
        self.assertEqual(self.record.flags, Flag.INIT | Flag.DISABLED)
        self.assertEqual((self.record.status(101.0), self.record.state(101.0)), (-3, State.DISABLED))
        self.assertEqual(of_kind(effects, Arm), [])
        self.assertEqual(only(effects, Emit).reason, "unregistered")

    def test_init_is_set_by_the_scheduler_only(self):
        """Kamailio's timer sets INIT once reg_delay has passed; a REGISTER asked for does not."""
        self.machine.send(self.record, 600, 100.0)
        self.assertFalse(self.record.has(Flag.INIT))
        self.machine.due(self.record, 101.0)
        self.assertTrue(self.record.has(Flag.INIT))


class OperationTests(SynchronousTestCase):

    def setUp(self):
        self.machine = machine()
        self.record = account()

    def test_disable_and_enable_rearm_at_once(self):
        effects = self.machine.set_disabled(self.record, True, 150.0)
        self.assertEqual(self.record.flags, Flag.DISABLED)
        self.assertEqual(only(effects, Arm).at, 150.0)
        self.assertEqual(only(effects, Emit).state, State.DISABLED)
        self.record.last_failure = "403 Forbidden"
        effects = self.machine.set_disabled(self.record, False, 160.0)
        self.assertEqual((self.record.flags, self.record.last_failure), (0, None))
        self.assertEqual(only(effects, Emit).reason, "enabled")

    def test_revive_brings_back_a_dormant_account(self):
        self.record.expires = 0
        self.record.flags = Flag.DISABLED
        effects = self.machine.revive(self.record, 200.0)
        self.assertEqual((self.record.expires, self.record.flags), (600, 0))
        self.assertEqual({arm.at for arm in of_kind(effects, Arm)}, {200.0})

    def test_revive_leaves_a_disabled_row_disabled(self):
        record = account(flags=1)
        self.assertEqual(self.machine.revive(record, 200.0), [])
        self.assertEqual(record.flags, Flag.DISABLED)

    def test_flow_lost_brings_the_register_forward_only(self):
        self.record.due_at = 500.0
        self.assertEqual(self.machine.flow_lost(self.record, 120.0), [Arm(self.record, 120.0)])
        self.assertEqual(self.machine.flow_lost(self.record, 130.0), [])

    def test_hold_then_take_over_keeps_a_binding_that_stays(self):
        old, new = account(), account()
        old.flags, old.expires_at, old.call_id, old.cseq = Flag.ONLINE, 900.0, "kept-call", 42
        self.machine.hold(new)
        self.assertEqual(new.flags, Flag.ONGOING)
        effects = self.machine.take_over(old, new, True, 300.0)
        self.assertEqual(new.flags, Flag.ONLINE)
        self.assertEqual((new.call_id, new.cseq, new.expires_at), ("kept-call", 42, 900.0))
        self.assertEqual(effects, [Arm(new, 300.0)])

    def test_take_over_of_a_binding_that_moves_starts_offline(self):
        old, new = account(), account()
        old.flags, old.expires_at = Flag.ONLINE, 900.0
        self.machine.hold(new)
        self.machine.take_over(old, new, False, 300.0)
        self.assertEqual(new.flags, 0)
        self.assertIsNone(new.expires_at)


class GainedTests(SynchronousTestCase):
    """An account taken from another node (a cluster takeover), read again from the store."""

    OTHERS = ("192.0.2.20:5060", CONTACT_ADDR, "192.0.2.30:5060")  # ours among them: as a fleet lists them

    def setUp(self):
        self.machine = machine()

    def test_the_first_register_goes_on_cseq_ahead_above_the_stored_mark(self):
        """The previous owner's newer mark may not have been written (batched, never waited
        for) before it was killed or frozen: it may have used CSeqs up to CSEQ_AHEAD above the
        stored one, and a CSeq not above them is ignored by the registrar (RFC 3261 10.3 step 7)."""
        record = account(call_id="kept-call-id", cseq=212)
        reservation = self.machine.gained(record, ())
        # The mark above that first REGISTER, for the service to write before sending it:
        # the next taker reads it even if this node is killed right after the send.
        self.assertEqual([(p.state.call_id, p.state.cseq) for p in reservation],
                         [("kept-call-id", 212 + CSEQ_AHEAD + 1 + CSEQ_AHEAD)])
        effects = self.machine.due(record, 100.0)
        send = only(effects, Send)
        self.assertEqual((send.request.call_id, send.request.cseq.number), ("kept-call-id", 212 + CSEQ_AHEAD + 1))
        self.assertEqual(of_kind(effects, Persist), [])  # reserved already

    def test_nothing_to_reserve_without_a_stored_call_id(self):
        self.assertEqual(self.machine.gained(account(), ()), [])

    def test_no_call_id_stored_starts_a_new_one_at_10(self):
        record = account()
        self.machine.gained(record, self.OTHERS)
        self.assertEqual(only(self.machine.due(record, 100.0), Send).request.cseq.number, 10)

    def test_a_mark_near_the_cseq_limit_takes_a_new_call_id(self):
        record = account(call_id="kept-call-id", cseq=2**31 - 1 - 2 * CSEQ_AHEAD)
        self.assertEqual(self.machine.gained(record, ()), [])
        send = only(self.machine.due(record, 100.0), Send)
        self.assertNotEqual(send.request.call_id, "kept-call-id")
        self.assertEqual(send.request.cseq.number, 10)

    def test_the_contact_as_every_other_node_registered_it_is_removed_never_ours(self):
        record = account()
        self.machine.gained(record, self.OTHERS, "sip:uuid00000@192.0.2.40:5060")
        self.assertEqual(record.stale_contacts, ("sip:uuid00000@192.0.2.20:5060", "sip:uuid00000@192.0.2.30:5060",
                                                 "sip:uuid00000@192.0.2.40:5060"))
        contacts = only(self.machine.due(record, 100.0), Send).request.contacts
        self.assertEqual([(str(c.uri), c.expires) for c in contacts],
                         [(f"sip:uuid00000@{CONTACT_ADDR}", None), ("sip:uuid00000@192.0.2.20:5060", 0),
                          ("sip:uuid00000@192.0.2.30:5060", 0), ("sip:uuid00000@192.0.2.40:5060", 0)])

    def test_the_bound_contact_is_not_repeated(self):
        record = account(contact_user="0211234567")
        self.machine.gained(record, self.OTHERS, "sip:0211234567@192.0.2.30:5060;line=uuid00000")
        self.assertEqual(record.stale_contacts, ("sip:0211234567@192.0.2.20:5060;line=uuid00000",
                                                 "sip:0211234567@192.0.2.30:5060;line=uuid00000"))

    def test_a_row_with_its_own_contact_addr_has_the_same_contact_on_every_node(self):
        record = account(contact_addr="198.51.100.7:5080")
        self.machine.gained(record, self.OTHERS, "sip:uuid00000@198.51.100.7:5080")
        self.assertEqual(record.stale_contacts, ())

    def test_the_first_2xx_clears_them(self):
        record = account()
        self.machine.gained(record, self.OTHERS)
        send = only(self.machine.due(record, 100.0), Send)
        self.machine.replied(record, answer(send, 200), protocol.Outcome(protocol.OutcomeKind.ONLINE, granted=600),
                             600, 0, 100.5)
        self.assertEqual(record.stale_contacts, ())
        self.assertEqual(len(only(self.machine.due(record, 700.0), Send).request.contacts), 1)


class SocketTests(SynchronousTestCase):

    def test_the_socket_is_parsed_once_when_loaded(self):
        self.assertEqual(account(socket="tcp:127.0.0.1:5070").source, Address("tcp", "127.0.0.1", 5070))
        self.assertIsNone(account().source)
