"""Kamailio's uacreg table in MySQL or MariaDB, through twisted.enterprise.adbapi and PyMySQL.

PyMySQL blocks, so every query runs in adbapi's one pool thread (``cp_max=1``: one
connection, interactions one at a time, the reactor thread never waits on the server). Each
interaction is one transaction (autocommit off; adbapi commits when it returns, rolls back
when it raises) on a utf8mb4 connection, so any Unicode value survives.

A restart of the server, a failover or an idle timeout is survived without reopening the
store: before each interaction the connection is pinged and reconnected when the server
dropped it (PyMySQL's ``ping(reconnect=True)``); while the server is down every query fails
at once with StoreError, and works again as soon as it is back. One line says the connection
was lost, one that it works again. A dead connection is not rolled back: adbapi would log
that as an error, while the interaction's own error already says what happened.

Kamailio's tables are not created here: an operator runs conf/schema/mysql.sql (txuac only
reads uacreg) or has them from Kamailio's own ``kamdbctl``. Our own table (``ext_table``,
see txuac.registrant.store.ext) is created by open() when it is missing and the user may
create tables; otherwise a warning says so and the store works without it.

The URL's password goes to PyMySQL only; logs and errors show the masked URL.

open() tells a server that is not up yet (no connection over TCP or the socket, or the
server's own "shutting down" or "too many connections") from one that answers no (a refused
login, an unknown database): with ``connect_retry`` seconds (``[uac] reg_db_connect_retry``)
the first is tried again, one warning per attempt, until the server is there; the second
fails open() at once.
"""

from __future__ import annotations

import pymysql
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txuac.errors import StoreError, StoreUnreachable
from txuac.registrant.store import (
    DEFAULT_EXT_TABLE,
    EXT_TABLE_VERSION,
    SUPPORTED_TABLE_VERSIONS,
    AccountState,
    IRegistrationStore,
)
from txuac.registrant.store import ext
from txuac.registrant.store.queries import AccountQueries, OpenRetry, ServerStoreOpening, columns_for, unsupported_version
from txuac.registrant.store.url import StoreURL, check_table_name, parse_store_url

log = Logger()

# Seconds PyMySQL waits for the server to accept and greet (connect), and for any one read
# or write: a server that vanished without closing the connection is noticed.
CONNECT_TIMEOUT = 10
IO_TIMEOUT = 30
# AccountStates per INSERT (4 parameters each).
SAVE_BATCH = 500
# Client errors meaning the server is not there: cannot connect (TCP or socket), gone away,
# connection lost during a query, shared memory/socket failure.
CONNECTION_ERRORS = frozenset({2002, 2003, 2006, 2013, 2055})
NOT_UP = "the server is not up or not reachable"
# What a server says when it is there but cannot take us yet: too many connections,
# shutdown in progress. Worth another attempt at open(), as no answer is.
NOT_READY_YET = frozenset({1040, 1053})
# A second row with the same l_uuid (uacreg's unique index).
ER_DUP_ENTRY = 1062


def connection_arguments(url: StoreURL) -> dict:
    """Keyword arguments for pymysql.connect (holds the password: never log them)."""
    arguments: dict = {"database": url.database, "charset": "utf8mb4", "autocommit": False,
                       "connect_timeout": CONNECT_TIMEOUT, "read_timeout": IO_TIMEOUT,
                       "write_timeout": IO_TIMEOUT, "program_name": "txuac"}
    if url.unix_socket is not None:
        arguments["unix_socket"] = url.unix_socket
    else:
        arguments.update(host=url.host, port=url.port)
    if url.user is not None:
        arguments["user"] = url.user
    if url.password is not None:
        arguments["password"] = url.password
    return arguments


def upsert_statement(ext_table: str, count: int = 1) -> str:
    """MySQL's form of ext.upsert_statement (the higher CSeq of one Call-ID kept, a stored
    instance_id kept). MySQL assigns left to right, each seeing the ones before: cseq is
    set while call_id is still the stored one."""
    rows = ", ".join(["(%s, %s, %s, %s)"] * count)
    return (f"INSERT INTO {ext_table} (l_uuid, call_id, cseq, instance_id) VALUES {rows} "
            f"ON DUPLICATE KEY UPDATE cseq = IF(call_id = VALUES(call_id) AND cseq > VALUES(cseq), cseq, "
            f"VALUES(cseq)), call_id = VALUES(call_id), "
            f"instance_id = IF(instance_id = '', VALUES(instance_id), instance_id)")


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` says the server is not there (rather than refusing what we asked)."""
    if isinstance(error, pymysql.err.InterfaceError):
        return True
    return isinstance(error, pymysql.err.OperationalError) and bool(error.args) \
        and error.args[0] in CONNECTION_ERRORS


def not_up_yet(error: BaseException) -> bool:
    """Whether connecting failed because the server is not (yet) there or not ready."""
    return is_connection_error(error) or (isinstance(error, pymysql.err.OperationalError) and bool(error.args)
                                          and error.args[0] in NOT_READY_YET)


def reason(error: BaseException) -> str:
    """The server's or driver's message for ``error``, on one line, with its MySQL error code."""
    if isinstance(error, pymysql.err.Error) and len(error.args) >= 2:
        code, message = error.args[0], " ".join(str(error.args[1]).split())
        if is_connection_error(error):
            return f"{NOT_UP}: {message}" if message else f"{NOT_UP} (the connection was closed)"
        return f"{message} (MySQL error {code})"
    if isinstance(error, pymysql.err.InterfaceError):
        return f"{NOT_UP} (the connection was closed)"
    return " ".join(str(error).split()) or type(error).__name__


def split_statements(script: str) -> list[str]:
    """The statements of a DDL script, one per ';' at a line's end (PyMySQL runs one at a time)."""
    return [statement.strip() for statement in script.split(";\n") if statement.strip()]


class _Connection(adbapi.Connection):
    """One interaction's handle on the pool thread's connection (see the module docstring)."""

    def reconnect(self):
        super().reconnect()
        self._connection.ping(reconnect=True)

    def rollback(self):
        try:
            self._connection.rollback()
        except pymysql.err.Error:
            pass  # the driver has closed it: the next interaction's ping reconnects


class QuietPool(adbapi.ConnectionPool):
    """adbapi's pool, quiet about connections the server closed, with one line per outage."""

    connectionFactory = _Connection  # noqa: N815 - adbapi's name

    def __init__(self, url: str, reactor, **connkw):
        self.url = url
        self.worked = False  # an interaction succeeded since the pool was made
        self.lost = False    # the connection was lost after that, and no interaction worked since
        super().__init__("pymysql", cp_min=1, cp_max=1, cp_noisy=False, cp_reconnect=True, cp_reactor=reactor,
                         **connkw)

    def runInteraction(self, interaction, *args, **kw):  # noqa: N802 - adbapi's name
        d = super().runInteraction(interaction, *args, **kw)
        return d.addCallbacks(self._worked, self._failed)

    def _worked(self, result):
        self.worked = True
        if self.lost:
            self.lost = False
            log.info("Reconnected to {url}", url=self.url)
        return result

    def _failed(self, failure: Failure):
        if is_connection_error(failure.value) and self.worked and not self.lost:
            self.lost = True
            log.warn("Lost the connection to {url} ({reason}); reconnecting at the next query",
                     url=self.url, reason=reason(failure.value))
        return failure

    def _close(self, conn):
        if conn.open:
            try:
                conn.close()
            except pymysql.err.Error:
                pass  # the server went first


@implementer(IRegistrationStore)
class MySQLStore(ServerStoreOpening, AccountQueries):
    """The uacreg table of the MySQL/MariaDB database ``url`` (a StoreURL or its text)."""

    placeholder = "%s"  # PyMySQL's

    def __init__(self, url: StoreURL | str, reactor=None, table: str = "uacreg",
                 ext_table: str = DEFAULT_EXT_TABLE, connect_retry: float = 0.0):
        parsed = url if isinstance(url, StoreURL) else parse_store_url(url)
        if parsed.kind != "mysql":
            raise StoreError(f"{parsed.masked} is not a MySQL URL")
        if reactor is None:
            from twisted.internet import reactor
        self._url = parsed
        self.url = parsed.masked
        self.table = check_table_name(table)
        self.ext_table: str | None = check_table_name(ext_table, "reg_ext_table")
        self._wanted_ext_table = self.ext_table
        self.table_version: int | None = None
        self._reactor = reactor
        self.connect_retry = connect_retry
        self._opening: OpenRetry | None = None
        self._pool: QuietPool | None = None
        self._columns: tuple[str, ...] = ()
        self.errors = 0  # operations failed with StoreError, for metrics

    def __repr__(self) -> str:
        return f"<MySQLStore {self.url} table={self.table}>"

    # -- IRegistrationStore --------------------------------------------------------------------

    def change_feed(self):
        """The IChangeFeed of this table: a change log read every second (mysql_feed)."""
        from txuac.registrant.store.mysql_feed import MySQLChangeFeed

        return MySQLChangeFeed(self._url, self.table, self._reactor)

    def close(self):
        self._stop_opening()
        self._close_pool()
        return defer.succeed(None)

    # -- internals ------------------------------------------------------------------------------

    def _open_once(self) -> defer.Deferred:
        """One attempt: connect and check the tables. StoreUnreachable when the server is
        not there (yet), StoreError when it refuses us or the tables are wrong."""
        self._pool = QuietPool(self.url, self._reactor, **connection_arguments(self._url))
        d = self._pool.runInteraction(self._check)

        def opened(checked):
            version, ext_created, ext_problem = checked
            self.table_version = version
            self._columns = columns_for(version)
            self.ext_table = None if ext_problem else self._wanted_ext_table
            log.info("Opened {url}: {table} table version {version}", url=self.url, table=self.table,
                     version=version)
            if ext_created:
                log.info("Created the {ext_table} table in {url} (txuac's own, beside {table})",
                         ext_table=self._wanted_ext_table, url=self.url, table=self.table)
            if ext_problem:
                log.warn("Without the {ext_table} table in {url} ({problem}): per-account settings of ours "
                         "are not read and Call-IDs are kept in memory only (create it with "
                         "conf/schema/mysql-txuac.sql)",
                         ext_table=self._wanted_ext_table, url=self.url, problem=ext_problem)

        def failed(failure):
            self._close_pool()
            self.errors += 1
            if failure.check(StoreError):
                return failure
            kind = StoreUnreachable if not_up_yet(failure.value) else StoreError
            raise kind(f"cannot open {self.url}: {reason(failure.value)}") from failure.value

        return d.addCallbacks(opened, failed)

    @staticmethod
    def _save(txn, states: list[AccountState], ext_table: str) -> None:
        """In the pool thread: one transaction (adbapi commits when this returns)."""
        for start in range(0, len(states), SAVE_BATCH):
            batch = states[start:start + SAVE_BATCH]
            txn.execute(upsert_statement(ext_table, len(batch)), ext.upsert_parameters(batch))

    def _check(self, txn) -> tuple[int, bool, str | None]:
        """In the pool thread: the checked table version, whether our own table was created,
        and why it cannot be used (or None)."""
        hint = "(create it with conf/schema/mysql.sql)"
        txn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                    "AND table_name IN ('version', %s)", (self.table,))
        names = {row[0] for row in txn.fetchall()}
        if "version" not in names:
            raise StoreError(f"{self.url} has no version table {hint}")
        if self.table not in names:
            raise StoreError(f"the {self.table} table is missing in {self.url} {hint}")
        # As Kamailio reads it (db_table_version): the row of table_name, its table_version.
        txn.execute("SELECT table_version FROM version WHERE table_name = %s", (self.table,))
        rows = txn.fetchall()
        if not rows:
            raise StoreError(f"the version table of {self.url} has no row for {self.table}")
        version = rows[0][0]
        if version not in SUPPORTED_TABLE_VERSIONS:
            raise unsupported_version(self.table, version, self.url)
        try:
            txn.execute(f"SELECT {', '.join(columns_for(version))} FROM {self.table} LIMIT 0")
        except pymysql.err.MySQLError as e:
            if is_connection_error(e):
                raise
            raise StoreError(f"the {self.table} table in {self.url} does not have the columns of "
                             f"version {version}: {reason(e)}") from e
        txn.fetchall()
        created, problem = self._check_ext(txn)
        return version, created, problem

    def _check_ext(self, txn) -> tuple[bool, str | None]:
        """Create our own table when it is missing; (created, problem)."""
        table = self._wanted_ext_table
        txn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
                    (table,))
        created = not txn.fetchall()
        try:
            if created:
                try:
                    for statement in split_statements(ext.create_statements("mysql", table)):
                        txn.execute(statement)
                except pymysql.err.MySQLError as e:
                    if is_connection_error(e):
                        raise
                    return False, f"cannot create it: {reason(e)}"
            txn.execute("SELECT table_version FROM version WHERE table_name = %s", (table,))
            rows = txn.fetchall()
            if rows and rows[0][0] != EXT_TABLE_VERSION:
                return False, f"its version is {rows[0][0]}, txuac reads {EXT_TABLE_VERSION}"
            txn.execute(f"SELECT l_uuid, {', '.join(ext.EXT_COLUMNS)} FROM {table} LIMIT 0")
            txn.fetchall()
        except pymysql.err.MySQLError as e:
            if is_connection_error(e):
                raise
            return False, f"it does not have txuac's columns: {reason(e)}"
        return created, None

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @staticmethod
    def _is_duplicate(error: BaseException) -> bool:
        return isinstance(error, pymysql.err.IntegrityError) and bool(error.args) and error.args[0] == ER_DUP_ENTRY

    def _store_error(self, failure: Failure, context: str):
        self.errors += 1
        if failure.check(StoreError):
            return failure
        raise StoreError(f"{context}: {reason(failure.value)}") from failure.value
