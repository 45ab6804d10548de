"""CPU per registration with no network and no peers: the figure a busy machine cannot
inflate.

``bench/registrations.py`` measures txuac against a real Kamailio registrar; on a shared
machine its CPU per registration moves by a tenth from run to run. Here txuac's
RegistrantService runs on a SIPStack over a fake UDP socket and a fake clock
(tests/support/stack_harness.py's pieces), its accounts in a store in memory
(tests/support/registrant_harness.py's FakeStore: no database work, no state writes), and a
registrar made in this file answers each REGISTER as Kamailio's does: 401 with a digest
challenge (qop=auth, a nonce for each second), then 200 with the Contact and its expires.
Only txuac's work is timed (``time.process_time`` around the start, which loads the rows,
each clock advance, which fires the scheduler and timers, and each datagram it reads);
making the registrar's answers is not. The garbage collector is tuned as ``twistd uac``
tunes it. The clock moves one scheduler tick (50 ms) at a time, so the sending rate
(reg_send_rate, the service's default) paces the REGISTERs as in a real run.

Printed: the best and the median of ``--rounds`` rounds of ``accounts`` accounts (the best
is the figure: what the load did not add), microseconds of CPU per registration, split into
loading the rows and the REGISTER cycle (REGISTER, 401, REGISTER, 200), and the datagrams
txuac sent per account (2; a retransmission would show). ``--profile`` runs one round with
txuac's work under cProfile and prints the top functions by tottime and the function calls
per registration (a count no load changes).

``--pause MS [--pause-every N]``: an untimed sleep before each (Nth) unit of txuac's work,
as in ``proxy_cpu``.

Usage: python bench/registration_cpu.py [accounts=10000] [--rounds 5] [--profile [--top 25]]
    [--pause MS [--pause-every N]]
(``./dev bench registration_cpu`` runs the compiled build).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import statistics
import sys

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from measure import TimedWork, add_round_options, pause_note, print_profile, timed_work  # noqa: E402

import txuac.sip  # noqa: E402
from tests.support.accounts import make_row  # noqa: E402
from tests.support.registrant_harness import FakeStore  # noqa: E402
from tests.support.stack_harness import LOCAL, PEER, FakeUDP  # noqa: E402
from txuac.net.resolver import TargetResolver  # noqa: E402
from txuac.net.stack import SIPStack  # noqa: E402
from txuac.net.transports import UDPListener  # noqa: E402
from txuac.registrant.bringup import BringUpReport  # noqa: E402
from txuac.registrant.service import RegistrantService  # noqa: E402
from txuac.registrant.settings import RegistrantSettings  # noqa: E402
from txuac.service import tune_garbage_collector  # noqa: E402
from txuac.sip import make_response, parse_message  # noqa: E402

REALM = "sip.provider.example"
SENT_PER_ACCOUNT = 2


class Registrar:
    """Kamailio's answers to txuac's REGISTERs: a challenge, then 200 with the binding.

    Its nonce changes every second of ``clock``, as Kamailio's auth module makes it by
    default (from the time and a secret: a real 10,000-account run sees 4 nonces), so a
    second's challenges are the same text."""

    def __init__(self, clock):
        self.clock = clock

    def answer(self, data: bytes) -> bytes:
        request = parse_message(data)
        if not request.headers.get("Authorization"):
            nonce = hashlib.md5(f"{int(self.clock())}:registrar secret".encode()).hexdigest()
            challenge = (f'Digest realm="{REALM}", nonce="{nonce}", '
                         'qop="auth"')
            return bytes(make_response(request, 401, to_tag="reg-tag",
                                       extra_headers=[("WWW-Authenticate", challenge),
                                                      ("Server", "kamailio (5.6)")]))
        contact = request.headers.get("Contact")
        return bytes(make_response(request, 200, to_tag="reg-tag",
                                   extra_headers=[("Contact", f"{contact};expires={request.expires}"),
                                                  ("Server", "kamailio (5.6)")]))


class Registrant:
    """txuac's registrant on a fake socket and clock, and the time it spent."""

    def __init__(self, accounts: int, work: TimedWork):
        self.work = work  # txuac's work: the start, clock advances, datagrams read
        self.reactor = MemoryReactorClock()
        self.stack = SIPStack(self.reactor, resolver=TargetResolver(self.reactor))
        self.listener = UDPListener(LOCAL[0], LOCAL[1], self.stack)
        self.udp = FakeUDP()
        self.listener.makeConnection(self.udp)
        self.stack.add_udp_listener(self.listener)
        rows = [make_row(f"acc{n}", auth_proxy=f"sip:{PEER[0]}:{PEER[1]}", realm="") for n in range(accounts)]
        # log_routine as twistd uac sets it at its default log level (info)
        settings = RegistrantSettings(reg_contact_addr=f"{LOCAL[0]}:{LOCAL[1]}", log_routine=False)
        self.service = RegistrantService(settings, self.stack, FakeStore(rows), self.reactor)
        self.bringup = BringUpReport(self.service, self.reactor)
        self.registrar = Registrar(self.reactor.seconds)
        self.sent = 0

    def start(self) -> float:
        """Start the services (the rows are loaded); the CPU it took."""
        return self.work.run(self._start)

    def _start(self) -> None:
        self.bringup.startService()
        self.service.startService()

    def run(self, accounts: int, limit: float = 600.0) -> None:
        """Ticks, answering every REGISTER, until every account is online."""
        while self.service.counters()["regactive"] < accounts:
            if self.reactor.seconds() > limit:
                raise SystemExit(f"not all {accounts} accounts online after {limit:g} s of the fake clock")
            self.work.run(self.reactor.advance, RegistrantService.TICK)
            while self.udp.written:
                written = list(self.udp.written)
                del self.udp.written[:]
                self.sent += len(written)
                for data, address in written:
                    if address == PEER:
                        answer = self.registrar.answer(data)
                        self.work.run(self.listener.datagramReceived, answer, PEER)

    def stop(self) -> None:
        self.service.stopService()
        self.bringup.stopService()
        del self.udp.written[:]


def run_round(accounts: int, work: TimedWork) -> tuple[float, float, float]:
    """(CPU microseconds per registration in all and for loading the rows, datagrams sent
    per account) of one round, timed by ``work``."""
    registrant = Registrant(accounts, work)
    load = registrant.start()
    registrant.run(accounts)
    sent = registrant.sent / accounts
    registrant.stop()
    return registrant.work.cpu / accounts * 1e6, load / accounts * 1e6, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", type=int, nargs="?", default=10000, help="accounts (10,000)")
    add_round_options(parser)
    args = parser.parse_args()
    if args.accounts <= 0 or args.rounds <= 0:
        parser.error("accounts and --rounds must be positive")
    tune_garbage_collector()  # as `twistd uac` does
    print(f"txuac registration CPU bench: {args.accounts:,} accounts a round, SIP core "
          f"{'COMPILED (mypyc)' if txuac.sip.COMPILED else 'pure Python'}, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}{pause_note(args)}")
    if args.profile:
        profile = cProfile.Profile()
        run_round(args.accounts, timed_work(args, profile))
        print_profile(profile, args.accounts, "registration", args.top)
        return 0
    figures = [run_round(args.accounts, timed_work(args)) for _ in range(args.rounds)]
    best = min(figures)
    per_account = sorted(cpu for cpu, _, _ in figures)
    sent = {round(count, 2) for _, _, count in figures}
    print(f"CPU per registration (us): best {best[0]:,.0f} (loading the row {best[1]:,.0f}, the REGISTER cycle "
          f"{best[0] - best[1]:,.0f}), median {statistics.median(per_account):,.0f}, worst {per_account[-1]:,.0f} "
          f"({args.rounds} rounds); datagrams sent per account: {', '.join(f'{s:g}' for s in sorted(sent))} "
          f"(expected {SENT_PER_ACCOUNT})")
    return 0 if sent == {SENT_PER_ACCOUNT} else 2


if __name__ == "__main__":
    sys.exit(main())
