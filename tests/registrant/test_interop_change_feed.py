"""Live changes to uacreg ([uac] reg_db_watch) against a real PostgreSQL and a real MariaDB,
with a real Kamailio registrar: rows inserted, updated and deleted by plain SQL (the database's
own client, as an operator) reach a running txuac without uac.reg_reload, and a database
restart under the feed is caught up (a row inserted while nobody listened is registered).
"""

from __future__ import annotations

import os
import time

from twisted.internet import defer, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.accounts import REALM, account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.mariadb import MariaDBServer
from tests.support.peers import free_port
from tests.support.postgres import SUPERUSER, PostgresCluster
from tests.support.services import start_uac, wait_online, wait_until
from tests.support.stores import SCHEMAS
from txuac.registrant.record import State
from txuac.registrant.store.mysql import MySQLStore
from txuac.registrant.store.postgres import PostgresStore

# Seconds from an SQL commit to the binding at the registrar. The feed's part is a 50 ms
# batch window (PostgreSQL) or a poll twice a second (MySQL); the rest is one REGISTER with its
# challenge, and reading the registrar's usrloc, all slower on a busy test machine.
LIVE_DEADLINE = 5.0
RECONNECT_TIMEOUT = 30.0
NODES = 6  # feeds started at once on one database
OUTAGE = 2.5  # seconds MariaDB is down: several polls of the change log fail


def sql_value(value) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


class ChangeFeedInteropMixin:
    """A TestCase with ``make_database()`` (the uacreg table made, ``self.db``), ``sql(text)``
    (as the operator, through the database's own client) and ``restart_database()``."""

    timeout = 120

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    @defer.inlineCallbacks
    def start(self, rows: int = 3):
        self.registrar = KamailioRegistrar(self)
        self.rows = account_rows(self.registrar, 6)
        self.make_database()
        for row in self.rows[:rows]:
            self.insert(row)
        self.sip_port = free_port()
        self.service = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "timer_t1": 200},
            "uac": {"reg_db_url": self.db.url, "reg_contact_addr": f"127.0.0.1:{self.sip_port}",
                    "reg_retry_interval": 60, "reg_db_watch": True},
        })
        yield wait_online(self.service, rows, 30)

    def insert(self, row: dict) -> None:
        self.sql(f"INSERT INTO uacreg ({', '.join(row)}) VALUES ({', '.join(sql_value(v) for v in row.values())})")

    def state_of(self, l_uuid: str) -> State | None:
        record = self.service.registrant.records.get(l_uuid)
        return None if record is None else record.state(reactor.seconds())

    def aor(self, number: int) -> str:
        return f"sip:acct{number:05d}@{REALM}"

    @defer.inlineCallbacks
    def timed_contacts(self, number: int, count: int):
        """(seconds, contacts) until account ``number`` has ``count`` bindings at the registrar."""
        started = time.monotonic()
        contacts = yield self.registrar.wait_for_contacts(self.aor(number), count, timeout=30)
        return time.monotonic() - started, contacts

    @defer.inlineCallbacks
    def test_insert_update_and_delete_reach_the_registrar(self):
        yield self.start()
        self.insert(self.rows[3])
        elapsed, contacts = yield self.timed_contacts(3, 1)
        self.assertEqual(contacts, [f"sip:uuid00003@127.0.0.1:{self.sip_port}"])
        self.assertLess(elapsed, LIVE_DEADLINE, "INSERT")

        # A wrong password fails (no binding); the right one, set by UPDATE, registers.
        wrong = dict(self.rows[4], auth_password="not-the-password")
        self.insert(wrong)
        yield wait_until(lambda: self.state_of("uuid00004") is State.FAILED, timeout=30)
        self.assertEqual((yield self.registrar.contacts_async(self.aor(4))), [])
        self.sql(f"UPDATE uacreg SET auth_password = {sql_value(self.rows[4]['auth_password'])} "
                 f"WHERE l_uuid = 'uuid00004'")
        elapsed, contacts = yield self.timed_contacts(4, 1)
        self.assertLess(elapsed, LIVE_DEADLINE, "UPDATE")

        self.sql("DELETE FROM uacreg WHERE l_uuid = 'uuid00001'")
        elapsed, contacts = yield self.timed_contacts(1, 0)
        self.assertLess(elapsed, LIVE_DEADLINE, "DELETE")
        self.assertNotIn("uuid00001", self.service.registrant.records)
        self.assertEqual((yield self.registrar.contacts_async(self.aor(0))), [f"sip:uuid00000@127.0.0.1:{self.sip_port}"])

    @defer.inlineCallbacks
    def test_nodes_starting_together_all_follow_the_change_log(self):
        """Several nodes making the trigger(s) at once on a fresh database: none fails to
        (one makes them, the others find them)."""
        self.make_database()
        feeds = [self.STORE(self.db.url, reactor).change_feed() for _ in range(NODES)]
        yield defer.gatherResults([feed.start(lambda l_uuids: None) for feed in feeds])
        for feed in feeds:
            self.addCleanup(feed.stop)
        self.assertEqual([feed.trigger_problem for feed in feeds], [None] * NODES, self.messages())
        self.assertEqual(self.trigger_count(), self.TRIGGERS)

    @defer.inlineCallbacks
    def test_a_renamed_l_uuid_moves_the_binding(self):
        """UPDATE of the key: the trigger names the old l_uuid and the new one; the old
        account's binding goes, the new one's comes, on the same AOR."""
        yield self.start(rows=1)
        self.sql("UPDATE uacreg SET l_uuid = 'renamed' WHERE l_uuid = 'uuid00000'")
        yield wait_until(lambda: self.service.registrant.status("renamed") == 1, timeout=LIVE_DEADLINE)
        wanted = [f"sip:renamed@127.0.0.1:{self.sip_port}"]
        deadline = time.monotonic() + LIVE_DEADLINE
        contacts = yield self.registrar.contacts_async(self.aor(0))
        while contacts != wanted and time.monotonic() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
            contacts = yield self.registrar.contacts_async(self.aor(0))
        self.assertEqual(contacts, wanted, self.registrar.explain())
        self.assertNotIn("uuid00000", self.service.registrant.records)

    @defer.inlineCallbacks
    def test_a_restart_is_caught_up(self):
        """The row goes in once the database is back, before txuac has noticed: the catch-up
        read after reconnecting registers it, and changes are followed again after."""
        yield self.start(rows=2)
        yield self.restart_database()
        self.insert(self.rows[2])
        yield self.registrar.wait_for_contacts(self.aor(2), 1, timeout=RECONNECT_TIMEOUT)
        self.assertTrue(any(self.CAUGHT_UP in m for m in self.messages()), self.messages())
        # And it follows changes again.
        self.insert(self.rows[3])
        elapsed, contacts = yield self.timed_contacts(3, 1)
        self.assertLess(elapsed, LIVE_DEADLINE)


class PostgresChangeFeedTests(ChangeFeedInteropMixin, TestCase):
    CAUGHT_UP = "reading every account"
    STORE = PostgresStore
    TRIGGERS = 1

    def trigger_count(self) -> int:
        return int(self.db.psql("SELECT count(*) FROM pg_trigger WHERE tgname = 'txuac_uacreg_changed'"))

    def make_database(self):
        self.db = PostgresCluster(self)
        self.db.psql(file=os.path.join(SCHEMAS, "postgres.sql"))

    def restart_database(self):
        """Down and up again without the reactor running in between: the notification of
        the row inserted next reaches no one (nobody LISTENs yet)."""
        self.db.restart()
        return defer.succeed(None)

    @defer.inlineCallbacks
    def test_the_trigger_is_made_once_and_a_bulk_insert_is_one_batch(self):
        yield self.start(rows=1)
        self.assertEqual(self.trigger_count(), 1)
        feed = self.service.registrant.changes
        before = feed.batches
        self.sql("INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, auth_username, "
                 "auth_password, auth_ha1, auth_proxy, expires, flags, reg_delay, contact_addr, socket, contact_user) "
                 "SELECT 'bulk' || n, 'b' || n, 'local.example', 'b' || n, 'test.example', 'test.example', 'b' || n, "
                 "'x', '', 'sip:127.0.0.1:9', 600, 1, 0, '', '', '' FROM generate_series(1, 2000) AS n")
        yield wait_until(lambda: len(self.service.registrant.records) == 2001, timeout=30)
        self.assertEqual(feed.batches - before, 1)

    @defer.inlineCallbacks
    def test_without_owning_the_table_a_warning_names_the_schema_file(self):
        """uacreg owned by another role: no trigger (a warning says what to run), and once
        the operator runs conf/schema/postgres-feed.sql as the owner, changes are followed
        without a restart (the feed was listening all along)."""
        self.make_database = self.make_database_owned_by_the_superuser
        yield self.start(rows=1)
        warnings = [m for m in self.messages() if "Cannot create the trigger" in m]
        self.assertEqual(len(warnings), 1, self.messages())
        self.assertIn("conf/schema/postgres-feed.sql", warnings[0])
        self.db.psql(file=os.path.join(SCHEMAS, "postgres-feed.sql"), user=SUPERUSER)
        self.insert(self.rows[1])
        elapsed, contacts = yield self.timed_contacts(1, 1)
        self.assertLess(elapsed, LIVE_DEADLINE)

    def make_database_owned_by_the_superuser(self):
        self.db = PostgresCluster(self)
        self.db.psql(file=os.path.join(SCHEMAS, "postgres.sql"), user=SUPERUSER)
        self.db.psql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{self.db.user}"; '
                     f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{self.db.user}"', user=SUPERUSER)

    def sql(self, text: str) -> None:
        self.db.psql(text, user=SUPERUSER)


class MariaDBChangeFeedTests(ChangeFeedInteropMixin, TestCase):
    CAUGHT_UP = "reading every account"
    STORE = MySQLStore
    TRIGGERS = 3

    def trigger_count(self) -> int:
        return int(self.db.mysql("SELECT COUNT(*) FROM information_schema.triggers WHERE event_object_table = 'uacreg'"))

    def make_database(self):
        self.db = MariaDBServer(self)
        self.db.mysql(file=os.path.join(SCHEMAS, "mysql.sql"))

    def sql(self, text: str) -> None:
        self.db.mysql(text)

    @defer.inlineCallbacks
    def restart_database(self):
        """Down for a few polls (the log keeps what changes, but a restarted server may count
        its seq anew: the feed reads everything once it works again)."""
        self.db.stop()
        yield task.deferLater(reactor, OUTAGE, lambda: None)
        self.db.start()

    @defer.inlineCallbacks
    def test_without_the_trigger_privilege_a_checksum_is_followed(self):
        self.make_database = self.make_database_without_trigger_privilege
        yield self.start(rows=1)
        warnings = [m for m in self.messages() if "Cannot create the change log" in m]
        self.assertEqual(len(warnings), 1, self.messages())
        self.assertIn("GRANT TRIGGER ON uacreg", warnings[0])
        self.assertIn("log_bin_trust_function_creators", warnings[0])
        self.insert(self.rows[1])
        elapsed, contacts = yield self.timed_contacts(1, 1)
        self.assertLess(elapsed, LIVE_DEADLINE)
        self.sql("DELETE FROM uacreg WHERE l_uuid = 'uuid00000'")
        yield self.timed_contacts(0, 0)
        # The shipped file makes what the user of reg_db_url could not.
        self.db.mysql(file=os.path.join(SCHEMAS, "mysql-feed.sql"))
        self.assertEqual(self.trigger_count(), 3)

    def make_database_without_trigger_privilege(self):
        MariaDBChangeFeedTests.make_database(self)
        self.db.mysql("\n".join(f"REVOKE TRIGGER ON `{self.db.database}`.* FROM '{self.db.user}'@'{host}';"
                                for host in ("127.0.0.1", "localhost")))

