"""Where registration accounts come from: Kamailio's ``uacreg`` table, behind one interface.

Backends own their SQL: SQLite through twisted.enterprise.adbapi (the embedded
default) and PostgreSQL through txpostgres. Rows come back as plain dicts with
Kamailio's column names; validating them is the registrant's job, so that a bad
row is skipped with a reason instead of failing a whole load.

Beside ``uacreg`` (whose schema stays Kamailio's) each store keeps a table of ours,
``uacreg_txuac`` by default (``reg_ext_table``): per-account settings Kamailio has no
column for, and the state txuac keeps across restarts (the account's Call-ID and the
highest CSeq it may have used with it). Rows come back merged with it (a LEFT JOIN: an
account without a row there gets the EXT_DEFAULTS), and save_states() writes the state.
"""

from __future__ import annotations

from typing import NamedTuple

from zope.interface import Attribute, Interface

from txuac.errors import ConfigError
from txuac.registrant.store.url import StoreURL, check_table_name, parse_store_url

# Kamailio's uacreg columns in its own order (K:uac_reg.c uac_reg_load_db); contact_user
# exists from table version 6 on.
COLUMNS = (
    "l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
    "auth_password", "auth_ha1", "auth_proxy", "expires", "flags", "reg_delay", "contact_addr",
    "socket", "contact_user",
)
SUPPORTED_TABLE_VERSIONS = (5, 6)

# Our own table beside uacreg (schema/*-txuac.sql), keyed by l_uuid, and its version row.
DEFAULT_EXT_TABLE = "uacreg_txuac"
EXT_TABLE_VERSION = 1
EXT_COLUMNS = ("call_id", "cseq", "user_agent", "extra_headers", "from_username", "outbound", "instance_id",
               "reg_id", "options_ping")
# What a row of uacreg without a row in our table reads as.
EXT_DEFAULTS = {"call_id": "", "cseq": 0, "user_agent": "", "extra_headers": "", "from_username": "",
                "outbound": 0, "instance_id": "", "reg_id": 1, "options_ping": 0}


class AccountState(NamedTuple):
    """What save_states() writes for one account: its Call-ID, the CSeq a restart must start
    above (the highest it may have used), and its RFC 5626 instance ID."""

    l_uuid: str
    call_id: str
    cseq: int
    instance_id: str


class IRegistrationStore(Interface):
    """A uacreg table. Every method returns a Deferred; failures are StoreError."""

    url = Attribute("The store's URL with the password masked, for logs.")
    table_version = Attribute("The table version read by open(): 5 (no contact_user) or 6.")
    ext_table = Attribute("Our own table's name, or None when open() could neither find nor create it "
                          "(rows then read as EXT_DEFAULTS and save_states() keeps nothing).")

    def open():  # noqa: N805 - zope interface signature
        """Connect (creating the table and its version row in an SQLite file that does not
        exist or is empty; never a directory) and check the table version: Deferred[None]; StoreError when the
        version is not 5 or 6 or the table is missing. Our own table is created when missing
        (logged once); when that fails, a warning says so and the store works without it."""

    def load_all():  # noqa: N805
        """Deferred[list[dict]]: every row, keys as in COLUMNS (contact_user '' on version 5)
        and EXT_COLUMNS (from our table, EXT_DEFAULTS for an account without a row there)."""

    def load_keys():  # noqa: N805
        """Deferred[list[str]]: the l_uuid of every row, and nothing else: what a process that
        registers only some accounts reads first, to load the rows of its own (load_many)."""

    def load_one(l_uuid):  # noqa: N805
        """Deferred[dict | None]: the row with this l_uuid (as load_all), None when there is none."""

    def load_many(l_uuids):  # noqa: N805
        """Deferred[list[dict]]: the rows with these l_uuids (as load_all); one missing from the
        table is missing from the list."""

    def insert_row(row):  # noqa: N805
        """Deferred[None]: add ``row`` (keys as COLUMNS; a missing one is '') to uacreg, in
        the columns of its table version (StoreError for a contact_user on version 5);
        AccountExists when a row with its l_uuid is there. Our own table is not touched."""

    def delete_row(l_uuid):  # noqa: N805
        """Deferred[bool]: delete the row with this l_uuid from uacreg; False when there is
        none. Its row in our own table stays (the Call-ID and CSeq, for its return)."""

    def save_states(states):  # noqa: N805
        """Deferred[None]: write each AccountState's call_id, cseq and instance_id into our
        table in one transaction (a row is inserted for an account that has none; its other
        columns are the operator's and are left alone; a stored instance_id is kept)."""

    def close():  # noqa: N805
        """Deferred[None]: release connections."""


class IChangeFeed(Interface):
    """Live changes to a store's uacreg table (INSERT, UPDATE, DELETE by anyone), made by
    the store's ``change_feed()`` (PostgreSQL: LISTEN/NOTIFY; MySQL/MariaDB: a change log
    polled every second; SQLite has none)."""

    def start(on_changed):  # noqa: N805
        """Follow the table from now on: Deferred[None]. ``on_changed(l_uuids)`` gets each
        batch of changed l_uuids (a frozenset), or None when changes may have been missed (a
        reconnect): read everything again. One batch at a time: when it returns a Deferred,
        the next waits for it; when that fails, its l_uuids come again in a later batch."""

    def stop():  # noqa: N805
        """Deferred[None]: stop following, release the feed's connection."""


def open_store(url: str | StoreURL, reactor=None, table: str = "uacreg", base_dir: str | None = None,
               ext_table: str = "uacreg_txuac", connect_retry: float = 0.0):
    """The IRegistrationStore for ``url`` (not opened yet: call its open()).

    A relative SQLite path is taken from ``base_dir`` (default: the working directory, as
    Kamailio does). ``ext_table`` is our own table beside ``table`` (``reg_ext_table``).
    ``connect_retry``: seconds between attempts while a database server is not up yet
    (``reg_db_connect_retry``; 0: open() fails at once).
    ConfigError for a URL or table name we cannot serve.
    """
    parsed = url if isinstance(url, StoreURL) else parse_store_url(url)
    check_table_name(table)
    check_table_name(ext_table, "reg_ext_table")
    if ext_table == table:
        raise ConfigError(f"reg_ext_table {ext_table!r} must not be the uacreg table (reg_db_table)")
    if parsed.kind == "sqlite":
        from txuac.registrant.store.sqlite import SQLiteStore

        return SQLiteStore(parsed.resolved_path(base_dir), reactor=reactor, table=table, url=parsed.masked,
                           ext_table=ext_table)
    if parsed.kind == "mysql":
        from txuac.registrant.store.mysql import MySQLStore

        return MySQLStore(parsed, reactor=reactor, table=table, ext_table=ext_table, connect_retry=connect_retry)
    from txuac.registrant.store.postgres import PostgresStore

    return PostgresStore(parsed, reactor=reactor, table=table, ext_table=ext_table, connect_retry=connect_retry)
