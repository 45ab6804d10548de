"""RFC 4475 torture messages, each handled as tests/data/rfc4475/INDEX.md describes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from tests.support import corpus
from txuac.sip import (
    WILDCARD,
    AbsoluteURI,
    AuthParams,
    CSeq,
    KeepAlive,
    NameAddress,
    Request,
    Response,
    RetryAfter,
    SIPParseError,
    SipURI,
    StreamFramer,
    Via,
    parse_message,
    unescape,
)
from txuac.sip.message import TOKEN_LIST_HEADERS, TYPED_VIEWS

# Header key -> how to read its typed view: the message module's own table, so that a
# view added there is exercised here too.
_VIEW_ATTRIBUTES = TYPED_VIEWS
_TOKEN_LIST_KEYS = TOKEN_LIST_HEADERS


def read_view(message, key: str):
    """The typed view of the header with lookup key ``key``."""
    if key in _TOKEN_LIST_KEYS:
        return message.tokens(key)
    return getattr(message, _VIEW_ATTRIBUTES[key])


def has_view(key: str) -> bool:
    return key in _VIEW_ATTRIBUTES or key in _TOKEN_LIST_KEYS


def describe(view):
    """A typed view as plain, comparable data."""
    if isinstance(view, list):
        return [describe(item) for item in view]
    if isinstance(view, Via):
        return (view.protocol, view.transport, view.host, view.port, view.params.items())
    if isinstance(view, NameAddress):
        return (view.display_name, str(view.uri), view.params.items())
    if isinstance(view, CSeq):
        return (view.number, view.method)
    if isinstance(view, AuthParams):
        return (view.scheme, view.params, view.token68)
    if isinstance(view, RetryAfter):
        return (view.seconds, view.comment, view.params.items())
    if view is WILDCARD:
        return "*"
    return view


def outcome(data: bytes):
    """("ok", message) or ("error", status, element) for one datagram."""
    try:
        return ("ok", parse_message(data))
    except SIPParseError as e:
        return ("error", e.status, e.element)


def chunkings(data: bytes):
    """(label, chunks): one chunk, one octet at a time, and seeded random splits."""
    yield "one chunk", [data]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(4475)
    for n in range(4):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, min(16, len(data) - 1))))
        yield f"random split {n}", [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list:
    items = []
    for chunk in chunks:
        items += framer.feed(chunk)
    return items


def feed_until_error(chunks: list[bytes]) -> tuple[list, SIPParseError | None]:
    """Items delivered before the framer failed, and the failure (raised, or pending in
    ``framer.error`` when whole messages came first in the same chunk)."""
    framer = StreamFramer()
    items = []
    for chunk in chunks:
        try:
            items += framer.feed(chunk)
        except SIPParseError as e:
            return items, e
        if framer.error is not None:
            return items, framer.error
    return items, None


def nameaddr(uri: str, *params: tuple[str, str | None], display: str | None = None):
    return (display, uri, list(params))


def via(transport: str, host: str, *params: tuple[str, str | None], port: int | None = None):
    return ("SIP/2.0", transport, host, port, list(params))


def _sip(user: str, host: str) -> str:
    return f"sip:{user}@{host}"


_LONG_CALLER = "amazinglylongcallername" * 5
_LONGREQ_TO_URI = (
    "sip:user@example.com:6000;unknownparam1=very" + "long" * 20 + "value;longparam" + "name" * 25
    + "=shortvalue;very" + "long" * 25 + "ParameterNameWithNoValue"
)

# Every header with a typed view in each valid message, as ``describe`` shows it.
EXPECTED_VIEWS: dict[str, dict] = {
    "wsinv": {
        "to": nameaddr("sip:vivekg@chair-dnrc.example.com", ("tag", "1918181833n")),
        "from": nameaddr("sip:jdrosen@example.com", ("tag", "98asjd8"), display='J Rosenberg \\"'),
        "max-forwards": 68,
        "call-id": "wsinv.ndaksdj@192.0.2.1",
        "content-length": 150,
        "cseq": (9, "INVITE"),
        "via": [
            via("UDP", "192.0.2.2", ("branch", "390skdjuw")),
            via("TCP", "spindle.example.com", ("branch", "z9hG4bK9ikj8")),
            via("UDP", "192.168.255.111", ("branch", "z9hG4bK30239")),
        ],
        "route": [nameaddr("sip:services.example.com;lr;unknownwith=value;unknown-no-value")],
        "contact": [
            nameaddr(
                "sip:jdrosen@example.com",
                ("newparam", "newvalue"),
                ("secondparam", None),
                ("q", "0.33"),
                display='Quoted string ""',
            )
        ],
    },
    "intmeth": {
        "via": [via("TCP", "host1.example.com", ("branch", "z9hG4bK-.!%66*_+`'~"))],
        "to": nameaddr(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com", display="BEL:\x07 NUL:\x00 DEL:\x7f"
        ),
        "from": nameaddr(
            "sip:mundane@example.com",
            ("fromParam''~+*_!.-%", '"работающий"'),
            ("tag", "_token~1'+`*%!-."),
            display="token1~` token2'+_ token3*%!.-",
        ),
        "call-id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        "cseq": (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
        "max-forwards": 255,
        "content-length": 0,
    },
    "esc01": {
        "to": nameaddr("sip:%75se%72@example.com"),
        "from": nameaddr("sip:I%20have%20spaces@example.net", ("tag", "938")),
        "max-forwards": 87,
        "call-id": "esc01.239409asdfakjkn23onasd0-3234",
        "cseq": (234234, "INVITE"),
        "via": [via("UDP", "host5.example.net", ("branch", "z9hG4bKkdjuw"))],
        "contact": [nameaddr("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")],
        "content-length": 150,
    },
    "escnull": {
        "to": nameaddr("sip:null-%00-null@example.com"),
        "from": nameaddr("sip:null-%00-null@example.com", ("tag", "839923423")),
        "max-forwards": 70,
        "call-id": "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        "cseq": (14398234, "REGISTER"),
        "via": [via("UDP", "host5.example.com", ("branch", "z9hG4bKkdjuw"))],
        "contact": [nameaddr("sip:%00@host5.example.com"), nameaddr("sip:%00%00@host5.example.com")],
        "content-length": 0,
    },
    "esc02": {
        "to": nameaddr("sip:resource@example.com", display="%Z%45"),
        "from": nameaddr("sip:resource@example.com", ("tag", "f232jadfj23"), display="%Z%45"),
        "call-id": "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        "via": [via("TCP", "host.example.com", ("branch", "z9hG4bK209%fzsnel234"))],
        "cseq": (29344, "RE%47IST%45R"),
        "max-forwards": 70,
        # C%6Fntact is an unknown header, not a Contact: no alias2 here.
        "contact": [nameaddr("sip:alias1@host1.example.com"), nameaddr("sip:alias3@host3.example.com")],
        "content-length": 0,
    },
    "lwsdisp": {
        "to": nameaddr("sip:user@example.com"),
        "from": nameaddr("sip:caller@example.com", ("tag", "323"), display="caller"),
        "max-forwards": 70,
        "call-id": "lwsdisp.1234abcd@funky.example.com",
        "cseq": (60, "OPTIONS"),
        "via": [via("UDP", "funky.example.com", ("branch", "z9hG4bKkdjuw"))],
        "content-length": 0,
    },
    "longreq": {
        "to": nameaddr(
            _LONGREQ_TO_URI, display="I have a user name of " + "extreme" * 10 + " proportion"
        ),
        "from": nameaddr(
            _sip(_LONG_CALLER, "example.net"),
            ("tag", "1" + "298" * 50 + "2424"),
            ("unknownheaderparam" + "name" * 20, "unknowheaderparam" + "value" * 15),
            ("unknownValueless" + "paramname" * 10, None),
        ),
        "call-id": "longreq.one" + "really" * 20 + "longcallid",
        "cseq": (3882340, "INVITE"),
        "via": [via("TCP", f"sip{n}.example.com") for n in range(33, 0, -1)]
        + [via("TCP", "host.example.com", ("received", "192.0.2.5"), ("branch", "very" + "long" * 50 + "branchvalue"))],
        "max-forwards": 70,
        "contact": [nameaddr(_sip(_LONG_CALLER, "host5.example.net"))],
        "content-length": 150,
    },
    "dblreq": {
        "to": nameaddr("sip:j.user@example.com"),
        "from": nameaddr("sip:j.user@example.com", ("tag", "43251j3j324")),
        "max-forwards": 8,
        "call-id": "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        "contact": [nameaddr("sip:j.user@host.example.com")],
        "cseq": (8, "REGISTER"),
        "via": [via("UDP", "192.0.2.125", ("branch", "z9hG4bKkdjuw23492"))],
        "content-length": 0,
    },
    "semiuri": {
        "to": nameaddr("sip:j_user@example.com"),
        "from": nameaddr("sip:caller@example.org", ("tag", "33242")),
        "max-forwards": 3,
        "call-id": "semiuri.0ha0isndaksdj",
        "cseq": (8, "OPTIONS"),
        "via": [via("UDP", "192.0.2.1", ("branch", "z9hG4bKkdjuw"))],
        "content-length": 0,
    },
    "transports": {
        "to": nameaddr("sip:user@example.com"),
        "from": nameaddr("sip:caller@example.com", ("tag", "323")),
        "max-forwards": 70,
        "call-id": "transports.kijh4akdnaqjkwendsasfdj",
        "cseq": (60, "OPTIONS"),
        "via": [
            via("UDP", "t1.example.com", ("branch", "z9hG4bKkdjuw")),
            via("SCTP", "t2.example.com", ("branch", "z9hG4bKklasjdhf")),
            via("TLS", "t3.example.com", ("branch", "z9hG4bK2980unddj")),
            via("UNKNOWN", "t4.example.com", ("branch", "z9hG4bKasd0f3en")),
            via("TCP", "t5.example.com", ("branch", "z9hG4bK0a9idfnee")),
        ],
        "content-length": 0,
    },
    "mpart01": {
        "via": [
            via("UDP", "127.0.0.1", ("branch", "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-"), ("rport", None), port=5070)
        ],
        "max-forwards": 70,
        "route": [nameaddr("sip:127.0.0.1:5080")],
        "contact": [nameaddr("sip:fluffy@127.0.0.1:5070")],
        "to": nameaddr("sip:kumiko@example.org"),
        "from": nameaddr("sip:fluffy@example.com", ("tag", "2fb0dcc9")),
        "call-id": "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        "cseq": (1, "MESSAGE"),
        "date": datetime(2005, 10, 15, 4, 44, 56, tzinfo=timezone.utc),
        "content-length": 553,
    },
    "unreason": {
        "via": [via("UDP", "192.0.2.198", ("branch", "z9hG4bK1324923"))],
        "call-id": "unreason.1234ksdfak3j2erwedfsASdf",
        "cseq": (35, "INVITE"),
        "from": nameaddr("sip:user@example.com", ("tag", "11141343")),
        "to": nameaddr("sip:user@example.edu", ("tag", "2229")),
        "content-length": 154,
        "contact": [nameaddr("sip:user@host198.example.com")],
    },
    "noreason": {
        "via": [via("UDP", "192.0.2.105", ("branch", "z9hG4bK2398ndaoe"))],
        "call-id": "noreason.asndj203insdf99223ndf",
        "cseq": (35, "INVITE"),
        "from": nameaddr("sip:user@example.com", ("tag", "39ansfi3")),
        "to": nameaddr("sip:user@example.edu", ("tag", "902jndnke3")),
        "content-length": 0,
        "contact": [nameaddr("sip:user@host105.example.com")],
    },
}


class CorpusTests(SynchronousTestCase):
    """The expectation table covers exactly the 49 files of INDEX.md."""

    def test_table_matches_index_and_files(self):
        """Every file has one case, with the section and kind INDEX.md gives."""
        index = corpus.index_kinds()
        self.assertEqual(len(corpus.CASES), 49)
        self.assertEqual(sorted(corpus.CASES), corpus.data_files())
        self.assertEqual(sorted(index), corpus.data_files())
        for name, case in corpus.CASES.items():
            self.assertEqual((case.section, case.kind), index[name], name)

    def test_every_valid_message_has_view_expectations(self):
        self.assertEqual(sorted(EXPECTED_VIEWS), sorted(corpus.names("valid")))


class ValidMessageTests(SynchronousTestCase):
    """RFC 4475 3.1.1: well formed; validates; every header readable through its view."""

    def check_valid(self, name: str):
        message = parse_message(corpus.load(name))
        self.assertIs(message.validate(), message)
        expected = EXPECTED_VIEWS[name]
        keys = {key for key in message.headers.keys() if has_view(key)}
        self.assertEqual(sorted(keys), sorted(expected), "headers with a typed view")
        for key in keys:
            self.assertEqual(describe(read_view(message, key)), expected[key], f"{name}: {key}")
        for header, value in message.headers.items():
            self.assertIn(value, message.headers.get_all(header))
        if message.content_length is not None:
            self.assertEqual(len(message.body), message.content_length)
        getattr(self, "extra_" + name)(message)

    def extra_wsinv(self, m):
        """LWS, folding, compact forms and odd case."""
        self.assertEqual((m.method, str(m.uri)), ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam"))
        self.assertEqual(m.uri.params.items(), [("unknownparam", None)])
        self.assertEqual(len(m.headers.get_all("Via")), 2)
        self.assertEqual(m.top_via.branch, "390skdjuw")
        self.assertEqual(m.to.tag, "1918181833n")
        self.assertEqual(m.from_.tag, "98asjd8")
        self.assertEqual(m.from_.display_name, 'J Rosenberg \\"')
        self.assertEqual(m.headers.get("Subject"), "")
        self.assertEqual(m.headers.get("s"), "")
        self.assertEqual(m.headers.get("NewFangledHeader"), "newfangled value continued newfangled value")
        self.assertEqual(m.headers.get("unknownheaderwithunusualvalue"), ";;,,;;,;")
        self.assertEqual(m.headers.get("c"), "application/sdp")
        self.assertTrue(m.route[0].uri.loose_route)

    def extra_intmeth(self, m):
        """Unknown method of every token character; a URI with a password."""
        self.assertEqual(m.method, "!interesting-Method0123456789_*+`.%indeed'~")
        self.assertIsInstance(m.uri, SipURI)
        self.assertEqual(m.uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        self.assertEqual(m.uri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        self.assertEqual(m.uri.host, "example.com")
        self.assertEqual(m.headers.get("extensionHeader-!.%*+_`'~"), "\ufeff大停電")

    def extra_esc01(self, m):
        """%-escapes are kept raw and decode with unescape()."""
        self.assertEqual(m.uri.user, "sips%3Auser%40example.com")
        self.assertEqual(unescape(m.uri.user), "sips:user@example.com")
        self.assertEqual(m.uri.host, "example.net")
        self.assertEqual(unescape(m.to.uri.user), "user")
        self.assertEqual(unescape(m.from_.uri.user), "I have spaces")
        contact = m.contacts[0].uri
        self.assertEqual(unescape(contact.user), "caller")
        self.assertEqual([unescape(k) for k in contact.params], ["lr", "name"])
        self.assertEqual(unescape(contact.params.get("n%61me")), "value%41")

    def extra_escnull(self, m):
        """%00 in user parts decodes to NUL."""
        self.assertEqual(unescape(m.to.uri.user), "null-\x00-null")
        self.assertEqual(unescape(m.from_.uri.user), "null-\x00-null")
        self.assertEqual([unescape(c.uri.user) for c in m.contacts], ["\x00", "\x00\x00"])

    def extra_esc02(self, m):
        """A % that is no escape; escapes in method and header names are not decoded."""
        self.assertEqual(m.method, "RE%47IST%45R")
        self.assertEqual(m.headers.get("C%6Fntact"), "<sip:alias2@host2.example.com>")
        self.assertEqual(len(m.headers.get_all("Contact")), 2)

    def extra_lwsdisp(self, m):
        self.assertEqual(m.from_.display_name, "caller")

    def extra_longreq(self, m):
        self.assertEqual(len(m.headers.get_all("v")), 34)
        self.assertEqual(m.via[-1].received, "192.0.2.5")
        self.assertEqual(m.to.uri.port, 6000)
        self.assertEqual(len(m.to.uri.params), 3)
        self.assertEqual(
            m.headers.get("unknown-" + "long" * 20 + "-name"),
            "unknown-" + "long" * 20 + "-value; unknown-" + "long" * 20 + "-parameter-name = unknown-"
            + "long" * 20 + "-parameter-value",
        )

    def extra_dblreq(self, m):
        """The INVITE after the REGISTER's empty body is noise (RFC 3261 18.3)."""
        self.assertEqual(m.method, "REGISTER")
        self.assertEqual(m.body, b"")
        self.assertEqual(len(m.headers), 8)
        self.assertNotIn("Content-Type", m.headers)
        self.assertEqual(m.headers.get("t"), "sip:j.user@example.com")

    def extra_semiuri(self, m):
        """The ';' belongs to the user part: no URI parameters."""
        self.assertEqual(m.uri.user, "user;par=u%40example.net")
        self.assertEqual(m.uri.host, "example.com")
        self.assertEqual(len(m.uri.params), 0)
        self.assertEqual(
            m.headers.get("Accept"),
            "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag",
        )

    def extra_transports(self, m):
        self.assertEqual([v.transport for v in m.via], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])

    def extra_mpart01(self, m):
        self.assertTrue(m.top_via.rport_requested)
        self.assertIsNone(m.top_via.rport)
        self.assertEqual(m.headers.get("Content-Type"), "multipart/mixed;boundary=7a9cbec02ceef655")
        self.assertTrue(m.body.startswith(b"--7a9cbec02ceef655\r\n"))
        self.assertTrue(m.body.endswith(b"--7a9cbec02ceef655--\r\n"))

    def extra_unreason(self, m):
        self.assertIsInstance(m, Response)
        self.assertEqual(m.status, 200)
        self.assertEqual(m.reason, "= 2**3 * 5**2 но сто девяносто девять - простое")

    def extra_noreason(self, m):
        self.assertIsInstance(m, Response)
        self.assertEqual((m.status, m.reason), (100, ""))


class RoundTripTests(SynchronousTestCase):
    """bytes(message) re-parses to an equal message, for every parseable file."""

    def check_round_trip(self, name: str):
        message = parse_message(corpus.load(name))
        wire = bytes(message)
        again = parse_message(wire)
        self.assertEqual(again, message)
        self.assertEqual(bytes(again), wire)
        self.assertNotIn(b"\r\n ", wire.split(b"\r\n\r\n")[0], "folding must be unfolded")
        for key in {k for k in message.headers.keys() if has_view(k)}:
            try:
                expected = describe(read_view(message, key))
            except SIPParseError as e:
                with self.assertRaises(SIPParseError) as caught:
                    read_view(again, key)
                self.assertEqual(caught.exception.element, e.element)
            else:
                self.assertEqual(describe(read_view(again, key)), expected, f"{name}: {key}")


class InvalidMessageTests(SynchronousTestCase):
    """RFC 4475 3.1.2: refused with a SIPParseError naming the culprit."""

    def check_refused(self, name: str):
        case = corpus.CASES[name]
        data = corpus.load(name)
        if case.fails_at == corpus.PARSE:
            with self.assertRaises(SIPParseError) as caught:
                parse_message(data)
        else:
            message = parse_message(data)
            with self.assertRaises(SIPParseError) as caught:
                message.validate()
        self.assertEqual(caught.exception.status, case.status)
        self.assertIn(caught.exception.element, case.elements)

    def test_baddate_accepted_but_date_view_refuses(self):
        """RFC 4475 3.1.2.12 lets an element accept the message as if it had no
        Date (the header is not critical), so parse_message succeeds; only
        reading the Date view, or validate(), refuses the non-GMT zone."""
        message = parse_message(corpus.load("baddate"))
        self.assertEqual(message.cseq, CSeq(1392934, "INVITE"))
        self.assertEqual(message.top_via.branch, "z9hG4bKkdjuw")
        self.assertEqual(message.headers.get("Date"), "Fri, 01 Jan 2010 16:00:00 EST")
        with self.assertRaises(SIPParseError) as caught:
            message.date
        self.assertEqual((caught.exception.status, caught.exception.element), (400, "Date"))
        with self.assertRaises(SIPParseError) as caught:
            message.validate()
        self.assertEqual(caught.exception.element, "Date")

    def test_scalar02_other_scalars(self):
        """With the CSeq fixed, Max-Forwards 300 is refused; the expiries clamp to 2**32-1."""
        data = corpus.load("scalar02").replace(b"36893488147419103232", b"1")
        message = parse_message(data)
        with self.assertRaises(SIPParseError) as caught:
            message.max_forwards
        self.assertEqual(caught.exception.element, "Max-Forwards")
        self.assertEqual(message.expires, 2**32 - 1)
        self.assertEqual(message.contacts[0].expires, 2**32 - 1)

    def test_scalarlg_retry_after_clamps(self):
        """With the CSeq fixed, the huge Retry-After reads as 2**32-1."""
        message = parse_message(corpus.load("scalarlg").replace(b"9292394834772304023312", b"1"))
        self.assertEqual(message.retry_after.seconds, 2**32 - 1)

    def test_validate_names_first_bad_header_in_wire_order(self):
        """validate() reports the first bad header line, whatever the hash seed.

        badinv01 has bad Via then Contact lines; baddn a bad From then To.
        """
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        script = (
            "from tests.support import corpus\n"
            "from txuac.sip import parse_message, SIPParseError\n"
            "for name in ('badinv01', 'baddn'):\n"
            "    try:\n"
            "        parse_message(corpus.load(name)).validate()\n"
            "    except SIPParseError as e:\n"
            "        print(name, e.element)\n"
        )
        for seed in ("0", "3", "6", "7"):
            env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
            result = subprocess.run(
                [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True
            )
            self.assertEqual(result.stdout.split("\n")[:2], ["badinv01 Via", "baddn From"], f"PYTHONHASHSEED={seed}")


class SemanticMessageTests(SynchronousTestCase):
    """RFC 4475 3.2-3.4: syntactically fine; the facts the application layer needs."""

    def check_semantic(self, name: str):
        case = corpus.CASES[name]
        data = corpus.load(name)
        if case.fails_at == corpus.PARSE:
            with self.assertRaises(SIPParseError) as caught:
                parse_message(data)
            self.assertEqual(caught.exception.status, 400)
            self.assertIn(caught.exception.element, case.elements)
            return
        message = parse_message(data)
        if case.fails_at == corpus.VALIDATE:
            with self.assertRaises(SIPParseError) as caught:
                message.validate()
            self.assertEqual(caught.exception.status, 400)
            self.assertIn(caught.exception.element, case.elements)
        else:
            self.assertIs(message.validate(), message)
        getattr(self, "facts_" + name)(message)

    def facts_badbranch(self, m):
        self.assertEqual(m.top_via.branch, "z9hG4bK")

    def facts_insuf(self, m):
        for name in ("To", "From", "Call-ID", "Max-Forwards"):
            self.assertNotIn(name, m.headers)
        self.assertIsNone(m.to)
        self.assertIsNone(m.call_id)
        self.assertEqual(m.cseq, CSeq(193942, "INVITE"))

    def facts_unkscm(self, m):
        """416 material: an unknown Request-URI scheme, kept opaque."""
        self.assertIsInstance(m.uri, AbsoluteURI)
        self.assertEqual((m.uri.scheme, m.uri.opaque), ("nobodyKnowsThisScheme", "totallyopaquecontent"))

    def facts_novelsc(self, m):
        self.assertIsInstance(m.uri, AbsoluteURI)
        self.assertEqual((m.uri.scheme, str(m.uri)), ("soap.beep", "soap.beep://192.0.2.103:3002"))

    def facts_unksm2(self, m):
        expected = ((m.to, "isbn:2983792873"), (m.from_, "http://www.example.com"), (m.contacts[0], "name:John_Smith"))
        for address, uri in expected:
            self.assertIsInstance(address.uri, AbsoluteURI)
            self.assertEqual(str(address.uri), uri)
        self.assertEqual(m.from_.tag, "3234233")

    def facts_bext01(self, m):
        """420 material: the unknown option tags."""
        self.assertEqual(m.tokens("Require"), ["nothingSupportsThis", "nothingSupportsThisEither"])
        self.assertEqual(m.tokens("proxy-require"), ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])

    def facts_invut(self, m):
        """415 material."""
        self.assertEqual(m.headers.get("Content-Type"), "application/unknownformat")
        self.assertEqual(m.body, b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n')

    def facts_regaut01(self, m):
        [credentials] = m.authorization
        self.assertEqual(credentials.scheme, "NoOneKnowsThisScheme")
        self.assertEqual(credentials.get("opaque-data"), "here")

    def facts_bcast(self, m):
        self.assertEqual((m.status, m.reason), (200, "OK"))
        self.assertEqual([v.host for v in m.via], ["192.0.2.198", "255.255.255.255"])

    def facts_zeromf(self, m):
        """483 material for a proxy."""
        self.assertEqual(m.max_forwards, 0)

    def facts_cparam01(self, m):
        """Without <>, ';unknownparam' is a Contact header parameter."""
        [contact] = m.contacts
        self.assertIn("unknownparam", contact.params)
        self.assertIsNone(contact.params.get("unknownparam"))
        self.assertEqual(str(contact.uri), "sip:+19725552222@gw1.example.net")
        self.assertNotIn("unknownparam", contact.uri.params)

    def facts_cparam02(self, m):
        """Inside <>, ';unknownparam' is a URI parameter."""
        [contact] = m.contacts
        self.assertNotIn("unknownparam", contact.params)
        self.assertIn("unknownparam", contact.uri.params)
        self.assertEqual(contact.uri.host, "gw1.example.net")

    def facts_regescrt(self, m):
        [contact] = m.contacts
        self.assertEqual(contact.uri.headers, [("Route", "%3Csip:sip.example.com%3E")])
        self.assertEqual(unescape(contact.uri.headers[0][1]), "<sip:sip.example.com>")

    def facts_sdp01(self, m):
        """406 material: the offered Accept."""
        self.assertEqual(m.headers.get("Accept"), "text/nobodyKnowsThis")
        self.assertEqual(m.headers.get("Content-Type"), "application/sdp")

    def facts_inv2543(self, m):
        """RFC 2543 style: accepted without Max-Forwards, Content-Length or branch."""
        self.assertIsNone(m.max_forwards)
        self.assertIsNone(m.content_length)
        self.assertIsNone(m.top_via.branch)
        self.assertIsNone(m.from_.tag)
        self.assertEqual(m.headers.get("Content-Type"), "application/sdp")
        self.assertTrue(m.body.startswith(b"v=0\r\n"))
        self.assertTrue(m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n"))
        self.assertEqual(m.record_route[0].uri.maddr, "ss1.example.com")


class StreamFramingTests(SynchronousTestCase):
    """Each file as a TCP stream: any chunking gives what a datagram gives."""

    def check_stream(self, name: str):
        case = corpus.CASES[name]
        data = corpus.load(name)
        for label, chunks in chunkings(data):
            framer = StreamFramer()
            if case.stream == corpus.REJECTS:
                with self.assertRaises(SIPParseError) as caught:
                    feed_all(framer, chunks)
                self.assertEqual(caught.exception.element, "Content-Length", label)
                self.assertRaises(SIPParseError, framer.feed, b"OPTIONS")
                continue
            items = feed_all(framer, chunks)
            if case.stream == corpus.WAITS:
                self.assertEqual((items, framer.buffered), ([], len(data)), label)
                continue
            self.assertEqual((items, framer.buffered), ([data], 0), label)
            expected, framed = outcome(data), outcome(items[0])
            self.assertEqual(framed, expected, label)

    def test_clerr_stream_keeps_waiting(self):
        """A stream cannot tell a short body from a slow one (RFC 4475 3.1.2.2)."""
        data = corpus.load("clerr")
        framer = StreamFramer()
        self.assertEqual(framer.feed(data), [])
        self.assertEqual(framer.feed(b"x" * 100), [])
        self.assertEqual(framer.buffered, len(data) + 100)

    def _dblreq_stream_items(self):
        items, error = feed_until_error([bytes([b]) for b in corpus.load("dblreq")])
        return [i for i in items if isinstance(i, bytes)], error

    def test_dblreq_stream_yields_two_messages(self):
        """Over a stream the trailing INVITE is a second message (its body cut at
        Content-Length 150); the 3 octets left over then fail framing."""
        data = corpus.load("dblreq")
        messages, error = self._dblreq_stream_items()
        self.assertEqual(len(messages), 2)
        self.assertEqual(parse_message(messages[0]), parse_message(data))
        invite = parse_message(messages[1])
        self.assertIsInstance(invite, Request)
        self.assertEqual(invite.call_id, "dblreq.0ha0isnda977644900765@192.0.2.15")
        self.assertEqual(len(invite.body), 150)
        self.assertEqual(data.index(messages[1]) + len(messages[1]), len(data) - len(b"C\r\n\r\n"))
        self.assertIsNotNone(error)
        self.assertEqual(error.element, "Content-Length")

    def test_dblreq_stream_any_chunking(self):
        """Messages complete before the framing error are delivered whatever the chunking."""
        expected, _ = self._dblreq_stream_items()
        for label, chunks in chunkings(corpus.load("dblreq")):
            items, error = feed_until_error(chunks)
            self.assertIsNotNone(error, label)
            self.assertEqual([i for i in items if isinstance(i, bytes)], expected, label)

    def test_keepalives_around_a_message(self):
        """Pings around a message (server side) and a pong after one (client side)."""
        data = corpus.load("wsinv")
        ping, pong = b"\r\n\r\n", b"\r\n"
        for expect_pings, stream, expected in (
            (True, ping + data + ping, [KeepAlive.PING, data, KeepAlive.PING]),
            (False, data + pong, [data, KeepAlive.PONG]),
        ):
            for label, chunks in chunkings(stream):
                framer = StreamFramer(expect_pings=expect_pings)
                self.assertEqual(feed_all(framer, chunks), expected, label)
                self.assertEqual(framer.buffered, 0, label)


def _add_tests(cls, prefix: str, check: str, names: list[str], doc: str) -> None:
    for name in names:

        def test(self, name=name):
            getattr(self, check)(name)

        test.__name__ = f"test_{prefix}_{name}"
        test.__doc__ = f"{name}.dat (RFC 4475 {corpus.CASES[name].section}): {doc}"
        setattr(cls, test.__name__, test)


def _parses(name: str) -> bool:
    return outcome(corpus.load(name))[0] == "ok"


_add_tests(ValidMessageTests, "valid", "check_valid", corpus.names("valid"), "parses, validates, views read")
_add_tests(RoundTripTests, "round_trip", "check_round_trip", [n for n in corpus.names() if _parses(n)], "round trip")
_add_tests(InvalidMessageTests, "invalid", "check_refused", corpus.names("invalid"), "refused, culprit named")
_add_tests(SemanticMessageTests, "semantic", "check_semantic", corpus.names("semantic"), "application facts")
_add_tests(
    StreamFramingTests,
    "stream",
    "check_stream",
    [n for n, c in corpus.CASES.items() if c.stream != corpus.TWO_MESSAGES],
    "framed in any chunking",
)
