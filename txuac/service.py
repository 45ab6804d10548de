"""The txuac service tree, composable into any Twisted application."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from txuac import __version__
from txuac.config import ListenSpec, Settings
from txuac.net.resolver import TargetResolver
from txuac.net.stack import SIPStack
from txuac.net.tls import client_options_factory, server_options
from txuac.net.transports import StreamServerFactory, UDPListener
from txuac.sip.parser import ParserLimits
from txuac.sip.transaction import TimerSettings
from txuac.sip.via import Address

log = Logger()


class SIPService(service.Service):
    """Binds the configured sockets and runs the SIP stack until stopped."""

    def __init__(self, settings: Settings, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        core = settings.core
        self.stack = SIPStack(
            reactor,
            timers=TimerSettings(core.timer_t1 / 1000, core.timer_t2 / 1000, core.timer_t4 / 1000),
            limits=ParserLimits(max_message_size=core.max_message_size),
            resolver=TargetResolver(reactor, servers=list(core.dns_servers) or None),
            idle_timeout=core.tcp_idle_timeout,
            tls_client_options=client_options_factory(settings.tls) if _uses_tls(settings) else None,
            user_agent=core.user_agent,
        )
        self.ports: list = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        for spec in self.settings.core.listen:
            self.ports.append(self._listen(spec))

    def startService(self) -> None:
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        log.info("txuac {version} started", version=__version__)

    def _listen(self, spec: ListenSpec):
        reactor = self.reactor
        if spec.transport == "udp":
            listener = UDPListener(spec.host, spec.port, self.stack)
            port = reactor.listenUDP(spec.port, listener, interface=spec.host)
            self.stack.add_udp_listener(listener)
        else:
            factory = StreamServerFactory(spec.transport, self.stack, self.stack.pool)
            if spec.transport == "tcp":
                port = reactor.listenTCP(spec.port, factory, interface=spec.host)
            else:
                port = reactor.listenSSL(spec.port, factory, server_options(self.settings.tls), interface=spec.host)
        bound = port.getHost().port
        if spec.transport != "udp":
            self.stack.add_stream_listener(Address(spec.transport, spec.host, bound))
        log.info("listening on {transport}:{host}:{port}", transport=spec.transport,
                 host=f"[{spec.host}]" if spec.is_ipv6 else spec.host, port=bound)
        return port

    def bound_address(self, transport: str) -> Address:
        """The first bound socket of ``transport`` (port 0 in the config gets a real port here)."""
        for spec, port in zip(self.settings.core.listen, self.ports):
            if spec.transport == transport:
                return Address(transport, spec.host, port.getHost().port)
        raise LookupError(transport)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        for port in self.ports:
            yield port.stopListening()
        self.ports = []
        yield self.stack.stop()
        log.info("txuac stopped")


def _uses_tls(settings: Settings) -> bool:
    return settings.tls.ca_file is not None or any(s.transport == "tls" for s in settings.core.listen)


class UACService(service.MultiService):
    """Everything txuac runs, as one MultiService: today the SIP service."""

    def __init__(self, settings: Settings, reactor=None):
        super().__init__()
        self.settings = settings
        self.sip = SIPService(settings, reactor)
        self.sip.setServiceParent(self)

    @property
    def stack(self) -> SIPStack:
        return self.sip.stack
