"""The REGISTER exchange of one account, sans-IO: what to send and what a reply means.

Layout and reply rules follow Kamailio's uac_reg (K:uac_reg.c uac_reg_send,
uac_reg_tm_callback); where we differ on purpose it is said here and in
docs/differences.rst.
"""

from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass
from typing import Final

from txuac.errors import SIPParseError
from txuac.registrant.record import RegistrationRecord
from txuac.sip.fields import NameAddress
from txuac.sip.grammar import unquote
from txuac.sip.message import Request, Response, make_request
from txuac.sip.uri import SipURI

# Failures whose Retry-After we honour when it is longer than the retry interval
# (RFC 3261 21.4.18, 21.4.21, 21.5.4: 404, 480 and 5xx may carry one).
RETRY_AFTER_STATUSES: Final = frozenset({404, 480, 500, 503, 504})


def contact_uri(record: RegistrationRecord, default_contact_addr: str) -> str:
    """``sip:<contact_user or l_uuid>@<contact_addr>[;line=<l_uuid>]`` (Kamailio's layout),
    with ``;ob`` for an RFC 5626 outbound account (RFC 5626 4.2: route back over the flow)."""
    address = record.contact_addr or default_contact_addr
    if record.contact_user:
        uri = f"sip:{record.contact_user}@{address};line={record.l_uuid}"
    else:
        uri = f"sip:{record.l_uuid}@{address}"
    return uri + ";ob" if _outbound(record) else uri


def _outbound(record: RegistrationRecord) -> bool:
    """An RFC 5626 account: it asks for outbound and has its instance ID (reg-id needs one)."""
    return record.outbound and bool(record.instance_id)


def contact_header(record: RegistrationRecord, default_contact_addr: str) -> str:
    """The REGISTER's Contact; an outbound account adds ``reg-id`` and ``+sip.instance``
    (RFC 5626 4.2.1, RFC 5627 4.1: the instance ID is what GRUUs are made from)."""
    value = f"<{contact_uri(record, default_contact_addr)}>"
    if _outbound(record):
        value += f';reg-id={record.reg_id};+sip.instance="<{record.instance_id}>"'
    return value


def supported_header(record: RegistrationRecord) -> str | None:
    """``Supported`` of the REGISTER: outbound and path (RFC 5626 4.2.1, RFC 3327 5) and gruu
    (RFC 5627 4.1) for an outbound account; None for the others (Kamailio sends none)."""
    if _outbound(record):
        return "outbound, path, gruu"
    return None


def new_instance_id() -> str:
    """A fresh ``urn:uuid:`` instance ID (RFC 5626 4.1), made once per account and kept."""
    return f"urn:uuid:{uuid.uuid4()}"


def build_register(record: RegistrationRecord, default_contact_addr: str, expires: int,
                   user_agent: str | None = None, call_id: str | None = None, cseq: int = 10) -> Request:
    """REGISTER sip:r_domain with From = To = sip:r_username@r_domain, our Contact and Expires.

    Kamailio starts a new Call-ID at CSeq 10; the registrant passes the account's kept
    Call-ID with its next CSeq. The account's own User-Agent wins over ``user_agent`` (the
    service's); its extra headers follow. Each of ``stale_contacts`` (a cluster takeover)
    follows ours with expires=0. With ``from_username`` set, From names that user
    in r_domain while To stays the address of record: a third-party registration
    (RFC 3261 10.2: From is who is responsible for the registration, To the AOR).
    """
    headers = [("Contact", contact_header(record, default_contact_addr))]
    # RFC 3261 10.2.2: the bindings other nodes may have left are removed in the same REGISTER.
    headers.extend(("Contact", f"<{stale}>;expires=0") for stale in record.stale_contacts)
    headers.append(("Expires", str(expires)))
    supported = supported_header(record)
    if supported:
        headers.append(("Supported", supported))
    user_agent = record.user_agent or user_agent
    if user_agent:
        headers.append(("User-Agent", user_agent))
    headers.extend(record.extra_headers)
    from_ = f"sip:{record.from_username}@{record.r_domain}" if record.from_username else record.aor
    return make_request("REGISTER", f"sip:{record.r_domain}", from_, record.aor, call_id=call_id, cseq=cseq,
                        extra_headers=headers)


# Value classes with __init__ written out, as setup.py says of the compiled modules.
@dataclass(init=False, unsafe_hash=True)
class Learned:
    """What a 2xx to REGISTER teaches about the account's registration (empty: forget it).

    ``path`` and ``service_route`` are the entries of the Path (RFC 3327 5) and
    Service-Route (RFC 3608 6) headers; ``pub_gruu``/``temp_gruu`` come from our binding
    (RFC 5627 5.2); ``outbound`` is the registrar's ``Require: outbound`` (RFC 5626
    4.2.1), without which there is no flow and ``flow_timer`` stays None.
    """

    path: Final[tuple[str, ...]]
    service_route: Final[tuple[str, ...]]
    pub_gruu: Final[str | None]
    temp_gruu: Final[str | None]
    outbound: Final[bool]
    flow_timer: Final[int | None]

    def __init__(self, path: tuple[str, ...] = (), service_route: tuple[str, ...] = (),
                 pub_gruu: str | None = None, temp_gruu: str | None = None, outbound: bool = False,
                 flow_timer: int | None = None) -> None:
        self.path = path
        self.service_route = service_route
        self.pub_gruu = pub_gruu
        self.temp_gruu = temp_gruu
        self.outbound = outbound
        self.flow_timer = flow_timer


class OutcomeKind(enum.Enum):
    """What kind of final reply ended a REGISTER cycle."""

    ONLINE = "online"  # our binding listed, for ``granted`` seconds
    UNLISTED = "unlisted"  # a 2xx that does not list our binding (or grants it 0 s)
    UNREGISTERED = "unregistered"  # a 2xx to Expires 0: the binding is gone
    INTERVAL_TOO_BRIEF = "interval_too_brief"  # 423: ask again at once with ``expires``
    FAILED = "failed"  # ``reason``; ``retry_after`` when the server asked for a delay


@dataclass(init=False, unsafe_hash=True)
class Outcome:
    """What a final reply means for the account.

    ``reason`` of an ONLINE outcome says when our binding was recognised as the only
    binding of a rewritten Contact. ``learned``: what an online, unlisted or
    unregistered 2xx teaches (None otherwise).
    """

    kind: Final[OutcomeKind]
    granted: Final[int]
    expires: Final[int]
    reason: Final[str]
    retry_after: Final[int | None]
    learned: Final[Learned | None]

    def __init__(self, kind: OutcomeKind, granted: int = 0, expires: int = 0, reason: str = "",
                 retry_after: int | None = None, learned: Learned | None = None) -> None:
        self.kind = kind
        self.granted = granted
        self.expires = expires
        self.reason = reason
        self.retry_after = retry_after
        self.learned = learned


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
        return Outcome(OutcomeKind.INTERVAL_TOO_BRIEF, expires=expires, reason=f"423 {response.reason}")
    retry_after = None
    if status in RETRY_AFTER_STATUSES or status >= 500:
        try:
            header = response.retry_after
        except SIPParseError:
            header = None
        retry_after = header.seconds if header is not None else None
    return Outcome(OutcomeKind.FAILED, reason=f"{status} {response.reason}".strip(), retry_after=retry_after)


def _interpret_ok(record: RegistrationRecord, response: Response, requested_expires: int) -> Outcome:
    try:
        contacts = response.contacts
        header_expires = response.expires
    except SIPParseError as e:
        return Outcome(OutcomeKind.FAILED, reason=f"unparsable 200 OK: {e}")
    if requested_expires == 0:
        return Outcome(OutcomeKind.UNREGISTERED, reason="unregistered", learned=Learned())
    if not contacts:
        return Outcome(OutcomeKind.FAILED, reason="200 OK without Contact")
    binding, rule = our_binding(record, [c for c in contacts if isinstance(c, NameAddress)])
    if binding is None:
        return Outcome(OutcomeKind.UNLISTED, reason="200 OK does not list our contact", learned=Learned())
    try:
        granted = binding.expires
    except SIPParseError:
        granted = None
    if granted is None:
        granted = header_expires or 0  # RFC 3261 10.2.4: the Expires header when the binding has none
    if granted == 0:
        # Kamailio counts it online and due again: we ask again after the timer interval.
        return Outcome(OutcomeKind.UNLISTED, reason="the registrar granted 0 seconds", learned=Learned())
    reason = "the registrar rewrote our Contact: its only binding taken as ours" if rule == "only" else ""
    return Outcome(OutcomeKind.ONLINE, granted=granted, reason=reason, learned=_learned(record, response, binding))


def our_binding(record: RegistrationRecord, bindings: list[NameAddress]) -> tuple[NameAddress | None, str]:
    """Our binding among those a 2xx lists (RFC 3261 10.2.4: every binding of the AOR), and
    the rule that found it: "user" (the URI user is l_uuid, Kamailio's match), "line" (its
    ``line`` URI parameter is l_uuid), "instance" (its ``+sip.instance`` is ours, RFC 5626
    4.2.1), else "only": a registrar or SBC that rewrote our Contact (NAT) lists it as
    the only binding, unless that binding names another ``line`` or instance. Several
    bindings, none of them ours: (None, "").
    """
    uris = [(binding, _sip_uri(binding)) for binding in bindings]
    for binding, uri in uris:
        if uri is not None and uri.user == record.l_uuid:
            return binding, "user"
    for binding, uri in uris:
        if uri is not None and uri.params.get("line") == record.l_uuid:
            return binding, "line"
    instance = _our_instance(record)
    if instance:
        for binding, _ in uris:
            if _instance_of(binding) == instance:
                return binding, "instance"
    if len(uris) == 1:
        binding, uri = uris[0]
        if uri is not None and not _names_another(record, binding, uri, instance):
            return binding, "only"
    return None, ""


def _sip_uri(binding: NameAddress) -> SipURI | None:
    try:
        uri = binding.uri
    except SIPParseError:
        return None
    return uri if isinstance(uri, SipURI) else None


def _our_instance(record: RegistrationRecord) -> str:
    """Our instance ID as compared (case-insensitively: it is a URN, RFC 8141 3.1), or ""."""
    return record.instance_id.lower() if _outbound(record) else ""


def _instance_of(binding: NameAddress) -> str:
    """The ``+sip.instance`` of a binding without its quotes and angle brackets, or ""."""
    value = binding.params.get("+sip.instance")
    if not value:
        return ""
    value = unquote(value).strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.lower()


def _names_another(record: RegistrationRecord, binding: NameAddress, uri: SipURI, instance: str) -> bool:
    """A binding that says whose it is, and it is not ours: another line, another instance."""
    line = uri.params.get("line")
    if line is not None and line != record.l_uuid:
        return True
    other = _instance_of(binding)
    return bool(other) and other != instance


def _learned(record: RegistrationRecord, response: Response, binding: NameAddress) -> Learned:
    outbound = record.outbound and "outbound" in _tokens(response, "Require")
    flow_timer = None
    if outbound:  # RFC 5626 4.4.1: Flow-Timer only means something on an outbound flow
        value = (response.headers.get("Flow-Timer") or "").strip()
        flow_timer = int(value) if value.isdigit() and 0 < len(value) <= 10 else None
    return Learned(path=_route_entries(response, "Path"), service_route=_route_entries(response, "Service-Route"),
                   pub_gruu=_quoted_param(binding, "pub-gruu"), temp_gruu=_quoted_param(binding, "temp-gruu"),
                   outbound=outbound, flow_timer=flow_timer)


def _tokens(response: Response, name: str) -> list[str]:
    try:
        return [token.lower() for token in response.tokens(name)]
    except SIPParseError:
        return []


def _route_entries(response: Response, name: str) -> tuple[str, ...]:
    """Every entry of a Path or Service-Route header, as written; () when unparsable."""
    try:
        entries = response.path if name == "Path" else response.service_route
    except SIPParseError:
        return ()
    return tuple(str(entry) for entry in entries)


def _quoted_param(binding: NameAddress, name: str) -> str | None:
    value = binding.params.get(name)
    return unquote(value) if value else None


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
