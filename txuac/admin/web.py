"""The admin HTTP server: ``POST /RPC`` (JSON-RPC 2.0), ``GET /metrics`` and the status
page under ``/status`` (txuac.admin.status_page).

Listens on ``[rpc] listen`` (a Twisted endpoint string, loopback by default). Every
request, on any path, must name an allowed host in ``Host`` (the listener's own address
or one of ``[rpc] allowed_hosts``) and, when it carries ``Origin``, come from one: a
browser led here by another site or by DNS rebinding is answered 403 and nothing runs.
With ``[rpc] token`` set, every request also needs ``Authorization: Bearer <token>``
(compared in constant time), except the status page's read-only GETs: from a loopback
address or a UNIX socket they need none, from elsewhere they also take HTTP Basic with
the token as the password (the browser's own prompt). The page sends the token, asked
once, only with its ``POST /RPC``. A body larger than
``[rpc] max_request_size`` is answered 413 as soon as that is known (from Content-Length,
or while counting a chunked body); the rest of it is read and dropped, not kept.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from urllib.parse import urlsplit

from twisted.application import service
from twisted.internet import address, defer, endpoints, interfaces, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from txuac.admin.rpc import Answer, Dispatcher, internal_error_answer
from txuac.admin.status_model import HISTORY_INTERVAL, StatusTracker
from txuac.admin.status_page import StatusPage
from txuac.admin.uac_rpc import UACMethods
from txuac.config import RPCSettings
from txuac.errors import ConfigError
from txuac.ratelimitedlog import RateLimitedLog

log = Logger()

JSON = b"application/json"
# Seconds a client may go on sending a body answered 413 before the connection is cut.
LINGER_SECONDS = 5.0


def peer_text(peer) -> str:
    """A connection's peer address for people: ``127.0.0.1:40000``, ``[::1]:40000``, ``unix``."""
    if isinstance(peer, (address.IPv4Address, address.IPv6Address)):
        host = f"[{peer.host}]" if ":" in peer.host else peer.host
        return f"{host}:{peer.port}"
    return "unix"


def _peer_host(request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", "unix")


def _host_name(text: str) -> str:
    """A host name or address as compared: lower case, IPv6 without brackets, no final dot."""
    return text.strip().lower().strip("[]").rstrip(".")


def host_of_header(value: bytes) -> str | None:
    """The host named by a ``Host`` header (RFC 9110 7.2: ``host[:port]``), or None if malformed."""
    text = value.decode("latin-1").strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        host, colon, port = text.partition(":")
        if colon and not port.isdigit():
            return None
    return _host_name(host) or None


def host_of_origin(value: bytes) -> str | None:
    """The host of an ``Origin`` header (RFC 6454 7), or None for ``null`` or a malformed one."""
    try:
        parts = urlsplit(value.decode("latin-1").strip())
        parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _host_name(parts.hostname)


def _plain(request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    if request.method == b"HEAD":
        return b""  # twisted.web would drop a body, with a log line per request
    return (text + "\n").encode("utf-8")


class AdminChannel(http.HTTPChannel):
    """An HTTP channel that answers 413 to a body over the site's ``max_request_size`` as
    soon as it knows: from Content-Length before reading the body, or when a chunked body
    passes the limit. The response goes out with ``Connection: close``, our side is
    half-closed, and what the client still sends is read and dropped for up to
    LINGER_SECONDS, so that it reads the 413 instead of a connection reset."""

    refused = False
    _linger = None

    def allHeadersReceived(self):
        # self.length is the Content-Length (None for a chunked body).
        if self.length is not None and self.length > self.site.max_request_size:
            self.refuse_body()
            return
        super().allHeadersReceived()

    def refuse_body(self) -> None:
        """Answer 413 and drop the rest of the connection's input."""
        if self.refused:
            return
        self.refused = True
        text = b"request body too large\n"
        self.transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\n"
                             b"Content-Type: text/plain; charset=utf-8\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(text), text))
        self.setTimeout(None)
        if interfaces.IHalfCloseableDescriptor.providedBy(self.transport):
            self.site.lingering.add(self)
            self.transport.loseWriteConnection()
            self._linger = self.callLater(LINGER_SECONDS, self.transport.abortConnection)
        else:
            self.transport.loseConnection()

    def dataReceived(self, data):
        if not self.refused:
            super().dataReceived(data)

    def rawDataReceived(self, data):
        if not self.refused:
            super().rawDataReceived(data)

    def allContentReceived(self):
        if not self.refused:  # the end of a chunked body refused on the way
            super().allContentReceived()

    def connectionLost(self, reason):
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self.site.lingering.discard(self)
        super().connectionLost(reason)


class AdminRequest(server.Request):
    """A request whose chunked body is counted against ``max_request_size``, and whose
    unexpected failures are answered with a JSON-RPC error, never Twisted's HTML page."""

    _received = 0

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._received > self.channel.site.max_request_size:
            self.channel.refuse_body()
            return
        super().handleContentChunk(data)

    def processingFailed(self, reason):
        log.failure("admin request {method} {path} failed", reason, method=self.method.decode("latin-1"),
                    path=self.path.decode("latin-1", "replace")[:200])
        if self._disconnected or self.finished:
            return reason
        if self.startedWriting:  # too late for another status: cut the response short
            self.channel.transport.abortConnection()
            return reason
        _send_answer(self, internal_error_answer())
        return reason


def _send_answer(request, answer: Answer) -> None:
    request.setResponseCode(answer.status)
    if answer.body is not None:
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Content-Length", b"%d" % len(answer.body))
        request.write(answer.body)
    request.finish()


class _Refusal(resource.Resource):
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


class AdminSite(server.Site):
    """The admin server's site: every request, on every path, passes the Host, Origin and
    token checks before any resource sees it. Refusals are logged, at most one line per
    kind and client address every 10 seconds."""

    protocol = AdminChannel
    requestFactory = AdminRequest

    def __init__(self, root, settings: RPCSettings, clock):
        super().__init__(root)
        self.max_request_size = settings.max_request_size
        self.allowed_hosts = frozenset(_host_name(host) for host in settings.allowed_hosts)
        self._token = settings.token.encode("utf-8") if settings.token is not None else None
        self.refusals = RateLimitedLog(log, clock)
        self.lingering: set[AdminChannel] = set()  # answered 413, reading the rest of the body to drop it
        self.displayTracebacks = False
        self.noisy = False

    def log(self, request):
        """No access log line per request (scrapes every few seconds would fill the log)."""

    def getResourceFor(self, request):
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return super().getResourceFor(request)

    def _refusal(self, request) -> resource.Resource | None:
        host = request.getHeader(b"host")
        if host is None or not self._allowed(host_of_header(host), request):
            return self._refuse(request, f"Host {_shown(host)}",
                                "forbidden: the Host header names no host of this server (see [rpc] allowed_hosts)")
        origin = request.getHeader(b"origin")
        if origin is not None and not self._allowed(host_of_origin(origin), request):
            return self._refuse(request, f"Origin {_shown(origin)}",
                                "forbidden: cross-site request (the Origin is not one of [rpc] allowed_hosts)")
        if self._token is not None and not self._authorized(request) and not local_status_read(request):
            self.refusals.emit(f"requests without a valid token from {_peer_host(request)}",
                               "refused {method} {path} from {peer}: no valid token",
                               method=request.method.decode("latin-1"), path=_path(request),
                               peer=peer_text(request.getClientAddress()))
            if status_read(request):
                return _Refusal(401, "the [rpc] token is required (as the password; any user name)",
                                {b"WWW-Authenticate": b'Basic realm="txuac status", charset="UTF-8"'})
            return _Refusal(401, "a valid 'Authorization: Bearer <token>' header is required",
                            {b"WWW-Authenticate": b'Bearer realm="txuac"'})
        return None

    def _allowed(self, host: str | None, request) -> bool:
        if host is None:
            return False
        return host in self.allowed_hosts or host == _host_name(getattr(request.getHost(), "host", ""))

    def _refuse(self, request, what: str, text: str) -> resource.Resource:
        self.refusals.emit(f"cross-site requests from {_peer_host(request)}",
                           "refused {method} {path} from {peer}: {what} is not an allowed host",
                           method=request.method.decode("latin-1"), path=_path(request),
                           peer=peer_text(request.getClientAddress()), what=what)
        return _Refusal(403, text)

    def _authorized(self, request) -> bool:
        header = request.getHeader(b"authorization") or b""
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() == b"bearer":
            return hmac.compare_digest(credentials.strip(), self._token)
        # A browser following a link cannot send a bearer header, so the status page's GETs
        # also take HTTP Basic with the token as the password (any user name). POST /RPC
        # does not: browsers attach cached Basic credentials to requests on their own.
        if scheme.lower() == b"basic" and status_read(request):
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded.partition(b":")[2], self._token)
        return False


def status_read(request) -> bool:
    """A GET or HEAD of the status page (read-only: its changes go through POST /RPC)."""
    return request.method in (b"GET", b"HEAD") and (request.path == b"/status"
                                                     or request.path.startswith(b"/status/"))


def local_status_read(request) -> bool:
    """A status page read from this machine (a loopback address or a UNIX socket): it needs
    no token."""
    if not status_read(request):
        return False
    peer = request.getClientAddress()
    if isinstance(peer, (address.IPv4Address, address.IPv6Address)):
        try:
            return ipaddress.ip_address(peer.host).is_loopback
        except ValueError:
            return False
    return isinstance(peer, address.UNIXAddress)


def _path(request) -> str:
    return request.path.decode("latin-1", "replace")[:200]


def _shown(value: bytes | None) -> str:
    return "(none)" if value is None else repr(value.decode("latin-1")[:100])


class _OnlyMethods(resource.Resource):
    """A leaf answering the methods it has ``render_*`` for, 405 with Allow to the others."""

    isLeaf = True
    allowed: tuple[bytes, ...] = ()

    def render(self, request):
        if request.method not in self.allowed:
            request.setHeader(b"Allow", b", ".join(self.allowed))
            return _plain(request, 405, f"method not allowed: use {' or '.join(m.decode() for m in self.allowed)}")
        return getattr(self, "render_" + request.method.decode("ascii"))(request)


class AdminRoot(resource.Resource):
    """``/RPC``, ``/metrics`` and ``/status``; ``GET /`` leads to the status page; anything else is 404."""

    def render(self, request):
        if request.path == b"/" and request.method in (b"GET", b"HEAD"):
            request.setHeader(b"Location", b"/status")
            return _plain(request, 303, "see /status")
        return _plain(request, 404, "not found: the JSON-RPC endpoint is POST /RPC, the status page GET /status")

    def getChild(self, path, request):
        return self


class RPCResource(_OnlyMethods):
    """``POST /RPC``: one JSON-RPC request or a batch. Whatever goes wrong, the answer is
    a JSON-RPC body."""

    allowed = (b"POST",)

    def __init__(self, dispatcher: Dispatcher):
        super().__init__()
        self.dispatcher = dispatcher

    def render_POST(self, request):
        body = request.content.read()
        d = defer.maybeDeferred(self.dispatcher.handle, body, peer_text(request.getClientAddress()))
        d.addCallback(self._send, request)
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _send(self, answer: Answer, request) -> None:
        if not request._disconnected:
            _send_answer(request, answer)

    def _failed(self, failure: Failure, request) -> None:
        log.failure("RPC request failed", failure)
        if not request._disconnected and not request.startedWriting:
            _send_answer(request, internal_error_answer())


class MetricsResource(_OnlyMethods):
    """``GET /metrics``: the Prometheus text exposition."""

    allowed = (b"GET", b"HEAD")

    def __init__(self, metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.render_for(accept.decode("latin-1") if accept else None)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return body

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""


class StatusResource(_OnlyMethods):
    """``GET /status`` and everything under it: the status page (txuac.admin.status_page)."""

    allowed = (b"GET", b"HEAD")

    def __init__(self, page: StatusPage):
        super().__init__()
        self.page = page

    def render_GET(self, request):
        reply = self.page.answer([segment.decode("utf-8", "replace") for segment in request.postpath], request.args)
        request.setResponseCode(reply.status)
        request.setHeader(b"Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            request.setHeader(name, value)
        return reply.body

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""


def build_root(dispatcher: Dispatcher, metrics, status: StatusPage | None = None) -> resource.Resource:
    """The resource tree of the admin server."""
    root = AdminRoot()
    root.putChild(b"RPC", RPCResource(dispatcher))
    root.putChild(b"metrics", MetricsResource(metrics))
    if status is not None:
        root.putChild(b"status", StatusResource(status))
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
        self.dispatcher = Dispatcher(reactor)
        self.methods = UACMethods(uac, reactor)
        self.methods.register(self.dispatcher)
        self.status = StatusTracker(uac)
        self.metrics = Metrics(uac, self.status)  # before the registrant starts: start-up registrations count
        self._sampler = task.LoopingCall(lambda: self.status.sample(reactor.seconds()))
        self._sampler.clock = reactor
        self.site = AdminSite(build_root(self.dispatcher, self.metrics, StatusPage(self.status, reactor)),
                              self.settings, reactor)
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
        self._sampler.start(HISTORY_INTERVAL, now=True)
        log.info("JSON-RPC listening on {address} (POST /RPC, GET /metrics, GET /status)", address=where)
        if self.settings.token is None:
            log.warn("[rpc] token is not set: any local user can administer txuac through {listen}",
                     listen=self.settings.listen)

    def stopService(self):
        super().stopService()
        if self._sampler.running:
            self._sampler.stop()
        self.site.refusals.flush()
        self.dispatcher.warnings.flush()
        self._bound = False
        listening, self.listening = self.listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)
