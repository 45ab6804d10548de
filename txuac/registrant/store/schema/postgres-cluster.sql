-- txuac's cluster tables ([cluster] in the configuration), for PostgreSQL: several txuac
-- nodes on one uacreg table, each account registered by exactly one live node.
--
-- Create them with:   psql -h HOST -U USER -d DB -f conf/schema/postgres-cluster.sql
--
-- txuac creates them by itself when they are missing and the user of reg_db_url may create
-- tables, and fills txuac_cluster_lease with one row per partition (0 .. partitions - 1).
-- Times are the database's clock (LOCALTIMESTAMP in UTC), never a node's.
--   txuac_cluster_node     one row per node: its heartbeat (live while younger than lease_period)
--   txuac_cluster_lease    one row per partition: the node holding it until expires_at; epoch
--                          counts the times it changed hands
--   txuac_cluster_account  the fleet's view, written in batches by each account's owner:
--                          bound_contact is the Contact the owner registered (the next owner
--                          removes it with expires=0), flags Kamailio's bits, next_attempt unix time
\set ON_ERROR_STOP on
BEGIN;

CREATE TABLE IF NOT EXISTS txuac_cluster_node (
    node_id VARCHAR(64) PRIMARY KEY NOT NULL,
    contact_addr VARCHAR(255) NOT NULL DEFAULT '',
    heartbeat_at TIMESTAMP(3) NOT NULL DEFAULT LOCALTIMESTAMP,
    started_at TIMESTAMP(3) NOT NULL DEFAULT LOCALTIMESTAMP
);

CREATE TABLE IF NOT EXISTS txuac_cluster_lease (
    partition_id INTEGER PRIMARY KEY NOT NULL,
    node_id VARCHAR(64) NULL,
    expires_at TIMESTAMP(3) NULL,
    epoch BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS txuac_cluster_account (
    l_uuid VARCHAR(64) PRIMARY KEY NOT NULL,
    owner_node VARCHAR(64) NOT NULL DEFAULT '',
    bound_contact VARCHAR(255) NOT NULL DEFAULT '',
    flags INTEGER NOT NULL DEFAULT 0,
    last_error VARCHAR(255) NOT NULL DEFAULT '',
    next_attempt DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at TIMESTAMP(3) NOT NULL
);

COMMIT;
