"""parse_message reads whitespace, digits and control characters as RFC 3261 25.1 does.

SIP's whitespace is SP and HTAB and its digits are 0-9; Python's str.strip(),
str.split(), str.isdigit() and int() take more. A header another hop reads
differently is refused, never repaired.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import Request, Response, SIPParseError, StreamFramer, parse_message

HERE = os.path.dirname(os.path.abspath(__file__))

# Python whitespace that is not LWS, and digits that are not DIGIT, as UTF-8.
NOT_LWS = tuple(c.encode() for c in ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2000",
                                     "\u2005", "\u200a", "\u3000"))
NOT_DIGITS = tuple(c.encode() for c in ("\u0663", "\u00b2", "\uff10", "_", "+"))


def request(*lines: bytes, cseq: bytes = b"1 OPTIONS", length: bytes = b"0", body: bytes = b"",
            start: bytes = b"OPTIONS sip:bob@example.com SIP/2.0",
            call_id: bytes = b"a84b4c76e66710@pc33.example.com") -> bytes:
    """An OPTIONS with the required headers, ``lines``, then CSeq and Content-Length as given."""
    head = [
        start,
        b"Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds",
        b"From: <sip:alice@example.com>;tag=1928301774",
        b"To: <sip:bob@example.com>",
        b"Call-ID: " + call_id,
        b"Max-Forwards: 70",
        *lines,
        b"CSeq: " + cseq,
        b"Content-Length: " + length,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class ContentLengthTests(SynchronousTestCase):
    def test_fuzzed_inputs_are_refused(self):
        """Found by bench/fuzz_parser.py: read as 55, 0 and 40, written back without the
        control character."""
        for value in (b"55\x1e", b"\x0b0", b"\x0c40"):
            data = request(length=value, body=b"x" * 60)
            error = self.assertRaises(SIPParseError, parse_message, data)
            self.assertEqual(error.element, "Content-Length", value)
            self.assertIn("control character", str(error))
            self.assertRaises(SIPParseError, StreamFramer().feed, data)

    def test_not_lws_around_the_number_is_refused(self):
        for char in NOT_LWS:
            for value in (b"5" + char, char + b"5", b"5" + char + b"5"):
                data = request(length=value, body=b"x" * 60)
                self.assertRaises(SIPParseError, parse_message, data)
                self.assertRaises(SIPParseError, StreamFramer().feed, data)

    def test_non_ascii_digits_are_refused(self):
        for char in NOT_DIGITS:
            for value in (char, b"1" + char, char + b"1"):
                data = request(length=value, body=b"x" * 60)
                self.assertRaises(SIPParseError, parse_message, data)
                self.assertRaises(SIPParseError, StreamFramer().feed, data)

    def test_sp_and_htab_are_whitespace(self):
        data = request(length=b" \t 3 \t", body=b"abc")
        self.assertEqual(parse_message(data).body, b"abc")
        self.assertEqual(StreamFramer().feed(data), [data])


class ScalarHeaderTests(SynchronousTestCase):
    """CSeq, Max-Forwards, Expires, Call-ID, the status code and the Via port."""

    def assertRefused(self, data, view=None):
        try:
            message = parse_message(data)
            value = getattr(message, view) if view else message
        except SIPParseError:
            return
        self.fail(f"{data!r} read as {value!r}")

    def test_cseq(self):
        for char in NOT_LWS:
            self.assertRefused(request(cseq=b"1" + char + b"OPTIONS"))
            self.assertRefused(request(cseq=b"1 " + char + b"OPTIONS"))
            self.assertRefused(request(cseq=char + b"1 OPTIONS"))
        for char in NOT_DIGITS:
            self.assertRefused(request(cseq=char + b" OPTIONS"))
            self.assertRefused(request(cseq=b"1" + char + b" OPTIONS"))
        self.assertEqual(parse_message(request(cseq=b"1 \t OPTIONS")).cseq.number, 1)

    def test_max_forwards_and_expires(self):
        for name, view in ((b"Max-Forwards: ", "max_forwards"), (b"Expires: ", "expires"),
                           (b"Min-Expires: ", "min_expires")):
            for char in NOT_LWS + NOT_DIGITS:
                self.assertRefused(request(name + b"7" + char), view)
                self.assertRefused(request(name + char + b"7"), view)
        message = parse_message(request(b"Expires: \t0068\t"))
        self.assertEqual(message.expires, 68)

    def test_call_id(self):
        for char in NOT_LWS:
            self.assertRefused(request(call_id=b"abc" + char), "call_id")
            self.assertRefused(request(call_id=b"abc" + char + b"@example.com"), "call_id")
        self.assertEqual(parse_message(request(call_id=b"abc@example.com 	")).call_id, "abc@example.com")

    def test_status_code(self):
        for char in NOT_DIGITS:
            self.assertRefused(b"SIP/2.0 2" + char + b"0 OK\r\n\r\n")
            self.assertRefused(b"SIP/2.0 " + char + b" OK\r\n\r\n")

    def test_via_port(self):
        for char in NOT_LWS + NOT_DIGITS:
            data = request(start=b"OPTIONS sip:bob@example.com SIP/2.0").replace(b":5060;", b":50" + char + b"60;")
            self.assertRefused(data, "via")


class ControlCharacterTests(SynchronousTestCase):
    """RFC 3261 25.1: no control character but HTAB in a start line or a header value,
    except escaped in a quoted-pair."""

    def test_in_a_header_value(self):
        for char in (b"\x00", b"\x01", b"\x0b", b"\x1b", b"\x7f"):
            error = self.assertRaises(SIPParseError, parse_message, request(b"Subject: a" + char + b"b"))
            self.assertEqual(error.element, "Subject")
            self.assertRaises(SIPParseError, parse_message, request(b'X-Note: "a' + char + b'b"'))

    def test_in_the_start_line(self):
        for data in (request(start=b"OPTIONS sip:bob@example.com SIP/2.0\x0b"),
                     request(start=b"OPTIONS\x1fsip:bob@example.com SIP/2.0"),
                     b"SIP/2.0 200 O\x00K\r\nContent-Length: 0\r\n\r\n"):
            self.assertRaises(SIPParseError, parse_message, data)

    def test_as_a_quoted_pair(self):
        """RFC 4475 3.1.1.2 (intmeth.dat): BEL, NUL and DEL escaped in a display name."""
        with open(os.path.join(HERE, os.pardir, "data", "rfc4475", "intmeth.dat"), "rb") as f:
            data = f.read()
        message = parse_message(data)
        self.assertEqual(message.to.display_name, "BEL:\x07 NUL:\x00 DEL:\x7f")
        again = parse_message(bytes(message))
        self.assertEqual(again, message)
        self.assertEqual(str(again.to).split("<")[0], '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" ')

    def test_header_added_with_a_control_character_is_refused(self):
        message = parse_message(request())
        self.assertRaises(SIPParseError, message.headers.add, "Subject", "a\x00b")
        self.assertRaises(SIPParseError, message.headers.set, "X-Length", "55\x1e")
        message.headers.add("Subject", '"quoted \\\x07 pair"')


class UnicodeTextTests(SynchronousTestCase):
    """Non-ASCII spaces are text, not whitespace: kept as they came, never stripped."""

    def test_kept_in_free_text(self):
        for char in (b"\xc2\x85", b"\xc2\xa0", b"\xe3\x80\x80"):
            message = parse_message(request(b"Subject: " + char + b"hi" + char))
            self.assertEqual(message.headers.get("Subject"), (char + b"hi" + char).decode())
            self.assertEqual(parse_message(bytes(message)), message)

    def test_token_display_name_with_a_unicode_space_is_refused(self):
        """A display name of tokens splits on SP and HTAB only: "Bob\\u00a0Smith" is one
        non-token word, not "Bob Smith"."""
        data = request(b"Contact: Bob\xc2\xa0Smith <sip:bob@192.0.2.4>")
        self.assertRaises(SIPParseError, lambda: parse_message(data).contacts)
        message = parse_message(request(b'Contact: "Bob\xc2\xa0Smith" <sip:bob@192.0.2.4>'))
        self.assertEqual(message.contacts[0].display_name, "Bob\xa0Smith")

    def test_version_is_ascii(self):
        """With IGNORECASE alone, "S" matches U+017F ("ſ") and "SIP/" is str.upper() of "ſip/"."""
        self.assertRaises(SIPParseError, parse_message, "\u017fIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".encode())
        self.assertRaises(SIPParseError, parse_message,
                          request(start="OPTIONS sip:bob@example.com \u017fIP/2.0".encode()))
        self.assertIsInstance(parse_message(b"sip/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), Response)
        self.assertIsInstance(parse_message(request(start=b"OPTIONS sip:bob@example.com sip/2.0")), Request)
