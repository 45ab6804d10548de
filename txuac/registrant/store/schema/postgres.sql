-- Kamailio's uacreg table (version 6: with contact_user), for txuac's PostgreSQL store.
--
-- Create it with:   psql -h HOST -U USER -d DB -f conf/schema/postgres.sql
--
-- Run it as the user named in reg_db_url (or GRANT SELECT ON uacreg, version TO that user):
-- txuac only reads these tables. The script stops at the first error and runs in one
-- transaction: against an existing Kamailio database it adds the uacreg table (the version
-- table is created only when missing); when uacreg exists already it changes nothing.
-- The version table is Kamailio's (utils/kamctl/postgres/standard-create.sql), the uacreg
-- table Kamailio's (utils/kamctl/postgres/uac-create.sql, table version 6). For a table
-- Kamailio 5.x/6.1 reads (version 5), drop contact_user and write '5' in the version row.
\set ON_ERROR_STOP on
BEGIN;

CREATE TABLE IF NOT EXISTS version (
    id SERIAL PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);

INSERT INTO version (table_name, table_version) values ('version','1') ON CONFLICT (table_name) DO NOTHING;

CREATE TABLE uacreg (
    id SERIAL PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT '' NOT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT '' NOT NULL,
    auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    contact_user VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid)
);

INSERT INTO version (table_name, table_version) values ('uacreg','6');

COMMIT;
