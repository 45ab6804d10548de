-- txuac's cluster tables ([cluster] in the configuration), for MySQL/MariaDB: several txuac
-- nodes on one uacreg table, each account registered by exactly one live node.
--
-- Create them with:   mysql -h HOST -u USER -p DB < conf/schema/mysql-cluster.sql
--
-- txuac creates them by itself when they are missing and the user of reg_db_url may create
-- tables, and fills txuac_cluster_lease with one row per partition (0 .. partitions - 1).
-- Times are the database's clock (NOW(3), session time zone UTC), never a node's.
--   txuac_cluster_node     one row per node: its heartbeat (live while younger than lease_period)
--   txuac_cluster_lease    one row per partition: the node holding it until expires_at; epoch
--                          counts the times it changed hands
--   txuac_cluster_account  the fleet's view, written in batches by each account's owner:
--                          bound_contact is the Contact the owner registered (the next owner
--                          removes it with expires=0), flags Kamailio's bits, next_attempt unix time
BEGIN;

CREATE TABLE IF NOT EXISTS txuac_cluster_node (
    node_id VARCHAR(64) PRIMARY KEY NOT NULL,
    contact_addr VARCHAR(255) NOT NULL DEFAULT '',
    heartbeat_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    started_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS txuac_cluster_lease (
    partition_id INTEGER PRIMARY KEY NOT NULL,
    node_id VARCHAR(64) NULL,
    expires_at TIMESTAMP(3) NULL,
    epoch BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS txuac_cluster_account (
    l_uuid VARCHAR(64) PRIMARY KEY NOT NULL,
    owner_node VARCHAR(64) NOT NULL DEFAULT '',
    bound_contact VARCHAR(255) NOT NULL DEFAULT '',
    flags INTEGER NOT NULL DEFAULT 0,
    last_error VARCHAR(255) NOT NULL DEFAULT '',
    next_attempt DOUBLE NOT NULL DEFAULT 0,
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

COMMIT;
