-- Kamailio's uacreg table (version 6: with contact_user), for txuac's MySQL/MariaDB store.
--
-- Create it with:   mysql -h HOST -u USER -p DB < conf/schema/mysql.sql
--
-- Run it as a user who may create tables, then GRANT SELECT ON DB.uacreg and DB.version to
-- the user named in reg_db_url: txuac only reads these tables. MySQL commits each CREATE
-- TABLE by itself, so the script is not one transaction: against an existing Kamailio
-- database it adds the uacreg table (the version table is created only when missing); when
-- uacreg exists already it stops at CREATE TABLE uacreg, having changed nothing.
-- The version table is Kamailio's (utils/kamctl/mysql/standard-create.sql), the uacreg
-- table Kamailio's (utils/kamctl/mysql/uac-create.sql, table version 6), in utf8mb4 whatever
-- the database's default. For a table Kamailio 5.x/6.1 reads (version 5), drop contact_user
-- and write '5' in the version row.
CREATE TABLE IF NOT EXISTS `version` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `table_name` VARCHAR(32) NOT NULL,
    `table_version` INT UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT table_name_idx UNIQUE (`table_name`)
);

INSERT IGNORE INTO version (table_name, table_version) values ('version','1');

CREATE TABLE `uacreg` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `l_uuid` VARCHAR(64) DEFAULT '' NOT NULL,
    `l_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `l_domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `r_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `r_domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `realm` VARCHAR(64) DEFAULT '' NOT NULL,
    `auth_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `auth_password` VARCHAR(64) DEFAULT '' NOT NULL,
    `auth_ha1` VARCHAR(128) DEFAULT '' NOT NULL,
    `auth_proxy` VARCHAR(255) DEFAULT '' NOT NULL,
    `expires` INT DEFAULT 0 NOT NULL,
    `flags` INT DEFAULT 0 NOT NULL,
    `reg_delay` INT DEFAULT 0 NOT NULL,
    `contact_addr` VARCHAR(255) DEFAULT '' NOT NULL,
    `contact_user` VARCHAR(255) DEFAULT '' NOT NULL,
    `socket` VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT l_uuid_idx UNIQUE (`l_uuid`)
) DEFAULT CHARSET=utf8mb4;

INSERT INTO version (table_name, table_version) values ('uacreg','6');
