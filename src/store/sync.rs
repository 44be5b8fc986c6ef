//! The sync side of the store: projects' synced commits and sync errors, bad task files, and
//! one sync pass applied atomically.

use chrono::{DateTime, Utc};

use super::codec::{self, TaskRecord, TASK_COLUMNS};
use super::leadership::fenced;
use super::{on_pool, q, write, Backend, BeginImmediate, ProjectRow, Result, SpecErrorRow, Store};
use crate::model::{EpicChange, SyncPlan, TaskRow};

/// Which tasks a sync pass looks at.
#[derive(Debug, Clone, Copy)]
pub enum SyncScope<'a> {
    /// The tasks whose files changed.
    Keys(&'a [String]),
    /// Every task of the project (no usable previous commit).
    All,
}

impl Store {
    pub async fn project(&self, name: &str) -> Result<Option<ProjectRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, ProjectRow>(
            "SELECT name, synced_commit, synced_at, sync_error, sync_error_at FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(q("read a project's sync state")))
    }

    pub async fn projects(&self) -> Result<Vec<ProjectRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, ProjectRow>(
            "SELECT name, synced_commit, synced_at, sync_error, sync_error_at FROM projects ORDER BY name")
            .fetch_all(pool)
            .await
            .map_err(q("list projects")))
    }

    /// Clears a project's sync error: a pass succeeded with nothing new to apply.
    pub async fn clear_sync_error(&self, project: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE projects SET sync_error = NULL, sync_error_at = NULL WHERE name = $1 AND sync_error IS NOT NULL")
            .bind(project).execute(pool).await.map(|_| ()).map_err(q("clear a sync error")))?;
        Ok(())
    }

    /// Records that syncing `project` failed (the error is shown to people; nothing else changes).
    pub async fn record_sync_error(
        &self,
        project: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO projects (name, sync_error, sync_error_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET sync_error = $2, sync_error_at = $3")
            .bind(project).bind(error).bind(now)
            .execute(pool).await.map(|_| ()).map_err(q("record a sync error")))?;
        Ok(())
    }

    pub async fn spec_errors(&self, project: Option<&str>) -> Result<Vec<SpecErrorRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, SpecErrorRow>(
            "SELECT project, path, line, col, message, source_commit, at FROM spec_errors
             WHERE ($1 IS NULL OR project = $1) ORDER BY project, path")
            .bind(project).fetch_all(pool).await.map_err(q("list task file errors")))
    }

    /// Applies one sync pass of `project` atomically: the tasks in `scope` are read under the
    /// transaction's lock and handed to `plan` (the model's planner), and what it decides (task
    /// changes, epics opened or counted, bad-file errors) lands together with the new synced
    /// commit, or nothing does. Returns how many tasks changed, and the plan's epic changes and
    /// file errors (its task changes are spent).
    pub async fn apply_sync(
        &self,
        project: &str,
        commit: &str,
        scope: SyncScope<'_>,
        now: DateTime<Utc>,
        plan: impl FnOnce(&[TaskRow]) -> SyncPlan + Send,
    ) -> Result<(usize, SyncPlan)> {
        let lock = match &self.backend {
            Backend::Postgres(_) => " FOR UPDATE",
            Backend::Sqlite(_) => "",
        };
        let (sql, keys) = match scope {
            SyncScope::All => (
                format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 ORDER BY id{lock}"),
                None,
            ),
            SyncScope::Keys(keys) => {
                let set = match &self.backend {
                    Backend::Postgres(_) => "IN (SELECT jsonb_array_elements_text($2::jsonb))",
                    Backend::Sqlite(_) => "IN (SELECT value FROM json_each($2))",
                };
                (
                    format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key {set} ORDER BY id{lock}"),
                    Some(serde_json::to_string(keys).unwrap_or_default()),
                )
            }
        };
        let applied = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin a sync"))?;
            fenced!(self, tx);
            let mut query = sqlx::query_as::<_, TaskRecord>(&sql).bind(project);
            if let Some(keys) = &keys {
                query = query.bind(keys);
            }
            let records = query.fetch_all(&mut *tx).await.map_err(q("read tasks to sync"))?;
            let rows = codec::tasks(records)?;
            let mut decided = plan(&rows);
            let changes = std::mem::take(&mut decided.changes);
            let changed = changes.len();
            write::changes(&mut tx, changes, now).await?;
            for epic in &decided.epics {
                match epic {
                    EpicChange::Open(name) => {
                        // A name reused after its epic ended opens a new epic; the old one
                        // stays in epic_history.
                        sqlx::query(
                            "INSERT INTO epic_history (project, name, state, reason, tasks, consecutive_failures,
                                 activations, spend_usd, created_at, updated_at, archived_at)
                             SELECT project, name, state, reason, tasks, consecutive_failures, activations,
                                 spend_usd, created_at, updated_at, $3
                             FROM epics WHERE project = $1 AND name = $2 AND state <> 'active'")
                            .bind(project).bind(name).bind(now)
                            .execute(&mut *tx).await.map_err(q("keep an ended epic as history"))?;
                        sqlx::query("DELETE FROM epics WHERE project = $1 AND name = $2 AND state <> 'active'")
                            .bind(project).bind(name)
                            .execute(&mut *tx).await.map_err(q("reopen an ended epic"))?;
                        sqlx::query(
                            "INSERT INTO epics (project, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
                             ON CONFLICT (project, name) DO NOTHING")
                            .bind(project).bind(name).bind(now)
                            .execute(&mut *tx).await.map_err(q("open an epic"))?
                    }
                    EpicChange::CountTask(name) => sqlx::query(
                        "UPDATE epics SET tasks = tasks + 1, updated_at = $3 WHERE project = $1 AND name = $2")
                        .bind(project).bind(name).bind(now)
                        .execute(&mut *tx).await.map_err(q("count an epic's task"))?,
                    EpicChange::Rebuilt(e) => sqlx::query(
                        "UPDATE epics SET state = $3, reason = $4, activations = $5, spend_usd = $6, updated_at = $7
                         WHERE project = $1 AND name = $2")
                        .bind(project).bind(&e.name).bind(e.state.as_str()).bind(&e.reason)
                        .bind(e.activations).bind(e.spend_usd).bind(now)
                        .execute(&mut *tx).await.map_err(q("rebuild an epic"))?,
                };
            }
            for path in &decided.cleared_errors {
                sqlx::query("DELETE FROM spec_errors WHERE project = $1 AND path = $2")
                    .bind(project).bind(path).execute(&mut *tx).await.map_err(q("clear a task file error"))?;
            }
            for (path, err) in &decided.errors {
                sqlx::query(
                    "INSERT INTO spec_errors (project, path, line, col, message, source_commit, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (project, path) DO UPDATE SET line = $3, col = $4, message = $5, source_commit = $6, at = $7")
                    .bind(project).bind(path).bind(err.line as i64).bind(err.column as i64).bind(&err.message)
                    .bind(commit).bind(now)
                    .execute(&mut *tx).await.map_err(q("record a task file error"))?;
            }
            sqlx::query(
                "INSERT INTO projects (name, synced_commit, synced_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET synced_commit = $2, synced_at = $3, sync_error = NULL, sync_error_at = NULL")
                .bind(project).bind(commit).bind(now)
                .execute(&mut *tx).await.map_err(q("record the synced commit"))?;
            tx.commit().await.map_err(q("commit a sync"))?;
            (changed, decided)
        });
        if applied.0 > 0 {
            self.wake.notify_one();
        }
        Ok(applied)
    }
}

/// A status file kept for a generation its task left before the file was committed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OwedStatusFile {
    pub key: String,
    pub task_id: i64,
    pub generation: i32,
    /// The file's text, as rendered when it was owed.
    pub body: String,
}

impl Store {
    /// The status files `project` still owes for generations its tasks have left.
    pub async fn owed_status_files(&self, project: &str) -> Result<Vec<OwedStatusFile>> {
        on_pool!(self, pool => sqlx::query_as::<_, OwedStatusFile>(
            "SELECT key, task_id, generation, body FROM status_files WHERE project = $1 ORDER BY key")
            .bind(project).fetch_all(pool).await.map_err(q("read owed status files")))
    }

    /// Forgets owed status files once committed, unless a newer one replaced them meanwhile.
    pub async fn forget_status_files(
        &self,
        project: &str,
        written: &[(String, i32)],
    ) -> Result<()> {
        if written.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin forgetting status files"))?;
            for (key, generation) in written {
                sqlx::query("DELETE FROM status_files WHERE project = $1 AND key = $2 AND generation = $3")
                    .bind(project).bind(key).bind(generation)
                    .execute(&mut *tx).await.map_err(q("forget a status file"))?;
            }
            tx.commit().await.map_err(q("commit forgetting status files"))?;
        });
        Ok(())
    }
}
