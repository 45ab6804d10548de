"""uac_auth against a real trunk: SIPp caller -> txuac -> Kamailio trunk -> SIPp callee.

The trunk (tests/support/kamailio-trunk.cfg) challenges the INVITE with 407; txuac's
failure route answers it with ``uac.uac_auth()`` and ``[uac] credential`` and relays a
new branch; the call completes. The trunk then checks every later request of the
caller's side as the dialog's UAS would (a CSeq not above the last one gets 500, an ACK
without its INVITE's number is dropped): the ACK, a re-INVITE and the BYE must be
accepted, which they are only because txuac raises their CSeq by one (Kamailio's uac
module leaves them one short without the dialog module's track_cseq_updates).
"""

from __future__ import annotations

from twisted.internet import defer

from tests.support.accounts import make_row
from tests.support.kamailio import TRUNK_CONFIG, KamailioRegistrar
from tests.support.peers import free_port
from tests.support.sipp import HOST, sipp_messages, until
from tests.support.sipp_proxy import ProxyInteropCase
from tests.support.stores import sqlite_uacreg

TRUNK_SCRIPT = '''
from txuac.routing.script import failure_route, request_route

TRUNK = "sip:{trunk}"


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.to is not None and msg.to.tag is not None:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        tm.t_relay()
        return
    rr.record_route()
    tm.t_on_failure("TRUNKAUTH")
    msg.headers.prepend("Route", "<" + TRUNK + ";lr>")
    tm.t_relay()


@failure_route("TRUNKAUTH")
def trunk_auth(msg, uac, tm, rr, dialog, sl):
    if tm.t_is_canceled() > 0:
        return
    if tm.t_check_status("401|407") > 0 and uac.uac_auth() > 0:
        tm.t_relay()
'''

REALM = "trunk.example"


class TrunkAuthInteropTests(ProxyInteropCase):
    timeout = 90

    def setUp(self):
        self.uas_port = free_port()
        self.trunk = KamailioRegistrar(self, realm=REALM, config=TRUNK_CONFIG,
                                       defines={"UAS": f'"sip:{HOST}:{self.uas_port}"'})
        self.script = TRUNK_SCRIPT.format(trunk=f"{HOST}:{self.trunk.port}")
        self.uac = {"credential": [f"trunkuser:{REALM}:{self.trunk.password_for('trunkuser')}"]}
        super().setUp()

    def trunk_log(self, marker: str) -> list[str]:
        return [line for line in self.trunk.script_log() if marker in line]

    @defer.inlineCallbacks
    def test_challenged_call_completes_with_consistent_cseq(self):
        uac_messages, uas_messages, _ = yield self.call("uac_reinvite.xml", "uas_reinvite.xml",
                                                        uas_port=self.uas_port)
        # The trunk challenged once and accepted the answer; it refused no CSeq.
        self.assertEqual(len(self.trunk_log("auth INVITE no credentials")), 1, self.trunk.explain())
        accepted = self.trunk_log("auth INVITE user=trunkuser")
        self.assertEqual(len(accepted), 1, self.trunk.explain())
        self.assertIn("cseq=2 rc=1", accepted[0])
        self.assertEqual(self.trunk_log("CSeq refused"), [], self.trunk.explain())
        # The callee saw the dialog one CSeq ahead of the caller, consistently.
        received = [m for _, way, m in sipp_messages(uas_messages) if way == "received"]
        self.assertEqual([m.headers.get("CSeq") for m in received],
                         ["2 INVITE", "2 ACK", "3 INVITE", "3 ACK", "4 BYE"])
        self.assertNotIn("Proxy-Authorization", received[0].headers)  # consumed by the trunk
        # The caller saw its own numbering on every reply, and no challenge.
        replies = [m for _, way, m in sipp_messages(uac_messages) if way == "received"]
        self.assertNotIn(407, [r.status for r in replies])
        finals = [(r.status, r.headers.get("CSeq")) for r in replies if r.status >= 200]
        self.assertEqual(finals, [(200, "1 INVITE"), (200, "2 INVITE"), (200, "3 BYE")])
        self.assertEqual(self.proxy.script_failures, 0)


ACCOUNT_SCRIPT = TRUNK_SCRIPT.replace(
    '''    msg.headers.prepend("Route", "<" + TRUNK + ";lr>")
''', '''    if uac.uac_reg_request_to("100", 1) < 0:  # the uacreg account whose l_username is 100
        sl.sl_send_reply(404, "No account")
        return
''')


class AccountTrunkInteropTests(TrunkAuthInteropTests):
    """The same call placed as a uacreg account: uac_reg_request_to sets the Request-URI to
    the account's AOR, the destination to its auth_proxy (the trunk) and the credentials
    uac_auth answers the 407 with; no [uac] credential."""

    @defer.inlineCallbacks
    def setUp(self):
        self.uas_port = free_port()
        self.trunk = KamailioRegistrar(self, realm=REALM, config=TRUNK_CONFIG,
                                       defines={"UAS": f'"sip:{HOST}:{self.uas_port}"'})
        self.script = ACCOUNT_SCRIPT
        # Disabled (flags 1): the trunk takes no REGISTER, the account only places calls.
        row = make_row("acc1", l_username="100", r_username="trunkuser", r_domain=REALM, realm="",
                       auth_username="trunkuser", auth_password=self.trunk.password_for("trunkuser"),
                       auth_proxy=f"sip:{HOST}:{self.trunk.port}", flags=1)
        database = yield sqlite_uacreg(self, [row])
        self.uac = {"reg_db_url": f"sqlite:///{database}", "reg_contact_addr": f"{HOST}:5060"}
        ProxyInteropCase.setUp(self)
        loaded = yield until(lambda: bool(self.service.registrant.records), 10)
        self.assertTrue(loaded, "the uacreg account was not loaded")

    @defer.inlineCallbacks
    def test_challenged_call_completes_with_consistent_cseq(self):
        yield super().test_challenged_call_completes_with_consistent_cseq()
        [invite] = [line for line in self.trunk_log("request INVITE") if line.rstrip().endswith("cseq=1")]
        self.assertIn(f"INVITE sip:trunkuser@{REALM} ", invite)  # the account's AOR as Request-URI
