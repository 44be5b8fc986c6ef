//! Every state change of a task, as a pure function from its row (as the store read it, under a
//! lock) and what happened, to the row's new state and the events that record it. The store
//! persists the [`Change`]; nothing else decides a task's state.
//!
//! The three statuses and what moves between them:
//!
//! | from | event | to |
//! |---|---|---|
//! | (none) | task file added / activation made | pending |
//! | pending | claim | running |
//! | running | run ends: final result | completed |
//! | running | run ends: retry, rate limit | pending (after a backoff) |
//! | running | run ends: spec changed meanwhile | pending, next generation |
//! | running | run ends: file deleted meanwhile | (removed) |
//! | pending | stop | completed (cancelled) |
//! | running | stop, file deleted | running, stop requested |
//! | completed | spec changed, retry | pending, next generation |
//! | pending, completed | file deleted | (removed) |
//! | pending | the task's epic failed | completed (cancelled) |

use chrono::{DateTime, Utc};

use super::event::{EventKind, NewEvent};
use super::green::{activation_spec, ActivationItem};
use super::outcome::Outcome;
use super::task::{status_of, NewTask, Origin, TaskRow};
use crate::display::short;
use crate::spec::{ErrorClass, RunResult, StatusSpec, TaskKey, TaskState};

/// What a transition decided for one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Nothing to write.
    None,
    /// A new task; the store gives it its id (and fills in its events' `task_id`).
    Insert { row: TaskRow, events: Vec<NewEvent> },
    /// The task's new state; `spec` when the columns that come from its file changed too.
    /// `owed`: the status file of the generation the task just left, not committed yet: it is
    /// still written.
    Update {
        row: TaskRow,
        spec: bool,
        events: Vec<NewEvent>,
        owed: Option<StatusSpec>,
    },
    /// The task goes away; its events stay.
    Delete { id: i64, events: Vec<NewEvent> },
}

impl Change {
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The events this change records.
    pub fn events(&self) -> &[NewEvent] {
        match self {
            Self::None => &[],
            Self::Insert { events, .. }
            | Self::Update { events, .. }
            | Self::Delete { events, .. } => events,
        }
    }

    /// The row as it is after the change (`None` for a deletion or no change).
    pub fn row(&self) -> Option<&TaskRow> {
        match self {
            Self::Insert { row, .. } | Self::Update { row, .. } => Some(row),
            _ => None,
        }
    }

    fn update(row: TaskRow, event: NewEvent) -> Self {
        Self::Update {
            row,
            spec: false,
            events: vec![event],
            owed: None,
        }
    }
}

/// Why a person's request was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("it is {status}; {why}", status = status.as_str())]
pub struct Refused {
    pub status: TaskState,
    pub why: &'static str,
}

/// A new task from a task file added in `commit`.
pub fn created(project: &str, task: NewTask, commit: &str, now: DateTime<Utc>) -> Change {
    let row = task.into_row(project, Origin::File, Some(commit), now);
    let event = NewEvent::of(
        &row,
        EventKind::Created,
        format!("task file added in {}", short(commit)),
    );
    Change::Insert {
        row,
        events: vec![event],
    }
}

/// A task file of a key the store does not know, whose status file (`.ai/status/<key>.yaml`,
/// read when the database is new or lost) shows a completed generation of this very spec: the
/// task is recorded completed as it was, and never runs again.
pub fn restored(
    project: &str,
    task: NewTask,
    origin: Origin,
    status: &StatusSpec,
    commit: &str,
    now: DateTime<Utc>,
) -> Change {
    let mut row = task.into_row(project, origin, Some(commit), now);
    row.status = TaskState::Completed;
    row.generation = (status.generation as i32).max(1);
    row.attempts = status.attempts as i32;
    row.result = status.result.clone();
    row.completed_at = Some(status.completed_at.unwrap_or(now));
    row.source_commit = status.source_commit.clone().or(row.source_commit);
    row.spec_hash = status.spec_hash.clone();
    // The file is in the repository already.
    row.report_due = false;
    let event = NewEvent::of(
        &row,
        EventKind::Restored,
        format!(
            "rebuilt from {}: generation {} completed{}",
            crate::spec::status_path(&TaskKey::from_checked(row.key.clone())),
            row.generation,
            status
                .completed_at
                .map(|t| format!(" at {}", t.to_rfc3339()))
                .unwrap_or_default()
        ),
    );
    Change::Insert {
        row,
        events: vec![event],
    }
}

/// A task file of a key the store does not know, whose status file shows generation
/// `status.generation` of another spec: the changed spec runs as the next generation, as it
/// would have with the database kept.
pub fn created_after(
    project: &str,
    task: NewTask,
    status: &StatusSpec,
    commit: &str,
    now: DateTime<Utc>,
) -> Change {
    let mut row = task.into_row(project, Origin::File, Some(commit), now);
    row.generation = (status.generation as i32).max(0) + 1;
    let event = NewEvent::of(
        &row,
        EventKind::NewGeneration,
        format!(
            "rebuilt from the repository at {}: its status file holds generation {} of another spec, so generation {} runs",
            short(commit),
            status.generation,
            row.generation
        ),
    );
    Change::Insert {
        row,
        events: vec![event],
    }
}

/// The task file of `row` changed in `commit` to `task`. Pending: the new spec replaces the
/// old. Completed: a new generation runs. Running: the spec is stored and runs as the next
/// generation when the current run ends; the addressee changes only then, so the running task
/// keeps its place under the one-running-per-addressee rule. A file added back while its
/// running task was being stopped for the deletion keeps running.
pub fn spec_changed(row: &TaskRow, task: &NewTask, commit: &str, now: DateTime<Utc>) -> Change {
    if row.spec_hash == task.spec_hash && !row.file_deleted {
        return Change::None;
    }
    let mut new = row.clone();
    new.prompt = task.prompt.clone();
    new.spec = task.spec.clone();
    new.spec_hash = task.spec_hash.clone();
    new.source_commit = Some(commit.to_string());
    new.kind = task.kind.clone();
    new.epic = task.epic.clone();
    new.agent = task.agent.clone();
    new.branch = task.branch.clone();
    new.base = task.base.clone();
    new.created_by = task.created_by.clone();
    new.priority = task.priority;
    new.max_attempts = task.max_attempts;
    new.timeout_secs = task.timeout_secs;
    new.updated_at = now;
    if row.status != TaskState::Running {
        new.addressee = task.addressee.clone();
    }
    if row.file_deleted {
        new.file_deleted = false;
        new.cancel_requested = false;
    }
    let event = match row.status {
        TaskState::Completed => {
            start_generation(&mut new);
            NewEvent::of(
                &new,
                EventKind::NewGeneration,
                format!("task file changed in {}; runs again", short(commit)),
            )
        }
        TaskState::Running => NewEvent::of(
            &new,
            EventKind::Updated,
            format!(
                "task file changed in {} while running; the new spec runs when this run ends",
                short(commit)
            ),
        ),
        TaskState::Pending => NewEvent::of(
            &new,
            EventKind::Updated,
            format!("task file changed in {}", short(commit)),
        ),
    };
    Change::Update {
        row: new,
        spec: true,
        events: vec![event],
        owed: owed_by(row),
    }
}

/// The status file `row` owes, if its current generation completed and was not reported yet:
/// a task that starts its next generation now still owes it.
fn owed_by(row: &TaskRow) -> Option<StatusSpec> {
    (row.report_due && row.status == TaskState::Completed).then(|| status_of(row))
}

/// The task file of `row` was deleted in `commit`: a running task is stopped (and goes away
/// when its run ends), any other goes away now.
pub fn file_deleted(row: &TaskRow, commit: &str, now: DateTime<Utc>) -> Change {
    if row.status == TaskState::Running {
        let mut new = row.clone();
        new.cancel_requested = true;
        new.file_deleted = true;
        new.updated_at = now;
        let event = NewEvent::of(
            &new,
            EventKind::StopRequested,
            format!(
                "task file deleted in {} while running; stopping",
                short(commit)
            ),
        );
        return Change::update(new, event);
    }
    Change::Delete {
        id: row.id,
        events: vec![NewEvent::of(
            row,
            EventKind::Removed,
            format!("task file deleted in {}", short(commit)),
        )],
    }
}

/// A pending task is claimed for its addressee: its next attempt runs. `updated_at` stays, so
/// it still says since when the task waited.
pub fn claim(row: &TaskRow, now: DateTime<Utc>) -> Change {
    if row.status != TaskState::Pending {
        return Change::None;
    }
    let mut new = row.clone();
    new.status = TaskState::Running;
    new.attempts += 1;
    new.started_at = Some(now);
    new.completed_at = None;
    new.run_spec_hash = Some(row.spec_hash.clone());
    new.result = None;
    new.not_before = None;
    let event = NewEvent::of(
        &new,
        EventKind::Claimed,
        format!("attempt {} claimed for {}", new.attempts, new.addressee),
    );
    Change::update(new, event)
}

/// The run `attempt` of `row` ended as `outcome` decided. Nothing changes when the task is no
/// longer in that run (the end was recorded before, or the task moved on): finishing is
/// idempotent.
pub fn finish(row: &TaskRow, attempt: i32, outcome: &Outcome, now: DateTime<Utc>) -> Change {
    if row.status != TaskState::Running || row.attempts != attempt {
        return Change::None;
    }
    let (kind, message) = outcome.describe(attempt);
    let event = |r: &RunResult| {
        NewEvent::of(row, kind, message.clone())
            .with_data(serde_json::to_value(r).unwrap_or_default())
    };
    let mut new = row.clone();
    new.updated_at = now;
    new.cancel_requested = false;
    new.report_due = false;
    new.completed_at = None;
    match outcome {
        Outcome::Completed(r) => {
            new.status = TaskState::Completed;
            new.result = Some(r.clone());
            new.completed_at = Some(now);
            new.not_before = None;
            // Every final result goes to the repository, the manager's activations too: a
            // database rebuilt from the repository finds them there.
            new.report_due = true;
            Change::update(new, event(r))
        }
        Outcome::Retry {
            result,
            not_before,
            infrastructure,
        } => {
            new.status = TaskState::Pending;
            new.result = Some(result.clone());
            new.not_before = Some(*not_before);
            if *infrastructure {
                new.infra_failures += 1;
            }
            Change::update(new, event(result))
        }
        Outcome::Requeue { result, not_before } => {
            new.status = TaskState::Pending;
            new.result = Some(result.clone());
            new.not_before = Some(*not_before);
            new.requeues += 1;
            Change::update(new, event(result))
        }
        Outcome::NextGeneration(r) => {
            // The next generation starts afresh, with the addressee of its (new) spec.
            start_generation(&mut new);
            new.result = Some(r.clone());
            new.addressee = row.spec.addressee.to_string();
            Change::update(new, event(r))
        }
        Outcome::Deleted(r) => Change::Delete {
            id: row.id,
            events: vec![event(r)],
        },
    }
}

/// What a stop request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The task was pending: it is completed as cancelled and never runs.
    CancelledBeforeItRan,
    /// The task runs: the engine stops the run, and the task completes as cancelled.
    StopRequested,
    /// The task had completed already: there was nothing to stop.
    AlreadyCompleted,
}

/// A person asks to stop `row`.
pub fn stop(row: &TaskRow, who: &str, now: DateTime<Utc>) -> (Change, StopOutcome) {
    match row.status {
        TaskState::Completed => (Change::None, StopOutcome::AlreadyCompleted),
        TaskState::Running => {
            let mut new = row.clone();
            new.cancel_requested = true;
            new.updated_at = now;
            let event = NewEvent::of(
                &new,
                EventKind::StopRequested,
                format!("stop requested by {who}"),
            );
            (Change::update(new, event), StopOutcome::StopRequested)
        }
        TaskState::Pending => {
            let result = RunResult::failure(
                ErrorClass::Cancelled,
                format!("stopped by {who} before it ran"),
            );
            let change = cancel(row, result, format!("stopped by {who} before it ran"), now);
            (change, StopOutcome::CancelledBeforeItRan)
        }
    }
}

/// A person asks to run a completed task again: a new generation with the same spec. Returns
/// the generation that will run.
pub fn retry(row: &TaskRow, who: &str, now: DateTime<Utc>) -> Result<(Change, i32), Refused> {
    if row.status != TaskState::Completed {
        return Err(Refused {
            status: row.status,
            why: "only a completed task can be retried",
        });
    }
    let mut new = row.clone();
    start_generation(&mut new);
    new.updated_at = now;
    new.cancel_requested = false;
    let generation = new.generation;
    let event = NewEvent::of(&new, EventKind::Retry, format!("retry requested by {who}"));
    let change = Change::Update {
        row: new,
        spec: false,
        events: vec![event],
        owed: owed_by(row),
    };
    Ok((change, generation))
}

/// A person changes a pending task's priority (until its file next changes).
pub fn set_priority(
    row: &TaskRow,
    priority: i32,
    who: &str,
    now: DateTime<Utc>,
) -> Result<Change, Refused> {
    if row.status != TaskState::Pending {
        return Err(Refused {
            status: row.status,
            why: "only a pending task's priority can change",
        });
    }
    let mut new = row.clone();
    new.priority = priority;
    new.updated_at = now;
    let event = NewEvent::of(
        &new,
        EventKind::Priority,
        format!("priority {} -> {priority} by {who}", row.priority),
    );
    Ok(Change::update(new, event))
}

/// The epic of a pending task failed: the task is cancelled, so nothing more runs for it.
pub fn cancel_for_failed_epic(
    row: &TaskRow,
    epic: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Change {
    if row.status != TaskState::Pending {
        return Change::None;
    }
    let result = RunResult::failure(
        ErrorClass::Cancelled,
        format!("epic {epic} failed: {reason}"),
    );
    cancel(row, result, format!("epic {epic} failed"), now)
}

/// The status file of `generation` was committed in `commit`. Nothing changes when the task
/// moved on meanwhile (its next generation owes a file of its own).
pub fn reported(row: &TaskRow, generation: i32, commit: &str) -> Change {
    if row.generation != generation || row.status != TaskState::Completed || !row.report_due {
        return Change::None;
    }
    let mut new = row.clone();
    new.report_due = false;
    let event = NewEvent::of(
        &new,
        EventKind::Reported,
        format!("status file committed in {}", short(commit)),
    );
    Change::update(new, event)
}

/// A result or request for the project manager joins its pending activation `row`.
pub fn coalesce(row: &TaskRow, item: ActivationItem, now: DateTime<Utc>) -> Change {
    let mut new = row.clone();
    new.context.push(item);
    new.updated_at = now;
    let event = NewEvent::of(
        &new,
        EventKind::Coalesced,
        "another result joined this pending activation",
    );
    Change::update(new, event)
}

/// A new activation of `project`'s manager (`addressee`) named `key`, working on `branch` (the
/// default branch), carrying `item`.
pub fn activation(
    project: &str,
    key: &TaskKey,
    addressee: &str,
    epic: Option<&str>,
    branch: &str,
    item: ActivationItem,
    now: DateTime<Utc>,
) -> Change {
    let spec = activation_spec(addressee, epic);
    let mut task = NewTask::from_spec(key, &spec);
    task.branch = branch.to_string();
    task.base = Some(branch.to_string());
    task.created_by = Some("engine".into());
    task.priority = 0;
    task.max_attempts = 1;
    let mut row = task.into_row(project, Origin::Engine, None, now);
    row.context = vec![item];
    let event = NewEvent::of(
        &row,
        EventKind::Created,
        "project manager activated by the engine",
    );
    Change::Insert {
        row,
        events: vec![event],
    }
}

/// The project manager of `project` (its addressee `addressee`) gets `item`: it joins the
/// pending activation if there is one, else a new activation is made, named after `now` and
/// never the same as `last`, the project's newest engine-made task.
#[allow(clippy::too_many_arguments)]
pub fn activate(
    pending: Option<&TaskRow>,
    last: Option<&str>,
    project: &str,
    addressee: &str,
    epic: Option<&str>,
    branch: &str,
    item: ActivationItem,
    now: DateTime<Utc>,
) -> Change {
    match pending {
        Some(row) => coalesce(row, item, now),
        None => activation(
            project,
            &next_activation_key(now, last),
            addressee,
            epic,
            branch,
            item,
            now,
        ),
    }
}

/// What the store recorded of earlier reactions to one branch's reviews or checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reacted {
    /// The references already reacted to ([`reaction_refs`]).
    pub refs: Vec<String>,
    /// The failed commits of the branch reacted to, oldest first.
    pub rounds: Vec<String>,
}

/// What a reaction records, `(reference, round)`: a review by its id; each failed check of a
/// commit by the commit and its id, in the round of that commit. Other items record nothing.
pub fn reaction_refs(item: &ActivationItem) -> Vec<(String, String)> {
    match item {
        ActivationItem::Review { review_id, .. } => {
            vec![(format!("review:{review_id}"), review_id.to_string())]
        }
        ActivationItem::CiFailed { sha, checks, .. } => checks
            .iter()
            .map(|c| (format!("{sha}/{}", c.id), sha.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The manager of `project` gets a review or failed checks (`item`) of a task's branch:
/// - merged into the pending activation when it holds the same review or the same failed
///   commit (separate deliveries of one review, or of one commit's checks, make one item);
/// - nothing when all of it was reacted to before (`reacted`): a redelivery, or a late
///   delivery of a review the manager already saw;
/// - else a new item: for failed checks, numbered by the branch's failed commits, so that past
///   `max_rounds` it tells the manager the cap is reached.
#[allow(clippy::too_many_arguments)]
pub fn react(
    pending: Option<&TaskRow>,
    last: Option<&str>,
    project: &str,
    addressee: &str,
    epic: Option<&str>,
    branch: &str,
    mut item: ActivationItem,
    reacted: &Reacted,
    max_rounds: u32,
    now: DateTime<Utc>,
) -> Change {
    let new_refs: Vec<(String, String)> = reaction_refs(&item)
        .into_iter()
        .filter(|(r, _)| !reacted.refs.contains(r))
        .collect();
    if let ActivationItem::CiFailed { checks, sha, .. } = &mut item {
        checks.retain(|c| {
            new_refs
                .iter()
                .any(|(r, _)| *r == format!("{sha}/{}", c.id))
        });
    }
    if let Some(row) = pending {
        if let Some(i) = row.context.iter().position(|x| x.same_subject(&item)) {
            let mut new = row.clone();
            if !new.context[i].merge(&item) {
                return Change::None;
            }
            new.updated_at = now;
            let event = NewEvent::of(
                &new,
                EventKind::Coalesced,
                "more of the same review or failed commit joined this pending activation",
            );
            return Change::update(new, event);
        }
    }
    if new_refs.is_empty() {
        return Change::None;
    }
    if let ActivationItem::CiFailed {
        sha,
        round,
        max_rounds: cap,
        ..
    } = &mut item
    {
        let place = reacted.rounds.iter().position(|r| r == sha);
        *round = place.unwrap_or(reacted.rounds.len()) as u32 + 1;
        *cap = max_rounds;
    }
    activate(pending, last, project, addressee, epic, branch, item, now)
}

/// The key of an activation made at `now`: `activation-YYYYMMDD-HHMMSS-mmm`; when the newest
/// one (`last`) was made in the same millisecond, that key with `-2`, `-3`, ... after it.
pub fn next_activation_key(now: DateTime<Utc>, last: Option<&str>) -> TaskKey {
    let base = format!("activation-{}", now.format("%Y%m%d-%H%M%S-%3f"));
    let key = match last.and_then(|l| l.strip_prefix(base.as_str())) {
        Some("") => format!("{base}-2"),
        Some(rest) => match rest.strip_prefix('-').and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => format!("{base}-{}", n + 1),
            None => base,
        },
        None => base,
    };
    // Only digits and dashes after a fixed prefix: always a valid key.
    TaskKey::new(&key).unwrap_or_else(|_| unreachable!("activation keys are valid: {key}"))
}

/// A pending task completes as cancelled with `result`.
fn cancel(row: &TaskRow, result: RunResult, message: String, now: DateTime<Utc>) -> Change {
    let mut new = row.clone();
    new.status = TaskState::Completed;
    new.result = Some(result);
    new.completed_at = Some(now);
    new.updated_at = now;
    new.not_before = None;
    new.report_due = true;
    let event = NewEvent::of(&new, EventKind::Cancelled, message);
    Change::update(new, event)
}

/// The task starts its next generation: pending, with fresh counters and no result.
fn start_generation(row: &mut TaskRow) {
    row.generation += 1;
    row.status = TaskState::Pending;
    row.attempts = 0;
    row.infra_failures = 0;
    row.requeues = 0;
    row.result = None;
    row.not_before = None;
    row.report_due = false;
    row.completed_at = None;
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
