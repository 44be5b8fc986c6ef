-- See migrations/postgres/0005_feed.sql. SQLite has one writer at a time, so event ids are in
-- commit order and the feed reads them by id alone.

ALTER TABLE task_events ADD COLUMN task_id INTEGER;
CREATE INDEX task_events_task_id ON task_events (task_id, id);
CREATE INDEX task_events_at ON task_events (at);
