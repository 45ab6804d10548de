"""Registration under faults: three figures (loss, a black hole, a registrar restart) at full size, against a real Kamailio.

txuac (UACService, SQLite store, this process, default reactor) registers its accounts with
a Kamailio registrar (digest auth) through a fault-injecting UDP relay
(tests/support/relay.py). The scenarios are the functions the test suite runs scaled down
(tests/registrant/test_interop_faults.py); here they run at full size with txuac's defaults
unless an option says otherwise:

1. 10% of datagrams lost both ways and 20+-10 ms of delay each way: seconds until 1,000 accounts
   are online, none failed (target ``--loss-target``, 5 s). ``--runs R`` repeats it with seeds
   S..S+R-1: the loss pattern, hence the slowest account, depends on the seed.
2. A 60 s black hole (the relay drops everything) while every account's refresh falls in it
   (expires 60 s): seconds from the outage's end until every account is online again, none
   disabled. With the defaults the failing registrar is probed (target 5 s); ``--no-probe``
   leaves it to the retries (target: reg_retry_interval plus its jitter).
3. The registrar stopped for 20 s while refreshes are due (expires 120 s), then a new one on
   the same port with its bindings lost: seconds from the restart until every account is in
   Kamailio's usrloc again, with the defaults (the probe; target 15 s), or with
   ``--ping-interval N`` per-account OPTIONS pings every N seconds and expiries of 600 s
   (target 10 s).
4. No fault for ``--duration`` seconds (3,600) once every account is online (expires 60 s):
   the datagrams each way by kind (method or status), which must hold no OPTIONS; run it with
   and without ``--no-probe`` to see that the probe adds nothing while all is well. Only when
   asked for (``--scenario 4``).

The relay runs in a process of its own (tests/support/relay_process.py): in txuac's, its
delays would grow with txuac's load (``--relay-in-process`` shows that).

Each figure is printed with its target and met/MISSED, then a summary. Exit status 2 when
a figure is missed.

Usage (from the repository root; ``./dev bench registration_faults`` runs the compiled build):
    python bench/registration_faults.py [--scenario N ...] [--accounts 1000] [--seed 8] [--runs 1]
        [--loss-target 5] [--outage 60] [--retry-interval S] [--no-probe] [--down 20] [--ping-interval 0]
        [--duration 3600] [--relay-in-process] [--timer-t1 MS] [--timer-t2 MS] [--reg-timer-t2 MS] [--log FILE]
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.internet import defer, task  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402
from twisted.trial.unittest import SkipTest  # noqa: E402

import txuac.sip  # noqa: E402
from registrations import Harness, LogCounter, verdict  # noqa: E402
from tests.support.registration_faults import (  # noqa: E402
    SEED,
    blackhole_recovery,
    healthy_traffic,
    lossy_registration,
    registrar_restart,
)


class ScenarioHarness(Harness):
    """The bench's Harness, closed after each scenario: its cleanups' Deferreds are awaited
    (txuac's service stops before its registrar), so one scenario never loads the next."""

    @defer.inlineCallbacks
    def close(self):
        while self.cleanups:
            function, args, kwargs = self.cleanups.pop()
            try:
                yield defer.maybeDeferred(function, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - go on with the others
                print(f"cleanup {function!r} failed: {e}", file=sys.stderr)
        self.cleanup()


def scenario_runs(args):
    """(number, function(harness) -> Deferred[Figure]) for each run asked for."""
    core = {name: value for name, value in (("timer_t1", args.timer_t1), ("timer_t2", args.timer_t2)) if value}
    uac = {"reg_probe": False} if args.no_probe else {}
    reg_t2 = {"reg_timer_t2": args.reg_timer_t2} if args.reg_timer_t2 else {}
    apart = not args.relay_in_process
    for number in args.scenario:
        if number == 1:
            for seed in range(args.seed, args.seed + args.runs):
                yield number, lambda h, seed=seed: lossy_registration(h, accounts=args.accounts, core=core, uac=reg_t2,
                                                                      seed=seed, target=args.loss_target,
                                                                      relay_process=apart)
        elif number == 2:
            retry = {"reg_retry_interval": args.retry_interval} if args.retry_interval is not None else {}
            yield number, lambda h: blackhole_recovery(h, accounts=args.accounts, outage=args.outage, expires=60,
                                                       core=core, uac={**uac, **retry}, relay_process=apart)
        elif number == 4:
            yield number, lambda h: healthy_traffic(h, accounts=args.accounts, duration=args.duration, expires=60,
                                                    core=core, uac=uac, relay_process=apart)
        elif args.ping_interval:
            yield number, lambda h: registrar_restart(h, accounts=args.accounts, down=args.down, target=10.0,
                                                      ping_interval=args.ping_interval, expires=600, core=core,
                                                      uac=uac, relay_process=apart)
        else:
            yield number, lambda h: registrar_restart(h, accounts=args.accounts, down=args.down, expires=120,
                                                      core=core, uac=uac, relay_process=apart)


@defer.inlineCallbacks
def run(reactor, args):
    print(f"txuac registration faults bench: {args.accounts:,} accounts, SIP core "
          f"{'COMPILED (mypyc)' if txuac.sip.COMPILED else 'pure Python'}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; timer_t1 "
          f"{f'{args.timer_t1} ms' if args.timer_t1 else 'default'}, timer_t2 "
          f"{f'{args.timer_t2} ms' if args.timer_t2 else 'default'}, reg_timer_t2 "
          f"{f'{args.reg_timer_t2} ms' if args.reg_timer_t2 else 'default'}; relay in "
          f"{'this process' if args.relay_in_process else 'a process of its own'}")
    figures = []
    for number, scenario in scenario_runs(args):
        harness = ScenarioHarness()
        try:
            figure = yield scenario(harness)
        except SkipTest as e:
            raise SystemExit(f"cannot run Kamailio: {e}")
        except BaseException:
            harness.keep = True
            yield harness.close()
            raise
        print(figure, flush=True)
        harness.keep = not figure.met
        yield harness.close()
        figures.append((number, figure))
    print("summary: " + "; ".join(f"figure {number} {verdict(figure.met)}" for number, figure in figures))
    print(f"log events: {dict(sorted(args.log_counter.counts.items()))}")
    return all(figure.met for _, figure in figures)


def main(reactor, args):
    def finish(all_met):
        if not all_met:
            raise SystemExit(2)

    return run(reactor, args).addCallback(finish)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=int, choices=(1, 2, 3, 4), action="append",
                        help="run this scenario (repeatable; default: 1, 2 and 3)")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts (1,000)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the relay's loss seed (scenario 1; {SEED})")
    parser.add_argument("--runs", type=int, default=1, help="scenario 1 runs, with seeds SEED, SEED+1, ... (1)")
    parser.add_argument("--loss-target", type=float, default=5.0, help="seconds (scenario 1; 5)")
    parser.add_argument("--outage", type=float, default=60.0, help="black hole seconds (scenario 2; 60)")
    parser.add_argument("--retry-interval", type=int, default=None,
                        help="reg_retry_interval (scenario 2; default: txuac's; 0 shows Kamailio's default)")
    parser.add_argument("--down", type=float, default=20.0, help="seconds the registrar is down (scenario 3; 20)")
    parser.add_argument("--no-probe", action="store_true", help="reg_probe = false (scenarios 2, 3 and 4)")
    parser.add_argument("--duration", type=float, default=3600.0,
                        help="seconds without faults once all are online (scenario 4; 3600)")
    parser.add_argument("--ping-interval", type=int, default=0,
                        help="reg_options_ping_interval with options_ping on every account, seconds "
                             "(scenario 3; 0: none, the probe alone)")
    parser.add_argument("--relay-in-process", action="store_true",
                        help="run the relay in the bench's process, on txuac's reactor (default: a process of its own)")
    parser.add_argument("--timer-t1", type=int, default=None, help="[core] timer_t1 in ms (default: txuac's)")
    parser.add_argument("--timer-t2", type=int, default=None, help="[core] timer_t2 in ms (default: txuac's)")
    parser.add_argument("--reg-timer-t2", type=int, default=None,
                        help="[uac] reg_timer_t2 in ms (scenario 1; default: txuac's; 4000 shows [core] timer_t2's)")
    parser.add_argument("--log", metavar="FILE", help="write every Twisted log event to FILE")
    arguments = parser.parse_args()
    if arguments.accounts <= 0 or arguments.runs <= 0 or arguments.duration <= 0:
        parser.error("--accounts, --runs and --duration must be positive")
    arguments.scenario = sorted(set(arguments.scenario or (1, 2, 3)))
    arguments.log_counter = LogCounter(arguments.log)
    globalLogBeginner.beginLoggingTo([arguments.log_counter], redirectStandardIO=False)
    task.react(main, [arguments])
