-- The schema registry: schemas by global id, the versions of each subject,
-- and compatibility levels.

-- Every distinct schema once, by its normalized JSON form. Ids are global and
-- shared by every subject that registers the same schema.
CREATE TABLE registry_schemas (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_type text        NOT NULL DEFAULT 'AVRO',
    schema      text        NOT NULL,
    -- SHA-256 of `schema`: a unique index on the text itself would exceed the
    -- btree entry size for large schemas.
    fingerprint bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The versions of each subject, 1, 2, ... in registration order.
CREATE TABLE registry_subject_versions (
    subject    text        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    schema_id  integer     NOT NULL REFERENCES registry_schemas (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version),
    UNIQUE (subject, schema_id)
);

CREATE INDEX registry_subject_versions_schema_id ON registry_subject_versions (schema_id);

-- Compatibility levels: the global level under the empty subject (subject
-- names are at least one character long), then one row per configured subject.
CREATE TABLE registry_config (
    subject       text        PRIMARY KEY,
    compatibility text        NOT NULL CHECK (compatibility IN (
        'NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'
    )),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
