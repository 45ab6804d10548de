"""Accounts kept in MariaDB the way Kamailio keeps them, registered at a real Kamailio
registrar, and a database restart under txuac.

The uacreg table is made with Kamailio's own MySQL DDL (standard-create.sql, uac-create.sql
of table version 5, as the Debian kamailio-mysql-modules package installs it) and filled as
kamctl does, with INSERTs through the ``mariadb`` client: half the accounts while the table
is at version 5 (no contact_user), then the table is upgraded to 6 as Kamailio's upgrade
does (contact_user added, version row updated) and the other half get a contact_user.

Then MariaDB is stopped for a while under txuac: queries fail with a StoreError naming the
masked URL, the accounts in memory go on refreshing at the registrar (and one added by
uac.reg_add meanwhile registers), nothing is lost, and once the server is back txuac reads it
again without being told to.
"""

from __future__ import annotations

import os
import time

from twisted.internet import defer, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.kamailio import KamailioRegistrar
from tests.support.mariadb import MariaDBServer, sql_text
from tests.support.peers import free_port, missing_peer
from tests.support.services import start_uac, wait_online
from txuac.errors import StoreError

KAMAILIO_MYSQL = "/usr/share/kamailio/mysql"  # Debian's kamailio-mysql-modules
ACCOUNTS = 20  # half at table version 5, half added after the upgrade to 6
REALM = "test.example"
GRANTED = 4  # seconds asked for: a refresh every couple of seconds
OUTAGE = 5.0  # seconds MariaDB stays down
RECONNECT_TIMEOUT = 15.0
COLUMNS_V5 = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
              "auth_password", "auth_ha1", "auth_proxy", "expires", "flags", "reg_delay", "contact_addr", "socket")


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


def kamailio_ddl(name: str) -> str:
    path = os.path.join(KAMAILIO_MYSQL, name)
    if not os.path.isfile(path):
        missing_peer(f"Kamailio's MySQL schema {path} (kamailio-mysql-modules) is not installed")
    return path


class MySQLKamailioInteropTests(TestCase):
    timeout = 120

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def row(self, number: int, contact_user: str | None = None) -> dict:
        host, port = self.registrar.address
        user = f"acct{number:05d}"
        row = {"l_uuid": f"uuid{number:05d}", "l_username": user, "l_domain": "local.example",
               "r_username": user, "r_domain": REALM, "realm": REALM, "auth_username": user,
               "auth_password": self.registrar.password_for(user), "auth_ha1": "",
               "auth_proxy": f"sip:{host}:{port}", "expires": GRANTED, "flags": 0, "reg_delay": 0,
               "contact_addr": "", "socket": ""}
        if contact_user is not None:
            row["contact_user"] = contact_user
        return row

    def kamctl_insert(self, rows: list[dict]) -> None:
        """INSERTs through the mariadb client, as kamctl writes rows."""
        statements = []
        for row in rows:
            values = ", ".join(str(v) if isinstance(v, int) else sql_text(v) for v in row.values())
            statements.append(f"INSERT INTO uacreg ({', '.join(row)}) VALUES ({values});")
        self.db.mysql("\n".join(statements))

    def contact_of(self, number: int) -> str:
        """The binding of account ``number``: its l_uuid as the user, or its contact_user
        with the l_uuid in a ;line parameter (as Kamailio's uac writes it)."""
        if number < ACCOUNTS // 2:
            return f"sip:uuid{number:05d}@127.0.0.1:{self.sip_port}"
        return f"sip:line{number:05d}@127.0.0.1:{self.sip_port};line=uuid{number:05d}"

    @defer.inlineCallbacks
    def start(self):
        self.registrar = KamailioRegistrar(self, children=2)
        self.db = MariaDBServer(self)
        self.db.mysql(file=kamailio_ddl("standard-create.sql"))
        self.db.mysql(file=kamailio_ddl("uac-create.sql"))
        half = ACCOUNTS // 2
        self.kamctl_insert([self.row(n) for n in range(half)])
        self.db.mysql("ALTER TABLE uacreg ADD COLUMN contact_user VARCHAR(255) DEFAULT '' NOT NULL;\n"
                      "UPDATE version SET table_version = 6 WHERE table_name = 'uacreg';")
        self.kamctl_insert([self.row(n, f"line{n:05d}") for n in range(half, ACCOUNTS)])
        self.sip_port = free_port()
        self.service = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "timer_t1": 200},
            "uac": {"reg_db_url": self.db.url, "reg_contact_addr": f"127.0.0.1:{self.sip_port}",
                    "reg_retry_interval": 1, "reg_timer_interval": 1},
        })
        yield wait_online(self.service, ACCOUNTS, 30)
        return self.service.registrant

    @defer.inlineCallbacks
    def check_bindings(self, numbers):
        for number in numbers:
            contacts = yield self.registrar.contacts_async(f"sip:acct{number:05d}@{REALM}")
            self.assertEqual(contacts, [self.contact_of(number)], self.registrar.explain(f"acct{number:05d}"))

    @defer.inlineCallbacks
    def test_kamailio_tables_registered_and_a_restart_survived(self):
        registrant = yield self.start()
        self.assertEqual(self.service.registrant.store.table_version, 6)
        count = yield self.registrar.contact_count_async()
        self.assertEqual(count, ACCOUNTS, self.registrar.explain("usrloc contacts"))
        yield self.check_bindings(range(ACCOUNTS))
        records = dict(registrant.records)
        masked = self.db.url.replace(self.db.password, "***")

        # --- outage -------------------------------------------------------------------------
        accepted_before = self.registrar.statistic("accepted_regs")
        self.db.stop()
        stopped_at = time.monotonic()
        self.assertEqual((yield registrant.refresh("uuid00003")), -1)
        warnings = [m for m in self.messages() if m.startswith("refresh of uuid00003 failed")]
        self.assertEqual(len(warnings), 1, self.messages())
        self.assertIn(f"{masked} failed: the server is not up or not reachable", warnings[0])
        try:
            reloaded = yield registrant.reload(force=True)
        except StoreError as e:
            reloaded = e
        self.assertIsInstance(reloaded, StoreError)
        self.assertIn(masked, str(reloaded))
        self.assertNotIn(self.db.password, str(reloaded))
        self.assertEqual(registrant.records, records)
        # uac.reg_add while the database is down: the account registers from memory.
        added = self.row(ACCOUNTS, "")
        self.assertEqual(registrant.add(added), 1)
        lowest = ACCOUNTS
        while time.monotonic() < stopped_at + OUTAGE:
            lowest = min(lowest, registrant.counters()["regactive"])
            yield sleep(0.1)
        refreshed = self.registrar.statistic("accepted_regs") - accepted_before
        self.assertEqual(lowest, ACCOUNTS, "accounts went offline while the database was down")
        self.assertGreaterEqual(refreshed, ACCOUNTS, "the accounts were not refreshed during the outage")
        yield wait_online(self.service, ACCOUNTS + 1, 10)
        contacts = yield self.registrar.contacts_async(f"sip:acct{ACCOUNTS:05d}@{REALM}")
        self.assertEqual(contacts, [f"sip:uuid{ACCOUNTS:05d}@127.0.0.1:{self.sip_port}"])

        # --- back ---------------------------------------------------------------------------
        self.db.start()
        self.db.mysql("UPDATE uacreg SET expires = 30 WHERE l_uuid = 'uuid00003'")
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while (yield registrant.refresh("uuid00003")) != 1:
            self.assertLess(time.monotonic(), deadline, "the store did not come back")
            yield sleep(0.2)
        self.assertEqual(registrant.records["uuid00003"].expires, 30)
        self.assertEqual((yield registrant.reload(force=True)), 1)
        # The reload forgets the account only reg_add knew (as Kamailio's reg_reload does).
        self.assertEqual(sorted(registrant.records), sorted(records))
        yield wait_online(self.service, ACCOUNTS, 15)
        yield self.check_bindings((0, ACCOUNTS // 2 - 1, ACCOUNTS // 2, ACCOUNTS - 1))
        messages = self.messages()
        self.assertEqual(len([m for m in messages if m.startswith(f"Lost the connection to {masked}")]), 1)
        self.assertEqual(len([m for m in messages if m.startswith(f"Reconnected to {masked}")]), 1)
        for message in messages:
            self.assertNotIn(self.db.password, message)
