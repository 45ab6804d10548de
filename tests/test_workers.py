"""``[core] workers``: the setting, and worker 0's supervisor of the others
(txuac.workers) with real child processes."""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.sipp import until
from txuac import workers
from txuac.config import settings_from_dict
from txuac.errors import ConfigError
from txuac.workers import ParentWatch, WorkerSupervisor, worker_argv


class WorkersSettingTests(TestCase):
    def core(self, **core):
        return settings_from_dict({"core": core}, "uac.toml").core

    def test_default_one(self):
        self.assertEqual(self.core().workers, 1)

    def test_auto_is_one_per_core(self):
        self.assertEqual(self.core(workers="auto").workers, os.cpu_count())

    def test_number(self):
        self.assertEqual(self.core(workers=3, listen=["udp:127.0.0.1:5060"]).workers, 3)

    def test_refused(self):
        for value in (0, -1, 10_000, "all", True, 1.5):
            with self.assertRaises(ConfigError) as caught:
                self.core(workers=value)
            self.assertIn("uac.toml: [core] workers", str(caught.exception))

    def test_port_zero_cannot_be_shared(self):
        """Each worker binds the same port: one picked by the system would differ."""
        with self.assertRaises(ConfigError) as caught:
            self.core(workers=2, listen=["udp:127.0.0.1:0"])
        self.assertIn("[core] listen: port 0 cannot be shared by 2 workers", str(caught.exception))
        self.assertEqual(self.core(workers=1, listen=["udp:127.0.0.1:0"]).listen[0].port, 0)


def script(code: str):
    """A worker command line running ``code`` instead of txuac."""
    return lambda path, index, directory: [sys.executable, "-c", code, str(index)]


class SupervisorTests(TestCase):
    timeout = 30

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def texts(self, level=None) -> list[str]:
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "txuac.workers" and (level is None or e["log_level"] is level)]

    def test_worker_command_line(self):
        argv = worker_argv("conf/uac.toml", 3, "/run/w")
        self.assertEqual(argv[:3], [sys.executable, "-m", "twisted"])
        self.assertEqual(argv[-6:], ["--config", os.path.abspath("conf/uac.toml"), "--worker-index", "3",
                                     "--worker-dir", "/run/w"])

    @defer.inlineCallbacks
    def test_runs_workers_and_stops_them(self):
        """Workers 1..N-1 run; their log lines come to this log with their level and a
        worker field, their own time stamp gone; stopping sends SIGTERM and waits."""
        supervisor = WorkerSupervisor("uac.toml", 3, reactor, script(
            "import sys, time\n"
            "print('2026-12-06T08:59:01+0000 [txuac.service#warn] hello from', sys.argv[1], flush=True)\n"
            "time.sleep(60)\n"))
        supervisor.startService()
        self.assertEqual(sorted(supervisor.processes), [1, 2])
        yield until(lambda: len(self.texts(LogLevel.warn)) == 2, timeout=20)
        self.assertEqual(sorted(self.texts(LogLevel.warn)),
                         ["worker 1 [txuac.service] hello from 1", "worker 2 [txuac.service] hello from 2"])
        self.assertEqual({e["worker"] for e in self.events if "hello" in formatEvent(e)}, {1, 2})
        self.assertTrue(os.path.isdir(supervisor.directory))
        yield supervisor.stopService()
        self.assertEqual(supervisor.processes, {})
        self.assertEqual(supervisor.restarts, 0)
        self.assertFalse(os.path.exists(supervisor.directory))  # the workers' sockets go with them

    def test_directory_given_to_the_user_twistd_runs_as(self):
        """twistd --uid: the directory made as root goes to that user, who binds the
        workers' sockets in it once root is shed."""
        if os.geteuid() != 0:
            raise SkipTest("only root can give a directory away")
        supervisor = WorkerSupervisor("uac.toml", 2, reactor, owner=(65534, None))
        self.addCleanup(os.rmdir, supervisor.directory)
        status = os.stat(supervisor.directory)
        self.assertEqual((status.st_uid, status.st_gid, status.st_mode & 0o777), (65534, 0, 0o700))

    def test_directory_that_cannot_be_given_away_is_logged(self):
        self.patch(workers.os, "chown", lambda *args: (_ for _ in ()).throw(PermissionError(1, "not permitted")))
        supervisor = WorkerSupervisor("uac.toml", 2, reactor, owner=(65534, 65534))
        self.addCleanup(os.rmdir, supervisor.directory)
        [warning] = self.texts(LogLevel.warn)
        self.assertIn("cannot give", warning)
        self.assertIn("uid 65534", warning)

    @defer.inlineCallbacks
    def test_restarts_a_worker_that_ended(self):
        self.patch(workers, "FIRST_RESTART_DELAY", 0.1)
        supervisor = WorkerSupervisor("uac.toml", 2, reactor, script("raise SystemExit(3)"))
        supervisor.startService()
        yield until(lambda: supervisor.restarts >= 2, timeout=20)
        yield supervisor.stopService()
        ended = [t for t in self.texts(LogLevel.warn) if t.startswith("worker 1 ended")]
        self.assertIn("exit code 3", ended[0])
        self.assertIn("starting it again in 0.1 s", ended[0])
        self.assertIn("starting it again in 0.2 s", ended[1])  # backoff: doubled while it keeps ending


class ParentWatchTests(TestCase):
    @defer.inlineCallbacks
    def test_stops_when_the_pipe_ends(self):
        """Worker 0 gone (its end of the worker's stdin closed): the worker stops its reactor."""
        read, write = os.pipe()
        stopped = []
        fake = _Reactor(stopped)
        watch = ParentWatch(fake, stdin=read)
        watch.startService()
        self.addCleanup(watch.stopService)
        yield until(lambda: fake.started, timeout=5)
        os.close(write)
        yield until(lambda: stopped, timeout=10)


class _Reactor:
    """The real reactor, with ``stop`` recorded instead of done."""

    def __init__(self, stopped: list):
        self.started = True
        self._stopped = stopped

    def __getattr__(self, name):
        return getattr(reactor, name)

    def callWhenRunning(self, *args):
        pass  # SIGINT stays as the test runner has it

    def stop(self):
        self._stopped.append(True)
