"""Kamailio's uacreg table in PostgreSQL, through txpostgres (psycopg2 async, no threads).

Every pooled connection has its own txpostgres DeadConnectionDetector: when the server goes
away (a restart, a failover, a dead network) the connection is noticed dead, either while
idle (the server's goodbye arrives on the socket, which txpostgres always watches) or when a
query fails, and it is reconnected in the background with backoff (1 s, growing by 1.7 up to
10 s, forever). Meanwhile queries fail at once with StoreError; once reconnected they work
again, without reopening the store. Kamailio's tables are not created here: an operator runs
conf/schema/postgres.sql (txuac only reads uacreg). Our own table (``ext_table``, see
txuac.registrant.store.ext) is created by open() when it is missing and the user may create
tables; otherwise a warning says so and the store works without it.

Three txpostgres rough edges are handled here (txpostgres 1.7.0):

- ConnectionPool builds its connections without a detector: ``_Pool.connectionFactory``
  gives each one its own.
- A server that closes an idle connection makes ``Connection.doRead`` raise, which the
  reactor logs as an unhandled error before calling connectionLost;
  ``QuietConnection.doRead`` returns the error instead (the reactor's documented way to
  report a lost descriptor). A plain EOF arrives as ConnectionDone, which the default
  death checker does not count as death; ours does (except while we close on purpose).
- The detector keeps no handle on its retry loop (a pending reactor.callLater), so it could
  neither be stopped by close() nor leave a test reactor clean; ``ReconnectingDetector``
  keeps it and cancels it.

The change feed's LISTEN connection (postgres_feed) is a QuietConnection with a
ReconnectingDetector of its own too.

The URL's password goes to libpq only; logs and errors show the masked URL.

open() tells a server that is not up yet (no connection: refused, unreachable, no answer
within OPEN_TIMEOUT, a host name that does not resolve yet; or the server's own "starting
up", "shutting down", "too many clients") from one that answers no (a refused login, an
unknown database or role): with ``connect_retry`` seconds (``[uac] reg_db_connect_retry``)
the first is tried again, one warning per attempt, until the server is there; the second
fails open() at once.
"""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres
from txpostgres.psycopg2_impl import psycopg2
from zope.interface import implementer

from txuac.errors import StoreError, StoreUnreachable
from txuac.registrant.store import (
    DEFAULT_EXT_TABLE,
    EXT_TABLE_VERSION,
    SUPPORTED_TABLE_VERSIONS,
    IRegistrationStore,
)
from txuac.registrant.store import ext
from txuac.registrant.store.queries import AccountQueries, OpenRetry, ServerStoreOpening, columns_for, unsupported_version
from txuac.registrant.store.url import StoreURL, check_table_name, parse_store_url

log = Logger()

# libpq options added to the URL's: name the client in pg_stat_activity, and notice a server
# that vanished without closing the connection (keepalives on idle connections, a 30 s limit
# on unacknowledged data while a query is out).
CONNECTION_OPTIONS = {
    "application_name": "txuac",
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}
# libpq ignores connect_timeout for asynchronous connections: open() has its own.
OPEN_TIMEOUT = 10.0
# AccountStates per INSERT (4 parameters each).
SAVE_BATCH = 500
# SQLSTATE of a second row with the same l_uuid (uacreg's unique index).
UNIQUE_VIOLATION = "23505"
# What a server says when it is there but cannot take the connection yet (SQLSTATE 57P03
# cannot_connect_now, 53300 too_many_connections): worth another attempt, as no answer is.
# Any other FATAL at connection (a refused password, an unknown database or role) is final.
_NOT_READY_YET = ("the database system is starting up", "the database system is shutting down",
                  "the database system is not yet accepting connections", "the database system is in recovery mode",
                  "too many clients", "remaining connection slots")


def one_line(value) -> str:
    return " ".join(str(value).split())


def _not_up_yet(failure: Failure) -> bool:
    """True when connecting failed because the server is not (yet) there or not ready."""
    if failure.check(error.ConnectionDone, error.ConnectionLost, reconnection.ConnectionDead):
        return True
    if not failure.check(psycopg2.OperationalError):
        return False
    text = str(failure.value)
    return "FATAL:" not in text or any(phrase in text for phrase in _NOT_READY_YET)


class ReconnectingDetector(reconnection.DeadConnectionDetector):
    """txpostgres' detector with a retry loop that can be stopped, and log lines."""

    def __init__(self, url: str, reactor, initial_delay: float, max_delay: float):
        super().__init__(deathChecker=self._is_dead, reconnectionIterator=self._delays, reactor=reactor)
        self.url = url
        self.stopped = False
        # Armed once open() has connected and checked the tables: until then a failure is
        # open()'s to report (and retry), not a lost connection to win back.
        self.armed = False
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._retrying: defer.Deferred | None = None
        self._attempts = 0

    def _delays(self):
        return retrying.simpleBackoffIterator(
            initialDelay=self._initial_delay, maxDelay=self._max_delay, factor=1.7, maxRetries=0, now=True)

    def _is_dead(self, failure: Failure) -> bool:
        if self.stopped or not self.armed:
            return False
        return failure.check(psycopg2.InterfaceError, psycopg2.OperationalError, txpostgres.RollbackFailed,
                             error.ConnectionDone, error.ConnectionLost) is not None

    def startReconnecting(self, f):
        if self.stopped:
            return
        log.warn("Lost the connection to {url} ({reason}); reconnecting in the background",
                 url=self.url, reason=one_line(f.getErrorMessage()) or f.type.__name__)
        self._attempts = 0
        call = retrying.RetryingCall(self.reconnect)
        call.reactor = self.reactor
        d = self._retrying = call.start(self.reconnectionIterator())
        d.addCallbacks(self._reconnected, self._gave_up)

    def reconnect(self):
        self._attempts += 1
        return super().reconnect()

    def _reconnected(self, _):
        self._retrying = None
        if self.stopped:
            # Connected just as the store was closed: do not keep it.
            close_quietly(self.reconnectable)
            return None
        log.info("Reconnected to {url} (attempt {attempts})", url=self.url, attempts=self._attempts)
        return self.connectionRecovered()

    def _gave_up(self, failure):
        self._retrying = None
        if self.stopped or failure.check(defer.CancelledError):
            return None
        # Only a custom iterator ends; the default one retries forever.
        log.failure("Gave up reconnecting to {url}", failure, url=self.url)
        return None

    def stop(self) -> defer.Deferred:
        """Stop reconnecting; fires once no connection attempt is under way."""
        self.stopped = True
        d, self._retrying = self._retrying, None
        if d is None or d.called:
            return defer.succeed(None)
        try:
            d.cancel()  # fires d when waiting between attempts
        except Exception:
            pass  # an attempt is connecting: psycopg2 must finish it first (d fires then)
        done: defer.Deferred[None] = defer.Deferred()
        d.addBoth(lambda _: done.callback(None))
        return done


class QuietConnection(txpostgres.Connection):
    """A connection whose server left while it was idle is lost without a logged error."""

    def doRead(self):
        try:
            return super().doRead()
        except Exception as e:  # psycopg2 error from poll() on an idle connection: the server left
            return e  # the reactor removes us and calls connectionLost(Failure(e)), without logging


def close_quietly(connection) -> None:
    if getattr(connection, "_connection", None) is None:
        return  # never connected (psycopg2.connect raised)
    try:
        connection.close()
    except Exception:
        pass


class _Pool(txpostgres.ConnectionPool):
    def __init__(self, make_detector, reactor, size: int, **connkw):
        self.reactor = reactor
        self._make_detector = make_detector
        self.every_connection: list[QuietConnection] = []
        super().__init__(None, min=size, **connkw)

    def connectionFactory(self, reactor, cooperator):  # noqa: N802 - txpostgres' name
        connection = QuietConnection(reactor, cooperator, detector=self._make_detector())
        self.every_connection.append(connection)
        return connection


@implementer(IRegistrationStore)
class PostgresStore(ServerStoreOpening, AccountQueries):
    """The uacreg table of the PostgreSQL database ``url`` (a StoreURL or its text)."""

    placeholder = "%s"  # psycopg2's

    def __init__(self, url: StoreURL | str, reactor=None, table: str = "uacreg", pool_size: int = 1,
                 reconnect_initial_delay: float = 1.0, reconnect_max_delay: float = 10.0,
                 open_timeout: float = OPEN_TIMEOUT, ext_table: str = DEFAULT_EXT_TABLE,
                 connect_retry: float = 0.0):
        parsed = url if isinstance(url, StoreURL) else parse_store_url(url)
        if parsed.kind != "postgres":
            raise StoreError(f"{parsed.masked} is not a PostgreSQL URL")
        if reactor is None:
            from twisted.internet import reactor
        self._url = parsed
        self.url = parsed.masked
        self.table = check_table_name(table)
        self.ext_table: str | None = check_table_name(ext_table, "reg_ext_table")
        self._wanted_ext_table = self.ext_table
        self.table_version: int | None = None
        self._reactor = reactor
        self._pool_size = pool_size
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._open_timeout = open_timeout
        self.connect_retry = connect_retry
        self._opening: OpenRetry | None = None
        self._pool: _Pool | None = None
        self._columns: tuple[str, ...] = ()
        self.errors = 0  # operations failed with StoreError, for metrics

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url} table={self.table}>"

    # -- IRegistrationStore --------------------------------------------------------------------

    def _open_once(self) -> defer.Deferred:
        """One attempt: connect and check the tables. StoreUnreachable when the server is
        not there (yet), StoreError when it refuses us or the tables are wrong."""
        arguments = dict(CONNECTION_OPTIONS, **self._url.connection_arguments())
        pool = self._pool = _Pool(self._new_detector, self._reactor, self._pool_size, **arguments)
        result: defer.Deferred = defer.Deferred()
        timer = self._reactor.callLater(self._open_timeout, self._open_timed_out, result)

        def opened(checked):
            if result.called:
                return  # timed out meanwhile: the pool is closed already
            timer.cancel()
            for connection in pool.every_connection:
                connection.detector.armed = True
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
                         "conf/schema/postgres-txuac.sql)",
                         ext_table=self._wanted_ext_table, url=self.url, problem=ext_problem)
            result.callback(None)

        def failed(failure):
            if result.called:
                return
            timer.cancel()
            self.errors += 1
            if failure.check(defer.FirstError):
                failure = failure.value.subFailure
            if self._pool is pool:
                self._abandon_pool()
            if failure.check(StoreError):
                result.errback(failure)
            else:
                kind = StoreUnreachable if _not_up_yet(failure) else StoreError
                result.errback(kind(f"cannot open {self.url}: {self._reason(failure)}"))

        d = pool.start()
        d.addCallback(lambda _: self._check(pool))
        d.addCallbacks(opened, failed)
        return result

    def change_feed(self):
        """The IChangeFeed of this table: LISTEN on a connection of its own (postgres_feed)."""
        from txuac.registrant.store.postgres_feed import PostgresChangeFeed

        return PostgresChangeFeed(self._url, self.table, self._reactor, reconnect_initial_delay=self._initial_delay,
                                  reconnect_max_delay=self._max_delay)

    @defer.inlineCallbacks
    def close(self):
        self._stop_opening()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        yield self._close_pool(pool)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    @defer.inlineCallbacks
    def _save(cursor, states, ext_table: str):
        """One transaction (txpostgres commits when this succeeds, rolls back when it fails)."""
        for start in range(0, len(states), SAVE_BATCH):
            batch = states[start:start + SAVE_BATCH]
            yield cursor.execute(ext.upsert_statement(ext_table, "%s", len(batch)), ext.upsert_parameters(batch))

    @defer.inlineCallbacks
    def _check_ext(self, pool: _Pool):
        """Create our own table when it is missing: (created, problem or None)."""
        table = self._wanted_ext_table
        rows = yield pool.runQuery("SELECT to_regclass(%s) IS NOT NULL", (table,))
        created = not rows[0][0]
        if created:
            try:
                yield pool.runOperation(ext.create_statements("postgres", table))
            except psycopg2.Error as e:
                return False, f"cannot create it: {one_line(e)}"
        rows = yield pool.runQuery("SELECT table_version FROM version WHERE table_name = %s", (table,))
        if rows and rows[0][0] != EXT_TABLE_VERSION:
            return False, f"its version is {rows[0][0]}, txuac reads {EXT_TABLE_VERSION}"
        try:
            yield pool.runQuery(f"SELECT l_uuid, {', '.join(ext.EXT_COLUMNS)} FROM {table} LIMIT 0")
        except psycopg2.Error as e:
            return False, f"it does not have txuac's columns: {one_line(e)}"
        rows = yield pool.runQuery("SELECT has_table_privilege(%s, 'INSERT') AND has_table_privilege(%s, 'UPDATE')",
                                   (table, table))
        if not rows[0][0]:
            return False, "the user of reg_db_url may not INSERT and UPDATE it"
        return created, None

    def _new_detector(self) -> ReconnectingDetector:
        return ReconnectingDetector(self.url, self._reactor, self._initial_delay, self._max_delay)

    @defer.inlineCallbacks
    def _check(self, pool: _Pool):
        hint = "(create it with conf/schema/postgres.sql)"
        rows = yield pool.runQuery("SELECT to_regclass('version') IS NOT NULL, to_regclass(%s) IS NOT NULL",
                                   (self.table,))
        has_version, has_table = rows[0]
        if not has_version:
            raise StoreError(f"{self.url} has no version table {hint}")
        if not has_table:
            raise StoreError(f"the {self.table} table is missing in {self.url} {hint}")
        rows = yield pool.runQuery("SELECT table_version FROM version WHERE table_name = %s", (self.table,))
        if not rows:
            raise StoreError(f"the version table of {self.url} has no row for {self.table}")
        version = rows[0][0]
        if version not in SUPPORTED_TABLE_VERSIONS:
            raise unsupported_version(self.table, version, self.url)
        try:
            yield pool.runQuery(f"SELECT {', '.join(columns_for(version))} FROM {self.table} LIMIT 0")
        except psycopg2.ProgrammingError as e:
            raise StoreError(f"the {self.table} table in {self.url} does not have the columns of "
                             f"version {version}: {one_line(e)}") from e
        ext_created, ext_problem = yield self._check_ext(pool)
        return version, ext_created, ext_problem

    def _open_timed_out(self, result: defer.Deferred) -> None:
        if result.called:
            return
        self._abandon_pool()
        self.errors += 1
        result.errback(StoreUnreachable(f"cannot open {self.url}: no answer within {self._open_timeout:g} s"))

    def _abandon_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            d = self._close_pool(pool)
            d.addErrback(lambda f: log.failure("Closing {url} failed", f, url=self.url))

    @defer.inlineCallbacks
    def _close_pool(self, pool: _Pool):
        yield defer.gatherResults([c.detector.stop() for c in pool.every_connection])
        for connection in pool.every_connection:
            close_quietly(connection)

    @staticmethod
    def _reason(failure: Failure) -> str:
        if failure.check(reconnection.ConnectionDead):
            return "the connection is down, reconnecting"
        if failure.check(error.ConnectionDone, error.ConnectionLost):
            return "the connection was closed"
        text = one_line(failure.getErrorMessage())
        return text or failure.type.__name__

    @staticmethod
    def _is_duplicate(error: BaseException) -> bool:
        return isinstance(error, psycopg2.IntegrityError) and getattr(error, "pgcode", None) == UNIQUE_VIOLATION

    def _store_error(self, failure: Failure, context: str):
        self.errors += 1
        if failure.check(StoreError):
            return failure
        raise StoreError(f"{context}: {self._reason(failure)}") from failure.value
