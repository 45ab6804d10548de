# -*- test-case-name: tests.admin.test_manhole -*-
"""The SSH manhole: a Python shell inside the running service, for operators.

Public-key authentication only, against one OpenSSH ``authorized_keys`` file that is read
again at every login attempt (a key removed from it is refused at once, without a restart).
The SSH user name is only a label for the logs: any key in the file may log in as any name.
The host key is created (Ed25519, mode 0600) where ``host_key`` points when it is missing.

The shell runs in the reactor thread: a blocking expression stalls SIP while it runs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import tempfile

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application import service
from twisted.conch import interfaces as conch_interfaces
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.ssh import keys, transport, userauth
from twisted.conch.ssh.common import getNS
from twisted.cred import portal
from twisted.internet import defer, endpoints, error
from twisted.internet.error import ProcessDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txuac import __version__
from txuac.config import Settings, endpoint_is_local
from txuac.errors import ConfigError

log = Logger()

# The names every session starts with (docs/operating.rst, "Manhole"), and where they come from.
NAMESPACE_NAMES = ("uac", "registrant", "store", "stack", "authenticator", "settings", "reactor", "rpc")


def fingerprint(key: keys.Key) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` shows it: ``SHA256:`` and unpadded base64."""
    digest = hashlib.sha256(key.blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class AuthorizedKeysFile:
    """The public keys of an OpenSSH ``authorized_keys`` file, as it is at each lookup
    (parsed again when its inode, size or modification time changed).

    Lines with options before the key (``from="..." ssh-ed25519 ...``) are skipped with a
    warning: the restrictions they carry are not enforced here, so the key is not accepted.
    """

    def __init__(self, path: str):
        self.path = path
        self._version: tuple[int, int, int] | None = None
        self._keys: list[keys.Key] = []

    def read(self) -> list[keys.Key]:
        """The usable public keys of the file (OSError when it cannot be read)."""
        with open(self.path, "rb") as f:
            stat = os.fstat(f.fileno())
            version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if version != self._version:
                self._keys = self._parse(f)
                self._version = version
        return list(self._keys)

    def _parse(self, lines) -> list[keys.Key]:
        found = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                key = keys.Key.fromString(line)
            except (keys.BadKeyError, ValueError, IndexError, struct.error):
                log.warn("{path} line {line}: not a public key this manhole accepts (options before the "
                         "key are not supported); skipped", path=self.path, line=number)
                continue
            if not key.isPublic():
                log.warn("{path} line {line}: a private key; skipped", path=self.path, line=number)
                continue
            found.append(key)
        return found


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysDB:
    """``IAuthorizedKeysDB`` over an AuthorizedKeysFile: the same keys for every user name."""

    def __init__(self, keys_file: AuthorizedKeysFile):
        self.keys_file = keys_file

    def getAuthorizedKeys(self, username: bytes) -> list[keys.Key]:
        try:
            return self.keys_file.read()
        except OSError as e:
            log.error("manhole: cannot read {path}: {reason}; every login is refused until it can be read",
                      path=self.keys_file.path, reason=e.strerror or e)
            return []


class ManholeUserAuth(userauth.SSHUserAuthServer):
    """Conch's user authentication, logging each login, and each refused connection once
    (user, peer, methods tried, fingerprints of the keys offered): never a password."""

    def serviceStarted(self):
        super().serviceStarted()
        self._tried_methods: list[str] = []
        self._offered_keys: list[str] = []
        self._logged_in = False

    def tryAuth(self, kind: bytes, user: bytes, data: bytes):
        method = kind.decode("ascii", "replace")
        if kind != b"none" and method not in self._tried_methods:
            self._tried_methods.append(method)
        key_fingerprint = None
        if kind == b"publickey":
            key_fingerprint = self._offered_key(data)
        d = super().tryAuth(kind, user, data)
        d.addCallback(self._accepted, user, key_fingerprint)
        return d

    def _offered_key(self, data: bytes) -> str | None:
        try:
            _algorithm, blob, _ = getNS(data[1:], 2)
            key_fingerprint = fingerprint(keys.Key.fromString(blob))
        except (keys.BadKeyError, ValueError, IndexError, struct.error):
            return None  # conch refuses the malformed request itself; only the log misses the key
        if key_fingerprint not in self._offered_keys:
            self._offered_keys.append(key_fingerprint)
        return key_fingerprint

    def _accepted(self, result, user: bytes, key_fingerprint: str | None):
        self._logged_in = True
        log.info("manhole login: user {user!r} from {peer} with key {fingerprint}",
                 user=user.decode("utf-8", "replace"), peer=self._peer(), fingerprint=key_fingerprint)
        return result

    def _peer(self) -> str:
        address = self.transport.transport.getPeer()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        return f"{host}:{port}" if host is not None else str(address)

    def serviceStopped(self):
        super().serviceStopped()
        if not self._logged_in and self.user is not None:  # None: the client never asked to log in
            user = self.user.decode("utf-8", "replace") if self.user is not None else None
            log.warn("manhole login refused: user {user!r} from {peer}, methods tried: {methods}, "
                     "keys offered: {fingerprints}", user=user, peer=self._peer(),
                     methods=", ".join(self._tried_methods) or "none",
                     fingerprints=", ".join(self._offered_keys) or "none")


class _Pipe:
    """One side of the glue between the SSH channel and the terminal protocol."""

    def __init__(self, write, close):
        self.write = write
        self._close = close

    def writeSequence(self, data):
        self.write(b"".join(data))

    def loseConnection(self):
        self._close()


class ManholeSessionTransport(manhole_ssh.TerminalSessionTransport):
    """Conch's glue between the SSH channel and the terminal, ending the shell with exit
    status 0 (conch's closes the channel without one, and ssh then exits with 255)."""

    def __init__(self, proto, chainedProtocol, avatar, width, height):
        self.proto = proto
        self.avatar = avatar
        self.chainedProtocol = chainedProtocol
        channel = proto.session
        proto.makeConnection(_Pipe(chainedProtocol.dataReceived, lambda: avatar.conn.sendClose(channel)))
        chainedProtocol.makeConnection(_Pipe(proto.write, lambda: proto.processEnded(Failure(ProcessDone(0)))))
        chainedProtocol.terminalProtocol.terminalSize(width, height)


class ManholeSession(manhole_ssh.TerminalSession):
    """A terminal session that also follows window size changes and ends on EOF."""

    width, height = 80, 24  # without a pty request

    def openShell(self, proto):
        self._terminal = self.chainedProtocolFactory()
        self.transportFactory(proto, self._terminal, conch_interfaces.IConchUser(self.original),
                              self.width, self.height)

    def windowChanged(self, newWindowSize):
        self.height, self.width = newWindowSize[:2]
        terminal = getattr(self, "_terminal", None)
        if terminal is not None and terminal.terminalProtocol is not None:
            terminal.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self):
        terminal = getattr(self, "_terminal", None)
        if terminal is not None:
            terminal.loseConnection()


class ServiceManhole(manhole.ColoredManhole):
    """The colored Python shell, greeting with the names it holds."""

    greeted = False

    def terminalSize(self, width, height):
        # As RecvLine's, which clears the screen: the greeting goes after the clearing, once.
        self.terminal.eraseDisplay()
        self.terminal.cursorHome()
        self.width = width
        self.height = height
        if not self.greeted:
            self.greeted = True
            names = ", ".join(name for name in NAMESPACE_NAMES if self.namespace.get(name) is not None)
            self.terminal.write(f"txuac {__version__} manhole. Names: {names}. Ctrl-D leaves.".encode())
            self.terminal.nextLine()
        self.drawInputLine()


class ManholeServerTransport(transport.SSHServerTransport):
    """The server side of one SSH connection, known to its factory while it is open."""

    def connectionMade(self):
        super().connectionMade()
        self.factory.open_connections.add(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.connection_lost(self)


class ManholeFactory(manhole_ssh.ConchFactory):
    protocol = ManholeServerTransport

    def __init__(self, portal_, host_key: keys.Key):
        super().__init__(portal_)
        self.services = {**self.services, b"ssh-userauth": ManholeUserAuth}
        self.noisy = False
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.open_connections: set = set()
        self._closing: dict = {}

    def connection_lost(self, connection) -> None:
        self.open_connections.discard(connection)
        waiting = self._closing.pop(connection, None)
        if waiting is not None:
            waiting.callback(None)

    def close_connections(self) -> defer.Deferred:
        """Close every open connection; fires when all are gone."""
        waits = []
        for connection in list(self.open_connections):
            d = self._closing[connection] = defer.Deferred()
            waits.append(d)
            connection.transport.loseConnection()
        return defer.gatherResults(waits)


def load_or_create_host_key(path: str, where: str) -> tuple[keys.Key, bool]:
    """The private host key at ``path``; a new Ed25519 key written there (mode 0600) when
    the file does not exist. Returns the key and whether it was created."""
    try:
        return _load_host_key(path, where), False
    except FileNotFoundError:
        pass
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".host-key-", dir=directory)  # mkstemp creates it 0600
    except OSError as e:
        raise ConfigError(f"{where}: cannot create {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("OPENSSH"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        os.unlink(temporary)
        raise ConfigError(f"{where}: cannot create {path}: {e.strerror or e}") from None
    return key, True


def _load_host_key(path: str, where: str) -> keys.Key:
    """The private key in ``path`` (FileNotFoundError when there is none yet)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror or e}") from None
    try:
        key = keys.Key.fromString(data)
    except keys.EncryptedKeyError:
        raise ConfigError(f"{where}: {path} is encrypted with a passphrase; the manhole needs a "
                          "key without one") from None
    except (keys.BadKeyError, ValueError, IndexError, struct.error) as e:
        raise ConfigError(f"{where}: {path} is not an SSH private key: {e}") from None
    if key.isPublic():
        raise ConfigError(f"{where}: {path} holds a public key; the host key must be the private one")
    if os.stat(path).st_mode & 0o077:
        log.warn("manhole host key {path} can be read by other users than its owner (chmod 600 it)", path=path)
    return key


class ManholeService(service.Service):
    """An SSH server on ``[manhole] listen`` giving a Python shell whose names are the live
    objects of ``uac`` (a UACService).

    The authorized_keys file and an existing host key are checked by the constructor
    (ConfigErrors naming the key); a missing host key is created, and the socket bound,
    by privilegedStartService.
    """

    def __init__(self, settings: Settings, uac, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        if settings.manhole.listen is None:
            raise ConfigError(f"{settings.path}: [manhole] listen: not set, the manhole is off")
        self.settings = settings
        self.uac = uac
        self.reactor = reactor
        manhole_settings = settings.manhole
        self.keys_file = AuthorizedKeysFile(manhole_settings.authorized_keys)
        try:
            authorized = self.keys_file.read()
        except OSError as e:
            raise ConfigError(f"{self._where('authorized_keys')}: cannot read "
                              f"{manhole_settings.authorized_keys}: {e.strerror or e}") from None
        if not authorized:
            raise ConfigError(f"{self._where('authorized_keys')}: no usable public key in "
                              f"{manhole_settings.authorized_keys} (one 'ssh-ed25519 AAAA...' line per key, "
                              "without options)")
        try:
            self.host_key: keys.Key | None = _load_host_key(manhole_settings.host_key, self._where("host_key"))
        except FileNotFoundError:
            self.host_key = None  # created when the service starts
        self.port = None
        self.factory: ManholeFactory | None = None

    def _where(self, key: str) -> str:
        return f"{self.settings.path}: [manhole] {key}"

    def namespace(self) -> dict:
        """The names a new session starts with: the live objects, looked up at login."""
        uac = self.uac
        registrant = getattr(uac, "registrant", None)
        names = {
            "uac": uac,
            "registrant": registrant,
            "store": registrant.store if registrant is not None else None,
            "stack": uac.stack,
            "authenticator": getattr(uac, "authenticator", None),
            "settings": self.settings,
            "reactor": self.reactor,
            "rpc": getattr(uac, "rpc", None),
            "__name__": "__manhole__",
        }
        return names

    def _build_factory(self) -> ManholeFactory:
        realm = manhole_ssh.TerminalRealm()
        realm.sessionFactory = ManholeSession
        realm.transportFactory = ManholeSessionTransport
        realm.chainedProtocolFactory = lambda: insults.ServerProtocol(ServiceManhole, self.namespace())
        checker = SSHPublicKeyChecker(AuthorizedKeysDB(self.keys_file))  # the only checker: no passwords
        return ManholeFactory(portal.Portal(realm, [checker]), self.host_key)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is not None:
            return
        if self.host_key is None:
            path = self.settings.manhole.host_key
            self.host_key, created = load_or_create_host_key(path, self._where("host_key"))
            if created:
                log.info("manhole host key created: {path} ({fingerprint})", path=path,
                         fingerprint=fingerprint(self.host_key))
        self.factory = self._build_factory()
        listen = self.settings.manhole.listen
        try:
            endpoint = endpoints.serverFromString(self.reactor, listen)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{self._where('listen')}: {listen!r}: {e}") from None
        outcome: list = []
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise ConfigError(f"{self._where('listen')}: {listen!r}: the endpoint did not bind at once")
        if isinstance(outcome[0], Failure):
            failure = outcome[0]
            if failure.check(error.CannotListenError):
                socket_error = failure.value.socketError
                reason = getattr(socket_error, "strerror", None) or socket_error
            else:
                reason = failure.getErrorMessage()
            raise ConfigError(f"{self._where('listen')}: cannot listen on {listen!r}: {reason}")
        self.port = outcome[0]
        address = self.port.getHost()
        if hasattr(address, "port"):
            shown = f"{address.host}:{address.port}"
        else:  # a UNIX socket
            name = getattr(address, "name", address)
            shown = os.fsdecode(name) if isinstance(name, bytes) else str(name)
        log.info("manhole listening on {address} (host key {fingerprint})", address=shown,
                 fingerprint=fingerprint(self.host_key))
        if not endpoint_is_local(listen, self._where("listen")):
            log.warn("manhole listening beyond this host ({listen!r}): whoever holds an authorized key "
                     "runs Python in txuac from there", listen=listen)

    def startService(self) -> None:
        self.privilegedStartService()  # not called first when embedded with plain startService()
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        """Stop listening and close the open sessions."""
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            yield port.stopListening()
        if self.factory is not None:
            yield self.factory.close_connections()

