"""A challenge from anywhere but the address the REGISTER went to is not answered (no digest
to crack offline) and the attempt fails: txuac on loopback against ``SpoofingRegistrar``, a
fake registrar whose 401 comes from a second socket.

A fake peer on purpose: the point is the attacker, and SIPp answers only from the socket
that received the request.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.accounts import REALM
from tests.support.registrant_loopback import RegistrantLoopbackCase
from tests.support.sipp import HOST, sleep
from tests.support.sipp_registrar import UUID
from txuac.registrant.record import State
from txuac.sip import make_response, parse_message


class SpoofingRegistrar:
    """A fake registrar on loopback UDP (``address``): it challenges each REGISTER without
    credentials with a 401 and accepts one with credentials (200 echoing the Contact).

    With ``spoofed`` the 401 is sent from a second socket (``spoofer``), as an attacker who
    learnt the branch would send it. A fake peer on purpose: the point is the attacker,
    and SIPp answers only from the socket that received the request.
    """

    def __init__(self, testcase: TestCase, spoofed: bool):
        self.spoofed = spoofed
        self.received: list = []
        self.main = _Socket(self._received)
        self.spoof = _Socket(lambda data, addr: None)
        self.main_port = reactor.listenUDP(0, self.main, interface=HOST)
        self.spoof_port = reactor.listenUDP(0, self.spoof, interface=HOST)
        testcase.addCleanup(self.main_port.stopListening)
        testcase.addCleanup(self.spoof_port.stopListening)
        self.address = (HOST, self.main_port.getHost().port)
        self.spoofer = (HOST, self.spoof_port.getHost().port)

    def password_for(self, user: str) -> str:
        return f"pw-Tapir-{user}"

    def _received(self, data: bytes, addr) -> None:
        request = parse_message(data)
        if getattr(request, "method", None) != "REGISTER":
            return
        self.received.append(request)
        if request.authorization:
            response = make_response(request, 200, to_tag="fake1",
                                     extra_headers=[("Contact", f"{request.headers.get('Contact')};expires=600")])
            self.main.transport.write(bytes(response), addr)
            return
        challenge = make_response(request, 401, to_tag="fake1", extra_headers=[
            ("WWW-Authenticate", f'Digest realm="{REALM}", nonce="n-4711", qop="auth", algorithm=MD5')])
        (self.spoof if self.spoofed else self.main).transport.write(bytes(challenge), addr)


class _Socket(DatagramProtocol):
    def __init__(self, on_datagram):
        self.on_datagram = on_datagram

    def datagramReceived(self, data, addr):
        self.on_datagram(data, addr)


class ChallengeOriginTests(RegistrantLoopbackCase):
    @defer.inlineCallbacks
    def test_challenge_from_another_socket_not_answered(self):
        registrar = SpoofingRegistrar(self, spoofed=True)
        warnings = []

        def observe(event):
            if "not answered" in str(event.get("refused", "")):
                warnings.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        registrant = yield self.start_uac(registrar)
        failed = yield self.events.state(State.FAILED, 10)
        expected = f"challenge from {HOST}:{registrar.spoofer[1]}, not from our registrar: not answered"
        self.assertEqual(failed.reason, f"authentication failed: {expected}")
        yield sleep(1)  # time for an answer to arrive, were one sent
        self.assertEqual(len(registrar.received), 1, "the REGISTER was sent again")
        self.assertEqual(registrar.received[0].authorization, [])
        record = registrant.records[UUID]
        self.assertEqual((record.failures, record.last_failure), (1, f"authentication failed: {expected}"))
        self.assertEqual(registrant.counters()["regfailed"], 1)
        self.assertEqual(len(warnings), 1)

    @defer.inlineCallbacks
    def test_challenge_from_the_registrar_answered(self):
        """The same fake answering from its own socket: challenged, answered, online."""
        registrar = SpoofingRegistrar(self, spoofed=False)
        registrant = yield self.start_uac(registrar)
        yield self.events.state(State.ONLINE, 10)
        self.assertEqual(len(registrar.received), 2)
        self.assertEqual(len(registrar.received[1].authorization), 1)
        self.assertEqual(registrant.status(UUID), 1)
