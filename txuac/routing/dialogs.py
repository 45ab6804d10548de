"""Dialog tracking for ``dialog.manage`` (sans-IO): Kamailio's dialog module in memory.

A ``DialogTable`` holds the dialogs created from initial INVITEs the proxy forwards
(Kamailio ``dlg_manage()``), keyed by Call-ID plus the caller's From tag. Every method
takes ``now`` (seconds, any monotonic clock); the shell arms a timer for
``next_deadline()`` and calls ``expire(now)``.

- Creation: ``create(invite, now)``; the callee's To tag comes from the first 1xx with a
  tag or the 2xx (``on_response``). While early, several To tags may arrive from forks
  (RFC 3261 12.1, 13.2.2.4); the first 2xx confirms the dialog with its tag. A later 2xx
  from another fork is not tracked (Kamailio also keeps the first): the requests of that
  leg do not match.
- Matching: ``match(request)`` finds an in-dialog request in both directions, Kamailio's
  ``is_direction``: downstream (caller to callee) when the From tag is the caller's,
  upstream when the From tag is the callee's (From and To swapped). A request without a
  To tag is not in-dialog. Call-ID and tags are enough: From/To replacement
  (txuac.routing.replace) never changes them, so the ``did`` Record-Route parameter of
  Kamailio's dialog module is not needed for matching; ``Dialog.did`` and
  ``DialogTable.by_did`` exist for a script that puts one on its Record-Route anyway.
- Variables: ``Dialog.get_var``/``set_var``, Kamailio ``$dlg_var`` semantics: string
  values, None deletes. The dialog mode of From/To restore (txuac.routing.restore,
  ``_uac_fu``, ``_uac_funew``, ...) stores its values there (``update_vars``).
- Ending (``EndReason``): a BYE in either direction ends the dialog when the request is
  seen (Kamailio's dialog module does the same); the dialog then lingers, still matched,
  for ``linger`` seconds (default 32 s, RFC 3261 64*T1) so retransmitted BYEs, a BYE
  resent with credentials and their replies are still recognised; then it is dropped.
  A final non-2xx to the initial INVITE ends an early dialog; a confirmed dialog without
  any request for ``dialog_timeout`` seconds (Kamailio ``default_timeout``, 43200 s) and
  an early dialog not confirmed within ``early_timeout`` seconds end by timeout.
  ``expire(now)`` returns the dialogs its timeouts ended; ``on_request`` and
  ``on_response`` return the dialog they ended (for events and logging).
- Size: at most ``max_dialogs`` entries, lingering ones included; ``create`` refuses more
  with ``DialogTableFull``.
- CSeq: the last CSeq number seen per direction (``Dialog.last_cseq``), and a per-direction
  ``Dialog.cseq_offset`` for requests we resent with a higher CSeq (uac_auth, RFC 3261
  22.2). ``shift_request`` adds the offset of the request's direction to every later
  request of that direction: ACK for a 2xx carries its INVITE's number (13.2.2.4) and
  CANCEL the number of the request it cancels (9.1), which were shifted too, so they are
  shifted alike. ``unshift_response`` takes it back out of the replies to those requests;
  the caller applies it only to replies of transactions whose request it shifted (a
  request forwarded before the offset grew keeps its own numbering).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from txuac.errors import SIPParseError, TxuacError
from txuac.routing.restore import Direction
from txuac.sip.message import Message, Request, Response

DEFAULT_DIALOG_TIMEOUT = 43200.0  # Kamailio dialog default_timeout
DEFAULT_EARLY_TIMEOUT = 300.0  # Kamailio dialog early_timeout
DEFAULT_LINGER = 32.0  # RFC 3261 64*T1: retransmissions of the BYE and its replies
DEFAULT_MAX_DIALOGS = 100000
MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5


class DialogError(TxuacError):
    """A dialog cannot be created or a message cannot be applied to one."""


class DialogTableFull(DialogError):
    """The table holds ``max_dialogs`` dialogs: a new one is refused."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class EndReason(enum.Enum):
    BYE = "bye"
    REJECTED = "rejected"  # a final non-2xx to the initial INVITE
    TIMEOUT = "timeout"  # confirmed, no request for dialog_timeout seconds
    EARLY_TIMEOUT = "early-timeout"  # never confirmed within early_timeout seconds


@dataclass(eq=False)
class Dialog:
    """One dialog between the caller (who sent the initial INVITE) and the callee."""

    did: str
    call_id: str
    caller_tag: str
    created_at: float
    invite_cseq: int
    state: DialogState = DialogState.EARLY
    callee_tag: str | None = None
    early_tags: list[str] = field(default_factory=list)
    confirmed_at: float | None = None
    last_request_at: float = 0.0
    ended_at: float | None = None
    end_reason: EndReason | None = None
    last_cseq: dict[Direction, int | None] = field(
        default_factory=lambda: {Direction.DOWNSTREAM: None, Direction.UPSTREAM: None})
    cseq_offset: dict[Direction, int] = field(
        default_factory=lambda: {Direction.DOWNSTREAM: 0, Direction.UPSTREAM: 0})
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.caller_tag)

    def get_var(self, name: str) -> str | None:
        """``$dlg_var(name)``: the value, or None when unset."""
        return self.variables.get(name)

    def set_var(self, name: str, value: str | None) -> None:
        """``$dlg_var(name) = value``; None deletes (Kamailio's ``$null``)."""
        if not isinstance(name, str) or not name:
            raise DialogError(f"dialog variable name must be a non-empty string, got {name!r}")
        if value is None:
            self.variables.pop(name, None)
        elif isinstance(value, str):
            self.variables[name] = value
        else:
            raise DialogError(f"dialog variable {name!r}: value must be a string or None, got {type(value).__name__}")

    def update_vars(self, values: Mapping[str, str | None]) -> None:
        """Set several variables (``restore.dialog_vars_after_replace`` output)."""
        for name, value in values.items():
            self.set_var(name, value)

    def add_cseq_offset(self, direction: Direction, by: int = 1) -> None:
        """A request of ``direction`` was resent with its CSeq raised by ``by`` (uac_auth)."""
        if by < 0:
            raise DialogError(f"CSeq offset must grow, got {by}")
        self.cseq_offset[direction] += by

    def shift_request(self, request: Request, direction: Direction) -> bool:
        """Add ``direction``'s offset to the request's CSeq number (ACK and CANCEL alike);
        whether there was one."""
        offset = self.cseq_offset[direction]
        if offset:
            shift_cseq(request, offset)
        return bool(offset)

    def unshift_response(self, response: Response, direction: Direction) -> None:
        """Take ``direction``'s offset back out of a reply to a request of that direction."""
        offset = self.cseq_offset[direction]
        if offset:
            shift_cseq(response, -offset)


def shift_cseq(message: Message, delta: int) -> None:
    """Add ``delta`` to the CSeq number of ``message``; DialogError out of range."""
    cseq = message.cseq  # SIPParseError for a garbage CSeq
    if cseq is None:
        raise DialogError("no CSeq header to shift")
    number = cseq.number + delta
    if not 0 <= number <= MAX_CSEQ:
        raise DialogError(f"CSeq {cseq.number} shifted by {delta} is out of range")
    message.headers.set("CSeq", f"{number} {cseq.method}")


def _tags(message: Message) -> tuple[str | None, str | None, str | None]:
    """Call-ID, From tag, To tag; all None when one of those headers is malformed."""
    try:
        from_, to = message.from_, message.to
        return message.call_id, from_.tag if from_ else None, to.tag if to else None
    except SIPParseError:
        return None, None, None


class DialogTable:
    """The dialogs of one proxy, in memory."""

    def __init__(self, dialog_timeout: float = DEFAULT_DIALOG_TIMEOUT,
                 early_timeout: float = DEFAULT_EARLY_TIMEOUT, linger: float = DEFAULT_LINGER,
                 max_dialogs: int = DEFAULT_MAX_DIALOGS):
        for name, value in (("dialog_timeout", dialog_timeout), ("early_timeout", early_timeout),
                            ("linger", linger), ("max_dialogs", max_dialogs)):
            if value <= 0:
                raise DialogError(f"{name} must be positive, got {value!r}")
        self.dialog_timeout = dialog_timeout
        self.early_timeout = early_timeout
        self.linger = linger
        self.max_dialogs = max_dialogs
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._by_did: dict[str, Dialog] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self):
        return iter(list(self._dialogs.values()))

    def get(self, call_id: str, caller_tag: str) -> Dialog | None:
        return self._dialogs.get((call_id, caller_tag))

    def by_did(self, did: str) -> Dialog | None:
        return self._by_did.get(did)

    def create(self, invite: Request, now: float) -> Dialog:
        """``dlg_manage()`` on an initial INVITE being forwarded; the existing dialog for a
        retransmission or a resent (authenticated) INVITE of the same caller."""
        if invite.method != "INVITE":
            raise DialogError(f"a dialog is created by an INVITE, not {invite.method}")
        try:
            call_id, from_, to, cseq = invite.call_id, invite.from_, invite.to, invite.cseq
        except SIPParseError as e:
            raise DialogError(f"cannot create a dialog: {e}") from e
        if not call_id or from_ is None or not from_.tag:
            raise DialogError("cannot create a dialog: Call-ID or From tag missing")
        if to is None or to.tag is not None:
            raise DialogError("cannot create a dialog from an in-dialog INVITE (To has a tag)")
        if cseq is None:
            raise DialogError("cannot create a dialog: CSeq missing")
        key = (call_id, from_.tag)
        existing = self._dialogs.get(key)
        if existing is not None:
            if existing.state is not DialogState.TERMINATED:
                return existing
            self._remove(existing)
        if len(self._dialogs) >= self.max_dialogs:
            raise DialogTableFull(f"dialog table full ({self.max_dialogs} dialogs): new dialog refused")
        did = f"{self._next_id:x}"
        self._next_id += 1
        dialog = Dialog(did, call_id, from_.tag, now, cseq.number, last_request_at=now)
        dialog.last_cseq[Direction.DOWNSTREAM] = cseq.number
        self._dialogs[key] = dialog
        self._by_did[did] = dialog
        return dialog

    def match(self, request: Request) -> tuple[Dialog, Direction] | None:
        """The dialog of an in-dialog request and the request's direction, or None.

        Terminated dialogs still match while they linger (BYE retransmissions)."""
        call_id, from_tag, to_tag = _tags(request)
        if not call_id or not from_tag or not to_tag:
            return None
        dialog = self._dialogs.get((call_id, from_tag))
        if dialog is not None and self._is_callee_tag(dialog, to_tag):
            return dialog, Direction.DOWNSTREAM
        dialog = self._dialogs.get((call_id, to_tag))
        if dialog is not None and self._is_callee_tag(dialog, from_tag):
            return dialog, Direction.UPSTREAM
        return None

    @staticmethod
    def _is_callee_tag(dialog: Dialog, tag: str) -> bool:
        if dialog.callee_tag is not None:
            return tag == dialog.callee_tag
        return tag in dialog.early_tags  # early dialog: PRACK, UPDATE on any early leg

    def on_request(self, request: Request, now: float) -> tuple[Dialog, Direction] | None:
        """Record an in-dialog request being forwarded: activity, CSeq, BYE ends the dialog.

        Returns what ``match`` returns."""
        found = self.match(request)
        if found is None:
            return None
        dialog, direction = found
        if dialog.state is DialogState.TERMINATED:
            return found
        dialog.last_request_at = now
        if request.method not in ("ACK", "CANCEL"):  # they reuse a CSeq number (9.1, 13.2.2.4)
            try:
                cseq = request.cseq
            except SIPParseError:
                cseq = None
            if cseq is not None:
                dialog.last_cseq[direction] = cseq.number
        if request.method == "BYE":
            self._end(dialog, EndReason.BYE, now)
        return found

    def on_response(self, response: Response, now: float) -> Dialog | None:
        """Apply a reply to the initial INVITE: early tags, confirmation, rejection.

        Returns the dialog when this reply ended it (a final non-2xx), else None. Replies to
        other requests and replies that do not parse are ignored."""
        call_id, from_tag, to_tag = _tags(response)
        if not call_id or not from_tag:
            return None
        dialog = self._dialogs.get((call_id, from_tag))
        if dialog is None or dialog.state is not DialogState.EARLY:
            return None  # re-INVITE replies never change a confirmed dialog
        try:
            cseq = response.cseq
        except SIPParseError:
            return None
        if cseq is None or cseq.method != "INVITE":
            return None
        status = response.status
        if 101 <= status < 200:
            if to_tag and to_tag not in dialog.early_tags:
                dialog.early_tags.append(to_tag)
        elif 200 <= status < 300:
            if to_tag:  # a 2xx without a To tag cannot confirm anything
                dialog.state = DialogState.CONFIRMED
                dialog.callee_tag = to_tag
                dialog.confirmed_at = now
                dialog.last_request_at = now
                if to_tag not in dialog.early_tags:
                    dialog.early_tags.append(to_tag)
        elif status >= 300:
            self._end(dialog, EndReason.REJECTED, now)
            return dialog
        return None

    def expire(self, now: float) -> list[Dialog]:
        """End the dialogs whose timeout passed and drop lingering ones; return those ended."""
        ended = []
        for dialog in list(self._dialogs.values()):
            if dialog.state is DialogState.TERMINATED:
                assert dialog.ended_at is not None
                if now >= dialog.ended_at + self.linger:
                    self._remove(dialog)
            elif dialog.state is DialogState.EARLY and now >= dialog.created_at + self.early_timeout:
                self._end(dialog, EndReason.EARLY_TIMEOUT, now)
                ended.append(dialog)
            elif dialog.state is DialogState.CONFIRMED and now >= dialog.last_request_at + self.dialog_timeout:
                self._end(dialog, EndReason.TIMEOUT, now)
                ended.append(dialog)
        return ended

    def next_deadline(self) -> float | None:
        """When ``expire`` next has something to do, or None for an empty table."""
        deadlines = [self._deadline(dialog) for dialog in self._dialogs.values()]
        return min(deadlines) if deadlines else None

    def _deadline(self, dialog: Dialog) -> float:
        if dialog.state is DialogState.TERMINATED:
            assert dialog.ended_at is not None
            return dialog.ended_at + self.linger
        if dialog.state is DialogState.EARLY:
            return dialog.created_at + self.early_timeout
        return dialog.last_request_at + self.dialog_timeout

    def _end(self, dialog: Dialog, reason: EndReason, now: float) -> None:
        dialog.state = DialogState.TERMINATED
        dialog.end_reason = reason
        dialog.ended_at = now

    def _remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.key, None)
        self._by_did.pop(dialog.did, None)
