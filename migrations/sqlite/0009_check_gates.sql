-- Required checks (see migrations/postgres/0009_check_gates.sql).

CREATE TABLE check_gates (
    task_id     INTEGER PRIMARY KEY,
    generation  INTEGER NOT NULL,
    green       BOOLEAN NOT NULL,
    waits_for   TEXT NOT NULL,
    checked_at  TEXT NOT NULL
);
