//! Git hosts: GitHub. Webhooks in (pushes sync at once; comment commands from people with write
//! access), and out: one status comment per task on its pull request, edited in place, and a
//! commit status `swarm/<key>`, all through a persisted outbox that coalesces, spaces its
//! writes and waits when GitHub says so.

pub mod comment;
pub mod github;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{watch, Notify};

pub use github::{ForgeError, GitHub};

use crate::config::{Config, GitHubConfig, ProjectConfig, Secrets};
use crate::display::error_chain;
use crate::model::transition::StopOutcome;
use crate::model::{describe_state, effective_branch, ActivationItem, Role, TaskRow};
use crate::spec::TaskState;
use crate::steer::SteerError;
use crate::store::{DeliveryRow, FeedCursor, OutboxKind, OutboxRow, Receipt, Store, StoreError};
use webhook::{CheckSource, Command, Event};

/// A failed check as a delivery or the API tells it: (id, name, conclusion, details URL, the
/// GitHub Actions job whose log to read).
type Found = (String, String, String, Option<String>, Option<u64>);

/// Why a delivery could not be processed: it stays first in line and is tried again.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read what the delivery is about from GitHub")]
    GitHub(#[source] ForgeError),
}

/// A GitHub read for a reaction: a transient failure (rate limit, no answer, a 5xx) leaves the
/// delivery waiting to be tried again; any other (a 404: the review or run is gone) drops the
/// reaction.
fn transient(e: ForgeError) -> Result<(), HandleError> {
    let retry = match &e {
        ForgeError::RateLimited { .. } | ForgeError::Client { .. } => true,
        ForgeError::Http { status, .. } => *status >= 500 || *status == 0,
        _ => false,
    };
    if retry {
        Err(HandleError::GitHub(e))
    } else {
        tracing::warn!("a reaction is dropped: {}", error_chain(&e));
        Ok(())
    }
}

/// Failed writes (rate-limit waits do not count) are given up after this many tries: with the
/// doubling backoff, capped at 512 s, about an hour.
const MAX_WRITE_ATTEMPTS: i32 = 15;

/// The outbox payload of a reply to `author`'s comment command on issue `number`.
fn reply_payload(number: u64, author: &str, text: &str) -> serde_json::Value {
    json!({"number": number, "body": format!("<!-- coding-swarm:reply -->\n@{author} {text}")})
}

/// GitHub for the configured projects.
pub struct Forge {
    gh: GitHub,
    store: Store,
    cfg: GitHubConfig,
    /// `owner/name` (lower case) -> project
    by_repo: HashMap<String, ProjectConfig>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Who the engine is on GitHub (its token's login, or its App's bot): its own reviews start
    /// nothing.
    identity: tokio::sync::OnceCell<String>,
    /// Where task pages are linked to (`[http] public_url`).
    http: crate::config::HttpConfig,
    /// Projects whose tasks may wait for required checks.
    gated: std::collections::HashSet<String>,
    /// The checks each repository's default branch requires, as last read, and when.
    required: tokio::sync::Mutex<HashMap<String, (std::time::Instant, Option<Vec<String>>)>>,
    /// Held across each look at a gate (read from GitHub, then written): a delivery's look and
    /// the periodic one never interleave, so an older reading never overwrites a newer one.
    gate_lock: tokio::sync::Mutex<()>,
}

/// How long the checks a branch protection requires are remembered.
const PROTECTION_TTL: Duration = Duration::from_secs(300);

impl Forge {
    /// None when `[github]` is not configured or no project is on GitHub.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        secrets: &Secrets,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Option<Arc<Self>>, ForgeError> {
        let Some(cfg) = config.github.clone() else {
            return Ok(None);
        };
        let by_repo: HashMap<String, ProjectConfig> = config
            .projects
            .iter()
            .filter_map(|p| p.github_repo().map(|r| (r.to_ascii_lowercase(), p.clone())))
            .collect();
        if by_repo.is_empty() {
            return Ok(None);
        }
        let gh = GitHub::new(&cfg, secrets)?;
        Ok(Some(Arc::new(Self {
            gh,
            store,
            cfg,
            by_repo,
            metrics,
            identity: tokio::sync::OnceCell::new(),
            http: config.http.clone(),
            gated: config.gated_projects(),
            required: Default::default(),
            gate_lock: Default::default(),
        })))
    }

    fn repo_of(&self, project: &str) -> Option<String> {
        self.by_repo
            .iter()
            .find(|(_, p)| p.name == project)
            .map(|(r, _)| r.clone())
    }

    /// Reports task changes and writes the outbox, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // After a restart, the newest state of the last day is written again (writes are
        // idempotent: comments are edited in place, and coalesced); from there on, the change
        // feed says what changed.
        let mut cursor = loop {
            match self.catch_up(Utc::now() - chrono::Duration::days(1)).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!("cannot read task changes for GitHub: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        let mut paused_until: Option<DateTime<Utc>> = None;
        let mut cleaned = Utc::now() - chrono::Duration::days(1);
        let mut gates_polled: Option<std::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if gates_polled.is_none_or(|t| t.elapsed() >= self.cfg.checks_interval) {
                gates_polled = Some(std::time::Instant::now());
                self.refresh_gates(None).await;
            }
            if Utc::now() - cleaned > chrono::Duration::hours(1) {
                cleaned = Utc::now();
                let keep = chrono::Duration::from_std(self.cfg.webhook_retention)
                    .unwrap_or(chrono::Duration::days(7));
                match self
                    .store
                    .forget_processed_deliveries_before(cleaned - keep)
                    .await
                {
                    Ok(n) if n > 0 => tracing::debug!("forgot {n} processed webhook deliveries"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot forget old webhook deliveries: {e}"),
                }
            }
            match self.observe(cursor).await {
                Ok(next) => cursor = next,
                Err(e) => tracing::warn!("cannot read task changes for GitHub: {e}"),
            }
            if paused_until.is_none_or(|t| t <= Utc::now()) {
                paused_until = self.drain(&mut shutdown).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Queues the newest state of every task touched since `since`; returns where the change
    /// feed stood before it looked, so nothing that changes meanwhile is missed.
    async fn catch_up(&self, since: DateTime<Utc>) -> Result<FeedCursor, StoreError> {
        let cursor = self.store.feed_head().await?;
        for (repo, project) in &self.by_repo {
            for row in self.store.tasks_touched_since(&project.name, since).await? {
                self.queue_task(repo, project, &row).await?;
            }
        }
        Ok(cursor)
    }

    /// Queues the newest state of every task of a project on GitHub with an event after
    /// `cursor` (the change feed: a transaction that commits late is still seen). Returns the
    /// cursor past what it read.
    async fn observe(&self, cursor: FeedCursor) -> Result<FeedCursor, StoreError> {
        let mut cursor = cursor;
        loop {
            let (events, next) = self.store.feed_after(cursor, 1000).await?;
            let mut ids: Vec<i64> = events.iter().filter_map(|e| e.task_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut moved = Vec::new();
            for row in self.store.tasks_by_ids(&ids).await? {
                if row.origin != crate::model::Origin::File {
                    continue;
                }
                let Some((repo, project)) =
                    self.by_repo.iter().find(|(_, p)| p.name == row.project)
                else {
                    continue;
                };
                self.queue_task(repo, project, &row).await?;
                let kinds = || {
                    events
                        .iter()
                        .filter(|e| e.task_id == Some(row.id))
                        .map(|e| e.kind)
                };
                // A task that came to the queue (new, changed, back after a failure) is looked
                // at as soon as it heads it; the engine's own records of checks and pull
                // requests start nothing.
                use crate::model::EventKind as K;
                if row.state() == TaskState::Pending
                    && kinds().any(|k| !matches!(k, K::Checks | K::PullRequest | K::Reported))
                {
                    self.gate_if_head(repo, project, &row).await;
                }
                // A task that left the queue moves everyone behind it.
                if kinds()
                    .any(|k| matches!(k, K::Claimed | K::Completed | K::Cancelled | K::Removed))
                {
                    moved.push((repo.clone(), project.clone(), row.addressee.clone()));
                }
            }
            moved.sort_by(|a, b| (&a.1.name, &a.2).cmp(&(&b.1.name, &b.2)));
            moved.dedup_by(|a, b| a.1.name == b.1.name && a.2 == b.2);
            for (repo, project, addressee) in moved {
                self.queue_moved(&repo, &project, &addressee).await?;
            }
            cursor = next;
            if events.len() < 1000 {
                return Ok(cursor);
            }
        }
    }

    async fn queue_task(
        &self,
        repo: &str,
        project: &ProjectConfig,
        row: &TaskRow,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let queue = if row.state() == TaskState::Pending {
            let (place, behind) = self.store.queue_place(row).await?;
            let waits_for = if self.gates(row) {
                match self.store.pending_gates().await?.remove(&row.id) {
                    Some(g) if g.green => None,
                    Some(g) => Some(g.waits_for),
                    None => Some("required checks, not looked at yet".to_string()),
                }
            } else {
                None
            };
            Some(comment::QueuePlace {
                place,
                behind,
                waits_for,
            })
        } else {
            None
        };
        let mut branch = row
            .result()
            .and_then(|r| r.branch.clone())
            .unwrap_or_else(|| effective_branch(row, &project.default_branch));
        // A merge into the default branch reports on the pull request of what it merges.
        if branch == project.default_branch {
            if let Some(first) = row.spec.merges.as_ref().and_then(|m| m.iter().next()) {
                branch = first.as_str().to_string();
            }
        }
        let page = self.http.task_page(&row.project, &row.key);
        let body = comment::comment_body_on(
            row,
            &comment::web_url(&self.cfg.api_url),
            repo,
            &project.default_branch,
            queue.as_ref(),
            page.as_deref(),
        );
        let target = format!("{}/{}", row.project, row.key);
        self.store
            .outbox_put(
                repo,
                OutboxKind::Comment,
                &target,
                &json!({"key": row.key, "project": row.project, "branch": branch, "body": body}),
                now,
            )
            .await?;
        let sha = row.result().and_then(|r| r.commit_sha.clone());
        if self.gh.is_app() {
            // With an App, the modern surface: a check run, with a summary and "Re-run".
            let mut run = comment::check_run(row, &branch, page.as_deref());
            run["branch"] = json!(branch);
            run["sha"] = json!(sha);
            self.store
                .outbox_put(repo, OutboxKind::CheckRun, &target, &run, now)
                .await?;
        } else {
            let mut status = comment::commit_status(row);
            status["branch"] = json!(branch);
            status["sha"] = json!(sha);
            if let Some(page) = &page {
                status["target_url"] = json!(page);
            }
            self.store
                .outbox_put(repo, OutboxKind::Status, &target, &status, now)
                .await?;
        }
        // A run that pushed commits to a branch of its own gets the branch a (draft) pull
        // request, so its status comment and checks have a home.
        let pushed = row
            .result()
            .is_some_and(|r| r.changed && r.commit_sha.is_some())
            && !matches!(row.role(), Role::Manager | Role::Merge);
        if self.cfg.draft_pull_requests && pushed && branch != project.default_branch {
            let first = row
                .prompt
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&row.key);
            let pull = json!({"title": format!("swarm: {}", crate::spec::truncate(first.trim(), 80)), "head": branch, "base": row.base.clone().unwrap_or_else(|| project.default_branch.clone()),
                "draft": true, "body": format!("Opened by coding-swarm for task `{}`.\n\n{}", row.key, row.result().and_then(|r| r.summary.clone()).unwrap_or_default().replace('@', "@\u{200b}")),
                "comment": {"key": row.key, "project": row.project, "branch": branch, "body": body}});
            self.store
                .outbox_put(repo, OutboxKind::DraftPr, &target, &pull, now)
                .await?;
        }
        Ok(())
    }

    /// Whether `row` waits for required checks before it runs.
    fn gates(&self, row: &TaskRow) -> bool {
        row.state() == TaskState::Pending
            && self.gated.contains(&row.project)
            && crate::model::checks::requires_checks(row)
    }

    /// The pending tasks of `addressee` moved up in its queue: their comments say so (those
    /// that have one), and a new head that waits for checks is looked at.
    async fn queue_moved(
        &self,
        repo: &str,
        project: &ProjectConfig,
        addressee: &str,
    ) -> Result<(), StoreError> {
        let filter = crate::store::TaskFilter {
            project: Some(project.name.clone()),
            status: Some(TaskState::Pending),
            addressee: Some(addressee.to_string()),
            limit: Some(50),
            ..Default::default()
        };
        for (i, row) in self.store.list(&filter).await?.into_iter().enumerate() {
            if row.origin != crate::model::Origin::File {
                continue;
            }
            if i == 0 && self.gates(&row) {
                self.check_gate(repo, project, &row).await;
            } else if self.store.has_comment(repo, &row.key).await? {
                self.queue_task(repo, project, &row).await?;
            }
        }
        Ok(())
    }

    /// Looks at the checks `row` waits for when it heads its addressee's queue.
    async fn gate_if_head(&self, repo: &str, project: &ProjectConfig, row: &TaskRow) {
        if !self.gates(row) {
            return;
        }
        match self.store.queue_place(row).await {
            Ok((1, _)) => self.check_gate(repo, project, row).await,
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read a queue place: {e}"),
        }
    }

    /// Looks again at the pending tasks that wait for checks and head their queues: of every
    /// gated project, or (`only`) those of a project that wait on a branch.
    async fn refresh_gates(&self, only: Option<(&str, &str)>) {
        for (repo, project) in &self.by_repo {
            if !self.gated.contains(&project.name) || only.is_some_and(|(p, _)| p != project.name) {
                continue;
            }
            let filter = crate::store::TaskFilter {
                project: Some(project.name.clone()),
                status: Some(TaskState::Pending),
                limit: Some(5000),
                ..Default::default()
            };
            let rows = match self.store.list(&filter).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cannot list pending tasks for their checks: {e}");
                    continue;
                }
            };
            // The list is in queue order: the first of each addressee heads its queue.
            let mut seen = std::collections::HashSet::new();
            for row in rows {
                if !seen.insert(row.addressee.clone()) || !self.gates(&row) {
                    continue;
                }
                if let Some((_, branch)) = only {
                    if !crate::model::checks::gated_branches(&row, &project.default_branch)
                        .iter()
                        .any(|b| b == branch)
                    {
                        continue;
                    }
                }
                self.check_gate(repo, project, &row).await;
            }
        }
    }

    /// The gates of project `name` (in repository `repo`) that wait on `branch`.
    async fn refresh_gates_on(&self, repo: &str, name: &str, branch: &str) {
        if self
            .by_repo
            .get(repo)
            .is_some_and(|p| self.gated.contains(&p.name))
        {
            self.refresh_gates(Some((name, branch))).await;
        }
    }

    /// The checks the default branch of `repo` requires (its protection), remembered a while.
    async fn protection(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<Vec<String>>, ForgeError> {
        let mut cache = self.required.lock().await;
        if let Some((at, names)) = cache.get(repo) {
            if at.elapsed() < PROTECTION_TTL {
                return Ok(names.clone());
            }
        }
        let names = self.gh.required_checks(repo, branch).await?;
        cache.insert(repo.to_string(), (std::time::Instant::now(), names.clone()));
        Ok(names)
    }

    /// Reads what the checks `row` waits for say now and records it; a change is an event of
    /// the task (its comment and the dashboard say it), and a green gate wakes dispatch. A
    /// failure to read leaves the gate as it was, for the next look.
    async fn check_gate(&self, repo: &str, project: &ProjectConfig, row: &TaskRow) {
        use crate::model::checks;
        let _one_at_a_time = self.gate_lock.lock().await;
        let read = async {
            let required = match &project.required_checks {
                Some(r) => Some(r.clone()),
                None => self.protection(repo, &project.default_branch).await?,
            };
            let mut verdicts = Vec::new();
            for branch in checks::gated_branches(row, &project.default_branch) {
                let verdict = match self.gh.branch_head(repo, &branch).await? {
                    Some(sha) => Some(checks::verdict(
                        required.as_deref(),
                        &self.gh.commit_checks(repo, &sha).await?,
                    )),
                    None => None,
                };
                verdicts.push((branch, verdict));
            }
            Ok::<_, ForgeError>(checks::waits_for(&verdicts))
        };
        let waits = match read.await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%repo, task = %row.key, "cannot read the checks a task waits for: {}", error_chain(&e));
                return;
            }
        };
        let before = match self.store.pending_gates().await {
            Ok(mut g) => g.remove(&row.id),
            Err(e) => {
                tracing::warn!("cannot read required checks: {e}");
                return;
            }
        };
        let now = Utc::now();
        if let Err(e) = self
            .store
            .set_gate(row.id, row.generation, waits.as_deref(), now)
            .await
        {
            tracing::warn!("cannot record required checks: {e}");
            return;
        }
        let same = before.is_some_and(|g| {
            g.green == waits.is_none() && g.waits_for == waits.clone().unwrap_or_default()
        });
        if !same {
            let text = match &waits {
                Some(w) => format!("waits for {w}"),
                None => "required checks passed".to_string(),
            };
            tracing::info!(project = %row.project, task = %row.key, "{text}");
            let event = crate::model::NewEvent::of(row, crate::model::EventKind::Checks, text);
            if let Err(e) = self.store.append_events(&[event], now).await {
                tracing::warn!("cannot record required checks: {e}");
            }
        }
    }

    /// Writes what is due, spaced by `min_write_interval`. Returns when GitHub asked to wait.
    async fn drain(&self, shutdown: &mut watch::Receiver<bool>) -> Option<DateTime<Utc>> {
        let due = match self.store.outbox_due(Utc::now(), 50).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot read the GitHub outbox: {e}");
                return None;
            }
        };
        for row in due {
            let kind = row.kind.to_string();
            let outcome = self
                .perform(&row)
                .instrument(tracing::info_span!("github_write", repo = %row.repo, kind = %kind, target = %row.target))
                .await;
            self.metrics.github_write(
                &kind,
                match &outcome {
                    Ok(true) => "written",
                    Ok(false) => "skipped",
                    Err(ForgeError::RateLimited { .. }) => "rate_limited",
                    Err(_) if row.attempts >= MAX_WRITE_ATTEMPTS => "gave_up",
                    Err(_) => "retried",
                },
            );
            match outcome {
                Ok(wrote) => {
                    if let Err(e) = self.store.outbox_done(&row).await {
                        tracing::warn!("{e}");
                    }
                    if wrote {
                        tokio::select! {
                            _ = tokio::time::sleep(self.cfg.min_write_interval) => {}
                            _ = shutdown.changed() => return None,
                        }
                    }
                }
                Err(ForgeError::RateLimited { until, message }) => {
                    tracing::warn!(repo = %row.repo, "GitHub rate limit until {until}: {message}");
                    let _ = self
                        .store
                        .outbox_retry(row.id, until, &message, false)
                        .await;
                    return Some(until);
                }
                Err(e) if row.attempts >= MAX_WRITE_ATTEMPTS => {
                    tracing::error!(repo = %row.repo, kind = %row.kind, target = %row.target, "giving up on a GitHub write after {} attempts: {}", row.attempts, error_chain(&e));
                    let _ = self.store.outbox_done(&row).await;
                }
                Err(e) => {
                    let wait = chrono::Duration::seconds(2i64.pow((row.attempts as u32).min(9)));
                    let text = error_chain(&e);
                    tracing::warn!(repo = %row.repo, kind = %row.kind, "GitHub write failed, retrying in {wait}: {text}");
                    let _ = self
                        .store
                        .outbox_retry(row.id, Utc::now() + wait, &text, true)
                        .await;
                }
            }
        }
        None
    }

    /// Performs one write. Ok(false) when there was nothing to write (no pull request, no
    /// branch yet).
    async fn perform(&self, row: &OutboxRow) -> Result<bool, ForgeError> {
        let p = &row.payload.0;
        let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        match row.kind {
            OutboxKind::Comment => {
                let (key, project, branch, body) = (s("key"), s("project"), s("branch"), s("body"));
                let Some(pr) = self.gh.pull_for_branch(&row.repo, &branch).await? else {
                    return Ok(false);
                };
                let known = self
                    .store
                    .comment_id(&row.repo, &key, pr)
                    .await
                    .ok()
                    .flatten();
                let id = match known {
                    Some(id) => Some(id),
                    None => {
                        self.gh
                            .find_comment(&row.repo, pr, &comment::marker(&project, &key))
                            .await?
                    }
                };
                match id {
                    Some(id) if self.gh.update_comment(&row.repo, id, &body).await? => {
                        let _ = self.store.set_comment_id(&row.repo, &key, pr, id).await;
                    }
                    _ => {
                        let id = self.gh.create_comment(&row.repo, pr, &body).await?;
                        let _ = self.store.set_comment_id(&row.repo, &key, pr, id).await;
                    }
                }
                Ok(true)
            }
            OutboxKind::Status => {
                let sha = match p["sha"].as_str() {
                    Some(sha) => sha.to_string(),
                    None => match self.gh.branch_head(&row.repo, &s("branch")).await? {
                        Some(sha) => sha,
                        None => return Ok(false),
                    },
                };
                let mut status = json!({"state": p["state"], "context": p["context"], "description": p["description"]});
                if p["target_url"].is_string() {
                    status["target_url"] = p["target_url"].clone();
                }
                self.gh.create_status(&row.repo, &sha, &status).await?;
                Ok(true)
            }
            OutboxKind::CheckRun => {
                let sha = match p["sha"].as_str() {
                    Some(sha) => sha.to_string(),
                    None => match self.gh.branch_head(&row.repo, &s("branch")).await? {
                        Some(sha) => sha,
                        None => return Ok(false),
                    },
                };
                let mut run = p.clone();
                if let Some(o) = run.as_object_mut() {
                    o.remove("branch");
                    o.remove("sha");
                }
                let name = s("name");
                // One check run per task and commit: updated in place once it exists.
                match self.gh.find_check_run(&row.repo, &sha, &name).await? {
                    Some(id) if self.gh.update_check_run(&row.repo, id, &run).await? => {}
                    _ => {
                        run["head_sha"] = json!(sha);
                        self.gh.create_check_run(&row.repo, &run).await?;
                    }
                }
                Ok(true)
            }
            OutboxKind::Reply if p["reaction"].is_string() => {
                let id = p["comment"].as_u64().unwrap_or(0);
                let on_diff = p["on_diff"].as_bool().unwrap_or(false);
                self.gh
                    .react(&row.repo, id, on_diff, &s("reaction"))
                    .await?;
                Ok(true)
            }
            OutboxKind::Reply => {
                self.gh
                    .create_comment(&row.repo, p["number"].as_u64().unwrap_or(0), &s("body"))
                    .await?;
                Ok(true)
            }
            OutboxKind::DraftPr => {
                // Open or closed: a pull request a person closed is not opened again.
                if self.gh.any_pull_for_branch(&row.repo, &s("head")).await? {
                    return Ok(false);
                }
                let mut pull = p.clone();
                let comment = pull.as_object_mut().and_then(|o| o.remove("comment"));
                self.gh.create_pull(&row.repo, &pull).await?;
                // The task's status comment goes onto the new pull request.
                if let Some(c) = comment {
                    let _ = self
                        .store
                        .outbox_put(&row.repo, OutboxKind::Comment, &row.target, &c, Utc::now())
                        .await;
                }
                Ok(true)
            }
        }
    }

    /// Processes the stored deliveries in arrival order, until `shutdown`. Only the leader
    /// runs this; a standby stores deliveries and leaves them here. Woken when this process
    /// stores one, and every second for those a standby stored.
    pub async fn process_deliveries(
        self: Arc<Self>,
        triggers: HashMap<String, Arc<Notify>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Bodies are up to 5 MiB each: a small batch bounds what is held in memory.
        const BATCH: i64 = 16;
        let arrived = self.store.deliveries_handle();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut full = false;
            match self.store.deliveries_waiting(BATCH).await {
                Ok(batch) => {
                    full = batch.len() as i64 == BATCH;
                    for d in &batch {
                        if *shutdown.borrow() {
                            return;
                        }
                        // A delivery that cannot be finished stays first in line.
                        let span = tracing::info_span!("webhook_delivery", delivery = %d.delivery_id, event = %d.event);
                        if let Err(e) = self.handle(d, &triggers).instrument(span).await {
                            tracing::warn!(delivery = %d.delivery_id, "cannot process a webhook delivery, trying again: {}", error_chain(&e));
                            full = false;
                            break;
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot read webhook deliveries: {}", error_chain(&e)),
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = arrived.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Processes one stored delivery, and marks it processed: pushes sync at once; comments
    /// from people with write access run commands; everything else is left alone.
    ///
    /// Exactly once, by effect: a command's database write (`/swarm retry`, `/swarm stop`, a
    /// request to the manager) marks the delivery processed and queues its reply in its own
    /// transaction; a delivery with no database effect is marked with its reply. A push
    /// only wakes the project's sync, which is idempotent (sync is level-triggered: a second
    /// wake-up fetches and finds nothing new), so a push processed again after a crash between
    /// the wake-up and the mark does no harm. The permission check reads GitHub and changes
    /// nothing.
    pub async fn handle(
        &self,
        d: &DeliveryRow,
        triggers: &HashMap<String, Arc<Notify>>,
    ) -> Result<(), HandleError> {
        let reply = match webhook::parse_event(&d.event, &d.body) {
            Ok(event) => self.act(d, event, triggers).await?,
            Err(e) => {
                tracing::warn!(delivery = %d.delivery_id, "{}", error_chain(&e));
                None
            }
        };
        Ok(self
            .store
            .finish_delivery(d, reply.as_ref().map(|(r, p)| (r.as_str(), p)), Utc::now())
            .await?)
    }

    /// Acts on a parsed delivery; returns the reply to queue (repository, payload) when one is
    /// due and was not queued with the command's change.
    async fn act(
        &self,
        d: &DeliveryRow,
        event: Event,
        triggers: &HashMap<String, Arc<Notify>>,
    ) -> Result<Option<(String, serde_json::Value)>, HandleError> {
        match event {
            Event::Review {
                repo,
                number,
                head_branch,
                review_id,
                author,
                author_is_bot,
                state,
                body,
            } => {
                let Some(project) = self.by_repo.get(&repo.to_ascii_lowercase()).cloned() else {
                    return Ok(None);
                };
                if author_is_bot || body.contains("<!-- coding-swarm") {
                    return Ok(None);
                }
                let reacting = state == "changes_requested"
                    || (state == "commented" && self.cfg.react_to_commented_reviews);
                if reacting {
                    self.react_to_review(d, &repo, &project, number, &head_branch, review_id)
                        .await?;
                    return Ok(None);
                }
                // Else a command in the review's body, as in any comment.
                Ok(self
                    .comment(
                        d,
                        repo,
                        project,
                        (number, None),
                        true,
                        Some(head_branch),
                        author,
                        body,
                    )
                    .await)
            }
            Event::ReviewComment {
                repo,
                number,
                comment_id,
                head_branch,
                review_id,
                author,
                author_is_bot,
                body,
            } => {
                let Some(project) = self.by_repo.get(&repo.to_ascii_lowercase()).cloned() else {
                    return Ok(None);
                };
                if author_is_bot || body.contains("<!-- coding-swarm") {
                    return Ok(None);
                }
                // A command is a command; any other comment joins its review's reaction (the
                // review's own delivery, before or after, makes the same one).
                if webhook::parse_command(&body, &self.cfg.mention).is_some() {
                    return Ok(self
                        .comment(
                            d,
                            repo,
                            project,
                            (number, comment_id.map(|id| (id, true))),
                            true,
                            Some(head_branch),
                            author,
                            body,
                        )
                        .await);
                }
                if let Some(id) = review_id {
                    self.react_to_review(d, &repo, &project, number, &head_branch, id)
                        .await?;
                }
                Ok(None)
            }
            Event::ChecksCompleted {
                repo,
                branches,
                sha,
                source,
            } => {
                let Some(project) = self.by_repo.get(&repo.to_ascii_lowercase()).cloned() else {
                    return Ok(None);
                };
                // Tasks that wait for these checks look again (the API is the truth; the
                // delivery only says when to look).
                let repo_key = repo.to_ascii_lowercase();
                for b in &branches {
                    self.refresh_gates_on(&repo_key, &project.name, b).await;
                }
                self.react_to_checks(d, &repo, &project, &branches, &sha, source)
                    .await?;
                Ok(None)
            }
            Event::Push { repo, branch, .. } => {
                let Some(project) = self.by_repo.get(&repo.to_ascii_lowercase()) else {
                    tracing::debug!(%repo, "push to a repository that is not a project; ignored");
                    return Ok(None);
                };
                if branch == project.default_branch {
                    if let Some(t) = triggers.get(&project.name) {
                        t.notify_one();
                    }
                } else {
                    // A new head: its checks start again.
                    self.refresh_gates_on(&repo.to_ascii_lowercase(), &project.name, &branch)
                        .await;
                }
                Ok(None)
            }
            Event::PullRequest {
                repo,
                number,
                head_branch,
                action,
                merged,
                author,
            } => {
                let key = repo.to_ascii_lowercase();
                let Some(project) = self.by_repo.get(&key).cloned() else {
                    return Ok(None);
                };
                let Some(task) = self.task_on(&project.name, &head_branch).await? else {
                    tracing::debug!(%repo, number, "a pull request of a branch that is no task's; ignored");
                    return Ok(None);
                };
                if action == "synchronize" {
                    self.refresh_gates_on(&key, &project.name, &head_branch)
                        .await;
                    return Ok(None);
                }
                // Opened (by a person too), reopened, ready or closed: recorded on the task,
                // whose status comment then goes onto it at once (the change feed queues it).
                let what = match (action.as_str(), merged) {
                    ("closed", true) => "merged",
                    ("closed", false) => "closed",
                    ("ready_for_review", _) => "marked ready for review",
                    (a, _) => a,
                };
                let text = format!("pull request #{number} {what} (by {author})");
                let event =
                    crate::model::NewEvent::of(&task, crate::model::EventKind::PullRequest, text)
                        .with_data(json!({"number": number, "action": action, "merged": merged}));
                self.store.append_events(&[event], Utc::now()).await?;
                Ok(None)
            }
            Event::CheckRerun { repo, name, author } => {
                let Some(project) = self.by_repo.get(&repo.to_ascii_lowercase()).cloned() else {
                    return Ok(None);
                };
                let Some(key) = name.strip_prefix(crate::model::checks::OWN_PREFIX) else {
                    return Ok(None);
                };
                let key = key.to_string();
                // GitHub offers "Re-run" to people with write access; asked again all the same.
                match self.gh.permission(&repo, &author).await {
                    Ok(p) if matches!(p.as_str(), "admin" | "write" | "maintain") => {}
                    Ok(_) => return Ok(None),
                    Err(e) => return transient(e).map(|()| None),
                }
                let who = format!("@{author} on GitHub (Re-run)");
                // Once per delivery: the retry marks it processed in its own transaction.
                let receipt = Receipt::new(d, |_: &Result<i32, SteerError>| None);
                match crate::steer::retry_marking(
                    &self.store,
                    &project.name,
                    &key,
                    &who,
                    Some(receipt),
                )
                .await
                {
                    Ok(_) | Err(SteerError::Store(StoreError::DeliveryProcessed { .. })) => {}
                    Err(e) => {
                        tracing::info!(%repo, task = %key, "Re-run of a check run: cannot retry: {e}")
                    }
                }
                Ok(None)
            }
            Event::Comment {
                repo,
                number,
                comment_id,
                is_pull_request,
                head_branch,
                author,
                author_is_bot,
                body,
            } => {
                let Some(project) = self.by_repo.get(&repo.to_ascii_lowercase()).cloned() else {
                    return Ok(None);
                };
                // Bots (this engine's App among them) and the engine's own comments never
                // start anything: no loop can begin with a comment.
                if author_is_bot || body.contains("<!-- coding-swarm") {
                    return Ok(None);
                }
                Ok(self
                    .comment(
                        d,
                        repo,
                        project,
                        (number, comment_id.map(|id| (id, false))),
                        is_pull_request,
                        head_branch,
                        author,
                        body,
                    )
                    .await)
            }
            Event::Ignored { event } => {
                tracing::debug!(delivery = %d.delivery_id, "{event}: nothing to do");
                Ok(None)
            }
        }
    }

    /// A comment of a person (not a bot, not the engine's): the command in it, if any.
    /// `at`: the issue or pull request, and the comment (its id, and whether it is on the
    /// diff) when it can be reacted to.
    #[allow(clippy::too_many_arguments)]
    async fn comment(
        &self,
        d: &DeliveryRow,
        repo: String,
        project: ProjectConfig,
        at: (u64, Option<(u64, bool)>),
        is_pull_request: bool,
        head_branch: Option<String>,
        author: String,
        body: String,
    ) -> Option<(String, serde_json::Value)> {
        let command = webhook::parse_command(&body, &self.cfg.mention)?;
        let number = at.0;
        let reply = self
            .run_command(
                d,
                &repo,
                &project,
                at,
                is_pull_request,
                head_branch,
                &author,
                command,
            )
            .await?;
        Some((
            repo.to_ascii_lowercase(),
            reply_payload(number, &author, &reply),
        ))
    }

    /// Who the engine is on GitHub: its token's login, or its App's bot user.
    async fn identity(&self) -> Option<&str> {
        self.identity
            .get_or_try_init(|| async {
                self.gh
                    .whoami()
                    .await
                    .map(|who| match who.strip_prefix("the GitHub App ") {
                        Some(slug) => format!("{slug}[bot]"),
                        None => who,
                    })
            })
            .await
            .map(String::as_str)
            .ok()
    }

    /// The task whose branch is `branch`, if any.
    async fn task_on(&self, project: &str, branch: &str) -> Result<Option<TaskRow>, StoreError> {
        Ok(self
            .store
            .tasks_by_keys(project, None)
            .await?
            .into_iter()
            .filter(|t| t.role() != Role::Manager)
            .find(|t| t.branch == branch))
    }

    /// Review `review_id` of pull request `number` (of `head_branch`), read from the API with
    /// every comment: when it requests changes (or, by config, comments), was written by a
    /// person with write access who is not the engine, and the branch is a task's, the
    /// manager gets it, once (see [`crate::steer::react_marking`]).
    async fn react_to_review(
        &self,
        d: &DeliveryRow,
        repo: &str,
        project: &ProjectConfig,
        number: u64,
        head_branch: &str,
        review_id: u64,
    ) -> Result<(), HandleError> {
        let Some(task) = self.task_on(&project.name, head_branch).await? else {
            tracing::debug!(%repo, number, "a review of a pull request that is not a task's; ignored");
            return Ok(());
        };
        let review = match self.gh.review(repo, number, review_id).await {
            Ok(r) => r,
            Err(e) => return transient(e),
        };
        let state = review["state"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let reacting = state == "changes_requested"
            || (state == "commented" && self.cfg.react_to_commented_reviews);
        let author = review["user"]["login"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !reacting || author.is_empty() || review["user"]["type"] == "Bot" {
            return Ok(());
        }
        if self
            .identity()
            .await
            .is_some_and(|me| me.eq_ignore_ascii_case(&author))
        {
            tracing::debug!(%repo, number, "the engine's own review; ignored");
            return Ok(());
        }
        match self.gh.permission(repo, &author).await {
            Ok(p) if matches!(p.as_str(), "admin" | "write" | "maintain") => {}
            Ok(_) => {
                tracing::info!(%repo, number, %author, "a review by someone without write access starts nothing");
                return Ok(());
            }
            Err(e) => return transient(e),
        }
        let comments = match self.gh.review_comments(repo, number, review_id).await {
            Ok(c) => c,
            Err(e) => return transient(e),
        };
        let comments = comments
            .iter()
            .map(|c| crate::model::green::ReviewComment {
                id: c["id"].as_u64().unwrap_or_default(),
                path: c["path"].as_str().unwrap_or_default().to_string(),
                line: c["line"].as_u64().or(c["original_line"].as_u64()),
                diff_hunk: c["diff_hunk"].as_str().unwrap_or_default().to_string(),
                body: c["body"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        let item = ActivationItem::Review {
            pull_request: number,
            branch: head_branch.to_string(),
            task: Some(task.key.clone()),
            review_id,
            author,
            state,
            body: review["body"].as_str().unwrap_or_default().to_string(),
            comments,
        };
        self.hand_over(d, project, task.epic.as_deref(), item).await
    }

    /// Checks completed on `sha`: when some failed and `sha` is the head of a task's branch
    /// (asked of the API), the manager gets the failed checks, with the end of each GitHub
    /// Actions job's log.
    async fn react_to_checks(
        &self,
        d: &DeliveryRow,
        repo: &str,
        project: &ProjectConfig,
        branches: &[String],
        sha: &str,
        source: CheckSource,
    ) -> Result<(), HandleError> {
        let failing = match &source {
            CheckSource::Run { conclusion, .. }
            | CheckSource::Suite { conclusion, .. }
            | CheckSource::Workflow { conclusion, .. } => webhook::is_failing(conclusion),
            CheckSource::Status { state, .. } => matches!(state.as_str(), "failure" | "error"),
        };
        if !failing {
            return Ok(());
        }
        let mut task = None;
        for b in branches {
            if let Some(t) = self.task_on(&project.name, b).await? {
                task = Some((b.clone(), t));
                break;
            }
        }
        let Some((branch, task)) = task else {
            tracing::debug!(%repo, %sha, "failed checks on no task's branch; ignored");
            return Ok(());
        };
        match self.gh.branch_head(repo, &branch).await {
            Ok(Some(head)) if head == sha => {}
            Ok(_) => {
                tracing::info!(%repo, %branch, %sha, "failed checks on a commit that is no longer the branch's head; ignored");
                return Ok(());
            }
            Err(e) => return transient(e),
        }
        let mut checks: Vec<Found> = Vec::new();
        let run = |c: &serde_json::Value, actions: bool| {
            let id = c["id"].as_u64().unwrap_or_default();
            let details = c["details_url"]
                .as_str()
                .filter(|u| !u.is_empty())
                .or(c["html_url"].as_str())
                .map(str::to_string);
            (
                format!("check:{id}"),
                c["name"].as_str().unwrap_or_default().to_string(),
                c["conclusion"].as_str().unwrap_or_default().to_string(),
                details,
                actions.then_some(id),
            )
        };
        match source {
            CheckSource::Run {
                id,
                name,
                conclusion,
                details_url,
                actions,
            } => checks.push((
                format!("check:{id}"),
                name,
                conclusion,
                details_url,
                actions.then_some(id),
            )),
            CheckSource::Suite { id, .. } => match self.gh.suite_check_runs(repo, id).await {
                Ok(runs) => checks.extend(
                    runs.iter()
                        .filter(|c| webhook::is_failing(c["conclusion"].as_str().unwrap_or("")))
                        .map(|c| run(c, c["app"]["slug"] == "github-actions")),
                ),
                Err(e) => return transient(e),
            },
            CheckSource::Workflow { id, name, .. } => match self.gh.run_jobs(repo, id).await {
                // An Actions job's id is its check run's: the same check from either event.
                Ok(jobs) => checks.extend(
                    jobs.iter()
                        .filter(|c| webhook::is_failing(c["conclusion"].as_str().unwrap_or("")))
                        .map(|c| {
                            let mut r = run(c, true);
                            if !name.is_empty() {
                                r.1 = format!("{name} / {}", r.1);
                            }
                            r
                        }),
                ),
                Err(e) => return transient(e),
            },
            CheckSource::Status {
                context,
                state,
                target_url,
            } => checks.push((
                format!("status:{context}"),
                context,
                state,
                target_url,
                None,
            )),
        }
        if checks.is_empty() {
            return Ok(());
        }
        let max = self.cfg.ci_log_excerpt_kib as usize * 1024;
        let mut failed = Vec::new();
        for (id, name, conclusion, details_url, job) in checks {
            let log = match job {
                Some(job) if max > 0 => match self.gh.job_log_tail(repo, job, max).await {
                    Ok(log) => log,
                    Err(e) => {
                        tracing::warn!(%repo, job, "cannot read a failed job's log: {}", error_chain(&e));
                        None
                    }
                },
                _ => None,
            };
            failed.push(crate::model::green::FailedCheck {
                id,
                name,
                conclusion,
                details_url,
                log,
            });
        }
        let item = ActivationItem::CiFailed {
            branch,
            task: Some(task.key.clone()),
            sha: sha.to_string(),
            round: 0,
            max_rounds: 0,
            checks: failed,
        };
        self.hand_over(d, project, task.epic.as_deref(), item).await
    }

    /// Hands a reaction to the manager, marking the delivery processed with it.
    async fn hand_over(
        &self,
        d: &DeliveryRow,
        project: &ProjectConfig,
        epic: Option<&str>,
        item: ActivationItem,
    ) -> Result<(), HandleError> {
        match crate::steer::react_marking(
            &self.store,
            project,
            epic,
            item,
            self.cfg.max_ci_fix_rounds,
            Some(d),
        )
        .await
        {
            Ok(_) | Err(StoreError::DeliveryProcessed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a comment command of `author`; returns the reply text still to queue, or None
    /// when the reply was queued with the command's change (its receipt: one transaction).
    #[allow(clippy::too_many_arguments)]
    async fn run_command(
        &self,
        d: &DeliveryRow,
        repo: &str,
        project: &ProjectConfig,
        (number, reactable): (u64, Option<(u64, bool)>),
        is_pull_request: bool,
        head_branch: Option<String>,
        author: &str,
        command: Command,
    ) -> Option<String> {
        let permission = match self.gh.permission(repo, author).await {
            Ok(p) => p,
            Err(e) => {
                return Some(format!(
                    "I could not check your permission on this repository ({e}), so I did nothing."
                ))
            }
        };
        if !matches!(permission.as_str(), "admin" | "write" | "maintain") {
            return Some("sorry, only people with write access to this repository can ask the swarm for things. Nothing was done.".to_string());
        }
        let who = format!("@{author} on GitHub");
        let reply_repo = repo.to_ascii_lowercase();
        // The reply, for the receipt of a change: queued in the change's transaction.
        let answer =
            |text: String| Some((reply_repo.clone(), reply_payload(number, author, &text)));
        Some(match command {
            Command::Retry(key) => {
                let said = |r: &Result<i32, SteerError>| match r {
                    Ok(generation) => format!("`{key}` runs again (generation {generation})."),
                    Err(e) => format!("cannot retry `{key}`: {e}."),
                };
                let receipt = Receipt::new(d, |r: &Result<i32, SteerError>| answer(said(r)));
                match crate::steer::retry_marking(&self.store, &project.name, &key, &who, Some(receipt)).await {
                    // Done or refused, in the transaction that answered; or done before.
                    Ok(_) | Err(SteerError::Refused { .. } | SteerError::Store(StoreError::DeliveryProcessed { .. })) => return None,
                    Err(e) => said(&Err(e)),
                }
            }
            Command::Stop(key) => {
                let said = |r: &Result<StopOutcome, SteerError>| match r {
                    Ok(StopOutcome::StopRequested) => format!("stopping `{key}`."),
                    Ok(_) => format!("`{key}` is cancelled before it ran."),
                    Err(e) => format!("cannot stop `{key}`: {e}."),
                };
                let receipt = Receipt::new(d, |r: &Result<StopOutcome, SteerError>| answer(said(r)));
                match crate::steer::stop_marking(&self.store, &project.name, &key, &who, Some(receipt)).await {
                    Ok(_) | Err(SteerError::Refused { .. } | SteerError::Store(StoreError::DeliveryProcessed { .. })) => return None,
                    Err(e) => said(&Err(e)),
                }
            }
            Command::Status => {
                let counts = self.store.counts_by_project().await.unwrap_or_default();
                let n = |st: TaskState| counts.iter().find(|(p, s, _)| p == &project.name && *s == st).map_or(0, |c| c.2);
                let c = crate::model::Counts { pending: n(TaskState::Pending) as u64, running: n(TaskState::Running) as u64, completed: n(TaskState::Completed) as u64, report_due: 0 };
                let tasks = self.store.list(&crate::store::TaskFilter { project: Some(project.name.clone()), limit: Some(20), ..Default::default() }).await.unwrap_or_default();
                let mut out = format!("{} pending, {} running, {} completed.\n\n| task | addressee | state |\n|---|---|---|\n", c.pending, c.running, c.completed);
                for t in tasks {
                    out.push_str(&format!("| `{}` | `{}` | {} |\n", t.key, t.addressee, describe_state(&t)));
                }
                out
            }
            Command::Request(text) => {
                if !is_pull_request {
                    return Some("requests work on pull requests of swarm tasks; on issues, use `/swarm status`, `/swarm retry KEY` or `/swarm stop KEY`.".into());
                }
                let branch = match head_branch {
                    Some(b) => b,
                    None => match self.gh.pull_head(repo, number).await {
                        Ok(b) => b,
                        Err(e) => return Some(format!("I could not read this pull request ({e}), so I did nothing.")),
                    },
                };
                let task = self.store.tasks_by_keys(&project.name, None).await.unwrap_or_default().into_iter().find(|t| t.branch == branch);
                let Some(task) = task else {
                    return Some(format!("`{branch}` is not the branch of a swarm task, so I leave this to people."));
                };
                let item = ActivationItem::Request { pull_request: number, branch, task: Some(task.key.clone()), author: author.to_string(), body: text };
                // Acknowledged with "eyes" on the comment where there is one: a reply would
                // add nothing.
                let receipt = Receipt::new(d, |_: &(String, bool)| match reactable {
                    Some((id, on_diff)) => Some((reply_repo.clone(), json!({"reaction": "eyes", "comment": id, "on_diff": on_diff}))),
                    None => answer("the project manager will look at this.".into()),
                });
                match crate::steer::activate_marking(&self.store, project, task.epic.as_deref(), item, Some(receipt)).await {
                    Ok(_) | Err(StoreError::DeliveryProcessed { .. }) => return None,
                    Err(e) => format!("cannot activate the project manager: {e}."),
                }
            }
            Command::Unknown(what) => format!("I do not know `/swarm {what}`. I understand `/swarm status`, `/swarm retry KEY`, `/swarm stop KEY`, and `{} <request>` on a swarm pull request.", self.cfg.mention),
        })
    }

    /// The repository of a project on GitHub, if it is there.
    pub fn repository(&self, project: &str) -> Option<String> {
        self.repo_of(project)
    }
}
