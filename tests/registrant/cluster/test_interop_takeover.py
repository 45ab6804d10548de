"""A takeover REGISTER at a REAL Kamailio registrar: a node registers accounts and goes away
without unregistering; the next owner registers them from its own address on the same
Call-ID with a higher CSeq, removing the old binding with expires=0 in the same REGISTER
(RFC 3261 10.2.2), so that each AOR ends with exactly one binding: the new owner's."""

from __future__ import annotations

import dataclasses

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support.accounts import account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_online, wait_until
from tests.support.stores import sqlite_uacreg
from txuac.registrant.ownership import IAccountOwnership, OwnershipChange
from txuac.registrant.service import RegistrantService
from txuac.registrant.store import open_store
from txuac.service import registrant_settings

ACCOUNTS = 20
WAIT = 60.0


@implementer(IAccountOwnership)
class Handed:
    """Nothing owned until ``take`` hands every partition over, with the old Contacts."""

    partitions = 1

    def __init__(self):
        self.owned = False
        self.listeners = []

    def owns(self, l_uuid, now):
        return self.owned

    def add_listener(self, listener):
        self.listeners.append(listener)

    def take(self, bound_contacts):
        self.owned = True
        for listener in self.listeners:
            listener(OwnershipChange(frozenset({0}), frozenset(), reactor.seconds(), bound_contacts))


class TakeoverTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_the_old_binding_is_replaced_in_one_register(self):
        registrar = KamailioRegistrar(self)
        rows = account_rows(registrar, ACCOUNTS)
        path = yield sqlite_uacreg(self, rows)
        old_port, new_port = free_port(), free_port()
        old = start_uac(self, {"core": {"listen": [f"udp:127.0.0.1:{old_port}"], "timer_t1": 200},
                               "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{old_port}"}})
        yield wait_online(old, ACCOUNTS, WAIT)
        aors = [f"sip:{row['r_username']}@{row['r_domain']}" for row in rows]
        before = {aor: registrar.contacts(aor) for aor in aors}
        self.assertTrue(all(len(c) == 1 and f":{old_port}" in c[0] for c in before.values()), before)
        old_contacts = {l_uuid: f"sip:{l_uuid}@127.0.0.1:{old_port}" for l_uuid in old.registrant.records}
        cseqs = {l_uuid: r.cseq for l_uuid, r in old.registrant.records.items()}
        yield old.stopService()  # reg_unregister_on_stop false: the binding stays, as after kill -9

        new = start_uac(self, {"core": {"listen": [f"udp:127.0.0.1:{new_port}"], "timer_t1": 200}})
        ownership = Handed()
        settings = dataclasses.replace(registrant_settings(new.settings), reg_contact_addr=f"127.0.0.1:{new_port}")
        registrant = RegistrantService(settings, new.sip.stack, open_store(f"sqlite:///{path}", reactor), reactor,
                                       ownership=ownership)
        registrant.startService()
        self.addCleanup(registrant.stopService)
        yield wait_until(lambda: registrant.running and registrant._loop.running, WAIT)
        ownership.take(old_contacts)
        yield wait_until(lambda: registrant.counters()["regactive"] == ACCOUNTS, WAIT)
        for l_uuid, record in registrant.records.items():
            self.assertGreater(record.cseq, cseqs[l_uuid])  # the same Call-ID goes on above
            self.assertEqual(record.stale_contacts, ())
        after = {aor: registrar.contacts(aor) for aor in aors}
        self.assertEqual({aor: len(c) for aor, c in after.items()}, dict.fromkeys(aors, 1), after)
        self.assertTrue(all(f":{new_port}" in c[0] for c in after.values()), after)
