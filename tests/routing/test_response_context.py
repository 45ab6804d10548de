"""Tests of the response context of a proxied request (RFC 3261 16.7, 16.10) and of the
branches it keeps, with RFC 3261 and RFC 4475 messages."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support.proxy_messages import ALICE_INVITE, message, rfc4475
from txuac.net.stack import ClientRequest
from txuac.routing.proxy_rules import prepare_forward
from txuac.routing.response_context import (
    Branch,
    BranchRefused,
    CancelDisposition,
    ResponseContext,
    cancel_disposition,
    response_for_upstream,
)
from txuac.sip import Request, Response, make_response, parse_message
from txuac.sip.headers import TOP_VIA_VIEW
from txuac.sip.via import Address, make_via

_HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class ResponseTests(SynchronousTestCase):
    """RFC 3261 16.7: the response context and the selection of the best response."""

    def setUp(self):
        self.invite = message(ALICE_INVITE)
        self.context = ResponseContext(self.invite, to_tag="proxytag")
        self.forwarded: list[Request] = []

    def branch(self) -> int:
        number = self.context.add_branch()
        self.forwarded.append(prepare_forward(self.invite, f"sip:bob@192.0.2.{number + 10}",
                                              make_via("udp", "10.0.0.1", 5060)).request)
        return number

    def response(self, number: int, status: int, *headers: tuple[str, str]) -> Response:
        return make_response(self.forwarded[number], status, to_tag=f"uas{number}", extra_headers=headers)

    def receive(self, number: int, status: int, *headers: tuple[str, str]):
        return self.context.receive(number, self.response(number, status, *headers))

    def finals(self, *statuses: int) -> Response:
        """Branches answered with these statuses in order; the response finish() gives."""
        numbers = [self.branch() for _ in statuses]
        update = None
        for number, status in zip(numbers, statuses):
            update = self.receive(number, status)
            self.assertEqual(update.forward, [])
        self.assertTrue(update.completed)
        return self.context.finish()

    def test_provisional_responses_but_100_go_up_at_once_without_our_via(self):
        b = self.branch()
        self.assertEqual(self.receive(b, 100).forward, [])
        update = self.receive(b, 180)
        self.assertEqual([r.status for r in update.forward], [180])
        self.assertEqual(update.forward[0].headers.get_all("Via"), self.invite.headers.get_all("Via"))
        self.assertFalse(update.completed)

    def test_a_100_is_not_copied_for_upstream(self):
        """16.7 item 5: a 100 only tells that the branch proceeds (a CANCEL waiting for it
        goes); no copy without our Via is made, so a 100 that could not go up anyway (no
        Via left below ours) counts too."""
        b = self.branch()
        self.context.cancel()
        trying = self.response(b, 100)
        trying.headers.remove_first("Via")
        trying.headers.set("Via", str(self.forwarded[b].top_via))
        update = self.context.receive(b, trying)
        self.assertEqual((update.forward, update.cancel), ([], [b]))
        self.assertIsNone(response_for_upstream(trying), "nothing below our Via")

    def test_2xx_goes_up_at_once_and_cancels_the_other_branches(self):
        first, second, third = self.branch(), self.branch(), self.branch()
        self.receive(second, 180)
        update = self.receive(first, 200)
        self.assertEqual([r.status for r in update.forward], [200])
        self.assertEqual(update.cancel, [second])  # 16.7 item 10; the third waits for a provisional (9.1)
        self.assertEqual(self.receive(third, 183).cancel, [third])
        self.assertEqual(self.receive(third, 183).forward, [], "no provisional after the final")
        # Every later 2xx of an INVITE goes up too (16.7 item 5); other finals do not.
        self.assertEqual([r.status for r in self.receive(second, 200).forward], [200])
        self.assertEqual(self.receive(third, 487).forward, [])
        self.assertRaises(BranchRefused, self.context.add_branch)
        self.assertRaises(BranchRefused, self.context.finish)

    def test_non_invite_2xx_after_the_final_is_not_forwarded(self):
        self.invite = message(ALICE_INVITE.replace("INVITE", "MESSAGE"))
        self.context = ResponseContext(self.invite)
        first, second = self.branch(), self.branch()
        self.assertEqual(len(self.receive(first, 200).forward), 1)
        self.assertEqual(self.receive(second, 202).forward, [])

    def test_selection_table(self):
        # (finals in arrival order, the status sent upstream); 16.7 item 6.
        table = [
            ((404,), 404),
            ((486, 302), 302),  # the lowest class
            ((500, 404), 404),
            ((302, 603), 603),  # a 6xx wins over everything
            ((603, 600), 600),
            ((486, 404), 404),  # within 4xx: the lowest code
            ((404, 407), 407),  # 401, 407, 415, 420, 484 first
            ((407, 401), 401),
            ((486, 415), 415),
            ((484, 420), 420),
            ((480, 484), 484),
            ((502, 504), 502),
            ((503,), 500),  # a 503 goes up as 500
            ((503, 502), 502),
            ((580, 503), 500),
            ((699, 302), 699),
        ]
        for statuses, expected in table:
            self.setUp()
            self.assertEqual(self.finals(*statuses).status, expected, statuses)

    def test_first_received_wins_a_tie(self):
        self.setUp()
        best = self.finals(486, 486)
        self.assertEqual(best.to.tag, "uas0")

    def test_6xx_cancels_pending_branches_and_forbids_new_ones(self):
        first, second = self.branch(), self.branch()
        self.receive(second, 180)
        update = self.receive(first, 603)
        self.assertEqual(update.forward, [])  # not forwarded at once
        self.assertEqual(update.cancel, [second])
        self.assertFalse(update.completed)
        self.assertRaises(BranchRefused, self.context.add_branch)
        update = self.receive(second, 487)
        self.assertTrue(update.completed)
        self.assertEqual(self.context.finish().status, 603)

    def test_challenges_of_every_401_and_407_are_aggregated(self):
        # 16.7 item 7.
        a, b, c = self.branch(), self.branch(), self.branch()
        self.receive(a, 407, ("Proxy-Authenticate", 'Digest realm="b.example", nonce="nb"'))
        self.receive(b, 404)
        update = self.receive(c, 401, ("WWW-Authenticate", 'Digest realm="c.example", nonce="nc"'),
                              ("WWW-Authenticate", 'Digest realm="c2.example", nonce="nc2"'))
        self.assertTrue(update.completed)
        best = self.context.finish()
        self.assertEqual(best.status, 401)
        self.assertEqual(best.headers.get_all("WWW-Authenticate"),
                         ['Digest realm="c.example", nonce="nc"', 'Digest realm="c2.example", nonce="nc2"'])
        self.assertEqual(best.headers.get_all("Proxy-Authenticate"), ['Digest realm="b.example", nonce="nb"'])
        self.assertEqual(parse_message(bytes(best)).validate().status, 401)

    def test_identical_challenges_are_merged_and_content_length_stays_last(self):
        # Two branches to one trunk challenged alike: one Proxy-Authenticate upstream, not two.
        a, b, c = self.branch(), self.branch(), self.branch()
        self.receive(a, 407, ("Proxy-Authenticate", 'Digest realm="trunk", nonce="n1", qop="auth"'))
        self.receive(b, 407, ("Proxy-Authenticate", 'Digest  realm="trunk",\tnonce="n1", qop="auth"'))
        self.receive(c, 407, ("Proxy-Authenticate", 'Digest realm="trunk", nonce="n2", qop="auth"'))
        best = self.context.finish()
        self.assertEqual(best.headers.get_all("Proxy-Authenticate"),
                         ['Digest realm="trunk", nonce="n1", qop="auth"', 'Digest realm="trunk", nonce="n2", qop="auth"'])
        self.assertEqual(best.headers.keys()[-1], "content-length")
        self.assertEqual(bytes(best).split(b"\r\n")[-3].split(b":")[0], b"Content-Length")

    def test_no_aggregation_for_other_responses(self):
        a, b = self.branch(), self.branch()
        self.receive(a, 302)
        self.receive(b, 407, ("Proxy-Authenticate", 'Digest realm="b", nonce="n"'))
        best = self.context.finish()
        self.assertEqual(best.status, 302)
        self.assertNotIn("Proxy-Authenticate", best.headers)

    def test_timeout_without_response_is_a_408(self):
        b = self.branch()
        update = self.context.timed_out(b)
        self.assertTrue(update.completed)
        best = self.context.finish()
        self.assertEqual(best.status, 408)
        self.assertEqual(best.to.tag, "proxytag")
        self.assertEqual(best.headers.get_all("Via"), self.invite.headers.get_all("Via"))

    def test_timeout_after_a_final_changes_nothing(self):
        b = self.branch()
        self.receive(b, 486)
        self.assertFalse(self.context.timed_out(b).completed)
        self.assertEqual(self.context.finish().status, 486)

    def test_408_when_no_final_response_exists(self):
        self.assertEqual(self.context.best_response().status, 408)

    def test_transport_failure_is_a_503_sent_as_500(self):
        b = self.branch()
        self.assertTrue(self.context.transport_failed(b).completed)
        self.assertEqual(self.context.finish().status, 500)

    def test_serial_forking_from_a_failure_route(self):
        first = self.branch()
        update = self.receive(first, 486)
        self.assertTrue(update.completed)
        self.assertEqual(self.context.best_response().status, 486)  # what the failure route sees
        second = self.branch()
        update = self.receive(second, 180)
        self.assertEqual([r.status for r in update.forward], [180])
        self.assertFalse(update.completed)
        update = self.receive(second, 480)
        self.assertTrue(update.completed)
        self.assertEqual(self.context.finish().status, 480)  # 480 beats 486 (lower code)

    def test_cancel_cancels_branches_with_a_provisional_and_later_the_others(self):
        first, second = self.branch(), self.branch()
        self.receive(first, 180)
        self.assertIs(cancel_disposition(self.context), CancelDisposition.CANCEL_BRANCHES)
        update = self.context.cancel()
        self.assertEqual(update.cancel, [first])
        self.assertFalse(update.completed)
        self.assertRaises(BranchRefused, self.context.add_branch)
        self.assertEqual(self.receive(second, 100).cancel, [second])
        self.receive(first, 487)
        self.assertTrue(self.receive(second, 487).completed)
        self.assertEqual(self.context.finish().status, 487)
        self.assertIs(cancel_disposition(self.context), CancelDisposition.ANSWER_ONLY)

    def test_cancelled_branch_that_times_out_is_a_487(self):
        first, second = self.branch(), self.branch()
        self.receive(first, 180)
        self.context.cancel()
        self.context.timed_out(second)  # never answered: its CANCEL was never sent
        self.assertTrue(self.context.timed_out(first).completed)
        best = self.context.finish()
        self.assertEqual(best.status, 487)
        self.assertEqual(best.to.tag, "proxytag")

    def test_cancel_without_context_is_forwarded_statelessly(self):
        self.assertIs(cancel_disposition(None), CancelDisposition.FORWARD_STATELESSLY)

    def test_late_final_on_a_done_branch_is_ignored(self):
        a, b = self.branch(), self.branch()
        self.receive(a, 486)
        self.assertFalse(self.receive(a, 404).completed)
        self.receive(b, 600)
        self.assertEqual(self.context.finish().status, 600)

    def test_response_without_an_upstream_via_is_ignored(self):
        b = self.branch()
        lone = self.response(b, 180)
        lone.headers.set("Via", lone.headers.get_all("Via")[0])
        self.assertEqual(self.context.receive(b, lone).forward, [])
        self.assertEqual(self.context.pending, [b])


class ResponseForUpstreamTests(SynchronousTestCase):
    """RFC 3261 16.7 item 3."""

    RESPONSE = """SIP/2.0 180 Ringing
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKours, SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8
Via: SIP/2.0/UDP first.example.com;branch=z9hG4bKfirst
To: Bob <sip:bob@biloxi.com>;tag=8321234356
From: Alice <sip:alice@atlanta.com>;tag=9fxced76sl
Call-ID: 3848276298220188511@atlanta.com
CSeq: 1 INVITE
Content-Length: 0

"""

    def test_top_via_removed_from_a_comma_separated_line(self):
        upstream = response_for_upstream(message(self.RESPONSE))
        self.assertEqual([v.host for v in upstream.via], ["pc33.atlanta.com", "first.example.com"])

    def test_top_via_line_of_its_own_removed(self):
        response = message(self.RESPONSE.replace("z9hG4bKours, SIP", "z9hG4bKours\nVia: SIP"))
        upstream = response_for_upstream(response)
        self.assertEqual(upstream.headers.get_all("Via"), ["SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8",
                                                           "SIP/2.0/UDP first.example.com;branch=z9hG4bKfirst"])

    def test_top_via_not_ours_is_dropped(self):
        response = message(self.RESPONSE)
        self.assertIsNone(response_for_upstream(response, lambda v: v.host == "10.0.0.2"))
        self.assertIsNotNone(response_for_upstream(response, lambda v: v.host == "10.0.0.1"))

    def test_no_via_left_is_dropped(self):
        self.assertIsNone(response_for_upstream(message(self.RESPONSE.replace(
            ", SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\nVia: SIP/2.0/UDP first.example.com;branch=z9hG4bKfirst", ""))))

    def test_broadcast_next_via_is_dropped(self):
        # RFC 4475 3.3.10.
        self.assertIsNone(response_for_upstream(rfc4475("bcast"), lambda v: v.host == "192.0.2.198"))

    def test_malformed_next_via_is_dropped(self):
        self.assertIsNone(response_for_upstream(message(self.RESPONSE.replace("SIP/2.0/UDP pc33", "SIP/2.0/UDP pc33 x y"))))

    def received_request(self, top_via: str) -> Request:
        return message(ALICE_INVITE.replace("Via: ", f"Via: {top_via}\nVia: ", 1))

    def test_next_via_as_the_request_received_it_is_not_parsed_again(self):
        response = message(self.RESPONSE.replace("z9hG4bKours, SIP", "z9hG4bKours\nVia: SIP"))
        request = self.received_request("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8")
        upstream = response_for_upstream(response, request=request)
        self.assertEqual(upstream.headers, response_for_upstream(response).headers)
        self.assertFalse(upstream.headers.has_view(TOP_VIA_VIEW))  # the request's parsed Via was checked
        self.assertTrue(response_for_upstream(response).headers.has_view(TOP_VIA_VIEW))

    def test_broadcast_next_via_as_the_request_received_it_is_dropped(self):
        # RFC 4475 3.3.10, the Via text found parsed in the request.
        bcast = rfc4475("bcast")
        next_via = bcast.headers.get_all("Via")[1]
        self.assertNotIn(",", next_via)
        self.assertIsNone(response_for_upstream(bcast, request=self.received_request(next_via)))

    def test_next_via_line_of_several_via_parms_is_parsed(self):
        response = message(self.RESPONSE)  # the next via-parm shares the removed one's line
        request = self.received_request("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8")
        upstream = response_for_upstream(response, request=request)
        self.assertEqual([v.host for v in upstream.via], ["pc33.atlanta.com", "first.example.com"])


class BranchTests(SynchronousTestCase):
    """A branch's CANCEL (RFC 3261 9.1) from the request as the stack sent it (our Via on
    top) and where, told by the stack's handle (ClientRequest), failover included."""

    def setUp(self):
        self.invite = message(ALICE_INVITE)
        self.forwarded = prepare_forward(self.invite, "sip:bob@192.0.2.4", None).request  # the stack adds our Via
        self.sent_via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsent1"
        self.carrier = self.sent_by_stack(self.sent_via, Address("udp", "192.0.2.4", 5060))

    def sent_by_stack(self, via: str, target: Address) -> ClientRequest:
        handle = ClientRequest()
        self.send_again(handle, via, target)
        return handle

    def send_again(self, handle: ClientRequest, via: str, target: Address) -> None:
        """What the stack does with the handle when a client transaction starts."""
        handle.sent = self.forwarded.copy()
        handle.sent.headers.prepend("Via", via)
        handle.sent_to = target

    def test_forwarded_request_has_no_via_of_ours(self):
        self.assertEqual(self.forwarded.headers.get_all("Via"), self.invite.headers.get_all("Via"))

    def test_no_cancel_before_anything_was_heard(self):
        self.assertIsNone(Branch().cancel_request())
        self.assertIsNone(Branch(request=self.forwarded).cancel_request())
        self.assertIsNone(Branch(request=self.forwarded, carrier=self.carrier).cancel_request())

    def test_no_cancel_before_a_transaction_started(self):
        branch = Branch(request=self.forwarded, carrier=ClientRequest(), heard=True)  # still resolving
        self.assertIsNone(branch.sent_to)
        self.assertIsNone(branch.cancel_request())

    def test_a_response_makes_the_branch_heard(self):
        context = ResponseContext(self.invite, to_tag="proxytag")
        number = context.add_branch()
        self.assertFalse(context.branches[number].heard)
        ringing = make_response(self.carrier.sent, 180, to_tag="uas")
        context.receive(number, ringing)
        self.assertTrue(context.branches[number].heard)

    def test_cancel_carries_the_via_the_branch_was_sent_with(self):
        branch = Branch(request=self.forwarded, carrier=self.carrier, heard=True)
        self.assertEqual(branch.sent_to, Address("udp", "192.0.2.4", 5060))
        cancel = branch.cancel_request()
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.headers.get_all("Via"), [self.sent_via])  # the INVITE's single Via, ours
        self.assertEqual(str(cancel.uri), "sip:bob@192.0.2.4")
        self.assertEqual(str(cancel.cseq), "1 CANCEL")
        for name in ("Call-ID", "From", "To"):
            self.assertEqual(cancel.headers.get(name), self.forwarded.headers.get(name))
        self.assertEqual(parse_message(bytes(cancel)).validate(), cancel)

    def test_cancel_follows_the_stack_to_the_next_target(self):
        branch = Branch(request=self.forwarded, carrier=self.carrier, heard=True)
        self.send_again(self.carrier, "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsent2",
                        Address("udp", "192.0.2.5", 5060))
        self.assertEqual(branch.sent_to, Address("udp", "192.0.2.5", 5060))
        self.assertEqual(branch.cancel_request().top_via.branch, "z9hG4bKsent2")

    def test_the_final_as_received_is_kept_for_uac_auth(self):
        context = ResponseContext(self.invite, to_tag="proxytag")
        number = context.add_branch()
        challenge = make_response(self.carrier.sent, 407, to_tag="uas", extra_headers=[
            ("Proxy-Authenticate", 'Digest realm="b", nonce="n"')])
        context.receive(number, challenge)
        branch = context.branches[number]
        self.assertIs(branch.received, challenge)
        self.assertEqual(branch.final.headers.get_all("Via"), self.invite.headers.get_all("Via"))
        other = context.add_branch()
        context.timed_out(other)
        self.assertTrue(context.branches[other].local)
        self.assertIsNone(context.branches[other].received)


class ResponsePropertyTests(SynchronousTestCase):
    @_HYPOTHESIS
    @given(st.lists(st.sampled_from([180, 183, 200, 302, 401, 407, 404, 486, 487, 500, 503, 600, 603, None]),
                    min_size=1, max_size=5))
    def test_one_final_response_goes_up_and_it_is_well_formed(self, outcomes):
        invite = message(ALICE_INVITE)
        context = ResponseContext(invite)
        finals_up = []
        completed = False
        for status in outcomes:
            if not context.can_fork:
                break
            number = context.add_branch()
            forwarded = prepare_forward(invite, None, make_via("udp", "10.0.0.1", 5060)).request
            if status is None:
                update = context.timed_out(number)
            else:
                update = context.receive(number, make_response(forwarded, status, to_tag=f"t{number}"))
                if status < 200:
                    update = context.receive(number, make_response(forwarded, 487, to_tag=f"t{number}"))
            finals_up += [r for r in update.forward if r.status >= 200]
            completed = update.completed
        if completed:
            finals_up.append(context.finish())
        self.assertEqual(len(finals_up), 1)
        final = finals_up[0]
        self.assertNotEqual(final.status, 503)
        self.assertEqual(final.headers.get_all("Via"), invite.headers.get_all("Via"))
        self.assertEqual(parse_message(bytes(final)).validate(), final)
