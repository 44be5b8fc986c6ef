-- The green layer; see migrations/postgres/0003_epics.sql.

ALTER TABLE tasks ADD COLUMN origin TEXT NOT NULL DEFAULT 'file' CHECK (origin IN ('file', 'engine'));
ALTER TABLE tasks ADD COLUMN context TEXT;

CREATE TABLE epics (
    project               TEXT NOT NULL,
    name                  TEXT NOT NULL,
    state                 TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'complete', 'failed')),
    reason                TEXT,
    tasks                 INTEGER NOT NULL DEFAULT 0,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    activations           INTEGER NOT NULL DEFAULT 0,
    spend_usd             REAL NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
