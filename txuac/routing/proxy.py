"""The transaction-stateful proxy as a service: it takes the proxied methods and CANCEL
from the SIP stack and runs each request through the routing script
(``txuac.routing.proxied_request``). ``ProxyRunner`` starts it inside ``UACService``
when ``[routing] script`` is set. The manual is docs/routing.rst.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from txuac.credentials import CredentialList, ICredentialSource
from txuac.net.stack import IncomingRequest, SIPStack
from txuac.routing.dialogs import DialogTable
from txuac.routing.proxied_request import ProxiedRequest, answered
from txuac.routing.proxy_rules import check_request, make_rejection
from txuac.routing.req_send import RequestSender, ScriptEvents, event_handler
from txuac.routing.response_context import CancelDisposition, cancel_disposition
from txuac.routing.script import RouteTable, ScriptFailure, call_route, load_script
from txuac.routing.uac_functions import UAC, RequestAddresses, RestoreSettings, RouteParamsSource
from txuac.sip.address import default_port
from txuac.sip.digest import ALL_ALGORITHMS, NonceCounter
from txuac.sip.message import Request, Response
from txuac.sip.methods import METHODS
from txuac.sip.uri import SipURI
from txuac.sip.via import Address, bare_host, via_host

if TYPE_CHECKING:
    from txuac.config import RoutingSettings, Settings

log = Logger()

#: Methods the proxy takes from the stack (CANCEL comes through the cancel handler).
PROXIED_METHODS = tuple(method for method in METHODS if method != "CANCEL")
DIALOG_EXPIRY_INTERVAL = 1.0  # seconds between DialogTable.expire runs


@dataclass(frozen=True)
class ServiceParts:
    """What the proxy uses from the rest of txuac (UACService): the ``[uac] credential``
    list and digest settings for ``uac_auth``, the nonce counter shared with every
    Authenticator of the service, and the registrant for the ``uac_reg_*`` functions
    (None without ``reg_db_url``)."""

    credentials: ICredentialSource = field(default_factory=CredentialList)
    nonces: NonceCounter = field(default_factory=NonceCounter)
    algorithms: tuple[str, ...] = ALL_ALGORITHMS
    registrant: Any = None
    default_socket: str | None = None  # [uac] default_socket, for uac_req_send

    @classmethod
    def of(cls, uac_service: Any) -> "ServiceParts":
        authenticator = uac_service.authenticator
        return cls(uac_service.credentials, authenticator.nonces, authenticator.algorithms,
                   uac_service.registrant, uac_service.settings.uac.default_socket)


class ProxyService:
    """The proxy: the stack's handler for ``PROXIED_METHODS`` and CANCEL once started."""

    def __init__(self, stack: SIPStack, routes: RouteTable, settings: RoutingSettings,
                 local_addresses: Sequence[Address], parts: "ServiceParts | None" = None):
        if not local_addresses:
            raise ValueError("the proxy needs the addresses it listens on")
        self.stack = stack
        self.routes = routes
        self.settings = settings
        self.parts = parts if parts is not None else ServiceParts()
        self.local_addresses = list(local_addresses)
        # is_local_uri asks for every request routed: (host as compared, port) of each socket.
        self._local_keys = frozenset((bare_host(a.host).lower(), a.port) for a in self.local_addresses)
        self.restore = RestoreSettings.from_settings(settings)
        self.dialogs = DialogTable(dialog_timeout=settings.dialog_timeout, max_dialogs=settings.max_dialogs)
        self._expiry = task.LoopingCall(self.expire_dialogs)
        self._expiry.clock = stack.reactor
        self.script_failures = 0
        self._warned_no_registrant = False
        # One sender for every uac_req_send; its events run the script (req_send.ScriptEvents).
        self.events = ScriptEvents(routes, settings.event_callback, self.event_uac, self._count_event_failure)
        self.requests = RequestSender(stack, self.parts.nonces, self.parts.algorithms, self.parts.default_socket,
                                      self.events)

    def event_uac(self) -> UAC:
        """The ``uac`` namespace of event_route[uac:reply]: no request, uac_req_send works."""
        return UAC(None, self.restore, RequestAddresses(), RouteParamsSource(), requests=self.requests)

    def now(self) -> float:
        return self.stack.reactor.seconds()

    def _count_event_failure(self) -> None:
        self.script_failures += 1  # logged by ScriptEvents

    def warn_no_registrant(self) -> None:
        """A uac_reg_* function without [uac] reg_db_url: said once, then -1 silently."""
        if not self._warned_no_registrant:
            self._warned_no_registrant = True
            log.warn("uac_reg_* functions return -1: registrations are not enabled ([uac] reg_db_url)")

    def expire_dialogs(self) -> None:
        for dialog in self.dialogs.expire(self.now()):
            log.info("dialog {call_id} ended: {reason}", call_id=dialog.call_id, reason=dialog.end_reason.value)

    def start(self) -> None:
        for method in PROXIED_METHODS:
            self.stack.set_handler(method, self.request_received)
        self.stack.set_cancel_handler(self.cancel_received)
        self._expiry.start(DIALOG_EXPIRY_INTERVAL, now=False)

    def stop(self) -> None:
        for method in PROXIED_METHODS:
            self.stack.set_handler(method, None)
        self.stack.set_cancel_handler(None)
        if self._expiry.running:
            self._expiry.stop()

    # --- addresses ----------------------------------------------------------------------
    def is_local_uri(self, uri: SipURI) -> bool:
        """Whether ``uri`` designates one of our sockets (host and port; RFC 3261 16.4)."""
        host = bare_host(uri.host).lower()
        transport = "tls" if uri.secure else (uri.transport or "udp")
        port = uri.port or default_port(transport)
        return (host, port) in self._local_keys

    def local_address(self, transport: str) -> Address:
        """Our socket for ``transport`` (the first one when none matches)."""
        for address in self.local_addresses:
            if address.transport == transport:
                return address
        return self.local_addresses[0]

    def record_route_uri(self, transport: str) -> str:
        address = self.local_address(transport)
        suffix = "" if address.transport == "udp" else f";transport={address.transport}"
        scheme = "sips" if address.transport == "tls" else "sip"
        return f"{scheme}:{via_host(address.host)}:{address.port}{suffix}"

    # --- requests -----------------------------------------------------------------------
    def request_received(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        status = check_request(request)
        if status is not None:
            if request.method != "ACK":
                incoming.send(make_rejection(request, status, to_tag=incoming.to_tag))
            return
        proxied = ProxiedRequest(self, incoming)
        result = call_route(self.routes.request, proxied.msg, proxied.uac, proxied.tm, proxied.rr,
                            proxied.dialog, proxied.sl)
        if isinstance(result, ScriptFailure):
            self.note_script_failure(result, request)
            proxied.answer_failure()

    def note_script_failure(self, failure: ScriptFailure, message: Request | Response) -> None:
        """A route raised: counted and logged once with the script's traceback."""
        self.script_failures += 1
        what = message.method if isinstance(message, Request) else f"{message.status} reply"
        log.error("routing script failed in {route} for {what} {call_id}:\n{traceback}", route=failure.route.label,
                  what=what, call_id=message.call_id, traceback=failure.traceback)

    def cancel_received(self, cancel: IncomingRequest, invite: IncomingRequest | None) -> bool | None:
        """RFC 3261 16.10; the stack answered the CANCEL 200 when ``invite`` is not None."""
        if invite is None:
            return None  # the stack answers 481
        ref = getattr(invite, "proxied", None)  # alive while a branch is pending
        proxied: ProxiedRequest | None = ref() if ref is not None else None
        if proxied is None or proxied.context is None:
            if invite.transaction is not None and not answered(invite):
                invite.respond(487)
            return None
        if cancel_disposition(proxied.context) is CancelDisposition.CANCEL_BRANCHES:
            proxied.apply(proxied.context.cancel())
        return None


class ProxyRunner(service.Service):
    """Runs the proxy inside UACService when ``[routing] script`` is set: the script is
    loaded at construction (a ConfigError stops txuac from starting), the proxy starts
    after the SIP service has bound its sockets (ports of 0 resolved) and stops first.

    Our Record-Route and the Route values we recognise use the listen addresses: a
    wildcard listen (0.0.0.0, ::) has no address to put there (logged at start)."""

    def __init__(self, sip: Any, settings: Settings, parts: ServiceParts | None = None):
        self.sip = sip
        self.settings = settings
        self.parts = parts
        assert settings.routing.script is not None
        self.routes = load_script(settings.routing.script)
        event_handler(self.routes, settings.routing.event_callback)  # a ConfigError now, not at start
        self.proxy: ProxyService | None = None

    def startService(self) -> None:
        super().startService()
        addresses = [Address(spec.transport, spec.host, port.getHost().port)
                     for spec, port in zip(self.settings.core.listen, self.sip.ports)]
        for address in addresses:
            if address.host in ("0.0.0.0", "::"):
                log.warn("[routing]: listening on {host}: Record-Route needs a specific address", host=address.host)
        self.proxy = ProxyService(self.sip.stack, self.routes, self.settings.routing, addresses, self.parts)
        self.proxy.start()
        log.info("proxy started with the routing script {path}", path=self.routes.path)

    def stopService(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        super().stopService()



__all__ = ["PROXIED_METHODS", "ProxyRunner", "ProxyService", "ServiceParts"]
