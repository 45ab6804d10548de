"""Several nodes on one uacreg table: leases on partitions of the accounts, kept in the
shared database (txuac_cluster_* tables), so that each account is registered by exactly
one live node. leases.py decides (sans-IO), service.py carries it out on a backend's SQL
(postgres.py, mysql.py)."""
