-- The task model: the seed's `tasks` table plus project, key, generation, attempts, spec hash,
-- source commit and cancel request; an append-only event log; sync state and bad task files.

CREATE TABLE projects (
    name           TEXT PRIMARY KEY,
    synced_commit  TEXT,
    synced_at      TIMESTAMPTZ,
    sync_error     TEXT,
    sync_error_at  TIMESTAMPTZ
);

CREATE TABLE tasks (
    id               BIGSERIAL PRIMARY KEY,
    project          TEXT NOT NULL,
    key              TEXT NOT NULL,
    addressee        TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed')),
    prompt           TEXT NOT NULL,
    spec             JSONB NOT NULL,
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
    timeout_secs     BIGINT,
    generation       INTEGER NOT NULL DEFAULT 1,
    attempts         INTEGER NOT NULL DEFAULT 0,
    infra_failures   INTEGER NOT NULL DEFAULT 0,
    requeues         INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    file_deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    run_spec_hash    TEXT,
    not_before       TIMESTAMPTZ,
    result           JSONB,
    report_due       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    UNIQUE (project, key)
);

-- The sequencing invariant, enforced by the database: at most one running task per addressee.
CREATE UNIQUE INDEX tasks_one_running_per_addressee ON tasks (addressee) WHERE status = 'running';
CREATE INDEX tasks_pending ON tasks (addressee, priority DESC, id) WHERE status = 'pending';
CREATE INDEX tasks_report_due ON tasks (project) WHERE report_due;

CREATE TABLE task_events (
    id          BIGSERIAL PRIMARY KEY,
    project     TEXT NOT NULL,
    key         TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        JSONB
);
CREATE INDEX task_events_task ON task_events (project, key, id);

CREATE FUNCTION swarm_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'task_events is append-only';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER task_events_append_only BEFORE UPDATE OR DELETE ON task_events
    FOR EACH ROW EXECUTE FUNCTION swarm_events_append_only();

CREATE TABLE spec_errors (
    project        TEXT NOT NULL,
    path           TEXT NOT NULL,
    line           BIGINT NOT NULL,
    col            BIGINT NOT NULL,
    message        TEXT NOT NULL,
    source_commit  TEXT,
    at             TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project, path)
);

-- Wake the engine (LISTEN swarm_tasks) whenever something may be dispatched or stopped,
-- including a person changing a status by hand in psql.
CREATE FUNCTION swarm_notify_tasks() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('swarm_tasks', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE OF status, cancel_requested, priority, not_before ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION swarm_notify_tasks();
