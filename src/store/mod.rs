//! What lives in the database: tasks, their append-only event log, sync state and bad task
//! files. One concrete store over Postgres (production) or an SQLite file (the default); both run
//! the same SQL where they can and are tested by one suite.

mod rows;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Notify;

pub use rows::{
    ClaimLimits, Counts, EpicCount, EpicRow, EventRow, NewEvent, NewTask, ProjectRow, RunningRun,
    SpecErrorRow, TaskFilter, TaskRow,
};

use crate::spec::{RunResult, TaskState};

/// What a failed store call was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed while trying to {step}")]
    Query {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("no task {project}/{key}")]
    NotFound { project: String, key: String },
    #[error("task {project}/{key} is {status}; {why}")]
    Conflict {
        project: String,
        key: String,
        status: String,
        why: &'static str,
    },
}

impl StoreError {
    /// Whether trying again later may succeed (connection trouble, not a bad request).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Query { source, .. } => matches!(
                source,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }
}

fn q(step: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { step, source }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has; the body must type-check
/// for both, which keeps the two backends on one code path.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Postgres($pool) => $body,
            Backend::Sqlite($pool) => $body,
        }
    };
}

mod outbox;
pub use outbox::OutboxRow;

/// Opens a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
/// so a transaction that reads and then writes never fails half-way because another process
/// (the CLI, say) wrote meanwhile; the busy timeout covers the wait.
trait BeginImmediate {
    type Db: sqlx::Database;
    fn begin_immediate(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send;
}

impl BeginImmediate for PgPool {
    type Db = sqlx::Postgres;
    fn begin_immediate(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>,
    > + Send {
        self.begin()
    }
}

impl BeginImmediate for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_immediate(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

/// The store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// Signalled after every change that may make a task dispatchable or stoppable.
    wake: Arc<Notify>,
    /// SQLite: the last `PRAGMA data_version` seen (see [`Store::changed_elsewhere`]).
    data_version: Arc<std::sync::atomic::AtomicI64>,
}

const TASK_COLUMNS: &str = "id, project, key, addressee, status, prompt, spec, spec_hash, source_commit, kind, epic, agent, \
     branch, base, created_by, priority, max_attempts, timeout_secs, generation, attempts, infra_failures, requeues, \
     cancel_requested, file_deleted, run_spec_hash, not_before, result, report_due, created_at, updated_at, \
     started_at, completed_at, origin, context";

impl Store {
    /// Connects to `url` (`postgres://...` or `sqlite:...`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::connect_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema.
    pub async fn connect_without_migrating(url: &str) -> Result<Self> {
        let redacted = crate::config::redact_url(url);
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|source| StoreError::Connect {
                    url: redacted.clone(),
                    source,
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            if let Some(parent) = options.get_filename().parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            // One connection: SQLite has one writer anyway, and a single connection makes every
            // transaction (the claim above all) serial within the engine without busy retries.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    url: redacted,
                    source,
                })?;
            Backend::Sqlite(pool)
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await
                .map_err(|source| StoreError::Connect {
                    url: redacted,
                    source,
                })?;
            Backend::Postgres(pool)
        };
        Ok(Self {
            backend,
            wake: Arc::new(Notify::new()),
            data_version: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
        })
    }

    /// Applies the migrations in `migrations/` (embedded at build time).
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            Backend::Sqlite(pool) => {
                // sqlx locks migrations on Postgres but not on SQLite: two processes opening a
                // new database at once (the engine and the CLI) can both start the first
                // migration, and the second then fails. Once the first is done, a second try
                // finds it applied.
                let mut tries = 0;
                loop {
                    match sqlx::migrate!("migrations/sqlite").run(pool).await {
                        Err(_) if tries < 3 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        done => break done,
                    }
                }
            }
        }
        .map_err(StoreError::Migrate)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The in-process wake-up: notified when tasks may have become dispatchable.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Forwards Postgres `NOTIFY swarm_tasks` (sent by a trigger on every relevant change,
    /// also from other processes) to the in-process wake-up. Returns at once for SQLite.
    pub async fn listen(&self) -> Result<()> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(());
        };
        let mut listener = PgListener::connect_with(pool)
            .await
            .map_err(q("listen for task changes"))?;
        listener
            .listen("swarm_tasks")
            .await
            .map_err(q("listen for task changes"))?;
        loop {
            // recv reconnects by itself after a lost connection.
            listener
                .recv()
                .await
                .map_err(q("receive a task notification"))?;
            self.wake.notify_one();
        }
    }

    /// SQLite: whether another process (the CLI, say) committed to the database since the
    /// last call; the engine polls this, as Postgres tells it by NOTIFY. Always `false` on
    /// Postgres and on the first call.
    pub async fn changed_elsewhere(&self) -> Result<bool> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Ok(false);
        };
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(pool)
            .await
            .map_err(q("read the database's data version"))?;
        let before = self
            .data_version
            .swap(version, std::sync::atomic::Ordering::SeqCst);
        Ok(before != -1 && before != version)
    }

    /// The next moment something waiting on time becomes dispatchable: a retry's backoff
    /// ends, or an agent's pause does.
    pub async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let (task, pause): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = on_pool!(self, pool => {
            let task = sqlx::query_scalar(
                "SELECT MIN(not_before) FROM tasks WHERE status = 'pending' AND not_before > $1")
                .bind(now).fetch_one(pool).await.map_err(q("find the next retry"))?;
            let pause = sqlx::query_scalar("SELECT MIN(until) FROM agent_pauses WHERE until > $1")
                .bind(now).fetch_one(pool).await.map_err(q("find the next pause end"))?;
            (task, pause)
        });
        Ok(task.into_iter().chain(pause).min())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    // ---- projects -------------------------------------------------------------------------

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

    /// Records that syncing `project` failed (the error is shown to people; nothing else changes).
    /// Clears a project's sync error: a pass succeeded with nothing new to apply.
    pub async fn clear_sync_error(&self, project: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE projects SET sync_error = NULL, sync_error_at = NULL WHERE name = $1 AND sync_error IS NOT NULL")
            .bind(project).execute(pool).await.map(|_| ()).map_err(q("clear a sync error")))?;
        Ok(())
    }

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

    // ---- sync -----------------------------------------------------------------------------

    /// The observed tasks of `project` with these keys (all of them when `keys` is `None`).
    pub async fn tasks_by_keys(
        &self,
        project: &str,
        keys: Option<&[String]>,
    ) -> Result<Vec<TaskRow>> {
        let sql_all = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1");
        let Some(keys) = keys else {
            return on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql_all)
                .bind(project).fetch_all(pool).await.map_err(q("read tasks")));
        };
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let json = serde_json::to_string(chunk).unwrap_or_default();
            let sql = match &self.backend {
                Backend::Postgres(_) => format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key IN (SELECT jsonb_array_elements_text($2::jsonb))"),
                Backend::Sqlite(_) => format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key IN (SELECT value FROM json_each($2))"),
            };
            let rows = on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql)
                .bind(project).bind(&json).fetch_all(pool).await.map_err(q("read tasks by key")))?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Applies one sync pass of `project` atomically: the task changes, the bad-file errors and
    /// the new synced commit all land together or not at all. The planner decided from rows
    /// read before this transaction; a task may have been claimed or finished since, so each
    /// change re-reads its row under a lock and acts on the state it finds.
    pub async fn apply_sync(
        &self,
        project: &str,
        commit: &str,
        plan: &crate::sync::SyncPlan,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use crate::sync::SyncAction as A;
        let lock_row = match &self.backend {
            Backend::Postgres(_) => {
                "SELECT status, generation FROM tasks WHERE project = $1 AND key = $2 FOR UPDATE"
            }
            Backend::Sqlite(_) => {
                "SELECT status, generation FROM tasks WHERE project = $1 AND key = $2"
            }
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin a sync"))?;
            // Postgres: new files (a first sync brings thousands) are inserted by one statement;
            // what it did not insert (the row exists after all, or the task opens an epic) takes
            // the careful path below. SQLite runs in-process, where a statement per task is cheap.
            let mut inserted = HashSet::new();
            if let Backend::Postgres(_) = &self.backend {
                let new: Vec<serde_json::Value> = plan.actions.iter().filter_map(|a| match a {
                    A::Create(t) if t.epic.is_none() => Some(serde_json::json!({
                        "key": t.key, "addressee": t.addressee, "prompt": t.prompt, "spec": t.spec,
                        "spec_hash": t.spec_hash, "kind": t.kind, "agent": t.agent, "branch": t.branch,
                        "base": t.base, "created_by": t.created_by, "priority": t.priority,
                        "max_attempts": t.max_attempts, "timeout_secs": t.timeout_secs,
                    })),
                    _ => None,
                }).collect();
                if !new.is_empty() {
                    let keys: Vec<String> = sqlx::query_scalar(
                        "WITH x AS (SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(key text, addressee text, prompt text,
                                spec jsonb, spec_hash text, kind text, agent text, branch text, base text, created_by text,
                                priority int, max_attempts int, timeout_secs bigint)),
                         i AS (INSERT INTO tasks (project, key, addressee, status, prompt, spec, spec_hash, source_commit, kind, agent,
                                branch, base, created_by, priority, max_attempts, timeout_secs, created_at, updated_at)
                             SELECT $1, key, addressee, 'pending', prompt, spec, spec_hash, $3, kind, agent,
                                branch, base, created_by, priority, max_attempts, timeout_secs, $4, $4 FROM x
                             ON CONFLICT (project, key) DO NOTHING RETURNING key),
                         e AS (INSERT INTO task_events (project, key, generation, at, kind, message)
                             SELECT $1, key, 1, $4, 'created', $5 FROM i)
                         SELECT key FROM i")
                        .bind(project).bind(serde_json::Value::Array(new).to_string()).bind(commit).bind(now)
                        .bind(format!("task file added in {}", short(commit)))
                        .fetch_all(&mut *tx).await.map_err(q("create tasks"))?;
                    inserted.extend(keys);
                }
            }
            for action in &plan.actions {
                if let A::Create(t) = action {
                    if inserted.contains(&t.key) {
                        continue;
                    }
                }
                let key = match action {
                    A::Create(t) | A::Update { task: t, .. } => t.key.as_str(),
                    A::Remove { key, .. } | A::Stop { key, .. } => key.as_str(),
                };
                let current: Option<(String, i32)> = sqlx::query_as(lock_row)
                    .bind(project).bind(key).fetch_optional(&mut *tx).await.map_err(q("read a task to sync"))?;
                let current = current.map(|(s, g)| (TaskState::parse(&s).unwrap_or(TaskState::Pending), g));
                match (action, current) {
                    (A::Create(t) | A::Update { task: t, .. }, None) => {
                        sqlx::query(
                            "INSERT INTO tasks (project, key, addressee, status, prompt, spec, spec_hash, source_commit, kind, epic, agent,
                                branch, base, created_by, priority, max_attempts, timeout_secs, created_at, updated_at)
                             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)")
                            .bind(project).bind(&t.key).bind(&t.addressee).bind(&t.prompt).bind(Json(&t.spec))
                            .bind(&t.spec_hash).bind(commit).bind(&t.kind).bind(&t.epic).bind(&t.agent)
                            .bind(&t.branch).bind(&t.base).bind(&t.created_by).bind(t.priority).bind(t.max_attempts)
                            .bind(t.timeout_secs).bind(now)
                            .execute(&mut *tx).await.map_err(q("create a task"))?;
                        insert_event(&mut *tx, project, &t.key, 1, now, "created", &format!("task file added in {}", short(commit)), None).await?;
                        if let Some(epic) = &t.epic {
                            // An epic's own task (kind epic) opens it; every other task of an open
                            // epic counts against its cap. A label with no epic task opens nothing.
                            if t.kind.as_deref() == Some("epic") {
                                sqlx::query(
                                    "INSERT INTO epics (project, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
                                     ON CONFLICT (project, name) DO NOTHING")
                                    .bind(project).bind(epic).bind(now)
                                    .execute(&mut *tx).await.map_err(q("open an epic"))?;
                            } else if crate::worker::prompts::Role::of_kind(t.kind.as_deref()) != crate::worker::prompts::Role::Manager {
                                sqlx::query("UPDATE epics SET tasks = tasks + 1, updated_at = $3 WHERE project = $1 AND name = $2")
                                    .bind(project).bind(epic).bind(now)
                                    .execute(&mut *tx).await.map_err(q("count an epic's task"))?;
                            }
                        }
                    }
                    (A::Create(t) | A::Update { task: t, .. }, Some((state, generation))) => {
                        // Pending: the new spec replaces the old. Completed: a new generation
                        // runs. Running: the spec is stored and runs as the next generation when
                        // the current run ends; the addressee changes only then, so the running
                        // task keeps its place under the one-running-per-addressee index.
                        let next = state == TaskState::Completed;
                        sqlx::query(
                            "UPDATE tasks SET addressee = CASE WHEN status = 'running' THEN addressee ELSE $3 END,
                                prompt = $4, spec = $5, spec_hash = $6, source_commit = $7,
                                kind = $8, epic = $9, agent = $10, branch = $11, base = $12, created_by = $13, priority = $14,
                                max_attempts = $15, timeout_secs = $16, updated_at = $17,
                                generation = CASE WHEN $18 THEN generation + 1 ELSE generation END,
                                attempts = CASE WHEN $18 THEN 0 ELSE attempts END,
                                infra_failures = CASE WHEN $18 THEN 0 ELSE infra_failures END,
                                requeues = CASE WHEN $18 THEN 0 ELSE requeues END,
                                status = CASE WHEN $18 THEN 'pending' ELSE status END,
                                result = CASE WHEN $18 THEN NULL ELSE result END,
                                not_before = CASE WHEN $18 THEN NULL ELSE not_before END,
                                report_due = CASE WHEN $18 THEN FALSE ELSE report_due END,
                                cancel_requested = CASE WHEN file_deleted THEN FALSE ELSE cancel_requested END,
                                file_deleted = FALSE
                             WHERE project = $1 AND key = $2")
                            .bind(project).bind(&t.key).bind(&t.addressee).bind(&t.prompt).bind(Json(&t.spec))
                            .bind(&t.spec_hash).bind(commit).bind(&t.kind).bind(&t.epic).bind(&t.agent)
                            .bind(&t.branch).bind(&t.base).bind(&t.created_by).bind(t.priority).bind(t.max_attempts)
                            .bind(t.timeout_secs).bind(now).bind(next)
                            .execute(&mut *tx).await.map_err(q("update a task"))?;
                        let (kind, generation, msg) = match state {
                            TaskState::Completed => ("new_generation", generation + 1, format!("task file changed in {}; runs again", short(commit))),
                            TaskState::Running => ("updated", generation, format!("task file changed in {} while running; the new spec runs when this run ends", short(commit))),
                            TaskState::Pending => ("updated", generation, format!("task file changed in {}", short(commit))),
                        };
                        insert_event(&mut *tx, project, &t.key, generation, now, kind, &msg, None).await?;
                    }
                    (A::Remove { .. } | A::Stop { .. }, None) => {}
                    (A::Remove { key, .. } | A::Stop { key, .. }, Some((TaskState::Running, generation))) => {
                        sqlx::query("UPDATE tasks SET cancel_requested = TRUE, file_deleted = TRUE, updated_at = $3
                                     WHERE project = $1 AND key = $2")
                            .bind(project).bind(key).bind(now).execute(&mut *tx).await.map_err(q("stop a task"))?;
                        insert_event(&mut *tx, project, key, generation, now, "stop_requested",
                            &format!("task file deleted in {} while running; stopping", short(commit)), None).await?;
                    }
                    (A::Remove { key, .. } | A::Stop { key, .. }, Some((_, generation))) => {
                        sqlx::query("DELETE FROM tasks WHERE project = $1 AND key = $2")
                            .bind(project).bind(key).execute(&mut *tx).await.map_err(q("remove a task"))?;
                        insert_event(&mut *tx, project, key, generation, now, "removed",
                            &format!("task file deleted in {}", short(commit)), None).await?;
                    }
                }
            }
            for path in &plan.cleared_errors {
                sqlx::query("DELETE FROM spec_errors WHERE project = $1 AND path = $2")
                    .bind(project).bind(path).execute(&mut *tx).await.map_err(q("clear a task file error"))?;
            }
            for (path, err) in &plan.errors {
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
        });
        if !plan.actions.is_empty() {
            self.wake.notify_one();
        }
        Ok(())
    }

    pub async fn spec_errors(&self, project: Option<&str>) -> Result<Vec<SpecErrorRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, SpecErrorRow>(
            "SELECT project, path, line, col, message, source_commit, at FROM spec_errors
             WHERE ($1 IS NULL OR project = $1) ORDER BY project, path")
            .bind(project).fetch_all(pool).await.map_err(q("list task file errors")))
    }

    // ---- dispatch -------------------------------------------------------------------------

    /// Claims up to `limits.batch` pending tasks whose addressee has nothing running, highest
    /// priority then oldest first, within the global and per-project limits, and marks them
    /// running, in one transaction. Claimers never overlap (an advisory lock on Postgres, the
    /// single writer on SQLite) and the unique index is the last word either way.
    pub async fn claim(&self, limits: &ClaimLimits, now: DateTime<Utc>) -> Result<Vec<TaskRow>> {
        const HEADS: &str = "SELECT id, project, addressee, agent FROM (
                SELECT id, project, addressee, agent, priority, not_before,
                       ROW_NUMBER() OVER (PARTITION BY addressee ORDER BY priority DESC, id) AS rn
                FROM tasks WHERE status = 'pending'
            ) c
            WHERE rn = 1 AND (not_before IS NULL OR not_before <= $1)
              AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.addressee = c.addressee AND r.status = 'running')
            ORDER BY priority DESC, id";
        let claimed = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin a claim"))?;
            if let Backend::Postgres(_) = &self.backend {
                sqlx::query("SELECT pg_advisory_xact_lock(7353012)").execute(&mut *tx).await.map_err(q("lock the claim"))?;
            }
            let running: Vec<(String, i64)> = sqlx::query_as(
                "SELECT project, COUNT(*) FROM tasks WHERE status = 'running' GROUP BY project")
                .fetch_all(&mut *tx).await.map_err(q("count running tasks"))?;
            let mut running: HashMap<String, u32> = running.into_iter().map(|(p, n)| (p, n as u32)).collect();
            let total: u32 = running.values().sum();
            let mut free = limits.max_running.saturating_sub(total).min(limits.batch);
            let mut ids = Vec::new();
            if free > 0 {
                let heads: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(HEADS).bind(now)
                    .fetch_all(&mut *tx).await.map_err(q("find dispatchable tasks"))?;
                for (id, project, _addressee, agent) in heads {
                    if free == 0 {
                        break;
                    }
                    // The head of a paused agent's queue waits, and so does its addressee.
                    if limits.paused_agents.contains(agent.as_deref().unwrap_or(&limits.default_agent)) {
                        continue;
                    }
                    let n = running.entry(project.clone()).or_default();
                    if *n < limits.per_project(&project) {
                        *n += 1;
                        free -= 1;
                        ids.push(id);
                    }
                }
            }
            let mut rows = Vec::new();
            if !ids.is_empty() {
                let json = serde_json::to_string(&ids).unwrap_or_default();
                let id_set = match &self.backend {
                    Backend::Postgres(_) => "(SELECT jsonb_array_elements_text($2::jsonb)::bigint)",
                    Backend::Sqlite(_) => "(SELECT value FROM json_each($2))",
                };
                let sql = format!(
                    "UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = $1, completed_at = NULL,
                        run_spec_hash = spec_hash, result = NULL, not_before = NULL
                     WHERE status = 'pending' AND id IN {id_set} RETURNING {TASK_COLUMNS}");
                rows = sqlx::query_as::<_, TaskRow>(&sql).bind(now).bind(&json)
                    .fetch_all(&mut *tx).await.map_err(q("claim tasks"))?;
                let sql = format!(
                    "INSERT INTO task_events (project, key, generation, at, kind, message)
                     SELECT project, key, generation, $1, 'claimed', 'attempt ' || attempts || ' claimed for ' || addressee
                     FROM tasks WHERE id IN {id_set}");
                sqlx::query(&sql).bind(now).bind(&json).execute(&mut *tx).await.map_err(q("log claims"))?;
            }
            tx.commit().await.map_err(q("commit a claim"))?;
            rows
        });
        Ok(claimed)
    }

    /// Finishes the run `attempt` of a running task according to `outcome`. Does nothing (and
    /// returns `false`) when the task is no longer in that run: finishing is idempotent.
    pub async fn finish_run(
        &self,
        id: i64,
        attempt: i32,
        outcome: &crate::engine::Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.finish_runs(&[(id, attempt, outcome)], now).await?[0])
    }

    /// [`Store::finish_run`] for many runs in one transaction (one commit, one disk flush):
    /// whether each was still in that run and is now finished.
    pub async fn finish_runs(
        &self,
        runs: &[(i64, i32, &crate::engine::Outcome)],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>> {
        use crate::engine::Outcome as O;
        let mut finished = vec![false; runs.len()];
        if runs.is_empty() {
            return Ok(finished);
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin finishing runs"))?;
            // On Postgres, completed runs (nearly all of them) are finished by one statement:
            // a round trip per run would bound dispatch at a few thousand runs a second.
            // SQLite runs in-process, where a statement per run costs microseconds.
            let mut set_based = vec![false; runs.len()];
            if let Backend::Postgres(_) = &self.backend {
                let mut batch = Vec::new();
                for (i, &(id, attempt, outcome)) in runs.iter().enumerate() {
                    if let O::Completed(r) = outcome {
                        let (kind, message) = outcome.describe(attempt);
                        batch.push(serde_json::json!({"id": id, "attempt": attempt, "result": r, "kind": kind, "message": message}));
                        set_based[i] = true;
                    }
                }
                if !batch.is_empty() {
                    let done: Vec<i64> = sqlx::query_scalar(
                        "WITH x AS (SELECT * FROM jsonb_to_recordset($2::jsonb)
                                AS x(id bigint, attempt int, result jsonb, kind text, message text)),
                         u AS (UPDATE tasks t SET status = 'completed', result = x.result, completed_at = $1, updated_at = $1,
                                not_before = NULL, report_due = (t.origin = 'file'), cancel_requested = FALSE
                             FROM x WHERE t.id = x.id AND t.status = 'running' AND t.attempts = x.attempt
                             RETURNING t.id, t.project, t.key, t.generation, x.kind, x.message, x.result),
                         e AS (INSERT INTO task_events (project, key, generation, at, kind, message, data)
                             SELECT project, key, generation, $1, kind, message, result FROM u)
                         SELECT id FROM u")
                        .bind(now).bind(serde_json::Value::Array(batch).to_string())
                        .fetch_all(&mut *tx).await.map_err(q("finish runs"))?;
                    let done: HashSet<i64> = done.into_iter().collect();
                    for (i, &(id, _, _)) in runs.iter().enumerate() {
                        finished[i] = set_based[i] && done.contains(&id);
                    }
                }
            }
            for (i, &(id, attempt, outcome)) in runs.iter().enumerate() {
                if set_based[i] {
                    continue;
                }
                // (status, counter to bump, not_before, report_due, result, next generation)
                let (status, bump, not_before, report_due, result, next) = match outcome {
                    O::Completed(r) => (TaskState::Completed, "", None, true, Some(r), false),
                    O::Retry {
                        result,
                        not_before,
                        infrastructure: true,
                    } => (
                        TaskState::Pending,
                        "infra_failures",
                        Some(*not_before),
                        false,
                        Some(result),
                        false,
                    ),
                    O::Retry {
                        result,
                        not_before,
                        infrastructure: false,
                    } => (
                        TaskState::Pending,
                        "",
                        Some(*not_before),
                        false,
                        Some(result),
                        false,
                    ),
                    // A rate or usage limit does not count as an attempt: it is counted apart.
                    O::Requeue { result, not_before } => (
                        TaskState::Pending,
                        "requeues",
                        Some(*not_before),
                        false,
                        Some(result),
                        false,
                    ),
                    O::NextGeneration(r) => (TaskState::Pending, "", None, false, Some(r), true),
                    O::Deleted(_) => (TaskState::Completed, "", None, false, None, false),
                };
                // The spec is read as plain JSON: only its addressee matters here, and a row whose
                // spec no longer decodes must still be finishable.
                let row: Option<(String, String, i32, Json<serde_json::Value>)> = sqlx::query_as(
                    "SELECT project, key, generation, spec FROM tasks WHERE id = $1 AND status = 'running' AND attempts = $2")
                    .bind(id).bind(attempt).fetch_optional(&mut *tx).await.map_err(q("read a running task"))?;
                let Some((project, key, generation, spec)) = row else {
                    continue;
                };
                let (kind, message) = outcome.describe(attempt);
                if let O::Deleted(r) = outcome {
                    sqlx::query("DELETE FROM tasks WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(q("remove a task"))?;
                    insert_event(&mut *tx, &project, &key, generation, now, kind, &message,
                        Some(serde_json::to_value(r).unwrap_or_default())).await?;
                } else {
                    let completed_at = (status == TaskState::Completed).then_some(now);
                    let (infra_bump, requeue_bump) = match bump {
                        "infra_failures" => (1, 0),
                        "requeues" => (0, 1),
                        _ => (0, 0),
                    };
                    // The next generation starts afresh, with the addressee of its (new) spec.
                    sqlx::query(
                        "UPDATE tasks SET status = $2, result = $3, completed_at = $4, updated_at = $5, not_before = $6,
                            report_due = CASE WHEN origin = 'file' THEN $7 ELSE FALSE END, cancel_requested = FALSE,
                            generation = CASE WHEN $8 THEN generation + 1 ELSE generation END,
                            attempts = CASE WHEN $8 THEN 0 ELSE attempts END,
                            infra_failures = CASE WHEN $8 THEN 0 ELSE infra_failures + $10 END,
                            requeues = CASE WHEN $8 THEN 0 ELSE requeues + $11 END,
                            addressee = CASE WHEN $8 THEN $9 ELSE addressee END
                         WHERE id = $1")
                        .bind(id).bind(status.as_str()).bind(result.map(Json)).bind(completed_at).bind(now).bind(not_before)
                        .bind(report_due).bind(next).bind(spec.0.get("addressee").and_then(|a| a.as_str()).unwrap_or_default().to_string()).bind(infra_bump).bind(requeue_bump)
                        .execute(&mut *tx).await.map_err(q("finish a run"))?;
                    insert_event(&mut *tx, &project, &key, generation, now, kind, &message,
                        result.map(|r| serde_json::to_value(r).unwrap_or_default())).await?;
                }
                finished[i] = true;
            }
            tx.commit().await.map_err(q("commit finishing runs"))?;
        });
        self.wake.notify_one();
        Ok(finished)
    }

    /// Many events at once, in one statement (the `launched` events of a dispatch pass).
    pub async fn log_events(&self, events: &[NewEvent], now: DateTime<Utc>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(events).unwrap_or_default();
        on_pool!(self, pool => {
            let sql = match &self.backend {
                Backend::Postgres(_) => "INSERT INTO task_events (project, key, generation, at, kind, message)
                    SELECT x.project, x.key, x.generation, $1, x.kind, x.message
                    FROM jsonb_to_recordset($2::jsonb) AS x(project text, key text, generation int, kind text, message text)",
                Backend::Sqlite(_) => "INSERT INTO task_events (project, key, generation, at, kind, message)
                    SELECT json_extract(value, '$.project'), json_extract(value, '$.key'), json_extract(value, '$.generation'),
                           $1, json_extract(value, '$.kind'), json_extract(value, '$.message')
                    FROM json_each($2)",
            };
            sqlx::query(sql).bind(now).bind(&json).execute(pool).await.map_err(q("log events"))?;
        });
        Ok(())
    }

    /// What runs now, without the tasks' specs and results.
    pub async fn running_runs(&self) -> Result<Vec<RunningRun>> {
        on_pool!(self, pool => sqlx::query_as::<_, RunningRun>(
            "SELECT id, project, key, generation, attempts, cancel_requested FROM tasks WHERE status = 'running' ORDER BY id")
            .fetch_all(pool).await.map_err(q("list running tasks")))
    }

    /// The running tasks among `ids`.
    pub async fn running_by_ids(&self, ids: &[i64]) -> Result<Vec<TaskRow>> {
        let json = serde_json::to_string(ids).unwrap_or_default();
        let id_set = match &self.backend {
            Backend::Postgres(_) => "(SELECT jsonb_array_elements_text($1::jsonb)::bigint)",
            Backend::Sqlite(_) => "(SELECT value FROM json_each($1))",
        };
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running' AND id IN {id_set}");
        on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql).bind(&json).fetch_all(pool).await.map_err(q("read running tasks")))
    }

    /// Appends an event to a task's log.
    pub async fn log_event(
        &self,
        project: &str,
        key: &str,
        generation: i32,
        kind: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, pool => insert_event(pool, project, key, generation, now, kind, message, None).await)
    }

    /// Whether the task's log has an event of `kind` whose message mentions `needle`.
    pub async fn has_event(
        &self,
        project: &str,
        key: &str,
        kind: &str,
        needle: &str,
    ) -> Result<bool> {
        let pattern = format!("%{}%", needle.replace('%', "").replace('_', "\\_"));
        let found: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM task_events WHERE project = $1 AND key = $2 AND kind = $3 AND message LIKE $4 ESCAPE '\\' LIMIT 1")
            .bind(project).bind(key).bind(kind).bind(&pattern)
            .fetch_optional(pool).await.map_err(q("look for an event")))?;
        Ok(found.is_some())
    }

    /// Running tasks, for adoption after a restart and for stop requests.
    pub async fn running(&self) -> Result<Vec<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running' ORDER BY id");
        on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql).fetch_all(pool).await.map_err(q("list running tasks")))
    }

    /// Completed tasks whose status file has not been committed yet.
    pub async fn report_due(&self, project: &str) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND report_due ORDER BY id"
        );
        on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql).bind(project).fetch_all(pool).await.map_err(q("list unreported tasks")))
    }

    /// Marks status files as committed, unless the task moved on meanwhile.
    pub async fn mark_reported(
        &self,
        reported: &[(i64, i32)],
        commit: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if let Backend::Postgres(pool) = &self.backend {
            // One statement for the whole commit's worth (see `finish_runs`).
            let json = serde_json::to_string(
                &reported
                    .iter()
                    .map(|(id, g)| serde_json::json!({"id": id, "generation": g}))
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default();
            sqlx::query(
                "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id bigint, generation int)),
                 u AS (UPDATE tasks t SET report_due = FALSE FROM x
                     WHERE t.id = x.id AND t.generation = x.generation AND t.status = 'completed'
                     RETURNING t.project, t.key, t.generation)
                 INSERT INTO task_events (project, key, generation, at, kind, message)
                 SELECT project, key, generation, $2, 'reported', $3 FROM u")
                .bind(json).bind(now).bind(format!("status file committed in {}", short(commit)))
                .execute(pool).await.map_err(q("mark reports"))?;
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin marking reports"))?;
            for (id, generation) in reported {
                let row: Option<(String, String)> = sqlx::query_as(
                    "UPDATE tasks SET report_due = FALSE WHERE id = $1 AND generation = $2 AND status = 'completed' RETURNING project, key")
                    .bind(id).bind(generation).fetch_optional(&mut *tx).await.map_err(q("mark a report"))?;
                if let Some((project, key)) = row {
                    insert_event(&mut *tx, &project, &key, *generation, now, "reported",
                        &format!("status file committed in {}", short(commit)), None).await?;
                }
            }
            tx.commit().await.map_err(q("commit marking reports"))?;
        });
        Ok(())
    }

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

    // ---- the green layer --------------------------------------------------------------------

    /// Adds `item` to the project manager's pending activation, or creates one: results that
    /// arrive while an activation waits are coalesced into it. Returns its key and whether it
    /// was created.
    pub async fn enqueue_activation(
        &self,
        project: &str,
        epic: Option<&str>,
        branch: &str,
        item: crate::engine::green::ActivationItem,
        now: DateTime<Utc>,
    ) -> Result<(String, bool)> {
        let addressee = crate::engine::green::manager_addressee(project);
        let lock = match &self.backend {
            Backend::Postgres(_) => "SELECT key, context FROM tasks WHERE project = $1 AND addressee = $2 AND origin = 'engine' AND status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE",
            Backend::Sqlite(_) => "SELECT key, context FROM tasks WHERE project = $1 AND addressee = $2 AND origin = 'engine' AND status = 'pending' ORDER BY id LIMIT 1",
        };
        let out = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin an activation"))?;
            if let Backend::Postgres(_) = &self.backend {
                // Two completions at once must not create two activations.
                sqlx::query("SELECT pg_advisory_xact_lock(7353013)").execute(&mut *tx).await.map_err(q("lock activations"))?;
            }
            let pending: Option<(String, Option<Json<Vec<crate::engine::green::ActivationItem>>>)> = sqlx::query_as(lock)
                .bind(project).bind(&addressee).fetch_optional(&mut *tx).await.map_err(q("find a pending activation"))?;
            let out = match pending {
                Some((key, context)) => {
                    let mut items = context.map(|c| c.0).unwrap_or_default();
                    items.push(item);
                    sqlx::query("UPDATE tasks SET context = $3, updated_at = $4 WHERE project = $1 AND key = $2")
                        .bind(project).bind(&key).bind(Json(&items)).bind(now)
                        .execute(&mut *tx).await.map_err(q("add to an activation"))?;
                    insert_event(&mut *tx, project, &key, 1, now, "coalesced", "another result joined this pending activation", None).await?;
                    (key, false)
                }
                None => {
                    let key = format!("activation-{}", now.format("%Y%m%d-%H%M%S-%3f"));
                    let spec = crate::engine::green::activation_spec(&addressee, epic);
                    let task_key = crate::spec::TaskKey::new(&key).map_err(|_| StoreError::Conflict {
                        project: project.into(), key: key.clone(), status: "new".into(), why: "the generated activation key is invalid" })?;
                    let t = crate::sync::plan::new_task(&task_key, &spec);
                    sqlx::query(
                        "INSERT INTO tasks (project, key, addressee, status, prompt, spec, spec_hash, kind, epic, branch, base, created_by,
                            priority, max_attempts, created_at, updated_at, origin, context)
                         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $9, 'engine', 0, 1, $10, $10, 'engine', $11)")
                        .bind(project).bind(&key).bind(&addressee).bind(&t.prompt).bind(Json(&t.spec)).bind(&t.spec_hash)
                        .bind(&t.kind).bind(&t.epic).bind(branch).bind(now).bind(Json(vec![item]))
                        .execute(&mut *tx).await.map_err(q("create an activation"))?;
                    insert_event(&mut *tx, project, &key, 1, now, "created", "project manager activated by the engine", None).await?;
                    (key, true)
                }
            };
            tx.commit().await.map_err(q("commit an activation"))?;
            out
        });
        self.wake.notify_one();
        Ok(out)
    }

    pub async fn epic(&self, project: &str, name: &str) -> Result<Option<EpicRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, EpicRow>(
            "SELECT project, name, state, reason, tasks, consecutive_failures, activations, spend_usd, created_at, updated_at
             FROM epics WHERE project = $1 AND name = $2")
            .bind(project).bind(name).fetch_optional(pool).await.map_err(q("read an epic")))
    }

    pub async fn epics(&self, project: Option<&str>) -> Result<Vec<EpicRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, EpicRow>(
            "SELECT project, name, state, reason, tasks, consecutive_failures, activations, spend_usd, created_at, updated_at
             FROM epics WHERE ($1 IS NULL OR project = $1) ORDER BY project, created_at")
            .bind(project).fetch_all(pool).await.map_err(q("list epics")))
    }

    /// Counts a finished run against its epic: its cost, and for a worker its success or
    /// failure (consecutive failures), for a manager an activation.
    pub async fn count_for_epic(
        &self,
        project: &str,
        name: &str,
        cost: f64,
        outcome: EpicCount,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (failures_sql, activations) = match outcome {
            EpicCount::WorkerSucceeded => ("0", 0),
            EpicCount::WorkerFailed => ("consecutive_failures + 1", 0),
            EpicCount::ManagerRan => ("consecutive_failures", 1),
            EpicCount::CostOnly => ("consecutive_failures", 0),
        };
        let sql = format!(
            "UPDATE epics SET spend_usd = spend_usd + $3, activations = activations + $4,
                consecutive_failures = {failures_sql}, updated_at = $5
             WHERE project = $1 AND name = $2"
        );
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(project).bind(name).bind(cost).bind(activations).bind(now)
            .execute(pool).await.map(|_| ()).map_err(q("count for an epic")))?;
        Ok(())
    }

    /// Ends an active epic (complete or failed, with the reason). A failed epic's pending tasks
    /// are cancelled, so nothing more runs for it. Returns false when it was not active.
    pub async fn finish_epic(
        &self,
        project: &str,
        name: &str,
        failed: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let state = if failed.is_some() {
            "failed"
        } else {
            "complete"
        };
        let cancelled = RunResult::failure(
            crate::spec::ErrorClass::Cancelled,
            format!("epic {name} failed: {}", failed.unwrap_or("")),
        );
        let changed = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin ending an epic"))?;
            let n = sqlx::query("UPDATE epics SET state = $3, reason = $4, updated_at = $5 WHERE project = $1 AND name = $2 AND state = 'active'")
                .bind(project).bind(name).bind(state).bind(failed).bind(now)
                .execute(&mut *tx).await.map_err(q("end an epic"))?.rows_affected();
            if n > 0 && failed.is_some() {
                let keys: Vec<(String, i32)> = sqlx::query_as(
                    "UPDATE tasks SET status = 'completed', result = $3, completed_at = $4, updated_at = $4,
                        report_due = CASE WHEN origin = 'file' THEN TRUE ELSE FALSE END
                     WHERE project = $1 AND epic = $2 AND status = 'pending' RETURNING key, generation")
                    .bind(project).bind(name).bind(Json(&cancelled)).bind(now)
                    .fetch_all(&mut *tx).await.map_err(q("cancel an epic's tasks"))?;
                for (key, generation) in keys {
                    insert_event(&mut *tx, project, &key, generation, now, "cancelled", &format!("epic {name} failed"), None).await?;
                }
            }
            tx.commit().await.map_err(q("commit ending an epic"))?;
            n > 0
        });
        Ok(changed)
    }

    // ---- people ---------------------------------------------------------------------------

    pub async fn task(&self, project: &str, key: &str) -> Result<Option<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND key = $2");
        on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql).bind(project).bind(key).fetch_optional(pool).await.map_err(q("read a task")))
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
        on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql).bind(key).fetch_all(pool).await.map_err(q("find a task")))
    }

    pub async fn list(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1 IS NULL OR project = $1) AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR addressee = $3) AND ($4 IS NULL OR epic = $4)
             ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, priority DESC, id
             LIMIT $5 OFFSET $6");
        on_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&sql)
            .bind(&filter.project).bind(filter.status.map(TaskState::as_str)).bind(&filter.addressee).bind(&filter.epic)
            .bind(filter.limit.unwrap_or(1000) as i64).bind(filter.offset.unwrap_or(0) as i64)
            .fetch_all(pool).await.map_err(q("list tasks")))
    }

    pub async fn counts(&self) -> Result<Counts> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT status, COUNT(*) FROM tasks GROUP BY status").fetch_all(pool).await.map_err(q("count tasks")))?;
        let due: i64 = on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE report_due")
            .fetch_one(pool).await.map_err(q("count unreported tasks")))?;
        let mut c = Counts {
            report_due: due as u64,
            ..Counts::default()
        };
        for (status, n) in rows {
            match TaskState::parse(&status) {
                Some(TaskState::Pending) => c.pending = n as u64,
                Some(TaskState::Running) => c.running = n as u64,
                Some(TaskState::Completed) => c.completed = n as u64,
                None => {}
            }
        }
        Ok(c)
    }

    pub async fn events(&self, project: &str, key: &str) -> Result<Vec<EventRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, EventRow>(
            "SELECT id, project, key, generation, at, kind, message, data FROM task_events WHERE project = $1 AND key = $2 ORDER BY id")
            .bind(project).bind(key).fetch_all(pool).await.map_err(q("read a task's events")))
    }

    /// A person asks to stop a task: a pending one completes as cancelled at once, a running
    /// one is stopped by the engine.
    pub async fn request_stop(
        &self,
        project: &str,
        key: &str,
        who: &str,
        now: DateTime<Utc>,
    ) -> Result<TaskState> {
        let row = self.existing(project, key).await?;
        let state = row.state();
        match state {
            TaskState::Completed => {
                return Err(StoreError::Conflict {
                    project: project.into(),
                    key: key.into(),
                    status: row.status,
                    why: "there is nothing to stop",
                })
            }
            TaskState::Running => {
                on_pool!(self, pool => sqlx::query("UPDATE tasks SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1 AND status = 'running'")
                    .bind(row.id).bind(now).execute(pool).await.map(|_| ()).map_err(q("request a stop")))?;
            }
            TaskState::Pending => {
                let result = RunResult::failure(
                    crate::spec::ErrorClass::Cancelled,
                    format!("stopped by {who} before it ran"),
                );
                on_pool!(self, pool => sqlx::query(
                    "UPDATE tasks SET status = 'completed', result = $2, completed_at = $3, updated_at = $3, report_due = TRUE
                     WHERE id = $1 AND status = 'pending'")
                    .bind(row.id).bind(Json(&result)).bind(now).execute(pool).await.map(|_| ()).map_err(q("cancel a pending task")))?;
            }
        }
        self.log_event(
            project,
            key,
            row.generation,
            "stop_requested",
            &format!("stop requested by {who}"),
            now,
        )
        .await?;
        self.wake.notify_one();
        Ok(state)
    }

    /// A person asks to run a completed task again: a new generation with the same spec.
    pub async fn retry(
        &self,
        project: &str,
        key: &str,
        who: &str,
        now: DateTime<Utc>,
    ) -> Result<i32> {
        let row = self.existing(project, key).await?;
        if row.state() != TaskState::Completed {
            return Err(StoreError::Conflict {
                project: project.into(),
                key: key.into(),
                status: row.status,
                why: "only a completed task can be retried",
            });
        }
        let generation = row.generation + 1;
        on_pool!(self, pool => sqlx::query(
            "UPDATE tasks SET status = 'pending', generation = $2, attempts = 0, infra_failures = 0, requeues = 0, result = NULL,
                not_before = NULL, report_due = FALSE, cancel_requested = FALSE, completed_at = NULL, updated_at = $3
             WHERE id = $1 AND status = 'completed'")
            .bind(row.id).bind(generation).bind(now).execute(pool).await.map(|_| ()).map_err(q("retry a task")))?;
        self.log_event(
            project,
            key,
            generation,
            "retry",
            &format!("retry requested by {who}"),
            now,
        )
        .await?;
        self.wake.notify_one();
        Ok(generation)
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_event<'e, E, DB>(
    ex: E,
    project: &str,
    key: &str,
    generation: i32,
    at: DateTime<Utc>,
    kind: &str,
    message: &str,
    data: Option<serde_json::Value>,
) -> Result<()>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<Json<serde_json::Value>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query("INSERT INTO task_events (project, key, generation, at, kind, message, data) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(project)
        .bind(key)
        .bind(generation)
        .bind(at)
        .bind(kind)
        .bind(message)
        .bind(data.map(Json))
        .execute(ex)
        .await
        .map_err(q("append an event"))?;
    Ok(())
}

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
