"""What the status page shows, as plain values: totals, bring-up progress, registrars,
the last hour, the proxy, and pages of accounts searched, filtered and sorted on the
server (a table of 50,000 accounts is never sent to a browser whole).

StatusTracker is a registrant observer and a sampler fed ``now``: it keeps only what
exists nowhere else (recent events, each registrar's last error and round-trip time,
a fixed-size ring of samples for the chart). Everything else is read from the records
when asked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable
from urllib.parse import urlencode

from txuac.admin.uac_rpc import record_struct
from txuac.registrant.record import RegistrationRecord, State
from txuac.registrant.service import RegistrationEvent

HISTORY_INTERVAL = 10.0  # seconds between two samples of the chart
HISTORY_SAMPLES = 360  # one hour of them
EVENTS_KEPT = 2000  # recent registration events, all accounts together
EVENTS_SHOWN = 20  # of one account, on its page
MAX_REGISTRARS = 1024  # registrars whose last error and RTT are kept (they come from the table)
REGISTRARS_SHOWN = 100  # rows of the registrar table, most failing first
RATE_WINDOW = 30.0  # seconds over which the bring-up rate is measured
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_SEARCH = 200  # characters of a search

STATES = tuple(state.value for state in State)
# Sort keys of the accounts table: name -> key of a record (``now`` for the time-dependent ones).
SORT_KEYS = ("l_uuid", "username", "domain", "registrar", "state", "last_error")
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


def registrar_of(record: RegistrationRecord) -> str:
    """The registrar an account's REGISTERs go to: its auth_proxy (a mandatory column)."""
    return record.auth_proxy or f"sip:{record.r_domain}"


@dataclass(frozen=True)
class AccountQuery:
    """One page of the accounts table: filter by state, search, sort and page."""

    state: str = ""  # "" for every state
    search: str = ""  # part of l_uuid, a user name or a domain, any case
    sort: str = "l_uuid"
    descending: bool = False
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def from_args(cls, args: dict[bytes, list[bytes]]) -> "AccountQuery":
        """The query of a request's arguments; unknown or bad values fall back to the defaults."""

        def text(name: str) -> str:
            values = args.get(name.encode("ascii")) or [b""]
            return values[0].decode("utf-8", "replace").strip()

        def number(name: str, default: int, high: int) -> int:
            try:
                return min(max(int(text(name)), 1), high)
            except ValueError:
                return default

        state = text("state")
        sort = text("sort")
        return cls(state=state if state in STATES else "", search=text("search")[:MAX_SEARCH],
                   sort=sort if sort in SORT_KEYS else "l_uuid", descending=text("order") == "desc",
                   page=number("page", 1, 10**9), page_size=number("size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE))

    def arguments(self, **changes) -> str:
        """This query (with ``changes``) as a URL query string, defaults left out."""
        query = replace(self, **changes)
        pairs = [("state", query.state), ("search", query.search),
                 ("sort", "" if query.sort == "l_uuid" else query.sort), ("order", "desc" if query.descending else ""),
                 ("page", "" if query.page == 1 else str(query.page)),
                 ("size", "" if query.page_size == DEFAULT_PAGE_SIZE else str(query.page_size))]
        return urlencode([(name, value) for name, value in pairs if value])


@dataclass(frozen=True)
class AccountPage:
    """The accounts of one page and how many matched in all."""

    query: AccountQuery
    matched: int
    records: list[RegistrationRecord]

    @property
    def pages(self) -> int:
        return max(1, -(-self.matched // self.query.page_size))


def _matches(record: RegistrationRecord, needle: str) -> bool:
    return (needle in record.l_uuid.lower() or needle in record.l_username.lower()
            or needle in record.r_username.lower() or needle in record.auth_username.lower()
            or needle in record.l_domain.lower() or needle in record.r_domain.lower())


def select_accounts(records: Iterable[RegistrationRecord], now: float, query: AccountQuery) -> AccountPage:
    """The page of ``records`` that ``query`` asks for."""
    if query.state:
        wanted = State(query.state)
        chosen = [record for record in records if record.state(now) is wanted]
    else:
        chosen = list(records)
    if query.search:
        needle = query.search.lower()
        chosen = [record for record in chosen if _matches(record, needle)]
    sort = query.sort
    if sort == "l_uuid":
        chosen.sort(key=lambda r: r.l_uuid, reverse=query.descending)
    elif sort == "username":
        chosen.sort(key=lambda r: (r.r_username, r.l_uuid), reverse=query.descending)
    elif sort == "domain":
        chosen.sort(key=lambda r: (r.r_domain, r.l_uuid), reverse=query.descending)
    elif sort == "registrar":
        chosen.sort(key=lambda r: (r.auth_proxy, r.l_uuid), reverse=query.descending)
    elif sort == "state":
        chosen.sort(key=lambda r: (r.state(now).value, r.l_uuid), reverse=query.descending)
    else:
        chosen.sort(key=lambda r: (r.last_failure or "", r.l_uuid), reverse=query.descending)
    start = (query.page - 1) * query.page_size
    return AccountPage(query, len(chosen), chosen[start:start + query.page_size])


def account_row(record: RegistrationRecord, now: float) -> dict:
    """A row of the accounts table."""
    return {"l_uuid": record.l_uuid, "username": record.r_username, "domain": record.r_domain,
            "registrar": registrar_of(record), "state": record.state(now).value,
            "expires_in": int(record.expires_at - now) if record.registered(now) and record.expires_at else None,
            "last_error": record.last_failure}


@dataclass(frozen=True)
class Sample:
    """One point of the chart."""

    at: float
    online: int
    failed: int
    online_transitions: int  # accounts that came online since the tracker started
    calls: int  # INVITEs answered finally by the proxy since start


class StatusTracker:
    """The status page's memory: recent events, per-registrar last error and round-trip
    time, and a ring of samples (``sample(now)`` every HISTORY_INTERVAL)."""

    def __init__(self, uac, samples: int = HISTORY_SAMPLES, events: int = EVENTS_KEPT):
        self.uac = uac
        self.events: deque[RegistrationEvent] = deque(maxlen=events)
        self.history: deque[Sample] = deque(maxlen=samples)
        self.online_transitions = 0
        self.last_rtt: dict[str, tuple[float, float]] = {}  # registrar -> (seconds, at)
        self.last_error: dict[str, tuple[str, float]] = {}  # registrar -> (reason, at)
        self.registrars_dropped = 0  # registrars not kept beyond MAX_REGISTRARS
        self.started_at: float | None = None
        if uac.registrant is not None:
            uac.registrant.add_observer(self.observe)

    def observe(self, event: RegistrationEvent) -> None:
        """A registrant observer."""
        self.events.append(event)
        if event.state is State.ONLINE and event.previous is not State.ONLINE:
            self.online_transitions += 1
        if event.latency is None and event.state is not State.FAILED:
            return
        record = self.uac.registrant.records.get(event.l_uuid)
        if record is None:
            return
        registrar = registrar_of(record)
        if registrar not in self.last_rtt and registrar not in self.last_error and \
                len(self.last_rtt) + len(self.last_error) >= MAX_REGISTRARS:
            self.registrars_dropped += 1
            return
        if event.latency is not None and event.status is not None:
            self.last_rtt[registrar] = (event.latency, event.at)
        if event.state is State.FAILED:
            self.last_error[registrar] = (event.reason, event.at)

    def sample(self, now: float) -> Sample:
        """Add a point to the chart's ring."""
        online = failed = 0
        registrant = self.uac.registrant
        if registrant is not None:
            for record in registrant.records.values():
                state = record.state(now)
                if state is State.ONLINE:
                    online += 1
                elif state is State.FAILED:
                    failed += 1
        point = Sample(now, online, failed, self.online_transitions, self._calls())
        if self.started_at is None:
            self.started_at = now
        self.history.append(point)
        return point

    def _calls(self) -> int:
        outcomes = self.uac.stack.server_outcomes
        return sum(count for (method, _), count in outcomes.items() if method == "INVITE")

    def _rate(self, now: float, counter: int, field: str) -> float:
        """Per second over the last RATE_WINDOW seconds (from the oldest sample in it)."""
        base = None
        for point in reversed(self.history):
            if now - point.at > RATE_WINDOW:
                break
            base = point
        if base is None or now - base.at <= 0:
            return 0.0
        return (counter - getattr(base, field)) / (now - base.at)

    def events_of(self, l_uuid: str, limit: int = EVENTS_SHOWN) -> list[dict]:
        """The last events of one account, newest first."""
        found = []
        for event in reversed(self.events):
            if event.l_uuid == l_uuid:
                found.append({"at": event.at, "state": event.state.value, "previous": event.previous.value,
                              "reason": event.reason, "status": event.status,
                              "latency_ms": None if event.latency is None else round(event.latency * 1000, 1)})
                if len(found) == limit:
                    break
        return found

    def summary(self, now: float) -> dict:
        """Totals, bring-up, registrars, chart and proxy, as the page and its JSON show them."""
        registrant = self.uac.registrant
        totals = dict.fromkeys(STATES, 0)
        registrars: dict[str, dict] = {}
        if registrant is not None:
            for record in registrant.records.values():  # one pass over every account
                state = record.state(now).value
                totals[state] += 1
                registrar = record.auth_proxy
                entry = registrars.get(registrar)
                if entry is None:
                    entry = registrars[registrar] = {"registrar": registrar, "accounts": 0, "online": 0,
                                                     "failed": 0, "disabled": 0, "sample": record.l_uuid}
                entry["accounts"] += 1
                if state in ("online", "failed", "disabled"):
                    entry[state] += 1
        expected = sum(count for state, count in totals.items() if state not in ("disabled", "unregistered"))
        online = totals["online"]
        rate = self._rate(now, self.online_transitions, "online_transitions")
        pending = totals["waiting"] + totals["registering"]  # on their way; failed ones wait for a retry
        rows = sorted(registrars.values(), key=lambda e: (-e["failed"], e["registrar"]))
        pinger = getattr(registrant, "pinger", None)
        for entry in rows[:REGISTRARS_SHOWN]:
            rtt = self.last_rtt.get(entry["registrar"])
            error = self.last_error.get(entry["registrar"])
            entry["last_rtt_ms"] = None if rtt is None else round(rtt[0] * 1000, 1)
            entry["last_error"] = None if error is None else error[0]
            entry["last_error_at"] = None if error is None else error[1]
            entry["ping"] = ping_state(pinger, entry["sample"])
        for entry in rows:
            del entry["sample"]
        return {
            "now": now,
            "registrant": registrant is not None,
            "active": bool(getattr(registrant, "active", False)),
            "accounts": sum(totals.values()),
            "totals": totals,
            "bring_up": {"online": online, "expected": expected, "failed": totals["failed"], "pending": pending,
                         "rate": round(rate, 1), "eta": round(pending / rate, 1) if pending and rate > 0 else None},
            "registrars": rows[:REGISTRARS_SHOWN],
            "registrars_not_shown": max(0, len(rows) - REGISTRARS_SHOWN),
            # The samples, then now.
            "history": [[point.at, point.online, point.failed] for point in self.history]
            + [[now, online, totals["failed"]]],
            "history_interval": HISTORY_INTERVAL,
            "proxy": self._proxy(now),
        }

    def _proxy(self, now: float) -> dict | None:
        runner = getattr(self.uac, "proxy", None)
        proxy = getattr(runner, "proxy", None)
        if proxy is None:
            return None
        responses = dict.fromkeys(RESPONSE_CLASSES, 0)
        for (method, status_class), count in self.uac.stack.server_outcomes.items():
            if method == "INVITE" and status_class in responses:
                responses[status_class] += count
        return {"calls_per_second": round(self._rate(now, self._calls(), "calls"), 2),
                "active_dialogs": len(proxy.dialogs), "script_failures": proxy.script_failures,
                "invite_responses": responses}

    def account(self, l_uuid: str, now: float) -> dict | None:
        """Every reg_info field of one account (secrets always masked), its registrar and events."""
        registrant = self.uac.registrant
        record = registrant.records.get(l_uuid) if registrant is not None else None
        if record is None:
            return None
        return {"record": record_struct(record, now, show_secrets=False,
                                        reg_contact_addr=registrant.settings.reg_contact_addr),
                "registrar": registrar_of(record),
                "events": self.events_of(l_uuid)}


def ping_state(pinger, l_uuid: str) -> str:
    """The OPTIONS ping state of the destination an account is pinged at, or "off"."""
    if pinger is None:
        return "off"
    destination = pinger.destination_of(l_uuid)
    if destination is None:
        return "off"
    return str(pinger.state(destination).value)

