//! The reconcile loop: sync repositories into the store, claim what may run, launch it on the
//! runtime, turn run ends into results, report them back as commits, activate the project
//! manager. Level-triggered: every pass looks at the store afresh, so a missed wake-up costs
//! latency, never correctness. Decisions are the model's; this module does the I/O around them.

mod activate;
mod dispatch;
mod finish;
pub mod leader;
mod loops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::gitops::GitAuth;
use crate::metrics::Metrics;
use crate::model::{NewEvent, RetryPolicy};
use crate::runtime::{Completion, LocalRuntime, Runtime};
use crate::store::{Store, StoreError};

/// How often the engine looks at the store without being woken (a backstop, not the mechanism).
const BACKSTOP: Duration = Duration::from_secs(30);
/// How often an engine on SQLite looks for commits by other processes (Postgres notifies).
const SQLITE_CHANGE_POLL: Duration = Duration::from_secs(2);
/// With `--once`: how many failed report passes end the run with an error.
const ONCE_REPORT_TRIES: u32 = 5;

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
    /// How the engine's own git operations (fetches, status commits) authenticate.
    auth: GitAuth,
    report_wake: Arc<Notify>,
    /// When dispatch last did something; the reporter waits for a quiet moment.
    activity: Arc<loops::Activity>,
    /// Consecutive failed report passes.
    report_failures: Arc<AtomicU32>,
    sync_triggers: HashMap<String, Arc<Notify>>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    /// With a GitHub App: mints each job a git token of its own (see [`Engine::with_job_tokens`]).
    job_tokens: Option<Arc<crate::forge::GitHub>>,
    /// The tokens minted for runs still going, by run name, with when and for which
    /// repository: renewed while the run goes, revoked when it ends.
    minted: HashMap<String, (crate::config::Secret, std::time::Instant, String)>,
    /// Revocations under way, awaited before the engine stops.
    revocations: tokio::task::JoinSet<()>,
    /// `launched` events not yet logged, and when the first of them was launched.
    launched: Vec<NewEvent>,
    first_unlogged: Option<std::time::Instant>,
}

impl Engine<LocalRuntime> {
    /// An engine on the local runtime; `worker_exe` is the binary it starts as `swarm worker`.
    pub fn new(config: Config, store: Store, worker_exe: std::path::PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = LocalRuntime::new(config.data_dir.join("runs"), worker_exe, tx)
            .with_caches(config.data_dir.clone());
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
            completions,
            auth: GitAuth::default(),
            report_wake: Arc::new(Notify::new()),
            activity: Arc::default(),
            report_failures: Arc::default(),
            sync_triggers,
            policy,
            metrics: Arc::default(),
            job_tokens: None,
            minted: HashMap::new(),
            revocations: tokio::task::JoinSet::new(),
            launched: Vec::new(),
            first_unlogged: None,
        }
    }

    /// Records into `metrics` (shared with the HTTP server) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Authenticates the engine's own fetches and status pushes with `auth`.
    pub fn with_git_auth(mut self, auth: GitAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Gives each job a git token of its own, minted through `github` (a GitHub App's
    /// installation token for the project's repository alone, `contents: write`), instead of
    /// the workers' long-lived one; revoked when the run ends. Without App auth, nothing
    /// changes.
    pub fn with_job_tokens(mut self, github: Arc<crate::forge::GitHub>) -> Self {
        self.job_tokens = github.is_app().then_some(github);
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
        let sync = loops::Sync {
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            auth: self.auth.clone(),
        };
        if options.once {
            for p in &self.config.projects {
                sync.once(p).await;
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for p in self.config.projects.clone() {
            let trigger = self.sync_triggers[&p.name].clone();
            tasks.spawn(sync.clone().run(p, trigger, shutdown.clone(), options.once));
        }
        let _watcher = loops::watch_local_repos(&self.config, &self.sync_triggers, &mut tasks);
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
        tasks.spawn(loops::report(
            self.store.clone(),
            self.config.clone(),
            self.auth.clone(),
            self.report_wake.clone(),
            self.activity.clone(),
            self.report_failures.clone(),
            shutdown.clone(),
        ));
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
            self.renew_job_tokens().await;
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
            if !self.minted.is_empty() {
                // Running jobs' tokens are renewed on time.
                idle = idle.min(Duration::from_secs(1));
            }
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
        // A job's token outlives its run by no more than this.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.revocations.join_next().await.is_some() {}
        })
        .await;
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

    async fn done(&self) -> bool {
        match self.store.counts().await {
            Ok(c) => c.pending == 0 && c.running == 0,
            Err(_) => false,
        }
    }

    /// One level-triggered pass: record what ended, claim and launch what may run, stop what
    /// was asked to stop, watch again what nobody watches. The claim comes before the look at
    /// what runs: a task made pending waits for one claim, not for a read of every run first.
    pub async fn reconcile(&mut self) -> Result<(), StoreError> {
        let mut batch = Vec::new();
        self.drain_completions(&mut batch);
        self.complete_all(batch).await;
        let claimed = self.claim_and_launch().await;
        self.watch_running().await?;
        claimed
    }
}
