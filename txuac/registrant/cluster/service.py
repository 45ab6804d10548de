"""The cluster's Twisted shell: one lease transaction per tick on a connection of its own,
the fence on a monotonic clock, the fleet view written in batches.

ClusterService is the registrant's IAccountOwnership: it owns the partitions NodeLeases
says it holds, until the local deadline. A database that goes away makes renewals fail: one
warning, the fence takes every partition away at the deadline (one warning, counted), and
the ticks go on until the database answers again, when the partitions are acquired anew.
"""

from __future__ import annotations

import time
from typing import Callable

from twisted.application import service
from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txuac.errors import StoreError
from txuac.registrant import protocol
from txuac.registrant.cluster import database
from txuac.registrant.cluster.database import AccountView, ClusterSQL, TickResult
from txuac.registrant.cluster.leases import ClusterSettings, NodeLeases, live_nodes
from txuac.registrant.ownership import IAccountOwnership, OwnershipChange, OwnershipListener, partition_of
from txuac.registrant.store.url import StoreURL

log = Logger()

# Upper bounds (seconds) of the lease renewal latency histogram.
RENEW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FENCE_CHECK = 0.1  # seconds between checks of the local deadline
PREPARE_RETRY = 2.0  # seconds between attempts to reach a database not up yet at start


class ClusterMetrics:
    """Counts that exist nowhere else: takeovers, fences, renewal latencies."""

    buckets = RENEW_BUCKETS

    def __init__(self):
        self.takeovers = 0
        self.fenced = 0
        self.renew_counts = [0] * (len(RENEW_BUCKETS) + 1)
        self.renew_sum = 0.0

    def renewed(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(RENEW_BUCKETS) if seconds <= bound), len(RENEW_BUCKETS))
        self.renew_counts[index] += 1
        self.renew_sum += seconds


def backend(url: StoreURL):
    """The backend module (postgres or mysql) of ``url``; StoreError for another kind."""
    if url.kind == "postgres":
        from txuac.registrant.cluster import postgres as module
    elif url.kind == "mysql":
        from txuac.registrant.cluster import mysql as module
    else:
        raise StoreError(f"[cluster] needs a PostgreSQL or MySQL reg_db_url, not {url.masked}")
    return module


class _Connection(adbapi.Connection):
    """One transaction's handle: a connection the server dropped is thrown away quietly
    (the transaction's own error says what happened) and made anew for the next one."""

    def rollback(self):
        try:
            self._connection.rollback()
        except Exception:  # noqa: BLE001 - any driver's "connection closed"
            self._pool.disconnect(self._connection)


class _Pool(adbapi.ConnectionPool):
    connectionFactory = _Connection  # noqa: N815 - adbapi's name

    def _close(self, conn):
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closed by the server already
            pass


def open_pool(url: StoreURL, reactor) -> tuple[adbapi.ConnectionPool, ClusterSQL]:
    """A pool of one connection (its own thread) on ``url``, and its backend's SQL."""
    module = backend(url)
    pool = _Pool(module.DRIVER, cp_min=1, cp_max=1, cp_noisy=False, cp_reconnect=True, cp_reactor=reactor,
                 **module.connection_arguments(url))
    return pool, module.SQL


@implementer(IAccountOwnership)
class ClusterService(service.Service):
    """This node's leases in the shared database, and its accounts in the fleet view."""

    def __init__(self, settings: ClusterSettings, url: StoreURL, contact_addr: str, table: str = "uacreg",
                 reactor=None, pools=None, monotonic: Callable[[], float] = time.monotonic):
        if reactor is None:
            from twisted.internet import reactor
        # The clock of the lease deadlines: a step of the wall clock (an NTP correction, an
        # operator's date) must not move them, or a step back would let this node register
        # past the lease's expiry in the database.
        self.monotonic = monotonic
        self.settings = settings
        self.url = url
        self.contact_addr = contact_addr
        self.table = table
        self.reactor = reactor
        self.partitions = settings.partitions
        self.leases = NodeLeases(settings.node_id, settings.partitions, settings.lease_period, settings.fence_margin)
        self.metrics = ClusterMetrics()
        self.listeners: list[OwnershipListener] = []
        self.registrant = None
        self.nodes: dict[str, float] = {}  # heartbeats (DB clock) seen at the last tick
        self.db_now: float | None = None
        self.holders: dict[int, str | None] = {}
        self._pools = pools  # (lease pool, view pool, sql) for tests; made at start otherwise
        self._lease_pool = self._view_pool = None
        self.sql: ClusterSQL | None = None
        self._ticking: defer.Deferred | None = None
        self._writing: defer.Deferred | None = None
        self._failing = False
        self._ticked_once = False  # a lease transaction of this run has committed
        # Partitions gained whose change is not delivered yet (the previous owners' contacts
        # being read): not owned until then, so that no load of the registrant's (a reload,
        # a live change) registers their accounts without the takeover.
        self._announcing: frozenset[int] = frozenset()
        self._dirty: set[str] = set()
        self._final: dict[str, AccountView] = {}  # views of accounts of lost partitions, to write
        self._written_now: frozenset[str] = frozenset()  # the accounts of the view write under way
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = reactor
        self._fence_loop = task.LoopingCall(self.check_fence)
        self._fence_loop.clock = reactor
        self._write_loop = task.LoopingCall(self.write_view)
        self._write_loop.clock = reactor

    # --- IAccountOwnership ------------------------------------------------------------
    def owns(self, l_uuid: str, now: float) -> bool:
        """The fence, before each send. ``now`` is the caller's wall clock and is not used:
        the deadline is compared with the monotonic clock, read here, at the send."""
        partition = partition_of(l_uuid, self.partitions)
        return partition not in self._announcing and self.leases.owns(partition, self.monotonic())

    def add_listener(self, listener: OwnershipListener) -> None:
        self.listeners.append(listener)

    def watch(self, registrant) -> None:
        """Write ``registrant``'s accounts into the fleet view as they change."""
        self.registrant = registrant
        registrant.add_observer(lambda event: self._dirty.add(event.l_uuid))

    def live_count(self) -> int:
        """Live nodes as the last lease transaction saw them (this one included)."""
        if self.db_now is None:
            return 1
        s = self.settings
        return len(live_nodes(self.nodes, self.db_now, s.lease_period, s.node_id))

    # --- lifecycle ----------------------------------------------------------------------
    def startService(self):
        """Deferred: fires once the tables are ready and the first tick is done (its gains
        delivered); a database not up yet is waited for, one warning said."""
        super().startService()
        if self._pools is not None:
            self._lease_pool, self._view_pool, self.sql = self._pools
        else:
            self._lease_pool, self.sql = open_pool(self.url, self.reactor)
            self._view_pool, _ = open_pool(self.url, self.reactor)
        return self._prepare()

    @defer.inlineCallbacks
    def _prepare(self):
        s = self.settings
        warned = False
        while self.running:
            try:
                yield self._lease_pool.runInteraction(database.prepare, self.sql, s.node_id, self.contact_addr,
                                                      s.partitions)
                break
            except StoreError as e:  # the fleet's tables disagree with [cluster]: not retried
                log.error("cluster node {node_id}: {error}", node_id=s.node_id, error=str(e))
                raise
            except Exception as e:  # noqa: BLE001 - the driver's errors: the database is not there (yet)
                if not warned:
                    warned = True
                    log.warn("cluster node {node_id}: cannot prepare the cluster tables in {url} ({error}); "
                             "trying again every {delay} s", node_id=s.node_id, url=self.url.masked,
                             error=" ".join(str(e).split()), delay=PREPARE_RETRY)
                yield task.deferLater(self.reactor, PREPARE_RETRY, lambda: None)
        if not self.running:
            return
        log.info("cluster node {node_id}: {partitions} partitions in {url}, lease {period} s",
                 node_id=s.node_id, partitions=s.partitions, url=self.url.masked, period=s.lease_period)
        yield self.tick()
        self._loop.start(s.renew_interval, now=False)
        self._fence_loop.start(FENCE_CHECK, now=False)
        self._write_loop.start(s.state_write_interval, now=False)

    @defer.inlineCallbacks
    def stopService(self):
        """Stopped after the registrant: give every partition up and release the leases, so
        the other nodes take over at once (they refresh or replace our bindings)."""
        super().stopService()
        if self.registrant is not None:  # its un-REGISTERs and last writes first, under renewed leases
            yield self.registrant.when_stopped()
        for loop in (self._loop, self._fence_loop, self._write_loop):
            if loop.running:
                loop.stop()
        if self._ticking is not None:
            yield self._ticking
        self._deliver(self.leases.give_up(self.monotonic()))
        yield self.write_view()
        try:
            yield self._lease_pool.runInteraction(database.release_all, self.sql, self.settings.node_id,
                                                  self.settings.lease_period)
            log.info("cluster node {node_id}: leases released", node_id=self.settings.node_id)
        except Exception as e:  # noqa: BLE001 - the leases then expire by themselves
            log.warn("cluster node {node_id}: releasing the leases failed ({error}); they expire in {period} s",
                     node_id=self.settings.node_id, error=str(e), period=self.settings.lease_period)
        for pool in (self._lease_pool, self._view_pool):
            if pool is not None and getattr(pool, "running", False):
                pool.close()

    def now(self) -> float:
        return self.reactor.seconds()

    # --- leases ----------------------------------------------------------------------------
    def tick(self) -> defer.Deferred:
        """One lease transaction (not while the last one is still out)."""
        if self._ticking is not None:
            return self._ticking
        started = self.monotonic()
        s = self.settings
        d = self._lease_pool.runInteraction(database.tick, self.sql, s.node_id, self.contact_addr, s.lease_period,
                                            self.leases.held(), self.releasable())
        d.addCallbacks(self._ticked, self._tick_failed, callbackArgs=(started,))
        d.addBoth(self._tick_done)
        self._ticking = d
        return d

    def _tick_done(self, result):
        self._ticking = None
        return None

    def _ticked(self, result: TickResult, started: float) -> defer.Deferred | None:
        now = self.monotonic()
        self.metrics.renewed(now - started)
        if self._failing:
            self._failing = False
            log.info("cluster node {node_id}: the database answers again", node_id=self.settings.node_id)
        self.nodes, self.db_now, self.holders = result.nodes, result.db_now, result.leases
        change = self.leases.committed(result.planned, started, now)
        first, self._ticked_once = not self._ticked_once, True
        self.metrics.takeovers += len(result.planned.taken_from.keys() & change.gained)
        if change.gained:
            self._announcing |= change.gained
            return self._with_contacts(change, result.planned.taken_from, result.held_before if first else None,
                                       result.contact_addrs)
        self._deliver(change)
        return None

    def _tick_failed(self, failure: Failure) -> None:
        if not self._failing:
            self._failing = True
            log.warn("cluster node {node_id}: lease renewal failed ({error}); the partitions stop being "
                     "registered here {margin} s before their leases expire unless a renewal works",
                     node_id=self.settings.node_id, error=str(failure.value), margin=self.settings.fence_margin)

    def check_fence(self) -> None:
        change = self.leases.check(self.monotonic())
        if change is None:
            return
        if change.lost:
            self.metrics.fenced += 1
            log.warn("cluster node {node_id}: fenced: no lease renewal in time; {count} partitions no longer "
                     "registered here", node_id=self.settings.node_id, count=len(change.lost))
        self._deliver(change)

    @defer.inlineCallbacks
    def _with_contacts(self, change: OwnershipChange, taken_from, held_before: frozenset[int] | None,
                       addresses: tuple[str, ...]):
        """Tell the registrant the partitions gained, with the Contacts the previous owners
        registered for their accounts and the other nodes' contact addresses: the takeover
        REGISTER removes the account's Contact as any of them registered it, whether or not
        the fleet view shows it (a REGISTER whose 2xx its sender never saw, a view not written).

        ``held_before`` (this run's first tick only): the gained partitions whose lease had a
        holder. Those, and those whose accounts the fleet view shows another node registered,
        are taken over; the others are fresh, registered as at start-up. Later gains are
        all taken over (a released partition's previous owner left its bindings).
        ``addresses``: the other nodes' contact addresses, read by the lease transaction that
        gained the partitions (so known even when the fleet view cannot be read)."""
        contacts: dict[str, str] = {}
        fresh: frozenset[int] = frozenset()
        gained = change.gained
        try:  # released partitions too: their previous owner's bindings stay until refreshed or removed
            every = yield self._view_pool.runInteraction(database.bound_contacts, self.settings.node_id)
            contacts = {u: c for u, c in every.items() if partition_of(u, self.partitions) in gained}
            if held_before is not None:
                fresh = gained - held_before - {partition_of(u, self.partitions) for u in contacts}
        except Exception as e:  # noqa: BLE001 - registered anyway, by the tick's addresses only
            log.warn("cluster node {node_id}: reading the previous owners' contacts failed ({error}); "
                     "removing the Contacts of the other nodes' addresses only", node_id=self.settings.node_id,
                     error=str(e))
        self._announcing -= gained
        self._deliver(OwnershipChange(gained, change.lost, change.now, contacts, addresses, fresh))
        origins: dict[str, int] = {}
        for partition in change.gained:
            origin = taken_from.get(partition)
            if origin is not None:
                origins[origin] = origins.get(origin, 0) + 1
        if origins:
            log.info("cluster node {node_id}: took {count} partitions ({origins}, expired)",
                     node_id=self.settings.node_id, count=len(change.gained),
                     origins=", ".join(f"{n} from {node}" for node, n in sorted(origins.items())))

    def _deliver(self, change: OwnershipChange) -> None:
        if not (change.gained or change.lost):
            return
        if change.lost:
            self._keep_final_views(change.lost)
        log.info("cluster node {node_id}: {gained} partitions gained, {lost} lost; {held} held",
                 node_id=self.settings.node_id, gained=len(change.gained), lost=len(change.lost),
                 held=len(self.leases.held()))
        for listener in tuple(self.listeners):
            try:
                listener(change)
            except Exception:  # noqa: BLE001 - one listener must not keep the others uninformed
                log.failure("cluster ownership listener failed")

    # --- fleet view --------------------------------------------------------------------------
    def _view(self, record) -> AccountView:
        return AccountView(record.l_uuid, self.settings.node_id,
                           protocol.contact_uri(record, self.registrant.settings.reg_contact_addr), record.flags,
                           record.last_failure or "", record.due_at)

    def _keep_final_views(self, lost: frozenset[int]) -> None:
        """The last state of the changed accounts of ``lost`` partitions, taken before the
        registrant parks them: written before those partitions are released, so that the
        next owner reads the Contact to remove."""
        if self.registrant is None:
            return
        records = self.registrant.records
        for l_uuid in [u for u in self._dirty if partition_of(u, self.partitions) in lost]:
            record = records.get(l_uuid)
            if record is not None:
                self._final[l_uuid] = self._view(record)
            self._dirty.discard(l_uuid)

    def releasable(self) -> frozenset[int]:
        """Partitions given up here that may be released now: none of their accounts has a
        REGISTER out, a Call-ID or a fleet-view row not written yet."""
        releasing = self.leases.releasing()
        if not releasing or self.registrant is None:
            return releasing
        busy = self.registrant.busy_accounts()
        if busy is None:
            return frozenset()
        waiting = {partition_of(u, self.partitions) for u in (*busy, *self._final, *self._written_now)}
        return releasing - waiting

    def write_view(self) -> defer.Deferred:
        """The accounts that changed since the last write, in one transaction (one at a time;
        a failed batch is written with the next)."""
        if (self._writing is not None or not (self._dirty or self._final) or self.registrant is None
                or self._view_pool is None):
            return defer.succeed(None)
        dirty, self._dirty = self._dirty, set()
        final, self._final = self._final, {}
        views = list(final.values())
        records = self.registrant.records
        for l_uuid in dirty:
            record = records.get(l_uuid)
            if record is not None and l_uuid not in final:
                views.append(self._view(record))
        self._written_now = frozenset(view.l_uuid for view in views)
        d = self._view_pool.runInteraction(database.write_accounts, self.sql, views)

        def failed(failure):
            self._dirty |= dirty
            # Accounts parked meanwhile keep the view taken now: their partitions wait for it.
            self._final = {**final, **{v.l_uuid: v for v in views if v.l_uuid not in records}, **self._final}
            log.debug("fleet view write failed: {error}", error=str(failure.value))

        def done(_):
            self._writing = None
            self._written_now = frozenset()

        d.addErrback(failed)
        d.addBoth(done)
        self._writing = d
        return d

    def fleet(self) -> defer.Deferred:
        """Deferred[list[dict]]: every account of uacreg with its owner (uac.reg_dump cluster)."""
        return self._view_pool.runInteraction(database.fleet, self.sql, self.table)

    @defer.inlineCallbacks
    def status(self):
        """cluster.status: this node, its partitions, the live nodes and their lease counts."""
        db_now, nodes, held = yield self._view_pool.runInteraction(database.status_rows, self.sql)
        s = self.settings
        live = live_nodes(nodes, db_now, s.lease_period, s.node_id)
        now = self.monotonic()
        return {
            "node_id": s.node_id,
            "partitions": s.partitions,
            "partitions_held": len(self.leases.held()),
            "lease_deadline_in": max(0.0, self.leases.deadline - now) if self.leases.held() else 0.0,
            "nodes": [{"node_id": node, "partitions": held.get(node, 0),
                       "heartbeat_age": round(db_now - nodes[node], 3) if node in nodes else None,
                       "live": node in live}
                      for node in sorted(set(nodes) | {s.node_id})],
        }
