-- See migrations/postgres/0005_feed.sql. SQLite has one writer at a time, so event ids are in
-- commit order and the feed reads them by id alone.

ALTER TABLE task_events ADD COLUMN task_id INTEGER;
CREATE INDEX task_events_task_id ON task_events (task_id, id);
CREATE INDEX task_events_at ON task_events (at);

-- Events written before this migration belong to the task of their key, if it still exists.
DROP TRIGGER task_events_no_update;
UPDATE task_events SET task_id = (SELECT t.id FROM tasks t WHERE t.project = task_events.project AND t.key = task_events.key)
    WHERE task_id IS NULL;
CREATE TRIGGER task_events_no_update BEFORE UPDATE ON task_events
BEGIN
    SELECT RAISE(ABORT, 'task_events is append-only');
END;
