"""Typed header values: Via, name-addr, Contact, Retry-After, auth, Date, CSeq and the lexical helpers."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import WILDCARD, Parameters, SIPParseError, SipURI, fields, grammar, parse_message
from tests.support.sip_messages import accepted_by, wire


class ViaTests(SynchronousTestCase):
    """RFC 3261 20.42, RFC 3581."""

    def test_plain(self):
        via = fields.parse_via("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds")
        self.assertEqual(
            (via.protocol, via.transport, via.host, via.port, via.branch),
            ("SIP/2.0", "UDP", "pc33.atlanta.com", None, "z9hG4bK776asdhds"),
        )
        self.assertEqual(via.sent_by, ("pc33.atlanta.com", None))

    def test_whitespace_around_slash_colon_semicolon_equals(self):
        """RFC 4475 3.1.1.1 (wsinv): LWS is allowed around '/', ':', ';' and '='."""
        via = fields.parse_via("SIP  /   2.0  / TCP   spindle.example.com \t:\t 5061 ; branch =  z9hG4bK9ikj8 ; rport")
        self.assertEqual((via.protocol, via.transport), ("SIP/2.0", "TCP"))
        self.assertEqual((via.host, via.port), ("spindle.example.com", 5061))
        self.assertEqual(via.branch, "z9hG4bK9ikj8")
        self.assertTrue(via.rport_requested)

    def test_unusual_transport_and_case(self):
        via = fields.parse_via("sip/2.0/tls-sctp Host.Example.COM:5061;branch=z9hG4bK1")
        self.assertEqual((via.protocol, via.transport, via.host), ("sip/2.0", "tls-sctp", "Host.Example.COM"))
        self.assertEqual(via, fields.parse_via("SIP/2.0/TLS-SCTP host.example.com:5061;branch=z9hG4bK1"))

    def test_ipv6_sent_by(self):
        via = fields.parse_via("SIP/2.0/UDP [2001:db8::9:1]:5061;branch=z9hG4bK1;received=[2001:db8::9:255]")
        self.assertEqual((via.host, via.port, via.received), ("[2001:db8::9:1]", 5061, "[2001:db8::9:255]"))

    def test_rport(self):
        self.assertEqual(fields.parse_via("SIP/2.0/UDP h;branch=z9hG4bK1;rport=5062").rport, 5062)
        empty = fields.parse_via("SIP/2.0/UDP h;branch=z9hG4bK1;rport")
        self.assertEqual((empty.rport, empty.rport_requested), (None, True))
        absent = fields.parse_via("SIP/2.0/UDP h;branch=z9hG4bK1")
        self.assertEqual((absent.rport, absent.rport_requested), (None, False))

    def test_received(self):
        for value in ("192.0.2.1", "[2001:db8::1]", "2001:db8::1", "host.example.com"):
            self.assertEqual(fields.parse_via(f"SIP/2.0/UDP h;branch=z9hG4bK1;received={value}").received, value)

    def test_maddr_and_ttl(self):
        via = fields.parse_via("SIP/2.0/UDP h;maddr=224.2.0.1;ttl=16;branch=z9hG4bK1")
        self.assertEqual((via.maddr, via.params.get("ttl")), ("224.2.0.1", "16"))
        self.assertEqual(fields.parse_via("SIP/2.0/UDP h;ttl=0255").params.get("ttl"), "0255")

    def test_checked_params_refused(self):
        base = "SIP/2.0/UDP h;branch=z9hG4bK1;"
        bad = [
            "rport=x", "rport=65536", "rport=-1",
            "received", "received=", "received=-bad-", "received=2001:zz::1", "received=[1]",
            "maddr", "maddr=", "maddr=a b",
            "ttl", "ttl=", "ttl=256", "ttl=abc", "ttl=-1",
        ]
        self.assertEqual(accepted_by(fields.parse_via, [base + param for param in bad]), [])

    def test_branch_refused(self):
        """via-branch = token: no quoted string either (fails: a quoted branch is accepted, quotes and all)."""
        bad = ["branch", "branch=", 'branch="z9hG4bK1"', 'branch="a b"', "branch=z9hG4bK[1]", "branch=a:b"]
        self.assertEqual(accepted_by(fields.parse_via, [f"SIP/2.0/UDP h;{param}" for param in bad]), [])

    def test_huge_ttl_is_a_parse_error(self):
        """ttl with thousands of digits (fails: ValueError from int() escapes)."""
        self.assertRaises(SIPParseError, fields.parse_via, "SIP/2.0/UDP h;branch=z9hG4bK1;ttl=" + "0" * 5000)

    def test_extension_params_kept(self):
        via = fields.parse_via('SIP/2.0/UDP h;branch=z9hG4bK1;x-flag;x-v="a;b,c"')
        self.assertEqual(via.params.items(), [("branch", "z9hG4bK1"), ("x-flag", None), ("x-v", '"a;b,c"')])

    def test_malformed(self):
        bad = [
            "", "SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP ", "SIP/2.0/UDP host:port", "SIP/2.0/UDP host:70000",
            "SIP/2.0/UDP ho st", "SIP/2.0/UDP host;", "SIP/2.0/UDP host;branch=a b", "SIP//UDP host",
            "SIP/2.0/UDP [::1", "SIP/2.0/UDP [1]", "SIP/2.0/U\"DP host", "SIP/2.0/UDP host:5060:5060",
        ]
        self.assertEqual(accepted_by(fields.parse_via, bad), [])

    def test_str_parses_back(self):
        for text in (
            "SIP / 2.0 / UDP h.example.com : 5060 ; branch = z9hG4bK1 ; rport",
            "SIP/2.0/TCP [2001:db8::1];received=192.0.2.1;x=\"q,;\"",
        ):
            via = fields.parse_via(text)
            self.assertEqual(fields.parse_via(str(via)), via)

    def test_list_in_one_header(self):
        message = parse_message(
            wire('Via: SIP/2.0/UDP a.example.com;x="1,2" , SIP/2.0/TCP b.example.com:5061,SIP/2.0/UDP c')
        )
        self.assertEqual([v.host for v in message.via], ["pc33.example.com", "a.example.com", "b.example.com", "c"])
        self.assertEqual(message.top_via.host, "pc33.example.com")

    def test_empty_list_element(self):
        message = parse_message(wire("Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, ,SIP/2.0/UDP b"))
        self.assertRaises(SIPParseError, getattr, message, "via")


class PlainTopBranchTests(SynchronousTestCase):
    """fields.plain_top_branch: a response's branch read without parsing its Via."""

    PLAIN = [
        ("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1f2e;rport=5060;received=127.0.0.1", "z9hG4bK1f2e"),
        ("SIP/2.0/UDP h;rport;branch=z9hG4bK.a-b_c!d%e*f+g`h'i~j", "z9hG4bK.a-b_c!d%e*f+g`h'i~j"),
        ("SIP/2.0/TCP h;branch=z9hG4bKx , SIP/2.0/UDP g;branch=z9hG4bKy", "z9hG4bKx"),
        ("SIP/2.0/UDP h;branch=z9hG4bKx\t;rport", "z9hG4bKx"),
        ("SIP/2.0/UDP h;branch=z9hG4bKx;Branch=z9hG4bKy", "z9hG4bKx"),  # the first, as Via.branch
    ]
    NOT_PLAIN = [
        "SIP/2.0/UDP h;Branch=z9hG4bKx",  # parameter names are case-insensitive: the parser decides
        "SIP/2.0/UDP h ; branch = z9hG4bKx",
        "SIP/2.0/UDP h;branch=abc",  # no magic cookie
        "SIP/2.0/UDP h;branch=z9hG4bKa:b",
        "SIP/2.0/UDP h;branch=z9hG4bK[1]",
        'SIP/2.0/UDP h;branch="z9hG4bKx"',
        "SIP/2.0/UDP a, SIP/2.0/UDP b;branch=z9hG4bKx",  # the branch of the second via-parm
        'SIP/2.0/UDP h;x="q;branch=z9hG4bKfake";branch=z9hG4bKreal',
        "SIP/2.0/UDP h;branch=z9hG4bKa:b;branch=z9hG4bKc",  # the parser refuses the first
        "SIP/2.0/UDP h;Branch=x;branch=z9hG4bKy",  # the parser's branch is the first
        "SIP/2.0/UDP h;rport",
        "",
    ]

    def test_plain_lines(self):
        self.assertEqual([fields.plain_top_branch(line) for line, _ in self.PLAIN], [b for _, b in self.PLAIN])

    def test_anything_else_is_left_to_the_parser(self):
        self.assertEqual([line for line in self.NOT_PLAIN if fields.plain_top_branch(line) is not None], [])

    def test_agrees_with_the_parser(self):
        """Where it reads a branch, it is the one parse_via finds in the first via-parm."""
        lines = [line for line, _ in self.PLAIN] + [
            "SIP/2.0/UDP [2001:db8::1]:5061;branch=z9hG4bKv6;received=[2001:db8::2]",
            "SIP/2.0/UDP h;received=branch.example.com;branch=z9hG4bKq",
            "SIP/2.0/UDP h;branch=z9hG4bKq;x-v=\"a,b\"",
        ]
        for line in lines:
            branch = fields.plain_top_branch(line)
            if branch is not None:
                self.assertEqual(branch, fields.parse_via(grammar.split_list(line, "Via")[0]).branch, line)


class NameAddressTests(SynchronousTestCase):
    """From, To, Contact, Route values (RFC 3261 20.10)."""

    def parse(self, text):
        return fields.parse_name_addr(text, "To")

    def test_quoted_display_name_with_escapes(self):
        address = self.parse('"Alice \\"Al\\" Smith \\\\ Co" <sip:alice@example.com>;tag=88sja8x')
        self.assertEqual(address.display_name, 'Alice "Al" Smith \\ Co')
        self.assertEqual((address.uri_text, address.tag), ("sip:alice@example.com", "88sja8x"))

    def test_quoted_display_name_utf8_and_escaped_ordinary_character(self):
        self.assertEqual(self.parse('"Jos\u00e9 \\a" <sip:j@example.com>').display_name, "Jos\u00e9 a")

    def test_token_display_name(self):
        self.assertEqual(self.parse("Alice   Smith\t<sip:alice@example.com>").display_name, "Alice Smith")
        self.assertEqual(self.parse("caller<sip:caller@example.com>;tag=323").display_name, "caller")

    def test_empty_display_name(self):
        self.assertEqual(self.parse('"" <sip:a@example.com>').display_name, "")
        self.assertIsNone(self.parse("<sip:a@example.com>").display_name)

    def test_addr_spec_params_belong_to_the_header(self):
        """Outside <>, ';' starts header parameters (RFC 3261 20.10)."""
        address = self.parse("sip:alice@example.com;tag=1;expires=60")
        self.assertEqual(address.uri_text, "sip:alice@example.com")
        self.assertEqual(address.params.items(), [("tag", "1"), ("expires", "60")])
        self.assertEqual(address.uri.params.items(), [])

    def test_uri_params_inside_brackets(self):
        address = self.parse("<sip:alice@example.com;transport=tcp>;tag=1")
        self.assertEqual(address.uri.params.items(), [("transport", "tcp")])
        self.assertEqual(address.params.items(), [("tag", "1")])

    def test_uri_parsed_lazily(self):
        address = self.parse("<nonsense>")
        self.assertEqual(address.uri_text, "nonsense")
        self.assertRaises(SIPParseError, getattr, address, "uri")

    def test_other_schemes(self):
        self.assertEqual(str(self.parse("<tel:+1-201-555-0123>").uri), "tel:+1-201-555-0123")

    def test_refused(self):
        bad = [
            "", "   ", "Alice@Home <sip:a@example.com>", '"unterminated <sip:a@example.com>',
            "<sip:a@example.com", "<sip:a@example.com> junk", "<sip:a b@example.com>",
            "sip:a@example.com?subject=x", "sip:a@example.com, sip:b@example.com",
            '"Alice" sip:a@example.com', "<sip:a@example.com>;tag=a b", "<sip:a@example.com>;=x",
        ]
        self.assertEqual(accepted_by(lambda text: self.parse(text).uri, bad), [])

    def test_expires_param(self):
        self.assertEqual(self.parse("<sip:a@b>;expires=3600").expires, 3600)
        self.assertEqual(self.parse("<sip:a@b>;expires=99999999999999").expires, 2**32 - 1)
        self.assertIsNone(self.parse("<sip:a@b>").expires)
        self.assertRaises(SIPParseError, getattr, self.parse("<sip:a@b>;expires=soon"), "expires")

    def test_str_parses_back(self):
        for text in ('"A \\"q\\"" <sip:a@example.com;lr>;tag=1', "Bob <sips:b@example.com>", 'sip:c@example.com;x="y"'):
            address = self.parse(text)
            self.assertEqual(self.parse(str(address)), address)


class ContactTests(SynchronousTestCase):
    def contacts(self, *values):
        data = wire(*(f"Contact: {v}" for v in values), start="REGISTER sip:example.com SIP/2.0")
        return parse_message(data).contacts

    def test_wildcard(self):
        self.assertEqual(self.contacts("*"), [WILDCARD])
        self.assertEqual(self.contacts(" \t*\t"), [WILDCARD])
        self.assertEqual(str(WILDCARD), "*")

    def test_wildcard_mixed_with_addresses_is_refused(self):
        message = parse_message(wire("Contact: *, <sip:a@example.com>"))
        self.assertRaises(SIPParseError, message.validate)

    def test_several_contacts_with_params(self):
        contacts = self.contacts(
            '"Mr. Watson" <sip:watson@worcester.example.com>;q=0.7;expires=3600, <sip:watson@bell.example.com>;q=0.1',
            'sip:watson@192.0.2.1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
        )
        self.assertEqual([c.uri.host for c in contacts], ["worcester.example.com", "bell.example.com", "192.0.2.1"])
        self.assertEqual([c.params.get("q") for c in contacts], ["0.7", "0.1", None])
        self.assertEqual([c.expires for c in contacts], [3600, None, None])
        self.assertEqual(contacts[2].params.get("+sip.instance"), '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"')

    def test_parenthesis_in_addr_spec_user(self):
        """'(' and ')' are unreserved in a user part; Contact carries no comments."""
        contacts = self.contacts("sip:a(b@example.com, sip:c)d@example.com")
        self.assertEqual([c.uri.user for c in contacts], ["a(b", "c)d"])

    def test_comma_inside_quotes_and_brackets(self):
        contacts = self.contacts('"Doe, John" <sip:j@example.com;x=a,b>, <sip:k@example.com>')
        self.assertEqual([c.display_name for c in contacts], ["Doe, John", None])


class RetryAfterTests(SynchronousTestCase):
    """RFC 3261 20.33."""

    def test_comment_nested_and_escaped(self):
        value = fields.parse_retry_after("18000 (in maintenance (really \\) ok)) ;duration=3600")
        self.assertEqual((value.seconds, value.duration), (18000, 3600))
        self.assertEqual(value.comment, "in maintenance (really \\) ok)")

    def test_plain_and_clamped(self):
        self.assertEqual(fields.parse_retry_after(" 120 ").seconds, 120)
        self.assertEqual(fields.parse_retry_after("99999999999").seconds, 2**32 - 1)
        self.assertIsNone(fields.parse_retry_after("5").duration)

    def test_params(self):
        value = fields.parse_retry_after("5(c);duration=10;x-reason=busy")
        self.assertEqual((value.comment, value.params.items()), ("c", [("duration", "10"), ("x-reason", "busy")]))

    def test_refused(self):
        bad = ["", "abc", "-5", "5 (", "5 (a (b)", "5 junk", "5 (a) (b)", "5;duration=", "5;duration=x", "5;"]
        self.assertEqual(accepted_by(fields.parse_retry_after, bad), [])

    def test_str_parses_back(self):
        value = fields.parse_retry_after("300 (back (soon)) ;duration=60")
        self.assertEqual(fields.parse_retry_after(str(value)), value)

    def test_view(self):
        message = parse_message(wire("Retry-After: 18000;duration=3600", start="SIP/2.0 503 Service Unavailable"))
        self.assertEqual((message.retry_after.seconds, message.retry_after.duration), (18000, 3600))


class AuthTests(SynchronousTestCase):
    """(Proxy-|WWW-)Authenticate and (Proxy-)Authorization (RFC 3261 25.1, RFC 7235)."""

    def parse(self, text):
        return fields.parse_auth_list(text, "WWW-Authenticate")

    def test_digest_challenge(self):
        (challenge,) = self.parse('Digest realm="a.com", qop="auth,auth-int", nonce="8a", algorithm=MD5, stale=FALSE')
        self.assertEqual(challenge.scheme, "Digest")
        self.assertEqual(challenge.get("QOP"), "auth,auth-int")
        self.assertEqual(challenge.get("algorithm"), "MD5")
        self.assertIn("stale", challenge)
        self.assertIsNone(challenge.get("opaque"))

    def test_several_challenges_in_one_header(self):
        challenges = self.parse('Digest realm="a", nonce="1", Basic realm="b", Bearer realm="c", error="invalid_token"')
        self.assertEqual(
            [(c.scheme, c.get("realm")) for c in challenges], [("Digest", "a"), ("Basic", "b"), ("Bearer", "c")]
        )
        self.assertEqual(challenges[2].get("error"), "invalid_token")

    def test_quoted_pair_escapes(self):
        (challenge,) = self.parse('Digest realm="say \\"hi\\" \\\\ bye", nonce="x"')
        self.assertEqual(challenge.get("realm"), 'say "hi" \\ bye')
        self.assertEqual(challenge.params[0], ("realm", '"say \\"hi\\" \\\\ bye"'))

    def test_token68_and_bare_scheme(self):
        basic, ntlm = self.parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==, NTLM")
        self.assertEqual((basic.scheme, basic.token68, basic.params), ("Basic", "QWxhZGRpbjpvcGVuIHNlc2FtZQ==", []))
        self.assertEqual((ntlm.scheme, ntlm.token68, ntlm.params), ("NTLM", None, []))

    def test_unquoted_uri_and_empty_elements(self):
        (credentials,) = self.parse('Digest username="bob",, uri=sip:bob@example.com, response="6629fae4"')
        self.assertEqual(credentials.get("uri"), "sip:bob@example.com")
        self.assertEqual(credentials.get("response"), "6629fae4")

    def test_refused(self):
        bad = ["", ", ,", '"Digest"', 'Digest realm="unterminated', 'Digest realm="a" junk', "Digest realm=a b", "=x"]
        self.assertEqual(accepted_by(self.parse, bad), [])

    def test_str_parses_back(self):
        for challenge in self.parse('Digest realm="a\\"b", nonce=1, Basic abc=, Foo'):
            self.assertEqual(self.parse(str(challenge)), [challenge])

    def test_views_read_every_line(self):
        message = parse_message(
            wire(
                'WWW-Authenticate: Digest realm="a", nonce="1"',
                'WWW-Authenticate: Digest realm="b", nonce="2", algorithm=SHA-256',
                'Proxy-Authenticate: Digest realm="p", nonce="3"',
                start="SIP/2.0 401 Unauthorized",
            )
        )
        self.assertEqual([c.get("realm") for c in message.www_authenticate], ["a", "b"])
        self.assertEqual([c.get("realm") for c in message.proxy_authenticate], ["p"])
        self.assertEqual(message.authorization, [])


class DateTests(SynchronousTestCase):
    """RFC 3261 20.17: RFC 1123 dates in GMT only."""

    def test_valid(self):
        self.assertEqual(
            fields.parse_date(" Sat, 13 Nov 2010 23:29:00 GMT "), datetime(2010, 11, 13, 23, 29, tzinfo=timezone.utc)
        )

    def test_refused(self):
        bad = [
            "Fri, 01 Jan 2010 16:00:00 EST", "Mon, 31 Feb 2010 10:00:00 GMT", "Sat, 13 nov 2010 23:29:00 GMT",
            "Sat, 13 Nov 2010 24:00:00 GMT", "Xyz, 13 Nov 2010 23:29:00 GMT", "Sat, 13 Nov 0000 23:29:00 GMT",
            "Sat, 3 Nov 2010 23:29:00 GMT", "2010-11-13T23:29:00Z", "",
        ]
        self.assertEqual(accepted_by(fields.parse_date, bad), [])


class ScalarTests(SynchronousTestCase):
    """CSeq, Max-Forwards, Call-ID, Expires and token lists."""

    def test_cseq(self):
        self.assertEqual(fields.parse_cseq("  4711 \t INVITE "), fields.CSeq(4711, "INVITE"))
        self.assertEqual(fields.parse_cseq(f"{2**31 - 1} X-CUSTOM").number, 2**31 - 1)
        bad = [f"{2**31} INVITE", "-1 INVITE", "1", "INVITE", "1 INVITE x", "1 INV@TE", "1.0 INVITE", "\u0661 INVITE"]
        self.assertEqual(accepted_by(fields.parse_cseq, bad), [])

    def test_max_forwards(self):
        for text, hops in (("70", 70), ("0", 0), (" 255 ", 255), ("0000000000000000070", 70)):
            self.assertEqual(fields.parse_max_forwards(text), hops)
        self.assertEqual(accepted_by(fields.parse_max_forwards, ["256", "-1", "", "seventy", "7 0", "\u0667"]), [])

    def test_max_forwards_with_thousands_of_digits(self):
        """Leading zeros are allowed, so length alone is no error (fails: ValueError from int() escapes)."""
        message = parse_message(wire("Max-Forwards: " + "0" * 5000 + "70"))
        self.assertEqual(message.max_forwards, 70)
        self.assertRaises(SIPParseError, fields.parse_max_forwards, "9" * 5000)

    def test_call_id(self):
        for text in ("a84b4c76e66710@pc33.atlanta.com", "abc", "<x>(y)\"z\"/[]?{}:~@host"):
            self.assertEqual(fields.parse_call_id(f" {text} "), text)
        self.assertEqual(accepted_by(fields.parse_call_id, ["", "a b", "a@b@c", "@", "a@", "caf\u00e9"]), [])

    def test_expires(self):
        self.assertEqual(fields.parse_delta_seconds("3600", "Expires"), 3600)
        self.assertEqual(fields.parse_delta_seconds(" 4294967296 ", "Expires"), 2**32 - 1)
        self.assertEqual(accepted_by(lambda t: fields.parse_delta_seconds(t, "Expires"), ["", "-1", "1h", "1.5"]), [])

    def test_token_lists(self):
        message = parse_message(wire("Supported: 100rel , timer,,path", "Supported: gruu", "Require: foo"))
        self.assertEqual(message.tokens("Supported"), ["100rel", "timer", "path", "gruu"])
        self.assertEqual(message.tokens("k"), ["100rel", "timer", "path", "gruu"])
        self.assertEqual(message.tokens("Allow"), [])
        self.assertRaises(SIPParseError, parse_message(wire("Require: a b")).tokens, "Require")


class GrammarTests(SynchronousTestCase):
    """The lexical helpers: lists, parameters, quoted strings."""

    def test_split_list(self):
        self.assertEqual(
            grammar.split_list('a, "b,c" , <sip:d;x=1,2>,, e', "X"), ["a", '"b,c"', "<sip:d;x=1,2>", "", "e"]
        )
        self.assertEqual(grammar.split_list(" single ", "X"), ["single"])

    def test_split_list_refuses_unbalanced(self):
        self.assertEqual(accepted_by(lambda t: grammar.split_list(t, "X"), ['a, "b', "a, <b", '"a\\", b']), [])

    def test_parameters(self):
        params = Parameters.parse(' tag = 1 ;lr; q="a;b" ;X-Y=[::1]', "X")
        self.assertEqual(params.items(), [("tag", "1"), ("lr", None), ("q", '"a;b"'), ("X-Y", "[::1]")])
        self.assertEqual((params.get("TAG"), params["x-y"], params.get("nope", "d")), ("1", "[::1]", "d"))
        self.assertIn("LR", params)
        params.set("lr", "on")
        params.set("new")
        params.remove("tag")
        self.assertEqual(str(params), ';lr=on;q="a;b";X-Y=[::1];new')

    def test_parameters_refused(self):
        bad = ["", ";", "a;;b", "=1", "a=", "a=b c", 'a="b', "a b", "a=\u00e9", "a=<b>"]
        self.assertEqual(accepted_by(lambda t: Parameters.parse(t, "X"), bad), [])

    def test_quote_unquote(self):
        for text in ("", "plain", 'say "hi"', "back\\slash", '\\"', "caf\u00e9 \t"):
            quoted = grammar.quote(text)
            self.assertEqual(grammar.unquote(quoted), text)
            self.assertEqual(fields.parse_name_addr(f"{quoted} <sip:a@b>", "X").display_name, text)
        self.assertEqual(grammar.unquote("bare"), "bare")


class ViewValuesTests(SynchronousTestCase):
    """Views are plain values: changed and written back, they change the message."""

    def test_change_and_write_back(self):
        message = parse_message(wire())
        to = message.to
        to.params.set("tag", "xyz")
        to.display_name = 'Bob "B"'
        to.uri = SipURI("biloxi.example.com", "bob", port=5070)
        message.headers.set("To", str(to))
        again = parse_message(bytes(message))
        self.assertEqual((again.to.tag, again.to.display_name, again.to.uri.port), ("xyz", 'Bob "B"', 5070))
