-- txuac's own table beside Kamailio's uacreg (uacreg keeps Kamailio's schema), for the
-- SQLite store: per-account settings Kamailio has no column for, and the Call-ID (with the
-- highest CSeq it may have used) each account keeps across restarts.
--
-- Create it with:   sqlite3 var/uacreg.sqlite < conf/schema/sqlite-txuac.sql
--
-- txuac creates it by itself (and logs it once) when it is missing; its copy of these
-- statements is this file, packaged as txuac/registrant/store/schema/sqlite-txuac.sql.
-- The table name is [uac] reg_ext_table (default uacreg_txuac); its version row in
-- Kamailio's version table says 1. One row per account, keyed by uacreg's l_uuid; an
-- account without a row reads as the defaults below. Operators set the settings columns
-- (INSERT ... ON CONFLICT (l_uuid) DO UPDATE, since txuac may have made the row already);
-- txuac writes only call_id, cseq and an empty instance_id.
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

CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);

CREATE TABLE IF NOT EXISTS uacreg_txuac (
    l_uuid VARCHAR(64) PRIMARY KEY NOT NULL,
    call_id VARCHAR(255) DEFAULT '' NOT NULL,
    cseq INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    extra_headers TEXT DEFAULT '' NOT NULL,
    from_username VARCHAR(64) DEFAULT '' NOT NULL,
    outbound INTEGER DEFAULT 0 NOT NULL,
    instance_id VARCHAR(64) DEFAULT '' NOT NULL,
    reg_id INTEGER DEFAULT 1 NOT NULL,
    options_ping INTEGER DEFAULT 0 NOT NULL
);

INSERT OR IGNORE INTO version (table_name, table_version) values ('uacreg_txuac','1');

COMMIT;
