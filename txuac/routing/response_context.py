"""The response context of one proxied request (RFC 3261 16.7), sans-IO.

``ResponseContext`` keeps the branches of one forwarded request, each a ``Branch``: the
request as forwarded, what was heard from it and where it stands. Fed what the stack
reports (``receive``, ``timed_out``, ``transport_failed``, ``cancel``), it returns a
``ContextUpdate``: the responses to send upstream, the branches to CANCEL, whether every
branch failed. No Twisted, no clock.

Provisional responses but 100 and every 2xx are forwarded at once; a 2xx of an INVITE
after the final response too; other finals are stored. When no branch is pending and no
final was sent, the update says ``completed``: the failure route may add branches (serial
forking), else ``finish()`` gives the best response: a 6xx first, then the lowest class;
in 4xx 401, 407, 415, 420, 484 before the others, otherwise the lowest code, the first
received on a tie (Kamailio's t_pick_branch); 408 when no final exists; a chosen 503 goes
up as 500 (16.7 item 6, Kamailio's remap_503_500); a chosen 401/407 carries the
WWW-/Proxy-Authenticate values of every other 401/407 (16.7 item 7). A branch that times
out counts as a 408, one whose transport fails as a 503 (16.9); a cancelled branch that
times out counts as a 487. After a 6xx, a CANCEL or a final response, no new branch is
allowed (16.7 item 5, 16.10). CANCELs go to branches that have had a provisional
response, others get theirs at their first one (9.1). ``response_for_upstream`` removes
our top Via (16.7 item 3) and drops what has no Via left, whose top Via is not ours, or
whose next Via is a broadcast, multicast or unspecified address without maddr (RFC 4475
3.3.10).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass
from typing import Callable, Final, Protocol

from txuac.errors import SIPParseError, TxuacError
from txuac.routing.proxy_rules import make_branch_cancel, top_via_parsed_in
from txuac.sip.address import Address, ResponseOrigin, bare_host, ip_address_of
from txuac.sip.fields import Via
from txuac.sip.grammar import split_list, split_lws
from txuac.sip.message import Request, Response, make_response
from txuac.sip.tokens import token_hex

#: 4xx codes that tell the client how to retry, preferred in that order (16.7 item 6).
PREFERRED_4XX = (401, 407, 415, 420, 484)


class BranchRefused(TxuacError):
    """A new branch was asked for where RFC 3261 forbids one (after a 6xx, a CANCEL or
    a final response: 16.7 item 5, 16.10)."""


class BranchState(enum.Enum):
    CALLING = "calling"  # nothing heard yet
    PROCEEDING = "proceeding"  # a provisional response
    COMPLETED = "completed"  # a final response (or a timeout / transport failure)


class SentRequest(Protocol):
    """What the stack tells of the request it carries for a branch
    (``txuac.net.stack.ClientRequest``): the request as the current client transaction
    sent it, our Via (so the branch) on top, and where; None before a transaction starts,
    replaced when the stack fails over to the next target; and where its final response
    came from (None until one came)."""

    @property
    def sent(self) -> Request | None: ...

    @property
    def sent_to(self) -> Address | None: ...

    @property
    def origin(self) -> ResponseOrigin | None: ...


# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(eq=False, slots=True, init=False)
class Branch:
    """One forwarded copy of the request: what was sent and where (for its CANCEL), what
    came back, and where it stands. The one record of a branch; the client transaction
    that carries it is the stack's, known through ``carrier``."""

    request: Request | None  # as forwarded, before the stack puts our Via on; None until prepared
    carrier: SentRequest | None  # the stack's handle of the request as sent; None until sent
    heard: bool  # a response came on this branch: it may be cancelled (9.1)
    state: BranchState
    final: Response | None  # upstream form (our Via removed) or synthesized
    received: Response | None  # the final as received (uac_auth answers its challenge)
    cancel_pending: bool  # CANCEL it at its first provisional response (9.1)
    cancelled: bool
    local: bool  # final synthesized here (timeout, transport failure), not received

    def __init__(self, request: Request | None = None, carrier: SentRequest | None = None,
                 heard: bool = False) -> None:
        self.request = request
        self.carrier = carrier
        self.heard = heard
        self.state = BranchState.CALLING
        self.final = None
        self.received = None
        self.cancel_pending = False
        self.cancelled = False
        self.local = False

    @property
    def sent_to(self) -> Address | None:
        """Where the request of this branch went last (the stack's failover included)."""
        return self.carrier.sent_to if self.carrier is not None else None

    @property
    def origin(self) -> ResponseOrigin | None:
        """Where the final received on this branch came from, and where its request went."""
        return self.carrier.origin if self.carrier is not None else None

    def cancel_request(self) -> Request | None:
        """The CANCEL of this branch, built from the request as the stack sent it (RFC 3261
        9.1: its Request-URI, Call-ID, To, From, CSeq number and its single Via, so its
        branch), None while nothing was heard from it (the context cancels it at its first
        response) or nothing was sent."""
        sent = self.carrier.sent if self.carrier is not None else None
        if not self.heard or sent is None:
            return None
        return make_branch_cancel(sent)


@dataclass(init=False)
class ContextUpdate:
    """What to do after an event: responses to send upstream now, in order, branches to
    CANCEL now, and whether every branch is done with no final sent (the failure
    route's turn; then ``ResponseContext.finish``)."""

    forward: list[Response]
    cancel: list[int]
    completed: bool

    def __init__(self, forward: list[Response] | None = None, cancel: list[int] | None = None,
                 completed: bool = False) -> None:
        self.forward = forward if forward is not None else []
        self.cancel = cancel if cancel is not None else []
        self.completed = completed


class ResponseContext:
    """The response context of one proxied request (RFC 3261 16.7).

    ``request`` is the request as received (upstream Vias): synthesized responses
    (408, 500) are built from it with ``to_tag``.
    """

    def __init__(self, request: Request, to_tag: str | None = None):
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.to_tag = to_tag or token_hex(6)
        self.branches: list[Branch] = []
        self.final_sent: Response | None = None
        self.received_6xx = False
        self.cancelled = False
        self._order: list[int] = []  # branch numbers in the order their finals came

    @property
    def pending(self) -> list[int]:
        """Branches without a final response."""
        return [n for n, b in enumerate(self.branches) if b.state is not BranchState.COMPLETED]

    @property
    def can_fork(self) -> bool:
        return self.final_sent is None and not self.received_6xx and not self.cancelled

    def add_branch(self) -> int:
        """A new branch's number (serial forking from a failure route included)."""
        if not self.can_fork:
            raise BranchRefused("no new branch after a 6xx, a CANCEL or a final response")
        self.branches.append(Branch())
        return len(self.branches) - 1

    @staticmethod
    def _proceeding(branch: int, state: Branch, update: ContextUpdate) -> None:
        """A provisional response on ``branch``: it proceeds, and a CANCEL waiting for it goes."""
        if state.state is BranchState.CALLING:
            state.state = BranchState.PROCEEDING
            if state.cancel_pending:  # 9.1: the CANCEL waited for this
                state.cancel_pending = False
                state.cancelled = True
                update.cancel.append(branch)

    def receive(self, branch: int, response: Response) -> ContextUpdate:
        """A response from downstream on ``branch``, as received (our Via on top)."""
        state = self.branches[branch]
        state.heard = True
        status = response.status
        if status == 100:
            # 16.7 item 5: a 100 is never forwarded, so no copy is made for upstream; it
            # only tells that the branch proceeds.
            update = ContextUpdate()
            self._proceeding(branch, state, update)
            return update
        upstream = response_for_upstream(response, request=self.request)
        if upstream is None:
            return ContextUpdate()  # 16.7 item 3: nothing to send it to; ignored
        update = ContextUpdate()
        if status < 200:
            self._proceeding(branch, state, update)
            # 16.7 item 5: provisional responses but 100 go up at once, before a final.
            if self.final_sent is None and state.state is BranchState.PROCEEDING:
                update.forward.append(upstream)
            return update
        if 200 <= status < 300:
            # 16.7 item 5: every 2xx before the final, every INVITE 2xx after it.
            if self.final_sent is None or self.is_invite:
                update.forward.append(upstream)
            if state.state is not BranchState.COMPLETED:
                state.state = BranchState.COMPLETED
                state.final, state.received = upstream, response
                self._order.append(branch)
            if self.final_sent is None:
                self.final_sent = upstream
                update.cancel.extend(self._cancel_pending())  # 16.7 item 10
            return update
        if state.state is BranchState.COMPLETED:
            return update  # a late final on a done branch
        self._complete(branch, upstream)
        state.received = response
        if status >= 600 and self.final_sent is None:
            # 16.7 item 5: a 6xx waits, the other branches are cancelled, no new ones.
            self.received_6xx = True
            update.cancel.extend(self._cancel_pending())
        update.completed = self._is_complete()
        return update

    def timed_out(self, branch: int) -> ContextUpdate:
        """The branch's client transaction timed out: a 408 for it (16.7, 17.1.1.2), a 487
        when it was being cancelled (what Kamailio fakes for a branch it cancels)."""
        state = self.branches[branch]
        return self._synthesize(branch, 487 if state.cancelled or state.cancel_pending else 408)

    def transport_failed(self, branch: int) -> ContextUpdate:
        """The branch could not be sent: a 503 for it (RFC 3261 16.9)."""
        return self._synthesize(branch, 503)

    def cancel(self) -> ContextUpdate:
        """A CANCEL matched this context (RFC 3261 16.10): the branches to CANCEL now;
        the others are cancelled at their first provisional response."""
        self.cancelled = True
        return ContextUpdate(cancel=self._cancel_pending(), completed=self._is_complete())

    def best_response(self) -> Response:
        """The response 16.7 item 6 chooses, with 16.7 item 7's challenges, not yet sent."""
        number = self.picked_branch()
        if number is None:
            return make_response(self.request, 408, to_tag=self.to_tag)
        best = self.branches[number].final
        assert best is not None
        candidates = [final for n in self._failed_branches() if (final := self.branches[n].final) is not None]
        if best.status == 503:
            # 16.7 item 6: a 503 would say this proxy cannot serve anything.
            best = best.copy()
            best.status, best.reason = 500, "Server Internal Error"
        if best.status in (401, 407):
            best = _aggregate_challenges(best, [r for r in candidates if r is not best and r.status in (401, 407)])
        return best

    def picked_branch(self) -> int | None:
        """The branch whose final response 16.7 item 6 chooses (Kamailio's "picked
        branch"; the first on a tie), None when no branch has a final >= 300."""
        numbers = self._failed_branches()
        if not numbers:
            return None
        return min(numbers, key=lambda n: _response_priority(self.branches[n].final))  # type: ignore[arg-type]

    def is_local(self, branch: int) -> bool:
        """Whether the branch's final was synthesized here (a timeout, a transport failure)."""
        return self.branches[branch].local

    def _failed_branches(self) -> list[int]:
        """Branches with a final >= 300, in the order the finals came."""
        return [n for n in self._order if (final := self.branches[n].final) is not None and final.status >= 300]

    def finish(self) -> Response:
        """The final response to send upstream now (16.7 items 6 and 7); no branch after."""
        if self.final_sent is not None:
            raise BranchRefused("a final response was already sent")
        best = self.best_response()
        self.final_sent = best
        return best

    def _synthesize(self, branch: int, status: int) -> ContextUpdate:
        state = self.branches[branch]
        if state.state is BranchState.COMPLETED:
            return ContextUpdate()
        self._complete(branch, make_response(self.request, status, to_tag=self.to_tag))
        state.cancel_pending = False
        state.local = True
        return ContextUpdate(completed=self._is_complete())

    def _complete(self, branch: int, final: Response) -> None:
        state = self.branches[branch]
        state.state = BranchState.COMPLETED
        state.final = final
        state.cancel_pending = False
        self._order.append(branch)

    def _cancel_pending(self) -> list[int]:
        """Mark every pending branch cancelled; return those that may be cancelled now (9.1)."""
        if not self.is_invite:
            return []  # only INVITE client transactions are cancelled (9.1)
        now = []
        for number, branch in enumerate(self.branches):
            if branch.cancelled or branch.state is BranchState.COMPLETED:
                continue
            if branch.state is BranchState.PROCEEDING:
                branch.cancelled = True
                now.append(number)
            else:
                branch.cancel_pending = True
        return now

    def _is_complete(self) -> bool:
        return self.final_sent is None and bool(self.branches) and not self.pending


def _response_priority(response: Response) -> int:
    """Lower is better (16.7 item 6, Kamailio's t_pick_branch priorities)."""
    status = response.status
    status_class, rest = divmod(status, 100)
    if status_class == 6:
        return 1000 + rest
    if status_class == 4:
        return 4000 + (PREFERRED_4XX.index(status) if status in PREFERRED_4XX else 100 + rest)
    if status_class in (3, 5):
        return status_class * 1000 + rest
    return 10000 + status


def _aggregate_challenges(chosen: Response, others: list[Response]) -> Response:
    """16.7 item 7: every other 401/407's WWW-/Proxy-Authenticate values, unmodified,
    once each (a trunk that challenged two branches alike is not asked twice), before
    Content-Length, which stays last."""
    result = chosen.copy()
    content_length = result.headers.remove_first("Content-Length")
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        present = {_challenge_key(value) for value in result.headers.get_all(name)}
        for other in others:
            for value in other.headers.get_all(name):
                key = _challenge_key(value)
                if key not in present:
                    present.add(key)
                    result.headers.add(name, value)
    if content_length is not None:
        result.headers.add("Content-Length", content_length)
    return result


def _challenge_key(value: str) -> str:
    """A challenge compared for identity: its text with each run of SP/HTAB as one SP."""
    return " ".join(split_lws(value))


def response_for_upstream(response: Response, is_our_via: Callable[[Via], bool] | None = None,
                          request: Request | None = None) -> Response | None:
    """A copy of ``response`` without its top Via (RFC 3261 16.7 item 3), or None when it
    must not be forwarded: no Via left, a top Via that ``is_our_via`` refuses, or a Via
    that does not parse (18.1.2: dropped, nobody to answer). ``request``, the request as
    received: a next Via line that is its top Via line word for word is not parsed again."""
    try:
        top = response.top_via
        if top is None or (is_our_via is not None and not is_our_via(top)):
            return None
        upstream = response.copy()
        first_line = upstream.headers.remove_first("Via") or ""
        if "," in first_line:  # more than one via-parm on the line (a comma can only separate them)
            values = split_list(first_line, "Via")
            if len(values) > 1:
                upstream.headers.prepend("Via", ", ".join(values[1:]))
        next_via = top_via_parsed_in(upstream, request)
        if next_via is None or _unroutable(next_via):
            return None
    except SIPParseError:
        return None
    return upstream


_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")


def _unroutable(via: Via) -> bool:
    """A Via that sends the response to a broadcast, multicast or unspecified address
    (RFC 4475 3.3.10); an explicit maddr is the sender's choice (RFC 3261 18.2.2)."""
    if via.maddr:
        return False
    return _unroutable_host(via.received or via.host)


@functools.lru_cache(maxsize=1024)
def _unroutable_host(host: str) -> bool:
    """A broadcast, multicast or unspecified address (remembered: the same few hosts
    answer every call)."""
    address = ip_address_of(bare_host(host))
    if address is None:
        return False  # a host name
    return address.is_multicast or address.is_unspecified or address == _BROADCAST



class CancelDisposition(enum.Enum):
    """What to do with a CANCEL (RFC 3261 16.10)."""

    CANCEL_BRANCHES = "cancel branches"  # answer 200, ResponseContext.cancel()
    ANSWER_ONLY = "answer only"  # answer 200: the final response is already out
    FORWARD_STATELESSLY = "forward statelessly"  # no context: 16.10's last paragraph


def cancel_disposition(context: ResponseContext | None) -> CancelDisposition:
    """RFC 3261 16.10 for a CANCEL whose INVITE matched ``context`` (None: no match)."""
    if context is None:
        return CancelDisposition.FORWARD_STATELESSLY
    if context.final_sent is not None:
        return CancelDisposition.ANSWER_ONLY
    return CancelDisposition.CANCEL_BRANCHES

