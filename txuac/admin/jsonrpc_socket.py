"""jsonrpcs' datagram transport (kamcli's ``jsonrpc_socket``): one JSON-RPC request per
datagram on a UNIX datagram socket, the answer sent to the sender's own socket address,
from the one RPC method table. A sender without an address cannot be answered (its
request is still run, as a notification); an answer the sender's buffer cannot take is
dropped (datagram semantics), one too large for a datagram becomes an error answer."""

from __future__ import annotations

import json

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from txuac.admin.kamailio_json import kamailio_layout
from txuac.admin.local_files import clear_stale_socket, set_owner
from txuac.admin.rpc import Dispatcher, RPCError
from txuac.config import RPCSettings, parse_local_address
from txuac.errors import ConfigError
from txuac.ratelimitedlog import RateLimitedLog

log = Logger()

REPLY_TOO_LARGE = RPCError(500, "Reply too large for a datagram")


class JSONRPCDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, dispatcher: Dispatcher, path: str, warnings: RateLimitedLog) -> None:
        self.dispatcher = dispatcher
        self.path = path
        self.warnings = warnings

    def datagramReceived(self, data: bytes, address) -> None:
        sender = address if isinstance(address, str) and address else None
        peer = f"unix:{sender}" if sender else f"unix:{self.path}"
        d = self.dispatcher.handle(data, peer=peer)
        d.addCallback(self._send, sender)
        d.addErrback(lambda failure: log.failure("JSON-RPC socket: answering failed", failure))

    def _send(self, answer, sender: str | None) -> None:
        if sender is None or answer.body is None or self.transport is None:
            return
        try:
            self.transport.write(kamailio_layout(answer.body), sender)
        except error.MessageLengthError:
            body = json.dumps({"jsonrpc": "2.0", "error": REPLY_TOO_LARGE.as_json()}).encode() + b"\n"
            self.transport.write(body, sender)
        except OSError as e:
            self.warnings.emit(f"datagram answers on {self.path}", "JSON-RPC socket {path}: cannot answer {sender}: "
                               "{error}", path=self.path, sender=sender, error=e.strerror or str(e))


class JSONRPCSocketService(service.Service):
    """Listens on ``[rpc] jsonrpc_socket`` with ``jsonrpc_mode`` and owner."""

    name = "jsonrpc_socket"

    def __init__(self, dispatcher: Dispatcher, settings: RPCSettings, config_path: str, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.where = f"{config_path}: [rpc] jsonrpc_socket"
        _, self.path, _ = parse_local_address(settings.jsonrpc_socket, self.where, tcp=False)
        self.warnings = RateLimitedLog(log, reactor)
        self.protocol = JSONRPCDatagramProtocol(dispatcher, self.path, self.warnings)
        self.listening = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.listening is not None:
            return
        clear_stale_socket(self.path, self.where)
        try:
            self.listening = self.reactor.listenUNIXDatagram(self.path, self.protocol, mode=self.settings.jsonrpc_mode)
        except (OSError, error.CannotListenError) as e:
            raise ConfigError(f"{self.where}: cannot listen on {self.path}: {e}") from None
        set_owner(self.path, self.settings.jsonrpc_user, self.settings.jsonrpc_group, self.where)

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        log.info("JSON-RPC datagram socket listening on {path}", path=self.path)

    def stopService(self):
        super().stopService()
        self.warnings.flush()
        listening, self.listening = self.listening, None
        if listening is None:
            return defer.succeed(None)
        d = defer.maybeDeferred(listening.stopListening)
        d.addCallback(lambda _: clear_stale_socket(self.path, self.where))  # Twisted leaves a datagram socket's file
        return d
