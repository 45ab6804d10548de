"""The TOML configuration file turned into typed, validated settings.

Every error is a ConfigError naming the file and the key (``[core] listen``).
Unknown sections and keys are errors too: a typo must not be silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from txuac.errors import ConfigError, InvalidListenSpec
from txuac.auth import CredentialList
from txuac.registrant.cluster.leases import ClusterSettings
from txuac.registrant.settings import RegistrantSettings
from txuac.registrant.store.url import check_table_name, parse_store_url
from txuac.sip.digest import ALL_ALGORITHMS
from txuac.sip.listen import ListenSpec, ip_address_in
from txuac.sip.listen import is_number as _is_number
from txuac.sip.listen import parse_listen as parse_listen_spec

MAX_WORKERS = 256


@dataclass(frozen=True)
class CoreSettings:
    listen: tuple[ListenSpec, ...] = (ListenSpec("udp", "127.0.0.1", 5060),)
    user_agent: str = "txuac"
    dns_servers: tuple[tuple[str, int], ...] = ()
    max_message_size: int = 65535
    # RFC 3261 timers in milliseconds, as Kamailio's tm module takes them.
    timer_t1: int = 500
    timer_t2: int = 4000
    timer_t4: int = 5000
    tcp_idle_timeout: int = 600
    # Ours: processes sharing the listen sockets (SO_REUSEPORT, docs/workers.rst); "auto" in
    # the file is one per core.
    workers: int = 1


@dataclass(frozen=True)
class TLSSettings:
    certificate: str | None = None
    private_key: str | None = None
    ca_file: str | None = None
    verify_server: bool = True
    # Ours: (name, expected) pairs: a TLS server reached as ``name`` (the host of the URI
    # resolved, RFC 5922 4.1) must present a certificate for ``expected`` instead.
    server_names: tuple[tuple[str, str], ...] = ()


_REGISTRANT = RegistrantSettings()  # the registrant's defaults are [uac]'s


@dataclass(frozen=True)
class UACSettings:
    """[uac]: Kamailio's uac module parameters under their own names, and ours."""

    # Kamailio: "user:realm:password" entries; for the same realm the last one wins.
    credential: tuple[str, ...] = field(default=(), repr=False)  # holds passwords
    # Ours: the digest algorithms we answer, strongest first chosen (RFC 7616, RFC 8760).
    auth_algorithms: tuple[str, ...] = ALL_ALGORITHMS
    # Ours: answer qop="auth-int" when a server offers both auth and auth-int.
    auth_prefer_auth_int: bool = False
    # Remote registration (Kamailio's uac_reg; enabled by reg_db_url).
    reg_db_url: str | None = None
    reg_db_table: str = "uacreg"
    # Ours: our own table beside reg_db_table (per-account settings, kept Call-IDs).
    reg_ext_table: str = "uacreg_txuac"
    # Ours: seconds between attempts to reach a database server that is not up yet at
    # start (PostgreSQL); 0: txuac stops at once, as for any other store that cannot be used.
    reg_db_connect_retry: int = 5
    # Ours: follow INSERT/UPDATE/DELETE on reg_db_table live (PostgreSQL LISTEN/NOTIFY, a
    # change log on MySQL/MariaDB); not set in the file: on with [cluster], off alone.
    reg_db_watch: bool = False
    reg_contact_addr: str | None = None
    reg_timer_interval: int = _REGISTRANT.reg_timer_interval
    # Kamailio's name, our default (Kamailio's 0 disables an account on its first failure):
    # seconds before the first retry of a temporary failure, doubled per failure in a row.
    reg_retry_interval: int = _REGISTRANT.reg_retry_interval
    # Ours: the cap of that backoff, and the retries of 403s and refused credentials, and
    # of other final failures (0: disable on such failures); jitter in percent of a delay.
    reg_retry_max_interval: int = _REGISTRANT.reg_retry_max_interval
    reg_forbidden_retry_interval: int = _REGISTRANT.reg_forbidden_retry_interval
    reg_fatal_retry_interval: int = _REGISTRANT.reg_fatal_retry_interval
    reg_retry_jitter: int = _REGISTRANT.reg_retry_jitter
    reg_random_delay: int = _REGISTRANT.reg_random_delay
    # Kamailio's name, our default: one Call-ID per account, kept across restarts (0: a new
    # Call-ID for every REGISTER, as Kamailio by default).
    reg_keep_callid: int = int(_REGISTRANT.reg_keep_callid)
    reg_active: int = int(_REGISTRANT.reg_active)
    reg_use_domain: int = int(_REGISTRANT.reg_use_domain)
    reg_hash_size: int = 4  # accepted for compatibility: lookups here are dictionaries
    reg_gc_interval: int = 150
    reload_delta: int = _REGISTRANT.reload_delta
    # Ours: REGISTERs started per second at most, and unregistering on a clean stop.
    reg_send_rate: int = int(_REGISTRANT.reg_send_rate)
    reg_max_in_flight: int = _REGISTRANT.reg_max_in_flight
    # Ours: the same per destination (registrar or auth_proxy host); lower them for
    # providers that block addresses registering too much at once.
    reg_dest_max_in_flight: int = _REGISTRANT.reg_dest_max_in_flight
    reg_dest_rate: int = int(_REGISTRANT.reg_dest_rate)
    # Ours: RFC 5626 CRLF keep-alives on the TCP/TLS connections we open (seconds, 0 off;
    # pings go at 80-100% of it: 72-90 s, below the 120 s idle lifetime of Kamailio's and
    # OpenSIPS's TCP connections), and OPTIONS pings to the registrars of accounts with
    # options_ping (seconds, 0 off): down after reg_ping_down_count failures in a row, up
    # again after reg_ping_up_count answers, which re-registers the registrar's accounts.
    reg_keepalive_interval: int = 90
    reg_options_ping_interval: int = _REGISTRANT.reg_options_ping_interval
    reg_ping_up_count: int = _REGISTRANT.reg_ping_up_count
    reg_ping_down_count: int = _REGISTRANT.reg_ping_down_count
    # Ours: a registrar whose REGISTERs time out or meet a transport error gets one
    # OPTIONS every reg_probe_interval seconds (doubling to reg_probe_max_interval) until
    # it answers, which re-registers all its accounts; nothing is sent while all is well.
    reg_probe: bool = _REGISTRANT.reg_probe
    reg_probe_interval: int = int(_REGISTRANT.reg_probe_interval)
    reg_probe_max_interval: int = int(_REGISTRANT.reg_probe_max_interval)
    # Ours: a REGISTER's T2 (ms), the cap on its retransmission interval over UDP (RFC
    # 3261 17.1.2.2; [core] timer_t2 for other requests): a registrar answers at once, so
    # a lost REGISTER or answer is sent again every 500 ms rather than after up to 4 s.
    reg_timer_t2: int = round(_REGISTRANT.reg_timer_t2 * 1000)  # ms here, seconds there
    reg_unregister_on_stop: bool = _REGISTRANT.reg_unregister_on_stop
    # Kamailio: the local socket (proto:ip:port, one of [core] listen) REGISTERs and
    # uac_req_send requests go out from when no other is given.
    default_socket: str | None = None


@dataclass(frozen=True)
class RPCSettings:
    """[rpc]: JSON-RPC 2.0 over HTTP (``POST /RPC``) and ``GET /metrics``."""

    enabled: bool = True
    listen: str = "tcp:5064:interface=127.0.0.1"  # a Twisted server endpoint string
    # Sent as "Authorization: Bearer <token>"; required unless listen is loopback-only.
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None  # the token is this file's first line
    show_secrets: bool = False  # auth_password and auth_ha1 in clear in RPC output
    max_request_size: int = 65536  # octets of a request body
    # Host (and Origin) names accepted besides the listener's own address: a request
    # naming another host is a browser led there by DNS rebinding or another site.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    # Kamailio's own transports, off unless set; a UNIX socket's or FIFO's file mode
    # (and owner) is its access control. binrpc (ctl, kamcmd): "unix:PATH" or
    # "tcp:127.0.0.1:PORT" (loopback only: there is no token).
    binrpc: str | None = None
    binrpc_mode: int = 0o600
    binrpc_user: str | None = None
    binrpc_group: str | None = None
    # jsonrpcs (kamctl, kamcli): a FIFO answered into reply_name in the reply directory,
    # and a UNIX datagram socket "unix:PATH".
    jsonrpc_fifo: str | None = None
    jsonrpc_fifo_reply_dir: str = "/tmp/"
    jsonrpc_socket: str | None = None
    jsonrpc_mode: int = 0o660
    jsonrpc_user: str | None = None
    jsonrpc_group: str | None = None


@dataclass(frozen=True)
class ManholeSettings:
    """[manhole]: an SSH Python shell into the running service; off unless listen is set."""

    listen: str | None = None  # a Twisted server endpoint string, e.g. "tcp:5065:interface=127.0.0.1"
    authorized_keys: str | None = None  # OpenSSH authorized_keys file: the only way in
    host_key: str | None = None  # private host key, created (mode 0600) when missing


# twisted.logger.LogLevel names, lowest first.
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@dataclass(frozen=True)
class LogSettings:
    """[log]: how log events are written."""

    format: str = "text"  # or "json": one JSON object per line, for log shippers
    level: str = "info"  # the lowest written: "debug", "info", "warn", "error" or "critical"
    # Seconds a registrar's temporary failures are gathered for before their one info line.
    failure_summary_interval: float = 10.0


@dataclass(frozen=True)
class RoutingSettings:
    """[routing]: the proxy driven by a Python routing script (off unless ``script`` is set);
    Kamailio's uac parameter names (README section 3) where they exist, and ours.

    ``restore_from_avp``/``restore_to_avp``: Kamailio names an AVP where uac_replace_*
    saves the header as received, for replies whose request the script rewrote again
    (msg_apply_changes). txuac scripts have no AVPs: true (or a Kamailio ``$avp(...)``
    name, accepted for copied configurations) makes replace save the received span
    and the replies of the transaction get that span back (``RequestRestore.saved_spans``).
    """

    script: str | None = None  # path of the routing script (relative to the config file)
    restore_mode: str = "auto"  # "none", "manual" or "auto" (Kamailio README 3.3)
    restore_passwd: str = field(default="", repr=False)  # XOR key of vsf/vst (3.5)
    restore_dlg: bool = False  # values in dialog variables instead of Record-Route (3.4)
    rr_from_store_param: str = "vsf"
    rr_to_store_param: str = "vst"
    restore_from_avp: bool = False
    restore_to_avp: bool = False
    # Ours: vsf/vst carry an HMAC-SHA256 tag (restore_codec), keyed by restore_sign_key,
    # or restore_passwd when empty; one of them must then be set.
    restore_sign: bool = False
    restore_sign_key: str = field(default="", repr=False)
    # Ours: Record-Route an initial request by ourselves when a uac function needs its
    # dialog's later requests back (a From/To to restore, a CSeq raised by uac_auth) and
    # the script did not call rr.record_route(); false: only rr.record_route() does.
    record_route: bool = True
    # Kamailio tm fr_inv_timer (seconds): an INVITE branch without a final response by
    # then is cancelled and counts as a 408 (RFC 3261 16.6 item 11, Timer C).
    fr_inv_timeout: int = 120
    dialog_timeout: int = 43200  # ours: seconds a dialog is kept without a BYE
    max_dialogs: int = 100000  # ours: dialogs tracked at most at a time
    # Kamailio README 3.24: a function of the script run for uac:reply events instead of
    # event_route[uac:reply]; called fn("uac:reply", msg, uac, tm, rr, dialog, sl).
    event_callback: str | None = None


@dataclass(frozen=True)
class Settings:
    path: str = "<defaults>"
    core: CoreSettings = field(default_factory=CoreSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    uac: UACSettings = field(default_factory=UACSettings)
    rpc: RPCSettings = field(default_factory=RPCSettings)
    manhole: ManholeSettings = field(default_factory=ManholeSettings)
    log: LogSettings = field(default_factory=LogSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    cluster: ClusterSettings | None = None  # [cluster]: several nodes on one table (docs/cluster.rst)
    base_dir: str | None = None  # relative file names (TLS files, SQLite databases) start here


def parse_listen(text: str, where: str) -> ListenSpec:
    """A ``proto:host:port`` socket of the files (txuac.sip.listen.parse_listen); a bad one
    is a ConfigError naming ``where`` (the file and the key)."""
    try:
        return parse_listen_spec(text)
    except InvalidListenSpec as e:
        raise ConfigError(f"{where}: {e}") from None


class _Section:
    """Reads one table of the file, checking types and refusing unknown keys."""

    def __init__(self, path: str, name: str, table: Any):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        self.path = path
        self.name = name
        self.table = dict(table)

    def where(self, key: str) -> str:
        return f"{self.path}: [{self.name}] {key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.table:
            return default
        value = self.table.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are Python ints: refuse them where a number is expected.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{self.where(key)}: expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A boolean, also written as Kamailio writes its int flags: 0 or 1."""
        value = self.get(key, (bool, int), default)
        if not isinstance(value, bool):
            if value not in (0, 1):
                raise ConfigError(f"{self.where(key)}: expected a boolean (or 0/1), got {value}")
            value = bool(value)
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise ConfigError(f"{self.where(key)}: must be positive, got {value}")
        return value

    def finish(self) -> None:
        if self.table:
            unknown = ", ".join(sorted(self.table))
            raise ConfigError(f"{self.path}: [{self.name}] unknown key(s): {unknown}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "a boolean", int: "an integer", str: "a string", list: "a list", float: "a number", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _core(path: str, table: Any) -> CoreSettings:
    section = _Section(path, "core", table)
    defaults = CoreSettings()
    listen_raw = section.get("listen", list, None)
    if listen_raw is None:
        listen = defaults.listen
    else:
        if not listen_raw:
            raise ConfigError(f"{section.where('listen')}: at least one socket is needed")
        listen = tuple(parse_listen(item, f"{section.where('listen')}[{i}]") for i, item in enumerate(listen_raw))
        seen: dict[tuple[str, str, int], ListenSpec] = {}
        for spec in listen:
            # tcp: and tls: sockets are both TCP: they cannot share an address and port.
            key = ("udp" if spec.transport == "udp" else "tcp", spec.host, spec.port)
            if spec.port != 0 and key in seen:
                if spec == seen[key]:
                    raise ConfigError(f"{section.where('listen')}: {spec} is listed twice")
                raise ConfigError(f"{section.where('listen')}: {spec} and {seen[key]} are the same socket")
            seen[key] = spec
    dns_raw = section.get("dns_servers", list, [])
    dns_servers = tuple(_dns_server(item, f"{section.where('dns_servers')}[{i}]") for i, item in enumerate(dns_raw))
    settings = CoreSettings(
        listen=listen,
        user_agent=section.get("user_agent", str, defaults.user_agent),
        dns_servers=dns_servers,
        max_message_size=section.positive_int("max_message_size", defaults.max_message_size),
        timer_t1=section.positive_int("timer_t1", defaults.timer_t1),
        timer_t2=section.positive_int("timer_t2", defaults.timer_t2),
        timer_t4=section.positive_int("timer_t4", defaults.timer_t4),
        tcp_idle_timeout=section.positive_int("tcp_idle_timeout", defaults.tcp_idle_timeout),
        workers=_workers(section, defaults.workers),
    )
    section.finish()
    if not settings.user_agent.strip():
        raise ConfigError(f"{section.where('user_agent')}: must not be empty")
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in settings.user_agent):
        raise ConfigError(f"{section.where('user_agent')}: must be one line without control characters")
    if settings.timer_t2 < settings.timer_t1:
        raise ConfigError(f"{section.where('timer_t2')}: must not be smaller than timer_t1")
    if settings.workers > 1 and any(spec.port == 0 for spec in settings.listen):
        # Every worker binds the same port: one the system picks differs in each.
        raise ConfigError(f"{section.where('listen')}: port 0 cannot be shared by {settings.workers} workers")
    return settings


def _workers(section: _Section, default: int) -> int:
    """A positive number of processes, or "auto": one per core."""
    value = section.get("workers", (int, str), default)
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, str) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{section.where('workers')}: expected 1 to {MAX_WORKERS} or \"auto\", got {value!r}")
    return value


def _dns_server(text: Any, where: str) -> tuple[str, int]:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected 'address' or 'address:port' strings")
    host, port = text, 53
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ConfigError(f"{where}: {text!r} is not 'address', 'address:port' or '[IPv6]:port'")
        if rest:
            port = _port(rest[1:], where)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, where)
    return str(_ip_address(host, text.startswith("["), text, where)), port


def _ip_address(host: str, bracketed: bool, text: str, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``host`` as an IP address; brackets only around IPv6 ones."""
    try:
        return ip_address_in(host, bracketed, text)
    except InvalidListenSpec as e:
        raise ConfigError(f"{where}: {e}") from None


def _port(text: str, where: str) -> int:
    if not _is_number(text) or not 0 < int(text) < 65536:
        raise ConfigError(f"{where}: invalid port {text!r}")
    return int(text)


def _tls(path: str, table: Any, base_dir: str | None) -> TLSSettings:
    section = _Section(path, "tls", table)
    files = {key: _readable_file(section, key, base_dir) for key in ("certificate", "private_key", "ca_file")}
    server_names = section.get("server_names", dict, {})
    for name, expected in server_names.items():
        if not isinstance(expected, str) or not expected:
            raise ConfigError(f"{section.where('server_names')}: {name}: expected a host name")
    settings = TLSSettings(**files, verify_server=section.get("verify_server", bool, True),
                           server_names=tuple((name.lower(), expected) for name, expected in server_names.items()))
    section.finish()
    if settings.certificate is not None and settings.private_key is None:
        raise ConfigError(f"{section.where('private_key')}: must be set when certificate is")
    if settings.private_key is not None and settings.certificate is None:
        raise ConfigError(f"{section.where('certificate')}: must be set when private_key is")
    return settings


def _readable_file(section: _Section, key: str, base_dir: str | None) -> str | None:
    """A file name from the config, relative to the config file's directory (as in Kamailio),
    checked now so that a typo fails at start-up and not at the first TLS connection."""
    name = section.get(key, str, None)
    if name is None:
        return None
    if not name:
        raise ConfigError(f"{section.where(key)}: must not be empty")
    if base_dir is not None:
        name = os.path.join(base_dir, name)
    try:
        with open(name, "rb"):
            pass
    except OSError as e:
        raise ConfigError(f"{section.where(key)}: cannot read {name}: {e.strerror or e}") from None
    return name


def _uac(path: str, table: Any, watch_default: bool = False) -> UACSettings:
    """[uac]; ``watch_default``: reg_db_watch when the file does not set it ([cluster] is)."""
    section = _Section(path, "uac", table)
    credential = section.get("credential", list, [])
    if not all(isinstance(entry, str) for entry in credential):
        raise ConfigError(f"{section.where('credential')}: expected a list of 'user:realm:password' strings")
    try:
        CredentialList(credential)
    except ConfigError as e:
        raise ConfigError(f"{section.where('credential')}: {e}") from None
    algorithms = section.get("auth_algorithms", list, list(ALL_ALGORITHMS))
    canonical = []
    for index, name in enumerate(algorithms):
        if not isinstance(name, str) or name.strip().upper() not in ALL_ALGORITHMS:
            raise ConfigError(f"{section.where('auth_algorithms')}[{index}]: {name!r} is not one of "
                              f"{', '.join(ALL_ALGORITHMS)}")
        canonical.append(name.strip().upper())
    if not canonical:
        raise ConfigError(f"{section.where('auth_algorithms')}: at least one algorithm is needed")
    defaults = UACSettings()
    numbers = {name: section.get(name, int, getattr(defaults, name)) for name in _UAC_INTEGERS}
    for name, value in numbers.items():
        if value < 0:
            raise ConfigError(f"{section.where(name)}: must not be negative, got {value}")
    for name in ("reg_send_rate", "reg_max_in_flight", "reg_dest_max_in_flight", "reg_dest_rate",
                 "reg_ping_up_count", "reg_ping_down_count", "reg_probe_interval", "reg_probe_max_interval",
                 "reg_timer_t2"):
        if numbers[name] <= 0:
            raise ConfigError(f"{section.where(name)}: must be positive")
    if numbers["reg_retry_jitter"] > 100:
        raise ConfigError(f"{section.where('reg_retry_jitter')}: a percentage from 0 to 100, "
                          f"got {numbers['reg_retry_jitter']}")
    settings = UACSettings(
        credential=tuple(credential),
        auth_algorithms=tuple(canonical),
        auth_prefer_auth_int=section.get("auth_prefer_auth_int", bool, False),
        reg_db_url=section.get("reg_db_url", str, None) or None,
        reg_db_table=section.get("reg_db_table", str, defaults.reg_db_table),
        reg_ext_table=section.get("reg_ext_table", str, defaults.reg_ext_table),
        reg_contact_addr=section.get("reg_contact_addr", str, None) or None,
        reg_unregister_on_stop=section.get("reg_unregister_on_stop", bool, defaults.reg_unregister_on_stop),
        reg_probe=section.get("reg_probe", bool, defaults.reg_probe),
        reg_db_watch=section.get("reg_db_watch", bool, watch_default),
        default_socket=section.get("default_socket", str, None) or None,
        **numbers,
    )
    section.finish()
    if settings.reg_db_url is not None:
        if settings.reg_contact_addr is None:
            # As in Kamailio: the Contact host of every REGISTER must be known.
            raise ConfigError(f"{section.where('reg_contact_addr')}: required when reg_db_url is set")
        try:
            store_url = parse_store_url(settings.reg_db_url)
        except ConfigError as e:
            raise ConfigError(f"{section.where('reg_db_url')}: {e}") from None
        if store_url.kind == "sqlite" and settings.reg_db_watch and "reg_db_watch" in table:
            raise ConfigError(f"{section.where('reg_db_watch')}: needs a PostgreSQL or MySQL reg_db_url: other "
                              f"processes' changes to an SQLite file cannot be followed")
    check_table_name(settings.reg_db_table, section.where("reg_db_table"))
    check_table_name(settings.reg_ext_table, section.where("reg_ext_table"))
    if settings.reg_ext_table == settings.reg_db_table:
        raise ConfigError(f"{section.where('reg_ext_table')}: must not be reg_db_table ({settings.reg_db_table!r})")
    return settings


_UAC_INTEGERS = ("reg_timer_interval", "reg_retry_interval", "reg_retry_max_interval", "reg_forbidden_retry_interval",
                 "reg_fatal_retry_interval", "reg_retry_jitter", "reg_random_delay", "reg_keep_callid", "reg_active",
                 "reg_use_domain", "reg_hash_size", "reg_gc_interval", "reload_delta", "reg_send_rate",
                 "reg_max_in_flight", "reg_dest_max_in_flight", "reg_dest_rate", "reg_keepalive_interval",
                 "reg_options_ping_interval", "reg_ping_up_count", "reg_ping_down_count",
                 "reg_probe_interval", "reg_probe_max_interval", "reg_timer_t2", "reg_db_connect_retry")


def parse_endpoint(text: str, where: str) -> tuple[str, list[str], dict[str, str]]:
    """A Twisted server endpoint string split as Twisted does (``\\:`` escapes a colon):
    its type, positional arguments and keyword arguments."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: expected an endpoint string like 'tcp:5064:interface=127.0.0.1'")
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind, args, kwargs = parts[0].lower(), [], {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if sep:
            kwargs[name] = value
        else:
            args.append(part)
    if kind in ("tcp", "tcp6", "ssl"):
        port = kwargs.get("port", args[0] if args else "")
        if not _is_number(port) or int(port) > 65535:
            raise ConfigError(f"{where}: {text!r} needs a port number (like 'tcp:5064:interface=127.0.0.1')")
    return kind, args, kwargs


def endpoint_is_local(text: str, where: str) -> bool:
    """True when an endpoint string only accepts connections from this host: a UNIX
    socket, or TCP bound to a loopback address (Twisted binds to all addresses without
    ``interface``)."""
    kind, args, kwargs = parse_endpoint(text, where)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = kwargs.get("interface", args[2] if len(args) > 2 else "")
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(name: str) -> str:
    """The token kept in file ``name``: its first line, without the line end (OSError when unreadable)."""
    with open(name, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")


def _rpc(path: str, table: Any, base_dir: str | None) -> RPCSettings:
    section = _Section(path, "rpc", table)
    defaults = RPCSettings()
    token = section.get("token", str, None) or None
    token_file = _readable_file(section, "token_file", base_dir)
    if token_file is not None:
        if token is not None:
            raise ConfigError(f"{section.where('token_file')}: set token or token_file, not both")
        try:
            token = read_token_file(token_file)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{section.where('token_file')}: cannot read {token_file}: {e}") from None
        if not token:
            raise ConfigError(f"{section.where('token_file')}: {token_file} has no token on its first line")
    allowed_hosts = section.get("allowed_hosts", list, list(defaults.allowed_hosts))
    if not all(isinstance(host, str) and host.strip() for host in allowed_hosts):
        raise ConfigError(f"{section.where('allowed_hosts')}: expected a list of host names or addresses")
    settings = RPCSettings(
        enabled=section.get("enabled", bool, defaults.enabled),
        listen=section.get("listen", str, defaults.listen),
        token=token,
        token_file=token_file,
        show_secrets=section.get("show_secrets", bool, defaults.show_secrets),
        max_request_size=section.positive_int("max_request_size", defaults.max_request_size),
        allowed_hosts=tuple(host.strip() for host in allowed_hosts),
        binrpc=_local_address(section, "binrpc", tcp=True),
        binrpc_mode=_file_mode(section, "binrpc_mode", defaults.binrpc_mode),
        binrpc_user=section.get("binrpc_user", str, None) or None,
        binrpc_group=section.get("binrpc_group", str, None) or None,
        jsonrpc_fifo=section.get("jsonrpc_fifo", str, None) or None,
        jsonrpc_fifo_reply_dir=section.get("jsonrpc_fifo_reply_dir", str, defaults.jsonrpc_fifo_reply_dir),
        jsonrpc_socket=_local_address(section, "jsonrpc_socket", tcp=False),
        jsonrpc_mode=_file_mode(section, "jsonrpc_mode", defaults.jsonrpc_mode),
        jsonrpc_user=section.get("jsonrpc_user", str, None) or None,
        jsonrpc_group=section.get("jsonrpc_group", str, None) or None,
    )
    section.finish()
    if settings.jsonrpc_fifo is not None and not os.path.isdir(settings.jsonrpc_fifo_reply_dir):
        raise ConfigError(f"{section.where('jsonrpc_fifo_reply_dir')}: {settings.jsonrpc_fifo_reply_dir!r} "
                          "is not a directory")
    if settings.enabled:
        local = endpoint_is_local(settings.listen, section.where("listen"))
        if not local and settings.token is None:
            raise ConfigError(f"{section.where('token')}: required when listen is not loopback-only "
                              f"({settings.listen!r}): anyone who reaches the port could administer txuac")
        if settings.token is not None and len(settings.token) < 16:
            key = "token_file" if token_file is not None else "token"
            raise ConfigError(f"{section.where(key)}: too short to be a secret (16 characters at least)")
    return settings


def parse_local_address(text: str, where: str, tcp: bool) -> tuple[str, str, int]:
    """A Kamailio control address: ``("unix", path, 0)`` for ``unix:PATH`` (ctl's ``unixs:``
    too), ``("tcp", host, port)`` for ``tcp:HOST:PORT`` on a loopback address (``tcp``)."""
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if sep and kind in ("unix", "unixs") and rest:
        return "unix", rest, 0
    if tcp and sep and kind == "tcp":
        host, colon, port = rest.rpartition(":")
        host = host.strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not colon or not _is_number(port) or not 0 < int(port) <= 65535:
            raise ConfigError(f"{where}: {text!r} needs a port: 'tcp:127.0.0.1:2049'")
        if not loopback:
            raise ConfigError(f"{where}: {text!r}: only a loopback address (binrpc has no authentication)")
        return "tcp", host, int(port)
    forms = "'unix:/run/txuac/txuac_ctl' or 'tcp:127.0.0.1:2049'" if tcp else "'unix:/run/txuac/txuac_rpc.sock'"
    raise ConfigError(f"{where}: expected {forms}, got {text!r}")


def _local_address(section: _Section, key: str, tcp: bool) -> str | None:
    text = section.get(key, str, None) or None
    if text is not None:
        parse_local_address(text, section.where(key), tcp)
    return text


def _file_mode(section: _Section, key: str, default: int) -> int:
    """A file mode: an octal string ("0660") or a TOML integer (0o660)."""
    value = section.get(key, (str, int), default)
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ConfigError(f"{section.where(key)}: expected an octal mode like \"0660\", got {value!r}") from None
    if not 0 <= value <= 0o777:
        raise ConfigError(f"{section.where(key)}: expected a file mode between 0000 and 0777, got {value:o}")
    return value


def _manhole(path: str, table: Any, base_dir: str | None) -> ManholeSettings:
    section = _Section(path, "manhole", table)
    listen = section.get("listen", str, None) or None
    authorized_keys = _readable_file(section, "authorized_keys", base_dir)
    host_key = section.get("host_key", str, None) or None
    section.finish()
    if listen is None:
        return ManholeSettings()
    parse_endpoint(listen, section.where("listen"))
    if authorized_keys is None:
        raise ConfigError(f"{section.where('authorized_keys')}: required when listen is set "
                          "(public keys are the only way in)")
    if host_key is None:
        raise ConfigError(f"{section.where('host_key')}: required when listen is set (created when missing)")
    if base_dir is not None:
        host_key = os.path.join(base_dir, host_key)
    return ManholeSettings(listen=listen, authorized_keys=authorized_keys, host_key=host_key)


def _log(path: str, table: Any) -> LogSettings:
    section = _Section(path, "log", table)
    log_format = section.get("format", str, "text")
    level = section.get("level", str, "info")
    summary_interval = section.get("failure_summary_interval", (int, float), 10.0)
    section.finish()
    if summary_interval <= 0:
        raise ConfigError(f"{section.where('failure_summary_interval')}: must be positive, got {summary_interval}")
    if log_format not in ("text", "json"):
        raise ConfigError(f"{section.where('format')}: must be 'text' or 'json', got {log_format!r}")
    if level not in LOG_LEVELS:
        raise ConfigError(f"{section.where('level')}: must be one of {', '.join(map(repr, LOG_LEVELS))}, "
                          f"got {level!r}")
    return LogSettings(format=log_format, level=level, failure_summary_interval=float(summary_interval))


# RFC 3261 25.1 token characters: a Record-Route parameter name.
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_RESTORE_MODES = ("none", "manual", "auto")


def _routing(path: str, table: Any, base_dir: str | None) -> RoutingSettings:
    section = _Section(path, "routing", table)
    defaults = RoutingSettings()
    script = _readable_file(section, "script", base_dir)
    restore_mode = section.get("restore_mode", str, defaults.restore_mode)
    params = {key: section.get(key, str, getattr(defaults, key)) for key in ("rr_from_store_param", "rr_to_store_param")}
    avps = {key: _restore_avp(section, key) for key in ("restore_from_avp", "restore_to_avp")}
    settings = RoutingSettings(
        script=script,
        restore_mode=restore_mode.strip().lower(),  # case-insensitive, as Kamailio's mod_init
        restore_passwd=section.get("restore_passwd", str, defaults.restore_passwd),
        restore_dlg=section.flag("restore_dlg", defaults.restore_dlg),
        **params,
        **avps,
        restore_sign=section.get("restore_sign", bool, defaults.restore_sign),
        restore_sign_key=section.get("restore_sign_key", str, defaults.restore_sign_key),
        record_route=section.get("record_route", bool, defaults.record_route),
        dialog_timeout=section.positive_int("dialog_timeout", defaults.dialog_timeout),
        max_dialogs=section.positive_int("max_dialogs", defaults.max_dialogs),
        fr_inv_timeout=section.positive_int("fr_inv_timeout", defaults.fr_inv_timeout),
        event_callback=section.get("event_callback", str, None) or None,
    )
    section.finish()
    if settings.event_callback is not None:
        if not settings.event_callback.isidentifier():
            raise ConfigError(f"{section.where('event_callback')}: must be the name of a function of the "
                              f"script, got {settings.event_callback!r}")
        if settings.script is None:
            raise ConfigError(f"{section.where('event_callback')}: needs [routing] script (the function is "
                              "looked up in it)")
    if settings.restore_mode not in _RESTORE_MODES:
        raise ConfigError(f"{section.where('restore_mode')}: must be one of "
                          f"{', '.join(map(repr, _RESTORE_MODES))}, got {restore_mode!r}")
    for key, name in params.items():
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ConfigError(f"{section.where(key)}: must be a Record-Route parameter name "
                              f"(RFC 3261 token), got {name!r}")
        if name.lower() in ("lr", "ftag", "r2", "transport", "maddr"):
            raise ConfigError(f"{section.where(key)}: {name!r} is a Record-Route parameter of its own")
    if settings.rr_from_store_param.lower() == settings.rr_to_store_param.lower():
        raise ConfigError(f"{section.where('rr_to_store_param')}: must differ from rr_from_store_param")
    if settings.restore_sign and not (settings.restore_sign_key or settings.restore_passwd):
        raise ConfigError(f"{section.where('restore_sign_key')}: required when restore_sign = true "
                          "and restore_passwd is empty (the signing key)")
    return settings


def _restore_avp(section: _Section, key: str) -> bool:
    """A boolean, or Kamailio's ``$avp(name)`` (on) or "" (off): see RoutingSettings."""
    value = section.get(key, (bool, str), False)
    if isinstance(value, bool):
        return value
    if value == "":
        return False
    if not (value.startswith("$avp(") and value.endswith(")") and len(value) > 6):
        raise ConfigError(f"{section.where(key)}: must be true, false or an $avp(name), got {value!r}")
    return True


_SECTIONS = ("core", "tls", "uac", "rpc", "manhole", "log", "routing", "cluster")
_NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _cluster(path: str, table: Any, uac: UACSettings) -> ClusterSettings:
    """[cluster]: a node of several sharing reg_db_url's table (PostgreSQL or MySQL only)."""
    section = _Section(path, "cluster", table)
    node_id = section.get("node_id", str, None)
    partitions = section.positive_int("partitions", 256)
    lease_period = float(section.get("lease_period", (int, float), 6.0))
    renew_interval = float(section.get("renew_interval", (int, float), 1.0))
    state_write_interval = float(section.get("state_write_interval", (int, float), 1.0))
    section.finish()
    if node_id is None:
        raise ConfigError(f"{section.where('node_id')}: required when [cluster] is set (unique per node)")
    if not 1 <= len(node_id) <= 64 or not set(node_id) <= _NODE_ID_CHARS:
        raise ConfigError(f"{section.where('node_id')}: 1 to 64 of A-Z a-z 0-9 . _ -, got {node_id!r}")
    if partitions > 65536:
        raise ConfigError(f"{section.where('partitions')}: at most 65536, got {partitions}")
    if lease_period <= 0:
        raise ConfigError(f"{section.where('lease_period')}: must be positive, got {lease_period}")
    if not 0 < renew_interval < lease_period / 3:
        raise ConfigError(f"{section.where('renew_interval')}: must be positive and below lease_period / 3 "
                          f"({lease_period / 3:g}), got {renew_interval}")
    if state_write_interval <= 0:
        raise ConfigError(f"{section.where('state_write_interval')}: must be positive, got {state_write_interval}")
    if uac.reg_db_url is None or parse_store_url(uac.reg_db_url).kind not in ("postgres", "mysql"):
        raise ConfigError(f"{path}: [uac] reg_db_url: [cluster] needs a postgres:// or mysql:// URL (the nodes "
                          f"share its database; an SQLite file is one machine's)")
    return ClusterSettings(node_id=node_id, partitions=partitions, lease_period=lease_period,
                           renew_interval=renew_interval, state_write_interval=state_write_interval)


def load_settings(path: str) -> Settings:
    """Read and validate the TOML file at ``path``.

    Relative file names in it ([tls] certificate, ...) are relative to its directory.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return settings_from_dict(document, path, base_dir=os.path.dirname(os.path.abspath(path)))


def settings_from_dict(document: dict, path: str = "<dict>", base_dir: str | None = None) -> Settings:
    """Validate an already parsed document (for embedding and tests).

    Relative file names are taken relative to ``base_dir``, or to the current directory.
    """
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a table of sections, got {type(document).__name__}")
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(unknown)}")
    parsed = {
        "core": _core(path, document.get("core", {})),
        "tls": _tls(path, document.get("tls", {}), base_dir),
        "uac": _uac(path, document.get("uac", {}), watch_default="cluster" in document),
        "rpc": _rpc(path, document.get("rpc", {}), base_dir),
        "manhole": _manhole(path, document.get("manhole", {}), base_dir),
        "log": _log(path, document.get("log", {})),
        "routing": _routing(path, document.get("routing", {}), base_dir),
    }
    if "cluster" in document:
        parsed["cluster"] = _cluster(path, document["cluster"], parsed["uac"])
        if parsed["core"].workers > 1:
            raise ConfigError(f"{path}: [cluster] and [core] workers above 1 together are not supported yet: "
                              f"run one process per node")
    settings = Settings(path=path, base_dir=base_dir, **parsed)
    if settings.uac.default_socket is not None:
        where = f"{path}: [uac] default_socket"
        if parse_listen(settings.uac.default_socket, where) not in settings.core.listen:
            # As Kamailio checks at start-up: it must be one of our sockets.
            raise ConfigError(f"{where}: {settings.uac.default_socket!r} is not in [core] listen")
    if any(spec.transport == "tls" for spec in settings.core.listen) and settings.tls.certificate is None:
        raise ConfigError(f"{path}: [core] listen has a tls: socket but [tls] certificate is not set")
    return settings
