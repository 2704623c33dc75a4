-- The task system's results: one row per task, written by whoever enqueues it
-- (`pending`) and by the worker as it runs it. A row never leaves a final
-- state (succeeded, failed, dead) and never goes back to an earlier attempt,
-- so a redelivered task cannot overwrite what its first run recorded.
CREATE SCHEMA IF NOT EXISTS tasks;

CREATE TABLE tasks.results (
    task_id       uuid        PRIMARY KEY,
    name          text        NOT NULL,
    priority      text        NOT NULL CHECK (priority IN ('high', 'default', 'low')),
    state         text        NOT NULL
        CHECK (state IN ('pending', 'running', 'retrying', 'succeeded', 'failed', 'dead')),
    -- Attempts started so far (0 while pending).
    attempts      integer     NOT NULL CHECK (attempts >= 0),
    max_attempts  integer     NOT NULL CHECK (max_attempts >= 1),
    enqueued_at   timestamptz NOT NULL,
    -- When the next attempt may start: a countdown, an ETA or a retry's backoff.
    due_at        timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    result        jsonb,
    error         text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX results_by_state ON tasks.results (state, enqueued_at);
CREATE INDEX results_by_name ON tasks.results (name, enqueued_at);
