"""The log as ``[log]`` says: the JSON formatter, the observers and their level filter,
and ``format``/``level`` under twistd and twist."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import sys

from twisted.application import service
from twisted.logger import ILogObserver, LogLevel, Logger, textFileLogObserver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support.stores import insert_rows
from tests.support.peers import free_port, wait_for
from tests.support.twistd import START_TIMEOUT, STOP_TIMEOUT, ProcessMixin, twist_argv, twistd_argv
from txuac import __version__
from txuac.admin import logs
from txuac.config import LogSettings
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

    def test_twisted_legacy_messages(self):
        """Twisted's own twisted.python.log messages: text, system and traceback fields."""
        from twisted.logger import globalLogPublisher
        from twisted.python import log as legacy

        out = io.StringIO()
        observer = logs.json_observer(out)
        globalLogPublisher.addObserver(observer)
        try:
            legacy.msg("Starting factory <Factory>", system="UDPListener (UDP)")
            legacy.msg(format="%(count)d datagrams dropped", count=3)
            legacy.err(Failure(ValueError("boom")), "Unhandled error in Deferred")
            legacy.err(Failure(KeyError("k")))
        finally:
            globalLogPublisher.removeObserver(observer)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        self.flushLoggedErrors(ValueError, KeyError)
        self.assertEqual([(line["namespace"], line["text"], line.get("system")) for line in lines],
                         [("twisted", "Starting factory <Factory>", "UDPListener (UDP)"),
                          ("twisted", "3 datagrams dropped", None),
                          ("twisted", "Unhandled error in Deferred", None),
                          ("twisted", "Unhandled error", None)])
        self.assertEqual(lines[1]["count"], 3)
        self.assertEqual([line["level"] for line in lines], ["info", "info", "critical", "critical"])
        self.assertIn("ValueError: boom", lines[2]["traceback"])
        self.assertIn("KeyError", lines[3]["traceback"])
        self.assertNotIn("Traceback", lines[2]["text"])

    def test_debug_filtered_by_default(self):
        lines = logged(lambda log: (log.debug("routine {l_uuid}", l_uuid="u4"), log.info("kept")))
        self.assertEqual([line["text"] for line in lines], ["kept"])
        out = io.StringIO()
        Logger(observer=logs.json_observer(out, level=LogLevel.debug)).debug("routine")
        self.assertEqual(json.loads(out.getvalue())["text"], "routine")


class LevelFilterTests(SynchronousTestCase):
    """text_observer and json_observer write only the events at their level and above."""

    def emit_every_level(self, observer) -> None:
        log = Logger(namespace="tests.admin", observer=observer)
        for level in LogLevel.iterconstants():
            log.emit(level, "at {name}", name=level.name)

    def test_text_observer(self):
        for level in LogLevel.iterconstants():
            out = io.StringIO()
            self.emit_every_level(logs.text_observer(out, level))
            written = re.findall(r"at (\w+)$", out.getvalue(), re.MULTILINE)
            self.assertEqual(written, [above.name for above in LogLevel.iterconstants() if above >= level])
        out = io.StringIO()
        self.emit_every_level(logs.text_observer(out))
        self.assertEqual(re.findall(r"at (\w+)$", out.getvalue(), re.MULTILINE), ["info", "warn", "error", "critical"])
        self.assertRegex(out.getvalue(), r"(?m)^\S+ \[tests\.admin#info\] at info$")  # twistd's text lines

    def test_json_observer(self):
        for level in LogLevel.iterconstants():
            out = io.StringIO()
            self.emit_every_level(logs.json_observer(out, level))
            written = [json.loads(line)["level"] for line in out.getvalue().splitlines()]
            self.assertEqual(written, [above.name for above in LogLevel.iterconstants() if above >= level])


def twistd_options(**options) -> dict:
    """twistd's ServerOptions as a plain dict: ``twistd -n``, then ``options``."""
    return dict({"logfile": None, "nodaemon": True, "logger": None, "syslog": False}, **options)


class RunnerOptionsTests(SynchronousTestCase):
    """with_configured_logs and LogObserverRoot, with the runners' options as plain dicts."""

    def observer_for(self, settings: LogSettings) -> ILogObserver:
        """The observer twistd -n is given for ``settings``."""
        root = logs.with_configured_logs(service.MultiService(), settings, twistd_options())
        self.assertIsInstance(root, logs.LogObserverRoot)
        return root.observer

    def test_twistd_root_sets_the_application_observer(self):
        uac = service.MultiService()
        root = logs.with_configured_logs(uac, LogSettings(format="json"), twistd_options())
        self.assertIsInstance(root, logs.LogObserverRoot)
        self.assertIs(uac.parent, root)
        application = service.Application("uac")
        root.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), root.observer)
        self.assertEqual(list(service.IServiceCollection(application)), [root])

    def test_twistd_format_and_level(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)  # where twistd -n writes
        for settings in (LogSettings(), LogSettings(level="debug"), LogSettings(level="error"),
                         LogSettings(format="json"), LogSettings(format="json", level="debug")):
            out.seek(0)
            out.truncate()
            log = Logger(namespace="tests.admin", observer=self.observer_for(settings))
            log.debug("routine")
            log.info("change")
            log.error("trouble")
            lines = out.getvalue().splitlines()
            if settings.format == "json":
                lines = [json.loads(line)["text"] for line in lines]
            written = [text for text in ("routine", "change", "trouble") if any(line.endswith(text) for line in lines)]
            expected = {"debug": ["routine", "change", "trouble"], "info": ["change", "trouble"],
                        "error": ["trouble"]}[settings.level]
            self.assertEqual(written, expected, settings)

    def test_an_application_observer_already_set_stays(self):
        application = service.Application("uac")
        mine = textFileLogObserver(io.StringIO())
        application.setComponent(ILogObserver, mine)
        logs.LogObserverRoot(service.Service(), logs.json_observer(io.StringIO())).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), mine)

    def test_twistd_keeps_logger_and_syslog(self):
        uac = service.MultiService()
        for options in (twistd_options(logger=lambda: None), twistd_options(nodaemon=False, syslog=True),
                        twistd_options(nodaemon=False, logfile="-")):
            for settings in (LogSettings(), LogSettings(format="json", level="debug")):
                self.assertIs(logs.with_configured_logs(uac, settings, options), uac)

    def test_twistd_log_file(self):
        path = os.path.abspath(self.mktemp())
        self.patch(signal, "signal", lambda *args: None)  # no SIGUSR1 handler left behind
        out = logs.twistd_log_file(twistd_options(logfile=path, nodaemon=False))
        self.addCleanup(out.close)
        self.assertEqual(out.path, path)

    def twist_options(self, settings: LogSettings, *argv: str) -> dict:
        """twist's options (as twist leaves them before makeService) once configured for ``settings``."""
        self.patch(sys, "argv", ["twist", *argv, "uac", "--config", "uac.toml"])
        options = {"fileLogObserverFactory": textFileLogObserver, "logFormat": "text", "logLevel": LogLevel.info}
        uac = service.MultiService()
        self.assertIs(logs.with_configured_logs(uac, settings, options), uac)
        return options

    def test_twist(self):
        options = self.twist_options(LogSettings(format="json"))
        self.assertEqual(options, {"fileLogObserverFactory": logs.json_file_observer, "logFormat": "json",
                                   "logLevel": LogLevel.info})
        options = self.twist_options(LogSettings(level="debug"))
        self.assertEqual(options, {"fileLogObserverFactory": textFileLogObserver, "logFormat": "text",
                                   "logLevel": LogLevel.debug})
        options = self.twist_options(LogSettings(format="json", level="warn"))
        self.assertIs(options["logLevel"], LogLevel.warn)

    def test_twist_command_line_level_wins(self):
        for argv in (["--log-level=info"], ["--log-level", "info"], ["--log-l=info"], ["--reactor=poll", "--log-le", "info"]):
            options = self.twist_options(LogSettings(level="debug"), *argv)
            self.assertIs(options["logLevel"], LogLevel.info, argv)  # as twist parsed it
        for argv in (["--log-format=text"], ["--log-file=-"], ["--log=x"]):
            options = self.twist_options(LogSettings(level="debug"), *argv)
            self.assertIs(options["logLevel"], LogLevel.debug, argv)

    def test_embedded(self):
        uac = service.MultiService()
        self.assertIs(logs.with_configured_logs(uac, LogSettings(format="json"), None), uac)


ROUTINE = re.compile(r"registration silent: \w+ -> registering \(")  # at debug level
FAILED = "1 account(s) failed at 127.0.0.1:"  # the registrar's summary of the round, at info level
FAILED_TIMEOUT = START_TIMEOUT + 10  # the summary closes 1 s after the round's first failure


class LogProcessTests(ProcessMixin, SynchronousTestCase):
    """``[log]`` in a real twistd or twist run: an account whose proxy never answers goes
    to registering then failed (debug events), and its registrar's round is summarised
    (info). In JSON every line the command writes is a JSON object, and each is an event
    with its fields."""

    def account_config(self, log_section: str) -> str:
        """A configuration with one account nobody answers, rpc off, and ``log_section`` as [log]."""
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
            "failure_summary_interval = 1\n"  # the round's summary 1 s after its first failure
            f"{log_section}"
        )

    def json_config(self, level: str = "info") -> str:
        return self.account_config(f'format = "json"\nlevel = "{level}"\n')

    def run_until_failed(self, argv: list[str], log_path: str | None = None) -> str:
        """Run until the account's failure is logged, stop; the log's text."""
        process = self.start(argv)

        def log() -> str:
            if log_path is None:
                return process.output()
            try:
                with open(log_path) as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        if not wait_for(lambda: FAILED in log() or not process.running(), FAILED_TIMEOUT):
            self.fail(f"no {FAILED!r} within {FAILED_TIMEOUT} s:\n{process.output()}\n{log()}")
        os.kill(process.pid, signal.SIGTERM)
        process.wait(STOP_TIMEOUT)
        self.assertClean(process.output())
        if log_path is not None:
            self.assertEqual(process.output(), "")  # everything went to the log file
        text = log()
        self.assertClean(text)
        self.assertNotIn(SECRET, text)
        self.assertIn(FAILED, text)
        return text

    def json_lines(self, text: str) -> list[dict]:
        lines = []
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                self.fail(f"not a JSON line: {line!r}\n{text}")
        return lines

    def assertEvents(self, lines: list[dict], debug: bool = False) -> None:
        for line in lines:
            self.assertIsInstance(line, dict)
            self.assertTrue({"time", "level", "namespace", "text"} <= set(line), line)
        texts = [line["text"] for line in lines]
        self.assertIn(f"txuac {__version__} started", texts)
        summaries = [line for line in lines if line["namespace"] == "txuac.registrant.failures"]
        self.assertEqual([(line["level"], line["count"], line["reasons"]) for line in summaries],
                         [("info", 1, "no answer (timeout) (1)")], texts)
        events = [line for line in lines if line.get("l_uuid") == "silent" and line.get("state") == "failed"]
        self.assertEqual([(e["namespace"], e["level"], e["previous"], e["reason"], e["status"]) for e in events],
                         [("txuac.registrant.service", "debug", "registering", "no answer (timeout)", None)]
                         if debug else [], texts)
        self.assertIn("txuac stopped", texts)
        routine = [line for line in lines if line.get("l_uuid") == "silent" and line.get("state") == "registering"]
        self.assertEqual([line["level"] for line in routine], ["debug"] if debug else [], texts)
        self.assertEqual(any(line["level"] == "debug" for line in lines), debug, texts)

    def assertText(self, text: str, debug: bool = False) -> None:
        self.assertIn(f"txuac {__version__} started", text)
        self.assertRegex(text, r"\[txuac\.registrant\.failures#info\] 1 account\(s\) failed at 127\.0\.0\.1:\d+: "
                               r"no answer \(timeout\) \(1\)")
        self.assertEqual(bool(ROUTINE.search(text)), debug, text)
        self.assertEqual("#debug]" in text, debug, text)
        self.assertIn("txuac stopped", text)

    def test_twistd(self):
        config = self.json_config()
        self.assertEvents(self.json_lines(self.run_until_failed(twistd_argv("-n", "--pidfile=", "uac", "--config", config))))

    def test_twistd_debug(self):
        config = self.json_config("debug")
        text = self.run_until_failed(twistd_argv("-n", "--pidfile=", "uac", "--config", config))
        self.assertEvents(self.json_lines(text), debug=True)

    def test_twistd_logfile(self):
        config = self.json_config()
        logfile = os.path.join(self.workdir, "txuac.log")
        self.assertEvents(self.json_lines(self.run_until_failed(
            twistd_argv("-n", "--pidfile=", f"--logfile={logfile}", "uac", "--config", config), logfile)))

    def test_twist(self):
        config = self.json_config()
        self.assertEvents(self.json_lines(self.run_until_failed(twist_argv("--log-format=text", "uac", "--config", config))))

    def test_twistd_text(self):
        """No [log] section: text at info, as shipped."""
        config = self.account_config("")
        self.assertText(self.run_until_failed(twistd_argv("-n", "--pidfile=", "uac", "--config", config)))

    def test_twistd_text_debug(self):
        config = self.account_config('level = "debug"\n')
        self.assertText(self.run_until_failed(twistd_argv("-n", "--pidfile=", "uac", "--config", config)), debug=True)

    def test_twistd_text_logfile(self):
        config = self.account_config('format = "text"\n')
        logfile = os.path.join(self.workdir, "txuac.log")
        self.assertText(self.run_until_failed(
            twistd_argv("-n", "--pidfile=", f"--logfile={logfile}", "uac", "--config", config), logfile))

    def test_twist_text(self):
        # In text mode twist keeps its own format (JSON when stdout is not a terminal).
        config = self.account_config('level = "debug"\n')
        self.assertText(self.run_until_failed(twist_argv("--log-format=text", "uac", "--config", config)), debug=True)

    def test_twist_command_line_level_wins(self):
        config = self.account_config('level = "debug"\n')
        self.assertText(self.run_until_failed(twist_argv("--log-format=text", "--log-level=info", "uac",
                                                         "--config", config)))
