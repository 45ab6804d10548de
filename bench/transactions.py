"""Client transaction throughput and memory of the SIP stack, against SIPp on loopback.

(a) throughput: OPTIONS client transactions over UDP to a SIPp UAS that answers
    each with 200 OK, with a fixed window of transactions in flight, for N
    seconds after a one second warm-up. Prints transactions per second (wall
    clock) and CPU microseconds per transaction of this process
    (time.process_time, which also counts building the requests);
(b) memory: 10,000 client transactions started at once towards a UDP socket
    that never answers, measured before Timer F ends them: the RSS delta of a
    first batch, then the Python heap held by a second one (tracemalloc). It
    runs first, on a stack of its own, and is printed last.

Also printed: this process's CPU use, retransmissions by the stack (none are
expected: each one means a lost datagram or a late answer) and the host's UDP
receive-buffer drops (Linux RcvbufErrors) during (a).

Usage (from the repository root):
    python bench/transactions.py [seconds=10] [--window 200] [--profile]
``--profile`` runs (a) under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import shutil
import socket
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.internet import defer, task  # noqa: E402

from tests.support.peers import PeerProcess, find_program, free_port, wait_for  # noqa: E402
from measure import rss_kib  # noqa: E402
from txuac.config import settings_from_dict  # noqa: E402
from txuac.service import UACService  # noqa: E402
from txuac.sip import Request, SipURI, make_request, parse_uri  # noqa: E402
from txuac.sip.via import Address  # noqa: E402

HOST = "127.0.0.1"
SCENARIO = os.path.join(REPO, "tests", "net", "sipp", "options_uas.xml")
IN_FLIGHT_FOR_MEMORY = 10_000


def options(uri: SipURI, number: int) -> Request:
    return make_request("OPTIONS", uri.copy(), f"sip:bench@{HOST}", from_tag=f"b{number}",
                        call_id=f"bench-{number}@{HOST}")


def udp_drops() -> int:
    """RcvbufErrors of the host (Linux): datagrams dropped because a receive buffer was full."""
    try:
        with open("/proc/net/snmp") as f:
            names, values = [line.split() for line in f if line.startswith("Udp:")][:2]
    except (OSError, ValueError):
        return 0
    return int(values[names.index("RcvbufErrors")])


def start_sipp(workdir: str) -> tuple[PeerProcess, int]:
    sipp = find_program("sipp")
    if sipp is None:
        sys.exit("sipp is not installed (Debian: sip-tester)")
    port = free_port()
    peer = PeerProcess([sipp, "-sf", SCENARIO, "-i", HOST, "-p", str(port), "-t", "u1", "-nostdin",
                        "-buff_size", str(4 << 20), "-deadcall_wait", "2000"],
                       cwd=workdir, log_path=os.path.join(workdir, "sipp.out"))

    def bound() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                return True
        return False

    if not wait_for(lambda: bound() or not peer.running(), 10) or not peer.running():
        peer.stop()
        sys.exit(f"SIPp did not start:\n{peer.output()[-2000:]}")
    return peer, port


class Window:
    """Keeps ``size`` client transactions in flight; ``run(seconds)`` fires once the last ends."""

    def __init__(self, stack, target: Address, size: int, number: int = 0):
        self.stack = stack
        self.target = target
        self.uri = parse_uri(f"sip:uas@{target.host}:{target.port}")
        self.size = size
        self.number = number
        self.completed = 0
        self.failed = 0
        self.in_flight = 0
        self.deadline = 0.0
        self.done = defer.Deferred()

    def run(self, seconds: float) -> defer.Deferred:
        self.deadline = time.monotonic() + seconds
        self.done = defer.Deferred()
        while self.in_flight < self.size:
            self._start()
        return self.done

    def _start(self) -> None:
        self.number += 1
        self.in_flight += 1
        d = self.stack.send_request(options(self.uri, self.number), self.target)
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, response) -> None:
        self.completed += 1
        self._next()

    def _failed(self, failure) -> None:
        self.failed += 1
        self._next()

    def _next(self) -> None:
        self.in_flight -= 1
        if time.monotonic() < self.deadline:
            self._start()
        elif self.in_flight == 0 and not self.done.called:
            self.done.callback(None)


@defer.inlineCallbacks
def throughput(reactor, stack, port: int, seconds: float, window_size: int, profile: bool):
    window = Window(stack, Address("udp", HOST, port), window_size)
    yield window.run(1.0)  # warm-up
    window.completed = window.failed = 0
    gc.collect()
    profiler = cProfile.Profile() if profile else None
    wall, cpu, drops = time.monotonic(), time.process_time(), udp_drops()
    retransmissions = stack.retransmissions
    if profiler:
        profiler.enable()
    yield window.run(seconds)
    if profiler:
        profiler.disable()
    wall, cpu, drops = time.monotonic() - wall, time.process_time() - cpu, udp_drops() - drops
    done = window.completed
    print(f"(a) {done} OPTIONS transactions in {wall:.2f} s with {window_size} in flight: "
          f"{done / wall:,.0f} transactions/s, {cpu / max(done, 1) * 1e6:.0f} CPU us/transaction "
          f"(CPU {cpu / wall * 100:.0f}% of one core), {window.failed} failed, "
          f"{stack.retransmissions - retransmissions} retransmissions, {drops} datagrams dropped by full UDP buffers")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


def start_many(stack, uri, target: Address, first: int) -> list[defer.Deferred]:
    deferreds = []
    for number in range(first, first + IN_FLIGHT_FOR_MEMORY):
        d = stack.send_request(options(uri, number), target)
        d.addErrback(lambda f: None)
        deferreds.append(d)
    return deferreds


def memory(stack) -> str:
    """(b), on a fresh stack: RSS without tracemalloc, then the Python heap with it."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read: never answers
    sink.bind((HOST, 0))
    target = Address("udp", HOST, sink.getsockname()[1])
    uri = parse_uri(f"sip:uas@{HOST}:{target.port}")
    start_many(stack, uri, target, 0)  # warm-up: imports, caches, the reactor's structures
    gc.collect()
    before_rss = rss_kib()
    started = time.monotonic()
    kept = start_many(stack, uri, target, 1_000_000)
    elapsed = time.monotonic() - started
    gc.collect()
    rss = (rss_kib() - before_rss) * 1024
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept += start_many(stack, uri, target, 2_000_000)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    pending = stack.pending_client_transactions
    sink.close()  # the stack is stopped right after, before Timer E fires again
    return (f"(b) memory of {IN_FLIGHT_FOR_MEMORY:,} client transactions in flight (UDP, no answer; "
            f"{pending:,} pending in all with the warm-up and both passes, Timer F is "
            f"{stack.timers.timeout:.0f} s; {IN_FLIGHT_FOR_MEMORY:,} started in {elapsed:.2f} s): "
            f"Python heap {held / 1024 / 1024:.1f} MiB = {held / IN_FLIGHT_FOR_MEMORY / 1024:.2f} KiB each "
            f"(tracemalloc), RSS +{rss / 1024 / 1024:.1f} MiB = {rss / IN_FLIGHT_FOR_MEMORY / 1024:.2f} KiB each")


def uac(reactor) -> UACService:
    service = UACService(settings_from_dict({"core": {"listen": [f"udp:{HOST}:0"]}, "rpc": {"enabled": False}}), reactor)
    service.startService()
    return service


@defer.inlineCallbacks
def main(reactor, args):
    workdir = tempfile.mkdtemp(prefix="txuac-bench-")  # SIPp's output, removed at the end
    print(f"reactor {type(reactor).__module__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    service = uac(reactor)
    try:
        report = memory(service.stack)
    finally:
        yield service.stack.stop(grace=0)
        yield service.stopService()
    peer, port = start_sipp(workdir)
    service = uac(reactor)
    try:
        print(f"SIPp UAS on udp:{HOST}:{port}")
        yield throughput(reactor, service.stack, port, args.seconds, args.window, args.profile)
    finally:
        yield service.stack.stop(grace=0)
        yield service.stopService()
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", nargs="?", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    task.react(main, [parser.parse_args()])
