//! Rows in and out of SQL: the columns as the database holds them, and their conversion to the
//! model's types. An enum column holding a value this engine does not know is an error that
//! names the column, the value and the row, never a silent default.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::StoreError;
use crate::model::{
    green::EpicState, ActivationItem, BadColumn, EpicRow, EventKind, EventRow, Origin, TaskRow,
};
use crate::spec::{RunResult, TaskSpec};

/// Every column of `tasks`, in the order [`TaskRecord`] reads them.
pub(super) const TASK_COLUMNS: &str = "id, project, key, addressee, status, prompt, spec, spec_hash, source_commit, kind, epic, agent, \
     branch, base, created_by, priority, max_attempts, timeout_secs, generation, attempts, infra_failures, requeues, \
     cancel_requested, file_deleted, run_spec_hash, not_before, result, report_due, created_at, updated_at, \
     started_at, completed_at, origin, context, incarnation";

/// A `tasks` row as SQL returns it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TaskRecord {
    id: i64,
    project: String,
    key: String,
    addressee: String,
    status: String,
    prompt: String,
    spec: Json<TaskSpec>,
    spec_hash: String,
    source_commit: Option<String>,
    kind: Option<String>,
    epic: Option<String>,
    agent: Option<String>,
    branch: String,
    base: Option<String>,
    created_by: Option<String>,
    priority: i32,
    max_attempts: i32,
    timeout_secs: Option<i64>,
    generation: i32,
    attempts: i32,
    infra_failures: i32,
    requeues: i32,
    cancel_requested: bool,
    file_deleted: bool,
    run_spec_hash: Option<String>,
    not_before: Option<DateTime<Utc>>,
    result: Option<Json<RunResult>>,
    report_due: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    origin: String,
    context: Option<Json<Vec<ActivationItem>>>,
    incarnation: String,
}

fn bad(what: String) -> impl FnOnce(BadColumn) -> StoreError {
    move |source| StoreError::BadRow { what, source }
}

impl TryFrom<TaskRecord> for TaskRow {
    type Error = StoreError;
    fn try_from(r: TaskRecord) -> Result<Self, StoreError> {
        let what = || format!("task {}/{} (id {})", r.project, r.key, r.id);
        let status =
            crate::model::task::status_from_column(r.status.clone()).map_err(bad(what()))?;
        let origin = Origin::try_from(r.origin.clone()).map_err(bad(what()))?;
        Ok(TaskRow {
            id: r.id,
            incarnation: r.incarnation,
            project: r.project,
            key: r.key,
            origin,
            addressee: r.addressee,
            status,
            prompt: r.prompt,
            spec: r.spec.0,
            spec_hash: r.spec_hash,
            source_commit: r.source_commit,
            kind: r.kind,
            epic: r.epic,
            agent: r.agent,
            branch: r.branch,
            base: r.base,
            created_by: r.created_by,
            priority: r.priority,
            max_attempts: r.max_attempts,
            timeout_secs: r.timeout_secs,
            generation: r.generation,
            attempts: r.attempts,
            infra_failures: r.infra_failures,
            requeues: r.requeues,
            cancel_requested: r.cancel_requested,
            file_deleted: r.file_deleted,
            run_spec_hash: r.run_spec_hash,
            not_before: r.not_before,
            result: r.result.map(|j| j.0),
            report_due: r.report_due,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            context: r.context.map(|c| c.0).unwrap_or_default(),
        })
    }
}

/// Converts every record, failing on the first that does not read.
pub(super) fn tasks(records: Vec<TaskRecord>) -> Result<Vec<TaskRow>, StoreError> {
    records.into_iter().map(TaskRow::try_from).collect()
}

pub(super) const EVENT_COLUMNS: &str =
    "id, task_id, project, key, generation, at, kind, message, data";

/// A `task_events` row as SQL returns it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventRecord {
    id: i64,
    task_id: Option<i64>,
    project: String,
    key: String,
    generation: i32,
    at: DateTime<Utc>,
    kind: String,
    message: String,
    data: Option<Json<serde_json::Value>>,
}

impl TryFrom<EventRecord> for EventRow {
    type Error = StoreError;
    fn try_from(r: EventRecord) -> Result<Self, StoreError> {
        let kind = EventKind::try_from(r.kind.clone()).map_err(bad(format!(
            "event {} of task {}/{}",
            r.id, r.project, r.key
        )))?;
        Ok(EventRow {
            id: r.id,
            task_id: r.task_id,
            project: r.project,
            key: r.key,
            generation: r.generation,
            at: r.at,
            kind,
            message: r.message,
            data: r.data.map(|d| d.0),
        })
    }
}

pub(super) fn events(records: Vec<EventRecord>) -> Result<Vec<EventRow>, StoreError> {
    records.into_iter().map(EventRow::try_from).collect()
}

pub(super) const EPIC_COLUMNS: &str = "project, name, state, reason, tasks, consecutive_failures, activations, spend_usd, created_at, updated_at";

/// An `epics` row as SQL returns it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EpicRecord {
    project: String,
    name: String,
    state: String,
    reason: Option<String>,
    tasks: i32,
    consecutive_failures: i32,
    activations: i32,
    spend_usd: f64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<EpicRecord> for EpicRow {
    type Error = StoreError;
    fn try_from(r: EpicRecord) -> Result<Self, StoreError> {
        let state = EpicState::try_from(r.state.clone())
            .map_err(bad(format!("epic {}/{}", r.project, r.name)))?;
        Ok(EpicRow {
            project: r.project,
            name: r.name,
            state,
            reason: r.reason,
            tasks: r.tasks,
            consecutive_failures: r.consecutive_failures,
            activations: r.activations,
            spend_usd: r.spend_usd,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(super) fn epics(records: Vec<EpicRecord>) -> Result<Vec<EpicRow>, StoreError> {
    records.into_iter().map(EpicRow::try_from).collect()
}
