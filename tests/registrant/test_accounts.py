"""Accounts: our own table beside uacreg, a stable Call-ID per account, per-account
User-Agent, extra headers and From user, and live reload that keeps unchanged accounts.

The state machine runs on a task.Clock with the fake stack of
tests/support/registrant_harness.py, and a store in memory that also keeps our table
(StatefulStore). The stores themselves are tested in
test_store.py, against a real Kamailio registrar in test_interop_accounts.py.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_row
from tests.support.registrant_harness import CONTACT_ADDR, TICK, FakeStore, ServiceTestCase
from txuac.errors import InvalidRecord, StoreError
from txuac.registrant.protocol import build_register
from txuac.registrant.record import Flag, State, parse_extra_headers, record_from_row
from txuac.registrant.account import CSEQ_AHEAD
from txuac.registrant.store import EXT_DEFAULTS, AccountState
from txuac.registrant.store.writer import AccountStateWriter


def ext_row(l_uuid: str = "acc1", **columns) -> dict:
    """A uacreg row merged with its row of our table, as a store loads it."""
    return {**make_row(l_uuid), **EXT_DEFAULTS, **columns}


class StatefulStore(FakeStore):
    """FakeStore that also keeps our table: save_states() writes into the rows (as the SQL
    upsert does), and can be made to fail like a store that is down."""

    def __init__(self, rows=()):
        super().__init__([{**EXT_DEFAULTS, **row} for row in rows])
        self.saves: list[list[AccountState]] = []
        self.down = False

    def save_states(self, states):
        if self.down:
            return defer.fail(StoreError("saving into memory://uacreg failed: the store is down"))
        self.saves.append(list(states))
        for state in states:
            row = self.rows.get(state.l_uuid)
            if row is not None:
                row.update(call_id=state.call_id, cseq=state.cseq,
                           instance_id=row["instance_id"] or state.instance_id)
        return defer.succeed(None)

    def saved(self) -> list[AccountState]:
        return [state for batch in self.saves for state in batch]


# ---------------------------------------------------------------------------------------------
# The columns of our table in a record
# ---------------------------------------------------------------------------------------------

class ExtraHeadersTests(SynchronousTestCase):
    def test_one_header_per_line(self):
        self.assertEqual(parse_extra_headers("X-Tenant: 42\r\nP-Preferred-Identity: <sip:1@a.example>\n\n"),
                         (("X-Tenant", "42"), ("P-Preferred-Identity", "<sip:1@a.example>")))

    def test_refused(self):
        for text, reason in [
            ("X Bad: 1", "not a header name"),
            ("NoColon", "not a header name"),
            ("X-Empty:", "has no value"),
            ("X-A: 1\rVia: SIP/2.0/UDP evil", "control character"),  # CR injection inside a line
            ("X-A: a\x00b", "control character"),
            ("Via: SIP/2.0/UDP 1.2.3.4", "written by txuac"),
            ("v: SIP/2.0/UDP 1.2.3.4", "written by txuac"),  # compact form (RFC 3261 7.3.3)
            ("i: other-call-id", "written by txuac"),
        ]:
            with self.subTest(text=text):
                e = self.assertRaises(InvalidRecord, parse_extra_headers, text)
                self.assertIn(reason, str(e))
        for name in ("From", "To", "Call-ID", "CSeq", "Contact", "Expires", "Content-Length", "Authorization",
                     "proxy-authorization", "m", "l", "f", "t"):
            with self.subTest(name=name):
                self.assertRaises(InvalidRecord, parse_extra_headers, f"{name}: x")


class RecordColumnsTests(SynchronousTestCase):
    def test_filled_from_our_table(self):
        record = record_from_row(ext_row(user_agent="PBX/2", extra_headers="X-Tenant: 7", from_username="caller",
                                         outbound=1, instance_id="urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                                         reg_id=2, options_ping=1, call_id="abc@host", cseq=110), 0.0)
        self.assertEqual((record.user_agent, record.extra_headers, record.from_username, record.outbound,
                          record.instance_id, record.reg_id, record.options_ping, record.call_id, record.cseq),
                         ("PBX/2", (("X-Tenant", "7"),), "caller", True,
                          "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8", 2, True, "abc@host", 110))

    def test_defaults_without_a_row_of_ours(self):
        for row in (make_row(), ext_row()):
            record = record_from_row(row, 0.0)
            self.assertEqual((record.user_agent, record.extra_headers, record.from_username, record.outbound,
                              record.instance_id, record.reg_id, record.options_ping, record.call_id, record.cseq),
                             ("", (), "", False, "", 1, False, None, 0))

    def test_bad_values_never_cost_the_account(self):
        problems: list[str] = []
        record = record_from_row(ext_row(extra_headers="X-Ok: 1\nContact: <sip:evil@x>", user_agent="a\x07b",
                                         from_username="bad user", reg_id=0, outbound="yes",
                                         instance_id="not a urn", call_id="two words"), 0.0, problems=problems)
        self.assertEqual(record.l_uuid, "acc1")
        self.assertEqual((record.extra_headers, record.user_agent, record.from_username, record.reg_id,
                          record.outbound, record.instance_id, record.call_id), ((), "", "", 1, False, "", None))
        self.assertEqual(len(problems), 7, problems)
        self.assertIn("extra_headers skipped: line 2: Contact is written by txuac, not by extra_headers", problems)


class RegisterLayoutTests(SynchronousTestCase):
    def build(self, **columns):
        return build_register(record_from_row(ext_row(**columns), 0.0), CONTACT_ADDR, 3600, "txuac")

    def test_account_user_agent_wins(self):
        self.assertEqual(self.build().headers.get("User-Agent"), "txuac")
        self.assertEqual(self.build(user_agent="PBX/2").headers.get_all("User-Agent"), ["PBX/2"])

    def test_extra_headers_on_every_register(self):
        request = self.build(extra_headers="X-Tenant: 7\nP-Preferred-Identity: <sip:100@pbx.example>")
        self.assertEqual(request.headers.get("X-Tenant"), "7")
        self.assertEqual(request.headers.get("P-Preferred-Identity"), "<sip:100@pbx.example>")

    def test_from_user_differs_from_the_aor(self):
        """RFC 3261 10.2: a third-party registration: From names who registers, To the AOR."""
        request = self.build(from_username="operator")
        self.assertEqual(str(request.from_.uri), "sip:operator@sip.provider.example")
        self.assertEqual(str(request.to.uri), "sip:remote-acc1@sip.provider.example")
        plain = self.build()
        self.assertEqual(str(plain.from_.uri), str(plain.to.uri))


# ---------------------------------------------------------------------------------------------
# The state writer
# ---------------------------------------------------------------------------------------------

class AccountStateWriterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = StatefulStore([ext_row("a"), ext_row("b")])
        self.writer = AccountStateWriter(self.store, self.clock, delay=1.0, retry_delay=10.0)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_batched_latest_wins(self):
        self.writer.put(AccountState("a", "c1", 110, ""))
        self.writer.put(AccountState("b", "c2", 110, ""))
        self.writer.put(AccountState("a", "c1", 160, ""))
        self.assertEqual(self.store.saves, [])  # never written while the REGISTER goes out
        self.clock.advance(1.0)
        self.assertEqual(self.store.saves, [[AccountState("a", "c1", 160, ""), AccountState("b", "c2", 110, "")]])

    def test_store_down_logged_once_and_retried(self):
        self.store.down = True
        self.writer.put(AccountState("a", "c1", 110, ""))
        self.clock.advance(1.0)
        self.writer.put(AccountState("b", "c2", 110, ""))
        for _ in range(5):
            self.clock.advance(10.0)
        warnings = [formatEvent(e) for e in self.logged if "failed" in formatEvent(e)]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("retried every 10 s", warnings[0])
        self.assertEqual(self.writer.errors, 6)
        self.store.down = False
        self.clock.advance(10.0)
        self.assertEqual(sorted(s.l_uuid for s in self.store.saved()), ["a", "b"])
        self.assertIn("works again", formatEvent(self.logged[-1]))
        self.assertEqual(self.writer.pending, {})

    def test_flush_writes_at_once_and_gives_up_on_a_dead_store(self):
        self.writer.put(AccountState("a", "c1", 110, ""))
        self.successResultOf(self.writer.flush(5.0))
        self.assertEqual(len(self.store.saved()), 1)
        hanging = StatefulStore()
        hanging.save_states = lambda states: defer.Deferred()  # a store that never answers
        writer = AccountStateWriter(hanging, self.clock)
        writer.put(AccountState("b", "c2", 110, ""))
        d = writer.flush(5.0)
        self.assertNoResult(d)
        self.clock.advance(5.0)
        self.successResultOf(d)  # a clean stop does not hang on the store

    def test_store_without_save_states(self):
        writer = AccountStateWriter(FakeStore([make_row("a")]), self.clock)
        writer.put(AccountState("a", "c1", 110, ""))
        self.assertEqual(writer.pending, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


# ---------------------------------------------------------------------------------------------
# Stable Call-ID
# ---------------------------------------------------------------------------------------------

class StableCallIdTests(ServiceTestCase):
    def start_stateful(self, rows=None, **settings):
        store = StatefulStore(rows if rows is not None else [make_row("acc1")])
        return self.start(store=store, **settings)

    def refresh_cycles(self, count: int, granted: int = 100) -> list:
        """Answer ``count`` REGISTERs of acc1 with 200 and let each refresh go out."""
        sent = []
        for _ in range(count):
            pending = self.stack.pending()[-1]
            sent.append(pending)
            self.stack.ok(pending, granted)
            self.advance(granted, step=1)
        return sent

    def test_first_register_makes_and_stores_the_call_id(self):
        self.start_stateful()
        first = self.stack.sent[0].request
        self.assertEqual(first.cseq.number, 10)
        self.assertEqual(self.store.saves, [])  # not before the REGISTER: written a moment later
        self.advance(1.0)
        self.assertEqual(self.store.saved(), [AccountState("acc1", first.call_id, 10 + CSEQ_AHEAD, "")])

    def test_refreshes_reuse_it_and_write_rarely(self):
        self.start_stateful()
        sent = self.refresh_cycles(60)
        self.assertEqual({s.request.call_id for s in sent}, {sent[0].request.call_id})
        self.assertEqual([s.request.cseq.number for s in sent], list(range(10, 70)))
        # One write for the Call-ID, then one per CSEQ_AHEAD/2 CSeqs: always ahead of the CSeq used.
        marks = [state.cseq for state in self.store.saved()]
        self.assertEqual(marks, [110, 161])
        for s in sent:
            self.assertLess(s.request.cseq.number, max(m for m in marks if m - CSEQ_AHEAD <= s.request.cseq.number))

    def test_restart_goes_on_with_the_stored_call_id_above_its_cseq(self):
        self.start_stateful()
        sent = self.refresh_cycles(3)
        call_id = sent[0].request.call_id
        store = self.store
        self.service.stopService()
        for pending in self.stack.pending():
            self.stack.timeout(pending)
        self.assertEqual(store.rows["acc1"]["call_id"], call_id)
        self.start(store=store)  # a new service on the same table
        again = self.stack.sent[0].request
        self.assertEqual(again.call_id, call_id)
        self.assertEqual(again.cseq.number, 10 + CSEQ_AHEAD + 1)
        self.assertGreater(again.cseq.number, max(s.request.cseq.number for s in sent))

    def test_failures_keep_the_call_id(self):
        """A timeout, a 503 or a refused password: the registrar knows our binding by this
        Call-ID, the next attempt goes on with it, above every CSeq used."""
        self.start_stateful(reg_retry_interval=30)
        call_id = self.stack.sent[0].request.call_id
        self.stack.challenge(self.stack.sent[0])  # CSeq 11 carries the credentials
        self.stack.timeout(self.stack.sent[1])
        self.advance(40, step=1)
        after_timeout = self.stack.pending()[-1].request
        self.assertEqual((after_timeout.call_id, after_timeout.cseq.number), (call_id, 12))
        self.stack.answer(self.stack.pending()[-1], 503)
        self.advance(300, step=1)
        after_503 = self.stack.pending()[-1].request
        self.assertEqual((after_503.call_id, after_503.cseq.number), (call_id, 13))

    def test_a_refused_cseq_takes_a_fresh_call_id(self):
        for status in (400, 500):
            with self.subTest(status=status):
                self.start_stateful(reg_retry_interval=30)
                old = self.stack.sent[0].request.call_id
                self.stack.answer(self.stack.sent[0], status)
                self.advance(5000, step=5)  # a fatal failure: retried on its long interval
                fresh = self.stack.pending()[-1].request
                self.assertNotEqual(fresh.call_id, old)
                self.assertEqual(fresh.cseq.number, 10)
                self.advance(1.0)
                self.assertEqual(self.store.saved()[-1].call_id, fresh.call_id)
                self._stop()

    def test_store_down_never_holds_a_registration(self):
        self.start_stateful(rows=[make_row("acc1")], reg_retry_interval=30)
        self.store.down = True
        sent = self.refresh_cycles(5)
        self.assertEqual(self.service.status("acc1"), -2)  # the sixth REGISTER is out
        self.assertEqual(len({s.request.call_id for s in sent}), 1)
        self.store.down = False
        self.advance(20, step=1)
        self.assertEqual(self.store.saved()[-1].call_id, sent[0].request.call_id)

    def test_clean_stop_writes_what_is_pending(self):
        self.start_stateful()
        call_id = self.stack.sent[0].request.call_id
        self.stack.ok(self.stack.sent[0], 600)
        self.service.stopService()
        self.assertEqual(self.store.rows["acc1"]["call_id"], call_id)

    def test_kamailio_behaviour_with_reg_keep_callid_0(self):
        self.start_stateful(reg_keep_callid=False)
        sent = self.refresh_cycles(3)
        self.assertEqual(len({s.request.call_id for s in sent}), 3)
        self.assertEqual({s.request.cseq.number for s in sent}, {10})
        self.advance(2.0)
        self.assertEqual(self.store.saves, [])

    def test_an_instance_id_made_at_run_time_is_stored(self):
        """RFC 5626 4.1: made once per account (for outbound) and kept in our table."""
        self.start_stateful(rows=[make_row("acc1", reg_delay=5)])
        self.record().instance_id = "urn:uuid:00000000-0000-4000-8000-000000000001"
        self.advance(7.0)
        self.assertEqual(self.store.saved()[-1].instance_id, "urn:uuid:00000000-0000-4000-8000-000000000001")
        self.assertEqual(len(self.store.saves), 1)
        self.assertEqual(self.store.rows["acc1"]["instance_id"], "urn:uuid:00000000-0000-4000-8000-000000000001")

    def test_bad_extra_headers_logged_once_account_registers(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start_stateful(rows=[{**make_row("acc1"), "extra_headers": "X-Ok: 1\nCall-ID: forged",
                                   "user_agent": "PBX/9"}])
        lines = [formatEvent(e) for e in logged if e.get("l_uuid") == "acc1" and "extra_headers" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        request = self.stack.sent[0].request
        self.assertIsNone(request.headers.get("X-Ok"))
        self.assertEqual(request.headers.get("User-Agent"), "PBX/9")
        self.assertNotEqual(request.call_id, "forged")


# ---------------------------------------------------------------------------------------------
# Live reload
# ---------------------------------------------------------------------------------------------

class ReloadSemanticsTests(ServiceTestCase):
    def start_online(self, l_uuids=("acc1", "acc2"), **settings):
        self.start([make_row(l_uuid) for l_uuid in l_uuids], reload_delta=0, **settings)
        for sent in list(self.stack.pending()):
            self.stack.ok(sent, 600)
        self.assertEqual(self.service.counters()["regactive"], len(l_uuids))
        self.advance(100, step=1)

    def reload(self):
        self.assertEqual(self.successResultOf(self.service.reload()), 1)

    def sent_for(self, l_uuid: str) -> list:
        return [s for s in self.stack.sent if s.contact_user == l_uuid]

    def test_unchanged_accounts_keep_their_state(self):
        self.start_online()
        records = dict(self.service.records)
        due = {k: r.due_at for k, r in records.items()}
        count = len(self.stack.sent)
        self.reload()
        self.assertTrue(all(self.service.records[k] is v for k, v in records.items()))
        self.assertEqual({k: r.due_at for k, r in self.service.records.items()}, due)
        self.assertEqual(self.service.counters()["regactive"], 2)
        self.advance(10, step=1)
        self.assertEqual(len(self.stack.sent), count)  # nothing sent before the refresh is due

    def test_unchanged_account_keeps_its_register_in_flight(self):
        self.start([make_row("acc1")], reload_delta=0)
        self.reload()
        self.assertTrue(self.record().has(Flag.ONGOING))
        self.stack.ok(self.stack.sent[0], 600)
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertEqual(len(self.stack.sent), 1)

    def test_changed_credentials_reregister_at_once_with_the_same_call_id(self):
        self.start_online()
        old = self.record()
        before = self.sent_for("acc1")[-1].request
        self.store.rows["acc1"]["auth_password"] = "new-password"
        self.reload()
        new = self.record()
        self.assertIsNot(new, old)
        self.assertEqual(new.auth_password, "new-password")
        self.assertEqual(self.service.status("acc1"), 1)  # the binding is the same: still online
        self.advance(TICK)
        again = self.sent_for("acc1")[-1]
        self.assertEqual(again.expires, 3600)
        self.assertEqual(again.request.call_id, before.call_id)
        self.assertEqual(again.request.cseq.number, before.cseq.number + 1)
        self.stack.ok(again, 600)
        self.assertEqual(self.service.status("acc1"), 1)
        self.assertEqual([s.expires for s in self.sent_for("acc1")], [3600, 3600])  # no unREGISTER

    def test_moved_contact_unregisters_the_old_binding_first(self):
        self.start_online()
        before = self.sent_for("acc1")[-1].request
        self.store.rows["acc1"]["contact_user"] = "0211234567"
        self.reload()
        self.advance(TICK)
        unregister = self.stack.pending()[-1]
        self.assertEqual((unregister.contact_user, unregister.expires), ("acc1", 0))
        self.assertEqual(unregister.request.call_id, before.call_id)
        self.assertEqual(len(self.stack.pending()), 1)  # the new Contact waits for it
        self.stack.ok(unregister, 0)
        self.advance(TICK)
        register = self.stack.pending()[-1]
        self.assertEqual((register.contact_user, register.expires), ("0211234567", 3600))
        self.assertIn(";line=acc1", register.request.headers.get("Contact"))
        self.assertEqual(register.request.call_id, before.call_id)
        self.assertGreater(register.request.cseq.number, unregister.request.cseq.number)
        self.stack.ok(register, 600)
        self.assertEqual(self.service.status("acc1"), 1)

    def test_removed_account_is_unregistered_then_forgotten(self):
        self.start_online()
        del self.store.rows["acc2"]
        self.reload()
        self.assertNotIn("acc2", self.service.records)
        self.assertEqual(self.service.status("acc2"), -1)
        unregister = self.stack.pending()[-1]
        self.assertEqual((unregister.contact_user, unregister.expires), ("acc2", 0))
        self.stack.ok(unregister, 0)
        self.advance(2000, step=5)
        self.assertEqual([s.expires for s in self.sent_for("acc2")], [3600, 0])
        self.assertEqual(sorted(self.service.records), ["acc1"])

    def test_removed_while_registering_is_unregistered_after_the_reply(self):
        self.start([make_row("acc1"), make_row("acc2")], reload_delta=0)
        del self.store.rows["acc2"]
        self.reload()
        self.assertEqual(len(self.stack.pending()), 2)  # acc2's REGISTER is still out
        self.stack.ok(self.sent_for("acc2")[0], 600)
        unregister = self.sent_for("acc2")[-1]
        self.assertEqual(unregister.expires, 0)
        self.stack.ok(unregister, 0)
        self.assertNotIn("acc2", self.service.records)

    def test_changed_while_registering_waits_for_the_reply(self):
        self.start([make_row("acc1")], reload_delta=0)
        first = self.stack.sent[0]
        self.store.rows["acc1"]["expires"] = 1800
        self.reload()
        self.advance(1, step=TICK)
        self.assertEqual(len(self.stack.sent), 1)  # never two REGISTERs of one account at once
        self.stack.ok(first, 3600)
        self.advance(TICK)
        self.assertEqual(len(self.stack.sent), 2)
        self.assertEqual(self.stack.sent[1].expires, 1800)
        self.assertEqual(self.stack.sent[1].request.call_id, first.request.call_id)

    def test_new_account_scheduled_as_at_start(self):
        self.start_online()
        self.store.rows["acc3"] = make_row("acc3", reg_delay=5)
        self.reload()
        self.advance(4.9, step=TICK)
        self.assertEqual(self.sent_for("acc3"), [])
        self.advance(0.2, step=TICK)
        self.assertEqual(len(self.sent_for("acc3")), 1)

    def test_disabled_in_the_table_unregisters(self):
        self.start_online()
        self.store.rows["acc1"]["flags"] = 1
        self.reload()
        self.advance(TICK)
        self.assertEqual(self.sent_for("acc1")[-1].expires, 0)
        self.stack.ok(self.sent_for("acc1")[-1], 0)
        self.advance(2000, step=5)
        self.assertEqual(self.record().state(self.now()), State.DISABLED)
        self.assertEqual([s.expires for s in self.sent_for("acc1")], [3600, 0])

    def test_reload_brings_back_an_unregistered_account(self):
        """As Kamailio's reload: uac.reg_unregister leaves an account dormant until then."""
        self.start_online()
        self.service.send_unregister("acc1")
        self.stack.ok(self.stack.pending()[-1], 0)
        self.assertEqual(self.record().state(self.now()), State.DISABLED)
        self.reload()
        self.advance(TICK)
        self.assertEqual(self.sent_for("acc1")[-1].expires, 3600)

    def test_refresh_of_an_unchanged_row_changes_nothing(self):
        self.start_online()
        record = self.record()
        count = len(self.stack.sent)
        self.assertEqual(self.successResultOf(self.service.refresh("acc1")), 1)
        self.assertIs(self.record(), record)
        self.advance(1, step=TICK)
        self.assertEqual(len(self.stack.sent), count)

    def test_reload_log_counts(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start_online(("acc1", "acc2", "acc3"))
        del self.store.rows["acc3"]
        self.store.rows["acc2"]["expires"] = 60
        self.store.rows["acc4"] = make_row("acc4")
        self.reload()
        lines = [formatEvent(e) for e in logged if formatEvent(e).startswith("loaded ")]
        self.assertEqual(lines[-1], "loaded 3 registration accounts from memory://uacreg: 1 new, 1 changed, "
                                    "1 unchanged, 1 removed")
