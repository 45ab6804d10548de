"""ParserLimits: oversized input is refused with SIPParseError, early and without big allocations."""

from __future__ import annotations

import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import ParserLimits, SIPParseError, StreamFramer, parse_message
from tests.support.sip_messages import wire

MB = 1_000_000
START = b"OPTIONS sip:bob@example.com SIP/2.0\r\n"


def refusal_cost(func, *args) -> tuple[SIPParseError, int]:
    """The SIPParseError ``func(*args)`` raises and the peak of memory allocated meanwhile."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            func(*args)
        except SIPParseError as e:
            error = e
        else:
            raise AssertionError(f"{func.__name__} accepted the input")
        return error, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


class MessageSizeTests(SynchronousTestCase):
    def test_default_limit(self):
        body = b"x" * (65535 - len(wire("Content-Length: 99999", length=False)))
        data = wire(f"Content-Length: {len(body):05d}", length=False) + body
        self.assertEqual(len(data), 65535)
        self.assertEqual(parse_message(data).body, body)
        error = self.assertRaises(SIPParseError, parse_message, data + b"x")
        self.assertEqual(error.status, 513)

    def test_custom_limit(self):
        data = wire()
        limits = ParserLimits(max_message_size=len(data))
        parse_message(data, limits)
        self.assertEqual(self.assertRaises(SIPParseError, parse_message, data + b"\r\n", limits).status, 513)

    def test_ten_megabytes_of_headers(self):
        """Refused before anything is decoded or split: no allocation in proportion to the input."""
        for data in (
            START + b"X: " + b"a" * (10 * MB) + b"\r\n\r\n",
            START + b"a: b\r\n" * (10 * MB // 6) + b"\r\n",
            START + b"a" * (10 * MB),
        ):
            error, cost = refusal_cost(parse_message, data)
            self.assertEqual(error.status, 513)
            self.assertLess(cost, MB // 10)

    def test_big_bytearray_or_memoryview_not_copied(self):
        """Size is checked before copying (fails: bytes(data) copies all 10 MB first)."""
        data = bytearray(START + b"a" * (10 * MB))
        for view in (data, memoryview(data)):
            error, cost = refusal_cost(parse_message, view)
            self.assertEqual(error.status, 513)
            self.assertLess(cost, MB // 10)


class HeaderCountTests(SynchronousTestCase):
    def test_default_limit(self):
        extra = 256 - len(parse_message(wire()).headers)
        self.assertEqual(len(parse_message(wire(*[f"X-{i}: {i}" for i in range(extra)])).headers), 256)
        self.assertRaises(SIPParseError, parse_message, wire(*[f"X-{i}: {i}" for i in range(extra + 1)]))

    def test_continuation_lines_count(self):
        limits = ParserLimits(max_headers=len(parse_message(wire("Subject: a")).headers))
        parse_message(wire("Subject: a"), limits)
        self.assertRaises(SIPParseError, parse_message, wire("Subject: a\r\n b"), limits)

    def test_many_lines_with_a_raised_size_limit(self):
        """The header count bounds the work, even when a large message is allowed (fails: every line is split first)."""
        data = START + b"a: b\r\n" * (2 * MB) + b"\r\n"
        error, cost = refusal_cost(parse_message, data, ParserLimits(max_message_size=20 * MB))
        self.assertEqual(error.status, 400)
        self.assertLess(cost, 3 * len(data))


class LineLengthTests(SynchronousTestCase):
    def test_header_line(self):
        prefix = "Subject: "
        parse_message(wire(prefix + "a" * (8192 - len(prefix))))
        error = self.assertRaises(SIPParseError, parse_message, wire(prefix + "a" * (8193 - len(prefix))))
        self.assertEqual(error.status, 400)

    def test_request_line(self):
        """414 Request-URI Too Long (fails: the check of every line answers 400 first)."""
        error = self.assertRaises(SIPParseError, parse_message, wire(start=f"OPTIONS sip:{'a' * 8200}@b SIP/2.0"))
        self.assertEqual(error.status, 414)

    def test_status_line(self):
        error = self.assertRaises(SIPParseError, parse_message, wire(start="SIP/2.0 200 " + "a" * 8200))
        self.assertEqual(error.status, 400)

    def test_folded_value(self):
        """Folding cannot build a value longer than one line may be."""
        limits = ParserLimits(max_line_length=100)
        parse_message(wire("Subject: " + "a" * 40 + "\r\n " + "b" * 40), limits)
        self.assertRaises(SIPParseError, parse_message, wire("Subject: " + "a" * 60 + "\r\n " + "b" * 60), limits)

    def test_long_line_with_a_raised_size_limit(self):
        data = START + b"X: " + b"a" * (10 * MB) + b"\r\n\r\n"
        error, cost = refusal_cost(parse_message, data, ParserLimits(max_message_size=20 * MB))
        self.assertEqual(error.status, 400)
        self.assertLess(cost, 3 * len(data))


class StreamLimitTests(SynchronousTestCase):
    def test_megabyte_without_end_of_headers(self):
        framer = StreamFramer()
        error = self.assertRaises(SIPParseError, framer.feed, START + b"a" * MB)
        self.assertEqual(error.status, 513)
        self.assertEqual(framer.buffered, 0)

    def test_refused_as_soon_as_the_limit_is_passed(self):
        framer = StreamFramer()
        chunk = b"a" * 16384
        framer.feed(START)
        for _ in range(3):
            self.assertEqual(framer.feed(chunk), [])
        self.assertLessEqual(framer.buffered, 65535)
        error = self.assertRaises(SIPParseError, framer.feed, chunk)
        self.assertEqual(error.status, 513)

    def test_huge_content_length(self):
        for value in ("65536", "4294967295", "9999999999"):
            framer = StreamFramer()
            error = self.assertRaises(SIPParseError, framer.feed, wire(f"Content-Length: {value}", length=False))
            self.assertEqual(error.status, 513, value)

    def test_datagram_content_length_beyond_limit(self):
        error = self.assertRaises(SIPParseError, parse_message, wire("Content-Length: 9999999999", length=False))
        self.assertEqual(error.element, "Content-Length")
