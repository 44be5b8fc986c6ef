-- The task model; see migrations/postgres/0001_tasks.sql. Timestamps are RFC 3339 text,
-- JSON is text, booleans are 0/1.

CREATE TABLE projects (
    name           TEXT PRIMARY KEY,
    synced_commit  TEXT,
    synced_at      TEXT,
    sync_error     TEXT,
    sync_error_at  TEXT
);

CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    project          TEXT NOT NULL,
    key              TEXT NOT NULL,
    addressee        TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed')),
    prompt           TEXT NOT NULL,
    spec             TEXT NOT NULL,
    spec_hash        TEXT NOT NULL,
    source_commit    TEXT,
    kind             TEXT,
    epic             TEXT,
    agent            TEXT,
    branch           TEXT NOT NULL,
    base             TEXT,
    created_by       TEXT,
    priority         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    timeout_secs     INTEGER,
    generation       INTEGER NOT NULL DEFAULT 1,
    attempts         INTEGER NOT NULL DEFAULT 0,
    infra_failures   INTEGER NOT NULL DEFAULT 0,
    requeues         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    file_deleted     INTEGER NOT NULL DEFAULT 0,
    run_spec_hash    TEXT,
    not_before       TEXT,
    result           TEXT,
    report_due       INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    started_at       TEXT,
    completed_at     TEXT,
    UNIQUE (project, key)
);

CREATE UNIQUE INDEX tasks_one_running_per_addressee ON tasks (addressee) WHERE status = 'running';
CREATE INDEX tasks_pending ON tasks (addressee, priority DESC, id) WHERE status = 'pending';
CREATE INDEX tasks_report_due ON tasks (project) WHERE report_due;

CREATE TABLE task_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL,
    key         TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT
);
CREATE INDEX task_events_task ON task_events (project, key, id);

CREATE TRIGGER task_events_no_update BEFORE UPDATE ON task_events
BEGIN
    SELECT RAISE(ABORT, 'task_events is append-only');
END;
CREATE TRIGGER task_events_no_delete BEFORE DELETE ON task_events
BEGIN
    SELECT RAISE(ABORT, 'task_events is append-only');
END;

CREATE TABLE spec_errors (
    project        TEXT NOT NULL,
    path           TEXT NOT NULL,
    line           INTEGER NOT NULL,
    col            INTEGER NOT NULL,
    message        TEXT NOT NULL,
    source_commit  TEXT,
    at             TEXT NOT NULL,
    PRIMARY KEY (project, path)
);
