"""SIPp as a registrar for the registrant's interop tests: a UAS scenario of
tests/registrant/sipp on loopback, and the REGISTERs it received read back from its
time-stamped message trace."""

from __future__ import annotations

import datetime
import os
import re

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.peers import PeerProcess, free_port, require_program
from tests.support.sipp import HOST, udp_bound, until
from txuac.sip import parse_message

SCENARIOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "registrant", "sipp")


T1_MS = 50  # 64*T1 = 3.2 s


UUID = "uuid00000"  # the l_uuid account_rows gives the first account


# "----------------------------------------------- 2026-11-22 09:27:40.366376\n"
# "UDP message received [268] bytes :\n\n" + the message
_TRACE_RE = re.compile(
    rb"-{5,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\r?\n(UDP|TCP) message (sent|received) [^\n]*?(\d+)[^\n]*\n\n")


def sipp_trace(path: str) -> list[tuple[float, str, object]]:
    """(time.time() of the event, 'sent'|'received', parsed message) from a SIPp -message_file.

    SIPp writes its (local, wall-clock) time stamps with each message and flushes them:
    the file can be read while SIPp runs. reactor.seconds() is the same clock.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for match in _TRACE_RE.finditer(data):
        length = int(match.group(4))
        raw = data[match.end():match.end() + length]
        if len(raw) < length:
            break  # being written
        at = datetime.datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((at, match.group(3).decode(), parse_message(raw)))
    return out


class SIPpRegistrar:
    """SIPp as a registrar (a UAS scenario of tests/registrant/sipp) on 127.0.0.1:port.

    ``address`` and ``password_for`` make it usable with account_rows of
    tests/support/accounts.py (SIPp never challenges: the password is never used).
    """

    def __init__(self, testcase: TestCase, name: str, *args: str):
        self.sipp = require_program("sipp")
        self.name = name
        self.workdir = os.path.abspath(testcase.mktemp())
        os.makedirs(self.workdir)
        self.port = free_port()
        self.address = (HOST, self.port)
        self.messages = os.path.join(self.workdir, f"{name}.messages")
        self.errors = os.path.join(self.workdir, f"{name}.errors")
        # -deadcall_wait 0: each scenario takes one REGISTER; without it SIPp would drop, as a
        # message of a finished call, every later REGISTER on the account's kept Call-ID.
        argv = [self.sipp, "-sf", os.path.join(SCENARIOS, name), "-i", HOST, "-p", str(self.port), "-t", "u1",
                "-deadcall_wait", "0",
                "-trace_msg", "-message_file", self.messages, "-trace_err", "-error_file", self.errors, *args]
        self.peer = PeerProcess(argv, cwd=self.workdir, log_path=os.path.join(self.workdir, f"{name}.out"))
        testcase.addCleanup(self.peer.stop)

    def password_for(self, user: str) -> str:
        return f"unused-{user}"

    @defer.inlineCallbacks
    def started(self):
        ok = yield until(lambda: udp_bound(self.port) or not self.peer.running(), 10)
        if not (ok and self.peer.running()):
            raise AssertionError(f"SIPp did not start: {self.explain()}")

    def registers(self) -> list[tuple[float, object]]:
        """(arrival time, request) of every REGISTER SIPp received, retransmissions included."""
        return [(at, m) for at, way, m in sipp_trace(self.messages)
                if way == "received" and getattr(m, "method", None) == "REGISTER"]

    def first_copies(self) -> list[tuple[float, object]]:
        """registers() without retransmissions (one entry per Via branch)."""
        seen, out = set(), []
        for at, request in self.registers():
            key = (request.call_id, request.headers.get("Via"))
            if key not in seen:
                seen.add(key)
                out.append((at, request))
        return out

    def explain(self) -> str:
        parts = [f"SIPp {self.name} running={self.peer.running()}"]
        for path in (self.peer.log_path, self.errors):
            try:
                with open(path, "rb") as f:
                    parts.append(f.read()[-2000:].decode("utf-8", "replace"))
            except (OSError, TypeError):
                pass
        return "\n".join(parts)
