"""Message framing: streams (RFC 3261 18.3, RFC 5626 4.4.1 keep-alives) and datagrams."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import KeepAlive, ParserLimits, SIPParseError, StreamFramer, parse_message
from tests.support.sip_messages import wire

PING = KeepAlive.PING
PONG = KeepAlive.PONG

# A body that looks like the end of a header section and holds a Content-Length line.
TRICKY_BODY = b"v=0\r\n\r\nContent-Length: 99\r\n\r\n"
FIRST = wire(body=TRICKY_BODY)
SECOND = wire("Subject: folded\r\n\tContent-Length: 7", "l:\r\n 3", body=b"abc", length=False)
THIRD = wire(start="SIP/2.0 200 OK")
STREAM = b"\r\n\r\n" + FIRST + SECOND + b"\r\n\r\n" + THIRD
FRAMED = [PING, FIRST, SECOND, PING, THIRD]


def feed_all(chunks, **kwargs) -> list:
    framer = StreamFramer(**kwargs)
    out = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


class ChunkingTests(SynchronousTestCase):
    """The result never depends on how the bytes arrive."""

    def test_whole(self):
        self.assertEqual(feed_all([STREAM]), FRAMED)

    def test_every_split_point(self):
        for cut in range(len(STREAM) + 1):
            self.assertEqual(feed_all([STREAM[:cut], STREAM[cut:]]), FRAMED, cut)

    def test_byte_by_byte(self):
        self.assertEqual(feed_all([STREAM[i : i + 1] for i in range(len(STREAM))]), FRAMED)

    def test_three_pieces(self):
        for first in range(0, len(STREAM), 7):
            for second in range(first, len(STREAM), 13):
                chunks = [STREAM[:first], STREAM[first:second], STREAM[second:]]
                self.assertEqual(feed_all(chunks), FRAMED, (first, second))

    def test_framed_messages_parse(self):
        messages = [parse_message(item) for item in FRAMED if isinstance(item, bytes)]
        self.assertEqual([m.body for m in messages], [TRICKY_BODY, b"abc", b""])
        self.assertEqual(messages[1].headers.get("Subject"), "folded Content-Length: 7")


class PipelineTests(SynchronousTestCase):
    def test_partial_message_waits(self):
        framer = StreamFramer()
        self.assertEqual(framer.feed(FIRST + SECOND[:40]), [FIRST])
        self.assertEqual(framer.buffered, 40)
        self.assertEqual(framer.feed(SECOND[40:]), [SECOND])
        self.assertEqual(framer.buffered, 0)

    def test_body_waits_for_content_length(self):
        framer = StreamFramer()
        self.assertEqual(framer.feed(FIRST[:-1]), [])
        self.assertEqual(framer.feed(FIRST[-1:]), [FIRST])

    def test_empty_feed(self):
        self.assertEqual(StreamFramer().feed(b""), [])


class KeepAliveTests(SynchronousTestCase):
    """RFC 5626 4.4.1: CRLFCRLF is a ping, a lone CRLF the pong."""

    def test_pings(self):
        self.assertEqual(feed_all([b"\r\n\r\n"]), [PING])
        self.assertEqual(feed_all([b"\r\n\r\n\r\n\r\n"]), [PING, PING])
        self.assertEqual(feed_all([b"\r\n\r", b"\n"]), [PING])

    def test_lone_crlf_held_while_expecting_pings(self):
        framer = StreamFramer(expect_pings=True)
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(b"\r\n"), [PING])

    def test_lone_crlf_before_a_message(self):
        framer = StreamFramer(expect_pings=True)
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(THIRD), [PONG, THIRD])

    def test_pong_on_the_client_side(self):
        self.assertEqual(feed_all([b"\r\n"], expect_pings=False), [PONG])
        self.assertEqual(feed_all([b"\r\n" + THIRD], expect_pings=False), [PONG, THIRD])


class ContentLengthTests(SynchronousTestCase):
    """Content-Length is required on streams, once, as digits."""

    def assertFramingError(self, data, status=400):
        framer = StreamFramer()
        error = self.assertRaises(SIPParseError, framer.feed, data)
        self.assertEqual(error.status, status)
        return framer, error

    def test_spellings(self):
        for line in ("content-length: 3", "CONTENT-LENGTH :\t3", "l: 3", "L:3", "Content-Length:\r\n  3"):
            data = wire(line, body=b"abc", length=False)
            self.assertEqual(feed_all([data + THIRD]), [data, THIRD], line)

    def test_missing(self):
        _, error = self.assertFramingError(wire(length=False))
        self.assertEqual(error.element, "Content-Length")

    def test_duplicate(self):
        self.assertFramingError(wire("l: 0"))
        self.assertFramingError(wire("Content-Length: 0"))

    def test_invalid(self):
        for value in ("abc", "-1", "+1", "1e3", "12345678901", "", "1 2", "0x10",
                      # SIP's whitespace is SP and HTAB, its digits 0-9 (RFC 3261 25.1)
                      "\x0b0", "\x0c40", "55\x1e", "0\xa0", "\u30000", "\u0663", "1_0"):
            self.assertFramingError(wire(f"Content-Length: {value}", length=False))

    def test_stays_failed(self):
        framer, error = self.assertFramingError(wire(length=False))
        self.assertIs(framer.error, error)
        self.assertIs(self.assertRaises(SIPParseError, framer.feed, THIRD), error)
        self.assertEqual(framer.buffered, 0)

    def test_messages_before_the_error_are_delivered(self):
        """The messages before a broken one come out; the error is raised by the next feed."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(THIRD + wire(length=False)), [THIRD])
        self.assertIsInstance(framer.error, SIPParseError)
        self.assertRaises(SIPParseError, framer.feed, b"")


class StreamSizeTests(SynchronousTestCase):
    """Limits are enforced before the bytes arrive."""

    LIMITS = ParserLimits(max_message_size=1000)

    def test_declared_body_too_large(self):
        framer = StreamFramer(self.LIMITS)
        error = self.assertRaises(SIPParseError, framer.feed, wire("Content-Length: 2000", length=False))
        self.assertEqual(error.status, 513)

    def test_header_section_too_large(self):
        framer = StreamFramer(self.LIMITS)
        self.assertEqual(framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 160), [])
        error = self.assertRaises(SIPParseError, framer.feed, b"X: y\r\n" * 10)
        self.assertEqual(error.status, 513)

    def test_exactly_at_the_limit(self):
        size = 1000 - len(wire("Content-Length: 999", length=False))
        fits = wire(f"Content-Length: {size}", length=False) + b"x" * size
        self.assertEqual(len(fits), 1000)
        self.assertEqual(feed_all([fits], limits=self.LIMITS), [fits])
        framer = StreamFramer(self.LIMITS)
        error = self.assertRaises(SIPParseError, framer.feed, wire(f"Content-Length: {size + 1}", length=False))
        self.assertEqual(error.status, 513)


class DatagramTests(SynchronousTestCase):
    """parse_message on a whole datagram (RFC 3261 18.3, RFC 4475 3.1.1.8)."""

    def test_octets_past_content_length_ignored(self):
        message = parse_message(wire(body=b"abc") + b"garbage")
        self.assertEqual(message.body, b"abc")

    def test_body_without_content_length_is_the_rest(self):
        self.assertEqual(parse_message(wire(body=b"rest\r\n", length=False)).body, b"rest\r\n")

    def test_content_length_beyond_the_datagram(self):
        error = self.assertRaises(SIPParseError, parse_message, wire("Content-Length: 10", body=b"abc", length=False))
        self.assertEqual(error.element, "Content-Length")

    def test_leading_crlf_ignored(self):
        """RFC 3261 7.5 (fails for two CRLFs: the first CRLFCRLF is taken as the end of an empty header)."""
        for prefix in (b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n"):
            self.assertEqual(parse_message(prefix + THIRD), parse_message(THIRD), prefix)

    def test_no_blank_line_after_the_headers(self):
        """A datagram ending right after its last header line has no body (fails: the body is the last CRLF)."""
        data = wire(length=False)[:-2]
        self.assertEqual(parse_message(data).body, b"")
        self.assertRaises(SIPParseError, parse_message, wire(length=False)[:-2] + b"Content-Length: 2\r\n")

    def test_bare_lf_line_ends(self):
        data = wire("Subject: a\n b", body=b"x", length=False).replace(b"\r\n", b"\n")
        message = parse_message(data)
        self.assertEqual((message.headers.get("Subject"), message.body), ("a b", b"x"))
        self.assertEqual(parse_message(bytes(message)), message)
