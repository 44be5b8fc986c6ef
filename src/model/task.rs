//! A task as the engine holds it: its row, where it came from, and the small read models built
//! from rows (counts, the running view, claim limits). Pure types.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::green::ActivationItem;
use super::role::Role;
use crate::spec::{Addressee, ErrorClass, RunResult, StatusSpec, TaskKey, TaskSpec, TaskState};

/// Where a task comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A task file in `.ai/tasks/`: git is its truth, a status file reports it.
    File,
    /// A project-manager activation the engine made: it lives in the database only.
    Engine,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Engine => "engine",
        }
    }
}

/// A value read from a column that is not one of its enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column} holds {value:?}, which is not one of {expected}")]
pub struct BadColumn {
    pub column: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl TryFrom<String> for Origin {
    type Error = BadColumn;
    fn try_from(value: String) -> Result<Self, BadColumn> {
        match value.as_str() {
            "file" => Ok(Self::File),
            "engine" => Ok(Self::Engine),
            _ => Err(BadColumn {
                column: "tasks.origin",
                value,
                expected: "file, engine",
            }),
        }
    }
}

/// Parses a task status column.
pub fn status_from_column(value: String) -> Result<TaskState, BadColumn> {
    TaskState::parse(&value).ok_or(BadColumn {
        column: "tasks.status",
        value,
        expected: "pending, running, completed",
    })
}

/// One task as the database holds it: what its file asks for (or the engine made), and where
/// its current generation stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    pub id: i64,
    /// This incarnation's identity (random, given by the store): a task file deleted and added
    /// again is a new incarnation, which never adopts or reads anything of an earlier one.
    pub incarnation: String,
    pub project: String,
    pub key: String,
    pub origin: Origin,
    pub addressee: String,
    pub status: TaskState,
    pub prompt: String,
    pub spec: TaskSpec,
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
    /// The spec hash the current run started with (a changed spec runs again after it).
    pub run_spec_hash: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub result: Option<RunResult>,
    pub report_due: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// What a project-manager activation carries (empty for every other task).
    pub context: Vec<ActivationItem>,
}

impl TaskRow {
    pub fn state(&self) -> TaskState {
        self.status
    }

    pub fn result(&self) -> Option<&RunResult> {
        self.result.as_ref()
    }

    pub fn role(&self) -> Role {
        Role::of_kind(self.kind.as_deref())
    }

    /// The run name of the current attempt.
    pub fn run_name(&self) -> String {
        super::names::run_name(
            &self.project,
            &self.key,
            &self.incarnation,
            self.generation,
            self.attempts,
        )
    }
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

impl NewTask {
    /// The columns of the task file `spec` named `key`.
    pub fn from_spec(key: &TaskKey, spec: &TaskSpec) -> Self {
        Self {
            key: key.to_string(),
            addressee: spec.addressee.to_string(),
            prompt: spec.prompt.as_str().to_string(),
            spec: spec.clone(),
            spec_hash: spec.hash(),
            kind: spec.kind.as_ref().map(ToString::to_string),
            epic: spec.epic.as_ref().map(ToString::to_string),
            agent: spec.agent.as_ref().map(ToString::to_string),
            branch: spec
                .branch
                .as_ref()
                .map_or_else(|| format!("swarm/{key}"), ToString::to_string),
            base: spec.base.as_ref().map(ToString::to_string),
            created_by: spec.created_by.as_ref().map(ToString::to_string),
            priority: spec.priority.map_or(0, |p| p.get()),
            max_attempts: spec.max_attempts.map_or(1, |m| m.get() as i32),
            timeout_secs: spec.timeout.map(|t| t.duration().as_secs() as i64),
        }
    }

    /// The row of a new, pending task with these columns (its id is given by the store).
    pub fn into_row(
        self,
        project: &str,
        origin: Origin,
        source_commit: Option<&str>,
        now: DateTime<Utc>,
    ) -> TaskRow {
        TaskRow {
            id: 0,
            incarnation: String::new(),
            project: project.to_string(),
            key: self.key,
            origin,
            addressee: self.addressee,
            status: TaskState::Pending,
            prompt: self.prompt,
            spec: self.spec,
            spec_hash: self.spec_hash,
            source_commit: source_commit.map(str::to_string),
            kind: self.kind,
            epic: self.epic,
            agent: self.agent,
            branch: self.branch,
            base: self.base,
            created_by: self.created_by,
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_secs: self.timeout_secs,
            generation: 1,
            attempts: 0,
            infra_failures: 0,
            requeues: 0,
            cancel_requested: false,
            file_deleted: false,
            run_spec_hash: None,
            not_before: None,
            result: None,
            report_due: false,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            context: Vec::new(),
        }
    }
}

/// A running task, as the dispatcher's pass sees it (no spec, no result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRun {
    pub id: i64,
    pub incarnation: String,
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub attempts: i32,
    pub cancel_requested: bool,
}

impl RunningRun {
    pub fn run_name(&self) -> String {
        super::names::run_name(
            &self.project,
            &self.key,
            &self.incarnation,
            self.generation,
            self.attempts,
        )
    }
}

/// Tasks by status, over all projects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub report_due: u64,
}

/// How much a claim may take.
#[derive(Debug, Clone, Default)]
pub struct ClaimLimits {
    /// Runs at once over all projects.
    pub max_running: u32,
    /// Runs at once for a project not in `per_project_overrides`.
    pub max_running_per_project: u32,
    pub per_project_overrides: HashMap<String, u32>,
    /// Most tasks claimed by one call.
    pub batch: u32,
    /// Agent profiles whose dispatch is paused (a rate or usage limit).
    pub paused_agents: HashSet<String>,
    /// The agent of tasks that name none.
    pub default_agent: String,
    /// Projects on GitHub, where a task that requires checks waits for them.
    pub gated_projects: HashSet<String>,
    /// Gated tasks whose required checks passed (see [`super::checks`]).
    pub green_gates: HashSet<i64>,
}

impl ClaimLimits {
    pub fn per_project(&self, project: &str) -> u32 {
        self.per_project_overrides
            .get(project)
            .copied()
            .unwrap_or(self.max_running_per_project)
    }

    /// Which of `heads` (the first pending task of each addressee that has nothing running,
    /// best first) may start now, given what runs per project: within the global and
    /// per-project limits, skipping the queues of paused agents and
    /// of heads that wait for required checks. Indexes into `heads`.
    pub fn select(&self, heads: &[TaskRow], running: &HashMap<String, u32>) -> Vec<usize> {
        let mut running = running.clone();
        let total: u32 = running.values().sum();
        let mut free = self.max_running.saturating_sub(total).min(self.batch);
        let mut chosen = Vec::new();
        for (i, head) in heads.iter().enumerate() {
            if free == 0 {
                break;
            }
            if head.status != TaskState::Pending {
                continue;
            }
            // The head of a paused agent's queue waits, and so does its addressee.
            let agent = head.agent.as_deref().unwrap_or(&self.default_agent);
            if self.paused_agents.contains(agent) {
                continue;
            }
            // So does a head that waits for required checks.
            if self.gated_projects.contains(&head.project)
                && super::checks::requires_checks(head)
                && !self.green_gates.contains(&head.id)
            {
                continue;
            }
            let n = running.entry(head.project.clone()).or_default();
            if *n < self.per_project(&head.project) {
                *n += 1;
                free -= 1;
                chosen.push(i);
            }
        }
        chosen
    }
}

/// The status file of `row` as it is now.
pub fn status_of(row: &TaskRow) -> StatusSpec {
    let result = row.result.clone();
    StatusSpec {
        key: TaskKey::from_checked(row.key.clone()),
        addressee: Addressee::from_checked(row.addressee.clone()),
        status: row.status,
        generation: row.generation.max(0) as u32,
        attempts: row.attempts.max(0) as u32,
        spec_hash: row.spec_hash.clone(),
        source_commit: row.source_commit.clone(),
        epic: row.epic.clone(),
        completed_at: row.completed_at,
        duration_seconds: result.as_ref().and_then(RunResult::duration_seconds),
        result,
    }
}

/// The state of a task as shown to people.
pub fn describe_state(row: &TaskRow) -> String {
    match (row.status, row.result()) {
        (TaskState::Completed, Some(r)) if r.success => "completed (succeeded)".into(),
        (TaskState::Completed, Some(r)) => format!(
            "completed (failed: {})",
            r.error_class.map_or("error", ErrorClass::as_str)
        ),
        (state, _) => state.as_str().into(),
    }
}

/// The branch a task works on: its own, except that the project manager (kinds epic, plan,
/// manager) works on the default branch unless its task file names one.
pub fn effective_branch(row: &TaskRow, default_branch: &str) -> String {
    if row.spec.branch.is_none() && row.role() == Role::Manager {
        default_branch.to_string()
    } else {
        row.branch.clone()
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
