"""Three txuac nodes on this machine sharing one uacreg table of N accounts in PostgreSQL,
registering at a real Kamailio registrar; then kill -9 of one node and the takeover.

Starts a private PostgreSQL (tests/support/postgres.py) with Kamailio's uacreg table
holding N accounts, a Kamailio registrar (tests/support/kamailio.py) and three
``twistd -n uac`` nodes with ``[cluster]`` at its defaults (tests/support/cluster.py), the
installed txuac (``./dev bench cluster`` runs the compiled build). Measures:

* seconds from starting the nodes until the registrar holds N bindings (its
  usrloc:location_users, AoRs with a binding, polled every 0.25 s with kamcmd), loading the
  table included;
  then one ``ul.dump`` checks one binding per AoR and counts each node's;
* CPU seconds of each node over that window (utime + stime, /proc/PID/stat);
* memory of each node once all are online and a few seconds have passed: PSS
  (/proc/PID/smaps_rollup) and RSS, and PSS per account;
* after kill -9 of node-b: seconds until the first of its accounts is registered again by
  another node (the lease running out), until all of them are, and the rate in between
  (registrar:accepted_regs of the registrar, polled every 0.25 s: accounts ask for 3,600 s,
  so no refresh is due in the window), then one ``ul.dump`` checks that no binding of node-b
  is left and every AoR has one; CPU seconds of the two takers during the takeover.

Figures with a target print whether it is met: all online within N / 2,500 s (the
single-node bench's target for large N) and the takeover within 15 s (two lease periods
and the registrations), which is meant for the test's 3,000 accounts; at 150,000 the
takeover of 50,000 is paced by reg_send_rate (3,000/s per node), so it is printed as a
figure.

Usage (from the repository root; ``./dev bench cluster N`` runs the compiled build):
    python bench/cluster.py [N=150000] [--nodes 3] [--timeout 600] [--settle 5] [--children 4] [--keep]
Exit status 2 when not all N are online, or not all taken over, within ``--timeout``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.trial.unittest import SkipTest  # noqa: E402

import txuac.sip  # noqa: E402
from measure import process_cpu, pss_kib, rss_kib  # noqa: E402
from registrations import Harness, verdict  # noqa: E402
from tests.support.cluster import Fleet, contact_host_port  # noqa: E402

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


def per_node(fleet: Fleet, bindings: dict[str, list[str]]) -> dict[str, int]:
    counts = {node.node_id: 0 for node in fleet.nodes}
    for contacts in bindings.values():
        for contact in contacts:
            node = fleet.node_at(contact_host_port(contact))
            counts[node.node_id if node else "?"] = counts.get(node.node_id if node else "?", 0) + 1
    return counts


def run(args, harness: Harness) -> bool:
    n = args.accounts
    print(f"txuac cluster bench: {n:,} accounts in PostgreSQL, {args.nodes} nodes, SIP core "
          f"{'COMPILED (mypyc)' if txuac.sip.COMPILED else 'pure Python'}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    filling = time.monotonic()
    fleet = Fleet(harness, "postgres", n, expires=EXPIRES, registrar_children=args.children,
                  node_environment=node_environment())
    print(f"table filled in {time.monotonic() - filling:.1f} s", flush=True)
    registrar = fleet.registrar

    started = time.monotonic()
    fleet.start_nodes(args.nodes)
    finished, series = wait_counter(registrar.user_count, n, args.timeout)
    elapsed = time.monotonic() - started
    cpu_online = {node.node_id: process_cpu(node.pid) for node in fleet.nodes}  # since their start
    target = online_target(n)
    if not finished:
        print(f"all online: NOT within {args.timeout:g} s: {series[-1][1]:,} of {n:,} AoRs with a binding")
        return False
    print(f"all online after: {elapsed:.2f} s (target <= {target:g} s: {verdict(elapsed <= target)})")
    for node in fleet.nodes:
        print(f"  {node.node_id} CPU until all online: {cpu_online[node.node_id]:.2f} s")
    time.sleep(args.settle)
    for node in fleet.nodes:
        pss, rss = pss_kib(node.pid), rss_kib(node.pid)
        print(f"  {node.node_id} memory: PSS {pss / 1024:.1f} MiB, RSS {rss / 1024:.1f} MiB, "
              f"{pss * 1024 / n:.0f} B PSS per account of the table")
    dumped = time.monotonic()
    bindings = fleet.bindings()
    problems = fleet.problems(bindings)
    counts = per_node(fleet, bindings)
    print(f"ul.dump ({time.monotonic() - dumped:.1f} s): bindings per node {counts}; "
          f"{len(problems)} AoRs without exactly one binding from a node{f': {problems[:5]}' if problems else ''}")

    victim = fleet.nodes[1]
    takers = [node for node in fleet.nodes if node is not victim]
    victims = sum(1 for owner in fleet.owners().values() if owner == victim.node_id)  # its partitions' accounts
    accepted_before = registrar.statistic("accepted_regs")
    taker_cpu = {node.node_id: process_cpu(node.pid) for node in takers}
    killed = time.monotonic()
    victim.kill()
    taken, series = wait_counter(lambda: registrar.statistic("accepted_regs") - accepted_before, victims,
                                 args.timeout)  # no refresh is due: EXPIRES
    first = next((at for at, value in series if value > 0), None)
    last = series[-1][0]
    if not taken:
        print(f"takeover: NOT within {args.timeout:g} s: {series[-1][1]:,} of {victims:,} re-registered")
        return False
    rate = victims / max(last - (first or 0.0), 1e-9)
    print(f"takeover of {victims:,} accounts after kill -9 of {victim.node_id}: first re-registered after "
          f"{first:.2f} s, all after {last:.2f} s (target <= {TAKEOVER_TARGET:g} s: "
          f"{verdict(last <= TAKEOVER_TARGET)}), {rate:,.0f} accounts re-registered per second in between")
    for node in takers:
        print(f"  {node.node_id} CPU during the takeover: {process_cpu(node.pid) - taker_cpu[node.node_id]:.2f} s "
              f"in {time.monotonic() - killed:.1f} s")
    settled = fleet.problems(fleet.bindings(), down=frozenset({victim.node_id}))
    print(f"after the takeover: {len(settled)} AoRs without exactly one binding from a live node"
          f"{f': {settled[:5]}' if settled else ''}")
    return not problems and not settled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", nargs="?", type=int, default=150_000, help="N accounts (default 150,000)")
    parser.add_argument("--nodes", type=int, default=3, help="txuac nodes (3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up a phase after this many seconds (600)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after all are online before the memory")
    parser.add_argument("--children", type=int, default=4, help="Kamailio UDP workers (4)")
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
