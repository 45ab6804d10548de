"""Wire compatibility of ``vsf`` with Kamailio's uac module: a dialog anonymised by Kamailio
ends through txuac.

A real Kamailio (tests/support/kamailio-proxy.cfg: rr with append_fromtag, uac
restore_mode auto, restore_passwd) record-routes a SIPp caller's INVITE, replaces its From
with ``uac_replace_from("Anonymous", "sip:anonymous@anonymous.invalid")`` and relays it to a
SIPp callee: the original URI travels in ``;vsf=`` of Kamailio's Record-Route. Once the
ACK went through, Kamailio is stopped and txuac (restore_mode auto, the same
restore_passwd, the anonymising script of test_interop_proxy) takes its address; the BYE,
sent after a pause with the Route Kamailio recorded, goes through txuac, which restores
it from Kamailio's vsf (reference section 1.5):

* caller's BYE (downstream, ftag = From-tag): the From carries the caller's own URI and
  must reach the callee with the anonymous URI again (the display stays as the caller
  sent it: RR mode restores URIs only); the 200 goes back with the caller's From;
* callee's BYE (upstream): its To carries the anonymous URI and must reach the caller
  with the caller's own URI; the 200 goes back to the callee with the anonymous To.

With another restore_passwd txuac cannot decode Kamailio's value: the caller's URI is
not turned into the anonymous one (the test the others can fail against).
"""

from __future__ import annotations

from twisted.internet import defer

from tests.support.kamailio import PROXY_CONFIG, KamailioRegistrar
from tests.support.sipp import HOST, sipp_messages, sleep, udp_bound, until
from tests.support.sipp_proxy import ANONYMISING_SCRIPT, ANONYMOUS, ProxyInteropCase, last_stats
from txuac.routing.restore_codec import encode_restore

PASSWORD = "kamailio-secret"
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"
# How long the SIPp peer that sends the BYE waits after the ACK: time to swap the proxies.
HANDOVER_PAUSE_MS = 5000


def sent(path: str, method: str):
    return [m for _, way, m in sipp_messages(path) if way == "sent" and getattr(m, "method", None) == method]


def received(path: str):
    return [m for _, way, m in sipp_messages(path) if way == "received"]


def bare_uri(name_addr: str) -> str:
    return name_addr.split("<", 1)[1].split(">", 1)[0]


class KamailioHandoverCase(ProxyInteropCase):
    """The INVITE through Kamailio, the BYE through txuac on the same address."""

    timeout = 90
    script = ANONYMISING_SCRIPT
    routing = {"restore_mode": "auto", "restore_passwd": PASSWORD}
    proxy_at_setup = False

    def setUp(self):
        super().setUp()
        self.kamailio = KamailioRegistrar(self, config=PROXY_CONFIG, defines={"RESTORE_PASSWD": f'"{PASSWORD}"'})
        self.port = self.kamailio.port

    @defer.inlineCallbacks
    def handover_call(self, uac_scenario: str, uas_scenario: str):
        """A call from ``uac_scenario`` to ``uas_scenario`` through Kamailio, handed over to
        txuac after the ACK; (uac message file, uas message file), both SIPp ended with 0."""
        pause = ("-d", str(HANDOVER_PAUSE_MS))
        uas, uas_port, uas_messages = self.sipp_peer(uas_scenario, "-m", "1", *pause)
        started = yield until(lambda: udp_bound(uas_port) or not uas.running(), 10)
        self.assertTrue(started and uas.running(), f"SIPp UAS did not start: {uas.output()[-2000:]}")
        uac, _, uac_messages = self.sipp_peer(uac_scenario, f"{HOST}:{self.port}", "-m", "1", *pause,
                                              "-key", "uas", f"{HOST}:{uas_port}", "-timeout", "30", "-timeout_error")
        acked = yield until(lambda: any(line.startswith("request ACK") for line in self.kamailio.script_log()), 15)
        self.assertTrue(acked, self.kamailio.explain("no ACK through Kamailio"))
        yield sleep(0.3)  # the ACK on its way out of Kamailio before it stops
        self.kamailio.stop()
        self.start_proxy(self.port)
        for peer in (uac, uas):
            status = yield self.exit_status(peer, timeout=30)
            self.assertEqual(status, 0, peer.output()[-3000:])
        stats = last_stats(f"{self.workdir}/{uac_scenario}.stats")
        self.assertEqual((stats["SuccessfulCall(C)"], stats["FailedCall(C)"]), ("1", "0"))
        # Kamailio saw the dialog's first transaction only.
        methods = [line.split()[1] for line in self.kamailio.script_log()]
        self.assertEqual([m for m in methods if m != "INVITE"], ["ACK"], self.kamailio.script_log())
        return uac_messages, uas_messages

    def check_invite(self, uac_messages: str, uas_messages: str) -> tuple[str, str]:
        """Kamailio anonymised the INVITE and put the vsf txuac would write; (caller From, tag)."""
        [invite_sent] = sent(uac_messages, "INVITE")
        caller_from = invite_sent.headers.get("From")
        tag = caller_from.split(";tag=")[1]
        invite = received(uas_messages)[0]
        self.assertEqual(invite.method, "INVITE")
        self.assertEqual(invite.headers.get("From"), f"{ANONYMOUS};tag={tag}")
        vsf = encode_restore(bare_uri(caller_from), ANONYMOUS_URI, PASSWORD)
        self.assertEqual(invite.headers.get("Record-Route"), f"<sip:{HOST}:{self.port};lr;ftag={tag};vsf={vsf}>")
        return caller_from, tag


class KamailioToTxuacTests(KamailioHandoverCase):
    @defer.inlineCallbacks
    def test_caller_bye_restored_by_txuac(self):
        uac_messages, uas_messages = yield self.handover_call("uac_call_handover.xml", "uas_call.xml")
        caller_from, tag = self.check_invite(uac_messages, uas_messages)
        [bye_sent] = sent(uac_messages, "BYE")
        self.assertIn(";vsf=", bye_sent.headers.get("Route"))
        self.assertEqual(bye_sent.headers.get("From"), caller_from)
        requests = received(uas_messages)
        self.assertEqual([m.method for m in requests], ["INVITE", "ACK", "BYE"])
        bye = requests[2]
        # Downstream: the caller's URI turned into the anonymous one (display as sent).
        self.assertEqual(bye.headers.get("From"), f"sipp <{ANONYMOUS_URI}>;tag={tag}")
        self.assertNotIn("Route", bye.headers)
        self.assertEqual((bye.top_via.host, bye.top_via.port), (HOST, self.port))
        replies = received(uac_messages)
        self.assertEqual(replies[-1].status, 200)
        self.assertEqual(replies[-1].headers.get("CSeq"), "2 BYE")
        self.assertEqual(replies[-1].headers.get("From"), caller_from)
        self.assertEqual(self.proxy.script_failures, 0)

    @defer.inlineCallbacks
    def test_callee_bye_restored_by_txuac(self):
        uac_messages, uas_messages = yield self.handover_call("uac_callee_bye.xml", "uas_bye_handover.xml")
        caller_from, tag = self.check_invite(uac_messages, uas_messages)
        [bye_sent] = sent(uas_messages, "BYE")
        self.assertEqual(bye_sent.headers.get("To"), f"{ANONYMOUS};tag={tag}")
        self.assertIn(";vsf=", bye_sent.headers.get("Route"))
        # Upstream: the anonymous URI in To turned back into the caller's (display as sent).
        [bye] = [m for m in received(uac_messages) if getattr(m, "method", None) == "BYE"]
        self.assertEqual(bye.headers.get("To"), f"Anonymous <{bare_uri(caller_from)}>;tag={tag}")
        self.assertNotIn("Route", bye.headers)
        # The caller's 200 reaches the callee with the To the callee sent.
        [ok] = [m for m in received(uas_messages) if getattr(m, "status", None) == 200]
        self.assertEqual(ok.headers.get("To"), f"{ANONYMOUS};tag={tag}")
        self.assertEqual(self.proxy.script_failures, 0)


class OtherPasswordTests(KamailioHandoverCase):
    """txuac with a restore_passwd other than Kamailio's cannot decode its vsf: the callee
    does not get the anonymous URI (the caller's own, or garbage)."""

    routing = {"restore_mode": "auto", "restore_passwd": "not-" + PASSWORD}

    @defer.inlineCallbacks
    def test_caller_bye_not_restored(self):
        uac_messages, uas_messages = yield self.handover_call("uac_call_handover.xml", "uas_call.xml")
        caller_from, tag = self.check_invite(uac_messages, uas_messages)
        bye = received(uas_messages)[2]
        self.assertEqual(bye.method, "BYE")
        self.assertNotIn(ANONYMOUS_URI, bye.headers.get("From"))
