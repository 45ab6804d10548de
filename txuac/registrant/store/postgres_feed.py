"""Live changes to uacreg in PostgreSQL: a trigger NOTIFYs each changed l_uuid, we LISTEN.

The trigger ``txuac_uacreg_changed`` and its function ``txuac_uacreg_notify()``
(schema/postgres-feed.sql) are created by start() when missing; when the user may not, a
warning names the file to run as the table's owner, and the feed listens anyway (it works
as soon as the trigger is there).

LISTEN needs a connection of its own, outside the store's pool: a notification is only
delivered to the session that listens, between its queries. Notifications are read straight
off the connection (not one by one through txpostgres' Cooperator) and gathered by a
ChangeBatcher. The connection has the store's dead-connection detector: when the server goes
away it is reconnected in the background with the same backoff; then LISTEN is issued again
and the batch is None (what changed while nobody listened is unknown: read everything).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from txpostgres.psycopg2_impl import psycopg2
from zope.interface import implementer

from txuac.errors import StoreError
from txuac.registrant.store import IChangeFeed
from txuac.registrant.store.feed import COALESCE_WINDOW, OnChanged, TableFeed, trigger_script
from txuac.registrant.store.postgres import (
    CONNECTION_OPTIONS,
    QuietConnection,
    ReconnectingDetector,
    close_quietly,
    one_line,
)
from txuac.registrant.store.url import StoreURL

log = Logger()

CHANNEL = "txuac_uacreg"
TRIGGER = "txuac_uacreg_changed"


class _ListeningConnection(QuietConnection):
    """A connection that hands every notification of CHANNEL's payload to ``on_payloads``."""

    def __init__(self, reactor, detector, on_payloads):
        super().__init__(reactor, None, detector=detector)
        self._on_payloads = on_payloads

    def checkForNotifies(self):  # noqa: N802 - txpostgres' name
        notifies = self._connection.notifies
        if notifies:
            payloads = [n.payload for n in notifies if n.channel == CHANNEL]
            del notifies[:]
            self._on_payloads(payloads)


@implementer(IChangeFeed)
class PostgresChangeFeed(TableFeed):
    """The changes to ``table`` of the PostgreSQL database ``url`` (a StoreURL)."""

    def __init__(self, url: StoreURL, table: str, reactor, window: float = COALESCE_WINDOW,
                 reconnect_initial_delay: float = 1.0, reconnect_max_delay: float = 10.0):
        super().__init__(url, table, reactor, window)
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._connection: _ListeningConnection | None = None

    @defer.inlineCallbacks
    def start(self, on_changed: OnChanged):
        batcher = self._begin(on_changed)
        detector = ReconnectingDetector(self.url, self._reactor, self._initial_delay, self._max_delay)
        detector.addRecoveryHandler(self._recovered)
        connection = self._connection = _ListeningConnection(self._reactor, detector, batcher.changed)
        try:
            yield connection.connect(**dict(CONNECTION_OPTIONS, **self._url.connection_arguments()))
            yield self._install_trigger(connection)
            yield connection.runOperation(f"LISTEN {CHANNEL}")
        except Exception as e:
            self._connection = self._batcher = None
            close_quietly(connection)
            raise StoreError(f"cannot follow changes to {self.table} in {self.url}: {one_line(e)}") from e
        detector.armed = True
        log.info("Following changes to {table} in {url} (LISTEN {channel})", table=self.table, url=self.url,
                 channel=CHANNEL)

    @defer.inlineCallbacks
    def stop(self):
        connection, self._connection = self._connection, None
        if self._batcher is not None:
            yield self._batcher.stop()
        if connection is not None:
            yield connection.detector.stop()
            close_quietly(connection)

    # -- internals ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _install_trigger(self, connection):
        """Create the trigger when it is missing; a warning when we may not."""
        if (yield self._has_trigger(connection)):
            return
        try:
            yield connection.runOperation(trigger_script("postgres", self.table))
        except psycopg2.Error as e:
            if (yield self._has_trigger(connection)):
                return  # another node made it meanwhile
            self.trigger_problem = one_line(e)
            log.warn("Cannot create the trigger {trigger} on {table} in {url} ({problem}): changes made there "
                     "by SQL reach txuac only at uac.reg_reload. Run conf/schema/postgres-feed.sql as the "
                     "owner of {table}", trigger=TRIGGER, table=self.table, url=self.url,
                     problem=self.trigger_problem)
            return
        log.info("Created the trigger {trigger} on {table} in {url} (it notifies txuac of changed rows)",
                 trigger=TRIGGER, table=self.table, url=self.url)

    @defer.inlineCallbacks
    def _has_trigger(self, connection):
        rows = yield connection.runQuery(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s))",
            (TRIGGER, self.table))
        return bool(rows[0][0])

    @defer.inlineCallbacks
    def _recovered(self):
        """Reconnected: LISTEN again, then read everything (changes meanwhile were not heard)."""
        connection = self._connection
        if connection is None:
            return
        try:
            yield connection.runOperation(f"LISTEN {CHANNEL}")
        except psycopg2.Error as e:  # lost again at once: the detector reconnects once more
            log.warn("LISTEN {channel} on {url} failed after reconnecting: {error}", channel=CHANNEL, url=self.url,
                     error=one_line(e))
            return
        log.info("Following changes to {table} in {url} again; reading every account", table=self.table,
                 url=self.url)
        if self._batcher is not None:
            self._batcher.missed()
