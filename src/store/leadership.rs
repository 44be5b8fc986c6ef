//! Fencing: the leader's writes carry its leadership epoch. Each time an engine takes the
//! leader lock it raises the epoch in the `leadership` row (migration `0006`); every write
//! transaction of the leader's work (claims, run ends, syncs, activations) first reads that row
//! under a share lock and fails with [`StoreError::Deposed`] when another engine has led since.
//! The lock is what keeps engines apart; the epoch is what keeps a deposed one (its lock
//! session lost during a pause, its transaction committing late) from writing after a new
//! leader started: the new leader's raise of the epoch waits for the share lock of any
//! transaction still going, and every later transaction of the old leader sees the new epoch.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{on_pool, q, Backend, BeginImmediate, Result, Store, StoreError};

/// The epoch a store writes under (0: none, the store of a CLI command or a standby), and
/// whether it learnt it was deposed.
#[derive(Debug)]
pub(super) struct Fence {
    epoch: AtomicI64,
    deposed: watch::Sender<bool>,
}

impl Default for Fence {
    fn default() -> Self {
        Self {
            epoch: AtomicI64::new(0),
            deposed: watch::channel(false).0,
        }
    }
}

impl Store {
    /// Records that `holder` leads now: raises the epoch, and fences this store's writes with
    /// it. Returns the epoch.
    pub async fn lead(&self, holder: &str, now: DateTime<Utc>) -> Result<i64> {
        let epoch: i64 = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin taking leadership"))?;
            let epoch = sqlx::query_scalar(
                "INSERT INTO leadership (id, epoch, holder, since) VALUES (1, 1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1, holder = $1, since = $2
                 RETURNING epoch")
                .bind(holder).bind(now)
                .fetch_one(&mut *tx).await.map_err(q("take leadership"))?;
            tx.commit().await.map_err(q("commit taking leadership"))?;
            epoch
        });
        self.fence.epoch.store(epoch, Ordering::SeqCst);
        self.fence.deposed.send_replace(false);
        Ok(epoch)
    }

    /// The epoch and holder of the current leadership, if any engine ever led.
    pub async fn leadership(&self) -> Result<Option<(i64, String)>> {
        on_pool!(self, pool => sqlx::query_as("SELECT epoch, holder FROM leadership WHERE id = 1")
            .fetch_optional(pool).await.map_err(q("read the leadership")))
    }

    /// Turns true once a write found that another engine leads now.
    pub fn deposed(&self) -> watch::Receiver<bool> {
        self.fence.deposed.subscribe()
    }

    /// The SQL that reads the epoch inside a fenced transaction (`None`: this store is not
    /// fenced). On Postgres under a share lock, so a new leader's raise waits for it.
    pub(super) fn fence_sql(&self) -> Option<&'static str> {
        if self.fence.epoch.load(Ordering::SeqCst) == 0 {
            return None;
        }
        Some(match &self.backend {
            Backend::Postgres(_) => "SELECT epoch FROM leadership WHERE id = 1 FOR SHARE",
            Backend::Sqlite(_) => "SELECT epoch FROM leadership WHERE id = 1",
        })
    }

    /// Checks the epoch read by [`Self::fence_sql`] against this store's.
    pub(super) fn check_fence(&self, current: Option<i64>) -> Result<()> {
        let ours = self.fence.epoch.load(Ordering::SeqCst);
        let current = current.unwrap_or(0);
        if current == ours {
            return Ok(());
        }
        self.fence.deposed.send_replace(true);
        Err(StoreError::Deposed { ours, current })
    }
}

/// Inside an open transaction `$tx` of `$store`: fails with [`StoreError::Deposed`] when the
/// store is fenced and another engine has led since.
macro_rules! fenced {
    ($store:expr, $tx:expr) => {
        if let Some(sql) = $store.fence_sql() {
            let current: Option<i64> = sqlx::query_scalar(sql)
                .fetch_optional(&mut *$tx)
                .await
                .map_err($crate::store::q("check the leadership epoch"))?;
            $store.check_fence(current)?;
        }
    };
}
pub(crate) use fenced;
