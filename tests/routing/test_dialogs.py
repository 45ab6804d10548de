"""Dialog tracking: creation, early/confirmed/forked dialogs, matching in both directions,
BYE and timeouts, variables, a full table, CSeq shifting, hostile messages."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import SIPParseError, TxuacError
from txuac.routing.dialogs import (
    DEFAULT_DIALOG_TIMEOUT,
    DialogError,
    DialogState,
    DialogTable,
    DialogTableFull,
    EndReason,
)
from txuac.routing.restore import DIALOG_VARIABLES, Direction, dialog_restore
from txuac.routing.replace import FROM
from txuac.sip import parse_message

CALL_ID = "a84b4c76e66710@pc33.atlanta.com"
ALICE_TAG = "1928301774"
BOB_TAG = "a6c85cf"
DOWN, UP = Direction.DOWNSTREAM, Direction.UPSTREAM


def request(method, cseq, from_tag=ALICE_TAG, to_tag=None, upstream=False, call_id=CALL_ID,
            cseq_method=None, extra=""):
    """A request as on the wire; ``upstream``: from Bob to Alice (From/To swapped)."""
    alice = "Alice <sip:alice@atlanta.com>"
    bob = "Bob <sip:bob@biloxi.com>"
    from_addr, to_addr = (bob, alice) if upstream else (alice, bob)
    uri = "sip:alice@pc33.atlanta.com" if upstream else "sip:bob@biloxi.com"
    from_line = f"From: {from_addr}" + (f";tag={from_tag}" if from_tag else "")
    to_line = f"To: {to_addr}" + (f";tag={to_tag}" if to_tag else "")
    cseq_line = f"CSeq: {cseq} {cseq_method or method}" if cseq is not None else ""
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        to_line,
        from_line,
        f"Call-ID: {call_id}" if call_id else "",
        cseq_line,
        "Contact: <sip:alice@pc33.atlanta.com>",
        extra,
        "Content-Length: 0",
    ]
    return parse_message(("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode())


def response(status, cseq, method="INVITE", to_tag=BOB_TAG, from_tag=ALICE_TAG, upstream=False):
    alice = "Alice <sip:alice@atlanta.com>"
    bob = "Bob <sip:bob@biloxi.com>"
    from_addr, to_addr = (bob, alice) if upstream else (alice, bob)
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        f"To: {to_addr}" + (f";tag={to_tag}" if to_tag else ""),
        f"From: {from_addr};tag={from_tag}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def garbled(message, cseq_text, add=False):
    """``message`` with a CSeq the parser would refuse (a script or a buggy edit wrote it)."""
    if add:
        message.headers.add("CSeq", cseq_text)
    else:
        message.headers.set("CSeq", cseq_text)
    return message


def invite(cseq=314159):
    return request("INVITE", cseq)


def confirmed(table, now=0.0):
    dialog = table.create(invite(), now)
    table.on_response(response(180, 314159), now + 1)
    table.on_response(response(200, 314159), now + 2)
    return dialog


class CreationTests(SynchronousTestCase):
    def test_initial_invite_creates_early_dialog(self):
        table = DialogTable()
        dialog = table.create(invite(), 10.0)
        self.assertEqual((dialog.call_id, dialog.caller_tag), (CALL_ID, ALICE_TAG))
        self.assertIs(dialog.state, DialogState.EARLY)
        self.assertEqual(dialog.created_at, 10.0)
        self.assertIsNone(dialog.confirmed_at)
        self.assertIsNone(dialog.callee_tag)
        self.assertEqual(dialog.invite_cseq, 314159)
        self.assertEqual(dialog.last_cseq, {DOWN: 314159, UP: None})
        self.assertIs(table.get(CALL_ID, ALICE_TAG), dialog)
        self.assertIs(table.by_did(dialog.did), dialog)
        self.assertEqual(len(table), 1)

    def test_retransmitted_or_resent_invite_gives_same_dialog(self):
        table = DialogTable()
        dialog = table.create(invite(), 0.0)
        self.assertIs(table.create(invite(), 1.0), dialog)
        self.assertIs(table.create(invite(314160), 2.0), dialog)
        self.assertEqual(len(table), 1)

    def test_distinct_dialogs_get_distinct_dids(self):
        table = DialogTable()
        first = table.create(invite(), 0.0)
        second = table.create(request("INVITE", 1, from_tag="other"), 0.0)
        self.assertNotEqual(first.did, second.did)
        self.assertEqual(len(table), 2)

    def test_refused_requests(self):
        table = DialogTable()
        for message in (request("BYE", 1), request("INVITE", 1, to_tag=BOB_TAG),
                        request("INVITE", 1, from_tag=None), request("INVITE", 1, call_id=None),
                        request("INVITE", None), garbled(request("INVITE", 1), "banana INVITE"),
                        garbled(request("INVITE", 1), "1 INVITE", add=True)):
            self.assertRaises(DialogError, table.create, message, 0.0)
        self.assertEqual(len(table), 0)

    def test_bad_settings(self):
        self.assertRaises(DialogError, DialogTable, max_dialogs=0)
        self.assertRaises(DialogError, DialogTable, dialog_timeout=-1)

    def test_kamailio_default_timeout(self):
        self.assertEqual(DialogTable().dialog_timeout, DEFAULT_DIALOG_TIMEOUT)
        self.assertEqual(DEFAULT_DIALOG_TIMEOUT, 43200)


class EarlyAndConfirmedTests(SynchronousTestCase):
    def test_100_without_tag_changes_nothing(self):
        table = DialogTable()
        dialog = table.create(invite(), 0.0)
        self.assertIsNone(table.on_response(response(100, 314159, to_tag=None), 1.0))
        self.assertEqual(dialog.early_tags, [])
        self.assertIs(dialog.state, DialogState.EARLY)

    def test_180_then_200_confirms(self):
        table = DialogTable()
        dialog = table.create(invite(), 0.0)
        table.on_response(response(180, 314159), 1.0)
        self.assertEqual(dialog.early_tags, [BOB_TAG])
        self.assertIs(dialog.state, DialogState.EARLY)
        self.assertIsNone(dialog.callee_tag)
        table.on_response(response(200, 314159), 2.0)
        self.assertIs(dialog.state, DialogState.CONFIRMED)
        self.assertEqual(dialog.callee_tag, BOB_TAG)
        self.assertEqual(dialog.confirmed_at, 2.0)

    def test_forking_the_2xx_tag_wins(self):
        table = DialogTable()
        dialog = table.create(invite(), 0.0)
        table.on_response(response(180, 314159, to_tag="fork1"), 1.0)
        table.on_response(response(183, 314159, to_tag="fork2"), 1.5)
        table.on_response(response(180, 314159, to_tag="fork1"), 1.6)
        self.assertEqual(dialog.early_tags, ["fork1", "fork2"])
        # PRACK/UPDATE on either early leg matches.
        self.assertEqual(table.match(request("PRACK", 314160, to_tag="fork1")), (dialog, DOWN))
        self.assertEqual(table.match(request("UPDATE", 1, from_tag="fork2", to_tag=ALICE_TAG, upstream=True)),
                         (dialog, UP))
        table.on_response(response(200, 314159, to_tag="fork2"), 2.0)
        self.assertEqual(dialog.callee_tag, "fork2")
        # Another fork's 2xx afterwards does not take over.
        table.on_response(response(200, 314159, to_tag="fork1"), 2.1)
        self.assertEqual(dialog.callee_tag, "fork2")
        self.assertIsNone(table.match(request("BYE", 314160, to_tag="fork1")))
        self.assertEqual(table.match(request("BYE", 314160, to_tag="fork2")), (dialog, DOWN))

    def test_2xx_without_to_tag_does_not_confirm(self):
        table = DialogTable()
        dialog = table.create(invite(), 0.0)
        table.on_response(response(200, 314159, to_tag=None), 1.0)
        self.assertIs(dialog.state, DialogState.EARLY)

    def test_non_2xx_final_ends_early_dialog(self):
        table = DialogTable(linger=5)
        dialog = table.create(invite(), 0.0)
        table.on_response(response(180, 314159), 1.0)
        self.assertIs(table.on_response(response(486, 314159), 2.0), dialog)
        self.assertIs(dialog.state, DialogState.TERMINATED)
        self.assertIs(dialog.end_reason, EndReason.REJECTED)
        self.assertEqual(dialog.ended_at, 2.0)
        self.assertEqual(table.expire(6.9), [])
        self.assertEqual(len(table), 1)
        self.assertEqual(table.expire(7.0), [])
        self.assertEqual(len(table), 0)
        # A new INVITE of the same caller after that is a new dialog.
        self.assertIsNot(table.create(invite(), 8.0), dialog)

    def test_reinvite_failure_keeps_confirmed_dialog(self):
        table = DialogTable()
        dialog = confirmed(table)
        self.assertIsNone(table.on_response(response(491, 314160), 5.0))
        self.assertIs(dialog.state, DialogState.CONFIRMED)

    def test_replies_to_other_methods_ignored(self):
        table = DialogTable()
        dialog = table.create(invite(), 0.0)
        table.on_response(response(200, 1, method="OPTIONS"), 1.0)
        table.on_response(response(404, 1, method="OPTIONS"), 1.0)
        self.assertIs(dialog.state, DialogState.EARLY)

    def test_unknown_dialog_reply_ignored(self):
        self.assertIsNone(DialogTable().on_response(response(200, 1), 0.0))


class MatchTests(SynchronousTestCase):
    def test_both_directions(self):
        table = DialogTable()
        dialog = confirmed(table)
        self.assertEqual(table.match(request("INFO", 314160, to_tag=BOB_TAG)), (dialog, DOWN))
        self.assertEqual(table.match(request("INFO", 1, from_tag=BOB_TAG, to_tag=ALICE_TAG, upstream=True)),
                         (dialog, UP))

    def test_not_in_dialog(self):
        table = DialogTable()
        confirmed(table)
        for message in (
            request("INFO", 2),  # no To tag
            request("INFO", 2, to_tag="stranger"),
            request("INFO", 2, from_tag="stranger", to_tag=ALICE_TAG, upstream=True),
            request("INFO", 2, to_tag=BOB_TAG, call_id="other@host"),
            request("INFO", 2, from_tag=None, to_tag=BOB_TAG),
            request("INFO", 2, to_tag=BOB_TAG, call_id=None),
        ):
            self.assertIsNone(table.match(message))
            self.assertIsNone(table.on_request(message, 3.0))

    def test_on_request_tracks_cseq_per_direction(self):
        table = DialogTable()
        dialog = confirmed(table)
        table.on_request(request("ACK", 314159, to_tag=BOB_TAG), 3.0)
        self.assertEqual(dialog.last_cseq, {DOWN: 314159, UP: None})
        table.on_request(request("INVITE", 314160, to_tag=BOB_TAG), 4.0)
        table.on_request(request("INFO", 7, from_tag=BOB_TAG, to_tag=ALICE_TAG, upstream=True), 5.0)
        table.on_request(request("CANCEL", 314160, to_tag=BOB_TAG), 6.0)
        self.assertEqual(dialog.last_cseq, {DOWN: 314160, UP: 7})
        self.assertEqual(dialog.last_request_at, 6.0)

    def test_garbage_cseq_still_matches_without_recording(self):
        table = DialogTable()
        dialog = confirmed(table)
        message = garbled(request("INFO", 2, to_tag=BOB_TAG), "banana INFO")
        self.assertEqual(table.on_request(message, 3.0), (dialog, DOWN))
        self.assertEqual(dialog.last_cseq[DOWN], 314159)

    def test_malformed_from_or_to_never_matches(self):
        table = DialogTable()
        confirmed(table)
        message = request("INFO", 2, to_tag=BOB_TAG)
        message.headers.set("From", "<sip:alice@atlanta.com;tag=x")  # unterminated
        self.assertIsNone(table.match(message))
        message = request("INFO", 2, to_tag=BOB_TAG)
        message.headers.add("To", "<sip:carol@chicago.com>;tag=z")  # repeated To
        self.assertIsNone(table.match(message))


class TerminationTests(SynchronousTestCase):
    def test_bye_downstream(self):
        table = DialogTable(linger=32)
        dialog = confirmed(table)
        self.assertEqual(table.on_request(request("BYE", 314160, to_tag=BOB_TAG), 100.0), (dialog, DOWN))
        self.assertIs(dialog.state, DialogState.TERMINATED)
        self.assertIs(dialog.end_reason, EndReason.BYE)
        self.assertEqual(dialog.ended_at, 100.0)
        # A retransmission still matches while lingering, without changing anything.
        self.assertEqual(table.on_request(request("BYE", 314160, to_tag=BOB_TAG), 101.0), (dialog, DOWN))
        self.assertEqual(dialog.ended_at, 100.0)
        self.assertEqual(table.next_deadline(), 132.0)
        self.assertEqual(table.expire(131.9), [])
        self.assertIsNotNone(table.match(request("BYE", 314160, to_tag=BOB_TAG)))
        self.assertEqual(table.expire(132.0), [])  # already reported when the BYE came
        self.assertIsNone(table.match(request("BYE", 314160, to_tag=BOB_TAG)))
        self.assertEqual(len(table), 0)
        self.assertIsNone(table.by_did(dialog.did))

    def test_bye_upstream(self):
        table = DialogTable()
        dialog = confirmed(table)
        found = table.on_request(request("BYE", 1, from_tag=BOB_TAG, to_tag=ALICE_TAG, upstream=True), 50.0)
        self.assertEqual(found, (dialog, UP))
        self.assertIs(dialog.end_reason, EndReason.BYE)
        self.assertEqual(dialog.last_cseq[UP], 1)

    def test_confirmed_timeout_counts_from_last_request(self):
        table = DialogTable(dialog_timeout=100)
        dialog = confirmed(table)  # confirmed at 2.0
        self.assertEqual(table.next_deadline(), 102.0)
        table.on_request(request("INFO", 314160, to_tag=BOB_TAG), 50.0)
        self.assertEqual(table.next_deadline(), 150.0)
        self.assertEqual(table.expire(149.0), [])
        self.assertEqual(table.expire(150.0), [dialog])
        self.assertIs(dialog.end_reason, EndReason.TIMEOUT)
        self.assertEqual(table.expire(151.0), [])

    def test_early_timeout(self):
        table = DialogTable(early_timeout=30, linger=1)
        dialog = table.create(invite(), 10.0)
        table.on_response(response(180, 314159), 11.0)
        self.assertEqual(table.expire(39.9), [])
        self.assertEqual(table.expire(40.0), [dialog])
        self.assertIs(dialog.end_reason, EndReason.EARLY_TIMEOUT)
        # A late 2xx does not revive it.
        table.on_response(response(200, 314159), 40.5)
        self.assertIs(dialog.state, DialogState.TERMINATED)
        table.expire(41.0)
        self.assertEqual(len(table), 0)
        self.assertIsNone(table.next_deadline())

    def test_full_table_refuses_with_clear_error(self):
        table = DialogTable(max_dialogs=2, linger=1)
        table.create(request("INVITE", 1, from_tag="t1"), 0.0)
        table.create(request("INVITE", 1, from_tag="t2"), 0.0)
        error = self.assertRaises(DialogTableFull, table.create, request("INVITE", 1, from_tag="t3"), 0.0)
        self.assertIn("full", str(error))
        self.assertIn("2", str(error))
        self.assertIsInstance(error, TxuacError)
        # An existing dialog's retransmission is still answered.
        self.assertIsNotNone(table.create(request("INVITE", 1, from_tag="t1"), 0.0))
        # Room comes back once a dialog is gone.
        table.on_response(response(603, 1, from_tag="t1"), 1.0)
        self.assertRaises(DialogTableFull, table.create, request("INVITE", 1, from_tag="t3"), 1.5)
        table.expire(2.0)
        table.create(request("INVITE", 1, from_tag="t3"), 2.0)
        self.assertEqual(len(table), 2)


class VariableTests(SynchronousTestCase):
    def test_set_get_delete(self):
        dialog = DialogTable().create(invite(), 0.0)
        self.assertIsNone(dialog.get_var("x"))
        dialog.set_var("x", "1")
        self.assertEqual(dialog.get_var("x"), "1")
        dialog.set_var("x", "")
        self.assertEqual(dialog.get_var("x"), "")
        dialog.set_var("x", None)
        self.assertIsNone(dialog.get_var("x"))
        dialog.set_var("x", None)  # deleting an unset variable is fine
        self.assertEqual(dialog.variables, {})

    def test_only_strings(self):
        dialog = DialogTable().create(invite(), 0.0)
        self.assertRaises(DialogError, dialog.set_var, "x", 1)
        self.assertRaises(DialogError, dialog.set_var, "", "v")
        self.assertRaises(DialogError, dialog.set_var, None, "v")

    def test_restore_variables_round_trip(self):
        table = DialogTable()
        dialog = confirmed(table)
        fu, funew, fdp, fdpnew = DIALOG_VARIABLES[FROM]
        dialog.update_vars({fu: "sip:alice@atlanta.com", funew: "sip:anonymous@anonymous.invalid",
                            fdp: "Alice", fdpnew: ""})
        bye = request("BYE", 1, from_tag=BOB_TAG, to_tag=ALICE_TAG, upstream=True)
        bye.headers.set("To", "<sip:anonymous@anonymous.invalid>;tag=" + ALICE_TAG)
        found, direction = table.match(bye)
        restore = dialog_restore(found.variables, bye, direction)
        self.assertTrue(restore.restored)
        self.assertIn("sip:alice@atlanta.com", restore.rewrites[0].value)
        self.assertEqual(restore.rewrites[0].header, "To")


class CSeqShiftTests(SynchronousTestCase):
    """uac_auth resent a request of one direction with CSeq + 1: later ones follow."""

    def setUp(self):
        self.table = DialogTable()
        self.dialog = confirmed(self.table)

    def cseq(self, message):
        return (message.cseq.number, message.cseq.method)

    def test_no_offset_no_change(self):
        bye = request("BYE", 314160, to_tag=BOB_TAG)
        before = bytes(bye)
        self.dialog.shift_request(bye, DOWN)
        self.assertEqual(bytes(bye), before)

    def test_initial_invite_authenticated(self):
        # The INVITE went out as 314160 after a 407; the caller's ACK for the 2xx,
        # its CANCEL and its later requests carry the old numbering.
        self.dialog.add_cseq_offset(DOWN)
        ack = request("ACK", 314159, to_tag=BOB_TAG)
        self.dialog.shift_request(ack, DOWN)
        self.assertEqual(self.cseq(ack), (314160, "ACK"))  # RFC 3261 13.2.2.4
        cancel = request("CANCEL", 314159)
        self.dialog.shift_request(cancel, DOWN)
        self.assertEqual(self.cseq(cancel), (314160, "CANCEL"))  # RFC 3261 9.1
        ok = response(200, 314160)
        self.dialog.unshift_response(ok, DOWN)
        self.assertEqual(self.cseq(ok), (314159, "INVITE"))

    def test_reinvite_and_bye_follow(self):
        self.dialog.add_cseq_offset(DOWN)
        reinvite = request("INVITE", 314160, to_tag=BOB_TAG)
        self.dialog.shift_request(reinvite, DOWN)
        self.assertEqual(self.cseq(reinvite), (314161, "INVITE"))
        # The re-INVITE is challenged too and resent: offset 2.
        self.dialog.add_cseq_offset(DOWN)
        self.assertEqual(self.dialog.cseq_offset, {DOWN: 2, UP: 0})
        ack = request("ACK", 314160, to_tag=BOB_TAG)
        self.dialog.shift_request(ack, DOWN)
        self.assertEqual(self.cseq(ack), (314162, "ACK"))
        bye = request("BYE", 314161, to_tag=BOB_TAG)
        self.dialog.shift_request(bye, DOWN)
        self.assertEqual(self.cseq(bye), (314163, "BYE"))
        ok = response(200, 314163, method="BYE")
        self.dialog.unshift_response(ok, DOWN)
        self.assertEqual(self.cseq(ok), (314161, "BYE"))
        # The header stays where it was and the message still serialises and parses.
        reparsed = parse_message(bytes(bye))
        self.assertEqual(reparsed.cseq.number, 314163)
        self.assertEqual(bye.headers.keys().index("cseq"), 5)

    def test_offset_belongs_to_one_direction(self):
        self.dialog.add_cseq_offset(DOWN)
        info = request("INFO", 20, from_tag=BOB_TAG, to_tag=ALICE_TAG, upstream=True)
        self.dialog.shift_request(info, UP)
        self.assertEqual(self.cseq(info), (20, "INFO"))
        reply = response(200, 20, method="INFO", to_tag=ALICE_TAG, from_tag=BOB_TAG, upstream=True)
        self.dialog.unshift_response(reply, UP)
        self.assertEqual(self.cseq(reply), (20, "INFO"))
        self.dialog.add_cseq_offset(UP, 3)
        self.dialog.shift_request(info, UP)
        self.assertEqual(self.cseq(info), (23, "INFO"))
        self.dialog.unshift_response(reply, UP)
        self.assertEqual(self.cseq(reply), (17, "INFO"))

    def test_offset_cannot_shrink(self):
        self.assertRaises(DialogError, self.dialog.add_cseq_offset, DOWN, -1)

    def test_out_of_range(self):
        self.dialog.add_cseq_offset(DOWN, 5)
        top = request("BYE", 2**31 - 2, to_tag=BOB_TAG)
        self.assertRaises(DialogError, self.dialog.shift_request, top, DOWN)
        self.assertEqual(top.cseq.number, 2**31 - 2)
        low = response(200, 3, method="BYE")
        self.assertRaises(DialogError, self.dialog.unshift_response, low, DOWN)
        self.assertEqual(low.cseq.number, 3)

    def test_garbage_or_missing_cseq(self):
        self.dialog.add_cseq_offset(DOWN)
        garbage = garbled(request("BYE", 1, to_tag=BOB_TAG), "12x BYE")
        self.assertRaises(SIPParseError, self.dialog.shift_request, garbage, DOWN)
        missing = request("BYE", None, to_tag=BOB_TAG)
        self.assertRaises(DialogError, self.dialog.shift_request, missing, DOWN)
        twice = garbled(request("BYE", 5, to_tag=BOB_TAG), "6 BYE", add=True)
        self.assertRaises(SIPParseError, self.dialog.shift_request, twice, DOWN)


class HostileMessageTests(SynchronousTestCase):
    """Nothing but txuac errors, whatever the message."""

    def test_hostile_messages(self):
        table = DialogTable()
        confirmed(table)
        hostile = [
            garbled(request("INVITE", 1), "banana INVITE"),
            garbled(request("INVITE", 1), "1"),
            request("INVITE", 1, from_tag=""),
            garbled(request("BYE", 1, to_tag=BOB_TAG), "-1 BYE"),
            garbled(request("BYE", 1, to_tag=BOB_TAG), "99999999999 BYE"),
        ]
        bad_from = request("INVITE", 1)
        bad_from.headers.set("From", "not an address ;;; tag")
        hostile.append(bad_from)
        for message in hostile:
            for call in (lambda: table.create(message, 1.0), lambda: table.match(message),
                         lambda: table.on_request(message, 1.0),
                         lambda: table.get(CALL_ID, ALICE_TAG).shift_request(message, DOWN)):
                try:
                    call()
                except TxuacError:
                    pass
        for reply in (response(200, 1, to_tag=""), response(180, 1, method="INV!TE")):
            table.on_response(reply, 1.0)
        garbage_reply = response(200, 1)
        garbage_reply.headers.set("CSeq", "zzz")
        table.on_response(garbage_reply, 1.0)
        self.assertEqual(len(table), 1)
