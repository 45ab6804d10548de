"""The cluster tables' transactions, run on a DB-API cursor in the cluster pool's thread.

Both backends share these functions; what differs (the clock expressions, the upsert and
SKIP LOCKED syntax, the driver) is a ClusterSQL each backend module gives
(txuac.registrant.cluster.postgres, .mysql). Every time is taken from the database's clock.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

from txuac.errors import StoreError
from txuac.registrant.cluster.leases import LeasePlan, LeaseRow, live_nodes, plan
from txuac.registrant.record import Flag

NODE_TABLE = "txuac_cluster_node"
LEASE_TABLE = "txuac_cluster_lease"
ACCOUNT_TABLE = "txuac_cluster_account"
ACCOUNT_COLUMNS = ("l_uuid", "owner_node", "bound_contact", "flags", "last_error", "next_attempt")
WRITE_BATCH = 500  # fleet-view rows per INSERT
# Seconds a node's row stays after its last heartbeat (a clean stop, kill -9, a node renamed):
# its contact_addr tells takers which Contact to remove, and a binding it left at a registrar
# lasts at most the expires the registrar granted (an hour at most by Kamailio's default). A
# day leaves room for that; rows older than that are deleted when a node starts, so the
# table does not grow with every name a node ever had.
NODE_RETENTION = 86400.0
_HEADER_END = "BEGIN;"


@dataclass(frozen=True)
class ClusterSQL:
    """What one backend writes differently."""

    kind: str  # "postgres" or "mysql": the schema file schema/<kind>-cluster.sql
    now: str  # the database's current time as a timestamp expression
    epoch: str  # "{}" turned into unix seconds
    later: str  # the database's time plus one parameter (lease_until's value)
    later_scale: float  # seconds times this is the parameter of ``later``
    upsert: str  # "pg" (ON CONFLICT) or "mysql" (ON DUPLICATE KEY)
    insert_ignore: str  # the INSERT of rows that may exist already: "{}" the rest of the statement
    # Taken first by prepare() and given back once it committed: nodes starting together
    # create and fill the tables one at a time (an empty unlock: the lock ends with the transaction).
    prepare_lock: str = ""
    prepare_unlock: str = ""
    # Run first in a tick: ``now`` then means the transaction's start in every statement, as
    # PostgreSQL's does (empty there). A tick stuck through an outage otherwise compares the
    # heartbeats written before it with a now after it, finds every other node dead and takes
    # every partition, to hand most of them back at the next tick.
    freeze_now: tuple[str, ...] = ()

    def schema(self) -> list[str]:
        """The statements of schema/<kind>-cluster.sql (without BEGIN/COMMIT and comments)."""
        text = importlib.resources.files("txuac.registrant.store").joinpath(
            f"schema/{self.kind}-cluster.sql").read_text("utf-8")
        body = text[text.index(_HEADER_END) + len(_HEADER_END):].replace("COMMIT;", "")
        return [statement.strip() for statement in body.split(";") if statement.strip()]

    def seconds(self, value: float) -> float | int:
        """The parameter of ``later`` for ``value`` seconds (negative: earlier)."""
        scaled = value * self.later_scale
        return scaled if self.later_scale == 1.0 else int(scaled)

    def upsert_statement(self, table: str, columns: Sequence[str], key: str, rows: int, stamp: str) -> str:
        """INSERT of ``rows`` rows of ``columns`` (then ``stamp`` = the database's now),
        replacing every column of a row whose ``key`` exists."""
        values = "(" + ", ".join(["%s"] * len(columns) + [self.now]) + ")"
        names = ", ".join([*columns, stamp])
        updated = [c for c in (*columns, stamp) if c != key]
        if self.upsert == "pg":
            tail = f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updated)
        else:
            tail = "ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in updated)
        return f"INSERT INTO {table} ({names}) VALUES {', '.join([values] * rows)} {tail}"


def _in(values: Iterable) -> tuple[str, list]:
    listed = sorted(values)
    return ", ".join(["%s"] * len(listed)), listed


class TickResult(NamedTuple):
    """What one tick's transaction did."""

    planned: LeasePlan  # renew/acquire as committed (not as hoped)
    db_now: float
    nodes: dict[str, float]  # every node's heartbeat, unix seconds on the DB clock
    leases: dict[int, str | None]  # each partition's holder after the tick
    # Acquired partitions whose expired lease had a holder (another node, or this one in an
    # earlier run), as opposed to free ones (never held, or released by a clean stop).
    held_before: frozenset[int] = frozenset()
    # Every other node's contact_addr, read in this transaction: what a taker removes even
    # when the fleet view cannot be read (its connection lost in the outage just over).
    contact_addrs: tuple[str, ...] = ()


def prepare(cursor, sql: ClusterSQL, node_id: str, contact_addr: str, partitions: int) -> None:
    """Create the tables when missing, fill the lease table on first use, check its size
    (the fleet's partition number), and announce this node."""
    if sql.prepare_lock:
        cursor.execute(sql.prepare_lock)
    for statement in sql.schema():
        cursor.execute(statement)
    cursor.execute(f"SELECT COUNT(*) FROM {LEASE_TABLE}")
    count = int(cursor.fetchone()[0])
    if count == 0:
        rows = ", ".join(["(%s)"] * partitions)
        cursor.execute(sql.insert_ignore.format(f"{LEASE_TABLE} (partition_id) VALUES {rows}"),
                       list(range(partitions)))
        cursor.execute(f"SELECT COUNT(*) FROM {LEASE_TABLE}")
        count = int(cursor.fetchone()[0])
    if count != partitions:
        raise StoreError(f"[cluster] partitions is {partitions} but the fleet's {LEASE_TABLE} table has {count} "
                         f"partitions: every node must use the same number")
    cursor.execute(sql.upsert_statement(NODE_TABLE, ("node_id", "contact_addr"), "node_id", 1, "heartbeat_at"),
                   [node_id, contact_addr])
    cursor.execute(f"UPDATE {NODE_TABLE} SET started_at = {sql.now} WHERE node_id = %s", [node_id])
    cursor.execute(f"DELETE FROM {NODE_TABLE} WHERE heartbeat_at < {sql.later}", [sql.seconds(-NODE_RETENTION)])
    if sql.prepare_unlock:
        cursor.execute("COMMIT")
        cursor.execute(sql.prepare_unlock)


def tick(cursor, sql: ClusterSQL, node_id: str, contact_addr: str, lease_period: float,
         held: frozenset[int], releasing: frozenset[int]) -> TickResult:
    """Heartbeat, then renew, acquire and release as leases.plan says, each by a conditional
    UPDATE on rows locked first (acquisition skips rows another node has locked)."""
    for statement in sql.freeze_now:
        cursor.execute(statement)
    cursor.execute(sql.upsert_statement(NODE_TABLE, ("node_id", "contact_addr"), "node_id", 1, "heartbeat_at"),
                   [node_id, contact_addr])
    cursor.execute(f"SELECT {sql.epoch.format(sql.now)}")
    db_now = float(cursor.fetchone()[0])
    cursor.execute(f"SELECT node_id, {sql.epoch.format('heartbeat_at')}, contact_addr FROM {NODE_TABLE}")
    node_rows = cursor.fetchall()
    nodes = {str(row[0]): float(row[1]) for row in node_rows}
    addresses = tuple(sorted({str(row[2]) for row in node_rows if row[0] != node_id and row[2]}))
    cursor.execute(f"SELECT partition_id, node_id, {sql.epoch.format('expires_at')}, epoch FROM {LEASE_TABLE}")
    rows = [LeaseRow(int(p), n, float(e) if e is not None else None, int(x)) for p, n, e, x in cursor.fetchall()]
    wanted = plan(node_id, rows, live_nodes(nodes, db_now, lease_period, node_id), db_now, held, releasing)
    until = sql.seconds(lease_period)
    renewed: set[int] = set()
    if wanted.renew:
        marks, values = _in(wanted.renew)
        cursor.execute(f"SELECT partition_id FROM {LEASE_TABLE} WHERE partition_id IN ({marks}) AND node_id = %s "
                       f"AND expires_at > {sql.now} FOR UPDATE", [*values, node_id])
        renewed = {int(row[0]) for row in cursor.fetchall()}
        if renewed:
            marks, values = _in(renewed)
            cursor.execute(f"UPDATE {LEASE_TABLE} SET expires_at = {sql.later} WHERE partition_id IN ({marks})",
                           [until, *values])
    acquired: dict[int, str | None] = {}
    if wanted.acquire:
        marks, values = _in(wanted.acquire)
        cursor.execute(f"SELECT partition_id, node_id FROM {LEASE_TABLE} WHERE partition_id IN ({marks}) "
                       f"AND (node_id IS NULL OR node_id = %s OR expires_at IS NULL OR expires_at <= {sql.now}) "
                       f"FOR UPDATE SKIP LOCKED", [*values, node_id])
        acquired = {int(row[0]): row[1] for row in cursor.fetchall()}
        if acquired:
            marks, values = _in(acquired)
            cursor.execute(f"UPDATE {LEASE_TABLE} SET node_id = %s, expires_at = {sql.later}, epoch = epoch + 1 "
                           f"WHERE partition_id IN ({marks})", [node_id, until, *values])
    if wanted.release:
        marks, values = _in(wanted.release)
        cursor.execute(f"UPDATE {LEASE_TABLE} SET node_id = NULL, expires_at = NULL WHERE partition_id IN ({marks}) "
                       f"AND node_id = %s", [*values, node_id])
    holders = {row.partition: row.node_id for row in rows}
    holders.update({p: node_id for p in acquired})
    holders.update({p: None for p in wanted.release})
    taken_from = {p: str(before) for p, before in acquired.items() if before is not None and before != node_id}
    committed = LeasePlan(frozenset(renewed), frozenset(acquired), wanted.release,
                          wanted.hand_off & frozenset(renewed), taken_from)
    held_before = frozenset(p for p, before in acquired.items() if before is not None)
    return TickResult(committed, db_now, nodes, holders, held_before, addresses)


def release_all(cursor, sql: ClusterSQL, node_id: str, lease_period: float) -> None:
    """A clean stop: every lease of this node free at once, and the node no longer live (its
    heartbeat two lease periods back). Its row and contact_addr stay: the takers remove its
    bindings by that address (RFC 3261 10.2.2), which it leaves with reg_unregister_on_stop
    false as a killed node does."""
    cursor.execute(f"UPDATE {LEASE_TABLE} SET node_id = NULL, expires_at = NULL WHERE node_id = %s", [node_id])
    cursor.execute(f"UPDATE {NODE_TABLE} SET heartbeat_at = {sql.later} WHERE node_id = %s",
                   [sql.seconds(-2 * lease_period), node_id])


class AccountView(NamedTuple):
    """One account as its owner writes it into the fleet view."""

    l_uuid: str
    owner_node: str
    bound_contact: str
    flags: int
    last_error: str
    next_attempt: float


def write_accounts(cursor, sql: ClusterSQL, views: Sequence[AccountView]) -> None:
    for start in range(0, len(views), WRITE_BATCH):
        batch = views[start:start + WRITE_BATCH]
        parameters: list = []
        for view in batch:
            parameters.extend((view.l_uuid, view.owner_node, view.bound_contact[:255], int(view.flags),
                               view.last_error[:255], float(view.next_attempt)))
        cursor.execute(sql.upsert_statement(ACCOUNT_TABLE, ACCOUNT_COLUMNS, "l_uuid", len(batch), "updated_at"),
                       parameters)


def bound_contacts(cursor, node_id: str) -> dict[str, str]:
    """The Contact other nodes registered for each account they wrote in the fleet view."""
    cursor.execute(f"SELECT l_uuid, bound_contact FROM {ACCOUNT_TABLE} WHERE owner_node <> %s "
                   f"AND bound_contact <> ''", [node_id])
    return {str(l_uuid): str(contact) for l_uuid, contact in cursor.fetchall()}


FLEET_COLUMNS = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
                 "auth_proxy", "expires")


def _state(flags: int, last_error: str, owner: str) -> str:
    """reg_dump's state as far as the fleet view tells it (flags and the last error)."""
    if not owner:
        return "waiting"
    if flags & Flag.DISABLED:
        return "disabled"
    if flags & Flag.ONGOING:
        return "registering"
    if flags & Flag.ONLINE:
        return "online"
    return "failed" if last_error else "waiting"


def fleet(cursor, sql: ClusterSQL, table: str) -> list[dict]:
    """Every account of uacreg with what its owner last wrote (owner '' when none has)."""
    columns = ", ".join(f"u.{c}" for c in FLEET_COLUMNS)
    cursor.execute(f"SELECT {columns}, a.owner_node, a.flags, a.last_error, a.next_attempt, a.bound_contact, "
                   f"{sql.epoch.format('a.updated_at')} FROM {table} u LEFT JOIN {ACCOUNT_TABLE} a "
                   f"ON a.l_uuid = u.l_uuid ORDER BY u.l_uuid")
    result = []
    for row in cursor.fetchall():
        entry = dict(zip(FLEET_COLUMNS, row))
        owner, flags, last_error, next_attempt, contact, updated = row[len(FLEET_COLUMNS):]
        entry.update(owner=owner or "", state=_state(int(flags or 0), last_error or "", owner or ""),
                     flags=int(flags or 0), last_error=last_error or None,
                     next_attempt=float(next_attempt or 0), bound_contact=contact or "",
                     updated_at=float(updated) if updated is not None else None)
        result.append(entry)
    return result


def status_rows(cursor, sql: ClusterSQL) -> tuple[float, dict[str, float], dict[str, int]]:
    """The DB's now, every node's heartbeat, and how many live leases each node holds."""
    cursor.execute(f"SELECT {sql.epoch.format(sql.now)}")
    db_now = float(cursor.fetchone()[0])
    cursor.execute(f"SELECT node_id, {sql.epoch.format('heartbeat_at')} FROM {NODE_TABLE}")
    nodes = {str(n): float(at) for n, at in cursor.fetchall()}
    cursor.execute(f"SELECT node_id, COUNT(*) FROM {LEASE_TABLE} WHERE node_id IS NOT NULL "
                   f"AND expires_at > {sql.now} GROUP BY node_id")
    held = {str(n): int(c) for n, c in cursor.fetchall()}
    return db_now, nodes, held
