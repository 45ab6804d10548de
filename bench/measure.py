"""What the benchmarks share: calls per CPU second on one core, the CPU of a piece of work
(optionally profiled), the resident and proportional memory, the CPU of other processes
(/proc/<pid>/stat), the machine's busy CPU and the host's UDP receive errors."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def registrar_shm_mb(accounts: int, parties: int = 1, least: int = 512) -> int:
    """Shared memory (MiB) for a Kamailio registrar that ``parties`` registrants each register
    ``accounts`` accounts with: its tm keeps each REGISTER transaction (the 401'd and the 200'd
    one) a while after its reply, beside the bindings. 512 MiB ran out at 10,000 accounts
    registered twice: save() answered 500 "No error (2/SL)" (E_OUT_OF_MEM), and those
    accounts came online only at their retry."""
    return max(least, accounts * parties * 64 // 1024)


def per_core(label: str, unit: str, call: Callable[[int], object], seconds: float, batch: int = 500) -> float:
    """Run ``call(n)`` with n = 1, 2, ... for about ``seconds``; print and return calls per CPU second."""
    call(0)
    count = 0
    start_cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for n in range(count + 1, count + batch + 1):
            call(n)
        count += batch
    cpu = time.process_time() - start_cpu
    rate = count / cpu
    print(f"{label}: {rate:,.0f} {unit}/s per core ({cpu / count * 1e6:.2f} us CPU each, {count} {unit})")
    return rate


class TimedWork:
    """The CPU seconds of the work run through ``run`` (``cpu``), under ``profile`` when
    one is given: the in-process benchmarks time txuac's work and not their peers'.

    With ``pause`` seconds, an untimed sleep comes before every ``pause_every``-th unit of
    work: the process then wakes for its work as in a real run at a low rate, and the same
    instructions cost more (docs/benchmarks.rst: about twice as much on the 2-core machine
    with a 0.7 ms pause before every datagram).
    """

    def __init__(self, profile: cProfile.Profile | None = None, pause: float = 0.0, pause_every: int = 1):
        self.profile = profile
        self.pause = pause
        self.pause_every = pause_every
        self.units = 0
        self.cpu = 0.0

    def run(self, work: Callable[..., object], *args) -> float:
        """``work(*args)``, timed; its CPU seconds."""
        self.units += 1
        if self.pause and self.units % self.pause_every == 0:
            time.sleep(self.pause)
        if self.profile is not None:
            self.profile.enable()
        started = time.process_time()
        work(*args)
        spent = time.process_time() - started
        if self.profile is not None:
            self.profile.disable()
        self.cpu += spent
        return spent


def add_round_options(parser) -> None:
    """--rounds, --profile, --top, --pause and --pause-every, as the in-process benchmarks
    take them (timed_work() reads the last two)."""
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is the figure (5)")
    parser.add_argument("--profile", action="store_true", help="one round under cProfile: top functions")
    parser.add_argument("--top", type=int, default=25, help="with --profile: functions listed (25)")
    parser.add_argument("--pause", type=float, default=0.0, metavar="MS",
                        help="an untimed sleep of MS milliseconds before each unit of txuac's work (0: none)")
    parser.add_argument("--pause-every", type=int, default=1, metavar="N",
                        help="with --pause: sleep before every Nth unit only (1)")


def timed_work(args, profile: cProfile.Profile | None = None) -> TimedWork:
    """A TimedWork for one round, with the --pause options of add_round_options()."""
    if args.pause < 0 or args.pause_every <= 0:
        raise SystemExit("--pause must be at least 0 and --pause-every positive")
    return TimedWork(profile, args.pause / 1000, args.pause_every)


def pause_note(args) -> str:
    """How the --pause options changed the figures, for a bench's first line ("" without)."""
    if not args.pause:
        return ""
    every = "every unit" if args.pause_every == 1 else f"every {args.pause_every} units"
    return f"; an untimed {args.pause:g} ms sleep before {every} of txuac's work"


def print_profile(profile: cProfile.Profile, units: int, unit: str, top: int) -> None:
    """The function calls per ``unit`` and the ``top`` functions by own time."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    print(f"function calls per {unit}: {stats.total_calls / units:,.0f}")
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def rss_kib(pid: int | str = "self") -> int:
    """The resident memory (VmRSS) of this process (or of ``pid``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int | str = "self") -> int:
    """The proportional set size of process ``pid`` (its share of pages it shares), in KiB
    (/proc/<pid>/smaps_rollup, Linux 4.14+; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name: [0] is the state, [1] the parent, [2] the pgrp, [11] utime,
    [12] stime."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """utime + stime (s) of process ``pid`` so far (its threads included, not its children)."""
    return sum(process_times(pid))


def process_times(pid: int) -> tuple[float, float]:
    """(utime, stime) (s) of process ``pid`` so far: the CPU in its own code and in the kernel."""
    fields = _stat_fields(pid)
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def group_cpu(pgid: int | None) -> float:
    """utime + stime (s) of the live processes of process group ``pgid`` (Kamailio's)."""
    return sum(group_times(pgid))


def group_times(pgid: int | None) -> tuple[float, float]:
    """(utime, stime) (s) summed over the live processes of process group ``pgid``."""
    each = _each_in_group(pgid, process_times).values()
    return sum(user for user, _ in each), sum(system for _, system in each)


def group_cpu_each(pgid: int | None) -> dict[int, float]:
    """utime + stime (s) of each live process of process group ``pgid`` (txuac's workers)."""
    return _each_in_group(pgid, process_cpu)


def _each_in_group(pgid: int | None, read: Callable[[int], T]) -> dict[int, T]:
    """``read(pid)`` of each live process of process group ``pgid`` (one that ended meanwhile
    is left out)."""
    each = {}
    for pid in group_pids(pgid):
        try:
            each[pid] = read(pid)
        except OSError:
            continue
    return each


def family_cpu(pid: int | None) -> float:
    """utime + stime (s) of process ``pid`` and its live children (a PostgreSQL server: its
    backends each make a process group of their own)."""
    if pid is None:
        return 0.0
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(entry) == pid or int(_stat_fields(entry)[1]) == pid:
                total += process_cpu(int(entry))
        except OSError:
            continue
    return total


def group_pids(pgid: int | None) -> list[int]:
    """The live processes of process group ``pgid``."""
    pids = []
    if pgid is None:
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(entry)[2]) == pgid:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def group_pss_kib(pgid: int | None) -> int:
    """The PSS of all the live processes of process group ``pgid`` (Kamailio's), in KiB."""
    return sum(pss_kib(pid) for pid in group_pids(pgid))


def machine_busy_cpu() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat: all but
    idle and iowait), whoever spent them."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def udp_errors() -> dict[str, int]:
    """Udp: RcvbufErrors and InErrors of the host (Linux; zeros elsewhere)."""
    try:
        with open("/proc/net/snmp") as f:
            names, values = [line.split() for line in f if line.startswith("Udp:")][:2]
        counters = dict(zip(names[1:], map(int, values[1:])))
    except (OSError, ValueError):
        counters = {}
    return {name: counters.get(name, 0) for name in ("RcvbufErrors", "InErrors")}
