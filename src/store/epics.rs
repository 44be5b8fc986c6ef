//! The green layer's side of the store: epics and their counters, ending an epic, and the
//! project manager's pending activation.

use chrono::{DateTime, Utc};

use super::codec::{self, EpicRecord, TaskRecord, EPIC_COLUMNS, TASK_COLUMNS};
use super::leadership::fenced;
use super::webhooks::{mark_and_reply, Receipt};
use super::{on_pool, q, write, Backend, BeginImmediate, Result, Store, StoreError};
use crate::model::green::EpicState;
use crate::model::transition::Reacted;
use crate::model::{Change, EpicCount, EpicRow, TaskRow};

impl Store {
    pub async fn epic(&self, project: &str, name: &str) -> Result<Option<EpicRow>> {
        let sql = format!("SELECT {EPIC_COLUMNS} FROM epics WHERE project = $1 AND name = $2");
        let record: Option<EpicRecord> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(project).bind(name).fetch_optional(pool).await.map_err(q("read an epic")))?;
        record.map(EpicRow::try_from).transpose()
    }

    pub async fn epics(&self, project: Option<&str>) -> Result<Vec<EpicRow>> {
        let sql = format!(
            "SELECT {EPIC_COLUMNS} FROM epics WHERE ($1 IS NULL OR project = $1) ORDER BY project, created_at"
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(project).fetch_all(pool).await.map_err(q("list epics")))?;
        codec::epics(records)
    }

    /// The earlier epics of `project` named `name` (a name reused after its epic ended opens
    /// a new one), oldest first.
    pub async fn epic_history(&self, project: &str, name: &str) -> Result<Vec<EpicRow>> {
        let sql = format!(
            "SELECT {EPIC_COLUMNS} FROM epic_history WHERE project = $1 AND name = $2 ORDER BY archived_at, created_at"
        );
        let records = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(project).bind(name).fetch_all(pool).await.map_err(q("read an epic's history")))?;
        codec::epics(records)
    }

    /// Counts a finished run against its epic: its cost, and for a worker its success or
    /// failure (consecutive failures), for a manager an activation.
    pub async fn count_for_epic(
        &self,
        project: &str,
        name: &str,
        cost: f64,
        count: EpicCount,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (failures_sql, activations) = match count {
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

    /// Ends the epic `project`/`name` as `decide_epic` says (its new state and reason; `None`
    /// leaves it as it is), and when it failed, changes each of its pending tasks as
    /// `decide_task` says, in one transaction. Returns whether the epic changed.
    pub async fn end_epic(
        &self,
        project: &str,
        name: &str,
        now: DateTime<Utc>,
        decide_epic: impl FnOnce(&EpicRow) -> Option<(EpicState, Option<String>)> + Send,
        mut decide_task: impl FnMut(&TaskRow) -> Change + Send,
    ) -> Result<bool> {
        let lock = match &self.backend {
            Backend::Postgres(_) => " FOR UPDATE",
            Backend::Sqlite(_) => "",
        };
        let epic_sql =
            format!("SELECT {EPIC_COLUMNS} FROM epics WHERE project = $1 AND name = $2{lock}");
        let tasks_sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND epic = $2 AND status = 'pending' ORDER BY id{lock}"
        );
        let changed = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin ending an epic"))?;
            fenced!(self, tx);
            let record: Option<EpicRecord> = sqlx::query_as(&epic_sql).bind(project).bind(name)
                .fetch_optional(&mut *tx).await.map_err(q("read an epic to end"))?;
            let decision = match record.map(EpicRow::try_from).transpose()? {
                Some(epic) => decide_epic(&epic),
                None => None,
            };
            if let Some((state, reason)) = &decision {
                sqlx::query("UPDATE epics SET state = $3, reason = $4, updated_at = $5 WHERE project = $1 AND name = $2")
                    .bind(project).bind(name).bind(state.as_str()).bind(reason).bind(now)
                    .execute(&mut *tx).await.map_err(q("end an epic"))?;
                if *state == EpicState::Failed {
                    let records: Vec<TaskRecord> = sqlx::query_as(&tasks_sql).bind(project).bind(name)
                        .fetch_all(&mut *tx).await.map_err(q("read an epic's pending tasks"))?;
                    let changes = codec::tasks(records)?.iter().map(&mut decide_task).collect();
                    write::changes(&mut tx, changes, now).await?;
                }
            }
            tx.commit().await.map_err(q("commit ending an epic"))?;
            decision.is_some()
        });
        Ok(changed)
    }

    /// Changes the project manager's activations of `project` (addressee `addressee`) as
    /// `decide` says, given its pending activation if there is one and the key of its newest
    /// activation: results that arrive while an activation waits are coalesced into it.
    /// Serialised, so two run ends at once cannot create two activations. Returns the
    /// activation's key and whether it was created.
    pub async fn activate(
        &self,
        project: &str,
        addressee: &str,
        now: DateTime<Utc>,
        decide: impl FnOnce(Option<&TaskRow>, Option<&str>) -> Change + Send,
    ) -> Result<(String, bool)> {
        self.activate_marking(project, addressee, now, None, decide)
            .await
    }

    /// [`Store::activate`] asked by a webhook delivery: the delivery is marked processed, and
    /// its reply queued, in the same transaction (see [`Receipt`]).
    pub async fn activate_marking(
        &self,
        project: &str,
        addressee: &str,
        now: DateTime<Utc>,
        receipt: Option<Receipt<'_, (String, bool)>>,
        decide: impl FnOnce(Option<&TaskRow>, Option<&str>) -> Change + Send,
    ) -> Result<(String, bool)> {
        let lock = match &self.backend {
            Backend::Postgres(_) => " FOR UPDATE",
            Backend::Sqlite(_) => "",
        };
        let pending_sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND addressee = $2 AND origin = 'engine' AND status = 'pending' ORDER BY id LIMIT 1{lock}"
        );
        let out = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin an activation"))?;
            fenced!(self, tx);
            if let Backend::Postgres(_) = &self.backend {
                sqlx::query("SELECT pg_advisory_xact_lock(7353013)").execute(&mut *tx).await.map_err(q("lock activations"))?;
            }
            let record: Option<TaskRecord> = sqlx::query_as(&pending_sql).bind(project).bind(addressee)
                .fetch_optional(&mut *tx).await.map_err(q("find a pending activation"))?;
            let pending = record.map(TaskRow::try_from).transpose()?;
            let last: Option<String> = sqlx::query_scalar(
                "SELECT key FROM tasks WHERE project = $1 AND origin = 'engine' ORDER BY id DESC LIMIT 1")
                .bind(project).fetch_optional(&mut *tx).await.map_err(q("find the newest activation"))?;
            let change = decide(pending.as_ref(), last.as_deref());
            let created = matches!(change, Change::Insert { .. });
            let key = change.row().map(|r| r.key.clone()).unwrap_or_default();
            write::changes(&mut tx, vec![change], now).await?;
            if let Some(r) = receipt {
                if !mark_and_reply!(tx, r.delivery, (r.reply)(&(key.clone(), created)), now) {
                    return Err(StoreError::DeliveryProcessed { delivery: r.delivery.delivery_id.clone() });
                }
            }
            tx.commit().await.map_err(q("commit an activation"))?;
            (key, created)
        });
        self.wake.notify_one();
        Ok(out)
    }
}

impl Store {
    /// A reaction to a review or to failed checks of `branch` (`kind`: `review` or `ci`):
    /// `decide` gets the manager's pending activation, the newest activation's key, and what
    /// was reacted to before on this branch; when it changes anything, `refs` (reference,
    /// round) are recorded with the change. The delivery is marked processed in the same
    /// transaction (with no reply). Serialised with the other activations. Whether anything
    /// changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn react_marking(
        &self,
        project: &str,
        addressee: &str,
        kind: &str,
        branch: &str,
        refs: &[(String, String)],
        now: DateTime<Utc>,
        delivery: Option<&super::DeliveryRow>,
        decide: impl FnOnce(Option<&TaskRow>, Option<&str>, &Reacted) -> Change + Send,
    ) -> Result<bool> {
        let lock = match &self.backend {
            Backend::Postgres(_) => " FOR UPDATE",
            Backend::Sqlite(_) => "",
        };
        let pending_sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project = $1 AND addressee = $2 AND origin = 'engine' AND status = 'pending' ORDER BY id LIMIT 1{lock}"
        );
        let changed = on_pool!(self, pool => {
            let mut tx = pool.begin_immediate().await.map_err(q("begin a reaction"))?;
            fenced!(self, tx);
            if let Backend::Postgres(_) = &self.backend {
                sqlx::query("SELECT pg_advisory_xact_lock(7353013)").execute(&mut *tx).await.map_err(q("lock activations"))?;
            }
            let record: Option<TaskRecord> = sqlx::query_as(&pending_sql).bind(project).bind(addressee)
                .fetch_optional(&mut *tx).await.map_err(q("find a pending activation"))?;
            let pending = record.map(TaskRow::try_from).transpose()?;
            let last: Option<String> = sqlx::query_scalar(
                "SELECT key FROM tasks WHERE project = $1 AND origin = 'engine' ORDER BY id DESC LIMIT 1")
                .bind(project).fetch_optional(&mut *tx).await.map_err(q("find the newest activation"))?;
            let earlier: Vec<(String, String)> = sqlx::query_as(
                "SELECT ref, round FROM forge_reactions WHERE project = $1 AND kind = $2 AND branch = $3 ORDER BY id")
                .bind(project).bind(kind).bind(branch)
                .fetch_all(&mut *tx).await.map_err(q("read earlier reactions"))?;
            let mut reacted = Reacted::default();
            for (r, round) in earlier {
                if !reacted.rounds.contains(&round) {
                    reacted.rounds.push(round);
                }
                reacted.refs.push(r);
            }
            // A review's id is not bound to a branch: look for it everywhere.
            for (r, _) in refs {
                if !reacted.refs.contains(r) {
                    let seen: Option<i64> = sqlx::query_scalar("SELECT id FROM forge_reactions WHERE project = $1 AND kind = $2 AND ref = $3")
                        .bind(project).bind(kind).bind(r)
                        .fetch_optional(&mut *tx).await.map_err(q("read earlier reactions"))?;
                    if seen.is_some() {
                        reacted.refs.push(r.clone());
                    }
                }
            }
            let change = decide(pending.as_ref(), last.as_deref(), &reacted);
            let changed = !change.is_none();
            if changed {
                write::changes(&mut tx, vec![change], now).await?;
                for (r, round) in refs {
                    sqlx::query("INSERT INTO forge_reactions (project, kind, branch, ref, round, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project, kind, ref) DO NOTHING")
                        .bind(project).bind(kind).bind(branch).bind(r).bind(round).bind(now)
                        .execute(&mut *tx).await.map_err(q("record a reaction"))?;
                }
            }
            if let Some(d) = delivery {
                if !mark_and_reply!(tx, d, None::<(String, serde_json::Value)>, now) {
                    return Err(StoreError::DeliveryProcessed { delivery: d.delivery_id.clone() });
                }
            }
            tx.commit().await.map_err(q("commit a reaction"))?;
            changed
        });
        if changed {
            self.wake.notify_one();
        }
        Ok(changed)
    }
}
