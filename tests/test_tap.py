"""The uac plugin run for real: ``twistd -n uac --config FILE`` and ``twist uac --config FILE``.

Each test starts the command from a temporary directory with PYTHONPATH set to
the checkout (as the README says a checkout without installing works), talks
SIP to it over loopback from plain sockets and signals it by PID.

Exit status on SIGTERM/SIGINT: twistd and twist stop the reactor cleanly, then
re-raise the signal on themselves (twisted.application.app._exitWithSignal) so
that the parent sees a death by that signal, as a shell expects of Ctrl-C. A
clean shutdown is therefore ``returncode == -signal``, with the shutdown logged
and no traceback; a crash is a positive exit status.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.support.peers import PeerProcess, free_port, wait_for
from txuac import __version__, tap
from txuac.service import UACService

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


class ProcessMixin:
    """Start the command in a temporary directory, collect its output, stop it by PID."""

    def setUp(self):
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
        env.pop("TWISTED_REACTOR", None)
        return env

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


class TwistdTests(ProcessMixin, SynchronousTestCase):
    def twistd(self, config: str, *extra: str) -> list[str]:
        return twistd_argv("-n", "--pidfile=", *extra, "uac", "--config", config)

    def test_sigterm(self):
        config, port = self.good_config()
        output = self.run_and_signal(self.twistd(config), port, signal.SIGTERM)
        self.assertIn("Received SIGTERM, shutting down.", output)
        self.assertIn("Server Shut Down.", output)

    def test_sigint(self):
        config, port = self.good_config()
        output = self.run_and_signal(self.twistd(config), port, signal.SIGINT)
        self.assertIn("Received SIGINT, shutting down.", output)
        self.assertIn("Server Shut Down.", output)

    def test_rpc_answers_txuac_ctl(self):
        """The JSON-RPC server runs under twistd; txuac-ctl finds it through the same file."""
        config, port = self.good_config()
        process = self.start(self.twistd(config))
        output = self.wait_started(process)
        self.assertIn(f"JSON-RPC listening on 127.0.0.1:{self.rpc_port}", output)
        self.assertIn("[rpc] token is not set: any local user can administer txuac", output)
        ctl = subprocess.run([sys.executable, "-m", "txuac.admin.ctl", "--config", config, "core.version"],
                             env=self.env(), capture_output=True, text=True, timeout=START_TIMEOUT)
        self.assertEqual((ctl.returncode, ctl.stderr), (0, ""))
        self.assertTrue(ctl.stdout.startswith(f"txuac {__version__} (Python "), ctl.stdout)
        os.kill(process.pid, signal.SIGTERM)
        self.assertEqual(process.wait(STOP_TIMEOUT), -signal.SIGTERM, process.output())
        self.assertTrue(bindable("tcp", self.rpc_port))

    def test_bad_config(self):
        config = self.config('[core]\nlisten = ["sctp:127.0.0.1:5060"]\n')
        status, output = self.run_to_end(self.twistd(config))
        self.assertEqual(status, 1, output)
        self.assertEqual(output.strip(),
                         f"txuac: {config}: [core] listen[0]: 'sctp:127.0.0.1:5060' must start with udp:, tcp: or tls:")

    def test_relative_config_path(self):
        self.config("[core]\ntimer_t1 = -5\n", "relative.toml")
        status, output = self.run_to_end(twistd_argv("-n", "--pidfile=", "uac", "--config", "relative.toml"))
        self.assertEqual(status, 1, output)
        self.assertEqual(output.strip(), "txuac: relative.toml: [core] timer_t1: must be positive, got -5")

    def test_invalid_toml(self):
        config = self.config("[core\n")
        status, output = self.run_to_end(self.twistd(config))
        self.assertEqual(status, 1, output)
        self.assertIn(f"txuac: {config}: not valid TOML", output)
        self.assertClean(output)

    def test_missing_config_file(self):
        config = os.path.join(self.workdir, "missing.toml")
        status, output = self.run_to_end(self.twistd(config))
        self.assertEqual(status, 1, output)
        self.assertEqual(output.strip(), f"txuac: {config}: cannot read: No such file or directory")

    def test_no_config_option(self):
        status, output = self.run_to_end(twistd_argv("-n", "--pidfile=", "uac"))
        self.assertEqual(status, 1, output)
        self.assertIn("--config is required", output)
        self.assertClean(output)

    def test_port_in_use(self):
        config, port = self.good_config()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            status, output = self.run_to_end(self.twistd(config))
        self.assertEqual(status, 1, output)
        self.assertIn(f"txuac: {config}: [core] listen: cannot bind tcp:127.0.0.1:{port}: Address already in use",
                      output)
        self.assertClean(output)

    def test_port_in_use_daemon(self):
        """Daemonized, the parent reports the error and twistd removes its pid file."""
        config, port = self.good_config()
        pidfile = os.path.join(self.workdir, "twistd.pid")
        logfile = os.path.join(self.workdir, "twistd.log")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
            blocker.bind(("127.0.0.1", port))
            status, output = self.run_to_end(
                twistd_argv(f"--pidfile={pidfile}", f"--logfile={logfile}", "uac", "--config", config))
        self.assertEqual(status, 1, output)
        self.assertIn("An error has occurred: b'txuac.errors.ConfigError: ", output)  # twistd cuts it at 100 bytes
        self.assertFalse(os.path.exists(pidfile))
        with open(logfile) as f:
            log = f.read()
        self.assertIn(f"txuac: {config}: [core] listen: cannot bind udp:127.0.0.1:{port}: Address already in use", log)
        self.assertClean(log)

    def test_help_lists_config(self):
        status, output = self.run_to_end(twistd_argv("uac", "--help"))
        self.assertEqual(status, 0, output)
        self.assertIn("--config=", output)
        self.assertIn("Path to the TOML configuration file.", output)

    def test_plugin_listed(self):
        status, output = self.run_to_end(twistd_argv("--help"))
        self.assertEqual(status, 0, output)
        self.assertTrue(re.search(r"^\s+uac\s+Kamailio uac module", output, re.M), output)

    def test_version(self):
        status, output = self.run_to_end(twistd_argv("uac", "--version"))
        self.assertEqual((status, output.strip()), (0, f"txuac {__version__}"))

    def test_shipped_config(self):
        """conf/uac.toml as shipped, only its ports moved off 5060 so that tests may run anywhere."""
        port = free_port()
        with open(SHIPPED) as f:
            text = f.read()
        self.assertEqual(text.count(":5060\""), 2, "the sample's sockets changed: update this test")
        self.assertEqual(text.count('"tcp:5064:'), 1, "the sample's [rpc] listen changed: update this test")
        text = text.replace('"tcp:5064:', f'"tcp:{free_port(socket.SOCK_STREAM)}:')
        config = self.config(text.replace(':5060"', f':{port}"'))
        self.run_and_signal(self.twistd(config), port, signal.SIGTERM)


class TwistTests(ProcessMixin, SynchronousTestCase):
    def twist(self, config: str) -> list[str]:
        return twist_argv("--log-format=text", "uac", "--config", config)

    def test_sigterm(self):
        config, port = self.good_config()
        self.run_and_signal(self.twist(config), port, signal.SIGTERM)

    def test_sigint(self):
        config, port = self.good_config()
        self.run_and_signal(self.twist(config), port, signal.SIGINT)

    def test_bad_config(self):
        config = self.config("[core]\nmax_message_size = \"big\"\n")
        status, output = self.run_to_end(self.twist(config))
        self.assertEqual(status, 1, output)
        self.assertEqual(output.strip(), f"txuac: {config}: [core] max_message_size: expected an integer, got str")

    def test_port_in_use(self):
        config, port = self.good_config()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            status, output = self.run_to_end(self.twist(config))
        self.assertEqual(status, 1, output)
        self.assertIn(f"txuac: {config}: [core] listen: cannot bind tcp:127.0.0.1:{port}: Address already in use",
                      output)
        self.assertClean(output)

    def test_no_config_option(self):
        status, output = self.run_to_end(twist_argv("uac"))
        self.assertNotEqual(status, 0, output)
        self.assertIn("--config is required", output)
        self.assertClean(output)


class OptionsTests(SynchronousTestCase):
    """txuac.tap in-process: what twistd does with the plugin before it runs anything."""

    def test_settings_loaded(self):
        options = tap.Options()
        options.parseOptions(["--config", SHIPPED])
        self.assertEqual(options["settings"].path, SHIPPED)
        self.patch(sys, "excepthook", sys.excepthook)  # makeService installs its own
        service = tap.makeService(options)
        self.assertIsInstance(service, UACService)
        self.assertIs(service.settings, options["settings"])
        self.assertFalse(service.running)

    def test_json_logs_under_twistd(self):
        """[log] format = "json" under twistd: the service comes wrapped in the root that
        gives twistd its log observer; without a runner (embedded) it comes as it is."""
        from twisted.scripts.twistd import ServerOptions

        from txuac.admin.logs import LogObserverRoot

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('[rpc]\nenabled = false\n[log]\nformat = "json"\n')
        self.patch(sys, "excepthook", sys.excepthook)
        runner = ServerOptions()
        runner.parseOptions(["-n", "--pidfile=", "uac", "--config", path])
        root = tap.makeService(runner.subOptions)
        self.assertIsInstance(root, LogObserverRoot)
        self.assertIsInstance(root.child, UACService)
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertIsInstance(tap.makeService(options), UACService)

    def test_short_option(self):
        options = tap.Options()
        options.parseOptions(["-c", SHIPPED])
        self.assertEqual(options["config"], SHIPPED)

    def test_config_required(self):
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, [])

    def test_bad_config_exits_with_the_message(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[core]\nbogus = 1\n")
        with self.assertRaises(SystemExit) as caught:
            tap.Options().parseOptions(["--config", path])
        self.assertEqual(caught.exception.code, f"txuac: {path}: [core] unknown key(s): bogus")

    def test_excepthook(self):
        self.patch(sys, "excepthook", sys.excepthook)
        seen = []
        sys.excepthook = lambda *info: seen.append(info)
        tap._install_excepthook()
        err = []
        self.patch(sys, "stderr", type("Err", (), {"write": lambda _, text: err.append(text), "flush": lambda _: None})())
        try:
            raise tap.ConfigError("x.toml: [core] listen: cannot bind udp:127.0.0.1:5060: Address already in use")
        except tap.ConfigError:
            sys.excepthook(*sys.exc_info())
        self.assertEqual("".join(err), "txuac: x.toml: [core] listen: cannot bind udp:127.0.0.1:5060: "
                                       "Address already in use\n")
        self.assertEqual(seen, [])
        try:
            raise ValueError("a bug")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        self.assertEqual([info[0] for info in seen], [ValueError])  # anything else: the usual traceback
