"""The status page of the admin listener: ``/status`` (HTML rendered on the server, read
with JavaScript off: forms and plain links for paging, sorting and filtering), an
account's page ``/status/account?l_uuid=...``, the small JSON endpoints the page's
script polls (``/status/api/summary``, ``/status/api/accounts``, ``/status/api/account``)
and its own script and style sheet (``/status/static/``, shipped in the package; no
CDN, nothing external).

Read-only: the page changes nothing itself. Its buttons call ``POST /RPC`` (the same
uac.* methods, the token in the Authorization header only).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from urllib.parse import quote

from txuac.admin.status_model import (
    SORT_KEYS,
    STATES,
    AccountPage,
    AccountQuery,
    StatusTracker,
    account_row,
    select_accounts,
)

HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
STATIC_FILES = {"status.js": b"text/javascript; charset=utf-8", "status.css": b"text/css; charset=utf-8"}
PAGE_SIZES = (25, 50, 100, 500)
# Only our own script, style and requests; no frames, no forms to elsewhere.
SECURITY_HEADERS = {
    b"Content-Security-Policy": b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"no-store",
}
SORT_TITLES = {"l_uuid": "l_uuid", "username": "User", "domain": "Domain", "registrar": "Registrar",
               "state": "State", "last_error": "Last error"}
ACTIONS = (("uac.reg_enable", "Enable"), ("uac.reg_disable", "Disable"), ("uac.reg_register", "Register now"),
           ("uac.reg_refresh", "Refresh from the store"), ("uac.reg_unregister", "Unregister"))


@dataclass
class Reply:
    """An answer of the status page: status, Content-Type and body."""

    status: int
    content_type: bytes
    body: bytes
    headers: dict[bytes, bytes] = field(default_factory=lambda: dict(SECURITY_HEADERS))


def _json(value) -> Reply:
    return Reply(200, JSON, json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _not_found(text: str) -> Reply:
    return Reply(404, b"text/plain; charset=utf-8", (text + "\n").encode("utf-8"))


def static_file(name: str) -> bytes:
    return resources.files("txuac.admin").joinpath("static", name).read_bytes()


class StatusPage:
    """Answers the GETs under ``/status`` from a StatusTracker."""

    def __init__(self, tracker: StatusTracker, clock):
        self.tracker = tracker
        self.clock = clock
        self._static = {name: static_file(name) for name in STATIC_FILES}

    @property
    def registrant(self):
        return self.tracker.uac.registrant

    def answer(self, segments: list[str], args: dict[bytes, list[bytes]]) -> Reply:
        """The reply to ``GET /status/<segments>?<args>``."""
        now = self.clock.seconds()
        path = "/".join(segment for segment in segments if segment)
        if path == "":
            return Reply(200, HTML, self.overview(now, AccountQuery.from_args(args)).encode("utf-8"))
        if path == "account":
            l_uuid = _arg(args, "l_uuid")
            account = self.tracker.account(l_uuid, now)
            if account is None:
                return _not_found(f"no account {l_uuid[:100]!r}")
            return Reply(200, HTML, self.account_page(account, now).encode("utf-8"))
        if path == "api/summary":
            return _json(self.tracker.summary(now))
        if path == "api/accounts":
            page = self.accounts(now, AccountQuery.from_args(args))
            return _json({"matched": page.matched, "page": page.query.page, "pages": page.pages,
                          "page_size": page.query.page_size, "query": page.query.arguments(),
                          "accounts": [account_row(record, now) for record in page.records]})
        if path == "api/account":
            account = self.tracker.account(_arg(args, "l_uuid"), now)
            return _not_found("no such account") if account is None else _json(account)
        if path.startswith("static/") and path[7:] in STATIC_FILES:
            name = path[7:]
            return Reply(200, STATIC_FILES[name], self._static[name], {b"X-Content-Type-Options": b"nosniff",
                                                                       b"Cache-Control": b"no-cache"})
        return _not_found("not found: the status page is /status")

    def accounts(self, now: float, query: AccountQuery) -> AccountPage:
        records = self.registrant.records.values() if self.registrant is not None else ()
        return select_accounts(records, now, query)

    # --- HTML ------------------------------------------------------------------
    def overview(self, now: float, query: AccountQuery) -> str:
        summary = self.tracker.summary(now)
        page = self.accounts(now, query)
        parts = [_head("txuac status", "overview"), _header(now),
                 "<main>", _registrations(summary), _chart_section(summary), _registrars(summary)]
        if summary["proxy"] is not None:
            parts.append(_proxy(summary["proxy"]))
        parts += [_accounts_section(page, now), "</main>", "</body></html>"]
        return "\n".join(parts)

    def account_page(self, account: dict, now: float) -> str:
        record = account["record"]
        l_uuid = record["l_uuid"]
        buttons = "".join(f'<button type="button" data-method="{method}">{label}</button>'
                          for method, label in ACTIONS)
        fields = "".join(f'<tr><th scope="row">{escape(name)}</th><td data-field="{escape(name)}">'
                         f"{escape(_shown(value))}</td></tr>" for name, value in record.items())
        return "\n".join([
            _head(f"txuac account {l_uuid}", "account"),
            _header(now),
            "<main>",
            f'<p><a href="/status">All accounts</a></p><h2>Account <code>{escape(l_uuid)}</code></h2>',
            f'<section aria-labelledby="h-actions" id="actions" data-l-uuid="{escape(l_uuid)}">'
            '<h3 id="h-actions">Actions</h3>'
            f"<p>{buttons}</p>"
            "<noscript><p>The actions need JavaScript (or use txuac-ctl).</p></noscript>"
            '<form id="token-form" hidden><p>This server needs its RPC token for changes. '
            "It is kept for this tab only and sent only in the Authorization header.</p>"
            '<label for="token">RPC token</label> <input type="password" id="token" name="token" '
            'autocomplete="off" required> <button type="submit">Use the token</button></form>'
            '<p id="action-result" role="status" aria-live="polite"></p></section>',
            '<section aria-labelledby="h-fields"><h3 id="h-fields">Fields</h3>'
            f'<table id="fields"><caption>uac.reg_info fields (secrets masked)</caption>'
            f'<tbody>{fields}<tr><th scope="row">registrar</th><td>{escape(account["registrar"])}</td></tr>'
            "</tbody></table></section>",
            '<section aria-labelledby="h-events"><h3 id="h-events">Recent events</h3>',
            _events_table(account["events"]),
            "</section></main></body></html>",
        ])


def _arg(args: dict[bytes, list[bytes]], name: str) -> str:
    values = args.get(name.encode("ascii")) or [b""]
    return values[0].decode("utf-8", "replace")


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(value)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at)) + " UTC"


def _head(title: str, page: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title>"
            '<link rel="stylesheet" href="/status/static/status.css">'
            '<script src="/status/static/status.js" defer></script>'
            f'</head><body data-page="{page}">')


def _header(now: float) -> str:
    return ('<header><h1><a href="/status">txuac status</a></h1>'
            f'<p>As of <time id="updated">{_clock(now)}</time> '
            '<span id="live" aria-live="off"></span> · <a href="/metrics">metrics</a></p></header>')


def _registrations(summary: dict) -> str:
    bring_up = summary["bring_up"]
    rows = "".join(f'<tr><th scope="row"><a href="/status?state={state}">{state}</a></th>'
                   f'<td data-total="{state}">{count}</td></tr>' for state, count in summary["totals"].items())
    if not summary["registrant"]:
        note = "<p>Registration is not enabled: set [uac] reg_db_url.</p>"
    elif not summary["active"]:
        note = "<p><strong>Registrations are switched off (uac.reg_active 0).</strong></p>"
    else:
        note = ""
    return ('<section aria-labelledby="h-registrations"><h2 id="h-registrations">Registrations</h2>' + note
            + f'<p id="bring-up">{escape(bring_up_text(bring_up))}</p>'
            f'<progress id="bring-up-bar" max="{max(bring_up["expected"], 1)}" value="{bring_up["online"]}" '
            'aria-labelledby="bring-up"></progress>'
            '<table id="totals"><caption>Accounts by state</caption><thead><tr><th scope="col">State</th>'
            f'<th scope="col">Accounts</th></tr></thead><tbody>{rows}</tbody>'
            f'<tfoot><tr><th scope="row">all</th><td data-total="all">{summary["accounts"]}</td></tr></tfoot>'
            "</table></section>")


def bring_up_text(bring_up: dict) -> str:
    """``990 of 1000 online (8 failed, 120.5/s, about 1 s to go)``."""
    text = f"{bring_up['online']} of {bring_up['expected']} online"
    extra = [f"{bring_up['failed']} failed"] if bring_up["failed"] else []
    if bring_up["rate"]:
        extra.append(f"{bring_up['rate']:g}/s")
    if bring_up["eta"] is not None:
        extra.append(f"about {bring_up['eta']:.0f} s to go")
    return text + (f" ({', '.join(extra)})" if extra else "")


CHART_WIDTH, CHART_HEIGHT = 600, 160


def chart_svg(history: list, interval: float) -> str:
    """The last hour as an inline SVG: online (solid) and failed (dashed) accounts."""
    span = 360 * interval
    if history:
        end = history[-1][0]
        top = max(1, max(max(point[1], point[2]) for point in history))
    else:
        end, top = 0.0, 1

    def line(column: int) -> str:
        return " ".join(f"{CHART_WIDTH - (end - point[0]) / span * CHART_WIDTH:.1f},"
                        f"{CHART_HEIGHT - point[column] / top * (CHART_HEIGHT - 10):.1f}" for point in history)

    latest = f"now {history[-1][1]} online, {history[-1][2]} failed" if history else "no samples yet"
    return (f'<svg id="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
            f'aria-label="Online and failed accounts over the last hour: {latest}">'
            f'<text x="2" y="12" class="axis">{top}</text><text x="2" y="{CHART_HEIGHT - 2}" class="axis">0</text>'
            f'<polyline class="online" points="{line(1)}"/><polyline class="failed" points="{line(2)}"/></svg>')


def _chart_section(summary: dict) -> str:
    return ('<section aria-labelledby="h-chart"><h2 id="h-chart">Last hour</h2><figure>'
            + chart_svg(summary["history"], summary["history_interval"])
            + '<figcaption><span class="key online">online</span> <span class="key failed">failed</span>, '
            f'one point every {summary["history_interval"]:g} s</figcaption></figure></section>')


def _registrars(summary: dict) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(entry["registrar"])}</th><td>{entry["accounts"]}</td><td>{entry["online"]}</td>'
        f'<td>{entry["failed"]}</td><td>{escape(entry["last_error"] or "")}</td>'
        f'<td>{"" if entry["last_rtt_ms"] is None else entry["last_rtt_ms"]}</td><td>{entry["ping"]}</td></tr>'
        for entry in summary["registrars"])
    more = (f'<p>and {summary["registrars_not_shown"]} more registrars</p>'
            if summary["registrars_not_shown"] else "")
    return ('<section aria-labelledby="h-registrars"><h2 id="h-registrars">Registrars</h2>'
            '<table id="registrars"><caption>Registrars and auth proxies, most failing first</caption><thead><tr>'
            + "".join(f'<th scope="col">{title}</th>' for title in
                      ("Registrar", "Accounts", "Online", "Failed", "Last error", "Last RTT (ms)", "Ping"))
            + f"</tr></thead><tbody>{rows}</tbody></table>{more}</section>")


def _proxy(proxy: dict) -> str:
    responses = "".join(f'<tr><th scope="row">{name}</th><td data-proxy="{name}">{count}</td></tr>'
                        for name, count in proxy["invite_responses"].items())
    return ('<section aria-labelledby="h-proxy" id="proxy"><h2 id="h-proxy">Proxy</h2>'
            f'<p>Calls: <span data-proxy="calls_per_second">{proxy["calls_per_second"]}</span>/s; '
            f'active dialogs: <span data-proxy="active_dialogs">{proxy["active_dialogs"]}</span>; '
            f'script failures: <span data-proxy="script_failures">{proxy["script_failures"]}</span></p>'
            '<table><caption>Final responses to INVITEs by class</caption><thead><tr><th scope="col">Class</th>'
            f'<th scope="col">Responses</th></tr></thead><tbody>{responses}</tbody></table></section>')


def _accounts_section(page: AccountPage, now: float) -> str:
    query = page.query
    states = '<option value="">any</option>' + "".join(
        f'<option{" selected" if state == query.state else ""}>{state}</option>' for state in STATES)
    sizes = "".join(f'<option{" selected" if size == query.page_size else ""}>{size}</option>' for size in PAGE_SIZES)
    form = ('<form id="account-filter" method="get" action="/status" role="search">'
            f'<label for="search">Search l_uuid, user or domain</label> '
            f'<input type="search" id="search" name="search" value="{escape(query.search)}" maxlength="200"> '
            f'<label for="state">State</label> <select id="state" name="state">{states}</select> '
            f'<label for="size">Per page</label> <select id="size" name="size">{sizes}</select> '
            f'<input type="hidden" name="sort" value="{query.sort}">'
            f'<input type="hidden" name="order" value="{"desc" if query.descending else "asc"}">'
            '<button type="submit">Show</button></form>')
    headers = "".join(_sort_header(query, key) for key in SORT_KEYS[:5]) + '<th scope="col">Expires in (s)</th>' \
        + _sort_header(query, "last_error")
    rows = "".join(_account_row_html(account_row(record, now)) for record in page.records)
    return ('<section aria-labelledby="h-accounts"><h2 id="h-accounts">Accounts</h2>' + form
            + f'<p id="accounts-count" aria-live="polite">{page_text(page.matched, query.page, page.pages)}</p>'
            f'<table id="accounts" data-query="{escape(query.arguments())}"><caption>Accounts</caption>'
            f"<thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table>"
            + _pager(page) + "</section>")


def page_text(matched: int, page: int, pages: int) -> str:
    return f"{matched} account{'' if matched == 1 else 's'} match; page {page} of {pages}"


def _sort_header(query: AccountQuery, key: str) -> str:
    current = query.sort == key
    descending = current and not query.descending
    sort = ("descending" if query.descending else "ascending") if current else "none"
    arrow = (" ▼" if query.descending else " ▲") if current else ""
    href = "/status?" + query.arguments(sort=key, descending=descending, page=1)
    return (f'<th scope="col" aria-sort="{sort}"><a href="{escape(href)}" data-sort="{key}">'
            f"{SORT_TITLES[key]}{arrow}</a></th>")


def _account_row_html(row: dict) -> str:
    href = "/status/account?l_uuid=" + quote(row["l_uuid"], safe="")
    expires = "" if row["expires_in"] is None else str(row["expires_in"])
    return (f'<tr><th scope="row"><a href="{escape(href)}">{escape(row["l_uuid"])}</a></th>'
            f'<td>{escape(row["username"])}</td><td>{escape(row["domain"])}</td><td>{escape(row["registrar"])}</td>'
            f'<td class="state-{row["state"]}">{row["state"]}</td><td>{expires}</td>'
            f'<td>{escape(row["last_error"] or "")}</td></tr>')


def _pager(page: AccountPage) -> str:
    query = page.query
    links = []
    if query.page > 1:
        links.append(f'<a rel="prev" href="/status?{escape(query.arguments(page=query.page - 1))}">Previous page</a>')
    if query.page < page.pages:
        links.append(f'<a rel="next" href="/status?{escape(query.arguments(page=query.page + 1))}">Next page</a>')
    return f'<nav id="pager" aria-label="Pages of accounts">{" ".join(links)}</nav>'


def _events_table(events: list[dict]) -> str:
    rows = "".join(
        f'<tr><td>{_clock(event["at"])}</td><td>{event["previous"]} → {event["state"]}</td>'
        f'<td>{escape(event["reason"])}</td><td>{"" if event["status"] is None else event["status"]}</td>'
        f'<td>{"" if event["latency_ms"] is None else event["latency_ms"]}</td></tr>' for event in events)
    return ('<table id="events"><caption>Newest first</caption><thead><tr>'
            + "".join(f'<th scope="col">{title}</th>' for title in ("Time", "State", "Reason", "Status", "RTT (ms)"))
            + f"</tr></thead><tbody>{rows}</tbody></table>")
