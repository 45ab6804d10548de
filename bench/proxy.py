"""Calls per second through txuac's proxy with the caller's From anonymised.

txuac runs as its own process (``python -m twisted uac --config <tmp toml>``, the build
this interpreter imports: ``./dev bench proxy`` runs the compiled one) listening on UDP
127.0.0.1, with a routing script that record-routes each INVITE, replaces its From with
``uac.uac_replace_from("Anonymous", "sip:anonymous@anonymous.invalid")`` (restore_mode
auto: vsf on our Record-Route) and relays it; in-dialog requests go through
``rr.loose_route()`` (which restores the From) and ``tm.t_relay()``. This is the
anonymising script of tests/routing/test_interop_proxy.py.

A SIPp UAC (tests/routing/sipp/uac_call.xml: INVITE, 100/180/200, ACK, 200 ms pause, BYE,
200) calls at ``--rate`` calls per second (``-rp 1000``) through txuac to a SIPp UAS
(uas_call.xml). Printed:

* calls attempted, successful and failed, and SIPp's retransmissions (its -trace_stat);
* wall time of the UAC and calls per second (successful calls / wall time: about the rate
  when txuac keeps up);
* txuac's CPU over that window (utime + stime from /proc/<pid>/stat, before and after),
  the CPU per call (us), split into its own code (utime) and the kernel (stime), and
  "one core" = successful calls / txuac CPU seconds: what one core fully spent on txuac
  would carry;
* txuac's resident memory before and after the calls (VmRSS) and per call: the
  transactions of a call linger 64*T1 = 32 s after it (Timers J, L, M), with all they hold;
* the host's UDP receive errors (/proc/net/snmp) over the window.

``--compare-kamailio`` first makes the same calls through Kamailio's own uac module as the
reference (tests/support/kamailio-proxy.cfg without its log line per request: record_route,
``uac_replace_from`` in restore_mode auto, ``t_relay``; ``--kamailio-children`` workers,
``-m 1024``) to the same SIPp UAS, then through txuac, and prints both (CPU of all Kamailio's
processes, PSS) and the ratios. Kamailio's workers reorder 180/200 under load, which SIPp counts
as failed calls: the CPU is compared per successful call.

Target: at least 800 calls per second on one core with no failed call. The default run
(32,000 calls at 800/s, 40 s) lasts long enough for the garbage collector's generation-1
collections (every 50 young collections under ``twist uac``'s thresholds) and for the
first transactions to end: a shorter run can miss both.

``--profile`` runs txuac under cProfile (stats written at reactor shutdown; start-up
included, figures inflated) and prints the top functions by tottime and cumulative time.
``--gc-log`` prints txuac's collections of GC_LOG_MS or more per generation;
``--gc-threshold A,B,C`` is an experiment: other thresholds than ``twist uac`` sets.

Usage (from the repository root; ``./dev bench proxy [args]`` runs the compiled build):
    python bench/proxy.py [--calls 32000] [--rate 800] [--profile [--top 30]] [--gc-log]
        [--gc-threshold A,B,C] [--log-level info] [--keep] [--compare-kamailio [--kamailio-children 4]]
Exit status 2 when a call failed or not every call was made.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from typing import Callable

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.trial.unittest import SkipTest  # noqa: E402

import txuac  # noqa: E402
import txuac.sip  # noqa: E402
from measure import group_pss_kib, group_times, process_times, rss_kib, udp_errors  # noqa: E402
from tests.support.kamailio import PROXY_CONFIG, KamailioRegistrar  # noqa: E402
from tests.support.peers import PeerProcess, free_port, require_program, wait_for  # noqa: E402
from tests.support.sipp import udp_bound  # noqa: E402
from tests.support.sipp_proxy import ANONYMISING_SCRIPT, SCENARIOS, last_stats  # noqa: E402

HOST = "127.0.0.1"
TARGET_PER_CORE = 800.0
START_TIMEOUT = 20.0
GC_LOG_MS = 20
RSS_INTERVAL = 10.0  # seconds between two VmRSS samples of txuac during the calls
PROFILED_STOP_TIMEOUT = 40.0  # seconds: 64*T1 and the time to write the stats

CONFIG = """\
[core]
listen = ["udp:{host}:{port}"]

[rpc]
enabled = false

[log]
level = "{log_level}"

[routing]
script = "{script}"
restore_mode = "auto"
restore_passwd = "bench-secret"
"""


def log_text(line: str) -> str:
    """What a line of txuac's log says: the text of twist's JSON line (stderr output
    included), or the line itself."""
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return line
        return str(event.get("log_io") or event.get("log_text") or event.get("log_format") or "")
    return line


def loud_level(line: str) -> bool:
    """Whether a line of txuac's log (twist's JSON lines, or text) is a warning or worse."""
    if log_text(line).startswith("gc: "):
        return False  # --gc-log's own lines (stderr is logged at error level)
    if line.startswith("{"):
        try:
            level = (json.loads(line).get("log_level") or {}).get("name")
        except (ValueError, AttributeError):
            return False
        return level in ("warn", "error", "critical")
    return any(f"[{name}" in line.lower() for name in ("warn", "error", "critical"))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


@dataclasses.dataclass
class CallFigures:
    """What one proxy did with the SIPp UAC's calls."""

    label: str
    created: int
    successful: int
    failed: int
    retransmissions: int
    status: int | None
    wall: float
    cpu: float  # seconds, the proxy's processes
    kernel: float  # seconds of cpu in the kernel (stime)
    memory_before: int  # KiB
    memory_after: int
    memory_samples: list[tuple[float, int]]
    errors: dict[str, int]  # the host's UDP receive errors over the calls

    @property
    def cpu_per_call(self) -> float:
        """Microseconds of the proxy's CPU per successful call."""
        return self.cpu / max(self.successful, 1) * 1e6

    @property
    def kernel_per_call(self) -> float:
        """Microseconds of it in the kernel (sending, receiving, waking up, page faults)."""
        return self.kernel / max(self.successful, 1) * 1e6

    def report(self, name: str, memory: str) -> None:
        print(f"{name}: calls: {self.created:,} attempted, {self.successful:,} successful, {self.failed:,} failed "
              f"(SIPp UAC exit status {self.status}); SIPp UAC retransmissions {self.retransmissions:,}")
        print(f"{name}: wall time {self.wall:.2f} s, {self.successful / self.wall:,.0f} calls/s")
        print(f"{name}: CPU {self.cpu:.2f} s = {self.cpu / self.wall * 100:.0f}% of one core; "
              f"{self.cpu_per_call:,.0f} us per successful call (INVITE, ACK, BYE and 3 responses relayed, a 100 sent; "
              f"{self.cpu_per_call - self.kernel_per_call:,.0f} in its code, {self.kernel_per_call:,.0f} in the kernel)")
        print(f"{name}: memory ({memory}): {self.memory_before / 1024:.0f} MiB before the calls, "
              f"{self.memory_after / 1024:.0f} MiB after "
              f"({(self.memory_after - self.memory_before) / max(self.successful, 1):.1f} KiB per call); "
              f"during the calls: " + ", ".join(f"{seconds:.0f} s {kib / 1024:.0f}" for seconds, kib in self.memory_samples))
        print(f"{name}: UDP receive errors (host): RcvbufErrors +{self.errors['RcvbufErrors']}, "
              f"InErrors +{self.errors['InErrors']}")


class Bench:
    """The three processes (txuac, SIPp UAS, SIPp UAC) and their files in a temp dir."""

    def __init__(self, args):
        self.args = args
        self.sipp = require_program("sipp")
        self.workdir = tempfile.mkdtemp(prefix="txuac-bench-proxy-")
        self.peers: list[PeerProcess] = []
        self.cleanups: list = []
        self.port = free_port()

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def start_txuac(self) -> PeerProcess:
        script = self.path("routing.py")
        with open(script, "w") as f:
            f.write(ANONYMISING_SCRIPT)
        config = self.path("uac.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(host=HOST, port=self.port, script=script, log_level=self.args.log_level))
        if self.args.profile or self.args.gc_log or self.args.gc_threshold:
            argv = [sys.executable, os.path.abspath(__file__), "--serve", config,
                    self.path("txuac.pstats") if self.args.profile else "", "gc-log" if self.args.gc_log else "",
                    self.args.gc_threshold or ""]
        else:
            argv = [sys.executable, "-m", "twisted", "uac", "--config", config]
        # The child imports txuac from where this process did (site-packages or the checkout),
        # run from the temp dir so that a checkout in the cwd does not shadow a compiled install.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(txuac.__file__))), os.path.abspath(REPO)]))
        txuac_process = self.spawn(argv, "txuac.log", env=env)
        if not wait_for(lambda: udp_bound(self.port) or not txuac_process.running(), START_TIMEOUT):
            raise SystemExit(f"txuac did not listen within {START_TIMEOUT} s:\n{txuac_process.output()[-3000:]}")
        if not txuac_process.running():
            raise SystemExit(f"txuac exited:\n{txuac_process.output()[-3000:]}")
        return txuac_process

    def spawn(self, argv: list[str], log_name: str, env: dict | None = None) -> PeerProcess:
        peer = PeerProcess(argv, cwd=self.workdir, env=env, log_path=self.path(log_name))
        self.peers.append(peer)
        return peer

    def sipp_argv(self, scenario: str, port: int, *args: str, stats: str | None = None) -> list[str]:
        return [self.sipp, "-sf", os.path.join(SCENARIOS, scenario), "-i", HOST, "-p", str(port), "-t", "u1",
                "-trace_stat", "-stf", self.path(stats or f"{scenario}.stats"), "-fd", "1", "-nostdin", *args]

    def calls_through(self, label: str, port: int, uas_port: int, cpu: Callable[[], tuple[float, float]],
                      memory: Callable[[], int]) -> CallFigures:
        """A SIPp UAC making --calls calls at --rate through the proxy on ``port`` to the UAS on
        ``uas_port``; ``cpu()`` (user and system seconds) and ``memory()`` (KiB) are the proxy's, read before,
        every RSS_INTERVAL during and after the calls."""
        args = self.args
        uac_argv = self.sipp_argv("uac_call.xml", free_port(), f"{HOST}:{port}", "-key", "uas",
                                  f"{HOST}:{uas_port}", "-m", str(args.calls), "-r", str(args.rate), "-rp", "1000",
                                  "-l", str(args.limit), "-timeout", str(args.timeout), "-timeout_error",
                                  stats=f"uac_call.{label}.stats")
        errors_before = udp_errors()
        cpu_before = cpu()
        memory_before = memory()
        started = time.monotonic()
        uac = self.spawn(uac_argv, f"uac.{label}.out")
        memory_samples = []  # (seconds, KiB) every RSS_INTERVAL while the calls go on
        while uac.running() and time.monotonic() - started < args.timeout + 30:
            time.sleep(0.1)
            if time.monotonic() - started >= (len(memory_samples) + 1) * RSS_INTERVAL:
                memory_samples.append((time.monotonic() - started, memory()))
        status = uac.wait(5)
        wall = time.monotonic() - started
        cpu_after = cpu()
        used, kernel = sum(cpu_after) - sum(cpu_before), cpu_after[1] - cpu_before[1]
        memory_after = memory()
        errors = {name: count - errors_before[name] for name, count in udp_errors().items()}
        stats = last_stats(self.path(f"uac_call.{label}.stats"))
        return CallFigures(
            label=label, created=int(stats.get("TotalCallCreated", 0)),
            successful=int(stats.get("SuccessfulCall(C)", 0)), failed=int(stats.get("FailedCall(C)", 0)),
            retransmissions=int(stats.get("Retransmissions(C)", 0)), status=status, wall=wall, cpu=used, kernel=kernel,
            memory_before=memory_before, memory_after=memory_after, memory_samples=memory_samples, errors=errors)

    def start_uas(self) -> int:
        """The SIPp UAS both proxies relay to; its port."""
        uas_port = free_port()
        uas = self.spawn(self.sipp_argv("uas_call.xml", uas_port), "uas.out")
        if not wait_for(lambda: udp_bound(uas_port) or not uas.running(), START_TIMEOUT) or not uas.running():
            raise SystemExit(f"SIPp UAS did not start:\n{uas.output()[-3000:]}")
        return uas_port

    def kamailio_reference(self, uas_port: int) -> CallFigures:
        """The same calls through Kamailio's own uac module (tests/support/kamailio-proxy.cfg:
        record_route, uac_replace_from in restore_mode auto, t_relay; no log line per request)."""
        try:
            kamailio = KamailioRegistrar(self, config=PROXY_CONFIG, children=self.args.kamailio_children,
                                         shm_mb=1024, pkg_mb=32, udp_maxbuffer=4 * 1024 * 1024,
                                         defines={"RESTORE_PASSWD": '"bench-secret"', "QUIET": None})
        except SkipTest as e:
            raise SystemExit(f"cannot run Kamailio: {e}")
        print(f"Kamailio proxy (reference) on udp:{HOST}:{kamailio.port}: {self.args.kamailio_children} workers, "
              f"-m 1024 -M 32")
        figures = self.calls_through("kamailio", kamailio.port, uas_port, lambda: group_times(kamailio.pid),
                                     lambda: group_pss_kib(kamailio.pid))
        kamailio.stop()
        figures.report("Kamailio", "PSS of all its processes")
        return figures

    def run(self) -> bool:
        args = self.args
        print(f"txuac proxy bench: {args.calls:,} calls at {args.rate}/s, SIP core "
              f"{'COMPILED (mypyc)' if txuac.sip.COMPILED else 'pure Python'} from "
              f"{os.path.dirname(txuac.__file__)}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}{'; txuac under cProfile' if args.profile else ''}")
        uas_port = self.start_uas()
        reference = self.kamailio_reference(uas_port) if args.compare_kamailio else None
        txuac_process = self.start_txuac()
        figures = self.calls_through("txuac", self.port, uas_port, lambda: process_times(txuac_process.pid),
                                     lambda: rss_kib(txuac_process.pid))
        figures.report("txuac", "VmRSS; transactions linger 64*T1 = 32 s")
        per_core = figures.successful / figures.cpu if figures.cpu else float("inf")
        print(f"one core: {per_core:,.0f} calls/s (target >= {TARGET_PER_CORE:g} with 0 failed: "
              f"{verdict(per_core >= TARGET_PER_CORE and figures.failed == 0)})")

        # Under cProfile the stats are written once the reactor has stopped, which waits up to
        # 64*T1 for pending client transactions: not killed after the usual 5 s then.
        txuac_process.stop(timeout=PROFILED_STOP_TIMEOUT if args.profile else 5.0)
        log = txuac_process.output()
        loud = [line for line in log.splitlines() if loud_level(line)]
        print(f"txuac log: {len(log.splitlines())} lines, {len(loud)} warnings or errors ({self.path('txuac.log')})")
        for line in loud[:10]:
            print(f"    {line[:500]}")
        if args.gc_log:
            collections = [text.split() for text in map(log_text, log.splitlines()) if text.startswith("gc: ")]
            print(f"txuac garbage collections of {GC_LOG_MS} ms or more (the calls, start-up and shutdown):")
            for generation in "012":
                pauses = [int(words[4]) for words in collections if words[2] == generation]
                if pauses:
                    print(f"    generation {generation}: {len(pauses)}, longest {max(pauses)} ms, "
                          f"{sum(pauses) / 1000:.2f} s in all")
        if args.profile:
            self.print_profile()
        if reference is not None:
            print(f"compared, {args.calls:,} calls at {args.rate}/s, same SIPp UAS "
                  f"(load average {os.getloadavg()[0]:.2f}):")
            print(f"  {'':28} {'Kamailio':>10} {'txuac':>10} {'txuac/Kamailio':>15}")
            for name, theirs, ours in (
                    ("CPU per successful call (us)", reference.cpu_per_call, figures.cpu_per_call),
                    ("  of which in the kernel (us)", reference.kernel_per_call, figures.kernel_per_call),
                    ("successful calls", reference.successful, figures.successful),
                    ("failed calls", reference.failed, figures.failed)):
                ratio = f"{ours / theirs:.2f}x" if theirs else "-"
                print(f"  {name:28} {theirs:>10,.0f} {ours:>10,.0f} {ratio:>15}")
        return figures.failed == 0 and figures.successful == args.calls

    # What KamailioRegistrar needs of a trial TestCase.
    def mktemp(self) -> str:
        return self.path(f"kamailio-{len(self.peers)}")

    def addCleanup(self, function, *args, **kwargs) -> None:
        self.cleanups.append((function, args, kwargs))

    def print_profile(self) -> None:
        path = self.path("txuac.pstats")
        if not os.path.exists(path):
            print(f"no profile written at {path} (txuac did not stop cleanly?)")
            return
        out = io.StringIO()
        stats = pstats.Stats(path, stream=out)
        stats.sort_stats("tottime").print_stats(self.args.top)
        stats.sort_stats("cumulative").print_stats(self.args.top)
        print(out.getvalue())

    def cleanup(self, keep: bool) -> None:
        for peer in reversed(self.peers):
            peer.stop()
        while self.cleanups:
            function, args, kwargs = self.cleanups.pop()
            function(*args, **kwargs)
        if keep:
            print(f"kept {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def serve(config: str, pstats_path: str | None, gc_log: bool, gc_threshold: str) -> None:
    """``python -m twisted uac --config config`` (the txuac child of --profile, --gc-log and
    --gc-threshold): under cProfile with the stats written to ``pstats_path`` once the
    reactor has shut down (twist ends a SIGTERM'd process by the signal itself, so ``python
    -m cProfile`` would never write them); with ``gc_log``, each garbage collection of
    GC_LOG_MS or more printed on stderr (txuac's log file) as "gc: ..."; ``gc_threshold``
    "A,B,C" replaces the thresholds ``twist uac`` set once the reactor runs."""
    import cProfile
    import gc
    import runpy

    from twisted.internet import reactor

    if gc_log:
        started = [0.0]

        def log_collection(phase: str, info: dict) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
                return
            elapsed = (time.perf_counter() - started[0]) * 1000
            if elapsed >= GC_LOG_MS:
                print(f"gc: generation {info['generation']} took {elapsed:.0f} ms, {info['collected']} collected",
                      file=sys.stderr, flush=True)

        gc.callbacks.append(log_collection)
    if gc_threshold:
        reactor.callWhenRunning(gc.set_threshold, *(int(x) for x in gc_threshold.split(",")))
    profiler = cProfile.Profile(time.process_time) if pstats_path else None  # CPU time: others share the cores
    if profiler is not None:
        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(pstats_path)

        reactor.addSystemEventTrigger("after", "shutdown", dump)
        profiler.enable()
    sys.argv = ["twist", "uac", "--config", config]
    runpy.run_module("twisted", run_name="__main__")


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:  # the txuac child of --profile, --gc-log or --gc-threshold
        serve(sys.argv[2], sys.argv[3] or None, sys.argv[4] == "gc-log", sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=32000,
                        help="calls made by the SIPp UAC (32000: 40 s at 800/s, past the 32 s transactions linger)")
    parser.add_argument("--rate", type=int, default=800, help="calls started per second (800)")
    parser.add_argument("--limit", type=int, default=2000, help="SIPp's -l: simultaneous calls at most (2000)")
    parser.add_argument("--timeout", type=int, default=120, help="SIPp UAC's global timeout, seconds (120)")
    parser.add_argument("--log-level", default="info", help="txuac's [log] level (info)")
    parser.add_argument("--profile", action="store_true", help="run txuac under cProfile; top functions")
    parser.add_argument("--gc-log", action="store_true",
                        help=f"print txuac's garbage collections of {GC_LOG_MS} ms or more")
    parser.add_argument("--gc-threshold", metavar="A,B,C",
                        help="experiment: gc.set_threshold(A, B, C) in txuac instead of what twist uac sets")
    parser.add_argument("--top", type=int, default=30, help="with --profile: functions listed (30)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stats, profile)")
    parser.add_argument("--compare-kamailio", action="store_true",
                        help="first make the same calls through Kamailio's own uac module (record_route, "
                             "uac_replace_from, t_relay; -m 1024) to the same UAS; print both and the ratios")
    parser.add_argument("--kamailio-children", type=int, default=4,
                        help="with --compare-kamailio: Kamailio's UDP workers (4)")
    args = parser.parse_args()
    if args.calls <= 0 or args.rate <= 0:
        parser.error("--calls and --rate must be positive")
    bench = Bench(args)
    ok = False
    try:
        ok = bench.run()
    finally:
        bench.cleanup(args.keep or not ok)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
