//! Webhook deliveries, stored whole before they are answered and processed from here by the
//! leading engine in arrival order (`seq`). SQL only: what a delivery means is the forge's.
//! A delivery is marked processed, and its reply queued, in the same transaction as its effect
//! when that effect is a database write (a [`Receipt`] to [`Store::modify_task_marking`] or
//! [`Store::activate_marking`]), otherwise by [`Store::finish_delivery`].

use super::{on_pool, q, Backend, BeginImmediate, Result, Store};
use chrono::{DateTime, Utc};

/// A stored delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Its place in arrival order (the primary key).
    pub seq: i64,
    /// GitHub's `X-GitHub-Delivery`, kept by redeliveries.
    pub delivery_id: String,
    /// GitHub's `X-GitHub-Event`.
    pub event: String,
    /// The raw body, as its signature was checked.
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// What storing a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new delivery, now stored.
    New,
    /// Its id is stored and not processed yet (a redelivery of a waiting one): not stored again.
    Waiting,
    /// Its id was processed already (a redelivery): a duplicate.
    Processed,
}

/// The webhook delivery that asked for a change: written in the change's own transaction are
/// the mark `processed` and the reply, made from what the change decided. So a redelivered or
/// reprocessed command never changes a task twice, and its reply is never lost or doubled. A
/// delivery processed already (by an engine that overlapped this one) fails the change with
/// [`super::StoreError::DeliveryProcessed`], and nothing is written.
pub struct Receipt<'a, T> {
    pub delivery: &'a DeliveryRow,
    /// The reply to queue (repository, payload), from the change's outcome.
    pub reply: Box<dyn FnOnce(&T) -> Option<(String, serde_json::Value)> + Send + 'a>,
}

impl<'a, T: 'a> Receipt<'a, T> {
    pub fn new(
        delivery: &'a DeliveryRow,
        reply: impl FnOnce(&T) -> Option<(String, serde_json::Value)> + Send + 'a,
    ) -> Self {
        Self {
            delivery,
            reply: Box::new(reply),
        }
    }

    /// The same receipt for a change whose outcome is a `U`, read as a `T` by `read`.
    pub fn map<U>(self, read: impl FnOnce(&U) -> T + Send + 'a) -> Receipt<'a, U> {
        let reply = self.reply;
        Receipt {
            delivery: self.delivery,
            reply: Box::new(move |u: &U| reply(&read(u))),
        }
    }
}

/// Marks a delivery processed (`$1` seq, `$2` now); a no-op if it is already.
pub(super) const MARK_PROCESSED: &str =
    "UPDATE webhook_deliveries SET processed_at = $2 WHERE seq = $1 AND processed_at IS NULL";

/// Queues the reply to a delivery (`$1` repo, `$2` kind `reply`, `$3` delivery id, `$4`
/// payload, `$5` now): one row per delivery.
pub(super) const QUEUE_REPLY: &str = "INSERT INTO github_outbox (repo, kind, target, payload, due_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5, $5)
     ON CONFLICT (repo, kind, target) DO UPDATE SET payload = $4, updated_at = $5";

/// In the transaction `$tx`: marks `$delivery` processed and queues `$reply` (an
/// `Option<(String or &str, Value)>`, made only if the mark was not there yet). Evaluates to
/// whether this marked it (false: something processed it already, and nothing was queued).
macro_rules! mark_and_reply {
    ($tx:expr, $delivery:expr, $reply:expr, $now:expr) => {{
        let d: &$crate::store::DeliveryRow = $delivery;
        let marked = sqlx::query($crate::store::webhooks::MARK_PROCESSED)
            .bind(d.seq)
            .bind($now)
            .execute(&mut *$tx)
            .await
            .map_err(q("mark a webhook delivery processed"))?
            .rows_affected();
        let reply = if marked > 0 { $reply } else { None };
        if let Some((repo, payload)) = reply {
            sqlx::query($crate::store::webhooks::QUEUE_REPLY)
                .bind(repo)
                .bind($crate::store::OutboxKind::Reply.as_str())
                .bind(&d.delivery_id)
                .bind(sqlx::types::Json(payload))
                .bind($now)
                .execute(&mut *$tx)
                .await
                .map_err(q("queue the reply to a webhook delivery"))?;
        }
        marked > 0
    }};
}
pub(super) use mark_and_reply;

const COLUMNS: &str = "seq, delivery_id, event, body, received_at, processed_at";

impl Store {
    /// Stores a verified delivery, unless its id is stored already; says which.
    pub async fn store_delivery(
        &self,
        id: &str,
        event: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Stored> {
        let inserted = on_pool!(self, pool => sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, event, body, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT (delivery_id) DO NOTHING")
            .bind(id).bind(event).bind(body).bind(now)
            .execute(pool).await.map(|r| r.rows_affected()).map_err(q("store a webhook delivery")))?;
        if inserted > 0 {
            self.deliveries.notify_one();
            return Ok(Stored::New);
        }
        let processed: Option<bool> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT processed_at IS NOT NULL FROM webhook_deliveries WHERE delivery_id = $1")
            .bind(id).fetch_optional(pool).await.map_err(q("look up a webhook delivery")))?;
        Ok(match processed {
            Some(false) => Stored::Waiting,
            // Gone meanwhile (retention): it was processed.
            Some(true) | None => Stored::Processed,
        })
    }

    /// Deliveries not processed yet, in arrival order.
    pub async fn deliveries_waiting(&self, limit: i64) -> Result<Vec<DeliveryRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, DeliveryRow>(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE processed_at IS NULL ORDER BY seq LIMIT $1"))
            .bind(limit).fetch_all(pool).await.map_err(q("read waiting webhook deliveries")))
    }

    /// A stored delivery by its GitHub id (for people and tests).
    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, DeliveryRow>(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE delivery_id = $1"))
            .bind(id).fetch_optional(pool).await.map_err(q("read a webhook delivery")))
    }

    /// Marks a delivery processed and queues `reply` (repo, payload) as the answer to it, in one
    /// transaction: a delivery that changes nothing else (a push, `/swarm status`, a command
    /// refused before it reached a task) is answered once. Nothing is queued if the delivery
    /// was processed already (by its change, which answered it).
    pub async fn finish_delivery(
        &self,
        delivery: &DeliveryRow,
        reply: Option<(&str, &serde_json::Value)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin finishing a webhook delivery"))?;
            if !mark_and_reply!(tx, delivery, reply, now) {
                tracing::debug!(delivery = %delivery.delivery_id, "processed already (with its change)");
            }
            tx.commit().await.map_err(q("commit a processed webhook delivery"))?;
        });
        Ok(())
    }

    /// Removes deliveries processed before `before` (GitHub redelivers within days, not
    /// weeks); deliveries not processed yet stay whatever their age. Returns how many went.
    pub async fn forget_processed_deliveries_before(&self, before: DateTime<Utc>) -> Result<u64> {
        on_pool!(self, pool => sqlx::query("DELETE FROM webhook_deliveries WHERE processed_at IS NOT NULL AND processed_at < $1")
            .bind(before).execute(pool).await.map(|r| r.rows_affected()).map_err(q("forget old webhook deliveries")))
    }

    /// Signalled when a delivery is stored by this process (the leader's loop also polls, for
    /// deliveries a standby stored).
    pub fn deliveries_handle(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.deliveries.clone()
    }
}
