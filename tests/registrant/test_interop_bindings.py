"""Bindings on loopback: txuac against a SIPp registrar that rewrites our Contact, and
against an RFC 5626 one.

- reg_200_rewritten.xml: the 200 OK lists one binding, the address the REGISTER came
  from (what a NAT-fixing registrar or SBC does), granted 3 s. txuac takes it as its
  own and refreshes before it lapses; Kamailio's match (by l_uuid) would find none and
  leave the account offline until reg_timer_interval.
- reg_200_outbound.xml: an RFC 5626 registrar with Path, Service-Route and GRUUs, for an
  account with outbound = 1 in our own table.
"""

from __future__ import annotations

import sqlite3

from twisted.internet import defer

from tests.support.registrant_loopback import RegistrantLoopbackCase
from tests.support.sipp import HOST, sleep, until
from tests.support.sipp_registrar import UUID, SIPpRegistrar
from txuac.registrant.record import State


class RewrittenContactTests(RegistrantLoopbackCase):
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


class OutboundTests(RegistrantLoopbackCase):
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


