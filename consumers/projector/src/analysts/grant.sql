-- Grants the role named in tributary.analyst exactly read access to read_model.
DO $grant$
DECLARE
    analyst text := current_setting('tributary.analyst');
    owner   text := (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'read_model');
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), analyst);
    EXECUTE format('REVOKE ALL ON SCHEMA read_model FROM %I', analyst);
    EXECUTE format('GRANT USAGE ON SCHEMA read_model TO %I', analyst);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA read_model FROM %I', analyst);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA read_model TO %I', analyst);
    -- regrole::text is already quoted where needed.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA read_model GRANT SELECT ON TABLES TO %I',
                   owner, analyst);
END
$grant$
