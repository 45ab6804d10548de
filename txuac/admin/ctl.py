"""txuac-ctl: call txuac's JSON-RPC methods from a shell.

    txuac-ctl uac.reg_dump
    txuac-ctl uac.reg_info l_uuid 1000
    txuac-ctl --json uac.reg_active 0

Tables for people, ``--json`` for scripts. Exit status: 0 done, 1 the method answered
an error, 2 a usage, configuration or connection problem. Standard library only: it
runs without a reactor.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import tomllib
import urllib.error
import urllib.request
from typing import Any

from txuac.config import parse_endpoint
from txuac.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:5064/RPC"
# Parameters sent as JSON integers (by position); all others are sent as strings, so
# that an l_uuid like 1000 stays the string "1000" (kamcmd needs "s:1000" for that).
INTEGER_POSITIONS = {"uac.reg_active": {0}, "uac.reg_add": {10, 11, 12}}
EXIT_OK, EXIT_RPC_ERROR, EXIT_USAGE = 0, 1, 2


class CtlError(Exception):
    """A problem to report in one line, with exit status 2."""


def url_from_config(path: str) -> tuple[str, str | None]:
    """The RPC URL and token of the txuac configured by the TOML file at ``path``."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise CtlError(f"{path}: cannot read: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CtlError(f"{path}: not valid TOML: {e}") from None
    rpc = document.get("rpc", {})
    if not isinstance(rpc, dict):
        raise CtlError(f"{path}: [rpc] must be a table")
    if rpc.get("enabled", True) is False:
        raise CtlError(f"{path}: [rpc] enabled = false: this txuac has no RPC server")
    listen = rpc.get("listen", "tcp:5064:interface=127.0.0.1")
    token = rpc.get("token") or None
    try:
        kind, args, kwargs = parse_endpoint(listen, f"{path}: [rpc] listen")
    except ConfigError as e:
        raise CtlError(str(e)) from None
    if kind not in ("tcp", "tcp6", "ssl"):
        raise CtlError(f"{path}: [rpc] listen: {listen!r}: txuac-ctl speaks HTTP over TCP only; use --url")
    port = kwargs.get("port", args[0] if args else "5064")
    host = kwargs.get("interface", args[2] if len(args) > 2 else "")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if kind == "ssl" else "http"
    return f"{scheme}://{host}:{port}/RPC", token


def rpc_params(method: str, arguments: list[str]) -> list:
    """The JSON params of ``method`` from command-line words."""
    integers = INTEGER_POSITIONS.get(method, set())
    params: list = []
    for position, word in enumerate(arguments):
        if position in integers:
            try:
                params.append(int(word))
                continue
            except ValueError:
                pass  # sent as given: the server says what is wrong with it
        params.append(word)
    return params


def call(url: str, token: str | None, method: str, params: list, timeout: float) -> dict:
    """POST one request; the decoded response object."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            data = reply.read()
    except urllib.error.HTTPError as e:
        data = e.read()
        response = _decode(data)
        if response is None or "error" not in response:
            text = data.decode("utf-8", "replace").strip()[:200]
            raise CtlError(f"{url}: HTTP {e.code} {e.reason}{': ' + text if text else ''}") from None
        return response
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, OSError):
            reason = reason.strerror or str(reason)
        raise CtlError(f"cannot connect to {url}: {reason}") from None
    except (socket.timeout, TimeoutError):
        raise CtlError(f"no answer from {url} within {timeout:g} s") from None
    except OSError as e:
        raise CtlError(f"cannot connect to {url}: {e.strerror or e}") from None
    response = _decode(data)
    if response is None:
        raise CtlError(f"{url}: the answer is not JSON-RPC: {data[:200]!r}")
    return response


def _decode(data: bytes) -> dict | None:
    try:
        response = json.loads(data)
    except ValueError:
        return None
    return response if isinstance(response, dict) else None


# --- output for people ------------------------------------------------------------
def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if value == "":
        return '""'
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def reg_dump_table(records: list[dict]) -> str:
    rows = []
    for record in records:
        online = record.get("state") == "online"
        rows.append([
            _text(record.get("l_uuid")),
            f"{record.get('r_username')}@{record.get('r_domain')}",
            _text(record.get("state")),
            f"{record.get('diff_expires')} s" if online else "-",
            _text(record.get("last_error")),
        ])
    return table(["L_UUID", "ACCOUNT", "STATE", "EXPIRES IN", "LAST ERROR"], rows)


def key_values(result: dict) -> str:
    return table(["FIELD", "VALUE"], [[str(key), _text(value)] for key, value in result.items()])


def statistics_table(lines: list[str]) -> str:
    rows = [[name.strip(), value.strip()] for name, _, value in (line.partition("=") for line in lines)]
    return table(["NAME", "VALUE"], rows)


def render(method: str, result: Any) -> str:
    """The result of ``method`` for people."""
    if method == "uac.reg_dump" and isinstance(result, list):
        return reg_dump_table(result) if result else "no registration records"
    if method == "stats.get_statistics" and isinstance(result, list):
        return statistics_table(result) if result else "no such statistics"
    if result == {} or result is None:
        return "ok"
    if isinstance(result, dict):
        return key_values(result)
    if isinstance(result, list) and result and all(isinstance(item, dict) for item in result):
        headers = list(dict.fromkeys(itertools.chain.from_iterable(result)))
        return table([h.upper() for h in headers], [[_text(item.get(h)) for h in headers] for item in result])
    if isinstance(result, list):
        return "\n".join(_text(item) for item in result)
    return _text(result)


# --- the command --------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="txuac-ctl", description="Call a txuac JSON-RPC method (Kamailio's uac.* names).",
        epilog="examples: txuac-ctl uac.reg_dump | txuac-ctl uac.reg_info l_uuid 1000 | "
               "txuac-ctl uac.reg_active 0 | txuac-ctl system.listMethods")
    p.add_argument("--config", "-c", help="txuac's TOML file: the RPC URL and token come from its [rpc] section")
    p.add_argument("--url", help=f"the RPC URL (default {DEFAULT_URL})")
    p.add_argument("--token", help="the [rpc] token (sent as 'Authorization: Bearer ...')")
    p.add_argument("--json", action="store_true", help="print the result as JSON, for scripts")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    p.add_argument("method", help="e.g. uac.reg_dump, uac.reg_info, stats.get_statistics, system.listMethods")
    p.add_argument("params", nargs="*", help="the method's parameters, in order")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # usage errors exit with status 2
    try:
        url, token = DEFAULT_URL, None
        if args.config:
            url, token = url_from_config(args.config)
        url = args.url or url
        token = args.token or token
        response = call(url, token, args.method, rpc_params(args.method, args.params), args.timeout)
    except CtlError as e:
        print(f"txuac-ctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    error = response.get("error")
    if error is not None:
        if args.json:
            print(json.dumps(error, indent=2), file=sys.stderr)
        else:
            detail = f" ({error['data']})" if isinstance(error, dict) and error.get("data") else ""
            code = error.get("code") if isinstance(error, dict) else "?"
            message = error.get("message") if isinstance(error, dict) else error
            print(f"error {code}: {message}{detail}", file=sys.stderr)
        return EXIT_RPC_ERROR
    result = response.get("result")
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render(args.method, result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
