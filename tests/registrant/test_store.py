"""The account stores: Kamailio's uacreg table in SQLite (adbapi) and PostgreSQL (txpostgres).

Both backends run the same contract (tests/support/store_contract.py) against real databases: an SQLite file
in the test's temp dir and a private PostgreSQL server (tests/support/postgres.py). Tables
are made the way an operator makes them: conf/schema/*.sql for version 6, and by hand for
version 5 (Kamailio 5.6's uac-create.sql: no contact_user, version row 5).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.support.bad_rows import BAD_VALUES
from tests.support.peers import find_program, free_port
from tests.support.postgres import PostgresCluster
from tests.support.services import start_uac, wait_for_store
from tests.support.store_contract import StoreContract, account, eventually, loaded, wait
from tests.support.stores import sqlite_uacreg
from txuac.errors import ConfigError, StoreError, StoreUnreachable
from txuac.registrant.store import COLUMNS, EXT_COLUMNS, EXT_DEFAULTS, AccountState, IRegistrationStore, open_store
from txuac.registrant.store import ext as ext_sql
from txuac.registrant.store import sqlite as sqlite_store
from txuac.registrant.store.postgres import PostgresStore, psycopg2
from txuac.registrant.store.sqlite import SQLiteStore
from txuac.registrant.store.url import StoreURL, mask_url, parse_store_url

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SQLITE_SCHEMA = os.path.join(ROOT, "conf", "schema", "sqlite.sql")
POSTGRES_SCHEMA = os.path.join(ROOT, "conf", "schema", "postgres.sql")
SQLITE_EXT_SCHEMA = os.path.join(ROOT, "conf", "schema", "sqlite-txuac.sql")
POSTGRES_EXT_SCHEMA = os.path.join(ROOT, "conf", "schema", "postgres-txuac.sql")
RECONNECT_WAIT = 15.0

# Kamailio's uacreg columns in its uac-create.sql order (contact_user before socket).
CREATE_ORDER = ("id", "l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
                "auth_password", "auth_ha1", "auth_proxy", "expires", "flags", "reg_delay", "contact_addr",
                "contact_user", "socket")

# Version 5 as Kamailio 5.6 ships it (utils/kamctl/<db>/uac-create.sql): no contact_user.
V5_TABLE = """
CREATE TABLE uacreg (
    id {id_type} PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT '' NOT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT '' NOT NULL,
    auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid)
);
"""
VERSION_TABLE = """
CREATE TABLE version (
    id {id_type} PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
"""


def uacreg_body(path: str) -> list[str]:
    """The column and constraint lines of CREATE TABLE uacreg in a schema file."""
    text = open(path).read()
    body = re.search(r"CREATE TABLE uacreg \((.*?)\n\);", text, re.S).group(1)
    return [line.strip() for line in body.strip().splitlines()]


# ---------------------------------------------------------------------------------------------
# Schema files
# ---------------------------------------------------------------------------------------------

class SchemaFileTests(SynchronousTestCase):
    def test_conf_schema_is_the_packaged_schema(self):
        """conf/schema/sqlite.sql is what the store creates a missing file with."""
        with open(SQLITE_SCHEMA) as f:
            self.assertEqual(sqlite_store.SCHEMA, f.read())

    def test_files_document_the_command(self):
        with open(SQLITE_SCHEMA) as f:
            self.assertIn("sqlite3 var/uacreg.sqlite < conf/schema/sqlite.sql", f.read())
        with open(POSTGRES_SCHEMA) as f:
            self.assertIn("psql -h HOST -U USER -d DB -f conf/schema/postgres.sql", f.read())

    def test_sqlite_schema_is_kamailio_version_6(self):
        db = sqlite3.connect(":memory:")
        self.addCleanup(db.close)
        with open(SQLITE_SCHEMA) as f:
            db.executescript(f.read())
        info = db.execute("PRAGMA table_info(uacreg)").fetchall()
        self.assertEqual(tuple(column[1] for column in info), CREATE_ORDER)
        self.assertEqual(set(CREATE_ORDER) - {"id"}, set(COLUMNS))
        types = {column[1]: (column[2], column[3], column[4]) for column in info}
        self.assertEqual(types["contact_user"], ("VARCHAR(255)", 1, "''"))
        self.assertEqual(types["auth_ha1"], ("VARCHAR(128)", 1, "''"))
        self.assertEqual(types["expires"], ("INTEGER", 1, "0"))
        self.assertEqual(db.execute("SELECT table_name, table_version FROM version ORDER BY id").fetchall(),
                         [("version", 1), ("uacreg", 6)])

    def test_sqlite_schema_adds_uacreg_to_an_existing_kamailio_database(self):
        db = sqlite3.connect(":memory:")
        self.addCleanup(db.close)
        db.executescript(VERSION_TABLE.format(id_type="INTEGER")
                         + "INSERT INTO version (table_name, table_version) VALUES ('version', 1);"
                         + "INSERT INTO version (table_name, table_version) VALUES ('location', 9);")
        with open(SQLITE_SCHEMA) as f:
            db.executescript(f.read())
        self.assertEqual(db.execute("SELECT table_name, table_version FROM version ORDER BY id").fetchall(),
                         [("version", 1), ("location", 9), ("uacreg", 6)])

    def test_postgres_and_sqlite_tables_differ_only_in_id(self):
        sqlite_lines = uacreg_body(SQLITE_SCHEMA)
        postgres_lines = uacreg_body(POSTGRES_SCHEMA)
        self.assertEqual(sqlite_lines[0], "id INTEGER PRIMARY KEY NOT NULL,")
        self.assertEqual(postgres_lines[0], "id SERIAL PRIMARY KEY NOT NULL,")
        self.assertEqual(sqlite_lines[1:], postgres_lines[1:])
        with open(POSTGRES_SCHEMA) as f:
            self.assertIn("INSERT INTO version (table_name, table_version) values ('uacreg','6');", f.read())

    def test_our_table_is_the_same_in_both_files(self):
        sqlite_text, postgres_text = open(SQLITE_EXT_SCHEMA).read(), open(POSTGRES_EXT_SCHEMA).read()
        body = re.compile(r"CREATE TABLE IF NOT EXISTS uacreg_txuac \((.*?)\n\);", re.S)
        self.assertEqual(body.search(sqlite_text).group(1), body.search(postgres_text).group(1))
        self.assertIn("sqlite3 var/uacreg.sqlite < conf/schema/sqlite-txuac.sql", sqlite_text)
        self.assertIn("psql -h HOST -U USER -d DB -f conf/schema/postgres-txuac.sql", postgres_text)

    def test_our_table_has_the_columns_and_defaults_txuac_reads(self):
        db = sqlite3.connect(":memory:")
        self.addCleanup(db.close)
        with open(SQLITE_SCHEMA) as f:
            db.executescript(f.read())
        with open(SQLITE_EXT_SCHEMA) as f:
            db.executescript(f.read())
        info = db.execute("PRAGMA table_info(uacreg_txuac)").fetchall()
        self.assertEqual(tuple(c[1] for c in info), ("l_uuid",) + EXT_COLUMNS)
        self.assertEqual([c[5] for c in info], [1] + [0] * len(EXT_COLUMNS))  # l_uuid is the primary key
        db.execute("INSERT INTO uacreg_txuac (l_uuid) VALUES ('x')")
        defaults = dict(zip(("l_uuid",) + EXT_COLUMNS, db.execute("SELECT * FROM uacreg_txuac").fetchone()))
        self.assertEqual({k: v for k, v in defaults.items() if k != "l_uuid"}, EXT_DEFAULTS)
        # Kamailio's rows untouched, ours added.
        self.assertEqual(db.execute("SELECT table_name, table_version FROM version ORDER BY id").fetchall(),
                         [("version", 1), ("uacreg", 6), ("uacreg_txuac", 1)])
        with open(SQLITE_EXT_SCHEMA) as f:
            db.executescript(f.read())  # again: changes nothing
        self.assertEqual(db.execute("SELECT count(*) FROM version").fetchone(), (3,))

    def test_our_table_statements_for_another_name(self):
        db = sqlite3.connect(":memory:")
        self.addCleanup(db.close)
        db.executescript(ext_sql.create_statements("sqlite", "accounts_ext"))
        self.assertEqual(db.execute("SELECT table_version FROM version WHERE table_name = 'accounts_ext'").fetchall(),
                         [(1,)])
        self.assertEqual(db.execute("SELECT name FROM sqlite_master WHERE name = 'uacreg_txuac'").fetchall(), [])
        self.assertNotIn("BEGIN", ext_sql.create_statements("postgres", "accounts_ext"))

    def test_schema_for_another_table_name(self):
        db = sqlite3.connect(":memory:")
        self.addCleanup(db.close)
        db.executescript(sqlite_store.schema_for("accounts"))
        self.assertEqual(db.execute("SELECT table_version FROM version WHERE table_name = 'accounts'").fetchall(),
                         [(6,)])
        self.assertEqual(db.execute("SELECT name FROM sqlite_master WHERE name = 'uacreg'").fetchall(), [])


# ---------------------------------------------------------------------------------------------
# reg_db_url
# ---------------------------------------------------------------------------------------------

class URLTests(SynchronousTestCase):
    def test_sqlite_absolute_four_slashes(self):
        url = parse_store_url("sqlite:////tmp/x/uacreg.sqlite")
        self.assertEqual((url.kind, url.path), ("sqlite", "/tmp/x/uacreg.sqlite"))
        self.assertEqual(url.resolved_path("/elsewhere"), "/tmp/x/uacreg.sqlite")
        self.assertEqual(url.masked, "sqlite:////tmp/x/uacreg.sqlite")

    def test_sqlite_relative_three_slashes(self):
        url = parse_store_url("sqlite:///var/uacreg.sqlite")
        self.assertEqual((url.kind, url.path), ("sqlite", "var/uacreg.sqlite"))
        self.assertEqual(url.resolved_path("/srv/txuac"), "/srv/txuac/var/uacreg.sqlite")
        self.assertEqual(url.resolved_path(), os.path.join(os.getcwd(), "var", "uacreg.sqlite"))

    def test_postgres(self):
        url = parse_store_url("postgres://kamailio:kamailiorw@db.example.com:5433/kamailio")
        self.assertEqual(
            (url.kind, url.host, url.port, url.user, url.password, url.database),
            ("postgres", "db.example.com", 5433, "kamailio", "kamailiorw", "kamailio"))
        self.assertEqual(url.masked, "postgres://kamailio:***@db.example.com:5433/kamailio")
        self.assertEqual(url.connection_arguments(), {
            "host": "db.example.com", "port": 5433, "user": "kamailio", "password": "kamailiorw",
            "dbname": "kamailio"})

    def test_postgresql_scheme_and_defaults(self):
        url = parse_store_url("postgresql://db/kamailio")
        self.assertEqual((url.kind, url.host, url.port, url.user, url.password, url.database),
                         ("postgres", "db", 5432, None, None, "kamailio"))
        self.assertEqual(url.masked, "postgresql://db/kamailio")
        url = parse_store_url("postgres://reader@db/kamailio")
        self.assertEqual((url.user, url.password), ("reader", None))

    def test_password_with_colon_and_at_as_kamailio_reads_it(self):
        url = parse_store_url("postgres://user:p:a@ss@127.0.0.1:5432/db")
        self.assertEqual((url.user, url.password, url.host), ("user", "p:a@ss", "127.0.0.1"))
        self.assertEqual(url.masked, "postgres://user:***@127.0.0.1:5432/db")
        # No percent-decoding, as in Kamailio: %40 is three characters of the password.
        self.assertEqual(parse_store_url("postgres://u:a%40b@h/db").password, "a%40b")

    def test_ipv6_host(self):
        url = parse_store_url("postgres://u:pw@[::1]:6543/db")
        self.assertEqual((url.host, url.port), ("::1", 6543))
        self.assertEqual(parse_store_url("postgres://[2001:db8::5]/db").port, 5432)

    def test_password_is_never_shown(self):
        url = parse_store_url("postgres://u:hunter2@h/db")
        for text in (str(url), repr(url), url.masked):
            self.assertNotIn("hunter2", text)

    def test_bad_urls(self):
        bad = [
            "", "uacreg.sqlite", "/tmp/uacreg.sqlite", "oracle://u:pw@h/db", "sqlite:/tmp/x.sqlite",
            "sqlite://host/x.sqlite", "sqlite:///", "sqlite://", "sqlite:///dir/", "postgres://u:pw@h",
            "postgres://u:pw@h/", "postgres://u:pw@/db", "postgres://u:pw@h:port/db", "postgres://u:pw@h:0/db",
            "postgres://u:pw@h:70000/db", "postgres://:pw@h/db", "postgres://u:pw@h/db?sslmode=require",
            "postgres://u:pw@h/a/b", "postgres://u:pw@[::1/db", "postgres://u:pw@h\n/db",
        ]
        for text in bad:
            with self.assertRaises(ConfigError, msg=text) as caught:
                parse_store_url(text)
            self.assertIn(repr(mask_url(text)), str(caught.exception))
        with self.assertRaises(ConfigError):
            parse_store_url(None)

    def test_errors_mask_the_password(self):
        for text in ("postgres://u:hunter2@h:port/db", "oracle://u:hunter2@h/db", "postgres://u:hun/ter2@h/db"):
            with self.assertRaises(ConfigError) as caught:
                parse_store_url(text)
            self.assertNotIn("hunter2", str(caught.exception))
            self.assertNotIn("ter2", str(caught.exception))
            self.assertIn("***", str(caught.exception))

    def test_open_store_picks_the_backend(self):
        base = os.path.abspath(self.mktemp())
        store = open_store("sqlite:///var/uacreg.sqlite", base_dir=base)
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual(store.path, os.path.join(base, "var", "uacreg.sqlite"))
        self.assertEqual(store.url, "sqlite:///var/uacreg.sqlite")
        verifyObject(IRegistrationStore, store)
        store = open_store("postgres://u:hunter2@127.0.0.1:5432/db", table="accounts")
        self.assertIsInstance(store, PostgresStore)
        self.assertEqual((store.url, store.table), ("postgres://u:***@127.0.0.1:5432/db", "accounts"))
        verifyObject(IRegistrationStore, store)
        self.assertIsInstance(open_store(parse_store_url("sqlite:////tmp/a.sqlite")), SQLiteStore)

    def test_open_store_refuses_bad_table_names(self):
        for table in ("", "uac reg", "uacreg;drop", "1uacreg", "public.uacreg"):
            self.assertRaises(ConfigError, open_store, "sqlite:////tmp/a.sqlite", table=table)

    def test_store_url_is_a_value(self):
        self.assertEqual(parse_store_url("sqlite:////a"), StoreURL(kind="sqlite", masked="sqlite:////a", path="/a"))


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------

def insert_rows_sqlite(db, rows, version):
    for row in rows:
        columns = [c for c in COLUMNS if version >= 6 or c != "contact_user"]
        db.execute(f"INSERT INTO uacreg ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   [row[c] for c in columns])


class SQLiteStoreTests(StoreContract, TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "uacreg.sqlite")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def new_store(self, **kwargs):
        return SQLiteStore(self.path, **kwargs)

    def execute(self, sql, parameters=()):
        db = sqlite3.connect(self.path)
        try:
            db.execute(sql.replace("%s", "?"), parameters)
            db.commit()
        finally:
            db.close()

    def rows_of(self, sql):
        db = sqlite3.connect(self.path)
        try:
            return [tuple(str(v) for v in row) for row in db.execute(sql)]
        finally:
            db.close()

    def make_tables(self, version, rows=(), table_version=None, with_table=True, with_version=True):
        db = sqlite3.connect(self.path)
        try:
            if version == 6 and with_table and with_version:
                with open(SQLITE_SCHEMA) as f:
                    db.executescript(f.read())
            else:
                if with_version:
                    db.executescript(VERSION_TABLE.format(id_type="INTEGER"))
                    db.execute("INSERT INTO version (table_name, table_version) VALUES ('uacreg', ?)", (version,))
                if with_table:
                    db.executescript(V5_TABLE.format(id_type="INTEGER"))
            if table_version is not None and with_version:
                if table_version:
                    db.execute("UPDATE version SET table_version = ? WHERE table_name = 'uacreg'", (table_version,))
                else:
                    db.execute("DELETE FROM version WHERE table_name = 'uacreg'")
            insert_rows_sqlite(db, rows, version)
            db.commit()
        finally:
            db.close()

    def created_log(self):
        """The log lines of files created (not of our own table, created in every file)."""
        return [formatEvent(e) for e in self.events if formatEvent(e).startswith(f"Created {self.path}")]

    @defer.inlineCallbacks
    def test_creates_a_missing_file(self):
        self.assertFalse(os.path.exists(self.path))
        store = yield self.opened()
        self.assertTrue(os.path.exists(self.path))
        self.assertEqual(store.table_version, 6)
        self.assertEqual((yield store.load_all()), [])
        self.assertEqual(self.created_log(),
                         [f"Created {self.path} with an empty uacreg table (version 6)"])
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(tuple(c[1] for c in db.execute("PRAGMA table_info(uacreg)")), CREATE_ORDER)
        # An operator's rows are loaded by the running store.
        insert_rows_sqlite(db, [account(7)], 6)
        db.commit()
        self.assertEqual((yield store.load_all()), [loaded(account(7))])

    @defer.inlineCallbacks
    def test_created_once(self):
        store = yield self.opened()
        yield store.close()
        yield store.open()
        self.assertEqual(len(self.created_log()), 1)
        self.assertTrue(os.path.isfile(self.path))

    @defer.inlineCallbacks
    def test_a_missing_directory_is_not_made(self):
        """sqlite:////nonexistent/dir/x.sqlite: the file is made in an existing directory only."""
        self.path = os.path.join(self.directory, "var", "db", "uacreg.sqlite")
        yield self.assert_open_fails(f"the directory {os.path.dirname(self.path)} does not exist")
        self.assertFalse(os.path.exists(os.path.join(self.directory, "var")))

    @defer.inlineCallbacks
    def test_creates_the_file_of_a_relative_url(self):
        os.makedirs(os.path.join(self.directory, "var"))
        store = open_store("sqlite:///var/uacreg.sqlite", base_dir=self.directory)
        self.addCleanup(store.close)
        yield store.open()
        self.assertTrue(os.path.isfile(os.path.join(self.directory, "var", "uacreg.sqlite")))
        self.assertIn("Opened sqlite:///var/uacreg.sqlite: uacreg table version 6",
                      [formatEvent(e) for e in self.events])

    @defer.inlineCallbacks
    def test_creates_a_table_of_another_name(self):
        store = yield self.opened(table="accounts")
        self.assertEqual(store.table_version, 6)
        self.assertEqual((yield store.load_all()), [])

    @defer.inlineCallbacks
    def test_an_empty_existing_file_gets_the_tables(self):
        """An empty file is an SQLite database without tables (what `touch` leaves): made as a
        missing file is, and kept when that fails."""
        open(self.path, "wb").close()
        store = yield self.opened()
        self.assertEqual(store.table_version, 6)
        self.assertEqual(self.created_log(), [f"Created {self.path} with an empty uacreg table (version 6)"])

    @defer.inlineCallbacks
    def test_a_database_without_uacreg_is_refused(self):
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE other (x INTEGER)")
        db.commit()
        db.close()
        yield self.assert_open_fails("no version table")
        self.assertEqual(self.created_log(), [])
        self.assertEqual(self.rows_of("SELECT name FROM sqlite_master"), [("other",)])

    @defer.inlineCallbacks
    def test_not_a_database(self):
        with open(self.path, "wb") as f:
            f.write(b"this is not an SQLite database, not at all" * 100)
        yield self.assert_open_fails("cannot open", "not a database")
        with open(self.path, "rb") as f:
            self.assertTrue(f.read().startswith(b"this is not"))

    @defer.inlineCallbacks
    def test_a_directory_is_not_a_store(self):
        os.makedirs(self.path)
        yield self.assert_open_fails(f"cannot open sqlite:///{self.path}: it is a directory")

    @defer.inlineCallbacks
    def test_a_file_where_the_directory_should_be(self):
        blocker = os.path.join(self.directory, "var")
        open(blocker, "w").close()
        self.path = os.path.join(blocker, "uacreg.sqlite")
        yield self.assert_open_fails(f"the directory {blocker} does not exist")

    @defer.inlineCallbacks
    def test_file_made_with_the_documented_command(self):
        sqlite3_cli = find_program("sqlite3")
        if sqlite3_cli is None:
            raise SkipTest("the sqlite3 command-line shell is not installed")
        os.makedirs(os.path.join(self.directory, "var"))
        with open(SQLITE_SCHEMA, "rb") as schema:
            subprocess.run([sqlite3_cli, "var/uacreg.sqlite"], stdin=schema, cwd=self.directory, check=True,
                           capture_output=True, timeout=30)
        store = open_store("sqlite:///var/uacreg.sqlite", base_dir=self.directory)
        self.addCleanup(store.close)
        yield store.open()
        self.assertEqual(store.table_version, 6)
        self.assertEqual(self.created_log(), [])

    @defer.inlineCallbacks
    def test_our_table_made_with_the_documented_command(self):
        sqlite3_cli = find_program("sqlite3")
        if sqlite3_cli is None:
            raise SkipTest("the sqlite3 command-line shell is not installed")
        self.make_tables(6, [account(1)])
        with open(SQLITE_EXT_SCHEMA, "rb") as schema:
            subprocess.run([sqlite3_cli, "uacreg.sqlite"], stdin=schema, cwd=self.directory, check=True,
                           capture_output=True, timeout=30)
        store = yield self.opened()
        self.assertEqual(store.ext_table, "uacreg_txuac")
        self.assertEqual([m for m in self.messages() if m.startswith("Created")], [])

    @defer.inlineCallbacks
    def test_something_else_under_our_table_name(self):
        """A view named like our table: uacreg is read, our table is not used, one warning says so."""
        self.make_tables(6, [account(1)])
        self.execute("CREATE VIEW uacreg_txuac AS SELECT l_uuid FROM uacreg")
        store = yield self.opened()
        self.assertIsNone(store.ext_table)
        self.assertEqual((yield store.load_all()), [loaded(account(1))])
        yield store.save_states([AccountState("uuid-1", "cid", 7, "")])
        warnings = [m for m in self.messages() if m.startswith("Without the uacreg_txuac table")]
        self.assertEqual(len(warnings), 1, self.messages())
        self.assertIn("does not have txuac's columns", warnings[0])


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

def sql_literal(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class PostgresStoreTests(StoreContract, TestCase):
    def setUp(self):
        self.pg = PostgresCluster(self)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def tearDown(self):
        # Nothing we log may hold the password.
        for event in self.events:
            self.assertNotIn(self.pg.password, formatEvent(event))
            self.assertNotIn(self.pg.password, repr(event))

    def new_store(self, **kwargs):
        kwargs.setdefault("reconnect_initial_delay", 0.05)
        kwargs.setdefault("reconnect_max_delay", 0.5)
        return PostgresStore(self.pg.url, **kwargs)

    def execute(self, sql, parameters=()):
        connection = psycopg2.connect(host=self.pg.host, port=self.pg.port, user=self.pg.user,
                                      password=self.pg.password, dbname=self.pg.database)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(sql, parameters or None)
        finally:
            connection.close()

    def rows_of(self, sql):
        return [tuple(line.split("|")) for line in self.pg.psql(sql).splitlines()]

    def make_tables(self, version, rows=(), table_version=None, with_table=True, with_version=True):
        if version == 6 and with_table and with_version:
            self.pg.psql(file=POSTGRES_SCHEMA)
        else:
            if with_version:
                self.pg.psql(VERSION_TABLE.format(id_type="SERIAL"))
                self.pg.psql(f"INSERT INTO version (table_name, table_version) VALUES ('uacreg', {version})")
            if with_table:
                self.pg.psql(V5_TABLE.format(id_type="SERIAL"))
        if table_version is not None and with_version:
            if table_version:
                self.pg.psql(f"UPDATE version SET table_version = {table_version} WHERE table_name = 'uacreg'")
            else:
                self.pg.psql("DELETE FROM version WHERE table_name = 'uacreg'")
        if rows:
            columns = [c for c in COLUMNS if version >= 6 or c != "contact_user"]
            values = ",\n".join("(" + ", ".join(sql_literal(row[c]) for c in columns) + ")" for row in rows)
            self.pg.psql(f"INSERT INTO uacreg ({', '.join(columns)}) VALUES {values}")

    @defer.inlineCallbacks
    def test_url_is_masked(self):
        self.make_tables(6)
        store = yield self.opened()
        self.assertEqual(store.url, self.pg.url.replace(self.pg.password, "***"))
        self.assertNotIn(self.pg.password, repr(store))
        self.assertIn(f"Opened {store.url}: uacreg table version 6", self.messages())

    @defer.inlineCallbacks
    def test_restart_is_survived_without_reopening(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        self.assertEqual(len((yield store.load_all())), 1)

        self.pg.stop()
        failure = yield self.assertFailure(store.load_all(), StoreError)
        self.assertIn(store.url, str(failure))
        self.assertNotIn(self.pg.password, str(failure))
        yield self.assertFailure(store.load_one("uuid-1"), StoreError)

        self.pg.start()
        self.pg.psql("INSERT INTO uacreg (l_uuid) VALUES ('uuid-after')")
        rows = yield eventually(store.load_all, RECONNECT_WAIT)
        self.assertEqual({r["l_uuid"] for r in rows}, {"uuid-1", "uuid-after"})
        self.assertEqual((yield store.load_one("uuid-after"))["l_uuid"], "uuid-after")
        messages = self.messages()
        self.assertTrue(any(m.startswith(f"Lost the connection to {store.url}") for m in messages), messages)
        self.assertTrue(any(m.startswith(f"Reconnected to {store.url}") for m in messages), messages)

    @defer.inlineCallbacks
    def test_idle_connection_notices_the_outage(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        self.pg.stop()
        # No query: the server's goodbye on the idle socket is enough (and is not logged as an
        # unhandled error, which trial would report).
        lost = f"Lost the connection to {store.url}"
        deadline = time.monotonic() + 5
        while not any(m.startswith(lost) for m in self.messages()) and time.monotonic() < deadline:
            yield wait(0.02)
        self.assertTrue(any(m.startswith(lost) for m in self.messages()), self.messages())
        failure = yield self.assertFailure(store.load_all(), StoreError)
        self.assertIn("the connection is down, reconnecting", str(failure))
        self.pg.start()
        rows = yield eventually(store.load_all, RECONNECT_WAIT)
        self.assertEqual(len(rows), 1)

    @defer.inlineCallbacks
    def test_several_outages(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened(pool_size=2)
        for _ in range(3):
            self.pg.restart()
            rows = yield eventually(store.load_all, RECONNECT_WAIT)
            self.assertEqual(len(rows), 1)

    @defer.inlineCallbacks
    def test_close_while_reconnecting(self):
        self.make_tables(6)
        store = yield self.opened(reconnect_initial_delay=0.2, reconnect_max_delay=5.0)
        self.pg.stop()
        yield self.assertFailure(store.load_all(), StoreError)
        yield wait(0.3)  # a retry is pending
        yield store.close()
        # trial fails the test if a reconnection timer or a connection survived close().

    @defer.inlineCallbacks
    def test_server_down_at_open(self):
        self.make_tables(6)
        self.pg.stop()
        started = time.monotonic()
        failure = yield self.assert_open_fails("cannot open", self.pg.url.replace(self.pg.password, "***"))
        self.assertLess(time.monotonic() - started, 5)
        self.assertNotIn(self.pg.password, str(failure))

    @defer.inlineCallbacks
    def test_wrong_password(self):
        self.make_tables(6)
        store = PostgresStore(self.pg.url.replace(self.pg.password, "not-the-password"))
        self.addCleanup(store.close)
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertIn("password authentication failed", str(failure))
        self.assertNotIn("not-the-password", str(failure))

    @defer.inlineCallbacks
    def test_postgresql_scheme(self):
        self.make_tables(6, [account(1)])
        store = open_store(self.pg.url.replace("postgres://", "postgresql://"))
        self.addCleanup(store.close)
        yield store.open()
        self.assertEqual(len((yield store.load_all())), 1)


class PostgresUnreachableTests(TestCase):
    """open() against no server at all: StoreError soon, nothing left running."""

    @defer.inlineCallbacks
    def test_nothing_listening_at_open(self):
        store = PostgresStore(f"postgres://u:hunter2@127.0.0.1:{free_port()}/db")
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertIn("Connection refused", str(failure))
        self.assertNotIn("hunter2", str(failure))
        yield store.close()

    @defer.inlineCallbacks
    def test_open_times_out(self):
        # A server that accepts TCP but never answers: libpq would wait forever.
        lost = defer.Deferred()

        class Silent(Protocol):
            def connectionLost(self, reason):
                lost.callback(None)

        port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        store = PostgresStore(f"postgres://u:pw@127.0.0.1:{port.getHost().port}/db", open_timeout=0.3)
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertIn("no answer within 0.3 s", str(failure))
        yield lost  # the store hung up
        yield store.close()

    @defer.inlineCallbacks
    def test_nothing_listening_is_tried_again_until_closed(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        store = PostgresStore(f"postgres://u:hunter2@127.0.0.1:{free_port()}/db", connect_retry=0.1)
        opening = store.open()
        yield wait(0.35)
        self.assertFalse(opening.called)
        warnings = [formatEvent(e) for e in events if "trying again" in formatEvent(e)]
        self.assertGreaterEqual(len(warnings), 2, warnings)
        self.assertTrue(all("Connection refused" in w and "hunter2" not in w for w in warnings), warnings)
        yield store.close()
        failure = yield self.assertFailure(opening, StoreError)
        self.assertIn("was closed before it could be opened", str(failure))


class PostgresStartTests(TestCase):
    """open() with connect_retry against a real server: one that is not up yet is waited
    for; one that refuses the login or does not have the database ends open() at once."""

    def setUp(self):
        self.pg = PostgresCluster(self)
        self.pg.psql(file=POSTGRES_SCHEMA)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if "trying again" in formatEvent(e)]

    def store(self, url: str) -> PostgresStore:
        store = PostgresStore(url, connect_retry=0.1)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def test_server_not_up_yet_is_waited_for(self):
        self.pg.psql("INSERT INTO uacreg (l_uuid) VALUES ('uuid-1')")
        self.pg.stop()
        store = self.store(self.pg.url)
        opening = store.open()
        yield wait(0.35)
        self.assertFalse(opening.called)
        self.pg.start()
        yield opening
        self.assertEqual([r["l_uuid"] for r in (yield store.load_all())], ["uuid-1"])
        warnings = self.warnings()
        self.assertGreaterEqual(len(warnings), 2, warnings)
        self.assertTrue(all(w.startswith(f"cannot open {store.url}: ") for w in warnings), warnings)
        self.assertFalse(any(self.pg.password in w for w in warnings))

    @defer.inlineCallbacks
    def test_wrong_password_is_final(self):
        store = self.store(self.pg.url.replace(self.pg.password, "wrong-password"))
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertNotIsInstance(failure, StoreUnreachable)
        self.assertIn("password authentication failed", str(failure))
        self.assertNotIn("wrong-password", str(failure))
        self.assertEqual(self.warnings(), [])

    @defer.inlineCallbacks
    def test_unknown_database_is_final(self):
        store = self.store(self.pg.url.rsplit("/", 1)[0] + "/nosuchdb")
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertNotIsInstance(failure, StoreUnreachable)
        self.assertIn('database "nosuchdb" does not exist', str(failure))
        self.assertEqual(self.warnings(), [])

    @defer.inlineCallbacks
    def test_wrong_tables_are_final(self):
        self.pg.psql("UPDATE version SET table_version = 99 WHERE table_name = 'uacreg'")
        failure = yield self.assertFailure(self.store(self.pg.url).open(), StoreError)
        self.assertIn("uacreg table version 99 is not supported", str(failure))
        self.assertEqual(self.warnings(), [])


# ---------------------------------------------------------------------------------------------
# Rows that would make bad SIP, loaded from a real table
# ---------------------------------------------------------------------------------------------

class BadRowsTests(TestCase):
    """A table holding a row for each bad value beside good rows: every bad row is skipped
    with one warning naming its l_uuid and the column, every good row is loaded."""

    @defer.inlineCallbacks
    def test_bad_rows_are_skipped_one_line_each(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        good = [account(n, flags=1) for n in (1, 2, 3)]
        bad = []
        for index, (column, value, _reason) in enumerate(BAD_VALUES):
            row = account(100 + index, flags=1)
            if isinstance(value, int) and value > 2**63 - 1:
                value = str(value)  # what a text written into the INTEGER column reads as
            row[column] = value
            bad.append(row)
        path = yield sqlite_uacreg(self, good[:2] + bad + good[2:])
        port = free_port()
        service = start_uac(self, {"core": {"listen": [f"udp:127.0.0.1:{port}"]},
                                   "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{port}"}})
        yield wait_for_store(service)
        self.assertEqual(sorted(service.registrant.records), sorted(row["l_uuid"] for row in good))
        skipped = [formatEvent(e) for e in events if formatEvent(e).startswith("uacreg row ")]
        self.assertEqual(len(skipped), len(bad), skipped)
        for line, row, (column, _value, reason) in zip(skipped, bad, BAD_VALUES):
            self.assertTrue(line.startswith(f"uacreg row {row['l_uuid']!r} skipped: invalid {column}: "), line)
            self.assertIn(reason, line)
        self.assertIn(f"loaded {len(good)} registration accounts", "\n".join(formatEvent(e) for e in events))
