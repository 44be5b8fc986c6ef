//! Tasks: reading them, and changing them the one way there is: lock the rows, hand them to a
//! decision of the model, persist what it decided, in one transaction. The claim is the same
//! shape, with the rows it considers found by SQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::codec::{self, TaskRecord, TASK_COLUMNS};
use super::leadership::fenced;
use super::webhooks::{mark_and_reply, Receipt};
use super::{on_pool, q, write, Backend, BeginImmediate, Result, Store, StoreError, TaskFilter};
use crate::model::{Change, Counts, RunningRun, TaskRow};
use crate::spec::TaskState;

/// `id IN (...)` over a JSON array of ids bound as text at `$n`.
fn ids_in(backend: &Backend, n: usize) -> String {
    match backend {
        Backend::Postgres(_) => {
            format!("IN (SELECT jsonb_array_elements_text(${n}::jsonb)::bigint)")
        }
        Backend::Sqlite(_) => format!("IN (SELECT value FROM json_each(${n}))"),
    }
}

/// `key IN (...)` over a JSON array of keys bound as text at `$n`.
fn keys_in(backend: &Backend, n: usize) -> String {
    match backend {
        Backend::Postgres(_) => format!("IN (SELECT jsonb_array_elements_text(${n}::jsonb))"),
        Backend::Sqlite(_) => format!("IN (SELECT value FROM json_each(${n}))"),
    }
}

/// What reads rows to change them appends: Postgres locks them; SQLite's write transaction
/// (`BEGIN IMMEDIATE`) holds the whole database already.
fn lock(backend: &Backend) -> &'static str {
    match backend {
        Backend::Postgres(_) => " FOR UPDATE",
        Backend::Sqlite(_) => "",
    }
}

impl Store {
    // ---- reading -------------------------------------------------------------------------

    pub async fn task(&self, project: &str, key: &str) -> Result<Option<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key = $2");
        let record: Option<TaskRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(project).bind(key).fetch_optional(pool).await.map_err(q("read a task")))?;
        record.map(TaskRow::try_from).transpose()
    }

    /// The task, or `NotFound` naming it.
    pub async fn existing(&self, project: &str, key: &str) -> Result<TaskRow> {
        self.task(project, key)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                project: project.into(),
                key: key.into(),
            })
    }

    /// Tasks with this key in any project.
    pub async fn tasks_with_key(&self, key: &str) -> Result<Vec<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE key = $1 ORDER BY project");
        let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(key).fetch_all(pool).await
            .map_err(q("find a task")))?;
        codec::tasks(records)
    }

    /// The tasks of `project` with these keys (all of them when `keys` is `None`).
    pub async fn tasks_by_keys(
        &self,
        project: &str,
        keys: Option<&[String]>,
    ) -> Result<Vec<TaskRow>> {
        let Some(keys) = keys else {
            let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 ORDER BY id");
            let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(project).fetch_all(pool).await
                .map_err(q("read tasks")))?;
            return codec::tasks(records);
        };
        let mut out = Vec::with_capacity(keys.len());
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key {} ORDER BY id",
            keys_in(&self.backend, 2)
        );
        for chunk in keys.chunks(500) {
            let json = serde_json::to_string(chunk).unwrap_or_default();
            let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(project).bind(&json)
                .fetch_all(pool).await.map_err(q("read tasks by key")))?;
            out.extend(codec::tasks(records)?);
        }
        Ok(out)
    }

    pub async fn list(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1 IS NULL OR project = $1) AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR addressee = $3) AND ($4 IS NULL OR epic = $4)
             ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, priority DESC, id
             LIMIT $5 OFFSET $6");
        let records = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(&filter.project).bind(filter.status.map(TaskState::as_str)).bind(&filter.addressee).bind(&filter.epic)
            .bind(filter.limit.unwrap_or(1000) as i64).bind(filter.offset.unwrap_or(0) as i64)
            .fetch_all(pool).await.map_err(q("list tasks")))?;
        codec::tasks(records)
    }

    pub async fn counts(&self) -> Result<Counts> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT status, COUNT(*) FROM tasks GROUP BY status").fetch_all(pool).await.map_err(q("count tasks")))?;
        let due: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE report_due) + (SELECT COUNT(*) FROM status_files)")
            .fetch_one(pool).await.map_err(q("count unreported tasks")))?;
        let mut c = Counts {
            report_due: due as u64,
            ..Counts::default()
        };
        for (status, n) in rows {
            match crate::model::task::status_from_column(status).map_err(|source| {
                StoreError::BadRow {
                    what: "a task status".into(),
                    source,
                }
            })? {
                TaskState::Pending => c.pending = n as u64,
                TaskState::Running => c.running = n as u64,
                TaskState::Completed => c.completed = n as u64,
            }
        }
        Ok(c)
    }

    /// Task counts per project and status.
    pub async fn counts_by_project(&self) -> Result<Vec<(String, TaskState, i64)>> {
        let rows: Vec<(String, String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT project, status, COUNT(*) FROM tasks GROUP BY project, status")
            .fetch_all(pool).await.map_err(q("count tasks per project")))?;
        rows.into_iter()
            .map(|(p, s, n)| {
                let status = crate::model::task::status_from_column(s).map_err(|source| {
                    StoreError::BadRow {
                        what: format!("a task status of project {p}"),
                        source,
                    }
                })?;
                Ok((p, status, n))
            })
            .collect()
    }

    /// What runs now, without the tasks' specs and results.
    pub async fn running_runs(&self) -> Result<Vec<RunningRun>> {
        let rows: Vec<(i64, String, String, String, i32, i32, bool)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, incarnation, project, key, generation, attempts, cancel_requested FROM tasks WHERE status = 'running' ORDER BY id")
            .fetch_all(pool).await.map_err(q("list running tasks")))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, incarnation, project, key, generation, attempts, cancel_requested)| {
                    RunningRun {
                        id,
                        incarnation,
                        project,
                        key,
                        generation,
                        attempts,
                        cancel_requested,
                    }
                },
            )
            .collect())
    }

    /// The running tasks among `ids`.
    pub async fn running_by_ids(&self, ids: &[i64]) -> Result<Vec<TaskRow>> {
        let json = serde_json::to_string(ids).unwrap_or_default();
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running' AND id {}",
            ids_in(&self.backend, 1)
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(&json).fetch_all(pool).await
            .map_err(q("read running tasks")))?;
        codec::tasks(records)
    }

    /// Running tasks, for adoption after a restart and for stop requests.
    pub async fn running(&self) -> Result<Vec<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running' ORDER BY id");
        let records = on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await
            .map_err(q("list running tasks")))?;
        codec::tasks(records)
    }

    /// The tasks among `ids` that exist (for change-feed readers).
    pub async fn tasks_by_ids(&self, ids: &[i64]) -> Result<Vec<TaskRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let json = serde_json::to_string(ids).unwrap_or_default();
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id {} ORDER BY id",
            ids_in(&self.backend, 1)
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(&json).fetch_all(pool).await
            .map_err(q("read tasks by id")))?;
        codec::tasks(records)
    }

    /// Tasks of `project` from task files whose last change, start or end is after `since`
    /// (a reporter catching up after a restart).
    pub async fn tasks_touched_since(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND origin = 'file'
               AND (updated_at > $2 OR started_at > $2 OR completed_at > $2) ORDER BY id"
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(project).bind(since)
            .fetch_all(pool).await.map_err(q("read changed tasks")))?;
        codec::tasks(records)
    }

    /// Completed tasks whose status file has not been committed yet.
    pub async fn report_due(&self, project: &str) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND report_due ORDER BY id"
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql).bind(project).fetch_all(pool).await
            .map_err(q("list unreported tasks")))?;
        codec::tasks(records)
    }

    /// Where a pending task stands: its place among its addressee's pending tasks (1 = next)
    /// and the running task it waits behind, if any.
    pub async fn queue_place(&self, row: &TaskRow) -> Result<(i64, Option<String>)> {
        let place: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE addressee = $1 AND status = 'pending' AND (priority > $2 OR (priority = $2 AND id <= $3))")
            .bind(&row.addressee).bind(row.priority).bind(row.id).fetch_one(pool).await.map_err(q("find a queue place")))?;
        let running: Option<(String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT project, key FROM tasks WHERE addressee = $1 AND status = 'running' LIMIT 1")
            .bind(&row.addressee).fetch_optional(pool).await.map_err(q("find the running task")))?;
        Ok((
            place,
            running.map(|(p, k)| {
                if p == row.project {
                    k
                } else {
                    format!("{p}/{k}")
                }
            }),
        ))
    }

    // ---- changing ------------------------------------------------------------------------

    /// Changes the task `project`/`key` as `decide` says, deciding on the row as it is under
    /// the transaction's lock (so a claim or a run's end cannot slip in between the look and
    /// the change). `decide` also returns what the caller wants to know of its decision.
    pub async fn modify_task<T>(
        &self,
        project: &str,
        key: &str,
        now: DateTime<Utc>,
        decide: impl FnOnce(&TaskRow) -> (Change, T) + Send,
    ) -> Result<T> {
        self.modify_task_marking(project, key, now, None, decide)
            .await
    }

    /// [`Store::modify_task`] asked by a webhook delivery: the delivery is marked processed,
    /// and its reply queued, in the same transaction as the change (see [`Receipt`]).
    pub async fn modify_task_marking<T>(
        &self,
        project: &str,
        key: &str,
        now: DateTime<Utc>,
        receipt: Option<Receipt<'_, T>>,
        decide: impl FnOnce(&TaskRow) -> (Change, T) + Send,
    ) -> Result<T> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key = $2{}",
            lock(&self.backend)
        );
        let not_found = || StoreError::NotFound {
            project: project.into(),
            key: key.into(),
        };
        let out = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin changing a task"))?;
            let record: Option<TaskRecord> = sqlx::query_as(&sql).bind(project).bind(key)
                .fetch_optional(&mut *tx).await.map_err(q("read a task to change"))?;
            let row = TaskRow::try_from(record.ok_or_else(not_found)?)?;
            let (change, out) = decide(&row);
            write::changes(&mut tx, vec![change], now).await?;
            if let Some(r) = receipt {
                if !mark_and_reply!(tx, r.delivery, (r.reply)(&out), now) {
                    return Err(StoreError::DeliveryProcessed { delivery: r.delivery.delivery_id.clone() });
                }
            }
            tx.commit().await.map_err(q("commit a task change"))?;
            out
        });
        self.wake.notify_one();
        Ok(out)
    }

    /// Changes each task of `ids` that still exists as `decide` says, on the rows as they are
    /// under the transaction's lock, in one transaction (one commit for a batch of run ends).
    /// Returns what `decide` returned for each row found, with the row as it was.
    pub async fn modify_tasks<T: Send>(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
        mut decide: impl FnMut(&TaskRow) -> (Change, T) + Send,
    ) -> Result<Vec<(TaskRow, T)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let json = serde_json::to_string(ids).unwrap_or_default();
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id {} ORDER BY id{}",
            ids_in(&self.backend, 1),
            lock(&self.backend)
        );
        let out = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin changing tasks"))?;
            fenced!(self, tx);
            let records: Vec<TaskRecord> = sqlx::query_as(&sql).bind(&json)
                .fetch_all(&mut *tx).await.map_err(q("read tasks to change"))?;
            let rows = codec::tasks(records)?;
            let mut changes = Vec::with_capacity(rows.len());
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let (change, t) = decide(&row);
                changes.push(change);
                out.push((row, t));
            }
            write::changes(&mut tx, changes, now).await?;
            tx.commit().await.map_err(q("commit task changes"))?;
            out
        });
        self.wake.notify_one();
        Ok(out)
    }

    /// Claims what may run now, in one transaction: the first pending task of each addressee
    /// with nothing running (highest priority, then oldest; its `not_before` passed), locked
    /// and handed with the number of runs per project to `decide`, which says which start.
    /// Claimers never overlap (an advisory lock on Postgres, the single writer on SQLite), a
    /// head being changed by someone else right now is skipped until the next pass, and the
    /// unique index on running addressees is the last word either way. Returns the claimed
    /// rows as written.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        decide: impl FnOnce(&HashMap<String, u32>, &[TaskRow]) -> Vec<Change> + Send,
    ) -> Result<Vec<TaskRow>> {
        const HEADS: &str = "SELECT id FROM (
                SELECT id, addressee, priority, not_before,
                       ROW_NUMBER() OVER (PARTITION BY addressee ORDER BY priority DESC, id) AS rn
                FROM tasks WHERE status = 'pending'
            ) c
            WHERE rn = 1 AND (not_before IS NULL OR not_before <= $1)
              AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.addressee = c.addressee AND r.status = 'running')";
        let sql = match &self.backend {
            Backend::Postgres(_) => format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({HEADS}) ORDER BY priority DESC, id FOR UPDATE SKIP LOCKED"
            ),
            Backend::Sqlite(_) => format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({HEADS}) ORDER BY priority DESC, id"
            ),
        };
        let claimed = on_pool!(self, pool => {
            // On Postgres the claimers' advisory lock comes with the BEGIN (see `begin_claim`).
            let mut tx = pool.begin_claim().await.map_err(q("begin and lock a claim"))?;
            fenced!(self, tx);
            let running: Vec<(String, i64)> = sqlx::query_as(
                "SELECT project, COUNT(*) FROM tasks WHERE status = 'running' GROUP BY project")
                .fetch_all(&mut *tx).await.map_err(q("count running tasks"))?;
            let running: HashMap<String, u32> = running.into_iter().map(|(p, n)| (p, n as u32)).collect();
            let records: Vec<TaskRecord> = sqlx::query_as(&sql).bind(now)
                .fetch_all(&mut *tx).await.map_err(q("find dispatchable tasks"))?;
            let heads = codec::tasks(records)?;
            let changes = decide(&running, &heads);
            let rows = if changes.iter().all(Change::is_none) {
                Vec::new()
            } else {
                write::changes(&mut tx, changes, now).await?
            };
            tx.commit().await.map_err(q("commit a claim"))?;
            rows
        });
        Ok(claimed)
    }

    /// Appends events that change no row (a launch, an adoption, a pause), in one statement.
    pub async fn append_events(
        &self,
        events: &[crate::model::NewEvent],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin logging events"))?;
            write::events(&mut tx, events, now).await?;
            tx.commit().await.map_err(q("commit events"))?;
        });
        Ok(())
    }

    // ---- agent pauses --------------------------------------------------------------------

    /// Pauses dispatch of tasks run by `agent` until `until` (a later pause wins).
    pub async fn pause_agent(
        &self,
        agent: &str,
        until: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO agent_pauses (agent, until, reason, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent) DO UPDATE SET until = CASE WHEN agent_pauses.until > $2 THEN agent_pauses.until ELSE $2 END,
                 reason = $3, at = $4")
            .bind(agent).bind(until).bind(reason).bind(now)
            .execute(pool).await.map(|_| ()).map_err(q("pause an agent")))?;
        Ok(())
    }

    /// Agents whose dispatch is paused at `now`, with the time the pause ends and why.
    pub async fn agent_pauses(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>, String)>> {
        on_pool!(self, pool => sqlx::query_as(
            "SELECT agent, until, reason FROM agent_pauses WHERE until > $1 ORDER BY agent")
            .bind(now).fetch_all(pool).await.map_err(q("read agent pauses")))
    }
}
