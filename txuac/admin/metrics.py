"""Prometheus metrics of a UACService, served as ``GET /metrics`` on the RPC port.

Everything that already exists as state (accounts, the stack's transaction counters,
parse and store errors, Kamailio's regtotal/regactive/regdisabled) is read when the
metrics are scraped. Only what exists nowhere else is counted as it happens: REGISTER
outcomes, authentication failures and registration latency, from the registrant's
observer. Those counts are plain ints and lists updated on the reactor thread, a dict
lookup and an addition per event, since the registrant emits thousands of events per
second at start-up; prometheus_client turns them into samples at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from txuac import __version__
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


class UACCollector:
    """A prometheus_client collector reading a UACService's state at scrape time."""

    def __init__(self, uac, counts: RegistrationCounts):
        self.uac = uac
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("txuac_build_info", "txuac version running.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._registrations()
        yield from self._transactions()

    def _registrations(self) -> Iterator[Metric]:
        registrant = self.uac.registrant
        by_state = dict.fromkeys(State, 0)
        active = 0
        if registrant is not None:
            now = registrant.now()
            for record in registrant.records.values():  # one pass over every account
                by_state[record.state(now)] += 1
                if record.registered(now):
                    active += 1
        accounts = GaugeMetricFamily("txuac_accounts", "Registration accounts by state.", labels=["state"])
        for state, count in by_state.items():
            accounts.add_metric([state.value], count)
        yield accounts
        # Kamailio's uac statistics, as registrant.counters() derives them.
        yield GaugeMetricFamily("txuac_regtotal", "Registration accounts loaded (Kamailio's regtotal).",
                                value=sum(by_state.values()))
        yield GaugeMetricFamily("txuac_regactive", "Accounts registered and not expired (Kamailio's regactive).",
                                value=active)
        yield GaugeMetricFamily("txuac_regdisabled", "Accounts disabled (Kamailio's regdisabled).",
                                value=by_state[State.DISABLED])

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
        cumulative, running = [], 0
        for bound, count in zip((*counts.buckets, float("inf")), counts.latency_counts):
            running += count
            cumulative.append((floatToGoString(bound), running))
        yield HistogramMetricFamily(
            "txuac_registration_latency_seconds", "Time from the first REGISTER of a cycle to the answer "
            "or error that ended it.", buckets=cumulative, sum_value=counts.latency_sum)
        store = getattr(registrant, "store", None)
        yield CounterMetricFamily("txuac_store_errors", "Failed operations of the registration store.",
                                  value=getattr(store, "errors", 0))

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

    def __init__(self, uac):
        self.uac = uac
        self.registrations = RegistrationCounts()
        if uac.registrant is not None:
            uac.registrant.add_observer(self.registrations.observe)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(UACCollector(uac, self.registrations))

    def render(self) -> bytes:
        """Every metric, now, in Prometheus text exposition format."""
        return generate_latest(self.registry)
