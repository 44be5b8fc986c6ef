//! Rows as the store returns them, and the small inputs of its queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use crate::spec::{RunResult, TaskSpec, TaskState};

/// One task as the database holds it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub project: String,
    pub key: String,
    pub addressee: String,
    pub status: String,
    pub prompt: String,
    pub spec: Json<TaskSpec>,
    pub spec_hash: String,
    pub source_commit: Option<String>,
    pub kind: Option<String>,
    pub epic: Option<String>,
    pub agent: Option<String>,
    pub branch: String,
    pub base: Option<String>,
    pub created_by: Option<String>,
    pub priority: i32,
    pub max_attempts: i32,
    pub timeout_secs: Option<i64>,
    pub generation: i32,
    pub attempts: i32,
    pub infra_failures: i32,
    /// Runs that hit a rate or usage limit: they do not count as attempts.
    pub requeues: i32,
    pub cancel_requested: bool,
    pub file_deleted: bool,
    pub run_spec_hash: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub result: Option<Json<RunResult>>,
    pub report_due: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `file` (from `.ai/tasks/`) or `engine` (a project-manager activation).
    pub origin: String,
    /// What a project-manager activation carries.
    pub context: Option<Json<Vec<crate::engine::green::ActivationItem>>>,
}

impl TaskRow {
    pub fn state(&self) -> TaskState {
        TaskState::parse(&self.status).unwrap_or(TaskState::Pending)
    }

    pub fn result(&self) -> Option<&RunResult> {
        self.result.as_ref().map(|j| &j.0)
    }
}

/// A running task, as the dispatcher's pass sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunningRun {
    pub id: i64,
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub attempts: i32,
    pub cancel_requested: bool,
}

/// An event to append to a task's log (see [`crate::store::Store::log_events`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewEvent {
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub kind: String,
    pub message: String,
}

/// The columns of a task that come from its file; built by the sync planner.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub key: String,
    pub addressee: String,
    pub prompt: String,
    pub spec: TaskSpec,
    pub spec_hash: String,
    pub kind: Option<String>,
    pub epic: Option<String>,
    pub agent: Option<String>,
    pub branch: String,
    pub base: Option<String>,
    pub created_by: Option<String>,
    pub priority: i32,
    pub max_attempts: i32,
    pub timeout_secs: Option<i64>,
}

/// How a finished run counts against its epic's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpicCount {
    WorkerSucceeded,
    WorkerFailed,
    ManagerRan,
    /// A run that will be retried: only its cost counts.
    CostOnly,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct EpicRow {
    pub project: String,
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    pub tasks: i32,
    pub consecutive_failures: i32,
    pub activations: i32,
    pub spend_usd: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EpicRow {
    pub fn counters(&self) -> crate::engine::green::EpicCounters {
        crate::engine::green::EpicCounters {
            tasks: self.tasks.max(0) as u32,
            consecutive_failures: self.consecutive_failures.max(0) as u32,
            activations: self.activations.max(0) as u32,
            spend_usd: self.spend_usd,
        }
    }

    pub fn is_active(&self) -> bool {
        self.state == "active"
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ProjectRow {
    pub name: String,
    pub synced_commit: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
    pub sync_error: Option<String>,
    pub sync_error_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
    pub data: Option<Json<serde_json::Value>>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct SpecErrorRow {
    pub project: String,
    pub path: String,
    pub line: i64,
    pub col: i64,
    pub message: String,
    pub source_commit: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub report_due: u64,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub project: Option<String>,
    pub status: Option<TaskState>,
    pub addressee: Option<String>,
    pub epic: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// How much a claim may take.
#[derive(Debug, Clone)]
pub struct ClaimLimits {
    /// Runs at once over all projects.
    pub max_running: u32,
    /// Runs at once for a project not in `per_project_overrides`.
    pub max_running_per_project: u32,
    pub per_project_overrides: HashMap<String, u32>,
    /// Most tasks claimed by one call.
    pub batch: u32,
    /// Agent profiles whose dispatch is paused (a rate or usage limit).
    pub paused_agents: std::collections::HashSet<String>,
    /// The agent of tasks that name none.
    pub default_agent: String,
}

impl ClaimLimits {
    pub fn per_project(&self, project: &str) -> u32 {
        self.per_project_overrides
            .get(project)
            .copied()
            .unwrap_or(self.max_running_per_project)
    }
}
