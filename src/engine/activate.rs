//! The green layer's I/O: a finished run counts against its epic, the manager's verdict ends
//! the epic, a hard cap ends it too, and results, plan edits and requests activate the
//! project manager. The rules are the model's (`crate::model::green`).

use chrono::Utc;

use super::Engine;
use crate::config::{Config, ProjectConfig};
use crate::model::green::{self, cap_hit, epic_count, epic_marker, EpicMarker};
use crate::model::{transition, ActivationItem, EventKind, NewEvent, Outcome, Role, TaskRow};
use crate::runtime::Runtime;
use crate::spec::ErrorClass;
use crate::steer::activate;
use crate::store::{Store, StoreError};

impl<R: Runtime> Engine<R> {
    /// The pending tasks of `addressee` in `project`, in the order dispatch takes them
    /// (priority, then age: for the tasks of one commit, key order). At most 20.
    async fn queue_of(&self, project: &str, addressee: &str) -> Result<Vec<String>, StoreError> {
        let filter = crate::store::TaskFilter {
            project: Some(project.to_string()),
            status: Some(crate::spec::TaskState::Pending),
            addressee: Some(addressee.to_string()),
            limit: Some(20),
            ..crate::store::TaskFilter::default()
        };
        Ok(self
            .store
            .list(&filter)
            .await?
            .into_iter()
            .map(|t| t.key)
            .collect())
    }

    /// The green layer's part of a finished run: count it against its epic, read the
    /// manager's verdict, activate the manager with the result, and end the epic when a hard
    /// cap is hit.
    pub(super) async fn after_run(
        &self,
        row: &TaskRow,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let Some(epic_name) = row.epic.clone() else {
            return Ok(());
        };
        let Some(project) = self.config.project(&row.project) else {
            return Ok(());
        };
        let result = outcome.result();
        let manager = row.role() == Role::Manager;
        self.store
            .count_for_epic(
                &row.project,
                &epic_name,
                result.cost_usd.unwrap_or(0.0),
                epic_count(row.role(), outcome),
                now,
            )
            .await?;
        let Some(epic) = self.store.epic(&row.project, &epic_name).await? else {
            return Ok(());
        };
        if !epic.is_active() || !outcome.is_final() {
            return Ok(());
        }
        if manager {
            match result.summary.as_deref().and_then(epic_marker) {
                Some(EpicMarker::Complete) if result.success => {
                    return end_epic(&self.store, &row.project, &epic_name, None, &row.key).await;
                }
                Some(EpicMarker::Failed(reason)) => {
                    let reason = format!("the project manager gave up: {reason}");
                    return end_epic(
                        &self.store,
                        &row.project,
                        &epic_name,
                        Some(&reason),
                        &row.key,
                    )
                    .await;
                }
                _ => {}
            }
        }
        if let Some(reason) = cap_hit(&epic.counters(), &self.config.epics) {
            return end_epic(
                &self.store,
                &row.project,
                &epic_name,
                Some(&reason),
                &row.key,
            )
            .await;
        }
        if result.error_class == Some(ErrorClass::Cancelled) {
            // A person (or a deleted file) stopped it: that is a decision, not a result to react to.
            return Ok(());
        }
        let item = match (manager, result.success) {
            // A manager that succeeded waits for the results of the tasks it created.
            (true, true) => return Ok(()),
            (true, false) => ActivationItem::ManagerFailed {
                key: row.key.clone(),
                error: result
                    .error
                    .clone()
                    .unwrap_or_else(|| "the run failed".into()),
            },
            (false, _) => ActivationItem::result(&row.key, Some(&epic_name), result)
                .with_queue(self.queue_of(&row.project, &row.addressee).await?),
        };
        let (key, created) = activate(&self.store, project, Some(&epic_name), item).await?;
        tracing::info!(project = %row.project, epic = %epic_name, activation = %key, "project manager {}", if created { "activated" } else { "activation extended" });
        Ok(())
    }
}

/// Ends an epic (complete, or failed with the reason; a failed epic's pending tasks are
/// cancelled) and records it for people on the log of the task `by` that ended it.
pub(super) async fn end_epic(
    store: &Store,
    project: &str,
    epic: &str,
    failed: Option<&str>,
    by: &str,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let reason = failed.unwrap_or_default();
    let ended = store
        .end_epic(
            project,
            epic,
            now,
            |row| green::end_epic(row, failed),
            |task| transition::cancel_for_failed_epic(task, epic, reason, now),
        )
        .await?;
    if !ended {
        return Ok(());
    }
    match failed {
        Some(reason) => tracing::warn!(project, epic, "epic failed: {reason}"),
        None => tracing::info!(project, epic, "epic complete"),
    }
    let (kind, message) = match failed {
        Some(reason) => (
            EventKind::EpicFailed,
            format!("epic {epic} failed: {reason}"),
        ),
        None => (EventKind::EpicComplete, format!("epic {epic} complete")),
    };
    let task_id = store.task(project, by).await?.map_or(0, |t| t.id);
    let event = NewEvent {
        task_id,
        project: project.to_string(),
        key: by.to_string(),
        generation: 0,
        kind,
        message,
        data: None,
    };
    store.append_events(&[event], Utc::now()).await
}

/// After a sync: a person's edits of the plan activate the manager (once, with all of them),
/// and an epic whose manager created more tasks than its cap allows fails.
pub(super) async fn after_sync(
    store: &Store,
    config: &Config,
    project: &ProjectConfig,
    report: &crate::sync::SyncReport,
) -> Result<(), StoreError> {
    let epics = store.epics(Some(&project.name)).await?;
    for e in epics.iter().filter(|e| e.is_active()) {
        if let Some(reason) = cap_hit(&e.counters(), &config.epics) {
            end_epic(store, &project.name, &e.name, Some(&reason), &e.name).await?;
        }
    }
    if report.plan_edits.is_empty() {
        return Ok(());
    }
    // The plan belongs to the project; its newest active epic is the one being steered.
    let epic = store
        .epics(Some(&project.name))
        .await?
        .into_iter()
        .filter(|e| e.is_active())
        .max_by_key(|e| e.created_at)
        .map(|e| e.name);
    for edit in &report.plan_edits {
        let item = ActivationItem::PlanEdit {
            commit: crate::display::short(&edit.id).to_string(),
            author: edit.author.clone(),
            message: edit.message.lines().next().unwrap_or("").to_string(),
            diff: edit.diff.clone(),
        };
        let (key, created) = activate(store, project, epic.as_deref(), item).await?;
        tracing::info!(project = %project.name, activation = %key, "plan edited by {}: project manager {}", edit.author, if created { "activated" } else { "activation extended" });
    }
    Ok(())
}
