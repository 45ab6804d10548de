"""The SQL of our own table beside uacreg (``reg_ext_table``, default ``uacreg_txuac``).

Shared by both backends: the DDL shipped as schema/sqlite-txuac.sql and
schema/postgres-txuac.sql (conf/schema links to them), the LEFT JOIN that merges an
account's row of ours into its uacreg row, and the upsert of save_states(). Only the
placeholder style differs between SQLite (``?``) and psycopg2 (``%s``).
"""

from __future__ import annotations

import importlib.resources

from txuac.registrant.store import DEFAULT_EXT_TABLE, EXT_COLUMNS, AccountState

_SCHEMA_FILES = {"sqlite": "schema/sqlite-txuac.sql", "postgres": "schema/postgres-txuac.sql",
                 "mysql": "schema/mysql-txuac.sql", "postgres-feed": "schema/postgres-feed.sql",
                 "mysql-feed": "schema/mysql-feed.sql"}
_HEADER_END = "BEGIN;"


def schema_text(kind: str) -> str:
    """The shipped DDL file for ``kind`` ("sqlite", "postgres", "mysql", or a feed's
    "postgres-feed", "mysql-feed"), as it is."""
    return importlib.resources.files("txuac.registrant.store").joinpath(_SCHEMA_FILES[kind]).read_text("utf-8")


def create_statements(kind: str, table: str) -> str:
    """The statements of the DDL file (without psql's ``\\set`` and the comments), for ``table``.

    Run as one script: CREATE TABLE IF NOT EXISTS and a version row only when missing. For
    PostgreSQL, without BEGIN/COMMIT: one query string is one transaction already, and an
    error inside an explicit block would leave the pooled connection in an aborted one.
    """
    text = schema_text(kind)
    body = text[text.index(_HEADER_END):].replace(DEFAULT_EXT_TABLE, table)
    if kind in ("postgres", "mysql"):
        body = body.replace("BEGIN;", "").replace("COMMIT;", "")
    return body


def select_columns(columns: tuple[str, ...]) -> str:
    """uacreg's ``columns`` (alias u) then ours (alias x), for a LEFT JOIN."""
    return ", ".join([f"u.{c}" for c in columns] + [f"x.{c}" for c in EXT_COLUMNS])


def join_clause(table: str, ext_table: str) -> str:
    return f"{table} u LEFT JOIN {ext_table} x ON x.l_uuid = u.l_uuid"


def select_statement(table: str, ext_table: str | None, columns: tuple[str, ...]) -> str:
    """The SELECT of every account: uacreg's ``columns``, merged with our table's when there is one."""
    if ext_table is None:
        return f"SELECT {', '.join(f'u.{c}' for c in columns)} FROM {table} u"
    return f"SELECT {select_columns(columns)} FROM {join_clause(table, ext_table)}"


def upsert_statement(ext_table: str, placeholder: str, count: int = 1) -> str:
    """INSERT of ``count`` AccountStates (l_uuid, call_id, cseq, instance_id), updating an
    existing row's call_id and cseq; a stored instance_id wins over ours (made once, kept).

    With the same Call-ID the higher CSeq stays: a node resumed after its accounts moved to
    another must not write back a mark below the new owner's (RFC 3261 10.2: the CSeq of
    one Call-ID only grows)."""
    row = f"({', '.join([placeholder] * 4)})"
    return (f"INSERT INTO {ext_table} AS t (l_uuid, call_id, cseq, instance_id) VALUES "
            f"{', '.join([row] * count)} ON CONFLICT (l_uuid) DO UPDATE SET call_id = excluded.call_id, "
            f"cseq = CASE WHEN t.call_id = excluded.call_id AND t.cseq > excluded.cseq THEN t.cseq "
            f"ELSE excluded.cseq END, "
            f"instance_id = CASE WHEN t.instance_id = '' THEN excluded.instance_id ELSE t.instance_id END")


def upsert_parameters(states: list[AccountState]) -> list:
    parameters: list = []
    for state in states:
        parameters.extend((state.l_uuid, state.call_id or "", int(state.cseq), state.instance_id or ""))
    return parameters
