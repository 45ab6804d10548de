"""The memo of parsed header texts: bounded, kept on the second parse, never shared."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import AuthenticationError, SIPParseError
from txuac.sip import Response, digest, fields, uri
from txuac.sip.fields import parse_name_addr
from txuac.sip.memo import ParseMemo
from txuac.sip.uri import SipURI, parse_uri


class ParseMemoTests(SynchronousTestCase):
    def test_kept_from_the_second_parse(self):
        memo: ParseMemo[str] = ParseMemo()
        self.assertFalse(memo.parsed_before("sip:a@b"))
        self.assertIsNone(memo.recall("sip:a@b"))
        self.assertTrue(memo.parsed_before("sip:a@b"))
        memo.keep("sip:a@b", "value")
        self.assertEqual(memo.recall("sip:a@b"), "value")

    def test_bounded_by_capacity_whatever_arrives(self):
        memo: ParseMemo[int] = ParseMemo(capacity=8)
        for number in range(1000):
            text = f"text {number}"
            memo.parsed_before(text)
            memo.keep(text, number)
            self.assertLessEqual(len(memo), 8)
        self.assertEqual(memo.recall("text 999"), 999)  # the newest survives a clearing
        self.assertIsNone(memo.recall("text 0"))

    def test_long_texts_are_not_held(self):
        memo: ParseMemo[int] = ParseMemo(longest=16)
        long_text = "x" * 17
        self.assertFalse(memo.parsed_before(long_text))
        self.assertFalse(memo.parsed_before(long_text))
        memo.keep(long_text, 1)
        self.assertEqual(len(memo), 0)
        self.assertIsNone(memo.recall(long_text))

    def test_keeping_a_noted_text_at_capacity_keeps_the_rest(self):
        memo: ParseMemo[int] = ParseMemo(capacity=2)
        memo.parsed_before("a")
        memo.parsed_before("b")
        memo.keep("a", 1)
        self.assertEqual(len(memo), 2)
        self.assertEqual(memo.recall("a"), 1)

    def test_only_a_noted_text_is_kept(self):
        memo: ParseMemo[int] = ParseMemo(capacity=2)
        memo.keep("never parsed", 1)
        self.assertEqual(len(memo), 0)
        self.assertIsNone(memo.recall("never parsed"))


class MemoizedParsersTests(SynchronousTestCase):
    def setUp(self):
        uri._SIP_URIS.clear()
        fields._NAME_ADDRS.clear()
        digest._WWW_CHALLENGES.clear()
        digest._PROXY_CHALLENGES.clear()

    def test_a_uri_parsed_again_is_a_fresh_copy(self):
        text = "sip:alice@example.com:05060;transport=udp;lr?subject=x"
        values = [parse_uri(text) for _ in range(4)]
        for value in values:
            self.assertIsInstance(value, SipURI)
            self.assertEqual(str(value), text)
        self.assertEqual(len({id(value) for value in values}), 4)
        values[2].params.set("transport", "tcp")
        values[2].headers.append(("priority", "urgent"))
        values[2].user = "bob"
        self.assertEqual(str(parse_uri(text)), text)  # what one caller changes stays its own

    def test_a_name_addr_parsed_again_is_a_fresh_copy(self):
        text = '"Alice" <sip:alice@example.com>;tag=1928301774'
        first, second, third = (parse_name_addr(text, "From") for _ in range(3))
        third.params.set("tag", "changed")
        third.uri.host = "example.net"
        fourth = parse_name_addr(text, "To")
        self.assertEqual(str(fourth), text)
        self.assertEqual(fourth.tag, "1928301774")
        self.assertEqual(fourth.display_name, "Alice")
        self.assertIsNot(fourth.params, second.params)

    def test_errors_name_the_header_of_each_parse(self):
        text = "<sip:alice@exa%mple.com>"  # the name-addr parses, its URI does not
        parse_name_addr(text, "From")
        parse_name_addr(text, "From")
        with self.assertRaises(SIPParseError) as caught:
            parse_name_addr(text, "Contact").uri  # noqa: B018
        self.assertEqual(caught.exception.element, "Contact")

    def test_a_bad_text_fails_every_time(self):
        for _ in range(3):
            with self.assertRaises(SIPParseError):
                parse_uri("sip:alice@exa mple.com")
            with self.assertRaises(SIPParseError):
                parse_name_addr('"unclosed <sip:a@b>', "From")

    def test_a_challenge_text_seen_again_is_not_parsed_again(self):
        """A registrar's burst of 401s with one nonce (Kamailio's, within a second)."""
        text = 'Digest realm="example.org", nonce="axaqz2sWqaN3", qop="auth"'
        challenges = [digest.parse_challenges(_challenged(401, text)) for _ in range(5)]
        first = [c[0] for c in challenges]
        self.assertIsNot(first[0], first[1], "a text seen once is not kept")
        self.assertTrue(first[1] is first[2] is first[3] is first[4],
                        "kept from the second parse and shared: a Challenge is immutable")
        self.assertEqual({(c[0].realm, c[0].nonce, c[0].qop, c[0].proxy) for c in challenges},
                         {("example.org", "axaqz2sWqaN3", ("auth",), False)})
        proxied = digest.parse_challenges(_challenged(407, text))
        self.assertTrue(proxied[0].proxy, "a 407's challenges are the proxy's, whatever a 401 held")

    def test_a_challenge_text_with_a_problem_is_named_every_time(self):
        text = 'Digest realm="example.org", Digest nonce="n1", Digest realm="r", nonce="n2"'
        for _ in range(3):
            self.assertEqual([c.nonce for c in digest.parse_challenges(_challenged(401, text))], ["n2"])
        for _ in range(3):
            with self.assertRaises(AuthenticationError) as caught:
                digest.parse_challenges(_challenged(401, 'Digest realm="example.org"'))
            self.assertIn("without nonce", str(caught.exception))
        self.assertEqual(len(digest._WWW_CHALLENGES), 0)


def _challenged(status: int, text: str) -> Response:
    response = Response(status)
    response.headers.add("Proxy-Authenticate" if status == 407 else "WWW-Authenticate", text)
    return response
