"""Real third-party peers for interop tests: find them, give them ports, stop them.

A test that needs a peer calls ``require_program("sipp")``. When the program
is missing the test is skipped with the reason, unless TXUAC_REQUIRE_PEERS=1
(as .ci/run sets), in which case it fails: CI must never skip interop silently.
TXUAC_NO_PEERS=1 treats every peer as missing: the unit tests alone, as on a
machine where ``./dev setup`` could not install the peers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import SkipTest

PEERS_REQUIRED = os.environ.get("TXUAC_REQUIRE_PEERS") == "1"
PEERS_HIDDEN = os.environ.get("TXUAC_NO_PEERS") == "1"
MISSING_HINT = "install it with ./dev setup as root"
EXTRA_PATHS = ("/usr/sbin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def find_program(name: str) -> str | None:
    if PEERS_HIDDEN:
        return None
    found = shutil.which(name)
    if found:
        return found
    for directory in EXTRA_PATHS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_program(name: str) -> str:
    """The path of ``name``, or skip (fail when peers are required) if it is not installed."""
    path = find_program(name)
    if path is None:
        missing_peer(f"{name} is not installed")
    return path


def missing_peer(message: str) -> None:
    """Skip the test for a peer that is not installed, or fail when peers are required."""
    message = f"{message} ({MISSING_HINT})"
    if PEERS_REQUIRED:
        raise AssertionError(message + " and TXUAC_REQUIRE_PEERS=1")
    raise SkipTest(message)


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, kind) as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            try:
                with socket.socket(family, other) as second:
                    second.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


class PeerProcess:
    """A peer started as a subprocess in its own process group, stopped by PID."""

    def __init__(self, argv: list[str], cwd: str | None = None, env: dict | None = None, log_path: str | None = None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``timeout``; returns the exit status."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.process.returncode

    def output(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (for process start-up only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
