"""Remote registration of N accounts against a real Kamailio registrar (digest auth; the uacreg
table in SQLite, PostgreSQL or MariaDB).

Starts a Kamailio registrar (tests/support/kamailio.py) on loopback, fills a uacreg table
(``--store``: an SQLite file by default; ``postgres`` and ``mysql`` start a private server,
tests/support/postgres.py and mariadb.py) with N accounts whose passwords it accepts, then
runs txuac's UACService in this
process under the default reactor and measures, from startService() until
``counters()["regactive"] == N`` (polled every 50 ms; see Poll):

* seconds from start until all N accounts are online (loading the table included);
* txuac CPU per registration (REGISTER, 401, authenticated REGISTER, 200 OK):
  time.process_time() of this process over that window, less the CPU of the poll
  itself (counters() walks every account), divided by N; split into its own code and the
  kernel (os.times(): sending and receiving, page faults), with the minor page faults
  (getrusage) per registration; Kamailio's the same way (utime and stime of its processes);
* resident memory per account: VmRSS at steady state (all online, every client transaction
  ended, gc.collect()) less VmRSS before the service started, / N; VmRSS once the table
  is loaded and when the last account came online are printed too;
  with ``--tracemalloc`` also the Python heap held per account (slows everything down);
* the UDP receive errors the kernel counted on this host (/proc/net/snmp Udp:
  RcvbufErrors and InErrors, delta from before the start to the end of the settle time).

Each figure is printed with its target and whether it is met. Targets (2 cores):
10,000 accounts online within 5 s and 50,000 within 20 s, no UDP receive errors,
at most 250 us of txuac CPU per registration, at most 2 KiB per account at steady state.
Kamailio's own uac module puts 10,000 online in 1.2-7.9 s.

Twisted's log is started (warnings and errors go to stderr; ``--log FILE`` writes every
event): without an observer Twisted would buffer up to 65,536 events in memory.

Also printed, to explain the figures: garbage collections (count and time per generation),
objects tracked by the collector, drops per socket (/proc/net/udp), txuac's retransmissions,
Kamailio's CPU, its usrloc binding count, and the log events by level.

With several ``--store`` options the whole run is repeated for each store, one after the
other (a new registrar each time), and a last table compares the stores: seconds until the
accounts were loaded and until all were online.

Usage (from the repository root; ``./dev bench registrations N`` runs the compiled build):
    python bench/registrations.py [N=10000] [--store sqlite|postgres|mysql ...] [--rate R] [--timeout 120] [--settle 6]
        [--children 4] [--shm-mb 512] [--pkg-mb 32] [--log FILE]
        [--profile [--profile-out FILE]] [--tracemalloc] [--census] [--gc-threshold A,B,C] [--gc-freeze]
``--profile`` runs the measured window under cProfile (timed in CPU seconds) and prints the top 25 by tottime
(the figures are then inflated). ``--census`` lists the commonest gc-tracked object types
at the moment all are online (in-flight and Timer K client transactions show there).
``--gc-threshold`` and ``--gc-freeze`` are experiments
that show what a GC setting in txuac would give; they are not txuac's behaviour.
Exit status 2 when not all N accounts are online within ``--timeout`` (120 s).
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import gc
import io
import os
import pstats
import resource
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.internet import defer, task  # noqa: E402
from twisted.logger import LogLevel, formatEvent, globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.trial.unittest import SkipTest  # noqa: E402

import txuac.sip  # noqa: E402
from tests.support.accounts import account_rows  # noqa: E402
from tests.support.kamailio import UAC_CONFIG, KamailioRegistrar  # noqa: E402
from tests.support.kamtools import kamailio_56_copy  # noqa: E402
from tests.support.mariadb import MariaDBServer  # noqa: E402
from tests.support.peers import free_port  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.stores import insert_rows  # noqa: E402
from measure import (  # noqa: E402
    group_cpu,
    group_pss_kib,
    group_times,
    pss_kib,
    registrar_shm_mb,
    rss_kib,
    udp_errors,
)
from txuac.config import settings_from_dict  # noqa: E402
from txuac.registrant.record import State  # noqa: E402
from txuac.registrant.store import open_store  # noqa: E402
from txuac.registrant.store.url import parse_store_url  # noqa: E402
from txuac.service import UACService, tune_garbage_collector  # noqa: E402

HOST = "127.0.0.1"
POLL = 0.05
KAMAILIO_POLL = 0.1
RETRY_INTERVAL = 5  # reg_retry_interval (s) of txuac and of the Kamailio uac reference
CPU_TARGET_US = 250.0
MEMORY_TARGET_KIB = 2.0
MAX_STDERR_EVENTS = 20
LOUD_LEVELS = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


def online_target(n: int) -> float:
    """Seconds allowed until N are online: 5 s for 10,000, 20 s for 50,000, linear between."""
    if n <= 10_000:
        return 5.0
    if n <= 50_000:
        return 5.0 + (n - 10_000) * 15.0 / 40_000
    return n / 2_500


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# --- measurements -------------------------------------------------------------------

def object_census(objects: list, n: int, top: int = 15) -> list[str]:
    """The commonest types among ``objects`` (gc-tracked): count and shallow bytes per account."""
    counts: dict[str, list[int]] = {}
    for obj in objects:
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        entry = counts.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj, 0)
    ranked = sorted(counts.items(), key=lambda item: -item[1][1])[:top]
    return [f"    {size / n:7.0f} B/account {count / n:6.2f} objects/account  {name}"
            for name, (count, size) in ranked]


def socket_drops(port: int) -> int | None:
    """The drops column of /proc/net/udp for the socket(s) bound to 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    found = None
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == local:
                    found = (found or 0) + int(fields[-1])
    except (OSError, StopIteration, ValueError):
        return None
    return found


class GCTimer:
    """Collections per generation and the time spent in them (gc.callbacks)."""

    def __init__(self):
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._start = 0.0
        self.running = False

    def __call__(self, phase: str, info: dict) -> None:
        if not self.running:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            generation = info["generation"]
            self.collections[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._start

    def __str__(self) -> str:
        return ", ".join(f"gen{g} {self.collections[g]}x {self.seconds[g]:.2f} s" for g in range(3))


# --- what KamailioRegistrar needs of a trial TestCase -----------------------------------

class Harness:
    """mktemp() and addCleanup() for KamailioRegistrar, outside trial."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="txuac-bench-registrations-")
        self.count = 0
        self.cleanups: list = []
        self.keep = False
        self.done = False
        atexit.register(self.cleanup)

    def mktemp(self) -> str:
        self.count += 1
        return os.path.join(self.base, f"t{self.count}")

    def addCleanup(self, function, *args, **kwargs) -> None:
        self.cleanups.append((function, args, kwargs))

    def cleanup(self) -> None:
        if self.done:
            return
        self.done = True
        while self.cleanups:
            function, args, kwargs = self.cleanups.pop()
            try:
                function(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - go on with the others
                print(f"cleanup {function!r} failed: {e}", file=sys.stderr)
        if self.keep:
            print(f"kept {self.base} (Kamailio's log, the SQLite file)", file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)


# --- Twisted's log ------------------------------------------------------------------

class LogCounter:
    """Counts events by level; prints the first warnings and errors; optionally writes all to a file."""

    def __init__(self, path: str | None):
        self.counts: dict[str, int] = {}
        self.printed = 0
        self.file = open(path, "w") if path else None
        self.writer = textFileLogObserver(self.file) if self.file else None

    def __call__(self, event: dict) -> None:
        level = event.get("log_level")
        name = level.name if level is not None else "none"
        self.counts[name] = self.counts.get(name, 0) + 1
        if self.writer is not None:
            self.writer(event)
        # (LogLevel's ordering goes through constantly's iterconstants(): a sort per comparison)
        if level in LOUD_LEVELS and self.printed < MAX_STDERR_EVENTS:
            self.printed += 1
            print(f"log {name}: {formatEvent(event)}", file=sys.stderr)


# --- the run ------------------------------------------------------------------------

def make_settings(port: int, db_url: str, rate: int | None):
    uac = {"reg_db_url": db_url, "reg_contact_addr": f"{HOST}:{port}", "reg_retry_interval": RETRY_INTERVAL}
    if rate is not None:
        # One registrar: its own budget (reg_dest_rate, 3,000/s by default) would hold a
        # higher rate to the default.
        uac["reg_send_rate"] = uac["reg_dest_rate"] = rate
    return settings_from_dict({"core": {"listen": [f"udp:{HOST}:{port}"]}, "uac": uac, "rpc": {"enabled": False}})


def receive_buffer(service: UACService) -> int:
    """SO_RCVBUF of txuac's UDP socket (Linux reports twice what was set); raised if small."""
    sock = service.sip.ports[0].getHandle()
    size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    wanted = 4 * 1024 * 1024
    if size < wanted:  # the stack raises it where allowed; try harder (root: SO_RCVBUFFORCE)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, wanted)
                break
            except OSError:
                continue
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return size


# (realpath: ./dev bench runs this file through a symlinked directory that has no conf/)
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "conf", "schema")
STORES = ("sqlite", "postgres", "mysql")


def registrar_shm(args) -> int:
    """The registrar's shared memory: twice the accounts' share with ``--compare-kamailio``
    (Kamailio's uac registers them all before txuac does)."""
    return registrar_shm_mb(args.accounts, 2 if args.compare_kamailio else 1, args.shm_mb)


@defer.inlineCallbacks
def fill_store(registrar: KamailioRegistrar, kind: str, n: int, reactor, harness: "Harness"):
    """Deferred[str]: the reg_db_url of a new ``kind`` store holding N accounts of ``registrar``."""
    rows = account_rows(registrar, n)
    if kind == "sqlite":
        path = os.path.abspath(harness.mktemp()) + ".sqlite"
        store = open_store(f"sqlite:///{path}", reactor)  # creates the file with the uacreg table
        yield store.open()
        yield store.close()
        connection = sqlite3.connect(path)
        placeholder, url = "?", f"sqlite:///{path}"
    elif kind == "postgres":
        import psycopg2

        server = PostgresCluster(harness)
        server.psql(file=os.path.join(SCHEMA_DIR, "postgres.sql"))
        connection = psycopg2.connect(**parse_store_url(server.url).connection_arguments())
        placeholder, url = "%s", server.url
    else:
        import pymysql

        from txuac.registrant.store.mysql import connection_arguments

        server = MariaDBServer(harness)
        server.mysql(file=os.path.join(SCHEMA_DIR, "mysql.sql"))
        connection = pymysql.connect(**connection_arguments(parse_store_url(server.url)))
        placeholder, url = "%s", server.url
    try:
        insert_rows(connection, rows, placeholder)
    finally:
        connection.close()
    return url


class KamailioUACReference:
    """Kamailio's own uac module (tests/support/kamailio-uac.cfg) registering the same
    accounts from a copy of the same SQLite table through the same registrar: the reference
    ``--compare-kamailio`` measures before txuac.

    All online is when the registrar holds N bindings (its usrloc counter, polled with
    kamcmd every KAMAILIO_POLL seconds from a thread: the poll costs the registrar, not
    the uac). The CPU is that of the uac's whole process group from its launch (start-up
    and loading the table included, as txuac's figure includes loading); the memory is its
    processes' PSS summed when all are online, less what the same cfg takes with no accounts.
    """

    def __init__(self, args, harness: Harness, registrar: KamailioRegistrar, db_url: str):
        self.args = args
        self.harness = harness
        self.registrar = registrar
        self.db_path = parse_store_url(db_url).path
        self.online_after: float | None = None
        self.cpu = 0.0
        self.user = self.system = 0.0  # self.cpu in its own code and in the kernel
        self.registrar_cpu = 0.0
        self.pss_kib = 0
        self.empty_pss_kib = 0
        self.drops: int | None = None
        self.host_errors: dict[str, int] = {}
        self.memory_options = ""

    def start(self, db_path: str) -> KamailioRegistrar:
        """Kamailio's uac on a free port, registering the rows of the SQLite file ``db_path``."""
        directory = tempfile.mkdtemp(prefix="txuac-kam-uac-")
        self.harness.addCleanup(shutil.rmtree, directory, True)
        port = free_port()
        # db_sqlite holds the whole table in private memory while uac loads it (~1 KiB a row),
        # and all the REGISTER transactions at once in shared memory, with their retries when
        # the registrar falls behind (976 MiB ran out at 50,000 accounts: 64 KiB an account).
        pkg_mb = max(self.args.pkg_mb, self.args.accounts * 4 // 1024)
        shm_mb = max(self.args.shm_mb, self.args.accounts * 64 // 1024)
        uac = KamailioRegistrar(self.harness, config=UAC_CONFIG, children=self.args.children,
                                shm_mb=shm_mb, pkg_mb=pkg_mb, udp_maxbuffer=4 * 1024 * 1024,
                                start=False, defines={
                                    "DB_URL": f'"sqlite:///{kamailio_56_copy(db_path, directory)}"',
                                    "CONTACT_ADDR": f'"{HOST}:{port}"',
                                    "RPC_FIFO": f'"{directory}/rpc.fifo"',
                                    "RETRY_INTERVAL": RETRY_INTERVAL,  # as txuac's: failures retried
                                })
        uac.start(port=port)
        self.memory_options = f"-m {shm_mb} -M {pkg_mb}"
        return uac

    def empty_pss(self) -> int:
        """KiB of PSS the cfg takes with an empty uacreg table (a short-lived Kamailio)."""
        empty = os.path.join(tempfile.mkdtemp(prefix="txuac-kam-empty-"), "uacreg.sqlite")
        self.harness.addCleanup(shutil.rmtree, os.path.dirname(empty), True)
        shutil.copyfile(self.db_path, empty)
        connection = sqlite3.connect(empty)
        connection.execute("DELETE FROM uacreg")
        connection.commit()
        connection.close()
        uac = self.start(empty)
        time.sleep(1.0)
        pss = group_pss_kib(uac.pid)
        uac.stop()
        return pss

    @defer.inlineCallbacks
    def run(self, reactor, n: int):
        """Deferred[bool]: whether Kamailio's uac put all N online within --timeout."""
        self.empty_pss_kib = self.empty_pss()
        errors_before = udp_errors()
        registrar_before = group_cpu(self.registrar.pid)
        bindings_before = yield self.registrar.contact_count_async()
        started = time.monotonic()
        uac = self.start(self.db_path)
        bindings = bindings_before
        while time.monotonic() - started < self.args.timeout:
            bindings = yield self.registrar.contact_count_async()
            if bindings - bindings_before >= n:
                self.online_after = time.monotonic() - started
                break
            yield task.deferLater(reactor, KAMAILIO_POLL, lambda: None)
        self.user, self.system = group_times(uac.pid)
        self.cpu = self.user + self.system
        self.registrar_cpu = group_cpu(self.registrar.pid) - registrar_before
        self.pss_kib = group_pss_kib(uac.pid)
        self.drops = socket_drops(uac.port)
        errors = udp_errors()
        self.host_errors = {name: errors[name] - errors_before[name] for name in errors}
        uac.stop()
        online = bindings - bindings_before
        print(f"Kamailio uac (reference; {self.args.children} workers, {self.memory_options}): {online:,} of {n:,} online "
              + (f"after {self.online_after:.2f} s" if self.online_after is not None
                 else f"NOT within {self.args.timeout:g} s")
              + f"; CPU {self.cpu:.2f} s = {self.cpu_per_registration(n):.0f} us per registration "
              f"({self.user / n * 1e6:.0f} in its code, {self.system / n * 1e6:.0f} in the kernel; "
              f"registrar {self.registrar_cpu:.2f} s); PSS {self.pss_kib / 1024:.1f} MiB "
              f"({self.empty_pss_kib / 1024:.1f} with no accounts: "
              f"{self.memory_per_account(n) * 1024:,.0f} bytes per account); dropped by its socket {self.drops}, "
              f"host UDP receive errors {self.host_errors}")
        return self.online_after is not None

    def cpu_per_registration(self, n: int) -> float:
        return self.cpu / n * 1e6

    def memory_per_account(self, n: int) -> float:
        """KiB of PSS per account."""
        return (self.pss_kib - self.empty_pss_kib) / n


def print_comparison(n: int, reference: KamailioUACReference, ours: dict[str, float | None]) -> None:
    """The reference and txuac side by side, with txuac / Kamailio."""
    finished = reference.online_after is not None  # else its CPU covers only part of the work
    theirs = {
        "CPU per registration (us)": reference.cpu_per_registration(n) if finished else None,
        "  of which in the kernel (us)": reference.system / n * 1e6 if finished else None,
        "all online after (s)": reference.online_after,
        "memory per account (bytes)": reference.memory_per_account(n) * 1024,
        "datagrams dropped (its socket)": reference.drops,
    }

    def shown(value: float | None, digits: int) -> str:
        return "NOT" if value is None else f"{value:,.{digits}f}"

    print(f"compared, {n:,} accounts, same registrar, same table (load average {os.getloadavg()[0]:.2f}):")
    print(f"  {'':32} {'Kamailio uac':>13} {'txuac':>10} {'txuac/Kamailio':>15}")
    for name, reference_value in theirs.items():
        value = ours[name]
        digits = 2 if name.endswith("(s)") else 0
        ratio = f"{value / reference_value:.2f}x" if value is not None and reference_value else "-"
        print(f"  {name:32} {shown(reference_value, digits):>13} {shown(value, digits):>10} {ratio:>15}")


class Poll:
    """Every POLL seconds, until ``counters()["regactive"] == n`` or the deadline.

    counters() walks every account (tens of ms at 10,000 in pure Python), so calling it
    every 50 ms would take a large share of the reactor from the registrations being
    measured: an observer of the registrant counts online transitions, and counters()
    only confirms once that count reaches n. The CPU of the polls is kept apart.
    """

    def __init__(self, reactor, service: UACService, n: int, started: float, timeout: float):
        self.reactor = reactor
        self.registrant = service.registrant
        self.n = n
        self.started = started
        self.deadline = started + timeout
        self.cpu = 0.0
        self.polls = 0
        self.confirmations = 0
        self.observed = 0
        self.loaded_after: float | None = None
        self.rss_loaded = 0
        self.last: dict[str, int] = {}
        self.done = defer.Deferred()
        self.loop = task.LoopingCall(self._poll)
        self.loop.clock = reactor
        self.registrant.add_observer(self._event)

    freeze_after_load = False

    def _event(self, event) -> None:
        self.observed += (event.state is State.ONLINE) - (event.previous is State.ONLINE)

    def start(self) -> defer.Deferred:
        self.loop.start(POLL, now=False)
        return self.done

    def _poll(self) -> None:
        cpu = time.process_time()
        now = time.monotonic()
        self.polls += 1
        if self.loaded_after is None and self.registrant.records:
            self.loaded_after = now - self.started
            self.rss_loaded = rss_kib()
            if self.freeze_after_load:  # experiment: what gc.freeze() in the registrant would give
                gc.collect()
                gc.freeze()
        expired = now > self.deadline
        if self.observed >= self.n or expired:
            self.confirmations += 1
            self.last = self.registrant.counters()
        self.cpu += time.process_time() - cpu
        finished = self.last.get("regactive", 0) >= self.n
        if finished or expired:
            self.loop.stop()
            self.done.callback(finished)


@defer.inlineCallbacks
def run(reactor, args, harness: Harness, store_kind: str = "sqlite"):
    """Deferred[(all online, seconds until loaded, seconds until all online)] with ``store_kind``."""
    n = args.accounts
    compiled = txuac.sip.COMPILED
    print(f"txuac registrations bench: N={n:,}, SIP core {'COMPILED (mypyc)' if compiled else 'pure Python'} "
          f"(txuac.sip.COMPILED={compiled}), Python {sys.version.split()[0]}, reactor {type(reactor).__module__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    try:
        shm_mb = registrar_shm(args)
        registrar = KamailioRegistrar(harness, children=args.children, shm_mb=shm_mb,
                                      pkg_mb=args.pkg_mb, udp_maxbuffer=4 * 1024 * 1024)
    except SkipTest as e:
        raise SystemExit(f"cannot run Kamailio: {e}")
    db_url = yield fill_store(registrar, store_kind, n, reactor, harness)
    print(f"Kamailio registrar on udp:{registrar.host}:{registrar.port} (pid {registrar.pid}, "
          f"{args.children} workers, -m {shm_mb} -M {args.pkg_mb}); {n:,} accounts in "
          f"{parse_store_url(db_url).masked}")
    reference = None
    if args.compare_kamailio:
        reference = KamailioUACReference(args, harness, registrar, db_url)
        yield reference.run(reactor, n)

    port = free_port()
    service = UACService(make_settings(port, db_url, args.rate), reactor)
    rate = service.registrant.settings.reg_send_rate
    print(f"txuac on udp:{HOST}:{port}, reg_send_rate {rate:g}/s"
          f"{'' if args.rate is not None else ' (the service default)'}, reg_retry_interval {RETRY_INTERVAL} s"
          f"{'; under cProfile' if args.profile else ''}{'; with tracemalloc' if args.tracemalloc else ''}"
          f"{f'; EXPERIMENT gc.set_threshold{args.gc_threshold}' if args.gc_threshold else '; gc tuned as twistd uac tunes it'}"
          f"{'; EXPERIMENT gc.freeze() after loading' if args.gc_freeze else ''}")

    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    else:
        tune_garbage_collector()  # what `twistd uac` does before starting the service
    gc.collect()
    rss_before = rss_kib()
    errors_before = udp_errors()
    kamailio_cpu_before = group_cpu(registrar.pid)
    heap_before = None
    heap_base = 0
    if args.tracemalloc:
        tracemalloc.start()
        heap_before = tracemalloc.take_snapshot()
        heap_base = tracemalloc.get_traced_memory()[0]
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU time: others share the cores
    gc_timer = GCTimer()
    gc.callbacks.append(gc_timer)
    gc_timer.running = True

    started = time.monotonic()
    cpu_started = time.process_time()
    times_started = os.times()
    faults_started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if profiler:
        profiler.enable()
    service.startService()
    rcvbuf = receive_buffer(service)  # the sockets are bound by now; before any traffic
    poll = Poll(reactor, service, n, started, args.timeout)
    poll.freeze_after_load = args.gc_freeze
    try:
        finished = yield poll.start()
    except BaseException:
        if profiler:
            profiler.disable()
        raise
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    kernel_cpu = os.times().system - times_started.system
    page_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_started
    gc_timer.running = False
    if profiler:
        profiler.disable()
    tracked = gc.get_objects()
    tracked_online = len(tracked)
    census = object_census(tracked, n) if args.census else []
    del tracked
    kamailio_cpu = group_cpu(registrar.pid) - kamailio_cpu_before
    rss_online = rss_kib()
    errors_online = udp_errors()
    stack = service.stack
    retransmissions_online = stack.retransmissions
    counters = poll.last

    # Steady state: every client transaction ended (Timer K), garbage collected.
    settle_end = time.monotonic() + args.settle
    while time.monotonic() < settle_end:
        yield task.deferLater(reactor, 0.25, lambda: None)
    gc.collect()
    rss_steady = rss_kib()
    heap_held = None
    heap_top = []
    heap_peak = 0
    if args.tracemalloc:
        heap_after = tracemalloc.take_snapshot()
        heap_held = sum(stat.size_diff for stat in heap_after.compare_to(heap_before, "filename"))
        heap_top = heap_after.compare_to(heap_before, "lineno")[:12]
        heap_peak = tracemalloc.get_traced_memory()[1] - heap_base
        tracemalloc.stop()
    errors_after = udp_errors()
    txuac_drops, kamailio_drops = socket_drops(port), socket_drops(registrar.port)
    counters_cpu = time.process_time()
    final = service.registrant.counters()
    counters_cpu = time.process_time() - counters_cpu
    pending = stack.pending_client_transactions
    contacts = None
    try:
        contacts = yield registrar.contact_count_async()
    except Exception as e:  # noqa: BLE001 - a report without it is still a report
        print(f"kamcmd location_contacts failed: {e}", file=sys.stderr)

    # --- report ---
    online = counters.get("regactive", 0)
    target_s = online_target(n)
    own_cpu = cpu - poll.cpu
    per_reg_us = own_cpu / max(online, 1) * 1e6
    kernel_us = kernel_cpu / max(online, 1) * 1e6  # the polls' share of it is nil: they make no system call
    mem_online = (rss_online - rss_before) / max(n, 1)
    mem_steady = (rss_steady - rss_before) / max(n, 1)
    drops = {k: errors_after[k] - errors_before[k] for k in errors_before}
    drops_online = {k: errors_online[k] - errors_before[k] for k in errors_before}
    print(f"SIP core compiled: {compiled}")
    print(f"accounts loaded from {store_kind} after: {poll.loaded_after:.2f} s" if poll.loaded_after is not None
          else f"accounts loaded from {store_kind} after: (not seen by the poll)")
    if finished:
        print(f"all online after: {elapsed:.2f} s (target <= {target_s:g} s for {n:,}: {verdict(elapsed <= target_s)}; "
              f"paced at {rate:g}/s the last REGISTER cannot leave before {n / rate:.2f} s)")
    else:
        print(f"all online after: NOT within {args.timeout:g} s: {online:,} of {n:,} online after {elapsed:.2f} s "
              f"(target <= {target_s:g} s: MISSED); counters {counters}")
    print(f"txuac CPU per registration: {per_reg_us:.0f} us (target <= {CPU_TARGET_US:g} us: "
          f"{verdict(per_reg_us <= CPU_TARGET_US)}; {per_reg_us - kernel_us:.0f} in its code, {kernel_us:.0f} in the "
          f"kernel; {page_faults / max(online, 1):.2f} page faults each); {own_cpu:.2f} s CPU in {elapsed:.2f} s = "
          f"{own_cpu / elapsed * 100:.0f}% of one core, not counting {poll.cpu:.3f} s in {poll.polls} polls "
          f"({poll.confirmations} counters() calls; {cpu / max(online, 1) * 1e6:.0f} us with them)")
    print(f"garbage collections until all online: {gc_timer} "
          f"({sum(gc_timer.seconds) / max(online, 1) * 1e6:.0f} us per registration; thresholds {gc.get_threshold()})")
    print(f"objects tracked by the garbage collector when all were online: {tracked_online:,} "
          f"({tracked_online / n:.1f} per account)")
    if census:
        print("largest gc-tracked object types when all were online (shallow sizes):")
        print("\n".join(census))
    print(f"txuac memory per account: {mem_steady * 1024:,.0f} bytes = {mem_steady:.2f} KiB at steady state "
          f"(target <= {MEMORY_TARGET_KIB:g} KiB: {verdict(mem_steady <= MEMORY_TARGET_KIB)}); "
          f"{mem_online:.2f} KiB when all were online; VmRSS {rss_before / 1024:.1f} MiB before the start, "
          f"{poll.rss_loaded / 1024:.1f} once the accounts were loaded, {rss_online / 1024:.1f} when all were online, "
          f"{rss_steady / 1024:.1f} at steady state")
    if heap_held is not None:
        print(f"txuac Python heap per account (tracemalloc, steady state): {heap_held / n:,.0f} bytes "
              f"= {heap_held / n / 1024:.2f} KiB (peak during the run {heap_peak / n / 1024:.2f} KiB per account, "
              f"{heap_peak / 1024 / 1024:.1f} MiB); largest allocation sites:")
        for stat in heap_top:
            frame = stat.traceback[0]
            print(f"    {stat.size_diff / n:7.0f} B/account {stat.count_diff / n:6.2f} blocks/account  "
                  f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}")
    total_drops = sum(drops.values())
    print(f"UDP receive errors (host, /proc/net/snmp): RcvbufErrors +{drops['RcvbufErrors']}, "
          f"InErrors +{drops['InErrors']} (target 0: {verdict(total_drops == 0)}); until all online: "
          f"RcvbufErrors +{drops_online['RcvbufErrors']}, InErrors +{drops_online['InErrors']}; "
          f"dropped by txuac's socket {txuac_drops}, by Kamailio's {kamailio_drops} (/proc/net/udp)")
    print(f"txuac UDP socket SO_RCVBUF: {rcvbuf:,} bytes")
    print(f"retransmissions by txuac: {retransmissions_online} until all online, {stack.retransmissions} in all; "
          f"client transactions still pending after {args.settle:g} s: {pending}")
    print(f"Kamailio CPU (all its processes) until all online: {kamailio_cpu:.2f} s; "
          f"bindings in its usrloc: {contacts if contacts is not None else '?'}")
    print(f"counters at the end: {final} (one counters() call: {counters_cpu * 1e3:.1f} ms CPU)")
    print(f"log events: {dict(sorted(args.log_counter.counts.items()))}")
    if profiler and args.profile_out:
        profiler.dump_stats(args.profile_out)
        print(f"profile written to {args.profile_out}")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())

    print("summary: " + "; ".join(f"{name} {verdict(ok)}" for name, ok in (
        ("online time", finished and elapsed <= target_s), ("CPU", per_reg_us <= CPU_TARGET_US),
        ("memory", mem_steady <= MEMORY_TARGET_KIB), ("UDP errors", total_drops == 0))))

    if reference is not None:
        print_comparison(n, reference, {
            "CPU per registration (us)": per_reg_us, "  of which in the kernel (us)": kernel_us,
            "all online after (s)": elapsed if finished else None,
            "memory per account (bytes)": mem_steady * 1024, "datagrams dropped (its socket)": txuac_drops})

    yield service.stopService()
    if not finished:
        harness.keep = True
    return finished, poll.loaded_after, elapsed


@defer.inlineCallbacks
def run_stores(reactor, args, harness: Harness):
    """run() once per --store; with more than one, a table comparing them. Deferred[all online in each]."""
    results = {}
    for kind in args.store:
        results[kind] = yield run(reactor, args, harness, kind)
        registrar_cleanups, harness.cleanups = harness.cleanups, []
        for function, f_args, kwargs in reversed(registrar_cleanups):  # this store's servers, before the next
            function(*f_args, **kwargs)
    if len(results) > 1:
        print(f"stores compared, {args.accounts:,} accounts (seconds after the start):")
        print(f"  {'store':10} {'loaded':>8} {'all online':>11}")
        for kind, (finished, loaded, elapsed) in results.items():
            online = f"{elapsed:.2f}" if finished else "NOT"
            print(f"  {kind:10} {loaded if loaded is not None else float('nan'):8.2f} {online:>11}")
    return all(finished for finished, _, _ in results.values())


def main(reactor, args):
    harness = Harness()
    d = run_stores(reactor, args, harness)

    def finish(finished):
        harness.cleanup()
        if not finished:
            raise SystemExit(2)

    def failed(failure):
        harness.keep = True
        harness.cleanup()
        return failure

    d.addCallbacks(finish, failed)
    return d


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", nargs="?", type=int, default=10_000, help="N accounts (default 10,000)")
    parser.add_argument("--store", action="append", choices=STORES,
                        help="where the uacreg table is: sqlite (default), postgres or mysql; repeat to compare")
    parser.add_argument("--rate", type=int, default=None,
                        help="reg_send_rate and reg_dest_rate (REGISTERs per second, to the one registrar); "
                             "default: the service's defaults")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (120)")
    parser.add_argument("--settle", type=float, default=6.0,
                        help="seconds after all are online before the steady-state figures (6: Timer K is 5 s)")
    parser.add_argument("--children", type=int, default=4, help="Kamailio UDP workers (4)")
    parser.add_argument("--shm-mb", type=int, default=512,
                        help="Kamailio shared memory, MiB (at least 512; the registrar's grows with the accounts)")
    parser.add_argument("--pkg-mb", type=int, default=32, help="Kamailio private memory per process, MiB (32)")
    parser.add_argument("--profile", action="store_true", help="cProfile the run; top 25 by tottime")
    parser.add_argument("--profile-out", metavar="FILE", help="with --profile: also write the pstats to FILE")
    parser.add_argument("--tracemalloc", action="store_true", help="also the Python heap per account (slow)")
    parser.add_argument("--census", action="store_true",
                        help="list the gc-tracked object types when all are online (after the measurements)")
    parser.add_argument("--gc-threshold", type=lambda text: tuple(int(x) for x in text.split(",")),
                        metavar="A,B,C", help="experiment: gc.set_threshold(A, B, C) before the start")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="experiment: gc.freeze() once the accounts are loaded")
    parser.add_argument("--log", metavar="FILE", help="write every Twisted log event to FILE")
    parser.add_argument("--compare-kamailio", action="store_true",
                        help="first run Kamailio's own uac module on the same accounts (SQLite) and registrar "
                             "as the reference; print both and the ratios")
    arguments = parser.parse_args()
    arguments.store = arguments.store or ["sqlite"]
    if arguments.compare_kamailio and arguments.store != ["sqlite"]:
        parser.error("--compare-kamailio runs on the SQLite store only (Kamailio reads a copy of its file)")
    if arguments.accounts <= 0:
        parser.error("N must be positive")
    arguments.log_counter = LogCounter(arguments.log)
    globalLogBeginner.beginLoggingTo([arguments.log_counter], redirectStandardIO=False)
    task.react(main, [arguments])
