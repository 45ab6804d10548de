"""Writes what accounts must remember across restarts (AccountState) into the store, in the
background: batched, one write at a time, never waited for by a registration.

put() only records the latest state of an account; a timer writes everything pending in
one save_states() call a moment later. When the store fails (PostgreSQL down, a locked
SQLite file) the batch goes back into the pending states (newer puts win), one warning
is logged for the whole outage, and the write is tried again every ``retry_delay``
seconds; one line says when it works again. A store without save_states() (an embedder's
store written before it existed) is never written to.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from txuac.registrant.store import AccountState

log = Logger()


class AccountStateWriter:
    """Batched, asynchronous save_states() on ``store``."""

    def __init__(self, store, reactor, delay: float = 1.0, retry_delay: float = 10.0):
        self.store = store
        self.reactor = reactor
        self.delay = delay
        self.retry_delay = retry_delay
        self.pending: dict[str, AccountState] = {}
        self.written = 0  # states written, for tests and metrics
        self.errors = 0  # failed writes
        self.failing = False
        self._save = getattr(store, "save_states", None)
        self._timer = None
        self._writing: defer.Deferred | None = None

    def put(self, state: AccountState) -> None:
        """Remember ``state`` for the next write (replacing a pending one of the account)."""
        if self._save is None:
            return
        self.pending[state.l_uuid] = state
        self._arm(self.delay)

    def flush(self, timeout: float) -> defer.Deferred:
        """Write everything pending now; fires (never fails) when done, when the store
        fails, or after ``timeout`` seconds, whichever comes first (a clean stop must not
        hang on a store that is down)."""
        self._cancel_timer()
        done: defer.Deferred = defer.Deferred()
        timer = self.reactor.callLater(timeout, lambda: done.called or done.callback(None))

        def finished(_):
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        self._drain().addBoth(finished)
        return done

    @property
    def writing(self) -> bool:
        """A batch is being written."""
        return self._writing is not None

    def stop(self) -> None:
        """No more timed writes (pending states stay pending)."""
        self._cancel_timer()

    # -- internals ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _drain(self):
        while True:
            if self._writing is not None:
                yield self._wait(self._writing)
            elif self.pending:
                yield self._write()
                if self.failing:
                    return
            else:
                return

    @staticmethod
    def _wait(d: defer.Deferred) -> defer.Deferred:
        """A Deferred firing when ``d`` does, leaving ``d``'s result alone."""
        waiter: defer.Deferred = defer.Deferred()

        def passthrough(result):
            waiter.callback(None)
            return result

        d.addBoth(passthrough)
        return waiter

    def _arm(self, delay: float) -> None:
        if self._timer is None and self._writing is None:
            self._timer = self.reactor.callLater(delay, self._write)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _write(self) -> defer.Deferred:
        self._timer = None
        batch, self.pending = self.pending, {}
        if not batch:
            return defer.succeed(None)
        d = self._writing = defer.maybeDeferred(self._save, list(batch.values()))
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))
        d.addBoth(self._after)
        return d

    def _written(self, _, batch: dict[str, AccountState]) -> None:
        self.written += len(batch)
        if self.failing:
            self.failing = False
            log.info("Saving account state into {url} works again ({count} accounts written)",
                     url=getattr(self.store, "url", "the store"), count=len(batch))

    def _failed(self, failure, batch: dict[str, AccountState]) -> None:
        self.errors += 1
        for l_uuid, state in batch.items():
            self.pending.setdefault(l_uuid, state)  # a newer put wins
        if not self.failing:
            self.failing = True
            log.warn("Saving account state (Call-IDs) into {url} failed: {error}; registrations go on, "
                     "the write is retried every {retry_delay:g} s",
                     url=getattr(self.store, "url", "the store"), error=failure.getErrorMessage(),
                     retry_delay=self.retry_delay)

    def _after(self, _) -> None:
        self._writing = None
        if self.pending:
            self._arm(self.retry_delay if self.failing else self.delay)
