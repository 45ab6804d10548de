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


def _core_libraries() -> list[str]:
    """The shared objects of the compiled core loaded (each compiled module's own extension
    only points into one): the ``*__mypyc`` modules. setup.py builds one."""
    importlib.import_module("txuac.sip.parser")
    return [module.__file__ for name, module in sys.modules.items()
            if name.endswith("__mypyc") and getattr(module, "__file__", None)]


def _tool_output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    except FileNotFoundError:
        raise SkipTest(f"{command[0]} (binutils) is not installed")


def _built_by_gcc(library: str) -> bool:
    comment = _tool_output(["readelf", "-p", ".comment", library])
    return "GCC:" in comment and "clang" not in comment


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

    def test_the_compiled_core_is_built_for_speed_and_not_left_instrumented(self):
        """setup.py's GCC build: the core's own calls bound within it (no PLT call from one
        of its functions to another), and the profile-guided build's final pass installed,
        not its instrumented one (which would write .gcda files at every exit: it holds
        their names, stripped or not)."""
        if not txuac.sip.COMPILED:
            raise SkipTest("a pure-Python install (TXUAC_COMPILE=0)")
        libraries = _core_libraries()
        self.assertEqual(len(libraries), 1, f"expected the one compiled core library loaded, found {libraries}")
        library = libraries[0]
        with open(library, "rb") as f:
            self.assertNotIn(b".gcda", f.read())
        if not _built_by_gcc(library):
            raise SkipTest("not built by GCC: built without its flags")
        calls = [line for line in _tool_output(["objdump", "-d", "--no-show-raw-insn", library]).splitlines()
                 if "call" in line and "<CPyDef_" in line]
        self.assertTrue(calls, "no call between the core's functions found to check")
        self.assertEqual([line for line in calls if "@plt>" in line][:3], [])

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
