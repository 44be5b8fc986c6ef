-- The green layer: epics with their hard caps' counters, and tasks the engine creates itself
-- (project-manager activations), which live in the database only.

ALTER TABLE tasks ADD COLUMN origin TEXT NOT NULL DEFAULT 'file' CHECK (origin IN ('file', 'engine'));
-- For project-manager activations: what happened since the last run (results, plan edits).
ALTER TABLE tasks ADD COLUMN context JSONB;

CREATE TABLE epics (
    project               TEXT NOT NULL,
    name                  TEXT NOT NULL,
    state                 TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'complete', 'failed')),
    reason                TEXT,
    tasks                 INTEGER NOT NULL DEFAULT 0,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    activations           INTEGER NOT NULL DEFAULT 0,
    spend_usd             DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project, name)
);
