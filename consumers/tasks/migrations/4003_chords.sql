-- Chords: a group of subtasks and a callback that runs once when every one
-- of them has finished (succeeded, failed or dead).
ALTER TABLE tasks.results ADD COLUMN chord_id uuid;
CREATE INDEX results_by_chord ON tasks.results (chord_id) WHERE chord_id IS NOT NULL;

CREATE TABLE tasks.chords (
    chord_id        uuid        PRIMARY KEY,
    -- The task that started it.
    parent_task_id  uuid        NOT NULL,
    total           integer     NOT NULL CHECK (total >= 0),
    done            integer     NOT NULL DEFAULT 0 CHECK (done <= total),
    -- The callback's message, enqueued through the outbox when done = total.
    callback_task_id uuid       NOT NULL,
    callback_name   text        NOT NULL,
    callback_priority text      NOT NULL,
    callback_max_attempts integer NOT NULL,
    callback_topic  text        NOT NULL,
    callback_value  bytea       NOT NULL,
    callback_headers jsonb      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);

-- The subtasks counted towards their chord: each once, however often its
-- row reaches a final state (a redrive).
CREATE TABLE tasks.chord_members (
    task_id   uuid PRIMARY KEY,
    chord_id  uuid NOT NULL REFERENCES tasks.chords
);
