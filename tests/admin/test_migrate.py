"""txuac-ctl migrate: a Kamailio cfg's uac parameters and listen= lines as txuac's TOML,
through #!define, #!substdef, #!ifdef and comments; what cannot be carried over listed
with its reason; the tests' own cfgs and Debian's sample kamailio.cfg."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import tomllib

from twisted.trial.unittest import SynchronousTestCase

from txuac.admin import ctl
from txuac.admin.migrate import migrate, render
from txuac.config import settings_from_dict

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
SAMPLE = "/etc/kamailio/kamailio.cfg"

CFG = r'''#!KAMAILIO
#!define DBURL "sqlite:////var/lib/kamailio/uac.sqlite"
#!substdef "!MY_IP!192.0.2.10!g"
#!trydef TIMER 60
#!trydef TIMER 90
#!ifdef WITH_TCP
listen=tcp:MY_IP:5060
#!else
listen=udp:127.0.0.1:5070
#!endif
listen=MY_IP:5080 advertise 203.0.113.1:5080
listen=udp:eth0:5060
# listen=udp:10.0.0.1:5060
loadmodule "uac.so"
modparam("uac", "reg_db_url", DBURL)   // the accounts
modparam("uac", "reg_contact_addr", "MY_IP:5060")
modparam("uac", "reg_timer_interval", TIMER)
/* modparam("uac", "reg_retry_interval", 5) */
# modparam("uac", "reg_random_delay", 7)
modparam("uac", "credential", "alice:example.com:pw1")
modparam("uac", "credential", "bob:example.com:pw2")
modparam("uac", "restore_dlg", 1)
modparam("uac", "restore_from_avp", "$avp(original_from)")
modparam("uac", "auth_username_avp", "$avp(auser)")
modparam("uac", "no_such_param", 1)
modparam("uac", "reg_active", UNDEFINED_NAME)
modparam("tm", "fr_timer", 5000)
modparam('uac', 'restore_mode', 'manual')
'''


class MigrateTests(SynchronousTestCase):

    def settings(self, text: str):
        document = tomllib.loads(text)
        return settings_from_dict(document)

    def test_settings_carried_over(self):
        migration = migrate(CFG, {"WITH_TCP": ""})
        uac = migration.settings["uac"]
        self.assertEqual(uac["reg_db_url"], "sqlite:////var/lib/kamailio/uac.sqlite")
        self.assertEqual(uac["reg_contact_addr"], "192.0.2.10:5060")  # #!substdef applies inside strings
        self.assertEqual(uac["reg_timer_interval"], 60)  # the first #!trydef wins
        self.assertEqual(uac["credential"], ["alice:example.com:pw1", "bob:example.com:pw2"])
        self.assertNotIn("reg_retry_interval", uac)  # commented out
        self.assertNotIn("reg_random_delay", uac)
        routing = migration.settings["routing"]
        self.assertEqual(routing, {"restore_dlg": True, "restore_from_avp": "$avp(original_from)",
                                   "restore_mode": "manual"})
        self.assertEqual(migration.settings["core"]["listen"],
                         ["tcp:192.0.2.10:5060", "udp:192.0.2.10:5080", "tcp:192.0.2.10:5080"])

    def test_ifdef_without_the_define(self):
        migration = migrate(CFG)
        self.assertEqual(migration.settings["core"]["listen"][0], "udp:127.0.0.1:5070")

    def test_what_is_not_carried_over_says_why(self):
        skipped = "\n".join(migrate(CFG).skipped)
        self.assertIn('line 11: listen=MY_IP:5080 advertise 203.0.113.1:5080', skipped.replace("192.0.2.10", "MY_IP"))
        self.assertIn("advertise", skipped)
        self.assertIn("listen=udp:eth0:5060: ", skipped)
        self.assertIn("not interface or host names", skipped)
        self.assertIn('modparam("uac", "auth_username_avp", "$avp(auser)"): a routing script sets', skipped)
        self.assertIn('modparam("uac", "no_such_param", 1): txuac has no such parameter', skipped)
        self.assertIn("UNDEFINED_NAME is not #!define'd (give it with -A UNDEFINED_NAME=value", skipped)
        self.assertNotIn("fr_timer", skipped)

    def test_output_is_txuac_configuration(self):
        text = render(migrate(CFG, {"WITH_TCP": ""}), "kamailio.cfg")
        settings = self.settings(text)
        self.assertEqual(settings.uac.reg_timer_interval, 60)
        self.assertEqual(settings.uac.credential, ("alice:example.com:pw1", "bob:example.com:pw2"))
        self.assertTrue(settings.routing.restore_dlg)
        self.assertEqual(settings.routing.restore_mode, "manual")
        self.assertIn('# line 15: modparam("uac", "reg_db_url", DBURL)\nreg_db_url = ', text)
        self.assertIn("# Not carried over:\n#   line 24: ", text)
        self.assertIn("# line 11: listen=192.0.2.10:5080 advertise 203.0.113.1:5080 (no protocol: tcp)\n", text)

    def test_support_configs(self):
        defines = {"CTL_SOCKET": '"unix:/tmp/ctl"', "RESTORE_PASSWD": '"secret"', "DB_URL": '"sqlite:////tmp/u.db"',
                   "CONTACT_ADDR": '"127.0.0.1:5060"', "RPC_FIFO": '"/tmp/f"'}
        paths = sorted(glob.glob(os.path.join(SUPPORT, "*.cfg")))
        self.assertGreaterEqual(len(paths), 4)
        for path in paths:
            with open(path) as f:
                migration = migrate(f.read(), defines)
            settings = self.settings(render(migration, path))
            self.assertEqual(migration.skipped, [], path)
            if path.endswith("kamailio-uac.cfg"):
                self.assertEqual((settings.uac.reg_db_url, settings.uac.reg_contact_addr,
                                  settings.uac.reg_timer_interval), ("sqlite:////tmp/u.db", "127.0.0.1:5060", 10))
            if path.endswith("kamailio-proxy.cfg"):
                self.assertEqual((settings.routing.restore_mode, settings.routing.restore_passwd), ("auto", "secret"))

    def test_debian_sample(self):
        if not os.path.exists(SAMPLE):
            self.skipTest(f"{SAMPLE} is not installed")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = ctl.main(["migrate", SAMPLE, "-A", "WITH_MYSQL", "-A", "WITH_AUTH"])
        self.assertEqual(status, 0)
        text = out.getvalue()
        self.settings(text)  # loads as txuac's configuration
        self.assertIn('# No modparam("uac", ...) found.', text)  # the sample does not load uac
        self.assertIn("# No listen= line", text)  # its listen= lines are comments

    def test_unreadable_file(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(ctl.main(["migrate", "/no/such/kamailio.cfg"]), 2)
        self.assertIn("cannot read /no/such/kamailio.cfg", err.getvalue())
