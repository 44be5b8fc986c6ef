//! The engine's long-running loops beside dispatch: a sync loop per project (on a poll
//! interval, at once when triggered), the status reporter, and the file watch that triggers
//! syncs of repositories on this machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Notify};

use super::activate::after_sync;
use crate::config::{Config, ProjectConfig};
use crate::display::error_chain;
use crate::gitops::GitAuth;
use crate::metrics::Metrics;
use crate::store::Store;

/// What a sync pass needs.
#[derive(Clone)]
pub(super) struct Sync {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub auth: GitAuth,
}

impl Sync {
    /// One pass over `project`; false when it failed (the error is recorded for people).
    pub async fn once(&self, project: &ProjectConfig) -> bool {
        let span = tracing::info_span!("sync", project = %project.name);
        self.once_in_span(project).instrument(span).await
    }

    async fn once_in_span(&self, project: &ProjectConfig) -> bool {
        match crate::sync::sync_project(&self.store, &self.config.data_dir, project, &self.auth)
            .await
        {
            Ok(report) => {
                self.metrics
                    .sync_succeeded(&project.name, Utc::now().timestamp_millis() as f64 / 1000.0);
                if let Err(e) = after_sync(&self.store, &self.config, project, &report).await {
                    tracing::error!(project = %project.name, "cannot act on the sync: {e}");
                }
                if report.changed_files > 0 {
                    tracing::info!(project = %project.name, commit = %crate::display::short(&report.commit),
                        files = report.changed_files, changes = report.actions, bad_files = report.bad_files, "synced");
                }
                true
            }
            Err(e) => {
                let message = error_chain(&e);
                tracing::warn!(project = %project.name, "{message}");
                self.metrics.sync_failed(&project.name);
                let _ = self
                    .store
                    .record_sync_error(&project.name, &message, Utc::now())
                    .await;
                false
            }
        }
    }

    /// Syncs `project` every poll interval and whenever triggered; after failures, backs off
    /// exponentially up to ten poll intervals.
    pub async fn run(
        self,
        project: ProjectConfig,
        trigger: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        skip_first: bool,
    ) {
        let poll = self.config.poll_interval_for(&project);
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
            if self.once(&project).await {
                failures = 0;
            } else {
                failures += 1;
            }
        }
    }
}

/// Commits status files whenever runs finish (batched: everything due at that moment goes in
/// one commit per project), and retries failed reports with backoff.
pub(super) async fn report(
    store: Store,
    config: Arc<Config>,
    auth: GitAuth,
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
            match crate::report::report_project(&store, &config, p, &auth)
                .instrument(tracing::info_span!("report", project = %p.name))
                .await
            {
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

/// Watches the refs of the projects whose repository is on this machine and triggers their
/// sync on a change. The watcher must be kept alive.
pub(super) fn watch_local_repos(
    config: &Config,
    triggers: &HashMap<String, Arc<Notify>>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Option<notify::RecommendedWatcher> {
    let repos: Vec<(String, std::path::PathBuf)> = config
        .projects
        .iter()
        .filter_map(|p| crate::gitops::local_git_dir(&p.repo).map(|d| (p.name.clone(), d)))
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
    let triggers = triggers.clone();
    tasks.spawn(async move {
        while let Some(project) = rx.recv().await {
            if let Some(t) = triggers.get(&project) {
                t.notify_one();
            }
        }
    });
    Some(watcher)
}
