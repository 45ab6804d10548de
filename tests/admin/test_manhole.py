"""The SSH manhole with OpenSSH's client against a running UACService on loopback.

ssh runs through reactor.spawnProcess so that the reactor serves the manhole meanwhile.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet import defer, error, protocol, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.accounts import make_row
from tests.support.peers import require_program
from tests.support.services import start_uac
from tests.support.stores import sqlite_uacreg
from txuac.admin.manhole import AuthorizedKeysFile, ManholeService, fingerprint, load_or_create_host_key
from txuac.config import settings_from_dict
from txuac.errors import ConfigError
from txuac.service import UACService

SSH_TIMEOUT = 20


@defer.inlineCallbacks
def eventually(predicate, timeout: float = 10.0):
    """Poll ``predicate`` without blocking the reactor until it is true; fail after ``timeout``."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"not true after {timeout} s: {predicate}")


def write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_client_key(directory: str, name: str) -> tuple[str, keys.Key]:
    """An Ed25519 key pair for ssh -i: the private key file's path and the key."""
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    path = os.path.join(directory, name)
    write_private(path, key.toString("OPENSSH"))
    with open(path + ".pub", "wb") as f:
        f.write(key.public().toString("OPENSSH", comment=name.encode()) + b"\n")
    return path, key


def authorized_line(key: keys.Key, comment: str = "operator") -> bytes:
    return key.public().toString("OPENSSH", comment=comment.encode()) + b"\n"


class SSHClientProcess(protocol.ProcessProtocol):
    """One ssh run: writes ``stdin`` (then closes it unless ``keep_stdin_open``), collects
    the output; ``ended`` fires with (out, err, exit code), or fails when ssh is still
    running after SSH_TIMEOUT seconds (it is killed then)."""

    def __init__(self, stdin: bytes, keep_stdin_open: bool = False):
        self.stdin = stdin
        self.keep_stdin_open = keep_stdin_open
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred = defer.Deferred()
        self._timeout = reactor.callLater(SSH_TIMEOUT, self._kill)

    def connectionMade(self):
        if self.stdin:
            self.transport.write(self.stdin)
        if not self.keep_stdin_open:
            self.transport.closeStdin()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def _kill(self):
        self.transport.signalProcess("KILL")

    def processEnded(self, reason):
        if not self._timeout.active():
            self.ended.errback(AssertionError(f"ssh still running after {SSH_TIMEOUT} s: {bytes(self.out)!r} "
                                              f"{bytes(self.err)!r}"))
            return
        self._timeout.cancel()
        code = reason.value.exitCode if reason.check(error.ProcessTerminated) else 0
        self.ended.callback((bytes(self.out), bytes(self.err), code))


class ManholeTestMixin:
    """A UACService with a SQLite uacreg store of two accounts and the manhole on a free port."""

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.key_path, self.key = make_client_key(self.directory, "operator")
        self.authorized_keys = os.path.join(self.directory, "authorized_keys")
        with open(self.authorized_keys, "wb") as f:
            f.write(b"# the manhole's operators\n" + authorized_line(self.key))
        self.host_key = os.path.join(self.directory, "manhole_host_key")
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def make_store(self):
        """Deferred[str]: a SQLite uacreg file with two accounts."""
        return sqlite_uacreg(self, [make_row("1000"), make_row("1001")],
                             os.path.join(self.directory, "uacreg.sqlite"))

    def document(self, store_path: str | None = None, listen: str = "tcp:0:interface=127.0.0.1") -> dict:
        document = {
            "core": {"listen": ["udp:127.0.0.1:0"]},
            "rpc": {"enabled": False},
            "manhole": {"listen": listen, "authorized_keys": self.authorized_keys, "host_key": self.host_key},
        }
        if store_path is not None:
            # reg_active = 0: the accounts are loaded but no REGISTER leaves.
            document["uac"] = {"reg_db_url": f"sqlite:///{store_path}", "reg_active": 0,
                               "reg_contact_addr": "127.0.0.1:5060"}
        return document

    @defer.inlineCallbacks
    def start(self, with_store: bool = True) -> UACService:
        store_path = (yield self.make_store()) if with_store else None
        service = start_uac(self, self.document(store_path))
        if service.registrant is not None:
            yield eventually(lambda: len(service.registrant.records) == 2)
        return service

    def port(self, service: UACService) -> int:
        return service.manhole.port.getHost().port

    def spawn_ssh(self, service: UACService, options: list[str], stdin: bytes = b"", user: str = "admin",
                  known_hosts: str = "/dev/null", keep_stdin_open: bool = False) -> SSHClientProcess:
        """OpenSSH's client to the manhole with ``options``, run by the reactor, without any
        of the user's configuration, agent or known hosts."""
        ssh = require_program("ssh")
        argv = [ssh, "-F", "/dev/null", "-p", str(self.port(service)),
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                *options, f"{user}@127.0.0.1"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.directory}
        client = SSHClientProcess(stdin, keep_stdin_open)
        reactor.spawnProcess(client, ssh, argv, env=env, path=self.directory)
        return client

    def run_ssh(self, service: UACService, options: list[str], stdin: bytes = b"",
                known_hosts: str = "/dev/null") -> defer.Deferred:
        """Fires with ssh's (stdout, stderr, exit code)."""
        return self.spawn_ssh(service, options, stdin, known_hosts=known_hosts).ended

    def key_options(self, key_path: str, host_checking: str = "no") -> list[str]:
        return ["-tt", "-i", key_path, "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no", "-o", f"StrictHostKeyChecking={host_checking}"]

    def logged(self, text: str) -> list[dict]:
        return [e for e in self.events if text in (e.get("log_format") or "")]


class ManholeLoginTests(ManholeTestMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_key_login_inspects_and_changes_a_record(self):
        service = yield self.start()
        self.assertNotEqual(service.registrant.records["1000"].expires, 1234)
        session = (b'print("records=%d" % len(registrant.records))\n'
                   b'registrant.records["1000"].expires = 1234\n'
                   b'print("expires=%d store=%s" % (registrant.records["1000"].expires, store is registrant.store))\n'
                   b'print("names=" + ",".join(n for n in ("uac", "stack", "settings", "reactor", "authenticator") '
                   b'if globals()[n] is not None))\n'
                   b'\x04')
        out, err, code = yield self.run_ssh(service, self.key_options(self.key_path), session)
        text = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, (text, err))  # Ctrl-D: a clean logout
        self.assertIn("records=2", text)
        self.assertIn("expires=1234 store=True", text)
        self.assertIn("names=uac,stack,settings,reactor,authenticator", text)
        self.assertIn("manhole. Names: uac, registrant, store, stack", text)  # the greeting
        self.assertEqual(service.registrant.records["1000"].expires, 1234)  # changed in the running service
        self.assertEqual(service.registrant.records["1001"].expires, 3600)
        [login] = self.logged("manhole login:")
        self.assertEqual(login["user"], "admin")
        self.assertEqual(login["fingerprint"], fingerprint(self.key))
        self.assertFalse(self.logged("manhole login refused"))

    @defer.inlineCallbacks
    def test_namespace_without_registrant(self):
        service = yield self.start(with_store=False)
        session = b'print("registrant=%r store=%r" % (registrant, store))\nprint(uac is not None and stack is uac.stack)\n\x04'
        out, err, code = yield self.run_ssh(service, self.key_options(self.key_path), session)
        text = out.decode("utf-8", "replace")
        self.assertIn("registrant=None store=None", text, (text, err))
        self.assertIn("True", text)

    @defer.inlineCallbacks
    def test_password_login_refused(self):
        service = yield self.start(with_store=False)
        options = ["-T", "-o", "PreferredAuthentications=password,keyboard-interactive",
                   "-o", "PubkeyAuthentication=no", "-o", "StrictHostKeyChecking=no"]
        out, err, code = yield self.run_ssh(service, options, b"print(1)\n")
        self.assertEqual(code, 255)
        # OpenSSH lists the methods the server offers: public keys only.
        self.assertIn(b"Permission denied (publickey)", err)
        yield eventually(lambda: self.logged("manhole login refused"))
        [refused] = self.logged("manhole login refused")
        self.assertEqual(refused["user"], "admin")
        self.assertFalse(self.logged("manhole login:"))

    @defer.inlineCallbacks
    def test_unknown_key_refused(self):
        service = yield self.start(with_store=False)
        stranger_path, stranger = make_client_key(self.directory, "stranger")
        out, err, code = yield self.run_ssh(service, self.key_options(stranger_path), b"print(1)\n\x04")
        self.assertEqual(code, 255)
        self.assertIn(b"Permission denied (publickey)", err)
        yield eventually(lambda: self.logged("manhole login refused"))
        [refused] = self.logged("manhole login refused")
        self.assertEqual(refused["methods"], "publickey")
        self.assertEqual(refused["fingerprints"], fingerprint(stranger))
        self.assertFalse(self.logged("manhole login:"))

    @defer.inlineCallbacks
    def test_authorized_keys_read_at_each_login(self):
        service = yield self.start(with_store=False)
        newcomer_path, newcomer = make_client_key(self.directory, "newcomer")
        with open(self.authorized_keys, "wb") as f:  # the operator's key revoked, a new one added
            f.write(authorized_line(newcomer, "newcomer"))
        out, err, code = yield self.run_ssh(service, self.key_options(self.key_path), b"\x04")
        self.assertEqual(code, 255)
        self.assertIn(b"Permission denied (publickey)", err)
        out, err, code = yield self.run_ssh(service, self.key_options(newcomer_path), b'print("in=%d" % 6)\n\x04')
        self.assertIn(b"in=6", out, err)

    @defer.inlineCallbacks
    def test_stop_closes_open_sessions(self):
        require_program("ssh")
        service = yield self.start(with_store=False)
        # A session that does not end by itself: stdin stays open until the service stops.
        client = self.spawn_ssh(service, self.key_options(self.key_path), b'print("ready")\n', keep_stdin_open=True)
        yield eventually(lambda: b"ready" in client.out.replace(b'print("ready")', b""))
        self.assertEqual(len(service.manhole.factory.open_connections), 1)
        yield service.manhole.stopService()
        self.assertEqual(service.manhole.factory.open_connections, set())
        out, err, code = yield client.ended
        self.assertIn(b"closed", err)


class HostKeyTests(ManholeTestMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_created_with_mode_0600_then_reused(self):
        self.assertFalse(os.path.exists(self.host_key))
        first = yield self.start(with_store=False)
        self.assertEqual(stat.S_IMODE(os.stat(self.host_key).st_mode), 0o600)
        created_fingerprint = fingerprint(first.manhole.host_key)
        [created] = self.logged("manhole host key created")
        self.assertEqual(created["fingerprint"], created_fingerprint)
        self.assertEqual(created["path"], self.host_key)
        self.assertEqual([name for name in os.listdir(self.directory) if name.startswith(".host-key-")], [])
        known_hosts = os.path.join(self.directory, "known_hosts")
        out, err, code = yield self.run_ssh(first, self.key_options(self.key_path, "accept-new"),
                                            b'print("first=%d" % 1)\n\x04', known_hosts=known_hosts)
        self.assertIn(b"first=1", out, err)
        port = self.port(first)
        yield first.stopService()

        document = self.document(listen=f"tcp:{port}:interface=127.0.0.1")
        second = start_uac(self, document)
        self.assertEqual(fingerprint(second.manhole.host_key), created_fingerprint)
        self.assertEqual(len(self.logged("manhole host key created")), 1)
        # OpenSSH agrees it is the same host: strict checking against the known_hosts entry.
        out, err, code = yield self.run_ssh(second, self.key_options(self.key_path, "yes"),
                                            b'print("second=%d" % 2)\n\x04', known_hosts=known_hosts)
        self.assertIn(b"second=2", out, err)

    def test_fingerprint_as_ssh_keygen_shows_it(self):
        ssh_keygen = require_program("ssh-keygen")
        path, key = make_client_key(self.directory, "shown")
        shown = subprocess.run([ssh_keygen, "-l", "-f", path + ".pub"], capture_output=True, check=True).stdout
        self.assertEqual(shown.split()[1].decode(), fingerprint(key))


class ManholeConfigErrorTests(ManholeTestMixin, SynchronousTestCase):
    """Errors that show only when the files are used are ConfigErrors naming the key."""

    def settings(self, **manhole):
        document = self.document()
        document["manhole"].update(manhole)
        return settings_from_dict(document, "uac.toml")

    def assertConfigError(self, make, key: str) -> str:
        with self.assertRaises(ConfigError) as raised:
            make()
        message = str(raised.exception)
        self.assertIn(f"uac.toml: [manhole] {key}", message)
        return message

    def test_authorized_keys_without_a_usable_key(self):
        with open(self.authorized_keys, "wb") as f:
            f.write(b"# nobody yet\n\nnot-a-key AAAA\n"
                    b'from="10.0.0.1" ' + authorized_line(self.key))  # options are not supported
        message = self.assertConfigError(lambda: ManholeService(self.settings(), None, reactor), "authorized_keys")
        self.assertIn("no usable public key", message)

    def test_private_key_in_authorized_keys_is_skipped(self):
        with open(self.authorized_keys, "wb") as f:
            f.write(self.key.toString("OPENSSH"))
        self.assertConfigError(lambda: ManholeService(self.settings(), None, reactor), "authorized_keys")

    def test_host_key_not_a_key(self):
        with open(self.host_key, "wb") as f:
            f.write(b"garbage\n")
        message = self.assertConfigError(lambda: ManholeService(self.settings(), None, reactor), "host_key")
        self.assertIn("not an SSH private key", message)

    def test_host_key_public_only(self):
        with open(self.host_key, "wb") as f:
            f.write(authorized_line(self.key))
        message = self.assertConfigError(lambda: ManholeService(self.settings(), None, reactor), "host_key")
        self.assertIn("public key", message)

    def test_host_key_unreadable(self):
        os.mkdir(self.host_key)  # unreadable as a file even for root
        message = self.assertConfigError(lambda: ManholeService(self.settings(), None, reactor), "host_key")
        self.assertIn("cannot read", message)

    def test_host_key_readable_by_others_is_warned_about(self):
        write_private(self.host_key, self.key.toString("OPENSSH"))
        os.chmod(self.host_key, 0o644)
        ManholeService(self.settings(), None, reactor)
        self.assertEqual(len(self.logged("can be read by other users")), 1)

    def test_host_key_directory_missing(self):
        host_key = os.path.join(self.directory, "missing", "host_key")
        manhole = ManholeService(self.settings(host_key=host_key), None, reactor)
        message = self.assertConfigError(manhole.privilegedStartService, "host_key")
        self.assertIn("cannot create", message)

    def test_existing_host_key_loaded(self):
        key, created = load_or_create_host_key(self.host_key, "here")
        self.assertTrue(created)
        again, created = load_or_create_host_key(self.host_key, "here")
        self.assertFalse(created)
        self.assertEqual(again, key)
        self.assertFalse(again.isPublic())

    def test_port_in_use(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            service = UACService(self.settings(listen=f"tcp:{port}:interface=127.0.0.1"), reactor)
            message = self.assertConfigError(service.manhole.privilegedStartService, "listen")
        self.assertIn("cannot listen", message)
        self.assertIsNone(service.manhole.port)

    def test_off_by_default(self):
        document = self.document()
        del document["manhole"]
        self.assertIsNone(UACService(settings_from_dict(document), reactor).manhole)

    def test_authorized_keys_file_skips_comments_and_bad_lines(self):
        other = keys.Key(ed25519.Ed25519PrivateKey.generate())
        with open(self.authorized_keys, "wb") as f:
            f.write(b"# comment\n\n" + authorized_line(self.key) + b"ssh-ed25519 !!!\n" + authorized_line(other))
        self.assertEqual(AuthorizedKeysFile(self.authorized_keys).read(), [self.key.public(), other.public()])

    def test_authorized_keys_file_parsed_again_when_changed(self):
        keys_file = AuthorizedKeysFile(self.authorized_keys)
        with open(self.authorized_keys, "ab") as f:
            f.write(b"ssh-ed25519 !!!\n")
        self.assertEqual(keys_file.read(), [self.key.public()])
        self.assertEqual(keys_file.read(), [self.key.public()])
        self.assertEqual(len(self.logged("not a public key this manhole accepts")), 1)  # parsed once
        other = keys.Key(ed25519.Ed25519PrivateKey.generate())
        with open(self.authorized_keys, "wb") as f:
            f.write(authorized_line(other))
        self.assertEqual(keys_file.read(), [other.public()])
        os.remove(self.authorized_keys)
        self.assertRaises(OSError, keys_file.read)
