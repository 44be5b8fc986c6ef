-- See migrations/postgres/0006_identity.sql.

ALTER TABLE tasks ADD COLUMN incarnation TEXT;
UPDATE tasks SET incarnation = lower(hex(randomblob(16)));

CREATE TABLE status_files (
    project     TEXT NOT NULL,
    key         TEXT NOT NULL,
    task_id     INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    body        TEXT NOT NULL,
    owed_at     TEXT NOT NULL,
    PRIMARY KEY (project, key)
);

CREATE TABLE epic_history (
    project               TEXT NOT NULL,
    name                  TEXT NOT NULL,
    state                 TEXT NOT NULL,
    reason                TEXT,
    tasks                 INTEGER NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    activations           INTEGER NOT NULL,
    spend_usd             REAL NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    archived_at           TEXT NOT NULL
);
CREATE INDEX epic_history_name ON epic_history (project, name);

CREATE TABLE leadership (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   INTEGER NOT NULL,
    holder  TEXT NOT NULL,
    since   TEXT NOT NULL
);
