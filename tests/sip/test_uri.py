"""SIP, SIPS and other absolute URIs (RFC 3261 19.1, 25.1)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import AbsoluteURI, Parameters, SIPParseError, SipURI, parse_uri, unescape
from txuac.sip.uri import is_paramchars, is_user
from tests.support.sip_messages import accepted_by

# Valid URIs that must come back from str() character for character.
ROUND_TRIP = (
    "sip:example.com",
    "sip:alice@atlanta.example.com",
    "sips:alice:secret@example.com:5061;transport=tcp;lr?subject=hello&priority=urgent",
    "sip:%61lice@atlanta.com;transport=TCP",
    "sip:null-%00-null@example.com",
    "sip:user;par=u%40example.net@example.com",
    "sip:+1-212-555-1212:1234@gateway.com;user=phone",
    "sip:alice@[2001:db8::10]:5070",
    "sip:[::ffff:192.0.2.1]",
    "SIP:Alice@Example.COM",
    "sip:h.example.com;maddr=[2001:db8::1];ttl=16",
    "sip:example.com;lr",
    "sip:example.com?x=",
    "sip:u:@example.com",
    "sip:*@example.com",
    "sip:example.com.",
    "sip:192.0.2.1:0",
    "sip:-_.!~*'()&=+$,;?/@example.com",
    "sip:example.com;%41=%42;[]/:&+$",
    "tel:+1-201-555-0123;phone-context=example.com",
    "urn:service:sos",
)

INVALID = (
    "",
    "sip",
    "sip:",
    ":example.com",
    "1sip:example.com",
    "s p:example.com",
    "sip:exa mple.com",
    "sip:@example.com",
    "sip:alice@",
    "sip:example.com;",
    "sip:example.com;=x",
    "sip:example.com;a=",
    "sip:example.com;a b",
    "sip:-example.com",
    "sip:example-",
    "sip:example.com:65536",
    "sip:example.com:",
    "sip:example.com:5o60",
    "sip:[::1",
    "sip:[::1]x",
    "sip:[1]",
    "sip:[zz::1]",
    "sip:[fe80::1%25eth0]",
    "sip:al%zzce@example.com",
    "sip:al%4@example.com",
    "sip:u:p:q@example.com",
    "sip:u:p;x@example.com",
    "sip:alice@bob@example.com",
    "sip:example.com?",
    "sip:example.com?a",
    "sip:example.com?=b",
    "sip:example.com?a=b&",
    "sip:example.com?a=b c",
    "sip:<example.com>",
    "sip:example.com>",
    "sip:example.com\x00",
    "tel:",
    "tel:a b",
    "tel:<x>",
    'tel:"x"',
    "tel:\x00",
)


class SipURITests(SynchronousTestCase):
    """sip: and sips: URIs keep their fields as written."""

    def test_every_part(self):
        uri = parse_uri("sips:alice:secret@example.com:5061;transport=TCP;lr?subject=hello&priority=urgent")
        self.assertIsInstance(uri, SipURI)
        self.assertEqual(
            (uri.scheme, uri.user, uri.password, uri.host, uri.port),
            ("sips", "alice", "secret", "example.com", 5061),
        )
        self.assertEqual(uri.params.items(), [("transport", "TCP"), ("lr", None)])
        self.assertEqual(uri.headers, [("subject", "hello"), ("priority", "urgent")])
        self.assertTrue(uri.secure)
        self.assertEqual(uri.transport, "tcp")
        self.assertTrue(uri.loose_route)
        self.assertEqual((uri.host, uri.port), ("example.com", 5061))

    def test_host_only(self):
        uri = parse_uri("sip:example.com")
        self.assertEqual((uri.user, uri.password, uri.port, uri.headers), (None, None, None, []))
        self.assertFalse(uri.params)
        self.assertFalse(uri.loose_route)
        self.assertIsNone(uri.transport)

    def test_exact_round_trip(self):
        """str(parse_uri(text)) == text for valid URIs of every shape."""
        for text in ROUND_TRIP:
            self.assertEqual(str(parse_uri(text)), text)

    def test_port_with_leading_zeros_round_trips(self):
        """port = 1*DIGIT: '05060' is valid and must come back as written (fails: str() gives ':5060')."""
        uri = parse_uri("sip:alice@example.com:05060")
        self.assertEqual(uri.port, 5060)
        self.assertEqual(str(uri), "sip:alice@example.com:05060")

    def test_scheme_case(self):
        self.assertFalse(parse_uri("SIP:example.com").secure)
        self.assertTrue(parse_uri("SiPs:example.com").secure)
        self.assertEqual(parse_uri("SIP:example.com").scheme, "SIP")


class EscapeTests(SynchronousTestCase):
    """%-escapes stay raw in the fields; unescape() decodes them."""

    def test_raw_fields(self):
        uri = parse_uri("sip:%61lice:p%40ss@example.com;n%61me=v%61lue?subject=project%20x")
        self.assertEqual((uri.user, uri.password), ("%61lice", "p%40ss"))
        self.assertEqual(uri.params.items(), [("n%61me", "v%61lue")])
        self.assertEqual(uri.headers, [("subject", "project%20x")])

    def test_unescape(self):
        self.assertEqual(unescape("%61lice"), "alice")
        self.assertEqual(unescape("null-%00-null"), "null-\x00-null")
        self.assertEqual(unescape("%e2%82%AC"), "\u20ac")
        self.assertEqual(unescape("plain"), "plain")

    def test_unescape_keeps_what_is_not_an_escape(self):
        """RFC 4475 3.1.1.5: a '%' that does not start an escape is kept."""
        self.assertEqual(unescape("100%"), "100%")
        self.assertEqual(unescape("%4g"), "%4g")

    def test_unescape_non_utf8(self):
        """Octets that are not UTF-8 survive as surrogates and encode back."""
        decoded = unescape("%ff%fe")
        self.assertEqual(decoded.encode("utf-8", "surrogateescape"), b"\xff\xfe")


class HostAndPortTests(SynchronousTestCase):
    def test_ipv6_references(self):
        for text, host, port in (
            ("sip:[2001:db8::10]", "[2001:db8::10]", None),
            ("sip:alice@[2001:db8::10]:5070", "[2001:db8::10]", 5070),
            ("sip:[::1]", "[::1]", None),
            ("sip:[::ffff:192.0.2.1]:5060;transport=udp", "[::ffff:192.0.2.1]", 5060),
            ("sip:[2001:DB8:0:0:8:800:200C:417A]", "[2001:DB8:0:0:8:800:200C:417A]", None),
        ):
            uri = parse_uri(text)
            self.assertEqual((uri.host, uri.port), (host, port), text)

    def test_ports(self):
        for port in (0, 1, 5060, 65535):
            self.assertEqual(parse_uri(f"sip:example.com:{port}").port, port)

    def test_invalid_ports(self):
        ports = ("65536", "99999", "", "-1", "+5", "5060a", "000001", "\u0665\u0660\u0666\u0660")
        self.assertEqual(accepted_by(parse_uri, [f"sip:example.com:{port}" for port in ports]), [])

    def test_hostnames(self):
        for host in ("example.com", "a", "a-b.example.com", "192.0.2.1", "EXAMPLE.com", "host5.example.net."):
            self.assertEqual(parse_uri(f"sip:{host}").host, host)


class ParameterAndHeaderTests(SynchronousTestCase):
    def test_params_with_and_without_values(self):
        uri = parse_uri("sip:example.com;lr;transport=udp;maddr=239.255.255.1;ttl=15;x-flag")
        self.assertEqual(
            uri.params.items(),
            [("lr", None), ("transport", "udp"), ("maddr", "239.255.255.1"), ("ttl", "15"), ("x-flag", None)],
        )
        self.assertEqual(uri.maddr, "239.255.255.1")
        self.assertIsNone(uri.params.get("lr"))
        self.assertIn("LR", uri.params)

    def test_repeated_param_keeps_both(self):
        uri = parse_uri("sip:example.com;a=1;a=2")
        self.assertEqual(uri.params.get("a"), "1")
        self.assertEqual(len(uri.params), 2)

    def test_headers(self):
        uri = parse_uri("sip:bob@example.com?subject=project%20x&priority=urgent&empty=")
        self.assertEqual(uri.headers, [("subject", "project%20x"), ("priority", "urgent"), ("empty", "")])


class UserPartTests(SynchronousTestCase):
    def test_password(self):
        self.assertEqual(parse_uri("sip:alice:secret@example.com").password, "secret")
        self.assertEqual(parse_uri("sip:alice:@example.com").password, "")
        self.assertIsNone(parse_uri("sip:alice@example.com").password)

    def test_telephone_user_with_semicolon_and_question_mark(self):
        """user-unreserved allows ';' and '?': they belong to the user part before '@'."""
        text = "sip:+1-212-555-1212;phone-context=example.com;isub=1411?x@gateway.com;user=phone"
        uri = parse_uri(text)
        self.assertEqual(uri.user, "+1-212-555-1212;phone-context=example.com;isub=1411?x")
        self.assertEqual(uri.host, "gateway.com")
        self.assertEqual(uri.params.items(), [("user", "phone")])
        self.assertEqual(uri.headers, [])
        self.assertEqual(str(uri), text)

    def test_semicolon_user_with_escaped_at(self):
        """RFC 4475 3.1.1.9 (semiuri)."""
        uri = parse_uri("sip:user;par=u%40example.net@example.com")
        self.assertEqual((uri.user, uri.host), ("user;par=u%40example.net", "example.com"))
        self.assertEqual(unescape(uri.user), "user;par=u@example.net")


class CharacterClassTests(SynchronousTestCase):
    def test_is_user_is_what_the_parser_takes_as_the_whole_user_part(self):
        for text in ("alice", "+1-212-555-1212;phone-context=x?y", "a%40b", "!~*'()&=+$,;?/", "_.-"):
            self.assertTrue(is_user(text), text)
            self.assertEqual(parse_uri(f"sip:{text}@example.com").user, text)
        for text in ("", "a b", "a@b", "a:b", "a%4", "a%zz", "<a>", 'a"', "a#b", "a\tb"):
            self.assertFalse(is_user(text), text)

    def test_is_paramchars(self):
        for text in ("line1", "a-b_c.d", "[::1]", "x/y:z&w+$", "%41"):
            self.assertTrue(is_paramchars(text), text)
            self.assertEqual(parse_uri(f"sip:example.com;line={text}").params.get("line"), text)
        for text in ("", "a;b", "a=b", "a?b", "a,b", "a b", "a%4"):
            self.assertFalse(is_paramchars(text), text)


class AbsoluteURITests(SynchronousTestCase):
    """Other schemes are kept opaque."""

    def test_other_schemes(self):
        for text, scheme, opaque in (
            ("tel:+1-201-555-0123", "tel", "+1-201-555-0123"),
            ("urn:service:sos", "urn", "service:sos"),
            ("mailto:alice@example.com", "mailto", "alice@example.com"),
            ("http://example.com/a?b=c#d", "http", "//example.com/a?b=c#d"),
            ("x-custom+scheme.1:whatever;a=b", "x-custom+scheme.1", "whatever;a=b"),
        ):
            uri = parse_uri(text)
            self.assertIsInstance(uri, AbsoluteURI)
            self.assertEqual((uri.scheme, uri.opaque, str(uri)), (scheme, opaque, text))
            self.assertFalse(uri.secure)

    def test_equality(self):
        self.assertEqual(parse_uri("TEL:+1"), parse_uri("tel:+1"))
        self.assertEqual(hash(parse_uri("TEL:+1")), hash(parse_uri("tel:+1")))
        self.assertNotEqual(parse_uri("tel:+1"), parse_uri("tel:+2"))
        self.assertNotEqual(parse_uri("sip:a@example.com"), parse_uri("tel:a@example.com"))


class InvalidURITests(SynchronousTestCase):
    def test_invalid(self):
        self.assertEqual(accepted_by(parse_uri, INVALID), [])

    def test_error_names_the_element(self):
        error = self.assertRaises(SIPParseError, parse_uri, "sip:exa mple.com", "Contact")
        self.assertEqual((error.element, error.status), ("Contact", 400))


class SipURIObjectTests(SynchronousTestCase):
    """Building, copying and comparing SipURI values."""

    def test_build(self):
        uri = SipURI(
            "example.com",
            "alice",
            scheme="sips",
            password="pw",
            port=5061,
            params=Parameters([("transport", "tls"), ("lr", None)]),
            headers=[("subject", "x")],
        )
        self.assertEqual(str(uri), "sips:alice:pw@example.com:5061;transport=tls;lr?subject=x")
        self.assertEqual(parse_uri(str(uri)), uri)

    def test_copy_is_independent(self):
        uri = parse_uri("sip:alice@example.com;transport=udp")
        copy = uri.copy()
        copy.params.set("transport", "tcp")
        copy.port = 5080
        self.assertEqual(str(uri), "sip:alice@example.com;transport=udp")
        self.assertEqual(str(copy), "sip:alice@example.com:5080;transport=tcp")

    def test_equality(self):
        """Scheme and host compare case-insensitively, the user part exactly."""
        uri = parse_uri("sip:alice@example.com:5060")
        self.assertEqual(uri, parse_uri("SIP:alice@EXAMPLE.com:5060"))
        self.assertEqual(hash(uri), hash(parse_uri("SIP:alice@EXAMPLE.com:5060")))
        self.assertNotEqual(uri, parse_uri("sip:Alice@example.com:5060"))
        self.assertNotEqual(uri, parse_uri("sip:alice@example.com"))
        self.assertNotEqual(uri, parse_uri("sips:alice@example.com:5060"))
