"""Three txuac nodes on this machine sharing one uacreg table of N accounts in PostgreSQL,
registering at a real Kamailio registrar; then kill -9 of one node and the takeover.

Starts a private PostgreSQL (tests/support/postgres.py) with Kamailio's uacreg table
holding N accounts, a Kamailio registrar (tests/support/kamailio.py) and three
``twistd -n uac`` nodes with ``[cluster]`` at its defaults (tests/support/cluster.py), the
installed txuac (``./dev bench cluster`` runs the compiled build). Measures:

* seconds from starting the nodes until the registrar holds N bindings (its
  usrloc:location_users, AoRs with a binding, polled every 0.25 s with kamcmd), loading the
  table included;
  then its location table (below) shows one binding per AoR and each node's count;
* CPU seconds of each node over that window (utime + stime, /proc/PID/stat), and of the
  registrar's processes;
* memory of each node once all are online and a few seconds have passed: PSS
  (/proc/PID/smaps_rollup) and RSS, and PSS per account;
* after kill -9 of node-b: seconds until the first of its accounts is registered again by
  another node (the lease running out), until all of them are, and the rate in between
  (registrar:accepted_regs of the registrar, polled every 0.25 s: accounts ask for 3,600 s,
  so no refresh is due in the window); meanwhile the location table is read every
  ``--table-poll`` s: the bindings node-b still has and the AoRs with two, until the first is
  0 and the second too; then the whole table shows whether every AoR has exactly one binding,
  from a live node; CPU seconds of the two takers during the takeover.

The registrar's bindings are read from usrloc's location table (``--usrloc-db-mode`` 2:
written back every second by usrloc's timer processes, off the workers answering REGISTERs;
1: written through by those workers) in a PostgreSQL of its own: one SQL query sums 150,000
bindings per node in a fraction of a second, where ``ul.dump`` through Kamailio's jsonrpcs
FIFO gave no answer within 75 s and kamcmd cannot read a reply of more than a few hundred
AoRs (``ul.dump brief``, which it can read, names no contact). The table's writes cost the
registrar's timer processes and that PostgreSQL CPU, both printed: on a 2-core machine at
150,000 they halve the takeover rate, so ``--usrloc-db-mode 0`` measures the takeover's time
and the default checks the bindings. ``--usrloc-db-mode 0``
keeps the registrar in memory only, as the interop tests do: nothing is checked per AoR then.

Figures with a target print whether it is met: all online within N / 2,500 s (the
single-node bench's target for large N) and the takeover within 15 s (two lease periods
and the registrations), which is meant for the test's 3,000 accounts; at 150,000 the
takeover of 50,000 is paced by reg_send_rate (3,000/s per node), so it is printed as a
figure.

Usage (from the repository root; ``./dev bench cluster N`` runs the compiled build):
    python bench/cluster.py [N=150000] [--nodes 3] [--timeout 600] [--settle 5] [--children 4]
        [--usrloc-db-mode 2] [--table-poll 1] [--keep]
Exit status 2 when not all N are online, or not all taken over, within ``--timeout``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.trial.unittest import SkipTest  # noqa: E402

import txuac.sip  # noqa: E402
from measure import family_cpu, group_cpu, process_cpu, pss_kib, rss_kib  # noqa: E402
from registrations import Harness, verdict  # noqa: E402
from tests.support.cluster import Fleet  # noqa: E402
from tests.support.kamailio import usrloc_schema_files  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

EXPIRES = 3600
POLL = 0.25
TAKEOVER_TARGET = 15.0


def online_target(n: int) -> float:
    return max(5.0, n / 2_500)


def node_environment() -> dict:
    """The nodes run the txuac this interpreter imports (the compiled one under ./dev bench)."""
    env = dict(os.environ)
    env.pop("TWISTED_REACTOR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(txuac.sip.__file__)),
                                                      env.get("PYTHONPATH")]))
    return env


def wait_counter(read, goal: int, timeout: float) -> tuple[bool, list[tuple[float, int]]]:
    """Poll ``read()`` every POLL s until it reaches ``goal``: (reached, [(seconds, value), ...])."""
    started = time.monotonic()
    series = []
    while True:
        value = read()
        at = time.monotonic() - started
        series.append((at, value))
        if value >= goal:
            return True, series
        if at > timeout:
            return False, series
        time.sleep(POLL)


class LocationTable:
    """The registrar's usrloc location table, in a PostgreSQL of its own, read with SQL."""

    # Bindings per contact host:port, then the AoRs with a binding and those with two or more.
    SUMMARY = ("SELECT substring(contact from '@([^;>?]+)'), count(*) FROM location GROUP BY 1 "
               "UNION ALL SELECT '#aors', count(DISTINCT username) FROM location "
               "UNION ALL SELECT '#doubles', count(*) FROM "
               "(SELECT username FROM location GROUP BY username HAVING count(*) > 1) AS doubled")

    def __init__(self, harness):
        self.server = PostgresCluster(harness)
        for path in usrloc_schema_files("postgres"):
            self.server.psql(file=path)
        # Only this bench reads it: no WAL, and no index but the ruid one usrloc updates and
        # deletes by (its db_ops_ruid), so that writing 150,000 costs the machine less.
        self.server.psql("ALTER TABLE location SET UNLOGGED; DROP INDEX location_account_contact_idx, "
                         "location_expires_idx, location_tcpcon_idx, location_connection_idx")

    @property
    def url(self) -> str:
        return self.server.url

    def bindings(self) -> dict[str, list[str]]:
        """AoR (user part) -> its contact URIs."""
        found: dict[str, list[str]] = {}
        for line in self.server.psql("SELECT username, contact FROM location", timeout=120).splitlines():
            user, _, contact = line.partition("|")
            found.setdefault(user, []).append(contact)
        return found

    def summary(self) -> dict[str, int]:
        """Bindings per contact host:port, '#aors' and '#doubles' (AoRs with two bindings or more)."""
        counts = {}
        for line in self.server.psql(self.SUMMARY, timeout=60).splitlines():
            key, _, value = line.rpartition("|")
            counts[key] = int(value)
        return counts


class TablePoller(threading.Thread):
    """Reads ``table.summary()`` every ``interval`` s until stopped: [(seconds, summary), ...]."""

    def __init__(self, table: LocationTable, interval: float, started_at: float):
        super().__init__(daemon=True)
        self.table, self.interval, self.started_at = table, interval, started_at
        self.series: list[tuple[float, dict[str, int]]] = []
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.is_set():
            begun = time.monotonic()
            summary = self.table.summary()
            self.series.append((time.monotonic() - self.started_at, summary))
            self.finished.wait(max(0.0, self.interval - (time.monotonic() - begun)))

    def wait(self, done, timeout: float) -> float | None:
        """Until a read satisfies ``done(summary)``: its seconds since ``started_at``, None at ``timeout``."""
        seen = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            series = self.series[seen:]
            seen += len(series)
            for at, summary in series:
                if done(summary):
                    return at
            time.sleep(POLL)
        return None

    def stop(self) -> None:
        self.finished.set()
        self.join()


def per_node(fleet: Fleet, summary: dict[str, int]) -> dict[str, int]:
    counts = {node.node_id: 0 for node in fleet.nodes}
    for address, count in summary.items():
        if not address.startswith("#"):
            node = fleet.node_at(address)
            counts[node.node_id if node else "?"] = counts.get(node.node_id if node else "?", 0) + count
    return counts


def check_table(fleet: Fleet, table: LocationTable, down: frozenset[str] = frozenset()) -> list[str]:
    """Every AoR with exactly one binding, from a live node (the whole table: a few seconds at 150,000)."""
    read = time.monotonic()
    problems = fleet.problems(table.bindings(), down=down)
    print(f"  whole location table read and checked in {time.monotonic() - read:.1f} s: {len(problems)} AoRs "
          f"without exactly one binding from a live node{f': {problems[:5]}' if problems else ''}")
    return problems


def wait_table(table: LocationTable, done, timeout: float) -> tuple[float, dict[str, int]] | None:
    """Read the table's summary until ``done(summary)``: (seconds, summary), None at ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started <= timeout:
        summary = table.summary()
        if done(summary):
            return time.monotonic() - started, summary
        time.sleep(POLL)
    return None


def run(args, harness: Harness) -> bool:
    n = args.accounts
    print(f"txuac cluster bench: {n:,} accounts in PostgreSQL, {args.nodes} nodes, SIP core "
          f"{'COMPILED (mypyc)' if txuac.sip.COMPILED else 'pure Python'}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    table = LocationTable(harness) if args.usrloc_db_mode else None
    options = {"usrloc_db_url": table.url, "usrloc_db_mode": args.usrloc_db_mode} if table else {}
    filling = time.monotonic()
    fleet = Fleet(harness, "postgres", n, expires=EXPIRES, registrar_children=args.children,
                  node_environment=node_environment(), registrar_options=options)
    print(f"table filled in {time.monotonic() - filling:.1f} s", flush=True)
    registrar = fleet.registrar
    print(f"registrar: {args.children} UDP workers, usrloc db_mode {args.usrloc_db_mode}"
          f"{' (its location table in a PostgreSQL of its own)' if table else ' (memory only: no check per AoR)'}")

    registrar_cpu = group_cpu(registrar.pid)
    started = time.monotonic()
    fleet.start_nodes(args.nodes)
    finished, series = wait_counter(registrar.user_count, n, args.timeout)
    elapsed = time.monotonic() - started
    cpu_online = {node.node_id: process_cpu(node.pid) for node in fleet.nodes}  # since their start
    registrar_cpu = group_cpu(registrar.pid) - registrar_cpu
    target = online_target(n)
    if not finished:
        print(f"all online: NOT within {args.timeout:g} s: {series[-1][1]:,} of {n:,} AoRs with a binding")
        return False
    print(f"all online after: {elapsed:.2f} s (target <= {target:g} s: {verdict(elapsed <= target)})")
    for node in fleet.nodes:
        print(f"  {node.node_id} CPU until all online: {cpu_online[node.node_id]:.2f} s")
    print(f"  registrar CPU until all online: {registrar_cpu:.2f} s (all its processes)"
          f"{f'; its location table PostgreSQL: {family_cpu(table.server.pid):.2f} s' if table else ''}")
    time.sleep(args.settle)
    for node in fleet.nodes:
        pss, rss = pss_kib(node.pid), rss_kib(node.pid)
        print(f"  {node.node_id} memory: PSS {pss / 1024:.1f} MiB, RSS {rss / 1024:.1f} MiB, "
              f"{pss * 1024 / n:.0f} B PSS per account of the table")
    problems = []
    if table is not None:
        written = wait_table(table, lambda summary: summary["#aors"] >= n, args.timeout)
        if written is None:
            print(f"location table: NOT all {n:,} AoRs within {args.timeout:g} s")
            return False
        read = time.monotonic()
        summary = table.summary()
        print(f"location table: all AoRs in it {written[0]:.1f} s after the registrar had them; bindings per "
              f"node {per_node(fleet, summary)}, {summary['#doubles']} AoRs with two or more "
              f"(summary read in {time.monotonic() - read:.2f} s)")
        problems = check_table(fleet, table)

    victim = fleet.nodes[1]
    takers = [node for node in fleet.nodes if node is not victim]
    victims = sum(1 for owner in fleet.owners().values() if owner == victim.node_id)  # its partitions' accounts
    accepted_before = registrar.statistic("accepted_regs")
    taker_cpu = {node.node_id: process_cpu(node.pid) for node in takers}
    registrar_cpu = group_cpu(registrar.pid), family_cpu(table.server.pid if table else None)
    killed = time.monotonic()
    poller = TablePoller(table, args.table_poll, killed) if table is not None else None
    victim.kill()
    if poller is not None:
        poller.start()
    taken, series = wait_counter(lambda: registrar.statistic("accepted_regs") - accepted_before, victims,
                                 args.timeout)  # no refresh is due: EXPIRES
    first = next((at for at, value in series if value > 0), None)
    last = series[-1][0]
    if not taken:
        if poller is not None:
            poller.stop()
        print(f"takeover: NOT within {args.timeout:g} s: {series[-1][1]:,} of {victims:,} re-registered")
        return False
    rate = victims / max(last - (first or 0.0), 1e-9)
    print(f"takeover of {victims:,} accounts after kill -9 of {victim.node_id}: first re-registered after "
          f"{first:.2f} s, all after {last:.2f} s (target <= {TAKEOVER_TARGET:g} s: "
          f"{verdict(last <= TAKEOVER_TARGET)}), {rate:,.0f} accounts re-registered per second in between")
    for node in takers:
        print(f"  {node.node_id} CPU during the takeover: {process_cpu(node.pid) - taker_cpu[node.node_id]:.2f} s "
              f"in {time.monotonic() - killed:.1f} s")
    print(f"  registrar CPU during the takeover: {group_cpu(registrar.pid) - registrar_cpu[0]:.2f} s"
          f"{f'; its location table PostgreSQL: {family_cpu(table.server.pid) - registrar_cpu[1]:.2f} s' if table else ''}")
    if poller is None:
        return True
    cleared = poller.wait(lambda summary: summary.get(victim.contact_addr, 0) == 0 and summary["#doubles"] == 0
                          and summary["#aors"] >= n, args.timeout)
    poller.stop()
    print_takeover_table(poller.series, victim.contact_addr, cleared)
    settled = check_table(fleet, table, down=frozenset({victim.node_id}))
    return not problems and not settled and cleared is not None


def print_takeover_table(series: list[tuple[float, dict[str, int]]], victim_addr: str,
                         cleared: float | None) -> None:
    """What the location table showed during the takeover, read every --table-poll s."""
    if not series:
        return
    reads = [at - (series[i - 1][0] if i else 0.0) for i, (at, _) in enumerate(series)]
    print(f"  location table read {len(series)} times from the kill on (every {max(reads):.2f} s at most): "
          f"the dead node's bindings {series[0][1].get(victim_addr, 0):,} at first; at most "
          f"{max(summary['#doubles'] for _, summary in series):,} AoRs with two bindings, at least "
          f"{min(summary['#aors'] for _, summary in series):,} AoRs with a binding")
    print("  the dead node's bindings in the table (seconds after the kill: bindings): "
          + ", ".join(f"{at:.1f}: {summary.get(victim_addr, 0):,}" for at, summary in series))
    if cleared is None:
        print("  location table: the dead node's bindings or AoRs with two still there at the timeout")
    else:
        print(f"  location table settled {cleared:.1f} s after the kill: none of the dead node's bindings, "
              f"no AoR with two, every AoR with one")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", nargs="?", type=int, default=150_000, help="N accounts (default 150,000)")
    parser.add_argument("--nodes", type=int, default=3, help="txuac nodes (3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up a phase after this many seconds (600)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after all are online before the memory")
    parser.add_argument("--children", type=int, default=4, help="Kamailio UDP workers (4)")
    parser.add_argument("--usrloc-db-mode", type=int, choices=(0, 1, 2), default=2,
                        help="the registrar's usrloc db_mode: 2 write-back (default), 1 write-through, "
                             "0 memory only (no check per AoR)")
    parser.add_argument("--table-poll", type=float, default=1.0,
                        help="seconds between reads of the location table during the takeover (1)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs of every process)")
    args = parser.parse_args()
    if args.accounts <= 0 or not 2 <= args.nodes <= 5:
        parser.error("N must be positive and --nodes between 2 and 5")
    harness = Harness()
    ok = False
    try:
        ok = run(args, harness)
    except SkipTest as e:
        raise SystemExit(f"cannot run the peers: {e}")
    finally:
        harness.keep = args.keep or not ok
        harness.cleanup()
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
