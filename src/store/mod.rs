//! What lives in the database: tasks, their append-only event log, epics, sync state, bad task
//! files and the GitHub outbox. One concrete store over Postgres (production) or an SQLite
//! file (the default), tested by one suite on both. SQL only: every change of a task is decided
//! by [`crate::model`] on the row as read here under a lock, and persisted as decided.

mod codec;
mod epics;
mod events;
mod gates;
pub mod leadership;
mod outbox;
mod rows;
mod stats;
mod sync;
mod tasks;
mod webhooks;
mod write;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Notify;

pub use events::FeedCursor;
pub use gates::Gate;
pub use outbox::{OutboxKind, OutboxRow};
pub use rows::{ProjectRow, SpecErrorRow, TaskFilter};
pub use stats::{Durations, PendingAt, QueueLength, RunsEnded, SpendOn, StatsWindow};
pub use sync::{OwedStatusFile, SyncScope};
pub use webhooks::{DeliveryRow, Receipt, Stored};

use crate::model::BadColumn;

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
    #[error("a row of the database does not read as this engine version expects ({what})")]
    BadRow {
        what: String,
        #[source]
        source: BadColumn,
    },
    #[error("no task {project}/{key}")]
    NotFound { project: String, key: String },
    #[error("task {project}/{key} was created meanwhile by someone else; the next pass sees it")]
    Raced { project: String, key: String },
    #[error("this engine no longer leads: it led as epoch {ours}, and epoch {current} leads now; it writes nothing more")]
    Deposed { ours: i64, current: i64 },
    #[error("webhook delivery {delivery} was processed already")]
    DeliveryProcessed { delivery: String },
}

impl StoreError {
    /// Whether trying again later may succeed (connection trouble, not a bad request).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Raced { .. } => true,
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
/// for both, which keeps the two backends on one code path where their SQL is the same.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Postgres($pool) => $body,
            Backend::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Opens a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
/// so a transaction reads its rows under the lock it writes them with, and never fails half-way
/// because another process (the CLI, say) wrote meanwhile; the busy timeout covers the wait.
trait BeginImmediate {
    type Db: sqlx::Database;
    fn begin_immediate(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send;
    /// Opens a claim's transaction: on Postgres with the claimers' advisory lock taken in the
    /// same round trip as the `BEGIN`; on SQLite as [`BeginImmediate::begin_immediate`].
    fn begin_claim(
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
    fn begin_claim(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>,
    > + Send {
        self.begin_with(CLAIM_BEGIN)
    }
}

/// `BEGIN` and the advisory lock that serialises claimers, as one simple query.
const CLAIM_BEGIN: &str = "BEGIN; SELECT pg_advisory_xact_lock(7353012)";

impl BeginImmediate for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_immediate(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
    fn begin_claim(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_immediate()
    }
}

/// The store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// Signalled after every change that may make a task dispatchable or stoppable.
    wake: Arc<Notify>,
    /// Signalled when this process stores a webhook delivery.
    deliveries: Arc<Notify>,
    /// SQLite: the last `PRAGMA data_version` seen (see [`Store::changed_elsewhere`]).
    data_version: Arc<std::sync::atomic::AtomicI64>,
    /// The leadership epoch this store writes under (see [`leadership`]).
    fence: Arc<leadership::Fence>,
}

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
            deliveries: Arc::new(Notify::new()),
            data_version: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            fence: Arc::new(leadership::Fence::default()),
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

    /// The migrations this database has not applied yet, by version (all of them for a new
    /// one). Reads only: `swarm doctor` checks the schema without changing it.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let (migrator, applied): (sqlx::migrate::Migrator, Result<Vec<i64>, sqlx::Error>) =
            match &self.backend {
                Backend::Postgres(pool) => (
                    sqlx::migrate!("migrations/postgres"),
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(pool)
                        .await,
                ),
                Backend::Sqlite(pool) => (
                    sqlx::migrate!("migrations/sqlite"),
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(pool)
                        .await,
                ),
            };
        // No table yet: a database nothing was applied to.
        let applied = applied.unwrap_or_default();
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
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
}
