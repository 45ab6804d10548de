"""``[core] workers``: proxied calls and registrations with 1 worker, then with 2.

txuac runs as its own process tree (``python -m twisted uac --config <tmp toml>``; with
``workers = 2`` worker 0 starts worker 1), the same build this interpreter imports.

``proxy``: the anonymising routing script of tests/routing/test_interop_proxy.py (record-route,
From replaced in auto mode, loose-route); a SIPp UAS (uas_call.xml, one socket) and a SIPp
UACs (``--callers``, 4; uac_call.xml: INVITE, 100/180/200, ACK, 200 ms pause, BYE, 200)
sharing the calls, each from its own socket: several sources, which the kernel's
SO_REUSEPORT hash gives to the workers by their address and port; the workers then hand
each call to the worker that owns its Call-ID (txuac.net.handoff), so even one source
(``--callers 1``, an SBC) spreads over them. The UACs are closed-loop: at most
``--limit`` calls at once in all, new ones as fast as ``--rate`` allows, so the calls per
second show what the proxy carries. Printed per run: calls attempted, successful, failed; SIPp's retransmissions; wall
time and successful calls per second; txuac's CPU (its whole process group) per call.
Target: calls/s with 2 workers at least 1.7 times 1 worker's, no failed call.

``registrations``: N accounts (``--accounts``, 50,000) in an SQLite uacreg table, a Kamailio
registrar (tests/support/kamailio.py, digest auth); the time from txuac's launch until the
registrar holds N bindings (its usrloc counter, polled every 0.5 s), and txuac's CPU over
that time. Target: 2 workers in at most 60% of 1 worker's time.

The machine's load matters (SIPp and Kamailio share its cores with txuac): ``uptime`` is
printed first.

Usage (from the repository root):
    python bench/workers.py [proxy|registrations|both] [--calls 20000] [--rate 2000] [--limit 400]
        [--callers 4] [--accounts 50000] [--workers 1,2] [--keep]
Exit status 2 when a target is missed or a call failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.trial.unittest import SkipTest  # noqa: E402

import txuac  # noqa: E402
from measure import group_cpu, group_cpu_each, machine_busy_cpu, registrar_shm_mb, udp_errors  # noqa: E402
from tests.support.accounts import account_rows  # noqa: E402
from tests.support.kamailio import KamailioRegistrar  # noqa: E402
from tests.support.peers import PeerProcess, free_port, require_program, wait_for  # noqa: E402
from tests.support.sipp import udp_bound  # noqa: E402
from tests.support.sipp_proxy import ANONYMISING_SCRIPT, SCENARIOS, last_stats  # noqa: E402
from tests.support.stores import insert_rows  # noqa: E402
from tests.support.workers import all_started  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
SPEEDUP_TARGET = 1.7
SATURATED = 0.9  # a core's share a worker uses when txuac, not the offered load, sets the pace
CALL_HOLD = 0.2  # seconds a call lasts at least: uac_call.xml's pause between ACK and BYE
TIME_TARGET = 0.60
SCHEMA = os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "conf", "schema", "sqlite.sql")


class Harness:
    """A temp dir, the processes started in it, and what KamailioRegistrar needs of a TestCase."""

    def __init__(self, keep: bool):
        self.base = tempfile.mkdtemp(prefix="txuac-bench-workers-")
        self.keep = keep
        self.count = 0
        self.cleanups: list = []

    def path(self, name: str) -> str:
        return os.path.join(self.base, name)

    def mktemp(self) -> str:
        self.count += 1
        return self.path(f"t{self.count}")

    def addCleanup(self, function, *args, **kwargs) -> None:
        self.cleanups.append((function, args, kwargs))

    def spawn(self, argv: list[str], log_name: str, env: dict | None = None) -> PeerProcess:
        peer = PeerProcess(argv, cwd=self.base, env=env, log_path=self.path(log_name))
        self.addCleanup(peer.stop)
        return peer

    def start_txuac(self, config_text: str, workers: int, label: str) -> PeerProcess:
        config = self.path(f"uac.{label}.toml")
        with open(config, "w") as f:
            f.write(config_text)
        # The children import txuac from where this process did (site-packages or the checkout).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(txuac.__file__))), os.path.abspath(REPO)]))
        process = self.spawn([sys.executable, "-m", "twisted", "--log-format", "text", "uac", "--config", config],
                             f"txuac.{label}.log", env=env)
        if not wait_for(lambda: all_started(process, workers) or not process.running(), START_TIMEOUT):
            raise SystemExit(f"txuac did not start {workers} worker(s) within {START_TIMEOUT} s:\n"
                             f"{process.output()[-3000:]}")
        if not process.running():
            raise SystemExit(f"txuac exited:\n{process.output()[-3000:]}")
        return process

    def cleanup(self) -> None:
        while self.cleanups:
            function, args, kwargs = self.cleanups.pop()
            try:
                function(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - go on with the others
                print(f"cleanup {function!r} failed: {e}", file=sys.stderr)
        if self.keep:
            print(f"kept {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def proxy_run(harness: Harness, args, workers: int) -> dict:
    sipp = require_program("sipp")
    label = f"proxy{workers}"
    port, uas_port = free_port(), free_port()
    script = harness.path("routing.py")
    with open(script, "w") as f:
        f.write(ANONYMISING_SCRIPT)
    txuac_process = harness.start_txuac(
        f'[core]\nlisten = ["udp:{HOST}:{port}"]\nworkers = {workers}\n[rpc]\nenabled = false\n'
        f'[routing]\nscript = "{script}"\n', workers, label)

    def sipp_argv(scenario: str, local_port: int, *more: str) -> list[str]:
        return [sipp, "-sf", os.path.join(SCENARIOS, scenario), "-i", HOST, "-p", str(local_port),
                "-trace_stat", "-stf", harness.path(f"{scenario}.{label}.stats"), "-fd", "1", "-nostdin", *more]

    uas = harness.spawn(sipp_argv("uas_call.xml", uas_port, "-t", "u1"), f"uas.{label}.out")
    if not wait_for(lambda: udp_bound(uas_port) or not uas.running(), 20):
        raise SystemExit(f"SIPp UAS did not start: {uas.output()[-2000:]}")
    errors_before = udp_errors()
    cpu_before = group_cpu_each(txuac_process.pid)
    busy_before = machine_busy_cpu()
    started = time.monotonic()
    callers = []
    for caller in range(args.callers):
        stats = harness.path(f"uac_call.{label}.{caller}.stats")
        argv = sipp_argv("uac_call.xml", free_port(), f"{HOST}:{port}", "-t", "u1", "-key", "uas",
                         f"{HOST}:{uas_port}", "-m", str(args.calls // args.callers),
                         "-r", str(args.rate // args.callers), "-rp", "1000", "-l", str(args.limit // args.callers),
                         "-timeout", str(args.call_timeout), "-timeout_error")
        argv[argv.index("-stf") + 1] = stats
        callers.append((harness.spawn(argv, f"uac.{label}.{caller}.out"), stats))
    statuses = [uac.wait(args.call_timeout + 30) for uac, _ in callers]
    wall = time.monotonic() - started
    cpu_after = group_cpu_each(txuac_process.pid)
    each = [cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in sorted(cpu_after)]
    cpu = sum(each)
    others = machine_busy_cpu() - busy_before - cpu
    errors_after = udp_errors()
    totals = {"SuccessfulCall(C)": 0, "FailedCall(C)": 0, "TotalCallCreated": 0, "Retransmissions(C)": 0}
    for _, stats in callers:
        row = last_stats(stats)
        for name in totals:
            totals[name] += int(row.get(name, 0))
    successful, failed = totals["SuccessfulCall(C)"], totals["FailedCall(C)"]
    status = max(statuses, key=abs)
    figures = {"workers": workers, "created": totals["TotalCallCreated"], "successful": successful,
               "failed": failed, "retransmissions": totals["Retransmissions(C)"], "status": status,
               "wall": wall, "cps": successful / wall, "cpu": cpu, "others": others,
               "cpu_per_call": cpu / max(successful, 1) * 1e6,
               "rcvbuf_errors": errors_after["RcvbufErrors"] - errors_before["RcvbufErrors"]}
    print(f"proxy, {workers} worker(s): {figures['created']:,} calls attempted, {successful:,} successful, "
          f"{failed:,} failed (SIPp UAC exit status {status}), SIPp retransmissions {figures['retransmissions']:,}; "
          f"{wall:.1f} s: {figures['cps']:,.0f} calls/s; txuac CPU {cpu:.1f} s "
          f"({cpu / wall * 100:.0f}% of one core), {figures['cpu_per_call']:,.0f} us per call; the rest of the machine "
          f"(SIPp, other load) {others:.1f} s; UDP RcvbufErrors +{figures['rcvbuf_errors']}; CPU of each txuac "
          f"process (each call handled by the worker that owns its Call-ID): "
          f"{', '.join(f'{seconds:.1f} s' for seconds in each)}", flush=True)
    for peer in (*(uac for uac, _ in callers), uas):
        peer.stop()
    txuac_process.stop(timeout=40)  # its transactions end within 64*T1; worker 0 then removes its files
    return figures


def registrations_run(harness: Harness, args, workers: int, registrar: KamailioRegistrar, rows: list[dict]) -> dict:
    label = f"reg{workers}"
    path = harness.path(f"uacreg.{label}.sqlite")
    make_table(path, rows)
    port = free_port()
    n = len(rows)
    baseline = registrar.contact_count()
    busy_before = machine_busy_cpu()
    started = time.monotonic()
    txuac_process = harness.start_txuac(
        f'[core]\nlisten = ["udp:{HOST}:{port}"]\nworkers = {workers}\n'
        f'[uac]\nreg_db_url = "sqlite:///{path}"\nreg_contact_addr = "{HOST}:{port}"\nreg_retry_interval = 5\n'
        f'[rpc]\nenabled = false\n', workers, label)
    started_up = time.monotonic() - started
    online = 0
    while time.monotonic() - started < args.timeout:
        online = registrar.contact_count() - baseline
        if online >= n:
            break
        time.sleep(0.5)
    all_up = time.monotonic() - started
    cpu = group_cpu(txuac_process.pid)
    others = machine_busy_cpu() - busy_before - cpu
    figures = {"workers": workers, "online": online, "seconds": all_up, "started": started_up, "cpu": cpu,
               "others": others,
               "cpu_per_registration": cpu / max(online, 1) * 1e6}
    print(f"registrations, {workers} worker(s): {online:,} of {n:,} bound at the registrar "
          f"{all_up:.1f} s after launch (all workers started after {started_up:.1f} s); "
          f"txuac CPU {cpu:.1f} s, {figures['cpu_per_registration']:.0f} us per registration (start-up included); "
          f"the rest of the machine (the registrar, other load) {others:.1f} s",
          flush=True)
    txuac_process.stop(timeout=30)
    # Their bindings stay until they expire: the next run counts from what is there then.
    return figures


def ceiling(run: dict, wall_key: str, workers: int) -> float:
    """The most ``workers`` could speed up ``run``'s work on this machine: its wall time over
    the least wall time the same CPU needs when txuac's share spreads over ``workers``
    processes and everything else the run kept busy (peers, other load) stays as it was,
    all on the machine's cores."""
    cores = os.cpu_count() or 1
    least = max((run["cpu"] + run["others"]) / cores, run["cpu"] / workers)
    return run[wall_key] / least if least > 0 else float("inf")


def make_table(path: str, rows: list[dict]) -> None:
    import sqlite3

    with open(SCHEMA) as f:
        schema = f.read()
    connection = sqlite3.connect(path)
    try:
        connection.executescript(schema)
        insert_rows(connection, rows, "?")
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="both", choices=("proxy", "registrations", "both"))
    parser.add_argument("--calls", type=int, default=20_000, help="calls per run (20,000)")
    parser.add_argument("--rate", type=int, default=2000, help="SIPp's highest call rate (2,000/s)")
    parser.add_argument("--limit", type=int, default=400, help="calls at once at most (400)")
    parser.add_argument("--callers", type=int, default=4,
                        help="SIPp UACs sharing the calls, each from its own socket (4)")
    parser.add_argument("--call-timeout", type=int, default=120, help="the SIPp UAC gives up after (120 s)")
    parser.add_argument("--accounts", type=int, default=50_000, help="accounts to register (50,000)")
    parser.add_argument("--timeout", type=float, default=300.0, help="registrations: give up after (300 s)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, in order (1,2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SIPp stats)")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}; "
          f"{os.cpu_count()} cores; txuac from {os.path.dirname(txuac.__file__)}", flush=True)
    harness = Harness(args.keep)
    # Stopped by a signal (a timeout): still stop what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ok = True
    try:
        if args.what in ("proxy", "both"):
            runs = [proxy_run(harness, args, count) for count in counts]
            ok &= all(run["failed"] == 0 and run["successful"] == args.calls for run in runs)
            if len(runs) == 2:
                ratio = runs[1]["cps"] / runs[0]["cps"]
                met = ratio >= SPEEDUP_TARGET and ok
                ok &= met
                print(f"proxy: {counts[1]} workers carry {ratio:.2f}x the calls/s of {counts[0]} "
                      f"(target >= {SPEEDUP_TARGET}x, no failed call): {'met' if met else 'MISSED'}; "
                      f"{ceiling(runs[0], 'wall', counts[1]):.2f}x at most on {os.cpu_count()} cores "
                      f"beside the rest of {counts[0]} worker's run", flush=True)
                offered = min(args.rate, args.limit / CALL_HOLD)
                for run in runs:
                    busy = run["cpu"] / run["wall"] / run["workers"]
                    if busy < SATURATED:
                        print(f"proxy: SIPp's load set the pace of the {run['workers']}-worker run, not txuac "
                              f"({run['cps']:,.0f} calls/s where --rate {args.rate} and --limit {args.limit} "
                              f"calls of {CALL_HOLD:.1f} s or more allow {offered:,.0f}; {busy * 100:.0f}% of a "
                              f"core a worker): raise both for this machine", flush=True)
        if args.what in ("registrations", "both"):
            try:
                registrar = KamailioRegistrar(harness, children=4, shm_mb=registrar_shm_mb(args.accounts),
                                              udp_maxbuffer=4 * 1024 * 1024)
            except SkipTest as e:
                raise SystemExit(f"cannot run Kamailio: {e}")
            rows = account_rows(registrar, args.accounts)
            runs = []
            for count in counts:
                runs.append(registrations_run(harness, args, count, registrar, rows))
                if count != counts[-1]:
                    registrar.restart()  # an empty usrloc for the next run
            ok &= all(run["online"] >= args.accounts for run in runs)
            if len(runs) == 2:
                ratio = runs[1]["seconds"] / runs[0]["seconds"]
                met = ratio <= TIME_TARGET and runs[1]["online"] >= args.accounts
                ok &= met
                print(f"registrations: {counts[1]} workers take {ratio * 100:.0f}% of {counts[0]} worker's time "
                      f"(target <= {TIME_TARGET * 100:.0f}%): {'met' if met else 'MISSED'}; "
                      f"{100 / ceiling(runs[0], 'seconds', counts[1]):.0f}% at least on {os.cpu_count()} cores "
                      f"beside the rest of {counts[0]} worker's run", flush=True)
    finally:
        harness.cleanup()
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
