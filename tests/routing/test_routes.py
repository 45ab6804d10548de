"""onreply_route and branch_route[NAME] in the proxy (fake stack and clock)."""

from __future__ import annotations

from twisted.logger import capturedLogs, formatEvent

from tests.support.proxy_harness import CALLEE, OURS, ProxyTestCase, request
from tests.support.stack_harness import PEER

ROUTES_SCRIPT = '''
from txuac.routing.script import branch_route, failure_route, onreply_route, request_route

REPLIES = []
BRANCHES = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.uri.user == "nobranch":
        REPLIES.append(tm.t_on_branch("MISSING"))
    elif msg.uri.user == "armed":
        tm.t_on_reply("ARMED")
    elif msg.uri.user != "plain":
        tm.t_on_branch("MARK")
    tm.t_on_failure("NEXT")
    tm.t_relay()


@branch_route("MARK")
def mark(msg, uac, tm, rr, dialog, sl):
    BRANCHES.append(str(msg.uri))
    if msg.uri.user == "broken":
        raise RuntimeError("branch route broke")
    msg.headers.add("X-Branch", str(len(BRANCHES)))
    if msg.uri.user == "bob":
        uac.uac_replace_from("sip:hidden@example.net")


@failure_route("NEXT")
def next_hop(msg, uac, tm, rr, dialog, sl):
    if msg.uri.user == "bob":
        tm.t_relay_to_uri("sip:carol@198.51.100.9:5070")


@onreply_route("ARMED")
def armed_reply(msg, uac, tm, rr, dialog, sl):
    REPLIES.append(("armed", msg.status, msg.headers.get("X-Seen")))


@onreply_route
def reply(msg, uac, tm, rr, dialog, sl):
    REPLIES.append((msg.status, tm.t_check_status("18[0-9]")))
    if msg.status == 180:
        msg.headers.add("X-Seen", "yes")
    if msg.status == 183:
        raise ValueError("onreply broke")
'''


class RoutesTestCase(ProxyTestCase):
    script = ROUTES_SCRIPT

    @property
    def module(self):
        return self.proxy.routes.module


class OnReplyRouteTests(RoutesTestCase):
    def test_every_reply_before_tm(self):
        forwarded = self.forwarded_invite("plain")
        self.sent()
        self.answer(forwarded, 180)
        self.answer(forwarded, 200)
        self.assertEqual(self.module.REPLIES, [(180, 1), (200, -1)])
        upstream = self.sent(PEER)
        self.assertEqual([(r.status, r.headers.get("X-Seen")) for r in upstream], [(180, "yes"), (200, None)])

    def test_named_route_after_the_global_one_when_armed(self):
        forwarded = self.forwarded_invite("armed")
        self.answer(forwarded, 180)
        self.assertEqual(self.module.REPLIES, [(180, 1), ("armed", 180, "yes")])
        self.assertEqual(self.proxy.routes.replies["ARMED"].label, "onreply_route[ARMED]")

    def test_exception_logged_once_and_the_reply_goes_on(self):
        forwarded = self.forwarded_invite("plain")
        self.sent()
        with capturedLogs() as events:
            self.answer(forwarded, 183)
        self.assertEqual([r.status for r in self.sent(PEER)], [183])
        failures = [e for e in events if "routing script failed" in e.get("log_format", "")]
        self.assertEqual(len(failures), 1)
        self.assertIn("onreply_route", failures[0]["route"])
        self.assertIn("ValueError: onreply broke", failures[0]["traceback"])


class BranchRouteTests(RoutesTestCase):
    def test_each_branch_runs_it_and_keeps_its_changes_to_itself(self):
        first = self.forwarded_invite("bob")
        self.sent()
        self.assertEqual(first.headers.get("X-Branch"), "1")
        self.assertIn("sip:hidden@example.net", first.headers.get("From"))
        self.answer(first, 486)
        [second] = [m for m in self.sent(CALLEE) if m.method == "INVITE"]
        # The failure route's branch: the branch route ran again with its Request-URI, on the
        # request as the request route left it (no X-Branch of the first branch).
        self.assertEqual(self.module.BRANCHES, [f"sip:bob@{CALLEE[0]}:{CALLEE[1]}", "sip:carol@198.51.100.9:5070"])
        self.assertEqual(second.headers.get_all("X-Branch"), ["2"])
        self.assertNotIn("hidden", second.headers.get("From"))
        self.answer(second, 200)
        [ok] = self.sent(PEER)
        self.assertEqual(ok.headers.get("From"), "<sip:alice@example.com>;tag=alice1")

    def test_exception_drops_the_branch(self):
        self.receive(request(uri=f"sip:broken@{CALLEE[0]}:{CALLEE[1]}"))
        sent = self.sent()
        self.assertEqual([m for m, a in sent if a == CALLEE], [])
        self.assertEqual([m.status for m, a in sent if a == PEER], [500])
        self.assertEqual(self.proxy.script_failures, 1)

    def test_unknown_branch_route(self):
        with capturedLogs() as events:
            self.forwarded_invite("nobranch")
        self.assertEqual(self.module.REPLIES, [-1])
        self.assertTrue(any("t_on_branch: no branch_route[MISSING]" in formatEvent(e) for e in events))


REPLACE_SCRIPT = '''
from txuac.routing.script import request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.uri.user == "hide":
        uac.uac_replace_from("sip:hidden@example.net")  # no rr.record_route()
    tm.t_relay()
'''


class AutomaticRecordRouteTests(ProxyTestCase):
    """[routing] record_route: a From to restore makes the proxy record-route by itself."""

    script = REPLACE_SCRIPT

    def test_replaced_from_is_record_routed(self):
        forwarded = self.forwarded_invite("hide")
        self.assertTrue(forwarded.headers.get("Record-Route").startswith(f"<{OURS};lr;ftag=alice1;vsf="))

    def test_nothing_to_restore_no_record_route(self):
        forwarded = self.forwarded_invite("plain")
        self.assertNotIn("Record-Route", forwarded.headers)

    def test_message_is_not_record_routed(self):
        self.receive(request("MESSAGE", uri=f"sip:hide@{CALLEE[0]}:{CALLEE[1]}"))
        [forwarded] = self.sent(CALLEE)
        self.assertNotIn("Record-Route", forwarded.headers)


class RecordRouteOffTests(AutomaticRecordRouteTests):
    settings = {"record_route": False}

    def test_replaced_from_is_record_routed(self):
        forwarded = self.forwarded_invite("hide")
        self.assertNotIn("Record-Route", forwarded.headers)


class InviteTimerTests(ProxyTestCase):
    """fr_inv_timeout (Timer C, RFC 3261 16.6 item 11): a ringing branch is cancelled, 408 upstream."""

    script = REPLACE_SCRIPT
    settings = {"fr_inv_timeout": 30}

    def test_ringing_branch_cancelled_and_408(self):
        forwarded = self.forwarded_invite("plain")
        self.answer(forwarded, 180)
        self.sent()
        self.reactor.advance(29)
        self.assertEqual([m.status for m in self.sent(PEER)], [])
        self.reactor.advance(1.5)
        sent = self.sent()
        [cancel] = [m for m, a in sent if a == CALLEE]
        self.assertEqual((cancel.method, cancel.top_via.branch), ("CANCEL", forwarded.top_via.branch))
        self.assertEqual([m.status for m, a in sent if a == PEER], [408])
