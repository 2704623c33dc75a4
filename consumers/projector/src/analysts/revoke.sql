-- Revokes what grant.sql gave the role named in tributary.analyst.
DO $revoke$
DECLARE
    analyst text := current_setting('tributary.analyst');
    owner   text := (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'read_model');
BEGIN
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA read_model REVOKE SELECT ON TABLES FROM %I',
                   owner, analyst);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA read_model FROM %I', analyst);
    EXECUTE format('REVOKE ALL ON SCHEMA read_model FROM %I', analyst);
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM %I', current_database(), analyst);
END
$revoke$
