"""The registrant's fault scenarios, shared by tests/registrant/test_interop_faults.py
(scaled down) and bench/registration_faults.py (full size): loss and delay, a black hole,
a registrar restart, and a run without faults. txuac's REGISTERs go through a UDPRelay to a
KamailioRegistrar; each fault scenario returns a ``Figure`` with its value, target and
conditions, the run without faults the ``Traffic`` it caused."""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field

from twisted.internet import defer, reactor, task, threads

from tests.support.accounts import account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.relay import UDPRelay
from tests.support.relay_process import RelayProcess
from tests.support.services import start_uac
from tests.support.stores import insert_rows
from txuac.registrant.record import State
from txuac.registrant.store import open_store


HOST = "127.0.0.1"


POLL = 0.05


USRLOC_POLL = 0.25  # kamcmd runs in a thread: a few per second are plenty


SEED = 8


@dataclass
class Figure:
    """One measured figure: seconds until the goal (None if not reached), its target, and
    the conditions that must hold as well (e.g. "none failed")."""

    label: str
    seconds: float | None
    target: float
    conditions: dict[str, bool] = field(default_factory=dict)
    details: str = ""

    @property
    def met(self) -> bool:
        return self.seconds is not None and self.seconds <= self.target and all(self.conditions.values())

    def __str__(self) -> str:
        value = f"{self.seconds:.2f} s" if self.seconds is not None else "NOT reached"
        conditions = "".join(f"; {name}: {'yes' if ok else 'NO'}" for name, ok in self.conditions.items())
        details = f" ({self.details})" if self.details else ""
        return f"{self.label}: {value} (target <= {self.target:g} s{conditions}): " \
               f"{'met' if self.met else 'MISSED'}{details}"


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_until(predicate, timeout: float, interval: float = POLL, give_up=None):
    """Seconds until ``predicate()`` (a bool or a Deferred of one) is true, or None after
    ``timeout`` or as soon as ``give_up()`` is true."""
    started = reactor.seconds()
    while True:
        done = yield defer.maybeDeferred(predicate)
        elapsed = reactor.seconds() - started
        if done:
            return elapsed
        if elapsed > timeout or (give_up is not None and give_up()):
            return None
        yield sleep(interval)


class FaultyRegistration:
    """A Kamailio registrar, a UDPRelay in front of it, and txuac with ``accounts`` accounts
    (SQLite) whose auth_proxy is the relay. ``harness`` is a trial TestCase or anything with
    mktemp() and addCleanup() (the bench's Harness).

    Every account that fails (FAILED) or is disabled (DISABLED) is noted, with the time.
    ``relay_process``: the relay runs in a process of its own (RelayProcess), so that its
    delays do not grow with txuac's own load (benches); else in this one (UDPRelay).
    """

    def __init__(self, harness, accounts: int, expires: int = 600, children: int = 4, seed: int = SEED,
                 relay_process: bool = False):
        self.harness = harness
        self.accounts = accounts
        self.registrar = KamailioRegistrar(harness, children=children, udp_maxbuffer=4 * 1024 * 1024)
        if relay_process:
            self.relay = RelayProcess(self.registrar.address, seed=seed)
        else:
            self.relay = UDPRelay(self.registrar.address, seed=seed)
            self.relay.start(harness)
        self.rows = account_rows(self.registrar, accounts)
        for row in self.rows:
            row.update(expires=expires)
        self.service = None
        self.started_at: float | None = None
        self.failed: dict[str, float] = {}  # l_uuid -> when it last failed
        self.disabled: dict[str, float] = {}
        self.first_online: dict[str, float] = {}  # l_uuid -> when it first came online

    @defer.inlineCallbacks
    def start(self, core: dict | None = None, uac: dict | None = None, options_ping: bool = False,
              faults: dict | None = None):
        """Fill an SQLite uacreg table and start txuac on it (``core``/``uac``: extra settings).
        ``options_ping``: set it for every account in txuac's own table (uacreg_txuac).
        ``faults``: the relay's (set_faults arguments) from before txuac's first REGISTER."""
        if isinstance(self.relay, RelayProcess):
            yield self.relay.start(self.harness)
        if faults:
            self.relay.set_faults(**faults)
        for row in self.rows:
            row.update(auth_proxy=self.relay.uri)
        path = os.path.abspath(self.harness.mktemp()) + ".sqlite"
        store = open_store(f"sqlite:///{path}", reactor)  # creates the file with the tables
        yield store.open()
        yield store.close()
        connection = sqlite3.connect(path)
        try:
            insert_rows(connection, self.rows, "?")
            if options_ping:
                connection.executemany("INSERT INTO uacreg_txuac (l_uuid, options_ping) VALUES (?, 1)",
                                       [(row["l_uuid"],) for row in self.rows])
                connection.commit()
        finally:
            connection.close()
        self.sip_port = free_port()
        self.started_at = reactor.seconds()
        self.service = start_uac(self.harness, {
            "core": {"listen": [f"udp:{HOST}:{self.sip_port}"], **(core or {})},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"{HOST}:{self.sip_port}", **(uac or {})},
        })
        self.service.registrant.add_observer(self._event)
        return self.service

    def _event(self, event) -> None:
        if event.state is State.ONLINE:
            self.first_online.setdefault(event.l_uuid, event.at)
        elif event.state is State.FAILED:
            self.failed[event.l_uuid] = event.at
        elif event.state is State.DISABLED:
            self.disabled[event.l_uuid] = event.at

    @property
    def registrant(self):
        return self.service.registrant

    def online(self) -> int:
        return self.registrant.counters()["regactive"]

    def all_online(self) -> bool:
        return self.online() >= self.accounts

    def all_in_usrloc(self) -> defer.Deferred:
        return self.registrar.contact_count_async().addCallback(lambda count: count >= self.accounts)

    def spread(self) -> str:
        """When the first, the median and the last account first came online (s after the start)."""
        times = sorted(at - self.started_at for at in self.first_online.values())
        if not times:
            return "none online"
        return f"first online after {times[0]:.2f} s, half after {times[len(times) // 2]:.2f} s, " \
               f"99% after {times[(len(times) * 99) // 100 - 1 if len(times) >= 100 else -1]:.2f} s, " \
               f"all {len(times)} after {times[-1]:.2f} s"

    def relay_summary(self) -> defer.Deferred:
        """A Deferred of the relay's counters in words."""
        return self.relay.snapshot().addCallback(lambda snapshot: ", ".join(
            f"{name} {c['forwarded']} forwarded {c['dropped']} dropped" for name, c in snapshot.items()))


@defer.inlineCallbacks
def lossy_registration(harness, accounts: int = 1000, loss: float = 0.1, delay: float = 0.02,
                       jitter: float = 0.01, target: float = 5.0, core: dict | None = None, uac: dict | None = None,
                       seed: int = SEED, relay_process: bool = False):
    """Figure 1: seconds from txuac's start until ``accounts`` are online through a relay
    losing ``loss`` of the datagrams both ways and delaying each by ``delay`` +- ``jitter``;
    none may fail.
    The details count the datagrams txuac sent the registrar (REGISTERs, first and retransmitted),
    and the CPU time this process (txuac) had meanwhile, with the load average: a process
    starved of CPU on a busy machine is slow whatever the network does."""
    setup = FaultyRegistration(harness, accounts, seed=seed, relay_process=relay_process)
    load = os.getloadavg()[0]
    yield setup.start(core=core, uac=uac, faults={"loss": loss, "delay": delay, "jitter": jitter})
    cpu_at_start = time.process_time()
    seconds = yield wait_until(setup.all_online, max(3 * target, 30.0))
    cpu = time.process_time() - cpu_at_start
    in_usrloc = yield setup.all_in_usrloc()
    stack = setup.service.stack
    snapshot = yield setup.relay.snapshot()
    sent = sum(snapshot["to_target"][name] for name in ("forwarded", "dropped"))
    summary = yield setup.relay_summary()
    registers = sum(count for (method, _), count in stack.client_outcomes.items() if method == "REGISTER")
    return Figure(
        f"1. {accounts:,} accounts online through {loss:.0%} loss both ways and {delay * 1000:g}"
        f"+-{jitter * 1000:g} ms delay "
        f"(seed {seed})",
        seconds, target, {"none failed": not setup.failed and not setup.disabled, "all in usrloc": in_usrloc},
        f"{setup.spread()}; {len(setup.failed)} failed, {len(setup.disabled)} disabled; "
        f"{stack.retransmissions} retransmissions by txuac, {sent / accounts:.2f} datagrams sent per account "
        f"({registers} REGISTER transactions); this process's CPU until then {cpu:.2f} s, load average "
        f"{load:.1f} at the start; relay: {summary}")


@defer.inlineCallbacks
def blackhole_recovery(harness, accounts: int = 200, outage: float = 75.0, expires: int = 60,
                       core: dict | None = None, uac: dict | None = None, slack: float = 5.0,
                       target: float = 5.0, relay_process: bool = False):
    """Figure 2: seconds from the end of an ``outage`` (the relay drops everything) until every
    account is online again, under the default settings (``uac`` may set others).
    ``expires`` shorter than the outage makes every account's refresh fall in it.
    Target: ``target`` with the probe on (the default); with it off, reg_retry_interval plus
    its jitter, every refresh having failed in the outage.
    """
    setup = FaultyRegistration(harness, accounts, expires=expires, relay_process=relay_process)
    yield setup.start(core=core, uac=uac)
    settings = setup.registrant.settings
    interval = settings.reg_retry_interval
    probing = setup.registrant.prober is not None
    if not probing:
        target = interval * (1 + getattr(settings, "reg_retry_jitter", 0) / 100)
    label = (f"2. {accounts:,} accounts online again after a {outage:g} s black hole "
             f"(reg_retry_interval {interval}, expires {expires} s, "
             + (f"probe every {settings.reg_probe_interval:g}-{settings.reg_probe_max_interval:g} s)"
                if probing else "probe off)"))
    before = yield wait_until(setup.all_online, 60.0)
    if before is None:
        return Figure(label, None, target, {"all online before the outage": False}, str(setup.registrant.counters()))
    setup.failed.clear()
    setup.relay.blackhole = True
    outage_started = reactor.seconds()
    yield sleep(outage)
    refreshed_in_outage = sum(1 for record in setup.registrant.records.values()
                              if record.sent_at is not None and record.sent_at >= outage_started)
    setup.relay.blackhole = False
    online_at_end = setup.online()
    failed_in_outage = len(setup.failed.keys() | setup.disabled.keys())

    def hopeless() -> bool:  # every account that is not online is disabled: nothing will change
        counters = setup.registrant.counters()
        return counters["regdisabled"] > 0 and counters["regactive"] + counters["regdisabled"] >= accounts

    seconds = yield wait_until(setup.all_online, target + slack, give_up=hopeless)
    in_usrloc = yield setup.all_in_usrloc()
    counters = setup.registrant.counters()
    conditions = {"none disabled": not setup.disabled and counters["regdisabled"] == 0}
    if probing:
        conditions["every account refreshed in the outage"] = refreshed_in_outage == accounts
    else:
        conditions["every refresh failed in the outage"] = failed_in_outage == accounts
    conditions["all in usrloc"] = in_usrloc
    probes = f"{setup.registrant.prober.recoveries} probe recoveries; " if probing else ""
    summary = yield setup.relay_summary()
    return Figure(label, seconds, target, conditions,
                  f"{refreshed_in_outage} refreshed and {failed_in_outage} failed during the outage, "
                  f"{online_at_end} online at its end, {len(setup.disabled)} disabled; {probes}"
                  f"counters {counters}; relay: {summary}")


@defer.inlineCallbacks
def registrar_restart(harness, accounts: int = 200, down: float = 20.0, target: float = 15.0,
                      ping_interval: int = 0, expires: int = 120, core: dict | None = None, uac: dict | None = None,
                      relay_process: bool = False):
    """Figure 3: seconds from the restart of a registrar that was down ``down`` seconds (a new
    Kamailio on the same port, its usrloc empty) until every account is in its usrloc again.
    With ``ping_interval`` 0, the default settings: refreshes fall due while it is down
    (``expires`` short enough), its silence is probed and its answer re-registers every
    account. Otherwise per-account OPTIONS pings every ``ping_interval`` seconds with ``expires``
    long enough (600 s) that only the pings can tell txuac that its bindings are gone.
    """
    setup = FaultyRegistration(harness, accounts, expires=expires, relay_process=relay_process)
    if ping_interval:
        yield setup.start(core=core, uac={"reg_options_ping_interval": ping_interval, **(uac or {})},
                          options_ping=True)
        how = f"OPTIONS pings every {ping_interval} s, expires {expires} s"
    else:
        yield setup.start(core=core, uac=uac)
        settings = setup.registrant.settings
        how = (f"probe every {settings.reg_probe_interval:g}-{settings.reg_probe_max_interval:g} s, expires {expires} s"
               if settings.reg_probe else f"probe off, expires {expires} s")
    label = (f"3. {accounts:,} accounts back in usrloc after the registrar was down {down:g} s and lost its "
             f"bindings ({how})")
    before = yield wait_until(setup.all_in_usrloc, 60.0, interval=USRLOC_POLL)
    if before is None:
        return Figure(label, None, target, {"all in usrloc before the restart": False},
                      str(setup.registrant.counters()))
    if not ping_interval:
        # Down while refreshes are due: stopped as the first one goes out.
        first_due = min(record.due_at for record in setup.registrant.records.values())
        yield sleep(max(0.0, first_due - reactor.seconds()))
    yield threads.deferToThread(setup.registrar.halt)
    yield sleep(down)
    yield threads.deferToThread(setup.registrar.restart)
    lost = yield setup.registrar.contact_count_async()
    seconds = yield wait_until(setup.all_in_usrloc, target + 10.0, interval=USRLOC_POLL)
    # With refreshes due, the REGISTERs in flight may reach the new registrar before the count.
    summary = yield setup.relay_summary()
    return Figure(label, seconds, target, {"bindings lost by the restart": lost == 0 if ping_interval else lost < accounts,
                                           "none disabled": not setup.disabled},
                  f"{lost} bindings right after the restart; {len(setup.failed)} accounts failed meanwhile; "
                  f"counters {setup.registrant.counters()}; relay: {summary}")


@dataclass
class Traffic:
    """What the relay carried each way in a run without faults: datagrams by kind (request
    method or response status), and the conditions that must hold (e.g. "no OPTIONS")."""

    label: str
    to_target: dict[str, int]
    to_client: dict[str, int]
    conditions: dict[str, bool] = field(default_factory=dict)
    details: str = ""

    @property
    def met(self) -> bool:
        return all(self.conditions.values())

    def __str__(self) -> str:
        def side(kinds: dict[str, int]) -> str:
            return f"{sum(kinds.values())} ({', '.join(f'{kind} {count}' for kind, count in sorted(kinds.items()))})"

        conditions = "".join(f"; {name}: {'yes' if ok else 'NO'}" for name, ok in self.conditions.items())
        details = f" ({self.details})" if self.details else ""
        return f"{self.label}: to the registrar {side(self.to_target)}, back {side(self.to_client)}" \
               f"{conditions}: {'met' if self.met else 'MISSED'}{details}"


@defer.inlineCallbacks
def healthy_traffic(harness, accounts: int = 1000, duration: float = 3600.0, expires: int = 60,
                    core: dict | None = None, uac: dict | None = None, relay_process: bool = False):
    """Figure 4: the datagrams each way through a relay without faults during ``duration``
    seconds, counted from the moment every account is online (refreshes every ``expires``
    seconds or so). Nothing fails, so nothing may be probed: no OPTIONS either way."""
    setup = FaultyRegistration(harness, accounts, expires=expires, relay_process=relay_process)
    yield setup.start(core=core, uac=uac)
    probing = setup.registrant.prober is not None
    label = (f"4. datagrams through a healthy relay in {duration:g} s with {accounts:,} accounts online "
             f"(expires {expires} s, probe {'on' if probing else 'off'})")
    before = yield wait_until(setup.all_online, 60.0)
    if before is None:
        return Traffic(label, {}, {}, {"all online at the start": False}, str(setup.registrant.counters()))
    at_start = yield setup.relay.snapshot()
    stack = setup.service.stack
    transactions_at_start, retransmissions_at_start = stack.client_outcomes.copy(), stack.retransmissions
    yield sleep(duration)
    at_end = yield setup.relay.snapshot()
    to_target, to_client = (Counter(at_end[side]["kinds"]) - Counter(at_start[side]["kinds"])
                            for side in ("to_target", "to_client"))
    summary = yield setup.relay_summary()
    transactions = Counter(stack.client_outcomes)
    transactions.subtract(transactions_at_start)
    probes = setup.registrant.prober.probes if probing else 0
    return Traffic(label, dict(to_target), dict(to_client), {
        "all online at the end": setup.all_online(),
        "none failed": not setup.failed and not setup.disabled,
        "no OPTIONS": "OPTIONS" not in to_target and probes == 0,
    }, f"client transactions {dict((key, n) for key, n in sorted(transactions.items()) if n)}; "
       f"{stack.retransmissions - retransmissions_at_start} retransmissions by txuac; "
       f"{probes} probes; relay since txuac's start: {summary}")
