"""Client side HTTP Digest for SIP (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760), sans-IO.

``parse_challenges`` reads every WWW-/Proxy-Authenticate header of a 401/407,
``choose_challenge`` picks the strongest one we can answer, and
``authorization`` computes the (Proxy-)Authorization value. Randomness comes
from txuac.sip.tokens (system randomness); nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Final

from txuac.errors import AuthenticationError, SIPParseError
from txuac.sip.fields import AuthParams, parse_auth_list
from txuac.sip.grammar import ascii_lower, ascii_upper, quote, strip_lws, unquote
from txuac.sip.memo import ParseMemo
from txuac.sip.message import Response
from txuac.sip.tokens import token_hex


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


# RFC 7616 3.3 and RFC 8760 2: algorithm -> (hash, session variant, HA1 hex length).
# Listed strongest first: the order choose_challenge prefers.
ALGORITHMS: Final[dict[str, tuple[Callable[[bytes], str], bool, int]]] = {
    "SHA-512-256": (_sha512_256, False, 64),
    "SHA-512-256-SESS": (_sha512_256, True, 64),
    "SHA-256": (_sha256, False, 64),
    "SHA-256-SESS": (_sha256, True, 64),
    "MD5": (_md5, False, 32),
    "MD5-SESS": (_md5, True, 32),
}
ALL_ALGORITHMS: Final = tuple(ALGORITHMS)
_STRENGTH: Final = {name: rank for rank, name in enumerate(ALGORITHMS)}
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def canonical_algorithm(name: str) -> str:
    """``md5-sess`` -> ``MD5-SESS``; unknown names are returned upper-cased."""
    return ascii_upper(strip_lws(name))


# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False, unsafe_hash=True)
class Challenge:
    """One Digest challenge from a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)."""

    realm: Final[str]
    nonce: Final[str]
    algorithm: Final[str]  # as canonical_algorithm gives it; absent means MD5 (RFC 7616 3.3)
    algorithm_token: Final[str]  # as the server wrote it, echoed back
    qop: Final[tuple[str, ...]]  # offered qop values, lower case; empty: RFC 2069 form
    opaque: Final[str | None]
    stale: Final[bool]
    userhash: Final[bool]
    proxy: Final[bool]  # True for Proxy-Authenticate (answered with Proxy-Authorization)

    def __init__(self, realm: str, nonce: str, algorithm: str = "MD5", algorithm_token: str = "MD5",
                 qop: tuple[str, ...] = (), opaque: str | None = None, stale: bool = False, userhash: bool = False,
                 proxy: bool = False) -> None:
        self.realm = realm
        self.nonce = nonce
        self.algorithm = algorithm
        self.algorithm_token = algorithm_token
        self.qop = qop
        self.opaque = opaque
        self.stale = stale
        self.userhash = userhash
        self.proxy = proxy

    @property
    def supported(self) -> bool:
        """We can answer it: a known algorithm and, when qop is offered, auth or auth-int."""
        return self.algorithm in ALGORITHMS and (not self.qop or "auth" in self.qop or "auth-int" in self.qop)

    @property
    def header_name(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


def challenge_from(params: AuthParams, proxy: bool) -> Challenge:
    """A Challenge from one parsed auth-params list; AuthenticationError names what is missing."""
    found: dict[str, str] = {}  # the first value of each parameter a challenge has, unquoted
    for key, value in params.params:
        name = key.lower()
        if name in _CHALLENGE_PARAMS and name not in found:
            found[name] = unquote(value)
    realm = found.get("realm")
    nonce = found.get("nonce")
    if realm is None:
        raise AuthenticationError("Digest challenge without realm")
    if nonce is None:
        raise AuthenticationError(f"Digest challenge for realm {realm!r} without nonce")
    token = found.get("algorithm") or "MD5"
    qop_text = found.get("qop")
    qop = tuple(ascii_lower(v) for v in map(strip_lws, qop_text.split(",")) if v) if qop_text else ()
    stale = _is_true(found.get("stale"))
    userhash = _is_true(found.get("userhash"))
    algorithm = token if token in ALGORITHMS else canonical_algorithm(token)
    return Challenge(realm, nonce, algorithm, strip_lws(token), qop, found.get("opaque"), stale, userhash, proxy)


_CHALLENGE_PARAMS: Final = frozenset({"realm", "nonce", "algorithm", "qop", "opaque", "stale", "userhash"})


def _is_true(value: str | None) -> bool:
    """A boolean auth-param (stale, userhash): "true" in any ASCII case."""
    return value is not None and ascii_lower(strip_lws(value)) == "true"


# The challenge texts parsed recently (txuac.sip.memo). A registrar whose nonce is made
# from the time and a secret (Kamailio's auth module by default) challenges every REGISTER
# of the same second with the same text: a burst of registrations parses it once.
_WWW_CHALLENGES: Final = ParseMemo[tuple[Challenge, ...]]()
_PROXY_CHALLENGES: Final = ParseMemo[tuple[Challenge, ...]]()


def parse_challenges(response: Response) -> list[Challenge]:
    """Every Digest challenge of a 401 or 407, in order; other schemes are skipped.

    A malformed header or Digest challenge raises AuthenticationError with the
    reason only when no usable Digest challenge remains.
    """
    proxy = response.status == 407
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    memo = _PROXY_CHALLENGES if proxy else _WWW_CHALLENGES
    found: list[Challenge] = []
    problems: list[str] = []
    for value in response.headers.get_all(name):
        kept = memo.recall(value)
        if kept is not None:
            found.extend(kept)  # a Challenge is immutable: shared, not copied
            continue
        in_value, wrong = _challenges_in(value, name, proxy)
        found.extend(in_value)
        if wrong:
            problems.extend(wrong)  # such a text is not kept: what is wrong is named every time
        elif memo.parsed_before(value):
            memo.keep(value, tuple(in_value))
    if not found:
        reason = "; ".join(problems) if problems else f"no Digest challenge in {name}"
        raise AuthenticationError(f"{response.status} {response.reason}: {reason}", response)
    return found


def _challenges_in(value: str, name: str, proxy: bool) -> tuple[list[Challenge], list[str]]:
    """The Digest challenges of one header value, and what is wrong in it."""
    try:
        entries = parse_auth_list(value, name)
    except SIPParseError as e:
        return [], [str(e)]
    found: list[Challenge] = []
    problems: list[str] = []
    for entry in entries:
        if entry.scheme.lower() != "digest":
            continue  # Basic, Bearer, ...: not ours to answer
        try:
            found.append(challenge_from(entry, proxy))
        except AuthenticationError as e:
            problems.append(str(e))
    return found, problems


@dataclass(init=False, unsafe_hash=True)
class Credentials:
    """A user name and a password or an HA1 (hex of H(user:realm:password)).

    ``realm`` None means any realm. An HA1 only fits the hash it was made with:
    32 hex digits for MD5, 64 for SHA-256 and SHA-512-256.
    """

    username: Final[str]
    password: Final[str | None]
    ha1: Final[str | None]
    realm: Final[str | None]

    def __init__(self, username: str, password: str | None = None, ha1: str | None = None,
                 realm: str | None = None) -> None:
        self.username = username
        self.password = password
        self.ha1 = ha1
        self.realm = realm
        if (self.password is None) == (self.ha1 is None):
            raise AuthenticationError(f"credentials for {self.username!r} need a password or an HA1, not both")
        if self.ha1 is not None and (len(self.ha1) not in (32, 64) or not _HEX.issuperset(self.ha1)):
            raise AuthenticationError(f"HA1 for {self.username!r} must be 32 or 64 hex digits")

    def fits(self, challenge: Challenge) -> bool:
        """Whether these credentials can answer ``challenge``: realm and HA1 length."""
        if self.realm is not None and self.realm != challenge.realm:
            return False
        if self.ha1 is not None:
            spec = ALGORITHMS.get(challenge.algorithm)
            return spec is not None and len(self.ha1) == spec[2]
        return True

    def __repr__(self) -> str:  # never show the secret
        secret = "password" if self.password is not None else "ha1"
        return f"Credentials({self.username!r}, {secret}=***, realm={self.realm!r})"


def choose_challenge(
    challenges: list[Challenge],
    credentials_for: Callable[[Challenge], Credentials | None],
    allowed: tuple[str, ...] = ALL_ALGORITHMS,
) -> tuple[Challenge, Credentials]:
    """The strongest challenge we support, allow and hold credentials for.

    Ties keep the server's order. Raises AuthenticationError naming why none fits.
    """
    best: tuple[int, int, Challenge, Credentials] | None = None
    reasons = []
    for position, challenge in enumerate(challenges):
        if not challenge.supported:
            reasons.append(f"{challenge.algorithm_token}/qop={','.join(challenge.qop)} not supported")
            continue
        if challenge.algorithm not in allowed and challenge.algorithm not in map(canonical_algorithm, allowed):
            reasons.append(f"{challenge.algorithm} not allowed")
            continue
        credentials = credentials_for(challenge)
        if credentials is None:
            reasons.append(f"no credentials for realm {challenge.realm!r}")
            continue
        if not credentials.fits(challenge):
            if credentials.ha1 is not None and (credentials.realm is None or credentials.realm == challenge.realm):
                reasons.append(f"the HA1 of {credentials.username!r} ({len(credentials.ha1)} hex digits) does not "
                               f"fit {challenge.algorithm} ({ALGORITHMS[challenge.algorithm][2]} needed)")
            else:
                reasons.append(f"no credentials for realm {challenge.realm!r}")
            continue
        rank = (_STRENGTH[challenge.algorithm], position)
        if best is None or rank < best[:2]:
            best = (rank[0], rank[1], challenge, credentials)
    if best is None:
        raise AuthenticationError("no usable challenge: " + "; ".join(reasons))
    return best[2], best[3]


@dataclass
class NonceCounter:
    """``nc`` per nonce (RFC 7616 3.4): 1 for a new nonce, +1 each time it is reused."""

    counts: dict[str, int] = field(default_factory=dict)
    limit: int = 64

    def next(self, nonce: str) -> int:
        count = self.counts.pop(nonce, 0) + 1
        self.counts[nonce] = count
        while len(self.counts) > self.limit:
            del self.counts[next(iter(self.counts))]  # forget the oldest nonce
        return count


def authorization(
    challenge: Challenge,
    credentials: Credentials,
    method: str,
    uri: str,
    body: bytes = b"",
    prefer_auth_int: bool = False,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The (Proxy-)Authorization value answering ``challenge`` for ``method uri``.

    qop ``auth`` is used when offered unless ``prefer_auth_int`` (then
    ``auth-int`` hashes the body, empty included); the header states exactly
    the qop used. No qop offered: the RFC 2069 form without nc and cnonce.
    """
    spec = ALGORITHMS.get(challenge.algorithm)
    if spec is None:
        raise AuthenticationError(f"unsupported algorithm {challenge.algorithm_token}")
    hash_hex, session, ha1_length = spec
    if not credentials.fits(challenge):
        raise AuthenticationError(f"credentials for {credentials.username!r} do not fit realm "
                                  f"{challenge.realm!r} with {challenge.algorithm}")
    qop = _pick_qop(challenge.qop, prefer_auth_int)
    if cnonce is None:
        cnonce = token_hex(16)
    realm = challenge.realm
    ha1 = credentials.ha1.lower() if credentials.ha1 is not None else hash_hex(
        f"{credentials.username}:{realm}:{credentials.password}".encode())
    if session:
        # RFC 7616 3.4.2: the -sess A1 uses the hex H(user:realm:password).
        ha1 = hash_hex(f"{ha1}:{challenge.nonce}:{cnonce}".encode())
    if qop == "auth-int":
        ha2 = hash_hex(f"{method}:{uri}:".encode() + hash_hex(body).encode())
    else:
        ha2 = hash_hex(f"{method}:{uri}".encode())
    nc_text = f"{nc:08x}"
    if qop:
        response = hash_hex(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:{qop}:{ha2}".encode())
    else:
        response = hash_hex(f"{ha1}:{challenge.nonce}:{ha2}".encode())
    username = credentials.username
    if challenge.userhash:
        username = hash_hex(f"{username}:{realm}".encode())  # RFC 7616 3.4.4
    parts = [
        f"username={quote(username)}",
        f"realm={quote(realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
        f"algorithm={challenge.algorithm_token}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={quote(cnonce)}"]
    elif session:
        parts.append(f"cnonce={quote(cnonce)}")  # -sess needs the cnonce even without qop
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


def _pick_qop(offered: tuple[str, ...], prefer_auth_int: bool) -> str | None:
    if not offered:
        return None
    if "auth-int" in offered and (prefer_auth_int or "auth" not in offered):
        return "auth-int"
    if "auth" in offered:
        return "auth"
    raise AuthenticationError(f"qop {','.join(offered)} not supported")
