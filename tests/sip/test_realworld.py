"""Registration exchanges as Kamailio, Asterisk and desk phones put them on the wire."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import (
    WILDCARD,
    CSeq,
    Request,
    Response,
    SIPParseError,
    StreamFramer,
    make_response,
    parse_message,
)


def wire(*lines: str, body: bytes = b"") -> bytes:
    """A message from its start line and header lines (CRLF ends, empty line, body)."""
    return "".join(line + "\r\n" for line in lines).encode("utf-8") + b"\r\n" + body


class RealWorldCase(SynchronousTestCase):
    def parsed(self, data: bytes):
        """Parse, validate and check the canonical round trip."""
        message = parse_message(data).validate()
        self.assertEqual(parse_message(bytes(message)), message)
        return message


# --- Kamailio uac module (uac_reg) registering to a registrar ------------------------
KAMAILIO_CALL_ID = "1a2b3c4d-6a1f0d2e@127.0.0.1"
KAMAILIO_BRANCH = "z9hG4bK7b1c.9f3e2a7d6c5b4a39e8f7d6c5b4a39e8f.0"
KAMAILIO_NONCE = "ZFz1pWRc9Hn9hwD5rJ6yBn0T3xlVfBf2"

KAMAILIO_REGISTER = wire(
    "REGISTER sip:example.com SIP/2.0",
    f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={KAMAILIO_BRANCH}",
    "To: <sip:alice@example.com>",
    "From: <sip:alice@example.com>;tag=a8e3f6b2c1d04e5f9a7b6c5d4e3f2a1b-7c1d",
    "CSeq: 10 REGISTER",
    f"Call-ID: {KAMAILIO_CALL_ID}",
    "Max-Forwards: 70",
    "Content-Length: 0",
    "User-Agent: kamailio (5.7.4 (x86_64/linux))",
    "Contact: <sip:l_uuid@127.0.0.1:5060>",
    "Expires: 360",
)

KAMAILIO_401 = wire(
    "SIP/2.0 401 Unauthorized",
    f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={KAMAILIO_BRANCH};received=192.0.2.10;rport=5060",
    "To: <sip:alice@example.com>;tag=b27e1a56fbc6c4d8f0e9d8c7b6a59483.3f21",
    "From: <sip:alice@example.com>;tag=a8e3f6b2c1d04e5f9a7b6c5d4e3f2a1b-7c1d",
    "CSeq: 10 REGISTER",
    f"Call-ID: {KAMAILIO_CALL_ID}",
    f'WWW-Authenticate: Digest realm="example.com", nonce="{KAMAILIO_NONCE}", qop="auth"',
    "Server: kamailio (5.7.4 (x86_64/linux))",
    "Content-Length: 0",
)

KAMAILIO_AUTH_REGISTER = wire(
    "REGISTER sip:example.com SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK8c2d.0a4f3b8e7d6c5b4a39e8f7d6c5b4a39e.0",
    "To: <sip:alice@example.com>",
    "From: <sip:alice@example.com>;tag=a8e3f6b2c1d04e5f9a7b6c5d4e3f2a1b-7c1d",
    "CSeq: 11 REGISTER",
    f"Call-ID: {KAMAILIO_CALL_ID}",
    "Max-Forwards: 70",
    "Content-Length: 0",
    "User-Agent: kamailio (5.7.4 (x86_64/linux))",
    "Contact: <sip:l_uuid@127.0.0.1:5060>",
    "Expires: 360",
    f'Authorization: Digest username="alice", realm="example.com", nonce="{KAMAILIO_NONCE}", '
    'uri="sip:example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, '
    'cnonce="0a4f113b", nc=00000001',
)

KAMAILIO_200 = wire(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK8c2d.0a4f3b8e7d6c5b4a39e8f7d6c5b4a39e.0"
    ";received=192.0.2.10;rport=5060",
    "To: <sip:alice@example.com>;tag=b27e1a56fbc6c4d8f0e9d8c7b6a59483.9d0e",
    "From: <sip:alice@example.com>;tag=a8e3f6b2c1d04e5f9a7b6c5d4e3f2a1b-7c1d",
    "CSeq: 11 REGISTER",
    f"Call-ID: {KAMAILIO_CALL_ID}",
    "Contact: <sip:l_uuid@127.0.0.1:5060>;expires=360",
    "Date: Sun, 22 Nov 2026 08:00:00 GMT",
    "Server: kamailio (5.7.4 (x86_64/linux))",
    "Content-Length: 0",
)

# --- Asterisk res_pjsip outbound registration ---------------------------------------------
ASTERISK_INSTANCE = "<urn:uuid:5a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d>"
ASTERISK_ALLOW = (
    "OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER"
)


def asterisk_register(cseq: int, *extra: str) -> bytes:
    return wire(
        "REGISTER sip:sip.example.net SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.5:5060;rport;branch=z9hG4bKPj3e8b0c36-4f6b-4b0e-9a7a-{cseq:012d}",
        "From: <sip:7001@sip.example.net>;tag=8b9e1f6c-2a3d-4e5f-9c7b-1d2e3f4a5b6c",
        "To: <sip:7001@sip.example.net>",
        "Call-ID: 5e7f8a9b-0c1d-4e2f-8a3b-4c5d6e7f8a9b",
        f"CSeq: {cseq} REGISTER",
        f'Contact: <sip:s@192.0.2.5:5060>;+sip.instance="{ASTERISK_INSTANCE}"',
        "Expires: 3600",
        f"Allow: {ASTERISK_ALLOW}",
        "Supported: 100rel, timer, replaces, norefersub",
        *extra,
        "Max-Forwards: 70",
        "User-Agent: Asterisk PBX 20.5.0",
        "Content-Length:  0",
    )


ASTERISK_AUTH = (
    'Authorization: Digest username="7001", realm="sip.example.net", '
    'nonce="1700000000/4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90", uri="sip:sip.example.net", '
    'response="3b7e0c5a1f2d4e6b8a9c0d1e2f3a4b5c", algorithm=MD5, cnonce="c0ffee42", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=auth, nc=00000001'
)

# --- A desk phone (Yealink / Polycom / Linphone style) -------------------------------------
PHONE_INSTANCE = "<urn:uuid:00000000-0000-1000-8000-805EC0123456>"
PHONE_REGISTER = wire(
    "REGISTER sip:pbx.example.org SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bK1871012345",
    'From: "1000" <sip:1000@pbx.example.org>;tag=1871012345',
    'To: "1000" <sip:1000@pbx.example.org>',
    "Call-ID: 0_1871012345@192.0.2.9",
    "CSeq: 1 REGISTER",
    f'Contact: <sip:1000@192.0.2.9:5062;transport=udp>;reg-id=1;+sip.instance="{PHONE_INSTANCE}";expires=3600',
    "Max-Forwards: 70",
    "User-Agent: Yealink SIP-T46S 66.86.0.15",
    "Expires: 3600",
    "Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, "
    "MESSAGE",
    "Supported: outbound, path, gruu",
    "Allow-Events: talk,hold,conference,refer,check-sync",
    "Content-Length: 0",
)

# A registrar's 200 OK listing every binding of the AOR: several per line and across lines.
MULTI_CONTACT_200 = wire(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bK1871012346;received=198.51.100.20;rport=40123",
    'From: "1000" <sip:1000@pbx.example.org>;tag=1871012345',
    'To: "1000" <sip:1000@pbx.example.org>;tag=as6a1b2c3d',
    "Call-ID: 0_1871012345@192.0.2.9",
    "CSeq: 2 REGISTER",
    f'Contact: <sip:1000@192.0.2.9:5062;transport=udp>;reg-id=1;+sip.instance="{PHONE_INSTANCE}";expires=3600, '
    "<sip:1000@198.51.100.7:5060>;expires=120",
    'Contact: "Soft, phone" <sip:1000@[2001:db8::9]:5062;transport=tcp>;q=0.5;expires=42',
    "Contact: sip:1000@203.0.113.4;expires=0",
    "Content-Length: 0",
)


def response_to(request: bytes, status_line: str, *extra: str) -> bytes:
    """A response copying the dialog headers of a REGISTER (for the error responses)."""
    m = parse_message(request)
    return wire(
        status_line,
        *(f"{name}: {value}" for name, value in m.headers.items() if name in ("Via", "From", "To", "Call-ID", "CSeq")),
        *extra,
        "Content-Length: 0",
    )


class KamailioRegistrationTests(RealWorldCase):
    """REGISTER, 401, authenticated REGISTER, 200 as Kamailio's uac module exchanges them."""

    def test_register(self):
        m = self.parsed(KAMAILIO_REGISTER)
        self.assertIsInstance(m, Request)
        self.assertEqual((m.method, str(m.uri)), ("REGISTER", "sip:example.com"))
        self.assertEqual(m.headers.get("User-Agent"), "kamailio (5.7.4 (x86_64/linux))")
        [contact] = m.contacts
        self.assertEqual((contact.uri.user, contact.uri.host, contact.uri.port), ("l_uuid", "127.0.0.1", 5060))
        self.assertIsNone(contact.expires)
        self.assertEqual(m.expires, 360)
        self.assertEqual(m.top_via.branch, KAMAILIO_BRANCH)
        self.assertEqual(m.cseq, CSeq(10, "REGISTER"))
        self.assertIsNone(m.to.tag)

    def test_401_challenge(self):
        m = self.parsed(KAMAILIO_401)
        self.assertEqual((m.status, m.reason), (401, "Unauthorized"))
        [challenge] = m.www_authenticate
        self.assertEqual(challenge.scheme, "Digest")
        self.assertEqual(
            [(k, challenge.get(k)) for k, _ in challenge.params],
            [("realm", "example.com"), ("nonce", KAMAILIO_NONCE), ("qop", "auth")],
        )
        self.assertEqual(challenge.params[0], ("realm", '"example.com"'))
        self.assertEqual((m.top_via.received, m.top_via.rport), ("192.0.2.10", 5060))

    def test_authenticated_register(self):
        m = self.parsed(KAMAILIO_AUTH_REGISTER)
        [credentials] = m.authorization
        self.assertEqual(credentials.scheme, "Digest")
        expected = {
            "username": "alice",
            "realm": "example.com",
            "nonce": KAMAILIO_NONCE,
            "uri": "sip:example.com",
            "response": "6629fae49393a05397450978507c4ef1",
            "algorithm": "MD5",
            "qop": "auth",
            "cnonce": "0a4f113b",
            "nc": "00000001",
        }
        self.assertEqual({k: credentials.get(k) for k, _ in credentials.params}, expected)
        self.assertEqual([k for k, _ in credentials.params], list(expected))
        self.assertEqual(m.cseq.number, 11)

    def test_200_ok(self):
        m = self.parsed(KAMAILIO_200)
        self.assertEqual([c.expires for c in m.contacts], [360])
        self.assertEqual(str(m.date), "2026-11-22 08:00:00+00:00")
        self.assertEqual(m.to.tag, "b27e1a56fbc6c4d8f0e9d8c7b6a59483.9d0e")

    def test_exchange_over_one_tcp_stream(self):
        """The four messages back to back, cut at odd places, frame one by one."""
        messages = [KAMAILIO_REGISTER, KAMAILIO_401, KAMAILIO_AUTH_REGISTER, KAMAILIO_200]
        stream = b"".join(messages)
        framer = StreamFramer()
        items = []
        for start in range(0, len(stream), 97):
            items += framer.feed(stream[start : start + 97])
        self.assertEqual(items, messages)


class AsteriskRegistrationTests(RealWorldCase):
    """res_pjsip outbound registration."""

    def test_register(self):
        m = self.parsed(asterisk_register(35471))
        [contact] = m.contacts
        self.assertEqual(str(contact.uri), "sip:s@192.0.2.5:5060")
        self.assertEqual(contact.params.get("+sip.instance"), f'"{ASTERISK_INSTANCE}"')
        self.assertEqual(m.tokens("Allow"), ASTERISK_ALLOW.split(", "))
        self.assertEqual(m.tokens("Supported"), ["100rel", "timer", "replaces", "norefersub"])
        self.assertTrue(m.top_via.rport_requested)
        self.assertIsNone(m.top_via.rport)
        self.assertEqual(m.content_length, 0)

    def test_authenticated_register(self):
        m = self.parsed(asterisk_register(35472, ASTERISK_AUTH))
        [credentials] = m.authorization
        self.assertEqual(credentials.get("algorithm"), "MD5")
        self.assertEqual(credentials.get("opaque"), "5ccc069c403ebaf9f0171e9517f40e41")
        self.assertEqual(credentials.get("nonce"), "1700000000/4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90")
        self.assertEqual((credentials.get("qop"), credentials.get("nc")), ("auth", "00000001"))
        self.assertEqual(len(credentials.params), 10)


class DeskPhoneRegistrationTests(RealWorldCase):
    """A desk phone registering with outbound (RFC 5626) parameters."""

    def test_register(self):
        m = self.parsed(PHONE_REGISTER)
        [contact] = m.contacts
        self.assertEqual(contact.uri.transport, "udp")
        self.assertEqual((contact.uri.host, contact.uri.port), ("192.0.2.9", 5062))
        self.assertEqual(contact.params.get("reg-id"), "1")
        self.assertEqual(contact.params.get("+sip.instance"), f'"{PHONE_INSTANCE}"')
        self.assertEqual(contact.expires, 3600)
        self.assertEqual(m.from_.display_name, "1000")
        self.assertEqual(m.tokens("Supported"), ["outbound", "path", "gruu"])
        self.assertEqual(m.headers.get("Allow-Events"), "talk,hold,conference,refer,check-sync")
        self.assertEqual(m.headers.get("u"), "talk,hold,conference,refer,check-sync")

    def test_200_with_several_contacts(self):
        """Each binding keeps its own expires, however the Contacts are laid out."""
        m = self.parsed(MULTI_CONTACT_200)
        self.assertEqual([c.expires for c in m.contacts], [3600, 120, 42, 0])
        self.assertEqual(
            [str(c.uri) for c in m.contacts],
            [
                "sip:1000@192.0.2.9:5062;transport=udp",
                "sip:1000@198.51.100.7:5060",
                "sip:1000@[2001:db8::9]:5062;transport=tcp",
                "sip:1000@203.0.113.4",
            ],
        )
        self.assertEqual(m.contacts[0].params.get("+sip.instance"), f'"{PHONE_INSTANCE}"')
        self.assertEqual(m.contacts[2].display_name, "Soft, phone")
        self.assertEqual(m.contacts[2].params.get("q"), "0.5")
        self.assertEqual(m.contacts[2].uri.host, "[2001:db8::9]")
        self.assertEqual((m.top_via.received, m.top_via.rport), ("198.51.100.20", 40123))

    def test_unregister_all(self):
        """Contact: * with Expires: 0 removes every binding."""
        data = PHONE_REGISTER.replace(
            f'<sip:1000@192.0.2.9:5062;transport=udp>;reg-id=1;+sip.instance="{PHONE_INSTANCE}";expires=3600'.encode(),
            b"*",
        ).replace(b"Expires: 3600", b"Expires: 0")
        m = self.parsed(data)
        self.assertEqual(m.contacts, [WILDCARD])
        self.assertEqual(m.expires, 0)


class ErrorResponseTests(RealWorldCase):
    """423, 503 and aggregated challenges."""

    def test_423_min_expires(self):
        m = self.parsed(response_to(PHONE_REGISTER, "SIP/2.0 423 Interval Too Brief", "Min-Expires: 1800"))
        self.assertEqual((m.status, m.reason), (423, "Interval Too Brief"))
        self.assertEqual(m.min_expires, 1800)

    def test_min_expires_clamps(self):
        m = self.parsed(response_to(PHONE_REGISTER, "SIP/2.0 423 Interval Too Brief", "Min-Expires: 99999999999"))
        self.assertEqual(m.min_expires, 2**32 - 1)

    def test_503_retry_after(self):
        m = self.parsed(
            response_to(
                KAMAILIO_REGISTER, "SIP/2.0 503 Service Unavailable", "Retry-After: 120 (maintenance);duration=3600"
            )
        )
        retry = m.retry_after
        self.assertEqual((retry.seconds, retry.comment, retry.duration), (120, "maintenance", 3600))
        self.assertEqual(retry.params.items(), [("duration", "3600")])

    def test_407_with_aggregated_challenges(self):
        """A proxy merging forked 401/407 answers (RFC 3261 16.7): every challenge split out."""
        m = self.parsed(
            response_to(
                KAMAILIO_REGISTER,
                "SIP/2.0 407 Proxy Authentication Required",
                'Proxy-Authenticate: Digest realm="proxy.example.com", nonce="p1", algorithm=SHA-256, qop="auth"',
                'Proxy-Authenticate: Digest realm="proxy.example.com", nonce="p2", algorithm=MD5, qop="auth,auth-int"',
                'WWW-Authenticate: Digest realm="a", nonce="1", algorithm=SHA-256, '
                'Digest realm="a", nonce="2", algorithm=MD5',
            )
        )

        def summary(challenges):
            return [(c.scheme, [(k, c.get(k)) for k, _ in c.params]) for c in challenges]

        proxy = "proxy.example.com"
        self.assertEqual(
            summary(m.proxy_authenticate),
            [
                ("Digest", [("realm", proxy), ("nonce", "p1"), ("algorithm", "SHA-256"), ("qop", "auth")]),
                ("Digest", [("realm", proxy), ("nonce", "p2"), ("algorithm", "MD5"), ("qop", "auth,auth-int")]),
            ],
        )
        self.assertEqual(
            summary(m.www_authenticate),
            [
                ("Digest", [("realm", "a"), ("nonce", "1"), ("algorithm", "SHA-256")]),
                ("Digest", [("realm", "a"), ("nonce", "2"), ("algorithm", "MD5")]),
            ],
        )

    def test_folded_www_authenticate(self):
        """Folding inside a challenge is one space; the params are unaffected."""
        m = self.parsed(
            response_to(
                KAMAILIO_REGISTER,
                "SIP/2.0 401 Unauthorized",
                'WWW-Authenticate: Digest realm="example.com",\r\n nonce="abc123",\r\n\tqop="auth", '
                "stale=FALSE,\r\n   algorithm=MD5",
            )
        )
        [challenge] = m.www_authenticate
        self.assertEqual(
            [(k, challenge.get(k)) for k, _ in challenge.params],
            [("realm", "example.com"), ("nonce", "abc123"), ("qop", "auth"), ("stale", "FALSE"), ("algorithm", "MD5")],
        )
        self.assertIn(
            b'WWW-Authenticate: Digest realm="example.com", nonce="abc123", qop="auth", stale=FALSE, algorithm=MD5\r\n',
            bytes(m),
        )

    def test_bearer_token68(self):
        """RFC 8898 Bearer credentials: a token68 blob, padding included."""
        token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI3MDAxIn0.c2lnbmF0dXJl=="
        m = self.parsed(asterisk_register(35473, f"Authorization: Bearer {token}"))
        [credentials] = m.authorization
        self.assertEqual(credentials.scheme, "Bearer")
        self.assertEqual(credentials.token68, token)
        self.assertEqual(credentials.params, [])


# An INVITE written with every compact form (RFC 3261 7.3.3).
COMPACT_SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\n"
)
COMPACT_INVITE = wire(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "v: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
    "Max-Forwards: 70",
    "f: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
    "t: Bob <sip:bob@biloxi.example.com>",
    "i: 3848276298220188511@atlanta.example.com",
    "CSeq: 1 INVITE",
    "m: <sip:alice@client.atlanta.example.com;transport=tcp>",
    "k: 100rel, timer",
    "c: application/sdp",
    f"l: {len(COMPACT_SDP)}",
    body=COMPACT_SDP,
)


class CompactFormTests(RealWorldCase):
    """v: f: t: i: m: l: read as their long forms and serialise long."""

    def test_compact_headers(self):
        m = self.parsed(COMPACT_INVITE)
        self.assertEqual(m.top_via.host, "client.atlanta.example.com")
        self.assertEqual((m.from_.display_name, m.from_.tag), ("Alice", "9fxced76sl"))
        self.assertEqual(m.to.display_name, "Bob")
        self.assertEqual(m.call_id, "3848276298220188511@atlanta.example.com")
        self.assertEqual(m.contacts[0].uri.transport, "tcp")
        self.assertEqual(m.tokens("Supported"), ["100rel", "timer"])
        self.assertEqual(m.content_length, len(COMPACT_SDP))
        self.assertEqual(m.body, COMPACT_SDP)
        pairs = (("i", "Call-ID"), ("f", "From"), ("t", "To"), ("m", "Contact"), ("l", "Content-Length"), ("v", "Via"))
        for compact, long in pairs:
            self.assertEqual(m.headers.get(compact), m.headers.get(long))
            self.assertEqual(m.headers.get(long.upper()), m.headers.get(long))

    def test_serialises_long_names(self):
        names = [name for name, _ in parse_message(COMPACT_INVITE).headers.items()]
        self.assertEqual(
            names,
            [
                "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq",
                "Contact", "Supported", "Content-Type", "Content-Length",
            ],
        )
        start = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/TCP client.atlanta.example.com:5060;"
        self.assertTrue(bytes(parse_message(COMPACT_INVITE)).startswith(start))


IPV6_OPTIONS = wire(
    "OPTIONS sip:bob@[2001:db8::10]:5060 SIP/2.0",
    "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-v6-1;rport",
    "Max-Forwards: 70",
    "From: <sip:alice@[2001:db8::1]>;tag=v6a",
    "To: <sip:bob@[2001:db8::10]>",
    "Call-ID: v6-1@2001:db8::1",
    "CSeq: 7 OPTIONS",
    "Contact: <sip:alice@[2001:db8::1]:5060;transport=udp>",
    "Content-Length: 0",
)


class IPv6Tests(RealWorldCase):
    """IPv6 references in the Request-URI, Via and Contact."""

    def test_ipv6_request(self):
        m = self.parsed(IPV6_OPTIONS)
        self.assertEqual((m.uri.host, m.uri.port), ("[2001:db8::10]", 5060))
        self.assertEqual((m.top_via.host, m.top_via.port), ("[2001:db8::1]", 5060))
        self.assertEqual((m.contacts[0].uri.host, m.contacts[0].uri.port), ("[2001:db8::1]", 5060))
        self.assertEqual(m.call_id, "v6-1@2001:db8::1")

    def test_received_ipv6_reference(self):
        """received=[...] as many servers send it (RFC 5118 4.5)."""
        m = self.parsed(self._answer(b"received=[2001:db8::99]"))
        self.assertEqual((m.top_via.received, m.top_via.rport), ("[2001:db8::99]", 40000))

    def test_received_ipv6_address(self):
        """received=IPv6address without brackets is RFC 3261's own grammar (25.1 via-received)."""
        m = self.parsed(self._answer(b"received=2001:db8::99"))
        self.assertEqual((m.top_via.received, m.top_via.rport), ("2001:db8::99", 40000))

    def _answer(self, received: bytes) -> bytes:
        response = bytes(make_response(parse_message(IPV6_OPTIONS), 200, to_tag="v6b"))
        return response.replace(b";rport", b";rport=40000;" + received, 1)


class MakeResponseTests(RealWorldCase):
    """make_response copies the transaction headers and tags To."""

    def test_200_copies_and_tags(self):
        request = parse_message(KAMAILIO_AUTH_REGISTER)
        response = make_response(request, 200, to_tag="x")
        self.assertIsInstance(response, Response)
        self.assertEqual((response.status, response.reason), (200, "OK"))
        for name in ("Via", "From", "Call-ID", "CSeq"):
            self.assertEqual(response.headers.get_all(name), request.headers.get_all(name))
        self.assertEqual(response.to.tag, "x")
        self.assertEqual(response.to.uri, request.to.uri)
        self.assertEqual(response.from_.tag, request.from_.tag)
        self.assertEqual(response.cseq, CSeq(11, "REGISTER"))
        self.assertEqual(response.content_length, 0)
        self.assertEqual(parse_message(bytes(response)).validate(), response)

    def test_every_via_copied_in_order(self):
        request = parse_message(
            KAMAILIO_REGISTER.replace(b"Via: ", b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1\r\nVia: ", 1)
        )
        response = make_response(request, 200, to_tag="x")
        self.assertEqual([v.host for v in response.via], ["proxy.example.com", "127.0.0.1"])

    def test_existing_to_tag_kept(self):
        request = parse_message(KAMAILIO_REGISTER.replace(b"To: <sip:alice@example.com>", b"To: <sip:a@example.com>;tag=old"))
        self.assertEqual(make_response(request, 200, to_tag="x").to.tag, "old")

    def test_100_trying_not_tagged(self):
        response = make_response(parse_message(KAMAILIO_REGISTER), 100, to_tag="x")
        self.assertEqual((response.status, response.reason), (100, "Trying"))
        self.assertIsNone(response.to.tag)

    def test_addr_spec_to_tagged(self):
        """A To without <> (RFC 4475 dblreq style) takes the tag as a header parameter."""
        request = parse_message(KAMAILIO_REGISTER.replace(b"To: <sip:alice@example.com>", b"To: sip:alice@example.com"))
        response = make_response(request, 401, to_tag="x")
        self.assertEqual((response.to.tag, str(response.to.uri)), ("x", "sip:alice@example.com"))


class MalformedRealWorldTests(RealWorldCase):
    """Real-world breakage is refused with the culprit named."""

    def test_unterminated_nonce(self):
        m = parse_message(KAMAILIO_401.replace(f'nonce="{KAMAILIO_NONCE}"'.encode(), b'nonce="abc'))
        with self.assertRaises(SIPParseError) as caught:
            m.www_authenticate
        self.assertEqual(caught.exception.element, "WWW-Authenticate")

    def test_contact_expires_not_a_number(self):
        m = parse_message(KAMAILIO_200.replace(b";expires=360", b";expires=soon"))
        with self.assertRaises(SIPParseError) as caught:
            m.validate()
        self.assertEqual(caught.exception.element, "Contact")
