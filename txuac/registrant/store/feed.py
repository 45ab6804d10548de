"""What both change feeds share: changed l_uuids gathered into batches, one batch at a time.

A feed (PostgreSQL's LISTEN, MySQL's change log) reports each changed l_uuid as it learns
of it; a ChangeBatcher hands them on together once ``window`` seconds have passed since the
first, so a bulk INSERT of 10,000 rows reaches the registrant as one batch, not 10,000.
While the registrant applies a batch, the next one gathers; a batch it fails to apply
(the database went away between the notification and the read) is merged into the next,
tried again after ``retry_delay``. ``missed()`` (the feed may have missed changes: after a
reconnect) turns the pending batch into None, "read everything again".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from txuac.errors import StoreError
from txuac.registrant.store import ext
from txuac.registrant.store.url import StoreURL

log = Logger()

# Seconds changed l_uuids are gathered before they are handed on.
COALESCE_WINDOW = 0.05
# Seconds before a batch the registrant failed to apply is tried again.
RETRY_DELAY = 1.0

OnChanged = Callable[[frozenset[str] | None], object]


def trigger_script(kind: str, table: str) -> str:
    """The statements of the feed's shipped DDL (schema/postgres-feed.sql or mysql-feed.sql)
    for the uacreg table ``table``, without BEGIN/COMMIT: PostgreSQL runs them as one query
    string (one transaction), MySQL one by one (each ends a line with ';')."""
    text = ext.schema_text(f"{kind}-feed")
    body = text[text.index("BEGIN;") + len("BEGIN;"):text.rindex("COMMIT;")]
    return body.replace(" ON uacreg", f" ON {table}").strip()


class ChangeBatcher:
    """Changed l_uuids for ``on_changed`` (frozenset, or None for "everything"), in batches."""

    def __init__(self, on_changed: OnChanged, reactor, window: float = COALESCE_WINDOW,
                 retry_delay: float = RETRY_DELAY):
        self._on_changed = on_changed
        self._reactor = reactor
        self._window = window
        self._retry_delay = retry_delay
        self._pending: set[str] | None = set()  # None: everything
        self._has_pending = False
        self._call = None
        self._delivering: defer.Deferred | None = None
        self._failing = False
        self._stopped = False
        self.batches = 0  # batches handed on, for tests and logs

    def changed(self, l_uuids: Iterable[str]) -> None:
        """These l_uuids changed (inserted, updated or deleted)."""
        if self._stopped:
            return
        if self._pending is not None:
            before = len(self._pending)
            self._pending.update(l_uuids)
            if len(self._pending) == before:
                return
        self._has_pending = True
        self._arm(self._window)

    def missed(self) -> None:
        """Changes may have been missed: the next batch is None."""
        if self._stopped:
            return
        self._pending = None
        self._has_pending = True
        self._arm(self._window)

    def stop(self) -> defer.Deferred:
        """Hand nothing on any more; fires once a batch being applied is done."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._delivering is None:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        self._delivering.addBoth(lambda result: done.callback(None) or result)
        return done

    def _arm(self, delay: float) -> None:
        if self._call is None and self._delivering is None and not self._stopped:
            self._call = self._reactor.callLater(delay, self._deliver)

    def _deliver(self) -> None:
        self._call = None
        batch = None if self._pending is None else frozenset(self._pending)
        self._pending, self._has_pending = set(), False
        self.batches += 1
        d = self._delivering = defer.maybeDeferred(self._on_changed, batch)
        d.addCallbacks(self._delivered, self._failed, errbackArgs=(batch,))

    def _delivered(self, _) -> None:
        self._delivering = None
        if self._failing:
            self._failing = False
            log.info("Live changes to the accounts are applied again")
        if self._has_pending:
            self._arm(self._window)

    def _failed(self, failure: Failure, batch: frozenset[str] | None) -> None:
        self._delivering = None
        if not self._failing:
            self._failing = True
            log.warn("Applying live changes to {count} accounts failed ({error}); trying again every {delay:g} s",
                     count="all" if batch is None else len(batch), error=failure.getErrorMessage(),
                     delay=self._retry_delay)
        if batch is None:
            self._pending = None
        elif self._pending is not None:
            self._pending.update(batch)
        self._has_pending = True
        self._arm(self._retry_delay)


class TableFeed:
    """What a store's change feed keeps: the table it follows, where, and its batcher."""

    def __init__(self, url: StoreURL, table: str, reactor, window: float):
        self._url = url
        self.url = url.masked
        self.table = table
        self._reactor = reactor
        self._window = window
        self._batcher: ChangeBatcher | None = None
        self.trigger_problem: str | None = None  # why the trigger(s) could not be made

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} table={self.table}>"

    @property
    def batches(self) -> int:
        """Batches of changes handed on so far."""
        return 0 if self._batcher is None else self._batcher.batches

    def _begin(self, on_changed: OnChanged) -> ChangeBatcher:
        """The batcher of start(); StoreError when started already (start() failing undoes it)."""
        if self._batcher is not None:
            raise StoreError(f"the change feed of {self.url} is started already")
        self._batcher = ChangeBatcher(on_changed, self._reactor, self._window)
        return self._batcher
