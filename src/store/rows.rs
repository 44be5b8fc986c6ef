//! The store's own read models (a project's sync state, a bad task file) and the filter of a
//! task listing. Task, event and epic rows are the model's (see `codec`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::spec::TaskState;

/// A project's sync state.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ProjectRow {
    pub name: String,
    pub synced_commit: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
    pub sync_error: Option<String>,
    pub sync_error_at: Option<DateTime<Utc>>,
}

/// A task file that does not validate, with where and why.
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

/// Which tasks a listing shows.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub project: Option<String>,
    pub status: Option<TaskState>,
    pub addressee: Option<String>,
    pub epic: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}
