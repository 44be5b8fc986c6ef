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

/// The text of a status file, with a header that says who writes it.
pub fn render_status(status: &StatusSpec) -> Vec<u8> {
    let body =
        serde_saphyr::to_string(status).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!("# Written by coding-swarm. Do not edit: the engine overwrites this file.\n{body}")
        .into_bytes()
}

/// Reads a status file back (a database rebuilt from the repositories). Lenient about fields
/// it does not know, so a file a newer engine wrote still reads; `None` when it is not a
/// status file at all.
pub fn read_status(bytes: &[u8]) -> Option<StatusSpec> {
    #[derive(Deserialize)]
    struct Lenient {
        key: TaskKey,
        addressee: Addressee,
        status: TaskState,
        generation: u32,
        attempts: u32,
        spec_hash: String,
        #[serde(default)]
        source_commit: Option<String>,
        #[serde(default)]
        epic: Option<String>,
        #[serde(default)]
        completed_at: Option<DateTime<Utc>>,
        #[serde(default)]
        duration_seconds: Option<f64>,
        #[serde(default)]
        result: Option<RunResult>,
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let l: Lenient = serde_saphyr::from_str(text).ok()?;
    Some(StatusSpec {
        key: l.key,
        addressee: l.addressee,
        status: l.status,
        generation: l.generation,
        attempts: l.attempts,
        spec_hash: l.spec_hash,
        source_commit: l.source_commit,
        epic: l.epic,
        completed_at: l.completed_at,
        duration_seconds: l.duration_seconds,
        result: l.result,
    })
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
    /// The epic the task belongs to (a database rebuilt from the repository reopens it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_from_their_names() {
        for (state, name) in [
            (TaskState::Pending, "pending"),
            (TaskState::Running, "running"),
            (TaskState::Completed, "completed"),
        ] {
            assert_eq!(
                (state.as_str(), state.to_string()),
                (name, name.to_string())
            );
            assert_eq!(TaskState::parse(name), Some(state));
        }
        assert_eq!(TaskState::parse("blocked"), None);
    }

    #[test]
    fn a_status_file_reads_back_as_written_and_other_files_do_not_read() {
        let status = StatusSpec {
            key: TaskKey::new("login-form").unwrap(),
            addressee: Addressee::new("worker-web").unwrap(),
            status: TaskState::Completed,
            generation: 2,
            attempts: 1,
            spec_hash: "ab12".into(),
            source_commit: Some("c0ffee".into()),
            epic: Some("auth".into()),
            completed_at: None,
            duration_seconds: Some(2.5),
            result: Some(RunResult {
                success: true,
                summary: Some("done".into()),
                ..RunResult::default()
            }),
        };
        let text = String::from_utf8(render_status(&status)).unwrap();
        assert!(
            text.starts_with("# Written by coding-swarm. Do not edit: the engine overwrites this file.\nkey: login-form\n"),
            "{text}"
        );
        assert_eq!(read_status(text.as_bytes()), Some(status));
        // A field a newer engine writes is skipped; a task file is not a status file.
        let newer = format!("{text}reviewed_by: ann\n");
        assert!(read_status(newer.as_bytes()).is_some(), "{newer}");
        assert_eq!(read_status(b"addressee: a\nprompt: p\n"), None);
        assert_eq!(read_status(b"\xff"), None);
    }
}
