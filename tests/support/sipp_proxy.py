"""txuac as a proxy between SIPp peers on loopback: ``ProxyInteropCase`` runs a routing
script (``SCRIPT`` record-routes the INVITE and loose-routes in-dialog requests;
``ANONYMISING_SCRIPT`` also anonymises the caller's From) with the SIPp scenarios of
tests/routing/sipp around it."""

from __future__ import annotations

import csv
import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.support.peers import PeerProcess, free_port, require_program
from tests.support.sipp import HOST, T1, T2, tcp_listening, udp_bound, until
from txuac.config import settings_from_dict
from txuac.service import UACService


SCENARIOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "routing", "sipp")


SCRIPT = '''
from txuac.routing.script import request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.to is not None and msg.to.tag is not None:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        tm.t_relay()
        return
    if msg.method == "INVITE":
        rr.record_route()
    tm.t_relay()
'''


def last_stats(path: str) -> dict[str, str]:
    """The last row of a SIPp -trace_stat file (semicolon-separated, header first)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    return dict(zip(rows[0], rows[-1]))


class ProxyInteropCase(TestCase):
    """txuac running ``script`` as its proxy, SIPp peers around it."""

    timeout = 60
    script = SCRIPT
    routing: dict = {}  # [routing] settings besides script
    uac: dict = {}  # [uac] settings
    proxy_at_setup = True  # False: the test calls start_proxy() itself
    transport = "udp"  # of txuac's socket and the SIPp peers ("tcp": SIPp -t t1)

    def setUp(self):
        self.sipp = require_program("sipp")
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        if self.proxy_at_setup:
            self.start_proxy()

    def start_proxy(self, port: int = 0) -> None:
        """txuac running ``script`` on ``transport``:HOST:``port`` (0: a free one): self.port, self.proxy."""
        script = os.path.join(self.workdir, "routing.py")
        with open(script, "w") as f:
            f.write(self.script)
        # [routing] script set: UACService runs the proxy (ProxyRunner) on its sockets.
        self.service = UACService(settings_from_dict({"core": {
            "listen": [f"{self.transport}:{HOST}:{port}"],
            "timer_t1": int(T1 * 1000),
            "timer_t2": int(T2 * 1000),
        }, "uac": self.uac, "rpc": {"enabled": False}, "routing": {"script": script, **self.routing}}), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.port = self.service.sip.bound_address(self.transport).port
        self.proxy = self.service.proxy.proxy
        self.assertEqual(self.proxy.local_addresses, [self.service.sip.bound_address(self.transport)])

    def sipp_peer(self, name: str, *args: str, port: int | None = None) -> tuple[PeerProcess, int, str]:
        port = port or free_port()
        messages = os.path.join(self.workdir, f"{name}.messages")
        mode = "t1" if self.transport == "tcp" else "u1"
        argv = [self.sipp, "-sf", os.path.join(SCENARIOS, name), "-i", HOST, "-p", str(port), "-t", mode,
                "-trace_msg", "-message_file", messages, "-trace_stat", "-stf",
                os.path.join(self.workdir, f"{name}.stats"), *args]
        peer = PeerProcess(argv, cwd=self.workdir, log_path=os.path.join(self.workdir, f"{name}.out"))
        self.addCleanup(peer.stop)
        return peer, port, messages

    @defer.inlineCallbacks
    def exit_status(self, peer: PeerProcess, timeout: float = 15.0):
        ended = yield until(lambda: not peer.running(), timeout, 0.02)
        self.assertTrue(ended, f"SIPp still running after {timeout} s: {peer.output()[-2000:]}")
        return peer.wait(0)

    @defer.inlineCallbacks
    def call(self, uac_scenario: str, uas_scenario: str, uas_port: int | None = None):
        """One call from SIPp ``uac_scenario`` through txuac to SIPp ``uas_scenario`` (on
        ``uas_port``, else a free port), both ended with status 0; (uac message file, uas
        message file, uas port)."""
        uas, uas_port, uas_messages = self.sipp_peer(uas_scenario, "-m", "1", port=uas_port)
        bound = tcp_listening if self.transport == "tcp" else udp_bound
        started = yield until(lambda: bound(uas_port) or not uas.running(), 10)
        self.assertTrue(started and uas.running(), f"SIPp UAS did not start: {uas.output()[-2000:]}")
        uac, _, uac_messages = self.sipp_peer(uac_scenario, f"{HOST}:{self.port}", "-m", "1",
                                              "-key", "uas", f"{HOST}:{uas_port}{self.uri_suffix}",
                                              "-timeout", "10", "-timeout_error")
        status = yield self.exit_status(uac)
        self.assertEqual(status, 0, uac.output()[-3000:])
        uas_status = yield self.exit_status(uas)
        self.assertEqual(uas_status, 0, uas.output()[-3000:])
        stats = last_stats(os.path.join(self.workdir, f"{uac_scenario}.stats"))
        self.assertEqual((stats["SuccessfulCall(C)"], stats["FailedCall(C)"]), ("1", "0"))
        return uac_messages, uas_messages, uas_port


    @property
    def uri_suffix(self) -> str:
        return "" if self.transport == "udp" else f";transport={self.transport}"


ANONYMISING_SCRIPT = SCRIPT.replace(
    "        rr.record_route()\n",
    "        rr.record_route()\n        uac.uac_replace_from(\"Anonymous\", \"sip:anonymous@anonymous.invalid\")\n")


ANONYMOUS = "Anonymous <sip:anonymous@anonymous.invalid>"
