"""txuac-ctl run as a subprocess against a running service, and its pieces."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.internet import defer, protocol, reactor, threads, utils
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support.accounts import make_row
from tests.support.peers import free_port
from tests.support.services import TOKEN, dead_rows, load_printed_config, start_service, wait_until
from txuac.admin import ctl
from txuac.config import load_settings
from txuac.errors import ConfigError, TxuacError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ctl_environment(**variables: str) -> dict[str, str]:
    """The environment of a txuac-ctl subprocess: ours without proxies or a token, plus ``variables``."""
    env = {name: value for name, value in os.environ.items()
           if name.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "txuac_token")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    env.update(variables)
    return env


@defer.inlineCallbacks
def run_ctl(*args: str, **variables: str):
    """(exit status, stdout, stderr) of ``python -m txuac.admin.ctl ARGS`` with environment
    ``variables``; the reactor serves meanwhile."""
    env = ctl_environment(**variables)
    out, err, status = yield utils.getProcessOutputAndValue(sys.executable, ["-m", "txuac.admin.ctl", *args],
                                                            env=env, path=ROOT)
    return status, out.decode(), err.decode()


class CtlTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, dead_rows(), rpc={"token": TOKEN})
        self.url = f"http://127.0.0.1:{self.service.rpc.port}/RPC"
        yield wait_until(lambda: self.service.registrant.records["failing"].last_failure is not None)

    def ctl(self, *args: str):
        return run_ctl("--url", self.url, "--token", TOKEN, *args)

    @defer.inlineCallbacks
    def test_reg_dump_table(self):
        status, out, err = yield self.ctl("uac.reg_dump")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["L_UUID", "ACCOUNT", "STATE", "EXPIRES", "IN", "LAST", "ERROR"])
        rows = {line.split()[0]: line for line in lines[1:]}
        self.assertEqual(sorted(rows), ["1000", "failing", "with-ha1"])
        self.assertEqual(rows["1000"].split(), ["1000", "remote-1000@sip.provider.example", "disabled", "-", "-"])
        failure = self.service.registrant.records["failing"].last_failure
        self.assertTrue(rows["failing"].endswith(failure), rows["failing"])
        self.assertIn(" failed ", rows["failing"])
        # Columns line up: every cell starts where its header does.
        self.assertEqual({line.index(line.split()[1]) for line in lines[1:]}, {lines[0].index("ACCOUNT")})

    @defer.inlineCallbacks
    def test_reg_info_numeric_l_uuid(self):
        """1000 is sent as the string "1000" (kamcmd would send a number and need "s:1000")."""
        status, out, err = yield self.ctl("uac.reg_info", "l_uuid", "1000")
        self.assertEqual((status, err), (0, ""))
        fields = dict(line.split(None, 1) for line in out.splitlines()[1:])
        self.assertEqual((fields["l_uuid"], fields["auth_password"], fields["state"]), ("1000", "********", "disabled"))
        self.assertNotIn("secret-pw", out)

    @defer.inlineCallbacks
    def test_reg_active_and_json(self):
        status, out, err = yield self.ctl("uac.reg_active", "0")
        self.assertEqual((status, out.split(), err), (0, ["FIELD", "VALUE", "omode", "1", "nmode", "0"], ""))
        self.assertFalse(self.service.registrant.active)
        status, out, _ = yield self.ctl("--json", "uac.reg_active", "1")
        self.assertEqual((status, json.loads(out)), (0, {"omode": 0, "nmode": 1}))
        status, out, _ = yield self.ctl("--json", "uac.reg_dump")
        self.assertEqual(sorted(record["l_uuid"] for record in json.loads(out)), ["1000", "failing", "with-ha1"])

    @defer.inlineCallbacks
    def test_reg_add_sends_integers(self):
        status, out, err = yield self.ctl("uac.reg_add", "2000", "u", "d.example", "u", "r.example", ".", "u", "pw",
                                          ".", "sip:127.0.0.1:9", "600", "1", "0", ".", ".")
        self.assertEqual((status, out.strip(), err), (0, "ok", ""))
        self.assertEqual(self.service.registrant.records["2000"].expires, 600)

    @defer.inlineCallbacks
    def test_rpc_error(self):
        status, out, err = yield self.ctl("uac.reg_info", "l_uuid", "nobody")
        self.assertEqual((status, out, err), (1, "", "error 404: Record not found\n"))
        status, _, err = yield self.ctl("uac.reg_nothing")
        self.assertEqual(status, 1)
        self.assertEqual(err, "error -32601: Method Not Found (no method 'uac.reg_nothing')\n")

    @defer.inlineCallbacks
    def test_statistics_and_methods(self):
        status, out, _ = yield self.ctl("stats.get_statistics", "uac:")
        self.assertEqual(status, 0)
        rows = [line.split() for line in out.splitlines()]
        self.assertEqual(rows[:2], [["NAME", "VALUE"], ["uac:regtotal", "3"]])
        status, out, _ = yield self.ctl("system.listMethods")
        self.assertIn("uac.reg_dump", out.splitlines())

    @defer.inlineCallbacks
    def test_config_file(self):
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write(f'[rpc]\nlisten = "tcp:{self.service.rpc.port}:interface=127.0.0.1"\ntoken = "{TOKEN}"\n')
        status, out, err = yield run_ctl("--config", config, "core.version")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("txuac "), out)
        status, out, err = yield run_ctl("--config", config, "--token", "x" * 20, "core.version")
        self.assertEqual((status, out), (2, ""))
        self.assertTrue(err.startswith(f"txuac-ctl: {self.url}: HTTP 401 Unauthorized"), err)

    @defer.inlineCallbacks
    def test_connection_refused(self):
        url = f"http://127.0.0.1:{free_port()}/RPC"
        status, out, err = yield run_ctl("--url", url, "uac.reg_dump")
        self.assertEqual((status, out, err), (2, "", f"txuac-ctl: cannot connect to {url}: Connection refused\n"))

    @defer.inlineCallbacks
    def test_usage(self):
        status, _, err = yield run_ctl()
        self.assertEqual(status, 2)
        self.assertIn("usage: txuac-ctl", err)


class CtlAccountsTests(TestCase):
    """``txuac-ctl accounts`` against a running service: 1000 and with-ha1 disabled, failing failed."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, dead_rows(), rpc={"token": TOKEN})
        self.url = f"http://127.0.0.1:{self.service.rpc.port}/RPC"
        yield wait_until(lambda: self.service.registrant.records["failing"].last_failure is not None)

    @defer.inlineCallbacks
    def test_filters_fields_and_totals(self):
        status, out, err = yield run_ctl("--url", self.url, "accounts", "--state", "failed",
                                         "--fields", "l_uuid,state,last_error", TXUAC_TOKEN=TOKEN)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["L_UUID", "STATE", "LAST_ERROR"])
        self.assertEqual(lines[1].split()[:2], ["failing", "failed"])
        self.assertEqual(lines[2], "1 of 3 accounts shown; all: 1 failed, 2 disabled")
        status, out, _ = yield run_ctl("--url", self.url, "--token", TOKEN, "accounts", "--registrar", "127.0.0.1",
                                       "--search", "HA1", "--json")
        document = json.loads(out)
        self.assertEqual(([a["l_uuid"] for a in document["accounts"]], document["shown"], document["total"]),
                         (["with-ha1"], 1, 3))
        self.assertEqual(document["totals"]["disabled"], 2)
        self.assertNotIn("auth_password", document["accounts"][0])
        status, out, err = yield run_ctl("--url", self.url, "--token", TOKEN, "accounts", "--fields", "nonsense")
        self.assertEqual(status, 2)
        self.assertIn("unknown field(s) nonsense", err)
        status, _, err = yield run_ctl("--url", self.url, "accounts", "--state", "lost")
        self.assertEqual(status, 2)
        self.assertIn("invalid choice: 'lost'", err)


    @defer.inlineCallbacks
    def test_watch_prints_plain_lines_when_not_a_terminal(self):
        status, out, err = yield run_ctl("--url", self.url, "watch", "--count", "2", "--interval", "0.05")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), 2)
        for line in lines:  # 1000 and with-ha1 disabled: one account expected, failing
            self.assertRegex(line, r"^\d\d:\d\d:\d\d 0/1 online, 1 failed")
        self.service.registrant.records["failing"].flags |= 1  # disabled: nothing left to wait for
        status, out, _ = yield run_ctl("--url", self.url, "watch", "--until-online", "--interval", "0.05")
        self.assertEqual(status, 0)
        self.assertRegex(out, r"^\d\d:\d\d:\d\d 0/0 online\n$")
        status, _, err = yield run_ctl("--url", f"http://127.0.0.1:{free_port()}/RPC", "watch", "--count", "1")
        self.assertEqual(status, 2)
        self.assertIn("cannot connect", err)


class CtlSecurityTests(TestCase):
    """The token stays off the command line and never goes through a proxy."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, None, rpc={"token": TOKEN})
        self.url = f"http://127.0.0.1:{self.service.rpc.port}/RPC"

    def config(self, text: str) -> str:
        """A txuac configuration file with ``text`` in [rpc], and ``rpc.token`` beside it."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "rpc.token"), "w") as f:
            f.write(f"{TOKEN}\nsecond line ignored\n")
        path = os.path.join(directory, "uac.toml")
        with open(path, "w") as f:
            f.write(f'[rpc]\nlisten = "tcp:{self.service.rpc.port}:interface=127.0.0.1"\n{text}')
        return path

    @defer.inlineCallbacks
    def test_never_through_a_proxy(self):
        received: list[bytes] = []

        class Proxy(protocol.Protocol):
            def dataReceived(self, data):
                received.append(data)
                self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                self.transport.loseConnection()

        proxy = reactor.listenTCP(0, protocol.Factory.forProtocol(Proxy), interface="127.0.0.1")
        self.addCleanup(proxy.stopListening)
        proxy_url = f"http://127.0.0.1:{proxy.getHost().port}"
        status, out, err = yield run_ctl("--url", self.url, "core.version", TXUAC_TOKEN=TOKEN,
                                         http_proxy=proxy_url, HTTP_PROXY=proxy_url, all_proxy=proxy_url)
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("txuac "), out)
        self.assertEqual(received, [])

    @defer.inlineCallbacks
    def test_token_from_environment_and_config_file(self):
        configs = {"token": self.config(f'token = "{TOKEN}"\n'), "token_file": self.config('token_file = "rpc.token"\n')}
        wrong = "w" * 20
        for args, variables, expected in (
                (["--url", self.url], {"TXUAC_TOKEN": TOKEN}, 0),
                (["--config", configs["token"]], {}, 0),
                (["--config", configs["token_file"]], {}, 0),
                (["--url", self.url, "--token", wrong], {"TXUAC_TOKEN": TOKEN}, 2),  # --token first
                (["--url", self.url, "--token", TOKEN], {"TXUAC_TOKEN": wrong}, 0),
                (["--config", configs["token"]], {"TXUAC_TOKEN": wrong}, 2),  # then TXUAC_TOKEN
                (["--url", self.url], {}, 2)):
            status, out, err = yield run_ctl(*args, "core.version", **variables)
            self.assertEqual(status, expected, (args, variables, err))
            if expected == 2:
                self.assertIn("HTTP 401 Unauthorized", err)

    def test_token_file_is_read_as_the_server_reads_it(self):
        path = self.config('token_file = "rpc.token"\n')
        self.assertEqual(ctl.url_from_config(path)[1], TOKEN)
        self.assertEqual(load_settings(path).rpc.token, TOKEN)
        with open(os.path.join(os.path.dirname(path), "rpc.token"), "w") as f:
            f.write("short\n")
        with self.assertRaises(ConfigError) as raised:
            load_settings(path)
        self.assertIn("[rpc] token_file: too short", str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            load_settings(self.config(f'token_file = "rpc.token"\ntoken = "{TOKEN}"\n'))
        self.assertIn("not both", str(raised.exception))


class CtlUNIXSocketTests(TestCase):
    """txuac-ctl against a server listening on a UNIX socket."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        directory = tempfile.mkdtemp(prefix="txuac-ctl-")  # short: socket paths are limited to ~100 bytes
        self.addCleanup(shutil.rmtree, directory, True)
        self.socket_path = os.path.join(directory, "rpc.sock")
        self.service = yield start_service(self, dead_rows(), rpc={"listen": f"unix:{self.socket_path}:mode=600"})

    @defer.inlineCallbacks
    def test_url_and_config(self):
        status, out, err = yield run_ctl("--url", f"unix:{self.socket_path}", "uac.reg_info", "l_uuid", "1000")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("remote-1000", out)
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write(f'[rpc]\nlisten = "unix:{self.socket_path}:mode=600"\n')
        status, out, err = yield run_ctl("--config", config, "--json", "uac.reg_active", "0")
        self.assertEqual((status, json.loads(out), err), (0, {"omode": 1, "nmode": 0}, ""))
        self.assertFalse(self.service.registrant.active)
        status, _, err = yield run_ctl("--url", f"unix:{self.socket_path}.missing", "core.version")
        self.assertEqual(status, 2)
        self.assertIn("No such file or directory", err)


class CtlBrokenPipeTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_output_reader_going_away(self):
        """``txuac-ctl --json uac.reg_dump | head -1``: more output than a pipe holds, and the
        reader gone after one line: exit quietly."""
        rows = [make_row(str(n), flags=1, auth_proxy="sip:127.0.0.1:9") for n in range(200)]
        service = yield start_service(self, rows)
        command = [sys.executable, "-m", "txuac.admin.ctl", "--url", f"http://127.0.0.1:{service.rpc.port}/RPC",
                   "--json", "uac.reg_dump"]

        def run() -> tuple[int, bytes, bytes]:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       env=ctl_environment(), cwd=ROOT)
            first = process.stdout.readline()
            process.stdout.close()  # what head -1 does
            err = process.stderr.read()
            return process.wait(timeout=30), first, err

        status, first, err = yield threads.deferToThread(run)
        self.assertEqual(first, b"[\n")
        self.assertEqual(err, b"")  # no BrokenPipeError traceback
        self.assertEqual(status, 141)  # as a tool stopped by SIGPIPE


class CtlPiecesTests(SynchronousTestCase):

    def config(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_url_from_config(self):
        self.assertEqual(ctl.url_from_config(self.config("")), ("http://127.0.0.1:5064/RPC", None))
        self.assertEqual(ctl.url_from_config(self.config(
            f'[rpc]\nlisten = "tcp:6000:interface=0.0.0.0"\ntoken = "{TOKEN}"\n')),
            ("http://127.0.0.1:6000/RPC", TOKEN))
        self.assertEqual(ctl.url_from_config(self.config('[rpc]\nlisten = "tcp6:port=6001:interface=\\\\:\\\\:1"\n')),
                         ("http://[::1]:6001/RPC", None))
        with self.assertRaises(ctl.CtlError) as raised:
            ctl.url_from_config(self.config("[rpc]\nenabled = false\n"))
        self.assertIn("no RPC server", str(raised.exception))
        self.assertIsInstance(raised.exception, TxuacError)
        self.assertEqual(ctl.url_from_config(self.config('[rpc]\nlisten = "unix:/tmp/x.sock:mode=600"\n')),
                         ("unix:/tmp/x.sock", None))
        with self.assertRaises(ctl.CtlError):
            ctl.url_from_config(self.config('[rpc]\nlisten = "udp:5064"\n'))
        with self.assertRaises(ctl.CtlError):
            ctl.url_from_config(self.config("[rpc\n"))

    def test_params(self):
        self.assertEqual(ctl.rpc_params("uac.reg_info", ["l_uuid", "1000"]), ["l_uuid", "1000"])
        self.assertEqual(ctl.rpc_params("uac.reg_active", ["0"]), [0])
        self.assertEqual(ctl.rpc_params("uac.reg_active", ["on"]), ["on"])
        params = ctl.rpc_params("uac.reg_add", [str(n) for n in range(15)])
        self.assertEqual([p for p in params if isinstance(p, int)], [10, 11, 12])

    def test_render(self):
        self.assertEqual(ctl.render("uac.reg_enable", {}), "ok")
        self.assertEqual(ctl.render("uac.reg_dump", []), "no registration records")
        self.assertEqual(ctl.render("core.version", "txuac 1"), "txuac 1")
        self.assertEqual(ctl.table(["A", "LONGER"], [["wide cell", "x"]]), "A          LONGER\nwide cell  x")


class CtlAccountsPiecesTests(SynchronousTestCase):
    records = [
        {"l_uuid": "a", "r_username": "alice", "r_domain": "d.example", "auth_proxy": "sip:reg.example.com",
         "state": "online", "diff_expires": 30, "last_error": None, "path": []},
        {"l_uuid": "b", "r_username": "bob", "r_domain": "d.example", "auth_proxy": "sip:other.example.com",
         "state": "failed", "diff_expires": 5, "last_error": "403 Forbidden", "path": ["<sip:p1>"]},
    ]

    def output(self, *args: str) -> str:
        return ctl.accounts_output(self.records, ctl.accounts_parser().parse_args(list(args)))

    def test_split_command(self):
        self.assertEqual(ctl.split_command(["--url", "accounts", "accounts", "--state", "failed"]),
                         (["--url", "accounts"], "accounts", ["--state", "failed"]))
        self.assertEqual(ctl.split_command(["--json", "-c", "x.toml", "uac.reg_dump"]),
                         (["--json", "-c", "x.toml"], "uac.reg_dump", []))
        self.assertEqual(ctl.split_command(["--json"]), (["--json"], None, []))

    def test_table_and_totals(self):
        self.assertEqual(self.output("--registrar", "OTHER", "--fields", "l_uuid,last_error").splitlines(),
                         ["L_UUID  LAST_ERROR", "b       403 Forbidden",
                          "1 of 2 accounts shown; all: 1 online, 1 failed"])
        self.assertEqual(self.output("--search", "nobody").splitlines(),
                         ["no accounts match", "0 of 2 accounts shown; all: 1 online, 1 failed"])

    def test_yaml(self):
        self.assertEqual(self.output("--yaml", "--state", "failed", "--fields", "l_uuid,path").splitlines()[:7],
                         ['"accounts":', "  -", '    "l_uuid": "b"', '    "path":', '      - "<sip:p1>"',
                          '"shown": 1', '"total": 2'])


class CtlClusterPiecesTests(SynchronousTestCase):
    """``accounts --cluster`` and ``uac.reg_dump cluster``: the fleet, with each account's owner."""

    fleet = [
        {"l_uuid": "a", "r_username": "alice", "r_domain": "d.example", "auth_proxy": "sip:reg.example.com",
         "state": "online", "owner": "node-a", "last_error": None},
        {"l_uuid": "b", "r_username": "bob", "r_domain": "d.example", "auth_proxy": "sip:reg.example.com",
         "state": "failed", "owner": "node-b", "last_error": "403 Forbidden"},
    ]

    def test_accounts_cluster_shows_the_owner(self):
        options = ctl.accounts_parser().parse_args(["--cluster", "--state", "failed"])
        self.assertEqual(ctl.accounts_output(self.fleet, options).splitlines()[:2],
                         ["L_UUID  R_USERNAME  R_DOMAIN   AUTH_PROXY           STATE   OWNER   LAST_ERROR",
                          "b       bob         d.example  sip:reg.example.com  failed  node-b  403 Forbidden"])

    def test_reg_dump_cluster_table(self):
        self.assertEqual(ctl.render("uac.reg_dump", self.fleet).splitlines()[:2],
                         ["L_UUID  ACCOUNT          STATE   OWNER   LAST ERROR", "a       alice@d.example  online  node-a  -"])


class CtlWatchPiecesTests(SynchronousTestCase):
    def test_text_and_bar(self):
        bring_up = {"online": 600, "expected": 1000, "failed": 10, "rate": 411.5, "eta": 0.94}
        self.assertEqual(ctl.progress_text(bring_up), "600/1000 online, 10 failed, 411.5/s, about 1 s to go")
        self.assertEqual(ctl.progress_bar(bring_up, width=10), "[######....]  60%")
        self.assertEqual(ctl.progress_bar({"online": 0, "expected": 0}, width=4), "[####] 100%")

    def test_a_terminal_gets_one_line_redrawn(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True

        answers = iter([{"bring_up": {"online": 1, "expected": 2}}, {"bring_up": {"online": 2, "expected": 2}}])
        self.patch(ctl, "fetch_summary", lambda url, token, timeout: next(answers))
        self.patch(ctl.time, "sleep", lambda seconds: None)
        out = Terminal()
        options = ctl.watch_parser().parse_args(["--until-online"])
        self.assertEqual(ctl.watch("http://x/RPC", None, 1.0, options, out), 0)
        self.assertEqual(out.getvalue(), "\r[" + "#" * 15 + "." * 15 + "]  50% 1/2 online\x1b[K"
                                         "\r[" + "#" * 30 + "] 100% 2/2 online\x1b[K\n")


class CtlCompletionTests(TestCase):
    """``txuac-ctl completion bash`` sourced by a real bash: commands, options, states, and
    the method names of the server named on the line."""

    timeout = 60
    shell = "bash"

    def call(self, script: str, words: tuple[str, ...]) -> str:
        """The shell command that completes ``words`` with the sourced ``script`` and prints the choices."""
        words_text = " ".join(f"'{word}'" for word in words)
        return (f"source {script}; COMP_WORDS=(txuac-ctl {words_text}); COMP_CWORD={len(words)}; _txuac_ctl; "
                'printf "%s\\n" "${COMPREPLY[@]}"')

    @defer.inlineCallbacks
    def complete(self, *words: str, **variables: str) -> list[str]:
        shell = shutil.which(self.shell)
        if shell is None:
            raise SkipTest(f"{self.shell} is not installed")
        status, script, _ = yield run_ctl("completion", self.shell)
        self.assertEqual(status, 0)
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(script)
        env = ctl_environment(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
                              **variables)
        out, err, code = yield utils.getProcessOutputAndValue(shell, ["-f", "-c", self.call(path, words)],
                                                              env=env, path=ROOT)
        self.assertEqual((code, err), (0, b""))
        return out.decode().split()

    @defer.inlineCallbacks
    def test_words(self):
        self.assertEqual((yield self.complete("acc")), ["accounts"])
        self.assertEqual((yield self.complete("accounts", "--state", "f")), ["failed"])
        self.assertEqual((yield self.complete("--until")), ["--until-online"])
        status, _, err = yield run_ctl("completion", "tcsh")
        self.assertEqual((status, err.strip()),
                         (2, "txuac-ctl: completion for 'tcsh' is not available (bash and zsh are)"))

    @defer.inlineCallbacks
    def test_method_names_from_the_server(self):
        service = yield start_service(self, None, rpc={"token": TOKEN})
        url = f"http://127.0.0.1:{service.rpc.port}/RPC"
        self.assertEqual((yield self.complete("--url", url, "--token", TOKEN, "uac.reg_d")),
                         ["uac.reg_disable", "uac.reg_dump"])
        self.assertEqual((yield self.complete("--url", url, "--token", TOKEN, "core.v")), ["core.version"])


class ZshCompletionTests(CtlCompletionTests):
    """``txuac-ctl completion zsh`` in a real zsh (``zsh -f``: no user files). compadd and
    _files exist only inside a completion widget, so stand-ins print what would be offered,
    filtered by the word being completed as compadd does."""

    shell = "zsh"

    def call(self, script: str, words: tuple[str, ...]) -> str:
        words_text = " ".join(f"'{word}'" for word in words)
        return ("compadd() { local w; shift; for w in \"$@\"; do [[ $w == ${PREFIX}* ]] && print -r -- $w; done; "
                "return 0; }; _files() { print -r -- '(files)'; }; "
                f"source {script}; words=(txuac-ctl {words_text}); CURRENT={len(words) + 1}; "
                f"PREFIX='{words[-1]}'; _txuac_ctl; true")

    @defer.inlineCallbacks
    def test_files_after_config(self):
        self.assertEqual((yield self.complete("--config", "")), ["(files)"])


class CtlSampleConfigTests(TestCase):
    @defer.inlineCallbacks
    def test_sample_config_is_the_shipped_one_and_loads(self):
        status, out, err = yield run_ctl("sample-config")
        self.assertEqual((status, err), (0, ""))
        with open(os.path.join(ROOT, "conf", "uac.toml"), encoding="utf-8") as f:
            self.assertEqual(out, f.read())
        self.assertEqual(load_printed_config(self, out).rpc.listen, "tcp:5064:interface=127.0.0.1")

    def test_installed_copy_first(self):
        prefix = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(prefix, "share", "txuac"))
        with open(os.path.join(prefix, "share", "txuac", "uac.toml"), "w") as f:
            f.write("# installed\n")
        self.patch(sys, "prefix", prefix)
        self.assertEqual(ctl.sample_config_path(), os.path.join(prefix, "share", "txuac", "uac.toml"))
