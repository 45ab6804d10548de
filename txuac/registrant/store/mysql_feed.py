"""Live changes to uacreg in MySQL/MariaDB: a change log filled by triggers, read twice a second.

MySQL has no LISTEN. Three triggers on uacreg (schema/mysql-feed.sql, created by start()
when missing) append the l_uuid of each changed row to ``txuac_uacreg_change`` under an
AUTO_INCREMENT seq; every ``poll_interval`` the feed reads the rows past what it has seen
(a node starts from the current MAX(seq)) and hands their l_uuids to a ChangeBatcher. Rows
older than ``prune_age`` are deleted at most once per ``prune_interval`` by whichever node
gets there (each node's own reads are seconds behind at most).

A seq is taken when the trigger runs, not when its transaction commits: a transaction
that took seq 10 may commit after one that took 11 was read. So the feed reads everything
past a watermark that trails the highest seq seen by ``settle`` seconds (ChangeLogCursor),
and a seq still missing ``settle`` s after a later one was read is given up (rolled back,
or skipped by auto_increment_increment). Only a transaction on uacreg held open longer
than that between its change and its commit could be missed.

Without the triggers (the user lacks the TRIGGER privilege, or binary logging refuses a
trigger from a user without SUPER) a warning names what to grant or set, and the feed
falls back to ``CHECKSUM TABLE`` on uacreg every ``CHECKSUM_INTERVAL`` (it reads every
row: not as often as the log), a None batch (read everything) when it changes.

The feed has its own connection (one adbapi pool thread, as the store's), reconnected
at the next poll after the server went away; the first poll that works after that hands
on None too (a catch-up, as PostgreSQL's feed does after re-LISTEN).
"""

from __future__ import annotations

import pymysql
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from txuac.errors import StoreError
from txuac.registrant.store import IChangeFeed
from txuac.registrant.store.feed import COALESCE_WINDOW, OnChanged, TableFeed, trigger_script
from txuac.registrant.store.mysql import QuietPool, connection_arguments, is_connection_error, reason, split_statements
from txuac.registrant.store.url import StoreURL

log = Logger()

CHANGE_TABLE = "txuac_uacreg_change"
TRIGGERS = ("txuac_uacreg_insert", "txuac_uacreg_update", "txuac_uacreg_delete")
# Half a second: a change reaches its owner within a second, the poll's wait included; a
# read of the log's new rows by its primary key costs the server next to nothing.
POLL_INTERVAL = 0.5
CHECKSUM_INTERVAL = 1.0
# Seconds a later seq waits for an earlier one to commit before the earlier is given up.
SETTLE = 5.0
# The named lock (GET_LOCK) nodes take while they make the log and its triggers, and the
# seconds one waits for it (then goes on without).
INSTALL_LOCK = "txuac_uacreg_feed"
INSTALL_LOCK_WAIT = 30
PRUNE_AGE = 600
PRUNE_INTERVAL = 60.0


class ChangeLogCursor:
    """Which rows of the change log are news: those past ``watermark`` not seen yet. The
    watermark moves up to the highest seq seen at least ``settle`` seconds ago."""

    def __init__(self, start: int, settle: float = SETTLE):
        self.watermark = start
        self._settle = settle
        self._seen: dict[int, float] = {}  # seq past the watermark -> when it was first read

    def take(self, rows, now: float) -> set[str]:
        """The l_uuids of the (seq, l_uuid) ``rows`` (all past the watermark) not seen before."""
        news = set()
        for seq, l_uuid in rows:
            if seq > self.watermark and seq not in self._seen:
                self._seen[seq] = now
                news.add(l_uuid)
        settled = [seq for seq, seen_at in self._seen.items() if now - seen_at >= self._settle]
        if settled:
            self.watermark = max(settled)
            self._seen = {seq: at for seq, at in self._seen.items() if seq > self.watermark}
        return news

    def restart(self, start: int) -> None:
        """Read from ``start`` on (the log's seq went back: its AUTO_INCREMENT was reset)."""
        self.watermark = start
        self._seen.clear()


@implementer(IChangeFeed)
class MySQLChangeFeed(TableFeed):
    """The changes to ``table`` of the MySQL/MariaDB database ``url`` (a StoreURL)."""

    def __init__(self, url: StoreURL, table: str, reactor, poll_interval: float = POLL_INTERVAL,
                 window: float = COALESCE_WINDOW, settle: float = SETTLE, prune_age: int = PRUNE_AGE,
                 prune_interval: float = PRUNE_INTERVAL):
        super().__init__(url, table, reactor, window)
        self._poll_interval = poll_interval
        self._settle = settle
        self._prune_age = prune_age
        self._prune_interval = prune_interval
        self._pool: QuietPool | None = None
        self._cursor: ChangeLogCursor | None = None
        self._checksum = None  # the fallback's last CHECKSUM TABLE value
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = reactor
        self._polling: defer.Deferred | None = None
        self._lost = False
        self._last_prune: float | None = None

    def start(self, on_changed: OnChanged) -> defer.Deferred:
        try:
            self._begin(on_changed)
        except StoreError:
            return defer.fail()
        pool = self._pool = QuietPool(self.url, self._reactor, **connection_arguments(self._url))

        def started(first):
            self._cursor, self._checksum = (ChangeLogCursor(first, self._settle), None) \
                if self.trigger_problem is None else (None, first)
            interval = self._poll_interval if self._cursor else max(self._poll_interval, CHECKSUM_INTERVAL)
            self._loop.start(interval, now=False)
            log.info("Following changes to {table} in {url} ({how}, every {interval:g} s)", table=self.table,
                     url=self.url, how=CHANGE_TABLE if self._cursor else "CHECKSUM TABLE", interval=interval)

        def failed(failure):
            self._pool = self._batcher = None
            pool.close()
            raise StoreError(f"cannot follow changes to {self.table} in {self.url}: {reason(failure.value)}") \
                from failure.value

        return pool.runInteraction(self._install).addCallbacks(started, failed)

    @defer.inlineCallbacks
    def stop(self):
        if self._loop.running:
            self._loop.stop()
        if self._polling is not None:
            yield self._polling
        if self._batcher is not None:
            yield self._batcher.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- internals ------------------------------------------------------------------------------

    def _install(self, txn):
        """In the pool thread: make the log and its triggers when missing; the first seq to
        read past (or, without triggers, the table's checksum). Under a named lock: nodes
        starting together would drop and make each other's triggers (each DDL statement
        commits on its own), and one would find a trigger it had just dropped made again."""
        txn.execute("SELECT GET_LOCK(%s, %s)", (INSTALL_LOCK, INSTALL_LOCK_WAIT))
        try:
            return self._install_locked(txn)
        finally:
            try:
                txn.execute("SELECT RELEASE_LOCK(%s)", (INSTALL_LOCK,))
            except pymysql.err.MySQLError:
                pass  # the connection is gone, and the lock with it

    def _install_locked(self, txn):
        txn.execute("SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() "
                    "AND event_object_table = %s AND trigger_name IN (%s, %s, %s)", (self.table, *TRIGGERS))
        have = len(txn.fetchall())
        txn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
                    (CHANGE_TABLE,))
        if not txn.fetchall() or have < len(TRIGGERS):
            try:
                for statement in split_statements(trigger_script("mysql", self.table)):
                    txn.execute(statement)
            except pymysql.err.MySQLError as e:
                if is_connection_error(e):
                    raise
                self.trigger_problem = reason(e)
                log.warn("Cannot create the change log {log_table} and its triggers on {table} in {url} ({problem}): "
                         "give the user of reg_db_url the TRIGGER privilege (GRANT TRIGGER ON {table} TO ...) and, "
                         "with binary logging on, set log_bin_trust_function_creators = 1 (or run "
                         "conf/schema/mysql-feed.sql as a user who may). Meanwhile every poll takes CHECKSUM TABLE "
                         "{table} and reads every account when it changes", log_table=CHANGE_TABLE, table=self.table,
                         url=self.url, problem=self.trigger_problem)
                return self._read_checksum(txn)
            log.info("Created the change log {log_table} and its triggers on {table} in {url}",
                     log_table=CHANGE_TABLE, table=self.table, url=self.url)
        return self._last_seq(txn)

    def _last_seq(self, txn) -> int:
        txn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {CHANGE_TABLE}")
        return int(txn.fetchall()[0][0])

    def _read_checksum(self, txn):
        txn.execute(f"CHECKSUM TABLE {self.table}")
        return txn.fetchall()[0][1]

    def _read(self, txn, watermark: int | None, prune: bool):
        """In the pool thread: the checksum, or the log's rows past ``watermark`` and its MAX(seq)."""
        if watermark is None:
            return self._read_checksum(txn), None
        txn.execute(f"SELECT seq, l_uuid FROM {CHANGE_TABLE} WHERE seq > %s ORDER BY seq", (watermark,))
        rows = txn.fetchall()
        last = self._last_seq(txn)
        if prune:
            txn.execute(f"DELETE FROM {CHANGE_TABLE} WHERE changed_at < NOW(3) - INTERVAL %s SECOND",
                        (self._prune_age,))
        return rows, last

    def _poll(self) -> None:
        if self._polling is not None or self._pool is None:
            return
        now = self._reactor.seconds()
        prune = self._cursor is not None and (self._last_prune is None
                                              or now - self._last_prune >= self._prune_interval)
        if prune:
            self._last_prune = now
        watermark = None if self._cursor is None else self._cursor.watermark
        d = self._polling = self._pool.runInteraction(self._read, watermark, prune)
        d.addCallbacks(self._polled, self._poll_failed)
        d.addBoth(self._poll_done)

    def _poll_done(self, _) -> None:
        self._polling = None

    def _polled(self, result) -> None:
        found, last = result
        batcher = self._batcher
        if batcher is None:
            return
        if self._lost:
            self._lost = False
            log.info("Following changes to {table} in {url} again; reading every account", table=self.table,
                     url=self.url)
            batcher.missed()
            if self._cursor is not None and last < self._cursor.watermark:
                self._cursor.restart(last)  # the server's restart took the AUTO_INCREMENT back
        if self._cursor is None:
            if found != self._checksum:
                self._checksum = found
                batcher.missed()
            return
        news = self._cursor.take(found, self._reactor.seconds())
        if news:
            batcher.changed(news)

    def _poll_failed(self, failure) -> None:
        # The pool logs a lost connection once; other errors every poll would be noise too.
        if not self._lost and not is_connection_error(failure.value):
            log.warn("Reading the change log {log_table} of {url} failed: {error}", log_table=CHANGE_TABLE,
                     url=self.url, error=reason(failure.value))
        self._lost = True
