-- Periodic tasks: one row per configured schedule, and the lease that says
-- which scheduler fires. A tick fires in one transaction that locks its
-- schedule's row, so it fires once even while the lease changes hands.
CREATE TABLE tasks.schedules (
    name          text        PRIMARY KEY,
    task          text        NOT NULL,
    cron          text        NOT NULL,
    next_fire_at  timestamptz NOT NULL,
    -- The last tick fired, when, and the task it enqueued.
    last_tick     timestamptz,
    last_fired_at timestamptz,
    last_task_id  uuid,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks.scheduler_lease (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    holder     text,
    expires_at timestamptz NOT NULL
);
INSERT INTO tasks.scheduler_lease (expires_at) VALUES ('-infinity');
