-- Live changes to Kamailio's uacreg for txuac's PostgreSQL store ([uac] reg_db_watch): a
-- trigger that sends the l_uuid of every inserted, updated or deleted row to the channel
-- txuac_uacreg (pg_notify; an UPDATE that changes the l_uuid sends the old and the new
-- one). Each txuac node LISTENs on that channel and re-reads only those accounts. The
-- columns of uacreg are not changed.
--
-- Create it with:   psql -h HOST -U OWNER -d DB -f conf/schema/postgres-feed.sql
--
-- txuac creates it by itself (and logs it once) when it is missing and the user of
-- reg_db_url may (CREATE on the schema for the function; owning uacreg, or the TRIGGER
-- privilege on it, for the trigger); otherwise run this file once as the owner of uacreg.
-- For another reg_db_table, write its name instead of uacreg in the CREATE TRIGGER.
\set ON_ERROR_STOP on
BEGIN;

CREATE OR REPLACE FUNCTION txuac_uacreg_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('txuac_uacreg', NEW.l_uuid);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('txuac_uacreg', OLD.l_uuid);
    ELSE
        PERFORM pg_notify('txuac_uacreg', NEW.l_uuid);
        IF NEW.l_uuid IS DISTINCT FROM OLD.l_uuid THEN
            PERFORM pg_notify('txuac_uacreg', OLD.l_uuid);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS txuac_uacreg_changed ON uacreg;
CREATE TRIGGER txuac_uacreg_changed AFTER INSERT OR UPDATE OR DELETE ON uacreg
    FOR EACH ROW EXECUTE PROCEDURE txuac_uacreg_notify();

COMMIT;
