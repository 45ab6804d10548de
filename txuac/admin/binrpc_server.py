"""The binrpc server (Kamailio's ctl module, what ``kamcmd`` talks to) over a UNIX stream
socket or loopback TCP, answering from the one RPC method table.

Requests on a connection are answered in order, one at a time. A packet that is not
binrpc, or announces a body longer than ``[rpc] max_request_size``, is answered with a
fault and the connection closed (a stream cannot be resynchronised). A client that leaves
a packet unfinished, or stops reading its replies, is disconnected after
``CLIENT_TIMEOUT`` seconds; while its reply waits, nothing more is read from it. At most
``MAX_CONNECTIONS`` are open at once.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from txuac.admin import binrpc
from txuac.admin.local_files import clear_stale_socket, set_owner, unix_peer
from txuac.admin.rpc import (INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, Dispatcher,
                             RPCError)
from txuac.config import RPCSettings, parse_local_address
from txuac.errors import ConfigError
from txuac.ratelimitedlog import RateLimitedLog

log = Logger()

CLIENT_TIMEOUT = 10.0
MAX_CONNECTIONS = 64


def fault_of(error: dict, method: str) -> tuple[int, str]:
    """A JSON-RPC error object as ctl's fault: Kamailio's code and text for what ctl
    answers itself, the method's own code and message otherwise."""
    code, message = error["code"], error["message"]
    data = error.get("data")
    if code == METHOD_NOT_FOUND:
        return 500, f"command {method} not found"
    if code in (INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR):
        return 400, f"{message}: {data}" if data else message
    if code == INTERNAL_ERROR:
        return 500, "internal server error"
    return code, message


@implementer(IPushProducer)
class BinRPCProtocol(protocol.Protocol):
    """One client connection."""

    def __init__(self, server: BinRPCServer) -> None:
        self.server = server
        self.reader = binrpc.FrameReader(server.settings.max_request_size)
        self.queue: list[binrpc.Request] = []
        self.busy = False
        self.paused = False
        self.peer = "-"
        self._timer: Any = None

    def connectionMade(self) -> None:
        self.server.connections += 1
        self.peer = self.server.peer_of(self.transport)
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        try:
            packets = self.reader.feed(data)
            requests = [binrpc.parse_request(header, body) for header, body in packets]
        except binrpc.BinRPCError as e:
            self._refuse(str(e))
            return
        self.queue.extend(requests)
        self._arm_timer()
        self._next()

    def _refuse(self, reason: str) -> None:
        self.server.warnings.emit(f"bad binrpc from {self.server.address}",
                                  "binrpc: closed a connection from {peer}: {reason}", peer=self.peer, reason=reason)
        self.transport.write(binrpc.build_fault(0, 400, f"bad request: {reason}"))
        self.transport.loseConnection()
        self.queue.clear()

    def _next(self) -> None:
        if self.busy or not self.queue or self.transport is None or self.paused:
            return
        request = self.queue.pop(0)
        self.busy = True
        if len(self.queue) > 16:
            self.transport.pauseProducing()  # read no more while these wait
        d = self.server.dispatcher.run(request.method, request.params, peer=self.peer)
        d.addCallbacks(lambda result: {"result": result},
                       lambda failure: {"error": failure.value.as_json()} if failure.check(RPCError) else failure)
        d.addCallback(self._answer, request)
        d.addErrback(self._failed, request)

    def _answer(self, response: dict, request: binrpc.Request) -> None:
        cookie = request.cookie
        error = response.get("error")
        if error is None:
            try:
                packet = binrpc.build_reply(cookie, response.get("result"))
            except binrpc.BinRPCError as e:
                log.error("binrpc: cannot encode the answer: {error}", error=str(e))
                packet = binrpc.build_fault(cookie, 500, "internal server error")
        else:
            packet = binrpc.build_fault(cookie, *fault_of(error, request.method))
        self.busy = False
        if self.transport is None or not self.connected:
            return
        self.transport.write(packet)
        self._arm_timer()
        if not self.queue and not self.paused:
            self.transport.resumeProducing()
        self._next()

    def _failed(self, failure, request: binrpc.Request) -> None:
        log.failure("binrpc: answering failed", failure)
        self._answer({"error": {"code": INTERNAL_ERROR, "message": ""}}, request)

    # While the transport cannot send (the client does not read), read nothing more.
    def pauseProducing(self) -> None:
        self.paused = True
        self.transport.pauseProducing()
        self._arm_timer()

    def resumeProducing(self) -> None:
        self.paused = False
        if len(self.queue) <= 16:
            self.transport.resumeProducing()
        self._arm_timer()
        self._next()

    def stopProducing(self) -> None:
        self.queue.clear()

    def _arm_timer(self) -> None:
        """A timeout runs while a packet is unfinished or a reply waits to be read."""
        waiting = self.reader.pending > 0 or self.paused
        if waiting and self._timer is None:
            self._timer = self.server.reactor.callLater(CLIENT_TIMEOUT, self._timed_out)
        elif not waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        what = "did not read its reply" if self.paused else "left a packet unfinished"
        self.server.warnings.emit(f"binrpc timeouts on {self.server.address}",
                                  "binrpc: closed a connection from {peer}: it {what} for {timeout} s",
                                  peer=self.peer, what=what, timeout=CLIENT_TIMEOUT)
        self.queue.clear()
        self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.server.connections -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.queue.clear()


class BinRPCServer(protocol.Factory):
    def __init__(self, dispatcher: Dispatcher, settings: RPCSettings, address: str, reactor) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self.address = address
        self.reactor = reactor
        self.warnings = RateLimitedLog(log, reactor)
        self.connections = 0

    def buildProtocol(self, addr) -> BinRPCProtocol | None:
        if self.connections >= MAX_CONNECTIONS:
            self.warnings.emit(f"binrpc connections on {self.address}",
                               "binrpc: refused a connection on {address}: {count} are open already",
                               address=self.address, count=self.connections)
            return None  # Twisted closes it
        return BinRPCProtocol(self)

    def peer_of(self, transport) -> str:
        peer = transport.getPeer()
        if hasattr(peer, "port"):
            return f"{peer.host}:{peer.port}"
        return unix_peer(getattr(transport, "socket", None), self.address.partition(":")[2])


class BinRPCService(service.Service):
    """Listens on ``[rpc] binrpc``; bound in privilegedStartService (before twistd sheds root)."""

    name = "binrpc"

    def __init__(self, dispatcher: Dispatcher, settings: RPCSettings, config_path: str, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.where = f"{config_path}: [rpc] binrpc"
        self.factory = BinRPCServer(dispatcher, settings, settings.binrpc, reactor)
        self.listening = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.listening is not None:
            return
        kind, host_or_path, port = parse_local_address(self.settings.binrpc, self.where, tcp=True)
        try:
            if kind == "unix":
                clear_stale_socket(host_or_path, self.where)
                self.listening = self.reactor.listenUNIX(host_or_path, self.factory, mode=self.settings.binrpc_mode)
                set_owner(host_or_path, self.settings.binrpc_user, self.settings.binrpc_group, self.where)
            else:
                self.listening = self.reactor.listenTCP(port, self.factory, interface=host_or_path)
        except OSError as e:
            raise ConfigError(f"{self.where}: cannot listen on {self.settings.binrpc}: {e}") from None
        except Exception as e:  # CannotListenError carries the socket error
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{self.where}: cannot listen on {self.settings.binrpc}: {e}") from None

    @property
    def port(self) -> int | None:
        return getattr(self.listening.getHost(), "port", None) if self.listening is not None else None

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        log.info("binrpc (kamcmd) listening on {address}", address=self.settings.binrpc)

    def stopService(self):
        super().stopService()
        self.factory.warnings.flush()
        listening, self.listening = self.listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)
