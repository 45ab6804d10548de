"""ProxyService without sockets: ``ProxyTestCase`` runs a routing script (``PROXY_SCRIPT``
by default) over a SIPStack on a MemoryReactorClock; requests come from ``PEER`` and are
relayed to ``CALLEE``; ``request`` is an upstream request's bytes."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.stack_harness import LOCAL, PEER, T1, T2, T4, FakeUDP
from txuac.config import RoutingSettings
from txuac.net.resolver import TargetResolver
from txuac.net.stack import SIPStack
from txuac.net.transports import UDPListener
from txuac.routing.proxy import ProxyService
from txuac.routing.script import load_script
from txuac.sip import make_response, parse_message
from txuac.sip.transaction import TimerSettings
from txuac.sip.via import Address


CALLEE = ("198.51.100.9", 5070)


OURS = f"sip:{LOCAL[0]}:{LOCAL[1]}"


PROXY_SCRIPT = '''
from txuac.routing.script import request_route


@request_route
def route(msg, uac, tm, rr, dialog, sl):
    if msg.method == "OPTIONS" and msg.uri.user is None:
        sl.sl_send_reply(200, "Alive")
        return
    if msg.to is not None and msg.to.tag is not None:
        if rr.loose_route() < 0 and msg.method != "ACK":
            sl.sl_send_reply(404, "Not here")
            return
        tm.t_relay()
        return
    if msg.method == "INVITE":
        rr.record_route()
    if msg.uri.user == "broken":
        raise ValueError("no route for broken")
    if msg.uri.user == "dialog":
        dialog.dlg_bye("all")
    if msg.uri.user == "trunk":
        tm.t_relay_to_uri("sip:trunk@198.51.100.9:5070")
        return
    tm.t_relay()
'''


def request(method="INVITE", uri=f"sip:bob@{CALLEE[0]}:{CALLEE[1]}", branch="z9hG4bKup1", to_tag=None,
            cseq=None, extra="", max_forwards=70) -> bytes:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch={branch}\r\n"
        f"From: <sip:alice@example.com>;tag=alice1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: call-1\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class ProxyTestCase(SynchronousTestCase):
    script = PROXY_SCRIPT
    settings: dict = {}
    parts = None  # ServiceParts (credentials, ...) or None for the defaults

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.stack = SIPStack(self.reactor, timers=TimerSettings(T1, T2, T4), resolver=TargetResolver(self.reactor))
        self.listener = UDPListener(LOCAL[0], 0, self.stack)
        self.udp = FakeUDP()
        self.listener.makeConnection(self.udp)
        self.stack.add_udp_listener(self.listener)
        script = self.mktemp() + ".py"
        with open(script, "w") as f:
            f.write(self.script)
        self.proxy = ProxyService(self.stack, load_script(script), RoutingSettings(script=script, **self.settings),
                                  [Address("udp", *LOCAL)], self.parts)
        self.proxy.start()

    def sent(self, to=None):
        """Every datagram written since the last call, parsed, with its destination; only
        the messages when ``to`` is given (and only those sent there)."""
        out = [(parse_message(data), addr) for data, addr in self.udp.written]
        del self.udp.written[:]
        return out if to is None else [m for m, addr in out if addr == to]

    def receive(self, data: bytes, source=PEER) -> None:
        self.listener.datagramReceived(data, source)

    def answer(self, forwarded, status: int, to_tag="bobtag", extra=()):
        response = make_response(forwarded, status, to_tag=to_tag, extra_headers=list(extra))
        self.receive(bytes(response), CALLEE)

    def ringing_then_answered(self, forwarded):
        """The callee answers 180 then 200 to ``forwarded``: what went upstream."""
        self.sent()
        self.answer(forwarded, 180)
        self.answer(forwarded, 200)
        return self.sent(PEER)

    def forwarded_invite(self, uri_user="bob"):
        self.receive(request(uri=f"sip:{uri_user}@{CALLEE[0]}:{CALLEE[1]}"))
        downstream = self.sent(CALLEE)
        self.assertEqual(len(downstream), 1)
        return downstream[0]
