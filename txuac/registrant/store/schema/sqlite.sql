-- Kamailio's uacreg table (version 6: with contact_user), for txuac's SQLite store.
--
-- Create it with:   sqlite3 var/uacreg.sqlite < conf/schema/sqlite.sql
--
-- txuac creates the same file by itself when reg_db_url names an SQLite file that does not
-- exist (its copy of these statements is txuac/registrant/store/sqlite.py SCHEMA; a test
-- keeps the two identical). Run against an existing Kamailio database, the script adds the
-- uacreg table: the version table is created only when missing, and CREATE TABLE uacreg
-- fails (changing nothing) when the table exists already.
-- The version table is Kamailio's (utils/kamctl/db_sqlite/standard-create.sql), the uacreg
-- table Kamailio's (utils/kamctl/db_sqlite/uac-create.sql, table version 6). For a table
-- Kamailio 5.x/6.1 reads (version 5), drop contact_user and write '5' in the version row.
BEGIN;

CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);

INSERT OR IGNORE INTO version (table_name, table_version) values ('version','1');

CREATE TABLE uacreg (
    id INTEGER PRIMARY KEY NOT NULL,
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
