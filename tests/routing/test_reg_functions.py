"""The uac namespace's registration functions in the proxy (fake stack and clock, a
fake registrant with RegistrantService's lookup API): dst handling, return codes,
uac_reg_request_to addressing the request and feeding uac_auth."""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import capturedLogs

from tests.support.proxy_harness import CALLEE, ProxyTestCase, request
from tests.support.stack_harness import PEER
from tests.support.trunk_auth import REALM, auth_params, challenge, digest_response
from txuac.errors import ScriptArgumentError, SIPParseError
from txuac.routing.proxy import ServiceParts
from txuac.routing.reg_functions import RequestTargets
from txuac.sip import parse_uri

REG_SCRIPT = '''
from txuac.routing.script import failure_route, request_route

SEEN = []


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    user = msg.uri.user
    if user == "lookup":
        SEEN.append(uac.uac_reg_lookup("acc1", "$ru"))
    elif user == "lookup-du":
        SEEN.append((uac.uac_reg_lookup("acc1", "$du"), tm.du, tm.isdsturiset()))
    elif user == "lookup-unknown":
        SEEN.append(uac.uac_reg_lookup("nobody", "$ru"))
    elif user == "lookup-callable":
        SEEN.append(uac.uac_reg_lookup_uri("sip:100@pbx.local", SEEN.append))
    elif user == "lookup-bad-uri":
        SEEN.append(uac.uac_reg_lookup_uri("not a uri", "$ru"))
    elif user == "status":
        SEEN.append((uac.uac_reg_status("acc1"), uac.uac_reg_status("nobody")))
    elif user == "bad-dst":
        uac.uac_reg_lookup("acc1", "$avp(x)")  # ScriptArgumentError: 500
    elif user == "request-to":
        SEEN.append(uac.uac_reg_request_to("100", 1))
        tm.t_on_failure("AUTH")
    elif user == "request-to-mode":
        SEEN.append(uac.uac_reg_request_to("100", 4))
    elif user == "enable-disable":
        SEEN.append((uac.uac_reg_disable("l_username", "100"), uac.uac_reg_enable("l_uuid", "acc1"),
                     uac.uac_reg_enable("l_uuid", "nobody"), uac.uac_reg_disable("realm", "x")))
    elif user == "refresh":
        SEEN.append((uac.uac_reg_refresh("acc1"), uac.uac_reg_refresh("nobody"), uac.uac_reg_refresh("later")))
    tm.t_relay()


@failure_route("AUTH")
def auth(msg, uac, tm, rr, dialog, sl):
    if uac.uac_auth() > 0:
        tm.t_relay()
'''

ACCOUNT = {"ruri": "sip:remote-100@provider.example", "duri": f"sip:{CALLEE[0]}:{CALLEE[1]}",
           "realm": "", "username": "auth-100", "password": "acc-secret", "ha1": False}


class FakeRegistrant:
    """RegistrantService's lookups and operations for one account acc1 / l_username 100;
    ``calls`` records enable/disable/refresh, ``pending`` the refresh that answers later."""

    def __init__(self):
        self.calls = []
        self.pending = defer.Deferred()

    def enable(self, attribute, value):
        return self._operation("enable", attribute, value)

    def disable(self, attribute, value):
        return self._operation("disable", attribute, value)

    def _operation(self, name, attribute, value):
        if attribute not in ("l_uuid", "l_username", "r_username", "auth_username"):
            return -3
        self.calls.append((name, attribute, value))
        return 1 if (attribute, value) in (("l_uuid", "acc1"), ("l_username", "100")) else -2

    def refresh(self, l_uuid):
        self.calls.append(("refresh", l_uuid))
        if l_uuid == "later":
            return self.pending
        return defer.succeed(1 if l_uuid == "acc1" else -1)

    def lookup(self, l_uuid):
        return "sip:100@" + f"{CALLEE[0]}:{CALLEE[1]}" if l_uuid == "acc1" else None

    def lookup_uri(self, uri):
        parsed = parse_uri(uri)
        return "acc1" if parsed.user == "100" else None

    def status(self, l_uuid):
        return 1 if l_uuid == "acc1" else -1

    def request_to(self, user, mode=0):
        if user == "sip:bad":
            raise SIPParseError("bad")
        return dict(ACCOUNT) if user == ("100" if mode & 1 else "acc1") else None


class RegistrationFunctionTests(ProxyTestCase):
    script = REG_SCRIPT

    def setUp(self):
        self.registrant = FakeRegistrant()
        self.parts = ServiceParts(registrant=self.registrant)
        super().setUp()

    def seen(self):
        return self.proxy.routes.module.SEEN

    def test_enable_and_disable_call_the_registrant(self):
        self.receive(request(uri=f"sip:enable-disable@{CALLEE[0]}:{CALLEE[1]}"))
        # Kamailio's codes: 1, or -1 for an unknown account and for an attribute it does not filter on.
        self.assertEqual(self.seen(), [(1, 1, -1, -1)])
        self.assertEqual(self.registrant.calls, [("disable", "l_username", "100"), ("enable", "l_uuid", "acc1"),
                                                 ("enable", "l_uuid", "nobody")])

    def test_refresh_answers_with_the_store_or_once_the_read_started(self):
        with capturedLogs() as events:
            self.receive(request(uri=f"sip:refresh@{CALLEE[0]}:{CALLEE[1]}"))
            self.assertEqual(self.seen(), [(1, -1, 1)])
            self.registrant.pending.callback(-1)
        self.assertEqual(self.registrant.calls, [("refresh", "acc1"), ("refresh", "nobody"), ("refresh", "later")])
        late = [e for e in events if "no valid row" in e.get("log_format", "")]
        self.assertEqual([e["luuid"] for e in late], ["later"])

    def test_lookup_into_the_request_uri(self):
        self.receive(request(uri="sip:lookup@example.org"))
        [forwarded] = self.sent(CALLEE)
        self.assertEqual(str(forwarded.uri), f"sip:100@{CALLEE[0]}:{CALLEE[1]}")
        self.assertEqual(self.seen(), [1])

    def test_lookup_into_du_is_the_tm_namespace_du(self):
        self.receive(request(uri="sip:lookup-du@pbx.example.org"))
        [forwarded] = self.sent(CALLEE)
        self.assertEqual(str(forwarded.uri), "sip:lookup-du@pbx.example.org")
        self.assertEqual(self.seen(), [(1, f"sip:100@{CALLEE[0]}:{CALLEE[1]}", 1)])

    def test_lookup_unknown(self):
        self.receive(request(uri=f"sip:lookup-unknown@{CALLEE[0]}:{CALLEE[1]}"))
        self.assertEqual(self.seen(), [-1])

    def test_lookup_uri_into_a_callable_and_bad_uri(self):
        self.receive(request(uri=f"sip:lookup-callable@{CALLEE[0]}:{CALLEE[1]}"))
        self.receive(request(uri=f"sip:lookup-bad-uri@{CALLEE[0]}:{CALLEE[1]}", branch="z9hG4bKup2"))
        self.assertEqual(self.seen(), ["acc1", 1, -2])

    def test_status(self):
        self.receive(request(uri=f"sip:status@{CALLEE[0]}:{CALLEE[1]}"))
        self.assertEqual(self.seen(), [(1, -1)])

    def test_unknown_dst_is_a_script_error(self):
        self.receive(request(uri=f"sip:bad-dst@{CALLEE[0]}:{CALLEE[1]}"))
        self.assertEqual([m.status for m in self.sent(PEER)], [500])

    def test_unknown_dst_raises_a_script_argument_error(self):
        self.assertRaises(ScriptArgumentError, RequestTargets(None).store, "$avp(x)", "sip:x@y")

    def test_bad_mode(self):
        self.receive(request(uri=f"sip:request-to-mode@{CALLEE[0]}:{CALLEE[1]}"))
        self.assertEqual(self.seen(), [-1])

    def test_request_to_addresses_the_request_and_answers_the_challenge(self):
        # Sent to the account's auth_proxy with its remote AOR as Request-URI ...
        self.receive(request(uri="sip:request-to@elsewhere.example"))
        [first] = self.sent(CALLEE)
        self.assertEqual(str(first.uri), "sip:remote-100@provider.example")
        self.assertEqual(self.seen(), [1])
        # ... and its credentials answer the challenge (any realm: the record's is empty).
        self.answer(first, 407, to_tag="t407", extra=[challenge()])
        [second] = [m for m in self.sent(CALLEE) if m.method == "INVITE"]
        header = second.headers.get("Proxy-Authorization")
        params = auth_params(header)
        self.assertEqual((params["username"], params["realm"], params["uri"]),
                         ("auth-100", REALM, "sip:remote-100@provider.example"))
        self.assertEqual(params["response"], digest_response(header, "INVITE", "acc-secret", "auth-100"))


class WithoutRegistrantTests(ProxyTestCase):
    script = REG_SCRIPT

    def test_minus_one_and_one_warning(self):
        with capturedLogs() as events:
            self.receive(request(uri=f"sip:status@{CALLEE[0]}:{CALLEE[1]}"))
            self.receive(request(uri=f"sip:lookup@{CALLEE[0]}:{CALLEE[1]}", branch="z9hG4bKup2"))
        self.assertEqual(self.proxy.routes.module.SEEN, [(-1, -1), -1])
        self.receive(request(uri=f"sip:enable-disable@{CALLEE[0]}:{CALLEE[1]}", branch="z9hG4bKup3"))
        self.receive(request(uri=f"sip:refresh@{CALLEE[0]}:{CALLEE[1]}", branch="z9hG4bKup4"))
        self.assertEqual(self.proxy.routes.module.SEEN[2:], [(-1, -1, -1, -1), (-1, -1, -1)])
        warnings = [e for e in events if "reg_db_url" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
