"""The cluster tables on MySQL/MariaDB: PyMySQL on a pool of one connection of its own.

As on PostgreSQL, the lease transactions never wait behind the store's queries. The
session's time zone is UTC so that NOW(3) and the stored TIMESTAMP(3) values are one clock.
``FOR UPDATE SKIP LOCKED`` needs MariaDB 10.6 or MySQL 8.0.
"""

from __future__ import annotations

from txuac.registrant.cluster.database import ClusterSQL
from txuac.registrant.store import mysql as store_mysql
from txuac.registrant.store.url import StoreURL

SQL = ClusterSQL(kind="mysql", now="NOW(3)", epoch="UNIX_TIMESTAMP({})",
                 later="NOW(3) + INTERVAL %s MICROSECOND", later_scale=1e6, upsert="mysql",
                 insert_ignore="INSERT IGNORE INTO {}",
                 prepare_lock="SELECT GET_LOCK('txuac_cluster_prepare', 30)",
                 prepare_unlock="SELECT RELEASE_LOCK('txuac_cluster_prepare')",
                 # The session's clock (unfrozen first) stays at the tick's start until the
                 # next tick; prepare runs before the first, release_all a tick at most later.
                 freeze_now=("SET TIMESTAMP = DEFAULT", "SET TIMESTAMP = UNIX_TIMESTAMP(NOW(6))"))
DRIVER = "pymysql"


def connection_arguments(url: StoreURL) -> dict:
    """pymysql.connect's keywords (holds the password: never log them)."""
    arguments = store_mysql.connection_arguments(url)
    arguments["init_command"] = "SET time_zone = '+00:00'"
    arguments["program_name"] = "txuac-cluster"
    return arguments
