"""txuac-ctl: call txuac's JSON-RPC methods from a shell.

    txuac-ctl uac.reg_dump
    txuac-ctl uac.reg_info l_uuid 1000
    txuac-ctl --json uac.reg_active 0
    txuac-ctl accounts --state failed --registrar reg.example.com --fields l_uuid,last_error
    txuac-ctl watch --until-online
    txuac-ctl sample-config > uac.toml

Tables for people, ``--json`` for scripts. Exit status: 0 done, 1 the method answered
an error, 2 a usage, configuration or connection problem, 141 the reader of the output
went away (``| head -1``). Standard library only: it runs without a reactor.

It never goes through a proxy (``http_proxy`` is ignored: the token must not go to a
third party), speaks HTTP over a UNIX socket for ``--url unix:/path``, and takes the token
from ``--token``, else ``TXUAC_TOKEN``, else the ``--config`` file's ``[rpc] token`` or
``token_file`` (the command line is visible to every local user in ``ps``).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import sys
import time
import tomllib
import urllib.parse
from typing import IO, Any

from txuac.config import parse_endpoint, read_token_file
from txuac.errors import ConfigError, TxuacError

DEFAULT_URL = "http://127.0.0.1:5064/RPC"
TOKEN_VARIABLE = "TXUAC_TOKEN"
# Parameters sent as JSON integers (by position); all others are sent as strings, so
# that an l_uuid like 1000 stays the string "1000" (kamcmd needs "s:1000" for that).
INTEGER_POSITIONS = {"uac.reg_active": {0}, "uac.reg_add": {10, 11, 12}}
EXIT_OK, EXIT_RPC_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped that way


class CtlError(TxuacError):
    """A problem to report in one line, with exit status 2."""


def url_from_config(path: str) -> tuple[str, str | None]:
    """The RPC URL and token of the txuac configured by the TOML file at ``path``; the URL
    of a ``unix:`` listener is ``unix:/its/path``."""
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
    try:
        kind, args, kwargs = parse_endpoint(listen, f"{path}: [rpc] listen")
    except ConfigError as e:
        raise CtlError(str(e)) from None
    return _listen_url(path, listen, kind, args, kwargs), _config_token(path, rpc)


def _listen_url(path: str, listen: str, kind: str, args: list[str], kwargs: dict[str, str]) -> str:
    if kind == "unix":
        address = kwargs.get("address", args[0] if args else "")
        if not address:
            raise CtlError(f"{path}: [rpc] listen: {listen!r} names no socket file")
        return f"unix:{address}"
    if kind not in ("tcp", "tcp6", "ssl"):
        raise CtlError(f"{path}: [rpc] listen: {listen!r}: txuac-ctl speaks HTTP over TCP or UNIX sockets; "
                       "use --url")
    port = kwargs.get("port", args[0] if args else "5064")
    host = kwargs.get("interface", args[2] if len(args) > 2 else "")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if kind == "ssl" else "http"
    return f"{scheme}://{host}:{port}/RPC"


def _config_token(path: str, rpc: dict) -> str | None:
    token_file = rpc.get("token_file")
    if not token_file:
        return rpc.get("token") or None
    # As the server reads it: relative to the configuration file's directory.
    name = os.path.join(os.path.dirname(os.path.abspath(path)), token_file)
    try:
        return read_token_file(name) or None
    except (OSError, UnicodeDecodeError) as e:
        raise CtlError(f"{path}: [rpc] token_file: cannot read {name}: {getattr(e, 'strerror', None) or e}") from None


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


class UNIXHTTPConnection(http.client.HTTPConnection):
    """HTTP over the UNIX socket at ``path`` (the Host header says ``localhost``)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the server at ``url`` (never through a proxy) and the path to POST to."""
    if url.startswith("unix:"):
        return UNIXHTTPConnection(url[len("unix:"):], timeout), "/RPC"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CtlError(f"{url}: not an http://, https:// or unix: URL")
    try:
        port = parts.port
    except ValueError:
        raise CtlError(f"{url}: bad port") from None
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/RPC") + (f"?{parts.query}" if parts.query else "")
    return kind(parts.hostname, port, timeout=timeout), path


def exchange(url: str, token: str | None, method: str, body: bytes | None, timeout: float,
             path: str | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One HTTP request to the server at ``url`` (to ``path`` instead of the URL's own, if
    given); the response and its body."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn, url_path = connection(url, timeout)
    try:
        conn.request(method, path or url_path, body, headers)
        reply = conn.getresponse()
        return reply, reply.read()
    except (socket.timeout, TimeoutError):
        raise CtlError(f"no answer from {url} within {timeout:g} s") from None
    except OSError as e:
        raise CtlError(f"cannot connect to {url}: {e.strerror or e}") from None
    except http.client.HTTPException as e:
        raise CtlError(f"{url}: no HTTP answer: {e!r}") from None
    finally:
        conn.close()


def call(url: str, token: str | None, method: str, params: list, timeout: float) -> dict:
    """POST one request; the decoded response object."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode("utf-8")
    reply, data = exchange(url, token, "POST", body, timeout)
    response = _decode(data)
    if reply.status >= 300 and (response is None or "error" not in response):
        text = data.decode("utf-8", "replace").strip()[:200]
        raise CtlError(f"{url}: HTTP {reply.status} {reply.reason}{': ' + text if text else ''}")
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
    """uac.reg_dump's records; ``uac.reg_dump cluster``'s (with an owner each) show the owner
    instead of the expiry, which only the owner knows."""
    fleet = bool(records) and "owner" in records[0]
    rows = []
    for record in records:
        online = record.get("state") == "online"
        rows.append([
            _text(record.get("l_uuid")),
            f"{record.get('r_username')}@{record.get('r_domain')}",
            _text(record.get("state")),
            _text(record.get("owner")) if fleet else f"{record.get('diff_expires')} s" if online else "-",
            _text(record.get("last_error")),
        ])
    return table(["L_UUID", "ACCOUNT", "STATE", "OWNER" if fleet else "EXPIRES IN", "LAST ERROR"], rows)


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


# --- txuac-ctl accounts -------------------------------------------------------------
ACCOUNT_FIELDS = ["l_uuid", "r_username", "r_domain", "auth_proxy", "state", "diff_expires", "last_error"]
CLUSTER_FIELDS = ["l_uuid", "r_username", "r_domain", "auth_proxy", "state", "owner", "last_error"]
STATES = ("online", "registering", "waiting", "failed", "disabled", "unregistered")
# Global options that take a value: what follows them is not the command.
VALUE_OPTIONS = frozenset(("--config", "-c", "--url", "--token", "--timeout"))


def accounts_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="txuac-ctl [options] accounts", description="The registration accounts (from uac.reg_dump), "
        "filtered, with a totals line.")
    p.add_argument("--state", choices=STATES, help="only the accounts in this state")
    p.add_argument("--cluster", action="store_true",
                   help="every account of the cluster's fleet, with its owner node (uac.reg_dump cluster)")
    p.add_argument("--registrar", help="only the accounts whose auth_proxy contains this text (any case)")
    p.add_argument("--search", help="only the accounts whose l_uuid, user names or domains contain this text")
    p.add_argument("--fields", help=f"comma-separated reg_dump fields to show (default {','.join(ACCOUNT_FIELDS)})")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the accounts and totals as JSON")
    output.add_argument("--yaml", action="store_true", help="the accounts and totals as YAML")
    return p


def split_command(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(global options, the first word that is not an option or its value, what follows it)."""
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in VALUE_OPTIONS:
            index += 2
        elif word.startswith("-"):
            index += 1
        else:
            return argv[:index], word, argv[index + 1:]
    return argv, None, []


def select_accounts(records: list[dict], state: str | None = None, registrar: str | None = None,
                    search: str | None = None) -> list[dict]:
    """The records of uac.reg_dump that match every filter given."""
    chosen = records
    if state:
        chosen = [r for r in chosen if r.get("state") == state]
    if registrar:
        needle = registrar.lower()
        chosen = [r for r in chosen if needle in str(r.get("auth_proxy", "")).lower()]
    if search:
        needle = search.lower()
        chosen = [r for r in chosen if any(needle in str(r.get(name, "")).lower() for name in
                                           ("l_uuid", "l_username", "r_username", "auth_username", "l_domain",
                                            "r_domain"))]
    return chosen


def totals(records: list[dict]) -> dict[str, int]:
    """Accounts by state, every state (0 included), in reg_dump's state order."""
    counts = dict.fromkeys(STATES, 0)
    for record in records:
        state = record.get("state")
        counts[state] = counts.get(state, 0) + 1
    return counts


def totals_line(shown: list[dict], records: list[dict]) -> str:
    """``10 of 1000 accounts shown; all: 990 online, 10 failed``."""
    by_state = ", ".join(f"{count} {state}" for state, count in totals(records).items() if count)
    return f"{len(shown)} of {len(records)} accounts shown; all: {by_state or 'none'}"


def yaml_text(value: Any, indent: str = "") -> str:
    """YAML for JSON-like values (strings double-quoted as JSON, which YAML reads the same)."""
    if isinstance(value, dict):
        if not value:
            return indent + "{}"
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}{json.dumps(str(key))}:\n{yaml_text(item, indent + '  ')}")
            else:
                lines.append(f"{indent}{json.dumps(str(key))}: {yaml_text(item).strip()}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return indent + "[]"
        lines = []
        for item in value:
            text = yaml_text(item, indent + "  ")
            lines.append(f"{indent}- {text.strip()}" if not isinstance(item, (dict, list)) or not item
                         else f"{indent}-\n{text}")
        return "\n".join(lines)
    return indent + json.dumps(value, ensure_ascii=False)


def accounts_output(records: list[dict], options: argparse.Namespace, as_json: bool = False) -> str:
    """What ``txuac-ctl accounts`` prints."""
    default = CLUSTER_FIELDS if getattr(options, "cluster", False) else ACCOUNT_FIELDS
    fields = [name.strip() for name in options.fields.split(",") if name.strip()] if options.fields else default
    if records:
        unknown = [name for name in fields if name not in records[0]]
        if unknown:
            raise CtlError(f"unknown field(s) {', '.join(unknown)}; reg_dump has {', '.join(records[0])}")
    shown = select_accounts(records, options.state, options.registrar, options.search)
    if as_json or options.json or options.yaml:
        document = {"accounts": [{name: record.get(name) for name in fields} for record in shown],
                    "shown": len(shown), "total": len(records), "totals": totals(records)}
        return json.dumps(document, indent=2, ensure_ascii=False) if not options.yaml else yaml_text(document)
    rows = [[_text(record.get(name)) for name in fields] for record in shown]
    body = table([name.upper() for name in fields], rows) if shown else "no accounts match"
    return f"{body}\n{totals_line(shown, records)}"


# --- txuac-ctl watch ----------------------------------------------------------------
SUMMARY_PATH = "/status/api/summary"  # the status page's JSON (txuac.admin.status_page)
BAR_WIDTH = 30


def watch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="txuac-ctl [options] watch", description="The bring-up progress, live: a progress bar on a "
        "terminal, one line per update otherwise.")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between updates (default 1)")
    p.add_argument("--count", type=int, default=0, help="stop after this many updates (default: never)")
    p.add_argument("--until-online", action="store_true",
                   help="stop (status 0) once every account that should be online is")
    return p


def fetch_summary(url: str, token: str | None, timeout: float) -> dict:
    """The status page's summary of the server at ``url``."""
    reply, data = exchange(url, token, "GET", None, timeout, SUMMARY_PATH)
    if reply.status != 200:
        raise CtlError(f"{url}: HTTP {reply.status} {reply.reason} for {SUMMARY_PATH}")
    summary = _decode(data)
    if summary is None or not isinstance(summary.get("bring_up"), dict):
        raise CtlError(f"{url}: {SUMMARY_PATH} is not a txuac status summary")
    return summary


def progress_text(bring_up: dict) -> str:
    """``990/1000 online, 10 failed, 411/s, about 2 s to go``."""
    parts = [f"{bring_up['online']}/{bring_up['expected']} online"]
    if bring_up.get("failed"):
        parts.append(f"{bring_up['failed']} failed")
    if bring_up.get("rate"):
        parts.append(f"{bring_up['rate']:g}/s")
    if bring_up.get("eta") is not None:
        parts.append(f"about {bring_up['eta']:.0f} s to go")
    return ", ".join(parts)


def progress_bar(bring_up: dict, width: int = BAR_WIDTH) -> str:
    """``[#########.....]  60%``."""
    expected = bring_up["expected"]
    share = bring_up["online"] / expected if expected else 1.0
    done = round(share * width)
    return f"[{'#' * done}{'.' * (width - done)}] {share:4.0%}"


def watch(url: str, token: str | None, timeout: float, options: argparse.Namespace, out: IO[str]) -> int:
    """Print the bring-up progress every ``options.interval`` seconds."""
    terminal = out.isatty()
    updates = 0
    try:
        while True:
            bring_up = fetch_summary(url, token, timeout)["bring_up"]
            if terminal:  # one line, redrawn
                out.write(f"\r{progress_bar(bring_up)} {progress_text(bring_up)}\x1b[K")
            else:
                out.write(f"{time.strftime('%H:%M:%S')} {progress_text(bring_up)}\n")
            out.flush()
            updates += 1
            if (options.count and updates >= options.count) or \
                    (options.until_online and bring_up["online"] >= bring_up["expected"]):
                break
            time.sleep(options.interval)
    except KeyboardInterrupt:
        pass
    finally:
        if terminal:
            out.write("\n")
            out.flush()
    return EXIT_OK


# --- txuac-ctl completion bash|zsh -----------------------------------------------------
# Commands and options are completed from here, method names by asking the server
# (system.listMethods, with the options already typed), states from the list above.
BASH_COMPLETION = """\
_txuac_ctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case "$prev" in
        --state) COMPREPLY=($(compgen -W "%(states)s" -- "$cur")); return ;;
        --config|-c) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --url|--token|--timeout|--registrar|--search|--fields|--interval|--count) return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "%(options)s" -- "$cur"))
        return
    fi
    local i given=()
    for ((i = 1; i < COMP_CWORD - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            --config|-c|--url|--token) given+=("${COMP_WORDS[i]}" "${COMP_WORDS[i+1]}") ;;
        esac
    done
    local methods
    methods=$(txuac-ctl "${given[@]}" --timeout 2 --json system.listMethods 2>/dev/null | tr -d '[]",')
    COMPREPLY=($(compgen -W "%(commands)s $methods" -- "$cur"))
}
complete -F _txuac_ctl txuac-ctl
"""
# zsh's own completion system: words/CURRENT/PREFIX in, compadd out. Loaded after compinit
# (``source <(txuac-ctl completion zsh)`` in ~/.zshrc); compdef is skipped without it.
ZSH_COMPLETION = """\
_txuac_ctl() {
    case ${words[CURRENT-1]} in
        --state) compadd -- %(states)s; return ;;
        --config|-c) _files; return ;;
        --url|--token|--timeout|--registrar|--search|--fields|--interval|--count) return ;;
    esac
    if [[ $PREFIX == -* ]]; then
        compadd -- %(options)s
        return
    fi
    local i
    local -a given methods
    for ((i = 2; i < CURRENT - 1; i++)); do
        case ${words[i]} in
            --config|-c|--url|--token) given+=(${words[i]} ${words[i+1]}) ;;
        esac
    done
    methods=(${=$(txuac-ctl $given --timeout 2 --json system.listMethods 2>/dev/null | tr -d '[]",')})
    compadd -- %(commands)s $methods
}
(( $+functions[compdef] )) && compdef _txuac_ctl txuac-ctl
"""
COMPLETION_SCRIPTS = {"bash": BASH_COMPLETION, "zsh": ZSH_COMPLETION}
COMMANDS = ("accounts", "watch", "completion", "migrate", "sample-config")
OPTIONS = ("--config", "--url", "--token", "--json", "--timeout", "--help", "--state", "--registrar", "--search",
           "--fields", "--yaml", "--interval", "--count", "--until-online")


def completion_script(shell: str) -> str:
    """The shell completion script: ``source <(txuac-ctl completion bash)`` (or zsh)."""
    if shell not in COMPLETION_SCRIPTS:
        raise CtlError(f"completion for {shell!r} is not available (bash and zsh are)")
    return COMPLETION_SCRIPTS[shell] % {"states": " ".join(STATES), "options": " ".join(OPTIONS),
                              "commands": " ".join(COMMANDS)}


# --- txuac-ctl sample-config ----------------------------------------------------------
def sample_config_path() -> str | None:
    """The commented sample configuration: as pip installs it (``share/txuac/uac.toml``
    under the environment's prefix), else in the source tree this module runs from."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(sys.prefix, "share", "txuac", "uac.toml"),
                 os.path.join(here, os.pardir, os.pardir, "conf", "uac.toml")):
        if os.path.isfile(path):
            return os.path.normpath(path)
    return None


# --- the command --------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="txuac-ctl", description="Call a txuac JSON-RPC method (Kamailio's uac.* names).",
        epilog="examples: txuac-ctl uac.reg_dump | txuac-ctl uac.reg_info l_uuid 1000 | "
               "txuac-ctl uac.reg_active 0 | txuac-ctl system.listMethods | "
               "txuac-ctl accounts --state failed (see txuac-ctl accounts --help) | "
               "txuac-ctl watch (see txuac-ctl watch --help)")
    p.add_argument("--config", "-c", help="txuac's TOML file: the RPC URL and token come from its [rpc] section "
                                          "(listen, token or token_file)")
    p.add_argument("--url", help=f"the RPC URL, http://, https:// or unix:/path/to/socket (default {DEFAULT_URL})")
    p.add_argument("--token", help=f"the [rpc] token (sent as 'Authorization: Bearer ...'); better in "
                                   f"${TOKEN_VARIABLE} or --config, as other users see the command line")
    p.add_argument("--json", action="store_true", help="print the result as JSON, for scripts")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    p.add_argument("method", help="e.g. uac.reg_dump, uac.reg_info, stats.get_statistics, system.listMethods")
    p.add_argument("params", nargs="*", help="the method's parameters, in order")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except BrokenPipeError:
        # The reader went away (``| head -1``): stop quietly, and keep the interpreter's
        # own flush at exit from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate"]:  # txuac-ctl migrate kamailio.cfg > uac.toml
        from txuac.admin.migrate import main as migrate
        return migrate(argv[1:])
    if argv[:1] == ["sample-config"]:  # txuac-ctl sample-config > uac.toml
        path = sample_config_path()
        if path is None:
            print("txuac-ctl: the sample configuration is not installed (share/txuac/uac.toml)", file=sys.stderr)
            return EXIT_USAGE
        with open(path, encoding="utf-8") as f:
            sys.stdout.write(f.read())
        sys.stdout.flush()
        return EXIT_OK
    if argv[:1] == ["completion"]:  # source <(txuac-ctl completion bash)
        try:
            print(completion_script(argv[1] if len(argv) > 1 else "bash"), end="")
        except CtlError as e:
            print(f"txuac-ctl: {e}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    head, command, tail = split_command(argv)
    accounts = watching = None
    if command == "accounts":
        accounts = accounts_parser().parse_args(tail)  # usage errors exit with status 2
        argv = [*head, "uac.reg_dump", *(["cluster"] if accounts.cluster else [])]
    elif command == "watch":
        watching = watch_parser().parse_args(tail)
        argv = [*head, "core.version"]
    args = parser().parse_args(argv)  # usage errors exit with status 2
    try:
        url, token = DEFAULT_URL, None
        if args.config:
            url, token = url_from_config(args.config)
        url = args.url or url
        token = args.token or os.environ.get(TOKEN_VARIABLE) or token
        if watching is not None:
            return watch(url, token, args.timeout, watching, sys.stdout)
        response = call(url, token, args.method, rpc_params(args.method, args.params), args.timeout)
        if accounts is not None and response.get("error") is None:
            print(accounts_output(response.get("result") or [], accounts, args.json))
            sys.stdout.flush()
            return EXIT_OK
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
    sys.stdout.flush()  # a closed pipe is found here, not at exit
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
