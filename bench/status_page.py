"""The status page at N accounts (default 50,000), without a network: N records built
from uacreg rows in memory (a mix of states: online, failed with a reason, disabled,
waiting, over 20 registrars), then the page's work timed per request:

* ``/status/api/accounts`` for several queries (no filter; sorted by state, descending;
  filtered to failed; a search; a search with a filter and a sort; a late page);
* ``/status/api/summary`` (totals, registrars, bring-up, the chart);
* ``/status`` (the whole HTML page, rendered on the server: summary and one page of rows).

Each is the median of ``--repeat`` runs, in milliseconds, with the JSON or HTML size.
Target: every request under 100 ms at 50,000 accounts on one core.

Usage (from the repository root):
    python bench/status_page.py [N=50000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.accounts import uacreg_rows  # noqa: E402
from txuac.admin.status_model import StatusTracker  # noqa: E402
from txuac.admin.status_page import StatusPage  # noqa: E402
from txuac.registrant.record import Flag, record_from_row  # noqa: E402

NOW = 1_000_000.0
TARGET_MS = 100.0
QUERIES = {
    "accounts, first page": "",
    "accounts, sorted by state desc": "sort=state&order=desc",
    "accounts, failed only": "state=failed",
    "accounts, search 'acct0421'": "search=acct0421",
    "accounts, failed + search + sort": "state=failed&search=acct01&sort=last_error&order=desc",
    "accounts, page 900 of 1000": "page=900",
}


class Clock:
    def seconds(self) -> float:
        return NOW


class Registrant:
    def __init__(self, records):
        self.records = {record.l_uuid: record for record in records}
        self.active = True
        self.pinger = None

    def add_observer(self, observer):
        pass


class Stack:
    server_outcomes: dict = {}


class UAC:
    def __init__(self, records):
        self.registrant = Registrant(records)
        self.stack = Stack()
        self.proxy = None


def build_records(count: int) -> list:
    records = []
    for registrar in range(20):
        share = count // 20 + (1 if registrar < count % 20 else 0)
        rows = uacreg_rows(share, f"sip:reg{registrar}.example.com", start=len(records))
        records += [record_from_row(row, NOW - 600) for row in rows]
    for number, record in enumerate(records):
        kind = number % 100
        if kind < 90:
            record.flags = Flag.ONLINE
            record.expires_at = NOW + 300 + number % 300
        elif kind < 96:
            record.last_failure = "403 Forbidden" if kind % 2 else "no answer (timeout)"
        elif kind < 98:
            record.flags = Flag.DISABLED
    return records


def arguments(query: str) -> dict[bytes, list[bytes]]:
    pairs = [pair.split("=", 1) for pair in query.split("&") if pair]
    return {name.encode(): [value.encode()] for name, value in pairs}


def timed(function, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = len(function())
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", nargs="?", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=9)
    options = parser.parse_args()
    start = time.perf_counter()
    records = build_records(options.accounts)
    print(f"{options.accounts:,} records built in {time.perf_counter() - start:.1f} s")
    tracker = StatusTracker(UAC(records))
    for second in range(0, 3600, 10):
        tracker.sample(NOW - 3600 + second)
    page = StatusPage(tracker, Clock())
    rows = [(title, ["api", "accounts"], arguments(query)) for title, query in QUERIES.items()]
    rows += [("summary (/status/api/summary)", ["api", "summary"], {}), ("whole HTML page (/status)", [], {})]
    worst = 0.0
    print(f"{'request':42} {'median ms':>10} {'bytes':>9}")
    for title, segments, args in rows:
        milliseconds, size = timed(lambda: page.answer(segments, args).body, options.repeat)
        worst = max(worst, milliseconds)
        print(f"{title:42} {milliseconds:10.1f} {size:9,}")
    verdict = "met" if worst <= TARGET_MS else "NOT met"
    print(f"slowest {worst:.1f} ms; target {TARGET_MS:g} ms per request at 50,000 accounts: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
