-- Rebuilds of projections (`tributary ctl projection rebuild NAME`): one row
-- per rebuild, so operators and GET /projections can see one in progress.
CREATE SCHEMA IF NOT EXISTS projection;

CREATE TABLE projection.rebuilds (
    rebuild_id      bigserial   PRIMARY KEY,
    projection      text        NOT NULL,
    -- The schema the fresh tables are built in until the swap.
    build_schema    text        NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    -- Messages to replay (the high watermarks when the rebuild started) and replayed so far.
    target_messages bigint      NOT NULL DEFAULT 0,
    applied_messages bigint     NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- 'swapped' or 'failed: <reason>' once finished.
    outcome         text
);

-- One rebuild of a projection at a time.
CREATE UNIQUE INDEX rebuilds_one_running ON projection.rebuilds (projection) WHERE finished_at IS NULL;
