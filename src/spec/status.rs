//! The status file, `.ai/status/<key>.yaml`: the observed result of a task, written by the
//! engine only, so the database can be rebuilt from the repositories.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ids::{Addressee, TaskKey};
use super::result::RunResult;

/// The three states a task can be in. There is no "blocked": order comes from the addressee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Running,
    Completed,
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// One status file. Unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "coding-swarm status file",
    description = "The observed result of a task: .ai/status/<key>.yaml, written by the engine."
)]
pub struct StatusSpec {
    pub key: TaskKey,
    pub addressee: Addressee,
    pub status: TaskState,
    /// Bumped each time a changed spec of a completed task runs again.
    pub generation: u32,
    /// Runs used by this generation.
    pub attempts: u32,
    /// Hash of the task spec this result belongs to.
    pub spec_hash: String,
    /// The commit of the task file this generation was synced from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
}
