"""jsonrpcs' FIFO transport (what ``kamctl rpc`` writes to), answering from the one RPC
method table.

A request is a JSON object written to the FIFO; it ends where its braces balance (as
jsonrpcs reads it: braces inside strings do not count). Its ``reply_name`` names a FIFO
in the reply directory (``/tmp/`` by default, as jsonrpcs) that the client made and
reads; the answer is written there and the FIFO closed. A reply name with a path in it,
or a file there that is not a FIFO, is refused; a client not reading yet is tried again
for ``OPEN_RETRIES`` x ``OPEN_RETRY_DELAY`` s, one that stops reading is dropped after
``CLIENT_TIMEOUT`` s. Input longer than ``[rpc] max_request_size`` is dropped up to the
next newline; at most ``MAX_PENDING_REPLIES`` answers wait for their readers. Answers are
laid out as jsonrpcs lays them out (txuac.admin.kamailio_json).
"""

from __future__ import annotations

import errno
import json
import os
import stat

from twisted.application import service
from twisted.internet import abstract, defer, fdesc
from twisted.logger import Logger

from txuac.admin.kamailio_json import kamailio_layout
from txuac.admin.local_files import set_owner
from txuac.admin.rpc import Dispatcher
from txuac.config import RPCSettings
from txuac.errors import ConfigError
from txuac.ratelimitedlog import RateLimitedLog

log = Logger()

OPEN_RETRIES = 25
OPEN_RETRY_DELAY = 0.08
CLIENT_TIMEOUT = 10.0
MAX_PENDING_REPLIES = 32


class RequestSplitter:
    """Cuts JSON objects out of a byte stream by balancing braces outside strings.
    ``feed(data)`` returns the complete requests; an object longer than ``max_size``
    is dropped up to the next newline and counted in ``dropped``."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.dropped = 0
        self._current = bytearray()
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        requests = []
        position, end = 0, len(data)
        while position < end:
            if self._skipping:  # jump to the end of the line being dropped
                newline = data.find(b"\n", position)
                if newline < 0:
                    break
                self._skipping = False
                position = newline + 1
                continue
            if not self._current:  # jump over text between objects
                opening = data.find(b"{", position)
                if opening < 0:
                    break
                position = opening
            octet = data[position]
            position += 1
            self._current.append(octet)
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif octet == 0x5C:
                    self._escaped = True
                elif octet == 0x22:
                    self._in_string = False
            elif octet == 0x22:
                self._in_string = True
            elif octet == 0x7B:
                self._depth += 1
            elif octet == 0x7D:
                self._depth -= 1
                if self._depth == 0:
                    requests.append(bytes(self._current))
                    self._reset()
                    continue
            if len(self._current) > self.max_size:
                self.dropped += 1
                self._reset()
                self._skipping = octet != 0x0A
        return requests

    def _reset(self) -> None:
        self._current = bytearray()
        self._depth = 0
        self._in_string = False
        self._escaped = False


class _FIFOReader(abstract.FileDescriptor):
    def __init__(self, fd: int, receive, reactor) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.receive = receive

    def fileno(self) -> int:
        return self.fd

    def doRead(self):
        return fdesc.readFromFD(self.fd, self.receive)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)


class _ReplyWriter(abstract.FileDescriptor):
    """Writes one answer into a reply FIFO without blocking, then closes it."""

    def __init__(self, fd: int, reactor, done) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.done = done
        self.connected = 1

    def fileno(self) -> int:
        return self.fd

    def writeSomeData(self, data):
        return fdesc.writeToFD(self.fd, data)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.done()


class JSONRPCFIFOService(service.Service):
    """Reads ``[rpc] jsonrpc_fifo`` (made if missing, with ``jsonrpc_mode`` and owner)."""

    name = "jsonrpc_fifo"

    def __init__(self, dispatcher: Dispatcher, settings: RPCSettings, config_path: str, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.dispatcher = dispatcher
        self.settings = settings
        self.path = settings.jsonrpc_fifo
        self.where = f"{config_path}: [rpc] jsonrpc_fifo"
        self.warnings = RateLimitedLog(log, reactor)
        self.splitter = RequestSplitter(settings.max_request_size)
        self.pending = 0  # answers waiting for their reader
        self.reader: _FIFOReader | None = None
        self._write_fd = -1

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.reader is not None:
            return
        try:
            try:
                mode = os.lstat(self.path).st_mode
            except FileNotFoundError:
                os.mkfifo(self.path, self.settings.jsonrpc_mode)
            else:
                if not stat.S_ISFIFO(mode):
                    raise ConfigError(f"{self.where}: {self.path} exists and is not a FIFO")
            os.chmod(self.path, self.settings.jsonrpc_mode)
            set_owner(self.path, self.settings.jsonrpc_user, self.settings.jsonrpc_group, self.where)
            read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            # Our own writer keeps the FIFO open: no end of file when a client closes.
            self._write_fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise ConfigError(f"{self.where}: cannot use {self.path}: {e.strerror}") from None
        self.reader = _FIFOReader(read_fd, self._received, self.reactor)

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        self.reader.startReading()
        log.info("JSON-RPC FIFO (kamctl) reading {path}", path=self.path)

    def stopService(self):
        super().stopService()
        self.warnings.flush()
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.stopReading()
            os.close(reader.fd)
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        return defer.succeed(None)

    def _received(self, data: bytes) -> None:
        dropped = self.splitter.dropped
        requests = self.splitter.feed(data)
        if self.splitter.dropped > dropped:
            self._warn("too large", "JSON-RPC FIFO {path}: dropped a request longer than {size} octets",
                       size=self.settings.max_request_size)
        for body in requests:
            self._handle(body)

    def _warn(self, kind: str, format: str, **fields) -> None:
        self.warnings.emit(f"FIFO {kind}", format, path=self.path, **fields)

    def _handle(self, body: bytes) -> None:
        try:
            reply_name = json.loads(body).get("reply_name")
        except (ValueError, UnicodeDecodeError, RecursionError, AttributeError):
            reply_name = None
        if not isinstance(reply_name, str) or not reply_name or "/" in reply_name or "\\" in reply_name \
                or reply_name in (".", ".."):
            self._warn("reply name", "JSON-RPC FIFO {path}: refused a request without a usable reply_name "
                                     "(a file name in {reply_dir})", reply_dir=self.settings.jsonrpc_fifo_reply_dir)
            return
        if self.pending >= MAX_PENDING_REPLIES:
            self._warn("busy", "JSON-RPC FIFO {path}: dropped a request: {count} answers wait for their readers",
                       count=self.pending)
            return
        self.pending += 1
        d = self.dispatcher.handle(body, peer=f"fifo:{self.path}")
        d.addCallback(lambda answer: self._reply(os.path.join(self.settings.jsonrpc_fifo_reply_dir, reply_name),
                                                 kamailio_layout(answer.body), OPEN_RETRIES))
        d.addErrback(lambda failure: (log.failure("JSON-RPC FIFO: answering failed", failure), self._done()))

    def _done(self) -> None:
        self.pending -= 1

    def _reply(self, path: str, body: bytes, retries: int) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ENXIO and retries > 0:  # the client has not opened it yet
                self.reactor.callLater(OPEN_RETRY_DELAY, self._reply, path, body, retries - 1)
                return
            self._warn("reply open", "JSON-RPC FIFO {path}: cannot answer into {reply}: {error}",
                       reply=path, error=e.strerror)
            self._done()
            return
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            self._warn("reply open", "JSON-RPC FIFO {path}: cannot answer into {reply}: not a FIFO", reply=path)
            self._done()
            return
        writer = _ReplyWriter(fd, self.reactor, self._done)
        timer = self.reactor.callLater(CLIENT_TIMEOUT, self._stalled, writer, path)
        writer.done = lambda: (timer.cancel() if timer.active() else None, self._done())
        writer.write(body)
        writer.loseConnection()

    def _stalled(self, writer: _ReplyWriter, path: str) -> None:
        self._warn("stalled", "JSON-RPC FIFO {path}: the reader of {reply} did not read its answer for {timeout} s",
                   reply=path, timeout=CLIENT_TIMEOUT)
        writer.connectionLost(None)
