"""CPU per proxied call with no network and no peers: the figure a busy machine cannot
inflate.

``bench/proxy.py`` measures txuac between two SIPp processes; on a shared machine its CPU
per call moves with the load (a starved process falls behind, SIPp retransmits, and every
retransmission is more work). Here the proxy of ``bench/proxy.py`` (the same anonymising
script: record_route, ``uac_replace_from`` in restore_mode auto, ``t_relay``; in-dialog
requests through ``rr.loose_route()``) runs on a SIPStack over a fake UDP socket and a fake
clock (tests/support/proxy_harness.py's pieces), and each call of ``bench/proxy.py``'s
flow is fed to it as datagrams: INVITE with SDP (txuac answers 100 and relays it), the
callee's 100, 180 and 200, the caller's ACK and BYE along the route set, the callee's 200
to the BYE. Only txuac's work is timed (``time.process_time`` around each datagram it
reads and each clock advance that fires its timers); making the peers' messages is not.
The clock moves 5 ms a call (200 calls/s), so transactions end at their timers as in a
real run. The garbage collector is tuned as ``twistd uac`` tunes it.

Printed: the best and the median of ``--rounds`` rounds of ``--calls`` calls (the best is
the figure: what the load did not add), microseconds of CPU per call, and the datagrams
txuac sent per call (7: 100, INVITE, 180, 200, ACK, BYE, 200; none retransmitted). ``--profile`` runs one
round with txuac's work (as timed) under cProfile and prints the top functions by tottime
and the function calls per call (a count no load changes).

``--pause MS`` sleeps MS milliseconds, untimed, before each unit of txuac's work (each
datagram it reads, each clock advance; ``--pause-every N``: before every Nth only): the
process then wakes for its work as in a real run at a low rate, which on the 2-core
machine about doubles what the same instructions cost (docs/benchmarks.rst).

Usage: python bench/proxy_cpu.py [--calls 2000] [--rounds 5] [--profile [--top 25]]
    [--pause MS [--pause-every N]]
(``./dev bench proxy_cpu`` runs the compiled build).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import sys
import tempfile

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.append(REPO)  # an installed (compiled) txuac wins over the checkout

from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from measure import TimedWork, add_round_options, pause_note, print_profile, timed_work  # noqa: E402

import txuac.sip  # noqa: E402
from tests.support.proxy_harness import CALLEE  # noqa: E402
from tests.support.sipp_proxy import ANONYMISING_SCRIPT  # noqa: E402
from tests.support.stack_harness import LOCAL, PEER, FakeUDP  # noqa: E402
from txuac.config import RoutingSettings  # noqa: E402
from txuac.net.resolver import TargetResolver  # noqa: E402
from txuac.net.stack import SIPStack  # noqa: E402
from txuac.net.transports import UDPListener  # noqa: E402
from txuac.routing.proxy import ProxyService  # noqa: E402
from txuac.routing.script import load_script  # noqa: E402
from txuac.sip import make_response, parse_message  # noqa: E402
from txuac.sip.address import Address  # noqa: E402
from txuac.service import tune_garbage_collector  # noqa: E402

CALL_INTERVAL = 0.005  # seconds of the fake clock between two calls: 200 calls/s
SENT_PER_CALL = 7
SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n"
       b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
CALLER = f"sipp <sip:sipp@{PEER[0]}:{PEER[1]}>"


def caller_request(method: str, uri: str, n: int, cseq: int, to_tag: str | None = None,
                   routes: list[str] = (), body: bytes = b"") -> bytes:
    """What SIPp's uac_call.xml sends for call ``n``."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bK-{n}-{cseq}-{method}",
        f"From: {CALLER};tag={n}SIPpTag00{n}",
        f"To: <sip:service@{CALLEE[0]}:{CALLEE[1]}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {n}-bench@{PEER[0]}",
        f"CSeq: {cseq} {method}",
        *(f"Route: {route}" for route in routes),
        f"Contact: <sip:sipp@{PEER[0]}:{PEER[1]};transport=UDP>",
        "Max-Forwards: 70",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Proxy:
    """txuac's proxy on a fake socket and clock, and the time it spent."""

    def __init__(self, script: str, work: TimedWork):
        self.work = work  # txuac's work: the datagrams it reads, the clock advances
        self.reactor = MemoryReactorClock()
        self.stack = SIPStack(self.reactor, resolver=TargetResolver(self.reactor))
        self.listener = UDPListener(LOCAL[0], 0, self.stack)
        self.udp = FakeUDP()
        self.listener.makeConnection(self.udp)
        self.stack.add_udp_listener(self.listener)
        settings = RoutingSettings(script=script, restore_mode="auto", restore_passwd="bench-secret")
        self.proxy = ProxyService(self.stack, load_script(script), settings, [Address("udp", *LOCAL)])
        self.proxy.start()
        self.sent = 0

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        self.work.run(self.listener.datagramReceived, data, source)

    def advance(self, seconds: float) -> None:
        self.work.run(self.reactor.advance, seconds)

    def take(self, to: tuple[str, int]):
        """The messages sent to ``to`` since the last call (parsed: the peers' work)."""
        written = self.udp.written
        self.sent += len(written)
        messages = [parse_message(data) for data, address in written if address == to]
        del written[:]
        return messages


def one_call(proxy: Proxy, n: int) -> None:
    uas_uri = f"sip:service@{CALLEE[0]}:{CALLEE[1]}"
    proxy.feed(caller_request("INVITE", uas_uri, n, 1, body=SDP), PEER)
    [invite] = proxy.take(CALLEE)
    to_tag = f"uas{n}"
    contact = [("Contact", f"<sip:service@{CALLEE[0]}:{CALLEE[1]};transport=UDP>")]
    record_route = [("Record-Route", value) for value in invite.headers.get_all("Record-Route")]
    proxy.feed(bytes(make_response(invite, 100)), CALLEE)
    proxy.feed(bytes(make_response(invite, 180, to_tag=to_tag, extra_headers=record_route + contact)), CALLEE)
    proxy.feed(bytes(make_response(invite, 200, to_tag=to_tag, extra_headers=record_route + contact, body=SDP)),
               CALLEE)
    upstream = proxy.take(PEER)
    [ok] = [response for response in upstream if response.status == 200]
    routes = list(reversed(ok.headers.get_all("Record-Route")))
    proxy.feed(caller_request("ACK", uas_uri, n, 1, to_tag, routes), PEER)
    proxy.feed(caller_request("BYE", uas_uri, n, 2, to_tag, routes), PEER)
    [_, bye] = proxy.take(CALLEE)
    proxy.feed(bytes(make_response(bye, 200)), CALLEE)
    proxy.take(PEER)
    proxy.advance(CALL_INTERVAL)


def run_round(script: str, calls: int, work: TimedWork) -> tuple[float, float]:
    """(CPU microseconds per call, datagrams sent per call) of one round, timed by ``work``."""
    proxy = Proxy(script, work)
    for n in range(calls):
        one_call(proxy, n)
    proxy.advance(64 * 0.5 + 1)  # every transaction ends at its timer
    proxy.take(PEER)  # counted: a retransmission would show in the datagrams per call
    proxy.proxy.stop()
    return proxy.work.cpu / calls * 1e6, proxy.sent / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (2000)")
    add_round_options(parser)
    args = parser.parse_args()
    if args.calls <= 0 or args.rounds <= 0:
        parser.error("--calls and --rounds must be positive")
    tune_garbage_collector()  # as `twistd uac` does
    with tempfile.TemporaryDirectory(prefix="txuac-bench-proxy-cpu-") as workdir:
        script = os.path.join(workdir, "routing.py")
        with open(script, "w") as f:
            f.write(ANONYMISING_SCRIPT)
        print(f"txuac proxy CPU bench: {args.calls:,} calls a round, SIP core "
              f"{'COMPILED (mypyc)' if txuac.sip.COMPILED else 'pure Python'}, Python {sys.version.split()[0]}, "
              f"load average {os.getloadavg()[0]:.2f}{pause_note(args)}")
        if args.profile:
            profile = cProfile.Profile()
            run_round(script, args.calls, timed_work(args, profile))
            print_profile(profile, args.calls, "call", args.top)
            return 0
        figures = [run_round(script, args.calls, timed_work(args)) for _ in range(args.rounds)]
    per_call = sorted(cpu for cpu, _ in figures)
    sent = {round(count, 2) for _, count in figures}
    print(f"CPU per call (us): best {per_call[0]:,.0f}, median {statistics.median(per_call):,.0f}, "
          f"worst {per_call[-1]:,.0f} ({args.rounds} rounds); datagrams sent per call: "
          f"{', '.join(f'{s:g}' for s in sorted(sent))} (expected {SENT_PER_CALL})")
    return 0 if sent == {SENT_PER_CALL} else 2


if __name__ == "__main__":
    sys.exit(main())
