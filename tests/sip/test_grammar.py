"""RFC 3261 25.1 lexical helpers: SIP's whitespace, digits, letters and control characters."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import SIPParseError
from txuac.sip.grammar import (
    ascii_lower,
    ascii_upper,
    check_controls,
    has_control,
    is_digits,
    parse_digits,
    quote,
    split_lws,
    strip_lws,
    unquote,
)

# What str.strip()/str.split() take for whitespace and SIP does not (LWS is SP and HTAB).
NOT_LWS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2000", "\u2009", "\u200a",
           "\u2028", "\u3000")
# What str.isdigit() or int() accept and DIGIT (0-9) does not.
NOT_DIGITS = ("\u0663", "\u00b2", "\uff10", "\u0969", "1_0", "+1", " 1", "1 ")
CONTROLS = tuple(chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))


class WhitespaceTests(SynchronousTestCase):
    def test_strip_lws_strips_sp_and_htab_only(self):
        self.assertEqual(strip_lws(" \t a b \t "), "a b")
        for char in NOT_LWS:
            self.assertEqual(strip_lws(char + "55" + char), char + "55" + char, repr(char))

    def test_split_lws_splits_on_runs_of_sp_and_htab_only(self):
        self.assertEqual(split_lws(" 1 \t\t INVITE\t"), ["1", "INVITE"])
        self.assertEqual(split_lws(""), [])
        for char in NOT_LWS:
            self.assertEqual(split_lws(f"1{char}INVITE"), [f"1{char}INVITE"], repr(char))


class DigitTests(SynchronousTestCase):
    def test_ascii_digits(self):
        self.assertTrue(is_digits("0123456789"))
        for text in NOT_DIGITS + ("", "12a"):
            self.assertFalse(is_digits(text), repr(text))

    def test_parse_digits(self):
        self.assertEqual(parse_digits("0068", 255), 68)
        self.assertEqual(parse_digits("000", 255), 0)
        self.assertEqual(parse_digits("255", 255), 255)
        self.assertEqual(parse_digits("256", 255), 256)
        self.assertEqual(parse_digits("9" * 5000, 255), 256)  # int() never sees them
        self.assertEqual(parse_digits("0" * 5000 + "7", 255), 7)
        for text in NOT_DIGITS + ("", "12a", "55\x1e", "\x0b0", "\x0c40"):
            self.assertIsNone(parse_digits(text, 2**32), repr(text))


class CaseTests(SynchronousTestCase):
    def test_only_ascii_letters_change(self):
        self.assertEqual(ascii_upper("md5-sess"), "MD5-SESS")
        self.assertEqual(ascii_lower("AUTH-Int"), "auth-int")
        # str.upper() gives "MD5-SESS" and "SIP/", str.lower() gives "k".
        self.assertEqual(ascii_upper("md5-\u017fe\u017f\u017f"), "MD5-\u017fE\u017f\u017f")
        self.assertEqual(ascii_upper("\u017fip/"), "\u017fIP/")
        self.assertEqual(ascii_lower("\u212a"), "\u212a")
        self.assertEqual(ascii_upper("\u0131"), "\u0131")


class ControlTests(SynchronousTestCase):
    def test_every_control_but_htab_is_one(self):
        for char in CONTROLS:
            self.assertTrue(has_control(f"a{char}b"), repr(char))
        self.assertFalse(has_control("a\tb \xa0\x85\u3000é"))

    def test_no_other_character_is_one(self):
        """Printable text skips the search; every character gives the grammar's answer."""
        for code in [*range(0x0, 0x3000), 0xFEFF, 0x1F600]:
            char = chr(code)
            self.assertEqual(has_control(f"a{char}b"), char in CONTROLS, repr(char))

    def test_refused_outside_a_quoted_pair(self):
        for char in CONTROLS:
            for value in (f"55{char}", f"{char}0", f'"a"{char}', f"a\\{char}", f'"a{char}"'):
                error = self.assertRaises(SIPParseError, check_controls, value, "X")
                self.assertEqual(error.element, "X")
                self.assertIn(f"{ord(char):#04x}", str(error))

    def test_allowed_as_a_quoted_pair(self):
        """RFC 3261 25.1: quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F), in a quoted-string
        or a comment (RFC 4475 3.1.1.2 has BEL, NUL and DEL so)."""
        check_controls('"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:a@b>', "To")
        check_controls("Softphone (beta\\\x01 (nested\\\x1e))", "User-Agent")
        check_controls("plain\ttext \xa0\u3000", "Subject")
        # An escaped backslash does not escape what follows it.
        self.assertRaises(SIPParseError, check_controls, '"a\\\\\x07"', "To")

    def test_quote_escapes_controls(self):
        text = "BEL:\x07 NUL:\x00 DEL:\x7f \\ \""
        quoted = quote(text)
        self.assertEqual(quoted, '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f \\\\ \\""')
        check_controls(quoted, "To")
        self.assertEqual(unquote(quoted), text)

    def test_quote_escapes_exactly_what_the_grammar_needs_for_every_character(self):
        """Printable text is quoted without a scan for what to escape; every other
        character still takes the full path, so both give the same quoted-string."""
        for code in [*range(0x0, 0x3000), 0xFEFF, 0x1F600]:
            for text in (chr(code), f"a{chr(code)}b", f"{chr(code)}{chr(code)}"):
                expected = '"' + "".join("\\" + c if c in '"\\' or (ord(c) < 0x20 and c not in "\t\r\n")
                                         or c == "\x7f" else c for c in text) + '"'
                self.assertEqual(quote(text), expected, repr(text))
