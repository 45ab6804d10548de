"""The cluster tables on PostgreSQL: psycopg2 on a pool of one connection of its own.

The lease transactions run on their own connection (not the store's), in one thread, so a
bulk load or a slow fleet-view write never delays a renewal; the session runs in UTC so
that LOCALTIMESTAMP and the stored TIMESTAMP(3) values are one clock. ``FOR UPDATE SKIP
LOCKED`` needs PostgreSQL 9.5 or later.
"""

from __future__ import annotations

from txuac.registrant.cluster.database import ClusterSQL
from txuac.registrant.store.postgres import CONNECTION_OPTIONS
from txuac.registrant.store.url import StoreURL

SQL = ClusterSQL(kind="postgres", now="LOCALTIMESTAMP", epoch="EXTRACT(EPOCH FROM {})",
                 later="LOCALTIMESTAMP + %s * INTERVAL '1 second'", later_scale=1.0, upsert="pg",
                 insert_ignore="INSERT INTO {} ON CONFLICT DO NOTHING",
                 # Concurrent CREATE TABLE IF NOT EXISTS of one name collide in pg_type: one at a time.
                 prepare_lock="SELECT pg_advisory_xact_lock(747501)")
DRIVER = "psycopg2"
CONNECT_TIMEOUT = 5  # seconds


def connection_arguments(url: StoreURL) -> dict:
    """psycopg2.connect's keywords (holds the password: never log them)."""
    arguments = url.connection_arguments()
    arguments.update(CONNECTION_OPTIONS, connect_timeout=CONNECT_TIMEOUT,
                     options="-c timezone=UTC -c statement_timeout=10000")
    arguments["application_name"] = "txuac-cluster"
    return arguments
