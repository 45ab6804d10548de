"""uac.uac_auth in a failure route (fake stack and clock): the trunk's 407 answered on a new
branch, CSeq raised for it and for the rest of the dialog in that direction, replies
given back the caller's CSeq; the cases where it returns -1."""

from __future__ import annotations

from twisted.logger import capturedLogs

from tests.support.proxy_harness import CALLEE, OURS, ProxyTestCase, request
from tests.support.stack_harness import PEER
from tests.support.trunk_auth import OWN_HA1, REALM, auth_params, challenge, digest_response
from txuac.auth import CredentialList
from txuac.routing.proxy import ServiceParts
from txuac.sip.message import make_response

TRUNK_SCRIPT = '''
from txuac.routing.script import failure_route, request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.to is not None and msg.to.tag is not None:
        rr.loose_route()
        tm.t_relay()
        return
    if msg.uri.user == "early":
        uac.uac_auth()  # not in a failure route: RouteContextError, 500
    if msg.uri.user == "own":
        uac.credentials.username, uac.credentials.password = "own-user", "own-secret"
    if msg.uri.user == "ha1":
        uac.credentials.username = "own-user"
        uac.credentials.password = OWN_HA1
    if msg.method == "INVITE" and msg.uri.user != "norr":
        rr.record_route()
        if msg.uri.user == "managed":
            dialog.dlg_manage()
    tm.t_on_failure("TRUNKAUTH")
    tm.t_relay()


@failure_route("TRUNKAUTH")
def trunk_auth(msg, uac, tm, rr, dialog, sl):
    mode = 1 if msg.uri.user == "ha1" else 0
    if msg.uri.user == "timeout":  # whatever failed: a local 408 must not be answered
        if uac.uac_auth() > 0:
            tm.t_relay()
        return
    if tm.t_check_status("401|407") > 0 and uac.uac_auth(mode) > 0:
        tm.t_relay()
'''


class UacAuthTests(ProxyTestCase):
    script = TRUNK_SCRIPT.replace("OWN_HA1", repr(OWN_HA1))
    parts = ServiceParts(credentials=CredentialList([f"trunkuser:{REALM}:trunkpass"]))

    def challenged_invite(self, user="bob"):
        """The INVITE forwarded, challenged 407 by the callee; the resent INVITE."""
        first = self.forwarded_invite(user)
        self.sent()
        self.answer(first, 407, to_tag="t407", extra=[challenge()])
        sent = self.sent()
        acks = [m for m, a in sent if a == CALLEE and getattr(m, "method", None) == "ACK"]
        [second] = [m for m, a in sent if a == CALLEE and getattr(m, "method", None) == "INVITE"]
        self.assertEqual(len(acks), 1)  # the stack ACKs the 407 (17.1.1.3)
        self.assertEqual([m for m, a in sent if a == PEER], [])  # the 407 does not go upstream
        return first, second

    def test_challenge_answered_on_a_new_branch_with_cseq_raised(self):
        first, second = self.challenged_invite()
        self.assertEqual(str(second.uri), str(first.uri))
        self.assertNotEqual(second.top_via.branch, first.top_via.branch)
        self.assertEqual(second.headers.get("CSeq"), "2 INVITE")
        self.assertEqual(second.headers.get("Record-Route"), first.headers.get("Record-Route"))
        header = second.headers.get("Proxy-Authorization")
        params = auth_params(header)
        self.assertEqual((params["username"], params["realm"], params["uri"]), ("trunkuser", REALM, str(first.uri)))
        self.assertEqual(params["response"], digest_response(header, "INVITE", "trunkpass", "trunkuser"))

    def test_raised_invite_is_record_routed_by_itself(self):
        # Without rr.record_route(): the dialog's later requests must come back to be raised.
        first, second = self.challenged_invite("norr")
        self.assertNotIn("Record-Route", first.headers)
        self.assertEqual(second.headers.get("Record-Route"), f"<{OURS};lr;ftag=alice1>")

    def test_caller_gets_its_own_cseq_and_the_dialog_stays_raised(self):
        _, second = self.challenged_invite()
        self.answer(second, 180)
        self.answer(second, 200)
        upstream = self.sent(PEER)
        self.assertEqual([(r.status, r.headers.get("CSeq")) for r in upstream],
                         [(180, "1 INVITE"), (200, "1 INVITE")])
        route = f"Route: <{OURS};lr;ftag=alice1>\r\n"
        # The caller's ACK (CSeq 1) and re-INVITE (2) and BYE (3) reach the callee raised by one.
        self.receive(request("ACK", to_tag="bobtag", branch="z9hG4bKack", extra=route, cseq="1 ACK"))
        self.receive(request("INVITE", to_tag="bobtag", branch="z9hG4bKre", extra=route, cseq="2 INVITE"))
        downstream = self.sent(CALLEE)
        self.assertEqual([m.headers.get("CSeq") for m in downstream], ["2 ACK", "3 INVITE"])
        self.answer(downstream[1], 200)
        self.assertEqual([r.headers.get("CSeq") for r in self.sent(PEER)], ["2 INVITE"])
        self.receive(request("BYE", to_tag="bobtag", branch="z9hG4bKbye", extra=route, cseq="3 BYE"))
        [bye] = [m for m in self.sent(CALLEE) if m.method == "BYE"]
        self.assertEqual(bye.headers.get("CSeq"), "4 BYE")
        self.answer(bye, 200)
        self.assertEqual([r.headers.get("CSeq") for r in self.sent(PEER)], ["3 BYE"])

    def test_callee_requests_keep_their_cseq(self):
        _, second = self.challenged_invite()
        self.answer(second, 200)
        self.sent()
        callee_bye = (f"BYE sip:alice@{PEER[0]}:{PEER[1]} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP {CALLEE[0]}:{CALLEE[1]};branch=z9hG4bKcb\r\n"
                      f"Route: <{OURS};lr;ftag=alice1>\r\n"
                      "From: <sip:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>;tag=alice1\r\n"
                      "Call-ID: call-1\r\nCSeq: 7 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.receive(callee_bye, CALLEE)
        [bye] = self.sent(PEER)
        self.assertEqual(bye.headers.get("CSeq"), "7 BYE")

    def test_with_dlg_manage_the_407_does_not_end_the_dialog(self):
        _, second = self.challenged_invite("managed")
        [dialog] = list(self.proxy.dialogs)
        self.assertEqual(dialog.end_reason, None)
        self.answer(second, 200)
        self.assertEqual(dialog.callee_tag, "bobtag")
        self.assertEqual(dialog.cseq_offset[list(dialog.cseq_offset)[0]], 1)

    def test_request_credentials_answer_any_realm(self):
        first = self.forwarded_invite("own")
        self.sent()
        self.answer(first, 407, to_tag="t407", extra=[challenge(realm="elsewhere")])
        [second] = [m for m in self.sent(CALLEE) if m.method == "INVITE"]
        header = second.headers.get("Proxy-Authorization")
        self.assertIn('username="own-user"', header)
        self.assertIn('realm="elsewhere"', header)
        self.assertEqual(auth_params(header)["response"],
                         digest_response(header, "INVITE", "own-secret", "own-user"))

    def test_ha1_mode(self):
        first = self.forwarded_invite("ha1")
        self.sent()
        self.answer(first, 407, to_tag="t407", extra=[challenge()])
        [second] = [m for m in self.sent(CALLEE) if m.method == "INVITE"]
        header = second.headers.get("Proxy-Authorization")
        self.assertEqual(auth_params(header)["response"],
                         digest_response(header, "INVITE", "own-secret", "own-user"))

    def test_second_challenge_goes_upstream(self):
        _, second = self.challenged_invite()
        self.answer(second, 407, to_tag="t407b", extra=[challenge(nonce="again")])
        statuses = [(m.status, m.headers.get("CSeq")) for m in self.sent(PEER)]
        self.assertEqual(statuses, [(407, "1 INVITE")])  # the failure route is not re-armed

    def test_no_credentials_for_the_realm(self):
        first = self.forwarded_invite()
        self.sent()
        with capturedLogs() as events:
            self.answer(first, 407, to_tag="t407", extra=[challenge(realm="unknown.example")])
        self.assertEqual([m.status for m in self.sent(PEER)], [407])
        self.assertTrue(any("uac_auth" in e.get("log_format", "") for e in events))

    def test_local_timeout_is_not_answered(self):
        first = self.forwarded_invite("timeout")
        self.reactor.advance(64 * 0.5 + 1)  # Timer B (T1 0.5 s)
        sent = self.sent()
        self.assertEqual([m.status for m, a in sent if a == PEER], [408])
        # Retransmissions of the first branch only: no second branch.
        self.assertEqual({m.top_via.branch for m, a in sent if getattr(m, "method", None) == "INVITE"},
                         {first.top_via.branch})

    def test_challenge_from_another_address_is_not_answered(self):
        first = self.forwarded_invite()
        self.sent()
        response = make_response(first, 407, to_tag="t407", extra_headers=[challenge()])
        with capturedLogs() as events:
            self.receive(bytes(response), ("203.0.113.66", 5060))
        self.assertEqual([m for m in self.sent(CALLEE) if getattr(m, "method", None) == "INVITE"], [])
        self.assertTrue(any("uac_auth" in e.get("log_format", "") for e in events))

    def test_uac_auth_outside_a_failure_route_is_a_script_error(self):
        self.receive(request(uri=f"sip:early@{CALLEE[0]}"))
        self.assertEqual([m.status for m in self.sent(PEER)], [500])

    def test_message_outside_a_dialog_raised_once(self):
        self.receive(request("MESSAGE"))
        [first] = self.sent(CALLEE)
        self.answer(first, 407, to_tag="t407", extra=[challenge()])
        [second] = [m for m in self.sent(CALLEE) if m.method == "MESSAGE"]
        self.assertEqual(second.headers.get("CSeq"), "2 MESSAGE")
        self.answer(second, 200)
        self.assertEqual([(m.status, m.headers.get("CSeq")) for m in self.sent(PEER)], [(200, "1 MESSAGE")])
        self.assertEqual(len(self.proxy.dialogs), 0)
