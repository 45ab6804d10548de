"""txuac.sip.message: requests and responses as values: serialisation, the requests and
responses txuac makes (RFC 3261 8.1.1, 8.2.6), copies, validation."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.sip_messages import wire
from txuac.sip import Request, Response, SIPParseError, make_response, parse_message
from txuac.sip.message import make_request, parse_content_length


class SerialisationTests(SynchronousTestCase):
    def test_changed_message_round_trips(self):
        message = parse_message(wire())
        message.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
        message.headers.remove("Call-ID")
        message.headers.add("i", "new-call-id")
        data = bytes(message)
        self.assertTrue(data.startswith(b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP proxy.example.com"))
        self.assertTrue(data.endswith(b"\r\nContent-Length: 0\r\nCall-ID: new-call-id\r\n\r\n"))
        self.assertEqual(parse_message(data), message)

    def test_content_length_follows_the_body(self):
        message = parse_message(wire(body=b"hello"))
        message.body = b"hi"
        data = bytes(message)
        self.assertTrue(data.endswith(b"\r\nContent-Length: 2\r\n\r\nhi"))
        again = parse_message(data)
        self.assertEqual((again.body, again.content_length), (b"hi", 2))

    def test_content_length_not_added(self):
        """A datagram without Content-Length keeps none; its body is the rest of the datagram."""
        message = parse_message(wire(body=b"rest", length=False))
        self.assertEqual(message.body, b"rest")
        self.assertNotIn(b"Content-Length", bytes(message))

    def test_content_length_text_kept(self):
        """'Content-Length: 00' is valid (1*DIGIT): the round trip keeps the message equal."""
        message = parse_message(wire("Content-Length: 005", body=b"hello", length=False))
        self.assertEqual(message.body, b"hello")
        self.assertEqual(parse_message(bytes(message)), message)


class MakeResponseTests(SynchronousTestCase):
    """RFC 3261 8.2.6: what a response copies from its request."""

    def setUp(self):
        self.request = parse_message(
            wire(
                "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp",
                "Max-Forwards: 70",
                "Contact: <sip:alice@192.0.2.1>",
            )
        )

    def test_copies(self):
        response = make_response(self.request, 486)
        self.assertEqual(response.reason, "Busy Here")
        self.assertEqual(
            response.headers.items(),
            [
                ("Via", "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds"),
                ("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp"),
                ("From", "<sip:alice@example.com>;tag=1928301774"),
                ("To", "<sip:bob@example.com>"),
                ("Call-ID", "a84b4c76e66710@pc33.example.com"),
                ("CSeq", "1 OPTIONS"),
                ("Content-Length", "0"),
            ],
        )
        self.assertEqual(parse_message(bytes(response)).validate(), response)

    def test_to_tag(self):
        self.assertEqual(make_response(self.request, 200, to_tag="abc").to.tag, "abc")
        self.assertIsNone(make_response(self.request, 100, to_tag="abc").to.tag)

    def test_existing_to_tag_kept(self):
        request = parse_message(wire().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=old"))
        self.assertEqual(make_response(request, 200, to_tag="new").to.tag, "old")

    def test_reason_and_body(self):
        response = make_response(self.request, 200, "Fine", extra_headers=[("Content-Type", "text/plain")], body=b"ok")
        again = parse_message(bytes(response))
        self.assertEqual((again.status, again.reason, again.body), (200, "Fine", b"ok"))
        self.assertEqual(again.headers.get("c"), "text/plain")


class MakeRequestTests(SynchronousTestCase):
    """RFC 3261 8.1.1: what a new out-of-dialog request carries."""

    def test_layout(self):
        request = make_request("OPTIONS", "sip:bob@example.com", "sip:alice@example.com", from_tag="ft",
                               call_id="c1", cseq=7, extra_headers=[("Accept", "application/sdp")], body=b"x")
        self.assertEqual(request.start_line(), "OPTIONS sip:bob@example.com SIP/2.0")
        self.assertEqual(request.headers.items(), [
            ("From", "<sip:alice@example.com>;tag=ft"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "c1"),
            ("CSeq", "7 OPTIONS"),
            ("Max-Forwards", "70"),
            ("Accept", "application/sdp"),
            ("Content-Length", "1"),
        ])
        self.assertIsNone(request.top_via, "the stack adds the Via when it sends the request")

    def test_fresh_tag_and_call_id_and_a_name_addr_kept(self):
        first = make_request("REGISTER", "sip:example.com", '"Alice" <sip:alice@example.com>', "sip:alice@example.com")
        second = make_request("REGISTER", "sip:example.com", "sip:alice@example.com")
        self.assertEqual(first.from_.display_name, "Alice")
        self.assertEqual(str(first.to.uri), "sip:alice@example.com")
        self.assertNotEqual(first.from_.tag, second.from_.tag)
        self.assertNotEqual(first.call_id, second.call_id)

    def test_a_made_request_validates_after_a_via(self):
        request = make_request("INVITE", "sip:bob@example.com", "sip:alice@example.com")
        request.headers.prepend("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKm")
        self.assertEqual(parse_message(bytes(request)).validate(), request)


class CopyTests(SynchronousTestCase):
    def test_request_copy_is_independent(self):
        request = parse_message(wire())
        copy = request.copy()
        self.assertEqual(copy, request)
        copy.headers.set("CSeq", "2 OPTIONS")
        copy.uri.user = "carol"
        self.assertEqual(request.cseq.number, 1)
        self.assertEqual(str(request.uri), "sip:bob@example.com")

    def test_response_copy_is_independent(self):
        response = make_response(parse_message(wire()), 404)
        copy = response.copy()
        self.assertEqual((copy, copy.reason), (response, "Not Found"))
        copy.headers.add("Warning", '399 example.com "x"')
        self.assertNotIn("Warning", response.headers)
        self.assertIsInstance(copy, Response)


class ValidateTests(SynchronousTestCase):
    def test_cseq_method_must_match(self):
        request = parse_message(wire())
        request.method = "INFO"
        with self.assertRaises(SIPParseError) as raised:
            request.validate()
        self.assertEqual(raised.exception.element, "CSeq")

    def test_required_header_missing(self):
        request = parse_message(wire())
        request.headers.remove("Call-ID")
        with self.assertRaises(SIPParseError) as raised:
            request.validate()
        self.assertEqual(raised.exception.element, "Call-ID")

    def test_validated_until_a_header_changes(self):
        request = parse_message(wire())
        self.assertFalse(request.validated)
        self.assertIs(request.validate(), request)
        self.assertTrue(request.validated)
        self.assertIs(request.validate(), request)
        request.headers.add("Contact", "<sip:alice@192.0.2.1>")
        self.assertFalse(request.validated)
        request.validate()
        self.assertTrue(request.validated)

    def test_a_header_changed_after_validate_is_checked_again(self):
        request = parse_message(wire()).validate()
        request.headers.add("Contact", "<sip:alice@192.0.2.1")
        with self.assertRaises(SIPParseError) as raised:
            request.validate()
        self.assertEqual(raised.exception.element, "Contact")
        self.assertFalse(request.validated)

    def test_the_start_line_is_checked_on_a_validated_message(self):
        request = parse_message(wire()).validate()
        request.method = "INFO"
        with self.assertRaises(SIPParseError) as raised:
            request.validate()
        self.assertEqual(raised.exception.element, "CSeq")

    def test_cr_or_lf_in_the_start_line_is_not_serialised(self):
        request = Request("OPTIONS", parse_message(wire()).uri)
        request.method = "OPTIONS\r\nX-Injected: 1"
        self.assertRaises(SIPParseError, bytes, request)


class ContentLengthTextTests(SynchronousTestCase):
    def test_digits_between_whitespace(self):
        self.assertEqual(parse_content_length(" 0012 ", "Content-Length"), 12)

    def test_not_a_length(self):
        for text in ("", "-1", "1.5", "twelve", "99999999999"):
            with self.assertRaises(SIPParseError, msg=text) as raised:
                parse_content_length(text, "l")
            self.assertEqual(raised.exception.element, "l")


class TopViaBranchTests(SynchronousTestCase):
    """Message.top_via_branch: what a response needs to find its client transaction."""

    @staticmethod
    def response(via: str) -> Response:
        return parse_message(
            f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            "To: <sip:a@example.com>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n".encode())

    def test_plain_via_is_not_parsed(self):
        response = self.response("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKab12;rport=5060;received=127.0.0.1")
        self.assertEqual(response.top_via_branch(), "z9hG4bKab12")
        self.assertFalse(response.headers.has_view("top_via"))
        self.assertEqual(response.top_via.branch, "z9hG4bKab12")

    def test_other_forms_are_parsed(self):
        response = self.response("SIP/2.0/UDP h ; Branch = z9hG4bKab12")
        self.assertEqual(response.top_via_branch(), "z9hG4bKab12")
        self.assertTrue(response.headers.has_view("top_via"))

    def test_a_parsed_via_is_used(self):
        response = self.response("SIP/2.0/UDP h;branch=z9hG4bKab12")
        response.top_via.params.set("branch", "z9hG4bKother")
        self.assertEqual(response.top_via_branch(), "z9hG4bKother")

    def test_malformed_via(self):
        """A malformed Via fails as top_via does, unless its branch is written plainly: a
        response carrying one of our branches is matched by it (RFC 3261 17.1.3)."""
        self.assertRaises(SIPParseError, self.response("SIP/2.0/UDP ho st;branch=abc").top_via_branch)
        self.assertEqual(self.response("SIP/2.0/UDP ho st;branch=z9hG4bKab12").top_via_branch(), "z9hG4bKab12")

    def test_no_via(self):
        response = parse_message(b"SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
        self.assertIsNone(response.top_via_branch())
