//! Required checks: what the engine last learned of the CI checks a gated task waits for
//! (see [`crate::model::checks`]). SQL only; the forge decides, the dispatcher reads.

use std::collections::{HashMap, HashSet};

use super::{on_pool, q, Backend, Result, Store};
use chrono::{DateTime, Utc};

/// A gate as last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub generation: i32,
    pub green: bool,
    /// What the task waits for, in words (empty when green).
    pub waits_for: String,
    pub checked_at: DateTime<Utc>,
}

impl Store {
    /// Records what the checks of task `task_id` (generation `generation`) say now. A gate
    /// that turns green wakes the dispatcher.
    pub async fn set_gate(
        &self,
        task_id: i64,
        generation: i32,
        waits_for: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let green = waits_for.is_none();
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO check_gates (task_id, generation, green, waits_for, checked_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (task_id) DO UPDATE SET generation = $2, green = $3, waits_for = $4, checked_at = $5")
            .bind(task_id).bind(generation).bind(green).bind(waits_for.unwrap_or_default()).bind(now)
            .execute(pool).await.map(|_| ()).map_err(q("record a task's required checks")))?;
        if green {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The pending tasks whose gate is green for their current generation: the gated tasks the
    /// dispatcher may claim.
    pub async fn green_gates(&self) -> Result<HashSet<i64>> {
        let ids: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT g.task_id FROM check_gates g JOIN tasks t ON t.id = g.task_id AND t.generation = g.generation
             WHERE g.green AND t.status = 'pending'")
            .fetch_all(pool).await.map_err(q("read green required checks")))?;
        Ok(ids.into_iter().collect())
    }

    /// The gates of the pending tasks, for their current generation, by task id.
    pub async fn pending_gates(&self) -> Result<HashMap<i64, Gate>> {
        let rows: Vec<(i64, i32, bool, String, DateTime<Utc>)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT g.task_id, g.generation, g.green, g.waits_for, g.checked_at FROM check_gates g
             JOIN tasks t ON t.id = g.task_id AND t.generation = g.generation WHERE t.status = 'pending'")
            .fetch_all(pool).await.map_err(q("read required checks")))?;
        Ok(rows
            .into_iter()
            .map(|(id, generation, green, waits_for, checked_at)| {
                (
                    id,
                    Gate {
                        generation,
                        green,
                        waits_for,
                        checked_at,
                    },
                )
            })
            .collect())
    }
}
