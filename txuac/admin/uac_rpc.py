"""The RPC methods of a UACService: Kamailio's uac.* (names, parameters, result fields,
error codes and messages of K:src/modules/uac/uac_reg.c), core.*, system.* and stats.*.

Records carry Kamailio's fields in Kamailio's order, then ``state`` and ``last_error``, then
what the last 200 OK taught: ``path``, ``service_route``, ``pub_gruu``, ``temp_gruu``, ``flow_timer``.
``auth_password`` and ``auth_ha1`` are masked unless ``[rpc] show_secrets`` is true.
"""

from __future__ import annotations

import platform
import time

import twisted
from twisted.internet import defer
from twisted.logger import Logger

from txuac import __version__
from txuac.admin.rpc import INVALID_PARAMS, Dispatcher, Param, RPCError
from txuac.errors import AccountExists, StoreError, UnknownFilterAttribute
from txuac.registrant.record import Flag, InvalidRecord, RegistrationRecord, record_from_row

log = Logger()

MASK = "********"
FILTER_PARAMS = (Param("attr"), Param("val"))
INVALID_PARAMETERS = RPCError(400, "Invalid Parameters")
# Kamailio's code and message; ``data`` says what to do about it.
NOT_ENABLED = RPCError(500, "Not enabled", data="registration is off: set [uac] reg_db_url to the uacreg table "
                                                "(sqlite:///path, postgres://..., mysql://...)")
RECORD_NOT_FOUND = RPCError(404, "Record not found")
UUID_EXISTS = RPCError(409, "uuid already exists")
CLUSTER_OFF = RPCError(500, "Not enabled", data="this node is not in a cluster: set [cluster] (docs/cluster.rst)")

# uac.reg_add's positional parameters (Kamailio's order); the integers are typed.
REG_ADD_PARAMS = (
    Param("l_uuid"), Param("l_username"), Param("l_domain"), Param("r_username"), Param("r_domain"),
    Param("realm"), Param("auth_username"), Param("auth_password"), Param("auth_ha1"), Param("auth_proxy"),
    Param("expires", int), Param("flags", int), Param("reg_delay", int), Param("socket"), Param("contact_addr"),
    Param("contact_user"),
)
# "." stands for an empty value in these (Kamailio); for contact_addr it means reg_contact_addr.
DOT_MEANS_EMPTY = ("realm", "auth_password", "auth_ha1", "socket", "contact_addr", "contact_user")

UAC_METHODS = ("uac.reg_dump", "uac.reg_info", "uac.reg_enable", "uac.reg_disable", "uac.reg_register",
               "uac.reg_unregister", "uac.reg_reload", "uac.reg_refresh", "uac.reg_active", "uac.reg_add",
               "uac.reg_remove")


def record_struct(record: RegistrationRecord, now: float, show_secrets: bool = False,
                  reg_contact_addr: str | None = None) -> dict:
    """One record as uac.reg_dump and uac.reg_info show it. An empty contact_addr shows
    ``reg_contact_addr``, the address its REGISTERs carry, as Kamailio shows it."""
    if record.registered(now):
        timer_expires = record.expires_at
    elif record.has(Flag.ONGOING) and record.sent_at is not None:
        timer_expires = record.sent_at
    else:
        timer_expires = record.due_at  # the next attempt
    timer_expires = int(timer_expires)
    return {
        "l_uuid": record.l_uuid,
        "l_username": record.l_username,
        "l_domain": record.l_domain,
        "r_username": record.r_username,
        "r_domain": record.r_domain,
        "realm": record.realm,
        "auth_username": record.auth_username,
        "auth_password": _secret(record.auth_password, show_secrets),
        "auth_ha1": _secret(record.auth_ha1, show_secrets),
        "auth_proxy": record.auth_proxy or "none",
        "expires": record.expires,
        "flags": record.flags,
        "diff_expires": timer_expires - int(now),
        "timer_expires": timer_expires,
        "reg_init": int(record.loaded_at),
        "reg_delay": record.reg_delay,
        "contact_addr": record.contact_addr or reg_contact_addr or "none",
        "socket": record.socket,
        "contact_user": record.contact_user or "none",
        "state": record.state(now).value,
        "last_error": record.last_failure,
        # Ours, from the last 200 OK: RFC 3327 Path, RFC 3608 Service-Route (lists of
        # entries), RFC 5627 GRUUs and the RFC 5626 Flow-Timer (null when not given).
        "path": list(record.path),
        "service_route": list(record.service_route),
        "pub_gruu": record.pub_gruu,
        "temp_gruu": record.temp_gruu,
        "flow_timer": record.flow_timer,
    }


def _secret(value: str, show: bool) -> str:
    if not value:
        return "none"
    return value if show else MASK


class UACMethods:
    """The methods bound to one UACService; ``register(dispatcher)`` adds them."""

    def __init__(self, uac, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.uac = uac
        self.reactor = reactor
        self.show_secrets = uac.settings.rpc.show_secrets
        self.started_at = reactor.seconds()
        self.dispatcher: Dispatcher | None = None

    @property
    def registrant(self):
        return self.uac.registrant

    def register(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        add = dispatcher.register
        add("system.listMethods", self.list_methods, doc="Lists the methods")
        add("system.methodHelp", self.method_help, (Param("method"),), missing=RPCError(400, "Method Name Expected"),
            doc="The help text of a method")
        add("core.uptime", self.uptime, doc="Now, when txuac started and the seconds since")
        add("core.version", self.version, doc="The txuac version")
        add("stats.get_statistics", self.get_statistics, params=None,
            doc="Counters: 'all', a group ('uac:') or names ('uac:regtotal')")
        add("cluster.status", self.cluster_status,
            doc="This cluster node: its partitions, the live nodes with their partitions, the lease deadline")
        if self.registrant is None:
            # As Kamailio: the methods exist, and say the registrant is not enabled.
            for name in UAC_METHODS:
                add(name, self.not_enabled, params=None, doc="Registration is not enabled (no reg_db_url)")
            return
        add("uac.reg_dump", self.reg_dump, (Param("scope"),), required=0,
            doc="All registration records; 'cluster': every account of the fleet, with its owner")
        add("uac.reg_info", self.reg_info, FILTER_PARAMS, missing=INVALID_PARAMETERS,
            doc="One record: attr (l_uuid, l_username, r_username, auth_username), val")
        add("uac.reg_enable", self.reg_enable, FILTER_PARAMS, missing=INVALID_PARAMETERS, audit=True,
            doc="Enable a record: attr, val")
        add("uac.reg_disable", self.reg_disable, FILTER_PARAMS, missing=INVALID_PARAMETERS, audit=True,
            doc="Disable a record (no un-REGISTER): attr, val")
        add("uac.reg_register", self.reg_register, FILTER_PARAMS, missing=INVALID_PARAMETERS, audit=True,
            doc="Send a REGISTER now: attr, val")
        add("uac.reg_unregister", self.reg_unregister, FILTER_PARAMS, missing=INVALID_PARAMETERS, audit=True,
            doc="Send a REGISTER with Expires 0 now: attr, val")
        add("uac.reg_reload", self.reg_reload, audit=True, doc="Reload every record from the store")
        add("uac.reg_refresh", self.reg_refresh, (Param("l_uuid"),), missing=INVALID_PARAMETERS, audit=True,
            doc="Reload one record from the store: l_uuid")
        add("uac.reg_active", self.reg_active, (Param("mode", int),), missing=RPCError(500, "Missing parameter"),
            audit=True, doc="Switch all registrations on (1) or off (0)")
        add("uac.reg_add", self.reg_add, REG_ADD_PARAMS, required=15, missing=INVALID_PARAMETERS, audit=True,
            doc="Add a record in memory (in a cluster: to the table): the 15 or 16 uacreg columns")
        add("uac.reg_remove", self.reg_remove, (Param("l_uuid"),), missing=INVALID_PARAMETERS, audit=True,
            doc="Remove a record from memory (in a cluster: from the table): l_uuid")

    # --- system, core, stats ----------------------------------------------------------
    def list_methods(self) -> list[str]:
        return self.dispatcher.names() if self.dispatcher is not None else []

    def method_help(self, name: str) -> str:
        """Kamailio's answer: the method's help text, 400 "command not found" for no method."""
        method = self.dispatcher.methods.get(name) if self.dispatcher is not None else None
        if method is None:
            raise RPCError(400, "command not found")
        return method.doc or "undocumented"

    def uptime(self) -> dict:
        now = self.reactor.seconds()
        return {"now": time.ctime(now), "up_since": time.ctime(self.started_at),
                "uptime": int(now - self.started_at)}

    def version(self) -> str:
        return (f"txuac {__version__} (Python {platform.python_version()}, "
                f"Twisted {twisted.__version__}, {platform.system().lower()})")

    def counters(self) -> dict[str, dict[str, int]]:
        """Counters by group: uac (Kamailio's, derived from state, and ours) and sip."""
        groups: dict[str, dict[str, int]] = {}
        if self.registrant is not None:
            groups["uac"] = dict(self.registrant.counters())
        stack = self.uac.stack
        sip = {"parse_errors": int(stack.parse_errors)}
        for kind, outcomes in (("client", stack.client_outcomes), ("server", stack.server_outcomes)):
            for (method, outcome), count in sorted(outcomes.items()):
                sip[f"{kind}_{method}_{outcome}"] = count
        groups["sip"] = sip
        return groups

    def get_statistics(self, *names) -> list[str]:
        """Kamailio's ``stats.get_statistics``: lines ``group:name = value``."""
        if not names:
            raise RPCError(400, "Please provide which stats to retrieve")
        groups = self.counters()
        lines: list[str] = []
        for name in names:
            if not isinstance(name, str):
                raise RPCError(-32602, data="stats.get_statistics takes names (strings)")
            group, colon, counter = name.partition(":")
            for group_name, values in groups.items():
                for counter_name, value in values.items():
                    if (name == "all" or (colon and group == group_name and counter in ("", counter_name))
                            or (not colon and name == counter_name)):
                        line = f"{group_name}:{counter_name} = {value}"
                        if line not in lines:
                            lines.append(line)
        return lines

    # --- uac ----------------------------------------------------------------------
    def not_enabled(self, *_):
        raise NOT_ENABLED

    def reg_dump(self, scope: str | None = None):
        if scope == "cluster":
            return self._cluster().fleet()
        if scope is not None:
            raise RPCError(INVALID_PARAMS, data=f"uac.reg_dump takes no parameter or 'cluster', not {scope!r}")
        now = self.registrant.now()
        contact_addr = self.registrant.settings.reg_contact_addr
        return [record_struct(record, now, self.show_secrets, contact_addr)
                for record in self.registrant.records.values()]

    def _in_cluster(self) -> bool:
        return getattr(self.uac, "cluster", None) is not None

    def _cluster(self):
        if not self._in_cluster():
            raise CLUSTER_OFF
        return self.uac.cluster

    def cluster_status(self):
        return self._cluster().status()

    def _find(self, attr: str, val: str) -> RegistrationRecord:
        if not attr or not val:
            raise RPCError(400, "Invalid Parameter Values")
        try:
            record = self.registrant.find(attr, val)
        except UnknownFilterAttribute:
            raise RPCError(400, "Unsupported filter attribute") from None
        if record is None:
            raise RECORD_NOT_FOUND
        return record

    def reg_info(self, attr: str, val: str) -> dict:
        return record_struct(self._find(attr, val), self.registrant.now(), self.show_secrets,
                             self.registrant.settings.reg_contact_addr)

    def reg_enable(self, attr: str, val: str) -> None:
        record = self._find(attr, val)
        self.registrant.enable("l_uuid", record.l_uuid)

    def reg_disable(self, attr: str, val: str) -> None:
        record = self._find(attr, val)
        self.registrant.disable("l_uuid", record.l_uuid)

    def reg_register(self, attr: str, val: str) -> None:
        record = self._find(attr, val)
        self.registrant.send_register("l_uuid", record.l_uuid)  # answered at once; the cycle runs on

    def reg_unregister(self, attr: str, val: str) -> None:
        record = self._find(attr, val)
        self.registrant.send_unregister(record.l_uuid)

    @defer.inlineCallbacks
    def reg_reload(self):
        try:
            result = yield self.registrant.reload()
        except StoreError as e:
            log.error("uac.reg_reload failed: {error}", error=str(e))
            raise RPCError(500, "Failed to reload records - check log messages") from None
        if result < 0:
            log.warn("uac.reg_reload refused: the last reload was less than reload_delta "
                     "({reload_delta} s) ago", reload_delta=self.registrant.settings.reload_delta)
            raise RPCError(500, "Failed to shift records - check log messages")
        self.uac.bringup.arm()  # one line once the reloaded accounts are online
        return None

    @defer.inlineCallbacks
    def reg_refresh(self, l_uuid: str):
        # The store is asked first so that a row that is not there (404) is told apart
        # from a row that cannot be loaded (500).
        try:
            row = yield self.registrant.store.load_one(l_uuid)
        except StoreError as e:
            log.error("uac.reg_refresh of {l_uuid} failed: {error}", l_uuid=l_uuid, error=str(e))
            raise RPCError(500, "Failed to refresh record - check log messages") from None
        if row is None:
            raise RECORD_NOT_FOUND
        result = yield self.registrant.refresh(l_uuid)
        if result < 0:
            raise RPCError(500, "Failed to refresh record - check log messages")
        return None

    def reg_active(self, mode: int) -> dict:
        old = self.registrant.set_active(mode != 0)
        return {"omode": int(old), "nmode": mode}

    def reg_add(self, *values):
        """Kamailio's: the account added in memory. In a cluster the row is added to the
        table instead (answered once committed): the change feed brings it to its owner."""
        row = {spec.name: value for spec, value in zip(REG_ADD_PARAMS, values)}
        for name in DOT_MEANS_EMPTY:
            if row.get(name) == ".":
                row[name] = ""
        in_cluster = self._in_cluster()
        if not in_cluster and row["l_uuid"] in self.registrant.records:
            raise UUID_EXISTS
        try:
            record_from_row(row, self.registrant.now())  # validated as the store loader does
        except InvalidRecord as e:
            # Kamailio's code and message; ``data`` names the field and the reason.
            if e.field in ("auth_password", "auth_ha1"):
                raise RPCError(500, "Failed to add record - invalid password or ha1", data=str(e)) from None
            raise RPCError(400, "Invalid Parameter Values", data=str(e)) from None
        if in_cluster:
            return self._add_to_table(row)
        result = self.registrant.add(row)
        if result == 409:
            raise UUID_EXISTS
        if result != 1:
            raise RPCError(500, "Failed to add record - check log messages")
        return None

    @defer.inlineCallbacks
    def _add_to_table(self, row: dict):
        try:
            yield self.registrant.add_to_table(row)
        except AccountExists:
            raise UUID_EXISTS from None
        except StoreError as e:
            log.error("uac.reg_add of {l_uuid} failed: {error}", l_uuid=row["l_uuid"], error=str(e))
            raise RPCError(500, "Failed to add record - check log messages") from None
        return None

    def reg_remove(self, l_uuid: str):
        """Kamailio's: the account forgotten in memory. In a cluster the row is deleted from
        the table instead: its owner unregisters the account."""
        if self._in_cluster():
            return self._remove_from_table(l_uuid)
        if self.registrant.remove(l_uuid) != 1:
            raise RECORD_NOT_FOUND
        return None

    @defer.inlineCallbacks
    def _remove_from_table(self, l_uuid: str):
        try:
            deleted = yield self.registrant.remove_from_table(l_uuid)
        except StoreError as e:
            log.error("uac.reg_remove of {l_uuid} failed: {error}", l_uuid=l_uuid, error=str(e))
            raise RPCError(500, "Failed to remove record - check log messages") from None
        if not deleted:
            raise RECORD_NOT_FOUND
        return None


def build_dispatcher(uac, reactor=None) -> Dispatcher:
    """A Dispatcher with the methods of ``uac``, for transports without the HTTP server."""
    dispatcher = Dispatcher(reactor)
    UACMethods(uac, reactor).register(dispatcher)
    return dispatcher
