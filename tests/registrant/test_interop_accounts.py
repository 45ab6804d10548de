"""Accounts against a real Kamailio registrar (registrar, usrloc, auth) on loopback.

- After a txuac restart (the UACService stopped, a new one started on the same SQLite
  file), Kamailio's usrloc holds one binding per account, with the same Call-ID as before
  and a higher CSeq: the Call-ID was kept in our own table (uacreg_txuac).
- A live reload unregisters an account removed from uacreg (its binding disappears from
  usrloc) and moves the binding of an account whose Contact changed (the old one is
  unregistered, the new one registered), while the other accounts stay as they were.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.support.accounts import REALM, account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.services import wait_online
from tests.support.stores import insert_rows
from txuac.config import settings_from_dict
from txuac.registrant.store import open_store
from txuac.service import UACService

ACCOUNTS = 20


class AccountsInteropTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = KamailioRegistrar(self)
        self.path = os.path.abspath(self.mktemp()) + ".sqlite"
        store = open_store(f"sqlite:///{self.path}", reactor)  # creates the file with both tables
        yield store.open()
        yield store.close()
        connection = sqlite3.connect(self.path)
        insert_rows(connection, account_rows(self.registrar, ACCOUNTS), "?")
        connection.close()
        self.sip_port = free_port()

    @defer.inlineCallbacks
    def start_txuac(self):
        service = UACService(settings_from_dict({
            "core": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "timer_t1": 200},
            "uac": {"reg_db_url": f"sqlite:///{self.path}", "reg_contact_addr": f"127.0.0.1:{self.sip_port}",
                    "reg_retry_interval": 5, "reload_delta": 0},
            "rpc": {"enabled": False},
        }), reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        yield self.wait_online(service, ACCOUNTS)
        return service

    def wait_online(self, service: UACService, count: int, timeout: float = 60.0):
        return wait_online(service, count, timeout)

    @defer.inlineCallbacks
    def bindings(self) -> dict[str, list[dict]]:
        """usrloc's bindings of every account's AOR."""
        result = {}
        for number in range(ACCOUNTS):
            result[number] = yield self.registrar.bindings_async(f"sip:acct{number:05d}@{REALM}")
        return result

    def execute(self, sql: str) -> None:
        connection = sqlite3.connect(self.path)
        try:
            connection.execute(sql)
            connection.commit()
        finally:
            connection.close()

    @defer.inlineCallbacks
    def test_restart_keeps_one_binding_per_account_with_the_same_call_id(self):
        first = yield self.start_txuac()
        before = yield self.bindings()
        self.assertTrue(all(len(b) == 1 for b in before.values()), self.registrar.explain(repr(before)))
        yield first.stopService()  # a clean stop (bindings stay: reg_unregister_on_stop is off)
        stored = dict(sqlite3.connect(self.path).execute("SELECT l_uuid, call_id FROM uacreg_txuac").fetchall())
        self.assertEqual(len(stored), ACCOUNTS)

        second = yield self.start_txuac()
        mark = reactor.seconds()
        # Every account registered again after the restart: usrloc's CSeq went up.
        deadline = mark + 30
        while True:
            after = yield self.bindings()
            if all(int(after[n][0]["CSeq"]) > int(before[n][0]["CSeq"]) for n in after if after[n]):
                break
            self.assertLess(reactor.seconds(), deadline, self.registrar.explain(repr(after)))
            yield task.deferLater(reactor, 0.2, lambda: None)
        for number in range(ACCOUNTS):
            self.assertEqual(len(after[number]), 1, self.registrar.explain(repr(after[number])))
            self.assertEqual(after[number][0]["Call-ID"], before[number][0]["Call-ID"])
            self.assertEqual(after[number][0]["Call-ID"], stored[f"uuid{number:05d}"])
        self.assertEqual((yield self.registrar.contact_count_async()), ACCOUNTS)
        self.assertEqual(second.registrant.counters()["regactive"], ACCOUNTS)

    @defer.inlineCallbacks
    def test_live_reload_unregisters_removed_and_moved_bindings(self):
        service = yield self.start_txuac()
        registrant = service.registrant
        records = dict(registrant.records)
        self.execute("DELETE FROM uacreg WHERE l_uuid = 'uuid00003'")
        self.execute("UPDATE uacreg SET contact_user = 'line7' WHERE l_uuid = 'uuid00007'")
        result = yield registrant.reload()
        self.assertEqual(result, 1)
        remaining = yield self.registrar.wait_for_contacts(f"sip:acct00003@{REALM}", 0)
        self.assertEqual(remaining, [])
        self.assertNotIn("uuid00003", registrant.records)
        moved = yield self.registrar.wait_for_contacts(f"sip:acct00007@{REALM}", 1)
        deadline = reactor.seconds() + 10
        while moved != [f"sip:line7@127.0.0.1:{self.sip_port};line=uuid00007"]:
            self.assertLess(reactor.seconds(), deadline, self.registrar.explain(repr(moved)))
            yield task.deferLater(reactor, 0.1, lambda: None)
            moved = yield self.registrar.contacts_async(f"sip:acct00007@{REALM}")
        yield self.wait_online(service, ACCOUNTS - 1)
        # The others were not touched: the same records, one binding each.
        for l_uuid, record in records.items():
            if l_uuid not in ("uuid00003", "uuid00007"):
                self.assertIs(registrant.records[l_uuid], record)
        self.assertEqual((yield self.registrar.contact_count_async()), ACCOUNTS - 1)
