-- The tables and views of read_model, with their kind.
SELECT c.relname::text AS "name!",
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      WHEN 'p' THEN 'partitioned table' ELSE 'foreign table' END AS "kind!"
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'read_model' AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY c.relkind, c.relname
