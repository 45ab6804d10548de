// txuac status page: live updates by polling the page's JSON endpoints, and the account
// actions through POST /RPC. The page works without this script (read-only).
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "txuac-rpc-token";  // sessionStorage: this tab only, never in a URL

function element(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function clock(at) {
  return new Date(at * 1000).toISOString().substring(11, 19) + " UTC";
}

async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function setLive(text) {
  const live = document.getElementById("live");
  if (live) live.textContent = text;
}

// --- the overview -----------------------------------------------------------------
function bringUpText(b) {
  const extra = b.failed ? [b.failed + " failed"] : [];
  if (b.rate) extra.push(b.rate + "/s");
  if (b.eta !== null) extra.push("about " + Math.round(b.eta) + " s to go");
  return b.online + " of " + b.expected + " online" + (extra.length ? " (" + extra.join(", ") + ")" : "");
}

function drawChart(history, interval) {
  const svg = document.getElementById("chart");
  if (!svg || !history.length) return;
  const width = 600, height = 160, span = 360 * interval, end = history[history.length - 1][0];
  let top = 1;
  for (const p of history) top = Math.max(top, p[1], p[2]);
  const points = (column) => history.map((p) =>
    (width - (end - p[0]) / span * width).toFixed(1) + "," + (height - p[column] / top * (height - 10)).toFixed(1)).join(" ");
  svg.querySelector("polyline.online").setAttribute("points", points(1));
  svg.querySelector("polyline.failed").setAttribute("points", points(2));
  svg.querySelector("text.axis").textContent = String(top);
  const last = history[history.length - 1];
  svg.setAttribute("aria-label", "Online and failed accounts over the last hour: now " + last[1] +
                   " online, " + last[2] + " failed");
}

function showSummary(s) {
  document.getElementById("updated").textContent = clock(s.now);
  for (const [state, count] of Object.entries(s.totals)) {
    const cell = document.querySelector('[data-total="' + state + '"]');
    if (cell) cell.textContent = count;
  }
  document.querySelector('[data-total="all"]').textContent = s.accounts;
  document.getElementById("bring-up").textContent = bringUpText(s.bring_up);
  const bar = document.getElementById("bring-up-bar");
  bar.max = Math.max(s.bring_up.expected, 1);
  bar.value = s.bring_up.online;
  drawChart(s.history, s.history_interval);
  const body = document.querySelector("#registrars tbody");
  body.replaceChildren(...s.registrars.map((r) => {
    const row = element("tr");
    row.append(element("th", r.registrar, {scope: "row"}), element("td", r.accounts), element("td", r.online),
               element("td", r.failed), element("td", r.last_error || ""),
               element("td", r.last_rtt_ms === null ? "" : r.last_rtt_ms), element("td", r.ping));
    return row;
  }));
  if (s.proxy) {
    for (const name of ["calls_per_second", "active_dialogs", "script_failures"]) {
      const cell = document.querySelector('[data-proxy="' + name + '"]');
      if (cell) cell.textContent = s.proxy[name];
    }
    for (const [name, count] of Object.entries(s.proxy.invite_responses)) {
      const cell = document.querySelector('[data-proxy="' + name + '"]');
      if (cell) cell.textContent = count;
    }
  }
}

const SORT_KEYS = ["l_uuid", "username", "domain", "registrar", "state", "last_error"];

function queryHref(params, changes) {
  const next = new URLSearchParams(params);
  for (const [name, value] of Object.entries(changes)) {
    if (value === "" || value === null) next.delete(name); else next.set(name, value);
  }
  const text = next.toString();
  return "/status" + (text ? "?" + text : "");
}

function showAccounts(data) {
  const table = document.getElementById("accounts");
  table.dataset.query = data.query;
  const params = new URLSearchParams(data.query);
  document.getElementById("accounts-count").textContent =
    data.matched + " account" + (data.matched === 1 ? "" : "s") + " match; page " + data.page + " of " + data.pages;
  table.querySelector("tbody").replaceChildren(...data.accounts.map((a) => {
    const row = element("tr");
    const head = element("th", null, {scope: "row"});
    head.append(element("a", a.l_uuid, {href: "/status/account?l_uuid=" + encodeURIComponent(a.l_uuid)}));
    row.append(head, element("td", a.username), element("td", a.domain), element("td", a.registrar),
               element("td", a.state, {class: "state-" + a.state}),
               element("td", a.expires_in === null ? "" : a.expires_in), element("td", a.last_error || ""));
    return row;
  }));
  const sort = params.get("sort") || "l_uuid", descending = params.get("order") === "desc";
  for (const link of table.querySelectorAll("thead a[data-sort]")) {
    const key = link.dataset.sort, current = key === sort;
    link.href = queryHref(params, {sort: key === "l_uuid" ? "" : key,
                                   order: current && !descending ? "desc" : "", page: ""});
    link.parentElement.setAttribute("aria-sort", current ? (descending ? "descending" : "ascending") : "none");
    link.textContent = link.textContent.replace(/ [▲▼]$/, "") + (current ? (descending ? " ▼" : " ▲") : "");
  }
  const pager = document.getElementById("pager");
  const links = [];
  if (data.page > 1) links.push(element("a", "Previous page", {rel: "prev", href: queryHref(params, {page: data.page - 1 > 1 ? data.page - 1 : ""})}));
  if (data.page < data.pages) links.push(element("a", "Next page", {rel: "next", href: queryHref(params, {page: data.page + 1})}));
  pager.replaceChildren(...links);
}

async function loadAccounts(query, push) {
  const data = await getJSON("/status/api/accounts?" + query);
  showAccounts(data);
  if (push) history.pushState(null, "", "/status" + (data.query ? "?" + data.query : ""));
}

function formQuery(form) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (value !== "" && !(name === "order" && value === "asc") && !(name === "sort" && value === "l_uuid") &&
        !(name === "size" && value === "50")) params.set(name, value);
  }
  return params.toString();
}

function startOverview() {
  const form = document.getElementById("account-filter");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams(formQuery(form));
    const current = new URLSearchParams(document.getElementById("accounts").dataset.query);
    if (current.get("sort")) params.set("sort", current.get("sort"));
    if (current.get("order")) params.set("order", current.get("order"));
    loadAccounts(params.toString(), true).catch((e) => setLive("update failed: " + e.message));
  });
  document.getElementById("accounts").parentElement.addEventListener("click", (event) => {
    const link = event.target.closest("a");
    if (!link || !(link.closest("thead") || link.closest("#pager"))) return;
    event.preventDefault();
    loadAccounts(new URL(link.href).search.substring(1), true).catch((e) => setLive("update failed: " + e.message));
  });
  for (const link of document.querySelectorAll("#totals a")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      document.getElementById("state").value = new URL(link.href).searchParams.get("state");
      form.requestSubmit();
    });
  }
  window.addEventListener("popstate", () => loadAccounts(location.search.substring(1), false));
  const tick = async () => {
    try {
      showSummary(await getJSON("/status/api/summary"));
      showAccounts(await getJSON("/status/api/accounts?" + document.getElementById("accounts").dataset.query));
      setLive("(live)");
    } catch (e) {
      setLive("(update failed: " + e.message + ")");
    }
  };
  setInterval(tick, REFRESH_MS);
}

// --- an account ---------------------------------------------------------------------
let pendingAction = null;

async function rpc(method, params) {
  const headers = {"Content-Type": "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch("/RPC", {method: "POST", headers: headers, credentials: "omit", cache: "no-store",
                                        body: JSON.stringify({jsonrpc: "2.0", method: method, params: params, id: 1})});
  if (response.status === 401) return {unauthorized: true, hadToken: Boolean(token)};
  return response.json();
}

function showResult(text, failed) {
  const result = document.getElementById("action-result");
  result.textContent = text;
  result.className = failed ? "error" : "";
}

async function runAction(method) {
  const l_uuid = document.getElementById("actions").dataset.lUuid;
  const params = method === "uac.reg_refresh" ? [l_uuid] : ["l_uuid", l_uuid];
  showResult(method + "…", false);
  let answer;
  try {
    answer = await rpc(method, params);
  } catch (e) {
    showResult(method + " failed: " + e.message, true);
    return;
  }
  if (answer.unauthorized) {
    if (answer.hadToken) sessionStorage.removeItem(TOKEN_KEY);
    pendingAction = method;
    const form = document.getElementById("token-form");
    form.hidden = false;
    document.getElementById("token").focus();
    showResult(answer.hadToken ? "The token was refused: enter it again." : "Enter the RPC token to make changes.", true);
    return;
  }
  if (answer.error) {
    showResult(method + " failed: " + answer.error.code + " " + answer.error.message, true);
  } else {
    showResult(method + ": done", false);
  }
  refreshAccount();
}

function showAccount(account) {
  for (const [name, value] of Object.entries(account.record)) {
    const cell = document.querySelector('[data-field="' + name + '"]');
    if (cell) cell.textContent = value === null ? "none" : Array.isArray(value) ? (value.join(", ") || "none") : value;
  }
  document.querySelector("#events tbody").replaceChildren(...account.events.map((e) => {
    const row = element("tr");
    row.append(element("td", clock(e.at)), element("td", e.previous + " → " + e.state), element("td", e.reason),
               element("td", e.status === null ? "" : e.status), element("td", e.latency_ms === null ? "" : e.latency_ms));
    return row;
  }));
  document.getElementById("updated").textContent = clock(Date.now() / 1000);
}

async function refreshAccount() {
  const l_uuid = document.getElementById("actions").dataset.lUuid;
  try {
    showAccount(await getJSON("/status/api/account?l_uuid=" + encodeURIComponent(l_uuid)));
    setLive("(live)");
  } catch (e) {
    setLive("(update failed: " + e.message + ")");
  }
}

function startAccount() {
  for (const button of document.querySelectorAll("#actions button[data-method]")) {
    button.addEventListener("click", () => runAction(button.dataset.method));
  }
  const form = document.getElementById("token-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    form.hidden = true;
    if (pendingAction) {
      const method = pendingAction;
      pendingAction = null;
      runAction(method);
    }
  });
  setInterval(refreshAccount, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "overview") startOverview();
  else if (page === "account") startAccount();
});
