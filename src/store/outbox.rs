//! The GitHub side of the store: the outbox of writes (one row per target, so only the newest
//! state of a thing is written when writes queue up), and the status comment of each task.
//! Webhook deliveries are in [`super::webhooks`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use super::{on_pool, q, Backend, Result, Store};
use crate::model::BadColumn;

/// What an outbox row writes to GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// A task's status comment on its pull request, edited in place.
    Comment,
    /// A commit status on the task's branch head.
    Status,
    /// An answer to a comment command.
    Reply,
    /// A draft pull request for a task's branch.
    DraftPr,
    /// A task's check run on its branch head (with a GitHub App), created or updated.
    CheckRun,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Comment => "comment",
            Self::Status => "status",
            Self::Reply => "reply",
            Self::DraftPr => "draft_pr",
            Self::CheckRun => "check_run",
        }
    }
}

impl std::fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for OutboxKind {
    type Error = BadColumn;
    fn try_from(value: String) -> Result<Self, BadColumn> {
        [
            Self::Comment,
            Self::Status,
            Self::Reply,
            Self::DraftPr,
            Self::CheckRun,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
        .ok_or(BadColumn {
            column: "github_outbox.kind",
            value,
            expected: "comment, status, reply, draft_pr, check_run",
        })
    }
}

/// One pending write to GitHub.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub repo: String,
    #[sqlx(try_from = "String")]
    pub kind: OutboxKind,
    pub target: String,
    pub payload: Json<serde_json::Value>,
    pub due_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Puts a write into the outbox. A write already waiting for the same target is replaced
    /// (its place and its backoff stay): only the newest state is written.
    pub async fn outbox_put(
        &self,
        repo: &str,
        kind: OutboxKind,
        target: &str,
        payload: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO github_outbox (repo, kind, target, payload, due_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5, $5)
             ON CONFLICT (repo, kind, target) DO UPDATE SET payload = $4, updated_at = $5")
            .bind(repo).bind(kind.as_str()).bind(target).bind(Json(payload)).bind(now)
            .execute(pool).await.map(|_| ()).map_err(q("queue a GitHub write")))?;
        Ok(())
    }

    /// Writes due at `now`, oldest first.
    pub async fn outbox_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OutboxRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, OutboxRow>(
            "SELECT id, repo, kind, target, payload, due_at, attempts, last_error, updated_at FROM github_outbox
             WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2")
            .bind(now).bind(limit).fetch_all(pool).await.map_err(q("read the GitHub outbox")))
    }

    /// Every waiting write (for people and tests).
    pub async fn outbox_all(&self) -> Result<Vec<OutboxRow>> {
        on_pool!(self, pool => sqlx::query_as::<_, OutboxRow>(
            "SELECT id, repo, kind, target, payload, due_at, attempts, last_error, updated_at FROM github_outbox ORDER BY id")
            .fetch_all(pool).await.map_err(q("read the GitHub outbox")))
    }

    /// A write went through. If a newer state arrived meanwhile, it stays to be written.
    /// How many GitHub writes wait in the outbox.
    pub async fn outbox_depth(&self) -> Result<i64> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM github_outbox")
            .fetch_one(pool).await.map_err(q("count the GitHub outbox")))
    }

    pub async fn outbox_done(&self, row: &OutboxRow) -> Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM github_outbox WHERE id = $1 AND updated_at = $2")
            .bind(row.id).bind(row.updated_at)
            .execute(pool).await.map(|_| ()).map_err(q("finish a GitHub write")))?;
        Ok(())
    }

    /// A write failed: try again at `due_at`. `counts` is false for a rate-limit wait, which
    /// is GitHub's pace, not a failure of the write.
    pub async fn outbox_retry(
        &self,
        id: i64,
        due_at: DateTime<Utc>,
        error: &str,
        counts: bool,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE github_outbox SET due_at = $2, attempts = attempts + $4, last_error = $3 WHERE id = $1")
            .bind(id).bind(due_at).bind(error).bind(counts as i32)
            .execute(pool).await.map(|_| ()).map_err(q("reschedule a GitHub write")))?;
        Ok(())
    }

    /// Whether task `task_key` has a status comment on some pull request of `repo`.
    pub async fn has_comment(&self, repo: &str, task_key: &str) -> Result<bool> {
        let found: Option<i32> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT 1 FROM github_comments WHERE repo = $1 AND task_key = $2 LIMIT 1")
            .bind(repo).bind(task_key).fetch_optional(pool).await.map_err(q("look for a status comment")))?;
        Ok(found.is_some())
    }

    pub async fn comment_id(&self, repo: &str, task_key: &str, pr: u64) -> Result<Option<u64>> {
        let id: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT comment_id FROM github_comments WHERE repo = $1 AND task_key = $2 AND pr_number = $3")
            .bind(repo).bind(task_key).bind(pr as i64).fetch_optional(pool).await.map_err(q("read a status comment")))?;
        Ok(id.map(|i| i as u64))
    }

    pub async fn set_comment_id(
        &self,
        repo: &str,
        task_key: &str,
        pr: u64,
        comment: u64,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO github_comments (repo, task_key, pr_number, comment_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, task_key, pr_number) DO UPDATE SET comment_id = $4")
            .bind(repo).bind(task_key).bind(pr as i64).bind(comment as i64)
            .execute(pool).await.map(|_| ()).map_err(q("remember a status comment")))?;
        Ok(())
    }
}
