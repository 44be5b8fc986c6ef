//! Run ends: what each means for its task (the retry policy decides, on the row as the store
//! holds it under a lock), recorded in batches; then the agent's pause after a usage limit
//! and the green layer's part.

use std::collections::{HashMap, HashSet};
use tracing::Instrument;

use chrono::{DateTime, Utc};

use super::Engine;
use crate::model::{decide, transition, Change, EventKind, NewEvent, Outcome, TaskRow};
use crate::runtime::{Completion, Runtime};

/// Most run ends recorded in one transaction.
const COMPLETION_BATCH: usize = 1024;

/// A run end as recorded: the row as it was, and what was decided.
struct Finished {
    row: TaskRow,
    outcome: Outcome,
    run_name: String,
}

impl<R: Runtime> Engine<R> {
    /// Moves run ends that have arrived into `batch`, up to a transaction's worth.
    pub(super) fn drain_completions(&mut self, batch: &mut Vec<Completion>) {
        while batch.len() < COMPLETION_BATCH {
            match self.completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
    }

    /// Records a run's end according to the retry policy.
    pub(super) async fn complete(&mut self, c: Completion) {
        self.complete_all(vec![c]).await
    }

    /// Records the ends of runs, in one store transaction: when many runs end at once (a
    /// busy engine, or runs found finished after a restart), one commit carries them all.
    pub(super) async fn complete_all(&mut self, mut batch: Vec<Completion>) {
        // A run reported twice in one batch is finished once.
        let mut seen = HashSet::new();
        batch.retain(|c| seen.insert((c.task_id, c.attempt)));
        for c in &batch {
            self.revoke_job_token(&c.run_name);
        }
        if batch.is_empty() {
            return;
        }
        self.activity.touch();
        let finished = match self.record(&batch).await {
            Ok(f) => f,
            // One run that cannot be recorded must not hold up the others of its batch: on a
            // failed batch, each is tried alone (a store that is down fails them all, as before).
            Err(e) if batch.len() > 1 => {
                tracing::warn!(
                    "cannot record {} run ends at once, trying each: {e}",
                    batch.len()
                );
                let mut each = Vec::new();
                for c in &batch {
                    match self.record(std::slice::from_ref(c)).await {
                        Ok(f) => each.extend(f),
                        Err(e) => {
                            tracing::error!(run = %c.run_name, "cannot record the result: {e}")
                        }
                    }
                }
                each
            }
            Err(e) => {
                for c in &batch {
                    tracing::error!(run = %c.run_name, "cannot record the result: {e}");
                }
                return;
            }
        };
        if !finished.is_empty() {
            self.report_wake.notify_one();
        }
        for f in &finished {
            let result = f.outcome.result();
            let class = match (result.success, result.error_class) {
                (true, _) => "succeeded",
                (false, Some(c)) => c.as_str(),
                (false, None) => "error",
            };
            let cancelled = result.error_class == Some(crate::spec::ErrorClass::Cancelled);
            self.metrics.run_ended(crate::metrics::RunEnd {
                project: &f.row.project,
                agent: f.row.agent.as_deref().unwrap_or(&self.config.default_agent),
                outcome: f.outcome.label(),
                class,
                seconds: result.duration_seconds(),
                cost_usd: result.cost_usd,
                final_success: (f.outcome.is_final() && !cancelled).then_some(result.success),
            });
            let span = tracing::info_span!("run_end", project = %f.row.project, task = %f.row.key, run = %f.run_name);
            async {
                let (kind, message) = f.outcome.describe(f.row.attempts);
                tracing::info!(project = %f.row.project, task = %f.row.key, run = %f.run_name, "{kind}: {message}");
                if let Outcome::Requeue { not_before, .. } = &f.outcome {
                    self.pause_agent_of(&f.row, *not_before).await;
                }
                if let Err(e) = self.after_run(&f.row, &f.outcome).await {
                    tracing::error!(project = %f.row.project, task = %f.row.key, "cannot update the project manager's state: {e}");
                }
            }
            .instrument(span)
            .await;
        }
    }

    /// Decides and records the ends in `batch` in one transaction. Returns the runs whose end
    /// changed their task (a run whose task moved on, or was recorded before, changes nothing).
    async fn record(
        &self,
        batch: &[Completion],
    ) -> Result<Vec<Finished>, crate::store::StoreError> {
        let by_task: HashMap<i64, Vec<&Completion>> =
            batch.iter().fold(HashMap::new(), |mut m, c| {
                m.entry(c.task_id).or_default().push(c);
                m
            });
        let ids: Vec<i64> = by_task.keys().copied().collect();
        let policy = self.policy;
        let now = Utc::now();
        let decided = self
            .store
            .modify_tasks(&ids, now, |row| {
                let Some(c) = by_task
                    .get(&row.id)
                    .and_then(|cs| cs.iter().find(|c| c.attempt == row.attempts))
                else {
                    return (Change::None, None);
                };
                let outcome = decide(row, c.result.clone(), &policy, now);
                let change = transition::finish(row, c.attempt, &outcome, now);
                if change.is_none() {
                    return (change, None);
                }
                (change, Some((outcome, c.run_name.clone())))
            })
            .await?;
        Ok(decided
            .into_iter()
            .filter_map(|(row, d)| {
                d.map(|(outcome, run_name)| Finished {
                    row,
                    outcome,
                    run_name,
                })
            })
            .collect())
    }

    /// A rate or usage limit belongs to the credential, so every run of the agent waits.
    async fn pause_agent_of(&self, row: &TaskRow, not_before: DateTime<Utc>) {
        let agent = row
            .agent
            .clone()
            .unwrap_or_else(|| self.config.default_agent.clone());
        let reason = format!("rate or usage limit hit by {}/{}", row.project, row.key);
        match self
            .store
            .pause_agent(&agent, not_before, &reason, Utc::now())
            .await
        {
            Ok(()) => {
                tracing::warn!(agent = %agent, until = %not_before.to_rfc3339(), "dispatch paused: {reason}");
                let event = NewEvent::of(
                    row,
                    EventKind::AgentPaused,
                    format!(
                        "dispatch of agent {agent} paused until {}",
                        not_before.to_rfc3339()
                    ),
                );
                let _ = self.store.append_events(&[event], Utc::now()).await;
            }
            Err(e) => tracing::error!("cannot pause agent {agent}: {e}"),
        }
    }
}
