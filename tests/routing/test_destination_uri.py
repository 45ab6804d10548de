"""Kamailio's $du in the tm namespace (tm.du, setdsturi, resetdsturi, isdsturiset):
the branch goes to the destination URI, the Request-URI stays (fake stack and clock)."""

from __future__ import annotations

from tests.support.proxy_harness import CALLEE, ProxyTestCase, request
from tests.support.stack_harness import PEER

ELSEWHERE = ("203.0.113.7", 5080)

DU_SCRIPT = f'''
from txuac.routing.script import branch_route, failure_route, request_route

SEEN = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    user = msg.uri.user
    if user == "assign":
        tm.du = "sip:{CALLEE[0]}:{CALLEE[1]}"
        SEEN.append((tm.du, tm.isdsturiset()))
    elif user == "kemi":
        SEEN.append((tm.isdsturiset(), tm.setdsturi("sip:{CALLEE[0]}:{CALLEE[1]};transport=udp"), tm.isdsturiset()))
    elif user == "bad":
        SEEN.append(tm.setdsturi("not a uri"))
    elif user == "reset":
        tm.setdsturi("sip:{ELSEWHERE[0]}:{ELSEWHERE[1]}")
        SEEN.append((tm.resetdsturi(), tm.isdsturiset(), tm.du))
    elif user == "failover":
        tm.du = "sip:{CALLEE[0]}:{CALLEE[1]}"
        tm.t_on_failure("NEXT")
    elif user == "in-branch":
        tm.t_on_branch("ELSEWHERE")
        tm.t_on_failure("AGAIN")
    tm.t_relay()


@branch_route("ELSEWHERE")
def elsewhere(msg, uac, tm, rr, dialog, sl):
    tm.du = "sip:{ELSEWHERE[0]}:{ELSEWHERE[1]}"
    tm.t_on_branch("PLAIN")


@branch_route("PLAIN")
def plain(msg, uac, tm, rr, dialog, sl):
    SEEN.append(("plain", tm.du))


@failure_route("AGAIN")
def again(msg, uac, tm, rr, dialog, sl):
    tm.t_relay()


@failure_route("NEXT")
def next_hop(msg, uac, tm, rr, dialog, sl):
    tm.du = "sip:{ELSEWHERE[0]}:{ELSEWHERE[1]}"
    tm.t_relay()
'''


class DestinationURITests(ProxyTestCase):
    script = DU_SCRIPT

    def seen(self):
        return self.proxy.routes.module.SEEN

    def test_assigned_du_is_the_next_hop_and_the_request_uri_stays(self):
        self.receive(request(uri="sip:assign@pbx.example.org"))
        [forwarded] = self.sent(CALLEE)
        self.assertEqual(str(forwarded.uri), "sip:assign@pbx.example.org")
        self.assertEqual(self.seen(), [(f"sip:{CALLEE[0]}:{CALLEE[1]}", 1)])

    def test_kemi_functions(self):
        self.receive(request(uri="sip:kemi@pbx.example.org"))
        [forwarded] = self.sent(CALLEE)
        self.assertEqual(str(forwarded.uri), "sip:kemi@pbx.example.org")
        self.assertEqual(self.seen(), [(-1, 1, 1)])

    def test_an_invalid_uri_is_refused_and_nothing_changes(self):
        self.receive(request(uri=f"sip:bad@{CALLEE[0]}:{CALLEE[1]}"))
        self.assertEqual(len(self.sent(CALLEE)), 1)
        self.assertEqual(self.seen(), [-1])

    def test_reset_gives_the_request_uri_back(self):
        self.receive(request(uri=f"sip:reset@{CALLEE[0]}:{CALLEE[1]}"))
        self.assertEqual(len(self.sent(CALLEE)), 1)
        self.assertEqual(self.seen(), [(1, -1, None)])

    def test_failure_route_sets_another_next_hop(self):
        self.receive(request(uri="sip:failover@pbx.example.org"))
        [first] = self.sent(CALLEE)
        self.answer(first, 503)
        out = self.sent()
        [second] = [m for m, addr in out if addr == ELSEWHERE and m.method == "INVITE"]
        self.assertEqual(str(second.uri), "sip:failover@pbx.example.org")

    def test_du_set_in_a_branch_route_is_that_branch_s_only(self):
        self.receive(request(uri=f"sip:in-branch@{CALLEE[0]}:{CALLEE[1]}"))
        [first] = [m for m, addr in self.sent() if addr == ELSEWHERE]
        self.answer(first, 503)
        [second] = [m for m, addr in self.sent() if addr == CALLEE and m.method == "INVITE"]
        self.assertEqual(str(second.uri), f"sip:in-branch@{CALLEE[0]}:{CALLEE[1]}")
        self.assertEqual(self.seen(), [("plain", None)])

    def test_the_ack_of_a_2xx_goes_to_du_too(self):
        self.receive(request("ACK", uri="sip:assign@pbx.example.org", to_tag="bobtag"))
        [ack] = self.sent(CALLEE)
        self.assertEqual((ack.method, str(ack.uri)), ("ACK", "sip:assign@pbx.example.org"))
        self.assertEqual(self.sent(PEER), [])
