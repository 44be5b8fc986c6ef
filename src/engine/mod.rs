//! The reconcile loop: sync repositories into the store, claim what may run, launch it on the
//! runtime, turn run ends into results, report them back as commits. Level-triggered: every
//! pass looks at the store afresh, so a missed wake-up costs latency, never correctness.

pub mod green;
pub mod leader;
mod outcome;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Notify};

pub use outcome::{decide, Outcome, RetryPolicy};

use crate::config::{AgentProfile, Config, ProjectConfig};
use crate::runtime::{run_name, Completion, Launch, LocalRuntime, Runtime};
use crate::spec::{ErrorClass, RunResult, TaskState};
use crate::store::{ClaimLimits, EpicCount, NewEvent, Store, StoreError, TaskRow};
use crate::web::Metrics;
use crate::worker::prompts::Role;
use crate::worker::WorkerTask;

/// How often the engine looks at the store without being woken (a backstop, not the mechanism).
const BACKSTOP: Duration = Duration::from_secs(30);
/// How often an engine on SQLite looks for commits by other processes (Postgres notifies).
const SQLITE_CHANGE_POLL: Duration = Duration::from_secs(2);
/// With `--once`: how many failed report passes end the run with an error.
const ONCE_REPORT_TRIES: u32 = 5;
/// Most tasks claimed in one statement.
const CLAIM_BATCH: u32 = 512;
/// Longest a launched run waits for its `launched` event to be logged.
const LAUNCH_LOG_DELAY: Duration = Duration::from_millis(200);
/// Most run ends recorded in one transaction.
const COMPLETION_BATCH: usize = 512;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once nothing is pending, running or waiting to be reported.
    pub once: bool,
}

/// The engine. Holds the config, the store and the runtime.
pub struct Engine<R: Runtime = LocalRuntime> {
    config: Arc<Config>,
    store: Store,
    runtime: R,
    completions: mpsc::UnboundedReceiver<Completion>,
    report_wake: Arc<Notify>,
    /// Consecutive failed report passes.
    report_failures: Arc<AtomicU32>,
    sync_triggers: HashMap<String, Arc<Notify>>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    /// `launched` events not yet logged, and when the first of them was launched.
    launched: Vec<NewEvent>,
    first_unlogged: Option<std::time::Instant>,
}

impl Engine<LocalRuntime> {
    /// An engine on the local runtime; `worker_exe` is the binary it starts as `swarm worker`.
    pub fn new(config: Config, store: Store, worker_exe: std::path::PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = LocalRuntime::new(config.data_dir.join("runs"), worker_exe, tx);
        Engine::with_runtime(config, store, runtime, rx)
    }
}

impl<R: Runtime> Engine<R> {
    /// An engine on `runtime`, whose run ends arrive on `completions`.
    pub fn with_runtime(
        config: Config,
        store: Store,
        runtime: R,
        completions: mpsc::UnboundedReceiver<Completion>,
    ) -> Self {
        let rx = completions;
        let sync_triggers = config
            .projects
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Notify::new())))
            .collect();
        let policy = RetryPolicy {
            max_infra_retries: config.max_infra_retries,
            backoff: config.retry_backoff,
        };
        Self {
            config: Arc::new(config),
            store,
            runtime,
            completions: rx,
            report_wake: Arc::new(Notify::new()),
            report_failures: Arc::default(),
            sync_triggers,
            policy,
            metrics: Arc::default(),
            launched: Vec::new(),
            first_unlogged: None,
        }
    }

    /// Records into `metrics` (shared with the HTTP server) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The engine's metrics, for the HTTP server.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The handles that make each project sync at once (webhooks, file watches).
    pub fn sync_triggers(&self) -> HashMap<String, Arc<Notify>> {
        self.sync_triggers.clone()
    }

    /// A handle that makes a project sync at once (webhooks, file watches).
    pub fn sync_trigger(&self, project: &str) -> Option<Arc<Notify>> {
        self.sync_triggers.get(project).cloned()
    }

    /// Runs until `shutdown` turns true (or, with `once`, until all work is done).
    pub async fn run(
        mut self,
        options: RunOptions,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.config.data_dir)?;
        self.adopt().await?;

        // One sync loop per project; in `once` mode the first pass of each happens before dispatch.
        if options.once {
            for p in &self.config.projects {
                sync_once(&self.store, &self.config, p, &self.metrics).await;
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for p in self.config.projects.clone() {
            let (store, config, trigger, wake) = (
                self.store.clone(),
                self.config.clone(),
                self.sync_triggers[&p.name].clone(),
                shutdown.clone(),
            );
            tasks.spawn(sync_loop(
                store,
                config,
                p,
                trigger,
                wake,
                options.once,
                self.metrics.clone(),
            ));
        }
        let _watcher = self.watch_local_repos(&mut tasks);
        if self.store.is_postgres() {
            let store = self.store.clone();
            tasks.spawn(async move {
                loop {
                    if let Err(e) = store.listen().await {
                        tracing::warn!("LISTEN on Postgres failed, polling until it is back: {e}");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        {
            let (store, config, wake, stop) = (
                self.store.clone(),
                self.config.clone(),
                self.report_wake.clone(),
                shutdown.clone(),
            );
            tasks.spawn(report_loop(
                store,
                config,
                wake,
                self.report_failures.clone(),
                stop,
            ));
        }

        if !self.store.is_postgres() {
            let store = self.store.clone();
            // The baseline, before anything else can write.
            let _ = store.changed_elsewhere().await;
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(SQLITE_CHANGE_POLL).await;
                    match store.changed_elsewhere().await {
                        Ok(true) => store.wake_handle().notify_one(),
                        Ok(false) => {}
                        Err(e) => tracing::debug!("{e}"),
                    }
                }
            });
        }

        let wake = self.store.wake_handle();
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::error!("reconcile pass failed: {e}");
            }
            if options.once && self.done().await {
                if self.report_failures.load(Ordering::SeqCst) >= ONCE_REPORT_TRIES {
                    anyhow::bail!("all tasks finished, but their status files could not be committed (see the log above)");
                }
                // Let the reporter finish anything it holds.
                self.report_wake.notify_one();
                if self
                    .store
                    .counts()
                    .await
                    .map(|c| c.report_due == 0)
                    .unwrap_or(false)
                {
                    break;
                }
            }
            // Woken by changes (run ends, syncs, NOTIFY, the SQLite poll) and by time: the
            // next retry or pause end, or the backstop. An idle engine does nothing between.
            let mut idle = self.until_due().await;
            if options.once {
                // Also waiting for the reporter, which wakes nobody when it is done.
                idle = idle.min(Duration::from_millis(500));
            }
            tokio::select! {
                Some(c) = self.completions.recv() => {
                    let mut batch = vec![c];
                    self.drain_completions(&mut batch);
                    self.complete_all(batch).await;
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
            }
            // Record whatever else finished meanwhile before the next pass.
            let mut batch = Vec::new();
            self.drain_completions(&mut batch);
            self.complete_all(batch).await;
        }
        tasks.abort_all();
        Ok(())
    }

    /// How long the loop may sleep when nothing wakes it.
    async fn until_due(&self) -> Duration {
        let now = Utc::now();
        match self.store.next_due(now).await {
            Ok(Some(due)) => (due - now)
                .to_std()
                .unwrap_or_default()
                .clamp(Duration::from_millis(10), BACKSTOP),
            Ok(None) => BACKSTOP,
            // The store is failing: come back soon.
            Err(_) => Duration::from_secs(2),
        }
    }

    /// Moves run ends that have arrived into `batch`, up to a transaction's worth.
    fn drain_completions(&mut self, batch: &mut Vec<Completion>) {
        while batch.len() < COMPLETION_BATCH {
            match self.completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
    }

    async fn done(&self) -> bool {
        match self.store.counts().await {
            Ok(c) => c.pending == 0 && c.running == 0,
            Err(_) => false,
        }
    }

    /// One level-triggered pass: stop what was asked to stop, claim and launch what may run.
    pub async fn reconcile(&mut self) -> Result<(), StoreError> {
        let mut batch = Vec::new();
        self.drain_completions(&mut batch);
        self.complete_all(batch).await;
        // The light view of what runs: a busy engine makes this pass after every batch of
        // run ends, and whole rows only matter for the rare run nobody watches.
        let mut unwatched = Vec::new();
        for run in self.store.running_runs().await? {
            let name = run_name(&run.project, &run.key, run.generation, run.attempts);
            if !self.runtime.is_tracked(&name) {
                unwatched.push(run.id);
                continue;
            }
            if run.cancel_requested {
                tracing::info!(project = %run.project, task = %run.key, "stopping");
                self.runtime.stop(&name).await;
            }
        }
        if !unwatched.is_empty() {
            for row in self.store.running_by_ids(&unwatched).await? {
                // Running in the store but watched by nobody: its end was not recorded (the
                // store failed at that moment). Launching is idempotent: the runtime adopts
                // it, or completes it again from its result.
                let name = run_name(&row.project, &row.key, row.generation, row.attempts);
                tracing::info!(project = %row.project, task = %row.key, run = %name, "watching a run again");
                let launched = self.launched_before(&row, &name).await;
                self.launch_run(row, launched).await;
            }
        }
        let mut limits = self.claim_limits();
        limits.paused_agents = self
            .store
            .agent_pauses(Utc::now())
            .await?
            .into_iter()
            .map(|(a, _, _)| a)
            .collect();
        loop {
            let claimed = self.store.claim(&limits, Utc::now()).await?;
            let n = claimed.len() as u32;
            for row in claimed {
                self.launch(row).await;
            }
            self.log_launches().await;
            if n < limits.batch {
                break;
            }
        }
        Ok(())
    }

    fn claim_limits(&self) -> ClaimLimits {
        ClaimLimits {
            max_running: self.config.limits.max_running,
            max_running_per_project: self.config.limits.max_running_per_project,
            per_project_overrides: self
                .config
                .projects
                .iter()
                .filter_map(|p| p.max_running.map(|m| (p.name.clone(), m)))
                .collect(),
            batch: CLAIM_BATCH,
            paused_agents: Default::default(),
            default_agent: self.config.default_agent.clone(),
        }
    }

    async fn launch(&mut self, row: TaskRow) {
        self.launch_run(row, false).await
    }

    /// Launches the current run of `row`; `adopt_only` for a run launched before (see
    /// [`Launch::adopt_only`]).
    async fn launch_run(&mut self, row: TaskRow, adopt_only: bool) {
        let name = run_name(&row.project, &row.key, row.generation, row.attempts);
        let launch = match self.launch_for(&row, &name) {
            Ok(l) => Launch { adopt_only, ..l },
            Err(result) => {
                self.complete(Completion {
                    task_id: row.id,
                    attempt: row.attempts,
                    run_name: name,
                    result,
                })
                .await;
                return;
            }
        };
        tracing::info!(project = %row.project, task = %row.key, run = %name, "launching");
        let waited = (Utc::now() - row.updated_at).to_std().unwrap_or_default();
        self.metrics.dispatch_latency.observe(waited.as_secs_f64());
        if let Err(e) = self.runtime.launch(launch).await {
            let result = RunResult::failure(ErrorClass::Infrastructure, error_chain(&e));
            self.complete(Completion {
                task_id: row.id,
                attempt: row.attempts,
                run_name: name,
                result,
            })
            .await;
            return;
        }
        // Logged with the rest of the claim batch, in one statement (see `log_launches`); but
        // where launches are slow (a rate-limited Kubernetes API), no later than
        // LAUNCH_LOG_DELAY after the first, so a restart finds a run's event and adopts it
        // instead of creating it again.
        self.launched.push(NewEvent {
            project: row.project,
            key: row.key,
            generation: row.generation,
            kind: "launched".into(),
            message: format!("run {name} started"),
        });
        let first = *self
            .first_unlogged
            .get_or_insert_with(std::time::Instant::now);
        if first.elapsed() >= LAUNCH_LOG_DELAY {
            self.log_launches().await;
        }
    }

    /// Logs the `launched` events of the runs started since the last call.
    async fn log_launches(&mut self) {
        self.first_unlogged = None;
        let events = std::mem::take(&mut self.launched);
        if let Err(e) = self.store.log_events(&events, Utc::now()).await {
            tracing::warn!("cannot log the launch of {} runs: {e}", events.len());
        }
    }

    /// Builds the job for a claimed task, or the failure that stops it from being one.
    fn launch_for(&self, row: &TaskRow, name: &str) -> Result<Launch, RunResult> {
        let project = self.config.project(&row.project).ok_or_else(|| {
            RunResult::failure(
                ErrorClass::Infrastructure,
                format!("project {} is no longer configured", row.project),
            )
        })?;
        let agent_name = row
            .agent
            .clone()
            .unwrap_or_else(|| self.config.default_agent.clone());
        let agent = self.agent_profile(&agent_name).ok_or_else(|| {
            RunResult::failure(
                ErrorClass::MissingCli,
                format!("no agent profile named {agent_name:?} in the engine's config"),
            )
        })?;
        let timeout = row
            .timeout_secs
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(self.config.default_timeout);
        let task = WorkerTask {
            project: row.project.clone(),
            key: row.key.clone(),
            generation: row.generation,
            attempt: row.attempts,
            run_name: name.to_string(),
            repo: project.repo.clone(),
            branch: effective_branch(row, &project.default_branch),
            base: row
                .base
                .clone()
                .unwrap_or_else(|| project.default_branch.clone()),
            kind: row.kind.clone(),
            prompt: match &row.context {
                Some(items) if !items.0.is_empty() => {
                    format!("{}\n\n{}", row.prompt.trim_end(), green::render(&items.0))
                }
                _ => row.prompt.clone(),
            },
            agent_name,
            agent,
            git_name: self.config.git.name.clone(),
            git_email: self.config.git.email.clone(),
        };
        let deadline =
            Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::hours(1));
        Ok(Launch {
            adopt_only: false,
            task_id: row.id,
            attempt: row.attempts,
            run_name: name.to_string(),
            deadline,
            task,
        })
    }

    fn agent_profile(&self, name: &str) -> Option<AgentProfile> {
        self.config.agent(name)
    }

    /// Records a run's end according to the retry policy.
    async fn complete(&mut self, c: Completion) {
        self.complete_all(vec![c]).await
    }

    /// Records the ends of runs, in one store transaction: when many runs end at once (a
    /// busy engine, or runs found finished after a restart), one commit carries them all.
    async fn complete_all(&mut self, mut batch: Vec<Completion>) {
        // A run reported twice in one batch is finished once.
        let mut seen = HashSet::new();
        batch.retain(|c| seen.insert((c.task_id, c.attempt)));
        if batch.is_empty() {
            return;
        }
        let ids: Vec<i64> = batch.iter().map(|c| c.task_id).collect();
        let rows: HashMap<i64, TaskRow> = match self.store.running_by_ids(&ids).await {
            Ok(rows) => rows.into_iter().map(|r| (r.id, r)).collect(),
            Err(e) => {
                for c in &batch {
                    tracing::error!("cannot read the task of run {}: {e}", c.run_name);
                }
                return;
            }
        };
        let mut finishing = Vec::with_capacity(batch.len());
        for c in batch {
            let Some(row) = rows.get(&c.task_id).filter(|r| r.attempts == c.attempt) else {
                tracing::debug!(run = %c.run_name, "run ended for a task that moved on");
                continue;
            };
            let outcome = decide(row, c.result, &self.policy, Utc::now());
            self.metrics.run_finished(match &outcome {
                Outcome::Completed(r) if r.success => "succeeded",
                Outcome::Completed(r) => r.error_class.map_or("failed", ErrorClass::as_str),
                Outcome::Retry { .. } => "retried",
                Outcome::Requeue { .. } => "rate_limited",
                Outcome::NextGeneration(_) => "superseded",
                Outcome::Deleted(_) => "deleted",
            });
            if let Outcome::Requeue { not_before, .. } = &outcome {
                self.pause_agent_of(row, *not_before).await;
            }
            let (kind, message) = outcome.describe(c.attempt);
            tracing::info!(project = %row.project, task = %row.key, run = %c.run_name, "{kind}: {message}");
            finishing.push((row, c.attempt, outcome, c.run_name));
        }
        let runs: Vec<(i64, i32, &Outcome)> = finishing
            .iter()
            .map(|(row, attempt, outcome, _)| (row.id, *attempt, outcome))
            .collect();
        let recorded = match self.store.finish_runs(&runs, Utc::now()).await {
            // One run that cannot be recorded must not hold up the others of its batch: on a
            // failed batch, each is tried alone (a store that is down fails them all, as before).
            Err(_) if runs.len() > 1 => {
                let mut each = Vec::with_capacity(runs.len());
                for run in &runs {
                    match self
                        .store
                        .finish_runs(std::slice::from_ref(run), Utc::now())
                        .await
                    {
                        Ok(f) => each.push(f[0]),
                        Err(e) => {
                            tracing::error!(task_id = run.0, "cannot record the result: {e}");
                            each.push(false);
                        }
                    }
                }
                Ok(each)
            }
            other => other,
        };
        match recorded {
            Ok(finished) => {
                if finished.contains(&true) {
                    self.report_wake.notify_one();
                }
                for ((row, _, outcome, _), done) in finishing.iter().zip(finished) {
                    if !done {
                        continue;
                    }
                    if let Err(e) = self.after_run(row, outcome).await {
                        tracing::error!(project = %row.project, task = %row.key, "cannot update the project manager's state: {e}");
                    }
                }
            }
            Err(e) => {
                for (_, _, _, run_name) in &finishing {
                    tracing::error!(run = %run_name, "cannot record the result: {e}");
                }
            }
        }
    }

    /// A rate or usage limit belongs to the credential, so every run of the agent waits.
    async fn pause_agent_of(&self, row: &TaskRow, not_before: DateTime<Utc>) {
        let agent = row
            .agent
            .clone()
            .unwrap_or_else(|| self.config.default_agent.clone());
        let reason = format!("rate or usage limit hit by {}/{}", row.project, row.key);
        match self
            .store
            .pause_agent(&agent, not_before, &reason, Utc::now())
            .await
        {
            Ok(()) => {
                tracing::warn!(agent = %agent, until = %not_before.to_rfc3339(), "dispatch paused: {reason}");
                let _ = self
                    .store
                    .log_event(
                        &row.project,
                        &row.key,
                        row.generation,
                        "agent_paused",
                        &format!(
                            "dispatch of agent {agent} paused until {}",
                            not_before.to_rfc3339()
                        ),
                        Utc::now(),
                    )
                    .await;
            }
            Err(e) => tracing::error!("cannot pause agent {agent}: {e}"),
        }
    }

    /// The green layer's part of a finished run: count it against its epic, read the
    /// manager's verdict, activate the manager with the result, and end the epic when a hard
    /// cap is hit.
    async fn after_run(&self, row: &TaskRow, outcome: &Outcome) -> Result<(), StoreError> {
        let now = Utc::now();
        let Some(epic_name) = row.epic.clone() else {
            return Ok(());
        };
        let Some(project) = self.config.project(&row.project) else {
            return Ok(());
        };
        let result = match outcome {
            Outcome::Completed(r)
            | Outcome::Retry { result: r, .. }
            | Outcome::Requeue { result: r, .. }
            | Outcome::NextGeneration(r)
            | Outcome::Deleted(r) => r,
        };
        let manager = Role::of_kind(row.kind.as_deref()) == Role::Manager;
        let final_result = matches!(outcome, Outcome::Completed(_));
        let count = match (manager, final_result, result.success) {
            (true, true, _) => EpicCount::ManagerRan,
            (false, true, true) => EpicCount::WorkerSucceeded,
            (false, true, false) if result.error_class != Some(ErrorClass::Cancelled) => {
                EpicCount::WorkerFailed
            }
            _ => EpicCount::CostOnly,
        };
        self.store
            .count_for_epic(
                &row.project,
                &epic_name,
                result.cost_usd.unwrap_or(0.0),
                count,
                now,
            )
            .await?;
        let Some(epic) = self.store.epic(&row.project, &epic_name).await? else {
            return Ok(());
        };
        if !epic.is_active() || !final_result {
            return Ok(());
        }
        if manager {
            match result.summary.as_deref().and_then(green::epic_marker) {
                Some(green::EpicMarker::Complete) if result.success => {
                    self.end_epic(&row.project, &epic_name, None, &row.key)
                        .await?;
                    return Ok(());
                }
                Some(green::EpicMarker::Failed(reason)) => {
                    self.end_epic(
                        &row.project,
                        &epic_name,
                        Some(&format!("the project manager gave up: {reason}")),
                        &row.key,
                    )
                    .await?;
                    return Ok(());
                }
                _ => {}
            }
        }
        if let Some(reason) = green::cap_hit(&epic.counters(), &self.config.epics) {
            self.end_epic(&row.project, &epic_name, Some(&reason), &row.key)
                .await?;
            return Ok(());
        }
        if result.error_class == Some(ErrorClass::Cancelled) {
            // A person (or a deleted file) stopped it: that is a decision, not a result to react to.
            return Ok(());
        }
        let item = match (manager, result.success) {
            // A manager that succeeded waits for the results of the tasks it created.
            (true, true) => return Ok(()),
            (true, false) => green::ActivationItem::ManagerFailed {
                key: row.key.clone(),
                error: result
                    .error
                    .clone()
                    .unwrap_or_else(|| "the run failed".into()),
            },
            (false, _) => green::ActivationItem::result(&row.key, Some(&epic_name), result),
        };
        let (key, created) = self
            .store
            .enqueue_activation(
                &row.project,
                Some(&epic_name),
                &project.default_branch,
                item,
                now,
            )
            .await?;
        tracing::info!(project = %row.project, epic = %epic_name, activation = %key, "project manager {}", if created { "activated" } else { "activation extended" });
        Ok(())
    }

    async fn end_epic(
        &self,
        project: &str,
        epic: &str,
        failed: Option<&str>,
        by: &str,
    ) -> Result<(), StoreError> {
        end_epic(&self.store, project, epic, failed, by).await
    }

    /// After a restart: every task the store says is running is launched again, which the
    /// runtime turns into an adoption (still alive), a completion (it left a result), a
    /// fail-over (it died without one) or the first start (it was claimed, never started).
    async fn adopt(&mut self) -> Result<(), StoreError> {
        for row in self.store.running().await? {
            let name = run_name(&row.project, &row.key, row.generation, row.attempts);
            if self.runtime.is_tracked(&name) {
                continue;
            }
            tracing::info!(project = %row.project, task = %row.key, run = %name, "taking over a run of an earlier engine");
            let _ = self
                .store
                .log_event(
                    &row.project,
                    &row.key,
                    row.generation,
                    "adopted",
                    &format!("run {name} taken over after an engine restart"),
                    Utc::now(),
                )
                .await;
            let launched = self.launched_before(&row, &name).await;
            self.launch_run(row, launched).await;
        }
        self.log_launches().await;
        Ok(())
    }

    /// Whether the event log says this run was started (so it must be adopted, not restarted).
    async fn launched_before(&self, row: &TaskRow, name: &str) -> bool {
        self.store
            .has_event(&row.project, &row.key, "launched", name)
            .await
            .unwrap_or(true)
    }

    fn watch_local_repos(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Option<notify::RecommendedWatcher> {
        let repos: Vec<(String, std::path::PathBuf)> = self
            .config
            .projects
            .iter()
            .filter_map(|p| crate::sync::watch::local_git_dir(&p.repo).map(|d| (p.name.clone(), d)))
            .collect();
        if repos.is_empty() {
            return None;
        }
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let watcher = match crate::sync::watch::watch_refs(&repos, tx) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch local repositories, polling only: {e}");
                return None;
            }
        };
        let triggers = self.sync_triggers.clone();
        tasks.spawn(async move {
            while let Some(project) = rx.recv().await {
                if let Some(t) = triggers.get(&project) {
                    t.notify_one();
                }
            }
        });
        Some(watcher)
    }
}

/// Ends an epic (complete, or failed with the reason) and records it for people.
async fn end_epic(
    store: &Store,
    project: &str,
    epic: &str,
    failed: Option<&str>,
    by: &str,
) -> Result<(), StoreError> {
    if store.finish_epic(project, epic, failed, Utc::now()).await? {
        match failed {
            Some(reason) => tracing::warn!(project, epic, "epic failed: {reason}"),
            None => tracing::info!(project, epic, "epic complete"),
        }
        let message = match failed {
            Some(reason) => format!("epic {epic} failed: {reason}"),
            None => format!("epic {epic} complete"),
        };
        let kind = if failed.is_some() {
            "epic_failed"
        } else {
            "epic_complete"
        };
        store
            .log_event(project, by, 0, kind, &message, Utc::now())
            .await?;
    }
    Ok(())
}

/// After a sync: a person's edits of the plan activate the manager (once, with all of them),
/// and an epic whose manager created more tasks than its cap allows fails.
async fn after_sync(
    store: &Store,
    config: &Config,
    project: &ProjectConfig,
    report: &crate::sync::SyncReport,
) -> Result<(), StoreError> {
    let epics = store.epics(Some(&project.name)).await?;
    for e in epics.iter().filter(|e| e.is_active()) {
        if let Some(reason) = green::cap_hit(&e.counters(), &config.epics) {
            end_epic(store, &project.name, &e.name, Some(&reason), &e.name).await?;
        }
    }
    if report.plan_edits.is_empty() {
        return Ok(());
    }
    // The plan belongs to the project; its newest active epic is the one being steered.
    let epic = store
        .epics(Some(&project.name))
        .await?
        .into_iter()
        .filter(|e| e.is_active())
        .max_by_key(|e| e.created_at)
        .map(|e| e.name);
    for edit in &report.plan_edits {
        let item = green::ActivationItem::PlanEdit {
            commit: edit.id[..edit.id.len().min(10)].to_string(),
            author: edit.author.clone(),
            message: edit.message.lines().next().unwrap_or("").to_string(),
            diff: edit.diff.clone(),
        };
        let (key, created) = store
            .enqueue_activation(
                &project.name,
                epic.as_deref(),
                &project.default_branch,
                item,
                Utc::now(),
            )
            .await?;
        tracing::info!(project = %project.name, activation = %key, "plan edited by {}: project manager {}", edit.author, if created { "activated" } else { "activation extended" });
    }
    Ok(())
}

async fn sync_once(
    store: &Store,
    config: &Config,
    project: &ProjectConfig,
    metrics: &Metrics,
) -> bool {
    match crate::sync::sync_project(store, &config.data_dir, project).await {
        Ok(report) => {
            if let Err(e) = after_sync(store, config, project, &report).await {
                tracing::error!(project = %project.name, "cannot act on the sync: {e}");
            }
            if report.changed_files > 0 {
                tracing::info!(project = %project.name, commit = %crate::store::short(&report.commit),
                    files = report.changed_files, changes = report.actions, bad_files = report.bad_files, "synced");
            }
            true
        }
        Err(e) => {
            let message = error_chain(&e);
            tracing::warn!(project = %project.name, "{message}");
            metrics.sync_failed(&project.name);
            let _ = store
                .record_sync_error(&project.name, &message, Utc::now())
                .await;
            false
        }
    }
}

/// Syncs a project every poll interval and whenever triggered; after failures, backs off
/// exponentially up to ten poll intervals.
async fn sync_loop(
    store: Store,
    config: Arc<Config>,
    project: ProjectConfig,
    trigger: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    skip_first: bool,
    metrics: Arc<Metrics>,
) {
    let poll = config.poll_interval_for(&project);
    let mut failures = 0u32;
    let mut first = !skip_first;
    loop {
        if !first {
            let wait = if failures == 0 {
                poll
            } else {
                (poll / 4)
                    .saturating_mul(1 << failures.min(5))
                    .min(poll * 10)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = trigger.notified() => {
                    // Coalesce a burst of ref changes into one sync.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = shutdown.changed() => return,
            }
        }
        first = false;
        if sync_once(&store, &config, &project, &metrics).await {
            failures = 0;
        } else {
            failures += 1;
        }
    }
}

/// Commits status files whenever runs finish (batched: everything due at that moment goes in
/// one commit per project), and retries failed reports with backoff.
async fn report_loop(
    store: Store,
    config: Arc<Config>,
    wake: Arc<Notify>,
    failing: Arc<AtomicU32>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1 << failures.min(6))
        };
        tokio::select! {
            _ = wake.notified() => {
                // Let finishing runs pile up a little, so one commit carries several.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let mut failed = false;
        for p in &config.projects {
            match report::report_project(&store, &config, p).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(project = %p.name, tasks = n, "status files committed"),
                Err(e) => {
                    failed = true;
                    tracing::warn!(project = %p.name, "{}", error_chain(&e));
                }
            }
        }
        failures = if failed { failures + 1 } else { 0 };
        failing.store(failures, Ordering::SeqCst);
    }
}

/// An error and its sources on one line. A source whose text is shown already (sqlx and
/// OpenSSL repeat theirs) is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

/// The branch a task works on: its own, except that the project manager (kinds epic, plan,
/// manager) works on the default branch unless its task file names one.
pub fn effective_branch(row: &TaskRow, default_branch: &str) -> String {
    if row.spec.0.branch.is_none() && Role::of_kind(row.kind.as_deref()) == Role::Manager {
        default_branch.to_string()
    } else {
        row.branch.clone()
    }
}

/// The state of a task as shown to people.
pub fn describe_state(row: &TaskRow) -> String {
    match (row.state(), row.result()) {
        (TaskState::Completed, Some(r)) if r.success => "completed (succeeded)".into(),
        (TaskState::Completed, Some(r)) => format!(
            "completed (failed: {})",
            r.error_class.map_or("error", ErrorClass::as_str)
        ),
        (state, _) => state.as_str().into(),
    }
}
