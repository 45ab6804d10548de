"""The account-level RPC methods over every worker (``[core] workers`` > 1).

Each worker registers only its share of the accounts, and only worker 0 serves the admin
interfaces. So that ``uac.reg_dump`` and the other ``uac.*`` methods still see every
account, workers 1..N-1 answer worker 0 on a UNIX socket of their own
(``WorkerRPCService``: one JSON object a line each way, their own method table behind it),
and worker 0's methods ask them (``fan_out``):

- ``uac.reg_dump``: every worker's records, worker 0's first;
- ``uac.reg_info``/``reg_enable``/``reg_disable``/``reg_register``/``reg_unregister``: the
  worker that has the record (by ``l_uuid``: its owner; by another attribute: the first
  worker that finds it), 404 when none has it;
- ``uac.reg_refresh``, ``uac.reg_remove``, ``uac.reg_add``: the owner of the ``l_uuid``;
- ``uac.reg_reload``, ``uac.reg_active``: every worker (``reg_active`` answers worker 0's
  old and new mode).

Other methods (counters, ``stats.get_statistics``, ``/metrics``) stay worker 0's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from txuac.admin.rpc import Dispatcher, RPCError

log = Logger()

# A whole uac.reg_dump of a worker's share is one line.
MAX_LINE = 512 * 1024 * 1024
CALL_TIMEOUT = 30.0

FOUND_BY_FILTER = ("uac.reg_info", "uac.reg_enable", "uac.reg_disable", "uac.reg_register", "uac.reg_unregister")
BY_L_UUID = ("uac.reg_refresh", "uac.reg_remove", "uac.reg_add")  # the l_uuid is the first parameter
EVERY_WORKER = ("uac.reg_reload", "uac.reg_active")


def worker_socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"worker-{index}.sock")


class _Answering(LineOnlyReceiver):
    """A worker's side: ``{"method": ..., "params": [...]}`` in, ``{"result": ...}`` or
    ``{"error": {"code", "message", "data"}}`` out, one line each."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            d = self.factory.dispatcher.run(request["method"], request.get("params", []), "worker 0")
        except (ValueError, KeyError, TypeError) as e:
            d = defer.fail(RPCError(400, "Bad worker request", data=str(e)[:200]))
        d.addCallbacks(lambda result: {"result": result}, _error_answer)
        d.addCallback(lambda answer: self.sendLine(json.dumps(answer).encode()))


def _error_answer(failure) -> dict:
    if failure.check(RPCError):
        error = failure.value
        return {"error": {"code": error.code, "message": error.message, "data": error.data}}
    log.failure("worker RPC failed", failure)
    return {"error": {"code": 500, "message": "Internal error", "data": None}}


class WorkerRPCService(service.Service):
    """In workers 1..N-1: ``dispatcher``'s methods for worker 0 on the UNIX socket ``path``."""

    def __init__(self, dispatcher: Dispatcher, path: str, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.path = path
        self.factory = protocol.Factory.forProtocol(_Answering)
        self.factory.dispatcher = dispatcher
        self._port = None

    def startService(self) -> None:
        super().startService()
        if os.path.exists(self.path):
            os.unlink(self.path)  # left by this worker's previous run
        self._port = self.reactor.listenUNIX(self.path, self.factory, mode=0o600)

    def stopService(self):
        super().stopService()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None


class _Asking(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self) -> None:
        self.answer: defer.Deferred = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        if not self.answer.called:
            self.answer.callback(json.loads(line))
        self.transport.loseConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if not self.answer.called:
            self.answer.errback(reason)

    def lineLengthExceeded(self, line):
        self.connectionLost(protocol.connectionDone)
        return super().lineLengthExceeded(line)


class WorkerPeers:
    """Worker 0's side: calls a method of worker ``index`` (1..count-1)."""

    def __init__(self, directory: str, count: int, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.directory = directory
        self.others = list(range(1, count))

    @defer.inlineCallbacks
    def call(self, index: int, method: str, params: list):
        """The result, or an RPCError: the worker's own, or 503 when it cannot be asked."""
        endpoint = UNIXClientEndpoint(self.reactor, worker_socket_path(self.directory, index), timeout=5)
        try:
            asking = yield endpoint.connect(protocol.Factory.forProtocol(_Asking))
            asking.sendLine(json.dumps({"method": method, "params": params}).encode())
            answer = yield asking.answer.addTimeout(CALL_TIMEOUT, self.reactor)
        except Exception as e:  # noqa: BLE001 - any failure to reach the worker is the same answer
            raise RPCError(503, "Worker not available", data=f"worker {index}: {e}") from None
        if "error" in answer:
            error = answer["error"]
            raise RPCError(error["code"], error["message"], data=error.get("data"))
        return answer["result"]


def fan_out(dispatcher: Dispatcher, peers: WorkerPeers, worker_of: Callable[[str], int]) -> None:
    """Make ``dispatcher``'s account-level methods (worker 0's) cover every worker's accounts;
    ``worker_of(l_uuid)`` is the worker that registers an account."""
    if "uac.reg_dump" not in dispatcher.methods:
        return
    _wrap(dispatcher, "uac.reg_dump", lambda local: _dump_all(local, peers))
    for name in FOUND_BY_FILTER:
        _wrap(dispatcher, name, lambda local, name=name: _first_found(local, peers, name, worker_of))
    for name in BY_L_UUID:
        _wrap(dispatcher, name, lambda local, name=name: _at_owner(local, peers, name, worker_of))
    for name in EVERY_WORKER:
        _wrap(dispatcher, name, lambda local, name=name: _everywhere(local, peers, name))


def _wrap(dispatcher: Dispatcher, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    method = dispatcher.methods[name]
    dispatcher.methods[name] = dataclasses.replace(method, function=make(method.function))


def _dump_all(local, peers: WorkerPeers):
    @defer.inlineCallbacks
    def reg_dump():
        records = list((yield defer.maybeDeferred(local)))
        for index in peers.others:
            records += yield peers.call(index, "uac.reg_dump", [])
        return records
    return reg_dump


def _first_found(local, peers: WorkerPeers, name: str, worker_of):
    @defer.inlineCallbacks
    def by_filter(attr, val):
        workers = [0, *peers.others]
        if attr == "l_uuid" and isinstance(val, str):
            workers = [worker_of(val)]
        for index in workers:
            try:
                if index == 0:
                    result = yield defer.maybeDeferred(local, attr, val)
                else:
                    result = yield peers.call(index, name, [attr, val])
            except RPCError as e:
                if e.code == 404 and index != workers[-1]:
                    continue
                raise
            return result
    return by_filter


def _at_owner(local, peers: WorkerPeers, name: str, worker_of):
    def at_owner(l_uuid, *rest):
        index = worker_of(str(l_uuid))
        if index == 0:
            return local(l_uuid, *rest)
        return peers.call(index, name, [l_uuid, *rest])
    return at_owner


def _everywhere(local, peers: WorkerPeers, name: str):
    @defer.inlineCallbacks
    def everywhere(*params):
        result = yield defer.maybeDeferred(local, *params)
        for index in peers.others:
            yield peers.call(index, name, list(params))
        return result
    return everywhere
