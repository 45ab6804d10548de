"""The embedded default store: Kamailio's uacreg table in an SQLite file.

sqlite3 blocks, so every query runs through twisted.enterprise.adbapi in one pool thread
(``cp_max=1``: one connection, used by one thread at a time, so access is serialised and
``check_same_thread=False`` is safe). When the file does not exist, open() creates it with
the version and uacreg tables of conf/schema/sqlite.sql, whose statements are kept below
(conf/ is not installed with the package).
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
from txuac.registrant.store import COLUMNS, SUPPORTED_TABLE_VERSIONS, IRegistrationStore
from txuac.registrant.store.url import check_table_name

# The schema ships in the package (conf/schema/sqlite.sql links to it) so that an
# installed txuac can create the file.
SCHEMA = importlib.resources.files("txuac.registrant.store").joinpath("schema/sqlite.sql").read_text("utf-8")
CREATED_TABLE_VERSION = 6


def schema_for(table: str) -> str:
    """SCHEMA with the uacreg table (its constraint and version row) named ``table``."""
    table = check_table_name(table)
    if table == "uacreg":
        return SCHEMA
    return (SCHEMA.replace("CREATE TABLE uacreg (", f"CREATE TABLE {table} (")
            .replace("uacreg_l_uuid_idx", f"{table}_l_uuid_idx")
            .replace("('uacreg','6')", f"('{table}','6')"))


def columns_for(version: int) -> tuple[str, ...]:
    """The columns a table of ``version`` has, in COLUMNS order."""
    return COLUMNS if version >= 6 else tuple(c for c in COLUMNS if c != "contact_user")


def rows_to_dicts(rows, columns: tuple[str, ...]) -> list[dict]:
    """Rows (tuples in ``columns`` order) as dicts keyed as COLUMNS; contact_user '' when absent."""
    missing = {c: "" for c in COLUMNS if c not in columns}
    result = []
    for row in rows:
        record = dict(zip(columns, row))
        record.update(missing)
        result.append(record)
    return result


def unsupported_version(table: str, version, url: str) -> StoreError:
    supported = " or ".join(str(v) for v in SUPPORTED_TABLE_VERSIONS)
    return StoreError(f"{table} table version {version} is not supported ({supported}) in {url}")


@implementer(IRegistrationStore)
class SQLiteStore:
    """The uacreg table in the SQLite file ``path`` (created by open() when it does not exist)."""

    log = Logger()

    def __init__(self, path: str, reactor=None, table: str = "uacreg", url: str | None = None):
        self.path = os.path.abspath(path)
        self.table = check_table_name(table)
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
        create = not os.path.exists(self.path)
        if create:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            except OSError as e:
                return defer.fail(StoreError(f"cannot create the directory of {self.url}: {e.strerror}"))
        kwargs = {"check_same_thread": False, "cp_min": 1, "cp_max": 1, "cp_noisy": False}
        if self._reactor is not None:
            kwargs["cp_reactor"] = self._reactor
        self._pool = adbapi.ConnectionPool("sqlite3", self.path, **kwargs)
        d = self._pool.runInteraction(self._check, create)

        def opened(version):
            self.table_version = version
            self._columns = columns_for(version)
            if create:
                self.log.info("Created {path} with an empty {table} table (version {version})",
                              path=self.path, table=self.table, version=CREATED_TABLE_VERSION)
            self.log.info("Opened {url}: {table} table version {version}",
                          url=self.url, table=self.table, version=version)

        def failed(failure):
            self._close_pool()
            if create:
                # Never leave a half-made file behind: the next open() would refuse it.
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            return self._store_error(failure, f"cannot open {self.url}")

        return d.addCallbacks(opened, failed)

    def load_all(self):
        if self._pool is None:
            return self._not_open()
        sql = f"SELECT {', '.join(self._columns)} FROM {self.table}"
        d = self._pool.runQuery(sql)
        d.addCallback(rows_to_dicts, self._columns)
        return d.addErrback(self._store_error, f"loading the {self.table} table from {self.url} failed")

    def load_one(self, l_uuid):
        if self._pool is None:
            return self._not_open()
        sql = f"SELECT {', '.join(self._columns)} FROM {self.table} WHERE l_uuid = ?"
        d = self._pool.runQuery(sql, (l_uuid,))
        d.addCallback(lambda rows: (rows_to_dicts(rows[:1], self._columns) or [None])[0])
        return d.addErrback(self._store_error, f"loading {l_uuid!r} from {self.url} failed")

    def close(self):
        self._close_pool()
        return defer.succeed(None)

    # -- internals ------------------------------------------------------------------------------

    def _check(self, txn, create: bool) -> int:
        """In the pool thread: create the tables when asked, then return the checked table version."""
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

    def _not_open(self):
        self.errors += 1
        return defer.fail(StoreError(f"{self.url} is not open"))

    def _store_error(self, failure, context: str):
        self.errors += 1
        if failure.check(StoreError):
            return failure
        if failure.check(sqlite3.Error):
            raise StoreError(f"{context}: {failure.value}") from failure.value
        raise StoreError(f"{context}: {failure.type.__name__}: {failure.value}") from failure.value
