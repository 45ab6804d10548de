"""Remote registration against a real Kamailio registrar (registrar, usrloc, auth) on loopback.

500 accounts are loaded from SQLite, and again from PostgreSQL (a cluster the test
starts): every account ends online in txuac and present in Kamailio's usrloc with
the right Contact, and send_unregister removes the binding there.
"""

from __future__ import annotations

import os

import psycopg2
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.support.accounts import REALM, account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.postgres import PostgresCluster
from tests.support.services import start_uac, wait_online
from tests.support.stores import SCHEMAS, insert_rows, sqlite_uacreg
from txuac.service import UACService


ACCOUNTS = 500


class RegistrationInteropMixin:
    """Start txuac on a known UDP port against ``registrar`` with ``reg_db_url``."""

    timeout = 120

    def start_txuac(self, reg_db_url: str) -> UACService:
        self.sip_port = free_port()
        return start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "timer_t1": 200},
            "uac": {"reg_db_url": reg_db_url, "reg_contact_addr": f"127.0.0.1:{self.sip_port}",
                    "reg_retry_interval": 5},
        })

    def wait_online(self, service: UACService, count: int, timeout: float = 60.0):
        return wait_online(service, count, timeout)

    @defer.inlineCallbacks
    def check_registered(self, registrar: KamailioRegistrar, service: UACService):
        yield self.wait_online(service, ACCOUNTS)
        count = yield registrar.contact_count_async()
        self.assertEqual(count, ACCOUNTS, registrar.explain("usrloc contacts"))
        for number in (0, ACCOUNTS // 2, ACCOUNTS - 1):
            contacts = yield registrar.contacts_async(f"sip:acct{number:05d}@{REALM}")
            self.assertEqual(contacts, [f"sip:uuid{number:05d}@127.0.0.1:{self.sip_port}"])
        self.assertEqual(service.registrant.status("uuid00000"), 1)
        # send_unregister removes the binding at the registrar; the account is left disabled.
        yield service.registrant.send_unregister("uuid00007")
        remaining = yield registrar.wait_for_contacts(f"sip:acct00007@{REALM}", 0)
        self.assertEqual(remaining, [])
        self.assertEqual(service.registrant.records["uuid00007"].state(reactor.seconds()).value, "disabled")
        self.assertEqual(service.registrant.status("uuid00007"), -3)


class SQLiteRegistrationTests(RegistrationInteropMixin, TestCase):

    @defer.inlineCallbacks
    def test_500_accounts_from_sqlite(self):
        registrar = KamailioRegistrar(self, children=4)
        path = yield sqlite_uacreg(self, account_rows(registrar, ACCOUNTS))
        service = self.start_txuac(f"sqlite:///{path}")
        yield self.check_registered(registrar, service)

    @defer.inlineCallbacks
    def test_sha256_registrar(self):
        registrar = KamailioRegistrar(self, algorithm="SHA-256")
        path = yield sqlite_uacreg(self, account_rows(registrar, 20))
        service = self.start_txuac(f"sqlite:///{path}")
        yield self.wait_online(service, 20)
        count = yield registrar.contact_count_async()
        self.assertEqual(count, 20, registrar.explain())


class PostgresRegistrationTests(RegistrationInteropMixin, TestCase):

    @defer.inlineCallbacks
    def test_500_accounts_from_postgresql(self):
        registrar = KamailioRegistrar(self, children=4)
        cluster = PostgresCluster(self)
        cluster.psql(file=os.path.join(SCHEMAS, "postgres.sql"))
        connection = psycopg2.connect(host=cluster.host, port=cluster.port, user=cluster.user,
                                      password=cluster.password, dbname=cluster.database)
        insert_rows(connection, account_rows(registrar, ACCOUNTS), "%s")
        connection.close()
        service = self.start_txuac(cluster.url)
        yield self.check_registered(registrar, service)
