"""txuac.sip.affinity: every message of a call goes to one worker, read from raw bytes."""

from __future__ import annotations

import zlib

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip.affinity import call_id_of, call_owner

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
          b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
          b"Call-ID: a84b4c76e66710@pc33\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def message(call_id_line: bytes, body: bytes = b"") -> bytes:
    return (b"CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
            + call_id_line + b"\r\nCSeq: 1 CANCEL\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


class CallIdTests(SynchronousTestCase):
    def test_the_value(self):
        self.assertEqual(call_id_of(INVITE), b"a84b4c76e66710@pc33")

    def test_any_case_and_the_compact_form(self):
        for line in (b"call-id: a84b4c76e66710@pc33", b"CALL-ID:a84b4c76e66710@pc33", b"i: a84b4c76e66710@pc33",
                     b"I :\ta84b4c76e66710@pc33 \t", b"Call-Id  :  a84b4c76e66710@pc33"):
            self.assertEqual(call_id_of(message(line)), b"a84b4c76e66710@pc33", line)

    def test_the_value_is_case_sensitive(self):
        """RFC 3261 20.8: Call-IDs are compared byte by byte."""
        self.assertEqual(call_id_of(message(b"Call-ID: ABC@host")), b"ABC@host")

    def test_other_headers_starting_alike_are_not_it(self):
        data = message(b"Call-Info: <http://example.com/x>\r\nIdentity: x\r\nCall-ID: real@host")
        self.assertEqual(call_id_of(data), b"real@host")

    def test_none_in_the_header_section_is_none(self):
        self.assertIsNone(call_id_of(message(b"X-Other: 1", body=b"i: not-a-header\r\nCall-ID: in-the-body\r\n")))
        self.assertIsNone(call_id_of(message(b"Call-ID:   ")))
        self.assertIsNone(call_id_of(b"garbage"))
        self.assertIsNone(call_owner(b"", 2))

    def test_a_response_has_one_too(self):
        self.assertEqual(call_id_of(b"SIP/2.0 200 OK\r\ni: x@y\r\n\r\n"), b"x@y")


class CallOwnerTests(SynchronousTestCase):
    def test_crc32_modulo_the_workers(self):
        """The same in every process (not Python's hash(), which is salted per process)."""
        for workers in (1, 2, 3, 8):
            self.assertEqual(call_owner(INVITE, workers), zlib.crc32(b"a84b4c76e66710@pc33") % workers)

    def test_every_message_of_a_call_has_one_owner(self):
        cancel = message(b"i: a84b4c76e66710@pc33")
        response = b"SIP/2.0 180 Ringing\r\nCALL-ID: a84b4c76e66710@pc33\r\nCSeq: 1 INVITE\r\n\r\n"
        for workers in (2, 3, 4):
            self.assertEqual({call_owner(m, workers) for m in (INVITE, cancel, response)},
                             {call_owner(INVITE, workers)})

    def test_calls_spread_evenly(self):
        counts = [0, 0]
        for n in range(10000):
            owner = call_owner(message(b"Call-ID: %d-%x@192.0.2.1" % (n, n * 7919)), 2)
            assert owner is not None
            counts[owner] += 1
        self.assertTrue(all(4700 <= count <= 5300 for count in counts), counts)
