"""The status page: its model with plain records and explicit ``now`` (queries, totals,
registrars, the chart's ring, events), and its pages over real HTTP on loopback against
a started UACService (HTML without JavaScript, JSON endpoints, access rules)."""

from __future__ import annotations

import json
import re
from collections import Counter

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web import client
from twisted.web.http_headers import Headers

from tests.support.accounts import uacreg_rows
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_until
from tests.support.stores import sqlite_uacreg
from txuac.admin import status_model
from txuac.admin.status_model import AccountQuery, StatusTracker, select_accounts
from txuac.admin.status_page import bring_up_text
from txuac.admin.uac_rpc import MASK
from txuac.registrant.record import Flag, State, record_from_row
from txuac.registrant.service import RegistrationEvent
from txuac.registrant.settings import RegistrantSettings

TOKEN = "a-token-of-32-characters-or-so!!"
PASSWORD_PREFIX = "very-secret-"


class FakeRegistrant:
    def __init__(self, records):
        self.records = {record.l_uuid: record for record in records}
        self.observers = []
        self.active = True
        self.pinger = None
        self.settings = RegistrantSettings(reg_contact_addr="192.0.2.10:5060")

    def add_observer(self, observer):
        self.observers.append(observer)


class FakeStack:
    def __init__(self):
        self.server_outcomes = Counter()


class FakeUAC:
    def __init__(self, records):
        self.registrant = FakeRegistrant(records)
        self.stack = FakeStack()
        self.proxy = None


def records(count: int, auth_proxy: str = "sip:reg.example.com", start: int = 0):
    return [record_from_row(row, 0.0) for row in uacreg_rows(count, auth_proxy, start=start)]


def set_state(record, state: State, now: float = 100.0, error: str | None = None) -> None:
    """Give ``record`` the flags and times of ``state`` at ``now``."""
    record.flags = {State.DISABLED: Flag.DISABLED, State.REGISTERING: Flag.ONGOING,
                    State.ONLINE: Flag.ONLINE}.get(state, 0)
    record.expires_at = now + 300 if state is State.ONLINE else None
    record.last_failure = error if state is State.FAILED else None


class AccountQueryTests(TestCase):
    def test_arguments_fall_back_to_defaults(self):
        query = AccountQuery.from_args({b"state": [b"nonsense"], b"sort": [b"auth_password"], b"page": [b"-3"],
                                        b"size": [b"100000"], b"search": [b"  x" * 100]})
        self.assertEqual((query.state, query.sort, query.page, query.page_size), ("", "l_uuid", 1, 500))
        self.assertEqual(len(query.search), status_model.MAX_SEARCH)
        self.assertEqual(AccountQuery.from_args({b"page": [b"two"]}).page, 1)

    def test_arguments_round_trip_leaving_defaults_out(self):
        self.assertEqual(AccountQuery().arguments(), "")
        query = AccountQuery(state="failed", search="a b&c", sort="state", descending=True, page=3, page_size=25)
        self.assertEqual(query.arguments(), "state=failed&search=a+b%26c&sort=state&order=desc&page=3&size=25")
        args = {name.encode(): [value.encode()] for name, value in
                (pair.split("=") for pair in query.arguments().replace("+", " ").replace("%26", "&").split("&")
                 if "=" in pair)}
        self.assertEqual(AccountQuery.from_args(args).arguments(sort="l_uuid", page=1),
                         "state=failed&search=a+b&order=desc&size=25")


class SelectAccountsTests(TestCase):
    def setUp(self):
        self.records = records(30)
        for record in self.records[:5]:
            set_state(record, State.FAILED, error="403 Forbidden")
        for record in self.records[5:25]:
            set_state(record, State.ONLINE)
        set_state(self.records[25], State.DISABLED)

    def select(self, **fields):
        return select_accounts(self.records, 100.0, AccountQuery(**fields))

    def test_filter_by_state(self):
        page = self.select(state="failed")
        self.assertEqual(page.matched, 5)
        self.assertEqual([r.l_uuid for r in page.records], [f"uuid{n:05d}" for n in range(5)])
        self.assertEqual(self.select(state="disabled").matched, 1)
        self.assertEqual(self.select(state="waiting").matched, 4)

    def test_search_l_uuid_user_or_domain_in_any_case(self):
        self.assertEqual([r.l_uuid for r in self.select(search="UUID00012").records], ["uuid00012"])
        self.assertEqual([r.l_uuid for r in self.select(search="acct0002").records],
                         [f"uuid{n:05d}" for n in range(20, 30)])
        self.assertEqual(self.select(search="local.EXAMPLE").matched, 30)
        self.assertEqual(self.select(search="nobody").matched, 0)
        self.assertEqual(self.select(search="acct0000", state="failed").matched, 5)

    def test_sort_and_page(self):
        self.records[3].auth_proxy = "sip:another.example.com"
        page = self.select(sort="registrar", page_size=10)
        self.assertEqual(page.records[0].l_uuid, "uuid00003")
        page = self.select(sort="l_uuid", descending=True, page=2, page_size=10)
        self.assertEqual((page.matched, page.pages), (30, 3))
        self.assertEqual([r.l_uuid for r in page.records], [f"uuid{n:05d}" for n in range(19, 9, -1)])
        page = self.select(sort="state", page_size=5)
        self.assertEqual([r.state(100.0).value for r in page.records], ["disabled"] + ["failed"] * 4)
        page = self.select(sort="last_error", descending=True, page_size=5)
        self.assertEqual([r.last_failure for r in page.records], ["403 Forbidden"] * 5)
        self.assertEqual(self.select(page=7, page_size=10).records, [])


class StatusTrackerTests(TestCase):
    def setUp(self):
        self.uac = FakeUAC(records(4) + records(2, "sip:other.example.com", start=4))
        self.tracker = StatusTracker(self.uac, samples=3)
        self.records = list(self.uac.registrant.records.values())

    def event(self, l_uuid, state, previous, at, reason="", status=None, latency=None):
        self.tracker.observe(RegistrationEvent(l_uuid, state, previous, reason, status, at, latency))

    def test_totals_and_registrars_most_failing_first(self):
        set_state(self.records[0], State.ONLINE)
        set_state(self.records[4], State.FAILED, error="403 Forbidden")
        set_state(self.records[5], State.DISABLED)
        self.event("uuid00004", State.FAILED, State.REGISTERING, 90.0, "403 Forbidden", 403, 0.012)
        self.event("uuid00000", State.ONLINE, State.REGISTERING, 95.0, "registered", 200, 0.0034)
        summary = self.tracker.summary(100.0)
        self.assertEqual(summary["accounts"], 6)
        self.assertEqual(summary["totals"], {"online": 1, "registering": 0, "waiting": 3, "failed": 1,
                                             "disabled": 1, "unregistered": 0})
        self.assertEqual(summary["bring_up"]["online"], 1)
        self.assertEqual(summary["bring_up"]["expected"], 5)
        self.assertEqual([(r["registrar"], r["accounts"], r["online"], r["failed"], r["last_error"], r["last_rtt_ms"])
                          for r in summary["registrars"]],
                         [("sip:other.example.com", 2, 0, 1, "403 Forbidden", 12.0),
                          ("sip:reg.example.com", 4, 1, 0, None, 3.4)])
        self.assertEqual(summary["registrars"][0]["ping"], "off")
        self.assertIsNone(summary["proxy"])
        json.dumps(summary)  # the JSON endpoint's body

    def test_the_ring_keeps_a_fixed_number_of_samples(self):
        for second in range(5):
            self.tracker.sample(float(second * 10))
        # The last three samples, then now.
        self.assertEqual([point[0] for point in self.tracker.summary(50.0)["history"]], [20.0, 30.0, 40.0, 50.0])

    def test_bring_up_rate_and_time_to_go(self):
        self.tracker.sample(0.0)
        for number in range(2):
            set_state(self.records[number], State.ONLINE, now=10.0)
            self.event(f"uuid{number:05d}", State.ONLINE, State.REGISTERING, 9.0, "registered", 200, 0.01)
        set_state(self.records[2], State.FAILED, error="403 Forbidden")
        bring_up = self.tracker.summary(10.0)["bring_up"]
        self.assertEqual((bring_up["online"], bring_up["expected"], bring_up["rate"], bring_up["eta"]),
                         (2, 6, 0.2, 15.0))  # the 3 waiting; the failed one waits for its retry
        self.assertEqual(bring_up_text(bring_up), "2 of 6 online (1 failed, 0.2/s, about 15 s to go)")
        for record in self.records[3:]:
            set_state(record, State.FAILED, error="403 Forbidden")
        bring_up = self.tracker.summary(10.0)["bring_up"]
        self.assertIsNone(bring_up["eta"])
        self.assertEqual(bring_up_text(bring_up), "2 of 6 online (4 failed, 0.2/s)")

    def test_events_of_an_account_newest_first_and_bounded(self):
        tracker = StatusTracker(self.uac, events=3)
        for at in range(4):
            tracker.observe(RegistrationEvent("uuid00001", State.FAILED, State.REGISTERING, f"try {at}", None,
                                              float(at)))
        tracker.observe(RegistrationEvent("uuid00002", State.ONLINE, State.REGISTERING, "registered", 200, 9.0, 0.5))
        self.assertEqual([e["reason"] for e in tracker.events_of("uuid00001")], ["try 3", "try 2"])
        self.assertEqual(tracker.events_of("uuid00002")[0]["latency_ms"], 500.0)

    def test_registrars_kept_are_bounded(self):
        self.patch(status_model, "MAX_REGISTRARS", 1)
        self.event("uuid00000", State.FAILED, State.REGISTERING, 1.0, "timeout")
        self.event("uuid00004", State.FAILED, State.REGISTERING, 1.0, "timeout")
        self.assertEqual(list(self.tracker.last_error), ["sip:reg.example.com"])
        self.assertEqual(self.tracker.registrars_dropped, 1)

    def test_account_detail_masks_secrets(self):
        account = self.tracker.account("uuid00001", 100.0)
        self.assertEqual(account["record"]["auth_password"], MASK)
        self.assertEqual(account["registrar"], "sip:reg.example.com")
        self.assertEqual(account["record"]["contact_addr"], "192.0.2.10:5060")  # empty in the row: reg_contact_addr
        self.assertIsNone(self.tracker.account("nobody", 100.0))

    def test_without_registration(self):
        uac = FakeUAC([])
        uac.registrant = None
        tracker = StatusTracker(uac)
        tracker.sample(0.0)
        summary = tracker.summary(1.0)
        self.assertEqual((summary["registrant"], summary["accounts"], summary["registrars"]), (False, 0, []))
        self.assertIsNone(tracker.account("u", 1.0))
        from txuac.admin.status_page import StatusPage

        page = StatusPage(tracker, task.Clock())
        reply = page.answer([], {})
        self.assertEqual(reply.status, 200)
        self.assertIn(b"Registration is not enabled: set [uac] reg_db_url.", reply.body)
        self.assertIn(b"0 accounts match; page 1 of 1", reply.body)

    def test_proxy_section(self):
        class Proxy:
            dialogs = [1, 2]
            script_failures = 3

        self.uac.proxy = type("Runner", (), {"proxy": Proxy()})()
        self.uac.stack.server_outcomes.update({("INVITE", "2xx"): 4, ("INVITE", "4xx"): 1, ("BYE", "2xx"): 9})
        self.tracker.sample(0.0)
        self.uac.stack.server_outcomes[("INVITE", "2xx")] += 10
        proxy = self.tracker.summary(5.0)["proxy"]
        self.assertEqual(proxy["calls_per_second"], 2.0)
        self.assertEqual((proxy["active_dialogs"], proxy["script_failures"]), (2, 3))
        self.assertEqual(proxy["invite_responses"], {"1xx": 0, "2xx": 14, "3xx": 0, "4xx": 1, "5xx": 0, "6xx": 0})


class StatusServerMixin:
    """A started UACService with its admin server on a free loopback port; the accounts
    point at a loopback port where nothing answers."""

    token: str | None = None
    accounts = 120

    @defer.inlineCallbacks
    def setUp(self):
        proxy = f"sip:127.0.0.1:{free_port()}"
        rows = uacreg_rows(self.accounts, proxy, password_prefix=PASSWORD_PREFIX)
        rows[7]["flags"] = 1
        rows[8]["l_uuid"] = "uuid&00008"  # '&' is allowed in a user part
        path = yield sqlite_uacreg(self, rows)
        sip_port = free_port()
        rpc = {"listen": "tcp:0:interface=127.0.0.1"}
        if self.token:
            rpc["token"] = self.token
        self.service = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"], "timer_t1": 20},
            "rpc": rpc,
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}",
                    "reg_retry_interval": 60},
        })
        yield wait_until(lambda: len(self.service.registrant.records) == self.accounts)
        # A peer's reason phrase is shown as the last error: markup in it stays text.
        self.service.registrant.records["uuid00009"].last_failure = "<script>alert(1)</script>"

    @defer.inlineCallbacks
    def get(self, path: bytes, method: bytes = b"GET", headers: dict | None = None, body: bytes | None = None):
        """(status, headers, body)."""
        port = self.service.rpc.port
        sent = Headers({b"Host": [b"127.0.0.1:%d" % port]})
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name, [value])
        producer = client.FileBodyProducer(__import__("io").BytesIO(body)) if body is not None else None
        response = yield client.Agent(reactor).request(method, b"http://127.0.0.1:%d%s" % (port, path), sent, producer)
        data = yield client.readBody(response)
        return response.code, response.headers, data


class StatusPageHTTPTests(StatusServerMixin, TestCase):
    """The pages over real HTTP."""

    @defer.inlineCallbacks
    def test_overview_without_javascript(self):
        status, headers, data = yield self.get(b"/status")
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertIn(b"script-src 'self'", headers.getRawHeaders(b"content-security-policy")[0])
        self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        page = data.decode("utf-8")
        self.assertIn(f'<td data-total="all">{self.accounts}</td>', page)
        self.assertIn('<td data-total="disabled">1</td>', page)
        self.assertIn(f"{self.accounts} accounts match; page 1 of 3", page)
        self.assertIn('<th scope="row"><a href="/status/account?l_uuid=uuid00000">uuid00000</a></th>', page)
        self.assertIn('<label for="search">', page)
        self.assertIn('<th scope="col" aria-sort="ascending">', page)
        self.assertNotIn("http://", page.replace("http://127.0.0.1", ""))  # nothing external
        self.assertIn('<a rel="next" href="/status?page=2">Next page</a>', page)
        self.assertNotIn(PASSWORD_PREFIX, page)

    @defer.inlineCallbacks
    def test_paging_sorting_filtering_and_search_by_links(self):
        _, _, data = yield self.get(b"/status?page=2&size=25&sort=l_uuid&order=desc")
        page = data.decode()
        uuids = re.findall(r'l_uuid=(uuid\d+)">', page)
        self.assertEqual(uuids, [f"uuid{n:05d}" for n in range(94, 69, -1)])
        self.assertIn('<a rel="prev" href="/status?order=desc&amp;size=25">Previous page</a>', page)
        self.assertIn('<a rel="next" href="/status?order=desc&amp;page=3&amp;size=25">Next page</a>', page)
        _, _, data = yield self.get(b"/status?state=disabled")
        self.assertEqual(re.findall(r'l_uuid=(uuid\d+)">', data.decode()), ["uuid00007"])
        self.assertIn(b'<option selected>disabled</option>', data)
        _, _, data = yield self.get(b"/status?search=ACCT0011")
        self.assertEqual(re.findall(r'l_uuid=(uuid\d+)">', data.decode()), [f"uuid{n:05d}" for n in range(110, 120)])
        self.assertIn(b'value="ACCT0011"', data)

    @defer.inlineCallbacks
    def test_json_endpoints(self):
        status, headers, data = yield self.get(b"/status/api/accounts?state=disabled")
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        answer = json.loads(data)
        self.assertEqual((answer["matched"], answer["pages"], answer["query"]), (1, 1, "state=disabled"))
        self.assertEqual(answer["accounts"][0]["l_uuid"], "uuid00007")
        self.assertEqual(answer["accounts"][0]["state"], "disabled")
        summary = json.loads((yield self.get(b"/status/api/summary"))[2])
        self.assertEqual(summary["accounts"], self.accounts)
        self.assertEqual(summary["totals"]["disabled"], 1)
        self.assertEqual(len(summary["history"]), 2)  # sampled when the server started, and now
        account = json.loads((yield self.get(b"/status/api/account?l_uuid=uuid00003"))[2])
        self.assertEqual(account["record"]["auth_password"], MASK)
        self.assertEqual((yield self.get(b"/status/api/account?l_uuid=nobody"))[0], 404)

    @defer.inlineCallbacks
    def test_account_page_masks_secrets_and_escapes(self):
        status, _, data = yield self.get(b"/status/account?l_uuid=uuid00009")
        self.assertEqual(status, 200)
        page = data.decode()
        self.assertIn(f'<td data-field="auth_password">{MASK}</td>', page)
        self.assertNotIn(PASSWORD_PREFIX, page)
        self.assertNotIn("<script>alert", page)
        self.assertIn('<td data-field="last_error">&lt;script&gt;alert(1)&lt;/script&gt;</td>', page)
        _, _, data = yield self.get(b"/status?search=uuid00009")
        self.assertIn(b"<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>", data)
        _, _, data = yield self.get(b"/status?search=uuid%2600008")
        self.assertIn(b'<a href="/status/account?l_uuid=uuid%2600008">uuid&amp;00008</a>', data)
        self.assertIn(b'value="uuid&amp;00008"', data)
        _, _, data = yield self.get(b"/status/account?l_uuid=uuid%2600008")
        self.assertIn(b'data-l-uuid="uuid&amp;00008"', data)
        self.assertIn('<button type="button" data-method="uac.reg_disable">Disable</button>', page)
        self.assertIn('<input type="password" id="token"', page)
        self.assertEqual((yield self.get(b"/status/account?l_uuid=nobody"))[0], 404)

    @defer.inlineCallbacks
    def test_static_files_and_unknown_paths(self):
        status, headers, data = yield self.get(b"/status/static/status.js")
        self.assertEqual((status, headers.getRawHeaders(b"content-type")), (200, [b"text/javascript; charset=utf-8"]))
        self.assertIn(b'sessionStorage', data)
        status, headers, _ = yield self.get(b"/status/static/status.css")
        self.assertEqual((status, headers.getRawHeaders(b"content-type")), (200, [b"text/css; charset=utf-8"]))
        for path in (b"/status/static/../web.py", b"/status/static/%2e%2e/web.py", b"/status/static/", b"/status/x"):
            self.assertEqual((yield self.get(path))[0], 404, path)

    @defer.inlineCallbacks
    def test_read_only_methods_and_root(self):
        status, headers, _ = yield self.get(b"/status", method=b"POST", body=b"x")
        self.assertEqual((status, headers.getRawHeaders(b"allow")), (405, [b"GET, HEAD"]))
        status, _, data = yield self.get(b"/status", method=b"HEAD")
        self.assertEqual((status, data), (200, b""))
        status, headers, _ = yield self.get(b"/")
        self.assertEqual((status, headers.getRawHeaders(b"location")), (303, [b"/status"]))

    @defer.inlineCallbacks
    def test_cross_site_requests_are_refused(self):
        status, _, _ = yield self.get(b"/status", headers={b"Host": b"rebind.evil.example"})
        self.assertEqual(status, 403)
        status, _, _ = yield self.get(b"/status/api/summary", headers={b"Origin": b"http://evil.example"})
        self.assertEqual(status, 403)


class StatusPageWithTokenTests(StatusServerMixin, TestCase):
    """With [rpc] token: the page's GETs from loopback need none; /RPC and /metrics still do."""

    token = TOKEN
    accounts = 10

    @defer.inlineCallbacks
    def test_read_only_views_need_no_token_on_loopback(self):
        for path in (b"/status", b"/status/api/summary", b"/status/account?l_uuid=uuid00001"):
            self.assertEqual((yield self.get(path))[0], 200, path)
        status, _, _ = yield self.get(b"/status", headers={b"Host": b"rebind.evil.example"})
        self.assertEqual(status, 403)

    @defer.inlineCallbacks
    def test_rpc_and_metrics_still_need_the_token(self):
        body = b'{"jsonrpc": "2.0", "method": "uac.reg_disable", "params": ["l_uuid", "uuid00001"], "id": 1}'
        status, _, _ = yield self.get(b"/RPC", method=b"POST", body=body,
                                      headers={b"Content-Type": b"application/json"})
        self.assertEqual(status, 401)
        self.assertEqual((yield self.get(b"/metrics"))[0], 401)
        self.assertFalse(self.service.registrant.records["uuid00001"].has(Flag.DISABLED))
        status, _, _ = yield self.get(b"/RPC", method=b"POST", body=body,
                                      headers={b"Content-Type": b"application/json",
                                               b"Authorization": b"Bearer " + TOKEN.encode()})
        self.assertEqual(status, 200)
        self.assertTrue(self.service.registrant.records["uuid00001"].has(Flag.DISABLED))


class RemoteStatusReadTests(TestCase):
    """With [rpc] token, from another machine: the status page takes HTTP Basic with the
    token as the password (a browser prompts for it); POST /RPC does not."""

    def setUp(self):
        from twisted.internet.task import Clock
        from twisted.web.resource import Resource

        from txuac.admin.web import AdminSite
        from txuac.config import RPCSettings

        self.site = AdminSite(Resource(), RPCSettings(token=TOKEN, allowed_hosts=("admin.example.net",)), Clock())

    def refusal(self, method: bytes, path: bytes, authorization: bytes | None = None):
        from twisted.internet.address import IPv4Address
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.method, request.path = method, path
        request.client = IPv4Address("TCP", "192.0.2.7", 4000)
        request.requestHeaders.setRawHeaders(b"host", [b"admin.example.net"])
        if authorization is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [authorization])
        return self.site._refusal(request)

    def basic(self, password: str, user: str = "operator") -> bytes:
        import base64

        return b"Basic " + base64.b64encode(f"{user}:{password}".encode())

    def test_status_asks_for_basic_credentials(self):
        refusal = self.refusal(b"GET", b"/status")
        self.assertEqual(refusal.status, 401)
        self.assertEqual(refusal.headers[b"WWW-Authenticate"], b'Basic realm="txuac status", charset="UTF-8"')

    def test_status_read_with_the_token_as_basic_password(self):
        self.assertIsNone(self.refusal(b"GET", b"/status", self.basic(TOKEN)))
        self.assertIsNone(self.refusal(b"GET", b"/status/api/summary", self.basic(TOKEN, user="")))
        self.assertIsNone(self.refusal(b"GET", b"/status", b"Bearer " + TOKEN.encode()))

    def test_wrong_or_malformed_basic_is_refused(self):
        self.assertEqual(self.refusal(b"GET", b"/status", self.basic("wrong")).status, 401)
        self.assertEqual(self.refusal(b"GET", b"/status", b"Basic %%%not-base64").status, 401)
        self.assertEqual(self.refusal(b"GET", b"/status", b"Basic " + TOKEN.encode()).status, 401)

    def test_rpc_and_metrics_take_no_basic(self):
        refusal = self.refusal(b"POST", b"/RPC", self.basic(TOKEN))
        self.assertEqual(refusal.status, 401)
        self.assertEqual(refusal.headers[b"WWW-Authenticate"], b'Bearer realm="txuac"')
        self.assertEqual(self.refusal(b"GET", b"/metrics", self.basic(TOKEN)).status, 401)
        self.assertIsNone(self.refusal(b"POST", b"/RPC", b"Bearer " + TOKEN.encode()))


class LocalStatusReadTests(TestCase):
    """Which requests pass without the token: GET/HEAD of /status... from loopback or a UNIX socket."""

    def request(self, method: bytes, path: bytes, peer):
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.method = method
        request.path = path
        request.client = peer
        return request

    def test_rules(self):
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        from txuac.admin.web import local_status_read

        loopback = IPv4Address("TCP", "127.0.0.1", 4000)
        self.assertTrue(local_status_read(self.request(b"GET", b"/status", loopback)))
        self.assertTrue(local_status_read(self.request(b"HEAD", b"/status/api/summary", loopback)))
        self.assertTrue(local_status_read(self.request(b"GET", b"/status", IPv6Address("TCP", "::1", 4000))))
        self.assertTrue(local_status_read(self.request(b"GET", b"/status", UNIXAddress(b"/run/txuac.sock"))))
        self.assertFalse(local_status_read(self.request(b"GET", b"/status", IPv4Address("TCP", "192.0.2.7", 4000))))
        self.assertFalse(local_status_read(self.request(b"POST", b"/status", loopback)))
        self.assertFalse(local_status_read(self.request(b"GET", b"/metrics", loopback)))
        self.assertFalse(local_status_read(self.request(b"GET", b"/statusx", loopback)))
        self.assertFalse(local_status_read(self.request(b"POST", b"/RPC", loopback)))
