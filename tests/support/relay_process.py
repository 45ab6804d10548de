"""The fault-injecting UDP relay (tests/support/relay.py) in a process of its own, for benches.

In the process that runs txuac, the relay's delay queue is served by txuac's reactor: when
txuac is busy, datagrams leave the relay late, and the "network" slows down with the very
process it is meant to test. Here the relay has a reactor of its own::

    relay = RelayProcess(registrar.address, seed=8)
    yield relay.start(harness)                 # stopped (by PID) at cleanup
    relay.set_faults(loss=0.1, delay=0.02)     # as UDPRelay's, sent to the child at once
    relay.blackhole = True
    snapshot = yield relay.snapshot()          # UDPRelay.snapshot(): counters and kinds

The child reads one JSON command a line on stdin, in order (a snapshot's answer means the
commands before it are in force), and answers ``snapshot`` with one JSON line on stdout;
its first line is ``ready PORT``. Run as ``python -m
tests.support.relay_process HOST PORT SEED`` (the target's host and port).
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, protocol
from twisted.protocols.basic import LineReceiver

from tests.support.relay import RelayEndpoint, UDPRelay

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


class _Commands(LineReceiver):
    """The child's stdin: commands for its UDPRelay."""

    delimiter = b"\n"

    def __init__(self, relay: UDPRelay):
        self.relay = relay

    def lineReceived(self, line: bytes) -> None:
        command = json.loads(line)
        if "set_faults" in command:
            self.relay.set_faults(**command["set_faults"])
        elif "blackhole" in command:
            self.relay.blackhole = bool(command["blackhole"])
        elif "snapshot" in command:
            self.sendLine(json.dumps(self.relay.snapshot_now()).encode())

    def connectionLost(self, reason=None) -> None:
        from twisted.internet import reactor

        if reactor.running:
            reactor.stop()  # the parent went away


class _Child(protocol.ProcessProtocol):
    """The parent's end: the child's port, then its snapshot replies in order."""

    def __init__(self):
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.replies: list[defer.Deferred] = []
        self.buffer = b""
        self.errors = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.startswith(b"ready ") and not self.ready.called:
                self.ready.callback(int(line.split()[1]))
            elif self.replies:
                self.replies.pop(0).callback(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4000:]

    def processEnded(self, reason) -> None:
        error = RuntimeError(f"the relay process ended: {reason.value}; {self.errors.decode(errors='replace')}")
        if not self.ready.called:
            self.ready.errback(error)
        for reply in self.replies:
            reply.errback(error)
        self.replies.clear()
        self.ended.callback(None)


class RelayProcess(RelayEndpoint):
    """A UDPRelay to ``target`` (host, port) in a child process, driven from this one."""

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", seed: int = 0, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.target = (target[0], int(target[1]))
        self.host = host
        self.seed = seed
        self.port = 0
        self._blackhole = False
        self._child: _Child | None = None
        self._transport = None

    @defer.inlineCallbacks
    def start(self, testcase=None):
        """Start the child and wait for its port; with ``testcase``, stop() is added to its cleanups."""
        self._child = _Child()
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
        self._transport = self.reactor.spawnProcess(
            self._child, sys.executable,
            [sys.executable, "-m", "tests.support.relay_process", self.target[0], str(self.target[1]), str(self.seed),
             self.host], env=environment, path=REPO)
        if testcase is not None:
            testcase.addCleanup(self.stop)
        self.port = yield self._child.ready
        return self.port

    def stop(self) -> defer.Deferred:
        """End the child (SIGTERM to its PID) and wait for it. Idempotent."""
        if self._child is None or self._child.ended.called:
            return defer.succeed(None)
        try:
            self._transport.signalProcess("TERM")
        except Exception:  # noqa: BLE001 - ended meanwhile
            pass
        return self._child.ended

    def _send(self, command: dict) -> None:
        self._transport.write(json.dumps(command).encode() + b"\n")

    def set_faults(self, **faults) -> None:
        """As UDPRelay.set_faults (checked by the child: a wrong value ends it)."""
        self._send({"set_faults": faults})

    @property
    def blackhole(self) -> bool:
        return self._blackhole

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        self._blackhole = bool(on)
        self._send({"blackhole": self._blackhole})

    def snapshot(self) -> defer.Deferred:
        """A Deferred of UDPRelay.snapshot_now() in the child."""
        reply: defer.Deferred = defer.Deferred()
        self._child.replies.append(reply)
        self._send({"snapshot": True})
        return reply


def main(target_host: str, target_port: str, seed: str, host: str = "127.0.0.1") -> None:
    from twisted.internet import reactor, stdio

    relay = UDPRelay((target_host, int(target_port)), host=host, seed=int(seed))
    relay.start()
    sys.stdout.write(f"ready {relay.port}\n")
    sys.stdout.flush()
    stdio.StandardIO(_Commands(relay))
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:])
