"""The UAS decisions of txuac.sip.server_rules, with plain values (no stack, no reactor)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import SIPParseError
from txuac.sip import Request, make_response, parse_message
from txuac.sip.address import Address
from txuac.sip.methods import KNOWN_METHODS
from txuac.sip.server_rules import (
    CancelMatch,
    default_answer,
    invite_key_for_cancel,
    malformed_answer,
    match_cancel,
    needs_automatic_trying,
    readable_to_tag,
)
from txuac.sip.transaction import ServerTransaction, server_key

SOURCE = Address("udp", "192.0.2.9", 5099)


def incoming(method: str, *, branch: str = "z9hG4bKcancelme", to: str = "<sip:bob@example.com>",
             cseq_method: str | None = None, extra: tuple[str, ...] = ()) -> Request:
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP client.example.com:5060;branch={branch}",
        "Max-Forwards: 70",
        f"To: {to}",
        "From: <sip:alice@example.com>;tag=a1",
        "Call-ID: rules-1@client.example.com",
        f"CSeq: 7 {cseq_method or method}",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


class CancelTests(SynchronousTestCase):
    def test_cancel_finds_its_invite(self) -> None:
        """RFC 3261 9.2: same branch, Request-URI, Call-ID, tags, CSeq number."""
        self.assertEqual(invite_key_for_cancel(incoming("CANCEL")), server_key(incoming("INVITE")))
        self.assertNotEqual(invite_key_for_cancel(incoming("CANCEL", branch="z9hG4bKother")),
                            server_key(incoming("INVITE")))

    def test_cancel_of_an_rfc2543_invite(self) -> None:
        """Without a magic cookie the CANCEL matches by CSeq number, Call-ID, From tag and Via."""
        cancel = incoming("CANCEL", branch="1234")
        self.assertEqual(invite_key_for_cancel(cancel), server_key(incoming("INVITE", branch="1234")))
        self.assertEqual(cancel.method, "CANCEL", "the CANCEL itself is left alone")
        self.assertEqual(cancel.cseq.method, "CANCEL")

    def test_match(self) -> None:
        invite = ServerTransaction(incoming("INVITE"), reliable=False)
        self.assertIs(match_cancel(None), CancelMatch.NO_TRANSACTION)
        self.assertIs(match_cancel(invite), CancelMatch.PENDING)
        invite.send_response(make_response(invite.request, 180, to_tag="t"), 0.0)
        self.assertIs(match_cancel(invite), CancelMatch.PENDING, "a provisional answer is not final")
        invite.send_response(make_response(invite.request, 486, to_tag="t"), 0.0)
        self.assertIs(match_cancel(invite), CancelMatch.ANSWERED)
        invite.transport_failed(0.0)
        self.assertIs(match_cancel(invite), CancelMatch.NO_TRANSACTION, "a terminated INVITE is no match")


class TryingTests(SynchronousTestCase):
    def test_automatic_trying(self) -> None:
        """RFC 3261 17.2.1: for an INVITE the TU did not answer, unless turned off."""
        invite = ServerTransaction(incoming("INVITE"), reliable=False)
        self.assertTrue(needs_automatic_trying(invite, True))
        self.assertFalse(needs_automatic_trying(invite, False))
        options = ServerTransaction(incoming("OPTIONS"), reliable=False)
        self.assertFalse(needs_automatic_trying(options, True))
        invite.send_response(make_response(invite.request, 100), 0.0)
        self.assertFalse(needs_automatic_trying(invite, True), "the TU sent its own")
        answered = ServerTransaction(incoming("INVITE"), reliable=True)
        answered.send_response(make_response(answered.request, 486, to_tag="t"), 0.0)
        self.assertFalse(needs_automatic_trying(answered, True))


class DefaultAnswerTests(SynchronousTestCase):
    def test_default_answers(self) -> None:
        allowed = ["ACK", "CANCEL", "OPTIONS"]
        self.assertIsNone(default_answer("ACK", allowed, KNOWN_METHODS))
        self.assertEqual(default_answer("OPTIONS", allowed, KNOWN_METHODS),
                         (200, [("Allow", "ACK, CANCEL, OPTIONS"), ("Accept", "application/sdp"), ("Supported", "")]))
        self.assertEqual(default_answer("SUBSCRIBE", allowed, KNOWN_METHODS), (405, [("Allow", "ACK, CANCEL, OPTIONS")]))
        self.assertEqual(default_answer("FROBNICATE", allowed, KNOWN_METHODS), (501, []))


class MalformedTests(SynchronousTestCase):
    error = SIPParseError("bad header", status=400)

    def test_answer_with_the_parser_status(self) -> None:
        request = incoming("OPTIONS", branch="z9hG4bKmal", extra=("Expires: soon",))
        response = malformed_answer(request, SIPParseError("bad Expires", status=400), SOURCE, "txuac/test")
        self.assertEqual(response.status, 400)
        self.assertEqual(response.headers.get("Server"), "txuac/test")
        self.assertEqual(response.top_via.received, "192.0.2.9", "RFC 3261 18.2.1: received stamped")
        self.assertIsNotNone(response.to.tag)
        version = malformed_answer(incoming("OPTIONS"), SIPParseError("SIP/3.0", status=505), SOURCE, "s")
        self.assertEqual(version.status, 505)

    def test_nothing_to_answer(self) -> None:
        self.assertIsNone(malformed_answer(None, self.error, SOURCE, "s"), "no request parsed")
        self.assertIsNone(malformed_answer(incoming("ACK", cseq_method="ACK"), self.error, SOURCE, "s"),
                          "an ACK is never answered")
        no_via = incoming("OPTIONS")
        no_via.headers.remove_first("Via")
        self.assertIsNone(malformed_answer(no_via, self.error, SOURCE, "s"))

    def test_to_tag(self) -> None:
        self.assertIsNotNone(readable_to_tag(incoming("OPTIONS")))
        self.assertIsNone(readable_to_tag(incoming("OPTIONS", to="<sip:bob@example.com>;tag=there")),
                          "a tag already there stays the only one")
        self.assertIsNone(readable_to_tag(incoming("OPTIONS", to="<sip:bob@exa mple.com")))
