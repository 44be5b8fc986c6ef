//! Steering: a person stops, retries or reprioritises a task (from the CLI, the dashboard, or a
//! comment on GitHub), and anyone with something for a project manager hands it over. The
//! model decides on the task's row as the store holds it under a lock, so the answer says
//! what actually happened, even when a claim or a run's end came in between.

use chrono::Utc;

use crate::config::ProjectConfig;
use crate::model::green::manager_addressee;
use crate::model::transition::{self, Refused, StopOutcome};
use crate::model::{ActivationItem, Change};
use crate::store::{Receipt, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("task {project}/{key} {refused}")]
    Refused {
        project: String,
        key: String,
        refused: Refused,
    },
}

impl SteerError {
    fn refused(project: &str, key: &str, refused: Refused) -> Self {
        Self::Refused {
            project: project.into(),
            key: key.into(),
            refused,
        }
    }
}

/// Stops a task: a pending one is cancelled at once, a running one is stopped by the engine.
/// A completed task is refused (there is nothing to stop).
pub async fn stop(
    store: &Store,
    project: &str,
    key: &str,
    who: &str,
) -> Result<StopOutcome, SteerError> {
    stop_marking(store, project, key, who, None).await
}

/// [`stop`], asked by a webhook delivery: marked processed, and answered from the outcome, in
/// the transaction of the stop.
pub async fn stop_marking(
    store: &Store,
    project: &str,
    key: &str,
    who: &str,
    receipt: Option<Receipt<'_, Result<StopOutcome, SteerError>>>,
) -> Result<StopOutcome, SteerError> {
    let now = Utc::now();
    let receipt = receipt.map(|r| r.map(|o: &StopOutcome| stopped(project, key, *o)));
    let outcome = store
        .modify_task_marking(project, key, now, receipt, |row| {
            transition::stop(row, who, now)
        })
        .await?;
    stopped(project, key, outcome)
}

/// What a stop's outcome means to the one who asked: a completed task is refused.
fn stopped(project: &str, key: &str, outcome: StopOutcome) -> Result<StopOutcome, SteerError> {
    match outcome {
        StopOutcome::AlreadyCompleted => Err(SteerError::refused(
            project,
            key,
            Refused {
                status: crate::spec::TaskState::Completed,
                why: "there is nothing to stop",
            },
        )),
        other => Ok(other),
    }
}

/// Runs a completed task again, as a new generation with the same spec. Returns the
/// generation that runs.
pub async fn retry(store: &Store, project: &str, key: &str, who: &str) -> Result<i32, SteerError> {
    retry_marking(store, project, key, who, None).await
}

/// [`retry`], asked by a webhook delivery: marked processed, and answered from the outcome, in
/// the transaction of the retry, so a redelivered `/swarm retry` never runs a task twice.
pub async fn retry_marking(
    store: &Store,
    project: &str,
    key: &str,
    who: &str,
    receipt: Option<Receipt<'_, Result<i32, SteerError>>>,
) -> Result<i32, SteerError> {
    let now = Utc::now();
    let receipt = receipt.map(|r| {
        r.map(|o: &Result<i32, Refused>| {
            o.map_err(|refused| SteerError::refused(project, key, refused))
        })
    });
    store
        .modify_task_marking(project, key, now, receipt, |row| {
            match transition::retry(row, who, now) {
                Ok((change, generation)) => (change, Ok(generation)),
                Err(refused) => (Change::None, Err(refused)),
            }
        })
        .await?
        .map_err(|r| SteerError::refused(project, key, r))
}

/// Changes a pending task's priority (until its file next changes).
pub async fn set_priority(
    store: &Store,
    project: &str,
    key: &str,
    priority: i32,
    who: &str,
) -> Result<(), SteerError> {
    let now = Utc::now();
    store
        .modify_task(project, key, now, |row| {
            match transition::set_priority(row, priority, who, now) {
                Ok(change) => (change, Ok(())),
                Err(refused) => (Change::None, Err(refused)),
            }
        })
        .await?
        .map_err(|r| SteerError::refused(project, key, r))
}

/// Hands `item` to `project`'s manager: coalesced into its pending activation, or a new one.
pub async fn activate(
    store: &Store,
    project: &ProjectConfig,
    epic: Option<&str>,
    item: ActivationItem,
) -> Result<(String, bool), StoreError> {
    activate_marking(store, project, epic, item, None).await
}

/// [`activate`], asked by a webhook delivery: marked processed, and answered, in the
/// transaction of the activation.
pub async fn activate_marking(
    store: &Store,
    project: &ProjectConfig,
    epic: Option<&str>,
    item: ActivationItem,
    receipt: Option<Receipt<'_, (String, bool)>>,
) -> Result<(String, bool), StoreError> {
    let addressee = manager_addressee(&project.name);
    let now = Utc::now();
    store
        .activate_marking(&project.name, &addressee, now, receipt, |pending, last| {
            transition::activate(
                pending,
                last,
                &project.name,
                &addressee,
                epic,
                &project.default_branch,
                item,
                now,
            )
        })
        .await
}

/// Hands a review or failed checks of a task's branch (`item`) to `project`'s manager, once:
/// merged into its pending activation when that holds the same review or commit, nothing when
/// it was reacted to before, else as for [`activate`]; failed commits are counted per branch
/// against `max_rounds`. The `delivery` that brought it is marked processed in the same
/// transaction. Whether the manager gets anything new.
pub async fn react_marking(
    store: &Store,
    project: &ProjectConfig,
    epic: Option<&str>,
    item: ActivationItem,
    max_rounds: u32,
    delivery: Option<&crate::store::DeliveryRow>,
) -> Result<bool, StoreError> {
    let (kind, branch) = match &item {
        ActivationItem::Review { branch, .. } => ("review", branch.clone()),
        ActivationItem::CiFailed { branch, .. } => ("ci", branch.clone()),
        _ => ("other", String::new()),
    };
    let refs = transition::reaction_refs(&item);
    let addressee = manager_addressee(&project.name);
    let now = Utc::now();
    store
        .react_marking(
            &project.name,
            &addressee,
            kind,
            &branch,
            &refs,
            now,
            delivery,
            |pending, last, reacted| {
                transition::react(
                    pending,
                    last,
                    &project.name,
                    &addressee,
                    epic,
                    &project.default_branch,
                    item,
                    reacted,
                    max_rounds,
                    now,
                )
            },
        )
        .await
}
