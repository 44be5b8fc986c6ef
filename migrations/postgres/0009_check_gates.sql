-- Required checks: for each task that waits for CI before it runs (a `merge` task, or
-- `requires_checks: true`), what the checks of the branches it merges said when the engine
-- last looked (`green`, and else in words what it waits for), for the task's generation. A
-- gated task is claimed only with a green row of its current generation.

CREATE TABLE check_gates (
    task_id     BIGINT PRIMARY KEY,
    generation  INTEGER NOT NULL,
    green       BOOLEAN NOT NULL,
    waits_for   TEXT NOT NULL,
    checked_at  TIMESTAMPTZ NOT NULL
);
