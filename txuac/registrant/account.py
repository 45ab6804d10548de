"""One registration account as a state machine, sans-IO: events in, effects out.

The service (txuac.registrant.service) feeds each account its events with an explicit
``now`` (due, sent, challenged, replied, failed, flow lost, enable, disable, unregister,
a reload's hand-over) and carries out the effects the machine returns: send this
REGISTER, arm the account at a time, persist this state, emit this event. Every change of
the account's Kamailio flag bits goes through TRANSITIONS, one table.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any, Callable, Final, NamedTuple, Sequence, Union

from txuac.errors import TxuacError
from txuac.registrant import protocol
from txuac.registrant.ownership import AllAccounts, IAccountOwnership
from txuac.registrant.protocol import OutcomeKind
from txuac.registrant.record import MAX_CSEQ, Flag, RegistrationRecord, State
from txuac.registrant.retry import FailureKind, RetryPolicy, classify
from txuac.registrant.store import AccountState
from txuac.sip.message import Request, Response
from txuac.sip.tokens import token_hex

MAX_TOO_BRIEF = 3  # 423s answered in a row before it counts as a failure
# The store keeps, for each account's Call-ID, a CSeq this far above the last one used; a
# new mark is written when half of it is used up (one write per ~25 refreshes), so that
# after a restart, even an unclean one, the account goes on above any CSeq it sent.
CSEQ_AHEAD = 100
# Final responses after which the next REGISTER takes a fresh Call-ID: what registrars
# answer when they refuse the CSeq on a Call-ID they know (RFC 3261 10.3 step 7; Kamailio's
# registrar answers 400 "Invalid CSeq number", others 500). Every other failure keeps it.
CALL_ID_REFUSED = frozenset({400, 500})


class Step(enum.Enum):
    """What happens to an account, as far as its flag bits are concerned."""

    # Members are singletons: identity hashing (C) instead of Enum's, per REGISTER.
    __hash__ = object.__hash__

    INIT = "reg_delay has passed: the scheduler takes the account for the first time"
    SENT = "a REGISTER goes out"
    CHALLENGED = "the authenticated retry goes out"
    ONLINE = "a 2xx lists our binding"
    TOO_BRIEF = "a 423: asked again at once"
    UNLISTED = "a 2xx without our binding, or granting 0 s"
    UNREGISTERED = "a 2xx to Expires 0: disabled until enabled and refreshed"
    RETRIED = "the cycle failed; retried later"
    DISABLED_BY_FAILURE = "the cycle failed; not retried (reg_retry_interval 0)"
    ENABLE = "uac.reg_enable, or a reload of an enabled row"
    DISABLE = "uac.reg_disable"
    HOLD = "waits for an older record of the account to finish its REGISTER"
    RELEASE = "the older record is done: the account is scheduled again"
    KEEP_BINDING = "a changed row whose binding stays: online until told otherwise"


class Transition(NamedTuple):
    set: int
    clear: int


_CYCLE = Flag.ONGOING | Flag.AUTHSENT  # a REGISTER cycle in flight (Kamailio clears both at its end)

# The account's flag bits (Kamailio's values: 1 DISABLED, 2 ONGOING, 4 ONLINE, 8 AUTHSENT,
# 16 INIT) each step sets and clears; nothing else changes them.
TRANSITIONS: dict[Step, Transition] = {
    # Kamailio's timer sets INIT once reg_delay has passed and keeps it; a reload or
    # refresh makes a new record, without it.
    Step.INIT: Transition(set=Flag.INIT, clear=0),
    Step.SENT: Transition(set=Flag.ONGOING, clear=Flag.AUTHSENT),
    Step.CHALLENGED: Transition(set=Flag.AUTHSENT, clear=0),
    Step.ONLINE: Transition(set=Flag.ONLINE, clear=_CYCLE),
    Step.TOO_BRIEF: Transition(set=0, clear=_CYCLE | Flag.ONLINE),
    Step.UNLISTED: Transition(set=0, clear=_CYCLE | Flag.ONLINE),
    # Kamailio's registrar answers an un-REGISTER with a 200 without Contact, which its
    # uac_reg takes as a failure: with its reg_retry_interval 0 that disables the account.
    Step.UNREGISTERED: Transition(set=Flag.DISABLED, clear=_CYCLE | Flag.ONLINE),
    Step.RETRIED: Transition(set=0, clear=_CYCLE | Flag.ONLINE),
    Step.DISABLED_BY_FAILURE: Transition(set=Flag.DISABLED, clear=_CYCLE | Flag.ONLINE),
    Step.ENABLE: Transition(set=0, clear=Flag.DISABLED),
    Step.DISABLE: Transition(set=Flag.DISABLED, clear=0),
    Step.HOLD: Transition(set=Flag.ONGOING, clear=0),
    Step.RELEASE: Transition(set=0, clear=Flag.ONGOING),
    Step.KEEP_BINDING: Transition(set=Flag.ONLINE, clear=0),
}

def apply(record: RegistrationRecord, step: Step) -> None:
    """Change the account's flags as ``step`` says (TRANSITIONS)."""
    transition = TRANSITIONS[step]
    record.flags = (record.flags | transition.set) & ~transition.clear


# --- effects -------------------------------------------------------------------------
# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False, unsafe_hash=True)
class Send:
    """Send ``request`` (the account's REGISTER asking for ``expires``) through the Authenticator."""

    record: Final[RegistrationRecord]
    request: Final[Request]
    expires: Final[int]
    too_brief: Final[int]  # 423s answered in a row before this one
    call_id: Final[str | None]  # the account's kept Call-ID the request carries (None: a fresh one)

    def __init__(self, record: RegistrationRecord, request: Request, expires: int, too_brief: int,
                 call_id: str | None) -> None:
        self.record = record
        self.request = request
        self.expires = expires
        self.too_brief = too_brief
        self.call_id = call_id


@dataclass(init=False, unsafe_hash=True)
class Arm:
    """The account is due at ``at`` (record.due_at is set): put it in the scheduler's queue."""

    record: Final[RegistrationRecord]
    at: Final[float]

    def __init__(self, record: RegistrationRecord, at: float) -> None:
        self.record = record
        self.at = at


@dataclass(init=False, unsafe_hash=True)
class Persist:
    """Hand this state (Call-ID, CSeq mark, instance ID) to the store."""

    state: Final[AccountState]

    def __init__(self, state: AccountState) -> None:
        self.state = state


@dataclass(init=False, unsafe_hash=True)
class Emit:
    """The account changed state: log it and tell the observers."""

    record: Final[RegistrationRecord]
    state: Final[State]
    previous: Final[State]
    reason: Final[str]
    status: Final[int | None]
    at: Final[float]
    # Seconds from the first REGISTER of the cycle to the answer that ended it, or None.
    latency: Final[float | None]
    alert: Final[bool]
    kind: Final[FailureKind | None]

    def __init__(self, record: RegistrationRecord, state: State, previous: State, reason: str, status: int | None,
                 at: float, latency: float | None = None, alert: bool = False,
                 kind: FailureKind | None = None) -> None:
        self.record = record
        self.state = state
        self.previous = previous
        self.reason = reason
        self.status = status
        self.at = at
        self.latency = latency
        self.alert = alert
        self.kind = kind


Effect = Union[Send, Arm, Persist, Emit]


class AccountMachine:
    """The rules every account follows; the accounts' state lives in their records.

    Sans-IO: no reactor, no clock (each event carries ``now``), no sockets; ``rng`` draws
    the refresh jitter and retry delays. ``ownership`` says which accounts this process may
    register at ``now``: an account it does not own is parked (nothing sent, nothing armed)
    whatever asks for its REGISTER, so a node whose lease ran out never sends (the fence).
    """

    def __init__(self, retry: RetryPolicy, rng: random.Random, contact_addr: str, timer_interval: int,
                 keep_callid: bool = True, user_agent: str | None = None,
                 ownership: IAccountOwnership | AllAccounts | None = None):
        self.retry = retry
        self.rng = rng
        self.contact_addr = contact_addr
        self.timer_interval = timer_interval
        self.keep_callid = keep_callid
        self.user_agent = user_agent
        owner: Any = ownership if ownership is not None else AllAccounts()  # zope interfaces are untyped
        self.owns: Callable[[str, float], bool] = owner.owns

    # --- the REGISTER cycle -----------------------------------------------------------
    def due(self, record: RegistrationRecord, now: float) -> list[Effect]:
        """The scheduler takes the account (due, within every budget): its REGISTER now."""
        if not self.owns(record.l_uuid, now):
            return []  # parked: another node's, or ours no longer
        apply(record, Step.INIT)
        return self._send(record, record.expires, now)

    def send(self, record: RegistrationRecord, expires: int, now: float, too_brief: int = 0) -> list[Effect]:
        """A REGISTER for the account now, asking for ``expires`` (due, or asked for);
        nothing when the account is not ours at ``now`` (parked)."""
        if not self.owns(record.l_uuid, now):
            return []
        return self._send(record, expires, now, too_brief)

    def _send(self, record: RegistrationRecord, expires: int, now: float, too_brief: int = 0) -> list[Effect]:
        effects: list[Effect] = []
        previous = record.state(now)
        if record.outbound and not record.instance_id:
            record.instance_id = protocol.new_instance_id()  # RFC 5626 4.1; the store keeps it
        call_id, cseq = self._next_cseq(record, effects)
        try:
            request = protocol.build_register(record, self.contact_addr, expires, self.user_agent,
                                              call_id=call_id, cseq=cseq)
        except TxuacError as e:  # this account fails, the others go on
            return effects + self.failed(record, f"cannot send REGISTER: {e}", None, now, FailureKind.FATAL)
        apply(record, Step.SENT)
        record.sent_at = now
        self._emit(effects, record, previous, "registering", None, now)
        effects.append(Send(record, request, expires, too_brief, call_id))
        return effects

    def unregister(self, record: RegistrationRecord, now: float) -> list[Effect]:
        """Expires 0 now; once the registrar confirms, the account is disabled, and dormant
        (expires 0) until refreshed or reloaded."""
        record.expires = 0
        return self.send(record, 0, now)

    def _next_cseq(self, record: RegistrationRecord, effects: list[Effect]) -> tuple[str | None, int]:
        """Call-ID and CSeq of the account's next REGISTER, and what the store must keep.

        With reg_keep_callid (our default) an account has one Call-ID (RFC 3261 10.2: the
        same Call-ID for every REGISTER to a registrar, CSeq one higher each time), made at
        its first REGISTER and kept across restarts in our table; the CSeq stored there is a
        mark CSEQ_AHEAD above the last one used, so that a restart goes on above it.
        Without it, Kamailio's: a new Call-ID at CSeq 10 for every REGISTER.
        """
        keep = self.keep_callid
        if keep:
            if not record.call_id or record.cseq + 1 + CSEQ_AHEAD > MAX_CSEQ:
                record.call_id = token_hex(16)
                record.cseq = 9  # Kamailio starts a Call-ID at CSeq 10
            record.cseq += 1
        if (keep and (record.call_id != record.saved_call_id or record.cseq > record.saved_cseq - CSEQ_AHEAD // 2)
                or record.instance_id != record.saved_instance_id):
            effects.append(self._reserve(record, record.cseq + CSEQ_AHEAD if keep else None))
        return (record.call_id, record.cseq) if keep else (None, 10)

    @staticmethod
    def _reserve(record: RegistrationRecord, mark: int | None) -> Persist:
        """What the store must keep: the Call-ID with CSeq ``mark`` (None: the Call-ID's
        unchanged), and the instance ID."""
        if mark is not None:
            record.saved_call_id, record.saved_cseq = record.call_id or "", mark
        record.saved_instance_id = record.instance_id
        return Persist(AccountState(record.l_uuid, record.saved_call_id, record.saved_cseq, record.instance_id))

    def challenged(self, record: RegistrationRecord, call_id: str | None, cseq: int) -> None:
        """The Authenticator sends the retry with credentials on ``call_id`` (Send.call_id)
        with ``cseq``: the account's CSeq now, when that is still the account's Call-ID."""
        apply(record, Step.CHALLENGED)
        if call_id is not None and call_id == record.call_id:
            record.cseq = max(record.cseq, cseq)

    @staticmethod
    def learn(record: RegistrationRecord, outcome: protocol.Outcome) -> protocol.Learned | None:
        """Keep what a 2xx taught: Path, Service-Route, GRUUs, Flow-Timer (empty: forgotten)."""
        learned = outcome.learned
        if learned is not None:
            record.path = learned.path
            record.service_route = learned.service_route
            record.pub_gruu = learned.pub_gruu
            record.temp_gruu = learned.temp_gruu
            record.flow_timer = learned.flow_timer
        return learned

    def replied(self, record: RegistrationRecord, response: Response, outcome: protocol.Outcome, expires: int,
                too_brief: int, now: float) -> list[Effect]:
        """The final response (``outcome``, protocol.interpret) to a REGISTER asking for ``expires``."""
        effects: list[Effect] = []
        previous = record.state(now)
        status = response.status
        record.last_status = status
        kind = outcome.kind
        if kind is OutcomeKind.ONLINE:
            apply(record, Step.ONLINE)
            sent_at = record.sent_at if record.sent_at is not None else now
            record.expires_at = sent_at + outcome.granted
            record.last_failure = None
            record.failures = 0
            record.stale_contacts = ()  # removed by this REGISTER (RFC 3261 10.2.2)
            self._arm(effects, record, protocol.refresh_at(sent_at, outcome.granted, self.timer_interval, self.rng))
            self._emit(effects, record, previous, f"registered for {outcome.granted} s"
                       + (f" ({outcome.reason})" if outcome.reason else ""), status, now)
        elif kind is OutcomeKind.INTERVAL_TOO_BRIEF and too_brief + 1 >= MAX_TOO_BRIEF:
            record.expires = record.table_expires  # the next run starts from the table's value again
            return self._fail(record, f"{outcome.reason} {too_brief + 1} times in a row", None, status, previous,
                              now, None)
        elif kind is OutcomeKind.INTERVAL_TOO_BRIEF:
            record.expires = outcome.expires
            record.last_failure = None
            apply(record, Step.TOO_BRIEF)
            self._emit(effects, record, previous, f"{outcome.reason}: asking again with Expires {outcome.expires}",
                       status, now)
            effects.extend(self.send(record, record.expires, now, too_brief + 1))
        elif kind is OutcomeKind.UNREGISTERED:
            apply(record, Step.UNREGISTERED)
            record.expires_at = None
            self._emit(effects, record, previous, outcome.reason, status, now)
        elif kind is OutcomeKind.UNLISTED:
            apply(record, Step.UNLISTED)
            record.last_failure = None
            self._arm(effects, record, now + self.timer_interval)
            self._emit(effects, record, previous, outcome.reason, status, now)
        else:
            return self._fail(record, outcome.reason, outcome.retry_after, status, previous, now, None)
        return effects

    def failed(self, record: RegistrationRecord, reason: str, status: int | None, now: float,
               kind: FailureKind | None = None) -> list[Effect]:
        """The cycle ended without a final response (timeout, transport, authentication)
        or could not start; ``kind`` defaults to what ``status`` says."""
        return self._fail(record, reason, None, status, record.state(now), now, kind)

    def _fail(self, record: RegistrationRecord, reason: str, retry_after: int | None, status: int | None,
              previous: State, now: float, kind: FailureKind | None) -> list[Effect]:
        """Retry the account when its policy says (txuac.registrant.retry), or disable it."""
        effects: list[Effect] = []
        record.last_failure = reason
        record.last_status = status
        record.failures += 1
        if status in CALL_ID_REFUSED:
            # Kamailio starts a fresh Call-ID after every failure; we keep the account's one
            # (the registrar knows its binding by it) unless the registrar may have refused it.
            record.call_id = None
        if kind is None:
            kind = classify(status)
        delay = self.retry.delay(kind, record.failures, retry_after, self.rng)
        if delay is None:
            apply(record, Step.DISABLED_BY_FAILURE)  # Kamailio: reg_retry_interval 0 disables on failure
        else:
            apply(record, Step.RETRIED)
            self._arm(effects, record, now + delay)
        alert = delay is None or kind is not FailureKind.TEMPORARY
        self._emit(effects, record, previous, reason, status, now, alert, kind)
        return effects

    # --- operations -------------------------------------------------------------------
    def set_disabled(self, record: RegistrationRecord, disabled: bool, now: float) -> list[Effect]:
        """uac.reg_disable / uac.reg_enable: the account is re-evaluated at once."""
        effects: list[Effect] = []
        previous = record.state(now)
        if disabled:
            apply(record, Step.DISABLE)
        else:
            apply(record, Step.ENABLE)
            record.last_failure = None
        self._arm(effects, record, now)
        self._emit(effects, record, previous, "disabled" if disabled else "enabled", None, now)
        return effects

    def revive(self, record: RegistrationRecord, now: float) -> list[Effect]:
        """An unchanged row brings back, as Kamailio's reload does, an account left dormant
        by uac.reg_unregister or disabled at run time (by a failure or uac.reg_disable)."""
        effects: list[Effect] = []
        if record.expires == 0 and record.table_expires > 0:
            record.expires = record.table_expires
            self._arm(effects, record, now)
        if record.has(Flag.DISABLED) and not record.table_disabled:
            apply(record, Step.ENABLE)
            record.last_failure = None
            self._arm(effects, record, now)
        return effects

    def flow_lost(self, record: RegistrationRecord, when: float) -> list[Effect]:
        """Its connection dropped, or its registrar is back from down: REGISTER at ``when``
        unless it is already due by then."""
        if record.due_at <= when:
            return []
        return [self._armed(record, when)]

    def gained(self, record: RegistrationRecord, other_contact_addrs: Sequence[str],
               bound_contact: str = "") -> list[Effect]:
        """``record``, just read from the store, is taken from another node (a cluster
        takeover): its first REGISTER goes on CSEQ_AHEAD above the stored CSeq mark and
        removes the account's Contact as each other node (``other_contact_addrs``) would
        have registered it, and ``bound_contact`` (what the fleet view says the previous
        owner registered), never our own (RFC 3261 10.2.2).

        The previous owner writes each new mark in batches, never waited for: killed or
        frozen before the write, it may have used up to CSEQ_AHEAD CSeqs above the stored
        mark, and a REGISTER on the same Call-ID with a CSeq not above them is ignored by
        the registrar (RFC 3261 10.3 step 7), its expires=0 Contacts too. The mark above
        the first REGISTER is returned (a Persist) for the service to write BEFORE that
        REGISTER goes out: a node that took the account and is killed or frozen right
        after sending it cannot leave the next taker on the same stored mark, hence on the
        same CSeq. Nothing is returned without a stored Call-ID (a new one is made).
        """
        ours = protocol.contact_uri(record, self.contact_addr)
        candidates = [protocol.contact_uri(record, address) for address in other_contact_addrs if address]
        if bound_contact:
            candidates.append(bound_contact)
        record.stale_contacts = tuple(dict.fromkeys(c for c in candidates if c != ours))
        if not (self.keep_callid and record.call_id):
            return []
        if record.cseq + 1 + 2 * CSEQ_AHEAD > MAX_CSEQ:
            record.call_id = None  # the first REGISTER takes a new Call-ID (_next_cseq)
            return []
        record.cseq += CSEQ_AHEAD
        return [self._reserve(record, record.cseq + 1 + CSEQ_AHEAD)]

    def hold(self, record: RegistrationRecord) -> None:
        """An older record of the account still finishes a REGISTER: this one waits
        (ONGOING keeps the scheduler off it) and takes over when that ends."""
        apply(record, Step.HOLD)

    def take_over(self, old: RegistrationRecord, new: RegistrationRecord, binding_stays: bool,
                  now: float) -> list[Effect]:
        """``new`` (a changed row) goes on from ``old``: its Call-ID and CSeq, and its
        binding when it stays; registered at once."""
        apply(new, Step.RELEASE)
        if old.call_id and new.call_id != old.call_id:
            new.call_id, new.cseq = old.call_id, old.cseq
        elif old.call_id:
            new.cseq = max(new.cseq, old.cseq)
        new.instance_id = new.instance_id or old.instance_id
        if binding_stays and old.registered(now):
            apply(new, Step.KEEP_BINDING)  # online until the re-registration says otherwise
            new.expires_at, new.sent_at, new.last_status = old.expires_at, old.sent_at, old.last_status
            new.path, new.service_route = old.path, old.service_route
            new.pub_gruu, new.temp_gruu, new.flow_timer = old.pub_gruu, old.temp_gruu, old.flow_timer
        return [self._armed(new, now)]

    # --- helpers ----------------------------------------------------------------------
    def arm(self, record: RegistrationRecord, at: float) -> Arm:
        """The account due at ``at``."""
        return self._armed(record, at)

    @staticmethod
    def _armed(record: RegistrationRecord, at: float) -> Arm:
        record.due_at = at
        return Arm(record, at)

    def _arm(self, effects: list[Effect], record: RegistrationRecord, at: float) -> None:
        effects.append(self._armed(record, at))

    @staticmethod
    def _emit(effects: list[Effect], record: RegistrationRecord, previous: State, reason: str, status: int | None,
              now: float, alert: bool = False, kind: FailureKind | None = None) -> None:
        state = record.state(now)
        if state is previous and state is not State.FAILED:
            return
        latency = None
        if previous is State.REGISTERING and state is not State.REGISTERING and record.sent_at is not None:
            latency = now - record.sent_at
        effects.append(Emit(record, state, previous, reason, status, now, latency, alert, kind))
