//! A task's append-only event log: what happened to it and why, the answer to "why did this
//! fail four hours ago". Pure types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::task::BadColumn;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A task file was added (or the engine made an activation).
    Created,
    /// A task file changed; a pending task takes the new spec, a running one after its run.
    Updated,
    /// A completed task's file changed: it runs again as a new generation.
    NewGeneration,
    /// A person or a deleted file asked a running task to stop.
    StopRequested,
    /// The task is gone (its file was deleted).
    Removed,
    /// An attempt was claimed for its addressee.
    Claimed,
    /// The attempt's job was started.
    Launched,
    /// A run of an earlier engine was taken over after a restart.
    Adopted,
    /// A run ended with a final result.
    Completed,
    /// A run failed and is tried again after a backoff.
    Retry,
    /// A run hit a rate or usage limit and went back to the queue.
    Requeued,
    /// A run ended while the spec had changed: the new spec runs next.
    NextGeneration,
    /// The task's status file was committed.
    Reported,
    /// Another result joined a pending project-manager activation.
    Coalesced,
    /// A pending task was cancelled (its epic failed, or a person stopped it).
    Cancelled,
    /// Dispatch of the task's agent profile paused after a rate or usage limit.
    AgentPaused,
    /// A person changed the task's priority.
    Priority,
    /// The epic the task belongs to is complete.
    EpicComplete,
    /// The epic the task belongs to failed.
    EpicFailed,
    /// The task was rebuilt from its status file (a new or lost database).
    Restored,
    /// What the required checks the task waits for say changed (GitHub projects).
    Checks,
    /// The pull request of the task's branch was opened, closed or merged (GitHub).
    PullRequest,
}

impl EventKind {
    pub const ALL: [EventKind; 22] = [
        Self::Created,
        Self::Updated,
        Self::NewGeneration,
        Self::StopRequested,
        Self::Removed,
        Self::Claimed,
        Self::Launched,
        Self::Adopted,
        Self::Completed,
        Self::Retry,
        Self::Requeued,
        Self::NextGeneration,
        Self::Reported,
        Self::Coalesced,
        Self::Cancelled,
        Self::AgentPaused,
        Self::Priority,
        Self::EpicComplete,
        Self::EpicFailed,
        Self::Restored,
        Self::Checks,
        Self::PullRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::NewGeneration => "new_generation",
            Self::StopRequested => "stop_requested",
            Self::Removed => "removed",
            Self::Claimed => "claimed",
            Self::Launched => "launched",
            Self::Adopted => "adopted",
            Self::Completed => "completed",
            Self::Retry => "retry",
            Self::Requeued => "requeued",
            Self::NextGeneration => "next_generation",
            Self::Reported => "reported",
            Self::Coalesced => "coalesced",
            Self::Cancelled => "cancelled",
            Self::AgentPaused => "agent_paused",
            Self::Priority => "priority",
            Self::EpicComplete => "epic_complete",
            Self::EpicFailed => "epic_failed",
            Self::Restored => "restored",
            Self::Checks => "checks",
            Self::PullRequest => "pull_request",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for EventKind {
    type Error = BadColumn;
    fn try_from(value: String) -> Result<Self, BadColumn> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or(BadColumn {
                column: "task_events.kind",
                value,
                expected: "an event kind of this engine version",
            })
    }
}

/// An event to append to a task's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    /// The row the event belongs to; 0 for a task this change creates (the store fills it in).
    pub task_id: i64,
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub kind: EventKind,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl NewEvent {
    /// An event about `row`'s current generation.
    pub fn of(row: &super::TaskRow, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            task_id: row.id,
            project: row.project.clone(),
            key: row.key.clone(),
            generation: row.generation,
            kind,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn at_generation(mut self, generation: i32) -> Self {
        self.generation = generation;
        self
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub task_id: Option<i64>,
    pub project: String,
    pub key: String,
    pub generation: i32,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn kinds_round_trip_through_their_column_and_unknown_ones_are_named() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::try_from(k.as_str().to_string()), Ok(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        let e = EventKind::try_from("exploded".to_string()).unwrap_err();
        assert!(e.to_string().contains("task_events.kind"), "{e}");
        assert!(e.to_string().contains("\"exploded\""), "{e}");
    }
}
