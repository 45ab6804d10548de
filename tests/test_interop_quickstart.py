"""README's quick start against a real Kamailio registrar: ``./dev run`` on the shipped
configuration, then the README's two txuac-ctl commands, the first adding an account and
the second showing it online."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port, wait_for
from tests.support.twistd import ROOT, START_TIMEOUT, STOP_TIMEOUT, ProcessMixin, twistd_argv

README = os.path.join(ROOT, "README.rst")
CTL = ".venv/bin/txuac-ctl -c conf/uac.toml "
# What the README's commands name and a test registrar replaces.
PLACEHOLDER_HOST = "sip.example.com"
PLACEHOLDER_PASSWORD = "secret"


def readme_ctl_command(method: str) -> list[str]:
    """The arguments of the README's ``txuac-ctl -c conf/uac.toml METHOD ...`` line."""
    with open(README) as f:
        for line in f:
            line = line.strip()
            if line.startswith(CTL + method + " "):
                return shlex.split(line)[1:]
    raise AssertionError(f"README.rst has no {CTL + method!r} line")


class QuickStartTests(ProcessMixin, SynchronousTestCase):
    def ctl(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "txuac.admin.ctl", *args], cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, timeout=START_TIMEOUT)

    def test_readme_account_goes_online(self):
        registrar = KamailioRegistrar(self)
        port = free_port()
        config = self.shipped_config(port)
        process = self.start(twistd_argv("-n", "--pidfile=", "uac", "--config", config))
        self.wait_started(process)
        add = readme_ctl_command("uac.reg_add")
        l_uuid, r_username, auth_username = add[3], add[6], add[9]
        self.assertEqual(add[10], PLACEHOLDER_PASSWORD)
        add[10] = registrar.password_for(auth_username)
        add = [arg.replace(PLACEHOLDER_HOST, f"127.0.0.1:{registrar.port}") for arg in add]
        added = self.ctl(add)
        self.assertEqual((added.returncode, added.stderr), (0, ""), process.output())
        info = readme_ctl_command("uac.reg_info")
        self.assertEqual(info[-1], l_uuid)
        shown: list[str] = []

        def online() -> bool:
            shown[:] = [self.ctl(info).stdout]
            return re.search(r"^state\s+online$", shown[0], re.M) is not None

        self.assertTrue(wait_for(online, 15, interval=0.25),
                        registrar.explain(f"not online:\n{shown[0]}\n{process.output()}"))
        contacts = registrar.contacts(r_username)
        self.assertEqual(len(contacts), 1, registrar.explain("bindings"))
        self.assertIn(f"@127.0.0.1:{port}", contacts[0])
        os.kill(process.pid, signal.SIGTERM)
        self.assertEqual(process.wait(STOP_TIMEOUT), -signal.SIGTERM, process.output())
        self.assertTrue(os.path.isfile(os.path.join(self.workdir, "var", "uacreg.sqlite")))
