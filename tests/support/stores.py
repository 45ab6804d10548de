"""SQLite uacreg tables for tests: made by txuac's own store, then filled with rows."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor

from txuac.registrant.store import open_store


def insert_rows(connection, rows: list[dict], placeholder: str) -> None:
    """INSERT ``rows`` (dicts keyed by column) into uacreg through a DB-API ``connection``."""
    columns = list(rows[0])
    marks = ", ".join([placeholder] * len(columns))
    cursor = connection.cursor()
    cursor.executemany(f"INSERT INTO uacreg ({', '.join(columns)}) VALUES ({marks})",
                       [tuple(row[c] for c in columns) for row in rows])
    connection.commit()


@defer.inlineCallbacks
def sqlite_uacreg(testcase, rows: list[dict], path: str | None = None):
    """Deferred[str]: the path of a new SQLite file whose uacreg table holds ``rows``
    (created by txuac's store, as at a first start)."""
    if path is None:
        path = os.path.abspath(testcase.mktemp()) + ".sqlite"
    store = open_store(f"sqlite:///{path}", reactor)
    yield store.open()
    yield store.close()
    if rows:
        connection = sqlite3.connect(path)
        insert_rows(connection, rows, "?")
        connection.close()
    return path


# realpath: ./dev bench reaches tests/ through a symlink from a directory without conf/
SCHEMAS = os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, os.pardir, "conf", "schema")
