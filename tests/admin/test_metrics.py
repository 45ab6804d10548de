"""Metrics of a running UACService, scraped and parsed as Prometheus would.

The registrations are real: accounts in an SQLite store register against a Kamailio
registrar on loopback, one with a wrong password, one towards a port where nobody
answers; the SIP stack gets a malformed datagram and an OPTIONS from a plain socket.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import uuid

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.twistd import options_request
from tests.support.stores import sqlite_uacreg
from txuac.admin import metrics as metrics_module
from txuac.admin.metrics import LATENCY_BUCKETS, Metrics
from txuac.admin.status_model import StatusTracker
from txuac.config import settings_from_dict
from txuac.net.handoff import Handoff
from txuac.registrant.health import State as PingState
from txuac.registrant.record import Flag, State, record_from_row
from txuac.registrant.service import RegistrationEvent
from txuac.service import UACService

REALM = "test.example"
NO_RPC = {"enabled": False}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scraped: dict, name: str, **labels) -> float:
    return scraped[(name, frozenset(labels.items()))]


def row(l_uuid: str, user: str, password: str, proxy: str, flags: int = 0) -> dict:
    return {
        "l_uuid": l_uuid, "l_username": user, "l_domain": "local.example", "r_username": user,
        "r_domain": REALM, "realm": REALM, "auth_username": user, "auth_password": password, "auth_ha1": "",
        "auth_proxy": proxy, "expires": 600, "flags": flags, "reg_delay": 0, "contact_addr": "", "socket": "",
        "contact_user": "",
    }


def sqlite_store(testcase, rows: list[dict]):
    """Deferred[str]: the path of a new SQLite uacreg table holding ``rows``."""
    return sqlite_uacreg(testcase, rows)


@defer.inlineCallbacks
def wait_until(predicate, timeout: float, explain=lambda: ""):
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not within {timeout} s: {explain()}")
        yield task.deferLater(reactor, 0.05, lambda: None)


def send_udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


class MetricsTestMixin:
    def start(self, document: dict) -> tuple[UACService, Metrics]:
        """A UACService with Metrics made before it starts (as the admin server does), started."""
        service = UACService(settings_from_dict(document), reactor)
        metrics = Metrics(service)
        service.startService()
        self.addCleanup(service.stopService)
        return service, metrics

    def scrape(self, metrics: Metrics) -> dict:
        return samples(metrics.render().decode("utf-8"))


class RegistrationMetricsTests(MetricsTestMixin, TestCase):
    """Accounts, outcomes, failures, latency and transactions after real registrations."""

    timeout = 60

    @defer.inlineCallbacks
    def test_registrations(self):
        registrar = KamailioRegistrar(self, rechallenge_wrong_password=True)
        host, port = registrar.address
        proxy = f"sip:{host}:{port}"
        silent = f"sip:127.0.0.1:{free_port()}"  # nothing listens there: the REGISTER times out
        rows = [row(f"good{n}", f"good{n}", registrar.password_for(f"good{n}"), proxy) for n in range(3)]
        rows.append(row("wrong", "wrong", "not-the-password", proxy))
        rows.append(row("silent", "silent", "whatever", silent))
        rows.append(row("off", "off", registrar.password_for("off"), proxy, flags=1))
        path = yield sqlite_store(self, rows)
        sip_port = free_port()
        service, metrics = self.start({
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"], "timer_t1": 50, "timer_t2": 400},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}",
                    "reg_retry_interval": 300},
            "rpc": NO_RPC,
        })
        registrant = service.registrant
        self.assertIn(metrics.registrations.observe, registrant.observers)

        def settled():
            states = {l_uuid: r.state(registrant.now()) for l_uuid, r in registrant.records.items()}
            return (len(states) == 6 and all(states[f"good{n}"] is State.ONLINE for n in range(3))
                    and states["wrong"] is State.FAILED and states["silent"] is State.FAILED)

        # 64*T1 = 3.2 s for the silent account.
        yield wait_until(settled, 20, lambda: f"{registrant.counters()}\n{registrar.explain()}")
        scraped = self.scrape(metrics)

        accounts = {state.value: value(scraped, "txuac_accounts", state=state.value) for state in State}
        self.assertEqual(accounts, {"online": 3, "registering": 0, "waiting": 0, "failed": 2, "disabled": 1,
                                    "unregistered": 0})
        counters = registrant.counters()
        self.assertEqual((value(scraped, "txuac_regtotal"), value(scraped, "txuac_regactive"),
                          value(scraped, "txuac_regdisabled")),
                         (counters["regtotal"], counters["regactive"], counters["regdisabled"]))
        self.assertEqual((counters["regtotal"], counters["regactive"], counters["regdisabled"]), (6, 3, 1))

        # The wrong password is challenged again until the authenticator gives up on a 401.
        outcomes = {c: value(scraped, "txuac_register_outcomes_total", **{"class": c})
                    for c in ("2xx", "3xx", "4xx", "5xx", "6xx", "timeout", "error")}
        self.assertEqual(outcomes, {"2xx": 3, "3xx": 0, "4xx": 1, "5xx": 0, "6xx": 0, "timeout": 1, "error": 0})
        self.assertEqual(value(scraped, "txuac_auth_failures_total"), 1)

        count = value(scraped, "txuac_registration_latency_seconds_count")
        self.assertEqual(count, 5)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="+Inf"), 5)
        # The timeout took 64*T1 = 3.2 s; the four answered cycles took less than 2.5 s.
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="2.5"), 4)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="5.0"), 5)
        self.assertGreaterEqual(value(scraped, "txuac_registration_latency_seconds_sum"), 3.2)
        buckets = [value(scraped, "txuac_registration_latency_seconds_bucket", le=repr(b)) for b in LATENCY_BUCKETS]
        self.assertEqual(buckets, sorted(buckets))  # cumulative

        client = {outcome: value(scraped, "txuac_transactions_total", side="client", method="REGISTER",
                                 outcome=outcome)
                  for outcome in ("2xx", "4xx", "timeout")}
        self.assertEqual(client["2xx"], 3)
        self.assertEqual(client["timeout"], 1)
        self.assertGreaterEqual(client["4xx"], 3 + 2)  # a challenge per good account, two or more for "wrong"
        self.assertEqual(client["4xx"], service.stack.client_outcomes[("REGISTER", "4xx")])
        self.assertEqual(value(scraped, "txuac_parse_errors_total"), 0)
        self.assertEqual(value(scraped, "txuac_store_errors_total"), 0)

        # A server transaction: OPTIONS answered 200 by the stack.
        send_udp(sip_port, options_request(sip_port, free_port(), uuid.uuid4().hex))
        yield wait_until(lambda: service.stack.server_outcomes[("OPTIONS", "2xx")] == 1, 5)
        scraped = self.scrape(metrics)
        self.assertEqual(value(scraped, "txuac_transactions_total", side="server", method="OPTIONS", outcome="2xx"), 1)

        # The store breaks: its table is dropped under it, and a refresh fails.
        connection = sqlite3.connect(path)
        connection.execute("DROP TABLE uacreg")
        connection.commit()
        connection.close()
        result = yield registrant.refresh("good0")
        self.assertEqual(result, -1)
        self.assertEqual(value(self.scrape(metrics), "txuac_store_errors_total"), 1)


class StackMetricsTests(MetricsTestMixin, TestCase):
    """No registrant: registration metrics are zero, stack metrics still count."""

    timeout = 30

    @defer.inlineCallbacks
    def test_without_registrant(self):
        port = free_port()
        service, metrics = self.start({"core": {"listen": [f"udp:127.0.0.1:{port}"]}, "rpc": NO_RPC})
        self.assertIsNone(service.registrant)
        self.assertEqual(metrics.content_type, "text/plain; version=1.0.0; charset=utf-8")
        scraped = self.scrape(metrics)
        for state in State:
            self.assertEqual(value(scraped, "txuac_accounts", state=state.value), 0)
        self.assertEqual(value(scraped, "txuac_regtotal"), 0)
        self.assertEqual(value(scraped, "txuac_register_outcomes_total", **{"class": "2xx"}), 0)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_count"), 0)
        self.assertEqual(value(scraped, "txuac_store_errors_total"), 0)
        self.assertEqual(value(scraped, "txuac_parse_errors_total"), 0)
        self.assertFalse([key for key in scraped if key[0] == "txuac_transactions_total"])

        send_udp(port, b"NOT SIP AT ALL\r\n\r\n")
        yield wait_until(lambda: service.stack.parse_errors == 1, 5)
        self.assertEqual(value(self.scrape(metrics), "txuac_parse_errors_total"), 1)

    def test_worker_handoff(self):
        """With workers: the datagrams handed between them, by outcome; none without."""
        service, metrics = self.start({"core": {"listen": [f"udp:127.0.0.1:{free_port()}"]}, "rpc": NO_RPC})
        self.assertFalse([key for key in self.scrape(metrics) if key[0] == "txuac_worker_handoff_total"])
        service.sip.handoff = handoff = Handoff(reactor, self.mktemp(), 0, 2)
        handoff.handed_off, handoff.taken, handoff.kept, handoff.dropped = 7, 5, 2, 1
        scraped = self.scrape(metrics)
        self.assertEqual({outcome: value(scraped, "txuac_worker_handoff_total", outcome=outcome)
                          for outcome in ("handed_off", "taken", "kept", "dropped")},
                         {"handed_off": 7, "taken": 5, "kept": 2, "dropped": 1})

    def test_services_do_not_share_metrics(self):
        """Each Metrics has its own registry: two services in one process scrape apart."""
        first, first_metrics = self.start({"core": {"listen": [f"udp:127.0.0.1:{free_port()}"]}, "rpc": NO_RPC})
        second, second_metrics = self.start({"core": {"listen": [f"udp:127.0.0.1:{free_port()}"]}, "rpc": NO_RPC})
        first.stack.parse_errors = 4
        self.assertEqual(value(self.scrape(first_metrics), "txuac_parse_errors_total"), 4)
        self.assertEqual(value(self.scrape(second_metrics), "txuac_parse_errors_total"), 0)


class RegistrationCountsTests(TestCase):
    """How registrant events are classified, through the observer Metrics subscribes."""

    def setUp(self):
        path = os.path.abspath(self.mktemp()) + ".sqlite"
        self.service = UACService(settings_from_dict({
            "core": {"listen": ["udp:127.0.0.1:0"]},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": "127.0.0.1:5060"},
            "rpc": NO_RPC,
        }), task.Clock())
        before = len(self.service.registrant.observers)
        self.metrics = Metrics(self.service)
        self.assertEqual(len(self.service.registrant.observers), before + 1)

    def emit(self, state: State, previous: State, reason: str, status: int | None, latency: float | None):
        event = RegistrationEvent("u", state, previous, reason, status, 0.0, latency)
        for observer in self.service.registrant.observers:
            observer(event)

    def test_classes(self):
        self.emit(State.ONLINE, State.REGISTERING, "registered for 600 s", 200, 0.004)
        self.emit(State.FAILED, State.REGISTERING, "authentication failed: REGISTER: still challenged", 407, 0.02)
        self.emit(State.FAILED, State.REGISTERING, "authentication failed: no credentials for realm x", None, 0.001)
        self.emit(State.FAILED, State.REGISTERING, "503 Service Unavailable", 503, 0.3)
        self.emit(State.FAILED, State.REGISTERING, "no answer (timeout)", None, 32.0)
        self.emit(State.FAILED, State.REGISTERING, "connection refused", None, 0.0001)
        self.emit(State.DISABLED, State.FAILED, "disabled", None, None)  # no REGISTER cycle ended
        self.emit(State.REGISTERING, State.WAITING, "sending", None, None)
        scraped = samples(self.metrics.render().decode())
        outcomes = {c: value(scraped, "txuac_register_outcomes_total", **{"class": c})
                    for c in ("2xx", "3xx", "4xx", "5xx", "6xx", "timeout", "error")}
        self.assertEqual(outcomes, {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 1, "6xx": 0, "timeout": 1, "error": 2})
        self.assertEqual(value(scraped, "txuac_auth_failures_total"), 2)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_count"), 6)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="0.001"), 2)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="0.005"), 3)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="30.0"), 5)
        self.assertEqual(value(scraped, "txuac_registration_latency_seconds_bucket", le="+Inf"), 6)
        self.assertAlmostEqual(value(scraped, "txuac_registration_latency_seconds_sum"), 32.3251)


class HTTPScrapeTests(TestCase):
    """``GET /metrics`` on the RPC port, as Prometheus scrapes it."""

    timeout = 30

    @defer.inlineCallbacks
    def test_get_metrics(self):
        port = free_port()
        service = UACService(settings_from_dict({
            "core": {"listen": [f"udp:127.0.0.1:{port}"]},
            "rpc": {"listen": "tcp:0:interface=127.0.0.1", "token": "scrape-token-0123456789"},
        }), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        send_udp(port, b"NOT SIP AT ALL\r\n\r\n")
        yield wait_until(lambda: service.stack.parse_errors == 1, 5)
        url = f"http://127.0.0.1:{service.rpc.port}/metrics".encode()
        agent = Agent(reactor)

        refused = yield agent.request(b"GET", url)
        yield readBody(refused)
        self.assertEqual(refused.code, 401)

        response = yield agent.request(b"GET", url, Headers({b"Authorization": [b"Bearer scrape-token-0123456789"]}))
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"text/plain; version=1.0.0; charset=utf-8"])
        scraped = samples(body.decode("utf-8"))
        self.assertEqual(value(scraped, "txuac_parse_errors_total"), 1)
        self.assertEqual(value(scraped, "txuac_accounts", state="online"), 0)

        # Prometheus asks for OpenMetrics first.
        response = yield agent.request(b"GET", url, Headers({
            b"Authorization": [b"Bearer scrape-token-0123456789"],
            b"Accept": [b"application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"]}))
        body = yield readBody(response)
        self.assertTrue(response.headers.getRawHeaders(b"Content-Type")[0].startswith(
            b"application/openmetrics-text; version=1.0.0"))
        self.assertTrue(body.endswith(b"# EOF\n"))


class FakeRegistrant:
    def __init__(self, records, pinger=None):
        self.records = {record.l_uuid: record for record in records}
        self.pinger = pinger
        self.observers = []
        self.store = None

    def now(self) -> float:
        return 100.0

    def add_observer(self, observer):
        self.observers.append(observer)


class FakeStack:
    def __init__(self):
        self.client_outcomes = {}
        self.server_outcomes = {}
        self.parse_errors = 0


class FakeUAC:
    def __init__(self, records, pinger=None, proxy=None):
        self.registrant = FakeRegistrant(records, pinger)
        self.stack = FakeStack()
        self.proxy = proxy


def accounts_at(registrar: str, count: int, start: int) -> list:
    return [record_from_row(row(f"u{n}", f"u{n}", "pw", registrar), 0.0) for n in range(start, start + count)]


class RegistrarMetricsTests(TestCase):
    """Per-registrar series from the records, the status tracker and the pinger; the label set is capped."""

    def setUp(self):
        self.records = (accounts_at("sip:big.example", 5, 0) + accounts_at("sip:mid.example", 3, 5)
                        + accounts_at("sip:small.example", 1, 8))
        for record in self.records[:4]:
            record.flags = Flag.ONLINE
            record.expires_at = 400.0

    def test_accounts_by_registrar_and_state_with_the_rest_as_other(self):
        self.patch(metrics_module, "MAX_REGISTRAR_LABELS", 2)
        scraped = samples(Metrics(FakeUAC(self.records)).render().decode())
        self.assertEqual(value(scraped, "txuac_registrar_accounts", registrar="sip:big.example", state="online"), 4)
        self.assertEqual(value(scraped, "txuac_registrar_accounts", registrar="sip:big.example", state="waiting"), 1)
        self.assertEqual(value(scraped, "txuac_registrar_accounts", registrar="sip:mid.example", state="waiting"), 3)
        self.assertEqual(value(scraped, "txuac_registrar_accounts", registrar="other", state="waiting"), 1)
        self.assertNotIn(("txuac_registrar_accounts", frozenset({("registrar", "sip:small.example"),
                                                                 ("state", "waiting")})), scraped)
        self.assertEqual(value(scraped, "txuac_registrar_labels_dropped"), 1)
        by_registrar = sum(v for (name, _), v in scraped.items() if name == "txuac_registrar_accounts")
        self.assertEqual(by_registrar, sum(v for (name, _), v in scraped.items() if name == "txuac_accounts"))

    def test_last_rtt_and_ping_state(self):
        class Pinger:
            def destination_of(self, l_uuid):
                return {"u0": "udp:big", "u5": "udp:mid"}.get(l_uuid)

            def state(self, destination):
                return {"udp:big": PingState.UP, "udp:mid": PingState.DOWN}[destination]

        uac = FakeUAC(self.records, Pinger())
        tracker = StatusTracker(uac)
        tracker.observe(RegistrationEvent("u1", State.ONLINE, State.REGISTERING, "registered", 200, 90.0, 0.0125))
        scraped = samples(Metrics(uac, tracker).render().decode())
        self.assertEqual(value(scraped, "txuac_registrar_last_rtt_seconds", registrar="sip:big.example"), 0.0125)
        self.assertNotIn(("txuac_registrar_last_rtt_seconds", frozenset({("registrar", "sip:mid.example")})), scraped)
        self.assertEqual(value(scraped, "txuac_registrar_ping_up", registrar="sip:big.example"), 1)
        self.assertEqual(value(scraped, "txuac_registrar_ping_up", registrar="sip:mid.example"), 0)
        self.assertNotIn(("txuac_registrar_ping_up", frozenset({("registrar", "sip:small.example")})), scraped)

    def test_proxy_process_and_python_metrics(self):
        class Proxy:
            dialogs = {"a": 1, "b": 2}
            script_failures = 3

        uac = FakeUAC(self.records, proxy=type("Runner", (), {"proxy": Proxy()})())
        scraped = samples(Metrics(uac).render().decode())
        self.assertEqual(value(scraped, "txuac_proxy_active_dialogs"), 2)
        self.assertEqual(value(scraped, "txuac_proxy_script_failures_total"), 3)
        names = {name for name, _ in scraped}
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                     "python_info", "python_gc_objects_collected_total"):
            self.assertIn(name, names)
        self.assertNotIn("txuac_proxy_active_dialogs", {n for n, _ in samples(Metrics(FakeUAC([])).render().decode())})

    def test_openmetrics_when_asked(self):
        metrics = Metrics(FakeUAC(self.records))
        body, content_type = metrics.render_for("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
        self.assertTrue(content_type.startswith("application/openmetrics-text; version=1.0.0"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"))
        families = {family.name: family for family in openmetrics_families(body.decode())}
        self.assertEqual(families["txuac_register_outcomes"].type, "counter")
        body, content_type = metrics.render_for("text/plain")
        self.assertEqual(content_type, "text/plain; version=1.0.0; charset=utf-8")
        self.assertNotIn(b"# EOF", body)
        self.assertEqual(metrics.render_for(None)[1], metrics.content_type)


class MonitoringFilesTests(TestCase):
    """docs/grafana-dashboard.json and docs/prometheus-alerts.yml name only metrics txuac exposes."""

    def exposed(self) -> set[str]:
        class Proxy:
            dialogs: dict = {}
            script_failures = 0

        class Pinger:
            def destination_of(self, l_uuid):
                return "udp:x"

            def state(self, destination):
                return PingState.UP

        records = accounts_at("sip:big.example", 2, 0)
        uac = FakeUAC(records, Pinger(), type("Runner", (), {"proxy": Proxy()})())
        uac.stack.client_outcomes = {("REGISTER", "2xx"): 1}
        uac.stack.server_outcomes = {("INVITE", "2xx"): 1}
        tracker = StatusTracker(uac)
        tracker.observe(RegistrationEvent("u0", State.ONLINE, State.REGISTERING, "registered", 200, 90.0, 0.01))
        names = {name for name, _ in samples(Metrics(uac, tracker).render().decode())}
        return names

    def referenced(self, path: str) -> set[str]:
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            json.loads(text)  # valid JSON
        return set(re.findall(r"\b((?:txuac|process|python)_[a-z0-9_]+)", text))

    def test_every_metric_referenced_exists(self):
        exposed = self.exposed()
        for path in ("grafana-dashboard.json", "prometheus-alerts.yml"):
            referenced = self.referenced(path)
            self.assertTrue(referenced, path)
            self.assertEqual(sorted(referenced - exposed), [], path)

    def test_a_name_that_does_not_exist_is_caught(self):
        path = os.path.abspath(self.mktemp()) + ".yml"
        with open(path, "w", encoding="utf-8") as f:
            f.write('expr: txuac_registrations_failing_total > 0 and txuac_accounts{state="failed"} > 0\n')
        self.assertEqual(self.referenced(path) - self.exposed(), {"txuac_registrations_failing_total"})


class ClusterMetricsTests(TestCase):
    """[cluster]: the node's leases, the live nodes, takeovers, fences and renewal latency."""

    def test_cluster_series_only_in_a_cluster(self):
        from txuac.registrant.cluster.leases import ClusterSettings, LeasePlan
        from txuac.registrant.cluster.service import ClusterService
        from txuac.registrant.store.url import parse_store_url

        uac = FakeUAC([])
        self.assertNotIn("txuac_cluster_partitions_held", Metrics(uac).render().decode())
        clock = task.Clock()
        clock.advance(100)
        uac.cluster = ClusterService(ClusterSettings(node_id="node-a", partitions=8),
                                     parse_store_url("postgres://u:p@127.0.0.1/db"), "192.0.2.1:5060",
                                     reactor=clock)
        uac.cluster.leases.committed(LeasePlan(frozenset(), frozenset({1, 2, 3}), frozenset(), frozenset(), {}),
                                     100.0, 100.1)
        uac.cluster.nodes, uac.cluster.db_now = {"node-a": 5000.0, "node-b": 4999.0, "node-c": 4000.0}, 5000.5
        uac.cluster.metrics.takeovers, uac.cluster.metrics.fenced = 2, 1
        uac.cluster.metrics.renewed(0.02)
        scraped = samples(Metrics(uac).render().decode())
        self.assertEqual(value(scraped, "txuac_cluster_partitions_held"), 3)
        self.assertEqual(value(scraped, "txuac_cluster_nodes_live"), 2)
        self.assertEqual(value(scraped, "txuac_cluster_takeovers_total"), 2)
        self.assertEqual(value(scraped, "txuac_cluster_fenced_total"), 1)
        self.assertEqual(value(scraped, "txuac_cluster_lease_renew_seconds_bucket", le="0.025"), 1)
        self.assertEqual(value(scraped, "txuac_cluster_lease_renew_seconds_bucket", le="0.01"), 0)
