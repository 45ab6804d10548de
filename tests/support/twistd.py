"""Run the uac plugin for real in tests: ``twistd``/``twist`` subprocesses in a temporary
directory with PYTHONPATH set to the checkout, talked to over loopback, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid

from tests.support.peers import PeerProcess, free_port, wait_for
from txuac import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(ROOT, "conf", "uac.toml")
BIN = os.path.dirname(sys.executable)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def twistd_argv(*args: str) -> list[str]:
    script = os.path.join(BIN, "twistd")
    if os.access(script, os.X_OK):
        return [script, *args]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())", *args]


def twist_argv(*args: str) -> list[str]:
    script = os.path.join(BIN, "twist")
    if os.access(script, os.X_OK):
        return [script, *args]
    return [sys.executable, "-m", "twisted", *args]


def options_request(port: int, local_port: int, call_id: str, transport: str = "UDP") -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:test@127.0.0.1>;tag=test\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 7 OPTIONS\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def bindable(transport: str, port: int) -> bool:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def child_environment() -> dict:
    """This process's environment with the checkout first on PYTHONPATH and no TWISTED_REACTOR."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("TWISTED_REACTOR", None)
    return env


class ProcessMixin:
    """Start the command in a temporary directory, collect its output, stop it by PID."""

    def setUp(self):
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    def env(self) -> dict:
        return child_environment()

    def config(self, text: str, name: str = "uac.toml") -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def good_config(self) -> tuple[str, int]:
        port = free_port()
        self.rpc_port = free_port(socket.SOCK_STREAM)
        path = self.config(
            "[core]\n"
            f'listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
            "timer_t1 = 50\n"
            "timer_t2 = 400\n"
            "[rpc]\n"
            f'listen = "tcp:{self.rpc_port}:interface=127.0.0.1"\n'
        )
        return path, port

    def shipped_config(self, port: int) -> str:
        """conf/uac.toml copied to conf/ of the work directory beside an empty var/ (as in the
        checkout), its SIP port moved to ``port`` and its RPC port to a free one (self.rpc_port)."""
        with open(SHIPPED) as f:
            text = f.read()
        if text.count(':5060"') != 3 or text.count('"tcp:5064:') != 1:
            raise AssertionError("the sample's sockets or reg_contact_addr changed: update shipped_config")
        self.rpc_port = free_port(socket.SOCK_STREAM)
        text = text.replace('"tcp:5064:', f'"tcp:{self.rpc_port}:').replace(':5060"', f':{port}"')
        os.makedirs(os.path.join(self.workdir, "conf"))
        os.makedirs(os.path.join(self.workdir, "var"))
        return self.config(text, os.path.join("conf", "uac.toml"))

    def start(self, argv: list[str]) -> PeerProcess:
        log_path = os.path.join(self.workdir, f"output-{uuid.uuid4().hex[:8]}.log")
        # A child inherits an ignored SIGINT (a background job of a non-interactive
        # shell), and Twisted installs no handler then: give it the default one.
        previous = signal.getsignal(signal.SIGINT)
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = PeerProcess(argv, cwd=self.workdir, env=self.env(), log_path=log_path)
        finally:
            if previous == signal.SIG_IGN:
                signal.signal(signal.SIGINT, previous)
        self.addCleanup(process.stop)
        return process

    def run_to_end(self, argv: list[str], timeout: float = START_TIMEOUT) -> tuple[int, str]:
        process = self.start(argv)
        status = process.wait(timeout)
        return status, process.output()

    def wait_started(self, process: PeerProcess) -> str:
        started = f"txuac {__version__} started"
        if not wait_for(lambda: started in process.output() or not process.running(), START_TIMEOUT):
            self.fail(f"no {started!r} within {START_TIMEOUT}s:\n{process.output()}")
        if not process.running():
            self.fail(f"exited with {process.process.returncode}:\n{process.output()}")
        return process.output()

    def assertClean(self, output: str) -> None:
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Unhandled", output)

    def options_over_udp(self, port: int) -> str:
        call_id = uuid.uuid4().hex
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            s.sendto(options_request(port, s.getsockname()[1], call_id), ("127.0.0.1", port))
            data, source = s.recvfrom(65535)
        self.assertEqual(source, ("127.0.0.1", port))  # answered from the socket it was sent to
        return self.assertAnswered(data.decode(), call_id)

    def options_over_tcp(self, port: int) -> str:
        call_id = uuid.uuid4().hex
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(options_request(port, s.getsockname()[1], call_id, "TCP"))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65535)
                if not chunk:
                    break
                data += chunk
        return self.assertAnswered(data.decode(), call_id)

    def assertAnswered(self, text: str, call_id: str) -> str:
        self.assertTrue(text.startswith("SIP/2.0 200 OK\r\n"), text)
        self.assertIn(f"\r\nCall-ID: {call_id}\r\n", text)
        self.assertIn("\r\nCSeq: 7 OPTIONS\r\n", text)
        self.assertIn(f";branch=z9hG4bK{call_id}", text)
        self.assertIn(f"\r\nServer: txuac/{__version__}\r\n", text)
        return text

    def run_and_signal(self, argv: list[str], port: int, signum: int) -> str:
        """Start, check the sockets are logged and answer OPTIONS, send ``signum``, check the shutdown."""
        process = self.start(argv)
        output = self.wait_started(process)
        self.assertIn(f"listening on udp:127.0.0.1:{port}", output)
        self.assertIn(f"listening on tcp:127.0.0.1:{port}", output)
        self.assertFalse(bindable("udp", port))
        self.assertFalse(bindable("tcp", port))
        self.options_over_udp(port)
        self.options_over_tcp(port)

        signalled = time.monotonic()
        os.kill(process.pid, signum)
        try:
            status = process.wait(STOP_TIMEOUT)
        except Exception:
            self.fail(f"still running {STOP_TIMEOUT}s after signal {signum}:\n{process.output()}")
        self.assertLess(time.monotonic() - signalled, STOP_TIMEOUT)
        output = process.output()
        self.assertEqual(status, -signum, output)  # a clean stop, then the signal re-raised: see the docstring
        self.assertIn("txuac stopped", output)
        self.assertClean(output)
        self.assertTrue(bindable("udp", port))
        self.assertTrue(bindable("tcp", port))
        return output
