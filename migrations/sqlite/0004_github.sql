-- GitHub (see migrations/postgres/0004_github.sql): webhook deliveries seen (for de-duplication), the outbox of writes to GitHub
-- (persisted, coalesced per target, retried), and the status comment of each task.

CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    event        TEXT NOT NULL,
    received_at  TEXT NOT NULL
);

CREATE TABLE github_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repo        TEXT NOT NULL,
    -- what is written: comment (a task's status comment), status (a commit status),
    -- reply (an answer to a comment command), draft_pr
    kind        TEXT NOT NULL,
    -- what it is about; with kind it names the thing whose newest state wins
    target      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    due_at      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (repo, kind, target)
);
CREATE INDEX github_outbox_due ON github_outbox (due_at);

CREATE TABLE github_comments (
    repo        TEXT NOT NULL,
    task_key    TEXT NOT NULL,
    pr_number   BIGINT NOT NULL,
    comment_id  BIGINT NOT NULL,
    PRIMARY KEY (repo, task_key, pr_number)
);
