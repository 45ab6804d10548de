"""The REGISTER exchange of one account, sans-IO: what to send and what a reply means.

Layout and reply rules follow Kamailio's uac_reg (K:uac_reg.c uac_reg_send,
uac_reg_tm_callback); where we differ on purpose it is said here and in
README.rst ("Differences from Kamailio").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from txuac.errors import SIPParseError
from txuac.registrant.record import RegistrationRecord
from txuac.sip.fields import NameAddress
from txuac.sip.message import Request, Response, make_request
from txuac.sip.uri import SipURI

# Failures whose Retry-After we honour when it is longer than the retry interval
# (RFC 3261 21.4.18, 21.4.21, 21.5.4: 404, 480 and 5xx may carry one).
RETRY_AFTER_STATUSES = frozenset({404, 480, 500, 503, 504})


def contact_uri(record: RegistrationRecord, default_contact_addr: str) -> str:
    """``sip:<contact_user or l_uuid>@<contact_addr>[;line=<l_uuid>]`` (Kamailio's layout)."""
    address = record.contact_addr or default_contact_addr
    if record.contact_user:
        return f"sip:{record.contact_user}@{address};line={record.l_uuid}"
    return f"sip:{record.l_uuid}@{address}"


def build_register(record: RegistrationRecord, default_contact_addr: str, expires: int,
                   user_agent: str | None = None, call_id: str | None = None, cseq: int = 10) -> Request:
    """REGISTER sip:r_domain with From = To = sip:r_username@r_domain, our Contact and Expires.

    Kamailio starts a new Call-ID at CSeq 10; the registrant passes the account's kept
    Call-ID with its next CSeq. The account's own User-Agent wins over ``user_agent`` (the
    service's); its extra headers follow. With ``from_username`` set, From names that user
    in r_domain while To stays the address of record: a third-party registration
    (RFC 3261 10.2: From is who is responsible for the registration, To the AOR).
    """
    headers = [("Contact", f"<{contact_uri(record, default_contact_addr)}>"), ("Expires", str(expires))]
    user_agent = record.user_agent or user_agent
    if user_agent:
        headers.append(("User-Agent", user_agent))
    headers.extend(record.extra_headers)
    from_ = f"sip:{record.from_username}@{record.r_domain}" if record.from_username else record.aor
    return make_request("REGISTER", f"sip:{record.r_domain}", from_, record.aor, call_id=call_id, cseq=cseq,
                        extra_headers=headers)


@dataclass(frozen=True)
class Outcome:
    """What a final reply means for the account.

    kind: "online" (our contact listed, ``granted`` seconds), "unlisted" (a 200
    that does not list our contact), "unregistered" (the binding is gone),
    "interval_too_brief" (423: ask again at once with ``expires``), or
    "failed" (``reason``; ``retry_after`` when the server asked for a delay).
    """

    kind: str
    granted: int = 0
    expires: int = 0
    reason: str = ""
    retry_after: int | None = None


def interpret(record: RegistrationRecord, response: Response, requested_expires: int) -> Outcome:
    status = response.status
    if 200 <= status < 300:
        return _interpret_ok(record, response, requested_expires)
    if status == 423:
        # RFC 3261 10.2.8: retry with at least Min-Expires. Kamailio waits for its next
        # tick; we ask again at once.
        try:
            minimum = response.min_expires
        except SIPParseError:
            minimum = None
        # Min-Expires when it asks for more (as Kamailio), else twice what we asked; a run
        # of 423s is bounded and its failure returns the account to the table's value.
        expires = minimum if minimum and minimum > requested_expires else max(requested_expires * 2, 1)
        return Outcome("interval_too_brief", expires=expires, reason=f"423 {response.reason}")
    retry_after = None
    if status in RETRY_AFTER_STATUSES or status >= 500:
        try:
            header = response.retry_after
        except SIPParseError:
            header = None
        retry_after = header.seconds if header is not None else None
    return Outcome("failed", reason=f"{status} {response.reason}".strip(), retry_after=retry_after)


def _interpret_ok(record: RegistrationRecord, response: Response, requested_expires: int) -> Outcome:
    try:
        contacts = response.contacts
        header_expires = response.expires
    except SIPParseError as e:
        return Outcome("failed", reason=f"unparsable 200 OK: {e}")
    if requested_expires == 0:
        return Outcome("unregistered", reason="unregistered")
    if not contacts:
        return Outcome("failed", reason="200 OK without Contact")
    for contact in contacts:
        if isinstance(contact, NameAddress) and _is_ours(record, contact):
            try:
                granted = contact.expires
            except SIPParseError:
                granted = None
            if granted is None:
                granted = header_expires or 0
            if granted == 0:
                # Kamailio counts it online and due again: we ask again after the timer interval.
                return Outcome("unlisted", reason="the registrar granted 0 seconds")
            return Outcome("online", granted=granted)
    return Outcome("unlisted", reason="200 OK does not list our contact")


def _is_ours(record: RegistrationRecord, contact: NameAddress) -> bool:
    """Kamailio's match: the contact's user is l_uuid, or its ``line`` parameter is (contact_user)."""
    try:
        uri = contact.uri
    except SIPParseError:
        return False
    if not isinstance(uri, SipURI):
        return False
    if uri.user == record.l_uuid:
        return True
    return bool(record.contact_user) and uri.params.get("line") == record.l_uuid


def refresh_at(sent_at: float, granted: int, timer_interval: int, rng: random.Random) -> float:
    """When to refresh a binding granted ``granted`` seconds at ``sent_at``.

    Kamailio refreshes between 3 and timer_interval+3 seconds before expiry, and
    lets the binding lapse when the grant is shorter than its timer. We refresh
    timer_interval+3 seconds early but never later than half-way, with up to 10%
    jitter so refreshes of accounts registered together spread out.
    """
    margin = min(granted / 2.0, timer_interval + 3.0)
    margin += rng.uniform(0, margin * 0.1)
    return sent_at + max(granted - margin, granted / 2.0 * 0.9)
