"""The admin HTTP server: ``POST /RPC`` (JSON-RPC 2.0) and ``GET /metrics``.

Listens on ``[rpc] listen`` (a Twisted endpoint string, loopback by default). With
``[rpc] token`` set, every request needs ``Authorization: Bearer <token>`` (compared
in constant time). Request bodies larger than ``[rpc] max_request_size`` are refused
with 413 without being kept in memory.
"""

from __future__ import annotations

import hmac
import io

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from txuac.admin.rpc import Answer, Dispatcher
from txuac.admin.uac_rpc import UACMethods
from txuac.config import RPCSettings
from txuac.errors import ConfigError

log = Logger()

JSON = b"application/json"
# Bodies are counted and dropped beyond the limit; a client that keeps sending far
# beyond it is cut off.
ABORT_FACTOR = 16


class LimitedRequest(server.Request):
    """A request whose body is kept only up to the site's ``max_request_size``."""

    too_large = False
    _received = 0

    def gotLength(self, length):
        limit = self.channel.site.max_request_size
        if length is not None and length > limit:
            self.too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._received += len(data)
        limit = self.channel.site.max_request_size
        if self._received > limit:
            if not self.too_large:
                self.too_large = True
                self.content = io.BytesIO()  # what came so far is dropped
            if self._received > limit * ABORT_FACTOR and self.channel.transport is not None:
                self.channel.transport.abortConnection()
            return
        super().handleContentChunk(data)


class AdminSite(server.Site):
    requestFactory = LimitedRequest

    def __init__(self, root, max_request_size: int):
        super().__init__(root, parsePOSTFormSubmission=False)
        self.max_request_size = max_request_size
        self.displayTracebacks = False
        self.noisy = False

    def log(self, request):
        """No access log line per request (scrapes every few seconds would fill the log)."""


def _plain(request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return (text + "\n").encode("utf-8")


class _Error(resource.Resource):
    """Answers every request with one status and message."""

    isLeaf = True

    def __init__(self, status: int, text: str, headers: dict[bytes, bytes] | None = None):
        super().__init__()
        self.status = status
        self.text = text
        self.headers = headers or {}

    def render(self, request):
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return _plain(request, self.status, self.text)


class AdminRoot(resource.Resource):
    """``/RPC`` and ``/metrics`` behind the token check."""

    def __init__(self, token: str | None):
        super().__init__()
        self._token = token.encode("utf-8") if token is not None else None

    def getChildWithDefault(self, path, request):
        if self._token is not None and not self._authorized(request):
            return _Error(401, "a valid 'Authorization: Bearer <token>' header is required",
                          {b"WWW-Authenticate": b'Bearer realm="txuac"'})
        if getattr(request, "too_large", False):
            return _Error(413, "request body too large")
        return super().getChildWithDefault(path, request)

    def _authorized(self, request) -> bool:
        header = request.getHeader(b"authorization") or b""
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self._token)

    def render(self, request):
        return _plain(request, 404, "not found: the JSON-RPC endpoint is POST /RPC")


class RPCResource(resource.Resource):
    """``POST /RPC``: one JSON-RPC request or a batch."""

    isLeaf = True

    def __init__(self, dispatcher: Dispatcher):
        super().__init__()
        self.dispatcher = dispatcher

    def render_POST(self, request):
        body = request.content.read()
        d = self.dispatcher.handle(body)
        d.addCallback(self._send, request)
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _send(self, answer: Answer, request) -> None:
        if request._disconnected:
            return
        request.setResponseCode(answer.status)
        if answer.body is not None:
            request.setHeader(b"Content-Type", JSON)
            request.write(answer.body)
        request.finish()

    def _failed(self, failure: Failure, request) -> None:
        log.failure("RPC request failed", failure)
        if not request._disconnected:
            request.write(_plain(request, 500, "internal error; see the log"))
            request.finish()


class MetricsResource(resource.Resource):
    """``GET /metrics``: the Prometheus text exposition."""

    isLeaf = True

    def __init__(self, metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"Content-Type", self.metrics.content_type.encode("ascii"))
        return self.metrics.render()


def build_root(dispatcher: Dispatcher, metrics, settings: RPCSettings) -> resource.Resource:
    """The resource tree of the admin server."""
    root = AdminRoot(settings.token)
    root.putChild(b"RPC", RPCResource(dispatcher))
    root.putChild(b"metrics", MetricsResource(metrics))
    return root


class AdminWebService(service.Service):
    """The admin HTTP server of a UACService; ``port`` is the bound port once started.

    The metrics and the site are made once, here: a stop and start only closes and
    reopens the listening port, so counters go on and one registrant observer is kept.
    """

    name = "rpc"

    def __init__(self, uac, reactor=None):
        from txuac.admin.metrics import Metrics

        if reactor is None:
            from twisted.internet import reactor
        self.uac = uac
        self.reactor = reactor
        self.settings: RPCSettings = uac.settings.rpc
        self.dispatcher = Dispatcher()
        self.methods = UACMethods(uac, reactor)
        self.methods.register(self.dispatcher)
        self.metrics = Metrics(uac)  # before the registrant starts: start-up registrations count
        self.site = AdminSite(build_root(self.dispatcher, self.metrics, self.settings), self.settings.max_request_size)
        self.listening = None  # the IListeningPort
        self._bound = False

    @property
    def port(self) -> int | None:
        """The TCP port bound (a ``tcp:0`` listen gets a real one), or None."""
        if self.listening is None:
            return None
        return getattr(self.listening.getHost(), "port", None)

    def privilegedStartService(self) -> None:
        """Bind (as root under twistd, before privileges are shed); a failure is a ConfigError."""
        super().privilegedStartService()
        if self._bound:
            return
        self._bound = True
        endpoint = endpoints.serverFromString(self.reactor, self.settings.listen)
        outcome: list = []
        endpoint.listen(self.site).addBoth(outcome.append)
        if not outcome:
            raise ConfigError(f"{self.uac.settings.path}: [rpc] listen: {self.settings.listen!r} did not bind "
                              "at once (only stream endpoints that bind at once are supported)")
        if isinstance(outcome[0], Failure):
            self._bound = False
            error = outcome[0].value
            reason = getattr(getattr(error, "socketError", None), "strerror", None) or error
            raise ConfigError(f"{self.uac.settings.path}: [rpc] listen: cannot bind "
                              f"{self.settings.listen}: {reason}") from None
        self.listening = outcome[0]

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        self.methods.started_at = self.reactor.seconds()
        address = self.listening.getHost()
        where = f"{address.host}:{address.port}" if hasattr(address, "port") else str(getattr(address, "name", address))
        log.info("JSON-RPC listening on {address} (POST /RPC, GET /metrics)", address=where)
        if self.settings.token is None:
            log.warn("[rpc] token is not set: any local user can administer txuac through {listen}",
                     listen=self.settings.listen)

    def stopService(self):
        super().stopService()
        self._bound = False
        listening, self.listening = self.listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)
