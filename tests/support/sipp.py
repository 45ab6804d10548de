"""Running SIPp against txuac on loopback: the short timers the interop tests use (T1 50 ms,
T2 200 ms, so 64*T1 is 3.2 s), polling without blocking the reactor, the ports a peer has
bound (from /proc/net, Linux) and the messages of a SIPp -message_file."""

from __future__ import annotations

import re
import time

from twisted.internet import defer, reactor, task

from txuac.sip import parse_message

T1, T2 = 0.050, 0.200


HOST = "127.0.0.1"


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def until(predicate, timeout: float, interval: float = 0.01):
    """Poll ``predicate`` without blocking the reactor; True once it holds, False at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        yield sleep(interval)
    return True


def _proc_net_ports(kind: str, state: str | None) -> list[int]:
    """Local ports in /proc/net/{kind}{,6} (Linux), optionally only in one TCP state (hex)."""
    ports = []
    for name in (kind, kind + "6"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if state is None or fields[3] == state:
                        ports.append(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def udp_bound(port: int) -> bool:
    return port in _proc_net_ports("udp", None)


def tcp_listening(port: int) -> bool:
    return port in _proc_net_ports("tcp", "0A")


def established_to(port: int) -> int:
    """How many ESTABLISHED TCP sockets have ``port`` as their local port (the peer's side)."""
    return _proc_net_ports("tcp", "01").count(port)


_TRACE_RE = re.compile(rb"\n(UDP|TCP) message (sent|received) [^\n]*?(\d+)[^\n]*\n\n")


def sipp_messages(path: str) -> list[tuple[str, str, object]]:
    """(transport, 'sent'|'received', parsed message) from a SIPp -message_file."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    for match in _TRACE_RE.finditer(data):
        length = int(match.group(3))
        raw = data[match.end():match.end() + length]
        out.append((match.group(1).decode(), match.group(2).decode(), parse_message(raw)))
    return out
