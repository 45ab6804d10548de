-- txuac's own table beside Kamailio's uacreg (uacreg keeps Kamailio's schema), for the
-- MySQL/MariaDB store: per-account settings Kamailio has no column for, and the Call-ID
-- (with the highest CSeq it may have used) each account keeps across restarts.
--
-- Create it with:   mysql -h HOST -u USER -p DB < conf/schema/mysql-txuac.sql
--
-- txuac creates it by itself (and logs it once) when it is missing and the user of
-- reg_db_url may create tables; otherwise run this file once (as a user who may), then
-- GRANT SELECT, INSERT, UPDATE ON DB.uacreg_txuac TO the user of reg_db_url. Without the
-- table txuac still runs, with a warning: Call-IDs are then kept in memory only.
-- The table name is [uac] reg_ext_table (default uacreg_txuac); its version row in
-- Kamailio's version table says 1. One row per account, keyed by uacreg's l_uuid; an
-- account without a row reads as the defaults below. Operators set the settings columns
-- (INSERT ... ON DUPLICATE KEY UPDATE, since txuac may have made the row already);
-- txuac writes only call_id, cseq and an empty instance_id. (A TEXT column's default is
-- written as an expression, which MariaDB 10.2 and MySQL 8.0.13 on accept.)
--   call_id        the account's Call-ID (made at its first REGISTER, reused by every REGISTER)
--   cseq           a CSeq at least as high as any used with call_id: a restart goes on above it
--   user_agent     User-Agent of the account's REGISTERs ('' : [core] user_agent)
--   extra_headers  headers added to every REGISTER, one "Name: value" per line
--   from_username  user part of From when it differs from r_username ('' : r_username)
--   outbound       1: RFC 5626 outbound (+sip.instance, reg-id, flow keep-alives)
--   instance_id    urn:uuid:... (made once by txuac when empty, then kept)
--   reg_id         RFC 5626 reg-id
--   options_ping   1: OPTIONS pings to the registrar
BEGIN;

CREATE TABLE IF NOT EXISTS `version` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `table_name` VARCHAR(32) NOT NULL,
    `table_version` INT UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT table_name_idx UNIQUE (`table_name`)
);

CREATE TABLE IF NOT EXISTS uacreg_txuac (
    l_uuid VARCHAR(64) PRIMARY KEY NOT NULL,
    call_id VARCHAR(255) DEFAULT '' NOT NULL,
    cseq INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    extra_headers TEXT DEFAULT ('') NOT NULL,
    from_username VARCHAR(64) DEFAULT '' NOT NULL,
    outbound INTEGER DEFAULT 0 NOT NULL,
    instance_id VARCHAR(64) DEFAULT '' NOT NULL,
    reg_id INTEGER DEFAULT 1 NOT NULL,
    options_ping INTEGER DEFAULT 0 NOT NULL
) DEFAULT CHARSET=utf8mb4;

INSERT IGNORE INTO version (table_name, table_version) values ('uacreg_txuac','1');

COMMIT;
