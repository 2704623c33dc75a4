-- A batch of task outcomes, one upsert; chord members reaching a final state
-- are counted towards their chords, once. Returns each chord counted, and
-- whether it is now complete.
WITH upserted AS (
    INSERT INTO tasks.results AS r (task_id, name, priority, state, attempts, max_attempts,
                                    enqueued_at, due_at, started_at, finished_at, result, error,
                                    chord_id)
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                         $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                         $10::timestamptz[], $11::jsonb[], $12::text[], $13::uuid[])
    ON CONFLICT (task_id) DO UPDATE SET
        state = EXCLUDED.state,
        attempts = EXCLUDED.attempts,
        due_at = EXCLUDED.due_at,
        started_at = COALESCE(EXCLUDED.started_at, r.started_at),
        finished_at = EXCLUDED.finished_at,
        result = EXCLUDED.result,
        error = EXCLUDED.error,
        updated_at = now()
    WHERE r.state NOT IN ('succeeded', 'failed', 'dead') AND r.attempts <= EXCLUDED.attempts
    RETURNING r.task_id, r.state, r.chord_id
), members AS (
    INSERT INTO tasks.chord_members (task_id, chord_id)
    SELECT task_id, chord_id FROM upserted
    WHERE chord_id IS NOT NULL AND state IN ('succeeded', 'failed', 'dead')
    ON CONFLICT (task_id) DO NOTHING
    RETURNING chord_id
), counted AS (
    SELECT chord_id, count(*)::int AS n FROM members GROUP BY chord_id
)
UPDATE tasks.chords c SET done = c.done + counted.n
FROM counted WHERE c.chord_id = counted.chord_id
RETURNING c.chord_id AS "chord_id!", c.done = c.total AS "complete!"
