"""``txuac-ctl migrate kamailio.cfg > uac.toml``: the uac module's settings of a Kamailio
configuration as txuac's TOML.

Reads the ``modparam("uac", ...)`` statements and the ``listen=`` lines after Kamailio's
preprocessor as far as they need it: ``#!define``/``#!trydef``/``#!redefine`` names
(replaced where they stand as a value), ``#!substdef`` (a define and a substitution),
``#!ifdef``/``#!ifndef``/``#!else``/``#!endif`` (with the names given by ``-A``, as
``kamailio -A``). Comments (``#``, ``//``, ``/* */``) are skipped. Writes a commented TOML
with each setting and the line it came from, and lists every parameter it cannot carry
over with the reason.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import sys
from dataclasses import dataclass, field

from txuac.config import parse_listen
from txuac.errors import ConfigError, TxuacError

# Kamailio's uac parameter -> (txuac section, key, kind); kind "int", "str", "bool" (an
# int flag), "list" (repeated: each adds an entry), "avp" (an $avp name: on).
CARRIED = {
    "credential": ("uac", "credential", "list"),
    "reg_db_url": ("uac", "reg_db_url", "str"),
    "reg_db_table": ("uac", "reg_db_table", "str"),
    "reg_contact_addr": ("uac", "reg_contact_addr", "str"),
    "reg_timer_interval": ("uac", "reg_timer_interval", "int"),
    "reg_retry_interval": ("uac", "reg_retry_interval", "int"),
    "reg_keep_callid": ("uac", "reg_keep_callid", "int"),
    "reg_random_delay": ("uac", "reg_random_delay", "int"),
    "reg_active": ("uac", "reg_active", "int"),
    "reg_gc_interval": ("uac", "reg_gc_interval", "int"),
    "reg_hash_size": ("uac", "reg_hash_size", "int"),
    "reg_use_domain": ("uac", "reg_use_domain", "int"),
    "reload_delta": ("uac", "reload_delta", "int"),
    "default_socket": ("uac", "default_socket", "str"),
    "restore_mode": ("routing", "restore_mode", "str"),
    "restore_dlg": ("routing", "restore_dlg", "bool"),
    "restore_passwd": ("routing", "restore_passwd", "str"),
    "rr_from_store_param": ("routing", "rr_from_store_param", "str"),
    "rr_to_store_param": ("routing", "rr_to_store_param", "str"),
    "restore_from_avp": ("routing", "restore_from_avp", "avp"),
    "restore_to_avp": ("routing", "restore_to_avp", "avp"),
    "event_callback": ("routing", "event_callback", "str"),
}
NOT_CARRIED = {
    "auth_username_avp": "a routing script sets the request's credentials in uac.credentials "
                         "(username, password, realm) instead of AVPs",
    "auth_realm_avp": "a routing script sets uac.credentials.realm instead of an AVP",
    "auth_password_avp": "a routing script sets uac.credentials.password instead of an AVP",
}
SECTION_ORDER = ("core", "uac", "routing")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIRECTIVE = re.compile(r"^\s*(?:#!|!!)(\w+)\s*(.*?)\s*$")
_MODPARAM = re.compile(r"\bmodparam\s*\(")
_LISTEN = re.compile(r"^\s*listen\s*=\s*(.+?)\s*;?\s*$", re.MULTILINE)
_PROTOCOLS = ("udp", "tcp", "tls", "sctp", "ws", "wss")


class MigrateError(TxuacError):
    """The file cannot be read as a Kamailio configuration."""


@dataclass
class Migration:
    """What was carried over (by section, with the line each came from) and what was not."""

    settings: dict[str, dict[str, object]] = field(default_factory=dict)
    origins: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def put(self, section: str, key: str, value: object, origin: str) -> None:
        self.settings.setdefault(section, {})[key] = value
        self.origins.setdefault((section, key), []).append(origin)


def preprocess(text: str, defines: dict[str, str]) -> list[tuple[int, str]]:
    """The lines (number, text) Kamailio would read, comments blanked; ``defines`` is
    filled with the #!define names in force."""
    kept: list[tuple[int, str]] = []
    active: list[bool] = []
    substitutions: list[tuple[re.Pattern, str]] = []
    in_block_comment = False
    for number, line in enumerate(text.splitlines(), 1):
        directive = _DIRECTIVE.match(line)
        if directive and not in_block_comment:
            name, rest = directive.group(1).lower(), directive.group(2)
            on = all(active)
            if name in ("ifdef", "ifndef"):
                active.append((rest.split()[0] in defines if rest else False) == (name == "ifdef"))
            elif name == "else" and active:
                active[-1] = not active[-1]
            elif name == "endif" and active:
                active.pop()
            elif on and name in ("define", "trydef", "redefine"):
                parts = rest.split(None, 1)
                if parts and (name != "trydef" or parts[0] not in defines):
                    defines[parts[0]] = parts[1] if len(parts) > 1 else ""
            elif on and name in ("substdef", "substdefs", "subst"):
                _add_substitution(rest, name, defines, substitutions)
            continue
        if not all(active):
            continue
        if line.lstrip().startswith("#"):
            continue
        line, in_block_comment = _without_comments(line, in_block_comment)
        for pattern, replacement in substitutions:
            line = pattern.sub(replacement, line)
        kept.append((number, line))
    return kept


def _add_substitution(rest: str, kind: str, defines: dict[str, str], substitutions: list) -> None:
    text = rest.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if len(text) < 3:
        return
    separator = text[0]
    parts = text[1:].split(separator)
    if len(parts) < 2:
        return
    pattern, replacement = parts[0], parts[1]
    if kind.startswith("substdef"):
        defines[pattern] = f'"{replacement}"' if kind == "substdefs" else replacement
    try:
        substitutions.append((re.compile(pattern), replacement.replace("\\", "\\\\")))
    except re.error:
        pass


def _without_comments(line: str, in_block: bool) -> tuple[str, bool]:
    out, position, quote = [], 0, None
    while position < len(line):
        if in_block:
            end = line.find("*/", position)
            if end < 0:
                return "".join(out), True
            position, in_block = end + 2, False
            continue
        char = line[position]
        if quote:
            out.append(char)
            if char == "\\" and position + 1 < len(line):
                out.append(line[position + 1])
                position += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
            out.append(char)
        elif line.startswith("/*", position):
            in_block = True
            position += 1
        elif line.startswith("//", position) or char == "#":
            break
        else:
            out.append(char)
        position += 1
    return "".join(out), in_block


def _value(token: str, defines: dict[str, str], depth: int = 0) -> object:
    """A modparam argument: a string literal, an integer, or a define standing for one."""
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return bytes(token[1:-1], "utf-8").decode("unicode_escape") if "\\" in token else token[1:-1]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if re.fullmatch(r"0x[0-9a-fA-F]+", token):
        return int(token, 16)
    if _IDENTIFIER.fullmatch(token):
        if token in defines and depth < 10:
            return _value(defines[token], defines, depth + 1)
        raise MigrateError(f"{token} is not #!define'd (give it with -A {token}=value, as to kamailio)")
    raise MigrateError(f"cannot read the value {token!r} (a string, an integer or a #!define is expected)")


def _arguments(text: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of a call whose '(' is just before ``start``."""
    arguments, current, quote, position = [], [], None, start
    while position < len(text):
        char = text[position]
        if quote:
            current.append(char)
            if char == "\\":
                position += 1
                current.append(text[position:position + 1])
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == ",":
            arguments.append("".join(current))
            current = []
        elif char == ")":
            arguments.append("".join(current))
            return arguments, position + 1
        else:
            current.append(char)
        position += 1
    raise MigrateError("a modparam( without its closing parenthesis")


def migrate(text: str, defines: dict[str, str] | None = None) -> Migration:
    defines = dict(defines or {})
    lines = preprocess(text, defines)
    joined = "\n".join(line for _, line in lines)
    starts, offset = [], 0
    for _, line in lines:
        starts.append(offset)
        offset += len(line) + 1

    def line_of(position: int) -> int:
        return lines[bisect.bisect_right(starts, position) - 1][0]

    migration = Migration()
    for match in _MODPARAM.finditer(joined):
        where = f"line {line_of(match.start())}"
        try:
            raw, _ = _arguments(joined, match.end())
        except MigrateError as e:
            migration.skipped.append(f"{where}: {e}")
            continue
        if len(raw) != 3:
            continue
        module = raw[0].strip().strip("\"'")
        if module != "uac":
            continue
        name = raw[1].strip().strip("\"'")
        statement = f"modparam(\"uac\", \"{name}\", {raw[2].strip()})"
        if name in NOT_CARRIED:
            migration.skipped.append(f"{where}: {statement}: {NOT_CARRIED[name]}")
            continue
        if name not in CARRIED:
            migration.skipped.append(f"{where}: {statement}: txuac has no such parameter")
            continue
        try:
            value = _value(raw[2], defines)
        except MigrateError as e:
            migration.skipped.append(f"{where}: {statement}: {e}")
            continue
        section, key, kind = CARRIED[name]
        converted, problem = _convert(kind, value)
        if problem:
            migration.skipped.append(f"{where}: {statement}: {problem}")
            continue
        if kind == "list":
            converted = [*migration.settings.get(section, {}).get(key, []), converted]
        migration.put(section, key, converted, f"{where}: {statement}")
    for match in _LISTEN.finditer(joined):
        _listen(match.group(1), f"line {line_of(match.start())}", defines, migration)
    return migration


def _convert(kind: str, value: object) -> tuple[object, str | None]:
    if kind == "int":
        return (value, None) if isinstance(value, int) else (None, f"{value!r} is not an integer")
    if kind == "bool":
        if value in (0, 1):
            return bool(value), None
        return None, f"{value!r} is not 0 or 1"
    if kind == "avp":
        if value == "":
            return False, None
        if isinstance(value, str) and value.startswith("$avp(") and value.endswith(")"):
            return value, None
        return None, f"{value!r} is not an $avp(name)"
    return (str(value), None)


def _listen(text: str, where: str, defines: dict[str, str], migration: Migration) -> None:
    statement = f"listen={text}"
    words = text.split()
    address = words[0]
    if _IDENTIFIER.fullmatch(address) and address in defines:
        address = str(_value(defines[address], defines)) if defines[address][:1] in "\"'" else defines[address]
    if len(words) > 1:
        migration.skipped.append(f"{where}: {statement}: '{' '.join(words[1:])}' (advertise, name, virtual) "
                                 f"has no txuac setting; the address itself is carried over")
    protocol, sep, rest = address.partition(":")
    has_protocol = bool(sep) and protocol.lower() in _PROTOCOLS
    protocols = [protocol.lower()] if has_protocol else ["udp", "tcp"]  # Kamailio: every enabled one
    if not has_protocol:
        rest = address
    for proto in protocols:
        if proto not in ("udp", "tcp", "tls"):
            migration.skipped.append(f"{where}: {statement}: txuac listens on udp, tcp and tls only")
            continue
        spec = f"{proto}:{rest}"
        try:
            parse_listen(spec, where)
        except ConfigError as e:
            migration.skipped.append(f"{where}: {statement}: {str(e).split(': ', 1)[-1]} (txuac listens on "
                                     "IP addresses, not interface or host names)")
            continue
        listen = migration.settings.setdefault("core", {}).setdefault("listen", [])
        if spec not in listen:
            listen.append(spec)
            migration.origins.setdefault(("core", "listen"), []).append(
                f"{where}: {statement}" + ("" if has_protocol else f" (no protocol: {proto})"))


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def render(migration: Migration, source: str) -> str:
    out = [f"# txuac settings carried over from {source} by txuac-ctl migrate.",
           "# Each setting names the Kamailio line it came from; see conf/uac.toml for the others.", ""]
    if "core" not in migration.settings:
        out += ["# No listen= line: txuac's default is udp:127.0.0.1:5060.", ""]
    if not any(section in migration.settings for section in ("uac", "routing")):
        out += ['# No modparam("uac", ...) found.', ""]
    for section in SECTION_ORDER:
        values = migration.settings.get(section)
        if not values:
            continue
        out.append(f"[{section}]")
        for key, value in values.items():
            out += [f"# {origin}" for origin in migration.origins.get((section, key), [])]
            out.append(f"{key} = {_toml(value)}")
        out.append("")
    if migration.settings.get("routing"):
        out += ["# [routing] takes effect with a routing script: set script = \"route.py\" (docs/routing.rst).", ""]
    if migration.skipped:
        out.append("# Not carried over:")
        out += [f"#   {line}" for line in migration.skipped]
    elif migration.settings:
        out.append("# Everything was carried over.")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="txuac-ctl migrate",
                                description="Write the uac settings of a Kamailio configuration as txuac's TOML.")
    p.add_argument("cfg", help="kamailio.cfg")
    p.add_argument("-A", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                   help="a preprocessor define, as kamailio -A (for #!ifdef)")
    args = p.parse_args(argv)
    defines = {}
    for define in args.defines:
        name, _, value = define.partition("=")
        defines[name] = value
    try:
        with open(args.cfg, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        print(f"txuac-ctl migrate: cannot read {args.cfg}: {e.strerror}", file=sys.stderr)
        return 2
    sys.stdout.write(render(migrate(text, defines), args.cfg))
    return 0
