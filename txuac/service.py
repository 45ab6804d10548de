"""The txuac service tree, composable into any Twisted application."""

from __future__ import annotations

import dataclasses
import gc
from contextlib import contextmanager
from typing import Callable

from twisted.application import service
from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.python.failure import Failure

from txuac import __version__
from txuac.admin.web import AdminWebService
from txuac.auth import Authenticator
from txuac.credentials import CredentialList
from txuac.config import ListenSpec, Settings
from txuac.errors import ConfigError, StoreError, TxuacError
from txuac.net.handoff import Handoff
from txuac.net.resolver import TargetResolver
from txuac.net.shared_sockets import listen_stream_shared, listen_udp_shared
from txuac.net.stack import SIPStack
from txuac.net.tls import client_options_factory, server_options
from txuac.net.transports import StreamServerFactory, UDPListener
from txuac.registrant.bringup import BringUpReport
from txuac.registrant.service import RegistrantService
from txuac.registrant.settings import RegistrantSettings
from txuac.registrant.store import open_store
from txuac.registrant.store.url import parse_store_url
from txuac.registrant.worker_share import WorkerShare
from txuac.routing.req_send import RequestSender, UacRequest
from txuac.sip.parser import ParserLimits
from txuac.sip.transaction import TimerSettings
from txuac.sip.via import Address
from txuac.workers import ParentWatch, WorkerSupervisor

log = Logger()


class SIPService(service.Service):
    """Binds the configured sockets and runs the SIP stack until stopped.

    Errors in the configuration that only show when it is used (TLS files that are not
    a usable PEM pair, a socket that cannot be bound) are ConfigErrors naming the file
    and the key, raised by the constructor and by privilegedStartService.

    With ``[core] workers`` above 1 every listen socket is shared with the other workers
    (SO_REUSEPORT) and each UDP one gets a socket of this worker's own beside it, on a
    port the system picks, which the requests it sends go out from (docs/workers.rst).
    Given the workers' directory (``worker_dir``), what a shared UDP socket reads of a call
    another worker owns goes to that worker (txuac.net.handoff).
    """

    def __init__(self, settings: Settings, reactor=None, worker_index: int = 0, worker_dir: str | None = None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        core = settings.core
        # With workers, and the directory they share: each call's datagrams to its worker.
        self.handoff = Handoff(reactor, worker_dir, worker_index, core.workers) \
            if core.workers > 1 and worker_dir is not None else None
        with _naming_file(settings):
            self._tls_server_options = server_options(settings.tls) if _listens_on_tls(settings) else None
            # Always built: without ca_file the platform's trust store verifies servers.
            tls_client_options = client_options_factory(settings.tls)
        self.stack = SIPStack(
            reactor,
            timers=TimerSettings(core.timer_t1 / 1000, core.timer_t2 / 1000, core.timer_t4 / 1000),
            limits=ParserLimits(max_message_size=core.max_message_size),
            resolver=TargetResolver(reactor, servers=list(core.dns_servers) or None),
            idle_timeout=core.tcp_idle_timeout,
            tls_client_options=tls_client_options,
            user_agent=core.user_agent,
            keepalive_interval=settings.uac.reg_keepalive_interval,  # RFC 5626 4.4.1 on connections we open
        )
        self.ports: list = []  # one per [core] listen entry, in its order
        self.worker_ports: list = []  # this worker's own UDP sockets (with workers > 1)
        self._bound = False
        self._stopped = False

    def privilegedStartService(self) -> None:
        """Bind every socket (as root under twistd, before privileges are shed): all or none."""
        super().privilegedStartService()
        if self._stopped:
            raise RuntimeError("a stopped SIPService cannot start again (its stack is closed): make a new one")
        if self._bound:
            return
        self._bound = True
        try:
            for spec in self.settings.core.listen:
                self.ports.append(self._listen(spec))
        except BaseException:
            self._bound = False
            ports, self.ports, self.worker_ports = self.ports + self.worker_ports, [], []
            for port in ports:
                port.stopListening()
            raise

    def startService(self) -> None:
        self.privilegedStartService()  # not called first when embedded with plain startService()
        super().startService()
        if self.handoff is not None:
            self.handoff.start()

    def _listen(self, spec: ListenSpec):
        reactor = self.reactor
        shared = self.settings.core.workers > 1
        try:
            if spec.transport == "udp":
                listener = UDPListener(spec.host, spec.port, self.stack)
                if shared:
                    port = listen_udp_shared(reactor, spec.host, spec.port, listener)
                    listener.requests_from = self._worker_socket(spec.host)
                    if self.handoff is not None:
                        self.handoff.add_listener(listener)
                else:
                    port = reactor.listenUDP(spec.port, listener, interface=spec.host)
                self.stack.add_udp_listener(listener)
            else:
                factory = StreamServerFactory(spec.transport, self.stack, self.stack.pool)
                tls_options = self._tls_server_options if spec.transport == "tls" else None
                if shared:
                    port = listen_stream_shared(reactor, spec.host, spec.port, factory, tls_options)
                elif spec.transport == "tcp":
                    port = reactor.listenTCP(spec.port, factory, interface=spec.host)
                else:
                    port = reactor.listenSSL(spec.port, factory, tls_options, interface=spec.host)
        except error.CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise ConfigError(f"{self.settings.path}: [core] listen: cannot bind {spec}: {reason}") from None
        bound = port.getHost().port
        if spec.transport != "udp":
            self.stack.add_stream_listener(Address(spec.transport, spec.host, bound))
        log.info("listening on {transport}:{host}:{port}", transport=spec.transport,
                 host=f"[{spec.host}]" if spec.is_ipv6 else spec.host, port=bound)
        return port

    def _worker_socket(self, host: str) -> UDPListener:
        """This worker's own UDP socket on ``host`` (one per host), receiving the responses
        to the requests it sends from there: their Via names its port (RFC 3261 18.1.1)."""
        for port in self.worker_ports:
            if port.protocol.host == host:
                return port.protocol
        listener = UDPListener(host, 0, self.stack)
        self.worker_ports.append(self.reactor.listenUDP(0, listener, interface=host))
        log.info("sending requests from udp:{host}:{port}", host=f"[{host}]" if ":" in host else host,
                 port=listener.port)
        return listener

    def bound_address(self, transport: str) -> Address:
        """The first bound socket of ``transport`` (port 0 in the config gets a real port here)."""
        for spec, port in zip(self.settings.core.listen, self.ports):
            if spec.transport == transport:
                return Address(transport, spec.host, port.getHost().port)
        raise LookupError(transport)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop accepting connections, let pending client transactions finish (at most
        64*T1; their responses come in on the UDP sockets, which stay open meanwhile),
        then close everything."""
        super().stopService()
        self._stopped = True
        ports, self.ports = self.ports, []
        stream_ports = [p for spec, p in zip(self.settings.core.listen, ports) if spec.transport != "udp"]
        udp_ports = [p for spec, p in zip(self.settings.core.listen, ports) if spec.transport == "udp"]
        udp_ports += self.worker_ports
        self.worker_ports = []
        pending = self.stack.pending_client_transactions
        if pending:
            log.info("stopping: waiting for {count} client transaction(s)", count=pending)
        stopped = self.stack.stop()  # at once: from now on new requests are refused
        for port in stream_ports:
            yield port.stopListening()
        yield stopped
        if self.handoff is not None:
            yield self.handoff.stop()
        for port in udp_ports:
            yield port.stopListening()
        log.info("txuac stopped")


def _listens_on_tls(settings: Settings) -> bool:
    return any(s.transport == "tls" for s in settings.core.listen)


@contextmanager
def _naming_file(settings: Settings):
    """Prefix the ConfigErrors of txuac.net.tls (which name the key) with the file name."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"{settings.path}: {e}") from None


def tune_garbage_collector() -> None:
    """Collect less often, as ``twistd uac`` does (embedders decide for their process).

    Thousands of transactions per second keep many short-lived objects tracked; with
    CPython's default thresholds the collector then takes a third of the CPU
    (bench/registrations.py). Young objects are still collected; full collections are
    just rarer. Generation 1 is collected every 2 young collections: a proxy's calls
    linger 32 s in their transactions, and 50 young collections' worth of them took a
    generation-1 collection over a second (bench/proxy.py); full collections stay as
    rare as with (100_000, 50, 1_000).
    """
    gc.set_threshold(100_000, 2, 25_000)


def registrant_settings(settings: Settings) -> RegistrantSettings:
    """The registrant's settings: each one [uac] has under the same name comes from there (as
    the registrant's type: a bool for Kamailio's 0/1, seconds for reg_timer_t2's ms); the
    User-Agent from [core], log_routine and failure_summary_interval from [log]."""
    uac = settings.uac
    values = {}
    for field in dataclasses.fields(RegistrantSettings):
        if hasattr(uac, field.name):
            value = getattr(uac, field.name)
            values[field.name] = _AS_TYPE[field.type](value) if field.type in _AS_TYPE else value
    values.update(reg_contact_addr=uac.reg_contact_addr or "", reg_timer_t2=uac.reg_timer_t2 / 1000,
                  user_agent=settings.core.user_agent, log_routine=settings.log.level == "debug",
                  failure_summary_interval=settings.log.failure_summary_interval)
    if settings.cluster is not None:  # the next owner goes on with the account's Call-ID
        values["reg_keep_callid"] = True
    return RegistrantSettings(**values)


# RegistrantSettings' annotations (strings: postponed evaluation) that [uac] writes otherwise.
_AS_TYPE: dict[object, Callable] = {"bool": bool, "float": float}


class UACService(service.MultiService):
    """Everything txuac runs, as one MultiService: the SIP stack, and the client
    authentication every feature sends through.

    A store that cannot be used (cannot be opened, not a uacreg table of a known version,
    a PostgreSQL server that refuses the login) is a start-up error, found once the reactor
    runs: ``on_startup_error`` gets it as a StoreError naming the file, the key and the
    URL (``twistd uac`` then stops with exit status 1); without it, it is logged as an
    error and the registrant stays stopped. ``registrant_ready()`` says when the accounts
    are loaded.

    ``worker_index``: which of ``[core] workers`` processes this is (docs/workers.rst).
    Worker 0 starts the others and serves the admin interfaces; every worker registers
    its share of the accounts. ``run_as``: the uid and gid twistd switches to after
    building this service (``--uid``/``--gid``), who must own the workers' directory.
    """

    def __init__(self, settings: Settings, reactor=None,
                 on_startup_error: Callable[[TxuacError], None] | None = None, worker_index: int = 0,
                 worker_dir: str | None = None, run_as: tuple[int, int | None] | None = None):
        super().__init__()
        self.settings = settings
        self.worker_index = worker_index
        workers = settings.core.workers
        self._on_startup_error = on_startup_error
        self._registrant_outcome: Failure | None | bool = False  # False: not known yet
        self._ready_waiters: list[defer.Deferred] = []
        # Worker 0 makes the workers' directory (their RPC and handoff sockets) first.
        self.workers: WorkerSupervisor | None = None
        if worker_index == 0 and workers > 1:
            self.workers = WorkerSupervisor(settings.path, workers, reactor, owner=run_as)
            worker_dir = self.workers.directory
        self.sip = SIPService(settings, reactor, worker_index, worker_dir)
        self.sip.setServiceParent(self)
        self.credentials = CredentialList(settings.uac.credential)
        self.authenticator = Authenticator(self.sip.stack, self.credentials, settings.uac.auth_algorithms,
                                           settings.uac.auth_prefer_auth_int)
        self._requests: RequestSender | None = None  # req_send without a running proxy, made on first use
        self.registrant: RegistrantService | None = None
        self.cluster = None  # a ClusterService with [cluster]
        self.bringup: BringUpReport | None = None
        uac = settings.uac
        if uac.reg_db_url is not None:
            store = open_store(uac.reg_db_url, reactor, uac.reg_db_table, base_dir=settings.base_dir,
                               ext_table=uac.reg_ext_table, connect_retry=uac.reg_db_connect_retry)
            share = WorkerShare(worker_index, workers) if workers > 1 else None
            changes = store.change_feed() if uac.reg_db_watch else None  # live INSERT/UPDATE/DELETE
            if settings.cluster is not None:
                from txuac.registrant.cluster.service import ClusterService
                self.cluster = ClusterService(settings.cluster, parse_store_url(uac.reg_db_url),
                                              uac.reg_contact_addr or "", uac.reg_db_table, reactor)
                self.cluster.setServiceParent(self)  # started before the registrant; its stop waits for it
                share = self.cluster
            self.registrant = RegistrantService(registrant_settings(settings), self.sip.stack, store, reactor,
                                                ownership=share, changes=changes)
            if self.cluster is not None:
                self.cluster.watch(self.registrant)
            self.registrant.setServiceParent(self)  # started after the SIP stack, stopped before it
            self.bringup = BringUpReport(self.registrant, self.registrant.reactor)  # "1000 of 1000 online in 1.2 s"
            self.bringup.setServiceParent(self)
        self.proxy = None
        if settings.routing.script is not None:
            from txuac.routing.proxy import ProxyRunner, ServiceParts  # only when a script is set
            self.proxy = ProxyRunner(self.sip, settings, ServiceParts.of(self))  # loads the script: a ConfigError stops here
            self.proxy.setServiceParent(self)  # started after the SIP stack, stopped before it
        self.rpc: AdminWebService | None = None
        self.control: list[service.Service] = []
        self.manhole = None
        self._peers = None  # worker 0's way to the other workers' account methods
        if worker_index > 0:
            ParentWatch(reactor).setServiceParent(self)
            if worker_dir is not None and self.registrant is not None:
                from txuac.admin.uac_rpc import build_dispatcher
                from txuac.admin.worker_rpc import WorkerRPCService, worker_socket_path
                path = worker_socket_path(worker_dir, worker_index)
                WorkerRPCService(build_dispatcher(self, reactor), path, reactor).setServiceParent(self)
            return  # the admin interfaces are worker 0's
        if self.workers is not None:
            if self.registrant is not None:
                from txuac.admin.worker_rpc import WorkerPeers
                self._peers = WorkerPeers(self.workers.directory, workers, reactor)
        if settings.rpc.enabled:
            self.rpc = AdminWebService(self, reactor)  # JSON-RPC and /metrics, stopped before the above
            self._every_worker(self.rpc.dispatcher)
            self.rpc.setServiceParent(self)
        self.control = self._control_transports(settings, reactor)
        if settings.manhole.listen is not None:
            from txuac.admin.manhole import ManholeService  # conch is imported only when the manhole is on
            self.manhole = ManholeService(settings, self, reactor)
            self.manhole.setServiceParent(self)
        if self.workers is not None:
            self.workers.setServiceParent(self)  # stopped first, started last

    def _every_worker(self, dispatcher):
        """``dispatcher``'s account methods cover every worker's accounts (docs/workers.rst)."""
        if self._peers is not None:
            from txuac.admin.worker_rpc import fan_out
            fan_out(dispatcher, self._peers, self.registrant.ownership.worker_of)
        return dispatcher

    def _control_transports(self, settings: Settings, reactor) -> list[service.Service]:
        """Kamailio's binrpc and jsonrpcs transports, on the HTTP server's method table."""
        rpc = settings.rpc
        made: list[service.Service] = []
        if rpc.binrpc is None and rpc.jsonrpc_fifo is None and rpc.jsonrpc_socket is None:
            return made
        from txuac.admin.binrpc_server import BinRPCService
        from txuac.admin.jsonrpc_fifo import JSONRPCFIFOService
        from txuac.admin.jsonrpc_socket import JSONRPCSocketService
        from txuac.admin.uac_rpc import build_dispatcher

        dispatcher = self.rpc.dispatcher if self.rpc is not None else self._every_worker(build_dispatcher(self, reactor))
        if rpc.binrpc is not None:
            made.append(BinRPCService(dispatcher, rpc, settings.path, reactor))
        if rpc.jsonrpc_fifo is not None:
            made.append(JSONRPCFIFOService(dispatcher, rpc, settings.path, reactor))
        if rpc.jsonrpc_socket is not None:
            made.append(JSONRPCSocketService(dispatcher, rpc, settings.path, reactor))
        for transport in made:
            transport.setServiceParent(self)  # stopped before the SIP stack and the registrant
        return made

    @property
    def stack(self) -> SIPStack:
        return self.sip.stack

    def startService(self) -> None:
        # MultiService's loop, keeping what the registrant's start returns: its store is
        # opened and its accounts loaded there, after the reactor started.
        service.Service.startService(self)
        self._registrant_outcome = False
        for child in self:
            started = child.startService()
            if child is self.registrant:
                d = started if isinstance(started, defer.Deferred) else defer.succeed(None)
                d.addCallbacks(self._registrant_started, self._registrant_failed)
        log.info("txuac {version} started", version=__version__)  # last: every listener is up

    def registrant_ready(self) -> defer.Deferred:
        """Fires once the registrant's store is open and its accounts are loaded (at once
        without a registrant); fails with the StoreError that kept it from starting."""
        if self.registrant is None or self._registrant_outcome is None:
            return defer.succeed(None)
        if isinstance(self._registrant_outcome, Failure):
            return defer.fail(self._registrant_outcome)
        d: defer.Deferred = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    def _registrant_started(self, _) -> None:
        self._registrant_outcome = None
        if self.bringup is not None:
            self.bringup.begin()
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def _registrant_failed(self, failure: Failure) -> None:
        if not self.running:
            return  # stopped while the store was still opening: not an error
        if failure.check(StoreError):
            failure = Failure(StoreError(f"{self.settings.path}: [uac] reg_db_url: {failure.value}"))
            if self._on_startup_error is not None:
                self._on_startup_error(failure.value)
            else:
                log.error("{error}", error=str(failure.value))
        else:
            log.failure("The registrant failed to start", failure)
        self._registrant_outcome = failure
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(failure)

    def req_send(self, **fields) -> defer.Deferred:
        """Kamailio's uac_req_send from Python (embedding, the manhole), no script needed:
        ``fields`` are the $uac_req keys (txuac.routing.req_send.UacRequest). A Deferred
        firing with the final UacReplyEvent, SIP failures and timeouts included; a bad
        field raises UacRequestError at once. With the proxy running, the events also go
        to its script (event_route[uac:reply] or event_callback), as evroute says."""
        request = UacRequest.from_fields(fields)
        running = self.proxy.proxy if self.proxy is not None else None
        if running is not None:
            return running.requests.send(request)
        if self._requests is None:
            self._requests = RequestSender(self.stack, self.authenticator.nonces, self.authenticator.algorithms,
                                           self.settings.uac.default_socket)
        return self._requests.send(request)
