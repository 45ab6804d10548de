"""Property tests of the SIP message core (hypothesis).

The generators, the mutations and the contract check (``fuzz.exercise``)
live in bench/fuzz_parser.py, which runs them at volume; here hypothesis
drives them. Profiles "default" and "ci" (derandomized, for repeatable CI
runs) are chosen with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import traceback

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txuac.sip import WILDCARD, Response, SIPParseError, parse_message

settings.register_profile(
    "default",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", settings.get_profile("default"), max_examples=300, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_DIR = os.path.join(HERE, os.pardir, "data", "rfc4475")


def _load_fuzzer():
    path = os.path.join(HERE, os.pardir, os.pardir, "bench", "fuzz_parser.py")
    spec = importlib.util.spec_from_file_location("txuac_bench_fuzz_parser", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzzer()
CORPUS = fuzz.load_corpus(CORPUS_DIR)


# Strategies are cached: the generators draw hundreds of values per message.
@functools.lru_cache(maxsize=4096)
def _integers(low: int, high: int):
    return st.integers(low, high)


@functools.lru_cache(maxsize=4096)
def _sampled(values: tuple):
    return st.sampled_from(values)


@functools.lru_cache(maxsize=256)
def _text(alphabet: str, low: int, high: int):
    return st.text(alphabet, min_size=low, max_size=high)


class _Picker:
    """The generators' ``pick`` interface (see bench/fuzz_parser.py) over hypothesis draws."""

    def __init__(self, draw):
        self._draw = draw

    def randint(self, low: int, high: int) -> int:
        return self._draw(_integers(low, high))

    def choice(self, values):
        return self._draw(_sampled(tuple(values)))

    def randbytes(self, size: int) -> bytes:
        return self._draw(st.binary(min_size=size, max_size=size))

    def text(self, alphabet: str, low: int, high: int) -> str:
        return self._draw(_text(alphabet, low, high))


@st.composite
def sip_messages(draw) -> tuple[bytes, dict]:
    """Valid requests and responses as bytes, with the values a parser must find in them."""
    return fuzz.build_message(_Picker(draw))


@st.composite
def mutated(draw, base) -> bytes:
    """``base`` (a strategy of bytes) after one to four mutations."""
    return fuzz.mutate(draw(base), _Picker(draw), draw(st.integers(1, 4)))


@st.composite
def soups(draw) -> bytes:
    return fuzz.soup(_Picker(draw))


@st.composite
def with_lookalikes(draw, base) -> bytes:
    """``base`` (a strategy of bytes) with one to three LOOKALIKES beside digits, SP, HTAB or ':'."""
    data = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        data = fuzz._lookalike(data, _Picker(draw))
    return data


# The LOOKALIKES no SIP grammar has outside quoted strings and free text: controls and
# non-ASCII (not "_" and "+", which a token or a Call-ID may hold).
FOREIGN = tuple(char for char in fuzz.LOOKALIKES if char not in (b"_", b"+"))


@st.composite
def scalar_with_lookalike(draw) -> tuple[bytes, str]:
    """A valid message with a FOREIGN character anywhere in the value of one scalar header
    (Content-Length, Max-Forwards, Expires, CSeq, Call-ID), and the view that reads it."""
    message = parse_message(draw(sip_messages())[0])
    present = [(name, view) for name, view, _ in fuzz.SCALARS if name in message.headers]
    name, view = draw(st.sampled_from(present))
    wire = bytes(message)
    start = wire.index(b"\r\n" + name.encode() + b": ") + len(name) + 4
    at = draw(st.integers(start, wire.index(b"\r\n", start)))
    return wire[:at] + draw(st.sampled_from(FOREIGN)) + wire[at:], view


cut_points = st.lists(st.integers(0, 2048), max_size=3)

# Shrinking a generated message takes minutes (hundreds of dependent draws); the
# failure message of these tests names the header at fault, which is enough.
no_shrinking = settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])


@contextlib.contextmanager
def showing(data: bytes, cuts=None):
    """Fail with the input in the message: trial shows neither hypothesis' falsifying example nor causes."""
    try:
        yield
    except Exception as e:
        where = "".join(traceback.format_exception(e, limit=-3))
        raise AssertionError(f"{where}input: {data!r:.4000}" + (f"\ncuts: {cuts}" if cuts else "")) from e


def exercise(data: bytes, cuts=()) -> None:
    with showing(data, cuts):
        fuzz.exercise(data, cuts)


class ValidMessageTests(SynchronousTestCase):
    """Generated valid messages parse, validate, round-trip and read back."""

    @no_shrinking
    @given(sip_messages())
    def test_round_trip(self, generated):
        """parse -> validate() -> parse(bytes(m)) == m, and bytes() is stable."""
        with showing(generated[0]):
            message = parse_message(generated[0])
            message.validate()
            fuzz.round_trip(message)

    @no_shrinking
    @given(sip_messages())
    def test_views(self, generated):
        """Every typed view gives back the generated value."""
        with showing(generated[0]):
            self.assertViews(parse_message(generated[0]), generated[1])

    @no_shrinking
    @given(scalar_with_lookalike())
    def test_scalar_with_a_lookalike_is_refused(self, case):
        """RFC 3261 25.1 whitespace is SP and HTAB and digits are 0-9: a control character, a
        Unicode space or a non-ASCII digit in a number, a CSeq or a Call-ID is refused."""
        data, view = case
        with showing(data):
            try:
                value = getattr(parse_message(data), view)
            except SIPParseError:
                return
            self.fail(f"{view} read as {value!r}")

    def assertViews(self, message, expected):
        if isinstance(message, Response):
            self.assertEqual((message.status, message.reason), (expected["status"], expected["reason"]))
        else:
            self.assertEqual((message.method, str(message.uri)), (expected["method"], expected["uri"]))
        self.assertVias(message.via, expected["via"])
        self.assertEqual(message.top_via, message.via[0])
        self.assertAddress(message.from_, expected["from"])
        self.assertAddress(message.to, expected["to"])
        self.assertEqual(message.call_id, expected["call_id"])
        self.assertEqual((message.cseq.number, message.cseq.method), expected["cseq"])
        self.assertEqual(message.max_forwards, expected["max_forwards"])
        self.assertContacts(message.contacts, expected["contacts"])
        self.assertEqual([str(hop.uri) for hop in message.route], expected["route"])
        for name, tokens in expected["tokens"].items():
            self.assertEqual(message.tokens(name), tokens)
        extras: dict[str, list[str]] = {}
        for name, value in expected["extras"]:
            extras.setdefault(name, []).append(value)
        for name, values in extras.items():
            self.assertEqual(message.headers.get_all(name), values)
        self.assertEqual(message.expires, expected["expires"])
        self.assertEqual(message.date, expected["date"])
        self.assertEqual(
            [(c.scheme, c.get("realm")) for c in message.www_authenticate], expected["challenges"]
        )
        self.assertEqual(message.body, expected["body"])

    def assertVias(self, vias, expected):
        self.assertEqual(
            [
                {
                    "transport": v.transport,
                    "host": v.host,
                    "port": v.port,
                    "branch": v.branch,
                    "received": v.received,
                    "rport": v.rport,
                    "rport_requested": v.rport_requested,
                }
                for v in vias
            ],
            expected,
        )

    def assertAddress(self, address, expected):
        self.assertEqual(address.display_name, expected["display"])
        self.assertEqual(address.uri_text, expected["uri"])
        self.assertEqual(str(address.uri), expected["uri"])
        for name, value in expected["params"]:
            self.assertEqual(address.params.get(name), value)

    def assertContacts(self, contacts, expected):
        if expected == ["*"]:
            self.assertEqual(contacts, [WILDCARD])
            return
        self.assertEqual(len(contacts), len(expected))
        for contact, wanted in zip(contacts, expected):
            self.assertAddress(contact, wanted)
            self.assertEqual(contact.expires, wanted["expires"])


class RobustnessTests(SynchronousTestCase):
    """Whatever the input, only SIPParseError escapes, and what parses round-trips.

    ``fuzz.exercise`` runs parse_message, the bytes() round trip, every typed
    view (and the URIs, parameters and re-parsed str() inside), validate()
    and the stream framer fed whole and in chunks.
    """

    def test_corpus(self):
        """The unmutated RFC 4475 messages (the seeds of the mutations)."""
        self.assertEqual(len(CORPUS), 49)
        for data in CORPUS:
            exercise(data, [len(data) // 2])

    @given(st.binary(max_size=1024), cut_points)
    def test_random_bytes(self, data, cuts):
        exercise(data, cuts)

    @given(soups(), cut_points)
    def test_random_sip_fragments(self, data, cuts):
        exercise(data, cuts)

    @given(mutated(st.sampled_from(CORPUS)), cut_points)
    def test_mutated_corpus(self, data, cuts):
        exercise(data, cuts)

    @no_shrinking
    @given(mutated(sip_messages().map(lambda generated: generated[0])), cut_points)
    def test_mutated_valid_messages(self, data, cuts):
        exercise(data, cuts)

    @no_shrinking
    @given(with_lookalikes(sip_messages().map(lambda generated: generated[0])), cut_points)
    def test_valid_messages_with_lookalikes(self, data, cuts):
        """Controls, Unicode spaces and non-ASCII digits where SIP reads whitespace or
        digits: refused, or the message round-trips exactly and reads as SIP reads it."""
        exercise(data, cuts)

    @given(with_lookalikes(st.sampled_from(CORPUS)), cut_points)
    def test_corpus_with_lookalikes(self, data, cuts):
        exercise(data, cuts)
