"""Bindings and challenges on loopback: txuac against a SIPp registrar that rewrites our
Contact, and against a fake registrar whose 401 comes from another socket.

- reg_200_rewritten.xml: the 200 OK lists one binding, the address the REGISTER came
  from (what a NAT-fixing registrar or SBC does), granted 3 s. txuac takes it as its
  own and refreshes before it lapses; Kamailio's match (by l_uuid) would find none and
  leave the account offline until reg_timer_interval.
- reg_200_outbound.xml: an RFC 5626 registrar with Path, Service-Route and GRUUs, for an
  account with outbound = 1 in our own table.
- SpoofingRegistrar: a challenge from anywhere but the address the REGISTER went to is
  not answered (no digest to crack offline), and the attempt fails.
"""

from __future__ import annotations

import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.admin.test_web import make_store
from tests.registrant.test_interop_kamailio import REALM, account_rows
from tests.net.test_interop_sipp import until
from tests.registrant.test_interop_sipp import HOST, T1_MS, UUID, EventLog, SIPpRegistrar, sleep
from tests.support.peers import free_port
from tests.support.services import start_uac
from txuac.registrant.record import State
from txuac.sip import make_response, parse_message


class BindingsTestCase(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start_uac(self, registrar, expires: int = 60, ext_rows=(), **uac):
        """txuac with one account whose auth_proxy is ``registrar`` (``ext_rows``: rows of our
        own table uacreg_txuac); its RegistrantService."""
        rows = account_rows(registrar, 1)
        rows[0]["expires"] = expires
        path = self.db_path = yield make_store(self, rows)
        connection = sqlite3.connect(path)
        for row in ext_rows:  # the table is made when the store first opens
            connection.execute(f"INSERT INTO uacreg_txuac ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values()))
        connection.commit()
        connection.close()
        self.sip_port = free_port()
        service = start_uac(self, {
            "core": {"listen": [f"udp:{HOST}:{self.sip_port}"], "timer_t1": T1_MS},
            "uac": dict({"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"{HOST}:{self.sip_port}"}, **uac),
        })
        self.events = EventLog(service.registrant)
        return service.registrant


class RewrittenContactTests(BindingsTestCase):
    @defer.inlineCallbacks
    def test_refreshed_from_the_rewritten_bindings_expiry(self):
        registrar = SIPpRegistrar(self, "reg_200_rewritten.xml", "-key", "granted", "3")
        yield registrar.started()
        registrant = yield self.start_uac(registrar, expires=60)
        online = yield self.events.state(State.ONLINE, 10)
        self.assertIn("registered for 3 s", online.reason)
        self.assertIn("rewrote our Contact", online.reason)
        # Online for 6 s more, refreshed every 1.5-1.65 s (half of 3 s, with jitter), never lapsing.
        for _ in range(12):
            yield sleep(0.5)
            self.assertEqual(registrant.status(UUID), 1, self.explain(registrar))
        registers = registrar.first_copies()
        self.assertGreaterEqual(len(registers), 4, self.explain(registrar))
        gaps = [b[0] - a[0] for a, b in zip(registers, registers[1:])]
        self.assertTrue(all(gap < 3.0 for gap in gaps), f"gaps between REGISTERs: {gaps}")
        self.assertEqual(registrant.records[UUID].expires, 60)  # we still ask for what the table says
        self.assertEqual([r.headers.get("Expires") for _, r in registers], ["60"] * len(registers))
        self.assertFalse(any(e.state is State.FAILED for e in self.events.seen), self.explain(registrar))

    def explain(self, registrar) -> str:
        return f"events:\n{self.events.describe()}\n{registrar.explain()}"


class OutboundTests(BindingsTestCase):
    @defer.inlineCallbacks
    def test_outbound_registration(self):
        """An account with outbound = 1 in our own table against an RFC 5626 registrar: the
        REGISTER carries ;ob, reg-id and +sip.instance with Supported: outbound, path, gruu;
        Path, Service-Route, the GRUUs and the Flow-Timer are kept; the instance ID made for
        the account is the one stored and sent again."""
        registrar = SIPpRegistrar(self, "reg_200_outbound.xml", "-key", "granted", "4")
        yield registrar.started()
        registrant = yield self.start_uac(registrar, ext_rows=[{"l_uuid": UUID, "outbound": 1, "reg_id": 2}])
        online = yield self.events.state(State.ONLINE, 10)
        self.assertIn("registered for 4 s", online.reason)
        record = registrant.records[UUID]
        self.assertRegex(record.instance_id, r"^urn:uuid:[0-9a-f-]{36}$")
        self.assertEqual(record.path, ("<sip:edge.test.example;lr;ob>",))
        self.assertEqual(record.service_route, ("<sip:orig@core.test.example;lr>",))
        self.assertEqual((record.pub_gruu, record.temp_gruu, record.flow_timer),
                         ("sip:acct00000@test.example;gr=sipp-instance", "sip:tgruu.sipp7x@test.example;gr", 30))
        (_, first), (_, second) = yield self.wire_registers(registrar, 2, timeout=5)
        for request in (first, second):
            contact = request.contacts[0]
            self.assertEqual(str(contact.uri), f"sip:{UUID}@{HOST}:{self.sip_port};ob")
            self.assertEqual(contact.params.get("reg-id"), "2")
            self.assertEqual(contact.params.get("+sip.instance"), f'"<{record.instance_id}>"')
            self.assertEqual(request.tokens("Supported"), ["outbound", "path", "gruu"])
        stored = yield until(lambda: self.stored_instance_id() == record.instance_id, 5, 0.1)
        self.assertTrue(stored, f"instance_id stored: {self.stored_instance_id()!r}, in memory: {record.instance_id}")

    def stored_instance_id(self) -> str | None:
        connection = sqlite3.connect(self.db_path)
        try:
            row = connection.execute("SELECT instance_id FROM uacreg_txuac WHERE l_uuid = ?", (UUID,)).fetchone()
        finally:
            connection.close()
        return row[0] if row else None

    @defer.inlineCallbacks
    def wire_registers(self, registrar, count: int, timeout: float):
        ok = yield until(lambda: len(registrar.first_copies()) >= count, timeout, 0.05)
        self.assertTrue(ok, f"SIPp did not receive {count} REGISTERs\n{registrar.explain()}")
        return registrar.first_copies()[:count]


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


class ChallengeOriginTests(BindingsTestCase):
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
