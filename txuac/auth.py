"""Client authentication for everything txuac sends: credential sources and the retry.

``Authenticator(stack, credentials).send(request)`` sends a request and answers
401/407 challenges (RFC 3261 22.2, 22.3): the retry is a new client
transaction with the same Call-ID, From and From tag, CSeq + 1, a new branch
and the same body. One answer per realm and challenge round; a second
non-stale challenge for a realm already answered is an AuthenticationError.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from txuac.credentials import CredentialList, CredentialSource, FixedCredentials, ICredentialSource  # noqa: F401 - re-exported
from txuac.errors import AuthenticationError, ChallengeOriginError, SIPParseError
from txuac.net.interfaces import ISIPStack
from txuac.sip.digest import (
    ALL_ALGORITHMS,
    Challenge,
    Credentials,
    NonceCounter,
    authorization,
    choose_challenge,
    parse_challenges,
)
from txuac.sip.fields import parse_auth_list
from txuac.sip.message import Request, Response
from txuac.sip.address import Address, ResponseOrigin, bare_host, ip_address_of

log = Logger(namespace=__name__)  # named: a compiled module has no frame to infer it from

MAX_STALE_RETRIES = 2  # per realm: a server repeating stale=true must not loop us
MAX_ROUNDS = 5  # challenges in a row for one request, whatever their realms


def challenge_origin(origin: ResponseOrigin | None, target: str = "the request's target") -> str | None:
    """Why a challenge must not be answered because of where it came from, or None.

    A response is matched to its transaction by branch alone (RFC 3261 17.1.3), so anyone
    who learns the branch can send a 401 and collect a digest to crack offline. The
    stack says where each final response came from (its ClientRequest's ``origin``): over
    UDP the challenge must come from the IP and port the request went to; on TCP/TLS from
    the connection to it (its peer is that address). Without an origin (a stack that does
    not say) nothing is refused. ``target`` names the destination in the reason.
    """
    if origin is None or _same_address(origin.source, origin.sent_to):
        return None
    return f"challenge from {_show(origin.source)}, not from {target}: not answered"


def _same_address(a: Address, b: Address) -> bool:
    if a.transport != b.transport or a.port != b.port:
        return False
    # The same spelling is the common case (every REGISTER): no parsing for it.
    return a.host == b.host or _ip(a.host) == _ip(b.host)


def _ip(host: str) -> str:
    """An IP address in one spelling (IPv4-mapped IPv6 as IPv4); a name lower-cased."""
    host = bare_host(host)
    address = ip_address_of(host)
    if address is None:
        return host.lower()
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped or address)


def _show(address: Address) -> str:
    host = f"[{address.host}]" if ":" in address.host and not address.host.startswith("[") else address.host
    return f"{host}:{address.port}" if address.transport == "udp" else f"{address.transport}:{host}:{address.port}"


def authorized_retry(request: Request, answers: list[tuple[Challenge, str]], cseq: int | None = None) -> Request:
    """The next attempt (RFC 3261 22.2): CSeq + 1 (or ``cseq``), no Via (the stack adds a
    fresh branch), one (Proxy-)Authorization per realm answered, replacing any the request
    already had for those realms."""
    retry = request.copy()
    retry.headers.remove("Via")
    current = request.cseq
    if current is None:
        raise AuthenticationError("cannot retry a request without CSeq")
    retry.headers.set("CSeq", f"{current.number + 1 if cseq is None else cseq} {current.method}")
    add_credentials(retry, answers)
    return retry


def add_credentials(request: Request, answers: list[tuple[Challenge, str]]) -> None:
    """One (Proxy-)Authorization per realm answered, replacing any ``request`` already
    had for those realms (in place)."""
    for challenge, _ in answers:
        if challenge.header_name in request.headers:
            _drop_credentials_for(request, challenge.header_name, challenge.realm)
    for challenge, value in answers:
        request.headers.add(challenge.header_name, value)


def _drop_credentials_for(request: Request, header_name: str, realm: str) -> None:
    kept = [value for value in request.headers.get_all(header_name)
            if _realm_of(value, header_name) != realm]
    request.headers.remove(header_name)
    for value in kept:
        request.headers.add(header_name, value)


def _realm_of(value: str, header_name: str) -> str | None:
    try:
        return parse_auth_list(value, header_name)[0].get("realm")
    except SIPParseError:
        return None  # a header we cannot read is not this realm's


class Authenticator:
    """Sends requests through a SIP stack and answers Digest challenges.

    ``algorithms`` is the allow-list (default: all of RFC 7616/8760);
    ``prefer_auth_int`` picks qop auth-int when a server offers both. ``log_retries``
    False leaves out the debug line per retry, for callers that report challenges
    themselves (the registrant's events): at thousands of REGISTERs a second it cost
    a tenth of a cycle's CPU.
    """

    def __init__(self, stack: ISIPStack, credentials: CredentialSource,
                 algorithms: tuple[str, ...] = ALL_ALGORITHMS, prefer_auth_int: bool = False,
                 nonces: NonceCounter | None = None, log_retries: bool = True):
        self.stack = stack
        self.log_retries = log_retries
        self.credentials = credentials
        self.algorithms = algorithms
        self.prefer_auth_int = prefer_auth_int
        # Shared by every Authenticator of a service: a nonce reused by the server must
        # get the next nc whichever request answers it.
        self.nonces = nonces if nonces is not None else NonceCounter()

    def send(self, request: Request, target=None,
             on_provisional: Callable[[Response], None] | None = None,
             on_challenge: Callable[[Response], None] | None = None, source=None,
             check_origin: Callable[[ResponseOrigin | None], str | None] | None = None,
             on_retry: Callable[[Request, int], None] | None = None, t2: float | None = None) -> defer.Deferred:
        """Deferred[Response]: the final response once challenges are answered.

        ``target``, ``source`` and ``t2`` are passed to the stack's start_request, for the
        request and each authenticated retry.
        ``on_challenge`` sees every 401/407 before it is answered (uac_req_send
        fires its event route for it). ``check_origin`` (e.g. challenge_origin) sees
        where each challenge came from first (its ResponseOrigin): a reason it returns
        fails the request with ChallengeOriginError, no digest computed. ``on_retry`` sees
        each authenticated retry just before it is sent, with its CSeq number: the one
        this request now uses. Fails with AuthenticationError (its ``response`` is the last
        challenge) when a challenge cannot be answered, our answer was refused, or
        MAX_ROUNDS challenges came in a row.
        """
        return self.start(request, target, on_provisional, on_challenge, source, check_origin, on_retry, t2).deferred

    def start(self, request: Request, target=None,
              on_provisional: Callable[[Response], None] | None = None,
              on_challenge: Callable[[Response], None] | None = None, source=None,
              check_origin: Callable[[ResponseOrigin | None], str | None] | None = None,
              on_retry: Callable[[Request, int], None] | None = None, t2: float | None = None) -> "ChallengeRounds":
        """``send`` returning the ChallengeRounds: its ``deferred`` is what send returns, its
        ``origin`` where the final response came from."""
        rounds = ChallengeRounds(self, request, target, on_provisional, on_challenge, source, check_origin,
                                 on_retry, t2)
        rounds.send(request)
        return rounds

    def _answer(self, request: Request, response: Response, answering: dict, answered: set,
                stale_retries: dict) -> None:
        """Record which challenge and credentials answer each realm of ``response``."""
        challenges = parse_challenges(response)
        chosen, reasons = choose_per_realm(challenges, self.credentials.credentials_for, self.algorithms)
        for challenge, credentials in chosen:
            realm = challenge.realm
            key = (challenge.proxy, realm)
            if challenge.stale and stale_retries.get(key, 0) < MAX_STALE_RETRIES:
                stale_retries[key] = stale_retries.get(key, 0) + 1  # RFC 7616 3.3: not a failure
            elif key in answered:
                raise AuthenticationError(
                    f"{request.method}: realm {realm!r} refused our credentials for {credentials.username!r}",
                    response)
            answered.add(key)
            answering[key] = (challenge, credentials)
        if not chosen:
            raise AuthenticationError(f"{request.method}: " + "; ".join(reasons), response)


def choose_per_realm(challenges: list[Challenge], credentials_for: Callable[[Challenge], Credentials | None],
                     algorithms: tuple[str, ...]) -> tuple[list[tuple[Challenge, Credentials]], list[str]]:
    """For each realm challenged, in order: the challenge to answer and the credentials
    (``choose_challenge``); and why each other realm cannot be answered."""
    chosen = []
    reasons = []
    for realm in dict.fromkeys(c.realm for c in challenges):
        try:
            chosen.append(choose_challenge([c for c in challenges if c.realm == realm], credentials_for, algorithms))
        except AuthenticationError as e:
            reasons.append(str(e))
    return chosen, reasons


class ChallengeRounds:
    """One request through its challenge rounds: ``deferred`` fires with the final response,
    ``origin`` is where the last response came from and where its request went (None until
    one came, or when the stack does not say). Plain callbacks: this runs for every
    REGISTER, and a generator-based loop cost more than the digest itself."""

    __slots__ = ("authenticator", "request", "target", "on_provisional", "on_challenge", "source", "check_origin",
                 "on_retry", "t2", "rounds", "answering", "answered", "stale_retries", "deferred", "origin", "current")

    def __init__(self, authenticator: Authenticator, request: Request, target, on_provisional, on_challenge,
                 source, check_origin=None, on_retry=None, t2: float | None = None):
        self.authenticator = authenticator
        self.request = request
        self.target = target
        self.on_provisional = on_provisional
        self.on_challenge = on_challenge
        self.source = source
        self.check_origin = check_origin
        self.on_retry = on_retry
        self.t2 = t2
        self.rounds = 0
        # (proxy?, realm) -> the challenge and credentials answering it. Every retry carries
        # an answer for each, recomputed so that nc moves on (RFC 7616 3.4: no replay).
        self.answering: dict[tuple[bool, str], tuple[Challenge, Credentials]] = {}
        self.answered: set[tuple[bool, str]] = set()
        self.stale_retries: dict[tuple[bool, str], int] = {}
        # Fired once, with the final response or the error (each round's Deferred feeds
        # it: cheaper than returning one Deferred from another's callback).
        self.deferred: defer.Deferred = defer.Deferred()
        self.origin: ResponseOrigin | None = None
        self.current = request  # the request of this round (each retry is a new one)

    def send(self, current: Request) -> None:
        self.current = current
        self.authenticator.stack.start_request(current, self.target, self.on_provisional, self.source, t2=self.t2,
                                               on_final=self._final)

    def _final(self, outcome: Response | Failure, sending) -> None:
        """The stack's outcome of this round: a response, or the failure that ends the request."""
        if isinstance(outcome, Failure):
            self.deferred.errback(outcome)
            return
        try:
            self._responded(outcome, self.current, sending)
        except Exception:
            self.deferred.errback(Failure())

    def _responded(self, response: Response, current: Request, sending) -> None:
        self.origin = sending.origin
        if response.status not in (401, 407):
            self.deferred.callback(response)
            return
        if self.check_origin is not None:
            refused = self.check_origin(self.origin)
            if refused is not None:
                log.warn("{method} to {uri}: {status} {refused}", method=current.method, uri=str(current.uri),
                         status=response.status, refused=refused,
                         source=self.origin.source if self.origin is not None else None)
                raise ChallengeOriginError(refused, response)
        self.rounds += 1
        if self.on_challenge is not None:
            self.on_challenge(response)
        authenticator = self.authenticator
        authenticator._answer(current, response, self.answering, self.answered, self.stale_retries)
        request = self.request
        if self.rounds >= MAX_ROUNDS:
            raise AuthenticationError(f"{request.method}: still challenged after {MAX_ROUNDS} rounds", response)
        uri = str(request.uri)
        answers = [(challenge, authorization(challenge, credentials, request.method, uri, request.body,
                                             prefer_auth_int=authenticator.prefer_auth_int,
                                             nc=authenticator.nonces.next(challenge.nonce)))
                   for challenge, credentials in self.answering.values()]
        # From the original request: every answer is recomputed above, so the previous
        # attempt's credentials need not be read back.
        sent_cseq = current.cseq
        if sent_cseq is None:
            raise SIPParseError(f"{request.method}: the request has no CSeq to raise for the retry")
        cseq = sent_cseq.number + 1
        if authenticator.log_retries:
            log.debug("{method} to {uri}: {status} from realm(s) {realms}, retrying with CSeq {cseq}",
                      method=request.method, uri=uri, status=response.status,
                      realms=", ".join(c.realm for c, _ in answers), cseq=cseq)
        retry = authorized_retry(request, answers, cseq)
        if self.on_retry is not None:
            self.on_retry(retry, cseq)
        self.send(retry)
