"""What a UAS core decides about incoming requests, as plain functions (RFC 3261 8.2, 9.2,
17.2.1, 18.2): CANCEL matching, the automatic 100 Trying, the default answer to a method
nobody handles and the answer to a malformed request. The stack carries the decisions out.
"""

from __future__ import annotations

import enum

from txuac.errors import SIPParseError
from txuac.sip.address import Address
from txuac.sip.message import Request, Response, make_response
from txuac.sip.tokens import token_hex
from txuac.sip.transaction import ServerTransaction, server_key
from txuac.sip.via import stamp_received


class CancelMatch(enum.Enum):
    """What a CANCEL found (RFC 3261 9.2)."""

    NO_TRANSACTION = "no transaction"  # 481 (unless a proxy keeps the CANCEL, 16.10)
    ANSWERED = "answered"  # the INVITE has its final response: only the CANCEL's 200
    PENDING = "pending"  # 200 to the CANCEL, and the INVITE is to be ended (487 or the proxy)


def invite_key_for_cancel(cancel: Request) -> tuple:
    """The server key of the INVITE a CANCEL refers to (RFC 3261 9.2: same top Via,
    Request-URI, Call-ID, From and To tags and CSeq number, the method INVITE)."""
    invite = cancel.copy()
    invite.method = "INVITE"
    cseq = cancel.cseq
    if cseq is not None:
        invite.headers.set("CSeq", f"{cseq.number} INVITE")
    return server_key(invite)


def match_cancel(invite: ServerTransaction | None) -> CancelMatch:
    """How to answer a CANCEL whose INVITE server transaction is ``invite`` (None: none found)."""
    if invite is None or invite.terminated:
        return CancelMatch.NO_TRANSACTION
    if not invite.answered:
        return CancelMatch.PENDING
    return CancelMatch.ANSWERED


def needs_automatic_trying(transaction: ServerTransaction, wanted: bool) -> bool:
    """RFC 3261 17.2.1: an INVITE gets a 100 unless the TU answered it (within 200 ms: a TU
    that did not answer at once is presumed slower) or turned it off (``wanted`` False)."""
    return (wanted and transaction.is_invite and transaction.last_status is None
            and not transaction.terminated)


def default_answer(method: str, allowed: list[str], known: frozenset[str]) -> tuple[int, list[tuple[str, str]]] | None:
    """The answer to a request no handler takes: None for an ACK (nothing answers it), 200
    with our capabilities for OPTIONS (11.2), 405 with Allow for a method we know (8.2.1),
    501 for one we do not."""
    if method == "ACK":
        return None
    allow = ("Allow", ", ".join(allowed))
    if method == "OPTIONS":
        return 200, [allow, ("Accept", "application/sdp"), ("Supported", "")]
    if method in known:
        return 405, [allow]
    return 501, []


def readable_to_tag(request: Request) -> str | None:
    """A fresh To tag for a response to a malformed request, unless its To cannot be read
    or has a tag already."""
    try:
        to = request.to
    except SIPParseError:
        return None
    return token_hex(8) if to is not None and to.tag is None else None


def malformed_answer(request: Request | None, error: SIPParseError, source: Address,
                     server_header: str) -> Response | None:
    """The response to a request that failed parsing or validation: the parser's status,
    or None when there is none to send: no request was parsed (no Via to answer to,
    18.2.1), an ACK (never answered) or no top Via. Stamps ``received`` (and ``rport``) on
    the request's Via (18.2.2 needs them here too); may raise SIPParseError when a
    header the response copies cannot be read."""
    if request is None or request.method == "ACK" or request.top_via is None:
        return None
    stamp_received(request, source)
    return make_response(request, error.status, error.reason_phrase, to_tag=readable_to_tag(request),
                         extra_headers=[("Server", server_header)])
