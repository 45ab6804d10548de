"""Keeps every uacreg account registered: scheduling, pacing, replies, operations.

One LoopingCall ticks a few times a second; accounts wait in a heap ordered by
their due time and are sent at most ``reg_send_rate`` per second, so a table of
50,000 accounts starts without a burst. Each REGISTER runs through the
Authenticator (one answer per challenge round) with the account's credentials.
What an account does on each event is txuac.registrant.account's to say: this
service carries the effects out.
"""

from __future__ import annotations

import heapq
from collections import deque
import random
from typing import AbstractSet, Any, Callable, ClassVar, NamedTuple, Sequence, cast

from twisted.application import service
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.logger import Logger

from txuac.auth import Authenticator, ChallengeRounds, challenge_origin
from txuac.credentials import FixedCredentials
from txuac.errors import (
    AuthenticationError,
    ResolutionError,
    SIPParseError,
    StoreError,
    TransactionTimeout,
    TransportError,
    UnknownFilterAttribute,
)
from txuac.inline import inline_callbacks
from txuac.registrant import protocol
from txuac.registrant.account import AccountMachine, Arm, Effect, Emit, Persist, Send
from txuac.registrant.budget import DestinationBudget
from txuac.registrant.failures import FailureSummary
from txuac.registrant.health import FlowTracker, OptionsPinger
from txuac.registrant.ownership import AllAccounts, IAccountOwnership, OwnershipChange, partition_of
from txuac.registrant.probe import RegistrarProber
from txuac.registrant.record import (
    Flag,
    InvalidRecord,
    RegistrationRecord,
    State,
    record_from_row,
    source_address,
)
from txuac.registrant.retry import RetryPolicy, classify
from txuac.registrant.settings import RegistrantSettings
from txuac.registrant.store import AccountState, IChangeFeed
from txuac.registrant.store.writer import AccountStateWriter
from txuac.sip.digest import Credentials, NonceCounter
from txuac.sip.uri import SipURI, parse_uri
from txuac.sip.address import Address, ResponseOrigin, bare_host, is_ip_address

log = Logger(namespace=__name__)  # named: a compiled module has no frame to infer it from

_UNSET = object()
STOP_FLUSH_TIMEOUT = 5.0  # seconds a clean stop waits for the last account states to be written
GAIN_CHUNK = 1000  # accounts of gained partitions taken per reactor turn (about 30 ms of work)
RESERVE_TIMEOUT = 5.0  # seconds gained accounts wait for their CSeq marks to be written


def _registrar_challenge(origin: ResponseOrigin | None) -> str | None:
    """Answer a challenge only from the registrar or auth_proxy address the REGISTER went to."""
    return challenge_origin(origin, "our registrar")


def _definition(record: RegistrationRecord) -> tuple:
    """What a reload compares to tell a changed account: the row as loaded (not reg_delay, a
    start-up matter, nor the state kept in our table). Computed when needed: every field
    here is fixed once loaded (table_disabled, not flags), so no copy is kept per account."""
    return (record.l_username, record.l_domain, record.r_username, record.r_domain, record.realm,
            record.auth_username, record.auth_password, record.auth_ha1, record.auth_proxy, record.table_expires,
            record.contact_addr, record.socket, record.contact_user, record.user_agent, record.extra_headers,
            record.from_username, record.outbound, record.reg_id, record.options_ping, record.table_disabled)


def _binding_moves(old: RegistrationRecord, new: RegistrationRecord, default_contact_addr: str) -> bool:
    """Whether ``new`` no longer keeps ``old``'s binding alive: another Contact, AOR or
    registrar, or an account that stops registering (disabled, expires 0)."""
    if new.has(Flag.DISABLED) or new.table_expires == 0:
        return True
    return (protocol.contact_uri(old, default_contact_addr) != protocol.contact_uri(new, default_contact_addr)
            or (old.r_username, old.r_domain, old.auth_proxy, old.socket)
            != (new.r_username, new.r_domain, new.auth_proxy, new.socket))


class RegistrationEvent(NamedTuple):
    """A state change of one account, for observers (alerts, metrics, logs).

    A NamedTuple rather than a frozen dataclass: one is made per state change, two per
    REGISTER cycle, and a frozen dataclass costs several times more to build.
    """

    l_uuid: str
    state: State
    previous: State
    reason: str
    status: int | None
    at: float
    # Seconds from the first REGISTER of the cycle to the answer that ended it (None
    # when the change did not end a REGISTER cycle: enable, disable, a new cycle).
    latency: float | None = None
    # A failure that needs someone's attention: forbidden or fatal (retried only on its
    # long interval), or an account disabled by a failure (reg_retry_interval 0).
    alert: bool = False


Observer = Callable[[RegistrationEvent], None]


class RegistrantService(service.Service):
    """The registrations of every account of a store, on a SIP stack."""

    TICK: ClassVar[float] = 0.05  # seconds between scheduler ticks

    def __init__(self, settings: RegistrantSettings, stack, store, reactor=None, rng: random.Random | None = None,
                 ownership: IAccountOwnership | None = None, changes: IChangeFeed | None = None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # compiled, an import binds no local
            reactor = default_reactor
        self.settings = settings
        self.stack = stack
        self.store = store
        self.changes = changes  # live changes to the store's table, when followed (reg_db_watch)
        self.reactor = reactor
        self.rng = rng or random.Random()
        self.retry = RetryPolicy(settings.reg_retry_interval, settings.reg_retry_max_interval,
                                 settings.reg_forbidden_retry_interval, settings.reg_fatal_retry_interval,
                                 settings.reg_retry_jitter)
        # Which accounts are this process's to register (a cluster's leases; all of them alone).
        # An IAccountOwnership (zope interfaces carry no method types).
        self.ownership: Any = ownership if ownership is not None else AllAccounts()
        self.machine = AccountMachine(self.retry, self.rng, settings.reg_contact_addr, settings.reg_timer_interval,
                                      settings.reg_keep_callid, settings.user_agent, self.ownership)
        # Partitions gained whose accounts are being read, each with the change that gained it.
        self._gaining: dict[int, OwnershipChange] = {}
        self._store_open = False  # gains told before the store opened are read once it is
        self._stopping = False
        self._stopped: list[defer.Deferred] = []  # when_stopped()'s, fired at the end of a stop
        self._default_source = source_address(settings.default_socket or "")
        self.records: dict[str, RegistrationRecord] = {}
        self.active = settings.reg_active
        self.observers: list[Observer] = []
        self._due: list[tuple[float, int, str]] = []
        self._sequence = 0
        self._budget = 0.0
        self._last_tick: float | None = None
        self._last_reload: float | None = None
        self._in_flight: dict[str, defer.Deferred] = {}
        # Records a reload replaced or removed that still finish a REGISTER or unREGISTER.
        self._handover: dict[str, RegistrationRecord] = {}
        self.states = AccountStateWriter(store, reactor)
        self._without_outbound: set[str] = set()  # outbound accounts whose registrar ignored it (logged once)
        self.destinations = DestinationBudget(settings.reg_dest_max_in_flight, settings.reg_dest_rate)
        # Due accounts whose destination is over its budget, in order: (due_at, l_uuid).
        self._parked: dict[str, deque[tuple[float, str]]] = {}
        self._next_hops: dict[str, SipURI | Address | None] = {}
        self._nonces = NonceCounter(limit=4096)  # one nc sequence per nonce across all accounts
        # Temporary failures: one info line per registrar per round.
        self.failures = FailureSummary(reactor, window=settings.failure_summary_interval)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor
        # Re-registration at once when a TCP/TLS connection drops, or a pinged registrar is back.
        self.flows = FlowTracker(self, stack)
        self.pinger: OptionsPinger | None = None
        if settings.reg_options_ping_interval > 0:
            self.pinger = OptionsPinger(self, stack, reactor, settings.reg_options_ping_interval,
                                        settings.reg_ping_up_count, settings.reg_ping_down_count,
                                        from_host=settings.reg_contact_addr or "127.0.0.1",
                                        user_agent=settings.user_agent)
        # Re-registration as soon as a failing registrar answers again.
        self.prober: RegistrarProber | None = None
        if settings.reg_probe:
            self.prober = RegistrarProber(self, stack, settings.reg_probe_interval, settings.reg_probe_max_interval,
                                          from_host=settings.reg_contact_addr or "127.0.0.1",
                                          user_agent=settings.user_agent)

    # --- lifecycle ---------------------------------------------------------------
    @inline_callbacks
    def startService(self):
        super().startService()
        self._store_open = False
        # First: partitions gained while the store opens are taken over, not loaded by the
        # reload below as at a start (their other nodes' Contacts would stay).
        self.ownership.add_listener(self._ownership_changed)
        yield self.store.open()
        self._store_open = True
        for change in {id(change): change for change in self._gaining.values()}.values():
            self._load_gained(change)
        if self.changes is not None:  # before the first load: no change falls between the two
            yield self.changes.start(self.follow_changes)
        yield self.reload(force=True)
        self._last_reload = None  # as in Kamailio, the first uac.reg_reload is always allowed
        self._loop.start(self.TICK, now=True)
        self.flows.start()
        if self.pinger is not None:
            self.pinger.start()

    def stopService(self):
        super().stopService()
        self._stopping = True
        return self._stop().addBoth(self._stop_done)

    def _stop_done(self, result):
        self._stopping = False
        stopped, self._stopped = self._stopped, []
        for waiting in stopped:
            waiting.callback(None)
        return result

    @inline_callbacks
    def _stop(self):
        self.flows.stop()
        if self.pinger is not None:
            self.pinger.stop()
        if self.prober is not None:
            self.prober.stop()
        if self._loop.running:
            self._loop.stop()
        if self.changes is not None:  # no batch is applied while stopping
            yield self.changes.stop()
        yield self._wait_in_flight()
        self.failures.flush()
        if self.settings.reg_unregister_on_stop:
            online = [r for r in self.records.values() if r.registered(self.now())]
            yield defer.DeferredList([self.send_unregister(r.l_uuid) for r in online], consumeErrors=True)
            yield self._wait_in_flight()
        yield self.states.flush(STOP_FLUSH_TIMEOUT)
        self.states.stop()
        yield self.store.close()

    def when_stopped(self) -> defer.Deferred:
        """Fires once a stop under way is over (at once when not stopping): the cluster
        releases its leases only after the un-REGISTERs and the last state writes."""
        if not self._stopping:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._stopped.append(d)
        return d

    def now(self) -> float:
        return self.reactor.seconds()

    def _wait_in_flight(self) -> defer.Deferred:
        return defer.DeferredList(list(self._in_flight.values()), consumeErrors=True)

    # --- loading ---------------------------------------------------------------
    def _add_row(self, row: dict, now: float) -> RegistrationRecord | None:
        """The account of a store row, or None (logged) when Kamailio would skip the row.

        Bad values in the columns of our own table are logged (one line naming the
        account) and left at their defaults: they never cost the account.
        """
        problems: list[str] = []
        try:
            record = record_from_row(row, now, self.settings.reg_random_delay, self.rng, problems)
        except InvalidRecord as e:
            log.warn("uacreg row {l_uuid!r} skipped: {reason}", l_uuid=str(row.get("l_uuid") or ""), reason=e)
            return None
        if problems:
            log.warn("account {l_uuid}: {problems} (the account is loaded without them)", l_uuid=record.l_uuid,
                     problems="; ".join(problems))
        return record

    @inline_callbacks
    def reload(self, force: bool = False):
        """Kamailio's uac.reg_reload: the whole table again; 1, or -1 when refused by reload_delta.

        Unlike Kamailio, which starts every account from scratch, an account whose row is
        unchanged keeps its state (online, expiry, due time, Call-ID, CSeq, a REGISTER in
        flight); a changed one is re-registered at once (its old binding unregistered first
        when it moves: another Contact, AOR or registrar); a removed one is unregistered
        (best effort) and forgotten; a new one is scheduled as at start.
        """
        now = self.now()
        if not force and self._last_reload is not None and now - self._last_reload < self.settings.reload_delta:
            return -1
        self._last_reload = now
        rows, others = yield self._owned_rows(now)
        fresh: dict[str, RegistrationRecord] = {}
        gaining: set[str] = set()  # accounts of partitions gained whose own read is under way: theirs
        owns, partitions = self.ownership.owns, self.ownership.partitions
        for row in rows:
            l_uuid = str(row.get("l_uuid") or "")
            if not owns(l_uuid, now):
                others.add(l_uuid)
                continue
            if self._gaining and partition_of(l_uuid, partitions) in self._gaining:
                gaining.add(l_uuid)
                continue
            record = self._add_row(row, now)
            if record is not None:
                fresh[record.l_uuid] = record
        counts = {"added": 0, "changed": 0, "unchanged": 0, "removed": 0}
        for l_uuid in [l_uuid for l_uuid in self.records if l_uuid not in fresh and l_uuid not in gaining]:
            if l_uuid in others:
                self._park(l_uuid)
                continue
            self._retire(l_uuid, now)
            counts["removed"] += 1
        for record in fresh.values():
            counts[self._reconcile(record, now)] += 1
        log.info("loaded {count} registration accounts from {url}: {added} new, {changed} changed, "
                 "{unchanged} unchanged, {removed} removed", count=len(self.records),
                 url=getattr(self.store, "url", "the store"), **counts)
        return 1

    @inline_callbacks
    def _owned_rows(self, now: float):
        """The rows of the accounts this process registers at ``now``, and the l_uuids of the
        table's other accounts. Alone every row is ours: one read. Otherwise the l_uuids come
        first and only our rows are loaded, so that a node of a fleet never holds the table."""
        if isinstance(self.ownership, AllAccounts):
            rows = yield self.store.load_all()
            return rows, set()
        keys = yield self.store.load_keys()
        owns = self.ownership.owns
        mine = [l_uuid for l_uuid in keys if owns(l_uuid, now)]
        others = set(keys).difference(mine)
        rows = (yield self.store.load_many(mine)) if mine else []
        return rows, others

    @inline_callbacks
    def refresh(self, l_uuid: str):
        """Kamailio's uac.reg_refresh: reload one row (as reload() does for each row); 1, or -1
        when the row is not in the store or is invalid (the account is then left as it is)."""
        try:
            row = yield self.store.load_one(l_uuid)
        except StoreError as e:
            log.warn("refresh of {l_uuid} failed: {error}", l_uuid=l_uuid, error=str(e))
            return -1
        if row is None:
            return -1
        return self._take_row(row, self.now())

    def _take_row(self, row: dict, now: float) -> int:
        """One row read again (refresh, a live change): 1, or -1 when it is invalid (the
        account is then left as it is)."""
        l_uuid = str(row.get("l_uuid") or "")
        if not self.ownership.owns(l_uuid, now):
            self._park(l_uuid)
            return 1  # another node's account: its owner registers it
        record = self._add_row(row, now)
        if record is None:
            return -1
        self._reconcile(record, now)
        return 1

    @inline_callbacks
    def follow_changes(self, l_uuids: AbstractSet[str] | None):
        """A batch of the store's change feed: these accounts read again, each as refresh()
        takes it; one no longer in the table is unregistered and forgotten as by a reload.
        None (changes may have been missed): a forced reload. A StoreError fails the batch
        (the feed hands it on again)."""
        if l_uuids is None:
            yield self.reload(force=True)
            return
        rows = yield self.store.load_many(l_uuids)
        now = self.now()
        found = set()
        for row in rows:
            found.add(row["l_uuid"])
            self._take_row(row, now)
        gone = [l_uuid for l_uuid in l_uuids if l_uuid not in found and l_uuid in self.records]
        for l_uuid in gone:
            self._retire(l_uuid, now)
        log.info("live changes: {count} accounts read again, {gone} removed", count=len(found), gone=len(gone))

    def _reconcile(self, new: RegistrationRecord, now: float) -> str:
        """Take the account ``new`` read from the store: "added", "changed" or "unchanged"."""
        l_uuid = new.l_uuid
        old = self.records.get(l_uuid)
        definition = _definition(new)
        if old is not None and _definition(old) == definition:
            self._revive(old, now)
            return "unchanged"
        self.records[l_uuid] = new
        if old is not None:  # what our table holds is the old record's business until now
            new.saved_call_id, new.saved_cseq = old.saved_call_id, old.saved_cseq
            new.saved_instance_id = old.saved_instance_id
        if l_uuid in self._handover:
            # An older record of the account still finishes a REGISTER: the new one waits
            # and takes over when that ends.
            self.machine.hold(new)
        elif old is None:
            self._schedule(new, new.due_at)
        else:
            self._replace(old, new, now)
        return "added" if old is None else "changed"

    def _retire(self, l_uuid: str, now: float) -> None:
        """A reload no longer finds the account: unregister it (best effort), forget it."""
        old = self.records.pop(l_uuid)
        if l_uuid not in self._handover:
            self._replace(old, None, now)

    def _revive(self, record: RegistrationRecord, now: float) -> None:
        """An unchanged row brings back an account left dormant or disabled at run time."""
        self._carry_out(self.machine.revive(record, now))

    def _replace(self, old: RegistrationRecord, new: RegistrationRecord | None, now: float) -> None:
        """Hand the account over from ``old`` to ``new`` (None: the account was removed).

        ``old`` first finishes a REGISTER in flight (and learns its reply), then unregisters
        its binding when the binding moves or the account goes; ``new`` then takes the
        Call-ID and CSeq (and the binding when it stays) and is registered at once.
        """
        l_uuid = old.l_uuid
        in_flight = self._in_flight.get(l_uuid)
        if in_flight is not None:
            self._handover[l_uuid] = old
            if new is not None:
                self.machine.hold(new)
            in_flight.addBoth(self._handed_back, old)
            return
        if old.has(Flag.ONLINE) and (new is None or _binding_moves(old, new, self.settings.reg_contact_addr)):
            self._handover[l_uuid] = old
            if new is not None:
                self.machine.hold(new)
            log.info("registration {l_uuid}: unregistering the old binding ({why})", l_uuid=l_uuid,
                     why="account removed" if new is None else "account changed")
            self._sent(self.machine.unregister(old, now)).addBoth(self._handed_back, old)
            return
        self._handover.pop(l_uuid, None)
        if new is None:
            self.flows.forget(l_uuid)
            return
        binding_stays = old.registered(now) and not _binding_moves(old, new, self.settings.reg_contact_addr)
        self._carry_out(self.machine.take_over(old, new, binding_stays, now))

    def _handed_back(self, result, old: RegistrationRecord):
        """``old`` finished a REGISTER cycle: go on with the hand-over (to the account's
        current record, which a later reload may have replaced or removed)."""
        l_uuid = old.l_uuid
        if self._in_flight.get(l_uuid) is not None:  # a 423 answered at once: wait for that too
            self._in_flight[l_uuid].addBoth(self._handed_back, old)
            return result
        if self._handover.get(l_uuid) is old:
            self._replace(old, self.records.get(l_uuid), self.now())
        return result

    # --- cluster ownership -----------------------------------------------------
    def _ownership_changed(self, change: OwnershipChange) -> None:
        """Park the accounts of lost partitions (no un-REGISTER: the taker refreshes or
        removes their bindings); read those of gained ones again and register them at once."""
        if not self.running:
            return
        if change.lost:
            partitions = self.ownership.partitions
            lost = change.lost
            for l_uuid in [l_uuid for l_uuid in self.records if partition_of(l_uuid, partitions) in lost]:
                self._park(l_uuid)
            for partition in lost:
                self._gaining.pop(partition, None)
        if change.gained:
            for partition in change.gained:
                self._gaining[partition] = change
            if self._store_open:
                self._load_gained(change)

    def busy_accounts(self) -> frozenset[str] | None:
        """Accounts whose REGISTER is still out or whose Call-ID and CSeq are not written yet
        (None: a state write is under way, every account may be in it). A cluster releases a
        partition only once none of its accounts is busy, so the next owner reads what we used."""
        if self.states.writing:
            return None
        return frozenset(self._in_flight) | frozenset(self.states.pending)

    def _park(self, l_uuid: str) -> None:
        """Stop registering an account that is not ours any more: its timers go with its
        record; a reply to a REGISTER still in flight finds no account and is ignored."""
        self.records.pop(l_uuid, None)
        self._handover.pop(l_uuid, None)
        self.flows.forget(l_uuid)

    def _still_gaining(self, change: OwnershipChange) -> frozenset[int]:
        """The partitions ``change`` gained that are still ours and not read yet."""
        return frozenset(p for p, by in self._gaining.items() if by is change)

    def _load_gained(self, change: OwnershipChange) -> defer.Deferred:
        """The l_uuids first, then the rows of the gained partitions only, a chunk at a time:
        a node taking a share of a large table never holds the whole table."""
        d = self.store.load_keys()
        d.addCallback(self._gained, change)
        d.addErrback(self._gained_failed, change)
        return d

    def _gained(self, keys: Sequence[str], change: OwnershipChange) -> None:
        """Register the accounts of the partitions ``change`` gained that are still ours, at
        once (paced by the send limits), going on from the Call-ID and CSeq the store holds."""
        wanted = self._still_gaining(change)
        count_of = self.ownership.partitions
        mine = sorted(l_uuid for l_uuid in keys if partition_of(l_uuid, count_of) in wanted)
        self._read_gained(mine, 0, len(wanted), change, 0)

    def _read_gained(self, l_uuids: Sequence[str], start: int, partitions: int, change: OwnershipChange,
                     count: int) -> None:
        """The rows of ``l_uuids[start:start + GAIN_CHUNK]`` whose partitions are still being
        gained (one lost meanwhile is not read further), then taken."""
        wanted, count_of = self._still_gaining(change), self.ownership.partitions
        chunk = [l_uuid for l_uuid in l_uuids[start:start + GAIN_CHUNK]
                 if l_uuid not in self.records and partition_of(l_uuid, count_of) in wanted]
        d = self.store.load_many(chunk) if chunk else defer.succeed([])
        d.addCallback(self._take_gained, l_uuids, start, partitions, change, count)
        d.addErrback(self._gained_failed, change)

    def _take_gained(self, rows: Sequence[dict], l_uuids: Sequence[str], start: int, partitions: int,
                     change: OwnershipChange, count: int) -> None:
        """Gained accounts, GAIN_CHUNK per reactor turn: a takeover of tens of thousands never
        holds the reactor past the lease renewals that keep them ours."""
        now = self.now()
        owns, bound_contacts, others = self.ownership.owns, change.bound_contacts, change.other_contact_addrs
        fresh, count_of = change.fresh, self.ownership.partitions
        reserved: list[RegistrationRecord] = []
        marks: list[AccountState] = []
        save: Any = getattr(self.store, "save_states", None)  # an embedder's store may have none
        for row in rows:
            l_uuid = str(row.get("l_uuid") or "")
            if l_uuid in self.records or not owns(l_uuid, now):
                continue
            record = self._add_row(row, now)
            if record is None:
                continue
            count += 1
            if fresh and partition_of(l_uuid, count_of) in fresh:  # nobody else's: as at start-up
                self._reconcile(record, now)
                continue
            reservation = self.machine.gained(record, others, bound_contacts.get(l_uuid, ""))
            self.records[l_uuid] = record
            if reservation and save is not None:
                marks.extend(effect.state for effect in reservation if isinstance(effect, Persist))
                reserved.append(record)
            else:
                self._schedule(record, now)
        if marks:  # their first REGISTERs once the CSeq marks above them are written
            d = defer.maybeDeferred(save, marks).addTimeout(RESERVE_TIMEOUT, self.reactor)
            d.addErrback(self._reserve_failed, len(marks))
            d.addCallback(self._reserved, reserved)
        if start + GAIN_CHUNK < len(l_uuids) and self.running:
            self.reactor.callLater(0, self._read_gained, l_uuids, start + GAIN_CHUNK, partitions, change, count)
            return
        for partition in self._still_gaining(change):
            del self._gaining[partition]
        log.info("registering {count} accounts of {partitions} partitions taken", partitions=partitions,
                 count=count)

    @staticmethod
    def _reserve_failed(failure: Failure, count: int) -> None:
        log.warn("writing the CSeq marks of {count} accounts taken failed ({error}); registering them anyway",
                 count=count, error=failure.getErrorMessage())

    def _reserved(self, _, records: list[RegistrationRecord]) -> None:
        """The CSeq marks of gained accounts are written (or the store failed: they are
        registered anyway): schedule those still ours."""
        if not self.running:
            return
        now = self.now()
        for record in records:
            if self.records.get(record.l_uuid) is record:
                self._schedule(record, now)

    def _gained_failed(self, failure: Failure, change: OwnershipChange) -> None:
        """The store did not answer: try again shortly for the partitions still ours (the
        accounts taken already are skipped)."""
        failure.trap(StoreError)
        log.warn("reading the accounts of {count} partitions taken failed ({error}); retrying in 1 s",
                 count=len(self._still_gaining(change)), error=str(failure.value))
        self.reactor.callLater(1.0, self._retry_gained, change)

    def _retry_gained(self, change: OwnershipChange) -> None:
        if self._still_gaining(change) and self.running:
            self._load_gained(change)

    # --- scheduling ------------------------------------------------------------
    def _schedule(self, record: RegistrationRecord, at: float) -> None:
        self._queue(self.machine.arm(record, at))

    def _queue(self, arm: Arm) -> None:
        self._sequence += 1
        heapq.heappush(self._due, (arm.at, self._sequence, arm.record.l_uuid))

    def _tick(self) -> None:
        now = self.now()
        elapsed = self.TICK if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        if self.prober is not None:
            self.prober.tick(now)
        rate = self.settings.reg_send_rate
        self._budget = min(self._budget + elapsed * rate, max(rate * self.TICK * 2, 1.0))
        if self._parked and not self._release_parked(now):
            return
        while self._due and self._due[0][0] <= now and self._budget >= 1:
            at, _, l_uuid = heapq.heappop(self._due)
            record = self.records.get(l_uuid)
            if record is None or record.due_at != at or not self._eligible(record):
                continue  # a stale entry, or an account that must not register now
            if len(self._in_flight) >= self.settings.reg_max_in_flight:
                # Sending faster than the registrar answers only fills socket buffers: wait.
                heapq.heappush(self._due, (at, _, l_uuid))
                break
            destination = self._destination(record)
            parked = self._parked.get(destination)
            if parked is not None or self.destinations.wait(destination, now, self.TICK) > 0:
                # This provider has had enough for now: the account waits in its queue
                # (in order, popped from the heap once) while the others go on.
                if parked is None:
                    parked = self._parked[destination] = deque()
                parked.append((at, l_uuid))
                continue
            self._budget -= 1
            self._carry_out(self.machine.due(record, now))

    def _release_parked(self, now: float) -> bool:
        """Send what the per-destination budgets allow from the parked queues, oldest
        first; False when the service-wide limits are used up."""
        for destination in list(self._parked):
            parked = self._parked[destination]
            while parked:
                if self._budget < 1 or len(self._in_flight) >= self.settings.reg_max_in_flight:
                    return False
                if self.destinations.wait(destination, now, self.TICK) > 0:
                    break
                at, l_uuid = parked.popleft()
                record = self.records.get(l_uuid)
                if record is None or record.due_at != at or not self._eligible(record):
                    continue
                self._budget -= 1
                self._carry_out(self.machine.due(record, now))
            if not parked:
                del self._parked[destination]
        return True

    def _eligible(self, record: RegistrationRecord) -> bool:
        return self.active and record.expires > 0 and not record.flags & (Flag.DISABLED | Flag.ONGOING)

    # --- carrying out the accounts' effects ---------------------------------------
    def _carry_out(self, effects: list[Effect]) -> defer.Deferred | None:
        """Do what the account machine asks, in order; the Deferred of a REGISTER it sent."""
        sent = None
        for effect in effects:
            kind = effect.__class__
            if kind is Arm:
                self._queue(effect)  # type: ignore[arg-type]
            elif kind is Emit:
                self._emit(effect)  # type: ignore[arg-type]
            elif kind is Persist:
                self.states.put(cast(Persist, effect).state)
            else:
                sent = self._start(effect)  # type: ignore[arg-type]
        return sent

    def _sent(self, effects: list[Effect]) -> defer.Deferred:
        """The Deferred of the REGISTER ``effects`` send (fired at once when none could be)."""
        d = self._carry_out(effects)
        return d if d is not None else defer.succeed(None)

    def _start(self, send: Send) -> defer.Deferred:
        """One REGISTER cycle: the Authenticator answers the challenges with the account's credentials."""
        record = send.record
        now = self.now()
        # Kamailio: auth_ha1, when set, wins over auth_password.
        credentials = Credentials(record.auth_username, password=None if record.auth_ha1 else record.auth_password,
                                  ha1=record.auth_ha1 or None, realm=record.realm or None)
        authenticator = Authenticator(self.stack, FixedCredentials(credentials), self.settings.auth_algorithms,
                                      nonces=self._nonces, log_retries=False)
        machine, call_id = self.machine, send.call_id
        rounds = authenticator.start(send.request, self._next_hop(record), source=self._source(record),
                                     check_origin=_registrar_challenge,
                                     on_retry=lambda _, cseq: machine.challenged(record, call_id, cseq),
                                     t2=self.settings.reg_timer_t2)
        d = rounds.deferred
        destination = self._destination(record)
        self.destinations.started(destination, now)
        if self.prober is not None:
            self.prober.sent(destination, record, now)
        d.addBoth(self._destination_done, destination)
        self._in_flight[record.l_uuid] = d
        d.addCallbacks(self._replied, self._failed, callbackArgs=(record, send.expires, send.too_brief, d, rounds),
                       errbackArgs=(record, d))
        return d

    def _destination_done(self, result, destination: str):
        self.destinations.ended(destination)
        if self.prober is not None:
            unanswered = isinstance(result, Failure) and result.check(TransactionTimeout, TransportError,
                                                                      ResolutionError) is not None
            self.prober.ended(destination, self.now(), not unanswered)
        return result

    def _destination(self, record: RegistrationRecord) -> str:
        """The host REGISTERs of ``record`` go to first, for the per-destination budget."""
        hop = self._next_hop(record)
        if isinstance(hop, Address):
            return f"{hop.host}:{hop.port}"
        if isinstance(hop, SipURI):
            return hop.host.lower()
        return record.r_domain.lower()

    def _next_hop(self, record: RegistrationRecord) -> SipURI | Address | None:
        """auth_proxy is the outbound proxy: where the REGISTER goes, never written into it.

        Parsed once per account; a numeric host with a port needs no RFC 3263 lookup
        (RFC 3263 4.2) and becomes an Address at once.
        """
        cached = self._next_hops.get(record.auth_proxy, _UNSET)
        if cached is not _UNSET:
            return cast("SipURI | Address | None", cached)
        try:
            uri = parse_uri(record.auth_proxy, "auth_proxy")
        except SIPParseError:
            uri = None  # Kamailio loads such rows too; the REGISTER then goes to r_domain
        target: SipURI | Address | None = uri if isinstance(uri, SipURI) else None
        if isinstance(target, SipURI) and target.port is not None and not target.maddr and is_ip_address(target.host):
            transport = target.transport or ("tls" if target.secure else "udp")
            target = Address(transport, bare_host(target.host), target.port)
        if len(self._next_hops) < 65536:
            self._next_hops[record.auth_proxy] = target
        return target

    def _source(self, record: RegistrationRecord) -> Address | None:
        """The local socket to send from: the row's ``socket``, else ``default_socket``."""
        return record.source or self._default_source

    def _learn(self, record: RegistrationRecord, outcome: protocol.Outcome) -> None:
        """Keep what a 2xx taught: Path, Service-Route, GRUUs, Flow-Timer (empty: forgotten)."""
        learned = self.machine.learn(record, outcome)
        if learned is None or not record.outbound or outcome.kind is not protocol.OutcomeKind.ONLINE:
            return
        if learned.outbound:
            self._without_outbound.discard(record.l_uuid)
        elif record.l_uuid not in self._without_outbound:
            # RFC 5626 4.2.1: no Require: outbound in the 2xx, no flow: a plain registration.
            self._without_outbound.add(record.l_uuid)
            log.info("registration {l_uuid}: the registrar does not support outbound (no Require: outbound "
                     "in its 200 OK); registered as a plain binding, without flow keep-alives", l_uuid=record.l_uuid)

    def _done(self, l_uuid: str, d: defer.Deferred) -> None:
        if self._in_flight.get(l_uuid) is d:
            del self._in_flight[l_uuid]

    def _current(self, record: RegistrationRecord) -> RegistrationRecord | None:
        """The account a late reply is for: a record a reload replaced or removed while its
        REGISTER was out learns it itself (the hand-over goes on after); otherwise the
        record under the same l_uuid, None when the account is gone (Kamailio ignores
        such replies)."""
        if self._handover.get(record.l_uuid) is record:
            return record
        return self.records.get(record.l_uuid)

    def _replied(self, response, record: RegistrationRecord, expires: int, too_brief: int,
                 d: defer.Deferred, rounds: ChallengeRounds) -> None:
        self._done(record.l_uuid, d)
        current = self._current(record)
        if current is None:
            return
        record = current
        outcome = protocol.interpret(record, response, expires)
        self._learn(record, outcome)
        origin = rounds.origin
        self.flows.learned(record.l_uuid, origin.source if origin is not None else None, record.flow_timer)
        self._carry_out(self.machine.replied(record, response, outcome, expires, too_brief, self.now()))

    def _failed(self, failure, record: RegistrationRecord, d: defer.Deferred) -> None:
        self._done(record.l_uuid, d)
        error = failure.check(AuthenticationError, TransactionTimeout, TransportError, ResolutionError)
        if error is None:
            log.failure("REGISTER of {l_uuid} failed unexpectedly", failure, l_uuid=record.l_uuid)
            reason = "internal error"
        elif error is AuthenticationError:
            reason = f"authentication failed: {failure.value}"
        elif error is TransactionTimeout:
            reason = "no answer (timeout)"
        else:
            reason = str(failure.value)
        current = self._current(record)
        if current is None:
            return
        record = current
        challenge = failure.value.response if error is AuthenticationError else None
        status = challenge.status if challenge is not None else None
        if self.prober is not None and (error is TransactionTimeout or error is TransportError):
            self.prober.failed(self._destination(record), self.now(), reason)
        self._carry_out(self.machine.failed(record, reason, status, self.now(), classify(status, error)))

    # --- events and counters -------------------------------------------------------
    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)

    def _emit(self, event: Emit) -> None:
        """Log an account's change of state and tell the observers."""
        record, state, previous, reason, status = event.record, event.state, event.previous, event.reason, event.status
        if event.alert:
            kind = event.kind
            retry_in = record.due_at - event.at if state is State.FAILED else None
            log.warn("registration {l_uuid}: {previous} -> {state} ({reason}); {kind} failure, "
                     + ("next attempt in {retry_in:.0f} s" if retry_in is not None else "not retried"),
                     l_uuid=record.l_uuid, previous=previous.value, state=state.value, reason=reason,
                     status=status, alert=True, kind=kind.value if kind is not None else None, retry_in=retry_in)
        elif state is State.REGISTERING or state is State.ONLINE:
            # Routine transitions at debug level, and only made when debug is logged: at
            # thousands per second the event alone costs a tenth of a REGISTER cycle.
            if self.settings.log_routine:
                log.debug("registration {l_uuid}: {previous} -> {state} ({reason})", l_uuid=record.l_uuid,
                          previous=previous.value, state=state.value, reason=reason, status=status)
        elif state is State.FAILED:
            # Retried later: an outage fails a registrar's accounts together, summarised per round.
            self.failures.add(self._destination(record), reason)
            log.debug("registration {l_uuid}: {previous} -> {state} ({reason})", l_uuid=record.l_uuid,
                      previous=previous.value, state=state.value, reason=reason, status=status)
        else:
            log.info("registration {l_uuid}: {previous} -> {state} ({reason})", l_uuid=record.l_uuid,
                     previous=previous.value, state=state.value, reason=reason, status=status)
        if not self.observers:
            return
        notice = RegistrationEvent(record.l_uuid, state, previous, reason, status, event.at, event.latency,
                                   event.alert)
        for observer in tuple(self.observers):
            try:
                observer(notice)
            except Exception:  # noqa: BLE001 - an observer must not break registrations
                log.failure("registration observer failed")

    def counters(self) -> dict[str, int]:
        """regtotal, regactive (online and not expired), regdisabled, derived from state, and ours."""
        now = self.now()
        states = [record.state(now) for record in self.records.values()]
        return {
            "regtotal": len(states),
            "regactive": sum(1 for r in self.records.values() if r.registered(now)),
            "regdisabled": states.count(State.DISABLED),
            "regongoing": states.count(State.REGISTERING),
            "regfailed": states.count(State.FAILED),
        }

    # --- operations (Kamailio's names and return codes) ----------------------------
    def lookup(self, l_uuid: str) -> str | None:
        """uac_reg_lookup: ``sip:l_username@l_domain`` of the account, or None (-1)."""
        record = self.records.get(l_uuid)
        return record.local_uri if record is not None else None

    def lookup_uri(self, uri: str) -> str | None:
        """uac_reg_lookup_uri: the l_uuid of the account whose l_username (and l_domain with
        reg_use_domain) the URI names, or None."""
        parsed = parse_uri(uri)
        if not isinstance(parsed, SipURI):
            return None
        for record in self.records.values():
            if record.l_username == parsed.user and (not self.settings.reg_use_domain
                                                     or record.l_domain == parsed.host):
                return record.l_uuid
        return None

    def status(self, l_uuid: str) -> int:
        """uac_reg_status: 1, -2, -3, -99, or -1 for an unknown l_uuid."""
        record = self.records.get(l_uuid)
        return record.status(self.now()) if record is not None else -1

    def find(self, attribute: str, value: str) -> RegistrationRecord | None:
        """The first account whose ``attribute`` (l_uuid, l_username, r_username,
        auth_username) equals ``value``; UnknownFilterAttribute for another attribute."""
        if attribute not in ("l_uuid", "l_username", "r_username", "auth_username"):
            raise UnknownFilterAttribute(f"unsupported filter attribute {attribute!r}")
        if attribute == "l_uuid":
            return self.records.get(value)
        return next((r for r in self.records.values() if getattr(r, attribute) == value), None)

    def request_to(self, user: str, mode: int = 0) -> dict | None:
        """uac_reg_request_to: what a routing script needs to send as the account.

        mode bit 1: match l_username instead of l_uuid (with reg_use_domain ``user`` is a
        URI whose user and host must match; SIPParseError when it is not one); bit 2: the
        HA1 as secret.
        """
        if mode & 1 and self.settings.reg_use_domain:
            l_uuid = self.lookup_uri(user)
            record = self.records.get(l_uuid) if l_uuid is not None else None
        else:
            record = self.find("l_username" if mode & 1 else "l_uuid", user)
        if record is None:
            return None
        return {"ruri": record.aor, "duri": record.auth_proxy, "realm": record.realm,
                "username": record.auth_username,
                "password": record.auth_ha1 if mode & 2 else record.auth_password, "ha1": bool(mode & 2)}

    def enable(self, attribute: str, value: str) -> int:
        return self._set_disabled(attribute, value, False)

    def disable(self, attribute: str, value: str) -> int:
        return self._set_disabled(attribute, value, True)

    def _set_disabled(self, attribute: str, value: str, disabled: bool) -> int:
        try:
            record = self.find(attribute, value)
        except UnknownFilterAttribute:
            return -3
        if record is None:
            return -2
        self._carry_out(self.machine.set_disabled(record, disabled, self.now()))
        return 1

    def set_active(self, active: bool) -> bool:
        """uac.reg_active: switch all registrations on or off; returns the old value."""
        old, self.active = self.active, bool(active)
        if self.active and not old:
            now = self.now()
            for record in self.records.values():
                # Entries that came due while inactive were dropped: due now; others keep their time.
                self._schedule(record, max(record.due_at, now))
        return old

    def add(self, row: dict) -> int:
        """uac.reg_add: 1, or 409 when the l_uuid exists, -1 for an invalid row."""
        try:
            record = record_from_row(row, self.now(), self.settings.reg_random_delay, self.rng)
        except InvalidRecord as e:
            log.warn("uac.reg_add of {l_uuid!r} refused: {reason}", l_uuid=str(row.get("l_uuid") or ""), reason=e)
            return -1
        if record.l_uuid in self.records:
            return 409
        if not self.ownership.owns(record.l_uuid, self.now()):
            log.info("uac.reg_add of {l_uuid}: another node owns the account; not registered here",
                     l_uuid=record.l_uuid)
            return 1
        self._reconcile(record, self.now())
        return 1

    def remove(self, l_uuid: str) -> int:
        """uac.reg_remove: forget the account (no un-REGISTER, as Kamailio); -1 when unknown.
        Its Call-ID stays in our table, for the account's return."""
        self.flows.forget(l_uuid)
        return 1 if self.records.pop(l_uuid, None) is not None else -1

    def add_to_table(self, row: dict) -> defer.Deferred:
        """uac.reg_add in a cluster: ``row`` written to the store (AccountExists when its
        l_uuid is there). The change feed brings it to the node that owns the account, this
        one included, as any INSERT; without a feed this node reads it at once."""
        l_uuid = str(row["l_uuid"])
        return self.store.insert_row(row).addCallback(self._written, l_uuid)

    def remove_from_table(self, l_uuid: str) -> defer.Deferred:
        """uac.reg_remove in a cluster: the row deleted from the store (False when there was
        none); its owner, told by the change feed, unregisters and forgets the account."""
        d = self.store.delete_row(l_uuid)
        return d.addCallback(lambda deleted: self._written(deleted, l_uuid) if deleted else False)

    def _written(self, result, l_uuid: str):
        """After a write to the store: ``result``, once this node has read the account again
        when no feed will tell it (other nodes then see it at their next reload)."""
        if self.changes is not None:
            return result
        d = self.follow_changes(frozenset({l_uuid}))
        d.addErrback(lambda failure: log.warn("{l_uuid} was written to the store but not read again: {error}",
                                              l_uuid=l_uuid, error=failure.getErrorMessage()))
        return d.addCallback(lambda _: result)

    def reregister(self, l_uuids, reason: str, at: float | None = None) -> int:
        """REGISTER these accounts at once (or at ``at``), paced by the scheduler: a lost
        connection or a registrar back from down. Accounts that are disabled, dormant
        (expires 0) or already registering are left alone; returns how many were scheduled."""
        now = self.now()
        when = now if at is None else max(now, at)
        count = 0
        for l_uuid in l_uuids:
            record = self.records.get(l_uuid)
            if record is None or not self._eligible(record):
                continue
            effects = self.machine.flow_lost(record, when)
            if not effects:
                continue
            self._carry_out(effects)
            count += 1
            log.debug("registration {l_uuid}: re-registering ({reason})", l_uuid=l_uuid, reason=reason)
        return count

    def accounts_of(self, destination: str, failed_only: bool = False) -> list[str]:
        """The accounts whose REGISTERs go to ``destination`` (as the per-destination budget
        names it); with ``failed_only``, those whose last REGISTER cycle failed."""
        now = self.now()
        return [l_uuid for l_uuid, record in self.records.items() if self._destination(record) == destination
                and (not failed_only or record.state(now) is State.FAILED)]

    def registrar_target(self, record: RegistrationRecord) -> tuple[SipURI | Address, Address | None]:
        """Where the account's REGISTERs go (auth_proxy, else the registrar's domain) and the
        local socket they leave from; TransportError for an unusable socket."""
        hop = self._next_hop(record)
        if hop is None:
            hop = cast(SipURI, parse_uri(f"sip:{record.r_domain}", "r_domain"))  # valid: checked when loaded
        return hop, self._source(record)

    def send_register(self, attribute: str, value: str) -> defer.Deferred | None:
        """uac_reg_send_register: REGISTER now whatever the state; None when not found."""
        record = self.find(attribute, value)
        if record is None:
            return None
        return self._sent(self.machine.send(record, record.expires, self.now()))

    def send_unregister(self, l_uuid: str, attribute: str = "l_uuid") -> defer.Deferred | None:
        """uac_reg_send_unregister: Expires 0 now; the account stays dormant (expires 0) until
        refreshed or reloaded."""
        record = self.find(attribute, l_uuid)
        if record is None:
            return None
        return self._sent(self.machine.unregister(record, self.now()))
