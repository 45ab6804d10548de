"""Prometheus metrics of a UACService, served as ``GET /metrics`` on the RPC port.

Everything that already exists as state (accounts, the stack's transaction counters,
parse and store errors, Kamailio's regtotal/regactive/regdisabled) is read when the
metrics are scraped. Only what exists nowhere else is counted as it happens: REGISTER
outcomes, authentication failures and registration latency, from the registrant's
observer. Those counts are plain ints and lists updated on the reactor thread, a dict
lookup and an addition per event, since the registrant emits thousands of events per
second at start-up; prometheus_client turns them into samples at scrape time.

Per-registrar series are labelled by the account's ``auth_proxy``: the label values come
from the uacreg table, never from what peers send, and at most MAX_REGISTRAR_LABELS of them
(the registrars with the most accounts) get their own; the others are summed under
``registrar="other"`` and counted by ``txuac_registrar_labels_dropped``. Prometheus's own
``process_*`` and ``python_*`` collectors run on the same registry. A scraper that asks
for OpenMetrics (``Accept: application/openmetrics-text``) gets it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from txuac import __version__
from txuac.admin.status_model import StatusTracker, ping_state
from txuac.registrant.record import State
from txuac.registrant.service import RegistrationEvent

# Upper bounds (seconds) of the registration latency histogram: 1 ms to 30 s. A cycle
# that times out (64*T1: 32 s with default timers) lands above them, in +Inf only.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# REGISTER outcome classes: a final status class, or how the cycle ended without one.
OUTCOME_CLASSES = ("2xx", "3xx", "4xx", "5xx", "6xx", "timeout", "error")
_STATUS_CLASS = {hundreds: f"{hundreds}xx" for hundreds in range(2, 7)}
_TIMEOUT_REASON = "no answer (timeout)"  # RegistrantService._failed's reason for TransactionTimeout
_AUTH_FAILED_REASON = "authentication failed"
_AUTH_STATUSES = frozenset((401, 407))
MAX_REGISTRAR_LABELS = 200  # registrars with their own label value; the others are "other"
OTHER_REGISTRARS = "other"


class RegistrationCounts:
    """REGISTER cycle outcomes, authentication failures and latencies, fed by registrant events."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.outcomes = dict.fromkeys(OUTCOME_CLASSES, 0)
        self.auth_failures = 0
        # One count per bucket plus +Inf, not cumulative (made cumulative at scrape).
        self.latency_counts = [0] * (len(buckets) + 1)
        self.latency_sum = 0.0

    def observe(self, event: RegistrationEvent) -> None:
        """A registrant observer: counts the events that end a REGISTER cycle."""
        latency = event.latency
        if latency is None:
            return
        status = event.status
        if status is not None:
            self.outcomes[_STATUS_CLASS.get(status // 100, "error")] += 1
            if status in _AUTH_STATUSES:
                self.auth_failures += 1
        elif event.reason == _TIMEOUT_REASON:
            self.outcomes["timeout"] += 1
        else:
            self.outcomes["error"] += 1
            if event.reason.startswith(_AUTH_FAILED_REASON):
                self.auth_failures += 1
        self.latency_counts[bisect_left(self.buckets, latency)] += 1
        self.latency_sum += latency


def _cumulative(buckets: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """A histogram's (upper bound, cumulative count) pairs from per-bucket counts (+Inf last)."""
    cumulative, running = [], 0
    for bound, count in zip((*buckets, float("inf")), counts):
        running += count
        cumulative.append((floatToGoString(bound), running))
    return cumulative


class UACCollector:
    """A prometheus_client collector reading a UACService's state at scrape time."""

    def __init__(self, uac, counts: RegistrationCounts, status: StatusTracker | None):
        self.uac = uac
        self.counts = counts
        self.status = status

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("txuac_build_info", "txuac version running.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._registrations()
        yield from self._transactions()
        yield from self._proxy()
        yield from self._cluster()
        yield from self._handoff()

    def _registrations(self) -> Iterator[Metric]:
        registrant = self.uac.registrant
        by_state = dict.fromkeys(State, 0)
        active = 0
        registrars: dict[str, dict[State, int]] = {}
        one_account: dict[str, str] = {}  # registrar -> an l_uuid, to find its ping destination
        if registrant is not None:
            now = registrant.now()
            for record in registrant.records.values():  # one pass over every account
                state = record.state(now)
                by_state[state] += 1
                if record.registered(now):
                    active += 1
                counts = registrars.get(record.auth_proxy)
                if counts is None:
                    counts = registrars[record.auth_proxy] = dict.fromkeys(State, 0)
                    one_account[record.auth_proxy] = record.l_uuid
                counts[state] += 1
        accounts = GaugeMetricFamily("txuac_accounts", "Registration accounts by state.", labels=["state"])
        for state, count in by_state.items():
            accounts.add_metric([state.value], count)
        yield accounts
        # Kamailio's uac statistics, as registrant.counters() derives them.
        yield GaugeMetricFamily("txuac_regtotal", "Kamailio-compatible name (uac:regtotal): accounts loaded, "
                                "sum(txuac_accounts).", value=sum(by_state.values()))
        yield GaugeMetricFamily("txuac_regactive", "Kamailio-compatible name (uac:regactive): accounts registered "
                                "and not expired.", value=active)
        yield GaugeMetricFamily("txuac_regdisabled", "Kamailio-compatible name (uac:regdisabled): "
                                "txuac_accounts{state=\"disabled\"}.", value=by_state[State.DISABLED])
        yield from self._registrars(registrars, one_account)

        counts = self.counts
        outcomes = CounterMetricFamily(
            "txuac_register_outcomes", "REGISTER cycles by how they ended: final status class, timeout or "
            "error (transport, resolution, authentication given up, internal).", labels=["class"])
        for outcome_class, count in counts.outcomes.items():
            outcomes.add_metric([outcome_class], count)
        yield outcomes
        yield CounterMetricFamily(
            "txuac_auth_failures", "REGISTER cycles ended by authentication: a final 401/407, or no "
            "acceptable challenge or credentials.", value=counts.auth_failures)
        yield HistogramMetricFamily(
            "txuac_registration_latency_seconds", "Time from the first REGISTER of a cycle to the answer "
            "or error that ended it.", buckets=_cumulative(counts.buckets, counts.latency_counts),
            sum_value=counts.latency_sum)
        store = getattr(registrant, "store", None)
        yield CounterMetricFamily("txuac_store_errors", "Failed operations of the registration store.",
                                  value=getattr(store, "errors", 0))

    def _cluster(self) -> Iterator[Metric]:
        """[cluster]: this node's leases, the live nodes, takeovers, fences, renewal latency."""
        cluster = getattr(self.uac, "cluster", None)
        if cluster is None:
            return
        metrics = cluster.metrics
        yield GaugeMetricFamily("txuac_cluster_partitions_held", "Partitions whose accounts this node registers.",
                                value=len(cluster.leases.held()))
        yield GaugeMetricFamily("txuac_cluster_nodes_live", "Nodes whose heartbeat is younger than a lease period, "
                                "as the last lease transaction saw them.", value=cluster.live_count())
        yield CounterMetricFamily("txuac_cluster_takeovers", "Partitions acquired from another node whose lease "
                                  "had expired.", value=metrics.takeovers)
        yield CounterMetricFamily("txuac_cluster_fenced", "Times this node stopped registering everything for "
                                  "want of a lease renewal in time.", value=metrics.fenced)
        yield HistogramMetricFamily(
            "txuac_cluster_lease_renew_seconds", "Duration of the lease transactions (heartbeat, renew, acquire).",
            buckets=_cumulative(metrics.buckets, metrics.renew_counts), sum_value=metrics.renew_sum)

    def _registrars(self, registrars: dict[str, dict[State, int]], one_account: dict[str, str]) -> Iterator[Metric]:
        ranked = sorted(registrars, key=lambda name: (-sum(registrars[name].values()), name))
        named, folded = ranked[:MAX_REGISTRAR_LABELS], ranked[MAX_REGISTRAR_LABELS:]
        accounts = GaugeMetricFamily("txuac_registrar_accounts", "Registration accounts by registrar (the "
                                     "accounts' auth_proxy) and state.", labels=["registrar", "state"])
        for name in named:
            for state, count in registrars[name].items():
                accounts.add_metric([name, state.value], count)
        if folded:
            for state in State:
                accounts.add_metric([OTHER_REGISTRARS, state.value], sum(registrars[name][state] for name in folded))
        yield accounts
        yield GaugeMetricFamily("txuac_registrar_labels_dropped", "Registrars summed under registrar=\"other\" "
                                f"(beyond the {MAX_REGISTRAR_LABELS} with the most accounts).", value=len(folded))
        rtt = GaugeMetricFamily("txuac_registrar_last_rtt_seconds", "Time of the last REGISTER cycle answered by "
                                "each registrar.", labels=["registrar"])
        last_rtt = self.status.last_rtt if self.status is not None else {}
        for name in named:
            last = last_rtt.get(name)
            if last is not None:
                rtt.add_metric([name], last[0])
        yield rtt
        pinger = getattr(self.uac.registrant, "pinger", None)
        up = GaugeMetricFamily("txuac_registrar_ping_up", "1 when the registrar answers its OPTIONS pings, 0 when "
                               "it is down (only registrars pinged: reg_options_ping_interval).", labels=["registrar"])
        if pinger is not None:
            for name in named:
                state = ping_state(pinger, one_account[name])
                if state in ("up", "down"):
                    up.add_metric([name], 1 if state == "up" else 0)
        yield up

    def _proxy(self) -> Iterator[Metric]:
        proxy = getattr(getattr(self.uac, "proxy", None), "proxy", None)
        if proxy is None:
            return
        yield GaugeMetricFamily("txuac_proxy_active_dialogs", "Dialogs the proxy keeps (restore of From/To).",
                                value=len(proxy.dialogs))
        yield CounterMetricFamily("txuac_proxy_script_failures", "Routing script calls that raised an exception.",
                                  value=proxy.script_failures)

    def _handoff(self) -> Iterator[Metric]:
        handoff = getattr(getattr(self.uac, "sip", None), "handoff", None)
        if handoff is None:
            return
        moved = CounterMetricFamily(
            "txuac_worker_handoff", "Datagrams of a call another worker owns (workers > 1): handed_off to it, "
            "taken from another worker, kept here while the owner was out of reach, dropped while its "
            "connection was full.", labels=["outcome"])
        for outcome in ("handed_off", "taken", "kept", "dropped"):
            moved.add_metric([outcome], getattr(handoff, outcome))
        yield moved

    def _transactions(self) -> Iterator[Metric]:
        stack = self.uac.stack
        transactions = CounterMetricFamily(
            "txuac_transactions", "SIP transactions by side, method and outcome (client: the final response "
            "received, timeout or transport_error; server: the final response sent).",
            labels=["side", "method", "outcome"])
        for side, outcomes in (("client", stack.client_outcomes), ("server", stack.server_outcomes)):
            for (method, outcome), count in sorted(outcomes.items()):
                transactions.add_metric([side, method, outcome], count)
        yield transactions
        yield CounterMetricFamily("txuac_parse_errors", "Malformed SIP messages received.",
                                  value=stack.parse_errors)


class Metrics:
    """The metrics of one UACService in Prometheus text format: ``render()`` is the
    body of ``GET /metrics``, ``content_type`` its Content-Type.

    Create it before the service starts so that the registrations of start-up are
    counted. Each instance has its own registry: several services in one process (or
    in tests) do not share or collide.
    """

    content_type: str = CONTENT_TYPE_LATEST

    def __init__(self, uac, status: StatusTracker | None = None):
        self.uac = uac
        self.registrations = RegistrationCounts()
        if uac.registrant is not None:
            uac.registrant.add_observer(self.registrations.observe)
        self.status = status  # the admin server's, for each registrar's last round-trip time
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(UACCollector(uac, self.registrations, self.status))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        """Every metric, now, in Prometheus text exposition format."""
        return generate_latest(self.registry)

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        """The body and Content-Type for a scraper's ``Accept``: OpenMetrics when it asks, else text."""
        encoder, content_type = choose_encoder(accept or "")
        if content_type.startswith("application/openmetrics-text"):
            return encoder(self.registry), content_type
        return self.render(), self.content_type
