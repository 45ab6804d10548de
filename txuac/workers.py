"""``[core] workers = N``: worker 0 (the twistd or twist process) runs workers 1..N-1.

Each worker is the same service tree on the same configuration file, started as
``python -m twisted uac --config FILE --worker-index I``: it binds the listen sockets
shared with the others (SO_REUSEPORT, txuac.net.shared_sockets), sends its requests from
a socket of its own, and registers its share of the accounts
(txuac.registrant.worker_share). Worker 0 alone serves the admin interfaces. Why each
transaction's messages reach the worker that owns it: docs/workers.rst.

``WorkerSupervisor`` (in worker 0) starts the others once its own sockets are bound,
writes their output to its log with a ``worker`` field, starts again one that ended
(after 1 s, doubling up to ``MAX_RESTART_DELAY`` while it keeps ending within
``STEADY_RUN`` seconds), and stops them when it stops. ``ParentWatch`` (in workers 1..N-1)
stops its worker when worker 0 is gone, whatever ended it: the end of its stdin pipe.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
from typing import Callable

from twisted.application import service
from twisted.internet import defer, protocol, stdio
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import InvalidLogLevelError, LogLevel, Logger
from twisted.python.failure import Failure

log = Logger()

FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STEADY_RUN = 60.0  # a worker that ran this long starts again after FIRST_RESTART_DELAY
STOP_TIMEOUT = 70.0  # a worker waits up to 64*T1 for its transactions when stopping, then exits


def worker_argv(config_path: str, index: int, directory: str) -> list[str]:
    """The command line of worker ``index``: twist running the uac plugin, logging text lines
    to stdout for worker 0 to read; ``directory`` holds the workers' RPC sockets."""
    return [sys.executable, "-m", "twisted", "--log-format", "text", "uac", "--config",
            os.path.abspath(config_path), "--worker-index", str(index), "--worker-dir", directory]


# twist's text lines: "2026-12-06T08:59:01+0000 [txuac.service#info] txuac started", or
# "[-] ..." for Twisted's legacy log.
_TWIST_LINE = re.compile(r"^\d\S+ \[([^\]#]*)(?:#(\w+))?\] (.*)$", re.DOTALL)


class WorkerOutput(protocol.ProcessProtocol):
    """One worker process: its output lines go to the log; its end to the supervisor."""

    def __init__(self, index: int, ended: Callable[[int, Failure], None]):
        self.index = index
        self._ended = ended
        self._partial = {1: b"", 2: b""}
        self._level = LogLevel.info  # of the last log line: a traceback's lines go with it

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for line in lines:
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        """One line of the worker's log at its own level, with a ``worker`` field; its own
        time stamp goes. A line that does not start a log event (a traceback's) keeps the
        level of the one before."""
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text:
            return
        match = _TWIST_LINE.match(text)
        source = "-"
        if match is not None:
            source, text = match.group(1), match.group(3)
            try:
                self._level = LogLevel.levelWithName(match.group(2) or "info")
            except InvalidLogLevelError:
                self._level = LogLevel.info
        log.emit(self._level, "worker {worker} [{source}] {text}", worker=self.index, source=source, text=text)

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            self._emit(rest)
        self._ended(self.index, reason)


class WorkerSupervisor(service.Service):
    """Runs workers 1..``count``-1 as child processes of this one (worker 0)."""

    def __init__(self, config_path: str, count: int, reactor=None,
                 argv: Callable[[str, int, str], list[str]] = worker_argv,
                 owner: tuple[int, int | None] | None = None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        # The workers' RPC and handoff sockets (txuac.admin.worker_rpc, txuac.net.handoff):
        # ours alone (mode 0700). Made before twistd sheds root (``owner``: the uid and gid
        # it switches to), so it is given to that user, who binds the sockets.
        self.directory = tempfile.mkdtemp(prefix="txuac-workers-")
        if owner is not None:
            try:
                os.chown(self.directory, owner[0], owner[1] if owner[1] is not None else -1)
            except OSError as e:
                log.warn("cannot give {directory} to uid {uid}: {error}", directory=self.directory, uid=owner[0],
                         error=str(e))
        self.config_path = config_path
        self.count = count
        self._argv = argv
        self.processes: dict[int, object] = {}  # index -> IProcessTransport of a running worker
        self._started_at: dict[int, float] = {}
        self._delays: dict[int, float] = {}
        self._restarts: dict[int, object] = {}  # index -> IDelayedCall of a pending restart
        self._exits: dict[int, list[defer.Deferred]] = {}
        self.restarts = 0  # workers started again after ending

    def startService(self) -> None:
        super().startService()
        for index in range(1, self.count):
            self._start(index)

    def _start(self, index: int) -> None:
        self._restarts.pop(index, None)
        if not self.running:
            return
        argv = self._argv(self.config_path, index, self.directory)
        output = WorkerOutput(index, self._ended)
        # fd 0: a pipe the worker reads nothing from, only its end (ParentWatch).
        self.processes[index] = self.reactor.spawnProcess(output, argv[0], argv, env=os.environ,
                                                          childFDs={0: "w", 1: "r", 2: "r"})
        self._started_at[index] = self.reactor.seconds()
        log.info("worker {worker} started (pid {pid})", worker=index, pid=self.processes[index].pid)

    def _ended(self, index: int, reason: Failure) -> None:
        self.processes.pop(index, None)
        for d in self._exits.pop(index, []):
            d.callback(None)
        if not self.running:
            return
        ran = self.reactor.seconds() - self._started_at.get(index, 0.0)
        delay = FIRST_RESTART_DELAY if ran >= STEADY_RUN else self._delays.get(index, FIRST_RESTART_DELAY)
        self._delays[index] = min(delay * 2, MAX_RESTART_DELAY)
        log.warn("worker {worker} ended ({reason}): starting it again in {delay:g} s", worker=index,
                 reason=reason.getErrorMessage(), delay=delay)
        self.restarts += 1
        self._restarts[index] = self.reactor.callLater(delay, self._start, index)

    def stopService(self) -> defer.Deferred:
        """SIGTERM to every worker (they stop as twistd does on it); SIGKILL to those still
        running after STOP_TIMEOUT. Fires once all have ended."""
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waits = []
        for index, process in list(self.processes.items()):
            d: defer.Deferred = defer.Deferred()
            self._exits.setdefault(index, []).append(d)
            waits.append(d)
            _signal(process, "TERM")
        done = defer.DeferredList(waits)
        kill = self.reactor.callLater(STOP_TIMEOUT, self._kill_all)
        done.addBoth(lambda _: kill.cancel() if kill.active() else None)
        done.addBoth(lambda _: shutil.rmtree(self.directory, ignore_errors=True))
        return done

    def _kill_all(self) -> None:
        for index, process in list(self.processes.items()):
            log.warn("worker {worker} still running {timeout:g} s after SIGTERM: killing it", worker=index,
                     timeout=STOP_TIMEOUT)
            _signal(process, "KILL")


def _signal(process, name: str) -> None:
    try:
        process.signalProcess(name)
    except ProcessExitedAlready:
        pass  # its end is on the way to processEnded


class _ParentPipe(protocol.Protocol):
    def __init__(self, gone: Callable[[], None]):
        self._gone = gone

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self._gone()


class ParentWatch(service.Service):
    """In workers 1..N-1: stop this process (as SIGTERM would) when worker 0 is gone.

    Signals: SIGINT (Ctrl-C reaches the whole process group) is left to worker 0, which
    stops this one with SIGTERM; a SIGTERM that comes while stopping already (from worker 0
    after one to the whole group) is ignored instead of failing in ``reactor.stop``.
    """

    def __init__(self, reactor=None, stdin: int = 0):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._stdin = stdin
        self._io = None
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._take_signals)  # after the reactor installed its own
        sink = os.open(os.devnull, os.O_WRONLY)  # StandardIO wants somewhere to write: nothing is
        self._io = stdio.StandardIO(_ParentPipe(self._parent_gone), stdin=self._stdin, stdout=sink,
                                    reactor=self.reactor)

    def _take_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._terminated)

    def _terminated(self, signum, frame) -> None:
        log.info("SIGTERM: stopping")
        self.reactor.callFromThread(self._stop)

    def _parent_gone(self) -> None:
        if self.running:
            log.warn("worker 0 is gone: stopping")
            self.reactor.callLater(0, self._stop)

    def _stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.reactor.stop()


__all__ = ["ParentWatch", "WorkerSupervisor", "worker_argv"]
