//! The JSON API under the dashboard (and the CLI's remote mode): projects, tasks, events,
//! logs, and the actions (epics, stop, retry, priority). Described by `schemas/openapi.json`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::WebState;
use crate::display::error_chain;
use crate::model::transition::StopOutcome;
use crate::model::TaskRow;
use crate::spec::TaskState;
use crate::steer::SteerError;
use crate::store::{FeedCursor, StoreError, TaskFilter};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/projects", get(projects))
        .route("/api/projects/{project}/epics", post(submit_epic))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{project}/{key}", get(task))
        .route("/api/tasks/{project}/{key}/log", get(log))
        .route(
            "/api/tasks/{project}/{key}/transcript",
            get(super::transcript::transcript),
        )
        .route("/api/tasks/{project}/{key}/stop", post(stop))
        .route("/api/tasks/{project}/{key}/retry", post(retry))
        .route("/api/tasks/{project}/{key}/priority", post(priority))
        .route("/api/errors", get(errors))
        .route("/api/stats", get(super::stats::stats))
        .route("/api/queues", get(super::stats::queues))
        .route("/api/pauses", get(super::stats::pauses))
        .route("/api/events", get(events))
}

/// An API error: a status and a message naming what was wrong.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error_chain(&e))
    }
}

impl From<SteerError> for ApiError {
    fn from(e: SteerError) -> Self {
        match e {
            SteerError::Store(e) => e.into(),
            refused @ SteerError::Refused { .. } => {
                ApiError(StatusCode::CONFLICT, refused.to_string())
            }
        }
    }
}

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| bad(format!("the request body: {}", e.body_text())))
}

#[derive(Serialize)]
pub struct ProjectView {
    name: String,
    repo: String,
    default_branch: String,
    synced_commit: Option<String>,
    synced_at: Option<chrono::DateTime<Utc>>,
    sync_error: Option<String>,
    pending: i64,
    running: i64,
    completed: i64,
    running_tasks: Vec<String>,
    plan_done: usize,
    plan_total: usize,
    epics: Vec<crate::model::EpicRow>,
    bad_files: usize,
}

/// `- [x]` and `- [ ]` items of a plan.
pub fn plan_progress(plan: &str) -> (usize, usize) {
    let mut done = 0;
    let mut total = 0;
    for line in plan.lines().map(str::trim_start) {
        let rest = line.strip_prefix("- ").or_else(|| line.strip_prefix("* "));
        match rest.map(|r| r.get(..3)) {
            Some(Some("[x]" | "[X]")) => {
                done += 1;
                total += 1;
            }
            Some(Some("[ ]")) => total += 1,
            _ => {}
        }
    }
    (done, total)
}

async fn projects(State(s): State<WebState>) -> ApiResult<Vec<ProjectView>> {
    let rows = s.store.projects().await?;
    let counts = s.store.counts_by_project().await?;
    let errors = s.store.spec_errors(None).await?;
    let running = s.store.running().await?;
    let mut out = Vec::new();
    for p in &s.config.projects {
        let row = rows.iter().find(|r| r.name == p.name);
        let count = |status: TaskState| {
            counts
                .iter()
                .find(|(pr, st, _)| pr == &p.name && *st == status)
                .map_or(0, |c| c.2)
        };
        let synced = row.and_then(|r| r.synced_commit.clone());
        let (plan_done, plan_total) = match &synced {
            Some(c) => {
                let cache = crate::gitops::cache_path(&s.config.data_dir, &p.name);
                let commit = c.clone();
                let text = tokio::task::spawn_blocking(move || {
                    crate::gitops::read_file(&cache, &commit, crate::spec::PLAN_FILE)
                })
                .await
                .ok()
                .flatten();
                text.map(|t| plan_progress(&String::from_utf8_lossy(&t)))
                    .unwrap_or((0, 0))
            }
            None => (0, 0),
        };
        out.push(ProjectView {
            name: p.name.clone(),
            repo: crate::config::redact_url(&p.repo),
            default_branch: p.default_branch.clone(),
            synced_commit: synced,
            synced_at: row.and_then(|r| r.synced_at),
            sync_error: row.and_then(|r| r.sync_error.clone()),
            pending: count(TaskState::Pending),
            running: count(TaskState::Running),
            completed: count(TaskState::Completed),
            running_tasks: running
                .iter()
                .filter(|t| t.project == p.name)
                .map(|t| t.key.clone())
                .collect(),
            plan_done,
            plan_total,
            epics: s.store.epics(Some(&p.name)).await?,
            bad_files: errors.iter().filter(|e| e.project == p.name).count(),
        });
    }
    Ok(Json(out))
}

#[derive(Serialize)]
pub struct TaskView {
    #[serde(flatten)]
    task: TaskRow,
    /// For a pending task: what it waits for.
    waiting: Option<String>,
}

/// What decides what pending tasks wait for, read once for many of them.
pub(super) struct WaitContext {
    pub now: chrono::DateTime<Utc>,
    /// Paused agent profiles and until when.
    pub pauses: Vec<(String, chrono::DateTime<Utc>, String)>,
    pub running: u64,
    pub max_running: u32,
    pub default_agent: String,
    /// Projects whose tasks may wait for required checks, and what each gate said last.
    pub gated_projects: std::collections::HashSet<String>,
    pub gates: std::collections::HashMap<i64, crate::store::Gate>,
}

impl WaitContext {
    pub(super) async fn read(s: &WebState) -> Result<Self, StoreError> {
        let now = Utc::now();
        Ok(Self {
            now,
            pauses: s.store.agent_pauses(now).await?,
            running: s.store.counts().await?.running,
            max_running: s.config.limits.max_running,
            default_agent: s.config.default_agent.clone(),
            gated_projects: s.config.gated_projects(),
            gates: s.store.pending_gates().await?,
        })
    }

    /// What the pending task `t` waits for, in words, given its `place` in its addressee's
    /// queue (1 runs next) and the task that runs for its addressee, if one does. The first
    /// that applies: a time it is held back to, its agent's pause, the running task, the tasks
    /// before it, the concurrency limit.
    pub(super) fn waiting(&self, t: &TaskRow, place: i64, behind: Option<&str>) -> Option<String> {
        if t.state() != TaskState::Pending {
            return None;
        }
        if let Some(nb) = t.not_before.filter(|nb| *nb > self.now) {
            return Some(format!(
                "waits until {} (a retry or a usage limit)",
                nb.format("%H:%M:%S UTC")
            ));
        }
        let agent = t.agent.as_deref().unwrap_or(&self.default_agent);
        if let Some((_, until, _)) = self.pauses.iter().find(|(a, _, _)| a == agent) {
            return Some(format!(
                "usage limit of agent {agent} until {}",
                until.format("%H:%M:%S UTC")
            ));
        }
        if let Some(b) = behind {
            return Some(format!("behind {b} (running for {})", t.addressee));
        }
        if place > 1 {
            return Some(format!("place {place} in the queue of {}", t.addressee));
        }
        if self.gated_projects.contains(&t.project) && crate::model::checks::requires_checks(t) {
            match self.gates.get(&t.id) {
                Some(g) if g.green => {}
                Some(g) => return Some(g.waits_for.clone()),
                None => return Some("required checks, not looked at yet".into()),
            }
        }
        if self.running as u32 >= self.max_running {
            return Some(format!("the concurrency limit ({} running)", self.running));
        }
        Some("next to run".into())
    }
}

/// What a pending task waits for, in words (see [`WaitContext::waiting`]).
pub(super) async fn waiting(s: &WebState, t: &TaskRow) -> Result<Option<String>, StoreError> {
    if t.state() != TaskState::Pending {
        return Ok(None);
    }
    let ctx = WaitContext::read(s).await?;
    let (place, behind) = s.store.queue_place(t).await?;
    Ok(ctx.waiting(t, place, behind.as_deref()))
}

#[derive(Deserialize)]
pub struct TaskQuery {
    project: Option<String>,
    status: Option<String>,
    addressee: Option<String>,
    epic: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

#[derive(Serialize)]
pub struct TaskPage {
    tasks: Vec<TaskView>,
    /// The offset of the next page, when there may be one.
    next_offset: Option<u32>,
}

async fn tasks(State(s): State<WebState>, Query(q): Query<TaskQuery>) -> ApiResult<TaskPage> {
    let status = match q.status.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(TaskState::parse(v).ok_or_else(|| {
            bad(format!(
                "status {v:?}: expected pending, running or completed"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let offset = q.offset.unwrap_or(0);
    let empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let filter = TaskFilter {
        project: empty(q.project),
        status,
        addressee: empty(q.addressee),
        epic: empty(q.epic),
        limit: Some(limit),
        offset: Some(offset),
    };
    let rows = s.store.list(&filter).await?;
    let next_offset = (rows.len() as u32 == limit).then_some(offset + limit);
    let mut tasks = Vec::with_capacity(rows.len());
    for t in rows {
        let w = waiting(&s, &t).await?;
        tasks.push(TaskView {
            task: t,
            waiting: w,
        });
    }
    Ok(Json(TaskPage { tasks, next_offset }))
}

pub(super) async fn find(s: &WebState, project: &str, key: &str) -> Result<TaskRow, ApiError> {
    s.store
        .task(project, key)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no task {project}/{key}")))
}

async fn task(
    State(s): State<WebState>,
    Path((project, key)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let t = find(&s, &project, &key).await?;
    let events = s.store.events(&project, &key).await?;
    let w = waiting(&s, &t).await?;
    let repo = s.config.project(&project).and_then(|p| p.github_repo());
    Ok(Json(
        json!({"task": t, "waiting": w, "events": events, "github": repo}),
    ))
}

async fn log(
    State(s): State<WebState>,
    Path((project, key)): Path<(String, String)>,
) -> Result<String, ApiError> {
    let t = find(&s, &project, &key).await?;
    if t.attempts == 0 {
        return Ok(String::new());
    }
    let Some(logs) = s.runtime_logs.get() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime is not up yet".into(),
        ));
    };
    let name = t.run_name();
    // Logs are agent output: redacted by the worker already, and shown as text.
    logs(name)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e))
}

fn who(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-swarm-user")
        .and_then(|v| v.to_str().ok())
        .map(|u| format!("{u} (dashboard)"))
        .unwrap_or_else(|| "the dashboard".into())
}

async fn stop(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    Path((project, key)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let outcome = crate::steer::stop(&s.store, &project, &key, &who(&headers)).await?;
    let was = match outcome {
        StopOutcome::StopRequested => TaskState::Running,
        _ => TaskState::Pending,
    };
    Ok(Json(
        json!({"was": was.as_str(), "stopping": was == TaskState::Running}),
    ))
}

async fn retry(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    Path((project, key)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let generation = crate::steer::retry(&s.store, &project, &key, &who(&headers)).await?;
    Ok(Json(json!({"generation": generation})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    priority: i64,
}

async fn priority(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    Path((project, key)): Path<(String, String)>,
    b: Result<Json<PriorityBody>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let b = body(b)?;
    let p = crate::spec::Priority::new(b.priority).map_err(bad)?;
    crate::steer::set_priority(&s.store, &project, &key, p.get(), &who(&headers)).await?;
    Ok(Json(json!({"priority": p.get()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpicBody {
    text: String,
    #[serde(default)]
    name: Option<String>,
}

async fn submit_epic(
    State(s): State<WebState>,
    Path(project): Path<String>,
    b: Result<Json<EpicBody>, JsonRejection>,
) -> Result<(StatusCode, Json<crate::epic::SubmittedEpic>), ApiError> {
    let b = body(b)?;
    if b.text.trim().is_empty() {
        return Err(bad("text: an epic needs a description"));
    }
    let name = b.name.filter(|n| !n.trim().is_empty());
    match crate::epic::submit(&s.config, &project, &b.text, name.as_deref(), &s.git_auth).await {
        Ok(e) => Ok((StatusCode::CREATED, Json(e))),
        Err(e @ crate::epic::EpicError::NoProject(_)) => {
            Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ (crate::epic::EpicError::Text(_) | crate::epic::EpicError::Name { .. })) => {
            Err(bad(e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::BAD_GATEWAY, error_chain(&e))),
    }
}

async fn errors(State(s): State<WebState>) -> ApiResult<Vec<crate::store::SpecErrorRow>> {
    Ok(Json(s.store.spec_errors(None).await?))
}

async fn events(
    State(s): State<WebState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.events.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(data) => Some((Ok(SseEvent::default().event("task").data(data)), rx)),
            // The client fell behind: it reloads what it shows.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Some((Ok(SseEvent::default().event("resync").data("{}")), rx))
            }
            Err(_) => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Publishes task changes to the dashboard's event stream, until `shutdown`. It follows the
/// store's change feed (a transaction that commits late is still seen), and reads it only
/// while a page listens: an idle engine stays idle.
pub async fn publish_changes(s: WebState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut cursor: Option<FeedCursor> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
        if s.events.receiver_count() == 0 {
            // Nobody watches: a page that connects loads what is there, then follows from here.
            cursor = None;
            continue;
        }
        let from = match cursor {
            Some(c) => c,
            None => match s.store.feed_head().await {
                Ok(c) => {
                    cursor = Some(c);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("cannot read task changes for the dashboard: {e}");
                    continue;
                }
            },
        };
        match publish_after(&s, from).await {
            Ok(next) => cursor = Some(next),
            Err(e) => tracing::warn!("cannot read task changes for the dashboard: {e}"),
        }
    }
}

/// Sends the tasks with events after `cursor` to the event stream; returns the cursor past them.
async fn publish_after(s: &WebState, cursor: FeedCursor) -> Result<FeedCursor, StoreError> {
    let (events, next) = s.store.feed_after(cursor, 5000).await?;
    let mut ids: Vec<i64> = events.iter().filter_map(|e| e.task_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = s.store.tasks_by_ids(&ids).await?;
    for t in rows {
        let _ = s.events.send(
            json!({"project": t.project, "key": t.key, "status": t.status, "generation": t.generation})
                .to_string(),
        );
    }
    // A task that is gone (its file was deleted) is sent as gone.
    for e in events
        .iter()
        .filter(|e| e.kind == crate::model::EventKind::Removed)
    {
        let _ = s.events.send(
            json!({"project": e.project, "key": e.key, "status": "removed", "generation": e.generation})
                .to_string(),
        );
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(agent: Option<&str>) -> TaskRow {
        let yaml = match agent {
            Some(a) => format!("addressee: w\nprompt: p\nagent: {a}\n"),
            None => "addressee: w\nprompt: p\n".to_string(),
        };
        let spec = crate::spec::parse_task(yaml.as_bytes()).unwrap();
        crate::model::NewTask::from_spec(&crate::spec::TaskKey::new("t").unwrap(), &spec).into_row(
            "web",
            crate::model::Origin::File,
            Some("abc"),
            Utc::now(),
        )
    }

    #[test]
    fn a_pending_task_waits_for_the_first_reason_that_applies() {
        let now = Utc::now();
        let mut ctx = WaitContext {
            now,
            pauses: vec![(
                "claude".into(),
                now + chrono::Duration::hours(1),
                "limit".into(),
            )],
            running: 8,
            max_running: 8,
            default_agent: "sh".into(),
            gated_projects: Default::default(),
            gates: Default::default(),
        };
        let mut t = pending(Some("claude"));
        t.not_before = Some(now + chrono::Duration::minutes(5));
        let w =
            |ctx: &WaitContext, t: &TaskRow, place, behind| ctx.waiting(t, place, behind).unwrap();
        assert!(w(&ctx, &t, 2, Some("a")).starts_with("waits until"));
        t.not_before = Some(now - chrono::Duration::minutes(5));
        assert!(w(&ctx, &t, 2, Some("a")).starts_with("usage limit of agent claude until"));
        let t = pending(None);
        assert_eq!(w(&ctx, &t, 2, Some("a")), "behind a (running for w)");
        assert_eq!(w(&ctx, &t, 2, None), "place 2 in the queue of w");
        assert_eq!(w(&ctx, &t, 1, None), "the concurrency limit (8 running)");
        ctx.running = 7;
        assert_eq!(w(&ctx, &t, 1, None), "next to run");
        ctx.pauses[0].0 = "sh".into();
        assert!(
            w(&ctx, &t, 1, None).starts_with("usage limit of agent sh"),
            "a task without agent has the default one"
        );
    }

    #[test]
    fn a_merge_waits_for_its_required_checks_only_in_a_project_on_github() {
        let now = Utc::now();
        let mut ctx = WaitContext {
            now,
            pauses: vec![],
            running: 0,
            max_running: 8,
            default_agent: "sh".into(),
            gated_projects: Default::default(),
            gates: Default::default(),
        };
        let mut t = pending(None);
        t.kind = Some("merge".into());
        let w = |ctx: &WaitContext, t: &TaskRow| ctx.waiting(t, 1, None).unwrap();
        assert_eq!(w(&ctx, &t), "next to run", "not on GitHub: no gate");
        ctx.gated_projects.insert("web".into());
        assert_eq!(w(&ctx, &t), "required checks, not looked at yet");
        let gate = |green: bool, text: &str| crate::store::Gate {
            generation: t.generation,
            green,
            waits_for: text.into(),
            checked_at: now,
        };
        ctx.gates
            .insert(t.id, gate(false, "required checks: `swarm/a`: ci pending"));
        assert_eq!(w(&ctx, &t), "required checks: `swarm/a`: ci pending");
        assert_eq!(
            ctx.waiting(&t, 2, None).unwrap(),
            "place 2 in the queue of w",
            "the queue first"
        );
        ctx.gates.insert(t.id, gate(true, ""));
        assert_eq!(w(&ctx, &t), "next to run");
        let mut plain = pending(None);
        plain.id = t.id + 1;
        ctx.gates.clear();
        assert_eq!(
            w(&ctx, &plain),
            "next to run",
            "an implementation waits for no checks"
        );
    }
}
