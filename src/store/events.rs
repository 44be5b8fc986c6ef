//! The event log: a task's history, and the change feed that readers outside the engine loop
//! (the GitHub reporter, the dashboard) follow by a monotonic cursor instead of a clock.
//!
//! Event ids are handed out when a row is inserted, not when its transaction commits, so a
//! transaction that commits late can make an event appear behind a cursor that already passed
//! its id. On Postgres every event also records the transaction that wrote it, and the feed
//! reads in (transaction, id) order only up to the oldest transaction still running: an event
//! that is not readable yet belongs to a transaction that has not finished, and once it has,
//! the feed reaches it. On SQLite writers are serialised, so ids are in commit order.
//! A transaction left open elsewhere on the same Postgres cluster delays the feed, never
//! makes it skip.

use super::codec::{self, EventRecord, EVENT_COLUMNS};
use super::{on_pool, q, Backend, Result, Store};
use crate::model::EventRow;

/// Where a change feed reader is: past every event up to this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    /// The writing transaction of the last event read (Postgres; 0 on SQLite).
    pub tx: i64,
    pub id: i64,
}

impl Store {
    /// The events of the task `project`/`key`, oldest first: those of its current incarnation
    /// (a task file deleted and added again starts a log of its own), or, when no task of that
    /// name exists now, those of the incarnations it had.
    pub async fn events(&self, project: &str, key: &str) -> Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM task_events WHERE project = $1 AND key = $2
               AND (task_id = (SELECT id FROM tasks WHERE project = $1 AND key = $2)
                    OR NOT EXISTS (SELECT 1 FROM tasks WHERE project = $1 AND key = $2))
             ORDER BY id"
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(project).bind(key).fetch_all(pool).await.map_err(q("read a task's events")))?;
        codec::events(records)
    }

    /// Whether the log of the task whose row is `task_id` has an event of `kind` whose message
    /// mentions `needle`.
    pub async fn has_event(
        &self,
        task_id: i64,
        kind: crate::model::EventKind,
        needle: &str,
    ) -> Result<bool> {
        let pattern = format!("%{}%", needle.replace('%', "").replace('_', "\\_"));
        let found: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM task_events WHERE task_id = $1 AND kind = $2 AND message LIKE $3 ESCAPE '\\' LIMIT 1")
            .bind(task_id).bind(kind.as_str()).bind(&pattern)
            .fetch_optional(pool).await.map_err(q("look for an event")))?;
        Ok(found.is_some())
    }

    /// The cursor past every event readable now: where a reader that wants only what happens
    /// from here on starts.
    pub async fn feed_head(&self) -> Result<FeedCursor> {
        let head: Option<(i64, i64)> = match &self.backend {
            Backend::Postgres(pool) => sqlx::query_as(
                "SELECT tx, id FROM task_events WHERE tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                 ORDER BY tx DESC, id DESC LIMIT 1")
                .fetch_optional(pool).await.map_err(q("find the head of the change feed"))?,
            Backend::Sqlite(pool) => sqlx::query_as("SELECT 0, id FROM task_events ORDER BY id DESC LIMIT 1")
                .fetch_optional(pool).await.map_err(q("find the head of the change feed"))?,
        };
        Ok(head.map_or(FeedCursor::default(), |(tx, id)| FeedCursor { tx, id }))
    }

    /// Up to `limit` events after `cursor` in commit order, and the cursor past them. An event
    /// whose transaction has not finished is not returned yet, nor anything after it.
    pub async fn feed_after(
        &self,
        cursor: FeedCursor,
        limit: i64,
    ) -> Result<(Vec<EventRow>, FeedCursor)> {
        let rows: Vec<(i64, EventRecord)> = match &self.backend {
            Backend::Postgres(pool) => {
                let sql = format!(
                    "SELECT tx, {EVENT_COLUMNS} FROM task_events
                     WHERE (tx, id) > ($1, $2) AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                     ORDER BY tx, id LIMIT $3"
                );
                let records: Vec<FeedRecord> = sqlx::query_as(&sql)
                    .bind(cursor.tx)
                    .bind(cursor.id)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                    .map_err(q("read the change feed"))?;
                records.into_iter().map(|r| (r.tx, r.event)).collect()
            }
            Backend::Sqlite(pool) => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM task_events WHERE id > $1 ORDER BY id LIMIT $2"
                );
                let records: Vec<EventRecord> = sqlx::query_as(&sql)
                    .bind(cursor.id)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                    .map_err(q("read the change feed"))?;
                records.into_iter().map(|r| (0, r)).collect()
            }
        };
        let mut next = cursor;
        let mut events = Vec::with_capacity(rows.len());
        for (tx, record) in rows {
            let event = crate::model::EventRow::try_from(record)?;
            next = FeedCursor { tx, id: event.id };
            events.push(event);
        }
        Ok((events, next))
    }
}

/// A feed row on Postgres: the writing transaction, then the event.
#[derive(Debug)]
struct FeedRecord {
    tx: i64,
    event: EventRecord,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for FeedRecord {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            tx: row.try_get("tx")?,
            event: EventRecord::from_row(row)?,
        })
    }
}
