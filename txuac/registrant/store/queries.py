"""What both stores do the same way: reading accounts, saving their state, and the rows.

SQLiteStore (adbapi) and PostgresStore (txpostgres) both offer ``runQuery`` and
``runInteraction`` on their pool; only the placeholder style and each backend's
``_save`` and ``_store_error`` differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from txuac.errors import AccountExists, StoreError, StoreUnreachable
from txuac.registrant.store import COLUMNS, EXT_COLUMNS, EXT_DEFAULTS, SUPPORTED_TABLE_VERSIONS
from txuac.registrant.store import ext


# l_uuids per SELECT of load_many (one parameter each).
LOAD_BATCH = 500


def columns_for(version: int) -> tuple[str, ...]:
    """The columns a table of ``version`` has, in COLUMNS order."""
    return COLUMNS if version >= 6 else tuple(c for c in COLUMNS if c != "contact_user")


def read_rows(rows, columns: tuple[str, ...], ext_table: str | None) -> "Rows":
    """What load_all returns for the fetched ``rows`` of ``columns`` (then ours when joined)."""
    return Rows(rows, columns if ext_table is None else columns + EXT_COLUMNS, EXT_DEFAULTS)


class Rows(Sequence):
    """Rows (tuples in ``columns`` order) read as dicts keyed as COLUMNS, each made when it
    is read: a table of 50,000 accounts is never held as 50,000 dicts at once while the
    registrant makes its records (that was the memory peak of a start). contact_user is ''
    when absent, and ``defaults`` fill columns that are NULL."""

    __slots__ = ("_rows", "_columns", "_missing", "_defaults")

    def __init__(self, rows, columns: tuple[str, ...], defaults: dict | None = None):
        self._rows = rows
        self._columns = columns
        self._missing = {c: "" for c in COLUMNS if c not in columns}
        self._defaults = defaults or {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._as_dict(row) for row in self._rows[index]]
        return self._as_dict(self._rows[index])

    def __iter__(self):
        for row in self._rows:
            yield self._as_dict(row)

    def __eq__(self, other) -> bool:
        return isinstance(other, (list, tuple, Rows)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Rows({list(self)!r})"

    def _as_dict(self, row) -> dict:
        values = dict(zip(self._columns, row))
        values.update(self._missing)
        for name, default in self._defaults.items():
            if values.get(name) is None:
                values[name] = default
        return values


class OpenRetry:
    """A store's open() while its server may not be up yet: ``attempt`` (a Deferred-returning
    call) again every ``interval`` seconds while it fails with StoreUnreachable, one warning
    per attempt, until one succeeds or fails otherwise. ``interval`` 0: the first failure is
    the answer. stop() (the store's close()) ends the wait with StoreError."""

    log = Logger()

    def __init__(self, attempt: Callable[[], defer.Deferred], reactor, interval: float, url: str):
        self._attempt = attempt
        self._reactor = reactor
        self._interval = interval
        self._url = url
        self._result: defer.Deferred | None = None
        self._call = None

    def start(self) -> defer.Deferred:
        self._result = defer.Deferred()
        self._try()
        return self._result

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._finish(StoreError(f"{self._url} was closed before it could be opened"))

    def _try(self) -> None:
        self._call = None
        self._attempt().addCallbacks(self._finish, self._failed)

    def _failed(self, failure) -> None:
        if self._result is None or self._result.called:
            return
        if self._interval > 0 and failure.check(StoreUnreachable):
            self.log.warn("{error}; trying again in {interval:g} s", error=str(failure.value), interval=self._interval)
            self._call = self._reactor.callLater(self._interval, self._try)
            return
        self._finish(failure)

    def _finish(self, outcome) -> None:
        result = self._result
        if result is None or result.called:
            return
        if isinstance(outcome, (BaseException, Failure)):
            result.errback(outcome)
        else:
            result.callback(outcome)


def unsupported_version(table: str, version, url: str) -> StoreError:
    supported = " or ".join(str(v) for v in SUPPORTED_TABLE_VERSIONS)
    return StoreError(f"{table} table version {version} is not supported ({supported}) in {url}")


class ServerStoreOpening:
    """open() of a store on a database server, through OpenRetry around the store's own
    ``_open_once``; close() calls ``_stop_opening`` to end a wait for the server."""

    _pool: object | None
    _opening: OpenRetry | None
    url: str
    connect_retry: float

    def open(self):
        if self._pool is not None or self._opening is not None:
            return defer.fail(StoreError(f"{self.url} is open already"))
        opening = self._opening = OpenRetry(self._open_once, self._reactor, self.connect_retry, self.url)

        def done(outcome):
            if self._opening is opening:
                self._opening = None
            return outcome

        return opening.start().addBoth(done)

    def _stop_opening(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.stop()

    def _open_once(self) -> defer.Deferred:
        raise NotImplementedError


def row_values(row: dict, columns: tuple[str, ...], table: str) -> tuple:
    """The values of ``row`` for an INSERT of ``columns`` ('' for a missing one); StoreError
    when ``row`` has a value for a column the table lacks (contact_user on version 5)."""
    lacking = [name for name in COLUMNS if name not in columns and row.get(name) not in (None, "")]
    if lacking:
        raise StoreError(f"the {table} table has no {', '.join(lacking)} column (table version 5)")
    return tuple("" if row.get(name) is None else row[name] for name in columns)


class AccountQueries:
    """load_all, load_keys, load_one, load_many, insert_row, delete_row and save_states of
    IRegistrationStore, on ``self._pool``.

    A store sets ``placeholder``, ``table``, ``ext_table``, ``url``, ``errors``,
    ``_columns`` and ``_pool``, and provides ``_save(txn, states, ext_table)``,
    ``_store_error(failure, context)`` and ``_is_duplicate(error)`` (the driver's error for
    a second row with the same l_uuid).
    """

    placeholder = "?"

    def load_all(self):
        if self._pool is None:
            return self._not_open()
        d = self._pool.runQuery(ext.select_statement(self.table, self.ext_table, self._columns))
        d.addCallback(read_rows, self._columns, self.ext_table)
        return d.addErrback(self._store_error, f"loading the {self.table} table from {self.url} failed")

    def load_keys(self):
        if self._pool is None:
            return self._not_open()
        d = self._pool.runQuery(f"SELECT l_uuid FROM {self.table}")
        d.addCallback(lambda rows: [str(row[0]) for row in rows])
        return d.addErrback(self._store_error, f"loading the l_uuids of the {self.table} table from {self.url} failed")

    def load_one(self, l_uuid):
        if self._pool is None:
            return self._not_open()
        d = self._pool.runQuery(ext.select_statement(self.table, self.ext_table, self._columns)
                                + f" WHERE u.l_uuid = {self.placeholder}", (l_uuid,))
        d.addCallback(lambda rows: read_rows(rows, self._columns, self.ext_table)[0] if rows else None)
        return d.addErrback(self._store_error, f"loading {l_uuid!r} from {self.url} failed")

    def load_many(self, l_uuids):
        if self._pool is None:
            return self._not_open()
        wanted = sorted(l_uuids)
        chunks = [wanted[start:start + LOAD_BATCH] for start in range(0, len(wanted), LOAD_BATCH)]
        d = defer.gatherResults([self._pool.runQuery(
            ext.select_statement(self.table, self.ext_table, self._columns)
            + f" WHERE u.l_uuid IN ({', '.join([self.placeholder] * len(chunk))})", tuple(chunk))
            for chunk in chunks], consumeErrors=True)
        d.addCallback(lambda results: read_rows([row for rows in results for row in rows], self._columns,
                                                self.ext_table))
        d.addErrback(lambda f: f.value.subFailure if f.check(defer.FirstError) else f)
        return d.addErrback(self._store_error, f"loading {len(wanted)} accounts from {self.url} failed")

    def insert_row(self, row):
        if self._pool is None:
            return self._not_open()
        l_uuid = str(row.get("l_uuid") or "")
        context = f"adding {l_uuid!r} to the {self.table} table of {self.url} failed"
        insert = (f"INSERT INTO {self.table} ({', '.join(self._columns)}) "
                  f"VALUES ({', '.join([self.placeholder] * len(self._columns))})")

        def insert_unless_there(found, values):
            if found:
                raise AccountExists(f"{l_uuid!r} is in the {self.table} table of {self.url} already")
            return self._pool.runOperation(insert, values)

        d = defer.maybeDeferred(row_values, row, self._columns, self.table)
        d.addCallback(lambda values: self._exists(l_uuid).addCallback(insert_unless_there, values))
        return d.addErrback(self._write_failed, l_uuid, context)

    def delete_row(self, l_uuid):
        if self._pool is None:
            return self._not_open()

        def delete_if_there(found):
            if not found:
                return False
            d = self._pool.runOperation(f"DELETE FROM {self.table} WHERE l_uuid = {self.placeholder}", (l_uuid,))
            return d.addCallback(lambda _: True)

        d = self._exists(l_uuid).addCallback(delete_if_there)
        return d.addErrback(self._store_error, f"deleting {l_uuid!r} from the {self.table} table of {self.url} failed")

    def _exists(self, l_uuid: str) -> defer.Deferred:
        d = self._pool.runQuery(f"SELECT 1 FROM {self.table} WHERE l_uuid = {self.placeholder}", (l_uuid,))
        return d.addCallback(bool)

    def _write_failed(self, failure: Failure, l_uuid: str, context: str):
        """A duplicate is the caller's AccountExists (a row added meanwhile, caught by the
        table's unique index), not a failing store."""
        if failure.check(AccountExists):
            return failure
        if self._is_duplicate(failure.value):
            raise AccountExists(f"{l_uuid!r} is in the {self.table} table of {self.url} already")
        return self._store_error(failure, context)

    def save_states(self, states):
        if self._pool is None:
            return self._not_open()
        states = list(states)
        if self.ext_table is None or not states:
            return defer.succeed(None)
        d = self._pool.runInteraction(self._save, states, self.ext_table)
        return d.addErrback(self._store_error, f"saving account state into {self.ext_table} of {self.url} failed")

    def _not_open(self):
        self.errors += 1
        return defer.fail(StoreError(f"{self.url} is not open"))
