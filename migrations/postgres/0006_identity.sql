-- Identity, owed status files, epic history, leadership.

-- Each incarnation of a task (a file deleted and added again is a new one) has a random
-- identity of its own: part of its run names, so it never adopts a run of an earlier one.
ALTER TABLE tasks ADD COLUMN incarnation TEXT NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');

-- Status files owed to the repositories, newest state per task: a file owed for a generation
-- is still written when the task moves on to the next before the reporter got to it.
CREATE TABLE status_files (
    project     TEXT NOT NULL,
    key         TEXT NOT NULL,
    task_id     BIGINT NOT NULL,
    generation  INTEGER NOT NULL,
    body        TEXT NOT NULL,
    owed_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project, key)
);

-- An epic whose name is used again after it ended is opened anew; the one that ended is kept here.
CREATE TABLE epic_history (
    project               TEXT NOT NULL,
    name                  TEXT NOT NULL,
    state                 TEXT NOT NULL,
    reason                TEXT,
    tasks                 INTEGER NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    activations           INTEGER NOT NULL,
    spend_usd             DOUBLE PRECISION NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    archived_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX epic_history_name ON epic_history (project, name);

-- Leadership epochs: each engine that takes the lead bumps the epoch, and every write of a
-- leader checks, in its own transaction, that the epoch is still its own.
CREATE TABLE leadership (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   BIGINT NOT NULL,
    holder  TEXT NOT NULL,
    since   TIMESTAMPTZ NOT NULL
);
