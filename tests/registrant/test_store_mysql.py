"""The MySQL/MariaDB store against a real MariaDB server (tests/support/mariadb.py).

It keeps the contract the SQLite and PostgreSQL stores keep (StoreContract), on tables made
the way Kamailio makes them: its own MySQL DDL (standard-create.sql, uac-create.sql of table
version 5, as the Debian kamailio-mysql-modules package ships it) loaded unchanged, and for
version 6 Kamailio's upgrade (contact_user added, the version row updated). Then what is
MySQL's own: the shipped schema files, utf8mb4 values, URLs (TCP, socket, ``mariadb://``),
open failures in one line naming the masked URL, and a server restart survived.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import pymysql
from twisted.internet import defer, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.support.mariadb import MariaDBServer
from tests.support.peers import free_port, missing_peer
from tests.support.store_contract import StoreContract, account, eventually, loaded
from tests.support.stores import insert_rows
from txuac.errors import ConfigError, StoreError, StoreUnreachable
from txuac.registrant.store import COLUMNS, EXT_COLUMNS, AccountState, IRegistrationStore, open_store
from txuac.registrant.store.mysql import MySQLStore
from txuac.registrant.store.url import DEFAULT_MYSQL_SOCKET, parse_store_url

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MYSQL_SCHEMA = os.path.join(ROOT, "conf", "schema", "mysql.sql")
MYSQL_EXT_SCHEMA = os.path.join(ROOT, "conf", "schema", "mysql-txuac.sql")
KAMAILIO_MYSQL = "/usr/share/kamailio/mysql"  # Debian's kamailio-mysql-modules
# Kamailio's upgrade of uacreg from table version 5 to 6.
KAMAILIO_UPGRADE_TO_6 = ("ALTER TABLE uacreg ADD COLUMN contact_user VARCHAR(255) DEFAULT '' NOT NULL;\n"
                         "UPDATE version SET table_version = 6 WHERE table_name = 'uacreg';\n")
RECONNECT_WAIT = 15.0


def kamailio_ddl(name: str) -> str:
    """The path of Kamailio's own MySQL DDL file ``name`` (skip or fail when it is not installed)."""
    path = os.path.join(KAMAILIO_MYSQL, name)
    if not os.path.isfile(path):
        missing_peer(f"Kamailio's MySQL schema {path} (kamailio-mysql-modules) is not installed")
    return path


def create_table_lines(text: str) -> list[str]:
    """The column and constraint lines of ``CREATE TABLE `uacreg``` in a DDL text."""
    body = text[text.index("CREATE TABLE `uacreg` ("):]
    body = body[body.index("(") + 1:body.index("\n)")]
    return [line.strip().rstrip(",") for line in body.strip().splitlines()]


class MySQLURLTests(SynchronousTestCase):
    def test_as_kamailio_writes_it(self):
        url = parse_store_url("mysql://kamailio:kamailiorw@db.example.com:3307/kamailio")
        self.assertEqual((url.kind, url.host, url.port, url.user, url.password, url.database, url.unix_socket),
                         ("mysql", "db.example.com", 3307, "kamailio", "kamailiorw", "kamailio", None))
        self.assertEqual(url.masked, "mysql://kamailio:***@db.example.com:3307/kamailio")
        self.assertEqual(parse_store_url("mysql://u:pw@127.0.0.1/db").port, 3306)
        url = parse_store_url("mysql://user:p:a@ss@127.0.0.1/db")
        self.assertEqual(url.password, "p:a@ss")

    def test_localhost_is_the_default_socket(self):
        url = parse_store_url("mysql://kamailio:kamailiorw@localhost/kamailio")
        self.assertEqual(url.unix_socket, DEFAULT_MYSQL_SOCKET)
        url = parse_store_url("mysql://u:pw@localhost/db?unix_socket=/var/run/mysqld/other.sock")
        self.assertEqual((url.unix_socket, url.database, url.masked),
                         ("/var/run/mysqld/other.sock", "db", "mysql://u:***@localhost/db?unix_socket=/var/run/"
                                                             "mysqld/other.sock"))

    def test_mariadb_is_an_alias(self):
        url = parse_store_url("mariadb://u:pw@10.0.0.5/db")
        self.assertEqual((url.kind, url.host, url.port), ("mysql", "10.0.0.5", 3306))

    def test_bad_urls(self):
        for text in ("mysql://u:pw@h/db?sslmode=1", "mysql://u:pw@h/db?unix_socket=rel/sock",
                     "mysql://u:pw@h/db?unix_socket=", "mysql://u:pw@h/db?unix_socket=/a&b=c", "mysql://u:pw@h",
                     "mysql://u:pw@h:99999/db", "mysql://u:hunter2@h/a/b"):
            with self.assertRaises(ConfigError, msg=text) as caught:
                parse_store_url(text)
            self.assertNotIn("hunter2", str(caught.exception))
            self.assertIn("reg_db_url", str(caught.exception))

    def test_open_store_picks_mysql(self):
        for text in ("mysql://u:hunter2@127.0.0.1/db", "mariadb://u:hunter2@127.0.0.1/db"):
            store = open_store(text, table="accounts")
            self.assertIsInstance(store, MySQLStore)
            verifyObject(IRegistrationStore, store)
            self.assertEqual(store.table, "accounts")
            self.assertNotIn("hunter2", repr(store) + store.url)


class MySQLSchemaFileTests(SynchronousTestCase):
    def test_uacreg_is_kamailios_with_contact_user(self):
        """The shipped table is Kamailio's version 5 table, column for column and size for
        size, with version 6's contact_user (as PostgreSQL's file has it) before socket."""
        with open(kamailio_ddl("uac-create.sql")) as f:
            kamailio = create_table_lines(f.read())
        with open(MYSQL_SCHEMA) as f:
            ours = create_table_lines(f.read())
        contact_user = "`contact_user` VARCHAR(255) DEFAULT '' NOT NULL"
        self.assertEqual([line for line in ours if line != contact_user], kamailio)
        self.assertEqual(ours.index(contact_user), ours.index("`socket` VARCHAR(128) DEFAULT '' NOT NULL") - 1)
        with open(os.path.join(ROOT, "conf", "schema", "postgres.sql")) as f:
            self.assertIn("contact_user VARCHAR(255) DEFAULT '' NOT NULL", f.read())

    def test_version_table_is_kamailios(self):
        with open(kamailio_ddl("standard-create.sql")) as f:
            kamailio = f.read().split(";")[0].replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
        with open(MYSQL_SCHEMA) as f:
            self.assertIn(kamailio, f.read())


class MySQLStoreTests(StoreContract, TestCase):
    timeout = 60

    def setUp(self):
        self.db = MariaDBServer(self)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def tearDown(self):
        # Nothing we log may hold the password.
        for event in self.events:
            self.assertNotIn(self.db.password, formatEvent(event))
            self.assertNotIn(self.db.password, repr(event))

    def new_store(self, **kwargs):
        return MySQLStore(self.db.url, **kwargs)

    def connect(self):
        connection = pymysql.connect(host=self.db.host, port=self.db.port, user=self.db.user,
                                     password=self.db.password, database=self.db.database, charset="utf8mb4")
        self.addCleanup(connection.close)
        return connection

    def execute(self, sql, parameters=()):
        connection = self.connect()
        with connection.cursor() as cursor:
            cursor.execute(sql, parameters or None)
        connection.commit()

    def rows_of(self, sql):
        return [tuple(line.split("\t")) for line in self.db.mysql(sql).splitlines()]

    def make_tables(self, version, rows=(), table_version=None, with_table=True, with_version=True):
        """Kamailio's own DDL files, unchanged; version 6 by Kamailio's upgrade."""
        with open(kamailio_ddl("uac-create.sql")) as f:
            uac_create = f.read()
        if with_version:
            self.db.mysql(file=kamailio_ddl("standard-create.sql"))
        if with_table and with_version:
            self.db.mysql(file=kamailio_ddl("uac-create.sql"))
        elif with_table:
            self.db.mysql(uac_create.split(";")[0])  # CREATE TABLE alone: there is no version table
        elif with_version:
            self.db.mysql(f"INSERT INTO version (table_name, table_version) VALUES ('uacreg', {version})")
        if version == 6 and with_table:
            self.db.mysql(KAMAILIO_UPGRADE_TO_6 if with_version else KAMAILIO_UPGRADE_TO_6.split("\n")[0])
        if table_version is not None and with_version:
            if table_version:
                self.db.mysql(f"UPDATE version SET table_version = {table_version} WHERE table_name = 'uacreg'")
            else:
                self.db.mysql("DELETE FROM version WHERE table_name = 'uacreg'")
        if rows:
            columns = [c for c in COLUMNS if version >= 6 or c != "contact_user"]
            insert_rows(self.connect(), [{c: row[c] for c in columns} for row in rows], "%s")

    # -- MySQL's own ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_kamailio_ddl_loads_unchanged(self):
        """Version 5 straight from uac-create.sql, then upgraded in place to 6 as Kamailio does."""
        self.make_tables(5, [account(1), account(2)])
        store = yield self.opened()
        self.assertEqual(store.table_version, 5)
        self.assertEqual(self.rows_of("SELECT table_version FROM version WHERE table_name = 'uacreg'"), [("5",)])
        yield store.close()
        self.db.mysql(KAMAILIO_UPGRADE_TO_6)
        self.execute("UPDATE uacreg SET contact_user = %s WHERE l_uuid = %s", ("line2", "uuid-2"))
        yield store.open()
        self.assertEqual(store.table_version, 6)
        rows = {r["l_uuid"]: r for r in (yield store.load_all())}
        self.assertEqual((rows["uuid-1"]["contact_user"], rows["uuid-2"]["contact_user"]), ("", "line2"))

    @defer.inlineCallbacks
    def test_schema_file_in_an_empty_database(self):
        """conf/schema/mysql.sql run with the mysql client in an empty database: txuac reads
        it, then adds its own table; run again, it changes nothing."""
        self.db.mysql(file=MYSQL_SCHEMA)
        self.assertEqual(self.rows_of("SELECT table_name, table_version FROM version ORDER BY table_name"),
                         [("uacreg", "6"), ("version", "1")])
        store = yield self.opened()
        self.assertEqual((store.table_version, store.ext_table), (6, "uacreg_txuac"))
        self.assertEqual((yield store.load_all()), [])
        insert_rows(self.connect(), [account(1)], "%s")
        self.assertEqual((yield store.load_all()), [loaded(account(1))])
        self.assertRaises(Exception, self.db.mysql, file=MYSQL_SCHEMA)
        self.assertEqual(self.rows_of("SELECT count(*) FROM uacreg"), [("1",)])
        self.assertEqual(self.rows_of("SELECT @@character_set_database, CHARACTER_SET_NAME FROM "
                                      "information_schema.columns WHERE table_schema = DATABASE() AND "
                                      "table_name = 'uacreg' AND column_name = 'realm'"), [("utf8mb4", "utf8mb4")])

    @defer.inlineCallbacks
    def test_our_table_made_with_the_documented_command(self):
        self.make_tables(6, [account(1)])
        self.db.mysql(file=MYSQL_EXT_SCHEMA)
        self.db.mysql(file=MYSQL_EXT_SCHEMA)  # idempotent
        store = yield self.opened()
        self.assertEqual(store.ext_table, "uacreg_txuac")
        self.assertEqual([m for m in self.messages() if m.startswith("Created")], [])
        # The operator's way to set a column of ours, as the file's header says.
        self.execute("INSERT INTO uacreg_txuac (l_uuid, user_agent) VALUES (%s, %s) "
                     "ON DUPLICATE KEY UPDATE user_agent = VALUES(user_agent)", ("uuid-1", "PBX/1"))
        self.assertEqual((yield store.load_one("uuid-1"))["user_agent"], "PBX/1")

    @defer.inlineCallbacks
    def test_our_table_cannot_be_created(self):
        """A user who may only read: uacreg is read, a warning says why our table is not used."""
        self.make_tables(6, [account(1)])
        self.db.mysql(f"REVOKE ALL ON `{self.db.database}`.* FROM '{self.db.user}'@'127.0.0.1'; "
                      f"GRANT SELECT ON `{self.db.database}`.* TO '{self.db.user}'@'127.0.0.1'", database="mysql")
        store = yield self.opened()
        self.assertIsNone(store.ext_table)
        self.assertEqual((yield store.load_all()), [loaded(account(1))])
        warnings = [m for m in self.messages() if m.startswith("Without the uacreg_txuac table")]
        self.assertEqual(len(warnings), 1, self.messages())
        self.assertIn("cannot create it: CREATE command denied", warnings[0])

    @defer.inlineCallbacks
    def test_utf8mb4_values_survive(self):
        realm = "réseau-☎-🎉.example"
        password = "pässwörd🔑'\"\\"
        self.make_tables(6, [account(1, realm=realm, auth_password=password)])
        store = yield self.opened()
        self.execute("INSERT INTO uacreg_txuac (l_uuid, user_agent, extra_headers) VALUES (%s, %s, %s)",
                     ("uuid-1", "txuac 🚀", "X-Note: naïve ✓"))
        yield store.save_states([AccountState("uuid-1", "cid-ü@host", 3, "urn:uuid:1")])
        row = yield store.load_one("uuid-1")
        self.assertEqual((row["realm"], row["auth_password"], row["user_agent"], row["extra_headers"],
                          row["call_id"]), (realm, password, "txuac 🚀", "X-Note: naïve ✓", "cid-ü@host"))
        self.assertEqual((yield store.load_all())[0], row)
        self.assertEqual(self.rows_of("SELECT realm FROM uacreg"), [(realm,)])

    @defer.inlineCallbacks
    def test_queries_run_off_the_reactor_thread(self):
        self.make_tables(6)
        store = yield self.opened()
        threads = []
        ticks = []
        ticker = task.LoopingCall(lambda: ticks.append(time.monotonic()))
        ticker.start(0.02)
        self.addCleanup(lambda: ticker.running and ticker.stop())

        def slow(txn):
            threads.append(threading.current_thread())
            txn.execute("SELECT SLEEP(0.4)")
            return txn.fetchall()

        yield store._pool.runInteraction(slow)
        ticker.stop()
        self.assertIsNot(threads[0], threading.main_thread())
        self.assertGreater(len(ticks), 8)  # the reactor kept running while the server slept

    @defer.inlineCallbacks
    def test_url_is_masked(self):
        self.make_tables(6)
        store = yield self.opened()
        self.assertEqual(store.url, self.db.url.replace(self.db.password, "***"))
        self.assertNotIn(self.db.password, repr(store))
        self.assertIn(f"Opened {store.url}: uacreg table version 6", self.messages())

    @defer.inlineCallbacks
    def test_unix_socket_and_mariadb_scheme(self):
        self.make_tables(6, [account(1)])
        for url in (self.db.socket_url, self.db.url.replace("mysql://", "mariadb://")):
            store = open_store(url)
            self.addCleanup(store.close)
            yield store.open()
            self.assertEqual([r["l_uuid"] for r in (yield store.load_all())], ["uuid-1"])
            yield store.close()

    @defer.inlineCallbacks
    def assert_open_fails_in_one_line(self, url: str, *reasons: str, unreachable: bool = False):
        store = MySQLStore(url)
        self.addCleanup(store.close)
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertEqual(isinstance(failure, StoreUnreachable), unreachable)
        text = str(failure)
        self.assertNotIn("\n", text)
        self.assertIn(f"cannot open {store.url}: ", text)
        for expected in reasons:
            self.assertIn(expected, text)
        yield self.assertFailure(store.load_all(), StoreError)
        return text

    @defer.inlineCallbacks
    def test_wrong_password(self):
        self.make_tables(6)
        text = yield self.assert_open_fails_in_one_line(self.db.url.replace(self.db.password, "not:the@password"),
                                                        "Access denied for user 'txuac'", "(MySQL error 1045)")
        self.assertNotIn("not:the@password", text)
        self.assertNotIn("the@password", text)

    @defer.inlineCallbacks
    def test_unknown_database(self):
        self.make_tables(6)
        yield self.assert_open_fails_in_one_line(self.db.url[:-len(self.db.database)] + "nosuchdb", "nosuchdb",
                                                 "(MySQL error 1044)")

    @defer.inlineCallbacks
    def test_server_down_at_open(self):
        self.make_tables(6)
        self.db.stop()
        started = time.monotonic()
        text = yield self.assert_open_fails_in_one_line(self.db.url, "the server is not up or not reachable",
                                                        "Connection refused", unreachable=True)
        self.assertLess(time.monotonic() - started, 5)
        self.assertNotIn(self.db.password, text)
        yield self.assert_open_fails_in_one_line(self.db.socket_url, "the server is not up or not reachable",
                                                 unreachable=True)

    @defer.inlineCallbacks
    def test_server_not_up_yet_is_waited_for(self):
        """With connect_retry, open() tries again (one warning per attempt) until the server
        comes; a refused login is not tried again."""
        self.make_tables(6, [account(1)])
        self.db.stop()
        store = open_store(self.db.url, connect_retry=0.2)
        self.addCleanup(store.close)
        opened = store.open()
        yield task.deferLater(reactor, 0.7, lambda: None)
        self.assertFalse(opened.called)
        retries = [m for m in self.messages() if "trying again in 0.2 s" in m]
        self.assertGreaterEqual(len(retries), 2, self.messages())
        self.assertIn(f"cannot open {store.url}: the server is not up or not reachable", retries[0])
        self.db.start()
        yield opened
        self.assertEqual([r["l_uuid"] for r in (yield store.load_all())], ["uuid-1"])

        refused = open_store(self.db.url.replace(self.db.password, "wrong"), connect_retry=0.2)
        self.addCleanup(refused.close)
        failure = yield self.assertFailure(refused.open(), StoreError)
        self.assertNotIsInstance(failure, StoreUnreachable)
        self.assertIn("Access denied", str(failure))

    @defer.inlineCallbacks
    def test_close_while_waiting_for_the_server(self):
        self.make_tables(6)
        self.db.stop()
        store = MySQLStore(self.db.url, connect_retry=0.2)
        opened = store.open()
        yield task.deferLater(reactor, 0.3, lambda: None)
        yield store.close()
        failure = yield self.assertFailure(opened, StoreError)
        self.assertIn("was closed before it could be opened", str(failure))
        # trial fails the test if a retry timer or a pool thread survived close().

    @defer.inlineCallbacks
    def test_restart_is_survived_without_reopening(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        self.assertEqual(len((yield store.load_all())), 1)

        self.db.stop()
        failure = yield self.assertFailure(store.load_all(), StoreError)
        self.assertIn(store.url, str(failure))
        self.assertIn("the server is not up or not reachable", str(failure))
        self.assertNotIn(self.db.password, str(failure))
        yield self.assertFailure(store.load_one("uuid-1"), StoreError)
        yield self.assertFailure(store.save_states([AccountState("uuid-1", "c", 1, "")]), StoreError)

        self.db.start()
        self.db.mysql("INSERT INTO uacreg (l_uuid) VALUES ('uuid-after')")
        rows = yield eventually(store.load_all, RECONNECT_WAIT)
        self.assertEqual({r["l_uuid"] for r in rows}, {"uuid-1", "uuid-after"})
        self.assertEqual((yield store.load_one("uuid-after"))["l_uuid"], "uuid-after")
        yield store.save_states([AccountState("uuid-1", "c", 1, "")])
        messages = self.messages()
        self.assertEqual(len([m for m in messages if m.startswith(f"Lost the connection to {store.url}")]), 1,
                         messages)
        self.assertEqual(len([m for m in messages if m.startswith(f"Reconnected to {store.url}")]), 1, messages)

    @defer.inlineCallbacks
    def test_restart_while_idle_needs_no_failed_query(self):
        """The dropped connection is noticed before use: the first query after a restart works."""
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        self.db.restart()
        rows = yield store.load_all()
        self.assertEqual(len(rows), 1)
        self.assertEqual(tuple(rows[0]), COLUMNS + EXT_COLUMNS)


class MySQLUnreachableTests(TestCase):
    @defer.inlineCallbacks
    def test_nothing_listening_at_open(self):
        store = MySQLStore(f"mysql://u:hunter2@127.0.0.1:{free_port()}/db")
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertIn("the server is not up or not reachable", str(failure))
        self.assertIn("Connection refused", str(failure))
        self.assertNotIn("hunter2", str(failure))
        yield store.close()

    @defer.inlineCallbacks
    def test_no_such_socket(self):
        directory = tempfile.mkdtemp(prefix="txuac-nosock-")  # short: a socket path has 108 bytes at most
        self.addCleanup(os.rmdir, directory)
        store = MySQLStore(f"mysql://u:hunter2@localhost/db?unix_socket={directory}/sock")
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertIn("the server is not up or not reachable", str(failure))
        self.assertIn("No such file or directory", str(failure))
        yield store.close()
