-- Events name the incarnation of the task they belong to (a task file deleted and added
-- again is a new row with a new id), and carry the transaction that wrote them: change feeds
-- (the GitHub reporter, the dashboard) read events in (tx, id) order up to the oldest
-- transaction still running, so an event whose transaction commits late is never skipped.

ALTER TABLE task_events ADD COLUMN task_id BIGINT;
ALTER TABLE task_events ADD COLUMN tx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX task_events_task_id ON task_events (task_id, id);
CREATE INDEX task_events_feed ON task_events (tx, id);
CREATE INDEX task_events_at ON task_events (at);

ALTER TABLE github_outbox ADD CONSTRAINT github_outbox_kind
    CHECK (kind IN ('comment', 'status', 'reply', 'draft_pr'));

-- Events written before this migration belong to the task of their key, if it still exists.
ALTER TABLE task_events DISABLE TRIGGER task_events_append_only;
UPDATE task_events e SET task_id = t.id FROM tasks t
    WHERE e.task_id IS NULL AND t.project = e.project AND t.key = e.key;
ALTER TABLE task_events ENABLE TRIGGER task_events_append_only;
