"""Tests of the sans-IO proxy's request rules (RFC 3261 16) with RFC 3261 and RFC 4475
messages."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txuac.errors import SIPParseError
from txuac.routing.proxy_rules import (
    DEFAULT_MAX_FORWARDS,
    check_request,
    make_branch_cancel,
    make_rejection,
    prepare_ack_forward,
    prepare_forward,
    preprocess_route,
    stateless_branch,
    top_via_parsed_in,
)
from txuac.sip import Headers, Request, Via, parse_message, parse_uri
from txuac.sip.headers import TOP_VIA_VIEW
from txuac.sip.transaction import has_magic_cookie
from txuac.sip.via import make_via

from tests.support import corpus
from tests.support.proxy_messages import ALICE_INVITE, message, rfc4475

_HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def local_hosts(*hosts: str):
    """An is_local_uri predicate for these host names (any port)."""
    lowered = {h.lower() for h in hosts}
    return lambda uri: uri.host.lower() in lowered


ATLANTA_VIA = "SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1"
BILOXI_VIA = "SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1"


def via(text: str) -> Via:
    return message(f"OPTIONS sip:x@y SIP/2.0\nVia: {text}\n\n").top_via


class CheckRequestTests(SynchronousTestCase):
    """RFC 3261 16.3."""

    def test_valid_request_is_forwarded(self):
        self.assertIsNone(check_request(message(ALICE_INVITE)))

    def test_max_forwards_zero_gets_483(self):
        # RFC 4475 3.3.11: an OPTIONS with Max-Forwards 0; a proxy answers 483.
        self.assertEqual(check_request(rfc4475("zeromf")), 483)

    def test_options_with_max_forwards_zero_may_be_answered(self):
        # 16.3 item 3: the OPTIONS MAY be answered as a UAS, whatever its Request-URI.
        self.assertEqual(check_request(rfc4475("zeromf"), answer_options=True), 200)
        invite = message(ALICE_INVITE.replace("Max-Forwards: 70", "Max-Forwards: 0"))
        self.assertEqual(check_request(invite, answer_options=True), 483)

    def test_max_forwards_one_is_forwarded(self):
        invite = message(ALICE_INVITE.replace("Max-Forwards: 70", "Max-Forwards: 1"))
        self.assertIsNone(check_request(invite))

    def test_unsupported_proxy_require_gets_420_with_unsupported(self):
        # RFC 4475 3.3.5: Proxy-Require tags are listed; Require is the UAS's business.
        request = rfc4475("bext01")
        self.assertEqual(check_request(request), 420)
        response = make_rejection(request, 420)
        self.assertEqual(response.status, 420)
        self.assertEqual(response.tokens("Unsupported"), ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])
        self.assertIsNotNone(response.to.tag)

    def test_supported_proxy_require_is_forwarded(self):
        supported = ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
        self.assertIsNone(check_request(rfc4475("bext01"), supported))

    def test_unknown_request_uri_scheme_gets_416(self):
        # RFC 4475 3.3.2.
        self.assertEqual(check_request(rfc4475("unkscm")), 416)

    def test_tel_uri_is_routed(self):
        invite = message(ALICE_INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE tel:+16505552222"))
        self.assertIsNone(check_request(invite))

    def test_routed_schemes_given_compare_case_insensitively(self):
        tel = message(ALICE_INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE tel:+16505552222"))
        self.assertEqual(check_request(tel, routed_schemes=("SIP",)), 416)
        self.assertIsNone(check_request(message(ALICE_INVITE), routed_schemes=("SIP",)))

    def test_missing_header_fields_get_400(self):
        # RFC 4475 3.3.1.
        request = rfc4475("insuf")
        self.assertEqual(check_request(request), 400)
        response = make_rejection(request, 400)
        self.assertEqual(response.status, 400)
        self.assertIn("missing", response.reason)

    def test_rfc2543_request_without_max_forwards_is_forwarded(self):
        # RFC 4475 3.4.1.
        self.assertIsNone(check_request(rfc4475("inv2543")))

    def test_torture_messages_get_a_status_never_an_exception(self):
        expected = {"zeromf": 483, "bext01": 420, "unkscm": 416, "insuf": 400, "badinv01": 400,
                    "quotbal": 400, "baddate": 400, "regbadct": 400, "badaspec": 400, "baddn": 400,
                    "wsinv": None, "inv2543": None, "esc01": None, "intmeth": None}
        for name in corpus.names():
            try:
                request = parse_message(corpus.load(name))
            except SIPParseError:
                continue
            if not isinstance(request, Request):
                continue
            status = check_request(request)
            if name in expected:
                self.assertEqual(status, expected[name], name)
            if status is not None:
                self.assertEqual(make_rejection(request, status).status, status)


class PreprocessRouteTests(SynchronousTestCase):
    """RFC 3261 16.4."""

    def test_top_route_of_ours_is_removed(self):
        request = message(ALICE_INVITE.replace(
            "Max-Forwards", "Route: <sip:bigbox3.site3.atlanta.com;lr>, <sip:server10.biloxi.com;lr>\nMax-Forwards"))
        result = preprocess_route(request, local_hosts("bigbox3.site3.atlanta.com"))
        self.assertTrue(result.loose_routed)
        self.assertFalse(result.strict_route_compat)
        self.assertEqual([str(r.uri) for r in result.request.route], ["sip:server10.biloxi.com;lr"])
        self.assertEqual(str(result.request.uri), "sip:bob@biloxi.com")
        self.assertEqual(len(request.route), 2, "the request given is left alone")

    def test_top_route_of_others_is_kept(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sip:server10.biloxi.com;lr>\nMax-Forwards"))
        result = preprocess_route(request, local_hosts("bigbox3.site3.atlanta.com"))
        self.assertFalse(result.loose_routed)
        self.assertEqual(result.own_uris, [])
        self.assertEqual(len(result.request.route), 1)
        self.assertIsNone(result.ftag)
        self.assertIsNone(result.downstream)

    def test_own_route_params_are_reported_unknown_ones_included(self):
        request = message(ALICE_INVITE.replace(
            "Max-Forwards", "Route: <sip:10.0.0.1;lr;ftag=9fxced76sl;vsf=AAEC;vst=BgMH;unknown=1;flag>\nMax-Forwards"))
        result = preprocess_route(request, local_hosts("10.0.0.1"))
        self.assertTrue(result.loose_routed)
        self.assertEqual(result.params.items(), [("lr", None), ("ftag", "9fxced76sl"), ("vsf", "AAEC"),
                                                 ("vst", "BgMH"), ("unknown", "1"), ("flag", None)])
        self.assertEqual(result.ftag, "9fxced76sl")
        self.assertIs(result.downstream, True)
        self.assertEqual(result.request.route, [])
        self.assertNotIn("Route", result.request.headers)

    def test_request_from_the_callee_goes_upstream(self):
        bye = message("""BYE sip:alice@pc33.atlanta.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10
Route: <sip:10.0.0.1;lr;ftag=9fxced76sl>
Max-Forwards: 70
From: Bob <sip:bob@biloxi.com>;tag=a6c85cf
To: Alice <sip:alice@atlanta.com>;tag=9fxced76sl
Call-ID: a84b4c76e66710
CSeq: 231 BYE
Content-Length: 0

""")
        result = preprocess_route(bye, local_hosts("10.0.0.1"))
        self.assertIs(result.downstream, False)

    def test_unknown_route_params_in_torture_message_do_not_stop_the_proxy(self):
        # RFC 4475 3.1.1.1: Route <sip:services.example.com;lr;unknownwith=value;unknown-no-value>.
        result = preprocess_route(rfc4475("wsinv"), local_hosts("services.example.com"))
        self.assertTrue(result.loose_routed)
        self.assertEqual(result.params.get("unknownwith"), "value")
        self.assertIn("unknown-no-value", result.params)
        self.assertEqual(result.request.route, [])

    def test_kamailio_double_record_route_is_removed_whole(self):
        request = message(ALICE_INVITE.replace(
            "Max-Forwards", "Route: <sip:10.0.0.1;r2=on;lr>, <sip:10.0.1.1;transport=tcp;r2=on;lr>, "
                            "<sip:server10.biloxi.com;lr>\nMax-Forwards"))
        result = preprocess_route(request, local_hosts("10.0.0.1", "10.0.1.1"))
        self.assertEqual([str(u) for u in result.own_uris], ["sip:10.0.0.1;r2=on;lr", "sip:10.0.1.1;transport=tcp;r2=on;lr"])
        self.assertEqual([str(r.uri) for r in result.request.route], ["sip:server10.biloxi.com;lr"])

    def test_second_route_of_ours_stays_without_r2(self):
        request = message(ALICE_INVITE.replace(
            "Max-Forwards", "Route: <sip:10.0.0.1;lr>\nRoute: <sip:10.0.1.1;lr>\nMax-Forwards"))
        result = preprocess_route(request, local_hosts("10.0.0.1", "10.0.1.1"))
        self.assertEqual([str(r.uri) for r in result.request.route], ["sip:10.0.1.1;lr"])

    def test_request_uri_of_ours_with_a_user_is_not_strict_routing(self):
        # An outbound proxy Route to us and a Request-URI in our domain: loose routing.
        request = message(ALICE_INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE sip:bob@10.0.0.1")
                          .replace("Max-Forwards", "Route: <sip:10.0.0.1;lr>\nMax-Forwards"))
        result = preprocess_route(request, local_hosts("10.0.0.1"))
        self.assertFalse(result.strict_route_compat)
        self.assertTrue(result.loose_routed)
        self.assertEqual(str(result.request.uri), "sip:bob@10.0.0.1")

    def test_request_uri_of_ours_without_route_is_left(self):
        request = message(ALICE_INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE sip:10.0.0.1"))
        result = preprocess_route(request, local_hosts("10.0.0.1"))
        self.assertFalse(result.strict_route_compat)
        self.assertEqual(str(result.request.uri), "sip:10.0.0.1")

    def test_maddr_of_ours_is_stripped(self):
        request = message(ALICE_INVITE.replace(
            "INVITE sip:bob@biloxi.com", "INVITE sip:bob@biloxi.com:5080;maddr=10.0.0.1;transport=udp;user=phone"))
        result = preprocess_route(request, local_hosts("10.0.0.1"))
        self.assertTrue(result.maddr_stripped)
        self.assertEqual(str(result.request.uri), "sip:bob@biloxi.com;user=phone")

    def test_maddr_of_others_is_kept(self):
        request = message(ALICE_INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE sip:bob@biloxi.com;maddr=10.9.9.9"))
        result = preprocess_route(request, local_hosts("10.0.0.1"))
        self.assertFalse(result.maddr_stripped)
        self.assertEqual(str(result.request.uri), "sip:bob@biloxi.com;maddr=10.9.9.9")

    def test_non_sip_route_is_not_ours_and_not_an_error(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <urn:service:sos>\nMax-Forwards"))
        seen = []
        result = preprocess_route(request, lambda uri: seen.append(uri) or True)
        self.assertFalse(result.loose_routed)
        self.assertEqual(seen, [])

    def test_malformed_route_is_a_400(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sip:a b>\nMax-Forwards"))
        error = self.assertRaises(SIPParseError, preprocess_route, request, local_hosts("a"))
        self.assertEqual(error.status, 400)
        empty = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sip:10.0.0.1;lr>,,<sip:x>\nMax-Forwards"))
        self.assertEqual(self.assertRaises(SIPParseError, preprocess_route, empty, local_hosts("10.0.0.1")).status, 400)


# RFC 3261 16.12.1.2: U1 -> P1 (loose) -> P2 (strict) -> P3 (loose) -> P4 (loose) -> U2,
# the BYE of U1 along the route set learnt from the Record-Route values.
def bye(request_uri: str, routes: list[str]) -> Request:
    route_lines = "".join(f"Route: {r}\n" for r in routes)
    return message(f"""BYE {request_uri} SIP/2.0
Via: SIP/2.0/UDP u1.example.com;branch=z9hG4bKbye1
{route_lines}Max-Forwards: 70
From: <sip:caller@u1.example.com>;tag=u1tag
To: <sip:callee@domain.com>;tag=u2tag
Call-ID: strict-trace
CSeq: 2 BYE
Content-Length: 0

""")


class StrictRouteTraceTests(SynchronousTestCase):
    """The 16.12.1.2 example traces, proxy by proxy."""

    def forward(self, request: Request, proxy: str):
        processed = preprocess_route(request, local_hosts(proxy))
        forward = prepare_forward(processed.request, None, via(f"SIP/2.0/UDP {proxy};branch=z9hG4bK{proxy[:2]}"))
        return processed, forward

    def routes(self, request: Request) -> list[str]:
        return [str(r.uri) for r in request.route]

    def test_p1_loose_routes_to_the_strict_router_p2(self):
        request = bye("sip:callee@u2.domain.com", ["<sip:p1.example.com;lr>", "<sip:p2.example.com>",
                                                   "<sip:p3.example.com;lr>", "<sip:p4.example.com;lr>"])
        processed, forward = self.forward(request, "p1.example.com")
        self.assertTrue(processed.loose_routed)
        # 16.6 item 6: the strict next hop takes the Request-URI, the old one goes last.
        self.assertEqual(str(forward.request.uri), "sip:p2.example.com")
        self.assertEqual(self.routes(forward.request),
                         ["sip:p3.example.com;lr", "sip:p4.example.com;lr", "sip:callee@u2.domain.com"])
        self.assertTrue(forward.strict_next_hop)
        self.assertEqual(str(forward.next_hop), "sip:p2.example.com")

    def test_p3_gets_the_strict_routers_request(self):
        # P2 (strict) put the first Route value into the Request-URI.
        request = bye("sip:p3.example.com;lr", ["<sip:p4.example.com;lr>", "<sip:callee@u2.domain.com>"])
        processed, forward = self.forward(request, "p3.example.com")
        self.assertTrue(processed.strict_route_compat)
        self.assertEqual([str(u) for u in processed.own_uris], ["sip:p3.example.com;lr"])
        self.assertEqual(str(forward.request.uri), "sip:callee@u2.domain.com")
        self.assertEqual(self.routes(forward.request), ["sip:p4.example.com;lr"])
        self.assertFalse(forward.strict_next_hop)
        self.assertEqual(str(forward.next_hop), "sip:p4.example.com;lr")

    def test_p4_delivers_to_the_callee(self):
        request = bye("sip:callee@u2.domain.com", ["<sip:p4.example.com;lr>"])
        processed, forward = self.forward(request, "p4.example.com")
        self.assertTrue(processed.loose_routed)
        self.assertEqual(self.routes(forward.request), [])
        self.assertEqual(str(forward.next_hop), "sip:callee@u2.domain.com")

    def test_the_whole_trace_reaches_the_callee_with_every_hop_counted(self):
        request = bye("sip:callee@u2.domain.com", ["<sip:p1.example.com;lr>", "<sip:p2.example.com>",
                                                   "<sip:p3.example.com;lr>", "<sip:p4.example.com;lr>"])
        _, at_p2 = self.forward(request, "p1.example.com")
        # P2, a strict router (RFC 2543): the first Route value becomes the Request-URI.
        strict = at_p2.request.copy()
        first = strict.route[0]
        strict.uri = parse_uri(first.uri_text)
        strict.headers.set("Route", ", ".join(str(r) for r in strict.route[1:]))
        strict.headers.set("Max-Forwards", str(strict.max_forwards - 1))
        _, at_p4 = self.forward(strict, "p3.example.com")
        _, at_u2 = self.forward(at_p4.request, "p4.example.com")
        self.assertEqual(str(at_u2.request.uri), "sip:callee@u2.domain.com")
        self.assertNotIn("Route", at_u2.request.headers)
        self.assertEqual(at_u2.request.max_forwards, 66)
        self.assertEqual([v.host for v in at_u2.request.via],
                         ["p4.example.com", "p3.example.com", "p1.example.com", "u1.example.com"])


class PrepareForwardTests(SynchronousTestCase):
    """RFC 3261 16.6."""

    def test_rfc3261_24_2_atlanta_proxy(self):
        # F1 -> F2 of RFC 3261 24.2, with a Record-Route of the atlanta.com proxy.
        request = message(ALICE_INVITE)
        forward = prepare_forward(request, None, via(ATLANTA_VIA), "sip:bigbox3.site3.atlanta.com")
        out = forward.request
        self.assertEqual(str(out.uri), "sip:bob@biloxi.com")
        self.assertEqual(out.headers.get_all("Via")[:2], [ATLANTA_VIA, "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1"])
        self.assertEqual(out.max_forwards, 69)
        self.assertEqual(out.headers.get_all("Record-Route"), ["<sip:bigbox3.site3.atlanta.com;lr;ftag=9fxced76sl>"])
        self.assertEqual(out.body, b"v=0\n")
        self.assertEqual(out.content_length, 4)
        self.assertEqual(str(forward.next_hop), "sip:bob@biloxi.com")
        self.assertEqual(request.max_forwards, 70, "the request given is left alone")
        self.assertEqual(len(request.via), 1)
        # The biloxi.com proxy records itself above atlanta.com, retargeting to Bob's phone.
        second = prepare_forward(parse_message(bytes(out)), "sip:bob@192.0.2.4", via(BILOXI_VIA), "sip:server10.biloxi.com")
        self.assertEqual(str(second.request.uri), "sip:bob@192.0.2.4")
        self.assertEqual([str(r.uri) for r in second.request.record_route],
                         ["sip:server10.biloxi.com;lr;ftag=9fxced76sl", "sip:bigbox3.site3.atlanta.com;lr;ftag=9fxced76sl"])
        self.assertEqual(second.request.max_forwards, 68)
        self.assertEqual(len(second.request.via), 3)

    def test_record_route_goes_before_the_first_existing_line(self):
        request = message(ALICE_INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 INVITE\nRecord-Route: <sip:p9.example.com;lr>"))
        out = prepare_forward(request, None, via(ATLANTA_VIA), "sip:10.0.0.1:5060;transport=udp").request
        names = [name for name, _ in out.headers]
        self.assertEqual(names.index("Record-Route") - 1, names.index("CSeq"))
        self.assertEqual(out.headers.get_all("Record-Route"),
                         ["<sip:10.0.0.1:5060;transport=udp;lr;ftag=9fxced76sl>", "<sip:p9.example.com;lr>"])

    def test_record_route_keeps_the_callers_params_and_lr(self):
        request = message(ALICE_INVITE)
        out = prepare_forward(request, None, via(ATLANTA_VIA), "sip:10.0.0.1;lr;vsf=AAEC").request
        self.assertEqual(out.headers.get("Record-Route"), "<sip:10.0.0.1;ftag=9fxced76sl;lr;vsf=AAEC>")

    def test_no_ftag_without_from_tag(self):
        out = prepare_forward(rfc4475("inv2543"), None, via(ATLANTA_VIA), "sip:10.0.0.1").request
        self.assertEqual(out.headers.get("Record-Route"), "<sip:10.0.0.1;lr>")

    def test_sips_request_uri_gets_a_sips_record_route(self):
        request = message(ALICE_INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE sips:bob@biloxi.com"))
        out = prepare_forward(request, None, via(ATLANTA_VIA), "sip:10.0.0.1;transport=tls").request
        self.assertEqual(str(out.record_route[0].uri), "sips:10.0.0.1;transport=tls;lr;ftag=9fxced76sl")

    def test_sips_top_route_gets_a_sips_record_route(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sips:p2.example.com;lr>\nMax-Forwards"))
        out = prepare_forward(request, None, via(ATLANTA_VIA), "sip:10.0.0.1").request
        self.assertTrue(out.record_route[0].uri.secure)

    def test_max_forwards_added_when_absent(self):
        # RFC 4475 3.4.1 (RFC 2543 syntax): no Max-Forwards, no Content-Length.
        out = prepare_forward(rfc4475("inv2543"), None, via(ATLANTA_VIA)).request
        self.assertEqual(out.max_forwards, DEFAULT_MAX_FORWARDS)
        self.assertEqual(out.content_length, len(out.body))
        self.assertEqual(parse_message(bytes(out)).body, out.body)

    def test_max_forwards_zero_is_483(self):
        request = message(ALICE_INVITE.replace("Max-Forwards: 70", "Max-Forwards: 0"))
        error = self.assertRaises(SIPParseError, prepare_forward, request, None, via(ATLANTA_VIA))
        self.assertEqual(error.status, 483)

    def test_max_forwards_leading_zeros(self):
        out = prepare_forward(rfc4475("wsinv"), "sip:x@192.0.2.9", via(ATLANTA_VIA)).request
        self.assertEqual(out.headers.get("Max-Forwards"), "67")

    def test_branch_made_when_the_caller_gives_none_and_kept_otherwise(self):
        ours = via("SIP/2.0/UDP 10.0.0.1:5060;rport")
        out = prepare_forward(message(ALICE_INVITE), None, ours).request
        self.assertTrue(has_magic_cookie(out.top_via.branch))
        self.assertIsNone(ours.branch, "the caller's Via is left alone")
        other = prepare_forward(message(ALICE_INVITE), None, ours).request
        self.assertNotEqual(out.top_via.branch, other.top_via.branch)
        made = make_via("udp", "10.0.0.1", 5060)
        self.assertEqual(prepare_forward(message(ALICE_INVITE), None, made).request.top_via.branch, made.branch)
        rfc2543 = via("SIP/2.0/UDP 10.0.0.1;branch=1234")
        self.assertTrue(has_magic_cookie(prepare_forward(message(ALICE_INVITE), None, rfc2543).request.top_via.branch))

    def test_target_uri_as_text_or_uri(self):
        request = message(ALICE_INVITE)
        self.assertEqual(str(prepare_forward(request, "sip:bob@192.0.2.4;transport=tcp", via(ATLANTA_VIA)).request.uri),
                         "sip:bob@192.0.2.4;transport=tcp")
        target = parse_uri("tel:+16505552222")
        self.assertEqual(str(prepare_forward(request, target, via(ATLANTA_VIA)).request.uri), "tel:+16505552222")
        self.assertRaises(SIPParseError, prepare_forward, request, "not a uri", via(ATLANTA_VIA))

    def test_next_hop_is_the_top_loose_route(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sip:p2.example.com;lr>\nMax-Forwards"))
        forward = prepare_forward(request, None, via(ATLANTA_VIA))
        self.assertEqual(str(forward.next_hop), "sip:p2.example.com;lr")
        self.assertEqual(str(forward.request.uri), "sip:bob@biloxi.com")

    def test_next_hop_that_is_not_sip_is_a_400(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <urn:service:sos>\nMax-Forwards"))
        error = self.assertRaises(SIPParseError, prepare_forward, request, None, via(ATLANTA_VIA))
        self.assertEqual(error.status, 400)

    def test_forwarded_request_parses_back_equal(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sip:p2.example.com>, <sip:p3;lr>\nMax-Forwards"))
        out = prepare_forward(request, "sip:bob@192.0.2.4", via(ATLANTA_VIA), "sip:10.0.0.1").request
        self.assertEqual(parse_message(bytes(out)).validate(), out)


class CancelAndAckTests(SynchronousTestCase):
    """RFC 3261 16.10, 16.11, 9.1, 17.2.1."""

    def test_branch_cancel(self):
        request = message(ALICE_INVITE.replace("Max-Forwards", "Route: <sip:p2.example.com;lr>\nMax-Forwards"))
        forwarded = prepare_forward(request, "sip:bob@192.0.2.4", make_via("udp", "10.0.0.1", 5060)).request
        cancel = make_branch_cancel(forwarded)
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(str(cancel.uri), "sip:bob@192.0.2.4")
        self.assertEqual(cancel.headers.get_all("Via"), [forwarded.headers.get_all("Via")[0]])
        self.assertEqual(str(cancel.cseq), "1 CANCEL")
        self.assertEqual(cancel.headers.get_all("Route"), ["<sip:p2.example.com;lr>"])
        for name in ("From", "To", "Call-ID"):
            self.assertEqual(cancel.headers.get(name), forwarded.headers.get(name))
        self.assertEqual(parse_message(bytes(cancel)).validate(), cancel)

    ACK = """ACK sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds9
Route: <sip:10.0.0.1;lr;ftag=9fxced76sl>, <sip:server10.biloxi.com;lr>
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=9fxced76sl
Call-ID: 3848276298220188511@atlanta.com
CSeq: 1 ACK
Content-Length: 0

"""

    def test_ack_for_2xx_forwarded_statelessly_with_a_stable_branch(self):
        ack = preprocess_route(message(self.ACK), local_hosts("10.0.0.1")).request
        ours = make_via("udp", "10.0.0.1", 5060)
        first = prepare_ack_forward(ack, ours)
        again = prepare_ack_forward(message(bytes(ack).decode().replace("\r\n", "\n")), ours)
        self.assertEqual(first.request.top_via.branch, again.request.top_via.branch)
        self.assertTrue(has_magic_cookie(first.request.top_via.branch))
        self.assertNotEqual(first.request.top_via.branch, ours.branch)
        other = prepare_ack_forward(message(self.ACK.replace("z9hG4bKnashds9", "z9hG4bKnashds10")), ours)
        self.assertNotEqual(first.request.top_via.branch, other.request.top_via.branch)
        self.assertNotIn("Record-Route", first.request.headers)
        self.assertEqual(first.request.max_forwards, 69)
        self.assertEqual(str(first.next_hop), "sip:server10.biloxi.com;lr")

    def test_rfc2543_ack_branch_from_the_transaction_fields(self):
        ack = message(self.ACK.replace(";branch=z9hG4bKnashds9", ""))
        self.assertEqual(stateless_branch(ack), stateless_branch(message(self.ACK.replace(";branch=z9hG4bKnashds9", ""))))
        self.assertNotEqual(stateless_branch(ack), stateless_branch(message(
            self.ACK.replace(";branch=z9hG4bKnashds9", "").replace("tag=a6c85cf", "tag=other"))))

    def test_only_acks(self):
        self.assertRaises(SIPParseError, prepare_ack_forward, message(ALICE_INVITE), make_via("udp", "10.0.0.1", 5060))

    def test_ack_branch_from_the_received_acks_parsed_via(self):
        received = message(self.ACK)
        ack = preprocess_route(received, local_hosts("10.0.0.1")).request  # a copy: its views dropped
        ours = make_via("udp", "10.0.0.1", 5060)
        self.assertIs(top_via_parsed_in(ack, received), received.top_via)
        stateless_branch(ack, received)
        self.assertFalse(ack.headers.has_view(TOP_VIA_VIEW))  # the received ACK's parsed Via was read
        self.assertEqual(prepare_ack_forward(ack, ours, received=received).request.top_via.branch,
                         prepare_ack_forward(ack, ours).request.top_via.branch)

    def test_top_via_parsed_again_when_its_line_differs(self):
        received = message(self.ACK)
        changed = message(self.ACK.replace("z9hG4bKnashds9", "z9hG4bKnashds10"))
        self.assertEqual(top_via_parsed_in(changed, received).branch, "z9hG4bKnashds10")
        several = message(self.ACK.replace("z9hG4bKnashds9", "z9hG4bKnashds9, SIP/2.0/UDP 192.0.2.9"))
        received_alike = several.copy()
        self.assertIsNot(top_via_parsed_in(several, received_alike), received_alike.top_via)
        self.assertEqual(top_via_parsed_in(several, received_alike).host, "pc33.atlanta.com")
        self.assertIs(top_via_parsed_in(received, None), received.top_via)


# --- property tests --------------------------------------------------------------------

_HOSTS = st.sampled_from(["10.0.0.1", "p1.example.com", "[2001:db8::1]", "biloxi.com"])
_ROUTE = st.builds(lambda scheme, host, lr, extra: f"<{scheme}:{host}{';lr' if lr else ''}{extra}>",
                   st.sampled_from(["sip", "sips"]), _HOSTS, st.booleans(),
                   st.sampled_from(["", ";ftag=abc", ";vsf=AAEC;vst=x", ";unknown", ";r2=on", ";transport=tcp"]))
_HOSTILE = st.text(alphabet=st.sampled_from(list("ab1<>;,=:@\"\\ \t%[]?&sip") + ["é", "\x00"]), max_size=40)


def _request(routes: list[str], max_forwards: str | None, uri: str, extra: list[tuple[str, str]]) -> Request:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8")
    for route in routes:
        headers.add("Route", route)
    if max_forwards is not None:
        headers.add("Max-Forwards", max_forwards)
    headers.add("To", "<sip:bob@biloxi.com>")
    headers.add("From", "<sip:alice@atlanta.com>;tag=9fxced76sl")
    headers.add("Call-ID", "prop@atlanta.com")
    headers.add("CSeq", "1 INVITE")
    for name, value in extra:
        headers.add(name, value)
    return Request("INVITE", parse_uri(uri), headers)


class PropertyTests(SynchronousTestCase):
    @_HYPOTHESIS
    @given(st.lists(_ROUTE, max_size=4), st.one_of(st.none(), st.integers(0, 255).map(str)),
           st.sampled_from(["sip:bob@biloxi.com", "sips:bob@biloxi.com", "sip:10.0.0.1;lr", "tel:+1555"]),
           st.one_of(st.none(), st.sampled_from(["sip:10.0.0.1", "sip:10.0.0.1;lr;vsf=AAEC", "sips:[2001:db8::1]:5061"])))
    def test_forwarded_requests_always_parse(self, routes, max_forwards, uri, record_route):
        request = _request(routes, max_forwards, uri, [])
        if check_request(request) is not None:
            self.assertEqual(max_forwards, "0")
            return
        processed = preprocess_route(request, local_hosts("10.0.0.1"))
        forward = prepare_forward(processed.request, None, make_via("udp", "10.0.0.1", 5060), record_route)
        out = forward.request
        reparsed = parse_message(bytes(out)).validate()
        self.assertEqual(reparsed, out)
        self.assertEqual(reparsed.max_forwards, DEFAULT_MAX_FORWARDS if max_forwards is None else int(max_forwards) - 1)
        self.assertEqual(reparsed.top_via.host, "10.0.0.1")
        self.assertEqual(len(reparsed.via), 2)
        if record_route is not None:
            self.assertIn("lr", reparsed.record_route[0].uri.params)
        # 16.6 item 7: the next hop is the Request-URI or the first Route value.
        candidates = [str(reparsed.uri)] + [r.uri_text for r in reparsed.route[:1]]
        self.assertIn(str(forward.next_hop), candidates)

    @_HYPOTHESIS
    @given(st.sampled_from(["Route", "Max-Forwards", "From", "Proxy-Require", "Record-Route", "Via", "To", "CSeq"]),
           _HOSTILE)
    def test_hostile_headers_raise_only_parse_errors(self, name, value):
        request = _request(["<sip:10.0.0.1;lr>"], "70", "sip:bob@biloxi.com", [])
        try:
            request.headers.set(name, value)
        except SIPParseError:
            return
        status = check_request(request)
        if status is not None:
            self.assertIn(status, (400, 420, 483))
            self.assertEqual(make_rejection(request, status).status, status)
        for step in (
            lambda: preprocess_route(request, local_hosts("10.0.0.1")),
            lambda: prepare_forward(request, None, make_via("udp", "10.0.0.1", 5060), "sip:10.0.0.1"),
            lambda: make_branch_cancel(request),
            lambda: stateless_branch(request),
        ):
            try:
                step()
            except SIPParseError as error:
                self.assertIn(error.status, (400, 483))
