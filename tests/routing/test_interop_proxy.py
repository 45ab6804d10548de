"""The proxy against SIPp on loopback: SIPp caller -> txuac proxy -> SIPp callee.

A whole call (INVITE, 100/180/200, ACK, BYE, 200) through ProxyService with a routing
script that record-routes the INVITE and loose-routes in-dialog requests, run by
UACService as ``[routing] script`` sets it; real sockets, real time (T1 50 ms). Then the same call with the caller's From
anonymised (``uac.uac_replace_from`` in auto mode), and a call the callee hangs up
(uac_callee_bye.xml, uas_bye.xml): the From/To each side sees, from SIPp's message traces;
both with the values on our Record-Route (vsf) and in dialog variables (restore_dlg).
"""

from __future__ import annotations

from twisted.internet import defer

from tests.support.sipp import HOST, sipp_messages
from tests.support.sipp_proxy import ANONYMISING_SCRIPT, ANONYMOUS, SCRIPT, ProxyInteropCase
from txuac.routing.restore_codec import encode_restore


class SIPpThroughProxyTests(ProxyInteropCase):
    @defer.inlineCallbacks
    def test_call_through_the_proxy(self):
        uac_messages, uas_messages, uas_port = yield self.call("uac_call.xml", "uas_call.xml")

        received = [m for _, way, m in sipp_messages(uas_messages) if way == "received"]
        self.assertEqual([m.method for m in received], ["INVITE", "ACK", "BYE"])
        invite, ack, bye = received
        our_rr = f"<sip:{HOST}:{self.port};lr;ftag="
        self.assertTrue(invite.headers.get("Record-Route").startswith(our_rr), invite.headers.get("Record-Route"))
        # The proxy's Via on top of each request the callee got: all three went through txuac.
        for request in received:
            self.assertEqual((request.top_via.host, request.top_via.port), (HOST, self.port))
        # In-dialog requests: our Route removed, sent to the callee's Contact.
        for request in (ack, bye):
            self.assertNotIn("Route", request.headers)
            self.assertEqual(request.uri.port, uas_port)
        # The caller got the Record-Route back and its BYE carried it as a Route.
        sent = [m for _, way, m in sipp_messages(uac_messages) if way == "sent"]
        bye_sent = [m for m in sent if getattr(m, "method", None) == "BYE"][0]
        self.assertTrue(bye_sent.headers.get("Route").startswith(our_rr))
        replies = [m.status for _, way, m in sipp_messages(uac_messages) if way == "received"]
        self.assertEqual(replies, [100, 180, 200, 200])
        self.assertEqual(self.proxy.script_failures, 0)


class AnonymisedCallTests(ProxyInteropCase):
    """From replaced on the INVITE in restore_mode auto (the default): restored by the
    vsf parameter of our Record-Route in both directions (reference section 1)."""

    script = ANONYMISING_SCRIPT
    # RR mode restores the URI only (K:replace.c restore_uri): displays stay as sent.
    caller_display_downstream = "sipp"
    caller_display_upstream = "Anonymous"
    record_route_param = ";vsf="

    def caller_from(self, uac_messages: str) -> str:
        [invite] = [m for _, way, m in sipp_messages(uac_messages) if way == "sent" and getattr(m, "method", None) == "INVITE"]
        return invite.headers.get("From")

    @defer.inlineCallbacks
    def test_callee_sees_the_new_from_and_the_caller_its_own(self):
        uac_messages, uas_messages, _ = yield self.call("uac_call.xml", "uas_call.xml")
        received = [m for _, way, m in sipp_messages(uas_messages) if way == "received"]
        self.assertEqual([m.method for m in received], ["INVITE", "ACK", "BYE"])
        caller_from = self.last_caller_from = self.caller_from(uac_messages)
        tag = caller_from.split(";tag=")[1]
        record_route = self.last_record_route = received[0].headers.get("Record-Route")
        self.assertTrue(record_route.split(";lr;")[1].startswith(f"ftag={tag}{self.record_route_param}"),
                        record_route)
        self.assertEqual("vsf=" in record_route, bool(self.record_route_param))
        self.assertEqual(received[0].headers.get("From"), f"{ANONYMOUS};tag={tag}")
        for request in received[1:]:
            # In-dialog requests: the URI restored, the display kept as the caller sent it.
            self.assertEqual(request.headers.get("From"), f"{self.caller_display_downstream} <sip:anonymous@anonymous.invalid>;tag={tag}")
        # The callee echoes the From it got; every reply the caller gets has its own.
        replies = [m for _, way, m in sipp_messages(uac_messages) if way == "received"]
        self.assertEqual([m.status for m in replies], [100, 180, 200, 200])
        for reply in replies:
            self.assertEqual(reply.headers.get("From"), caller_from)
        self.assertEqual(self.proxy.script_failures, 0)

    @defer.inlineCallbacks
    def test_callee_bye_gets_the_callers_uri_back(self):
        uac_messages, uas_messages, _ = yield self.call("uac_callee_bye.xml", "uas_bye.xml")
        caller_from = self.caller_from(uac_messages)
        tag = caller_from.split(";tag=")[1]
        # The callee's BYE went out with To = the anonymous From it was given ...
        [bye_sent] = [m for _, way, m in sipp_messages(uas_messages) if way == "sent" and
                      getattr(m, "method", None) == "BYE"]
        self.assertEqual(bye_sent.headers.get("To"), f"{ANONYMOUS};tag={tag}")
        # ... reached the caller with its own URI in To (upstream: vsf rewrites To) ...
        [bye_received] = [m for _, way, m in sipp_messages(uac_messages) if way == "received" and
                          getattr(m, "method", None) == "BYE"]
        caller_uri = caller_from.split("<")[1].split(">")[0]
        self.assertEqual(bye_received.headers.get("To"), f"{self.caller_display_upstream} <{caller_uri}>;tag={tag}")
        self.assertNotIn("Route", bye_received.headers)
        # ... and its 200 came back to the callee with the anonymous To again.
        [ok] = [m for _, way, m in sipp_messages(uas_messages) if way == "received" and
                getattr(m, "status", None) == 200]
        self.assertEqual(ok.headers.get("To"), f"{ANONYMOUS};tag={tag}")
        self.assertEqual(self.proxy.script_failures, 0)


class AnonymisedDialogCallTests(AnonymisedCallTests):
    """The same calls with restore_dlg: dlg_manage() before the replace, the URIs and
    displays in dialog variables (no vsf), displays restored too."""

    script = ANONYMISING_SCRIPT.replace("        rr.record_route()\n",
                                        "        dialog.dlg_manage()\n        rr.record_route()\n")
    routing = {"restore_dlg": True}
    caller_display_downstream = "Anonymous"
    caller_display_upstream = "sipp"
    record_route_param = ""


class AnonymisedTCPCallTests(AnonymisedCallTests):
    """The anonymised calls over TCP: SIPp -t t1 on both sides, txuac listening on TCP, our
    Record-Route with ;transport=tcp."""

    transport = "tcp"


class AnonymisedPasswordCallTests(AnonymisedCallTests):
    """The same calls with restore_passwd: vsf XOR-encrypted (Kamailio's), same results."""

    routing = {"restore_passwd": "s3cret-Key"}

    @defer.inlineCallbacks
    def test_callee_sees_the_new_from_and_the_caller_its_own(self):
        yield super().test_callee_sees_the_new_from_and_the_caller_its_own()
        # Kamailio's value with the password, not the plain one.
        caller_uri = self.last_caller_from.split("<")[1].split(">")[0]
        vsf = self.last_record_route.split(";vsf=")[1].rstrip(">")
        anonymous = "sip:anonymous@anonymous.invalid"
        self.assertEqual(vsf, encode_restore(caller_uri, anonymous, "s3cret-Key"))
        self.assertNotEqual(vsf, encode_restore(caller_uri, anonymous))


HIDDEN = "sip:hidden@example.net"


class ToReplacedCallTests(ProxyInteropCase):
    """To replaced (uac_replace_to, URI only) in auto mode: vst restores it both ways."""

    script = SCRIPT.replace("        rr.record_route()\n",
                            f"        rr.record_route()\n        uac.uac_replace_to({HIDDEN!r})\n")

    @defer.inlineCallbacks
    def test_callee_sees_the_new_to_and_the_caller_its_own(self):
        uac_messages, uas_messages, uas_port = yield self.call("uac_call.xml", "uas_call.xml")
        received = [m for _, way, m in sipp_messages(uas_messages) if way == "received"]
        self.assertEqual([m.method for m in received], ["INVITE", "ACK", "BYE"])
        self.assertIn(";vst=", received[0].headers.get("Record-Route"))
        self.assertEqual(received[0].headers.get("To"), f"<{HIDDEN}>")
        for request in received[1:]:
            self.assertTrue(request.headers.get("To").startswith(f"<{HIDDEN}>;tag="), request.headers.get("To"))
        original = f"<sip:service@{HOST}:{uas_port}>"
        replies = [m for _, way, m in sipp_messages(uac_messages) if way == "received"]
        self.assertEqual([m.status for m in replies], [100, 180, 200, 200])
        for reply in replies:
            self.assertTrue(reply.headers.get("To").startswith(original), reply.headers.get("To"))
        self.assertEqual(self.proxy.script_failures, 0)

    @defer.inlineCallbacks
    def test_callee_bye_gets_the_original_to_as_from(self):
        uac_messages, uas_messages, uas_port = yield self.call("uac_callee_bye.xml", "uas_bye.xml")
        [bye_sent] = [m for _, way, m in sipp_messages(uas_messages) if way == "sent" and
                      getattr(m, "method", None) == "BYE"]
        self.assertTrue(bye_sent.headers.get("From").startswith(f"<{HIDDEN}>;tag="))
        [bye_received] = [m for _, way, m in sipp_messages(uac_messages) if way == "received" and
                          getattr(m, "method", None) == "BYE"]
        self.assertTrue(bye_received.headers.get("From").startswith(f"<sip:service@{HOST}:{uas_port}>;tag="),
                        bye_received.headers.get("From"))
        self.assertEqual(self.proxy.script_failures, 0)
