"""The embedded default store: Kamailio's uacreg table in an SQLite file.

sqlite3 blocks, so every query runs through twisted.enterprise.adbapi in one pool thread
(``cp_max=1``: one connection, used by one thread at a time, so access is serialised and
``check_same_thread=False`` is safe). When the file does not exist (in an existing
directory: a missing directory is an error, never made) or is empty, open() creates the
version and uacreg tables of conf/schema/sqlite.sql in it, whose statements are kept below
(conf/ is not installed with the package). Any other file must be an SQLite database with
a uacreg table of a known version, or open() fails with StoreError saying why. Our own table (``ext_table``, see
txuac.registrant.store.ext) is created by open() whenever it is missing.
"""

from __future__ import annotations

import importlib.resources
import os
import sqlite3

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from txuac.errors import StoreError
from txuac.registrant.store import (
    DEFAULT_EXT_TABLE,
    EXT_TABLE_VERSION,
    SUPPORTED_TABLE_VERSIONS,
    IRegistrationStore,
)
from txuac.registrant.store import ext
from txuac.registrant.store.queries import AccountQueries, columns_for, unsupported_version
from txuac.registrant.store.url import check_table_name

# The schema ships in the package (conf/schema/sqlite.sql links to it) so that an
# installed txuac can create the file.
SCHEMA = importlib.resources.files("txuac.registrant.store").joinpath("schema/sqlite.sql").read_text("utf-8")
CREATED_TABLE_VERSION = 6
# AccountStates per INSERT (4 parameters each; SQLite allows 32766 per statement).
SAVE_BATCH = 500


def schema_for(table: str) -> str:
    """SCHEMA with the uacreg table (its constraint and version row) named ``table``."""
    table = check_table_name(table)
    if table == "uacreg":
        return SCHEMA
    return (SCHEMA.replace("CREATE TABLE uacreg (", f"CREATE TABLE {table} (")
            .replace("uacreg_l_uuid_idx", f"{table}_l_uuid_idx")
            .replace("('uacreg','6')", f"('{table}','6')"))


@implementer(IRegistrationStore)
class SQLiteStore(AccountQueries):
    """The uacreg table in the SQLite file ``path`` (made by open() when missing or empty)."""

    log = Logger()

    def __init__(self, path: str, reactor=None, table: str = "uacreg", url: str | None = None,
                 ext_table: str = DEFAULT_EXT_TABLE):
        self.path = os.path.abspath(path)
        self.table = check_table_name(table)
        self.ext_table: str | None = check_table_name(ext_table, "reg_ext_table")
        self._wanted_ext_table = self.ext_table
        self.url = url or "sqlite:///" + self.path
        self.table_version: int | None = None
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None
        self._columns: tuple[str, ...] = ()
        self.errors = 0  # operations failed with StoreError, for metrics

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.url} table={self.table}>"

    # -- IRegistrationStore --------------------------------------------------------------------

    def open(self):
        if self._pool is not None:
            return defer.fail(StoreError(f"{self.url} is open already"))
        problem = self._unusable_path()
        if problem is not None:
            self.errors += 1
            return defer.fail(StoreError(f"cannot open {self.url}: {problem}"))
        # A missing file is made, and so is an empty one (what `touch` or an installer
        # leaves): SQLite reads both as a database without tables. Any other file must
        # hold the tables already.
        existed = os.path.exists(self.path)
        create = not existed or os.path.getsize(self.path) == 0
        kwargs = {"check_same_thread": False, "cp_min": 1, "cp_max": 1, "cp_noisy": False}
        if self._reactor is not None:
            kwargs["cp_reactor"] = self._reactor
        self._pool = adbapi.ConnectionPool("sqlite3", self.path, **kwargs)
        d = self._pool.runInteraction(self._check, create)

        def opened(checked):
            version, ext_created, ext_problem = checked
            self.table_version = version
            self.ext_table = None if ext_problem else self._wanted_ext_table
            self._columns = columns_for(version)
            if create:
                self.log.info("Created {path} with an empty {table} table (version {version})",
                              path=self.path, table=self.table, version=CREATED_TABLE_VERSION)
            self.log.info("Opened {url}: {table} table version {version}",
                          url=self.url, table=self.table, version=version)
            if ext_created:
                self.log.info("Created the {ext_table} table in {url} (txuac's own, beside {table})",
                              ext_table=self._wanted_ext_table, url=self.url, table=self.table)
            if ext_problem:
                self.log.warn("Without the {ext_table} table in {url} ({problem}): per-account settings of "
                              "ours are not read and Call-IDs are kept in memory only",
                              ext_table=self._wanted_ext_table, url=self.url, problem=ext_problem)

        def failed(failure):
            self._close_pool()
            if not existed:
                # Never leave a half-made file behind: the next open() would refuse it.
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            return self._store_error(failure, f"cannot open {self.url}")

        return d.addCallbacks(opened, failed)

    def close(self):
        self._close_pool()
        return defer.succeed(None)

    # -- internals ------------------------------------------------------------------------------

    def _unusable_path(self) -> str | None:
        """Why the file cannot be opened or made, found without opening it (None: try).
        The file is made in an existing directory only: a directory that is not there is
        a mistake in the path, not something to create."""
        if os.path.isdir(self.path):
            return "it is a directory"
        if os.path.exists(self.path):
            return None
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            return f"the directory {directory} does not exist (txuac creates the file, not its directory)"
        return None

    @staticmethod
    def _save(txn, states, ext_table: str) -> None:
        """In the pool thread: one transaction (adbapi commits when this returns)."""
        for start in range(0, len(states), SAVE_BATCH):
            batch = states[start:start + SAVE_BATCH]
            txn.execute(ext.upsert_statement(ext_table, "?", len(batch)), ext.upsert_parameters(batch))

    def _check(self, txn, create: bool) -> tuple[int, bool, str | None]:
        """In the pool thread: create the tables when asked, then return the checked table
        version, whether our own table was created, and why it cannot be used (or None)."""
        version = self._check_uacreg(txn, create)
        created, problem = self._check_ext(txn)
        return version, created, problem

    def _check_ext(self, txn) -> tuple[bool, str | None]:
        """Create our own table when it is missing; (created, problem)."""
        table = self._wanted_ext_table
        txn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        created = not txn.fetchall()
        if created:
            try:
                txn.executescript(ext.create_statements("sqlite", table))
            except sqlite3.Error as e:
                if txn.connection.in_transaction:  # the script's BEGIN, left open by the error
                    txn.connection.rollback()
                return False, f"cannot create it: {e}"
        txn.execute("SELECT table_version FROM version WHERE table_name = ?", (table,))
        rows = txn.fetchall()
        if rows and str(rows[0][0]).strip() != str(EXT_TABLE_VERSION):
            return False, f"its version is {rows[0][0]}, txuac reads {EXT_TABLE_VERSION}"
        try:
            txn.execute(f"SELECT l_uuid, {', '.join(ext.EXT_COLUMNS)} FROM {table} LIMIT 0")
        except sqlite3.OperationalError as e:
            return False, f"it does not have txuac's columns: {e}"
        return created, None

    def _check_uacreg(self, txn, create: bool) -> int:
        """Create the uacreg and version tables when asked, then return the checked table version."""
        if create:
            txn.executescript(schema_for(self.table))
        txn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('version', ?)",
                    (self.table,))
        names = {row[0] for row in txn.fetchall()}
        hint = "(create it with conf/schema/sqlite.sql, or remove the file to let txuac create it)"
        if "version" not in names:
            raise StoreError(f"{self.url} has no version table {hint}")
        if self.table not in names:
            raise StoreError(f"the {self.table} table is missing in {self.url} {hint}")
        txn.execute("SELECT table_version FROM version WHERE table_name = ?", (self.table,))
        rows = txn.fetchall()
        if not rows:
            raise StoreError(f"the version table of {self.url} has no row for {self.table}")
        version = rows[0][0]
        if isinstance(version, str) and version.strip().isdigit():
            version = int(version)
        if version not in SUPPORTED_TABLE_VERSIONS:
            raise unsupported_version(self.table, version, self.url)
        try:
            txn.execute(f"SELECT {', '.join(columns_for(version))} FROM {self.table} LIMIT 0")
        except sqlite3.OperationalError as e:
            raise StoreError(f"the {self.table} table in {self.url} does not have the columns of "
                             f"version {version}: {e}") from e
        return version

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @staticmethod
    def _is_duplicate(error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)

    def _store_error(self, failure, context: str):
        self.errors += 1
        if failure.check(StoreError):
            return failure
        if failure.check(sqlite3.Error):
            raise StoreError(f"{context}: {failure.value}") from failure.value
        raise StoreError(f"{context}: {failure.type.__name__}: {failure.value}") from failure.value
