"""Client digest authentication against a real Kamailio registrar (auth module) on loopback.

Kamailio accepting our responses is the proof: MD5 and SHA-256 with qop auth,
no qop, 407 from a proxy, and a wrong password failing after one retry.
(Kamailio 5.6 cannot verify auth-int; tests/test_auth.py proves auth-int
against a verifier of our own.)
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.kamailio import KamailioRegistrar
from txuac.auth import Authenticator, CredentialList, FixedCredentials
from txuac.config import settings_from_dict
from txuac.errors import AuthenticationError
from txuac.service import UACService
from txuac.sip import make_request
from txuac.sip.digest import Credentials
from txuac.sip.via import Address

REALM = "test.example"


class KamailioDigestTests(TestCase):

    timeout = 30

    def setUp(self):
        self.service = UACService(settings_from_dict({"core": {"listen": ["udp:127.0.0.1:0"], "timer_t1": 100},
                                                      "rpc": {"enabled": False}}))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.local = self.service.sip.bound_address("udp")

    def register(self, registrar: KamailioRegistrar, user: str) -> object:
        """A REGISTER for ``user`` as Kamailio's uac module lays it out (R-URI the registrar domain)."""
        aor = f"sip:{user}@{REALM}"
        return make_request(
            "REGISTER", f"sip:{REALM}", aor, aor,
            extra_headers=[("Contact", f"<sip:{user}@{self.local.host}:{self.local.port}>"), ("Expires", "300")],
        ), registrar.address

    def authenticator(self, user: str, password: str, **options) -> Authenticator:
        return Authenticator(self.service.stack, FixedCredentials(Credentials(user, password=password)), **options)

    @defer.inlineCallbacks
    def assertRegisters(self, registrar: KamailioRegistrar, user: str = "alice"):
        request, (host, port) = self.register(registrar, user)
        challenges = []
        auth = self.authenticator(user, registrar.password_for(user))
        response = yield auth.send(request, Address("udp", host, port), on_challenge=challenges.append)
        self.assertEqual(response.status, 200, registrar.explain(f"REGISTER got {response.status}"))
        self.assertEqual(len(challenges), 1)
        contacts = yield registrar.wait_for_contacts(f"sip:{user}@{REALM}", 1)
        self.assertEqual(contacts, [f"sip:{user}@{self.local.host}:{self.local.port}"])
        return challenges[0]

    @defer.inlineCallbacks
    def test_md5_with_qop_auth(self):
        challenge = yield self.assertRegisters(KamailioRegistrar(self))
        self.assertIn('qop="auth"', challenge.headers.get("WWW-Authenticate"))

    @defer.inlineCallbacks
    def test_sha256_with_qop_auth(self):
        challenge = yield self.assertRegisters(KamailioRegistrar(self, algorithm="SHA-256"))
        self.assertIn("algorithm=SHA-256", challenge.headers.get("WWW-Authenticate"))

    @defer.inlineCallbacks
    def test_md5_without_qop(self):
        challenge = yield self.assertRegisters(KamailioRegistrar(self, qop=None))
        self.assertNotIn("qop", challenge.headers.get("WWW-Authenticate"))

    @defer.inlineCallbacks
    def test_sha256_without_qop(self):
        yield self.assertRegisters(KamailioRegistrar(self, algorithm="SHA-256", qop=None))

    @defer.inlineCallbacks
    def test_credential_list_with_realm(self):
        """The [uac] credential list (last entry for a realm wins) answers the registrar."""
        registrar = KamailioRegistrar(self)
        request, (host, port) = self.register(registrar, "bob")
        credentials = CredentialList(["bob:test.example:wrong", f"bob:test.example:{registrar.password_for('bob')}"])
        response = yield Authenticator(self.service.stack, credentials).send(request, Address("udp", host, port))
        self.assertEqual(response.status, 200, registrar.explain())

    @defer.inlineCallbacks
    def test_proxy_407_is_answered_with_proxy_authorization(self):
        registrar = KamailioRegistrar(self, proxy=True)
        request = make_request("OPTIONS", f"sip:carol@{REALM}", f"sip:carol@{REALM}")
        challenges = []
        auth = self.authenticator("carol", registrar.password_for("carol"))
        response = yield auth.send(request, Address("udp", *registrar.address), on_challenge=challenges.append)
        self.assertEqual([c.status for c in challenges], [407])
        self.assertEqual(response.status, 200, registrar.explain())

    @defer.inlineCallbacks
    def test_wrong_password_fails_after_one_retry(self):
        """Kamailio's default answer to a wrong password is 403: returned after exactly one retry."""
        registrar = KamailioRegistrar(self)
        request, address = self.register(registrar, "dave")
        response = yield self.authenticator("dave", "not-the-password").send(request, Address("udp", *address))
        self.assertEqual(response.status, 403, registrar.explain())
        self.assertEqual(len([line for line in registrar.script_log() if "auth REGISTER" in line]), 2,
                         registrar.explain("one challenge, one retry"))
        self.assertEqual(registrar.contacts(f"sip:dave@{REALM}"), [])

    @defer.inlineCallbacks
    def test_wrong_password_rechallenged_is_an_authentication_error(self):
        """A registrar that challenges again: AuthenticationError after one retry, never a loop."""
        registrar = KamailioRegistrar(self, rechallenge_wrong_password=True)
        request, address = self.register(registrar, "erin")
        failure = yield self.assertFailure(
            self.authenticator("erin", "not-the-password").send(request, Address("udp", *address)),
            AuthenticationError)
        self.assertEqual(failure.response.status, 401)
        self.assertNotIn("not-the-password", str(failure))
        self.assertEqual(len([line for line in registrar.script_log() if "auth REGISTER" in line]), 2,
                         registrar.explain("one challenge, one retry"))
