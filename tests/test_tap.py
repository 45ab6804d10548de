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
import sqlite3
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.support.peers import free_port, wait_for
from tests.support.postgres import PostgresCluster
from tests.support.twistd import (
    ROOT,
    SHIPPED,
    STOP_TIMEOUT,
    START_TIMEOUT,
    ProcessMixin,
    bindable,
    twist_argv,
    twistd_argv,
)
from txuac import __version__, tap
from txuac.registrant.store import sqlite as sqlite_store
from txuac.registrant.store.url import mask_url
from txuac.service import UACService

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
        self.assertIn("Where to start: write the commented sample configuration with txuac-ctl sample-config > uac.toml "
                      "(conf/uac.toml", " ".join(output.replace("sample-\n", "sample-").split()))
        self.assertIn("http://127.0.0.1:5064/status", output)

    def test_plugin_listed(self):
        status, output = self.run_to_end(twistd_argv("--help"))
        self.assertEqual(status, 0, output)
        self.assertTrue(re.search(r"^\s+uac\s+Kamailio uac module", output, re.M), output)

    def test_version(self):
        status, output = self.run_to_end(twistd_argv("uac", "--version"))
        self.assertEqual((status, output.strip()), (0, f"txuac {__version__}"))

    def test_shipped_config(self):
        """conf/uac.toml as shipped, only its ports moved off 5060 so that tests may run anywhere:
        it keeps its accounts in ../var/uacreg.sqlite, created with its tables on first start."""
        port = free_port()
        config = self.shipped_config(port)
        self.run_and_signal(self.twistd(config), port, signal.SIGTERM)
        self.assertTrue(os.path.isfile(os.path.join(self.workdir, "var", "uacreg.sqlite")))


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


class StoreAtStartTests(ProcessMixin, SynchronousTestCase):
    """A store that cannot be used ends twistd/twist uac as a config error does: exit status 1
    and one line naming the file, the key, the URL (password masked) and the reason. A
    PostgreSQL server that is not up yet is waited for."""

    def store_config(self, url: str, extra: str = "") -> str:
        port = free_port()
        return self.config(
            f'[core]\nlisten = ["udp:127.0.0.1:{port}"]\n'
            f'[uac]\nreg_db_url = "{url}"\nreg_contact_addr = "127.0.0.1:{port}"\n{extra}'
            "[rpc]\nenabled = false\n")

    def assertStops(self, url: str, reason: str, argv=None) -> str:
        config = self.store_config(url)
        status, output = self.run_to_end((argv or self.twistd)(config))
        self.assertEqual(status, 1, output)
        lines = [line for line in output.splitlines() if "txuac: " in line]
        self.assertEqual(len(lines), 1, output)
        self.assertTrue(lines[0].endswith(f"txuac: {config}: [uac] reg_db_url: {reason}"), output)
        self.assertClean(output)
        return output

    def twistd(self, config: str) -> list[str]:
        return twistd_argv("-n", "--pidfile=", "uac", "--config", config)

    def twist(self, config: str) -> list[str]:
        return twist_argv("--log-format=text", "uac", "--config", config)

    def sqlite_file(self, content: bytes = b"") -> str:
        path = os.path.join(self.workdir, "uacreg.sqlite")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_not_a_database(self):
        path = self.sqlite_file(b"root:x:0:0:root:/root:/bin/bash\n" * 50)
        self.assertStops(f"sqlite:///{path}", f"cannot open sqlite:///{path}: file is not a database")
        self.assertStops(f"sqlite:///{path}", f"cannot open sqlite:///{path}: file is not a database", self.twist)

    def test_a_directory(self):
        self.assertStops(f"sqlite:///{self.workdir}", f"cannot open sqlite:///{self.workdir}: it is a directory")

    def test_missing_directory_is_not_made(self):
        path = os.path.join(self.workdir, "nonexistent", "dir", "x.sqlite")
        self.assertStops(f"sqlite:///{path}", f"cannot open sqlite:///{path}: the directory {os.path.dirname(path)} "
                                             "does not exist (txuac creates the file, not its directory)")
        self.assertFalse(os.path.exists(os.path.join(self.workdir, "nonexistent")))

    def test_sqlite_database_without_uacreg(self):
        path = self.sqlite_file()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE other (x INTEGER)")
        db.commit()
        db.close()
        self.assertStops(f"sqlite:///{path}", f"sqlite:///{path} has no version table (create it with "
                                             "conf/schema/sqlite.sql, or remove the file to let txuac create it)")

    def test_unknown_table_version(self):
        path = os.path.join(self.workdir, "uacreg.sqlite")
        db = sqlite3.connect(path)
        db.executescript(sqlite_store.SCHEMA)
        db.execute("UPDATE version SET table_version = 7 WHERE table_name = 'uacreg'")
        db.commit()
        db.close()
        self.assertStops(f"sqlite:///{path}", f"uacreg table version 7 is not supported (5 or 6) in sqlite:///{path}")

    def test_empty_file_gets_the_tables(self):
        path = self.sqlite_file()
        process = self.start(self.twistd(self.store_config(f"sqlite:///{path}")))
        if not wait_for(lambda: "loaded 0 registration accounts" in process.output() or not process.running(),
                        START_TIMEOUT):
            self.fail(process.output())
        self.assertIn(f"Created {path} with an empty uacreg table (version 6)", process.output())
        os.kill(process.pid, signal.SIGTERM)
        self.assertEqual(process.wait(STOP_TIMEOUT), -signal.SIGTERM, process.output())

    def test_postgres_wrong_password(self):
        pg = PostgresCluster(self)
        url = pg.url.replace(pg.password, "not-the-password")
        output = self.assertStops(url, f"cannot open {mask_url(url)}: FATAL: password authentication failed for "
                                       f"user \"{pg.user}\"")
        self.assertNotIn("not-the-password", output)

    def test_postgres_unknown_database(self):
        pg = PostgresCluster(self)
        url = pg.url.rsplit("/", 1)[0] + "/nosuchdb"
        output = self.assertStops(url, f"cannot open {mask_url(url)}: FATAL: database \"nosuchdb\" does not exist")
        self.assertNotIn(pg.password, output)

    def test_postgres_not_up_yet_is_waited_for(self):
        """txuac first, then the server: one warning per attempt, then the accounts load."""
        pg = PostgresCluster(self)
        pg.psql(file=os.path.join(ROOT, "conf", "schema", "postgres.sql"))
        pg.psql("INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username, "
                "auth_password, auth_proxy, expires, flags) VALUES ('acc1', 'l', 'pbx.example.com', 'r', "
                "'sip.example.com', 'a', 'pw', 'sip:127.0.0.1:9', 600, 1)")
        pg.stop()
        process = self.start(self.twistd(self.store_config(pg.url, "reg_db_connect_retry = 1\n")))
        if not wait_for(lambda: process.output().count("trying again in 1 s") >= 2 or not process.running(),
                        START_TIMEOUT):
            self.fail(process.output())
        self.assertTrue(process.running(), process.output())
        pg.start()
        loaded = f"loaded 1 registration accounts from {mask_url(pg.url)}"
        if not wait_for(lambda: loaded in process.output() or not process.running(), START_TIMEOUT):
            self.fail(process.output())
        output = process.output()
        attempts = [line for line in output.splitlines() if f"cannot open {mask_url(pg.url)}" in line]
        self.assertGreaterEqual(len(attempts), 2, output)
        self.assertTrue(all("Connection refused" in line and line.endswith("; trying again in 1 s")
                            for line in attempts), output)
        warnings = [line for line in output.splitlines() if "#warn]" in line]
        self.assertEqual(warnings, attempts)  # one line per attempt, nothing else
        self.assertNotIn(pg.password, output)
        os.kill(process.pid, signal.SIGTERM)
        self.assertEqual(process.wait(STOP_TIMEOUT), -signal.SIGTERM, process.output())
        self.assertClean(process.output())


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


class RunAsTests(SynchronousTestCase):
    """tap.run_as: the user twistd switches to, for the workers' directory."""

    def test_twistd_uid_and_gid(self):
        from twisted.scripts._twistd_unix import ServerOptions
        options = ServerOptions()
        options.parseOptions(["--uid", "65534", "--gid", "65533", "uac", "--config", SHIPPED])
        self.assertEqual(tap.run_as(options.subOptions.parent), (65534, 65533))

    def test_none_without_uid_or_under_twist(self):
        from twisted.scripts._twistd_unix import ServerOptions
        options = ServerOptions()
        options.parseOptions(["uac", "--config", SHIPPED])
        self.assertIsNone(tap.run_as(options))
        self.assertIsNone(tap.run_as(None))
