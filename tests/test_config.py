"""txuac.config: every key's type, socket specs, cross-key rules and file errors.

Each error must be a ConfigError whose message names the file and the key, so each
test writes its TOML to a real file and loads it with load_settings.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from twisted.trial.unittest import SynchronousTestCase

from txuac.config import (
    CoreSettings,
    ListenSpec,
    LogSettings,
    RoutingSettings,
    Settings,
    TLSSettings,
    load_settings,
    parse_listen,
    settings_from_dict,
)
from tests.support.listen_specs import BAD_SOCKETS, GOOD_SOCKETS
from txuac.errors import ConfigError, TxuacError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "conf", "uac.toml")

# (section, key, TOML value of the wrong type, the type the message names)
WRONG_TYPES = [
    ("core", "listen", '"udp:127.0.0.1:5060"', "a list"),
    ("core", "listen", "5060", "a list"),
    ("core", "user_agent", "1", "a string"),
    ("core", "user_agent", '["txuac"]', "a string"),
    ("core", "dns_servers", '"127.0.0.1"', "a list"),
    ("core", "max_message_size", '"65535"', "an integer"),
    ("core", "max_message_size", "65535.0", "an integer"),
    ("core", "max_message_size", "true", "an integer"),
    ("core", "timer_t1", '"500"', "an integer"),
    ("core", "timer_t1", "0.5", "an integer"),
    ("core", "timer_t1", "true", "an integer"),
    ("core", "timer_t2", '"4000"', "an integer"),
    ("core", "timer_t2", "false", "an integer"),
    ("core", "timer_t4", "5000.0", "an integer"),
    ("core", "timer_t4", "[5000]", "an integer"),
    ("core", "tcp_idle_timeout", '"600"', "an integer"),
    ("core", "workers", "[2]", "an integer or a string"),
    ("core", "workers", "2.0", "an integer or a string"),
    ("core", "tcp_idle_timeout", "{ seconds = 600 }", "an integer"),
    ("tls", "certificate", "1", "a string"),
    ("tls", "private_key", "true", "a string"),
    ("tls", "ca_file", '["ca.pem"]', "a string"),
    ("tls", "verify_server", '"yes"', "a boolean"),
    ("tls", "verify_server", "1", "a boolean"),
    ("tls", "server_names", '"sip.example.com"', "a table"),
]

POSITIVE_INTS = ["max_message_size", "timer_t1", "timer_t2", "timer_t4", "tcp_idle_timeout"]

@contextmanager
def case(test, **context):
    """Name the row of a table test in its failure (trial runs no unittest subTest)."""
    try:
        yield
    except test.failureException as e:
        raise test.failureException(f"{context}: {e}") from None


class ConfigFileMixin:
    def write(self, text: str, name: str = "uac.toml") -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertConfigError(self, text: str, *words: str) -> str:
        """Load ``text`` as a file; it must fail naming the file and every one of ``words``."""
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        message = str(caught.exception)
        self.assertTrue(message.startswith(path + ": "), message)
        for word in words:
            self.assertIn(word, message)
        return message


class ShippedConfigTests(SynchronousTestCase):
    def test_shipped_config_loads(self):
        settings = load_settings(SHIPPED)
        self.assertEqual(settings.path, SHIPPED)
        self.assertEqual(settings.core.listen, (ListenSpec("udp", "127.0.0.1", 5060), ListenSpec("tcp", "127.0.0.1", 5060)))
        self.assertEqual(settings.core, CoreSettings(listen=settings.core.listen))  # the sample shows the defaults
        self.assertEqual(settings.tls, TLSSettings())

    def test_shipped_config_is_loopback_only(self):
        for spec in load_settings(SHIPPED).core.listen:
            self.assertTrue(spec.host in ("127.0.0.1", "::1"), spec)


class ValidConfigTests(ConfigFileMixin, SynchronousTestCase):
    def test_empty_file_gives_defaults(self):
        path = self.write("")
        self.assertEqual(load_settings(path), Settings(path=path, base_dir=os.path.dirname(os.path.abspath(path))))

    def test_every_key(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in ("cert.pem", "key.pem", "ca.pem"):
            with open(os.path.join(directory, name), "w") as f:
                f.write("placeholder: only readability is checked at load time\n")
        path = os.path.join(directory, "uac.toml")
        with open(path, "w") as f:
            f.write(
                "[core]\n"
                'listen = ["udp:127.0.0.1:5070", "tcp:[::1]:5070", "tls:127.0.0.1:5071"]\n'
                'user_agent = "txuac test\tagent"\n'
                'dns_servers = ["127.0.0.53", "127.0.0.1:5353", "[::1]:53", "::1"]\n'
                "max_message_size = 4096\n"
                "timer_t1 = 50\n"
                "timer_t2 = 400\n"
                "timer_t4 = 500\n"
                "tcp_idle_timeout = 30\n"
                "[tls]\n"
                'certificate = "cert.pem"\n'
                f'private_key = "{os.path.join(directory, "key.pem")}"\n'
                'ca_file = "ca.pem"\n'
                "verify_server = false\n"
            )
        settings = load_settings(path)
        self.assertEqual(settings.core, CoreSettings(
            listen=(ListenSpec("udp", "127.0.0.1", 5070), ListenSpec("tcp", "::1", 5070),
                    ListenSpec("tls", "127.0.0.1", 5071)),
            user_agent="txuac test\tagent",
            dns_servers=(("127.0.0.53", 53), ("127.0.0.1", 5353), ("::1", 53), ("::1", 53)),
            max_message_size=4096, timer_t1=50, timer_t2=400, timer_t4=500, tcp_idle_timeout=30,
        ))
        # Relative file names are relative to the config file, as in Kamailio.
        self.assertEqual(settings.tls, TLSSettings(
            certificate=os.path.join(directory, "cert.pem"), private_key=os.path.join(directory, "key.pem"),
            ca_file=os.path.join(directory, "ca.pem"), verify_server=False))

    def test_settings_from_dict(self):
        settings = settings_from_dict({"core": {"listen": ["tcp:[::1]:5062"], "timer_t1": 50}}, "embedded")
        self.assertEqual(settings.path, "embedded")
        self.assertEqual(settings.core.listen, (ListenSpec("tcp", "::1", 5062),))
        self.assertEqual(settings.core.timer_t1, 50)

    def test_settings_from_dict_does_not_change_the_document(self):
        document = {"core": {"timer_t1": 50}, "tls": {"verify_server": False}}
        settings_from_dict(document)
        self.assertEqual(document, {"core": {"timer_t1": 50}, "tls": {"verify_server": False}})

    def test_port_zero_may_repeat(self):
        settings = settings_from_dict({"core": {"listen": ["udp:127.0.0.1:0", "udp:127.0.0.1:0"]}})
        self.assertEqual(len(settings.core.listen), 2)

    def test_udp_and_tcp_share_a_port(self):
        settings = settings_from_dict({"core": {"listen": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]}})
        self.assertEqual(len(settings.core.listen), 2)

    def test_timer_t2_equal_to_t1(self):
        self.assertEqual(settings_from_dict({"core": {"timer_t1": 500, "timer_t2": 500}}).core.timer_t2, 500)


class SocketSpecTests(ConfigFileMixin, SynchronousTestCase):
    def test_good_sockets_from_a_file(self):
        rows = [GOOD_SOCKETS[i] for i in (0, 1, 4, 7)]
        path = self.write("[core]\nlisten = [%s]\n" % ", ".join(f'"{text}"' for text, _ in rows))
        self.assertEqual(load_settings(path).core.listen, tuple(spec for _, spec in rows))

    def test_bad_sockets(self):
        for text in BAD_SOCKETS:
            with case(self, text=text):
                message = self.assertConfigError(f'[core]\nlisten = ["udp:127.0.0.1:5060", "{text}"]\n',
                                                 "[core] listen[1]")
                self.assertIn(repr(text), message)

    def test_parse_listen_names_where(self):
        """The core's InvalidListenSpec becomes a ConfigError naming the file and the key."""
        for text in BAD_SOCKETS:
            with case(self, text=text):
                raised = self.assertRaises(ConfigError, parse_listen, text, "f.toml: [uac] default_socket")
                self.assertTrue(str(raised).startswith("f.toml: [uac] default_socket: "), str(raised))
                self.assertIn(repr(text), str(raised))
        self.assertEqual(parse_listen("udp:127.0.0.1", "here"), GOOD_SOCKETS[3][1])

    def test_bad_socket_messages(self):
        self.assertConfigError('[core]\nlisten = ["sctp:127.0.0.1:5060"]\n', "[core] listen[0]", "udp:, tcp: or tls:")
        self.assertConfigError('[core]\nlisten = ["udp:[1.2.3.4]"]\n', "[core] listen[0]", "brackets are for IPv6")
        self.assertConfigError('[core]\nlisten = ["tcp:::1:5060"]\n', "[core] listen[0]", "in brackets")
        self.assertConfigError('[core]\nlisten = ["udp:127.0.0.1:65536"]\n', "[core] listen[0]", "invalid port '65536'")
        self.assertConfigError('[core]\nlisten = ["udp:example.com:5060"]\n', "[core] listen[0]",
                               "'example.com'", "not an IPv4 or IPv6 address")

    def test_not_a_string(self):
        self.assertConfigError("[core]\nlisten = [5060]\n", "[core] listen[0]", "expected a string")

    def test_empty_list(self):
        self.assertConfigError("[core]\nlisten = []\n", "[core] listen", "at least one socket")

    def test_duplicate_socket(self):
        self.assertConfigError('[core]\nlisten = ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"]\n',
                               "[core] listen", "udp:127.0.0.1:5060 is listed twice")

    def test_duplicate_after_default_port(self):
        self.assertConfigError('[core]\nlisten = ["udp:127.0.0.1", "udp:127.0.0.1:5060"]\n',
                               "[core] listen", "udp:127.0.0.1:5060 is listed twice")

    def test_duplicate_ipv6_spelled_differently(self):
        self.assertConfigError('[core]\nlisten = ["tcp:[::1]:5060", "tcp:[0::1]:5060"]\n',
                               "[core] listen", "tcp:[::1]:5060 is listed twice")

    def test_tcp_and_tls_on_the_same_port(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in ("cert.pem", "key.pem"):
            open(os.path.join(directory, name), "w").close()
        path = os.path.join(directory, "uac.toml")
        with open(path, "w") as f:
            f.write('[core]\nlisten = ["tcp:127.0.0.1:5061", "tls:127.0.0.1:5061"]\n'
                    '[tls]\ncertificate = "cert.pem"\nprivate_key = "key.pem"\n')
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertIn(f"{path}: [core] listen: tls:127.0.0.1:5061 and tcp:127.0.0.1:5061", str(caught.exception))


class TypeTests(ConfigFileMixin, SynchronousTestCase):
    def test_wrong_types(self):
        for section, key, value, expected in WRONG_TYPES:
            with case(self, key=key, value=value):
                self.assertConfigError(f"[{section}]\n{key} = {value}\n", f"[{section}] {key}", f"expected {expected}")

    def test_every_key_is_type_checked(self):
        keys = {(section, key) for section, key, _, _ in WRONG_TYPES}
        expected = {("core", name) for name in CoreSettings.__dataclass_fields__}
        expected |= {("tls", name) for name in TLSSettings.__dataclass_fields__}
        self.assertEqual(keys, expected)

    def test_positive_integers(self):
        for key in POSITIVE_INTS:
            for value in ("0", "-1"):
                with case(self, key=key, value=value):
                    self.assertConfigError(f"[core]\n{key} = {value}\n", f"[core] {key}", "must be positive")

    def test_timer_t2_below_t1(self):
        self.assertConfigError("[core]\ntimer_t1 = 500\ntimer_t2 = 400\n", "[core] timer_t2", "timer_t1")

    def test_user_agent_on_one_line(self):
        self.assertConfigError('[core]\nuser_agent = "a\\r\\nX-Injected: 1"\n', "[core] user_agent", "one line")
        self.assertConfigError('[core]\nuser_agent = "a\\u0000b"\n', "[core] user_agent", "control characters")

    def test_user_agent_not_empty(self):
        self.assertConfigError('[core]\nuser_agent = ""\n', "[core] user_agent", "empty")
        self.assertConfigError('[core]\nuser_agent = "  "\n', "[core] user_agent", "empty")

    def test_dns_servers(self):
        for value in ("1", '"localhost"', '"1.2.3.4:0"', '"1.2.3.4:65536"', '"1.2.3.4:dns"', '"[::1"',
                      '"[::1]x"', '"[1.2.3.4]:53"', '"1.2.3.4:"', '"[::1]:\u00b2"'):
            with case(self, value=value):
                self.assertConfigError(f'[core]\ndns_servers = ["127.0.0.1", {value}]\n', "[core] dns_servers[1]")

    def test_section_not_a_table(self):
        self.assertConfigError("core = 1\n", "[core]", "must be a table")
        self.assertConfigError('tls = "on"\n', "[tls]", "must be a table")

    def test_unknown_section(self):
        self.assertConfigError("[core]\n[registrar]\nx = 1\n", "unknown section", "registrar")

    def test_unknown_key(self):
        self.assertConfigError("[core]\nlisten_on = []\n", "[core]", "unknown key", "listen_on")
        self.assertConfigError("[tls]\nverify = true\n", "[tls]", "unknown key", "verify")

    def test_unknown_subtable(self):
        self.assertConfigError("[core.timers]\nt1 = 500\n", "[core]", "unknown key", "timers")

    def test_unknown_keys_listed_together(self):
        self.assertConfigError("[core]\nb = 1\na = 2\n", "[core] unknown key(s): a, b")


class TLSConfigTests(ConfigFileMixin, SynchronousTestCase):
    def files(self, *names: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in names:
            open(os.path.join(directory, name), "w").close()
        return directory

    def load(self, directory: str, text: str):
        path = os.path.join(directory, "uac.toml")
        with open(path, "w") as f:
            f.write(text)
        return path, load_settings(path)

    def assertLoadFails(self, directory: str, text: str, *words: str) -> None:
        path = os.path.join(directory, "uac.toml")
        with open(path, "w") as f:
            f.write(text)
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        message = str(caught.exception)
        self.assertTrue(message.startswith(path + ": "), message)
        for word in words:
            self.assertIn(word, message)

    def test_tls_socket_without_certificate(self):
        self.assertConfigError('[core]\nlisten = ["tls:127.0.0.1:5061"]\n', "[core] listen", "tls:", "[tls] certificate")

    def test_tls_socket_with_certificate(self):
        directory = self.files("cert.pem", "key.pem")
        _, settings = self.load(directory, '[core]\nlisten = ["tls:127.0.0.1:5061"]\n'
                                           '[tls]\ncertificate = "cert.pem"\nprivate_key = "key.pem"\n')
        self.assertEqual(settings.core.listen[0].transport, "tls")

    def test_certificate_without_key(self):
        directory = self.files("cert.pem")
        self.assertLoadFails(directory, '[tls]\ncertificate = "cert.pem"\n', "[tls] private_key", "certificate")

    def test_key_without_certificate(self):
        directory = self.files("key.pem")
        self.assertLoadFails(directory, '[tls]\nprivate_key = "key.pem"\n', "[tls] certificate", "private_key")

    def test_missing_files(self):
        for key in ("certificate", "private_key", "ca_file"):
            with case(self, key=key):
                directory = self.files("cert.pem", "key.pem", "ca.pem")
                names = {"certificate": "cert.pem", "private_key": "key.pem", "ca_file": "ca.pem", key: "missing.pem"}
                text = "[tls]\n" + "".join(f'{k} = "{v}"\n' for k, v in names.items())
                self.assertLoadFails(directory, text, f"[tls] {key}", "cannot read",
                                     os.path.join(directory, "missing.pem"), "No such file")

    def test_empty_file_name(self):
        self.assertConfigError('[tls]\nca_file = ""\n', "[tls] ca_file", "empty")

    def test_absolute_file_name_kept(self):
        directory = self.files("ca.pem")
        ca = os.path.join(directory, "ca.pem")
        _, settings = self.load(self.files(), f'[tls]\nca_file = "{ca}"\n')
        self.assertEqual(settings.tls.ca_file, ca)


class FileErrorTests(ConfigFileMixin, SynchronousTestCase):
    def test_missing_file(self):
        path = os.path.join(self.mktemp(), "nowhere.toml")
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertEqual(str(caught.exception), f"{path}: cannot read: No such file or directory")

    def test_directory(self):
        path = self.mktemp()
        os.makedirs(path)
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertIn(f"{path}: cannot read: ", str(caught.exception))

    def test_parent_not_a_directory(self):
        path = os.path.join(self.write("[core]\n"), "uac.toml")
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertEqual(str(caught.exception), f"{path}: cannot read: Not a directory")

    def test_unreadable_file(self):
        if os.geteuid() == 0:
            raise self.skipTest("root reads files whatever their mode")
        path = self.write("[core]\n")
        os.chmod(path, 0)
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertEqual(str(caught.exception), f"{path}: cannot read: Permission denied")

    def test_invalid_toml(self):
        self.assertConfigError("[core]\ntimer_t1 = = 1\n", "not valid TOML", "line 2")
        self.assertConfigError("[core]\nlisten = [\n", "not valid TOML")

    def test_duplicate_key(self):
        self.assertConfigError("[core]\ntimer_t1 = 1\ntimer_t1 = 2\n", "not valid TOML")

    def test_duplicate_section(self):
        self.assertConfigError("[core]\n[core]\n", "not valid TOML")

    def test_not_utf8(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b'[core]\nuser_agent = "\xff"\n')
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertTrue(str(caught.exception).startswith(f"{path}: not valid TOML: not UTF-8"))

    def test_config_error_is_a_txuac_error(self):
        self.assertTrue(issubclass(ConfigError, TxuacError))

    def test_settings_from_dict_names_its_path(self):
        with self.assertRaises(ConfigError) as caught:
            settings_from_dict({"core": {"timer_t1": "x"}}, "embedded.toml")
        self.assertEqual(str(caught.exception), "embedded.toml: [core] timer_t1: expected an integer, got str")

    def test_settings_from_dict_default_path(self):
        with self.assertRaises(ConfigError) as caught:
            settings_from_dict({"nope": {}})
        self.assertEqual(str(caught.exception), "<dict>: unknown section(s): nope")


class UACSectionTests(SynchronousTestCase):
    """[uac]: Kamailio's credential parameter and our digest settings."""

    def test_defaults(self):
        uac = settings_from_dict({}).uac
        self.assertEqual(uac.credential, ())
        self.assertEqual(uac.auth_algorithms[0], "SHA-512-256")
        self.assertIn("MD5", uac.auth_algorithms)
        self.assertFalse(uac.auth_prefer_auth_int)

    def test_credential_list_and_algorithms(self):
        uac = settings_from_dict({"uac": {"credential": ["alice:example.com:s:e:c"],
                                          "auth_algorithms": ["md5", " SHA-256 "],
                                          "auth_prefer_auth_int": True}}).uac
        self.assertEqual(uac.credential, ("alice:example.com:s:e:c",))  # the password may hold ':'
        self.assertEqual(uac.auth_algorithms, ("MD5", "SHA-256"))
        self.assertTrue(uac.auth_prefer_auth_int)

    def test_bad_values_name_the_key_and_hide_the_password(self):
        for table, key in (
            ({"credential": ["alice-no-realm-secret"]}, "[uac] credential"),
            ({"credential": ["alice:example.com"]}, "[uac] credential"),
            ({"credential": [7]}, "[uac] credential"),
            ({"auth_algorithms": ["SHA-1"]}, "[uac] auth_algorithms"),
            ({"auth_algorithms": []}, "[uac] auth_algorithms"),
            ({"auth_prefer_auth_int": "yes"}, "[uac] auth_prefer_auth_int"),
            ({"credentials": []}, "[uac] unknown key"),
        ):
            with self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": table}, "uac.toml")
            self.assertIn(key, str(raised.exception))
            self.assertIn("uac.toml", str(raised.exception))
            self.assertNotIn("secret", str(raised.exception))


class FlowSettingsTests(SynchronousTestCase):
    """[uac] keep-alives and OPTIONS pings (ours), down to the stack and the registrant."""

    def test_defaults_and_shipped_values(self):
        uac = settings_from_dict({}).uac
        self.assertEqual((uac.reg_keepalive_interval, uac.reg_options_ping_interval, uac.reg_ping_up_count,
                          uac.reg_ping_down_count), (90, 0, 2, 3))
        shipped = load_settings(SHIPPED).uac
        self.assertEqual((shipped.reg_keepalive_interval, shipped.reg_options_ping_interval,
                          shipped.reg_ping_up_count, shipped.reg_ping_down_count), (90, 0, 2, 3))

    def test_values_reach_the_registrant(self):
        from txuac.service import registrant_settings
        settings = settings_from_dict({"uac": {"reg_options_ping_interval": 15, "reg_ping_up_count": 1,
                                               "reg_ping_down_count": 5, "reg_keepalive_interval": 0}})
        registrant = registrant_settings(settings)
        self.assertEqual((registrant.reg_options_ping_interval, registrant.reg_ping_up_count,
                          registrant.reg_ping_down_count), (15, 1, 5))
        from txuac.service import SIPService
        self.assertEqual(SIPService(settings).stack.pool.keepalive_interval, 0)
        self.assertEqual(SIPService(settings_from_dict({})).stack.pool.keepalive_interval, 90)

    def test_bad_values_name_the_key(self):
        for key, value in (("reg_keepalive_interval", -1), ("reg_options_ping_interval", -5),
                           ("reg_ping_up_count", 0), ("reg_ping_down_count", 0), ("reg_ping_up_count", "2")):
            with self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": {key: value}}, "uac.toml")
            self.assertIn(f"[uac] {key}", str(raised.exception))


class ProbeSettingsTests(SynchronousTestCase):
    """[uac] reg_probe, reg_probe_interval, reg_probe_max_interval (ours), down to the registrant."""

    def test_defaults_and_shipped_values(self):
        for uac in (settings_from_dict({}).uac, load_settings(SHIPPED).uac):
            self.assertEqual((uac.reg_probe, uac.reg_probe_interval, uac.reg_probe_max_interval), (True, 2, 30))

    def test_values_reach_the_registrant(self):
        from txuac.service import registrant_settings
        registrant = registrant_settings(settings_from_dict(
            {"uac": {"reg_probe": False, "reg_probe_interval": 1, "reg_probe_max_interval": 10}}))
        self.assertEqual((registrant.reg_probe, registrant.reg_probe_interval, registrant.reg_probe_max_interval),
                         (False, 1.0, 10.0))

    def test_bad_values_name_the_key(self):
        for key, value in (("reg_probe", 1), ("reg_probe_interval", 0), ("reg_probe_max_interval", -1),
                           ("reg_probe_interval", "2")):
            with self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": {key: value}}, "uac.toml")
            self.assertIn(f"[uac] {key}", str(raised.exception))


class RetrySettingsTests(SynchronousTestCase):
    """[uac] retries per failure kind: txuac's defaults, Kamailio's 0, down to the registrant."""

    KEYS = ("reg_retry_interval", "reg_retry_max_interval", "reg_forbidden_retry_interval",
            "reg_fatal_retry_interval", "reg_retry_jitter")

    def test_defaults_and_shipped_values(self):
        uac = settings_from_dict({}).uac
        self.assertEqual(tuple(getattr(uac, key) for key in self.KEYS), (30, 600, 1800, 3600, 20))
        shipped = load_settings(SHIPPED).uac
        self.assertEqual(tuple(getattr(shipped, key) for key in self.KEYS), (30, 600, 1800, 3600, 20))

    def test_values_reach_the_registrant(self):
        from txuac.service import registrant_settings
        values = dict(zip(self.KEYS, (0, 120, 0, 7200, 0)))
        registrant = registrant_settings(settings_from_dict({"uac": values}))
        self.assertEqual(tuple(getattr(registrant, key) for key in self.KEYS), (0, 120, 0, 7200, 0))
        registrant = registrant_settings(settings_from_dict({}))
        self.assertEqual(tuple(getattr(registrant, key) for key in self.KEYS), (30, 600, 1800, 3600, 20))

    def test_bad_values_name_the_key(self):
        for key, value in (("reg_retry_interval", -1), ("reg_retry_max_interval", -1),
                           ("reg_forbidden_retry_interval", -30), ("reg_fatal_retry_interval", "1h"),
                           ("reg_retry_jitter", 101), ("reg_retry_jitter", -1)):
            with self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": {key: value}}, "uac.toml")
            self.assertIn(f"[uac] {key}", str(raised.exception))


class PacingSettingsTests(SynchronousTestCase):
    """[uac] reg_send_rate, reg_max_in_flight and their per-destination counterparts."""

    KEYS = ("reg_send_rate", "reg_max_in_flight", "reg_dest_rate", "reg_dest_max_in_flight")

    def test_defaults_shipped_and_passed_on(self):
        from txuac.service import registrant_settings
        self.assertEqual(tuple(getattr(settings_from_dict({}).uac, key) for key in self.KEYS), (3000, 1000, 3000, 1000))
        self.assertEqual(tuple(getattr(load_settings(SHIPPED).uac, key) for key in self.KEYS),
                         (3000, 1000, 3000, 1000))
        registrant = registrant_settings(settings_from_dict({"uac": {"reg_dest_rate": 50,
                                                                     "reg_dest_max_in_flight": 7}}))
        self.assertEqual((registrant.reg_dest_rate, registrant.reg_dest_max_in_flight), (50.0, 7))

    def test_must_be_positive(self):
        for key in self.KEYS:
            with self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": {key: 0}}, "uac.toml")
            self.assertIn(f"[uac] {key}", str(raised.exception))


class AccountSettingsTests(SynchronousTestCase):
    """[uac] reg_ext_table (ours) and reg_keep_callid (txuac's default 1), down to the store and registrant."""

    def test_defaults_and_shipped_values(self):
        uac = settings_from_dict({}).uac
        self.assertEqual((uac.reg_ext_table, uac.reg_keep_callid), ("uacreg_txuac", 1))
        shipped = load_settings(SHIPPED).uac
        self.assertEqual((shipped.reg_ext_table, shipped.reg_keep_callid), ("uacreg_txuac", 1))

    def test_values_reach_the_store_and_the_registrant(self):
        from txuac.service import UACService, registrant_settings
        settings = settings_from_dict({"uac": {"reg_db_url": "sqlite:////tmp/never-opened.sqlite",
                                               "reg_contact_addr": "127.0.0.1", "reg_ext_table": "accounts_ext",
                                               "reg_keep_callid": 0}, "rpc": {"enabled": False}})
        self.assertFalse(registrant_settings(settings).reg_keep_callid)
        self.assertTrue(registrant_settings(settings_from_dict({})).reg_keep_callid)
        self.assertEqual(UACService(settings).registrant.store.ext_table, "accounts_ext")

    def test_the_registrant_takes_every_setting_of_the_same_name(self):
        import dataclasses

        from txuac.config import UACSettings
        from txuac.registrant.settings import RegistrantSettings
        from txuac.service import registrant_settings
        ours = {f.name for f in dataclasses.fields(RegistrantSettings)}
        ours -= {f.name for f in dataclasses.fields(UACSettings)}
        self.assertEqual(ours, {"user_agent", "log_routine", "failure_summary_interval"})
        settings = settings_from_dict({"uac": {"reg_contact_addr": "127.0.0.1", "reg_use_domain": 1, "reg_probe": False,
                                               "reg_ping_up_count": 5, "reg_dest_rate": 7, "reg_timer_t2": 800},
                                       "log": {"level": "debug", "failure_summary_interval": 2.5}})
        registrant = registrant_settings(settings)
        self.assertEqual(registrant.failure_summary_interval, 2.5)
        self.assertEqual((registrant.reg_use_domain, registrant.reg_probe, registrant.reg_ping_up_count,
                          registrant.reg_dest_rate, registrant.reg_timer_t2, registrant.log_routine),
                         (True, False, 5, 7.0, 0.8, True))
        self.assertIs(type(registrant.reg_dest_rate), float)

    def test_an_empty_uac_section_gives_the_registrant_its_own_defaults(self):
        """One home for the defaults: [uac] takes the registrant's, so nothing can drift."""
        import dataclasses

        from txuac.config import UACSettings
        from txuac.registrant.settings import RegistrantSettings
        from txuac.service import registrant_settings
        shared = ({f.name for f in dataclasses.fields(RegistrantSettings)}
                  & {f.name for f in dataclasses.fields(UACSettings)}) - {"reg_contact_addr"}
        self.assertGreater(len(shared), 20)
        registrant, defaults = registrant_settings(settings_from_dict({})), RegistrantSettings()
        self.assertEqual({name: getattr(registrant, name) for name in shared},
                         {name: getattr(defaults, name) for name in shared})

    def test_bad_values_name_the_key(self):
        for table in ({"reg_ext_table": "uac reg"}, {"reg_ext_table": "x;drop"}, {"reg_ext_table": 5},
                      {"reg_ext_table": "uacreg"}):
            with self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": table}, "uac.toml")
            self.assertIn("[uac] reg_ext_table", str(raised.exception))

    def test_a_table_name_the_store_refuses_is_refused_with_the_file_and_key(self):
        for key in ("reg_db_table", "reg_ext_table"):
            with self.subTest(key=key), self.assertRaises(ConfigError) as raised:
                settings_from_dict({"uac": {key: "1abc"}}, "uac.toml")
            self.assertIn(f"uac.toml: [uac] {key} '1abc'", str(raised.exception))


class ChangeFeedSettingsTests(SynchronousTestCase):
    """[uac] reg_db_watch (ours): live changes to uacreg followed, off for a single node."""

    POSTGRES = "postgres://txuac@127.0.0.1:1/txuac"

    def settings(self, **uac):
        return settings_from_dict({"uac": {"reg_contact_addr": "127.0.0.1", **uac}, "rpc": {"enabled": False}},
                                  "uac.toml")

    def test_off_unless_set(self):
        self.assertFalse(settings_from_dict({}).uac.reg_db_watch)
        self.assertFalse(load_settings(SHIPPED).uac.reg_db_watch)
        self.assertFalse(self.settings(reg_db_url=self.POSTGRES).uac.reg_db_watch)
        self.assertTrue(self.settings(reg_db_url=self.POSTGRES, reg_db_watch=True).uac.reg_db_watch)

    def test_on_by_default_in_a_cluster(self):
        def watch(**uac):
            document = {"uac": {"reg_contact_addr": "127.0.0.1", "reg_db_url": self.POSTGRES, **uac},
                        "cluster": {"node_id": "node-a"}}
            return settings_from_dict(document, "uac.toml").uac.reg_db_watch
        self.assertTrue(watch())
        self.assertFalse(watch(reg_db_watch=False))

    def test_the_registrant_follows_the_store_feed_only_when_set(self):
        from txuac.registrant.store.postgres_feed import PostgresChangeFeed
        from txuac.service import UACService
        watched = UACService(self.settings(reg_db_url=self.POSTGRES, reg_db_watch=True)).registrant
        self.assertIsInstance(watched.changes, PostgresChangeFeed)
        self.assertEqual(watched.changes.table, "uacreg")
        self.assertIsNone(UACService(self.settings(reg_db_url=self.POSTGRES)).registrant.changes)

    def test_refused_with_sqlite_or_not_a_bool(self):
        for value, message in ((True, "needs a PostgreSQL or MySQL reg_db_url"), (1, "expected")):
            with self.subTest(value=value), self.assertRaises(ConfigError) as raised:
                self.settings(reg_db_url="sqlite:////tmp/never-opened.sqlite", reg_db_watch=value)
            self.assertIn("uac.toml: [uac] reg_db_watch", str(raised.exception))
            self.assertIn(message, str(raised.exception))
        self.assertFalse(self.settings(reg_db_url="sqlite:////tmp/never-opened.sqlite",
                                       reg_db_watch=False).uac.reg_db_watch)


class ClusterSectionTests(SynchronousTestCase):
    """[cluster]: several nodes on one uacreg table (docs/cluster.rst)."""

    POSTGRES = "postgres://txuac@127.0.0.1:1/txuac"

    def settings(self, cluster, core=None, **uac):
        uac = {"reg_contact_addr": "127.0.0.1", "reg_db_url": self.POSTGRES, **uac}
        return settings_from_dict({"uac": uac, "core": core or {}, "cluster": cluster, "rpc": {"enabled": False}},
                                  "uac.toml")

    def test_defaults_and_what_follows(self):
        from txuac.registrant.cluster.leases import ClusterSettings
        from txuac.service import UACService, registrant_settings
        self.assertIsNone(settings_from_dict({}).cluster)
        settings = self.settings({"node_id": "node-a"}, reg_keep_callid=0)
        self.assertEqual(settings.cluster, ClusterSettings(node_id="node-a", partitions=256, lease_period=6.0,
                                                           renew_interval=1.0, state_write_interval=1.0))
        self.assertTrue(settings.uac.reg_db_watch)
        self.assertTrue(registrant_settings(settings).reg_keep_callid)  # the next owner goes on with it
        uac = UACService(settings)
        self.assertIs(uac.registrant.ownership, uac.cluster)
        services = list(uac)
        self.assertLess(services.index(uac.cluster), services.index(uac.registrant))

    def test_errors_name_the_key(self):
        for cluster, key, message in (
                ({}, "node_id", "required"),
                ({"node_id": "node a"}, "node_id", "1 to 64"),
                ({"node_id": "n" * 65}, "node_id", "1 to 64"),
                ({"node_id": "a", "partitions": 0}, "partitions", ""),
                ({"node_id": "a", "lease_period": 0}, "lease_period", "positive"),
                ({"node_id": "a", "renew_interval": 2.0}, "renew_interval", "below lease_period / 3"),
                ({"node_id": "a", "state_write_interval": 0}, "state_write_interval", "positive"),
                ({"node_id": "a", "leases": 1}, "unknown key(s): leases", "")):
            with self.subTest(cluster=cluster), self.assertRaises(ConfigError) as raised:
                self.settings(cluster)
            self.assertIn(f"uac.toml: [cluster] {key}", str(raised.exception))
            self.assertIn(message, str(raised.exception))

    def test_needs_a_shared_database_and_one_process(self):
        with self.assertRaises(ConfigError) as raised:
            self.settings({"node_id": "a"}, reg_db_url="sqlite:////tmp/never-opened.sqlite")
        self.assertIn("uac.toml: [uac] reg_db_url: [cluster] needs a postgres:// or mysql:// URL",
                      str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            self.settings({"node_id": "a"}, core={"workers": 2})
        self.assertIn("[core] workers", str(raised.exception))


class ManholeSectionTests(ConfigFileMixin, SynchronousTestCase):
    """[manhole]: off unless listen is set; then both key files are required, relative to the file."""

    def test_off_by_default(self):
        manhole = settings_from_dict({}).manhole
        self.assertIsNone(manhole.listen)
        self.assertIsNone(manhole.authorized_keys)

    def test_paths_relative_to_the_config_file(self):
        path = self.write('[manhole]\nlisten = "tcp:5065:interface=127.0.0.1"\n'
                          'authorized_keys = "keys/authorized_keys"\nhost_key = "manhole_host_key"\n')
        directory = os.path.dirname(path)
        os.makedirs(os.path.join(directory, "keys"))
        with open(os.path.join(directory, "keys", "authorized_keys"), "w") as f:
            f.write("# none yet\n")
        manhole = load_settings(path).manhole
        self.assertEqual(manhole.listen, "tcp:5065:interface=127.0.0.1")
        self.assertEqual(manhole.authorized_keys, os.path.join(directory, "keys", "authorized_keys"))
        self.assertEqual(manhole.host_key, os.path.join(directory, "manhole_host_key"))  # need not exist yet

    def test_errors_name_the_key(self):
        listen = 'listen = "tcp:5065:interface=127.0.0.1"\n'
        self.assertConfigError("[manhole]\n" + listen + 'host_key = "hk"\n', "[manhole] authorized_keys", "required")
        self.assertConfigError("[manhole]\n" + listen + 'authorized_keys = "missing"\nhost_key = "hk"\n',
                               "[manhole] authorized_keys", "cannot read")
        self.assertConfigError('[manhole]\nlisten = "tcp:no-port"\n', "[manhole] listen")
        self.assertConfigError("[manhole]\nlisten = 5065\n", "[manhole] listen")
        self.assertConfigError('[manhole]\npassword = "x"\n', "[manhole]", "password")

    def test_host_key_required(self):
        path = self.write('[manhole]\nlisten = "tcp:5065:interface=127.0.0.1"\nauthorized_keys = "uac.toml"\n')
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertIn("[manhole] host_key", str(caught.exception))


class RPCSectionTests(ConfigFileMixin, SynchronousTestCase):
    """[rpc]: on by default on loopback; anywhere else only with a token."""

    TOKEN = "0123456789abcdef-token"

    def test_defaults_and_shipped(self):
        rpc = settings_from_dict({}).rpc
        self.assertEqual((rpc.enabled, rpc.listen, rpc.token, rpc.show_secrets, rpc.max_request_size),
                         (True, "tcp:5064:interface=127.0.0.1", None, False, 65536))
        self.assertEqual(load_settings(SHIPPED).rpc, rpc)  # the sample shows the defaults

    def test_loopback_and_unix_need_no_token(self):
        for listen in ("tcp:6000:interface=127.0.0.1", "tcp6:6000:interface=\\:\\:1", "unix:/run/txuac.sock"):
            self.assertEqual(settings_from_dict({"rpc": {"listen": listen}}).rpc.listen, listen)

    def test_other_addresses_need_a_token(self):
        for listen in ("tcp:6000", "tcp:6000:interface=0.0.0.0", "tcp:6000:interface=192.0.2.1"):
            self.assertConfigError(f'[rpc]\nlisten = "{listen}"\n', "[rpc] token", "required")
            rpc = settings_from_dict({"rpc": {"listen": listen, "token": self.TOKEN}}).rpc
            self.assertEqual(rpc.token, self.TOKEN)
        # Off, it binds nothing: no token needed.
        self.assertFalse(settings_from_dict({"rpc": {"enabled": False, "listen": "tcp:6000"}}).rpc.enabled)

    def test_errors_name_the_key(self):
        self.assertConfigError('[rpc]\ntoken = "short"\n', "[rpc] token", "16 characters")
        self.assertConfigError('[rpc]\nlisten = "tcp:no-port"\n', "[rpc] listen")
        self.assertConfigError("[rpc]\nmax_request_size = 0\n", "[rpc] max_request_size")
        self.assertConfigError('[rpc]\nshow_secrets = "yes"\n', "[rpc] show_secrets")
        self.assertConfigError('[rpc]\npassword = "x"\n', "[rpc]", "password")

    def test_token_never_shown(self):
        settings = settings_from_dict({"rpc": {"token": self.TOKEN}})
        self.assertNotIn(self.TOKEN, repr(settings))


class LogSectionTests(ConfigFileMixin, SynchronousTestCase):
    """[log]: text at info by default; the level is one of twisted.logger's names."""

    def test_defaults_and_shipped(self):
        log = settings_from_dict({}).log
        self.assertEqual((log.format, log.level), ("text", "info"))
        self.assertEqual(load_settings(SHIPPED).log, log)  # the sample shows the defaults

    def test_every_level(self):
        for level in ("debug", "info", "warn", "error", "critical"):
            self.assertEqual(settings_from_dict({"log": {"format": "json", "level": level}}).log,
                             LogSettings(format="json", level=level))

    def test_errors_name_the_key(self):
        for level in ('"warning"', '"INFO"', '"trace"', '""'):
            self.assertConfigError(f"[log]\nlevel = {level}\n", "[log] level", "'debug'", "'critical'")
        self.assertConfigError("[log]\nlevel = 10\n", "[log] level", "a string")
        self.assertConfigError('[log]\nformat = "xml"\n', "[log] format")
        self.assertConfigError("[log]\nfailure_summary_interval = 0\n", "[log] failure_summary_interval", "positive")
        self.assertConfigError('[log]\nfailure_summary_interval = "10"\n', "[log] failure_summary_interval")
        self.assertConfigError('[log]\nfile = "txuac.log"\n', "[log]", "file")


class RoutingSectionTests(ConfigFileMixin, SynchronousTestCase):
    """[routing]: Kamailio's restore parameters with their defaults, and ours."""

    def test_defaults_and_shipped(self):
        routing = settings_from_dict({}).routing
        self.assertEqual(routing, RoutingSettings())
        self.assertEqual((routing.script, routing.restore_mode, routing.restore_passwd, routing.restore_dlg),
                         (None, "auto", "", False))
        self.assertEqual((routing.rr_from_store_param, routing.rr_to_store_param), ("vsf", "vst"))
        self.assertEqual((routing.restore_from_avp, routing.restore_to_avp, routing.restore_sign,
                          routing.restore_sign_key), (False, False, False, ""))
        self.assertEqual((routing.record_route, routing.dialog_timeout, routing.max_dialogs, routing.fr_inv_timeout),
                         (True, 43200, 100000, 120))
        self.assertEqual(load_settings(SHIPPED).routing, routing)  # the sample shows the defaults

    def test_script_relative_to_the_config_file(self):
        path = self.write('[routing]\nscript = "routing.py"\n')
        with open(os.path.join(os.path.dirname(path), "routing.py"), "w") as f:
            f.write("")
        self.assertEqual(load_settings(path).routing.script, os.path.join(os.path.dirname(path), "routing.py"))
        self.assertConfigError('[routing]\nscript = "missing.py"\n', "[routing] script", "missing.py")
        self.assertConfigError('[routing]\nscript = ""\n', "[routing] script", "empty")

    def test_values(self):
        table = {"restore_mode": "Manual", "restore_passwd": "secret", "restore_dlg": True,
                 "rr_from_store_param": "of", "rr_to_store_param": "ot", "restore_from_avp": "$avp(original_from)",
                 "restore_to_avp": True, "restore_sign": True, "record_route": False, "dialog_timeout": 60,
                 "max_dialogs": 5, "fr_inv_timeout": 30}
        routing = settings_from_dict({"routing": table}).routing
        self.assertEqual(routing, RoutingSettings(
            restore_mode="manual", restore_passwd="secret", restore_dlg=True, rr_from_store_param="of",
            rr_to_store_param="ot", restore_from_avp=True, restore_to_avp=True, restore_sign=True,
            record_route=False, dialog_timeout=60, max_dialogs=5, fr_inv_timeout=30))
        self.assertFalse(settings_from_dict({"routing": {"restore_from_avp": ""}}).routing.restore_from_avp)
        self.assertNotIn("secret", repr(routing))

    def test_event_callback(self):
        """Kamailio's event_callback (README 3.24): a function name, looked up in the script."""
        self.assertIsNone(settings_from_dict({}).routing.event_callback)
        path = self.write('[routing]\nscript = "routing.py"\nevent_callback = "ksr_uac_event"\n')
        with open(os.path.join(os.path.dirname(path), "routing.py"), "w") as f:
            f.write("")
        self.assertEqual(load_settings(path).routing.event_callback, "ksr_uac_event")
        self.assertIsNone(settings_from_dict({"routing": {"event_callback": ""}}).routing.event_callback)
        self.assertConfigError('[routing]\nevent_callback = "on_reply"\n', "[routing] event_callback", "script")
        for bad in ('"ksr.uac_event"', '"on reply"', '"1st"'):
            self.assertConfigError(f"[routing]\nevent_callback = {bad}\n", "[routing] event_callback",
                                   "name of a function")
        self.assertConfigError("[routing]\nevent_callback = 1\n", "[routing] event_callback", "a string")

    def test_kamailio_int_flags(self):
        """restore_dlg is an int flag in Kamailio's cfg: 0 and 1 mean false and true here too."""
        for written, meant in ((1, True), (0, False), (True, True), (False, False)):
            routing = settings_from_dict({"routing": {"restore_dlg": written}}).routing
            self.assertIs(routing.restore_dlg, meant)

    def test_sign_needs_a_key(self):
        self.assertConfigError("[routing]\nrestore_sign = true\n", "[routing] restore_sign_key", "restore_passwd")
        signed = settings_from_dict({"routing": {"restore_sign": True, "restore_sign_key": "k"}}).routing
        self.assertEqual((signed.restore_sign, signed.restore_sign_key), (True, "k"))

    def test_errors_name_the_key(self):
        for mode in ('"always"', '""'):
            self.assertConfigError(f"[routing]\nrestore_mode = {mode}\n", "[routing] restore_mode", "'auto'")
        self.assertConfigError("[routing]\nrestore_mode = 1\n", "[routing] restore_mode", "a string")
        self.assertConfigError("[routing]\nrestore_dlg = 2\n", "[routing] restore_dlg", "a boolean (or 0/1)")
        self.assertConfigError('[routing]\nrestore_dlg = "1"\n', "[routing] restore_dlg", "a boolean")
        self.assertConfigError("[routing]\nrestore_passwd = 1\n", "[routing] restore_passwd", "a string")
        self.assertConfigError("[routing]\nrestore_sign_key = false\n", "[routing] restore_sign_key", "a string")
        for key in ("rr_from_store_param", "rr_to_store_param"):
            for bad in ('""', '"a b"', '"v;sf"', '"lr"', '"FTAG"'):
                self.assertConfigError(f"[routing]\n{key} = {bad}\n", f"[routing] {key}")
            self.assertConfigError(f"[routing]\n{key} = 1\n", f"[routing] {key}", "a string")
        self.assertConfigError('[routing]\nrr_to_store_param = "VSF"\n', "[routing] rr_to_store_param",
                               "rr_from_store_param")
        for key in ("restore_from_avp", "restore_to_avp"):
            for bad in ('"original"', '"$avp()"', '"$var(x)"'):
                self.assertConfigError(f"[routing]\n{key} = {bad}\n", f"[routing] {key}", "$avp(name)")
            self.assertConfigError(f"[routing]\n{key} = 1\n", f"[routing] {key}", "a boolean or a string")
        for key in ("dialog_timeout", "max_dialogs", "fr_inv_timeout"):
            self.assertConfigError(f"[routing]\n{key} = 0\n", f"[routing] {key}", "positive")
            self.assertConfigError(f'[routing]\n{key} = "60"\n', f"[routing] {key}", "an integer")
        self.assertConfigError("[routing]\nrecord_route = 1\n", "[routing] record_route", "a boolean")
        self.assertConfigError("[routing]\nappend_fromtag = true\n", "[routing]", "append_fromtag")
