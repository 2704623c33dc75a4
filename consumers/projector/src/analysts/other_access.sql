-- What role $1 may do in this database beyond reading read_model, each a line
-- for the operator.
SELECT format('may CREATE in database %I (REVOKE CREATE ON DATABASE %I FROM PUBLIC, or from the role)',
              current_database(), current_database())
WHERE has_database_privilege($1, current_database(), 'CREATE')
UNION ALL
SELECT format('may CREATE in schema %I (REVOKE CREATE ON SCHEMA %I FROM PUBLIC, or from the role)',
              n.nspname, n.nspname)
FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  AND has_schema_privilege($1, n.oid, 'CREATE')
UNION ALL
SELECT format('has %s on %I.%I', string_agg(p.privilege, ', ' ORDER BY p.ord), n.nspname, c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
    WITH ORDINALITY AS p(privilege, ord)
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  AND NOT (n.nspname = 'read_model' AND p.privilege = 'SELECT')
  AND has_table_privilege($1, c.oid, p.privilege)
GROUP BY n.nspname, c.relname
