"""txuac.auth: a challenge is answered only when it came from where the request went.

A fake stack hands the Authenticator responses with their ResponseOrigin, as SIPStack's
ClientRequest tells it; the real stack's is tested in tests/net/test_response_origin.py,
the registrant's use in tests/registrant/test_challenge_origin.py.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from txuac.auth import Authenticator, FixedCredentials, challenge_origin
from txuac.errors import AuthenticationError, ChallengeOriginError
from txuac.net.interfaces import ResponseOrigin
from txuac.net.stack import ClientRequest
from txuac.sip import make_request, make_response, parse_message
from txuac.sip.digest import Credentials
from txuac.sip.via import Address

REGISTRAR = Address("udp", "198.51.100.7", 5060)
ATTACKER = Address("udp", "203.0.113.9", 5060)
REALM = "registrar.example.org"


def stamped(request, status, source, sent_to, *headers):
    """``status`` to ``request`` as the stack delivers it: parsed from the wire, and where it
    came from (None: the stack does not say)."""
    response = parse_message(bytes(make_response(request, status, to_tag="t1", extra_headers=list(headers))))
    return response, ResponseOrigin(source, sent_to) if source is not None else None


class ChallengeOriginTests(SynchronousTestCase):
    def setUp(self):
        self.request = make_request("REGISTER", "sip:registrar.example.org", "sip:alice@registrar.example.org")

    def check(self, source, sent_to, target="our registrar"):
        return challenge_origin(stamped(self.request, 401, source, sent_to)[1], target)

    def test_from_the_target(self):
        self.assertIsNone(self.check(REGISTRAR, REGISTRAR))

    def test_from_another_host(self):
        self.assertEqual(self.check(ATTACKER, REGISTRAR),
                         "challenge from 203.0.113.9:5060, not from our registrar: not answered")

    def test_from_another_port_of_the_registrar(self):
        self.assertIsNotNone(self.check(Address("udp", "198.51.100.7", 5061), REGISTRAR))

    def test_over_another_transport(self):
        reason = self.check(Address("tcp", "198.51.100.7", 5060), REGISTRAR)
        self.assertEqual(reason, "challenge from tcp:198.51.100.7:5060, not from our registrar: not answered")

    def test_ip_spellings(self):
        self.assertIsNone(self.check(Address("udp", "2001:db8::7", 5060), Address("udp", "[2001:DB8:0::7]", 5060)))
        self.assertIsNone(self.check(Address("udp", "::ffff:198.51.100.7", 5060), REGISTRAR))
        self.assertIn("[2001:db8::9]:5060", self.check(Address("udp", "2001:db8::9", 5060),
                                                       Address("udp", "2001:db8::7", 5060)))

    def test_unstamped_response_is_not_refused(self):
        """A stack that does not say where responses come from (these fakes): nothing to check."""
        self.assertIsNone(self.check(None, None))
        self.assertIsNone(challenge_origin(None))


class OneShotStack:
    """Answers each request with the next of ``responses`` (a function of the request)."""

    def __init__(self, *responses):
        self.responses = list(responses)
        self.requests = []

    def start_request(self, request, target=None, on_provisional=None, source=None, t2=None, on_final=None):
        self.requests.append(request)
        response, origin = self.responses.pop(0)(request)
        handle = ClientRequest()
        handle.origin = origin
        handle.deferred = defer.succeed(response)
        if on_final is not None:
            handle.deferred.addBoth(on_final, handle)
        return handle


class AuthenticatorOriginTests(SynchronousTestCase):
    challenge = ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="n1", qop="auth", algorithm=MD5')

    def setUp(self):
        self.request = make_request("REGISTER", f"sip:{REALM}", f"sip:alice@{REALM}")
        self.challenged = []

    def send(self, first_from, check_origin=challenge_origin):
        stack = OneShotStack(lambda r: stamped(r, 401, first_from, REGISTRAR, self.challenge),
                             lambda r: stamped(r, 200, REGISTRAR, REGISTRAR))
        authenticator = Authenticator(stack, FixedCredentials(Credentials("alice", password="secret-Okapi-1")))
        d = authenticator.send(self.request, REGISTRAR, on_challenge=self.challenged.append,
                               check_origin=check_origin)
        return stack, d

    def test_challenge_from_the_target_is_answered(self):
        stack, d = self.send(REGISTRAR)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(len(stack.requests), 2)
        self.assertIn("Authorization", stack.requests[1].headers)

    def test_challenge_from_elsewhere_is_not_answered(self):
        with capturedLogs() as events:
            stack, d = self.send(ATTACKER)
        failure = self.failureResultOf(d, ChallengeOriginError)
        self.assertIsInstance(failure.value, AuthenticationError)  # a failed attempt, as any refused challenge
        self.assertEqual(str(failure.value), "challenge from 203.0.113.9:5060, not from the request's target: "
                                             "not answered")
        self.assertEqual(failure.value.response.status, 401)
        self.assertEqual(len(stack.requests), 1)  # no digest computed, nothing sent again
        self.assertEqual(self.challenged, [])
        warnings = [e for e in events if "not answered" in e.get("refused", "")]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("secret-Okapi-1", repr(events))

    def test_start_tells_where_the_final_came_from(self):
        stack = OneShotStack(lambda r: stamped(r, 401, REGISTRAR, REGISTRAR, self.challenge),
                             lambda r: stamped(r, 200, ATTACKER, REGISTRAR))
        authenticator = Authenticator(stack, FixedCredentials(Credentials("alice", password="secret-Okapi-1")))
        rounds = authenticator.start(self.request, REGISTRAR, check_origin=challenge_origin)
        self.assertEqual(self.successResultOf(rounds.deferred).status, 200)
        self.assertEqual(rounds.origin, ResponseOrigin(ATTACKER, REGISTRAR))

    def test_without_check_any_challenge_is_answered(self):
        """Without check_origin (uac_req_send, ...) the Authenticator behaves as before."""
        stack, d = self.send(ATTACKER, check_origin=None)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(len(stack.requests), 2)
