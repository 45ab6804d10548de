"""event_route[tm:branch-failure:NAME] armed by tm.t_on_branch_failure (fake stack and
clock): run for each failed branch before the transaction decides, uac_auth answering that
branch's challenge there, a branch relayed from it keeping the transaction going."""

from __future__ import annotations

from tests.support.proxy_harness import CALLEE, ProxyTestCase, request
from tests.support.stack_harness import PEER
from tests.support.trunk_auth import REALM, auth_params, challenge, digest_response
from txuac.auth import CredentialList
from txuac.routing.proxy import ServiceParts

BRANCH_FAILURE_SCRIPT = '''
from txuac.routing.script import event_route, failure_route, request_route

SEEN = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    user = msg.uri.user
    SEEN.append(tm.t_on_branch_failure("NOPE" if user == "missing" else "AUTH"))
    if user == "both":
        tm.t_on_failure("LAST")
    tm.t_relay()


@event_route("tm:branch-failure:AUTH")
def branch_auth(msg, uac, tm, rr, dialog, sl):
    SEEN.append(("branch-failure", str(msg.uri), tm.t_check_status("407"), tm.t_check_status("408")))
    if tm.t_check_status("401|407") > 0 and uac.uac_auth() > 0:
        SEEN.append(("relayed", tm.t_relay()))


@failure_route("LAST")
def last(msg, uac, tm, rr, dialog, sl):
    SEEN.append("failure_route")
'''


class BranchFailureRouteTests(ProxyTestCase):
    script = BRANCH_FAILURE_SCRIPT
    parts = ServiceParts(credentials=CredentialList([f"trunkuser:{REALM}:trunkpass"]))

    def seen(self):
        return self.proxy.routes.module.SEEN

    def invites(self, sent):
        return [m for m, a in sent if a == CALLEE and getattr(m, "method", None) == "INVITE"]

    def test_challenge_answered_on_a_new_branch_from_the_branch_failure_route(self):
        first = self.forwarded_invite("bob")
        self.sent()
        self.answer(first, 407, to_tag="t407", extra=[challenge()])
        sent = self.sent()
        [second] = self.invites(sent)
        self.assertEqual([m for m, a in sent if a == PEER], [])  # the 407 does not go upstream
        self.assertEqual(second.headers.get("CSeq"), "2 INVITE")
        header = second.headers.get("Proxy-Authorization")
        self.assertEqual(auth_params(header)["uri"], str(first.uri))
        self.assertEqual(auth_params(header)["response"], digest_response(header, "INVITE", "trunkpass", "trunkuser"))
        self.assertEqual(self.seen(), [1, ("branch-failure", str(first.uri), 1, -1), ("relayed", 1)])
        upstream = self.ringing_then_answered(second)
        self.assertEqual([(m.status, m.headers.get("CSeq")) for m in upstream], [(180, "1 INVITE"), (200, "1 INVITE")])

    def test_a_failure_it_does_not_handle_goes_upstream(self):
        first = self.forwarded_invite("bob")
        self.sent()
        self.answer(first, 486)
        self.assertEqual([m.status for m in self.sent(PEER)], [486])
        self.assertEqual(self.seen(), [1, ("branch-failure", str(first.uri), -1, -1)])

    def test_it_runs_before_the_failure_route_which_waits_for_the_new_branch(self):
        first = self.forwarded_invite("both")
        self.sent()
        self.answer(first, 407, to_tag="t407", extra=[challenge()])
        [second] = self.invites(self.sent())
        self.assertNotIn("failure_route", self.seen())
        # The authenticated branch fails: the route runs for it too, then the failure route
        # gets its turn, and 16.7 picks the 407 of the first branch over the 486.
        self.answer(second, 486, to_tag="t486")
        self.assertEqual(self.seen()[-2:], [("branch-failure", str(first.uri), -1, -1), "failure_route"])
        self.assertEqual([m.status for m in self.sent(PEER)], [407])

    def test_local_timeout_runs_it(self):
        first = self.forwarded_invite("bob")
        self.reactor.advance(64 * 0.5 + 1)  # Timer B (T1 0.5 s)
        self.assertEqual([m.status for m, a in self.sent() if a == PEER], [408])
        self.assertEqual(self.seen(), [1, ("branch-failure", str(first.uri), -1, 1)])

    def test_arming_a_missing_route_fails(self):
        self.receive(request(uri=f"sip:missing@{CALLEE[0]}:{CALLEE[1]}"))
        [first] = self.sent(CALLEE)
        self.answer(first, 486)
        self.assertEqual([m.status for m in self.sent(PEER)], [486])
        self.assertEqual(self.seen(), [-1])
