-- Creates the analyst role named in tributary.analyst if missing (NOLOGIN);
-- with a password in tributary.analyst_password, gives it LOGIN and the password.
DO $ensure$
DECLARE
    analyst  text := current_setting('tributary.analyst');
    password text := current_setting('tributary.analyst_password');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = analyst) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', analyst);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created meanwhile by a concurrent grant
        END;
    END IF;
    IF password <> '' THEN
        BEGIN
            EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', analyst, password);
        EXCEPTION WHEN OTHERS THEN
            -- Re-raised so that the error's context (which the server logs)
            -- does not quote the statement, and so the password.
            RAISE EXCEPTION 'setting the password of role %: %', analyst, SQLERRM
                USING ERRCODE = SQLSTATE;
        END;
    END IF;
END
$ensure$
