"""txuac.auth end to end: Authenticator against a verifying server on a second txuac stack.

Two UACService instances on loopback UDP: the client sends through an
Authenticator, the server (``ChallengingServer``) challenges and checks every
answer with the independent RFC 7616 implementation of
tests/support/digest_reference.py (``ref_verify``), as a registrar or proxy would,
including nonce-count replay detection. The server counts what it receives,
so "exactly one retry" is measured on the wire, not assumed.
"""

from __future__ import annotations

import secrets

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.digest_reference import DigestMismatch, ref_hash, ref_parse, ref_verify
from tests.support.services import start_uac
from txuac.auth import (
    MAX_STALE_RETRIES,
    Authenticator,
    CredentialList,
    FixedCredentials,
    ICredentialSource,
    authorized_retry,
)
from txuac.config import settings_from_dict
from txuac.errors import AuthenticationError, ConfigError
from txuac.service import UACService
from txuac.sip import Request, Response, make_request
from txuac.sip.digest import Challenge, Credentials

PASSWORD = "pw-Quokka-5521"  # distinctive, searched for in logs and messages
OTHER_PASSWORD = "pw-Narwhal-8810"
REALM = "registrar.example.org"


def fresh_nonce() -> str:
    return secrets.token_hex(12)


class ChallengingServer:
    """A UAS that challenges ``method`` requests and verifies the answers per RFC 7616.

    ``accounts``: realm -> (user, password), one challenge per realm (one
    header each). ``status`` 401 or 407. An answer for every realm (or any,
    with ``require_all`` False) gets ``final``; a wrong or missing one gets
    the challenge again, non-stale, with the same nonce. ``stale_after``
    valid answers are met with stale=true and a fresh nonce first
    (``stale_forever``: always). ``override`` replaces the challenge headers.
    """

    def __init__(self, stack, accounts: dict[str, tuple[str, str]], *, status: int = 401, algorithm: str = "MD5",
                 qop: tuple[str, ...] = ("auth",), final: int = 200, require_all: bool = True,
                 method: str = "MESSAGE", userhash: bool = False):
        self.accounts = accounts
        self.status = status
        self.algorithm = algorithm
        self.qop = qop
        self.final = final
        self.require_all = require_all
        self.userhash = userhash
        self.nonces = {realm: fresh_nonce() for realm in accounts}
        self.opaques = {realm: fresh_nonce() for realm in accounts}
        self.last_nc: dict[str, int] = {}  # nonce -> highest nc accepted: a repeat is a replay
        self.stale_after = 0
        self.stale_forever = False
        self.override: list[tuple[str, str]] | None = None
        self.received: list[Request] = []
        self.sent: list[Response] = []
        self.verified: list[dict[str, str]] = []
        self.refused: list[str] = []
        stack.set_handler(method, self.handle)

    @property
    def challenge_header(self) -> str:
        return "Proxy-Authenticate" if self.status == 407 else "WWW-Authenticate"

    @property
    def credentials_header(self) -> str:
        return "Proxy-Authorization" if self.status == 407 else "Authorization"

    def challenge_value(self, realm: str, stale: bool) -> str:
        value = (f'Digest realm="{realm}", nonce="{self.nonces[realm]}", algorithm={self.algorithm}, '
                 f'opaque="{self.opaques[realm]}"')
        if self.qop:
            value += f', qop="{",".join(self.qop)}"'
        if stale:
            value += ", stale=true"
        if self.userhash:
            value += ", userhash=true"
        return value

    def challenge(self, incoming, stale: bool = False) -> None:
        headers = self.override if self.override is not None else [
            (self.challenge_header, self.challenge_value(realm, stale)) for realm in self.accounts]
        self.sent.append(incoming.respond(self.status, headers=headers))

    def verify(self, request: Request, value: str) -> str | None:
        """The realm ``value`` proves, or None (the reason goes to ``refused``)."""
        try:
            realm = ref_parse(value)[1].get("realm")
            if realm not in self.accounts:
                raise DigestMismatch(f"realm {realm!r} not challenged")
            user, password = self.accounts[realm]
            params = ref_verify(value, method=request.method, uri=str(request.uri), body=request.body, realm=realm,
                                username=user, password=password, nonce=self.nonces[realm],
                                algorithm=self.algorithm, qop_offered=self.qop, opaque=self.opaques[realm],
                                userhash=self.userhash)
            if "nc" in params:
                nc = int(params["nc"], 16)
                if nc <= self.last_nc.get(params["nonce"], 0):
                    raise DigestMismatch(f"nc {params['nc']} replayed")
                self.last_nc[params["nonce"]] = nc
        except DigestMismatch as e:
            self.refused.append(str(e))
            return None
        self.verified.append(params)
        return realm

    def handle(self, incoming) -> None:
        request = incoming.request
        self.received.append(request)
        proven = {self.verify(request, value) for value in request.headers.get_all(self.credentials_header)}
        proven.discard(None)
        if not proven or (self.require_all and proven != set(self.accounts)):
            self.challenge(incoming)
            return
        if self.stale_forever or self.stale_after > 0:
            self.stale_after -= 1
            for realm in proven:
                self.nonces[realm] = fresh_nonce()
            self.challenge(incoming, stale=True)
            return
        self.sent.append(incoming.respond(self.final))


class LogCapture:
    """Every log event while installed, as formatted text and as the raw event."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def text(self) -> str:
        return "\n".join(f"{formatEvent(event)!s} {event!r}" for event in self.events)


class AuthenticatorTests(TestCase):
    timeout = 20

    def setUp(self):
        self.client = self.start()
        self.server_service = self.start()
        self.target = self.server_service.sip.bound_address("udp")

    def start(self, uac: dict | None = None) -> UACService:
        document = {"core": {"listen": ["udp:127.0.0.1:0"], "timer_t1": 50}}
        if uac is not None:
            document["uac"] = uac
        return start_uac(self, document)

    def server(self, accounts=None, **kwargs) -> ChallengingServer:
        return ChallengingServer(self.server_service.stack, accounts or {REALM: ("alice", PASSWORD)}, **kwargs)

    def request(self, method: str = "MESSAGE", body: bytes = b"") -> Request:
        extra = [("Content-Type", "text/plain")] if body else []
        return make_request(method, f"sip:service@{self.target.host}:{self.target.port}",
                            '"Alice" <sip:alice@example.org>', cseq=7, body=body, extra_headers=extra)

    def send(self, credentials, request: Request | None = None, **kwargs) -> defer.Deferred:
        on_challenge = kwargs.pop("on_challenge", None)
        on_retry = kwargs.pop("on_retry", None)
        if not hasattr(credentials, "credentials_for"):
            credentials = FixedCredentials(credentials)
        authenticator = Authenticator(self.client.stack, credentials, **kwargs)
        return authenticator.send(request or self.request(), self.target, on_challenge=on_challenge,
                                  on_retry=on_retry)

    def assert_refused_cleanly(self, error: AuthenticationError, *secrets_: str) -> None:
        text = f"{error} {error!r} {error.args!r}"
        for secret in (PASSWORD, OTHER_PASSWORD, *secrets_):
            self.assertNotIn(secret, text)

    # --- the retry ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_retry_is_a_new_transaction(self):
        """RFC 3261 22.2/8.1.3.5: same Call-ID, From and tag, To without tag, CSeq + 1, new branch, same body."""
        server = self.server()
        body = b"hello, registrar"
        response = yield self.send(Credentials("alice", PASSWORD), self.request(body=body))
        self.assertEqual(response.status, 200)
        self.assertEqual(len(server.received), 2)  # one retry, no more
        first, retry = server.received
        self.assertEqual(retry.call_id, first.call_id)
        self.assertEqual(str(retry.from_), str(first.from_))
        self.assertEqual(retry.from_.tag, first.from_.tag)
        self.assertIsNotNone(first.from_.tag)
        self.assertIsNone(retry.to.tag)
        self.assertIsNotNone(server.sent[0].to.tag)  # the 401 had one; the retry did not take it
        self.assertEqual((first.cseq.number, first.cseq.method), (7, "MESSAGE"))
        self.assertEqual((retry.cseq.number, retry.cseq.method), (8, "MESSAGE"))
        self.assertNotEqual(retry.top_via.branch, first.top_via.branch)
        self.assertTrue(retry.top_via.branch.startswith("z9hG4bK"))
        self.assertEqual(len(retry.via), 1)
        self.assertEqual((first.body, retry.body), (body, body))
        self.assertEqual(str(retry.uri), str(first.uri))
        self.assertNotIn("Authorization", first.headers)
        self.assertEqual(len(retry.headers.get_all("Authorization")), 1)
        self.assertEqual(len(server.verified), 1)
        self.assertEqual(server.refused, [])

    @defer.inlineCallbacks
    def test_on_retry_reports_the_cseq_used(self):
        """The caller learns each authenticated retry before it leaves, with the CSeq it carries."""
        server = self.server()
        retries = []
        response = yield self.send(Credentials("alice", PASSWORD), on_retry=lambda *args: retries.append(args))
        self.assertEqual(response.status, 200)
        [(retry, cseq)] = retries
        self.assertEqual((cseq, retry.cseq.number), (8, 8))
        self.assertEqual(cseq, server.received[1].cseq.number)
        self.assertIn("Authorization", retry.headers)

    @defer.inlineCallbacks
    def test_invite_challenged_with_407(self):
        """INVITE: the 407 is ACKed by the transaction, the retry is a new INVITE with CSeq + 1."""
        server = self.server(status=407, method="INVITE", final=486)
        challenges = []
        response = yield self.send(Credentials("alice", PASSWORD), self.request("INVITE", b"v=0\r\n"),
                                   on_challenge=challenges.append)
        self.assertEqual(response.status, 486)
        self.assertEqual([r.cseq.number for r in server.received], [7, 8])
        self.assertEqual([c.status for c in challenges], [407])
        retry = server.received[1]
        self.assertEqual(len(retry.headers.get_all("Proxy-Authorization")), 1)
        self.assertNotIn("Authorization", retry.headers)
        self.assertEqual(server.verified[0]["uri"], str(retry.uri))

    @defer.inlineCallbacks
    def test_algorithms_end_to_end(self):
        for algorithm in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"):
            server = self.server(algorithm=algorithm, qop=("auth", "auth-int"))
            response = yield self.send(Credentials("alice", PASSWORD), self.request(body=b"x"))
            self.assertEqual((algorithm, response.status), (algorithm, 200))
            self.assertEqual(server.refused, [])
            self.assertEqual(server.verified[0]["algorithm"], algorithm)

    @defer.inlineCallbacks
    def test_userhash_and_ha1_end_to_end(self):
        server = self.server(algorithm="SHA-256", userhash=True)
        ha1 = ref_hash("SHA-256", f"alice:{REALM}:{PASSWORD}")
        response = yield self.send(Credentials("alice", ha1=ha1.upper()))
        self.assertEqual(response.status, 200)
        self.assertEqual(server.verified[0]["username"], ref_hash("SHA-256", f"alice:{REALM}"))

    @defer.inlineCallbacks
    def test_rfc2069_server_end_to_end(self):
        server = self.server(qop=())
        response = yield self.send(Credentials("alice", PASSWORD))
        self.assertEqual(response.status, 200)
        self.assertNotIn("qop", server.verified[0])

    # --- auth-int ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_auth_int_only_with_a_body(self):
        server = self.server(qop=("auth-int",))
        response = yield self.send(Credentials("alice", PASSWORD), self.request(body=b"<xml>payload</xml>"))
        self.assertEqual(response.status, 200)
        self.assertEqual(server.refused, [])
        self.assertEqual(server.verified[0]["qop"], "auth-int")

    @defer.inlineCallbacks
    def test_auth_int_only_with_an_empty_body(self):
        server = self.server(qop=("auth-int",))
        response = yield self.send(Credentials("alice", PASSWORD), self.request(body=b""))
        self.assertEqual(response.status, 200)
        self.assertEqual(server.verified[0]["qop"], "auth-int")
        self.assertEqual(server.received[1].body, b"")

    @defer.inlineCallbacks
    def test_auth_int_checks_the_body_it_received(self):
        """The server hashes the body it received: a body changed in transit fails (it is really hashed)."""
        server = self.server(qop=("auth-int",))
        original = server.verify

        def tampered(request, value):
            request.body = request.body + b"!"
            return original(request, value)

        server.verify = tampered
        e = yield self.assertFailure(self.send(Credentials("alice", PASSWORD), self.request(body=b"data")),
                                     AuthenticationError)
        self.assertEqual(server.refused, ["wrong response"])
        self.assert_refused_cleanly(e)

    @defer.inlineCallbacks
    def test_auth_int_preferred_when_both_offered(self):
        server = self.server(qop=("auth-int", "auth"))
        response = yield self.send(Credentials("alice", PASSWORD), self.request(body=b"payload"),
                                   prefer_auth_int=True)
        self.assertEqual(response.status, 200)
        self.assertEqual(server.verified[0]["qop"], "auth-int")

    @defer.inlineCallbacks
    def test_auth_when_both_offered_by_default(self):
        server = self.server(qop=("auth-int", "auth"))
        response = yield self.send(Credentials("alice", PASSWORD), self.request(body=b"payload"))
        self.assertEqual(response.status, 200)
        self.assertEqual(server.verified[0]["qop"], "auth")

    # --- stale ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_stale_is_answered_again_and_nc_restarts(self):
        """The same nonce on a second request counts nc=2; stale=true with a new nonce is
        answered again (not a failure) with nc=1 for the new nonce."""
        server = self.server()
        authenticator = Authenticator(self.client.stack, FixedCredentials(Credentials("alice", PASSWORD)))
        response = yield authenticator.send(self.request(), self.target)
        self.assertEqual(response.status, 200)
        old_nonce = server.nonces[REALM]
        server.stale_after = 1
        response = yield authenticator.send(self.request(), self.target)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(server.received), 2 + 3)
        self.assertEqual([s.status for s in server.sent], [401, 200, 401, 401, 200])
        self.assertIn("stale=true", server.sent[3].headers.get("WWW-Authenticate"))
        self.assertEqual([(v["nonce"], v["nc"]) for v in server.verified],
                         [(old_nonce, "00000001"), (old_nonce, "00000002"), (server.nonces[REALM], "00000001")])
        self.assertNotEqual(server.nonces[REALM], old_nonce)
        self.assertEqual(server.refused, [])

    @defer.inlineCallbacks
    def test_stale_forever_is_bounded(self):
        server = self.server()
        server.stale_forever = True
        e = yield self.assertFailure(self.send(Credentials("alice", PASSWORD)), AuthenticationError)
        # the first answer, then at most MAX_STALE_RETRIES answers to stale challenges
        self.assertEqual(len(server.received), 2 + MAX_STALE_RETRIES)
        self.assertGreaterEqual(MAX_STALE_RETRIES, 1)
        self.assertEqual(e.response.status, 401)
        self.assertIn("stale=true", e.response.headers.get("WWW-Authenticate"))
        self.assertEqual(e.response.cseq.number, server.received[-1].cseq.number)
        self.assert_refused_cleanly(e)

    # --- refusals ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_wrong_password(self):
        """A second non-stale challenge: AuthenticationError after exactly one retry; .response is it."""
        server = self.server()
        e = yield self.assertFailure(self.send(Credentials("alice", OTHER_PASSWORD)), AuthenticationError)
        self.assertEqual(len(server.received), 2)
        self.assertEqual(server.refused, ["wrong response"])
        self.assertIsInstance(e.response, Response)
        self.assertEqual(e.response.status, 401)
        self.assertEqual(e.response.cseq.number, 8)  # the second 401, answering the retry
        self.assertEqual(e.response.headers.get("WWW-Authenticate"), server.sent[1].headers.get("WWW-Authenticate"))
        self.assertIn(REALM, str(e))
        self.assert_refused_cleanly(e)

    @defer.inlineCallbacks
    def test_no_credentials_for_the_realm(self):
        server = self.server()
        e = yield self.assertFailure(self.send(CredentialList([f"alice:elsewhere.net:{PASSWORD}"])),
                                     AuthenticationError)
        self.assertEqual(len(server.received), 1)
        self.assertEqual(e.response.status, 401)
        self.assertIn(REALM, str(e))
        self.assert_refused_cleanly(e)

    @defer.inlineCallbacks
    def test_403_after_the_retry_is_a_response(self):
        server = self.server(final=403)
        response = yield self.send(Credentials("alice", PASSWORD))
        self.assertEqual(response.status, 403)
        self.assertEqual(len(server.received), 2)

    @defer.inlineCallbacks
    def test_non_digest_only_challenge(self):
        server = self.server()
        server.override = [("WWW-Authenticate", 'Basic realm="x"'), ("WWW-Authenticate", "Bearer mF_9.B5f-4.1JqM")]
        e = yield self.assertFailure(self.send(Credentials("alice", PASSWORD)), AuthenticationError)
        self.assertEqual(len(server.received), 1)
        self.assertEqual(e.response.status, 401)
        self.assertIn("Digest", str(e))

    @defer.inlineCallbacks
    def test_malformed_challenge(self):
        server = self.server()
        server.override = [("WWW-Authenticate", f'Digest realm="{REALM}"')]
        e = yield self.assertFailure(self.send(Credentials("alice", PASSWORD)), AuthenticationError)
        self.assertIn("nonce", str(e))
        self.assertEqual(len(server.received), 1)

    @defer.inlineCallbacks
    def test_algorithm_not_allowed(self):
        server = self.server(algorithm="MD5")
        e = yield self.assertFailure(self.send(Credentials("alice", PASSWORD), algorithms=("SHA-256",)),
                                     AuthenticationError)
        self.assertIn("MD5 not allowed", str(e))
        self.assertEqual(len(server.received), 1)

    # --- several realms ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_407_with_two_realms_answered_both(self):
        """Two Proxy-Authenticate (two proxies): one Proxy-Authorization each (Kamailio: one only)."""
        server = self.server({"proxy-a.example": ("alice", PASSWORD), "proxy-b.example": ("bob", OTHER_PASSWORD)},
                             status=407)
        credentials = CredentialList([f"alice:proxy-a.example:{PASSWORD}", f"bob:proxy-b.example:{OTHER_PASSWORD}"])
        response = yield self.send(credentials)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(server.received), 2)
        values = server.received[1].headers.get_all("Proxy-Authorization")
        self.assertEqual(sorted(ref_parse(v)[1]["realm"] for v in values), ["proxy-a.example", "proxy-b.example"])
        self.assertEqual(sorted(v["username"] for v in server.verified), ["alice", "bob"])
        self.assertEqual(server.refused, [])

    @defer.inlineCallbacks
    def test_407_with_two_realms_one_known(self):
        server = self.server({"proxy-a.example": ("alice", PASSWORD), "proxy-b.example": ("bob", OTHER_PASSWORD)},
                             status=407, require_all=False)
        response = yield self.send(CredentialList([f"alice:proxy-a.example:{PASSWORD}"]))
        self.assertEqual(response.status, 200)
        values = server.received[1].headers.get_all("Proxy-Authorization")
        self.assertEqual([ref_parse(v)[1]["realm"] for v in values], ["proxy-a.example"])

    @defer.inlineCallbacks
    def test_earlier_proxy_credentials_are_not_replayed(self):
        """BUG: 407 (proxy realm) then 401 (registrar realm): the third request repeats the
        Proxy-Authorization of the second verbatim, same nonce and same nc, which RFC 2617
        3.2.2 / RFC 7616 3.4 make a replay; a proxy checking nc refuses it. It must be
        answered afresh (nc 00000002 for that nonce)."""
        proxy_realm, nonces = "proxy.example", {}
        received: list[Request] = []
        last_nc: dict[str, int] = {}

        def verified(request, header, realm, user, password) -> bool:
            for value in request.headers.get_all(header):
                try:
                    params = ref_verify(value, method=request.method, uri=str(request.uri), realm=realm,
                                        username=user, password=password, nonce=nonces[realm],
                                        qop_offered=("auth",))
                except DigestMismatch:
                    continue
                nc = int(params["nc"], 16)
                if nc > last_nc.get(params["nonce"], 0):
                    last_nc[params["nonce"]] = nc
                    return True
            return False

        def handle(incoming):
            request = incoming.request
            received.append(request)
            for status, header, realm, user, password in (
                    (407, "Proxy-Authorization", proxy_realm, "alice", PASSWORD),
                    (401, "Authorization", REALM, "alice", OTHER_PASSWORD)):
                if not verified(request, header, realm, user, password):
                    nonces.setdefault(realm, fresh_nonce())
                    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
                    incoming.respond(status, headers=[(name, f'Digest realm="{realm}", nonce="{nonces[realm]}", '
                                                             'qop="auth"')])
                    return
            incoming.respond(200)

        self.server_service.stack.set_handler("MESSAGE", handle)
        credentials = CredentialList([f"alice:{proxy_realm}:{PASSWORD}", f"alice:{REALM}:{OTHER_PASSWORD}"])
        try:
            response = yield self.send(credentials)
        except AuthenticationError as e:
            response = e.response  # the proxy refused the replayed credentials
        self.assertEqual([r.cseq.number for r in received][:3], [7, 8, 9])
        second, third = received[1], received[2]
        self.assertEqual(len(third.headers.get_all("Proxy-Authorization")), 1)
        self.assertNotEqual(third.headers.get("Proxy-Authorization"), second.headers.get("Proxy-Authorization"))
        self.assertEqual(ref_parse(third.headers.get("Proxy-Authorization"))[1]["nc"], "00000002")
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_rounds_are_bounded_when_realms_keep_changing(self):
        """BUG: "any realm" credentials and a server that challenges with a new realm every
        time: each realm is a new key in Authenticator.answered, so the client retries
        forever (here until the server gives in after 20 requests). Kamailio answers once;
        txuac should stop after a small number of rounds with AuthenticationError."""
        received: list[Request] = []

        def handle(incoming):
            received.append(incoming.request)
            if len(received) > 20:
                incoming.respond(200)
                return
            incoming.respond(401, headers=[("WWW-Authenticate",
                                            f'Digest realm="realm-{len(received)}", nonce="{fresh_nonce()}"')])

        self.server_service.stack.set_handler("MESSAGE", handle)
        try:
            response = yield self.send(Credentials("alice", PASSWORD))
        except AuthenticationError:
            response = None
        self.assertLessEqual(len(received), 6, f"{len(received)} requests sent")
        self.assertIsNone(response, "the endless challenges were not refused")

    # --- configuration and the service's own authenticator ----------------------------------

    @defer.inlineCallbacks
    def test_service_credentials_last_entry_wins(self):
        server = self.server()
        client = self.start({"credential": [f"alice:{REALM}:wrong-one", f"alice:{REALM}:{PASSWORD}"],
                             "auth_algorithms": ["MD5", "SHA-256"]})
        response = yield client.authenticator.send(self.request(), self.target)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(server.received), 2)

    @defer.inlineCallbacks
    def test_service_prefer_auth_int(self):
        server = self.server(qop=("auth", "auth-int"))
        client = self.start({"credential": [f"alice:{REALM}:{PASSWORD}"], "auth_prefer_auth_int": True})
        response = yield client.authenticator.send(self.request(body=b"b"), self.target)
        self.assertEqual(response.status, 200)
        self.assertEqual(server.verified[0]["qop"], "auth-int")

    # --- logs -------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_logs_show_no_secret(self):
        """A full exchange (success, stale, and refusal) logs no password, HA1 or response value."""
        capture = LogCapture()
        globalLogPublisher.addObserver(capture)
        self.addCleanup(globalLogPublisher.removeObserver, capture)
        server = self.server(qop=("auth-int",))
        server.stale_after = 1
        response = yield self.send(CredentialList([f"alice:{REALM}:{PASSWORD}"]), self.request(body=b"b"))
        self.assertEqual(response.status, 200)
        yield self.assertFailure(self.send(Credentials("alice", OTHER_PASSWORD)), AuthenticationError)
        ha1 = Credentials("alice", ha1=ref_hash("MD5", f"alice:{REALM}:{PASSWORD}"))
        # A new Authenticator counts nc from 1: a fresh nonce, or the server sees a replay.
        server.nonces[REALM] = fresh_nonce()
        response = yield self.send(ha1)
        self.assertEqual(response.status, 200)
        globalLogPublisher.removeObserver(capture)
        text = capture.text()
        self.assertTrue(capture.events, "nothing was logged: the capture did not work")
        self.assertIn(REALM, text)  # the authenticator's own line is there
        responses = [v["response"] for v in server.verified]
        self.assertGreaterEqual(len(responses), 3)
        for secret in (PASSWORD, OTHER_PASSWORD, ha1.ha1, *responses):
            self.assertNotIn(secret, text)
        self.assertNotIn("response=", text)
        self.assertNotIn("Digest username", text)


class AuthorizedRetryTests(SynchronousTestCase):
    """authorized_retry without the network."""

    def test_replaces_the_answer_for_the_same_realm_only(self):
        request = make_request("REGISTER", "sip:example.org", "sip:alice@example.org", cseq=3)
        request.headers.add("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKold")
        request.headers.add("Proxy-Authorization", 'Digest username="a", realm="p1", nonce="x", uri="sip:x", '
                                                   'response="0"')
        request.headers.add("Proxy-Authorization", 'Digest username="a", realm="p2", nonce="y", uri="sip:x", '
                                                   'response="0"')
        challenge = Challenge("p1", "z", proxy=True)
        retry = authorized_retry(request, [(challenge, 'Digest username="a", realm="p1", nonce="z"')])
        self.assertNotIn("Via", retry.headers)
        self.assertEqual(str(retry.headers.get("CSeq")), "4 REGISTER")
        realms = sorted((ref_parse(v)[1]["realm"], ref_parse(v)[1]["nonce"])
                        for v in retry.headers.get_all("Proxy-Authorization"))
        self.assertEqual(realms, [("p1", "z"), ("p2", "y")])
        self.assertEqual(request.cseq.number, 3)  # the original is untouched
        self.assertIn("Via", request.headers)


class CredentialSourceTests(SynchronousTestCase):

    def challenge(self, realm: str) -> Challenge:
        return Challenge(realm, "n")

    def test_last_entry_for_a_realm_wins(self):
        credentials = CredentialList(["alice:a.example:one", "bob:b.example:two", "carol:a.example:three"])
        found = credentials.credentials_for(self.challenge("a.example"))
        self.assertEqual((found.username, found.password, found.realm), ("carol", "three", "a.example"))
        self.assertEqual(credentials.credentials_for(self.challenge("b.example")).username, "bob")
        self.assertIsNone(credentials.credentials_for(self.challenge("c.example")))
        self.assertEqual(len(credentials), 2)

    def test_password_may_contain_colons(self):
        found = CredentialList(["alice:a.example:pa:ss:word"]).credentials_for(self.challenge("a.example"))
        self.assertEqual(found.password, "pa:ss:word")

    def test_realm_match_is_exact(self):
        credentials = CredentialList(["alice:A.example:pw"])
        self.assertIsNone(credentials.credentials_for(self.challenge("a.example")))

    def test_malformed_entries(self):
        for entry in (f"alice:{PASSWORD}", f":a.example:{PASSWORD}", f"alice::{PASSWORD}",
                      f"alice{PASSWORD}", f"{PASSWORD}"):
            with self.subTest(entry=entry):
                e = self.assertRaises(ConfigError, CredentialList, ["ok:r:fine", entry])
                self.assertIn("user:realm:password", str(e))
                self.assertNotIn(PASSWORD, str(e))

    def test_malformed_entries_in_settings(self):
        for entry in (f"alice:{PASSWORD}", f"{PASSWORD}"):
            with self.subTest(entry=entry):
                e = self.assertRaises(ConfigError, settings_from_dict, {"uac": {"credential": [entry]}})
                self.assertIn("credential", str(e))
                self.assertNotIn(PASSWORD, str(e))

    def test_settings_repr_hides_passwords(self):
        """BUG: UACSettings is a plain dataclass: repr(settings) shows every password."""
        settings = settings_from_dict({"uac": {"credential": [f"alice:a.example:{PASSWORD}"]}})
        self.assertNotIn(PASSWORD, repr(settings))
        self.assertNotIn(PASSWORD, repr(settings.uac))

    def test_fixed_credentials(self):
        any_realm = FixedCredentials(Credentials("alice", PASSWORD))
        self.assertEqual(any_realm.credentials_for(self.challenge("x")).username, "alice")
        bound = FixedCredentials(Credentials("alice", PASSWORD, realm="a"))
        self.assertIsNone(bound.credentials_for(self.challenge("b")))
        md5_ha1 = FixedCredentials(Credentials("alice", ha1="0" * 32))
        self.assertIsNone(md5_ha1.credentials_for(Challenge("a", "n", algorithm="SHA-256")))
        self.assertIsNotNone(md5_ha1.credentials_for(Challenge("a", "n", algorithm="MD5")))

    def test_sources_provide_the_interface(self):
        for source in (CredentialList(), FixedCredentials(Credentials("a", "b"))):
            self.assertTrue(ICredentialSource.providedBy(source))
