"""JSON log lines: the formatter, the observers, and ``[log] format = "json"`` under twistd and twist."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3

from twisted.application import service
from twisted.logger import ILogObserver, LogLevel, Logger, textFileLogObserver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.registrant.test_interop_kamailio import insert_rows
from tests.support.peers import free_port, wait_for
from tests.test_tap import START_TIMEOUT, STOP_TIMEOUT, ProcessMixin, twist_argv, twistd_argv
from txuac import __version__
from txuac.admin import logs
from txuac.registrant.record import State
from txuac.registrant.store.sqlite import schema_for

SECRET = "s3cret-password-value"


def logged(emit) -> list[dict]:
    """The events ``emit(log)`` produces on a Logger, as the JSON lines json_observer writes."""
    out = io.StringIO()
    log = Logger(namespace="tests.admin", observer=logs.json_observer(out))
    emit(log)
    return [json.loads(line) for line in out.getvalue().splitlines()]


class EventAsJSONTests(SynchronousTestCase):
    def test_fields(self):
        [line] = logged(lambda log: log.info("registration {l_uuid}: {previous} -> {state} ({reason})",
                                             l_uuid="u1", previous=State.REGISTERING.value, state=State.FAILED.value,
                                             reason="no answer (timeout)", status=None))
        self.assertEqual(set(line), {"time", "level", "namespace", "text", "l_uuid", "previous", "state",
                                     "reason", "status"})
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        self.assertEqual((line["level"], line["namespace"]), ("info", "tests.admin"))
        self.assertEqual(line["text"], "registration u1: registering -> failed (no answer (timeout))")
        self.assertEqual((line["l_uuid"], line["state"], line["reason"], line["status"]),
                         ("u1", "failed", "no answer (timeout)", None))

    def test_secret_fields_left_out(self):
        [line] = logged(lambda log: log.warn("account {l_uuid} refused", l_uuid="u2", auth_password=SECRET,
                                             auth_ha1=SECRET, Authorization=SECRET, token=SECRET))
        self.assertEqual(line["l_uuid"], "u2")
        self.assertNotIn(SECRET, json.dumps(line))
        self.assertEqual(line["level"], "warn")

    def test_values_not_json(self):
        [line] = logged(lambda log: log.info("loaded {count}", count=3, where=object, error=ValueError("bad row"),
                                             state=State.ONLINE))
        self.assertEqual((line["count"], line["where"], line["error"], line["state"]),
                         (3, "<class 'object'>", "bad row", "online"))

    def test_values_json_cannot_hold(self):
        cycle: list = []
        cycle.append(cycle)
        [line] = logged(lambda log: log.info("odd", by_pair={("a", 1): 2}, cycle=cycle, l_uuid="u5"))
        self.assertEqual((line["by_pair"], line["cycle"], line["l_uuid"]), ("{('a', 1): 2}", "[[...]]", "u5"))

    def test_failure_traceback(self):
        def emit(log):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("REGISTER of {l_uuid} failed unexpectedly", Failure(), l_uuid="u3")

        [line] = logged(emit)
        self.assertEqual((line["level"], line["text"], line["l_uuid"]),
                         ("critical", "REGISTER of u3 failed unexpectedly", "u3"))
        self.assertIn("ZeroDivisionError", line["traceback"])

    def test_debug_filtered_by_default(self):
        lines = logged(lambda log: (log.debug("routine {l_uuid}", l_uuid="u4"), log.info("kept")))
        self.assertEqual([line["text"] for line in lines], ["kept"])
        out = io.StringIO()
        Logger(observer=logs.json_observer(out, level=LogLevel.debug)).debug("routine")
        self.assertEqual(json.loads(out.getvalue())["text"], "routine")


class RunnerOptionsTests(SynchronousTestCase):
    """with_json_logs and LogObserverRoot, with the runners' options as plain dicts."""

    def test_twistd_root_sets_the_application_observer(self):
        uac = service.MultiService()
        root = logs.with_json_logs(uac, {"logfile": None, "nodaemon": True, "logger": None, "syslog": False})
        self.assertIsInstance(root, logs.LogObserverRoot)
        self.assertIs(uac.parent, root)
        application = service.Application("uac")
        root.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), root.observer)
        self.assertEqual(list(service.IServiceCollection(application)), [root])

    def test_an_application_observer_already_set_stays(self):
        application = service.Application("uac")
        mine = textFileLogObserver(io.StringIO())
        application.setComponent(ILogObserver, mine)
        logs.LogObserverRoot(service.Service(), logs.json_observer(io.StringIO())).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), mine)

    def test_twistd_keeps_logger_and_syslog(self):
        uac = service.MultiService()
        for options in ({"logfile": None, "nodaemon": True, "logger": lambda: None, "syslog": False},
                        {"logfile": None, "nodaemon": False, "logger": None, "syslog": True},
                        {"logfile": "-", "nodaemon": False, "logger": None, "syslog": False}):
            self.assertIs(logs.with_json_logs(uac, options), uac)

    def test_twistd_log_file(self):
        path = os.path.abspath(self.mktemp())
        self.patch(signal, "signal", lambda *args: None)  # no SIGUSR1 handler left behind
        out = logs.twistd_log_file({"logfile": path, "nodaemon": False, "logger": None, "syslog": False})
        self.addCleanup(out.close)
        self.assertEqual(out.path, path)

    def test_twist(self):
        uac = service.MultiService()
        options = {"fileLogObserverFactory": textFileLogObserver, "logFormat": "text"}
        self.assertIs(logs.with_json_logs(uac, options), uac)
        self.assertIs(options["fileLogObserverFactory"], logs.json_file_observer)

    def test_embedded(self):
        uac = service.MultiService()
        self.assertIs(logs.with_json_logs(uac, None), uac)


class JSONLogProcessTests(ProcessMixin, SynchronousTestCase):
    """``[log] format = "json"``: every line the command writes is a JSON object, and a
    registration that fails (nobody answers) is an event with its fields."""

    def json_config(self) -> str:
        path = os.path.join(self.workdir, "accounts.sqlite")
        connection = sqlite3.connect(path)
        connection.executescript(schema_for("uacreg"))
        insert_rows(connection, [{
            "l_uuid": "silent", "l_username": "silent", "l_domain": "local.example", "r_username": "silent",
            "r_domain": "test.example", "realm": "test.example", "auth_username": "silent",
            "auth_password": SECRET, "auth_ha1": "", "auth_proxy": f"sip:127.0.0.1:{free_port()}",
            "expires": 600, "flags": 0, "reg_delay": 0, "contact_addr": "", "socket": "", "contact_user": "",
        }], "?")
        connection.close()
        port = free_port()
        return self.config(
            "[core]\n"
            f'listen = ["udp:127.0.0.1:{port}"]\n'
            "timer_t1 = 50\n"
            "[uac]\n"
            'reg_db_url = "sqlite:///accounts.sqlite"\n'
            f'reg_contact_addr = "127.0.0.1:{port}"\n'
            "reg_retry_interval = 60\n"
            "[rpc]\n"
            "enabled = false\n"
            "[log]\n"
            'format = "json"\n'
        )

    def run_until_failed(self, argv: list[str], log_path: str | None = None) -> list[dict]:
        """Run until the account's failure is logged, stop; the log's lines, parsed."""
        process = self.start(argv)

        def log() -> str:
            if log_path is None:
                return process.output()
            try:
                with open(log_path) as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        failed = "registration silent: registering -> failed"
        if not wait_for(lambda: failed in log() or not process.running(), START_TIMEOUT):
            self.fail(f"no {failed!r} within {START_TIMEOUT} s:\n{process.output()}\n{log()}")
        os.kill(process.pid, signal.SIGTERM)
        process.wait(STOP_TIMEOUT)
        self.assertClean(process.output())
        if log_path is not None:
            self.assertEqual(process.output(), "")  # everything went to the log file
        text = log()
        self.assertClean(text)
        self.assertNotIn(SECRET, text)
        lines = []
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                self.fail(f"not a JSON line: {line!r}\n{text}")
        return lines

    def assertEvents(self, lines: list[dict]) -> None:
        for line in lines:
            self.assertIsInstance(line, dict)
            self.assertTrue({"time", "level", "namespace", "text"} <= set(line), line)
        texts = [line["text"] for line in lines]
        self.assertIn(f"txuac {__version__} started", texts)
        events = [line for line in lines if line.get("l_uuid") == "silent" and line.get("state") == "failed"]
        self.assertTrue(events, texts)
        event = events[0]
        self.assertEqual((event["namespace"], event["level"], event["previous"], event["reason"], event["status"]),
                         ("txuac.registrant.service", "info", "registering", "no answer (timeout)", None))
        self.assertIn("txuac stopped", texts)

    def test_twistd(self):
        config = self.json_config()
        self.assertEvents(self.run_until_failed(twistd_argv("-n", "--pidfile=", "uac", "--config", config)))

    def test_twistd_logfile(self):
        config = self.json_config()
        logfile = os.path.join(self.workdir, "txuac.log")
        self.assertEvents(self.run_until_failed(
            twistd_argv("-n", "--pidfile=", f"--logfile={logfile}", "uac", "--config", config), logfile))

    def test_twist(self):
        config = self.json_config()
        self.assertEvents(self.run_until_failed(twist_argv("--log-format=text", "uac", "--config", config)))
