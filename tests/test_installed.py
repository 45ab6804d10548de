"""What an installed copy ships (``pip install txuac`` builds a wheel): the sample
configuration under ``<prefix>/share/txuac``, the schemas inside the package, and the
commands that point at them. The compiled pass of ``./dev test`` runs these against its
wheel-installed venv; in an editable checkout they are skipped."""

from __future__ import annotations

import importlib
import importlib.resources
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.services import load_printed_config
import txuac
import txuac.sip
from txuac.admin import ctl

SCHEMAS = ("sqlite.sql", "postgres.sql", "mysql.sql", "sqlite-txuac.sql", "postgres-txuac.sql", "mysql-txuac.sql")


def _from_checkout() -> bool:
    return os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(txuac.__file__))),
                                       "setup.cfg"))


class InstalledCopyTests(TestCase):
    def setUp(self):
        if _from_checkout():
            raise SkipTest("txuac runs from its checkout (editable install): the compiled pass of ./dev test "
                           "checks the wheel-installed copy")
        self.bin = os.path.dirname(sys.executable)

    def test_sample_config_is_installed_and_printed(self):
        path = os.path.join(sys.prefix, "share", "txuac", "uac.toml")
        self.assertEqual(ctl.sample_config_path(), path)
        out = subprocess.run([os.path.join(self.bin, "txuac-ctl"), "sample-config"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        with open(path, encoding="utf-8") as f:
            self.assertEqual(out, f.read())
        self.assertEqual(load_printed_config(self, out).rpc.listen, "tcp:5064:interface=127.0.0.1")

    def test_the_sans_io_modules_are_compiled(self):
        if not txuac.sip.COMPILED:
            raise SkipTest("a pure-Python install (TXUAC_COMPILE=0)")
        for name in ("txuac.sip.parser", "txuac.routing.proxy_rules", "txuac.routing.response_context",
                     "txuac.routing.replace", "txuac.routing.restore", "txuac.routing.restore_codec",
                     "txuac.sip.affinity", "txuac.registrant.protocol", "txuac.registrant.row_rules",
                     "txuac.registrant.record", "txuac.registrant.account", "txuac.registrant.retry",
                     "txuac.registrant.budget", "txuac.net.stack", "txuac.net.timers", "txuac.auth",
                     "txuac.registrant.service"):
            self.assertFalse(importlib.import_module(name).__file__.endswith(".py"), name)

    def test_schemas_are_in_the_package(self):
        schema = importlib.resources.files("txuac.registrant.store").joinpath("schema")
        for name in SCHEMAS:
            self.assertIn("CREATE TABLE", schema.joinpath(name).read_text("utf-8"), name)

    def test_status_page_assets_are_in_the_package(self):
        static = importlib.resources.files("txuac.admin").joinpath("static")
        for name in ("status.js", "status.css"):
            self.assertTrue(static.joinpath(name).read_text("utf-8"), name)

    def test_twistd_help_says_where_to_start(self):
        out = subprocess.run([os.path.join(self.bin, "twistd"), "uac", "--help"], capture_output=True, text=True,
                             timeout=60).stdout
        self.assertIn("txuac-ctlsample-config>uac.toml", "".join(out.split()))  # as wrapped by usage.Options
