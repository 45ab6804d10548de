"""ProxyService on a SIPStack with fake transports and a fake clock
(tests/support/proxy_harness.py): the request route, the sl/rr/tm namespaces, forwarding, responses, CANCEL, ACK."""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.logger import capturedLogs

from tests.support.proxy_harness import CALLEE, OURS, ProxyTestCase, request
from tests.support.stack_harness import LOCAL, PEER, T1
from txuac.routing.dialogs import DEFAULT_LINGER, DialogState, EndReason
from txuac.auth import CredentialList
from txuac.routing.proxy import ServiceParts
from txuac.routing.restore_codec import RestoreCodec
from txuac.sip import make_response
from txuac.sip.via import Address


class RequestRouteTests(ProxyTestCase):
    def test_check_request_answers_before_the_script(self):
        self.receive(request(max_forwards=0))
        [(response, addr)] = self.sent()
        self.assertEqual((response.status, addr), (483, PEER))

    def test_sl_send_reply(self):
        self.receive(request("OPTIONS", uri=OURS))
        [(response, _)] = self.sent()
        self.assertEqual((response.status, response.reason), (200, "Alive"))

    def test_script_exception_is_answered_500_and_logged_once(self):
        with capturedLogs() as events:
            self.receive(request(uri=f"sip:broken@{CALLEE[0]}"))
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 500)
        failures = [e for e in events if "routing script failed" in e.get("log_format", "")]
        self.assertEqual(len(failures), 1)
        self.assertIn("ValueError: no route for broken", failures[0]["traceback"])
        self.assertEqual(self.proxy.script_failures, 1)
        # The service goes on.
        self.receive(request("OPTIONS", uri=OURS, branch="z9hG4bKup2"))
        self.assertEqual([m.status for m, _ in self.sent()], [200])

    def test_unimplemented_namespace_function_is_an_attribute_error(self):
        with capturedLogs() as events:
            self.receive(request(uri=f"sip:dialog@{CALLEE[0]}"))
        self.assertEqual([m.status for m, _ in self.sent()], [500])
        [failure] = [e for e in events if "routing script failed" in e.get("log_format", "")]
        self.assertIn("AttributeError: dialog.dlg_bye() is not available", failure["traceback"])

    def test_stop_gives_the_methods_back(self):
        self.proxy.stop()
        self.receive(request("OPTIONS", uri=OURS))
        [(response, _)] = self.sent()
        self.assertEqual((response.status, response.reason), (200, "OK"))  # the stack's own answer


class RelayTests(ProxyTestCase):
    def test_invite_forwarded_with_record_route(self):
        self.receive(request())
        sent = self.sent()
        self.assertEqual([m.status for m, a in sent if a == PEER], [100])  # the stack's 100
        [forwarded] = [m for m, a in sent if a == CALLEE]
        self.assertEqual(str(forwarded.uri), f"sip:bob@{CALLEE[0]}:{CALLEE[1]}")
        self.assertEqual(forwarded.headers.get("Record-Route"), f"<{OURS};lr;ftag=alice1>")
        self.assertEqual(forwarded.headers.get("Max-Forwards"), "69")
        vias = forwarded.headers.get_all("Via")
        self.assertEqual(len(vias), 2)  # ours (the stack's) on top of the caller's
        self.assertTrue(vias[0].startswith(f"SIP/2.0/UDP {LOCAL[0]}:{LOCAL[1]};branch=z9hG4bK"))
        self.assertIn(PEER[0], vias[1])

    def test_responses_go_upstream(self):
        upstream = self.ringing_then_answered(self.forwarded_invite())
        self.assertEqual([r.status for r in upstream], [180, 200])
        for response in upstream:
            self.assertEqual(len(response.headers.get_all("Via")), 1)  # our Via removed (16.7 item 3)
            self.assertEqual(response.to.tag, "bobtag")

    def test_final_error_response_chosen_and_sent(self):
        forwarded = self.forwarded_invite()
        self.sent()
        self.answer(forwarded, 486)
        sent = self.sent()
        self.assertEqual([(m.method if hasattr(m, "method") else m.status, a) for m, a in sent],
                         [("ACK", CALLEE), (486, PEER)])

    def test_timeout_gives_408(self):
        self.forwarded_invite()
        self.reactor.advance(64 * T1 + 1)
        self.assertIn(408, [m.status for m in self.sent(PEER) if hasattr(m, "status")])

    def test_t_relay_to_uri(self):
        self.receive(request(uri="sip:trunk@example.org"))
        [forwarded] = self.sent(CALLEE)
        self.assertEqual(str(forwarded.uri), "sip:trunk@198.51.100.9:5070")


class InDialogTests(ProxyTestCase):
    def test_bye_loose_routed_to_the_contact(self):
        self.receive(request("BYE", to_tag="bobtag", uri=f"sip:bob@{CALLEE[0]}:{CALLEE[1]}",
                             extra=f"Route: <{OURS};lr;ftag=alice1>\r\n"))
        [bye] = self.sent(CALLEE)
        self.assertNotIn("Route", bye.headers)
        self.assertNotIn("Record-Route", bye.headers)
        self.answer(bye, 200)
        self.assertEqual([m.status for m in self.sent(PEER)], [200])

    def test_in_dialog_request_without_our_route_gets_404(self):
        self.receive(request("BYE", to_tag="bobtag"))
        [(response, _)] = self.sent()
        self.assertEqual(response.status, 404)

    def test_ack_for_2xx_forwarded_statelessly(self):
        self.receive(request("ACK", to_tag="bobtag", extra=f"Route: <{OURS};lr;ftag=alice1>\r\n"))
        self.receive(request("ACK", to_tag="bobtag", extra=f"Route: <{OURS};lr;ftag=alice1>\r\n"))
        acks = self.sent(CALLEE)
        self.assertEqual(len(acks), 2)
        self.assertNotIn("Route", acks[0].headers)
        # 16.11: the same branch for a retransmission.
        self.assertEqual(acks[0].top_via.branch, acks[1].top_via.branch)
        self.assertEqual(len(acks[0].headers.get_all("Via")), 2)


class CancelTests(ProxyTestCase):
    def test_cancel_cancels_the_branch_and_relays_its_487(self):
        forwarded = self.forwarded_invite()
        self.answer(forwarded, 180)
        self.sent()
        self.receive(request("CANCEL", cseq="1 CANCEL"))
        sent = self.sent()
        self.assertEqual([(m.status, a) for m, a in sent if a == PEER], [(200, PEER)])  # the stack's, for the CANCEL
        [cancel] = [m for m, a in sent if a == CALLEE]
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.top_via.branch, forwarded.top_via.branch)  # RFC 3261 9.1
        self.assertEqual(str(cancel.uri), str(forwarded.uri))
        self.assertEqual(len(cancel.headers.get_all("Via")), 1)
        self.answer(forwarded, 487)
        self.assertEqual([m.status for m in self.sent(PEER) if hasattr(m, "status")], [487])

    def test_branch_cancel_retransmitted_until_its_200(self):
        forwarded = self.forwarded_invite()
        self.answer(forwarded, 180)
        self.receive(request("CANCEL", cseq="1 CANCEL"))
        self.sent()
        self.reactor.advance(T1)  # RFC 3261 17.1.2.2 Timer E: the CANCEL again
        [again] = self.sent(CALLEE)
        self.assertEqual((again.method, again.top_via.branch), ("CANCEL", forwarded.top_via.branch))
        self.answer(again, 200)  # matched by (branch, CANCEL): no more retransmissions
        self.reactor.advance(4 * T1)
        self.assertEqual([m for m in self.sent(CALLEE) if m.method == "CANCEL"], [])

    def test_cancel_goes_where_the_invite_went_last(self):
        # The next hop resolves to two targets; the first answers 503, the stack fails
        # over (RFC 3263 4.3) and the CANCEL follows it, with the second INVITE's branch.
        second = ("198.51.100.10", 5070)
        self.stack.resolver = ResolvedTargets([Address("udp", *CALLEE), Address("udp", *second)])
        first = self.forwarded_invite()
        self.answer(first, 503)
        [retried] = [m for m in self.sent(second) if m.method == "INVITE"]
        self.assertNotEqual(retried.top_via.branch, first.top_via.branch)
        self.receive(bytes(make_response(retried, 180, to_tag="bobtag")), second)
        self.sent()
        self.receive(request("CANCEL", cseq="1 CANCEL"))
        out = self.sent()
        self.assertEqual([m for m, a in out if a == CALLEE], [])
        [cancel] = [m for m, a in out if a == second]
        self.assertEqual((cancel.method, cancel.headers.get_all("Via")), ("CANCEL", retried.headers.get_all("Via")[:1]))


class ResolvedTargets:
    """A resolver whose every next hop resolves to ``targets``, in that order."""

    def __init__(self, targets):
        self.targets = list(targets)

    def resolve_uri(self, uri):
        return defer.succeed(list(self.targets))

    def literal_target(self, uri):
        return None  # every next hop is looked up, an IP address too

    def server_name(self, request):
        return None


UAC_SCRIPT = '''
from txuac.routing.script import request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.to is not None and msg.to.tag is not None:
        if msg.uri.user == "again":
            sl.sl_send_reply(403, str(uac.uac_replace_from("sip:other@example.org")))
            return
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        if msg.uri.user == "manual":
            uac.uac_restore_from()
        tm.t_relay()
        return
    if msg.uri.user == "long":
        result = uac.uac_replace_from("sip:" + "a" * 1100 + "@example.org")
        sl.sl_send_reply(403, f"{result} {msg.headers.get('From')}")
        return
    # The replace before record_route: vsf still lands on our Record-Route.
    uac.uac_replace_from("Anonymous", "sip:anonymous@anonymous.invalid")
    if msg.uri.user == "both":
        uac.uac_replace_to("sip:hidden@example.net")
    rr.record_route()
    tm.t_relay()
'''
ANONYMOUS = "sip:anonymous@anonymous.invalid"


def route_param(record_route: str, name: str) -> str:
    """The value of ``name`` in a ``<uri;...>`` Record-Route/Route value."""
    inside = record_route.strip("<>")
    return dict(p.partition("=")[::2] for p in inside.split(";")[1:])[name]


class AutoRestoreTests(ProxyTestCase):
    """restore_mode = auto (the default): Kamailio README 3.3, reference section 1."""

    script = UAC_SCRIPT

    def test_initial_invite_from_replaced_and_stored_on_our_record_route(self):
        forwarded = self.forwarded_invite()
        self.assertEqual(forwarded.headers.get("From"), f"Anonymous <{ANONYMOUS}>;tag=alice1")
        record_route = forwarded.headers.get("Record-Route")
        self.assertTrue(record_route.startswith(f"<{OURS};lr;ftag=alice1;vsf="), record_route)
        self.assertEqual(RestoreCodec().decode(route_param(record_route, "vsf"), ANONYMOUS),
                         "sip:alice@example.com")
        self.assertNotIn("vst=", record_route)

    def test_replies_upstream_get_the_original_from(self):
        upstream = self.ringing_then_answered(self.forwarded_invite())
        self.assertEqual([r.status for r in upstream], [180, 200])
        for response in upstream:
            self.assertEqual(response.headers.get("From"), "<sip:alice@example.com>;tag=alice1")

    def test_final_error_upstream_gets_the_original_from(self):
        forwarded = self.forwarded_invite()
        self.sent()
        self.answer(forwarded, 486)
        [busy] = self.sent(PEER)
        self.assertEqual((busy.status, busy.headers.get("From")), (486, "<sip:alice@example.com>;tag=alice1"))

    def test_to_replaced_too(self):
        forwarded = self.forwarded_invite("both")
        self.assertEqual(forwarded.headers.get("To"), "<sip:hidden@example.net>")
        record_route = forwarded.headers.get("Record-Route")
        self.assertEqual(RestoreCodec().decode(route_param(record_route, "vst"), "sip:hidden@example.net"),
                         "sip:bob@example.com")
        self.sent()
        self.answer(forwarded, 200)
        [ok] = self.sent(PEER)
        self.assertEqual(ok.headers.get("To"), "<sip:bob@example.com>;tag=bobtag")
        self.assertEqual(ok.headers.get("From"), "<sip:alice@example.com>;tag=alice1")

    def dialog_route(self) -> str:
        forwarded = self.forwarded_invite()
        return forwarded.headers.get("Record-Route")

    def test_caller_bye_gets_the_new_from_and_its_reply_the_old_one(self):
        route = self.dialog_route()
        self.sent()
        self.receive(request("BYE", to_tag="bobtag", branch="z9hG4bKbye1", cseq="2 BYE",
                             extra=f"Route: {route}\r\n"))
        [bye] = self.sent(CALLEE)
        self.assertEqual(bye.headers.get("From"), f"<{ANONYMOUS}>;tag=alice1")  # the URI only (K:rr_checker)
        self.answer(bye, 200)
        [ok] = self.sent(PEER)
        self.assertEqual(ok.headers.get("From"), "<sip:alice@example.com>;tag=alice1")

    def test_caller_ack_gets_the_new_from(self):
        route = self.dialog_route()
        self.sent()
        self.receive(request("ACK", to_tag="bobtag", branch="z9hG4bKack1", extra=f"Route: {route}\r\n"))
        [ack] = self.sent(CALLEE)
        self.assertEqual(ack.headers.get("From"), f"<{ANONYMOUS}>;tag=alice1")

    def test_callee_bye_gets_the_original_to_and_its_reply_the_new_one(self):
        route = self.dialog_route()
        self.sent()
        bye = (f"BYE sip:alice@{PEER[0]}:{PEER[1]} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {CALLEE[0]}:{CALLEE[1]};branch=z9hG4bKcb1\r\n"
               f"Route: {route}\r\n"
               f"From: <sip:bob@example.com>;tag=bobtag\r\n"
               f"To: Anonymous <{ANONYMOUS}>;tag=alice1\r\n"
               f"Call-ID: call-1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.receive(bye, CALLEE)
        [forwarded] = self.sent(PEER)
        self.assertEqual(forwarded.headers.get("To"), "Anonymous <sip:alice@example.com>;tag=alice1")
        self.assertEqual(forwarded.headers.get("From"), "<sip:bob@example.com>;tag=bobtag")
        self.receive(bytes(make_response(forwarded, 200)), PEER)
        [ok] = self.sent(CALLEE)
        self.assertEqual(ok.headers.get("To"), f"Anonymous <{ANONYMOUS}>;tag=alice1")

    def test_uri_too_long_for_vsf_fails_and_leaves_from_alone(self):
        self.receive(request(uri="sip:long@example.com"))
        [response] = [m for m in self.sent(PEER) if m.status == 403]
        self.assertEqual(response.reason, "-1 <sip:alice@example.com>;tag=alice1")

    def test_replace_of_the_uri_in_a_sequential_request_fails(self):
        self.receive(request("BYE", uri="sip:again@example.com", to_tag="bobtag"))
        [(response, _)] = self.sent()
        self.assertEqual((response.status, response.reason), (403, "-1"))


class NoRestoreTests(ProxyTestCase):
    script = UAC_SCRIPT
    settings = {"restore_mode": "none"}

    def test_nothing_stored_and_replies_not_fixed(self):
        forwarded = self.forwarded_invite()
        self.assertEqual(forwarded.headers.get("From"), f"Anonymous <{ANONYMOUS}>;tag=alice1")
        self.assertEqual(forwarded.headers.get("Record-Route"), f"<{OURS};lr;ftag=alice1>")
        self.sent()
        self.answer(forwarded, 200)
        [ok] = self.sent(PEER)
        self.assertEqual(ok.headers.get("From"), f"Anonymous <{ANONYMOUS}>;tag=alice1")


class ManualRestoreTests(ProxyTestCase):
    script = UAC_SCRIPT
    settings = {"restore_mode": "manual", "restore_passwd": "secret"}

    def test_loose_route_alone_restores_nothing(self):
        route = self.forwarded_invite().headers.get("Record-Route")
        self.sent()
        self.receive(request("BYE", to_tag="bobtag", cseq="2 BYE", branch="z9hG4bKbye2",
                             extra=f"Route: {route}\r\n"))
        [bye] = self.sent(CALLEE)
        self.assertEqual(bye.headers.get("From"), "<sip:alice@example.com>;tag=alice1")

    def test_uac_restore_from_restores_and_the_reply_is_not_fixed(self):
        route = self.forwarded_invite().headers.get("Record-Route")
        self.assertEqual(RestoreCodec("secret").decode(route_param(route, "vsf"), ANONYMOUS),
                         "sip:alice@example.com")
        self.sent()
        self.receive(request("BYE", uri=f"sip:manual@{CALLEE[0]}:{CALLEE[1]}", to_tag="bobtag", cseq="2 BYE",
                             branch="z9hG4bKbye3", extra=f"Route: {route}\r\n"))
        [bye] = self.sent(CALLEE)
        self.assertEqual(bye.headers.get("From"), f"<{ANONYMOUS}>;tag=alice1")
        self.answer(bye, 200)
        [ok] = self.sent(PEER)
        self.assertEqual(ok.headers.get("From"), f"<{ANONYMOUS}>;tag=alice1")  # Kamailio: no reply callback


DIALOG_SCRIPT = '''
from txuac.routing.script import request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.to is not None and msg.to.tag is not None:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        if msg.uri.user == "check":
            sl.sl_send_reply(403, str(dialog.dlg_manage()))
            return
        tm.t_relay()
        return
    if msg.method == "INVITE":
        dialog.dlg_manage()
        rr.record_route()
        uac.uac_replace_from("Anonymous", "sip:anonymous@anonymous.invalid")
    tm.t_relay()
'''


class DialogTests(ProxyTestCase):
    """dialog.dlg_manage(): the ProxyService's DialogTable."""

    script = DIALOG_SCRIPT
    settings = {"dialog_timeout": 10}

    def confirmed(self):
        forwarded = self.forwarded_invite()
        self.answer(forwarded, 180)
        self.answer(forwarded, 200)
        self.sent()
        [dialog] = list(self.proxy.dialogs)
        return forwarded, dialog

    def test_invite_creates_a_dialog_confirmed_by_the_200(self):
        forwarded = self.forwarded_invite()
        [dialog] = list(self.proxy.dialogs)
        self.assertEqual((dialog.call_id, dialog.caller_tag, dialog.state), ("call-1", "alice1", DialogState.EARLY))
        self.answer(forwarded, 200)
        self.assertEqual((dialog.state, dialog.callee_tag), (DialogState.CONFIRMED, "bobtag"))

    def test_bye_ends_it_and_the_timer_drops_it_after_lingering(self):
        forwarded, dialog = self.confirmed()
        self.receive(request("BYE", to_tag="bobtag", cseq="2 BYE", branch="z9hG4bKbye4",
                             extra=f"Route: {forwarded.headers.get('Record-Route')}\r\n"))
        self.assertEqual((dialog.state, dialog.end_reason), (DialogState.TERMINATED, EndReason.BYE))
        self.reactor.advance(DEFAULT_LINGER + 2)
        self.assertEqual(len(self.proxy.dialogs), 0)

    def test_rejected_invite_ends_the_dialog(self):
        forwarded = self.forwarded_invite()
        self.answer(forwarded, 486)
        [dialog] = list(self.proxy.dialogs)
        self.assertEqual(dialog.end_reason, EndReason.REJECTED)

    def test_confirmed_dialog_expires_after_dialog_timeout(self):
        _, dialog = self.confirmed()
        self.reactor.advance(9)
        self.assertEqual(dialog.state, DialogState.CONFIRMED)
        self.reactor.advance(2)
        self.assertEqual((dialog.state, dialog.end_reason), (DialogState.TERMINATED, EndReason.TIMEOUT))

    def test_dlg_manage_in_dialog_says_whether_the_dialog_is_known(self):
        forwarded, _ = self.confirmed()
        route = forwarded.headers.get("Record-Route")
        self.receive(request("INFO", uri="sip:check@example.com", to_tag="bobtag", cseq="3 INFO",
                             branch="z9hG4bKinfo1", extra=f"Route: {route}\r\n"))
        self.receive(request("INFO", uri="sip:check@example.com", to_tag="othertag", cseq="3 INFO",
                             branch="z9hG4bKinfo2", extra=f"Route: {route}\r\n"))
        self.assertEqual([m.reason for m in self.sent(PEER)], ["1", "-1"])

    def test_without_restore_dlg_the_uris_go_on_the_record_route(self):
        forwarded, dialog = self.confirmed()
        self.assertIn(";vsf=", forwarded.headers.get("Record-Route"))
        self.assertEqual(dialog.variables, {})


class DialogRestoreTests(ProxyTestCase):
    """restore_dlg = true (auto mode): the URIs in dialog variables (Kamailio README 3.4)."""

    script = DIALOG_SCRIPT
    settings = {"restore_dlg": True}

    def test_variables_instead_of_vsf_and_both_directions_restored(self):
        forwarded = self.forwarded_invite()
        route = forwarded.headers.get("Record-Route")
        self.assertEqual(route, f"<{OURS};lr;ftag=alice1>")
        [dialog] = list(self.proxy.dialogs)
        self.assertEqual(dialog.variables, {"_uac_fu": "sip:alice@example.com", "_uac_funew": ANONYMOUS,
                                            "_uac_fdp": "", "_uac_fdpnew": "Anonymous"})
        self.answer(forwarded, 200)
        [ok] = [m for m in self.sent(PEER) if m.status == 200]
        self.assertEqual(ok.headers.get("From"), "<sip:alice@example.com>;tag=alice1")
        # The caller's BYE: the new URI and display (dialog mode restores displays too).
        self.receive(request("BYE", to_tag="bobtag", cseq="2 BYE", branch="z9hG4bKbye5",
                             extra=f"Route: {route}\r\n"))
        [bye] = self.sent(CALLEE)
        self.assertEqual(bye.headers.get("From"), f"Anonymous <{ANONYMOUS}>;tag=alice1")
        self.answer(bye, 200)
        [bye_ok] = self.sent(PEER)
        self.assertEqual(bye_ok.headers.get("From"), "<sip:alice@example.com>;tag=alice1")

    def test_callee_request_gets_the_original_to(self):
        forwarded = self.forwarded_invite()
        route = forwarded.headers.get("Record-Route")
        self.answer(forwarded, 200)
        self.sent()
        info = (f"INFO sip:alice@{PEER[0]}:{PEER[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {CALLEE[0]}:{CALLEE[1]};branch=z9hG4bKci1\r\n"
                f"Route: {route}\r\n"
                f"From: <sip:bob@example.com>;tag=bobtag\r\n"
                f"To: Anonymous <{ANONYMOUS}>;tag=alice1\r\n"
                f"Call-ID: call-1\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.receive(info, CALLEE)
        [forwarded_info] = self.sent(PEER)
        self.assertEqual(forwarded_info.headers.get("To"), "<sip:alice@example.com>;tag=alice1")
        self.receive(bytes(make_response(forwarded_info, 200)), PEER)
        [ok] = self.sent(CALLEE)
        self.assertEqual(ok.headers.get("To"), f"Anonymous <{ANONYMOUS}>;tag=alice1")


FAILURE_SCRIPT = '''
from txuac.routing.script import failure_route, request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    rr.record_route()
    uac.uac_replace_from("sip:anonymous@anonymous.invalid")
    if msg.uri.user != "unarmed":
        tm.t_on_failure("NEXT")
    tm.t_relay()


@failure_route("NEXT")
def next_hop(msg, uac, tm, rr, dialog, sl):
    if tm.t_is_canceled() > 0:
        return
    if msg.uri.user == "broken":
        raise ValueError("failure route broken")
    if tm.t_check_status("486|408") > 0:
        tm.t_relay_to_uri("sip:second@198.51.100.9:5070")
'''


class FailureRouteTests(ProxyTestCase):
    """tm.t_on_failure: the failure route runs when every branch failed; t_relay there is
    serial forking on the same response context."""

    script = FAILURE_SCRIPT

    def test_serial_fork_after_486(self):
        first = self.forwarded_invite()
        self.sent()
        self.answer(first, 486)
        sent = self.sent()
        [second] = [m for m, a in sent if a == CALLEE and getattr(m, "method", None) == "INVITE"]
        self.assertEqual(str(second.uri), "sip:second@198.51.100.9:5070")
        self.assertEqual(second.headers.get("From"), f"<{ANONYMOUS}>;tag=alice1")
        self.assertEqual(second.headers.get("Record-Route"), first.headers.get("Record-Route"))
        self.assertNotEqual(second.top_via.branch, first.top_via.branch)
        self.assertEqual([m.status for m, a in sent if a == PEER], [])  # the 486 stays here
        self.answer(second, 200)
        [ok] = self.sent(PEER)
        self.assertEqual((ok.status, ok.headers.get("From")), (200, "<sip:alice@example.com>;tag=alice1"))

    def test_second_failure_goes_upstream_the_route_not_rearmed(self):
        first = self.forwarded_invite()
        self.answer(first, 486)
        [second] = [m for m in self.sent(CALLEE) if getattr(m, "method", None) == "INVITE"]
        self.answer(second, 404)
        upstream = [m for m in self.sent(PEER) if m.status >= 300]
        # 16.7 item 6 over both branches' finals (proxy_rules: the lowest 4xx wins).
        self.assertEqual([(m.status, m.headers.get("From")) for m in upstream],
                         [(404, "<sip:alice@example.com>;tag=alice1")])

    def test_status_not_matched_sends_the_failure_upstream(self):
        first = self.forwarded_invite()
        self.sent()
        self.answer(first, 603)
        self.assertEqual([m.status for m in self.sent(PEER)], [603])

    def test_unarmed_no_failure_route(self):
        first = self.forwarded_invite("unarmed")
        self.sent()
        self.answer(first, 486)
        self.assertEqual([m.status for m in self.sent(PEER)], [486])

    def test_failure_route_error_logged_and_the_failure_sent(self):
        first = self.forwarded_invite("broken")
        self.sent()
        with capturedLogs() as events:
            self.answer(first, 486)
        self.assertEqual([m.status for m in self.sent(PEER)], [486])
        [failure] = [e for e in events if "routing script failed" in e.get("log_format", "")]
        self.assertEqual(failure["route"], "failure_route[NEXT]")
        self.assertEqual(self.proxy.script_failures, 1)


class ExampleScriptTests(ProxyTestCase):
    """conf/routing.py's anonymisation path, its trunk pointed at the fake callee (no
    registrant: the uac_reg_* calls return -1)."""

    parts = ServiceParts(credentials=CredentialList(["pbx:trunk.example:secret"]))

    script = open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "routing.py")).read()

    def setUp(self):
        super().setUp()
        self.proxy.routes.module.TRUNK = f"sip:{CALLEE[0]}:{CALLEE[1]}"

    def test_invite_anonymised_dialog_tracked_and_failure_route_run(self):
        forwarded = self.forwarded_invite()
        self.assertEqual(str(forwarded.uri), f"sip:{CALLEE[0]}:{CALLEE[1]}")
        self.assertEqual(forwarded.headers.get("From"), f"Anonymous <{ANONYMOUS}>;tag=alice1")
        self.assertIn(";vsf=", forwarded.headers.get("Record-Route"))
        self.assertEqual(len(self.proxy.dialogs), 1)
        self.sent()
        self.answer(forwarded, 486)  # TRUNKAUTH runs: not a 401/407, nothing more to try
        self.assertEqual([(m.status, m.headers.get("From")) for m in self.sent(PEER)],
                         [(486, "<sip:alice@example.com>;tag=alice1")])
        self.assertEqual(self.proxy.script_failures, 0)

    def test_trunk_challenge_answered_on_a_branch_of_its_own(self):
        forwarded = self.forwarded_invite()
        self.assertEqual(forwarded.headers.get("P-Preferred-Identity"), f"<{ANONYMOUS}>")  # branch route
        self.sent()
        self.answer(forwarded, 407, to_tag="t407", extra=[
            ("Proxy-Authenticate", 'Digest realm="trunk.example", nonce="abc", qop="auth"')])
        [again] = [m for m in self.sent(CALLEE) if m.method == "INVITE"]
        self.assertEqual(again.headers.get("CSeq"), "2 INVITE")
        self.assertIn('username="pbx"', again.headers.get("Proxy-Authorization"))
        self.assertEqual(again.headers.get("P-Preferred-Identity"), f"<{ANONYMOUS}>")
        self.answer(again, 200)
        self.assertEqual([(m.status, m.headers.get("CSeq")) for m in self.sent(PEER)], [(200, "1 INVITE")])
        self.assertEqual(self.proxy.script_failures, 0)


class LateTwoHundredTests(ProxyTestCase):
    script = UAC_SCRIPT.replace("    rr.record_route()\n    tm.t_relay()\n",
                                "    rr.record_route()\n    global LAST_TM\n    LAST_TM = tm\n    tm.t_relay()\n")

    def test_retransmitted_200_goes_upstream_again(self):
        """RFC 6026 7.2: the callee retransmits its 200 until the ACK; each goes upstream
        (the first may have been lost on the way to the caller), with the From restored,
        though the request's script state is freed once the first went."""
        forwarded = self.forwarded_invite("hide")
        self.answer(forwarded, 200)
        with self.assertRaises(ReferenceError):
            self.proxy.routes.module.LAST_TM.t_is_canceled()  # the ProxiedRequest is gone
        self.answer(forwarded, 200)
        upstream = self.sent(PEER)
        self.assertEqual([r.status for r in upstream], [200, 200])
        self.assertEqual({r.headers.get("From") for r in upstream}, {"<sip:alice@example.com>;tag=alice1"})
