-- Live changes to Kamailio's uacreg for txuac's MySQL/MariaDB store ([uac] reg_db_watch): a
-- change log txuac_uacreg_change filled by three triggers on uacreg with the l_uuid of every
-- inserted, updated or deleted row (an UPDATE logs the old and the new l_uuid). Each txuac
-- node reads the rows past the last seq it has seen every second and re-reads only those
-- accounts; rows older than 10 minutes are deleted by any node. The columns of uacreg are
-- not changed.
--
-- Create it with:   mysql -h HOST -u USER -p DB < conf/schema/mysql-feed.sql
--
-- txuac creates it by itself (and logs it once) when it is missing and the user of
-- reg_db_url may: CREATE on the database for the table, TRIGGER on uacreg for the triggers
-- (GRANT TRIGGER ON DB.uacreg TO USER), and with binary logging on, SUPER or the server's
-- log_bin_trust_function_creators = 1. Otherwise run this file once as a user who may, then
-- GRANT SELECT, DELETE ON DB.txuac_uacreg_change TO the user of reg_db_url. Without the
-- triggers txuac falls back to a checksum of uacreg taken every second (CHECKSUM TABLE),
-- reading every account when it changes.
-- For another reg_db_table, write its name instead of uacreg in the triggers (and their names).
BEGIN;

CREATE TABLE IF NOT EXISTS txuac_uacreg_change (
    seq BIGINT AUTO_INCREMENT PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) NOT NULL,
    changed_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3) NOT NULL,
    KEY txuac_uacreg_change_at (changed_at)
);

DROP TRIGGER IF EXISTS txuac_uacreg_insert;
CREATE TRIGGER txuac_uacreg_insert AFTER INSERT ON uacreg FOR EACH ROW
    INSERT INTO txuac_uacreg_change (l_uuid) VALUES (NEW.l_uuid);

DROP TRIGGER IF EXISTS txuac_uacreg_update;
CREATE TRIGGER txuac_uacreg_update AFTER UPDATE ON uacreg FOR EACH ROW
    INSERT INTO txuac_uacreg_change (l_uuid) VALUES (OLD.l_uuid), (NEW.l_uuid);

DROP TRIGGER IF EXISTS txuac_uacreg_delete;
CREATE TRIGGER txuac_uacreg_delete AFTER DELETE ON uacreg FOR EACH ROW
    INSERT INTO txuac_uacreg_change (l_uuid) VALUES (OLD.l_uuid);

COMMIT;
