//! Dispatch: claim what may run and launch it on the runtime; stop what was asked to stop;
//! after a restart, take over what an earlier engine started.

use std::time::Duration;

use chrono::Utc;
use tracing::Instrument;

use super::Engine;
use crate::job::{AgentSettings, JobSpec};
use crate::model::{effective_branch, transition, ClaimLimits, EventKind, NewEvent, TaskRow};
use crate::runtime::{Completion, Launch, Runtime};
use crate::spec::{ErrorClass, RunResult};
use crate::store::StoreError;

/// Most tasks claimed in one statement.
const CLAIM_BATCH: u32 = 1024;
/// Longest a launched run waits for its `launched` event to be logged.
const LAUNCH_LOG_DELAY: Duration = Duration::from_millis(200);

impl<R: Runtime> Engine<R> {
    /// Stops the runs asked to stop, and launches again the runs the store says are running
    /// but nobody watches (their end was not recorded: the store failed at that moment).
    /// Launching is idempotent: the runtime adopts the run, or completes it from its result.
    pub(super) async fn watch_running(&mut self) -> Result<(), StoreError> {
        // The light view of what runs: a busy engine makes this pass after every batch of
        // run ends, and whole rows only matter for the rare run nobody watches.
        let mut unwatched = Vec::new();
        for run in self.store.running_runs().await? {
            let name = run.run_name();
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
                let name = row.run_name();
                tracing::info!(project = %row.project, task = %row.key, run = %name, "watching a run again");
                let launched = self.launched_before(&row, &name).await;
                self.launch_run(row, launched).await;
            }
        }
        Ok(())
    }

    /// Claims what may run, batch by batch, and launches it.
    pub(super) async fn claim_and_launch(&mut self) -> Result<(), StoreError> {
        let mut limits = self.claim_limits();
        limits.paused_agents = self
            .store
            .agent_pauses(Utc::now())
            .await?
            .into_iter()
            .map(|(a, _, _)| a)
            .collect();
        if !limits.gated_projects.is_empty() {
            limits.green_gates = self.store.green_gates().await?;
        }
        loop {
            let now = Utc::now();
            let metrics = self.metrics.clone();
            let claimed = self
                .store
                .claim(now, |running, heads| {
                    limits
                        .select(heads, running)
                        .into_iter()
                        .map(|i| {
                            let waited = (now - heads[i].updated_at).to_std().unwrap_or_default();
                            metrics.queue_wait.observe(waited.as_secs_f64());
                            transition::claim(&heads[i], now)
                        })
                        .collect()
                })
                .instrument(tracing::info_span!("claim"))
                .await?;
            let n = claimed.len() as u32;
            if n > 0 {
                self.activity.touch();
            }
            tracing::info_span!("claim").in_scope(|| {
                for row in &claimed {
                    tracing::info!(project = %row.project, task = %row.key, attempt = row.attempts, "claimed");
                }
            });
            for row in claimed {
                self.launch_run(row, false).await;
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
            gated_projects: self.config.gated_projects(),
            green_gates: Default::default(),
        }
    }

    /// Launches the current run of `row`; `adopt_only` for a run launched before (see
    /// [`Launch::adopt_only`]).
    pub(super) async fn launch_run(&mut self, row: TaskRow, adopt_only: bool) {
        let span = tracing::info_span!("launch", project = %row.project, task = %row.key, run = %row.run_name());
        self.launch_run_in_span(row, adopt_only)
            .instrument(span)
            .await
    }

    async fn launch_run_in_span(&mut self, row: TaskRow, adopt_only: bool) {
        let name = row.run_name();
        let launch = match self.launch_for(&row, &name) {
            Ok(l) => self.mint_job_token(Launch { adopt_only, ..l }).await,
            Err(result) => Err(result),
        };
        let launch = match launch {
            Ok(l) => l,
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
            let result =
                RunResult::failure(ErrorClass::Infrastructure, crate::display::error_chain(&e));
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
        self.launched.push(NewEvent::of(
            &row,
            EventKind::Launched,
            format!("run {name} started"),
        ));
        let first = *self
            .first_unlogged
            .get_or_insert_with(std::time::Instant::now);
        if first.elapsed() >= LAUNCH_LOG_DELAY {
            self.log_launches().await;
        }
    }

    /// With a GitHub App, the job's own git token: for the project's repository only, with
    /// `contents: write`. A run being adopted started with one already.
    async fn mint_job_token(&mut self, launch: Launch) -> Result<Launch, RunResult> {
        let Some(github) = &self.job_tokens else {
            return Ok(launch);
        };
        if launch.adopt_only {
            return Ok(launch);
        }
        let Some(repo) = self
            .config
            .projects
            .iter()
            .find(|p| p.name == launch.task.project)
            .and_then(|p| p.github_repo())
        else {
            return Ok(launch);
        };
        match github.mint_repo_token(&repo).await {
            Ok(Some((token, _expires))) => {
                self.minted.insert(
                    launch.run_name.clone(),
                    (token.clone(), std::time::Instant::now(), repo),
                );
                Ok(Launch {
                    git_token: Some(token),
                    ..launch
                })
            }
            Ok(None) => Ok(launch),
            Err(e) => Err(RunResult::failure(
                ErrorClass::Infrastructure,
                format!(
                    "cannot mint the job's git token for {repo}: {}",
                    crate::display::error_chain(&e)
                ),
            )),
        }
    }

    /// Gives each running job whose token is older than `[github] token_renewal` a new one
    /// (GitHub's expire after an hour), and revokes the old one.
    pub(super) async fn renew_job_tokens(&mut self) {
        let (Some(github), Some(renewal)) = (
            self.job_tokens.clone(),
            self.config.github.as_ref().map(|g| g.token_renewal),
        ) else {
            return;
        };
        let due: Vec<(String, String)> = self
            .minted
            .iter()
            .filter(|(_, (_, at, _))| at.elapsed() >= renewal)
            .map(|(run, (_, _, repo))| (run.clone(), repo.clone()))
            .collect();
        for (run, repo) in due {
            match github.mint_repo_token(&repo).await {
                Ok(Some((token, _))) => {
                    if let Err(e) = self.runtime.renew_git_token(&run, &token).await {
                        tracing::warn!(run = %run, "cannot give the run its new git token: {}", crate::display::error_chain(&e));
                        self.revoke(token);
                        continue;
                    }
                    tracing::info!(run = %run, "renewed the run's git token");
                    if let Some((old, _, _)) = self
                        .minted
                        .insert(run, (token, std::time::Instant::now(), repo))
                    {
                        self.revoke(old);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(run = %run, "cannot renew the run's git token: {}", crate::display::error_chain(&e))
                }
            }
        }
    }

    /// Revokes the git token minted for `run_name`, if any, in the background.
    pub(super) fn revoke_job_token(&mut self, run_name: &str) {
        if let Some((token, _, _)) = self.minted.remove(run_name) {
            self.revoke(token);
        }
    }

    fn revoke(&mut self, token: crate::config::Secret) {
        let Some(github) = self.job_tokens.clone() else {
            return;
        };
        // Finished revocations are collected as new ones start.
        while self.revocations.try_join_next().is_some() {}
        self.revocations.spawn(async move {
            if let Err(e) = github.revoke_token(&token).await {
                tracing::warn!(
                    "cannot revoke a job's git token: {}",
                    crate::display::error_chain(&e)
                );
            }
        });
    }

    /// Logs the `launched` events of the runs started since the last call.
    pub(super) async fn log_launches(&mut self) {
        self.first_unlogged = None;
        let events = std::mem::take(&mut self.launched);
        if let Err(e) = self.store.append_events(&events, Utc::now()).await {
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
        let agent = self.config.agent(&agent_name).ok_or_else(|| {
            RunResult::failure(
                ErrorClass::MissingCli,
                format!("no agent profile named {agent_name:?} in the engine's config"),
            )
        })?;
        let timeout = row
            .timeout_secs
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(self.config.default_timeout);
        let task = JobSpec {
            version: crate::job::VERSION,
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
            prompt: if row.context.is_empty() {
                row.prompt.clone()
            } else {
                format!(
                    "{}\n\n{}",
                    row.prompt.trim_end(),
                    crate::model::green::render(&row.context)
                )
            },
            agent_name,
            agent: {
                let mut settings = AgentSettings::from(&agent);
                // The local runtime's agents run in a sandbox unless the config turns it off;
                // a pod is one already.
                if self.config.runtime == crate::config::RuntimeKind::Local
                    && self.config.sandbox == crate::config::SandboxMode::Bwrap
                {
                    settings.sandbox = Some(crate::job::SandboxSettings {
                        network: agent.network == crate::config::Network::On,
                        read_only: self
                            .config
                            .sandbox_read_only
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect(),
                    });
                }
                settings
            },
            git_name: self.config.git.name.clone(),
            git_email: self.config.git.email.clone(),
            hooks: self.config.git.run_hooks.then(|| crate::job::HookSettings {
                timeout: self.config.git.hook_timeout,
            }),
        };
        let deadline =
            Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::hours(1));
        Ok(Launch {
            adopt_only: false,
            git_token: None,
            task_id: row.id,
            attempt: row.attempts,
            run_name: name.to_string(),
            deadline,
            task,
        })
    }

    /// After a restart: every task the store says is running is launched again, which the
    /// runtime turns into an adoption (still alive), a completion (it left a result), a
    /// fail-over (it died without one) or the first start (it was claimed, never started).
    pub(super) async fn adopt(&mut self) -> Result<(), StoreError> {
        for row in self.store.running().await? {
            let name = row.run_name();
            if self.runtime.is_tracked(&name) {
                continue;
            }
            tracing::info!(project = %row.project, task = %row.key, run = %name, "taking over a run of an earlier engine");
            let event = NewEvent::of(
                &row,
                EventKind::Adopted,
                format!("run {name} taken over after an engine restart"),
            );
            let _ = self.store.append_events(&[event], Utc::now()).await;
            let launched = self.launched_before(&row, &name).await;
            self.launch_run(row, launched).await;
        }
        self.log_launches().await;
        Ok(())
    }

    /// Whether the event log says this run was started (so it must be adopted, not restarted).
    async fn launched_before(&self, row: &TaskRow, name: &str) -> bool {
        self.store
            .has_event(row.id, EventKind::Launched, name)
            .await
            .unwrap_or(true)
    }
}
